"""test_webhook.py - [webhook]: delivery events posted to an HTTP endpoint
(Python's http.server), signed, in order, at least once.

Cases (each its own daemon, spool and receiver):
  events      accepted, delivered (API and SMTP), bounced (a 5xx sink),
              deferred twice (a closed port, retry 1s), suppressed: every
              event arrives once, with the ids the API gave, the fields the
              contract names, a valid X-Ringpost-Signature, and in order
              per recipient; /v1/stats and /metrics show the poster.
  outage      the receiver down while mail is delivered (backlog and the
              last error in /v1/stats), ringpost restarted, the receiver
              back: every event arrives.
  errors      the receiver answers 500 twice, then 200: the same events
              are posted again and arrive; failures counted.
  bounded     max_backlog = 4, receiver down, 10 deliveries: the mail is
              all delivered, 6 events dropped and counted, the 4 newest
              arrive when the receiver comes back.
  complaint   a delivered recipient, then an ARF report about it at the
              bounce MX: delivered, then complained, for the same recipient.
  https       the endpoint over HTTPS with a certificate from [tls] ca_file:
              events arrive; one the CA did not sign: nothing is posted,
              last_error names TLS, the events stay.
  garbage     an endpoint that answers something not HTTP, or headers
              without end (2 MB): a failure naming the bad answer, the
              event kept, the daemon well.
  config      a bad url or event name stops start-up with exit 78.
"""

import contextlib
import hashlib
import hmac
import json
import smtplib
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (CA, EX_CONFIG, SLOW, ClosedPort, TestEnv, TestFailure, check, free_port,
                     raise_failures, ringpost_bin, run_cases, self_signed, stop_clean, wait_for)

SECRET = "hook-secret-0123456789"


class HookReceiver:
    """A webhook endpoint on a fixed loopback port. Records every POST
    (path, headers, body, the status it answered); answers the statuses in
    plan first, then 200. stop() and start() again: down and back on the
    same port."""

    def __init__(self, tls=None):
        self.port = free_port()
        self.posts = []
        self.plan = []
        self.lock = threading.Lock()
        self.server = None
        self.tls = tls  # an ssl.SSLContext: HTTPS

    @property
    def url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hooks/ringpost?src=test"

    def start(self):
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with recv.lock:
                    status = recv.plan.pop(0) if recv.plan else 200
                    recv.posts.append({"path": self.path, "headers": dict(self.headers),
                                       "body": body, "status": status})
                out = b'{"ok":true}' if status == 200 else b"try later"
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        if self.tls:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    close = stop

    def snapshot(self):
        with self.lock:
            return list(self.posts)

    def events(self, ok_only=True):
        """Every event of the posts answered 2xx (or all posts), in order."""
        out = []
        for p in self.snapshot():
            if ok_only and p["status"] != 200:
                continue
            out += json.loads(p["body"])
        return out


@contextlib.contextmanager
def running(d, *servers):
    """A case's body: whatever fails in it is collected, then d is stopped
    (exit status and sanitizer reports checked) and the servers closed
    before the failures are raised."""
    failures = []
    try:
        yield
    except (TestFailure, OSError, ValueError, KeyError, smtplib.SMTPException) as e:
        failures.append(f"{type(e).__name__}: {e}")
    stop_clean(d, failures)
    for srv in servers:
        srv.close()
    if failures:
        raise TestFailure("; ".join(failures))


def check_posts(recv):
    """Every post: the path, JSON, a JSON array, a valid signature."""
    for p in recv.snapshot():
        check(p["path"] == "/hooks/ringpost?src=test", f"path {p['path']!r}")
        h = {k.lower(): v for k, v in p["headers"].items()}
        check(h.get("content-type") == "application/json", f"content-type {h}")
        want = "sha256=" + hmac.new(SECRET.encode(), p["body"], hashlib.sha256).hexdigest()
        check(h.get("x-ringpost-signature") == want,
              f"signature {h.get('x-ringpost-signature')!r}, want {want!r}")
        body = json.loads(p["body"])
        check(isinstance(body, list) and body, f"body not a non-empty array: {p['body'][:200]!r}")
        for e in body:
            for k in ("event", "id", "recipient", "time", "attempts", "response", "remote"):
                check(k in e, f"event without {k}: {e}")


def hook_conf(recv, **keys):
    lines = ["[webhook]", f"url = {recv.url}", f"secret = {SECRET}"]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n" + "\n".join(lines) + "\n"


def stats(d):
    r = d.api("GET", "/v1/stats")
    check(r.status == 200, f"/v1/stats: {r!r}")
    return r.json()


