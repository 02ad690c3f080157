#!/usr/bin/env bash
# Scenario: power loss at the receiver, simulated (docs/RELIABILITY.md).
# Phase 1: a 16 MiB file goes through a receiver running under crashsim.so,
# which traces every write, sync, create, link, rename and unlink in its
# --dir. For every crash point worth checking (just before and just after
# each sync and after each directory operation: about 80 here; three more
# seeds for each of the major sync point's) and 16 random ones, each with a
# fixed seed, crashreplay rebuilds the directory as a power cut there would
# leave it (unsynced data lost, applied or torn by 4 KiB sector; unsynced
# directory operations kept as a prefix).
# Phase 2: from a phase-1 state whose journal ends in a torn record (512-byte
# sectors), a traced resume (the receiver cuts the tail, appends, publishes),
# and every other crash point of that trace (about 25).
# Each state must satisfy:
#   - journalcheck: every chunk the journal confirms is in the data with its
#     XXH3-128 (the journal never points past durable data);
#   - NAME, if present, is the whole source (never a wrong NAME);
#   - a real receiver on that directory and a re-run of the sender complete
#     (both exit 0) with NAME byte-identical and nothing else left behind.
# Environment: SESSCP_POWERLOSS_RANDOM (random points, default 16),
# SESSCP_POWERLOSS_STRIDE (check every Nth boundary point, default 1).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
crashsim=$(need_tool crashsim.so)
replay=$(need_tool crashreplay)
jcheck=$(need_tool journalcheck)

name=data.bin
size=$((16 * MiB))
opts=(--chunk-size 64K --window 4M --timeout 30)
random_points=${SESSCP_POWERLOSS_RANDOM:-16}
stride=${SESSCP_POWERLOSS_STRIDE:-1}
gen_file "$T/$name" "$size" power-loss
src_sha=$(sha "$T/$name")
# An ASan build of sesscp insists on its runtime coming first; crashsim.so
# only forwards calls, so the order does not matter here.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0

check "a transfer under crashsim.so completes and leaves a trace"
mkdir "$T/traced"
RECV_ENV=(LD_PRELOAD="$crashsim" CRASHSIM_DIR="$T/traced" CRASHSIM_LOG="$T/trace")
start_recv "$T/traced" "$T/recv0.log" --once
RECV_ENV=()
run_send "$T/send0.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "traced send" "$T/send0.log" "$T/recv0.log"
wait_exit "$RECV_PID" 30 || fail_with_logs "traced receiver still running 30 s after the send" "$T/recv0.log"
assert_rc 0 "$WAIT_RC" "traced receiver (--once)" "$T/recv0.log"
assert_same "$T/$name" "$T/traced/$name"
"$replay" list "$T/trace" >"$T/trace.txt" || fail "crashreplay cannot read the trace"
records=$(wc -l <"$T/trace.txt")
# (NAME is absent, so the part is published by linking it as NAME.)
for want in "create $name.sesscp.journal" "fdatasync $name.sesscp.part" "fdatasync $name.sesscp.journal" \
  "link $name" "unlink $name.sesscp.journal" "dir_sync"; do
  if ! grep -qE -- "^ *[0-9]+ ${want//./\\.}( |\$)" "$T/trace.txt"; then
    grep -q " create " "$T/trace.txt" || skip "crashsim.so traced nothing (LD_PRELOAD not honoured here?)"
    fail_with_logs "the trace has no '$want'" "$T/trace.txt"
  fi
done
ok "$records records, $(grep -c ' write ' "$T/trace.txt") writes, $(grep -c 'fdatasync' "$T/trace.txt") fdatasyncs"

