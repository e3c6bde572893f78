"""harness.py - shared helpers for the ringpost integration tests.

Real parts only: the real daemon binary, real sockets on loopback, real
clients (smtplib, curl, a raw-socket client) and receivers we did not write
(Python's smtpd module in a separate process, Postfix's smtp-sink).

Every wait is bounded; every process we start is stopped in cleanup (a
TestEnv is a context manager; when a test fails it prints the tail of each
daemon's log and keeps its directory). Environment:
  RINGPOST_BIN      the ringpost binary (default ../../build/bin/ringpost)
  RINGPOST_BUILD    the build directory (informational)
  RINGPOST_SANITIZE ON when the binary is an ASan/UBSan build: waits scale up
  RINGPOST_KEEP=1   keep the temporary directories for a post-mortem

Run as a script, this file is the smtpd receiver:
  python3 harness.py receiver --dir DIR [--host H] [--port P]
It prints "PORT n" once it listens, then writes every message it receives
to DIR as NNNNNNNN-PID.eml (the data as smtpd hands it: CRLF turned into LF,
dots un-stuffed, the last line end dropped) plus NNNNNNNN-PID.json (the
envelope); the .json appears last, so a reader that lists *.json only sees
complete messages.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_ROOT = HERE.parent.parent
SANITIZE = os.environ.get("RINGPOST_SANITIZE", "").upper() in ("ON", "1", "TRUE", "YES")
# ASan builds run a few times slower: stretch every deadline.
SLOW = 4.0 if SANITIZE else 1.0

EX_CONFIG = 78

# Bearer tokens of the [api] section that config_text writes with api_port.
API_KEYS = ("test-key-one", "test-key-two")
API_KEY = API_KEYS[0]


def ringpost_bin():
    b = os.environ.get("RINGPOST_BIN")
    if b:
        return b
    return str(SOURCE_ROOT / "build" / "bin" / "ringpost")


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure(f"timed out after {timeout * SLOW:.0f}s waiting for {what}")
        time.sleep(interval)


# ---- processes ----------------------------------------------------------

_children = []  # every Popen we started, for the last-resort cleanup


def _pdeathsig():
    # Die with the test if it is killed (ctest timeout): no stray daemons.
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(argv, **kw):
    kw.setdefault("preexec_fn", _pdeathsig)
    p = subprocess.Popen(argv, **kw)
    _children.append(p)
    return p


def _kill_all_children():
    for p in _children:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass


atexit.register(_kill_all_children)


def _on_term(signum, frame):
    _kill_all_children()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def stop_process(p, timeout=10):
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)


# ---- ports --------------------------------------------------------------

def free_port():
    """A loopback port nobody listens on right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ---- config -------------------------------------------------------------

def config_text(*, hostname="mta.test.example", data_dir="spool", shards=2, submission_port,
                routes, server=None, submission=None, queue=None, domain_defaults=None,
                domains=None, api_port=None, api=None, extra=""):
    """An ringpost.conf for a test. routes: {domain: "127.0.0.1:port"}.
    The other dicts add or override keys in their section; domains maps a
    domain name to extra keys for its section. api_port adds an [listen] api
    listener; api adds [api] keys (keys = API_KEYS when api_port is set)."""
    sec = {
        "server": {"hostname": hostname, "data_dir": data_dir, "shards": str(shards)},
        "listen": {"submission": f"127.0.0.1:{submission_port}"},
        "submission": {"networks": "127.0.0.0/8, ::1"},
        "api": {},
        "queue": {"retry": "1s, 2s", "max_age": "1h"},
        "domain *": {"connect_timeout": "2s", "max_connections": "20"},
    }
    if api_port:
        sec["listen"]["api"] = f"127.0.0.1:{api_port}"
        sec["api"]["keys"] = ", ".join(API_KEYS)
    for name, d in (("server", server), ("submission", submission), ("queue", queue),
                    ("domain *", domain_defaults), ("api", api)):
        if d:
            sec[name].update({k: str(v) for k, v in d.items()})
    for dom, addr in routes.items():
        sec[f"domain {dom}"] = {"route": addr}
    for dom, d in (domains or {}).items():
        sec.setdefault(f"domain {dom}", {}).update({k: str(v) for k, v in d.items()})
    if not sec["api"]:
        del sec["api"]
    out = ["; written by tests/integration/harness.py"]
    for name, keys in sec.items():
        out.append(f"[{name}]")
        out += [f"{k} = {v}" for k, v in keys.items()]
        out.append("")
    return "\n".join(out) + extra


