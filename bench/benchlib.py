"""benchlib.py - the parts bench/run and bench/compare-postfix share.

Processes (the sink, ringpost, the blaster, a private Postfix) are started
from the main thread only, with proclib (PR_SET_PDEATHSIG: they die with us
even if we are SIGKILLed; each in its own process group); every one we start
is stopped (SIGTERM, then SIGKILL, with a warning) in a finally block or, as
a last resort, at exit. Every wait has a deadline; failures are BenchError.
Nothing here uses threads: the measuring loop polls /proc and the sink's
stats file between short sleeps.

Python 3.11 standard library only.
"""

import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import proclib

HERE = Path(__file__).resolve().parent
SOURCE_ROOT = HERE.parent
DEFAULT_BIN_DIR = SOURCE_ROOT / "build" / "bin"
RESULTS_DIR = HERE / "results"

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

QUIET = False  # --json-only: progress lines off (warnings still go to stderr)


class BenchError(Exception):
    """A run that could not be carried out (a tool missing, a process died,
    a wait timed out). code is the exit status the script should use."""

    def __init__(self, msg, code=1):
        super().__init__(msg)
        self.code = code


def say(*args):
    """A progress line on stderr (stdout is for results)."""
    if not QUIET:
        print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def warn(*args):
    print("warning:", *args, file=sys.stderr, flush=True)


# ---- processes: proclib, bench flavour ---------------------------------------

def spawn(argv, *, stdout=None, stderr=None, cwd=None, env=None):
    """Start argv (its items made str) with the death signal, in its own
    process group (a Ctrl-C reaches us only); returns the Popen."""
    return proclib.spawn(argv, own_group=True, stdout=stdout, stderr=stderr, cwd=cwd, env=env)


def _warn_killed(p, timeout):
    warn(f"pid {p.pid} ({Path(p.args[0]).name}) ignored SIGTERM for {timeout}s: SIGKILL")


def stop_process(p, timeout=20, sig=signal.SIGTERM):
    """SIGTERM (or sig), wait up to timeout seconds, then SIGKILL with a
    warning. Returns the exit status (negative for a signal), None if it
    would not die."""
    return proclib.stop_process(p, timeout, sig, on_kill=_warn_killed)


def install_signal_handlers():
    """SIGTERM and SIGHUP become SystemExit so that finally blocks run
    (SIGINT already raises KeyboardInterrupt)."""
    proclib.exit_on_signals((signal.SIGTERM, signal.SIGHUP))


def raise_nofile(want=None):
    """Raise RLIMIT_NOFILE for us and the children we start. As root the hard
    limit may go up to fs.nr_open; otherwise the soft limit goes to the hard
    one. Returns the soft limit in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want is None:
        try:
            want = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            want = 1048576
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


# ---- /proc ----------------------------------------------------------------

def proc_status(pid):
    """The kB fields of /proc/PID/status we use (VmRSS, VmHWM, RssAnon,
    RssFile, Threads); {} when the process is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def proc_pss_kb(pid):
    """Proportional set size (kB) from /proc/PID/smaps_rollup: shared pages
    divided among the processes sharing them, so sums over processes are
    real memory. 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def proc_cpu(pid, children=False):
    """utime+stime of a process (all its threads) in seconds; with children,
    plus the CPU of the children it has waited for. None when it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields after "comm)": state=0 ... utime=11 stime=12 cutime=13 cstime=14
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def free_port(hosts=("127.0.0.1",)):
    """A TCP port that is free right now on every address in hosts."""
    return proclib.free_port(hosts, error=lambda msg: BenchError(msg, EX_OSERR))


def wait_until(pred, timeout, what, interval=0.05, alive=None):
    """Poll pred() until true; BenchError after timeout seconds. alive, if
    given, is a list of (Popen, name) that must not exit meanwhile."""
    return proclib.wait_until(pred, timeout, what, interval, alive, error=BenchError)


def tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---- tools ----------------------------------------------------------------

