#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (the `fuzz` preset: clang, ASan + UBSan) and runs
# each for a fixed budget. Every target first replays its committed seeds and reproducers
# (tests/fuzz/corpus/<target>/), then mutates; what it learns goes to build-fuzz/corpus/<target>/
# (kept between local runs, never committed).
#
#   tests/fuzz.sh                 every target, 20 s each
#   tests/fuzz.sh 60 json policy  these targets, 60 s each
#
# Environment: CORRAL_FUZZ_SECONDS (budget per target, default 20; the first argument wins),
# CORRAL_FUZZ_RSS_MB (memory limit, default 1024), CORRAL_FUZZ_MALLOC_MB (largest single
# allocation, default 256).
# A crash, a hang (over 5 s for one input), a leak, an allocation over the limit or an RSS over
# the limit fails the run; the input is saved as tests/fuzz/crashes/<target>-<kind>-<sha1>.
# After fixing the cause, move it to tests/fuzz/corpus/<target>/ as a regression seed.
# Exit code: 0 when every target ran its budget clean, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[corral-fuzz] %s\n' "$*" >&2; }

seconds=${CORRAL_FUZZ_SECONDS:-20}
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
rss_mb=${CORRAL_FUZZ_RSS_MB:-1024}
malloc_mb=${CORRAL_FUZZ_MALLOC_MB:-256}
all_targets=(http_response engine_replies stream_demux json_lines json cli_values policy agent_protocol
  egress)
targets=("$@")
((${#targets[@]} > 0)) || targets=("${all_targets[@]}")

export CCACHE_DIR="${CCACHE_DIR:-/var/cache/corral-ccache}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-${ROOT}}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
cd "${ROOT}"

start=${SECONDS}
if [[ ! -f build-fuzz/build.ninja ]]; then
  log "build: configuring (cmake --preset fuzz)"
  cmake --preset fuzz >/dev/null
fi
log "build: cmake --build --preset fuzz --target ${targets[*]/#/fuzz_}"
cmake --build --preset fuzz --target "${targets[@]/#/fuzz_}"
log "build: done in $((SECONDS - start)) s"

# Debian's CAF (linked by the policy target) is not instrumented: the same suppressions as the
# asan suite. libFuzzer sets the rest of ASan's options itself.
sanitizers="${ROOT}/tests/sanitizers"
export ASAN_OPTIONS="${ASAN_OPTIONS:-suppressions=${sanitizers}/asan.supp}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=${sanitizers}/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=${sanitizers}/ubsan.supp}"

mkdir -p tests/fuzz/crashes
failed=()
summary=()
for t in "${targets[@]}"; do
  exe="build-fuzz/tests/fuzz/fuzz_${t}"
  seeds="tests/fuzz/corpus/${t}"
  work="build-fuzz/corpus/${t}"
  logfile="build-fuzz/fuzz-${t}.log"
  [[ -x ${exe} ]] || { log "ERROR: ${exe} was not built"; failed+=("${t}"); continue; }
  mkdir -p "${work}" "${seeds}"
  log "${t}: ${seconds} s (seeds ${seeds}, log ${logfile})"
  rc=0
  # The outer timeout only guards against libFuzzer itself wedging.
  timeout --kill-after=10 $((seconds + 120)) "${exe}" \
    -max_total_time="${seconds}" -timeout=5 -rss_limit_mb="${rss_mb}" -malloc_limit_mb="${malloc_mb}" \
    -print_final_stats=1 -artifact_prefix="tests/fuzz/crashes/${t}-" \
    "${work}" "${seeds}" >"${logfile}" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${logfile}" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "${logfile}" | tail -1 | cut -d' ' -f2 || true)
  if ((rc != 0)); then
    failed+=("${t}")
    log "${t}: FAILED (exit ${rc}); the end of ${logfile}:"
    tail -n 40 "${logfile}" >&2
    summary+=("$(printf '%-15s FAILED (exit %d), see %s' "${t}" "${rc}" "${logfile}")")
  else
    summary+=("$(printf '%-15s ok   %8s inputs, coverage %s edges' "${t}" "${runs:-?}" "${cov:-?}")")
  fi
done

log "summary (${seconds} s per target, $((SECONDS - start)) s in all):"
for line in "${summary[@]}"; do log "  ${line}"; done
if ((${#failed[@]} > 0)); then
  log "FUZZING FAILED: ${failed[*]}; crashing inputs in tests/fuzz/crashes/:"
  ls -1 tests/fuzz/crashes/ >&2 || true
  exit 1
fi
log "FUZZING PASSED: ${#targets[@]} targets, no crash, hang, leak or oversized allocation"
