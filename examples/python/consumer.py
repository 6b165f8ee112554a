#!/usr/bin/env python3
"""Receive N messages from an ipcfs mailbox and print them.

    consumer.py MAILBOX_DIR N

One open file of MAILBOX_DIR/.receive serves any number of messages: each
read() continues the current message, a read() returning b"" marks its end, and
the next read() takes (and, while the mailbox is empty, waits for) the next one.
"""
import argparse
import os
import sys
from typing import BinaryIO, Iterator

CHUNK = 64 * 1024


def messages(receive: BinaryIO) -> Iterator[bytes]:
    """Yield whole messages from an unbuffered, open .receive file."""
    buf = bytearray()
    while True:
        chunk = receive.read(CHUNK)  # one read(2): blocks while the mailbox is empty
        if chunk:
            buf += chunk
        else:  # end of this message; the next read takes the next one
            yield bytes(buf)
            buf.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mailbox", help="mailbox directory, e.g. /tmp/ipc/mailboxes/jobs")
    parser.add_argument("n", type=int, help="number of messages to receive")
    args = parser.parse_args()

    if args.n <= 0:
        return
    out = sys.stdout.buffer
    # buffering=0: every .read() is exactly one read(2), so b"" is seen as end of message.
    with open(os.path.join(args.mailbox, ".receive"), "rb", buffering=0) as receive:
        for count, message in enumerate(messages(receive), start=1):
            out.write(message if message.endswith(b"\n") else message + b"\n")
            out.flush()
            if count == args.n:
                break


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
