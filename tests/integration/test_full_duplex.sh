#!/usr/bin/env bash
# Full-duplex sessions (docs/PROTOCOL.md, "Full-duplex"): one connection
# carries both directions at once, each with its own sync points, journals
# and release.
#  a) push a tree (a 24 MiB file among others) and fetch a tree (a 24 MiB
#     file among others) in one TLS session, both throttled to 8 MB/s: at
#     some moment both big files are partial at once (a half-duplex session
#     never shows that: the fetch starts after the push is confirmed);
#     byte-identical both ways (SHA-256, modes, mtimes), no leftovers, the
#     --json file_done events of both directions;
#  b) what the option accepts: --duplex full needs --fetch (64), an unknown
#     mode (64), a receiver without --serve refuses (REFUSE 16, exit 69);
#  c) the rule, from a raw peer: a token frame, a second HELLO, and data
#     after the peer's own RELEASE each get ABORT protocol naming the rule;
#     a session that does not start with FETCH too; the receiver keeps
#     serving afterwards;
#  d) kill -9 the receiver while both big files are partial; a new receiver
#     and the same command: each direction resumes from its own journal (the
#     push from the receiver's, the fetch from the sender's), re-sending at
#     most window + chunk each, results byte-identical;
#  e) the same kill with --retry: the sender reconnects by itself and both
#     directions finish in the same process.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
TP=$(need_tool testpeer)

big=$((24 * MiB))
chunk=$DEFAULT_CHUNK
window=$DEFAULT_WINDOW
rate=$((8 * MiB))

# The push tree and the export.
mkdir -p "$T/logs/app" "$T/serve/reports/q1"
printf 'log line 1\n' >"$T/logs/a.log"
gen_file "$T/logs/app/push.bin" "$big" fd-push-big
gen_file "$T/logs/app/c.bin" $((3 * MiB + 17)) fd-push-c
chmod 0640 "$T/logs/a.log"
touch -d '2024-03-01 10:00:00.123456789' "$T/logs/a.log" "$T/logs/app/push.bin"
gen_file "$T/serve/reports/big.bin" "$big" fd-fetch-big
gen_file "$T/serve/reports/q1/sales.csv" $((70 * 1024)) fd-fetch-sales
chmod 0600 "$T/serve/reports/q1/sales.csv"
touch -d '2023-12-24 18:30:00.5' "$T/serve/reports/big.bin"
ln -s q1/sales.csv "$T/serve/reports/latest.csv"

# wait_both_partial PUSH_PART FETCH_PART PID SECS: poll every 50 ms (at most
# SECS s) until both partial files hold data while neither file is
# complete; sets BOTH_PUSH and BOTH_FETCH (bytes seen). Fails if PID exits
# first or the time runs out.
wait_both_partial() {
  local push=$1 fetch=$2 pid=$3 secs=$4 i p f
  for ((i = 0; i < secs * 20; i++)); do
    is_running "$pid" || fail "process $pid exited before both directions were under way"
    p=0 f=0
    [[ -f $push ]] && p=$(written_bytes "$push")
    [[ -f $fetch ]] && f=$(written_bytes "$fetch")
    if ((p >= 2 * chunk && f >= 2 * chunk && p < big && f < big)) && [[ ! -e ${push%.sesscp.part} && ! -e ${fetch%.sesscp.part} ]]; then
      BOTH_PUSH=$p BOTH_FETCH=$f
      return 0
    fi
    sleep 0.05
  done
  fail "the two directions were never under way at the same time within ${secs}s (push part $p, fetch part $f bytes)"
}

check "a) push a tree and fetch a tree at once, in one full-duplex session (TLS)"
new_dest push
fetch="$T/fetched-a"
mkdir -p "$fetch"
start_recv "$DEST" "$T/a.recv.log" --serve "$T/serve" --bwlimit 8M -v
t0=$(now_ms)
"$BIN" send "$T/logs/" "127.0.0.1:$RECV_PORT" --fetch reports/ --fetch-dir "$fetch" --duplex full --bwlimit 8M \
  -v --json >"$T/a.json" 2>"$T/a.send.log" &
