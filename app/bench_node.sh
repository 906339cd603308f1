#!/usr/bin/env bash
# What mutual TLS costs a node and its clients, in one run on the real engine:
#   1. exec p50 embedded and through a node (`corral-stress`, one sandbox, one exec in flight);
#   2. a new client's connection: TCP, TLS, BASP handshakes and corral's hello (20 fresh
#      clients, printed by `corral-stress --node`);
#   3. what connections held in their TLS handshake cost the node (RSS and fds), for 64
#      (the handshake budget) and 300 of them.
# Usage: app/bench_node.sh [path/to/corral]   (OPS=N execs per run, default 200; the dev tools
# corral-stress and corral-fake-engine are taken from the build tree beside it)
set -euo pipefail

readonly cli=${1:-build/app/corral}
readonly stress_cli=$(dirname "$cli")/corral-stress
readonly fake_cli=$(dirname "$cli")/corral-fake-engine
readonly ops=${OPS:-200}
work=$(mktemp -d)
node=
cleanup() {
  if [[ -n $node ]]; then kill -TERM "$node" 2>/dev/null || true; wait "$node" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# -- a node with its own TLS directory ----------------------------------------------------
"$cli" node --listen 127.0.0.1:0 --name "bench-tls-$$" --tls-dir "$work/tls" \
  >"$work/out" 2>"$work/err" &
node=$!
for _ in $(seq 100); do grep -q '^listening' "$work/out" && break; sleep 0.1; done
port=$(sed -n 's/^listening 127.0.0.1:\([0-9]*\)$/\1/p' "$work/out")
[[ -n $port ]] || { cat "$work/err"; exit 1; }

# -- 3 first, on a fresh node: connections held in their handshake ------------------------
hold() {  # hold N silent|hello
  python3 - "$port" "$1" "$2" "$node" <<'PY'
import os, socket, ssl, sys, time
port, n, mode, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss():
    return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
rss0, fds0, held = rss(), fds(), []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "hello":  # a ClientHello, then silence: the node waits for our certificate
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        o = ctx.wrap_bio(inc, out)
        try:
            o.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s.sendall(out.read())
    held.append(s)
time.sleep(1.5)
rss1, fds1 = rss(), fds()
print(f"  {n} connections ({mode}): node RSS {rss0} -> {rss1} KiB "
      f"(+{(rss1 - rss0) / min(n, 64):.1f} KiB per connection it holds), "
      f"node fds {fds0} -> {fds1}")
PY
}
echo "== connections held in their TLS handshake (no certificate)"
hold 64 hello
hold 64 silent
hold 300 hello

# -- 1 and 2 ------------------------------------------------------------------------------
stress=(--keys 1 --concurrency 1 --ops "$ops" --mix exec=1)
compare() {  # compare LABEL: embedded, then through the node
  echo "== $1, embedded runtime: exec (acquire + echo), $ops ops"
  "$stress_cli" --runtime "bench-emb-$$" "${stress[@]}" | grep -E '^\| (operation|exec) '
  echo "== $1, through the node over mutual TLS: exec (acquire + echo), $ops ops"
  "$stress_cli" --tls-dir "$work/tls" --node "127.0.0.1:$port" "${stress[@]}" |
    grep -E '^\| (operation|exec) |^new client'
}
compare "real engine"

# The same against the fake engine answering at once: what corral itself adds, without the
# engine's noise.
kill -TERM "$node"; wait "$node" || true
"$fake_cli" --socket "$work/fake.sock" --latency-scale 0 2>/dev/null &
fake=$!
for _ in $(seq 50); do [[ -S $work/fake.sock ]] && break; sleep 0.1; done
export DOCKER_HOST="unix://$work/fake.sock"
"$cli" node --listen 127.0.0.1:0 --name "bench-tls-$$" --tls-dir "$work/tls" \
  >"$work/out" 2>"$work/err" &
node=$!
for _ in $(seq 100); do grep -q '^listening' "$work/out" && break; sleep 0.1; done
port=$(sed -n 's/^listening 127.0.0.1:\([0-9]*\)$/\1/p' "$work/out")
compare "fake engine (no latency)"
kill -TERM "$node"; wait "$node" || true
node=
kill -TERM "$fake"; wait "$fake" || true
