#!/usr/bin/env bash
# Install missing dependencies, then configure and build sesscp.
#
#   bash scripts/build.sh                 # -> build/sesscp (RelWithDebInfo, -Werror)
#   SESSCP_SANITIZE=1 bash scripts/build.sh   # -> build-asan/sesscp (ASan + UBSan)
#
# Environment: SESSCP_BUILD_TYPE (default RelWithDebInfo), SESSCP_BUILD_DIR
# (default build/ or build-asan/), SESSCP_WERROR (default ON). Prints the binary's path as the last line.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/deps.sh
. "$root/scripts/deps.sh"

build_type=${SESSCP_BUILD_TYPE:-RelWithDebInfo}
args=(-DCMAKE_BUILD_TYPE="$build_type" -DSESSCP_WERROR="${SESSCP_WERROR:-ON}")
if [[ ${SESSCP_SANITIZE:-0} == 1 ]]; then
  build_dir=${SESSCP_BUILD_DIR:-$root/build-asan}
  args+=(-DSESSCP_SANITIZE=ON)
else
  build_dir=${SESSCP_BUILD_DIR:-$root/build}
  args+=(-DSESSCP_SANITIZE=OFF)
fi

cmake -S "$root" -B "$build_dir" "${args[@]}"
cmake --build "$build_dir" -j "$(nproc)"
bin="$build_dir/sesscp"
[[ -x $bin ]] || { echo "build: error: $bin was not produced" >&2; exit 1; }
echo "$bin"
