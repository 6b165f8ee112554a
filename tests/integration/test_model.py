"""Model-based random test of mailboxes. A seeded generator issues thousands of random
operations from several worker processes (two root, one unprivileged user: see
mailbox_model.WORKER_UIDS) against a real mount and against the reference model in
mailbox_model.py, one operation at a time, and compares every result and errno: mkdir,
rmdir, rename and chmod of mailboxes; sends through .send and drop-in files; non-blocking
receives, whole or abandoned after one byte; files kept open across steps (write, read,
poll, fsync, close); peek, stat, xattrs, rm and mv of messages; the capacity,
max_msg_size, policy and id xattrs and by-id links; listings and .status; invalid names and
objects where they do not belong. After each step the listings of `mailboxes/` and of the
mailboxes involved must equal the model's; every FULL_CHECK_EVERY steps, every mailbox's
listing and .status and the root .status too. Not covered here: receipts (a receipt read
waits for a receiver even with O_NONBLOCK), batches, procs/.

A mismatch is shrunk (delta debugging: parts of the sequence are dropped while the rest
still fails, each try replayed on a fresh mount with fresh workers, for at most
IPCFS_MODEL_SHRINK_S seconds) and reported with its seed and the shortest failing sequence
found, one JSON operation per line.

  IPCFS_MODEL_SEED=N      also run seed N (IPCFS_MODEL_OPS=N: operations per seed)
  IPCFS_MODEL_REPLAY=FILE also replay the operations in FILE (a printed failing sequence)
"""
import errno
import json
import os
import time
from pathlib import Path

import pytest

from conftest import wait_until
from ipcfs_helpers import STEP_S, agents, no_mount_left, read_status  # noqa: F401 (fixtures)
from mailbox_model import WORKER_UIDS, Generator, Model, Refused, payload, status_of

SEEDS = (1, 2, 3, 4)
OPS = int(os.environ.get("IPCFS_MODEL_OPS", "3000"))
FULL_CHECK_EVERY = 100
SHRINK_BUDGET_S = float(os.environ.get("IPCFS_MODEL_SHRINK_S", "120"))
RELEASES = ("send", "drop", "recv", "recv_part", "close")  # closing effects: wait for them


def cases():
    found = list(SEEDS)
    if os.environ.get("IPCFS_MODEL_SEED"):
        found.append(int(os.environ["IPCFS_MODEL_SEED"]))
    if os.environ.get("IPCFS_MODEL_REPLAY"):
        found.append("replay")
    return found


def mb(box, name=None):
    return f"mailboxes/{box}" if name is None else f"mailboxes/{box}/{name}"


