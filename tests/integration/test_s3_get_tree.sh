#!/usr/bin/env bash
# Scenario: `sesscp get s3://BUCKET/PREFIX/` against a real Ceph RADOS
# Gateway, with awscli as the independent uploader: a tree (0 B, 1 B, 20 MiB
# over several ranges, 3 levels deep, spaces, a folder marker) arrives
# byte-identical over a paginated listing; keys with ".." are refused and
# nothing lands outside DEST; a symlink planted in DEST is refused; a get killed with -9 midway is re-run and
# fetches only what was missing; Ctrl-C exits 75; an empty prefix exits 69.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=s3_lib.sh
. "$(dirname "$0")/s3_lib.sh"
itest_init "$@"
command -v jq >/dev/null 2>&1 || skip "jq not installed (scripts/deps.sh installs it)"
start_rgw
make_bucket trees

# sums DIR: "SHA-256  ./PATH" of every file beneath DIR, sorted.
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }

# fetched JSON: file bytes carried by the run (sum of file_done.bytes).
fetched() { jq -R -r 'fromjson | select(.event == "file_done") | .bytes' "$1" | awk '{s += $1} END {print s + 0}'; }

check "a tree under a prefix, byte-identical"
mkdir -p "$T/src/d1/d2/d3" "$T/src/with space"
: >"$T/src/empty"
printf x >"$T/src/one"
gen_file "$T/src/big.bin" $((20 * MiB)) big
gen_file "$T/src/d1/d2/d3/deep.bin" $((3 * MiB + 7)) deep
printf 'spaces\n' >"$T/src/with space/a b.txt"
printf 'top\n' >"$T/src/d1/top.txt"
awsc s3 cp --only-show-errors --recursive "$T/src" s3://trees/photos/2024/
awsc s3api put-object --bucket trees --key photos/2024/emptydir/ >/dev/null
rc=0
"$BIN" get s3://trees/photos/2024/ -o "$T/dest" --list-page 3 -v 2>"$T/t1.log" || rc=$?
((rc == 0)) || fail_with_logs "get of the prefix exited $rc" "$T/t1.log"
pages=$(grep -c 'GET list s3://trees/photos/2024/' "$T/t1.log" || true)
((pages >= 3)) || fail_with_logs "expected a listing over 3 pages (7 keys, 3 a page), saw $pages" "$T/t1.log"
ranges=$(grep -c 'big.bin bytes' "$T/t1.log" || true)
((ranges >= 2)) || fail_with_logs "big.bin came in $ranges ranges, expected several" "$T/t1.log"
[[ -d $T/dest/emptydir ]] || fail "the folder marker did not become a directory"
diff <(sums "$T/src") <(sums "$T/dest") >"$T/sums.diff" || fail_with_logs "the trees differ" "$T/sums.diff"
ok "$(sums "$T/dest" | wc -l) files identical (SHA-256), $pages listing pages, big.bin in $ranges ranges, emptydir/ made"

