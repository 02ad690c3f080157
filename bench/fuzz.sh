#!/usr/bin/env bash
# Run every fuzz target for longer than the default (scripts/fuzz.sh) and
# print the figures as a Markdown table.
#
#   bench/fuzz.sh                         # 600 s per target
#   SESSCP_FUZZ_SECONDS=3600 bench/fuzz.sh
#
# Exits with scripts/fuzz.sh's status: non-zero if a target crashed (the
# crashing input's path is in the output above the table).
set -uo pipefail
cd "$(dirname "$0")/.."
export SESSCP_FUZZ_SECONDS=${SESSCP_FUZZ_SECONDS:-600}

out=$(mktemp "${TMPDIR:-/tmp}/sesscp-bench-fuzz.XXXXXX")
trap 'rm -f "$out"' EXIT
bash scripts/fuzz.sh "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}

echo
echo "| target | executions | seconds | execs/s | crashes |"
echo "|---|---:|---:|---:|---:|"
# Lines look like: fuzz fuzz_frame: 1234 execs in 60 s, 0 crashes
sed -n 's/^fuzz \([a-z_]*\): \([0-9]*\) execs in \([0-9]*\) s, \([0-9]*\) crashes$/\1 \2 \3 \4/p' "$out" |
  sort -u -k1,1 |
  while read -r target execs secs crashes; do
    rate=$(awk -v e="$execs" -v s="$secs" 'BEGIN { printf "%.0f", s > 0 ? e / s : 0 }')
    echo "| $target | $execs | $secs | $rate | $crashes |"
  done
exit "$rc"
