"""Two daemons on one Redis backend (`--backend redis://127.0.0.1:PORT`), mounted on two
mountpoints A and B: every mailbox and semaphore behaviour of the contract holds when the
sender is on one mount and the receiver on the other. Also: the backend going away (EIO
within a bounded time, local objects unaffected, work resumes when Redis returns), Redis
down when the daemon starts, and bad backend URLs.

Contract: spec/interface.md, "Beyond one host" (and "Mailboxes", "Batches", "Shared memory
and semaphores" for what must hold across mounts). Every test gets its own redis-server on
a free loopback port and its own two daemons. A step that should not block is still run
with a deadline (a faulty daemon could leave it hanging); a step that must block is shown
blocked by a short negative check, then released, and its release has a deadline; no
sleep is used as synchronisation."""
import errno
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IPCFS_BIN, Mount, check_clean_exit, is_mounted, wait_until
from ipcfs_helpers import (PY, Agent, expect_errno, messages, no_mount_left,  # noqa: F401
                           reap, run_to_files, send, set_capacity)
from redis_servers import (EIO_DEADLINE_S, STEP_S, RedisServer, Step, backend_mounts,  # noqa: F401
                           check_local_objects, errno_within, free_port, read_whole_message,
                           receive_one, redis_server, start_receive, two_mounts)

SEM_VALUE_MAX = 2147483647
RESUME_DEADLINE_S = 20.0  # Redis back: the daemons reconnect within this


def box_on(m, name="box"):
    return m / "mailboxes" / name


def make_box(m, name="box"):
    path = box_on(m, name)
    os.mkdir(path)
    return path


def receive_nowait(box):
    return receive_one(box, os.O_RDONLY | os.O_NONBLOCK)


def send_errno(path, data, flags=os.O_WRONLY):
    """open / write / close of path; None or the first errno of the three."""
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        return e.errno
    err = None
    try:
        os.write(fd, data)
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        err = err or e.errno
    return err


def nonblocking_send_errno(box, data):
    return send_errno(Path(box, ".send"), data, os.O_WRONLY | os.O_NONBLOCK)


