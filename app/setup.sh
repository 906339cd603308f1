#!/usr/bin/env bash
# Prepare a Debian 12 machine to build and test corral: packages, a running Docker
# engine (no bridge networking) and the default sandbox image corral/sandbox:busybox.
# Idempotent; when everything is in place it only checks and returns (well under 2 s).
# Run as root (root is needed only when something has to be installed or started).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
cd "${ROOT}"

readonly PACKAGES=(
  cmake ninja-build g++ ccache pkg-config git
  clang libclang-rt-14-dev # tests/fuzz.sh: libFuzzer (GCC's sanitizers come with g++)
  clang-format             # tests/format_check.sh
  clang-tidy               # tests/tidy_check.sh
  libcaf-dev libboost-dev libsimdjson-dev libspdlog-dev catch2 libcli11-dev
  libacl1-dev # workspaces on a remapped engine: ACL entries for the sandbox's host uid
  docker.io busybox-static gnuplot-nox openssl procps
)
readonly IMAGE=corral/sandbox:busybox
readonly BUSYBOX=/bin/busybox # from busybox-static
readonly DOCKERD_LOG=/var/log/corral-dockerd.log
readonly DOCKER_PIDFILE=/var/run/docker.pid
readonly CONTAINERD_PIDFILE=/var/run/docker/containerd/containerd.pid
readonly ENGINE_WAIT_SECONDS=60
# The engine setup starts: no bridge; user namespaces remapped, so a sandbox's root (and every
# uid of it) is a host uid of no host user; live-restore, so an engine restart leaves sandboxes
# and their agents running (commands keep their deadlines; see README, "Security defaults").
readonly DOCKERD_FLAGS=(--bridge=none --iptables=false --userns-remap=default --live-restore)
# The pid of the dockerd this script started: only that one it may restart (to remap it).
readonly SETUP_DOCKERD_PIDFILE=/run/corral/setup-dockerd.pid

START_NS=$(date +%s%N)

