"""test_sched_admin.py - queue administration (suspend, resume, retry,
purge) through the HTTP API and the `ringpost queue` CLI, with real mail at
ringpost-sink processes that save every message (so "nothing lost, nothing
twice" is counted per message). [queue] retry = 30s: nothing deferred comes
back by itself while a case runs.

Cases:
  - suspend before mail (API): 30 messages wait (state queued, stats
    suspended, nothing at the sink after 1.5 s); resume delivers all 30,
    each once;
  - suspend in the middle of a slow flow (CLI, sink replies after 100 ms):
    deliveries stop once the transactions in flight end (the count stays
    put for 1.5 s), delivered + waiting = all; resume (CLI) delivers the
    rest, each message exactly once;
  - retry now (API and CLI): recipients deferred by a 451 with
    next_attempt 30 s away go at once after `queue retry`, at their second
    attempt; while their domain is suspended a retry makes them ready but
    not delivered, and resume delivers them;
  - purge a domain, drop (API): every waiting recipient of the domain,
    queued and deferred, becomes bounced with "purged ... (dropped, no
    DSN)" as last response, no DSN appears, the message's recipient at
    another domain is delivered, and nothing of the domain is delivered
    after resume;
  - purge a domain with bounce (CLI --bounce): bounced, and one DSN per
    message in the mailbox naming every purged recipient (Action: failed,
    Status 5.0.0, the purge as diagnostic), also for deferred recipients
    of a destination that refuses connections (dead.test);
  - purge one message (DELETE /v1/messages/{id} and `queue purge ID`,
    with and without bounce): only that message's recipients are final;
    the domain's other mail is delivered after resume.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import email
import email.policy
import time
from collections import Counter

from harness import (Cases, ClosedPort, SLOW, TestEnv, api_domain, api_status, api_submit_batch,
                     bounce_list, bounces_for, check, free_port, iso_epoch, log, raise_failures,
                     ringpost_cli, run_cases, run_test, saved_mail, stop_clean, wait_for)

SENDER = "admin@origin.test"

cases = Cases()


class Ctx:
    pass


def msgs(to_of, n, tag):
    """n messages; to_of(i) gives message i's recipients."""
    return [{"from": SENDER, "to": to_of(i), "subject": f"{tag} {i}", "text": f"{tag} {i}\n",
             "headers": {"X-Test-Id": f"{tag}-{i}"}} for i in range(n)]


def cli_ok(x, argv, *words):
    p = ringpost_cli(x.d, argv)
    out = p.stdout.decode(errors="replace")
    check(p.returncode == 0, f"ringpost {' '.join(argv)}: exit {p.returncode}: "
          f"{p.stderr.decode(errors='replace').strip()}")
    for w in words:
        check(w in out, f"ringpost {' '.join(argv)} printed {out!r}, without {w!r}")
    return out


def admin(x, domain, action, query=""):
    r = x.d.api("POST", f"/v1/queue/{domain}/{action}{query}")
    check(r.status == 200, f"POST /v1/queue/{domain}/{action}{query}: HTTP {r.status}: "
          f"{r.body[:200]!r}")
    j = r.json()
    check(j.get("domain") == domain and j.get("action") == action,
          f"{action} {domain}: answer {j}")
    return j


def states(x, mid):
    return {r["email"]: r["state"] for r in api_status(x.d, mid)["recipients"]}


def wait_all(x, ids, want, timeout=20, only=None):
    """Every recipient (of domain only, if given) of every id in state want."""
    def done():
        for mid in ids:
            for addr, st in states(x, mid).items():
                if only and not addr.endswith("@" + only):
                    continue
                if st != want:
                    return False
        return True
    wait_for(done, timeout, f"{len(ids)} messages' recipients {want}", interval=0.1)


def tags_at(directory, prefix):
    """Counter of X-Test-Id values starting with prefix among saved messages."""
    return Counter(t for t in (m.header("X-Test-Id") for m in saved_mail(directory))
                   if t and t.startswith(prefix + "-"))


def exactly_once(directory, prefix, n, what):
    got = tags_at(directory, prefix)
    missing = [i for i in range(n) if got[f"{prefix}-{i}"] == 0]
    twice = {t: c for t, c in got.items() if c > 1}
    check(not missing and not twice and sum(got.values()) == n,
          f"{what}: missing {missing[:10]} ({len(missing)}), more than once {twice}")


# ---- suspend / resume ----------------------------------------------------------

