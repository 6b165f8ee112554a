#!/usr/bin/env bash
# Request/reply between a parent and N workers through their inboxes in procs/.
#
#   procs_request_reply.sh MOUNT [N]        (N workers, default 3)
#
# Every live process has an inbox at MOUNT/procs/PID: `echo ... > procs/PID/.send` sends it
# one message, `cat procs/PID/.receive` takes one (waiting while there is none), and
# `cat procs/PID/from/Q` takes only the next message sent by Q (or Q's descendants).
#
# The parent starts N workers as background subshells, sends worker K the job
# "sum 1..10K", and each worker takes its job from its own inbox, computes the sum and
# replies "PID SUM" to the parent's inbox. The replies arrive in any order; the parent
# reads procs/PARENT/from/WORKER for each worker, so each reply is matched to its worker.
# It prints "worker K: sum 1..N = SUM" for each and exits 0 if every reply is right.
#
# Two pids to get right in a shell:
# - In a subshell `$$` is still the parent's pid: a worker's own pid is `$BASHPID` (and `$!`
#   in the parent).
# - procs/self is the inbox of the process that opens the path: in `cat procs/self/.receive`
#   that is cat's own (empty) inbox, not the worker's. So the workers name their pid.
#
# Every wait has a deadline (IPCFS_EXAMPLE_TIMEOUT seconds, default 10): a read that gets no
# message in time fails with a message instead of hanging. Sends do not wait: an inbox has
# no capacity limit unless someone sets one.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || ! ${2:-3} =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 MOUNT [N]" >&2
    exit 2
fi
procs=$1/procs
n=${2:-3}
T=${IPCFS_EXAMPLE_TIMEOUT:-10}
parent=$BASHPID  # the same as $$ here, at the script's top level
die() { echo "procs_request_reply: $*" >&2; exit 1; }
[[ -d $procs ]] || die "$procs: not a directory (is ipcfs mounted on $1?)"

worker() {  # runs in a background subshell: its pid is $BASHPID
    local me=$BASHPID job top i sum=0
    job=$(timeout "$T" cat "$procs/$me/.receive") || die "worker $me: no job within ${T}s"
    [[ $job =~ ^sum\ 1\.\.([0-9]+)$ ]] || die "worker $me: bad job '$job'"
    top=${BASH_REMATCH[1]}
    for ((i = 1; i <= top; i++)); do sum=$((sum + i)); done
    echo "$me $sum" > "$procs/$parent/.send"  # the reply: one message to the parent
}

workers=()
stop_workers() {  # on any exit: workers still running are ours to stop
    local w
    for w in "${workers[@]}"; do kill "$w" 2>/dev/null || true; done
}
trap stop_workers EXIT

for ((k = 1; k <= n; k++)); do
    worker &
    workers+=("$!")
done

for ((k = 1; k <= n; k++)); do  # one job to each worker's inbox
    echo "sum 1..$((10 * k))" > "$procs/${workers[k - 1]}/.send"
done

for ((k = 1; k <= n; k++)); do  # one reply from each worker, whatever the arrival order
    w=${workers[k - 1]}
    top=$((10 * k))
    reply=$(timeout "$T" cat "$procs/$parent/from/$w") || die "no reply from worker $k (pid $w) within ${T}s"
    [[ $reply == "$w $((top * (top + 1) / 2))" ]] || die "worker $k (pid $w): expected '$w $((top * (top + 1) / 2))', got '$reply'"
    echo "worker $k: sum 1..$top = ${reply#* }"
done

for ((k = 1; k <= n; k++)); do
    wait "${workers[k - 1]}" || die "worker $k exited with status $?"
done
workers=()
left=$(ls -A "$procs/$parent") || die "cannot list the parent's inbox"
[[ -z $left ]] || die "the parent's inbox still holds: $left"
echo "$n replies, each matched to its worker"
