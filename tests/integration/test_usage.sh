#!/usr/bin/env bash
# Scenario: exit codes for bad invocations. 64 for usage errors (no args,
# unknown option, missing source file, bad HOST:PORT, --chunk-size 0, a bad
# --retry or --retry-for); 69 when
# nothing listens on the port; `recv --dir /nonexistent` 73 or 64.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

gen_file "$T/src.bin" $((1 * MiB)) usage
mkdir -p "$T/dest"
start_recv "$T/dest" "$T/recv.log"
rpid=$RECV_PID
addr="127.0.0.1:$RECV_PORT"

RC=0
# expect WANT DESCRIPTION ARGS...: run sesscp ARGS... (bounded) and check its
# exit status; stderr must say something.
n=0
expect() {
  local want=$1 what=$2 out
  shift 2
  n=$((n + 1))
  out="$T/usage-$n.log"
  RC=0
  timeout -k 5 30 "$BIN" "$@" >"$out" 2>&1 </dev/null || RC=$?
  log "$what: sesscp $* -> exit $RC; first line: $(head -n 1 "$out")"
  [[ $RC -ne 124 ]] || fail "$what: sesscp did not exit within 30 s"
  [[ $RC -eq $want ]] || fail_with_logs "$what: exit $RC, expected $want" "$out"
  [[ -s $out ]] || fail "$what: exit $RC without any message"
  ok "$what: exit $want"
}

check "usage errors exit 64"
expect 64 "no arguments"
expect 64 "unknown subcommand" frobnicate
expect 64 "send: unknown option" send "$T/src.bin" "$addr" --no-such-option
expect 64 "recv: unknown option" recv --listen 127.0.0.1:0 --dir "$T/dest" --no-such-option
expect 64 "send: missing source file" send "$T/does-not-exist.bin" "$addr"
grep -q '^sesscp: error: ' "$T/usage-$n.log" || fail "missing source file: no 'sesscp: error: ' line"
expect 64 "send: HOST:PORT without a port" send "$T/src.bin" nohost
expect 64 "send: port out of range" send "$T/src.bin" h:99999
expect 64 "send: --chunk-size 0" send "$T/src.bin" "$addr" --chunk-size 0
expect 64 "send: --retry-for 0" send "$T/src.bin" "$addr" --retry-for 0
expect 64 "send: --retry-for 2x" send "$T/src.bin" "$addr" --retry-for 2x
expect 64 "send: --retry -1" send "$T/src.bin" "$addr" --retry -1
[[ ! -e $T/dest/src.bin && ! -e $T/dest/src.bin.sesscp.part ]] || fail "a rejected invocation created files in the destination"
ok "no rejected invocation reached the receiver's directory"

check "nothing listening on the port: exit 69"
mkdir -p "$T/dest2"
start_recv "$T/dest2" "$T/recv2.log"
dead_port=$RECV_PORT
kill9 "$RECV_PID"
log "port $dead_port was bound by a receiver that is now killed"
expect 69 "send: connection refused" send "$T/src.bin" "127.0.0.1:$dead_port"
grep -q '^sesscp: error: ' "$T/usage-$n.log" || fail "connection refused: no 'sesscp: error: ' line"

check "recv into a directory that does not exist: exit 73 or 64"
RC=0
timeout -k 5 30 "$BIN" recv --listen 127.0.0.1:0 --dir /nonexistent/sesscp-test --once >"$T/nodir.log" 2>&1 </dev/null || RC=$?
log "recv --dir /nonexistent/sesscp-test -> exit $RC; first line: $(head -n 1 "$T/nodir.log")"
case $RC in
  73) ok "exit 73 (cannot create output)" ;;
  64) ok "exit 64 (usage error)" ;;
  124) fail "recv --dir /nonexistent did not exit within 30 s (is it listening anyway?)" ;;
  *) fail_with_logs "recv --dir /nonexistent: exit $RC, expected 73 or 64" "$T/nodir.log" ;;
esac

is_running "$rpid" || fail_with_logs "receiver died" "$T/recv.log"
log "PASS"
