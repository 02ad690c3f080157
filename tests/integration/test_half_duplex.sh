#!/usr/bin/env bash
# Half-duplex sessions (docs/PROTOCOL.md, "Dialog control"): one session that
# pushes and then fetches, turn by turn, with the data token.
#  a) push a small tree and fetch a tree (one file of 24 MiB) in one TLS
#     session: byte-identical both ways (SHA-256), modes and mtimes kept, the
#     fetched files reported (summary lines and --json file_done "received");
#  b) --fetch against a receiver without --serve: REFUSE 16, exit 69, message;
#  c) paths escaping the export: ../ and absolute refused before connecting
#     (64); a GIVE_TOKEN asking for ../etc answered with ABORT bad name by the
#     receiver; a symlink out of the export refused (69), nothing fetched;
#  d) the token rule: a receiver that sends DATA while the sender holds the
#     token gets ABORT protocol naming the rule (sender exits 76); a sender
#     that sends DATA after giving the token away gets the same from a real
#     receiver (which exits 76 with --once);
#  e) PLEASE_TOKEN: the sender stops offering and grants the token at its
#     next point where everything offered is confirmed, with its fetch
#     request, gets it back, finishes its push and releases;
#  f) kill -9 the serving receiver during the fetch of the big file; a new
#     receiver and the same command again: the push is already complete, the
#     fetch resumes from the initiator's journal (bytes received again below
#     window + chunk, and in fact below 2 chunks), result byte-identical;
#  g) the same kill with send --retry: the sender reconnects by itself and
#     the fetch resumes in the same process;
#  h) fetch only (no sources): one file, then the same command again finds
#     it already complete.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
TP=$(need_tool testpeer)

big=$((24 * MiB))
chunk=$DEFAULT_CHUNK
window=$DEFAULT_WINDOW

# The push tree.
mkdir -p "$T/logs/app" "$T/logs/empty"
printf 'log line 1\n' >"$T/logs/a.log"
gen_file "$T/logs/app/b.log" $((300 * 1024)) hd-push-b
gen_file "$T/logs/app/c.bin" $((3 * MiB + 17)) hd-push-c
chmod 0640 "$T/logs/a.log"
touch -d '2024-03-01 10:00:00.123456789' "$T/logs/a.log" "$T/logs/app/b.log"
# The export: a tree to fetch, one file of 24 MiB, a link that stays a link.
mkdir -p "$T/serve/reports/q1" "$T/serve/other"
gen_file "$T/serve/reports/big.bin" "$big" hd-fetch-big
gen_file "$T/serve/reports/q1/sales.csv" $((70 * 1024)) hd-fetch-sales
printf '#!/bin/sh\necho report\n' >"$T/serve/reports/run.sh"
chmod 0755 "$T/serve/reports/run.sh"
chmod 0600 "$T/serve/reports/q1/sales.csv"
touch -d '2023-12-24 18:30:00.5' "$T/serve/reports/big.bin" "$T/serve/reports/run.sh"
ln -s q1/sales.csv "$T/serve/reports/latest.csv"
printf 'not for you\n' >"$T/secret.txt"
ln -s "$T" "$T/serve/escape"

check "a) push a tree, then fetch a tree, in one half-duplex session (TLS)"
new_dest push
fetch="$T/fetched-a"
mkdir -p "$fetch"
start_recv "$DEST" "$T/a.recv.log" --serve "$T/serve" -v
t0=$(now_ms)
SEND_RC=0
timeout -k 5 "$SESSCP_RUN_TIMEOUT" "$BIN" send "$T/logs/" "127.0.0.1:$RECV_PORT" --fetch reports/ --fetch-dir "$fetch" \
  -v --json >"$T/a.json" 2>"$T/a.send.log" || SEND_RC=$?
