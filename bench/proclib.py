"""proclib.py - child processes and ports, shared by bench/ and the integration tests.

Children of spawn() die with us (PR_SET_PDEATHSIG) and are SIGKILLed at exit
if still running; stop_process() is SIGTERM, a bounded wait, then SIGKILL;
free_port(), listening(), port_accepts() and wait_until() bring servers up.
What differs between the users is passed in (error=: the exception a failure
raises; own_group; on_kill). It lives in bench/ because bench/ imports nothing
from tests/ (the harness adds bench/ to sys.path). Standard library only.
"""

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class ProcError(Exception):
    """The default for error=: a wait timed out, no free port."""


# ---- starting and stopping ----------------------------------------------------

_children = []  # every Popen spawn() started, for the last-resort cleanup


def _die_with_parent():
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _die_with_parent_own_group():
    _die_with_parent()
    os.setpgid(0, 0)  # a Ctrl-C on the terminal reaches the parent only


def spawn(argv, *, own_group=False, **popen_kw):
    """Start argv (each item made a str) with the death signal; stdin is
    /dev/null unless popen_kw says otherwise. own_group: in a process group
    of its own, so that the parent alone decides how it stops on Ctrl-C.
    Returns the Popen; the process is killed at exit if it still runs."""
    popen_kw.setdefault("stdin", subprocess.DEVNULL)
    setup = _die_with_parent_own_group if own_group else _die_with_parent
    p = subprocess.Popen([str(a) for a in argv], preexec_fn=setup, **popen_kw)
    _children.append(p)
    return p


def stop_process(p, timeout=20, sig=signal.SIGTERM, on_kill=None):
    """Send sig (SIGTERM) and wait up to timeout seconds; then SIGKILL, wait
    up to 10 s and call on_kill(p, timeout) if given (to warn, or to raise).
    Returns the exit status (negative for a signal); None when p is None or
    it would not die."""
    if p is None:
        return None
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if on_kill:
                on_kill(p, timeout)
    return p.returncode


def kill_all_children():
    """SIGKILL every process spawn() started that still runs, and reap it.
    Registered with atexit; also for exit paths that skip atexit."""
    for p in _children:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass


atexit.register(kill_all_children)


def exit_on_signals(signals=(signal.SIGTERM,), kill_first=False):
    """Make each of signals exit with status 128 + signum by SystemExit, so
    that finally blocks and atexit run. kill_first: SIGKILL the children
    before that (the tests: a ctest timeout must not leave daemons behind
    while cleanup code runs)."""
    def on_signal(signum, frame):
        if kill_first:
            kill_all_children()
        sys.exit(128 + signum)
    for s in signals:
        signal.signal(s, on_signal)


def kill_pid(pid, timeout=10):
    """SIGTERM then, after timeout seconds, SIGKILL one process we know by
    pid (not our child, e.g. a daemon of a private Postfix)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or is_zombie(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def is_zombie(pid):
    """True when pid has exited but is not reaped yet (or is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---- ports and waits ------------------------------------------------------------

def free_port(hosts=("127.0.0.1",), error=ProcError):
    """A TCP port that nobody has bound right now on any address in hosts
    (bind to port 0 on the first, try the others); error(message) is raised
    when 200 tries found none."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        ok = True
        for h in hosts[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise error("cannot find a free loopback port")


def port_accepts(port, host="127.0.0.1"):
    """True when a connection to host:port succeeds (the server sees it)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def listening(port, host="127.0.0.1"):
    """True when a TCP socket listens on host:port (IPv4), from
    /proc/net/tcp: no connection is made, so the server sees no probe."""
    want_ip = "".join(f"{int(b):02X}" for b in reversed(host.split(".")))
    want = f"{want_ip}:{port:04X}"
    any_ip = f"00000000:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split(None, 4)
                if parts[3] == "0A" and parts[1] in (want, any_ip):
                    return True
    except OSError:
        pass
    return False


def wait_until(pred, timeout, what, interval=0.05, alive=None, error=ProcError):
    """Poll pred() until it returns a true value, which is returned. alive,
    if given, is a list of (Popen, name) that must not exit meanwhile.
    error(message) is raised when one does, or after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        for p, name in alive or ():
            if p.poll() is not None:
                raise error(f"{name} exited with status {p.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
