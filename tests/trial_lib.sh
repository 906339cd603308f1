# Helpers shared by tests/crash_trial.sh, tests/engine_restart_trial.sh and
# tests/pool_crash_trial.sh (sourced, not run).
# They start only processes whose pids they record (TRIAL_PIDS), and the cleanup kills those
# by pid and removes only containers of the runtime names the trial made (TRIAL_RUNTIMES).
# shellcheck shell=bash

TRIAL_PIDS=()     # every background process the trial started (nodes, loads, client loops)
TRIAL_RUNTIMES=() # runtime (node) names whose containers are the trial's own
WORK=""           # the trial's scratch directory (logs, stop files)
KEEP_LOGS=0

tlog() { printf '[%s] %s\n' "${TRIAL_TAG:-trial}" "$*" >&2; }
tdie() {
  tlog "ERROR: $*"
  exit 2
}
now_ms() { date +%s%3N; }

# The trial's usage: its leading comment, up to `set -euo`.
trial_usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# trial_options "--rounds=ROUNDS --seed=SEED ..." "$@": each --NAME VALUE of the list sets the
# variable after its '='; --keep-logs and -h/--help are every trial's; anything else, or a
# value missing, prints the usage and exits 2.
trial_options() {
  local -A vars=()
  local pair
  for pair in $1; do vars[${pair%%=*}]=${pair#*=}; done
  shift
  while (($# > 0)); do
    case $1 in
      --keep-logs) KEEP_LOGS=1; shift ;;
      -h | --help) trial_usage; exit 0 ;;
      *)
        if [[ -z ${vars[$1]:-} || $# -lt 2 ]]; then
          trial_usage >&2
          exit 2
        fi
        printf -v "${vars[$1]}" '%s' "$2"
        shift 2
        ;;
    esac
  done
}

# kill_tree PID: SIGKILL a process we started and its direct children (by parent pid only).
kill_tree() {
  local pid=$1 child
  for child in $(pgrep -P "${pid}" 2>/dev/null || true); do
    kill_tree "${child}"
  done
  kill -KILL "${pid}" 2>/dev/null || true
}

# The containers (any state) of one runtime on the engine DOCKER_HOST names (or the default).
runtime_containers() { # runtime_containers NAME [format]
  local format='{{.ID}}'
  [[ -z ${2:-} ]] || format=$2
  docker ps -a --no-trunc --filter "label=corral.runtime=$1" --format "${format}"
}

remove_runtime_containers() { # remove_runtime_containers NAME -> prints how many
  local ids
  ids=$(runtime_containers "$1")
  if [[ -n ${ids} ]]; then
    # shellcheck disable=SC2086
    docker rm -f ${ids} >/dev/null 2>&1 || true
    wc -w <<<"${ids}"
  else
    echo 0
  fi
}

trial_cleanup_processes() {
  local pid
  for pid in "${TRIAL_PIDS[@]}"; do kill_tree "${pid}"; done
  for pid in "${TRIAL_PIDS[@]}"; do wait "${pid}" 2>/dev/null || true; done
  TRIAL_PIDS=()
}

# trial_exit_trap CLEANUP: on exit, kill the trial's processes, run CLEANUP (removing its
# containers, or its private engine), and keep WORK's logs when the trial failed.
FAILED=0
TRIAL_CLEANUP=trial_cleanup_containers
trial_on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  trial_cleanup_processes
  "${TRIAL_CLEANUP}"
  if ((KEEP_LOGS || FAILED || rc != 0)); then
    tlog "logs kept in ${WORK}"
  else
    rm -rf "${WORK}"
  fi
  exit "${rc}"
}
trial_exit_trap() {
  TRIAL_CLEANUP=$1
  trap trial_on_exit EXIT
  trap 'exit 130' INT TERM
}

trial_cleanup_containers() {
  local name n
  for name in "${TRIAL_RUNTIMES[@]}"; do
    n=$(remove_runtime_containers "${name}")
    ((n == 0)) || tlog "cleanup: removed ${n} containers of runtime ${name}"
  done
}

# -- a node ------------------------------------------------------------------------------------

NODE_PID=""
NODE_ADDR=""
# start_node NAME LOGPREFIX [EXTRA...]: starts `corral node`, waits for "listening HOST:PORT".
start_node() {
  local name=$1 prefix=$2
  shift 2
  "${CORRAL}" node --name "${name}" --listen 127.0.0.1:0 --grace 2s "$@" \
    </dev/null >"${prefix}.out" 2>"${prefix}.err" &
  NODE_PID=$!
  TRIAL_PIDS+=("${NODE_PID}")
  local deadline=$((SECONDS + 30)) line
  while ((SECONDS < deadline)); do
    line=$(grep -m1 -o 'listening 127\.0\.0\.1:[0-9]*' "${prefix}.out" 2>/dev/null || true)
    if [[ -n ${line} ]]; then
      NODE_ADDR=${line#listening }
      return 0
    fi
    if ! kill -0 "${NODE_PID}" 2>/dev/null; then
      tail -n 20 "${prefix}.err" >&2 || true
      tdie "node ${name} exited before listening"
    fi
    sleep 0.1
  done
  tail -n 20 "${prefix}.err" >&2 || true
  tdie "node ${name} did not print 'listening' within 30 s"
}

# stop_node [TIMEOUT_S]: SIGTERM the node and wait for it; returns 1 if it did not stop.
stop_node() {
  local limit=${1:-60} deadline
  kill -TERM "${NODE_PID}" 2>/dev/null || true
  deadline=$((SECONDS + limit))
  while kill -0 "${NODE_PID}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "${NODE_PID}" 2>/dev/null; then
    kill -KILL "${NODE_PID}" 2>/dev/null || true
    wait "${NODE_PID}" 2>/dev/null || true
    return 1
  fi
  wait "${NODE_PID}" 2>/dev/null || true
  return 0
}

# cli ARGS...: `corral --node NODE_ADDR ARGS...`, bounded (a hang is killed and reported: 124).
cli() {
  timeout -s KILL "${CLI_LIMIT:-60}" "${CORRAL}" --node "${NODE_ADDR}" "$@" </dev/null
}

# -- client loops ------------------------------------------------------------------------------

LOOP_PIDS=()
# start_loop NAME CMD...: repeats `corral --node ADDR CMD...` until the stop file exists.
# Each call's stderr goes to WORK/NAME.err; "rc=N ms=M" per call to WORK/NAME.calls.
start_loop() {
  local name=$1 addr=${NODE_ADDR}
  shift
  (
    while [[ ! -e ${WORK}/stop ]]; do
      t0=$(now_ms)
      rc=0
      "${CORRAL}" --node "${addr}" "$@" </dev/null >>"${WORK}/${name}.out" 2>>"${WORK}/${name}.err" || rc=$?
      echo "rc=${rc} ms=$(($(now_ms) - t0))" >>"${WORK}/${name}.calls"
      # A node that is gone answers at once: do not spin.
      ((rc == 0)) || sleep 0.2
    done
  ) &
  LOOP_PIDS+=($!)
  TRIAL_PIDS+=($!)
}

# stop_loops LIMIT_S: asks the loops to stop; a loop whose current call does not end within
# LIMIT_S seconds is a hang (counted in HUNG, its call killed).
HUNG=0
stop_loops() {
  local limit=$1 pid deadline
  touch "${WORK}/stop"
  deadline=$((SECONDS + limit))
  for pid in "${LOOP_PIDS[@]}"; do
    while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "${pid}" 2>/dev/null; then
      HUNG=$((HUNG + 1))
      tlog "HANG: a client call did not end within ${limit} s: $(ps -o args= --ppid "${pid}" | head -n1)"
      kill_tree "${pid}"
    fi
    wait "${pid}" 2>/dev/null || true
  done
  LOOP_PIDS=()
  rm -f "${WORK}/stop"
}

# -- errors ------------------------------------------------------------------------------------

# The error vocabulary: corral_errc's names, read from messages/errors.hpp.
ERROR_CODES=""
load_error_codes() {
  ERROR_CODES=$(sed -n '/enum class corral_errc/,/};/p' "${ROOT}/messages/errors.hpp" |
    grep -oE '^[[:space:]]+[a-z_]+' | tr -d ' ' | paste -sd'|')
  [[ -n ${ERROR_CODES} ]] || tdie "could not read the error codes from messages/errors.hpp"
}

# count_errors FILE...: prints "TYPED UNTYPED" over the client stderr lines of the files; the
# untyped lines are appended to WORK/untyped.txt. An error line is a `corral: ` line that is
# not a note and not an exec outcome (timed out, OOM, sandbox lost: told by the exit code).
count_errors() {
  local typed=0 untyped=0 line f
  for f in "$@"; do
    [[ -s ${f} ]] || continue
    while IFS= read -r line; do
      [[ ${line} == "corral: "* ]] || continue
      case ${line} in
        "corral: note: "* | "corral: command timed out and was killed" | \
          "corral: command was killed: out of memory" | \
          "corral: the sandbox was lost while the command ran") continue ;;
      esac
      if [[ ${line} =~ ^corral:\ (${ERROR_CODES})(:|\;|$) ]]; then
        typed=$((typed + 1))
      else
        untyped=$((untyped + 1))
        printf '%s: %s\n' "$(basename "${f}")" "${line}" >>"${WORK}/untyped.txt"
      fi
    done <"${f}"
  done
  echo "${typed} ${untyped}"
}

# show_untyped: prints (and forgets) the untyped lines count_errors found.
show_untyped() {
  if [[ -s ${WORK}/untyped.txt ]]; then
    sed 's/^/  UNTYPED: /' "${WORK}/untyped.txt" >&2
    : >"${WORK}/untyped.txt"
  fi
}

# error_kinds FILE...: "node_unavailable 12, engine_unavailable 3" (typed codes by count).
error_kinds() {
  cat "$@" 2>/dev/null | grep -oE "^corral: (${ERROR_CODES})" | sed 's/^corral: //' |
    sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}'
}

