#!/usr/bin/env bash
# Scenario: resource limits against idle, hostile or oversized peers. The
# receiver must bound each of them, stay alive, and keep serving:
#   a) slow-loris: 5 TCP connections to a TLS receiver that send nothing are
#      each closed within the 10 s handshake deadline (+3 s); a normal send
#      started while they are open succeeds;
#   b) --max-sessions 4 with 4 idle connections held: a send either succeeds
#      once they time out or exits 69/77 promptly; once they are closed a
#      send succeeds;
#   c) 20 connections each sending 64 KiB of random bytes: then a normal send
#      succeeds and the receiver is alive;
#   d) --insecure receiver, a valid HELLO then a DATA header announcing
#      0xFFFFFFFF bytes: ABORT (0x7F) or close within 5 s;
#   e) --max-size 1M and a 2 MiB file: the sender exits 69 naming max-size;
#      no NAME and no .part with data in DIR;
#   f) an 8 MiB tmpfs as DIR (root only, else SKIP for this part): a 16 MiB
#      send exits non-zero naming the lack of space; the receiver keeps serving.
# In every part nothing may appear outside the receiver's --dir.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

PEER_BIN=$(need_tool testpeer)

# Part f mounts a tmpfs; unmount it (lazily: the receiver may still hold it)
# before lib.sh's cleanup removes the scratch directory.
MOUNTED=""
trap 'rc=$?; if [[ -n $MOUNTED ]]; then umount -l "$MOUNTED" 2>/dev/null || true; fi; (exit $rc); itest_cleanup' EXIT

small="$T/small.bin"
gen_file "$small" $((4 * MiB)) sec-limits-small
opts=(--timeout 30)



# receiver_alive PID LOG WHAT
receiver_alive() {
  is_running "$1" || fail_with_logs "receiver died: $3" "$2"
  ok "receiver alive ($3)"
}

# normal_send TAG PORT DEST NAME [ARGS...]: the small file must arrive intact.
normal_send() {
  local tag=$1 port=$2 dest=$3 nm=$4
  shift 4
  run_send "$T/$tag.send-$nm.log" "$small" "127.0.0.1:$port" --name "$nm" "${opts[@]}" "$@"
  assert_rc 0 "$SEND_RC" "[$tag] normal send of $nm ($(fmt_ms "$SEND_MS") s)" "$T/$tag.send-$nm.log"
  assert_same "$small" "$dest/$nm"
}

# open_idle N: open N TCP connections that send nothing; IDLE_FDS holds them.
declare -a IDLE_FDS=()
open_idle() {
  local n=$1 i fd
  for ((i = 0; i < n; i++)); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$PORT" || fail "cannot connect to 127.0.0.1:$PORT"
    IDLE_FDS+=("$fd")
  done
}
close_idle() {
  local fd
  for fd in "${IDLE_FDS[@]}"; do exec {fd}>&-; done
  IDLE_FDS=()
}

# ------------------------------------------------------------ a) slow-loris
tag="a-slowloris"
new_dest "$tag"
start_recv "$DEST" "$T/$tag.recv.log"
rpid=$RECV_PID
PORT=$RECV_PORT
check "[a] 5 silent connections are closed within 10 s + 3 s; a send meanwhile succeeds"
t_open=$(now_ms)
open_idle 5
log "[a] opened 5 idle connections (fds ${IDLE_FDS[*]})"
normal_send "$tag" "$PORT" "$DEST" during-loris.bin
for fd in "${IDLE_FDS[@]}"; do
  left=$(((t_open + 13000 - $(now_ms) + 999) / 1000))
  ((left > 0)) || left=1
  rc=0
  timeout "$left" cat <&"$fd" >/dev/null 2>&1 || rc=$?
  el=$(($(now_ms) - t_open))
  [[ $rc -ne 124 ]] || fail_with_logs "[a] idle connection (fd $fd) still open $(fmt_ms "$el") s after it was opened" "$T/$tag.recv.log"
  ok "[a] idle connection fd $fd closed by the receiver $(fmt_ms "$el") s after opening (read exit $rc)"
  ((el <= 13000)) || fail "[a] closed after $(fmt_ms "$el") s > 13 s"
done
close_idle
receiver_alive "$rpid" "$T/$tag.recv.log" "after the slow-loris connections"

# ---------------------------------------------------- c) random-bytes flood
# (same receiver as a)
check "[c] 20 connections each sending 64 KiB of random bytes"
head -c $((64 * 1024)) /dev/urandom >"$T/random.bin"
declare -a flood=()
t0=$(now_ms)
for ((i = 0; i < 20; i++)); do
  # Each in its own bounded shell: a reset while writing must not matter.
  # shellcheck disable=SC2016  # $1/$2 are the inner shell's arguments
  timeout -k 2 15 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 3; cat "$2" >&3 2>/dev/null; timeout 12 cat <&3 >/dev/null 2>&1; [ $? -ne 124 ] || exit 124; exit 0' \
    flood "$PORT" "$T/random.bin" 2>/dev/null &
  flood+=("$!")
  register "$!"
