#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with a RADOS Gateway on loopback, for
# the S3 tests and bench/s3.sh (docs/S3.md). No systemd, nothing outside the
# temporary directory it makes; only 127.0.0.1 addresses.
#
#   eval "$(scripts/s3-local.sh start)"   # prints export lines: endpoint, keys, SESSCP_S3_DIR
#   scripts/s3-local.sh stop [DIR]        # kills what start started, removes DIR (default $SESSCP_S3_DIR)
#
# start installs SESSCP_S3_DEPS (scripts/deps.sh) if they are missing; it
# exits 125 when they cannot be installed, so tests can skip. One OSD on a
# sparse bluestore file (SESSCP_S3_OSD_GIB, default 10), pool size 1, cephx.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "s3-local: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local i
  for ((i = 0; i < limit * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "error: $what not ready after ${limit}s; logs in $dir/log"
  tail -n 20 "$dir"/log/*.log >&2 || true
  return 1
}

write_conf() {
  local fsid=$1 mon_port=$2
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public network = 127.0.0.1/32
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 5
osd crush chooseleaf type = 0
keyring = $dir/keyring
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
ms bind ipv4 = true
ms bind ipv6 = false
[mon.a]
mon data = $dir/mon.a
[mgr.x]
mgr data = $dir/mgr.x
[osd.0]
osd data = $dir/osd.0
osd objectstore = bluestore
bluestore block path = $dir/osd0.block
bluestore block create = false
osd max object name len = 256
osd max object namespace len = 64
[client.rgw.gw]
rgw data = $dir/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = 127.0.0.1
EOF
}

make_keys() {
  local k=$dir/keyring
  ceph-authtool --create-keyring "$k" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$k" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$k" --gen-key -n mgr.x --cap mon 'allow profile mgr' --cap osd 'allow *' \
    --cap mds 'allow *' >/dev/null
  ceph-authtool "$k" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap mgr 'allow profile osd' \
    --cap osd 'allow *' >/dev/null
  ceph-authtool "$k" --gen-key -n client.rgw.gw --cap mon 'allow rw' --cap osd 'allow rwx' \
    --cap mgr 'allow rw' >/dev/null
}

start_mon() {
  local fsid=$1 mon_port=$2
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
  ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" 2>>"$dir/log/setup.log"
  ceph-mon -c "$dir/ceph.conf" -i a
  wait_for 60 "ceph-mon" ceph -c "$dir/ceph.conf" --connect-timeout 5 mon stat
}

start_osd() {
  local c=$dir/ceph.conf gib=${SESSCP_S3_OSD_GIB:-10}
  local uuid
  uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  mkdir -p "$dir/osd.0"
  truncate -s "${gib}G" "$dir/osd0.block"
  ceph -c "$c" osd new "$uuid" 0 >/dev/null
  ceph-authtool "$dir/keyring" -n osd.0 -p >"$dir/osd.0/key"
  ceph-authtool --create-keyring "$dir/osd.0/keyring" --name osd.0 --add-key "$(cat "$dir/osd.0/key")" >/dev/null
  ceph-osd -c "$c" -i 0 --mkfs --osd-uuid "$uuid" --keyring "$dir/osd.0/keyring" 2>>"$dir/log/setup.log" >/dev/null
  ceph-osd -c "$c" -i 0 --keyring "$dir/osd.0/keyring"
  wait_for 120 "ceph-osd" sh -c "ceph -c '$c' osd stat | grep -q '1 up'"
}

start_rgw() {
  local c=$dir/ceph.conf
  mkdir -p "$dir/rgw"
  radosgw -c "$c" -n client.rgw.gw --keyring "$dir/keyring"
  wait_for 180 "radosgw" python3 -c "import urllib.request,sys
try: urllib.request.urlopen('http://127.0.0.1:$rgw_port/', timeout=2)
except urllib.error.HTTPError: pass"
}

make_user() {
  local json
  json=$(radosgw-admin -c "$dir/ceph.conf" -n client.admin user create --uid=sesscp \
    --display-name=sesscp 2>>"$dir/log/setup.log")
  python3 -c 'import json,sys; k=json.load(sys.stdin)["keys"][0]; print(k["access_key"]); print(k["secret_key"])' \
    <<<"$json" >"$dir/user"
}

cmd_start() {
  # shellcheck source=scripts/deps.sh
  . "$here/deps.sh" >&2 || exit 125
  sesscp_s3_deps >&2 || exit 125
  dir=$(mktemp -d "${TMPDIR:-/tmp}/sesscp-s3.XXXXXX")
  mkdir -p "$dir/log" "$dir/run"
  local fsid mon_port t0=$SECONDS
  fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  mon_port=$(free_port)
  rgw_port=$(free_port)
  export CEPH_CONF=$dir/ceph.conf
  write_conf "$fsid" "$mon_port"
  make_keys
  start_mon "$fsid" "$mon_port" || { cmd_stop "$dir"; exit 1; }
  ceph-mgr -c "$dir/ceph.conf" -i x
  start_osd || { cmd_stop "$dir"; exit 1; }
  start_rgw || { cmd_stop "$dir"; exit 1; }
  make_user || { cmd_stop "$dir"; exit 1; }
  log "up in $((SECONDS - t0))s: http://127.0.0.1:$rgw_port (dir $dir)"
  local access secret
  { read -r access; read -r secret; } <"$dir/user"
  echo "export SESSCP_S3_DIR=$dir"
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port"
  echo "export AWS_ACCESS_KEY_ID=$access"
  echo "export AWS_SECRET_ACCESS_KEY=$secret"
  echo "export AWS_REGION=us-east-1"
  echo "export AWS_DEFAULT_REGION=us-east-1"
}

# Kill the daemons by the pid files start wrote (never by name), then remove DIR.
cmd_stop() {
  local d=${1:-${SESSCP_S3_DIR:-}}
  [[ -n $d && -d $d && $d == */sesscp-s3.* ]] || { log "error: no cluster directory to stop"; return 1; }
  local f pid pids=()
  for f in "$d"/run/*.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    [[ $pid =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$d"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop "${2:-}" ;;
  *) echo "usage: $0 start|stop [DIR]" >&2; exit 64 ;;
esac
