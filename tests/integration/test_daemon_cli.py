"""The ipcfs command line, driven through real processes: --help/--version, bad options and
mountpoints, background and foreground modes, clean exit on SIGTERM/SIGINT/SIGHUP/unmount, logs.

Contract: spec/interface.md, "Running it" and "Everywhere". Every process started here is
waited for with a deadline and, on failure, killed by its pid (never by name)."""
import contextlib
import functools
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import IPCFS_BIN, is_mounted, wait_until
from ipcfs_helpers import alive, daemon_pids, exercise, kill_pids, lazy_unmount, read_status, send
from ipcfs_helpers import no_mount_left  # noqa: F401 (autouse fixture: importing applies it)
from ipcfs_helpers import run_to_files as _run_to_files

RUN_DEADLINE_S = 15.0   # a command that should return promptly (help, bad option, mount)
EXIT_DEADLINE_S = 10.0  # a daemon told to exit

run_to_files = functools.partial(_run_to_files, timeout=RUN_DEADLINE_S)


# ---------------------------------------------------------------- helpers

class Foreground:
    """`ipcfs -f ... MNT` as a child with stdout/stderr in files; always cleaned up."""

    def __init__(self, tmp_path, extra=(), name="fg"):
        self.mnt = tmp_path / name
        self.mnt.mkdir()
        self.out_path = tmp_path / f"{name}.stdout"
        self.err_path = tmp_path / f"{name}.stderr"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.argv = [IPCFS_BIN, "-f", *extra, str(self.mnt)]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err)

    def wait_mounted(self):
        deadline = time.monotonic() + RUN_DEADLINE_S
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None:
                pytest.fail(f"ipcfs exited with {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail("ipcfs -f did not mount within the deadline")
            time.sleep(0.01)

    def stderr(self):
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def wait_exit(self):
        try:
            return self.proc.wait(timeout=EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ipcfs did not exit within {EXIT_DEADLINE_S}s")

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                lazy_unmount(self.mnt)
                self.proc.kill()
                self.proc.wait(timeout=EXIT_DEADLINE_S)
        lazy_unmount(self.mnt)
        self._out.close()
        self._err.close()


@contextlib.contextmanager
def foreground(tmp_path, extra=("-o", "auto_unmount"), name="fg"):
    fg = Foreground(tmp_path, extra, name)
    try:
        yield fg
    finally:
        fg.cleanup()


# ---------------------------------------------------------------- --help / --version

def test_help_exits_0_and_describes_usage(tmp_path):
    rc, out, err = run_to_files([IPCFS_BIN, "--help"], tmp_path, "help")
    text = out + err
    assert rc == 0, text
    assert "MOUNTPOINT" in text
    assert "max_bytes" in text
    assert "--log-level" in text


def test_version_exits_0_and_names_ipcfs(tmp_path):
    rc, out, err = run_to_files([IPCFS_BIN, "--version"], tmp_path, "version")
    text = out + err
    assert rc == 0, text
    assert any("ipcfs" in line and re.search(r"\d+\.\d+", line) for line in text.splitlines()), text


# ---------------------------------------------------------------- bad command lines

BAD_CASES = {
    "unknown_o_option": lambda mnt: ["-o", "no_such_option", str(mnt)],
    "unknown_flag": lambda mnt: ["--no-such-flag", str(mnt)],
    "bad_log_level": lambda mnt: ["--log-level", "nonsense", str(mnt)],
    "max_bytes_not_a_number": lambda mnt: ["-o", "max_bytes=abc", str(mnt)],
    "missing_mountpoint": lambda mnt: [],
    "missing_mountpoint_with_options": lambda mnt: ["-o", "auto_unmount"],
    "nonexistent_mountpoint": lambda mnt: [str(mnt / "does-not-exist")],
    "mountpoint_is_a_regular_file": lambda mnt: [str(mnt / "a-file")],
    "two_mountpoints": lambda mnt: [str(mnt), str(mnt / "second")],
}


@pytest.mark.parametrize("mode", ["background", "foreground"])
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_command_line_fails_with_one_line_error(tmp_path, case, mode):
    mnt = tmp_path / "badmnt"
    mnt.mkdir()
    (mnt / "a-file").write_bytes(b"")
    (mnt / "second").mkdir()
    argv = [IPCFS_BIN, *(["-f"] if mode == "foreground" else []), *BAD_CASES[case](mnt)]
    try:
        rc, out, err = run_to_files(argv, tmp_path, "bad")
        assert rc > 0, f"{argv}: exit {rc}, stderr {err!r}"
        line = err.strip()
        assert line, f"{argv}: nothing on stderr"
        assert "\n" not in line, f"{argv}: error is not one line: {err!r}"
        assert len(line) < 400, f"{argv}: error is not short: {err!r}"
        assert not is_mounted(mnt)
        assert not is_mounted(mnt / "second")
        # no daemon was left running on its behalf (a forked child, say)
        wait_until(lambda: not daemon_pids(mnt), timeout=5.0, what="no ipcfs process left")
    finally:
        leftovers = daemon_pids(mnt)
        for path in (mnt, mnt / "second", mnt / "a-file", mnt / "does-not-exist"):
            lazy_unmount(path)
        kill_pids(leftovers)


# ---------------------------------------------------------------- background mode

def _start_background(tmp_path, mnt, extra=()):
    rc, out, err = run_to_files([IPCFS_BIN, "-o", "auto_unmount", *extra, str(mnt)],
                                tmp_path, "bg")
    assert rc == 0, f"background ipcfs exited {rc}: {err!r}"
    # "goes to the background once the mount is ready": usable the moment it returns
    os.stat(mnt / ".status")
    assert is_mounted(mnt)
    pids = daemon_pids(mnt)
    assert len(pids) == 1, f"expected one ipcfs daemon for {mnt}, found {pids}"
    return pids[0]


def test_background_mode_ready_on_return_and_fusermount_unmounts(tmp_path):
    mnt = tmp_path / "bgmnt"
    mnt.mkdir()
    pid = None
    try:
        pid = _start_background(tmp_path, mnt)
        exercise(mnt, "bg_box")
        r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True,
                           timeout=RUN_DEADLINE_S)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: not alive(pid), timeout=EXIT_DEADLINE_S,
                   what="background daemon to exit after fusermount3 -u")
        assert not is_mounted(mnt)
    finally:
        lazy_unmount(mnt)
        kill_pids([pid] if pid else daemon_pids(mnt))


