"""Receiver policies, user.ipc.policy: `any` (every message to exactly one receiver, the
longest-waiting first), `exclusive` (one receiving process at a time, others EBUSY), `pair`
(the first two processes that open .send or .receive are bound, others EPERM; a bound
process that exits frees its slot); changing the policy while receivers wait; refused opens
change nothing.

Contract: spec/interface.md, "Mailboxes" (Who receives). Every actor whose pid matters is a
separate process; a receiver is known to be blocked when .status shows it in
receivers_waiting, and every blocking step has a deadline."""
import errno
import os
import subprocess

import pytest

from conftest import wait_until
from ipcfs_helpers import (PY, STEP_S, Call, assert_unchanged, expect_errno, field, received,
                           send, snapshot, start_receive, wait_field)
from ipcfs_helpers import agents  # noqa: F401 (fixture: importing makes it available here)


# ---------------------------------------------------------------- helpers

def set_policy(box, value):
    os.setxattr(box, "user.ipc.policy", value.encode() if isinstance(value, str) else value)


def bound(box):
    value = field(box, "bound")
    return set() if value == "-" else {int(p) for p in value.split()}


def refused(agent, path, flags, code):
    r = agent.call(op="open", path=str(path), flags=flags)
    assert r.get("errno") == code, \
        f"process {agent.pid}: expected {errno.errorcode[code]}, got {r}"


def close(agent, fd):
    assert agent.call(op="close", fd=fd) == {"ok": None}


def agent_send(agent, box, data):
    """agent opens .send, writes data and closes: one message sent by that process."""
    fd = agent.open(box / ".send", os.O_WRONLY)
    assert agent.call(op="write", fd=fd, data=data.hex()) == {"ok": len(data)}
    close(agent, fd)


def open_when_freed(agent, path, flags=os.O_RDONLY, timeout=STEP_S):
    """Opens path in agent, retrying while the previous holder's release is in flight."""
    result = {}

    def attempt():
        r = agent.call(op="open", path=str(path), flags=flags)
        result.update(r)
        return "ok" in r

    wait_until(attempt, timeout=timeout, what=f"process {agent.pid} to open {path.name}")
    return result["ok"]


# ---------------------------------------------------------------- the attribute

def test_policy_defaults_to_any(mailbox):
    assert os.getxattr(mailbox, "user.ipc.policy") == b"any"
    assert field(mailbox, "policy") == "any"
    assert field(mailbox, "bound") == "-"
    assert "user.ipc.policy" in os.listxattr(mailbox)


@pytest.mark.parametrize("value", ["exclusive", "pair", "any", "exclusive\n", "pair\n", "any\n"],
                         ids=["exclusive", "pair", "any", "exclusive_nl", "pair_nl", "any_nl"])
def test_policy_is_set_and_read_back(mailbox, value):
    set_policy(mailbox, "exclusive" if value.strip() != "exclusive" else "pair")
    set_policy(mailbox, value)
    assert os.getxattr(mailbox, "user.ipc.policy").decode() == value.strip()
    assert field(mailbox, "policy") == value.strip()


@pytest.mark.parametrize("value", [b"bogus", b"", b"\n", b"exclusive2", b"pair any", b"0"],
                         ids=["bogus", "empty", "newline", "exclusive2", "two", "zero"])
def test_bad_policy_is_einval_and_changes_nothing(mount, mailbox, value):
    set_policy(mailbox, "exclusive")
    before = snapshot(mount, mailbox)
    expect_errno(errno.EINVAL, os.setxattr, mailbox, "user.ipc.policy", value)
    assert os.getxattr(mailbox, "user.ipc.policy") == b"exclusive"
    assert_unchanged(mount, mailbox, before)


# ---------------------------------------------------------------- any

def test_any_lets_several_processes_receive_and_serves_the_longest_waiting(mailbox, agents):
    receivers = []
    for i in range(3):
        a = agents()
        start_receive(a, mailbox)
        receivers.append(a)
        wait_field(mailbox, "receivers_waiting", i + 1)
    fd = os.open(mailbox / ".send", os.O_RDWR)
    try:
        for seq, a in enumerate(receivers, start=1):
            os.write(fd, b"m%d" % seq)
            assert Call(lambda: os.read(fd, 100)).result() == \
                f"delivered {seq} to {a.pid}\n".encode()
            assert received(a) == b"m%d" % seq
    finally:
        os.close(fd)
    assert field(mailbox, "bound") == "-"


