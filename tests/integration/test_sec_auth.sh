#!/usr/bin/env bash
# Security: authentication. keygen output; wrong key, no key, TLS against
# plaintext and plaintext against TLS all end with exit 77 on both sides and
# write nothing; a key file readable by others and a missing security option
# are usage errors (64) before any connection; certificates (CA, pinned
# fingerprints) work, and a wrong pin or an untrusted client certificate is
# refused with 77. Banners name the security mode (TLS 1.3 / PLAINTEXT).
# Nothing is ever written outside --dir: every --dir lives in a parent
# directory with a sentinel file, and the parent's listing (with content
# hashes) is compared before and after.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

command -v openssl >/dev/null 2>&1 || skip "the openssl CLI is needed to make test certificates"

name=payload.bin
src="$T/src"
mkdir -p "$src"
gen_file "$src/$name" $((3 * MiB + 12345)) sec-auth
keyA=$SESSCP_KEY_FILE

# ------------------------------------------------------------------ helpers


# new_case LABEL: a fresh parent/{sentinel,dest}; sets P (parent), D (dest)
# and saves the parent's listing.
CASE_N=0
P="" D=""
new_case() {
  CASE_N=$((CASE_N + 1))
  P="$T/case$CASE_N-$1"
  D="$P/dest"
  mkdir -p "$D"
  printf 'sentinel %s\n' "$1" >"$P/sentinel"
  parent_listing "$P" "$D" >"$P.before"
}

# assert_case_parent_unchanged: nothing outside --dir was created, changed or removed.
assert_case_parent_unchanged() {
  parent_listing "$P" "$D" >"$P.after"
  if ! diff -u "$P.before" "$P.after" >"$P.diff"; then
    show_log "$P.diff" "parent listing diff"
    fail "something outside --dir changed in $P"
  fi
  ok "parent directory unchanged outside --dir ($(wc -l <"$P.before") entries compared)"
}

# assert_dir_empty: --dir holds nothing at all (no .part, no journal).
assert_dir_empty() {
  local left
  left=$(find "$D" -mindepth 1 -printf '%P (%y)\n')
  [[ -z $left ]] || fail "--dir is not empty after a refused session: $left"
  ok "--dir is empty (no file, no .sesscp.part, no .sesscp.journal)"
}

# recv_once_result LOG: wait (max 30 s) for the --once receiver and set RRC.
RRC=0
recv_once_result() {
  wait_exit "$RECV_PID" 30 || fail_with_logs "--once receiver still running 30 s after the sender ended" "$1"
  RRC=$WAIT_RC
}

# ------------------------------------------------------------------- keygen

check "keygen -o FILE: mode 0600, format 'sesscp-psk-v1 HEX', refuses to overwrite"
kf="$T/k1.key"
rc=0
"$BIN" keygen -o "$kf" 2>"$T/keygen1.log" || rc=$?
assert_rc 0 "$rc" "keygen -o" "$T/keygen1.log"
mode=$(stat -c %a "$kf")
[[ $mode == 600 ]] || fail "key file mode $mode, expected 600"
ok "key file mode 0$mode"
content=$(cat "$kf")
[[ $content =~ ^sesscp-psk-v1\ [0-9a-f]{64}$ ]] ||
  [[ $content =~ ^sesscp-psk-v1\ [0-9a-fA-F]{32,}$ ]] || fail "key file content '$content' is not 'sesscp-psk-v1 HEX'"
[[ $(wc -l <"$kf") -eq 1 ]] || fail "key file has $(wc -l <"$kf") lines, expected 1"
ok "content: 'sesscp-psk-v1' + ${#content} chars total ($(((${#content} - 14) / 2))-byte key)"
sum_before=$(sha "$kf")
rc=0
"$BIN" keygen -o "$kf" 2>"$T/keygen2.log" || rc=$?
assert_rc 64 "$rc" "keygen -o over an existing file" "$T/keygen2.log"
[[ $(sha "$kf") == "$sum_before" ]] || fail "keygen overwrote an existing key file"
ok "existing key file left unchanged"
# umask must not matter
rc=0
(umask 000 && "$BIN" keygen -o "$T/k-umask.key") 2>"$T/keygen3.log" || rc=$?
assert_rc 0 "$rc" "keygen -o under umask 000" "$T/keygen3.log"
[[ $(stat -c %a "$T/k-umask.key") == 600 ]] || fail "keygen under umask 000 made mode $(stat -c %a "$T/k-umask.key")"
ok "mode 0600 under umask 000 too"

