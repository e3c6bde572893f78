"""test_warmup.py - [domain] warmup as a receiver sees it (issue 17 part 3):
messages a day per source address and destination domain, the rest
waiting in the queue, never bounced, the counts kept across a restart.

One receiver (Python's smtpd, receiver.py: it records each message's peer
address) serves three domains:
  - warm.test: source = 127.0.0.2, 127.0.0.3 and warmup = 3/d, 6/d; 10
    messages: exactly 3 arrive from each address (6), none more in the
    next seconds; the other 4 stay queued (GET /v1/messages says queued,
    /v1/stats counts 4 queued and none bounced); the domain's /v1/stats
    entry waits until the next UTC midnight ("backoff_until") and says why
    ("backoff_reason" names the warm-up); the log says "dest warm.test
    waits"; /metrics counts ringpost_warmup_waits_total;
  - one.test: no source (the kernel's choice, 127.0.0.1) and warmup = 2/d:
    2 of 5 arrive;
  - cold.test: no warmup: all 5 arrive (the cap is per domain);
  - GET /v1/warmup lists the three counters (source null for one.test),
    each on day 1 of its schedule with its cap and today's count, paged
    with limit and after; a bad limit (0, 1001, abc, -1, empty) is
    refused with 400 bad_field naming it, a hostile after (too long, NUL,
    CR LF, bytes that are not UTF-8) gets a page; `ringpost warmup`
    prints a line each;
  - a message with two recipients at warm.test, sent when the cap is
    reached, waits too: deferred until the next UTC midnight, no attempt
    counted (a message is one transaction, whatever its recipients);
  - after SIGTERM and a new start on the same spool: nothing more arrives
    for warm.test or one.test (the day's counts were kept), and
    warm.test's entry waits again with the same reason;
  - bad schedules ("50", "0/d", "50/d,", "50/w") stop check-config with
    exit 78 and one line naming FILE:LINE and warmup; a good one passes.
Near a UTC midnight the test first waits for it (the day must not change
in the middle). Each daemon exits 0 on SIGTERM with a clean log.
"""

import subprocess
import time

from harness import (EX_CONFIG, SLOW, Cases, TestEnv, api_domain, api_send, api_status, check,
                     config_text, free_port, iso_epoch, log, raise_failures, ringpost_bin, run_cases,
                     run_test, stop_clean, wait_for)

SENDER = "warm@origin.test"
WARM, ONE, COLD = "warm.test", "one.test", "cold.test"
WARM_SCHEDULE = "3/d, 6/d"
DOMAINS = {WARM: {"source": "127.0.0.2, 127.0.0.3", "warmup": WARM_SCHEDULE},
           ONE: {"warmup": "2/d"}}
SETTLE = 3.0  # seconds without new mail that count as "no more arrives"

cases = Cases()


class Ctx:
    pass


def arrived(x, domain):
    """Messages the receiver got for domain: a list of (peer, rcpts)."""
    return [(m.peer, m.rcpts) for m in x.r.messages()
            if any(r.endswith("@" + domain) for r in m.rcpts)]


def settle(x, want):
    """Wait until the receiver holds want[domain] messages for each domain,
    then SETTLE seconds more; the final counts."""
    wait_for(lambda: all(len(arrived(x, d)) >= n for d, n in want.items()), 20,
             f"messages {want}", interval=0.1)
    time.sleep(SETTLE * SLOW)
    return {d: len(arrived(x, d)) for d in want}


