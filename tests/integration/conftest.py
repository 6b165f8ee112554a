"""Mount fixture for integration tests: every test gets its own ipcfs mounted on a fresh
temporary directory, driven through the kernel with real syscalls, and always unmounted.

The binary comes from $IPCFS_BIN (set by CTest) or the default build directory."""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IPCFS_BIN = os.environ.get("IPCFS_BIN") or str(REPO / "build" / "fs" / "ipcfs")
MOUNT_DEADLINE_S = 10.0


def wait_until(predicate, timeout=5.0, interval=0.005, what="condition"):
    """Polls predicate until it is truthy; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def is_mounted(path):
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


class Mount:
    """A running ipcfs daemon (foreground, child of the test) and its mountpoint."""

    def __init__(self, tmp_path, options=(), args=()):
        self.path = tmp_path / "mnt"
        self.path.mkdir()
        self.log_path = tmp_path / "ipcfs.log"
        opts = ",".join(["auto_unmount", *options])
        self.argv = [IPCFS_BIN, "-f", "-o", opts, "--log-level", "warn", *args, str(self.path)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_DEADLINE_S
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"ipcfs exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("ipcfs did not mount within the deadline")
            time.sleep(0.01)
        self.returncode = None

    def __truediv__(self, rel):
        return self.path / rel

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def daemon_threads(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self, timeout=10.0):
        """SIGTERM, then wait for a clean exit; falls back to lazy unmount and SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._record_stuck_threads(timeout)
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False,
                               stderr=subprocess.DEVNULL)
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False,
                           stderr=subprocess.DEVNULL)
        self._log.close()
        self.returncode = self.proc.returncode
        return self.returncode

    def _record_stuck_threads(self, timeout):
        """A daemon that outlived SIGTERM: where each of its threads is, appended to its log,
        so that the failure says which wait never ended."""
        pid = self.proc.pid
        lines = [f"--- ipcfs (pid {pid}) still running {timeout} s after SIGTERM; its threads:"]
        try:
            for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
                task = f"/proc/{pid}/task/{tid}"
                fields = {}
                for name in ("comm", "wchan", "stack"):
                    try:
                        fields[name] = Path(task, name).read_text(errors="replace").strip()
                    except OSError:
                        fields[name] = "?"
                lines.append(f"thread {tid} {fields['comm']} waits in {fields['wchan']}")
                lines += ["    " + frame for frame in fields["stack"].splitlines()]
        except OSError as e:
            lines.append(f"(cannot list its threads: {e})")
        gdb = shutil.which("gdb")
        if gdb:
            bt = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt 16"],
                                capture_output=True, text=True, timeout=60, check=False)
            lines.append(bt.stdout[-20000:])
        self._log.write(("\n".join(lines) + "\n").encode())
        self._log.flush()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def check_clean_exit(m):
    """A daemon that crashed, leaked or hit undefined behaviour fails the test using it."""
    log = m.log()
    bad = [mark for mark in SANITIZER_MARKS if mark in log]
    if m.returncode != 0 or bad:
        pytest.fail(f"ipcfs exited with {m.returncode} {bad}:\n{log[-16000:]}")


@pytest.fixture
def mount(tmp_path):
    m = Mount(tmp_path)
    try:
        yield m
    finally:
        m.stop()
    check_clean_exit(m)


@pytest.fixture
def make_mount(tmp_path):
    """Factory for tests that need their own options; every mount made is stopped."""
    made = []

    def make(options=(), args=(), sub="m"):
        d = tmp_path / f"{sub}{len(made)}"
        d.mkdir()
        m = Mount(d, options, args)
        made.append(m)
        return m

    try:
        yield make
    finally:
        for m in made:
            m.stop()
    for m in made:
        check_clean_exit(m)


@pytest.fixture
def mailbox(mount, request):
    """A fresh mailbox with a name unique to the test."""
    path = mount / "mailboxes" / request.node.name.replace("[", "_").replace("]", "")[:200]
    os.mkdir(path)
    return path
