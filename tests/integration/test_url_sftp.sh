#!/usr/bin/env bash
# Scenario: sftp:// through libcurl against OpenSSH's sshd, started here as
# root on a loopback port with a new host key and an authorized client key.
#   a) `sesscp get sftp://...`: full download; kill -9 midway and resume;
#      --connections 4; an unknown host key is refused (77);
#   b) `sesscp send FILE sftp://...`: full upload; kill -9 midway and resume
#      (appending after reading the last chunk back); a re-run is "already
#      complete"; the source changed between runs restarts from zero; a
#      tampered server copy is detected by the read-back and restarted; with
#      --retry, connections dropped by the server are resumed in-process.
# Every result is compared byte for byte.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
itest_init "$@"

start_sshd
keys=(--ssh-key "$SSH_KEY" --known-hosts "$KNOWN_HOSTS")
rate=$((4 * MiB))
mkdir -p "$T/src" "$T/out" "$T/remote"
size=$((24 * MiB))
gen_file "$T/src/data.bin" "$size" url-sftp

# ------------------------------------------------------------------ a
check "a) sftp download, full"
run_get "$T/get-full.log" "$SFTP_BASE/src/data.bin" -o "$T/out/full.bin" "${keys[@]}"
assert_rc 0 "$GET_RC" "sftp get" "$T/get-full.log"
assert_same "$T/src/data.bin" "$T/out/full.bin"
assert_no_leftovers "$T/out" full.bin

check "a) sftp download, kill -9 midway and resume"
start_get "$T/get-1.log" "$SFTP_BASE/src/data.bin" -o "$T/out/resume.bin" "${keys[@]}" --bwlimit 4M
wait_progress "$T/out/resume.bin.sesscp.part" $((size * 2 / 5)) "$GET_PID" "$rate" 0 120
kill9 "$GET_PID"
assert_interrupted_state "$T/out" resume.bin
chunks=$(journal_chunks "$T/out/resume.bin.sesscp.journal")
log "journal confirms $chunks chunks"
run_get "$T/get-2.log" "$SFTP_BASE/src/data.bin" -o "$T/out/resume.bin" "${keys[@]}"
assert_rc 0 "$GET_RC" "resumed sftp get" "$T/get-2.log"
last_summary "$T/get-2.log" recv resume.bin
[[ $S_OFFSET -eq $((chunks * MiB)) && $S_OFFSET -gt 0 ]] || fail "resumed at $S_OFFSET, journal confirms $chunks chunks"
[[ $S_N -eq $((size - S_OFFSET)) ]] || fail "second run received $S_N bytes, the missing part is $((size - S_OFFSET))"
ok "second run received only the missing $S_N bytes"
assert_same "$T/src/data.bin" "$T/out/resume.bin"

check "a) sftp download with 4 connections"
run_get "$T/get-c4.log" "$SFTP_BASE/src/data.bin" -o "$T/out/c4.bin" "${keys[@]}" --connections 4
assert_rc 0 "$GET_RC" "sftp get --connections 4" "$T/get-c4.log"
assert_same "$T/src/data.bin" "$T/out/c4.bin"

check "a) an unknown host key is refused"
ssh-keygen -q -t ed25519 -N '' -f "$T/other_host" || fail "ssh-keygen"
printf '[127.0.0.1]:%s %s\n' "$SSHD_PORT" "$(cut -d' ' -f1,2 "$T/other_host.pub")" >"$T/wrong_known_hosts"
run_get "$T/get-hostkey.log" "$SFTP_BASE/src/data.bin" -o "$T/out/hk.bin" --ssh-key "$SSH_KEY" --known-hosts "$T/wrong_known_hosts"
assert_rc 77 "$GET_RC" "wrong host key" "$T/get-hostkey.log"
[[ ! -e $T/out/hk.bin && ! -e $T/out/hk.bin.sesscp.part ]] || fail "data written despite a wrong host key"
: >"$T/empty_known_hosts"
run_get "$T/get-nohost.log" "$SFTP_BASE/src/data.bin" -o "$T/out/hk.bin" --ssh-key "$SSH_KEY" --known-hosts "$T/empty_known_hosts"
assert_rc 77 "$GET_RC" "host missing from known_hosts" "$T/get-nohost.log"

# ------------------------------------------------------------------ b
check "b) sftp upload, full, then a re-run"
run_send_url "$T/send-full.log" "$T/src/data.bin" "$SFTP_BASE/remote/full.bin" "${keys[@]}"
assert_rc 0 "$SEND_RC" "sftp send" "$T/send-full.log"
assert_same "$T/src/data.bin" "$T/remote/full.bin"
assert_no_leftovers "$T/remote" full.bin
run_send_url "$T/send-again.log" "$T/src/data.bin" "$SFTP_BASE/remote/full.bin" "${keys[@]}"
assert_rc 0 "$SEND_RC" "sftp send re-run" "$T/send-again.log"
assert_contains "$T/send-again.log" "already complete" "re-run"

