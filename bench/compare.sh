#!/usr/bin/env bash
# sesscp against the usual tools, on loopback, in one run, with paired rounds:
# the same file moved by socat (raw pipe: the practical limit), rsync (to an
# rsync daemon), curl and aria2c (downloading from nginx), and sesscp
# plaintext and TLS, to two destinations: a disk (BENCH_DIR) and /dev/shm
# (memory to memory: source and destination both on tmpfs). In the same
# rounds, the limits: iperf3 (memory to memory, 1 MiB writes, -n SIZE: the
# transport's) for /dev/shm and `dd oflag=direct bs=1M` (the disk's) for disk.
#
# On this shared machine one transfer varies 2-4x from run to run, so medians
# of two tools taken at different moments do not compare. Every ratio here is
# taken within a round (each tool's throughput relative to socat's, or TLS to
# plaintext, in that round), then the median of those ratios is quoted with
# their min-max. The tools' order rotates from round to round.
#
#   bench/compare.sh                      # 1 GiB, 5 rounds, disk and /dev/shm
#   SIZE=4GiB RUNS=3 DESTS=disk bench/compare.sh
#
# Environment:
#   SIZE       file size (default 1GiB; K/M/G suffixes, powers of 1024)
#   RUNS       rounds (default 5)
#   DESTS      destinations, space-separated: disk shm (default both)
#   TOOLS      tools to run, space-separated (default: socat rsync curl aria2c sesscp-plain sesscp-tls)
#   LIMITS     1 (default) adds iperf3 (shm) and dd-direct (disk) to each round
#   INSTALL    1 (default) installs missing Debian packages via scripts/deps.sh; 0 runs what is installed
#   SESSCP_BIN use this binary instead of building with scripts/build.sh
#   BASE_BIN   a second sesscp binary (an older build) to compare with in the
#              same rounds: adds the tools base-plain and base-tls, and per-round
#              ratios of sesscp to it (a same-run A/B)
#   BENCH_DIR  parent of the scratch dir: the disk destination (default /var/tmp; must be a real disk)
#   SHM_DIR    parent of the memory destination (default /dev/shm)
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

SIZE=${SIZE:-1GiB}
RUNS=${RUNS:-5}
DESTS=${DESTS:-disk shm}
TOOLS_SET=${TOOLS:+1}
TOOLS=${TOOLS:-socat rsync curl aria2c sesscp-plain sesscp-tls${BASE_BIN:+ base-plain base-tls}}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
bytes=$(size_bytes "$SIZE")

bench_init compare
bench_install socat rsync nginx-light curl aria2 iperf3 gnuplot-nox time iproute2 ||
  bench_log "some packages could not be installed; tools that are missing are skipped"
bench_build
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

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
[[ ${LIMITS:-1} == 1 ]] && ! command -v iperf3 >/dev/null && bench_log "skipping iperf3: not installed"

# One source and one destination directory per destination kind: for disk
# both under $W (BENCH_DIR), for shm both under a scratch dir in SHM_DIR.
declare -A srcs=() dstdirs=()
for d in $DESTS; do
  case $d in
    disk) base=$W ;;
    shm)
      base=$(mktemp -d "${SHM_DIR:-/dev/shm}/sesscp-compare.XXXXXX")
      bench_track_dir "$base"
      ;;
    *) bench_die "unknown destination '$d' (disk or shm)" ;;
  esac
  mkdir -p "$base/src" "$base/dst"
  srcs[$d]=$base/src/src.bin
  dstdirs[$d]=$base/dst
  bench_log "generating $(human "$bytes") source in $base ($d)"
  make_source "${srcs[$d]}" "$bytes"
done
mkdir -p "$W/t"
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
    root $(dirname "$src");
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

# The limits, in the same rounds. iperf3: memory to memory over the same
# loopback, 1 MiB writes, SIZE bytes (no file on either side). dd: the
# source (from the page cache) written to the disk with O_DIRECT, 1 MiB
# blocks, one process (its figures are in the receiver's columns).
run_iperf3() {
  local port t0 t1 rp
  port=$(free_port)
  timed_bg "$W/t/r" iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$W/t/r.log" 2>&1
  rp=$BG
  wait_listen "$port"
  t0=$(now)
  timed "$W/t/s" iperf3 -c 127.0.0.1 -p "$port" -n "$bytes" -l 1M >"$W/t/s.log" 2>&1 || return 1
  wait "$rp" || return 1
  t1=$(now)
  elapsed "$t0" "$t1"
}

