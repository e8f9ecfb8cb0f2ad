#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 10 million), seeded
# from seeds/<target>, two targets at a time, and prints each summary line.
#   fuzz/run-all.sh [RUNS]          # from the repository's root
#   TARGETS="bot_tcp bot_udp" fuzz/run-all.sh   # some of them
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
targets=(${TARGETS:-http_request http_response bot_tcp bot_udp reverse probe_ok units bot_script})
# Inputs longer than this teach the bot targets nothing new (a conversation
# is short) and make each run slower; the others take libFuzzer's default.
max_len() { case $1 in bot_tcp|bot_udp) echo "-max_len=256" ;; *) echo "" ;; esac; }
# The protocols crate has no unsafe code, so the three bot targets (the slowest)
# run with LeakSanitizer alone, about twice as fast as under AddressSanitizer;
# the others keep AddressSanitizer (which includes LeakSanitizer).
sanitizer() { case $1 in bot_tcp|bot_udp|bot_script) echo "leak" ;; *) echo "address" ;; esac; }
# One build directory per sanitizer, so the builds never replace each
# other's binaries (or one that is running).
build() { cargo +nightly fuzz build -O -s "$1" --target-dir "target/$1"; }
build address
build leak
run() {
  local t=$1
  mkdir -p "corpus/$t"
  local started=$SECONDS
  local s
  s=$(sanitizer "$t")
  if cargo +nightly fuzz run -O -s "$s" --target-dir "target/$s" "$t" "corpus/$t" "seeds/$t" -- \
      -runs="$runs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 $(max_len "$t") \
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