# ---------------------------------------------------------------- exclusive

def test_exclusive_refuses_a_second_receiving_process_with_ebusy(mount, mailbox, agents):
    set_policy(mailbox, "exclusive")
    holder, other = agents(), agents()
    hfd = holder.open(mailbox / ".receive")
    before = snapshot(mount, mailbox)
    refused(other, mailbox / ".receive", os.O_RDONLY, errno.EBUSY)
    refused(other, mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK, errno.EBUSY)
    expect_errno(errno.EBUSY, os.open, mailbox / ".receive", os.O_RDONLY)
    r = subprocess.run(["cat", str(mailbox / ".receive")], capture_output=True, timeout=STEP_S)
    assert r.returncode != 0 and b"busy" in r.stderr.lower(), r.stderr
    assert_unchanged(mount, mailbox, before)
    # the holder itself may open it again; anyone may still send
    hfd2 = holder.open(mailbox / ".receive")
    send(mailbox, b"for the holder")
    assert bytes.fromhex(holder.call(op="recv", fd=hfd2)["ok"]) == b"for the holder"
    close(holder, hfd2)
    refused(other, mailbox / ".receive", os.O_RDONLY, errno.EBUSY)  # hfd is still open
    close(holder, hfd)
    # freed once the holder's last .receive is released (asynchronously after close)
    ofd = open_when_freed(other, mailbox / ".receive")
    refused(holder, mailbox / ".receive", os.O_RDONLY, errno.EBUSY)
    send(mailbox, b"for the new holder")
    assert bytes.fromhex(other.call(op="recv", fd=ofd)["ok"]) == b"for the new holder"


def test_exclusive_holder_that_exits_frees_the_mailbox(mailbox, agents):
    set_policy(mailbox, "exclusive")
    holder, other = agents(), agents()
    start_receive(holder, mailbox)
    wait_field(mailbox, "receivers_waiting", 1)
    refused(other, mailbox / ".receive", os.O_RDONLY, errno.EBUSY)
    holder.kill()
    wait_field(mailbox, "receivers_waiting", 0)
    fd = open_when_freed(other, mailbox / ".receive")
    send(mailbox, b"after the holder died")
    assert bytes.fromhex(other.call(op="recv", fd=fd)["ok"]) == b"after the holder died"


def test_exclusive_holder_blocked_in_read_gets_a_message_from_another_process(mailbox, agents):
    set_policy(mailbox, "exclusive")
    holder, sender = agents(), agents()
    start_receive(holder, mailbox)
    wait_field(mailbox, "receivers_waiting", 1)
    sfd = sender.open(mailbox / ".send", os.O_WRONLY)
    # the sender writes and closes: .send is not restricted by exclusive
    r = subprocess.run(["sh", "-c", 'printf excl > "$1"', "sh", str(mailbox / ".send")],
                       timeout=STEP_S)
    assert r.returncode == 0
    assert received(holder) == b"excl"
    close(sender, sfd)


def test_exclusive_allows_threads_of_the_holding_process(mailbox, agents):
    """A process is a thread group: a second thread of the holder is the same process."""
    set_policy(mailbox, "exclusive")
    fd1 = os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    try:
        fd2 = Call(lambda: os.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)).result()
        assert isinstance(fd2, int), fd2
        os.close(fd2)
        refused(agents(), mailbox / ".receive", os.O_RDONLY, errno.EBUSY)
    finally:
        os.close(fd1)


# ---------------------------------------------------------------- pair

def test_pair_binds_the_first_two_processes_and_refuses_a_third_with_eperm(mount, mailbox,
                                                                            agents):
    set_policy(mailbox, "pair")
    a, b, c = agents(), agents(), agents()
    # reading .status or xattrs binds nobody
    assert field(mailbox, "bound") == "-"
    afd = a.open(mailbox / ".send", os.O_WRONLY)
    assert bound(mailbox) == {a.pid}
    bfd = b.open(mailbox / ".receive")
    assert bound(mailbox) == {a.pid, b.pid}
    before = snapshot(mount, mailbox)
    refused(c, mailbox / ".send", os.O_WRONLY, errno.EPERM)
    refused(c, mailbox / ".receive", os.O_RDONLY, errno.EPERM)
    refused(c, mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK, errno.EPERM)
    expect_errno(errno.EPERM, os.open, mailbox / ".send", os.O_WRONLY)
    expect_errno(errno.EPERM, os.open, mailbox / ".receive", os.O_RDONLY)
    assert_unchanged(mount, mailbox, before)
    close(a, afd)
    close(b, bfd)
    wr = subprocess.run(["sh", "-c", 'printf refused > "$1"', "sh", str(mailbox / ".send")],
                        capture_output=True, timeout=STEP_S)
    assert wr.returncode != 0 and b"not permitted" in wr.stderr.lower(), wr.stderr
    assert field(mailbox, "messages") == "0"
    assert bound(mailbox) == {a.pid, b.pid}


