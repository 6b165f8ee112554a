"""Batch nodes: `.send-lines` / `.receive-lines` and `.send-frames` / `.receive-frames` —
many messages per system call: hidden control nodes, splitting writes into messages (lines,
4-byte little-endian length-prefixed frames), incomplete units kept across writes or
delivered / refused at close, EFBIG and ENOSPC, batch reads (as many whole messages as fit,
EMSGSIZE, blocking only while empty, O_NONBLOCK), capacity (parked batch writes, short
writes with O_NONBLOCK or after a signal, rendezvous at capacity 0), poll/select/epoll,
interleaving with `.send` / `.receive`, receipts, and a throughput sanity check.

Contract: spec/interface.md, "Batches" and "Mailboxes" (Capacity, O_NONBLOCK, poll,
interrupts, receipts, max_msg_size); project choices: an incomplete frame at close() is
dropped and close() fails with EINVAL; a line or frame longer than max_msg_size fails that
write with EFBIG and nothing of it is delivered.

A sender or receiver is known to be blocked when .status shows it in senders_waiting /
receivers_waiting; no sleep is used as synchronisation, every blocking step has a deadline,
and only processes started here are ended (by pid, through their Popen)."""
import errno
import os
import select
import signal
import struct
import subprocess
import threading
import time

import pytest

from conftest import wait_until
from ipcfs_helpers import (PY, STEP_S, assert_unchanged, expect_errno, field, messages, queued,
                           reap, receive_nowait, send, set_capacity, snapshot, start_call,
                           status_text, wait_field, write_all)
from ipcfs_helpers import no_mount_left  # noqa: F401  (autouse: no mount left behind)

BATCH_NODES = (".send-lines", ".receive-lines", ".send-frames", ".receive-frames")


# ---------------------------------------------------------------- helpers

def frame(payload):
    return struct.pack("<I", len(payload)) + payload


def frames(*payloads):
    return b"".join(frame(p) for p in payloads)


def parse_frames(data):
    out, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 4, f"truncated frame header at {pos}: {data!r}"
        (n,) = struct.unpack_from("<I", data, pos)
        assert len(data) - pos - 4 >= n, f"truncated frame at {pos}: {data!r}"
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def encode(kind, payloads):
    """The bytes that `.send-<kind>` turns into these messages (what `.receive-<kind>`
    returns for them)."""
    if kind == "lines":
        return b"".join(p + b"\n" for p in payloads)
    return frames(*payloads)


def decode(kind, data):
    if kind == "lines":
        assert data.endswith(b"\n"), data
        return data[:-1].split(b"\n")
    return parse_frames(data)


def overhead(kind):
    return 1 if kind == "lines" else 4


