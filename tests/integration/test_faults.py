"""Faults (issue #10): clients killed at any moment, opens and closes racing with rmdir and
rename of the same mailbox, and the daemon at its memory bound. After each, the daemon
still serves and its state is consistent: what .status counts is what is listed, nothing
partial was delivered, and every byte held is given back once the messages are gone.

Contract: spec/interface.md, "Everywhere" and "Mailboxes". Load runs in forked children
bounded by a deadline; every wait polls a condition with a deadline."""
import errno
import hashlib
import os
import random
import select
import signal
import time

import pytest

from conftest import wait_until
from ipcfs_helpers import EXIT_DEADLINE_S, STEP_S, field, read_status, receive_nowait, send

LOAD_S = 3.0  # how long each racing load runs


def framed(payload):
    """A message that says whether it arrived whole: its SHA-256, then the payload."""
    return hashlib.sha256(payload).digest() + payload


def whole(message):
    return len(message) >= 32 and hashlib.sha256(message[32:]).digest() == message[:32]


def fork(body):
    """Runs body() in a child that exits 0 when it returns, 1 when it raises."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def reap_all(pids, timeout=EXIT_DEADLINE_S + LOAD_S):
    """Waits for every child; returns {pid: exit status or -signal}."""
    deadline = time.monotonic() + timeout
    codes = {}
    while len(codes) < len(pids):
        for pid in pids:
            if pid in codes:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            for pid in pids:
                if pid not in codes:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            pytest.fail(f"children still running after {timeout}s: {set(pids) - set(codes)}")
        time.sleep(0.005)
    return codes


def drain(box):
    """Takes every queued message without blocking; returns them."""
    taken = []
    while True:
        try:
            taken.append(receive_nowait(box))
        except BlockingIOError:
            return taken


def assert_consistent(mnt):
    """Root counters agree with what the mailboxes list, and nothing is left open."""
    wait_until(lambda: field(mnt, "open_files") == "0", timeout=STEP_S, what="every file released")
    boxes = list((mnt / "mailboxes").iterdir())
    listed = sum(len(os.listdir(b)) for b in boxes)
    status = read_status(mnt)
    assert int(status["messages"]) == listed
    assert int(status["mailboxes"]) == len(boxes)
    assert status["receivers_waiting"] == "0" and status["senders_waiting"] == "0"


# ---------------------------------------------------------------- killed clients

def killed_mid_write(open_path, flags, payload):
    """A child that opens open_path, writes the first half of payload, and is killed by
    SIGKILL there (the parent kills it once it says it is halfway)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()

    def body():
        fd = os.open(open_path, flags, 0o644)
        os.write(fd, payload[:len(payload) // 2])
        os.write(ready_w, b"!")
        os.read(hold_r, 1)  # never written: the child waits here to be killed

    pid = fork(body)
    try:
        ready, _, _ = select.select([ready_r], [], [], STEP_S)
        assert ready, "the child did not get halfway"
        os.kill(pid, signal.SIGKILL)
    finally:
        for fd in (ready_r, ready_w, hold_r, hold_w):
            os.close(fd)
    return pid


def test_senders_killed_mid_message_deliver_nothing_partial(mount, mailbox):
    """A sender killed halfway through a message (through .send, or writing a drop-in file)
    sends nothing: the kernel's close at its exit is not the program's close(). A sender
    that wrote its message and exited without closing still sends it (exit closes)."""
    payload = framed(os.urandom(100_000))
    killed = [killed_mid_write(mailbox / ".send", os.O_WRONLY, payload) for _ in range(5)]
    killed.append(killed_mid_write(mailbox / "dropped.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, payload))

    def exits_without_close():
        fd = os.open(mailbox / ".send", os.O_WRONLY)
        os.write(fd, payload)
        os._exit(0)

    codes = reap_all(killed + [fork(exits_without_close)])
    assert sorted(codes.values()) == sorted([-signal.SIGKILL] * len(killed) + [0])
    wait_until(lambda: field(mount.path, "open_files") == "0", timeout=STEP_S, what="every file released")
    assert drain(mailbox) == [payload], "only the message whose writer was not killed"
    assert not (mailbox / "dropped.bin").exists(), "the drop-in's name is free again"
    assert read_status(mount.path)["bytes_held"] == "0"
    assert_consistent(mount.path)


def test_receivers_killed_mid_message_leave_it_for_the_next(mount, mailbox):
    """Receivers killed after reading part of a message: the message comes back whole,
    with its redelivery counted, and is received exactly once in the end."""
    payloads = [framed(os.urandom(100_000)) for _ in range(10)]
    for p in payloads:
        send(mailbox, p)

    def partial_reader():
        fd = os.open(mailbox / ".receive", os.O_RDONLY)
        os.read(fd, 1000)  # part of the oldest message
        os.kill(os.getpid(), signal.SIGKILL)

    codes = reap_all([fork(partial_reader) for _ in range(10)])
    assert all(c == -signal.SIGKILL for c in codes.values())
    got = drain(mailbox)
    assert sorted(got) == sorted(payloads), "every message once, whole"
    assert int(field(mailbox, "redelivered")) >= 1
    assert_consistent(mount.path)


# ---------------------------------------------------------------- racing namespace changes

def test_opens_and_closes_race_rmdir_and_rename_of_the_same_mailbox(mount):
    """Four processes send to and receive from mailboxes/race (and its renamed self) while
    another removes, recreates and renames it, thousands of times. Every call either works
    or fails with the errno the race explains; the daemon stays healthy and consistent."""
    mnt = mount.path
    names = [mnt / "mailboxes" / "race", mnt / "mailboxes" / "race-renamed"]
    expected = {errno.ENOENT, errno.EIDRM, errno.ENOTEMPTY, errno.EEXIST, errno.EAGAIN}
    stop_at = time.monotonic() + LOAD_S

    def until_deadline(step):
        def body():
            r = random.Random(os.getpid())
            count = 0
            while time.monotonic() < stop_at:
                try:
                    step(r)
                    count += 1
                except OSError as e:
                    if e.errno not in expected:
                        raise
        return body

    def sender(r):
        fd = os.open(r.choice(names) / ".send", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, framed(os.urandom(r.randint(0, 2000))))
        finally:
            os.close(fd)

    def receiver(r):
        fd = os.open(r.choice(names) / ".receive", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
        finally:
            os.close(fd)

    def shuffler(r):
        box = r.choice(names)
        action = r.randrange(3)
        if action == 0:
            os.mkdir(box)
        elif action == 1:
            for m in os.listdir(box):  # empty it so that rmdir may succeed
                try:
                    os.unlink(box / m)
                except FileNotFoundError:
                    pass
            os.rmdir(box)
        else:
            os.rename(box, names[1 - names.index(box)])

    pids = [fork(until_deadline(sender)) for _ in range(2)] + \
        [fork(until_deadline(receiver)) for _ in range(2)] + [fork(until_deadline(shuffler))]
    codes = reap_all(pids)
    assert all(c == 0 for c in codes.values()), f"a racing process failed: {codes}"
    assert_consistent(mnt)
    for box in names:
        if box.exists():
            assert all(whole(m) for m in drain(box))
            os.rmdir(box)
    assert read_status(mnt)["bytes_held"] == "0"
    assert_consistent(mnt)


# ---------------------------------------------------------------- the memory bound

def test_at_the_memory_bound_sends_fail_and_the_daemon_keeps_serving(make_mount):
    """With -o max_bytes=1M, senders push until ENOSPC; nothing partial is queued, receivers
    still work, and once drained every byte is given back and sends work again."""
    m = make_mount(options=("max_bytes=1M",))
    box = m / "mailboxes" / "full"
    box.mkdir()
    sent = []
    refused = 0
    for i in range(200):
        payload = framed(os.urandom(20_000))
        try:
            send(box, payload)
            sent.append(payload)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            refused += 1
    assert refused > 0 and sent, (len(sent), refused)
    assert int(read_status(m.path)["bytes_held"]) <= 1 << 20
    os.mkdir(m / "mailboxes" / "still-serving")  # the namespace works at the bound
    got = drain(box)
    assert got == sent, "queued in order, whole, none lost"
    assert read_status(m.path)["bytes_held"] == "0"
    send(box, b"room again")
    assert receive_nowait(box) == b"room again"
    assert_consistent(m.path)
