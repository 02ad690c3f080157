#!/usr/bin/env bash
# Seeded random fault trials, each on a fresh receiver, sender and (where the
# fault is in the network) faultproxy:
#   kill_sender    kill -9 the sender at a random offset, re-run it
#   kill_receiver  kill -9 the receiver, start a new one, re-run the sender
#   restart        kill -9 the receiver while the sender runs with --retry;
#                  restart it on the same port; the same sender completes
#   cut_c2s        RST both sockets after N bytes of sender->receiver data (--retry)
#   cut_s2c        RST after N bytes of receiver->sender acknowledgements (--retry)
#   stall          forward nothing after N bytes, sockets left open (--retry)
#   flip           flip one bit of the plaintext stream at offset N (--retry)
# Each trial checks: the final file is byte-identical (SHA-256); after an
# interruption only NAME.sesscp.part/.journal exist (never NAME); the journal
# claims no chunk whose data on disk is wrong (journalcheck, when built); the
# bytes re-sent stay within one checkpoint window (window + one chunk); a
# stall is detected within --timeout + 1 s.
#
# ctest runs a quick deterministic subset; bench/soak.sh runs hundreds:
#   SESSCP_FAULT_TRIALS=N (default 14)  SESSCP_FAULT_SEED=S (default 20261125)
#   SESSCP_FAULT_KINDS="cut_c2s stall"  (default: all)
#   SESSCP_FAULT_RESULTS=FILE           (append one line per trial)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
need_tool faultproxy >/dev/null

trials=${SESSCP_FAULT_TRIALS:-14}
base_seed=${SESSCP_FAULT_SEED:-20261125}
read -r -a kinds <<<"${SESSCP_FAULT_KINDS:-kill_sender kill_receiver restart cut_c2s cut_s2c stall flip}"
results=${SESSCP_FAULT_RESULTS:-$T/results}
journalcheck=${SESSCP_TOOLS_DIR:-$(dirname "$BIN")/tests}/journalcheck
[[ -x $journalcheck ]] || journalcheck=""

name=data.bin
size=$((16 * MiB))
chunk=$((128 * 1024))
window=$((2 * MiB))
timeout_s=2
src="$T/$name"
gen_file "$src" "$size" fault-trials
src_sha=$(sha "$src")
opts=(--insecure --chunk-size 128K --window 2M --timeout "$timeout_s")
ropts=(--insecure --timeout "$timeout_s" -v)
log "$trials trials from seed $base_seed, kinds: ${kinds[*]}; journalcheck: ${journalcheck:-not built}"

# check_interrupted DIR: only the partial state exists and the journal's
# chunks match the data on disk.
check_interrupted() {
  local d=$1
  [[ ! -e $d/$name ]] || fail "$name exists after an interruption"
  [[ -f $d/$name.sesscp.part && -f $d/$name.sesscp.journal ]] || fail "partial state missing after an interruption"
  if [[ -n $journalcheck ]]; then
    "$journalcheck" "$d/$name.sesscp.journal" "$d/$name.sesscp.part" >"$d/../journalcheck.log" 2>&1 ||
      fail_with_logs "journal claims data that is not on disk" "$d/../journalcheck.log"
  fi
}

# check_final DIR: byte-identical, nothing left over.
check_final() {
  local d=$1
  [[ -f $d/$name ]] || fail "$name missing after completion"
  [[ $(sha "$d/$name") == "$src_sha" ]] || fail "$name differs from the source (SHA-256)"
  [[ ! -e $d/$name.sesscp.part && ! -e $d/$name.sesscp.journal ]] || fail "partial state left after completion"
}

# wait_part PART TARGET PID SECS: poll (20 ms, bounded) until PART holds
# TARGET bytes while PID runs. Returns 1 when PID exited first: on a loaded
# machine a fast sender may finish before the fault lands ("missed").
wait_part() {
  local part=$1 target=$2 pid=$3 secs=$4 i
  for ((i = 0; i < secs * 50; i++)); do
    is_running "$pid" || return 1
    if [[ -f $part ]] && (($(written_bytes "$part") >= target)); then return 0; fi
    sleep 0.02
  done
  fail "$part did not reach $target bytes within ${secs}s"
}

