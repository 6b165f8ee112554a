"""Flow control on mailboxes: user.ipc.capacity, senders blocking in close()/fsync() (drop-in
files too: on a full mailbox they are created at once and wait in close()), O_NONBLOCK (EAGAIN), interruption of a blocked sender (EINTR, nothing
queued), arrival order of blocked senders, rendezvous at capacity 0, 1,000 parked senders,
and the global byte bound (-o max_bytes=N, ENOSPC).

Contract: spec/interface.md, "Mailboxes" (Capacity) and "Everywhere" (memory bound, blocked
operations hold no daemon thread). A sender or receiver is known to be blocked when .status
shows it in senders_waiting / receivers_waiting; no sleep is used as synchronisation and
every blocking step has a deadline."""
import collections
import errno
import os
import select
import signal
import subprocess
import threading
import time

import pytest

from conftest import wait_until
from ipcfs_helpers import (PY, STEP_S, assert_unchanged, expect_errno, field, queued,
                           read_message, read_status, reap, receive_nowait, send, set_capacity,
                           snapshot, status_text, wait_field)


# ---------------------------------------------------------------- helpers

class Sender(threading.Thread):
    """open(.send or a drop-in name) / write / [fsync] / close in a thread; result is
    "ok" or the OSError; stage tells how far it got."""

    def __init__(self, path, data, flags=os.O_WRONLY, fsync=False):
        super().__init__(daemon=True)
        self.path, self.data, self.flags, self.fsync = path, data, flags, fsync
        self.result = None
        self.stage = "start"
        self.done_at = None

    def run(self):
        try:
            self.stage = "open"
            fd = os.open(self.path, self.flags, 0o644)
            try:
                self.stage = "write"
                os.write(fd, self.data)
                if self.fsync:
                    self.stage = "fsync"
                    os.fsync(fd)
                    self.stage = "fsynced"
            finally:
                self.stage = "close"
                os.close(fd)
            self.result = "ok"
        except OSError as e:
            self.result = e
        self.done_at = time.monotonic()
        self.stage = "done"

    def finish(self, timeout=STEP_S):
        self.join(timeout)
        assert not self.is_alive(), f"sender still blocked in {self.stage}"
        return self.result


def start_sender(*args, **kwargs):
    s = Sender(*args, **kwargs)
    s.start()
    return s


