"""test_cli_api.py - `ringpost send`, `ringpost stats` and `ringpost queue`
against a running daemon (through its HTTP API), and what suspend, resume,
retry and purge do to real mail (Python smtpd receives).

  - send --from --to --to --subject --text prints an id that GET
    /v1/messages/{id} knows (both recipients), and the mail arrives with
    that subject and text; --raw FILE and --raw - (stdin) too; --config=FILE
    works like -c FILE;
  - stats --json is valid JSON with the totals and domains; stats without
    --json prints the table;
  - queue list | show ID | retry D | suspend D | resume D | purge D
    [--bounce] exit 0 and print what they did;
  - suspend: the domain's mail stays queued (status queued, stats queued
    and suspended, nothing at the receiver) until resume delivers it;
  - retry: mail deferred for an hour (its receiver was down) goes at once
    when the receiver is back and `queue retry` is run;
  - purge: queued mail of the domain is removed, its recipients show state
    bounced with the purge as last response (with and without --bounce),
    other domains' recipients of the same message are not touched, and
    nothing purged is delivered after a resume;
  - bad input exits with relay/cli.c's codes and one line on stderr: 64
    usage; 65 refused input (422 address, 400 raw, 404 id or domain, 413
    size, a non-UTF-8 raw file, a raw file with a NUL byte); 66 a missing raw file; 69 no daemon; 75
    the spool refuses mail (503); 77 a wrong key; 78 config (missing file,
    no [listen] api, no [api] keys).
"""

import json
import re
import socket
import subprocess
import time

from harness import (API_KEYS, Cases, SLOW, TestEnv, TestFailure, api_domain, check, config_text,
                     free_port, raise_failures, ringpost_bin, run_cases, run_test, stop_clean,
                     wait_for)

SENDER = "cli@origin.test"
MAX_MESSAGE = 16 * 1024
cases = Cases()


class Ctx:
    def __init__(self, env, d, smtpd, r_hold):
        self.env, self.d, self.smtpd, self.r_hold = env, d, smtpd, r_hold
        self.r_port = r_hold.getsockname()[1]
        self.conf = d.config_path


def rp(x, argv, conf=None, input=None, timeout=20):
    argv = [ringpost_bin()] + argv[:1] + ["-c", conf or x.conf] + argv[1:]
    try:
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout * SLOW,
                              cwd=str(x.env.dir))
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{' '.join(argv[1:])} did not exit")


def ok(p, what):
    check(p.returncode == 0, f"{what}: exit {p.returncode}: {p.stderr.decode()!r}")
    return p.stdout.decode()


def fails(p, code, what, names=()):
    err = p.stderr.decode()
    check(p.returncode == code, f"{what}: exit {p.returncode}, expected {code}: {err!r} "
          f"{p.stdout[:200]!r}")
    lines = [l for l in err.splitlines() if l.strip()]
    check(len(lines) == 1 or (code == 64 and lines and lines[-1].startswith("usage")),
          f"{what}: stderr is not one line: {err!r}")
    for n in names:
        check(n in err, f"{what}: stderr {err!r} does not name {n!r}")


def send(x, tid, to, *extra):
    argv = ["send", "--from", SENDER]
    for t in ([to] if isinstance(to, str) else to):
        argv += ["--to", t]
    argv += ["--subject", f"cli {tid}", "--text", f"text of {tid}"] + list(extra)
    out = ok(rp(x, argv), f"send {tid}").strip()
    check(re.fullmatch(r"[0-9a-f]{16}", out), f"send {tid} printed {out!r}")
    return out


def status(x, mid):
    r = x.d.api("GET", f"/v1/messages/{mid}")
    check(r.status == 200, f"GET /v1/messages/{mid}: {r!r}")
    return r.json()


def states(x, mid):
    return {e["email"]: e["state"] for e in status(x, mid)["recipients"]}


def wait_states(x, mid, want, timeout=20):
    wait_for(lambda: states(x, mid) == want, timeout, f"{mid} to reach {want}", interval=0.1)


def at_smtpd(x, subject):
    return [m for m in x.smtpd.messages() if m.header("Subject") == subject]


# ---- send, stats, queue -----------------------------------------------------------

