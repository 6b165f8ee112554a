"""Browsing a mount with the tools people point at files: `ls -lR`, `find`, `stat`,
`getfattr -d`, `file`, `gio list`, `gio info`, `grep -r`, and Midnight Commander driven in
tmux. Listing, previewing and inspecting only peek: after every tool the number, names and
contents of the queued messages are unchanged and `.receive` was never touched (nothing
received, nothing redelivered, no receiver waiting). `gio copy` into a mailbox sends,
`gio remove` (and mc's delete) of a message discards it.

Contract: spec/interface.md, "Namespace" (control nodes are not listed) and "Mailboxes"
(message files; reading one only peeks; creating a file sends; rm discards). Issue 7,
"Browsing in a file manager". A tool that is not installed skips its test with the Debian
package to install. Every command runs with a deadline; waiting is polling a condition
with a deadline; the only processes ended are the ones a test started (the tmux server on
the test's own socket, by its unique session name)."""
import functools
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import wait_until
from ipcfs_helpers import read_status, run_to_files, send
from ipcfs_helpers import no_mount_left  # noqa: F401 (autouse fixture: importing applies it)

RUN_DEADLINE_S = 30.0   # a browsing command over a handful of messages
SCREEN_DEADLINE_S = 15.0  # mc drawing or reacting to a key
run = functools.partial(run_to_files, timeout=RUN_DEADLINE_S)

# Debian packages that provide the tools (for skip reasons).
PACKAGES = {"getfattr": "attr", "file": "file", "gio": "libglib2.0-bin", "mc": "mc",
            "tmux": "tmux", "find": "findutils", "grep": "grep", "ls": "coreutils",
            "stat": "coreutils"}

TEXT_SEND = b"hello from .send\n"
TEXT_NOTE = b"Plain text note\nsecond line\n"
BINARY = bytes(range(256)) * 4
OTHER = b"a message in another mailbox\n"
CONTROL_NODES = (".send", ".receive", ".status", ".send-lines", ".receive-lines",
                 ".send-frames", ".receive-frames")
# GIO stays local: no gvfsd or volume monitor is started on a desktop session bus.
GIO_ENV = dict(os.environ, GIO_USE_VFS="local", GIO_USE_VOLUME_MONITOR="unix")


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian package {PACKAGES.get(tool, tool)})")


class Populated:
    """A mount with mailboxes/box holding a message sent through .send (0000000001), a
    text drop-in (note.txt) and a binary drop-in (blob.bin), and mailboxes/other with one
    message."""

    def __init__(self, mount):
        self.mnt = mount.path
        self.mailboxes = self.mnt / "mailboxes"
        self.box = self.mailboxes / "box"
        self.other = self.mailboxes / "other"
        os.mkdir(self.box)
        os.mkdir(self.other)
        send(self.box, TEXT_SEND)
        Path(self.box, "note.txt").write_bytes(TEXT_NOTE)
        Path(self.box, "blob.bin").write_bytes(BINARY)
        send(self.other, OTHER)
        self.messages = {"0000000001": TEXT_SEND, "note.txt": TEXT_NOTE, "blob.bin": BINARY}
        self.before = snapshot(self.mnt)
        assert self.before["mailboxes"]["box"]["names"] == sorted(self.messages)

    def assert_nothing_taken(self, tool):
        after = snapshot(self.mnt)
        assert after == self.before, f"{tool} changed the queued messages"
        assert_receive_untouched(self.mnt)


MAILBOX_KEYS = ("messages", "bytes", "received", "redelivered", "receivers_waiting",
                "senders_waiting")
ROOT_KEYS = ("mailboxes", "messages", "bytes", "receivers_waiting", "discarded")


def snapshot(mnt):
    """Everything browsing must leave alone: per mailbox the `.status` counters, the listed
    names and each message's bytes (read from the message file: a peek); the root
    counters."""
    root = read_status(mnt)
    boxes = {}
    for name in sorted(os.listdir(mnt / "mailboxes")):
        box = mnt / "mailboxes" / name
        status = read_status(box)
        names = sorted(os.listdir(box))
        boxes[name] = {"status": {k: status[k] for k in MAILBOX_KEYS}, "names": names,
                       "contents": {n: Path(box, n).read_bytes() for n in names}}
    return {"root": {k: root[k] for k in ROOT_KEYS}, "mailboxes": boxes}


