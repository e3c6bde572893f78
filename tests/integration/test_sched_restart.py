"""test_sched_restart.py - the scheduler across a stop and a start of the
daemon: retry state survives, and SIGTERM in the middle of deliveries
loses nothing. Each case has its own daemon, spool and sinks.

Cases:
  - restart in the middle of retries ([queue] retry = 3s, 8s; the sink
    answers each address 451, 451, 250): recipients at their first and at
    their second attempt are stopped (SIGTERM, exit 0) and started again;
    GET /v1/messages/{id} shows the same state, attempts, next_attempt,
    last_attempt and last_response before and after; each recipient's next
    attempt after the restart comes at the stored next_attempt (not at
    start-up, not later than a little slack), and each is delivered at its
    third attempt;
  - graceful stop, exactly once: SIGTERM while 10 sessions wait 300 ms for
    each reply of a 200-message run: exit 0 within seconds, no session
    abandoned (the transactions in flight finish), and after the restart
    every accepted message is at the sink exactly once (counted by
    Message-ID in the sink's --save files), every recipient delivered at
    attempt 1;
  - stop at the deadline, at least once: the sink takes each message at
    once but holds its 250 (--max-rate 1), so at SIGTERM about 18
    transactions wait for a reply and the 10 s stop grace runs out: exit 0,
    the log says how many sessions were abandoned; after a restart (routed
    to a fast sink) every message has arrived at least once, and only the
    abandoned transactions' messages arrived twice (at most one per
    abandoned session); an abandoned attempt is not counted as an attempt.
"""

import re
import time
from collections import Counter

from harness import (SANITIZE, SLOW, TestEnv, TestFailure, api_status, api_submit_batch, check,
                     free_port, iso_epoch, log, log_events, parse_kv, raise_failures, run_test,
                     saved_mail, wait_for)

SENDER = "restart@origin.test"
RETRY = (5.0, 10.0) if SANITIZE else (3.0, 8.0)
LATE = 1.0 * SLOW


def msgs(domain, n, tag, first=0):
    return [{"from": SENDER, "to": [f"{tag}{i}@{domain}"], "subject": f"{tag} {i}",
             "text": f"{tag} {i}\n", "headers": {"X-Test-Id": f"{tag}-{i}"}}
            for i in range(first, first + n)]


def rcpts(d, ids):
    """{email: recipient status} over the messages ids."""
    out = {}
    for mid in ids:
        for rc in api_status(d, mid)["recipients"]:
            out[rc["email"]] = rc
    return out


def attempts_logged(d, addr, since):
    """(time, fields) of each delivery attempt of addr logged after since."""
    out = []
    for t, line in log_events(d, rf" delivery id=\S+ rcpt=<{addr}> "):
        if t > since:
            out.append((t, parse_kv(line[line.find(" delivery id=") + 1:])))
    return out


