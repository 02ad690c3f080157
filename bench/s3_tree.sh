#!/usr/bin/env bash
# Many small objects: a tree of FILES files of SIZE_KiB each (default 500 x
# 64 KiB) uploaded to and downloaded from a local Ceph RADOS Gateway
# (scripts/s3-local.sh) by sesscp and by `aws s3 cp --recursive`, tools
# alternating within each round; prints per-round times, the per-round ratio
# aws / sesscp and its median (min-max) as Markdown. Every tree is checked by
# sorted SHA-256 lists. Timings never fail it.
#
#   bench/s3_tree.sh [FILES=500] [SIZE_KiB=64] [ROUNDS=3]
#
# LATENCY_MS=N puts tests/tools' faultproxy with --latency-ms N (one way:
# RTT 2N) between both tools and the gateway, as a distant gateway would be.
# Needs SESSCP_S3_DEPS (scripts/deps.sh) and a build (the proxy). Env:
# SESSCP_BIN, S3_CONNECTIONS (10, aws-cli's default max_concurrent_requests).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-500}
size_kib=${2:-64}
rounds=${3:-3}
conns=${S3_CONNECTIONS:-10}
latency=${LATENCY_MS:-0}
bin=${SESSCP_BIN:-$root/build/sesscp}
# shellcheck source=../tests/integration/lib.sh
. "$root/tests/integration/lib.sh"
# shellcheck source=../tests/integration/s3_lib.sh
. "$root/tests/integration/s3_lib.sh"
# shellcheck source=lib/med_range.sh
. "$root/bench/lib/med_range.sh"
TEST_NAME=bench-s3-tree
itest_init "$bin" >/dev/null
export SESSCP_S3_OSD_GIB=${SESSCP_S3_OSD_GIB:-40}
start_rgw >&2
make_bucket bench
src=$T/src
for ((i = 0; i < files; i++)); do
  d=$src/d$((i % 10))
  mkdir -p "$d"
  head -c $((size_kib * 1024)) /dev/urandom >"$d/f$i.bin"
done
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
want=$(sums "$src" | sha256sum | cut -d' ' -f1)

cmd_up() {
  case $1 in
    sesscp) echo "$BIN" send "$src/" "s3://bench/$2/" --connections "$conns" -q ;;
    aws) echo /usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp --only-show-errors --recursive "$src" "s3://bench/$2/" ;;
  esac
}
cmd_down() {
  case $1 in
    sesscp) echo "$BIN" get "s3://bench/$2/" -o "$3" --connections "$conns" -q ;;
    aws) echo /usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp --only-show-errors --recursive "s3://bench/$2/" "$3" ;;
  esac
}
timed_run() {
  local t0
  t0=$(now_ms)
  "$@" >/dev/null 2>"$T/last.err" || { show_log "$T/last.err"; fail "failed: $*"; }
  fmt_ms $(($(now_ms) - t0))
}

if [[ $latency != 0 ]]; then
  proxy=$(dirname "$bin")/tests/faultproxy
  [[ -x $proxy ]] || fail "no faultproxy beside $bin (build the tests)"
  "$proxy" --listen 127.0.0.1:0 --target "127.0.0.1:${AWS_ENDPOINT_URL##*:}" --port-file "$T/proxy.port" \
    --latency-ms "$latency" 2>"$T/proxy.log" &
  register $!
  for ((i = 0; i < 100; i++)); do [[ -s $T/proxy.port ]] && break; sleep 0.05; done
  export AWS_ENDPOINT_URL=http://127.0.0.1:$(<"$T/proxy.port")
fi
# Untimed warm-up: RGW's first write to a bucket takes about 2 s (it makes
# the bucket's index and data pools), which the first tool would pay.
head -c 1024 /dev/urandom >"$T/warm.bin"
awsc s3 cp --only-show-errors "$T/warm.bin" s3://bench/warm.bin
tools=(sesscp aws)
declare -A up down
for ((r = 1; r <= rounds; r++)); do
  order=("${tools[@]:$(((r - 1) % 2))}" "${tools[@]:0:$(((r - 1) % 2))}")
  for tool in "${order[@]}"; do
    # shellcheck disable=SC2046
    up[$tool,$r]=$(timed_run $(cmd_up "$tool" "$tool-$r"))
    rm -rf "$T/down"
    # shellcheck disable=SC2046
    down[$tool,$r]=$(timed_run $(cmd_down "$tool" "$tool-$r" "$T/down"))
    [[ $(sums "$T/down" | sha256sum | cut -d' ' -f1) == "$want" ]] || fail "$tool's tree differs"
    awsc s3 rm --only-show-errors --recursive "s3://bench/$tool-$r/"
    log "round $r $tool: up ${up[$tool,$r]} s, down ${down[$tool,$r]} s" >&2
  done
done

stats() {
  local -n a=$1
  for ((r = 1; r <= rounds; r++)); do echo "${a[$tool,$r]}"; done | med_range
}
ratio() {
  local -n a=$1
  for ((r = 1; r <= rounds; r++)); do awk -v o="${a[aws,$r]}" -v s="${a[sesscp,$r]}" 'BEGIN {printf "%.2f\n", o / s}'; done | med_range
}
echo
echo "S3 tree to a local Ceph RGW ($(ceph --version | awk '{print $3}')): $files files x $size_kib KiB, $rounds rounds, sesscp --connections $conns, added one-way latency ${latency} ms"
echo
echo "| tool | upload s, median (min-max) | download s, median (min-max) |"
echo "|---|---|---|"
for tool in "${tools[@]}"; do echo "| $tool | $(stats up) | $(stats down) |"; done
echo
echo "aws / sesscp per round, median (min-max): upload $(ratio up), download $(ratio down)"
