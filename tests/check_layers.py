#!/usr/bin/env python3
"""check_layers.py - fail when a source file includes across the layers.

The folders are layers (../shared/DESIGN.md, docs/architecture.md):

    base  <-  queue, dns  <-  api  <-  relay
    bench:  base and relay's SMTP codec headers only
    tests:  anything

Project headers are included by their path from the source root
("base/util.h"), or by a bare name from the same folder ("sched.h").
Besides our own headers, a few library headers belong to one layer:
storage and policy (queue/) know no sockets, only queue/ opens LMDB, only
dns/ talks to c-ares. Run from anywhere; prints every violation and exits 1
when there is one.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Which folders each folder may include from (its own is always allowed).
ALLOWED = {
    "base": set(),
    "queue": {"base"},
    "dns": {"base"},
    "api": {"base", "queue", "dns"},
    "relay": {"base", "queue", "dns", "api"},
    "bench": {"base"},
    "tests": {"base", "queue", "dns", "api", "relay", "bench", "tests"},
}

# Single headers a folder may use from a layer it may not otherwise include.
EXCEPTIONS = {
    "bench": {"relay/smtp_cmd.h", "relay/smtp_reply.h", "relay/smtp_data.h"},
}

# System and library headers that only some layers may include.
LIBRARY = {
    "lmdb.h": {"queue", "tests"},
    "ares.h": {"dns", "tests"},
    "sys/socket.h": {"base", "dns", "api", "relay", "bench", "tests"},
    "netinet/in.h": {"base", "dns", "api", "relay", "bench", "tests"},
    "arpa/inet.h": {"base", "dns", "api", "relay", "bench", "tests"},
    "liburing.h": {"base", "dns", "relay", "bench", "tests"},
    "ini.h": {"relay", "tests"},
    "hiredis/hiredis.h": {"relay", "tests"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def tracked_sources():
    try:
        out = subprocess.run(["git", "ls-files", "*.c", "*.h"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
        return [ROOT / p for p in out]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*.[ch]") if "build" not in p.parts]


def check_file(path):
    rel = path.relative_to(ROOT)
    folder = rel.parts[0]
    if folder not in ALLOWED:
        return []
    problems = []
    text = path.read_text(errors="replace")
    for m in INCLUDE.finditer(text):
        kind, name = m.group(1), m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        where = f"{rel}:{line}"
        if kind == "<":
            layers = LIBRARY.get(name)
            if layers is not None and folder not in layers:
                problems.append(f"{where}: <{name}> does not belong in {folder}/")
            continue
        if "/" not in name:
            if not (path.parent / name).exists():
                problems.append(f'{where}: "{name}" is not in {folder}/; '
                                f'include other folders by their path')
            continue
        target = name.split("/")[0]
        if target == folder:
            continue
        if target in ALLOWED[folder] or name in EXCEPTIONS.get(folder, ()):
            continue
        problems.append(f'{where}: "{name}": {folder}/ may not include {target}/')
    return problems


def main():
    problems = []
    for p in tracked_sources():
        problems += check_file(p)
    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} include(s) against the layers", file=sys.stderr)
        return 1
    print("check_layers: every include follows the layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
