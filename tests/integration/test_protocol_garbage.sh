#!/usr/bin/env bash
# Scenario: a long-running receiver (no --once) is fed hostile or broken
# input over raw TCP (bash's /dev/tcp) and must answer with ABORT / REFUSE or
# close the connection, never hang, never die, and keep serving:
#   control: a well-formed HELLO version 1 gets ACCEPT (0x02)
#   a) 4 KiB of random bytes: connection closed within 15 s
#   b) a DATA (0x12) header as the first frame: ABORT (0x7F)
#   c) a well-formed HELLO with version 99: REFUSE (0x03)
#   d) a header announcing a 0xFFFFFFFF-byte payload: ABORT or close, no hang
#   e) an unknown frame type (0x55) as the first frame: ABORT (0x7F)
# Afterwards a normal send to the same receiver succeeds.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

dest="$T/dest"
mkdir -p "$dest"
# The frames below are written by hand in plaintext: this receiver runs with --insecure.
start_recv "$dest" "$T/recv.log" --insecure
rpid=$RECV_PID
port=$RECV_PORT

# ---- frame encoding (big-endian), as hex strings ---------------------------
hex_u8() { printf '%02x' "$1"; }
hex_u16() { printf '%04x' "$1"; }
hex_u32() { printf '%08x' "$1"; }
hex_str() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
hex_str16() { printf '%s%s' "$(hex_u16 ${#1})" "$(hex_str "$1")"; }
# frame TYPE PAYLOAD_HEX: header (u8 type, u8 flags 0, u16 reserved 0, u32 length) + payload.
frame() { printf '%s000000%s%s' "$(hex_u8 "$1")" "$(hex_u32 $((${#2} / 2)))" "$2"; }
# hello VERSION: HELLO payload: magic "SESSCP\0\0", u16 version, u64 features 0,
# u8 dialog mode 0 (simplex), u32 max frame payload (4 MiB), str16 identity.
hello() {
  frame 1 "$(hex_str SESSCP)0000$(hex_u16 "$1")0000000000000000$(hex_u8 0)$(hex_u32 $((4 * MiB)))$(hex_str16 sesscp-itest)"
}
# to_escapes HEX -> \xHH\xHH... for printf %b
to_escapes() { printf '%s' "$1" | sed 's/\(..\)/\\x\1/g'; }

# ---- connection helpers ------------------------------------------------------
connect() {
  exec 3<>"/dev/tcp/127.0.0.1/$port" || fail "cannot connect to 127.0.0.1:$port"
}
disconnect() { exec 3<&- 3>&-; }
# send_hex HEX: write bytes; in a subshell so that EPIPE cannot kill the test.
send_hex() {
  local esc
  esc=$(to_escapes "$1")
  (printf '%b' "$esc" >&3) 2>/dev/null || log "(write failed: connection already closed)"
}
# read_first_byte: REPLY_HEX = first reply byte in hex ("" if the connection
# closed without one), REPLY_RC = 124 if nothing came within 10 s.
REPLY_HEX=""
REPLY_RC=0
read_first_byte() {
  REPLY_RC=0
  timeout 10 head -c 1 <&3 >"$T/reply" 2>/dev/null || REPLY_RC=$?
  REPLY_HEX=$(od -An -tx1 <"$T/reply" | tr -d ' \n')
}
# expect_closed SECS: the receiver must close the connection (EOF or reset).
expect_closed() {
  local rc=0 t0
  t0=$(now_ms)
  timeout "$1" cat <&3 >/dev/null 2>&1 || rc=$?
  [[ $rc -ne 124 ]] || fail "connection still open ${1}s later"
  ok "connection closed by the receiver after $(fmt_ms $(($(now_ms) - t0))) s (cat exit $rc)"
}
receiver_alive() {
  is_running "$rpid" || fail_with_logs "receiver died after: $1" "$T/recv.log"
  ok "receiver still alive"
}

