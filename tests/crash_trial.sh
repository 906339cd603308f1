#!/usr/bin/env bash
# Crash trial: kill -9 a `corral node` at a random moment of a real-engine load, restart it
# under the same name, and check what the crash left:
#   - every container of the node's runtime is adopted (listed by `corral ls`) or removed
#     within a bounded wait (unadopted otherwise);
#   - no process runs in a sandbox that no command owns (orphans: anything but docker-init
#     and the keep-alive, `docker top`);
#   - the keys created with state before the crash still hold it (lost state otherwise);
#   - a new sandbox works;
#   - after a SIGTERM stop (this start has no --keep-sandboxes), no container of the
#     runtime is left (leaked);
#   - every error a client printed is one of corral's error codes (untyped otherwise), and
#     no client call hangs once the node is gone.
# Load while the node dies: `corral-stress --node` plus CLI loops (create/rm, run, execs
# of long commands in the kept sandboxes).
#
# Usage: tests/crash_trial.sh [--rounds N] [--keys N] [--seed S] [--corral PATH] [--stress PATH]
#        [--keep-logs]  (--stress: corral-stress, default beside --corral)
# Exit: 0 when every round is clean; 1 on any leak, orphan, lost state, untyped error, hang
# or unadopted container; 2 when the trial itself could not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIAL_TAG=crash-trial
# shellcheck source=tests/trial_lib.sh
source "${ROOT}/tests/trial_lib.sh"

ROUNDS=${CRASH_ROUNDS:-3}
KEYS=3
SEED=${CRASH_SEED:-$(($(date +%s) % 32768))}
CORRAL=${CORRAL:-${ROOT}/build/app/corral}
STRESS=${STRESS:-}  # corral-stress; default: beside --corral
ADOPT_WAIT=75  # s: every container adopted or removed by then (one left in `created` is spared 60 s)
ORPHAN_WAIT=10 # s: a stray process still there after this is an orphan
HANG_LIMIT=15  # s: a client call still running this long after the node died hangs

trial_options "--rounds=ROUNDS --keys=KEYS --seed=SEED --corral=CORRAL --stress=STRESS" "$@"
[[ ${ROUNDS} =~ ^[1-9][0-9]*$ && ${KEYS} =~ ^[1-9][0-9]*$ ]] || tdie "--rounds and --keys must be positive"
[[ -x ${CORRAL} ]] || tdie "${CORRAL} is not executable (build the corral target)"
STRESS=${STRESS:-$(dirname "${CORRAL}")/corral-stress}
[[ -x ${STRESS} ]] || tdie "${STRESS} is not executable (build the corral-stress target)"
docker info >/dev/null 2>&1 || tdie "no Docker engine answers"
load_error_codes

WORK=$(mktemp -d /tmp/corral-crash-trial.XXXXXX)
# Nodes and clients of the trial share their own TLS material (made by the first node), never
# root's default directory on this machine.
export CORRAL_TLS_DIR="${WORK}/tls"
trial_exit_trap trial_cleanup_containers

RANDOM=${SEED}
tlog "${ROUNDS} rounds, ${KEYS} kept keys per round, seed ${SEED} (--seed ${SEED} repeats the kill moments)"

T_LEAKED=0 T_ORPHANS=0 T_UNTYPED=0 T_TYPED=0 T_LOST=0 T_HUNG=0 T_UNADOPTED=0 T_ADOPTED=0
T_REMOVED=0 T_BROKEN=0
START=${SECONDS}