def test_background_daemon_exits_on_sigterm(tmp_path):
    mnt = tmp_path / "bgmnt"
    mnt.mkdir()
    pid = None
    try:
        pid = _start_background(tmp_path, mnt)
        exercise(mnt, "bg_term_box")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), timeout=EXIT_DEADLINE_S,
                   what="background daemon to exit after SIGTERM")
        wait_until(lambda: not is_mounted(mnt), timeout=EXIT_DEADLINE_S, what="unmount")
    finally:
        lazy_unmount(mnt)
        kill_pids([pid] if pid else daemon_pids(mnt))


def test_background_mode_with_a_relative_mountpoint(tmp_path):
    """The daemon changes directory when it backgrounds; a relative MOUNTPOINT must still
    mean the directory it named in the caller's working directory."""
    rel = f"relmnt-{os.getpid()}-{time.monotonic_ns()}"  # unique: found in /proc by it
    mnt = tmp_path / rel
    mnt.mkdir()
    pids = []
    try:
        err_path = tmp_path / "rel.stderr"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen([IPCFS_BIN, "-o", "auto_unmount", rel], cwd=tmp_path,
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            try:
                rc = proc.wait(timeout=RUN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=EXIT_DEADLINE_S)
                pytest.fail("background ipcfs with a relative mountpoint did not return")
        pids = daemon_pids(mnt, also=(rel,))
        assert rc == 0, err_path.read_text(errors="replace")
        os.stat(mnt / ".status")
        assert is_mounted(mnt)
        exercise(mnt, "relbox")
        r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True,
                           timeout=RUN_DEADLINE_S)
        assert r.returncode == 0, r.stderr
        for pid in pids:
            wait_until(lambda: not alive(pid), timeout=EXIT_DEADLINE_S, what="daemon exit")
    finally:
        lazy_unmount(mnt)
        kill_pids(pids or daemon_pids(mnt, also=(rel,)))


def test_background_daemon_does_not_log_to_the_callers_stderr(tmp_path):
    """Background logs go to syslog: nothing more reaches the stderr it was started with."""
    mnt = tmp_path / "bgmnt"
    mnt.mkdir()
    pid = None
    try:
        rc, out, err = run_to_files([IPCFS_BIN, "-o", "auto_unmount", "--log-level", "trace",
                                     str(mnt)], tmp_path, "bglog")
        assert rc == 0, err
        pids = daemon_pids(mnt)
        assert len(pids) == 1
        pid = pids[0]
        before = (tmp_path / "bglog.stderr").stat().st_size
        exercise(mnt, "bglogbox")
        assert (tmp_path / "bglog.stderr").stat().st_size == before
    finally:
        lazy_unmount(mnt)
        kill_pids([pid] if pid else daemon_pids(mnt))


