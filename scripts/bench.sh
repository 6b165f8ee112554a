#!/usr/bin/env bash
# Runs the performance benchmark of issue 8: mounts a fresh ipcfs daemon from BUILD_DIR
# on a temporary mount point (auto_unmount), runs BUILD_DIR/bench/ipcfs_bench against it
# and prints its one table (kernel anchors, the FUSE floor, Redis and every ipcfs figure
# with its ratio and target). Stops the daemon and removes the mount point afterwards.
#
# Usage: scripts/bench.sh [--quick] [--durable] [BUILD_DIR]   (BUILD_DIR defaults to build)
#   --quick   smoke run of a few seconds with tiny counts (its figures mean nothing)
#   --durable the durable-mode benchmark of issue 9 instead: BUILD_DIR/bench/ipcfs_durable_bench
#             starts its own daemons (in memory and --state-dir) in a temporary directory on
#             /var/tmp (a disk, not tmpfs: set TMPDIR to measure another) and compares
#             durable send+receive with the in-memory mode and SQLite, and restart times
# The full run takes about a minute and a half; build first with scripts/build.sh BUILD_DIR
# (a Release build: scripts/build.sh BUILD_DIR -DCMAKE_BUILD_TYPE=Release).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
build=build
durable=0
for arg in "$@"; do
  case $arg in
    --quick) quick=(--quick) ;;
    --durable) durable=1 ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench.sh: unknown option $arg" >&2; exit 2 ;;
    *) build=$arg ;;
  esac
done

ipcfs=$build/fs/ipcfs
bench=$build/bench/ipcfs_bench
((durable)) && bench=$build/bench/ipcfs_durable_bench
for f in "$ipcfs" "$bench"; do
  if [[ ! -x $f ]]; then
    echo "bench.sh: $f not found: build first (scripts/build.sh $build)" >&2
    exit 1
  fi
done

is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

if ((durable)); then
  work=$(mktemp -d -p "${TMPDIR:-/var/tmp}" ipcfs-durable-bench.XXXXXX)
  cleanup_durable() {
    local m
    for m in "$work"/mnt-*; do
      if is_mounted "$m"; then fusermount3 -u -z "$m" 2>/dev/null || true; fi
    done
    rm -rf -- "$work"
  }
  trap cleanup_durable EXIT
  df -hT "$work" | tail -n 1 >&2
  "$bench" "${quick[@]}" "$(realpath "$ipcfs")" "$work"
  exit
fi
alive() {  # running and not a zombie
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

mnt=$(mktemp -d -t ipcfs-bench-mnt.XXXXXX)
log=$(mktemp -t ipcfs-bench-log.XXXXXX)
daemon=""
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if [[ -n $daemon ]]; then
    kill -TERM "$daemon" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do alive "$daemon" || break; sleep 0.05; done
    if alive "$daemon"; then
      echo "bench.sh: daemon $daemon ignored SIGTERM for 10 s: killing it" >&2
      kill -KILL "$daemon" 2>/dev/null || true
    fi
    wait "$daemon" 2>/dev/null || true
  fi
  if is_mounted "$mnt"; then fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; fi
  is_mounted "$mnt" || rmdir -- "$mnt" 2>/dev/null || true
  if ((rc != 0)) && [[ -s $log ]]; then
    echo "bench.sh: daemon log (tail):" >&2
    tail -n 20 "$log" >&2
  fi
  rm -f -- "$log"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ipcfs" -f -o auto_unmount --log-level warn "$mnt" >"$log" 2>&1 &
daemon=$!
for ((i = 0; i < 200; i++)); do
  is_mounted "$mnt" && break
  alive "$daemon" || break
  sleep 0.05
done
if ! is_mounted "$mnt"; then
  echo "bench.sh: ipcfs did not mount $mnt within 10 s" >&2
  exit 1
fi
echo "bench.sh: $ipcfs (pid $daemon) mounted on $mnt" >&2
"$bench" "${quick[@]}" "$mnt" "$daemon"