class Real:
    """The model's operations against a mount, each done by its worker process (whose cwd
    is the mount: paths are relative), plus the checks between steps."""

    def __init__(self, mount, workers):
        self.mount = mount
        self.workers = workers
        self.worker_of = {a.pid: i for i, a in enumerate(workers)}
        self.fds = {}  # handle -> (worker, fd) of the files kept open
        self.ids = {}  # real mailbox id -> model serial, and back
        self.serials = {}

    def apply(self, op, still_open):
        args = {k: v for k, v in op.items() if k != "op"}
        try:
            got = ("ok", getattr(self, "op_" + op["op"])(**args))
        except Refused as e:
            got = e.result
        if op["op"] in RELEASES:
            # Closing effects (a half-read message's return, an unwritten drop-in's delivery)
            # happen when the kernel releases the file, after close(): wait for them.
            wait_until(lambda: read_status(self.mount.path)["open_files"] == str(still_open),
                       timeout=STEP_S, what=f"{still_open} files open")
        return got

    def req(self, w, **cmd):
        r = self.workers[w].call(**cmd)
        if "errno" in r:
            raise Refused(r["errno"])
        return r["ok"]

    def call(self, w, fn, *args):
        return self.req(w, op="call", fn=fn, args=list(args))

    def through(self, w, path, flags, data=None, read=None):
        """open; write data, or read to the end (read="all") or `read` bytes; close. The
        first error counts; the close always happens."""
        fd = self.req(w, op="open", path=path, flags=flags)
        failed, value = None, None
        try:
            if data is not None:
                n = self.req(w, op="write", fd=fd, data=data.hex())
                value = None if n == len(data) else f"short write of {n}"
            elif read == "all":
                value = bytes.fromhex(self.req(w, op="recv", fd=fd))
            elif read:
                value = bytes.fromhex(self.req(w, op="read", fd=fd, n=read))
        except Refused as e:
            failed = e
        try:
            self.req(w, op="close", fd=fd)
        except Refused as e:
            failed = failed or e
        if failed:
            raise failed
        return value

    def xattr(self, w, path, name):
        return bytes.fromhex(self.call(w, "getxattr", path, name)["hex"]).decode()

    def set_xattr(self, w, path, name, value):
        self.call(w, "setxattr", path, name, {"hex": value.encode().hex()})

    def status_fields(self, fields):
        bound = fields["bound"]
        return {"messages": int(fields["messages"]), "bytes": int(fields["bytes"]),
                "capacity": fields["capacity"], "policy": fields["policy"],
                "bound": [] if bound == "-" else
                [self.worker_of.get(int(p), f"pid {p}") for p in bound.split()]}

    # ------------------------------------------------------------ mailboxes

    def op_mkdir(self, w, box, mode):
        self.call(w, "mkdir", mb(box), int(mode, 8))

    def op_rmdir(self, w, box):
        self.call(w, "rmdir", mb(box))

    def op_rename(self, w, box, to):
        self.call(w, "rename", mb(box), mb(to))

    def op_chmod(self, w, box, mode):
        self.call(w, "chmod", mb(box), int(mode, 8))

    def op_setcap(self, w, box, value):
        self.set_xattr(w, mb(box), "user.ipc.capacity", value)

    def op_getcap(self, w, box):
        return self.xattr(w, mb(box), "user.ipc.capacity")

    def op_policy(self, w, box, value):
        self.set_xattr(w, mb(box), "user.ipc.policy", value)

    def op_ident(self, w, box):
        ident = int(self.xattr(w, mb(box), "user.ipc.id"))  # mapped by same_id
        return [ident, self.call(w, "readlink", f"by-id/{ident}")]

    def op_setmax(self, w, box, value):
        self.set_xattr(w, mb(box), "user.ipc.max_msg_size", value)

    def op_ls(self, w, box=None):
        return sorted(self.call(w, "listdir", "mailboxes" if box is None else mb(box)))

    def op_status(self, w, box):
        text = self.through(w, mb(box, ".status"), os.O_RDONLY, read="all").decode()
        return self.status_fields(dict(line.split(": ", 1) for line in text.splitlines()))

    def op_misplace(self, w, what, box=None, name=None):
        if what == "mkdir":
            self.call(w, "mkdir", mb(box, "sub"), 0o755)
        elif what == "file":
            self.through(w, "mailboxes/stray", os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK)
        elif what == "symlink":
            self.call(w, "symlink", "elsewhere", mb(box, "lnk"))
        else:
            self.call(w, "link", mb(box, name), mb(box, "copy"))

    # ------------------------------------------------------------ files kept open

    def op_open(self, w, h, box, node, excl=False):
        flags = {".send": os.O_WRONLY, ".receive": os.O_RDONLY}.get(
            node, os.O_CREAT | os.O_WRONLY | (os.O_EXCL if excl else 0))
        flags |= os.O_NONBLOCK
        self.fds[h] = (w, self.req(w, op="open", path=mb(box, node), flags=flags))

    def fd(self, h):
        if h not in self.fds:
            raise Refused(errno.EBADF)
        return self.fds[h]

    def op_write(self, h, size, tag):
        w, fd = self.fd(h)
        n = self.req(w, op="write", fd=fd, data=payload(tag, size).hex())
        return None if n == size else f"short write of {n}"

    def op_read(self, h, size):
        w, fd = self.fd(h)
        return bytes.fromhex(self.req(w, op="read", fd=fd, n=size))

    def op_fsync(self, h):
        w, fd = self.fd(h)
        self.call(w, "fsync", fd)

    def op_poll(self, h):
        w, fd = self.fd(h)
        return self.req(w, op="poll", fd=fd)

    def op_close(self, h):
        w, fd = self.fd(h)
        del self.fds[h]
        self.req(w, op="close", fd=fd)

    # ------------------------------------------------------------ one-shot sends and receives

    def op_send(self, w, box, size, tag):
        return self.through(w, mb(box, ".send"), os.O_WRONLY | os.O_NONBLOCK,
                            data=payload(tag, size))

    def op_drop(self, w, box, name, excl, size, tag):
        flags = os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK | (os.O_EXCL if excl else 0)
        return self.through(w, mb(box, name), flags, data=payload(tag, size))

    def op_recv(self, w, box):
        return self.through(w, mb(box, ".receive"), os.O_RDONLY | os.O_NONBLOCK, read="all")

    def op_recv_part(self, w, box):
        return self.through(w, mb(box, ".receive"), os.O_RDONLY | os.O_NONBLOCK, read=1)

    def op_peek(self, w, box, name):
        return self.through(w, mb(box, name), os.O_RDONLY, read="all")

    def op_attrs(self, w, box, name):
        path = mb(box, name)
        mode, uid, _gid, size, _ino = self.call(w, "stat", path)
        seq, pid, again = (int(self.xattr(w, path, "user.ipc." + x))
                           for x in ("seq", "sender_pid", "redeliveries"))
        return [mode, uid, size, seq, self.worker_of.get(pid, f"pid {pid}"), again]

    def op_rm(self, w, box, name):
        self.call(w, "unlink", mb(box, name))

    def op_mv(self, w, box, name, to, new):
        self.call(w, "rename", mb(box, name), mb(to, new))

    # ------------------------------------------------------------ between steps

    def same_id(self, serial, real_id):
        """Ids are opaque: the model's n-th mailbox must always show the same id, and no
        other mailbox that id. Returns what the model's answer would have to be."""
        if real_id not in self.ids and serial not in self.serials:
            self.ids[real_id], self.serials[serial] = serial, real_id
        return self.ids.get(real_id, f"id {real_id}")

    def check(self, model, op, full):
        """Listings (and with full, .status files) against the model; None or a problem."""
        boxes = self.mount / "mailboxes"
        listed = sorted(os.listdir(boxes))
        if listed != sorted(model.boxes):
            return f"mailboxes/ lists {listed}, the model has {sorted(model.boxes)}"
        names = model.boxes if full else [op[k] for k in ("box", "to") if op.get(k) in model.boxes]
        for name in names:
            box = model.boxes[name]
            listed, queued = sorted(os.listdir(boxes / name)), sorted(m.name for m in box.queue)
            if listed != queued:
                return f"mailboxes/{name} lists {listed}, the model has {queued}"
            status = read_status(boxes / name)
            if full and self.status_fields(status) != status_of(box):
                return f"mailboxes/{name}/.status: {status}, the model: {status_of(box)}"
        if full:
            root = read_status(self.mount.path)
            queued = [m for b in model.boxes.values() for m in b.queue]
            want = {"mailboxes": len(model.boxes), "messages": len(queued),
                    "bytes": sum(len(m.data) for m in queued), "discarded": model.discarded,
                    "receivers_waiting": 0, "senders_waiting": 0,
                    "open_files": len(model.handles)}
            if any(root[k] != str(v) for k, v in want.items()):
                return f"root .status: {root}, the model: {want}"
        return None


