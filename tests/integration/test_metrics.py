"""The root .metrics file: Prometheus text exposition format, scrapeable with `cat`.

Counters follow what happens through the mount: sends, receives, redeliveries, discards,
objects by kind, waiters, and errors returned to callers by errno."""
import errno
import os
import re

from conftest import wait_until
from ipcfs_helpers import expect_errno, send

SAMPLE = re.compile(r'^(ipcfs_[a-z_]+)(\{[a-z_]+="[A-Za-z0-9_]+"\})? (\d+)$')


def metrics(mount):
    """Parses .metrics strictly: every line is a HELP, a TYPE or a sample."""
    values = {}
    for line in (mount / ".metrics").read_text().splitlines():
        if line.startswith("# HELP ipcfs_") or line.startswith("# TYPE ipcfs_"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text format: {line!r}"
        values[m.group(1) + (m.group(2) or "")] = int(m.group(3))
    return values


def test_metrics_is_hidden_readable_and_well_formed(mount):
    assert ".metrics" not in os.listdir(mount.path)
    assert os.stat(mount / ".metrics").st_mode & 0o777 == 0o444
    values = metrics(mount)
    for name in ("ipcfs_messages_sent_total", "ipcfs_messages_received_total",
                 "ipcfs_messages_redelivered_total", "ipcfs_messages_discarded_total",
                 "ipcfs_bytes_queued", "ipcfs_receivers_waiting", "ipcfs_senders_waiting",
                 'ipcfs_objects{kind="mailbox"}', 'ipcfs_objects{kind="pipe"}'):
        assert name in values
    expect_errno(errno.EACCES, os.open, mount / ".metrics", os.O_WRONLY)


def test_metrics_count_messages_objects_and_errors(mount, mailbox):
    before = metrics(mount)
    send(mailbox, b"one")
    send(mailbox, b"two")
    send(mailbox, b"three")
    with open(mailbox / ".receive", "rb") as f:
        assert f.read() == b"one"
    os.unlink(mailbox / "0000000003")
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    assert os.read(fd, 1) == b"t"
    os.close(fd)  # half-read: redelivered once the kernel releases the file
    wait_until(lambda: metrics(mount)["ipcfs_messages_redelivered_total"]
               == before["ipcfs_messages_redelivered_total"] + 1, what="the redelivery")
    fd = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 100) == b"two" and os.read(fd, 100) == b""
        expect_errno(errno.EAGAIN, os.read, fd, 100)
    finally:
        os.close(fd)
    after = metrics(mount)
    assert after["ipcfs_messages_sent_total"] == before["ipcfs_messages_sent_total"] + 3
    assert after["ipcfs_messages_received_total"] == before["ipcfs_messages_received_total"] + 2
    assert after["ipcfs_messages_discarded_total"] == before["ipcfs_messages_discarded_total"] + 1
    assert after["ipcfs_messages_queued"] == 0 and after["ipcfs_bytes_queued"] == 0
    assert after['ipcfs_objects{kind="mailbox"}'] == 1
    eagain = 'ipcfs_errors_total{errno="EAGAIN"}'
    assert after.get(eagain, 0) == before.get(eagain, 0) + 1
    expect_errno(errno.EPERM, os.mkdir, mailbox / "nested")
    eperm = 'ipcfs_errors_total{errno="EPERM"}'
    assert metrics(mount).get(eperm, 0) == after.get(eperm, 0) + 1