def assert_receive_untouched(mnt):
    for name in os.listdir(mnt / "mailboxes"):
        status = read_status(mnt / "mailboxes" / name)
        assert status["receivers_waiting"] == "0", name
        assert status["redelivered"] == "0", name
        assert status["received"] == "0", name


def assert_no_control_nodes(text):
    for node in CONTROL_NODES:
        assert f"/{node}" not in text and not re.search(rf"(^|\s){re.escape(node)}(\s|$)",
                                                         text, re.M), \
            f"control node {node} listed:\n{text}"


@pytest.fixture
def populated(mount):
    return Populated(mount)


# ---------------------------------------------------------------- read-only tools

def check_ls(p, out):
    assert_no_control_nodes(out)
    for name, data in p.messages.items():
        assert re.search(rf"^-r--r--r-- +1 +\S+ +\S+ +{len(data)} .* {re.escape(name)}$", out,
                         re.M), f"{name} ({len(data)} bytes) not in ls -lR:\n{out}"
    assert re.search(r"^drwx\S* .* box$", out, re.M), out


def check_find(p, out):
    assert_no_control_nodes(out)
    listed = set(out.split("\n"))
    for name in p.messages:
        assert str(p.box / name) in listed, out
    assert str(p.other / "0000000001") in listed, out


def check_stat(p, out):
    for name, data in p.messages.items():
        assert re.search(rf"File: {re.escape(str(p.box / name))}\n\s+Size: {len(data)}\s.*"
                         r"regular file\n.*\nAccess: \(0444/-r--r--r--\)", out), out


def check_getfattr(p, out):
    for name in p.messages:
        assert f"# file: {str(p.box / name).lstrip('/')}\n" in out, out
    assert out.count("user.ipc.seq=") == 4, out
    assert out.count("user.ipc.redeliveries=\"0\"") == 4, out
    assert re.search(r"# file: \S*mailboxes/box\n(.*\n)*?user\.ipc\.id=\"\d+\"", out), out
    assert_no_control_nodes(out)


def check_file(p, out):
    kinds = dict(line.split(":", 1) for line in out.splitlines())
    for name in ("0000000001", "note.txt"):
        assert "text" in kinds[str(p.box / name)], out
    assert "text" not in kinds[str(p.box / "blob.bin")], out


def check_gio_list(p, out):
    assert_no_control_nodes(out)
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}
    assert set(rows) == set(p.messages), out
    for name, data in p.messages.items():
        assert rows[name][0] == str(len(data)) and rows[name][1] == "(regular)", out
    assert "standard::content-type=text/plain" in " ".join(rows["note.txt"]), out


def check_gio_info(p, out):
    for name, data in p.messages.items():
        assert f"name: {name}\n" in out, out
        assert re.search(rf"uri: file://{re.escape(str(p.box / name))}\n", out), out
    assert re.search(r"standard::size: 28\n", out), out
    assert "standard::content-type: text/plain" in out, out
    assert "xattr::ipc.seq:" in out, out


def check_grep(p, out):
    lines = out.splitlines()
    assert f"{p.box / '0000000001'}:hello from .send" in lines, out
    assert f"{p.box / 'note.txt'}:Plain text note" in lines, out
    assert f"{p.other / '0000000001'}:a message in another mailbox" in lines, out


BROWSE = {
    "ls_lR": ("ls", lambda p: ["ls", "-lRa", p.mnt], check_ls),
    "find": ("find", lambda p: ["find", p.mnt], check_find),
    "stat": ("stat", lambda p: ["stat", *(p.box / n for n in p.messages), p.box], check_stat),
    "getfattr": ("getfattr", lambda p: ["getfattr", "-R", "-d", "-m", "-", p.mailboxes],
                 check_getfattr),
    "file": ("file", lambda p: ["file", *(p.box / n for n in sorted(p.messages))],
             check_file),
    "gio_list": ("gio", lambda p: ["gio", "list", "-h", "-l", "-a",
                                   "standard::content-type", p.box], check_gio_list),
    "gio_info": ("gio", lambda p: ["gio", "info", *(p.box / n for n in p.messages)],
                 check_gio_info),
    "grep_r": ("grep", lambda p: ["grep", "-r", "-e", "hello", "-e", "Plain", "-e",
                                  "another", p.mailboxes], check_grep),
}


