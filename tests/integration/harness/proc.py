"""proc.py - process control for the tests: bench/proclib with the harness's
choices (failures are TestFailure, waits stretched by SLOW, children killed
at once on SIGTERM, e.g. a ctest timeout)."""

import signal
import sys

from .base import SLOW, SOURCE_ROOT, TestFailure

# bench/ may not import from tests/, tests may import anything.
if str(SOURCE_ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(SOURCE_ROOT / "bench"))
import proclib  # noqa: E402
from proclib import kill_all_children, port_accepts, spawn  # noqa: E402,F401 (re-exported)

proclib.exit_on_signals((signal.SIGTERM,), kill_first=True)


def stop_process(p, timeout=10):
    """SIGTERM, up to timeout seconds, then SIGKILL (a receiver, a sink)."""
    return proclib.stop_process(p, timeout)


def free_port():
    """A loopback port nobody listens on right now (bind to port 0)."""
    return proclib.free_port(error=TestFailure)


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value; fail after timeout seconds
    (times SLOW)."""
    return proclib.wait_until(pred, timeout * SLOW, what, interval, error=TestFailure)
