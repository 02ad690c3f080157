#!/usr/bin/env bash
# Goodput through a delayed, throttled link: faultproxy (tests/tools) relays
# on loopback with --latency-ms RTT/2 in each direction and --rate RATE, and
# sesscp (plaintext, default window and a wider one) and rsync (to an rsync
# daemon) move the same file through it. Goodput = file bytes / wall time
# from the sender's start to both sides' exit (so it includes the handshake
# and the final sync, a few RTTs), quoted against the throttle.
#
#   bench/latency.sh                           # RTT 0 25 100 ms, 100 MB/s, 512 MiB, 3 rounds
#   RTTS="0 50" RATE=50000000 SIZE=256MiB bench/latency.sh
#
# Environment: SIZE (512MiB), RUNS (3), RTTS (ms, "0 25 100"), RATE (bytes/s,
# 100000000), WIDE_WINDOW (the --window of the second sesscp variant, 240M),
# INSTALL, SESSCP_BIN, BENCH_DIR, OUT_DIR as in compare.sh.
# Writes OUT_DIR/latency-latest.md and prints it.
#
# What the relay models: every byte is held RTT/2 in each direction and the
# rate is capped, so every application-level round trip (acknowledgements,
# windows, request/response) costs the RTT. It terminates TCP on each side on
# loopback, so the kernel's own TCP (congestion window, receive-buffer
# autotuning) sees no delay: a real long path may do worse than this if the
# socket buffers cannot hold RATE x RTT. (netem on lo would model that, but
# it changes the loopback of every process on a shared machine.)
. "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-512MiB}
RUNS=${RUNS:-3}
RTTS=${RTTS:-0 25 100}
RATE=${RATE:-100000000}
WIDE_WINDOW=${WIDE_WINDOW:-240M}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
bytes=$(size_bytes "$SIZE")

bench_init latency
bench_install rsync time iproute2 || bench_log "some packages could not be installed"
bench_build
proxy_bin=${SESSCP_TOOLS_DIR:-$BUILD_DIR/tests}/faultproxy
[[ -x $proxy_bin ]] || bench_die "$proxy_bin not built (scripts/build.sh builds it with the tests)"
tools=(sesscp sesscp-wide)
if command -v rsync >/dev/null; then tools+=(rsync); else bench_log "skipping rsync: not installed"; fi

src=$W/src.bin
dstdir=$W/dst
mkdir -p "$dstdir"
bench_log "generating $(human "$bytes") source in $W"
make_source "$src" "$bytes"

# start_proxy TARGET_PORT RTT_MS: sets $pport (where clients connect).
start_proxy() {
  local oneway
  oneway=$(awk -v r="$2" 'BEGIN {printf "%g", r / 2}')
  rm -f "$W/proxy.port"
  "$proxy_bin" --listen 127.0.0.1:0 --target "127.0.0.1:$1" --port-file "$W/proxy.port" --once \
    --rate "$RATE" --latency-ms "$oneway" 2>"$W/proxy.log" &
  proxy_pid=$!; bench_track "$proxy_pid"
  for _ in $(seq 200); do [[ -s $W/proxy.port ]] && break; sleep 0.05; done
  pport=$(cat "$W/proxy.port") || bench_die "proxy did not start: $(cat "$W/proxy.log")"
}

run_sesscp() { # RTT WINDOW -> prints wall seconds
  local rp port t0 t1
  : >"$W/r.log" # empty before the receiver starts: never read the last run's port
  "$BIN" recv --listen 127.0.0.1:0 --dir "$dstdir" --once --insecure 2>"$W/r.log" &
  rp=$!; bench_track "$rp"
  port=$(sesscp_port "$W/r.log")
  start_proxy "$port" "$1"
  t0=$(now)
  "$BIN" send "$src" "127.0.0.1:$pport" --insecure --window "$2" 2>"$W/s.log" || return 1
  wait "$rp" || return 1
  t1=$(now)
  wait "$proxy_pid" || true
  elapsed "$t0" "$t1"
}