# check_state TRACE K SEED: rebuild the state after a crash at K, check it, resume.
# On failure returns 1 with the reason in WHY; on success WHY says how the
# sender started ("resuming NAME at OFFSET", "already complete" or "from 0").
WHY=""
check_state() {
  local trace=$1 k=$2 seed=$3 st="$T/state" target left built
  rm -rf -- "$st"
  mkdir "$st"
  if ! "$replay" build "$trace" "$k" "$seed" "$st" >"$T/build.txt" 2>&1; then
    WHY="crashreplay failed: $(cat "$T/build.txt")"
    return 1
  fi
  built=$(cat "$T/build.txt")
  if [[ -e $st/$name.sesscp.journal ]]; then
    target=$st/$name.sesscp.part
    [[ -e $target || ! -e $st/$name ]] || target=$st/$name # published: the journal's claims are about NAME now
    if ! "$jcheck" "$st/$name.sesscp.journal" "$target" >"$T/jc.txt" 2>&1; then
      WHY="journal points past durable data: $(cat "$T/jc.txt") [$built]"
      return 1
    fi
  fi
  if [[ -e $st/$name && $(sha "$st/$name") != "$src_sha" ]]; then
    WHY="$name exists with wrong content after the crash [$built]"
    return 1
  fi
  start_recv "$st" "$T/recv.log" --once >/dev/null
  run_send "$T/send.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}"
  wait_exit "$RECV_PID" 30 || true
  unregister "$RECV_PID"
  if [[ $SEND_RC -ne 0 || $WAIT_RC -ne 0 ]]; then
    WHY="resume: send exit $SEND_RC, receiver exit $WAIT_RC [$built]: $(tr '\n' ' ' <"$T/send.log") | $(tr '\n' ' ' <"$T/recv.log")"
    return 1
  fi
  if [[ ! -f $st/$name || $(sha "$st/$name") != "$src_sha" ]]; then
    WHY="resume: $name missing or different from the source [$built]"
    return 1
  fi
  left=$(find "$st" -mindepth 1 -maxdepth 1 ! -name "$name" -printf '%f ')
  if [[ -n $left ]]; then
    WHY="resume: left behind: ${left}[$built]"
    return 1
  fi
  WHY=$(grep -oE 'resuming [^ ]+ at [0-9]+|already complete' "$T/send.log" | head -n 1 || true)
  WHY=${WHY:-from 0}
}

