#!/usr/bin/env bash
# Scenario: interrupted transfers over SSH resume (docs/SSH.md), against a
# real sshd on a random loopback port:
#   a) one 48 MiB push, throttled, killed three times: kill -9 of the local
#      sesscp (~25 %), of its ssh client (~50 %: exit 75), of the remote
#      sesscp (~75 %: exit 75); after each only the .part and .journal exist;
#      the same command then completes; offsets strictly increase; bytes
#      received again after each kill <= chunk + window; byte-identical;
#   b) --retry across dropped connections (sshd's session processes killed):
#      one process reconnects with a new ssh and completes;
#   c) --streams 4 over four SSH connections: killed at ~50 %, resumed with
#      --streams 4, byte-identical, re-sent bytes bounded;
#   d) a pull (get HOST:PATH) killed at ~50 % resumes from the local journal.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
# shellcheck source-path=SCRIPTDIR source=ssh_lib.sh
. "$(dirname "$0")/ssh_lib.sh"
itest_init "$@"
unset SESSCP_KEY_FILE

ssh_setup
# The remote sesscp's stderr (its summary lines) goes to a file of ours.
cat >"$T/remote-sesscp" <<WRAP
#!/bin/sh
exec "$BIN" "\$@" 2>>"$T/remote.err"
WRAP
chmod +x "$T/remote-sesscp"
REMOTE="$T/remote-sesscp"

name=data.bin
size=$((48 * MiB))
chunk=$((256 * 1024))
window=$((4 * MiB))
rate=$((8 * MiB))
opts=(--chunk-size 256K --window 4M)
mkdir -p "$T/src" "$T/dst"
gen_file "$T/src/$name" "$size" ssh-resume
part="$T/dst/$name.sesscp.part"

# wait_remote_gone SECS: the remote sesscp processes have exited.
wait_remote_gone() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    [[ -z $(remote_pids) ]] && return 0
    sleep 0.1
  done
  fail "remote sesscp still running after $1 s: $(remote_pids)"
}

# ------------------------------------------------------------------ a
declare -a written=()
prev=0
run=0
for victim in local ssh remote; do
  run=$((run + 1))
  target=$((size * (run * 25) / 100))
  check "a) run $run: kill -9 the $victim process at ~$((run * 25)) %"
  start_send "$T/a$run.log" "$T/src/$name" "$HOST:$T/dst" "${opts[@]}" --bwlimit 8M -e "$RSH" --remote-sesscp "$REMOTE"
  wait_progress "$part" "$target" "$SEND_PID" "$rate" "$prev" 120
  case $victim in
  local) kill9 "$SEND_PID" ;;
  ssh)
    pids=$(local_ssh_pids "$SEND_PID")
    [[ -n $pids ]] || fail "no ssh child of sesscp $SEND_PID"
    # shellcheck disable=SC2086
    kill -9 $pids
    ;;
  remote)
    pids=$(remote_pids)
    [[ -n $pids ]] || fail "no remote sesscp running"
    # shellcheck disable=SC2086
    kill -9 $pids
    ;;
  esac
  if [[ $victim != local ]]; then
    wait_exit "$SEND_PID" 30 || fail_with_logs "sender still running 30 s after its $victim process was killed" "$T/a$run.log"
    unregister "$SEND_PID"
    assert_rc 75 "$WAIT_RC" "sender after its $victim process was killed" "$T/a$run.log"
    grep -q '^sesscp: error: ' "$T/a$run.log" || fail_with_logs "no error line" "$T/a$run.log"
  fi
  wait_remote_gone 20
  assert_interrupted_state "$T/dst" "$name"
  written[run]=$(written_bytes "$part")
  log "run $run: part holds $((written[run])) bytes after the kill"
  prev=$PROGRESS
done

check "a) the same command completes"
run=$((run + 1))
ssh_send "$T/a$run.log" "$T/src/$name" "$HOST:$T/dst" "${opts[@]}"
assert_rc 0 "$SEND_RC" "final run" "$T/a$run.log" "$T/remote.err"
assert_same "$T/src/$name" "$T/dst/$name"
assert_no_leftovers "$T/dst" "$name"

