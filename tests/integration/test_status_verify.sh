#!/usr/bin/env bash
# Scenario: `sesscp status --verify` re-hashes a partial file's confirmed
# chunks against its journal, read-only and without taking the lease. After a
# real interrupted transfer (sender kill -9): clean -> exit 0, 0 damaged;
# then, each on a fresh copy of that partial: a byte flipped in chunk 0, 3 MiB
# of zeros in the middle, a 2 MiB hole punched, the part truncated below the
# confirmed length -> exit 65 and exactly the damaged chunk ranges listed
# (--json and text). status --verify never changes the part or the journal,
# works while another process holds the journal's flock, and on a directory
# with two partials, one damaged, exits 65 listing only that one. Plain
# status says the data was not read.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
command -v jq >/dev/null 2>&1 || skip "jq not installed (scripts/deps.sh installs it)"

name=data.bin
size=$((48 * MiB))
dest="$T/dest"
part="$dest/$name.sesscp.part"
journal="$dest/$name.sesscp.journal"
mkdir -p "$dest"
gen_file "$T/$name" "$size" status-verify

check "an interrupted transfer leaves a partial (sender kill -9 at ~50 %)"
start_recv "$dest" "$T/recv.log"
start_send "$T/send1.log" "$T/$name" "127.0.0.1:$RECV_PORT" --bwlimit 16M
spid=$SEND_PID
wait_progress "$part" $((size / 2)) "$spid" $((16 * MiB)) 0 60
kill9 "$spid"
wait_summary "$T/recv.log" recv "$name" 1 20
kill9 "$RECV_PID"
chunks=$(journal_chunks "$journal")
((chunks >= 16)) || fail "only $chunks chunks confirmed"
cp -a "$dest" "$T/pristine"
ok "$chunks chunks of 1 MiB confirmed"

# verify_json PATH OUT -> RC: status --verify --json, its exit code.
verify_json() {
  RC=0
  timeout 60 "$BIN" status --verify --json "$1" >"$2" 2>"$2.err" || RC=$?
}
# restore: the pristine partial back in $dest.
restore() { rm -rf "$dest"; cp -a "$T/pristine" "$dest"; }

check "plain status says the data was not read"
timeout 10 "$BIN" status "$dest/$name" >"$T/plain.txt" || fail "status exited $?"
grep -qE '^  data: +not read' "$T/plain.txt" || fail_with_logs "no 'data: not read' line" "$T/plain.txt"
grep -q 'intact"' "$T/plain.txt" && fail "plain status claims the data intact"
[[ $(timeout 10 "$BIN" status --json "$dest/$name" | jq -r .data_checked) == false ]] || fail "data_checked is not false"
ok "$(grep '^  data:' "$T/plain.txt")"

check "clean partial: exit 0, no damage, part and journal untouched"
before=$(sha "$part"; sha "$journal"; stat -c '%s %Y' "$part" "$journal")
verify_json "$dest/$name" "$T/clean.json"
assert_rc 0 "$RC" "status --verify of a clean partial" "$T/clean.json.err"
[[ $(jq -r .damaged_chunks "$T/clean.json") == 0 ]] || fail_with_logs "damage reported" "$T/clean.json"
[[ $(jq -r .data_checked "$T/clean.json") == true ]] || fail_with_logs "data_checked" "$T/clean.json"
[[ $(jq -r .checked_bytes "$T/clean.json") == $((chunks * MiB)) ]] || fail_with_logs "checked_bytes" "$T/clean.json"
after=$(sha "$part"; sha "$journal"; stat -c '%s %Y' "$part" "$journal")
[[ $before == "$after" ]] || fail "status --verify changed the part or the journal"
ok "0 damaged of $chunks; files unchanged"

# expect_damage CASE FIRST COUNT MISSING: the only damaged range is chunks
# [FIRST, FIRST + COUNT), `missing` as given; exit 65; text lists it.
expect_damage() {
  local what=$1 first=$2 count=$3 missing=$4
  verify_json "$dest/$name" "$T/$what.json"
  assert_rc 65 "$RC" "status --verify, $what" "$T/$what.json.err"
  local got
  got=$(jq -c '[.damaged_ranges[] | [.first_chunk, .count, .missing]]' "$T/$what.json")
  [[ $got == "[[$first,$count,$missing]]" ]] || fail_with_logs "$what: ranges $got, expected [[$first,$count,$missing]]" "$T/$what.json"
  [[ $(jq -r .damaged_chunks "$T/$what.json") == "$count" ]] || fail_with_logs "$what: damaged_chunks" "$T/$what.json"
  RC=0
  timeout 60 "$BIN" status --verify "$dest/$name" >"$T/$what.txt" 2>&1 || RC=$?
  assert_rc 65 "$RC" "status --verify (text), $what" "$T/$what.txt"
  grep -q 'DAMAGED' "$T/$what.txt" || fail_with_logs "$what: no DAMAGED line" "$T/$what.txt"
  ok "$what: $(grep -E '^    chunk' "$T/$what.txt" | head -1 | sed 's/^ *//')"
}

check "a byte flipped in chunk 0"
restore
printf '\xa5' | dd of="$part" bs=1 seek=4321 conv=notrunc status=none
expect_damage flip 0 1 false

check "3 MiB of zeros from 8 MiB"
restore
dd if=/dev/zero of="$part" bs=1M seek=8 count=3 conv=notrunc status=none
expect_damage zeros 8 3 false

check "a 2 MiB hole punched at 4 MiB"
restore
if fallocate -p -o $((4 * MiB)) -l $((2 * MiB)) "$part" 2>/dev/null; then
  expect_damage hole 4 2 false
else
  log "fallocate -p not supported here: hole case skipped"
fi

check "the part truncated below the confirmed length"
restore
truncate -s $(((chunks - 3) * MiB + 100)) "$part"
expect_damage truncated $((chunks - 3)) 3 true

check "read-only and lock-free: works while another process holds the journal's flock"
restore
printf '\xa5' | dd of="$part" bs=1 seek=4321 conv=notrunc status=none
before=$(sha "$part"; sha "$journal")
flock "$journal" sleep 30 &
holder=$!
sleep 0.3
verify_json "$dest/$name" "$T/locked.json"
assert_rc 65 "$RC" "status --verify while the journal is locked" "$T/locked.json.err"
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null || true
after=$(sha "$part"; sha "$journal")
[[ $before == "$after" ]] || fail "status --verify changed the part or the journal"
ok "did not block on the lock; files unchanged"

check "a directory with two partials, one damaged: exit 65, only that one listed"
restore
cp "$part" "$dest/other.bin.sesscp.part"
cp "$journal" "$dest/other.bin.sesscp.journal"
printf '\xa5' | dd of="$part" bs=1 seek=$((5 * MiB)) conv=notrunc status=none
verify_json "$dest" "$T/dir.json"
assert_rc 65 "$RC" "status --verify DIR" "$T/dir.json.err"
damaged=$(jq -r 'select(.damaged_chunks > 0) | .name' "$T/dir.json")
[[ $damaged == "$name" ]] || fail_with_logs "damaged entries: '$damaged'" "$T/dir.json"
[[ $(jq -r 'select(.name == "other.bin") | .damaged_chunks' "$T/dir.json") == 0 ]] || fail_with_logs "other.bin" "$T/dir.json"
ok "only $name damaged (chunk 5)"
log "PASS"