def find_tools(bin_dir, names=("ringpost", "ringpost-sink", "ringpost-blast")):
    """{name: path} for the binaries in bin_dir; BenchError naming what is
    missing (exit 69) otherwise."""
    bin_dir = Path(bin_dir)
    out, missing = {}, []
    for n in names:
        p = bin_dir / n
        if p.is_file() and os.access(p, os.X_OK):
            out[n] = p
        else:
            missing.append(n)
    if missing:
        raise BenchError(f"{', '.join(missing)} not found in {bin_dir}: build first "
                         f"(make build, or cmake -S . -B build && cmake --build build)",
                         EX_UNAVAILABLE)
    return out


def snapshot_tools(tools):
    """Copy the binaries into a private temp dir (removed at exit) so that
    every run of one invocation uses the same build even if the build tree
    is rebuilt meanwhile. Returns ({name: copy}, {name: sha256[:12]})."""
    import hashlib
    d = Path(tempfile.mkdtemp(prefix="ringpost-bench-bin-"))
    os.chmod(d, 0o755)
    atexit.register(shutil.rmtree, d, True)
    out, sums = {}, {}
    for name, path in tools.items():
        dst = d / name
        shutil.copy2(path, dst)
        out[name] = dst
        sums[name] = hashlib.sha256(dst.read_bytes()).hexdigest()[:12]
    return out, sums


def source_revision():
    """git describe of the source tree (with -dirty), or None."""
    try:
        r = subprocess.run(["git", "-C", str(SOURCE_ROOT), "describe", "--always", "--dirty"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def host_info():
    info = {"nproc": os.cpu_count(), "kernel": os.uname().release}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = [float(x) for x in os.getloadavg()]
    except OSError:
        pass
    return info


# ---- TLS files ----------------------------------------------------------------

class TlsFiles:
    """A throwaway CA and the server certificates it signs, made with the
    openssl command line in directory d (ca.pem, NAME-KIND.pem with the
    chain, NAME-KIND.key). kind: "ec" (ECDSA P-256) or "rsa" (RSA-2048)."""

    def __init__(self, d):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self._serial = 1
        self._key(self.ca_key, "ec")
        self._openssl("req", "-x509", "-new", "-key", self.ca_key, "-days", "2",
                      "-subj", "/CN=ringpost bench CA", "-addext",
                      "basicConstraints=critical,CA:TRUE", "-addext",
                      "keyUsage=critical,keyCertSign,cRLSign", "-out", self.ca)

    @staticmethod
    def _openssl(*args):
        exe = shutil.which("openssl")
        if not exe:
            raise BenchError("openssl not found (Debian package openssl)", EX_UNAVAILABLE)
        r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise BenchError(f"openssl {args[0]}: {r.stderr.strip()[:300]}")

    def _key(self, path, kind):
        if kind == "ec":
            self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-out", path)
        elif kind == "rsa":
            self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                          "-out", path)
        else:
            raise BenchError(f"unknown key kind {kind!r} (ec, rsa)")

    def issue(self, name, ips=("127.0.0.1",), kind="ec"):
        """A certificate for name and the IP addresses ips: (chain, key)."""
        stem = self.dir / f"{name}-{kind}"
        key, csr, crt, ext = (stem.with_suffix(x) for x in (".key", ".csr", ".crt", ".ext"))
        chain = stem.with_suffix(".pem")
        self._key(key, kind)
        self._openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        sans = ",".join([f"DNS:{name}"] + [f"IP:{ip}" for ip in ips])
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                       "basicConstraints=CA:FALSE\n")
        self._serial += 1
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-set_serial", self._serial, "-days", "2", "-extfile", ext, "-out", crt)
        chain.write_text(crt.read_text() + self.ca.read_text())
        return chain, key


def offers_starttls(port, host="127.0.0.1", timeout=10):
    """Whether the SMTP server at host:port lists STARTTLS in its EHLO
    reply. BenchError when it cannot be asked."""
    import smtplib
    try:
        with smtplib.SMTP(host, port, local_hostname="probe.bench.test", timeout=timeout) as c:
            c.ehlo()
            return c.has_extn("starttls")
    except (OSError, smtplib.SMTPException) as e:
        raise BenchError(f"cannot ask {host}:{port} for its EHLO reply: {e}") from None


