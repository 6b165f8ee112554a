"""Receipts: a sender that opens .send read-write learns what became of its message —
`delivered SEQ to PID` once a receiver has read it to the end, `discarded SEQ` when it was
removed, `forwarded SEQ to MAILBOX` when it was moved — and rendezvous and receipts name the
right process when several receiving processes compete.

Contract: spec/interface.md, "Mailboxes" (Receipts, Capacity, `any` policy). Receivers are
separate processes so that pids matter; a receiver is known to be blocked when .status shows
it in receivers_waiting, and every blocking step has a deadline."""
import errno
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import wait_until
from ipcfs_helpers import (PY, STEP_S, Call, field, receipt_fd, received, receive_nowait, send,
                           start_receive, wait_field)
from ipcfs_helpers import agents  # noqa: F401 (fixture: importing makes it available here)


# ---------------------------------------------------------------- delivered

def test_receipt_names_the_receiving_process(mailbox, agents):
    receiver = agents()
    start_receive(receiver, mailbox)
    wait_field(mailbox, "receivers_waiting", 1)
    fd = receipt_fd(mailbox)
    try:
        assert os.write(fd, b"who takes this?") == 15
        line = Call(lambda: os.read(fd, 100)).result()
        assert line == f"delivered 1 to {receiver.pid}\n".encode()
        assert received(receiver) == b"who takes this?"
        # further reads: end of receipt, at once
        assert Call(lambda: os.read(fd, 100)).result() == b""
        assert Call(lambda: os.read(fd, 100)).result() == b""
    finally:
        os.close(fd)
    assert field(mailbox, "messages") == "0"
    assert field(mailbox, "sent") == "1"


def test_receipt_waits_until_the_message_is_read_to_the_end(mailbox, agents):
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"0123456789")
        call = Call(lambda: os.read(fd, 100))
        # the read delivered the message and now waits for a receiver
        wait_field(mailbox, "messages", 1)
        assert os.listdir(mailbox) == ["0000000001"]
        wait_field(mailbox, "receipts_waiting", 1)
        assert not call.done
        receiver = agents()
        rfd = receiver.open(mailbox / ".receive")
        r = receiver.call(op="read", fd=rfd, n=4)
        assert bytes.fromhex(r["ok"]) == b"0123"
        assert not call.done, f"receipt returned before the message was read to the end: " \
                              f"{call.value!r}"
        r = receiver.call(op="recv", fd=rfd)
        assert bytes.fromhex(r["ok"]) == b"456789"
        assert call.result() == f"delivered 1 to {receiver.pid}\n".encode()
        assert field(mailbox, "receipts_waiting") == "0"
    finally:
        os.close(fd)


def test_receipt_names_the_reader_that_finished_after_a_half_read_and_a_kill(mailbox, agents):
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"half and half")
        call = Call(lambda: os.read(fd, 100))
        wait_field(mailbox, "receipts_waiting", 1)
        quitter = agents()
        qfd = quitter.open(mailbox / ".receive")
        assert bytes.fromhex(quitter.call(op="read", fd=qfd, n=4)["ok"]) == b"half"
        quitter.kill()
        wait_until(lambda: os.getxattr(mailbox / "0000000001", "user.ipc.redeliveries") == b"1",
                   timeout=STEP_S, what="the half-read message back in the queue")
        assert not call.done, f"receipt returned for an abandoned read: {call.value!r}"
        finisher = agents()
        ffd = finisher.open(mailbox / ".receive")
        assert bytes.fromhex(finisher.call(op="recv", fd=ffd)["ok"]) == b"half and half"
        assert call.result() == f"delivered 1 to {finisher.pid}\n".encode()
    finally:
        os.close(fd)


