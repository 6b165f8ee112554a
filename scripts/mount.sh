#!/usr/bin/env bash
# The main job: install dependencies, build, and mount ipcfs. Usage: mount.sh [MOUNTPOINT]
# (default /tmp/ipc). The daemon goes to the background once the mount is ready.
set -euo pipefail
cd "$(dirname "$0")/.."
mnt=${1:-/tmp/ipc}
bash scripts/install-deps.sh
bash scripts/build.sh build
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
  echo "mount.sh: $mnt is already a mount point; unmount it first (fusermount3 -u $mnt)" >&2
  exit 1
fi
./build/fs/ipcfs "$mnt"
echo "ipcfs mounted on $mnt (unmount: fusermount3 -u $mnt)"
