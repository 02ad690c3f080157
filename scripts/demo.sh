#!/usr/bin/env bash
# A narrated, real demo of sesscp on loopback:
#   1. build sesscp (installing missing packages first);
#   2. generate a 1 GiB random file;
#   3. start a receiver, start a throttled sender and kill -9 it past 50 %;
#   4. show the partial state (.part + .journal, no final file);
#   5. re-run the same send: it resumes where the receiver's checkpoint is;
#   6. verify the SHA-256 of source and result.
# Exits non-zero if any step fails. Everything it starts is stopped and its
# temporary directory removed on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

SIZE=$((1024 * 1024 * 1024))
RATE_ARG=200M
RATE=$((200 * 1024 * 1024))
MAX_WAIT=120 # seconds, for every wait below

if [[ -t 1 ]]; then
  say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
  say() { printf '\n==> %s\n' "$*"; }
fi
die() {
  printf 'demo: FAILED: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- build
say "Building sesscp"
bash "$root/scripts/build.sh" >"${TMPDIR:-/tmp}/sesscp-demo-build.$$.log" 2>&1 || {
  cat "${TMPDIR:-/tmp}/sesscp-demo-build.$$.log" >&2
  rm -f "${TMPDIR:-/tmp}/sesscp-demo-build.$$.log"
  die "build failed"
}
BIN=$(tail -n 1 "${TMPDIR:-/tmp}/sesscp-demo-build.$$.log")
rm -f "${TMPDIR:-/tmp}/sesscp-demo-build.$$.log"
[[ -x $BIN ]] || die "no binary at '$BIN'"
echo "binary: $BIN"

# ------------------------------------------------------- set-up/clean-up
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sesscp-demo.XXXXXX")
PIDS=()
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SRC="$WORK/src/bigfile.bin"
DEST="$WORK/dest"
NAME=bigfile.bin
PART="$DEST/$NAME.sesscp.part"
mkdir -p "$WORK/src" "$DEST"

now_ms() { date +%s%3N; }
running() { kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
# written PATH: min(apparent size, allocated bytes) of a file.
written() {
  local s b bs
  read -r s b bs < <(stat -c '%s %b %B' "$1" 2>/dev/null || echo '0 0 512')
  if ((b * bs < s)); then echo $((b * bs)); else echo "$s"; fi
}

# --------------------------------------------------------------- source
say "Generating a 1 GiB random source file"
t0=$(now_ms)
if command -v openssl >/dev/null 2>&1; then
  { openssl enc -aes-128-ctr -pass pass:sesscp-demo -nosalt </dev/zero 2>/dev/null || true; } |
    head -c "$SIZE" >"$SRC"
fi
if [[ ! -f $SRC || $(stat -c %s "$SRC") -ne $SIZE ]]; then
  echo "(openssl not usable, using /dev/urandom)"
  head -c "$SIZE" /dev/urandom >"$SRC"
fi
[[ $(stat -c %s "$SRC") -eq $SIZE ]] || die "could not generate the source file"
echo "$SRC: $SIZE bytes in $(($(now_ms) - t0)) ms"

# ------------------------------------------------------------- the key
say "Making a shared key (both hosts use the same file): sesscp keygen -o $WORK/sesscp.key"
"$BIN" keygen -o "$WORK/sesscp.key" || die "keygen failed"
KEY=$WORK/sesscp.key

# ------------------------------------------------------------- receiver
say "Starting the receiver: sesscp recv --listen 127.0.0.1:0 --dir $DEST --key-file $KEY"
"$BIN" recv --listen 127.0.0.1:0 --dir "$DEST" --key-file "$KEY" 2>"$WORK/recv.log" &
RPID=$!
PIDS+=("$RPID")
PORT=""
for ((i = 0; i < MAX_WAIT * 10; i++)); do
  line=$(grep -m1 -oE 'listening on 127\.0\.0\.1:[0-9]+' "$WORK/recv.log" 2>/dev/null || true)
  if [[ -n $line ]]; then
    PORT=${line##*:}
    break
  fi
  running "$RPID" || break
  sleep 0.1
done
[[ -n $PORT ]] || {
  cat "$WORK/recv.log" >&2
  die "the receiver did not report its port"
}
sed 's/^/  receiver| /' "$WORK/recv.log"

# ------------------------------------------------ interrupted transfer
say "Sending with --bwlimit $RATE_ARG, and killing the sender (kill -9) once past 50 %"
echo "\$ sesscp send $SRC 127.0.0.1:$PORT --key-file $KEY --bwlimit $RATE_ARG"
"$BIN" send "$SRC" "127.0.0.1:$PORT" --key-file "$KEY" --bwlimit "$RATE_ARG" 2>"$WORK/send1.log" &
SPID=$!
PIDS+=("$SPID")
t0=$(now_ms)
killed=0
last_pct=-1
for ((i = 0; i < MAX_WAIT * 10; i++)); do
  running "$SPID" || break
  if [[ -f $PART ]]; then
    # min(part size, rate * elapsed): meaningful even if the part were preallocated.
    el=$(($(now_ms) - t0))
    w=$(written "$PART")
    bound=$((RATE * el / 1000))
    done_bytes=$((w < bound ? w : bound))
    pct=$((done_bytes * 100 / SIZE))
    if ((pct / 10 != last_pct / 10)); then
      printf '  %3d %%  %d bytes\n' "$pct" "$done_bytes"
      last_pct=$pct
    fi
    if ((done_bytes > SIZE / 2)); then
      kill -9 "$SPID"
      wait "$SPID" 2>/dev/null || true
      killed=1
      printf '  killed the sender with SIGKILL at ~%d bytes (%d %%)\n' "$done_bytes" "$pct"
      break
    fi
  fi
  sleep 0.1
done
if ((killed == 0)); then
  cat "$WORK/send1.log" >&2
  die "the sender finished or stalled before reaching 50 %"
fi
sed 's/^/  sender  | /' "$WORK/send1.log"

# Wait until the receiver has noticed the lost sender and saved its state.
for ((i = 0; i < MAX_WAIT * 10; i++)); do
  grep -qE "^sesscp: recv $NAME: " "$WORK/recv.log" && break
  sleep 0.1
done
grep -E "^sesscp: recv $NAME: " "$WORK/recv.log" | sed 's/^/  receiver| /' ||
  die "the receiver did not report the interrupted session"

say "State on the receiver's side after the kill"
echo "\$ ls -l $DEST"
ls -l "$DEST"
[[ ! -e $DEST/$NAME ]] || die "$DEST/$NAME exists after an interrupted transfer"
[[ -f $PART && -f $DEST/$NAME.sesscp.journal ]] || die "the .part or .journal file is missing"
echo "=> only the partial file and its journal: no $NAME yet"

# ------------------------------------------------------------- resume
say "Re-running the same send, without the limit"
echo "\$ sesscp send $SRC 127.0.0.1:$PORT --key-file $KEY"
t0=$(now_ms)
rc=0
timeout -k 5 "$MAX_WAIT" "$BIN" send "$SRC" "127.0.0.1:$PORT" --key-file "$KEY" 2>"$WORK/send2.log" || rc=$?
sed 's/^/  sender  | /' "$WORK/send2.log"
((rc == 0)) || die "the resumed send exited $rc"
echo "finished in $(($(now_ms) - t0)) ms"
resumed=$(grep -oE 'resum(ing|ed at) [^,]*' "$WORK/send2.log" | head -n 2 || true)
[[ -n $resumed ]] || die "the sender did not say where it resumed"
echo "=> $(grep -oE 'resumed at [0-9]+' "$WORK/send2.log" | tail -n 1) (bytes before that offset were not sent again)"

# ------------------------------------------------------------- verify
say "Verifying SHA-256 of source and result"
[[ -f $DEST/$NAME ]] || die "$DEST/$NAME does not exist"
[[ ! -e $PART && ! -e $DEST/$NAME.sesscp.journal ]] || die "the .part or .journal file is still there"
a=$(sha256sum "$SRC" | awk '{print $1}')
b=$(sha256sum "$DEST/$NAME" | awk '{print $1}')
echo "source: $a"
echo "result: $b"
[[ $a == "$b" ]] || die "SHA-256 differs"
echo
echo "OK: byte-identical after an interrupted and resumed transfer"
