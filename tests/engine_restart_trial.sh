#!/usr/bin/env bash
# Engine-restart trial: a `corral node` under load on a private Docker engine that the trial
# starts itself (its own data root, exec root, socket, pid file and containerd, no bridge, no
# iptables: nobody else's containers are touched), whose engine is stopped (SIGTERM) for a
# few seconds and started again. Per phase (without and with --live-restore) it checks:
#   - while the engine is down, clients get typed errors (an acquire: engine_unavailable) and
#     no call hangs;
#   - the node recovers by itself: a new sandbox works within RECOVER_LIMIT after the restart;
#   - sandboxes with state are kept (live-restore: their state is still there) or reported
#     lost (without: sandbox_lost or not_found, never a hang or an untyped error);
#   - no process runs in a sandbox that no command owns (orphans);
#   - after the node's SIGTERM stop, no container is left on the private engine (leaked);
#   - every error a client printed is one of corral's codes (untyped otherwise).
# The private engine and its data root are removed at the end, whatever happened.
#
# Usage: tests/engine_restart_trial.sh [--phases no-live,live] [--down SECONDS] [--cycles N]
#                                      [--corral PATH] [--stress PATH] [--keep-logs]
#        (--stress: corral-stress, default beside --corral)
# Exit: 0 when clean; 1 on any leak, orphan, untyped error, hang, failed recovery or wrong
# kept/lost state; 2 when the trial could not run (e.g. no private engine could start).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIAL_TAG=engine-restart-trial
# shellcheck source=tests/trial_lib.sh
source "${ROOT}/tests/trial_lib.sh"

PHASES=no-live,live
DOWN=4            # s the engine stays down
CYCLES=1          # engine restarts per phase
KEYS=3
CORRAL=${CORRAL:-${ROOT}/build/app/corral}
STRESS=${STRESS:-}  # corral-stress; default: beside --corral
IMAGE=corral/sandbox:busybox
RECOVER_LIMIT=30  # s after the engine answers again, a new sandbox must work
HANG_LIMIT=30     # s: a client call running longer than this while the engine is down hangs
ORPHAN_WAIT=10

trial_options "--phases=PHASES --down=DOWN --cycles=CYCLES --corral=CORRAL --stress=STRESS" "$@"
[[ ${CYCLES} =~ ^[1-9][0-9]*$ && ${DOWN} =~ ^[0-9]+$ ]] || tdie "--cycles must be positive, --down a number of seconds"
[[ -x ${CORRAL} ]] || tdie "${CORRAL} is not executable (build the corral target)"
STRESS=${STRESS:-$(dirname "${CORRAL}")/corral-stress}
[[ -x ${STRESS} ]] || tdie "${STRESS} is not executable (build the corral-stress target)"
[[ ${EUID} -eq 0 ]] || tdie "a private dockerd needs root"
command -v dockerd >/dev/null || tdie "dockerd not found"
load_error_codes

# The image comes from the engine the caller uses (the main one).
MAIN_DOCKER_HOST=${DOCKER_HOST:-}
DOCKER_HOST=${MAIN_DOCKER_HOST} docker image inspect "${IMAGE}" >/dev/null 2>&1 ||
  tdie "${IMAGE} is not on the main engine (run app/setup.sh)"

# Short paths: a unix socket path must fit in 108 bytes.
WORK=$(mktemp -d /tmp/corral-engtrial.XXXXXX)
# Nodes and clients of the trial share their own TLS material (made by the first node), never
# root's default directory on this machine.
export CORRAL_TLS_DIR="${WORK}/tls"
ENGINE_DIR=${WORK}/e
SOCK=${ENGINE_DIR}/d.sock
DOCKERD_PID=""
FAILED=0

# -- the private engine ------------------------------------------------------------------------

engine_up() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

# start_engine LIVE(0|1): starts the private dockerd (it starts its own containerd, whose
# state lives under the exec root), waits until it answers.
start_engine() {
  local live=$1 flags=()
  ((live)) && flags+=(--live-restore)
  mkdir -p "${ENGINE_DIR}"
  setsid dockerd --data-root "${ENGINE_DIR}/data" --exec-root "${ENGINE_DIR}/exec" \
    -H "unix://${SOCK}" --pidfile "${ENGINE_DIR}/d.pid" --bridge=none --iptables=false \
    --ip-masq=false "${flags[@]}" </dev/null >>"${ENGINE_DIR}/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  local deadline=$((SECONDS + 60))
  until engine_up; do
    if ! kill -0 "${DOCKERD_PID}" 2>/dev/null; then
      tail -n 30 "${ENGINE_DIR}/dockerd.log" >&2
      tdie "the private dockerd exited during start-up (log above)"
    fi
    ((SECONDS < deadline)) || tdie "the private dockerd did not answer within 60 s"
    sleep 0.2
  done
}

