#!/usr/bin/env bash
# Scenario: `sesscp get --connections 8` against a local nginx that limits
# each connection's rate, killed with -9 while 8 ranged requests are in
# flight (chunks completing out of order), then resumed with 8 connections.
# The journal must claim only a contiguous prefix, the resume must start
# there, fetch each missing byte once, and deliver the file intact.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
itest_init "$@"

start_nginx 1m
base="http://127.0.0.1:$NGINX_PORT"
out="$T/out"
mkdir -p "$out"
name=conn.bin
size=$((48 * MiB))
gen_file "$WWW/$name" "$size" url-connections

check "kill -9 with 8 connections in flight"
mark=$(log_mark)
start_get "$T/get-1.log" "$base/slow/$name" -o "$out/$name" --connections 8 -v
# 8 x 1 MiB/s: about 6 s for the file; kill at ~40 %.
wait_progress "$out/$name.sesscp.part" $((size * 2 / 5)) "$GET_PID" $((8 * MiB)) 0 120
kill9 "$GET_PID"
assert_interrupted_state "$out" "$name"
requests=$(log_since "$mark" | grep -c '^GET ' || true)
concurrent=$(grep -c 'sesscp: GET ' "$T/get-1.log" || true)
log "first run: $requests GETs logged by nginx, $concurrent started by sesscp"
((concurrent >= 8)) || fail_with_logs "fewer than 8 ranged requests were started" "$T/get-1.log"
chunks=$(journal_chunks "$out/$name.sesscp.journal")
log "journal confirms $chunks chunks"

check "every journaled chunk is really in the part file (prefix only)"
# Compare the journaled prefix of the part with the source: the journal may
# claim less than was written, never more.
if ((chunks > 0)); then
  cmp -n $((chunks * MiB)) "$WWW/$name" "$out/$name.sesscp.part" || fail "journaled prefix differs from the source"
fi
ok "the $chunks journaled chunks match the source"

check "resume with 8 connections fetches only what is missing"
mark=$(log_mark)
run_get "$T/get-2.log" "$base/slow/$name" -o "$out/$name" --connections 8
assert_rc 0 "$GET_RC" "resumed get" "$T/get-2.log"
last_summary "$T/get-2.log" recv "$name"
[[ $S_OFFSET -eq $((chunks * MiB)) ]] || fail "resumed at $S_OFFSET, the journal confirms $((chunks * MiB))"
ok "resumed at $S_OFFSET"
for s in $(range_starts_since "$mark"); do
  [[ $s != - && $s -ge $S_OFFSET ]] || fail "second run asked for bytes from $s, before the resume point $S_OFFSET"
done
sent=$(body_bytes_since "$mark")
[[ $sent -eq $((size - S_OFFSET)) ]] || fail "second run: nginx sent $sent bytes, the missing part is $((size - S_OFFSET))"
ok "second run: $(range_starts_since "$mark" | wc -l) ranged GETs, $sent bytes: each missing byte once"
assert_same "$WWW/$name" "$out/$name"
assert_no_leftovers "$out" "$name"

check "no cap at 16 connections"
run_get "$T/get-32.log" "$base/f/$name" -o "$out/c32.bin" --connections 32 -v
assert_rc 0 "$GET_RC" "--connections 32" "$T/get-32.log"
assert_same "$WWW/$name" "$out/c32.bin"
log "PASS"
