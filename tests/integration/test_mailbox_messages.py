"""Receiving through `.receive` (take, FIFO, end-of-message, blocking, redelivery), queued
message files (attributes, peek, rm, mv-forward, immutability, xattrs) and drop-in files."""
import errno
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_until
from ipcfs_helpers import messages, read_status, receive_nowait, send

DEADLINE_S = 5.0


class Background:
    """Runs fn in a daemon thread, so a call that never returns cannot hang the run."""

    def __init__(self, fn):
        self.result = None
        self.error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as exc:  # reported to the test through join()
            self.error = exc

    def join(self, timeout=DEADLINE_S):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"call still blocked after {timeout}s"
        return self


def with_deadline(fn, timeout=DEADLINE_S):
    """Calls fn (which may block) and returns its result, failing after timeout seconds."""
    bg = Background(fn).join(timeout)
    if bg.error is not None:
        raise bg.error
    return bg.result


def cat(path):
    proc = subprocess.run(["cat", str(path)], capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- receiving --------------------------------------------------------------------------

def test_cat_receive_takes_exactly_one_message(mailbox):
    send(mailbox, b"one\n")
    send(mailbox, b"two\n")
    assert cat(mailbox / ".receive") == b"one\n"
    assert messages(mailbox) == ["0000000002"]


def test_receive_is_fifo(mailbox):
    for payload in (b"m1", b"m2", b"m3"):
        send(mailbox, payload)
    assert [cat(mailbox / ".receive") for _ in range(3)] == [b"m1", b"m2", b"m3"]
    assert messages(mailbox) == []


def test_read_loop_on_one_fd_sees_end_of_each_message(mailbox):
    send(mailbox, b"one")
    send(mailbox, b"two")
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    try:
        reads = [with_deadline(lambda: os.read(fd, 100)) for _ in range(4)]
    finally:
        os.close(fd)
    assert reads == [b"one", b"", b"two", b""]
    assert messages(mailbox) == []


def test_nonblocking_read_loop_ends_with_eagain(mailbox):
    send(mailbox, b"only")
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 100) == b"only"
        assert os.read(fd, 100) == b""
        with pytest.raises(OSError) as e:
            os.read(fd, 100)
        assert e.value.errno == errno.EAGAIN
    finally:
        os.close(fd)


def test_nonblocking_read_on_empty_mailbox_fails_eagain(mailbox):
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError) as e:
            os.read(fd, 100)
        assert e.value.errno == errno.EAGAIN
    finally:
        os.close(fd)


def test_large_message_read_in_small_chunks(mailbox):
    payload = os.urandom(200_000)
    send(mailbox, payload)
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    assert b"".join(chunks) == payload


def test_message_removed_once_last_byte_read(mailbox):
    send(mailbox, b"12345")
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 5) == b"12345"
        assert messages(mailbox) == []
        assert read_status(mailbox)["messages"] == "0"
    finally:
        os.close(fd)
    assert messages(mailbox) == []


def test_open_and_close_receive_without_reading_takes_nothing(mailbox):
    send(mailbox, b"untouched")
    os.close(os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK))
    assert messages(mailbox) == ["0000000001"]
    assert os.getxattr(mailbox / "0000000001", "user.ipc.redeliveries") == b"0"


def test_partially_read_message_goes_back_to_head(mailbox):
    send(mailbox, b"first message")
    send(mailbox, b"second")
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 5) == b"first"
        assert messages(mailbox) == ["0000000002"]
    finally:
        os.close(fd)
    wait_until(lambda: "0000000001" in os.listdir(mailbox), timeout=2.0,
               what="half-read message to be queued again")
    assert os.getxattr(mailbox / "0000000001", "user.ipc.redeliveries") == b"1"
    assert receive_nowait(mailbox) == b"first message"
    assert receive_nowait(mailbox) == b"second"


def test_redeliveries_counts_each_abandoned_read(mailbox):
    send(mailbox, b"abandoned twice")
    for expected in (b"1", b"2"):
        fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(fd, 3) == b"aba"
        finally:
            os.close(fd)
        wait_until(lambda: "0000000001" in os.listdir(mailbox), timeout=2.0,
                   what="half-read message to be queued again")
        assert os.getxattr(mailbox / "0000000001", "user.ipc.redeliveries") == expected
    assert receive_nowait(mailbox) == b"abandoned twice"


