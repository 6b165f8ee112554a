"""Shared-memory segments in shm/: create, size, read/write, MAP_SHARED between processes,
lifetime (contents outlive every close, unlink while mapped), rename, size limits
(per-segment EFBIG, global max_bytes ENOSPC), flock and fcntl locks, and a counter
incremented by 4 processes under a sem/ semaphore and under a process-shared pthread mutex.

Contract: spec/interface.md, "Shared memory and semaphores" and "Everywhere". Processes
synchronise through pipes and the shared mapping itself, never through sleeps; every
blocking step has a deadline."""
import errno
import fcntl
import hashlib
import json
import mmap
import os
import select
import stat
import struct
import subprocess
import sys
import textwrap

import pytest

from conftest import wait_until
from ipcfs_helpers import expect_errno, read_status, reap

PY = sys.executable
STEP_S = 5.0         # one step that should take milliseconds
CHILD_S = 30.0       # a child doing real work (the counter runs, the 256 MiB writer)
CHILD_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
NOBODY = 65534
MiB = 1 << 20
GiB = 1 << 30


# ---------------------------------------------------------------- helpers

def spawn(code, *args):
    """Starts a python child running code (dedented) with args in sys.argv[1:]; its stdin
    and stdout are line pipes for handshakes."""
    return subprocess.Popen([PY, "-c", textwrap.dedent(code), *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)


def expect_line(proc, timeout=STEP_S):
    """Next line the child prints, within timeout."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"child printed nothing within {timeout}s")
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=STEP_S)
        pytest.fail(f"child exited with {proc.returncode}: {proc.stderr.read()}")
    return line.rstrip("\n")


def tell(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def finish(proc, timeout=STEP_S):
    """Closes the child's stdin and requires a clean exit within timeout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        reap(proc)
        pytest.fail(f"child did not exit within {timeout}s")
    assert proc.returncode == 0, err
    return out


def status(mount):
    return read_status(mount.path)


def create_segment(path, size, mode=0o600):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    os.ftruncate(fd, size)
    return fd


# A child that maps an existing segment and then obeys commands on stdin:
#   peek OFF LEN         prints the bytes at OFF (hex) as seen through its mapping
#   poke OFF HEX         stores bytes at OFF through its mapping, prints "ok"
#   wait OFF HEX         polls its mapping (5 s deadline) until the bytes appear, prints "seen"
MAPPER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, int(sys.argv[2]), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
print("mapped", flush=True)
for line in sys.stdin:
    cmd, *a = line.split()
    if cmd == "peek":
        off, n = int(a[0]), int(a[1])
        print(m[off:off + n].hex(), flush=True)
    elif cmd == "poke":
        off, data = int(a[0]), bytes.fromhex(a[1])
        m[off:off + len(data)] = data
        print("ok", flush=True)
    elif cmd == "wait":
        off, data = int(a[0]), bytes.fromhex(a[1])
        deadline = time.monotonic() + 5
        while m[off:off + len(data)] != data and time.monotonic() < deadline:
            pass
        print("seen" if m[off:off + len(data)] == data else "timeout", flush=True)
m.close()
os.close(fd)
"""


def mapper(path, size):
    proc = spawn(MAPPER, path, size)
    assert expect_line(proc) == "mapped"
    return proc


def ask(proc, line):
    tell(proc, line)
    return expect_line(proc)


# ---------------------------------------------------------------- files

def test_create_keeps_mode_and_owner_and_ftruncate_sets_size(mount):
    before = int(status(mount)["shm_segments"])
    fd = os.open(mount / "shm" / "seg", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o640 & ~_umask()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        assert st.st_size == 0
        os.ftruncate(fd, 12345)
        assert os.fstat(fd).st_size == 12345
        assert os.stat(mount / "shm" / "seg").st_size == 12345
        assert os.pread(fd, 20000, 0) == bytes(12345)
        os.ftruncate(fd, 100)
        assert os.stat(mount / "shm" / "seg").st_size == 100
    finally:
        os.close(fd)
    assert os.listdir(mount / "shm") == ["seg"]
    assert int(status(mount)["shm_segments"]) == before + 1
    expect_errno(errno.EEXIST, os.open, mount / "shm" / "seg",
                 os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(mount / "shm" / "seg")
    assert os.listdir(mount / "shm") == []
    assert int(status(mount)["shm_segments"]) == before


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_read_write_pread_pwrite_and_cat(mount):
    path = mount / "shm" / "text"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, b"hello ") == 6
        assert os.write(fd, b"world\n") == 6
        assert os.pread(fd, 100, 0) == b"hello world\n"
        assert os.pwrite(fd, b"W", 6) == 1
        assert os.pread(fd, 5, 6) == b"World"
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, 100) == b"hello World\n"
        assert os.fstat(fd).st_size == 12
    finally:
        os.close(fd)
    out = subprocess.run(["cat", str(path)], capture_output=True, timeout=STEP_S, check=True)
    assert out.stdout == b"hello World\n"
    subprocess.run(["sh", "-c", f"echo appended >> '{path}'"], timeout=STEP_S, check=True)
    assert path.read_bytes() == b"hello World\nappended\n"
    subprocess.run(["sh", "-c", f"echo replaced > '{path}'"], timeout=STEP_S, check=True)
    assert path.read_bytes() == b"replaced\n"


def test_non_root_user_gets_the_modes_of_shm_files(mount):
    fd = create_segment(mount / "shm" / "private", 64, mode=0o600)
    os.close(fd)
    code = textwrap.dedent("""
        import errno, json, os
        r = {}
        def attempt(label, fn, *a):
            try:
                fn(*a); r[label] = "ok"
            except OSError as e:
                r[label] = errno.errorcode[e.errno]
        attempt("open_private", os.open, "shm/private", os.O_RDONLY)
        attempt("unlink_private", os.unlink, "shm/private")
        fd = os.open("shm/mine", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, 10)
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
    assert r["open_private"] == "EACCES"
    assert r["unlink_private"] == "EPERM"  # sticky shm/: only owners remove theirs
    assert r["mine_owner"] == [NOBODY, NOBODY]
    assert sorted(os.listdir(mount / "shm")) == ["mine", "private"]
    assert os.stat(mount / "shm" / "private").st_size == 64


# ---------------------------------------------------------------- MAP_SHARED

def test_stores_through_map_shared_are_visible_both_ways_between_two_processes(mount):
    path = mount / "shm" / "shared"
    fd = create_segment(path, 8192)
    m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    child = mapper(path, 8192)
    try:
        # parent -> child, no msync, no write(): plain stores
        m[0:11] = b"from parent"
        m[5000:5004] = b"\x01\x02\x03\x04"
        assert ask(child, f"wait 0 {b'from parent'.hex()}") == "seen"
        assert ask(child, "peek 5000 4") == "01020304"
        # child -> parent
        assert ask(child, f"poke 100 {b'from child'.hex()}") == "ok"
        assert m[100:110] == b"from child"
        assert ask(child, f"poke 8191 {b'Z'.hex()}") == "ok"
        assert m[8191:8192] == b"Z"
        # a store by the parent over the child's bytes, seen again by the child
        m[100:110] = b"overwrite!"
        assert ask(child, "peek 100 10") == b"overwrite!".hex()
        # read() through the file sees the stores of both mappers
        assert os.pread(fd, 11, 0) == b"from parent"
        assert os.pread(fd, 10, 100) == b"overwrite!"
        # and a pwrite() is seen in both mappings
        os.pwrite(fd, b"via pwrite", 200)
        assert m[200:210] == b"via pwrite"
        assert ask(child, "peek 200 10") == b"via pwrite".hex()
        finish(child)
    finally:
        reap(child)
        m.close()
        os.close(fd)


def test_contents_survive_all_closes(mount):
    path = mount / "shm" / "lasting"
    writer = spawn("""
        import mmap, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, 3 * 4096)
        m = mmap.mmap(fd, 3 * 4096)
        m[0:12] = b"mapped store"
        m[2 * 4096:2 * 4096 + 9] = b"last page"
        m.close()
        os.pwrite(fd, b"written", 4096)
        os.close(fd)
    """, path)
    finish(writer)
    # nobody has it open any more (the daemon has seen every release)
    wait_until(lambda: status(mount)["open_files"] == "0", timeout=STEP_S,
               what="open_files: 0 in the root .status")
    assert os.stat(path).st_size == 3 * 4096
    assert os.listdir(mount / "shm") == ["lasting"]
    fd = os.open(path, os.O_RDONLY)
    try:
        # drop this file's cached pages, so the bytes come from the daemon
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        data = os.pread(fd, 3 * 4096 + 1, 0)
    finally:
        os.close(fd)
    expected = bytearray(3 * 4096)
    expected[0:12] = b"mapped store"
    expected[4096:4096 + 7] = b"written"
    expected[2 * 4096:2 * 4096 + 9] = b"last page"
    assert data == bytes(expected)
    # another process, later, maps it and sees the same bytes
    reader = mapper(path, 3 * 4096)
    try:
        assert ask(reader, "peek 0 12") == b"mapped store".hex()
        assert ask(reader, "peek 8192 9") == b"last page".hex()
        finish(reader)
    finally:
        reap(reader)


def test_unlink_while_mapped_keeps_the_mappings_and_descriptors_working(mount):
    path = mount / "shm" / "doomed"
    baseline = int(status(mount)["bytes_held"])
    fd = create_segment(path, 4096)
    m = mmap.mmap(fd, 4096)
    child = mapper(path, 4096)
    try:
        m[0:6] = b"before"
        os.unlink(path)
        assert os.listdir(mount / "shm") == []
        expect_errno(errno.ENOENT, os.stat, path)
        expect_errno(errno.ENOENT, os.open, path, os.O_RDWR)
        # both mappings still share the pages, both ways
        assert ask(child, "peek 0 6") == b"before".hex()
        m[10:15] = b"after"
        assert ask(child, f"wait 10 {b'after'.hex()}") == "seen"
        assert ask(child, f"poke 20 {b'child'.hex()}") == "ok"
        assert m[20:25] == b"child"
        # the descriptor still reads and writes the same segment
        assert os.pread(fd, 25, 0) == b"before\0\0\0\0after\0\0\0\0\0child"
        os.pwrite(fd, b"fd-write", 100)
        assert ask(child, "peek 100 8") == b"fd-write".hex()
        assert os.fstat(fd).st_size == 4096
        # the name is free: a new segment of that name is a different, empty one
        fd2 = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            assert os.fstat(fd2).st_size == 0
            os.ftruncate(fd2, 4096)
            assert os.pread(fd2, 25, 0) == bytes(25)
            os.pwrite(fd2, b"new", 0)
            assert m[0:6] == b"before"
            assert ask(child, "peek 0 6") == b"before".hex()
        finally:
            os.close(fd2)
        finish(child)
    finally:
        reap(child)
        m.close()
        os.close(fd)
    os.unlink(path)
    # once the last holder is gone the unlinked segment's memory is given back
    wait_until(lambda: int(status(mount)["bytes_held"]) == baseline, timeout=STEP_S,
               what=f"bytes_held back to {baseline} after the last close")


def test_256_mib_written_through_mmap_is_read_back_byte_exact_by_another_process(mount):
    path = mount / "shm" / "big"
    size, chunk = 256 * MiB, MiB
    # Every 8-byte word holds its own index, so a misplaced page cannot go unnoticed.
    writer = spawn("""
        import array, hashlib, mmap, os, sys
        size, chunk = int(sys.argv[2]), int(sys.argv[3])
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, size)
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        h = hashlib.sha256()
        words = chunk // 8
        for i in range(size // chunk):
            data = array.array("Q", range(i * words, (i + 1) * words)).tobytes()
            m[i * chunk:(i + 1) * chunk] = data
            h.update(data)
        m.close()  # munmap
        print(h.hexdigest(), flush=True)
        sys.stdin.readline()  # keep the descriptor open until the reader is done
        os.close(fd)
    """, path, size, chunk)
    try:
        written_hash = expect_line(writer, timeout=CHILD_S)
        assert os.stat(path).st_size == size
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            h = hashlib.sha256()
            total, first, last = 0, None, None
            while True:
                data = os.read(fd, chunk)
                if not data:
                    break
                if first is None:
                    first = data[:16]
                last = data[-8:]
                h.update(data)
                total += len(data)
        finally:
            os.close(fd)
        assert total == size
        assert first == struct.pack("<QQ", 0, 1)
        assert last == struct.pack("<Q", size // 8 - 1)
        assert h.hexdigest() == written_hash
        assert int(status(mount)["bytes_held"]) >= size
        finish(writer)
    finally:
        reap(writer)


# ---------------------------------------------------------------- rename

def test_rename_within_shm_keeps_contents_and_mappings_and_refuses_existing_names(mount):
    a, b, c = (mount / "shm" / n for n in ("a", "b", "c"))
    fd = create_segment(a, 4096)
    m = mmap.mmap(fd, 4096)
    try:
        m[0:5] = b"alpha"
        os.rename(a, b)
        assert sorted(os.listdir(mount / "shm")) == ["b"]
        expect_errno(errno.ENOENT, os.stat, a)
        assert b.read_bytes()[:5] == b"alpha"
        m[5:10] = b"-beta"  # the mapping made under the old name still works
        assert b.read_bytes()[:10] == b"alpha-beta"
        c.write_bytes(b"gamma")
        expect_errno(errno.EEXIST, os.rename, b, c)
        assert sorted(os.listdir(mount / "shm")) == ["b", "c"]
        assert c.read_bytes() == b"gamma"
        assert b.read_bytes()[:10] == b"alpha-beta"
    finally:
        m.close()
        os.close(fd)


# ---------------------------------------------------------------- limits

def test_per_segment_maximum_is_1_gib_then_efbig(mount):
    path = mount / "shm" / "huge"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        expect_errno(errno.EFBIG, os.ftruncate, fd, GiB + 1)
        assert os.fstat(fd).st_size == 0
        expect_errno(errno.EFBIG, os.pwrite, fd, b"x", GiB)
        assert os.fstat(fd).st_size == 0
        os.ftruncate(fd, GiB)  # the maximum itself is allowed
        assert os.fstat(fd).st_size == GiB
        # a write crossing the maximum writes what fits, like write(2) at RLIMIT_FSIZE
        assert os.pwrite(fd, b"xy", GiB - 1) == 1
        assert os.fstat(fd).st_size == GiB
        expect_errno(errno.EFBIG, os.pwrite, fd, b"y", GiB)
        expect_errno(errno.EFBIG, os.ftruncate, fd, GiB + 4096)
        assert os.fstat(fd).st_size == GiB
        assert os.pread(fd, 2, GiB - 1) == b"x"
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    assert os.stat(path).st_size == 0


def test_global_max_bytes_makes_shm_growth_fail_with_enospc(make_mount):
    mnt = make_mount(options=["max_bytes=1048576"])
    p1, p2 = mnt / "shm" / "one", mnt / "shm" / "two"
    fd1 = os.open(p1, os.O_RDWR | os.O_CREAT, 0o600)
    fd2 = os.open(p2, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        expect_errno(errno.ENOSPC, os.ftruncate, fd1, 2 * MiB)
        assert os.fstat(fd1).st_size == 0
        os.ftruncate(fd1, 768 * 1024)
        expect_errno(errno.ENOSPC, os.ftruncate, fd2, 512 * 1024)
        assert os.fstat(fd2).st_size == 0
        assert os.pwrite(fd2, b"a" * (200 * 1024), 0) == 200 * 1024
        expect_errno(errno.ENOSPC, os.pwrite, fd2, b"b" * (100 * 1024), 200 * 1024)
        assert os.fstat(fd2).st_size == 200 * 1024
        assert os.pread(fd2, 300 * 1024, 0) == b"a" * (200 * 1024)
        # freeing one segment makes room for the other
        os.close(fd1)
        fd1 = -1
        os.unlink(p1)
        wait_until(lambda: int(read_status(mnt.path)["bytes_held"]) <= 200 * 1024,
                   timeout=STEP_S, what="bytes_held to drop after rm")
        os.ftruncate(fd2, 512 * 1024)
        assert os.fstat(fd2).st_size == 512 * 1024
        assert os.pread(fd2, 4, 0) == b"aaaa"
    finally:
        if fd1 >= 0:
            os.close(fd1)
        os.close(fd2)


# ---------------------------------------------------------------- locks

LOCK_HOLDER = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
kind = sys.argv[2]
if kind == "flock":
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)  # bytes 0..99
print("locked", flush=True)
sys.stdin.readline()
if kind == "flock":
    fcntl.flock(fd, fcntl.LOCK_UN)
else:
    fcntl.lockf(fd, fcntl.LOCK_UN, 100, 0)
print("unlocked", flush=True)
sys.stdin.readline()
os.close(fd)
"""


def test_flock_between_two_processes(mount):
    path = mount / "shm" / "flocked"
    os.close(create_segment(path, 4096))
    holder = spawn(LOCK_HOLDER, path, "flock")
    fd = os.open(path, os.O_RDWR)
    try:
        assert expect_line(holder) == "locked"
        with pytest.raises(OSError) as e:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert e.value.errno == errno.EWOULDBLOCK
        with pytest.raises(OSError) as e:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert e.value.errno == errno.EWOULDBLOCK
        tell(holder, "unlock")
        assert expect_line(holder) == "unlocked"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        finish(holder)
    finally:
        reap(holder)
        os.close(fd)


def test_fcntl_record_locks_between_two_processes(mount):
    path = mount / "shm" / "recs"
    os.close(create_segment(path, 4096))
    holder = spawn(LOCK_HOLDER, path, "fcntl")
    fd = os.open(path, os.O_RDWR)
    try:
        assert expect_line(holder) == "locked"
        with pytest.raises(OSError) as e:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        # F_GETLK names the holder
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        got = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe + b"\0" * 8)[:28])
        assert got[0] == fcntl.F_WRLCK and got[4] == holder.pid
        # bytes outside the held range are free
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 200)
        fcntl.lockf(fd, fcntl.LOCK_UN, 100, 200)
        tell(holder, "unlock")
        assert expect_line(holder) == "unlocked"
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
        fcntl.lockf(fd, fcntl.LOCK_UN, 10, 50)
        finish(holder)
    finally:
        reap(holder)
        os.close(fd)


# ---------------------------------------------------------------- 4 x 10,000 increments

PROCS, INCREMENTS = 4, 10_000

SEM_INCREMENTER = """
import mmap, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 8)
sem = os.open(sys.argv[2], os.O_RDWR)
n = int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for _ in range(n):
    got = os.pread(sem, 16, 0)           # P: wait and decrement
    if not got.endswith(b"\\n"):
        sys.exit(f"wait returned {got!r}")
    v = struct.unpack_from("<Q", m, 0)[0]
    struct.pack_into("<Q", m, 0, v + 1)  # a non-atomic read-modify-write
    if os.write(sem, b"1") != 1:         # V
        sys.exit("post failed")
m.close()
os.close(sem)
os.close(fd)
"""


def run_all(procs, timeout):
    """Lets every child (all printed "ready") go at once and requires clean exits."""
    for p in procs:
        assert expect_line(p) == "ready"
    for p in procs:
        tell(p, "go")
    for p in procs:
        finish(p, timeout=timeout)


def test_counter_incremented_by_4_processes_under_a_sem_semaphore_is_exact(mount):
    counter, lock = mount / "shm" / "counter", mount / "sem" / "lock"
    os.close(create_segment(counter, 8))
    sfd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(sfd, b"1")
    procs = [spawn(SEM_INCREMENTER, counter, lock, INCREMENTS) for _ in range(PROCS)]
    try:
        run_all(procs, timeout=CHILD_S)
    finally:
        reap(*procs)
        os.close(sfd)
    data = counter.read_bytes()
    assert struct.unpack("<Q", data)[0] == PROCS * INCREMENTS
    assert os.getxattr(lock, "user.ipc.value").strip() == b"1"


C_HELPER = r"""
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct shared {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    volatile unsigned long counter;
    volatile int turn;
};

static void die(const char *what, int err) {
    fprintf(stderr, "%s: %s\n", what, strerror(err));
    exit(2);
}

static struct shared *map_it(const char *path, int create) {
    int fd = open(path, O_RDWR | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0) die("open", errno);
    if (create && ftruncate(fd, sizeof(struct shared)) != 0) die("ftruncate", errno);
    void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap", errno);
    close(fd);
    return p;
}

static void ready_and_wait_for_go(void) {
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) exit(3);
}