# -- sandboxes seen from the engine ------------------------------------------------------------

# The processes a sandbox runs when no command does: docker-init (PID 1) and the keep-alive.
is_idle_process() {
  # The agent (PID 1) and the keepers it runs each command under show as the agent itself.
  [[ $1 == "/sbin/docker-init -- sleep 2147483647" || $1 == "sleep 2147483647" ||
    $1 == "/corral/agent --socket /corral/run/agent.sock" ||
    $1 =~ ^/corral/agent\ --socket\ /corral/run/agent\.sock\ --unclaimed-limit\ [0-9]+$ ]]
}

# stray_processes ID: prints the processes of a running container other than its own init and
# keep-alive (host view, `docker top`: nothing is added by looking).
stray_processes() {
  local line args
  docker top "$1" -eo pid,args 2>/dev/null | tail -n +2 | while IFS= read -r line; do
    args=$(sed -E 's/^[[:space:]]*[0-9]+[[:space:]]+//' <<<"${line}")
    is_idle_process "${args}" || printf '%s\n' "${line}"
  done
}

# orphans_of RUNTIME LIMIT_S: waits up to LIMIT_S for every running container of RUNTIME to
# run only its init and keep-alive; prints what still runs then (one line per process).
orphans_of() {
  local runtime=$1 limit=$2 deadline id strays all
  deadline=$((SECONDS + limit))
  while :; do
    all=""
    for id in $(docker ps -q --no-trunc --filter "label=corral.runtime=${runtime}"); do
      strays=$(stray_processes "${id}")
      [[ -z ${strays} ]] || all+=$(sed "s/^/${id:0:12} /" <<<"${strays}")$'\n'
    done
    if [[ -z ${all} || ${SECONDS} -ge ${deadline} ]]; then
      printf '%s' "${all}"
      return 0
    fi
    sleep 0.5
  done
}
