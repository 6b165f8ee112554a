#!/usr/bin/env bash
# End-to-end run of everything in examples/ against a real ipcfs mount.
#
#   bash tests/e2e/examples.sh PATH_TO_IPCFS
#
# Mounts ipcfs on a fresh temporary directory, runs the shell and Python examples
# (each under `timeout`) and asserts their output exactly. No sleeps are used for
# synchronisation: every wait polls a condition against a deadline. The daemon,
# any example still running, the mount and the temporary directories are cleaned
# up by an EXIT trap. The last line is "<passed> passed, <failed> failed"; the
# exit status is non-zero if any check failed.
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
EXAMPLES=$ROOT/examples
PY=/usr/bin/python3
T=20  # seconds any one example may run
CLEANUP_CHECKS_DAEMON=1  # stopping the daemon with SIGTERM at the end is itself checked

# Example runners (run_bg, finish, run_fg, expect_exit0, expect_failure, expect_empty_mailbox).
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/examples.sh"

# ------------------------------------------------------------------ mount ----
mount_ipcfs e2e
MB=$MNT/mailboxes

# ------------------------------------------- shell: consumer waits first ----
echo "# shell consumer started first, then shell producer"
check "mkdir mailboxes/shell-jobs" mkdir "$MB/shell-jobs"
run_bg shell-consumer bash "$EXAMPLES/shell/consumer.sh" "$MB/shell-jobs" 5
cons=$LAST_PID
check "shell consumer blocks on the empty mailbox (.status receivers_waiting: 1)" \
    wait_until 5 status_is "$MB/shell-jobs" receivers_waiting 1
run_fg shell-producer bash "$EXAMPLES/shell/producer.sh" "$MB/shell-jobs" 5
expect_exit0 "shell producer exits 0" $? shell-producer
finish "$cons"
expect_exit0 "shell consumer exits 0" $? shell-consumer
expect_eq "shell consumer printed job 1..5 in order" "$(jobs_1_to 5)" "$(cat "$WORK/shell-consumer.out")"
expect_empty_mailbox "mailbox shell-jobs is empty afterwards" "$MB/shell-jobs"

# ------------------------------------------- shell: messages queued first ----
echo "# shell producer first: messages queue up as files, then shell consumer"
check "mkdir mailboxes/shell-queued" mkdir "$MB/shell-queued"
run_fg shell-producer2 bash "$EXAMPLES/shell/producer.sh" "$MB/shell-queued" 3
expect_exit0 "shell producer exits 0" $? shell-producer2
expect_eq "ls lists the 3 queued messages" "0000000001 0000000002 0000000003" "$(listing "$MB/shell-queued")"
expect_eq "cat of message 0000000002 peeks 'job 2'" "job 2" "$(cat "$MB/shell-queued/0000000002")"
run_fg shell-consumer2 bash "$EXAMPLES/shell/consumer.sh" "$MB/shell-queued" 3
expect_exit0 "shell consumer exits 0" $? shell-consumer2
expect_eq "shell consumer printed job 1..3 in order (peek took nothing)" "$(jobs_1_to 3)" "$(cat "$WORK/shell-consumer2.out")"
expect_empty_mailbox "mailbox shell-queued is empty afterwards" "$MB/shell-queued"

# ------------------------------------------ python: consumer waits first ----
echo "# python consumer (one open .receive) started first, then python producer"
check "mkdir mailboxes/py-jobs" mkdir "$MB/py-jobs"
run_bg py-consumer "$PY" "$EXAMPLES/python/consumer.py" "$MB/py-jobs" 20
cons=$LAST_PID
check "python consumer blocks on the empty mailbox (.status receivers_waiting: 1)" \
    wait_until 5 status_is "$MB/py-jobs" receivers_waiting 1
run_fg py-producer "$PY" "$EXAMPLES/python/producer.py" "$MB/py-jobs" 20
expect_exit0 "python producer exits 0" $? py-producer
finish "$cons"
expect_exit0 "python consumer exits 0" $? py-consumer
expect_eq "python consumer printed job 1..20 in order" "$(jobs_1_to 20)" "$(cat "$WORK/py-consumer.out")"
expect_empty_mailbox "mailbox py-jobs is empty afterwards" "$MB/py-jobs"
expect_eq "py-jobs .status: received 20" "20" "$(status_field "$MB/py-jobs" received)"

