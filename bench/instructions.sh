#!/usr/bin/env bash
# Instructions per byte for each side, counted by valgrind --tool=callgrind:
# a noise-free figure on a noisy machine. Sender and receiver both run under
# callgrind on loopback, plaintext and TLS, with a SIZE file and a 1 MiB
# file; the marginal cost (difference of the two over the difference of the
# sizes) removes start-up (process, OpenSSL, handshake) from the per-byte figure.
# Only user-space instructions are counted: the kernel's copies, TCP and the
# page cache are in the sys time of bench/compare.sh instead.
#
#   bench/instructions.sh                 # 64 MiB
#   SIZE=16MiB bench/instructions.sh
#
# Environment: SIZE (64MiB), TOP (functions listed per side, 8), INSTALL,
# SESSCP_BIN, BENCH_DIR, OUT_DIR as in compare.sh.
# Writes OUT_DIR/instructions-latest.md and prints it.
. "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-64MiB}
TOP=${TOP:-8}
OUT_DIR=${OUT_DIR:-$BENCH_ROOT/bench/results}
bytes=$(size_bytes "$SIZE")
small=$((1 << 20))

bench_init instructions
bench_install valgrind || true
command -v valgrind >/dev/null || bench_die "valgrind not installed (apt-get install valgrind)"
bench_build
mkdir -p "$W/dst"
make_source "$W/big.bin" "$bytes"
head -c "$small" "$W/big.bin" >"$W/small.bin"
"$BIN" keygen -o "$W/key" >/dev/null 2>&1

cg() { valgrind --tool=callgrind --callgrind-out-file="$1" --dump-instr=no --collect-jumps=no "${@:2}"; }
total_ir() { sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$1" | head -1; }

# measure MODE FILE TAG: sender and receiver under callgrind; outputs $W/TAG.{send,recv}.cg
measure() {
  local sec=(--insecure) rp port
  [[ $1 == tls ]] && sec=(--key-file "$W/key")
  rm -f "$W/dst"/*
  : >"$W/r.log" # empty before the receiver starts: never read the last run's port
  cg "$W/$3.recv.cg" "$BIN" recv --listen 127.0.0.1:0 --dir "$W/dst" --once --timeout 300 "${sec[@]}" 2>"$W/r.log" &
  rp=$!; bench_track "$rp"
  port=$(sesscp_port "$W/r.log")
  cg "$W/$3.send.cg" "$BIN" send "$2" "127.0.0.1:$port" --timeout 300 "${sec[@]}" 2>"$W/s.log" ||
    bench_die "send under valgrind failed: $(tail -3 "$W/s.log")"
  wait "$rp" || bench_die "recv under valgrind failed: $(tail -3 "$W/r.log")"
  cmp -s "$2" "$W/dst/$(basename "$2")" || bench_die "$1: destination differs"
}

for mode in plain tls; do
  bench_log "$mode: $(human "$bytes") and 1 MiB under callgrind (slow)"
  measure "$mode" "$W/big.bin" "$mode.big"
  measure "$mode" "$W/small.bin" "$mode.small"
done

per_byte() { awk -v a="$1" -v n="$2" 'BEGIN {printf "%.2f", a / n}'; }
marginal() { awk -v a="$1" -v b="$2" -v n="$3" -v m="$4" 'BEGIN {printf "%.2f", (a - b) / (n - m)}'; }
md=$W/instructions.md
{
  echo "# Instructions per byte, valgrind --tool=callgrind ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$(human "$bytes") file over 127.0.0.1, user-space instructions only (kernel copies, TCP, page cache not counted)."
  echo "Marginal = (instructions for $(human "$bytes") - instructions for 1 MiB) / (the difference in bytes): start-up excluded."
  echo
  echo "| mode | sender instr/byte | receiver instr/byte | sender marginal | receiver marginal | sender total Ir | receiver total Ir |"
  echo "|---|---|---|---|---|---|---|"
  for mode in plain tls; do
    sb=$(total_ir "$W/$mode.big.send.cg"); rb=$(total_ir "$W/$mode.big.recv.cg")
    ss=$(total_ir "$W/$mode.small.send.cg"); rs=$(total_ir "$W/$mode.small.recv.cg")
    echo "| $([[ $mode == plain ]] && echo "plaintext (--insecure)" || echo "TLS 1.3 PSK") | $(per_byte "$sb" "$bytes") | $(per_byte "$rb" "$bytes") |" \
      "$(marginal "$sb" "$ss" "$bytes" "$small") | $(marginal "$rb" "$rs" "$bytes" "$small") | $sb | $rb |"
  done
  for mode in plain tls; do
    for side in send recv; do
      echo
      echo "Top $TOP functions by own instructions, $mode, $side ($(human "$bytes")):"
      echo
      echo '```'
      callgrind_annotate --inclusive=no "$W/$mode.big.$side.cg" >"$W/annotate" 2>/dev/null || true
      awk -v top="$TOP" '/file:function/ {on = 1; next} /^-+$/ {next} on && NF && shown < top {print shorten($0); shown++}
        function shorten(l) { gsub(/\[[^]]*\//, "[", l); gsub(/\.\/[^ ]*\//, "", l); return substr(l, 1, 140) }' "$W/annotate"
      echo '```'
      echo
      echo "Who calls memcpy/memmove there (instructions inside the copy, by caller):"
      echo
      echo '```'
      callgrind_annotate --tree=caller --inclusive=no "$W/$mode.big.$side.cg" >"$W/callers" 2>/dev/null || true
      awk '/^ *[0-9,]+ .* \* .*(memcpy|memmove)/ {print block} /^ *[0-9,]+ .*  < / {block = block $0 "\n"; next} {block = ""}' "$W/callers" |
        sed 's/^ *//' | tr -d , | sort -k1,1 -rn | awk 'NF && n < 3 {gsub(/\[[^]]*\//, "["); print substr($0, 1, 140); n++}'
      echo '```'
    done
  done
  echo
  echo "Rerun: \`SIZE=$SIZE bench/instructions.sh\`"
} >"$md"
mkdir -p "$OUT_DIR"
cp "$md" "$OUT_DIR/instructions-latest.md"
cat "$md"
