#!/usr/bin/env bash
# Scenario: an upload to a real Ceph RADOS Gateway through an HTTP-aware
# fault proxy (s3fault.py) that damages part bodies or throttles part PUTs:
#   a) one part corrupted in flight: RGW rejects it (BadDigest, its
#      Content-MD5 does not match), sesscp sends it again once, the object
#      is byte-identical (awscli, straight to RGW);
#   b) every part corrupted: each is rejected twice, sesscp exits 65, no
#      object is published; a re-run through the same (now clean) proxy
#      resumes that upload and completes;
#   c) the first three part PUTs answered "503 SlowDown": sesscp backs off
#      and retries inside the run, exit 0, object identical;
#   d) a small object (one PUT, no multipart) corrupted once: sent again;
#   e) every PUT throttled: sesscp gives up after its bounded retries
#      with exit 75 (temporary), nothing published;
#   f) a download whose first two GETs are answered "503 SlowDown": retried
#      in the run, the file is identical.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=s3_lib.sh
. "$(dirname "$0")/s3_lib.sh"
itest_init "$@"
start_rgw
make_bucket faults
RGW_PORT=${AWS_ENDPOINT_URL##*:}
FAULT_PID=""
FAULT_URL=""

# start_fault NAME ARGS...: s3fault.py in front of RGW; sets FAULT_URL.
start_fault() {
  local name=$1 i pf=$T/$1.port
  shift
  if [[ -n $FAULT_PID ]]; then stop_fault; fi
  python3 "$(dirname "$0")/s3fault.py" --target "127.0.0.1:$RGW_PORT" --port-file "$pf" \
    --log "$T/$name.faults" "$@" 2>"$T/$name.proxy.log" &
  FAULT_PID=$!
  register "$FAULT_PID"
  for ((i = 0; i < 200; i++)); do
    [[ -s $pf ]] && break
    is_running "$FAULT_PID" || break
    sleep 0.05
  done
  [[ -s $pf ]] || fail_with_logs "s3fault.py did not start within 10 s" "$T/$name.proxy.log"
  FAULT_URL=http://127.0.0.1:$(<"$pf")
  touch "$T/$name.faults"
}

stop_fault() {
  kill -TERM "$FAULT_PID" 2>/dev/null || true
  wait_exit "$FAULT_PID" 10 || true
  unregister "$FAULT_PID"
  FAULT_PID=""
}

# via_fault LOG ARGS...: sesscp ARGS with the proxy as endpoint; sets RC.
RC=0
via_fault() {
  local log_file=$1
  shift
  RC=0
  AWS_ENDPOINT_URL=$FAULT_URL "$BIN" "$@" -v >"$log_file" 2>&1 || RC=$?
}

# absent KEY: awscli finds no such object.
absent() { ! awsc s3api head-object --bucket faults --key "$1" >/dev/null 2>&1; }

gen_file "$T/f.img" $((40 * MiB)) faults
want=$(sha256sum "$T/f.img" | cut -d' ' -f1)

check "a) one part corrupted in flight is rejected and sent again"
start_fault a --corrupt 1
via_fault "$T/a.log" send "$T/f.img" s3://faults/a.img --part-size 5M --connections 2
((RC == 0)) || fail_with_logs "exit $RC" "$T/a.log"
(($(wc -l <"$T/a.faults") == 1)) || fail_with_logs "the proxy corrupted $(wc -l <"$T/a.faults") parts, not 1" "$T/a.faults"
part=$(sed -n 's/.*partNumber=\([0-9]*\).*/\1/p' "$T/a.faults")
grep -q "PUT part $part.*server found it damaged (BadDigest); sending it again" "$T/a.log" ||
  fail_with_logs "no BadDigest re-send of part $part" "$T/a.log"
(($(grep -c "s3: PUT part $part (" "$T/a.log") == 2)) || fail_with_logs "part $part not PUT exactly twice" "$T/a.log"
[[ $(remote_sha faults a.img) == "$want" ]] || fail "object differs"
(($(pending_uploads faults) == 0)) || fail "multipart uploads left incomplete"
ok "part $part: BadDigest, sent again, object identical"

check "b) every part corrupted: exit 65, nothing published, a clean re-run completes"
start_fault b --corrupt 1000
via_fault "$T/b.log" send "$T/f.img" s3://faults/b.img --part-size 5M --connections 2
((RC == 65)) || fail_with_logs "exit $RC, expected 65" "$T/b.log"
grep -q 'BadDigest' "$T/b.log" || fail_with_logs "the error does not name BadDigest" "$T/b.log"
absent b.img || fail "an object was published after exit 65"
kill -USR1 "$FAULT_PID" # the same endpoint (so the same journal), no more faults
via_fault "$T/b2.log" send "$T/f.img" s3://faults/b.img --part-size 5M --connections 2
((RC == 0)) || fail_with_logs "re-run failed ($RC)" "$T/b2.log"
grep -q 'the server holds 0 of 8 parts' "$T/b2.log" || fail_with_logs "the re-run did not resume the upload" "$T/b2.log"
[[ $(remote_sha faults b.img) == "$want" ]] || fail "object differs after the re-run"
(($(pending_uploads faults) == 0)) || fail "multipart uploads left incomplete"
ok "65 after $(wc -l <"$T/b.faults") damaged part bodies; re-run identical"

check "c) 503 SlowDown on the first three part PUTs: retried in the run"
start_fault c --slowdown 3
via_fault "$T/c.log" send "$T/f.img" s3://faults/c.img --part-size 5M --connections 2
((RC == 0)) || fail_with_logs "exit $RC" "$T/c.log"
(($(wc -l <"$T/c.faults") == 3)) || fail_with_logs "the proxy throttled $(wc -l <"$T/c.faults") PUTs, not 3" "$T/c.faults"
# One retry per throttled PUT; a client that had begun the body may see the
# connection end before the 503, so not every retry need name SlowDown.
(($(grep -c '^sesscp: PUT part .*; retrying$' "$T/c.log") == 3)) || fail_with_logs "not three retries" "$T/c.log"
grep -q 'HTTP 503 SlowDown; retrying' "$T/c.log" || fail_with_logs "no retry names the SlowDown" "$T/c.log"
[[ $(remote_sha faults c.img) == "$want" ]] || fail "object differs"
(($(pending_uploads faults) == 0)) || fail "multipart uploads left incomplete"
ok "three SlowDowns retried, object identical"

check "d) a one-PUT object corrupted in flight is sent again"
gen_file "$T/small.img" $((5 * MiB)) small
start_fault d --corrupt 1
via_fault "$T/d.log" send "$T/small.img" s3://faults/d.img --part-size 5M
((RC == 0)) || fail_with_logs "exit $RC" "$T/d.log"
(($(wc -l <"$T/d.faults") == 1)) || fail_with_logs "not one corrupted PUT" "$T/d.faults"
grep -q 'server found it damaged (BadDigest); sending it again' "$T/d.log" || fail_with_logs "no re-send" "$T/d.log"
[[ $(remote_sha faults d.img) == $(sha256sum "$T/small.img" | cut -d' ' -f1) ]] || fail "object differs"
ok "BadDigest, sent again, object identical"

check "e) throttled without end: exit 75 after bounded retries, nothing published"
start_fault e --slowdown 1000
t0=$(now_ms)
via_fault "$T/e.log" send "$T/small.img" s3://faults/e.img --part-size 5M
((RC == 75)) || fail_with_logs "exit $RC, expected 75" "$T/e.log"
grep -q 'SlowDown' "$T/e.log" || fail_with_logs "the error does not name SlowDown" "$T/e.log"
absent e.img || fail "an object was published after exit 75"
ok "75 after $(wc -l <"$T/e.faults") throttled PUTs in $(fmt_ms $(($(now_ms) - t0))) s"

check "f) get: 503 SlowDown on the first two GETs, retried in the run"
start_fault f --slowdown-get 2
via_fault "$T/f.log" get s3://faults/a.img -o "$T/got.img"
((RC == 0)) || fail_with_logs "exit $RC" "$T/f.log"
(($(wc -l <"$T/f.faults") == 2)) || fail_with_logs "not two throttled GETs" "$T/f.faults"
grep -q 'HTTP 503' "$T/f.log" || fail_with_logs "no retry after HTTP 503 reported" "$T/f.log"
[[ $(sha256sum "$T/got.img" | cut -d' ' -f1) == "$want" ]] || fail "downloaded file differs"
ok "two SlowDowns retried, file identical"
stop_fault