check "keygen without -o prints a key to stdout (and two keys differ)"
rc=0
k1=$("$BIN" keygen 2>"$T/keygen4.log") || rc=$?
assert_rc 0 "$rc" "keygen (stdout)" "$T/keygen4.log"
k2=$("$BIN" keygen 2>/dev/null)
[[ $k1 =~ ^sesscp-psk-v1\ [0-9a-fA-F]{32,}$ ]] || fail "keygen stdout '$k1' is not 'sesscp-psk-v1 HEX'"
[[ $k1 != "$k2" ]] || fail "two keygen runs printed the same key"
ok "stdout key well formed; two runs differ"
# A printed key works as a key file once stored with mode 0600.
(umask 077 && printf '%s\n' "$k1" >"$T/k-stdout.key")

"$BIN" keygen -o "$T/keyB" >/dev/null 2>&1 || fail "keygen keyB"
keyB="$T/keyB"

# ------------------------------------------------------------ wrong keys etc

check "wrong key: receiver --key-file A, sender --key-file B: both exit 77, nothing written"
new_case wrongkey
start_recv "$D" "$T/r-wrongkey.log" --once --key-file "$keyA"
run_send "$T/s-wrongkey.log" "$src/$name" "127.0.0.1:$RECV_PORT" --key-file "$keyB"
recv_once_result "$T/r-wrongkey.log"
log "sender exit $SEND_RC, receiver exit $RRC; sender: $(grep -m1 'error' "$T/s-wrongkey.log" || true)"
assert_rc 77 "$SEND_RC" "sender with the wrong key" "$T/s-wrongkey.log" "$T/r-wrongkey.log"
assert_rc 77 "$RRC" "receiver facing the wrong key" "$T/r-wrongkey.log"
assert_contains "$T/s-wrongkey.log" "key mismatch" "sender message"
assert_contains "$T/r-wrongkey.log" "authentication failed" "receiver log"
grep -E 'refused: authentication failed' "$T/r-wrongkey.log" | sed 's/^/    /' || true
assert_dir_empty
assert_case_parent_unchanged

check "key printed by 'keygen' (stdout) works when stored, mode 0600 (positive control)"
new_case stdoutkey
start_recv "$D" "$T/r-stdoutkey.log" --once --key-file "$T/k-stdout.key"
run_send "$T/s-stdoutkey.log" "$src/$name" "127.0.0.1:$RECV_PORT" --key-file "$T/k-stdout.key"
recv_once_result "$T/r-stdoutkey.log"
assert_rc 0 "$SEND_RC" "sender with the stored stdout key" "$T/s-stdoutkey.log" "$T/r-stdoutkey.log"
assert_rc 0 "$RRC" "receiver with the stored stdout key" "$T/r-stdoutkey.log"
assert_same "$src/$name" "$D/$name"
assert_case_parent_unchanged

check "no key: sender --insecure against a TLS receiver: both exit 77, nothing written"
new_case nokey
start_recv "$D" "$T/r-nokey.log" --once
run_send "$T/s-nokey.log" "$src/$name" "127.0.0.1:$RECV_PORT" --insecure
recv_once_result "$T/r-nokey.log"
log "sender exit $SEND_RC, receiver exit $RRC"
sed 's/^/    sender: /' "$T/s-nokey.log"
assert_rc 77 "$SEND_RC" "--insecure sender against a TLS receiver" "$T/s-nokey.log" "$T/r-nokey.log"
assert_rc 77 "$RRC" "TLS receiver facing a plaintext sender" "$T/r-nokey.log"
if ! grep -qE 'TLS' "$T/s-nokey.log" || ! grep -qF -- '--insecure' "$T/s-nokey.log"; then
  fail_with_logs "sender message does not name TLS and --insecure" "$T/s-nokey.log"
