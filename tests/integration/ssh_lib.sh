# shellcheck shell=bash disable=SC2034  # globals are used by the sourcing test scripts
# sesscp over SSH (docs/SSH.md): helpers for test_ssh*.sh (sourced after
# lib.sh and url_lib.sh). start_sshd gives a real OpenSSH server on a random
# loopback port; the remote sesscp is the binary under test, by its path.

# ssh_setup: start sshd; RSH is the -e command (non-default port, the test's
# key and known_hosts, never a prompt); REMOTE the remote-sesscp; HOST the
# [USER@]HOST of targets.
RSH="" HOST="" REMOTE=""
ssh_setup() {
  start_sshd
  RSH="ssh -p $SSHD_PORT -i $SSH_KEY -o UserKnownHostsFile=$KNOWN_HOSTS -o BatchMode=yes -o StrictHostKeyChecking=yes -o LogLevel=ERROR"
  HOST="root@127.0.0.1"
  REMOTE="$BIN"
}

# ssh_send LOG ARGS...: `sesscp send ARGS... -e RSH --remote-sesscp REMOTE`, foreground; SEND_RC.
ssh_send() {
  local logf=$1
  shift
  run_send "$logf" "$@" -e "$RSH" --remote-sesscp "$REMOTE"
}

# ssh_get LOG ARGS...: `sesscp get ARGS... -e RSH --remote-sesscp REMOTE`, foreground; GET_RC.
GET_RC=0
ssh_get() {
  local logf=$1
  shift
  GET_RC=0
  timeout -k 5 "$SESSCP_RUN_TIMEOUT" "$BIN" get "$@" -e "$RSH" --remote-sesscp "$REMOTE" 2>"$logf" || GET_RC=$?
  [[ $GET_RC -ne 124 && $GET_RC -ne 137 ]] || fail_with_logs "sesscp get did not finish within ${SESSCP_RUN_TIMEOUT}s" "$logf"
}

# remote_pids: this test's remote 'sesscp recv --stdio' processes (their
# --dir or --serve is under $T; another test's may run at the same time).
remote_pids() { pgrep -f -- "^$BIN recv --stdio --(dir|serve) $T/" || true; }

# local_ssh_pids PID: the ssh client processes that sesscp PID started.
local_ssh_pids() { pgrep -P "$1" -x ssh || true; }

# make_tree DIR: files of several sizes (0 bytes to a few chunks), odd
# modes and mtimes, a subdirectory, an empty one and a symlink.
make_tree() {
  local d=$1
  mkdir -p "$d/sub/deeper" "$d/empty"
  gen_file "$d/big.bin" $((5 * MiB + 123)) tree-big
  gen_file "$d/sub/mid.bin" $((300 * 1024)) tree-mid
  gen_file "$d/sub/deeper/small.txt" 17 tree-small
  : >"$d/zero"
  chmod 751 "$d/sub/mid.bin"
  chmod 600 "$d/sub/deeper/small.txt"
  ln -s sub/mid.bin "$d/link"
  touch -d '2003-04-05 06:07:08.5' "$d/big.bin" "$d/zero"
  touch -d '2012-12-12 12:12:12' "$d/sub/deeper/small.txt"
}
