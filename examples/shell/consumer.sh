#!/usr/bin/env bash
# Receive N messages from an ipcfs mailbox and print them, one per line.
#
#   consumer.sh MAILBOX_DIR N
#
# `cat .receive` takes exactly one message (the oldest), blocking while the
# mailbox is empty; Ctrl-C ends a blocked cat at once.
set -euo pipefail

if [[ $# -ne 2 || ! $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 MAILBOX_DIR N" >&2
    exit 2
fi
mailbox=$1
n=$2

for ((i = 1; i <= n; i++)); do
    cat "$mailbox/.receive"
done
