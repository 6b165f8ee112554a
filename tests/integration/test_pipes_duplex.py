"""Duplex named pipes in pipes/: a regular file created there (open O_CREAT, touch) is a
pipe whose first two opens are its two ends, both ways. Blocking, O_NONBLOCK, EOF, EPIPE,
EBUSY, the 64 KiB per-direction buffer, PIPE_BUF atomicity, interruption, poll/select/
epoll, streams (ESPIPE), unlink (the anonymous-pipe pattern), rename, `.status`, a 100 MiB
transfer each way at once, and 200 blocked readers that hold no daemon threads.

Contract: spec/interface.md, "Pipes". A blocked read or write is known to be blocked when
the root .status shows it in receivers_waiting / senders_waiting, and an end is known to be
released when open_files drops (the kernel's RELEASE follows close() asynchronously). No
sleeps are used as synchronisation, and every blocking step has a deadline."""
import errno
import hashlib
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_until
from ipcfs_helpers import (Call, expect_errno, field, no_mount_left,  # noqa: F401
                           reap, receive_nowait, send)

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
STEP_S = 5.0  # deadline for one step that should take milliseconds
BUF = 64 * 1024  # per-direction buffer
PIPE_BUF = 4096
BIG = 100 * 1024 * 1024
BIG_DEADLINE_S = 120.0


# ---------------------------------------------------------------- helpers

@pytest.fixture
def fds():
    """Collects descriptors to close at teardown (already closed ones are ignored)."""
    held = []
    yield held
    for fd in held:
        try:
            os.close(fd)
        except OSError:
            pass


def status(mount, key):
    return int(field(mount.path, key))


def wait_status(mount, key, value, timeout=STEP_S):
    wait_until(lambda: status(mount, key) == value, timeout=timeout,
               what=f"{key}: {value} in the root .status")


def wait_open_files(mount, n):
    """The daemon has processed the RELEASE of every end closed so far."""
    wait_status(mount, "open_files", n)


def make_pair(mount, fds, name="chat", flags=os.O_RDWR):
    """Creates pipes/NAME with an O_CREAT open (the first end) and opens the second end."""
    path = mount / "pipes" / name
    a = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fds.append(a)
    b = os.open(path, flags)
    fds.append(b)
    return path, a, b


def nonblocking(fd):
    os.set_blocking(fd, False)
    return fd


def fill(fd, n):
    """Writes n bytes of b"f" with non-blocking writes on fd; the buffer must take them."""
    was = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        assert os.write(fd, b"f" * n) == n
    finally:
        os.set_blocking(fd, was)


def drain(fd):
    """Reads everything buffered for fd without blocking."""
    was = os.get_blocking(fd)
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.set_blocking(fd, was)
    return b"".join(chunks)


def try_open(path, flags=os.O_RDWR):
    try:
        return os.open(path, flags)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        return None


def wait_exit(proc, timeout=STEP_S):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process {proc.pid} did not end within {timeout}s")


# ---------------------------------------------------------------- the node and its ends

