#!/usr/bin/env bash
# Runs the `dag` example (lifecycle-core/examples/dag.rs) over several sizes and seeds and prints
# a Markdown table of its summaries: the longest stop path (of the stops as they took), the
# lifecycle's shutdown (trigger to `run()` returning) and their ratio, the ratio to the sleeps
# asked for, and the same stops run serially in reverse order (fx) and all at once.
#
# Usage: scripts/bench-dag.sh [SIZES] [SEEDS]
#   e.g. scripts/bench-dag.sh "10 50 200" "1 2 3 4 5"   (the defaults)
# Exits non-zero if any run missed the target (measured > 1.05 × longest measured path + 10 ms).
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${1:-"10 50 200"}
seeds=${2:-"1 2 3 4 5"}

cargo build --release -q -p lifecycle-core --example dag
bin=target/release/examples/dag

# field NAME LINE: the value of NAME=... in a summary line.
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$2"; }

echo "| N | seed | edges | on path | longest path ms (measured stops) | lifecycle ms | ratio | within | ratio to sleeps asked | serial (fx) ms | all at once ms | trigger to first stop ms |"
echo "|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|"
missed=0
for n in $sizes; do
  for seed in $seeds; do
    line=$("$bin" --components "$n" --seed "$seed" 2>&1 >/dev/null | grep '^summary ') || true
    if ! grep -q 'exit_code=0' <<<"$line"; then
      echo "| $n | $seed | the run failed: ${line:-no summary} |"
      missed=1
      continue
    fi
    longest=$(field longest_measured_ms "$line")
    limit=$(awk -v l="$longest" 'BEGIN { printf "%.1f", l * 1.05 + 10 }')
    within=$(field within "$line")
    [ "$within" = true ] && mark=yes || { mark="**no**"; missed=1; }
    echo "| $n | $seed | $(field edges "$line") | $(field path_len "$line") | $longest | $(field measured_ms "$line") | $(field ratio "$line") | $mark | $(field nominal_ratio "$line") | $(field serial_run_ms "$line") | $(field at_once_ms "$line") | $(field first_stop_ms "$line") |"
  done
done
exit "$missed"
