#!/usr/bin/env bash
# Every test: install dependencies, build with warnings as errors, run the unit, integration
# and end-to-end tests; then the same again in an AddressSanitizer + UBSan build and in a
# ThreadSanitizer build; last, the libFuzzer targets for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

bash scripts/build.sh build
(cd build && ctest --output-on-failure -j2)

bash scripts/build.sh build-asan -DIPCFS_SANITIZER=address -DCMAKE_BUILD_TYPE=Debug
# Leaks and UB abort the daemon with a non-zero exit, which the mount fixture reports.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -j2)

bash scripts/build.sh build-tsan -DIPCFS_SANITIZER=thread -DCMAKE_BUILD_TYPE=Debug
# A data race makes the daemon exit non-zero (and the mount fixture looks for the report).
export TSAN_OPTIONS=halt_on_error=0:exitcode=86:second_deadlock_stack=1
(cd build-tsan && ctest --output-on-failure -j2)

# libFuzzer targets of the engine's parsers and state machine (clang, build-fuzz): 20 s each.
bash scripts/fuzz.sh 20