# ---- the daemon ---------------------------------------------------------

class Daemon:
    """ringpost serve -c CONFIG, its stderr appended to LOG across restarts."""

    def __init__(self, env, config_path, port, name="ringpost", api_port=None):
        self.env = env
        self.config_path = str(config_path)
        self.port = port
        self.api_port = api_port  # [listen] api, when the config has one
        self.log_path = env.dir / f"{name}.log"
        self.proc = None
        self._log_start = 0

    def api(self, method, path, body=None, **kw):
        """One request to this daemon's HTTP API (api_request)."""
        check(self.api_port, "this daemon has no [listen] api")
        return api_request(self.api_port, method, path, body, **kw)

    def start(self, timeout=15):
        check(self.proc is None or self.proc.poll() is not None, "daemon already running")
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "ab")
        try:
            self.proc = spawn([ringpost_bin(), "serve", "-c", self.config_path],
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                              cwd=str(self.env.dir))
        finally:
            logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise TestFailure(f"ringpost exited with status {self.proc.returncode} at "
                                  f"start-up:\n{self.log_tail()}")
            return "ringpost ready" in self.log(since_start=True)
        wait_for(ready, timeout, "the daemon's 'ringpost ready' line")
        # The listeners are open: the banner proves a shard accepts.
        with SMTPConn(self.port) as c:
            code, _ = c.read_reply()
            check(code == 220, f"banner: expected 220, got {code}")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise TestFailure(f"ringpost did not exit within {timeout * SLOW:.0f}s of SIGTERM")
        return self.proc.returncode

    def kill(self):
        """kill -9: no chance to sync or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self, since_start=False):
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        if since_start:
            data = data[self._log_start:]
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
        """No sanitizer report, no panic, no assertion in the log."""
        text = self.log()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ringpost: panic"):
            for line in text.splitlines():
                if bad in line:
                    raise TestFailure(f"daemon log has {bad!r}: {line}")


_kv_re = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_kv(s):
    f = {}
    for k, v in _kv_re.findall(s):
        if v.startswith('"'):
            v = v[1:-1]
        f[k] = v
    return f


# ---- receivers ----------------------------------------------------------

class Received:
    """One message as a receiver recorded it."""

    def __init__(self, mailfrom, rcpts, data, path):
        self.mailfrom = mailfrom
        self.rcpts = rcpts
        self.data = data  # bytes, LF line ends, dots un-stuffed
        self.path = path

    def split(self):
        i = self.data.find(b"\n\n")
        if i < 0:
            return self.data, b""
        return self.data[:i + 1], self.data[i + 2:]

    def header(self, name):
        """The first value of a header field (unfolded), or None."""
        head, _ = self.split()
        m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*(.*(?:\n[ \t].*)*)", head)
        return m.group(1).decode("utf-8", "replace").strip() if m else None

    def header_names(self):
        head, _ = self.split()
        return [m.group(1).decode().lower() for m in re.finditer(rb"(?m)^([!-9;-~]+):", head)]


class SmtpdReceiver:
    """Python's smtpd.SMTPServer in its own process (no GIL shared with us)."""

    kind = "smtpd"

    def __init__(self, env, name="smtpd", port=0):
        self.env = env
        self.dir = env.dir / name
        self.dir.mkdir(exist_ok=True)
        self.want_port = port
        self.port = None
        self.proc = None
        self.name = name

    def start(self, timeout=10):
        errf = open(self.env.dir / f"{self.name}.stderr", "ab")
        self.proc = spawn([sys.executable, "-W", "ignore::DeprecationWarning", str(HERE / "harness.py"),
                           "receiver", "--dir", str(self.dir), "--port", str(self.want_port)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
        errf.close()
        box = {}

        def reader():
            box["line"] = self.proc.stdout.readline()
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout * SLOW)
        line = box.get("line", b"")
        check(line.startswith(b"PORT "), f"smtpd receiver did not start (said {line!r})")
        self.port = int(line.split()[1])
        return self

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        stop_process(self.proc)

    def messages(self):
        out = []
        for j in sorted(self.dir.glob("*.json")):
            env = json.loads(j.read_text())
            # smtpd drops the CRLF before the final dot; put it back so
            # both receivers record LF-terminated lines.
            data = j.with_suffix(".eml").read_bytes() + b"\n"
            out.append(Received(env["mailfrom"], env["rcpttos"], data, j))
        return out

    def count(self):
        return sum(1 for _ in self.dir.glob("*.json"))


class SmtpSink:
    """Postfix's smtp-sink, dumping every transaction to a file (-d).

    It offers PIPELINING (so ringpost pipelines MAIL/RCPT/DATA to it) but not
    CHUNKING; its dump un-stuffs dots and ends lines with LF."""

    kind = "smtp-sink"
    BIN = "/usr/sbin/smtp-sink"

    def __init__(self, env, name="sink", port=None, extra_args=()):
        self.env = env
        self.dir = env.dir / name
        self.dir.mkdir(exist_ok=True)
        self.port = port
        self.extra_args = list(extra_args)
        self.proc = None
        self.name = name

    @staticmethod
    def available():
        return os.access(SmtpSink.BIN, os.X_OK)

    def start(self, timeout=10):
        check(self.available(), f"{self.BIN} is missing (apt-get install postfix)")
        argv = [self.BIN]
        if os.geteuid() == 0:
            # smtp-sink refuses to run as root; nobody must be able to
            # reach and write the dump directory.
            argv += ["-u", "nobody"]
            os.chmod(self.dir, 0o777)
            p = self.dir
            while p != p.parent and str(p).startswith(str(self.env.dir)):
                p = p.parent
                os.chmod(p, os.stat(p).st_mode | 0o711)
        # %H%M%S. + smtp-sink's random hex: unique enough, and files from
        # one second share a prefix.
        argv += ["-d", str(self.dir) + "/%H%M%S.", "-m", "512", "-t", "60"] + self.extra_args
        errf = open(self.env.dir / f"{self.name}.stderr", "ab")
        for attempt in range(5):
            port = self.port or free_port()
            self.proc = spawn(argv + [f"127.0.0.1:{port}", "256"], stdin=subprocess.DEVNULL,
                              stdout=errf, stderr=errf)

            def up():
                if self.proc.poll() is not None:
                    return "dead"
                return port_accepts(port)
            r = wait_for(up, timeout, "smtp-sink to listen")
            if r is True:
                self.port = port
                break
            if self.port:  # a fixed port we could not get
                break
        errf.close()
        check(self.proc.poll() is None, f"smtp-sink did not start: "
              f"{(self.env.dir / (self.name + '.stderr')).read_text(errors='replace')}")
        return self

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        stop_process(self.proc)

    def files(self):
        return [p for p in self.dir.iterdir() if p.is_file()]

    def messages(self):
        out = []
        for p in self.files():
            raw = p.read_bytes()
            # Our envelope from smtp-sink's X- records; they precede the
            # message and end with its three-line Received: header.
            mailfrom, rcpts = None, []
            lines = raw.split(b"\n")
            i = 0
            while i < len(lines):
                ln = lines[i]
                if ln.startswith(b"X-Mail-Args: "):
                    mailfrom = _path_of(ln[13:])
                elif ln.startswith(b"X-Rcpt-Args: "):
                    rcpts.append(_path_of(ln[13:]))
                elif ln.startswith(b"Received: ") and b"(smtp-sink)" in b"\n".join(lines[i:i + 3]):
                    i += 3
                    break
                i += 1
            data = b"\n".join(lines[i:])
            if data.endswith(b"\n\n"):
                data = data[:-1]  # the empty line smtp-sink appends
            out.append(Received(mailfrom, rcpts, data, p))
        return out


def _path_of(args):
    m = re.match(rb"\s*(?:FROM:|TO:)?\s*<([^>]*)>", args, re.I)
    return (m.group(1) if m else args.split()[0]).decode("utf-8", "replace")


# ---- clients ------------------------------------------------------------

class SMTPConn:
    """A raw-socket SMTP client: exact bytes out, exact replies in."""

    def __init__(self, port, host="127.0.0.1", timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Vanish with a RST (SO_LINGER 0)."""
        import struct
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def read_line(self):
        while b"\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def read_reply(self):
        """(code, [text lines]) of one possibly multi-line reply."""
        lines = []
        while True:
            line = self.read_line().rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise TestFailure(f"malformed reply line {line!r}")
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines

    def expect(self, code, what=""):
        got, lines = self.read_reply()
        want = code if isinstance(code, (tuple, list, set)) else (code,)
        if got not in want:
            raise TestFailure(f"{what}: expected {code}, got {' | '.join(lines)}")
        return lines

    def cmd(self, line, code, what=None):
        self.send(line + "\r\n")
        return self.expect(code, what or line[:60])

    def ehlo(self, name="client.test"):
        lines = self.cmd(f"EHLO {name}", 250)
        return [l[4:].upper() for l in lines[1:]]

    def at_eof(self, timeout=5):
        """True when the server has closed (after any buffered replies)."""
        self.sock.settimeout(timeout * SLOW)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


class ApiReply:
    """An HTTP answer: status, headers (case-insensitive get), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise TestFailure(f"HTTP {self.status}: body is not JSON: {self.body[:300]!r}")

    def error(self):
        """(code, message) of an {"error": {...}} body."""
        e = self.json().get("error") or {}
        return e.get("code"), e.get("message", "")

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:200]!r}>"


