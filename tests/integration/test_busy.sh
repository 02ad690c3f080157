#!/usr/bin/env bash
# Scenario: while a (throttled) transfer of NAME is in progress, a second
# sender offering another file under the same NAME is refused: exit 75
# (temporary: retry later) and "busy" on stderr. The first transfer then completes byte-identical.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

name=shared.bin
size=$((64 * MiB))
rate=$((16 * MiB))
dest="$T/dest"
mkdir -p "$dest"
gen_file "$T/first.bin" "$size" busy-first
gen_file "$T/second.bin" $((8 * MiB)) busy-second

start_recv "$dest" "$T/recv.log"
rpid=$RECV_PID

check "first transfer of $name in progress (--bwlimit 16M)"
start_send "$T/send1.log" "$T/first.bin" "127.0.0.1:$RECV_PORT" --name "$name" --bwlimit 16M
spid=$SEND_PID
wait_progress "$dest/$name.sesscp.part" $((4 * MiB)) "$spid" "$rate" 0 60
log "first transfer has ~$PROGRESS bytes in the part"

check "a second sender for the same name is refused as busy"
SESSCP_RUN_TIMEOUT=60 run_send "$T/send2.log" "$T/second.bin" "127.0.0.1:$RECV_PORT" --name "$name"
log "second sender: exit $SEND_RC after $(fmt_ms "$SEND_MS") s; stderr:"
sed 's/^/    /' "$T/send2.log"
is_running "$spid" || fail_with_logs "the first sender is no longer running: the check was not concurrent" "$T/send1.log"
assert_rc 75 "$SEND_RC" "second sender" "$T/send2.log" "$T/recv.log"
assert_contains "$T/send2.log" "busy" "second sender stderr"
grep -q '^sesscp: error: ' "$T/send2.log" ||
  fail_with_logs "second sender printed no 'sesscp: error: ...' line" "$T/send2.log"

check "the first transfer completes unharmed"
wait_exit "$spid" 120 || fail_with_logs "first sender did not finish within 120 s" "$T/send1.log" "$T/recv.log"
assert_rc 0 "$WAIT_RC" "first sender" "$T/send1.log" "$T/recv.log"
assert_same "$T/first.bin" "$dest/$name"
assert_no_leftovers "$dest" "$name"
last_summary "$T/send1.log" send "$name"
log "first sender summary: state=$S_STATE sent=$S_N secs=$S_SECS rate=$S_RATE"
[[ $S_STATE == complete ]] || fail "first sender state '$S_STATE', expected 'complete'"
is_running "$rpid" || fail_with_logs "receiver died" "$T/recv.log"
log "PASS"
