#!/usr/bin/env bash
# Scenario: re-running a send after a complete transfer is a no-op: exit 0,
# "already complete", 0 bytes sent, destination untouched (digest, mtime).
# Then the state a power cut leaves between publishing NAME and removing its
# part (the part a second name of NAME's inode), for a journaled and a small
# file, and a changed source: NAME becomes the new file and the old inode
# (seen through a third link) is never written in place.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

dest="$T/dest"
mkdir -p "$dest"
gen_file "$T/data.bin" $((16 * MiB + 4321)) rerun-noop
size=$(fsize "$T/data.bin")

start_recv "$dest" "$T/recv.log"

check "first transfer completes"
run_send "$T/send1.log" "$T/data.bin" "127.0.0.1:$RECV_PORT"
assert_rc 0 "$SEND_RC" "first send" "$T/send1.log" "$T/recv.log"
assert_same "$T/data.bin" "$dest/data.bin"
assert_no_leftovers "$dest" data.bin
wait_summary "$T/recv.log" recv data.bin 1 15

digest_before=$(sha "$dest/data.bin")
mtime_before=$(stat -c '%y' "$dest/data.bin")
inode_before=$(stat -c '%i' "$dest/data.bin")
log "destination before re-run: mtime $mtime_before, inode $inode_before"
# Let a rewrite show up in the mtime even on coarse-grained clocks.
sleep 1.1

check "second send of the same file is a no-op"
run_send "$T/send2.log" "$T/data.bin" "127.0.0.1:$RECV_PORT"
log "re-run took $(fmt_ms "$SEND_MS") s (wall clock, including process start)"
assert_rc 0 "$SEND_RC" "re-run send" "$T/send2.log" "$T/recv.log"
assert_contains "$T/send2.log" "already complete" "re-run sender output"
last_summary "$T/send2.log" send data.bin
log "sender summary: state=$S_STATE size=$S_SIZE resumed_at=$S_OFFSET sent=$S_N secs=$S_SECS"
[[ $S_STATE == "already complete" ]] || fail_with_logs "sender state '$S_STATE', expected 'already complete'" "$T/send2.log"
[[ $S_N -eq 0 ]] || fail "re-run sent $S_N bytes, expected 0"
[[ $S_SIZE -eq $size ]] || fail "re-run summary says $S_SIZE bytes total, file has $size"
ok "re-run: already complete, 0 bytes sent"

wait_summary "$T/recv.log" recv data.bin 2 15
last_summary "$T/recv.log" recv data.bin
log "receiver summary: state=$S_STATE received=$S_N"
[[ $S_N -eq 0 ]] || fail "receiver received $S_N bytes on the re-run, expected 0"

check "destination unchanged"
digest_after=$(sha "$dest/data.bin")
mtime_after=$(stat -c '%y' "$dest/data.bin")
inode_after=$(stat -c '%i' "$dest/data.bin")
log "destination after re-run: mtime $mtime_after, inode $inode_after"
[[ $digest_after == "$digest_before" ]] || fail "destination content changed by the re-run"
[[ $mtime_after == "$mtime_before" ]] || fail "destination mtime changed by the re-run ($mtime_before -> $mtime_after)"
[[ $inode_after == "$inode_before" ]] || fail "destination was replaced by the re-run (inode $inode_before -> $inode_after)"
assert_no_leftovers "$dest" data.bin
ok "digest, mtime and inode unchanged"

check "a part left as a second name of NAME is not written in place"
mkdir -p "$T/new"
gen_file "$T/new/big.bin" $((3 * MiB)) rerun-new-big
gen_file "$T/new/small.bin" 10000 rerun-new-small
for f in big.bin small.bin; do
  gen_file "$dest/$f" $((2 * MiB)) "rerun-old-$f"
  ln "$dest/$f" "$dest/$f.sesscp.part" # the crash leftover
  ln "$dest/$f" "$T/keep-$f"             # what must not change
  cp "$dest/$f" "$T/old-$f"
done
run_send "$T/send3.log" "$T/new/" "127.0.0.1:$RECV_PORT" --chunk-size 1M
assert_rc 0 "$SEND_RC" "send over the leftovers" "$T/send3.log" "$T/recv.log"
for f in big.bin small.bin; do
  assert_same "$T/new/$f" "$dest/$f"
  assert_same "$T/old-$f" "$T/keep-$f"
done
assert_no_leftovers "$dest" big.bin
assert_no_leftovers "$dest" small.bin
[[ -z $(find "$dest" -name '*.sesscp.*') ]] || fail "left behind: $(find "$dest" -name '*.sesscp.*')"
ok "both names are the new files; the old inode kept its bytes; no part left"

is_running "$RECV_PID" || fail_with_logs "receiver died" "$T/recv.log"
log "PASS"