def restart_keeps_retry_state(env):
    sp = free_port()
    env.fast_sink("soft", [f"127.0.0.1:{sp}"], ["--rcpt-script", "451,451,250"])
    d = env.daemon(name="retry", routes={"soft.test": f"127.0.0.1:{sp}"}, with_api=True,
                   queue={"retry": ", ".join(f"{r:g}s" for r in RETRY), "max_age": "1h"})
    d.start()
    # Batch A reaches its second attempt; batch B is submitted then and
    # reaches its first. A two-recipient message in each.
    a = api_submit_batch(d, msgs("soft.test", 3, "a") +
                         [{"from": SENDER, "to": ["a3@soft.test", "a4@soft.test"],
                           "subject": "a 3", "text": "a 3\n"}])
    wait_for(lambda: all(rc["attempts"] == 2 and rc["state"] == "deferred"
                         for rc in rcpts(d, a).values()), RETRY[0] * 1.1 + 5,
             "batch A at its second attempt")
    b = api_submit_batch(d, msgs("soft.test", 3, "b") +
                         [{"from": SENDER, "to": ["b3@soft.test", "b4@soft.test"],
                           "subject": "b 3", "text": "b 3\n"}])
    wait_for(lambda: all(rc["attempts"] == 1 and rc["state"] == "deferred"
                         for rc in rcpts(d, b).values()), 5, "batch B at its first attempt")
    before = rcpts(d, a + b)
    t_stop = time.time()
    rc = d.stop()
    check(rc == 0, f"SIGTERM exit status {rc}")
    soonest = min(iso_epoch(r["next_attempt"]) for r in before.values())
    d.start()
    t_up = time.time()
    log(f"restart took {t_up - t_stop:.2f}s; next attempt due in {soonest - t_up:.2f}s")
    check(t_up < soonest, f"the restart took {t_up - t_stop:.1f}s: past the next attempt, "
          f"nothing to compare")
    after = rcpts(d, a + b)
    for addr, r0 in before.items():
        r1 = after.get(addr)
        for k in ("state", "attempts", "next_attempt", "last_attempt", "last_response", "remote"):
            check(r1 and r1[k] == r0[k], f"{addr}: {k} {r0[k]!r} before the restart, "
                  f"{r1 and r1[k]!r} after")
    # Each recipient's next attempt comes when it was due, and the third
    # delivers.
    wait_for(lambda: all(r["state"] == "delivered" for r in rcpts(d, a + b).values()),
             RETRY[1] * 1.1 + RETRY[0] * 1.1 + 4 * LATE + 5, "every recipient delivered")
    for addr, r0 in before.items():
        due = iso_epoch(r0["next_attempt"])
        lines = attempts_logged(d, addr, t_stop)
        check(lines, f"{addr}: no attempt logged after the restart")
        t_next, f = lines[0]
        check(int(f["attempts"]) == r0["attempts"] + 1, f"{addr}: first attempt after the "
              f"restart is number {f['attempts']}, expected {r0['attempts'] + 1}")
        check(due - 0.002 <= t_next <= due + LATE, f"{addr}: tried {t_next - due:+.3f}s from "
              f"its stored next_attempt (allowed 0 to {LATE:.1f}s)")
        final = [f for _, f in lines if f["status"] == "delivered"]
        check(len(final) == 1 and final[0]["attempts"] == "3",
              f"{addr}: delivered at attempts {[f['attempts'] for f in final]}, expected 3")
    check(d.stop() == 0, "second SIGTERM: non-zero exit")
    d.check_log_clean()


def message_ids_at(*dirs):
    """Counter of Message-ID over the sinks' --save files, and {Message-ID: X-Test-Id}."""
    c, tags = Counter(), {}
    for directory in dirs:
        for m in saved_mail(directory):
            mid = m.header("Message-ID")
            check(mid, f"{m.path}: no Message-ID")
            c[mid] += 1
            tags[mid] = m.header("X-Test-Id")
    return c, tags


def graceful_stop_exactly_once(env):
    n = 200
    sp = free_port()
    saved = env.dir / "graceful-saved"
    sink = env.fast_sink("graceful", [f"127.0.0.1:{sp}"],
                         ["--reply-delay", "300", "--save", str(saved)])
    d = env.daemon(name="graceful", routes={"slow.test": f"127.0.0.1:{sp}"}, with_api=True,
                   domains={"slow.test": {"max_connections": 10}})
    d.start()
    ids = api_submit_batch(d, msgs("slow.test", n, "g"))
    wait_for(lambda: sink.messages("slow.test") >= 30, 20, "30 messages at the slow sink")
    t0 = time.monotonic()
    rc = d.stop()
    took = time.monotonic() - t0
    at_stop = sink.messages("slow.test")
    stopping = log_events(d, r"shard\d: stopping \(\d+ inbound, \d+ outbound")
    outbound = [int(re.search(r", (\d+) outbound", l).group(1)) for _, l in stopping]
    log(f"graceful: SIGTERM with {sum(outbound)} outbound sessions, exit {rc} in {took:.2f}s, "
        f"{at_stop} of {n} delivered")
    check(rc == 0, f"SIGTERM exit status {rc}")
    check(sum(outbound) > 0, f"no outbound session at SIGTERM ({[l for _, l in stopping]}): "
          f"the stop did not interrupt deliveries")
    check(not log_events(d, r"abandoning"), "sessions were abandoned in a graceful stop")
    check(took < 5 * SLOW, f"the stop took {took:.1f}s")
    check(at_stop < n, "everything was delivered before the stop")
    d.start()
    wait_for(lambda: sink.messages("slow.test") >= n, 30, f"all {n} messages after the restart")
    time.sleep(0.5)
    counts, tags = message_ids_at(saved)
    twice = {m: c for m, c in counts.items() if c > 1}
    check(not twice, f"graceful stop: {len(twice)} messages delivered twice: "
          f"{[tags[m] for m in twice][:10]}")
    want = {f"g-{i}" for i in range(n)}
    got = set(tags.values())
    check(got == want and len(counts) == n,
          f"graceful stop: missing {sorted(want - got)[:10]}, unexpected {sorted(got - want)[:10]}")
    for mid in ids:
        r = api_status(d, mid)["recipients"][0]
        check(r["state"] == "delivered" and r["attempts"] == 1, f"{mid}: {r}")
    check(d.stop() == 0, "second SIGTERM: non-zero exit")
    d.check_log_clean()


