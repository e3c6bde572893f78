"""test_kill9_scale.py - a 250 or a 202 is a promise, across 20 kill -9.

Messages with unique test ids (X-Test-Id, and "X-End: ID" as the last
body line, so a copy cut short never counts) are submitted by several
concurrent clients at once: SMTP clients (half with MAIL/RCPT/DATA
pipelined, half with BDAT ... LAST in the same write) and an API client
posting batches, while ringpost delivers them to a ringpost-sink that
saves every copy. Delivery is held below the submission rate ([domain]
rate) so that acknowledged mail waits in the spool at the kills. The
daemon is killed with SIGKILL again and again: most kills while the
clients submit (at evenly spaced counts of acknowledged messages), the
last ones while the backlog drains (at counts of copies received), and
restarted on the same spool each time. Clients reconnect and send again
whatever did not get its promise.

Checks: the daemon comes back on its spool every time (its ready line
counts queued recipients); every acknowledged message arrives complete,
in particular each one acknowledged before each kill; duplicates (a
promise lost in the kill, or a delivery whose state was not yet synced)
are counted and reported, never a loss; SIGTERM at the end exits 0 with
a clean log.

Size: RINGPOST_CHAOS_MESSAGES, RINGPOST_CHAOS_KILLS, or RINGPOST_CHAOS_FULL=1
for 200,000 messages and 20 kills; 10,000 and 20 by default, 5,000 and 12
under ASan.
"""

import os
import re
import time

from harness import SLOW, TestEnv, TestFailure, check, free_port, log, run_test, wait_for
from harness.ledger import report, sizes
from harness.submitters import Work, complete_ids, start_clients

N = int(os.environ.get("RINGPOST_CHAOS_MESSAGES") or sizes(200_000, 10_000, 5_000))
KILLS = int(os.environ.get("RINGPOST_CHAOS_KILLS") or sizes(20, 20, 12))
DRAIN_KILLS = max(1, KILLS // 5)  # of them while the backlog drains
PREFIX = "k9"
SMTP_CLIENTS, API_CLIENTS = 6, 1
RATE = int(sizes(2500, 1200, 500))  # delivery msgs/s: below the submission rate


def rcpt_of(i):
    return f"u{i}@k{i % 4}.test"


def main():
    with TestEnv("kill9") as env:
        sink_port = free_port()
        saved = env.dir / "saved"
        sink = env.fast_sink("sink", [f"127.0.0.1:{sink_port}"],
                             ["--threads", "2", "--save", str(saved)])
        routes = {f"k{j}.test": f"127.0.0.1:{sink_port}" for j in range(4)}
        d = env.daemon(routes=routes, with_api=True, shards=2,
                       domains={f"k{j}.test": {"rate": RATE / 4} for j in range(4)},
                       api={"max_batch": 1000}).start()
        log(f"{N} messages, {KILLS} kill -9 ({DRAIN_KILLS} while draining), "
            f"{SMTP_CLIENTS} SMTP clients + {API_CLIENTS} API client, delivery {RATE}/s")
        work = Work(N)
        t0 = time.monotonic()
        ths = start_clients(work, smtp_port=d.port, api_port=d.api_port, prefix=PREFIX,
                            rcpt_of=rcpt_of, smtp=SMTP_CLIENTS, api=API_CLIENTS,
                            timeout=(N / 100 + 300) * SLOW, api_batch=100)
        sub_kills = KILLS - DRAIN_KILLS
        snapshots = []
        restarts = []
        received = 0
        try:
            for k in range(KILLS):
                if k < sub_kills:
                    goal = int(N * (k + 1) / (sub_kills + 1))
                    what = "acknowledged"
                else:
                    j = k - sub_kills
                    goal = int(N * (0.5 + 0.45 * (j + 1) / (DRAIN_KILLS + 1)))
                    what = "received"

                def reached():
                    if not d.alive():
                        raise TestFailure(f"the daemon died on its own:\n{d.log_tail()}")
                    if work.failure:
                        raise TestFailure(work.failure)
                    if what == "acknowledged":
                        return work.count() >= goal
                    return sink.messages() >= goal
                wait_for(reached, (N / 200 + 120), f"{goal} messages {what}", interval=0.01)
                d.kill()
                with work.lock:
                    snap = dict(work.acked)
                snapshots.append(snap)
                received = sink.messages()
                time.sleep(0.1)
                t1 = time.monotonic()
                d.start(timeout=60)
                restarts.append(time.monotonic() - t1)
                m = re.search(r"ringpost ready:.* (\d+) recipients queued",
                              d.log(since_start=True))
                log(f"kill -9 #{k + 1} at {len(snap)} acknowledged, {received} received "
                    f"({time.monotonic() - t0:.1f}s); back in {restarts[-1]:.2f}s with "
                    f"{m.group(1) if m else '?'} recipients queued")
            for t in ths:
                t.join(timeout=max(1.0, (N / 100 + 300) * SLOW - (time.monotonic() - t0)))
            check(not any(t.is_alive() for t in ths), "the clients did not finish")
            check(not work.failure, work.failure)
        finally:
            work.stop = True
        t_sub = time.monotonic() - t0
        check(len(work.acked) == N, f"only {len(work.acked)} of {N} were ever acknowledged")
        log(f"all {N} acknowledged in {t_sub:.1f}s ({work.cut} transactions cut short, "
            f"refusals {dict(work.refused)})")

        want = {f"{PREFIX}-{i}" for i in work.acked}
        state = {}

        def all_there():
            if not d.alive():
                raise TestFailure(f"the daemon died:\n{d.log_tail()}")
            if sink.messages() < len(want):
                return False
            state["got"] = complete_ids(saved, PREFIX)
            return want <= set(state["got"])
        try:
            wait_for(all_there, N / 300 + 120, "every acknowledged message at the sink",
                     interval=2.0)
        except TestFailure:
            got = state.get("got") or complete_ids(saved, PREFIX)
            lost = sorted(want - set(got))
            for k, snap in enumerate(snapshots):
                lk = [t for t in lost if int(t.split("-")[1]) in snap]
                if lk:
                    log(f"acknowledged before kill {k + 1} and lost: {len(lk)} {lk[:5]}")
            raise TestFailure(f"{len(lost)} acknowledged messages never arrived, e.g. "
                              f"{[(t, work.acked[int(t.split('-')[1])]) for t in lost[:5]]}")
        got = state["got"]
        t_done = time.monotonic() - t0
        for k, snap in enumerate(snapshots):
            check({f"{PREFIX}-{i}" for i in snap} <= set(got),
                  f"messages acknowledged before kill {k + 1} are missing")
        dups = sum(v - 1 for v in got.values())
        report("kill9", {"messages": N, "acknowledged": len(work.acked), "kills": KILLS,
                         "delivered": len(got), "duplicates": dups,
                         "dup_msgs": sum(1 for v in got.values() if v > 1),
                         "lost": len(want - set(got)), "cut_short": work.cut,
                         "refused": sum(work.refused.values()),
                         "restart_max_s": f"{max(restarts):.2f}", "submit_s": f"{t_sub:.1f}",
                         "elapsed_s": f"{t_done:.1f}"})
        rc = d.stop(timeout=30)
        check(rc == 0, f"SIGTERM: exit status {rc}")
        d.check_log_clean()


if __name__ == "__main__":
    run_test(main)
