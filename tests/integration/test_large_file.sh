#!/usr/bin/env bash
# Scenario: a file larger than 4 GiB (offsets past 32 bits). A 4.5 GiB sparse
# source with random 1 MiB blocks at 0, 2 GiB and 4 GiB + 12345 is sent once
# in full (timed), then again under another name with one interruption at
# ~50 % (sender killed) and a resume. Default chunk and window. Skipped
# (exit 125) when the scratch file system has less than 12 GiB free.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

size=$((4 * GiB + GiB / 2))
chunk=$DEFAULT_CHUNK
window=$DEFAULT_WINDOW
need_kib=$((12 * 1024 * 1024))
free_kib=$(df -Pk "$T" | awk 'NR == 2 { print $4 }')
log "free space in $T: $((free_kib / 1024 / 1024)) GiB"
if ((free_kib < need_kib)); then
  skip "needs 12 GiB free in ${TMPDIR:-/tmp}, has $((free_kib / 1024 / 1024)) GiB"
fi

src="$T/big.bin"
dest="$T/dest"
mkdir -p "$dest"
truncate -s "$size" "$src"
i=0
for off in 0 $((2 * GiB)) $((4 * GiB + 12345)); do
  i=$((i + 1))
  gen_file "$T/block" "$MiB" "large-file-$i"
  dd if="$T/block" of="$src" bs="$MiB" count=1 seek="$off" oflag=seek_bytes conv=notrunc status=none
done
rm -f "$T/block"
[[ $(fsize "$src") -eq $size ]] || fail "test bug: source is $(fsize "$src") bytes, expected $size"
log "source: $size bytes, sparse (allocated $(($(stat -c '%b * %B' "$src") / 1024)) KiB)"
t0=$(now_ms)
src_sha=$(sha "$src")
log "source sha256 $src_sha ($(fmt_ms $(($(now_ms) - t0))) s to hash)"

# compare_dest NAME: SHA-256 of the result against the source's.
compare_dest() {
  local got
  [[ -f $dest/$1 ]] || fail "$dest/$1 does not exist"
  got=$(sha "$dest/$1")
  log "sha256 source: $src_sha"
  log "sha256 result: $got"
  [[ $got == "$src_sha" ]] || fail "$1 differs from the source"
  ok "$1 byte-identical ($(fsize "$dest/$1") bytes)"
}

start_recv "$dest" "$T/recv.log"
rpid=$RECV_PID

check "uninterrupted transfer of the 4.5 GiB file"
run_send "$T/send-full.log" "$src" "127.0.0.1:$RECV_PORT" --name full.bin
assert_rc 0 "$SEND_RC" "full send" "$T/send-full.log" "$T/recv.log"
last_summary "$T/send-full.log" send full.bin
log "full: $(fmt_ms "$SEND_MS") s wall, $((size * 1000 / (SEND_MS > 0 ? SEND_MS : 1) / MiB)) MiB/s; sender summary: $S_STATE, $S_N bytes sent, $S_SECS s, $S_RATE"
[[ $S_STATE == complete && $S_N -eq $size && $S_SIZE -eq $size ]] ||
  fail_with_logs "unexpected summary for full.bin" "$T/send-full.log"
compare_dest full.bin
assert_no_leftovers "$dest" full.bin
rm -f "$dest/full.bin"

check "interrupted (sender killed at ~50 %) and resumed transfer"
rate=$((512 * MiB))
start_send "$T/send-1.log" "$src" "127.0.0.1:$RECV_PORT" --name resumed.bin --bwlimit 512M
wait_progress "$dest/resumed.bin.sesscp.part" $((size / 2)) "$SEND_PID" "$rate" 0 300
kill9 "$SEND_PID"
log "killed the sender at ~$PROGRESS bytes in the part ($((PROGRESS * 100 / size)) %)"
wait_summary "$T/recv.log" recv resumed.bin 1 30
last_summary "$T/recv.log" recv resumed.bin
log "session 1: receiver summary: state=$S_STATE resumed_at=$S_OFFSET received=$S_N"
recv1=$S_N
assert_interrupted_state "$dest" resumed.bin

run_send "$T/send-2.log" "$src" "127.0.0.1:$RECV_PORT" --name resumed.bin
assert_rc 0 "$SEND_RC" "resumed send" "$T/send-2.log" "$T/recv.log"
last_summary "$T/send-2.log" send resumed.bin
log "resumed: $(fmt_ms "$SEND_MS") s wall; sender summary: $S_STATE, resumed at $S_OFFSET, $S_N bytes sent, $S_SECS s, $S_RATE"
[[ $S_STATE == complete ]] || fail "resumed state '$S_STATE', expected 'complete'"
((S_OFFSET > 2 * GiB - chunk - window)) || fail "resumed at $S_OFFSET, expected near 50 % ($((size / 2)))"
((S_OFFSET + S_N == size)) || fail "resumed at $S_OFFSET + $S_N bytes sent != $size"
compare_dest resumed.bin
assert_no_leftovers "$dest" resumed.bin

wait_summary "$T/recv.log" recv resumed.bin 2 30
total=$(sum_n "$T/recv.log" recv resumed.bin)
resent=$((total - size))
log "received $recv1 + $((total - recv1)) = $total bytes for a $size-byte file => $resent bytes re-sent"
assert_resent_bound "$resent" $((chunk + window)) "re-sent after sender kill (chunk + window)"
is_running "$rpid" || fail_with_logs "receiver died" "$T/recv.log"
log "PASS"
