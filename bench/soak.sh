#!/usr/bin/env bash
# Reliability soak: hundreds of seeded fault trials (tests/integration/
# test_fault_trials.sh: kill -9 of either side, receiver restart under
# --retry, connection cut in either direction, stall, bit flip), then prints
# the table for docs/RELIABILITY.md: trials per fault kind, failures, worst
# and mean bytes re-sent, worst time to detect a stalled peer.
#
#   bench/soak.sh [TRIALS=500] [SEED=20261125]
#
# Every trial uses a fresh receiver, sender and proxy on 127.0.0.1; a failed
# trial prints its kind and seed (rerun it alone with SESSCP_FAULT_SEED=S SESSCP_FAULT_KINDS=K
# SESSCP_FAULT_TRIALS=1 bash tests/integration/test_fault_trials.sh build/sesscp).
# About 1.5 s per trial on a 2-core machine (stall trials ~3.5 s).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
trials=${1:-500}
seed=${2:-20261125}
bin=${SESSCP_BIN:-$root/build/sesscp}
[[ -x $bin ]] || bin=$(bash "$root/scripts/build.sh" | tail -n 1)
export SESSCP_TOOLS_DIR=${SESSCP_TOOLS_DIR:-$(dirname "$bin")/tests}

results=$(mktemp "${TMPDIR:-/tmp}/sesscp-soak.XXXXXX")
trap 'rm -f "$results"' EXIT
# Run copies of the trial script and lib.sh: editing the checkout during a
# long soak must not change the script bash is reading.
sdir=$(mktemp -d "${TMPDIR:-/tmp}/sesscp-soak-scripts.XXXXXX")
cp "$root/tests/integration/test_fault_trials.sh" "$root/tests/integration/lib.sh" "$sdir/"
trap 'rm -rf "$results" "$sdir"' EXIT
start=$(date +%s)
rc=0
SESSCP_FAULT_TRIALS=$trials SESSCP_FAULT_SEED=$seed SESSCP_FAULT_RESULTS=$results \
  bash "$sdir/test_fault_trials.sh" "$bin" >"$results.log" 2>&1 || rc=$?
secs=$(($(date +%s) - start))
total=$(wc -l <"$results")
fails=$(grep -c '^FAIL' "$results" || true)

echo "## Fault soak: $total trials from seed $seed, $(date -u +%Y-%m-%d), $(nproc) cores, ${secs} s"
echo
grep -E '^    \|' "$results.log" | sed 's/^    //' || echo "(no table: see $results.log)"
echo
echo "Failures: $fails of $total (test exit $rc)."
if ((fails > 0)); then
  grep '^FAIL' "$results"
  echo "Log: $results.log"
  trap - EXIT
  exit 1
fi
rm -f "$results.log"
