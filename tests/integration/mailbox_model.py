"""Reference model of ipcfs mailboxes for the model-based random test (test_model.py), and
the seeded generator of the random operations it checks.

The model is plain Python state: mailboxes (owner, mode, capacity, policy, the processes a
`pair` mailbox is bound to, the next sequence number) holding messages: queued ones in
order, and those whose name is taken while they are not queued (a drop-in file being
written, a message a reader holds half-read). Files may stay open across operations
(handles). For every operation the model says what the contract gives: a value or an
errno. Sources: spec/interface.md ("Namespace", "Mailboxes", "Everywhere"), the README's
"Errors" table and "Choices where the contract is silent", and, for the unprivileged
worker, the kernel's own checks with default_permissions (search permission on the path,
the sticky `mailboxes/`, mode bits, chmod by the owner only).

An operation is a dict that JSON prints and parses back (so a failing sequence is
replayable text): {"op": NAME, "w": WORKER, ...}, or {"op": NAME, "h": HANDLE, ...} on a
file kept open by the worker that opened it; worker w runs as WORKER_UIDS[w]. A result is
("ok", value) or ("err", "ENOENT"). Workers act one at a time and only with non-blocking
calls, so the model stays deterministic. Modes are octal text ("755")."""
import collections
import errno
import random
from dataclasses import dataclass, field

NOBODY = 65534
WORKER_UIDS = (0, 0, NOBODY)  # several processes: two root, one unprivileged user
MAX_MSG_SIZE = 1 << 20  # the documented default user.ipc.max_msg_size
CONTROL = ".send"  # a control node, used where rm/mv must refuse one
BOX_NAMES = ("a", "b", "c", "d", "e")
MSG_NAMES = ("note", "report.pdf", "m", "0000000002", "0000000004")  # also seq-like names
BAD_NAMES = (".hidden", "n" * 256)  # EINVAL (reserved), ENAMETOOLONG
MODES = ("777", "777", "777", "755", "733", "711", "700")
CAPACITIES = ("0", "1", "2", "2", "3", "unlimited", "unlimited", "1\n", "abc", "-1", "")
MAX_SIZES = ("0", "16", "100", "5000", "1048576", "8\n", "big")
POLICIES = ("any", "exclusive", "exclusive", "pair", "pair", "bogus")
R, W, X = 4, 2, 1
MSG_MODE = 0o100444  # a regular file, mode 0444


def payload(tag, size):
    """The content of what an operation with this tag and size writes."""
    return random.Random(tag).randbytes(size)


class Refused(Exception):
    """An operation failing with errno `code`; .result is how the test shows it."""

    def __init__(self, code):
        super().__init__(code)
        self.result = ("err", errno.errorcode.get(code, str(code)))


@dataclass(eq=False)
class Msg:
    name: str
    data: bytes
    sender: int  # worker index
    uid: int
    seq: int = 0  # assigned at delivery
    redeliveries: int = 0
    holds_place: bool = False  # a drop-in being written that took a place in the queue
    being_read: bool = False  # taken by a reader that has not read its last byte


@dataclass(eq=False)
class Box:
    serial: int  # stands for the id: the n-th mailbox made
    mode: int
    uid: int
    queue: list = field(default_factory=list)
    aside: list = field(default_factory=list)  # names taken, not queued: being written or read
    next_seq: int = 1
    capacity: int | None = None  # None: unlimited
    max_size: int = MAX_MSG_SIZE
    policy: str = "any"
    pair: list = field(default_factory=list)  # workers bound to a pair mailbox, in order
    receivers: collections.Counter = field(default_factory=collections.Counter)  # open .receive
    removed: bool = False

    def find(self, name):
        """The queued message, or the drop-in being written, that this name resolves to."""
        return next((m for m in self.queue + self.aside if m.name == name and not m.being_read),
                    None)

    def taken(self, name):
        return any(m.name == name for m in self.queue + self.aside)

    def has_room(self):
        reserved = sum(m.holds_place for m in self.aside)
        return self.capacity is None or len(self.queue) + reserved < self.capacity