spid=$!
register "$spid"
wait_both_partial "$DEST/app/push.bin.sesscp.part" "$fetch/big.bin.sesscp.part" "$spid" 60
ok "both directions under way at once: push.bin at $BOTH_PUSH bytes and big.bin at $BOTH_FETCH bytes, neither complete"
wait_exit "$spid" 60 || fail_with_logs "send --duplex full still running after 60 s" "$T/a.send.log"
log "push + fetch of 2 x $big bytes at 8 MB/s each took $(fmt_ms $(($(now_ms) - t0))) s (one direction alone: ~$((big / rate)) s)"
assert_rc 0 "$WAIT_RC" "send --fetch --duplex full" "$T/a.send.log" "$T/a.recv.log"
grep -q '(full-duplex)' "$T/a.send.log" || fail_with_logs "the session was not full-duplex" "$T/a.send.log"
grep -q '(full-duplex)' "$T/a.recv.log" || fail_with_logs "the receiver did not run a full-duplex session" "$T/a.recv.log"
assert_same_tree "$T/logs" "$DEST" "pushed tree"
assert_same_tree "$T/serve/reports" "$fetch" "fetched tree"
[[ -L $fetch/latest.csv && $(readlink "$fetch/latest.csv") == q1/sales.csv ]] || fail "latest.csv did not arrive as a link"
if find "$fetch" "$DEST" -name '*.sesscp.*' | grep -q .; then fail "leftover .sesscp.* files"; fi
ok "no .sesscp.* leftovers on either side"
last_summary "$T/a.send.log" recv big.bin
[[ $S_STATE == complete && $S_N -eq $big ]] || fail "fetch summary for big.bin: $S_STATE, $S_N bytes"
last_summary "$T/a.send.log" send app/push.bin
[[ $S_STATE == complete && $S_N -eq $big ]] || fail "push summary for app/push.bin: $S_STATE, $S_N bytes"
ok "summary lines: sent app/push.bin, received big.bin ($big bytes each)"
got=$(jq -R -r 'fromjson? | select(.event == "file_done" and .direction == "received") | .name' "$T/a.json" | sort | tr '\n' ' ')
[[ $got == "big.bin q1/sales.csv " ]] || fail_with_logs "--json file_done received events: '$got'" "$T/a.json"
got=$(jq -R -r 'fromjson? | select(.event == "file_done" and .direction == "sent") | .name' "$T/a.json" | sort | tr '\n' ' ')
[[ $got == "a.log app/c.bin app/push.bin " ]] || fail_with_logs "--json file_done sent events: '$got'" "$T/a.json"
[[ $(json_field "$T/a.json" session_end '.exit_code') == 0 ]] || fail_with_logs "session_end exit_code" "$T/a.json"
ok "--json: file_done for both directions, session_end exit_code 0"
assert_parent_unchanged push

check "b) what --duplex accepts, and a receiver without --serve"
run_send "$T/b1.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --duplex full
assert_rc 64 "$SEND_RC" "--duplex full without --fetch" "$T/b1.log"
assert_contains "$T/b1.log" "--duplex applies only with --fetch" "the error says why"
run_send "$T/b2.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --fetch reports/ --duplex both
assert_rc 64 "$SEND_RC" "--duplex both" "$T/b2.log"
new_dest noserve
start_recv "$DEST" "$T/b.recv.log"
run_send "$T/b3.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --fetch reports/ --duplex full --fetch-dir "$fetch"
assert_rc 69 "$SEND_RC" "--duplex full against a receiver without --serve" "$T/b3.log" "$T/b.recv.log"
assert_contains "$T/b3.log" "full-duplex (--fetch) needs a receiver that exports a directory" "the refusal says why"
[[ ! -e $DEST/a.log ]] || fail "a refused session wrote a.log"
ok "refused before any file moved"

