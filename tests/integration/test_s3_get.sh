#!/usr/bin/env bash
# Scenario: `sesscp get s3://` of 1 GiB from a real Ceph RADOS Gateway,
# killed with -9 midway and resumed: the second run asks (by its -v request
# log) for exactly the bytes after the journaled resume point, and the file
# is byte-identical to what awscli uploaded.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=s3_lib.sh
. "$(dirname "$0")/s3_lib.sh"
itest_init "$@"
start_rgw
make_bucket fetch
gen_file "$T/src.img" "$GiB" src
awsc s3 cp --only-show-errors "$T/src.img" s3://fetch/src.img
want=$(sha256sum "$T/src.img" | cut -d' ' -f1)

# range_bytes LOG: the bytes asked for by the "GET ... bytes A-B" lines.
range_bytes() {
  grep -o 'bytes [0-9]*-[0-9]*' "$1" | awk -F'[ -]' '{s += $3 - $2 + 1} END {print s + 0}'
}

check "get killed midway, then resumed"
"$BIN" get s3://fetch/src.img -o "$T/out.img" --connections 4 --bwlimit 100M -v 2>"$T/g1.log" &
pid=$!
register "$pid"
for ((i = 0; i < 600; i++)); do
  (($(stat -c %s "$T/out.img.sesscp.part" 2>/dev/null || echo 0) > 300 * MiB)) && break
  sleep 0.05
done
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
unregister "$pid"
[[ ! -e $T/out.img ]] || fail "a killed get published the file"
"$BIN" get s3://fetch/src.img -o "$T/out.img" --connections 4 -v 2>"$T/g2.log" || fail_with_logs "resume failed" "$T/g2.log"
resumed=$(grep -o 'resumed at [0-9]*' "$T/g2.log" | tail -1 | grep -o '[0-9]*$')
[[ -n $resumed ]] && ((resumed > 0)) || fail_with_logs "the re-run did not resume" "$T/g2.log"
asked=$(range_bytes "$T/g2.log")
((asked == GiB - resumed)) || fail_with_logs "re-run asked for $asked bytes; $((GiB - resumed)) were missing" "$T/g2.log"
[[ $(sha256sum "$T/out.img" | cut -d' ' -f1) == "$want" ]] || fail "downloaded file differs"
ok "resumed at $resumed, fetched only the $asked missing bytes, same SHA-256"