def test_touch_makes_a_duplex_pipe_listed_as_a_regular_file(mount, fds):
    path = mount / "pipes" / "chat"
    r = subprocess.run(["touch", str(path)], capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    st = os.stat(path)
    assert stat.S_ISREG(st.st_mode)
    assert os.listdir(mount / "pipes") == ["chat"]
    assert status(mount, "pipes") == 1
    wait_open_files(mount, 0)  # touch's own open has been released: both ends are free
    a = os.open(path, os.O_RDWR)
    fds.append(a)
    b = os.open(path, os.O_RDWR)
    fds.append(b)
    assert os.write(a, b"from a") == 6
    assert os.read(b, 100) == b"from a"
    assert os.write(b, b"from b") == 6
    assert os.read(a, 100) == b"from b"


def test_creating_open_is_the_first_end_and_bytes_flow_both_ways(mount, fds):
    path, a, b = make_pair(mount, fds)
    assert os.write(a, b"ping") == 4
    assert os.write(b, b"pong!") == 5
    assert os.read(b, 100) == b"ping"
    assert os.read(a, 100) == b"pong!"
    # several writes are one stream (no message boundaries)
    for part in (b"ab", b"cd", b"ef"):
        os.write(a, part)
    assert os.read(b, 100) == b"abcdef"
    # O_RDONLY / O_WRONLY ends work in their own direction
    _, r, w = make_pair(mount, fds, "oneway", os.O_WRONLY)
    os.write(w, b"one way")
    assert os.read(r, 100) == b"one way"


def test_a_third_open_fails_with_ebusy(mount, fds, tmp_path):
    path, a, b = make_pair(mount, fds)
    for flags in (os.O_RDWR, os.O_RDONLY, os.O_WRONLY, os.O_RDWR | os.O_NONBLOCK,
                  os.O_RDWR | os.O_CREAT):
        expect_errno(errno.EBUSY, os.open, path, flags)
    # from another process too
    r = subprocess.run([PY, "-c", "import os, sys\ntry:\n os.open(sys.argv[1], os.O_RDWR)\n"
                        " print('opened')\nexcept OSError as e:\n print(e.errno)", str(path)],
                       capture_output=True, text=True, timeout=STEP_S)
    assert r.stdout.strip() == str(errno.EBUSY), r
    # the refused opens changed nothing: the two ends still talk
    os.write(a, b"still")
    assert os.read(b, 100) == b"still"


def test_two_shells_talk_over_exec_3rw(mount):
    """`exec 3<>pipes/chat` in two shells: the bidirectional named pipe of the issue."""
    path = str(mount / "pipes" / "chat")
    first = ('exec 3<>"$1"; echo ready; echo "ping from A" >&3; IFS= read -r reply <&3; '
             'echo "A got: $reply"')
    second = ('exec 3<>"$1"; IFS= read -r msg <&3; echo "pong from B" >&3; '
              'echo "B got: $msg"')
    sh_a = subprocess.Popen(["bash", "-c", first, "bash", path], stdout=subprocess.PIPE,
                            text=True)
    try:
        ready, _, _ = select.select([sh_a.stdout], [], [], STEP_S)
        assert ready and sh_a.stdout.readline() == "ready\n"
        sh_b = subprocess.run(["bash", "-c", second, "bash", path], capture_output=True,
                              text=True, timeout=STEP_S)
        assert sh_b.returncode == 0, sh_b.stderr
        assert sh_b.stdout == "B got: ping from A\n"
        out, _ = sh_a.communicate(timeout=STEP_S)
        assert sh_a.returncode == 0
        assert out == "A got: pong from B\n"
    finally:
        reap(sh_a)


# ---------------------------------------------------------------- reads: blocking, O_NONBLOCK, EOF

def test_a_read_blocks_while_empty_and_a_write_wakes_it(mount, fds):
    path, a, b = make_pair(mount, fds)
    call = Call(lambda: os.read(b, 100))
    wait_status(mount, "receivers_waiting", 1)
    assert not call.done
    assert os.write(a, b"wake up") == 7
    assert call.result() == b"wake up"
    wait_status(mount, "receivers_waiting", 0)


def test_open_does_not_wait_for_the_peer_and_a_read_before_any_peer_blocks(mount, fds):
    path = mount / "pipes" / "lonely"
    t0 = time.monotonic()
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # returns without a peer
    fds.append(a)
    assert time.monotonic() - t0 < STEP_S
    call = Call(lambda: os.read(a, 100))
    wait_status(mount, "receivers_waiting", 1)
    assert not call.done, "a read before any peer opened returned"
    b = os.open(path, os.O_RDWR)
    fds.append(b)
    assert os.write(b, b"hello") == 5
    assert call.result() == b"hello"


def test_nonblocking_read_fails_with_eagain(mount, fds):
    path = mount / "pipes" / "nb"
    a = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
    fds.append(a)
    expect_errno(errno.EAGAIN, os.read, a, 100)  # no peer yet
    b = os.open(path, os.O_RDWR)
    fds.append(b)
    expect_errno(errno.EAGAIN, os.read, a, 100)  # a peer, nothing buffered
    os.write(b, b"x")
    assert os.read(a, 100) == b"x"
    expect_errno(errno.EAGAIN, os.read, a, 100)
    os.set_blocking(b, False)  # set later with fcntl
    expect_errno(errno.EAGAIN, os.read, b, 100)
    assert status(mount, "receivers_waiting") == 0


def test_read_returns_eof_once_the_peer_closed_and_the_data_is_drained(mount, fds):
    path, a, b = make_pair(mount, fds)
    os.write(b, b"last words")
    os.close(b)
    wait_open_files(mount, 1)
    assert os.read(a, 4) == b"last"
    assert os.read(a, 100) == b" words"
    assert os.read(a, 100) == b""
    assert os.read(a, 100) == b""  # and stays at EOF
    os.set_blocking(a, False)
    assert os.read(a, 100) == b""  # EOF, not EAGAIN


def test_a_blocked_read_returns_eof_when_the_peer_closes(mount, fds):
    path, a, b = make_pair(mount, fds)
    call = Call(lambda: os.read(a, 100))
    wait_status(mount, "receivers_waiting", 1)
    os.close(b)
    assert call.result() == b""
    wait_status(mount, "receivers_waiting", 0)


# ------------------------------------------------------------ writes after the peer closed: EPIPE

def test_a_write_after_the_peer_closed_fails_with_epipe(mount, fds):
    path, a, b = make_pair(mount, fds)
    os.write(a, b"unread")  # data the peer never read does not matter
    os.close(b)
    wait_open_files(mount, 1)
    expect_errno(errno.EPIPE, os.write, a, b"x")
    expect_errno(errno.EPIPE, os.write, a, b"y" * 10000)


EPIPE_WRITER = r"""
import os, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as in a C program: SIGPIPE would kill us
fd = os.open(sys.argv[1], os.O_RDWR)
print("ready", flush=True)
sys.stdin.readline()
try:
    os.write(fd, b"anyone there?")
    print("written", flush=True)
except OSError as e:
    print(e.errno, flush=True)
"""


def test_epipe_comes_without_sigpipe(mount, fds):
    """Project choice (FUSE cannot raise SIGPIPE): the writer gets EPIPE and lives on."""
    path = mount / "pipes" / "chat"
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fds.append(a)
    child = subprocess.Popen([PY, "-c", EPIPE_WRITER, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([child.stdout], [], [], STEP_S)
        assert ready and child.stdout.readline() == "ready\n"
        os.close(a)
        wait_open_files(mount, 1)
        out, _ = child.communicate("go\n", timeout=STEP_S)
        assert child.returncode == 0, f"writer ended with {child.returncode} (SIGPIPE is -13)"
        assert out.strip() == str(errno.EPIPE)
    finally:
        reap(child)


# ---------------------------------------------------------------- a freed end can be taken again

def test_an_end_freed_by_its_last_close_can_be_taken_by_a_new_open(mount, fds):
    path, a, b = make_pair(mount, fds)
    b2 = os.dup(b)
    fds.append(b2)
    os.close(b)  # not the last close of that end
    expect_errno(errno.EBUSY, os.open, path, os.O_RDWR)
    os.close(b2)  # the last one: the end is freed (asynchronously)
    assert os.read(a, 100) == b""  # the old peer's EOF
    c = wait_until(lambda: try_open(path), what="the freed end to be taken by a new open")
    fds.append(c)
    expect_errno(errno.EBUSY, os.open, path, os.O_RDWR)
    os.write(c, b"new peer")
    assert os.read(a, 100) == b"new peer"
    os.write(a, b"welcome")
    assert os.read(c, 100) == b"welcome"
    # the first end can be freed and taken again as well
    os.close(a)
    d = wait_until(lambda: try_open(path), what="the first end to be taken again")
    fds.append(d)
    os.write(d, b"and again")
    assert os.read(c, 100) == b"and again"


# ---------------------------------------------------------------- the 64 KiB buffer

def test_writes_block_when_the_64k_buffer_is_full(mount, fds):
    path, a, b = make_pair(mount, fds)
    fill(a, BUF)
    os.set_blocking(a, False)
    expect_errno(errno.EAGAIN, os.write, a, b"x")
    expect_errno(errno.EAGAIN, os.write, a, b"x" * 100000)
    os.set_blocking(a, True)
    # the other direction has its own buffer
    fill(b, BUF)
    assert drain(a) == b"f" * BUF
    # a blocking write waits until the reader makes room, then completes
    call = Call(lambda: os.write(a, b"w" * 1000))
    wait_status(mount, "senders_waiting", 1)
    assert not call.done
    assert os.read(b, 2000) == b"f" * 2000
    assert call.result() == 1000
    wait_status(mount, "senders_waiting", 0)
    assert drain(b) == b"f" * (BUF - 2000) + b"w" * 1000


def test_a_blocking_write_larger_than_the_buffer_completes_as_the_reader_drains(mount, fds):
    path, a, b = make_pair(mount, fds)
    data = os.urandom(3 * BUF + 123)
    call = Call(lambda: os.write(a, data))
    got = []
    deadline = time.monotonic() + STEP_S
    while sum(map(len, got)) < len(data) and time.monotonic() < deadline:
        r, _, _ = select.select([b], [], [], STEP_S)
        if r:
            got.append(os.read(b, 10000))
    assert call.result() == len(data)
    assert b"".join(got) == data


def test_nonblocking_writes_up_to_pipe_buf_are_atomic_larger_ones_short(mount, fds):
    path, a, b = make_pair(mount, fds)
    fill(a, BUF - 1000)  # 1000 bytes of room left
    os.set_blocking(a, False)
    expect_errno(errno.EAGAIN, os.write, a, b"A" * PIPE_BUF)  # does not fit: none of it
    expect_errno(errno.EAGAIN, os.write, a, b"A" * 1001)
    assert os.write(a, b"B" * 100) == 100  # fits: all of it
    assert os.write(a, b"C" * (PIPE_BUF + 1)) == 900  # > PIPE_BUF: a short count
    expect_errno(errno.EAGAIN, os.write, a, b"D" * 8192)
    assert drain(b) == b"f" * (BUF - 1000) + b"B" * 100 + b"C" * 900


ATOMIC_WRITER = r"""
import os, sys
fd, tag, n = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
for i in range(n):
    assert os.write(fd, tag * 4096) == 4096
"""


def test_concurrent_pipe_buf_writes_never_interleave(mount, fds):
    """Two processes write 4096-byte records on the same end while the reader reads in odd
    sizes, keeping the buffer near full: every record arrives whole."""
    path, a, b = make_pair(mount, fds)
    n = 150
    writers = [subprocess.Popen([PY, "-c", ATOMIC_WRITER, str(a), tag, str(n)], pass_fds=[a])
               for tag in ("x", "y")]
    try:
        got = bytearray()
        deadline = time.monotonic() + 30
        while len(got) < 2 * n * 4096 and time.monotonic() < deadline:
            r, _, _ = select.select([b], [], [], 1.0)
            if r:
                got += os.read(b, 1000)
        for w in writers:
            assert wait_exit(w) == 0
    finally:
        reap(*writers)
    assert len(got) == 2 * n * 4096
    records = [bytes(got[i:i + 4096]) for i in range(0, len(got), 4096)]
    mixed = [i for i, rec in enumerate(records) if rec not in (b"x" * 4096, b"y" * 4096)]
    assert not mixed, f"{len(mixed)} records interleaved, first at record {mixed[0]}"
    assert records.count(b"x" * 4096) == n and records.count(b"y" * 4096) == n


# ---------------------------------------------------------------- interruption

CTYPES_WRITER = r"""
import ctypes, os, signal, sys
signal.signal(signal.SIGUSR1, lambda signum, frame: None)
libc = ctypes.CDLL(None, use_errno=True)
fd, n = int(sys.argv[1]), int(sys.argv[2])
buf = ctypes.create_string_buffer(b"R" * n, n)
r = libc.write(fd, buf, n)
print(r, ctypes.get_errno(), flush=True)
"""


def _interrupt_blocked_writer(mount, b, n):
    """A child blocked writing n bytes on end b gets SIGUSR1 (a handler is installed);
    returns (returned, errno) of its libc write()."""
    child = subprocess.Popen([PY, "-c", CTYPES_WRITER, str(b), str(n)], pass_fds=[b],
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_status(mount, "senders_waiting", 1)
        assert child.poll() is None
        t0 = time.monotonic()
        child.send_signal(signal.SIGUSR1)
        out, _ = child.communicate(timeout=STEP_S)
        elapsed = time.monotonic() - t0
        assert child.returncode == 0
        assert elapsed < 1.0, f"the write took {elapsed:.2f}s to return after the signal"
        wait_status(mount, "senders_waiting", 0)
        ret, code = map(int, out.split())
        return ret, code
    finally:
        reap(child)


def test_a_blocked_write_interrupted_with_nothing_written_fails_with_eintr(mount, fds):
    path, a, b = make_pair(mount, fds)
    fill(b, BUF)
    assert _interrupt_blocked_writer(mount, b, 100) == (-1, errno.EINTR)
    assert drain(a) == b"f" * BUF  # nothing of the interrupted write went in
    os.write(b, b"after")
    assert os.read(a, 100) == b"after"


def test_a_blocked_write_interrupted_after_some_bytes_returns_a_short_count(mount, fds):
    path, a, b = make_pair(mount, fds)
    fill(b, BUF - 1000)
    ret, code = _interrupt_blocked_writer(mount, b, 8192)
    assert ret == 1000, f"expected a short count of 1000, got {ret} (errno {code})"
    assert drain(a) == b"f" * (BUF - 1000) + b"R" * 1000


CTYPES_READER = r"""
import ctypes, os, signal, sys
signal.signal(signal.SIGUSR1, lambda signum, frame: None)
libc = ctypes.CDLL(None, use_errno=True)
fd = int(sys.argv[1])
buf = ctypes.create_string_buffer(100)
r = libc.read(fd, buf, 100)
print(r, ctypes.get_errno(), flush=True)
print(os.read(fd, 100).decode(), flush=True)  # and the end still reads
"""


def test_a_blocked_read_interrupted_by_a_handled_signal_fails_with_eintr(mount, fds):
    path, a, b = make_pair(mount, fds)
    child = subprocess.Popen([PY, "-c", CTYPES_READER, str(b)], pass_fds=[b],
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_status(mount, "receivers_waiting", 1)
        t0 = time.monotonic()
        child.send_signal(signal.SIGUSR1)
        ready, _, _ = select.select([child.stdout], [], [], STEP_S)
        assert ready, "the blocked read did not return after SIGUSR1"
        assert child.stdout.readline().split() == ["-1", str(errno.EINTR)]
        assert time.monotonic() - t0 < 1.0
        wait_status(mount, "receivers_waiting", 1)  # reading again
        os.write(a, b"after EINTR")
        out, _ = child.communicate(timeout=STEP_S)
        assert out == "after EINTR\n"
    finally:
        reap(child)


def test_sigint_ends_a_blocked_read_within_a_second(mount, fds):
    path = mount / "pipes" / "chat"
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fds.append(a)
    cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    try:
        wait_status(mount, "receivers_waiting", 1)
        t0 = time.monotonic()
        cat.send_signal(signal.SIGINT)
        rc = wait_exit(cat, timeout=1.0)
        elapsed = time.monotonic() - t0
        assert rc == -signal.SIGINT
        print(f"\nblocked pipe read ended {elapsed * 1000:.1f} ms after SIGINT")
    finally:
        reap(cat)
    wait_status(mount, "receivers_waiting", 0)
    wait_open_files(mount, 1)
    # cat's end was freed: a new open takes it
    b = wait_until(lambda: try_open(path), what="cat's end to be free again")
    fds.append(b)
    os.write(a, b"ok")
    assert os.read(b, 10) == b"ok"


def test_sigint_ends_a_blocked_write_within_a_second(mount, fds):
    path = mount / "pipes" / "chat"
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fds.append(a)
    # 128 KiB in one write(): 64 KiB fit, the rest waits for a reader that never comes
    dd = subprocess.Popen(["dd", "if=/dev/zero", f"of={path}", "bs=131072", "count=1",
                           "conv=notrunc", "status=none"], stderr=subprocess.PIPE)
    try:
        wait_status(mount, "senders_waiting", 1)
        t0 = time.monotonic()
        dd.send_signal(signal.SIGINT)
        rc = wait_exit(dd, timeout=1.0)
        elapsed = time.monotonic() - t0
        assert rc != 0
        print(f"\nblocked pipe write ended {elapsed * 1000:.1f} ms after SIGINT (dd exit {rc})")
    finally:
        reap(dd)
    wait_status(mount, "senders_waiting", 0)
    assert drain(a) == b"\0" * BUF  # what went in before the interruption


# ---------------------------------------------------------------- poll / select / epoll

# x86_64: poll select epoll_wait pselect6 ppoll epoll_pwait epoll_pwait2
WAIT_SYSCALLS = {7, 23, 232, 270, 271, 281, 441}


def sleeping_in_wait(tid):
    """True once thread tid sleeps in poll/select/epoll_wait itself."""
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


def readiness(fd, kind, timeout=0.0, want=("in", "out")):
    """{"in", "out", "hup"} reported for fd by poll, select or epoll (level-triggered)."""
    got = set()
    if kind == "select":
        r, w, _ = select.select([fd] if "in" in want else [], [fd] if "out" in want else [], [],
                                timeout)
        if r:
            got.add("in")
        if w:
            got.add("out")
        return got
    if kind == "poll":
        p = select.poll()
        p.register(fd, (select.POLLIN if "in" in want else 0)
                   | (select.POLLOUT if "out" in want else 0))
        events = p.poll(timeout * 1000)
        bits = {"in": select.POLLIN, "out": select.POLLOUT, "hup": select.POLLHUP}
    else:
        p = select.epoll()
        try:
            p.register(fd, (select.EPOLLIN if "in" in want else 0)
                       | (select.EPOLLOUT if "out" in want else 0))
            events = p.poll(timeout)
        finally:
            p.close()
        bits = {"in": select.EPOLLIN, "out": select.EPOLLOUT, "hup": select.EPOLLHUP}
    for _, ev in events:
        got |= {name for name, bit in bits.items() if ev & bit}
    return got


def wait_in_thread(fd, kind, want):
    """readiness(fd, kind, 10 s, want) in a thread, once it sleeps in the syscall."""
    tids = []

    def run():
        tids.append(threading.get_native_id())
        return readiness(fd, kind, 10.0, want)

    call = Call(run)
    wait_until(lambda: tids, what="the waiter thread to start")
    wait_until(lambda: sleeping_in_wait(tids[0]) or call.done, what=f"{kind} to sleep")
    assert not call.done, f"{kind} returned before the event: {call.value}"
    return call


@pytest.mark.parametrize("kind", ["poll", "select", "epoll"])
def test_readiness_in_out_and_hup(mount, fds, kind):
    path, a, b = make_pair(mount, fds)
    assert readiness(a, kind) == {"out"}, "fresh end: writable, not readable"
    assert readiness(b, kind) == {"out"}
    # POLLIN when bytes are buffered
    os.write(b, b"hi")
    assert readiness(a, kind) == {"in", "out"}
    assert readiness(b, kind) == {"out"}
    assert os.read(a, 10) == b"hi"
    assert readiness(a, kind) == {"out"}
    # a sleeping waiter is woken by the peer's write
    call = wait_in_thread(a, kind, ("in",))
    t0 = time.monotonic()
    os.write(b, b"wake")
    assert "in" in call.result(), f"{kind}: not readable after the peer wrote"
    assert time.monotonic() - t0 < 2.0
    assert os.read(a, 10) == b"wake"
    # POLLOUT only while the peer's buffer has room
    fill(a, BUF)
    assert "out" not in readiness(a, kind), f"{kind}: writable while the buffer is full"
    call = wait_in_thread(a, kind, ("out",))
    assert len(os.read(b, PIPE_BUF)) == PIPE_BUF
    assert "out" in call.result(), f"{kind}: not writable after the peer read"
    assert drain(b) == b"f" * (BUF - PIPE_BUF)
    # POLLHUP once the peer closed and nothing is left
    os.write(b, b"bye")
    os.close(b)
    wait_open_files(mount, 1)
    assert "in" in readiness(a, kind), f"{kind}: data left after the close must be readable"
    assert os.read(a, 10) == b"bye"
    if kind == "select":
        assert "in" in readiness(a, kind, want=("in",))  # select shows a hangup as readable
    else:
        assert "hup" in readiness(a, kind, want=("in",)), f"{kind}: no POLLHUP after the close"
    assert os.read(a, 10) == b""


@pytest.mark.parametrize("kind", ["poll", "epoll"])
def test_a_sleeping_waiter_is_woken_by_the_peers_close(mount, fds, kind):
    path, a, b = make_pair(mount, fds)
    call = wait_in_thread(a, kind, ("in",))
    os.close(b)
    assert "hup" in call.result(), f"{kind}: the peer's close did not wake the waiter with HUP"


def test_epoll_edge_triggered_reports_each_new_write(mount, fds):
    path, a, b = make_pair(mount, fds)
    ep = select.epoll()
    try:
        ep.register(a, select.EPOLLIN | select.EPOLLET)
        assert ep.poll(0) == []
        os.write(b, b"1")
        assert [ev & select.EPOLLIN for _, ev in ep.poll(STEP_S)] == [select.EPOLLIN]
        assert ep.poll(0) == []  # no new edge
        os.write(b, b"2")
        assert [ev & select.EPOLLIN for _, ev in ep.poll(STEP_S)] == [select.EPOLLIN]
        assert os.read(a, 10) == b"12"
    finally:
        ep.close()


# ---------------------------------------------------------------- streams

def test_ends_are_streams_without_a_file_position(mount, fds):
    path, a, b = make_pair(mount, fds)
    os.write(a, b"data")
    expect_errno(errno.ESPIPE, os.pread, b, 10, 0)
    expect_errno(errno.ESPIPE, os.pwrite, a, b"x", 0)
    expect_errno(errno.ESPIPE, os.lseek, a, 0, os.SEEK_SET)
    expect_errno(errno.ESPIPE, os.lseek, b, 0, os.SEEK_CUR)
    assert os.read(b, 10) == b"data"


def test_one_thread_reads_while_another_writes_on_the_same_descriptor(mount, fds):
    """The contract's own consequence of "streams": a read blocked on an end does not hold
    up a write on that end. (If the ends were not opened as streams, the kernel's per-file
    f_pos lock would make the write wait for the read: the writer thread would sit in
    fdget_pos, in state D.)"""
    path, a, b = make_pair(mount, fds)
    reading = Call(lambda: os.read(a, 100))
    wait_status(mount, "receivers_waiting", 1)
    writing = Call(lambda: os.write(a, b"a->b while a reads"))
    try:
        writing.join(STEP_S)
        assert not writing.is_alive(), \
            "a write on an end waits for a read blocked on the same end (not a stream)"
        assert writing.result() == 18
        assert os.read(b, 100) == b"a->b while a reads"
    finally:
        os.write(b, b"b->a")  # wakes the reader (and with it a write stuck behind it)
    assert reading.result() == b"b->a"
    assert writing.result() == 18


# ---------------------------------------------------------------- unlink: the anonymous pipe

def test_unlinking_keeps_the_pipe_working_for_its_holders(mount, fds):
    path, a, b = make_pair(mount, fds)
    os.unlink(path)
    assert os.listdir(mount / "pipes") == []
    expect_errno(errno.ENOENT, os.open, path, os.O_RDWR)
    os.write(a, b"after unlink")
    assert os.read(b, 100) == b"after unlink"
    os.write(b, b"both ways")
    assert os.read(a, 100) == b"both ways"
    # the name is free: a new pipe under it is a different, independent one
    c = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fds.append(c)
    d = os.open(path, os.O_RDWR)
    fds.append(d)
    os.write(c, b"new")
    assert os.read(d, 10) == b"new"
    os.set_blocking(a, False)
    expect_errno(errno.EAGAIN, os.read, a, 10)


def _wait_child(pid, timeout=STEP_S):
    status = []

    def done():
        got, st = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            status.append(st)
        return bool(status)

    wait_until(done, timeout=timeout, what=f"child {pid} to exit")
    return os.waitstatus_to_exitcode(status[0])


def test_anonymous_pipe_parent_and_forked_child_nobody_else_can_acquire_it(mount, fds):
    """The parent opens both ends, unlinks the name and forks: an ordinary pipe, both ways;
    a third process cannot open the name (ENOENT)."""
    path, parent_end, child_end = make_pair(mount, fds, "anon")
    os.unlink(path)
    n = 1000
    pid = os.fork()
    if pid == 0:  # the child: produce n lines, then wait for the parent's answer
        code = 1
        try:
            os.close(parent_end)
            for i in range(1, n + 1):
                line = f"line {i}\n".encode()
                assert os.write(child_end, line) == len(line)
            answer = os.read(child_end, 100)
            code = 0 if answer == b"got 1000\n" else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    try:
        os.close(child_end)
        # a third process finds no name to open
        r = subprocess.run([PY, "-c", "import os, sys\ntry:\n os.open(sys.argv[1], os.O_RDWR)\n"
                            " print('opened')\nexcept OSError as e:\n print(e.errno)", str(path)],
                           capture_output=True, text=True, timeout=STEP_S)
        assert r.stdout.strip() == str(errno.ENOENT), r
        data = b""
        deadline = time.monotonic() + STEP_S
        while data.count(b"\n") < n and time.monotonic() < deadline:
            ready, _, _ = select.select([parent_end], [], [], STEP_S)
            if ready:
                data += os.read(parent_end, 65536)
        assert data == b"".join(f"line {i}\n".encode() for i in range(1, n + 1))
        os.write(parent_end, b"got 1000\n")
        assert _wait_child(pid) == 0
        pid = None
        assert os.read(parent_end, 10) == b""  # the child's end closed when it exited
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert status(mount, "pipes") == 0


def test_python_anonymous_pipe_example(mount, tmp_path):
    example = REPO / "examples" / "python" / "anonymous_pipe.py"
    r = subprocess.run([PY, str(example), str(mount / "pipes" / "work"), "5"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f"item {i}\n" for i in range(1, 6)) + "EOF after 5 items\n"
    assert os.listdir(mount / "pipes") == []


# ---------------------------------------------------------------- names: rename, .status

def test_rename_within_pipes_and_eexist_onto_an_existing_name(mount, fds):
    path, a, b = make_pair(mount, fds, "old")
    other = mount / "pipes" / "taken"
    os.close(os.open(other, os.O_RDWR | os.O_CREAT, 0o644))
    os.rename(path, mount / "pipes" / "new")
    assert sorted(os.listdir(mount / "pipes")) == ["new", "taken"]
    os.write(a, b"renamed")  # the open ends keep working
    assert os.read(b, 100) == b"renamed"
    expect_errno(errno.EBUSY, os.open, mount / "pipes" / "new", os.O_RDWR)  # same pipe
    expect_errno(errno.EEXIST, os.rename, mount / "pipes" / "new", other)
    assert sorted(os.listdir(mount / "pipes")) == ["new", "taken"]
    os.mkfifo(mount / "pipes" / "fifo")
    os.rename(mount / "pipes" / "fifo", mount / "pipes" / "fifo2")
    assert stat.S_ISFIFO(os.stat(mount / "pipes" / "fifo2").st_mode)


def test_status_counts_pipes_bytes_and_waiters(mount, fds):
    assert (status(mount, "pipes"), status(mount, "pipe_bytes")) == (0, 0)
    path, a, b = make_pair(mount, fds)
    os.mkfifo(mount / "pipes" / "fifo")
    assert status(mount, "pipes") == 2
    os.write(a, b"12345")
    os.write(b, b"1234567")
    assert os.read(b, 100) == b"12345"
    assert os.read(a, 100) == b"1234567"
    assert status(mount, "pipe_bytes") == 12
    # a blocked read on one pipe, a blocked write on another
    path2, c, d = make_pair(mount, fds, "other")
    assert status(mount, "pipes") == 3
    reader = Call(lambda: os.read(a, 100))
    wait_status(mount, "receivers_waiting", 1)
    fill(c, BUF)
    writer = Call(lambda: os.write(c, b"z" * 10))
    wait_status(mount, "senders_waiting", 1)
    assert status(mount, "receivers_waiting") == 1
    os.write(b, b"r")
    assert reader.result() == b"r"
    wait_status(mount, "receivers_waiting", 0)
    assert status(mount, "senders_waiting") == 1
    assert len(os.read(d, 100)) == 100
    assert writer.result() == 10
    wait_status(mount, "senders_waiting", 0)
    assert drain(d) == b"f" * (BUF - 100) + b"z" * 10
    assert status(mount, "pipe_bytes") == 12 + 1 + BUF + 10
    os.unlink(mount / "pipes" / "fifo")
    assert status(mount, "pipes") == 2
    os.unlink(path)
    os.unlink(path2)
    assert status(mount, "pipes") == 0


# ---------------------------------------------------------------- 100 MiB each way at once

def _writer(fd, total, seed):
    """Writes total bytes in 64 KiB writes; returns the sha256 of what went in."""
    h = hashlib.sha256()
    base = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    block = bytearray(base)
    sent = 0
    i = 0
    while sent < total:
        block[:8] = i.to_bytes(8, "little")  # every block differs
        view = memoryview(block)[: min(len(block), total - sent)]
        while view:
            n = os.write(fd, view)
            h.update(view[:n])
            view = view[n:]
            sent += n
        i += 1
    return h.hexdigest()


def _reader(fd, total, progress):
    h = hashlib.sha256()
    got = 0
    while got < total:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        h.update(chunk)
        got += len(chunk)
        progress[0] = got
    return got, h.hexdigest()


STALL_S = 10.0  # no byte moved for this long: a deadlock


def _join_watching_progress(calls, progress, t0):
    """Joins the calls; fails at BIG_DEADLINE_S, or as soon as no byte moved for STALL_S."""
    deadline = t0 + BIG_DEADLINE_S
    last, last_change = None, time.monotonic()
    while any(c.is_alive() for c in calls.values()):
        now = time.monotonic()
        moved = tuple(p[0] for p in progress)
        if moved != last:
            last, last_change = moved, now
        stuck = [name for name, c in calls.items() if c.is_alive()]
        assert now - last_change < STALL_S, \
            f"no progress for {STALL_S}s (deadlock?): bytes read {moved}, still running {stuck}"
        assert now < deadline, f"not done after {BIG_DEADLINE_S}s: {stuck}"
        next(c for c in calls.values() if c.is_alive()).join(0.2)


def test_100_mib_each_direction_at_the_same_time_with_checksums(mount, fds):
    """A reader thread and a writer thread on each end, all four at once."""
    path, a, b = make_pair(mount, fds)
    at_a, at_b = [0], [0]
    t0 = time.monotonic()
    calls = {
        "write a->b": Call(lambda: _writer(a, BIG, b"a")),
        "write b->a": Call(lambda: _writer(b, BIG, b"b")),
        "read at b": Call(lambda: _reader(b, BIG, at_b)),
        "read at a": Call(lambda: _reader(a, BIG, at_a)),
    }
    try:
        _join_watching_progress(calls, (at_a, at_b), t0)
    finally:
        if any(c.is_alive() for c in calls.values()):
            mount.stop()  # ends every blocked call, so that no thread outlives the test
    elapsed = time.monotonic() - t0
    results = {name: call.result() for name, call in calls.items()}
    assert results["read at b"] == (BIG, results["write a->b"]), "a->b corrupted"
    assert results["read at a"] == (BIG, results["write b->a"]), "b->a corrupted"
    assert status(mount, "pipe_bytes") == 2 * BIG
    print(f"\nduplex pipe, 4 threads: 100 MiB each way at once in {elapsed:.2f} s: "
          f"{2 * BIG / 1e6 / elapsed:.0f} MB/s total, {BIG / 1e6 / elapsed:.0f} MB/s per direction")


def _poll_loop(fd, total, seed):
    """One thread drives one end: non-blocking writes of total bytes (64 KiB at a time) and
    reads of total bytes, as poll reports room and data. Returns (sha256 written,
    bytes read, sha256 read)."""
    os.set_blocking(fd, False)
    wh, rh = hashlib.sha256(), hashlib.sha256()
    block = bytearray(hashlib.sha256(seed).digest() * 2048)
    sent = got = i = 0
    pending = memoryview(b"")
    p = select.poll()
    deadline = time.monotonic() + BIG_DEADLINE_S
    while sent < total or got < total:
        assert time.monotonic() < deadline, f"poll loop: sent {sent}, got {got}"
        p.register(fd, (select.POLLOUT if sent < total else 0) | select.POLLIN)
        events = p.poll(STALL_S * 1000)
        assert events, f"poll loop: no readiness for {STALL_S}s (sent {sent}, got {got})"
        ev = events[0][1]
        if ev & select.POLLIN:
            try:
                chunk = os.read(fd, 1 << 20)
                rh.update(chunk)
                got += len(chunk)
                assert chunk or got >= total, "EOF before all data arrived"
            except BlockingIOError:
                pass
        if ev & select.POLLOUT and sent < total:
            if not pending:
                block[:8] = i.to_bytes(8, "little")
                i += 1
                pending = memoryview(bytes(block[: min(len(block), total - sent)]))
            try:
                n = os.write(fd, pending)
                wh.update(pending[:n])
                pending = pending[n:]
                sent += n
            except BlockingIOError:
                pass
    return wh.hexdigest(), got, rh.hexdigest()


def test_100_mib_each_direction_at_the_same_time_one_poll_loop_per_end(mount, fds):
    """The same transfer with one thread per end that polls and never blocks in read or
    write: the engine's two directions at once, without concurrent calls on one end."""
    path, a, b = make_pair(mount, fds)
    t0 = time.monotonic()
    loop_a = Call(lambda: _poll_loop(a, BIG, b"a"))
    loop_b = Call(lambda: _poll_loop(b, BIG, b"b"))
    sent_a, got_a, sum_got_a = loop_a.result(timeout=BIG_DEADLINE_S)
    sent_b, got_b, sum_got_b = loop_b.result(timeout=BIG_DEADLINE_S)
    elapsed = time.monotonic() - t0
    assert (got_b, sum_got_b) == (BIG, sent_a), "a->b corrupted"
    assert (got_a, sum_got_a) == (BIG, sent_b), "b->a corrupted"
    assert status(mount, "pipe_bytes") == 2 * BIG
    print(f"\nduplex pipe, a poll loop per end: 100 MiB each way at once in {elapsed:.2f} s: "
          f"{2 * BIG / 1e6 / elapsed:.0f} MB/s total, {BIG / 1e6 / elapsed:.0f} MB/s per direction")


# ---------------------------------------------------------------- blocked reads hold no threads

def test_200_blocked_readers_on_100_pipes_keep_the_mount_responsive(mount, fds):
    n_pipes = 100
    ends = []
    for i in range(n_pipes):
        _, a, b = make_pair(mount, fds, f"p{i:03d}")
        ends.append((a, b))
    readers = [(a, b, Call(lambda fd=a: os.read(fd, 100)), Call(lambda fd=b: os.read(fd, 100)))
               for a, b in ends]
    wait_status(mount, "receivers_waiting", 2 * n_pipes, timeout=20)
    threads = mount.daemon_threads()
    print(f"\n{2 * n_pipes} blocked pipe reads: daemon has {threads} threads")
    assert threads <= 64, f"{threads} daemon threads for {2 * n_pipes} blocked reads"
    # the mount stays responsive
    t0 = time.monotonic()
    os.stat(mount.path)
    assert len(os.listdir(mount / "pipes")) == n_pipes
    path, c, d = make_pair(mount, fds, "fresh")
    os.write(c, b"fresh")
    assert os.read(d, 10) == b"fresh"
    os.mkdir(mount / "mailboxes" / "box")
    send(mount / "mailboxes" / "box", b"mail")
    assert receive_nowait(mount / "mailboxes" / "box") == b"mail"
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"operations took {elapsed:.2f}s with 200 blocked readers"
    print(f"stat, ls, a pipe transfer and a mailbox round trip: {elapsed * 1000:.0f} ms")
    assert all(not ra.done and not rb.done for _, _, ra, rb in readers)
    # every reader is woken by its peer's write; the writes run in threads with a deadline
    # (a write on an end whose read is blocked must not wait for it: ends are streams)
    writes = [(Call(lambda fd=a: os.write(fd, b"to b")),
               Call(lambda fd=b: os.write(fd, b"to a"))) for a, b, _, _ in readers]
    try:
        for wa, wb in writes:
            wa.join(STEP_S)
            wb.join(STEP_S)
            assert not wa.is_alive() and not wb.is_alive(), \
                "a write on an end with a blocked read waits for that read (not a stream)"
            assert (wa.result(), wb.result()) == (4, 4)
        for a, b, ra, rb in readers:
            assert ra.result() == b"to a"
            assert rb.result() == b"to b"
        wait_status(mount, "receivers_waiting", 0)
    finally:
        if any(c.is_alive() for w in writes for c in w):
            mount.stop()  # ends every blocked call, so that no thread outlives the test