# No proxy from the environment may stand between the tests and loopback.
_url_opener = None


def api_request(port, method, path, body=None, *, key=API_KEY, headers=None, timeout=30):
    """One request with Python's urllib; errors (4xx/5xx) are answers too.
    body: bytes as they are, anything else as JSON. key None: no
    Authorization header."""
    import urllib.error
    import urllib.request
    global _url_opener
    if _url_opener is None:
        _url_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = body
    hdrs = {}
    if body is not None and not isinstance(body, (bytes, bytearray)):
        data = json.dumps(body).encode()
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    hdrs.update(headers or {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers=hdrs)
    try:
        with _url_opener.open(req, timeout=timeout * SLOW) as r:
            return ApiReply(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        with e:
            return ApiReply(e.code, e.headers, e.read())


def curl(args, timeout=30, input=None):
    """curl -sS with args; returns the CompletedProcess (stdout bytes)."""
    try:
        return subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time",
                               str(int(timeout * SLOW))] + list(args), input=input,
                              capture_output=True, timeout=timeout * SLOW + 10)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"curl {' '.join(args)[:200]} did not finish")


class HTTPConn(SMTPConn):
    """A raw-socket HTTP/1.1 client: exact bytes out, responses parsed in
    order (for pipelining, Expect and broken requests)."""

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self):
        """(status, {lowercase name: value}, body) of the next response."""
        line = self.read_line()
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ", line)
        if not m:
            raise TestFailure(f"malformed status line {line!r}")
        status = int(m.group(1))
        hdrs = {}
        while True:
            h = self.read_line()
            if h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        return status, hdrs, self.read_exact(n) if n else b""


