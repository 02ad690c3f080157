#!/usr/bin/env bash
# Scenario: `sesscp status` on a destination during and after a transfer.
# While a throttled transfer runs it says a receiver holds the destination
# (pid from /proc/locks) without blocking it: the transfer goes on. After
# the sender is killed, it reports the confirmed byte count that the journal
# holds (counted from the journal's own bytes), which is where the next run
# resumes; the journal and part are left untouched; --json parses; a
# directory lists its partial files; a path with nothing there exits 64.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
command -v jq >/dev/null 2>&1 || skip "jq not installed (scripts/deps.sh installs it)"

name=data.bin
size=$((32 * MiB))
chunk=$((256 * 1024))
rate=$((8 * MiB))
dest="$T/dest"
part="$dest/$name.sesscp.part"
journal="$dest/$name.sesscp.journal"
mkdir -p "$dest"
gen_file "$T/$name" "$size" ux-status
opts=(--chunk-size 256K --window 2M)

start_recv "$dest" "$T/recv.log"
rpid=$RECV_PID

check "status during a transfer: active, held by the receiver, and it does not block it"
start_send "$T/send1.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 8M
spid=$SEND_PID
wait_progress "$part" $((size / 4)) "$spid" "$rate" 0 60
timeout 10 "$BIN" status "$dest/$name" --json >"$T/active.json" 2>"$T/active.err" || fail_with_logs "status exited $?" "$T/active.err"
[[ $(json_field "$T/active.json" status .active) == true ]] || fail_with_logs "status does not see the running transfer" "$T/active.json"
[[ $(json_field "$T/active.json" status .lock_pid) == "$rpid" ]] ||
  fail_with_logs "lock_pid is not the receiver's pid $rpid" "$T/active.json"
ok "active: lock held by pid $rpid; confirmed so far $(json_field "$T/active.json" status .confirmed_bytes)"

check "kill -9 the sender at ~50 %; status reports what the journal confirms"
wait_progress "$part" $((size / 2)) "$spid" "$rate" $((size / 4)) 60
kill9 "$spid"
wait_summary "$T/recv.log" recv "$name" 1 20
before=$(stat -c '%s %Y %i' "$part" "$journal"; sha "$part"; sha "$journal")
timeout 10 "$BIN" status "$dest/$name" >"$T/status.txt" 2>"$T/status.err" || fail_with_logs "status exited $?" "$T/status.err"
sed 's/^/    /' "$T/status.txt"
timeout 10 "$BIN" status "$journal" --json >"$T/status.json" 2>"$T/status.err" || fail_with_logs "status --json exited $?" "$T/status.err"
json_events "$T/status.json" >/dev/null
after=$(stat -c '%s %Y %i' "$part" "$journal"; sha "$part"; sha "$journal")
[[ $before == "$after" ]] || fail "status changed the part or the journal"
ok "part and journal unchanged (size, mtime, inode, SHA-256)"
chunks=$(journal_chunks "$journal")
want=$((chunks * chunk))
((want > size)) && want=$size
got=$(json_field "$T/status.json" status .confirmed_bytes)
log "journal: $chunks chunks of $chunk => $want bytes; status: $got"
[[ $got == "$want" ]] || fail_with_logs "status says $got bytes confirmed, the journal $want" "$T/status.json"
[[ $(json_field "$T/status.json" status .confirmed_chunks) == "$chunks" ]] || fail "confirmed_chunks differs from the journal"
((got > 0)) || fail "nothing confirmed at ~50 %"
[[ $(json_field "$T/status.json" status .state) == partial ]] || fail_with_logs "state" "$T/status.json"
[[ $(json_field "$T/status.json" status .resumable) == true ]] || fail_with_logs "not resumable" "$T/status.json"
[[ $(json_field "$T/status.json" status .active) == false ]] || fail_with_logs "still active after the kill" "$T/status.json"
[[ $(json_field "$T/status.json" status .source.size) == "$size" ]] || fail_with_logs "source size" "$T/status.json"
[[ $(json_field "$T/status.json" status .source.mtime_ns) == "$(stat -c %Y "$T/$name")"* ]] ||
  fail_with_logs "source mtime differs from the source file's" "$T/status.json"
grep -qE "^$name: partial, .* confirmed \(.*%, $want bytes" "$T/status.txt" || fail_with_logs "human report" "$T/status.txt"
grep -qE '^  resumable: +yes' "$T/status.txt" || fail_with_logs "human report: resumable" "$T/status.txt"
ok "status: $got bytes confirmed ($chunks chunks), resumable, not active"

check "a directory lists its partial files"
timeout 10 "$BIN" status "$dest" --json >"$T/dir.json" || fail "status DIR exited $?"
[[ $(jq -R -r 'fromjson | .name' "$T/dir.json") == "$name" ]] || fail_with_logs "directory listing" "$T/dir.json"
ok "directory: $(jq -R -c 'fromjson | {name, state, confirmed_bytes}' "$T/dir.json")"

check "the next run resumes exactly where status said"
run_send "$T/send2.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "resumed send" "$T/send2.log"
last_summary "$T/send2.log" send "$name"
[[ $S_OFFSET == "$got" ]] || fail "resumed at $S_OFFSET, status said $got"
ok "resumed at $S_OFFSET"
assert_same "$T/$name" "$dest/$name"

check "nothing at PATH: exit 64 with an error line"
RC=0
"$BIN" status "$dest/nothing.bin" >"$T/none.out" 2>"$T/none.err" || RC=$?
assert_rc 64 "$RC" "status of a missing destination" "$T/none.err"
grep -q '^sesscp: error: nothing to report for ' "$T/none.err" || fail_with_logs "error line" "$T/none.err"
timeout 10 "$BIN" status "$dest" >"$T/dir.txt" || fail "status DIR after completion exited $?"
grep -q 'no partial transfers' "$T/dir.txt" || fail_with_logs "completed directory" "$T/dir.txt"
ok "$(cat "$T/dir.txt")"
log "PASS"
