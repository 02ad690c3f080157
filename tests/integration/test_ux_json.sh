#!/usr/bin/env bash
# Scenario: --json on both sides for a full transfer, an interrupted one
# (receiver killed with SIGKILL) and the resumed one: every stdout line is
# one JSON object, the documented events come in order, the digests of both
# sides agree, exit codes are in session_end. Human text stays on stderr,
# with no carriage return (not a terminal). --log-file gets timestamped
# lines, debug included. A re-run of a finished transfer exits 0 at once.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
command -v jq >/dev/null 2>&1 || skip "jq not installed (scripts/deps.sh installs it)"

name=data.bin
size=$((24 * MiB))
dest="$T/dest"
mkdir -p "$dest"
gen_file "$T/$name" "$size" ux-json
opts=(--chunk-size 256K --window 2M --json)

check "full transfer: both sides' events, in order"
RECV_STDOUT="$T/recv1.json" start_recv "$dest" "$T/recv1.err" --once --json
rpid=$RECV_PID
timeout -k 5 60 "$BIN" send "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --log-file "$T/send.log" \
  >"$T/send1.json" 2>"$T/send1.err" || fail_with_logs "send exited $?" "$T/send1.err"
wait_exit "$rpid" 20 || fail "receiver --once did not exit"
assert_rc 0 "$WAIT_RC" "receiver --once" "$T/recv1.err"
assert_same "$T/$name" "$dest/$name"
assert_in_order "$T/send1.json" session_start file_offered phase resume_point checkpoint progress file_done session_end
assert_in_order "$T/recv1.json" session_start file_offered phase resume_point checkpoint progress phase file_done session_end
[[ $(json_field "$T/send1.json" resume_point .offset) == 0 ]] || fail "fresh transfer: resume_point offset is not 0"
[[ $(json_field "$T/send1.json" file_done .state) == complete ]] || fail_with_logs "file_done state" "$T/send1.json"
[[ $(json_field "$T/send1.json" file_done .bytes) == "$size" ]] || fail_with_logs "file_done bytes" "$T/send1.json"
[[ $(json_field "$T/send1.json" session_end .exit_code) == 0 ]] || fail_with_logs "session_end exit_code" "$T/send1.json"
[[ $(json_field "$T/send1.json" progress .done) == "$size" ]] || fail_with_logs "last progress .done" "$T/send1.json"
digest=$(json_field "$T/send1.json" file_done .digest)
[[ $digest == xxh3-128-list:* ]] || fail_with_logs "file_done digest '$digest'" "$T/send1.json"
[[ $(json_field "$T/recv1.json" file_done .digest) == "$digest" ]] || fail_with_logs "receiver's digest differs" "$T/recv1.json"
ok "sender and receiver: complete, $size bytes, digest $digest"
# Progress is bounded: at most 4 a second (plus the last one).
np=$(json_events "$T/send1.json" | grep -c '^progress$' || true)
secs=$(json_field "$T/send1.json" session_end .seconds)
awk -v n="$np" -v s="$secs" 'BEGIN { exit !(n <= 4 * s + 2) }' || fail "$np progress events in $secs s (more than 4/s)"
ok "$np progress events in $secs s"
[[ ! -s $T/send1.err ]] || grep -q '^sesscp: send data.bin: complete' "$T/send1.err" ||
  fail_with_logs "human text on stderr is not the summary" "$T/send1.err"
if grep -v '^{' "$T/send1.json" | grep -q .; then fail_with_logs "non-JSON text on stdout with --json" "$T/send1.json"; fi
ok "stdout holds JSON only; stderr: $(tail -n 1 "$T/send1.err")"

check "--log-file: timestamped lines, debug included without -v"
grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z sesscp\[[0-9]+\] send debug: session established with ' "$T/send.log" ||
  fail_with_logs "no timestamped debug line in the log file" "$T/send.log"
grep -qE ' send summary: send data.bin: complete' "$T/send.log" || fail_with_logs "no summary in the log file" "$T/send.log"
ok "$(wc -l <"$T/send.log") log lines, e.g. $(head -n 1 "$T/send.log")"

check "a re-run of the finished transfer exits 0 quickly, 'already complete'"
start_recv "$dest" "$T/recv2.err" --once
t0=$(now_ms)
timeout -k 5 60 "$BIN" send "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" >"$T/send2.json" 2>"$T/send2.err" ||
  fail_with_logs "re-run exited $?" "$T/send2.err"
el=$(($(now_ms) - t0))
[[ $(json_field "$T/send2.json" file_done .state) == "already complete" ]] || fail_with_logs "re-run state" "$T/send2.json"
assert_le "$el" 5000 "re-run of a finished transfer (ms)"
wait_exit "$RECV_PID" 20 || true

