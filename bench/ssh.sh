#!/usr/bin/env bash
# sesscp over SSH against the tools people use over SSH, on loopback, in one
# run: the same file pushed by sesscp (one SSH connection, and --streams 4),
# scp, rsync -e ssh and sftp, to a real sshd started here on a random
# 127.0.0.1 port (the tests' start_sshd). Tools alternate within each round;
# each tool's time is divided by scp's in the same round and the median of
# those ratios is quoted with its min-max (one transfer varies 2-4x here).
# Then a resume: each tool killed (-9) once half the file is at the
# destination, then the same command again; sesscp against
# rsync --partial --append-verify -e ssh (which re-reads and checksums the
# partial file on both sides).
#
#   bench/ssh.sh                        # 1 GiB, 3 rounds
#   SIZE=256MiB RUNS=5 bench/ssh.sh
#
# sesscp prefers AES-GCM where the CPU has AES instructions (docs/SSH.md);
# scp-aes is scp with the same cipher, to tell the cipher from the rest.
# Environment: SIZE (default 1GiB), RUNS (3), TOOLS (default: sesscp
# sesscp-4 scp scp-aes rsync sftp), INSTALL (1: install missing packages),
# SESSCP_BIN, BENCH_DIR (default /var/tmp), OUT_DIR (bench/results).
# Writes OUT_DIR/ssh-latest.md and prints it. Root is needed (sshd logs in).
. "$(dirname "$0")/lib.sh"
# The tests' sshd, with the few helpers it needs mapped onto bench/lib.sh.
log() { bench_log "$@"; }
fail() { bench_die "$@"; }
skip() { bench_die "cannot run: $*"; }
register() { bench_track "$1"; }
is_running() { kill -0 "$1" 2>/dev/null; }
kill9() { kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
show_log() { tail -20 "$1" >&2; }
# shellcheck source=tests/integration/url_lib.sh
. "$BENCH_ROOT/tests/integration/url_lib.sh"

SIZE=${SIZE:-1GiB}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-sesscp sesscp-4 scp scp-aes rsync sftp}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
bytes=$(size_bytes "$SIZE")

bench_init ssh
bench_install openssh-server openssh-client rsync || true
bench_build
T=$W
start_sshd
ssh_opts=(-i "$SSH_KEY" -o "UserKnownHostsFile=$KNOWN_HOSTS" -o BatchMode=yes -o LogLevel=ERROR)
rsh="ssh -p $SSHD_PORT ${ssh_opts[*]}"
# The cipher sesscp's ssh negotiates (sesscp's preferred order: ssh/target.h).
order=$(grep -o 'Ciphers=aes[^"]*' "$BENCH_ROOT/ssh/target.h" | head -1)
cipher=$({ ssh -o "$order" -p "$SSHD_PORT" "${ssh_opts[@]}" -v root@127.0.0.1 true 2>&1 || true; } |
  sed -nE 's/.*kex: client->server cipher: ([^ ]+).*/\1/p' | head -1)
src=$W/src/data.bin
dst=$W/dst
mkdir -p "$W/src" "$dst"
make_source "$src" "$bytes"

have() {
  case $1 in
  rsync) command -v rsync >/dev/null ;;
  sftp) command -v sftp >/dev/null ;;
  *) return 0 ;;
  esac
}

# push TOOL: the command line that pushes $src into $dst.
push() {
  case $1 in
  sesscp) "$BIN" send "$src" "root@127.0.0.1:$dst" ${SESSCP_BENCH_V:--q} -e "$rsh" --remote-sesscp "$BIN" ;;
  sesscp-4) "$BIN" send "$src" "root@127.0.0.1:$dst" -q --streams 4 -e "$rsh" --remote-sesscp "$BIN" ;;
  scp) scp -q -P "$SSHD_PORT" "${ssh_opts[@]}" "$src" "root@127.0.0.1:$dst/" ;;
  scp-aes) scp -q -P "$SSHD_PORT" "${ssh_opts[@]}" -c aes128-gcm@openssh.com "$src" "root@127.0.0.1:$dst/" ;;
  rsync) rsync -q --partial --append-verify -e "$rsh" "$src" "root@127.0.0.1:$dst/" ;;
  sftp) printf 'put %s %s/\n' "$src" "$dst" | sftp -q -b - -P "$SSHD_PORT" "${ssh_opts[@]}" root@127.0.0.1 >/dev/null ;;
  esac
}