fi
ok "sender message names TLS and --insecure"
assert_contains "$T/r-nokey.log" "authentication failed" "receiver log"
assert_dir_empty
assert_case_parent_unchanged

check "TLS sender against an --insecure receiver: both exit 77, nothing written"
new_case tls2plain
start_recv "$D" "$T/r-tls2plain.log" --once --insecure
run_send "$T/s-tls2plain.log" "$src/$name" "127.0.0.1:$RECV_PORT"
recv_once_result "$T/r-tls2plain.log"
log "sender exit $SEND_RC, receiver exit $RRC"
sed 's/^/    sender: /' "$T/s-tls2plain.log"
assert_rc 77 "$SEND_RC" "TLS sender against a plaintext receiver" "$T/s-tls2plain.log" "$T/r-tls2plain.log"
if ! grep -qF -- '--insecure' "$T/s-tls2plain.log"; then
  log "NOTE: the sender's message does not suggest that the receiver runs with --insecure"
fi
assert_rc 77 "$RRC" "--insecure receiver facing a TLS sender" "$T/r-tls2plain.log"
assert_contains "$T/r-tls2plain.log" "authentication failed" "receiver log"
assert_dir_empty
assert_case_parent_unchanged

check "key file mode 0644: exit 64 naming 'chmod 600', before any connection"
cp "$keyA" "$T/k644.key"
chmod 644 "$T/k644.key"
# Port 1 on loopback: nothing listens there; a client that tried to connect
# would exit 69 (unreachable), so 64 proves the check comes first.
run_send "$T/s-k644.log" "$src/$name" 127.0.0.1:1 --key-file "$T/k644.key"
sed 's/^/    /' "$T/s-k644.log"
assert_rc 64 "$SEND_RC" "send with a 0644 key file" "$T/s-k644.log"
assert_contains "$T/s-k644.log" "chmod 600" "sender message"
new_case k644
rc=0
timeout -k 5 20 "$BIN" recv --listen 127.0.0.1:0 --dir "$D" --once --key-file "$T/k644.key" 2>"$T/r-k644.log" || rc=$?
assert_rc 64 "$rc" "recv with a 0644 key file" "$T/r-k644.log"
assert_contains "$T/r-k644.log" "chmod 600" "receiver message"
if grep -q 'listening on' "$T/r-k644.log"; then fail_with_logs "receiver listened with a 0644 key file" "$T/r-k644.log"; fi
ok "receiver never listened"
chmod 640 "$T/k644.key"
run_send "$T/s-k640.log" "$src/$name" 127.0.0.1:1 --key-file "$T/k644.key"
assert_rc 64 "$SEND_RC" "send with a 0640 key file (group-readable)" "$T/s-k640.log"
assert_dir_empty
assert_case_parent_unchanged

check "missing key file: exit 64"
run_send "$T/s-kmissing.log" "$src/$name" 127.0.0.1:1 --key-file "$T/does-not-exist.key"
sed 's/^/    /' "$T/s-kmissing.log"
assert_rc 64 "$SEND_RC" "send with a missing key file" "$T/s-kmissing.log"

check "no security option at all (SESSCP_KEY_FILE unset): exit 64, message lists the options"
rc=0
env -u SESSCP_KEY_FILE timeout -k 5 20 "$BIN" send "$src/$name" 127.0.0.1:1 2>"$T/s-nosec.log" || rc=$?
sed 's/^/    /' "$T/s-nosec.log"
assert_rc 64 "$rc" "send without any security option" "$T/s-nosec.log"
for opt in --key-file --cert --insecure; do assert_contains "$T/s-nosec.log" "$opt" "send message"; done
new_case nosec
rc=0
env -u SESSCP_KEY_FILE timeout -k 5 20 "$BIN" recv --listen 127.0.0.1:0 --dir "$D" --once 2>"$T/r-nosec.log" || rc=$?
assert_rc 64 "$rc" "recv without any security option" "$T/r-nosec.log"
for opt in --key-file --cert --insecure; do assert_contains "$T/r-nosec.log" "$opt" "recv message"; done
assert_dir_empty
assert_case_parent_unchanged

# ----------------------------------------------------------------- banners

