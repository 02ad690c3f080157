#!/usr/bin/env bash
# Scenario: `sesscp send --streams N` (several TCP connections for one file,
# docs/PROTOCOL.md "Several connections").
#   1. a 4-stream TLS transfer of a 64 MiB file (256 KiB chunks) is
#      byte-identical and the receiver saw 4 connections (its -v lines: the
#      session announces 4 streams, 3 extra connections join it); a tree of
#      small files and two larger files goes over 3 streams with --insecure;
#   2. the sender is killed with SIGKILL in the middle of a 4-stream transfer
#      through a throttled faultproxy (--rate per connection): only the part
#      and the journal exist, the journal confirms only data the part holds
#      (journalcheck), the same command resumes and completes the file
#      byte-identical, and the bytes received but not kept stay within one
#      window plus a chunk per stream;
#      with --retry through a faultproxy that cuts every connection after
#      8 MB, the sender reconnects all 4 streams and completes the file; the
#      receiver is back to its idle threads and descriptors afterwards;
#      the receiver killed with SIGKILL mid-transfer: the sender exits 75, a
#      new receiver resumes the file from its journal;
#      a byte flipped on every connection (--insecure) is asked for again
#      (RESEND) and the file arrives intact; a receiver that answers without
#      the streams bit is used over one connection;
#   3. bad input: --streams 0 / 65 / x exit 64 with a clear message; a JOIN
#      with an unknown cookie is refused (ABORT reason 17) and the receiver
#      goes on serving; anything but DATA on an extra stream, a JOIN beyond
#      the streams the HELLO announced, or twice for one stream: ABORT
#      protocol (testpeer --stream-test); `recv --max-sessions 1` takes a
#      4-stream session;
#      `recv --once` serves a 4-stream session and exits.
# (--streams 1 is every other test: without the flag nothing changes.)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

TP=$(need_tool testpeer)
JC=$(need_tool journalcheck)

name=data.bin
size=$((64 * MiB))
chunk=$((256 * 1024))
window=$((8 * MiB))
gen_file "$T/$name" "$size" streams
opts=(--chunk-size 256K --window 8M)

# ------------------------------------------------------------ 1. transfer
check "4 streams over TLS: byte-identical, and the receiver saw 4 connections"
mkdir -p "$T/d1"
start_recv "$T/d1" "$T/recv1.log" -v
run_send "$T/send1.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --streams 4 -v
assert_rc 0 "$SEND_RC" "4-stream send" "$T/send1.log" "$T/recv1.log"
assert_same "$T/$name" "$T/d1/$name"
assert_no_leftovers "$T/d1" "$name"
wait_summary "$T/recv1.log" recv "$name" 1 20
assert_contains "$T/recv1.log" "(simplex, 4 streams)" "receiver: the session announced 4 streams"
joined=$(grep -cE ': stream [234] of 4 joined its session$' "$T/recv1.log" || true)
[[ $joined -eq 3 ]] || fail_with_logs "receiver: $joined extra connections joined, expected 3" "$T/recv1.log"
ok "receiver: 3 extra connections joined (4 in all)"
assert_contains "$T/send1.log" "4 streams: 3 extra connections joined the session" "sender: 3 extra connections"
last_summary "$T/send1.log" send "$name"
[[ $S_STATE == complete && $S_N -eq $size ]] || fail_with_logs "sender summary: $S_STATE, $S_N bytes sent" "$T/send1.log"
ok "sender summary: complete, $S_N bytes sent in $S_SECS s ($S_RATE)"
kill9 "$RECV_PID"

check "a tree (small files and two larger files) over 3 streams, --insecure"
mkdir -p "$T/tree/sub" "$T/d2"
for i in 1 2 3 4 5; do gen_file "$T/tree/small$i.txt" $((1000 * i)) "small$i"; done
gen_file "$T/tree/sub/big1.bin" $((5 * MiB + 123)) big1
gen_file "$T/tree/sub/big2.bin" $((3 * MiB)) big2
gen_file "$T/tree/sub/small6.txt" 77 small6
start_recv "$T/d2" "$T/recv2.log" --insecure -v
run_send "$T/send2.log" "$T/tree/" "127.0.0.1:$RECV_PORT" --insecure --chunk-size 64K --streams 3
assert_rc 0 "$SEND_RC" "3-stream tree send" "$T/send2.log" "$T/recv2.log"
for f in small1.txt small2.txt small3.txt small4.txt small5.txt sub/big1.bin sub/big2.bin sub/small6.txt; do
  [[ $(sha "$T/tree/$f") == $(sha "$T/d2/$f") ]] || fail_with_logs "$f differs" "$T/send2.log" "$T/recv2.log"