def test_receipt_carries_the_sequence_number_of_the_message(mailbox, agents):
    send(mailbox, b"one")
    send(mailbox, b"two")
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"three")
        call = Call(lambda: os.read(fd, 100))
        wait_field(mailbox, "messages", 3)
        assert os.getxattr(mailbox / "0000000003", "user.ipc.seq") == b"3"
        assert os.getxattr(mailbox / "0000000003", "user.ipc.sender_pid") == \
            str(os.getpid()).encode()
        receiver = agents()
        rfd = receiver.open(mailbox / ".receive")
        got = [bytes.fromhex(receiver.call(op="recv", fd=rfd)["ok"]) for _ in range(3)]
        assert got == [b"one", b"two", b"three"]
        assert call.result() == f"delivered 3 to {receiver.pid}\n".encode()
    finally:
        os.close(fd)


def test_one_open_file_gets_a_receipt_per_message(mailbox, agents):
    receiver = agents()
    rfd = receiver.open(mailbox / ".receive")
    fd = receipt_fd(mailbox)
    try:
        for seq in (1, 2, 3):
            receiver.request(op="recv", fd=rfd)
            wait_field(mailbox, "receivers_waiting", 1)
            os.write(fd, b"message %d" % seq)
            assert Call(lambda: os.read(fd, 100)).result() == \
                f"delivered {seq} to {receiver.pid}\n".encode()
            assert received(receiver) == b"message %d" % seq
            assert Call(lambda: os.read(fd, 100)).result() == b""
    finally:
        os.close(fd)
    # the close after the last receipt sends nothing
    assert field(mailbox, "sent") == "3"
    assert field(mailbox, "messages") == "0"


def test_read_before_any_write_returns_end_at_once_and_sends_nothing(mailbox):
    fd = receipt_fd(mailbox)
    try:
        assert Call(lambda: os.read(fd, 100)).result() == b""
    finally:
        os.close(fd)
    assert field(mailbox, "sent") == "0"
    assert field(mailbox, "receipts_waiting") == "0"
    assert os.listdir(mailbox) == []


def test_receiver_that_is_a_thread_is_named_by_its_process_id(mailbox, agents):
    receiver = agents()
    rfd = receiver.open(mailbox / ".receive")
    receiver.request(op="recv_in_thread", fd=rfd)
    wait_field(mailbox, "receivers_waiting", 1)
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"to a thread")
        line = Call(lambda: os.read(fd, 100)).result()
    finally:
        os.close(fd)
    r = receiver.reply()
    assert bytes.fromhex(r["ok"]) == b"to a thread"
    assert r["tid"] != receiver.pid
    assert line == f"delivered 1 to {receiver.pid}\n".encode()


def test_receipt_for_a_receiver_in_the_same_process(mailbox):
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"to myself")
        call = Call(lambda: os.read(fd, 100))
        wait_field(mailbox, "receipts_waiting", 1)
        assert receive_nowait(mailbox) == b"to myself"
        assert call.result() == f"delivered 1 to {os.getpid()}\n".encode()
    finally:
        os.close(fd)


def test_shell_receipt_example_from_the_readme(mailbox, agents):
    sh = subprocess.Popen(["bash", "-c", 'exec 3<>"$1"; echo hi >&3; head -1 <&3',
                           "bash", str(mailbox / ".send")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "receipts_waiting", 1)
        cat = subprocess.run(["cat", str(mailbox / ".receive")], capture_output=True,
                             timeout=STEP_S)
        assert cat.stdout == b"hi\n"
        out, err = sh.communicate(timeout=STEP_S)
        assert sh.returncode == 0, err
        # the pid is cat's: a process that has ended by the time we look
        words = out.decode().split()
        assert words[:3] == ["delivered", "1", "to"] and len(words) == 4, out
        assert words[3].isdigit() and int(words[3]) not in (os.getpid(), sh.pid)
    finally:
        if sh.poll() is None:
            sh.kill()
            sh.wait(timeout=STEP_S)


# ---------------------------------------------------------------- discarded / forwarded

def test_receipt_says_discarded_when_the_message_is_removed(mount, mailbox):
    send(mailbox, b"before")
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"doomed")
        call = Call(lambda: os.read(fd, 100))
        wait_field(mailbox, "receipts_waiting", 1)
        os.unlink(mailbox / "0000000002")
        assert call.result() == b"discarded 2\n"
        assert Call(lambda: os.read(fd, 100)).result() == b""
    finally:
        os.close(fd)
    assert os.listdir(mailbox) == ["0000000001"]
    assert field(mailbox, "receipts_waiting") == "0"


