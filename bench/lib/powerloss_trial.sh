#!/usr/bin/env bash
# One seeded power-loss trial at the receiver, printed as one line; for soak
# runs that call it hundreds of times (model: docs/RELIABILITY.md).
#
#   bench/lib/powerloss_trial.sh SEED [WORK_DIR]
#
# The first call makes, under WORK_DIR (default ${TMPDIR:-/tmp}/sesscp-powerloss),
# a source file, a key and the crashsim trace of one transfer of it; later
# calls reuse them (an flock makes concurrent first calls safe; delete
# WORK_DIR after rebuilding sesscp). Each trial then picks a crash point K
# from SEED (even seeds: one of the `crashreplay points` boundaries, odd
# seeds: any record), rebuilds the directory with crashreplay, runs
# journalcheck, checks that NAME is never wrong, resumes with a real receiver
# and sender, and checks the result's SHA-256 and that nothing is left behind.
#
# Environment: SESSCP_BIN (default build/sesscp), SESSCP_TOOLS_DIR (default
# the tests/ directory next to the binary: crashsim.so, crashreplay,
# journalcheck), POWERLOSS_SIZE_MIB (16), POWERLOSS_CHUNK (64K),
# POWERLOSS_WINDOW (4M), POWERLOSS_K (force the crash point).
#
# Output, one line on stdout:
#   powerloss seed=7 k=211/322 result=ok start=resuming@5242880 ms=412 crash="crash at 211/322 ..."
#   powerloss seed=8 k=... result=FAIL ... why="journalcheck: FAIL: ..."
# Exit status: 0 ok, 1 the trial found a problem, 2 it could not run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seed=${1:?usage: powerloss_trial.sh SEED [WORK_DIR]}
[[ $seed =~ ^[0-9]+$ ]] || { echo "powerloss_trial: SEED must be a number" >&2; exit 2; }
work=${2:-${TMPDIR:-/tmp}/sesscp-powerloss}
bin=${SESSCP_BIN:-$root/build/sesscp}
tools=${SESSCP_TOOLS_DIR:-$(dirname "$bin")/tests}
size_mib=${POWERLOSS_SIZE_MIB:-16}
opts=(--chunk-size "${POWERLOSS_CHUNK:-64K}" --window "${POWERLOSS_WINDOW:-4M}" --timeout 30)
name=data.bin

for f in "$bin" "$tools/crashreplay" "$tools/journalcheck" "$tools/crashsim.so"; do
  [[ -x $f ]] || { echo "powerloss_trial: $f not built (scripts/build.sh)" >&2; exit 2; }
done

pids=()
trial=""
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [[ -z $trial ]] || rm -rf -- "$trial"
}
trap cleanup EXIT

# start_receiver DIR LOG [ENV...]: sets rpid and port (bounded: 15 s).
start_receiver() {
  local dir=$1 logf=$2 i
  shift 2
  : >"$logf"
  env "$@" "$bin" recv --listen 127.0.0.1:0 --dir "$dir" --once 2>"$logf" &
  rpid=$!
  pids+=("$rpid")
  port=""
  for ((i = 0; i < 150; i++)); do
    port=$(sed -n 's/^sesscp: listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$logf")
    [[ -n $port ]] && return 0
    kill -0 "$rpid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# wait_receiver SECS: sets rrc (124 and kill -9 after SECS).
wait_receiver() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    kill -0 "$rpid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$rpid" 2>/dev/null && { wait "$rpid" 2>/dev/null || true; rrc=124; return; }
  rrc=0
  wait "$rpid" 2>/dev/null || rrc=$?
}

sha() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }

