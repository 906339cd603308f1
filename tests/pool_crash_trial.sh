#!/usr/bin/env bash
# Pool crash trial: a `corral node --warm N` killed -9 in the middle of claims, then started
# again under the same name. After each restart, every container of the node's runtime must
# be either a sandbox under its key (its id in `corral ls`) or a member of the pool (a pool
# name, counted by `corral stats` as ready), none both, none left over; and a stop (SIGTERM)
# must leave nothing.
#   1. The hook: the node kills itself between a warm sandbox's rename to its key and its
#      binding (CORRAL_TEST_KILL_AFTER_CLAIM_RENAME=1). An embedded `corral --runtime NAME
#      create KEY` then asks for that key: it must bind the renamed sandbox (not make another,
#      not fail), and the restarted node must adopt it under its key. A second kill at the hook
#      is followed by the restart alone: the renamed, unbound sandbox goes back to the pool.
#   2. Random moments: ROUNDS rounds of `corral run` and create/rm loops against the node,
#      killed -9 after a random 0.3-2.5 s, restarted, checked as above.
#
# Usage: tests/pool_crash_trial.sh [--rounds N] [--warm N] [--seed S] [--corral PATH] [--keep-logs]
# Exit: 0 when every check holds; 1 on any container neither keyed nor pooled, a count that
# does not match, a leak after the stop, or a broken restart; 2 when the trial could not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIAL_TAG=pool-crash-trial
# shellcheck source=tests/trial_lib.sh
source "${ROOT}/tests/trial_lib.sh"

ROUNDS=20
WARM=3
SEED=$(($(date +%s) % 32768))
CORRAL=${CORRAL:-${ROOT}/build/app/corral}
SETTLE=30 # s: after a restart, every container is accounted for by then (a node removes a dead
          # process's container left in `created` at once: it holds its name exclusively)

trial_options "--rounds=ROUNDS --warm=WARM --seed=SEED --corral=CORRAL" "$@"
[[ ${ROUNDS} =~ ^[0-9]+$ && ${WARM} =~ ^[1-9][0-9]*$ ]] || tdie "--rounds must be a number, --warm positive"
[[ -x ${CORRAL} ]] || tdie "${CORRAL} is not executable (build the corral target)"
docker info >/dev/null 2>&1 || tdie "no Docker engine answers"

WORK=$(mktemp -d /tmp/corral-pool-crash-trial.XXXXXX)
export CORRAL_TLS_DIR="${WORK}/tls"
trial_exit_trap trial_cleanup_containers
RANDOM=${SEED}
NAME="poolcrash-$$"
TRIAL_RUNTIMES+=("${NAME}")
PROBLEMS=0

problem() {
  tlog "$*"
  PROBLEMS=$((PROBLEMS + 1))
}

stat_of() { # stat_of FIELD: from `corral stats --json`
  cli stats --json 2>>"${WORK}/check.err" | grep -o "\"$1\":[0-9]*" | cut -d: -f2
}

# The node dies by SIGKILL: ours, or its own at the hook (then our kill finds it gone already).
kill_node() {
  kill -KILL "${NODE_PID}" 2>/dev/null || :
  local status=0
  wait "${NODE_PID}" 2>/dev/null || status=$?
  ((status == 128 + 9)) || problem "the node ended with status ${status}, not by SIGKILL"
}

