#!/usr/bin/env bash
# Build (app/build.sh), run the whole test suite, then check that no container made
# by corral was left behind. Arguments go to ctest, e.g. `tests/run.sh -R engine`.
# Exit code: ctest's; 1 if ctest passed but the tests left containers behind (only the
# suite's own are counted and removed; see below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[corral-setup] %s\n' "$*" >&2; }

bash "${ROOT}/app/build.sh"

cd "${ROOT}"
# CTest splits a discovered test's name at ';': such a test would run nothing and pass.
for binary in build/tests/corral_*_tests; do
  if split=$("${binary}" --list-test-names-only | grep ';'); then
    log "ERROR: test names with ';' (CTest would run nothing for them): ${split}"
    exit 1
  fi
done
# The suite's own containers are those made during this run under the suite's runtime names
# (the fixtures' t-*/tn-* names with pid and counter, the crash trial's crash-<pid>-<round>,
# the soak's and the embedding example's)
# or the engine tests' label. Anyone else's (a user's sandboxes, a node's, another run's from
# before) is never counted, and never removed.
suite_runtimes='^(t|tn)-.*-[0-9]+-[0-9]+$|^crash-[0-9]+-[0-9]+$|^ci-soak$|^embed-example$'
before=" $(docker ps -aq --no-trunc | tr '\n' ' ') "

log "tests: ctest --preset default --output-on-failure -j1 $*"
rc=0
ctest --preset default --output-on-failure -j1 "$@" || rc=$?
log "tests: ctest exited with ${rc}"

leftovers=()
while read -r id runtime managed name; do
  [[ -n ${id} && ${before} != *" ${id} "* ]] || continue
  if [[ ${managed} == corral-test || ${runtime} =~ ${suite_runtimes} ]]; then
    leftovers+=("${id}")
    log "ERROR: left behind by the tests: ${name} (runtime '${runtime}', managed by ${managed})"
  fi
done < <(docker ps -a --no-trunc --filter label=corral.managed-by \
  --format '{{.ID}} {{.Label "corral.runtime"}} {{.Label "corral.managed-by"}} {{.Names}}')
if ((${#leftovers[@]} > 0)); then
  docker rm -f "${leftovers[@]}" >/dev/null || log "WARNING: could not remove all of them"
  log "tests: removed the ${#leftovers[@]} containers the tests left"
  ((rc != 0)) || rc=1
fi
exit "${rc}"
