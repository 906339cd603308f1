#!/usr/bin/env bash
# Runs a sanitizer-built program (tests/sanitizers/run.sh PROGRAM ARGS...) with corral's
# sanitizer options and the suppression files beside this script. CMake makes it the test
# executables' launcher in the asan and tsan trees (CROSSCOMPILING_EMULATOR), so it runs for
# Catch2's test discovery at build time and for every test ctest starts; child processes (the
# node tests' `corral node`) inherit the options. A variable already set wins, so one run
# can change them, e.g. ASAN_OPTIONS=detect_leaks=0 tests/sanitizers/run.sh build-asan/...
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ASan: stop at the first report; leaks count. Use-after-return detection is off: GCC's fake
# stacks make every frame a heap allocation, which the actor-heavy suites cannot afford.
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:suppressions=${here}/asan.supp}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=${here}/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=${here}/ubsan.supp}"
# TSan: report every race, do not stop; the exit code (66) still fails the test.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1:suppressions=${here}/tsan.supp}"
exec "$@"
