"""Permissions across users (issue #10): every object kind and operation against three
actors, root, the object's owner and another uid, under a few modes, asserting that the
operation is allowed or fails with the errno Linux gives (EACCES for missing mode bits;
EPERM for chmod by a non-owner, chown by a non-root user, and removing or renaming another
user's object in a sticky 1777 directory), and that a refused operation changes nothing.
Also: creation honours umask and the creator's uid/gid (and a set-group-ID directory's
group), a 0700 mailbox is closed to other uids, control nodes follow their
mailbox's mode and owner at once, procs/ privacy holds on a root mount and on a non-root
one, and a non-root mount asked for allow_other alone still checks modes and owners
(ipcfs always adds default_permissions).

Contract: spec/interface.md, "Everywhere" (permissions) and each object kind's section.
Every actor is a helper process that starts as root, enters the mount and drops to its
uid:gid (setgroups([]), setresgid, setresuid) before acting. The matrix shares one mount
and one actor per uid (module scope); every cell makes its own objects under its own
names, so cells do not depend on each other. Operations in the actors never block (the
blocking kinds are opened with O_NONBLOCK) and every request to an actor has a deadline."""
import errno
import os
import shutil
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import IPCFS_BIN, MOUNT_DEADLINE_S, Mount, check_clean_exit, is_mounted
from ipcfs_helpers import (PY, STEP_S, Agent, queued, receive_nowait, send, status_text,
                           wait_field)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as other uids needs root")

OK = "ok"
ROOT, OWNER, OTHER = "root", "owner", "other"
SAME_UID = "same_uid"  # another process of OWNER's uid (procs/: not the inbox's process)
ACTORS = (ROOT, OWNER, OTHER)
# uid, gid: none of them needs to exist in /etc/passwd; uids and gids differ, so a daemon
# that mixed them up would show.
IDS = {ROOT: (0, 0), OWNER: (2001, 3001), OTHER: (2002, 3002), SAME_UID: (2001, 3001)}
PAYLOAD = b"queued-payload"
SHM_DATA = b"shm-original-16b"
FRAME = (5).to_bytes(4, "little") + b"frame"


# ---------------------------------------------------------------- actors

# Runs requests sent as JSON lines; answers {"ok": value} or {"errno": n}. Bytes travel as hex.
ACTOR = r"""
import json, mmap, os, sys
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.chdir(sys.argv[3])  # entered as root: the test's private temp dirs need not be searchable
os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)

def reply(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def drain(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)

def step(fd, what, *a):
    if what == "write":
        return os.write(fd, bytes.fromhex(a[0]))
    if what == "read":
        return os.read(fd, a[0]).hex()
    if what == "pread":
        return os.pread(fd, a[0], a[1]).hex()
    if what == "drain":
        return drain(fd).hex()
    if what == "map":  # MAP_SHARED of a[0] bytes; with data a[1], PROT_WRITE too and a store
        data = bytes.fromhex(a[1]) if a[1] else b""
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if data else 0)
        m = mmap.mmap(fd, a[0], mmap.MAP_SHARED, prot)
        try:
            if data:
                m[:len(data)] = data
            return m[:].hex()
        finally:
            m.close()
    raise ValueError(what)

def io(path, flags, mode, steps):
    fd = os.open(path, flags, mode)
    try:
        return [step(fd, *s) for s in steps]
    finally:
        os.close(fd)

def call(fn, args):
    args = [bytes.fromhex(a["hex"]) if isinstance(a, dict) else tuple(a) if isinstance(a, list)
            else a for a in args]
    value = getattr(os, fn)(*args)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, os.stat_result):
        return [value.st_mode, value.st_uid, value.st_gid]
    return value

reply(pid=os.getpid(), ids=[os.getresuid(), os.getresgid(), os.getgroups()])
for line in sys.stdin:
    cmd = json.loads(line)
    old = os.umask(cmd["umask"])
    try:
        if cmd["op"] == "io":
            reply(ok=io(cmd["path"], cmd["flags"], cmd["mode"], cmd["steps"]))
        else:
            reply(ok=call(cmd["fn"], cmd["args"]))
    except OSError as e:
        reply(errno=e.errno)
    except Exception as e:  # a bad request: the test fails, the actor stays
        reply(error=repr(e))
    finally:
        os.umask(old)
"""


@dataclass
class Outcome:
    status: str        # OK or the errno's name
    value: Any = None  # what the operation returned
    seen: Any = None   # what root observed afterwards (pipe cells)


def _hex(x):
    return x.hex() if isinstance(x, bytes) else x