# ---- the sink ---------------------------------------------------------------

class RedisServer:
    """redis-server of one run ([cluster] redis), no persistence; commands()
    is its total_commands_processed."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.proc = None
        self.port = None

    def start(self, timeout=10):
        binary = shutil.which("redis-server")
        if not binary:
            raise BenchError("no redis-server (apt-get install redis-server)", EX_UNAVAILABLE)
        self.port = free_port()
        (self.workdir / "redis").mkdir(exist_ok=True)
        self.proc = spawn([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", str(self.workdir / "redis")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.commands() is not None, timeout, "redis-server to answer",
                   alive=[(self.proc, "redis-server")])

    def commands(self):
        try:
            p = subprocess.run(["redis-cli", "-p", str(self.port), "INFO", "stats"],
                               capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in p.stdout.decode(errors="replace").splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":", 1)[1])
        return None

    def stop(self):
        stop_process(self.proc, timeout=10)
        self.proc = None


class HookSink:
    """bench/hook_sink.py: the webhook endpoint of a run; stop() returns its
    counts ({"requests", "events", "bytes"}) or None."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.out_path = self.workdir / "hooks.json"
        self.proc = None
        self.port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/events"

    def start(self, timeout=15):
        self.proc = spawn([sys.executable, str(HERE / "hook_sink.py"), "--out",
                           str(self.out_path)], stdout=subprocess.PIPE)
        end = time.time() + timeout
        line = self.proc.stdout.readline().decode()
        if not line.startswith("port=") or time.time() > end:
            raise BenchError(f"hook_sink.py did not start: {line!r}")
        self.port = int(line[5:])

    def stop(self):
        if not self.proc:
            return None
        stop_process(self.proc, timeout=10)  # it writes its counts on SIGTERM
        self.proc = None
        try:
            return json.loads(self.out_path.read_text())
        except (OSError, ValueError):
            return None


