"""test_dns_ttl.py - DNS answers in time: a DNS server that is down, then
up; answers that change once their TTL has run out. A private dnsmasq on
loopback (records with --local-ttl=3), ringpost-sink processes on 127.0.0.3
and 127.0.0.4 (same port, [domain *] port).

Cases:
  - the DNS server is unreachable (nothing listens on [dns] servers yet):
    mail is deferred with a temporary DNS error (4.4.3, the reason in
    last_response), never bounced; once dnsmasq starts on that address it
    is delivered on a later attempt ([queue] retry 1s, [dns] negative_ttl
    1s);
  - TTL expiry: ttl.test's MX points at old-mx.test (127.0.0.3); dnsmasq is
    restarted with the MX at new-mx.test (127.0.0.4). Mail sent while the
    cached answer is still valid goes to the old exchanger (and causes no
    query); mail sent after the TTL goes to the new one, after exactly one
    new MX query;
  - TTL 0 (dnsmasq's default for its own records): the answer is used for
    the mail that asked and looked up again for later mail, but it must
    not set off a loop of lookups (one MX query for a burst of mail, none
    while idle);
  - the DNS server goes away after a good answer expired: the lookup fails
    (temporary) and the previous next hops still carry new mail at once.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import time

from harness import (Cases, Dnsmasq, TestEnv, api_rcpt, api_send, check, free_port, log,
                     raise_failures, run_cases, run_test, sink_counts, stop_clean, wait_for,
                     wait_rcpt)

SENDER = "dns@origin.test"
TTL = 3  # seconds, dnsmasq --local-ttl

cases = Cases()


class Ctx:
    pass


def records(ttl_target, ttl=TTL):
    return ["--local=/test/", f"--local-ttl={ttl}",
            "--host-record=old-mx.test,127.0.0.3",
            "--host-record=new-mx.test,127.0.0.4",
            "--mx-host=later.test,old-mx.test,10",
            "--mx-host=zero.test,old-mx.test,10",
            f"--mx-host=ttl.test,{ttl_target},10"]


def send(x, rcpt, tag, n=1):
    return api_send(x.d, SENDER, [rcpt], tag, n)


def counts(x, domain):
    return sink_counts(x.sinks, domain)


def wait_counts(x, domain, want, timeout=20):
    wait_for(lambda: counts(x, domain) == want, timeout,
             f"{domain} at the sinks: {want} (have {counts(x, domain)})")


@cases.add
def dns_down_then_up(x):
    mid = send(x, "u1@later.test", "later")[0]
    rc = wait_rcpt(x.d, mid, "deferred")
    log(f"while DNS is down: {rc}")
    resp = rc["last_response"] or ""
    check(resp.startswith("4.4.3") and "later.test" in resp and "failed" in resp,
          f"deferred without the temporary DNS error: {rc}")
    time.sleep(2.5)  # a few more attempts: still only deferred
    rc = api_rcpt(x.d, mid)
    check(rc["state"] == "deferred" and rc["attempts"] >= 2, f"while DNS is down: {rc}")
    check(counts(x, "later.test") == {"a": 0, "b": 0}, "delivered without DNS?")
    x.dns.start()
    rc = wait_rcpt(x.d, mid, "delivered", timeout=15)
    log(f"after DNS came back: {rc}")
    wait_counts(x, "later.test", {"a": 1, "b": 0})
    check(("MX", "later.test") in x.dns.queries(), "no MX query for later.test")


@cases.add
def ttl_expiry_moves_mail(x):
    send(x, "u1@ttl.test", "ttl-1", 3)
    wait_counts(x, "ttl.test", {"a": 3, "b": 0})
    t_resolved = time.monotonic()  # at most this late: the answer is in the cache
    q0 = len(x.dns.queries())  # the log file is appended to across restarts
    x.dns.restart(records("new-mx.test"))
    # Still within the TTL: the cached answer, no query.
    send(x, "u2@ttl.test", "ttl-2", 3)
    wait_counts(x, "ttl.test", {"a": 6, "b": 0})
    sent_2 = time.monotonic() - t_resolved
    check(sent_2 < TTL, f"the second batch came {sent_2:.1f}s after the answer (TTL {TTL}s): "
          f"too slow a machine for this check")
    check(("MX", "ttl.test") not in x.dns.queries()[q0:],
          f"ttl.test was queried again within its TTL: {x.dns.queries()[q0:]}")
    time.sleep(max(0.0, TTL + 0.5 - (time.monotonic() - t_resolved)))
    send(x, "u3@ttl.test", "ttl-3", 3)
    wait_counts(x, "ttl.test", {"a": 6, "b": 3})
    mx = [q for q in x.dns.queries()[q0:] if q == ("MX", "ttl.test")]
    check(len(mx) == 1, f"ttl.test: {len(mx)} MX queries after the TTL, expected 1")


@cases.add
def ttl_zero_is_not_a_query_storm(x):
    # TTL 0 (dnsmasq's default): the answer is used, and looked up again
    # for later mail, but an answer must not trigger its own lookup.
    q0 = len(x.dns.queries())
    x.dns.restart(records("new-mx.test", ttl=0))
    send(x, "u1@zero.test", "zero-1", 3)
    wait_counts(x, "zero.test", {"a": 3, "b": 0})
    time.sleep(2)
    mx = [q for q in x.dns.queries()[q0:] if q == ("MX", "zero.test")]
    log(f"zero.test: {len(x.dns.queries()) - q0} queries in all, {len(mx)} MX")
    check(len(mx) == 1, f"zero.test: {len(mx)} MX queries for one burst of mail (TTL 0)")
    send(x, "u2@zero.test", "zero-2")
    wait_counts(x, "zero.test", {"a": 4, "b": 0})
    mx = [q for q in x.dns.queries()[q0:] if q == ("MX", "zero.test")]
    check(len(mx) == 2, f"zero.test: {len(mx)} MX queries; expected a new one for new mail")


@cases.add
def dns_down_keeps_previous_hops(x):
    # zero.test's answer (TTL 0) has expired; with the DNS server gone the
    # lookup fails, and the previous next hops carry the mail.
    x.dns.stop()
    time.sleep(1.2)
    mid = send(x, "u3@zero.test", "zero-3")[0]
    rc = wait_rcpt(x.d, mid, "delivered", timeout=10)
    check(rc["attempts"] == 1, f"zero.test without DNS: {rc}")
    wait_counts(x, "zero.test", {"a": 5, "b": 0})
    check("keeping the previous next hops" in x.d.log(), "no 'keeping the previous next hops'")


def main():
    Dnsmasq.require()
    with TestEnv("dns_ttl") as env:
        x = Ctx()
        sink_port = free_port()
        # The DNS server's address is fixed now; it starts in a case.
        x.dns = Dnsmasq(env, "dnsmasq", free_port(), records("old-mx.test"))
        env.receivers.append(x.dns)
        x.sinks = {"a": env.fast_sink("a", [f"127.0.0.3:{sink_port}"]),
                   "b": env.fast_sink("b", [f"127.0.0.4:{sink_port}"])}
        x.d = env.daemon(routes={}, with_api=True, queue={"retry": "1s"},
                         domain_defaults={"port": sink_port},
                         extra=f"[dns]\nservers = {x.dns.addr}\ntimeout = 300ms\ntries = 1\n"
                               f"negative_ttl = 1s\n")
        x.d.start()
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
