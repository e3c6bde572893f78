"""test_chaos.py - every recipient ends delivered or bounced exactly once,
whatever the next hop does wrong.

Messages go in through POST /v1/messages/batch (1 to 3 recipients each,
every address unique and named after its message's X-Test-Id) while
delivery runs. chaos.test's next hop is one ringpost-sink with all its
faults at once: connect421, silence and tarpit per session, rcpt451 and
rcpt550 per recipient, data451, drop (mid-DATA) and drop250 (the message
taken whole, saved, then the connection closed instead of the 250) per
message. One message in 50 also has a recipient at slow.test, whose sink
answers 451 to every RCPT: those bounce when [queue] max_age runs out
(4.4.7). [queue] retry = 1s, 2s; sessions carry few messages so that the
per-session faults hit often.

The ledger (harness/ledger.py) puts three sources side by side: the
sink's saved copies (which it acknowledged, which it withheld the 250
for), GET /v1/messages/{id} for every message, and the DSNs in the bounce
mailbox. Checks: every recipient is delivered or bounced (none left
queued or deferred); a delivered one has exactly one acknowledged copy
and no DSN; a bounced one has no acknowledged copy and exactly one DSN
(a recipient refused with 550 is never delivered); every further copy is
one the sink withheld the 250 for (an honest at-least-once duplicate,
counted and reported) and nothing else; every copy carries its own
message's test id; every slow.test recipient bounced; every 550 reply
ringpost read (its log) bounced its recipient; most chaos.test mail was
delivered (not all bounced by max_age); each fault fired.

Size: RINGPOST_CHAOS_MESSAGES, or RINGPOST_CHAOS_FULL=1 for 100,000
messages; 3,000 by default, 2,000 under ASan.
"""

import os
import random
import re
import threading
import time

from harness import SLOW, TestEnv, TestFailure, check, free_port, log, run_test
from harness.ledger import (Ledger, SinkCopies, api_states, dsn_recipients, report, sizes,
                            wait_queue_empty)

N = int(os.environ.get("RINGPOST_CHAOS_MESSAGES") or sizes(100_000, 3_000, 2_000))
BATCH = 500
SENDER = "chaos@origin.test"
BIG = N > 20_000
# A silent session holds one of ringpost's connection slots for the 300 s
# greeting timeout (RFC 5321 4.5.3.2): few of them in a long run.
FAULTS = ("connect421=0.04,rcpt451=0.03,rcpt550=0.01,data451=0.02,drop=0.01,drop250=0.005,"
          f"tarpit=0.05:150,silence={0.004 if BIG else 0.04}")
