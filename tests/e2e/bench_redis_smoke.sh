#!/usr/bin/env bash
# Smoke run of the issue-11 benchmark so it never rots: runs
# `scripts/bench-redis.sh BUILD_DIR --quick` (a redis-server of its own, two ipcfs daemons
# on it, ipcfs_redis_bench --quick: a few seconds) under a 120 s deadline, and checks that
# it exits 0, prints the table with every row measured and the targets line, and leaves no
# redis-server, daemon or mount behind. The figures themselves are not checked: targets are
# judged by a full run (scripts/bench-redis.sh BUILD_DIR), not by timed tests.
#
# Usage: bash tests/e2e/bench_redis_smoke.sh PATH_TO_IPCFS
#   (the bench binary is found beside it: $(dirname PATH_TO_IPCFS)/../bench/ipcfs_redis_bench)
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

bench_beside_ipcfs ipcfs_redis_bench
if ! command -v redis-server >/dev/null; then
    if [[ ${CI:-} == true ]]; then fatal "redis-server is installed" "scripts/install-deps.sh installs it"; fi
    echo "skip - redis-server not installed"
    exit 0
fi
build=$(dirname -- "$(dirname -- "$BENCH")")
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d -t ipcfs-bench-redis-smoke.XXXXXX)

bench_mounts() { grep -c 'ipcfs-bench-redis\.' /proc/self/mountinfo; }
mounts_before=$(bench_mounts)

rc=0
timeout -k 5 120 bash "$repo/scripts/bench-redis.sh" "$build" --quick >"$WORK/bench.out" 2>"$WORK/bench.err" || rc=$?
if [[ $rc -eq 0 ]]; then
    ok "bench-redis.sh --quick exits 0 within 120 s"
else
    not_ok "bench-redis.sh --quick exits 0 within 120 s" "exit status $rc (124: timed out)" \
        "stderr tail:" "$(tail -n 30 "$WORK/bench.err")" "stdout tail:" "$(tail -n 20 "$WORK/bench.out")"
fi

header='^[|] figure +[|] +value [|] unit +[|] anchor +[|] anchor value [|] ratio [|] target +[|] met +[|]$'
if grep -Eq "$header" "$WORK/bench.out"; then
    ok "the table header is printed"
else
    not_ok "the table header is printed" "output:" "$(cat "$WORK/bench.out")"
fi

rows=("Redis LPUSH+BRPOP 64 B" "Redis ping-pong 64 B" "ipcfs A->B 64 B, .send write+fsync / .receive"
    "ipcfs A->B 64 B, .send-lines / .receive-lines" "ipcfs A->B 64 B, frames in 64 KiB calls"
    "ipcfs ping-pong A<->B")
missing=()
unmeasured=()
for row in "${rows[@]}"; do
    line=$(grep -F "| $row" "$WORK/bench.out" | head -n 1)
    if [[ -z $line ]]; then missing+=("$row"); continue; fi
    value=$(awk -F'|' '{ gsub(/ /, "", $3); print $3 }' <<<"$line")
    [[ -z $value || $value == n/a ]] && unmeasured+=("$row")
done
if [[ ${#missing[@]} -eq 0 ]]; then ok "every figure has a row"; else not_ok "every figure has a row" "missing:" "${missing[@]}"; fi
if [[ ${#unmeasured[@]} -eq 0 ]]; then ok "every figure is measured"; else
    not_ok "every figure is measured" "n/a:" "${unmeasured[@]}" "notes:" "$(grep '^note:' "$WORK/bench.out")"
fi

if grep -Eq '^targets: [0-9]+ met, [0-9]+ not met, [0-9]+ n/a$' "$WORK/bench.out"; then
    ok "the targets summary is printed"
else
    not_ok "the targets summary is printed" "output tail:" "$(tail -n 5 "$WORK/bench.out")"
fi

# The script names every process it started ("... (pid N) ..."): none may outlive it.
started=$(grep -oE '\(pid [0-9]+\)' "$WORK/bench.err" | grep -oE '[0-9]+' | tr '\n' ' ')
expect_eq "the script reports its redis-server and both daemons" 3 "$(wc -w <<<"$started" | tr -d ' ')"
left=()
for pid in $started; do alive "$pid" && left+=("$pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"); done
if [[ ${#left[@]} -eq 0 ]]; then ok "no redis-server or daemon left running"; else
    not_ok "no redis-server or daemon left running" "${left[@]}"
fi
expect_eq "no mount left behind" "$mounts_before" "$(bench_mounts)"