check "default directory is the prefix's last name; a re-run fetches nothing"
(cd "$T" && "$BIN" get s3://trees/photos/2024/ --json 2>"$T/t2.log" >"$T/t2.json") || fail_with_logs "get into ./2024 failed" "$T/t2.log"
diff <(sums "$T/src") <(sums "$T/2024") >"$T/sums2.diff" || fail_with_logs "./2024 differs" "$T/sums2.diff"
(cd "$T" && "$BIN" get s3://trees/photos/2024/ --json 2>"$T/t3.log" >"$T/t3.json") || fail_with_logs "re-run failed" "$T/t3.log"
again=$(fetched "$T/t3.json")
done_files=$(jq -R -r 'fromjson | select(.event == "file_done" and .state == "already complete") | .name' "$T/t3.json" | wc -l)
((again == 0 && done_files == 6)) || fail_with_logs "re-run carried $again bytes, $done_files files already complete" "$T/t3.json"
ok "./2024 identical; the re-run: 6 files already complete, 0 bytes fetched"

check "keys with '..' are refused, nothing outside DEST"
mkdir -p "$T/jail"
awsc s3api put-object --bucket trees --key 'bad/../evil' --body "$T/src/one" >/dev/null
awsc s3api put-object --bucket trees --key 'bad/a/../../evil2' --body "$T/src/one" >/dev/null
awsc s3api put-object --bucket trees --key 'bad/fine.txt' --body "$T/src/one" >/dev/null
listed=$(awsc s3api list-objects-v2 --bucket trees --prefix bad/ --query 'length(Contents)' --output text)
[[ $listed == 3 ]] || fail "RGW holds $listed keys under bad/, expected 3 (does it normalise '..'?)"
rc=0
"$BIN" get s3://trees/bad/ -o "$T/jail/dest" 2>"$T/t4.log" || rc=$?
((rc == 69)) || fail_with_logs "exit $rc with '..' keys, expected 69" "$T/t4.log"
grep -q "refused key 'bad/../evil'" "$T/t4.log" || fail_with_logs "no refusal of bad/../evil" "$T/t4.log"
grep -q "refused key 'bad/a/../../evil2'" "$T/t4.log" || fail_with_logs "no refusal of bad/a/../../evil2" "$T/t4.log"
[[ $(find "$T/jail" -mindepth 1 | sort | tr '\n' ' ') == "$T/jail/dest $T/jail/dest/fine.txt " ]] ||
  fail "unexpected entries: $(find "$T/jail" -mindepth 1 | tr '\n' ' ')"
[[ -z $(find "$T" -name 'evil*' -print -quit) ]] || fail "an evil key was written: $(find "$T" -name 'evil*')"
ok "exit 69, both refused by name, fine.txt fetched, nothing else written"

check "a symlink planted in DEST is refused, not followed"
mkdir -p "$T/linked" "$T/outside"
ln -s "$T/outside" "$T/linked/d1"
rc=0
"$BIN" get s3://trees/photos/2024/ -o "$T/linked" 2>"$T/t5.log" || rc=$?
((rc == 73)) || fail_with_logs "exit $rc with d1 a symlink, expected 73" "$T/t5.log"
grep -q "cannot create directory $T/linked/d1: something other than a directory" "$T/t5.log" ||
  fail_with_logs "no refusal naming d1" "$T/t5.log"
[[ -z $(find "$T/outside" -mindepth 1 -print -quit) ]] || fail "written through the link: $(find "$T/outside" -mindepth 1)"
[[ -f $T/linked/big.bin && -f "$T/linked/with space/a b.txt" ]] || fail "the objects outside d1/ did not arrive"
ok "exit 73, d1/ refused by name, nothing under the link's target, the other objects arrived"

check "kill -9 midway, the re-run fetches only what was missing"
# part1 complete and part2 journaled in part at the kill, part3 untouched;
# --bwlimit 20M makes part2 take 2 s while its first checkpoint comes after
# 16 MiB or 1 s.
mkdir -p "$T/many"
gen_file "$T/many/part1.bin" $((40 * MiB)) many1
gen_file "$T/many/part2.bin" $((40 * MiB)) many2
gen_file "$T/many/part3.bin" $((8 * MiB)) many3
awsc s3 cp --only-show-errors --recursive "$T/many" s3://trees/many/
total=$((88 * MiB))
"$BIN" get s3://trees/many/ -o "$T/m" --bwlimit 20M --json 2>"$T/k1.log" >"$T/k1.json" &
pid=$!
register "$pid"
for ((i = 0; i < 1200; i++)); do
  grep -qE '"event":"checkpoint".*"name":"part2.bin","confirmed":[1-9]' "$T/k1.json" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
unregister "$pid"
[[ -f $T/m/part1.bin ]] || fail_with_logs "part1.bin never completed before the kill" "$T/k1.log"
[[ ! -f $T/m/part3.bin ]] || fail_with_logs "the get finished before the kill (rate limit ignored?)" "$T/k1.log"
complete_before=$(find "$T/m" -name 'part*.bin' | wc -l)
"$BIN" get s3://trees/many/ -o "$T/m" --json 2>"$T/k2.log" >"$T/k2.json" || fail_with_logs "re-run failed" "$T/k2.log"
got=$(fetched "$T/k2.json")
skipped=$(jq -R -r 'fromjson | select(.event == "file_done" and .state == "already complete") | .name' "$T/k2.json" | wc -l)
((skipped == complete_before)) || fail_with_logs "$complete_before files were complete, the re-run skipped $skipped" "$T/k2.json"
missing=$((total - complete_before * 40 * MiB))
((got > 0 && got <= missing)) || fail_with_logs "re-run fetched $got bytes; at most $missing were missing" "$T/k2.json"
resumed=$(jq -R -r 'fromjson | select(.event == "file_done" and .name == "part2.bin") | .resumed_at' "$T/k2.json")
if ((complete_before == 1)); then
  ((resumed > 0 && got == missing - resumed)) ||
    fail_with_logs "part2.bin resumed at ${resumed:-?}, the re-run fetched $got of the $missing missing bytes" "$T/k2.json"
else
  log "note: part2.bin completed before the kill landed; its resume is not shown this time"
fi
diff <(sums "$T/many") <(sums "$T/m") >"$T/sums3.diff" || fail_with_logs "the killed tree differs" "$T/sums3.diff"
ok "killed with $complete_before of 3 complete, part2.bin resumed at $resumed; the re-run fetched $got of $total bytes; identical"

check "Ctrl-C midway stops the tree: exit 75, said once"
"$BIN" get s3://trees/many/ -o "$T/sig" --bwlimit 20M 2>"$T/s1.log" &
pid=$!
register "$pid"
for ((i = 0; i < 1200; i++)); do
  [[ -f $T/sig/part1.bin ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -INT "$pid" 2>/dev/null || true
rc=0
wait "$pid" || rc=$?
unregister "$pid"
((rc == 75)) || fail_with_logs "exit $rc after SIGINT, expected 75" "$T/s1.log"
grep -qE 'objects under s3://trees/many/ not downloaded' "$T/s1.log" || fail_with_logs "no summary" "$T/s1.log"
errors=$(grep -c '^sesscp: error:' "$T/s1.log" || true)
((errors == 1)) || fail_with_logs "$errors error lines, expected the one summary" "$T/s1.log"
ok "exit 75: $(grep -o '[0-9]* of 3 objects[^;]*' "$T/s1.log")"

check "an empty prefix exits 69"
rc=0
"$BIN" get s3://trees/nothing/here/ -o "$T/none" 2>"$T/t5.log" || rc=$?
((rc == 69)) || fail_with_logs "exit $rc for an empty prefix, expected 69" "$T/t5.log"
grep -q 'no objects under s3://trees/nothing/here/' "$T/t5.log" || fail_with_logs "no clear message" "$T/t5.log"
[[ ! -e $T/none ]] || fail "an empty listing created the directory"
ok "exit 69: $(grep -o 'no objects under [^;]*' "$T/t5.log")"