check "c) a raw peer breaking the full-duplex rules gets ABORT protocol naming the rule"
new_dest rules
start_recv "$DEST" "$T/c.recv.log" --serve "$T/serve" -v
# expect_abort NAME FRAMES PATTERN: testpeer sends HELLO (full-duplex) then FRAMES.
expect_abort() {
  timeout -k 5 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --hello-mode 2 --until-abort --frames-after-hello "$2" \
    >"$T/c.$1.out" 2>"$T/c.$1.err" || true
  sed 's/^/    /' "$T/c.$1.out"
  grep -q "^reply: ABORT reason=1 message=$3" "$T/c.$1.out" ||
    fail_with_logs "$1: expected ABORT reason=1 '$3'" "$T/c.$1.out" "$T/c.$1.err" "$T/c.recv.log"
  ok "$1: ABORT protocol"
}
expect_abort token "FETCH:0000,GIVE_TOKEN:0000" "GIVE_TOKEN belongs to neither direction"
expect_abort hello "FETCH:0000,HELLO:" "HELLO belongs to neither direction"
# RELEASE (nothing offered), then a SYNC: nothing may follow a RELEASE until it is answered.
expect_abort after-release "FETCH:0000,RELEASE:,SYNC:00000000000000010000000000000001" \
  "SYNC after the peer's sending direction asked to release"
expect_abort no-fetch "OFFER:" "expected FETCH first in a full-duplex session"
[[ -z $(ls -A "$DEST") ]] || fail "a broken session left files: $(ls -A "$DEST")"
run_send "$T/c.send.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --fetch reports/q1/ --fetch-dir "$fetch" --duplex full
assert_rc 0 "$SEND_RC" "a well-behaved full-duplex session to the same receiver" "$T/c.send.log" "$T/c.recv.log"
assert_same "$T/logs/a.log" "$DEST/a.log"

check "d) kill -9 the receiver while both directions are partial; the same command resumes both"
new_dest resume
fetch_d="$T/fetched-d"
mkdir -p "$fetch_d"
start_recv "$DEST" "$T/d1.recv.log" --serve "$T/serve" --bwlimit 8M
rpid1=$RECV_PID
cmd=("$T/logs/" "127.0.0.1:$RECV_PORT" --fetch reports/ --fetch-dir "$fetch_d" --duplex full --timeout 20)
start_send "$T/d1.send.log" "${cmd[@]}" --bwlimit 8M
spid=$SEND_PID
wait_both_partial "$DEST/app/push.bin.sesscp.part" "$fetch_d/big.bin.sesscp.part" "$spid" 60
# Let both get well into their files, then kill.
wait_progress "$fetch_d/big.bin.sesscp.part" $((big / 2)) "$rpid1" "$rate" 0 60
kill9 "$rpid1"
log "killed the receiver with push.bin at ~$(written_bytes "$DEST/app/push.bin.sesscp.part") and big.bin at ~$PROGRESS bytes"
wait_exit "$spid" 40 || fail_with_logs "sender still running 40 s after the receiver was killed" "$T/d1.send.log"
assert_rc 75 "$WAIT_RC" "send --duplex full after the receiver died" "$T/d1.send.log"
last_summary "$T/d1.send.log" send app/push.bin
[[ $S_STATE == interrupted ]] || fail_with_logs "push state '$S_STATE', expected interrupted" "$T/d1.send.log"
push1=$S_N
last_summary "$T/d1.send.log" recv big.bin
[[ $S_STATE == interrupted ]] || fail_with_logs "fetch state '$S_STATE', expected interrupted" "$T/d1.send.log"
fetch1=$S_N
[[ -s $fetch_d/big.bin.sesscp.journal && -s $DEST/app/push.bin.sesscp.journal ]] ||
  fail "each side should keep the journal of the file it was receiving"
