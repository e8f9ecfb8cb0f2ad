#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 10 million), seeded
# from seeds/<target>, two targets at a time, and prints each summary line.
#   fuzz/run-all.sh [RUNS]          # from the repository's root
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
targets=(http_request http_response bot_tcp bot_udp reverse probe_ok units bot_script)
cargo +nightly fuzz build -O
run() {
  local t=$1
  mkdir -p "corpus/$t"
  local started=$SECONDS
  if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -runs="$runs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      > "logs/$t.log" 2>&1; then
    echo "$t: $(grep -m1 '^Done' "logs/$t.log"), $((SECONDS - started)) s"
  else
    echo "$t: FAILED, see fuzz/logs/$t.log"; return 1
  fi
}
mkdir -p logs
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" & a=$!
  if ((i + 1 < ${#targets[@]})); then run "${targets[i + 1]}" & b=$!; else b=; fi
  wait $a || status=1
  if [ -n "$b" ]; then wait $b || status=1; fi
done
exit $status
