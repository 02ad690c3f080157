#!/usr/bin/env bash
# The machine's own limits, the ceilings for bench/compare.sh: loopback TCP
# memory to memory (iperf3, and socat from a page-cached file to /dev/null),
# disk write with fdatasync (dd conv=fdatasync), and the CPU's speed at what
# sesscp computes per byte: XXH3-128 (xxhsum -b), SHA-256 and AES-128-GCM
# (openssl speed -evp). Medians over RUNS.
#
#   bench/limits.sh                   # RUNS=3, DISK_SIZE=1GiB, NET_SIZE=4GiB
#
# Environment: RUNS (3), DISK_SIZE (1GiB), NET_SIZE (4GiB, socat), INSTALL,
# BENCH_DIR, OUT_DIR as in compare.sh. Writes OUT_DIR/limits-latest.md and prints it.
. "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-3}
DISK_SIZE=${DISK_SIZE:-1GiB}
NET_SIZE=${NET_SIZE:-4GiB}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
disk_bytes=$(size_bytes "$DISK_SIZE")
net_bytes=$(size_bytes "$NET_SIZE")

bench_init limits
bench_install iperf3 socat xxhash openssl iproute2 || bench_log "some packages could not be installed; their rows are skipped"
: >"$W/rows"
row() { echo "| $1 | $2 | $3 |" >>"$W/rows"; bench_log "$1: $2"; }

# Loopback TCP, memory to memory: one iperf3 stream for 5 s.
if command -v iperf3 >/dev/null; then
  : >"$W/iperf"
  for _ in $(seq "$RUNS"); do
    port=$(free_port)
    iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    ip=$!; bench_track "$ip"
    wait_listen "$port"
    iperf3 -c 127.0.0.1 -p "$port" -t 5 -f m 2>/dev/null | awk '/receiver/ {print $(NF-2)}' >>"$W/iperf"
    wait "$ip" || true
  done
  row "loopback TCP, iperf3 one stream (memory to memory)" "$(median <"$W/iperf" | awk '{printf "%.0f MB/s", $1 / 8 * 1e6 / 1e6}')" "iperf3 -c 127.0.0.1 -t 5"
fi

# Loopback TCP through socat, page-cached file to /dev/null: socat's ceiling
# in compare.sh without the destination disk.
if command -v socat >/dev/null; then
  make_source "$W/net.bin" "$net_bytes"
  : >"$W/socat"
  for _ in $(seq "$RUNS"); do
    warm "$W/net.bin"
    port=$(free_port)
    socat -u -b 1048576 "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" OPEN:/dev/null &
    sp=$!; bench_track "$sp"
    wait_listen "$port"
    t0=$(now)
    socat -u -b 1048576 "OPEN:$W/net.bin,rdonly" "TCP:127.0.0.1:$port"
    wait "$sp"
    t1=$(now)
    awk -v b="$net_bytes" -v s="$(elapsed "$t0" "$t1")" 'BEGIN {printf "%.0f\n", b / s / 1e6}' >>"$W/socat"
  done
  rm -f "$W/net.bin"
  row "loopback TCP, socat -b 1M, cached file to /dev/null" "$(median <"$W/socat") MB/s" "$(human "$net_bytes")"
fi

# Disk: sequential write, then fdatasync, in the scratch directory.
: >"$W/dd"
for _ in $(seq "$RUNS"); do
  sync
  t0=$(now)
  dd if=/dev/zero of="$W/dd.bin" bs=1M count=$((disk_bytes >> 20)) conv=fdatasync status=none
  t1=$(now)
  rm -f "$W/dd.bin"
  awk -v b="$disk_bytes" -v s="$(elapsed "$t0" "$t1")" 'BEGIN {printf "%.0f\n", b / s / 1e6}' >>"$W/dd"
done
row "disk write + fdatasync ($(df -PT "$W" | awk 'NR==2 {print $2 " on " $1}'))" "$(median <"$W/dd") MB/s" "dd bs=1M count=$((disk_bytes >> 20)) conv=fdatasync"

# Hashing and encryption, one core.
if command -v xxhsum >/dev/null; then
  : >"$W/xxh"
  for _ in $(seq "$RUNS"); do
    xxhsum -b11 -i2 -B1M 2>&1 | tr '\r' '\n' | grep -a 'MB/s' | tail -1 | sed 's/.*(\s*\([0-9.]*\) MB\/s).*/\1/' >>"$W/xxh"
  done
  row "XXH3-128, one core, 1 MiB blocks (in cache)" "$(median <"$W/xxh" | awk '{printf "%.0f MB/s", $1}')" "xxhsum -b11 -B1M ($(xxhsum --version 2>&1 | awk 'NR==1 {print $2}'), Debian build)"
fi
for alg in sha256 aes-128-gcm; do
  : >"$W/ossl"
  for _ in $(seq "$RUNS"); do
    openssl speed -seconds 2 -bytes 16384 -evp "$alg" 2>/dev/null | awk 'END {v = $NF; sub(/k$/, "", v); printf "%.0f\n", v * 1000 / 1e6}' >>"$W/ossl"
  done
  row "$(echo "$alg" | tr a-z A-Z), one core, 16 KiB blocks" "$(median <"$W/ossl") MB/s" "openssl speed -evp $alg -bytes 16384 ($(openssl version | awk '{print $2}'))"
done

md=$W/limits.md
{
  echo "# Machine limits ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r); median of $RUNS; a shared, noisy machine."
  echo
  echo "| limit | median | how |"
  echo "|---|---|---|"
  cat "$W/rows"
  echo
  echo "Rerun: \`RUNS=$RUNS DISK_SIZE=$DISK_SIZE NET_SIZE=$NET_SIZE bench/limits.sh\`"
} >"$md"
mkdir -p "$OUT_DIR"
cp "$md" "$OUT_DIR/limits-latest.md"
cat "$md"