# Make (once) the source, key and trace this WORK_DIR holds.
prepare() {
  local tag="size${size_mib}M-${opts[1]}-${opts[3]}" traced="$work/traced"
  cache="$work/$tag"
  [[ -s $cache/trace && -s $cache/points ]] && return 0
  mkdir -p "$cache"
  rm -rf -- "$traced" "$cache/trace.tmp" # crashsim.so never writes over an existing trace
  mkdir -p "$traced"
  "$bin" keygen -o "$cache/key" >/dev/null 2>&1
  { openssl enc -aes-128-ctr -pass pass:sesscp-powerloss -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } |
    head -c $((size_mib << 20)) >"$cache/$name"
  start_receiver "$traced" "$cache/recv0.log" SESSCP_KEY_FILE="$cache/key" LD_PRELOAD="$tools/crashsim.so" \
    CRASHSIM_DIR="$traced" CRASHSIM_LOG="$cache/trace.tmp" || { echo "powerloss_trial: traced receiver did not start" >&2; return 1; }
  SESSCP_KEY_FILE="$cache/key" timeout -k 5 120 "$bin" send "$cache/$name" "127.0.0.1:$port" "${opts[@]}" 2>"$cache/send0.log" ||
    { echo "powerloss_trial: traced transfer failed: $(tail -n 1 "$cache/send0.log")" >&2; return 1; }
  wait_receiver 30
  [[ $rrc -eq 0 && $(sha "$traced/$name") == $(sha "$cache/$name") ]] ||
    { echo "powerloss_trial: traced transfer did not produce an identical file" >&2; return 1; }
  sha "$cache/$name" >"$cache/sha"
  "$tools/crashreplay" points "$cache/trace.tmp" | cut -d' ' -f1 >"$cache/points"
  mv "$cache/trace.tmp" "$cache/trace"
  rm -rf -- "$traced"
}

mkdir -p "$work"
exec 9>"$work/lock"
flock 9
prepare || exit 2
flock -u 9
export SESSCP_KEY_FILE=$cache/key
src_sha=$(cat "$cache/sha")
records=$("$tools/crashreplay" count "$cache/trace")

# Pick the crash point from the seed (a 32-bit mix, so neighbouring seeds spread out).
mix=$(((seed * 2654435761 + 40503) % 4294967296))
if [[ -n ${POWERLOSS_K:-} ]]; then
  k=$POWERLOSS_K
elif ((seed % 2 == 0)); then
  mapfile -t boundary <"$cache/points"
  k=${boundary[$((mix % ${#boundary[@]}))]}
else
  k=$((mix % (records + 1)))
fi

t0=$(date +%s%3N)
trial=$(mktemp -d "$work/trial.XXXXXX")
st="$trial/dest"
mkdir "$st"
result=ok why="" start=""
crash=$("$tools/crashreplay" build "$cache/trace" "$k" "$seed" "$st" 2>&1) || { result=FAIL; why="crashreplay: $crash"; }
if [[ $result == ok && -e $st/$name.sesscp.journal ]]; then
  target=$st/$name.sesscp.part
  [[ -e $target || ! -e $st/$name ]] || target=$st/$name
  jc=$("$tools/journalcheck" "$st/$name.sesscp.journal" "$target" 2>&1) || { result=FAIL; why=$jc; }
fi
if [[ $result == ok && -e $st/$name && $(sha "$st/$name") != "$src_sha" ]]; then
  result=FAIL why="$name exists with wrong content after the crash"
fi
if [[ $result == ok ]]; then
  if start_receiver "$st" "$trial/recv.log"; then
    src=0
    timeout -k 5 120 "$bin" send "$cache/$name" "127.0.0.1:$port" "${opts[@]}" 2>"$trial/send.log" || src=$?
    wait_receiver 30
    start=$(grep -oE 'resuming [^ ]+ at [0-9]+|already complete' "$trial/send.log" | head -n 1 || true)
    case $start in
    resuming*) start="resuming@${start##* }" ;;
    already*) start=complete ;;
    *) start=fresh ;;
    esac
    left=$(find "$st" -mindepth 1 -maxdepth 1 ! -name "$name" -printf '%f ')
    if [[ $src -ne 0 || $rrc -ne 0 ]]; then
      result=FAIL why="resume: send exit $src, receiver exit $rrc: $(tail -n 1 "$trial/send.log")"
    elif [[ ! -f $st/$name || $(sha "$st/$name") != "$src_sha" ]]; then
      result=FAIL why="resume: $name missing or different"
    elif [[ -n $left ]]; then
      result=FAIL why="resume: left behind: $left"
    fi
  else
    result=FAIL why="receiver did not start: $(tail -n 1 "$trial/recv.log")"
  fi
fi
ms=$(($(date +%s%3N) - t0))
line="powerloss seed=$seed k=$k/$records result=$result start=${start:-none} ms=$ms crash=\"$crash\""
[[ -z $why ]] || line+=" why=\"$why\""
echo "$line"
[[ $result == ok ]]
