#!/usr/bin/env bash
# Scenario: many files in one session (`sesscp send DIR/ FILE HOST:PORT`).
#  a) a tree with nested and empty directories, odd modes, old mtimes, a
#     0-byte file, multi-chunk files, relative, absolute and escaping symlinks
#     and a FIFO arrives identical: diff -r, `stat -c '%a %Y'` of every file
#     and directory, `readlink` of every link; the FIFO is skipped with a
#     warning; links are created as links and the receiver never follows them;
#  b) the same command again sends 0 bytes: every file is already complete;
#  c) --follow-links sends what links point to;
#  d) --name with several sources is a usage error (64);
#  e) files of one chunk larger than the receiver's small-file writer
#     holds at once (--chunk-size 16M, five of 9-10 MiB: it waits for its
#     16 MiB budget) arrive identical with their modes and mtimes.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
itest_init "$@"

src="$T/src"
mkdir -p "$src/docs/deep/er/est" "$src/empty" "$src/ro" "$src/bin"
gen_file "$src/docs/a.bin" $((3 * MiB + 17)) tree-a
gen_file "$src/docs/deep/b.bin" $((64 * 1024)) tree-b
gen_file "$src/docs/deep/er/est/c.bin" 4097 tree-c
printf 'hello\n' >"$src/top.txt"
: >"$src/docs/zero"
gen_file "$src/bin/tool" 1234 tree-tool
chmod 755 "$src/bin/tool"
chmod 600 "$src/docs/deep/b.bin"
gen_file "$src/ro/readonly.txt" 100 tree-ro
chmod 444 "$src/ro/readonly.txt"
ln -s ../top.txt "$src/docs/rel-link"
ln -s /etc/passwd "$src/abs-link"
ln -s ../../../../outside "$src/docs/escape-link"
ln -s docs "$src/dir-link"
mkfifo "$src/fifo"
touch -h -d '2001-02-03 04:05:06.123456789' "$src/docs/rel-link"
touch -d '2010-01-01 00:00:00' "$src/docs/deep/er/est/c.bin" "$src/docs/deep/er/est" "$src/empty"
chmod 2750 "$src/docs/deep"
chmod 555 "$src/ro"
touch -d '2011-11-11 11:11:11' "$src/ro"
extra="$T/extra.txt"
printf 'a second source\n' >"$extra"

# meta DIR: "path type mode mtime [link target]" for everything under DIR.
meta() {
  (cd "$1" && find . -mindepth 1 ! -type p -printf '%p %y %m %T@ %l\n' | sort)
}

new_dest tree
start_recv "$DEST" "$T/recv.log"
# What the idle receiver holds: every session must give back what it took.
fds0=$(ls "/proc/$RECV_PID/fd" | wc -l)
threads0=$(ls "/proc/$RECV_PID/task" | wc -l)

check "a) send $src/ and $extra in one session"
run_send "$T/a.send.log" "$src/" "$extra" "127.0.0.1:$RECV_PORT"
assert_rc 0 "$SEND_RC" "tree send" "$T/a.send.log" "$T/recv.log"
sed 's/^/    /' "$T/a.send.log"
assert_contains "$T/a.send.log" "warning: skipping $src/fifo: a FIFO is not sent" "FIFO skipped with a warning"
[[ ! -e $DEST/fifo ]] || fail "the FIFO was created at the receiver"
diff -r --no-dereference -x fifo "$src" "$DEST" -x extra.txt >"$T/diff.out" 2>&1 ||
  fail_with_logs "diff -r found differences" "$T/diff.out"
ok "diff -r: identical (links compared as links)"
cmp "$extra" "$DEST/extra.txt" || fail "extra.txt differs"
meta "$src" >"$T/meta.src"
meta "$DEST" | grep -v '^\./extra\.txt ' >"$T/meta.dst"
if ! diff -u "$T/meta.src" "$T/meta.dst" >"$T/meta.diff"; then
  fail_with_logs "type, mode, mtime or link target differ" "$T/meta.diff"
fi
ok "type, mode bits, mtime (ns) and link target of $(wc -l <"$T/meta.src") entries match"
for l in docs/rel-link abs-link docs/escape-link dir-link; do
  [[ -L $DEST/$l ]] || fail "$l is not a symlink at the receiver"
  [[ $(readlink "$DEST/$l") == "$(readlink "$src/$l")" ]] || fail "$l points elsewhere"
done
ok "links kept as links with their targets (relative, absolute, escaping, to a directory)"
[[ -d $DEST/empty && -z $(ls -A "$DEST/empty") ]] || fail "empty directory missing"
stat -c '%a %Y' "$src/ro" "$DEST/ro" | sed 's/^/    /'
[[ $(stat -c '%a %Y' "$src/ro") == "$(stat -c '%a %Y' "$DEST/ro")" ]] || fail "read-only directory's mode or mtime differ"
ok "empty and read-only directories created with their mode and mtime"
last_summary "$T/a.send.log" send docs/a.bin
[[ $S_STATE == complete && $S_N -eq $((3 * MiB + 17)) ]] || fail "docs/a.bin: state $S_STATE, $S_N bytes"
assert_parent_unchanged tree
find "$DEST" -name '*.sesscp.*' | grep . && fail "sesscp's own files left behind"
ok "no .sesscp.part/.journal/.publish left"

