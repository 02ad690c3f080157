#!/usr/bin/env bash
# sesscp against the usual tools, on loopback, in one run: the same file moved
# by socat (raw pipe: the practical limit), rsync (to an rsync daemon), curl
# and aria2c (downloading from nginx), and sesscp plaintext and TLS. Tools
# alternate within each round, RUNS rounds, medians quoted. Per tool: wall
# time, throughput, CPU seconds and peak RSS of each side, ratios to socat and
# to sesscp plaintext, and the time an fsync of the destination takes after
# the tool exits (what the tools that do not sync leave to the kernel).
#
#   bench/compare.sh                      # 4 GiB, 3 rounds
#   SIZE=1GiB RUNS=5 bench/compare.sh
#
# Environment:
#   SIZE       file size (default 4GiB; K/M/G suffixes, powers of 1024)
#   RUNS       rounds (default 3)
#   TOOLS      tools to run, space-separated (default: socat rsync curl aria2c sesscp-plain sesscp-tls)
#   INSTALL    1 (default) installs missing Debian packages via scripts/deps.sh; 0 runs what is installed
#   SESSCP_BIN use this binary instead of building with scripts/build.sh
#   BASE_BIN   a second sesscp binary (an older build) to compare with in the
#              same rounds: adds the tools base-plain and base-tls, and per-round
#              ratios of sesscp to it (a same-run A/B)
#   BENCH_DIR  parent of the scratch dir: source and destination (default /var/tmp; must be a real disk)
#   OUT_DIR    where the Markdown table and PNG go (default bench/results)
#   VERIFY     1 (default) compares each destination with the source (untimed)
#
# Writes OUT_DIR/compare-<UTC date-time>.md, OUT_DIR/compare-latest.md and,
# with gnuplot, OUT_DIR/compare-latest.png; prints the table.
#
# Page cache: the source is read once before each run, so every tool reads it
# from memory; the destination is deleted (dropping its pages) and the disk
# synced, untimed, between runs. Nobody's wall time includes another tool's
# writeback.
. "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-4GiB}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-socat rsync curl aria2c sesscp-plain sesscp-tls${BASE_BIN:+ base-plain base-tls}}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
bytes=$(size_bytes "$SIZE")

bench_init compare
bench_install socat rsync nginx-light curl aria2 gnuplot-nox time iproute2 ||
  bench_log "some packages could not be installed; tools that are missing are skipped"
bench_build

# Which of the requested tools can run here.
declare -a tools=()
for t in $TOOLS; do
  case $t in
    socat | rsync | curl | aria2c) need=$t ;;
    sesscp-plain | sesscp-tls) need=$BIN ;;
    base-plain | base-tls) need=${BASE_BIN:?"base-plain/base-tls need BASE_BIN"} ;;
    *) bench_die "unknown tool '$t'" ;;
  esac
  if [[ $t == curl || $t == aria2c ]] && ! command -v nginx >/dev/null; then need=nginx; fi
  if command -v "$need" >/dev/null; then tools+=("$t"); else bench_log "skipping $t: $need not installed"; fi
