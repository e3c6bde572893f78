"""daemon.py - the daemon under test: Daemon (ringpost serve, started, stopped,
killed; its log and deliveries), the log's formats (parse_kv, iso_epoch,
log_events) and ringpost_cli for the queue commands."""

import re
import subprocess

from .base import SLOW, TestFailure, check, ringpost_bin
from .clients import SMTPConn, api_request
from .proc import proclib, spawn, wait_for

EX_CONFIG = 78  # ringpost's exit status for a bad configuration


class Daemon:
    """ringpost serve -c CONFIG, its stderr appended to LOG across restarts."""

    def __init__(self, env, config_path, port, name="ringpost", api_port=None):
        self.env = env
        self.config_path = str(config_path)
        self.name = name
        self.port = port
        self.api_port = api_port  # [listen] api, when the config has one
        self.api_tls = None  # an ssl.SSLContext when the API speaks HTTPS ([api] tls = yes)
        self.log_path = env.dir / f"{name}.log"
        self.proc = None
        self._log_start = 0

    def api(self, method, path, body=None, **kw):
        """One request to this daemon's HTTP API (api_request)."""
        check(self.api_port, "this daemon has no [listen] api")
        kw.setdefault("tls", self.api_tls)
        return api_request(self.api_port, method, path, body, **kw)

    def start(self, timeout=15, ready=None):
        """Start and wait until the log says "ringpost ready" (or ready(),
        for a daemon that logs to a file of its own), then for the banner."""
        check(self.proc is None or self.proc.poll() is not None, "daemon already running")
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "ab")
        try:
            self.proc = spawn([ringpost_bin(), "serve", "-c", self.config_path],
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                              cwd=str(self.env.dir))
        finally:
            logf.close()

        def started():
            if self.proc.poll() is not None:
                raise TestFailure(f"ringpost exited with status {self.proc.returncode} at "
                                  f"start-up:\n{self.log_tail()}")
            return ready() if ready else "ringpost ready" in self.log(since_start=True)
        wait_for(started, timeout, "the daemon's ready line")
        # The listeners are open: the banner proves a shard accepts.
        with SMTPConn(self.port) as c:
            code, _ = c.read_reply()
            check(code == 220, f"banner: expected 220, got {code}")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status. Not gone within timeout
        seconds (times SLOW): SIGKILL and TestFailure."""
        def killed(p, waited):
            raise TestFailure(f"ringpost did not exit within {waited:.0f}s of SIGTERM")
        return proclib.stop_process(self.proc, timeout * SLOW, on_kill=killed)

    def kill(self):
        """kill -9: no chance to sync or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self._log_start)  # not the whole log of every earlier run
                data = f.read()
        except FileNotFoundError:
            return ""
        return data.decode("utf-8", "replace")

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def deliveries(self, status=None):
        """Parsed 'delivery id=...' lines: dicts of their key=value fields."""
        out = []
        for line in self.log().splitlines():
            i = line.find(" delivery id=")
            if i < 0:
                continue
            f = parse_kv(line[i + 1:])
            if status is None or f.get("status") == status:
                out.append(f)
        return out

    def check_log_clean(self):
        """No sanitizer report, no panic, no assertion in the log (read a
        line at a time: a chaos run's log is hundreds of megabytes)."""
        bads = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ringpost: panic")
        try:
            f = open(self.log_path, "r", encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        with f:
            for line in f:
                for bad in bads:
                    if bad in line:
                        raise TestFailure(f"daemon log has {bad!r}: {line.rstrip()}")


_kv_re = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_kv(s):
    f = {}
    for k, v in _kv_re.findall(s):
        if v.startswith('"'):
            v = v[1:-1]
        f[k] = v
    return f


def iso_epoch(s):
    """'2026-11-27T06:54:20.123Z' -> unix seconds (float); None stays None."""
    if s is None:
        return None
    import calendar
    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$", s)
    check(m, f"not an ISO 8601 UTC time: {s!r}")
    whole = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0))
    frac = m.group(7) or "0"
    return whole + int(frac) / 10 ** len(frac)


_stamp_re = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")


def log_events(d, pattern):
    """(unix seconds, line) of each daemon log line matching the regex."""
    rx = re.compile(pattern)
    out = []
    for line in d.log().splitlines():
        if rx.search(line):
            m = _stamp_re.match(line)
            check(m, f"log line without a time stamp: {line!r}")
            out.append((iso_epoch(m.group(1)), line))
    return out


def ringpost_cli(d, argv, timeout=20):
    """ringpost ARGV[0] -c CONFIG ARGV[1:] against daemon d: the CompletedProcess."""
    argv = [ringpost_bin()] + argv[:1] + ["-c", d.config_path] + argv[1:]
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout * SLOW,
                              cwd=str(d.env.dir))
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{' '.join(argv[1:])} did not exit")
