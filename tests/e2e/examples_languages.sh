#!/usr/bin/env bash
# End-to-end run of the C, C++ and Node.js examples against a real ipcfs mount.
#
#   bash tests/e2e/examples_languages.sh PATH_TO_IPCFS BUILD_DIR
#
# BUILD_DIR is the CMake build directory: the C and C++ examples are found there as
# examples/example_<lang>_<name> (built with IPCFS_EXAMPLES=ON, the default); the Node.js
# examples run with `node` from PATH. Mounts ipcfs on a fresh temporary directory and runs
# every example under `timeout`, asserting its output exactly: each language's producer and
# consumer, consumers over messages spanning several reads, every cross-language
# producer -> consumer pair (shell and Python included), each poll/epoll waiter, alone
# and racing the others for the same messages, and the C++ and Python anonymous-pipe
# examples (a duplex pipe in pipes/, unlinked, shared by a parent and its forked child). No sleeps are used for synchronisation: every
# wait polls a condition against a deadline. The daemon, any example still running, the
# mount and the temporary directories are cleaned up by an EXIT trap. The last line is
# "<passed> passed, <failed> failed"; the exit status is non-zero if any check failed.
set -uo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: bash $0 PATH_TO_IPCFS BUILD_DIR" >&2
    exit 2
fi
BUILD=$(realpath -- "$2")
set -- "$1"  # lib/common.sh takes exactly the ipcfs binary
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
EXAMPLES=$ROOT/examples
BIN=$BUILD/examples
PY=/usr/bin/python3
NODE=$(command -v node || command -v nodejs || true)
T=20  # seconds any one example may run
CLEANUP_CHECKS_DAEMON=1  # stopping the daemon with SIGTERM at the end is itself checked

# Example runners (run_bg, finish, run_fg, expect_exit0, expect_failure, expect_empty_mailbox).
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/examples.sh"
# The command words of each language's examples.
producer() {  # producer LANG : sets PROD to the producer's command (args MAILBOX N follow)
    case $1 in
        c) PROD=("$BIN/example_c_producer") ;;
        cpp) PROD=("$BIN/example_cpp_producer_consumer" produce) ;;
        node) PROD=("$NODE" "$EXAMPLES/node/producer.mjs") ;;
        python) PROD=("$PY" "$EXAMPLES/python/producer.py") ;;
        shell) PROD=(bash "$EXAMPLES/shell/producer.sh") ;;
    esac
}
consumer() {  # consumer LANG : sets CONS to the consumer's command (args MAILBOX N follow)
    case $1 in
        c) CONS=("$BIN/example_c_consumer") ;;
        cpp) CONS=("$BIN/example_cpp_producer_consumer" consume) ;;
        node) CONS=("$NODE" "$EXAMPLES/node/consumer.mjs") ;;
        python) CONS=("$PY" "$EXAMPLES/python/consumer.py") ;;
        shell) CONS=(bash "$EXAMPLES/shell/consumer.sh") ;;
    esac
}
waiter() {  # waiter LANG : sets WAIT to the waiter's command and WAIT_NAME to its announced name
    case $1 in
        c) WAIT=("$BIN/example_c_epoll_wait") WAIT_NAME=epoll_wait ;;
        cpp) WAIT=("$BIN/example_cpp_poll_wait") WAIT_NAME=poll_wait ;;
        node) WAIT=("$NODE" "$EXAMPLES/node/poll_wait.mjs") WAIT_NAME=poll_wait ;;
    esac
}

# ---------------------------------------------------------- prerequisites ----
for exe in example_c_producer example_c_consumer example_c_epoll_wait \
    example_cpp_producer_consumer example_cpp_poll_wait example_cpp_anonymous_pipe; do
    [[ -x $BIN/$exe ]] || fatal "example $exe is built" "not found or not executable: $BIN/$exe" \
        "(build with -DIPCFS_EXAMPLES=ON and pass the CMake build directory)"
done
[[ -n $NODE ]] || fatal "node is on PATH" "install Node.js (Debian: apt-get install nodejs)"
ok "examples built in $BIN; node is $NODE ($("$NODE" --version))"

# ------------------------------------------------------------------ mount ----
mount_ipcfs e2e-lang
MB=$MNT/mailboxes

