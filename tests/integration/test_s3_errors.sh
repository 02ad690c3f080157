#!/usr/bin/env bash
# Scenario: S3 failures and the housekeeping commands, against a real Ceph
# RADOS Gateway: wrong secret 77, missing credentials 77, missing bucket 69,
# missing key on get 69, the secret never printed; `status --s3` lists an
# interrupted upload and `s3-abort` aborts it (awscli then lists none).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=s3_lib.sh
. "$(dirname "$0")/s3_lib.sh"
itest_init "$@"
start_rgw
make_bucket errs
gen_file "$T/f.img" $((100 * MiB)) f

# expect_rc CODE LOG CMD...: run CMD, which must exit CODE.
expect_rc() {
  local want=$1 log_file=$2 rc=0
  shift 2
  "$@" >"$log_file" 2>&1 || rc=$?
  ((rc == want)) || fail_with_logs "exit $rc, expected $want: $*" "$log_file"
  ! grep -qF "$AWS_SECRET_ACCESS_KEY" "$log_file" || fail "the secret key appears in the output"
}

check "wrong secret -> 77, missing credentials -> 77"
AWS_SECRET_ACCESS_KEY=wrong-secret-key expect_rc 77 "$T/e1.log" "$BIN" send "$T/f.img" s3://errs/f.img
grep -q 'SignatureDoesNotMatch' "$T/e1.log" || fail_with_logs "no SignatureDoesNotMatch" "$T/e1.log"
! grep -q 'wrong-secret-key' "$T/e1.log" || fail "the wrong secret appears in the output"
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME="$T" "$BIN" send "$T/f.img" s3://errs/f.img >"$T/e2.log" 2>&1 && fail "no credentials succeeded"
grep -q 'no S3 credentials' "$T/e2.log" || fail_with_logs "no clear message" "$T/e2.log"
AWS_SECRET_ACCESS_KEY=wrong-secret-key expect_rc 77 "$T/e3.log" "$BIN" get s3://errs/f.img -o "$T/x"
ok "77, 77, 77"

check "missing bucket -> 69, missing key -> 69"
expect_rc 69 "$T/e4.log" "$BIN" send "$T/f.img" s3://no-such-bucket/f.img
grep -q 'NoSuchBucket' "$T/e4.log" || fail_with_logs "no NoSuchBucket" "$T/e4.log"
expect_rc 69 "$T/e5.log" "$BIN" get s3://errs/absent.img -o "$T/x"
ok "69, 69"

check "status --s3 lists an interrupted upload; s3-abort aborts it"
"$BIN" send "$T/f.img" s3://errs/f.img --connections 2 -v 2>"$T/s1.log" &
pid=$!
register "$pid"
kill_after_parts "$T/s1.log" 4 "$pid"
id=$(upload_id errs f.img)
"$BIN" status --s3 s3://errs/ >"$T/st.txt" 2>&1 || fail_with_logs "status --s3 failed" "$T/st.txt"
grep -q "s3://errs/f.img  upload $id .*(sesscp, resumable)" "$T/st.txt" || fail_with_logs "upload not listed" "$T/st.txt"
"$BIN" s3-abort s3://errs/ >"$T/ab.txt" 2>&1 || fail_with_logs "s3-abort failed" "$T/ab.txt"
grep -q "aborted s3://errs/f.img  upload $id" "$T/ab.txt" || fail_with_logs "abort not reported" "$T/ab.txt"
(($(pending_uploads errs) == 0)) || fail "awscli still lists an incomplete upload"
ok "listed and aborted $id"