done
ok "8 files byte-identical"
joined=$(grep -cE ': stream [23] of 3 joined its session$' "$T/recv2.log" || true)
[[ $joined -eq 2 ]] || fail_with_logs "receiver: $joined extra connections joined, expected 2" "$T/recv2.log"
ok "receiver: 2 extra connections joined"
kill9 "$RECV_PID"

check "a byte flipped on every connection (--insecure): RESEND on the first connection, file intact"
mkdir -p "$T/d6"
start_recv "$T/d6" "$T/recv6.log" --insecure -v
start_proxy "$T/proxy3.log" "$RECV_PORT" --flip-after 5000 --all-connections
run_send "$T/send8.log" "$T/$name" "127.0.0.1:$PROXY_PORT" --insecure --chunk-size 64K --streams 4 -v
assert_rc 0 "$SEND_RC" "4-stream send through bit flips" "$T/send8.log" "$T/recv6.log" "$T/proxy3.log"
assert_same "$T/$name" "$T/d6/$name"
flips=$(grep -c 'failed its hash on an extra stream; asking again' "$T/recv6.log" || true)
((flips >= 1)) || fail_with_logs "no chunk failed its hash on an extra stream" "$T/recv6.log" "$T/proxy3.log"
resent=$(grep -c 'resending chunk .* at the receiver.s request' "$T/send8.log" || true)
((resent >= flips)) || fail_with_logs "$flips RESENDs for extra streams, $resent chunks resent" "$T/send8.log"
ok "$flips chunk(s) corrupted on extra streams were asked for again and resent ($resent resent in all)"
stop_proxy
kill9 "$RECV_PID"

