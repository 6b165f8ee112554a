"""Two daemons in two network namespaces made by the test, each reaching one redis-server
over its own veth pair (the namespaces have no other way out), as two hosts would: what is
sent through one is received through the other, and a blocking receive through one wakes
when the other sends.

The daemons enter only the namespace's network (nsenter --net): their FUSE mounts are in
the test's mount namespace, so the test reads and writes both mountpoints itself. (`ip
netns exec` would put them in a private mount namespace, invisible here.)

Contract: spec/interface.md, "Beyond one host"; issue #11 ("in two network namespaces made
by the test, each reaching Redis over a veth pair")."""
import errno
import os

import pytest

from conftest import wait_until
from ipcfs_helpers import expect_errno, messages, no_mount_left, send  # noqa: F401
from redis_servers import (EIO_DEADLINE_S, STEP_S, RedisServer, Step, backend_mounts,  # noqa: F401
                           check_local_objects, namespaces, receive_one, start_receive)

OPTS = ("backend_lease=1500", "backend_timeout=1000")


@pytest.fixture
def hosts(tmp_path, namespaces, backend_mounts):
    """Redis on the root side of both veth pairs; daemon i in namespace i, told the
    address of Redis on its own link."""
    redis = RedisServer(tmp_path / "redis", bind=("127.0.0.1", *namespaces.root_addrs))
    redis.start()
    try:
        ms = [backend_mounts.make(f"redis://{namespaces.root_addrs[i]}:{redis.port}", OPTS,
                                  prefix=namespaces.prefix(i), name=f"host{i}")
              for i in range(2)]
        yield redis, ms
        backend_mounts.stop_all()  # before Redis goes
    finally:
        redis.stop()


def test_each_namespace_reaches_redis_only_over_its_veth_pair(tmp_path, namespaces):
    redis = RedisServer(tmp_path / "redis", bind=("127.0.0.1", *namespaces.root_addrs)).start()
    try:
        for i in range(2):
            out = namespaces.run_in(i, [redis.cli, "-h", namespaces.root_addrs[i], "-p",
                                        redis.port, "PING"], timeout=STEP_S)
            assert out.stdout.strip() == b"PONG"
            # the namespace's loopback is its own: the server is not there
            out = namespaces.run_in(i, [redis.cli, "-h", "127.0.0.1", "-p", redis.port, "PING"],
                                    timeout=STEP_S, check=False)
            assert b"PONG" not in out.stdout
    finally:
        redis.stop()


def test_daemons_run_in_their_namespaces(hosts, namespaces):
    redis, (one, two) = hosts
    for i, m in enumerate((one, two)):
        assert os.stat(f"/proc/{m.proc.pid}/ns/net").st_ino == os.stat(
            f"/run/netns/{namespaces.names[i]}").st_ino
        assert os.stat(f"/proc/{m.proc.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino


def test_send_through_one_namespace_receive_through_the_other(hosts):
    redis, (one, two) = hosts
    os.mkdir(one / "mailboxes" / "wire")
    send(one / "mailboxes" / "wire", b"across the veth pairs\n")
    assert messages(two / "mailboxes" / "wire") == ["0000000001"]
    got = Step(lambda: receive_one(two / "mailboxes" / "wire", os.O_RDONLY | os.O_NONBLOCK)).value()
    assert got == b"across the veth pairs\n"
    send(two / "mailboxes" / "wire", b"and back")
    assert Step(lambda: receive_one(one / "mailboxes" / "wire")).value() == b"and back"
    expect_errno(errno.EAGAIN, receive_one, one / "mailboxes" / "wire", os.O_RDONLY | os.O_NONBLOCK)


def test_blocking_receive_in_one_namespace_wakes_when_the_other_sends(hosts):
    redis, (one, two) = hosts
    os.mkdir(two / "mailboxes" / "wake")
    r = start_receive(one / "mailboxes" / "wake", "receiver through namespace 0")
    r.assert_blocked()
    send(two / "mailboxes" / "wake", b"wake up")
    assert r.value() == b"wake up"


def test_semaphore_post_in_one_namespace_wakes_a_waiter_in_the_other(hosts):
    redis, (one, two) = hosts
    os.close(os.open(one / "sem" / "go", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))

    def wait():
        fd = os.open(two / "sem" / "go", os.O_RDONLY)
        try:
            return os.pread(fd, 32, 0)
        finally:
            os.close(fd)
    w = Step(wait, "semaphore waiter through namespace 1")
    w.assert_blocked()
    fd = os.open(one / "sem" / "go", os.O_WRONLY)
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)
    assert w.value() == b"0\n"


def test_a_host_cut_off_from_redis_gets_eio_in_time_and_resumes_when_the_link_is_back(
        hosts, namespaces):
    redis, (one, two) = hosts
    box_one, box_two = one / "mailboxes" / "cut", two / "mailboxes" / "cut"
    os.mkdir(box_one)
    waiting = start_receive(box_one, "receiver on the host about to be cut off")
    waiting.assert_blocked()
    namespaces.run_in(0, [namespaces.ip, "link", "set", namespaces.peer_ifs[0], "down"])
    try:
        s = Step(lambda: send(box_one, b"no way out"), "send without a link")
        assert s.finish(EIO_DEADLINE_S + 10) == ("err", errno.EIO)
        assert s.elapsed() < EIO_DEADLINE_S, f"EIO after {s.elapsed():.1f}s"
        assert waiting.finish(EIO_DEADLINE_S + 10) == ("err", errno.EIO)
        send(box_two, b"the other host still works")
        Step(lambda: check_local_objects(one), "local objects of the cut-off host").value()
    finally:
        namespaces.run_in(0, [namespaces.ip, "link", "set", namespaces.peer_ifs[0], "up"])
    got = Step(lambda: receive_one(box_two, os.O_RDONLY | os.O_NONBLOCK)).value()
    assert got == b"the other host still works"

    def works_again():
        return Step(lambda: send(box_one, b"link back"), "send").finish(EIO_DEADLINE_S + 10)[0] == "ok"
    wait_until(works_again, timeout=20, interval=0.2, what="the cut-off host to work again")
    assert Step(lambda: receive_one(box_two)).value() == b"link back"
