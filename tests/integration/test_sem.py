"""Counting semaphores in sem/: creation at value 0, posting by writing N, the wait (a read
at offset 0) and its offsets, invalid and overflowing posts, O_NONBLOCK, poll, the
user.ipc.value peek, interruption by a signal, and 100 parked waiters woken by one
`echo 100` without a daemon thread each.

Contract: spec/interface.md, "Shared memory and semaphores" and "Everywhere". A waiter is
known to be blocked when the root .status counts it in receivers_waiting; no sleeps are used
as synchronisation, and every blocking step has a deadline."""
import errno
import fcntl
import json
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import wait_until
from ipcfs_helpers import expect_errno, read_status, reap

STEP_S = 5.0
SEM_VALUE_MAX = 2147483647
CHILD_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
NOBODY = 65534


# ---------------------------------------------------------------- helpers

def value(sem):
    """The semaphore's value through the user.ipc.value peek."""
    raw = os.getxattr(sem, "user.ipc.value")
    text = raw.decode()
    assert text.strip().isdigit(), f"user.ipc.value is {raw!r}"
    return int(text)


def make_sem(mount, name="s", mode=0o600):
    path = mount / "sem" / name
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode))
    return path


def post(sem, data):
    fd = os.open(sem, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def waiters(mount):
    return int(read_status(mount.path)["receivers_waiting"])


def wait_waiters(mount, n, timeout=STEP_S):
    wait_until(lambda: waiters(mount) == n, timeout=timeout,
               what=f"receivers_waiting: {n} in the root .status")


def sh(cmd, timeout=STEP_S):
    return subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=timeout)


class Waiter(threading.Thread):
    """A thread doing one wait: pread(fd, 16, 0) on its own descriptor."""

    def __init__(self, sem, flags=os.O_RDONLY):
        super().__init__(daemon=True)
        self.fd = os.open(sem, flags)
        self.result = None

    def run(self):
        try:
            self.result = os.pread(self.fd, 16, 0)
        except OSError as exc:
            self.result = exc
        finally:
            os.close(self.fd)

    def done(self, timeout=STEP_S):
        self.join(timeout)
        assert not self.is_alive(), f"wait did not return within {timeout}s"
        return self.result


# ---------------------------------------------------------------- creation

