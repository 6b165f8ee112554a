#!/usr/bin/env python3
"""Send N numbered jobs ("job 1" ... "job N") to an ipcfs mailbox.

    producer.py MAILBOX_DIR N

Everything written between one open() and close() of MAILBOX_DIR/.send is one
message, delivered atomically at close(): a receiver never sees half of it.
"""
import argparse
import os


def send(mailbox: str, payload: bytes) -> None:
    """Send one message: one open, one write, one close."""
    with open(os.path.join(mailbox, ".send"), "wb") as f:
        f.write(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mailbox", help="mailbox directory, e.g. /tmp/ipc/mailboxes/jobs")
    parser.add_argument("n", type=int, help="number of jobs to send")
    args = parser.parse_args()

    for i in range(1, args.n + 1):
        send(args.mailbox, f"job {i}\n".encode())


if __name__ == "__main__":
    main()