# run_states TRACE LABEL: check_state for each (ks[i], seeds[i]); counts into
# the totals below and lists failures in `bad`.
declare -a ks=() seeds=() bad=()
total=0 resumed=0 complete=0 fresh=0
run_states() {
  local trace=$1 label=$2 i t0 el
  t0=$(now_ms)
  for i in "${!ks[@]}"; do
    if check_state "$trace" "${ks[$i]}" "${seeds[$i]}"; then
      case $WHY in
      resuming*) resumed=$((resumed + 1)) ;;
      already*) complete=$((complete + 1)) ;;
      *) fresh=$((fresh + 1)) ;;
      esac
    else
      bad+=("$label k=${ks[$i]} seed=${seeds[$i]}: $WHY")
      log "FAILED $label k=${ks[$i]} seed=${seeds[$i]}: $WHY"
      ((${#bad[@]} < 10)) || break
    fi
    if (($(now_ms) - t0 > 300000)); then
      fail "$label: crash states took more than 300 s (checked $((i + 1)) of ${#ks[@]})"
    fi
  done
  total=$((total + ${#ks[@]}))
  el=$(($(now_ms) - t0))
  log "$label: checked ${#ks[@]} crash states in $(fmt_ms "$el") s; failures so far: ${#bad[@]}"
}

# boundaries TRACE STRIDE: every STRIDE-th crash point `crashreplay points` lists.
boundaries() { "$replay" points "$1" | awk -v s="$2" '(NR - 1) % s == 0 {print $1}'; }

check "phase 1: each crash state of the transfer: journal proves only durable data, NAME never wrong, resume completes identical"
t_all=$(now_ms)
mapfile -t boundary < <(boundaries "$T/trace" "$stride")
for k in "${boundary[@]}"; do ks+=("$k"); seeds+=($((1000 + ${#ks[@]}))); done
# The major sync point (fsync, link, rename, unlink, directory fsyncs) is where
# the directory prefix matters: three more seeds for each point there.
publish_from=$(awk -v p="fsync $name.sesscp.part" '$2 " " $3 == p {k = $1} END {print k + 0}' "$T/trace.txt")
publish_points=0
for k in "${boundary[@]}"; do
  ((k >= publish_from)) || continue
  for j in 1 2 3; do ks+=("$k"); seeds+=($((3000 + 10 * k + j))); publish_points=$((publish_points + 1)); done
done
RANDOM=4242
for ((i = 0; i < random_points; i++)); do
  ks+=($(((RANDOM * 32768 + RANDOM) % (records + 1))))
  seeds+=($((2000 + i)))
done
log "phase 1: ${#ks[@]} crash states (${#boundary[@]} boundaries, $publish_points more at the major sync point, $random_points random) of $records records"
run_states "$T/trace" "phase 1"

check "phase 2: a traced resume from a torn journal record survives power cuts too"
# A state whose journal ends in a torn or garbled record: a crash just before
# a journal fdatasync, torn by 512-byte sectors (bounded search over seeds).
mapfile -t jsyncs < <(awk -v p="fdatasync $name.sesscp.journal" '$2 " " $3 == p {print $1}' "$T/trace.txt")
base="$T/base2" found=""
for ((j = ${#jsyncs[@]} / 2; j < ${#jsyncs[@]}; j++)); do
  [[ -z $found ]] || break
  for ((seed = 1; seed <= 60; seed++)); do
    rm -rf -- "$base"
    mkdir "$base"
    "$replay" build --sector 512 "$T/trace" "${jsyncs[$j]}" "$seed" "$base" >"$T/base2.txt" 2>&1 || fail_with_logs "crashreplay failed" "$T/base2.txt"
    "$jcheck" "$base/$name.sesscp.journal" "$base/$name.sesscp.part" >"$T/base2.jc" 2>&1 || fail_with_logs "journalcheck failed on a phase 2 candidate" "$T/base2.jc" "$T/base2.txt"
    if grep -q "tail ignored" "$T/base2.jc"; then found="k=${jsyncs[$j]} seed=$seed"; break; fi
  done
done
[[ -n $found ]] || fail "no crash state with a torn journal record among the seeds tried"
ok "base state $found: $(cat "$T/base2.jc")"
RECV_ENV=(LD_PRELOAD="$crashsim" CRASHSIM_DIR="$base" CRASHSIM_LOG="$T/trace2")
start_recv "$base" "$T/recv2.log" --once
RECV_ENV=()
run_send "$T/send2.log" "$T/$name" "127.0.0.1:$RECV_PORT" "${opts[@]}"
assert_rc 0 "$SEND_RC" "traced resume" "$T/send2.log" "$T/recv2.log"
wait_exit "$RECV_PID" 30 || fail_with_logs "traced receiver still running 30 s after the send" "$T/recv2.log"
unregister "$RECV_PID"
assert_rc 0 "$WAIT_RC" "traced receiver (--once)" "$T/recv2.log"
assert_contains "$T/recv2.log" "ignored a damaged journal tail" "the receiver saw the torn record"
assert_same "$T/$name" "$base/$name"
"$replay" list "$T/trace2" >"$T/trace2.txt" || fail "crashreplay cannot read the second trace"
# After the snapshot of the directory (up to the first dir_sync), the cut.
cut=$(awk -v p="set_size $name.sesscp.journal" '$2 == "dir_sync" {s = 1} s && $2 " " $3 == p {print $1; exit}' "$T/trace2.txt")
[[ -n $cut ]] || fail_with_logs "the traced resume never cut the journal's torn tail" "$T/trace2.txt"
ok "$(wc -l <"$T/trace2.txt") records; the torn tail is cut at record $cut"
mapfile -t ks < <(boundaries "$T/trace2" $((2 * stride)))
seeds=()
for k in "${ks[@]}"; do seeds+=($((5000 + ${#seeds[@]}))); done
run_states "$T/trace2" "phase 2"

el=$(($(now_ms) - t_all))
log "checked $total crash states in $(fmt_ms "$el") s: ${#bad[@]} failed; resumed $resumed, already complete $complete, from 0 $fresh"
((${#bad[@]} == 0)) || fail "${#bad[@]} crash states failed; first: ${bad[0]}"
ok "all $total crash states consistent and resumable"
log "PASS"