def dot_stuff(data):
    """RFC 5321 4.5.2 transparency for DATA, plus the terminator. data must
    use CRLF line ends and end with CRLF."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$")


def queued_id(lines):
    m = QUEUED_RE.match(lines[-1])
    if not m:
        raise TestFailure(f"expected '250 2.0.0 Ok: queued as ID', got {lines!r}")
    return m.group(1)


# ---- the per-test environment -------------------------------------------

class TestEnv:
    """A temp directory and everything started in it; cleaned up on exit."""

    def __init__(self, name):
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"rp-{name}-"))
        os.chmod(self.dir, 0o755)
        self.daemons = []
        self.receivers = []
        self.failed = False

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        self.failed = et is not None
        self.cleanup()
        return False

    def write_config(self, text, name="ringpost.conf"):
        p = self.dir / name
        p.write_text(text)
        return p

    def daemon(self, *, routes, port=None, name="ringpost", conf_name=None, with_api=False,
               **kw):
        """A daemon (not started). with_api: an HTTP API listener on a free
        port with the API_KEYS (or pass api_port= yourself)."""
        port = port or free_port()
        if with_api and not kw.get("api_port"):
            kw["api_port"] = free_port()
        kw.setdefault("data_dir", str(self.dir / f"{name}-spool"))
        path = self.write_config(config_text(submission_port=port, routes=routes, **kw),
                                 conf_name or f"{name}.conf")
        d = Daemon(self, path, port, name, api_port=kw.get("api_port"))
        self.daemons.append(d)
        return d

    def smtpd(self, name="smtpd", port=0):
        r = SmtpdReceiver(self, name, port).start()
        self.receivers.append(r)
        return r

    def sink(self, name="sink", port=None, extra_args=()):
        r = SmtpSink(self, name, port, extra_args).start()
        self.receivers.append(r)
        return r

    def dnsmasq(self, args, name="dnsmasq", port=None):
        """A started private DNS server (Dnsmasq) with these records."""
        r = Dnsmasq(self, name, port, args).start()
        self.receivers.append(r)
        return r

    def fast_sink(self, name, listen, extra_args=()):
        """A started ringpost-sink (FastSink) on the listen addresses."""
        r = FastSink(self, name, listen, extra_args).start()
        self.receivers.append(r)
        return r

    def cleanup(self):
        for d in self.daemons:
            if self.failed and d.log_path.exists():
                print(f"---- {d.log_path.name} (last lines) ----\n{d.log_tail(60)}\n----",
                      file=sys.stderr)
            d.kill()
        for r in self.receivers:
            r.stop()
        if os.environ.get("RINGPOST_KEEP") or self.failed:
            print(f"(kept {self.dir})", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class Cases(list):
    """A test file's cases, in order: `cases = Cases()`, then `@cases.add`
    on each test function, then run_cases(cases, ...)."""

    def add(self, fn):
        self.append(fn)
        return fn


def run_cases(cases, x, daemons):
    """Run every fn(x) in cases even when some fail; after each, every daemon
    must still be alive. Returns the list of failures (strings)."""
    failures = []
    for fn in cases:
        try:
            fn(x)
            log(f"ok   {fn.__name__}")
        except TestFailure as e:
            failures.append(f"{fn.__name__}: {e}")
            log(f"FAIL {fn.__name__}: {e}")
        except Exception as e:  # a bug in the test or an odd answer: say where
            tb = traceback.extract_tb(e.__traceback__)[-1]
            failures.append(f"{fn.__name__}: {type(e).__name__}: {e} (line {tb.lineno})")
            log(f"FAIL {fn.__name__}: {type(e).__name__}: {e} (line {tb.lineno})")
        dead = [d for d in daemons if not d.alive()]
        if dead:
            failures.append(f"a daemon died during {fn.__name__} "
                            f"(status {dead[0].proc.returncode})")
            break
    return failures


def raise_failures(failures):
    """The test fails with every failure collected (run_cases, stop_clean)."""
    if failures:
        raise TestFailure(f"{len(failures)} failure(s):\n  " + "\n  ".join(failures))


def stop_clean(d, failures):
    """SIGTERM d; a non-zero status or a sanitizer report is a failure."""
    if not d.alive():
        return
    rc = d.stop()
    if rc != 0:
        failures.append(f"{d.log_path.name}: SIGTERM exit status {rc}")
    try:
        d.check_log_clean()
    except TestFailure as e:
        failures.append(str(e))


def run_test(main):
    """Run main(); exit 0 on success, 1 with a clear message on failure."""
    name = Path(sys.argv[0]).stem
    t0 = time.monotonic()
    binary = ringpost_bin()
    if not os.access(binary, os.X_OK):
        print(f"FAIL {name}: no ringpost binary at {binary} (set RINGPOST_BIN)", file=sys.stderr)
        sys.exit(1)
    try:
        main()
    except TestFailure as e:
        print(f"FAIL {name}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print(f"FAIL {name}: unexpected exception", file=sys.stderr)
        sys.exit(1)
    finally:
        _kill_all_children()
    log(f"PASS {name} in {time.monotonic() - t0:.1f}s")
    sys.exit(0)


# ---- DNS (dnsmasq) and the fast sink --------------------------------------

def build_bin(name):
    """A tool built next to the daemon (build/bin/NAME of RINGPOST_BUILD)."""
    b = os.environ.get("RINGPOST_BUILD")
    base = Path(b) / "bin" if b else Path(ringpost_bin()).parent
    return str(base / name)


def dns_query(port, name, qtype="A", timeout=1.0):
    """One UDP query to 127.0.0.1:port; (rcode, answer count) or None when
    nothing answers."""
    import random
    import struct
    types = {"A": 1, "MX": 15, "AAAA": 28}
    q = struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", types[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, ("127.0.0.1", port))
            r = s.recv(4096)
        except OSError:
            return None
    return r[3] & 15, struct.unpack(">H", r[6:8])[0]


class Dnsmasq:
    """A private dnsmasq on 127.0.0.1:PORT (UDP and TCP), no upstream, no
    /etc/hosts, records from args (--mx-host, --host-record, --address,
    --local, ...). Every query is logged to its log file (queries())."""

    BIN = "/usr/sbin/dnsmasq"

    def __init__(self, env, name="dnsmasq", port=None, args=()):
        self.env = env
        self.name = name
        self.port = port
        self.args = list(args)
        self.proc = None
        self.log_path = env.dir / f"{name}.log"

    @staticmethod
    def require():
        # Never skip: a missing dnsmasq is a failed test with the fix in it.
        check(os.access(Dnsmasq.BIN, os.X_OK),
              f"{Dnsmasq.BIN} is missing: the DNS tests need a real DNS server "
              f"(apt-get install dnsmasq-base; .ci/deps installs it)")

    def start(self, args=None, timeout=10):
        self.require()
        if args is not None:
            self.args = list(args)
        errf = open(self.env.dir / f"{self.name}.stderr", "ab")
        try:
            for attempt in range(5):
                port = self.port or free_port()
                argv = [self.BIN, "--keep-in-foreground", f"--port={port}",
                        "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                        "--no-hosts", "--conf-file=/dev/null", "--pid-file=", "--log-queries",
                        f"--log-facility={self.log_path}"] + self.args
                self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)

                def up():
                    if self.proc.poll() is not None:
                        return "dead"
                    return dns_query(port, "probe.invalid", timeout=0.2) is not None
                r = wait_for(up, timeout, "dnsmasq to answer")
                if r is True:
                    self.port = port
                    return self
                if self.port:  # a fixed port (a restart): no other will do
                    break
        finally:
            errf.close()
        raise TestFailure(f"dnsmasq did not start: "
                          f"{(self.env.dir / (self.name + '.stderr')).read_text(errors='replace')}")

    def stop(self):
        stop_process(self.proc)

    def restart(self, args=None):
        """Stop, then start on the same port (new records: pass args)."""
        self.stop()
        return self.start(args)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    _query_re = re.compile(r"query\[(\w+)\] (\S+) from ")

    def queries(self):
        """Every query logged so far: a list of (type, name)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [(m.group(1), m.group(2).lower()) for m in self._query_re.finditer(text)]