log "push + fetch took $(fmt_ms $(($(now_ms) - t0))) s"
assert_rc 0 "$SEND_RC" "send --fetch" "$T/a.send.log" "$T/a.recv.log"
assert_contains "$T/a.send.log" "session established with sesscp/" "session established"
grep -q '(half-duplex)' "$T/a.send.log" || fail_with_logs "the session was not half-duplex" "$T/a.send.log"
assert_same_tree "$T/logs" "$DEST" "pushed tree"
assert_same_tree "$T/serve/reports" "$fetch" "fetched tree"
[[ -L $fetch/latest.csv && $(readlink "$fetch/latest.csv") == q1/sales.csv ]] || fail "latest.csv did not arrive as a link"
if find "$fetch" "$DEST" -name '*.sesscp.*' | grep -q .; then fail "leftover .sesscp.* files"; fi
ok "no .sesscp.* leftovers on either side"
last_summary "$T/a.send.log" recv big.bin
[[ $S_STATE == complete && $S_N -eq $big ]] || fail "fetch summary for big.bin: $S_STATE, $S_N bytes"
last_summary "$T/a.send.log" send app/c.bin
[[ $S_STATE == complete ]] || fail "push summary for app/c.bin: $S_STATE"
ok "summary lines: sent app/c.bin, received big.bin ($big bytes)"
got=$(jq -R -r 'fromjson? | select(.event == "file_done" and .direction == "received") | .name' "$T/a.json" | sort | tr '\n' ' ')
[[ $got == "big.bin q1/sales.csv run.sh " ]] || fail_with_logs "--json file_done received events: '$got'" "$T/a.json"
[[ $(json_field "$T/a.json" session_start '.fetch | join(",")') == "reports/" ]] || fail_with_logs "session_start .fetch" "$T/a.json"
ok "--json: session_start names the fetch; file_done events with direction received for the fetched files"
# The receiver's order of events: pushed files in, then its turn.
grep -n -E 'recv app/c.bin|data token received|send big.bin' "$T/a.recv.log" | sed 's/^/    /'
assert_in_log_order() { awk -v a="$2" -v b="$3" 'index($0, a) && !x { x = NR } index($0, b) && !y { y = NR } END { exit !(x && y && x < y) }' "$1"; }
assert_in_log_order "$T/a.recv.log" "recv app/c.bin: complete" "send big.bin: complete" ||
  fail_with_logs "the receiver did not receive before it sent" "$T/a.recv.log"
ok "the receiver received the push before it sent the fetch (turns)"
assert_parent_unchanged push

check "b) --fetch against a receiver without --serve: REFUSE 16, exit 69 with a message"
new_dest noserve
start_recv "$DEST" "$T/b.recv.log"
run_send "$T/b.send.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --fetch reports/ --fetch-dir "$fetch"
assert_rc 69 "$SEND_RC" "send --fetch without --serve" "$T/b.send.log" "$T/b.recv.log"
assert_contains "$T/b.send.log" "started without --serve DIR" "the error says why"
[[ ! -e $DEST/a.log ]] || fail "a refused session wrote a.log"
run_send "$T/b2.send.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT"
assert_rc 0 "$SEND_RC" "a simplex send to the same receiver" "$T/b2.send.log" "$T/b.recv.log"

check "c) paths escaping the export are refused"
run_send "$T/c1.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --fetch ../secret.txt
assert_rc 64 "$SEND_RC" "--fetch ../secret.txt" "$T/c1.log"
run_send "$T/c2.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --fetch "$T/secret.txt"
assert_rc 64 "$SEND_RC" "--fetch /absolute" "$T/c2.log"
new_dest esc
start_recv "$DEST" "$T/c.recv.log" --serve "$T/serve"
# GIVE_TOKEN asking for "../secret.txt" (count 1, contents 0, str16).
give_hex="000100000d$(printf '../secret.txt' | od -An -tx1 | tr -d ' \n')"
timeout -k 5 20 "$TP" "127.0.0.1:$RECV_PORT" --tls --hello-mode 1 --frames-after-hello "GIVE_TOKEN:$give_hex" \
  >"$T/c3.out" 2>"$T/c3.err" || true
sed 's/^/    /' "$T/c3.out"
grep -q '^reply: ABORT reason=4 .*secret' "$T/c3.out" ||
  fail_with_logs "GIVE_TOKEN for ../secret.txt: expected ABORT reason=4" "$T/c3.out" "$T/c3.err" "$T/c.recv.log"
ok "a raw GIVE_TOKEN for ../secret.txt: ABORT reason=4 (bad name)"
fetch_c="$T/fetched-c"
mkdir -p "$fetch_c"
run_send "$T/c4.log" "$T/logs/a.log" "127.0.0.1:$RECV_PORT" --fetch escape/secret.txt --fetch-dir "$fetch_c"
assert_rc 69 "$SEND_RC" "--fetch through a symlink out of the export" "$T/c4.log" "$T/c.recv.log"
assert_contains "$T/c4.log" "symbolic link" "the error names the link"
[[ -z $(ls -A "$fetch_c") ]] || fail "something was fetched through the link: $(ls -A "$fetch_c")"
ok "nothing fetched through the link"
assert_parent_unchanged esc

check "d) DATA without the data token: ABORT protocol naming the rule, exit 76"
start_peer data-from-receiver "$T/d.peer.log"
run_send "$T/d.send.log" "$T/logs/a.log" "127.0.0.1:$PEER_PORT" --insecure --fetch reports/ --fetch-dir "$fetch_c" --timeout 10
wait_exit "$PEER_PID" 10 || fail "testpeer did not finish"
sed 's/^/    /' "$T/d.send.log" "$T/d.peer.log.out"
assert_rc 76 "$SEND_RC" "sender facing DATA from the receiver while it holds the token" "$T/d.send.log" "$T/d.peer.log"
assert_contains "$T/d.send.log" "which does not hold the data token" "sender's error names the token rule"
grep -q '^reply: ABORT reason=1 .*does not hold the data token' "$T/d.peer.log.out" ||
  fail_with_logs "the peer did not get ABORT reason=1 naming the rule" "$T/d.peer.log.out"
