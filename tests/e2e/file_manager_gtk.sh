#!/usr/bin/env bash
# shellcheck disable=SC2016  # eval'd conditions expand when evaluated
# A GTK file manager (PCManFM) opens a populated mailbox of a real ipcfs mount under Xvfb,
# and a screenshot of it is kept as an artifact under the build tree.
#
#   bash tests/e2e/file_manager_gtk.sh PATH_TO_IPCFS
#
# The build directory is the one the binary was built in (PATH_TO_IPCFS is
# BUILD/fs/ipcfs); the screenshot lands in BUILD/artifacts/file-manager.png.
#
# Mounts ipcfs (-o auto_unmount), fills a mailbox with messages (one sent through .send, a
# text note, a binary blob, a CSV), starts its own Xvfb with -displayfd (the server picks
# a free display and reports it: no display-number race), waits for the server to answer
# xdpyinfo, opens the mailbox in PCManFM (list view, so sizes and times show), waits for
# its window (xwininfo -root -tree) and until the file list shows rows and two captures in
# a row are equal, takes the screenshot (import -window root) and checks: the window is
# titled with the mailbox's name, the file is a PNG of the screen's size, the window and
# its file list are not uniform, and browsing took, discarded or redelivered no message.
# Every wait polls a condition against a deadline. The EXIT trap (lib/common.sh) stops the
# processes this script started (by pid), the daemon and any mount left behind.
#
# Tools missing (pcmanfm, Xvfb, xdpyinfo/xwininfo, import/identify): exit 77 (skipped),
# except under CI=true, where that is a failure. Packages: pcmanfm xvfb x11-utils imagemagick.
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

BUILD_DIR=$(dirname -- "$(dirname -- "$IPCFS")")
ARTIFACT=$BUILD_DIR/artifacts/file-manager.png
SCREEN_W=1000 SCREEN_H=600
WIN_W=900 WIN_H=500

