#!/usr/bin/env bash
# Scenario: interrupted uploads to a real Ceph RADOS Gateway.
#   a) kill -9 mid-upload of 1 GiB; the re-run PUTs exactly the parts that
#      ListParts (by awscli) did not show, and the object is byte-identical;
#   b) the source changes between runs: the stale upload is aborted (no
#      incomplete upload afterwards) and the new content is what arrives;
#   c) the upload id is aborted by awscli between runs: the re-run says so,
#      starts a new upload, and the object is right.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=s3_lib.sh
. "$(dirname "$0")/s3_lib.sh"
itest_init "$@"
start_rgw
make_bucket resume

# interrupted_upload FILE KEY PARTS LOG: start an upload, kill -9 it after PARTS PUTs.
interrupted_upload() {
  "$BIN" send "$1" "s3://resume/$2" --connections 4 -v 2>"$4" &
  local pid=$!
  register "$pid"
  kill_after_parts "$4" "$3" "$pid"
}

check "a) kill -9 mid-upload, re-run sends only the missing parts"
gen_file "$T/big.img" "$GiB" big
interrupted_upload "$T/big.img" big.img 40 "$T/a1.log"
id=$(upload_id resume big.img)
held=$(held_parts resume big.img "$id")
((held > 0 && held < 128)) || fail "the server holds $held parts after the kill"
"$BIN" send "$T/big.img" s3://resume/big.img --connections 4 -v 2>"$T/a2.log" || fail_with_logs "re-run failed" "$T/a2.log"
puts=$(grep -c 'PUT part' "$T/a2.log")
((puts == 128 - held)) || fail_with_logs "re-run PUT $puts parts; the server held $held of 128" "$T/a2.log"
grep -q "the server holds $held of 128 parts" "$T/a2.log" || fail_with_logs "no resume message" "$T/a2.log"
[[ $(remote_sha resume big.img) == $(sha256sum "$T/big.img" | cut -d' ' -f1) ]] || fail "object differs"
(($(pending_uploads resume) == 0)) || fail "multipart uploads left incomplete"
ok "server held $held parts, re-run PUT $puts, same SHA-256"

check "b) the source changed between runs"
gen_file "$T/mid.img" $((200 * MiB)) old
interrupted_upload "$T/mid.img" mid.img 8 "$T/b1.log"
old_id=$(upload_id resume mid.img)
gen_file "$T/mid.img.new" $((200 * MiB)) new
mv "$T/mid.img.new" "$T/mid.img"
"$BIN" send "$T/mid.img" s3://resume/mid.img -v 2>"$T/b2.log" || fail_with_logs "re-run failed" "$T/b2.log"
grep -q "source changed.*aborted upload $old_id" "$T/b2.log" || fail_with_logs "no stale-upload message" "$T/b2.log"
(($(pending_uploads resume) == 0)) || fail "the stale upload was not aborted"
(($(grep -c 'PUT part' "$T/b2.log") == 25)) || fail_with_logs "the new source was not sent whole" "$T/b2.log"
[[ $(remote_sha resume mid.img) == $(sha256sum "$T/mid.img" | cut -d' ' -f1) ]] || fail "object is not the new source"
ok "stale upload $old_id aborted, new content uploaded"

check "c) the upload id aborted by another client between runs"
gen_file "$T/third.img" $((200 * MiB)) third
interrupted_upload "$T/third.img" third.img 8 "$T/c1.log"
gone_id=$(upload_id resume third.img)
awsc s3api abort-multipart-upload --bucket resume --key third.img --upload-id "$gone_id"
"$BIN" send "$T/third.img" s3://resume/third.img -v 2>"$T/c2.log" || fail_with_logs "re-run failed" "$T/c2.log"
grep -q "upload id $gone_id no longer exists" "$T/c2.log" || fail_with_logs "no message about the lost upload" "$T/c2.log"
[[ $(remote_sha resume third.img) == $(sha256sum "$T/third.img" | cut -d' ' -f1) ]] || fail "object differs"
(($(pending_uploads resume) == 0)) || fail "multipart uploads left incomplete"
ok "new upload started and completed"
