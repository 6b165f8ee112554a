"""Durable mode (--state-dir / -o state_dir=) through a real mount.

The crash test runs concurrent senders and receivers against a daemon that is killed with
SIGKILL at random moments (seeded: IPCFS_CRASH_SEED), restarted on the same state directory
each time, and then checks across the whole run that every acknowledged message was
received to its end exactly once, that nothing was received to its end twice, that a message
a receiver was in the middle of comes back with user.ipc.redeliveries counted, and that ids
and inode numbers stay the same. Other tests: a clean restart keeps everything, and damaged
state directories are refused with a one-line error."""
import mmap
import os
import random
import select
import signal
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import IPCFS_BIN, SANITIZER_MARKS, Mount, check_clean_exit, is_mounted, wait_until

SEED = int(os.environ.get("IPCFS_CRASH_SEED", "9"))
ROUNDS = 24
SENDERS = 3
RECEIVERS = 2
JOIN_DEADLINE_S = 10.0


def mount_on(tmp_path, name, state, *options):
    d = tmp_path / name
    d.mkdir()
    return Mount(d, options=(f"state_dir={state}", *options))


def kill9(m):
    """SIGKILL the daemon (no snapshot, no cleanup: a crash) and lazily unmount what is left."""
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=JOIN_DEADLINE_S)
    m.stop()  # the dead mount goes (fusermount3 -u -z), the log is closed
    assert not is_mounted(m.path)
    bad = [mark for mark in SANITIZER_MARKS if mark in m.log()]
    assert not bad, m.log()[-4000:]


def message_id(data):
    return data.split(b":", 1)[0].decode()


class Ledger:
    """What the clients saw, across every round."""

    def __init__(self):
        self.lock = threading.Lock()
        self.contents = {}     # id -> the bytes sent
        self.acked = set()     # close() returned 0
        self.received = {}     # id -> times received to the end and confirmed
        # When the daemon died: messages a reader had part of (they must come back), and
        # messages it had whole but whose confirming read failed (back, or received once).
        self.partial = set()
        self.whole = set()
        self.acks_this_round = 0
        self.next_id = 0

    def complete(self, data):
        mid = message_id(data)
        with self.lock:
            self.received[mid] = self.received.get(mid, 0) + 1
            assert self.contents.get(mid) == data, f"message {mid} came back different"


