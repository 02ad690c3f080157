#!/usr/bin/env bash
# Scenario: a many-file send is killed (kill -9) while a large file in the
# middle of the tree is half sent. Running the same command again skips every
# file that is complete (the receiver confirms size and mtime: RESUME
# complete), resumes the large file from its checkpoint, sends the rest, and
# the tree arrives identical. Also: the small files are pipelined (one session
# of 300 files of 4-16 KiB must not take a round trip per file).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

src="$T/src"
mkdir -p "$src/a" "$src/m" "$src/z"
small_total=0
for i in $(seq -w 0 99); do
  n=$((4096 + (10#$i * 997) % 12288))
  head -c "$n" /dev/urandom >"$src/a/f$i"
  head -c "$n" /dev/urandom >"$src/z/f$i"
  small_total=$((small_total + 2 * n))
done
big=$((24 * MiB))
gen_file "$src/m/big.bin" "$big" tree-resume
total=$((small_total + big))
opts=(--chunk-size 256K --window 2M)
chunk=$((256 * 1024))
window=$((2 * MiB))
rate=$((8 * MiB))

new_dest resume
start_recv "$DEST" "$T/recv.log"
fds0=$(ls "/proc/$RECV_PID/fd" | wc -l)
threads0=$(ls "/proc/$RECV_PID/task" | wc -l)

check "kill -9 the sender when m/big.bin is ~50 % sent (--bwlimit 8M)"
start_send "$T/send1.log" "$src/" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 8M
spid=$SEND_PID
for ((i = 0; i < 600; i++)); do [[ -e $DEST/m/big.bin.sesscp.part ]] && break; sleep 0.05; done
[[ -e $DEST/m/big.bin.sesscp.part ]] || fail_with_logs "m/big.bin never started" "$T/send1.log" "$T/recv.log"
wait_progress "$DEST/m/big.bin.sesscp.part" $((big / 2)) "$spid" "$rate" 0 60
kill9 "$spid"
log "killed the sender at ~$PROGRESS bytes of m/big.bin"
wait_summary "$T/recv.log" recv m/big.bin 1 30
done_before=$(ls "$DEST/a" | grep -vc '\.sesscp\.' || true)
log "files of a/ complete at the receiver: $done_before of 100"
((done_before == 100)) || fail_with_logs "only $done_before of the 100 files before big.bin are complete" "$T/recv.log"
[[ ! -e $DEST/m/big.bin ]] || fail "m/big.bin exists after the kill"
assert_interrupted_state "$DEST/m" big.bin
for ((i = 0; i < 50; i++)); do
  fds1=$(ls "/proc/$RECV_PID/fd" | wc -l)
  threads1=$(ls "/proc/$RECV_PID/task" | wc -l)
  ((fds1 == fds0 && threads1 == threads0)) && break
  sleep 0.1
done
log "receiver after the aborted session: $fds0 -> $fds1 descriptors, $threads0 -> $threads1 threads"
((fds1 == fds0 && threads1 == threads0)) || fail "the aborted session left descriptors or threads behind"
ok "aborted session: every lease, descriptor and thread released"

check "the same command again: a/ skipped, big.bin resumed, z/ sent"
run_send "$T/send2.log" "$src/" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "resumed tree send" "$T/send2.log" "$T/recv.log"
already=$(summaries "$T/send2.log" send | awk -F'|' '$2 == "already complete"' | wc -l)
sent2=$(summaries "$T/send2.log" send | awk -F'|' '{ s += $5 } END { printf "%.0f\n", s }')
last_summary "$T/send2.log" send m/big.bin
log "run 2: $already files already complete; big.bin resumed at $S_OFFSET, $S_N bytes; $sent2 bytes sent in all"
((already >= 100)) || fail_with_logs "only $already files were skipped as complete" "$T/send2.log"
((S_OFFSET > 0)) || fail "big.bin resumed at $S_OFFSET, expected > 0"
((S_OFFSET + S_N == big)) || fail "big.bin: resumed at $S_OFFSET + $S_N bytes sent != $big"
z_bytes=$(du -cb "$src"/z/* | tail -1 | cut -f1)
assert_le "$sent2" $((big - S_OFFSET + z_bytes)) "run 2 sends only big.bin's rest and z/ (bytes)"
diff -r "$src" "$DEST" >"$T/diff.out" 2>&1 || fail_with_logs "trees differ" "$T/diff.out"
ok "diff -r: identical"
find "$DEST" -name '*.sesscp.*' | grep . && fail "sesscp's own files left behind"

check "pipelined: 200 small files in one session, well under a round trip and a sync each"
new_dest pipe
mkdir -p "$T/small"
cp -a "$src/a" "$src/z" "$T/small/"
kill9 "$RECV_PID"
start_recv "$DEST" "$T/recv3.log" --insecure
run_send "$T/send3.log" "$T/small/" "127.0.0.1:$RECV_PORT" --insecure
assert_rc 0 "$SEND_RC" "200 small files" "$T/send3.log" "$T/recv3.log"
diff -r "$T/small" "$DEST" >/dev/null || fail "small trees differ"
log "FIGURE: 200 files of 4-16 KiB in $(fmt_ms "$SEND_MS") s"
assert_le "$SEND_MS" 20000 "200 small files take under 20 s (ms)"
kill9 "$RECV_PID"

check "--retry: the connection is cut (RST) mid-tree; one process reconnects and offers only what is not confirmed"
need_tool faultproxy >/dev/null
new_dest retry
start_recv "$DEST" "$T/recv4.log" --insecure --timeout 5
cut=$((total / 2))
start_proxy "$T/proxy4.log" "$RECV_PORT" --cut-after "$cut"
run_send "$T/send4.log" "$src/" "127.0.0.1:$PROXY_PORT" --insecure "${opts[@]}" --timeout 5 --retry 3
assert_rc 0 "$SEND_RC" "tree send with --retry through a cut" "$T/send4.log" "$T/proxy4.log" "$T/recv4.log"
assert_contains "$T/proxy4.log" "cut connection 1 at offset $cut" "proxy cut the first connection"
assert_contains "$T/send4.log" "reconnecting (attempt 1/3) in " "sender announced the reconnection"
n=$(summaries "$T/send4.log" send | wc -l)
n_already=$(summaries "$T/send4.log" send | awk -F'|' '$2 == "already complete"' | wc -l)
n_complete=$(summaries "$T/send4.log" send | awk -F'|' '$2 == "complete"' | wc -l)
log "summaries: $n ($n_complete complete, $n_already already complete)"
((n == 201 && n_complete == 201)) || fail_with_logs "expected one 'complete' summary per file (201)" "$T/send4.log"
sent4=$(summaries "$T/send4.log" send | awk -F'|' '{ s += $5 } END { printf "%.0f\n", s }')
log "FIGURE: $sent4 bytes sent for $total ($((sent4 - total)) re-sent after the cut)"
assert_resent_bound $((sent4 - total)) $((chunk + window + 32 * 16384)) "re-sent after a cut (chunk + window + the offered small files)"
diff -r "$src" "$DEST" >/dev/null || fail "trees differ after the reconnection"
ok "tree identical after one reconnection"
stop_proxy
log "PASS"
