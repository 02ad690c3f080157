#!/usr/bin/env bash
# Scenario: `cmake --install` into a temporary prefix installs bin/sesscp and
# share/man/man1/sesscp.1; the page renders without warnings (man -l, else
# groff, else mandoc); --help of every subcommand has examples, and the
# exit-code table is in --help, the man page and the README.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

build=$(dirname "$BIN")
[[ -f $build/cmake_install.cmake ]] || skip "$build is not a CMake build directory"
command -v cmake >/dev/null 2>&1 || skip "cmake not installed"
src=$(cd "$(dirname "$0")/../.." && pwd)

check "cmake --install into a temporary prefix"
cmake --install "$build" --prefix "$T/prefix" >"$T/install.log" 2>&1 || fail_with_logs "cmake --install failed" "$T/install.log"
[[ -x $T/prefix/bin/sesscp ]] || fail_with_logs "bin/sesscp not installed" "$T/install.log"
[[ -f $T/prefix/share/man/man1/sesscp.1 ]] || fail_with_logs "share/man/man1/sesscp.1 not installed" "$T/install.log"
"$T/prefix/bin/sesscp" --version | grep -q '^sesscp ' || fail "installed binary does not run"
ok "installed: $(cd "$T/prefix" && find . -type f | sort | tr '\n' ' ')"

check "the man page renders"
page="$T/prefix/share/man/man1/sesscp.1"
if command -v man >/dev/null 2>&1; then
  MANWIDTH=100 man --warnings -l "$page" >"$T/man.txt" 2>"$T/man.err" </dev/null || fail_with_logs "man -l failed" "$T/man.err"
  renderer="man -l"
elif command -v groff >/dev/null 2>&1; then
  groff -man -Tutf8 -ww "$page" >"$T/man.txt" 2>"$T/man.err" || fail_with_logs "groff failed" "$T/man.err"
  renderer=groff
elif command -v mandoc >/dev/null 2>&1; then
  mandoc -Tlint "$page" >"$T/man.err" 2>&1 || fail_with_logs "mandoc -Tlint" "$T/man.err"
  mandoc -Tutf8 "$page" >"$T/man.txt"
  renderer=mandoc
else
  skip "no man, groff or mandoc to render the page"
fi
[[ ! -s $T/man.err ]] || fail_with_logs "$renderer warned about the page" "$T/man.err"
for section in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES; do
  grep -q "^$section" "$T/man.txt" || fail_with_logs "section $section missing from the rendered page" "$T/man.txt"
done
ok "$renderer: $(wc -l <"$T/man.txt") lines, no warnings; $(head -n 1 "$T/man.txt" | tr -s ' ')"

check "exit codes 0 64 65 69 70 73 74 75 76 77 in --help, the man page and the README"
"$BIN" --help >"$T/help.txt"
for code in 0 64 65 69 70 73 74 75 76 77; do
  grep -qE "^  $code +[a-z]" "$T/help.txt" || fail_with_logs "--help lacks exit code $code" "$T/help.txt"
  grep -qE "^ +$code +[A-Z]" "$T/man.txt" || fail_with_logs "the man page lacks exit code $code" "$T/man.txt"
  grep -qE "^\| $code \|" "$src/README.md" || fail "README lacks exit code $code"
done
ok "all ten codes in all three"

check "--help of every subcommand has examples"
for sub in send recv status keygen; do
  "$BIN" "$sub" --help >"$T/help-$sub.txt" || fail "sesscp $sub --help exited $?"
  grep -qE '^Examples?:' "$T/help-$sub.txt" || fail_with_logs "sesscp $sub --help has no examples" "$T/help-$sub.txt"
  grep -qE "^  sesscp $sub " "$T/help-$sub.txt" || fail_with_logs "sesscp $sub --help: no example of sesscp $sub" "$T/help-$sub.txt"
done
ok "send, recv, status, keygen"
log "PASS"