def sender(box, sid, rng, ledger, stop, dropin):
    while not stop.is_set():
        with ledger.lock:
            ledger.next_id += 1
            mid = f"{'d' if dropin else 's'}{sid}.{ledger.next_id}"  # short: the first read holds it
        data = f"{mid}:".encode() + b"x" * rng.randrange(0, 150)
        with ledger.lock:
            ledger.contents[mid] = data
        try:
            if dropin:
                fd = os.open(box / mid, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            else:
                fd = os.open(box / ".send", os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)  # the send: acknowledged if this returns
        except OSError:
            return  # the daemon died: this send is not acknowledged
        with ledger.lock:
            ledger.acked.add(mid)
            ledger.acks_this_round += 1


def receiver(box, chunk, frames, ledger, stop):
    """Reads messages in `chunk`-byte reads (.receive), or whole in frame batches
    (.receive-frames). A message counts as received once the reader's next read has
    returned: that read is what confirms the previous one to the daemon."""
    try:
        fd = os.open(box / (".receive-frames" if frames else ".receive"), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    held = []  # messages read, not yet confirmed
    current = b""
    try:
        while not stop.is_set():
            try:
                data = os.read(fd, chunk)
            except BlockingIOError:
                for m in held:
                    ledger.complete(m)
                held = []
                select.select([fd], [], [], 0.05)  # an empty mailbox: wait until readable
                continue
            for m in held:
                ledger.complete(m)
            held = []
            if frames:
                pos = 0
                while pos < len(data):
                    n = int.from_bytes(data[pos:pos + 4], "little")
                    held.append(data[pos + 4:pos + 4 + n])
                    pos += 4 + n
            elif data:
                current += data
            else:
                held.append(current)  # its end: confirmed by this read itself
                for m in held:
                    ledger.complete(m)
                held, current = [], b""
    except OSError:
        with ledger.lock:
            for m in held + ([current] if current else []):
                mid = message_id(m)
                (ledger.whole if ledger.contents[mid] == m else ledger.partial).add(mid)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def scan(box):
    """name -> (id, inode, redeliveries) of every queued message (peeks only)."""
    out = {}
    for name in os.listdir(box):
        p = box / name
        data = p.read_bytes()
        red = int(os.getxattr(p, "user.ipc.redeliveries"))
        out[name] = (message_id(data), os.stat(p).st_ino, red)
    return out


def check_held(ledger, queued):
    """After a restart: what readers held when the daemon died is back at the head, counted
    as redelivered; a message read whole whose confirmation did not get through may instead
    be gone, and then it was received (once)."""
    redeliveries = {mid: red for mid, _, red in queued.values()}
    for mid in ledger.partial:
        assert mid in redeliveries, f"message {mid}, half-read when the daemon died, is lost"
        assert redeliveries[mid] >= 1, f"message {mid} came back without its redelivery counted"
    for mid in ledger.whole:
        if mid in redeliveries:
            assert redeliveries[mid] >= 1, f"message {mid} came back without its redelivery counted"
        else:
            ledger.received[mid] = ledger.received.get(mid, 0) + 1
    ledger.partial.clear()
    ledger.whole.clear()


@pytest.mark.timeout(240)
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(SEED)
    state = tmp_path / "state"
    ledger = Ledger()
    m = mount_on(tmp_path, "r0", state, "journal_size=256K")  # snapshots during the run too
    box = m / "mailboxes" / "crash"
    os.mkdir(box, 0o750)
    os.setxattr(box, "user.ipc.capacity", b"400")
    box_ino, box_id = os.stat(box).st_ino, os.getxattr(box, "user.ipc.id")
    seen_inodes = {}  # message id -> inode number
    redelivered_seen = 0
    try:
        for rnd in range(ROUNDS):
            if rnd > 0:
                m = mount_on(tmp_path, f"r{rnd}", state, "journal_size=256K")
                box = m / "mailboxes" / "crash"
            assert os.stat(box).st_ino == box_ino and os.getxattr(box, "user.ipc.id") == box_id
            assert os.getxattr(box, "user.ipc.capacity") == b"400"
            assert os.stat(box).st_mode & 0o7777 == 0o750
            queued = scan(box)
            ids_queued = {mid for mid, _, _ in queued.values()}
            for name, (mid, ino, red) in queued.items():
                assert seen_inodes.setdefault(mid, ino) == ino, f"{name}: inode changed across a restart"
                redelivered_seen += red > 0
            check_held(ledger, queued)
            for mid in ids_queued:
                assert not ledger.received.get(mid), f"message {mid} was received and is queued again"

            stop = threading.Event()
            ledger.acks_this_round = 0
            threads = [threading.Thread(target=sender, args=(box, s, random.Random(rng.random()), ledger, stop,
                                                             s == 0)) for s in range(SENDERS)]
            threads += [threading.Thread(target=receiver, args=(box, rng.choice((16, 40, 4096)), r == 1, ledger, stop))
                        for r in range(RECEIVERS)]
            for t in threads:
                t.start()
            target = rng.randrange(5, 120)
            wait_until(lambda: ledger.acks_this_round >= target, timeout=30, interval=0.001,
                       what=f"{target} acknowledged sends in round {rnd}")
            kill9(m)
            stop.set()
            for t in threads:
                t.join(JOIN_DEADLINE_S)
                assert not t.is_alive(), "a client hung on a dead mount"

        # Last: a clean start, drain everything, stop cleanly.
        m = mount_on(tmp_path, "final", state)
        box = m / "mailboxes" / "crash"
        queued = scan(box)
        check_held(ledger, queued)
        for name, (mid, ino, red) in queued.items():
            assert seen_inodes.setdefault(mid, ino) == ino
        fd = os.open(box / ".receive", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                data = b""
                try:
                    while chunk := os.read(fd, 65536):
                        data += chunk
                except BlockingIOError:
                    break
                ledger.complete(data)
        finally:
            os.close(fd)
        assert os.listdir(box) == []
    finally:
        m.stop()
    check_clean_exit(m)

    twice = {mid: n for mid, n in ledger.received.items() if n > 1}
    assert not twice, f"received to the end more than once: {sorted(twice)[:10]}"
    lost = sorted(ledger.acked - set(ledger.received))
    assert not lost, f"{len(lost)} acknowledged messages lost: {lost[:10]}"
    phantoms = set(ledger.received) - set(ledger.contents)
    assert not phantoms
    print(f"crash test: seed {SEED}, {ROUNDS} kills, {len(ledger.acked)} acknowledged sends, "
          f"{sum(ledger.received.values())} receptions, {redelivered_seen} redelivered messages seen")
    assert len(ledger.acked) >= ROUNDS * 5


def test_a_clean_restart_keeps_mailboxes_settings_owners_and_messages(tmp_path):
    state = tmp_path / "state"
    m = mount_on(tmp_path, "first", state)
    try:
        box = m / "mailboxes" / "orders"
        os.mkdir(box, 0o700)
        os.chown(box, 1234, 4321)
        os.setxattr(box, "user.ipc.capacity", b"3")
        os.setxattr(box, "user.ipc.policy", b"exclusive")
        os.setxattr(box, "user.ipc.max_msg_size", b"1000")
        for text in (b"one", b"two"):
            fd = os.open(box / ".send", os.O_WRONLY)
            os.write(fd, text)
            os.close(fd)
        (box / "report.txt").write_bytes(b"dropped in")
        os.chmod(box / "report.txt", 0o400)
        os.mkdir(m / "mailboxes" / "old")
        os.rename(m / "mailboxes" / "old", m / "mailboxes" / "renamed")
        before = {p.name: (p.stat().st_ino, p.stat().st_mode, p.read_bytes()) for p in box.iterdir()}
        box_stat = os.stat(box)
        renamed_ino = os.stat(m / "mailboxes" / "renamed").st_ino
    finally:
        m.stop()
    check_clean_exit(m)
    assert (state / "snapshot").exists()

    m = mount_on(tmp_path, "second", state)
    try:
        box = m / "mailboxes" / "orders"
        st = os.stat(box)
        assert (st.st_ino, st.st_mode, st.st_uid, st.st_gid) == (box_stat.st_ino, box_stat.st_mode, 1234, 4321)
        assert sorted(os.listdir(m / "mailboxes")) == ["orders", "renamed"]
        assert os.stat(m / "mailboxes" / "renamed").st_ino == renamed_ino
        assert os.getxattr(box, "user.ipc.capacity") == b"3"
        assert os.getxattr(box, "user.ipc.policy") == b"exclusive"
        assert os.getxattr(box, "user.ipc.max_msg_size") == b"1000"
        after = {p.name: (p.stat().st_ino, p.stat().st_mode, p.read_bytes()) for p in box.iterdir()}
        assert after == before
        assert os.readlink(m / "by-id" / os.getxattr(box, "user.ipc.id").decode()) == "../mailboxes/orders"
        fd = os.open(box / ".receive", os.O_RDONLY)
        try:
            assert os.read(fd, 100) == b"one"
        finally:
            os.close(fd)
    finally:
        m.stop()
    check_clean_exit(m)


def start_refused(tmp_path, state, name):
    """Starts ipcfs on `state`; it must refuse with one line on stderr and mount nothing."""
    mnt = tmp_path / name
    mnt.mkdir()
    r = subprocess.run([IPCFS_BIN, "-f", "-o", f"state_dir={state}", str(mnt)], capture_output=True, timeout=30)
    assert not is_mounted(mnt)
    assert r.returncode != 0
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_damaged_or_shared_state_directories_are_refused(tmp_path):
    state = tmp_path / "state"
    m = mount_on(tmp_path, "first", state)
    box = m / "mailboxes" / "a"
    os.mkdir(box)
    for i in range(20):  # one group commit each: many frames
        fd = os.open(box / ".send", os.O_WRONLY)
        os.write(fd, b"message %d" % i)
        os.close(fd)
    line = start_refused(tmp_path, state, "second")
    assert "in use by another ipcfs" in line
    kill9(m)

    journal = state / "journal.0"
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0x20
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "journal.0").write_bytes(bytes(data))
    line = start_refused(tmp_path, damaged, "on-damaged")
    assert "journal.0" in line and "damaged" in line, line

    m = mount_on(tmp_path, "intact", state)  # the original is fine
    assert len(os.listdir(m / "mailboxes" / "a")) == 20
    m.stop()
    check_clean_exit(m)
    snapshot = state / "snapshot"
    snapshot.write_bytes(snapshot.read_bytes()[:-5])
    line = start_refused(tmp_path, state, "on-truncated")
    assert "snapshot" in line and "checksum" in line, line


def test_semaphores_shm_and_pipe_nodes_survive_kill_9_and_clean_restarts(tmp_path):
    state = tmp_path / "state"
    m = mount_on(tmp_path, "first", state)
    sem, seg = m / "sem" / "items", m / "shm" / "ring"
    fifo, sub = m / "pipes" / "jobs", m / "pipes" / "sub"
    fd = os.open(sem, os.O_CREAT | os.O_WRONLY, 0o640)
    os.write(fd, b"5")
    os.close(fd)
    fd = os.open(sem, os.O_RDONLY)
    assert os.read(fd, 16) == b"4\n"  # one wait
    os.close(fd)
    fd = os.open(seg, os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, 8192)
    with mmap.mmap(fd, 8192) as mem:
        mem[100:105] = b"hello"
        mem.flush()  # msync: durable from here
    os.close(fd)
    os.mkfifo(fifo)
    os.chmod(fifo, 0o620)
    os.mkdir(sub, 0o750)
    fd = os.open(sub / "chat", os.O_CREAT | os.O_RDWR, 0o600)  # a duplex pipe
    os.close(fd)
    os.rename(sub / "chat", sub / "talk")
    inodes = {p: os.stat(p).st_ino for p in (sem, seg, fifo, sub, sub / "talk")}
    kill9(m)

    m = mount_on(tmp_path, "second", state)
    sem, seg = m / "sem" / "items", m / "shm" / "ring"
    fifo, sub = m / "pipes" / "jobs", m / "pipes" / "sub"
    try:
        assert {p.name: os.stat(p).st_ino for p in (sem, seg, fifo, sub, sub / "talk")} == \
            {p.name: ino for p, ino in inodes.items()}
        assert os.getxattr(sem, "user.ipc.value") == b"4"
        assert os.stat(sem).st_mode & 0o7777 == 0o640
        data = seg.read_bytes()
        assert len(data) == 8192 and data[100:105] == b"hello"
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.stat(fifo).st_mode & 0o7777 == 0o620
        assert stat.S_ISDIR(os.stat(sub).st_mode) and sorted(os.listdir(sub)) == ["talk"]
        assert stat.S_ISREG(os.stat(sub / "talk").st_mode)
        fd = os.open(sem, os.O_WRONLY)
        os.write(fd, b"2")
        os.close(fd)
        fd = os.open(seg, os.O_WRONLY)
        os.pwrite(fd, b"world", 200)
        os.close(fd)  # close: durable from here
        os.rename(m / "sem" / "items", m / "sem" / "slots")
    finally:
        m.stop()
    check_clean_exit(m)

    m = mount_on(tmp_path, "third", state)
    try:
        assert os.getxattr(m / "sem" / "slots", "user.ipc.value") == b"6"
        assert (m / "shm" / "ring").read_bytes()[200:205] == b"world"
        os.unlink(m / "shm" / "ring")
        os.unlink(m / "sem" / "slots")
        os.unlink(m / "pipes" / "jobs")
        os.unlink(m / "pipes" / "sub" / "talk")
        os.rmdir(m / "pipes" / "sub")
    finally:
        m.stop()
    check_clean_exit(m)

    m = mount_on(tmp_path, "fourth", state)
    try:
        assert [os.listdir(m / d) for d in ("sem", "shm", "pipes")] == [[], [], []]
        assert os.listdir(state / "shm") == []
    finally:
        m.stop()
    check_clean_exit(m)