# Seconds: slow.test mail bounces after this. Every 421 backs the whole
# destination off, so a backlog waits too; too short an age turns the run
# into max_age bounces (still exactly once, but delivery barely tested).
MAX_AGE = max(30, N // 250)
MSGS_PER_CONN = 25 if BIG else 10  # new sessions often: connect421/silence/tarpit hit
TAG_RE = rb"X-Test-Id: (chaos-\d+)"


def recipients(k):
    """Message k's recipients: 1 to 3 at chaos.test, one in 50 adds slow.test."""
    n = 1 + (k % 10 >= 7) + (k % 10 == 9)
    out = [f"c{k}r{j}@chaos.test" for j in range(n)]
    if k % 50 == 25:
        out.append(f"c{k}s@slow.test")
    return out


def message(k, rnd):
    tid = f"chaos-{k}"
    lines = "".join(f"{tid} line {i}: {'abcdefghij' * rnd.randint(1, 7)}\n"
                    for i in range(rnd.randint(5, 30)))
    return {"from": SENDER, "to": recipients(k), "subject": f"chaos {k}",
            "headers": {"X-Test-Id": tid}, "text": lines}


def submit_all(d, out):
    """Every message in batches; out["ids"] collects the message ids."""
    rnd = random.Random(13)
    for start in range(0, N, BATCH):
        part = [message(k, rnd) for k in range(start, min(N, start + BATCH))]
        for attempt in range(20):
            r = d.api("POST", "/v1/messages/batch", {"messages": part}, timeout=120)
            if r.status == 202:
                break
            check(r.status == 503, f"batch at {start}: HTTP {r.status}: {r.body[:200]!r}")
            time.sleep(0.5)
        check(r.status == 202, f"batch at {start}: HTTP {r.status} 20 times")
        res = r.json()["results"]
        check(len(res) == len(part), f"batch at {start}: {len(res)} results")
        for e in res:
            check(e.get("id"), f"batch entry refused: {e}")
            out["ids"].append(e["id"])


def main():
    with TestEnv("chaos") as env:
        cp, sp = free_port(), free_port()
        saved = env.dir / "saved"
        sink = env.fast_sink("chaos", [f"127.0.0.1:{cp}"],
                             ["--threads", "2", "--save", str(saved), "--fault", FAULTS,
                              "--seed", "13"])
        env.fast_sink("slow", [f"127.0.0.1:{sp}"], ["--rcpt-script", "451"])
        d = env.daemon(routes={"chaos.test": f"127.0.0.1:{cp}", "slow.test": f"127.0.0.1:{sp}"},
                       with_api=True,
                       queue={"retry": "1s, 2s", "max_age": f"{MAX_AGE}s"},
                       domain_defaults={"max_connections": 50,
                                        "max_messages_per_connection": MSGS_PER_CONN}).start()
        log(f"{N} messages through a sink with {FAULTS}; max_age {MAX_AGE}s")
        t0 = time.monotonic()
        sub = {"ids": []}
        err = []

        def submitter():
            try:
                submit_all(d, sub)
            except Exception as e:  # re-raised in the main thread
                err.append(e)
        th = threading.Thread(target=submitter, daemon=True)
        th.start()
        th.join(timeout=600 * SLOW)
        check(not th.is_alive(), "submission did not finish")
        if err:
            raise err[0]
        t_sub = time.monotonic() - t0
        log(f"{N} messages accepted in {t_sub:.1f}s; waiting for every recipient to end")

        def progress(st):
            log(f"  queued {st.get('queued')} deferred {st.get('deferred')} in flight "
                f"{st.get('in_flight')} delivered {st.get('delivered')} bounced "
                f"{st.get('bounced')} ({time.monotonic() - t0:.0f}s)")
        wait_queue_empty(d, (MAX_AGE + 120 + N / 200) * SLOW, "every recipient final",
                         progress=progress)
        t_done = time.monotonic() - t0
        check(d.alive(), "the daemon died")

        want = [r for k in range(N) for r in recipients(k)]
        states = api_states(d, sub["ids"])
        dsns, ndsn = dsn_recipients(d)
        copies = SinkCopies(saved, TAG_RE)
        led = Ledger(want, states, copies, dsns)
        slow = [r for r in want if r.endswith("@slow.test")]
        problems = led.check(expect_bounced=slow)
        # Every copy carries its own message's id.
        for r, tags in copies.tags.items():
            m = re.match(r"^c(\d+)[rs]", r)
            if not m or tags != {f"chaos-{m.group(1)}"}:
                problems.append(f"{r}: copies carry test ids {sorted(map(str, tags))}")
        # A 550'd recipient is bounced with that reply, never delivered.
        n550 = sum(1 for r in want if states.get(r, ("",))[0] == "bounced"
                   and states[r][1].startswith("550"))
        n447 = sum(1 for r in slow if "4.4.7" in states.get(r, ("", ""))[1]
                   or "451" in states.get(r, ("", ""))[1])
        st = sink.stats()
        rej = st.get("rejected", {})
        fired = {"connect421": rej.get("421", 0), "rcpt451+data451": rej.get("451", 0),
                 "rcpt550": rej.get("550", 0), "drop": st.get("dropped", 0),
                 "drop250": st.get("dropped_250", 0), "silence": st.get("silenced", 0),
                 "tarpit": st.get("tarpitted", 0)}
        for what, k in fired.items():
            if not k:
                problems.append(f"the {what} fault never fired")
        # Every 550 that reached ringpost made its recipient bounced (the
        # sink's count may be higher: a 550 queued behind a drop or a
        # tarpit's held replies dies with the connection, unread).
        n550_log = 0
        with open(d.log_path, errors="replace") as f:
            for line in f:
                if " delivery id=" in line and 'reply="550' in line:
                    n550_log += 1
                    if "status=bounced" not in line:
                        problems.append(f"a 550 not bounced: {line.strip()[:200]}")
        chaos_rcpts = [r for r in want if r.endswith("@chaos.test")]
        ok = sum(1 for r in chaos_rcpts if states.get(r, ("",))[0] == "delivered")
        if ok < len(chaos_rcpts) // 2:
            problems.append(f"only {ok} of {len(chaos_rcpts)} chaos.test recipients delivered: "
                            f"the run degenerated into max_age bounces")
        n = led.counts
        report("chaos", {"messages": N, "recipients": len(want), "delivered": n["delivered"],
                         "bounced": n["bounced"], "bounced_550": n550, "550_replies_read": n550_log,
                         "bounced_max_age": n447, "duplicates": n["duplicates"],
                         "withheld_250": copies.withheld, "dsns": ndsn,
                         "lost": n[None] + n["queued"] + n["deferred"],
                         "faults": "/".join(f"{k}:{v}" for k, v in fired.items()),
                         "submit_s": f"{t_sub:.1f}", "elapsed_s": f"{t_done:.1f}"})
        if problems:
            raise_problems(problems)
        check(n550 > 0, "no recipient was bounced by a 550")
        log(led.summary())
        rc = d.stop(timeout=30)
        check(rc == 0, f"SIGTERM: exit status {rc}")
        d.check_log_clean()


def raise_problems(problems):
    raise TestFailure(f"{len(problems)} ledger problems:\n  " + "\n  ".join(problems[:30]))


if __name__ == "__main__":
    run_test(main)