check "b) the same command again: every file already complete, 0 bytes sent"
run_send "$T/b.send.log" "$src/" "$extra" "127.0.0.1:$RECV_PORT"
assert_rc 0 "$SEND_RC" "re-run" "$T/b.send.log" "$T/recv.log"
nfiles=$(summaries "$T/b.send.log" send | wc -l)
nalready=$(summaries "$T/b.send.log" send | awk -F'|' '$2 == "already complete"' | wc -l)
sent=$(summaries "$T/b.send.log" send | awk -F'|' '{ s += $5 } END { print s + 0 }')
log "re-run: $nfiles summaries, $nalready already complete, $sent bytes sent"
((nfiles == 8 && nalready == 8 && sent == 0)) || fail_with_logs "expected 8 files already complete and 0 bytes" "$T/b.send.log"
meta "$DEST" | grep -v '^\./extra\.txt ' | diff -u "$T/meta.src" - >/dev/null || fail "the re-run changed metadata"
ok "8 files already complete, 0 bytes sent, metadata unchanged"
if command -v jq >/dev/null 2>&1; then
  # --json on a tree: a file_done per file and totals in session_end.
  run_send "$T/b2.send.log" "$src/" "$extra" "127.0.0.1:$RECV_PORT" --json >"$T/b2.json"
  assert_rc 0 "$SEND_RC" "re-run with --json" "$T/b2.send.log"
  done_names=$(jq -R -r 'fromjson | select(.event == "file_done") | "\(.name) \(.state)"' "$T/b2.json" | sort)
  [[ $(wc -l <<<"$done_names") -eq 8 && $(grep -c ' already complete$' <<<"$done_names") -eq 8 ]] ||
    fail_with_logs "--json: want 8 file_done 'already complete'" "$T/b2.json"
  grep -qx 'docs/a.bin already complete' <<<"$done_names" || fail_with_logs "--json: no file_done for docs/a.bin" "$T/b2.json"
  [[ $(json_field "$T/b2.json" session_end '"\(.files) \(.files_complete) \(.bytes) \(.exit_code)"') == "8 8 0 0" ]] ||
    fail_with_logs "--json: session_end is not 8 files, 8 complete, 0 bytes, exit 0" "$T/b2.json"
  ok "--json: 8 file_done (relative names), session_end 8/8 files, 0 bytes, exit 0"
fi

check "the receiver holds no more descriptors or threads than before the two sessions"
for ((i = 0; i < 50; i++)); do
  fds1=$(ls "/proc/$RECV_PID/fd" | wc -l)
  threads1=$(ls "/proc/$RECV_PID/task" | wc -l)
  ((fds1 == fds0 && threads1 == threads0)) && break
  sleep 0.1
done
log "receiver: $fds0 -> $fds1 descriptors, $threads0 -> $threads1 threads"
((fds1 == fds0 && threads1 == threads0)) || fail "the receiver kept descriptors or threads after its sessions ended"
ok "descriptors and threads back to $fds0 and $threads0"

check "c) --follow-links sends what the links inside the tree point to"
new_dest follow
kill9 "$RECV_PID"
start_recv "$DEST" "$T/recv2.log"
rm "$src/abs-link" "$src/docs/escape-link" # dangling or outside: not part of this case
run_send "$T/c.send.log" "$src/" "127.0.0.1:$RECV_PORT" --follow-links
assert_rc 0 "$SEND_RC" "--follow-links" "$T/c.send.log" "$T/recv2.log"
[[ -f $DEST/docs/rel-link && ! -L $DEST/docs/rel-link ]] || fail "rel-link was not sent as a file"
cmp "$src/top.txt" "$DEST/docs/rel-link" || fail "rel-link's content differs"
[[ -d $DEST/dir-link && ! -L $DEST/dir-link ]] || fail "dir-link was not sent as a directory"
cmp "$src/docs/a.bin" "$DEST/dir-link/a.bin" || fail "dir-link/a.bin differs"
ok "links followed: a file and a directory arrived as such"

check "d) --name with several sources is a usage error"
run_send "$T/d.send.log" "$src/" "$extra" "127.0.0.1:$RECV_PORT" --name x
assert_rc 64 "$SEND_RC" "--name with a directory" "$T/d.send.log"
assert_contains "$T/d.send.log" "--name applies only to a single-file send" "usage message"

check "e) five one-chunk files of 9-10 MiB (--chunk-size 16M): beyond the small-file writer's 16 MiB budget"
new_dest onechunk
kill9 "$RECV_PID"
start_recv "$DEST" "$T/recv3.log"
mkdir "$T/onechunk-src"
for i in 1 2 3 4 5; do
  gen_file "$T/onechunk-src/f$i" $((9 * MiB + i * 262147)) "tree-big-$i"
  chmod 0640 "$T/onechunk-src/f$i"
  touch -d "2020-01-0$i 12:00:00" "$T/onechunk-src/f$i"
done
run_send "$T/e.send.log" "$T/onechunk-src/" "127.0.0.1:$RECV_PORT" --chunk-size 16M
assert_rc 0 "$SEND_RC" "--chunk-size 16M" "$T/e.send.log" "$T/recv3.log"
diff -r "$T/onechunk-src" "$DEST" >"$T/e.diff" 2>&1 || fail_with_logs "the five files differ" "$T/e.diff"
for i in 1 2 3 4 5; do
  [[ $(stat -c '%a %Y' "$T/onechunk-src/f$i") == $(stat -c '%a %Y' "$DEST/f$i") ]] || fail "f$i: mode or mtime not kept"
done
ok "diff -r identical; modes and mtimes kept"
log "PASS"
