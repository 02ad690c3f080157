#!/usr/bin/env bash
# `sesscp get` against `curl -C -` and `aria2c -x 8` on the same file from a
# local nginx (loopback, no rate limit), alternating, several runs each;
# prints medians as a Markdown table. Every result is checked against the
# source's SHA-256; timings never fail the script.
#
#   bench/get.sh [SIZE_MiB=256] [RUNS=3]
#
# Needs nginx-light, curl and aria2 (scripts/deps.sh: SESSCP_TEST_DEPS).
# Note: sesscp fdatasyncs and journals as it goes; curl and aria2c do not
# sync at all, so on a slow disk sesscp pays for its crash safety here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-256}
runs=${2:-3}
bin=${SESSCP_BIN:-$root/build/sesscp}
# shellcheck source=../tests/integration/lib.sh
. "$root/tests/integration/lib.sh"
# shellcheck source=../tests/integration/url_lib.sh
. "$root/tests/integration/url_lib.sh"
TEST_NAME=bench-get
itest_init "$bin" >/dev/null
for tool in curl aria2c; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not installed (apt-get install curl aria2)" >&2; exit 1; }
done
start_nginx 4000m >/dev/null
src="$WWW/bench.bin"
gen_file "$src" $((size_mib * MiB)) bench-get
want=$(sha "$src")
url="http://127.0.0.1:$NGINX_PORT/f/bench.bin"
mkdir -p "$T/out"

# run_one TOOL: one download into an empty directory; prints wall seconds.
run_one() {
  local tool=$1 out="$T/out/bench.bin" t0 t1
  rm -rf "$T/out" && mkdir -p "$T/out"
  sync
  t0=$(now_ms)
  case $tool in
    sesscp-1) "$BIN" get "$url" -o "$out" -q ;;
    sesscp-8) "$BIN" get "$url" -o "$out" -q --connections 8 ;;
    curl) curl -s -f -C - -o "$out" "$url" ;;
    aria2c) aria2c -q -x 8 -s 8 --file-allocation=none --allow-overwrite=true -d "$T/out" -o bench.bin "$url" ;;
  esac
  t1=$(now_ms)
  [[ $(sha "$out") == "$want" ]] || { echo "bench: $tool produced a different file" >&2; exit 1; }
  echo "$(fmt_ms $((t1 - t0)))"
}

tools=(sesscp-1 sesscp-8 curl aria2c)
for tool in "${tools[@]}"; do : >"$T/$tool.times"; done
for ((r = 0; r < runs; r++)); do
  for tool in "${tools[@]}"; do run_one "$tool" >>"$T/$tool.times"; done
done
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo
echo "| ${size_mib} MiB from nginx on 127.0.0.1, median of $runs alternating runs | wall time | rate | runs (s) |"
echo "|---|---|---|---|"
declare -A label=([sesscp-1]="sesscp get (1 connection)" [sesscp-8]="sesscp get --connections 8"
  [curl]="curl -C -" [aria2c]="aria2c -x 8 -s 8")
for tool in "${tools[@]}"; do
  m=$(median <"$T/$tool.times")
  rate=$(awk -v s="$m" -v n="$size_mib" 'BEGIN { if (s > 0) printf "%.0f MiB/s", n / s; else print "-" }')
  echo "| ${label[$tool]} | $m s | $rate | $(tr '\n' ' ' <"$T/$tool.times")|"
done
echo
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); destination ${TMPDIR:-/tmp}."
