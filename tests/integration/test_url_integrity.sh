#!/usr/bin/env bash
# Scenario: `sesscp get` from a local nginx, interrupted (kill -9) once the
# journal confirms at least 40 MiB (72 MiB for a and f) of a 96 MiB file; the partial's confirmed
# region is then damaged at rest and the same get is run again:
#   a) one byte flipped in chunk 0;
#   b) 3 MiB overwritten with zeros in the middle of the confirmed region
#      (once with one connection, once with --connections 4);
#   c) a 2 MiB hole punched with fallocate -p;
#   d) the part truncated below the journal's confirmed length;
#   e) the part replaced by random bytes of the same length.
# Each: exit 0, byte-identical to the source, --json file_done reports the
# damaged chunks, and nginx sent at most the missing rest plus the damaged
# chunks plus one chunk of slack (see `bound` below).
#   f) --verify-resume tail with a byte flipped in chunk 0 keeps the
#      documented risk: the published file differs from the source.
# Before background re-verification (--verify-resume full), case a) exited 0
# with a wrong file; b) to e) fetched everything from the first damaged chunk
# in the last 64 MiB on (over the bound), or published the damage before it.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=url_lib.sh
. "$(dirname "$0")/url_lib.sh"
itest_init "$@"
command -v jq >/dev/null 2>&1 || skip "jq not installed (scripts/deps.sh installs it)"

start_nginx 64m
base="http://127.0.0.1:$NGINX_PORT"
out="$T/out"
mkdir -p "$out"
size=$((96 * MiB))
chunk=$DEFAULT_CHUNK
gen_file "$WWW/src.bin" "$size" url-integrity
J=0 # chunks the journal confirmed when the first run was killed

# interrupt NAME [MIB]: a --bwlimit'ed get of src.bin into $out/NAME, killed
# with -9 once its journal confirms at least MIB (default 40) MiB (polled, at
# most 60 s). Sets J.
interrupt() {
  local name=$1 min=$((${2:-40} * MiB)) i
  rm -f "$out/$name" "$out/$name".sesscp.*
  start_get "$T/$name-1.log" "$base/f/src.bin" -o "$out/$name" --bwlimit 16M
  for ((i = 0; i < 600; i++)); do
    J=$(journal_chunks "$out/$name.sesscp.journal")
    ((J * chunk >= min)) && break
    is_running "$GET_PID" || fail_with_logs "the throttled get of $name ended before it was killed" "$T/$name-1.log"
    sleep 0.1
  done
  ((J * chunk >= min)) || fail "the journal of $name confirmed only $J chunks after 60 s"
  kill9 "$GET_PID"
  J=$(journal_chunks "$out/$name.sesscp.journal")
  log "$name: killed with the journal confirming $J chunks; part holds $(fsize "$out/$name.sesscp.part") bytes"
  assert_interrupted_state "$out" "$name"
}

# overwrite PART OFFSET LEN SOURCE: LEN bytes of SOURCE over PART at OFFSET, in place.
overwrite() {
  head -c "$3" "$4" | dd of="$1" bs=1M seek="$2" oflag=seek_bytes conv=notrunc,fsync status=none
}

# flip_byte PART OFFSET: invert the byte at OFFSET.
flip_byte() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  # shellcheck disable=SC2059  # the format is the octal escape of one byte
  printf "\\$(printf '%03o' $((b ^ 0xff)))" | dd of="$1" bs=1 seek="$2" conv=notrunc,fsync status=none
}

# chunks_touched OFFSET LEN: how many chunks [OFFSET, OFFSET + LEN) overlaps.
chunks_touched() { echo $(((($1 + $2 - 1) / chunk) - ($1 / chunk) + 1)); }

