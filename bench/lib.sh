# shellcheck shell=bash disable=SC2034  # globals are used by the sourcing scripts
# Shared helpers for the bench/ scripts (sourced, never run).
#
#   . "$(dirname "$0")/lib.sh"
#   bench_init NAME            # scratch dir $W on real disk, cleanup trap, $BIN
#
# Conventions: only 127.0.0.1; ports are random free ones; every background
# process is registered (bench_track PID) and killed on exit; every wait is
# bounded. Figures are printed, never judged: no script fails on a time.

set -euo pipefail
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
declare -a BENCH_PIDS=()
declare -a BENCH_DIRS=() # more scratch directories (bench_track_dir), removed on exit like $W
W=""
BIN=""

bench_log() { printf '[%s] %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

# kill_tree PID: kill -9 PID and its descendants (children first found, then
# killed top-down so none is re-parented unseen).
kill_tree() {
  local kids k
  kids=$(pgrep -P "$1" 2>/dev/null || true)
  kill -STOP "$1" 2>/dev/null || true
  for k in $kids; do kill_tree "$k"; done
  kill -9 "$1" 2>/dev/null || true
}

bench_cleanup() {
  local pid
  trap - EXIT INT TERM
  for pid in "${BENCH_PIDS[@]}"; do kill_tree "$pid"; done
  for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ ${KEEP:-0} != 1 ]]; then
    [[ -n $W ]] && rm -rf "$W"
    for pid in "${BENCH_DIRS[@]}"; do rm -rf "$pid"; done
  fi
  return 0
}

# bench_track PID: kill PID and its descendants (-9) when the script exits.
bench_track() { BENCH_PIDS+=("$1"); }
# bench_track_dir DIR: remove DIR when the script exits (as $W; KEEP=1 keeps both).
bench_track_dir() { BENCH_DIRS+=("$1"); }

# bench_init NAME: scratch directory under $BENCH_DIR (default /var/tmp, a
# real disk: the destination must not be tmpfs), cleanup on exit.
bench_init() {
  BENCH_NAME=$1
  local parent=${BENCH_DIR:-/var/tmp}
  W=$(mktemp -d "$parent/sesscp-$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  if [[ $(stat -f -c %T "$W") == tmpfs ]]; then
    bench_log "warning: $parent is tmpfs; destination writes will not reach a disk"
  fi
}

# bench_build: use $SESSCP_BIN if set, else build with scripts/build.sh
# (into $SESSCP_BUILD_DIR, default build/). Sets $BIN and $BUILD_DIR.
bench_build() {
  if [[ -n ${SESSCP_BIN:-} ]]; then
    BIN=$SESSCP_BIN
  else
    bash "$BENCH_ROOT/scripts/build.sh" >"$W/build.log" 2>&1 || { tail -20 "$W/build.log" >&2; bench_die "build failed"; }
    BIN=$(tail -1 "$W/build.log")
  fi
  [[ -x $BIN ]] || bench_die "sesscp binary '$BIN' not found (run scripts/build.sh)"
  BUILD_DIR=$(dirname "$BIN")
}

# bench_install PKG...: install missing Debian packages (INSTALL=0 skips).
# Returns non-zero if something could not be installed; callers then skip
# the tools that are missing.
bench_install() {
  [[ ${INSTALL:-1} == 1 ]] || return 0
  # shellcheck source=scripts/deps.sh
  (. "$BENCH_ROOT/scripts/deps.sh" && sesscp_install_missing "$@") >&2
}

# size_bytes TEXT: "4GiB", "1G", "16MiB", "512K", "1000000" -> bytes (powers of 1024).
size_bytes() {
  local t=${1^^} n unit
  n=${t%%[!0-9]*}
  unit=${t#"$n"}
  unit=${unit%IB}
  unit=${unit%B}
  [[ -n $n ]] || bench_die "bad size '$1'"
  case $unit in
    '') echo "$n" ;;
    K) echo $((n << 10)) ;;
    M) echo $((n << 20)) ;;
    G) echo $((n << 30)) ;;
    *) bench_die "bad size '$1' (use K, M or G)" ;;
  esac
}

# human SIZE_BYTES -> "4 GiB", "16 MiB"
human() { awk -v b="$1" 'BEGIN { if (b >= 2^30 && b % 2^30 == 0) printf "%d GiB", b / 2^30; else if (b >= 2^20) printf "%g MiB", b / 2^20; else printf "%d B", b }'; }