check "a) each run resumed further, and lost at most chunk + window"
mapfile -t lines < <(summaries "$T/remote.err" recv "$name")
# The remote sesscp killed with -9 printed no summary: 3 of the 4 runs have one.
((${#lines[@]} == 3)) || fail_with_logs "expected 3 remote summary lines, got ${#lines[@]}" "$T/remote.err"
declare -a offs=()
for line in "${lines[@]}"; do
  IFS='|' read -r _ _ _ o _ _ _ <<<"$line"
  offs+=("$o")
done
# resuming_offset LOG: OFFSET from the sender's "sesscp: NAME: resumed at ... (byte OFFSET)".
resuming_offset() { sed -nE "s/^sesscp: $name: resumed at .* \\(byte ([0-9]+)\\)\$/\\1/p" "$1" | tail -n 1; }
# Runs 1, 2 and 4 printed a remote summary; every run after the first, its resuming line.
start=(0 0)
for r in 2 3 4; do
  o=$(resuming_offset "$T/a$r.log")
  [[ -n $o ]] || fail_with_logs "run $r printed no 'resumed at ... (byte N)' line" "$T/a$r.log"
  start[r]=$o
done
[[ ${offs[0]} -eq 0 && ${offs[1]} -eq ${start[2]} && ${offs[2]} -eq ${start[4]} ]] ||
  fail "remote offsets ${offs[*]} differ from the sender's ${start[*]}"
((start[2] > 0 && start[3] > start[2] && start[4] > start[3])) || fail "offsets do not increase: ${start[*]}"
ok "resume offsets increase: 0 ${start[2]} ${start[3]} ${start[4]} (the remote agrees)"
for r in 1 2 3; do
  assert_resent_bound $((written[r] - start[r + 1])) $((chunk + window)) "bytes written but not kept after kill $r"
done

# ------------------------------------------------------------------ b
check "b) --retry across connections dropped by the server"
gen_file "$T/src/retry.bin" $((32 * MiB)) ssh-retry
start_send "$T/b.log" "$T/src/retry.bin" "$HOST:$T/dst" "${opts[@]}" --bwlimit 8M --retry 5 -e "$RSH" --remote-sesscp "$REMOTE"
wait_progress "$T/dst/retry.bin.sesscp.part" $((12 * MiB)) "$SEND_PID" "$rate" 0 120
kill_sshd_sessions
wait_exit "$SEND_PID" 120 || fail_with_logs "sender did not finish after the drop" "$T/b.log"
unregister "$SEND_PID"
assert_rc 0 "$WAIT_RC" "send --retry 5 over ssh" "$T/b.log" "$T/remote.err"
assert_contains "$T/b.log" "reconnecting (attempt 1/5) in " "sender reconnected with a new ssh"
assert_same "$T/src/retry.bin" "$T/dst/retry.bin"
last_summary "$T/b.log" send retry.bin
[[ $S_RATE == *", 1 reconnect" ]] || fail_with_logs "summary does not count 1 reconnect: '$S_RATE'" "$T/b.log"
ok "one reconnect, resumed at a checkpoint"

# ------------------------------------------------------------------ c
check "c) --streams 4 over SSH: killed at ~50 %, resumed with --streams 4"
gen_file "$T/src/streams.bin" "$size" ssh-streams
spart="$T/dst/streams.bin.sesscp.part"
start_send "$T/c1.log" "$T/src/streams.bin" "$HOST:$T/dst" "${opts[@]}" --bwlimit 8M --streams 4 -v -e "$RSH" --remote-sesscp "$REMOTE"
wait_progress "$spart" $((size / 2)) "$SEND_PID" "$rate" 0 120
assert_contains "$T/c1.log" "3 extra connections joined the session" "four SSH connections carry the session"
kill9 "$SEND_PID"
wait_remote_gone 20
assert_interrupted_state "$T/dst" streams.bin
w=$(written_bytes "$spart")
ssh_send "$T/c2.log" "$T/src/streams.bin" "$HOST:$T/dst" "${opts[@]}" --streams 4
assert_rc 0 "$SEND_RC" "resumed --streams 4" "$T/c2.log" "$T/remote.err"
assert_same "$T/src/streams.bin" "$T/dst/streams.bin"
last_summary "$T/c2.log" send streams.bin
((S_OFFSET > 0)) || fail "--streams 4 did not resume (offset 0)"
assert_resent_bound $((w - S_OFFSET)) $((4 * chunk + window)) "--streams 4: bytes written but not kept"
[[ -z $(ls /tmp/sesscp-0/ 2>/dev/null) ]] || fail "stream sockets left in /tmp/sesscp-0: $(ls /tmp/sesscp-0/)"
ok "no stream rendezvous socket left behind"

# ------------------------------------------------------------------ d
check "d) get HOST:PATH killed at ~50 % resumes from the local journal"
mkdir -p "$T/pull"
ppart="$T/pull/$name.sesscp.part"
"$BIN" get "$HOST:$T/src/$name" -o "$T/pull" --bwlimit 8M -e "$RSH" --remote-sesscp "$REMOTE" 2>"$T/d1.log" &
gpid=$!
register "$gpid"
wait_progress "$ppart" $((size / 2)) "$gpid" "$rate" 0 120
kill9 "$gpid"
wait_remote_gone 20
assert_interrupted_state "$T/pull" "$name"
w=$(written_bytes "$ppart")
ssh_get "$T/d2.log" "$HOST:$T/src/$name" -o "$T/pull"
assert_rc 0 "$GET_RC" "resumed get" "$T/d2.log" "$T/remote.err"
assert_same "$T/src/$name" "$T/pull/$name"
last_summary "$T/d2.log" recv "$name"
((S_OFFSET > 0)) || fail_with_logs "the pull did not resume (offset 0)" "$T/d2.log"
# The serving side's window is the default (60 MiB): a bound, not a tight one.
assert_resent_bound $((w - S_OFFSET)) $((64 * MiB)) "pull: bytes written but not kept"
log "PASS"
