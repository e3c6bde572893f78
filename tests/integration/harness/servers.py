"""servers.py - the servers ringpost delivers to and resolves with: recording
receivers (smtpd, Postfix's smtp-sink, bench's ringpost-sink), a private
dnsmasq, and in-process listeners that refuse, slam or count connections."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .base import SLOW, TestFailure, build_bin, check
from .proc import free_port, port_accepts, spawn, stop_process, wait_for

RECEIVER = Path(__file__).resolve().parent / "receiver.py"
TLS_RECEIVER = Path(__file__).resolve().parent / "tls_receiver.py"
# Debian's Python: the only one with python3-aiosmtpd (the `python3` on PATH may differ).
SYSTEM_PYTHON = "/usr/bin/python3"


# ---- receivers that record each message ---------------------------------

class Received:
    """One message as a receiver recorded it."""

    def __init__(self, mailfrom, rcpts, data, path, peer=None, helo=None):
        self.mailfrom = mailfrom
        self.rcpts = rcpts
        self.data = data  # bytes, LF line ends, dots un-stuffed
        self.path = path
        self.peer = peer  # the client's address ("127.0.0.2", "::1"), when recorded
        self.helo = helo  # the client's EHLO/HELO name, when recorded

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
    """Python's smtpd.SMTPServer in its own process (receiver.py: no GIL
    shared with us)."""

    kind = "smtpd"

    def __init__(self, env, name="smtpd", port=0, host="127.0.0.1"):
        self.env = env
        self.dir = env.dir / name
        self.dir.mkdir(exist_ok=True)
        self.host = host
        self.want_port = port
        self.port = None
        self.proc = None
        self.name = name

    def argv(self):
        return [sys.executable, "-W", "ignore::DeprecationWarning", str(RECEIVER),
                "--dir", str(self.dir), "--host", self.host, "--port", str(self.want_port)]

    def start(self, timeout=10):
        errf = open(self.env.dir / f"{self.name}.stderr", "ab")
        self.proc = spawn(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=errf)
        errf.close()
        box = {}

        def reader():
            box["line"] = self.proc.stdout.readline()
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout * SLOW)
        line = box.get("line", b"")
        check(line.startswith(b"PORT "), f"{self.kind} receiver did not start (said {line!r}; "
              f"{(self.env.dir / (self.name + '.stderr')).read_text(errors='replace')[-500:]})")
        self.port = int(line.split()[1])
        return self

    @property
    def addr(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self):
        stop_process(self.proc)

    def messages(self):
        out = []
        for j in sorted(self.dir.glob("*.json")):
            env = json.loads(j.read_text())
            # smtpd drops the CRLF before the final dot; put it back so
            # both receivers record LF-terminated lines.
            data = j.with_suffix(".eml").read_bytes() + b"\n"
            peer = env.get("peer")
            out.append(Received(env["mailfrom"], env["rcpttos"], data, j,
                                peer=peer[0] if peer else None, helo=env.get("helo")))
        return out

    def count(self):
        return sum(1 for _ in self.dir.glob("*.json"))


class TlsReceiver(SmtpdReceiver):
    """aiosmtpd with STARTTLS in its own process (tls_receiver.py, run by
    Debian's /usr/bin/python3), recording whether each message came over
    TLS: Received.tls is None (clear text) or {"version", "cipher"}.
    cert/key: STARTTLS offered with them; broken_tls: offered, answered
    220, then garbage instead of a handshake."""

    kind = "aiosmtpd"

    def __init__(self, env, name="tls", port=0, cert=None, key=None, broken_tls=False):
        super().__init__(env, name, port)
        self.cert, self.key, self.broken_tls = cert, key, broken_tls

    @staticmethod
    def require():
        r = subprocess.run([SYSTEM_PYTHON, "-c", "import aiosmtpd"], capture_output=True)
        check(r.returncode == 0, f"{SYSTEM_PYTHON} cannot import aiosmtpd "
              f"(apt-get install python3-aiosmtpd; .ci/deps installs it)")

    def argv(self):
        argv = [SYSTEM_PYTHON, "-W", "ignore", str(TLS_RECEIVER), "--dir", str(self.dir),
                "--port", str(self.want_port)]
        if self.cert:
            argv += ["--cert", str(self.cert), "--key", str(self.key)]
        if self.broken_tls:
            argv += ["--broken-tls"]
        return argv

    def messages(self):
        out = []
        for j in sorted(self.dir.glob("*.json")):
            env = json.loads(j.read_text())
            data = j.with_suffix(".eml").read_bytes().replace(b"\r\n", b"\n")
            m = Received(env["mailfrom"], env["rcpttos"], data, j)
            m.tls = ({"version": env.get("version"), "cipher": env.get("cipher")}
                     if env.get("tls") else None)
            out.append(m)
        return out


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


def sink_counts(sinks, domain):
    """{name: messages for domain} over a dict of FastSinks."""
    return {name: s.messages(domain) for name, s in sinks.items()}


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


# ---- DNS ----------------------------------------------------------------

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


# ---- in-process listeners -----------------------------------------------

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