# accounted LABEL: waits up to SETTLE s until every container of the runtime is a keyed
# sandbox of `corral ls` or a ready pool member, and their counts agree with `corral stats`;
# what is not is a problem (counted; the trial goes on to the next check).
accounted() {
  local label=$1 deadline=$((SECONDS + SETTLE)) ids listed pooled ready warming stray
  while :; do
    listed=$(cli ls 2>>"${WORK}/check.err" | awk 'NR > 1 {print $3}' || true)
    ready=$(stat_of pool_ready || echo -1)
    warming=$(stat_of pool_warming || echo -1)
    pooled=0
    stray=()
    while read -r id name state; do
      [[ -n ${id} ]] || continue
      if [[ ${name} == corral_pool-* && ${state} == running ]]; then
        pooled=$((pooled + 1))
      elif ! grep -qx "${id:0:12}" <<<"${listed}"; then
        stray+=("${id:0:12}:${name}(${state})")
      fi
    done < <(runtime_containers "${NAME}" '{{.ID}} {{.Names}} {{.State}}')
    if ((${#stray[@]} == 0 && warming == 0 && pooled == ready)); then
      printf '%s: %d keyed, %d pooled\n' "${label}" "$(grep -c . <<<"${listed}" || true)" "${pooled}"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      problem "${label}: NOT ACCOUNTED after ${SETTLE} s: stray [${stray[*]}], pool-named ${pooled}, stats ready ${ready} warming ${warming}"
      return 0
    fi
    sleep 0.5
  done
}

stop_and_check_empty() {
  local label=$1 left
  stop_node 60 || problem "${label}: the node did not stop within 60 s of SIGTERM"
  left=$(runtime_containers "${NAME}" | wc -l)
  if ((left > 0)); then
    problem "${label}: LEAKED ${left} containers after the stop"
    remove_runtime_containers "${NAME}" >/dev/null
  fi
}

wait_pool() { # wait_pool N: the pool holds N ready members
  local deadline=$((SECONDS + 60))
  until [[ $(stat_of pool_ready || echo 0) -ge $1 ]]; do
    ((SECONDS < deadline)) || { problem "the pool did not fill to $1 within 60 s"; return 1; }
    sleep 0.2
  done
}

tlog "runtime ${NAME}, warm ${WARM}, ${ROUNDS} random rounds, seed ${SEED}"

# -- 1. the hook: killed between rename and bind ---------------------------------------------
CORRAL_TEST_KILL_AFTER_CLAIM_RENAME=1 start_node "${NAME}" "${WORK}/hook1" --warm "${WARM}"
wait_pool "${WARM}"
cli create hooked >/dev/null 2>"${WORK}/hook1.create.err" && problem "hook 1: create succeeded on a node that died"
kill_node
# The node's keys are its principals' ("PRINCIPAL/hooked", named corral-PRINCIPAL.hooked-...).
renamed=$(runtime_containers "${NAME}" '{{.ID}} {{.Names}}' | awk '$2 ~ /^corral-[^-]*\.hooked-/')
(($(grep -c . <<<"${renamed}") == 1)) || problem "hook 1: expected one container under the key's name, found '${renamed}'"
id=$(awk '{print substr($1, 1, 12)}' <<<"${renamed}")
principal=$(awk '{print $2}' <<<"${renamed}" | sed -E 's/^corral-([^.]*)\.hooked-.*/\1/')
# The next process to ask for the key binds the renamed sandbox (an embedded CLI of the name).
got=$("${CORRAL}" --runtime "${NAME}" create "${principal}/hooked" 2>"${WORK}/hook1.embedded.err" | awk '{print $2}' || true)
[[ -n ${got} && ${got} == "${id}" ]] || problem "hook 1: the embedded create did not bind the renamed sandbox (got '${got}', renamed '${id}'): $(cat "${WORK}/hook1.embedded.err")"
out=$("${CORRAL}" --runtime "${NAME}" exec "${principal}/hooked" -- sh -c 'echo bound > /tmp/b; cat /tmp/b' 2>>"${WORK}/hook1.embedded.err" || true)
[[ ${out} == bound ]] || problem "hook 1: the bound sandbox does not run commands: '${out}'"
start_node "${NAME}" "${WORK}/hook1b" --warm "${WARM}"
accounted "hook 1 restart"
grep -q '^hooked ' <(cli ls 2>/dev/null) || problem "hook 1: the restarted node does not hold key hooked"
[[ $(cli exec hooked -- cat /tmp/b 2>/dev/null || true) == bound ]] || problem "hook 1: key hooked lost its state"
stop_and_check_empty "hook 1"

CORRAL_TEST_KILL_AFTER_CLAIM_RENAME=1 start_node "${NAME}" "${WORK}/hook2" --warm "${WARM}"
wait_pool "${WARM}"
cli create hooked2 >/dev/null 2>&1 && problem "hook 2: create succeeded on a node that died"
kill_node
start_node "${NAME}" "${WORK}/hook2b" --warm "${WARM}"
accounted "hook 2 restart"
back=$(runtime_containers "${NAME}" '{{.Names}}' | grep -c '^corral-[^-]*\.hooked2-' || true)
((back == 0)) || problem "hook 2: the renamed, unbound sandbox was not taken back into the pool"
[[ $(cli ls 2>/dev/null | awk 'NR > 1' | wc -l) -eq 0 ]] || problem "hook 2: the restarted node holds a key nobody bound"
stop_and_check_empty "hook 2"

# -- 2. random moments under load -------------------------------------------------------------
for ((round = 1; round <= ROUNDS; round++)); do
  R=${WORK}/r${round}
  mkdir -p "${R}"
  start_node "${NAME}" "${R}/node1" --warm "${WARM}"
  WORK_SAVED=${WORK}
  WORK=${R}
  start_loop run run -- echo ok
  start_loop create create "k${round}"
  start_loop rm rm "k${round}"
  start_loop run2 run -- sh -c 'echo two'
  kill_after_ms=$((300 + RANDOM % 2201))
  sleep "$(printf '%d.%03d' $((kill_after_ms / 1000)) $((kill_after_ms % 1000)))"
  kill_node
  stop_loops 15
  WORK=${WORK_SAVED}
  start_node "${NAME}" "${R}/node2" --warm "${WARM}"
  accounted "round ${round} (killed at ${kill_after_ms} ms)"
  [[ $(cli run -- echo fresh 2>>"${WORK}/check.err" || true) == fresh ]] ||
    problem "round ${round}: a sandbox did not work after the restart"
  stop_and_check_empty "round ${round}"
done

printf 'pool crash trial: 2 hook kills and %d random kills, %d problems\n' "${ROUNDS}" "${PROBLEMS}"
if ((PROBLEMS > 0)); then
  FAILED=1
  exit 1
fi
