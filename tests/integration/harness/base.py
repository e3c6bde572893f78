"""base.py - what every part of the harness needs: where things are, how slow
the build is (SLOW stretches every deadline under ASan), how a test fails
(TestFailure, check) and logs."""

import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # tests/integration
SOURCE_ROOT = HERE.parent.parent
SANITIZE = os.environ.get("RINGPOST_SANITIZE", "").upper() in ("ON", "1", "TRUE", "YES")
# ASan builds run a few times slower: stretch every deadline.
SLOW = 4.0 if SANITIZE else 1.0
ASAN_BUILD = "asan" in os.environ.get("RINGPOST_BUILD", "").lower() or SANITIZE


def ringpost_bin():
    b = os.environ.get("RINGPOST_BIN")
    if b:
        return b
    return str(SOURCE_ROOT / "build" / "bin" / "ringpost")


def build_bin(name):
    """A tool built next to the daemon (build/bin/NAME of RINGPOST_BUILD)."""
    b = os.environ.get("RINGPOST_BUILD")
    base = Path(b) / "bin" if b else Path(ringpost_bin()).parent
    return str(base / name)


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)