@cases.add
def send_text(x):
    mid = send(x, "text", ["t1@a.test", "t2@a.test"])
    s = status(x, mid)
    check(s["id"] == mid and s["from"] == SENDER, f"status {s}")
    check([e["email"] for e in s["recipients"]] == ["t1@a.test", "t2@a.test"], f"status {s}")
    wait_states(x, mid, {"t1@a.test": "delivered", "t2@a.test": "delivered"})
    ms = at_smtpd(x, "cli text")
    check(len(ms) == 1 and sorted(ms[0].rcpts) == ["t1@a.test", "t2@a.test"],
          f"at smtpd: {[(m.rcpts) for m in ms]}")
    check(ms[0].split()[1].rstrip(b"\n") == b"text of text", f"body {ms[0].split()[1]!r}")
    # --config=FILE is the same as -c FILE.
    p = subprocess.run([ringpost_bin(), "send", f"--config={x.conf}", "--from", SENDER, "--to",
                        "t3@a.test", "--text", "x"], capture_output=True, timeout=20 * SLOW)
    check(p.returncode == 0 and re.fullmatch(rb"[0-9a-f]{16}\n", p.stdout),
          f"send --config=FILE: exit {p.returncode} {p.stdout!r} {p.stderr!r}")


@cases.add
def send_raw(x):
    raw = ("From: CLI <cli@origin.test>\r\nTo: raw@a.test\r\nSubject: cli raw\r\n\r\n"
           "raw body\r\n.dot line\r\n")
    f = x.env.dir / "raw.eml"
    f.write_bytes(raw.encode())
    mid = ok(rp(x, ["send", "--from", SENDER, "--to", "raw@a.test", "--raw", str(f)]),
             "send --raw").strip()
    wait_states(x, mid, {"raw@a.test": "delivered"})
    ms = at_smtpd(x, "cli raw")
    check(len(ms) == 1 and ms[0].split()[1] == b"raw body\n.dot line\n",
          f"raw at smtpd: {[m.data for m in ms]}")
    # From stdin, LF line ends.
    mid = ok(rp(x, ["send", "--from", SENDER, "--to", "raw2@a.test", "--raw", "-"],
                input=raw.replace("\r\n", "\n").replace("cli raw", "cli raw stdin").encode()),
             "send --raw -").strip()
    wait_states(x, mid, {"raw2@a.test": "delivered"})
    check(len(at_smtpd(x, "cli raw stdin")) == 1, "raw from stdin did not arrive")


@cases.add
def stats_json_and_table(x):
    s = json.loads(ok(rp(x, ["stats", "--json"]), "stats --json"))
    for k in ("queued", "deferred", "in_flight", "delivered", "bounced", "connections",
              "accepted", "domains"):
        check(k in s, f"stats --json lacks {k}: {s}")
    check(s["accepted"]["api"] >= 4 and s["delivered"] >= 4, f"stats --json {s}")
    out = ok(rp(x, ["stats"]), "stats")
    check("DOMAIN" in out and "(total)" in out and "a.test" in out, f"stats table {out!r}")
    out = ok(rp(x, ["queue", "list"]), "queue list")
    check("DOMAIN" in out and "a.test" in out, f"queue list {out!r}")


@cases.add
def queue_show(x):
    mid = send(x, "show", ["s1@a.test", "s2@a.test"])
    wait_states(x, mid, {"s1@a.test": "delivered", "s2@a.test": "delivered"})
    out = ok(rp(x, ["queue", "show", mid]), "queue show")
    check(mid in out and "<s1@a.test> delivered" in out and "<s2@a.test> delivered" in out,
          f"queue show: {out!r}")


@cases.add
def suspend_and_resume(x):
    out = ok(rp(x, ["queue", "suspend", "hold.test"]), "suspend hold.test")
    check("hold.test" in out and "suspend" in out, f"suspend printed {out!r}")
    ids = [send(x, f"hold-{i}", f"h{i}@hold.test") for i in range(3)]
    time.sleep(1.5 * SLOW)
    for mid in ids:
        st = states(x, mid)
        check(list(st.values()) == ["queued"], f"{mid} while suspended: {st}")
    check(not [m for m in x.smtpd.messages() if (m.header("Subject") or "").startswith("cli hold-")],
          "mail of a suspended domain was delivered")
    ds = api_domain(x.d, "hold.test")
    check(ds and ds["suspended"] is True and ds["queued"] == 3, f"stats hold.test {ds}")
    check("suspended" in ok(rp(x, ["queue", "list"]), "queue list"), "queue list does not "
          "say suspended")
    out = ok(rp(x, ["queue", "resume", "hold.test"]), "resume hold.test")
    check("resume" in out and "3 recipients" in out, f"resume printed {out!r}")
    for mid in ids:
        wait_states(x, mid, {next(iter(states(x, mid))): "delivered"})
    check(len([m for m in x.smtpd.messages() if (m.header("Subject") or "").startswith("cli hold-")]) == 3,
          "not all held messages arrived after resume")
    ds = api_domain(x.d, "hold.test")
    check(ds["suspended"] is False and ds["queued"] == 0, f"stats after resume {ds}")


