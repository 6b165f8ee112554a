#!/usr/bin/env python3
"""Wait on several ipcfs mailboxes at once and print messages as they arrive.

    poll_wait.py -n N MAILBOX_DIR [MAILBOX_DIR ...]

Each mailbox's .receive is opened once with O_NONBLOCK and registered with a
selector (epoll on Linux): it reports readable while a message is waiting.  On
each readiness event one whole message is taken and printed as
"MAILBOX: payload"; the program exits after N messages.
"""
import argparse
import os
import selectors
import sys

CHUNK = 64 * 1024


def take_one(fd: int):
    """Take one whole message from a non-blocking .receive fd.

    Returns the payload, or None if the mailbox turned out to be empty
    (another receiver was faster): EAGAIN before the first byte.
    """
    buf = bytearray()
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            if not buf:
                return None
            raise  # not expected mid-message: a message is delivered whole
        if not chunk:  # end of message
            return bytes(buf)
        buf += chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, required=True, help="exit after this many messages")
    parser.add_argument("mailboxes", nargs="+", metavar="MAILBOX_DIR")
    args = parser.parse_args()

    sel = selectors.DefaultSelector()  # EpollSelector on Linux
    for mailbox in args.mailboxes:
        name = os.path.basename(os.path.normpath(mailbox))
        fd = os.open(os.path.join(mailbox, ".receive"), os.O_RDONLY | os.O_NONBLOCK)
        sel.register(fd, selectors.EVENT_READ, data=name)
    print(f"poll_wait: waiting on {', '.join(k.data for k in sel.get_map().values())}",
          file=sys.stderr, flush=True)

    seen = 0
    try:
        while seen < args.n:
            for key, _ in sel.select():
                payload = take_one(key.fd)
                if payload is None:
                    continue
                text = payload.decode("utf-8", errors="replace").removesuffix("\n")
                print(f"{key.data}: {text}", flush=True)
                seen += 1
                if seen == args.n:
                    break
    finally:
        for key in list(sel.get_map().values()):
            sel.unregister(key.fd)
            os.close(key.fd)
        sel.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