run_rsync() { # RTT -> prints wall seconds
  local rp port t0 t1
  port=$(free_port)
  printf 'use chroot = no\n[bench]\n  path = %s\n  read only = no\n  uid = root\n  gid = root\n' "$dstdir" >"$W/rsyncd.conf"
  rsync --daemon --no-detach --config="$W/rsyncd.conf" --address=127.0.0.1 --port="$port" 2>"$W/r.log" &
  rp=$!; bench_track "$rp"
  wait_listen "$port"
  start_proxy "$port" "$1"
  t0=$(now)
  rsync "$src" "rsync://127.0.0.1:$pport/bench/" 2>"$W/s.log" || return 1
  t1=$(now)
  wait "$proxy_pid" || true
  kill -TERM "$rp"; wait "$rp" || true
  elapsed "$t0" "$t1"
}

: >"$W/runs"
for round in $(seq "$RUNS"); do
  for rtt in $RTTS; do
    for t in "${tools[@]}"; do
      rm -f "$dstdir"/* "$dstdir"/.src.bin.* 2>/dev/null || true
      warm "$src"
      case $t in
        sesscp) run_sesscp "$rtt" 60M >"$W/wall" ;;
        sesscp-wide) run_sesscp "$rtt" "$WIDE_WINDOW" >"$W/wall" ;;
        rsync) run_rsync "$rtt" >"$W/wall" ;;
      esac || bench_die "$t at RTT $rtt failed: $(tail -3 "$W/s.log" "$W/r.log" "$W/proxy.log")"
      cmp -s "$src" "$dstdir/src.bin" || bench_die "$t at RTT $rtt: destination differs"
      echo "$t $rtt $round $(cat "$W/wall")" >>"$W/runs"
      bench_log "round $round RTT $rtt ms $t: $(cat "$W/wall") s"
    done
  done
done

label() { case $1 in sesscp) echo "sesscp --insecure (default --window 60M)" ;; sesscp-wide) echo "sesscp --insecure --window $WIDE_WINDOW" ;;
  rsync) echo "rsync → rsyncd" ;; esac; }
md=$W/latency.md
{
  echo "# Goodput through a delayed, throttled link ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(human "$bytes") file, faultproxy on 127.0.0.1 with --rate $RATE B/s and --latency-ms RTT/2 each way; median of $RUNS rounds,"
  echo "$(nproc) cores, destination on $(df -PT "$W" | awk 'NR==2 {print $2}'). Goodput = file bytes / wall time (handshake and final sync included)."
  echo
  echo "| tool | RTT ms | wall s | goodput MB/s | × throttle | time beyond size/rate, in RTTs |"
  echo "|---|---|---|---|---|---|"
  for t in "${tools[@]}"; do
    for rtt in $RTTS; do
      w=$(awk -v t="$t" -v r="$rtt" '$1 == t && $2 == r {print $4}' "$W/runs" | median)
      awk -v l="$(label "$t")" -v rtt="$rtt" -v w="$w" -v b="$bytes" -v rate="$RATE" 'BEGIN {
        extra = w - b / rate
        printf "| %s | %s | %s | %.0f | %.2f | %s |\n", l, rtt, w, b / w / 1e6, b / w / rate, (rtt > 0 ? sprintf("%.1f", extra / (rtt / 1000)) : "-") }'
    done
  done
  echo
  echo "The time at full throttle alone (size/rate) is $(awk -v b="$bytes" -v r="$RATE" 'BEGIN {printf "%.2f", b / r}') s. The last column is the"
  echo "rest of the wall time counted in round trips: a fixed start-up and finish cost (handshake, resume agreement,"
  echo "final sync) shows as a few RTTs whatever the size; a window that cannot fill the pipe shows as a number"
  echo "that grows with the size."
  echo "Rerun: \`SIZE=$SIZE RUNS=$RUNS RTTS=\"$RTTS\" RATE=$RATE bench/latency.sh\`"
} >"$md"
mkdir -p "$OUT_DIR"
cp "$md" "$OUT_DIR/latency-latest.md"
cat "$md"
