"""FIFO nodes in pipes/: `mkfifo` makes a real FIFO (S_IFIFO) whose bytes the kernel
carries; the engine owns the node: its name, listing, mode and owner, and rm.

Contract: spec/interface.md, "Pipes" (and "Everywhere": permissions). Every
blocking step has a deadline; no sleeps are used as synchronisation."""
import errno
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from ipcfs_helpers import expect_errno, field, no_mount_left, reap, run_to_files  # noqa: F401

PY = sys.executable
STEP_S = 5.0  # deadline for one step that should take milliseconds
BIG = 100 * 1024 * 1024  # the 100 MiB transfer
BIG_DEADLINE_S = 60.0


def pipes(mount):
    return mount / "pipes"


# ---------------------------------------------------------------- the node

def test_mkfifo_makes_a_fifo_node_listed_as_p(mount):
    r = subprocess.run(["mkfifo", str(pipes(mount) / "jobs")], timeout=STEP_S)
    assert r.returncode == 0
    st = os.stat(pipes(mount) / "jobs")
    assert stat.S_ISFIFO(st.st_mode)
    assert os.listdir(pipes(mount)) == ["jobs"]
    ls = subprocess.run(["ls", "-l", str(pipes(mount))], capture_output=True, text=True,
                        timeout=STEP_S)
    line = [x for x in ls.stdout.splitlines() if x.endswith(" jobs")]
    assert line and line[0].startswith("p"), ls.stdout
    r = subprocess.run(["test", "-p", str(pipes(mount) / "jobs")], timeout=STEP_S)
    assert r.returncode == 0
    # The root .status counts pipe nodes (FIFOs included).
    assert field(mount.path, "pipes") == "1"


def test_cat_and_echo_through_a_fifo_just_work(mount):
    fifo = pipes(mount) / "jobs"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        w = subprocess.run(["sh", "-c", 'echo hi > "$1"', "sh", str(fifo)], timeout=STEP_S)
        assert w.returncode == 0
        out, err = reader.communicate(timeout=STEP_S)
        assert reader.returncode == 0, err
        assert out == b"hi\n"
    finally:
        reap(reader)


def test_fifo_has_kernel_fifo_semantics(mount):
    """Unidirectional, O_NONBLOCK open rules, EOF when the writer goes, PIPE_BUF atomic."""
    fifo = pipes(mount) / "k"
    os.mkfifo(fifo)
    # O_WRONLY|O_NONBLOCK without a reader: ENXIO (a kernel FIFO, not a duplex pipe).
    expect_errno(errno.ENXIO, os.open, fifo, os.O_WRONLY | os.O_NONBLOCK)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            assert os.write(w, b"x" * 4096) == 4096
            assert os.read(r, 8192) == b"x" * 4096
            expect_errno(errno.EAGAIN, os.read, r, 1)
            expect_errno(errno.EBADF, os.read, w, 1)  # write-only end
        finally:
            os.close(w)
        assert os.read(r, 1) == b""  # the only writer closed: EOF
    finally:
        os.close(r)


# ---------------------------------------------------------------- 100 MiB between two processes

WRITER = r"""
import hashlib, os, sys
path, total = sys.argv[1], int(sys.argv[2])
h = hashlib.sha256()
block = os.urandom(1 << 20)
fd = os.open(path, os.O_WRONLY)
sent = 0
while sent < total:
    chunk = block[: min(len(block), total - sent)]
    # vary the data: every MiB differs from the last
    chunk = (sent // len(block)).to_bytes(8, "little") + chunk[8:]
    view = memoryview(chunk)
    while view:
        n = os.write(fd, view)
        h.update(view[:n])
        view = view[n:]
    sent += len(chunk)
os.close(fd)
print(sent, h.hexdigest())
"""

READER = r"""
import hashlib, os, sys, time
path = sys.argv[1]
h = hashlib.sha256()
fd = os.open(path, os.O_RDONLY)
got = 0
t0 = time.monotonic()
while True:
    b = os.read(fd, 1 << 20)
    if not b:
        break
    h.update(b)
    got += len(b)
os.close(fd)
print(got, h.hexdigest(), time.monotonic() - t0)
"""


def test_fifo_carries_100_mib_between_two_processes_with_matching_checksum(mount, tmp_path):
    fifo = pipes(mount) / "big"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with open(tmp_path / "r.out", "wb") as rout, open(tmp_path / "w.out", "wb") as wout:
        reader = subprocess.Popen([PY, "-c", READER, str(fifo)], stdout=rout)
        writer = subprocess.Popen([PY, "-c", WRITER, str(fifo), str(BIG)], stdout=wout)
        try:
            assert writer.wait(timeout=BIG_DEADLINE_S) == 0
            assert reader.wait(timeout=BIG_DEADLINE_S) == 0
        finally:
            reap(reader, writer)
    elapsed = time.monotonic() - t0
    sent, wsum = (tmp_path / "w.out").read_text().split()
    got, rsum, _ = (tmp_path / "r.out").read_text().split()
    assert int(sent) == BIG and int(got) == BIG
    assert rsum == wsum, "the reader's checksum differs from the writer's"
    print(f"\nFIFO in pipes/: 100 MiB in {elapsed:.2f} s = {BIG / 1e6 / elapsed:.0f} MB/s "
          "(two processes, 1 MiB writes, incl. start-up)")
    # The kernel carried the bytes: duplex-pipe traffic is not counted.
    assert field(mount.path, "pipe_bytes") == "0"


# ---------------------------------------------------------------- stress-ng

