#!/usr/bin/env bash
# sesscp against `aws s3 cp` and `s3cmd put/get` on the same file and the
# same local Ceph RADOS Gateway (scripts/s3-local.sh), alternating tools
# within each round; prints per-round times, ratios (other / sesscp) and
# medians with min-max as Markdown. Every upload is checked by SHA-256 of a
# download, every download against the source. Timings never fail it.
#
#   bench/s3.sh [SIZE_MiB=1024] [ROUNDS=3]
#
# Interrupted case: each tool's upload is killed (-9) once the server holds
# half of the object in confirmed parts (bench/lib/s3_kill_at.py polls
# ListParts every 50 ms: the same amount of confirmed data for every tool),
# then re-run; timed are the completing run and the whole (first run to the
# kill + completing run). sesscp resumes from its journal and ListParts;
# aws-cli starts over (it cannot resume); s3cmd is run twice: plain (starts
# over) and with --continue-put on the re-run (s3cmd's own resume, which finds
# the upload by key and skips parts whose size and MD5 match).
# Needs SESSCP_S3_DEPS (scripts/deps.sh). Env: SESSCP_BIN, S3_CONNECTIONS (8).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
rounds=${2:-3}
conns=${S3_CONNECTIONS:-8}
bin=${SESSCP_BIN:-$root/build/sesscp}
# shellcheck source=../tests/integration/lib.sh
. "$root/tests/integration/lib.sh"
# shellcheck source=../tests/integration/s3_lib.sh
. "$root/tests/integration/s3_lib.sh"
# shellcheck source=lib/med_range.sh
. "$root/bench/lib/med_range.sh"
TEST_NAME=bench-s3
itest_init "$bin" >/dev/null
# Objects are removed after use, but the OSD still needs room for a round
# (a full 10 GiB OSD stalls RGW: aws-cli then times out). Sparse, so cheap.
export SESSCP_S3_OSD_GIB=${SESSCP_S3_OSD_GIB:-40}
# reclaim: RGW frees a removed object's space only when its garbage
# collector runs (hours by default): run it now, so that rounds do not add up
# (5 rounds of 1 GiB wrote about 45 GiB and stalled a 40 GiB OSD).
reclaim() { radosgw-admin -c "$SESSCP_S3_DIR/ceph.conf" -n client.admin gc process --include-all >/dev/null 2>&1 || true; }
start_rgw >&2
make_bucket bench
src="$T/src.img"
gen_file "$src" $((size_mib * MiB)) bench-s3
want=$(sha256sum "$src" | cut -d' ' -f1)
cat >"$T/s3cfg" <<CFG
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = ${AWS_ENDPOINT_URL#http://}
host_bucket = ${AWS_ENDPOINT_URL#http://}
use_https = False
signature_v2 = False
multipart_chunk_size_mb = 8
progress_meter = False
CFG
chmod 600 "$T/s3cfg"
tools=(sesscp aws s3cmd)

# cmd_up TOOL KEY / cmd_down TOOL KEY OUT: the command line of one transfer.
cmd_up() {
  case $1 in
    sesscp) echo "$BIN" send "$src" "s3://bench/$2" --connections "$conns" -q ;;
    aws) echo /usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp --only-show-errors "$src" "s3://bench/$2" ;;
    s3cmd) echo s3cmd -c "$T/s3cfg" -q put "$src" "s3://bench/$2" ;;
  esac
}
cmd_down() {
  case $1 in
    sesscp) echo "$BIN" get "s3://bench/$2" -o "$3" --connections "$conns" -q ;;
    aws) echo /usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp --only-show-errors "s3://bench/$2" "$3" ;;
    s3cmd) echo s3cmd -c "$T/s3cfg" -q get --force "s3://bench/$2" "$3" ;;
  esac
}

# timed_run CMD...: run it, print wall seconds.
timed_run() {
  local t0 t1
  t0=$(now_ms)
  "$@" >/dev/null 2>"$T/last.err" || { show_log "$T/last.err"; fail "failed: $*"; }
  t1=$(now_ms)
  fmt_ms $((t1 - t0))
}

# killed_then_completed TOOL KEY: start the upload, kill -9 it once the
# server holds half of it, re-run it; print "HELD_BYTES FIRST_S REST_S".
killed_then_completed() {
  local pid t0 held first rest again=()
  t0=$(now_ms)
  # shellcheck disable=SC2046
  $(cmd_up "${1%-continue}" "$2") >/dev/null 2>&1 &
  pid=$!
  register "$pid"
  held=$(/usr/bin/python3 "$root/bench/lib/s3_kill_at.py" bench "$2" $((size_mib * MiB)) 0.5 "$pid" 300) ||
    fail "$1 ended or stalled before the server held half of $2"
  wait "$pid" 2>/dev/null || true
  unregister "$pid"
  first=$(fmt_ms $(($(now_ms) - t0)))
  [[ $1 == s3cmd-continue ]] && again=(--continue-put)
  # shellcheck disable=SC2046
  rest=$(timed_run $(cmd_up "${1%-continue}" "$2") "${again[@]}")
  echo "$held $first $rest"
}
# Untimed warm-up: RGW creates its data pools on the first write.
awsc s3 cp --only-show-errors "$src" s3://bench/warm.img