# trial I KIND SEED: run one trial in a subshell; prints
# "kind=K seed=S offset=O resent=B detect_ms=D secs=X".
trial() {
  local i=$1 kind=$2 seed=$3 dir="$T/t$1" t0 off resent=0 detect=-1 port spid missed=0
  RANDOM=$seed
  mkdir -p "$dir/dest"
  ITEST_PIDS=()
  trap 'for p in "${ITEST_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${ITEST_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done' EXIT
  t0=$(now_ms)
  off=$((size / 10 + (RANDOM * 32768 + RANDOM) % (size * 7 / 10))) # 10 % .. 80 %
  start_recv "$dir/dest" "$dir/recv.log" "${ropts[@]}" >/dev/null
  case $kind in
  kill_sender | kill_receiver)
    start_send "$dir/send1.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}" --bwlimit 32M
    spid=$SEND_PID
    if ! wait_part "$dir/dest/$name.sesscp.part" "$off" "$spid" 60; then
      wait_exit "$spid" 10 || true
      [[ $WAIT_RC -eq 0 ]] || fail_with_logs "sender exit $WAIT_RC before the fault" "$dir/send1.log"
      missed=1
    elif [[ $kind == kill_sender ]]; then
      kill9 "$spid"
      wait_summary "$dir/recv.log" recv "$name" 1 $((timeout_s + 10)) >/dev/null
    else
      kill9 "$RECV_PID"
      wait_exit "$spid" $((timeout_s + 10)) || fail_with_logs "sender did not notice the receiver's death" "$dir/send1.log"
      [[ $WAIT_RC -eq 75 ]] || fail_with_logs "sender exit $WAIT_RC after the receiver's death, expected 75" "$dir/send1.log"
      start_recv "$dir/dest" "$dir/recv2.log" "${ropts[@]}" >/dev/null
    fi
    if ((!missed)); then
      check_interrupted "$dir/dest"
      run_send "$dir/send2.log" "$src" "127.0.0.1:$RECV_PORT" "${opts[@]}"
      [[ $SEND_RC -eq 0 ]] || fail_with_logs "re-run exit $SEND_RC" "$dir/send2.log" "$dir/recv.log"
      if [[ $kind == kill_sender ]]; then
        wait_summary "$dir/recv.log" recv "$name" 2 10 >/dev/null
        resent=$(($(sum_n "$dir/recv.log" recv "$name") - size))
      else
        resent=$(($(sum_n "$dir/send1.log" send "$name") + $(sum_n "$dir/send2.log" send "$name") - size))
      fi
    fi
    ;;
  restart)
    port=$RECV_PORT
    start_send "$dir/send1.log" "$src" "127.0.0.1:$port" "${opts[@]}" --bwlimit 32M --retry 12
    spid=$SEND_PID
    if wait_part "$dir/dest/$name.sesscp.part" "$off" "$spid" 60; then
      kill9 "$RECV_PID"
      check_interrupted "$dir/dest"
      sleep "0.$((RANDOM % 9 + 1))"
      RECV_LISTEN="127.0.0.1:$port" start_recv "$dir/dest" "$dir/recv2.log" "${ropts[@]}" >/dev/null
    else
      missed=1
    fi
    wait_exit "$spid" 90 || fail_with_logs "retrying sender still running 90 s after the restart" "$dir/send1.log"
    [[ $WAIT_RC -eq 0 ]] || fail_with_logs "retrying sender exit $WAIT_RC" "$dir/send1.log" "$dir/recv2.log"
    resent=$(($(sum_n "$dir/send1.log" send "$name") - size))
    ;;
  cut_c2s | cut_s2c | stall | flip)
    local -a fault
    case $kind in
    cut_c2s) fault=(--cut-after "$off" --cut-dir c2s) ;;
    cut_s2c)
      off=$((40 + RANDOM % 400)) # the acknowledgement stream is a few hundred bytes
      fault=(--cut-after "$off" --cut-dir s2c)
      ;;
    stall) fault=(--stall-after "$off") ;;
    flip) fault=(--flip-after "$off") ;;
    esac
    start_proxy "$dir/proxy.log" "$RECV_PORT" "${fault[@]}" >/dev/null
    start_send "$dir/send1.log" "$src" "127.0.0.1:$PROXY_PORT" "${opts[@]}" --bwlimit 32M --retry 8
    spid=$SEND_PID
    if [[ $kind == stall ]]; then
      wait_for_line "$dir/proxy.log" "stalled connection 1 at offset" 60 ||
        fail_with_logs "the proxy did not stall" "$dir/proxy.log" "$dir/send1.log"
      local t_stall=$LINE_MS
      wait_for_line "$dir/send1.log" "reconnecting \(attempt 1/" 30 ||
        fail_with_logs "the sender did not notice the stall" "$dir/send1.log"
      detect=$((LINE_MS - t_stall))
      ((detect <= (timeout_s + 1) * 1000)) || fail_with_logs "stall detected after $detect ms (> timeout + 1 s)" "$dir/send1.log"
    fi
    wait_exit "$spid" 120 || fail_with_logs "sender still running after 120 s" "$dir/send1.log" "$dir/proxy.log"
    [[ $WAIT_RC -eq 0 ]] || fail_with_logs "sender exit $WAIT_RC" "$dir/send1.log" "$dir/proxy.log" "$dir/recv.log"
    resent=$(($(sum_n "$dir/send1.log" send "$name") - size))
    if [[ $kind == flip ]]; then
      # Caught by the chunk hash (RESEND), or, when the bit hit a frame
      # header, by the frame checks (the session ends, --retry resumes).
      grep -q 'failed its hash; asking again' "$dir/recv.log" || grep -q 'reconnecting' "$dir/send1.log" ||
        fail_with_logs "flipped bit neither caught by a chunk hash nor ended the session" "$dir/recv.log" "$dir/send1.log"
    fi
    ;;
  *) fail "unknown fault kind '$kind'" ;;
  esac
  check_final "$dir/dest"
  ((resent >= 0 && resent <= window + chunk)) ||
    fail_with_logs "$resent bytes re-sent (bound: window + chunk = $((window + chunk)))" "$dir"/send*.log "$dir"/recv*.log
  echo "kind=$kind seed=$seed offset=$off resent=$resent detect_ms=$detect missed=$missed secs=$(fmt_ms $(($(now_ms) - t0)))"
}

