# shellcheck shell=bash disable=SC2034  # globals are used by the sourcing test scripts
# Shared helpers for the sesscp integration tests (sourced, never run).
#
# Every test script starts with:
#     . "$(dirname "$0")/lib.sh"
#     itest_init "$@"          # $1 = path to the sesscp binary
# and then uses the helpers below. Conventions:
#   - exit 0 = pass, 1 = fail, 125 = skipped (cannot run here);
#   - everything lives in one mktemp -d scratch dir ($T), removed on exit;
#   - every process started in the background is registered and killed
#     (kill -9 + wait) on exit, whatever happened;
#   - every wait is bounded in count and in time;
#   - only 127.0.0.1, and receivers always pick their own port (port 0).

set -euo pipefail

# Defaults of the binary (see the CLI contract).
readonly DEFAULT_CHUNK=$((1024 * 1024))
readonly DEFAULT_WINDOW=$((60 * 1024 * 1024))
readonly MiB=$((1024 * 1024))
readonly GiB=$((1024 * 1024 * 1024))

# Upper bound for one foreground sesscp run (seconds).
SESSCP_RUN_TIMEOUT=${SESSCP_RUN_TIMEOUT:-240}

BIN=""
T=""
TEST_NAME=$(basename "${0%.sh}")
declare -a ITEST_PIDS=()

# ---------------------------------------------------------------- messages

log() { printf '[%s] %s\n' "$TEST_NAME" "$*"; }

# check DESCRIPTION: announce what is being verified.
check() { printf '[%s] check: %s\n' "$TEST_NAME" "$*"; }

ok() { printf '[%s]   ok: %s\n' "$TEST_NAME" "$*"; }

fail() {
  printf '[%s] FAIL: %s\n' "$TEST_NAME" "$*" >&2
  exit 1
}

skip() {
  printf '[%s] SKIP: %s\n' "$TEST_NAME" "$*" >&2
  exit 125
}

# show_log FILE [TITLE]: print a log file indented (for failure diagnostics).
show_log() {
  local f=$1 title=${2:-$1}
  printf '[%s] ---- %s ----\n' "$TEST_NAME" "$title" >&2
  if [[ -f $f ]]; then
    sed 's/^/    /' "$f" >&2
  else
    printf '    (missing)\n' >&2
  fi
}

# fail_with_logs MESSAGE LOG...: print the logs, then fail.
fail_with_logs() {
  local msg=$1
  shift
  local f
  for f in "$@"; do show_log "$f"; done
  fail "$msg"
}

# ------------------------------------------------------------ set-up/clean

