#!/usr/bin/env bash
# Scenario: the receiver writes a journaled file's chunks with O_DIRECT
# (docs/PROTOCOL.md): the result is byte-identical, the aligned chunks never
# sit in the page cache (fincore), the unaligned tail goes through the cache;
# SESSCP_DIRECT_IO=0 writes through the page cache and is identical too; a
# kill -9 of the receiver mid-transfer (chunks queued for the writer thread)
# leaves a journal whose every record is backed by the part's bytes, and the
# re-run resumes and completes identical.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
command -v fincore >/dev/null || skip "fincore (util-linux) not installed"

name=data.bin
size=$((48 * MiB + 4321)) # not a multiple of 4 KiB: the last chunk is buffered
gen_file "$T/$name" "$size" direct-io
"$BIN" keygen -o "$T/key" >/dev/null 2>&1
sec=(--key-file "$T/key")

# resident_bytes FILE: bytes of FILE in the page cache.
resident_bytes() { fincore --bytes --noheadings --output RES "$1" | tr -d ' '; }

check "TLS transfer with direct writes: identical, chunks not in the page cache"
dest="$T/dest1"
mkdir -p "$dest"
start_recv "$dest" "$T/recv1.log" "${sec[@]}"
run_send "$T/send1.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${sec[@]}"
assert_rc 0 "$SEND_RC" "send" "$T/send1.log" "$T/recv1.log"
res=$(resident_bytes "$dest/$name")
log "destination resident in the page cache: $res of $size bytes"
assert_same "$T/$name" "$dest/$name"
assert_no_leftovers "$dest" "$name"
fstype=$(stat -f -c %T "$T")
if [[ $fstype == tmpfs || $fstype == ramfs ]]; then
  log "scratch on $fstype: a file's data lives in the page cache whatever the writes (cache check not applicable)"
  ok "identical"
elif dd if=/dev/zero of="$T/probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
  # Only the last, unaligned chunk (<= 1 MiB) may have gone through the cache.
  ((res <= MiB)) || fail "$res bytes of the destination are in the page cache: chunks were not written with O_DIRECT"
  ok "identical; $res bytes cached (the tail)"
else
  log "this file system refuses O_DIRECT: the receiver fell back to the page cache (cache check not applicable)"
  ok "identical"
fi

check "SESSCP_DIRECT_IO=0: through the page cache, identical"
dest="$T/dest2"
mkdir -p "$dest"
RECV_ENV=(SESSCP_DIRECT_IO=0)
start_recv "$dest" "$T/recv2.log" "${sec[@]}"
RECV_ENV=()
run_send "$T/send2.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${sec[@]}"
assert_rc 0 "$SEND_RC" "send" "$T/send2.log" "$T/recv2.log"
log "destination resident in the page cache: $(resident_bytes "$dest/$name") of $size bytes"
assert_same "$T/$name" "$dest/$name"
assert_no_leftovers "$dest" "$name"
ok "identical"

check "kill -9 of the receiver mid-transfer: the journal vouches only for written bytes; resume completes"
dest="$T/dest3"
mkdir -p "$dest"
part="$dest/$name.sesscp.part"
start_recv "$dest" "$T/recv3.log" "${sec[@]}"
rpid=$RECV_PID
start_send "$T/send3.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${sec[@]}" --bwlimit 16M --timeout 10
spid=$SEND_PID
wait_progress "$part" $((size / 2)) "$spid" $((16 * MiB)) 0 60
kill9 "$rpid"
wait_exit "$spid" 30 || fail_with_logs "sender still running 30 s after the receiver was killed" "$T/send3.log"
assert_rc 75 "$WAIT_RC" "sender after receiver kill" "$T/send3.log"
chunks=$(journal_chunks "$dest/$name.sesscp.journal")
((chunks > 0)) || fail "the journal records no chunk after ~50 %"
# Every journaled chunk must hold the source's bytes (1 MiB chunks).
cmp -n $((chunks * MiB)) "$T/$name" "$part" ||
  fail "the part differs from the source within the $chunks journaled chunks"
log "journal: $chunks chunks, all present in the part"
start_recv "$dest" "$T/recv4.log" "${sec[@]}"
run_send "$T/send4.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${sec[@]}"
assert_rc 0 "$SEND_RC" "resumed send" "$T/send4.log" "$T/recv4.log"
last_summary "$T/send4.log" send "$name"
((S_OFFSET > 0)) || fail "resumed at $S_OFFSET, expected > 0"
assert_same "$T/$name" "$dest/$name"
assert_no_leftovers "$dest" "$name"
ok "resumed at $S_OFFSET, identical"
