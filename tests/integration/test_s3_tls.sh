#!/usr/bin/env bash
# Scenario: S3 over HTTPS with a private CA. A real Ceph RADOS Gateway sits
# behind nginx terminating TLS with a certificate made here by openssl
# (nginx passes the Host header and the request URI unchanged, so SigV4
# signatures still match):
#   a) send and get with --cacert CERT: the object (awscli, straight to RGW)
#      and the downloaded file are byte-identical;
#   b) without --cacert the certificate is refused: exit 77, the message
#      names the certificate, nothing is uploaded or written;
#   c) a CA that did not sign the server is refused too (77).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
# shellcheck source-path=SCRIPTDIR source=s3_lib.sh
. "$(dirname "$0")/s3_lib.sh"
itest_init "$@"
command -v nginx >/dev/null 2>&1 || skip "nginx not installed (scripts/deps.sh installs nginx-light)"
start_rgw
make_bucket tlsb
RGW_PORT=${AWS_ENDPOINT_URL##*:}

# start_tls_proxy: nginx on a free port, TLS in front of RGW; sets TLS_URL.
TLS_URL=""
start_tls_proxy() {
  local dir=$T/nginx port try pid
  make_cert "$T/tls"
  mkdir -p "$dir/tmp"
  for ((try = 0; try < 5; try++)); do
    port=$(free_port)
    { nginx_conf_head "$dir"; cat <<CONF
  access_log off;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $T/tls/cert.pem;
    ssl_certificate_key $T/tls/key.pem;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {
      proxy_pass http://127.0.0.1:$RGW_PORT;
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      proxy_set_header Connection "";
    }
  }
}
CONF
    } >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    pid=$!
    register "$pid"
    if wait_port "$port" 10 "$pid"; then
      TLS_URL=https://127.0.0.1:$port
      log "nginx (TLS) pid $pid on 127.0.0.1:$port -> RGW 127.0.0.1:$RGW_PORT"
      return 0
    fi
    kill9 "$pid"
  done
  show_log "$dir/error.log" "nginx error.log"
  skip "nginx could not be started here"
}
start_tls_proxy
gen_file "$T/f.img" $((24 * MiB)) tls
want=$(sha256sum "$T/f.img" | cut -d' ' -f1)

# over_tls LOG ARGS...: sesscp ARGS against the HTTPS endpoint; sets RC.
RC=0
over_tls() {
  local log_file=$1
  shift
  RC=0
  AWS_ENDPOINT_URL=$TLS_URL "$BIN" "$@" >"$log_file" 2>&1 || RC=$?
}

check "a) send and get over HTTPS with --cacert"
over_tls "$T/a1.log" send "$T/f.img" s3://tlsb/f.img --part-size 8M --cacert "$T/tls/cert.pem" -v
((RC == 0)) || fail_with_logs "send exit $RC" "$T/a1.log"
(($(grep -c 's3: PUT part' "$T/a1.log") == 3)) || fail_with_logs "not 3 part PUTs" "$T/a1.log"
[[ $(remote_sha tlsb f.img) == "$want" ]] || fail "object differs"
over_tls "$T/a2.log" get s3://tlsb/f.img -o "$T/got.img" --cacert "$T/tls/cert.pem"
((RC == 0)) || fail_with_logs "get exit $RC" "$T/a2.log"
[[ $(sha256sum "$T/got.img" | cut -d' ' -f1) == "$want" ]] || fail "downloaded file differs"
ok "3 parts over TLS, object and download identical"

check "b) no --cacert: the private CA's certificate is refused"
over_tls "$T/b1.log" send "$T/f.img" s3://tlsb/b.img
((RC == 77)) || fail_with_logs "send exit $RC, expected 77" "$T/b1.log"
grep -qi 'certificate' "$T/b1.log" || fail_with_logs "the refusal does not name the certificate" "$T/b1.log"
(($(pending_uploads tlsb) == 0)) || fail "an upload was started although the certificate was refused"
! awsc s3api head-object --bucket tlsb --key b.img >/dev/null 2>&1 || fail "an object was published"
over_tls "$T/b2.log" get s3://tlsb/f.img -o "$T/b.img"
((RC == 77)) || fail_with_logs "get exit $RC, expected 77" "$T/b2.log"
[[ ! -e $T/b.img && ! -e $T/b.img.sesscp.part ]] || fail "get wrote something after the refusal"
ok "77 both ways, nothing uploaded or written"

check "c) a CA that did not sign the server is refused"
make_cert "$T/other"
over_tls "$T/c.log" send "$T/f.img" s3://tlsb/c.img --cacert "$T/other/cert.pem"
((RC == 77)) || fail_with_logs "exit $RC, expected 77" "$T/c.log"
ok "77"