class Actor(Agent):
    """A helper process acting as the uid:gid of role (no supplementary groups), with the
    mount's root as its working directory: paths are relative to it. Reuses Agent's
    request/reply with a deadline and its kill."""

    def __init__(self, role, cwd):
        self.role = role
        self.uid, self.gid = IDS[role]
        argv = [PY, "-I", "-c", ACTOR, str(self.uid), str(self.gid), str(cwd)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""
        hello = self.reply()
        self.pid = hello["pid"]
        assert hello["ids"] == [[self.uid] * 3, [self.gid] * 3, []]

    def _attempt(self, **cmd):
        r = self.call(umask=cmd.pop("umask", 0), **cmd)
        assert "error" not in r, f"{self.role}: {cmd}: {r['error']}"
        if "errno" in r:
            return Outcome(errno.errorcode[r["errno"]])
        return Outcome(OK, r["ok"])

    def io(self, path, flags, *steps, mode=0o666, umask=0):
        """open(path, flags, mode) under umask, the steps on the descriptor, close."""
        return self._attempt(op="io", path=str(path), flags=flags, mode=mode, umask=umask,
                             steps=[[_hex(x) for x in s] for s in steps])

    def os(self, fn, *args, umask=0):
        """os.<fn>(*args) under umask (umask 0 unless given: modes are exactly as asked)."""
        return self._attempt(op="call", fn=fn, umask=umask,
                             args=[{"hex": a.hex()} if isinstance(a, bytes) else a for a in args])


def start_actors(cwd):
    actors = {}
    try:
        for role in (*ACTORS, SAME_UID):
            actors[role] = Actor(role, cwd)
    except BaseException:
        stop_actors(actors)
        raise
    return actors


def stop_actors(actors):
    for a in actors.values():
        a.kill()


@dataclass
class World:
    """A mount and one actor per role, shared by the cells of the module."""
    mount: Mount
    actors: dict

    def __truediv__(self, rel):
        return self.mount.path / rel


@contextmanager
def serving(m):
    """A World on mount m; then the actors are killed and the mount is stopped, and must
    have exited cleanly."""
    actors = {}
    try:
        actors = start_actors(m.path)
        yield World(m, actors)
    finally:
        stop_actors(actors)
        m.stop()
    check_clean_exit(m)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The kernel checks modes against the attributes the daemon reports."""
    with serving(Mount(tmp_path_factory.mktemp("perm"),
                       options=("allow_other", "default_permissions"))) as w:
        yield w


class UserMount(Mount):
    """ipcfs run as a non-root uid and asked for allow_other alone: it adds
    default_permissions itself, so the kernel checks modes here too. fusermount3 refuses allow_other to users
    unless /etc/fuse.conf says user_allow_other, so the daemon gets CAP_SYS_ADMIN as an
    ambient capability (setpriv) and mounts with mount(2); the mountpoint is a fresh
    directory of its own under the system's temp dir, where that uid can resolve it."""

    def __init__(self, tmp_path, uid, gid):
        self.mountpoint_dir = tempfile.mkdtemp(prefix="ipcfs-perm-")
        os.chown(self.mountpoint_dir, uid, gid)
        self.path = Path(self.mountpoint_dir)
        self.log_path = tmp_path / "ipcfs.log"
        self.argv = [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                     "--inh-caps=+sys_admin", "--ambient-caps=+sys_admin", "--",
                     IPCFS_BIN, "-f", "-o", "allow_other", "--log-level", "warn", str(self.path)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        self.returncode = None
        deadline = time.monotonic() + MOUNT_DEADLINE_S
        while not is_mounted(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.skip(f"cannot mount ipcfs as uid {uid} with mount(2): {self.log()}")
            time.sleep(0.01)

    def stop(self, timeout=10.0):
        try:
            return super().stop(timeout)
        finally:
            if not is_mounted(self.path):
                os.rmdir(self.mountpoint_dir)


@pytest.fixture(scope="module")
def user_world(tmp_path_factory):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to mount as a non-root uid")
    with serving(UserMount(tmp_path_factory.mktemp("perm-user"), *IDS[OWNER])) as w:
        with open("/proc/self/mountinfo") as f:
            opts = next(line for line in f if line.split()[4] == str(w.mount.path))
        assert "default_permissions" in opts and "allow_other" in opts, opts
        yield w


# ---------------------------------------------------------------- root's view

def attrs(path):
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def listing(path):
    return sorted(os.listdir(path))


def nb_read(fd):
    """What is buffered for fd, without blocking: b"" when nothing is (EAGAIN) or at EOF."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def quiet_status(w):
    """The root .status once every file closed so far has been released (the kernel's
    release follows close() asynchronously)."""
    wait_field(w.mount.path, "open_files", 0)
    return status_text(w.mount.path)


def assert_status_back(w, before):
    """The root .status equals the snapshot again, once releases in flight have landed."""
    deadline = time.monotonic() + STEP_S
    while status_text(w.mount.path) != before and time.monotonic() < deadline:
        time.sleep(0.005)
    assert status_text(w.mount.path) == before


# ---------------------------------------------------------------- Linux's rules

def may(actor, mode, need):
    """Linux's mode check of actor against an object of OWNER's with this mode (the actors
    share no group); root passes every check these objects need."""
    if actor == ROOT:
        return True
    bits = (mode >> 6) & 7 if actor == OWNER else mode & 7
    return all(bits & {"r": 4, "w": 2, "x": 1}[c] for c in need)


def needs(need):
    return lambda actor, mode: OK if may(actor, mode, need) else "EACCES"


def removes(actor, mode):
    """unlink or rename of OWNER's object inside a directory of OWNER's with this mode:
    write and search permission, and if the directory is sticky, only owners and root."""
    if not may(actor, mode, "wx"):
        return "EACCES"
    return "EPERM" if mode & stat.S_ISVTX and actor == OTHER else OK


def sets_user_xattr(actor, mode):
    """A user.* xattr on a directory: write permission; on a sticky one, only its owner
    and root (the kernel's xattr_permission)."""
    if mode & stat.S_ISVTX and actor == OTHER:
        return "EPERM"
    return needs("w")(actor, mode)


def touches(actor, mode):
    """Setting the times to now: the owner, root, or whoever may write."""
    return OK if actor != OTHER else needs("w")(actor, mode)


def owner_or_root(actor, mode):
    """chmod, setting explicit times; unlink, rmdir and rename in a sticky directory of
    root's."""
    return "EPERM" if actor == OTHER else OK


def root_only(actor, mode):
    """chown to another uid, chgrp to a group the actor is not in."""
    return OK if actor == ROOT else "EPERM"


def inside(rule):
    """For an object inside a directory of OWNER's with this mode: looking it up needs
    x on the directory first."""
    return lambda actor, mode: rule(actor, mode) if may(actor, mode, "x") else "EACCES"


def always(code):
    return lambda actor, mode: code


# ---------------------------------------------------------------- the matrix

@dataclass
class Op:
    name: str
    expect: Callable  # (actor, mode) -> OK or errno name
    act: Callable     # (world, obj, actor) -> Outcome; obj is the object's path in the mount
    done: Callable    # (world, obj, outcome): asserts the effect of an allowed operation
    hold: Callable = lambda w, obj: nullcontext()  # what root holds open meanwhile
    seen_if_refused: Any = None  # Outcome.seen expected when refused (pipe cells)


@dataclass
class Kind:
    name: str
    modes: tuple
    make: Callable   # (world, name, mode, op) -> obj, made by OWNER
    state: Callable  # (world, obj) -> what a refused operation must leave as it was
    ops: list


def rel(w, obj):
    return obj.relative_to(w.mount.path)


def actor_io(flags, *steps):
    """The actor opens the cell's object with flags, takes the steps, closes."""
    return lambda w, obj, a: w.actors[a].io(rel(w, obj), flags, *steps)


def actor_os(fn, *args):
    """The actor calls os.<fn>(the cell's object, *args)."""
    return lambda w, obj, a: w.actors[a].os(fn, str(rel(w, obj)), *args)


def actor_io_in(node, flags, *steps):
    """The same with node inside the cell's object (a mailbox's control node)."""
    return lambda w, obj, a: w.actors[a].io(rel(w, obj) / node, flags, *steps)


def do_chmod(new):
    return Op("chmod", owner_or_root,
              actor_os("chmod", new),
              lambda w, obj, r: assert_eq(attrs(obj)[0], new))


def do_chown():
    uid, gid = IDS[OTHER]
    return Op("chown", root_only,
              actor_os("chown", uid, gid),
              lambda w, obj, r: assert_eq(attrs(obj)[1:], (uid, gid)))


def do_chgrp():
    gid = IDS[OTHER][1]
    return Op("chgrp", root_only,
              actor_os("chown", -1, gid),
              lambda w, obj, r: assert_eq(attrs(obj)[1:], (IDS[OWNER][0], gid)))


OLD_NS = 1_000_000_000 * 10**9  # 2001-09-09
NEW_S = 1_500_000_000           # 2017-07-14


def do_times(explicit):
    """utime to now (touch) or to explicit times (touch -d); root first sets OLD_NS, and
    Outcome.seen is the mtime afterwards."""
    def act(w, obj, a):
        os.utime(obj, ns=(OLD_NS, OLD_NS))
        r = w.actors[a].os("utime", str(rel(w, obj)), *([[NEW_S, NEW_S]] if explicit else []))
        r.seen = os.lstat(obj).st_mtime_ns
        return r

    if explicit:
        return Op("set_times", owner_or_root, act,
                  lambda w, obj, r: assert_eq(r.seen, NEW_S * 10**9), seen_if_refused=OLD_NS)
    return Op("touch", touches, act,
              lambda w, obj, r: assert_eq(r.seen > OLD_NS, True), seen_if_refused=OLD_NS)


def do_remove(fn="unlink"):
    return Op("rmdir" if fn == "rmdir" else "rm", owner_or_root,
              actor_os(fn),
              lambda w, obj, r: assert_eq(os.path.lexists(obj), False))


def do_rename():
    return Op("rename", owner_or_root,
              lambda w, obj, a: w.actors[a].os("rename", str(rel(w, obj)),
                                               str(rel(w, obj)) + "-renamed"),
              lambda w, obj, r: assert_eq((os.path.lexists(obj),
                                           os.path.lexists(str(obj) + "-renamed")), (False, True)))


def assert_eq(got, want):
    assert got == want


def common_ops(chmod_to, remove="unlink"):
    """chmod, chown, chgrp, times, removal and rename of an object in a sticky top-level
    directory."""
    return [do_chmod(chmod_to), do_chown(), do_chgrp(), do_times(False), do_times(True),
            do_remove(remove), do_rename()]


# --- mailboxes: the directory in mailboxes/ and its control nodes

def make_mailbox(w, name, mode, op):
    obj = w / "mailboxes" / name
    assert w.actors[OWNER].os("mkdir", f"mailboxes/{name}", mode).status == OK
    if op.name != "rmdir":
        send(obj, PAYLOAD)
    return obj


def mailbox_state(w, obj):
    return (attrs(obj), listing(obj.parent), listing(obj), status_text(obj),
            os.getxattr(obj, "user.ipc.capacity"))


DIR_MODES = (0o700, 0o755, 0o777, 0o1777)
MAILBOX = Kind("mailbox", DIR_MODES, make_mailbox, mailbox_state, [
    Op("list", needs("r"), actor_os("listdir"),
       lambda w, obj, r: assert_eq(r.value, ["0000000001"])),
    Op("status", needs("rx"), actor_io_in(".status", os.O_RDONLY, ("drain",)),
       lambda w, obj, r: assert_eq(bytes.fromhex(r.value[0]).decode(), status_text(obj))),
    Op("send", needs("wx"), actor_io_in(".send", os.O_WRONLY, ("write", b"sent")),
       lambda w, obj, r: assert_eq(queued(obj), 2)),
    Op("receive", needs("rx"), actor_io_in(".receive", os.O_RDONLY | os.O_NONBLOCK, ("drain",)),
       lambda w, obj, r: assert_eq((bytes.fromhex(r.value[0]), queued(obj)), (PAYLOAD, 0))),
    Op("send_lines", needs("wx"), actor_io_in(".send-lines", os.O_WRONLY, ("write", b"l1\nl2\n")),
       lambda w, obj, r: assert_eq(queued(obj), 3)),
    Op("receive_lines", needs("rx"),
       actor_io_in(".receive-lines", os.O_RDONLY | os.O_NONBLOCK, ("read", 4096)),
       lambda w, obj, r: assert_eq((bytes.fromhex(r.value[0]), queued(obj)), (PAYLOAD + b"\n", 0))),
    Op("send_frames", needs("wx"), actor_io_in(".send-frames", os.O_WRONLY, ("write", FRAME)),
       lambda w, obj, r: assert_eq(queued(obj), 2)),
    Op("receive_frames", needs("rx"),
       actor_io_in(".receive-frames", os.O_RDONLY | os.O_NONBLOCK, ("read", 4096)),
       lambda w, obj, r: assert_eq((bytes.fromhex(r.value[0]), queued(obj)),
                                   (len(PAYLOAD).to_bytes(4, "little") + PAYLOAD, 0))),
    Op("get_id", needs("r"), actor_os("getxattr", "user.ipc.id"),
       lambda w, obj, r: assert_eq(bytes.fromhex(r.value), os.getxattr(obj, "user.ipc.id"))),
    Op("drop_in", needs("wx"),
       actor_io_in("note", os.O_WRONLY | os.O_CREAT | os.O_EXCL, ("write", b"note")),
       lambda w, obj, r: assert_eq((queued(obj), (obj / "note").read_bytes()), (2, b"note"))),
    Op("set_capacity", sets_user_xattr, actor_os("setxattr", "user.ipc.capacity", b"5"),
       lambda w, obj, r: assert_eq(os.getxattr(obj, "user.ipc.capacity"), b"5")),
    *common_ops(0o710, remove="rmdir"),
])


# --- message files: queued messages sent by OWNER (mode 0444) in a mailbox of OWNER's
# whose mode is the cell's; forwarding goes to a 0777 mailbox of root's

MESSAGE_MODE = 0o444


def make_message(w, name, mode, op):
    box = w / "mailboxes" / name
    assert w.actors[OWNER].os("mkdir", f"mailboxes/{name}", mode).status == OK
    sent = w.actors[OWNER].io(f"mailboxes/{name}/.send", os.O_WRONLY, ("write", PAYLOAD))
    assert sent.status == OK
    os.mkdir(w / "mailboxes" / f"{name}-to", 0o777)
    os.chmod(w / "mailboxes" / f"{name}-to", 0o777)
    return box / "0000000001"


def message_state(w, obj):
    target = obj.parent.with_name(obj.parent.name + "-to")
    return (attrs(obj), listing(obj.parent), status_text(obj.parent), listing(target),
            status_text(target))


def forward_target(obj):
    return obj.parent.with_name(obj.parent.name + "-to") / obj.name


MESSAGE = Kind("message", DIR_MODES, make_message, message_state, [
    Op("peek", inside(always(OK)), actor_io(os.O_RDONLY, ("drain",)),
       lambda w, obj, r: assert_eq((bytes.fromhex(r.value[0]), queued(obj.parent)), (PAYLOAD, 1))),
    Op("write", always("EACCES"), actor_io(os.O_WRONLY, ("write", b"changed")),
       lambda w, obj, r: pytest.fail("a queued message was opened for writing")),
    Op("rm", removes, actor_os("unlink"),
       lambda w, obj, r: assert_eq((os.path.lexists(obj), queued(obj.parent)), (False, 0))),
    Op("forward", removes,
       lambda w, obj, a: w.actors[a].os("rename", str(rel(w, obj)),
                                        str(rel(w, forward_target(obj)))),
       lambda w, obj, r: assert_eq((queued(obj.parent), forward_target(obj).read_bytes()),
                                   (0, PAYLOAD))),
    Op("chmod", inside(owner_or_root), actor_os("chmod", 0o400),
       lambda w, obj, r: assert_eq(attrs(obj)[0], 0o400)),
    # the rule applies to the message's own mode (0444) once the mailbox lets one reach it
    *[Op(op.name, inside(lambda a, m, rule=op.expect: rule(a, MESSAGE_MODE)), op.act, op.done,
         seen_if_refused=op.seen_if_refused)
      for op in (do_chown(), do_chgrp(), do_times(False), do_times(True))],
])


# --- shm/ segments

def make_segment(w, name, mode, op):
    r = w.actors[OWNER].io(f"shm/{name}", os.O_RDWR | os.O_CREAT | os.O_EXCL, ("write", SHM_DATA),
                           mode=mode)
    assert r.status == OK
    return w / "shm" / name


def segment_state(w, obj):
    return attrs(obj), listing(obj.parent), obj.read_bytes()


SHM = Kind("shm", (0o600, 0o644, 0o666), make_segment, segment_state, [
    Op("read", needs("r"), actor_io(os.O_RDONLY, ("pread", 64, 0)),
       lambda w, obj, r: assert_eq(bytes.fromhex(r.value[0]), SHM_DATA)),
    Op("write", needs("w"), actor_io(os.O_WRONLY, ("write", b"written!")),
       lambda w, obj, r: assert_eq(obj.read_bytes(), b"written!" + SHM_DATA[8:])),
    Op("map_rw", needs("rw"), actor_io(os.O_RDWR, ("map", len(SHM_DATA), b"mapped!!")),
       lambda w, obj, r: assert_eq(obj.read_bytes(), b"mapped!!" + SHM_DATA[8:])),
    Op("map_ro", needs("r"), actor_io(os.O_RDONLY, ("map", len(SHM_DATA), None)),
       lambda w, obj, r: assert_eq(bytes.fromhex(r.value[0]), SHM_DATA)),
    Op("truncate", needs("w"), actor_os("truncate", 4),
       lambda w, obj, r: assert_eq(obj.read_bytes(), SHM_DATA[:4])),
    *common_ops(0o640),
])


# --- sem/ semaphores (value 2 when the cell starts)

def make_semaphore(w, name, mode, op):
    r = w.actors[OWNER].io(f"sem/{name}", os.O_RDWR | os.O_CREAT | os.O_EXCL, ("write", b"2"),
                           mode=mode)
    assert r.status == OK
    return w / "sem" / name


def sem_value(obj):
    return int(os.getxattr(obj, "user.ipc.value"))


def semaphore_state(w, obj):
    return attrs(obj), listing(obj.parent), sem_value(obj)


SEM = Kind("sem", (0o600, 0o644, 0o666), make_semaphore, semaphore_state, [
    Op("wait", needs("r"), actor_io(os.O_RDONLY | os.O_NONBLOCK, ("pread", 16, 0)),
       lambda w, obj, r: assert_eq((bytes.fromhex(r.value[0]), sem_value(obj)), (b"1\n", 1))),
    Op("post", needs("w"), actor_io(os.O_WRONLY, ("write", b"3")),
       lambda w, obj, r: assert_eq(sem_value(obj), 5)),
    Op("peek", needs("r"), actor_os("getxattr", "user.ipc.value"),
       lambda w, obj, r: assert_eq((bytes.fromhex(r.value), sem_value(obj)), (b"2", 2))),
    *common_ops(0o640),
])


# --- pipes/: FIFO nodes, duplex pipes, subdirectories. A pipe cell's root holds the other
# end (or a FIFO writer/reader) while the actor acts, and reports what it then sees.

def make_fifo(w, name, mode, op):
    assert w.actors[OWNER].os("mkfifo", f"pipes/{name}", mode).status == OK
    return w / "pipes" / name


def pipe_state(w, obj):
    return attrs(obj), listing(obj.parent)


def root_end(flags, data=b""):
    """Root holds obj open with flags (having written data) while the actor acts; the
    cell then reads what is buffered for root's descriptor (Outcome.seen)."""
    @contextmanager
    def hold(w, obj):
        fd = os.open(obj, flags)
        try:
            if data:
                assert os.write(fd, data) == len(data)
            yield fd
        finally:
            os.close(fd)
    return hold


FIFO = Kind("fifo", (0o600, 0o644, 0o666), make_fifo, pipe_state, [
    # root holds it open read-write with bytes buffered: the actor's reader takes them
    Op("read", needs("r"), actor_io(os.O_RDONLY | os.O_NONBLOCK, ("read", 64)),
       lambda w, obj, r: assert_eq((bytes.fromhex(r.value[0]), r.seen), (b"fifo-data", b"")),
       hold=root_end(os.O_RDWR | os.O_NONBLOCK, b"fifo-data"), seen_if_refused=b"fifo-data"),
    # root holds a reader: the actor's writer opens at once and its bytes reach root
    Op("write", needs("w"), actor_io(os.O_WRONLY | os.O_NONBLOCK, ("write", b"to-root")),
       lambda w, obj, r: assert_eq(r.seen, b"to-root"),
       hold=root_end(os.O_RDONLY | os.O_NONBLOCK), seen_if_refused=b""),
    *common_ops(0o640),
])


def make_duplex(w, name, mode, op):
    # The create takes an end and the close frees it; the cell waits until the release has
    # landed (open_files: 0) before root takes an end.
    r = w.actors[OWNER].io(f"pipes/{name}", os.O_RDWR | os.O_CREAT | os.O_EXCL, mode=mode)
    assert r.status == OK
    return w / "pipes" / name


DUPLEX = Kind("duplex", (0o600, 0o644, 0o666), make_duplex, pipe_state, [
    # root's end has written before the actor opens the other end for reading
    Op("read", needs("r"), actor_io(os.O_RDONLY | os.O_NONBLOCK, ("read", 64)),
       lambda w, obj, r: assert_eq(bytes.fromhex(r.value[0]), b"duplex-data"),
       hold=root_end(os.O_RDWR | os.O_NONBLOCK, b"duplex-data"), seen_if_refused=b""),
    Op("write", needs("w"), actor_io(os.O_WRONLY, ("write", b"to-root")),
       lambda w, obj, r: assert_eq(r.seen, b"to-root"),
       hold=root_end(os.O_RDWR | os.O_NONBLOCK), seen_if_refused=b""),
    *common_ops(0o640),
])


def make_subdir(w, name, mode, op):
    assert w.actors[OWNER].os("mkdir", f"pipes/{name}", mode).status == OK
    assert w.actors[OWNER].os("mkfifo", f"pipes/{name}/inner", 0o644).status == OK
    if op.name == "rmdir":
        os.unlink(w / "pipes" / name / "inner")
    return w / "pipes" / name


def subdir_state(w, obj):
    return attrs(obj), listing(obj.parent), listing(obj)


SUBDIR = Kind("pipes_subdir", DIR_MODES, make_subdir, subdir_state, [
    Op("list", needs("r"), actor_os("listdir"),
       lambda w, obj, r: assert_eq(r.value, ["inner"])),
    Op("create_inside", needs("wx"),
       lambda w, obj, a: w.actors[a].os("mkfifo", str(rel(w, obj) / "made"), 0o644),
       lambda w, obj, r: assert_eq(listing(obj), ["inner", "made"])),
    Op("remove_inside", removes,
       lambda w, obj, a: w.actors[a].os("unlink", str(rel(w, obj) / "inner")),
       lambda w, obj, r: assert_eq(listing(obj), [])),
    *common_ops(0o710, remove="rmdir"),
])

KINDS = [MAILBOX, MESSAGE, SHM, SEM, FIFO, DUPLEX, SUBDIR]

def matrix():
    for kind in KINDS:
        for op in kind.ops:
            for mode in kind.modes:
                for actor in ACTORS:
                    yield pytest.param(kind, op, mode, actor, id=f"{kind.name}-{op.name}-{mode:04o}-{actor}")


@pytest.mark.parametrize("kind,op,mode,actor", matrix())
def test_matrix(world, kind, op, mode, actor):
    name = f"{kind.name}-{op.name}-{mode:o}-{actor}"
    obj = kind.make(world, name, mode, op)
    before = kind.state(world, obj)
    quiet_status(world)
    with op.hold(world, obj) as held:
        root_before = status_text(world.mount.path)
        outcome = op.act(world, obj, actor)
        if held is not None:
            outcome.seen = nb_read(held)
        expected = op.expect(actor, mode)
        assert outcome.status == expected, f"{actor} {op.name} on {kind.name} {mode:04o}: {outcome}"
        if expected == OK:
            op.done(world, obj, outcome)
        else:
            assert outcome.seen == op.seen_if_refused
            assert_status_back(world, root_before)
    if expected != OK:
        assert kind.state(world, obj) == before


# ---------------------------------------------------------------- creation

CREATES = {
    # kind: (how the actor creates it, the mode asked for)
    "mailbox": (lambda a, p, umask: a.os("mkdir", p, 0o777, umask=umask), "mailboxes", 0o777),
    "shm": (lambda a, p, umask: a.io(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, umask=umask),
            "shm", 0o666),
    "sem": (lambda a, p, umask: a.io(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, umask=umask),
            "sem", 0o666),
    "fifo": (lambda a, p, umask: a.os("mkfifo", p, 0o666, umask=umask), "pipes", 0o666),
    "duplex": (lambda a, p, umask: a.io(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, umask=umask),
               "pipes", 0o666),
    "pipes_subdir": (lambda a, p, umask: a.os("mkdir", p, 0o777, umask=umask), "pipes", 0o777),
}


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("kind", CREATES)
def test_creation_is_owned_by_the_creator_and_honours_umask(world, kind, actor, umask):
    create, top, asked = CREATES[kind]
    rel_path = f"{top}/new-{kind}-{actor}-{umask:o}"
    assert create(world.actors[actor], rel_path, umask).status == OK
    assert attrs(world / rel_path) == (asked & ~umask, *IDS[actor])
    # and what the actor itself sees
    st_mode, uid, gid = world.actors[actor].os("lstat", rel_path).value
    assert (stat.S_IMODE(st_mode), uid, gid) == (asked & ~umask, *IDS[actor])


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("how", ["send", "drop_in"])
def test_messages_are_owned_by_their_sender_mode_0444(world, how, actor, umask):
    box = world / "mailboxes" / f"shared-{how}-{actor}-{umask:o}"
    os.mkdir(box)
    os.chmod(box, 0o777)
    node = ".send" if how == "send" else "dropped"
    r = world.actors[actor].io(rel(world, box) / node, os.O_WRONLY | os.O_CREAT, ("write", b"m"),
                               umask=umask)
    assert r.status == OK
    name = "0000000001" if how == "send" else "dropped"
    assert attrs(box / name) == (0o444, *IDS[actor])


def test_control_nodes_follow_the_mailboxs_mode_and_owner_at_once(world):
    """.send and .receive take their modes and owner from the mailbox: a chmod or chown of
    the mailbox applies to them at once, even when the kernel has looked them up before."""
    owner, other = world.actors[OWNER], world.actors[OTHER]
    box = "mailboxes/follows"
    assert owner.os("mkdir", box, 0o700).status == OK

    def other_can():
        sent = other.io(f"{box}/.send", os.O_WRONLY, ("write", b"by other")).status
        got = other.io(f"{box}/.receive", os.O_RDONLY | os.O_NONBLOCK, ("drain",))
        return sent, got.status

    for a in (owner, other):  # both have looked up the control nodes
        a.os("stat", f"{box}/.send"), a.os("stat", f"{box}/.receive")
    assert other_can() == ("EACCES", "EACCES")
    os.chmod(world / box, 0o777)
    assert other_can() == (OK, OK)
    os.chmod(world / box, 0o700)
    assert other_can() == ("EACCES", "EACCES")
    os.chown(world / box, *IDS[OTHER])
    assert other_can() == (OK, OK)
    assert owner.io(f"{box}/.send", os.O_WRONLY, ("write", b"by owner")).status == "EACCES"
    assert attrs(world / box / ".send") == (0o600, *IDS[OTHER])
    assert attrs(world / box / ".receive") == (0o400, *IDS[OTHER])
    assert queued(world / box) == 0


SETGID_CASES = {
    # what OTHER makes in a set-group-ID subdirectory of OWNER's: (how, the mode it must get)
    "fifo": (lambda a, p: a.os("mkfifo", p, 0o666), 0o666),
    "duplex": (lambda a, p: a.io(p, os.O_RDWR | os.O_CREAT | os.O_EXCL), 0o666),
    "pipes_subdir": (lambda a, p: a.os("mkdir", p, 0o777), 0o2777),
}


@pytest.mark.parametrize("kind", list(SETGID_CASES))
def test_setgid_directory_passes_its_group_on(world, kind):
    """Linux's rule for a directory with the set-group-ID bit (of the top-level
    directories only pipes/ holds plain subdirectories so far): what is made in it gets the
    directory's group, and a directory made in it keeps the bit."""
    create, want_mode = SETGID_CASES[kind]
    d = f"pipes/setgid-{kind}"
    assert world.actors[OWNER].os("mkdir", d, 0o777).status == OK
    assert world.actors[OWNER].os("chmod", d, 0o2777).status == OK  # mkdir drops S_ISGID
    assert attrs(world / d) == (0o2777, *IDS[OWNER])
    assert create(world.actors[OTHER], f"{d}/made").status == OK
    assert attrs(world / d / "made") == (want_mode, IDS[OTHER][0], IDS[OWNER][1])


def test_mailbox_created_0700_is_closed_to_another_uid(world):
    owner, other = world.actors[OWNER], world.actors[OTHER]
    box = "mailboxes/private"
    assert owner.os("mkdir", box, 0o777, umask=0o077).status == OK
    assert attrs(world / box) == (0o700, *IDS[OWNER])
    assert owner.io(f"{box}/.send", os.O_WRONLY, ("write", b"mine")).status == OK
    before = status_text(world / box)
    assert other.io(f"{box}/.send", os.O_WRONLY, ("write", b"intruder")).status == "EACCES"
    assert other.io(f"{box}/.receive", os.O_RDONLY | os.O_NONBLOCK, ("drain",)).status == "EACCES"
    assert status_text(world / box) == before
    r = owner.io(f"{box}/.receive", os.O_RDONLY | os.O_NONBLOCK, ("drain",))
    assert (r.status, bytes.fromhex(r.value[0])) == (OK, b"mine")


# ---------------------------------------------------------------- procs/

PROCS_OPS = ["send", "receive", "receive_from", "list", "status", "chmod", "rmdir"]


def procs_expect(op, target, actor):
    """Receiving, listing and .status: the process itself (or a descendant) and root;
    sending: whoever may signal it (same uid) and root; chmod and rmdir of procs/P: nobody,
    as in /proc."""
    if op in ("chmod", "rmdir"):
        return "EPERM"
    if actor in (ROOT, target) or (op == "send" and IDS[actor][0] == IDS[target][0]):
        return OK
    return "EACCES"


def procs_act(w, inbox, op, actor):
    a = w.actors[actor]
    if op == "send":
        return a.io(f"{inbox}/.send", os.O_WRONLY, ("write", b"from-actor"))
    if op == "receive":
        return a.io(f"{inbox}/.receive", os.O_RDONLY | os.O_NONBLOCK, ("drain",))
    if op == "receive_from":
        return a.io(f"{inbox}/from/{os.getpid()}", os.O_RDONLY | os.O_NONBLOCK, ("drain",))
    if op == "list":
        return a.os("listdir", inbox)
    if op == "status":
        return a.io(f"{inbox}/.status", os.O_RDONLY, ("drain",))
    if op == "chmod":
        return a.os("chmod", inbox, 0o755)
    return a.os("rmdir", inbox)


def procs_state(inbox):
    return attrs(inbox), listing(inbox), status_text(inbox)


def empty_inbox(inbox):
    """Root takes whatever is queued, so the next cell starts from an empty inbox."""
    while True:
        try:
            receive_nowait(inbox)
        except BlockingIOError:
            return


@pytest.fixture(scope="module", params=["root_mount", "non_root_mount"])
def procs_world(request):
    """The inbox rules on a mount made by root and on one made by a non-root uid."""
    return request.getfixturevalue("world" if request.param == "root_mount" else "user_world")


@pytest.mark.parametrize("actor", (*ACTORS, SAME_UID))
@pytest.mark.parametrize("op", PROCS_OPS)
@pytest.mark.parametrize("target", [OWNER, ROOT], ids=["owners_process", "roots_process"])
def test_procs_inbox(procs_world, target, op, actor):
    """procs/P for P the OWNER actor's process (uid 2001) or the ROOT actor's process."""
    w = procs_world
    pid = w.actors[target].pid
    inbox = w / "procs" / str(pid)
    try:
        send(inbox, PAYLOAD)  # sent by the test's own process: root may signal anyone
        before = procs_state(inbox)
        root_before = quiet_status(w)
        outcome = procs_act(w, f"procs/{pid}", op, actor)
        expected = procs_expect(op, target, actor)
        assert outcome.status == expected, f"{actor} {op} on procs/<{target}'s pid>: {outcome}"
        if expected != OK:
            assert_status_back(w, root_before)
            assert procs_state(inbox) == before
        elif op in ("receive", "receive_from"):
            assert bytes.fromhex(outcome.value[0]) == PAYLOAD
            assert listing(inbox) == []
        elif op == "send":
            assert len(listing(inbox)) == 2
        elif op == "list":
            assert outcome.value == before[1]
        else:
            assert bytes.fromhex(outcome.value[0]).decode() == status_text(inbox)
    finally:
        empty_inbox(inbox)


# ---------------------------------------------------------------- a non-root mount

UNCHECKED = {
    # case: (what OWNER makes, what OTHER then tries, the errno Linux gives)
    "receive_from_0700_mailbox": (
        lambda o: (o.os("mkdir", "mailboxes/nokc-a", 0o700),
                   o.io("mailboxes/nokc-a/.send", os.O_WRONLY, ("write", b"secret"))),
        lambda x: x.io("mailboxes/nokc-a/.receive", os.O_RDONLY | os.O_NONBLOCK, ("drain",)),
        "EACCES"),
    "send_to_0755_mailbox": (
        lambda o: (o.os("mkdir", "mailboxes/nokc-b", 0o755),),
        lambda x: x.io("mailboxes/nokc-b/.send", os.O_WRONLY, ("write", b"x")),
        "EACCES"),
    "read_0600_segment": (
        lambda o: (o.io("shm/nokc-c", os.O_RDWR | os.O_CREAT | os.O_EXCL, mode=0o600),),
        lambda x: x.io("shm/nokc-c", os.O_RDONLY, ("pread", 16, 0)),
        "EACCES"),
    "chmod_of_another_users_mailbox": (
        lambda o: (o.os("mkdir", "mailboxes/nokc-d", 0o755),),
        lambda x: x.os("chmod", "mailboxes/nokc-d", 0o777),
        "EPERM"),
    "chown_to_another_uid_by_non_root": (
        lambda o: (o.io("sem/nokc-e", os.O_RDWR | os.O_CREAT | os.O_EXCL, mode=0o644),),
        lambda x: x.os("chown", "sem/nokc-e", *IDS[OTHER]),
        "EPERM"),
    "rm_of_another_users_object_in_sticky_dir": (
        lambda o: (o.os("mkfifo", "pipes/nokc-f", 0o666),),
        lambda x: x.os("unlink", "pipes/nokc-f"),
        "EPERM"),
}


@pytest.mark.parametrize("case", list(UNCHECKED))
def test_a_non_root_mount_given_allow_other_alone_enforces_modes_and_owners(user_world, case):
    """The contract's "mode bits and ownership are kept and enforced" holds whoever mounts:
    ipcfs adds default_permissions even when not asked for it."""
    make, attempt, code = UNCHECKED[case]
    assert all(r.status == OK for r in make(user_world.actors[OWNER]))
    assert attempt(user_world.actors[OTHER]).status == code
