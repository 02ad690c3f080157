#!/usr/bin/env bash
# Scenario: `sesscp get` against a local nginx over HTTP.
#   a) full downloads (24 MiB, 0 bytes, odd size): identical, nothing left over,
#      nginx sent exactly the file once; a re-run is "already complete";
#   b) kill -9 midway, re-run: resumes at the journaled point and nginx's
#      access log shows that only the missing range was fetched;
#   c) the file changes on the server between runs, or during a run: restart
#      from zero with a message, new content delivered;
#   d) a location that ignores Range (max_ranges 0): resume and --connections
#      both deliver the right bytes;
#   e) --sha256 / --xxh128: right digest publishes, wrong one exits 65 and
#      leaves nothing under the final name;
#   f) exit codes: 404 -> 69, connection refused -> 69, bad --sha256 -> 64,
#      missing output directory -> 73, SIGINT -> 75 with the prefix journaled;
#   g) basic auth with the password from SESSCP_URL_PASSWORD or ~/.netrc;
#   h) nginx killed midway: exit 75; with --retry the same process resumes
#      once nginx is back;
#   i) a stalled connection (faultproxy): --timeout ends it with 75.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
itest_init "$@"

rate=$((8 * MiB))
start_nginx 8m
base="http://127.0.0.1:$NGINX_PORT"
out="$T/out"
mkdir -p "$out"

# ------------------------------------------------------------------ a
check "a) full downloads are byte-identical and fetched once"
gen_file "$WWW/big.bin" $((24 * MiB)) url-big
: >"$WWW/empty.bin"
gen_file "$WWW/odd.bin" $((MiB + 12345)) url-odd
for name in big.bin empty.bin odd.bin; do
  mark=$(log_mark)
  run_get "$T/get-$name.log" "$base/f/$name" -o "$out/$name"
  assert_rc 0 "$GET_RC" "get $name" "$T/get-$name.log"
  assert_same "$WWW/$name" "$out/$name"
  assert_no_leftovers "$out" "$name"
  sent=$(body_bytes_since "$mark")
  [[ $sent -eq $(fsize "$WWW/$name") ]] || fail "$name: nginx sent $sent body bytes, file has $(fsize "$WWW/$name")"
  ok "$name: nginx sent $sent body bytes (the file once)"
  last_summary "$T/get-$name.log" recv "$name"
  [[ $S_STATE == complete ]] || fail "$name: state $S_STATE"
done
[[ $(stat -c %Y "$out/big.bin") -eq $(stat -c %Y "$WWW/big.bin") ]] || fail "mtime not taken from Last-Modified"
ok "big.bin has the server's mtime"

mark=$(log_mark)
run_get "$T/get-again.log" "$base/f/big.bin" -o "$out/big.bin"
assert_rc 0 "$GET_RC" "re-run of a finished download" "$T/get-again.log"
assert_contains "$T/get-again.log" "already complete" "re-run"
[[ $(body_bytes_since "$mark") -eq 0 ]] || fail "re-run fetched data"
ok "re-run fetched no data"

# ------------------------------------------------------------------ b
# interrupt URL NAME FRACTION: start a throttled get and kill -9 it once
# the part file holds FRACTION percent of the file.
interrupt() {
  local url=$1 name=$2 pct=$3 size
  shift 3
  size=$(fsize "$WWW/$name")
  start_get "$T/get-$name-1.log" "$url" -o "$out/$name" "$@"
  wait_progress "$out/$name.sesscp.part" $((size * pct / 100)) "$GET_PID" $((rate * 8)) 0 120
  kill9 "$GET_PID"
  log "$name: killed sesscp get at ~$PROGRESS bytes in the part"
  assert_interrupted_state "$out" "$name"
}

check "b) kill -9 midway, then resume fetching only the missing range"
gen_file "$WWW/resume.bin" $((32 * MiB)) url-resume
size=$(fsize "$WWW/resume.bin")
interrupt "$base/slow/resume.bin" resume.bin 50
chunks=$(journal_chunks "$out/resume.bin.sesscp.journal")
log "journal confirms $chunks chunks"
((chunks > 0)) || fail "the journal confirms no chunk after half the file arrived"
mark=$(log_mark)
run_get "$T/get-resume-2.log" "$base/slow/resume.bin" -o "$out/resume.bin" --json >"$T/get-resume-2.json"
assert_rc 0 "$GET_RC" "resumed get" "$T/get-resume-2.log"
assert_contains "$T/get-resume-2.log" "resume.bin: resumed at" "resumed get"
last_summary "$T/get-resume-2.log" recv resume.bin
[[ $S_OFFSET -eq $((chunks * MiB)) ]] || fail "resumed at $S_OFFSET, journal said $((chunks * MiB))"
# --json as for send/recv (docs/JSON.md): the documented events, in order.
assert_in_order "$T/get-resume-2.json" session_start file_offered resume_point checkpoint file_done session_end
[[ $(json_field "$T/get-resume-2.json" session_start .side) == get ]] || fail "--json: session_start.side is not get"
[[ $(json_field "$T/get-resume-2.json" resume_point .offset) -eq $S_OFFSET ]] ||
  fail_with_logs "--json: resume_point.offset differs from the summary's $S_OFFSET" "$T/get-resume-2.json"