def test_receipt_says_forwarded_when_the_message_is_moved(mount, mailbox):
    other = mount / "mailboxes" / "elsewhere"
    os.mkdir(other)
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"passing through")
        call = Call(lambda: os.read(fd, 100))
        wait_field(mailbox, "receipts_waiting", 1)
        os.rename(mailbox / "0000000001", other / "0000000001")
        assert call.result() == b"forwarded 1 to elsewhere\n"
        assert Call(lambda: os.read(fd, 100)).result() == b""
    finally:
        os.close(fd)
    assert os.listdir(mailbox) == []
    assert receive_nowait(other) == b"passing through"


def test_receipt_after_mv_with_the_shell(mount, mailbox):
    other = mount / "mailboxes" / "target_box"
    os.mkdir(other)
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"moved by mv")
        call = Call(lambda: os.read(fd, 100))
        wait_field(mailbox, "receipts_waiting", 1)
        r = subprocess.run(["mv", str(mailbox / "0000000001"), str(other)],
                           capture_output=True, timeout=STEP_S)
        assert r.returncode == 0, r.stderr
        assert call.result() == b"forwarded 1 to target_box\n"
    finally:
        os.close(fd)


# ---------------------------------------------------------------- interruption

RECEIPT_READER = r"""
import os, signal, sys
signal.signal(signal.SIGUSR1, lambda s, f: None)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(fd, b"waiting for a receipt")
buf = ctypes.create_string_buffer(100)
n = libc.read(fd, buf, 100)
print(n, ctypes.get_errno(), flush=True)
"""


def test_receipt_read_is_interrupted_with_eintr_and_the_message_stays_queued(mailbox):
    child = subprocess.Popen([PY, "-c", RECEIPT_READER, str(mailbox / ".send")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "receipts_waiting", 1)
        start = time.monotonic()
        child.send_signal(signal.SIGUSR1)
        out, err = child.communicate(timeout=STEP_S)
        assert time.monotonic() - start < 1.0
        assert child.returncode == 0, err
        assert out.decode().split() == ["-1", str(errno.EINTR)]
        wait_field(mailbox, "receipts_waiting", 0, timeout=1.0)
        # the message was delivered by the read: it stays queued
        assert os.listdir(mailbox) == ["0000000001"]
        assert receive_nowait(mailbox) == b"waiting for a receipt"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=STEP_S)


def test_ctrl_c_ends_a_waiting_receipt_reader_at_once(mailbox):
    script = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.write(fd, b'x'); "
              "print(os.read(fd, 100), flush=True)")
    child = subprocess.Popen([PY, "-c", script, str(mailbox / ".send")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_field(mailbox, "receipts_waiting", 1)
        start = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=STEP_S)
        assert time.monotonic() - start < 1.0
        assert b"KeyboardInterrupt" in err and out == b""
        wait_field(mailbox, "receipts_waiting", 0, timeout=1.0)
        assert receive_nowait(mailbox) == b"x"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=STEP_S)


# ---------------------------------------------------------------- competing receivers

@pytest.mark.parametrize("capacity", ["unlimited", "0"], ids=["queue", "rendezvous"])
def test_receipts_name_the_longest_waiting_of_several_receiving_processes(mailbox, agents,
                                                                          capacity):
    os.setxattr(mailbox, "user.ipc.capacity", capacity.encode())
    receivers = []
    for i in range(4):
        a = agents()
        start_receive(a, mailbox)
        receivers.append(a)
        wait_field(mailbox, "receivers_waiting", i + 1)
    fd = receipt_fd(mailbox)
    try:
        for seq, a in enumerate(receivers, start=1):
            os.write(fd, b"for the longest waiting %d" % seq)
            line = Call(lambda: os.read(fd, 100)).result()
            assert line == f"delivered {seq} to {a.pid}\n".encode(), \
                f"expected receiver {a.pid}, the longest waiting; pids in order " \
                f"{[r.pid for r in receivers]}"
            assert received(a) == b"for the longest waiting %d" % seq
            wait_field(mailbox, "receivers_waiting", 4 - seq)
    finally:
        os.close(fd)


