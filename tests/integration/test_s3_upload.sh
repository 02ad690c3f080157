#!/usr/bin/env bash
# Scenario: `sesscp send` to a real Ceph RADOS Gateway (scripts/s3-local.sh).
#   a) 1 GiB in parts over 4 connections: awscli's download has the same
#      SHA-256, HEAD shows the multipart ETag, no upload is left incomplete;
#      a re-run is "already complete" and PUTs nothing;
#   b) a tree (0 bytes, 1 byte, 5 MiB + 1, 20 MiB = 3 parts, nested dirs)
#      to a prefix: every object byte-identical by awscli;
#   c) `sesscp get` of the 1 GiB object, 4 connections: same SHA-256.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=s3_lib.sh
. "$(dirname "$0")/s3_lib.sh"
itest_init "$@"
start_rgw
make_bucket big-one

check "a) 1 GiB upload, verified by an independent download"
gen_file "$T/big.img" "$GiB" big
want=$(sha256sum "$T/big.img" | cut -d' ' -f1)
"$BIN" send "$T/big.img" s3://big-one/images/big.img --connections 4 -v 2>"$T/a.log" ||
  fail_with_logs "upload failed" "$T/a.log"
puts=$(grep -c 'PUT part' "$T/a.log")
((puts == 128)) || fail_with_logs "expected 128 part PUTs (8 MiB parts), saw $puts" "$T/a.log"
[[ $(remote_sha big-one images/big.img) == "$want" ]] || fail "awscli's download differs from the source"
etag=$(awsc s3api head-object --bucket big-one --key images/big.img --query ETag --output text)
[[ $etag == *-128\" || $etag == *-128 ]] || fail "ETag $etag is not a 128-part multipart ETag"
(($(pending_uploads big-one) == 0)) || fail "multipart uploads left incomplete"
ok "128 parts, same SHA-256, ETag $etag, nothing left incomplete"

check "a) a re-run is a quick no-op"
"$BIN" send "$T/big.img" s3://big-one/images/big.img -v 2>"$T/a2.log" || fail_with_logs "re-run failed" "$T/a2.log"
grep -q 'already complete' "$T/a2.log" || fail_with_logs "re-run did not say already complete" "$T/a2.log"
! grep -q 'PUT part' "$T/a2.log" || fail_with_logs "re-run uploaded parts" "$T/a2.log"
ok "already complete, no PUT"

check "b) a tree to a prefix"
mkdir -p "$T/tree/sub/deeper" "$T/tree/empty-dir"
: >"$T/tree/zero"
printf x >"$T/tree/one"
gen_file "$T/tree/sub/five-plus" $((5 * MiB + 1)) five
gen_file "$T/tree/sub/deeper/twenty" $((20 * MiB)) twenty
"$BIN" send "$T/tree/" s3://big-one/tree/ --connections 3 -v 2>"$T/b.log" || fail_with_logs "tree upload failed" "$T/b.log"
for f in zero one sub/five-plus sub/deeper/twenty; do
  [[ $(remote_sha big-one "tree/$f") == $(sha256sum "$T/tree/$f" | cut -d' ' -f1) ]] || fail "tree/$f differs"
done
(($(grep -c 'PUT part' "$T/b.log") == 3)) || fail_with_logs "20 MiB should be 3 part PUTs" "$T/b.log"
(($(pending_uploads big-one) == 0)) || fail "multipart uploads left incomplete"
ok "4 objects byte-identical (0 B, 1 B, single PUT, 3 parts)"

check "b2) a re-run of the tree sends only the file that changed"
printf y >"$T/tree/one"
"$BIN" send "$T/tree/" s3://big-one/tree/ --connections 3 -v 2>"$T/b2.log" || fail_with_logs "tree re-run failed" "$T/b2.log"
(($(grep -c 'sesscp: send .*: already complete' "$T/b2.log") == 3)) || fail_with_logs "not 3 files already complete" "$T/b2.log"
(($(grep -c 's3: PUT s3://big-one/tree/one$' "$T/b2.log") == 1)) || fail_with_logs "the changed file was not PUT once" "$T/b2.log"
(($(grep -c 's3: PUT' "$T/b2.log") == 1)) || fail_with_logs "more than the changed file was PUT" "$T/b2.log"
grep -q 's3: GET list s3://big-one/tree/ (page 1)' "$T/b2.log" || fail_with_logs "the destination was not listed once" "$T/b2.log"
! grep -q 'HEAD check of s3://big-one/tree/zero' "$T/b2.log" || fail_with_logs "a listed small file was asked about with HEAD" "$T/b2.log"
[[ $(remote_sha big-one tree/one) == $(sha256sum "$T/tree/one" | cut -d' ' -f1) ]] || fail "tree/one is not the new content"
ok "one listing, 3 already complete, 1 PUT (the changed one), new content on the server"

check "c) sesscp get of 1 GiB"
"$BIN" get s3://big-one/images/big.img -o "$T/back.img" --connections 4 -q || fail "get failed"
[[ $(sha256sum "$T/back.img" | cut -d' ' -f1) == "$want" ]] || fail "get delivered different bytes"
ok "same SHA-256"