class Sink:
    """ringpost-sink listening on one port on each of addrs; its per-interval
    JSON lines go to workdir/sink-stats.jsonl, which poll() reads
    incrementally (a partial last line waits for the next call)."""

    def __init__(self, binary, workdir, addrs=("127.0.0.1",), threads=1, interval_ms=100,
                 extra=()):
        self.binary = binary
        self.workdir = Path(workdir)
        self.addrs = list(addrs)
        self.threads = threads
        self.interval_ms = interval_ms
        self.extra = list(extra)
        self.port = None
        self.proc = None
        self.stats_path = self.workdir / "sink-stats.jsonl"
        self.out_path = self.workdir / "sink.out"
        self.err_path = self.workdir / "sink.err"
        self.lines = []  # every stats line parsed so far, in order
        self._off = 0
        self._partial = b""
        self.final = None  # the line printed at exit

    def endpoint(self, i=0):
        return f"{self.addrs[i % len(self.addrs)]}:{self.port}"

    def start(self, timeout=15):
        self.port = free_port(self.addrs)
        argv = [self.binary, "--threads", self.threads, "--stats-file", self.stats_path,
                "--stats-interval", self.interval_ms]
        for a in self.addrs:
            argv += ["--listen", f"{a}:{self.port}"]
        argv += self.extra
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = spawn(argv, stdout=self._out, stderr=self._err)
        try:
            wait_until(lambda: all(proclib.listening(self.port, a) for a in self.addrs), timeout,
                       f"ringpost-sink to listen on port {self.port}",
                       alive=[(self.proc, "ringpost-sink")])
        except BenchError as e:
            raise BenchError(f"{e}\nringpost-sink stderr:\n{tail(self.err_path)}") from None

    def poll(self):
        """Read new stats lines; returns the latest line (dict) or None."""
        try:
            with open(self.stats_path, "rb") as f:
                f.seek(self._off)
                data = f.read()
        except OSError:
            return self.lines[-1] if self.lines else None
        self._off += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            raw = raw.strip()
            if raw:
                try:
                    self.lines.append(json.loads(raw))
                except ValueError:
                    warn(f"ringpost-sink: unparsable stats line: {raw[:120]!r}")
        return self.lines[-1] if self.lines else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM; the final JSON line (stdout, else the stats file) is kept
        in self.final. Returns it."""
        if self.proc is None:
            return None
        rc = stop_process(self.proc)
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()
        self.poll()
        try:
            for line in reversed(self.out_path.read_text().splitlines()):
                if line.strip().startswith("{"):
                    self.final = json.loads(line)
                    break
        except (OSError, ValueError):
            pass
        if self.final is None and self.lines:
            self.final = self.lines[-1]
        self.exit_status = rc
        if rc != 0:
            warn(f"ringpost-sink exited with status {rc}: {tail(self.err_path, 5)}")
        self.proc = None
        return self.final


def sink_count(line):
    """What the sink has received: recipients (each a delivered copy)."""
    if not line:
        return 0
    return int(line.get("recipients", line.get("messages", 0)))


# ---- ringpost ---------------------------------------------------------------

API_KEY = "change-me"  # the bench configs' [api] keys


class Ringpost:
    """ringpost serve with a config written for the benchmark: submission and
    the HTTP API (key API_KEY) on free loopback ports, the spool and the log
    in workdir, one static route per bench domain."""

    def __init__(self, binary, workdir, routes, *, max_connections=100, shards=0,
                 log_level="warn", server=None, queue=None, domain_defaults=None,
                 submission=None, tls=None, submissions=False, sections=None):
        self.binary = binary
        self.workdir = Path(workdir)
        self.routes = routes  # {domain: "host:port"}
        self.max_connections = max_connections
        self.shards = shards
        self.log_level = log_level
        self.extra = {"server": server or {}, "queue": queue or {},
                      "domain *": domain_defaults or {}, "submission": submission or {},
                      "tls": tls or {}}
        self.sections = sections or {}  # more sections ({"dkim bench.test": {...}})
        self.want_submissions = submissions  # [listen] submissions (implicit TLS; needs tls)
        self.port = None      # SMTP submission
        self.api_port = None  # HTTP API
        self.submissions_port = None
        self.proc = None
        self.spool = self.workdir / "spool"
        self.config_path = self.workdir / "ringpost.conf"
        self.log_path = self.workdir / "ringpost.log"
        self.err_path = self.workdir / "ringpost.err"

    def config_text(self):
        sec = {
            "server": {"hostname": "ringpost.bench.test", "data_dir": str(self.spool),
                       "shards": str(self.shards), "log": str(self.log_path),
                       "log_level": self.log_level},
            "listen": {"submission": f"127.0.0.1:{self.port}",
                       "api": f"127.0.0.1:{self.api_port}"},
            "submission": {"networks": "127.0.0.0/8, ::1"},
            "api": {"keys": API_KEY},
            # Short retries: a benchmark must not sit out a 1-minute retry
            # if a session breaks; there should be none with a healthy sink.
            "queue": {"retry": "2s, 10s, 30s", "max_age": "1h"},
            "domain *": {"max_connections": str(self.max_connections),
                         "connect_timeout": "30s"},
            "tls": {},  # [tls] cert and key: the submission listener's certificate
            # The load comes from one address over many connections, as
            # fast as it can: [limits] per client would measure the limiter.
            "limits": {"connections_per_client": "0", "commands_per_second": "0"},
        }
        if self.submissions_port:
            sec["listen"]["submissions"] = f"127.0.0.1:{self.submissions_port}"
        for name, d in list(self.extra.items()) + list(self.sections.items()):
            sec.setdefault(name, {}).update({k: str(v) for k, v in d.items()})
        for dom, addr in self.routes.items():
            sec.setdefault(f"domain {dom}", {})["route"] = addr
        out = ["; written by bench/ for one benchmark run"]
        for name, keys in sec.items():
            if not keys:
                continue
            out.append(f"[{name}]")
            out += [f"{k} = {v}" for k, v in keys.items()]
            out.append("")
        return "\n".join(out)

    def start(self, timeout=20):
        self.port = free_port()
        self.api_port = free_port()
        while self.api_port == self.port:
            self.api_port = free_port()
        if self.want_submissions:
            self.submissions_port = free_port()
            while self.submissions_port in (self.port, self.api_port):
                self.submissions_port = free_port()
        self.config_path.write_text(self.config_text())
        self._err = open(self.err_path, "wb")
        self.proc = spawn([self.binary, "serve", "-c", self.config_path],
                          stdout=self._err, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: proclib.listening(self.port) and proclib.listening(self.api_port),
                       timeout, f"ringpost to listen on 127.0.0.1:{self.port} and :{self.api_port}",
                       alive=[(self.proc, "ringpost")])
        except BenchError as e:
            raise BenchError(f"{e}\nringpost stderr:\n{tail(self.err_path)}\n"
                             f"ringpost log:\n{tail(self.log_path)}") from None

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def listens_submissions(self, wait=1.0):
        """Whether ringpost listens on the [listen] submissions port it was
        given (a build without implicit TLS accepts the key and does not)."""
        if not self.submissions_port:
            return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proclib.listening(self.submissions_port):
                return True
            time.sleep(0.05)
        return False

    def status(self):
        return proc_status(self.proc.pid)

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def spool_bytes(self):
        """Size of the LMDB file (apparent size: what the file has grown to)."""
        try:
            return (self.spool / "data.mdb").stat().st_size
        except OSError:
            return 0

    def stop(self, timeout=30):
        if self.proc is None:
            return None
        rc = stop_process(self.proc, timeout=timeout)
        self.exit_status = rc
        if getattr(self, "_err", None):
            self._err.close()
        if rc != 0:
            warn(f"ringpost exited with status {rc}; stderr: {tail(self.err_path, 5)}")
        self.proc = None
        return rc

    def api(self, method, path, timeout=30):
        """One request to the HTTP API with the bench key; the JSON answer
        (dict). BenchError on a non-2xx status or no answer."""
        import urllib.error
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", method=method,
                                     headers={"Authorization": f"Bearer {API_KEY}"},
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise BenchError(f"ringpost API {method} {path}: {e.code} {e.read()[:200]!r}") from None
        except (OSError, ValueError) as e:
            raise BenchError(f"ringpost API {method} {path}: {e}") from None

    def set_suspended(self, domains, on):
        """POST /v1/queue/DOMAIN/suspend (or resume) for each domain."""
        action = "suspend" if on else "resume"
        for d in domains:
            r = self.api("POST", f"/v1/queue/{d}/{action}")
            if r.get("action") != action:
                raise BenchError(f"ringpost API: {action} {d} answered {r}")

    def accepted(self):
        """Messages ringpost has accepted so far, SMTP and API (GET /v1/stats)."""
        acc = self.api("GET", "/v1/stats").get("accepted", {})
        return int(acc.get("smtp", 0)) + int(acc.get("api", 0))

    def diagnostics(self):
        return (f"ringpost stderr:\n{tail(self.err_path)}\nringpost log ({self.log_path}):\n"
                f"{tail(self.log_path)}")


def bench_routes(domains, sink, fmt="d{}.bench.test"):
    """One static route per bench domain, spread over the sink's addresses."""
    return {fmt.format(i): sink.endpoint(i) for i in range(domains)}