def test_rendezvous_hands_each_message_to_the_longest_waiting_process(mailbox, agents):
    """Plain senders (no receipt) at capacity 0: each close() returns once its message was
    taken, and the receiving processes get them in the order they started waiting."""
    os.setxattr(mailbox, "user.ipc.capacity", b"0")
    receivers = []
    for i in range(3):
        a = agents()
        start_receive(a, mailbox)
        receivers.append(a)
        wait_field(mailbox, "receivers_waiting", i + 1)
    for i, a in enumerate(receivers):
        Call(lambda: send(mailbox, b"rendezvous %d" % i)).result()
        assert received(a) == b"rendezvous %d" % i
    assert field(mailbox, "messages") == "0"


def test_rendezvous_receipt_names_the_receiver_that_came_later(mailbox, agents):
    os.setxattr(mailbox, "user.ipc.capacity", b"0")
    fd = receipt_fd(mailbox)
    try:
        os.write(fd, b"wait for a partner")
        call = Call(lambda: os.read(fd, 100))
        wait_field(mailbox, "senders_waiting", 1)
        assert os.listdir(mailbox) == [] and field(mailbox, "messages") == "0"
        first, second = agents(), agents()
        start_receive(first, mailbox)
        assert received(first) == b"wait for a partner"
        start_receive(second, mailbox)
        wait_field(mailbox, "receivers_waiting", 1)
        assert call.result() == f"delivered 1 to {first.pid}\n".encode()
    finally:
        os.close(fd)


def test_concurrent_receipt_senders_each_learn_their_own_receiver(mailbox, agents):
    n = 4
    receivers = [agents() for _ in range(n)]
    rfds = [a.open(mailbox / ".receive") for a in receivers]
    fds = [receipt_fd(mailbox) for _ in range(n)]
    try:
        calls = []
        for i, fd in enumerate(fds):
            os.write(fd, b"from sender %d" % i)
            calls.append(Call(lambda fd=fd: os.read(fd, 100)))
        wait_field(mailbox, "receipts_waiting", n)
        got = {}
        for a, rfd in zip(receivers, rfds):
            got[a.pid] = bytes.fromhex(a.call(op="recv", fd=rfd)["ok"])
        lines = [c.result().decode() for c in calls]
        for i, line in enumerate(lines):
            words = line.split()
            assert len(words) == 4 and words[0] == "delivered" and words[2] == "to", line
            assert line.endswith("\n")
            pid = int(words[3])
            assert got[pid] == b"from sender %d" % i, (line, got)
        assert sorted(int(line.split()[1]) for line in lines) == list(range(1, n + 1))
        assert sorted(int(line.split()[3]) for line in lines) == sorted(a.pid for a in receivers)
    finally:
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------- O_NONBLOCK and poll

def test_a_nonblocking_receipt_read_says_eagain_until_the_fate_is_known(mailbox):
    fd = os.open(mailbox / ".send", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, b"tracked")
        with pytest.raises(BlockingIOError):
            os.read(fd, 100)  # delivers the message, whose fate is not known yet
        assert field(mailbox, "messages") == "1", "sent all the same"
        assert select.select([fd], [], [], 0)[0] == [], "poll: not readable while unknown"
        assert receive_nowait(mailbox) == b"tracked"
        assert select.select([fd], [], [], STEP_S)[0] == [fd], "poll: readable once known"
        assert os.read(fd, 100) == f"delivered 1 to {os.getpid()}\n".encode()
    finally:
        os.close(fd)
