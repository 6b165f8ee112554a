#!/usr/bin/env bash
# shellcheck disable=SC2016  # eval'd conditions expand when evaluated
# The README's one-minute tour, asserted step by step against a real ipcfs mount.
#
#   bash tests/e2e/shell_tour.sh PATH_TO_IPCFS
#
# mkdir a mailbox; `echo "2 pizzas" > .send`; `ls -l` shows one message file; `cat`
# of it peeks; `cat .receive` takes it; a second `cat .receive` blocks until Ctrl-C
# (SIGINT) ends it at once, and the mailbox still works afterwards; `{ echo a; echo b; }
# > .send` is one message; `rm` of a message discards it; `cp` of a file sends it under
# its name; `.status`; `fusermount3 -u` unmounts and the daemon exits 0.
# No sleeps are used for synchronisation: every wait polls a condition against a
# deadline. The daemon, any process still running, the mount and the temporary
# directories are cleaned up by an EXIT trap. The last line is
# "<passed> passed, <failed> failed"; the exit status is non-zero if any check failed.
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
PY=/usr/bin/python3
# The tour unmounts and reaps the daemon itself (reap_daemon); cleanup only stops a leftover one.
CLEANUP_CHECKS_DAEMON=0

# ---------------------------------------------------------------- helpers ----
# Prefix that runs a command with SIGINT at its default action. Bash starts background
# commands of a non-interactive script with SIGINT ignored, and `cat` would inherit that;
# this is what makes `kill -INT` behave like Ctrl-C on a foreground `cat`. It is an array,
# not a function, so that `"${DEFAULT_SIGINT[@]}" cat ... &` execs (python, then cat) in
# the forked child and $! is cat's own pid.
DEFAULT_SIGINT=("$PY" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])')
# Try a non-blocking receive: prints EAGAIN, or "message: ..." if one was taken.
nonblocking_receive() {
    timeout 10 "$PY" -c 'import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
try:
    print("message:", os.read(fd, 65536))
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
finally:
    os.close(fd)' "$1"
}
same_bytes() { cmp -s -- "$1" "$2"; }
reap_daemon() {  # wait for the daemon to exit on its own; sets DAEMON_STATUS
    if wait_until 5 eval '! alive "$DAEMON_PID"'; then
        wait "$DAEMON_PID"
        DAEMON_STATUS=$?
        DAEMON_PID=""
    else
        DAEMON_STATUS="still running 5 s later"
    fi
}

# ------------------------------------------------------------------ mount ----
mount_ipcfs tour
BOX=$MNT/mailboxes/orders

# ------------------------------------------------------------------- tour ----
echo '# mkdir mailboxes/orders'
check "mkdir creates the mailbox" mkdir "$BOX"
expect_eq "ls mailboxes/ lists it" "orders" "$(listing "$MNT/mailboxes")"
expect_eq "a new mailbox is empty" "" "$(listing "$BOX")"

echo '# echo "2 pizzas" > .send'
check 'echo "2 pizzas" > .send succeeds' eval 'echo "2 pizzas" > "$BOX/.send"'
lsl=$(ls -l -- "$BOX")
entries=$(printf '%s\n' "$lsl" | grep -v '^total ')
expect_eq "ls -l shows one message file" "1" "$(printf '%s\n' "$entries" | grep -c .)"
expect_eq "ls -l: mode, size and name are '-r--r--r-- 9 0000000001'" "-r--r--r-- 9 0000000001" \
    "$(printf '%s\n' "$entries" | awk '{ print $1, $5, $NF }')"

echo '# cat 0000000001 (peek)'
printf '2 pizzas\n' >"$WORK/pizzas"
cat -- "$BOX/0000000001" >"$WORK/peek" 2>&1
check 'cat of the message file prints exactly "2 pizzas\n"' same_bytes "$WORK/pizzas" "$WORK/peek"
expect_eq "peeking took nothing: ls still shows 0000000001" "0000000001" "$(listing "$BOX")"
expect_eq ".status: messages 1" "1" "$(status_field "$BOX" messages)"
expect_eq ".status: bytes 9" "9" "$(status_field "$BOX" bytes)"

echo '# cat .receive (take)'
timeout 10 cat -- "$BOX/.receive" >"$WORK/recv1" 2>&1
expect_eq "cat .receive exits 0" "0" "$?"
check 'cat .receive prints exactly "2 pizzas\n"' same_bytes "$WORK/pizzas" "$WORK/recv1"
expect_eq "receiving took it: ls is now empty" "" "$(listing "$BOX")"
expect_eq ".status: messages 0" "0" "$(status_field "$BOX" messages)"