def test_pair_bound_processes_exchange_messages_both_ways(mailbox, agents):
    set_policy(mailbox, "pair")
    a, b = agents(), agents()
    bfd = start_receive(b, mailbox)
    wait_field(mailbox, "receivers_waiting", 1)
    agent_send(a, mailbox, b"hello b")
    assert received(b) == b"hello b"
    assert bound(mailbox) == {a.pid, b.pid}
    # any number of further opens, of either node, by either of them
    agent_send(b, mailbox, b"hello a")
    afd = a.open(mailbox / ".receive")
    assert bytes.fromhex(a.call(op="recv", fd=afd)["ok"]) == b"hello a"
    b.request(op="recv", fd=bfd)
    wait_field(mailbox, "receivers_waiting", 1)
    agent_send(a, mailbox, b"again")
    assert received(b) == b"again"
    assert bound(mailbox) == {a.pid, b.pid}


def test_pair_slot_is_freed_when_a_bound_process_exits(mount, mailbox, agents):
    set_policy(mailbox, "pair")
    a, b, c = agents(), agents(), agents()
    a.open(mailbox / ".send", os.O_WRONLY)
    bfd = b.open(mailbox / ".receive")
    assert bound(mailbox) == {a.pid, b.pid}
    refused(c, mailbox / ".send", os.O_WRONLY, errno.EPERM)
    a.kill()
    # the exit frees a's slot: c may now bind
    cfd = open_when_freed(c, mailbox / ".send", os.O_WRONLY)
    assert bound(mailbox) == {b.pid, c.pid}
    d = agents()
    refused(d, mailbox / ".receive", os.O_RDONLY, errno.EPERM)
    close(c, cfd)
    # c (still alive, nothing open) stays bound; b too
    refused(d, mailbox / ".send", os.O_WRONLY, errno.EPERM)
    b.request(op="recv", fd=bfd)
    wait_field(mailbox, "receivers_waiting", 1)
    b.kill()
    wait_field(mailbox, "receivers_waiting", 0)
    dfd = open_when_freed(d, mailbox / ".receive", os.O_RDONLY)
    assert bound(mailbox) == {c.pid, d.pid}
    close(d, dfd)


def test_pair_with_a_shell_pipeline_of_two_processes(mailbox, agents):
    set_policy(mailbox, "pair")
    receiver = agents()
    start_receive(receiver, mailbox)
    wait_field(mailbox, "receivers_waiting", 1)
    sender = subprocess.run([PY, "-c", 'import sys; open(sys.argv[1], "wb").write(b"paired")',
                             str(mailbox / ".send")], capture_output=True, timeout=STEP_S)
    assert sender.returncode == 0, sender.stderr
    assert received(receiver) == b"paired"
    assert bound(mailbox) == {receiver.pid, sender_pid_of(mailbox, receiver)}


def sender_pid_of(mailbox, receiver):
    value = bound(mailbox) - {receiver.pid}
    assert len(value) == 1, field(mailbox, "bound")
    return value.pop()


# ---------------------------------------------------------------- changing the policy

def test_any_to_exclusive_while_two_processes_wait(mailbox, agents):
    r1, r2, late = agents(), agents(), agents()
    start_receive(r1, mailbox)
    wait_field(mailbox, "receivers_waiting", 1)
    start_receive(r2, mailbox)
    wait_field(mailbox, "receivers_waiting", 2)
    set_policy(mailbox, "exclusive")
    assert field(mailbox, "policy") == "exclusive"
    assert field(mailbox, "receivers_waiting") == "2"
    # later opens follow the new policy: others hold .receive open
    refused(late, mailbox / ".receive", os.O_RDONLY, errno.EBUSY)
    # the open files keep working, longest-waiting first
    send(mailbox, b"first")
    assert received(r1) == b"first"
    send(mailbox, b"second")
    assert received(r2) == b"second"
    r1.kill()
    refused(late, mailbox / ".receive", os.O_RDONLY, errno.EBUSY)  # r2 still has it open
    r2.kill()
    fd = open_when_freed(late, mailbox / ".receive")
    close(late, fd)


