#!/usr/bin/env bash
# Scenario: bytes altered in transit (faultproxy --flip-after: one bit of one
# byte xored) on a 64 MiB transfer.
#   a) TLS (default, shared key), flip at ~40 % of the sender->receiver
#      stream: the record fails authentication, the session ends (sender
#      exits 75 naming TLS, the receiver logs it), NAME does not exist, the
#      .part and .journal do, and a direct re-run resumes at an offset in
#      (0, flip offset], completes, and is byte-identical (SHA-256).
#   b) TLS, flip at ~40 % of the receiver->sender stream (the
#      acknowledgements): the session ends too; a re-run completes.
#   c) plaintext (--insecure both sides), flip inside a DATA payload at
#      ~40 %: the chunk hash catches it, the receiver asks for the chunk again
#      (RESEND) and the same run completes (exit 0, identical SHA-256); the
#      receiver's "bytes received" exceeds the size by exactly one chunk.
# Nothing may be written outside the receiver's --dir.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

need_tool faultproxy >/dev/null

name=data.bin
size=$((64 * MiB))
src="$T/$name"
gen_file "$src" "$size" sec-tamper
src_sha=$(sha "$src")
opts=(--timeout 30)

# defer_fail MESSAGE LOG...: an assertion that failed, reported with its
# logs; the remaining parts still run and the test fails at the end.
declare -a DEFERRED=()
defer_fail() {
  local msg=$1 f
  shift
  for f in "$@"; do show_log "$f"; done
  printf '[%s] FAIL (deferred): %s\n' "$TEST_NAME" "$msg" >&2
  DEFERRED+=("$msg")
}

# recv_alive PID LOG WHAT
recv_alive() {
  is_running "$1" || fail_with_logs "receiver died: $3" "$2"
}

# tls_tamper TAG DIRECTION FLIP_OFFSET: one tampered run through the proxy,
# then a direct re-run that must resume and complete. Sets RESUMED_AT.
RESUMED_AT=0
tls_tamper() {
  local tag=$1 dir=$2 flip=$3 rpid
  new_dest "$tag"
  start_recv "$DEST" "$T/$tag.recv.log" -v
  rpid=$RECV_PID
  start_proxy "$T/$tag.proxy.log" "$RECV_PORT" --flip-after "$flip" --flip-dir "$dir" --once

  check "[$tag] TLS, one bit flipped at $dir offset $flip: the session ends, state saved"
  run_send "$T/$tag.send1.log" "$src" "127.0.0.1:$PROXY_PORT" "${opts[@]}"
  grep -q "^faultproxy: flipped byte at offset $flip $dir\$" "$T/$tag.proxy.log" ||
    fail_with_logs "faultproxy did not report the flip" "$T/$tag.proxy.log" "$T/$tag.send1.log"
  ok "faultproxy: $(grep -m1 'flipped byte' "$T/$tag.proxy.log")"
  assert_rc 75 "$SEND_RC" "[$tag] sender through the tampering proxy" "$T/$tag.send1.log" "$T/$tag.recv.log" "$T/$tag.proxy.log"
  log "[$tag] sender: $(grep -m1 '^sesscp: error' "$T/$tag.send1.log" || echo '(no error line)')"
  # The receiver answers the forged record with a TLS alert and closes; the
  # sender must say so, not just "connection reset" (it may be writing then).
  if grep -qi 'tls' "$T/$tag.send1.log"; then
    ok "[$tag] sender names the TLS failure"
  else
    defer_fail "[$tag] the sender's error does not name a TLS failure: $(grep -m1 '^sesscp: error' "$T/$tag.send1.log")" "$T/$tag.send1.log"
  fi
  last_summary "$T/$tag.send1.log" send "$name"
  [[ $S_STATE == interrupted ]] || fail_with_logs "[$tag] sender state '$S_STATE', expected 'interrupted'" "$T/$tag.send1.log"
  wait_summary "$T/$tag.recv.log" recv "$name" 1 15
  last_summary "$T/$tag.recv.log" recv "$name"
  log "[$tag] receiver: state=$S_STATE, $S_N bytes received"
  [[ $S_STATE == interrupted ]] || fail_with_logs "[$tag] receiver state '$S_STATE', expected 'interrupted'" "$T/$tag.recv.log"
  { grep -E 'session ended' "$T/$tag.recv.log" || true; } | head -n 3 | sed 's/^/    receiver: /'
  if [[ $dir == c2s ]]; then
    # The receiver is the one that saw the forged record (-v prints why).
    grep -E 'session ended: .*(TLS|SSL|bad record mac)' "$T/$tag.recv.log" >/dev/null ||
      fail_with_logs "[$tag] the receiver did not log the TLS failure" "$T/$tag.recv.log"
    ok "[$tag] receiver logged the TLS failure"
  fi
  recv_alive "$rpid" "$T/$tag.recv.log" "after a tampered session"
  assert_interrupted_state "$DEST" "$name"
  wait_exit "$PROXY_PID" 10 || log "faultproxy --once was still running; killed"

  check "[$tag] the journal replays: a direct re-run (no proxy) resumes, completes, SHA-256 matches"
  run_send "$T/$tag.send2.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}"
  assert_rc 0 "$SEND_RC" "[$tag] direct re-run" "$T/$tag.send2.log" "$T/$tag.recv.log"
  last_summary "$T/$tag.send2.log" send "$name"
  RESUMED_AT=$S_OFFSET
  log "[$tag] re-run: state=$S_STATE resumed_at=$S_OFFSET sent=$S_N"
  [[ $S_STATE == complete ]] || fail "[$tag] re-run state '$S_STATE', expected 'complete'"
  ((S_OFFSET + S_N == size)) || fail "[$tag] resumed at $S_OFFSET + $S_N bytes sent != $size"
  assert_same "$src" "$DEST/$name"
  assert_no_leftovers "$DEST" "$name"
  assert_parent_unchanged "$tag"
  kill9 "$rpid"
}