check "a receiver without streams (testpeer: ACCEPT without the bit): the sender uses one connection"
"$TP" 127.0.0.1:0 --serve refuse-release --timeout 20 >"$T/peer.out" 2>"$T/peer.log" &
peer=$!
register "$peer"
wait_for_line "$T/peer.log" 'listening on 127\.0\.0\.1:[0-9]+' 10 || fail_with_logs "testpeer --serve did not start" "$T/peer.log"
pport=$(grep -m1 -oE 'listening on 127\.0\.0\.1:[0-9]+' "$T/peer.log")
pport=${pport##*:}
run_send "$T/send9.log" "$T/$name" "127.0.0.1:$pport" --insecure --streams 4 --timeout 10
assert_rc 0 "$SEND_RC" "4-stream send to a receiver without streams" "$T/send9.log" "$T/peer.log"
assert_contains "$T/send9.log" "the receiver does not take --streams (an older sesscp?); sending over one connection" "fallback note"
wait_exit "$peer" 10 || fail "testpeer did not finish"
unregister "$peer"

# ----------------------------------------------------- 2. kill and resume
check "kill -9 the sender in the middle of a 4-stream transfer, then re-run the same command"
mkdir -p "$T/d3"
part="$T/d3/$name.sesscp.part"
start_recv "$T/d3" "$T/recv3.log" -v
rpid=$RECV_PID
idle_fds=$(ls "/proc/$rpid/fd" | wc -l)
idle_threads=$(ls "/proc/$rpid/task" | wc -l)
rate=$((4 * 1000 * 1000)) # per connection and direction: 4 streams, ~16 MB/s in all
start_proxy "$T/proxy.log" "$RECV_PORT" --rate "$rate"
start_send "$T/send3.log" "$T/$name" "127.0.0.1:$PROXY_PORT" "${opts[@]}" --streams 4 -v
wait_progress "$part" $((size * 2 / 5)) "$SEND_PID" $((4 * rate)) 0 60
kill9 "$SEND_PID"
log "killed the sender at ~$PROGRESS bytes in the part ($((PROGRESS * 100 / size)) %)"
assert_contains "$T/send3.log" "4 streams: 3 extra connections joined the session" "killed run used 4 streams"
wait_summary "$T/recv3.log" recv "$name" 1 20
last_summary "$T/recv3.log" recv "$name"
[[ $S_STATE == interrupted ]] || fail_with_logs "receiver state '$S_STATE' after the kill, expected 'interrupted'" "$T/recv3.log"
recv1=$S_N
assert_interrupted_state "$T/d3" "$name"
"$JC" "$T/d3/$name.sesscp.journal" "$part" >"$T/jc.out" 2>&1 || fail_with_logs "journalcheck: the journal points past the data" "$T/jc.out"
ok "journalcheck: $(head -n 1 "$T/jc.out")"
kept=$(($(journal_chunks "$T/d3/$name.sesscp.journal") * chunk))
log "journal keeps $kept bytes; the receiver had received $recv1"
stop_proxy

run_send "$T/send4.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --streams 4
assert_rc 0 "$SEND_RC" "re-run" "$T/send4.log" "$T/recv3.log"
assert_same "$T/$name" "$T/d3/$name"
assert_no_leftovers "$T/d3" "$name"
last_summary "$T/send4.log" send "$name"
[[ $S_STATE == complete ]] || fail "re-run state '$S_STATE', expected complete"
[[ $S_OFFSET -eq $kept ]] || fail_with_logs "re-run resumed at $S_OFFSET, the journal kept $kept" "$T/send4.log"
ok "re-run resumed at $S_OFFSET (the journal's checkpoint) and sent $S_N bytes"
[[ $((S_OFFSET + S_N)) -eq $size ]] || fail "re-run sent $S_N bytes from $S_OFFSET for a $size-byte file"
lost=$((recv1 - kept))
assert_resent_bound "$lost" $((window + 4 * chunk)) "bytes received before the kill but not kept (window + 4 chunks)"
wait_summary "$T/recv3.log" recv "$name" 2 20

check "kill -9 the receiver in the middle of a 4-stream transfer; a new receiver resumes it"
rm -f "$T/d3/$name"
start_proxy "$T/proxy4.log" "$RECV_PORT" --rate "$rate"
start_send "$T/send10.log" "$T/$name" "127.0.0.1:$PROXY_PORT" "${opts[@]}" --streams 4
wait_progress "$part" $((size / 2)) "$SEND_PID" $((4 * rate)) 0 60
kill9 "$rpid"
log "killed the receiver at ~$PROGRESS bytes in the part"
wait_exit "$SEND_PID" 40 || fail_with_logs "sender did not exit after the receiver was killed" "$T/send10.log"
assert_rc 75 "$WAIT_RC" "sender after the receiver's death" "$T/send10.log"
unregister "$SEND_PID"
stop_proxy
assert_interrupted_state "$T/d3" "$name"
kept=$(($(journal_chunks "$T/d3/$name.sesscp.journal") * chunk))
sent10=$(sed -nE 's/.* ([0-9]+) bytes sent, .*/\1/p' "$T/send10.log" | tail -n 1)
log "journal keeps $kept bytes; the sender had sent ${sent10:-?}"
RECV_LISTEN=127.0.0.1:$RECV_PORT start_recv "$T/d3" "$T/recv3b.log" -v
rpid=$RECV_PID
run_send "$T/send11.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --streams 4
assert_rc 0 "$SEND_RC" "re-run after the receiver's death" "$T/send11.log" "$T/recv3b.log"
assert_same "$T/$name" "$T/d3/$name"
last_summary "$T/send11.log" send "$name"
log "re-run resumed at $S_OFFSET"
((S_OFFSET > 0)) || fail "re-run after the receiver's death started from 0"
# What the dead receiver had been sent but had not made durable: at most a window plus a chunk per stream.
[[ -n $sent10 ]] && assert_resent_bound $((sent10 - S_OFFSET)) $((window + 4 * chunk)) "sent before the receiver's death but not kept"

check "--retry: every connection cut after 8 MB; all 4 streams reconnect and the file completes"
rm -f "$T/d3/$name"
start_proxy "$T/proxy2.log" "$RECV_PORT" --cut-after 8000000 --all-connections
run_send "$T/send7.log" "$T/$name" "127.0.0.1:$PROXY_PORT" "${opts[@]}" --streams 4 --retry 30
assert_rc 0 "$SEND_RC" "4-stream send with --retry through cuts" "$T/send7.log" "$T/recv3.log"
assert_same "$T/$name" "$T/d3/$name"
reconnects=$(grep -c 'reconnecting (attempt' "$T/send7.log" || true)
((reconnects >= 1)) || fail_with_logs "no reconnection through a proxy that cuts at 8 MB" "$T/send7.log"
ok "$reconnects reconnection(s)"
stop_proxy

check "the receiver is back to its idle threads and descriptors"
for ((i = 0; i < 50; i++)); do
  fds=$(ls "/proc/$rpid/fd" | wc -l)
  threads=$(ls "/proc/$rpid/task" | wc -l)
  ((fds == idle_fds && threads == idle_threads)) && break
  sleep 0.1
done
((fds == idle_fds)) || fail_with_logs "receiver holds $fds descriptors, $idle_fds when idle" "$T/recv3.log"
((threads == idle_threads)) || fail_with_logs "receiver runs $threads threads, $idle_threads when idle" "$T/recv3.log"
ok "receiver: $fds descriptors, $threads thread(s), as when idle"
is_running "$rpid" || fail_with_logs "receiver died" "$T/recv3.log"
kill9 "$rpid"

# ------------------------------------------------------------ 3. bad input
check "--streams 0, 65 and x are usage errors (exit 64)"
for bad in 0 65 x -1 ""; do
  run_send "$T/bad.log" "$T/$name" 127.0.0.1:9 --streams "$bad"
  assert_rc 64 "$SEND_RC" "--streams '$bad'" "$T/bad.log"
  assert_contains "$T/bad.log" "bad --streams '$bad' (a number of TCP connections from 1 to 64)" "message"
done
run_send "$T/bad.log" "$T/$name" 127.0.0.1:9 --streams 2 --fetch x
assert_rc 64 "$SEND_RC" "--streams 2 --fetch x" "$T/bad.log"
run_send "$T/bad.log" "$T/$name" sftp://nobody@127.0.0.1:9/x --streams 2
assert_rc 64 "$SEND_RC" "--streams 2 to an sftp:// URL" "$T/bad.log"
assert_contains "$T/bad.log" "--streams needs a sesscp receiver (HOST:PORT), not a URL" "message"

check "a JOIN with an unknown cookie is refused; the receiver goes on serving"
mkdir -p "$T/d4"
start_recv "$T/d4" "$T/recv4.log"
# JOIN (type 04): a cookie of 16 zero bytes, stream 1.
join_frame="04:$(printf '00%.0s' {1..16})0001"
out=$(timeout 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --no-hello --frames-after-hello "$join_frame") ||
  fail_with_logs "testpeer failed" "$T/recv4.log"
log "testpeer: $out"
[[ $out == "reply: ABORT reason=17 "* ]] || fail_with_logs "JOIN with an unknown cookie: '$out', expected ABORT reason=17" "$T/recv4.log"
ok "ABORT reason 17 (unknown session)"
wait_for_line "$T/recv4.log" 'refused: JOIN for an unknown session' 10 ||
  fail_with_logs "the receiver did not log the refused JOIN" "$T/recv4.log"
ok "receiver logged the refusal"
run_send "$T/send5.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --streams 2
assert_rc 0 "$SEND_RC" "a 2-stream send after the refused JOIN" "$T/send5.log" "$T/recv4.log"
assert_same "$T/$name" "$T/d4/$name"

check "extra streams carry only DATA, and only the streams the HELLO announced may join (testpeer)"
# A SYNC (type 13) on an extra stream of a 2-stream session: ABORT protocol.
out=$(timeout 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --stream-test frame --frames-after-hello "13:00000000000000010000000000000001") ||
  fail_with_logs "testpeer failed" "$T/recv4.log"
log "testpeer (SYNC on a stream): $out"
[[ $out == "reply: ABORT reason=1 message=SYNC on an extra stream: only DATA travels there" ]] ||
  fail_with_logs "SYNC on an extra stream: '$out'" "$T/recv4.log"
out=$(timeout 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --stream-test bad-index) || fail_with_logs "testpeer failed" "$T/recv4.log"
log "testpeer (JOIN as stream 2 of 2): $out"
[[ $out == "reply: ABORT reason=1 message=JOIN as stream 2, but the HELLO announced 2 streams"* ]] ||
  fail_with_logs "JOIN beyond the announced streams: '$out'" "$T/recv4.log"
out=$(timeout 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --stream-test twice) || fail_with_logs "testpeer failed" "$T/recv4.log"
log "testpeer (stream 1 twice): $out"
[[ $out == "reply: ABORT reason=1 message=stream 1 joined twice" ]] || fail_with_logs "a stream joining twice: '$out'" "$T/recv4.log"
ok "ABORT protocol for each"
run_send "$T/send5b.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --streams 3
assert_rc 0 "$SEND_RC" "a 3-stream send afterwards" "$T/send5b.log" "$T/recv4.log"

check "recv --max-sessions 1 takes a 4-stream session (extra streams are not sessions)"
mkdir -p "$T/d7"
start_recv "$T/d7" "$T/recv7.log" --max-sessions 1 -v
run_send "$T/send12.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --streams 4
assert_rc 0 "$SEND_RC" "4-stream send to recv --max-sessions 1" "$T/send12.log" "$T/recv7.log"
assert_same "$T/$name" "$T/d7/$name"
joined=$(grep -cE ': stream [234] of 4 joined its session$' "$T/recv7.log" || true)
[[ $joined -eq 3 ]] || fail_with_logs "receiver: $joined extra connections joined, expected 3" "$T/recv7.log"
ok "3 extra connections joined under --max-sessions 1"
kill9 "$RECV_PID"

check "--once: the session's extra streams join it, and the receiver exits with it"
mkdir -p "$T/d5"
start_recv "$T/d5" "$T/recv5.log" --once -v
rpid=$RECV_PID
run_send "$T/send6.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --streams 4
assert_rc 0 "$SEND_RC" "4-stream send to recv --once" "$T/send6.log" "$T/recv5.log"
assert_same "$T/$name" "$T/d5/$name"
wait_exit "$rpid" 15 || fail_with_logs "recv --once did not exit after its session" "$T/recv5.log"
assert_rc 0 "$WAIT_RC" "recv --once" "$T/recv5.log"
unregister "$rpid"

log "PASS"
