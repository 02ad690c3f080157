#!/usr/bin/env bash
# Install missing dependencies, build, and run the whole test suite (unit +
# integration) with ctest, serially (the integration tests are I/O heavy).
#
#   bash scripts/test.sh                      # in build/
#   SESSCP_SANITIZE=1 bash scripts/test.sh    # ASan + UBSan build in build-asan/
#
# Extra arguments are passed to ctest (e.g. -R integration.test_busy, -L integration).
# Exits with ctest's status.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [[ ${SESSCP_SANITIZE:-0} == 1 ]]; then
  build_dir=${SESSCP_BUILD_DIR:-$root/build-asan}
else
  build_dir=${SESSCP_BUILD_DIR:-$root/build}
fi
export SESSCP_BUILD_DIR=$build_dir
bash "$root/scripts/build.sh"
# The URL tests need local servers; without them they skip (exit 125).
# shellcheck source=scripts/deps.sh
(. "$root/scripts/deps.sh" && sesscp_test_deps) || echo "test: could not install the URL test packages; those tests will skip"
echo "test: running ctest in $build_dir"
status=0
ctest --test-dir "$build_dir" --output-on-failure -j1 "$@" || status=$?
exit "$status"
