"""Direct communication through procs/: every live process has an inbox, procs/PID, that is
a mailbox (same control nodes, capacity, receipts, batches); procs/self links to the
caller's pid; procs/P/from/Q takes only what Q (or a descendant of Q) sent; only P, its
descendants and root receive or browse P's inbox, only callers allowed to signal P send to
it; an exited process's inbox is retired (messages discarded and counted, waiters EIDRM)
and a recycled pid starts with an empty inbox.

Contract: spec/interface.md, "Namespace", "Direct communication (procs/)" and "Everywhere".
Every actor whose pid matters is a separate process (an agent driven over a pipe); the test
process itself plays the parent P where a parent is needed. A waiter is known to be parked
when the inbox's .status shows it; every blocking step has a deadline.

Privacy runs twice, on mounts other uids reach (allow_other): the daemon started by root,
and started with a non-root effective uid. Both have default_permissions (ipcfs always
adds it), so the kernel checks the inbox's mode 0700 first and the daemon's rules decide
what the mode lets through (same uid, not a descendant)."""
import errno
import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

import conftest
from conftest import wait_until
from ipcfs_helpers import (AGENT, EXIT_DEADLINE_S, PY, STEP_S, Agent, Call, alive, expect_errno,
                           field, read_message, read_status, receipt_fd, received,
                           receive_nowait, send, set_capacity, start_receive, wait_field)
from ipcfs_helpers import no_mount_left  # noqa: F401 (autouse fixture: no mount survives a test)

NOBODY = 65534
REAP_S = 5.0  # an exited process's inbox is retired within about a second
RECYCLE_TRIES = 200  # forks to get a given pid back (other processes may take it first)
SAME_TICK_TRIES = 100  # rounds of start, send, exit and recycle to fit them in one clock tick


# ---------------------------------------------------------------- paths

def procs(m):
    return m / "procs"


def inbox(m, pid):
    return m / "procs" / str(pid)


def root_count(m, key):
    return int(field(m.path, key))


# ---------------------------------------------------------------- agents

# What an Agent of ipcfs_helpers does, and more: become another user, list, readlink, send in
# one step, rename, unlink, start a child of its own.
EXTRA_OPS = r"""
        elif op == "become":  # enter cwd (still root), then drop to uid:uid, no groups
            os.chdir(cmd["cwd"])
            os.setgroups([])
            os.setresgid(cmd["uid"], cmd["uid"], cmd["uid"])
            os.setresuid(cmd["uid"], cmd["uid"], cmd["uid"])
            reply(ok=None)
        elif op == "send":  # open / write / close: one message
            fd = os.open(cmd["path"], cmd["flags"], 0o644)
            try:
                os.write(fd, bytes.fromhex(cmd["data"]))
            finally:
                os.close(fd)
            reply(ok=None)
        elif op == "listdir":
            reply(ok=sorted(os.listdir(cmd["path"])))
        elif op == "readlink":
            reply(ok=os.readlink(cmd["path"]))
        elif op == "rename":
            os.rename(cmd["src"], cmd["dst"])
            reply(ok=None)
        elif op == "unlink":
            os.unlink(cmd["path"])
            reply(ok=None)
        elif op == "spawn":  # a child of this process, output to a file; answers its pid
            import subprocess
            with open(cmd["out"], "wb") as out:
                child = subprocess.Popen(cmd["argv"], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
            reply(ok=child.pid)
"""
_ANCHOR = "    except OSError as e:\n"
assert AGENT.count(_ANCHOR) == 1, "ipcfs_helpers.AGENT changed shape: update EXTRA_OPS"
PROCS_AGENT = AGENT.replace(_ANCHOR, EXTRA_OPS.lstrip("\n") + _ANCHOR)


