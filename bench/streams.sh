#!/usr/bin/env bash
# Throughput of `sesscp send --streams N` through a link throttled per TCP
# connection: faultproxy (tests/tools) relays on loopback with --rate RATE on
# each direction of EACH connection (as per-flow shaping, or a long path
# where one TCP connection's window is the limit, caps each flow), and the
# same file goes with --streams 1, 2, 4 and 8, the stream counts alternating
# within each round, over TLS (the default) and --insecure. Wall time is from
# the sender's start to both sides' exit (handshakes and the final sync
# included); the ratio is to one stream of the same mode.
#
#   bench/streams.sh                                  # 256 MiB, 20 MB/s per connection, 3 rounds
#   SIZE=128MiB RATE=10000000 STREAMS="1 4" MODES=tls RUNS=5 bench/streams.sh
#
# Environment: SIZE (256MiB), RUNS (3), STREAMS ("1 2 4 8"), RATE (bytes/s
# per connection and direction, 20000000), MODES ("tls insecure"), CHUNK
# (--chunk-size, 1M), SESSCP_BIN, BENCH_DIR, OUT_DIR as in compare.sh.
# Writes OUT_DIR/streams-latest.md and prints it. No figure is judged.
. "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-256MiB}
RUNS=${RUNS:-3}
STREAMS=${STREAMS:-1 2 4 8}
RATE=${RATE:-20000000}
MODES=${MODES:-tls insecure}
CHUNK=${CHUNK:-1M}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
bytes=$(size_bytes "$SIZE")

bench_init streams
bench_build
proxy_bin=${SESSCP_TOOLS_DIR:-$BUILD_DIR/tests}/faultproxy
[[ -x $proxy_bin ]] || bench_die "$proxy_bin not built (scripts/build.sh builds it with the tests)"
"$BIN" keygen -o "$W/sesscp.key" >/dev/null 2>&1 || bench_die "sesscp keygen failed"
export SESSCP_KEY_FILE=$W/sesscp.key

src=$W/src.bin
dstdir=$W/dst
mkdir -p "$dstdir"
bench_log "generating $(human "$bytes") source in $W"
make_source "$src" "$bytes"

run_one() { # MODE STREAMS -> prints wall seconds
  local mode=$1 n=$2 rp port pp t0 t1
  local -a sec=()
  [[ $mode == insecure ]] && sec=(--insecure)
  "$BIN" recv --listen 127.0.0.1:0 --dir "$dstdir" --once "${sec[@]}" 2>"$W/r.log" &
  rp=$!; bench_track "$rp"
  port=$(sesscp_port "$W/r.log")
  rm -f "$W/proxy.port"
  "$proxy_bin" --listen 127.0.0.1:0 --target "127.0.0.1:$port" --port-file "$W/proxy.port" --rate "$RATE" 2>"$W/proxy.log" &
  pp=$!; bench_track "$pp"
  for _ in $(seq 200); do [[ -s $W/proxy.port ]] && break; sleep 0.05; done
  [[ -s $W/proxy.port ]] || bench_die "proxy did not start: $(cat "$W/proxy.log")"
  t0=$(now)
  "$BIN" send "$src" "127.0.0.1:$(cat "$W/proxy.port")" "${sec[@]}" --chunk-size "$CHUNK" --streams "$n" 2>"$W/s.log" || return 1
  wait "$rp" || return 1
  t1=$(now)
  kill -TERM "$pp" 2>/dev/null || true
  wait "$pp" 2>/dev/null || true
  elapsed "$t0" "$t1"
}

: >"$W/runs"
for round in $(seq "$RUNS"); do
  for mode in $MODES; do
    for n in $STREAMS; do
      rm -f "$dstdir"/* 2>/dev/null || true
      warm "$src"
      run_one "$mode" "$n" >"$W/wall" || bench_die "$mode --streams $n failed: $(tail -3 "$W/s.log" "$W/r.log" "$W/proxy.log")"
      cmp -s "$src" "$dstdir/src.bin" || bench_die "$mode --streams $n: destination differs"
      echo "$mode $n $round $(cat "$W/wall")" >>"$W/runs"
      bench_log "round $round $mode --streams $n: $(cat "$W/wall") s"
    done
  done
done

md=$W/streams.md
{
  echo "# sesscp --streams through a per-connection throttle ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(human "$bytes") file, --chunk-size $CHUNK, faultproxy on 127.0.0.1 with --rate $RATE B/s on each direction of each"
  echo "connection; median of $RUNS rounds (stream counts alternating within a round), $(nproc) cores, destination on"
  echo "$(df -PT "$W" | awk 'NR==2 {print $2}'). Wall time from the sender's start to both sides' exit."
  echo
  echo "| mode | --streams | wall s (median) | runs s | MB/s | × 1 stream | × one connection's rate |"
  echo "|---|---|---|---|---|---|---|"
  for mode in $MODES; do
    first=$(echo "$STREAMS" | awk '{print $1}')
    base=$(awk -v m="$mode" -v n="$first" '$1 == m && $2 == n {print $4}' "$W/runs" | median)
    for n in $STREAMS; do
      w=$(awk -v m="$mode" -v n="$n" '$1 == m && $2 == n {print $4}' "$W/runs" | median)
      all=$(awk -v m="$mode" -v n="$n" '$1 == m && $2 == n {printf "%s%s", sep, $4; sep=" "}' "$W/runs")
      awk -v m="$mode" -v n="$n" -v w="$w" -v all="$all" -v base="$base" -v b="$bytes" -v rate="$RATE" 'BEGIN {
        printf "| %s | %s | %s | %s | %.1f | %.2f | %.2f |\n", (m == "tls" ? "TLS 1.3" : "--insecure"), n, w, all, b / w / 1e6, base / w, b / w / rate }'
    done
  done
  echo
  echo "Rerun: \`SIZE=$SIZE RUNS=$RUNS STREAMS=\"$STREAMS\" RATE=$RATE MODES=\"$MODES\" bench/streams.sh\`"
} >"$md"
mkdir -p "$OUT_DIR"
cp "$md" "$OUT_DIR/streams-latest.md"
cat "$md"
