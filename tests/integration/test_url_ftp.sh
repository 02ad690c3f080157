#!/usr/bin/env bash
# Scenario: ftp:// through libcurl against a local FTP server (pyftpdlib, from
# python3-pyftpdlib; tests/integration/ftpd.py), on 127.0.0.1 with passive
# data ports there too, one user and a password given in SESSCP_URL_PASSWORD.
# The server paces each data connection at 8 MiB/s; the runs killed midway
# also use --bwlimit 4M (enforced by sesscp per body callback).
#   a) full download, byte-identical, no leftovers;
#   b) kill -9 midway and resume: the second run fetches only the missing
#      bytes (summary line, and the server's log: one RETR after REST at the
#      journaled offset, sending exactly the rest of the file);
#   c) the file changed on the server between runs (content and mtime):
#      restart from zero with the message, byte-identical result;
#   d) --connections 4: byte-identical, several RETRs at different offsets;
#      the file replaced on the server during a --connections 2 run (same
#      size and a new mtime, or shorter): restart from zero, never a splice;
#   e) --sha256 with a wrong digest: exit 65, nothing under the final name;
#      the right digest then publishes without fetching again;
#   f) a wrong password: exit 77, no data written, no password in the output;
#   g) a server that refuses REST: the resume and --connections 4 fall back
#      to fetching from byte 0 on one connection, byte-identical.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
itest_init "$@"

server_rate=$((8 * MiB))
start_ftpd "$server_rate"
export SESSCP_URL_PASSWORD="$FTP_PASSWORD"
mkdir -p "$T/out"
size=$((16 * MiB))
gen_file "$FTP_ROOT/data.bin" "$size" url-ftp
rate=$((4 * MiB)) # --bwlimit of the runs that are killed midway

# ftp_retr_offsets MARK: the restart offset of each RETR after MARK, one a line.
ftp_retr_offsets() { ftpd_since "$1" | sed -nE 's/^RETR .* rest=([0-9]+)$/\1/p'; }

# ftp_sent_bytes MARK: the bytes the server sent on data connections after MARK.
ftp_sent_bytes() { ftpd_since "$1" | awk '$1 == "SENT" { sub("bytes=", "", $4); s += $4 } END { printf "%.0f\n", s }'; }

# interrupt_get NAME: a throttled download of ftp NAME into out/NAME, killed at ~40 %.
interrupt_get() {
  local name=$1
  start_get "$T/get-$name-1.log" "$FTP_BASE/$name" -o "$T/out/$name" --bwlimit 4M
  wait_progress "$T/out/$name.sesscp.part" $((size * 2 / 5)) "$GET_PID" "$rate" 0 120
  kill9 "$GET_PID"
  unregister "$GET_PID"
  assert_interrupted_state "$T/out" "$name"
  # The server logs the killed transfer's end when it next writes to it: wait
  # for that line, so that it is never counted as part of the next run.
  wait_for_line "$FTPD_LOG" "^SENT /$name completed=0 " 30 ||
    fail_with_logs "the server did not see the killed transfer of $name end within 30 s" "$FTPD_LOG"
}

# ------------------------------------------------------------------ a
check "a) ftp download, full"
mark=$(ftpd_mark)
run_get "$T/get-full.log" "$FTP_BASE/data.bin" -o "$T/out/full.bin"
assert_rc 0 "$GET_RC" "ftp get" "$T/get-full.log" "$FTPD_LOG"
assert_same "$FTP_ROOT/data.bin" "$T/out/full.bin"
assert_no_leftovers "$T/out" full.bin
last_summary "$T/get-full.log" recv full.bin
[[ $S_STATE == complete && $S_OFFSET -eq 0 && $S_N -eq $size ]] ||
  fail "summary: $S_STATE, resumed at $S_OFFSET, $S_N bytes; expected complete, 0, $size"
[[ $(stat -c %Y "$T/out/full.bin") -eq $(stat -c %Y "$FTP_ROOT/data.bin") ]] ||
  fail "full.bin does not carry the server's mtime (MDTM)"
ok "summary: resumed at 0, $S_N bytes; mtime from MDTM"
ftpd_since "$mark" | grep -x "MDTM /data.bin" >/dev/null || fail_with_logs "no MDTM in the probe" "$FTPD_LOG"
ftpd_since "$mark" | grep -x "SIZE /data.bin" >/dev/null || fail_with_logs "no SIZE in the probe" "$FTPD_LOG"

check "a) a re-run is already complete and fetches nothing"
mark=$(ftpd_mark)
run_get "$T/get-again.log" "$FTP_BASE/data.bin" -o "$T/out/full.bin"
assert_rc 0 "$GET_RC" "ftp get re-run" "$T/get-again.log"
assert_contains "$T/get-again.log" "already complete" "re-run"
[[ -z $(ftp_retr_offsets "$mark") ]] || fail_with_logs "a complete download was fetched again" "$FTPD_LOG"
ok "no RETR for a complete file"

