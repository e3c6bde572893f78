"""test_crash_recovery.py - a 250 is a promise, even across kill -9.

10,000 small messages, each with a unique X-Test-Id and a last body line
"X-End: ID" (so a transfer cut short is never counted), are submitted by 8
concurrent raw-socket clients (MAIL/RCPT/DATA pipelined). While they run,
the daemon is killed with SIGKILL three times (after about 30% and 65% of
the messages were acknowledged, and once 40% have arrived at the receiver,
mid-delivery), then stopped with SIGTERM at 70% received (it must drain and
exit 0), and restarted on the same spool each time; the
clients reconnect and send again whatever did not get its 250 (the same
X-Test-Id: duplicates are allowed, loss is not).

The receiver is Postfix's smtp-sink dumping every transaction to a file.
So that the kills hit mail that is acknowledged but not yet delivered, the
receiver is down until after the first kill (everything accepted so far
sits deferred in the spool) and delivery is rate-limited ([domain] rate)
below the submission rate, so a backlog is in flight at the later kills.

Checks: every message that got "250 ... queued as" arrives complete at the
receiver, in particular every one acknowledged before a kill; the daemon
restarts on the spool it was killed on; SIGTERM at the end exits 0.
"""

import random
import re
import threading
import time

from harness import (SLOW, SMTPConn, TestEnv, TestFailure, check, dot_stuff, free_port, log,
                     queued_id, run_test, wait_for)

N = 10_000
CLIENTS = 8
# When to stop the daemon (kill -9, or SIGTERM to drain): after this
# fraction of N was acknowledged by the daemon / received by the sink.
EVENTS = (("acked", 0.30, "kill"), ("acked", 0.65, "kill"), ("received", 0.40, "kill"),
          ("received", 0.70, "term"))
RATE = 2500  # delivery messages/s to c.test: below what the clients submit
SENDER = "crash@origin.test"


def message(i, tid):
    r = random.Random(i)
    filler = "".join(f"line {k} of {tid}: {'x' * r.randint(10, 70)}\r\n"
                     for k in range(r.randint(3, 20)))
    return (f"From: <{SENDER}>\r\nTo: <u{i}@c.test>\r\nSubject: crash {i}\r\n"
            f"X-Test-Id: {tid}\r\n\r\n{filler}X-End: {tid}\r\n").encode()


class Run:
    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.acked = {}           # test id -> queue id of the (last) 250
        self.attempts = 0         # transactions started
        self.errors = 0           # transactions cut short
        self.stop = False
        self.failure = None


def client(run, idxs):
    conn = None
    k = 0
    deadline = time.monotonic() + 240 * SLOW
    while k < len(idxs) and not run.stop:
        if time.monotonic() > deadline:
            run.failure = "client gave up: the daemon did not come back"
            return
        i = idxs[k]
        tid = f"crash-{i:05d}"
        try:
            if conn is None:
                conn = SMTPConn(run.port, timeout=20)
                conn.expect(220, "banner")
                conn.ehlo("crash.client.test")
            with run.lock:
                run.attempts += 1
            conn.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<u{i}@c.test>\r\nDATA\r\n")
            conn.expect(250, "MAIL")
            conn.expect(250, "RCPT")
            conn.expect(354, "DATA")
            conn.send(dot_stuff(message(i, tid)))
            code, lines = conn.read_reply()
            if code != 250:
                # 421 while shutting down, 451/452 on spool trouble: not a
                # promise, so send it again.
                raise ConnectionError(f"end of data: {lines}")
            qid = queued_id(lines)
            with run.lock:
                run.acked[tid] = qid
            k += 1
        except (OSError, EOFError, ConnectionError, TestFailure) as e:
            if isinstance(e, TestFailure) and "expected" not in str(e):
                run.failure = str(e)
                return
            with run.lock:
                run.errors += 1
            if conn:
                conn.close()
            conn = None
            time.sleep(0.05)
    if conn:
        try:
            conn.send("QUIT\r\n")
        except OSError:
            pass
        conn.close()


def sink_ids(sink):
    """Test ids of complete messages at the sink: id -> copies."""
    got = {}
    rx = re.compile(rb"^X-Test-Id: (crash-\d+)$.*^X-End: \1$", re.M | re.S)
    for p in sink.files():
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue
        m = rx.search(data)
        if m:
            tid = m.group(1).decode()
            got[tid] = got.get(tid, 0) + 1
    return got