echo '# cat .receive again: blocks until Ctrl-C'
"${DEFAULT_SIGINT[@]}" cat -- "$BOX/.receive" >"$WORK/blocked.out" 2>"$WORK/blocked.err" &
cat_pid=$!
BG_PIDS+=("$cat_pid")
check "the second cat .receive blocks (.status receivers_waiting: 1)" \
    wait_until 5 status_is "$BOX" receivers_waiting 1
expect_eq "the pid to signal is cat itself" "cat" "$(cat "/proc/$cat_pid/comm" 2>/dev/null)"
check "... and is still running, having printed nothing" eval 'alive "$cat_pid" && [[ ! -s $WORK/blocked.out ]]'
t0=$(now_ms)
kill -INT "$cat_pid"
if wait_until 1 eval '! alive "$cat_pid"'; then
    ok "SIGINT (Ctrl-C) ends the blocked cat within 1 s ($(($(now_ms) - t0)) ms)"
else
    not_ok "SIGINT (Ctrl-C) ends the blocked cat within 1 s" "still running after $(($(now_ms) - t0)) ms"
fi
if ! alive "$cat_pid"; then
    wait "$cat_pid"
    expect_eq "the interrupted cat died of SIGINT (status 130)" "130" "$?"
fi
expect_eq "the interrupted cat printed nothing" "" "$(cat "$WORK/blocked.out")"
check "the interrupted receiver is no longer counted (.status receivers_waiting: 0)" \
    wait_until 2 status_is "$BOX" receivers_waiting 0

echo '# the mailbox still works after the interrupt'
echo "3 salads" >"$BOX/.send"
expect_eq "a new message is queued, not swallowed by the interrupted receiver" "0000000002" "$(listing "$BOX")"
expect_eq "cat .receive takes it" "3 salads" "$(timeout 10 cat -- "$BOX/.receive")"
timeout 10 cat -- "$BOX/.receive" >"$WORK/waiter.out" 2>"$WORK/waiter.err" &
waiter=$!
BG_PIDS+=("$waiter")
check "a new blocked cat .receive waits (.status receivers_waiting: 1)" \
    wait_until 5 status_is "$BOX" receivers_waiting 1
echo "4 tacos" >"$BOX/.send"
wait "$waiter"
expect_eq "... and exits 0 when a message is sent" "0" "$?"
expect_eq "... printing it" "4 tacos" "$(cat "$WORK/waiter.out")"
expect_eq "the mailbox is empty again" "" "$(listing "$BOX")"

echo '# { echo a; echo b; } > .send is one message'
{ echo a; echo b; } >"$BOX/.send"
expect_eq "ls shows exactly one new message" "0000000004" "$(listing "$BOX")"
printf 'a\nb\n' >"$WORK/ab"
check 'its content is exactly "a\nb\n"' same_bytes "$WORK/ab" "$BOX/0000000004"
expect_eq ".status: messages 1" "1" "$(status_field "$BOX" messages)"

echo '# rm of a message discards it'
check "rm 0000000004 succeeds" rm -- "$BOX/0000000004"
expect_eq "ls is empty after rm" "" "$(listing "$BOX")"
expect_eq ".status: messages 0 after rm" "0" "$(status_field "$BOX" messages)"
expect_eq "nothing left to receive: O_NONBLOCK read of .receive gives EAGAIN" "EAGAIN" \
    "$(nonblocking_receive "$BOX/.receive")"

echo '# cp report.pdf mailboxes/orders/'
head -c 3000 /dev/urandom >"$WORK/report.pdf"
check "cp report.pdf into the mailbox succeeds" cp -- "$WORK/report.pdf" "$BOX/"
expect_eq "it is queued under its own name" "report.pdf" "$(listing "$BOX")"
check "peeking report.pdf gives back the same bytes" same_bytes "$WORK/report.pdf" "$BOX/report.pdf"
timeout 10 cat -- "$BOX/.receive" >"$WORK/report.received"
check "cat .receive takes report.pdf, byte for byte" same_bytes "$WORK/report.pdf" "$WORK/report.received"
expect_eq "the mailbox is empty again" "" "$(listing "$BOX")"

echo '# cat .status'
for key in id messages bytes capacity policy max_msg_size receivers_waiting senders_waiting; do
    check ".status has a '$key:' line" grep -q "^$key: " "$BOX/.status"
done
expect_eq ".status: receivers_waiting 0, senders_waiting 0, messages 0" "0 0 0" \
    "$(status_field "$BOX" receivers_waiting) $(status_field "$BOX" senders_waiting) $(status_field "$BOX" messages)"

echo '# fusermount3 -u: unmount; the daemon exits 0'
check "fusermount3 -u succeeds" fusermount3 -u "$MNT"
check "the mount is gone" eval '! is_mounted "$MNT"'
reap_daemon
expect_eq "the daemon exits 0 after the unmount" "0" "$DAEMON_STATUS"