@cases.add
def suspend_before_mail_then_resume(x):
    j = admin(x, "susp.test", "suspend")
    ids = api_submit_batch(x.d, msgs(lambda i: [f"u{i}@susp.test"], 30, "susp"))
    time.sleep(1.5 * SLOW)
    check(x.sink.messages("susp.test") == 0, "mail of a suspended domain was delivered")
    for mid in ids:
        check(states(x, mid) == {f"u{ids.index(mid)}@susp.test": "queued"},
              f"{mid} while suspended: {states(x, mid)}")
    ds = api_domain(x.d, "susp.test")
    check(ds["suspended"] is True and ds["queued"] == 30 and ds["in_flight"] == 0,
          f"stats while suspended: {ds}")
    j = admin(x, "susp.test", "resume")
    check(j["recipients"] == 30, f"resume answer {j}")
    wait_all(x, ids, "delivered")
    exactly_once(x.sink_dir, "susp", 30, "susp.test after resume")
    ds = api_domain(x.d, "susp.test")
    check(ds["suspended"] is False and ds["queued"] == 0 and ds["delivered"] == 30,
          f"stats after resume: {ds}")


@cases.add
def suspend_mid_flow_then_resume_cli(x):
    n = 60
    ids = api_submit_batch(x.d, msgs(lambda i: [f"u{i}@flow.test"], n, "flow"))
    wait_for(lambda: x.slow.messages("flow.test") >= 10, 10, "flow.test's first 10 messages")
    cli_ok(x, ["queue", "suspend", "flow.test"], "flow.test", "suspend")
    # Transactions in flight end (one round trip each), then nothing.
    time.sleep(0.5 * SLOW)
    c1 = x.slow.messages("flow.test")
    time.sleep(1.5 * SLOW)
    c2 = x.slow.messages("flow.test")
    log(f"flow.test: suspended at {c1} of {n}")
    check(c2 == c1, f"flow.test: {c2 - c1} messages delivered while suspended")
    check(c1 < n, f"flow.test: all {n} delivered before the suspend took effect")
    ds = api_domain(x.d, "flow.test")
    check(ds["suspended"] is True and ds["delivered"] == c1 and
          ds["queued"] + ds["deferred"] == n - c1 and ds["in_flight"] == 0,
          f"flow.test stats while suspended ({c1} at the sink): {ds}")
    out = cli_ok(x, ["queue", "list"])
    check("flow.test" in out and "suspended" in out, f"queue list: {out!r}")
    cli_ok(x, ["queue", "resume", "flow.test"], "resume", f"{n - c1} recipients")
    wait_all(x, ids, "delivered", timeout=30)
    exactly_once(x.slow_dir, "flow", n, "flow.test after suspend and resume")


# ---- retry now -------------------------------------------------------------------

def wait_deferred(x, ids, timeout=15):
    wait_all(x, ids, "deferred", timeout)
    for mid in ids:
        for rc in api_status(x.d, mid)["recipients"]:
            check(rc["attempts"] == 1 and "451" in (rc["last_response"] or ""),
                  f"deferred recipient {rc}")
            due = iso_epoch(rc["next_attempt"])
            check(due - time.time() > 20, f"next_attempt {rc['next_attempt']} is not ~30 s away")


@cases.add
def retry_now(x):
    # API: first attempt 451 (soft sink: 451 then 250 per address).
    ids = api_submit_batch(x.d, msgs(lambda i: [f"a{i}@soft.test"], 5, "retry-api"))
    wait_deferred(x, ids)
    t0 = time.monotonic()
    j = admin(x, "soft.test", "retry")
    check(j["recipients"] == 5, f"retry answer {j}")
    wait_all(x, ids, "delivered", timeout=5)
    log(f"soft.test: delivered {time.monotonic() - t0:.2f}s after the retry")
    for mid in ids:
        rc = api_status(x.d, mid)["recipients"][0]
        check(rc["attempts"] == 2, f"after retry now: {rc}")
    # CLI, and with the domain suspended: ready, not delivered, until resume.
    ids = api_submit_batch(x.d, msgs(lambda i: [f"b{i}@soft.test"], 5, "retry-cli"))
    wait_deferred(x, ids)
    cli_ok(x, ["queue", "suspend", "soft.test"])
    cli_ok(x, ["queue", "retry", "soft.test"], "retry", "5 recipients")
    time.sleep(1.0 * SLOW)
    for mid in ids:
        check(list(states(x, mid).values()) == ["deferred"] or
              list(states(x, mid).values()) == ["queued"],
              f"retried while suspended: {states(x, mid)}")
    ds = api_domain(x.d, "soft.test")
    check(ds["queued"] == 5 and ds["deferred"] == 0, f"soft.test after retry while suspended: {ds}")
    cli_ok(x, ["queue", "resume", "soft.test"], "5 recipients")
    wait_all(x, ids, "delivered", timeout=5)
    exactly_once(x.soft_dir, "retry-api", 5, "soft.test retry-api")
    exactly_once(x.soft_dir, "retry-cli", 5, "soft.test retry-cli")


# ---- purge -------------------------------------------------------------------------

