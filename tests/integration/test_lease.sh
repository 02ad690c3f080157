#!/usr/bin/env bash
# The destination lease (an flock on NAME.sesscp.journal, held while a session
# writes NAME):
#  a) two receiver processes on one directory: while a sender writes NAME
#     through the first, a sender of NAME through the second is refused at
#     once: exit 75, "busy";
#  b) kill -9 of the receiver holding the lease frees it at once: the second
#     receiver accepts NAME immediately and the sender resumes it;
#  c) kill -9 of a sender: its receiver frees the lease as soon as it sees
#     the connection die, and the next sender resumes.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

name=leased.bin
size=$((32 * MiB))
rate=$((8 * MiB))
gen_file "$T/$name" "$size" lease
opts=(--chunk-size 256K --window 2M)
dest="$T/dest"
mkdir -p "$dest"

start_recv "$dest" "$T/recv1.log"
r1=$RECV_PID
p1=$RECV_PORT
start_recv "$dest" "$T/recv2.log"
r2=$RECV_PID
p2=$RECV_PORT

check "a) two receivers on one directory: the second sender of $name is refused as busy"
start_send "$T/s1.log" "$T/$name" "127.0.0.1:$p1" "${opts[@]}" --bwlimit 8M
s1=$SEND_PID
wait_progress "$dest/$name.sesscp.part" $((4 * MiB)) "$s1" "$rate" 0 60
SESSCP_RUN_TIMEOUT=30 run_send "$T/s2.log" "$T/$name" "127.0.0.1:$p2" "${opts[@]}"
sed 's/^/    /' "$T/s2.log"
assert_rc 75 "$SEND_RC" "second sender through the second receiver" "$T/s2.log" "$T/recv2.log"
assert_contains "$T/s2.log" "busy" "second sender's error"
assert_le "$SEND_MS" 5000 "refused promptly (ms)"
is_running "$s1" || fail_with_logs "the first sender stopped" "$T/s1.log"

check "b) kill -9 the receiver holding the lease: the other receiver takes $name at once"
kill9 "$r1"
t0=$(now_ms)
run_send "$T/s3.log" "$T/$name" "127.0.0.1:$p2" "${opts[@]}"
assert_rc 0 "$SEND_RC" "sender through the second receiver after the kill" "$T/s3.log" "$T/recv2.log"
log "accepted and completed $(fmt_ms $(($(now_ms) - t0))) s after the kill"
grep -E "^sesscp: $name: resumed at" "$T/s3.log" | sed 's/^/    /' ||
  fail_with_logs "the transfer did not resume from the dead receiver's checkpoint" "$T/s3.log"
assert_same "$T/$name" "$dest/$name"
wait_exit "$s1" 60 || fail "the first sender did not exit"
log "first sender exited $WAIT_RC after its receiver was killed"
[[ $WAIT_RC -eq 75 ]] || fail_with_logs "first sender exit $WAIT_RC, expected 75" "$T/s1.log"

check "c) kill -9 a sender: the lease is free for the next sender at once"
rm -f "$dest/$name"
start_send "$T/s4.log" "$T/$name" "127.0.0.1:$p2" "${opts[@]}" --bwlimit 8M
s4=$SEND_PID
wait_progress "$dest/$name.sesscp.part" $((4 * MiB)) "$s4" "$rate" 0 60
kill9 "$s4"
t0=$(now_ms)
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  run_send "$T/s5.log" "$T/$name" "127.0.0.1:$p2" "${opts[@]}"
  [[ $SEND_RC -ne 75 ]] && break
  sleep 0.2
done
assert_rc 0 "$SEND_RC" "next sender after the kill" "$T/s5.log" "$T/recv2.log"
log "lease free after $attempt attempt(s), $(fmt_ms $(($(now_ms) - t0))) s after the kill"
assert_le $(($(now_ms) - t0 - SEND_MS)) 2000 "time the lease outlived its sender, in ms (busy answers before it was free)"
assert_same "$T/$name" "$dest/$name"
is_running "$r2" || fail_with_logs "receiver 2 died" "$T/recv2.log"
log "PASS"
