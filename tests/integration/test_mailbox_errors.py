"""Bad input gets a clear errno and changes nothing: reserved and overlong names, objects
where they do not belong, misuse of control nodes, links, removed mailboxes, permissions
of other users (run in child processes as uid 65534) and the global byte bound."""
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import wait_until
from ipcfs_helpers import expect_errno, messages, read_status, receive_nowait, send

DEADLINE_S = 5.0
# The child must be able to run the interpreter as an unprivileged user.
CHILD_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
NOBODY = 65534
OTHER = 65533


def write_close_errno(fd, data):
    """Writes data to fd and closes it; returns None on success or the first errno of write
    or close."""
    err = None
    try:
        os.write(fd, data)
    except OSError as exc:
        err = exc.errno
    try:
        os.close(fd)
    except OSError as exc:
        err = err or exc.errno
    return err


def send_errno(mbox, data):
    """Sends data; returns None on success or the first errno of write or close."""
    return write_close_errno(os.open(Path(mbox, ".send"), os.O_WRONLY), data)


CHILD_PRELUDE = """
import errno, json, os, sys
results = {}
def attempt(label, fn, *args):
    try:
        value = fn(*args)
        results[label] = ["ok", value if isinstance(value, (int, str, list)) else None]
    except OSError as exc:
        results[label] = [errno.errorcode.get(exc.errno, str(exc.errno)), None]
def send(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def receive(path):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)
"""


def run_as(uid, cwd, body):
    """Runs python code as uid:uid (no supplementary groups) in directory cwd, which is
    entered as root so the test's private temp dirs need not be searchable. Returns the
    `results` dict the code filled with attempt(label, fn, *args): label -> [status, value]
    where status is "ok" or the errno name."""
    code = CHILD_PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(results))\n"
    proc = subprocess.run([CHILD_PYTHON, "-I", "-c", code], cwd=cwd, user=uid, group=uid,
                          extra_groups=[], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    return {label: tuple(v) for label, v in json.loads(proc.stdout).items()}


# --- names ------------------------------------------------------------------------------

def test_mkdir_reserved_dot_name_fails_einval(mount):
    expect_errno(errno.EINVAL, os.mkdir, mount / "mailboxes" / ".x")
    assert os.listdir(mount / "mailboxes") == []


def test_create_reserved_dot_name_in_mailbox_fails_einval(mailbox):
    expect_errno(errno.EINVAL, os.open, mailbox / ".x", os.O_CREAT | os.O_WRONLY, 0o644)
    expect_errno(errno.EINVAL, os.open, mailbox / ".hidden",
                 os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    assert messages(mailbox) == []
    assert read_status(mailbox)["messages"] == "0"


def test_mkdir_name_of_256_bytes_fails_enametoolong(mount):
    expect_errno(errno.ENAMETOOLONG, os.mkdir, mount / "mailboxes" / ("x" * 256))
    assert os.listdir(mount / "mailboxes") == []


def test_create_message_name_of_256_bytes_fails_enametoolong(mailbox):
    expect_errno(errno.ENAMETOOLONG, os.open, mailbox / ("y" * 256),
                 os.O_CREAT | os.O_WRONLY, 0o644)
    assert messages(mailbox) == []


def test_message_name_of_255_bytes_is_accepted(mailbox):
    Path(mailbox, "y" * 255).write_bytes(b"long name")
    assert messages(mailbox) == ["y" * 255]


def test_rename_mailbox_to_reserved_name_fails_einval(mount, mailbox):
    expect_errno(errno.EINVAL, os.rename, mailbox, mount / "mailboxes" / ".hidden")
    assert os.listdir(mount / "mailboxes") == [mailbox.name]


def test_rename_mailbox_to_name_of_256_bytes_fails_enametoolong(mount, mailbox):
    expect_errno(errno.ENAMETOOLONG, os.rename, mailbox, mount / "mailboxes" / ("x" * 256))
    assert os.listdir(mount / "mailboxes") == [mailbox.name]


def test_rename_message_to_reserved_name_fails_einval(mailbox):
    send(mailbox, b"named")
    expect_errno(errno.EINVAL, os.rename, mailbox / "0000000001", mailbox / ".x")
    assert messages(mailbox) == ["0000000001"]


# --- objects where they do not belong ---------------------------------------------------

def test_mkdir_at_root_fails_eperm(mount):
    before = sorted(os.listdir(mount.path))
    expect_errno(errno.EPERM, os.mkdir, mount / "newtop")
    assert sorted(os.listdir(mount.path)) == before


def test_mkdir_inside_mailbox_fails_eperm(mailbox):
    expect_errno(errno.EPERM, os.mkdir, mailbox / "nested")
    assert messages(mailbox) == []


def test_create_file_at_root_fails_eperm(mount):
    before = sorted(os.listdir(mount.path))
    expect_errno(errno.EPERM, os.open, mount / "file", os.O_CREAT | os.O_WRONLY, 0o644)
    assert sorted(os.listdir(mount.path)) == before


def test_create_file_in_mailboxes_dir_fails_eperm(mount):
    expect_errno(errno.EPERM, os.open, mount / "mailboxes" / "file",
                 os.O_CREAT | os.O_WRONLY, 0o644)
    assert os.listdir(mount / "mailboxes") == []


def test_mkfifo_in_mailboxes_dir_fails_eperm(mount):
    expect_errno(errno.EPERM, os.mkfifo, mount / "mailboxes" / "fifo")
    assert os.listdir(mount / "mailboxes") == []


def test_move_mailbox_to_root_fails_eperm(mount, mailbox):
    before = sorted(os.listdir(mount.path))
    expect_errno(errno.EPERM, os.rename, mailbox, mount / "moved")
    assert sorted(os.listdir(mount.path)) == before
    assert os.path.isdir(mailbox)


@pytest.mark.parametrize("where", ["root", "mailboxes"])
def test_move_message_out_of_mailboxes_fails_eperm(mount, mailbox, where):
    send(mailbox, b"stays")
    target = (mount.path if where == "root" else mount / "mailboxes") / "loose"
    expect_errno(errno.EPERM, os.rename, mailbox / "0000000001", target)
    assert not os.path.lexists(target)
    assert messages(mailbox) == ["0000000001"]


# --- control nodes ----------------------------------------------------------------------

@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR], ids=["wronly", "rdwr"])
def test_open_receive_for_write_fails_eacces(mailbox, flags):
    send(mailbox, b"queued")
    expect_errno(errno.EACCES, os.open, mailbox / ".receive", flags)
    assert messages(mailbox) == ["0000000001"]


