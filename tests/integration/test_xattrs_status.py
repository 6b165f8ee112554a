"""Extended attributes of mailboxes and messages (user.ipc.*: listing, read-only names,
unknown names, value validation, max_msg_size and EFBIG) and the `.status` snapshots of a
mailbox and of the whole daemon."""
import errno
import os
import subprocess
from pathlib import Path

import pytest

from ipcfs_helpers import expect_errno, messages, read_status, receive_nowait, send, status_text

MIB = 1048576
READ_ONLY_ON_MESSAGE = ("user.ipc.seq", "user.ipc.sender_pid", "user.ipc.redeliveries")


# --- listing and reading ----------------------------------------------------------------

def test_listxattr_on_mailbox(mailbox):
    assert {"user.ipc.id", "user.ipc.max_msg_size"} <= set(os.listxattr(mailbox))


def test_listxattr_on_message(mailbox):
    send(mailbox, b"x")
    assert set(READ_ONLY_ON_MESSAGE) <= set(os.listxattr(mailbox / "0000000001"))


def test_listxattr_on_drop_in_message(mailbox):
    Path(mailbox, "note").write_bytes(b"x")
    assert set(READ_ONLY_ON_MESSAGE) <= set(os.listxattr(mailbox / "note"))


def test_getfattr_shows_mailbox_id(mailbox):
    out = subprocess.run(["getfattr", "--only-values", "-n", "user.ipc.id", str(mailbox)],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    assert out == os.getxattr(mailbox, "user.ipc.id").decode()
    assert out.isdigit()


@pytest.mark.parametrize("name", ["user.ipc.nonsense", "user.foo", "trusted.foo"])
def test_getxattr_unknown_name_fails_enodata(mailbox, name):
    send(mailbox, b"x")
    expect_errno(errno.ENODATA, os.getxattr, mailbox, name)
    expect_errno(errno.ENODATA, os.getxattr, mailbox / "0000000001", name)


def test_default_max_msg_size_is_one_mib(mailbox):
    assert os.getxattr(mailbox, "user.ipc.max_msg_size") == str(MIB).encode()


def test_message_xattr_values_are_decimal(mailbox):
    send(mailbox, b"x")
    for name in READ_ONLY_ON_MESSAGE:
        assert os.getxattr(mailbox / "0000000001", name).decode().isdigit(), name
    assert os.getxattr(mailbox / "0000000001", "user.ipc.redeliveries") == b"0"


# --- setting ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["user.foo", "user.ipc.nonsense"])
def test_setxattr_unknown_name_fails_enotsup(mailbox, name):
    send(mailbox, b"x")
    expect_errno(errno.ENOTSUP, os.setxattr, mailbox, name, b"1")
    expect_errno(errno.ENOTSUP, os.setxattr, mailbox / "0000000001", name, b"1")
    expect_errno(errno.ENODATA, os.getxattr, mailbox, name)
    assert name not in os.listxattr(mailbox)


def test_setxattr_id_fails_eperm(mailbox):
    ident = os.getxattr(mailbox, "user.ipc.id")
    expect_errno(errno.EPERM, os.setxattr, mailbox, "user.ipc.id", b"12345")
    assert os.getxattr(mailbox, "user.ipc.id") == ident


@pytest.mark.parametrize("name", READ_ONLY_ON_MESSAGE)
def test_setxattr_read_only_message_attribute_fails_eperm(mailbox, name):
    send(mailbox, b"x")
    msg = mailbox / "0000000001"
    before = os.getxattr(msg, name)
    expect_errno(errno.EPERM, os.setxattr, msg, name, b"7")
    assert os.getxattr(msg, name) == before


def test_removexattr_of_read_only_attribute_fails(mailbox):
    ident = os.getxattr(mailbox, "user.ipc.id")
    with pytest.raises(OSError) as e:
        os.removexattr(mailbox, "user.ipc.id")
    assert e.value.errno in (errno.EPERM, errno.ENOTSUP)
    assert os.getxattr(mailbox, "user.ipc.id") == ident


def test_set_max_msg_size(mailbox):
    os.setxattr(mailbox, "user.ipc.max_msg_size", b"4096")
    assert os.getxattr(mailbox, "user.ipc.max_msg_size") == b"4096"
    assert read_status(mailbox)["max_msg_size"] == "4096"


def test_set_max_msg_size_accepts_trailing_newline(mailbox):
    os.setxattr(mailbox, "user.ipc.max_msg_size", b"16\n")
    assert os.getxattr(mailbox, "user.ipc.max_msg_size") == b"16"


def test_setfattr_command_sets_max_msg_size(mailbox):
    subprocess.run(["setfattr", "-n", "user.ipc.max_msg_size", "-v", "2048", str(mailbox)],
                   timeout=10, check=True)
    assert os.getxattr(mailbox, "user.ipc.max_msg_size") == b"2048"


@pytest.mark.parametrize("value", [b"abc", b"-1", b"", b"12abc", b"1.5"],
                         ids=["letters", "negative", "empty", "trailing-junk", "fraction"])
def test_bad_max_msg_size_fails_einval_and_keeps_value(mailbox, value):
    os.setxattr(mailbox, "user.ipc.max_msg_size", b"100")
    expect_errno(errno.EINVAL, os.setxattr, mailbox, "user.ipc.max_msg_size", value)
    assert os.getxattr(mailbox, "user.ipc.max_msg_size") == b"100"


# --- max_msg_size enforcement -----------------------------------------------------------

def test_message_of_exactly_max_msg_size_is_sent(mailbox):
    os.setxattr(mailbox, "user.ipc.max_msg_size", b"16")
    send(mailbox, b"x" * 16)
    assert receive_nowait(mailbox) == b"x" * 16


def test_write_past_max_msg_size_fails_efbig_and_drops_message(mailbox):
    os.setxattr(mailbox, "user.ipc.max_msg_size", b"16")
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        assert os.write(fd, b"a" * 10) == 10
        expect_errno(errno.EFBIG, os.write, fd, b"b" * 10)
        assert messages(mailbox) == []
        assert os.write(fd, b"fresh") == 5
    finally:
        os.close(fd)
    assert messages(mailbox) == ["0000000001"]
    assert receive_nowait(mailbox) == b"fresh"


def test_single_oversized_write_sends_nothing(mailbox):
    os.setxattr(mailbox, "user.ipc.max_msg_size", b"16")
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        expect_errno(errno.EFBIG, os.write, fd, b"c" * 17)
    finally:
        os.close(fd)
    assert messages(mailbox) == []
    assert read_status(mailbox)["messages"] == "0"


def test_default_max_msg_size_refuses_more_than_one_mib(mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        assert os.write(fd, b"m" * MIB) == MIB
        expect_errno(errno.EFBIG, os.write, fd, b"m")
    finally:
        os.close(fd)
    assert messages(mailbox) == []


def test_one_mib_message_is_sent_by_default(mailbox):
    payload = os.urandom(MIB)
    send(mailbox, payload)
    assert os.stat(mailbox / "0000000001").st_size == MIB
    assert receive_nowait(mailbox) == payload


# --- .status ----------------------------------------------------------------------------

def test_mailbox_status_fields_of_empty_mailbox(mailbox):
    status = read_status(mailbox)
    for key in ("id", "messages", "bytes", "capacity", "policy", "max_msg_size",
                "receivers_waiting", "senders_waiting"):
        assert key in status, key
    assert status["id"] == os.getxattr(mailbox, "user.ipc.id").decode()
    assert (status["messages"], status["bytes"]) == ("0", "0")
    assert status["policy"] == "any"
    assert status["max_msg_size"] == str(MIB)
    assert (status["receivers_waiting"], status["senders_waiting"]) == ("0", "0")


def test_mailbox_status_counts_messages_and_bytes(mailbox):
    send(mailbox, b"12345")
    send(mailbox, b"123")
    Path(mailbox, "note").write_bytes(b"1234567")
    status = read_status(mailbox)
    assert (status["messages"], status["bytes"]) == ("3", "15")
    receive_nowait(mailbox)
    status = read_status(mailbox)
    assert (status["messages"], status["bytes"]) == ("2", "10")
    os.unlink(mailbox / "note")
    status = read_status(mailbox)
    assert (status["messages"], status["bytes"]) == ("1", "3")


def test_status_is_text_with_one_key_value_per_line(mailbox):
    text = Path(mailbox, ".status").read_bytes().decode()
    assert text.endswith("\n")
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        assert sep and key and value.strip(), line


def test_root_status_fields(mount):
    status = read_status(mount.path)
    for key in ("mailboxes", "messages", "bytes", "receivers_waiting", "senders_waiting",
                "pipes", "shm_segments", "semaphores", "discarded"):
        assert key in status, key
        assert status[key].isdigit(), (key, status[key])
    assert (status["mailboxes"], status["messages"], status["bytes"]) == ("0", "0", "0")
    assert (status["receivers_waiting"], status["senders_waiting"]) == ("0", "0")


def test_root_status_counts_mailboxes_messages_and_bytes(mount):
    a, b = mount / "mailboxes" / "a", mount / "mailboxes" / "b"
    os.mkdir(a)
    os.mkdir(b)
    send(a, b"1234")
    send(a, b"12")
    send(b, b"123456")
    status = read_status(mount.path)
    assert (status["mailboxes"], status["messages"], status["bytes"]) == ("2", "3", "12")
    receive_nowait(b)
    os.rmdir(b)
    status = read_status(mount.path)
    assert (status["mailboxes"], status["messages"], status["bytes"]) == ("1", "2", "6")


def test_status_escapes_a_name_with_a_newline_so_each_key_keeps_one_line(mount):
    box = mount / "mailboxes" / "x\nid: 7\\"
    box.mkdir()
    lines = status_text(box).splitlines()
    assert "name: x\\nid: 7\\\\" in lines
    assert [line for line in lines if line.startswith("id: ")] == [f"id: {os.getxattr(box, 'user.ipc.id').decode()}"]
