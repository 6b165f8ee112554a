#!/usr/bin/env python3
"""Soak: mixed load on a fresh ipcfs mount for a while, with the daemon's RSS sampled, then
a check that its memory comes back to the baseline once the load has drained.

The load runs every object kind at once, from several processes: mailbox senders and
receivers (1 B to 64 KiB messages), a frames batch pair, mailbox mkdir/rmdir churn, a
duplex pipe echo, a semaphore ping-pong, shm/ segments created, written, mapped and
removed, and procs/ exchanges with short-lived children. Afterwards every object is
removed and the daemon's RSS must fall back to at most baseline + slack, where the
baseline is the RSS after a warm-up (the first tenth of the run, at least 5 s: the daemon's
worker threads and their malloc arenas exist by then).

Usage: bench/soak.py [--seconds N] [--slack-mib M] IPCFS_BINARY
  --seconds N     length of the load (default 600: the 10-minute soak of issue #10)
  --slack-mib M   allowed growth over the baseline after the drain (default 8)
Exit status 0 when memory came back, 1 when it did not or a worker failed, 2 on bad usage.
"""
import argparse
import errno
import mmap
import multiprocessing as mp
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MOUNT_DEADLINE_S = 10.0
DRAIN_DEADLINE_S = 60.0
SAMPLE_PERIOD_S = 0.5


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def is_mounted(path):
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def wait_readable(fd, deadline):
    """Waits until fd is readable or the deadline passes; False on timeout."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    ready, _, _ = select.select([fd], [], [], left)
    return bool(ready)


def send(box, payload, flags=0):
    fd = os.open(box / ".send", os.O_WRONLY | flags)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)


def receive_one(fd, deadline):
    """Reads one whole message from an open .receive; None if none came before the deadline."""
    chunks = []
    while True:
        if not chunks and not wait_readable(fd, deadline):
            return None
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            if chunks:
                continue
            return None
        if not data:
            return b"".join(chunks)
        chunks.append(data)


# --------------------------------------------------------------------------- workers
# Each worker loops until `stop` is set, counting what it did in `done`.

def mailbox_sender(mnt, stop, done, seed):
    rng = random.Random(seed)
    box = mnt / "mailboxes" / "soak"
    while not stop.is_set():
        size = rng.choice([1, 64, 1024, 4096, 65536])
        try:
            send(box, os.urandom(size), os.O_NONBLOCK)  # never stuck on a full mailbox at the end
        except BlockingIOError:
            time.sleep(0.001)  # full: back off briefly (load generation, not synchronisation)
            continue
        with done.get_lock():
            done.value += 1


def mailbox_receiver(mnt, stop, done, seed):
    fd = os.open(mnt / "mailboxes" / "soak" / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while not stop.is_set():
            if receive_one(fd, time.monotonic() + 0.2) is not None:
                with done.get_lock():
                    done.value += 1
    finally:
        os.close(fd)


def frames_pair(mnt, stop, done, seed):
    rng = random.Random(seed)
    box = mnt / "mailboxes" / "soak-frames"
    tx = os.open(box / ".send-frames", os.O_WRONLY)
    rx = os.open(box / ".receive-frames", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while not stop.is_set():
            n = rng.randint(1, 200)
            frames = b"".join(len(p).to_bytes(4, "little") + p for p in (os.urandom(64) for _ in range(n)))
            os.write(tx, frames)
            got = 0
            deadline = time.monotonic() + 5
            while got < n and time.monotonic() < deadline:
                if not wait_readable(rx, deadline):
                    break
                data = os.read(rx, 65536)
                got += count_frames(data)
            if got != n:
                raise RuntimeError(f"frames: sent {n}, received {got}")
            with done.get_lock():
                done.value += n
    finally:
        os.close(tx)
        os.close(rx)


def count_frames(data):
    count, at = 0, 0
    while at + 4 <= len(data):
        at += 4 + int.from_bytes(data[at:at + 4], "little")
        count += 1
    return count


def mkdir_churn(mnt, stop, done, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        box = mnt / "mailboxes" / f"churn-{rng.randrange(8)}"
        try:
            box.mkdir()
            send(box, b"x" * rng.randint(0, 4096))
            fd = os.open(box / ".receive", os.O_RDONLY | os.O_NONBLOCK)
            try:
                receive_one(fd, time.monotonic() + 5)
            finally:
                os.close(fd)
            box.rmdir()
        except FileExistsError:
            continue
        with done.get_lock():
            done.value += 1


def pipe_echo(mnt, stop, done, seed):
    rng = random.Random(seed)
    path = mnt / "pipes" / f"soak-{os.getpid()}"
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    b = os.open(path, os.O_RDWR)
    try:
        while not stop.is_set():
            payload = os.urandom(rng.choice([1, 512, 65536]))
            os.write(a, payload)
            got = b""
            deadline = time.monotonic() + 5
            while len(got) < len(payload):
                if not wait_readable(b, deadline):
                    raise RuntimeError("pipe: echo timed out")
                got += os.read(b, 65536)
            if got != payload:
                raise RuntimeError("pipe: bytes differ")
            with done.get_lock():
                done.value += 1
    finally:
        os.close(a)
        os.close(b)
        path.unlink()


def sem_pingpong(mnt, stop, done, seed):
    path = mnt / "sem" / f"soak-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while not stop.is_set():
            os.pwrite(fd, b"1", 0)
            if not wait_readable(fd, time.monotonic() + 5):
                raise RuntimeError("sem: wait timed out")
            os.pread(fd, 32, 0)
            with done.get_lock():
                done.value += 1
    finally:
        os.close(fd)
        path.unlink()


def shm_cycle(mnt, stop, done, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        path = mnt / "shm" / f"soak-{os.getpid()}-{rng.randrange(4)}"
        size = rng.choice([4096, 1 << 16, 1 << 20])
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, size)
            with mmap.mmap(fd, size) as m:
                m[:] = os.urandom(size)
                m.flush()
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        with done.get_lock():
            done.value += 1


def procs_exchange(mnt, stop, done, seed):
    me = os.getpid()
    while not stop.is_set():
        child = os.fork()
        if child == 0:
            try:
                send(mnt / "procs" / str(me), b"hello from " + str(os.getpid()).encode())
                os._exit(0)
            except BaseException:
                os._exit(1)
        fd = os.open(mnt / "procs" / str(me) / "from" / str(child), os.O_RDONLY | os.O_NONBLOCK)
        try:
            msg = receive_one(fd, time.monotonic() + 5)
        finally:
            os.close(fd)
        _, status = os.waitpid(child, 0)
        if msg is None or status != 0:
            raise RuntimeError(f"procs: child {child} exchange failed (status {status})")
        with done.get_lock():
            done.value += 1


WORKERS = [
    ("mailbox sender", mailbox_sender, 2),
    ("mailbox receiver", mailbox_receiver, 2),
    ("frames pair", frames_pair, 1),
    ("mkdir/rmdir churn", mkdir_churn, 1),
    ("duplex pipe echo", pipe_echo, 1),
    ("semaphore ping-pong", sem_pingpong, 1),
    ("shm create/map/remove", shm_cycle, 1),
    ("procs exchange", procs_exchange, 1),
]


def worker_main(fn, mnt, stop, done, seed, failed):
    try:
        fn(mnt, stop, done, seed)
    except BaseException as e:  # reported by the parent; the worker must not hang
        print(f"soak: {fn.__name__}: {e!r}", file=sys.stderr)
        failed.set()
        stop.set()


# --------------------------------------------------------------------------- the run

def drain(mnt):
    """Receives what the load left queued and removes every object it made."""
    for box in (mnt / "mailboxes").iterdir():
        fd = os.open(box / ".receive", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while receive_one(fd, time.monotonic() + 0.05) is not None:
                pass
        finally:
            os.close(fd)
        box.rmdir()
    for kind in ("shm", "sem", "pipes"):
        for entry in (mnt / kind).iterdir():
            entry.unlink()


def status(mnt):
    text = (mnt / ".status").read_text()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def run(ipcfs, seconds, slack_mib):
    work = Path(tempfile.mkdtemp(prefix="ipcfs-soak."))
    mnt = work / "mnt"
    mnt.mkdir()
    log = open(work / "ipcfs.log", "wb")
    daemon = subprocess.Popen([ipcfs, "-f", "-o", "auto_unmount", "--log-level", "warn", str(mnt)],
                              stdout=log, stderr=subprocess.STDOUT)
    workers = []
    stop = mp.Event()
    failed = mp.Event()
    try:
        deadline = time.monotonic() + MOUNT_DEADLINE_S
        while not is_mounted(mnt):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ipcfs did not mount")
            time.sleep(0.01)
        (mnt / "mailboxes" / "soak").mkdir()
        (mnt / "mailboxes" / "soak-frames").mkdir()
        os.setxattr(mnt / "mailboxes" / "soak", "user.ipc.capacity", b"1000")

        counters = {}
        for seed, (name, fn, count) in enumerate(WORKERS):
            counters[name] = mp.Value("Q", 0)
            for i in range(count):
                p = mp.Process(target=worker_main, args=(fn, mnt, stop, counters[name], seed * 100 + i, failed))
                p.start()
                workers.append(p)

        start = time.monotonic()
        warmup = max(5.0, seconds / 10)
        baseline = None
        peak = 0
        samples = 0
        while time.monotonic() - start < seconds and not failed.is_set():
            time.sleep(SAMPLE_PERIOD_S)
            rss = rss_kib(daemon.pid)
            samples += 1
            peak = max(peak, rss)
            if baseline is None and time.monotonic() - start >= warmup:
                baseline = rss
        stop.set()
        for p in workers:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
                failed.set()
                print(f"soak: worker {p.pid} did not stop within 30 s", file=sys.stderr)
        if baseline is None:
            baseline = rss_kib(daemon.pid)

        drain(mnt)
        after = status(mnt)
        limit = baseline + slack_mib * 1024
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        final = rss_kib(daemon.pid)
        while final > limit and time.monotonic() < deadline:
            time.sleep(SAMPLE_PERIOD_S)
            final = rss_kib(daemon.pid)

        print(f"| figure | value |\n|---|---|")
        print(f"| load | {seconds:.0f} s, {len(workers)} worker processes |")
        for name, _, _ in WORKERS:
            print(f"| {name} | {counters[name].value} operations |")
        print(f"| daemon RSS: baseline (after {warmup:.0f} s warm-up) | {baseline / 1024:.1f} MiB |")
        print(f"| daemon RSS: peak ({samples} samples) | {peak / 1024:.1f} MiB |")
        print(f"| daemon RSS: after the drain | {final / 1024:.1f} MiB (limit {limit / 1024:.1f} MiB) |")
        print(f"| left after the drain | messages {after['messages']}, bytes_held {after['bytes_held']}, "
              f"open_files {after['open_files']} |")
        ok = not failed.is_set() and final <= limit and after["messages"] == "0" and after["bytes_held"] == "0"
        print("soak: memory came back to the baseline" if ok else "soak: FAILED")
        return 0 if ok else 1
    finally:
        stop.set()
        for p in workers:
            if p.is_alive():
                p.kill()
                p.join()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        log.close()
        if daemon.returncode not in (0, None):
            print(f"soak: ipcfs exited with {daemon.returncode}:\n"
                  f"{(work / 'ipcfs.log').read_text(errors='replace')[-4000:]}", file=sys.stderr)
        if not is_mounted(mnt):
            for f in work.iterdir():
                if f.is_file():
                    f.unlink()
            mnt.rmdir()
            work.rmdir()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--slack-mib", type=float, default=8.0)
    parser.add_argument("ipcfs")
    args = parser.parse_args()
    if args.seconds <= 0 or not os.access(args.ipcfs, os.X_OK):
        parser.print_usage(sys.stderr)
        return 2
    return run(args.ipcfs, args.seconds, args.slack_mib)


if __name__ == "__main__":
    sys.exit(main())