class FastSink:
    """bench's ringpost-sink (build/bin/ringpost-sink) on one or more
    addresses ("127.0.0.3:PORT", "[::1]:PORT"), with a stats file of JSON
    lines (per-domain message counters) written every 100 ms."""

    def __init__(self, env, name, listen, extra_args=()):
        self.env = env
        self.name = name
        self.listen = list(listen)
        self.extra_args = list(extra_args)
        self.proc = None
        self.stats_path = env.dir / f"{name}.stats"

    def start(self, timeout=10):
        binary = build_bin("ringpost-sink")
        check(os.access(binary, os.X_OK), f"no ringpost-sink at {binary} (build bench/)")
        argv = [binary, "--stats-file", str(self.stats_path), "--stats-interval", "100",
                "--hostname", f"{self.name}.sink.test"] + self.extra_args
        for a in self.listen:
            argv += ["--listen", a]
        errf = open(self.env.dir / f"{self.name}.stderr", "ab")
        self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=errf)
        errf.close()

        def up():
            check(self.proc.poll() is None, f"ringpost-sink {self.name} exited with status "
                  f"{self.proc.returncode}: "
                  f"{(self.env.dir / (self.name + '.stderr')).read_text(errors='replace')}")
            for a in self.listen:
                host, _, port = a.rpartition(":")
                if not port_accepts(int(port), host.strip("[]")):
                    return False
            return True
        wait_for(up, timeout, f"ringpost-sink {self.name} to listen")
        return self

    def stop(self):
        stop_process(self.proc)

    def stats(self):
        """The latest stats line (a dict; {} before the first), read from
        the end of the file: with 10,000 domains a line is most of a
        megabyte, and the file grows every 100 ms."""
        try:
            with open(self.stats_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - (8 << 20)))
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return {}
        for line in reversed(lines):
            try:
                return json.loads(line)
            except ValueError:
                continue  # empty, cut at the start, or being written
        return {}

    def messages(self, domain=None):
        """Messages accepted, in all or for one domain."""
        st = self.stats()
        if domain is None:
            return st.get("messages", 0)
        return st.get("domains", {}).get(domain, {}).get("messages", 0)

