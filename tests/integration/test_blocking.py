"""Blocking receive on mailboxes: wake-up by a send, interruption by signals, O_NONBLOCK,
poll/select/epoll readiness, several waiters, redelivery of a half-read message, rmdir of
a mailbox with a waiter.

Contract: spec/interface.md, "Mailboxes" (Receive, Blocking) and "Everywhere". A reader is
known to be blocked when the mailbox's .status shows it in receivers_waiting; no sleeps are
used as synchronisation, and every blocking step has a deadline."""
import ctypes
import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import wait_until
from ipcfs_helpers import queued, read_message, reap, receive_nowait, send, waiting

PY = sys.executable
STEP_S = 5.0  # deadline for one step that should take milliseconds


# ---------------------------------------------------------------- helpers

def wait_waiting(box, n, timeout=STEP_S):
    wait_until(lambda: waiting(box) == n, timeout=timeout,
               what=f"receivers_waiting: {n} in {box}/.status")


def readline_with_deadline(stream, timeout=STEP_S):
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"child printed nothing within {timeout}s"
    return stream.readline()


# ---------------------------------------------------------------- wake-up

def test_cat_blocks_on_empty_mailbox_and_a_send_wakes_it(mailbox):
    reader = subprocess.Popen(["cat", str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        assert reader.poll() is None
        send(mailbox, b"wake up\n")
        out, err = reader.communicate(timeout=STEP_S)
        assert reader.returncode == 0, err
        assert out == b"wake up\n"
        assert waiting(mailbox) == 0
        assert queued(mailbox) == 0
        assert os.listdir(mailbox) == []
    finally:
        reap(reader)


def test_message_sent_by_another_process_wakes_a_blocked_thread(mailbox):
    got = []
    fd = os.open(mailbox / ".receive", os.O_RDONLY)

    def reader():
        try:
            got.append(read_message(fd))
        except OSError as e:
            got.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        wait_waiting(mailbox, 1)
        r = subprocess.run(["sh", "-c", 'printf "from sh" > "$1"', "sh", str(mailbox / ".send")],
                           timeout=STEP_S)
        assert r.returncode == 0
        t.join(STEP_S)
        assert not t.is_alive(), "the blocked reader was not woken"
        assert got == [b"from sh"]
    finally:
        if not t.is_alive():
            os.close(fd)


def test_blocked_read_returns_at_most_its_buffer_and_the_rest_follows(mailbox):
    """A parked read asked for 4 bytes: it gets 4, the same fd continues the message."""
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    got = []
    t = threading.Thread(target=lambda: got.append(os.read(fd, 4)), daemon=True)
    t.start()
    try:
        wait_waiting(mailbox, 1)
        send(mailbox, b"0123456789")
        t.join(STEP_S)
        assert not t.is_alive()
        assert got == [b"0123"]
        assert os.read(fd, 100) == b"456789"
        assert os.read(fd, 100) == b""
        assert queued(mailbox) == 0
    finally:
        if not t.is_alive():
            os.close(fd)


def test_large_message_wakes_cat_and_arrives_whole(mailbox):
    payload = bytes(range(256)) * 1200  # 300 KiB: several READ requests
    reader = subprocess.Popen(["cat", str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        send(mailbox, payload)
        out, err = reader.communicate(timeout=STEP_S)
        assert reader.returncode == 0, err
        assert out == payload
    finally:
        reap(reader)


def test_send_to_another_mailbox_does_not_wake_the_reader(mount, mailbox):
    other = mount / "mailboxes" / (mailbox.name[:200] + "_other")
    os.mkdir(other)
    reader = subprocess.Popen(["cat", str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        send(other, b"not for you")
        assert queued(other) == 1
        assert waiting(mailbox) == 1
        assert reader.poll() is None
        send(mailbox, b"for you")
        out, _ = reader.communicate(timeout=STEP_S)
        assert out == b"for you"
        assert receive_nowait(other) == b"not for you"
    finally:
        reap(reader)


def test_message_created_as_a_named_file_wakes_the_reader(mailbox):
    reader = subprocess.Popen(["cat", str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        r = subprocess.run(["sh", "-c", 'echo hi > "$1"', "sh", str(mailbox / "note")],
                           timeout=STEP_S)
        assert r.returncode == 0
        out, err = reader.communicate(timeout=STEP_S)
        assert reader.returncode == 0, err
        assert out == b"hi\n"
        assert os.listdir(mailbox) == []
    finally:
        reap(reader)


def test_fsync_delivers_to_a_blocked_reader_before_close(mailbox):
    reader = subprocess.Popen(["cat", str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        wait_waiting(mailbox, 1)
        os.write(fd, b"part one")
        os.fsync(fd)
        out, err = reader.communicate(timeout=STEP_S)  # while the sender's fd is still open
        assert reader.returncode == 0, err
        assert out == b"part one"
        os.write(fd, b"part two")
        os.close(fd)
        fd = None
        assert receive_nowait(mailbox) == b"part two"
    finally:
        if fd is not None:
            os.close(fd)
        reap(reader)


def test_blocked_reader_follows_its_mailbox_through_a_rename(mount, mailbox):
    reader = subprocess.Popen(["cat", str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        renamed = mount / "mailboxes" / (mailbox.name[:200] + "_renamed")
        os.rename(mailbox, renamed)
        assert waiting(renamed) == 1
        assert reader.poll() is None
        send(renamed, b"under the new name")
        out, err = reader.communicate(timeout=STEP_S)
        assert reader.returncode == 0, err
        assert out == b"under the new name"
    finally:
        reap(reader)


# ---------------------------------------------------------------- interruption

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_signal_ends_blocked_cat_at_once_and_loses_nothing(mailbox, sig):
    reader = subprocess.Popen(["cat", str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        start = time.monotonic()
        reader.send_signal(sig)
        try:
            reader.wait(timeout=STEP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"blocked cat did not end within {STEP_S}s of {sig.name}")
        elapsed = time.monotonic() - start
        print(f"\n{sig.name}: blocked cat ended after {elapsed * 1000:.1f} ms")
        assert elapsed < 1.0, f"cat took {elapsed:.3f}s to end after {sig.name}"
        assert reader.returncode == -sig
        assert reader.stdout.read() == b""
        # the dead reader is no longer a waiter ...
        wait_waiting(mailbox, 0, timeout=1.0)
        # ... so a message sent now stays queued instead of vanishing into it
        send(mailbox, b"still here")
        assert queued(mailbox) == 1
        assert len(os.listdir(mailbox)) == 1
        assert receive_nowait(mailbox) == b"still here"
    finally:
        reap(reader)


RAISING_HANDLER_READER = r"""
import os, signal, sys
class Interrupted(Exception):
    pass
def handler(signum, frame):
    raise Interrupted()
signal.signal(signal.SIGUSR1, handler)
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    data = os.read(fd, 100)
except Interrupted:
    sys.exit(42)
print("read returned", data, flush=True)
sys.exit(3)
"""

# C-level: the libc read() itself must fail with EINTR (no PEP 475 retry in between).
CTYPES_READER = r"""
import ctypes, os, signal, sys
signal.signal(signal.SIGUSR1, lambda signum, frame: None)
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
buf = ctypes.create_string_buffer(100)
n = libc.read(fd, buf, 100)
err = ctypes.get_errno()
print(n, err, flush=True)
"""


def _interrupt_blocked_python_reader(mailbox, script):
    reader = subprocess.Popen([PY, "-c", script, str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        start = time.monotonic()
        reader.send_signal(signal.SIGUSR1)
        try:
            out, err = reader.communicate(timeout=STEP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"blocked reader did not return within {STEP_S}s of SIGUSR1")
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, f"reader took {elapsed:.3f}s to return after SIGUSR1"
        wait_waiting(mailbox, 0, timeout=1.0)
        send(mailbox, b"after the interrupt")
        assert queued(mailbox) == 1
        assert receive_nowait(mailbox) == b"after the interrupt"
        return reader.returncode, out.decode(), err.decode()
    finally:
        reap(reader)


def test_signal_handler_that_raises_interrupts_python_os_read(mailbox):
    rc, out, err = _interrupt_blocked_python_reader(mailbox, RAISING_HANDLER_READER)
    assert rc == 42, f"rc {rc}, stdout {out!r}, stderr {err!r}"


def test_blocked_libc_read_fails_with_eintr_when_a_handler_runs(mailbox):
    rc, out, err = _interrupt_blocked_python_reader(mailbox, CTYPES_READER)
    assert rc == 0, err
    n, code = out.split()
    assert (int(n), int(code)) == (-1, errno.EINTR), out


def test_interrupted_reader_can_read_again_on_the_same_fd(mailbox):
    """After EINTR the open file is still a working receiver."""
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    result = []

    def reader():
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(100)
        result.append(threading.get_native_id())
        n = libc.read(fd, buf, 100)
        result.append((n, ctypes.get_errno()))
        result.append(read_message(fd))

    t = threading.Thread(target=reader, daemon=True)
    try:
        t.start()
        wait_waiting(mailbox, 1)
        signal.pthread_kill(t.ident, signal.SIGUSR1)
        wait_until(lambda: len(result) >= 2, timeout=1.0, what="the interrupted read to return")
        assert result[1] == (-1, errno.EINTR)
        wait_waiting(mailbox, 1)  # blocked again, through os.read this time
        send(mailbox, b"second try")
        t.join(STEP_S)
        assert not t.is_alive()
        assert result[2] == b"second try"
    finally:
        # while the thread might still be inside the read, a SIGUSR1 may be pending for
        # it: keep the harmless handler then, or the default action would kill pytest
        if not t.is_alive():
            signal.signal(signal.SIGUSR1, old)
            os.close(fd)


# ---------------------------------------------------------------- O_NONBLOCK

def test_nonblocking_receive_on_empty_mailbox_is_eagain_at_once(mailbox):
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        start = time.monotonic()
        with pytest.raises(BlockingIOError) as exc:
            os.read(fd, 100)
        assert exc.value.errno == errno.EAGAIN
        assert time.monotonic() - start < 0.5
        assert waiting(mailbox) == 0
        # and with a message there, the same fd takes it
        send(mailbox, b"now there is one")
        assert read_message(fd) == b"now there is one"
        with pytest.raises(BlockingIOError):
            os.read(fd, 100)
    finally:
        os.close(fd)


def test_nonblocking_set_later_with_fcntl(mailbox):
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        start = time.monotonic()
        with pytest.raises(BlockingIOError):
            os.read(fd, 100)
        assert time.monotonic() - start < 0.5
        assert waiting(mailbox) == 0
    finally:
        os.close(fd)


def test_nonblocking_cleared_later_with_fcntl_blocks_again(mailbox):
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    got = []
    with pytest.raises(BlockingIOError):
        os.read(fd, 100)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    t = threading.Thread(target=lambda: got.append(read_message(fd)), daemon=True)
    t.start()
    try:
        wait_waiting(mailbox, 1)
        send(mailbox, b"blocking again")
        t.join(STEP_S)
        assert not t.is_alive()
        assert got == [b"blocking again"]
    finally:
        if not t.is_alive():
            os.close(fd)


# ---------------------------------------------------------------- poll / select / epoll

WAIT_SYSCALLS = {7, 23, 232, 270, 271, 281, 441}  # x86_64: poll select epoll_wait pselect6 ppoll epoll_pwait epoll_pwait2


def sleeping_in_wait(tid):
    """True once thread tid sleeps in poll/select/epoll_wait itself (not in the FUSE POLL
    request that the kernel makes on the way in)."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            fields = f.read().split()
        with open(f"/proc/self/task/{tid}/wchan") as f:
            wchan = f.read()
        with open(f"/proc/self/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return (state == "S" and fields and fields[0].isdigit() and int(fields[0]) in WAIT_SYSCALLS
            and "fuse" not in wchan and "request" not in wchan)


class Waiter:
    """Readiness of one fd through one mechanism; wait(timeout) -> readable?"""

    def __init__(self, fd, kind):
        self.fd, self.kind = fd, kind
        if kind == "poll":
            self.p = select.poll()
            self.p.register(fd, select.POLLIN)
        elif kind.startswith("epoll"):
            self.p = select.epoll()
            mask = select.EPOLLIN | (select.EPOLLET if kind == "epoll_et" else 0)
            self.p.register(fd, mask)

    def wait(self, timeout):
        if self.kind == "poll":
            events = self.p.poll(timeout * 1000)
            return any(ev & select.POLLIN for _, ev in events)
        if self.kind == "select":
            r, _, _ = select.select([self.fd], [], [], timeout)
            return self.fd in r
        events = self.p.poll(timeout)
        return any(ev & select.EPOLLIN for _, ev in events)

    def close(self):
        if self.kind != "select" and self.kind != "poll":
            self.p.close()


def _wait_in_thread(waiter, timeout):
    """Starts waiter.wait(timeout) in a thread; returns (thread, result list, tid list)."""
    result, tids = [], []

    def run():
        tids.append(threading.get_native_id())
        readable = waiter.wait(timeout)
        result.append((readable, time.monotonic()))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: tids, what="waiter thread to start")
    return t, result, tids[0]


@pytest.mark.parametrize("kind", ["poll", "select", "epoll_lt", "epoll_et"])
def test_readiness_follows_the_queue(mailbox, kind):
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    waiter = Waiter(fd, kind)
    try:
        # empty: not readable
        assert not waiter.wait(0.2), "readable while the mailbox is empty"

        for round_no, payload in enumerate([b"first message", b"second message"]):
            # a waiter asleep in the syscall is woken by a send from another process
            t, result, tid = _wait_in_thread(waiter, STEP_S * 2)
            wait_until(lambda: sleeping_in_wait(tid) or result, what=f"{kind} to sleep")
            assert not result, f"{kind} returned before anything was sent: {result}"
            sent_at = time.monotonic()
            r = subprocess.run([PY, "-c", "import sys; open(sys.argv[1], 'wb').write(sys.argv[2].encode())",
                                str(mailbox / ".send"), payload.decode()], timeout=STEP_S)
            assert r.returncode == 0
            t.join(STEP_S * 2 + 1)
            assert not t.is_alive()
            readable, returned_at = result[0]
            latency = returned_at - sent_at
            print(f"\n{kind} round {round_no}: woken {latency * 1000:.1f} ms after the sender started")
            assert readable, f"{kind}: not readable after a send (round {round_no})"
            # woken by the send (notify_poll), not by the end of its 10 s timeout
            assert latency < 2.0, f"{kind}: woken only after {latency:.1f}s (round {round_no})"

            if kind != "epoll_et":
                # level-triggered: still readable while the message waits
                assert waiter.wait(0)
            assert read_message(fd) == payload
            # fully read, end-of-message consumed, mailbox empty: not readable any more
            assert not waiter.wait(0.2), f"{kind}: readable after the mailbox was drained"

        # a message already queued is reported without waiting (level) / as a new edge (ET)
        send(mailbox, b"third")
        start = time.monotonic()
        assert waiter.wait(STEP_S)
        assert time.monotonic() - start < 2.0
        assert read_message(fd) == b"third"
        assert not waiter.wait(0.2)
    finally:
        waiter.close()
        os.close(fd)


def test_poll_on_a_fresh_fd_with_a_message_already_queued(mailbox):
    send(mailbox, b"waiting for you")
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        events = p.poll(STEP_S * 1000)
        assert events and events[0][1] & select.POLLIN
        assert read_message(fd) == b"waiting for you"
        assert p.poll(200) == []
    finally:
        os.close(fd)


def test_each_of_two_pollers_sees_readable_but_only_one_takes_it(mailbox):
    fds = [os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK) for _ in range(2)]
    try:
        send(mailbox, b"one message")
        for fd in fds:
            r, _, _ = select.select([fd], [], [], STEP_S)
            assert r == [fd]
        assert read_message(fds[0]) == b"one message"
        with pytest.raises(BlockingIOError):
            os.read(fds[1], 100)
        for fd in fds:
            r, _, _ = select.select([fd], [], [], 0.2)
            assert r == []
    finally:
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------- several receivers

def test_several_blocked_receivers_each_get_one_message_longest_waiting_first(mailbox):
    n = 5
    results = [None] * n
    threads = []
    fds = []

    def reader(i, fd):
        try:
            results[i] = read_message(fd)
        except OSError as e:
            results[i] = e

    try:
        for i in range(n):
            fd = os.open(mailbox / ".receive", os.O_RDONLY)
            fds.append(fd)
            t = threading.Thread(target=reader, args=(i, fd), daemon=True)
            t.start()
            threads.append(t)
            wait_waiting(mailbox, i + 1)  # so that reader i is the (i+1)-th longest waiting
        sent = [f"message {i}".encode() for i in range(n)]
        for m in sent:
            send(mailbox, m)
        deadline = time.monotonic() + STEP_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), f"receivers left blocked: {results}"
        assert sorted(results) == sorted(sent), "not exactly one message each"
        assert results == sent, "messages not handed out longest-waiting first, in FIFO order"
        assert waiting(mailbox) == 0
        assert queued(mailbox) == 0
    finally:
        for t, fd in zip(threads, fds):
            if not t.is_alive():
                os.close(fd)


def test_several_receiver_processes_each_get_exactly_one(mailbox):
    n = 4
    readers = [subprocess.Popen(["cat", str(mailbox / ".receive")], stdout=subprocess.PIPE)
               for _ in range(n)]
    try:
        wait_waiting(mailbox, n)
        sent = [f"to whoever {i}\n".encode() for i in range(n)]
        for m in sent:
            send(mailbox, m)
        outs = []
        for r in readers:
            out, _ = r.communicate(timeout=STEP_S)
            assert r.returncode == 0
            outs.append(out)
        assert sorted(outs) == sorted(sent)
        assert queued(mailbox) == 0
    finally:
        for r in readers:
            reap(r)


def test_queued_messages_are_received_in_fifo_order_on_one_fd(mailbox):
    sent = [f"fifo {i}".encode() for i in range(10)]
    for m in sent:
        send(mailbox, m)
    assert sorted(os.listdir(mailbox)) == [f"{i:010d}" for i in range(1, 11)]
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        got = [read_message(fd) for _ in sent]
        with pytest.raises(BlockingIOError):
            os.read(fd, 100)
    finally:
        os.close(fd)
    assert got == sent


# ---------------------------------------------------------------- redelivery

HALF_READER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
first = os.read(fd, 1)
print(first.hex(), flush=True)
sys.stdin.read()  # hold the message until killed
"""


def test_half_read_message_is_redelivered_whole_after_reader_is_killed(mailbox):
    first, second = b"0123456789", b"abcdefghij"
    send(mailbox, first)
    send(mailbox, second)
    reader = subprocess.Popen([PY, "-c", HALF_READER, str(mailbox / ".receive")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = readline_with_deadline(reader.stdout)
        assert bytes.fromhex(line.decode().strip()) == first[:1]
        reader.kill()
        reader.wait(timeout=STEP_S)
        start = time.monotonic()

        def redelivered():
            try:
                return os.getxattr(mailbox / "0000000001", "user.ipc.redeliveries") == b"1"
            except OSError:
                return False

        wait_until(redelivered, timeout=1.0, what="the half-read message back in the queue")
        print(f"\nredelivered {(time.monotonic() - start) * 1000:.1f} ms after the reader was killed")
        assert sorted(os.listdir(mailbox)) == ["0000000001", "0000000002"]
        assert os.stat(mailbox / "0000000001").st_size == 10
        assert os.getxattr(mailbox / "0000000002", "user.ipc.redeliveries") == b"0"
        assert queued(mailbox) == 2
        # back at the head of the queue, whole
        assert receive_nowait(mailbox) == first
        assert receive_nowait(mailbox) == second
        assert queued(mailbox) == 0
    finally:
        reap(reader)


def test_half_read_message_is_redelivered_after_close(mailbox):
    send(mailbox, b"0123456789")
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    assert os.read(fd, 3) == b"012"
    os.close(fd)

    def redelivered():
        try:
            return os.getxattr(mailbox / "0000000001", "user.ipc.redeliveries") == b"1"
        except OSError:
            return False

    wait_until(redelivered, timeout=1.0, what="the half-read message back in the queue")
    assert receive_nowait(mailbox) == b"0123456789"


def test_fully_read_message_is_gone_even_before_end_of_message_read(mailbox):
    """'A message is removed once its last byte has been read': no redelivery then."""
    send(mailbox, b"0123456789")
    send(mailbox, b"next")
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    assert os.read(fd, 10) == b"0123456789"
    os.close(fd)
    wait_until(lambda: queued(mailbox) == 1, timeout=1.0, what="one message left")
    assert os.listdir(mailbox) == ["0000000002"]
    assert receive_nowait(mailbox) == b"next"


# ---------------------------------------------------------------- rmdir with a waiter

RMDIR_READER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    data = os.read(fd, 100)
    print("data", data.hex(), flush=True)
except OSError as e:
    print("errno", e.errno, flush=True)
"""


def test_rmdir_with_a_blocked_receiver_succeeds_and_the_reader_gets_eidrm(mailbox):
    reader = subprocess.Popen([PY, "-c", RMDIR_READER, str(mailbox / ".receive")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiting(mailbox, 1)
        os.rmdir(mailbox)
        assert not os.path.exists(mailbox)
        out, err = reader.communicate(timeout=STEP_S)
        assert out.decode().split() == ["errno", str(errno.EIDRM)], (out, err)
        # the name is free again, and a new mailbox with it starts empty
        os.mkdir(mailbox)
        assert waiting(mailbox) == 0 and queued(mailbox) == 0
    finally:
        reap(reader)
