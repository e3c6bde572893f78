"""clients.py - clients we drive the daemon with: SMTPConn and HTTPConn (raw
sockets: exact bytes out, exact replies in), api_request (urllib), curl, and
smtp_submit for one message over SMTP submission."""

import json
import re
import socket
import subprocess

from .base import SLOW, TestFailure
from .config import API_KEY


class SMTPConn:
    """A raw-socket SMTP client: exact bytes out, exact replies in. source:
    the local address to connect from (another 127.x.y.z is another client
    to the daemon's per-address limits)."""

    def __init__(self, port, host="127.0.0.1", timeout=30, source=None):
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW,
                                             source_address=(source, 0) if source else None)
        self.buf = b""

    def start_tls(self, context, server_hostname):
        """TLS from here on (after STARTTLS's 220, or at once for implicit
        TLS), verified as context says. Clear text received and not read
        yet would be taken for the handshake: it is a failure."""
        if self.buf:
            raise TestFailure(f"clear text before the TLS handshake: {self.buf[:200]!r}")
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return self

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


def api_request(port, method, path, body=None, *, key=API_KEY, headers=None, timeout=30,
                tls=None):
    """One request with Python's urllib; errors (4xx/5xx) are answers too.
    body: bytes as they are, anything else as JSON. key None: no
    Authorization header. tls: an ssl.SSLContext to speak HTTPS with (an
    [api] tls = yes listener)."""
    import urllib.error
    import urllib.request
    global _url_opener
    if _url_opener is None:
        _url_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    opener = _url_opener
    if tls is not None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=tls))
    data = body
    hdrs = {}
    if body is not None and not isinstance(body, (bytes, bytearray)):
        data = json.dumps(body).encode()
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    hdrs.update(headers or {})
    scheme = "https" if tls is not None else "http"
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", data=data,
                                 method=method, headers=hdrs)
    try:
        with opener.open(req, timeout=timeout * SLOW) as r:
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
