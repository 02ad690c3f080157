#!/usr/bin/env bash
# Scenario: the receiver's file system fills up in the middle of a transfer
# (a real, small tmpfs mounted by the test; another file takes the space).
#  - the receiver (--once) exits 74 and says why; the sender exits 75 and
#    reports the receiver's reason;
#  - NAME never appears, the journal's chunks match the data on disk;
#  - once space is freed, the same command resumes (not from 0) and the
#    result is byte-identical.
# Also: a sender with --retry keeps trying while the disk is full and
# completes by itself once space is freed.
# Needs root (mount); skipped otherwise.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

[[ $(id -u) -eq 0 ]] || skip "needs root to mount a small tmpfs"
mnt="$T/small"
mkdir -p "$mnt"
mount -t tmpfs -o size=48m,mode=0755 sesscp-test "$mnt" 2>"$T/mount.log" || skip "cannot mount tmpfs here: $(cat "$T/mount.log")"
itest_on_exit() { umount -l "$mnt" 2>/dev/null || true; }
journalcheck=${SESSCP_TOOLS_DIR:-$(dirname "$BIN")/tests}/journalcheck
[[ -x $journalcheck ]] || journalcheck=""

name=data.bin
size=$((32 * MiB))
rate=$((16 * MiB))
src="$T/$name"
gen_file "$src" "$size" disk-full
opts=(--insecure --chunk-size 256K --window 4M --timeout 10)

check "fill the file system at ~25 % of a 32 MiB transfer into a 48 MiB tmpfs"
start_recv "$mnt" "$T/recv1.log" --insecure --once --timeout 10
rpid=$RECV_PID
port=$RECV_PORT
start_send "$T/send1.log" "$src" "127.0.0.1:$port" "${opts[@]}" --bwlimit 16M
spid=$SEND_PID
wait_progress "$mnt/$name.sesscp.part" $((size / 4)) "$spid" "$rate" 0 60
# Take all the space that is left (dd stops at ENOSPC).
dd if=/dev/zero of="$mnt/filler" bs=1M 2>/dev/null || true
log "filler: $(fsize "$mnt/filler") bytes; free now: $(df -Pk "$mnt" | awk 'NR==2 {print $4}') KiB"
wait_exit "$spid" 30 || fail_with_logs "sender still running 30 s after the disk filled" "$T/send1.log" "$T/recv1.log"
send_rc=$WAIT_RC
wait_exit "$rpid" 30 || fail_with_logs "receiver --once still running 30 s after the disk filled" "$T/recv1.log"
assert_rc 74 "$WAIT_RC" "receiver (--once) on a full disk" "$T/recv1.log"
assert_rc 75 "$send_rc" "sender facing a full receiver disk" "$T/send1.log"
grep -E '^sesscp: error: receiver: no space left: .*No space left on device' "$T/send1.log" >/dev/null ||
  fail_with_logs "sender did not report the receiver's reason (no space left ... No space left on device)" "$T/send1.log"
ok "sender: $(grep '^sesscp: error:' "$T/send1.log")"
grep -E 'No space left on device' "$T/recv1.log" >/dev/null ||
  fail_with_logs "receiver did not say 'No space left on device'" "$T/recv1.log"
ok "receiver: $(grep -m1 'No space left' "$T/recv1.log")"
assert_interrupted_state "$mnt" "$name"
if [[ -n $journalcheck ]]; then
  "$journalcheck" "$mnt/$name.sesscp.journal" "$mnt/$name.sesscp.part" >"$T/jc.log" 2>&1 ||
    fail_with_logs "journal claims data that is not on disk" "$T/jc.log"
  ok "journalcheck: $(tail -n 1 "$T/jc.log")"
fi

check "space freed: the same command resumes and completes"
rm -f "$mnt/filler"
start_recv "$mnt" "$T/recv2.log" --insecure --timeout 10
run_send "$T/send2.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "re-run after freeing space" "$T/send2.log" "$T/recv2.log"
last_summary "$T/send2.log" send "$name"
((S_OFFSET > 0)) || fail "the re-run started from 0; expected a resume"
ok "resumed at $S_OFFSET"
assert_same "$src" "$mnt/$name"
assert_no_leftovers "$mnt" "$name"
rm -f "$mnt/$name"

check "--retry: the sender keeps trying while the disk is full and completes once space is freed"
head -c $((40 * MiB)) /dev/zero >"$mnt/filler" 2>/dev/null || true
start_send "$T/send3.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}" --retry 20
spid=$SEND_PID
wait_for_line "$T/send3.log" "reconnecting \(attempt 2/20\).*no space left" 30 ||
  fail_with_logs "sender did not retry on the full disk" "$T/send3.log" "$T/recv2.log"
ok "$(grep -m1 'reconnecting' "$T/send3.log")"
rm -f "$mnt/filler"
wait_exit "$spid" 120 || fail_with_logs "sender still running 120 s after space was freed" "$T/send3.log"
assert_rc 0 "$WAIT_RC" "retrying sender after space was freed" "$T/send3.log" "$T/recv2.log"
assert_same "$src" "$mnt/$name"
log "PASS"
