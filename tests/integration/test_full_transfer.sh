#!/usr/bin/env bash
# Scenario: complete transfers with `recv --once`: a 64 MiB file, a 0-byte
# file, a 1-byte file, a size that is not a multiple of the chunk size, and
# --name. Both sides exit 0, the result is byte-identical, no .part/.journal
# is left, and the sender's "N bytes sent" equals the file size.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

# transfer_once SRC NAME CHUNK_ARGS...: one file through a --once receiver.
transfer_once() {
  local src=$1 name=$2 size dest="$T/dest" rlog slog
  shift 2
  size=$(fsize "$src")
  rlog="$T/recv-$name.log"
  slog="$T/send-$name.log"
  check "transfer of $(basename "$src") ($size bytes) as $name${*:+ (send options: $*)}"
  start_recv "$dest" "$rlog" --once
  local rpid=$RECV_PID
  local -a name_args=()
  if [[ $name != "$(basename "$src")" ]]; then name_args=(--name "$name"); fi
  run_send "$slog" "$src" "127.0.0.1:$RECV_PORT" "${name_args[@]}" "$@"
  assert_rc 0 "$SEND_RC" "sender" "$slog" "$rlog"
  wait_exit "$rpid" 30 || fail_with_logs "recv --once did not exit within 30 s after the session" "$rlog"
  assert_rc 0 "$WAIT_RC" "recv --once" "$rlog"
  assert_same "$src" "$dest/$name"
  assert_no_leftovers "$dest" "$name"

  last_summary "$slog" send "$name"
  log "sender summary: state=$S_STATE size=$S_SIZE resumed_at=$S_OFFSET sent=$S_N secs=$S_SECS rate=$S_RATE ($(fmt_ms "$SEND_MS") s wall)"
  [[ $S_STATE == complete ]] || fail_with_logs "sender state '$S_STATE', expected 'complete'" "$slog"
  [[ $S_SIZE -eq $size ]] || fail "sender summary says $S_SIZE bytes total, file has $size"
  [[ $S_OFFSET -eq 0 ]] || fail "fresh transfer reports 'resumed at $S_OFFSET'"
  [[ $S_N -eq $size ]] || fail "sender sent $S_N data bytes for a $size-byte file"
  ok "sender: complete, $S_N bytes sent == size"

  last_summary "$rlog" recv "$name"
  log "receiver summary: state=$S_STATE size=$S_SIZE resumed_at=$S_OFFSET received=$S_N secs=$S_SECS rate=$S_RATE"
  [[ $S_STATE == complete ]] || fail_with_logs "receiver state '$S_STATE', expected 'complete'" "$rlog"
  [[ $S_N -eq $size ]] || fail "receiver received $S_N data bytes for a $size-byte file"
  ok "receiver: complete, $S_N bytes received == size"
}

mkdir -p "$T/dest"

gen_file "$T/big.bin" $((64 * MiB)) full-64
transfer_once "$T/big.bin" big.bin

: >"$T/empty.bin"
transfer_once "$T/empty.bin" empty.bin

gen_file "$T/one.bin" 1 one-byte
transfer_once "$T/one.bin" one.bin

# 3 full 1 MiB chunks + 12345 bytes with the default chunk size, and a
# non-multiple of a small chunk size too.
gen_file "$T/odd.bin" $((3 * MiB + 12345)) odd-size
transfer_once "$T/odd.bin" odd.bin
gen_file "$T/odd2.bin" $((5 * MiB + 777)) odd-size-2
transfer_once "$T/odd2.bin" odd2.bin --chunk-size 256K --window 4M

# --name: the file lands under the given name, not the source's.
gen_file "$T/named.bin" $((2 * MiB + 1)) named
transfer_once "$T/named.bin" other.bin
[[ ! -e $T/dest/named.bin ]] || fail "--name other.bin also created named.bin"
ok "--name other.bin landed as other.bin only"

log "PASS"