# ------------------------------ python: consumer takes exactly N, no more ----
echo "# python consumer takes exactly N of the queued messages"
check "mkdir mailboxes/py-partial" mkdir "$MB/py-partial"
run_fg py-producer2 "$PY" "$EXAMPLES/python/producer.py" "$MB/py-partial" 5
expect_exit0 "python producer exits 0" $? py-producer2
expect_eq "ls lists the 5 queued messages" \
    "0000000001 0000000002 0000000003 0000000004 0000000005" "$(listing "$MB/py-partial")"
run_fg py-consumer2 "$PY" "$EXAMPLES/python/consumer.py" "$MB/py-partial" 3
expect_exit0 "python consumer exits 0" $? py-consumer2
expect_eq "python consumer printed job 1..3 in order" "$(jobs_1_to 3)" "$(cat "$WORK/py-consumer2.out")"
expect_eq "messages 4 and 5 are still queued (nothing taken past N)" \
    "0000000004 0000000005" "$(listing "$MB/py-partial")"
expect_eq "py-partial .status: messages 2" "2" "$(status_field "$MB/py-partial" messages)"
expect_eq "py-partial .status: redelivered 0" "0" "$(status_field "$MB/py-partial" redelivered)"
run_fg py-consumer3 "$PY" "$EXAMPLES/python/consumer.py" "$MB/py-partial" 2
expect_exit0 "python consumer exits 0" $? py-consumer3
expect_eq "a second python consumer printed job 4..5" "$(printf 'job 4\njob 5')" "$(cat "$WORK/py-consumer3.out")"
expect_empty_mailbox "mailbox py-partial is empty afterwards" "$MB/py-partial"

# --------------------------------------------------- mixed languages ----
echo "# shell producer -> python consumer, python producer -> shell consumer"
check "mkdir mailboxes/mixed" mkdir "$MB/mixed"
run_bg mix-py-consumer "$PY" "$EXAMPLES/python/consumer.py" "$MB/mixed" 4
cons=$LAST_PID
check "python consumer waits (.status receivers_waiting: 1)" wait_until 5 status_is "$MB/mixed" receivers_waiting 1
run_fg mix-sh-producer bash "$EXAMPLES/shell/producer.sh" "$MB/mixed" 4
expect_exit0 "shell producer exits 0" $? mix-sh-producer
finish "$cons"
expect_exit0 "python consumer exits 0" $? mix-py-consumer
expect_eq "python consumer printed the shell producer's job 1..4" "$(jobs_1_to 4)" "$(cat "$WORK/mix-py-consumer.out")"
run_bg mix-sh-consumer bash "$EXAMPLES/shell/consumer.sh" "$MB/mixed" 4
cons=$LAST_PID
check "shell consumer waits (.status receivers_waiting: 1)" wait_until 5 status_is "$MB/mixed" receivers_waiting 1
run_fg mix-py-producer "$PY" "$EXAMPLES/python/producer.py" "$MB/mixed" 4
expect_exit0 "python producer exits 0" $? mix-py-producer
finish "$cons"
expect_exit0 "shell consumer exits 0" $? mix-sh-consumer
expect_eq "shell consumer printed the python producer's job 1..4" "$(jobs_1_to 4)" "$(cat "$WORK/mix-sh-consumer.out")"
expect_empty_mailbox "mailbox mixed is empty afterwards" "$MB/mixed"

# ------------------------------------------------------------ poll_wait ----
echo "# poll_wait: one epoll loop over three mailboxes"
for m in red green blue; do check "mkdir mailboxes/$m" mkdir "$MB/$m"; done
echo "early" > "$MB/green/.send"
run_bg poll-wait "$PY" "$EXAMPLES/python/poll_wait.py" -n 13 "$MB/red" "$MB/green" "$MB/blue"
pw=$LAST_PID
check "poll_wait registered all three mailboxes" \
    wait_until 5 file_has "$WORK/poll-wait.err" "^poll_wait: waiting on red, green, blue$"