def test_empty_message_is_received_as_empty(mailbox):
    os.close(os.open(mailbox / "empty", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
    # Delivered when its last descriptor is released, which may follow close() shortly.
    wait_until(lambda: messages(mailbox) == ["empty"], timeout=2.0, what="empty message")
    assert receive_nowait(mailbox) == b""
    assert messages(mailbox) == []


# --- message files ----------------------------------------------------------------------

def test_message_file_attributes(mailbox):
    before = time.time()
    send(mailbox, b"hello world\n")
    after = time.time()
    st = os.stat(mailbox / "0000000001")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert st.st_size == len(b"hello world\n")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert before - 2 <= st.st_mtime <= after + 2


def test_ls_lists_messages(mailbox):
    send(mailbox, b"a")
    send(mailbox, b"bb")
    out = subprocess.run(["ls", str(mailbox)], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    assert out.split() == ["0000000001", "0000000002"]


def test_cat_of_message_file_only_peeks(mailbox):
    send(mailbox, b"peek at me")
    assert cat(mailbox / "0000000001") == b"peek at me"
    assert (mailbox / "0000000001").read_bytes() == b"peek at me"
    assert messages(mailbox) == ["0000000001"]
    assert read_status(mailbox)["messages"] == "1"
    assert receive_nowait(mailbox) == b"peek at me"


def test_rm_discards_message(mailbox):
    send(mailbox, b"discard me")
    send(mailbox, b"keep me")
    os.unlink(mailbox / "0000000001")
    assert messages(mailbox) == ["0000000002"]
    assert receive_nowait(mailbox) == b"keep me"
    with pytest.raises(OSError) as e:
        receive_nowait(mailbox)
    assert e.value.errno == errno.EAGAIN


def test_mv_forwards_message_to_tail_of_other_mailbox(mailbox):
    target = mailbox.with_name(mailbox.name + "-target")
    os.mkdir(target)
    Path(target, "already-there").write_bytes(b"old")
    send(mailbox, b"forwarded")
    os.rename(mailbox / "0000000001", target / "0000000001")
    assert messages(mailbox) == []
    assert messages(target) == ["0000000001", "already-there"]
    assert (target / "0000000001").read_bytes() == b"forwarded"
    assert receive_nowait(target) == b"old"
    assert receive_nowait(target) == b"forwarded"


def test_mv_command_forwards_message(mailbox):
    target = mailbox.with_name(mailbox.name + "-target")
    os.mkdir(target)
    send(mailbox, b"via mv")
    proc = subprocess.run(["mv", str(mailbox / "0000000001"), str(target) + "/"],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert messages(mailbox) == []
    assert receive_nowait(target) == b"via mv"


def test_mv_forward_onto_taken_name_fails_eexist(mailbox):
    target = mailbox.with_name(mailbox.name + "-target")
    os.mkdir(target)
    send(mailbox, b"source")
    send(target, b"target")
    with pytest.raises(OSError) as e:
        os.rename(mailbox / "0000000001", target / "0000000001")
    assert e.value.errno == errno.EEXIST
    assert (mailbox / "0000000001").read_bytes() == b"source"
    assert (target / "0000000001").read_bytes() == b"target"
    assert messages(mailbox) == messages(target) == ["0000000001"]


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                                   os.O_WRONLY | os.O_TRUNC],
                         ids=["wronly", "rdwr", "append", "trunc"])
def test_open_queued_message_for_write_fails_eacces(mailbox, flags):
    send(mailbox, b"immutable")
    with pytest.raises(OSError) as e:
        os.open(mailbox / "0000000001", flags)
    assert e.value.errno == errno.EACCES
    assert (mailbox / "0000000001").read_bytes() == b"immutable"


def test_truncate_queued_message_fails_eacces(mailbox):
    send(mailbox, b"immutable")
    with pytest.raises(OSError) as e:
        os.truncate(mailbox / "0000000001", 0)
    assert e.value.errno == errno.EACCES
    assert os.stat(mailbox / "0000000001").st_size == len(b"immutable")
    assert receive_nowait(mailbox) == b"immutable"


def test_chmod_chown_utime_on_message(mailbox):
    send(mailbox, b"attrs")
    msg = mailbox / "0000000001"
    os.chmod(msg, 0o640)
    os.chown(msg, 1234, 2345)
    os.utime(msg, (1_000_000_000, 1_000_000_000))
    st = os.stat(msg)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert st.st_mtime == 1_000_000_000
    assert receive_nowait(mailbox) == b"attrs"


def test_message_seq_xattr(mailbox):
    send(mailbox, b"a")
    send(mailbox, b"b")
    assert os.getxattr(mailbox / "0000000001", "user.ipc.seq") == b"1"
    assert os.getxattr(mailbox / "0000000002", "user.ipc.seq") == b"2"


def test_sender_pid_is_the_senders_process(mailbox):
    send(mailbox, b"from me")
    assert os.getxattr(mailbox / "0000000001", "user.ipc.sender_pid") == \
        str(os.getpid()).encode()


def test_sender_pid_is_tgid_when_a_thread_sends(mailbox):
    code = ("import os, sys, threading\n"
            "def send():\n"
            "    fd = os.open(sys.argv[1], os.O_WRONLY)\n"
            "    os.write(fd, b'from a thread')\n"
            "    os.close(fd)\n"
            "t = threading.Thread(target=send)\n"
            "t.start()\n"
            "t.join()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(mailbox / ".send")])
    assert proc.wait(timeout=10) == 0
    assert os.getxattr(mailbox / "0000000001", "user.ipc.sender_pid") == \
        str(proc.pid).encode()


# --- drop-in files ----------------------------------------------------------------------

def test_cp_file_into_mailbox_sends_it_under_its_name(mailbox, tmp_path):
    src = tmp_path / "report.bin"
    src.write_bytes(os.urandom(200_000))
    proc = subprocess.run(["cp", str(src), str(mailbox) + "/"], capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert messages(mailbox) == ["report.bin"]
    assert (mailbox / "report.bin").read_bytes() == src.read_bytes()
    assert receive_nowait(mailbox) == src.read_bytes()


def test_cp_preserving_attributes_succeeds(mailbox, tmp_path):
    src = tmp_path / "kept.txt"
    src.write_bytes(b"with attributes\n")
    os.utime(src, (1_500_000_000, 1_500_000_000))
    proc = subprocess.run(["cp", "-p", str(src), str(mailbox) + "/"], capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert messages(mailbox) == ["kept.txt"]
    assert (mailbox / "kept.txt").read_bytes() == b"with attributes\n"


def test_echo_into_new_name_sends_message(mailbox):
    subprocess.run(["bash", "-c", "echo hi > note"], cwd=mailbox, timeout=10, check=True)
    assert messages(mailbox) == ["note"]
    assert (mailbox / "note").read_bytes() == b"hi\n"
    assert stat.S_IMODE(os.stat(mailbox / "note").st_mode) == 0o444
    assert receive_nowait(mailbox) == b"hi\n"


def test_touch_sends_empty_message(mailbox):
    subprocess.run(["touch", str(mailbox / "empty")], timeout=10, check=True)
    # Delivered when its last descriptor is released, which may follow close() shortly.
    wait_until(lambda: messages(mailbox) == ["empty"], timeout=2.0, what="empty message")
    assert os.stat(mailbox / "empty").st_size == 0
    assert read_status(mailbox)["messages"] == "1"


def test_drop_in_being_written_resolves_but_is_not_listed_or_receivable(mailbox):
    fd = os.open(mailbox / "draft", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"part")
        assert stat.S_ISREG(os.stat(mailbox / "draft").st_mode)
        assert messages(mailbox) == []
        assert read_status(mailbox)["messages"] == "0"
        with pytest.raises(OSError) as e:
            receive_nowait(mailbox)
        assert e.value.errno == errno.EAGAIN
        os.write(fd, b" and rest")
    finally:
        os.close(fd)
    assert messages(mailbox) == ["draft"]
    assert receive_nowait(mailbox) == b"part and rest"


def test_idle_duplicate_close_does_not_deliver_drop_in(mailbox):
    fd = os.open(mailbox / "later", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    try:
        os.close(os.dup(fd))
        assert messages(mailbox) == []
        os.write(fd, b"written after")
    finally:
        os.close(fd)
    assert messages(mailbox) == ["later"]
    assert receive_nowait(mailbox) == b"written after"


def test_drop_in_keeps_resolving_after_delivery(mailbox):
    fd = os.open(mailbox / "copied", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"data")
    finally:
        os.close(fd)
    os.chmod(mailbox / "copied", 0o400)
    os.utime(mailbox / "copied", (1_600_000_000, 1_600_000_000))
    st = os.stat(mailbox / "copied")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o400, 1_600_000_000)


def test_create_excl_of_queued_name_fails_eexist(mailbox):
    Path(mailbox, "taken").write_bytes(b"original")
    with pytest.raises(OSError) as e:
        os.open(mailbox / "taken", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    assert e.value.errno == errno.EEXIST
    assert (mailbox / "taken").read_bytes() == b"original"
    assert messages(mailbox) == ["taken"]


@pytest.mark.parametrize("flags", [os.O_CREAT | os.O_WRONLY,
                                   os.O_CREAT | os.O_WRONLY | os.O_TRUNC],
                         ids=["creat", "creat-trunc"])
def test_create_of_queued_name_fails_eacces(mailbox, flags):
    Path(mailbox, "taken").write_bytes(b"original")
    with pytest.raises(OSError) as e:
        os.open(mailbox / "taken", flags, 0o644)
    assert e.value.errno == errno.EACCES
    assert (mailbox / "taken").read_bytes() == b"original"
    assert messages(mailbox) == ["taken"]
    assert receive_nowait(mailbox) == b"original"
