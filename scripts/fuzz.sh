#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz/) with clang and run each one.
#
#   bash scripts/fuzz.sh                       # 60 s per target
#   SESSCP_FUZZ_SECONDS=600 bash scripts/fuzz.sh
#   bash scripts/fuzz.sh fuzz_journal          # only the named targets
#
# Installs clang and libclang-rt-14-dev (libFuzzer, ASan, UBSan runtimes) if
# missing, configures build-fuzz/ (clang, -DSESSCP_FUZZ=ON, ASan + UBSan) and
# builds the whole tree there. Each target runs on a copy of its seed corpus
# in a temporary directory, so tests/fuzz/corpus/ is never modified. Prints
# one line per target:
#
#   fuzz <target>: <executions> execs in <seconds> s, <crashes> crashes
#
# and exits 1 if any target crashed; the crashing input is kept under
# SESSCP_FUZZ_ARTIFACTS (default build-fuzz/fuzz-artifacts/<target>/) and its
# path printed. Environment: SESSCP_FUZZ_SECONDS (default 60),
# SESSCP_FUZZ_BUILD_DIR (default build-fuzz), SESSCP_FUZZ_ARTIFACTS,
# TMPDIR (where corpus copies and fuzz_session's scratch directory go;
# TMPDIR=/dev/shm makes fuzz_session faster, its journal fsyncs are free on tmpfs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

FUZZ_PACKAGES=(clang libclang-rt-14-dev)
ALL_TARGETS=(fuzz_frame fuzz_journal fuzz_session)

# The project's own dependencies, then clang's libFuzzer runtime, with the
# same dpkg-query-first installer (no network when nothing is missing).
# shellcheck source=scripts/deps.sh
. "$root/scripts/deps.sh"
sesscp_install_missing "${FUZZ_PACKAGES[@]}"

seconds=${SESSCP_FUZZ_SECONDS:-60}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "fuzz: SESSCP_FUZZ_SECONDS must be a positive integer" >&2; exit 2; }
build_dir=${SESSCP_FUZZ_BUILD_DIR:-$root/build-fuzz}
artifacts=${SESSCP_FUZZ_ARTIFACTS:-$build_dir/fuzz-artifacts}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

CC=clang CXX=clang++ cmake -S "$root" -B "$build_dir" -DSESSCP_FUZZ=ON -DSESSCP_SANITIZE=ON -DBUILD_TESTING=ON
# The whole tree, not only the fuzz targets: this is also the clang -Werror build.
cmake --build "$build_dir" -j "$(nproc)"

work=$(mktemp -d "${TMPDIR:-/tmp}/sesscp-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# UBSan findings must stop the run like ASan's do, with a stack.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=0
summary=()
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  corpus=$work/corpus-$name
  mkdir -p "$corpus" "$artifacts/$t"
  cp "$root/tests/fuzz/corpus/$name/"* "$corpus/"
  log=$work/$t.log
  before=$(find "$artifacts/$t" -type f | wc -l)
  touch "$work/$t.start"
  echo "fuzz: running $t for $seconds s (log: $artifacts/$t.log)"
  start=$SECONDS
  rc=0
  "$build_dir/tests/$t" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$t/" >"$log" 2>&1 || rc=$?
  elapsed=$((SECONDS - start))
  cp "$log" "$artifacts/$t.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  # Without final stats (e.g. the process was killed), the last status line.
  [[ -n $execs ]] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
  [[ -n $execs ]] || execs=0
  crashes=$(( $(find "$artifacts/$t" -type f | wc -l) - before ))
  line="fuzz $t: $execs execs in $elapsed s, $crashes crashes"
  echo "$line"
  summary+=("$line")
  if [[ $crashes -gt 0 || $rc -ne 0 ]]; then
    failed=1
    [[ $crashes -gt 0 || $rc -eq 0 ]] || echo "fuzz: $t exited with status $rc without leaving an input" >&2
    find "$artifacts/$t" -type f -newer "$work/$t.start" -printf 'fuzz: %p: crashing input\n' >&2
    # The sanitizer's or the target's own explanation.
    grep -E 'ERROR: |invariant violated|runtime error|SUMMARY: |^    #[0-9]' "$log" | head -25 >&2 || true
  fi
done

echo "fuzz: summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
