#!/usr/bin/env bash
# Checks that every module under Sources/ imports only what scripts/module-imports.txt allows it
# (the dependency arrows of ../shared/DESIGN.md and docs/architecture.md).
#
#   scripts/check-imports.sh
#
# Reads every import declaration in Sources/<Module>/**/*.swift: `import X`, `@testable import X`,
# `@_exported import X`, `public import X`, `import struct X.Y` (module X), several per line with
# `;`. Comments, string literals (also multi-line and raw) and `#if canImport(X)` are not imports.
# Prints each violation as `Sources/…/File.swift:LINE: A imports B, which …` and exits 1; a
# Sources/ directory without a line in the table (or a table line without a directory) fails too.
# Prints one summary line and exits 0 when clean.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - scripts/module-imports.txt Sources <<'PY'
import os
import re
import sys

table_path, sources = sys.argv[1], sys.argv[2]
problems = []

# --- the table -----------------------------------------------------------------------------------
allowed = {}      # module -> list of patterns
table_line = {}   # module -> line number
standard = []
with open(table_path, encoding="utf-8") as f:
    for n, raw in enumerate(f, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(\*|[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)", line)
        if not m:
            problems.append(f"{table_path}:{n}: not `Module: Allowed …`")
            continue
        name, items = m.group(1), m.group(2).split()
        if name == "*":
            standard += items
        elif name in allowed:
            problems.append(f"{table_path}:{n}: second line for {name}")
        else:
            allowed[name], table_line[name] = items, n


def permits(patterns, module):
    return any(module == p or (p.endswith("*") and module.startswith(p[:-1])) for p in patterns)


# --- Swift: blank out comments and string literals, keeping line numbers -------------------------
def code_only(src):
    out = []
    i, n = 0, len(src)
    # Stack of contexts: ("code", paren_depth) for interpolations, ("str", hashes, multiline).
    stack = [("code", 0)]

    def keep(c):
        out.append(c if c == "\n" else " ")

    while i < n:
        ctx = stack[-1]
        c = src[i]
        if ctx[0] == "code":
            if src.startswith("//", i):
                j = src.find("\n", i)
                j = n if j < 0 else j
                out.append(" " * (j - i))
                i = j
            elif src.startswith("/*", i):
                depth = 0
                while i < n:
                    if src.startswith("/*", i):
                        depth += 1
                        out.append("  "); i += 2
                    elif src.startswith("*/", i):
                        depth -= 1
                        out.append("  "); i += 2
                        if depth == 0:
                            break
                    else:
                        keep(src[i]); i += 1
            else:
                m = re.compile(r'(#*)("""|")').match(src, i)
                if m and (m.group(1) == "" or c == "#"):
                    hashes = len(m.group(1))
                    stack.append(("str", hashes, m.group(2) == '"""'))
                    out.append(" " * (m.end() - i))
                    i = m.end()
                elif c == "(" and len(stack) > 1:
                    stack[-1] = ("code", ctx[1] + 1)
                    out.append(c); i += 1
                elif c == ")" and len(stack) > 1:
                    if ctx[1] == 0:      # end of an interpolation: back into its string
                        stack.pop()
                        out.append(" ")
                    else:
                        stack[-1] = ("code", ctx[1] - 1)
                        out.append(c)
                    i += 1
                else:
                    out.append(c); i += 1
        else:
            _, hashes, multiline = ctx
            close = ('"""' if multiline else '"') + "#" * hashes
            escape = "\\" + "#" * hashes
            if src.startswith(escape + "(", i):
                stack.append(("code", 0))
                out.append(" " * (len(escape) + 1))
                i += len(escape) + 1
            elif src.startswith(escape, i) and i + len(escape) < n:
                # An escaped character (\" \\ \n …): skip it whole.
                j = i + len(escape) + 1
                out.extend(" " if ch != "\n" else "\n" for ch in src[i:j])
                i = j
            elif src.startswith(close, i):
                stack.pop()
                out.append(" " * len(close))
                i += len(close)
            else:
                keep(c); i += 1
    return "".join(out)


IDENT = r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)"
IMPORT = re.compile(
    r"(?:^|;)\s*"
    r"(?:@" + IDENT + r"(?:\([^)]*\))?\s*)*"                              # @testable, @_spi(X) …
    r"(?:(?:public|package|internal|fileprivate|private|open)\s+)?"         # access-level imports
    r"import\s+"
    r"(?:(?:typealias|struct|class|enum|protocol|let|var|func)\s+)?"      # import struct X.Y
    r"(" + IDENT + r")"
)


def imports(path):
    with open(path, encoding="utf-8") as f:
        code = code_only(f.read())
    for lineno, line in enumerate(code.split("\n"), 1):
        for m in IMPORT.finditer(line):
            yield lineno, m.group(1).strip("`")


# --- the scan ------------------------------------------------------------------------------------
modules = sorted(d for d in os.listdir(sources) if os.path.isdir(os.path.join(sources, d)))
for name in sorted(set(allowed) - set(modules)):
    problems.append(f"{table_path}:{table_line[name]}: {name} has no {sources}/{name} directory")
files = count = 0
for module in modules:
    if module not in allowed:
        problems.append(f"{sources}/{module}: {module} has no line in {table_path}")
        continue
    patterns = allowed[module] + standard
    for root, dirs, names in os.walk(os.path.join(sources, module)):
        dirs.sort()
        for fn in sorted(names):
            if not fn.endswith(".swift"):
                continue
            path = os.path.join(root, fn)
            files += 1
            for lineno, imported in imports(path):
                count += 1
                if imported != module and not permits(patterns, imported):
                    problems.append(f"{path}:{lineno}: {module} imports {imported}, "
                                    "which docs/architecture.md does not allow")

for p in problems:
    print(p)
if problems:
    print(f"check-imports: {len(problems)} violation(s)", file=sys.stderr)
    sys.exit(1)
print(f"check-imports: ok — {count} imports in {files} files of {len(modules)} modules follow {table_path}")
PY