# ---- the blaster ------------------------------------------------------------

def blast_argv(binary, server, *, messages, connections=50, size=2048, size_mix=None,
               domains=1, rcpts=1, rate=0, mode="smtp", batch=None, pipeline=1, extra=()):
    """ringpost-blast's command line; server is the submission port for
    mode smtp, the API's for http and http-batch."""
    argv = [binary, "--mode", mode, "--server", server, "--connections", connections,
            "--messages", messages, "--domains", domains, "--rcpts", rcpts, "--json"]
    if mode != "smtp":
        argv += ["--key", API_KEY]
    if batch:
        argv += ["--batch", batch]
    if pipeline and pipeline > 1:
        argv += ["--pipeline", pipeline]
    if size_mix:
        argv += ["--size-mix", size_mix]
    else:
        argv += ["--size", size]
    if rate:
        argv += ["--rate", int(rate)]
    return argv + list(extra)


class LoadClient:
    """A load generator running in the background, its stdout and stderr in
    workdir/TAG.out and .err; subclasses parse its report in result()."""

    def __init__(self, argv, workdir, tag):
        self.argv = argv
        self.out_path = Path(workdir) / f"{tag}.out"
        self.err_path = Path(workdir) / f"{tag}.err"
        self.proc = None
        self.t_start = None
        self._out = self._err = None

    def start(self):
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.t_start = time.time()
        self.proc = spawn(self.argv, stdout=self._out, stderr=self._err)

    def done(self):
        return self.proc.poll() is not None

    def _close(self):
        for f in (self._out, self._err):
            if f and not f.closed:
                f.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout=5)
        self._close()