: >"$W/runs"
for round in $(seq "$RUNS"); do
  for tool in $TOOLS; do
    have "$tool" || continue
    rm -rf "${dst:?}"/* "$dst"/.[!.]* 2>/dev/null || true
    sync
    warm "$src"
    t0=$(now)
    push "$tool" 2>"$W/$tool.err" || bench_die "$tool failed: $(tail -3 "$W/$tool.err")"
    t1=$(now)
    cmp -s "$src" "$dst/data.bin" || bench_die "$tool: destination differs"
    echo "$tool $round $(elapsed "$t0" "$t1")" >>"$W/runs"
    bench_log "round $round $tool: $(elapsed "$t0" "$t1") s"
  done
done

# partial_bytes TOOL: bytes at the destination so far.
partial_bytes() {
  local f
  case $1 in
  sesscp) f=$dst/data.bin.sesscp.part ;;
  rsync) f=$dst/data.bin ;; # --append-verify writes in place
  esac
  [[ -n ${f:-} && -f $f ]] && stat -c %s "$f" || echo 0
}

# resume TOOL: kill -9 at 50 %, then time the completing run. Prints "first_s second_s".
resume() {
  local tool=$1 pid t0 t1 t2 t3 i
  rm -rf "${dst:?}"/* "$dst"/.[!.]* 2>/dev/null || true
  sync
  warm "$src"
  t0=$(now)
  push "$tool" 2>"$W/$tool.r1.err" &
  pid=$!
  bench_track "$pid"
  for ((i = 0; i < 6000; i++)); do
    (($(partial_bytes "$tool") >= bytes / 2)) && break
    kill -0 "$pid" 2>/dev/null || bench_die "$tool finished before 50 % could be reached; use a larger SIZE"
    sleep 0.01
  done
  kill_tree "$pid"
  wait "$pid" 2>/dev/null || true
  t1=$(now)
  sleep 1 # the remote end notices the lost connection and keeps its partial state
  warm "$src"
  t2=$(now)
  push "$tool" 2>"$W/$tool.r2.err" || bench_die "$tool resume failed: $(tail -3 "$W/$tool.r2.err")"
  t3=$(now)
  cmp -s "$src" "$dst/data.bin" || bench_die "$tool resume: destination differs"
  echo "$(elapsed "$t0" "$t1") $(elapsed "$t2" "$t3")"
}

: >"$W/resume"
for round in $(seq "$RUNS"); do
  for tool in sesscp rsync; do
    have "$tool" || continue
    r=$(resume "$tool")
    echo "$tool $round $r" >>"$W/resume"
    bench_log "resume round $round $tool: killed after ${r% *} s, completed in ${r#* } s"
  done
done

md=$W/ssh.md
{
  echo "# sesscp over SSH against scp, rsync -e ssh and sftp ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(human "$bytes") file pushed over loopback SSH (OpenSSH $(ssh -V 2>&1 | sed -nE 's/OpenSSH_([^ ,]+).*/\1/p'); sesscp's cipher ${cipher:-?},"
  echo "scp, rsync and sftp with ssh's default order: chacha20-poly1305@openssh.com)"
  echo "to a real disk ($(df -PT "$W" | awk 'NR==2 {print $2}')), $(nproc) cores; $RUNS rounds, tools alternating within each round."
  echo "Throughput ratio: scp's time / the tool's time in the same round, median (min-max); > 1 is faster than scp."
  echo
  echo "| tool | wall s (median) | MB/s | × scp (paired) |"
  echo "|---|---|---|---|"
  for tool in $TOOLS; do
    have "$tool" || continue
    w=$(awk -v t="$tool" '$1 == t {print $3}' "$W/runs" | median)
    # paired gives B/A: scp's time over the tool's is the tool's speed relative to scp.
    ratio=$(paired "$W/runs" "$tool" scp)
    printf '| %s | %s | %.0f | %s |\n' "$tool" "$w" "$(awk -v b="$bytes" -v w="$w" 'BEGIN {print b / w / 1e6}')" "$ratio"
  done
  echo
  echo "Resume: killed (-9) once half the file is at the destination, then the same command again."
  echo "rsync runs with --partial --append-verify (it keeps the partial file and re-reads it to verify)."
  echo
  echo "| tool | completing run s (median) | all rounds | × sesscp (paired) |"
  echo "|---|---|---|---|"
  for tool in sesscp rsync; do
    have "$tool" || continue
    w=$(awk -v t="$tool" '$1 == t {print $4}' "$W/resume" | median)
    all=$(awk -v t="$tool" '$1 == t {printf "%s%s", s, $4; s=" "}' "$W/resume")
    printf '| %s | %s | %s | %s |\n' "$tool" "$w" "$all" "$(paired "$W/resume" sesscp "$tool" 1 2 4)"
  done
  echo
  echo "Rerun: \`SIZE=$SIZE RUNS=$RUNS TOOLS=\"$TOOLS\" bench/ssh.sh\`"
} >"$md"
mkdir -p "$OUT_DIR"
cp "$md" "$OUT_DIR/ssh-latest.md"
cat "$md"
