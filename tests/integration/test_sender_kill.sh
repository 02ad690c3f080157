#!/usr/bin/env bash
# Scenario: the sender is killed with SIGKILL at ~20 %, ~50 % and ~85 % of a
# 256 MiB file (three interrupted runs against one long-lived receiver), then
# a final unthrottled run completes it. After each kill only the .part and
# .journal exist; every run resumes further than the previous one; the result
# is byte-identical; and the bytes received more than once stay within
# 3 x (chunk + window).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

name=data.bin
size=$((256 * MiB))
chunk=$((256 * 1024))
window=$((4 * MiB))
rate=$((64 * MiB))
dest="$T/dest"
part="$dest/$name.sesscp.part"
mkdir -p "$dest"
gen_file "$T/$name" "$size" sender-kill
opts=(--chunk-size 256K --window 4M)

start_recv "$dest" "$T/recv.log"
rpid=$RECV_PID

# resuming_offset LOG: OFFSET from the sender's "sesscp: NAME: resumed at 7.2 GiB of 10.0 GiB (byte OFFSET)".
resuming_offset() {
  sed -nE "s/^sesscp: $name: resumed at .* \\(byte ([0-9]+)\\)\$/\\1/p" "$1" | tail -n 1
}

prev=0
run=0
for pct in 20 50 85; do
  run=$((run + 1))
  target=$((size * pct / 100))
  check "run $run: kill -9 the sender (--bwlimit 64M) once the part holds ~$pct % ($target bytes)"
  start_send "$T/send$run.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 64M
  wait_progress "$part" "$target" "$SEND_PID" "$rate" "$prev" 120
  kill9 "$SEND_PID"
  log "run $run: killed the sender at ~$PROGRESS bytes in the part ($((PROGRESS * 100 / size)) %)"
  if ((run > 1)); then
    off=$(resuming_offset "$T/send$run.log")
    [[ -n $off ]] || fail_with_logs "run $run: sender did not print 'sesscp: $name: resumed at ... (byte OFFSET)'" "$T/send$run.log"
    log "run $run: sender said it resumed at $off"
  fi
  # The receiver must notice the dead peer, checkpoint and print its line
  # before the next run (otherwise the next run would be refused as busy).
  wait_summary "$T/recv.log" recv "$name" "$run" 20
  last_summary "$T/recv.log" recv "$name"
  log "run $run: receiver summary: state=$S_STATE resumed_at=$S_OFFSET received=$S_N"
  [[ $S_STATE == interrupted ]] || fail_with_logs "receiver state '$S_STATE' after the sender was killed, expected 'interrupted'" "$T/recv.log"
  assert_interrupted_state "$dest" "$name"
  prev=$PROGRESS
done

check "final unthrottled run completes"
run=$((run + 1))
run_send "$T/send$run.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "final send" "$T/send$run.log" "$T/recv.log"
last_summary "$T/send$run.log" send "$name"
log "final run: sender summary: state=$S_STATE resumed_at=$S_OFFSET sent=$S_N secs=$S_SECS rate=$S_RATE"
[[ $S_STATE == complete ]] || fail "final sender state '$S_STATE', expected 'complete'"
final_send_offset=$S_OFFSET
off=$(resuming_offset "$T/send$run.log")
[[ -n $off ]] || fail_with_logs "final run: sender did not print 'sesscp: $name: resumed at ... (byte OFFSET)'" "$T/send$run.log"
assert_same "$T/$name" "$dest/$name"
assert_no_leftovers "$dest" "$name"

wait_summary "$T/recv.log" recv "$name" "$run" 20
check "each run resumed further than the previous one"
mapfile -t lines < <(summaries "$T/recv.log" recv "$name")
[[ ${#lines[@]} -eq $run ]] || fail_with_logs "expected $run receiver summary lines for $name, got ${#lines[@]}" "$T/recv.log"
prev_off=-1
total_recv=0
declare -a offs=() recvd=()
for i in "${!lines[@]}"; do
  IFS='|' read -r _ st _ o n _ _ <<<"${lines[$i]}"
  offs+=("$o")
  recvd+=("$n")
  total_recv=$((total_recv + n))
  log "session $((i + 1)): state=$st resumed at $o, $n bytes received"
  if ((i == 0)); then
    [[ $o -eq 0 ]] || fail "first session resumed at $o, expected 0"
  else
    ((o > prev_off)) || fail "session $((i + 1)) resumed at $o, not beyond the previous session's $prev_off"
  fi
  prev_off=$o
done
[[ $final_send_offset -eq ${offs[-1]} ]] || fail "sender says final run resumed at $final_send_offset, receiver says ${offs[-1]}"
ok "resume offsets strictly increasing: ${offs[*]}"

check "bytes re-sent are bounded"
for ((i = 0; i < run - 1; i++)); do
  lost=$((offs[i] + recvd[i] - offs[i + 1]))
  log "kill $((i + 1)): $lost bytes received but not kept (chunk + window = $((chunk + window)))"
  assert_resent_bound "$lost" $((chunk + window)) "re-sent after kill $((i + 1))"
done
resent=$((total_recv - size))
log "total bytes received over $run sessions: $total_recv for a $size-byte file => $resent bytes re-sent ($((resent / 1024)) KiB)"
assert_resent_bound "$resent" $((3 * (chunk + window))) "total re-sent (3 x (chunk + window))"

is_running "$rpid" || fail_with_logs "receiver died" "$T/recv.log"
log "PASS"