@pytest.mark.parametrize("tool", sorted(BROWSE))
def test_browsing_tool_never_takes_a_message(populated, tmp_path, tool):
    exe, argv, check = BROWSE[tool]
    need(exe)
    rc, out, err = run(argv(populated), tmp_path, tool, env=GIO_ENV)
    assert rc == 0, f"{tool}: rc {rc}\n{err}"
    check(populated, out)
    populated.assert_nothing_taken(tool)


def test_every_browsing_tool_in_turn_leaves_the_queue_alone(populated, tmp_path):
    """The tools one after another over the same mount, as a user poking around would."""
    ran = []
    for tool, (exe, argv, check) in sorted(BROWSE.items()):
        if shutil.which(exe) is None:
            continue
        rc, out, err = run(argv(populated), tmp_path, tool, env=GIO_ENV)
        assert rc == 0, f"{tool}: rc {rc}\n{err}"
        check(populated, out)
        ran.append(tool)
    assert ran
    populated.assert_nothing_taken(" then ".join(ran))


# ---------------------------------------------------------------- copy in, delete

def test_gio_copy_into_a_mailbox_sends_it(populated, tmp_path):
    need("gio")
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    photo, readme = src_dir / "photo.raw", src_dir / "readme.txt"
    photo.write_bytes(bytes(range(255, -1, -1)) * 64)
    readme.write_bytes(b"copied in with gio\n")
    before = read_status(populated.box)
    rc, _, err = run(["gio", "copy", photo, readme, f"{populated.box}/"], tmp_path, "copy",
                     env=GIO_ENV)
    assert rc == 0, err
    after = read_status(populated.box)
    assert int(after["messages"]) == int(before["messages"]) + 2
    assert int(after["sent"]) == int(before["sent"]) + 2
    assert sorted(os.listdir(populated.box)) == sorted([*populated.messages, "photo.raw",
                                                        "readme.txt"])
    assert Path(populated.box, "photo.raw").read_bytes() == photo.read_bytes()
    assert Path(populated.box, "readme.txt").read_bytes() == readme.read_bytes()
    assert_receive_untouched(populated.mnt)


def test_gio_copy_onto_a_queued_name_fails_and_keeps_the_message(populated, tmp_path):
    """gio copy overwrites by default: opening the queued message for writing is refused
    (EACCES), and the message stays as it was."""
    need("gio")
    src = tmp_path / "note.txt"
    src.write_bytes(b"a different note\n")
    rc, _, _ = run(["gio", "copy", src, f"{populated.box}/"], tmp_path, "copy", env=GIO_ENV)
    assert rc != 0
    populated.assert_nothing_taken("gio copy onto an existing name")


def test_gio_remove_discards_a_message(populated, tmp_path):
    need("gio")
    before_root = read_status(populated.mnt)
    rc, _, err = run(["gio", "remove", populated.box / "note.txt"], tmp_path, "remove",
                     env=GIO_ENV)
    assert rc == 0, err
    assert sorted(os.listdir(populated.box)) == ["0000000001", "blob.bin"]
    assert read_status(populated.box)["messages"] == "2"
    assert int(read_status(populated.mnt)["discarded"]) == int(before_root["discarded"]) + 1
    assert_receive_untouched(populated.mnt)
    for name in ("0000000001", "blob.bin"):
        assert Path(populated.box, name).read_bytes() == populated.messages[name]


# ---------------------------------------------------------------- Midnight Commander

