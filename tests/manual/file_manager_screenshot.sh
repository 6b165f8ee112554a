#!/usr/bin/env bash
# Manual / optional check: a GTK file manager (PCManFM, else Thunar) opens a mailbox on a
# live ipcfs mount under Xvfb, and a screenshot of it is saved as a PNG.
#
#   tests/manual/file_manager_screenshot.sh OUT.png [IPCFS_BIN]
#
# Installs nothing. Needs: pcmanfm or thunar, xvfb-run (xvfb), xwininfo (x11-utils), and
# `import` (imagemagick) or xwd (x11-apps) + convert. Missing tools: exit 77 (skipped).
# IPCFS_BIN defaults to $IPCFS_BIN, then build/fs/ipcfs. It mounts ipcfs on a temporary
# directory, fills a mailbox with messages (one sent through .send, a text note, a binary
# blob, a CSV), opens the mailbox in the file manager (detailed list view, so sizes and
# times show), waits with deadlines until the window is there and its contents have stopped
# changing, takes the screenshot, checks that no message was taken, and cleans up: it ends
# only the processes it started and leaves no mount behind.
# Not run by CTest (it lives outside tests/e2e on purpose).
set -euo pipefail

WINDOW_DEADLINE_S=30   # the file manager's window to appear
SETTLE_DEADLINE_S=30   # its contents to stop changing
EXIT_DEADLINE_S=10     # a process asked to exit

if [ "${1:-}" = "--inside-xvfb" ]; then
  # ---------------------------------------------------- runs under xvfb-run (see below)
  shift
  out=$1 dir=$2 fm=$3 work=$4
  "$fm" "$dir" >"$work/fm.log" 2>&1 &
  fm_pid=$!
  # shellcheck disable=SC2317  # called from the EXIT trap
  stop_fm() {
    if kill -0 "$fm_pid" 2>/dev/null; then
      kill "$fm_pid" 2>/dev/null || true
      for _ in $(seq $((EXIT_DEADLINE_S * 20))); do
        kill -0 "$fm_pid" 2>/dev/null || break
        sleep 0.05
      done
      kill -9 "$fm_pid" 2>/dev/null || true
    fi
    wait "$fm_pid" 2>/dev/null || true
  }
  trap stop_fm EXIT
  # The window: a top-level window whose name is the folder's (PCManFM: "inbox", Thunar:
  # "inbox - Thunar"). Polling, with a deadline.
  base=$(basename "$dir")
  deadline=$((SECONDS + WINDOW_DEADLINE_S))
  until xwininfo -root -tree 2>/dev/null | grep -q "\"$base"; do
    if ! kill -0 "$fm_pid" 2>/dev/null; then
      echo "file manager exited early:" >&2; cat "$work/fm.log" >&2; exit 1
    fi
    [ $SECONDS -lt $deadline ] || { echo "no window for $base within ${WINDOW_DEADLINE_S}s" >&2; exit 1; }
    sleep 0.1
  done
  # Settled: two consecutive captures are identical (the folder is loaded and drawn).
  shoot() {
    if command -v import >/dev/null; then
      import -window root "$1"
    else
      xwd -root -silent | convert xwd:- "$1"
    fi
  }
  deadline=$((SECONDS + SETTLE_DEADLINE_S))
  shoot "$work/a.png"
  while :; do
    sleep 0.5
    shoot "$work/b.png"
    if cmp -s <(convert "$work/a.png" rgba:-) <(convert "$work/b.png" rgba:-); then break; fi
    mv "$work/b.png" "$work/a.png"
    [ $SECONDS -lt $deadline ] || { echo "window never settled; keeping the last capture" >&2; break; }
  done
  cp "$work/b.png" "$out"
  exit 0
fi