failures=0
for ((i = 0; i < trials; i++)); do
  kind=${kinds[i % ${#kinds[@]}]}
  seed=$((base_seed + i))
  if line=$(trial "$i" "$kind" "$seed" 2>"$T/t$i.err"); then
    echo "ok $line" >>"$results"
    log "trial $i: ok $line"
    rm -rf "$T/t$i" # keep the disk use of long soaks flat
  else
    failures=$((failures + 1))
    echo "FAIL kind=$kind seed=$seed" >>"$results"
    show_log "$T/t$i.err" "trial $i ($kind, seed $seed) failed"
  fi
done

log "results (this run):"
awk '{ ok = ($1 == "ok"); split($2, k, "="); kind = k[2]; n[kind]++; if (!ok) f[kind]++;
       for (j = 3; j <= NF; j++) { split($j, kv, "="); v[kv[1]] = kv[2] }
       if (ok && v["missed"] == 1) mi[kind]++;
       if (ok && v["missed"] != 1) { r = v["resent"] + 0; s[kind] += r; if (r > w[kind]) w[kind] = r;
                 d = v["detect_ms"] + 0; if (d >= 0) { dn[kind]++; ds[kind] += d; if (d > dw[kind]) dw[kind] = d } } }
     END { printf "| fault | trials | failures | fault missed (done first) | worst re-sent (KiB) | mean re-sent (KiB) | worst detect (ms) | mean detect (ms) |\n";
           printf "|---|---|---|---|---|---|---|---|\n";
           for (kind in n) { good = n[kind] - f[kind] - mi[kind];
             printf "| %s | %d | %d | %d | %.0f | %.0f | %s | %s |\n", kind, n[kind], f[kind] + 0, mi[kind] + 0, w[kind] / 1024,
                    (good ? s[kind] / good / 1024 : 0), (dn[kind] ? dw[kind] : "-"),
                    (dn[kind] ? sprintf("%.0f", ds[kind] / dn[kind]) : "-") } }' "$results" | sed 's/^/    /'
((failures == 0)) || fail "$failures of $trials trials failed (rerun one: SESSCP_FAULT_SEED=S SESSCP_FAULT_KINDS=K SESSCP_FAULT_TRIALS=1)"
log "PASS: $trials trials, 0 failures"