ok "interrupted with $push1 bytes of push.bin sent and $fetch1 bytes of big.bin received; a journal on each side"
RECV_LISTEN="127.0.0.1:$RECV_PORT" start_recv "$DEST" "$T/d2.recv.log" --serve "$T/serve"
run_send "$T/d2.send.log" "${cmd[@]}"
assert_rc 0 "$SEND_RC" "the same command again" "$T/d2.send.log" "$T/d2.recv.log"
last_summary "$T/d2.send.log" send app/push.bin
log "run 2: push.bin resumed at $S_OFFSET, $S_N bytes sent"
((S_OFFSET > 0 && S_OFFSET + S_N == big)) || fail_with_logs "push did not resume: at $S_OFFSET + $S_N != $big" "$T/d2.send.log"
again=$((push1 + S_N - big))
assert_resent_bound "$again" $((window + chunk)) "push.bin sent again after the kill (window + chunk)"
last_summary "$T/d2.send.log" recv big.bin
log "run 2: big.bin resumed at $S_OFFSET, $S_N bytes received"
((S_OFFSET > 0 && S_OFFSET + S_N == big)) || fail_with_logs "fetch did not resume: at $S_OFFSET + $S_N != $big" "$T/d2.send.log"
again=$((fetch1 + S_N - big))
assert_resent_bound "$again" $((window + chunk)) "big.bin received again after the kill (window + chunk)"
assert_same_tree "$T/logs" "$DEST" "pushed tree after the resume"
assert_same_tree "$T/serve/reports" "$fetch_d" "fetched tree after the resume"
assert_parent_unchanged resume

check "e) --retry: the receiver killed mid-session and restarted; the sender reconnects and both directions finish"
new_dest retry
fetch_e="$T/fetched-e"
mkdir -p "$fetch_e"
start_recv "$DEST" "$T/e1.recv.log" --serve "$T/serve" --bwlimit 8M
rpid1=$RECV_PID
start_send "$T/e.send.log" "$T/logs/" "127.0.0.1:$RECV_PORT" --fetch reports/ --fetch-dir "$fetch_e" --duplex full \
  --timeout 20 --retry 5 --bwlimit 8M
spid=$SEND_PID
wait_both_partial "$DEST/app/push.bin.sesscp.part" "$fetch_e/big.bin.sesscp.part" "$spid" 60
wait_progress "$DEST/app/push.bin.sesscp.part" $((big / 2)) "$rpid1" "$rate" 0 60
kill9 "$rpid1"
RECV_LISTEN="127.0.0.1:$RECV_PORT" start_recv "$DEST" "$T/e2.recv.log" --serve "$T/serve"
wait_exit "$spid" 90 || fail_with_logs "sender with --retry still running after 90 s" "$T/e.send.log"
assert_rc 0 "$WAIT_RC" "send --duplex full --retry 5" "$T/e.send.log" "$T/e2.recv.log"
assert_contains "$T/e.send.log" "reconnecting (attempt 1/5)" "the sender reconnected"
last_summary "$T/e.send.log" recv big.bin
[[ $S_STATE == complete && $S_OFFSET -gt 0 ]] || fail_with_logs "big.bin: $S_STATE at $S_OFFSET after the reconnection" "$T/e.send.log"
last_summary "$T/e.send.log" send app/push.bin
# (a send summary spans the reconnections: its offset is the first session's)
[[ $S_STATE == complete ]] || fail_with_logs "push.bin: $S_STATE after the reconnection" "$T/e.send.log"
grep -qE 'app/push.bin: resumed at .*\(byte [1-9][0-9]*\)' "$T/e.send.log" ||
  fail_with_logs "push.bin did not resume from the receiver's journal after the reconnection" "$T/e.send.log"
ok "both resumed after the reconnection: $(grep -oE 'app/push.bin: resumed at [^(]*' "$T/e.send.log" | tail -1)"
assert_same_tree "$T/logs" "$DEST" "pushed tree after the reconnection"
assert_same_tree "$T/serve/reports" "$fetch_e" "fetched tree after the reconnection"
log "PASS"
