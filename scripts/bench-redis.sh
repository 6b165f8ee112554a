#!/usr/bin/env bash
# Runs the Redis-backend benchmark of issue 11: starts a redis-server (no persistence) on a
# free loopback port in a temporary directory, mounts two ipcfs daemons from BUILD_DIR on it
# (--backend redis://127.0.0.1:PORT, temporary mount points, auto_unmount) and runs
# BUILD_DIR/bench/ipcfs_redis_bench MOUNT_A MOUNT_B PORT: raw hiredis LPUSH/BRPOP and
# ping-pong against ipcfs messages sent through one mount and received through the other,
# in one table with ratios and targets. Stops both daemons and the server (by the pids it
# started), unmounts and removes its temporary files whatever happens.
#
# Usage: scripts/bench-redis.sh [BUILD_DIR] [--quick]   (BUILD_DIR defaults to build)
#   --quick   smoke run of a few seconds (its figures mean nothing)
# The full run takes about a minute; build first with
# scripts/build.sh BUILD_DIR -DCMAKE_BUILD_TYPE=Release. Needs redis-server on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
build=build
for arg in "$@"; do
  case $arg in
    --quick) quick=(--quick) ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench-redis.sh: unknown option $arg" >&2; exit 2 ;;
    *) build=$arg ;;
  esac
done

ipcfs=$build/fs/ipcfs
bench=$build/bench/ipcfs_redis_bench
for f in "$ipcfs" "$bench"; do
  if [[ ! -x $f ]]; then
    echo "bench-redis.sh: $f not found: build first (scripts/build.sh $build -DCMAKE_BUILD_TYPE=Release)" >&2
    exit 1
  fi
done
if ! command -v redis-server >/dev/null; then
  echo "bench-redis.sh: redis-server not found (install redis-server)" >&2
  exit 1
fi

is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
alive() {  # running and not a zombie
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}
stop() {  # stop PID NAME: SIGTERM, SIGKILL after 10 s, reap
  local i
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do alive "$1" || break; sleep 0.05; done
  if alive "$1"; then
    echo "bench-redis.sh: $2 (pid $1) ignored SIGTERM for 10 s: killing it" >&2
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d -t ipcfs-bench-redis.XXXXXX)
mkdir "$work/redis" "$work/a" "$work/b"
redis=""
daemons=()
cleanup() {
  local rc=$? pid m
  trap - EXIT INT TERM
  for pid in "${daemons[@]}"; do stop "$pid" ipcfs; done
  for m in "$work/a" "$work/b"; do
    if is_mounted "$m"; then fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
  done
  [[ -n $redis ]] && stop "$redis" redis-server
  if ((rc != 0)); then
    for f in "$work"/*.log; do
      [[ -s $f ]] || continue
      echo "bench-redis.sh: $(basename "$f") (tail):" >&2
      tail -n 20 "$f" >&2
    done
  fi
  if is_mounted "$work/a" || is_mounted "$work/b"; then
    echo "bench-redis.sh: a mount is still there: leaving $work" >&2
  else
    rm -rf -- "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The server: a free port (tried again if another process takes it first).
port=""
for attempt in 1 2 3; do
  port=$(free_port)
  (cd "$work/redis" && exec redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --dir "$work/redis" >"$work/redis.log" 2>&1) &
  redis=$!
  for ((i = 0; i < 200; i++)); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    alive "$redis" || break
    sleep 0.05
  done
  if alive "$redis" && redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
  stop "$redis" redis-server
  redis=""
done
if [[ -z $redis ]]; then
  echo "bench-redis.sh: redis-server did not start" >&2
  exit 1
fi
echo "bench-redis.sh: redis-server (pid $redis) on 127.0.0.1:$port" >&2

for side in a b; do
  "$ipcfs" -f -o auto_unmount --log-level warn --backend "redis://127.0.0.1:$port" "$work/$side" \
    >"$work/ipcfs-$side.log" 2>&1 &
  pid=$!
  daemons+=("$pid")
  for ((i = 0; i < 200; i++)); do
    is_mounted "$work/$side" && break
    alive "$pid" || break
    sleep 0.05
  done
  if ! is_mounted "$work/$side"; then
    echo "bench-redis.sh: ipcfs did not mount $work/$side within 10 s" >&2
    exit 1
  fi
  echo "bench-redis.sh: $ipcfs (pid $pid) mounted on $work/$side" >&2
done

"$bench" "${quick[@]}" "$work/a" "$work/b" "$port"