check "interrupted: kill -9 the receiver mid-transfer; the sender's events end with exit 75"
rm -f "$dest/$name"
RECV_STDOUT="$T/recv3.json" start_recv "$dest" "$T/recv3.err" --json
"$BIN" send "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 8M --timeout 10 >"$T/send3.json" 2>"$T/send3.err" &
spid=$!
register "$spid"
wait_progress "$dest/$name.sesscp.part" $((size / 2)) "$spid" $((8 * MiB)) 0 60
kill9 "$RECV_PID"
wait_exit "$spid" 30 || fail_with_logs "sender still running 30 s after the receiver died" "$T/send3.err"
assert_rc 75 "$WAIT_RC" "sender after receiver kill" "$T/send3.err"
assert_in_order "$T/send3.json" session_start file_offered resume_point checkpoint file_done error session_end
[[ $(json_field "$T/send3.json" file_done .state) == interrupted ]] || fail_with_logs "file_done state" "$T/send3.json"
[[ $(json_field "$T/send3.json" file_done .digest) == null ]] || fail_with_logs "interrupted file has a digest" "$T/send3.json"
[[ $(json_field "$T/send3.json" error .exit_code) == 75 ]] || fail_with_logs "error event exit_code" "$T/send3.json"
[[ $(json_field "$T/send3.json" session_end .exit_code) == 75 ]] || fail_with_logs "session_end exit_code" "$T/send3.json"
confirmed=$(json_field "$T/send3.json" checkpoint .confirmed)
ok "interrupted after a checkpoint at $confirmed bytes: $(json_field "$T/send3.json" error .message)"

check "resumed: resume_point past 0, verification, same digest as the full transfer"
RECV_STDOUT="$T/recv4.json" start_recv "$dest" "$T/recv4.err" --once --json
timeout -k 5 60 "$BIN" send "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" >"$T/send4.json" 2>"$T/send4.err" ||
  fail_with_logs "resumed send exited $?" "$T/send4.err"
assert_in_order "$T/send4.json" session_start file_offered resume_point checkpoint file_done session_end
offset=$(json_field "$T/send4.json" resume_point .offset)
((offset > 0)) || fail_with_logs "resume_point offset $offset, expected > 0" "$T/send4.json"
((offset >= confirmed)) || fail "resumed at $offset, before the last checkpoint the sender saw ($confirmed)"
[[ $(json_field "$T/send4.json" file_done .resumed_at) == "$offset" ]] || fail "file_done.resumed_at != resume_point.offset"
[[ $(json_field "$T/send4.json" file_done .digest) == "$digest" ]] || fail "resumed digest differs from the full transfer's"
assert_same "$T/$name" "$dest/$name"
wait_exit "$RECV_PID" 20 || true
# The resume point comes at once; the whole confirmed prefix is then read
# back in the background (docs/JOURNAL.md), alongside the new checkpoints.
assert_in_order "$T/recv4.json" session_start file_offered resume_point phase verify_progress file_done session_end
assert_in_order "$T/recv4.json" resume_point checkpoint file_done
[[ $(json_field "$T/recv4.json" file_done .reverified_bytes) == "$offset" ]] ||
  fail_with_logs "receiver: file_done.reverified_bytes is not the whole confirmed prefix ($offset)" "$T/recv4.json"
[[ $(json_field "$T/recv4.json" phase 'select(.phase == "verifying") | .name') == "$name" ]] ||
  fail_with_logs "receiver: no verifying phase" "$T/recv4.json"
[[ $(json_field "$T/recv4.json" resume_point .offset) == "$offset" ]] || fail_with_logs "receiver's resume point differs" "$T/recv4.json"
[[ $(json_field "$T/recv4.json" file_done .digest) == "$digest" ]] || fail_with_logs "receiver's digest differs" "$T/recv4.json"
ok "resumed at $offset of $size; receiver re-verified the confirmed $(json_field "$T/recv4.json" file_done .reverified_bytes) bytes; digest $digest"

check "a slow link: a sync point, and so progress, at least every second"
# 6 MiB at 2 MiB/s with the default 60M window: window/4 alone would put the
# only sync point at the end of the file.
gen_file "$T/slow.bin" $((6 * MiB)) ux-json-slow
RECV_STDOUT="$T/recv-slow.json" start_recv "$dest" "$T/recv-slow.err" --once --json
rpid=$RECV_PID
timeout -k 5 60 "$BIN" send "$T/slow.bin" "127.0.0.1:$RECV_PORT" --json --bwlimit 2M \
  >"$T/send-slow.json" 2>"$T/send-slow.err" || fail_with_logs "send exited $?" "$T/send-slow.err"
wait_exit "$rpid" 20 || fail "receiver --once did not exit"
assert_same "$T/slow.bin" "$dest/slow.bin"
np=$(json_events "$T/send-slow.json" | grep -c '^progress$' || true)
secs=$(json_field "$T/send-slow.json" session_end .seconds)
((np >= 3)) || fail_with_logs "$np progress events in $secs s on a 2 MiB/s link (want >= 3)" "$T/send-slow.json"
ok "$np progress events in $secs s at 2 MiB/s"

check "no carriage return anywhere off a terminal"
assert_no_cr "$T"/*.err "$T"/*.json "$T/send.log"
log "PASS"