check "banners: a shared-key receiver says TLS 1.3; an --insecure receiver says PLAINTEXT"
new_case banner-tls
start_recv "$D" "$T/r-banner-tls.log" --once
run_send "$T/s-banner-tls.log" "$src/$name" "127.0.0.1:$RECV_PORT"
recv_once_result "$T/r-banner-tls.log"
assert_rc 0 "$SEND_RC" "TLS (shared key) send" "$T/s-banner-tls.log" "$T/r-banner-tls.log"
assert_rc 0 "$RRC" "TLS (shared key) receiver" "$T/r-banner-tls.log"
assert_same "$src/$name" "$D/$name"
grep -m1 'listening on' "$T/r-banner-tls.log" | sed 's/^/    /'
grep -m1 'listening on' "$T/r-banner-tls.log" | grep -qF 'TLS 1.3' ||
  fail_with_logs "TLS receiver banner does not say 'TLS 1.3'" "$T/r-banner-tls.log"
ok "TLS receiver banner says TLS 1.3"
if grep -m1 'listening on' "$T/r-banner-tls.log" | grep -qi 'plaintext'; then
  fail_with_logs "TLS receiver banner mentions plaintext" "$T/r-banner-tls.log"
fi
assert_case_parent_unchanged

new_case banner-plain
start_recv "$D" "$T/r-banner-plain.log" --once --insecure
run_send "$T/s-banner-plain.log" "$src/$name" "127.0.0.1:$RECV_PORT" --insecure
recv_once_result "$T/r-banner-plain.log"
assert_rc 0 "$SEND_RC" "plaintext send" "$T/s-banner-plain.log" "$T/r-banner-plain.log"
assert_rc 0 "$RRC" "plaintext receiver" "$T/r-banner-plain.log"
assert_same "$src/$name" "$D/$name"
grep -m1 'listening on' "$T/r-banner-plain.log" | sed 's/^/    /'
grep -m1 'listening on' "$T/r-banner-plain.log" | grep -qF 'PLAINTEXT' ||
  fail_with_logs "--insecure receiver banner does not say 'PLAINTEXT'" "$T/r-banner-plain.log"
ok "--insecure receiver banner says PLAINTEXT"
assert_contains "$T/s-banner-plain.log" "plaintext" "--insecure sender warning"
assert_case_parent_unchanged

# ------------------------------------------------------------- certificates

check "make test certificates with openssl: CA, server (SAN IP:127.0.0.1), client, unrelated self-signed"
C="$T/certs"
mkdir -p "$C"
(
  cd "$C"
  umask 077
  exec 2>"$C/openssl.log"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=sesscp test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
  openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=sesscp test client"
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext
  openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1"
) || fail_with_logs "openssl could not make the test certificates" "$C/openssl.log"
for f in ca server client rogue; do [[ -s $C/$f.pem && -s $C/$f.key ]] || fail "missing $C/$f.pem or .key"; done
openssl verify -CAfile "$C/ca.pem" "$C/server.pem" "$C/client.pem" | sed 's/^/    /'
fp_of() { openssl x509 -noout -fingerprint -sha256 -in "$1" | sed 's/^.*=//'; }
fp_server_colons=$(fp_of "$C/server.pem")                       # AB:CD:... (uppercase, colons)
fp_client_plain=$(fp_of "$C/client.pem" | tr -d ':' | tr 'A-F' 'a-f') # abcd... (lowercase, no colons)
fp_rogue_plain=$(fp_of "$C/rogue.pem" | tr -d ':')
log "server fingerprint sha256:$fp_server_colons"
log "client fingerprint sha256:$fp_client_plain"
ok "certificates made"

# The certificate runs must not also carry the shared key from the environment.
unset SESSCP_KEY_FILE
srv_ca=(--cert "$C/server.pem" --key "$C/server.key" --ca "$C/ca.pem")
cli_ca=(--cert "$C/client.pem" --key "$C/client.key" --ca "$C/ca.pem")