# ------------------------------------------------------------------ tools ----
missing=()
for tool in pcmanfm:pcmanfm Xvfb:xvfb xdpyinfo:x11-utils xwininfo:x11-utils import:imagemagick identify:imagemagick; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool%%:*} (package ${tool#*:})")
done
if ((${#missing[@]})); then
    [[ ${CI:-} == true ]] && fatal "the file-manager tools are installed (CI=true)" "missing:" "${missing[@]}"
    echo "skip - not installed: ${missing[*]}"
    exit 77
fi

# ---------------------------------------------------------------- helpers ----
stop_pid() {  # stop_pid PID : SIGTERM, then SIGKILL after 10 s; reaps it and drops it from BG_PIDS
    local pid=$1 p kept=()
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        wait_until 10 eval '! alive "$pid"' || kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    for p in "${BG_PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    BG_PIDS=("${kept[@]}")
}
display_reported() {  # Xvfb wrote "N\n" to its -displayfd
    local s
    s=$(cat "$WORK/xvfb.display" 2>/dev/null) || return 1
    [[ $s =~ ^[0-9]+$ && -z $(tail -c 1 "$WORK/xvfb.display") ]]
}
x_answers() { xdpyinfo >/dev/null 2>&1; }
fm_window() {  # the id of a top-level window titled "$1" that belongs to pcmanfm, or fail
    xwininfo -root -tree 2>/dev/null |
        awk -v t="\"$1\": (\"pcmanfm\"" 'index($0, t) { print $1; found = 1; exit } END { exit !found }'
}
viewable() { xwininfo -id "$1" 2>/dev/null | grep -q 'Map State: IsViewable'; }
colours() { identify -format '%k' "$1" 2>/dev/null; }  # distinct colours; FILE[WxH+X+Y] crops
shows_rows() { [[ $(colours "$1[$ROWS_BAND]") =~ ^[0-9]+$ ]] && (($(colours "$1[$ROWS_BAND]") >= 8)); }
drawn() {  # a capture of the screen shows the file list's rows and equals the previous one
    import -window root "$WORK/shot.png" 2>/dev/null || return 1
    local sig prev=$last_sig
    sig=$(identify -format '%#' "$WORK/shot.png" 2>/dev/null) || return 1
    last_sig=$sig
    [[ -n $sig && $sig == "$prev" ]] && shows_rows "$WORK/shot.png"
}
queue_state() {  # what browsing must not change: the mailbox's counters and listing, the root's discards
    grep -E '^(messages|bytes|received|redelivered):' "$BOX/.status"
    grep -E '^discarded:' "$MNT/.status"
    ls -- "$BOX"
}

# ------------------------------------------------------------------ mount ----
mount_ipcfs fm
CLEANUP_CHECKS_DAEMON=1
rm -f -- "$ARTIFACT"

BOX=$MNT/mailboxes/inbox
mkdir "$BOX" "$MNT/mailboxes/outbox" "$MNT/mailboxes/jobs"
echo "hello from .send" > "$BOX/.send"
printf 'Meeting at 10:00\nRoom 4\n' > "$BOX/note.txt"
head -c 3000 /dev/urandom > "$BOX/blob.bin"
printf 'id,value\n1,alpha\n2,beta\n3,gamma\n' > "$BOX/report.csv"
echo "queued job" > "$MNT/mailboxes/jobs/.send"
expect_eq "the mailbox holds 4 messages" 4 "$(status_field "$BOX" messages)"
before=$(queue_state)

# ------------------------------------------------------------------- Xvfb ----
# -displayfd: the server takes the first free display itself and writes its number once it
# accepts connections; no lock-file guessing as with xvfb-run -a. -noreset: by default an X
# server resets itself when its last client leaves, and refuses connections meanwhile; the
# probe (xdpyinfo) is such a last client, and PCManFM, started right after it, once found
# the display closed ("Cannot open display").
Xvfb -displayfd 3 -noreset -screen 0 "${SCREEN_W}x${SCREEN_H}x24" -nolisten tcp \
    3>"$WORK/xvfb.display" >"$WORK/xvfb.log" 2>&1 &
XVFB_PID=$!
BG_PIDS+=("$XVFB_PID")
if ! wait_until 30 eval 'display_reported || ! alive "$XVFB_PID"' || ! display_reported; then
    fatal "Xvfb reports its display within 30 s" "Xvfb log:" "$(cat "$WORK/xvfb.log")"
fi
DISPLAY=:$(<"$WORK/xvfb.display")
export DISPLAY
ok "Xvfb (pid $XVFB_PID) runs on display $DISPLAY"
export XAUTHORITY=$WORK/no-xauthority  # the server has no cookie; never read the user's
if wait_until 30 x_answers; then ok "display $DISPLAY answers xdpyinfo"; else
    fatal "display $DISPLAY answers xdpyinfo within 30 s" "Xvfb log:" "$(cat "$WORK/xvfb.log")"
fi

# --------------------------------------------------------------- PCManFM ----
# A private home and runtime dir: its own settings (list view, window size, no blinking
# cursor so the picture settles), its own single-instance socket, no session bus (nothing
# is autolaunched that would outlive the test), local GIO only (no gvfs daemons).
FM_HOME=$WORK/home
mkdir -p "$FM_HOME/.config/pcmanfm/default" "$FM_HOME/runtime"
chmod 700 "$FM_HOME/runtime"
cat > "$FM_HOME/.config/pcmanfm/default/pcmanfm.conf" <<EOF
[ui]
win_width=$WIN_W
win_height=$WIN_H
view_mode=list
show_hidden=0
sort=name;ascending;
EOF
echo 'gtk-cursor-blink = 0' > "$FM_HOME/.gtkrc-2.0"
HOME=$FM_HOME XDG_CONFIG_HOME=$FM_HOME/.config XDG_CACHE_HOME=$FM_HOME/.cache \
XDG_DATA_HOME=$FM_HOME/.local/share XDG_RUNTIME_DIR=$FM_HOME/runtime \
DBUS_SESSION_BUS_ADDRESS=unix:path=$FM_HOME/no-session-bus \
GIO_USE_VFS=local GIO_USE_VOLUME_MONITOR=unix GSETTINGS_BACKEND=memory NO_AT_BRIDGE=1 \
    pcmanfm "$BOX" >"$WORK/pcmanfm.log" 2>&1 &
FM_PID=$!
BG_PIDS+=("$FM_PID")

# Its window: a top-level window of class pcmanfm titled with the folder's name.
if wait_until 60 eval 'fm_window inbox >/dev/null || ! alive "$FM_PID"' && WIN=$(fm_window inbox); then
    ok "PCManFM opens a window titled \"inbox\" (the mailbox folder) within 60 s"
else
    fatal "PCManFM opens a window titled \"inbox\" (the mailbox folder) within 60 s" \
        "pcmanfm alive: $(alive "$FM_PID" && echo yes || echo no)" "pcmanfm log:" "$(cat "$WORK/pcmanfm.log")" \
        "windows:" "$(xwininfo -root -tree 2>&1 | grep -v '(has no name)')"
fi
if wait_until 30 viewable "$WIN"; then ok "the window is mapped"; else
    not_ok "the window is mapped within 30 s" "$(xwininfo -id "$WIN" 2>&1)"
fi
read -r win_x win_y win_w win_h < <(xwininfo -id "$WIN" |
    awk '/Absolute upper-left X:/ { x = $NF } /Absolute upper-left Y:/ { y = $NF }
         /^ *Width:/ { w = $NF } /^ *Height:/ { h = $NF } END { print x, y, w, h }')
expect_eq "the window has the configured size" "${WIN_W}x${WIN_H}" "${win_w}x${win_h}"

# ------------------------------------------------------------- screenshot ----
# Where the list view draws its first rows (in the window: right of the side pane, below
# the toolbar and the column headers, left of the description column): text and icons
# there once the folder is listed, one flat colour while the list is empty.
ROWS_BAND=$((win_w * 2 / 5))x$((win_h * 3 / 20))+$((win_x + win_w / 5))+$((win_y + win_h / 4))
last_sig=
if wait_until 60 drawn; then
    ok "the window shows the mailbox's rows, and two captures in a row are equal, within 60 s"
else
    not_ok "the window shows the mailbox's rows, and two captures in a row are equal, within 60 s" \
        "colours in the rows band ($ROWS_BAND): $(colours "$WORK/shot.png[$ROWS_BAND]")" "keeping the last capture"
fi
mkdir -p -- "$(dirname -- "$ARTIFACT")"
if [[ -s $WORK/shot.png ]] && cp -- "$WORK/shot.png" "$ARTIFACT"; then
    ok "the screenshot is saved as $ARTIFACT"
else
    fatal "the screenshot is saved as $ARTIFACT" "no capture in $WORK/shot.png"
fi
expect_eq "the screenshot starts with the PNG signature" "89504e470d0a1a0a" \
    "$(head -c 8 -- "$ARTIFACT" | od -An -tx1 | tr -d ' \n')"
expect_eq "the screenshot is a PNG of the whole screen" "PNG ${SCREEN_W}x${SCREEN_H}" \
    "$(identify -format '%m %wx%h' "$ARTIFACT" 2>&1)"
check "the file list in the screenshot is not uniform (rows are drawn)" shows_rows "$ARTIFACT"
n=$(colours "${ARTIFACT}[${win_w}x${win_h}+${win_x}+${win_y}]")
if [[ $n =~ ^[0-9]+$ ]] && ((n >= 16)); then ok "the window area is not uniform ($n colours)"; else
    not_ok "the window area is not uniform (at least 16 colours)" "identify: $n"
fi

# ------------------------------------------------------------------ queue ----
# Browsing peeks at most: nothing received, discarded or redelivered, also once the file
# manager has closed everything it opened.
expect_eq "the queue is unchanged while PCManFM shows the mailbox" "$before" "$(queue_state)"
stop_pid "$FM_PID"
check "PCManFM is gone" eval '! alive "$FM_PID"'
expect_eq "the queue is unchanged after PCManFM exits" "$before" "$(queue_state)"
expect_eq "the mailbox still holds 4 messages" 4 "$(status_field "$BOX" messages)"
stop_pid "$XVFB_PID"