# stop_engine: SIGTERM the private dockerd and wait for it (it stops its containerd).
stop_engine() {
  [[ -n ${DOCKERD_PID} ]] || return 0
  kill -TERM "${DOCKERD_PID}" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "${DOCKERD_PID}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "${DOCKERD_PID}" 2>/dev/null; then
    tlog "the private dockerd did not stop within 60 s; killing it"
    kill -KILL "${DOCKERD_PID}" 2>/dev/null || true
  fi
  wait "${DOCKERD_PID}" 2>/dev/null || true
  DOCKERD_PID=""
}

# The processes that belong to the private engine: its containerd and shims name paths
# under ENGINE_DIR in their arguments (the main engine's never do).
engine_processes() {
  local pid
  for pid in $(pgrep -f -- "${ENGINE_DIR}/" 2>/dev/null || true); do
    [[ ${pid} != "$$" && -r /proc/${pid}/cmdline ]] || continue
    tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -qF -- "${ENGINE_DIR}/" && echo "${pid}"
  done
}

# Removes the private engine completely: its containers, the daemon, its containerd and
# shims, its mounts, its data root.
destroy_engine() {
  [[ -d ${ENGINE_DIR} ]] || return 0
  # Stopped with live-restore, its containers still run under their shims: start the
  # engine again to remove them properly.
  if [[ -z ${DOCKERD_PID} && -n $(engine_processes) ]]; then
    tlog "teardown: starting the private engine again to remove its containers"
    start_engine 1 || true
  fi
  if [[ -n ${DOCKERD_PID} ]] && engine_up; then
    local ids
    ids=$(docker ps -aq)
    # shellcheck disable=SC2086
    [[ -z ${ids} ]] || docker rm -f ${ids} >/dev/null 2>&1 || true
  fi
  stop_engine
  local pid left
  left=$(engine_processes)
  if [[ -n ${left} ]]; then
    tlog "teardown: ending what the private engine left: $(tr '\n' ' ' <<<"${left}")"
    for pid in ${left}; do kill -KILL "${pid}" 2>/dev/null || true; done
    sleep 0.5
  fi
  # Mounts under the engine's directories, deepest first.
  awk -v d="${ENGINE_DIR}/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "${m}" 2>/dev/null || true; done
  rm -rf "${ENGINE_DIR}"
}

trial_exit_trap destroy_engine

# Everything below talks to the private engine only.
export DOCKER_HOST="unix://${SOCK}"

T_LEAKED=0 T_ORPHANS=0 T_UNTYPED=0 T_TYPED=0 T_HUNG=0 T_RECOVERY_FAILED=0 T_WRONG_STATE=0
T_DOWN_TYPED=0
START=${SECONDS}
SUMMARY=()

