#!/usr/bin/env bash
# Install what sesscp needs to build and test, if anything is missing.
#
#   bash scripts/deps.sh        # run it
#   . scripts/deps.sh           # or source it (the other scripts do)
#
# Checks each package with dpkg-query and runs apt-get (update + install
# --no-install-recommends) only when something is missing, so an offline
# re-run on a prepared machine works. Needs root to install; without root it
# names the packages to install and fails. Non-interactive (no stdin, CI=true).

SESSCP_DEPS=(g++ cmake make pkg-config ccache mold libcli11-dev libxxhash-dev doctest-dev
  libssl-dev libcurl4-openssl-dev nlohmann-json3-dev libfmt-dev openssl time coreutils procps util-linux
  tmux jq)  # tmux, jq: the terminal and --json integration tests

# Only for the URL integration tests and bench/get.sh (local servers and the
# clients compared against); scripts/test.sh installs them.
SESSCP_TEST_DEPS=(nginx-light openssh-server openssh-client python3-pyftpdlib curl aria2)

# Optional, only for the S3 tests and bench/s3.sh: a local Ceph RADOS Gateway
# (scripts/s3-local.sh) and the independent clients they check against.
SESSCP_S3_DEPS=(ceph-mon ceph-osd ceph-mgr radosgw ceph-common awscli s3cmd python3)

# sesscp_install_missing PKG...: install those of the Debian packages that
# are missing (apt-get update first), or say what to install when not root.
sesscp_install_missing() {
  local pkg status
  local -a missing=()
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: dpkg-query not found: this script supports Debian/Ubuntu only." >&2
    echo "deps: install the equivalents of: $*" >&2
    return 1
  fi
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "deps: all $# packages present"
    return 0
  fi
  echo "deps: missing: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: error: not root, cannot install the missing packages; run:" >&2
    echo "  sudo apt-get update && sudo apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends ${missing[*]}" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get -o DPkg::Lock::Timeout=300 update -q </dev/null; then
    echo "deps: error: apt-get update failed (offline?); missing: ${missing[*]}" >&2
    return 1
  fi
  if ! apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" </dev/null; then
    echo "deps: error: apt-get install failed for: ${missing[*]}" >&2
    return 1
  fi
  echo "deps: installed ${missing[*]}"
}

sesscp_deps() { sesscp_install_missing "${SESSCP_DEPS[@]}"; }
sesscp_test_deps() { sesscp_install_missing "${SESSCP_TEST_DEPS[@]}"; }
sesscp_s3_deps() { sesscp_install_missing "${SESSCP_S3_DEPS[@]}"; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  sesscp_deps
else
  sesscp_deps || return
fi