# make_source FILE BYTES: incompressible, reproducible content (AES-CTR
# keystream), so no tool gains from compression or sparse files.
make_source() {
  local need_kib=$(($2 / 1024 + 1024))
  local free_kib
  free_kib=$(df -Pk "$(dirname "$1")" | awk 'NR==2 {print $4}')
  ((free_kib > need_kib * 3)) || bench_die "need $((need_kib * 3 / 1024)) MiB free in $(dirname "$1") (source + destination + margin)"
  { openssl enc -aes-128-ctr -pass pass:sesscp-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } | head -c "$2" >"$1"
  [[ $(stat -c %s "$1") == "$2" ]] || bench_die "could not write $2 bytes to $1"
}

# warm FILE: read it once so every tool reads its source from the page cache.
warm() { cat "$1" >/dev/null; }

# free_port: a random TCP port nothing listens on (checked with ss).
free_port() {
  local p
  for _ in $(seq 200); do
    p=$(shuf -i 20000-60999 -n 1)
    [[ -z $(ss -Htln "sport = :$p") ]] && { echo "$p"; return 0; }
  done
  bench_die "no free port found"
}

# wait_listen PORT [TRIES]: until something listens on 127.0.0.1:PORT (50 ms steps).
wait_listen() {
  local tries=${2:-200}
  for _ in $(seq "$tries"); do
    [[ -n $(ss -Htln "sport = :$1") ]] && return 0
    sleep 0.05
  done
  bench_die "nothing listens on port $1 after $((tries / 20)) s"
}

# sesscp_port LOG: the port a 'sesscp recv --listen 127.0.0.1:0' printed (waits up to 10 s).
sesscp_port() {
  local port=""
  for _ in $(seq 200); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1")
    [[ -n $port ]] && { echo "$port"; return 0; }
    sleep 0.05
  done
  bench_die "receiver did not start: $(cat "$1")"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }

# median: of the numbers on stdin, one a line ("-" if none).
# paired RUNS_FILE A B [TOOL_COL ROUND_COL VALUE_COL]: per round, B's value
# divided by A's in that round (rows "tool round ... value"), then the median
# of those ratios and their min-max: "1.02 (0.97-1.08, 5 rounds)". For A/B of
# two binaries (BASE_BIN): on this machine one run varies 2-4x, so only
# ratios taken within a round compare.
paired() {
  awk -v a="$2" -v b="$3" -v tc="${4:-1}" -v rc="${5:-2}" -v vc="${6:-3}" '
    $tc == a {va[$rc] = $vc} $tc == b {vb[$rc] = $vc}
    END {for (r in va) if ((r in vb) && va[r] > 0) printf "%.3f\n", vb[r] / va[r]}' "$1" |
    sort -g | awk '{x[NR] = $1} END {if (!NR) {print "-"; exit}
      m = (NR % 2) ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2
      printf "%.2f (%.2f-%.2f, %d rounds)\n", m, x[1], x[NR], NR}'
}
median() { sort -g | awk '{a[NR]=$1} END {if (!NR) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# TIMEFMT for /usr/bin/time -o: wall, user, sys, peak RSS KiB.
TIMEFMT="%e %U %S %M"
# timed OUT CMD...: run CMD under /usr/bin/time, figures to OUT.
timed() { local out=$1; shift; /usr/bin/time -f "$TIMEFMT" -o "$out" "$@"; }
# timed_bg OUT CMD...: the same in the background; sets BG to the pid of
# /usr/bin/time (the tool is its only child: pgrep -P "$BG") and tracks it.
timed_bg() {
  local out=$1; shift
  /usr/bin/time -f "$TIMEFMT" -o "$out" "$@" &
  BG=$!
  bench_track "$BG"
}
# cpu_of TIMEFILE -> user+sys seconds; rss_of TIMEFILE -> peak RSS MiB.
cpu_of() { tail -1 "$1" | awk '{printf "%.2f", $2 + $3}'; }
sys_of() { tail -1 "$1" | awk '{printf "%.2f", $3}'; }
rss_of() { tail -1 "$1" | awk '{printf "%.1f", $4 / 1024}'; }
