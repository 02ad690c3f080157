#!/usr/bin/env bash
# Scenario: the receiver is killed with SIGKILL at ~50 % of a 256 MiB file.
# The sender exits 75 (interrupted, re-run to resume); a new receiver on the
# same directory (new port) lets a re-run resume past 0 and complete
# byte-identical, re-sending at most window + chunk.
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
gen_file "$T/$name" "$size" receiver-kill
opts=(--chunk-size 256K --window 4M --timeout 30)

start_recv "$dest" "$T/recv1.log"
rpid1=$RECV_PID

check "kill -9 the receiver at ~50 % of a throttled (--bwlimit 64M) transfer"
start_send "$T/send1.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 64M
spid=$SEND_PID
wait_progress "$part" $((size / 2)) "$spid" "$rate" 0 120
kill9 "$rpid1"
log "killed the receiver at ~$PROGRESS bytes in the part ($((PROGRESS * 100 / size)) %)"

check "the sender notices and exits 75 (state saved, re-run to resume)"
t0=$(now_ms)
wait_exit "$spid" 60 || fail_with_logs "sender still running 60 s after the receiver was killed" "$T/send1.log"
log "sender exited $WAIT_RC after $(fmt_ms $(($(now_ms) - t0))) s"
assert_rc 75 "$WAIT_RC" "sender after receiver kill" "$T/send1.log"
grep -q '^sesscp: error: ' "$T/send1.log" ||
  fail_with_logs "sender printed no 'sesscp: error: ...' line" "$T/send1.log"
last_summary "$T/send1.log" send "$name"
log "run 1: sender summary: state=$S_STATE resumed_at=$S_OFFSET sent=$S_N"
[[ $S_STATE == interrupted ]] || fail_with_logs "sender state '$S_STATE', expected 'interrupted'" "$T/send1.log"
sent1=$S_N
assert_interrupted_state "$dest" "$name"

check "a new receiver on the same directory lets the sender resume"
start_recv "$dest" "$T/recv2.log"
run_send "$T/send2.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "resumed send" "$T/send2.log" "$T/recv2.log"
grep -E "^sesscp: $name: resumed at .* \(byte [0-9]+\)" "$T/send2.log" | sed 's/^/    /' ||
  fail_with_logs "sender did not print 'sesscp: $name: resumed at SIZE of TOTAL (byte OFFSET)'" "$T/send2.log"
last_summary "$T/send2.log" send "$name"
log "run 2: sender summary: state=$S_STATE resumed_at=$S_OFFSET sent=$S_N secs=$S_SECS rate=$S_RATE"
[[ $S_STATE == complete ]] || fail "resumed sender state '$S_STATE', expected 'complete'"
((S_OFFSET > 0)) || fail "resumed at $S_OFFSET, expected > 0"
((S_OFFSET + S_N == size)) || fail "resumed at $S_OFFSET + $S_N bytes sent != $size"
ok "resumed at $S_OFFSET ($((S_OFFSET * 100 / size)) %), $S_N bytes sent"
sent2=$S_N
assert_same "$T/$name" "$dest/$name"
assert_no_leftovers "$dest" "$name"

check "bytes re-sent are bounded by window + chunk"
resent=$((sent1 + sent2 - size))
log "sent $sent1 + $sent2 = $((sent1 + sent2)) bytes for a $size-byte file => $resent bytes re-sent ($((resent / 1024)) KiB)"
assert_resent_bound "$resent" $((chunk + window)) "re-sent after receiver kill (chunk + window)"
log "PASS"