def post(d, to, i):
    r = d.api("POST", "/v1/messages", {"from": "hook@a.test", "to": to,
                                       "subject": f"hook {i}", "text": "hello\n"})
    check(r.status == 202, f"POST /v1/messages: {r!r}")
    return r.json()


def by_rcpt(events):
    out = {}
    for e in events:
        out.setdefault(e["recipient_id"], []).append(e)
    return out


def case_events(env):
    recv = HookReceiver().start()
    smtpd = env.smtpd()
    sink = env.sink(extra_args=["-f", "RCPT"])  # 5xx to RCPT: bounced
    hold = ClosedPort()
    d = env.daemon(name="events", routes={"a.test": smtpd.addr, "b.test": sink.addr, "c.test": hold.addr},
                   with_api=True, queue={"retry": "1s"},
                   extra=hook_conf(recv, events="accepted, delivered, deferred, bounced, "
                                   "suppressed, complained", batch=3)).start()
    with running(d, recv, hold):
        r = d.api("POST", "/v1/suppressions", {"address": "gone@a.test", "reason": "test"})
        check(r.status in (200, 201), f"suppress: {r!r}")
        sent = [post(d, [f"a{i}@a.test"], i) for i in range(3)]
        sent.append(post(d, ["b1@b.test", "c1@c.test", "gone@a.test"], 3))
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
            s.sendmail("hook@a.test", ["s1@a.test"], "Subject: smtp\r\n\r\nhi\r\n")
        ids = {r["email"]: r["id"] for m in sent for r in m["recipients"]}

        def arrived():
            ev = by_rcpt(recv.events())
            c = [e for e in ev.get(ids["c1@c.test"], []) if e["event"] == "deferred"]
            done = sum(1 for lst in ev.values()
                       if lst[-1]["event"] in ("delivered", "bounced", "suppressed"))
            return ev if done >= 6 and len(c) >= 2 else None
        ev = wait_for(arrived, 30, "the events")
        check_posts(recv)
        check(all(len(json.loads(p["body"])) <= 3 for p in recv.snapshot()), "batch > 3")
        for i in range(3):
            rid = ids[f"a{i}@a.test"]
            kinds = [e["event"] for e in ev[rid]]
            check(kinds == ["accepted", "delivered"], f"a{i}: {kinds}")
            dl = ev[rid][1]
            check(dl["id"] == sent[i]["id"] and dl["recipient"] == f"a{i}@a.test",
                  f"ids of a{i}: {dl}")
            check(dl["attempts"] == 1 and dl["response"].startswith("250") and dl["remote"],
                  f"delivered fields: {dl}")
        b = [e["event"] for e in ev[ids["b1@b.test"]]]
        check(b == ["accepted", "bounced"], f"b1: {b}")
        bounce = ev[ids["b1@b.test"]][1]
        check(bounce["response"].startswith("5"), f"bounce response {bounce}")
        c = ev[ids["c1@c.test"]]
        check(c[0]["event"] == "accepted" and all(e["event"] == "deferred" for e in c[1:]),
              f"c1: {[e['event'] for e in c]}")
        att = [e["attempts"] for e in c[1:]]
        check(att == sorted(att) and att[0] == 1 and att[1] == 2, f"c1 attempts {att}")
        g = ev[ids["gone@a.test"]]
        check([e["event"] for e in g] == ["suppressed"] and "suppressed" in g[0]["response"],
              f"gone: {g}")
        smtp_ev = [lst for rid, lst in ev.items() if lst[0]["recipient"] == "s1@a.test"]
        check(smtp_ev and [e["event"] for e in smtp_ev[0]] == ["accepted", "delivered"],
              f"SMTP submission's events: {smtp_ev}")
        # No event twice (every post was answered 200).
        seen = [(e["recipient_id"], e["event"], e["attempts"]) for e in recv.events()]
        check(len(seen) == len(set(seen)), "an event arrived twice")
        s = stats(d)["webhook"]
        check(s["failures"] == 0 and s["last_status"] == 200 and s["posted"] == len(seen),
              f"stats webhook {s}")
        m = d.api("GET", "/metrics").body.decode()
        check(f'ringpost_webhook_events_total{{result="posted"}} ' in m and
              "ringpost_webhook_backlog_events" in m, "webhook metrics missing")


def delivered_of(recv):
    return {e["recipient"] for e in recv.events() if e["event"] == "delivered"}