declare -A up down res tot
for ((r = 1; r <= rounds; r++)); do
  # Alternate which tool goes first.
  order=("${tools[@]:$(((r - 1) % 3))}" "${tools[@]:0:$(((r - 1) % 3))}")
  for tool in "${order[@]}"; do
    # shellcheck disable=SC2046
    up[$tool,$r]=$(timed_run $(cmd_up "$tool" "$tool-$r.img"))
    [[ $(remote_sha bench "$tool-$r.img") == "$want" ]] || fail "$tool's upload differs"
    rm -f "$T/down.img"
    sync
    # shellcheck disable=SC2046
    down[$tool,$r]=$(timed_run $(cmd_down "$tool" "$tool-$r.img" "$T/down.img"))
    [[ $(sha256sum "$T/down.img" | cut -d' ' -f1) == "$want" ]] || fail "$tool's download differs"
    awsc s3 rm --only-show-errors "s3://bench/$tool-$r.img"
    reclaim
    log "round $r $tool: up ${up[$tool,$r]} s, down ${down[$tool,$r]} s" >&2
  done
done
rtools=(sesscp aws s3cmd s3cmd-continue)
declare -A held first
for ((r = 1; r <= rounds; r++)); do
  order=("${rtools[@]:$(((r - 1) % 4))}" "${rtools[@]:0:$(((r - 1) % 4))}")
  for tool in "${order[@]}"; do
    read -r h f k < <(killed_then_completed "$tool" "resume-$tool-$r.img")
    [[ -n ${k:-} ]] || fail "$tool: the interrupted upload did not complete (see above)"
    held[$tool,$r]=$h first[$tool,$r]=$f res[$tool,$r]=$k
    tot[$tool,$r]=$(awk -v a="$f" -v b="$k" 'BEGIN {printf "%.3f", a + b}')
    [[ $(remote_sha bench "resume-$tool-$r.img") == "$want" ]] || fail "$tool's resumed upload differs"
    awsc s3 rm --only-show-errors "s3://bench/resume-$tool-$r.img"
    log "round $r $tool: killed at $((h / MiB)) MiB held after $f s, completing run $k s" >&2
  done
  # The starting-over tools leave their killed uploads behind: abort them.
  "$BIN" s3-abort --all -q s3://bench/ >/dev/null 2>&1 || true
  reclaim
done

# stats NAME: "median (min-max)" of the rounds of array NAME for $tool.
stats() {
  local -n a=$1
  for ((r = 1; r <= rounds; r++)); do echo "${a[$tool,$r]}"; done | med_range
}
# ratios NAME: per-round other/sesscp time ratios for $tool.
ratios() {
  local -n a=$1
  for ((r = 1; r <= rounds; r++)); do awk -v o="${a[$tool,$r]}" -v s="${a[sesscp,$r]}" 'BEGIN {printf "%.2f ", o / s}'; done
}
# mratio NAME: median (min-max) of the per-round ratios tool / sesscp.
mratio() {
  ratios "$1" | tr ' ' '\n' | med_range
}
mb=$size_mib
echo
echo "S3 to a local Ceph RGW ($(ceph --version | awk '{print $3}')), $mb MiB, $rounds rounds, sesscp --connections $conns"
echo
echo "| tool | upload s, median (min-max) | MiB/s | download s | MiB/s | ratio up / down (per round, tool / sesscp) |"
echo "|---|---|---|---|---|---|"
for tool in "${tools[@]}"; do
  u=$(stats up) d=$(stats down)
  echo "| $tool | $u | $(awk -v m="$mb" -v t="${u%% *}" 'BEGIN {printf "%.0f", m / t}') | $d | $(awk -v m="$mb" -v t="${d%% *}" 'BEGIN {printf "%.0f", m / t}') | $(ratios up)/ $(ratios down)|"
done
echo
echo "Interrupted upload: kill -9 once the server holds half of the object in parts, then the same command again"
echo "(s3cmd-continue: the re-run adds --continue-put)."
echo
echo "| tool | MiB held at the kill | completing run s | whole (to kill + completing) s | completing run, tool / sesscp (per round) | median | whole, tool / sesscp (per round) | median |"
echo "|---|---|---|---|---|---|---|---|"
for tool in "${rtools[@]}"; do
  h=$(for ((r = 1; r <= rounds; r++)); do echo $((${held[$tool,$r]} / MiB)); done | sort -g | awk '{v[NR]=$1} END {printf "%d-%d", v[1], v[NR]}')
  echo "| $tool | $h | $(stats res) | $(stats tot) | $(ratios res)| $(mratio res) | $(ratios tot)| $(mratio tot) |"
done
