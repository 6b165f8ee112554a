# shellcheck shell=bash
# shellcheck disable=SC2016,SC2012  # eval'd conditions expand when evaluated; ls output is our own names
# Shared harness for the end-to-end scripts in tests/e2e/ (sourced, never run: CTest's
# tests/e2e/*.sh glob does not reach lib/).
#
#   source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"   # with "$@" still the script's
#
# Checks the single PATH_TO_IPCFS argument, and provides the TAP-like reporting
# (ok/not_ok/check/expect_eq/fatal, counted in $passed/$failed), polling helpers that
# wait on a condition against a deadline instead of sleeping, /proc and .status readers,
# mount_ipcfs to start the daemon on a fresh temporary mount point, and the EXIT trap
# that stops background processes ($BG_PIDS) and the daemon, lazily unmounts anything
# left mounted, removes the temporary directories and prints "<passed> passed, <failed>
# failed", exiting non-zero if any check failed.
#
# Set CLEANUP_CHECKS_DAEMON=1 (before the script exits) if stopping the daemon with
# SIGTERM is part of the test: cleanup then asserts "daemon exits 0 on SIGTERM" and
# "no mount left behind after the daemon exited". With the default 0 the script is
# expected to stop the daemon itself (and clear DAEMON_PID once reaped); cleanup only
# stops and reaps a daemon still left over, and reports a mount left behind.

if [[ $# -ne 1 ]]; then
    echo "usage: bash $0 PATH_TO_IPCFS" >&2
    exit 2
fi
IPCFS=$(realpath -- "$1")

passed=0
failed=0
MNT=""
WORK=""
DAEMON_PID=""
BG_PIDS=()
CLEANUP_CHECKS_DAEMON=0

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

# ---------------------------------------------------------------- cleanup ----
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${BG_PIDS[@]}"; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null; fi
        wait "$pid" 2>/dev/null
    done
    if [[ -n $DAEMON_PID ]]; then
        if alive "$DAEMON_PID"; then
            kill -TERM "$DAEMON_PID" 2>/dev/null
            if ! wait_until 10 eval '! alive "$DAEMON_PID"'; then
                not_ok "daemon exits within 10 s of SIGTERM" "sending SIGKILL to pid $DAEMON_PID"
                kill -KILL "$DAEMON_PID" 2>/dev/null
            fi
            if ((CLEANUP_CHECKS_DAEMON)); then
                wait "$DAEMON_PID"
                local st=$?
                if [[ $st -eq 0 ]]; then ok "daemon exits 0 on SIGTERM"; else
                    not_ok "daemon exits 0 on SIGTERM" "exit status $st" "log tail:" "$(tail -n 20 "$WORK/ipcfs.log" 2>/dev/null)"
                fi
            else
                wait "$DAEMON_PID" 2>/dev/null
            fi
        else
            wait "$DAEMON_PID" 2>/dev/null
        fi
    fi
    if [[ -n $MNT ]]; then
        if ((CLEANUP_CHECKS_DAEMON)); then
            if is_mounted "$MNT"; then
                not_ok "no mount left behind after the daemon exited" "lazy-unmounting $MNT"
                fusermount3 -u -z "$MNT" 2>/dev/null
            elif [[ -n $DAEMON_PID ]]; then
                ok "no mount left behind after the daemon exited"
            fi
        elif is_mounted "$MNT"; then
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

# ---------------------------------------------------------------- benches ----
bench_beside_ipcfs() {  # bench_beside_ipcfs NAME : sets BENCH to BUILD/bench/NAME; skips (exit 0) if benches are off
    local build
    build=$(dirname -- "$(dirname -- "$IPCFS")")
    BENCH=$build/bench/$1
    [[ -x $BENCH ]] && return 0
    if grep -q '^IPCFS_BENCH:BOOL=OFF' "$build/CMakeCache.txt" 2>/dev/null; then
        echo "skip - $1 not built (IPCFS_BENCH=OFF)"
        exit 0
    fi
    fatal "$1 is built beside ipcfs" "not found or not executable: $BENCH"
}

# ------------------------------------------------------------------ mount ----
mount_ipcfs() {  # mount_ipcfs NAME : mount ipcfs on a fresh /tmp/ipcfs-NAME-mnt.*; sets WORK, MNT, DAEMON_PID
    [[ -x $IPCFS ]] || fatal "ipcfs binary is executable" "not found or not executable: $IPCFS"
    WORK=$(mktemp -d -t "ipcfs-$1-work.XXXXXX")
    MNT=$(mktemp -d -t "ipcfs-$1-mnt.XXXXXX")
    "$IPCFS" -f -o auto_unmount "$MNT" >"$WORK/ipcfs.log" 2>&1 &
    DAEMON_PID=$!
    if ! wait_until 10 eval 'is_mounted "$MNT" || ! alive "$DAEMON_PID"' || ! is_mounted "$MNT"; then
        fatal "ipcfs mounts $MNT within 10 s" "daemon log:" "$(cat "$WORK/ipcfs.log")"
    fi
    ok "ipcfs mounts $MNT (daemon pid $DAEMON_PID)"
}