def case_outage(env):
    recv = HookReceiver()  # not started: down
    smtpd = env.smtpd()
    d = env.daemon(name="outage", routes={"a.test": smtpd.addr}, with_api=True,
                   extra=hook_conf(recv)).start()
    with running(d, recv):
        for i in range(5):
            post(d, [f"o{i}@a.test"], i)

        def failing():
            s = stats(d)
            w = s["webhook"]
            return w if s["delivered"] == 5 and w["backlog"] == 5 and w["failures"] >= 1 and \
                w["last_error"] else None
        w = wait_for(failing, 20, "five events kept while the receiver is down")
        check("127.0.0.1" in w["last_error"], f"last_error {w['last_error']!r}")
        check(w["retry_at"] is not None, f"retry_at {w}")
        rc = d.stop()
        check(rc == 0, f"stop: exit {rc}")
        d.start()
        recv.start()
        wait_for(lambda: len(delivered_of(recv)) == 5, 90,
                 "every event after the restart and the receiver's return")
        check(delivered_of(recv) == {f"o{i}@a.test" for i in range(5)}, "outage events")
        check_posts(recv)
        wait_for(lambda: stats(d)["webhook"]["backlog"] == 0, 10, "the backlog to empty")


def case_errors(env):
    recv = HookReceiver()
    recv.plan = [500, 500]
    recv.start()
    smtpd = env.smtpd()
    d = env.daemon(name="errors", routes={"a.test": smtpd.addr}, with_api=True,
                   extra=hook_conf(recv)).start()
    with running(d, recv):
        for i in range(3):
            post(d, [f"e{i}@a.test"], i)
        wait_for(lambda: len(delivered_of(recv)) == 3, 30, "the events after two 500s")
        posts = recv.snapshot()
        check([p["status"] for p in posts[:2]] == [500, 500], f"statuses {posts}")
        first = json.loads(posts[0]["body"])
        again = recv.events()
        check(first[0] in again, "the refused events were not posted again")
        check_posts(recv)
        w = stats(d)["webhook"]
        check(w["failures"] == 2 and w["last_status"] == 200 and w["last_error"] == "HTTP 500",
              f"stats {w}")


def case_bounded(env):
    recv = HookReceiver()
    smtpd = env.smtpd()
    d = env.daemon(name="bounded", routes={"a.test": smtpd.addr}, with_api=True,
                   extra=hook_conf(recv, max_backlog=4)).start()
    with running(d, recv):
        for i in range(10):
            post(d, [f"k{i}@a.test"], i)
        w = wait_for(lambda: (lambda s: s["webhook"] if s["delivered"] == 10 and
                              s["webhook"]["dropped"] == 6 else None)(stats(d)),
                     20, "ten deliveries, six events dropped")
        check(w["backlog"] == 4, f"backlog {w}")
        recv.start()
        wait_for(lambda: len(delivered_of(recv)) == 4, 30, "the four kept events")
        # The newest four: the last deliveries (one shard owns a.test, and
        # it logs each delivery before it hands the update to the spool).
        last = {x["rcpt"].strip("<>") for x in d.deliveries("delivered")[-4:]}
        check(delivered_of(recv) == last,
              f"kept events: {sorted(delivered_of(recv))}, last delivered {sorted(last)}")


ARF = """From: Feedback Loop <fbl@rx.test>
Subject: complaint
To: <abuse@bounces.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b1"

--b1
Content-Type: text/plain

An abuse report.

--b1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Test/1.0
Version: 1
Original-Rcpt-To: <{rcpt}>

--b1
Content-Type: message/rfc822

{returned}

body
--b1--
"""


