"""test_tls_outbound.py - outbound STARTTLS per [domain] tls against real TLS
receivers: aiosmtpd with STARTTLS (TlsReceiver, which records whether each
message came over TLS) and Postfix's smtp-sink (no STARTTLS). Routes name
their exchangers (mx-*.test, answered by a private dnsmasq), so the name that
SNI carries and a certificate must show is the route's host.

Receivers:
  good    aiosmtpd, a certificate for mx-good.test from the test's CA
  self    aiosmtpd, a self-signed certificate for mx-self.test
  broken  aiosmtpd that answers STARTTLS with 220 and then garbage
  sink    smtp-sink: STARTTLS not offered

Cases:
  - opportunistic uses TLS when offered: the receiver saw TLS, the delivery
    line says tls=TLSv1.x/CIPHER verified=yes (the CA is [tls] ca_file) and
    the recipient's remote record says the same after the relay;
  - opportunistic sends in clear text when STARTTLS is not offered: tls=no;
  - required defers against a receiver without STARTTLS: the recipient is
    deferred with 4.7.5 (never bounced), nothing reaches the receiver;
  - verify defers against a self-signed certificate (4.7.5, the verification
    error in last_response) and delivers with the right CA and name
    (verified=yes); a second session to the same exchanger resumes the
    first one's TLS session;
  - a receiver whose TLS handshake fails gets the mail in clear text on the
    retry (opportunistic only), and the log says so;
  - /v1/stats shows, per destination, TLS sessions, resumptions and
    handshake failures.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import re
import time

from harness import (CA, Cases, Dnsmasq, TestEnv, api_send, check, log, raise_failures,
                     run_cases, run_test, self_signed, stop_clean, wait_for, wait_rcpt)

SENDER = "tls@origin.test"

cases = Cases()


class Ctx:
    pass


def send_one(x, rcpt, tag):
    return api_send(x.d, SENDER, [rcpt], tag)[0]


def delivery_line(x, rcpt, status=None):
    """The latest delivery line for rcpt (a dict), or None."""
    found = None
    for f in x.d.deliveries(status):
        if f.get("rcpt") == f"<{rcpt}>":
            found = f
    return found


def wait_line(x, rcpt, status):
    return wait_for(lambda: delivery_line(x, rcpt, status), 15,
                    f"a delivery line for {rcpt} with status={status}", interval=0.1)


def messages_for(r, rcpt):
    return [m for m in r.messages() if rcpt in m.rcpts]


def destination(x, key):
    """The /v1/stats destination with this key, or None."""
    st = x.d.api("GET", "/v1/stats").json()
    for e in st.get("destinations", []):
        if e["destination"] == key:
            return e
    return None


TLS_RE = re.compile(r"^TLSv1\.[23]/[A-Z0-9_-]+$")


@cases.add
def opportunistic_uses_tls_when_offered(x):
    rcpt = "anna@opp.test"
    mid = send_one(x, rcpt, "opp")
    rc = wait_rcpt(x.d, mid, "delivered")
    got = messages_for(x.good, rcpt)
    check(len(got) == 1, f"the receiver got {len(got)} messages for {rcpt}")
    check(got[0].tls, f"the message did not come over TLS: {got[0].path}")
    line = wait_line(x, rcpt, "delivered")
    check(TLS_RE.match(line.get("tls", "")), f"delivery line tls={line.get('tls')!r}")
    check(line.get("verified") == "yes", f"delivery line verified={line.get('verified')!r}")
    version, cipher = line["tls"].split("/")
    check(version == got[0].tls["version"] and cipher == got[0].tls["cipher"],
          f"the log says {line['tls']}, the receiver saw {got[0].tls}")
    remote = rc.get("remote") or ""
    check(re.match(r"^127\.0\.0\.1:\d+ tls=TLSv1\.[23]/\S+ verified=yes$", remote),
          f"remote record {remote!r}")


@cases.add
def opportunistic_clear_text_when_not_offered(x):
    rcpt = "bert@plain.test"
    mid = send_one(x, rcpt, "plain")
    rc = wait_rcpt(x.d, mid, "delivered")
    line = wait_line(x, rcpt, "delivered")
    check(line.get("tls") == "no", f"delivery line tls={line.get('tls')!r}")
    check("verified" not in line, f"delivery line: {line}")
    check(rc.get("remote", "").endswith(" tls=no"), f"remote record {rc.get('remote')!r}")
    check(len(x.sink.messages()) >= 1, "smtp-sink got nothing")


@cases.add
def required_defers_without_starttls(x):
    rcpt = "carl@req.test"
    before = len(x.sink.messages())
    mid = send_one(x, rcpt, "req")
    rc = wait_rcpt(x.d, mid, "deferred")
    resp = rc.get("last_response") or ""
    check(resp.startswith("4.7.5 ") and "STARTTLS was not offered" in resp,
          f"last_response {resp!r}")
    time.sleep(1.5)  # past the first retry (1s): still deferred, never bounced
    st = x.d.api("GET", f"/v1/messages/{mid}").json()["recipients"][0]
    check(st["state"] == "deferred", f"state {st['state']} after a retry: {st}")
    check(len(x.sink.messages()) == before, "the plain receiver got mail under tls=required")
    check(not x.d.deliveries("bounced") or
          all(f.get("rcpt") != f"<{rcpt}>" for f in x.d.deliveries("bounced")),
          "bounced under tls=required")


@cases.add
def verify_defers_on_a_self_signed_certificate(x):
    rcpt = "dora@vself.test"
    mid = send_one(x, rcpt, "vself")
    rc = wait_rcpt(x.d, mid, "deferred")
    resp = rc.get("last_response") or ""
    check(resp.startswith("4.7.5 ") and "certificate verification failed" in resp,
          f"last_response {resp!r}")
    check(not messages_for(x.self_r, rcpt), "the self-signed receiver got the mail")
    check(re.search(r"session dest=vself\.test relay=\S+ status=tls-failed", x.d.log()),
          "no session line with status=tls-failed")


@cases.add
def verify_delivers_with_the_right_ca_and_resumes(x):
    rcpts = ["emil@vgood.test", "fritz@vgood.test"]
    for i, rcpt in enumerate(rcpts):  # one after the other: two sessions (1 message each)
        mid = send_one(x, rcpt, f"vgood{i}")
        rc = wait_rcpt(x.d, mid, "delivered")
        check((rc.get("remote") or "").endswith(" verified=yes"), f"remote {rc.get('remote')!r}")
        line = wait_line(x, rcpt, "delivered")
        check(TLS_RE.match(line.get("tls", "")) and line.get("verified") == "yes",
              f"delivery line {line}")
        got = messages_for(x.good, rcpt)
        check(len(got) == 1 and got[0].tls, f"{rcpt}: {[(m.path, m.tls) for m in got]}")
    dest = wait_for(lambda: (lambda e: e if e and e["tls"]["sessions"] >= 2 else None)(
        destination(x, f"route:mx-good.test:{x.good.port};tls=verify")), 10, "two TLS sessions to the verify destination")
    check(dest["tls"]["resumed"] >= 1, f"no session was resumed: {dest}")


@cases.add
def broken_tls_retried_in_clear_text(x):
    rcpt = "gina@broken.test"
    mid = send_one(x, rcpt, "broken")
    rc = wait_rcpt(x.d, mid, "delivered")
    got = messages_for(x.broken, rcpt)
    check(len(got) == 1 and got[0].tls is None, f"{[(m.path, m.tls) for m in got]}")
    check(rc.get("attempts") == 1, f"attempts {rc.get('attempts')}: the retry is part of one")
    line = wait_line(x, rcpt, "delivered")
    check(line.get("tls") == "no", f"delivery line tls={line.get('tls')!r}")
    check(re.search(r"smtp broken\.test \S+: trying again in clear text: "
                    r"reply=\"TLS handshake with \S+ failed: ", x.d.log()),
          "no log line about the retry")


@cases.add
def stats_show_tls_per_destination(x):
    good = destination(x, f"route:mx-good.test:{x.good.port}")
    check(good and "tls" in good, f"no opportunistic destination for mx-good.test: {good}")
    check(good["tls"]["sessions"] >= 1 and good["tls"]["handshake_failures"] == 0,
          f"mx-good.test: {good}")
    broken = destination(x, f"route:mx-broken.test:{x.broken.port}")
    check(broken and broken["tls"]["handshake_failures"] >= 1, f"mx-broken.test: {broken}")
    check(broken["tls"]["sessions"] == 0, f"mx-broken.test: {broken}")
    vself = destination(x, f"route:mx-self.test:{x.self_r.port};tls=verify")
    check(vself and vself["tls"]["handshake_failures"] >= 1, f"mx-self.test: {vself}")
    plain = destination(x, f"route:127.0.0.1:{x.sink.port}")
    check(plain and plain["tls"] == {"sessions": 0, "resumed": 0, "handshake_failures": 0},
          f"the plain destination: {plain}")


def main():
    Dnsmasq.require()
    with TestEnv("tls-out") as env:
        x = Ctx()
        ca = CA(env.dir / "ca")
        good_cert, good_key = ca.issue("mx-good.test")
        self_cert, self_key = self_signed(env.dir / "self", "mx-self.test")
        x.good = env.tls_receiver("good", good_cert, good_key)
        x.self_r = env.tls_receiver("self", self_cert, self_key)
        x.broken = env.tls_receiver("broken", self_cert, self_key, broken_tls=True)
        x.sink = env.sink("sink")
        x.dns = env.dnsmasq(["--local=/test/", "--host-record=mx-good.test,127.0.0.1",
                             "--host-record=mx-self.test,127.0.0.1",
                             "--host-record=mx-broken.test,127.0.0.1"])
        routes = {
            "opp.test": f"mx-good.test:{x.good.port}",
            "vgood.test": f"mx-good.test:{x.good.port}",
            "plain.test": x.sink.addr,
            "req.test": x.sink.addr,
            "vself.test": f"mx-self.test:{x.self_r.port}",
            "broken.test": f"mx-broken.test:{x.broken.port}",
        }
        domains = {
            "req.test": {"tls": "required"},
            "vself.test": {"tls": "verify"},
            "vgood.test": {"tls": "verify", "max_messages_per_connection": 1},
        }
        extra = (f"[dns]\nservers = {x.dns.addr}\ntimeout = 500ms\n\n"
                 f"[tls]\nca_file = {ca.cert}\n")
        x.d = env.daemon(routes=routes, domains=domains, with_api=True,
                         extra=extra)
        x.d.start()
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        raise_failures(failures)
        log(f"TLS lines: {sum(1 for f in x.d.deliveries() if f.get('tls'))}")


if __name__ == "__main__":
    run_test(main)
