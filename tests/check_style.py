#!/usr/bin/env python3
"""check_style.py - fail on what the house style (../shared/STYLE.md) rules out.

- every tracked .c/.h is formatted as .clang-format says (clang-format 14,
  `clang-format --dry-run --Werror`; `make format` fixes it);
- no daemon source file (base/, queue/, dns/, api/, relay/) is over
  MAX_FILE_LINES lines;
- no function outside tests/ is over MAX_FUNCTION_LINES lines (a function
  body is a line "{" in column 0 up to the next "}" in column 0; tables,
  which open with "= {", are not functions).

Prints each violation and exits 1 when there is one.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAEMON = ("base", "queue", "dns", "api", "relay")
MAX_FILE_LINES = 1200
MAX_FUNCTION_LINES = 120


def tracked(*patterns):
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).exists()]


def long_functions(path):
    lines = path.read_text(errors="replace").split("\n")
    found, start = [], None
    for i, line in enumerate(lines):
        if line == "{":
            start = i
        elif line.startswith("}") and start is not None:
            n = i - start + 1
            if n > MAX_FUNCTION_LINES:
                sig = lines[start - 1].strip() if start else "?"
                found.append((start + 1, n, sig))
            start = None
    return found


def main():
    problems = []
    sources = tracked("*.c", "*.h")
    fmt = shutil.which("clang-format-14") or shutil.which("clang-format")
    if not fmt:
        problems.append("clang-format is not installed (Debian package clang-format)")
    else:
        r = subprocess.run([fmt, "--dry-run", "--Werror", *map(str, sources)], cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode:
            bad = sorted({l.split(":")[0] for l in r.stderr.splitlines() if ": error:" in l})
            for b in bad:
                problems.append(f"{Path(b).relative_to(ROOT)}: not formatted (make format)")
            if not bad:
                problems.append("clang-format failed: " + r.stderr.strip()[:300])
    for p in sources:
        rel = p.relative_to(ROOT)
        if p.suffix == ".c" and rel.parts[0] in DAEMON:
            n = p.read_text(errors="replace").count("\n")
            if n > MAX_FILE_LINES:
                problems.append(f"{rel}: {n} lines (at most {MAX_FILE_LINES}): split it by job")
        if p.suffix == ".c" and rel.parts[0] != "tests":
            for line, n, sig in long_functions(p):
                problems.append(f"{rel}:{line}: {sig}: {n} lines (at most {MAX_FUNCTION_LINES})")
    for p in problems:
        print(p)
    if problems:
        print(f"check_style: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_style: {len(sources)} files formatted, sizes within bounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
