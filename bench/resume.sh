#!/usr/bin/env bash
# What a resume costs: the sender is killed (kill -9) when 50% and 90% of the
# file has landed at the destination, then the same command is run again.
# sesscp (plaintext; "sesscp" re-verifies the whole partial in the background,
# the default; "sesscp-tail" is recv --verify-resume tail) against rsync
# --partial --append-verify (to an rsync daemon), same file, same kill
# points, on loopback. Medians over RUNS rounds.
#
#   bench/resume.sh                       # 1 GiB, kills at 50 and 90 %, 3 rounds
#   SIZE=4GiB RUNS=1 POINTS="50" bench/resume.sh
#
# Per tool and kill point:
#   receiver ready   from the kill until the receiver has saved what it got
#                    and takes the file again (sesscp answers "busy" before:
#                    exit 69); the re-run starts then
#   completing run   wall time of the re-run (start to exit), and its ratio
#                    to an uninterrupted run of the same tool (same round)
#   first new byte   from the re-run's start until data lands again at the
#                    destination: sesscp: the receiver has written >= 64 KiB
#                    more (/proc/PID/io wchar; the .part file does not grow
#                    while the unconfirmed tail is re-sent over it); rsync:
#                    the partial file grows (--append writes in place).
#                    Polled every 10 ms.
#   bytes re-sent    data carried twice: bytes received in both runs minus the
#                    file size (sesscp: the receiver's per-session counts;
#                    rsync: partial kept + "Literal data" of the re-run)
#   bytes re-read    sesscp: the partial's bytes the receiver read back and
#                    re-hashed ("re-verified N bytes"); rsync --append-verify
#                    re-reads the whole kept prefix on both sides
#   prefix read s    dd iflag=direct of the confirmed prefix of the partial,
#                    right before the re-run: the disk's own time to read it
#   goal ratio       completing run / max(uninterrupted x share not yet
#                    confirmed, prefix read s): issue 16's goal is <= 1.1
#   sum ratio        completing run / (the same two added): on one disk the
#                    re-read and the writes of the rest share its bandwidth
#
# Environment: SIZE (1GiB), RUNS (3), POINTS (percent, "50 90"), TOOLS
# ("sesscp sesscp-tail rsync"), COLD (1: drop the destination's files from
# the page cache before the re-run, as after a reboot; 0, the default: the
# re-run follows the kill, and what a tool wrote through the cache is still
# there), INSTALL, SESSCP_BIN, BENCH_DIR, OUT_DIR as in compare.sh; BASE_BIN
# (a second sesscp binary, an older build: adds the tool sesscp-base and
# per-round ratios of sesscp to it, a same-run A/B).
# Writes OUT_DIR/resume-latest.md and prints it.
. "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-1GiB}
RUNS=${RUNS:-3}
POINTS=${POINTS:-50 90}
COLD=${COLD:-0}
TOOLS=${TOOLS:-sesscp sesscp-tail rsync${BASE_BIN:+ sesscp-base}}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
bytes=$(size_bytes "$SIZE")

bench_init resume
bench_install rsync time iproute2 || bench_log "some packages could not be installed"
bench_build
declare -a tools=()
for t in $TOOLS; do
  [[ $t == rsync ]] && ! command -v rsync >/dev/null && { bench_log "skipping rsync: not installed"; continue; }
  tools+=("$t")
done

src=$W/src.bin
dstdir=$W/dst
mkdir -p "$dstdir"
bench_log "generating $(human "$bytes") source in $W"
make_source "$src" "$bytes"
printf 'use chroot = no\n[bench]\n  path = %s\n  read only = no\n  uid = root\n  gid = root\n' "$dstdir" >"$W/rsyncd.conf"
rsync_opts=(--partial --append-verify --stats)

