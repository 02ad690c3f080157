#!/usr/bin/env bash
# Measure sesscp on loopback: full-transfer throughput, peak RSS of each side,
# and bytes re-sent after a kill -9 of the sender and of the receiver at 50%.
# Prints a Markdown table; medians over RUNS runs.
#
#   bench/transfer.sh [SIZE_MiB=4096] [RUNS=3]
# Uses build/sesscp (scripts/build.sh builds it). Needs /usr/bin/time (Debian: time).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-4096}
runs=${2:-3}
bin=${SESSCP_BIN:-build/sesscp}
[ -x "$bin" ] || { echo "bench: $bin not built (run scripts/build.sh)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sesscp-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_kib=$(df -Pk "$work" | awk 'NR==2 {print $4}')
if (( free_kib < size_mib * 1024 * 3 )); then echo "bench: need $((size_mib * 3)) MiB free in $work" >&2; exit 1; fi

# Sessions use TLS 1.3 with a shared key, as users run them.
"$bin" keygen -o "$work/key" >/dev/null 2>&1
export SESSCP_KEY_FILE=$work/key

src=$work/src.bin
echo "generating ${size_mib} MiB source..." >&2
{ openssl enc -aes-128-ctr -pass pass:sesscp-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } | head -c $((size_mib << 20)) >"$src"
size=$(stat -c %s "$src")

# start_receiver LOG -> sets $rpid and $port
start_receiver() {
  : >"$1" # empty before the receiver starts: never read the last run's port
  "$bin" recv --listen 127.0.0.1:0 --dir "$work/dst" 2>"$1" &
  rpid=$!
  pids+=("$rpid")
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1")
    [ -n "$port" ] && return 0
    sleep 0.05
  done
  echo "bench: receiver did not start" >&2; exit 1
}
# Peak RSS of the receiver (VmHWM), read just before it is stopped.
receiver_rss() { awk '/VmHWM/ {print $2}' "/proc/$rpid/status"; }
stop_receiver() { kill -TERM "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.*, \([0-9]*\) bytes $1.*/\1/p" "$2" | tail -1; }

mkdir -p "$work/dst"
: >"$work/secs"; : >"$work/srss"; : >"$work/rrss"
for i in $(seq "$runs"); do
  rm -f "$work/dst"/*
  sync
  start_receiver "$work/r$i.log"
  /usr/bin/time -f "%e %M" -o "$work/s$i.time" "$bin" send "$src" "127.0.0.1:$port" 2>"$work/s$i.log"
  receiver_rss >>"$work/rrss"
  stop_receiver
  cmp -s "$src" "$work/dst/src.bin" || { echo "bench: run $i result differs" >&2; exit 1; }
  read -r secs srss <"$work/s$i.time"
  echo "$secs" >>"$work/secs"; echo "$srss" >>"$work/srss"
done
secs=$(median <"$work/secs")
mbps=$(awk -v b="$size" -v s="$secs" 'BEGIN {printf "%.0f", b / s / 1e6}')

# Kill at 50%: throttle so the kill lands, then resume unthrottled.
resend_after_kill() { # $1 = sender|receiver
  rm -f "$work/dst"/*
  start_receiver "$work/k.log"
  "$bin" send "$src" "127.0.0.1:$port" --bwlimit 400M 2>"$work/k1.log" &
  local spid=$!
  pids+=("$spid")
  for _ in $(seq 1200); do
    local have
    have=$(stat -c %s "$work/dst/src.bin.sesscp.part" 2>/dev/null || echo 0)
    (( have >= size / 2 )) && break
    sleep 0.05
  done
  if [ "$1" = sender ]; then
    kill -9 "$spid"
    wait "$spid" 2>/dev/null || true
  else
    kill -9 "$rpid"
    wait "$rpid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true # exits 75 on its own
    start_receiver "$work/k2.log"
  fi
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" send "$src" "127.0.0.1:$port" 2>"$work/k3.log"
  t1=$(date +%s.%N)
  stop_receiver
  cmp -s "$src" "$work/dst/src.bin" || { echo "bench: resumed result differs" >&2; exit 1; }
  local first second resumed
  resumed=$(sed -n 's/.*resumed at \([0-9]*\),.*/\1/p' "$work/k3.log" | tail -1)
  second=$(field sent "$work/k3.log")
  if [ "$1" = sender ]; then
    # The receiver survived: total received by it minus the file.
    first=$(grep -h 'recv src.bin' "$work/k.log" | sed -n 's/.*, \([0-9]*\) bytes received.*/\1/p' | awk '{s+=$1} END {printf "%.0f", s}')
    echo "$1 $resumed $(( first - size )) $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
  else
    first=$(field sent "$work/k1.log")
    echo "$1 $resumed $(( first + second - size )) $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
  fi
}
s_kill=$(resend_after_kill sender)
r_kill=$(resend_after_kill receiver)

echo
echo "| measure ($(nproc) cores, ${size_mib} MiB file, loopback, median of $runs) | value |"
echo "|---|---|"
echo "| full transfer wall time | ${secs} s |"
echo "| throughput (data fdatasync'ed and journaled) | ${mbps} MB/s |"
echo "| peak RSS sender | $(median <"$work/srss") KiB |"
echo "| peak RSS receiver | $(median <"$work/rrss") KiB |"
read -r _ res rs t <<<"$s_kill"
echo "| kill -9 sender at 50%: resumed at / bytes re-sent / completing run | $res / $rs / ${t} s |"
read -r _ res rs t <<<"$r_kill"
echo "| kill -9 receiver at 50%: resumed at / bytes re-sent / completing run | $res / $rs / ${t} s |"