# ---------------------------------------------------------------- foreground mode

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_foreground_exits_0_and_unmounts_on_signal(tmp_path, sig):
    with foreground(tmp_path) as fg:
        fg.wait_mounted()
        exercise(fg.mnt, "sigbox")
        fg.proc.send_signal(sig)
        assert fg.wait_exit() == 0, fg.stderr()
        assert not is_mounted(fg.mnt)


def test_single_threaded_loop_serves_and_exits_on_sigterm(tmp_path):
    """-s: libfuse's loop on the main thread, blocked in read(/dev/fuse), not in a wait."""
    with foreground(tmp_path, extra=("-o", "auto_unmount", "-s")) as fg:
        fg.wait_mounted()
        exercise(fg.mnt, "onebox")
        fg.proc.send_signal(signal.SIGTERM)
        assert fg.wait_exit() == 0, fg.stderr()
        assert not is_mounted(fg.mnt)


def test_sigterm_amid_requests_ends_the_daemon_every_time(tmp_path):
    """The signal lands at any point of the loop (a request in flight, workers starting or
    retiring): each of 12 daemons exits 0 within the deadline. libfuse 3.14's own handler
    only sets a flag, and a daemon that missed the wake-up kept serving until killed."""
    for round_no in range(12):
        with foreground(tmp_path, name=f"busy{round_no}") as fg:
            fg.wait_mounted()
            box = fg.mnt / "mailboxes" / "busy"
            os.mkdir(box)
            served = []
            stop = threading.Event()

            def client():
                try:
                    while not stop.is_set():
                        send(box, b"x")
                        served.append(len(read_status(box)))
                except (OSError, UnicodeDecodeError):
                    return  # the mount went away under the client: expected

            thread = threading.Thread(target=client, daemon=True)
            thread.start()
            wait_until(lambda: len(served) >= 20 + 5 * round_no, what="the client to be served")
            fg.proc.send_signal(signal.SIGTERM)
            assert fg.wait_exit() == 0, fg.stderr()
            stop.set()
            thread.join(timeout=RUN_DEADLINE_S)
            assert not thread.is_alive(), "a request outlived its daemon"
            assert not is_mounted(fg.mnt)


@pytest.mark.parametrize("tool", [["fusermount3", "-u"], ["umount"]], ids=["fusermount3", "umount"])
def test_foreground_exits_0_after_unmount(tmp_path, tool):
    with foreground(tmp_path) as fg:
        fg.wait_mounted()
        exercise(fg.mnt, "umountbox")
        r = subprocess.run([*tool, str(fg.mnt)], capture_output=True, timeout=RUN_DEADLINE_S)
        assert r.returncode == 0, r.stderr
        assert fg.wait_exit() == 0, fg.stderr()
        assert not is_mounted(fg.mnt)


def test_sigterm_with_a_blocked_receiver_still_exits_cleanly(tmp_path):
    """A parked receive must not keep the daemon from exiting; the reader is released."""
    with foreground(tmp_path) as fg:
        fg.wait_mounted()
        box = fg.mnt / "mailboxes" / "parked"
        os.mkdir(box)
        reader = subprocess.Popen(["cat", str(box / ".receive")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            wait_until(lambda: read_status(box).get("receivers_waiting") == "1",
                       what="the reader to block")
            fg.proc.send_signal(signal.SIGTERM)
            assert fg.wait_exit() == 0, fg.stderr()
            assert not is_mounted(fg.mnt)
            reader.wait(timeout=EXIT_DEADLINE_S)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait(timeout=EXIT_DEADLINE_S)


# ---------------------------------------------------------------- logs

# Without auto_unmount: its fusermount3 watcher shares stderr and may print on exit.

def test_debug_log_level_writes_to_stderr_in_foreground(tmp_path):
    with foreground(tmp_path, extra=("--log-level", "debug")) as fg:
        fg.wait_mounted()
        exercise(fg.mnt, "logbox")
        fg.proc.send_signal(signal.SIGTERM)
        assert fg.wait_exit() == 0
        assert fg.stderr().strip(), "--log-level debug wrote nothing to stderr"


def test_log_level_off_writes_nothing_in_a_clean_run(tmp_path):
    with foreground(tmp_path, extra=("--log-level", "off")) as fg:
        fg.wait_mounted()
        exercise(fg.mnt, "quietbox")
        fg.proc.send_signal(signal.SIGTERM)
        assert fg.wait_exit() == 0
        assert fg.stderr() == ""


@pytest.mark.parametrize("level", ["trace", "debug", "info", "warn", "error", "off"])
def test_every_documented_log_level_is_accepted(tmp_path, level):
    with foreground(tmp_path, extra=("-o", "auto_unmount", "--log-level", level)) as fg:
        fg.wait_mounted()
        fg.proc.send_signal(signal.SIGTERM)
        assert fg.wait_exit() == 0, fg.stderr()