def check_purged(x, mid, addrs, dropped):
    for rc in api_status(x.d, mid)["recipients"]:
        if rc["email"] not in addrs:
            continue
        check(rc["state"] == "bounced", f"purged recipient {rc}")
        resp = rc["last_response"] or ""
        check("purged" in resp and (("no DSN" in resp) == dropped),
              f"purged ({'drop' if dropped else 'bounce'}) recipient's last_response {resp!r}")
        check(rc["next_attempt"] is None, f"purged recipient has a next attempt: {rc}")


@cases.add
def purge_domain_drop(x):
    n_bounces = len(bounce_list(x.d))
    admin(x, "gone.test", "suspend")
    # 8 messages: one also to keep.test; two with two gone.test recipients.
    def to(i):
        t = [f"g{i}@gone.test"]
        if i < 2:
            t.append(f"g{i}b@gone.test")
        if i == 0:
            t.append("k0@keep.test")
        return t
    ids = api_submit_batch(x.d, msgs(to, 8, "gone"))
    wait_for(lambda: states(x, ids[0]).get("k0@keep.test") == "delivered", 10,
             "keep.test's copy delivered")
    j = admin(x, "gone.test", "purge")
    check(j["recipients"] == 10, f"purge answer {j} (10 recipients wait)")
    wait_all(x, ids, "bounced", only="gone.test", timeout=10)
    for i, mid in enumerate(ids):
        check_purged(x, mid, [a for a in to(i) if a.endswith("@gone.test")], dropped=True)
    check(states(x, ids[0])["k0@keep.test"] == "delivered", f"keep.test: {states(x, ids[0])}")
    ds = api_domain(x.d, "gone.test")
    check(ds["queued"] == 0 and ds["deferred"] == 0 and ds["bounced"] == 10,
          f"gone.test stats after purge: {ds}")
    admin(x, "gone.test", "resume")
    time.sleep(1.0 * SLOW)
    check(x.sink.messages("gone.test") == 0, "purged mail was delivered after resume")
    check(len(bounce_list(x.d)) == n_bounces, "a drop purge made DSNs")


def dsn_recipients(raw):
    m = email.message_from_bytes(raw, policy=email.policy.compat32)
    report = [p for p in m.walk() if p.get_content_type() == "message/delivery-status"]
    check(report, "a DSN without a message/delivery-status part")
    groups = [{k.lower(): v for k, v in g.items()} for g in report[0].get_payload()]
    return groups[0], groups[1:]


@cases.add
def purge_domain_bounce_cli(x):
    # Queued (suspended) mail, and deferred mail of a refusing destination.
    cli_ok(x, ["queue", "suspend", "pb.test"])
    ids = api_submit_batch(x.d, msgs(lambda i: [f"p{i}@pb.test", f"p{i}x@pb.test"], 4, "pb"))
    dead = api_submit_batch(x.d, msgs(lambda i: [f"d{i}@dead.test"], 3, "dead"))
    # Refused, then held: the first is deferred by its attempt; any that
    # arrived after the refusal wait for the hold without an attempt.
    wait_for(lambda: (api_domain(x.d, "dead.test") or {}).get("deferred") == 3, 10,
             "dead.test's 3 recipients deferred")
    n_before = len(bounce_list(x.d))
    cli_ok(x, ["queue", "purge", "pb.test", "--bounce"], "purged 8 recipients", "DSN")
    cli_ok(x, ["queue", "purge", "dead.test", "--bounce"], "purged 3 recipients", "DSN")
    wait_all(x, ids + dead, "bounced", timeout=10)
    for i, mid in enumerate(ids):
        check_purged(x, mid, [f"p{i}@pb.test", f"p{i}x@pb.test"], dropped=False)
    for i, mid in enumerate(dead):
        check_purged(x, mid, [f"d{i}@dead.test"], dropped=False)
    # One DSN per message, naming each of its purged recipients.
    wait_for(lambda: len(bounce_list(x.d)) >= n_before + 7, 10, "7 DSNs (4 + 3 messages)")
    time.sleep(0.5)
    check(len(bounce_list(x.d)) == n_before + 7,
          f"{len(bounce_list(x.d)) - n_before} DSNs for 7 purged messages")
    for i in range(4):
        dsns = bounces_for(x.d, f"p{i}@pb.test")
        check(len(dsns) == 1, f"{len(dsns)} DSNs for p{i}@pb.test")
        pm, prs = dsn_recipients(dsns[0])
        check(sorted(r["final-recipient"] for r in prs) ==
              sorted([f"rfc822; p{i}@pb.test", f"rfc822; p{i}x@pb.test"]),
              f"DSN for pb-{i} names {[r.get('final-recipient') for r in prs]}")
        for r in prs:
            check(r.get("action") == "failed" and r.get("status") == "5.0.0" and
                  "purged by the administrator" in r.get("diagnostic-code", ""),
                  f"purge DSN recipient fields {r}")
    for i in range(3):
        dsns = bounces_for(x.d, f"d{i}@dead.test")
        check(len(dsns) == 1, f"{len(dsns)} DSNs for d{i}@dead.test")
        _, prs = dsn_recipients(dsns[0])
        check(prs[0].get("status") == "5.0.0" and "purged" in prs[0].get("diagnostic-code", ""),
              f"dead.test purge DSN {prs[0]}")
    cli_ok(x, ["queue", "resume", "pb.test"])
    time.sleep(1.0 * SLOW)
    check(x.sink.messages("pb.test") == 0, "purged pb.test mail was delivered after resume")


