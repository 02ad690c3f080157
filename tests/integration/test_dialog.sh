#!/usr/bin/env bash
# Dialog control and negotiated release, against a scripted receiver
# (testpeer --serve) and a real one:
#  a) simplex: the receiver sends DATA; the sender answers ABORT protocol
#     naming the rule and exits 76;
#  b) negotiated release: the receiver answers the first RELEASE with
#     NOT_FINISHED; the sender continues, asks again, and exits 0;
#  c) a HELLO asking for half-duplex gets REFUSE reason 16 (dialog mode not
#     supported) from a real receiver, which keeps serving.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
TP=$(need_tool testpeer)
printf 'some bytes\n' >"$T/f.txt"

check "a) DATA from the receiver in a simplex session: ABORT protocol, exit 76"
start_peer data-from-receiver "$T/a.peer.log"
run_send "$T/a.send.log" "$T/f.txt" "127.0.0.1:$PEER_PORT" --insecure --timeout 10
wait_exit "$PEER_PID" 10 || fail "testpeer did not finish"
sed 's/^/    /' "$T/a.send.log" "$T/a.peer.log.out"
assert_rc 76 "$SEND_RC" "sender facing DATA from the receiver" "$T/a.send.log" "$T/a.peer.log"
assert_contains "$T/a.send.log" "simplex" "sender's error names the simplex rule"
grep -q '^reply: ABORT reason=1 .*simplex' "$T/a.peer.log.out" ||
  fail_with_logs "the receiver side did not get ABORT reason=1 naming the rule" "$T/a.peer.log.out"
ok "the peer got ABORT reason=1 (protocol) naming the rule"

check "b) the receiver refuses the first RELEASE (NOT_FINISHED): the sender goes on and releases"
start_peer refuse-release "$T/b.peer.log"
run_send "$T/b.send.log" "$T/f.txt" "127.0.0.1:$PEER_PORT" --insecure --timeout 10
wait_exit "$PEER_PID" 10 || fail "testpeer did not finish"
sed 's/^/    /' "$T/b.send.log" "$T/b.peer.log.out"
assert_rc 0 "$SEND_RC" "sender after a refused release" "$T/b.send.log" "$T/b.peer.log"
assert_contains "$T/b.send.log" "receiver refused to release the session (not finished: testpeer is not finished); continuing" "sender reported the refusal"
assert_contains "$T/b.peer.log.out" "reply: RELEASE_ACK releases=2" "the second RELEASE was accepted"

check "c) HELLO asking for half-duplex: REFUSE reason 16 from a real receiver"
new_dest modes
start_recv "$DEST" "$T/recv.log"
timeout -k 5 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --hello-mode 1 >"$T/c.out" 2>"$T/c.err" || true
sed 's/^/    /' "$T/c.out"
grep -q '^reply: REFUSE reason=16 ' "$T/c.out" || fail_with_logs "expected REFUSE reason=16" "$T/c.out" "$T/c.err" "$T/recv.log"
timeout -k 5 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --hello-mode 7 >"$T/c2.out" 2>"$T/c2.err" || true
grep -qE '^reply: ABORT reason=1 ' "$T/c2.out" || fail_with_logs "an unknown mode must be ABORT protocol" "$T/c2.out" "$T/recv.log"
ok "half-duplex refused (16), unknown mode 7 is a protocol error"
run_send "$T/c.send.log" "$T/f.txt" "127.0.0.1:$RECV_PORT"
assert_rc 0 "$SEND_RC" "a simplex send afterwards" "$T/c.send.log" "$T/recv.log"
cmp "$T/f.txt" "$DEST/f.txt" || fail "f.txt differs"
assert_parent_unchanged modes
log "PASS"
