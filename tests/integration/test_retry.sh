#!/usr/bin/env bash
# Scenario: `send --retry N` / `--retry-for DURATION` reconnect by themselves.
#  a) the connection is cut (RST) at a seeded offset: one process reconnects,
#     resumes from the last checkpoint and completes byte-identical, re-sending
#     at most window + chunk;
#  b) the receiver is killed with SIGKILL and restarted on the same port while
#     the sender is retrying: the retrying sender picks it up and completes;
#  c) the receiver stays down: after the retries are spent the sender exits 75
#     with the partial state intact ("gave up after 3 attempts"), and a later
#     run completes;
#  d) --retry-for bounds the whole run in time;
#  e) SIGTERM during the backoff wait ends the run at once (exit 75), no more attempts.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
need_tool faultproxy >/dev/null

name=data.bin
size=$((48 * MiB))
chunk=$((256 * 1024))
window=$((4 * MiB))
rate=$((32 * MiB))
src="$T/$name"
gen_file "$src" "$size" retry
opts=(--insecure --chunk-size 256K --window 4M --timeout 5)

# ---------------------------------------------------------------- a) cut
seed=${SESSCP_TEST_SEED:-$RANDOM}
RANDOM=$seed
cut=$((size / 5 + (RANDOM * 32768 + RANDOM) % (size * 3 / 5)))
check "a) connection cut (RST) at c2s offset $cut (seed $seed): --retry 5 completes in one process"
new_dest cut
start_recv "$DEST" "$T/a.recv.log" --insecure --timeout 5
start_proxy "$T/a.proxy.log" "$RECV_PORT" --cut-after "$cut"
run_send "$T/a.send.log" "$src" "127.0.0.1:$PROXY_PORT" "${opts[@]}" --retry 5
assert_rc 0 "$SEND_RC" "sender with --retry 5 through a cut" "$T/a.send.log" "$T/a.proxy.log" "$T/a.recv.log"
assert_contains "$T/a.proxy.log" "cut connection 1 at offset $cut" "proxy cut the first connection"
assert_contains "$T/a.send.log" "reconnecting (attempt 1/5) in " "sender announced the reconnection"
grep -E "^sesscp: $name: resumed at .* \(byte [0-9]+\)$" "$T/a.send.log" >/dev/null ||
  fail_with_logs "sender did not print '$name: resumed at ... (byte OFFSET)'" "$T/a.send.log"
ok "$(grep -E "^sesscp: $name: resumed at" "$T/a.send.log")"
last_summary "$T/a.send.log" send "$name"
[[ $S_STATE == complete ]] || fail "sender state '$S_STATE', expected complete"
[[ $S_RATE == *", 1 reconnect" ]] || fail_with_logs "summary does not count 1 reconnect: '$S_RATE'" "$T/a.send.log"
assert_same "$src" "$DEST/$name"
assert_no_leftovers "$DEST" "$name"
resent=$((S_N - size))
log "FIGURE a): cut at $cut, $S_N bytes sent for $size, $resent re-sent, $(fmt_ms "$SEND_MS") s"
assert_resent_bound "$resent" $((window + chunk)) "re-sent after a cut (window + chunk)"
stop_proxy
kill9 "$RECV_PID"

# ------------------------------------------------- b) receiver restarted
check "b) receiver killed at ~40 % and restarted 2 s later on the same port: the retrying sender picks it up"
new_dest restart
start_recv "$DEST" "$T/b.recv1.log" --insecure --timeout 5
port=$RECV_PORT
start_send "$T/b.send.log" "$src" "127.0.0.1:$port" "${opts[@]}" --retry 10 --bwlimit 32M
spid=$SEND_PID
wait_progress "$DEST/$name.sesscp.part" $((size * 2 / 5)) "$spid" "$rate" 0 60
kill9 "$RECV_PID"
log "killed the receiver at ~$PROGRESS bytes"
wait_for_line "$T/b.send.log" "reconnecting \(attempt 1/10\)" 15 ||
  fail_with_logs "sender did not announce a reconnection within 15 s" "$T/b.send.log"
sleep 2
RECV_LISTEN="127.0.0.1:$port" start_recv "$DEST" "$T/b.recv2.log" --insecure --timeout 5
wait_exit "$spid" 120 || fail_with_logs "retrying sender still running 120 s after the restart" "$T/b.send.log"
assert_rc 0 "$WAIT_RC" "retrying sender after the receiver restart" "$T/b.send.log" "$T/b.recv2.log"
grep -E "reconnecting|resumed at" "$T/b.send.log" | sed 's/^/    /'
last_summary "$T/b.send.log" send "$name"
[[ $S_STATE == complete ]] || fail "sender state '$S_STATE', expected complete"
assert_same "$src" "$DEST/$name"
assert_no_leftovers "$DEST" "$name"
resent=$((S_N - size))
log "FIGURE b): $S_N bytes sent for $size, $resent re-sent, reconnects: ${S_RATE#*, }"
assert_resent_bound "$resent" $((window + chunk)) "re-sent after a receiver kill (window + chunk)"
kill9 "$RECV_PID"

