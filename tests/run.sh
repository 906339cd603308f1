#!/usr/bin/env bash
# CI's test run (.ci/run calls it), in four stages, each on by default:
#   1. main:  build everything (app/build.sh --target all), clang-tidy on the sources changed since .ci/tidy-base
#             (tests/tidy_check.sh), run the whole suite (ctest --preset default), then check
#             that the tests left no container behind;
#   2. asan:  build the asan tree (GCC AddressSanitizer + UndefinedBehaviorSanitizer) and run
#             the unit, scale (fault injection, fake engine) and node suites in it;
#   3. tsan:  build the tsan tree's unit tests (GCC ThreadSanitizer) and run them;
#   4. fuzz:  tests/fuzz.sh: every libFuzzer target for a fixed budget under ASan + UBSan,
#             with a memory limit (a crash, hang, leak or oversized allocation fails the run).
# Arguments go to the main stage's ctest, e.g. `tests/run.sh -R engine`.
# Environment: CORRAL_CI_MAIN, CORRAL_CI_ASAN, CORRAL_CI_TSAN, CORRAL_CI_FUZZ = 0|1 (default 1:
# all run in CI; 0 skips one), CORRAL_CI_FUZZ_SECONDS (budget per fuzz target, default 15).
# Each part prints its minutes at the end (setup, each build, each suite).
# Exit code: 0 when every stage that ran passed; otherwise the main stage's ctest code, or 1
# (containers left behind, a test name CTest would split, or a sanitizer or fuzz stage failed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[corral-setup] %s\n' "$*" >&2; }

run_main=${CORRAL_CI_MAIN:-1}
run_asan=${CORRAL_CI_ASAN:-1}
run_tsan=${CORRAL_CI_TSAN:-1}
run_fuzz=${CORRAL_CI_FUZZ:-1}
fuzz_seconds=${CORRAL_CI_FUZZ_SECONDS:-15}

export CCACHE_DIR="${CCACHE_DIR:-/var/cache/corral-ccache}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-${ROOT}}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

rc=0
results=()
minutes() { awk -v s="$1" 'BEGIN { printf "%.1f min", s / 60 }'; }
record() { # record STAGE START RC
  local verdict=passed
  (($3 == 0)) || verdict="FAILED (exit $3)"
  results+=("$(printf '%-42s %-18s in %s' "$1" "${verdict}" "$(minutes $((SECONDS - $2)))")")
}

# Packages, the engine and the sandbox image, for every stage (idempotent, quick when ready).
t0=${SECONDS}
bash "${ROOT}/app/setup.sh"
record "setup: packages, engine, sandbox image" "${t0}" 0
cd "${ROOT}"

