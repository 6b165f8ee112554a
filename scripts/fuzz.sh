#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang in build-fuzz and runs each for a
# bounded time, starting from its seed corpus (tests/fuzz/corpus/TARGET, never written to:
# new inputs go to build-fuzz/corpus/TARGET). A crash, leak, undefined behaviour or failed
# check fails the run; the input is saved in build-fuzz/artifacts/ and printed in hex.
# Usage: fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default: 20 s, every target)
# The compiler: $IPCFS_FUZZ_CXX, else the newest clang++-N installed, N >= 19: libstdc++'s
# <expected> wants __cpp_concepts >= 202002L, which clang defines from 19 on (Debian 12's
# default clang, 14, cannot compile core/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_names fuzz_xattr fuzz_sem_writes fuzz_engine_ops)

cxx=${IPCFS_FUZZ_CXX:-}
if [ -z "$cxx" ]; then
  for v in $(compgen -c clang++- | sed -n 's/^clang++-\([0-9][0-9]*\)$/\1/p' | sort -rn | uniq); do
    if [ "$v" -ge 19 ]; then cxx=clang++-$v; break; fi
  done
fi
if [ -z "$cxx" ]; then
  echo "fuzz: no clang++-N (N >= 19) found: run scripts/install-deps.sh or set IPCFS_FUZZ_CXX" >&2
  exit 1
fi

cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER="$cxx" -DIPCFS_FUZZ=ON -DIPCFS_WERROR=ON \
  -DIPCFS_TESTS=OFF -DIPCFS_BENCH=OFF -DIPCFS_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"

# Readable stacks: the symbolizer that comes with this clang.
symbolizer=$(dirname "$(readlink -f "$(command -v "$cxx")")")/llvm-symbolizer
[ -x "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

rm -rf build-fuzz/artifacts && mkdir -p build-fuzz/artifacts
# One target per core at a time; each leaves its log and exit status in build-fuzz/.
fuzz() {
  local t=$1 rc=0
  mkdir -p "build-fuzz/corpus/$t"
  "build-fuzz/tests/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t-" \
    "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"build-fuzz/$t.log" 2>&1 || rc=$?
  echo "$rc" >"build-fuzz/$t.rc"
}
echo "fuzz: ${targets[*]}, ${seconds}s each"
for t in "${targets[@]}"; do
  rm -f "build-fuzz/$t.rc"
  fuzz "$t" &
  while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n || true; done
done
wait

status=0
for t in "${targets[@]}"; do
  if [ "$(cat "build-fuzz/$t.rc" 2>/dev/null || echo none)" != 0 ]; then
    cat "build-fuzz/$t.log" >&2
    for a in build-fuzz/artifacts/"$t"-*; do
      [ -f "$a" ] && echo "fuzz: $t FAILED on $a: $(od -An -v -tx1 "$a" | tr -d ' \n')" >&2
    done
    status=1
    continue
  fi
  echo "fuzz: $t: $(sed -n 's/^stat::number_of_executed_units: *//p' "build-fuzz/$t.log") runs," \
    "peak RSS $(sed -n 's/^stat::peak_rss_mb: *//p' "build-fuzz/$t.log") MB"
done
exit $status