[[ $(json_field "$T/get-resume-2.json" file_done .state) == complete &&
  $(json_field "$T/get-resume-2.json" file_done .bytes) -eq $((size - S_OFFSET)) &&
  $(json_field "$T/get-resume-2.json" session_end .exit_code) -eq 0 ]] ||
  fail_with_logs "--json: file_done/session_end do not say complete, $((size - S_OFFSET)) bytes, exit 0" "$T/get-resume-2.json"
ok "--json: session_start(get) file_offered resume_point($S_OFFSET) checkpoint file_done session_end(0)"
starts=$(range_starts_since "$mark" | sort -u | tr '\n' ' ')
log "second run: range starts $starts"
for s in $starts; do
  [[ $s != - && $s -ge $S_OFFSET ]] || fail "second run asked for bytes from $s, before the resume point $S_OFFSET"
done
sent=$(body_bytes_since "$mark")
[[ $sent -eq $((size - S_OFFSET)) ]] || fail "second run: nginx sent $sent bytes, missing part is $((size - S_OFFSET))"
ok "second run: nginx sent exactly the missing $sent bytes"
assert_same "$WWW/resume.bin" "$out/resume.bin"
assert_no_leftovers "$out" resume.bin

# ------------------------------------------------------------------ c
check "c) the file changes on the server between runs: restart from zero"
gen_file "$WWW/changed.bin" $((32 * MiB)) url-changed-1
interrupt "$base/slow/changed.bin" changed.bin 40
gen_file "$WWW/changed.new" $((32 * MiB)) url-changed-2
mv "$WWW/changed.new" "$WWW/changed.bin"
touch -d '2021-03-04 05:06:07' "$WWW/changed.bin"
mark=$(log_mark)
run_get "$T/get-changed-2.log" "$base/f/changed.bin" -o "$out/changed.bin"
assert_rc 0 "$GET_RC" "get after the remote changed" "$T/get-changed-2.log"
sed 's/^/    /' "$T/get-changed-2.log"
assert_contains "$T/get-changed-2.log" "remote file changed since the partial download" "restart message"
last_summary "$T/get-changed-2.log" recv changed.bin
[[ $S_OFFSET -eq 0 ]] || fail "resumed at $S_OFFSET after the remote changed, expected 0"
[[ $(range_starts_since "$mark" | head -n 1) == 0 ]] || fail "the new download did not start at byte 0"
assert_same "$WWW/changed.bin" "$out/changed.bin"

check "c) the file changes on the server during a run: detected, restarted from zero in the same run"
gen_file "$WWW/midway.bin" $((32 * MiB)) url-midway-1
start_get "$T/get-midway.log" "$base/slow/midway.bin" -o "$out/midway.bin" --connections 2
wait_progress "$out/midway.bin.sesscp.part" $((8 * MiB)) "$GET_PID" $((rate * 16)) 0 120
gen_file "$WWW/midway.new" $((32 * MiB)) url-midway-2
touch -d '2020-05-06 07:08:09' "$WWW/midway.new"
mv "$WWW/midway.new" "$WWW/midway.bin"
wait_exit "$GET_PID" 120 || fail_with_logs "sesscp get did not finish after the change" "$T/get-midway.log"
assert_rc 0 "$WAIT_RC" "get while the remote changed" "$T/get-midway.log"
sed 's/^/    /' "$T/get-midway.log"
assert_contains "$T/get-midway.log" "remote file changed during the download" "mid-run change message"
assert_same "$WWW/midway.bin" "$out/midway.bin"

