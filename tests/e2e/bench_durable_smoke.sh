#!/usr/bin/env bash
# Smoke run of the durable-mode benchmark (issue 9) so it never rots: runs
# `ipcfs_durable_bench --quick IPCFS WORKDIR` (seconds, tiny counts; it starts and stops
# its own daemons) under a 180 s deadline, and checks that it exits 0, prints every row
# with a value, and leaves no mount or daemon behind. The figures themselves are not
# checked: they are judged by a full run (scripts/bench.sh --durable).
#
# Usage: bash tests/e2e/bench_durable_smoke.sh PATH_TO_IPCFS
#   (the bench binary is found beside it: $(dirname PATH_TO_IPCFS)/../bench/ipcfs_durable_bench)
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

bench_beside_ipcfs ipcfs_durable_bench

WORK=$(mktemp -d -t "ipcfs-durable-bench.XXXXXX")
mounts_before=$(grep -c "$WORK" /proc/self/mountinfo)

rc=0
timeout -k 5 180 "$BENCH" --quick "$IPCFS" "$WORK" >"$WORK/bench.out" 2>"$WORK/bench.err" || rc=$?
if [[ $rc -eq 0 ]]; then
    ok "ipcfs_durable_bench --quick exits 0 within 180 s"
else
    not_ok "ipcfs_durable_bench --quick exits 0 within 180 s" "exit status $rc (124: timed out)" \
        "stderr tail:" "$(tail -n 20 "$WORK/bench.err")" "stdout tail:" "$(tail -n 20 "$WORK/bench.out")"
fi

missing=()
for row in "in-memory ipcfs, 64 B send+receive, 1 sender" "in-memory ipcfs, 64 B send+receive, 8 sender" \
    "SQLite WAL synchronous=FULL, INSERT + DELETE RETURNING, 1 + 1" "SQLite WAL synchronous=FULL, INSERT + DELETE RETURNING, 8 + 8" \
    "durable ipcfs (--state-dir), 64 B send+receive, 1 + 1" "durable ipcfs (--state-dir), 64 B send+receive, 8 + 8" \
    "after kill -9 (journal replay)" "clean stop with" "after a clean stop (snapshot)"; do
    line=$(grep -F -- "$row" "$WORK/bench.out" | head -n 1)
    value=$(awk -F'|' '{ gsub(/ /, "", $3); print $3 }' <<<"$line")
    if [[ -z $value || $value == n/a ]]; then missing+=("$row"); fi
done
if [[ ${#missing[@]} -eq 0 ]]; then ok "every figure has a row with a value"; else
    not_ok "every figure has a row with a value" "missing:" "${missing[@]}" "stderr tail:" "$(tail -n 20 "$WORK/bench.err")"
fi
expect_eq "the bench leaves no mount behind" "$mounts_before" "$(grep -c "$WORK" /proc/self/mountinfo)"