# ---- the smtpd receiver process -----------------------------------------

def _receiver_main(argv):
    import argparse
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore
    import smtpd

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    out = Path(a.dir)
    seq = [len(list(out.glob("*.json")))]
    pid = os.getpid()

    class Server(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kw):
            seq[0] += 1
            base = out / f"{seq[0]:08d}-{pid}"
            tmp = base.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.rename(tmp, base.with_suffix(".eml"))
            tmp.write_text(json.dumps({"peer": list(peer), "mailfrom": mailfrom, "rcpttos": rcpttos,
                                       "mail_options": kw.get("mail_options", [])}))
            os.rename(tmp, base.with_suffix(".json"))
            return None

    srv = Server((a.host, a.port), None, data_size_limit=64 << 20, decode_data=False)
    srv.listen(1024)  # smtpd's own backlog is 5: concurrent connects would stall
    print("PORT", srv.socket.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *x: sys.exit(0))
    asyncore.loop(timeout=0.5)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receiver":
        _receiver_main(sys.argv[2:])
    else:
        print("usage: harness.py receiver --dir DIR [--port P]", file=sys.stderr)
        sys.exit(64)

# ---- scheduler tests ------------------------------------------------------
# Helpers for test_sched_*.py: batch submission, message status, times in
# the daemon's log and the API, ringpost-sink --save files, the bounce
# mailbox, the queue CLI.