class ProcsAgent(Agent):
    """An Agent running PROCS_AGENT (the ops above besides the usual ones)."""

    def __init__(self):  # Agent.__init__ with PROCS_AGENT for AGENT
        self.proc = subprocess.Popen([PY, "-c", PROCS_AGENT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.pid = self.reply()["pid"]

    def do(self, op, **args):
        """Runs op in the agent; its value, or the OSError it failed with."""
        r = self.call(op=op, **args)
        if "errno" in r:
            raise OSError(r["errno"], os.strerror(r["errno"]), op)
        return r["ok"]

    def outcome(self, op, **args):
        """'ok', or the errno name op failed with."""
        r = self.call(op=op, **args)
        return "ok" if "errno" not in r else errno.errorcode[r["errno"]]

    def send(self, path, data, flags=os.O_WRONLY):
        return self.do("send", path=str(path), flags=flags, data=data.hex())

    def receive(self, path, flags=os.O_RDONLY):
        """Opens path, takes one message (to its end-of-message read), closes."""
        fd = self.open(path, flags)
        try:
            return received_by(self, fd)
        finally:
            self.do("close", fd=fd)


def received_by(agent, fd):
    agent.request(op="recv", fd=fd)
    return received(agent)


@pytest.fixture
def agent(request):
    """Factory of ProcsAgents (children of the test process), as root or, given uid, as that
    user (after entering cwd); each is killed by pid at teardown."""
    def make(uid=None, cwd=None):
        a = ProcsAgent()
        request.addfinalizer(a.kill)
        if uid is not None:
            a.do("become", uid=uid, cwd=str(cwd))
        return a
    return make


def wait_exit(proc):
    proc.stdin.close()
    proc.wait(timeout=EXIT_DEADLINE_S)


def start_idle():
    """A process that lives until its stdin is closed (cat: quick to start, to recycle pids)."""
    return subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def sent_with_receipt(fd, box, data):
    """Writes data on fd (.send opened O_RDWR) and starts the read that delivers it and
    returns its receipt (a Call), once that read waits in box."""
    assert os.write(fd, data) == len(data)
    receipt = Call(lambda: os.read(fd, 100))
    wait_field(box, "receipts_waiting", 1)
    return receipt


# ---------------------------------------------------------------- mounts for other users

def fuse_options(m):
    """The super-block options of m's mount (allow_other, default_permissions, ...)."""
    target = os.path.realpath(m.path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                return set(fields[fields.index("-") + 3].split(","))
    raise AssertionError(f"{target} is not mounted")


def run_daemon_without_root(tmp_path, monkeypatch):
    """Makes the next Mount start ipcfs with a non-root effective uid (real uid still 0, so
    fusermount3 accepts allow_other). The daemon keeps
    CAP_DAC_READ_SEARCH to reach its mountpoint in the test's private directory. Such a
    process is not dumpable, which LeakSanitizer needs to stop its threads: leak checking
    (under ASan) is off for this daemon only; the same code is leak-checked in the others."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to start the daemon with a non-root euid")
    command = shlex.join([setpriv, f"--euid={NOBODY}", "--inh-caps=+dac_read_search",
                          "--ambient-caps=+dac_read_search", "--",
                          os.path.abspath(conftest.IPCFS_BIN)])
    wrapper = tmp_path / "ipcfs-without-root"
    wrapper.write_text("#!/bin/sh\n"
                       'export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"\n'
                       f'exec {command} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(conftest, "IPCFS_BIN", str(wrapper))


@pytest.fixture(params=["non_root_daemon", "root_daemon"])
def shared(request, make_mount, tmp_path, monkeypatch):
    """A mount other users reach (allow_other), made by a daemon with a non-root effective
    uid (asked for allow_other alone) or by root; default_permissions either way."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run processes as another uid")
    if request.param == "non_root_daemon":
        run_daemon_without_root(tmp_path, monkeypatch)
    m = make_mount(options=("allow_other",))
    assert {"allow_other", "default_permissions"} <= fuse_options(m)
    return m


# ---------------------------------------------------------------- procs/self

def test_procs_self_links_to_the_callers_pid_also_from_a_thread(mount, agent):
    link = procs(mount) / "self"
    assert stat.S_ISLNK(os.lstat(link).st_mode)
    assert os.readlink(link) == str(os.getpid())
    tid = []

    def from_a_thread():
        tid.append(threading.get_native_id())
        return os.readlink(link)
    assert Call(from_a_thread).result() == str(os.getpid())
    assert tid[0] != os.getpid()
    # the target depends on who reads the link, every time
    other = agent()
    assert other.do("readlink", path=str(link)) == str(other.pid)
    assert os.readlink(link) == str(os.getpid())
    # and it leads to the caller's inbox
    assert os.stat(link).st_ino == os.stat(inbox(mount, os.getpid())).st_ino
    assert os.path.realpath(link) == os.path.realpath(inbox(mount, os.getpid()))
    assert os.stat(link).st_ino != os.stat(inbox(mount, other.pid)).st_ino


# ---------------------------------------------------------------- parent and child

def test_child_sends_to_its_parent_and_the_parent_to_its_child(mount, agent):
    child = agent()
    me = os.getpid()
    # child -> parent: procs/<parent>/.send, read on the parent's procs/self/.receive
    child.send(inbox(mount, me) / ".send", b"hello parent")
    assert os.listdir(procs(mount) / "self") == ["0000000001"]
    assert os.getxattr(procs(mount) / "self" / "0000000001", "user.ipc.sender_pid") == \
        str(child.pid).encode()
    fd = os.open(procs(mount) / "self" / ".receive", os.O_RDONLY)
    try:
        assert Call(lambda: read_message(fd)).result() == b"hello parent"
    finally:
        os.close(fd)
    # parent -> child: procs/<child>/.send, read on the child's procs/self/.receive
    cfd = child.open(procs(mount) / "self" / ".receive")
    child.request(op="recv", fd=cfd)
    wait_field(inbox(mount, child.pid), "receivers_waiting", 1)
    send(inbox(mount, child.pid), b"hello child")
    assert received(child) == b"hello child"
    for pid in (me, child.pid):
        assert read_status(inbox(mount, pid))["messages"] == "0"
        assert read_status(inbox(mount, pid))["received"] == "1"


def test_batch_nodes_of_an_inbox_send_and_take_many_messages(mount, agent):
    child = agent()
    child.send(inbox(mount, os.getpid()) / ".send-lines", b"one\ntwo\nthree\n")
    assert sorted(os.listdir(procs(mount) / "self")) == \
        ["0000000001", "0000000002", "0000000003"]
    fd = os.open(procs(mount) / "self" / ".receive-lines", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 4096) == b"one\ntwo\nthree\n"
    finally:
        os.close(fd)
    assert os.listdir(procs(mount) / "self") == []


# ---------------------------------------------------------------- from/Q

def test_from_q_gives_each_receiver_only_its_senders_messages_in_order(mount, agent):
    me = os.getpid()
    senders = [agent() for _ in range(3)]
    for rnd in range(3):  # interleaved: s0 s1 s2 s0 s1 s2 ...
        for i, s in enumerate(senders):
            s.send(inbox(mount, me) / ".send", b"s%d-%d" % (i, rnd))
    assert field(inbox(mount, me), "messages") == "9"
    # each receiver (a child of the inbox's process) reads from/<its sender>
    receivers = [agent() for _ in senders]
    for i, (r, s) in enumerate(zip(receivers, senders)):
        fd = r.open(inbox(mount, me) / "from" / str(s.pid))
        assert [received_by(r, fd) for _ in range(3)] == [b"s%d-%d" % (i, n) for n in range(3)]
        r.do("close", fd=fd)
        # nothing more from that sender, while the others' messages wait
        fd = r.open(inbox(mount, me) / "from" / str(s.pid), os.O_RDONLY | os.O_NONBLOCK)
        assert r.call(op="read", fd=fd, n=100) == {"errno": errno.EAGAIN}
        r.do("close", fd=fd)
        assert field(inbox(mount, me), "messages") == str(9 - 3 * (i + 1))
    assert os.listdir(procs(mount) / "self") == []


def test_receiver_of_from_q_waits_through_other_senders_messages(mount, agent):
    me = os.getpid()
    q, other = agent(), agent()
    fd = os.open(procs(mount) / "self" / "from" / str(q.pid), os.O_RDONLY)
    try:
        call = Call(lambda: read_message(fd))
        wait_field(inbox(mount, me), "receivers_waiting", 1)
        other.send(inbox(mount, me) / ".send", b"not from q")
        other.send(inbox(mount, me) / ".send", b"nor this")
        # the sends returned: the receiver was passed over, both messages wait
        assert field(inbox(mount, me), "messages") == "2"
        assert field(inbox(mount, me), "receivers_waiting") == "1"
        assert not call.done, f"from/{q.pid} took another sender's message: {call.value!r}"
        q.send(inbox(mount, me) / ".send", b"from q")
        assert call.result() == b"from q"
    finally:
        os.close(fd)
    # the others' messages are still there, for .receive, in order
    assert receive_nowait(procs(mount) / "self") == b"not from q"
    assert receive_nowait(procs(mount) / "self") == b"nor this"


def test_from_q_takes_what_external_commands_of_a_shell_script_q_sent(mount):
    me = os.getpid()
    send(inbox(mount, me), b"from the test itself")  # not from Q: stays for .receive
    script = ('/bin/echo "first from $$" > "$1/.send"; /bin/echo second > "$1/.send"; '
              'echo $$')  # external commands: children of the script, whose $$ is Q
    sh = subprocess.run(["sh", "-c", script, "sh", str(inbox(mount, me))],
                        capture_output=True, timeout=STEP_S)
    assert sh.returncode == 0, sh.stderr
    q = int(sh.stdout)
    names = sorted(os.listdir(procs(mount) / "self"))
    assert names == ["0000000001", "0000000002", "0000000003"]
    senders = {int(os.getxattr(procs(mount) / "self" / n, "user.ipc.sender_pid"))
               for n in names[1:]}
    assert q not in senders and len(senders) == 2, "expected two external commands as senders"
    # Q has exited, but its messages are queued: from/Q resolves and gives them, in order
    fd = os.open(procs(mount) / "self" / "from" / str(q), os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert read_message(fd) == f"first from {q}\n".encode()
        assert read_message(fd) == b"second\n"
        expect_errno(errno.EAGAIN, os.read, fd, 100)
    finally:
        os.close(fd)
    # nothing from Q left and Q dead: from/Q is gone
    expect_errno(errno.ENOENT, os.stat, procs(mount) / "self" / "from" / str(q))
    assert receive_nowait(procs(mount) / "self") == b"from the test itself"


def test_from_q_of_a_dead_q_with_nothing_queued_is_enoent(mount, agent):
    me = os.getpid()
    gone = start_idle()
    wait_exit(gone)
    assert not alive(gone.pid)
    live = agent()
    from_dir = procs(mount) / "self" / "from"
    # a live Q that sent nothing resolves (a file, size 0) and has nothing to give
    st = os.stat(from_dir / str(live.pid))
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    fd = os.open(from_dir / str(live.pid), os.O_RDONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.read, fd, 100)
    finally:
        os.close(fd)
    for how in (os.stat, lambda p: os.open(p, os.O_RDONLY | os.O_NONBLOCK)):
        expect_errno(errno.ENOENT, how, from_dir / str(gone.pid))
    # from/ lists nothing, whatever is queued
    send(inbox(mount, me), b"from me")
    assert os.listdir(from_dir) == []


# ---------------------------------------------------------------- no such process

def test_dead_or_unknown_pid_is_enoent_for_lookup_and_send(mount):
    gone = start_idle()
    wait_exit(gone)
    assert not alive(gone.pid)
    dead = inbox(mount, gone.pid)
    expect_errno(errno.ENOENT, os.stat, dead)
    expect_errno(errno.ENOENT, os.open, dead / ".send", os.O_WRONLY)
    expect_errno(errno.ENOENT, os.open, dead / "note", os.O_WRONLY | os.O_CREAT, 0o644)
    sh = subprocess.run(["bash", "-c", 'echo hi > "$1"', "bash", str(dead / ".send")],
                        capture_output=True, timeout=STEP_S)
    assert sh.returncode != 0 and b"No such file" in sh.stderr, sh.stderr
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    unused = next(p for p in range(pid_max - 1, 1, -1) if not os.path.exists(f"/proc/{p}"))
    for name in (str(unused), str(1 << 22), "0", "-1", "0" + str(os.getpid()), "abc"):
        expect_errno(errno.ENOENT, os.stat, procs(mount) / name)
    assert str(gone.pid) not in os.listdir(procs(mount))


# ---------------------------------------------------------------- privacy

def test_other_user_neither_sends_to_nor_browses_roots_process(shared, agent):
    m = shared
    me = os.getpid()
    owner = agent()  # root, and no ancestor of the intruder
    intruder = agent(uid=NOBODY, cwd=m.path)
    send(inbox(m, owner.pid), b"for root only")
    intruder.send("procs/self/.send", b"the intruder's own")
    box, own = f"procs/{owner.pid}", f"procs/{intruder.pid}"
    outcomes = {
        "send": intruder.outcome("send", path=f"{box}/.send", flags=os.O_WRONLY, data="78"),
        "send to the parent": intruder.outcome("send", path=f"procs/{me}/.send",
                                               flags=os.O_WRONLY, data="78"),
        "drop-in": intruder.outcome("send", path=f"{box}/note",
                                    flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL, data="78"),
        "mv in": intruder.outcome("rename", src=f"{own}/0000000001", dst=f"{box}/planted"),
    }
    for node in (".send-lines", ".send-frames"):
        outcomes[node] = intruder.outcome("open", path=f"{box}/{node}", flags=os.O_WRONLY)
    for node in (".receive", ".receive-lines", ".receive-frames", ".status",
                 f"from/{me}", f"from/{owner.pid}", "0000000001"):
        outcomes[node] = intruder.outcome("open", path=f"{box}/{node}",
                                          flags=os.O_RDONLY | os.O_NONBLOCK)
    outcomes[".receive blocking"] = intruder.outcome("open", path=f"{box}/.receive",
                                                     flags=os.O_RDONLY)
    outcomes["list"] = intruder.outcome("listdir", path=box)
    outcomes["rm"] = intruder.outcome("unlink", path=f"{box}/0000000001")
    outcomes["mv out"] = intruder.outcome("rename", src=f"{box}/0000000001",
                                          dst=f"{own}/stolen")
    assert outcomes == {k: "EACCES" for k in outcomes}
    # nothing changed
    assert os.listdir(inbox(m, owner.pid)) == ["0000000001"]
    assert os.listdir(inbox(m, me)) == []
    assert os.listdir(inbox(m, intruder.pid)) == ["0000000001"]
    assert owner.receive(procs(m) / "self" / ".receive") == b"for root only"


def test_other_user_receives_from_its_own_inbox_and_sends_to_its_own_kind(shared, agent):
    m = shared
    me = os.getpid()
    alice = agent(uid=NOBODY, cwd=m.path)
    bob = agent(uid=NOBODY, cwd=m.path)  # same uid, unrelated to alice
    st = os.stat(inbox(m, alice.pid))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
    # root may send to anyone; alice receives from her own inbox
    send(inbox(m, alice.pid), b"from root")
    assert alice.receive("procs/self/.receive") == b"from root"
    alice.send("procs/self/.send", b"note to self")
    assert alice.do("listdir", path="procs/self") == ["0000000002"]
    assert alice.receive(f"procs/self/from/{alice.pid}") == b"note to self"
    # alice may signal bob (same uid): she may send to him, he receives
    alice.send(f"procs/{bob.pid}/.send", b"alice to bob")
    alice.send(f"procs/{bob.pid}/.send", b"another from alice")
    assert bob.do("listdir", path="procs/self") == ["0000000001", "0000000002"]
    assert bob.receive(f"procs/self/from/{alice.pid}") == b"alice to bob"
    # ... but not browse his inbox: she is not bob nor his descendant (the daemon's own
    # check: the kernel's mode check passes, the inbox is nobody's)
    box = f"procs/{bob.pid}"
    outcomes = {node: alice.outcome("open", path=f"{box}/{node}",
                                    flags=os.O_RDONLY | os.O_NONBLOCK)
                for node in (".receive", ".receive-lines", ".status", f"from/{alice.pid}",
                             "0000000002")}
    outcomes["list"] = alice.outcome("listdir", path=box)
    outcomes["rm"] = alice.outcome("unlink", path=f"{box}/0000000002")
    outcomes["mv out"] = alice.outcome("rename", src=f"{box}/0000000002",
                                       dst=f"procs/{alice.pid}/taken")
    assert outcomes == {k: "EACCES" for k in outcomes}
    assert bob.receive("procs/self/.receive") == b"another from alice"
    # nobody may not send to root's process (the test, alice's parent)
    assert alice.outcome("send", path=f"procs/{me}/.send", flags=os.O_WRONLY, data="78") == \
        "EACCES"
    assert os.listdir(inbox(m, me)) == []


def test_allowed_sender_drops_a_file_into_an_inbox_and_moves_a_message_into_it(shared, agent):
    m = shared
    alice = agent(uid=NOBODY, cwd=m.path)
    bob = agent(uid=NOBODY, cwd=m.path)  # alice may signal bob, but is not his descendant
    alice.send("procs/self/.send", b"to be forwarded")
    outcomes = {
        "drop-in": alice.outcome("send", path=f"procs/{bob.pid}/note",
                                 flags=os.O_WRONLY | os.O_CREAT, data=b"dropped".hex()),
        "mv in": alice.outcome("rename", src=f"procs/{alice.pid}/0000000001",
                               dst=f"procs/{bob.pid}/forwarded"),
    }
    assert outcomes == {"drop-in": "ok", "mv in": "ok"}
    assert bob.do("listdir", path="procs/self") == ["forwarded", "note"]
    assert bob.receive(f"procs/self/from/{alice.pid}") == b"dropped"
    assert bob.receive("procs/self/.receive") == b"to be forwarded"


def test_process_that_switched_uid_keeps_its_inbox(shared, agent):
    m = shared
    p = agent()
    send(inbox(m, p.pid), b"sent while it was root")  # the inbox is made now
    p.do("become", uid=NOBODY, cwd=str(m.path))
    peer = agent(uid=NOBODY, cwd=m.path)
    opened = p.call(op="open", path="procs/self/.receive", flags=os.O_RDONLY | os.O_NONBLOCK)
    assert "ok" in opened, f"the process may not open its own .receive: {opened}"
    assert received_by(p, opened["ok"]) == b"sent while it was root"
    assert peer.outcome("send", path=f"procs/{p.pid}/.send", flags=os.O_WRONLY,
                        data=b"peer".hex()) == "ok"
    assert p.receive(f"procs/self/from/{peer.pid}") == b"peer"


def test_inbox_is_owned_by_the_real_uid_of_its_process(mount, agent):
    p = agent()
    st = os.stat(inbox(mount, p.pid))
    assert (st.st_uid, stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)) == (0, 0o700, True)
    p.do("become", uid=NOBODY, cwd=str(mount.path))
    st = os.stat(inbox(mount, p.pid))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)


# ------------------------------------------------- blocking, poll, receipts, capacity

def test_blocking_receive_is_parked_and_woken_by_a_send(mount, agent):
    me = os.getpid()
    sender = agent()
    fd = os.open(procs(mount) / "self" / ".receive", os.O_RDONLY)
    try:
        call = Call(lambda: read_message(fd))
        wait_field(inbox(mount, me), "receivers_waiting", 1)
        assert not call.done
        assert field(mount.path, "receivers_waiting") == "1"
        sender.send(inbox(mount, me) / ".send", b"wake up")
        assert call.result() == b"wake up"
    finally:
        os.close(fd)
    assert field(inbox(mount, me), "receivers_waiting") == "0"


def test_nonblocking_receive_on_an_empty_inbox_is_eagain(mount, agent):
    q = agent()
    self_box = procs(mount) / "self"
    expect_errno(errno.EAGAIN, receive_nowait, self_box)
    for node in (".receive-lines", ".receive-frames", f"from/{q.pid}"):
        fd = os.open(self_box / node, os.O_RDONLY | os.O_NONBLOCK)
        try:
            expect_errno(errno.EAGAIN, os.read, fd, 4096)
        finally:
            os.close(fd)
    # a message from someone else: .receive has it, from/Q still has nothing
    send(self_box, b"mine")
    fd = os.open(self_box / "from" / str(q.pid), os.O_RDONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.read, fd, 4096)
    finally:
        os.close(fd)
    assert receive_nowait(self_box) == b"mine"


def test_poll_reports_readable_once_a_message_is_there(mount, agent):
    me = os.getpid()
    q, other = agent(), agent()
    fds = [os.open(procs(mount) / "self" / node, os.O_RDONLY | os.O_NONBLOCK)
           for node in (".receive", f"from/{q.pid}")]
    try:
        polls = []
        for fd in fds:
            p = select.poll()
            p.register(fd, select.POLLIN)
            polls.append(p)
        assert [p.poll(0) for p in polls] == [[], []]
        other.send(inbox(mount, me) / ".send", b"from other")
        # .receive becomes readable, from/Q does not
        assert polls[0].poll(STEP_S * 1000) == [(fds[0], select.POLLIN)]
        assert polls[1].poll(0) == []
        assert read_message(fds[0]) == b"from other"
        q.send(inbox(mount, me) / ".send", b"from q")
        assert polls[1].poll(STEP_S * 1000) == [(fds[1], select.POLLIN)]
        assert read_message(fds[1]) == b"from q"
    finally:
        for fd in fds:
            os.close(fd)


def test_receipt_names_the_process_that_received_from_its_inbox(mount, agent):
    child = agent()
    fd = receipt_fd(inbox(mount, child.pid))
    try:
        call = sent_with_receipt(fd, inbox(mount, child.pid), b"with a receipt")
        assert not call.done
        assert child.receive(procs(mount) / "self" / "from" / str(os.getpid())) == \
            b"with a receipt"
        assert call.result() == f"delivered 1 to {child.pid}\n".encode()
        assert Call(lambda: os.read(fd, 100)).result() == b""
    finally:
        os.close(fd)


def test_capacity_bounds_an_inbox_and_a_nonblocking_send_to_a_full_one_is_eagain(mount, agent):
    child = agent()
    box = inbox(mount, child.pid)
    assert os.getxattr(box, "user.ipc.capacity") == b"unlimited"
    set_capacity(box, 1)
    assert os.getxattr(box, "user.ipc.capacity") == b"1"
    assert field(box, "capacity") == "1"
    send(box, b"first")
    fd = os.open(box / ".send", os.O_WRONLY | os.O_NONBLOCK)
    errors = []
    try:
        os.write(fd, b"no room")
    except OSError as e:
        errors.append(e.errno)
    try:
        os.close(fd)
    except OSError as e:
        errors.append(e.errno)
    assert errors[:1] == [errno.EAGAIN], errors
    assert os.listdir(box) == ["0000000001"]
    # a blocking sender waits for room, which the inbox's process makes by receiving
    blocked = Call(lambda: send(box, b"second"))
    wait_field(box, "senders_waiting", 1)
    assert not blocked.done
    assert child.receive(procs(mount) / "self" / ".receive") == b"first"
    assert blocked.result() is None
    assert child.receive(procs(mount) / "self" / ".receive") == b"second"


# ---------------------------------------------------------------- when the process exits

def test_messages_queued_for_an_exited_process_are_discarded_and_counted(mount, agent):
    p = agent()
    box = inbox(mount, p.pid)
    send(box, b"one")
    send(box, b"two")
    fd = receipt_fd(box)
    try:
        receipt = sent_with_receipt(fd, box, b"three, with a receipt")
        assert field(box, "messages") == "3"
        before = {k: root_count(mount, k) for k in ("inbox_discarded", "discarded", "inboxes")}
        p.kill()
        # the daemon notices by itself (no listing, no root .status read meanwhile)
        assert receipt.result(timeout=REAP_S) == b"discarded 3\n"
    finally:
        os.close(fd)
    assert root_count(mount, "inbox_discarded") == before["inbox_discarded"] + 3
    assert root_count(mount, "discarded") == before["discarded"] + 3
    assert root_count(mount, "inboxes") == before["inboxes"] - 1
    assert root_count(mount, "messages") == 0
    assert str(p.pid) not in os.listdir(procs(mount))


RECEIVE_ONCE = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    print("data", os.read(fd, 65536).hex(), flush=True)
except OSError as e:
    print("errno", e.errno, flush=True)
"""


def test_descendant_waiting_on_an_exited_processs_inbox_gets_eidrm(mount, agent, tmp_path):
    parent = agent()
    box = inbox(mount, parent.pid)
    out = tmp_path / "descendant.out"
    pid = parent.do("spawn", argv=[PY, "-c", RECEIVE_ONCE, str(box / ".receive")], out=str(out))
    try:
        wait_field(box, "receivers_waiting", 1)
        parent.kill()
        # answered by the daemon's own reaper: no listing or root .status read meanwhile
        # (a whole line: the file may be read between the writes of one print)
        wait_until(lambda: out.read_text().endswith("\n"), timeout=REAP_S,
                   what="the descendant's blocked read to end")
        assert out.read_text().split() == ["errno", str(errno.EIDRM)]
        wait_until(lambda: not alive(pid), timeout=EXIT_DEADLINE_S, what="the descendant to end")
    finally:
        if alive(pid):  # ours: started by our agent for this test
            os.kill(pid, signal.SIGKILL)
    assert root_count(mount, "receivers_waiting") == 0


# ---------------------------------------------------------------- a recycled pid

def start_ticks(pid):
    """When pid started, in clock ticks since boot (field 22 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def ticks_now():
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def start_with_pid(pid, tries=RECYCLE_TRIES):
    """A process with the given pid (ns_last_pid = pid - 1, then fork), or None when other
    processes took it `tries` times."""
    for _ in range(tries):
        try:
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        except OSError as e:
            pytest.skip(f"cannot set /proc/sys/kernel/ns_last_pid to recycle a pid: {e}")
        proc = start_idle()
        if proc.pid == pid:
            return proc
        wait_exit(proc)
    return None


def test_recycled_pid_starts_with_an_empty_inbox(mount):
    if os.geteuid() != 0:
        pytest.skip("needs root to choose the next pid (ns_last_pid)")
    old = start_idle()
    pid = old.pid
    try:
        send(inbox(mount, pid), b"for the first process")
        send(inbox(mount, pid), b"and this")
        assert os.listdir(inbox(mount, pid)) == ["0000000001", "0000000002"]
        old_ino = os.stat(inbox(mount, pid)).st_ino
        discarded = root_count(mount, "inbox_discarded")
        # the next process with this pid starts in a later clock tick (the same tick: below)
        started = start_ticks(pid)
        wait_until(lambda: ticks_now() > started, timeout=STEP_S, what="the next clock tick")
    finally:
        wait_exit(old)
    new = start_with_pid(pid)
    if new is None:
        pytest.skip(f"pid {pid} could not be recycled: other processes took it "
                    f"{RECYCLE_TRIES} times")
    try:
        box = inbox(mount, pid)
        assert os.listdir(box) == []
        assert os.stat(box).st_ino != old_ino
        assert field(box, "messages") == "0"
        expect_errno(errno.EAGAIN, receive_nowait, box)
        assert root_count(mount, "inbox_discarded") == discarded + 2
        send(box, b"for the second")
        assert receive_nowait(box) == b"for the second"
    finally:
        wait_exit(new)


def kernel_has_pidfs():
    """Whether pidfds live on pidfs (Linux 6.9 on), where each pid has an inode number of its
    own: what tells two processes with the same pid apart within one clock tick."""
    fd = os.pidfd_open(os.getpid())
    try:
        fs = subprocess.run(["stat", "-f", "-L", "-c", "%t", f"/proc/{os.getpid()}/fd/{fd}"],
                            capture_output=True, text=True, timeout=STEP_S)
        return fs.stdout.strip() == "50494446"
    finally:
        os.close(fd)


def test_pid_recycled_within_the_tick_its_first_process_started_in_starts_empty(mount):
    if os.geteuid() != 0:
        pytest.skip("needs root to choose the next pid (ns_last_pid)")
    if not kernel_has_pidfs():
        pytest.skip("without pidfs only the start time (10 ms ticks) tells processes apart")
    for _ in range(SAME_TICK_TRIES):
        old = start_idle()
        pid = old.pid
        try:
            started = start_ticks(pid)
            send(inbox(mount, pid), b"for the first process")
        finally:
            wait_exit(old)
        new = start_with_pid(pid, tries=1)
        if new is None:
            continue
        try:
            if start_ticks(pid) == started:
                assert os.listdir(inbox(mount, pid)) == []
                assert field(inbox(mount, pid), "messages") == "0"
                return
        finally:
            wait_exit(new)
    pytest.skip(f"no pid was recycled within the clock tick of its first process in "
                f"{SAME_TICK_TRIES} tries")


# ---------------------------------------------------------------- listing

def test_procs_lists_self_and_the_inboxes_with_messages_or_waiters(mount, agent):
    listing = lambda: sorted(os.listdir(procs(mount)))  # noqa: E731
    assert listing() == ["self"]
    idle, busy, waiter = agent(), agent(), agent()
    os.stat(inbox(mount, idle.pid))  # an inbox exists (made on lookup) but holds nothing
    assert field(mount.path, "inboxes") == "1"
    assert listing() == ["self"]
    send(inbox(mount, busy.pid), b"queued")
    assert listing() == sorted(["self", str(busy.pid)])
    start_receive(waiter, inbox(mount, waiter.pid))
    wait_field(inbox(mount, waiter.pid), "receivers_waiting", 1)
    assert listing() == sorted(["self", str(busy.pid), str(waiter.pid)])
    entries = {e.name: e for e in os.scandir(procs(mount))}
    assert entries["self"].is_symlink()
    assert entries[str(busy.pid)].is_dir(follow_symlinks=False)
    # inside an inbox: the messages only, no control nodes, no from/
    assert os.listdir(inbox(mount, busy.pid)) == ["0000000001"]
    assert os.listdir(inbox(mount, busy.pid) / "from") == []
    ls = subprocess.run(["ls", "-a", str(inbox(mount, busy.pid))], capture_output=True,
                        text=True, timeout=STEP_S)
    assert ls.stdout.split() == [".", "..", "0000000001"], ls.stdout
    # emptied again: no longer listed
    send(inbox(mount, waiter.pid), b"wake")
    assert received(waiter) == b"wake"
    assert receive_nowait(inbox(mount, busy.pid)) == b"queued"
    assert listing() == ["self"]
    # an exited process with messages is not listed either
    send(inbox(mount, busy.pid), b"left behind")
    assert listing() == sorted(["self", str(busy.pid)])
    busy.kill()
    wait_until(lambda: listing() == ["self"], timeout=REAP_S, what="the exited inbox to go")
