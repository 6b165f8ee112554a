#!/usr/bin/env python3
"""Request/reply between a parent and N forked workers through their inboxes in procs/.

    procs_request_reply.py [--timeout SECONDS] MOUNT [N]      (N workers, default 3)

Every live process has an inbox at MOUNT/procs/PID: a write+close of procs/PID/.send sends
it one message, a read of procs/PID/.receive takes one, and procs/PID/from/Q takes only the
next message sent by process Q (or its descendants). procs/self is the inbox of the process
that opens the path.

The parent forks N workers and sends worker K the job "sum 1..10K" through
procs/WORKER/.send opened read-write, so that reading it back returns the receipt
"delivered SEQ to WORKER" once the worker has taken the job. Each worker takes its job from
procs/self/.receive, computes the sum and replies "PID SUM" to procs/PARENT/.send. The
parent reads procs/self/from/WORKER for each worker, so each reply is matched to its worker
whatever order they arrive in, and prints "worker K: sum 1..N = SUM". It exits 0 if every
receipt and reply is right, 1 with a message otherwise.

Every wait has a deadline (--timeout, default 10 s): receives poll() their node with the
time left; a receipt read (poll() always reports .send ready) is interrupted by a timer
signal. Standard library only.
"""
import argparse
import os
import re
import select
import signal
import sys
import time

CHUNK = 64 * 1024


class Failure(Exception):
    """Something went wrong: the message says what."""


def receive(path: str, timeout: float) -> bytes:
    """Take one whole message from a receiving node (.receive or from/Q) within timeout seconds."""
    deadline = time.monotonic() + timeout
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # readable while a message is waiting
        message = bytearray()
        while True:
            try:
                chunk = os.read(fd, CHUNK)  # the first read takes a message, 0 marks its end
            except BlockingIOError:  # nothing to take yet: wait for the time left
                left = deadline - time.monotonic()
                if left <= 0 or not poller.poll(left * 1000):
                    raise Failure(f"no message in {path} within {timeout:g} s") from None
                continue
            if not chunk:
                return bytes(message)
            message += chunk
    finally:
        os.close(fd)


def send(path: str, payload: bytes) -> None:
    """Send one message: one open, write, close."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)  # delivers the message (and reports a failed delivery)


def on_alarm(_signum, _frame):
    raise TimeoutError


def send_with_receipt(path: str, payload: bytes, timeout: float) -> str:
    """Send one message and return its receipt, waiting at most timeout seconds for it."""
    fd = os.open(path, os.O_RDWR)  # read-write: reading after the write returns the receipt
    try:
        os.write(fd, payload)
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return os.read(fd, 256).decode()  # delivers, then waits until the receiver took it all
        except TimeoutError:
            raise Failure(f"no receipt from {path} within {timeout:g} s") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    finally:
        os.close(fd)


def worker(procs: str, parent: int, timeout: float) -> None:
    """Take one job from this process's own inbox, compute it, reply to the parent."""
    job = receive(os.path.join(procs, "self", ".receive"), timeout).decode()  # self: this worker
    match = re.fullmatch(r"sum 1\.\.(\d+)", job)
    if not match:
        raise Failure(f"worker {os.getpid()}: bad job {job!r}")
    total = sum(range(1, int(match[1]) + 1))
    send(os.path.join(procs, str(parent), ".send"), f"{os.getpid()} {total}".encode())


def start_worker(procs: str, timeout: float) -> int:
    parent = os.getpid()
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        return pid
    status = 0
    try:
        worker(procs, parent, timeout)
    except (Failure, OSError) as e:
        print(f"procs_request_reply: {e}", file=sys.stderr)
        status = 1
    finally:
        os._exit(status)  # never return into the parent's code


def request_reply(procs: str, n: int, timeout: float, workers: list) -> None:
    for _ in range(n):
        workers.append(start_worker(procs, timeout))
    for k, w in enumerate(workers, start=1):  # one job to each worker's inbox, with a receipt
        receipt = send_with_receipt(os.path.join(procs, str(w), ".send"), f"sum 1..{10 * k}".encode(), timeout)
        delivered = re.fullmatch(rf"delivered (\d+) to {w}\n", receipt)  # SEQ, receiver's pid
        if not delivered:
            raise Failure(f"worker {k} (pid {w}): unexpected receipt {receipt!r}")
        print(f"job {k}: delivered {delivered[1]} to worker {k}")
    for k, w in enumerate(workers, start=1):  # one reply from each worker, whatever the order
        top = 10 * k
        expected = f"{w} {top * (top + 1) // 2}"  # the worker's pid proves who answered
        reply = receive(os.path.join(procs, "self", "from", str(w)), timeout).decode()
        if reply != expected:
            raise Failure(f"worker {k} (pid {w}): expected {expected!r}, got {reply!r}")
        print(f"worker {k}: sum 1..{top} = {reply.split()[1]}")
    for k, w in enumerate(workers, start=1):
        code = os.waitstatus_to_exitcode(os.waitpid(w, 0)[1])  # it has replied: it is exiting
        workers[k - 1] = None
        if code != 0:
            raise Failure(f"worker {k} exited with status {code}")
    left = os.listdir(os.path.join(procs, "self"))
    if left:
        raise Failure(f"the parent's inbox still holds: {' '.join(left)}")
    print(f"{n} replies, each matched to its worker")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds any one wait may take")
    parser.add_argument("mount", help="ipcfs mount point, e.g. /tmp/ipc")
    parser.add_argument("n", type=int, nargs="?", default=3, help="number of workers (default 3)")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("N must be at least 1")
    procs = os.path.join(args.mount, "procs")
    if not os.path.isdir(procs):
        print(f"procs_request_reply: {procs}: not a directory (is ipcfs mounted on {args.mount}?)",
              file=sys.stderr)
        return 1

    workers = []
    try:
        request_reply(procs, args.n, args.timeout, workers)
    except (Failure, OSError) as e:
        print(f"procs_request_reply: {e}", file=sys.stderr)
        return 1
    finally:
        for w in filter(None, workers):  # workers not reaped yet (after a failure): ours to stop
            try:
                os.kill(w, signal.SIGTERM)
                os.waitpid(w, 0)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
