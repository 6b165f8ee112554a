"""ipcfs on a three-master Redis Cluster started by the test (`redis-server
--cluster-enabled yes` x3, `redis-cli --cluster create ... --cluster-replicas 0`), given
as `--backend redis://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` to two daemons: 100
mailboxes made through them spread over the three shards (a mailbox's keys share one hash
tag, so they live together on one node) and every one of them works across the mounts.

Contract: spec/interface.md, "Beyond one host"; issue #11 ("A mailbox's keys share one hash
slot"). Every blocking step has a deadline; no sleep is used as synchronisation."""
import collections
import errno
import os
import re

import pytest

from ipcfs_helpers import expect_errno, messages, no_mount_left, send  # noqa: F401
from redis_servers import (STEP_S, Step, backend_mounts, receive_one, redis_cluster,  # noqa: F401
                           redis_command, scan_keys, start_receive)

MAILBOXES = 100
OPTS = ("backend_lease=1500", "backend_timeout=1000")


@pytest.fixture
def cluster_pair(redis_cluster, backend_mounts):
    a = backend_mounts.make(redis_cluster.url, OPTS, name="a")
    b = backend_mounts.make(redis_cluster.url, OPTS, name="b")
    return redis_cluster, a, b


def hash_tag(key):
    """The part of a key Redis Cluster hashes: the first non-empty {...}, else all of it."""
    m = re.search(rb"\{([^}]+)\}", key)
    return m.group(1) if m else key


def test_the_cluster_the_test_made_is_healthy(redis_cluster):
    assert redis_cluster.healthy()
    slots = redis_command(redis_cluster.ports[0], "CLUSTER", "SLOTS")
    assert sorted({int(s[2][1]) for s in slots}) == sorted(redis_cluster.ports)


def test_100_mailboxes_spread_over_the_three_shards_and_all_work(cluster_pair):
    cluster, a, b = cluster_pair
    names = [f"box{i:03}" for i in range(MAILBOXES)]
    for i, name in enumerate(names):
        os.mkdir((a if i % 2 else b) / "mailboxes" / name)
    assert sorted(os.listdir(a / "mailboxes")) == sorted(os.listdir(b / "mailboxes")) == names
    for i, name in enumerate(names):
        send((a if i % 2 else b) / "mailboxes" / name, f"message for {name}".encode())
    # Every mailbox holds its message on both mounts, and keys sit where Redis Cluster puts them.
    for name in names:
        assert messages(a / "mailboxes" / name) == ["0000000001"]
        assert (b / "mailboxes" / name / "0000000001").read_bytes() == f"message for {name}".encode()

    keys_by_node = {port: scan_keys(port) for port in cluster.ports}
    tags_by_node = {port: {hash_tag(k) for k in keys} for port, keys in keys_by_node.items()}
    for port, keys in keys_by_node.items():
        assert keys, f"node {port} holds no key at all: the mailboxes do not spread"
    # a mailbox's keys share one hash tag, so no tag is split over two nodes
    owners = collections.defaultdict(set)
    for port, tags in tags_by_node.items():
        for tag in tags:
            owners[tag].add(port)
    split = {t: p for t, p in owners.items() if len(p) > 1}
    assert not split, f"keys of one hash tag on several nodes: {split}"
    # each mailbox's name appears in (the tag of) keys on exactly one node, and the
    # mailboxes are spread over all three nodes
    box_nodes = {}
    for name in names:
        holders = {port for port, keys in keys_by_node.items()
                   if any(name.encode() in k for k in keys)}
        assert len(holders) <= 1, f"keys of {name} on nodes {holders}"
        if holders:
            box_nodes[name] = holders.pop()
    if len(box_nodes) == len(names):  # keys named after the mailbox: check the spread by name
        spread = collections.Counter(box_nodes.values())
        assert set(spread) == set(cluster.ports), f"mailboxes per node: {dict(spread)}"
    else:  # keys named by id: every node must hold the keys of some mailboxes (tags)
        for port, tags in tags_by_node.items():
            assert len(tags) >= 5, f"node {port} holds keys of only {len(tags)} tags"

    # receive each message on the other mount, with a waiting receiver on every tenth
    waiting = {name: start_receive((a if i % 2 else b) / "mailboxes" / name)
               for i, name in enumerate(names) if i % 10 == 0}
    for i, name in enumerate(names):
        if name in waiting:
            continue
        other = b if i % 2 else a
        got = Step(lambda: receive_one(other / "mailboxes" / name,
                                       os.O_RDONLY | os.O_NONBLOCK)).value()
        assert got == f"message for {name}".encode()
    for w in waiting.values():
        w.value()  # they took the message that was queued: no waiting at all
    for i, name in enumerate(names):
        if i % 10 == 0:
            r = start_receive((b if i % 2 else a) / "mailboxes" / name, f"waiting on {name}")
            r.assert_blocked(0.05)
            send((a if i % 2 else b) / "mailboxes" / name, b"wakes it")
            assert r.value() == b"wakes it"
    for name in names:
        expect_errno(errno.EAGAIN, receive_one, a / "mailboxes" / name, os.O_RDONLY | os.O_NONBLOCK)
        os.rmdir(b / "mailboxes" / name)
    assert os.listdir(a / "mailboxes") == []


def test_semaphores_work_on_the_cluster(cluster_pair):
    cluster, a, b = cluster_pair
    for i in range(12):
        os.close(os.open(a / "sem" / f"s{i}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    for i in range(12):
        fd = os.open(b / "sem" / f"s{i}", os.O_WRONLY)
        try:
            os.write(fd, f"{i + 1}".encode())
        finally:
            os.close(fd)
    for i in range(12):
        assert os.getxattr(a / "sem" / f"s{i}", "user.ipc.value") == f"{i + 1}".encode()
    assert all(scan_keys(port) for port in cluster.ports)
