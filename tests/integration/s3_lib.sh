# shellcheck shell=bash disable=SC2034
# Helpers for the S3 integration tests (sourced after lib.sh, never run): a
# real Ceph RADOS Gateway from scripts/s3-local.sh for the test's lifetime,
# and awscli (Debian's /usr/bin/aws) as the independent client.

S3_LOCAL="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/s3-local.sh"
S3_CLUSTER=""

itest_on_exit() {
  if [[ -n $S3_CLUSTER ]]; then "$S3_LOCAL" stop "$S3_CLUSTER" || true; fi
}

# start_rgw: bring the cluster up and export its endpoint and keys; skip
# (125) when the Ceph packages cannot be installed.
start_rgw() {
  local envfile=$T/s3.env rc=0
  "$S3_LOCAL" start >"$envfile" 2>"$T/s3-start.log" || rc=$?
  if ((rc == 125)); then skip "Ceph/awscli packages cannot be installed"; fi
  # shellcheck disable=SC1090
  [[ -s $envfile ]] && . "$envfile"
  S3_CLUSTER=${SESSCP_S3_DIR:-}
  ((rc == 0)) || fail_with_logs "scripts/s3-local.sh start failed ($rc)" "$T/s3-start.log"
  export XDG_STATE_HOME=$T/state
  log "RGW at $AWS_ENDPOINT_URL ($(grep -o 'up in [0-9]*s' "$T/s3-start.log" || true))"
}

# awsc ARGS...: Debian's awscli against the local gateway.
awsc() { /usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL" --no-cli-pager "$@"; }

make_bucket() { awsc s3api create-bucket --bucket "$1" >/dev/null; }

# pending_uploads BUCKET: how many multipart uploads are incomplete there.
pending_uploads() {
  awsc s3api list-multipart-uploads --bucket "$1" --output json | python3 -c \
    'import json,sys; t=sys.stdin.read().strip(); print(len(json.loads(t).get("Uploads", [])) if t else 0)'
}

# upload_id BUCKET KEY: the one incomplete upload of KEY.
upload_id() {
  awsc s3api list-multipart-uploads --bucket "$1" --prefix "$2" --query 'Uploads[0].UploadId' --output text
}

# held_parts BUCKET KEY ID: how many parts the server holds (ListParts).
held_parts() {
  awsc s3api list-parts --bucket "$1" --key "$2" --upload-id "$3" --output json | python3 -c \
    'import json,sys; t=sys.stdin.read().strip(); print(len(json.loads(t).get("Parts", [])) if t else 0)'
}

# remote_sha BUCKET KEY: SHA-256 of the object as awscli downloads it.
remote_sha() {
  awsc s3 cp --only-show-errors "s3://$1/$2" "$T/remote.tmp"
  sha256sum "$T/remote.tmp" | cut -d' ' -f1
  rm -f "$T/remote.tmp"
}

# kill_after_parts LOG N PID: kill -9 PID once LOG shows N part PUTs started.
kill_after_parts() {
  local log_file=$1 n=$2 pid=$3 i c
  for ((i = 0; i < 1200; i++)); do
    c=$(grep -c 'PUT part' "$log_file" 2>/dev/null || true)
    if ((${c:-0} >= n)); then break; fi
    kill -0 "$pid" 2>/dev/null || fail_with_logs "sesscp ended before $n parts" "$log_file"
    sleep 0.05
  done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  unregister "$pid"
}
