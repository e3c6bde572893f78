"""test_source_ehlo.py - [domain] source and ehlo as a real receiver sees
them: Python's smtpd (receiver.py) records each message's peer address and
the EHLO name it was greeted with; one listens on 127.0.0.1, one on ::1.

Cases:
  - source = 127.0.0.2, 127.0.0.3 (rr.test, one message per session): four
    messages one after the other come from the two addresses in turn; the
    receiver was greeted with rr.test's ehlo; each delivery line says
    source=THE-PEER ehlo=NAME; each recipient's remote record says
    "127.0.0.1:PORT from THE-PEER ehlo=NAME tls=no";
  - a domain without them (plain.test, routed to the same receiver) comes
    from 127.0.0.1 with the [server] hostname, its delivery line and
    record carry neither, and it is a destination of its own: the source
    list and the EHLO name are part of the pool's key;
  - /v1/stats: rr.test's destination shows its ehlo and its sources, each
    with the sessions opened from it (2 each), plain.test's the hostname
    and no sources;
  - IPv6: v6.test, routed to [::1]:PORT with source = 127.0.0.2, ::1 (the
    IPv4 source does not fit and is skipped), comes from ::1;
  - a source list with no address of the exchanger's family (wrong.test:
    source 127.0.0.2, route [::1]:PORT) defers with 4.3.0 and a reply that
    says so, logs a warning naming the domain, and never bounces or
    reaches the receiver; start-up logged the config warning for it;
  - SIGHUP: rr.test's new source (127.0.0.3 alone) and ehlo apply to the
    next session; a reload naming a source this machine does not have is
    refused and the running config stays;
  - a source this machine does not have (192.0.2.7) stops serve and
    check-config with exit 78 and one line naming FILE:LINE and the
    address;
  - check-config warns (exit 0) about an ehlo that is not a fully
    qualified domain name, at its line.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import re
import signal
import subprocess

from harness import (EX_CONFIG, SLOW, Cases, TestEnv, api_send, check, config_text, free_port,
                     log, raise_failures, ringpost_bin, run_cases, run_test, stop_clean, wait_for,
                     wait_rcpt)

SENDER = "src@origin.test"
HOSTNAME = "mta.test.example"  # config_text's [server] hostname
RR_EHLO = "out.rr.example"
V6_EHLO = "out6.rr.example"

cases = Cases()


class Ctx:
    pass


def delivery_line(x, rcpt, status):
    """The delivery line (a dict) for rcpt with this status, waited for."""
    def find():
        for f in x.d.deliveries(status):
            if f.get("rcpt") == f"<{rcpt}>":
                return f
        return None
    return wait_for(find, 15, f"a delivery line for {rcpt} with status={status}", interval=0.1)


def received(r, rcpt):
    """The one message r got for rcpt."""
    got = [m for m in r.messages() if rcpt in m.rcpts]
    check(len(got) == 1, f"{r.name} got {len(got)} messages for {rcpt}")
    return got[0]


def destination(x, key):
    for e in x.d.api("GET", "/v1/stats").json().get("destinations", []):
        if e["destination"] == key:
            return e
    return None


def deliver(x, rcpt, tag):
    """Send one message to rcpt and wait until it is delivered: (record, log line)."""
    mid = api_send(x.d, SENDER, [rcpt], tag)[0]
    rc = wait_rcpt(x.d, mid, "delivered")
    return rc, delivery_line(x, rcpt, "delivered")


@cases.add
def sources_take_turns(x):
    peers = []
    for i in range(4):  # one at a time: each its own session (1 message per connection)
        rcpt = f"r{i}@rr.test"
        rc, line = deliver(x, rcpt, f"rr{i}")
        m = received(x.r4, rcpt)
        peers.append(m.peer)
        check(m.helo == RR_EHLO, f"{rcpt}: the receiver was greeted with {m.helo!r}")
        check(line.get("source") == m.peer and line.get("ehlo") == RR_EHLO,
              f"{rcpt}: delivery line {line}, the receiver saw {m.peer}")
        want = f"127.0.0.1:{x.r4.port} from {m.peer} ehlo={RR_EHLO} tls=no"
        check(rc.get("remote") == want, f"{rcpt}: remote record {rc.get('remote')!r}, "
              f"expected {want!r}")
    check(set(peers) == {"127.0.0.2", "127.0.0.3"} and
          all(peers[i] != peers[i + 1] for i in range(3)),
          f"the sources did not take turns: {peers}")
    log(f"     peers in turn: {peers}")


@cases.add
def default_domain_untouched(x):
    rcpt = "p@plain.test"
    rc, line = deliver(x, rcpt, "plain")
    m = received(x.r4, rcpt)
    check(m.peer == "127.0.0.1" and m.helo == HOSTNAME,
          f"plain.test came from {m.peer} as {m.helo!r}")
    check("source" not in line and "ehlo" not in line, f"plain.test's delivery line: {line}")
    check(rc.get("remote") == f"127.0.0.1:{x.r4.port} tls=no", f"remote {rc.get('remote')!r}")


@cases.add
def stats_per_destination(x):
    key = f"route:127.0.0.1:{x.r4.port};source=127.0.0.2,127.0.0.3;ehlo={RR_EHLO}"
    rr = destination(x, key)
    check(rr, f"no destination {key!r}")
    check(rr["domains"] == ["rr.test"] and rr["ehlo"] == RR_EHLO, f"rr.test: {rr}")
    got = {s["address"]: s["sessions"] for s in rr["source"]}
    check(got == {"127.0.0.2": 2, "127.0.0.3": 2}, f"rr.test's sessions per source: {rr['source']}")
    check([s["address"] for s in rr["source"]] == ["127.0.0.2", "127.0.0.3"],
          f"rr.test's sources out of order: {rr['source']}")
    plain = destination(x, f"route:127.0.0.1:{x.r4.port}")
    check(plain and plain["domains"] == ["plain.test"], f"plain.test: {plain}")
    check(plain["ehlo"] == HOSTNAME and plain["source"] == [], f"plain.test: {plain}")


@cases.add
def ipv6_source(x):
    rcpt = "s@v6.test"
    rc, line = deliver(x, rcpt, "v6")
    m = received(x.r6, rcpt)
    check(m.peer == "::1" and m.helo == V6_EHLO, f"v6.test came from {m.peer} as {m.helo!r}")
    check(line.get("source") == "::1", f"v6.test's delivery line: {line}")
    want = f"[::1]:{x.r6.port} from ::1 ehlo={V6_EHLO} tls=no"
    check(rc.get("remote") == want, f"remote {rc.get('remote')!r}, expected {want!r}")


@cases.add
def wrong_family_defers(x):
    rcpt = "w@wrong.test"
    mid = api_send(x.d, SENDER, [rcpt], "wrong")[0]
    rc = wait_rcpt(x.d, mid, "deferred")
    resp = rc.get("last_response") or ""
    check(resp.startswith("4.3.0 ") and "no source address for IPv6 exchangers" in resp
          and "127.0.0.2" in resp, f"last_response {resp!r}")
    check(re.search(r" warn \S+: dest wrong\.test: no source address for IPv6 exchangers "
                    r"\(::1\)", x.d.log()), "no warning naming wrong.test in the log")
    check(re.search(r"\[domain wrong\.test\] route \[::1\]:\d+ is IPv6 but source has no IPv6",
                    x.d.log()), "start-up did not warn about wrong.test")
    wait_for(lambda: wait_rcpt(x.d, mid, "deferred")["attempts"] >= 2, 10 * SLOW,
             "a second attempt for wrong.test (retry = 1s, 2s)")
    check(not any(f.get("rcpt") == f"<{rcpt}>" for f in x.d.deliveries("bounced")),
          "wrong.test bounced")
    check(not [m for m in x.r6.messages() if rcpt in m.rcpts], "wrong.test reached ::1")


@cases.add
def reload_applies_to_new_sessions(x):
    text = open(x.d.config_path).read()
    new = text.replace("source = 127.0.0.2, 127.0.0.3", "source = 127.0.0.3").replace(
        f"ehlo = {RR_EHLO}", "ehlo = again.rr.example")
    check(new != text, "the config has no rr.test source line to change")
    # A source this machine does not have: the reload is refused as a whole.
    open(x.d.config_path, "w").write(new.replace("source = 127.0.0.3", "source = 192.0.2.7"))
    x.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: re.search(r"reload failed.*192\.0\.2\.7 is not an address of this machine",
                               x.d.log()), 5, "the refused reload in the log")
    rc, line = deliver(x, "h0@rr.test", "hup0")
    check(line.get("ehlo") == RR_EHLO, f"after a refused reload: {line}")
    open(x.d.config_path, "w").write(new)
    n = x.d.log().count("configuration reloaded")
    x.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: x.d.log().count("configuration reloaded") > n, 5, "the reload")
    for i in (1, 2):
        rcpt = f"h{i}@rr.test"
        rc, line = deliver(x, rcpt, f"hup{i}")
        m = received(x.r4, rcpt)
        check(m.peer == "127.0.0.3" and m.helo == "again.rr.example",
              f"after the reload {rcpt} came from {m.peer} as {m.helo!r}")
        check(rc.get("remote", "").startswith(f"127.0.0.1:{x.r4.port} from 127.0.0.3 "
                                              "ehlo=again.rr.example"),
              f"remote {rc.get('remote')!r}")


def run(argv, cwd):
    return subprocess.run([ringpost_bin()] + argv, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=15 * SLOW)


def line_of(text, needle):
    return text.splitlines().index(needle) + 1


def test_nonlocal_source(env):
    text = config_text(submission_port=free_port(), routes={"far.test": "127.0.0.1:9"},
                       data_dir=str(env.dir / "never-created"),
                       domains={"far.test": {"source": "127.0.0.2, 192.0.2.7"}})
    path = env.write_config(text, "nonlocal.conf")
    n = line_of(text, "source = 127.0.0.2, 192.0.2.7")
    for argv in (["serve", "-c", str(path)], ["check-config", "-c", str(path)]):
        p = run(argv, env.dir)
        errs = [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]
        check(p.returncode == EX_CONFIG, f"{argv[0]}: exit status {p.returncode}; {errs}")
        check(len(errs) == 1 and f"{path}:{n}: " in errs[0] and "192.0.2.7" in errs[0] and
              "not an address of this machine" in errs[0], f"{argv[0]}: stderr {errs}")
    check(not (env.dir / "never-created").exists(), "a spool was created anyway")
    log(f"ok   non-local source: {errs[0]}")


def test_check_config_warns(env):
    text = config_text(submission_port=free_port(), routes={"a.test": "127.0.0.1:9"},
                       domains={"a.test": {"ehlo": "mailhost"},
                                "b.test": {"ehlo": "mail.b.example"}})
    path = env.write_config(text, "warn.conf")
    p = run(["check-config", "-c", str(path)], env.dir)
    errs = [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]
    check(p.returncode == 0 and b"ok" in p.stdout, f"check-config: {p.returncode} {p.stdout!r}")
    n = line_of(text, "ehlo = mailhost")
    check(len(errs) == 1 and errs[0].startswith(f"{path}:{n}: [domain a.test] ehlo ") and
          "mailhost" in errs[0] and "fully qualified" in errs[0], f"warnings: {errs}")
    log(f"ok   check-config warning: {errs[0]}")


def main():
    with TestEnv("source_ehlo") as env:
        x = Ctx()
        x.r4 = env.smtpd("r4")
        x.r6 = env.smtpd("r6", host="::1")
        x.d = env.daemon(
            routes={"rr.test": x.r4.addr, "plain.test": x.r4.addr, "v6.test": x.r6.addr,
                    "wrong.test": x.r6.addr},
            domains={"rr.test": {"source": "127.0.0.2, 127.0.0.3", "ehlo": RR_EHLO,
                                 "max_messages_per_connection": 1},
                     "v6.test": {"source": "127.0.0.2, ::1", "ehlo": V6_EHLO},
                     "wrong.test": {"source": "127.0.0.2"}},
            with_api=True)
        x.d.start()
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        for t in (test_nonlocal_source, test_check_config_warns):
            try:
                t(env)
            except Exception as e:
                failures.append(f"{t.__name__}: {e}")
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
