"""test_cli_config.py - the command line, the config file, signals, restarts.

  - `ringpost serve -c` with a bad config (unknown key, bad durations,
    unknown section, with or without keys, a bad route, a key in the wrong
    section) exits 78 with
    exactly one stderr line naming the file and the line, and creates no
    spool;
  - a missing config file: a sysexits status and one line naming the file;
  - no command / an unknown command: 64 with the usage;
  - `ringpost check-config` accepts the shipped ringpost.conf and refuses a
    bad file with 78;
  - SIGTERM (and SIGINT) on an idle daemon: exit 0 within a couple of
    seconds; a connected idle client is told 421 first;
  - SIGHUP with a broken config keeps the running config and keeps serving;
  - restart on the same spool keeps queued mail: a message whose destination
    is down is deferred, the daemon stops (SIGTERM), the receiver comes up,
    the daemon restarts and delivers it, once.
"""

import re
import signal
import smtplib
import subprocess
import time

from harness import (EX_CONFIG, SLOW, SOURCE_ROOT, SMTPConn, TestEnv, TestFailure, check,
                     config_text, free_port, log, ringpost_bin, run_test, wait_for)


def run(argv, cwd, timeout=10):
    try:
        return subprocess.run([ringpost_bin()] + argv, cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"ringpost {' '.join(argv)} did not exit within {timeout * SLOW:.0f}s "
                          f"(did it start serving?)")


def stderr_lines(p):
    return [l for l in p.stderr.decode("utf-8", "replace").splitlines() if l.strip()]


def bad_configs(env):
    """(name, config text, line(s) of the mistake, what the message should name)."""
    port = free_port()
    good = config_text(submission_port=port, routes={"example.test": "127.0.0.1:9"},
                       data_dir=str(env.dir / "never-created"))
    lines = good.splitlines()

    def with_line_after(section, text):
        i = lines.index(f"[{section}]")
        new = lines[:i + 1] + [text] + lines[i + 1:]
        return "\n".join(new) + "\n", i + 2

    out = []
    t, n = with_line_after("server", "colour = blue")
    out.append(("unknown key", t, n, "colour"))
    t, n = with_line_after("queue", "retry = 1m, 5x, 10m")
    out.append(("bad duration in a list", t, n, "retry"))
    t, n = with_line_after("domain *", "connect_timeout = soon")
    out.append(("bad duration", t, n, "connect_timeout"))
    t, n = with_line_after("submission", "idle_timeout = 5 fortnights")
    out.append(("bad duration unit", t, n, "idle_timeout"))
    i = lines.index("[queue]")
    t = "\n".join(lines[:i] + ["[bogus]", "key = 1", ""] + lines[i:]) + "\n"
    # The section's line or its first key's (inih reports keys) will do.
    out.append(("unknown section", t, (i + 1, i + 2), "bogus"))
    t = "\n".join(lines[:i] + ["[queeu]", ""] + lines[i:]) + "\n"
    out.append(("unknown section without keys", t, i + 1, "queeu"))
    t, n = with_line_after("domain example.test", "route = 127.0.0.1:notaport")
    out.append(("bad route", t, n, "route"))
    t, n = with_line_after("listen", "hostname = wrong.place")
    out.append(("key in the wrong section", t, n, "hostname"))
    return out


def test_bad_configs(env):
    for name, text, line, word in bad_configs(env):
        path = env.write_config(text, "bad.conf")
        for argv in (["serve", "-c", str(path)], ["check-config", "-c", str(path)]):
            p = run(argv, env.dir)
            errs = stderr_lines(p)
            what = f"{name} ({argv[0]})"
            check(p.returncode == EX_CONFIG, f"{what}: exit status {p.returncode}, expected "
                  f"{EX_CONFIG}; stderr: {errs}")
            check(len(errs) == 1, f"{what}: expected one stderr line, got {errs}")
            want = line if isinstance(line, tuple) else (line,)
            check(any(f"{path}:{n}:" in errs[0] for n in want),
                  f"{what}: the message does not name {path}:{line}: {errs[0]!r}")
            check(word in errs[0], f"{what}: the message does not name {word!r}: {errs[0]!r}")
        check(not (env.dir / "never-created").exists(), f"{name}: a spool was created anyway")
        log(f"ok   bad config: {name}: {errs[0]}")


def test_missing_and_usage(env):
    missing = env.dir / "no-such.conf"
    p = run(["serve", "-c", str(missing)], env.dir)
    errs = stderr_lines(p)
    check(64 <= p.returncode <= 78, f"missing config: exit status {p.returncode}, expected a "
          f"sysexits code (64-78)")
    check(len(errs) == 1 and str(missing) in errs[0],
          f"missing config: expected one line naming {missing}, got {errs}")
    log(f"ok   missing config: status {p.returncode}: {errs[0]}")
    p = subprocess.run([ringpost_bin()], capture_output=True, timeout=10 * SLOW)
    check(p.returncode == 64 and b"usage" in p.stderr, f"no command: status {p.returncode}, "
          f"stderr {p.stderr[:200]!r}")
    p = subprocess.run([ringpost_bin(), "frobnicate"], capture_output=True, timeout=10 * SLOW)
    check(p.returncode == 64 and b"frobnicate" in p.stderr,
          f"unknown command: status {p.returncode}, stderr {p.stderr[:200]!r}")
    log("ok   usage errors: 64")