def test_exclusive_to_any_while_the_holder_waits(mailbox, agents):
    set_policy(mailbox, "exclusive")
    holder, other = agents(), agents()
    start_receive(holder, mailbox)
    wait_field(mailbox, "receivers_waiting", 1)
    refused(other, mailbox / ".receive", os.O_RDONLY, errno.EBUSY)
    set_policy(mailbox, "any")
    start_receive(other, mailbox)
    wait_field(mailbox, "receivers_waiting", 2)
    send(mailbox, b"one")
    send(mailbox, b"two")
    assert received(holder) == b"one"
    assert received(other) == b"two"


def test_any_to_pair_while_three_processes_wait(mailbox, agents):
    waiting = [agents() for _ in range(3)]
    for i, w in enumerate(waiting):
        start_receive(w, mailbox)
        wait_field(mailbox, "receivers_waiting", i + 1)
    set_policy(mailbox, "pair")
    # files opened before bind nobody
    assert field(mailbox, "bound") == "-"
    x, p, q = agents(), agents(), agents()
    agent_send(x, mailbox, b"to waiter 0")
    assert bound(mailbox) == {x.pid}
    # the open files keep working
    assert received(waiting[0]) == b"to waiter 0"
    p.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    assert bound(mailbox) == {x.pid, p.pid}
    refused(q, mailbox / ".receive", os.O_RDONLY, errno.EPERM)
    agent_send(x, mailbox, b"to waiter 1")
    assert received(waiting[1]) == b"to waiter 1"
    agent_send(x, mailbox, b"to waiter 2")
    assert received(waiting[2]) == b"to waiter 2"
    assert field(mailbox, "receivers_waiting") == "0"


def test_setting_a_policy_clears_the_pair_binding(mailbox, agents):
    set_policy(mailbox, "pair")
    a, b, c = agents(), agents(), agents()
    afd = a.open(mailbox / ".send", os.O_WRONLY)
    b.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    assert bound(mailbox) == {a.pid, b.pid}
    refused(c, mailbox / ".receive", os.O_RDONLY, errno.EPERM)
    set_policy(mailbox, "pair")
    assert field(mailbox, "bound") == "-"
    # a's open file keeps working ...
    assert a.call(op="close", fd=afd) == {"ok": None}
    # ... and the next two distinct openers are the new pair
    c.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    assert bound(mailbox) == {c.pid}
    b.open(mailbox / ".send", os.O_WRONLY)
    assert bound(mailbox) == {b.pid, c.pid}
    refused(a, mailbox / ".send", os.O_WRONLY, errno.EPERM)


def test_pair_to_any_lets_everyone_in(mailbox, agents):
    set_policy(mailbox, "pair")
    a, b, c = agents(), agents(), agents()
    a.open(mailbox / ".send", os.O_WRONLY)
    b.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    refused(c, mailbox / ".receive", os.O_RDONLY, errno.EPERM)
    set_policy(mailbox, "any")
    assert field(mailbox, "bound") == "-"
    fd = c.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    send(mailbox, b"open to all")
    assert bytes.fromhex(c.call(op="recv", fd=fd)["ok"]) == b"open to all"


def test_bad_policy_value_keeps_the_pair_binding(mount, mailbox, agents):
    set_policy(mailbox, "pair")
    a, b, c = agents(), agents(), agents()
    a.open(mailbox / ".send", os.O_WRONLY)
    b.open(mailbox / ".receive", os.O_RDONLY | os.O_NONBLOCK)
    before = snapshot(mount, mailbox)
    expect_errno(errno.EINVAL, os.setxattr, mailbox, "user.ipc.policy", b"nobody")
    assert_unchanged(mount, mailbox, before)
    assert bound(mailbox) == {a.pid, b.pid}
    refused(c, mailbox / ".send", os.O_WRONLY, errno.EPERM)