done
slow=0
for pid in "${flood[@]}"; do
  wait_exit "$pid" 30 || true
  [[ $WAIT_RC -ne 124 ]] || slow=$((slow + 1))
done
log "[c] 20 floods done in $(fmt_ms $(($(now_ms) - t0))) s ($slow not closed by the receiver within 15 s)"
((slow == 0)) || fail_with_logs "[c] $slow flood connections were not closed by the receiver within 12 s" "$T/$tag.recv.log"
receiver_alive "$rpid" "$T/$tag.recv.log" "after the random-bytes flood"
normal_send "$tag" "$PORT" "$DEST" after-flood.bin
receiver_alive "$rpid" "$T/$tag.recv.log" "after the send that followed the flood"
assert_parent_unchanged "$tag"
kill9 "$rpid"

# -------------------------------------------------------- b) --max-sessions
tag="b-maxsessions"
new_dest "$tag"
start_recv "$DEST" "$T/$tag.recv.log" --max-sessions 4
rpid=$RECV_PID
PORT=$RECV_PORT
check "[b] --max-sessions 4 with 4 idle connections held: a send succeeds after they time out or exits 69/75/77 promptly"
open_idle 4
sleep 0.3
receiver_alive "$rpid" "$T/$tag.recv.log" "4 idle connections open"
run_send "$T/$tag.send1.log" "$small" "127.0.0.1:$PORT" --name while-full.bin "${opts[@]}"
log "[b] send while 4 idle connections are held: exit $SEND_RC after $(fmt_ms "$SEND_MS") s: $(grep -m1 '^sesscp: error' "$T/$tag.send1.log" || echo 'no error')"
case $SEND_RC in
0)
  assert_same "$small" "$DEST/while-full.bin"
  ok "[b] the send succeeded (the idle connections timed out first)"
  ;;
69 | 75 | 77)
  ((SEND_MS <= 5000)) || fail_with_logs "[b] refused only after $(fmt_ms "$SEND_MS") s (not promptly)" "$T/$tag.send1.log"
  ok "[b] refused promptly with exit $SEND_RC ($(fmt_ms "$SEND_MS") s)"
  [[ ! -e $DEST/while-full.bin ]] || fail "[b] while-full.bin exists although the send was refused"
  ;;
*) fail_with_logs "[b] send exited $SEND_RC; expected 0, 69, 75 (busy) or 77" "$T/$tag.send1.log" "$T/$tag.recv.log" ;;
esac
receiver_alive "$rpid" "$T/$tag.recv.log" "after the send against a full receiver"
close_idle
check "[b] after the idle connections are closed, a send succeeds"
# The receiver notices the closed connections within its poll slice; allow
# a few bounded attempts.
for attempt in 1 2 3 4 5; do
  run_send "$T/$tag.send2.log" "$small" "127.0.0.1:$PORT" --name after-idle.bin "${opts[@]}"
  [[ $SEND_RC -eq 0 ]] && break
  log "[b] attempt $attempt: exit $SEND_RC; retrying in 1 s"
  sleep 1
done
assert_rc 0 "$SEND_RC" "[b] send after closing the idle connections (attempt $attempt)" "$T/$tag.send2.log" "$T/$tag.recv.log"
assert_same "$small" "$DEST/after-idle.bin"
receiver_alive "$rpid" "$T/$tag.recv.log" "end of part b"
assert_parent_unchanged "$tag"
kill9 "$rpid"

# ------------------------------------------------------ d) oversized frame
tag="d-oversized"
new_dest "$tag"
start_recv "$DEST" "$T/$tag.recv.log" --insecure
rpid=$RECV_PID
check "[d] valid HELLO, then a DATA header announcing 0xFFFFFFFF bytes: ABORT or close within 5 s"
rc=0
t0=$(now_ms)
out=$(timeout -k 2 5 "$PEER_BIN" "127.0.0.1:$RECV_PORT" --raw-hex 12000000ffffffff 2>"$T/$tag.peer.log") || rc=$?
el=$(($(now_ms) - t0))
log "[d] testpeer exit $rc after $(fmt_ms "$el") s: ${out:-<no reply line>}"
case $rc in
0) [[ $out == "reply: ABORT "* ]] || fail_with_logs "[d] reply '$out', expected ABORT" "$T/$tag.peer.log" "$T/$tag.recv.log"
  ok "[d] ABORT (0x7F): $out" ;;
