#!/usr/bin/env bash
# Scenario: sesscp over SSH, no daemon (docs/SSH.md), against a real OpenSSH
# sshd started here on a random loopback port, with its own host key and a
# key made by the test; the remote sesscp is the binary under test.
#   a) push a file (HOST:PATH) and a tree (ssh://HOST:PORT/PATH, no -p in -e),
#      byte-identical with modes and mtimes; -v names the transport; a re-run
#      is already complete and sends nothing;
#   b) pull a file and a tree (get HOST:PATH, get HOST:PATH/), byte-identical
#      with modes and mtimes;
#   c) failures, each with its exit code and a line that says what to do:
#      no sesscp on the remote (69, names --remote-sesscp), a remote sesscp
#      that does not know --stdio (69), a remote shell that prints to stdout
#      (76, names the likely .bashrc), remote PATH not a directory (73),
#      wrong key (77), unknown host key (77), host unreachable (69), ssh not
#      installed (69), a malformed target or -o FILE for a pull (64); nothing
#      is left behind. (Option-like hosts: tests/test_ssh_target.cpp.)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
# shellcheck source-path=SCRIPTDIR source=ssh_lib.sh
. "$(dirname "$0")/ssh_lib.sh"
itest_init "$@"
unset SESSCP_KEY_FILE # SSH authenticates; the session needs no key of its own

ssh_setup
mkdir -p "$T/src" "$T/dst" "$T/pull"
gen_file "$T/src/data.bin" $((40 * MiB + 4097)) ssh-data
touch -d '2020-02-02 02:02:02.25' "$T/src/data.bin"
chmod 640 "$T/src/data.bin"
make_tree "$T/src/tree"

# ------------------------------------------------------------------ a
check "a) push a file to HOST:PATH"
ssh_send "$T/a1.log" "$T/src/data.bin" "$HOST:$T/dst" -v
assert_rc 0 "$SEND_RC" "send over ssh" "$T/a1.log"
assert_same "$T/src/data.bin" "$T/dst/data.bin"
[[ $(stat -c '%a %.9Y' "$T/dst/data.bin") == "$(stat -c '%a %.9Y' "$T/src/data.bin")" ]] ||
  fail "mode or mtime of data.bin differ: $(stat -c '%a %.9Y' "$T/dst/data.bin")"
ok "mode and mtime kept"
assert_no_leftovers "$T/dst" data.bin
assert_contains "$T/a1.log" "transport: ssh root@127.0.0.1:$T/dst" "-v names the transport"
assert_contains "$T/a1.log" "the receiver confirms a session over its stdio" "the handshake confirms it"
[[ -z $(remote_pids) ]] || fail "a remote sesscp is still running after the session: $(remote_pids)"
ok "no remote sesscp left running"

check "a) the same command again: already complete, nothing sent"
ssh_send "$T/a2.log" "$T/src/data.bin" "$HOST:$T/dst"
assert_rc 0 "$SEND_RC" "re-run" "$T/a2.log"
last_summary "$T/a2.log" send data.bin
[[ $S_STATE == "already complete" && $S_N -eq 0 ]] || fail_with_logs "re-run: $S_STATE, $S_N bytes sent" "$T/a2.log"
ok "re-run: already complete, 0 bytes sent"

check "a) push a tree to ssh://HOST:PORT/PATH (the port in the URL, not in -e)"
mkdir -p "$T/dst/tree"
RSH_NO_PORT="ssh -i $SSH_KEY -o UserKnownHostsFile=$KNOWN_HOSTS -o BatchMode=yes -o LogLevel=ERROR"
run_send "$T/a3.log" "$T/src/tree/" "ssh://root@127.0.0.1:$SSHD_PORT$T/dst/tree" -e "$RSH_NO_PORT" --remote-sesscp "$REMOTE"
assert_rc 0 "$SEND_RC" "tree over ssh://" "$T/a3.log"
assert_same_tree "$T/src/tree" "$T/dst/tree" "pushed tree"

# ------------------------------------------------------------------ b
check "b) pull a file: get HOST:PATH -o DIR"
ssh_get "$T/b1.log" "$HOST:$T/src/data.bin" -o "$T/pull"
assert_rc 0 "$GET_RC" "get over ssh" "$T/b1.log"
assert_same "$T/src/data.bin" "$T/pull/data.bin"
[[ $(stat -c '%a %.9Y' "$T/pull/data.bin") == "$(stat -c '%a %.9Y' "$T/src/data.bin")" ]] ||
  fail "pulled data.bin: mode or mtime differ"
ok "mode and mtime kept"
assert_no_leftovers "$T/pull" data.bin

check "b) pull a tree's contents: get HOST:PATH/ -o NEWDIR/"
ssh_get "$T/b2.log" "$HOST:$T/src/tree/" -o "$T/pull/tree/"
assert_rc 0 "$GET_RC" "get tree over ssh" "$T/b2.log"
assert_same_tree "$T/src/tree" "$T/pull/tree" "pulled tree"

check "b) pull a directory by name (no slash): it lands as DIR/NAME"
ssh_get "$T/b3.log" "$HOST:$T/src/tree" -o "$T/pull-named/"
assert_rc 0 "$GET_RC" "get directory over ssh" "$T/b3.log"
assert_same_tree "$T/src/tree" "$T/pull-named/tree" "pulled directory"