def test_check_config_shipped(env):
    shipped = SOURCE_ROOT / "ringpost.conf"
    p = run(["check-config", "-c", str(shipped)], env.dir)
    check(p.returncode == 0, f"check-config {shipped}: status {p.returncode}, "
          f"stderr {stderr_lines(p)}")
    check(b"ok" in p.stdout, f"check-config {shipped}: stdout {p.stdout!r}")
    log(f"ok   check-config on the shipped ringpost.conf: {p.stdout.decode().strip()}")


def test_signals(env):
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = env.daemon(routes={"example.test": "127.0.0.1:9"}, name=f"idle-{sig.name}").start()
        time.sleep(0.3)  # idle for real: every shard back in its wait
        t0 = time.monotonic()
        d.proc.send_signal(sig)
        try:
            rc = d.proc.wait(timeout=3 * SLOW)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"{sig.name} on an idle daemon: still running after {3 * SLOW:.0f}s")
        check(rc == 0, f"{sig.name} on an idle daemon: exit status {rc}")
        d.check_log_clean()
        log(f"ok   {sig.name} while idle: exit 0 in {time.monotonic() - t0:.2f}s")

    # An idle client is told before the daemon goes.
    d = env.daemon(routes={"example.test": "127.0.0.1:9"}, name="idle-client").start()
    with SMTPConn(d.port) as c:
        c.expect(220, "banner")
        c.ehlo()
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        code, lines = c.read_reply()
        check(code == 421, f"idle client at SIGTERM: expected 421, got {lines}")
        check(c.at_eof(), "the connection stayed open after 421")
    rc = d.stop(timeout=5)
    check(rc == 0, f"SIGTERM with an idle client: exit status {rc}")
    log(f"ok   SIGTERM with an idle client: 421 to the client, exit 0 in "
        f"{time.monotonic() - t0:.2f}s")


def test_sighup_bad_config(env):
    d = env.daemon(routes={"example.test": "127.0.0.1:9"}, name="hup").start()
    good = open(d.config_path).read()
    with open(d.config_path, "a") as f:
        f.write("\n[server]\nnonsense = 1\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in d.log(), 5, "'reload failed' in the log")
    check(d.alive(), "SIGHUP with a broken config killed the daemon")
    with SMTPConn(d.port) as c:
        c.expect(220, "banner after a failed reload")
        c.ehlo()
        c.cmd("QUIT", 221)
    open(d.config_path, "w").write(good)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log(), 5, "'configuration reloaded' in the log")
    rc = d.stop()
    check(rc == 0, f"SIGTERM after reloads: exit status {rc}")
    d.check_log_clean()
    log("ok   SIGHUP: a broken config is refused and the daemon keeps serving")


def test_restart_keeps_queue(env):
    rx_port = free_port()
    d = env.daemon(routes={"later.test": f"127.0.0.1:{rx_port}"}, name="restart")
    d.start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as s:
        s.sendmail("keep@origin.test", ["rcpt@later.test"],
                   b"Subject: keep me\r\nX-Test-Id: restart-keep\r\n\r\nqueued across a restart\r\n")
    # A refused connection is the destination's failure: ringpost logs a
    # "session dest=... status=connect-failed" line and backs off (a
    # per-recipient "delivery ... status=deferred" would do as well).
    failed = re.compile(r"(session dest=later\.test .*status=connect-failed|"
                        r"delivery id=.* rcpt=<rcpt@later\.test> .*status=deferred).*")
    m = wait_for(lambda: failed.search(d.log()), 10, "a failed attempt (the receiver is down)")
    log(f"     while the receiver is down: {m.group(0)[:150]}")
    rc = d.stop()
    check(rc == 0, f"SIGTERM with mail queued: exit status {rc}")

    rx = env.smtpd(port=rx_port)
    d.start()
    m = re.search(r"ringpost ready:.* (\d+) recipients queued", d.log(since_start=True))
    check(m and int(m.group(1)) == 1, f"restart: expected 1 recipient queued, log says "
          f"{m.group(0) if m else 'nothing'}")
    wait_for(lambda: rx.count() >= 1, 15, "the queued message at the receiver after the restart")
    time.sleep(0.5)
    msgs = rx.messages()
    check(len(msgs) == 1, f"expected the message once, the receiver has {len(msgs)}")
    check(msgs[0].header("X-Test-Id") == "restart-keep" and msgs[0].rcpts == ["rcpt@later.test"],
          f"wrong message arrived: {msgs[0].rcpts} {msgs[0].header('X-Test-Id')}")
    delivered = d.deliveries("delivered")
    check(len(delivered) == 1 and delivered[0].get("rcpt") == "<rcpt@later.test>",
          f"delivery lines after the restart: {delivered}")
    rc = d.stop()
    check(rc == 0, f"SIGTERM after delivery: exit status {rc}")
    d.check_log_clean()
    log(f"ok   restart kept the queued message; delivered on attempt {delivered[0]['attempts']}")


def main():
    with TestEnv("cli") as env:
        test_bad_configs(env)
        test_missing_and_usage(env)
        test_check_config_shipped(env)
        test_signals(env)
        test_sighup_bad_config(env)
        test_restart_keeps_queue(env)


if __name__ == "__main__":
    run_test(main)