done
((${#tools[@]})) || bench_die "no tool to run"

src=$W/src/src.bin
dstdir=$W/dst
mkdir -p "$W/src" "$dstdir" "$W/t"
dst=$dstdir/src.bin
bench_log "generating $(human "$bytes") source in $W"
make_source "$src" "$bytes"
"$BIN" keygen -o "$W/key" >/dev/null 2>&1

# ---------------------------------------------------------------- the tools
# Each run_TOOL leaves sender figures in $W/t/s, receiver figures in $W/t/r
# (/usr/bin/time: wall user sys maxrss) and prints the wall time in seconds,
# from starting the side that initiates to both sides having exited. They
# run in this shell (not a subshell), so their background processes are
# tracked for the cleanup.

run_socat() {
  local port t0 t1 rp
  port=$(free_port)
  timed_bg "$W/t/r" socat -u -b 1048576 "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" "OPEN:$dst,creat,trunc,wronly" 2>"$W/t/r.log"
  rp=$BG
  wait_listen "$port"
  t0=$(now)
  timed "$W/t/s" socat -u -b 1048576 "OPEN:$src,rdonly" "TCP:127.0.0.1:$port" 2>"$W/t/s.log" || return 1
  wait "$rp" || return 1
  t1=$(now)
  elapsed "$t0" "$t1"
}

run_rsync() {
  local port t0 t1 rp dpid
  port=$(free_port)
  cat >"$W/rsyncd.conf" <<EOF
use chroot = no
max connections = 4
[bench]
  path = $dstdir
  read only = no
  uid = root
  gid = root
EOF
  timed_bg "$W/t/r" rsync --daemon --no-detach --config="$W/rsyncd.conf" --address=127.0.0.1 --port="$port" \
    --log-file="$W/t/rsyncd.log" 2>"$W/t/r.log"
  rp=$BG
  wait_listen "$port"
  t0=$(now)
  timed "$W/t/s" rsync "$src" "rsync://127.0.0.1:$port/bench/" 2>"$W/t/s.log" || return 1
  t1=$(now)
  # The daemon's per-connection processes have finished their work when the
  # client exits; let the daemon reap them so their CPU and RSS count.
  dpid=$(pgrep -P "$rp" | head -1)
  for _ in $(seq 100); do [[ -z $(pgrep -P "$dpid") ]] && break; sleep 0.05; done
  kill -TERM "$dpid"
  wait "$rp" || true
  elapsed "$t0" "$t1"
}

# nginx serves the source directory: one process (master_process off) so
# /usr/bin/time sees the process that does the sending.
start_nginx() { # sets $np (time's pid) and $port
  port=$(free_port)
  mkdir -p "$W/ngx"
  cat >"$W/ngx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $W/ngx/nginx.pid;
error_log $W/ngx/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $W/ngx/body;
  proxy_temp_path $W/ngx/proxy;
  fastcgi_temp_path $W/ngx/fastcgi;
  uwsgi_temp_path $W/ngx/uwsgi;
  scgi_temp_path $W/ngx/scgi;
  server {
    listen 127.0.0.1:$port;
    root $W/src;
  }
}
EOF
  timed_bg "$W/t/s" nginx -p "$W/ngx" -c "$W/ngx/nginx.conf" -e "$W/ngx/error.log" 2>"$W/t/s.log"
  np=$BG
  wait_listen "$port"
}
stop_nginx() {
  pkill -QUIT -P "$np" nginx || true
  wait "$np" || true
}

run_curl() {
  local np port t0 t1
  start_nginx
  t0=$(now)
  timed "$W/t/r" curl -sS -o "$dst" "http://127.0.0.1:$port/src.bin" 2>"$W/t/r.log" || return 1
  t1=$(now)
  stop_nginx
  elapsed "$t0" "$t1"
}

run_aria2c() {
  local np port t0 t1
  start_nginx
  t0=$(now)
  timed "$W/t/r" aria2c -q -d "$dstdir" -o src.bin -x1 -s1 --file-allocation=falloc --allow-overwrite=true \
    --auto-file-renaming=false "http://127.0.0.1:$port/src.bin" 2>"$W/t/r.log" || return 1
  t1=$(now)
  stop_nginx
  elapsed "$t0" "$t1"
}

run_sesscp() { # $1 = plain|tls [$2 = binary, default $BIN]
  local sec=(--insecure) port t0 t1 rp bin=${2:-$BIN}
  [[ $1 == tls ]] && sec=(--key-file "$W/key")
  : >"$W/t/r.log" # empty before the receiver starts: never read the last run's port
  timed_bg "$W/t/r" "$bin" recv --listen 127.0.0.1:0 --dir "$dstdir" --once "${sec[@]}" 2>"$W/t/r.log"
  rp=$BG
  port=$(sesscp_port "$W/t/r.log")
  t0=$(now)
  timed "$W/t/s" "$bin" send "$src" "127.0.0.1:$port" "${sec[@]}" 2>"$W/t/s.log" || return 1
  wait "$rp" || return 1
  t1=$(now)
  elapsed "$t0" "$t1"
}
run_sesscp-plain() { run_sesscp plain; }
run_sesscp-tls() { run_sesscp tls; }
run_base-plain() { run_sesscp plain "$BASE_BIN"; }
run_base-tls() { run_sesscp tls "$BASE_BIN"; }

# ---------------------------------------------------------------- the runs
# One line per run in $W/runs: tool round wall s_cpu s_rss r_cpu r_rss fsync s_sys r_sys
: >"$W/runs"
for round in $(seq "$RUNS"); do
  for t in "${tools[@]}"; do
    rm -f "$dstdir"/* "$dstdir"/.src.bin.* 2>/dev/null || true
    sync
    warm "$src"
    rm -f "$W/t"/*
    "run_$t" >"$W/wall" || bench_die "$t failed in round $round: $(cat "$W/t/s.log" "$W/t/r.log" 2>/dev/null | tail -5)"
    wall=$(cat "$W/wall")
    # What the tool left unsynced: fsync the destination, timed, after it exits.
    f0=$(now); sync "$dst"; f1=$(now)
    if [[ ${VERIFY:-1} == 1 ]]; then cmp -s "$src" "$dst" || bench_die "$t: destination differs from the source"; fi
    echo "$t $round $wall $(cpu_of "$W/t/s") $(rss_of "$W/t/s") $(cpu_of "$W/t/r") $(rss_of "$W/t/r") $(elapsed "$f0" "$f1") $(sys_of "$W/t/s") $(sys_of "$W/t/r")" >>"$W/runs"
    bench_log "round $round $t: $(tail -1 "$W/runs" | cut -d' ' -f3-) (wall s_cpu s_rss r_cpu r_rss fsync s_sys r_sys)"
  done
done
rm -f "$dst"

# ---------------------------------------------------------------- the table
col() { awk -v t="$1" -v c="$2" '$1 == t {print $c}' "$W/runs" | median; }
span() { awk -v t="$1" '$1 == t {print $3}' "$W/runs" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'; }
col_sum() { awk -v t="$1" '$1 == t {print $3 + $8}' "$W/runs" | median; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN {if (s == "-" || s <= 0) print "-"; else printf "%.0f", b / s / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-" || b == "-" || a <= 0) print "-"; else printf "%.2f", b / a}'; }
notes() {
  case $1 in
    socat) echo "none | no" ;;
    rsync) echo "whole-file checksum | no (has --fsync)" ;;
    curl) echo "none | no" ;;
    aria2c) echo "none (no --checksum given) | no" ;;
    sesscp-plain) echo "XXH3-128 per chunk | fdatasync + journal per sync point" ;;
    sesscp-tls | base-tls) echo "XXH3-128 per chunk + AES-128-GCM | fdatasync + journal per sync point" ;;
    base-plain) echo "XXH3-128 per chunk | fdatasync + journal per sync point" ;;
  esac
}
label() { case $1 in socat) echo "socat -u -b 1M" ;; rsync) echo "rsync → rsyncd" ;; curl) echo "curl ← nginx" ;;
  aria2c) echo "aria2c ← nginx" ;; sesscp-plain) echo "sesscp --insecure" ;; sesscp-tls) echo "sesscp TLS (PSK)" ;;
  base-plain) echo "base --insecure" ;; base-tls) echo "base TLS (PSK)" ;; esac; }

stamp=$(date -u +%Y-%m-%dT%H%M)
cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
fs=$(df -PT "$W" | awk 'NR==2 {print $2}')
socat_wall=$(col socat 3)
plain_wall=$(col sesscp-plain 3)
mkdir -p "$OUT_DIR"
md=$W/compare.md
{
  echo "# sesscp compared ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(human "$bytes") file over 127.0.0.1, median of $RUNS alternating rounds. Machine: $(nproc) cores ($cpu_model),"
  echo "kernel $(uname -r), destination on $fs ($(df -P "$W" | awk 'NR==2 {print $1}')). Source read from the page cache by every tool."
  echo "Sender = the side that reads the source (nginx for curl/aria2c); receiver = the side that writes the destination."
  echo "\"fsync after\" is the time an fsync of the destination took once the tool had exited (its unsynced data)."
  echo
  echo "| tool | wall s | MB/s | × socat | × sesscp plain | wall min–max s | wall + fsync after, s | sender CPU s (sys) | receiver CPU s (sys) | sender peak RSS MiB | receiver peak RSS MiB | integrity check | fsyncs the data |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for t in "${tools[@]}"; do
    w=$(col "$t" 3)
    echo "| $(label "$t") | $w | $(mbps "$w") | $(ratio "$w" "$socat_wall") | $(ratio "$w" "$plain_wall") | $(span "$t") | $(col_sum "$t") |" \
      "$(col "$t" 4) ($(col "$t" 9)) | $(col "$t" 6) ($(col "$t" 10)) | $(col "$t" 5) | $(col "$t" 7) | $(notes "$t") |"
  done
  echo
  echo "Ratios are of throughput (median wall of the reference / median wall of the tool); above 1 is faster."
  if [[ -n ${BASE_BIN:-} ]]; then
    echo
    echo "Same-run A/B against BASE_BIN ($("$BASE_BIN" --version 2>&1 | head -1), $BASE_BIN): sesscp's wall time / base's, per round, median (min-max):"
    echo "plaintext $(paired "$W/runs" base-plain sesscp-plain); TLS $(paired "$W/runs" base-tls sesscp-tls). Below 1: this build is faster."
  fi
  echo "Versions: $("$BIN" --version 2>&1 | head -1); $(socat -V 2>/dev/null | awk '/socat version/ {print "socat", $3; exit}');" \
    "$(rsync --version 2>/dev/null | awk 'NR==1 {print "rsync", $3}'); $(curl --version 2>/dev/null | awk 'NR==1 {print "curl", $2}');" \
    "$(aria2c --version 2>/dev/null | awk 'NR==1 {print "aria2c", $3}'); $(nginx -v 2>&1 | sed 's/.*\///;s/^/nginx /')."
  echo
  echo "Every run (tool, round, wall s, sender CPU s, sender RSS MiB, receiver CPU s, receiver RSS MiB, fsync after s, sender sys s, receiver sys s):"
  echo
  echo '```'
  cat "$W/runs"
  echo '```'
  echo
  echo "Rerun: \`SIZE=$SIZE RUNS=$RUNS bench/compare.sh\`"
} >"$md"
cp "$md" "$OUT_DIR/compare-$stamp.md"
cp "$md" "$OUT_DIR/compare-latest.md"

# Bar chart: throughput per tool, as the tool reports done and with the fsync it skipped.
if command -v gnuplot >/dev/null; then
  for t in "${tools[@]}"; do
    printf '"%s" %s %s\n' "$(label "$t")" "$(mbps "$(col "$t" 3)")" "$(mbps "$(col_sum "$t")")"
  done >"$W/chart.dat"
  gnuplot <<EOF || bench_log "gnuplot failed; no chart"
set terminal pngcairo size 900,480 noenhanced font ",10"
set output "$W/chart.png"
set title "$(human "$bytes") over loopback, median of $RUNS ($(date -u +%Y-%m-%d), $(nproc) cores, noisy shared machine)"
set ylabel "MB/s"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set grid ytics
set key top right
set xtics rotate by -20
plot "$W/chart.dat" using 2:xtic(1) title "until the tool exits", "" using 3 title "including fsync of the destination"
EOF
  [[ -s $W/chart.png ]] && cp "$W/chart.png" "$OUT_DIR/compare-latest.png"
fi
cat "$md"
bench_log "wrote $OUT_DIR/compare-$stamp.md, $OUT_DIR/compare-latest.md${W:+ and compare-latest.png}"
