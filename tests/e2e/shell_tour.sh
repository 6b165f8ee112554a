#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2012  # eval'd conditions expand when evaluated; ls output is our own names
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

if [[ $# -ne 1 ]]; then
    echo "usage: bash $0 PATH_TO_IPCFS" >&2
    exit 2
fi
IPCFS=$(realpath -- "$1")
PY=/usr/bin/python3

passed=0
failed=0
MNT=""
WORK=""
DAEMON_PID=""
BG_PIDS=()

# ---------------------------------------------------------------- helpers ----
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
not_ok() {
    failed=$((failed + 1))
    echo "FAIL - $1" >&2
    shift
    local line
    for line in "$@"; do printf '%s\n' "$line" | sed 's/^/       /' >&2; done
}
check() {  # check DESCRIPTION COMMAND...
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc" "command failed: $*"; fi
}
expect_eq() {  # expect_eq DESCRIPTION EXPECTED ACTUAL
    if [[ "$2" == "$3" ]]; then
        ok "$1"
    else
        not_ok "$1" "expected:" "$2" "actual:" "$3" \
            "diff:" "$(diff <(printf '%s\n' "$2") <(printf '%s\n' "$3"))"
    fi
}
fatal() { not_ok "$1" "${@:2}"; exit 1; }

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
wait_until() {  # wait_until SECONDS COMMAND... : poll COMMAND until it succeeds or the deadline passes
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@"; do
        (($(now_ms) > deadline)) && return 1
        sleep 0.02  # polling interval, not synchronisation
    done
}
# A child that has exited stays a zombie until `wait`: "alive" means not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}
is_mounted() {  # read mountinfo rather than stat the mount point (never blocks on FUSE)
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}
status_field() {  # status_field MAILBOX_DIR KEY
    awk -v k="$2:" '$1 == k { print $2 }' "$1/.status"
}
status_is() { [[ "$(status_field "$1" "$2")" == "$3" ]]; }
line_count_is() { [[ -f $1 && $(wc -l < "$1") -ge $2 ]]; }
file_has() { grep -q -- "$2" "$1" 2>/dev/null; }
jobs_1_to() { local i; for ((i = 1; i <= $1; i++)); do echo "job $i"; done; }
listing() { ls -- "$1" | tr '\n' ' ' | sed 's/ $//'; }

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

# ---------------------------------------------------------------- cleanup ----
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${BG_PIDS[@]}"; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null; fi
        wait "$pid" 2>/dev/null
    done
    if [[ -n $DAEMON_PID ]]; then  # still ours to stop (the tour's own unmount did not happen or failed)
        if alive "$DAEMON_PID"; then
            kill -TERM "$DAEMON_PID" 2>/dev/null
            if ! wait_until 10 eval '! alive "$DAEMON_PID"'; then
                not_ok "daemon exits within 10 s of SIGTERM" "sending SIGKILL to pid $DAEMON_PID"
                kill -KILL "$DAEMON_PID" 2>/dev/null
            fi
        fi
        wait "$DAEMON_PID" 2>/dev/null
    fi
    if [[ -n $MNT ]]; then
        if is_mounted "$MNT"; then
            not_ok "no mount left behind" "lazy-unmounting $MNT"
            fusermount3 -u -z "$MNT" 2>/dev/null
        fi
        is_mounted "$MNT" || rmdir -- "$MNT" 2>/dev/null
    fi
    [[ -n $WORK ]] && rm -rf -- "$WORK"
    echo "$passed passed, $failed failed"
    if ((failed > 0)); then exit 1; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ mount ----
[[ -x $IPCFS ]] || fatal "ipcfs binary is executable" "not found or not executable: $IPCFS"
WORK=$(mktemp -d -t ipcfs-tour-work.XXXXXX)
MNT=$(mktemp -d -t ipcfs-tour-mnt.XXXXXX)
"$IPCFS" -f -o auto_unmount "$MNT" >"$WORK/ipcfs.log" 2>&1 &
DAEMON_PID=$!
if ! wait_until 10 eval 'is_mounted "$MNT" || ! alive "$DAEMON_PID"' || ! is_mounted "$MNT"; then
    fatal "ipcfs mounts $MNT within 10 s" "daemon log:" "$(cat "$WORK/ipcfs.log")"
fi
ok "ipcfs mounts $MNT (daemon pid $DAEMON_PID)"
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
