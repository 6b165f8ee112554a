#!/usr/bin/env bash
# Smoke run of the issue-8 benchmark so it never rots: mounts ipcfs, runs
# `ipcfs_bench --quick MOUNT DAEMON_PID` (a few seconds, tiny counts) under a 120 s
# deadline, and checks that it exits 0, prints the table with every row, and leaves no
# objects, FUSE floor mount or daemon problems behind. The figures themselves are not
# checked: targets are judged by a full run (scripts/bench.sh), not by timed tests.
#
# Usage: bash tests/e2e/bench_smoke.sh PATH_TO_IPCFS
#   (the bench binary is found beside it: $(dirname PATH_TO_IPCFS)/../bench/ipcfs_bench)
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

bench_beside_ipcfs ipcfs_bench

mount_ipcfs bench
CLEANUP_CHECKS_DAEMON=1

floor_mounts() { grep -c 'ipcfs-bench-floor' /proc/self/mountinfo; }
floor_before=$(floor_mounts)

rc=0
timeout -k 5 120 "$BENCH" --quick "$MNT" "$DAEMON_PID" >"$WORK/bench.out" 2>"$WORK/bench.err" || rc=$?
if [[ $rc -eq 0 ]]; then
    ok "ipcfs_bench --quick exits 0 within 120 s"
else
    not_ok "ipcfs_bench --quick exits 0 within 120 s" "exit status $rc (124: timed out)" \
        "stderr tail:" "$(tail -n 20 "$WORK/bench.err")" "stdout tail:" "$(tail -n 20 "$WORK/bench.out")"
fi

header='^[|] figure +[|] +value [|] unit +[|] anchor +[|] anchor value [|] ratio [|] target +[|] met +[|]$'
if grep -Eq "$header" "$WORK/bench.out"; then
    ok "the table header is printed"
else
    not_ok "the table header is printed" "output:" "$(cat "$WORK/bench.out")"
fi

missing=()
for row in "POSIX mq one-way 64 B" "POSIX mq ping-pong 64 B" "pipe, 64 KiB writes" "socketpair, 64 KiB writes" \
    "/dev/shm memcpy, after first touch" "POSIX sem post+wait pairs" "FUSE floor pread" \
    "FUSE floor open+write+close" "Redis LPUSH+BRPOP" "Redis ping-pong" \
    "ipcfs 64 B msg, 1 per call, 1+1" "ipcfs 64 B msg, frames in 64 KiB calls" "ipcfs ping-pong, 2 mailboxes" \
    "ipcfs echo-style send" "ipcfs duplex pipe" "ipcfs shm/ memcpy, after first touch" \
    "ipcfs shm/ memcpy, incl. first touch" "ipcfs sem/ post+wait pairs" "ipcfs 64 B msg, 1 per call, 4+4 total" \
    "receivers blocked: daemon threads" "receivers blocked: ls of the mount" \
    "queued 64 B msg: daemon RSS growth" "queued 64 B msg: ls of the mailbox"; do
    grep -qF "| $row" "$WORK/bench.out" || grep -qF "$row" "$WORK/bench.out" || missing+=("$row")
done
if [[ ${#missing[@]} -eq 0 ]]; then ok "every figure has a row"; else not_ok "every figure has a row" "missing:" "${missing[@]}"; fi

# Figures that the bench measures on any working machine (Redis may be absent: n/a is fine there).
measured_ok=1
for row in "POSIX mq one-way 64 B" "pipe, 64 KiB writes" "FUSE floor pread" "ipcfs 64 B msg, 1 per call, 1+1" \
    "ipcfs ping-pong, 2 mailboxes" "ipcfs echo-style send"; do
    line=$(grep -F "| $row" "$WORK/bench.out" | head -n 1)
    value=$(awk -F'|' '{ gsub(/ /, "", $3); print $3 }' <<<"$line")
    if [[ -z $value || $value == n/a ]]; then measured_ok=0; echo "       no value for: $row" >&2; fi
done
if ((measured_ok)); then ok "kernel, FUSE floor and ipcfs message figures are measured"; else
    not_ok "kernel, FUSE floor and ipcfs message figures are measured" "stderr tail:" "$(tail -n 20 "$WORK/bench.err")"
fi

if grep -Eq '^targets: [0-9]+ met, [0-9]+ not met, [0-9]+ n/a$' "$WORK/bench.out"; then
    ok "the targets summary is printed"
else
    not_ok "the targets summary is printed" "output tail:" "$(tail -n 5 "$WORK/bench.out")"
fi

expect_eq "the bench leaves no FUSE floor mount behind" "$floor_before" "$(floor_mounts)"
expect_eq "the bench removes its mailboxes" "" "$(listing "$MNT/mailboxes")"
expect_eq "the bench removes its semaphores and segments" "" "$(listing "$MNT/sem")$(listing "$MNT/shm")"
check "the daemon still answers after the bench" test -n "$(status_field "$MNT" mailboxes)"
