#!/usr/bin/env python3
"""List Rust functions longer than a limit (default 120 lines).

Usage: scripts/long-fns.py [--max N] [--tests] PATH...
Skips `#[cfg(test)]` modules and files named tests.rs / tests_*.rs unless --tests.
A rough scanner: it tracks braces outside strings, chars and comments.
"""
import os
import re
import sys

FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")


def strip(line, state):
    """Remove comments/strings from a line; state carries block-comment/raw-string state."""
    out = []
    i = 0
    n = len(line)
    while i < n:
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"] = False
            i = j + 2
            continue
        if state["raw"] is not None:
            j = line.find(state["raw"], i)
            if j < 0:
                return "".join(out)
            i = j + len(state["raw"])
            state["raw"] = None
            continue
        if state["str"]:
            if line[i] == "\\":
                i += 2
                continue
            if line[i] == '"':
                state["str"] = False
            i += 1
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        m = re.match(r'b?r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["raw"] = '"' + m.group(1)
            i += m.end()
            continue
        if c == '"':
            state["str"] = True
            i += 1
            continue
        m = re.match(r"b?'(\\.[^']*|[^\\'])'", line[i:])
        if m:
            i += m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def scan(path, limit, tests):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    state = {"block": False, "raw": None, "str": False}
    depth = 0
    stack = []  # (name, start_line, depth_at_open)
    pending = None  # fn seen, waiting for its '{'
    skip_depth = None  # depth at which a cfg(test) module opened
    cfg_test = False
    results = []
    for no, raw in enumerate(lines, 1):
        code = strip(raw, state)
        if re.search(r"#\[cfg\(test\)\]", code):
            cfg_test = True
        m = FN.match(code)
        if m and skip_depth is None:
            pending = (m.group(1), no)
        for c in code:
            if c == "{":
                if cfg_test and skip_depth is None and not tests:
                    skip_depth = depth
                    cfg_test = False
                if pending is not None:
                    stack.append((pending[0], pending[1], depth))
                    pending = None
                depth += 1
            elif c == "}":
                depth -= 1
                if stack and stack[-1][2] == depth:
                    name, start, _ = stack.pop()
                    length = no - start + 1
                    if length > limit:
                        results.append((length, name, start))
                if skip_depth is not None and depth == skip_depth:
                    skip_depth = None
            elif c == ";":
                if pending is not None and not stack_opens(code):
                    pending = None  # a declaration without body
                if cfg_test and skip_depth is None:
                    cfg_test = False
    return results


def stack_opens(code):
    return "{" in code


def main(argv):
    limit = 120
    tests = False
    paths = []
    it = iter(argv)
    for a in it:
        if a == "--max":
            limit = int(next(it))
        elif a == "--tests":
            tests = True
        else:
            paths.append(a)
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
        else:
            files.append(p)
    rows = []
    for f in sorted(files):
        base = os.path.basename(f)
        if not tests and (base == "tests.rs" or base.startswith("tests_")):
            continue
        for length, name, start in scan(f, limit, tests):
            rows.append((length, f, start, name))
    for length, f, start, name in sorted(rows, reverse=True):
        print(f"{length:5} {f}:{start} {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
