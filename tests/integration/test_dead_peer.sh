#!/usr/bin/env bash
# Scenario: a peer that stops answering is detected within --timeout + 1 s,
# by the session's read/write deadlines (keepalive and TCP_USER_TIMEOUT back
# them up in the kernel for vanished hosts). Nothing hangs.
#  a) the receiver is suspended (SIGSTOP): the sender exits 75 in time;
#  b) the sender is suspended: the receiver ends the session in time and
#     frees the destination, so the next run resumes at once;
#  c) the connection stalls in the network (faultproxy forwards nothing but
#     keeps both sockets open): `--retry` detects it in time, reconnects and
#     completes byte-identical.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
need_tool faultproxy >/dev/null

name=data.bin
size=$((64 * MiB))
rate=$((16 * MiB))
timeout_s=3
bound_ms=$(((timeout_s + 1) * 1000))
src="$T/$name"
gen_file "$src" "$size" dead-peer
opts=(--insecure --chunk-size 256K --window 4M --timeout "$timeout_s")

# ------------------------------------------------------ a) receiver stopped
check "a) receiver suspended (SIGSTOP) at ~25 %: sender exits 75 within ${timeout_s} s + 1 s"
new_dest a
start_recv "$DEST" "$T/a.recv.log" --insecure --timeout "$timeout_s"
rpid=$RECV_PID
start_send "$T/a.send.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 16M
spid=$SEND_PID
wait_progress "$DEST/$name.sesscp.part" $((size / 4)) "$spid" "$rate" 0 60
kill -STOP "$rpid"
t0=$(now_ms)
wait_exit "$spid" 30 || fail_with_logs "sender still running 30 s after the receiver was suspended" "$T/a.send.log"
detect_a=$(($(now_ms) - t0))
assert_rc 75 "$WAIT_RC" "sender facing a suspended receiver" "$T/a.send.log"
assert_contains "$T/a.send.log" "peer " "sender names the stalled peer"
log "FIGURE a): suspended receiver detected after $(fmt_ms "$detect_a") s (--timeout $timeout_s)"
assert_le "$detect_a" "$bound_ms" "detection time in ms (timeout + 1 s)"
kill -CONT "$rpid"
kill9 "$rpid"
assert_interrupted_state "$DEST" "$name"

# -------------------------------------------------------- b) sender stopped
check "b) sender suspended (SIGSTOP) at ~25 %: receiver ends the session within ${timeout_s} s + 1 s"
new_dest b
start_recv "$DEST" "$T/b.recv.log" --insecure --timeout "$timeout_s"
rpid=$RECV_PID
start_send "$T/b.send.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 16M
spid=$SEND_PID
wait_progress "$DEST/$name.sesscp.part" $((size / 4)) "$spid" "$rate" 0 60
kill -STOP "$spid"
t0=$(now_ms)
wait_for_line "$T/b.recv.log" "session ended: peer sent nothing for $timeout_s s" 30 ||
  fail_with_logs "receiver did not end the session within 30 s of the sender's suspension" "$T/b.recv.log"
detect_b=$((LINE_MS - t0))
ok "$(grep 'session ended' "$T/b.recv.log")"
log "FIGURE b): suspended sender detected after $(fmt_ms "$detect_b") s (--timeout $timeout_s)"
assert_le "$detect_b" "$bound_ms" "detection time in ms (timeout + 1 s)"
kill9 "$spid"
check "b) the destination is free again: a new sender resumes at once"
run_send "$T/b.send2.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "new sender after the suspended one" "$T/b.send2.log" "$T/b.recv.log"
last_summary "$T/b.send2.log" send "$name"
((S_OFFSET > 0)) || fail "new sender started from 0; expected a resume"
assert_same "$src" "$DEST/$name"
kill9 "$rpid"

# ------------------------------------------------------ c) network stall
stall=$((size / 3))
check "c) the network stalls at c2s offset $stall (sockets stay open): --retry detects it in time and completes"
new_dest c
start_recv "$DEST" "$T/c.recv.log" --insecure --timeout "$timeout_s"
rpid=$RECV_PID
start_proxy "$T/c.proxy.log" "$RECV_PORT" --stall-after "$stall"
start_send "$T/c.send.log" "$src" "127.0.0.1:$PROXY_PORT" "${opts[@]}" --bwlimit 16M --retry 8
spid=$SEND_PID
wait_for_line "$T/c.proxy.log" "stalled connection 1 at offset" 60 ||
  fail_with_logs "the proxy never stalled the connection" "$T/c.proxy.log" "$T/c.send.log"
t_stall=$LINE_MS
wait_for_line "$T/c.send.log" "reconnecting \(attempt 1/8\)" 30 ||
  fail_with_logs "the sender did not notice the stall within 30 s" "$T/c.send.log"
detect_c=$((LINE_MS - t_stall))
ok "$(grep -m1 'reconnecting' "$T/c.send.log")"
log "FIGURE c): network stall detected after $(fmt_ms "$detect_c") s (--timeout $timeout_s)"
assert_le "$detect_c" "$bound_ms" "detection time in ms (timeout + 1 s)"
wait_exit "$spid" 120 || fail_with_logs "sender still running 120 s after the stall" "$T/c.send.log"
assert_rc 0 "$WAIT_RC" "sender after the stall (with --retry 8)" "$T/c.send.log" "$T/c.recv.log" "$T/c.proxy.log"
grep -E 'reconnecting|resumed at' "$T/c.send.log" | sed 's/^/    /'
assert_same "$src" "$DEST/$name"
assert_no_leftovers "$DEST" "$name"
stop_proxy
log "PASS"