def next_midnight(now):
    return (int(now) // 86400 + 1) * 86400


@cases.add
def caps_per_source_and_domain(x):
    x.warm_ids = api_send(x.d, SENDER, [f"w@{WARM}"], "warm", n=10)
    x.one_ids = api_send(x.d, SENDER, [f"o@{ONE}"], "one", n=5)
    api_send(x.d, SENDER, [f"c@{COLD}"], "cold", n=5)
    got = settle(x, {WARM: 6, ONE: 2, COLD: 5})
    check(got == {WARM: 6, ONE: 2, COLD: 5}, f"arrived {got}: expected 6 (3 from each source), "
          f"2 and 5")
    peers = sorted(p for p, _ in arrived(x, WARM))
    check(peers == ["127.0.0.2"] * 3 + ["127.0.0.3"] * 3, f"warm.test came from {peers}")
    check({p for p, _ in arrived(x, ONE)} == {"127.0.0.1"}, f"one.test from {arrived(x, ONE)}")
    states = [api_status(x.d, m)["recipients"][0]["state"] for m in x.warm_ids]
    check(sorted(states) == ["delivered"] * 6 + ["queued"] * 4, f"warm.test states {states}")
    e = api_domain(x.d, WARM)
    check(e and e["queued"] == 4 and e["bounced"] == 0, f"warm.test stats {e}")
    x.reason = e.get("backoff_reason") or ""
    check("warm-up" in x.reason, f"warm.test backoff_reason {e.get('backoff_reason')!r}")
    until = iso_epoch(e.get("backoff_until"))
    check(until == next_midnight(time.time()), f"warm.test waits until "
          f"{e.get('backoff_until')}, not the next UTC midnight")
    one = api_domain(x.d, ONE)
    check(one and one["queued"] == 3 and "warm-up" in (one.get("backoff_reason") or ""),
          f"one.test stats {one}")
    check(f"dest {WARM} waits" in x.d.log(), "no 'dest warm.test waits' log line")
    metrics = x.d.api("GET", "/metrics").body.decode()
    waits = [ln for ln in metrics.splitlines() if ln.startswith("ringpost_warmup_waits_total ")]
    check(waits and int(waits[0].split()[1]) >= 2, f"/metrics: {waits}")
    log(f"     warm.test: 3 from each source, 4 queued; reason {x.reason!r}")


@cases.add
def api_and_cli_show_the_counters(x):
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def listing():
        r = x.d.api("GET", "/v1/warmup")
        check(r.status == 200, f"GET /v1/warmup: HTTP {r.status}: {r.body[:200]!r}")
        doc = r.json()
        got = {(e["source"], e["domain"]): e for e in doc["warmup"]}
        sent = {k: e["sent"] for k, e in got.items()}
        # Counters reach the spool within a second of the last message.
        want = {("127.0.0.2", WARM): 3, ("127.0.0.3", WARM): 3, (None, ONE): 2}
        return (doc, got) if sent == want else None
    doc, got = wait_for(listing, 10, "/v1/warmup with every counter", interval=0.2)
    check(doc["total"] == 3, f"/v1/warmup total {doc['total']}")
    for (src, dom), e in got.items():
        cap = 3 if dom == WARM else 2
        check(e["day"] == 1 and e["days"] == (2 if dom == WARM else 1) and e["cap"] == cap and
              e["since"].startswith(today), f"/v1/warmup entry {e}")
    page = x.d.api("GET", "/v1/warmup?limit=2").json()
    check(len(page["warmup"]) == 2 and page.get("next"), f"page 1: {page}")
    rest = x.d.api("GET", "/v1/warmup?limit=2&after=" + page["next"].replace(" ", "%20")).json()
    check(len(rest["warmup"]) == 1 and "next" not in rest, f"page 2: {rest}")
    for bad in ("0", "1001", "abc", "-1", ""):
        r = x.d.api("GET", f"/v1/warmup?limit={bad}")
        check(r.status == 400 and r.json()["error"]["code"] == "bad_field" and
              "limit" in r.json()["error"]["message"], f"limit={bad!r}: HTTP {r.status} {r.body!r}")
    # A hostile `after` (too long, NUL and non-UTF-8 bytes): a page all the same.
    r = x.d.api("GET", "/v1/warmup?after=" + "%00%FF%0D%0A" * 600)
    check(r.status == 200 and isinstance(r.json()["warmup"], list),
          f"a garbage after: HTTP {r.status} {r.body[:200]!r}")
    p = subprocess.run([ringpost_bin(), "warmup", "-c", str(x.d.config_path)],
                       capture_output=True, timeout=20 * SLOW)
    lines = p.stdout.decode().splitlines()
    want = [f"*\t{ONE}\tsince {today}\tday 1 of 1\tsent 2 of 2 today",
            f"127.0.0.2\t{WARM}\tsince {today}\tday 1 of 2\tsent 3 of 3 today",
            f"127.0.0.3\t{WARM}\tsince {today}\tday 1 of 2\tsent 3 of 3 today"]
    check(p.returncode == 0 and lines == want, f"ringpost warmup: exit {p.returncode}, "
          f"{lines}, {p.stderr[:200]!r}")


@cases.add
def a_message_is_one_transaction(x):
    mid = api_send(x.d, SENDER, [f"a@{WARM}", f"b@{WARM}"], "two")[0]
    time.sleep(SETTLE * SLOW)
    rc = api_status(x.d, mid)["recipients"]
    # Arriving while its domain waits, it waits as deferred until then
    # (not an attempt: no reply, attempts 0).
    check([r["state"] for r in rc] == ["deferred", "deferred"] and
          all(r["attempts"] == 0 and iso_epoch(r["next_attempt"]) == next_midnight(time.time())
              for r in rc), f"a two-recipient message after the cap: {rc}")
    check(len(arrived(x, WARM)) == 6, f"warm.test got {len(arrived(x, WARM))} messages")


@cases.add
def counts_survive_a_restart(x):
    stop_clean(x.d, x.failures)
    x.d.start()
    time.sleep(SETTLE * SLOW)
    got = {d: len(arrived(x, d)) for d in (WARM, ONE)}
    check(got == {WARM: 6, ONE: 2}, f"after a restart: {got} (the day's counts were lost)")
    e = wait_for(lambda: (api_domain(x.d, WARM) or {}).get("backoff_reason") and
                 api_domain(x.d, WARM), 10, "warm.test waiting again", interval=0.2)
    check(e["queued"] + e["deferred"] == 6 and e["bounced"] == 0 and e["delivered"] == 0,
          f"warm.test after the restart: {e}")
    check(e["backoff_reason"] == x.reason, f"reason {e['backoff_reason']!r}")


def test_bad_schedules(env):
    for bad in ("50", "0/d", "50/d,", "50/w", "50/d 100/d"):
        text = config_text(submission_port=free_port(), routes={WARM: "127.0.0.1:9"},
                           data_dir=str(env.dir / "never-created"),
                           domains={WARM: {"warmup": bad}})
        path = env.write_config(text, "bad.conf")
        line = text.splitlines().index(f"warmup = {bad}") + 1
        p = subprocess.run([ringpost_bin(), "check-config", "-c", str(path)],
                           capture_output=True, timeout=20 * SLOW)
        errs = [ln for ln in p.stderr.decode(errors="replace").splitlines() if ln.strip()]
        check(p.returncode == EX_CONFIG and len(errs) == 1 and f"{path}:{line}: " in errs[0] and
              "warmup" in errs[0], f"warmup = {bad}: exit {p.returncode}, {errs}")
    text = config_text(submission_port=free_port(), routes={WARM: "127.0.0.1:9"},
                       data_dir=str(env.dir / "never-created"),
                       domains={WARM: {"warmup": "50/d, 100/d,500/d"}})
    path = env.write_config(text, "good.conf")
    p = subprocess.run([ringpost_bin(), "check-config", "-c", str(path)], capture_output=True,
                       timeout=20 * SLOW)
    check(p.returncode == 0, f"a good schedule: exit {p.returncode}, {p.stderr[:300]!r}")
    log(f"ok   bad schedules refused: {errs[0]}")


def main():
    left = next_midnight(time.time()) - time.time()
    if left < 120:
        log(f"waiting {left:.0f}s for the UTC day to change")
        time.sleep(left + 1)
    with TestEnv("warmup") as env:
        x = Ctx()
        x.failures = []
        x.r = env.smtpd("r")
        x.d = env.daemon(routes={WARM: x.r.addr, ONE: x.r.addr, COLD: x.r.addr},
                         domains=DOMAINS, with_api=True)
        x.d.start()
        x.failures += run_cases(cases, x, [x.d])
        stop_clean(x.d, x.failures)
        try:
            test_bad_schedules(env)
        except Exception as e:
            x.failures.append(f"test_bad_schedules: {e}")
        raise_failures(x.failures)


if __name__ == "__main__":
    run_test(main)
