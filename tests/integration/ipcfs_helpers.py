"""Helpers shared by the integration tests: sending and receiving through a mailbox's
control nodes, parsing `.status`, errno checks, running commands with a deadline, and
finding, stopping and cleaning up daemons that are not the test's own child.

Import what a test file needs: `from ipcfs_helpers import send, read_status`. Fixtures
(mount, mailbox, ...) and wait_until stay in conftest.py; the one fixture here,
no_mount_left, is autouse only in the modules that import it."""
import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import IPCFS_BIN, is_mounted

EXIT_DEADLINE_S = 10.0  # a process that was killed, or a daemon whose mount went away


# ---------------------------------------------------------------- mailboxes

def send(mbox, data):
    """Sends data as one message (one open..write..close of `.send`); the write must take
    all of it."""
    fd = os.open(Path(mbox, ".send"), os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def read_message(fd):
    """Reads one message from an open `.receive`: up to the end-of-message read() == 0."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def receive_nowait(mbox):
    """Takes one message with a non-blocking read loop (EAGAIN if the mailbox is empty)."""
    fd = os.open(Path(mbox, ".receive"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        return read_message(fd)
    finally:
        os.close(fd)


def read_status(path):
    """Parses the `.status` file inside directory path (a mailbox or a mount's root) into a
    dict of strings; every non-blank line must be `key: value`."""
    text = Path(path, ".status").read_bytes().decode()
    fields = {}
    for line in text.splitlines():
        if line.strip():
            key, sep, value = line.partition(":")
            assert sep, f"line without ':' in .status: {line!r}"
            fields[key.strip()] = value.strip()
    return fields


def waiting(box):
    return int(read_status(box)["receivers_waiting"])


def queued(box):
    return int(read_status(box)["messages"])


def messages(mbox):
    return sorted(os.listdir(mbox))


def mailbox_id(mbox):
    return os.getxattr(mbox, "user.ipc.id").decode()


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, f"expected {errno.errorcode[code]}, got " \
        f"{errno.errorcode.get(e.value.errno, e.value.errno)}"


def exercise(mnt, name):
    """A little real work through a mount: make a mailbox, send, receive, read `.status`."""
    box = mnt / "mailboxes" / name
    os.mkdir(box)
    send(box, b"ping\n")
    fd = os.open(box / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 4096) == b"ping\n"
    finally:
        os.close(fd)
    read_status(mnt)


# ---------------------------------------------------------------- commands and children

def run_to_files(argv, tmp_path, tag, timeout, env=None):
    """Runs argv with stdout/stderr in files (a daemonised child that kept a pipe open would
    otherwise hang the wait) and a deadline of timeout seconds; returns (rc, stdout, stderr).
    """
    out_path, err_path = tmp_path / f"{tag}.stdout", tmp_path / f"{tag}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=EXIT_DEADLINE_S)
            pytest.fail(f"{argv} did not return within {timeout}s")
    return rc, out_path.read_text(errors="replace"), err_path.read_text(errors="replace")


def reap(*procs, timeout=EXIT_DEADLINE_S):
    """Kills (by pid, via Popen) each child that is still running, and waits for it."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass


# ---------------------------------------------------------------- daemons not our child

def _proc_state(pid):
    """Single-letter state of pid, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid):
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _is_ipcfs_process(pid, argv):
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    real_bin = os.path.realpath(IPCFS_BIN)
    return exe == real_bin or exe.startswith(real_bin + " ") or (
        bool(argv) and os.path.basename(argv[0]) == "ipcfs")


def daemon_pids(mountpoint, also=()):
    """Live ipcfs processes whose argv names this (test-unique) mountpoint, a path below it,
    or one of the strings in also. Found by scanning /proc/*/cmdline, never by name alone:
    the fusermount3 watcher of auto_unmount also names the mountpoint, so the executable
    (or argv[0]) must be ipcfs."""
    targets = (str(mountpoint), os.path.realpath(mountpoint))

    def names_target(arg):
        return arg in also or any(arg == t or arg.startswith(t + "/") for t in targets)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if any(map(names_target, argv)) and _is_ipcfs_process(entry, argv) and alive(entry):
            found.append(int(entry))
    return found


def kill_pids(pids):
    """SIGKILLs each pid (found by daemon_pids: ours to end) that is still alive."""
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def lazy_unmount(mountpoint):
    if is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


@pytest.fixture(autouse=True)
def no_mount_left(tmp_path):
    """Whatever happened, no mount under this test's directory survives it. Autouse in the
    test modules that import it (and only there)."""
    yield
    base = os.path.realpath(tmp_path)
    with open("/proc/self/mountinfo") as f:
        left = [line.split()[4] for line in f if line.split()[4].startswith(base + "/")]
    for mnt in left:
        subprocess.run(["fusermount3", "-u", "-z", mnt], check=False, timeout=30)
    assert not left, f"mounts left behind: {left}"