for ((round = 1; round <= ROUNDS; round++)); do
  name="crash-$$-${round}"
  TRIAL_RUNTIMES+=("${name}")
  R=${WORK}/r${round}
  mkdir -p "${R}"
  HUNG=0
  kill_after_ms=$((1000 + RANDOM % 4001))

  # 1. A node that keeps its sandboxes, and keys with state.
  start_node "${name}" "${R}/node1" --keep-sandboxes
  for ((k = 0; k < KEYS; k++)); do
    cli create "keep${k}" >/dev/null 2>>"${R}/setup.err" || tdie "round ${round}: create keep${k} failed: $(cat "${R}/setup.err")"
    cli exec "keep${k}" -- sh -c "echo v-${name}-${k} > /tmp/state" 2>>"${R}/setup.err" ||
      tdie "round ${round}: writing the state of keep${k} failed: $(cat "${R}/setup.err")"
  done

  # 2. Load: stress over its own keys (k0..k3) and CLI loops; then kill -9 at a random moment.
  WORK_SAVED=${WORK}
  WORK=${R}
  "${STRESS}" --node "${NODE_ADDR}" --duration 120s --keys 4 --concurrency 4 \
    --max-errors 1000000 </dev/null >"${R}/stress.out" 2>"${R}/stress.err" &
  stress_pid=$!
  TRIAL_PIDS+=("${stress_pid}")
  start_loop long exec keep0 -- sh -c 'sleep 60; echo done'
  start_loop timeout exec --timeout 500ms "keep$((1 % KEYS))" -- sleep 30
  start_loop short exec "keep$((2 % KEYS))" -- sh -c 'echo x >> /tmp/log'
  start_loop run run -- sh -c 'sleep 0.3; echo ok'
  start_loop create create "tmp${round}"
  start_loop rm rm "tmp${round}"
  sleep "$(printf '%d.%03d' $((kill_after_ms / 1000)) $((kill_after_ms % 1000)))"
  kill -KILL "${NODE_PID}"
  wait "${NODE_PID}" 2>/dev/null || true
  killed_at=${SECONDS}
  # Clients must end by themselves (node_unavailable), not hang.
  stop_loops "${HANG_LIMIT}"
  kill_tree "${stress_pid}"
  wait "${stress_pid}" 2>/dev/null || true
  WORK=${WORK_SAVED}
  read -r typed untyped < <(count_errors "${R}"/*.err)
  show_untyped
  before=$(runtime_containers "${name}" | wc -l)

  # 3. Restart under the same name (without --keep-sandboxes: the stop below releases all).
  start_node "${name}" "${R}/node2"

  # 4. Every container adopted (its id in `corral ls`) or removed, within ADOPT_WAIT.
  deadline=$((SECONDS + ADOPT_WAIT))
  while :; do
    adopted_ids=$(cli ls 2>>"${R}/check.err" | awk 'NR > 1 {print $3}' || true)
    unadopted=()
    adopted=0
    while read -r id state; do
      [[ -n ${id} ]] || continue
      if grep -qx "${id:0:12}" <<<"${adopted_ids}"; then
        adopted=$((adopted + 1))
      else
        unadopted+=("${id:0:12}(${state})")
      fi
    done < <(runtime_containers "${name}" '{{.ID}} {{.State}}')
    ((${#unadopted[@]} > 0 && SECONDS < deadline)) || break
    sleep 0.5
  done
  removed=$((before - adopted - ${#unadopted[@]}))
  ((removed >= 0)) || removed=0
  ((${#unadopted[@]} == 0)) || tlog "round ${round}: UNADOPTED after ${ADOPT_WAIT} s: ${unadopted[*]}"

  # 5. No process that no command owns.
  orphan_lines=$(orphans_of "${name}" "${ORPHAN_WAIT}")
  orphans=0
  if [[ -n ${orphan_lines} ]]; then
    orphans=$(wc -l <<<"${orphan_lines}")
    tlog "round ${round}: ORPHANS (container pid command):"
    sed 's/^/  /' <<<"${orphan_lines}" >&2
  fi

  # 6. The kept keys hold their state; a new sandbox works.
  lost=0
  for ((k = 0; k < KEYS; k++)); do
    got=$(cli exec "keep${k}" -- cat /tmp/state 2>>"${R}/check.err" || true)
    if [[ ${got} != "v-${name}-${k}" ]]; then
      lost=$((lost + 1))
      tlog "round ${round}: LOST STATE of keep${k}: got '${got}'"
    fi
  done
  broken=0
  if [[ $(cli run -- echo fresh 2>>"${R}/check.err" || true) != fresh ]]; then
    broken=1
    tlog "round ${round}: a new sandbox did not work after the restart: $(tail -n 3 "${R}/check.err")"
  fi
  read -r ctyped cuntyped < <(count_errors "${R}/check.err")
  show_untyped
  untyped=$((untyped + cuntyped))

  # 7. Stop (releases everything); nothing of the runtime may remain.
  if ! stop_node 60; then
    tlog "round ${round}: the node did not stop within 60 s of SIGTERM (killed)"
    HUNG=$((HUNG + 1))
  fi
  leaked=$(runtime_containers "${name}" | wc -l)
  if ((leaked > 0)); then
    tlog "round ${round}: LEAKED after the stop: $(runtime_containers "${name}" '{{.ID}} {{.State}} {{.Label "corral.key"}}' | cut -c1-12,65- | paste -sd, -)"
    remove_runtime_containers "${name}" >/dev/null
  fi

  printf 'round %d: killed at %d ms; errors %d typed, %d untyped (%s); containers %d: adopted %d, removed %d, unadopted %d; orphans %d; lost state %d; hung %d; leaked %d; %s\n' \
    "${round}" "${kill_after_ms}" "${typed}" "${untyped}" "$(error_kinds "${R}"/*.err)" \
    "${before}" "${adopted}" "${removed}" "${#unadopted[@]}" "${orphans}" "${lost}" "${HUNG}" \
    "${leaked}" "$((SECONDS - killed_at)) s after the kill"
  T_LEAKED=$((T_LEAKED + leaked)) T_ORPHANS=$((T_ORPHANS + orphans))
  T_UNTYPED=$((T_UNTYPED + untyped)) T_TYPED=$((T_TYPED + typed)) T_LOST=$((T_LOST + lost))
  T_HUNG=$((T_HUNG + HUNG)) T_UNADOPTED=$((T_UNADOPTED + ${#unadopted[@]}))
  T_ADOPTED=$((T_ADOPTED + adopted)) T_REMOVED=$((T_REMOVED + removed)) T_BROKEN=$((T_BROKEN + broken))
done

printf 'crash trial: %d rounds, leaked %d, orphans %d, untyped errors %d (typed %d), lost state %d, hung %d, unadopted %d (adopted %d, removed %d), broken restarts %d, %d s\n' \
  "${ROUNDS}" "${T_LEAKED}" "${T_ORPHANS}" "${T_UNTYPED}" "${T_TYPED}" "${T_LOST}" "${T_HUNG}" \
  "${T_UNADOPTED}" "${T_ADOPTED}" "${T_REMOVED}" "${T_BROKEN}" "$((SECONDS - START))"
if ((T_LEAKED + T_ORPHANS + T_UNTYPED + T_LOST + T_HUNG + T_UNADOPTED + T_BROKEN > 0)); then
  FAILED=1
  exit 1
fi