@dataclass(eq=False)
class Handle:
    kind: str  # "send", "receive" or "drop"
    box: Box
    w: int
    draft: bytes | None = None  # send: the message being composed
    msg: Msg | None = None  # drop: the file; receive: the message being read
    offset: int = 0  # receive: into msg; drop: the file position
    at_end: bool = False  # receive: the next read returns the end of message
    written: bool = False
    dropped: bool = False
    delivered: bool = False
    discarded: bool = False


def check_name(name):
    if len(name.encode()) > 255:
        raise Refused(errno.ENAMETOOLONG)
    if not name or "/" in name or name.startswith("."):
        raise Refused(errno.EINVAL)


class Model:
    def __init__(self, uids=WORKER_UIDS):
        self.uids = uids
        self.boxes = {}  # name -> Box
        self.handles = {}  # handle number -> Handle
        self.made = 0
        self.discarded = 0

    def apply(self, op):
        args = {k: v for k, v in op.items() if k != "op"}
        try:
            return ("ok", getattr(self, "op_" + op["op"])(**args))
        except Refused as e:
            return e.result

    # ------------------------------------------------------------ checks, in kernel order

    def box(self, name):
        if name not in self.boxes:
            raise Refused(errno.ENOENT)
        return self.boxes[name]

    def need(self, w, box, bits):
        """Mode bits of the mailbox (its control nodes mirror them); root passes."""
        uid = self.uids[w]
        have = 7 if uid == 0 else (box.mode >> 6 if uid == box.uid else box.mode) & 7
        if have & bits != bits:
            raise Refused(errno.EACCES)

    def inside(self, w, name):
        """A path through the mailbox: it must exist and be searchable."""
        box = self.box(name)
        self.need(w, box, X)
        return box

    def owner(self, w, box):
        """Removing or renaming in sticky `mailboxes/`, and chmod: owner or root."""
        if self.uids[w] not in (0, box.uid):
            raise Refused(errno.EPERM)

    def policy_allows(self, w, box, receiving):
        if box.policy == "exclusive" and receiving and any(
                n > 0 for other, n in box.receivers.items() if other != w):
            raise Refused(errno.EBUSY)
        if box.policy == "pair" and w not in box.pair:  # the first two processes are bound
            if len(box.pair) >= 2:
                raise Refused(errno.EPERM)
            box.pair.append(w)

    def handle(self, h):
        if h not in self.handles:
            raise Refused(errno.EBADF)
        return self.handles[h]

    # ------------------------------------------------------------ delivery

    def deliver(self, box, msg, holds_place=False):
        """A message sent from a non-blocking file enters the queue, or is refused."""
        if box.removed:
            raise Refused(errno.EIDRM)
        if not (holds_place or box.has_room()):
            raise Refused(errno.EAGAIN)  # full (or capacity 0) and no receiver waiting
        msg.seq = box.next_seq
        box.next_seq += 1
        if not msg.name:  # named by its sequence number; a number whose name is taken is skipped
            while box.taken(f"{msg.seq:010d}"):
                msg.seq = box.next_seq
                box.next_seq += 1
            msg.name = f"{msg.seq:010d}"
        msg.holds_place = False
        box.queue.append(msg)

    def flush(self, hd):
        """close() and fsync(): deliver what was written since the last delivery."""
        if hd.kind == "send" and hd.draft is not None:
            msg = Msg("", hd.draft, hd.w, self.uids[hd.w])
            hd.draft = None
            self.deliver(hd.box, msg)
        elif hd.kind == "drop" and hd.written and not hd.delivered and not hd.discarded:
            hd.delivered = True
            self.deliver_drop(hd)

    def deliver_drop(self, hd):
        hd.box.aside.remove(hd.msg)
        try:
            self.deliver(hd.box, hd.msg, hd.msg.holds_place)
        except Refused:
            hd.msg.holds_place = False  # refused: its name and place are free again
            raise

    def release(self, hd):
        """What happens when the kernel releases a closed file."""
        box = hd.box
        if hd.kind == "receive":
            box.receivers[hd.w] -= 1
            if hd.msg:  # closed mid-message: back to the head of the queue, counted
                box.aside.remove(hd.msg)
                hd.msg.redeliveries += 1
                hd.msg.being_read = False
                box.queue.insert(0, hd.msg)
        elif hd.kind == "drop" and not hd.delivered and not hd.discarded:
            hd.delivered = True
            if hd.written or not hd.dropped:  # never written: delivered as an empty message
                try:
                    self.deliver_drop(hd)
                except Refused:
                    self.discarded += 1  # nobody left to tell
            else:
                box.aside.remove(hd.msg)

    # ------------------------------------------------------------ files

    def open_file(self, w, box, node, excl=False):
        b = self.inside(w, box)
        if node == ".send":
            self.need(w, b, W)
            self.policy_allows(w, b, receiving=False)
            return Handle("send", b, w)
        if node == ".receive":
            self.need(w, b, R)
            self.policy_allows(w, b, receiving=True)
            b.receivers[w] += 1
            return Handle("receive", b, w)
        # A drop-in file: O_CREAT | O_WRONLY | O_NONBLOCK (| O_EXCL).
        if b.find(node):
            raise Refused(errno.EEXIST if excl else errno.EACCES)
        self.need(w, b, W)
        check_name(node)
        if b.taken(node):  # by a message a reader holds
            raise Refused(errno.EEXIST if excl else errno.EACCES)
        if b.capacity != 0 and not b.has_room():
            raise Refused(errno.EAGAIN)  # the create takes a place
        msg = Msg(node, b"", w, self.uids[w], holds_place=b.capacity != 0)
        b.aside.append(msg)
        return Handle("drop", b, w, msg=msg)

    def write(self, hd, data):
        if hd.kind == "receive":
            raise Refused(errno.EBADF)  # opened read-only
        if not data:
            return None  # writes nothing, starts no message
        if hd.kind == "send":
            if hd.box.removed:
                raise Refused(errno.EIDRM)
            draft = hd.draft or b""
            too_long = len(draft) + len(data) > hd.box.max_size
            if too_long or not hd.box.has_room():
                # The whole message being composed is dropped; the next write starts a
                # new one (contract, "Mailboxes": max_msg_size).
                code = errno.EFBIG if too_long else errno.EAGAIN
                hd.draft = None
                raise Refused(code)
            hd.draft = draft + data
            return None
        if hd.delivered:
            raise Refused(errno.EACCES)  # queued contents are immutable
        if hd.discarded:
            return None  # like writing to an unlinked file
        end = hd.offset + len(data)
        if end > hd.box.max_size:
            hd.msg.data, hd.written, hd.dropped = b"", False, True
            raise Refused(errno.EFBIG)
        old = hd.msg.data.ljust(hd.offset, b"\0")
        hd.msg.data = old[:hd.offset] + data + old[end:]
        hd.offset, hd.written = end, True
        return None

    def read(self, hd, size):
        if hd.kind != "receive":
            raise Refused(errno.EBADF)  # opened write-only
        box = hd.box
        if not hd.msg:
            if hd.at_end:
                hd.at_end = False
                return b""  # end of message
            if box.removed:
                raise Refused(errno.EIDRM)
            if not box.queue:
                raise Refused(errno.EAGAIN)
            hd.msg, hd.offset = box.queue.pop(0), 0  # taken: its name stays taken
            hd.msg.being_read = True
            box.aside.append(hd.msg)
        chunk = hd.msg.data[hd.offset:hd.offset + size]
        hd.offset += len(chunk)
        if hd.offset == len(hd.msg.data):  # its last byte was read: received
            box.aside.remove(hd.msg)
            hd.msg, hd.at_end = None, len(chunk) > 0
        return chunk

    def close(self, hd):
        try:
            self.flush(hd)
        finally:
            self.release(hd)

    def session(self, hd, action):
        """action() on a file just opened, then close(): the first error counts."""
        failed, value = None, None
        try:
            value = action()
        except Refused as e:
            failed = e
        try:
            self.close(hd)
        except Refused as e:
            failed = failed or e
        if failed:
            raise failed
        return value

    def receive_all(self, hd):
        chunks = []
        while chunk := self.read(hd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------ files kept open

    def op_open(self, w, h, box, node, excl=False):
        self.handles[h] = self.open_file(w, box, node, excl)

    def op_write(self, h, size, tag):
        return self.write(self.handle(h), payload(tag, size))

    def op_read(self, h, size):
        return self.read(self.handle(h), size)

    def op_fsync(self, h):
        self.flush(self.handle(h))

    def op_poll(self, h):
        """poll(POLLIN) with timeout 0: a receiver is readable while a read would not wait."""
        hd = self.handle(h)
        if hd.kind != "receive":
            return True  # like regular files
        return bool(hd.msg or hd.at_end or hd.box.queue or hd.box.removed)

    def op_close(self, h):
        hd = self.handle(h)
        del self.handles[h]
        self.close(hd)

    # ------------------------------------------------------------ one-shot sends and receives

    def op_send(self, w, box, size, tag):
        """open .send O_NONBLOCK, write, close."""
        hd = self.open_file(w, box, ".send")
        return self.session(hd, lambda: self.write(hd, payload(tag, size)))

    def op_drop(self, w, box, name, excl, size, tag):
        """open NAME with O_CREAT | O_WRONLY | O_NONBLOCK (| O_EXCL), write, close."""
        hd = self.open_file(w, box, name, excl)
        return self.session(hd, lambda: self.write(hd, payload(tag, size)))

    def op_recv(self, w, box):
        """open .receive O_NONBLOCK, read until a read returns 0 (one message), close."""
        hd = self.open_file(w, box, ".receive")
        return self.session(hd, lambda: self.receive_all(hd))

    def op_recv_part(self, w, box):
        """open .receive O_NONBLOCK, read 1 byte, close: the rest goes back to the head."""
        hd = self.open_file(w, box, ".receive")
        return self.session(hd, lambda: self.read(hd, 1))

    # ------------------------------------------------------------ mailboxes

    def op_mkdir(self, w, box, mode):
        if box in self.boxes:
            raise Refused(errno.EEXIST)
        check_name(box)
        self.made += 1
        self.boxes[box] = Box(self.made, int(mode, 8), self.uids[w])

    def op_rmdir(self, w, box):
        b = self.box(box)
        self.owner(w, b)
        if b.queue or b.aside:  # queued, being read or being written
            raise Refused(errno.ENOTEMPTY)
        b.removed = True
        del self.boxes[box]

    def op_rename(self, w, box, to):
        b = self.box(box)
        if to == box:
            return None
        self.owner(w, b)
        if to in self.boxes:
            self.owner(w, self.boxes[to])
        check_name(to)
        if to in self.boxes:
            raise Refused(errno.EEXIST)  # never replaces a mailbox (README's choice)
        self.boxes[to] = self.boxes.pop(box)

    def op_chmod(self, w, box, mode):
        b = self.box(box)
        self.owner(w, b)
        b.mode = int(mode, 8)

    def op_setcap(self, w, box, value):
        b = self.box(box)
        self.need(w, b, W)
        text = value[:-1] if value.endswith("\n") else value
        if text == "unlimited":
            b.capacity = None
        elif text.isascii() and text.isdigit():
            b.capacity = int(text)
        else:
            raise Refused(errno.EINVAL)

    def op_setmax(self, w, box, value):
        b = self.box(box)
        self.need(w, b, W)
        text = value[:-1] if value.endswith("\n") else value
        if not (text.isascii() and text.isdigit()) or int(text) > 1 << 40:
            raise Refused(errno.EINVAL)
        b.max_size = int(text)

    def op_getcap(self, w, box):
        b = self.box(box)
        self.need(w, b, R)
        return "unlimited" if b.capacity is None else str(b.capacity)

    def op_policy(self, w, box, value):
        b = self.box(box)
        self.need(w, b, W)
        if value not in ("any", "exclusive", "pair"):
            raise Refused(errno.EINVAL)
        b.policy = value
        b.pair = []  # setting a policy clears the pair binding

    def op_ident(self, w, box):
        """user.ipc.id, and where by-id/ID points."""
        b = self.box(box)
        self.need(w, b, R)
        return [b.serial, f"../mailboxes/{box}"]

    def op_ls(self, w, box=None):
        if box is None:
            return sorted(self.boxes)
        b = self.box(box)
        self.need(w, b, R)
        return sorted(m.name for m in b.queue)

    def op_status(self, w, box):
        b = self.inside(w, box)
        self.need(w, b, R)
        return status_of(b)

    def op_misplace(self, w, what, box=None, name=None):
        """Objects where they do not belong: a directory inside a mailbox, a file directly in
        mailboxes/, a symlink or a hard link in a mailbox: EPERM."""
        if what != "file":
            b = self.inside(w, box)
            if what == "link" and b.find(name) is None:
                raise Refused(errno.ENOENT)
            self.need(w, b, W)
        raise Refused(errno.EPERM)

    # ------------------------------------------------------------ messages by name

    def message(self, w, box, name):
        m = self.inside(w, box).find(name)
        if m is None:
            raise Refused(errno.ENOENT)
        return m

    def op_peek(self, w, box, name):
        return self.message(w, box, name).data

    def op_attrs(self, w, box, name):
        """stat and the user.ipc.* xattrs of a message."""
        m = self.message(w, box, name)
        return [MSG_MODE, m.uid, len(m.data), m.seq, m.sender, m.redeliveries]

    def op_rm(self, w, box, name):
        b = self.inside(w, box)
        m = b.find(name)
        if m is None and name != CONTROL:
            raise Refused(errno.ENOENT)
        self.need(w, b, W)
        if m is None:
            raise Refused(errno.EPERM)  # control nodes cannot be removed
        self.discarded += 1
        if m in b.queue:
            b.queue.remove(m)
            return
        b.aside.remove(m)  # a drop-in being written: its writer's writes go nowhere
        m.holds_place = False
        next(hd for hd in self.handles.values() if hd.msg is m).discarded = True

    def op_mv(self, w, box, name, to, new):
        src = self.inside(w, box)
        dst = self.inside(w, to)
        m = src.find(name)
        if m is None and name != CONTROL:
            raise Refused(errno.ENOENT)
        if src is dst and name == new:
            return None  # the same file: the kernel does nothing
        self.need(w, src, W)
        self.need(w, dst, W)
        check_name(new)
        if m is None:
            raise Refused(errno.EPERM)
        if m in src.aside:
            raise Refused(errno.EBUSY)  # still being written
        if dst.taken(new):
            raise Refused(errno.EEXIST)
        # Forwarded: to the tail of the target's queue, seq kept; refused while the target
        # is full, like a non-blocking send (no receiver ever waits in the model).
        if src is not dst and not dst.has_room():
            raise Refused(errno.EAGAIN)
        m.name = new
        if src is not dst:
            src.queue.remove(m)
            dst.queue.append(m)


def status_of(box):
    """The fields of a mailbox's .status the test compares (bound: worker indices)."""
    return {"messages": len(box.queue), "bytes": sum(len(m.data) for m in box.queue),
            "capacity": "unlimited" if box.capacity is None else str(box.capacity),
            "policy": box.policy, "bound": list(box.pair)}


# ---------------------------------------------------------------- random operations

WEIGHTS = {"send": 20, "drop": 7, "recv": 15, "recv_part": 3, "peek": 6, "attrs": 4, "rm": 5,
           "mv": 7, "mkdir": 5, "rmdir": 4, "rename": 3, "chmod": 2, "setcap": 6, "setmax": 2,
           "getcap": 2, "policy": 3, "ident": 2, "ls": 4, "status": 3, "misplace": 1,
           "open": 5, "write": 7, "read": 6, "poll": 2, "fsync": 2, "close": 6}
ON_HANDLES = {"write": ("send", "drop"), "read": ("receive",), "poll": ("receive",),
              "fsync": (), "close": ()}  # operations on open files: the kinds they suit
MAX_OPEN = 4


class Generator:
    """Random operations from a seed, biased towards names and files that exist in the
    model (which it updates as it goes), so most operations act on real objects."""

    def __init__(self, seed, uids=WORKER_UIDS):
        self.rng = random.Random(seed)
        self.model = Model(uids)
        self.roots = [w for w, uid in enumerate(uids) if uid == 0]
        self.tag = self.last_handle = 0

    def ops(self, count):
        for _ in range(count):
            op = self.next()
            self.model.apply(op)
            yield op

    def pick(self, seq):
        return self.rng.choice(list(seq))

    def box_name(self, fresh=False):
        existing = sorted(self.model.boxes)
        r = self.rng.random()
        if existing and r < (0.1 if fresh else 0.85):
            return self.pick(existing)
        return self.pick(BAD_NAMES) if r > 0.96 else self.pick(BOX_NAMES)

    def msg_name(self, box, control=False):
        b = self.model.boxes.get(box)
        names = [m.name for m in b.queue + b.aside] if b else []
        if names and self.rng.random() < 0.85:
            return self.pick(names)
        return self.pick(MSG_NAMES + ((CONTROL,) if control else ()))

    def data(self, op):
        self.tag += 1
        r = self.rng.random()
        size = (0 if r < 0.07 else self.rng.randint(1, 64) if r < 0.9
                else self.rng.randint(65, 5000) if r < 0.98 else 70_000)  # > one 64 KiB read
        op.update(size=size, tag=self.tag)

    def next(self):
        kind = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        handles = sorted(self.model.handles)
        if kind == "open" and len(handles) >= MAX_OPEN:
            kind = "close"
        if kind in ON_HANDLES and handles:
            return self.on_handle(kind, handles)
        if kind in ON_HANDLES:
            kind = "open"
        op = {"op": kind, "w": self.rng.randrange(len(self.model.uids))}
        if kind == "misplace":
            op["what"] = self.pick(("mkdir", "file", "symlink", "link"))
            if op["what"] == "link":
                # By root: for another user, the kernel's fs.protected_hardlinks setting
                # decides whether EPERM comes before the permission check on the directory.
                op["w"] = self.pick(self.roots)
        if kind == "mkdir":
            op.update(box=self.box_name(fresh=True), mode=self.pick(MODES))
        elif not (kind == "ls" and self.rng.random() < 0.2 or op.get("what") == "file"):
            op["box"] = self.box_name()  # (else: the listing of, or a file in, mailboxes/)
        if kind == "open":
            self.last_handle += 1
            r = self.rng.random()
            op.update(h=self.last_handle, node=".send" if r < 0.4 else ".receive" if r < 0.7
                      else self.pick(MSG_NAMES))
            if r >= 0.7:
                op["excl"] = self.rng.random() < 0.7
        elif kind == "rename":
            op["to"] = self.box_name(fresh=True)
        elif kind == "chmod":
            op["mode"] = self.pick(MODES)
        elif kind in ("setcap", "setmax", "policy"):
            op["value"] = self.pick({"setcap": CAPACITIES, "setmax": MAX_SIZES,
                                     "policy": POLICIES}[kind])
        elif kind == "send":
            self.data(op)
        elif kind == "drop":
            self.data(op)
            bad = self.rng.random() < 0.05
            op.update(name=self.pick(BAD_NAMES if bad else MSG_NAMES),
                      excl=self.rng.random() < 0.7, size=max(1, op["size"]))
        elif kind in ("peek", "attrs") or op.get("what") == "link":
            op["name"] = self.msg_name(op["box"])
        elif kind == "rm":
            op["name"] = self.msg_name(op["box"], control=True)
        elif kind == "mv":
            op.update(name=self.msg_name(op["box"], control=True), to=self.box_name())
            r = self.rng.random()
            op["new"] = (op["name"] if r < 0.6 else self.pick(BAD_NAMES) if r > 0.95
                         else self.pick(MSG_NAMES))
        return op

    def on_handle(self, kind, handles):
        suits = [h for h in handles if self.model.handles[h].kind in ON_HANDLES[kind]]
        if suits and self.rng.random() < 0.9:
            handles = suits
        # Now and then a file that is not open: EBADF.
        op = {"op": kind, "h": self.pick(handles) if self.rng.random() < 0.95
              else self.last_handle + 1}
        if kind == "write":
            self.data(op)
        elif kind == "read":
            op["size"] = self.pick((1, 3, 65536))
        return op