ASAN_BUILD = "asan" in os.environ.get("RINGPOST_BUILD", "").lower() or SANITIZE


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


def api_submit_batch(d, messages, chunk=1000):
    """POST /v1/messages/batch in chunks; every entry must get an id.
    Returns the ids in order."""
    ids = []
    for i in range(0, len(messages), chunk):
        part = messages[i:i + chunk]
        r = d.api("POST", "/v1/messages/batch", {"messages": part}, timeout=60)
        check(r.status == 202, f"batch: HTTP {r.status}: {r.body[:300]!r}")
        res = r.json()["results"]
        check(len(res) == len(part), f"batch: {len(res)} results for {len(part)} messages")
        for e in res:
            check(e.get("id"), f"batch entry refused: {e}")
            ids.append(e["id"])
    return ids


def api_send(d, sender, rcpts, tag, n=1):
    """n text messages (one batch request), each to every address in rcpts,
    subjects "TAG 0".. ; their ids."""
    return api_submit_batch(d, [{"from": sender, "to": list(rcpts), "subject": f"{tag} {i}",
                                 "text": f"{tag} {i}\n"} for i in range(n)])


def api_status(d, mid):
    """GET /v1/messages/{id} as a dict."""
    r = d.api("GET", f"/v1/messages/{mid}")
    check(r.status == 200, f"GET /v1/messages/{mid}: HTTP {r.status}: {r.body[:200]!r}")
    return r.json()


def wait_rcpts(d, mid, want, timeout=20):
    """Wait until every recipient of mid is in state want; the status."""
    def done():
        st = api_status(d, mid)
        return st if all(r["state"] == want for r in st["recipients"]) else None
    return wait_for(done, timeout, f"every recipient of {mid} {want}", interval=0.1)


def api_rcpt(d, mid):
    """The first recipient's entry of GET /v1/messages/{id}."""
    return api_status(d, mid)["recipients"][0]


def wait_rcpt(d, mid, want, timeout=20):
    """Wait until every recipient of mid is in state want; the first one."""
    return wait_rcpts(d, mid, want, timeout)["recipients"][0]


def sink_counts(sinks, domain):
    """{name: messages for domain} over a dict of FastSinks."""
    return {name: s.messages(domain) for name, s in sinks.items()}


def api_domain(d, domain):
    """The domain's entry in GET /v1/stats (None when it has none)."""
    for e in d.api("GET", "/v1/stats").json().get("domains", []):
        if e.get("domain") == domain:
            return e
    return None


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


class SavedMail:
    """One file of ringpost-sink --save: envelope line, then the content."""

    def __init__(self, path):
        raw = path.read_bytes()
        first, _, self.data = raw.partition(b"\r\n")
        env = first.decode("utf-8", "replace")
        m = re.match(r"^X-Sink-Envelope: from=<([^>]*)>(?: to=(.*))?$", env)
        check(m, f"{path}: bad envelope line {env!r}")
        self.mailfrom = m.group(1)
        self.rcpts = [a.strip("<>") for a in (m.group(2) or "").split(",") if a]
        self.path = path
        self.mtime = path.stat().st_mtime_ns / 1e9

    def header(self, name):
        head = self.data.split(b"\r\n\r\n", 1)[0]
        m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*(.*(?:\r\n[ \t].*)*)",
                      head)
        return m.group(1).decode("utf-8", "replace").strip() if m else None


def saved_mail(directory):
    """Every --save file in directory, in the order the sink numbered them.
    A file is written with one writev before the sink's 250, so once
    ringpost says delivered its file is complete; one caught in the middle
    of that write (no envelope line yet) is left for the next call."""
    out = []
    for p in sorted(Path(directory).glob("*.eml"), key=lambda p: int(p.stem)):
        try:
            out.append(SavedMail(p))
        except (FileNotFoundError, TestFailure):
            continue
    return out


def bounce_list(d):
    """GET /v1/bounces: the mailbox's entries."""
    r = d.api("GET", "/v1/bounces")
    check(r.status == 200, f"GET /v1/bounces: HTTP {r.status}")
    return r.json()["messages"]


