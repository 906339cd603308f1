#!/usr/bin/env bash
# Build everything (app/build.sh), then run the demo job program. Arguments go to
# the demo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[corral-setup] %s\n' "$*" >&2; }

bash "${ROOT}/app/build.sh"

demo="${ROOT}/build/app/corral_demo"
if [[ ! -x ${demo} ]]; then
  log "ERROR: ${demo} was not built (is app/corral_demo.cpp there?)"
  exit 1
fi
log "quickstart: running ${demo} $*"
exec "${demo}" "$@"
