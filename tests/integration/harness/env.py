"""env.py - one test's environment and run: TestEnv (a temp directory, the
daemons and servers started in it, cleaned up on exit), Cases and run_cases,
stop_clean, raise_failures and run_test (exit status and message)."""

import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .base import TestFailure, log, ringpost_bin
from .config import config_text
from .daemon import Daemon
from .proc import free_port, kill_all_children
from .servers import Dnsmasq, FastSink, SmtpdReceiver, SmtpSink, TlsReceiver


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

    def smtpd(self, name="smtpd", port=0, host="127.0.0.1"):
        r = SmtpdReceiver(self, name, port, host).start()
        self.receivers.append(r)
        return r

    def tls_receiver(self, name="tls", cert=None, key=None, broken_tls=False):
        """A started aiosmtpd receiver with STARTTLS (TlsReceiver)."""
        r = TlsReceiver(self, name, 0, cert, key, broken_tls).start()
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
    must still be alive. Returns the list of failures (strings).
    RINGPOST_CASE=WORD runs only the cases whose name contains WORD."""
    failures = []
    only = os.environ.get("RINGPOST_CASE")
    for fn in cases:
        if only and only not in fn.__name__:
            continue
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
        kill_all_children()
    log(f"PASS {name} in {time.monotonic() - t0:.1f}s")
    sys.exit(0)