def bounce_get(d, uid):
    r = d.api("GET", f"/v1/bounces/{uid}")
    check(r.status == 200, f"GET /v1/bounces/{uid}: HTTP {r.status}")
    check((r.header("Content-Type") or "").startswith("message/rfc822"),
          f"GET /v1/bounces/{uid}: Content-Type {r.header('Content-Type')!r}")
    return r.body


def bounces_for(d, rcpt):
    """Every DSN (bytes) in the mailbox whose Final-Recipient is rcpt."""
    want = f"Final-Recipient: rfc822; {rcpt}\r\n".encode().lower()
    out = []
    for e in bounce_list(d):
        b = bounce_get(d, e["uid"])
        if want in b.lower():
            out.append(b)
    return out


def ringpost_cli(d, argv, timeout=20):
    """ringpost ARGV[0] -c CONFIG ARGV[1:] against daemon d: the CompletedProcess."""
    argv = [ringpost_bin()] + argv[:1] + ["-c", d.config_path] + argv[1:]
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout * SLOW,
                              cwd=str(d.env.dir))
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{' '.join(argv[1:])} did not exit")


def smtp_submit(port, mailfrom, rcpts, data, mail_params="", rcpt_params=""):
    """One message over SMTP submission (raw client); data uses CRLF. Returns
    the queued id."""
    with SMTPConn(port) as c:
        c.expect(220, "banner")
        c.ehlo()
        c.cmd(f"MAIL FROM:<{mailfrom}>{mail_params}", 250)
        for r in rcpts:
            c.cmd(f"RCPT TO:<{r}>{rcpt_params}", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(data))
        mid = queued_id(c.expect(250, "end of data"))
        c.cmd("QUIT", 221)
        return mid


class ClosedPort:
    """A loopback port that refuses connections: bound, never listening (so
    no other process can take it while the test runs)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        self.sock.close()


class ThreadedListener:
    """A loopback listener whose thread hands each accepted connection to
    on_accept(c); start() after the subclass has set itself up."""

    def __init__(self, backlog):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.on_accept(c)

    def on_accept(self, c):
        raise NotImplementedError

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()


class SlammingPort(ThreadedListener):
    """A listener that accepts and closes at once (no greeting), counting
    the connections it saw: an outside count of connection attempts."""

    def __init__(self):
        super().__init__(1024)
        self.times = []  # time.time() of each accept
        self.start()

    def on_accept(self, c):
        self.times.append(time.time())
        c.close()

    def count(self):
        return len(self.times)


class StrictSmtpServer(ThreadedListener):
    """A threaded SMTP server (no PIPELINING, no CHUNKING) that counts its
    concurrent connections strictly: a connection counts from accept until
    the server itself lets it go, which for QUIT is when it answers 221,
    quit_delay seconds after the QUIT arrived. A client that closes before
    that answer and reconnects at once is seen twice, as a server that
    limits connections per client would see it."""

    def __init__(self, quit_delay=0.2):
        super().__init__(256)
        self.quit_delay = quit_delay
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.connections = 0
        self.messages = 0
        self.start()

    def on_accept(self, c):
        with self.lock:
            self.current += 1
            self.connections += 1
            self.peak = max(self.peak, self.current)
        threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _release(self, state):
        if not state["counted"]:
            return
        state["counted"] = False
        with self.lock:
            self.current -= 1

    def _session(self, c):
        state = {"counted": True}
        f = c.makefile("rb")
        try:
            c.sendall(b"220 strict.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    c.sendall(b"250 strict.test\r\n")
                elif verb == b"MAIL":
                    c.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    c.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    c.sendall(b"354 go ahead\r\n")
                    while True:
                        ln = f.readline()
                        if not ln or ln == b".\r\n":
                            break
                    if not ln:
                        break
                    with self.lock:
                        self.messages += 1
                    c.sendall(b"250 2.0.0 Ok\r\n")
                elif verb in (b"RSET", b"NOOP"):
                    c.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    time.sleep(self.quit_delay)
                    self._release(state)
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    c.sendall(b"502 5.5.2 Not implemented\r\n")
        except OSError:
            pass
        finally:
            self._release(state)
            f.close()
            c.close()


def sink_history(sink):
    """Every stats line a FastSink has written so far, oldest first (dicts
    with "t", its wall-clock time, written after the counts it holds)."""
    out = []
    try:
        lines = sink.stats_path.read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # the line being written
    return out
