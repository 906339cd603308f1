#!/usr/bin/env bash
# Build (app/build.sh), run the whole test suite, then check that no container made
# by corral was left behind. Arguments go to ctest, e.g. `tests/run.sh -R engine`.
# Exit code: ctest's; 1 if ctest passed but containers were left behind.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[corral-setup] %s\n' "$*" >&2; }

bash "${ROOT}/app/build.sh"

cd "${ROOT}"
log "tests: ctest --preset default --output-on-failure -j1 $*"
rc=0
ctest --preset default --output-on-failure -j1 "$@" || rc=$?
log "tests: ctest exited with ${rc}"

leftovers=$(docker ps -aq --filter label=corral.managed-by)
if [[ -n ${leftovers} ]]; then
  log "ERROR: tests left containers behind (label corral.managed-by):"
  docker ps -a --filter label=corral.managed-by \
    --format 'table {{.ID}}\t{{.Names}}\t{{.Status}}\t{{.Label "corral.managed-by"}}' >&2
  # shellcheck disable=SC2086 # one id per word
  docker rm -f ${leftovers} >/dev/null || log "WARNING: could not remove all of them"
  log "tests: removed leftover containers"
  ((rc != 0)) || rc=1
fi
exit "${rc}"