# resume NAME WANT_DAMAGED [ARGS...]: re-run the get of NAME (no rate limit)
# and check the outcome: exit 0, identical, WANT_DAMAGED chunks reported
# damaged and fetched again, and nginx's bytes within the bound.
resume() {
  local name=$1 want=$2 mark json sent offset damaged repaired reverified bound first_ms start_ms
  shift 2
  json="$T/$name-2.json"
  mark=$(log_mark)
  run_get "$T/$name-2.log" "$base/f/src.bin" -o "$out/$name" --json -v --log-file "$T/$name-2.events" "$@" >"$json"
  assert_rc 0 "$GET_RC" "$name: resumed get" "$T/$name-2.log"
  cmp "$WWW/src.bin" "$out/$name" || fail_with_logs "$name: the published file differs from the source" "$T/$name-2.log"
  ok "$name: cmp identical to the source"
  assert_no_leftovers "$out" "$name"
  offset=$(json_field "$json" resume_point .offset)
  damaged=$(json_field "$json" file_done .damaged_chunks)
  repaired=$(json_field "$json" file_done .repaired_bytes)
  reverified=$(json_field "$json" file_done .reverified_bytes)
  log "$name: resumed at $offset; re-verified $reverified bytes; $damaged chunks damaged; $repaired bytes fetched again"
  [[ $offset -eq $((J * chunk)) ]] || fail "$name: resumed at $offset, the journal confirmed $((J * chunk))"
  [[ $damaged -eq $want ]] || fail_with_logs "$name: $damaged chunks reported damaged, expected $want" "$T/$name-2.log"
  [[ $repaired -eq $((want * chunk)) ]] || fail "$name: $repaired bytes fetched again for $want damaged chunks"
  [[ $reverified -eq $((J * chunk)) ]] || fail "$name: re-verified $reverified bytes, the journal confirmed $((J * chunk))"
  assert_contains "$T/$name-2.log" "damaged at rest in the partial" "$name: damage reported"
  # The bound: the missing rest of the file, plus the damaged chunks (a
  # repair asks for whole chunks, so byte-level damage counts as the chunks
  # it touches), plus one chunk of slack. Requests are for exact runs of
  # chunks, so nothing should need the slack; it keeps the bound from
  # depending on how damaged runs and units happen to line up.
  sent=$(body_bytes_since "$mark")
  bound=$((size - offset + want * chunk + chunk))
  assert_le "$sent" "$bound" "$name: bytes nginx sent in the completing run (rest $((size - offset)) + damaged $((want * chunk)) + one chunk)"
  # Time to the first new byte: nothing is read before the first request.
  start_ms=$(date -d "$(awk 'NR == 1 { print $1 }' "$T/$name-2.events")" +%s%3N)
  first_ms=$(date -d "$(grep -m1 ' GET http' "$T/$name-2.events" | awk '{ print $1 }')" +%s%3N)
  log "$name: first ranged GET $((first_ms - start_ms)) ms after the run's first log line"
  assert_le $((first_ms - start_ms)) 2000 "$name: ms to the first request"
}

# ------------------------------------------------------------------ a
check "a) one byte flipped in chunk 0"
# Killed past 64 MiB, so that chunk 0 lies before the window that
# --verify-resume tail (the only check before) re-hashes.
interrupt flip.bin 72
flip_byte "$out/flip.bin.sesscp.part" 1000
resume flip.bin 1

# ------------------------------------------------------------------ b
check "b) 3 MiB of zeros in the middle of the confirmed region"
interrupt zeros.bin
at=$((J * chunk / 2 + 12345))
overwrite "$out/zeros.bin.sesscp.part" "$at" $((3 * MiB)) /dev/zero
resume zeros.bin "$(chunks_touched "$at" $((3 * MiB)))"

check "b) the same with --connections 4 (repairs scheduled below the units in flight)"
interrupt zeros4.bin
at=$((J * chunk / 3 + 4321))
overwrite "$out/zeros4.bin.sesscp.part" "$at" $((3 * MiB)) /dev/zero
resume zeros4.bin "$(chunks_touched "$at" $((3 * MiB)))" --connections 4

# ------------------------------------------------------------------ c
check "c) a 2 MiB hole punched into the confirmed region"
interrupt hole.bin
at=$((10 * MiB + 512 * 1024))
if fallocate -p -o "$at" -l $((2 * MiB)) "$out/hole.bin.sesscp.part" 2>"$T/fallocate.err"; then
  resume hole.bin "$(chunks_touched "$at" $((2 * MiB)))"
else
  log "fallocate -p not supported here ($(cat "$T/fallocate.err")): hole case not run"
fi

# ------------------------------------------------------------------ d
check "d) the part truncated below the journal's confirmed length"
interrupt trunc.bin
cut=$((J * chunk / 2 + 777))
truncate -s "$cut" "$out/trunc.bin.sesscp.part"
resume trunc.bin $((J - cut / chunk))

# ------------------------------------------------------------------ e
check "e) the part replaced by random bytes of the same length"
interrupt random.bin
head -c "$(fsize "$out/random.bin.sesscp.part")" /dev/urandom >"$T/random.part"
mv "$T/random.part" "$out/random.bin.sesscp.part"
resume random.bin "$J"

# ------------------------------------------------------------------ f
check "f) --verify-resume tail trusts chunks before the last 64 MiB: the documented risk"
# Killed past 64 MiB, so that chunk 0 lies before the re-hashed window.
interrupt tail.bin 72
((J * chunk > 64 * MiB + chunk)) || fail "journal confirms $J chunks: chunk 0 would be inside the tail window"
flip_byte "$out/tail.bin.sesscp.part" 1000
run_get "$T/tail.bin-2.log" "$base/f/src.bin" -o "$out/tail.bin" --verify-resume tail --json >"$T/tail.bin-2.json"
assert_rc 0 "$GET_RC" "tail.bin: resumed get with --verify-resume tail" "$T/tail.bin-2.log"
if cmp -s "$WWW/src.bin" "$out/tail.bin"; then
  fail "tail.bin: --verify-resume tail repaired chunk 0; the documented behaviour (and docs/URL.md) says it does not"
fi
ok "tail.bin: published with the flipped byte, as documented for --verify-resume tail"
[[ $(json_field "$T/tail.bin-2.json" file_done .damaged_chunks) -eq 0 ]] || fail "tail.bin: damage reported under tail"

log "PASS"
