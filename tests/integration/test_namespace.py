"""Namespace of a mount: top-level directories, hidden control nodes, the root `.status`
and the `by-id/` symlinks, observed with real syscalls (stat, readdir, readlink) and `ls`."""
import errno
import os
import stat
import subprocess

import pytest

from ipcfs_helpers import mailbox_id, read_status, send

TOP_LEVEL = ("mailboxes", "procs", "pipes", "shm", "sem", "by-id")
CONTROL_NODES = (".send", ".receive", ".status", ".send-lines", ".receive-lines",
                 ".send-frames", ".receive-frames")


def ls_a(path):
    out = subprocess.run(["ls", "-a1", str(path)], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    return out.splitlines()


# --- top level -------------------------------------------------------------------------

@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_entry_is_sticky_world_writable_dir(mount, name):
    st = os.stat(mount / name)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o1777


def test_root_lists_every_top_level_directory(mount):
    assert set(TOP_LEVEL) <= set(os.listdir(mount.path))


def test_root_listing_has_no_dot_entries(mount):
    entries = ls_a(mount.path)
    assert sorted(e for e in entries if e.startswith(".")) == [".", ".."]
    assert ".status" not in os.listdir(mount.path)


def test_root_status_resolves_and_reads(mount):
    st = os.stat(mount / ".status")
    assert stat.S_ISREG(st.st_mode)
    fields = read_status(mount.path)
    assert "mailboxes" in fields


# --- control nodes of a mailbox ---------------------------------------------------------

def test_fresh_mailbox_lists_nothing(mailbox):
    assert os.listdir(mailbox) == []
    assert ls_a(mailbox) == [".", ".."]


def test_control_nodes_never_listed_even_with_messages(mailbox):
    send(mailbox, b"one")
    send(mailbox, b"two")
    listed = os.listdir(mailbox)
    assert sorted(listed) == ["0000000001", "0000000002"]
    for node in CONTROL_NODES:
        assert node not in listed
        assert node not in ls_a(mailbox)


@pytest.mark.parametrize("node", [".send", ".receive", ".status"])
def test_control_node_stat_works(mailbox, node):
    st = os.stat(mailbox / node)
    assert stat.S_ISREG(st.st_mode)


def test_receive_reports_size_zero_even_with_queued_messages(mailbox):
    assert os.stat(mailbox / ".receive").st_size == 0
    send(mailbox, b"some payload that is not empty")
    assert os.stat(mailbox / ".receive").st_size == 0


def test_send_write_bits_follow_mailbox_mode(mailbox):
    os.chmod(mailbox, 0o755)
    assert stat.S_IMODE(os.stat(mailbox / ".send").st_mode) & 0o222 == 0o200
    os.chmod(mailbox, 0o733)
    assert stat.S_IMODE(os.stat(mailbox / ".send").st_mode) & 0o222 == 0o222
    os.chmod(mailbox, 0o700)
    assert stat.S_IMODE(os.stat(mailbox / ".send").st_mode) & 0o222 == 0o200


def test_status_of_mailbox_not_listed_but_readable(mailbox):
    assert ".status" not in os.listdir(mailbox)
    assert read_status(mailbox)["messages"] == "0"


# --- names ------------------------------------------------------------------------------

def test_mailbox_name_of_255_bytes_is_accepted(mount):
    path = mount / "mailboxes" / ("n" * 255)
    os.mkdir(path)
    assert stat.S_ISDIR(os.stat(path).st_mode)
    assert "n" * 255 in os.listdir(mount / "mailboxes")


def test_mailbox_name_with_non_ascii_bytes_is_accepted(mount):
    path = mount / "mailboxes" / "café-ü"
    os.mkdir(path)
    assert "café-ü" in os.listdir(mount / "mailboxes")


# --- by-id ------------------------------------------------------------------------------

def test_by_id_is_symlink_to_mailbox(mount, mailbox):
    link = mount / "by-id" / mailbox_id(mailbox)
    assert stat.S_ISLNK(os.lstat(link).st_mode)
    assert os.readlink(link) == f"../mailboxes/{mailbox.name}"
    assert os.stat(link).st_ino == os.stat(mailbox).st_ino


def test_by_id_lists_mailbox_ids(mount, mailbox):
    assert mailbox_id(mailbox) in os.listdir(mount / "by-id")


def test_by_id_follows_rename(mount, mailbox):
    ident = mailbox_id(mailbox)
    renamed = mailbox.with_name(mailbox.name + "-renamed")
    os.rename(mailbox, renamed)
    link = mount / "by-id" / ident
    assert os.readlink(link) == f"../mailboxes/{renamed.name}"
    assert os.stat(link).st_ino == os.stat(renamed).st_ino
    send(link, b"via by-id")
    assert os.listdir(renamed) == ["0000000001"]


def test_by_id_entry_disappears_with_mailbox(mount, mailbox):
    ident = mailbox_id(mailbox)
    os.rmdir(mailbox)
    assert not os.path.lexists(mount / "by-id" / ident)
    with pytest.raises(OSError) as e:
        os.lstat(mount / "by-id" / ident)
    assert e.value.errno == errno.ENOENT


# --- tools that walk the tree -----------------------------------------------------------

def test_grep_r_finds_message_without_taking_it(mount, mailbox):
    send(mailbox, b"needle in a message\n")
    proc = subprocess.run(["grep", "-r", "needle", str(mount / "mailboxes")],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{mailbox}/0000000001:needle in a message\n"
    assert os.listdir(mailbox) == ["0000000001"]


def test_ls_la_of_mailbox_shows_only_messages(mailbox):
    send(mailbox, b"12345")
    proc = subprocess.run(["ls", "-la", str(mailbox)], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[-1] for line in proc.stdout.splitlines()[1:]]
    assert names == [".", "..", "0000000001"]


@pytest.mark.parametrize("node", [".send", ".receive", ".status"])
def test_listxattr_on_control_node_works(mailbox, node):
    assert isinstance(os.listxattr(mailbox / node), list)


# --- fixed structure --------------------------------------------------------------------

@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_directory_cannot_be_removed(mount, name):
    with pytest.raises(OSError):
        os.rmdir(mount / name)
    assert stat.S_IMODE(os.stat(mount / name).st_mode) == 0o1777


@pytest.mark.parametrize("node", [".send", ".receive", ".status"])
def test_control_node_cannot_be_removed(mailbox, node):
    with pytest.raises(OSError):
        os.unlink(mailbox / node)
    assert stat.S_ISREG(os.stat(mailbox / node).st_mode)
    send(mailbox, b"still works")
    assert os.listdir(mailbox) == ["0000000001"]


def test_root_status_cannot_be_removed(mount):
    with pytest.raises(OSError):
        os.unlink(mount / ".status")
    assert "mailboxes" in read_status(mount.path)