def in_thread(fn, what, timeout=STEP_S):
    """Runs fn in a thread with a deadline; returns its value (or raises its OSError).
    Used for steps that a faulty daemon could leave hanging uninterruptibly (a process in
    D state cannot be ended by a timeout; killing the daemon at teardown frees it)."""
    out = []

    def run():
        try:
            out.append(("ok", fn()))
        except OSError as e:
            out.append(("err", e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what}: still hanging after {timeout}s")
    kind, value = out[0]
    if kind == "err":
        raise value
    return value


RECEIVER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
chunks = []
while True:
    c = os.read(fd, 65536)
    if not c:
        break
    chunks.append(c)
sys.stdout.write(b"".join(chunks).hex() + "\n")
"""


def start_receiver(box):
    return subprocess.Popen([PY, "-c", RECEIVER, str(box / ".receive")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def receiver_result(proc):
    out, err = proc.communicate(timeout=STEP_S)
    assert proc.returncode == 0, err
    return bytes.fromhex(out.decode().strip())


# ---------------------------------------------------------------- the capacity attribute

def test_capacity_defaults_to_unlimited(mailbox):
    assert os.getxattr(mailbox, "user.ipc.capacity") == b"unlimited"
    assert field(mailbox, "capacity") == "unlimited"
    assert "user.ipc.capacity" in os.listxattr(mailbox)
    # unlimited really means many: 200 messages queue without blocking (deadline per send)
    for i in range(200):
        s = start_sender(mailbox / ".send", b"m%d" % i)
        assert s.finish() == "ok"
    assert queued(mailbox) == 200


@pytest.mark.parametrize("value,shown", [(b"2", "2"), (b"2\n", "2"), (b"0", "0"),
                                         (b"1000000", "1000000"), (b"unlimited", "unlimited"),
                                         (b"unlimited\n", "unlimited")],
                         ids=["2", "2nl", "0", "1e6", "unlimited", "unlimited_nl"])
def test_capacity_is_set_and_read_back(mailbox, value, shown):
    set_capacity(mailbox, 7)
    os.setxattr(mailbox, "user.ipc.capacity", value)
    assert os.getxattr(mailbox, "user.ipc.capacity").decode() == shown
    assert field(mailbox, "capacity") == shown


def test_setfattr_command_sets_capacity(mailbox):
    r = subprocess.run(["setfattr", "-n", "user.ipc.capacity", "-v", "3", str(mailbox)],
                       capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["getfattr", "--only-values", "-n", "user.ipc.capacity", str(mailbox)],
                       capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"3"


@pytest.mark.parametrize("value", [b"abc", b"-1", b"", b"1.5", b"2x", b"unlimitedx", b"\n"],
                         ids=["abc", "minus1", "empty", "1.5", "2x", "unlimitedx", "newline"])
def test_bad_capacity_is_einval_and_changes_nothing(mount, mailbox, value):
    set_capacity(mailbox, 3)
    send(mailbox, b"queued")
    before = snapshot(mount, mailbox)
    expect_errno(errno.EINVAL, os.setxattr, mailbox, "user.ipc.capacity", value)
    assert os.getxattr(mailbox, "user.ipc.capacity") == b"3"
    assert_unchanged(mount, mailbox, before)


# ---------------------------------------------------------------- blocking senders

def test_third_sender_blocks_in_close_until_a_receiver_makes_room(mailbox):
    set_capacity(mailbox, 2)
    send(mailbox, b"1\n")
    send(mailbox, b"2\n")
    s = start_sender(mailbox / ".send", b"3\n")
    wait_field(mailbox, "senders_waiting", 1)
    assert s.is_alive() and s.stage == "close", "the write itself must not block"
    assert queued(mailbox) == 2
    assert sorted(os.listdir(mailbox)) == ["0000000001", "0000000002"]
    assert receive_nowait(mailbox) == b"1\n"
    assert s.finish() == "ok"
    assert field(mailbox, "senders_waiting") == "0"
    assert queued(mailbox) == 2
    assert sorted(os.listdir(mailbox)) == ["0000000002", "0000000003"]
    assert receive_nowait(mailbox) == b"2\n"
    assert receive_nowait(mailbox) == b"3\n"


def test_shell_sender_blocks_in_close_until_room(mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"first\n")
    sh = subprocess.Popen(["sh", "-c", 'echo second > "$1"', "sh", str(mailbox / ".send")],
                          stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "senders_waiting", 1)
        assert sh.poll() is None
        assert receive_nowait(mailbox) == b"first\n"
        _, err = sh.communicate(timeout=STEP_S)
        assert sh.returncode == 0, err
        assert receive_nowait(mailbox) == b"second\n"
    finally:
        reap(sh)


def test_sender_blocks_in_fsync_until_room_and_close_then_sends_nothing_more(mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"first")
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    closed = False
    try:
        os.write(fd, b"by fsync")
        done = []
        t = threading.Thread(target=lambda: done.append(os.fsync(fd)), daemon=True)
        t.start()
        wait_field(mailbox, "senders_waiting", 1)
        assert not done
        assert queued(mailbox) == 1
        assert receive_nowait(mailbox) == b"first"
        t.join(STEP_S)
        assert not t.is_alive(), "fsync still blocked after room was made"
        assert done == [None]
        assert os.listdir(mailbox) == ["0000000002"]
        os.close(fd)  # nothing written since the fsync: no message, and no blocking
        closed = True
        assert queued(mailbox) == 1
        assert field(mailbox, "senders_waiting") == "0"
        assert receive_nowait(mailbox) == b"by fsync"
    finally:
        if not closed and not t.is_alive():
            os.close(fd)


def test_blocked_senders_enter_in_arrival_order(mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"initial")
    senders = []
    for i in range(5):
        senders.append(start_sender(mailbox / ".send", b"sender %d" % i))
        wait_field(mailbox, "senders_waiting", i + 1)
    got = [receive_nowait(mailbox)]
    for i in range(5):
        # the longest-waiting sender (and only that one) enters the freed place
        assert senders[i].finish() == "ok"
        wait_field(mailbox, "senders_waiting", 4 - i)
        assert [s.is_alive() for s in senders[i + 1:]] == [True] * (4 - i)
        assert os.listdir(mailbox) == ["%010d" % (i + 2)]
        got.append(receive_nowait(mailbox))
    assert got == [b"initial"] + [b"sender %d" % i for i in range(5)]


def test_root_status_sums_senders_waiting_over_mailboxes(mount):
    boxes = [mount / "mailboxes" / n for n in ("sa", "sb")]
    senders = []
    for box in boxes:
        os.mkdir(box)
        set_capacity(box, 1)
        send(box, b"fill")
    senders.append(start_sender(boxes[0] / ".send", b"a1"))
    senders.append(start_sender(boxes[0] / ".send", b"a2"))
    senders.append(start_sender(boxes[1] / ".send", b"b1"))
    wait_field(boxes[0], "senders_waiting", 2)
    wait_field(boxes[1], "senders_waiting", 1)
    assert field(mount.path, "senders_waiting") == "3"
    for box in boxes:
        set_capacity(box, "unlimited")
    for s in senders:
        assert s.finish() == "ok"
    assert field(mount.path, "senders_waiting") == "0"


def test_raising_the_capacity_releases_blocked_senders(mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    senders = []
    for i in range(3):
        senders.append(start_sender(mailbox / ".send", b"s%d" % i))
        wait_field(mailbox, "senders_waiting", i + 1)
    set_capacity(mailbox, 3)
    # two places appeared: the two longest-waiting senders enter, the third still waits
    assert senders[0].finish() == "ok"
    assert senders[1].finish() == "ok"
    wait_field(mailbox, "senders_waiting", 1)
    assert senders[2].is_alive()
    set_capacity(mailbox, "unlimited")
    assert senders[2].finish() == "ok"
    assert queued(mailbox) == 4
    assert [receive_nowait(mailbox) for _ in range(4)] == [b"fill", b"s0", b"s1", b"s2"]


def test_lowering_capacity_below_the_queue_keeps_messages_and_blocks_new_senders(mount, mailbox):
    for i in range(3):
        send(mailbox, b"q%d" % i)
    set_capacity(mailbox, 1)
    assert queued(mailbox) == 3
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send", os.O_WRONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.write, fd, b"no room")
    finally:
        os.close(fd)
    assert_unchanged(mount, mailbox, before)
    s = start_sender(mailbox / ".send", b"waits")
    wait_field(mailbox, "senders_waiting", 1)
    assert receive_nowait(mailbox) == b"q0"
    assert receive_nowait(mailbox) == b"q1"
    assert s.is_alive(), "entered while the queue was still at capacity"
    assert receive_nowait(mailbox) == b"q2"
    assert s.finish() == "ok"
    assert receive_nowait(mailbox) == b"waits"


# ---------------------------------------------------------------- O_NONBLOCK senders

def test_nonblocking_write_to_full_mailbox_is_eagain_and_queues_nothing(mount, mailbox):
    set_capacity(mailbox, 2)
    send(mailbox, b"1")
    send(mailbox, b"2")
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send", os.O_WRONLY | os.O_NONBLOCK)
    try:
        start = time.monotonic()
        expect_errno(errno.EAGAIN, os.write, fd, b"3")
        assert time.monotonic() - start < 1.0
    finally:
        os.close(fd)  # nothing was accepted: the close sends nothing and does not fail
    assert_unchanged(mount, mailbox, before)
    assert sorted(os.listdir(mailbox)) == ["0000000001", "0000000002"]


def test_python_oneliner_from_readme_gets_eagain(mailbox):
    set_capacity(mailbox, 0)
    r = subprocess.run([PY, "-c", 'import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | '
                                  'os.O_NONBLOCK); os.write(fd, b"x")', str(mailbox / ".send")],
                       capture_output=True, text=True, timeout=STEP_S)
    assert r.returncode != 0
    assert "BlockingIOError" in r.stderr and "Errno 11" in r.stderr, r.stderr
    assert queued(mailbox) == 0


def test_nonblocking_set_with_fcntl_gives_eagain_at_write(mount, mailbox):
    import fcntl
    set_capacity(mailbox, 1)
    send(mailbox, b"1")
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        expect_errno(errno.EAGAIN, os.write, fd, b"2")
    finally:
        os.close(fd)
    assert_unchanged(mount, mailbox, before)


def test_nonblocking_close_is_eagain_when_the_mailbox_filled_after_the_write(mount, mailbox):
    set_capacity(mailbox, 1)
    fd = os.open(mailbox / ".send", os.O_WRONLY | os.O_NONBLOCK)
    closed = False
    try:
        assert os.write(fd, b"written while there was room") == 28
        send(mailbox, b"took the place")
        box_before, root_before = snapshot(mount, mailbox)
        start = time.monotonic()
        closed = True
        expect_errno(errno.EAGAIN, os.close, fd)
        assert time.monotonic() - start < 1.0
        # the descriptor is gone all the same
        expect_errno(errno.EBADF, os.fstat, fd)
        assert status_text(mailbox) == box_before
        # daemon-wide, only the refused message's held bytes and its open file are gone
        expected = {}
        for line in root_before.splitlines():
            key, value = line.split(":", 1)
            expected[key] = value.strip()
        expected["bytes_held"] = str(int(expected["bytes_held"]) - 28)
        expected["open_files"] = str(int(expected["open_files"]) - 1)
        wait_until(lambda: read_status(mount.path) == expected, timeout=STEP_S,
                   what=f"the root .status to settle at {expected}")
        assert os.listdir(mailbox) == ["0000000001"]
        assert receive_nowait(mailbox) == b"took the place"
        expect_errno(errno.EAGAIN, receive_nowait, mailbox)
    finally:
        if not closed:
            os.close(fd)


def test_nonblocking_fsync_is_eagain_when_full_and_queues_nothing(mount, mailbox):
    set_capacity(mailbox, 1)
    fd = os.open(mailbox / ".send", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"pending")
        send(mailbox, b"fill")
        box_before = status_text(mailbox)
        expect_errno(errno.EAGAIN, os.fsync, fd)
        assert status_text(mailbox) == box_before
        assert os.listdir(mailbox) == ["0000000001"]
    finally:
        try:
            os.close(fd)
        except OSError as e:
            # still full: the close may refuse the same way, never otherwise
            assert e.errno == errno.EAGAIN
    assert status_text(mailbox) == box_before
    assert receive_nowait(mailbox) == b"fill"
    expect_errno(errno.EAGAIN, receive_nowait, mailbox)


def test_nonblocking_sender_works_when_there_is_room(mailbox):
    set_capacity(mailbox, 1)
    fd = os.open(mailbox / ".send", os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"fits")
    os.close(fd)
    assert receive_nowait(mailbox) == b"fits"


# ---------------------------------------------------------------- drop-in files

def test_dropin_being_written_takes_a_place(mailbox):
    set_capacity(mailbox, 2)
    send(mailbox, b"queued")
    fd = os.open(mailbox / "note.txt", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    closed = False
    try:
        # the drop-in holds the second place: a .send sender now waits
        s = start_sender(mailbox / ".send", b"from .send")
        wait_field(mailbox, "senders_waiting", 1)
        os.write(fd, b"dropped in")
        os.close(fd)
        closed = True
        assert sorted(os.listdir(mailbox)) == ["0000000001", "note.txt"]
        assert s.is_alive(), "the sender entered although the queue is at capacity"
        assert receive_nowait(mailbox) == b"queued"
        assert s.finish() == "ok"
        assert receive_nowait(mailbox) == b"dropped in"
        assert receive_nowait(mailbox) == b"from .send"
    finally:
        if not closed:
            os.close(fd)


# While a drop-in waits for a place, the mailbox must stay usable: a receiver has to be able
# to look up and open .receive (a name not looked up before) to make the room the writer
# waits for, and `ls` of the mailbox has to answer. Those steps run in threads with deadlines
# (a daemon that held the directory lock in a parked CREATE would leave them in
# uninterruptible sleep).

def test_dropin_create_on_full_mailbox_waits_in_close_not_open(mailbox):
    # Project choice (README): a CREATE parked in the daemon would hold the mailbox
    # directory's lock and freeze every lookup in it, the receiver's too. So the file is
    # made at once and its delivery waits in close(), as a .send does.
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    s = start_sender(mailbox / "late.txt", b"late", flags=os.O_CREAT | os.O_WRONLY | os.O_EXCL)
    wait_field(mailbox, "senders_waiting", 1)
    assert s.stage == "close"
    # a receiver that looks .receive up only now is not frozen out
    got = in_thread(lambda: receive_nowait(mailbox),
                    "receiving from the mailbox while a drop-in waits for a place")
    assert got == b"fill"
    assert s.finish() == "ok"
    assert os.listdir(mailbox) == ["late.txt"]
    assert receive_nowait(mailbox) == b"late"


def test_mailbox_can_be_listed_while_a_dropin_create_waits(mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    field(mailbox, "messages")
    receive_fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    s = start_sender(mailbox / "late.txt", b"late", flags=os.O_CREAT | os.O_WRONLY | os.O_EXCL)
    try:
        wait_field(mailbox, "senders_waiting", 1)
        listing = in_thread(lambda: os.listdir(mailbox),
                            "listing the mailbox while a drop-in waits for a place")
        assert listing == ["0000000001"]
    finally:
        # make the room through the .receive opened beforehand, so the creator ends
        assert read_message(receive_fd) == b"fill"
        os.close(receive_fd)
        assert s.finish() == "ok"
    assert receive_nowait(mailbox) == b"late"


def test_nonblocking_dropin_create_on_full_mailbox_is_eagain_and_creates_nothing(mount, mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    before = snapshot(mount, mailbox)
    expect_errno(errno.EAGAIN, os.open, mailbox / "refused.txt",
                 os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK, 0o644)
    assert not os.path.lexists(mailbox / "refused.txt")
    assert_unchanged(mount, mailbox, before)


def test_cp_into_full_mailbox_blocks_until_room(tmp_path, mailbox):
    src = tmp_path / "report.bin"
    src.write_bytes(os.urandom(5000))
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    field(mailbox, "messages")
    cp = subprocess.Popen(["cp", str(src), str(mailbox)], stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "senders_waiting", 1)
        assert cp.poll() is None
        got = in_thread(lambda: receive_nowait(mailbox),
                        "receiving from the mailbox while cp waits in open() for a place")
        assert got == b"fill"
        _, err = cp.communicate(timeout=STEP_S)
        assert cp.returncode == 0, err
        assert os.listdir(mailbox) == ["report.bin"]
        assert receive_nowait(mailbox) == src.read_bytes()
    finally:
        if cp.poll() is None:
            cp.kill()  # a cp stuck in uninterruptible sleep is reaped after the unmount


# ---------------------------------------------------------------- interrupting a blocked sender

BLOCKED_SENDER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.write(fd, b"interrupted message")
os.close(fd)
print("closed", flush=True)
"""

# a handler that does nothing: close() itself must come back with EINTR
EINTR_SENDER = r"""
import os, signal, sys
signal.signal(signal.SIGUSR1, lambda s, f: None)
fd = os.open(sys.argv[1], os.O_WRONLY)
os.write(fd, b"interrupted message")
try:
    os.close(fd)
    print("close ok", flush=True)
except OSError as e:
    print("close errno", e.errno, flush=True)
try:
    os.fstat(fd)
    print("fd still open", flush=True)
except OSError as e:
    print("fstat errno", e.errno, flush=True)
"""


@pytest.mark.parametrize("capacity", [1, 0], ids=["full", "rendezvous"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_blocked_sender_killed_by_signal_ends_at_once_and_is_not_queued(mount, mailbox, sig,
                                                                        capacity):
    set_capacity(mailbox, capacity)
    if capacity:
        send(mailbox, b"fill")
    before = snapshot(mount, mailbox)
    child = subprocess.Popen([PY, "-c", BLOCKED_SENDER, str(mailbox / ".send")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "senders_waiting", 1)
        assert child.poll() is None
        start = time.monotonic()
        child.send_signal(sig)
        try:
            out, err = child.communicate(timeout=STEP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"blocked sender did not end within {STEP_S}s of {sig.name}")
        elapsed = time.monotonic() - start
        print(f"\n{sig.name}: blocked sender ended after {elapsed * 1000:.1f} ms")
        assert elapsed < 1.0, f"blocked sender took {elapsed:.3f}s to end after {sig.name}"
        assert b"closed" not in out
        if sig == signal.SIGINT:
            assert b"KeyboardInterrupt" in err, err
        else:
            assert child.returncode == -signal.SIGKILL
        wait_field(mailbox, "senders_waiting", 0, timeout=1.0)
        assert_unchanged(mount, mailbox, before)
        if capacity:
            assert os.listdir(mailbox) == ["0000000001"]
            assert receive_nowait(mailbox) == b"fill"
        # nothing of the interrupted message is left anywhere, and the mailbox still works
        expect_errno(errno.EAGAIN, receive_nowait, mailbox)
        set_capacity(mailbox, 1)
        send(mailbox, b"after")
        assert receive_nowait(mailbox) == b"after"
    finally:
        reap(child)


@pytest.mark.parametrize("capacity", [1, 0], ids=["full", "rendezvous"])
def test_blocked_close_fails_with_eintr_and_the_fd_is_closed(mount, mailbox, capacity):
    set_capacity(mailbox, capacity)
    if capacity:
        send(mailbox, b"fill")
    before = snapshot(mount, mailbox)
    child = subprocess.Popen([PY, "-c", EINTR_SENDER, str(mailbox / ".send")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "senders_waiting", 1)
        start = time.monotonic()
        child.send_signal(signal.SIGUSR1)
        out, err = child.communicate(timeout=STEP_S)
        assert time.monotonic() - start < 1.0
        assert child.returncode == 0, err
        assert out.decode().splitlines() == [f"close errno {errno.EINTR}",
                                             f"fstat errno {errno.EBADF}"]
        wait_field(mailbox, "senders_waiting", 0, timeout=1.0)
        assert_unchanged(mount, mailbox, before)
        if capacity:
            assert receive_nowait(mailbox) == b"fill"
        expect_errno(errno.EAGAIN, receive_nowait, mailbox)
    finally:
        reap(child)


def test_interrupted_sender_does_not_disturb_the_order_of_the_others(mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    first = start_sender(mailbox / ".send", b"first")
    wait_field(mailbox, "senders_waiting", 1)
    child = subprocess.Popen([PY, "-c", BLOCKED_SENDER, str(mailbox / ".send")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "senders_waiting", 2)
        last = start_sender(mailbox / ".send", b"last")
        wait_field(mailbox, "senders_waiting", 3)
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=STEP_S)
        wait_field(mailbox, "senders_waiting", 2, timeout=1.0)
        got = [receive_nowait(mailbox)]
        assert first.finish() == "ok"
        got.append(receive_nowait(mailbox))
        assert last.finish() == "ok"
        got.append(receive_nowait(mailbox))
        assert got == [b"fill", b"first", b"last"]
        expect_errno(errno.EAGAIN, receive_nowait, mailbox)
    finally:
        reap(child)


def test_blocked_dropin_close_is_interruptible_and_queues_nothing(mount, mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    before = snapshot(mount, mailbox)
    script = ("import os, sys; fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644); "
              "print('opened', flush=True); os.write(fd, b'never'); os.close(fd); "
              "print('closed', flush=True)")
    child = subprocess.Popen([PY, "-c", script, str(mailbox / "never.txt")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "senders_waiting", 1)
        start = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=STEP_S)
        assert time.monotonic() - start < 1.0
        assert b"opened" in out and b"closed" not in out
        wait_field(mailbox, "senders_waiting", 0, timeout=1.0)
        wait_until(lambda: not os.path.lexists(mailbox / "never.txt"), timeout=1.0,
                   what="the refused drop-in's name to be free again")
        assert_unchanged(mount, mailbox, before)
    finally:
        reap(child)


# ---------------------------------------------------------------- rendezvous (capacity 0)

def test_rendezvous_close_returns_only_once_a_receiver_took_the_message(mount, mailbox):
    set_capacity(mailbox, 0)
    s = start_sender(mailbox / ".send", b"meet me")
    wait_field(mailbox, "senders_waiting", 1)
    # waiting in close: neither listed nor counted as queued
    assert s.stage == "close"
    assert os.listdir(mailbox) == []
    assert field(mailbox, "messages") == "0"
    assert field(mount.path, "messages") == "0"
    receiver = start_receiver(mailbox)
    try:
        assert receiver_result(receiver) == b"meet me"
        assert s.finish() == "ok"
        assert field(mailbox, "senders_waiting") == "0"
        assert field(mailbox, "messages") == "0"
        assert os.listdir(mailbox) == []
    finally:
        reap(receiver)


def test_rendezvous_with_a_receiver_already_waiting_completes_at_once(mailbox):
    set_capacity(mailbox, 0)
    receiver = start_receiver(mailbox)
    try:
        wait_field(mailbox, "receivers_waiting", 1)
        start = time.monotonic()
        send(mailbox, b"straight into its hands")
        assert time.monotonic() - start < 1.0
        assert receiver_result(receiver) == b"straight into its hands"
        assert field(mailbox, "messages") == "0"
    finally:
        reap(receiver)


def test_rendezvous_nonblocking_without_receiver_is_eagain_and_changes_nothing(mount, mailbox):
    set_capacity(mailbox, 0)
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send", os.O_WRONLY | os.O_NONBLOCK)
    try:
        start = time.monotonic()
        expect_errno(errno.EAGAIN, os.write, fd, b"nobody there")
        assert time.monotonic() - start < 1.0
    finally:
        os.close(fd)
    assert_unchanged(mount, mailbox, before)
    assert os.listdir(mailbox) == []


def test_rendezvous_nonblocking_with_a_receiver_waiting_succeeds(mailbox):
    set_capacity(mailbox, 0)
    receiver = start_receiver(mailbox)
    try:
        wait_field(mailbox, "receivers_waiting", 1)
        fd = os.open(mailbox / ".send", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"someone is there")
        finally:
            os.close(fd)
        assert receiver_result(receiver) == b"someone is there"
    finally:
        reap(receiver)


def test_rendezvous_fsync_returns_once_taken(mailbox):
    set_capacity(mailbox, 0)
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    done = []
    t = threading.Thread(target=lambda: done.append(os.fsync(fd)), daemon=True)
    receiver = None
    try:
        os.write(fd, b"synced")
        t.start()
        wait_field(mailbox, "senders_waiting", 1)
        assert not done and os.listdir(mailbox) == []
        receiver = start_receiver(mailbox)
        assert receiver_result(receiver) == b"synced"
        t.join(STEP_S)
        assert not t.is_alive()
        assert done == [None]
    finally:
        if receiver:
            reap(receiver)
        if not t.is_alive():
            os.close(fd)


def test_rendezvous_senders_meet_receivers_in_arrival_order(mailbox):
    set_capacity(mailbox, 0)
    senders = []
    for i in range(3):
        senders.append(start_sender(mailbox / ".send", b"r%d" % i))
        wait_field(mailbox, "senders_waiting", i + 1)
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    try:
        for i in range(3):
            r, _, _ = select.select([fd], [], [], STEP_S)
            assert r == [fd], "no message offered by the waiting senders"
            assert read_message(fd) == b"r%d" % i
            assert senders[i].finish() == "ok"
    finally:
        os.close(fd)
    assert field(mailbox, "senders_waiting") == "0"


def test_rendezvous_dropin_create_does_not_block_and_its_close_is_the_rendezvous(mailbox):
    set_capacity(mailbox, 0)
    start = time.monotonic()
    fd = os.open(mailbox / "hello.txt", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    assert time.monotonic() - start < 1.0
    done = []

    def finish():
        os.write(fd, b"drop-in rendezvous")
        os.close(fd)
        done.append(True)

    t = threading.Thread(target=finish, daemon=True)
    t.start()
    receiver = None
    try:
        wait_field(mailbox, "senders_waiting", 1)
        assert not done
        assert os.listdir(mailbox) == []
        assert field(mailbox, "messages") == "0"
        receiver = start_receiver(mailbox)
        assert receiver_result(receiver) == b"drop-in rendezvous"
        t.join(STEP_S)
        assert not t.is_alive() and done == [True]
    finally:
        if receiver:
            reap(receiver)


def test_rendezvous_rmdir_wakes_a_waiting_sender_with_eidrm(mailbox):
    set_capacity(mailbox, 0)
    s = start_sender(mailbox / ".send", b"nobody will take this")
    wait_field(mailbox, "senders_waiting", 1)
    os.rmdir(mailbox)
    result = s.finish()
    assert isinstance(result, OSError) and result.errno == errno.EIDRM, result
    assert not os.path.exists(mailbox)


# ---------------------------------------------------------------- 1,000 parked senders

@pytest.mark.timeout(600)
def test_thousand_blocked_senders_leave_the_mount_responsive(mount, mailbox):
    n = 1000
    set_capacity(mailbox, 1)
    send(mailbox, b"already queued")
    payloads = [b"sender %04d" % i for i in range(n)]
    old_stack = threading.stack_size(256 * 1024)
    senders = []
    try:
        start = time.monotonic()
        for p in payloads:
            senders.append(start_sender(mailbox / ".send", p))

        def all_parked_or_failed():
            return (field(mailbox, "senders_waiting") == str(n)
                    or any(s.result not in (None, "ok") for s in senders))

        wait_until(all_parked_or_failed, timeout=120, interval=0.05,
                   what=f"senders_waiting: {n}")
        failed = [s.result for s in senders if s.result not in (None, "ok")]
        assert not failed, f"senders failed: {failed[:5]}"
        print(f"\n{n} senders parked after {time.monotonic() - start:.2f} s")

        _, t_ls = timed(lambda: os.listdir(mount.path))
        _, t_stat = timed(lambda: os.stat(mount / "mailboxes"))
        _, t_stat_box = timed(lambda: os.stat(mailbox))
        root, t_status = timed(lambda: read_status(mount.path))
        other = mount / "mailboxes" / "elsewhere"
        os.mkdir(other)

        def roundtrip():
            send(other, b"ping")
            return receive_nowait(other)

        echoed, t_rt = timed(roundtrip)
        threads = mount.daemon_threads()
        print(f"while {n} senders wait: listdir {t_ls * 1000:.1f} ms, stat {t_stat * 1000:.1f} ms, "
              f".status {t_status * 1000:.1f} ms, send+receive elsewhere {t_rt * 1000:.1f} ms, "
              f"daemon threads {threads}")
        assert t_ls < 1.0 and t_stat < 1.0 and t_stat_box < 1.0 and t_status < 1.0
        assert t_rt < 1.0 and echoed == b"ping"
        assert threads <= 64, f"daemon uses {threads} threads for {n} parked senders"
        assert root["senders_waiting"] == str(n)
        assert field(mailbox, "senders_waiting") == str(n)
        assert queued(mailbox) == 1
        assert os.listdir(mailbox) == ["0000000001"]

        got = []

        def receiver():
            fd = os.open(mailbox / ".receive", os.O_RDONLY)
            try:
                for _ in range(n + 1):
                    got.append(read_message(fd))
            except OSError as e:
                got.append(e)
            finally:
                os.close(fd)

        start = time.monotonic()
        r = threading.Thread(target=receiver, daemon=True)
        r.start()
        r.join(120)
        assert not r.is_alive(), f"receiver stuck after {len(got)} messages"
        deadline = time.monotonic() + 30
        for s in senders:
            s.join(max(0.0, deadline - time.monotonic()))
        elapsed = time.monotonic() - start
        stuck = sum(s.is_alive() for s in senders)
        assert stuck == 0, f"{stuck} senders still blocked after {n + 1} receives"
        print(f"{n + 1} messages received, every sender done, in {elapsed:.2f} s")
        failed = [s.result for s in senders if s.result != "ok"]
        assert not failed, f"senders failed: {failed[:5]}"
        assert collections.Counter(got) == collections.Counter([b"already queued"] + payloads)
        assert got[0] == b"already queued"
        assert field(mailbox, "senders_waiting") == "0"
        assert field(mount.path, "senders_waiting") == "0"
        assert queued(mailbox) == 0
    finally:
        threading.stack_size(old_stack)
        # stragglers (only on failure) end when the fixture unmounts


def timed(fn):
    start = time.monotonic()
    value = fn()
    return value, time.monotonic() - start


# ---------------------------------------------------------------- global byte bound

def test_send_past_max_bytes_fails_enospc_at_write_and_changes_nothing(make_mount):
    m = make_mount(options=["max_bytes=4096"])
    box = m / "mailboxes" / "bounded"
    os.mkdir(box)
    send(box, b"a" * 3000)
    before = snapshot(m, box)
    fd = os.open(box / ".send", os.O_WRONLY)
    try:
        expect_errno(errno.ENOSPC, os.write, fd, b"b" * 2000)
    finally:
        os.close(fd)  # nothing was accepted: the close sends nothing
    assert_unchanged(m, box, before)
    assert os.listdir(box) == ["0000000001"]
    assert field(m.path, "max_bytes") == "4096"


def test_max_bytes_drops_the_whole_message_being_composed(make_mount):
    m = make_mount(options=["max_bytes=4096"])
    box = m / "mailboxes" / "bounded"
    os.mkdir(box)
    send(box, b"a" * 3000)
    fd = os.open(box / ".send", os.O_WRONLY)
    try:
        assert os.write(fd, b"b" * 500) == 500
        expect_errno(errno.ENOSPC, os.write, fd, b"c" * 1000)
    finally:
        os.close(fd)
    # no partial message: only the first one is queued
    assert os.listdir(box) == ["0000000001"]
    assert field(box, "messages") == "1"
    assert field(box, "bytes") == "3000"
    assert receive_nowait(box) == b"a" * 3000
    expect_errno(errno.EAGAIN, receive_nowait, box)


def test_max_bytes_counts_messages_being_written_and_is_global(make_mount):
    m = make_mount(options=["max_bytes=4096"])
    a, b = m / "mailboxes" / "a", m / "mailboxes" / "b"
    os.mkdir(a)
    os.mkdir(b)
    fd = os.open(a / ".send", os.O_WRONLY)
    try:
        os.write(fd, b"x" * 3000)  # not yet sent, but held
        before = snapshot(m, b)
        fd2 = os.open(b / ".send", os.O_WRONLY)
        try:
            expect_errno(errno.ENOSPC, os.write, fd2, b"y" * 2000)
        finally:
            os.close(fd2)
        assert_unchanged(m, b, before)
    finally:
        os.close(fd)
    assert receive_nowait(a) == b"x" * 3000
    send(b, b"y" * 2000)  # the bytes were given back
    assert receive_nowait(b) == b"y" * 2000


def test_daemon_keeps_serving_after_many_refused_sends(make_mount):
    m = make_mount(options=["max_bytes=65536"])
    box = m / "mailboxes" / "bounded"
    os.mkdir(box)
    send(box, b"k" * 60000)
    for _ in range(200):
        fd = os.open(box / ".send", os.O_WRONLY)
        try:
            expect_errno(errno.ENOSPC, os.write, fd, b"z" * 10000)
        finally:
            os.close(fd)
    assert m.proc.poll() is None
    assert field(m.path, "bytes") == "60000"
    assert receive_nowait(box) == b"k" * 60000
    for i in range(20):
        send(box, b"%d" % i * 3000)
        assert receive_nowait(box) == b"%d" % i * 3000
    assert field(m.path, "bytes") == "0"


# ---------------------------------------------------------------- forwarding into a full mailbox

def test_mv_into_a_full_mailbox_is_refused_with_eagain_and_changes_nothing(mount):
    """Forwarding is a non-blocking send into the target: refused while it is full."""
    src, dst = mount / "mailboxes" / "fwd-src", mount / "mailboxes" / "fwd-dst"
    src.mkdir()
    dst.mkdir()
    set_capacity(dst, 1)
    send(src, b"to forward")
    send(dst, b"fills it")
    before_src, before_dst = snapshot(mount, src), snapshot(mount, dst)
    expect_errno(errno.EAGAIN, os.rename, src / "0000000001", dst / "forwarded")
    assert_unchanged(mount, src, before_src)
    assert_unchanged(mount, dst, before_dst)
    assert receive_nowait(dst) == b"fills it"
    os.rename(src / "0000000001", dst / "forwarded")  # room again
    assert receive_nowait(dst) == b"to forward"