# interrupt_upload NAME: a throttled upload of data.bin to remote/NAME, killed at ~40 %.
interrupt_upload() {
  local name=$1
  "$BIN" send "$T/src/$name" "$SFTP_BASE/remote/$name" "${keys[@]}" --bwlimit 4M 2>"$T/send-$name-1.log" &
  SEND_PID=$!
  register "$SEND_PID"
  wait_progress "$T/remote/$name.sesscp.part" $((size * 2 / 5)) "$SEND_PID" "$rate" 0 120
  kill9 "$SEND_PID"
  [[ ! -e $T/remote/$name ]] || fail "remote/$name exists after an interrupted upload"
  [[ -f $T/remote/$name.sesscp.part && -f $T/remote/$name.sesscp.journal ]] || fail "no part/journal on the server"
  ok "$name: killed at $(fsize "$T/remote/$name.sesscp.part") bytes on the server"
}

check "b) sftp upload, kill -9 midway and resume"
cp "$T/src/data.bin" "$T/src/up.bin"
interrupt_upload up.bin
had=$(fsize "$T/remote/up.bin.sesscp.part")
run_send_url "$T/send-up-2.log" "$T/src/up.bin" "$SFTP_BASE/remote/up.bin" "${keys[@]}" -v
assert_rc 0 "$SEND_RC" "resumed sftp send" "$T/send-up-2.log"
sed 's/^/    /' "$T/send-up-2.log"
assert_contains "$T/send-up-2.log" "up.bin: resumed at" "resumed upload"
assert_contains "$T/send-up-2.log" "(byte $had)" "resume point = the server's size"
assert_contains "$T/send-up-2.log" "read back bytes" "last chunk read back"
last_summary "$T/send-up-2.log" send up.bin
[[ $S_N -eq $((size - had)) ]] || fail "second run sent $S_N bytes, the missing part is $((size - had))"
ok "second run sent only the missing $S_N bytes"
assert_same "$T/src/up.bin" "$T/remote/up.bin"
assert_no_leftovers "$T/remote" up.bin

check "b) the source changed between runs: restart from zero"
cp "$T/src/data.bin" "$T/src/chg.bin"
interrupt_upload chg.bin
gen_file "$T/src/chg.bin" "$size" url-sftp-changed
touch -d '2022-02-02 02:02:02' "$T/src/chg.bin"
run_send_url "$T/send-chg-2.log" "$T/src/chg.bin" "$SFTP_BASE/remote/chg.bin" "${keys[@]}"
assert_rc 0 "$SEND_RC" "send after the source changed" "$T/send-chg-2.log"
assert_contains "$T/send-chg-2.log" "source changed since the partial upload" "restart message"
last_summary "$T/send-chg-2.log" send chg.bin
[[ $S_OFFSET -eq 0 ]] || fail "resumed at $S_OFFSET after the source changed"
assert_same "$T/src/chg.bin" "$T/remote/chg.bin"

check "b) a damaged server copy is caught by the read-back"
cp "$T/src/data.bin" "$T/src/dmg.bin"
interrupt_upload dmg.bin
part="$T/remote/dmg.bin.sesscp.part"
printf 'XXXXXXXX' | dd of="$part" bs=1 seek=$(($(fsize "$part") - 100)) conv=notrunc status=none
run_send_url "$T/send-dmg-2.log" "$T/src/dmg.bin" "$SFTP_BASE/remote/dmg.bin" "${keys[@]}"
assert_rc 0 "$SEND_RC" "send after the server copy was damaged" "$T/send-dmg-2.log"
assert_contains "$T/send-dmg-2.log" "differs from the source" "read-back message"
assert_same "$T/src/dmg.bin" "$T/remote/dmg.bin"
check "b) the server drops the connection: --retry resumes the upload in the same process"
cp "$T/src/data.bin" "$T/src/rt.bin"
"$BIN" send "$T/src/rt.bin" "$SFTP_BASE/remote/rt.bin" "${keys[@]}" --bwlimit 4M --retry 5 --timeout 5 \
  2>"$T/send-rt.log" &
SEND_PID=$!
register "$SEND_PID"
wait_progress "$T/remote/rt.bin.sesscp.part" $((size * 2 / 5)) "$SEND_PID" "$rate" 0 120
kill_sshd_sessions
wait_exit "$SEND_PID" 120 || fail_with_logs "sesscp send --retry did not finish" "$T/send-rt.log"
assert_rc 0 "$WAIT_RC" "upload with --retry after the connection dropped" "$T/send-rt.log"
sed 's/^/    /' "$T/send-rt.log"
assert_contains "$T/send-rt.log" "reconnecting (attempt 1/5)" "retry message"
assert_contains "$T/send-rt.log" "rt.bin: resumed at" "resumed in the same process"
assert_same "$T/src/rt.bin" "$T/remote/rt.bin"
log "PASS"
