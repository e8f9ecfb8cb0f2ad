#!/usr/bin/env bash
# Two ringcore binaries side by side on TCP echo, 64 B x 50 connections,
# closed loop: requests/s and the server's CPU time per request (user +
# system, from /proc/PID/stat around each run). Server on CPU 0 (one
# worker), loadgen on CPU 1; rounds alternate A B, then B A.
#
#   benches/ab-echo.sh BASE_RINGCORE NEW_RINGCORE [ROUNDS]
#
# AB_QUICK=1 runs one round of one-second runs (a smoke run).
#
# Build the base from another commit with, for example:
#   git worktree add /tmp/base REV && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release)
set -euo pipefail
quick=${AB_QUICK:-0}
base=$1 new=$2 rounds=${3:-$([ "$quick" = 1 ] && echo 1 || echo 3)}
seconds=$([ "$quick" = 1 ] && echo 1 || echo 5)
here="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --quiet --release -p loadgen --manifest-path "$here/Cargo.toml"
loadgen="$here/target/release/loadgen"
hz=$(getconf CLK_TCK)
port=16543
run() {
  taskset -c 0 "$1" --threads 1 --serve "tcp:$port=echo" > /dev/null 2>&1 &
  local pid=$!
  # Wait until it listens.
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  local t0 t1 json
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  json=$(taskset -c 1 "$loadgen" --tcp "127.0.0.1:$port" --connections 50 --size 64 --duration "${seconds}s" --json 2>/dev/null)
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  JSON="$json" python3 -c "
import json, os
d = json.loads(os.environ['JSON'])
n = d['completed']
print(f\"{n / 5:.0f} req/s, {($t1 - $t0) / $hz * 1e6 / max(n, 1):.3f} us CPU/req\")"
}
for round in $(seq "$rounds"); do
  if (( round % 2 )); then order="base new"; else order="new base"; fi
  for side in $order; do
    if [[ $side == base ]]; then bin=$base; else bin=$new; fi
    echo "round $round $side $(run "$bin")"
  done
done