def test_plain_subdirectories_organise_pipes(mount):
    sub = pipes(mount) / "sub"
    os.mkdir(sub, 0o750)
    assert stat.S_ISDIR(os.stat(sub).st_mode) and stat.S_IMODE(os.stat(sub).st_mode) == 0o750
    os.mkfifo(sub / "fifo")
    open(sub / "duplex", "w").close()
    assert sorted(os.listdir(sub)) == ["duplex", "fifo"]
    assert "sub" in os.listdir(pipes(mount))
    with pytest.raises(OSError) as e:
        os.rmdir(sub)
    assert e.value.errno == errno.ENOTEMPTY
    os.mkdir(pipes(mount) / "other")
    os.rename(sub / "fifo", pipes(mount) / "other" / "fifo")
    assert stat.S_ISFIFO(os.stat(pipes(mount) / "other" / "fifo").st_mode)
    with pytest.raises(OSError) as e:
        os.rename(pipes(mount) / "other", pipes(mount) / "other" / "inside")
    assert e.value.errno == errno.EINVAL
    os.unlink(sub / "duplex")
    os.rmdir(sub)
    assert not os.path.lexists(sub)


# stress-ng makes a directory of its own under --temp-path, so this needs the plain
# subdirectories above.
def test_stress_ng_fifo_in_pipes_passes(mount, tmp_path):
    if shutil.which("stress-ng") is None:
        pytest.skip("stress-ng is not installed (Debian package stress-ng; "
                    "scripts/install-deps.sh installs it)")
    # stress-ng makes its FIFOs in a directory it creates under --temp-path.
    argv = ["stress-ng", "--fifo", "2", "--fifo-ops", "20000", "--temp-path", pipes(mount),
            "--timeout", "30", "--metrics-brief", "--verbose"]
    rc, out, err = run_to_files(argv, tmp_path, "stress-ng", timeout=60)
    text = out + err
    assert rc == 0, f"stress-ng failed (exit {rc}):\n{text[-3000:]}"
    assert "successful run completed" in text, text[-3000:]
    assert " fail: " not in text, text[-3000:]
    assert os.listdir(pipes(mount)) == [], "stress-ng left its FIFOs behind"


# ---------------------------------------------------------------- rm, permissions

def test_rm_removes_a_fifo(mount):
    fifo = pipes(mount) / "gone"
    os.mkfifo(fifo)
    assert field(mount.path, "pipes") == "1"
    r = subprocess.run(["rm", str(fifo)], capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    assert os.listdir(pipes(mount)) == []
    expect_errno(errno.ENOENT, os.stat, fifo)
    assert field(mount.path, "pipes") == "0"
    os.mkfifo(fifo)  # the name is free again
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_rm_of_a_fifo_in_use_keeps_the_open_ends_working(mount):
    fifo = pipes(mount) / "busy"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.unlink(fifo)
        assert os.listdir(pipes(mount)) == []
        assert os.write(w, b"still here") == 10
        assert os.read(r, 100) == b"still here"
    finally:
        os.close(w)
        os.close(r)


def test_fifo_mode_and_owner_are_kept(mount):
    fifo = pipes(mount) / "perm"
    old = os.umask(0)
    try:
        os.mkfifo(fifo, 0o640)
    finally:
        os.umask(old)
    st = os.stat(fifo)
    assert stat.S_IMODE(st.st_mode) == 0o640 and stat.S_ISFIFO(st.st_mode)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    os.chmod(fifo, 0o600)
    assert stat.S_IMODE(os.stat(fifo).st_mode) == 0o600
    os.chown(fifo, 4321, 8765)
    st = os.stat(fifo)
    assert (st.st_uid, st.st_gid) == (4321, 8765)
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_ISFIFO(st.st_mode)
    assert [e.name for e in os.scandir(pipes(mount))] == ["perm"]
    ls = subprocess.run(["ls", "-ln", str(pipes(mount))], capture_output=True, text=True,
                        timeout=STEP_S)
    assert any(x.startswith("prw------- 1 4321 8765 ") for x in ls.stdout.splitlines()), ls.stdout


OTHER_UID = 65534  # nobody
OPEN_AS_OTHER = r"""
import os, sys
dirfd = int(sys.argv[1])
try:
    fd = os.open(sys.argv[2], os.O_WRONLY | os.O_NONBLOCK, dir_fd=dirfd)
    print("opened")
except OSError as e:
    print(e.errno)
"""


def open_as_other_uid(dirfd, name):
    r = subprocess.run([PY, "-c", OPEN_AS_OTHER, str(dirfd), name], pass_fds=[dirfd],
                       user=OTHER_UID, group=OTHER_UID, extra_groups=[],
                       capture_output=True, text=True, timeout=STEP_S)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_fifo_permissions_are_enforced_for_another_uid(mount):
    """The mode is not only shown but enforced (default_permissions): a uid without write
    permission gets EACCES; with it, the kernel FIFO rule (no reader: ENXIO) applies. The
    other uid opens relative to pipes/ (a directory fd), so the test's own 0700 temporary
    directories are not in its way."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a process as another uid")
    open_fifo = pipes(mount) / "open"
    closed_fifo = pipes(mount) / "closed"
    old = os.umask(0)
    try:
        os.mkfifo(open_fifo, 0o666)
        os.mkfifo(closed_fifo, 0o600)
    finally:
        os.umask(old)
    dirfd = os.open(pipes(mount), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert open_as_other_uid(dirfd, "open") == str(errno.ENXIO)
        assert open_as_other_uid(dirfd, "closed") == str(errno.EACCES)
        os.chmod(closed_fifo, 0o622)
        assert open_as_other_uid(dirfd, "closed") == str(errno.ENXIO)
    finally:
        os.close(dirfd)