# ---------------------------------------------------------------- a) c2s
flip=$((size * 4 / 10))
tls_tamper tls-c2s c2s "$flip"
((RESUMED_AT > 0)) || fail "[tls-c2s] resumed at $RESUMED_AT, expected > 0 (the journal held nothing)"
assert_le "$RESUMED_AT" "$flip" "[tls-c2s] resume offset <= flip offset"
log "[tls-c2s] FIGURE: flip at stream offset $flip, resumed at $RESUMED_AT ($((RESUMED_AT * 100 / size)) % of the file)"

# ---------------------------------------------------------------- b) s2c
# The acknowledgement stream is small; measure it on a clean run through the
# proxy, with a smaller window so that it holds many CHECKPOINTs, and flip at
# 40 % of it (well past the handshake).
opts=(--timeout 30 --window 8M)
check "[tls-s2c] measure the receiver->sender stream on a clean run (--window 8M)"
new_dest baseline
start_recv "$DEST" "$T/baseline.recv.log"
bpid=$RECV_PID
start_proxy "$T/baseline.proxy.log" "$RECV_PORT" --once
run_send "$T/baseline.send.log" "$src" "127.0.0.1:$PROXY_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "clean run through faultproxy" "$T/baseline.send.log" "$T/baseline.proxy.log"
wait_exit "$PROXY_PID" 10 || true
s2c_total=$(sed -nE 's/^faultproxy: connection 1: ended .*s2c ([0-9]+) bytes$/\1/p' "$T/baseline.proxy.log")
[[ -n $s2c_total ]] || fail_with_logs "no byte counts in the faultproxy log" "$T/baseline.proxy.log"
log "clean run: $(grep 'connection 1: ended' "$T/baseline.proxy.log")"
assert_same "$src" "$DEST/$name"
kill9 "$bpid"
flip_s2c=$((s2c_total * 4 / 10))
tls_tamper tls-s2c s2c "$flip_s2c"
log "[tls-s2c] FIGURE: flip at s2c offset $flip_s2c of $s2c_total, resumed at $RESUMED_AT ($((RESUMED_AT * 100 / size)) % of the file)"

# ------------------------------------------------------------ c) plaintext
# Stream layout: HELLO and OFFER (< 2 KiB), then per chunk a DATA frame of
# 8 + 24 + 1 MiB bytes and, every 15 chunks, a 24-byte SYNC. Offset
# 26 MiB + 512 KiB is therefore ~511 KiB into chunk 26's bytes: a payload byte.
opts=(--timeout 30)
flip=$((26 * MiB + MiB / 2))
tag=plain
new_dest "$tag"
start_recv "$DEST" "$T/$tag.recv.log" --insecure -v
rpid=$RECV_PID
start_proxy "$T/$tag.proxy.log" "$RECV_PORT" --flip-after "$flip" --flip-dir c2s --once
check "[plain] --insecure, one bit flipped in DATA at offset $flip: RESEND, and the same run completes"
run_send "$T/$tag.send.log" "$src" "127.0.0.1:$PROXY_PORT" --insecure -v "${opts[@]}"
grep -q "^faultproxy: flipped byte at offset $flip c2s\$" "$T/$tag.proxy.log" ||
  fail_with_logs "faultproxy did not report the flip" "$T/$tag.proxy.log"
ok "faultproxy: $(grep -m1 'flipped byte' "$T/$tag.proxy.log")"
assert_rc 0 "$SEND_RC" "[plain] sender through the tampering proxy" "$T/$tag.send.log" "$T/$tag.recv.log" "$T/$tag.proxy.log"
grep -iE 'resend|hash|mismatch' "$T/$tag.recv.log" "$T/$tag.send.log" | head -n 4 | sed 's/^/    /' || true
last_summary "$T/$tag.send.log" send "$name"
log "[plain] sender: state=$S_STATE, $S_N bytes sent"
[[ $S_STATE == complete ]] || fail "[plain] sender state '$S_STATE', expected 'complete'"
assert_same "$src" "$DEST/$name"
[[ $(sha "$DEST/$name") == "$src_sha" ]] || fail "[plain] SHA-256 differs"
assert_no_leftovers "$DEST" "$name"
wait_summary "$T/$tag.recv.log" recv "$name" 1 15
last_summary "$T/$tag.recv.log" recv "$name"
log "[plain] FIGURE: receiver: state=$S_STATE, $S_N bytes received for a $size-byte file (excess $((S_N - size)) = $(((S_N - size) / 1024)) KiB)"
[[ $S_STATE == complete ]] || fail "[plain] receiver state '$S_STATE', expected 'complete'"
((S_N == size + DEFAULT_CHUNK)) ||
  fail_with_logs "[plain] receiver got $S_N bytes, expected size + one chunk = $((size + DEFAULT_CHUNK))" "$T/$tag.recv.log"
ok "[plain] exactly one chunk ($DEFAULT_CHUNK bytes) was received twice"
recv_alive "$rpid" "$T/$tag.recv.log" "after the plaintext run"
assert_parent_unchanged "$tag"
stop_proxy
if ((${#DEFERRED[@]})); then
  fail "${#DEFERRED[@]} assertion(s) failed: $(printf '%s; ' "${DEFERRED[@]}")"
fi
log "PASS"