log() { printf '[corral-setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { printf '%d ms' $((($(date +%s%N) - START_NS) / 1000000)); }
need_root() { [[ ${EUID} -eq 0 ]] || die "$1 needs root (run as root)"; }

# Callbacks run on exit (temporary files, throw-away containers, apt policy).
CLEANUPS=()
cleanup() {
  local c
  for c in "${CLEANUPS[@]}"; do eval "$c" || true; done
}
trap cleanup EXIT

# One setup at a time (two builds started together must not start two engines).
# The lock fd is closed for dockerd so the daemon does not hold the lock.
LOCKFILE="${CORRAL_SETUP_LOCK:-/tmp/corral-setup.lock}"
if (: 2>/dev/null >>"${LOCKFILE}"); then
  exec 9>>"${LOCKFILE}"
  if ! flock -n 9; then
    log "waiting for another corral setup to finish (lock ${LOCKFILE})"
    flock -w 600 9 || die "could not get the setup lock ${LOCKFILE}"
  fi
else
  log "WARNING: cannot open the lock file ${LOCKFILE}; running without it"
fi

# ---------------------------------------------------------------------------
# 1. Packages
# ---------------------------------------------------------------------------
ensure_packages() {
  local -A installed=()
  local name status p
  while IFS=$'\t' read -r name status; do
    [[ ${status} == *" ok installed" ]] && installed["${name}"]=1
  done < <(dpkg-query -W -f='${Package}\t${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)

  local missing=()
  for p in "${PACKAGES[@]}"; do
    [[ -n ${installed["${p}"]:-} ]] || missing+=("${p}")
  done
  if ((${#missing[@]} == 0)); then
    log "packages: all ${#PACKAGES[@]} installed"
    return
  fi

  need_root "installing packages (${missing[*]})"
  log "packages: installing ${missing[*]}"
  # Keep maintainer scripts from starting services (docker.io would start an engine
  # with the default bridge network); we start the engine ourselves below.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    CLEANUPS+=("rm -f /usr/sbin/policy-rc.d")
  fi
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  apt-get -o DPkg::Lock::Timeout=300 update
  apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}"
  log "packages: installed (at $(elapsed))"
}

# ---------------------------------------------------------------------------
# 2. Docker engine
# ---------------------------------------------------------------------------
ENGINE_VERSION=""
engine_answers() {
  ENGINE_VERSION=$(timeout 15 docker info --format '{{.ServerVersion}}' 2>/dev/null) &&
    [[ -n ${ENGINE_VERSION} ]]
}

pid_is() { # pid_is PID NAME: is PID a live process whose command is NAME?
  [[ $1 =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]
}

dockerd_tail_and_die() {
  log "last 40 lines of ${DOCKERD_LOG}:"
  tail -n 40 "${DOCKERD_LOG}" >&2 || true
  die "$1"
}

wait_for_engine() { # wait_for_engine PID-or-empty
  local pid=$1 deadline=$((SECONDS + ENGINE_WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    if [[ -S /var/run/docker.sock ]] && engine_answers; then
      return 0
    fi
    if [[ -n ${pid} ]] && ! kill -0 "${pid}" 2>/dev/null; then
      dockerd_tail_and_die "dockerd (pid ${pid}) exited during start-up"
    fi
    sleep 0.2
  done
  dockerd_tail_and_die "the Docker engine did not answer within ${ENGINE_WAIT_SECONDS} s"
}

engine_remaps() {
  timeout 15 docker info --format '{{json .SecurityOptions}}' 2>/dev/null | grep -q 'name=userns'
}

# An engine this script started without remapping (its pid in SETUP_DOCKERD_PIDFILE, or the
# exact command line an older version of this script used) is restarted with DOCKERD_FLAGS; one
# started by anyone else is left as it is, and said to be unremapped.
remap_or_warn() {
  engine_remaps && return 0
  local running ours="" cmdline
  running=$(pgrep -x dockerd | head -n 1 || true)
  [[ -n ${running} ]] || return 0
  cmdline=$(tr '\0' ' ' <"/proc/${running}/cmdline" 2>/dev/null || true)
  # docker info failed or said nothing: the flags on the daemon's command line decide.
  [[ ${cmdline} == *--userns-remap* ]] && return 0
  [[ -r ${SETUP_DOCKERD_PIDFILE} ]] && ours=$(cat "${SETUP_DOCKERD_PIDFILE}")
  if [[ ${running} == "${ours}" || ${cmdline} == "dockerd --bridge=none --iptables=false " ]]; then
    need_root "restarting dockerd with user-namespace remapping"
    log "engine: dockerd (pid ${running}, started by this script) does not remap user namespaces; restarting it with ${DOCKERD_FLAGS[*]}"
    kill -TERM "${running}"
    local deadline=$((SECONDS + ENGINE_WAIT_SECONDS))
    while kill -0 "${running}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -0 "${running}" 2>/dev/null && die "dockerd (pid ${running}) did not stop within ${ENGINE_WAIT_SECONDS} s"
    rm -f "${SETUP_DOCKERD_PIDFILE}"
    start_dockerd
    return 0
  fi
  log "WARNING: the engine does not remap user namespaces (dockerd was not started by this script):"
  log "  uid 0 in a sandbox is the host's root for every file it reaches through a mount, and a"
  log "  node whose policy allows rw workspaces or root refuses to start. Restart dockerd with"
  log "  ${DOCKERD_FLAGS[*]}"
}

start_dockerd() {
  local pid
  log "engine: starting dockerd ${DOCKERD_FLAGS[*]} (log ${DOCKERD_LOG})"
  mkdir -p "$(dirname "${DOCKERD_LOG}")" "$(dirname "${SETUP_DOCKERD_PIDFILE}")"
  printf '\n===== %s corral setup starts dockerd =====\n' "$(date -Is)" >>"${DOCKERD_LOG}"
  # New session (setsid) and ignored SIGHUP (nohup): the daemon outlives this script
  # and its caller's process group; no fd of ours (stdio, lock) stays open in it.
  setsid nohup dockerd "${DOCKERD_FLAGS[@]}" \
    </dev/null >>"${DOCKERD_LOG}" 2>&1 9>&- &
  pid=$!
  disown "${pid}" 2>/dev/null || true
  echo "${pid}" >"${SETUP_DOCKERD_PIDFILE}"
  wait_for_engine "${pid}"
  log "engine: Docker ${ENGINE_VERSION} started (pid ${pid}, at $(elapsed))"
}

ensure_engine() {
  if engine_answers; then
    log "engine: Docker ${ENGINE_VERSION} answers"
    remap_or_warn
  else
    if [[ -n ${DOCKER_HOST:-} && ${DOCKER_HOST} != unix:///var/run/docker.sock && ${DOCKER_HOST} != unix:///run/docker.sock ]]; then
      die "DOCKER_HOST=${DOCKER_HOST} does not answer (not starting a local engine for a remote host)"
    fi
    need_root "starting dockerd"
    command -v dockerd >/dev/null || die "dockerd not found (is docker.io installed?)"

    local running pid=""
    running=$(pgrep -x dockerd || true)
    if [[ -n ${running} ]]; then
      # A daemon is there but not (yet) answering: maybe still starting. Do not start a second.
      log "engine: dockerd already running (pid ${running//$'\n'/ }) but not answering; waiting up to ${ENGINE_WAIT_SECONDS} s"
      wait_for_engine ""
    else
      # Leftovers of a daemon that died: a stale pid file makes dockerd refuse to start,
      # and a containerd pid file pointing at a recycled pid makes it wait for nothing.
      if [[ -e ${DOCKER_PIDFILE} ]]; then
        log "engine: removing stale ${DOCKER_PIDFILE} (pid $(cat "${DOCKER_PIDFILE}" 2>/dev/null || echo '?'), no dockerd running)"
        rm -f "${DOCKER_PIDFILE}"
      fi
      if [[ -e ${CONTAINERD_PIDFILE} ]] && ! pid_is "$(cat "${CONTAINERD_PIDFILE}" 2>/dev/null)" containerd; then
        log "engine: removing stale ${CONTAINERD_PIDFILE}"
        rm -f "${CONTAINERD_PIDFILE}"
      fi
      # A containerd left by a previous dockerd (its pid file is valid) is reused by dockerd.

      start_dockerd
    fi
  fi
  if [[ -e /sys/class/net/docker0 ]]; then
    log "WARNING: a docker0 bridge exists; corral's containers must use network mode none"
  fi
}

# ---------------------------------------------------------------------------
# 3. Sandbox image. The text of these two functions is part of the recipe hash:
#    any change to them (or to busybox) rebuilds the image.
# ---------------------------------------------------------------------------
image_recipe_rootfs() { # image_recipe_rootfs DIR
  local root=$1 applet
  mkdir -p "${root}"/{bin,etc,tmp,workspace,proc,sys,dev,root,home,usr}
  cp "${BUSYBOX}" "${root}/bin/busybox"
  chmod 755 "${root}/bin/busybox"
  while read -r applet; do
    [[ -n ${applet} && ${applet} != busybox ]] || continue
    ln -s busybox "${root}/bin/${applet}"
  done < <("${BUSYBOX}" --list)
  # /usr/bin/env and friends: merged-/usr style links to /bin.
  ln -s ../bin "${root}/usr/bin"
  ln -s ../bin "${root}/usr/sbin"
  ln -s bin "${root}/sbin"
  cat >"${root}/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/workspace:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"${root}/etc/group" <<'EOF'
root:x:0:
sandbox:x:1000:
nogroup:x:65534:
EOF
  chmod 644 "${root}/etc/passwd" "${root}/etc/group"
  chmod 755 "${root}" "${root}"/{bin,etc,workspace,proc,sys,dev,home,usr}
  chmod 700 "${root}/root"
  chmod 1777 "${root}/tmp"
  chown 1000:1000 "${root}/workspace"
}

image_recipe_import() { # image_recipe_import DIR RECIPE-HASH
  tar --numeric-owner --sort=name -C "$1" -c . |
    docker import \
      -c 'ENV PATH=/bin:/usr/bin' \
      -c 'USER 1000:1000' \
      -c 'WORKDIR /workspace' \
      -c "LABEL corral.image.recipe=$2" \
      - "${IMAGE}"
}

recipe_hash() {
  local usage version applets
  usage=$("${BUSYBOX}" 2>&1 || true)
  version=${usage%%$'\n'*} # "BusyBox v1.35.0 (Debian ...) multi-call binary."
  applets=$("${BUSYBOX}" --list)
  printf '%s\n' "$(declare -f image_recipe_rootfs image_recipe_import)" "${version}" "${applets}" |
    sha256sum | cut -d' ' -f1
}

IMAGE_ID=""
ensure_image() {
  [[ -x ${BUSYBOX} ]] || die "${BUSYBOX} not found (is busybox-static installed?)"
  local want have old_id
  want=$(recipe_hash)
  have=$(docker image inspect -f '{{.Id}} {{index .Config.Labels "corral.image.recipe"}}' "${IMAGE}" 2>/dev/null || true)
  old_id=${have%% *}
  local old_recipe=${have#* }
  if [[ -n ${have} && ${old_recipe} == "${want}" ]]; then
    IMAGE_ID=${old_id}
    log "image: ${IMAGE} is up to date (recipe ${want:0:12})"
    return
  fi
  if [[ -z ${have} ]]; then
    log "image: ${IMAGE} missing; building (recipe ${want:0:12})"
  else
    log "image: ${IMAGE} has recipe '${old_recipe:0:12}', want ${want:0:12}; rebuilding"
  fi
  need_root "building ${IMAGE} (files owned by uid 0 and 1000)"

  local t0 tmp
  t0=$(date +%s%N)
  tmp=$(mktemp -d /tmp/corral-rootfs.XXXXXX)
  CLEANUPS+=("rm -rf '${tmp}'")
  image_recipe_rootfs "${tmp}/rootfs"
  image_recipe_import "${tmp}/rootfs" "${want}" >/dev/null
  IMAGE_ID=$(docker image inspect -f '{{.Id}}' "${IMAGE}")

  # Verify: the image runs, as the sandbox user, without a network.
  local name="corral-setup-verify-$$" uid
  CLEANUPS+=("docker rm -f '${name}' >/dev/null 2>&1")
  if ! uid=$(timeout 60 docker run --rm --name "${name}" --network none "${IMAGE}" id -u 2>&1) ||
    [[ ${uid} != 1000 ]]; then
    docker rm -f "${name}" >/dev/null 2>&1 || true
    docker rmi -f "${IMAGE}" >/dev/null 2>&1 || true # do not leave a broken image that looks current
    die "image check failed: 'docker run ${IMAGE} id -u' gave '${uid}', expected 1000"
  fi
  docker rm -f "${name}" >/dev/null 2>&1 || true

  # Drop the image this one replaces, unless something still uses it.
  if [[ -n ${old_id} && ${old_id} != "${IMAGE_ID}" ]]; then
    docker rmi "${old_id}" >/dev/null 2>&1 || true
  fi
  log "image: built and checked ${IMAGE} ${IMAGE_ID:7:12} in $((($(date +%s%N) - t0) / 1000000)) ms"
}

ensure_packages
ensure_engine
ensure_image
log "ready: Docker ${ENGINE_VERSION}, image ${IMAGE} ${IMAGE_ID}, in $(elapsed)"