# ------------------------------- each language: consumer waits, producer ----
for lang in c cpp node; do
    echo "# $lang consumer started first, then $lang producer"
    producer "$lang"
    consumer "$lang"
    box=$MB/$lang-jobs
    check "mkdir mailboxes/$lang-jobs" mkdir "$box"
    run_bg "$lang-consumer" "${CONS[@]}" "$box" 5
    cons=$LAST_PID
    check "$lang consumer blocks on the empty mailbox (.status receivers_waiting: 1)" \
        wait_until 10 status_is "$box" receivers_waiting 1
    run_fg "$lang-producer" "${PROD[@]}" "$box" 5
    expect_exit0 "$lang producer exits 0" $? "$lang-producer"
    finish "$cons"
    expect_exit0 "$lang consumer exits 0" $? "$lang-consumer"
    expect_eq "$lang consumer printed job 1..5 in order" "$(jobs_1_to 5)" "$(cat "$WORK/$lang-consumer.out")"
    expect_empty_mailbox "mailbox $lang-jobs is empty afterwards" "$box"
    expect_eq "$lang-jobs .status: received 5" "5" "$(status_field "$box" received)"
done

# ------------------------- each language: queued first, exactly N taken ----
for lang in c cpp node; do
    echo "# $lang producer first, then $lang consumers take exactly N each"
    producer "$lang"
    consumer "$lang"
    box=$MB/$lang-partial
    check "mkdir mailboxes/$lang-partial" mkdir "$box"
    run_fg "$lang-producer2" "${PROD[@]}" "$box" 5
    expect_exit0 "$lang producer exits 0" $? "$lang-producer2"
    expect_eq "ls lists the 5 queued messages" \
        "0000000001 0000000002 0000000003 0000000004 0000000005" "$(listing "$box")"
    run_fg "$lang-consumer2" "${CONS[@]}" "$box" 3
    expect_exit0 "$lang consumer exits 0" $? "$lang-consumer2"
    expect_eq "$lang consumer printed job 1..3 in order" "$(jobs_1_to 3)" "$(cat "$WORK/$lang-consumer2.out")"
    expect_eq "messages 4 and 5 are still queued (nothing taken past N)" \
        "0000000004 0000000005" "$(listing "$box")"
    expect_eq "$lang-partial .status: redelivered 0" "0" "$(status_field "$box" redelivered)"
    run_fg "$lang-consumer3" "${CONS[@]}" "$box" 2
    expect_exit0 "$lang consumer exits 0" $? "$lang-consumer3"
    expect_eq "a second $lang consumer printed job 4..5" "$(printf 'job 4\njob 5')" "$(cat "$WORK/$lang-consumer3.out")"
    expect_empty_mailbox "mailbox $lang-partial is empty afterwards" "$box"
done

# ------------------- each consumer: long, empty and unterminated messages ----
seq 1 60000 >"$WORK/big.txt"  # about 340 KiB: several 64 KiB reads for one message
for lang in c cpp node; do
    echo "# $lang consumer: a ~340 KiB message, an empty one, one without a newline"
    consumer "$lang"
    box=$MB/$lang-shapes
    check "mkdir mailboxes/$lang-shapes" mkdir "$box"
    cat "$WORK/big.txt" >"$box/.send"  # one open: one message, however many writes
    touch "$box/empty"                 # a new file never written: an empty message
    printf 'tail' >"$box/.send"
    expect_eq "3 messages queued" "3" "$(status_field "$box" messages)"
    run_fg "$lang-shapes" "${CONS[@]}" "$box" 3
    expect_exit0 "$lang consumer exits 0" $? "$lang-shapes"
    { cat "$WORK/big.txt"; echo; echo tail; } >"$WORK/$lang-shapes.expected"
    if cmp -s "$WORK/$lang-shapes.expected" "$WORK/$lang-shapes.out"; then
        ok "$lang consumer printed the long message whole, an empty line, then 'tail' + newline"
    else
        not_ok "$lang consumer printed the long message whole, an empty line, then 'tail' + newline" \
            "$(cmp "$WORK/$lang-shapes.expected" "$WORK/$lang-shapes.out" 2>&1)" \
            "sizes: expected $(wc -c <"$WORK/$lang-shapes.expected"), actual $(wc -c <"$WORK/$lang-shapes.out")"
    fi
    expect_empty_mailbox "mailbox $lang-shapes is empty afterwards" "$box"
done