itest_cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${ITEST_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${ITEST_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  # A test may define itest_on_exit (e.g. to unmount what it mounted).
  if declare -F itest_on_exit >/dev/null; then itest_on_exit || true; fi
  if [[ -n $T && -d $T ]]; then
    rm -rf -- "$T"
  fi
  exit "$rc"
}

itest_init() {
  if [[ $# -lt 1 || -z $1 ]]; then
    printf 'usage: bash %s /path/to/sesscp\n' "$0" >&2
    exit 64
  fi
  BIN=$1
  [[ $BIN == /* ]] || BIN="$PWD/$BIN"
  [[ -x $BIN ]] || fail "binary not found or not executable: $BIN"
  T=$(mktemp -d "${TMPDIR:-/tmp}/sesscp-${TEST_NAME}.XXXXXX")
  trap itest_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  log "binary: $BIN"
  log "scratch: $T"
  # Sessions are TLS 1.3 with a shared key by default, as users run them; a
  # test that needs plaintext passes --insecure, which wins over this.
  "$BIN" keygen -o "$T/sesscp.key" >/dev/null 2>&1 || fail "sesscp keygen failed"
  export SESSCP_KEY_FILE="$T/sesscp.key"
}

# register PID: kill -9 this process on exit.
register() { ITEST_PIDS+=("$1"); }

# unregister PID: forget a process already reaped (wait_exit), so that a test
# starting hundreds of them never signals a recycled PID on exit.
unregister() {
  local -a keep=()
  local pid
  for pid in "${ITEST_PIDS[@]}"; do
    [[ $pid == "$1" ]] || keep+=("$pid")
  done
  ITEST_PIDS=("${keep[@]}")
}

# ----------------------------------------------------------------- timing

now_ms() { date +%s%3N; }

# fmt_ms MS -> "1.234"
fmt_ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# ---------------------------------------------------------- process state

# is_running PID: true while the process exists and is not a zombie.
is_running() {
  local pid=$1 state
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [[ -n $state && $state != Z ]]
}

# wait_exit PID SECS: wait (bounded) for a background child to exit and set
# WAIT_RC to its exit status. On timeout the process is killed with -9,
# WAIT_RC is set to 124 and the function returns 1.
WAIT_RC=0
wait_exit() {
  local pid=$1 secs=$2 i max
  max=$((secs * 10))
  for ((i = 0; i < max; i++)); do
    is_running "$pid" || break
    sleep 0.1
  done
  if is_running "$pid"; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    WAIT_RC=124
    return 1
  fi
  WAIT_RC=0
  wait "$pid" 2>/dev/null || WAIT_RC=$?
  return 0
}

# kill9 PID: kill -9 and reap a background child.
kill9() {
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# ------------------------------------------------------------------ files

# gen_file PATH SIZE [SEED]: SIZE bytes of pseudo-random data, reproducible
# for a given SEED (AES-CTR keystream); falls back to /dev/urandom when
# openssl is not installed.
gen_file() {
  local path=$1 size=$2 seed=${3:-sesscp-test}
  if command -v openssl >/dev/null 2>&1; then
    { openssl enc -aes-128-ctr -pass "pass:$seed" -nosalt </dev/zero 2>/dev/null || true; } |
      head -c "$size" >"$path"
  fi
  if [[ ! -f $path || $(stat -c %s "$path") -ne $size ]]; then
    head -c "$size" /dev/urandom >"$path"
  fi
  [[ $(stat -c %s "$path") -eq $size ]] || fail "could not generate $size bytes in $path"
}

# fsize PATH: apparent size in bytes.
fsize() { stat -c %s "$1"; }

# written_bytes PATH: a lower estimate of the bytes actually written to a
# file: min(apparent size, allocated bytes). Allocated bytes matter when the
# receiver preallocates the partial file to its final size with ftruncate.
written_bytes() {
  local s b bs alloc
  read -r s b bs < <(stat -c '%s %b %B' "$1" 2>/dev/null || echo '0 0 512')
  alloc=$((b * bs))
  if ((alloc < s)); then echo "$alloc"; else echo "$s"; fi
}

# sha PATH: SHA-256 of a file (openssl's SHA-NI code is ~2x faster than
# coreutils' sha256sum here; same digest).
sha() {
  if command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha256 -r "$1" | awk '{print $1}'
  else
    sha256sum "$1" | awk '{print $1}'
  fi
}

# assert_same SRC DST: byte-identical (SHA-256 printed).
assert_same() {
  local a b
  [[ -f $2 ]] || fail "$2 does not exist"
  a=$(sha "$1")
  b=$(sha "$2")
  log "sha256 source: $a"
  log "sha256 result: $b"
  [[ $a == "$b" ]] || fail "$2 differs from $1"
  ok "byte-identical ($(fsize "$2") bytes)"
}

# assert_no_leftovers DIR NAME: no .part/.journal left after completion.
assert_no_leftovers() {
  local d=$1 n=$2
  [[ ! -e $d/$n.sesscp.part ]] || fail "$d/$n.sesscp.part left behind after completion"
  [[ ! -e $d/$n.sesscp.journal ]] || fail "$d/$n.sesscp.journal left behind after completion"
  ok "no $n.sesscp.part / $n.sesscp.journal left"
}

# assert_interrupted_state DIR NAME: only the partial state exists.
assert_interrupted_state() {
  local d=$1 n=$2
  [[ ! -e $d/$n ]] || fail "$d/$n exists after an interrupted transfer (must only appear when complete)"
  [[ -f $d/$n.sesscp.part ]] || fail "$d/$n.sesscp.part missing after an interrupted transfer"
  [[ -f $d/$n.sesscp.journal ]] || fail "$d/$n.sesscp.journal missing after an interrupted transfer"
  ok "$n absent; $n.sesscp.part ($(fsize "$d/$n.sesscp.part") bytes) and $n.sesscp.journal ($(fsize "$d/$n.sesscp.journal") bytes) present"
}

# --------------------------------------------------------------- receiver

# start_recv DIR LOG [ARGS...]: start `sesscp recv --listen 127.0.0.1:0`
# (or on $RECV_LISTEN, e.g. to restart a receiver on the port it had),
# wait (max 15 s) for its "listening on" line and set RECV_PID, RECV_PORT.
# RECV_ENV (VAR=VALUE...) is added to the receiver's environment only, e.g.
# LD_PRELOAD: a `VAR=VALUE start_recv` prefix would also reach the grep and
# sleep this function runs. Its stdout (--json events) goes to $RECV_STDOUT
# when that is set.
RECV_PID=""
RECV_PORT=""
declare -a RECV_ENV=()
start_recv() {
  local dir=$1 logf=$2 i line
  shift 2
  : >"$logf" # now, not in the child: a reused LOG must not show the last receiver's port
  env "${RECV_ENV[@]}" "$BIN" recv --listen "${RECV_LISTEN:-127.0.0.1:0}" --dir "$dir" "$@" 2>"$logf" >"${RECV_STDOUT:-/dev/null}" &
  RECV_PID=$!
  register "$RECV_PID"
  RECV_PORT=""
  for ((i = 0; i < 150; i++)); do
    line=$(grep -m1 -oE 'sesscp: listening on 127\.0\.0\.1:[0-9]+' "$logf" 2>/dev/null || true)
    if [[ -n $line ]]; then
      RECV_PORT=${line##*:}
      break
    fi
    is_running "$RECV_PID" || break
    sleep 0.1
  done
  if [[ -z $RECV_PORT ]]; then
    fail_with_logs "receiver did not print 'sesscp: listening on 127.0.0.1:PORT' within 15 s" "$logf"
  fi
  [[ $RECV_PORT -gt 0 ]] || fail_with_logs "receiver reported port $RECV_PORT for --listen ${RECV_LISTEN:-127.0.0.1:0}" "$logf"
  log "receiver pid $RECV_PID listening on 127.0.0.1:$RECV_PORT (dir $dir)"
}

# ----------------------------------------------------------------- sender

# run_send LOG ARGS...: run `sesscp send ARGS...` in the foreground (bounded
# by SESSCP_RUN_TIMEOUT) and set SEND_RC and SEND_MS.
SEND_RC=0
SEND_MS=0
run_send() {
  local logf=$1 t0
  shift
  t0=$(now_ms)
  SEND_RC=0
  timeout -k 5 "$SESSCP_RUN_TIMEOUT" "$BIN" send "$@" 2>"$logf" || SEND_RC=$?
  SEND_MS=$(($(now_ms) - t0))
  if [[ $SEND_RC -eq 124 || $SEND_RC -eq 137 ]]; then
    fail_with_logs "sesscp send did not finish within ${SESSCP_RUN_TIMEOUT}s" "$logf"
  fi
}

# start_send LOG ARGS...: start `sesscp send ARGS...` in the background and
# set SEND_PID (and SEND_T0, its start time in ms).
SEND_PID=""
SEND_T0=0
start_send() {
  local logf=$1
  shift
  SEND_T0=$(now_ms)
  "$BIN" send "$@" 2>"$logf" &
  SEND_PID=$!
  register "$SEND_PID"
}

# wait_progress PART TARGET PID RATE BASE SECS: poll every 50 ms (at most
# SECS seconds) until the partial file PART holds at least TARGET bytes,
# while process PID (the throttled sender, rate RATE bytes/s, starting at
# most at offset BASE) is alive. The measure is
#   min(apparent size, allocated bytes, BASE + RATE * elapsed)
# so that it stays meaningful if the receiver preallocates the part file.
# Sets PROGRESS (bytes). Fails if PID exits first or the time runs out.
PROGRESS=0
wait_progress() {
  local part=$1 target=$2 pid=$3 rate=$4 base=$5 secs=$6
  local t0 i max el w bound
  t0=$(now_ms)
  max=$((secs * 20))
  PROGRESS=0
  for ((i = 0; i < max; i++)); do
    if ! is_running "$pid"; then
      wait "$pid" 2>/dev/null && WAIT_RC=0 || WAIT_RC=$?
      fail "process $pid exited (status $WAIT_RC) before $part reached $target bytes (had $PROGRESS); is --bwlimit honoured?"
    fi
    if [[ -f $part ]]; then
      el=$(($(now_ms) - t0))
      w=$(written_bytes "$part")
      bound=$((base + rate * el / 1000))
      PROGRESS=$((w < bound ? w : bound))
      if ((PROGRESS >= target)); then
        return 0
      fi
    fi
    sleep 0.05
  done
  fail "$part did not reach $target bytes within ${secs}s (had $PROGRESS)"
}

# -------------------------------------------------------- summary lines
#
#   sesscp: send NAME: STATE, SIZE bytes total, resumed at OFFSET, N bytes sent, SECS s, RATE
#   sesscp: recv NAME: STATE, SIZE bytes total, resumed at OFFSET, N bytes received, SECS s, RATE

# summaries LOG SIDE [NAME]: print "name|state|size|offset|n|secs|rate" for
# each summary line of SIDE (send|recv) in LOG, optionally only for NAME.
summaries() {
  local logf=$1 side=$2 name=${3:-} verb
  if [[ $side == send ]]; then verb=sent; else verb=received; fi
  [[ -f $logf ]] || return 0
  sed -nE "s/^sesscp: $side (.+): (complete|already complete|interrupted|failed), ([0-9]+) bytes total, resumed at ([0-9]+), ([0-9]+) bytes $verb, ([0-9]+(\.[0-9]+)?) s, (.+)\$/\1|\2|\3|\4|\5|\6|\8/p" "$logf" |
    awk -F'|' -v n="$name" 'n == "" || $1 == n'
}

# summary_count LOG SIDE NAME
summary_count() { summaries "$1" "$2" "$3" | wc -l; }

# last_summary LOG SIDE NAME: set S_STATE S_SIZE S_OFFSET S_N S_SECS S_RATE
# from the last summary line for NAME; fails if there is none.
S_STATE="" S_SIZE=0 S_OFFSET=0 S_N=0 S_SECS="" S_RATE=""
last_summary() {
  local logf=$1 side=$2 name=$3 line
  line=$(summaries "$logf" "$side" "$name" | tail -n 1)
  if [[ -z $line ]]; then
    fail_with_logs "no '$side' summary line for $name in $logf matching the contract format" "$logf"
  fi
  IFS='|' read -r _ S_STATE S_SIZE S_OFFSET S_N S_SECS S_RATE <<<"$line"
}

# wait_summary LOG SIDE NAME COUNT SECS: wait (bounded) until LOG holds at
# least COUNT summary lines for NAME.
wait_summary() {
  local logf=$1 side=$2 name=$3 count=$4 secs=$5 i max
  max=$((secs * 10))
  for ((i = 0; i < max; i++)); do
    if (($(summary_count "$logf" "$side" "$name") >= count)); then
      return 0
    fi
    sleep 0.1
  done
  fail_with_logs "no $side summary line #$count for $name within ${secs}s" "$logf"
}

# sum_n LOG SIDE NAME: sum of the N ("bytes sent/received") fields.
sum_n() {
  summaries "$1" "$2" "$3" | awk -F'|' '{ s += $5 } END { printf "%.0f\n", s }'
}

# ---------------------------------------------------------------- asserts

assert_rc() {
  local want=$1 got=$2 what=$3
  shift 3
  if [[ $got -ne $want ]]; then
    fail_with_logs "$what: exit status $got, expected $want" "$@"
  fi
  ok "$what: exit $got"
}

# assert_resent_bound RESENT BOUND WHAT: 0 <= RESENT <= BOUND (a negative
# figure means the summary lines account for fewer bytes than the file has).
assert_resent_bound() {
  local r=$1 b=$2 what=$3
  ((r >= 0)) || fail "$what: $r bytes re-sent is negative: the summary lines account for fewer bytes than the file has"
  assert_le "$r" "$b" "$what"
}

assert_le() {
  local a=$1 b=$2 what=$3
  ((a <= b)) || fail "$what: $a > $b"
  ok "$what: $a <= $b"
}

assert_contains() {
  local file=$1 pat=$2 what=$3
  grep -qF -- "$pat" "$file" || fail_with_logs "$what: '$pat' not found" "$file"
  ok "$what: contains '$pat'"
}

# ------------------------------------------------------------ test tools

# start_proxy LOG TARGET_PORT ARGS...: start faultproxy on a free loopback
# port in front of 127.0.0.1:TARGET_PORT, wait (max 10 s) for its port file;
# sets PROXY_PID, PROXY_PORT.
PROXY_PID=""
PROXY_PORT=""
start_proxy() {
  local logf=$1 target=$2 pf i proxy_bin
  shift 2
  proxy_bin=$(need_tool faultproxy)
  pf="$logf.port"
  rm -f "$pf"
  "$proxy_bin" --listen 127.0.0.1:0 --target "127.0.0.1:$target" --port-file "$pf" "$@" 2>"$logf" &
  PROXY_PID=$!
  register "$PROXY_PID"
  PROXY_PORT=""
  for ((i = 0; i < 200; i++)); do
    if [[ -s $pf ]]; then
      PROXY_PORT=$(<"$pf")
      break
    fi
    is_running "$PROXY_PID" || break
    sleep 0.05
  done
  [[ -n $PROXY_PORT ]] || fail_with_logs "faultproxy did not write its port within 10 s" "$logf"
  grep -q "^faultproxy: listening on 127.0.0.1:$PROXY_PORT\$" "$logf" ||
    fail_with_logs "faultproxy did not print 'faultproxy: listening on 127.0.0.1:$PROXY_PORT'" "$logf"
  log "faultproxy pid $PROXY_PID on 127.0.0.1:$PROXY_PORT -> 127.0.0.1:$target ($*)"
}

# stop_proxy: SIGTERM the proxy and reap it (bounded).
stop_proxy() {
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  wait_exit "$PROXY_PID" 10 || log "faultproxy needed kill -9"
}

# wait_for_line FILE PATTERN SECS: poll every 20 ms (bounded) until FILE has
# a line matching the extended regex; sets LINE_MS to the time it was seen.
LINE_MS=0
wait_for_line() {
  local f=$1 pat=$2 secs=$3 i max
  max=$((secs * 50))
  for ((i = 0; i < max; i++)); do
    if grep -qE -- "$pat" "$f" 2>/dev/null; then
      LINE_MS=$(now_ms)
      return 0
    fi
    sleep 0.02
  done
  return 1
}

# need_tool NAME: the path of a test tool (faultproxy, testpeer) built next to
# the tests (ctest sets SESSCP_TOOLS_DIR); skip the test when it is missing.
need_tool() {
  local path=${SESSCP_TOOLS_DIR:-$(dirname "$BIN")/tests}/$1
  [[ -x $path ]] || skip "$1 not found at $path (set SESSCP_TOOLS_DIR)"
  log "$1: $path" >&2
  printf '%s\n' "$path"
}

# ------------------------------------------------ nothing outside --dir

# parent_listing PARENT DIR: everything under PARENT except inside DIR, with
# type, size, mode, mtime and (for regular files) a content hash; DIR itself
# must still be a directory (not replaced by a link).
parent_listing() {
  local parent=$1 dir=$2 p
  while IFS= read -r -d '' p; do
    if [[ -L $p ]]; then
      printf '%q L -> %q\n' "${p#"$parent"}" "$(readlink "$p")"
    elif [[ -f $p ]]; then
      printf '%q f %s %s\n' "${p#"$parent"}" "$(stat -c '%s %a %y' "$p")" "$(sha256sum <"$p" | cut -c1-64)"
    else
      printf '%q %s\n' "${p#"$parent"}" "$(stat -c '%F %a' "$p")"
    fi
  done < <(find "$parent" -path "$dir" -prune -o -print0 | sort -z)
  printf 'DIR %s\n' "$(stat -c '%F' "$dir")"
}

# new_dest TAG: a receiver directory $T/TAG/dest inside its own parent, next to
# a sentinel file; sets PARENT and DEST and records the parent's listing.
new_dest() {
  PARENT="$T/$1"
  DEST="$PARENT/dest"
  mkdir -p "$DEST"
  printf 'sentinel %s\n' "$1" >"$PARENT/sentinel"
  parent_listing "$PARENT" "$DEST" >"$T/$1.listing"
}

# assert_parent_unchanged TAG: nothing outside TAG's --dir was created,
# changed or removed since new_dest TAG.
assert_parent_unchanged() {
  parent_listing "$T/$1" "$T/$1/dest" >"$T/$1.listing.now"
  if ! diff -u "$T/$1.listing" "$T/$1.listing.now" >"$T/$1.listing.diff"; then
    show_log "$T/$1.listing.diff" "[$1] parent listing diff"
    fail "[$1] something was written outside the receiver's --dir"
  fi
  ok "[$1] nothing written outside the receiver's --dir ($(wc -l <"$T/$1.listing") entries compared)"
}

# ------------------------------------------------------ journal and json

# journal_chunks JOURNAL: the number of chunks the journal's checkpoint
# records confirm, read straight from its bytes (docs/JOURNAL.md: a 10-byte
# file header, then records of checksum(8) length(4) type(1) payload, a
# checkpoint payload being 20 bytes + 16 per chunk). A torn tail is ignored.
journal_chunks() {
  local f=$1 size off=10 len type n=0
  size=$(fsize "$f")
  while ((off + 13 <= size)); do
    len=$(od -An -tu1 -j $((off + 8)) -N4 "$f" | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
    type=$(od -An -tu1 -j $((off + 12)) -N1 "$f" | tr -d ' ')
    ((off + 13 + len <= size)) || break
    if ((type == 2)); then n=$((n + (len - 20) / 16)); fi
    off=$((off + 13 + len))
  done
  echo "$n"
}

# json_events FILE: the "event" field of each line, one per line; fails if a
# line is not one JSON object.
json_events() {
  command -v jq >/dev/null 2>&1 || skip "jq not installed (scripts/deps.sh installs it)"
  jq -R -r 'fromjson | if type == "object" then .event else error("not an object") end' "$1" ||
    fail_with_logs "$1: a line is not a JSON object" "$1"
}

# json_field FILE EVENT JQ_EXPR: JQ_EXPR applied to the last EVENT in FILE.
json_field() {
  jq -R -r --arg e "$2" "fromjson | select(.event == \$e) | $3" "$1" | tail -n 1
}

# assert_in_order FILE EVENT...: the events appear in FILE in this order
# (others may come between).
assert_in_order() {
  local f=$1 want got
  shift
  want="$*"
  got=$(json_events "$f" | awk -v want="$want" '
    BEGIN { n = split(want, w, " "); i = 1 }
    i <= n && $0 == w[i] { i++ }
    END { print (i > n) ? "ok" : "missing " w[i] }')
  [[ $got == ok ]] || fail_with_logs "$f: events not in the order '$want': $got" "$f"
  ok "$(basename "$f"): $want (in order)"
}

# assert_no_cr FILE...: no carriage return (no redraws) in these files.
assert_no_cr() {
  local f
  for f in "$@"; do
    if grep -q $'\r' "$f"; then fail_with_logs "$f holds a carriage return (a redraw) though it is not a terminal" "$f"; fi
  done
  ok "no carriage return in $# non-terminal outputs"
}

# ------------------------------------------------------------ trees, peers

# tree_listing DIR: type, relative path, mode, mtime (ns) and SHA-256 of
# every file; links with their target. Directory mtimes are left out.
tree_listing() {
  local dir=$1 p rel
  while IFS= read -r -d '' p; do
    rel=${p#"$dir"/}
    if [[ -L $p ]]; then
      printf 'L %s -> %s\n' "$rel" "$(readlink "$p")"
    elif [[ -f $p ]]; then
      printf 'f %s %s %s %s\n' "$rel" "$(stat -c %a "$p")" "$(stat -c %.9Y "$p")" "$(sha "$p")"
    else
      printf 'd %s %s\n' "$rel" "$(stat -c %a "$p")"
    fi
  done < <(find "$dir" -mindepth 1 -print0 | sort -z)
}

# assert_same_tree SRC DST WHAT: tree_listing of both is identical.
assert_same_tree() {
  tree_listing "$1" >"$T/want.listing"
  tree_listing "$2" >"$T/got.listing"
  if ! diff -u "$T/want.listing" "$T/got.listing" >"$T/tree.diff"; then
    fail_with_logs "$3: trees differ" "$T/tree.diff"
  fi
  ok "$3: $(wc -l <"$T/want.listing") entries identical (SHA-256, mode, mtime)"
}

# start_peer SCENARIO LOG: `testpeer --serve SCENARIO` (the tool in $TP) on a
# free port, its stdout in LOG.out; sets PEER_PID, PEER_PORT.
start_peer() {
  local i line
  "$TP" 127.0.0.1:0 --serve "$1" --timeout 20 >"$2.out" 2>"$2" &
  PEER_PID=$!
  register "$PEER_PID"
  PEER_PORT=""
  for ((i = 0; i < 100; i++)); do
    line=$(grep -m1 -oE 'listening on 127\.0\.0\.1:[0-9]+' "$2" 2>/dev/null || true)
    [[ -n $line ]] && { PEER_PORT=${line##*:}; break; }
    sleep 0.05
  done
  [[ -n $PEER_PORT ]] || fail_with_logs "testpeer --serve did not start" "$2"
}