check "poll_wait reports the message queued before it started" wait_until 5 line_count_is "$WORK/poll-wait.out" 1
expect_eq "poll_wait's first line is 'green: early'" "green: early" "$(head -n 1 "$WORK/poll-wait.out")"
# One at a time: each must wake the waiting epoll loop on its own.
k=1
for pair in red:r1 blue:b1 green:g1 blue:b2 red:r2 green:g2; do
    box=${pair%%:*} msg=${pair#*:}
    echo "$msg" > "$MB/$box/.send"
    k=$((k + 1))
    check "poll_wait wakes for '$msg' sent to $box while it waits" \
        wait_until 5 line_count_is "$WORK/poll-wait.out" "$k"
done
# A burst: several messages per mailbox queued at once.
for box in red green blue; do
    echo "${box:0:1}3" > "$MB/$box/.send"
    echo "${box:0:1}4" > "$MB/$box/.send"
done
finish "$pw"
expect_exit0 "poll_wait exits 0 after 13 messages" $? poll-wait
expected_pw=$(printf '%s\n' "green: early" "red: r1" "blue: b1" "green: g1" "blue: b2" "red: r2" "green: g2" \
    "red: r3" "red: r4" "green: g3" "green: g4" "blue: b3" "blue: b4" | sort)
expect_eq "poll_wait saw every message exactly once" "$expected_pw" "$(sort "$WORK/poll-wait.out")"
expect_eq "poll_wait printed the 7 one-at-a-time messages in sending order" \
    "$(printf '%s\n' "green: early" "red: r1" "blue: b1" "green: g1" "blue: b2" "red: r2" "green: g2")" \
    "$(head -n 7 "$WORK/poll-wait.out")"
expect_eq "poll_wait: red's messages in order" "$(printf 'red: r%d\n' 1 2 3 4)" "$(grep '^red: ' "$WORK/poll-wait.out")"
expect_eq "poll_wait: green's messages in order" "$(printf '%s\n' 'green: early' 'green: g1' 'green: g2' 'green: g3' 'green: g4')" \
    "$(grep '^green: ' "$WORK/poll-wait.out")"
expect_eq "poll_wait: blue's messages in order" "$(printf 'blue: b%d\n' 1 2 3 4)" "$(grep '^blue: ' "$WORK/poll-wait.out")"
for m in red green blue; do expect_empty_mailbox "mailbox $m is empty afterwards" "$MB/$m"; done

# ------------------------------------------- procs/: request and reply ----
# A parent and 3 workers talk through their inboxes: a job to each worker's procs/W/.send,
# each reply taken with procs/PARENT/from/W. The Python parent also prints each job's receipt.
replies=$(printf 'worker %d: sum 1..%d = %d\n' 1 10 55 2 20 210 3 30 465
    echo "3 replies, each matched to its worker")
for lang in shell python; do
    case $lang in
        shell) REQ=(bash "$EXAMPLES/shell/procs_request_reply.sh") expected=$replies ;;
        python) REQ=("$PY" "$EXAMPLES/python/procs_request_reply.py")
            expected=$(printf 'job %d: delivered 1 to worker %d\n' 1 1 2 2 3 3; echo "$replies") ;;
    esac
    echo "# $lang procs_request_reply: a parent and 3 workers, request/reply through procs/"
    run_fg "procs-$lang" "${REQ[@]}" "$MNT" 3
    expect_exit0 "$lang procs_request_reply exits 0" $? "procs-$lang"
    expect_eq "$lang procs_request_reply printed every worker's reply, each checked" \
        "$expected" "$(cat "$WORK/procs-$lang.out")"
    expect_eq "$lang procs_request_reply wrote nothing on stderr" "" "$(cat "$WORK/procs-$lang.err")"
    expect_eq "procs/ lists only self afterwards (no inbox holds a message or a waiter)" \
        "self" "$(listing "$MNT/procs")"
    echo "# $lang procs_request_reply on a directory where no ipcfs is mounted"
    run_fg "procs-$lang-nomount" "${REQ[@]}" "$WORK" 1
    expect_failure "$lang procs_request_reply exits non-zero with a message" $? "procs-$lang-nomount"
done
expect_eq "root .status: inboxes 0 (the exited processes' inboxes are retired)" "0" "$(status_field "$MNT" inboxes)"
expect_eq "root .status: inbox_discarded 0 (every message was received)" "0" "$(status_field "$MNT" inbox_discarded)"

expect_eq "root .status: receivers_waiting 0 at the end" "0" "$(status_field "$MNT" receivers_waiting)"
expect_eq "root .status: messages 0 at the end" "0" "$(status_field "$MNT" messages)"
