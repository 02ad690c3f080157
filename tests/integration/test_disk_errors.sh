#!/usr/bin/env bash
# Scenario: the receiver's disk fails. crashsim.so (CRASHSIM_FAIL) makes one
# call fail, or every call from one on, with ENOSPC or EIO:
#   a) write, ENOSPC from the 20th write on, every file (disk full: the
#      progress the receiver tries to save fails too)
#   b) write, EIO once, the 20th write of the part
#   c) fdatasync of the part, EIO, the 3rd (in the syncer)
#   d) fdatasync of the journal, ENOSPC, the 2nd (the first checkpoint)
#   e) link of the part as NAME, EIO (the major sync point, NAME absent)
#   f) that link, ENOSPC
#   g) directory fsync, EIO, the 2nd (right after the publishing link)
#   h) NAME exists (an older file): rename NAME.sesscp.publish -> NAME, EIO
#   i) a directory of 300 small files (one chunk each, written on the
#      receiver's small-file writer thread and committed in batches): write,
#      ENOSPC from the 100th on; j) the same, EIO once, the 150th write.
#      Every file written before the failure is kept (published, identical),
#      none after it.
# For each, on an 8 MiB file: the receiver (--once) exits 74, the sender
# exits 75 and prints "receiver: <reason>: <the receiver's error>",
# journalcheck proves the journal confirms only data that is there, NAME
# does not exist (g: NAME is already the whole file; h: NAME is still the
# older file, byte for byte), and a re-run without
# the fault completes with an identical NAME and nothing else left behind.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
crashsim=$(need_tool crashsim.so)
jcheck=$(need_tool journalcheck)

name=data.bin
size=$((8 * MiB))
opts=(--chunk-size 64K --window 1M --timeout 30)
gen_file "$T/$name" "$size" disk-errors
gen_file "$T/old.bin" $((1 * MiB)) disk-errors-old
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0

# faulted_run TAG RULE REASON STRERROR SEND-ARGS...: into $T/TAG, a --once
# receiver with CRASHSIM_FAIL=RULE and the sender; the fault was injected,
# the receiver exits 74, the sender 75 naming REASON and STRERROR.
faulted_run() {
  local tag=$1 rule=$2 reason=$3 strerror=$4 dest="$T/$1"
  shift 4
  RECV_ENV=(LD_PRELOAD="$crashsim" CRASHSIM_DIR="$dest" CRASHSIM_FAIL="$rule")
  start_recv "$dest" "$T/$tag.recv.log" --once
  RECV_ENV=()
  run_send "$T/$tag.send.log" "$@" "127.0.0.1:$RECV_PORT"
  wait_exit "$RECV_PID" 30 || fail_with_logs "[$tag] receiver still running 30 s after the sender exited" "$T/$tag.recv.log"
  unregister "$RECV_PID"
  grep -q "^crashsim: injected" "$T/$tag.recv.log" ||
    fail_with_logs "[$tag] the fault was never injected (is LD_PRELOAD honoured?)" "$T/$tag.recv.log"
  assert_rc 74 "$WAIT_RC" "[$tag] receiver --once" "$T/$tag.recv.log" "$T/$tag.send.log"
  assert_rc 75 "$SEND_RC" "[$tag] sender" "$T/$tag.send.log" "$T/$tag.recv.log"
  assert_contains "$T/$tag.send.log" "sesscp: error: receiver: $reason: " "[$tag] sender names the receiver's reason"
  assert_contains "$T/$tag.send.log" "$strerror" "[$tag] sender shows the receiver's error"
}

# clean_rerun TAG SEND-ARGS...: the same transfer into $T/TAG without the
# fault; sender and --once receiver exit 0.
clean_rerun() {
  local tag=$1 dest="$T/$1"
  shift
  start_recv "$dest" "$T/$tag.recv2.log" --once
  run_send "$T/$tag.send2.log" "$@" "127.0.0.1:$RECV_PORT"
  assert_rc 0 "$SEND_RC" "[$tag] re-run sender" "$T/$tag.send2.log" "$T/$tag.recv2.log"
  wait_exit "$RECV_PID" 30 || fail_with_logs "[$tag] receiver still running 30 s after the re-run" "$T/$tag.recv2.log"
  unregister "$RECV_PID"
  assert_rc 0 "$WAIT_RC" "[$tag] re-run receiver" "$T/$tag.recv2.log"
}

