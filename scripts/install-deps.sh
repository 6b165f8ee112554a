#!/usr/bin/env bash
# Installs everything ipcfs needs to build, run and test, from Debian 12 packages.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (sudo)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run (an unattended upgrade, a second checkout) instead of failing.
apt=(apt-get -o DPkg::Lock::Timeout=300)
"${apt[@]}" update -qq
"${apt[@]}" install -y -qq --no-install-recommends \
  build-essential cmake pkg-config \
  libfuse3-dev fuse3 \
  libspdlog-dev libfmt-dev \
  libgtest-dev googletest \
  python3 python3-pytest python3-pytest-timeout nodejs \
  attr procps psmisc util-linux coreutils bash stress-ng \
  file mc tmux libglib2.0-bin \
  pcmanfm xvfb x11-utils imagemagick \
  redis-server redis-tools libhiredis-dev iproute2 \
  clang-22 libclang-rt-22-dev llvm-22 \
  libsqlite3-dev >/dev/null