# ------------------------------------------------------------------ b
check "b) ftp download, kill -9 midway and resume"
cp -p "$FTP_ROOT/data.bin" "$FTP_ROOT/resume.bin"
interrupt_get resume.bin
chunks=$(journal_chunks "$T/out/resume.bin.sesscp.journal")
log "journal confirms $chunks chunks"
mark=$(ftpd_mark)
run_get "$T/get-resume-2.log" "$FTP_BASE/resume.bin" -o "$T/out/resume.bin"
assert_rc 0 "$GET_RC" "resumed ftp get" "$T/get-resume-2.log" "$FTPD_LOG"
last_summary "$T/get-resume-2.log" recv resume.bin
[[ $S_OFFSET -eq $((chunks * MiB)) && $S_OFFSET -gt 0 && $S_OFFSET -lt $size ]] ||
  fail "resumed at $S_OFFSET, journal confirms $chunks chunks"
[[ $S_N -eq $((size - S_OFFSET)) ]] || fail "second run received $S_N bytes, the missing part is $((size - S_OFFSET))"
ok "second run resumed at $S_OFFSET and received only the missing $S_N bytes"
offsets=$(ftp_retr_offsets "$mark" | tr '\n' ' ')
[[ $offsets == "$S_OFFSET " ]] || fail_with_logs "server saw RETR offsets '$offsets', expected one at $S_OFFSET" "$FTPD_LOG"
ftpd_since "$mark" | grep -x "REST $S_OFFSET" >/dev/null || fail_with_logs "no 'REST $S_OFFSET' at the server" "$FTPD_LOG"
sent=$(ftp_sent_bytes "$mark")
[[ $sent -eq $((size - S_OFFSET)) ]] || fail_with_logs "the server sent $sent bytes, the missing part is $((size - S_OFFSET))" "$FTPD_LOG"
ok "server: REST $S_OFFSET, one RETR, $sent bytes sent"
assert_same "$FTP_ROOT/data.bin" "$T/out/resume.bin"
assert_no_leftovers "$T/out" resume.bin

# ------------------------------------------------------------------ c
check "c) the file changed on the server between runs: restart from zero"
cp -p "$FTP_ROOT/data.bin" "$FTP_ROOT/chg.bin"
interrupt_get chg.bin
# New content under the same name (a new inode, as an upload would make),
# same size, another mtime: only MDTM tells the change.
gen_file "$FTP_ROOT/chg.new" "$size" url-ftp-changed
touch -d '2022-02-02 02:02:02' "$FTP_ROOT/chg.new"
mv -f "$FTP_ROOT/chg.new" "$FTP_ROOT/chg.bin"
mark=$(ftpd_mark)
run_get "$T/get-chg-2.log" "$FTP_BASE/chg.bin" -o "$T/out/chg.bin"
assert_rc 0 "$GET_RC" "get after the remote file changed" "$T/get-chg-2.log" "$FTPD_LOG"
sed 's/^/    /' "$T/get-chg-2.log"
assert_contains "$T/get-chg-2.log" "remote file changed since the partial download (mtime differs" "restart message"
assert_contains "$T/get-chg-2.log" "restarting from zero" "restart message"
last_summary "$T/get-chg-2.log" recv chg.bin
[[ $S_OFFSET -eq 0 && $S_N -eq $size ]] || fail "resumed at $S_OFFSET with $S_N bytes after the remote file changed"
offsets=$(ftp_retr_offsets "$mark" | tr '\n' ' ')
[[ $offsets == "0 " ]] || fail_with_logs "server saw RETR offsets '$offsets', expected one at 0" "$FTPD_LOG"
ok "fetched again from byte 0"
assert_same "$FTP_ROOT/chg.bin" "$T/out/chg.bin"
assert_no_leftovers "$T/out" chg.bin