def stop_deadline_at_least_once(env):
    n = 60
    sp, fp = free_port(), free_port()
    held_dir, fast_dir = env.dir / "held-saved", env.dir / "fast-saved"
    held = env.fast_sink("held", [f"127.0.0.1:{sp}"], ["--max-rate", "1", "--save", str(held_dir)])
    fast = env.fast_sink("fast", [f"127.0.0.1:{fp}"], ["--save", str(fast_dir)])
    d = env.daemon(name="deadline", routes={"held.test": f"127.0.0.1:{sp}"}, with_api=True,
                   domains={"held.test": {"max_connections": 20}})
    d.start()
    ids = api_submit_batch(d, msgs("held.test", n, "h"))
    # 20 sessions each hand over a message; the sink releases one 250 a second.
    wait_for(lambda: held.messages("held.test") >= 20, 10, "20 messages taken by the held sink")
    time.sleep(1.0)
    t0 = time.monotonic()
    rc = d.stop(timeout=30)
    took = time.monotonic() - t0
    ab = log_events(d, r"abandoning \d+ outbound sessions")
    abandoned = sum(int(l.split("abandoning ")[1].split()[0]) for _, l in ab)
    log(f"deadline: exit {rc} after {took:.1f}s, {abandoned} sessions abandoned, "
        f"{held.messages('held.test')} messages at the held sink")
    check(rc == 0, f"SIGTERM exit status {rc} at the stop deadline")
    check(abandoned > 0, "no session was abandoned: the stop deadline was never reached")
    check(9 <= took <= 10 + 5 * SLOW, f"stop took {took:.1f}s (grace 10 s)")
    # The same spool, now routed to a fast sink.
    text = d.config_path
    conf = open(text).read().replace(f"route = 127.0.0.1:{sp}", f"route = 127.0.0.1:{fp}")
    open(text, "w").write(conf)
    d.start()
    total = lambda: held.messages("held.test") + fast.messages("held.test")
    wait_for(lambda: all(api_status(d, m)["recipients"][0]["state"] == "delivered" for m in ids),
             20, "every message delivered after the restart")
    time.sleep(0.5)
    counts, tags = message_ids_at(held_dir, fast_dir)
    want = {f"h-{i}" for i in range(n)}
    check(set(tags.values()) == want and len(counts) == n,
          f"deadline stop: missing {sorted(want - set(tags.values()))[:10]}")
    twice = {m: c for m, c in counts.items() if c > 1}
    log(f"deadline: {len(twice)} messages arrived twice (abandoned in flight), "
        f"{total()} arrivals for {n} messages")
    check(all(c == 2 for c in twice.values()), f"a message arrived more than twice: {twice}")
    check(len(twice) <= abandoned, f"{len(twice)} duplicates for {abandoned} abandoned sessions")
    # The duplicates are exactly the held sink's messages that were never
    # acknowledged: their first copy is at the held sink.
    held_counts, _ = message_ids_at(held_dir)
    check(all(held_counts[m] == 1 for m in twice), "a duplicate without a copy at the held sink")
    for mid in ids:
        r = api_status(d, mid)["recipients"][0]
        check(r["attempts"] == 1, f"{mid}: attempts {r['attempts']}: an abandoned attempt counted")
    check(d.stop() == 0, "second SIGTERM: non-zero exit")
    d.check_log_clean()


def main():
    failures = []
    for fn in (restart_keeps_retry_state, graceful_stop_exactly_once, stop_deadline_at_least_once):
        try:
            # A failure leaves the TestEnv with the exception: it prints the
            # daemon's log tail and keeps the directory.
            with TestEnv(f"sched_restart_{fn.__name__}") as env:
                fn(env)
            log(f"ok   {fn.__name__}")
        except TestFailure as e:
            failures.append(f"{fn.__name__}: {e}")
            log(f"FAIL {fn.__name__}: {e}")
    raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