def case_complaint(env):
    recv = HookReceiver().start()
    rx = env.smtpd("rx")
    inbound = free_port()
    d = env.daemon(name="complaint", routes={"rx.test": rx.addr}, with_api=True,
                   queue={"bounce_domain": "bounces.test", "suppress": "yes"},
                   extra=f"[listen]\ninbound = 127.0.0.1:{inbound}\n" + hook_conf(recv))
    d.start()
    with running(d, recv):
        r = d.api("POST", "/v1/messages", {"from": "hook@a.test", "to": ["fan@rx.test"],
                                           "subject": "news", "text": "hi\n",
                                           "headers": {"X-Test-Id": "complaint-1"}})
        check(r.status == 202, f"POST: {r!r}")
        rid = r.json()["recipients"][0]["id"]
        wait_for(lambda: any(e["recipient_id"] == rid for e in recv.events()), 20,
                 "the delivered event")
        got = wait_for(lambda: [m for m in rx.messages()
                                if m.header("X-Test-Id") == "complaint-1"] or None, 10,
                       "the message at the receiver")[0]
        head, _ = got.split()
        returned = f"Return-Path: <{got.mailfrom}>\n" + head.decode().rstrip("\n")
        data = ARF.format(rcpt="fan@rx.test", returned=returned)
        data = data.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        with smtplib.SMTP("127.0.0.1", inbound, local_hostname="mx.rx.test",
                          timeout=20 * SLOW) as smtp:
            smtp.sendmail("fbl-bounces@rx.test", ["abuse@bounces.test"], data)

        def both():
            ev = [e for e in recv.events() if e["recipient_id"] == rid]
            return ev if len(ev) >= 2 else None
        ev = wait_for(both, 20, "the complained event")
        check([e["event"] for e in ev] == ["delivered", "complained"], f"events {ev}")
        check(ev[1]["recipient"] == "fan@rx.test" and ev[1]["response"], f"complaint {ev[1]}")
        check_posts(recv)


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def case_https(env):
    ca = CA(env.dir / "hook-ca")
    cert, key = ca.issue("hooks.test", names=["127.0.0.1"])
    good = HookReceiver(tls_context(cert, key)).start()
    scert, skey = self_signed(env.dir / "hook-self", "127.0.0.1")
    bad = HookReceiver(tls_context(scert, skey)).start()
    smtpd = env.smtpd()
    failures = []
    for recv, trusted in ((good, True), (bad, False)):
        d = env.daemon(routes={"a.test": smtpd.addr}, with_api=True,
                       name="https-ok" if trusted else "https-bad",
                       extra=f"[tls]\nca_file = {ca.cert}\n" + hook_conf(recv))
        d.start()
        try:
            post(d, ["t1@a.test"], 1)
            if trusted:
                wait_for(lambda: delivered_of(recv) == {"t1@a.test"}, 20, "the event over HTTPS")
                check_posts(recv)
            else:
                w = wait_for(lambda: (lambda w: w if w["failures"] and w["backlog"] == 1
                                      else None)(stats(d)["webhook"]), 20,
                             "a refused certificate")
                check("TLS" in w["last_error"] and not recv.snapshot(),
                      f"untrusted endpoint: {w}, posts {len(recv.snapshot())}")
        except (TestFailure, OSError, ValueError, KeyError) as e:
            failures.append(f"{'trusted' if trusted else 'untrusted'}: {type(e).__name__}: {e}")
        stop_clean(d, failures)
        recv.stop()
    if failures:
        raise TestFailure("; ".join(failures))


class GarbageEndpoint:
    """Answers every connection with `answer` and closes it: not HTTP, or
    headers without end (http-parser's bound must refuse them)."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/ringpost?src=test"
        self.conns = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            try:
                c.settimeout(5)
                c.recv(65536)
                c.sendall(self.answer)
            except OSError:
                pass
            c.close()

    def close(self):
        self.sock.close()


def case_garbage_answers(env):
    smtpd = env.smtpd()
    for name, answer, word in (
            ("not-http", b"220 this is an SMTP server, not HTTP\r\n\r\n", "HTTP"),
            ("endless-headers", b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"a" * 2_000_000, "HTTP")):
        bad = GarbageEndpoint(answer)
        d = env.daemon(routes={"a.test": smtpd.addr}, with_api=True, name=f"garbage-{name}",
                       extra=hook_conf(bad))
        d.start()
        with running(d, bad):
            post(d, ["g1@a.test"], 1)
            w = wait_for(lambda: (lambda w: w if w["failures"] >= 1 else None)(
                stats(d)["webhook"]), 20, f"{name}: a failed post")
            check(word in (w["last_error"] or "") and w["backlog"] >= 1,
                  f"{name}: {w}: the event must stay, the error named")
            check(d.alive(), f"{name}: the daemon died")


def case_config(env):
    for bad, word in (("url = ftp://x.test/", "http"), ("url = http://a b/", "spaces"),
                      ("url = http://host:99999/", "port"),
                      ("events = delivered, opened", "opened")):
        path = env.write_config(f"[server]\ndata_dir = {env.dir}/cfg\n[webhook]\n{bad}\n",
                                "bad.conf")
        p = subprocess.run([ringpost_bin(), "check-config", "-c", str(path)],
                           capture_output=True, timeout=20)
        err = p.stderr.decode()
        check(p.returncode == EX_CONFIG and word in err and "bad.conf:" in err,
              f"{bad!r}: exit {p.returncode}, {err!r}")


CASES = [case_events, case_outage, case_errors, case_bounded, case_complaint,
         case_https, case_garbage_answers, case_config]


def main():
    with TestEnv("webhook") as env:
        raise_failures(run_cases(CASES, env, []))


if __name__ == "__main__":
    from harness import run_test
    run_test(main)