# ------------------------------------------------------------------ c
# expect_fail LOG RC PATTERN WHAT: the last command exited RC and LOG's error line matches PATTERN.
expect_fail() {
  local logf=$1 want=$2 pattern=$3 what=$4 rc=${SEND_RC}
  [[ ${5:-send} == get ]] && rc=$GET_RC
  assert_rc "$want" "$rc" "$what" "$logf"
  grep -E '^sesscp: error: ' "$logf" | grep -qE -- "$pattern" || fail_with_logs "$what: no error line matching '$pattern'" "$logf"
  ok "$what: $(grep -E '^sesscp: error: ' "$logf" | tail -n 1 | cut -c1-200)"
}

check "c) no sesscp on the remote host"
run_send "$T/c1.log" "$T/src/data.bin" "$HOST:$T/dst/none" -e "$RSH" --remote-sesscp /nonexistent/sesscp
expect_fail "$T/c1.log" 69 "no usable sesscp on 127.0.0.1.*--remote-sesscp" "remote without sesscp"
grep -q "/nonexistent/sesscp recv --stdio" "$T/c1.log" || fail_with_logs "the error does not name the remote command" "$T/c1.log"
ok "the error names the remote command"

check "c) a remote sesscp that does not know --stdio (an older version)"
cat >"$T/old-sesscp" <<'OLD'
#!/bin/sh
echo "sesscp: error: bad command line for 'sesscp recv' (The following argument was not expected: --stdio); run 'sesscp recv --help'" >&2
exit 64
OLD
chmod +x "$T/old-sesscp"
run_send "$T/c2.log" "$T/src/data.bin" "$HOST:$T/dst" -e "$RSH" --remote-sesscp "$T/old-sesscp"
expect_fail "$T/c2.log" 69 "did not take.*too old.*--remote-sesscp" "old remote sesscp"

check "c) a remote login that prints to stdout (a chatty .bashrc) corrupts the channel"
printf '#!/bin/sh\necho "Welcome to the machine"\nexec %s "$@"\n' "$BIN" >"$T/chatty-sesscp"
chmod +x "$T/chatty-sesscp"
run_send "$T/c2b.log" "$T/src/data.bin" "$HOST:$T/dst/chatty" -e "$RSH" --remote-sesscp "$T/chatty-sesscp"
expect_fail "$T/c2b.log" 76 "print to stdout, e.g. *from .bashrc" "chatty remote shell"

check "c) remote PATH is not a directory / cannot be written"
ssh_send "$T/c3.log" "$T/src/data.bin" "$HOST:$T/src/data.bin"
expect_fail "$T/c3.log" 73 "on 127.0.0.1: cannot open directory" "remote path is a file"
ssh_send "$T/c4.log" "$T/src/data.bin" "$HOST:$T/no/such/dir"
expect_fail "$T/c4.log" 73 "cannot open directory $T/no/such/dir" "remote path missing"

check "c) wrong key"
ssh-keygen -q -t ed25519 -N '' -f "$T/wrong_key"
run_send "$T/c5.log" "$T/src/data.bin" "$HOST:$T/dst" --remote-sesscp "$REMOTE" \
  -e "ssh -p $SSHD_PORT -i $T/wrong_key -o IdentitiesOnly=yes -o UserKnownHostsFile=$KNOWN_HOSTS -o BatchMode=yes"
expect_fail "$T/c5.log" 77 "Permission denied" "wrong key"

check "c) unknown host key"
: >"$T/empty_known_hosts"
run_send "$T/c6.log" "$T/src/data.bin" "$HOST:$T/dst" --remote-sesscp "$REMOTE" \
  -e "ssh -p $SSHD_PORT -i $SSH_KEY -o UserKnownHostsFile=$T/empty_known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
expect_fail "$T/c6.log" 77 "Host key verification failed" "unknown host key"

check "c) changed host key"
ssh-keygen -q -t ed25519 -N '' -f "$T/other_host_key"
printf '[127.0.0.1]:%s %s\n' "$SSHD_PORT" "$(cut -d' ' -f1,2 "$T/other_host_key.pub")" >"$T/changed_known_hosts"
run_send "$T/c7.log" "$T/src/data.bin" "$HOST:$T/dst" --remote-sesscp "$REMOTE" \
  -e "ssh -p $SSHD_PORT -i $SSH_KEY -o UserKnownHostsFile=$T/changed_known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
expect_fail "$T/c7.log" 77 "REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed" "changed host key"

check "c) host unreachable (nothing listens on the port)"
dead=$(free_port)
run_send "$T/c8.log" "$T/src/data.bin" "$HOST:$T/dst" --remote-sesscp "$REMOTE" \
  -e "ssh -p $dead -i $SSH_KEY -o UserKnownHostsFile=$KNOWN_HOSTS -o BatchMode=yes"
expect_fail "$T/c8.log" 69 "Connection refused" "unreachable"

check "c) ssh not installed (or -e names a missing program)"
run_send "$T/c9.log" "$T/src/data.bin" "$HOST:$T/dst" -e "/nonexistent/ssh -p 1"
expect_fail "$T/c9.log" 69 "not found: install openssh-client" "no ssh"

check "c) malformed targets are usage errors"
run_send "$T/c10.log" "$T/src/data.bin" "me@:/tmp"
expect_fail "$T/c10.log" 64 "bad SSH target 'me@:/tmp' \\(no host\\)" "no host"
ssh_get "$T/c11.log" "$HOST:$T/src/data.bin" -o "$T/pull/data.bin"
expect_fail "$T/c11.log" 64 "is not a directory" "get -o FILE over ssh" get
[[ -z $(remote_pids) ]] || fail "remote sesscp processes left: $(remote_pids)"
[[ ! -e $T/dst/none ]] || fail "a failed push created $T/dst/none"
ok "no remote process and no file left by the failures"