int main(int argc, char **argv) {
    if (argc < 3) return 1;
    const char *mode = argv[1], *path = argv[2];
    if (!strcmp(mode, "init")) {
        struct shared *s = map_it(path, 1);
        pthread_mutexattr_t ma;
        pthread_condattr_t ca;
        pthread_mutexattr_init(&ma);
        int err = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        if (err) die("mutexattr_setpshared", err);
        if ((err = pthread_mutex_init(&s->mutex, &ma))) die("mutex_init", err);
        pthread_condattr_init(&ca);
        if ((err = pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED))) die("condattr", err);
        if ((err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC))) die("setclock", err);
        if ((err = pthread_cond_init(&s->cond, &ca))) die("cond_init", err);
        s->counter = 0;
        s->turn = 0;
        return munmap(s, sizeof *s) == 0 ? 0 : 4;
    }
    struct shared *s = map_it(path, 0);
    if (!strcmp(mode, "inc") && argc == 4) {
        long n = atol(argv[3]);
        ready_and_wait_for_go();
        for (long i = 0; i < n; i++) {
            int err = pthread_mutex_lock(&s->mutex);
            if (err) die("lock", err);
            unsigned long v = s->counter;  /* a non-atomic read-modify-write */
            s->counter = v + 1;
            if ((err = pthread_mutex_unlock(&s->mutex))) die("unlock", err);
        }
        return 0;
    }
    if (!strcmp(mode, "pingpong") && argc == 5) {
        /* two processes take strict turns (me = 0 or 1), waiting on a shared condition
           variable with a 10 s deadline per turn */
        int me = atoi(argv[3]);
        long n = atol(argv[4]);
        ready_and_wait_for_go();
        for (long i = 0; i < n; i++) {
            pthread_mutex_lock(&s->mutex);
            while (s->turn != me) {
                struct timespec t;
                clock_gettime(CLOCK_MONOTONIC, &t);
                t.tv_sec += 10;
                int err = pthread_cond_timedwait(&s->cond, &s->mutex, &t);
                if (err == ETIMEDOUT) die("cond_timedwait", err);
            }
            s->counter++;
            s->turn = 1 - me;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->mutex);
        }
        return 0;
    }
    if (!strcmp(mode, "read")) {
        printf("%lu %d\n", s->counter, s->turn);
        return 0;
    }
    return 1;
}
"""


@pytest.fixture(scope="module")
def c_helper(tmp_path_factory):
    d = tmp_path_factory.mktemp("c_helper")
    src, exe = d / "pshared.c", d / "pshared"
    src.write_text(C_HELPER)
    proc = subprocess.run(["cc", "-O2", "-pthread", "-Wall", "-o", str(exe), str(src)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return exe


def spawn_c(exe, *args):
    return subprocess.Popen([str(exe), *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1)


def c_read(exe, path):
    out = subprocess.run([str(exe), "read", str(path)], capture_output=True, text=True,
                         timeout=STEP_S, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_counter_incremented_by_4_processes_under_a_process_shared_mutex_is_exact(
        mount, c_helper):
    path = mount / "shm" / "mutexed"
    subprocess.run([str(c_helper), "init", str(path)], timeout=STEP_S, check=True)
    procs = [spawn_c(c_helper, "inc", path, INCREMENTS) for _ in range(PROCS)]
    try:
        run_all(procs, timeout=CHILD_S)
    finally:
        reap(*procs)
    assert c_read(c_helper, path) == (PROCS * INCREMENTS, 0)


def test_process_shared_condition_variable_in_a_mapping_alternates_two_processes(
        mount, c_helper):
    path = mount / "shm" / "condvar"
    subprocess.run([str(c_helper), "init", str(path)], timeout=STEP_S, check=True)
    turns = 2000
    procs = [spawn_c(c_helper, "pingpong", path, me, turns) for me in (0, 1)]
    try:
        run_all(procs, timeout=CHILD_S)
    finally:
        reap(*procs)
    assert c_read(c_helper, path) == (2 * turns, 0)