class Tmux:
    """One detached tmux session on a socket of its own; close() ends that session (by
    its unique name) and with it the server started for it."""

    def __init__(self, tmp_path, argv, cwd, env):
        self.socket = f"ipcfs-test-{os.getpid()}-{time.monotonic_ns()}"
        self.session = self.socket
        self.tmp_path = tmp_path
        self.started = False
        rc, _, err = self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y",
                               "50", "-c", cwd, *(f"-e{k}={v}" for k, v in env.items()),
                               *argv, env=dict(os.environ, **env))
        assert rc == 0, err
        self.started = True

    def tmux(self, *args, env=None):
        return run(["tmux", "-L", self.socket, *args], self.tmp_path, "tmux", env=env)

    def screen(self):
        rc, out, _ = self.tmux("capture-pane", "-p", "-t", self.session)
        return out if rc == 0 else ""

    def keys(self, *keys):
        rc, _, err = self.tmux("send-keys", "-t", self.session, *keys)
        assert rc == 0, err

    def alive(self):
        return self.tmux("has-session", "-t", self.session)[0] == 0

    def wait_screen(self, predicate, what):
        return wait_until(lambda: predicate(self.screen()), timeout=SCREEN_DEADLINE_S,
                          interval=0.05, what=what)

    def close(self):
        if self.started and self.alive():
            self.tmux("kill-session", "-t", self.session)


def mini_status(screen):
    """The line under the left panel's listing: the name of the file under the cursor."""
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("├") and i + 1 < len(lines):
            return lines[i + 1]
    return ""


def panel_shows(screen, name, size):
    return re.search(rf"[│ ]{re.escape(name)} +│ *{size}│", screen) is not None


def move_cursor_to(mc, name):
    """Moves mc's cursor down until the mini status names name (the sort order is mc's)."""
    for _ in range(10):
        status = mini_status(mc.screen())
        if re.match(rf"│ ?{re.escape(name)}\s", status):  # the left panel's
            return
        mc.keys("Down")
        mc.wait_screen(lambda s: mini_status(s) != status, f"mc cursor to leave {status!r}")
    pytest.fail(f"mc cursor never reached {name}")


def test_midnight_commander_lists_views_and_deletes(populated, tmp_path):
    need("tmux")
    need("mc")
    home = tmp_path / "home"   # mc writes its config and history here, not in ~
    home.mkdir()
    env = {"TERM": "xterm", "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    mc = Tmux(tmp_path, ["mc", "-u", "-d", str(populated.box), str(populated.box)],
              populated.box, env)
    try:
        # The listing: every message by name with its size, no control node.
        mc.wait_screen(lambda s: all(panel_shows(s, n, len(d))
                                     for n, d in populated.messages.items()),
                       "mc to list the messages with their sizes")
        assert_no_control_nodes(mc.screen())
        populated.assert_nothing_taken("mc listing")

        # F3 views a message: its text shows, and it is still queued afterwards.
        move_cursor_to(mc, "note.txt")
        mc.keys("F3")
        mc.wait_screen(lambda s: "Plain text note" in s and "second line" in s,
                       "mc's viewer to show note.txt")
        populated.assert_nothing_taken("mc view (F3)")
        mc.keys("F10")  # leave the viewer
        mc.wait_screen(lambda s: panel_shows(s, "note.txt", len(TEXT_NOTE))
                       and "Plain text note" not in s, "mc to return to the listing")

        # F8 deletes the message under the cursor: it is discarded, not received.
        mc.keys("F8")
        mc.wait_screen(lambda s: "Delete" in s and "note.txt" in s, "mc's delete dialog")
        mc.keys("Enter")
        wait_until(lambda: "note.txt" not in os.listdir(populated.box),
                   timeout=SCREEN_DEADLINE_S, interval=0.05, what="mc to delete note.txt")
        assert read_status(populated.box)["messages"] == "2"
        assert_receive_untouched(populated.mnt)
        mc.wait_screen(lambda s: not panel_shows(s, "note.txt", len(TEXT_NOTE))
                       and panel_shows(s, "blob.bin", len(BINARY)), "mc to drop note.txt")

        mc.keys("F10")  # quit mc (a fresh config asks no confirmation)
        wait_until(lambda: not mc.alive(), timeout=SCREEN_DEADLINE_S, interval=0.05,
                   what="mc to quit")
    finally:
        mc.close()