@cases.add
def retry_now(x):
    # later.test's receiver is down: deferred, next attempt in an hour.
    mid = send(x, "retry", "r1@later.test")
    wait_for(lambda: states(x, mid) == {"r1@later.test": "deferred"}, 20, "deferred")
    st = status(x, mid)["recipients"][0]
    check(st["attempts"] == 1 and st["next_attempt"], f"deferred status {st}")
    x.r_hold.close()  # the port was held so that no client could take it meanwhile
    rx = x.env.smtpd(name="later", port=x.r_port)
    out = ok(rp(x, ["queue", "retry", "later.test"]), "queue retry")
    check("retry" in out and "1 recipients" in out, f"retry printed {out!r}")
    wait_for(lambda: states(x, mid) == {"r1@later.test": "delivered"}, 10 * SLOW,
             "delivery right after queue retry")
    check(rx.count() == 1, f"{rx.count()} messages at the later.test receiver")


@cases.add
def purge(x):
    # Drop (no DSN): a two-domain message keeps its a.test recipient.
    ok(rp(x, ["queue", "suspend", "gone.test"]), "suspend gone.test")
    m1 = send(x, "purge-1", ["p1@gone.test", "p2@gone.test", "keep@a.test"])
    m2 = send(x, "purge-2", "p3@gone.test")
    wait_states(x, m1, {"p1@gone.test": "queued", "p2@gone.test": "queued",
                        "keep@a.test": "delivered"})
    out = ok(rp(x, ["queue", "purge", "gone.test"]), "queue purge")
    check("purged 3 recipients" in out and "dropped" in out, f"purge printed {out!r}")
    wait_states(x, m1, {"p1@gone.test": "bounced", "p2@gone.test": "bounced",
                        "keep@a.test": "delivered"})
    wait_states(x, m2, {"p3@gone.test": "bounced"})
    for e in status(x, m1)["recipients"][:2]:
        check("purged" in (e["last_response"] or ""), f"purged recipient {e}")
    ds = api_domain(x.d, "gone.test")
    check(ds["queued"] == 0 and ds["deferred"] == 0, f"stats after purge {ds}")
    # With --bounce.
    m3 = send(x, "purge-3", "p4@gone.test")
    wait_states(x, m3, {"p4@gone.test": "queued"})
    out = ok(rp(x, ["queue", "purge", "gone.test", "--bounce"]), "queue purge --bounce")
    check("purged 1 recipients" in out and "DSN" in out, f"purge --bounce printed {out!r}")
    wait_states(x, m3, {"p4@gone.test": "bounced"})
    e = status(x, m3)["recipients"][0]
    check("purged" in e["last_response"] and "no DSN" not in e["last_response"], f"{e}")
    # Nothing purged is delivered after resume.
    ok(rp(x, ["queue", "resume", "gone.test"]), "resume gone.test")
    time.sleep(1 * SLOW)
    got = [m for m in x.smtpd.messages() if any(r.endswith("@gone.test") for r in m.rcpts)]
    check(not got, f"purged mail was delivered: {[m.rcpts for m in got]}")
    check(len(at_smtpd(x, "cli purge-1")) == 1, "the a.test copy of purge-1 did not arrive")
    # Purging a domain with nothing queued: 0 recipients, exit 0.
    out = ok(rp(x, ["queue", "purge", "gone.test"]), "purge an empty queue")
    check("purged 0 recipients" in out, f"empty purge printed {out!r}")


# ---- bad input and its exit codes ---------------------------------------------------

@cases.add
def usage_errors(x):
    for argv in (["send"], ["send", "--to", "a@a.test"], ["send", "--from", SENDER],
                 ["send", "--from", SENDER, "--to", "a@a.test", "--bogus"],
                 ["send", "--from", SENDER, "--to", "a@a.test", "--text", "t", "--raw", "f"],
                 ["send", "--from", SENDER, "--to"],
                 ["stats", "--bogus"], ["queue"], ["queue", "frob", "a.test"],
                 ["queue", "show"], ["queue", "list", "extra"], ["queue", "retry"],
                 ["queue", "purge", "a", "b"]):
        fails(rp(x, argv), 64, " ".join(argv))


