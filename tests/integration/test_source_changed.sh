#!/usr/bin/env bash
# Scenario: a transfer is interrupted (sender killed at ~50 %), then the source
# changes before the re-run. The sender must say "source changed", start over
# at offset 0 and deliver the NEW content. Two variants:
#   a) 4 KiB overwritten in the middle and the mtime changed (touch -d);
#   b) only the size changes (bytes appended, mtime restored).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

size=$((64 * MiB))
rate=$((32 * MiB))
dest="$T/dest"
mkdir -p "$dest"

start_recv "$dest" "$T/recv.log"
rpid=$RECV_PID

# interrupt NAME: run a throttled send of $T/NAME and kill it at ~50 %.
interrupt() {
  local name=$1 part="$dest/$1.sesscp.part" n
  n=$(summary_count "$T/recv.log" recv "$name")
  start_send "$T/send-$name-1.log" "$T/$name" "127.0.0.1:$RECV_PORT" --bwlimit 32M
  wait_progress "$part" $((size / 2)) "$SEND_PID" "$rate" 0 120
  kill9 "$SEND_PID"
  log "$name: killed the sender at ~$PROGRESS bytes in the part"
  wait_summary "$T/recv.log" recv "$name" $((n + 1)) 20
  assert_interrupted_state "$dest" "$name"
}

# rerun_changed NAME: re-run after the source changed; expect a restart at 0.
rerun_changed() {
  local name=$1 slog="$T/send-$1-2.log"
  run_send "$slog" "$T/$name" "127.0.0.1:$RECV_PORT"
  assert_rc 0 "$SEND_RC" "$name: re-run after the source changed" "$slog" "$T/recv.log"
  sed 's/^/    /' "$slog"
  assert_contains "$slog" "source changed" "$name: sender output"
  last_summary "$slog" send "$name"
  log "$name: sender summary: state=$S_STATE size=$S_SIZE resumed_at=$S_OFFSET sent=$S_N"
  [[ $S_STATE == complete ]] || fail "$name: state '$S_STATE', expected 'complete'"
  [[ $S_OFFSET -eq 0 ]] || fail "$name: resumed at $S_OFFSET after the source changed, expected 0"
  [[ $S_SIZE -eq $(fsize "$T/$name") ]] || fail "$name: summary size $S_SIZE != new source size $(fsize "$T/$name")"
  ok "$name: restarted at 0"
  assert_same "$T/$name" "$dest/$name"
  assert_no_leftovers "$dest" "$name"
}

check "variant a: content and mtime change"
gen_file "$T/a.bin" "$size" source-changed-a
interrupt a.bin
old=$(sha "$T/a.bin")
gen_file "$T/patch" 4096 source-changed-patch
dd if="$T/patch" of="$T/a.bin" bs=4096 seek=$((size / 2 / 4096 - 100)) count=1 conv=notrunc status=none
touch -d '2020-01-02 03:04:05' "$T/a.bin"
log "a.bin: overwrote 4 KiB at offset $(((size / 2 / 4096 - 100) * 4096)), mtime now $(stat -c %y "$T/a.bin")"
[[ $(sha "$T/a.bin") != "$old" ]] || fail "test bug: the source did not change"
rerun_changed a.bin

check "variant b: only the size changes (bytes appended, mtime restored)"
gen_file "$T/b.bin" "$size" source-changed-b
interrupt b.bin
touch -r "$T/b.bin" "$T/b.mtime"
gen_file "$T/tail" 5000 source-changed-tail
cat "$T/tail" >>"$T/b.bin"
touch -r "$T/b.mtime" "$T/b.bin"
log "b.bin: appended 5000 bytes (size now $(fsize "$T/b.bin")), mtime kept at $(stat -c %y "$T/b.bin")"
rerun_changed b.bin

is_running "$rpid" || fail_with_logs "receiver died" "$T/recv.log"
log "PASS"
