"""test_sdnotify.py - the sd_notify protocol end to end (systemd's
Type=notify, docs/debian/ringpost.service): the real daemon started with
NOTIFY_SOCKET naming a Python AF_UNIX datagram socket, as systemd would.

  - READY=1 (with STATUS=) is the first datagram, and when it arrives the
    submission port answers with its 220 banner at once and the HTTP API
    says /healthz 200: mail is really accepted;
  - SIGHUP: RELOADING=1 (with MONOTONIC_USEC=, a CLOCK_MONOTONIC time near
    ours) and then READY=1; a reload that fails (a broken config) still
    ends in READY=1, its STATUS= saying so, and the daemon keeps serving;
  - SIGTERM: STOPPING=1, then exit 0;
  - an abstract socket name ("@name") works the same;
  - a daemon that cannot start (its spool cannot be created) exits 74 and
    never says READY=1;
  - a NOTIFY_SOCKET nobody listens on costs one warning line, never the
    start: the daemon serves and stops with 0.
"""

import os
import signal
import socket
import time

from harness import (SLOW, SMTPConn, TestEnv, TestFailure, api_request, check, config_text,
                     free_port, log, ringpost_bin, run_test)
from harness.proc import spawn, stop_process


class Manager:
    """A stand-in for systemd's notification socket: a path or @abstract."""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + name[1:] if name.startswith("@") else name)

    def next(self, timeout=15):
        """The next datagram as {VAR: VALUE}, and the time it arrived."""
        self.sock.settimeout(timeout * SLOW)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise TestFailure(f"no notification within {timeout}s")
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        return fields, time.monotonic()

    def nothing(self, wait=0.3):
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return True
        raise TestFailure(f"unexpected notification {data!r}")

    def close(self):
        self.sock.close()


def start(env, conf, notify, name):
    logf = open(env.dir / f"{name}.log", "ab")
    try:
        e = dict(os.environ, NOTIFY_SOCKET=notify)
        return spawn([ringpost_bin(), "serve", "-c", conf], stdout=logf, stderr=logf,
                     cwd=str(env.dir), env=e)
    finally:
        logf.close()


def write_conf(env, name, port, api_port, spool=None):
    text = config_text(submission_port=port, routes={}, api_port=api_port,
                       data_dir=spool or str(env.dir / f"{name}-spool"))
    return env.write_config(text, f"{name}.conf")


def check_ready_means_accepting(m, port, api_port):
    ready, t = m.next()
    check(ready.get("READY") == "1", f"first notification is not READY=1: {ready}")
    check(ready.get("STATUS"), f"READY=1 without STATUS=: {ready}")
    with SMTPConn(port, timeout=2) as c:
        code, _ = c.read_reply()
        check(code == 220, f"banner {code} right after READY=1")
    took = time.monotonic() - t
    check(took < 2 * SLOW, f"the banner came {took:.2f}s after READY=1")
    r = api_request(api_port, "GET", "/healthz")
    check(r.status == 200, f"/healthz {r.status} after READY=1")


def reload_cycle(m, p, conf, good_text):
    before = time.monotonic()
    os.kill(p.pid, signal.SIGHUP)
    rel, _ = m.next()
    check(rel.get("RELOADING") == "1", f"SIGHUP: first notification {rel}")
    usec = int(rel.get("MONOTONIC_USEC", "0"))
    check(abs(usec / 1e6 - before) < 5, f"MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC now")
    ready, _ = m.next()
    check(ready.get("READY") == "1", f"after RELOADING=1: {ready}")
    check("failed" not in ready.get("STATUS", ""), f"a good reload says {ready}")
    # A broken config: the running one is kept, and systemd hears READY=1.
    conf.write_text(good_text + "\n[nonsense]\nkey = 1\n")
    os.kill(p.pid, signal.SIGHUP)
    rel, _ = m.next()
    check(rel.get("RELOADING") == "1", f"second SIGHUP: {rel}")
    ready, _ = m.next()
    check(ready.get("READY") == "1" and "failed" in ready.get("STATUS", ""),
          f"a failed reload: {ready}")
    conf.write_text(good_text)
    check(p.poll() is None, "the daemon died on a failed reload")


def stop_cycle(m, p):
    os.kill(p.pid, signal.SIGTERM)
    stopping, _ = m.next()
    check(stopping.get("STOPPING") == "1", f"SIGTERM: {stopping}")
    rc = stop_process(p, 30)
    check(rc == 0, f"exit status {rc} after SIGTERM")
    m.nothing()


def test_path_socket(env):
    port, api_port = free_port(), free_port()
    conf = write_conf(env, "path", port, api_port)
    m = Manager(str(env.dir / "notify.sock"))
    p = start(env, conf, m.name, "path")
    check_ready_means_accepting(m, port, api_port)
    reload_cycle(m, p, conf, conf.read_text())
    stop_cycle(m, p)
    m.close()
    log("     path socket: READY=1 when accepting, RELOADING=1/READY=1, STOPPING=1")


def test_abstract_socket(env):
    port, api_port = free_port(), free_port()
    conf = write_conf(env, "abstract", port, api_port)
    m = Manager(f"@rp-notify-{os.getpid()}-{time.monotonic_ns()}")
    p = start(env, conf, m.name, "abstract")
    check_ready_means_accepting(m, port, api_port)
    stop_cycle(m, p)
    m.close()
    log("     abstract socket: READY=1, STOPPING=1")


def test_failed_start_never_ready(env):
    blocker = env.dir / "not-a-dir"
    blocker.write_text("a file where the spool's parent should be\n")
    conf = write_conf(env, "broken", free_port(), free_port(), spool=str(blocker / "spool"))
    m = Manager(str(env.dir / "broken.sock"))
    p = start(env, conf, m.name, "broken")
    try:
        rc = p.wait(timeout=15 * SLOW)
    except Exception:
        raise TestFailure("a daemon without a spool did not exit")
    check(rc == 74, f"no spool: exit {rc}, expected 74")
    m.nothing()
    m.close()
    log("     spool cannot be made: exit 74, no READY=1")


def test_nobody_listening(env):
    port, api_port = free_port(), free_port()
    conf = write_conf(env, "deaf", port, api_port)
    p = start(env, conf, str(env.dir / "nobody-here.sock"), "deaf")
    deadline = time.monotonic() + 15 * SLOW
    text = ""
    while time.monotonic() < deadline and "ringpost ready" not in text:
        check(p.poll() is None, f"exited {p.returncode} when nobody reads NOTIFY_SOCKET")
        time.sleep(0.05)
        text = (env.dir / "deaf.log").read_text()
    check("ringpost ready" in text, "not ready when nobody reads NOTIFY_SOCKET")
    with SMTPConn(port, timeout=5) as c:
        check(c.read_reply()[0] == 220, "no banner")
    check("sd_notify READY" in text, "no warning that READY=1 could not be sent")
    rc = stop_process(p, 30)
    check(rc == 0, f"exit {rc}")
    log("     NOTIFY_SOCKET without a listener: a warning, serves, exit 0")


def main():
    with TestEnv("sdnotify") as env:
        test_path_socket(env)
        test_abstract_socket(env)
        test_failed_start_never_ready(env)
        test_nobody_listening(env)
        for name in ("path", "abstract", "deaf"):
            text = (env.dir / f"{name}.log").read_text()
            for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                check(bad not in text, f"{name}.log has {bad}")


if __name__ == "__main__":
    run_test(main)