# ------------------------------------------------------ c) retries spent
check "c) receiver killed and left down: --retry 2 gives up with exit 75, state intact"
new_dest spent
start_recv "$DEST" "$T/c.recv1.log" --insecure --timeout 5
port=$RECV_PORT
start_send "$T/c.send.log" "$src" "127.0.0.1:$port" "${opts[@]}" --retry 2 --bwlimit 32M
spid=$SEND_PID
wait_progress "$DEST/$name.sesscp.part" $((size / 3)) "$spid" "$rate" 0 60
kill9 "$RECV_PID"
t0=$(now_ms)
wait_exit "$spid" 30 || fail_with_logs "sender with --retry 2 still running 30 s after the kill" "$T/c.send.log"
log "sender gave up $(fmt_ms $(($(now_ms) - t0))) s after the receiver was killed"
assert_rc 75 "$WAIT_RC" "sender after its retries are spent" "$T/c.send.log"
assert_contains "$T/c.send.log" "reconnecting (attempt 2/2)" "second and last reconnection announced"
grep -qE '^sesscp: error: gave up after 3 attempts: ' "$T/c.send.log" ||
  fail_with_logs "no 'sesscp: error: gave up after 3 attempts: ...' line" "$T/c.send.log"
ok "$(grep '^sesscp: error:' "$T/c.send.log")"
assert_interrupted_state "$DEST" "$name"
RECV_LISTEN="127.0.0.1:$port" start_recv "$DEST" "$T/c.recv2.log" --insecure --timeout 5
run_send "$T/c.send2.log" "$src" "127.0.0.1:$port" "${opts[@]}"
assert_rc 0 "$SEND_RC" "re-run after the receiver came back" "$T/c.send2.log"
last_summary "$T/c.send2.log" send "$name"
((S_OFFSET > 0)) || fail "the re-run started from 0; expected a resume"
assert_same "$src" "$DEST/$name"
kill9 "$RECV_PID"

# ---------------------------------------------------------- d) retry-for
check "d) nobody listening: --retry-for 4s ends the run within about 4 s (exit 75)"
free_port=$port # the receiver of c) is gone; nothing listens there now
run_send "$T/d.send.log" "$src" "127.0.0.1:$free_port" "${opts[@]}" --retry-for 4s
assert_rc 75 "$SEND_RC" "--retry-for 4s against a closed port" "$T/d.send.log"
attempts=$(grep -c 'reconnecting (attempt ' "$T/d.send.log" || true)
log "FIGURE d): $attempts reconnections, $(fmt_ms "$SEND_MS") s"
((attempts >= 2)) || fail_with_logs "expected at least 2 reconnections in 4 s, saw $attempts" "$T/d.send.log"
((SEND_MS >= 3500 && SEND_MS <= 7000)) || fail_with_logs "--retry-for 4s took $(fmt_ms "$SEND_MS") s" "$T/d.send.log"
ok "--retry-for 4s: exit 75 after $(fmt_ms "$SEND_MS") s"

# ------------------------------------------------ e) signal during backoff
check "e) SIGTERM while waiting to reconnect: exit 75 at once, no further attempt"
start_send "$T/e.send.log" "$src" "127.0.0.1:$free_port" "${opts[@]}" --retry 50
spid=$SEND_PID
wait_for_line "$T/e.send.log" "reconnecting \(attempt 3/50\)" 20 ||
  fail_with_logs "no third reconnection announced within 20 s" "$T/e.send.log"
kill -TERM "$spid"
t0=$(now_ms)
wait_exit "$spid" 5 || fail_with_logs "sender ignored SIGTERM during its backoff for 5 s" "$T/e.send.log"
stop_ms=$(($(now_ms) - t0))
assert_rc 75 "$WAIT_RC" "sender stopped by SIGTERM during backoff" "$T/e.send.log"
((stop_ms <= 1000)) || fail "SIGTERM took $stop_ms ms to end the backoff wait"
grep -q 'reconnecting (attempt 4/50)' "$T/e.send.log" && fail_with_logs "sender went on reconnecting after SIGTERM" "$T/e.send.log"
ok "stopped $stop_ms ms after SIGTERM: $(grep '^sesscp: error:' "$T/e.send.log")"
log "PASS"
