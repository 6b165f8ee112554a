#!/usr/bin/env bash
# Configures and builds ipcfs with warnings as errors. Usage: build.sh [BUILD_DIR [CMAKE_ARGS...]]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DIPCFS_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