# ---------------------------------------------- cross-language pairs ----
# Every producer -> consumer pair of different languages, except shell/Python among
# themselves (tests/e2e/examples.sh covers those). The consumer waits first.
for p in c cpp node python shell; do
    for c in c cpp node python shell; do
        [[ $p == "$c" ]] && continue
        [[ $p$c == pythonshell || $p$c == shellpython ]] && continue
        echo "# $p producer -> $c consumer"
        producer "$p"
        consumer "$c"
        box=$MB/x-$p-$c
        check "mkdir mailboxes/x-$p-$c" mkdir "$box"
        run_bg "x-$p-$c-consumer" "${CONS[@]}" "$box" 4
        cons=$LAST_PID
        check "$c consumer waits (.status receivers_waiting: 1)" \
            wait_until 10 status_is "$box" receivers_waiting 1
        run_fg "x-$p-$c-producer" "${PROD[@]}" "$box" 4
        expect_exit0 "$p producer exits 0" $? "x-$p-$c-producer"
        finish "$cons"
        expect_exit0 "$c consumer exits 0" $? "x-$p-$c-consumer"
        expect_eq "$c consumer printed the $p producer's job 1..4" "$(jobs_1_to 4)" \
            "$(cat "$WORK/x-$p-$c-consumer.out")"
        expect_empty_mailbox "mailbox x-$p-$c is empty afterwards" "$box"
    done
done