def run(ops, mount, workers, log=None):
    """Runs ops on a fresh model and on the mount; None, or (index, what differed)."""
    model, real = Model(), Real(mount, workers)
    for i, op in enumerate(ops):
        try:
            want = model.apply(op)
            got = real.apply(op, len(model.handles))
            if op["op"] == "ident" and want[0] == got[0] == "ok":
                got = ("ok", [real.same_id(want[1][0], got[1][0]), got[1][1]])
            if log is not None:
                log.append((op, want, got))
            if got != want:
                return i, f"expected {show(want)}, got {show(got)}"
            full = (i + 1) % FULL_CHECK_EVERY == 0 or i + 1 == len(ops)
            problem = real.check(model, op, full)
        except (OSError, pytest.fail.Exception) as e:  # a dead daemon or worker, a timeout
            problem = f"{type(e).__name__}: {e}"
        if problem:
            return i, problem
    return None


def show(result):
    text = repr(result)
    return text if len(text) <= 200 else text[:200] + "..."


class Replayer:
    """Runs sequences, each on a fresh mount with fresh workers, and stops both after it."""

    def __init__(self, make_mount, make_agent):
        self.make_mount, self.make_agent = make_mount, make_agent
        self.runs = 0

    def __call__(self, ops, log=None):
        self.runs += 1
        m = self.make_mount(sub="model")
        workers = []
        try:
            workers = [self.make_agent(user=uid or None, cwd=m.path) for uid in WORKER_UIDS]
            for a in workers:
                a.call(op="call", fn="umask", args=[0])
            return run(ops, m, workers, log)
        finally:
            for a in workers:
                a.kill()
            m.stop()


def shrink(ops, replay, budget_s=SHRINK_BUDGET_S):
    """Delta debugging: tries dropping chunks of operations (halving the chunk size down to
    single operations, sweeping again while that helps); keeps every smaller sequence that
    still fails, cut after its failing step. Returns the shortest one found in budget_s."""
    deadline = time.monotonic() + budget_s
    chunk = max(1, len(ops) // 2)
    while time.monotonic() < deadline:
        i, dropped = 0, False
        while i < len(ops) and time.monotonic() < deadline:
            candidate = ops[:i] + ops[i + chunk:]
            failed = replay(candidate) if candidate else None
            if failed:
                ops, dropped = candidate[:failed[0] + 1], True
            else:
                i += chunk
        if chunk == 1 and not dropped:
            break
        chunk = max(1, chunk // 2)
    return ops


def report(case, ops, failed, replay):
    started, runs = time.monotonic(), replay.runs
    index, what = failed
    shortest = shrink(ops[:index + 1], replay)
    log = []
    again = replay(shortest, log)
    lines = [f"model mismatch, seed {case}, step {index + 1} of {len(ops)}: {what}",
             f"shortest failing sequence found ({len(shortest)} operations, "
             f"{replay.runs - runs} replays in {time.monotonic() - started:.0f} s); save these "
             "lines to FILE and rerun with IPCFS_MODEL_REPLAY=FILE:"]
    lines += [json.dumps(op) for op in shortest]
    lines.append("its replay (expected / got):")
    lines += [f"  {json.dumps(op)}\n      {show(want)} / {show(got)}" for op, want, got in log]
    lines.append(f"  -> {again[1] if again else 'passed this time (flaky?)'}")
    return "\n".join(lines)


@pytest.mark.parametrize("case", cases())
def test_random_operations_match_the_model(case, make_mount, agents):
    if case == "replay":
        text = Path(os.environ["IPCFS_MODEL_REPLAY"]).read_text()
        ops = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    else:
        ops = list(Generator(case).ops(OPS))
    replay = Replayer(make_mount, agents)
    failed = replay(ops)
    if failed:
        pytest.fail(report(case, ops, failed, replay), pytrace=False)