landed() { find "$dstdir" -type f ! -name '*.journal' -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}'; }
wchar() { awk '/^wchar/ {print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }

# Receivers live across the kill, as they would in use. Sets $rp (and $port).
start_receiver() { # TOOL LOG
  if [[ $1 == sesscp* ]]; then
    : >"$2" # empty before the receiver starts: never read the last run's port
    local check=full
    [[ $1 == sesscp-tail ]] && check=tail
    "$(bin_of "$1")" recv --listen 127.0.0.1:0 --dir "$dstdir" --insecure --verify-resume "$check" 2>"$2" &
    rp=$!; bench_track "$rp"
    port=$(sesscp_port "$2")
  else
    port=$(free_port)
    rsync --daemon --no-detach --config="$W/rsyncd.conf" --address=127.0.0.1 --port="$port" --log-file="$2" &
    rp=$!; bench_track "$rp"
    wait_listen "$port"
  fi
}
stop_receiver() {
  # rsync: let the connection's processes finish (they keep the partial file).
  for _ in $(seq 200); do [[ -z $(pgrep -P "$rp") ]] && break; sleep 0.05; done
  kill -TERM "$rp" 2>/dev/null || true
  wait "$rp" 2>/dev/null || true
}
# The binary a sesscp tool runs: sesscp-base is BASE_BIN (a same-run A/B).
bin_of() { if [[ $1 == sesscp-base ]]; then echo "${BASE_BIN:?sesscp-base needs BASE_BIN}"; else echo "$BIN"; fi; }
send_cmd() { # TOOL -> the sender's command line in $cmd
  if [[ $1 == sesscp* ]]; then cmd=("$(bin_of "$1")" send "$src" "127.0.0.1:$port" --insecure)
  else cmd=(rsync "${rsync_opts[@]}" "$src" "rsync://127.0.0.1:$port/bench/"); fi
}

# full TOOL -> wall seconds of an uninterrupted run
full() {
  local t0 t1
  rm -rf "${dstdir:?}"/* "$dstdir"/.src* 2>/dev/null || true
  sync; warm "$src"
  start_receiver "$1" "$W/full.log"
  send_cmd "$1"
  t0=$(now)
  "${cmd[@]}" >"$W/full.out" 2>&1 || return 1
  t1=$(now)
  stop_receiver
  cmp -s "$src" "$dstdir/src.bin" || return 1
  elapsed "$t0" "$t1"
}

# interrupted TOOL PERCENT -> "landed_at_kill wall first_byte resent resumed_at release reread prefix_read"
interrupted() {
  local tool=$1 pct=$2 sp t0 t1 first="-" base have target resent resumed="-" reread=0 prefix_read
  rm -rf "${dstdir:?}"/* "$dstdir"/.src* 2>/dev/null || true
  sync; warm "$src"
  start_receiver "$tool" "$W/recv.log"
  send_cmd "$tool"
  target=$((bytes * pct / 100))
  "${cmd[@]}" >"$W/run1.out" 2>&1 &
  sp=$!; bench_track "$sp"
  for _ in $(seq 30000); do
    (($(landed) >= target)) && break
    kill -0 "$sp" 2>/dev/null || break
    sleep 0.01
  done
  kill -9 "$sp" 2>/dev/null || true
  wait "$sp" 2>/dev/null || true
  have=$(landed)
  # The receiver must notice the sender is gone and save what it has before
  # it takes the file again (sesscp answers "busy" until then; the rsync
  # daemon renames its temporary file to the partial one). Wait for that,
  # bounded, and report how long it took.
  local k0 release
  k0=$(now)
  for _ in $(seq 1200); do
    if [[ $tool == sesscp* ]]; then grep -q 'recv src\.bin: ' "$W/recv.log" && break
    else [[ -z $(pgrep -P "$rp") ]] && break; fi
    sleep 0.02
  done
  release=$(elapsed "$k0" "$(now)")
  local kept part
  kept=$(stat -c %s "$dstdir/src.bin" 2>/dev/null || echo 0)
  # What the disk needs to read the kept prefix back (no cache: iflag=direct).
  part=$dstdir/src.bin.sesscp.part
  [[ -f $part ]] || part=$dstdir/src.bin
  [[ -f $part ]] || part=$(find "$dstdir" -type f -name '.src.bin*' | head -1)
  local p0
  p0=$(now)
  dd if="$part" of=/dev/null bs=8M iflag=direct status=none 2>/dev/null || dd if="$part" of=/dev/null bs=8M status=none
  prefix_read=$(elapsed "$p0" "$(now)")
  if ((COLD)); then
    # As after a reboot: nothing of the destination in the page cache.
    sync
    find "$dstdir" -type f -exec dd if={} iflag=nocache count=0 status=none \;
  fi
  # The re-run, with the destination watched for new data.
  if [[ $tool == sesscp* ]]; then base=$(wchar "$rp"); else base=$kept; fi
  t0=$(now)
  "${cmd[@]}" >"$W/run2.out" 2>&1 &
  sp=$!; bench_track "$sp"
  for _ in $(seq 60000); do
    if [[ $first == - ]]; then
      if [[ $tool == sesscp* ]]; then
        (($(wchar "$rp") - base >= 65536)) && first=$(elapsed "$t0" "$(now)")
      else
        (($(stat -c %s "$dstdir/src.bin" 2>/dev/null || echo 0) > base)) && first=$(elapsed "$t0" "$(now)")
      fi
    fi
    kill -0 "$sp" 2>/dev/null || break
    sleep 0.01
  done
  wait "$sp" || { bench_log "$tool re-run failed: $(tail -3 "$W/run2.out")"; return 1; }
  t1=$(now)
  stop_receiver
  cmp -s "$src" "$dstdir/src.bin" || { bench_log "$tool: resumed result differs"; return 1; }
  if [[ $tool == sesscp* ]]; then
    reread=$(sed -n 's/.*recv src\.bin: complete.*re-verified \([0-9]*\) bytes.*/\1/p' "$W/recv.log" | tail -1)
    reread=${reread:-0}
    resent=$(sed -n 's/.*recv src\.bin: .*, \([0-9]*\) bytes received.*/\1/p' "$W/recv.log" |
      awk -v s="$bytes" '{t += $1} END {printf "%.0f", t - s}')
    resumed=$(sed -n 's/.*resumed at \([0-9]*\),.*/\1/p' "$W/run2.out" | tail -1)
  else
    local literal
    literal=$(sed -n 's/^Literal data: \([0-9,]*\) bytes.*/\1/p' "$W/run2.out" | tr -d , | tail -1)
    resent=$((kept + ${literal:-0} - bytes))
    resumed=$kept
    reread=$kept
  fi
  echo "$have $(elapsed "$t0" "$t1") $first $resent $resumed $release $reread $prefix_read"
}

# One line per run in $W/runs: tool point round landed wall first resent resumed release reread prefix_read full_wall
: >"$W/runs"
for round in $(seq "$RUNS"); do
  for t in "${tools[@]}"; do
    full "$t" >"$W/full" || bench_die "$t: full run failed: $(tail -3 "$W/full.out")"
    f=$(cat "$W/full")
    bench_log "round $round $t full run: $f s"
    for p in $POINTS; do
      interrupted "$t" "$p" >"$W/one" || bench_die "$t: interrupted run at $p % failed"
      echo "$t $p $round $(cat "$W/one") $f" >>"$W/runs"
      bench_log "round $round $t killed at $p %: $(cat "$W/one") (landed wall first resent resumed release)"
    done
  done
done

col() { awk -v t="$1" -v p="$2" -v c="$3" '$1 == t && $2 == p && $c != "-" {print $c}' "$W/runs" | median; }
md=$W/resume.md
{
  echo "# Resume after kill -9 of the sender ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(human "$bytes") file over 127.0.0.1 (sesscp --insecure; rsync ${rsync_opts[*]:0:2} to rsyncd), median of $RUNS rounds,"
  echo "$(nproc) cores, destination on $(df -PT "$W" | awk 'NR==2 {print $2}'). Each round: one uninterrupted run, then per kill point a run killed when"
  echo "that share of the file had landed and the completing re-run. Ratio = completing run / uninterrupted run of the same round."
  echo "The re-run starts when the receiver is ready again (sesscp: it has logged the end of the killed session, before"
  echo "which it answers busy; rsync: the daemon's connection processes have exited): that wait is \"receiver ready\"."
  if ((COLD)); then echo "COLD=1: the destination's files were dropped from the page cache before each re-run (as after a reboot)."
  else echo "COLD=0: the re-run follows the kill; what a tool wrote through the page cache is still cached (sesscp writes with O_DIRECT)."; fi
  echo
  echo "| tool | killed at | landed at kill | resumed at | receiver ready after kill s | completing run s | uninterrupted s | ratio | first new byte s | bytes re-sent | bytes re-read | prefix read s | goal ratio (min-max) | sum ratio |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for t in "${tools[@]}"; do
    for p in $POINTS; do
      goals=$(awk -v t="$t" -v p="$p" -v s="$bytes" '$1 == t && $2 == p {
        rest = $12 * (1 - $8 / s); g = rest > $11 ? rest : $11; printf "%.3f\n", $5 / g}' "$W/runs")
      sums=$(awk -v t="$t" -v p="$p" -v s="$bytes" '$1 == t && $2 == p {
        rest = $12 * (1 - $8 / s); printf "%.3f\n", $5 / (rest + $11)}' "$W/runs")
      printf '| %s | %s %% | %s MiB | %s MiB | %s | %s | %s | %s | %s | %s MiB | %s MiB | %s | %s (%s-%s) | %s |\n' "$t" "$p" \
        "$(awk -v b="$(col "$t" "$p" 4)" 'BEGIN {printf "%.0f", b / 2^20}')" \
        "$(awk -v b="$(col "$t" "$p" 8)" 'BEGIN {printf "%.0f", b / 2^20}')" \
        "$(col "$t" "$p" 9)" "$(col "$t" "$p" 5)" "$(col "$t" "$p" 12)" \
        "$(awk -v t="$t" -v p="$p" '$1 == t && $2 == p {printf "%.3f\n", $5 / $12}' "$W/runs" | median)" \
        "$(col "$t" "$p" 6)" "$(awk -v b="$(col "$t" "$p" 7)" 'BEGIN {printf "%.1f", b / 2^20}')" \
        "$(awk -v b="$(col "$t" "$p" 10)" 'BEGIN {printf "%.0f", b / 2^20}')" "$(col "$t" "$p" 11)" \
        "$(echo "$goals" | median)" "$(echo "$goals" | sort -g | head -1)" "$(echo "$goals" | sort -g | tail -1)" \
        "$(echo "$sums" | median)"
    done
  done
  echo
  if [[ -n ${BASE_BIN:-} ]]; then
    echo "Same-run A/B against BASE_BIN ($("$BASE_BIN" --version 2>&1 | head -1)): sesscp's time / sesscp-base's, per round, median (min-max)."
    echo "Uninterrupted: $(awk '{print $1, $3, $12}' "$W/runs" | sort -u | paired /dev/stdin sesscp-base sesscp)."
    for p in $POINTS; do
      echo "Completing run after a kill at $p %: $(awk -v p="$p" '$2 == p {print $1, $3, $5}' "$W/runs" | paired /dev/stdin sesscp-base sesscp)."
    done
    echo
  fi
  echo "Every run (tool, kill %, round, bytes landed at kill, completing s, first new byte s, bytes re-sent, resumed at, receiver ready s, bytes re-read, prefix read s, uninterrupted s):"
  echo
  echo '```'
  cat "$W/runs"
  echo '```'
  echo
  echo "Rerun: \`SIZE=$SIZE RUNS=$RUNS POINTS=\"$POINTS\" COLD=$COLD bench/resume.sh\`"
} >"$md"
mkdir -p "$OUT_DIR"
cp "$md" "$OUT_DIR/resume-latest.md"
cat "$md"