# ------------------------------------------------------------ waiters ----
for m in red green blue; do check "mkdir mailboxes/$m" mkdir "$MB/$m"; done
for lang in c cpp node; do
    waiter "$lang"
    echo "# $lang $WAIT_NAME: one wait over three mailboxes"
    name=$lang-wait
    echo "early" >"$MB/green/.send"
    run_bg "$name" "${WAIT[@]}" -n 13 "$MB/red" "$MB/green" "$MB/blue"
    pw=$LAST_PID
    check "$lang $WAIT_NAME registered all three mailboxes" \
        wait_until 10 file_has "$WORK/$name.err" "^$WAIT_NAME: waiting on red, green, blue$"
    check "$lang $WAIT_NAME reports the message queued before it started" \
        wait_until 5 line_count_is "$WORK/$name.out" 1
    expect_eq "$lang $WAIT_NAME's first line is 'green: early'" "green: early" "$(head -n 1 "$WORK/$name.out")"
    # One at a time: each must wake the waiting loop on its own.
    k=1
    for pair in red:r1 blue:b1 green:g1 blue:b2 red:r2 green:g2; do
        box=${pair%%:*} msg=${pair#*:}
        echo "$msg" >"$MB/$box/.send"
        k=$((k + 1))
        check "$lang $WAIT_NAME wakes for '$msg' sent to $box while it waits" \
            wait_until 5 line_count_is "$WORK/$name.out" "$k"
    done
    # A burst: several messages per mailbox queued at once.
    for box in red green blue; do
        echo "${box:0:1}3" >"$MB/$box/.send"
        echo "${box:0:1}4" >"$MB/$box/.send"
    done
    finish "$pw"
    expect_exit0 "$lang $WAIT_NAME exits 0 after 13 messages" $? "$name"
    expected=$(printf '%s\n' "green: early" "red: r1" "blue: b1" "green: g1" "blue: b2" "red: r2" "green: g2" \
        "red: r3" "red: r4" "green: g3" "green: g4" "blue: b3" "blue: b4" | sort)
    expect_eq "$lang $WAIT_NAME saw every message exactly once" "$expected" "$(sort "$WORK/$name.out")"
    expect_eq "$lang $WAIT_NAME printed the 7 one-at-a-time messages in sending order" \
        "$(printf '%s\n' "green: early" "red: r1" "blue: b1" "green: g1" "blue: b2" "red: r2" "green: g2")" \
        "$(head -n 7 "$WORK/$name.out")"
    expect_eq "$lang $WAIT_NAME: red's messages in order" "$(printf 'red: r%d\n' 1 2 3 4)" \
        "$(grep '^red: ' "$WORK/$name.out")"
    expect_eq "$lang $WAIT_NAME: green's messages in order" \
        "$(printf '%s\n' 'green: early' 'green: g1' 'green: g2' 'green: g3' 'green: g4')" \
        "$(grep '^green: ' "$WORK/$name.out")"
    expect_eq "$lang $WAIT_NAME: blue's messages in order" "$(printf 'blue: b%d\n' 1 2 3 4)" \
        "$(grep '^blue: ' "$WORK/$name.out")"
    for m in red green blue; do expect_empty_mailbox "mailbox $m is empty afterwards" "$MB/$m"; done
done

# ------------------------------------- waiters racing for the same messages ----
# The three waiters wait on the same two mailboxes, each for 6 of the 18 messages sent:
# all exit only if every message is taken, and none may be lost or seen twice (a waiter
# woken for a message another one took reads EAGAIN and waits again).
echo "# C epoll_wait, C++ poll_wait and Node poll_wait race for 18 messages"
check "mkdir mailboxes/race-a mailboxes/race-b" mkdir "$MB/race-a" "$MB/race-b"
race_langs=(c cpp node)
race_pids=()
for lang in "${race_langs[@]}"; do
    waiter "$lang"
    run_bg "race-$lang" "${WAIT[@]}" -n 6 "$MB/race-a" "$MB/race-b"
    race_pids+=("$LAST_PID")
    check "$lang $WAIT_NAME registered race-a and race-b" \
        wait_until 10 file_has "$WORK/race-$lang.err" "^$WAIT_NAME: waiting on race-a, race-b$"
done
for i in $(seq 1 9); do
    echo "a$i" >"$MB/race-a/.send"
    echo "b$i" >"$MB/race-b/.send"
done
for i in "${!race_langs[@]}"; do
    lang=${race_langs[$i]}
    finish "${race_pids[$i]}"
    expect_exit0 "$lang waiter exits 0 after its 6 messages" $? "race-$lang"
    expect_eq "$lang waiter printed 6 lines" "6" "$(wc -l <"$WORK/race-$lang.out")"
done
expected=$( (printf 'race-a: a%d\n' $(seq 1 9); printf 'race-b: b%d\n' $(seq 1 9)) | sort)
expect_eq "together the waiters saw each of the 18 messages exactly once" "$expected" \
    "$(cat "$WORK"/race-{c,cpp,node}.out | sort)"
expect_empty_mailbox "mailbox race-a is empty afterwards" "$MB/race-a"
expect_empty_mailbox "mailbox race-b is empty afterwards" "$MB/race-b"

expect_eq "root .status: receivers_waiting 0 at the end" "0" "$(status_field "$MNT" receivers_waiting)"
expect_eq "root .status: messages 0 at the end" "0" "$(status_field "$MNT" messages)"

# ------------------------------------------ anonymous pipes made in pipes/ ----
# Each example creates pipes/anon-LANG, opens both ends, unlinks the name and forks: the
# child produces "item 1".."item N", the parent prints them and "EOF after N items".
N_ITEMS=200
expected_items=$(printf 'item %d\n' $(seq 1 "$N_ITEMS"); echo "EOF after $N_ITEMS items")
item_bytes=$(printf 'item %d\n' $(seq 1 "$N_ITEMS") | wc -c)
bytes_before=$(status_field "$MNT" pipe_bytes)
for lang in cpp python; do
    echo "# $lang anonymous_pipe: parent and forked child over an unlinked duplex pipe"
    case $lang in
        cpp) ANON=("$BIN/example_cpp_anonymous_pipe") ;;
        python) ANON=("$PY" "$EXAMPLES/python/anonymous_pipe.py") ;;
    esac
    run_fg "anon-$lang" "${ANON[@]}" "$MNT/pipes/anon-$lang" "$N_ITEMS"
    expect_exit0 "$lang anonymous_pipe exits 0" $? "anon-$lang"
    expect_eq "$lang anonymous_pipe printed item 1..$N_ITEMS, then 'EOF after $N_ITEMS items'" \
        "$expected_items" "$(cat "$WORK/anon-$lang.out")"
    expect_eq "$lang anonymous_pipe wrote nothing on stderr" "" "$(cat "$WORK/anon-$lang.err")"
    expect_eq "pipes/ is empty afterwards (the name was unlinked)" "" "$(listing "$MNT/pipes")"
    echo "# $lang anonymous_pipe refuses a name that is taken (O_EXCL)"
    touch "$MNT/pipes/taken-$lang"
    run_fg "anon-$lang-taken" "${ANON[@]}" "$MNT/pipes/taken-$lang" 1
    expect_failure "$lang anonymous_pipe exits non-zero with a message" $? "anon-$lang-taken"
    expect_eq "$lang anonymous_pipe printed nothing on stdout" "" "$(cat "$WORK/anon-$lang-taken.out")"
    check "rm pipes/taken-$lang" rm "$MNT/pipes/taken-$lang"
done
expect_eq "root .status: pipe_bytes grew by the two runs' $((2 * item_bytes)) bytes" \
    "$((bytes_before + 2 * item_bytes))" "$(status_field "$MNT" pipe_bytes)"
expect_eq "root .status: pipes 0 at the end" "0" "$(status_field "$MNT" pipes)"
