"""test_sched_limits.py - per-domain limits as a real receiver sees them:
ringpost-sink counts sessions per recipient domain and saves every message
(file times give the rate).

Cases:
  - max_connections = 3: 60 messages to conn.test, whose sink delays every
    reply by 100 ms (so sessions overlap): the sink's peak of concurrent
    sessions for conn.test is at most 3 and more than 1 (else the limit was
    never tested), in all and per domain, and /v1/stats never shows more
    than 3 connections while the mail flows; every message arrives once;
  - the same with sessions that end every 4 messages
    (max_messages_per_connection = 4, churn.test): a closing session is
    replaced, never doubled;
  - and as a strict server counts (strict.test, a threaded Python server
    that holds a connection until it has answered QUIT, 200 ms after the
    QUIT): sessions ending every 4 messages never make it see more than 3
    connections, i.e. ringpost waits for the reply to QUIT (RFC 5321
    4.1.1.10) before a replacement session connects;
  - domains sharing a next hop share its limit, the smallest of theirs:
    narrow.test (max_connections 2) and wide.test (8) are routed to the
    same sink (one pool; both names hash to the same shard, and /v1/stats
    must show them as one destination with max_connections 2): the sink
    never sees more than 2 of our sessions at once (and more than 1), and
    both domains get all their mail, over sessions that carry either
    (wide.test is not starved while narrow.test's sessions work);
  - behind one next hop, every domain opens sessions for its own mail:
    6 messages to each of 4 new domains (one shard) whose shared sink holds
    every greeting for 30 s, so that no session ever works: ringpost opens
    5 per domain (a new domain's first sessions) up to the destination's
    20, i.e. exactly 20 (one domain's connecting sessions must not stop
    the others: that held a 480-domain benchmark at 1,600 of 19,700);
  - behind one next hop, domains that pause are served again: paced.test
    (rate 20/s), quick.test and hold.test (suspended) share a sink (one
    shard); each leaves the pool's ring of domains with work while it can
    send nothing (out of tokens, suspended): quick.test is done and
    hold.test has nothing while it is suspended, and after the resume all
    three get all their mail;
  - rate = 50 (messages per second, token bucket): 300 messages to
    rate.test arrive at 50/s within 10% (from the first to the last
    message at the sink, by the times the sink wrote them), and no 1-second
    window holds more than the rate plus the bucket's tenth of a second
    (+10%); a domain without a rate (free.test, same daemon) is not slowed.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import time

from harness import (Cases, SLOW, StrictSmtpServer, TestEnv, TestFailure, api_domain,
                     api_submit_batch, check, free_port, log, raise_failures, run_cases, run_test,
                     saved_mail, stop_clean, wait_for)

SENDER = "limits@origin.test"
MAX_CONN = 3
N_CONN = 60
RATE = 50
N_RATE = 300
NARROW, WIDE = 2, 8

cases = Cases()


class Ctx:
    pass


def msgs(domain, n, tag):
    return [{"from": SENDER, "to": [f"u{i}@{domain}"], "subject": f"{tag} {i}",
             "text": f"{tag} {i}\n", "headers": {"X-Test-Id": f"{tag}-{i}"}} for i in range(n)]


def watch_connections(x, domain, until):
    """Poll /v1/stats until until() is true; the largest connections seen."""
    peak = 0
    while not until():
        e = api_domain(x.d, domain) or {}
        peak = max(peak, e.get("connections", 0))
        time.sleep(0.02)
    return peak


def check_sessions(x, sink, domain, n, tag, check_total):
    api_submit_batch(x.d, msgs(domain, n, tag))
    deadline = time.monotonic() + 30 * SLOW

    def done():
        check(time.monotonic() < deadline, f"{domain}: {sink.messages(domain)} of {n} "
              f"messages at the sink after {30 * SLOW:.0f}s")
        return sink.messages(domain) >= n
    api_peak = watch_connections(x, domain, done)
    time.sleep(0.3)  # one more stats line from the sink, and any extra message
    st = sink.stats()
    dom = st["domains"][domain]
    log(f"{domain}: sink peak {dom['peak_sessions']} for the domain, {st['peak_sessions']} in "
        f"all; /v1/stats peak {api_peak}")
    check(dom["messages"] == n, f"{domain}: {dom['messages']} messages at the sink, expected {n}")
    check(dom["peak_sessions"] <= MAX_CONN, f"{domain}: {dom['peak_sessions']} concurrent "
          f"sessions at the sink, max_connections is {MAX_CONN}")
    check(dom["peak_sessions"] > 1, f"{domain}: only {dom['peak_sessions']} session at a time: "
          f"the limit was never tested")
    if check_total:
        check(st["peak_sessions"] <= MAX_CONN, f"{domain}: {st['peak_sessions']} concurrent "
              f"connections at the sink in all")
    check(api_peak <= MAX_CONN, f"{domain}: /v1/stats showed {api_peak} connections")
    return st


@cases.add
def max_connections_held(x):
    check_sessions(x, x.conn, "conn.test", N_CONN, "conn", check_total=True)


@cases.add
def max_connections_with_session_churn(x):
    st = check_sessions(x, x.churn, "churn.test", N_CONN, "churn", check_total=False)
    # 4 messages per session: at least 15 sessions were opened one after another.
    check(st["sessions"] <= MAX_CONN, f"churn.test: {st['sessions']} sessions still open")


@cases.add
def max_connections_as_a_strict_server_counts(x):
    n = 40
    api_submit_batch(x.d, msgs("strict.test", n, "strict"))
    wait_for(lambda: x.strict.messages >= n, 30, f"{n} messages at the strict server "
             f"(has {x.strict.messages})")
    time.sleep(0.5)
    s = x.strict
    log(f"strict.test: {s.messages} messages over {s.connections} connections, peak {s.peak}")
    check(s.messages == n, f"strict.test: {s.messages} messages, expected {n}")
    check(s.connections >= n // 4, f"strict.test: {s.connections} connections for {n} messages "
          f"at 4 per connection")
    check(s.peak <= MAX_CONN, f"strict.test: the server saw {s.peak} concurrent connections "
          f"(max_connections {MAX_CONN}): a session was replaced before its QUIT was answered")
    check(s.peak > 1, f"strict.test: only {s.peak} connection at a time: the limit was never "
          f"tested")


@cases.add
def shared_next_hop_shares_the_smallest_limit(x):
    n = {"narrow.test": 40, "wide.test": 120}
    per = {dom: msgs(dom, n[dom], dom.split(".")[0]) for dom in n}
    api_submit_batch(x.d, [per[dom][i] for i in range(max(n.values())) for dom in n
                           if i < n[dom]])  # interleaved
    deadline = time.monotonic() + 30 * SLOW
    dest = None
    api_peak = 0
    while not all(x.shared.messages(dom) >= n[dom] for dom in n):
        check(time.monotonic() < deadline, f"shared sink: {[x.shared.messages(d) for d in n]} "
              f"of {list(n.values())} messages after {30 * SLOW:.0f}s")
        st = x.d.api("GET", "/v1/stats").json()
        for e in st["destinations"]:
            if e["domain_count"] == 2:
                dest = e
                api_peak = max(api_peak, e["connections"])
        time.sleep(0.02)
    time.sleep(0.3)
    st = x.shared.stats()
    log(f"shared next hop: sink peak {st['peak_sessions']} (narrow.test "
        f"{st['domains']['narrow.test']['peak_sessions']}, wide.test "
        f"{st['domains']['wide.test']['peak_sessions']}); /v1/stats destination {dest}, "
        f"peak {api_peak}")
    check(dest is not None, "narrow.test and wide.test never showed as one destination in "
          "/v1/stats: the case did not test a shared pool")
    check(dest["max_connections"] == NARROW, f"the shared destination's limit is "
          f"{dest['max_connections']}, expected the smaller one, {NARROW}")
    for dom in n:
        got = st["domains"][dom]["messages"]
        check(got == n[dom], f"{dom}: {got} messages at the sink, expected {n[dom]}")
    check(st["peak_sessions"] <= NARROW, f"the shared sink saw {st['peak_sessions']} sessions "
          f"at once, the destination's limit is {NARROW}")
    check(st["peak_sessions"] > 1, f"only {st['peak_sessions']} session at a time: the limit "
          f"was never tested")
    check(api_peak <= NARROW, f"/v1/stats showed {api_peak} connections to the destination")


@cases.add
def shared_next_hop_opens_sessions_for_every_domain(x):
    doms = ["co1.test", "co3.test", "co5.test", "co7.test"]  # all on shard 0
    api_submit_batch(x.d, [m for dom in doms for m in msgs(dom, 6, dom.split(".")[0])])
    want = min(len(doms) * 5, 20)  # 5 per new domain; [domain *] max_connections 20

    def opened():
        return x.stalled.stats().get("sessions", 0)
    try:
        wait_for(lambda: opened() >= want, 10 * SLOW, f"{want} sessions at the stalled sink")
    except TestFailure as e:
        raise TestFailure(f"{e}: it has {opened()}") from None
    time.sleep(0.5)  # anything more would show by now
    st = x.stalled.stats()
    log(f"stalled shared sink: {st.get('sessions')} sessions open for {len(doms)} domains")
    check(st.get("sessions") == want, f"{st.get('sessions')} sessions at the stalled sink, "
          f"expected {want}")


@cases.add
def shared_next_hop_serves_members_that_pause(x):
    n = {"paced.test": 30, "quick.test": 100, "hold.test": 10}
    r = x.d.api("POST", "/v1/queue/hold.test/suspend")
    check(r.status == 200, f"suspend hold.test: {r!r}")
    api_submit_batch(x.d, [m for dom, k in n.items() for m in msgs(dom, k, dom.split(".")[0])])
    wait_for(lambda: x.mixed.messages("quick.test") >= n["quick.test"], 10 * SLOW,
             "quick.test's mail at the shared sink")
    check(x.mixed.messages("hold.test") == 0, f"hold.test: {x.mixed.messages('hold.test')} "
          f"messages delivered while suspended")
    r = x.d.api("POST", "/v1/queue/hold.test/resume")
    check(r.status == 200, f"resume hold.test: {r!r}")
    try:
        wait_for(lambda: all(x.mixed.messages(d) >= k for d, k in n.items()), 15 * SLOW,
                 "every domain's mail at the shared sink")
    except TestFailure as e:
        raise TestFailure(f"{e}: {({d: x.mixed.messages(d) for d in n})}") from None
    time.sleep(0.3)
    got = {d: x.mixed.messages(d) for d in n}
    log(f"shared next hop with pauses: {got}")
    check(got == n, f"messages at the shared sink {got}, expected {n}")


@cases.add
def rate_held(x):
    t0 = time.time()
    api_submit_batch(x.d, msgs("rate.test", N_RATE, "rate") + msgs("free.test", 200, "free"))
    wait_for(lambda: x.free.messages("free.test") >= 200, 10,
             "free.test (no rate) delivered")
    t_free = time.time() - t0
    check(t_free < N_RATE / RATE / 2, f"free.test took {t_free:.1f}s: slowed by rate.test's limit")
    wait_for(lambda: x.rate.messages("rate.test") >= N_RATE, N_RATE / RATE * 1.5 + 5,
             f"{N_RATE} messages at rate.test's sink")
    time.sleep(0.3)
    saved = saved_mail(x.rate_dir)
    check(len(saved) == N_RATE, f"rate.test: {len(saved)} messages saved, expected {N_RATE}")
    times = sorted(m.mtime for m in saved)
    span = times[-1] - times[0]
    # N messages at rate R take (N - 1 - burst) / R seconds after the
    # first; the bucket holds a tenth of a second's worth (burst).
    burst = max(1, RATE // 10)
    rate = (N_RATE - burst) / span
    window = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    log(f"rate.test: {N_RATE} messages in {span:.2f}s: {rate:.1f}/s (limit {RATE}); "
        f"busiest second {window}; free.test 200 in {t_free:.2f}s")
    check(RATE * 0.9 <= rate <= RATE * 1.1, f"rate.test: {rate:.1f} messages/s, expected "
          f"{RATE} +-10%")
    check(window <= (RATE + burst) * 1.1, f"rate.test: {window} messages in one second "
          f"(rate {RATE}, burst {burst})")


def main():
    with TestEnv("sched_limits") as env:
        x = Ctx()
        x.env = env
        cp, hp, rp, fp = free_port(), free_port(), free_port(), free_port()
        slow = ["--reply-delay", "100"]
        x.conn = env.fast_sink("conn", [f"127.0.0.1:{cp}"], slow)
        x.churn = env.fast_sink("churn", [f"127.0.0.1:{hp}"], slow)
        x.rate_dir = env.dir / "rate-saved"
        x.rate = env.fast_sink("rate", [f"127.0.0.1:{rp}"], ["--save", str(x.rate_dir)])
        x.free = env.fast_sink("free", [f"127.0.0.1:{fp}"])
        sp = free_port()
        x.shared = env.fast_sink("shared", [f"127.0.0.1:{sp}"], slow)
        tp = free_port()
        x.stalled = env.fast_sink("stalled", [f"127.0.0.1:{tp}"], ["--reply-delay", "30000"])
        mp = free_port()
        x.mixed = env.fast_sink("mixed", [f"127.0.0.1:{mp}"])
        x.strict = StrictSmtpServer(quit_delay=0.2)
        x.d = env.daemon(routes={"conn.test": f"127.0.0.1:{cp}", "churn.test": f"127.0.0.1:{hp}",
                                 "rate.test": f"127.0.0.1:{rp}", "free.test": f"127.0.0.1:{fp}",
                                 "strict.test": x.strict.addr,
                                 "narrow.test": f"127.0.0.1:{sp}",
                                 "wide.test": f"127.0.0.1:{sp}",
                                 **{f"co{i}.test": f"127.0.0.1:{tp}" for i in (1, 3, 5, 7)},
                                 **{d: f"127.0.0.1:{mp}" for d in ("paced.test", "quick.test",
                                                                   "hold.test")}},
                         with_api=True,
                         domains={"conn.test": {"max_connections": MAX_CONN},
                                  "churn.test": {"max_connections": MAX_CONN,
                                                 "max_messages_per_connection": 4},
                                  "strict.test": {"max_connections": MAX_CONN,
                                                  "max_messages_per_connection": 4},
                                  "rate.test": {"rate": RATE},
                                  "narrow.test": {"max_connections": NARROW},
                                  "wide.test": {"max_connections": WIDE},
                                  "paced.test": {"rate": 20}})
        try:
            x.d.start()
            failures = run_cases(cases, x, [x.d])
            stop_clean(x.d, failures)
        finally:
            x.strict.close()
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