ok "the peer got ABORT reason=1 (protocol) naming the rule"
new_dest tokrule
: >"$T/d2.recv.log"
"$BIN" recv --listen 127.0.0.1:0 --dir "$DEST" --serve "$T/serve" --once 2>"$T/d2.recv.log" &
rpid=$!
register "$rpid"
wait_for_line "$T/d2.recv.log" 'listening on 127\.0\.0\.1:[0-9]+' 15
rport=$(grep -m1 -oE 'listening on 127\.0\.0\.1:[0-9]+' "$T/d2.recv.log")
rport=${rport##*:}
give_hex="000100000e$(printf 'reports/run.sh' | od -An -tx1 | tr -d ' \n')"
data_hex="0000000000000000""00000000000000000000000000000000""01020304"
timeout -k 5 20 "$TP" "127.0.0.1:$rport" --tls --hello-mode 1 --until-abort \
  --frames-after-hello "GIVE_TOKEN:$give_hex,DATA:$data_hex" \
  >"$T/d2.out" 2>"$T/d2.err" || true
sed 's/^/    /' "$T/d2.out"
wait_exit "$rpid" 20 || fail_with_logs "recv --once did not exit" "$T/d2.recv.log"
grep -q '^reply: ABORT reason=1 .*DATA from the initiator, which does not hold the data token' "$T/d2.out" ||
  fail_with_logs "DATA from the initiator after GIVE_TOKEN: expected ABORT reason=1 naming the rule" "$T/d2.out" "$T/d2.err" "$T/d2.recv.log"
assert_rc 76 "$WAIT_RC" "recv --once after the initiator broke the token rule" "$T/d2.recv.log"
ok "the receiver holding the token refused the initiator's frame and exited 76"

check "e) PLEASE_TOKEN: the sender grants the token at its next point where everything offered is confirmed"
mkdir -p "$T/many"
for ((i = 0; i < 60; i++)); do printf '%d\n' "$i" >"$T/many/f$i.txt"; done
start_peer please-token "$T/e.peer.log"
run_send "$T/e.send.log" "$T/many/" "127.0.0.1:$PEER_PORT" --insecure --fetch reports/ --fetch-dir "$fetch_c" --timeout 10 -v
wait_exit "$PEER_PID" 10 || fail "testpeer did not finish"
sed 's/^/    /' "$T/e.peer.log.out"
assert_rc 0 "$SEND_RC" "sender asked for the token" "$T/e.send.log" "$T/e.peer.log"
line=$(grep -m1 '^token: GIVE_TOKEN after OFFERS=' "$T/e.peer.log.out") || fail_with_logs "no GIVE_TOKEN reached the peer" "$T/e.peer.log.out"
offers=$(sed -E 's/.*OFFERS=([0-9]+) .*/\1/' <<<"$line")
[[ $line == *"fetch=1" ]] || fail "the granted token did not carry the fetch request: $line"
((offers >= 1 && offers < 60)) || fail "token granted after $offers of 60 offers (expected early, before the push ended)"
grep -q '^reply: RELEASE_ACK releases=1 offers=60$' "$T/e.peer.log.out" ||
  fail_with_logs "the sender did not finish its push (60 offers) and release after getting the token back" "$T/e.peer.log.out"
ok "token granted after $offers of 60 offers with the fetch request; back, the push finished and released"

check "f) kill -9 the serving receiver during the fetch of the big file; the same command resumes it"
new_dest resume
fetch_f="$T/fetched-f"
mkdir -p "$fetch_f"
rate=$((8 * MiB))
start_recv "$DEST" "$T/f1.recv.log" --serve "$T/serve" --bwlimit 8M
rpid1=$RECV_PID
cmd=("$T/logs/" "127.0.0.1:$RECV_PORT" --fetch reports/ --fetch-dir "$fetch_f" --timeout 20)
start_send "$T/f1.send.log" "${cmd[@]}"
spid=$SEND_PID
wait_progress "$fetch_f/big.bin.sesscp.part" $((big / 2)) "$rpid1" "$rate" 0 60
kill9 "$rpid1"
log "killed the serving receiver at ~$PROGRESS bytes of big.bin ($((PROGRESS * 100 / big)) %)"
wait_exit "$spid" 40 || fail_with_logs "sender still running 40 s after the receiver was killed" "$T/f1.send.log"
assert_rc 75 "$WAIT_RC" "send --fetch after the serving receiver died" "$T/f1.send.log"
last_summary "$T/f1.send.log" recv big.bin
[[ $S_STATE == interrupted ]] || fail_with_logs "fetch state '$S_STATE', expected interrupted" "$T/f1.send.log"
got1=$S_N
[[ -s $fetch_f/big.bin.sesscp.journal && ! -e $fetch_f/big.bin ]] || fail "no journal/partial state in --fetch-dir"
ok "interrupted after $got1 bytes of big.bin; journal and part kept in --fetch-dir"
RECV_LISTEN="127.0.0.1:$RECV_PORT" start_recv "$DEST" "$T/f2.recv.log" --serve "$T/serve"
run_send "$T/f2.send.log" "${cmd[@]}" --json
assert_rc 0 "$SEND_RC" "the same command again" "$T/f2.send.log" "$T/f2.recv.log"
last_summary "$T/f2.send.log" send app/c.bin
[[ $S_STATE == "already complete" ]] || fail "pushed file app/c.bin: '$S_STATE', expected already complete"
last_summary "$T/f2.send.log" recv big.bin
log "run 2: big.bin resumed at $S_OFFSET, $S_N bytes received"
((S_OFFSET > 0 && S_OFFSET + S_N == big)) || fail_with_logs "fetch did not resume: at $S_OFFSET + $S_N != $big" "$T/f2.send.log"
assert_contains "$T/f2.send.log" "big.bin: journal confirms" "resumed from the initiator's journal"
again=$((got1 + S_N - big))
log "received $got1 + $S_N bytes for a $big-byte file => $again bytes received again"
assert_resent_bound "$again" $((window + chunk)) "re-received after the serving receiver's kill (window + chunk)"
assert_resent_bound "$again" $((2 * chunk)) "re-received (every verified chunk was checkpointed: at most the cut chunk)"
assert_same_tree "$T/serve/reports" "$fetch_f" "fetched tree after the resume"
assert_same_tree "$T/logs" "$DEST" "pushed tree"
assert_parent_unchanged resume

check "g) --retry: the serving receiver killed mid-fetch and restarted; the sender reconnects and resumes"
new_dest retry
fetch_g="$T/fetched-g"
mkdir -p "$fetch_g"
start_recv "$DEST" "$T/g1.recv.log" --serve "$T/serve" --bwlimit 8M
rpid1=$RECV_PID
start_send "$T/g.send.log" "$T/logs/" "127.0.0.1:$RECV_PORT" --fetch reports/ --fetch-dir "$fetch_g" --timeout 20 --retry 5
spid=$SEND_PID
wait_progress "$fetch_g/big.bin.sesscp.part" $((big / 2)) "$rpid1" "$rate" 0 60
kill9 "$rpid1"
RECV_LISTEN="127.0.0.1:$RECV_PORT" start_recv "$DEST" "$T/g2.recv.log" --serve "$T/serve"
wait_exit "$spid" 60 || fail_with_logs "sender with --retry still running after 60 s" "$T/g.send.log"
assert_rc 0 "$WAIT_RC" "send --fetch --retry 5" "$T/g.send.log" "$T/g2.recv.log"
assert_contains "$T/g.send.log" "reconnecting (attempt 1/5)" "the sender reconnected"
last_summary "$T/g.send.log" recv big.bin
[[ $S_STATE == complete && $S_OFFSET -gt 0 ]] || fail_with_logs "big.bin: $S_STATE at $S_OFFSET after the reconnection" "$T/g.send.log"
assert_contains "$T/g.send.log" "fetch: done, 3 files received" "the closing fetch line"
assert_same_tree "$T/serve/reports" "$fetch_g" "fetched tree after the reconnection"

check "h) fetch only: no sources, one file; again: already complete"
fetch_h="$T/fetched-h"
mkdir -p "$fetch_h"
run_send "$T/h1.log" "127.0.0.1:$RECV_PORT" --fetch reports/run.sh --fetch-dir "$fetch_h"
assert_rc 0 "$SEND_RC" "send HOST:PORT --fetch reports/run.sh" "$T/h1.log" "$T/g2.recv.log"
assert_same "$T/serve/reports/run.sh" "$fetch_h/run.sh"
[[ $(stat -c %a "$fetch_h/run.sh") == 755 ]] || fail "run.sh lost its mode: $(stat -c %a "$fetch_h/run.sh")"
# (options first: --fetch takes one value, HOST:PORT stays positional)
run_send "$T/h2.log" --fetch reports/run.sh --fetch-dir "$fetch_h" "127.0.0.1:$RECV_PORT"
assert_rc 0 "$SEND_RC" "the same fetch again, --fetch before HOST:PORT" "$T/h2.log"
assert_contains "$T/h2.log" "fetch: done, 0 files received, 1 already complete" "nothing fetched twice"
log "PASS"
