#!/usr/bin/env bash
# Helpers for the scripts that run examples/ (examples.sh, examples_languages.sh): start an
# example under `timeout` with its output in $WORK, and check how it ended. Source after
# lib/common.sh, with T (seconds any one example may run) set.

run_bg() {  # run_bg NAME COMMAND... : start under timeout, output in $WORK/NAME.{out,err}
    local name=$1
    shift
    timeout "$T" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    LAST_PID=$!
    BG_PIDS+=("$LAST_PID")
}
finish() {  # finish PID : wait for a background example, return its exit status
    wait "$1"
}
run_fg() {  # run_fg NAME COMMAND... : run under timeout, output in $WORK/NAME.{out,err}
    local name=$1
    shift
    timeout "$T" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
}
expect_exit0() {  # expect_exit0 DESCRIPTION STATUS NAME
    if [[ $2 -eq 0 ]]; then
        ok "$1"
    else
        local why="exit status $2"
        [[ $2 -eq 124 ]] && why="timed out after ${T}s (exit 124)"
        not_ok "$1" "$why" "stderr:" "$(cat "$WORK/$3.err" 2>/dev/null)"
    fi
}
expect_failure() {  # expect_failure DESCRIPTION STATUS NAME : non-zero, not timed out, a message on stderr
    if [[ $2 -ne 0 && $2 -ne 124 && -s $WORK/$3.err ]]; then
        ok "$1"
    else
        not_ok "$1" "exit status $2 (expected non-zero, not 124: timed out)" "stderr:" "$(cat "$WORK/$3.err" 2>/dev/null)"
    fi
}
expect_empty_mailbox() {  # expect_empty_mailbox DESCRIPTION MAILBOX_DIR
    local l s
    l=$(listing "$2")
    s=$(status_field "$2" messages)
    if [[ -z $l && $s == 0 ]]; then ok "$1"; else not_ok "$1" "ls: '$l'" ".status messages: '$s'"; fi
}
