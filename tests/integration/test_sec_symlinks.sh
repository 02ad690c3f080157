#!/usr/bin/env bash
# Security: links and special files planted in --dir (TLS, shared key).
#   - NAME.sesscp.part, NAME.sesscp.journal or NAME planted as a symlink to a
#     file outside --dir: the outside file is never written;
#   - a FIFO planted as NAME.sesscp.part or NAME.sesscp.journal: refused
#     promptly, no hang;
#   - NAME.sesscp.part swapped for a symlink (mv -T, atomic) while a throttled
#     transfer runs: the receiver writes through its open descriptor, so the
#     outside file stays byte-for-byte the same; what NAME ends up being is
#     printed (a published symlink is reported as a finding).
# --dir lives in a parent directory with a sentinel file and the "outside"
# target files; the parent's listing (type, size, mode, mtime, content hash)
# is compared before and after every case.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

P="$T/parent"
D="$P/dest"
mkdir -p "$D" "$T/src"
printf 'sentinel\n' >"$P/sentinel"
for i in 1 2 3 4 5 6; do
  printf 'outside file %d: must never be written by the receiver\n' "$i" >"$P/outside$i"
  chmod 600 "$P/outside$i" # writable by the receiver's user: only the receiver's care protects it
done


# assert_unchanged_since_start WHAT: nothing outside --dir changed since the start.
assert_unchanged_since_start() {
  parent_listing "$P" "$D" >"$T/parent.now"
  if ! diff -u "$T/parent.before" "$T/parent.now" >"$T/parent.diff"; then
    show_log "$T/parent.diff" "parent listing diff"
    fail "$1: something outside --dir changed"
  fi
  ok "$1: nothing outside --dir changed ($(wc -l <"$T/parent.before") entries compared)"
}

# assert_outside_unchanged N SHA: the outside file N is byte-for-byte the same.
assert_outside_unchanged() {
  local f="$P/outside$1" now
  [[ -f $f && ! -L $f ]] || fail "$f is no longer a regular file"
  now=$(sha "$f")
  [[ $now == "$2" ]] || fail "$f was modified: sha256 $now, expected $2"
  ok "outside$1 byte-for-byte unchanged ($(fsize "$f") bytes, sha256 ${now:0:16}...)"
}

# assert_refused_rc WHAT LOG: the send was refused. 69 (refused) or 73
# (cannot create) are the natural codes; 75 is what docs/PROTOCOL.md gives a
# sender for ABORT reason 11 "receiver cannot create the output" (the sender
# treats the receiver's disk trouble as transient). Anything else fails.
assert_refused_rc() {
  case $SEND_RC in
  69 | 73 | 75) ok "$1: send refused with exit $SEND_RC ($(case $SEND_RC in 69) echo refused ;; 73) echo cannot create ;; 75) echo 'interrupted: receiver cannot create the output, per PROTOCOL.md' ;; esac))" ;;
  *) fail_with_logs "$1: send exit $SEND_RC, expected a refusal (69, 73, or 75 for ABORT 'cannot create')" "$2" "$T/recv.log" ;;
  esac
  grep -q 'error: ' "$2" || fail_with_logs "$1: no error message" "$2"
}

declare -A OUT_SHA=()
for i in 1 2 3 4 5 6; do OUT_SHA[$i]=$(sha "$P/outside$i"); done
parent_listing "$P" "$D" >"$T/parent.before"

gen_file "$T/src/small.bin" $((2 * MiB + 333)) sec-symlinks
start_recv "$D" "$T/recv.log"
rpid=$RECV_PID

receiver_alive() {
  is_running "$rpid" || fail_with_logs "the receiver died ($1)" "$T/recv.log"
  ok "receiver still running after: $1"
}

# --------------------------------------------------------- planted symlinks