def test_shell_write_to_receive_fails(mailbox):
    proc = subprocess.run(["bash", "-c", "echo hi > .receive"], cwd=mailbox,
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0
    assert "denied" in proc.stderr
    assert messages(mailbox) == []


def test_open_send_read_only_fails_eacces(mailbox):
    expect_errno(errno.EACCES, os.open, mailbox / ".send", os.O_RDONLY)
    assert messages(mailbox) == []


# --- links ------------------------------------------------------------------------------

def test_hard_link_of_message_fails_eperm(mailbox):
    send(mailbox, b"linked?")
    other = mailbox.with_name(mailbox.name + "-other")
    os.mkdir(other)
    expect_errno(errno.EPERM, os.link, mailbox / "0000000001", mailbox / "copy")
    expect_errno(errno.EPERM, os.link, mailbox / "0000000001", other / "copy")
    assert messages(mailbox) == ["0000000001"]
    assert messages(other) == []
    assert os.stat(mailbox / "0000000001").st_nlink == 1


def test_symlink_in_mailbox_fails_eperm(mailbox):
    expect_errno(errno.EPERM, os.symlink, "/etc/hostname", mailbox / "lnk")
    assert messages(mailbox) == []


def test_symlink_in_mailboxes_dir_fails_eperm(mount, mailbox):
    expect_errno(errno.EPERM, os.symlink, mailbox.name, mount / "mailboxes" / "alias")
    assert os.listdir(mount / "mailboxes") == [mailbox.name]


def test_symlink_in_by_id_fails_eperm(mount, mailbox):
    expect_errno(errno.EPERM, os.symlink, "../mailboxes/" + mailbox.name,
                 mount / "by-id" / "999999")


# --- removed mailboxes ------------------------------------------------------------------

def test_rmdir_wakes_blocked_reader_with_eidrm(mount, mailbox):
    fd = os.open(mailbox / ".receive", os.O_RDONLY)
    outcome = {}

    def read():
        try:
            outcome["data"] = os.read(fd, 4096)
        except OSError as exc:
            outcome["errno"] = exc.errno

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        wait_until(lambda: read_status(mailbox).get("receivers_waiting") == "1",
                   what="reader to block")
        os.rmdir(mailbox)
        reader.join(DEADLINE_S)
        assert not reader.is_alive(), "blocked reader not woken by rmdir"
    finally:
        os.close(fd)
    assert outcome == {"errno": errno.EIDRM}
    assert not mailbox.exists()
    assert read_status(mount.path)["mailboxes"] == "0"


def test_send_through_open_send_of_removed_mailbox_fails_eidrm(mount, mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    err = None
    try:
        os.write(fd, b"too late")
        os.rmdir(mailbox)
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            err = exc.errno
    assert err == errno.EIDRM
    assert not mailbox.exists()
    status = read_status(mount.path)
    assert (status["mailboxes"], status["messages"]) == ("0", "0")


def test_new_mailbox_with_old_name_does_not_get_old_senders_message(mailbox):
    fd = os.open(mailbox / ".send", os.O_WRONLY)
    try:
        os.write(fd, b"for the old one")
        os.rmdir(mailbox)
        os.mkdir(mailbox)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert messages(mailbox) == []


# --- permissions ------------------------------------------------------------------------

def test_private_mailbox_closed_to_other_user(mount):
    private = mount / "mailboxes" / "private"
    os.mkdir(private, 0o700)
    os.chmod(private, 0o700)
    send(private, b"secret")
    results = run_as(NOBODY, mount / "mailboxes", """
        attempt("list", os.listdir, "private")
        attempt("send", send, "private/.send", b"intruder")
        attempt("receive", receive, "private/.receive")
        attempt("peek", lambda: open("private/0000000001", "rb").read().decode())
        attempt("status", lambda: open("private/.status").read())
    """)
    assert results == {label: ("EACCES", None)
                       for label in ("list", "send", "receive", "peek", "status")}
    assert messages(private) == ["0000000001"]
    assert receive_nowait(private) == b"secret"


def test_send_needs_write_permission_on_mailbox(mount):
    box = mount / "mailboxes" / "readonly"
    os.mkdir(box)
    os.chmod(box, 0o755)
    send(box, b"for everyone to read")
    results = run_as(NOBODY, mount / "mailboxes", """
        attempt("send", send, "readonly/.send", b"x")
        attempt("list", os.listdir, "readonly")
        attempt("receive", receive, "readonly/.receive")
    """)
    assert results["send"] == ("EACCES", None)
    assert results["list"] == ("ok", ["0000000001"])
    assert results["receive"] == ("ok", "for everyone to read")
    assert messages(box) == []


def test_receive_needs_read_permission_on_mailbox(mount):
    box = mount / "mailboxes" / "dropbox"
    os.mkdir(box)
    os.chmod(box, 0o733)
    send(box, b"not for you")
    results = run_as(NOBODY, mount / "mailboxes", """
        attempt("receive", receive, "dropbox/.receive")
        attempt("list", os.listdir, "dropbox")
        attempt("send", send, "dropbox/.send", b"from nobody")
    """)
    assert results == {"receive": ("EACCES", None), "list": ("EACCES", None),
                       "send": ("ok", None)}
    assert messages(box) == ["0000000001", "0000000002"]
    assert receive_nowait(box) == b"not for you"
    assert receive_nowait(box) == b"from nobody"


def test_message_owned_by_sending_user(mount):
    box = mount / "mailboxes" / "shared"
    os.mkdir(box)
    os.chmod(box, 0o777)
    results = run_as(NOBODY, mount / "mailboxes", """
        attempt("send", send, "shared/.send", b"from nobody")
        attempt("drop", send, "shared/dropped", b"dropped by nobody")
        attempt("pid", os.getpid)
    """)
    assert results["send"] == ("ok", None) and results["drop"] == ("ok", None)
    for name in ("0000000001", "dropped"):
        st = os.stat(box / name)
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert os.getxattr(box / "0000000001", "user.ipc.sender_pid") == \
        str(results["pid"][1]).encode()


def test_other_user_cannot_remove_roots_mailbox(mount):
    box = mount / "mailboxes" / "roots"
    os.mkdir(box)
    os.chmod(box, 0o777)
    results = run_as(NOBODY, mount / "mailboxes", """
        attempt("rmdir", os.rmdir, "roots")
        attempt("rename", os.rename, "roots", "stolen")
    """)
    assert results == {"rmdir": ("EPERM", None), "rename": ("EPERM", None)}
    assert os.path.isdir(box)
    assert not (mount / "mailboxes" / "stolen").exists()


def test_user_mailbox_owner_chmod_chown_rules(mount):
    box = mount / "mailboxes" / "nobodys"
    made = run_as(NOBODY, mount / "mailboxes", """
        attempt("mkdir", os.mkdir, "nobodys", 0o700)
        attempt("chmod", os.chmod, "nobodys", 0o750)
        attempt("chown-away", os.chown, "nobodys", 0, 0)
    """)
    assert made == {"mkdir": ("ok", None), "chmod": ("ok", None),
                    "chown-away": ("EPERM", None)}
    st = os.stat(box)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o750)

    other = run_as(OTHER, mount / "mailboxes", """
        attempt("chmod", os.chmod, "nobodys", 0o777)
        attempt("rmdir", os.rmdir, "nobodys")
    """)
    assert other == {"chmod": ("EPERM", None), "rmdir": ("EPERM", None)}
    assert stat.S_IMODE(os.stat(box).st_mode) == 0o750

    os.chown(box, OTHER, OTHER)
    assert os.stat(box).st_uid == OTHER
    now_owner = run_as(OTHER, mount / "mailboxes", """
        attempt("chmod", os.chmod, "nobodys", 0o700)
        attempt("rmdir", os.rmdir, "nobodys")
    """)
    assert now_owner == {"chmod": ("ok", None), "rmdir": ("ok", None)}
    assert not box.exists()


# --- global byte bound ------------------------------------------------------------------

def test_global_max_bytes_refuses_send_with_enospc(make_mount):
    m = make_mount(options=["max_bytes=1000"])
    box = m / "mailboxes" / "bounded"
    os.mkdir(box)
    send(box, b"a" * 600)
    assert send_errno(box, b"b" * 600) == errno.ENOSPC
    assert messages(box) == ["0000000001"]
    status = read_status(m.path)
    assert (status["messages"], status["bytes"]) == ("1", "600")


def test_global_max_bytes_refuses_oversized_message_and_keeps_working(make_mount):
    m = make_mount(options=["max_bytes=1000"])
    box = m / "mailboxes" / "bounded"
    os.mkdir(box)
    assert send_errno(box, b"z" * 1001) == errno.ENOSPC
    assert messages(box) == []
    assert read_status(m.path)["bytes"] == "0"
    send(box, b"c" * 600)
    assert receive_nowait(box) == b"c" * 600
    send(box, b"d" * 600)
    assert receive_nowait(box) == b"d" * 600
    assert read_status(m.path)["bytes"] == "0"


def test_global_max_bytes_refuses_drop_in_with_enospc(make_mount):
    m = make_mount(options=["max_bytes=1000"])
    box = m / "mailboxes" / "bounded"
    os.mkdir(box)
    send(box, b"a" * 600)
    fd = os.open(box / "big", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    err = write_close_errno(fd, b"b" * 600)
    assert err == errno.ENOSPC
    assert messages(box) == ["0000000001"]
    assert read_status(m.path)["bytes"] == "600"
