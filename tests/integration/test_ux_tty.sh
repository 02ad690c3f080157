#!/usr/bin/env bash
# Scenario: `sesscp send` on a real terminal (tmux) through faultproxy --rate,
# so the transfer lasts a few seconds. capture-pane, sampled over time, shows
# one progress line that is redrawn in place (the same screen row, growing
# percentages, rates, ETA, state) and, at the end, the summary line with no
# progress line left. The same run off a terminal has no carriage return.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"
command -v tmux >/dev/null 2>&1 || skip "tmux not installed (scripts/deps.sh installs it)"

name=data.bin
size=$((12 * MiB))
rate=$((3 * MiB))
dest="$T/dest"
mkdir -p "$dest"
gen_file "$T/$name" "$size" ux-tty
sock="$T/tmux.sock"
# A private tmux server, killed with everything else on exit.
trap 'rc=$?; tmux -S "$sock" kill-server 2>/dev/null || true; (exit $rc); itest_cleanup' EXIT

start_recv "$dest" "$T/recv.log"
start_proxy "$T/proxy.log" "$RECV_PORT" --rate "$rate"

check "on a terminal: one progress line, redrawn in place, then the summary"
cat >"$T/run.sh" <<RUN
#!/usr/bin/env bash
"$BIN" send "$T/$name" 127.0.0.1:$PROXY_PORT --key-file "$SESSCP_KEY_FILE" --chunk-size 256K --window 1M
echo "EXIT=\$?" >"$T/tty.rc"
sleep 600
RUN
chmod +x "$T/run.sh"
tmux -S "$sock" new-session -d -s ux -x 160 -y 12 "$T/run.sh"
pattern="^$name  [0-9.]+ [KMG]?i?B / 12\\.0 MiB  [0-9]+%"
declare -A seen=()
samples=0
for ((i = 0; i < 300; i++)); do # at most 30 s
  tmux -S "$sock" capture-pane -p -t ux >"$T/screen.txt" 2>/dev/null || true
  if [[ -s $T/tty.rc ]]; then break; fi
  n=$(grep -cE "$pattern" "$T/screen.txt" || true)
  ((n <= 1)) || fail_with_logs "$n progress lines on the screen: not redrawn in place" "$T/screen.txt"
  if ((n == 1)); then
    line=$(grep -E "$pattern" "$T/screen.txt")
    row=$(grep -nE "$pattern" "$T/screen.txt" | cut -d: -f1)
    [[ -z ${first_row:-} ]] && first_row=$row
    [[ $row == "$first_row" ]] || fail_with_logs "the progress line moved from row $first_row to $row" "$T/screen.txt"
    if [[ -z ${seen[$line]:-} ]]; then
      seen[$line]=1
      samples=$((samples + 1))
      ((samples <= 6)) && log "screen row $row: $line"
    fi
  fi
  sleep 0.1
done
[[ -s $T/tty.rc ]] || fail_with_logs "send did not finish within 30 s on the terminal" "$T/screen.txt"
[[ $(<"$T/tty.rc") == EXIT=0 ]] || fail_with_logs "send on the terminal: $(<"$T/tty.rc")" "$T/screen.txt"
((samples >= 3)) || fail "only $samples different progress lines seen: the line is not redrawn while it runs"
ok "$samples different renderings of one progress line, all on screen row $first_row"
printf '%s\n' "${!seen[@]}" | grep -qE ' ETA [0-9]+:[0-9]{2}  (transferring|finalising)' ||
  fail "no progress line with a rate, an ETA and a state"
printf '%s\n' "${!seen[@]}" | grep -qE '[0-9.]+ [KMG]?i?B/s \(avg [0-9.]+ [KMG]?i?B/s\)' || fail "no current and average rate"
ok "rates, ETA and state are shown"
tmux -S "$sock" capture-pane -p -t ux >"$T/screen.txt"
sed 's/^/    | /' "$T/screen.txt" | grep -v '^    | $'
grep -qE "^sesscp: send $name: complete, $size bytes total" "$T/screen.txt" || fail_with_logs "no summary line on the screen" "$T/screen.txt"
if grep -qE "$pattern" "$T/screen.txt"; then fail_with_logs "a progress line is left on the screen after the summary" "$T/screen.txt"; fi
ok "the screen ends with the summary line"

check "off a terminal, the same transfer prints no carriage return"
rm -f "$dest/$name"
run_send "$T/pipe.log" "$T/$name" "127.0.0.1:$PROXY_PORT" --chunk-size 256K --window 1M
assert_rc 0 "$SEND_RC" "send into a file" "$T/pipe.log"
assert_no_cr "$T/pipe.log" "$T/recv.log"
[[ $(wc -l <"$T/pipe.log") -eq 1 ]] || fail_with_logs "expected the summary line alone" "$T/pipe.log"
ok "stderr is one line: $(cat "$T/pipe.log")"
log "PASS"