check "NAME.sesscp.part planted as a symlink to a file outside --dir: refused, outside file unchanged"
ln -s "$P/outside1" "$D/n1.sesscp.part"
run_send "$T/s1.log" "$T/src/small.bin" "127.0.0.1:$RECV_PORT" --name n1
log "sender exit $SEND_RC: $(grep -m1 'error:' "$T/s1.log" || echo '(no error line)')"
assert_refused_rc "symlinked .sesscp.part" "$T/s1.log"
assert_outside_unchanged 1 "${OUT_SHA[1]}"
[[ ! -e $D/n1 ]] || fail "$D/n1 was created although the transfer was refused"
assert_unchanged_since_start "symlinked .sesscp.part"
receiver_alive "symlinked .sesscp.part"

check "NAME.sesscp.journal planted as a symlink to a file outside --dir: refused, outside file unchanged"
ln -s "$P/outside2" "$D/n2.sesscp.journal"
run_send "$T/s2.log" "$T/src/small.bin" "127.0.0.1:$RECV_PORT" --name n2
log "sender exit $SEND_RC: $(grep -m1 'error:' "$T/s2.log" || echo '(no error line)')"
assert_refused_rc "symlinked .sesscp.journal" "$T/s2.log"
assert_outside_unchanged 2 "${OUT_SHA[2]}"
[[ ! -e $D/n2 ]] || fail "$D/n2 was created although the transfer was refused"
assert_unchanged_since_start "symlinked .sesscp.journal"
receiver_alive "symlinked .sesscp.journal"

check "NAME itself planted as a symlink to a file outside --dir: regular file with the data, or refused"
ln -s "$P/outside3" "$D/n3"
run_send "$T/s3.log" "$T/src/small.bin" "127.0.0.1:$RECV_PORT" --name n3
log "sender exit $SEND_RC: $(grep -m1 'error:' "$T/s3.log" || echo '(no error line)')"
assert_outside_unchanged 3 "${OUT_SHA[3]}"
if [[ $SEND_RC -eq 0 ]]; then
  [[ -f $D/n3 && ! -L $D/n3 ]] || fail "transfer succeeded but $D/n3 is not a regular file ($(stat -c %F "$D/n3"))"
  assert_same "$T/src/small.bin" "$D/n3"
  ok "transfer succeeded and replaced the symlink with a regular file"
else
  grep -q 'error: .*n3' "$T/s3.log" ||
    fail_with_logs "refused (exit $SEND_RC) without a message naming n3" "$T/s3.log"
  [[ -L $D/n3 && $(readlink "$D/n3") == "$P/outside3" ]] || fail "$D/n3 changed although the transfer was refused"
  ok "refused with exit $SEND_RC and a message naming the file; the planted link is untouched"
fi
assert_unchanged_since_start "symlinked NAME"
receiver_alive "symlinked NAME"

# ------------------------------------------------------------------- FIFOs

fifo_case() {
  local n=$1 leaf=$2 what=$3
  check "a FIFO at $what: refused within 10 s, no hang"
  mkfifo "$D/$leaf"
  SESSCP_RUN_TIMEOUT=10 run_send "$T/s-$n.log" "$T/src/small.bin" "127.0.0.1:$RECV_PORT" --name "$n"
  log "sender exit $SEND_RC after $(fmt_ms "$SEND_MS") s: $(grep -m1 'error:' "$T/s-$n.log" || echo '(no error line)')"
  ((SEND_RC != 0)) || fail_with_logs "send succeeded with a FIFO at $what" "$T/s-$n.log" "$T/recv.log"
  ((SEND_MS <= 10000)) || fail "refusal took $(fmt_ms "$SEND_MS") s (> 10 s)"
  [[ -p $D/$leaf ]] || fail "the FIFO $D/$leaf was replaced"
  [[ ! -e $D/$n ]] || fail "$D/$n was created although the transfer was refused"
  ok "refused (exit $SEND_RC) in $(fmt_ms "$SEND_MS") s; the FIFO is left alone"
  assert_unchanged_since_start "FIFO at $what"
  receiver_alive "FIFO at $what"
}
fifo_case n4 n4.sesscp.part "NAME.sesscp.part"
fifo_case n6 n6.sesscp.journal "NAME.sesscp.journal"
assert_outside_unchanged 4 "${OUT_SHA[4]}"