check "(i) --cert/--key --ca on both sides: transfer succeeds, byte-identical, banner says TLS 1.3"
new_case ca
start_recv "$D" "$T/r-ca.log" --once "${srv_ca[@]}"
run_send "$T/s-ca.log" "$src/$name" "127.0.0.1:$RECV_PORT" "${cli_ca[@]}"
recv_once_result "$T/r-ca.log"
assert_rc 0 "$SEND_RC" "sender with CA-checked certificates" "$T/s-ca.log" "$T/r-ca.log"
assert_rc 0 "$RRC" "receiver with CA-checked certificates" "$T/r-ca.log"
assert_same "$src/$name" "$D/$name"
assert_no_leftovers "$D" "$name"
grep -m1 'listening on' "$T/r-ca.log" | sed 's/^/    /'
assert_contains "$T/r-ca.log" "TLS 1.3" "receiver banner"
assert_case_parent_unchanged

check "(ii) --peer-fingerprint on both sides (colon/uppercase and plain/lowercase forms): succeeds"
new_case pin
start_recv "$D" "$T/r-pin.log" --once --cert "$C/server.pem" --key "$C/server.key" \
  --peer-fingerprint "sha256:$fp_client_plain"
run_send "$T/s-pin.log" "$src/$name" "127.0.0.1:$RECV_PORT" --cert "$C/client.pem" --key "$C/client.key" \
  --peer-fingerprint "sha256:$fp_server_colons"
recv_once_result "$T/r-pin.log"
assert_rc 0 "$SEND_RC" "sender with pinned fingerprints" "$T/s-pin.log" "$T/r-pin.log"
assert_rc 0 "$RRC" "receiver with pinned fingerprints" "$T/r-pin.log"
assert_same "$src/$name" "$D/$name"
assert_contains "$T/r-pin.log" "TLS 1.3" "receiver banner"
assert_case_parent_unchanged

check "(iii) sender pins a wrong fingerprint: sender exits 77 naming the fingerprint, nothing written"
new_case badpin
start_recv "$D" "$T/r-badpin.log" --once --cert "$C/server.pem" --key "$C/server.key" \
  --peer-fingerprint "sha256:$fp_client_plain"
run_send "$T/s-badpin.log" "$src/$name" "127.0.0.1:$RECV_PORT" --cert "$C/client.pem" --key "$C/client.key" \
  --peer-fingerprint "sha256:$fp_rogue_plain"
recv_once_result "$T/r-badpin.log"
log "sender exit $SEND_RC, receiver exit $RRC"
sed 's/^/    sender: /' "$T/s-badpin.log"
assert_rc 77 "$SEND_RC" "sender pinning a wrong fingerprint" "$T/s-badpin.log" "$T/r-badpin.log"
assert_contains "$T/s-badpin.log" "fingerprint" "sender message"
((RRC != 0)) || fail_with_logs "receiver exited 0 although the sender rejected it" "$T/r-badpin.log"
ok "receiver exit $RRC (non-zero)"
assert_dir_empty
assert_case_parent_unchanged

check "(iv) sender presents an unrelated self-signed certificate to a --ca receiver: both exit 77"
new_case rogue
start_recv "$D" "$T/r-rogue.log" --once "${srv_ca[@]}"
run_send "$T/s-rogue.log" "$src/$name" "127.0.0.1:$RECV_PORT" --cert "$C/rogue.pem" --key "$C/rogue.key" \
  --ca "$C/ca.pem"
recv_once_result "$T/r-rogue.log"
log "sender exit $SEND_RC, receiver exit $RRC"
sed 's/^/    sender: /' "$T/s-rogue.log"
sed 's/^/    receiver: /' "$T/r-rogue.log"
assert_dir_empty
assert_case_parent_unchanged
assert_rc 77 "$RRC" "--ca receiver facing an untrusted client certificate" "$T/r-rogue.log"
assert_contains "$T/r-rogue.log" "authentication failed" "receiver log"
# Last on purpose: in TLS 1.3 the client finishes its handshake before the
# server has judged the client certificate, so the sender only learns of the
# refusal when it next reads or writes; it must still say "authentication
# failed" (77), not "connection lost, re-run to resume" (75).
assert_rc 77 "$SEND_RC" "sender whose certificate the receiver does not trust" "$T/s-rogue.log" "$T/r-rogue.log"
assert_contains "$T/s-rogue.log" "authentication failed" "sender message"

export SESSCP_KEY_FILE="$keyA"

log "PASS"