check "control: a well-formed HELLO version 1 is answered with ACCEPT (0x02)"
connect
send_hex "$(hello 1)"
read_first_byte
log "reply: '${REPLY_HEX:-<closed>}' (read exit $REPLY_RC)"
[[ $REPLY_HEX == 02 ]] || fail_with_logs "HELLO v1 answered with '${REPLY_HEX:-<nothing>}', expected 02 (ACCEPT); frame sent: $(hello 1)" "$T/recv.log"
disconnect
ok "ACCEPT"
receiver_alive "HELLO v1 then disconnect"

check "a) 4 KiB of random bytes: the receiver closes the connection within 15 s"
# Pick a deterministic random block whose first byte is not HELLO (0x01), so
# that the receiver cannot be left waiting for a plausible HELLO payload.
for seed in 1 2 3 4 5 6 7 8; do
  gen_file "$T/garbage" 4096 "garbage-$seed"
  if [[ $(head -c 1 "$T/garbage" | od -An -tx1 | tr -d ' ') != 01 ]]; then break; fi
done
log "garbage starts with: $(head -c 8 "$T/garbage" | od -An -tx1)"
connect
cat "$T/garbage" >&3 2>/dev/null || log "(write failed: connection already closed)"
expect_closed 15
disconnect
receiver_alive "random bytes"

check "b) a DATA (0x12) header as the first frame gets ABORT (0x7F)"
connect
send_hex "$(frame 0x12 '')"
read_first_byte
log "reply: '${REPLY_HEX:-<closed>}' (read exit $REPLY_RC)"
[[ $REPLY_HEX == 7f ]] || fail_with_logs "DATA as first frame answered with '${REPLY_HEX:-<nothing>}', expected 7f (ABORT)" "$T/recv.log"
expect_closed 10
disconnect
receiver_alive "DATA as first frame"

check "c) a well-formed HELLO with version 99 gets REFUSE (0x03)"
connect
send_hex "$(hello 99)"
read_first_byte
log "reply: '${REPLY_HEX:-<closed>}' (read exit $REPLY_RC)"
[[ $REPLY_HEX == 03 ]] || fail_with_logs "HELLO v99 answered with '${REPLY_HEX:-<nothing>}', expected 03 (REFUSE)" "$T/recv.log"
disconnect
receiver_alive "HELLO v99"

check "d) a HELLO header announcing 0xFFFFFFFF payload bytes: ABORT or close, no hang"
connect
send_hex "01000000ffffffff"
read_first_byte
log "reply: '${REPLY_HEX:-<closed>}' (read exit $REPLY_RC)"
[[ $REPLY_RC -ne 124 ]] || fail_with_logs "no answer and no close within 10 s: the receiver waits for 4 GiB" "$T/recv.log"
[[ -z $REPLY_HEX || $REPLY_HEX == 7f ]] || fail "oversized frame answered with '$REPLY_HEX', expected 7f (ABORT) or a close"
if [[ -n $REPLY_HEX ]]; then ok "ABORT"; else ok "connection closed"; fi
disconnect
receiver_alive "oversized length"

check "e) an unknown frame type (0x55) as the first frame gets ABORT (0x7F)"
connect
send_hex "$(frame 0x55 00000000)"
read_first_byte
log "reply: '${REPLY_HEX:-<closed>}' (read exit $REPLY_RC)"
[[ $REPLY_HEX == 7f ]] || fail_with_logs "unknown type answered with '${REPLY_HEX:-<nothing>}', expected 7f (ABORT)" "$T/recv.log"
disconnect
receiver_alive "unknown type"

check "a normal transfer to the same receiver still succeeds"
gen_file "$T/ok.bin" $((3 * MiB + 5)) garbage-after
run_send "$T/send.log" "$T/ok.bin" "127.0.0.1:$port" --insecure
assert_rc 0 "$SEND_RC" "send after the garbage" "$T/send.log" "$T/recv.log"
assert_same "$T/ok.bin" "$dest/ok.bin"
assert_no_leftovers "$dest" ok.bin
receiver_alive "all of the above"
log "receiver log:"
sed 's/^/    /' "$T/recv.log"
log "PASS"
