#!/usr/bin/env python3
"""Shape of the production code (issue 17, docs/ARCHITECTURE.md): no file
over 600 lines, no function over 60. A file may be longer only if its first
lines say `shape: long file allowed` and why (the frame codec's byte layout).

  python3 tests/tools/shape.py [ROOT]     # prints offenders, exits 1 if any

Functions are found by braces: a line ending in `{` whose text has a `)` and
does not start with a control keyword opens a function when not already in
one; its length is the lines from that brace to its match. Comments, string
and character literals are blanked first. A heuristic, checked against the
tree it guards (tests/CMakeLists.txt runs it as the test `shape`)."""
import os
import re
import sys

FOLDERS = ["base", "checkpoint", "core", "url", "cli"]
MAX_FILE, MAX_FUNC = 600, 60
CONTROL = re.compile(r"^\s*(\}\s*)?(if|for|while|switch|else|do|try|catch|namespace|class|struct|enum|union|extern)\b")


def blank(text):
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            end = text.find(")" + m.group(1) + '"', i) if m else -1
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c in "\"'" and not (c == "'" and i > 0 and text[i - 1].isalnum()):  # not 30'000
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (j - i - 1) + c); i = j + 1
        else:
            out.append(c); i += 1
    return "".join(out)


def functions(lines):
    depth, start, start_depth, sig = 0, None, 0, ""
    for no, line in enumerate(lines, 1):
        stripped = line.strip()
        if start is None and stripped.endswith("{") and ")" in (sig + stripped) and not CONTROL.match(stripped) \
                and not stripped.startswith(("=", "return")) and "= [" not in stripped and "=[" not in stripped:
            start, start_depth = no, depth
        for ch in line:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if start is not None and depth == start_depth:
                    yield start, no
                    start = None
        sig = stripped if stripped and not stripped.endswith((";", "{", "}")) else ""


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    bad = []
    for folder in FOLDERS:
        for dirpath, _, names in os.walk(os.path.join(root, folder)):
            for name in sorted(names):
                if not name.endswith((".cpp", ".h")):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                text = open(path, encoding="utf-8").read()
                lines = blank(text).split("\n")
                count = text.count("\n")
                if count > MAX_FILE and "shape: long file allowed" not in "\n".join(text.split("\n")[:15]):
                    bad.append(f"{rel}: {count} lines (at most {MAX_FILE})")
                for first, last in functions(lines):
                    if last - first + 1 > MAX_FUNC:
                        head = text.split("\n")[first - 1].strip()
                        bad.append(f"{rel}:{first}: function of {last - first + 1} lines (at most {MAX_FUNC}): {head[:70]}")
    for b in bad:
        print(b)
    print(f"shape: {len(bad)} offender(s)" if bad else "shape: every file and function within bounds")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