def drain_batch(box, kind, size=1 << 20):
    """Every queued message, through O_NONBLOCK reads of `.receive-<kind>`."""
    fd = os.open(box / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    got = []
    try:
        while True:
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                return got
            assert data, "a batch read returned 0"
            got.extend(decode(kind, data))
    finally:
        os.close(fd)


class Writer(threading.Thread):
    """open / write(s) / [close] in a thread; `results` are write()'s return values (or the
    OSError), `stage` tells how far it got."""

    def __init__(self, path, chunks, flags=os.O_WRONLY, close=True):
        super().__init__(daemon=True)
        self.path, self.chunks, self.flags, self.close = path, chunks, flags, close
        self.results = []
        self.close_result = None
        self.stage = "start"
        self.fd = None

    def run(self):
        try:
            self.stage = "open"
            self.fd = os.open(self.path, self.flags)
        except OSError as e:
            self.results.append(e)
            self.stage = "done"
            return
        for chunk in self.chunks:
            self.stage = "write"
            try:
                self.results.append(os.write(self.fd, chunk))
            except OSError as e:
                self.results.append(e)
        if self.close:
            self.stage = "close"
            try:
                os.close(self.fd)
                self.close_result = "ok"
            except OSError as e:
                self.close_result = e
        self.stage = "done"

    def finish(self, timeout=STEP_S):
        self.join(timeout)
        assert not self.is_alive(), f"writer still blocked in {self.stage}"
        return self.results


def start_writer(*args, **kwargs):
    w = Writer(*args, **kwargs)
    w.start()
    return w


# A batch reader in another process: one read() of argv[2] bytes, printed as hex.
BATCH_READER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    data = os.read(fd, int(sys.argv[2]))
    print("ok", data.hex(), os.getpid(), flush=True)
except OSError as e:
    print("err", e.errno, os.getpid(), flush=True)
"""


def start_batch_reader(box, kind, size=65536):
    return subprocess.Popen([PY, "-c", BATCH_READER, str(box / f".receive-{kind}"), str(size)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def batch_reader_result(proc):
    out, err = proc.communicate(timeout=STEP_S)
    assert proc.returncode == 0, err
    words = out.decode().split()
    if words[0] == "err":
        raise OSError(int(words[1]), os.strerror(int(words[1])))
    return bytes.fromhex(words[1])


KINDS = ["lines", "frames"]


# ---------------------------------------------------------------- the nodes themselves

def test_batch_nodes_are_hidden_from_readdir_but_stat_works(mailbox):
    send(mailbox, b"queued")
    listing = os.listdir(mailbox)
    assert listing == ["0000000001"]
    for name in BATCH_NODES:
        assert name not in listing
        st = os.stat(mailbox / name)
        assert (st.st_mode & 0o170000) == 0o100000, f"{name} is not a regular file"
    # receive nodes report size 0 even with a message queued
    assert os.stat(mailbox / ".receive-lines").st_size == 0
    assert os.stat(mailbox / ".receive-frames").st_size == 0
    # ls -a does not show them either
    r = subprocess.run(["ls", "-a", str(mailbox)], capture_output=True, timeout=STEP_S)
    assert r.returncode == 0
    assert not any(n.startswith(b".send-") or n.startswith(b".receive-")
                   for n in r.stdout.split())


def test_batch_node_modes_follow_the_mailbox_like_send_and_receive(mailbox):
    def modes():
        m = {n: os.stat(mailbox / n).st_mode for n in (".send", ".receive") + BATCH_NODES}
        return m
    m = modes()
    assert m[".send-lines"] == m[".send"] and m[".send-frames"] == m[".send"]
    assert m[".receive-lines"] == m[".receive"] and m[".receive-frames"] == m[".receive"]
    os.chmod(mailbox, 0o700)
    m2 = modes()
    assert m2[".send-lines"] == m2[".send"] and m2[".send-frames"] == m2[".send"]
    assert m2[".receive-lines"] == m2[".receive"] and m2[".receive-frames"] == m2[".receive"]


@pytest.mark.parametrize("node", [".send-lines", ".send-frames"])
def test_send_node_opened_for_reading_is_eacces(mount, mailbox, node):
    send(mailbox, b"queued")
    before = snapshot(mount, mailbox)
    expect_errno(errno.EACCES, os.open, mailbox / node, os.O_RDONLY)
    expect_errno(errno.EACCES, os.open, mailbox / node, os.O_RDONLY | os.O_NONBLOCK)
    assert_unchanged(mount, mailbox, before)


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR], ids=["O_WRONLY", "O_RDWR"])
@pytest.mark.parametrize("node", [".receive-lines", ".receive-frames"])
def test_receive_node_opened_for_writing_is_eacces(mount, mailbox, node, flags):
    send(mailbox, b"queued")
    before = snapshot(mount, mailbox)
    expect_errno(errno.EACCES, os.open, mailbox / node, flags)
    assert_unchanged(mount, mailbox, before)
    assert receive_nowait(mailbox) == b"queued"


# ---------------------------------------------------------------- .send-lines

def test_each_complete_line_is_one_message_without_its_newline(mailbox):
    write_all(mailbox / ".send-lines", b"alpha\nbeta\n\ngamma delta\n")
    assert messages(mailbox) == ["%010d" % i for i in range(1, 5)]
    assert [os.getxattr(mailbox / n, "user.ipc.seq") for n in messages(mailbox)] == \
        [b"1", b"2", b"3", b"4"]
    assert (mailbox / "0000000002").read_bytes() == b"beta"
    got = [receive_nowait(mailbox) for _ in range(4)]
    assert got == [b"alpha", b"beta", b"", b"gamma delta"]
    expect_errno(errno.EAGAIN, receive_nowait, mailbox)


def test_message_files_of_a_batch_carry_the_sender(mailbox):
    write_all(mailbox / ".send-lines", b"one\ntwo\n")
    for name in messages(mailbox):
        assert os.getxattr(mailbox / name, "user.ipc.sender_pid") == str(os.getpid()).encode()
        st = os.stat(mailbox / name)
        assert st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o444


def test_incomplete_line_is_completed_by_later_writes_then_close_delivers_the_rest(mailbox):
    fd = os.open(mailbox / ".send-lines", os.O_WRONLY)
    closed = False
    try:
        assert os.write(fd, b"ab") == 2
        assert queued(mailbox) == 0
        assert os.write(fd, b"cd\nef") == 5
        assert queued(mailbox) == 1
        assert (mailbox / "0000000001").read_bytes() == b"abcd"
        assert os.write(fd, b"gh") == 2
        assert queued(mailbox) == 1
        os.close(fd)
        closed = True
    finally:
        if not closed:
            os.close(fd)
    assert queued(mailbox) == 2
    assert receive_nowait(mailbox) == b"abcd"
    assert receive_nowait(mailbox) == b"efgh"


def test_fsync_delivers_the_incomplete_line_and_the_file_stays_usable(mailbox):
    fd = os.open(mailbox / ".send-lines", os.O_WRONLY)
    try:
        os.write(fd, b"first\nsec")
        assert queued(mailbox) == 1
        os.fsync(fd)
        assert queued(mailbox) == 2
        assert (mailbox / "0000000002").read_bytes() == b"sec"
        os.fsync(fd)  # nothing pending: sends nothing
        assert queued(mailbox) == 2
        os.write(fd, b"third\n")
    finally:
        os.close(fd)
    assert queued(mailbox) == 3
    assert [receive_nowait(mailbox) for _ in range(3)] == [b"first", b"sec", b"third"]


@pytest.mark.parametrize("kind", KINDS)
def test_open_and_close_without_writing_sends_nothing(mount, mailbox, kind):
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / f".send-{kind}", os.O_WRONLY)
    os.close(fd)
    assert_unchanged(mount, mailbox, before)


def test_shell_seq_into_send_lines_sends_one_message_per_line(mailbox):
    # seq writes in buffer-sized chunks: lines split across writes must be joined
    r = subprocess.run(["sh", "-c", 'seq 1 5000 > "$1"', "sh", str(mailbox / ".send-lines")],
                       capture_output=True, timeout=STEP_S * 4)
    assert r.returncode == 0, r.stderr
    assert queued(mailbox) == 5000
    assert len(os.listdir(mailbox)) == 5000
    got = drain_batch(mailbox, "lines")
    assert got == [str(i).encode() for i in range(1, 5001)]


def test_shell_printf_without_final_newline_delivers_the_last_line_at_close(mailbox):
    r = subprocess.run(["sh", "-c", "printf 'x\\ny\\nz' > \"$1\"", "sh",
                        str(mailbox / ".send-lines")], capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    assert drain_batch(mailbox, "lines") == [b"x", b"y", b"z"]


# ---------------------------------------------------------------- .send-frames

def test_frames_of_one_write_are_messages_and_may_hold_newlines_and_nuls(mailbox):
    payloads = [b"line one\nline two\n", b"\x00\x01\x02\xff", b"", b"x" * 1000]
    write_all(mailbox / ".send-frames", frames(*payloads))
    assert queued(mailbox) == 4
    assert messages(mailbox) == ["%010d" % i for i in range(1, 5)]
    assert (mailbox / "0000000001").read_bytes() == payloads[0]
    assert os.stat(mailbox / "0000000003").st_size == 0
    assert [receive_nowait(mailbox) for _ in range(4)] == payloads


def test_frame_split_across_writes_even_inside_its_header_is_joined(mailbox):
    data = frames(b"hello", b"world!")
    fd = os.open(mailbox / ".send-frames", os.O_WRONLY)
    try:
        for piece in (data[:2], data[2:6], data[6:11], data[11:13]):  # 2 | 2+2 | 1+4 | ..
            assert os.write(fd, piece) == len(piece)
        assert queued(mailbox) == 1
        assert os.write(fd, data[13:]) == len(data) - 13
        assert queued(mailbox) == 2
    finally:
        os.close(fd)
    assert [receive_nowait(mailbox) for _ in range(2)] == [b"hello", b"world!"]


@pytest.mark.parametrize("tail", [b"\x05\x00", b"\x05\x00\x00\x00abc"], ids=["header", "payload"])
def test_incomplete_frame_at_close_is_einval_and_dropped(mount, mailbox, tail):
    send(mailbox, b"queued")
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send-frames", os.O_WRONLY)
    closed = False
    try:
        assert os.write(fd, tail) == len(tail)
        closed = True
        expect_errno(errno.EINVAL, os.close, fd)
        expect_errno(errno.EBADF, os.fstat, fd)  # the descriptor is gone all the same
    finally:
        if not closed:
            os.close(fd)
    assert_unchanged(mount, mailbox, before)
    assert receive_nowait(mailbox) == b"queued"
    expect_errno(errno.EAGAIN, receive_nowait, mailbox)


def test_complete_frames_before_an_incomplete_one_are_delivered_and_the_rest_refused(mailbox):
    fd = os.open(mailbox / ".send-frames", os.O_WRONLY)
    closed = False
    try:
        data = frames(b"a", b"b") + b"\x09\x00\x00\x00par"
        assert os.write(fd, data) == len(data)
        assert queued(mailbox) == 2
        closed = True
        expect_errno(errno.EINVAL, os.close, fd)
    finally:
        if not closed:
            os.close(fd)
    assert drain_batch(mailbox, "frames") == [b"a", b"b"]


# ---------------------------------------------------------------- EFBIG and ENOSPC

def set_max(box, n):
    os.setxattr(box, "user.ipc.max_msg_size", str(n).encode())


def test_line_longer_than_max_msg_size_is_efbig_and_nothing_of_the_write_enters(mount, mailbox):
    set_max(mailbox, 16)
    send(mailbox, b"queued")
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send-lines", os.O_WRONLY)
    try:
        expect_errno(errno.EFBIG, os.write, fd, b"ok\n" + b"x" * 17 + b"\nafter\n")
        assert status_text(mailbox) == before[0]
        # exactly max_msg_size is fine, and the file goes on working
        assert os.write(fd, b"y" * 16 + b"\n") == 17
    finally:
        os.close(fd)
    assert receive_nowait(mailbox) == b"queued"
    assert receive_nowait(mailbox) == b"y" * 16
    expect_errno(errno.EAGAIN, receive_nowait, mailbox)


def test_incomplete_line_growing_past_max_msg_size_is_efbig_and_dropped(mount, mailbox):
    set_max(mailbox, 16)
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send-lines", os.O_WRONLY)
    try:
        assert os.write(fd, b"abc") == 3  # kept
        expect_errno(errno.EFBIG, os.write, fd, b"d" * 14)  # abc + 14 > 16, no newline yet
        assert status_text(mailbox) == before[0]
        assert os.write(fd, b"e\n") == 2  # the kept "abc" is gone: a new line starts
    finally:
        os.close(fd)
    assert drain_batch(mailbox, "lines") == [b"e"]


def test_dropped_incomplete_line_is_not_delivered_at_close(mount, mailbox):
    set_max(mailbox, 8)
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send-lines", os.O_WRONLY)
    try:
        assert os.write(fd, b"abcd") == 4
        expect_errno(errno.EFBIG, os.write, fd, b"efghi")
    finally:
        os.close(fd)
    assert_unchanged(mount, mailbox, before)


def test_frame_longer_than_max_msg_size_is_efbig_from_its_header(mount, mailbox):
    set_max(mailbox, 16)
    send(mailbox, b"queued")
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send-frames", os.O_WRONLY)
    try:
        # complete frames before the oversized one in the same write do not enter either
        expect_errno(errno.EFBIG, os.write, fd, frame(b"ok") + struct.pack("<I", 17))
        assert status_text(mailbox) == before[0]
        expect_errno(errno.EFBIG, os.write, fd, frame(b"z" * 17))
        assert status_text(mailbox) == before[0]
        # a kept incomplete frame is dropped by the refused write too
        assert os.write(fd, b"\x03\x00") == 2
        expect_errno(errno.EFBIG, os.write, fd, b"\x00\x00abc" + struct.pack("<I", 1 << 30))
        assert os.write(fd, frame(b"q" * 16)) == 20  # starts a new frame, fits exactly
    finally:
        os.close(fd)  # nothing incomplete is left: no EINVAL
    assert receive_nowait(mailbox) == b"queued"
    assert receive_nowait(mailbox) == b"q" * 16
    expect_errno(errno.EAGAIN, receive_nowait, mailbox)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_past_max_bytes_is_enospc_and_changes_nothing(make_mount, kind):
    m = make_mount(options=["max_bytes=4096"])
    box = m / "mailboxes" / "bounded"
    os.mkdir(box)
    send(box, b"a" * 3000)
    before = snapshot(m, box)
    fd = os.open(box / f".send-{kind}", os.O_WRONLY)
    try:
        expect_errno(errno.ENOSPC, os.write, fd, encode(kind, [b"b" * 500, b"c" * 1000]))
        assert status_text(box) == before[0]
        assert os.write(fd, encode(kind, [b"d" * 1000])) == 1000 + overhead(kind)
    finally:
        os.close(fd)
    assert receive_nowait(box) == b"a" * 3000
    assert receive_nowait(box) == b"d" * 1000
    assert field(m.path, "bytes") == "0"


# ---------------------------------------------------------------- batch reads

@pytest.mark.parametrize("kind", KINDS)
def test_read_takes_as_many_whole_messages_as_fit(mailbox, kind):
    payloads = [b"aaaa", b"bb", b"c", b"dddddd"]
    write_all(mailbox / f".send-{kind}", encode(kind, payloads))
    o = overhead(kind)
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        # room for the first two exactly
        assert os.read(fd, 4 + o + 2 + o) == encode(kind, [b"aaaa", b"bb"])
        assert queued(mailbox) == 2
        # room for "c" and one byte short of "dddddd": only "c"
        assert os.read(fd, 1 + o + 6 + o - 1) == encode(kind, [b"c"])
        assert messages(mailbox) == ["0000000004"]
        assert os.read(fd, 65536) == encode(kind, [b"dddddd"])
        expect_errno(errno.EAGAIN, os.read, fd, 65536)
    finally:
        os.close(fd)
    assert field(mailbox, "received") == "4"


@pytest.mark.parametrize("kind", KINDS)
def test_oldest_message_larger_than_the_buffer_is_emsgsize_and_stays_queued(mount, mailbox, kind):
    write_all(mailbox / f".send-{kind}", encode(kind, [b"0123456789", b"x"]))
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        before = snapshot(mount, mailbox)
        expect_errno(errno.EMSGSIZE, os.read, fd, 10 + overhead(kind) - 1)
        expect_errno(errno.EMSGSIZE, os.read, fd, 1)
        assert_unchanged(mount, mailbox, before)
        assert messages(mailbox) == ["0000000001", "0000000002"]
        assert os.read(fd, 10 + overhead(kind)) == encode(kind, [b"0123456789"])
    finally:
        os.close(fd)
    assert receive_nowait(mailbox) == b"x"


@pytest.mark.parametrize("kind", KINDS)
def test_blocking_emsgsize_does_not_wait(mount, mailbox, kind):
    write_all(mailbox / f".send-{kind}", encode(kind, [b"y" * 100]))
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY)
    try:
        before = snapshot(mount, mailbox)
        call = start_call(lambda: os.read(fd, 50))
        with pytest.raises(OSError) as exc:
            call.result()
        assert exc.value.errno == errno.EMSGSIZE
        assert_unchanged(mount, mailbox, before)
    finally:
        os.close(fd)
    assert receive_nowait(mailbox) == b"y" * 100


@pytest.mark.parametrize("kind", KINDS)
def test_nonblocking_read_of_an_empty_mailbox_is_eagain_and_changes_nothing(mount, mailbox, kind):
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        before = snapshot(mount, mailbox)
        start = time.monotonic()
        expect_errno(errno.EAGAIN, os.read, fd, 65536)
        assert time.monotonic() - start < 1.0
        assert_unchanged(mount, mailbox, before)
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", KINDS)
def test_read_with_messages_queued_returns_at_once_without_filling_the_buffer(mailbox, kind):
    write_all(mailbox / f".send-{kind}", encode(kind, [b"only", b"two"]))
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY)
    try:
        got = start_call(lambda: os.read(fd, 1 << 16)).result()
        assert got == encode(kind, [b"only", b"two"])
        assert field(mailbox, "receivers_waiting") == "0"
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", KINDS)
def test_read_blocks_while_empty_and_a_send_wakes_it(mailbox, kind):
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY)
    try:
        call = start_call(lambda: os.read(fd, 65536))
        wait_field(mailbox, "receivers_waiting", 1)
        assert call.is_alive()
        send(mailbox, b"from .send")
        assert call.result() == encode(kind, [b"from .send"])
        assert field(mailbox, "receivers_waiting") == "0"
        assert queued(mailbox) == 0
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", KINDS)
def test_all_lines_of_one_write_reach_a_waiting_batch_reader_together(mailbox, kind):
    # "all the complete lines of one write() are delivered together, in order, atomically":
    # a batch reader waiting with room for all of them gets all of them in its one read
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY)
    try:
        call = start_call(lambda: os.read(fd, 65536))
        wait_field(mailbox, "receivers_waiting", 1)
        write_all(mailbox / f".send-{kind}", encode(kind, [b"one", b"two", b"three"]))
        got = call.result()
        rest = drain_batch(mailbox, kind)
        assert (decode(kind, got), rest) == ([b"one", b"two", b"three"], [])
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", KINDS)
def test_messages_taken_by_a_batch_read_are_received_and_not_redelivered(mailbox, kind):
    write_all(mailbox / f".send-{kind}", encode(kind, [b"m1", b"m2", b"m3"]))
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 2 * (2 + overhead(kind))) == encode(kind, [b"m1", b"m2"])
    finally:
        os.close(fd)
    assert field(mailbox, "received") == "2"
    assert field(mailbox, "redelivered") == "0"
    assert messages(mailbox) == ["0000000003"]
    assert receive_nowait(mailbox) == b"m3"
    expect_errno(errno.EAGAIN, receive_nowait, mailbox)


def test_reader_that_exits_after_a_batch_read_gives_nothing_back(mount, mailbox):
    write_all(mailbox / ".send-lines", b"a\nb\nc\n")
    proc = start_batch_reader(mailbox, "lines", 4)
    try:
        assert batch_reader_result(proc) == b"a\nb\n"
    finally:
        reap(proc)
    # once its file is released (asynchronously), nothing came back
    wait_until(lambda: field(mount.path, "open_files") == "0", what="the reader's file released")
    assert field(mailbox, "received") == "2"
    assert field(mailbox, "redelivered") == "0"
    assert drain_batch(mailbox, "lines") == [b"c"]


@pytest.mark.parametrize("kind", KINDS)
def test_receipt_of_a_message_taken_by_a_batch_read_names_the_reader(mailbox, kind):
    fd = os.open(mailbox / ".send", os.O_RDWR)
    try:
        os.write(fd, b"with receipt")
        receipt = start_call(lambda: os.read(fd, 4096))
        wait_until(lambda: queued(mailbox) == 1 and field(mailbox, "receipts_waiting") == "1",
                   what="the message queued and its receipt awaited")
        proc = start_batch_reader(mailbox, kind)
        try:
            assert batch_reader_result(proc) == encode(kind, [b"with receipt"])
        finally:
            reap(proc)
        assert receipt.result() == f"delivered 1 to {proc.pid}\n".encode()
    finally:
        os.close(fd)


def test_head_n_5_takes_at_most_what_its_reads_asked_for(mailbox):
    n, size = 50, 4000
    payloads = [(b"%04d" % i) * (size // 4) for i in range(n)]
    write_all(mailbox / ".send-lines", encode("lines", payloads[:25]))
    write_all(mailbox / ".send-lines", encode("lines", payloads[25:]))
    assert queued(mailbox) == n
    r = subprocess.run(["head", "-n", "5", str(mailbox / ".receive-lines")],
                       capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    assert r.stdout == encode("lines", payloads[:5])
    rest = drain_batch(mailbox, "lines")
    taken = n - len(rest)
    print(f"\nhead -n 5 took {taken} of {n} messages of {size} bytes")
    # the rest are exactly the messages after the taken ones, none lost or repeated ...
    assert rest == payloads[taken:]
    # ... and head took no more than the reads it needed (each at most 128 KiB) held
    assert 5 <= taken <= 5 + (128 * 1024) // (size + 1)


@pytest.mark.parametrize("kind", KINDS)
def test_blocked_batch_reader_is_interrupted_and_loses_nothing(mailbox, kind):
    proc = start_batch_reader(mailbox, kind)
    try:
        wait_field(mailbox, "receivers_waiting", 1)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=STEP_S)
        except subprocess.TimeoutExpired:
            pytest.fail("blocked batch reader did not end after SIGINT")
        assert time.monotonic() - start < 1.0
        assert b"KeyboardInterrupt" in err, err
        wait_field(mailbox, "receivers_waiting", 0, timeout=1.0)
        write_all(mailbox / f".send-{kind}", encode(kind, [b"still here"]))
        assert queued(mailbox) == 1
        assert drain_batch(mailbox, kind) == [b"still here"]
    finally:
        reap(proc)


# ---------------------------------------------------------------- capacity

@pytest.mark.parametrize("kind", KINDS)
def test_batch_write_that_does_not_fit_waits_and_enters_as_room_appears(mailbox, kind):
    set_capacity(mailbox, 2)
    data = encode(kind, [b"w1", b"w2", b"w3", b"w4", b"w5"])
    w = start_writer(mailbox / f".send-{kind}", [data])
    wait_field(mailbox, "senders_waiting", 1)
    assert w.is_alive() and w.stage == "write", "the write() itself must wait"
    assert messages(mailbox) == ["0000000001", "0000000002"]
    assert receive_nowait(mailbox) == b"w1"
    wait_until(lambda: messages(mailbox) == ["0000000002", "0000000003"], what="w3 to enter")
    assert w.is_alive() and field(mailbox, "senders_waiting") == "1"
    got = [b"w1"]
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        # room for w2 and w3 only; taking them lets w4 and w5 in
        got += decode(kind, os.read(fd, 2 * (2 + overhead(kind))))
        assert w.finish() == [len(data)]
        assert w.close_result == "ok"
        assert field(mailbox, "senders_waiting") == "0"
        assert messages(mailbox) == ["0000000004", "0000000005"]
        got += decode(kind, os.read(fd, 65536))
    finally:
        os.close(fd)
    assert got == [b"w1", b"w2", b"w3", b"w4", b"w5"]


def test_batch_enters_whole_and_in_order_between_other_blocked_senders(mailbox):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    first = start_writer(mailbox / ".send", [b"first"])
    wait_field(mailbox, "senders_waiting", 1)
    batch = start_writer(mailbox / ".send-lines", [b"b1\nb2\nb3\n"])
    wait_field(mailbox, "senders_waiting", 2)
    last = start_writer(mailbox / ".send", [b"last"])
    wait_field(mailbox, "senders_waiting", 3)
    got = []
    for _ in range(6):
        # capacity 1: each receive lets exactly the next blocked message in
        wait_until(lambda: queued(mailbox) == 1, what="the next message to enter")
        got.append(receive_nowait(mailbox))
    assert got == [b"fill", b"first", b"b1", b"b2", b"b3", b"last"]
    assert first.finish() == [5] and batch.finish() == [9] and last.finish() == [4]
    assert [w.close_result for w in (first, batch, last)] == ["ok"] * 3
    # sequence numbers follow queue order across the nodes
    assert field(mailbox, "sent") == "6"


@pytest.mark.parametrize("kind", KINDS)
def test_nonblocking_batch_write_sends_what_fits_and_returns_a_short_count(mount, mailbox, kind):
    set_capacity(mailbox, 3)
    send(mailbox, b"queued")
    data = encode(kind, [b"n1", b"n2", b"n3", b"n4"])
    fd = os.open(mailbox / f".send-{kind}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        start = time.monotonic()
        n = os.write(fd, data)
        assert time.monotonic() - start < 1.0
        # up to the end of the last message that entered (n2)
        assert n == len(encode(kind, [b"n1", b"n2"]))
        assert queued(mailbox) == 3
        assert field(mailbox, "senders_waiting") == "0"
        # full now: nothing fits, EAGAIN, and nothing changes
        before = snapshot(mount, mailbox)
        expect_errno(errno.EAGAIN, os.write, fd, data[n:])
        assert_unchanged(mount, mailbox, before)
    finally:
        os.close(fd)  # nothing pending
    assert receive_nowait(mailbox) == b"queued"
    assert drain_batch(mailbox, kind) == [b"n1", b"n2"]


@pytest.mark.parametrize("kind", KINDS)
def test_nonblocking_batch_write_to_a_full_mailbox_is_eagain_and_changes_nothing(mount, mailbox,
                                                                                 kind):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / f".send-{kind}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.write, fd, encode(kind, [b"x", b"y"]))
    finally:
        os.close(fd)
    assert_unchanged(mount, mailbox, before)
    assert messages(mailbox) == ["0000000001"]


def test_nonblocking_batch_write_behind_a_blocked_sender_is_eagain(mount, mailbox):
    # messages do not overtake an earlier blocked sender, even when room appears for one
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    blocked = start_writer(mailbox / ".send", [b"blocked"])
    wait_field(mailbox, "senders_waiting", 1)
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / ".send-lines", os.O_WRONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.write, fd, b"eager\n")
    finally:
        os.close(fd)
    assert_unchanged(mount, mailbox, before)
    assert receive_nowait(mailbox) == b"fill"
    assert blocked.finish() == [7]
    assert receive_nowait(mailbox) == b"blocked"


# write() through libc, so that EINTR and short counts are seen as the kernel returns them
# (Python's os.write would retry after a handler that returns)
CTYPES_WRITER = r"""
import ctypes, os, signal, sys
signal.signal(signal.SIGUSR1, lambda signum, frame: None)
libc = ctypes.CDLL(None, use_errno=True)
data = bytes.fromhex(sys.argv[2])
fd = os.open(sys.argv[1], os.O_WRONLY)
print("opened", flush=True)
n = libc.write(fd, data, len(data))
print("write", n, ctypes.get_errno(), flush=True)
try:
    os.close(fd)
    print("close ok", flush=True)
except OSError as e:
    print("close errno", e.errno, flush=True)
"""


def start_ctypes_writer(box, kind, data):
    return subprocess.Popen([PY, "-c", CTYPES_WRITER, str(box / f".send-{kind}"), data.hex()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kind", KINDS)
def test_interrupted_batch_write_with_nothing_entered_is_eintr_and_queues_nothing(mount, mailbox,
                                                                                  kind):
    set_capacity(mailbox, 1)
    send(mailbox, b"fill")
    before = snapshot(mount, mailbox)
    proc = start_ctypes_writer(mailbox, kind, encode(kind, [b"i1", b"i2"]))
    try:
        wait_field(mailbox, "senders_waiting", 1)
        start = time.monotonic()
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=STEP_S)
        assert time.monotonic() - start < 1.0
        assert proc.returncode == 0, err
        assert out.decode().splitlines() == ["opened", f"write -1 {errno.EINTR}", "close ok"]
        wait_field(mailbox, "senders_waiting", 0, timeout=1.0)
        assert_unchanged(mount, mailbox, before)
        assert receive_nowait(mailbox) == b"fill"
        expect_errno(errno.EAGAIN, receive_nowait, mailbox)
    finally:
        reap(proc)


@pytest.mark.parametrize("kind", KINDS)
def test_interrupted_batch_write_after_some_entered_returns_a_short_count(mailbox, kind):
    set_capacity(mailbox, 2)
    payloads = [b"s1", b"s2", b"s3", b"s4", b"s5"]
    proc = start_ctypes_writer(mailbox, kind, encode(kind, payloads))
    try:
        wait_field(mailbox, "senders_waiting", 1)
        assert messages(mailbox) == ["0000000001", "0000000002"]
        assert receive_nowait(mailbox) == b"s1"
        wait_until(lambda: queued(mailbox) == 2, what="s3 to enter")  # s2, s3 queued
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=STEP_S)
        assert proc.returncode == 0, err
        short = len(encode(kind, payloads[:3]))
        assert out.decode().splitlines() == ["opened", f"write {short} 0", "close ok"]
        wait_field(mailbox, "senders_waiting", 0, timeout=1.0)
        # the messages that entered stay; the rest was not queued
        assert drain_batch(mailbox, kind) == [b"s2", b"s3"]
        assert field(mailbox, "sent") == "3"
        set_capacity(mailbox, "unlimited")
        send(mailbox, b"after")
        assert messages(mailbox) == ["0000000004"]
    finally:
        reap(proc)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_writer_killed_while_blocked_leaves_only_what_entered(mailbox, kind):
    set_capacity(mailbox, 1)
    proc = start_ctypes_writer(mailbox, kind, encode(kind, [b"k1", b"k2", b"k3"]))
    try:
        wait_field(mailbox, "senders_waiting", 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=STEP_S)
        wait_field(mailbox, "senders_waiting", 0, timeout=1.0)
        assert drain_batch(mailbox, kind) == [b"k1"]
        assert field(mailbox, "sent") == "1"
    finally:
        reap(proc)


@pytest.mark.parametrize("kind", KINDS)
def test_rendezvous_batch_reader_takes_messages_straight_from_a_blocked_batch_writer(mount,
                                                                                     mailbox,
                                                                                     kind):
    set_capacity(mailbox, 0)
    payloads = [b"r1", b"r2", b"r3"]
    data = encode(kind, payloads)
    w = start_writer(mailbox / f".send-{kind}", [data])
    wait_field(mailbox, "senders_waiting", 1)
    assert w.stage == "write"
    assert os.listdir(mailbox) == [] and queued(mailbox) == 0
    assert field(mount.path, "messages") == "0"
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        # room for two: the writer still holds the third
        assert os.read(fd, 2 * (2 + overhead(kind))) == encode(kind, payloads[:2])
        assert w.is_alive() and field(mailbox, "senders_waiting") == "1"
        assert queued(mailbox) == 0
        assert os.read(fd, 65536) == encode(kind, payloads[2:])
    finally:
        os.close(fd)
    assert w.finish() == [len(data)] and w.close_result == "ok"
    assert field(mailbox, "senders_waiting") == "0"
    assert field(mailbox, "received") == "3"


@pytest.mark.parametrize("kind", KINDS)
def test_rendezvous_waiting_batch_reader_gets_a_batch_writes_messages(mailbox, kind):
    # capacity 0: a batch reader already waiting, with room for all of them, takes the
    # messages of one write straight from the writer, together in its one read
    set_capacity(mailbox, 0)
    payloads = [b"q1", b"q2", b"q3"]
    data = encode(kind, payloads)
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY)
    w = None
    try:
        call = start_call(lambda: os.read(fd, 65536))
        wait_field(mailbox, "receivers_waiting", 1)
        w = start_writer(mailbox / f".send-{kind}", [data])
        got = decode(kind, call.result())
        if len(got) < 3:
            # (make the writer finish so that the test ends cleanly, then fail)
            rest = []
            while len(got) + len(rest) < 3:
                rest += decode(kind, start_call(lambda: os.read(fd, 65536)).result())
            w.finish()
            pytest.fail(f"the waiting reader got {got}, then {rest} in later reads")
        assert got == payloads
        assert w.finish() == [len(data)] and w.close_result == "ok"
    finally:
        os.close(fd)
    assert queued(mailbox) == 0 and field(mailbox, "senders_waiting") == "0"
    assert field(mailbox, "received") == "3"


@pytest.mark.parametrize("kind", KINDS)
def test_rendezvous_nonblocking_batch_write_without_receiver_is_eagain(mount, mailbox, kind):
    set_capacity(mailbox, 0)
    before = snapshot(mount, mailbox)
    fd = os.open(mailbox / f".send-{kind}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.write, fd, encode(kind, [b"nobody"]))
    finally:
        os.close(fd)
    assert_unchanged(mount, mailbox, before)


def test_rmdir_wakes_a_blocked_batch_writer_with_eidrm(mailbox):
    set_capacity(mailbox, 0)
    w = start_writer(mailbox / ".send-lines", [b"never\n"])
    wait_field(mailbox, "senders_waiting", 1)
    os.rmdir(mailbox)
    results = w.finish()
    assert len(results) == 1 and isinstance(results[0], OSError), results
    assert results[0].errno == errno.EIDRM


# ---------------------------------------------------------------- poll / select / epoll

def readable(fd, kind, timeout):
    if kind == "poll":
        p = select.poll()
        p.register(fd, select.POLLIN)
        return any(ev & select.POLLIN for _, ev in p.poll(timeout * 1000))
    if kind == "select":
        return fd in select.select([fd], [], [], timeout)[0]
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN)
        return any(ev & select.EPOLLIN for _, ev in ep.poll(timeout))
    finally:
        ep.close()


@pytest.mark.parametrize("how", ["poll", "select", "epoll"])
@pytest.mark.parametrize("kind", KINDS)
def test_batch_receive_node_is_readable_when_a_message_waits(mailbox, kind, how):
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert not readable(fd, how, 0), "readable while the mailbox is empty"
        # a waiter asleep in poll/select/epoll is woken by a send
        call = start_call(lambda: readable(fd, how, STEP_S * 2))
        sent_at = time.monotonic()
        write_all(mailbox / f".send-{kind}", encode(kind, [b"p1", b"p2"]))
        assert call.result(timeout=STEP_S * 2 + 1), f"{how}: not readable after a send"
        assert time.monotonic() - sent_at < 2.0
        assert readable(fd, how, 0)
        assert os.read(fd, 2 + overhead(kind)) == encode(kind, [b"p1"])
        assert readable(fd, how, 0), "not readable with p2 still queued"
        assert os.read(fd, 65536) == encode(kind, [b"p2"])
        assert not readable(fd, how, 0.1), "readable after the mailbox was drained"
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", KINDS)
def test_rendezvous_blocked_batch_writer_makes_the_receive_node_readable(mailbox, kind):
    set_capacity(mailbox, 0)
    fd = os.open(mailbox / f".receive-{kind}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert not readable(fd, "poll", 0)
        w = start_writer(mailbox / f".send-{kind}", [encode(kind, [b"offer"])])
        wait_field(mailbox, "senders_waiting", 1)
        assert readable(fd, "poll", STEP_S)
        assert os.read(fd, 65536) == encode(kind, [b"offer"])
        assert w.finish() == [len(encode(kind, [b"offer"]))]
    finally:
        os.close(fd)


# ---------------------------------------------------------------- interleaving with .send/.receive

def test_all_send_nodes_share_one_queue_and_sequence(mailbox):
    send(mailbox, b"A")
    write_all(mailbox / ".send-lines", b"B\nC\n")
    write_all(mailbox / ".send-frames", frames(b"D\nwith newline"))
    send(mailbox, b"E")
    write_all(mailbox / ".send-lines", b"F\n")
    assert messages(mailbox) == ["%010d" % i for i in range(1, 7)]
    assert [os.getxattr(mailbox / n, "user.ipc.seq") for n in messages(mailbox)] == \
        [str(i).encode() for i in range(1, 7)]
    assert field(mailbox, "sent") == "6"
    # .receive takes one sent by .send-lines; .receive-lines one sent by .send, and so on
    assert receive_nowait(mailbox) == b"A"
    assert receive_nowait(mailbox) == b"B"
    fd = os.open(mailbox / ".receive-frames", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 4 + 1 + 4 + 14) == frames(b"C", b"D\nwith newline")
    finally:
        os.close(fd)
    fd = os.open(mailbox / ".receive-lines", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 65536) == b"E\nF\n"
    finally:
        os.close(fd)
    assert queued(mailbox) == 0 and field(mailbox, "received") == "6"


def test_plain_receiver_waiting_gets_a_message_from_send_lines(mailbox):
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    try:
        call = start_call(lambda: os.read(fd, 100))
        wait_field(mailbox, "receivers_waiting", 1)
        write_all(mailbox / ".send-lines", b"to plain\nnext\n")
        assert call.result() == b"to plain"
        assert start_call(lambda: os.read(fd, 100)).result() == b""  # end of message
    finally:
        os.close(fd)
    assert drain_batch(mailbox, "lines") == [b"next"]


def test_batch_reader_after_a_half_read_message_gets_it_back_whole(mailbox):
    send(mailbox, b"0123456789")
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    assert os.read(fd, 4) == b"0123"
    os.close(fd)  # half-read: redelivered to the head of the queue
    wait_until(lambda: queued(mailbox) == 1 and messages(mailbox) == ["0000000001"],
               what="the half-read message back in the queue")
    assert drain_batch(mailbox, "lines") == [b"0123456789"]


# ---------------------------------------------------------------- throughput (not timed)

FRAME_SENDER = r"""
import os, struct, sys
n, size, chunk = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
stream = b"".join(struct.pack("<I", size) + (b"%010d" % i).ljust(size, b".") for i in range(n))
fd = os.open(sys.argv[1], os.O_WRONLY)
off = 0
while off < len(stream):
    off += os.write(fd, stream[off:off + chunk])
os.close(fd)
print("sent", off, flush=True)
"""

FRAME_RECEIVER = r"""
import os, struct, sys, time
n, size, chunk = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(sys.argv[1], os.O_RDONLY)
expected, errors, reads, first = 0, [], 0, None
while expected < n:
    data = os.read(fd, chunk)
    if first is None:
        first = time.monotonic()
    reads += 1
    if not data:
        errors.append("read returned 0")
        break
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            errors.append(f"partial header in read {reads}")
            break
        (length,) = struct.unpack_from("<I", data, pos)
        payload = data[pos + 4:pos + 4 + length]
        if len(payload) != length or length != size:
            errors.append(f"bad frame length {length} ({len(payload)} present) in read {reads}")
            break
        want = (b"%010d" % expected).ljust(size, b".")
        if payload != want:
            errors.append(f"message {expected}: got {payload[:10]!r}")
            if len(errors) > 5:
                break
        expected += 1
        pos += 4 + length
    if errors:
        break
last = time.monotonic()
print(expected, reads, last - first, "|".join(errors), flush=True)
"""


def test_throughput_100k_frames_in_64k_calls_exactly_once_in_order(mailbox):
    n, size, chunk = 100_000, 64, 65536
    receiver = subprocess.Popen([PY, "-c", FRAME_RECEIVER, str(mailbox / ".receive-frames"),
                                 str(n), str(size), str(chunk)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sender = None
    try:
        wait_field(mailbox, "receivers_waiting", 1)
        start = time.monotonic()
        sender = subprocess.Popen([PY, "-c", FRAME_SENDER, str(mailbox / ".send-frames"),
                                   str(n), str(size), str(chunk)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = receiver.communicate(timeout=120)
        elapsed = time.monotonic() - start
        assert receiver.returncode == 0, err
        sout, serr = sender.communicate(timeout=30)
        assert sender.returncode == 0, serr
        assert sout.split() == [b"sent", str(n * (size + 4)).encode()]
        count, reads, busy, *errors = out.decode().split(" ", 3)
        errors = errors[0].strip() if errors else ""
        assert errors == "", errors
        assert int(count) == n
        print(f"\n{n} x {size} B frames in {chunk // 1024} KiB calls: {n / elapsed:,.0f} msgs/s "
              f"end to end including the sender's start ({elapsed:.2f} s), "
              f"{n / float(busy):,.0f} msgs/s from the first read to the last; "
              f"{reads} reads")
        assert queued(mailbox) == 0
        assert field(mailbox, "sent") == str(n) and field(mailbox, "received") == str(n)
        assert field(mailbox, "senders_waiting") == "0"
        assert field(mailbox, "receivers_waiting") == "0"
    finally:
        reap(receiver)
        if sender is not None:
            reap(sender)


def test_bounded_mailbox_stream_of_20k_frames_arrives_exactly_once_in_order(mailbox):
    # the same through a mailbox of capacity 500: batch writes park and resume constantly
    set_capacity(mailbox, 500)
    n, size, chunk = 20_000, 64, 65536
    receiver = subprocess.Popen([PY, "-c", FRAME_RECEIVER, str(mailbox / ".receive-frames"),
                                 str(n), str(size), str(chunk)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sender = subprocess.Popen([PY, "-c", FRAME_SENDER, str(mailbox / ".send-frames"),
                               str(n), str(size), str(chunk)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = receiver.communicate(timeout=60)
        assert receiver.returncode == 0, err
        sout, serr = sender.communicate(timeout=30)
        assert sender.returncode == 0, serr
        count, _, _, *errors = out.decode().split(" ", 3)
        assert (errors[0].strip() if errors else "") == ""
        assert int(count) == n
        assert queued(mailbox) == 0 and field(mailbox, "senders_waiting") == "0"
    finally:
        reap(receiver)
        reap(sender)


def test_a_read_of_a_batch_send_node_returns_zero_no_receipts(mailbox):
    """Batch nodes have no receipts: a read of .send-lines opened read-write returns 0 at
    once, before and after its messages were received, also once the mailbox is gone."""
    fd = os.open(mailbox / ".send-lines", os.O_RDWR)
    try:
        os.write(fd, b"one\ntwo")
        os.fsync(fd)  # delivers "two" too
        assert os.read(fd, 100) == b""
        assert receive_nowait(mailbox) == b"one"
        os.unlink(mailbox / "0000000002")
        os.rmdir(mailbox)
        assert os.read(fd, 100) == b""
    finally:
        os.close(fd)