IFS=, read -r -a phase_list <<<"${PHASES}"
for phase in "${phase_list[@]}"; do
  case ${phase} in
    live) live=1 ;;
    no-live) live=0 ;;
    *) tdie "unknown phase '${phase}' (no-live, live)" ;;
  esac
  P=${WORK}/${phase}
  mkdir -p "${P}"
  name="engtrial-$$-${phase}"
  TRIAL_RUNTIMES+=("${name}")
  tlog "phase ${phase}: private dockerd$( ((live)) && echo ' --live-restore')"
  t_phase=${SECONDS}
  start_engine "${live}"
  DOCKER_HOST=${MAIN_DOCKER_HOST} docker save "${IMAGE}" | docker load >/dev/null
  [[ $(docker info --format '{{.LiveRestoreEnabled}}') == $( ((live)) && echo true || echo false) ]] ||
    tdie "the private engine's live-restore setting is not what the phase asked for"

  start_node "${name}" "${P}/node" --log-level info
  for ((k = 0; k < KEYS; k++)); do
    cli create "keep${k}" >/dev/null 2>>"${P}/setup.err" || tdie "create keep${k}: $(cat "${P}/setup.err")"
    cli exec "keep${k}" -- sh -c "echo v-${name}-${k} > /tmp/state" 2>>"${P}/setup.err" ||
      tdie "writing the state of keep${k}: $(cat "${P}/setup.err")"
  done

  phase_hung=0 phase_down_typed=0 phase_recovery=() phase_wrong=0
  for ((cycle = 1; cycle <= CYCLES; cycle++)); do
    C=${P}/c${cycle}
    mkdir -p "${C}"
    WORK_SAVED=${WORK}
    WORK=${C}
    HUNG=0
    "${STRESS}" --node "${NODE_ADDR}" --duration 300s --keys 4 --concurrency 4 \
      --max-errors 1000000 </dev/null >"${C}/stress.out" 2>"${C}/stress.err" &
    stress_pid=$!
    TRIAL_PIDS+=("${stress_pid}")
    start_loop short exec "keep$((1 % KEYS))" -- sh -c 'echo x >> /tmp/log'
    start_loop long exec "keep$((2 % KEYS))" -- sh -c 'sleep 5; echo done'
    start_loop run run -- sh -c 'echo ok'
    start_loop create create "tmp${cycle}"
    start_loop rm rm "tmp${cycle}"
    # A command running across the engine's restart. Its channel is the sandbox's agent, not
    # the engine: under live-restore it runs on and ends at its own timeout (124); without,
    # its sandbox dies with the engine and its client gets a typed error. Either way it ends
    # in bounded time and its processes do not outlive it.
    "${CORRAL}" --node "${NODE_ADDR}" exec --timeout 15s "keep$((2 % KEYS))" -- sh -c 'sleep 300; echo done' \
      </dev/null >"${C}/across.out" 2>"${C}/across.err" &
    across_pid=$!
    TRIAL_PIDS+=("${across_pid}")
    sleep 2

    # Engine down.
    t_down=$(now_ms)
    stop_engine
    t_stopped=$(now_ms)
    # Probes while it is down: typed, and in bounded time.
    for probe in "create probe-${cycle}" "exec keep0 -- true" "ls"; do
      t0=$(now_ms)
      # shellcheck disable=SC2086
      CLI_LIMIT=${HANG_LIMIT} cli ${probe} >"${C}/probe.out" 2>"${C}/probe.tmp" && rc=0 || rc=$?
      ms=$(($(now_ms) - t0))
      printf 'probe while down: corral %s -> exit %d in %d ms: %s\n' "${probe}" "${rc}" "${ms}" \
        "$(head -c 300 "${C}/probe.tmp" | head -n1)" >>"${C}/probes.txt"
      cat "${C}/probe.tmp" >>"${C}/probes.err"
      if ((rc == 137)); then
        HUNG=$((HUNG + 1))
        tlog "phase ${phase}: HANG: 'corral ${probe}' ran ${HANG_LIMIT} s while the engine was down"
      fi
      if [[ ${probe} == create* ]]; then
        if grep -q '^corral: engine_unavailable' "${C}/probe.tmp"; then
          phase_down_typed=$((phase_down_typed + 1))
        else
          tlog "phase ${phase}: an acquire while the engine was down did not say engine_unavailable: $(cat "${C}/probe.tmp")"
        fi
      fi
    done
    remaining=$((DOWN * 1000 - ($(now_ms) - t_stopped)))
    ((remaining <= 0)) || sleep "$(printf '%d.%03d' $((remaining / 1000)) $((remaining % 1000)))"

    # Engine up again; the node must recover by itself.
    start_engine "${live}"
    t_up=$(now_ms)
    recovered=""
    while (($(now_ms) - t_up < RECOVER_LIMIT * 1000)); do
      if [[ $(CLI_LIMIT=20 cli run -- echo fresh 2>>"${C}/recover.err" || true) == fresh ]]; then
        recovered=$(($(now_ms) - t_up))
        break
      fi
      sleep 0.5
    done
    if [[ -z ${recovered} ]]; then
      T_RECOVERY_FAILED=$((T_RECOVERY_FAILED + 1))
      tlog "phase ${phase}: NOT RECOVERED: no new sandbox within ${RECOVER_LIMIT} s of the engine's restart: $(tail -n 2 "${C}/recover.err")"
      phase_recovery+=("none")
    else
      phase_recovery+=("${recovered}ms")
    fi
    sleep 1 # load on the recovered engine
    stop_loops "${HANG_LIMIT}"
    deadline=$((SECONDS + HANG_LIMIT))
    while kill -0 "${across_pid}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "${across_pid}" 2>/dev/null; then
      HUNG=$((HUNG + 1))
      tlog "phase ${phase}: HANG: the exec running across the engine's restart had no answer ${HANG_LIMIT} s after the recovery"
      kill_tree "${across_pid}"
    fi
    wait "${across_pid}" 2>/dev/null && across_rc=0 || across_rc=$?
    printf 'exec across the restart: exit %d: %s\n' "${across_rc}" "$(head -n1 "${C}/across.err")" >>"${C}/probes.txt"
    kill_tree "${stress_pid}"
    wait "${stress_pid}" 2>/dev/null || true
    WORK=${WORK_SAVED}
    phase_hung=$((phase_hung + HUNG))
    tlog "phase ${phase} cycle ${cycle}: engine stopped in $((t_stopped - t_down)) ms, down ${DOWN} s; recovered after ${phase_recovery[-1]}; probes:"
    sed 's/^/  /' "${C}/probes.txt" >&2
  done

  # Kept (live-restore) or reported lost (without).
  state_report=()
  for ((k = 0; k < KEYS; k++)); do
    got=$(CLI_LIMIT=${HANG_LIMIT} cli exec "keep${k}" -- cat /tmp/state 2>"${P}/state.tmp") && rc=0 || rc=$?
    cat "${P}/state.tmp" >>"${P}/check.err"
    err=$(grep -m1 '^corral: ' "${P}/state.tmp" || true)
    if ((live)); then
      if [[ ${got} == "v-${name}-${k}" ]]; then
        state_report+=("keep${k} kept")
      else
        phase_wrong=$((phase_wrong + 1))
        state_report+=("keep${k} WRONG")
        tlog "phase ${phase}: keep${k} should have kept its state under live-restore: got '${got}' (${err})"
      fi
    else
      if [[ ${err} =~ ^corral:\ (sandbox_lost|not_found) ]]; then
        state_report+=("keep${k} ${BASH_REMATCH[1]}")
      elif ((rc == 137)); then
        phase_hung=$((phase_hung + 1))
        state_report+=("keep${k} HUNG")
      else
        phase_wrong=$((phase_wrong + 1))
        state_report+=("keep${k} WRONG")
        tlog "phase ${phase}: keep${k} lived through an engine restart without live-restore?: exit ${rc}, got '${got}' (${err})"
      fi
    fi
  done

  orphan_lines=$(orphans_of "${name}" "${ORPHAN_WAIT}")
  orphans=0
  if [[ -n ${orphan_lines} ]]; then
    orphans=$(wc -l <<<"${orphan_lines}")
    tlog "phase ${phase}: ORPHANS (container pid command):"
    sed 's/^/  /' <<<"${orphan_lines}" >&2
  fi

  if ! stop_node 60; then
    tlog "phase ${phase}: the node did not stop within 60 s of SIGTERM (killed)"
    phase_hung=$((phase_hung + 1))
  fi
  # Everything on the private engine is the trial's: all of it counts. A container the engine
  # is still removing (state `removing`: the engine works on a DELETE, slowly on 2 busy cores
  # right after its restart) is given a bounded while to finish; whatever is left is leaked.
  t_removing=${SECONDS}
  deadline=$((SECONDS + 60))
  while [[ -n $(docker ps -aq --filter status=removing) ]] && ((SECONDS < deadline)); do sleep 0.5; done
  ((SECONDS - t_removing < 2)) || tlog "phase ${phase}: the engine took $((SECONDS - t_removing)) s to finish removals in progress"
  # A container corral asked to remove and the engine failed to ("device or resource busy":
  # a process the engine's restart left behind still holds its root filesystem; the engine has
  # no API to free it) is the engine's failure, not a leak of corral's: counted and shown apart,
  # with the engine's own log lines as the evidence. Anything else left is leaked.
  leaked=0 engine_failed=0
  for id in $(docker ps -aq); do
    if grep -F "${id}" "${ENGINE_DIR}/dockerd.log" 2>/dev/null |
      grep -F "Handler for DELETE" | grep -qF "device or resource busy"; then
      engine_failed=$((engine_failed + 1))
      tlog "phase ${phase}: the engine failed corral's removal of ${id} (root filesystem busy):"
      # Who holds the mount: every process whose mount table still has it (for the next look).
      merged=$(grep -F "${id}" "${ENGINE_DIR}/dockerd.log" | grep -oE 'unlinkat [^:]+/merged' |
        tail -n 1 | cut -d' ' -f2 || true)
      if [[ -n ${merged} ]]; then
        grep -qF -- "${merged}" /proc/self/mountinfo && tlog "  ${merged} is still mounted on the host"
        # Other mount namespaces that keep it (one line each, at most ten).
        declare -A seen_ns=()
        for f in /proc/[0-9]*/mountinfo; do
          holder=${f#/proc/}
          holder=${holder%/mountinfo}
          ns=$(readlink "/proc/${holder}/ns/mnt" 2>/dev/null) || continue
          [[ ${ns} != "$(readlink /proc/self/ns/mnt)" && -z ${seen_ns[${ns}]:-} ]] || continue
          grep -qF -- "${merged}" "${f}" 2>/dev/null || continue
          seen_ns[${ns}]=1
          ((${#seen_ns[@]} <= 10)) || break
          tlog "  ... and in ${ns} of pid ${holder}: $(tr '\0' ' ' <"/proc/${holder}/cmdline" 2>/dev/null | cut -c1-200)"
        done
      fi
    else
      leaked=$((leaked + 1))
      tlog "phase ${phase}: what the engine logged of ${id} (no failed removal):"
    fi
    grep -F "${id}" "${ENGINE_DIR}/dockerd.log" 2>/dev/null | tail -n 3 | cut -c1-400 >&2 || true
  done
  T_ENGINE_FAILED=$((${T_ENGINE_FAILED:-0} + engine_failed))
  if ((leaked > 0)); then
    tlog "phase ${phase}: LEAKED after the stop: $(docker ps -a --format '{{.ID}} {{.State}} {{.Label "corral.runtime"}} {{.Label "corral.key"}}' | paste -sd, -)"
  fi

  read -r typed untyped < <(count_errors "${P}"/*/*.err "${P}"/*.err)
  show_untyped
  line=$(printf 'phase %s: errors %d typed, %d untyped (%s); engine down: acquire engine_unavailable %d/%d; recovery %s; state: %s; orphans %d; hung %d; leaked %d; removals the engine failed %d; %d s' \
    "${phase}" "${typed}" "${untyped}" "$(error_kinds "${P}"/*/*.err "${P}"/*.err)" \
    "${phase_down_typed}" "${CYCLES}" "${phase_recovery[*]}" "${state_report[*]}" "${orphans}" \
    "${phase_hung}" "${leaked}" "${engine_failed}" "$((SECONDS - t_phase))")
  echo "${line}"
  SUMMARY+=("${line}")
  T_LEAKED=$((T_LEAKED + leaked)) T_ORPHANS=$((T_ORPHANS + orphans))
  T_UNTYPED=$((T_UNTYPED + untyped)) T_TYPED=$((T_TYPED + typed)) T_HUNG=$((T_HUNG + phase_hung))
  T_WRONG_STATE=$((T_WRONG_STATE + phase_wrong))
  T_DOWN_TYPED=$((T_DOWN_TYPED + phase_down_typed))
  T_DOWN_MISSING=$((${T_DOWN_MISSING:-0} + CYCLES - phase_down_typed))

  destroy_engine
  [[ -z $(engine_processes) ]] || tdie "the private engine left processes after its teardown"
done

printf 'engine restart trial: %d phases (%s), %d restarts each; leaked %d (removals the engine failed %d), orphans %d, untyped errors %d (typed %d), engine_unavailable while down %d/%d, hung %d, not recovered %d, wrong kept/lost state %d, %d s\n' \
  "${#phase_list[@]}" "${PHASES}" "${CYCLES}" "${T_LEAKED}" "${T_ENGINE_FAILED:-0}" "${T_ORPHANS}" "${T_UNTYPED}" \
  "${T_TYPED}" "${T_DOWN_TYPED}" "$((T_DOWN_TYPED + T_DOWN_MISSING))" "${T_HUNG}" \
  "${T_RECOVERY_FAILED}" "${T_WRONG_STATE}" "$((SECONDS - START))"
if ((T_LEAKED + T_ORPHANS + T_UNTYPED + T_HUNG + T_RECOVERY_FAILED + T_WRONG_STATE + T_DOWN_MISSING > 0)); then
  FAILED=1
  exit 1
fi