# ------------------------------------------------------------- raced symlink

check "NAME.sesscp.part swapped (mv -T) for a symlink to an outside file during a throttled transfer"
size=$((64 * MiB))
name=n5
part="$D/$name.sesscp.part"
gen_file "$T/src/big.bin" "$size" sec-symlinks-race
start_send "$T/s5.log" "$T/src/big.bin" "127.0.0.1:$RECV_PORT" --name "$name" --bwlimit 16M
spid=$SEND_PID
# Every 10 ms for at most 10 s: whenever the path is a regular file (the
# receiver's part), atomically rename a prepared symlink over it.
swaps=0 first_swap_ms=-1 t0=$(now_ms) part_bytes_at_swap=0
for ((i = 0; i < 1000; i++)); do
  if [[ -f $part && ! -L $part ]]; then
    ln -s "$P/outside5" "$D/.evil.$i"
    sz=$(fsize "$part" 2>/dev/null || echo 0)
    if mv -T "$D/.evil.$i" "$part" 2>/dev/null; then
      swaps=$((swaps + 1))
      if ((first_swap_ms < 0)); then
        first_swap_ms=$(($(now_ms) - t0))
        part_bytes_at_swap=$sz
      fi
    else
      rm -f "$D/.evil.$i"
    fi
  fi
  is_running "$spid" || break
  sleep 0.01
done
log "swapped the part for a symlink $swaps time(s); first after $(fmt_ms $((first_swap_ms < 0 ? 0 : first_swap_ms))) s (part had $part_bytes_at_swap bytes)"
((swaps > 0)) || fail_with_logs "never saw $part as a regular file to swap (the race was not exercised)" "$T/s5.log" "$T/recv.log"
wait_exit "$spid" 120 || fail_with_logs "sender still running 120 s after the swap" "$T/s5.log" "$T/recv.log"
race_rc=$WAIT_RC
log "transfer outcome: sender exit $race_rc after $(fmt_ms $(($(now_ms) - SEND_T0))) s"
grep -E 'error:|send n5:' "$T/s5.log" | sed 's/^/    sender: /' || true
grep -E 'n5' "$T/recv.log" | sed 's/^/    receiver: /' || true
if [[ -L $D/$name ]]; then
  state="symlink -> $(readlink "$D/$name")"
elif [[ -f $D/$name ]]; then
  state="regular file, $(fsize "$D/$name") bytes, $([[ $(sha "$D/$name") == "$(sha "$T/src/big.bin")" ]] && echo "identical to the source" || echo "NOT identical to the source")"
elif [[ -e $D/$name ]]; then
  state="$(stat -c %F "$D/$name")"
else
  state="absent"
fi
log "afterwards: $name is: $state; $name.sesscp.part is: $([[ -L $part ]] && echo "symlink -> $(readlink "$part")" || ([[ -e $part ]] && stat -c %F "$part") || echo absent)"
if [[ -L $D/$name ]]; then
  log "FINDING: the receiver published the attacker's symlink as $D/$name (rename by path after the part was swapped)." \
    "Sender exit $race_rc. Readers of $name now get $(readlink "$D/$name") instead of the transferred data."
fi
# Hard assertion: nothing outside --dir was written.
assert_outside_unchanged 5 "${OUT_SHA[5]}"
assert_unchanged_since_start "raced symlink"
receiver_alive "raced symlink"

check "a normal transfer still works afterwards"
run_send "$T/s7.log" "$T/src/small.bin" "127.0.0.1:$RECV_PORT" --name ok.bin
assert_rc 0 "$SEND_RC" "normal send" "$T/s7.log" "$T/recv.log"
assert_same "$T/src/small.bin" "$D/ok.bin"
for i in 1 2 3 4 5 6; do assert_outside_unchanged "$i" "${OUT_SHA[$i]}"; done
assert_unchanged_since_start "all cases"
log "PASS"