run_dd-direct() {
  local t0 t1
  echo "0 0 0 0" >"$W/t/s"
  t0=$(now)
  timed "$W/t/r" dd if="$src" of="$dst" bs=1M oflag=direct status=none 2>"$W/t/r.log" || return 1
  t1=$(now)
  elapsed "$t0" "$t1"
}

# ---------------------------------------------------------------- the runs
# One line per run in $W/runs:
#   dest tool round wall s_cpu s_rss r_cpu r_rss fsync s_sys r_sys
# The tools of a destination run back to back within a round, in an order
# that rotates by one each round (so no tool always follows the same one).
run_one() { # $1 = dest, $2 = tool, $3 = round
  local d=$1 t=$2 round=$3 wall f0 f1 fs=0
  src=${srcs[$d]} dstdir=${dstdirs[$d]} dst=${dstdirs[$d]}/src.bin
  rm -f "$dstdir"/* "$dstdir"/.src.bin.* 2>/dev/null || true
  sync
  warm "$src"
  rm -f "$W/t"/*
  "run_$t" >"$W/wall" || bench_die "$t ($d) failed in round $round: $(cat "$W/t/s.log" "$W/t/r.log" 2>/dev/null | tail -5)"
  wall=$(cat "$W/wall")
  if [[ $t != iperf3 ]]; then
    # What the tool left unsynced: fsync the destination, timed, after it exits.
    f0=$(now); sync "$dst"; f1=$(now); fs=$(elapsed "$f0" "$f1")
    if [[ ${VERIFY:-1} == 1 ]]; then cmp -s "$src" "$dst" || bench_die "$t ($d): destination differs from the source"; fi
  fi
  echo "$d $t $round $wall $(cpu_of "$W/t/s") $(rss_of "$W/t/s") $(cpu_of "$W/t/r") $(rss_of "$W/t/r") $fs $(sys_of "$W/t/s") $(sys_of "$W/t/r")" >>"$W/runs"
  bench_log "round $round $d $t: $(tail -1 "$W/runs" | cut -d' ' -f4-) (wall s_cpu s_rss r_cpu r_rss fsync s_sys r_sys)"
}
: >"$W/runs"
for round in $(seq "$RUNS"); do
  for d in $DESTS; do
    list=("${tools[@]}")
    if [[ ${LIMITS:-1} == 1 ]]; then
      [[ $d == shm ]] && command -v iperf3 >/dev/null && list+=(iperf3)
      [[ $d == disk ]] && list+=(dd-direct)
    fi
    n=${#list[@]}
    for k in $(seq 0 $((n - 1))); do run_one "$d" "${list[$(((k + round - 1) % n))]}" "$round"; done
    rm -f "${dstdirs[$d]}"/* 2>/dev/null || true
  done
done

# ---------------------------------------------------------------- the table
gib=$(awk -v b="$bytes" 'BEGIN {print b / 2^30}')
runs_of() { awk -v d="$1" '$1 == d {$1 = ""; sub(/^ /, ""); print}' "$W/runs"; } # tool round wall ... (lib.sh's paired)
col() { awk -v t="$2" -v c="$3" '$1 == t {print $c}' "$W/runs.$1" | median; }
per_gib() { awk -v t="$2" -v c="$3" -v g="$gib" '$1 == t {printf "%.2f\n", $c / g}' "$W/runs.$1" | median; }
cpu_sum_gib() { awk -v t="$2" -v g="$gib" '$1 == t {printf "%.2f\n", ($4 + $6) / g}' "$W/runs.$1" | median; }
span() { awk -v t="$2" '$1 == t {print $3}' "$W/runs.$1" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'; }
col_sum() { awk -v t="$2" '$1 == t {print $3 + $8}' "$W/runs.$1" | median; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN {if (s == "-" || s <= 0) print "-"; else printf "%.0f", b / s / 1e6}'; }
# Throughput of tool $3 relative to $2's, per round (time of $2 / time of $3), median (min-max).
xput() { paired "$W/runs.$1" "$3" "$2"; }
# Summed CPU (both sides) of $3 relative to $2's, per round: below 1 is cheaper.
cpu_ratio() {
  awk '{print $1, $2, $4 + $6}' "$W/runs.$1" >"$W/cpu.$1"
  paired "$W/cpu.$1" "$2" "$3"
}
has() { awk -v t="$2" '$1 == t {f = 1} END {exit !f}' "$W/runs.$1"; }
notes() {
  case $1 in
    socat) echo "none | no" ;;
    rsync) echo "whole-file checksum | no (has --fsync)" ;;
    curl) echo "none | no" ;;
    aria2c) echo "none (no --checksum given) | no" ;;
    sesscp-plain | base-plain) echo "XXH3-128 per chunk | fdatasync + journal per sync point" ;;
    sesscp-tls | base-tls) echo "XXH3-128 per chunk + AES-128-GCM | fdatasync + journal per sync point" ;;
    iperf3) echo "none (no file) | -" ;;
    dd-direct) echo "none | O_DIRECT, no fsync" ;;
  esac
}
label() { case $1 in socat) echo "socat -u -b 1M" ;; rsync) echo "rsync → rsyncd" ;; curl) echo "curl ← nginx" ;;
  aria2c) echo "aria2c ← nginx" ;; sesscp-plain) echo "sesscp --insecure" ;; sesscp-tls) echo "sesscp TLS (PSK)" ;;
  base-plain) echo "base --insecure" ;; base-tls) echo "base TLS (PSK)" ;;
  iperf3) echo "iperf3 -l 1M (limit: transport)" ;; dd-direct) echo "dd oflag=direct bs=1M (limit: disk)" ;; esac; }
dest_label() { case $1 in disk) echo "disk: $(df -PT "$W" | awk 'NR==2 {print $2 " on " $1}'), source on the same disk" ;;
  shm) echo "/dev/shm (tmpfs), source on /dev/shm: memory to memory" ;; esac; }

stamp=$(date -u +%Y-%m-%dT%H%M)
cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
mkdir -p "$OUT_DIR"
md=$W/compare.md
{
  echo "# sesscp compared ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(human "$bytes") file over 127.0.0.1, $RUNS rounds; in each round every tool runs once per destination, in an order"
  echo "that rotates each round. Machine: $(nproc) cores ($cpu_model), kernel $(uname -r), load before the run: $LOAD0."
  echo "Source read from the page cache by every tool. Sender = the side that reads the source (nginx for curl/aria2c);"
  echo "receiver = the side that writes the destination. \"fsync after\": an fsync of the destination once the tool had exited."
  echo
  echo "**Paired ratios.** × socat = socat's wall time / the tool's wall time *in the same round* (throughput; above 1 is"
  echo "faster), then the median over the rounds, (min-max) beside it. CPU/GiB = user + sys seconds per GiB moved."
  for d in $DESTS; do
    runs_of "$d" >"$W/runs.$d"
    echo
    echo "## $(dest_label "$d")"
    echo
    echo "| tool | wall s (median) | MB/s | × socat, per round: median (min-max) | × sesscp plain, per round | wall min–max s | wall + fsync after, s | sender CPU s/GiB (sys) | receiver CPU s/GiB (sys) | CPU s/GiB, both sides | CPU × socat's, per round | sender peak RSS MiB | receiver peak RSS MiB | integrity check | fsyncs the data |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for t in "${tools[@]}" iperf3 dd-direct; do
      has "$d" "$t" || continue
      w=$(col "$d" "$t" 3)
      echo "| $(label "$t") | $w | $(mbps "$w") | $(xput "$d" socat "$t") | $(xput "$d" sesscp-plain "$t") | $(span "$d" "$t") |" \
        "$(col_sum "$d" "$t") | $(per_gib "$d" "$t" 4) ($(per_gib "$d" "$t" 9)) | $(per_gib "$d" "$t" 6) ($(per_gib "$d" "$t" 10)) |" \
        "$(cpu_sum_gib "$d" "$t") | $(cpu_ratio "$d" socat "$t") | $(col "$d" "$t" 5) | $(col "$d" "$t" 7) | $(notes "$t") |"
    done
    echo
    if has "$d" sesscp-plain && has "$d" sesscp-tls; then
      echo "- sesscp TLS × sesscp plaintext (throughput, per round): $(xput "$d" sesscp-plain sesscp-tls)"
    fi
    if has "$d" sesscp-plain && has "$d" socat; then
      echo "- sesscp plaintext × socat (throughput, per round): $(xput "$d" socat sesscp-plain);" \
        "CPU of both sides × socat's: $(cpu_ratio "$d" socat sesscp-plain)"
    fi
    has "$d" iperf3 && echo "- sesscp plaintext × iperf3 (the transport's limit): $(xput "$d" iperf3 sesscp-plain); socat × iperf3: $(xput "$d" iperf3 socat)"
    has "$d" dd-direct && echo "- sesscp plaintext × dd oflag=direct (the disk's limit): $(xput "$d" dd-direct sesscp-plain); socat × dd: $(xput "$d" dd-direct socat)"
    if [[ -n ${BASE_BIN:-} ]]; then
      echo "- same-run A/B against BASE_BIN ($("$BASE_BIN" --version 2>&1 | head -1), $BASE_BIN), this build's throughput × base's:" \
        "plaintext $(xput "$d" base-plain sesscp-plain); TLS $(xput "$d" base-tls sesscp-tls). Above 1: this build is faster."
    fi
  done
  echo
  echo "Versions: $("$BIN" --version 2>&1 | head -1); $(socat -V 2>/dev/null | awk '/socat version/ {print "socat", $3; exit}');" \
    "$(rsync --version 2>/dev/null | awk 'NR==1 {print "rsync", $3}'); $(curl --version 2>/dev/null | awk 'NR==1 {print "curl", $2}');" \
    "$(aria2c --version 2>/dev/null | awk 'NR==1 {print "aria2c", $3}'); $(nginx -v 2>&1 | sed 's/.*\///;s/^/nginx /');" \
    "$(iperf3 --version 2>/dev/null | awk 'NR==1 {print "iperf3", $2}')."
  echo
  echo "Every run (destination, tool, round, wall s, sender CPU s, sender RSS MiB, receiver CPU s, receiver RSS MiB, fsync after s, sender sys s, receiver sys s):"
  echo
  echo '```'
  cat "$W/runs"
  echo '```'
  echo
  echo "Rerun: \`SIZE=$SIZE RUNS=$RUNS DESTS=\"$DESTS\"${TOOLS_SET:+ TOOLS=\"$TOOLS\"} bench/compare.sh\`"
} >"$md"
cp "$md" "$OUT_DIR/compare-$stamp.md"
cp "$md" "$OUT_DIR/compare-latest.md"

# Bar chart: median throughput per tool and destination.
if command -v gnuplot >/dev/null; then
  for t in "${tools[@]}" iperf3 dd-direct; do
    line="\"$(label "$t")\""
    for d in $DESTS; do
      if has "$d" "$t"; then line+=" $(mbps "$(col "$d" "$t" 3)")"; else line+=" 0"; fi
    done
    echo "$line"
  done >"$W/chart.dat"
  plots="" k=2
  for d in $DESTS; do
    if ((k == 2)); then plots="\"$W/chart.dat\" using 2:xtic(1) title \"to $d\""
    else plots+=", \"\" using $k title \"to $d\""; fi
    k=$((k + 1))
  done
  gnuplot <<EOP || bench_log "gnuplot failed; no chart"
set terminal pngcairo size 1000,480 noenhanced font ",10"
set output "$W/chart.png"
set title "$(human "$bytes") over loopback, median of $RUNS rounds ($(date -u +%Y-%m-%d), $(nproc) cores, noisy shared machine)"
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
plot $plots
EOP
  [[ -s $W/chart.png ]] && cp "$W/chart.png" "$OUT_DIR/compare-latest.png"
fi
cat "$md"
bench_log "wrote $OUT_DIR/compare-$stamp.md, $OUT_DIR/compare-latest.md${W:+ and compare-latest.png}"