# -------------------------------------------------------------------- outside Xvfb
[ $# -ge 1 ] || { echo "usage: $0 OUT.png [IPCFS_BIN]" >&2; exit 2; }
out=$(realpath -m "$1")
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${2:-${IPCFS_BIN:-$repo/build/fs/ipcfs}}

skip() { echo "skipped: $*" >&2; exit 77; }
[ -x "$bin" ] || skip "no ipcfs binary at $bin"
fm=
for candidate in pcmanfm thunar; do
  if command -v "$candidate" >/dev/null; then fm=$candidate; break; fi
done
[ -n "$fm" ] || skip "neither pcmanfm nor thunar is installed"
command -v xvfb-run >/dev/null || skip "xvfb-run is not installed (package xvfb)"
command -v xwininfo >/dev/null || skip "xwininfo is not installed (package x11-utils)"
command -v import >/dev/null || { command -v xwd >/dev/null && command -v convert >/dev/null; } ||
  skip "neither import (imagemagick) nor xwd + convert is installed"
command -v convert >/dev/null || skip "convert is not installed (package imagemagick)"

work=$(mktemp -d /tmp/ipcfs-fm.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt" "$work/home" "$work/runtime"
chmod 700 "$work/runtime"
daemon_pid=

mounted() { awk -v m="$mnt" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq $((EXIT_DEADLINE_S * 20))); do
      kill -0 "$daemon_pid" 2>/dev/null || break
      sleep 0.05
    done
  fi
  if mounted; then fusermount3 -u -z "$mnt" 2>/dev/null || true; fi
  if [ -n "$daemon_pid" ]; then
    kill -9 "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if mounted; then
    echo "warning: $mnt is still mounted" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

"$bin" -f -o auto_unmount --log-level warn "$mnt" >"$work/ipcfs.log" 2>&1 &
daemon_pid=$!
deadline=$((SECONDS + 10))
until mounted; do
  kill -0 "$daemon_pid" 2>/dev/null || { echo "ipcfs exited:" >&2; cat "$work/ipcfs.log" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "ipcfs did not mount within 10s" >&2; exit 1; }
  sleep 0.05
done

box=$mnt/mailboxes/inbox
mkdir "$box" "$mnt/mailboxes/outbox" "$mnt/mailboxes/jobs"
echo "hello from .send" > "$box/.send"
printf 'Meeting at 10:00\nRoom 4\n' > "$box/note.txt"
head -c 3000 /dev/urandom > "$box/blob.bin"
printf 'id,value\n1,alpha\n2,beta\n3,gamma\n' > "$box/report.csv"
echo "queued job" > "$mnt/mailboxes/jobs/.send"
before=$(grep -E '^(messages|received|redelivered):' "$box/.status")

# PCManFM: detailed list view so that sizes and modification times show.
mkdir -p "$work/home/.config/pcmanfm/default"
cat > "$work/home/.config/pcmanfm/default/pcmanfm.conf" <<'EOF'
[ui]
win_width=900
win_height=500
view_mode=list
show_hidden=0
sort=name;ascending;
EOF

HOME=$work/home XDG_CONFIG_HOME=$work/home/.config XDG_CACHE_HOME=$work/home/.cache \
XDG_DATA_HOME=$work/home/.local/share XDG_RUNTIME_DIR=$work/runtime \
GIO_USE_VFS=local GIO_USE_VOLUME_MONITOR=unix NO_AT_BRIDGE=1 \
  timeout --kill-after=5 $((WINDOW_DEADLINE_S + SETTLE_DEADLINE_S + 30)) \
  xvfb-run -a -s "-screen 0 1000x600x24" "$0" --inside-xvfb "$out" "$box" "$fm" "$work"

after=$(grep -E '^(messages|received|redelivered):' "$box/.status")
if [ "$before" != "$after" ]; then
  echo "the file manager changed the queue:" >&2
  echo "before: $before" >&2
  echo "after:  $after" >&2
  exit 1
fi
echo "screenshot of $fm on $box: $out"
echo "queue unchanged: $(echo "$after" | tr '\n' ' ')"
