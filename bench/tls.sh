#!/usr/bin/env bash
# What TLS costs: the same file sent plaintext (--insecure) and with TLS 1.3
# (shared key), alternating, several runs each, medians and the ratio.
# Destination on tmpfs by default so the disk's fdatasync does not hide the
# CPU cost of encryption (set DEST_PARENT=/var/tmp to include the disk).
#
#   bench/tls.sh [SIZE_MiB=2048] [RUNS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
runs=${2:-5}
bin=${SESSCP_BIN:-build/sesscp}
[ -x "$bin" ] || { echo "bench: $bin not built (run scripts/build.sh)" >&2; exit 1; }
parent=${DEST_PARENT:-/dev/shm}
work=$(mktemp -d "$parent/sesscp-tls.XXXXXX")
rpid=""
cleanup() { [ -n "$rpid" ] && kill -9 "$rpid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

src=$work/src.bin
{ openssl enc -aes-128-ctr -pass pass:sesscp-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } | head -c $((size_mib << 20)) >"$src"
size=$(stat -c %s "$src")
"$bin" keygen -o "$work/key" >/dev/null 2>&1
mkdir -p "$work/dst"

run_one() { # $1 = insecure|tls ; prints seconds
  local sec=(--insecure)
  [ "$1" = tls ] && sec=(--key-file "$work/key")
  rm -f "$work/dst"/*
  : >"$work/r.log" # empty before the receiver starts: never read the last run's port
  "$bin" recv --listen 127.0.0.1:0 --dir "$work/dst" --once "${sec[@]}" 2>"$work/r.log" &
  rpid=$!
  local port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/r.log")
    [ -n "$port" ] && break
    sleep 0.05
  done
  /usr/bin/time -f "%e %U %S" -o "$work/t" "$bin" send "$src" "127.0.0.1:$port" "${sec[@]}" -v 2>"$work/s.log"
  wait "$rpid"; rpid=""
  cmp -s "$src" "$work/dst/src.bin" || { echo "bench: $1 result differs" >&2; exit 1; }
  grep -q 'kernel TLS offload' "$work/s.log" && echo on >"$work/ktls"
  cat "$work/t"
}

: >"$work/plain"; : >"$work/tls"; echo off >"$work/ktls"
for _ in $(seq "$runs"); do
  run_one insecure >>"$work/plain"
  run_one tls >>"$work/tls"
done
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
p=$(cut -d' ' -f1 <"$work/plain" | median)
t=$(cut -d' ' -f1 <"$work/tls" | median)
pc=$(awk '{print $2+$3}' "$work/plain" | median)
tc=$(awk '{print $2+$3}' "$work/tls" | median)
kmod=absent
[ -d /sys/module/tls ] && kmod=loaded
echo
echo "| ${size_mib} MiB to $parent, median of $runs alternating runs | plaintext (--insecure) | TLS 1.3 (PSK, AES-128-GCM) |"
echo "|---|---|---|"
echo "| wall time | ${p} s | ${t} s |"
echo "| throughput | $(awk -v b="$size" -v s="$p" 'BEGIN {printf "%.0f", b/s/1e6}') MB/s | $(awk -v b="$size" -v s="$t" 'BEGIN {printf "%.0f", b/s/1e6}') MB/s |"
echo "| sender CPU seconds | ${pc} | ${tc} |"
echo "| TLS / plaintext throughput | | $(awk -v p="$p" -v t="$t" 'BEGIN {printf "%.2f", p/t}') |"
echo "| kernel TLS module / kTLS send in use | $kmod | $(cat "$work/ktls") |"
