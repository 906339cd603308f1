#!/usr/bin/env bash
# Set up, build, then run the main job: one real command in a hardened sandbox, end to end,
# on the embedded runtime (`corral run`). Arguments replace the default command:
#   bash app/quickstart.sh -- python3 -c 'print(1)'
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[corral-setup] %s\n' "$*" >&2; }

bash "${ROOT}/app/build.sh"

corral="${ROOT}/build/app/corral"
if [[ ! -x ${corral} ]]; then
  log "ERROR: ${corral} was not built"
  exit 1
fi
if [[ $# -gt 0 ]]; then
  [[ $1 == "--" ]] && shift
  log "quickstart: corral run -- $*"
  exec "${corral}" run -- "$@"
fi
log "quickstart: corral run -- sh -c '<self-report>'"
exec "${corral}" run --timeout 30s -- sh -c '
echo "hello from sandbox $(hostname): uid $(id -u), gid $(id -g)"
grep -E "^(CapEff|NoNewPrivs)" /proc/self/status
echo "network interfaces: $(ls /sys/class/net | tr "\n" " ")"
if touch /probe 2>/dev/null; then echo "root filesystem: WRITABLE"; else echo "root filesystem: read-only"; fi
echo "tmp: $(df -h /tmp | tail -1 | tr -s " " | cut -d" " -f2) tmpfs, writable: $(touch /tmp/x && echo yes)"'