@cases.add
def refused_input(x):
    base = ["send", "--from", SENDER, "--text", "t"]
    fails(rp(x, base + ["--to", "not an address"]), 65, "send to a bad address",
          ["not an address"])
    fails(rp(x, ["send", "--from", "bad@", "--to", "a@a.test", "--text", "t"]), 65,
          "send from a bad address", ["bad@"])
    f = x.env.dir / "noheader.eml"
    f.write_bytes(b"no header at all\n")
    fails(rp(x, ["send", "--from", SENDER, "--to", "a@a.test", "--raw", str(f)]), 65,
          "raw without a header", ["raw"])
    f = x.env.dir / "latin1.eml"
    f.write_bytes(b"Subject: caf\xe9\n\nx\n")
    fails(rp(x, ["send", "--from", SENDER, "--to", "a@a.test", "--raw", str(f)]), 65,
          "raw that is not UTF-8")
    fails(rp(x, ["send", "--from", SENDER, "--to", "a@a.test", "--raw",
                 str(x.env.dir / "missing.eml")]), 66, "raw file missing", ["missing.eml"])
    f = x.env.dir / "nul.eml"
    f.write_bytes(b"Subject: nul\n\nbefore\x00after\n")
    fails(rp(x, ["send", "--from", SENDER, "--to", "a@a.test", "--raw", str(f)]), 65,
          "raw with a NUL byte (would be cut there)", ["NUL"])
    fails(rp(x, base + ["--to", "a@a.test", "--text", "x" * (MAX_MESSAGE + 1)]), 65,
          "send over max_message_size")
    fails(rp(x, ["queue", "show", "0123456789abcdef"]), 65, "show an unknown id")
    fails(rp(x, ["queue", "show", "not-an-id"]), 65, "show a malformed id")
    for action in ("retry", "resume", "purge"):
        fails(rp(x, ["queue", action, "never-seen.test"]), 65, f"{action} an unknown domain",
              ["never-seen.test"])


@cases.add
def environment_errors(x):
    env = x.env
    port = free_port()
    # No daemon on the API port.
    c = env.write_config(config_text(submission_port=free_port(), routes={}, api_port=port,
                                     data_dir=str(env.dir / "x")), "nodaemon.conf")
    for argv in (["send", "--from", SENDER, "--to", "a@a.test", "--text", "t"], ["stats"],
                 ["queue", "list"]):
        fails(rp(x, argv, conf=str(c)), 69, f"{argv[0]} with no daemon", [str(port)])
    # A key the daemon does not know.
    text = open(x.conf).read().replace(", ".join(API_KEYS), "not-the-key")
    c = env.write_config(text, "wrongkey.conf")
    for argv in (["send", "--from", SENDER, "--to", "a@a.test", "--text", "t"], ["stats"],
                 ["queue", "suspend", "a.test"]):
        fails(rp(x, argv, conf=str(c)), 77, f"{argv[0]} with a wrong key")
    # Config problems: 78.
    fails(rp(x, ["stats"], conf=str(env.dir / "missing.conf")), 78, "a missing config",
          ["missing.conf"])
    c = env.write_config(config_text(submission_port=free_port(), routes={},
                                     data_dir=str(env.dir / "x")), "noapi.conf")
    fails(rp(x, ["stats"], conf=str(c)), 78, "no [listen] api", ["api"])
    c = env.write_config(config_text(submission_port=free_port(), routes={}, api_port=port,
                                     api={"keys": ""}, data_dir=str(env.dir / "x")),
                         "nokeys.conf")
    fails(rp(x, ["stats"], conf=str(c)), 78, "empty [api] keys", ["keys"])
    c = env.write_config(open(x.conf).read() + "\n[api]\nbogus = 1\n", "badkey.conf")
    fails(rp(x, ["stats"], conf=str(c)), 78, "an unknown key", ["bogus"])


@cases.add
def spool_full_is_tempfail(x):
    d2 = x.env.daemon(routes={"a.test": x.smtpd.addr}, name="full", with_api=True,
                      queue={"min_free": "16T"}).start()
    try:
        fails(rp(x, ["send", "--from", SENDER, "--to", "a@a.test", "--text", "t"],
                 conf=d2.config_path), 75, "send while the spool refuses mail")
        ok(rp(x, ["stats", "--json"], conf=d2.config_path), "stats while the spool is full")
    finally:
        f = []
        stop_clean(d2, f)
        if f:
            raise TestFailure("; ".join(f))


def main():
    with TestEnv("cliapi") as env:
        smtpd = env.smtpd()
        # later.test's port: bound but not listening (connections are refused)
        # until retry_now starts a receiver there.
        r_hold = socket.socket()
        r_hold.bind(("127.0.0.1", 0))
        r_port = r_hold.getsockname()[1]
        d = env.daemon(routes={"a.test": smtpd.addr, "hold.test": smtpd.addr,
                               "gone.test": smtpd.addr, "later.test": f"127.0.0.1:{r_port}"},
                       with_api=True, queue={"retry": "1h"},
                       submission={"max_message_size": MAX_MESSAGE}).start()
        x = Ctx(env, d, smtpd, r_hold)
        failures = run_cases(cases, x, [d])
        stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