# ------------------------------------------------------------------ d
check "d) a server that ignores Range: resume and --connections stay correct"
gen_file "$WWW/norange.bin" $((24 * MiB)) url-norange
size=$(fsize "$WWW/norange.bin")
interrupt "$base/slownorange/norange.bin" norange.bin 40
mark=$(log_mark)
run_get "$T/get-norange-2.log" "$base/norange/norange.bin" -o "$out/norange.bin"
assert_rc 0 "$GET_RC" "resume from a server that ignores Range" "$T/get-norange-2.log"
sed 's/^/    /' "$T/get-norange-2.log"
assert_contains "$T/get-norange-2.log" "ignores Range" "range-ignore message"
log_since "$mark" | grep -q '^GET .* status=200 ' || fail "nginx did not answer 200 to the ranged GET (test set-up)"
assert_same "$WWW/norange.bin" "$out/norange.bin"
run_get "$T/get-norange-3.log" "$base/norange/norange.bin" -o "$out/norange-c4.bin" --connections 4
assert_rc 0 "$GET_RC" "--connections 4 from a server that ignores Range" "$T/get-norange-3.log"
assert_same "$WWW/norange.bin" "$out/norange-c4.bin"

# ------------------------------------------------------------------ e
check "e) whole-file digests"
good=$(sha "$WWW/odd.bin")
run_get "$T/get-sha-ok.log" "$base/f/odd.bin" -o "$out/sha-ok.bin" --sha256 "$good"
assert_rc 0 "$GET_RC" "right --sha256" "$T/get-sha-ok.log"
assert_contains "$T/get-sha-ok.log" "SHA-256 verified" "right --sha256"
bad=$(printf '%s' "$good" | tr '0-9a-f' '1-9a-f0')
run_get "$T/get-sha-bad.log" "$base/f/odd.bin" -o "$out/sha-bad.bin" --sha256 "$bad"
assert_rc 65 "$GET_RC" "wrong --sha256" "$T/get-sha-bad.log"
[[ ! -e $out/sha-bad.bin ]] || fail "a file exists under the final name after a digest mismatch"
ok "nothing under the final name after the mismatch"
if command -v xxhsum >/dev/null 2>&1; then
  x=$(xxhsum -H2 "$WWW/odd.bin" | awk '{print $1}')
  x=${x#XXH128_}
  run_get "$T/get-xxh.log" "$base/f/odd.bin" -o "$out/xxh.bin" --xxh128 "$x"
  assert_rc 0 "$GET_RC" "right --xxh128 ($x)" "$T/get-xxh.log"
  run_get "$T/get-xxh-bad.log" "$base/f/odd.bin" -o "$out/xxh-bad.bin" --xxh128 "$(printf '%s' "$x" | tr '0-9a-f' '1-9a-f0')"
  assert_rc 65 "$GET_RC" "wrong --xxh128" "$T/get-xxh-bad.log"
else
  log "xxhsum not installed: --xxh128 checked for a mismatch only"
  run_get "$T/get-xxh-bad.log" "$base/f/odd.bin" -o "$out/xxh-bad.bin" --xxh128 0123456789abcdef0123456789abcdef
  assert_rc 65 "$GET_RC" "wrong --xxh128" "$T/get-xxh-bad.log"
fi

# ------------------------------------------------------------------ f
check "f) exit codes"
run_get "$T/get-404.log" "$base/f/missing.bin" -o "$out/missing.bin"
assert_rc 69 "$GET_RC" "404" "$T/get-404.log"
port=$(free_port)
run_get "$T/get-refused.log" "http://127.0.0.1:$port/x.bin" -o "$out/x.bin"
assert_rc 69 "$GET_RC" "connection refused" "$T/get-refused.log"
run_get "$T/get-badhex.log" "$base/f/odd.bin" -o "$out/y.bin" --sha256 xyz
assert_rc 64 "$GET_RC" "bad --sha256" "$T/get-badhex.log"
run_get "$T/get-nodir.log" "$base/f/odd.bin" -o "$T/no/such/dir/odd.bin"
assert_rc 73 "$GET_RC" "output directory missing" "$T/get-nodir.log"
start_get "$T/get-int.log" "$base/slow/resume.bin" -o "$out/int.bin"
wait_progress "$out/int.bin.sesscp.part" $((4 * MiB)) "$GET_PID" $((rate * 8)) 0 60
kill -INT "$GET_PID"
wait_exit "$GET_PID" 30 || fail "sesscp get ignored SIGINT"
assert_rc 75 "$WAIT_RC" "SIGINT" "$T/get-int.log"
(($(journal_chunks "$out/int.bin.sesscp.journal") > 0)) || fail "nothing journaled before exiting on SIGINT"
ok "SIGINT: state saved ($(journal_chunks "$out/int.bin.sesscp.journal") chunks journaled)"
run_get "$T/get-pw.log" "http://user:hunter2@127.0.0.1:$NGINX_PORT/f/missing.bin" -o "$out/pw.bin"
if grep -q hunter2 "$T/get-pw.log"; then fail_with_logs "the password appears in the output" "$T/get-pw.log"; fi
assert_contains "$T/get-pw.log" "process listings" "password warning"

# ------------------------------------------------------------------ g
check "g) credentials come from SESSCP_URL_PASSWORD or ~/.netrc, never from argv"
run_get "$T/get-noauth.log" "http://alice@127.0.0.1:$NGINX_PORT/auth/odd.bin" -o "$out/auth0.bin"
assert_rc 77 "$GET_RC" "no password" "$T/get-noauth.log"
SESSCP_URL_PASSWORD=$NGINX_PASSWORD run_get "$T/get-envpw.log" "http://alice@127.0.0.1:$NGINX_PORT/auth/odd.bin" -o "$out/auth1.bin"
assert_rc 0 "$GET_RC" "password from SESSCP_URL_PASSWORD" "$T/get-envpw.log"
assert_same "$WWW/odd.bin" "$out/auth1.bin"
mkdir -p "$T/home"
printf 'machine 127.0.0.1 login alice password %s\n' "$NGINX_PASSWORD" >"$T/home/.netrc"
chmod 600 "$T/home/.netrc"
HOME="$T/home" run_get "$T/get-netrc.log" "http://127.0.0.1:$NGINX_PORT/auth/odd.bin" -o "$out/auth2.bin"
assert_rc 0 "$GET_RC" "password from ~/.netrc" "$T/get-netrc.log"
assert_same "$WWW/odd.bin" "$out/auth2.bin"
if grep -q -- "$NGINX_PASSWORD" "$T"/get-*.log; then fail "a password appears in sesscp's output"; fi
ok "no password in any output"

# ------------------------------------------------------------------ h
check "h) the server dies midway: exit 75 without --retry, resumed in-process with --retry"
gen_file "$WWW/retry.bin" $((24 * MiB)) url-retry
size=$(fsize "$WWW/retry.bin")
start_get "$T/get-retry-0.log" "$base/slow/retry.bin" -o "$out/retry0.bin" --timeout 2
wait_progress "$out/retry0.bin.sesscp.part" $((size / 4)) "$GET_PID" $((rate * 8)) 0 60
stop_nginx
wait_exit "$GET_PID" 30 || fail "sesscp get did not exit after the server died"
assert_rc 75 "$WAIT_RC" "server died, no --retry" "$T/get-retry-0.log"
restart_nginx
start_get "$T/get-retry.log" "$base/slow/retry.bin" -o "$out/retry.bin" --timeout 2 --retry 20
wait_progress "$out/retry.bin.sesscp.part" $((size / 4)) "$GET_PID" $((rate * 8)) 0 60
stop_nginx
sleep 1.5
restart_nginx
wait_exit "$GET_PID" 120 || fail_with_logs "sesscp get --retry did not finish" "$T/get-retry.log"
assert_rc 0 "$WAIT_RC" "server restarted, --retry 20" "$T/get-retry.log"
sed 's/^/    /' "$T/get-retry.log"
assert_contains "$T/get-retry.log" "reconnecting (attempt 1/20)" "retry message"
assert_contains "$T/get-retry.log" "retry.bin: resumed at" "resumed in the same process"
assert_contains "$T/get-retry.log" "reconnect" "summary counts the reconnections"
assert_same "$WWW/retry.bin" "$out/retry.bin"

# ------------------------------------------------------------------ i
check "i) a server that stalls: --timeout ends the attempt with 75, state saved"
start_proxy "$T/proxy.log" "$NGINX_PORT" --all-connections --stall-after $((4 * MiB)) --stall-dir s2c
t0=$(now_ms)
run_get "$T/get-stall.log" "http://127.0.0.1:$PROXY_PORT/f/retry.bin" -o "$out/stall.bin" --timeout 2
el=$(($(now_ms) - t0))
assert_rc 75 "$GET_RC" "stalled server, --timeout 2" "$T/get-stall.log" "$T/proxy.log"
((el < 6000)) || fail "the stall was noticed only after $(fmt_ms "$el") s (--timeout 2)"
ok "stall noticed, exit after $(fmt_ms "$el") s"
(($(journal_chunks "$out/stall.bin.sesscp.journal") >= 1)) || fail "nothing journaled before the stall"
run_get "$T/get-stall-2.log" "$base/f/retry.bin" -o "$out/stall.bin"
assert_rc 0 "$GET_RC" "resume after the stall, directly from nginx" "$T/get-stall-2.log"
assert_contains "$T/get-stall-2.log" "stall.bin: resumed at" "resumed"
assert_same "$WWW/retry.bin" "$out/stall.bin"

log "PASS"
