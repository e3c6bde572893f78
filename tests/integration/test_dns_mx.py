"""test_dns_mx.py - where mail goes, as a real DNS server says: ringpost
resolves against a private dnsmasq on loopback and delivers to ringpost-sink
processes listening on distinct loopback addresses, so each sink's
per-domain counters say which exchanger got the mail.

Exchangers (all on the same high port, [domain *] port):
  127.0.0.2   nothing listens: connections are refused
  127.0.0.3   sink "a"
  127.0.0.4   sink "b"
  ::1         sink "v6"

Cases:
  - several MX with priorities: the lowest preference is used, whatever the
    order in the answer (prio-ab.test: a=10, b=20 -> all at a; prio-ba.test:
    a=30, b=5 -> all at b);
  - fallback: the best MX refuses connections (127.0.0.2) -> the next one
    (b) gets the mail at the first attempt, and the log says it tried the
    next exchanger;
  - equal preferences spread the load: 200 messages to equal.test (MX 10 a,
    MX 10 b), 5 per session -> both sinks get a fair share;
  - no MX: the domain's own A record (implicit MX), and an AAAA-only
    domain without MX;
  - an AAAA-only exchanger (::1);
  - null MX (RFC 7505) -> bounced 5.1.10, DSN in GET /v1/bounces;
  - NXDOMAIN -> bounced 5.1.2, DSN;
  - an exchanger without any address -> deferred (4.4.4), never bounced,
    and never looked up under a search domain (the daemon runs with
    LOCALDOMAIN=evil.test, where that name would exist);
  - loop prevention: an MX pointing at ringpost's own submission listener
    -> bounced 5.4.6; with another MX as well, that one gets the mail;
  - an internationalised domain (SMTPUTF8, user@münchen.test, through
    smtplib) is looked up by its A-label (xn--mnchen-3ya.test, the only
    name dnsmasq knows) and delivered to its exchanger, as is a message to
    the same domain through the API;
  - 30 messages to one new domain at once -> one MX query at dnsmasq (the
    lookup in flight is shared), and /v1/stats dns counters add up.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import os
import smtplib
import time

from harness import (Cases, Dnsmasq, TestEnv, api_rcpt, api_send, check, free_port, log,
                     raise_failures, run_cases, run_test, sink_counts, stop_clean, wait_for,
                     wait_rcpt)

SENDER = "dns@origin.test"
N_EQUAL = 200

cases = Cases()


class Ctx:
    pass


def records(sub_port):
    return [
        "--local=/test/",  # no upstream: unknown names are NXDOMAIN
        "--host-record=mx-dead.test,127.0.0.2",
        "--host-record=mx-a.test,127.0.0.3",
        "--host-record=mx-b.test,127.0.0.4",
        "--host-record=mx-v6.test,::1",
        "--host-record=mx-self.test,127.0.0.1",
        "--mx-host=prio-ab.test,mx-b.test,20", "--mx-host=prio-ab.test,mx-a.test,10",
        "--mx-host=prio-ba.test,mx-a.test,30", "--mx-host=prio-ba.test,mx-b.test,5",
        "--mx-host=fallback.test,mx-dead.test,10", "--mx-host=fallback.test,mx-b.test,20",
        "--mx-host=equal.test,mx-a.test,10", "--mx-host=equal.test,mx-b.test,10",
        "--host-record=implicit.test,127.0.0.3",
        "--host-record=implicit6.test,::1",
        "--mx-host=v6.test,mx-v6.test,10",
        "--mx-host=null.test,.,0",
        "--mx-host=noaddr.test,mx-nowhere.test,10",
        # What a search domain (LOCALDOMAIN=evil.test for the daemon) would
        # make of the missing exchanger: somebody else's host.
        "--host-record=mx-nowhere.test.evil.test,127.0.0.3",
        "--mx-host=loop.test,mx-self.test,10",
        "--mx-host=loopalt.test,mx-self.test,10", "--mx-host=loopalt.test,mx-a.test,20",
        "--mx-host=shared.test,mx-b.test,10",
        "--mx-host=xn--mnchen-3ya.test,mx-a.test,10",  # münchen.test
    ]


def send(x, rcpts, tag, n=1):
    return api_send(x.d, SENDER, rcpts, tag, n)


def wait_sinks(x, domain, total, timeout=20):
    wait_for(lambda: sum(sink_counts(x.sinks, domain).values()) >= total, timeout,
             f"{total} messages for {domain} at the sinks (have {sink_counts(x.sinks, domain)})")
    time.sleep(0.3)  # anything extra would show now
    got = sink_counts(x.sinks, domain)
    check(sum(got.values()) == total, f"{domain}: {got}, expected {total} in all")
    return got


def dsn_for(x, rcpt):
    """The DSN (text) in the bounce mailbox that names rcpt."""
    def find():
        r = x.d.api("GET", "/v1/bounces")
        check(r.status == 200, f"GET /v1/bounces: HTTP {r.status}")
        for m in r.json()["messages"]:
            b = x.d.api("GET", f"/v1/bounces/{m['uid']}")
            text = b.body.decode("utf-8", "replace")
            if f"Final-Recipient: rfc822; {rcpt}" in text:
                return text
        return None
    return wait_for(find, 15, f"a DSN for {rcpt} in /v1/bounces", interval=0.2)


def expect_bounce(x, domain, status, words):
    rcpt = f"user@{domain}"
    mid = send(x, [rcpt], domain)[0]
    rc = wait_rcpt(x.d, mid, "bounced")
    check(rc["attempts"] <= 1, f"{domain}: {rc}")
    for w in words:
        check(w.lower() in (rc["last_response"] or "").lower(),
              f"{domain}: last_response {rc['last_response']!r} lacks {w!r}")
    dsn = dsn_for(x, rcpt)
    check(f"Status: {status}" in dsn, f"{domain}: DSN without Status: {status}:\n{dsn[-800:]}")
    check("Action: failed" in dsn, f"{domain}: DSN action:\n{dsn[-800:]}")
    check(sum(sink_counts(x.sinks, domain).values()) == 0, f"{domain}: delivered anyway")


# ---- cases -----------------------------------------------------------------


@cases.add
def internationalised_domain_by_its_a_label(x):
    domain = "m\u00fcnchen.test"
    before = len(x.dns.queries())
    with smtplib.SMTP("127.0.0.1", x.d.port, timeout=20) as s:
        s.ehlo("idn.client.test")
        check(s.has_extn("smtputf8"), "no SMTPUTF8 in the EHLO reply")
        s.sendmail(SENDER, [f"anna@{domain}"],
                   f"Subject: idn\r\nFrom: {SENDER}\r\n\r\nGr\u00fc\u00dfe\r\n".encode(),
                   mail_options=["SMTPUTF8"])
    send(x, [f"bert@{domain}"], "idn-api")
    got = wait_sinks(x, domain, 2)
    check(got["a"] == 2, f"{domain}: {got}")
    asked = [q for q in x.dns.queries()[before:] if q[0] == "MX"]
    log(f"  MX queries: {asked}")
    check(("MX", "xn--mnchen-3ya.test") in asked, f"no MX query for the A-label: {asked}")
    check(all(q[1].isascii() for q in asked), f"a query in Unicode: {asked}")


@cases.add
def lowest_preference_first(x):
    send(x, ["u1@prio-ab.test"], "prio-ab", 5)
    send(x, ["u1@prio-ba.test"], "prio-ba", 5)
    ab = wait_sinks(x, "prio-ab.test", 5)
    ba = wait_sinks(x, "prio-ba.test", 5)
    check(ab["a"] == 5, f"prio-ab.test (a=10, b=20) went to {ab}")
    check(ba["b"] == 5, f"prio-ba.test (a=30, b=5) went to {ba}")
    # Same exchangers, ranked differently: separate destinations (a shared
    # pool would carry one domain's mail over the other's sessions).
    keys = destinations(x)
    p = x.sink_port
    check(keys.get("prio-ab.test") == f"mx:mx-a.test>mx-b.test:{p}" and
          keys.get("prio-ba.test") == f"mx:mx-b.test>mx-a.test:{p}",
          f"destinations: {keys}")


def destinations(x):
    """{domain: destination key} from /v1/stats."""
    out = {}
    for d in x.d.api("GET", "/v1/stats").json()["destinations"]:
        for dom in d["domains"]:
            out[dom] = d["destination"]
    return out


@cases.add
def fallback_to_next_mx(x):
    ids = send(x, ["u1@fallback.test"], "fallback", 3)
    got = wait_sinks(x, "fallback.test", 3)
    check(got["b"] == 3, f"fallback.test went to {got}")
    for mid in ids:
        rc = wait_rcpt(x.d, mid, "delivered")
        check(rc["attempts"] == 1, f"fallback: the next MX was not tried at once: {rc}")
    check("127.0.0.2" in x.d.log() and "trying the next exchanger" in x.d.log(),
          "no 'trying the next exchanger' after 127.0.0.2 refused")


@cases.add
def equal_preferences_share(x):
    send(x, ["u1@equal.test"], "equal", N_EQUAL)
    got = wait_sinks(x, "equal.test", N_EQUAL, timeout=40)
    log(f"equal.test: {got}")
    # 5 messages a session: at least 40 sessions, started alternately.
    for name in ("a", "b"):
        check(got[name] >= N_EQUAL * 3 // 10, f"equal.test: unfair split {got}")
    key = destinations(x).get("equal.test")
    check(key == f"mx:mx-a.test,mx-b.test:{x.sink_port}", f"equal.test destination {key}")


@cases.add
def implicit_mx(x):
    send(x, ["u1@implicit.test"], "implicit", 2)
    got = wait_sinks(x, "implicit.test", 2)
    check(got["a"] == 2, f"implicit.test (A 127.0.0.3, no MX) went to {got}")
    send(x, ["u1@implicit6.test"], "implicit6", 2)
    got = wait_sinks(x, "implicit6.test", 2)
    check(got["v6"] == 2, f"implicit6.test (AAAA ::1, no MX) went to {got}")


@cases.add
def aaaa_only_exchanger(x):
    ids = send(x, ["u1@v6.test"], "v6", 3)
    got = wait_sinks(x, "v6.test", 3)
    check(got["v6"] == 3, f"v6.test (MX -> AAAA ::1) went to {got}")
    rc = wait_rcpt(x.d, ids[0], "delivered")
    check(rc["attempts"] == 1, f"v6.test: {rc}")


@cases.add
def null_mx_bounces(x):
    expect_bounce(x, "null.test", "5.1.10", ["null MX"])


@cases.add
def nxdomain_bounces(x):
    expect_bounce(x, "nx.test", "5.1.2", ["NXDOMAIN"])


@cases.add
def exchanger_without_address_defers(x):
    mid = send(x, ["u1@noaddr.test"], "noaddr")[0]
    rc = wait_rcpt(x.d, mid, "deferred")
    check("mx-nowhere.test" in (rc["last_response"] or ""), f"noaddr.test: {rc}")
    time.sleep(2.5)  # [queue] retry 1s, 2s: it is retried, and still not bounced
    rc = api_rcpt(x.d, mid)
    check(rc["state"] == "deferred", f"noaddr.test after retries: {rc}")
    check(sum(sink_counts(x.sinks, "noaddr.test").values()) == 0, "noaddr.test was delivered")
    evil = [q for q in x.dns.queries() if q[1].endswith(".evil.test")]
    check(not evil, f"search domains applied to exchanger names: {evil}")


@cases.add
def loop_to_ourselves_bounces(x):
    expect_bounce(x, "loop.test", "5.4.6", ["loops back"])


@cases.add
def loop_skips_own_address(x):
    ids = send(x, ["u1@loopalt.test"], "loopalt", 3)
    wait_for(lambda: x.alt.messages("loopalt.test") == 3, 20,
             f"3 messages for loopalt.test at 127.0.0.3:{x.d.port}")
    for mid in ids:
        wait_rcpt(x.d, mid, "delivered")
    check(not any(f"relay=127.0.0.1:{x.d.port}" in ln for ln in x.d.log().splitlines()),
          "ringpost connected to itself")


@cases.add
def one_query_for_many_messages(x):
    before = x.dns.queries()
    send(x, [f"u{i}@shared.test" for i in range(3)], "shared", 30)
    wait_sinks(x, "shared.test", 30)
    mx = [q for q in x.dns.queries()[len(before):] if q == ("MX", "shared.test")]
    check(len(mx) == 1, f"shared.test: {len(mx)} MX queries for 30 messages")
    st = x.d.api("GET", "/v1/stats").json()["dns"]
    log(f"dns stats: {st}")
    check(st["lookups"] >= st["queries"] > 0 and st["cache_entries"] > 0 and
          st["cache_bytes"] > 0, f"dns stats: {st}")
    check(st["queries"] <= len(x.dns.queries()), f"more queries counted than dnsmasq saw: {st}")


def main():
    Dnsmasq.require()
    with TestEnv("dns_mx") as env:
        x = Ctx()
        x.env = env
        sink_port = x.sink_port = free_port()
        sub_port = free_port()
        x.dns = env.dnsmasq(records(sub_port) + ["--local-ttl=60"])
        x.sinks = {
            "a": env.fast_sink("a", [f"127.0.0.3:{sink_port}"]),
            "b": env.fast_sink("b", [f"127.0.0.4:{sink_port}"]),
            "v6": env.fast_sink("v6", [f"[::1]:{sink_port}"]),
        }
        # The other MX of loopalt.test: same port as our own listener, on
        # another address.
        x.alt = env.fast_sink("alt", [f"127.0.0.3:{sub_port}"])
        x.d = env.daemon(routes={}, port=sub_port, with_api=True,
                         server={"log_level": "debug"},
                         domain_defaults={"port": sink_port},
                         domains={"equal.test": {"max_messages_per_connection": 5},
                                  "loop.test": {"port": sub_port},
                                  "loopalt.test": {"port": sub_port}},
                         extra=f"[dns]\nservers = {x.dns.addr}\ntimeout = 500ms\n"
                               f"tries = 2\n")
        # c-ares reads search domains from LOCALDOMAIN (and resolv.conf):
        # mail routing must not use them.
        os.environ["LOCALDOMAIN"] = "evil.test"
        try:
            x.d.start()
        finally:
            del os.environ["LOCALDOMAIN"]
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