def main():
    with TestEnv("crash") as env:
        sink_port = free_port()
        d = env.daemon(routes={"c.test": f"127.0.0.1:{sink_port}"}, shards=2,
                       domains={"c.test": {"rate": RATE}}).start()
        sink = None
        log(f"daemon on {d.port}, c.test -> 127.0.0.1:{sink_port} (down for now), "
            f"rate {RATE}/s; {N} messages, {CLIENTS} clients")
        run = Run(d.port)
        shares = [list(range(c, N, CLIENTS)) for c in range(CLIENTS)]
        threads = [threading.Thread(target=client, args=(run, s), daemon=True) for s in shares]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        try:
            before_kill = []
            for what, frac, how in EVENTS:
                def reached():
                    if not d.alive():
                        raise TestFailure(f"the daemon died on its own:\n{d.log_tail()}")
                    if what == "acked":
                        return len(run.acked) >= frac * N or run.failure
                    return len(sink.files()) >= frac * N or run.failure
                wait_for(reached, 120, f"{int(frac * N)} messages {what}", interval=0.02)
                check(not run.failure, run.failure)
                t1 = time.monotonic()
                if how == "kill":
                    d.kill()
                else:
                    rc = d.stop(timeout=15)
                    check(rc == 0, f"SIGTERM mid-delivery: exit status {rc}")
                with run.lock:
                    snapshot = dict(run.acked)
                before_kill.append(snapshot)
                log(f"{'kill -9' if how == 'kill' else 'SIGTERM (exit 0 in %.1fs)' % (time.monotonic() - t1)}"
                    f" after {len(snapshot)} acknowledged messages, "
                    f"{len(sink.files()) if sink else 0} received "
                    f"({time.monotonic() - t0:.1f}s); restarting on the same spool")
                time.sleep(0.3)
                d.start()
                m = re.search(r"ringpost ready:.* (\d+) recipients queued", d.log(since_start=True))
                queued = int(m.group(1)) if m else -1
                log(f"restarted: {queued} recipients queued in the spool")
                if sink is None:
                    # Nothing could be delivered yet: the spool holds them all.
                    check(queued >= len(snapshot), f"restart found {queued} queued recipients, "
                          f"but {len(snapshot)} messages were acknowledged and none delivered")
                    sink = env.sink(port=sink_port)
                    log(f"smtp-sink up on {sink.addr}")
            for t in threads:
                t.join(timeout=max(1.0, 240 * SLOW - (time.monotonic() - t0)))
            check(not any(t.is_alive() for t in threads), "clients did not finish")
            check(not run.failure, run.failure)
        finally:
            run.stop = True
        check(len(run.acked) == N, f"only {len(run.acked)} of {N} were ever acknowledged")
        log(f"all {N} acknowledged in {time.monotonic() - t0:.1f}s ({run.attempts} transactions, "
            f"{run.errors} cut short by the kills)")

        want = set(run.acked)
        state = {}

        def all_there():
            state["got"] = sink_ids(sink)
            return want <= set(state["got"])
        try:
            wait_for(all_there, 90, "every acknowledged message at the receiver", interval=1.0)
        except TestFailure:
            got = state.get("got", {})
            lost = sorted(want - set(got))
            for k, snap in enumerate(before_kill):
                lk = [t for t in lost if t in snap]
                log(f"acknowledged before stop {k + 1} and lost: {len(lk)} {lk[:5]}")
            raise TestFailure(f"{len(lost)} acknowledged messages never arrived, e.g. "
                              f"{[(t, run.acked[t]) for t in lost[:5]]}")
        got = state["got"]
        for k, snap in enumerate(before_kill):
            check(set(snap) <= set(got), f"messages acknowledged before stop {k + 1} are missing")
        dups = sum(v - 1 for v in got.values())
        log(f"all {N} acknowledged messages arrived complete ({dups} duplicates, allowed) "
            f"in {time.monotonic() - t0:.1f}s")
        rc = d.stop()
        check(rc == 0, f"SIGTERM: exit status {rc}")
        d.check_log_clean()


if __name__ == "__main__":
    run_test(main)