2) ok "[d] connection closed without a reply" ;;
124 | 137) fail_with_logs "[d] no ABORT and no close within 5 s" "$T/$tag.peer.log" "$T/$tag.recv.log" ;;
*) fail_with_logs "[d] testpeer failed (exit $rc)" "$T/$tag.peer.log" "$T/$tag.recv.log" ;;
esac
receiver_alive "$rpid" "$T/$tag.recv.log" "after the oversized frame"
normal_send "$tag" "$RECV_PORT" "$DEST" after-oversized.bin --insecure
assert_parent_unchanged "$tag"
kill9 "$rpid"

# ------------------------------------------------------------ e) --max-size
tag="e-maxsize"
new_dest "$tag"
start_recv "$DEST" "$T/$tag.recv.log" --max-size 1M
rpid=$RECV_PID
check "[e] --max-size 1M and a 2 MiB file: exit 69 naming max-size, nothing stored"
gen_file "$T/big.bin" $((2 * MiB)) sec-limits-big
run_send "$T/$tag.send.log" "$T/big.bin" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 69 "$SEND_RC" "[e] 2 MiB file against --max-size 1M" "$T/$tag.send.log" "$T/$tag.recv.log"
assert_contains "$T/$tag.send.log" "max-size" "[e] sender's message"
log "[e] sender: $(grep -m1 '^sesscp: error' "$T/$tag.send.log" || true)"
[[ ! -e $DEST/big.bin ]] || fail "[e] $DEST/big.bin exists"
if [[ -e $DEST/big.bin.sesscp.part ]]; then
  [[ $(written_bytes "$DEST/big.bin.sesscp.part") -eq 0 ]] || fail "[e] big.bin.sesscp.part holds data"
fi
if [[ -e $DEST/big.bin.sesscp.journal ]]; then
  [[ $(fsize "$DEST/big.bin.sesscp.journal") -eq 0 ]] || fail "[e] big.bin.sesscp.journal is not empty"
fi
held=""
for f in "$DEST"/.[!.]* "$DEST"/*; do
  [[ -e $f ]] || continue
  held+="${f##*/} "
  case ${f##*/} in
  big.bin.sesscp.part | big.bin.sesscp.journal) ;;
  *) fail "[e] unexpected file in DIR: ${f##*/}" ;;
  esac
done
ok "[e] DIR holds: ${held:-nothing} (no big.bin, no data)"
receiver_alive "$rpid" "$T/$tag.recv.log" "after the refused file"
assert_parent_unchanged "$tag"
kill9 "$rpid"

# ------------------------------------------------------ f) no space (tmpfs)
tag="f-nospace"
new_dest "$tag"
if mount -t tmpfs -o size=8m tmpfs "$DEST" 2>"$T/$tag.mount.log"; then
  MOUNTED=$DEST
  log "[f] mounted an 8 MiB tmpfs on $DEST"
  start_recv "$DEST" "$T/$tag.recv.log"
  rpid=$RECV_PID
  check "[f] a 16 MiB send into 8 MiB of space fails naming the lack of space; the receiver keeps serving"
  gen_file "$T/huge.bin" $((16 * MiB)) sec-limits-huge
  run_send "$T/$tag.send.log" "$T/huge.bin" "127.0.0.1:$RECV_PORT" "${opts[@]}"
  log "[f] sender exit $SEND_RC: $(grep -m1 '^sesscp: error' "$T/$tag.send.log" || true)"
  [[ $SEND_RC -ne 0 ]] || fail_with_logs "[f] 16 MiB into an 8 MiB tmpfs exited 0" "$T/$tag.send.log"
  assert_contains "$T/$tag.send.log" "space" "[f] sender's message"
  [[ ! -e $DEST/huge.bin ]] || fail "[f] $DEST/huge.bin exists"
  receiver_alive "$rpid" "$T/$tag.recv.log" "after the no-space failure"
  gen_file "$T/fits.bin" $((1 * MiB)) sec-limits-fits
  run_send "$T/$tag.send2.log" "$T/fits.bin" "127.0.0.1:$RECV_PORT" "${opts[@]}"
  assert_rc 0 "$SEND_RC" "[f] a 1 MiB file afterwards" "$T/$tag.send2.log" "$T/$tag.recv.log"
  assert_same "$T/fits.bin" "$DEST/fits.bin"
  assert_parent_unchanged "$tag"
  kill9 "$rpid"
  umount "$DEST" 2>/dev/null || umount -l "$DEST"
  MOUNTED=""
else
  log "[f] SKIP: cannot mount a tmpfs here ($(head -c 200 "$T/$tag.mount.log")); the other parts still count"
fi
log "PASS"
