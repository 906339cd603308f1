#!/usr/bin/env bash
# Set the machine up (app/setup.sh), configure once, build. Without arguments it builds the
# product the main job needs (`corral` and the in-sandbox `corral-agent`), not the test kit;
# arguments go to `cmake --build`: `app/build.sh --target all` builds everything (tests/run.sh
# does), `app/build.sh --target corral_demo` one program, `app/build.sh -- -v` shows commands.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[corral-setup] %s\n' "$*" >&2; }

bash "${ROOT}/app/setup.sh"

export CCACHE_DIR="${CCACHE_DIR:-/var/cache/corral-ccache}"
mkdir -p "${CCACHE_DIR}"
# Paths below the checkout hash as relative ones: a fresh clone elsewhere (CI, a worktree)
# reuses the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-${ROOT}}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

cd "${ROOT}"
if [[ ! -f build/build.ninja ]]; then
  log "build: configuring (cmake --preset default)"
  cmake --preset default
fi
args=("$@")
((${#args[@]} > 0)) || args=(--target corral corral-agent)
log "build: cmake --build --preset default ${args[*]} (CCACHE_DIR=${CCACHE_DIR})"
cmake --build --preset default "${args[@]}"
log "build: done"