class Blast(LoadClient):
    """ringpost-blast running in the background; result() parses its JSON."""

    def __init__(self, argv, workdir, tag="blast"):
        super().__init__(argv, workdir, tag)

    def result(self):
        """The final report (dict); BenchError when blast failed."""
        self._close()
        rc = self.proc.returncode
        report = None
        for line in reversed(self.out_path.read_text(errors="replace").splitlines()):
            if line.strip().startswith("{"):
                try:
                    report = json.loads(line)
                    break
                except ValueError:
                    pass
        if report is None:
            raise BenchError(f"ringpost-blast exited with status {rc} and no JSON report:\n"
                             f"{tail(self.err_path)}")
        if rc != 0:
            warn(f"ringpost-blast exited with status {rc}: {tail(self.err_path, 3)}")
        report["exit_status"] = rc
        return report


class Wrk(LoadClient):
    """wrk (Debian package wrk) POSTing to the API with bench/wrk-post.lua,
    in the background; result() parses the JSON line the script's done()
    prints."""

    SCRIPT = HERE / "wrk-post.lua"

    def __init__(self, url, workdir, *, threads=2, connections=100, duration_s=15, size=2048,
                 domains=4, tag="wrk"):
        exe = shutil.which("wrk")
        if not exe:
            raise BenchError("wrk not found (Debian package wrk)", EX_UNAVAILABLE)
        super().__init__([exe, f"-t{threads}", f"-c{connections}", f"-d{int(duration_s)}s",
                          "--timeout", "30s", "-s", str(self.SCRIPT), url, "--", API_KEY,
                          str(size), str(domains)], workdir, tag)

    def result(self):
        """{"requests", "duration_us", "errors": {...}, "latency_us": {...}, ...}."""
        self._close()
        text = self.out_path.read_text(errors="replace")
        for line in reversed(text.splitlines()):
            if line.startswith('{"wrk"'):
                try:
                    rep = json.loads(line)["wrk"]
                    break
                except ValueError:
                    pass
        else:
            raise BenchError(f"wrk exited with status {self.proc.returncode} and no JSON line:\n"
                             f"{text[-800:]}\n{tail(self.err_path)}")
        rep["exit_status"] = self.proc.returncode
        rep["text"] = text
        return rep


# ---- measuring --------------------------------------------------------------

class Sampler:
    """Periodic samples of a process (RSS, CPU) and a spool file, plus the
    sink's progress, taken from the polling loop."""

    def __init__(self, sink, pid=None, spool_fn=None, every=0.25):
        self.sink = sink
        self.pid = pid
        self.spool_fn = spool_fn
        self.every = every
        self.samples = []  # (t, rss_kb, rss_anon_kb, spool_bytes, sink_count, sink_sessions)
        self._next = 0.0

    def maybe(self, force=False):
        now = time.monotonic()
        line = self.sink.poll()
        if not force and now < self._next:
            return line
        self._next = now + self.every
        st = proc_status(self.pid) if self.pid else {}
        self.samples.append((time.time(), st.get("VmRSS", 0), st.get("RssAnon", 0),
                             self.spool_fn() if self.spool_fn else 0, sink_count(line),
                             int(line.get("sessions", 0)) if line else 0))
        return line


def delivery_end(lines, expected):
    """(t_first_line_with_all, t_previous_line) from the sink's stats lines:
    the last message arrived in between. None when never reached."""
    prev = None
    for ln in lines:
        if sink_count(ln) >= expected:
            return ln["t"], (prev["t"] if prev else None)
        prev = ln
    return None


