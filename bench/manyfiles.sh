#!/usr/bin/env bash
# Many small files on loopback, in one run: sesscp (TLS and --insecure)
# against rsync -a to an rsync daemon and tar | socat. Prints a Markdown
# table of wall times (median of RUNS), each into a fresh directory on the
# same filesystem; every result is checked with diff -r.
#
#   bench/manyfiles.sh [FILES=10000] [RUNS=4]
# Files are 4-64 KiB (uniform, fixed seed), 100 per directory. Uses
# build/sesscp; needs rsync and socat (Debian packages of the same names).
# Destinations are kept until the end: on this machine's ext4, which has no
# journal, deleting 10,000 files makes every file created in the next
# minutes slow (the inode allocator skips each recently deleted inode, one
# buffer lookup at a time: recently_deleted() and find_get_block_common()
# took ~25 % of all CPU time in perf), so a tool run after a deletion paid
# for it. Leave a few minutes after deleting many files before a run.
# sesscp makes every file durable (syncfs per batch) before it confirms it;
# rsync and tar do not sync at all, so the table also shows sesscp with the
# cost of a final `sync` added to the others for comparison.
# BASE_BIN=PATH (a second sesscp binary, an older build) adds base-tls and
# base-insecure to the rotation and prints sesscp's time / base's per round,
# median (min-max): a same-run A/B.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-10000}
runs=${2:-4}
bin=$(realpath "${SESSCP_BIN:-build/sesscp}")
[ -x "$bin" ] || { echo "bench: $bin not built (run scripts/build.sh)" >&2; exit 1; }
for tool in rsync socat tar; do
  command -v "$tool" >/dev/null || { echo "bench: $tool missing (apt-get install $tool)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/sesscp-manyfiles.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" keygen -o "$work/key" >/dev/null 2>&1

echo "generating $files files of 4-64 KiB..." >&2
src=$work/src
mkdir -p "$src"
python3 - "$src" "$files" <<'PY'
import os, random, sys
src, files = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
pool = os.urandom(1 << 20)
for i in range(files):
    d = os.path.join(src, "d%d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    size = rng.randint(4096, 64 * 1024)
    off = rng.randint(0, len(pool) - size)
    with open(os.path.join(d, "f%d.bin" % i), "wb") as f:
        f.write(pool[off:off + size])
PY
bytes=$(du -sb "$src" | cut -f1)
echo "source: $files files, $bytes bytes (du -sb)" >&2
need=$((bytes * (runs * 4 + 1) * 11 / 10))
avail=$(df --output=avail -B1 "$work" | tail -1)
((avail > need)) || { echo "bench: $need bytes needed in $work (every destination is kept), $avail free" >&2; exit 1; }

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: until something listens there (5 s), without connecting.
wait_port() {
  for _ in $(seq 100); do
    [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ] && return 0
    sleep 0.05
  done
  return 1
}

run_sesscp() { # DEST [SECURITY-ARGS...] -> seconds on stdout (default: TLS with a shared key)
  local dst=$1 log port t0 t1 rpid bin=${use_bin:-$bin}
  shift
  [ $# -gt 0 ] || set -- --key-file "$work/key"
  # -q: no line per file, as the rsync daemon here logs no transfers
  # (its default); the port is chosen here since -q does not print it.
  log=$(mktemp "$work/recv.XXXXXX.log")
  port=$(free_port)
  "$bin" recv --listen "127.0.0.1:$port" --dir "$dst" --once -q "$@" 2>"$log" &
  rpid=$!
  pids+=("$rpid")
  wait_port "$port" || { echo "bench: receiver did not start" >&2; cat "$log" >&2; exit 1; }
  t0=$(now)
  # (set -e does not reach into this $(...) subshell: fail explicitly.)
  if ! "$bin" send "$src/" "127.0.0.1:$port" -q "$@"; then
    echo "bench: sesscp send failed" >&2
    kill "$rpid" 2>/dev/null
    exit 1
  fi
  wait "$rpid"
  t1=$(now)
  echo "$t1 - $t0" | bc
}

run_rsync() { # DEST -> seconds
  local dst=$1 port t0 t1 dpid
  port=$(free_port)
  cat >"$work/rsyncd.conf" <<CONF
use chroot = no
uid = $(id -un)
gid = $(id -gn)
[dst]
  path = $dst
  read only = no
CONF
  rsync --daemon --no-detach --port "$port" --address 127.0.0.1 --config "$work/rsyncd.conf" \
    --log-file "$work/rsyncd.log" &
  dpid=$!
  pids+=("$dpid")
  wait_port "$port" || { echo "bench: rsync daemon did not start" >&2; exit 1; }
  t0=$(now)
  rsync -a "$src/" "rsync://127.0.0.1:$port/dst/"
  t1=$(now)
  kill "$dpid"; wait "$dpid" 2>/dev/null || true
  echo "$t1 - $t0" | bc
}

run_tar() { # DEST -> seconds
  local dst=$1 port t0 t1 lpid
  port=$(free_port)
  (socat -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" - | tar -x -C "$dst") &
  lpid=$!
  pids+=("$lpid")
  wait_port "$port" || { echo "bench: socat did not listen" >&2; exit 1; }
  t0=$(now)
  tar -c -C "$src" . | socat -u - "TCP:127.0.0.1:$port"
  wait "$lpid"
  t1=$(now)
  echo "$t1 - $t0" | bc
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Write requests and bytes the work directory's block device completed
# (/sys/class/block/DEV/stat fields 5 and 7): unlike wall time on this
# machine, they do not drift, so they show what durability costs the disk.
blockdev=$(basename "$(df --output=source "$work" | tail -1)")
blockstat=/sys/class/block/$blockdev/stat
disk_writes() { if [ -r "$blockstat" ]; then awk '{print $5, $7}' "$blockstat"; else echo "0 0"; fi; }

declare -A result
# This machine's disk slows down as a run goes on (it recovers after a rest),
# so the order of the tools rotates every round: each tool takes each place
# in turn (use a multiple of 4 runs for a full rotation).
tools=(sesscp-tls sesscp-insecure rsync tar-socat)
if [ -n "${BASE_BIN:-}" ]; then
  base_bin=$(realpath "$BASE_BIN")
  tools+=(base-tls base-insecure)
fi
for ((r = 1; r <= runs; r++)); do
  for ((k = 0; k < ${#tools[@]}; k++)); do
    tool=${tools[$(((k + r - 1) % ${#tools[@]}))]}
    dst=$work/dst-$tool-$r
    mkdir -p "$dst"
    sync
    read -r w0 s0 < <(disk_writes)
    case $tool in
    sesscp-tls) secs=$(run_sesscp "$dst") ;;
    sesscp-insecure) secs=$(run_sesscp "$dst" --insecure) ;;
    base-tls) secs=$(use_bin=$base_bin run_sesscp "$dst") ;;
    base-insecure) secs=$(use_bin=$base_bin run_sesscp "$dst" --insecure) ;;
    rsync) secs=$(run_rsync "$dst") ;;
    tar-socat) secs=$(run_tar "$dst") ;;
    esac
    t0=$(now); sync; sync_s=$(echo "$(now) - $t0" | bc)
    read -r w1 s1 < <(disk_writes)
    result[$tool-ios]+="$((w1 - w0)) "
    result[$tool-mb]+="$(echo "($s1 - $s0) * 512 / 1000000" | bc) "
    diff -r "$src" "$dst" >/dev/null || { echo "bench: $tool: result differs from the source" >&2; exit 1; }
    echo "run $r: $tool ${secs}s (+ sync ${sync_s}s), $((w1 - w0)) disk writes" >&2
    result[$tool]+="$secs "
    result[$tool-sync]+="$(echo "$secs + $sync_s" | bc) "
  done
done

printf '\n%d files, %d bytes, median of %d runs, loopback, %s\n\n' "$files" "$bytes" "$runs" "$(date -u +%F)"
printf '| tool | seconds | files/s | MB/s | seconds incl. a final sync | time / rsync | disk write requests | MB written to disk |\n|---|---|---|---|---|---|---|---|\n'
rsync_m=$(tr ' ' '\n' <<<"${result[rsync]}" | grep . | median)
for tool in "${tools[@]}"; do
  m=$(tr ' ' '\n' <<<"${result[$tool]}" | grep . | median)
  ms=$(tr ' ' '\n' <<<"${result[$tool-sync]}" | grep . | median)
  ios=$(tr ' ' '\n' <<<"${result[$tool-ios]}" | grep . | median)
  mb=$(tr ' ' '\n' <<<"${result[$tool-mb]}" | grep . | median)
  printf '| %s | %.2f | %.0f | %.1f | %.2f | %.2f | %s | %s |\n' "$tool" "$m" "$(echo "$files / $m" | bc -l)" \
    "$(echo "$bytes / $m / 1000000" | bc -l)" "$ms" "$(echo "$m / $rsync_m" | bc -l)" "$ios" "$mb"
done
if [ -n "${BASE_BIN:-}" ]; then
  # Per round: this build's seconds / the base binary's, then median (min-max).
  ab() { paste -d' ' <(tr ' ' '\n' <<<"${result[$1]}" | grep .) <(tr ' ' '\n' <<<"${result[$2]}" | grep .) |
    awk '{printf "%.3f\n", $2 / $1}' | sort -g | awk '{x[NR] = $1} END {m = (NR % 2) ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2
      printf "%.2f (%.2f-%.2f, %d rounds)", m, x[1], x[NR], NR}'; }
  printf '\nSame-run A/B against %s (%s): sesscp / base per round, median (min-max): TLS %s; --insecure %s. Below 1: this build is faster.\n' \
    "$base_bin" "$("$base_bin" --version 2>&1 | head -1)" "$(ab base-tls sesscp-tls)" "$(ab base-insecure sesscp-insecure)"
fi
