#!/usr/bin/env python3
"""An ordinary (anonymous) pipe made from an ipcfs duplex pipe, producer/consumer style.

    anonymous_pipe.py PIPES_DIR/NAME N

The parent creates the duplex pipe NAME (its open with O_CREAT is the first end) and opens
it again (the second end), then unlinks the name: nobody else can open it any more (ENOENT),
but both ends keep working. It forks; the child keeps one end and produces "item 1" ...
"item N", one line each; the parent keeps the other end, consumes the lines, prints them,
and prints "EOF after N items" when read() returns b"" (the child closed its end by
exiting). Standard library only.
"""
import os
import sys


def produce(fd, n):
    for i in range(1, n + 1):
        data = memoryview(f"item {i}\n".encode())
        while data:  # a pipe write may take part of a large buffer; these are small
            data = data[os.write(fd, data):]


def consume(fd):
    """Yields the lines read from fd until end of file."""
    pending = b""
    while True:
        chunk = os.read(fd, 65536)  # blocks while the pipe is empty
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} PIPES_DIR/NAME N")
    path, n = sys.argv[1], int(sys.argv[2])

    # O_EXCL: a fresh pipe, or fail if the name is taken by someone else's.
    consumer_end = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    producer_end = os.open(path, os.O_RDWR)
    os.unlink(path)  # from here on, only this process and its children hold the pipe

    pid = os.fork()
    if pid == 0:  # child: the producer
        status = 0
        try:
            os.close(consumer_end)
            produce(producer_end, n)
        except OSError as e:
            print(f"producer: {e}", file=sys.stderr)
            status = 1
        finally:
            os._exit(status)  # exiting closes producer_end: the consumer sees end of file

    # parent: the consumer
    os.close(producer_end)
    count = 0
    for line in consume(consumer_end):
        print(line.decode())
        count += 1
    os.close(consumer_end)
    _, status = os.waitpid(pid, 0)
    print(f"EOF after {count} items")
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or count != n:
        sys.exit(f"producer exit status {code}, {count} of {n} items")


if __name__ == "__main__":
    main()