def throughput_series(lines, t0):
    """[(seconds since t0, delivered per second in the interval, total,
    open sessions)] from consecutive sink stats lines."""
    out = []
    prev = None
    for ln in lines:
        if prev is not None and ln["t"] >= t0:
            dt = ln["t"] - prev["t"]
            if dt > 0:
                out.append((round(ln["t"] - t0, 3),
                            round((sink_count(ln) - sink_count(prev)) / dt, 1),
                            sink_count(ln), int(ln.get("sessions", 0))))
        prev = ln
    return out


def flatten(d, prefix=""):
    """Numeric leaves of nested dicts as {"a.b": v} (lists are skipped)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[key] = v
        elif isinstance(v, dict):
            out.update(flatten(v, key + "."))
    return out


def medians(runs, skip=("series", "samples")):
    """Median of every numeric field over the runs, nested like the runs."""
    flat = [flatten({k: v for k, v in r.items() if k not in skip}) for r in runs]
    keys = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    out = {}
    for k in keys:
        vals = [f[k] for f in flat if k in f]
        m = statistics.median(vals)
        if all(isinstance(v, int) for v in vals) and m == int(m):
            m = int(m)
        elif isinstance(m, float):
            m = round(m, 3)
        node = out
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = m
    return out


def timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def write_results(doc, name, results_dir=RESULTS_DIR):
    """results_dir/NAME-TIMESTAMP.json; returns the path (stem shared with
    the plot)."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}-{doc.get('timestamp') or timestamp()}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def plot_throughput(series_by_label, png_path, title, y2=None, y2_label=None):
    """A PNG of delivered messages per second over time, one line per run
    (series: [(t, rate, ...)]); y2 (dict label -> [(t, value)]) adds lines
    on a second axis. Returns the path, or None (with a warning) when
    gnuplot is missing or fails."""
    gp = shutil.which("gnuplot")
    if not gp:
        warn("gnuplot not found (Debian package gnuplot-nox, installed by .ci/deps): no plot")
        return None
    if not any(series_by_label.values()):
        return None
    with tempfile.TemporaryDirectory(prefix="ringpost-plot-") as td:
        data = Path(td) / "data"
        blocks, plots, idx = [], [], 0
        for label, series in series_by_label.items():
            if not series:
                continue
            blocks.append("\n".join(f"{p[0]} {p[1]}" for p in series))
            plots.append(f"'{data}' index {idx} using 1:2 with lines lw 2 title '{label}'")
            idx += 1
        for label, series in (y2 or {}).items():
            if not series:
                continue
            blocks.append("\n".join(f"{p[0]} {p[1]}" for p in series))
            plots.append(f"'{data}' index {idx} using 1:2 axes x1y2 with lines dt 2 "
                         f"title '{label}'")
            idx += 1
        data.write_text("\n\n\n".join(blocks) + "\n")
        term = "pngcairo size 1000,560 font 'sans,10'"
        script = [f"set terminal {term}", f"set output '{png_path}'",
                  f"set title \"{title}\" noenhanced", "set xlabel 'seconds since blast start'",
                  "set ylabel 'delivered messages / s'", "set grid", "set key top right",
                  "set yrange [0:*]"]
        if y2:
            script += ["set y2tics", f"set y2label '{y2_label or ''}'", "set y2range [0:*]",
                       "set ytics nomirror"]
        script.append("plot " + ", ".join(plots))
        r = subprocess.run([gp], input="\n".join(script) + "\n", text=True,
                           capture_output=True, timeout=60)
        if r.returncode != 0 and "pngcairo" in r.stderr:
            script[0] = "set terminal png size 1000,560"
            r = subprocess.run([gp], input="\n".join(script) + "\n", text=True,
                               capture_output=True, timeout=60)
        if r.returncode != 0 or not Path(png_path).exists():
            warn(f"gnuplot failed: {r.stderr.strip()[:300]}")
            return None
    return Path(png_path)


# ---- formatting -------------------------------------------------------------

def fmt_int(n):
    return f"{int(round(n)):,}" if n is not None else "-"


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms" if v >= 1 else f"{v:.2f} ms"
