"""Helpers shared by the integration tests: sending and receiving through a mailbox's
control nodes, parsing `.status` (and waiting for a field of it), capacity, snapshots of
`.status` around a refused operation, errno checks, calls in a thread, helper processes
that act on request (their own pid), running commands with a deadline, and finding,
stopping and cleaning up daemons that are not the test's own child.

Import what a test file needs: `from ipcfs_helpers import send, read_status`. Fixtures
(mount, mailbox, ...) and wait_until stay in conftest.py; the fixtures here apply only in
the modules that import them: no_mount_left (autouse there) and agents."""
import errno
import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import IPCFS_BIN, is_mounted, wait_until

PY = "/usr/bin/python3"
STEP_S = 5.0  # deadline for one step that should take milliseconds
EXIT_DEADLINE_S = 10.0  # a process that was killed, or a daemon whose mount went away


# ---------------------------------------------------------------- mailboxes

def write_all(path, data, flags=os.O_WRONLY):
    """open / one write() / close; the write must take everything."""
    fd = os.open(path, flags)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def send(mbox, data):
    """Sends data as one message (one open..write..close of `.send`); the write must take
    all of it."""
    write_all(Path(mbox, ".send"), data)


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


def status_text(path):
    """The `.status` file inside directory path (a mailbox or a mount's root), as text."""
    return Path(path, ".status").read_bytes().decode()


def read_status(path):
    """Parses the `.status` file inside directory path (a mailbox or a mount's root) into a
    dict of strings; every non-blank line must be `key: value`."""
    fields = {}
    for line in status_text(path).splitlines():
        if line.strip():
            key, sep, value = line.partition(":")
            assert sep, f"line without ':' in .status: {line!r}"
            fields[key.strip()] = value.strip()
    return fields


def field(path, key):
    return read_status(path)[key]


def wait_field(path, key, value, timeout=STEP_S):
    wait_until(lambda: field(path, key) == str(value), timeout=timeout,
               what=f"{key}: {value} in {path}/.status")


def waiting(box):
    return int(read_status(box)["receivers_waiting"])


def queued(box):
    return int(read_status(box)["messages"])


def messages(mbox):
    return sorted(os.listdir(mbox))


def mailbox_id(mbox):
    return os.getxattr(mbox, "user.ipc.id").decode()


def set_capacity(box, value):
    os.setxattr(box, "user.ipc.capacity", str(value).encode())


def snapshot(mount, box):
    """What assert_unchanged compares with: the mailbox's and the daemon's `.status`."""
    return status_text(box), status_text(mount.path)


def _split_open_files(root_status):
    """The root .status without its open_files line, and that count."""
    lines = root_status.splitlines()
    count = next(int(line.split(": ")[1]) for line in lines if line.startswith("open_files: "))
    return [line for line in lines if not line.startswith("open_files: ")], count


def assert_unchanged(mount, box, before):
    """A refused operation changes nothing: the mailbox's and the daemon's .status equal
    the snapshot taken before it, and it left no file open. (The root .status counts open
    files, whose release follows close() asynchronously: a release of an earlier close may
    land after the snapshot, so open_files may only have gone down; it is given time to
    settle.)"""
    box_before, root_before = before
    assert status_text(box) == box_before
    rest_before, open_before = _split_open_files(root_before)

    def settled():
        rest, open_now = _split_open_files(status_text(mount.path))
        return rest == rest_before and open_now <= open_before

    deadline = time.monotonic() + STEP_S
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.01)
    rest, open_now = _split_open_files(status_text(mount.path))
    assert rest == rest_before
    assert open_now <= open_before, f"open_files went from {open_before} to {open_now}"


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    got = errno.errorcode.get(e.value.errno, e.value.errno)
    assert e.value.errno == code, f"expected {errno.errorcode[code]}, got {got} ({e.value!r})"


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


# ---------------------------------------------------------------- threads, processes on request

class Call(threading.Thread):
    """fn() in a thread, started at once; .done tells whether fn has returned (or raised an
    OSError); .value is its result or the OSError it raised. result(timeout) fails the test
    if fn is still blocked, or ended with another exception; it returns .value, except that
    a Call made with raising=True (see start_call) raises the OSError instead."""

    def __init__(self, fn, raising=False):
        super().__init__(daemon=True)
        self.fn = fn
        self.raising = raising
        self.value = None
        self.error = None
        self.done = False
        self.start()

    def run(self):
        try:
            self.value = self.fn()
        except OSError as e:
            self.value = self.error = e
        self.done = True

    def result(self, timeout=STEP_S):
        self.join(timeout)
        assert not self.is_alive(), "call still blocked"
        assert self.done, "call ended with an exception other than OSError"
        if self.raising and self.error is not None:
            raise self.error
        return self.value


