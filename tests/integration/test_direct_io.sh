#!/usr/bin/env bash
# Scenario: how the receiver writes a journaled file's chunks
# (docs/PROTOCOL.md). By default through the page cache, each sync point's
# chunks dropped from the cache once fdatasynced: the result is
# byte-identical and (fincore) almost none of it is left in the page cache.
# With SESSCP_DIRECT_IO=1, O_DIRECT: identical, the aligned chunks never in
# the cache. A kill -9 of the receiver mid-transfer (chunks queued for the
# writer thread) leaves a journal whose every record is backed by the part's
# bytes, and the re-run resumes and completes identical.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
command -v fincore >/dev/null || skip "fincore (util-linux) not installed"

name=data.bin
size=$((48 * MiB + 4321)) # not a multiple of 4 KiB: the last chunk is unaligned
gen_file "$T/$name" "$size" direct-io
"$BIN" keygen -o "$T/key" >/dev/null 2>&1
sec=(--key-file "$T/key")

# resident_bytes FILE: bytes of FILE in the page cache.
resident_bytes() { fincore --bytes --noheadings --output RES "$1" | tr -d ' '; }

fstype=$(stat -f -c %T "$T")
# transfer N WHAT [ENV...]: a TLS transfer into $T/destN with the receiver's
# environment ENV; identical, and at most 1 MiB (the unaligned tail) of the
# destination in the page cache on a disk file system.
transfer() {
  local n=$1 what=$2 dest="$T/dest$1"
  shift 2
  mkdir -p "$dest"
  RECV_ENV=("$@")
  start_recv "$dest" "$T/recv$n.log" "${sec[@]}"
  RECV_ENV=()
  run_send "$T/send$n.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${sec[@]}"
  assert_rc 0 "$SEND_RC" "send" "$T/send$n.log" "$T/recv$n.log"
  local res
  res=$(resident_bytes "$dest/$name")
  log "destination resident in the page cache: $res of $size bytes"
  assert_same "$T/$name" "$dest/$name"
  assert_no_leftovers "$dest" "$name"
  if [[ $fstype == tmpfs || $fstype == ramfs ]]; then
    log "scratch on $fstype: a file's data lives in the page cache whatever the writes (cache check not applicable)"
    ok "identical"
  else
    ((res <= MiB)) || fail "$res bytes of the destination are in the page cache: $what"
    ok "identical; $res bytes cached"
  fi
}

check "TLS transfer through the page cache: identical, synced chunks dropped from the cache"
transfer 1 "synced chunks were not dropped from the cache"

check "SESSCP_DIRECT_IO=1: O_DIRECT writes, identical, chunks not in the page cache"
if [[ $fstype != tmpfs && $fstype != ramfs ]] &&
  ! dd if=/dev/zero of="$T/probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
  log "this file system refuses O_DIRECT: the receiver falls back to the page cache"
fi
transfer 2 "chunks were not written with O_DIRECT" SESSCP_DIRECT_IO=1

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
