"""Mailbox lifecycle (mkdir, rmdir, rm -r, mv, ids, inodes) and sending through `.send`
(one message per open..close or per fsync, named by its 10-digit sequence number)."""
import errno
import os
import shlex
import stat
import subprocess

import pytest

from ipcfs_helpers import mailbox_id, messages, read_status, receive_nowait, send


def bash(script, cwd):
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc


# --- lifecycle --------------------------------------------------------------------------

def test_mkdir_creates_listed_mailbox_directory(mount):
    path = mount / "mailboxes" / "box"
    os.mkdir(path)
    assert stat.S_ISDIR(os.stat(path).st_mode)
    assert "box" in os.listdir(mount / "mailboxes")


def test_mkdir_mode_and_owner_are_kept(mount):
    path = mount / "mailboxes" / "moded"
    old = os.umask(0o022)
    try:
        os.mkdir(path, 0o751)
    finally:
        os.umask(old)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_mkdir_existing_name_fails_eexist(mailbox):
    with pytest.raises(OSError) as e:
        os.mkdir(mailbox)
    assert e.value.errno == errno.EEXIST


def test_rmdir_removes_empty_mailbox(mount, mailbox):
    os.rmdir(mailbox)
    assert not mailbox.exists()
    assert mailbox.name not in os.listdir(mount / "mailboxes")


def test_rmdir_with_queued_message_fails_enotempty(mailbox):
    send(mailbox, b"still here")
    with pytest.raises(OSError) as e:
        os.rmdir(mailbox)
    assert e.value.errno == errno.ENOTEMPTY
    assert messages(mailbox) == ["0000000001"]
    assert receive_nowait(mailbox) == b"still here"


