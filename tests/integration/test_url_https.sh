#!/usr/bin/env bash
# Scenario: `sesscp get https://...` from a local nginx with a self-signed
# certificate made by openssl. Certificates are checked by default: the
# download is refused (exit 77, nothing written under the name), accepted
# with --cacert CERT, and with --insecure only after a warning.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
itest_init "$@"

start_nginx 8m
url="https://127.0.0.1:$NGINX_TLS_PORT/f/tls.bin"
out="$T/out"
mkdir -p "$out"
gen_file "$WWW/tls.bin" $((8 * MiB + 77)) url-https

check "an untrusted certificate is refused by default"
run_get "$T/get-default.log" "$url" -o "$out/tls.bin"
assert_rc 77 "$GET_RC" "self-signed certificate, no --cacert" "$T/get-default.log"
sed 's/^/    /' "$T/get-default.log"
assert_contains "$T/get-default.log" "authentication failed" "refusal"
grep -qi "certificate" "$T/get-default.log" || fail_with_logs "the refusal does not mention the certificate" "$T/get-default.log"
[[ ! -e $out/tls.bin ]] || fail "a file exists under the final name after the refusal"
[[ ! -e $out/tls.bin.sesscp.part && ! -e $out/tls.bin.sesscp.journal ]] || fail "a part or journal was left although the certificate was refused"
ok "nothing written"

check "--cacert with the server's certificate is accepted"
run_get "$T/get-cacert.log" "$url" -o "$out/tls.bin" --cacert "$T/tls/cert.pem"
assert_rc 0 "$GET_RC" "--cacert" "$T/get-cacert.log"
assert_same "$WWW/tls.bin" "$out/tls.bin"
assert_no_leftovers "$out" tls.bin

check "--insecure works and says so"
run_get "$T/get-insecure.log" "$url" -o "$out/tls2.bin" --insecure
assert_rc 0 "$GET_RC" "--insecure" "$T/get-insecure.log"
assert_contains "$T/get-insecure.log" "WARNING: --insecure" "warning"
assert_same "$WWW/tls.bin" "$out/tls2.bin"

check "a CA file that did not sign the server is refused"
make_cert "$T/other"
run_get "$T/get-other.log" "$url" -o "$out/tls3.bin" --cacert "$T/other/cert.pem"
assert_rc 77 "$GET_RC" "--cacert of another CA" "$T/get-other.log"
log "PASS"