# The suite's own containers are those made during this run under the suite's runtime names
# (the fixtures' t-*/tn-* names with pid and counter, the crash trial's crash-<pid>-<round>,
# the soak's and the embedding example's) or the engine tests' label. Anyone else's (a user's
# sandboxes, a node's, another run's from before) is never counted, and never removed.
suite_runtimes='^(t|tn)-.*-[0-9]+-[0-9]+$|^crash-[0-9]+-[0-9]+$|^ci-soak$|^embed-example$'
before=" $(docker ps -aq --no-trunc | tr '\n' ' ') "
check_leftovers() {
  local leftovers=() id runtime managed name
  while read -r id runtime managed name; do
    [[ -n ${id} && ${before} != *" ${id} "* ]] || continue
    if [[ ${managed} == corral-test || ${runtime} =~ ${suite_runtimes} ]]; then
      leftovers+=("${id}")
      log "ERROR: left behind by the tests: ${name} (runtime '${runtime}', managed by ${managed})"
    fi
  done < <(docker ps -a --no-trunc --filter label=corral.managed-by \
    --format '{{.ID}} {{.Label "corral.runtime"}} {{.Label "corral.managed-by"}} {{.Names}}')
  ((${#leftovers[@]} > 0)) || return 0
  docker rm -f "${leftovers[@]}" >/dev/null || log "WARNING: could not remove all of them"
  log "tests: removed the ${#leftovers[@]} containers the tests left"
  return 1
}

# CTest splits a discovered test's name at ';': such a test would run nothing and pass.
check_test_names() {
  local binary split
  for binary in "$1"/tests/corral_*_tests; do
    if split=$("${binary}" --list-test-names-only | grep ';'); then
      log "ERROR: test names with ';' (CTest would run nothing for them): ${split}"
      return 1
    fi
  done
}

# -- 1. the main suite ----------------------------------------------------------------------
if [[ ${run_main} == 1 ]]; then
  t0=${SECONDS}
  bash "${ROOT}/app/build.sh" --target all
  record "main: build (app/build.sh --target all)" "${t0}" 0
  # clang-tidy on the sources changed since .ci/tidy-base: a finding fails the run (after the
  # suite, which still runs).
  t0=${SECONDS}
  tidy_rc=0
  bash "${ROOT}/tests/tidy_check.sh" || tidy_rc=$?
  if ((tidy_rc == 2)); then
    results+=("main: clang-tidy SKIPPED (the base commit is not in this clone)")
    tidy_rc=0
  else
    record "main: clang-tidy on the changed sources" "${t0}" "${tidy_rc}"
  fi
  t0=${SECONDS}
  check_test_names build || exit 1
  log "tests: ctest --preset default --output-on-failure -j1 $*"
  ctest --preset default --output-on-failure -j1 "$@" || rc=$?
  log "tests: ctest exited with ${rc}"
  if ! check_leftovers; then
    ((rc != 0)) || rc=1
  fi
  record "main: the whole suite (ctest)" "${t0}" "${rc}"
  ((tidy_rc == 0)) || { ((rc != 0)) || rc=1; }
else
  results+=("main: skipped (CORRAL_CI_MAIN=0)")
fi

# -- 2. sanitizers ---------------------------------------------------------------------------
if [[ ${run_asan} == 1 ]]; then
  t0=${SECONDS}
  stage_rc=0
  log "asan: building the asan tree (unit, scale and node suites and the corral they start)"
  if [[ ! -f build-asan/build.ninja ]]; then
    cmake --preset asan >/dev/null || stage_rc=$?
  fi
  ((stage_rc != 0)) || cmake --build --preset asan \
    --target corral_unit_tests corral_scale_tests corral_node_tests corral || stage_rc=$?
  record "asan: build" "${t0}" "${stage_rc}"
  t0=${SECONDS}
  if ((stage_rc == 0)); then
    # Not the 10,000-sandbox run: its check is memory per sandbox, which ASan's redzones and
    # quarantine make meaningless (it runs in the main stage); its code paths are the scale
    # suite's others'.
    log "asan: ctest --preset asan -L '^(unit|scale|node)\$' (options: tests/sanitizers/run.sh)"
    ctest --preset asan --output-on-failure -j1 -L '^(unit|scale|node)$' \
      -E '10,000 sandboxes' || stage_rc=$?
  fi
  check_leftovers || { ((stage_rc != 0)) || stage_rc=1; }
  record "asan: unit, scale and node suites" "${t0}" "${stage_rc}"
  ((stage_rc == 0)) || { ((rc != 0)) || rc=1; }
else
  results+=("asan: skipped (CORRAL_CI_ASAN=0)")
fi

# -- 3. ThreadSanitizer ---------------------------------------------------------------------
# The unit suite: the HTTP client's I/O threads and pool, the egress proxy's thread, the
# agent protocol, the runtime lock. Debian's CAF is not instrumented, so TSan cannot see the
# order CAF's queues give a message from one actor to the next: the scale and node suites (all
# actors) gave thousands of such reports (a spawn's arguments written by the supervisor's
# thread, read by the new actor's), none in our code's own threads; they stay out of this
# stage. tests/sanitizers/tsan.supp keeps CAF's own allocations out of TSan's view.
if [[ ${run_tsan} == 1 ]]; then
  t0=${SECONDS}
  stage_rc=0
  log "tsan: building the tsan tree's unit tests"
  if [[ ! -f build-tsan/build.ninja ]]; then
    cmake --preset tsan >/dev/null || stage_rc=$?
  fi
  ((stage_rc != 0)) || cmake --build --preset tsan --target corral_unit_tests || stage_rc=$?
  record "tsan: build" "${t0}" "${stage_rc}"
  t0=${SECONDS}
  if ((stage_rc == 0)); then
    log "tsan: ctest --preset tsan -L '^unit\$'"
    ctest --preset tsan --output-on-failure -j1 -L '^unit$' || stage_rc=$?
  fi
  record "tsan: unit suite" "${t0}" "${stage_rc}"
  ((stage_rc == 0)) || { ((rc != 0)) || rc=1; }
else
  results+=("tsan: skipped (CORRAL_CI_TSAN=0)")
fi

# -- 4. fuzzing ------------------------------------------------------------------------------
if [[ ${run_fuzz} == 1 ]]; then
  t0=${SECONDS}
  stage_rc=0
  bash "${ROOT}/tests/fuzz.sh" "${fuzz_seconds}" || stage_rc=$?
  record "fuzz: every target for ${fuzz_seconds} s" "${t0}" "${stage_rc}"
  ((stage_rc == 0)) || { ((rc != 0)) || rc=1; }
else
  results+=("fuzz: skipped (CORRAL_CI_FUZZ=0)")
fi

log "stages:"
for line in "${results[@]}"; do log "  ${line}"; done
if ((rc == 0)); then
  log "ALL STAGES PASSED"
else
  log "TESTS FAILED (exit ${rc}); see the stages above"
fi
exit "${rc}"
