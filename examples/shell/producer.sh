#!/usr/bin/env bash
# Send N numbered jobs ("job 1" ... "job N") to an ipcfs mailbox.
#
#   producer.sh MAILBOX_DIR N
#
# Every `echo ... > .send` is one open/write/close, so it is exactly one message.
set -euo pipefail

if [[ $# -ne 2 || ! $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 MAILBOX_DIR N" >&2
    exit 2
fi
mailbox=$1
n=$2

for ((i = 1; i <= n; i++)); do
    echo "job $i" > "$mailbox/.send"
done