def start_call(fn):
    """fn() in a thread; result(timeout) returns its value or raises its OSError."""
    return Call(fn, raising=True)


# A child process that runs commands sent as JSON lines and answers each with a JSON line.
AGENT = r"""
import json, os, select, sys, threading
def reply(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()
def read_message(fd):
    chunks = []
    while True:
        c = os.read(fd, 65536)
        if not c:
            return b"".join(chunks)
        chunks.append(c)
reply(pid=os.getpid())
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    try:
        if op == "open":
            reply(ok=os.open(cmd["path"], cmd["flags"]))
        elif op == "close":
            os.close(cmd["fd"]); reply(ok=None)
        elif op == "read":
            reply(ok=os.read(cmd["fd"], cmd["n"]).hex())
        elif op == "write":
            reply(ok=os.write(cmd["fd"], bytes.fromhex(cmd["data"])))
        elif op == "recv":
            reply(ok=read_message(cmd["fd"]).hex())
        elif op == "recv_in_thread":
            box = []
            t = threading.Thread(target=lambda: box.append((threading.get_native_id(),
                                                            read_message(cmd["fd"]))))
            t.start(); t.join()
            tid, data = box[0]
            reply(ok=data.hex(), tid=tid)
        elif op == "poll":  # is fd readable right now?
            p = select.poll()
            p.register(cmd["fd"], select.POLLIN)
            reply(ok=bool(p.poll(0)))
        elif op == "call":  # any os function; bytes travel as {"hex": ...}
            args = [bytes.fromhex(a["hex"]) if isinstance(a, dict) else a for a in cmd["args"]]
            value = getattr(os, cmd["fn"])(*args)
            if isinstance(value, bytes):
                value = {"hex": value.hex()}
            elif isinstance(value, os.stat_result):
                value = [value.st_mode, value.st_uid, value.st_gid, value.st_size, value.st_ino]
            reply(ok=value)
    except OSError as e:
        reply(errno=e.errno)
"""


class Agent:
    """A separate process (its own pid) doing file operations on request; optionally as
    another user (uid = gid = user, no supplementary groups) and in directory cwd (entered
    as root, so the test's private temp dirs need not be searchable by that user)."""

    def __init__(self, user=None, cwd=None):
        ids = {} if user is None else {"user": user, "group": user, "extra_groups": []}
        self.proc = subprocess.Popen([PY, "-c", AGENT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=cwd, **ids)
        self.buf = b""
        self.pid = self.reply()["pid"]
        assert self.pid == self.proc.pid

    def request(self, **cmd):
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def reply(self, timeout=STEP_S):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(0.0, left))
            if not r:
                pytest.fail(f"process {self.pid} did not answer within {timeout}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"process {self.pid} ended: {self.proc.stderr.read()!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, **cmd):
        self.request(**cmd)
        return self.reply()

    def open(self, path, flags=os.O_RDONLY):
        r = self.call(op="open", path=str(path), flags=flags)
        if "errno" in r:
            raise OSError(r["errno"], os.strerror(r["errno"]), str(path))
        return r["ok"]

    def kill(self):
        reap(self.proc, timeout=STEP_S)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass


@pytest.fixture
def agents():
    """Factory of Agents; every one made is killed (by pid, via its Popen) at teardown.
    Applies in the modules that import it: `from ipcfs_helpers import agents`."""
    made = []

    def make(**kwargs):
        a = Agent(**kwargs)
        made.append(a)
        return a

    try:
        yield make
    finally:
        for a in made:
            a.kill()


def start_receive(agent, box):
    """The agent opens .receive and starts one blocking receive (answer read later)."""
    fd = agent.open(box / ".receive")
    agent.request(op="recv", fd=fd)
    return fd


def received(agent):
    r = agent.reply()
    assert "ok" in r, f"receiver {agent.pid} failed: {r}"
    return bytes.fromhex(r["ok"])


def receipt_fd(box):
    """`.send` opened read-write: after a write, a read() returns the message's receipt."""
    return os.open(box / ".send", os.O_RDWR)


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