@cases.add
def purge_one_message(x):
    admin(x, "one.test", "suspend")
    ids = api_submit_batch(x.d, msgs(lambda i: [f"o{i}@one.test", f"o{i}x@one.test"], 5, "one"))
    n_before = len(bounce_list(x.d))
    # API, drop: only message 0.
    r = x.d.api("DELETE", f"/v1/messages/{ids[0]}")
    check(r.status == 200 and r.json().get("recipients") == 2, f"DELETE {ids[0]}: {r!r}")
    # API, bounce: message 1.
    r = x.d.api("DELETE", f"/v1/messages/{ids[1]}?mode=bounce")
    check(r.status == 200 and r.json().get("recipients") == 2, f"DELETE {ids[1]}?mode=bounce: "
          f"{r!r}")
    # CLI, drop and bounce: messages 2 and 3.
    cli_ok(x, ["queue", "purge", ids[2]], "purged 2 recipients", "dropped")
    cli_ok(x, ["queue", "purge", ids[3], "--bounce"], "purged 2 recipients", "DSN")
    for k, dropped in ((0, True), (1, False), (2, True), (3, False)):
        wait_all(x, [ids[k]], "bounced", timeout=10)
        check_purged(x, ids[k], [f"o{k}@one.test", f"o{k}x@one.test"], dropped=dropped)
    check(set(states(x, ids[4]).values()) == {"queued"}, f"message 4: {states(x, ids[4])}")
    wait_for(lambda: len(bounce_list(x.d)) >= n_before + 2, 10, "2 DSNs (messages 1 and 3)")
    time.sleep(0.5)
    check(len(bounce_list(x.d)) == n_before + 2,
          f"{len(bounce_list(x.d)) - n_before} DSNs, expected 2 (messages 1 and 3)")
    for k in (1, 3):
        check(len(bounces_for(x.d, f"o{k}@one.test")) == 1, f"no DSN for message {k}")
    for k in (0, 2):
        check(not bounces_for(x.d, f"o{k}@one.test"), f"a DSN for dropped message {k}")
    # The rest of the domain goes after resume; the purged never.
    admin(x, "one.test", "resume")
    wait_all(x, [ids[4]], "delivered", timeout=10)
    time.sleep(0.5)
    got = tags_at(x.sink_dir, "one")
    check(got == Counter({"one-4": 1}), f"one.test at the sink: {dict(got)}")
    # Purging it again finds nothing waiting.
    r = x.d.api("DELETE", f"/v1/messages/{ids[0]}")
    check(r.status == 200 and r.json().get("recipients") == 0, f"second DELETE: {r!r}")


def main():
    with TestEnv("sched_admin") as env:
        x = Ctx()
        x.env = env
        p_sink, p_slow, p_soft = free_port(), free_port(), free_port()
        x.sink_dir, x.slow_dir, x.soft_dir = (env.dir / n for n in ("sink-saved", "slow-saved",
                                                                    "soft-saved"))
        x.sink = env.fast_sink("sink", [f"127.0.0.1:{p_sink}"], ["--save", str(x.sink_dir)])
        x.slow = env.fast_sink("slow", [f"127.0.0.1:{p_slow}"],
                               ["--save", str(x.slow_dir), "--reply-delay", "100"])
        x.soft = env.fast_sink("soft", [f"127.0.0.1:{p_soft}"],
                               ["--save", str(x.soft_dir), "--rcpt-script", "451,250"])
        x.dead = ClosedPort()
        sink = f"127.0.0.1:{p_sink}"
        try:
            x.d = env.daemon(routes={"susp.test": sink, "keep.test": sink, "gone.test": sink,
                                     "pb.test": sink, "one.test": sink,
                                     "flow.test": f"127.0.0.1:{p_slow}",
                                     "soft.test": f"127.0.0.1:{p_soft}",
                                     "dead.test": x.dead.addr},
                             with_api=True, queue={"retry": "30s", "max_age": "1h"},
                             domains={"flow.test": {"max_connections": 2}})
            x.d.start()
            failures = run_cases(cases, x, [x.d])
            stop_clean(x.d, failures)
        finally:
            x.dead.close()
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
