#!/usr/bin/env bash
# Scenario: a half-open connection. Sender and receiver run in two network
# namespaces created by the test, joined by a veth pair (addresses exist only
# inside those namespaces). In the middle of a transfer the receiver's link
# goes down: packets vanish with no RST or FIN, as when a host dies or a NAT
# forgets the flow.
#  - the sender notices within --timeout + 1 s;
#  - with --retry it reconnects once the link is back and completes
#    byte-identical, re-sending at most window + chunk.
# Needs root and `ip netns`; skipped otherwise.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

[[ $(id -u) -eq 0 ]] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "ip (iproute2) not installed"
tag="sc$$"
ns_s="$tag-s"
ns_r="$tag-r"
itest_on_exit() {
  ip netns del "$ns_s" 2>/dev/null || true
  ip netns del "$ns_r" 2>/dev/null || true
}
ip netns add "$ns_s" 2>"$T/ns.log" || skip "cannot create a network namespace: $(cat "$T/ns.log")"
ip netns add "$ns_r"
ip link add "$tag-a" type veth peer name "$tag-b" 2>"$T/veth.log" || skip "cannot create a veth pair: $(cat "$T/veth.log")"
ip link set "$tag-a" netns "$ns_s"
ip link set "$tag-b" netns "$ns_r"
ip -n "$ns_s" addr add 10.250.0.1/30 dev "$tag-a"
ip -n "$ns_r" addr add 10.250.0.2/30 dev "$tag-b"
for ns in "$ns_s" "$ns_r"; do ip -n "$ns" link set lo up; done
ip -n "$ns_s" link set "$tag-a" up
ip -n "$ns_r" link set "$tag-b" up
ip netns exec "$ns_s" ping -c 1 -W 2 10.250.0.2 >/dev/null 2>&1 || log "(ping not available or failed; going on)"

name=data.bin
size=$((64 * MiB))
chunk=$((256 * 1024))
window=$((4 * MiB))
rate=$((16 * MiB))
timeout_s=3
src="$T/$name"
dest="$T/dest"
mkdir -p "$dest"
gen_file "$src" "$size" half-open
opts=(--insecure --chunk-size 256K --window 4M --timeout "$timeout_s")

ip netns exec "$ns_r" "$BIN" recv --listen 10.250.0.2:7070 --dir "$dest" --insecure --timeout "$timeout_s" 2>"$T/recv.log" &
rpid=$!
register "$rpid"
wait_for_line "$T/recv.log" "listening on 10\.250\.0\.2:7070" 15 || fail_with_logs "receiver did not start" "$T/recv.log"

check "the receiver's link goes down at ~25 %: the sender notices within ${timeout_s} s + 1 s"
ip netns exec "$ns_s" "$BIN" send "$src" 10.250.0.2:7070 "${opts[@]}" --bwlimit 16M --retry 10 2>"$T/send.log" &
spid=$!
register "$spid"
wait_progress "$dest/$name.sesscp.part" $((size / 4)) "$spid" "$rate" 0 60
ip -n "$ns_r" link set "$tag-b" down
t0=$(now_ms)
wait_for_line "$T/send.log" "reconnecting \(attempt 1/10\)" 30 ||
  fail_with_logs "the sender did not notice the dead link within 30 s" "$T/send.log"
detect=$((LINE_MS - t0))
ok "$(grep -m1 'reconnecting' "$T/send.log")"
log "FIGURE: half-open connection detected after $(fmt_ms "$detect") s (--timeout $timeout_s)"
assert_le "$detect" $(((timeout_s + 1) * 1000)) "detection time in ms (timeout + 1 s)"

check "the link comes back: the retrying sender reconnects and completes"
sleep 2
ip -n "$ns_r" link set "$tag-b" up
wait_exit "$spid" 120 || fail_with_logs "sender still running 120 s after the link came back" "$T/send.log" "$T/recv.log"
assert_rc 0 "$WAIT_RC" "retrying sender after the link came back" "$T/send.log" "$T/recv.log"
grep -E 'reconnecting|resumed at' "$T/send.log" | sed 's/^/    /'
last_summary "$T/send.log" send "$name"
assert_same "$src" "$dest/$name"
assert_no_leftovers "$dest" "$name"
resent=$((S_N - size))
log "FIGURE: $S_N bytes sent for $size: $resent re-sent"
assert_resent_bound "$resent" $((window + chunk)) "re-sent after a half-open connection (window + chunk)"
log "PASS"