# ------------------------------------------------------------------ d
check "d) ftp download with 4 connections"
mark=$(ftpd_mark)
run_get "$T/get-c4.log" "$FTP_BASE/data.bin" -o "$T/out/c4.bin" --connections 4 -v
assert_rc 0 "$GET_RC" "ftp get --connections 4" "$T/get-c4.log" "$FTPD_LOG"
assert_same "$FTP_ROOT/data.bin" "$T/out/c4.bin"
assert_no_leftovers "$T/out" c4.bin
mapfile -t offs < <(ftp_retr_offsets "$mark" | sort -n)
distinct=$(printf '%s\n' "${offs[@]}" | sort -u | wc -l)
((${#offs[@]} >= 2 && distinct == ${#offs[@]})) ||
  fail_with_logs "expected several RETRs at distinct offsets, got: ${offs[*]}" "$FTPD_LOG"
for o in "${offs[@]}"; do
  ((o % MiB == 0 && o < size)) || fail_with_logs "RETR at $o is not a chunk boundary inside the file" "$FTPD_LOG"
done
ok "${#offs[@]} RETRs at offsets ${offs[*]}"

# replace_midway NAME NEWSIZE: a --connections 2 download of NAME (12 MiB:
# three units of 4 MiB, the third asked for once one of the first two ends,
# ~2 s in at --bwlimit 2M) during which NAME is replaced on the server by
# NEWSIZE other bytes with another mtime, as soon as the server has opened
# the file for the first two units. The third unit reads the new file: the
# run must notice (SIZE below its REST offset, or the stat after the last
# byte) and start again from zero, where the old units spliced with the new
# one would pass every check but --sha256.
replace_midway() {
  local name=$1 newsize=$2 m
  gen_file "$FTP_ROOT/$name" $((12 * MiB)) "url-ftp-$name-old"
  m=$(ftpd_mark)
  start_get "$T/get-$name.log" "$FTP_BASE/$name" -o "$T/out/$name" --connections 2 --bwlimit 2M -v
  wait_for_line "$FTPD_LOG" "^RETR /$name rest=$((4 * MiB))\$" 60 ||
    fail_with_logs "the second unit of $name was not asked for within 60 s" "$FTPD_LOG" "$T/get-$name.log"
  ftp_retr_offsets "$m" | grep -x 0 >/dev/null || fail_with_logs "the first unit of $name was not asked for" "$FTPD_LOG"
  is_running "$GET_PID" || fail_with_logs "sesscp get of $name ended before the file was replaced" "$T/get-$name.log"
  m=$(ftpd_mark)
  gen_file "$FTP_ROOT/$name.new" "$newsize" "url-ftp-$name-new"
  touch -d '2023-03-03 03:03:03' "$FTP_ROOT/$name.new"
  mv -f "$FTP_ROOT/$name.new" "$FTP_ROOT/$name"
  log "$name replaced on the server while its first two units were being fetched"
  wait_exit "$GET_PID" 120 || fail_with_logs "sesscp get did not finish" "$T/get-$name.log"
  unregister "$GET_PID"
  grep -E 'changed|restarting|resumed|recv |error' "$T/get-$name.log" | sed 's/^/    /'
  assert_rc 0 "$WAIT_RC" "get of $name, replaced midway" "$T/get-$name.log" "$FTPD_LOG"
  assert_same "$FTP_ROOT/$name" "$T/out/$name"
  assert_contains "$T/get-$name.log" "remote file changed during the download" "change noticed"
  assert_contains "$T/get-$name.log" "restarting from zero" "restart"
  ftp_retr_offsets "$m" | grep -x 0 >/dev/null || fail_with_logs "no RETR from 0 after the replacement" "$FTPD_LOG"
  assert_no_leftovers "$T/out" "$name"
}

check "d) the file replaced (same size, new mtime) during a --connections 2 run: never spliced"
replace_midway mid-same.bin $((12 * MiB))
assert_contains "$T/get-mid-same.bin.log" "(MDTM " "the change seen in MDTM after the last byte"

check "d) the file replaced by a shorter one during a --connections 2 run: never spliced"
replace_midway mid-short.bin $((6 * MiB + 123))
# Seen by libcurl when the third unit's SIZE is below its REST offset, or
# (had that unit been asked for before the replacement) after the last byte.
grep -E 'changed during the download \((the server says the range is past the end of the file|size [0-9]+ became [0-9]+)\)' \
  "$T/get-mid-short.bin.log" >/dev/null || fail_with_logs "the change was not reported as a shorter file" "$T/get-mid-short.bin.log"
ok "the change seen as a shorter file"

# ------------------------------------------------------------------ e
check "e) --sha256 with a wrong digest: exit 65, nothing published"
good=$(sha "$FTP_ROOT/data.bin")
bad=$(printf '%s' "$good" | tr '0-9a-f' '1-9a-f0')
run_get "$T/get-badsha.log" "$FTP_BASE/data.bin" -o "$T/out/dig.bin" --sha256 "$bad"
assert_rc 65 "$GET_RC" "wrong --sha256" "$T/get-badsha.log"
[[ ! -e $T/out/dig.bin ]] || fail "dig.bin exists despite a digest mismatch"
assert_contains "$T/get-badsha.log" "expected $bad" "mismatch message"
[[ -f $T/out/dig.bin.sesscp.part && -f $T/out/dig.bin.sesscp.journal ]] || fail "the part and its journal were not kept"
ok "dig.bin absent; part and journal kept"
mark=$(ftpd_mark)
run_get "$T/get-goodsha.log" "$FTP_BASE/data.bin" -o "$T/out/dig.bin" --sha256 "$good"
assert_rc 0 "$GET_RC" "right --sha256" "$T/get-goodsha.log"
assert_contains "$T/get-goodsha.log" "SHA-256 verified: $good" "verified"
[[ -z $(ftp_retr_offsets "$mark") ]] || fail_with_logs "the re-run with the right digest fetched data again" "$FTPD_LOG"
assert_same "$FTP_ROOT/data.bin" "$T/out/dig.bin"
assert_no_leftovers "$T/out" dig.bin

# ------------------------------------------------------------------ f
check "f) a wrong password: exit 77, nothing written, no password in the output"
wrong="wrong-Pw-${RANDOM}x$$"
mark=$(ftpd_mark)
rc=0
SESSCP_URL_PASSWORD="$wrong" timeout -k 5 60 "$BIN" get "$FTP_BASE/data.bin" -o "$T/out/pw.bin" -v \
  >"$T/get-pw.log" 2>&1 || rc=$?
assert_rc 77 "$rc" "wrong password (SESSCP_URL_PASSWORD)" "$T/get-pw.log"
assert_contains "$T/get-pw.log" "authentication failed" "error message"
# The same with the password inside the URL: a warning, and the URL shown without it.
inline_url="ftp://$FTP_USER:$wrong@127.0.0.1:$FTPD_PORT/data.bin"
rc=0
env -u SESSCP_URL_PASSWORD timeout -k 5 60 "$BIN" get "$inline_url" -o "$T/out/pw.bin" -v \
  >"$T/get-pw-inline.log" 2>&1 || rc=$?
assert_rc 77 "$rc" "wrong password in the URL" "$T/get-pw-inline.log"
assert_contains "$T/get-pw-inline.log" "the URL contains a password" "inline password warning"
for f in "$T/get-pw.log" "$T/get-pw-inline.log"; do
  sed 's/^/    /' "$f"
  if grep -qF -- "$wrong" "$f" || grep -qF -- "$FTP_PASSWORD" "$f"; then
    fail "a password appears in the output ($f)"
  fi
done
ok "no password in sesscp's output"
shopt -s nullglob
left=("$T"/out/pw.bin*)
shopt -u nullglob
((${#left[@]} == 0)) || fail "files left after a refused login: ${left[*]}"
ok "nothing written for a refused login"
(($(ftpd_since "$mark" | grep -c '^LOGIN-FAILED ') >= 2)) || fail_with_logs "the server saw no failed logins" "$FTPD_LOG"
[[ -z $(ftp_retr_offsets "$mark") ]] || fail_with_logs "a RETR after a refused login" "$FTPD_LOG"
ok "server: failed logins, no RETR"

# ------------------------------------------------------------------ g
check "g) a server that refuses REST: resume from byte 0, skipping what is here"
cp -p "$FTP_ROOT/data.bin" "$FTP_ROOT/norest.bin"
interrupt_get norest.bin
kill9 "$FTPD_PID"
unregister "$FTPD_PID"
start_ftpd "$server_rate" --no-rest
mark=$(ftpd_mark)
run_get "$T/get-norest-2.log" "$FTP_BASE/norest.bin" -o "$T/out/norest.bin" -v
assert_rc 0 "$GET_RC" "resume from a server without REST" "$T/get-norest-2.log" "$FTPD_LOG"
assert_contains "$T/get-norest-2.log" "the FTP server refuses REST" "fallback message"
last_summary "$T/get-norest-2.log" recv norest.bin
[[ $S_OFFSET -gt 0 && $S_N -eq $size ]] || fail "resumed at $S_OFFSET with $S_N bytes (expected > 0, and the whole file fetched)"
offsets=$(ftp_retr_offsets "$mark" | tr '\n' ' ')
[[ $offsets == "0 " ]] || fail_with_logs "server saw RETR offsets '$offsets', expected one at 0" "$FTPD_LOG"
ok "resumed at $S_OFFSET: the whole file fetched once, the first $S_OFFSET bytes skipped"
assert_same "$FTP_ROOT/data.bin" "$T/out/norest.bin"
assert_no_leftovers "$T/out" norest.bin

check "g) --connections 4 against a server without REST"
run_get "$T/get-norest-c4.log" "$FTP_BASE/data.bin" -o "$T/out/norest-c4.bin" --connections 4
assert_rc 0 "$GET_RC" "--connections 4 without REST" "$T/get-norest-c4.log" "$FTPD_LOG"
assert_contains "$T/get-norest-c4.log" "the FTP server refuses REST" "fallback message"
assert_same "$FTP_ROOT/data.bin" "$T/out/norest-c4.bin"
assert_no_leftovers "$T/out" norest-c4.bin
log "PASS"