# fault TAG RULE REASON STRERROR PUBLISHED
fault() {
  local tag=$1 rule=$2 reason=$3 strerror=$4 published=$5 dest="$T/$1"
  mkdir "$dest"
  check "[$tag] CRASHSIM_FAIL=$rule: receiver exits 74, sender 75 with the reason, journal consistent"
  [[ $published != old ]] || cp -p "$T/old.bin" "$dest/$name"
  faulted_run "$tag" "$rule" "$reason" "$strerror" "$T/$name" "${opts[@]}"
  if [[ $published == yes ]]; then
    assert_same "$T/$name" "$dest/$name"
  elif [[ $published == old ]]; then
    assert_same "$T/old.bin" "$dest/$name"
  else
    [[ ! -e $dest/$name ]] || fail "[$tag] $name exists after a failed transfer"
    ok "[$tag] no $name"
  fi
  [[ -f $dest/$name.sesscp.journal ]] || fail "[$tag] $name.sesscp.journal missing after the failure"
  local target=$dest/$name.sesscp.part
  [[ -e $target || $published != yes ]] || target=$dest/$name
  "$jcheck" "$dest/$name.sesscp.journal" "$target" >"$T/$tag.jc.txt" 2>&1 ||
    fail_with_logs "[$tag] the journal points past the data" "$T/$tag.jc.txt"
  ok "[$tag] $(cat "$T/$tag.jc.txt")"

  check "[$tag] a re-run without the fault completes identical"
  clean_rerun "$tag" "$T/$name" "${opts[@]}"
  log "[$tag] $(grep -oE 'resuming [^ ]+ at [0-9]+|already complete' "$T/$tag.send2.log" | head -n 1 || echo 'started from 0')"
  assert_same "$T/$name" "$dest/$name"
  local left
  left=$(find "$dest" -mindepth 1 -maxdepth 1 ! -name "$name" -printf '%f ')
  [[ -z $left ]] || fail "[$tag] left behind after the re-run: $left"
  ok "[$tag] only $name in the directory"
}

fault a "write:ENOSPC:20+" "no space left" "No space left on device" no
fault b "write:EIO:20:$name.sesscp.part" "I/O error" "Input/output error" no
fault c "fdatasync:EIO:3:$name.sesscp.part" "I/O error" "Input/output error" no
fault d "fdatasync:ENOSPC:2:$name.sesscp.journal" "no space left" "No space left on device" no
fault e "link:EIO:1" "I/O error" "Input/output error" no
fault f "link:ENOSPC:1" "no space left" "No space left on device" no
fault g "dirsync:EIO:2" "I/O error" "Input/output error" yes
fault h "rename:EIO:1" "I/O error" "Input/output error" old

# small_fault TAG RULE REASON STRERROR KEPT: the small files of $T/small;
# exactly KEPT names are published, each its source byte for byte, and a
# re-run completes the directory (diff -r) with nothing else left behind.
mkdir "$T/small"
gen_file "$T/small.pool" $((300 * 10 * 1024)) disk-errors-small
(cd "$T/small" && split -b 10K -a 3 ../small.pool f)
small_fault() {
  local tag=$1 rule=$2 reason=$3 strerror=$4 kept=$5 dest="$T/$1" f n=0
  mkdir "$dest"
  check "[$tag] 300 small files, CRASHSIM_FAIL=$rule: receiver exits 74, sender 75, no wrong file published"
  faulted_run "$tag" "$rule" "$reason" "$strerror" "$T/small/" --timeout 30
  for f in "$T/small"/f*; do
    [[ -e $dest/${f##*/} ]] || continue
    cmp -s "$f" "$dest/${f##*/}" || fail "[$tag] ${f##*/} was published but differs from its source"
    n=$((n + 1))
  done
  ((n == kept)) || fail "[$tag] $n files published, expected the $kept written before the failure"
  ok "[$tag] $n of 300 files published (those written before the failure), each identical to its source"

  check "[$tag] a re-run without the fault completes the directory"
  clean_rerun "$tag" "$T/small/" --timeout 30
  diff -r "$T/small" "$dest" >"$T/$tag.diff" 2>&1 || fail_with_logs "[$tag] the directory differs after the re-run" "$T/$tag.diff"
  ok "[$tag] diff -r: identical, nothing else in the directory"
}
small_fault i "write:ENOSPC:100+" "no space left" "No space left on device" 99
small_fault j "write:EIO:150" "I/O error" "Input/output error" 149
log "PASS"