def make_sem(m, name="s"):
    path = m / "sem" / name
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def post(sem, data):
    fd = os.open(sem, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def sem_value(sem):
    return int(os.getxattr(sem, "user.ipc.value"))


def wait_sem(sem, flags=os.O_RDONLY):
    fd = os.open(sem, flags)
    try:
        return os.pread(fd, 32, 0)
    finally:
        os.close(fd)


def script_calls(redis):
    """How many EVALSHA calls the server has run so far."""
    stats = redis.command("INFO", "commandstats")
    text = stats.decode() if isinstance(stats, bytes) else stats
    for line in text.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


# ---------------------------------------------------------------- the namespace is shared

def test_mkdir_on_a_is_seen_on_b_at_once(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a, "orders")
    assert os.path.isdir(box_on(b, "orders"))
    assert "orders" in os.listdir(b / "mailboxes")
    expect_errno(errno.EEXIST, os.mkdir, box_on(b, "orders"))


def test_a_mailbox_has_the_same_id_on_both_mounts(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a, "one")
    make_box(b, "two")
    assert os.getxattr(box_on(a, "one"), "user.ipc.id") == os.getxattr(box_on(b, "one"), "user.ipc.id")
    assert os.getxattr(box_on(a, "two"), "user.ipc.id") == os.getxattr(box_on(b, "two"), "user.ipc.id")
    assert os.getxattr(box_on(a, "one"), "user.ipc.id") != os.getxattr(box_on(a, "two"), "user.ipc.id")
    for m in (a, b):
        for n in ("one", "two"):
            ident = os.getxattr(box_on(m, n), "user.ipc.id").decode()
            assert os.readlink(m / "by-id" / ident) == f"../mailboxes/{n}"


def test_rmdir_on_b_removes_the_mailbox_for_a(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    box_a = make_box(a, "gone")
    send(box_a, b"still here")
    expect_errno(errno.ENOTEMPTY, os.rmdir, box_on(b, "gone"))
    os.unlink(box_on(b, "gone") / "0000000001")  # rm discards it
    wait_until(lambda: os.listdir(box_a) == [], timeout=STEP_S, what="the discard seen on A")
    os.rmdir(box_on(b, "gone"))
    wait_until(lambda: "gone" not in os.listdir(a / "mailboxes"), timeout=STEP_S,
               what="the mailbox gone from A's listing")
    wait_until(lambda: not os.path.exists(box_a), timeout=STEP_S, what="A's lookup to fail")
    make_box(a, "gone")  # the name is free again, on both
    assert os.path.isdir(box_on(b, "gone"))


def test_rename_on_a_is_seen_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a, "old")
    send(box_on(a, "old"), b"carried along")
    ident = os.getxattr(box_on(a, "old"), "user.ipc.id")
    os.rename(box_on(a, "old"), box_on(a, "new"))
    wait_until(lambda: sorted(os.listdir(b / "mailboxes")) == ["new"], timeout=STEP_S,
               what="the rename seen on B")
    assert os.getxattr(box_on(b, "new"), "user.ipc.id") == ident
    assert receive_nowait(box_on(b, "new")) == b"carried along"


def test_chmod_and_chown_on_a_are_seen_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    os.chmod(box_on(a), 0o710)
    os.chown(box_on(a), 65534, 65533)
    wait_until(lambda: (os.stat(box_on(b)).st_mode & 0o7777, os.stat(box_on(b)).st_uid,
                        os.stat(box_on(b)).st_gid) == (0o710, 65534, 65533),
               timeout=STEP_S, what="mode and owner seen on B")


def test_xattrs_set_on_a_are_read_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    os.setxattr(box_on(a), "user.ipc.capacity", b"7\n")
    os.setxattr(box_on(a), "user.ipc.policy", b"exclusive")
    os.setxattr(box_on(a), "user.ipc.max_msg_size", b"4096")
    assert os.getxattr(box_on(b), "user.ipc.capacity") == b"7"
    assert os.getxattr(box_on(b), "user.ipc.policy") == b"exclusive"
    assert os.getxattr(box_on(b), "user.ipc.max_msg_size") == b"4096"
    names = set(os.listxattr(box_on(b)))
    assert {"user.ipc.capacity", "user.ipc.policy", "user.ipc.max_msg_size", "user.ipc.id"} <= names
    # A has the mailbox's settings already (it set them): B's change reaches it too
    os.setxattr(box_on(b), "user.ipc.capacity", b"unlimited")
    wait_until(lambda: os.getxattr(box_on(a), "user.ipc.capacity") == b"unlimited",
               timeout=STEP_S, what="B's capacity seen on A")
    os.setxattr(box_on(b), "user.ipc.policy", b"any")
    wait_until(lambda: os.getxattr(box_on(a), "user.ipc.policy") == b"any",
               timeout=STEP_S, what="B's policy seen on A")


def test_status_of_a_mailbox_counts_messages_sent_on_the_other_mount(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    send(box_on(a), b"12345")
    send(box_on(a), b"678")
    fields = dict(line.split(": ", 1) for line in
                  (box_on(b) / ".status").read_text().splitlines() if ": " in line)
    assert fields["messages"] == "2"
    assert fields["bytes"] == "8"


# ---------------------------------------------------------------- messages across mounts

def test_send_on_a_receive_on_b_and_back(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    send(box_on(a), b"from A\n")  # mkdir on A, then at once on B: no waiting for caches
    assert Step(lambda: receive_nowait(box_on(b))).value() == b"from A\n"
    send(box_on(b), b"from B\n")
    assert Step(lambda: receive_nowait(box_on(a))).value() == b"from B\n"
    expect_errno(errno.EAGAIN, receive_nowait, box_on(a))
    expect_errno(errno.EAGAIN, receive_nowait, box_on(b))


def test_shell_echo_on_a_and_cat_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    r = subprocess.run(["sh", "-c", f"echo job > '{box_on(a)}/.send'"], capture_output=True,
                       timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["cat", str(box_on(b) / ".receive")], capture_output=True, timeout=STEP_S)
    assert (r.returncode, r.stdout) == (0, b"job\n"), r.stderr


def test_one_senders_messages_arrive_in_order_on_the_other_mount(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    for i in range(200):
        send(box_on(a), f"m{i}".encode())
    fd = os.open(box_on(b) / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        got = Step(lambda: [read_whole_message(fd) for _ in range(200)]).value(30)
    finally:
        os.close(fd)
    assert got == [f"m{i}".encode() for i in range(200)]


def test_a_message_of_1_mib_crosses_whole(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    data = os.urandom(1 << 20)
    send(box_on(a), data)
    assert os.stat(box_on(b) / "0000000001").st_size == len(data)
    assert Step(lambda: receive_nowait(box_on(b))).value() == data


def test_blocking_receive_on_b_wakes_when_a_sends(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    r = start_receive(box_on(b))
    r.assert_blocked()
    send(box_on(a), b"wake up")
    assert r.value() == b"wake up"


def test_blocked_cat_on_b_prints_what_echo_on_a_sends(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    cat = subprocess.Popen(["cat", str(box_on(b) / ".receive")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            cat.wait(timeout=0.3)
        send(box_on(a), b"for cat\n")
        out, err = cat.communicate(timeout=STEP_S)
        assert (cat.returncode, out) == (0, b"for cat\n"), err
    finally:
        reap(cat)


def test_several_receivers_on_both_mounts_each_get_one_message(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    rs = [start_receive(box_on(m), f"receiver {i}") for i, m in enumerate((a, b, a, b))]
    for r in rs:
        r.assert_blocked(0.1)
    for i in range(4):
        send(box_on(a if i % 2 else b), f"n{i}".encode())
    assert sorted(r.value() for r in rs) == [b"n0", b"n1", b"n2", b"n3"]
    expect_errno(errno.EAGAIN, receive_nowait, box_on(a))


def test_poll_on_b_reports_readable_when_a_sends(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    fd = os.open(box_on(b) / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(0) == []
        send(box_on(a), b"ready")
        assert p.poll(STEP_S * 1000) == [(fd, select.POLLIN)]
        assert read_whole_message(fd) == b"ready"
    finally:
        os.close(fd)


def test_nonblocking_receive_of_an_empty_mailbox_is_eagain_on_both(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    for m in (a, b):
        kind, value = Step(lambda m=m: receive_nowait(box_on(m))).finish()
        assert (kind, value) == ("err", errno.EAGAIN)


def test_listing_and_peeking_on_b_take_nothing(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    send(box_on(a), b"first")
    send(box_on(a), b"second!")
    fd = os.open(box_on(a) / "note", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"a drop-in")
    os.close(fd)
    assert messages(box_on(b)) == ["0000000001", "0000000002", "note"]
    assert (box_on(b) / "0000000002").read_bytes() == b"second!"
    assert (box_on(b) / "note").read_bytes() == b"a drop-in"
    st = os.stat(box_on(b) / "0000000001")
    assert (st.st_size, st.st_mode & 0o777, st.st_uid) == (5, 0o444, os.getuid())
    assert os.getxattr(box_on(b) / "0000000002", "user.ipc.seq") == b"2"
    assert os.getxattr(box_on(b) / "0000000001", "user.ipc.sender_pid") == str(os.getpid()).encode()
    assert os.getxattr(box_on(b) / "0000000001", "user.ipc.redeliveries") == b"0"
    assert messages(box_on(a)) == ["0000000001", "0000000002", "note"]  # peeking took nothing
    assert receive_nowait(box_on(b)) == b"first"
    assert messages(box_on(a)) == ["0000000002", "note"]


def test_dropin_file_written_on_a_is_received_on_b(two_mounts, tmp_path):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    src = tmp_path / "report.txt"
    src.write_bytes(b"quarterly numbers\n" * 100)
    r = subprocess.run(["cp", str(src), str(box_on(a))], capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    assert messages(box_on(b)) == ["report.txt"]
    assert receive_nowait(box_on(b)) == src.read_bytes()
    assert messages(box_on(a)) == []


def test_dropin_name_taken_on_the_other_mount_is_eexist_or_eacces(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    fd = os.open(box_on(a) / "note", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"original")
    os.close(fd)
    expect_errno(errno.EEXIST, os.open, box_on(b) / "note", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    expect_errno(errno.EACCES, os.open, box_on(b) / "note", os.O_WRONLY | os.O_CREAT, 0o644)
    assert (box_on(a) / "note").read_bytes() == b"original"


def test_rm_on_b_discards_and_mv_on_b_forwards_messages_sent_on_a(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a, "src")
    make_box(a, "dst")
    send(box_on(a, "src"), b"to discard")
    send(box_on(a, "src"), b"to forward")
    os.unlink(box_on(b, "src") / "0000000001")
    os.rename(box_on(b, "src") / "0000000002", box_on(b, "dst") / "0000000002")
    wait_until(lambda: messages(box_on(a, "dst")) == ["0000000002"], timeout=STEP_S,
               what="the forwarded message seen on A")
    assert messages(box_on(a, "src")) == []
    assert receive_nowait(box_on(a, "dst")) == b"to forward"


def test_half_read_on_b_comes_back_on_a_with_its_redelivery_counted(two_mounts, tmp_path):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    send(box_on(a), b"hello world, read in part")
    agent = Agent()
    try:
        fd = agent.open(box_on(b) / ".receive")
        r = agent.call(op="read", fd=fd, n=5)
        assert bytes.fromhex(r["ok"]) == b"hello"
        agent.call(op="close", fd=fd)
    finally:
        agent.kill()
    wait_until(lambda: messages(box_on(a)) == ["0000000001"] and os.getxattr(
        box_on(a) / "0000000001", "user.ipc.redeliveries") == b"1",
        timeout=STEP_S, what="the message back at the head, redelivered once")
    assert receive_nowait(box_on(a)) == b"hello world, read in part"


def test_a_reader_taking_message_after_message_claims_one_ahead_and_gives_it_back_when_idle(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    for i in range(4):
        send(box_on(a), b"m%d" % i)
    fd = os.open(box_on(b) / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert read_whole_message(fd) == b"m0"
        assert read_whole_message(fd) == b"m1"  # its end claimed m2 for B's next read
        assert messages(box_on(a)) == ["0000000004"]
        assert receive_nowait(box_on(a)) == b"m3"
        expect_errno(errno.ENOTEMPTY, os.rmdir, box_on(a))  # m2 is B's, not gone
        # B's reader reads no more: m2 goes back to the shared queue within two lease
        # thirds, not counted as redelivered (nobody started it)
        wait_until(lambda: messages(box_on(a)) == ["0000000003"], timeout=STEP_S,
                   what="the message claimed ahead given back")
        assert os.getxattr(box_on(a) / "0000000003", "user.ipc.redeliveries") == b"0"
        assert receive_nowait(box_on(a)) == b"m2"
        kind, value = Step(lambda: os.read(fd, 100), "B's next read").finish()
        assert (kind, value) == ("err", errno.EAGAIN)
    finally:
        os.close(fd)
    os.rmdir(box_on(a))  # nothing left anywhere


def test_lines_an_idle_batch_reader_left_claimed_go_back(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    for i in range(3):
        send(box_on(a), b"l%d" % i)
    fd = os.open(box_on(b) / ".receive-lines", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 8) == b"l0\nl1\n"  # claimed all three, took two
        assert messages(box_on(a)) == []
        wait_until(lambda: messages(box_on(a)) == ["0000000003"], timeout=STEP_S,
                   what="the line left over given back")
        assert receive_nowait(box_on(a)) == b"l2"
    finally:
        os.close(fd)


def test_receipt_on_a_names_the_receiver_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    fd = os.open(box_on(a) / ".send", os.O_RDWR)
    agent = Agent()
    try:
        os.write(fd, b"with receipt")
        receipt = Step(lambda: os.read(fd, 200), "receipt read")
        receipt.assert_blocked()
        rfd = agent.open(box_on(b) / ".receive")
        r = agent.call(op="recv", fd=rfd)
        assert bytes.fromhex(r["ok"]) == b"with receipt"
        assert receipt.value() == f"delivered 1 to {agent.pid}\n".encode()
    finally:
        agent.kill()
        os.close(fd)


def test_exclusive_policy_holds_across_mounts(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    os.setxattr(box_on(a), "user.ipc.policy", b"exclusive")
    agent = Agent()
    try:
        agent.open(box_on(a) / ".receive")
        expect_errno(errno.EBUSY, os.open, box_on(b) / ".receive", os.O_RDONLY)
    finally:
        agent.kill()
    # the holder gone (its release follows), the other mount's process may receive
    wait_until(lambda: Step(lambda: os.close(os.open(box_on(b) / ".receive", os.O_RDONLY))
                            ).finish()[0] == "ok", timeout=STEP_S, what="the exclusive hold freed")


def test_pair_policy_binds_two_processes_across_mounts(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    os.setxattr(box_on(a), "user.ipc.policy", b"pair")
    first, second, third = Agent(), Agent(), Agent()
    try:
        first.open(box_on(a) / ".send", os.O_WRONLY)
        second.open(box_on(b) / ".receive")
        # a third process is refused on either mount; the two bound ones open again
        expect_errno(errno.EPERM, third.open, box_on(a) / ".receive")
        expect_errno(errno.EPERM, third.open, box_on(b) / ".send", os.O_WRONLY)
        first.open(box_on(a) / ".receive")
        second.open(box_on(b) / ".send", os.O_WRONLY)
        first.kill()
        second.kill()
        # the bound processes gone (their daemons stop renewing them), another may bind
        wait_until(lambda: Step(lambda: third.open(box_on(b) / ".receive")).finish()[0] == "ok",
                   timeout=STEP_S, what="the pair freed by its processes' exits")
    finally:
        for agent in (first, second, third):
            agent.kill()


# ---------------------------------------------------------------- exactly once

SENDER = r"""
import os, sys
box, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    fd = os.open(os.path.join(box, ".send"), os.O_WRONLY)
    os.write(fd, f"{tag}:{i}".encode())
    os.close(fd)
"""

RECEIVER = r"""
import os, sys
fd = os.open(os.path.join(sys.argv[1], ".receive"), os.O_RDONLY)
out = []
while True:
    chunks = []
    while True:
        c = os.read(fd, 65536)
        if not c:
            break
        chunks.append(c)
    msg = b"".join(chunks)
    if msg == b"STOP":
        break
    out.append(msg.decode())
sys.stdout.write("\n".join(out))
"""


def test_2000_messages_between_2_plus_2_processes_on_each_mount_are_each_received_once(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    per_sender = 500
    receivers = [subprocess.Popen([PY, "-c", RECEIVER, str(box_on(m))], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for m in (a, a, b, b)]
    senders = [subprocess.Popen([PY, "-c", SENDER, str(box_on(m)), f"s{i}", str(per_sender)],
                                stderr=subprocess.PIPE) for i, m in enumerate((a, a, b, b))]
    try:
        for s in senders:
            _, err = s.communicate(timeout=90)
            assert s.returncode == 0, err
        for i in range(len(receivers)):
            send(box_on(a if i % 2 else b), b"STOP")
        got = []
        for r in receivers:
            out, err = r.communicate(timeout=60)
            assert r.returncode == 0, err
            got.extend(line for line in out.decode().split("\n") if line)
    finally:
        reap(*senders, *receivers)
    expected = {f"s{i}:{n}" for i in range(4) for n in range(per_sender)}
    assert len(got) == len(expected), f"{len(got)} received, {len(set(got))} distinct"
    assert set(got) == expected
    assert messages(box_on(a)) == []


# ---------------------------------------------------------------- flow control across mounts

def test_full_mailbox_gives_eagain_to_a_nonblocking_sender_on_either_mount(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    set_capacity(box_on(a), 2)
    send(box_on(a), b"1")
    send(box_on(b), b"2")
    for m in (a, b):
        assert nonblocking_send_errno(box_on(m), b"no room") == errno.EAGAIN
    assert messages(box_on(a)) == messages(box_on(b)) == ["0000000001", "0000000002"]
    assert receive_nowait(box_on(b)) == b"1"
    assert nonblocking_send_errno(box_on(a), b"3") is None  # room again, on the other mount
    assert nonblocking_send_errno(box_on(b), b"4") == errno.EAGAIN


def test_blocked_sender_on_b_proceeds_when_a_receiver_on_a_makes_room(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    set_capacity(box_on(a), 1)
    send(box_on(a), b"first")
    s = Step(lambda: send(box_on(b), b"second"), "blocked sender on B")
    s.assert_blocked()
    assert messages(box_on(a)) == ["0000000001"]
    assert receive_nowait(box_on(a)) == b"first"
    s.value()
    assert receive_nowait(box_on(a)) == b"second"


def test_blocked_senders_on_both_mounts_enter_as_room_appears(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    set_capacity(box_on(a), 1)
    send(box_on(a), b"0")
    blocked = [Step(lambda m=m, i=i: send(box_on(m), f"{i}".encode()), f"sender {i}")
               for i, m in enumerate((b, a, b), start=1)]
    for s in blocked:
        s.assert_blocked(0.1)
    got = []
    for _ in range(4):
        got.append(Step(lambda: receive_one(box_on(a))).value())
    for s in blocked:
        s.value()
    assert sorted(got) == [b"0", b"1", b"2", b"3"] and got[0] == b"0"
    assert messages(box_on(b)) == []


def test_rendezvous_across_mounts(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    set_capacity(box_on(a), 0)
    assert nonblocking_send_errno(box_on(b), b"nobody waits") == errno.EAGAIN
    s = Step(lambda: send(box_on(b), b"handed over"), "rendezvous sender on B")
    s.assert_blocked()
    assert messages(box_on(a)) == []  # neither listed nor counted until taken
    assert receive_one(box_on(a)) == b"handed over"
    s.value()
    r = start_receive(box_on(a), "waiting receiver on A")
    r.assert_blocked()
    Step(lambda: send(box_on(b), b"straight in"), "sender to a waiting receiver").value()
    assert r.value() == b"straight in"


def test_max_msg_size_set_on_a_is_efbig_for_a_sender_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    os.setxattr(box_on(a), "user.ipc.max_msg_size", b"10")
    assert send_errno(box_on(b) / ".send", b"x" * 11) == errno.EFBIG
    assert messages(box_on(a)) == []
    send(box_on(b), b"y" * 10)
    assert receive_nowait(box_on(a)) == b"y" * 10


# ---------------------------------------------------------------- batches across mounts

def test_send_lines_on_a_receive_lines_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    fd = os.open(box_on(a) / ".send-lines", os.O_WRONLY)
    try:
        assert os.write(fd, b"job 1\njob 2\njob 3\n") == 18
    finally:
        os.close(fd)
    assert messages(box_on(b)) == ["0000000001", "0000000002", "0000000003"]
    fd = os.open(box_on(b) / ".receive-lines", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 12) == b"job 1\njob 2\n"  # whole messages only, as many as fit
        assert os.read(fd, 65536) == b"job 3\n"
        expect_errno(errno.EAGAIN, os.read, fd, 65536)
    finally:
        os.close(fd)


def test_send_frames_on_b_receive_frames_on_a_and_a_waiting_batch_reader_wakes(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    payloads = [b"line\nbreak", b"\x00nul", b""]
    frames = b"".join(len(p).to_bytes(4, "little") + p for p in payloads)
    fd = os.open(box_on(a) / ".receive-frames", os.O_RDONLY)
    try:
        r = Step(lambda: os.read(fd, 65536), "waiting frame reader on A")
        r.assert_blocked()
        wfd = os.open(box_on(b) / ".send-frames", os.O_WRONLY)
        try:
            assert os.write(wfd, frames) == len(frames)
        finally:
            os.close(wfd)
        got = r.value()
        rest = b"" if got == frames else Step(lambda: os.read(fd, 65536)).value()
        assert got + rest == frames  # the three arrive together, in order
    finally:
        os.close(fd)


def test_send_lines_on_b_reaches_a_plain_receiver_on_a(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    r = start_receive(box_on(a))
    r.assert_blocked()
    fd = os.open(box_on(b) / ".send-lines", os.O_WRONLY)
    try:
        os.write(fd, b"one\ntwo\n")
    finally:
        os.close(fd)
    assert r.value() == b"one"
    assert receive_nowait(box_on(b)) == b"two"


# ---------------------------------------------------------------- bad input still gets its errno

def test_bad_names_and_misplaced_objects_keep_their_errnos(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    expect_errno(errno.EINVAL, os.mkdir, box_on(a, ".hidden"))
    expect_errno(errno.ENAMETOOLONG, os.mkdir, box_on(b, "x" * 256))
    box = make_box(a)
    expect_errno(errno.EPERM, os.mkdir, box_on(b) / "nested")
    expect_errno(errno.EPERM, os.mkdir, b / "newtop")
    expect_errno(errno.EPERM, os.open, b / "mailboxes" / "file", os.O_CREAT | os.O_WRONLY, 0o644)
    expect_errno(errno.EINVAL, os.open, box_on(b) / ".other", os.O_CREAT | os.O_WRONLY, 0o644)
    expect_errno(errno.EACCES, os.open, box_on(b) / ".receive", os.O_WRONLY)
    expect_errno(errno.EACCES, os.open, box_on(b) / ".send", os.O_RDONLY)
    send(box, b"queued")
    expect_errno(errno.EACCES, os.open, box_on(b) / "0000000001", os.O_WRONLY)
    expect_errno(errno.EPERM, os.link, box_on(b) / "0000000001", box_on(b) / "copy")
    assert sorted(os.listdir(a / "mailboxes")) == ["box"]
    assert messages(box) == ["0000000001"]


@pytest.mark.parametrize("name,value,code", [
    ("user.ipc.capacity", b"abc", errno.EINVAL),
    ("user.ipc.capacity", b"-1", errno.EINVAL),
    ("user.ipc.policy", b"sometimes", errno.EINVAL),
    ("user.ipc.max_msg_size", b"", errno.EINVAL),
    ("user.ipc.id", b"7", errno.EPERM),
    ("user.ipc.unknown", b"1", errno.ENOTSUP),
])
def test_bad_xattrs_keep_their_errnos_and_change_nothing(two_mounts, name, value, code):
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    set_capacity(box_on(a), 3)
    expect_errno(code, os.setxattr, box_on(b), name, value)
    assert os.getxattr(box_on(a), "user.ipc.capacity") == b"3"
    assert os.getxattr(box_on(a), "user.ipc.policy") == b"any"
    expect_errno(errno.ENODATA, os.getxattr, box_on(b), "user.ipc.unknown")


# ---------------------------------------------------------------- semaphores across mounts

def test_semaphore_made_on_a_is_seen_and_valued_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    sem_a = make_sem(a)
    sem_b = b / "sem" / "s"
    assert "s" in os.listdir(b / "sem")
    assert os.stat(sem_b).st_size == 0
    assert sem_value(sem_b) == 0
    assert post(sem_a, b"3") == 1
    assert sem_value(sem_b) == 3
    assert wait_sem(sem_b) == b"2\n"
    assert sem_value(sem_a) == 2
    expect_errno(errno.EEXIST, os.open, sem_b, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)


def test_post_on_a_wakes_a_waiter_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    sem_a = make_sem(a)
    w = Step(lambda: wait_sem(b / "sem" / "s"), "waiter on B")
    w.assert_blocked()
    post(sem_a, b"1")
    assert w.value() == b"0\n"
    assert sem_value(sem_a) == 0


def test_one_post_of_4_wakes_4_waiters_on_both_mounts_exactly_once(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    make_sem(a)
    waiters = [Step(lambda m=m: wait_sem(m / "sem" / "s"), f"waiter {i}")
               for i, m in enumerate((a, b, a, b, b))]
    for w in waiters:
        w.assert_blocked(0.1)
    post(b / "sem" / "s", b"4")
    wait_until(lambda: sum(not w.running() for w in waiters) == 4, timeout=STEP_S,
               what="4 of the 5 waiters woken")
    assert sum(w.running() for w in waiters) == 1
    assert sorted(w.value() for w in waiters if not w.running()) == [b"0\n", b"1\n", b"2\n", b"3\n"]
    assert sem_value(a / "sem" / "s") == 0
    post(a / "sem" / "s", b"1")  # the fifth
    assert sorted(w.value() for w in waiters) == [b"0\n", b"0\n", b"1\n", b"2\n", b"3\n"]
    assert sem_value(b / "sem" / "s") == 0


def test_semaphore_errnos_hold_across_mounts(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    sem_a = make_sem(a)
    sem_b = b / "sem" / "s"
    post(sem_a, b"4")
    for data in (b"0", b"abc", b"-1", b"1.5"):
        expect_errno(errno.EINVAL, post, sem_b, data)
    expect_errno(errno.EOVERFLOW, post, sem_b, str(SEM_VALUE_MAX).encode())
    assert sem_value(sem_a) == 4
    expect_errno(errno.EPERM, os.setxattr, sem_b, "user.ipc.value", b"9")
    for _ in range(4):
        wait_sem(sem_a)
    kind, value = Step(lambda: wait_sem(sem_b, os.O_RDONLY | os.O_NONBLOCK)).finish()
    assert (kind, value) == ("err", errno.EAGAIN)


def test_unlink_on_b_removes_the_semaphore_for_a(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    sem_a = make_sem(a)
    os.unlink(b / "sem" / "s")
    wait_until(lambda: "s" not in os.listdir(a / "sem") and not os.path.exists(sem_a),
               timeout=STEP_S, what="the semaphore gone from A")
    make_sem(a)  # the name is free again


def test_rename_on_a_moves_the_semaphore_for_b_with_its_value(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    sem_a = make_sem(a)
    post(sem_a, b"3")
    held = os.open(b / "sem" / "s", os.O_WRONLY)  # open on B across the rename
    try:
        os.rename(sem_a, a / "sem" / "t")
        # (B's kernel may keep the old name for its entry timeout, 1 s)
        wait_until(lambda: sorted(os.listdir(b / "sem")) == ["t"] and not os.path.exists(b / "sem" / "s"),
                   timeout=STEP_S, what="the rename seen on B")
        assert sem_value(b / "sem" / "t") == 3
        assert os.write(held, b"1") == 1  # still the same semaphore
    finally:
        os.close(held)
    assert sem_value(a / "sem" / "t") == 4
    make_sem(a, "s")  # the old name is free again
    assert sem_value(b / "sem" / "s") == 0


def test_chmod_and_chown_of_a_semaphore_on_a_are_seen_on_b(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    sem_a = make_sem(a)
    os.chmod(sem_a, 0o640)
    os.chown(sem_a, 65534, 65533)

    def on_b():
        st = os.stat(b / "sem" / "s")
        return st.st_mode & 0o7777, st.st_uid, st.st_gid

    wait_until(lambda: on_b() == (0o640, 65534, 65533), timeout=STEP_S, what="mode and owner seen on B")


def test_semaphore_rename_errnos_change_nothing(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    post(make_sem(a, "one"), b"1")
    post(make_sem(a, "two"), b"2")
    wait_until(lambda: sorted(os.listdir(b / "sem")) == ["one", "two"], timeout=STEP_S,
               what="both semaphores seen on B")
    expect_errno(errno.EEXIST, os.rename, b / "sem" / "one", b / "sem" / "two")  # never replaced
    expect_errno(errno.ENOENT, os.rename, b / "sem" / "none", b / "sem" / "three")
    expect_errno(errno.EINVAL, os.rename, b / "sem" / "one", b / "sem" / ".hidden")
    expect_errno(errno.EPERM, os.rename, b / "sem" / "one", b / "mailboxes" / "one")
    for m in (a, b):
        assert sorted(os.listdir(m / "sem")) == ["one", "two"]
        assert (sem_value(m / "sem" / "one"), sem_value(m / "sem" / "two")) == (1, 2)


def test_poll_on_a_semaphore_on_b_reports_a_post_on_a(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    sem_a = make_sem(a)
    fd = os.open(b / "sem" / "s", os.O_RDONLY | os.O_NONBLOCK)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(0) == []
        post(sem_a, b"1")
        assert p.poll(STEP_S * 1000) == [(fd, select.POLLIN)]
        assert os.pread(fd, 32, 0) == b"0\n"
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the backend goes away

def assert_eio_in_time(fn, what):
    code, took = errno_within(fn, EIO_DEADLINE_S + 5, what)
    assert code == errno.EIO, f"{what}: expected EIO, got {code and errno.errorcode.get(code, code)}"
    assert took < EIO_DEADLINE_S, f"{what}: EIO after {took:.1f}s"


@pytest.fixture
def outage(two_mounts):
    """Two mounts with a mailbox "box" holding one message, an empty mailbox "empty" and a
    semaphore "s" at value 2, all seen by both mounts; then Redis is stopped."""
    a, b = two_mounts.a, two_mounts.b
    make_box(a)
    send(box_on(a), b"queued before")
    make_box(a, "empty")
    post(make_sem(a), b"2")
    for m in (a, b):  # both daemons have looked at everything
        assert messages(box_on(m)) == ["0000000001"] and os.path.exists(m / "sem" / "s")
        assert sorted(os.listdir(m / "mailboxes")) == ["box", "empty"]
    two_mounts.redis.stop()
    return two_mounts


def test_redis_stopped_answers_blocked_receivers_and_semaphore_waiters_with_eio(two_mounts):
    redis, a, b = two_mounts.redis, two_mounts.a, two_mounts.b
    make_box(a, "empty")
    make_sem(a)
    blocked = [start_receive(box_on(b, "empty"), "blocked receiver on B"),
               start_receive(box_on(a, "empty"), "blocked receiver on A"),
               Step(lambda: wait_sem(b / "sem" / "s"), "blocked semaphore waiter on B")]
    for w in blocked:
        w.assert_blocked(0.1)
    stopped_at = time.monotonic()
    redis.stop()
    for w in blocked:
        assert w.finish(EIO_DEADLINE_S + 5) == ("err", errno.EIO), f"{w.what}: not EIO"
        assert w.ended - stopped_at < EIO_DEADLINE_S, f"{w.what} answered after {w.ended - stopped_at:.1f}s"


OUTAGE_OPS = {
    "mkdir": lambda a, b: os.mkdir(box_on(a, "new")),
    "rmdir": lambda a, b: os.rmdir(box_on(b, "empty")),
    "send": lambda a, b: send(box_on(b), b"lost?"),
    "dropin": lambda a, b: send_errno_raise(box_on(a) / "note", b"lost?"),
    "send-lines": lambda a, b: send_errno_raise(box_on(a) / ".send-lines", b"1\n2\n"),
    "receive": lambda a, b: receive_nowait(box_on(a)),
    "blocking receive": lambda a, b: receive_one(box_on(b, "empty")),
    "receive-lines": lambda a, b: read_batch(box_on(b) / ".receive-lines"),
    "list mailboxes": lambda a, b: os.listdir(a / "mailboxes"),
    "list messages": lambda a, b: os.listdir(box_on(b)),
    "peek": lambda a, b: (box_on(a) / "0000000001").read_bytes(),
    "set capacity": lambda a, b: set_capacity(box_on(b), 5),
    "get capacity": lambda a, b: os.getxattr(box_on(a), "user.ipc.capacity"),
    "semaphore post": lambda a, b: post(b / "sem" / "s", b"1"),
    "semaphore wait": lambda a, b: wait_sem(a / "sem" / "s"),
    "semaphore value": lambda a, b: os.getxattr(b / "sem" / "s", "user.ipc.value"),
    "semaphore create": lambda a, b: make_sem(a, "t"),
}


def read_batch(node):
    fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def send_errno_raise(path, data):
    code = send_errno(path, data, os.O_WRONLY | os.O_CREAT)
    if code is not None:
        raise OSError(code, os.strerror(code))


@pytest.mark.parametrize("op", sorted(OUTAGE_OPS))
def test_redis_stopped_fails_backend_operations_with_eio_in_time(outage, op):
    assert_eio_in_time(lambda: OUTAGE_OPS[op](outage.a, outage.b), op)


def test_redis_stopped_leaves_the_mounts_up_with_local_objects_working(outage):
    for m in (outage.a, outage.b):
        Step(lambda m=m: check_local_objects(m), "local objects").value(STEP_S * 2)
        Step(lambda m=m: (m / ".status").read_bytes(), "root .status").value()
        assert is_mounted(m.path) and m.proc.poll() is None


def test_redis_restarted_on_its_port_everything_resumes(outage):
    redis, a, b = outage.redis, outage.a, outage.b
    assert_eio_in_time(lambda: os.mkdir(box_on(a, "again")), "mkdir while Redis is down")
    redis.restart()  # empty: it persisted nothing

    def works_again():
        kind, code = Step(lambda: os.mkdir(box_on(a, "again")), "mkdir").finish(EIO_DEADLINE_S + 5)
        return kind == "ok" or code == errno.EEXIST
    wait_until(works_again, timeout=RESUME_DEADLINE_S, interval=0.2, what="mkdir to work again")
    send(box_on(a, "again"), b"after the outage")
    assert Step(lambda: receive_one(box_on(b, "again"))).value() == b"after the outage"
    r = start_receive(box_on(b, "again"))
    r.assert_blocked()
    send(box_on(a, "again"), b"wakes B")
    assert r.value() == b"wakes B"
    make_sem(b, "t")
    w = Step(lambda: wait_sem(a / "sem" / "t"), "waiter on A after the outage")
    w.assert_blocked()
    post(b / "sem" / "t", b"1")
    assert w.value() == b"0\n"
    # what Redis lost is gone for both daemons alike
    assert sorted(os.listdir(a / "mailboxes")) == sorted(os.listdir(b / "mailboxes")) == ["again"]


def test_redis_with_aof_always_killed_and_restarted_loses_no_sent_message(tmp_path, backend_mounts):
    """README, "Persistence": with appendonly yes / appendfsync always, a message whose send
    returned survives a SIGKILL of Redis; one half-read at the kill comes back, counted."""
    redis = RedisServer(tmp_path / "aof", extra=("--appendonly", "yes", "--appendfsync", "always"))
    redis.start()
    try:
        opts = ("backend_lease=1500", "backend_timeout=1000")
        a = backend_mounts.make(redis.url, opts, name="a")
        b = backend_mounts.make(redis.url, opts, name="b")
        make_box(a)
        sent = [b"durable %d" % i for i in range(50)]
        for m in sent:
            send(box_on(a), m)
        fd = os.open(box_on(b) / ".receive", os.O_RDONLY)
        try:
            assert os.read(fd, 7) == b"durable"  # half-read on B when Redis dies
            redis.stop()  # SIGKILL
            redis.restart()  # the same directory: the append-only file is replayed
        finally:
            os.close(fd)

        def all_back():
            kind, value = Step(lambda: messages(box_on(a)), "listing").finish(EIO_DEADLINE_S + 5)
            return kind == "ok" and len(value) == len(sent)
        wait_until(all_back, timeout=RESUME_DEADLINE_S, interval=0.2, what="every sent message listed again")
        assert os.getxattr(box_on(a) / "0000000001", "user.ipc.redeliveries") == b"1"
        got = [Step(lambda: receive_one(box_on(b))).value() for _ in sent]
        assert got == sent
        expect_errno(errno.EAGAIN, receive_nowait, box_on(a))
    finally:
        redis.stop()


def test_idle_mailboxes_cost_redis_no_script_calls(two_mounts):
    a, b = two_mounts.a, two_mounts.b
    for i in range(40):
        make_box(a, f"idle{i}")
        send(box_on(a, f"idle{i}"), b"waiting")
    assert len(os.listdir(b / "mailboxes")) == 40  # B mirrors them all too
    before = script_calls(two_mounts.redis)
    # Four lease thirds (0.5 s each here) of both daemons' housekeeping: nothing is claimed,
    # polled or held, so no mailbox is worth a script call (not one per mailbox per tick).
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        assert script_calls(two_mounts.redis) - before < 10
        time.sleep(0.1)


def test_redis_down_at_start_still_mounts_and_works_once_redis_comes(tmp_path, backend_mounts):
    redis = RedisServer(tmp_path / "late", port=free_port())
    m = backend_mounts.make(redis.url, ("backend_timeout=1000",))
    try:
        Step(lambda: check_local_objects(m), "local objects").value(STEP_S * 2)
        assert_eio_in_time(lambda: os.mkdir(box_on(m, "x")), "mkdir without Redis")
        redis.start()

        def works():
            kind, code = Step(lambda: os.mkdir(box_on(m, "x")), "mkdir").finish(EIO_DEADLINE_S + 5)
            return kind == "ok" or code == errno.EEXIST
        wait_until(works, timeout=RESUME_DEADLINE_S, interval=0.2, what="mkdir once Redis is up")
        send(box_on(m, "x"), b"late")
        assert redis.command("PING") == "PONG"
        assert receive_nowait(box_on(m, "x")) == b"late"
    finally:
        redis.stop()


def test_backend_given_with_o_backend_works(redis_server, tmp_path):
    dirs = [tmp_path / n for n in ("o1", "o2")]
    made = []
    try:
        for d in dirs:
            d.mkdir()
            made.append(Mount(d, options=(f"backend={redis_server.url}", "backend_timeout=1000")))
        os.mkdir(made[0] / "mailboxes" / "viaopt")
        send(made[0] / "mailboxes" / "viaopt", b"through -o")
        assert receive_nowait(made[1] / "mailboxes" / "viaopt") == b"through -o"
    finally:
        for m in made:
            m.stop()
    for m in made:
        check_clean_exit(m)


def test_o_backend_takes_several_seeds_separated_by_commas(redis_server, tmp_path):
    # -o splits on commas too: the HOST:PORT items after backend= are its further seeds (a
    # cluster's), not options of their own; the first one that answers is used
    d = tmp_path / "seeds"
    d.mkdir()
    mount = Mount(d, options=(f"backend={redis_server.url},127.0.0.1:1", "backend_timeout=1000"))
    try:
        os.mkdir(mount / "mailboxes" / "seeds")
        send(mount / "mailboxes" / "seeds", b"via the first seed")
        assert receive_nowait(mount / "mailboxes" / "seeds") == b"via the first seed"
    finally:
        mount.stop()
    check_clean_exit(mount)


@pytest.mark.parametrize("url", ["redis://", "http://127.0.0.1:6379", "redis://127.0.0.1:notaport",
                                 "redis://127.0.0.1:99999"])
def test_bad_backend_url_is_a_one_line_error_and_nothing_is_mounted(tmp_path, url):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rc, out, err = run_to_files([IPCFS_BIN, "-f", "-o", "auto_unmount", "--backend", url, mnt],
                                tmp_path, "bad", timeout=STEP_S * 2)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert rc != 0
    assert len(lines) == 1, lines
    assert not is_mounted(mnt)