def test_open_o_creat_makes_a_semaphore_with_value_0_and_size_0(mount):
    before = int(read_status(mount.path)["semaphores"])
    sem = make_sem(mount, "made", mode=0o640)
    st = os.stat(sem)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~_umask()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert st.st_size == 0
    assert value(sem) == 0
    assert os.listdir(mount / "sem") == ["made"]
    assert int(read_status(mount.path)["semaphores"]) == before + 1
    # touch creates one too
    assert sh(f"touch '{mount / 'sem' / 'touched'}'").returncode == 0
    assert value(mount / "sem" / "touched") == 0
    assert int(read_status(mount.path)["semaphores"]) == before + 2
    # opening an existing semaphore with O_CREAT does not reset it
    post(sem, b"3")
    os.close(os.open(sem, os.O_RDWR | os.O_CREAT, 0o600))
    assert value(sem) == 3
    expect_errno(errno.EEXIST, os.open, sem, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    # st_size stays 0 whatever the value, so content sniffers do not wait on it
    assert os.stat(sem).st_size == 0
    os.unlink(sem)
    assert os.listdir(mount / "sem") == ["touched"]
    assert int(read_status(mount.path)["semaphores"]) == before + 1


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_non_root_user_gets_the_modes_of_semaphores(mount):
    make_sem(mount, "private", mode=0o600)
    code = textwrap.dedent("""
        import errno, json, os
        r = {}
        def attempt(label, fn, *a):
            try:
                fn(*a); r[label] = "ok"
            except OSError as e:
                r[label] = errno.errorcode[e.errno]
        attempt("read", os.open, "sem/private", os.O_RDONLY | os.O_NONBLOCK)
        attempt("write", os.open, "sem/private", os.O_WRONLY)
        attempt("unlink", os.unlink, "sem/private")
        fd = os.open("sem/mine", os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"2")
        r["mine_wait"] = os.pread(fd, 16, 0).decode()
        st = os.fstat(fd)
        r["mine_owner"] = [st.st_uid, st.st_gid]
        os.close(fd)
        print(json.dumps(r))
    """)
    proc = subprocess.run([CHILD_PYTHON, "-I", "-c", code], cwd=mount.path, user=NOBODY,
                          group=NOBODY, extra_groups=[], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert (r["read"], r["write"], r["unlink"]) == ("EACCES", "EACCES", "EPERM")
    assert r["mine_wait"] == "1\n"
    assert r["mine_owner"] == [NOBODY, NOBODY]
    assert sorted(os.listdir(mount / "sem")) == ["mine", "private"]
    assert value(mount / "sem" / "private") == 0


# ---------------------------------------------------------------- post

def test_writing_a_positive_decimal_posts_that_many_times(mount):
    sem = make_sem(mount)
    assert post(sem, b"5") == 1
    assert value(sem) == 5
    assert post(sem, b" 2\n") == 3  # surrounding white space is ignored
    assert value(sem) == 7
    assert post(sem, b"\t\n 10 \t\n") == 8
    assert value(sem) == 17
    r = sh(f"echo 3 > '{sem}'")
    assert r.returncode == 0, r.stderr
    assert value(sem) == 20
    assert post(sem, b"007") == 3  # leading zeros are still a positive decimal
    assert value(sem) == 27


@pytest.mark.parametrize("data", [b"0", b"abc", b"-1", b"+1", b" \n", b"1.5", b"1 2",
                                  b"0x10", b"12abc", b"\n0\n", b"1\x00"],
                         ids=lambda d: repr(d))
def test_anything_but_a_positive_decimal_fails_with_einval_and_changes_nothing(mount, data):
    sem = make_sem(mount)
    post(sem, b"4")
    expect_errno(errno.EINVAL, post, sem, data)
    assert value(sem) == 4


def test_posting_past_sem_value_max_fails_with_eoverflow_and_changes_nothing(mount):
    sem = make_sem(mount)
    expect_errno(errno.EOVERFLOW, post, sem, str(SEM_VALUE_MAX + 1).encode())
    assert value(sem) == 0
    expect_errno(errno.EOVERFLOW, post, sem, b"99999999999999999999999999")
    assert value(sem) == 0
    assert post(sem, str(SEM_VALUE_MAX).encode()) == 10
    assert value(sem) == SEM_VALUE_MAX
    expect_errno(errno.EOVERFLOW, post, sem, b"1")
    assert value(sem) == SEM_VALUE_MAX
    fd = os.open(sem, os.O_RDONLY)
    try:
        assert os.pread(fd, 16, 0) == f"{SEM_VALUE_MAX - 1}\n".encode()
    finally:
        os.close(fd)
    assert post(sem, b"1") == 1
    assert value(sem) == SEM_VALUE_MAX
    assert sh(f"echo 1 > '{sem}'").returncode != 0
    assert value(sem) == SEM_VALUE_MAX


# ---------------------------------------------------------------- wait

def test_a_read_at_offset_0_decrements_and_returns_the_new_value(mount):
    sem = make_sem(mount)
    post(sem, b"3")
    fd = os.open(sem, os.O_RDONLY)
    try:
        assert os.pread(fd, 16, 0) == b"2\n"
        assert value(sem) == 2
        assert os.pread(fd, 16, 0) == b"1\n"  # pread at 0 waits again
        # a read at a later offset returns 0 and does not wait or decrement
        assert os.pread(fd, 16, 2) == b""
        assert os.pread(fd, 16, 100) == b""
        assert value(sem) == 1
        # read() advances the offset, so the next read() on that descriptor is end of file
        assert os.read(fd, 16) == b"0\n"
        assert os.read(fd, 16) == b""
        assert value(sem) == 0
        os.lseek(fd, 0, os.SEEK_SET)
        post(sem, b"12")
        assert os.read(fd, 16) == b"11\n"
    finally:
        os.close(fd)


def test_cat_performs_exactly_one_wait(mount):
    sem = make_sem(mount)
    post(sem, b"3")
    out = subprocess.run(["cat", str(sem)], capture_output=True, timeout=STEP_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"2\n"
    assert value(sem) == 2
    out = subprocess.run(["cat", str(sem)], capture_output=True, timeout=STEP_S)
    assert out.stdout == b"1\n"
    assert value(sem) == 1


def test_a_wait_blocks_until_another_process_posts(mount):
    sem = make_sem(mount)
    w = Waiter(sem)
    w.start()
    try:
        wait_waiters(mount, 1)
        assert w.is_alive()
        assert value(sem) == 0
        r = sh(f"echo 1 > '{sem}'")
        assert r.returncode == 0, r.stderr
        assert w.done() == b"0\n"
        assert value(sem) == 0
        assert waiters(mount) == 0
    finally:
        if w.is_alive():
            post(sem, b"1")
            w.join(STEP_S)


def test_blocked_cat_wakes_on_post_and_prints_the_new_value(mount):
    sem = make_sem(mount)
    cat = subprocess.Popen(["cat", str(sem)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiters(mount, 1)
        assert cat.poll() is None
        post(sem, b"2")
        out, err = cat.communicate(timeout=STEP_S)
        assert cat.returncode == 0, err
        assert out == b"1\n"
        assert value(sem) == 1
    finally:
        reap(cat)


def test_o_nonblock_wait_at_zero_fails_with_eagain(mount):
    sem = make_sem(mount)
    fd = os.open(sem, os.O_RDONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.pread, fd, 16, 0)
        expect_errno(errno.EAGAIN, os.read, fd, 16)
        assert waiters(mount) == 0
        post(sem, b"1")
        assert os.pread(fd, 16, 0) == b"0\n"
        expect_errno(errno.EAGAIN, os.pread, fd, 16, 0)
        assert value(sem) == 0
    finally:
        os.close(fd)
    # O_NONBLOCK set later with fcntl counts too
    fd = os.open(sem, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        expect_errno(errno.EAGAIN, os.pread, fd, 16, 0)
    finally:
        os.close(fd)


def test_poll_reports_readable_while_the_value_is_positive(mount):
    sem = make_sem(mount)
    fd = os.open(sem, os.O_RDONLY)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(0) == []
        post(sem, b"2")
        assert p.poll(int(STEP_S * 1000)) == [(fd, select.POLLIN)]
        assert os.pread(fd, 16, 0) == b"1\n"
        assert p.poll(int(STEP_S * 1000)) == [(fd, select.POLLIN)]  # still positive
        assert os.pread(fd, 16, 0) == b"0\n"
        assert p.poll(0) == []
        # a poll already waiting is woken by a post from another process
        result = []
        t = threading.Thread(target=lambda: result.append(p.poll(int(STEP_S * 1000))),
                             daemon=True)
        t.start()
        r = sh(f"echo 1 > '{sem}'")
        assert r.returncode == 0, r.stderr
        t.join(STEP_S + 1)
        assert not t.is_alive()
        assert result == [[(fd, select.POLLIN)]]
        # select and epoll agree
        assert select.select([fd], [], [], STEP_S)[0] == [fd]
        ep = select.epoll()
        try:
            ep.register(fd, select.EPOLLIN)
            assert ep.poll(STEP_S) == [(fd, select.EPOLLIN)]
        finally:
            ep.close()
        assert value(sem) == 1  # polling never decrements
    finally:
        os.close(fd)


# ---------------------------------------------------------------- xattr

def test_user_ipc_value_peeks_and_cannot_be_set(mount):
    sem = make_sem(mount)
    post(sem, b"42")
    for _ in range(3):
        assert value(sem) == 42
    assert "user.ipc.value" in os.listxattr(sem)
    r = subprocess.run(["getfattr", "--only-values", "-n", "user.ipc.value", str(sem)],
                       capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"42"
    expect_errno(errno.EPERM, os.setxattr, sem, "user.ipc.value", b"7")
    assert value(sem) == 42


# ---------------------------------------------------------------- interruption, scale

def test_sigint_ends_a_blocked_cat_within_a_second_and_consumes_nothing(mount):
    sem = make_sem(mount)
    cat = subprocess.Popen(["cat", str(sem)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_waiters(mount, 1)
        start = time.monotonic()
        os.kill(cat.pid, signal.SIGINT)
        cat.wait(timeout=STEP_S)
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, f"cat took {elapsed:.2f}s to end after SIGINT"
        assert cat.returncode == -signal.SIGINT
        assert cat.stdout.read() == b""
        wait_waiters(mount, 0)
        # the interrupted wait took nothing, and a later post is not eaten by it
        post(sem, b"1")
        assert value(sem) == 1
    finally:
        reap(cat)


def test_a_wait_interrupted_by_a_caught_signal_ends_and_consumes_nothing(mount):
    sem = make_sem(mount)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, signal, sys
        class Interrupted(Exception):
            pass
        def handler(*a):
            raise Interrupted()
        signal.signal(signal.SIGUSR1, handler)
        fd = os.open(sys.argv[1], os.O_RDONLY)
        try:
            print("returned", os.pread(fd, 16, 0))
        except Interrupted:
            print("interrupted")
    """), str(sem)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_waiters(mount, 1)
        os.kill(child.pid, signal.SIGUSR1)
        out, err = child.communicate(timeout=STEP_S)
        assert child.returncode == 0, err
        assert out.strip() == "interrupted"
        wait_waiters(mount, 0)
        post(sem, b"1")
        assert value(sem) == 1
    finally:
        reap(child)


def test_one_echo_100_wakes_100_waiters_exactly_once_without_a_thread_each(mount):
    sem = make_sem(mount)
    threads_before = mount.daemon_threads()
    ws = [Waiter(sem) for _ in range(100)]
    for w in ws:
        w.start()
    try:
        wait_waiters(mount, 100, timeout=20)
        assert all(w.is_alive() for w in ws)
        assert value(sem) == 0
        threads_now = mount.daemon_threads()
        print(f"\ndaemon threads: {threads_before} before, {threads_now} with 100 parked waits")
        # responsiveness while they are all parked
        start = time.monotonic()
        os.stat(mount / "sem")
        read_status(mount.path)
        other = make_sem(mount, "other")
        post(other, b"1")
        assert os.getxattr(other, "user.ipc.value").strip() == b"1"
        assert time.monotonic() - start < 1.0
        assert threads_now < 100 and threads_now <= max(64, threads_before), \
            f"daemon uses {threads_now} threads for 100 parked waits (before: {threads_before})"
        r = sh(f"echo 100 > '{sem}'")
        assert r.returncode == 0, r.stderr
        results = [w.done(timeout=20) for w in ws]
    finally:
        if any(w.is_alive() for w in ws):
            post(sem, b"100")
            for w in ws:
                w.join(STEP_S)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:5]
    # every wait returned once, each with a distinct new value: 99, 98, ... 0
    assert sorted(results) == sorted(f"{i}\n".encode() for i in range(100))
    assert value(sem) == 0
    wait_waiters(mount, 0)