def test_rm_r_removes_mailbox_with_messages(mount, mailbox):
    send(mailbox, b"one")
    send(mailbox, b"two")
    proc = subprocess.run(["rm", "-r", str(mailbox)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert not mailbox.exists()
    assert read_status(mount.path)["messages"] == "0"


def test_rename_keeps_id_inode_and_messages(mailbox):
    send(mailbox, b"travels along")
    ident, ino = mailbox_id(mailbox), os.stat(mailbox).st_ino
    renamed = mailbox.with_name(mailbox.name + "-new")
    os.rename(mailbox, renamed)
    assert not mailbox.exists()
    assert mailbox_id(renamed) == ident
    assert os.stat(renamed).st_ino == ino
    assert read_status(renamed)["id"] == ident
    assert messages(renamed) == ["0000000001"]
    assert receive_nowait(renamed) == b"travels along"


def test_mv_command_renames_mailbox(mailbox):
    ident = mailbox_id(mailbox)
    renamed = mailbox.with_name(mailbox.name + "-mv")
    proc = subprocess.run(["mv", str(mailbox), str(renamed)], capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert mailbox_id(renamed) == ident


def test_rename_onto_existing_mailbox_fails_eexist(mailbox):
    other = mailbox.with_name(mailbox.name + "-other")
    os.mkdir(other)
    send(mailbox, b"mine")
    ids = (mailbox_id(mailbox), mailbox_id(other))
    with pytest.raises(OSError) as e:
        os.rename(mailbox, other)
    assert e.value.errno == errno.EEXIST
    assert (mailbox_id(mailbox), mailbox_id(other)) == ids
    assert messages(mailbox) == ["0000000001"]
    assert messages(other) == []


def test_inode_number_is_stable(mailbox):
    ino = os.stat(mailbox).st_ino
    send(mailbox, b"x")
    assert os.stat(mailbox).st_ino == ino
    assert os.lstat(mailbox).st_ino == ino


def test_xattr_id_matches_status_id(mailbox):
    ident = mailbox_id(mailbox)
    assert ident.isdigit()
    assert read_status(mailbox)["id"] == ident


def test_ids_are_unique_and_not_reused(mount):
    a, b = mount / "mailboxes" / "a", mount / "mailboxes" / "b"
    os.mkdir(a)
    os.mkdir(b)
    first_a = mailbox_id(a)
    assert first_a != mailbox_id(b)
    os.rmdir(a)
    os.mkdir(a)
    assert mailbox_id(a) not in (first_a, mailbox_id(b))


# --- sending ----------------------------------------------------------------------------

def test_echo_to_send_sends_line(mailbox):
    bash("echo hi > .send", cwd=mailbox)
    assert messages(mailbox) == ["0000000001"]
    assert (mailbox / "0000000001").read_bytes() == b"hi\n"


def test_messages_named_by_zero_padded_sequence_from_one(mailbox):
    for payload in (b"a", b"b", b"c"):
        send(mailbox, payload)
    assert messages(mailbox) == ["0000000001", "0000000002", "0000000003"]
    assert (mailbox / "0000000002").read_bytes() == b"b"


def test_sequence_numbers_are_per_mailbox(mailbox):
    other = mailbox.with_name(mailbox.name + "-2")
    os.mkdir(other)
    send(mailbox, b"a")
    send(mailbox, b"b")
    send(other, b"c")
    assert messages(other) == ["0000000001"]


def test_sequence_number_not_reused_after_receive(mailbox):
    send(mailbox, b"first")
    assert receive_nowait(mailbox) == b"first"
    send(mailbox, b"second")
    assert messages(mailbox) == ["0000000002"]


def test_brace_group_redirect_sends_one_message(mailbox):
    bash("{ echo a; echo b; } > .send", cwd=mailbox)
    assert messages(mailbox) == ["0000000001"]
    assert receive_nowait(mailbox) == b"a\nb\n"


def test_exec_fd_sends_one_message_per_command(mailbox):
    bash("exec 3>.send; echo a >&3; echo b >&3", cwd=mailbox)
    assert messages(mailbox) == ["0000000001", "0000000002"]
    assert receive_nowait(mailbox) == b"a\n"
    assert receive_nowait(mailbox) == b"b\n"


def test_truncating_redirect_without_output_sends_nothing(mailbox):
    bash(": > .send", cwd=mailbox)
    assert messages(mailbox) == []
    assert read_status(mailbox)["messages"] == "0"


def test_open_close_without_write_sends_nothing(mailbox):
    os.close(os.open(mailbox / ".send", os.O_WRONLY))
    assert messages(mailbox) == []


def test_several_writes_on_one_open_make_one_message(mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        os.write(fd, b"part one, ")
        os.write(fd, b"part two")
    finally:
        os.close(fd)
    assert messages(mailbox) == ["0000000001"]
    assert receive_nowait(mailbox) == b"part one, part two"


def test_message_not_visible_before_close(mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        os.write(fd, b"pending")
        assert messages(mailbox) == []
        assert read_status(mailbox)["messages"] == "0"
        with pytest.raises(OSError) as e:
            receive_nowait(mailbox)
        assert e.value.errno == errno.EAGAIN
    finally:
        os.close(fd)
    assert messages(mailbox) == ["0000000001"]


def test_fsync_delivers_each_part(mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        os.write(fd, b"first")
        os.fsync(fd)
        assert messages(mailbox) == ["0000000001"]
        os.write(fd, b"second")
        os.fsync(fd)
        assert messages(mailbox) == ["0000000001", "0000000002"]
    finally:
        os.close(fd)
    assert messages(mailbox) == ["0000000001", "0000000002"]
    assert receive_nowait(mailbox) == b"first"
    assert receive_nowait(mailbox) == b"second"


def test_fsync_without_new_writes_sends_nothing(mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        os.fsync(fd)
        os.write(fd, b"once")
        os.fsync(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert messages(mailbox) == ["0000000001"]


def test_close_of_any_duplicate_delivers_and_idle_close_sends_nothing(mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    dup = os.dup(fd)
    try:
        os.write(fd, b"via original")
        os.close(dup)
        dup = None
        assert messages(mailbox) == ["0000000001"]
    finally:
        if dup is not None:
            os.close(dup)
        os.close(fd)
    assert messages(mailbox) == ["0000000001"]
    assert receive_nowait(mailbox) == b"via original"


def test_binary_payload_round_trips(mailbox):
    payload = bytes(range(256)) * 64 + b"\0\n\0"
    send(mailbox, payload)
    assert (mailbox / "0000000001").stat().st_size == len(payload)
    assert receive_nowait(mailbox) == payload


def test_shell_cat_file_into_send(mailbox, tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000))
    bash(f"cat {shlex.quote(str(src))} > .send", cwd=mailbox)
    assert messages(mailbox) == ["0000000001"]
    assert receive_nowait(mailbox) == src.read_bytes()
