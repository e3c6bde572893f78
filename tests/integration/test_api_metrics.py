"""test_api_metrics.py - GET /metrics is valid Prometheus text (promtool
check metrics) and says the same as GET /v1/stats.

One daemon, mail in every state:
  - a.test -> Python smtpd: delivered;
  - b.test -> Postfix smtp-sink refusing RCPT with 5xx: bounced;
  - c.test and 22 more domains -> a closed port: deferred ([queue] retry is
    1h, so they stay deferred while we look); 23 domains with mail, more
    than /metrics lists one by one, so the rest is summed as "other";
  - d.test suspended before its mail arrives: queued;
submitted through the API (single and batch) and SMTP. /metrics passes
promtool before any traffic and after; then, with the queue settled, every
number agrees with /v1/stats: accepted by source, rejected, delivered and
bounced (totals and per domain, "other" included), the queue gauges
(queued, deferred, in_flight), outbound connections; the delivery latency
histogram is cumulative and counts every delivery.
"""

import json
import re
import smtplib
import subprocess

from harness import (SLOW, ClosedPort, TestEnv, TestFailure, check, log, raise_failures,
                     run_test, stop_clean, wait_for)

PROMTOOL = "/usr/bin/promtool"
SENDER = "metrics@a.test"
N_A, N_B, N_C, N_D, N_SMTP = 6, 4, 3, 2, 3
MANY = [f"m{i:02d}.test" for i in range(22)]


def promtool(text, what):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       timeout=30)
    check(p.returncode == 0, f"promtool check metrics ({what}) failed ({p.returncode}): "
          f"{p.stdout.decode()}{p.stderr.decode()}")


_sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
_label = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value} of every sample."""
    out = {}
    for line in text.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _sample.match(line)
        check(m, f"not a sample line: {line!r}")
        labels = frozenset(_label.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def get(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    check(key in samples, f"/metrics has no {name}{labels or ''}")
    return samples[key]


def series(samples, name):
    return {dict(k[1]).get("domain"): v for k, v in samples.items() if k[0] == name}


def metrics(d):
    r = d.api("GET", "/metrics")
    check(r.status == 200, f"/metrics: HTTP {r.status}")
    return r.body


def stats(d):
    r = d.api("GET", "/v1/stats")
    check(r.status == 200, f"/v1/stats: HTTP {r.status}")
    return r.json()


def main():
    with TestEnv("apimetrics") as env:
        smtpd = env.smtpd()
        sink = env.sink(extra_args=["-f", "RCPT"])
        # A port that refuses connections: bound, never listening, held to the end.
        hold = ClosedPort()
        closed = hold.addr
        routes = {"a.test": smtpd.addr, "b.test": sink.addr, "c.test": closed,
                  "d.test": smtpd.addr}
        routes.update({m: closed for m in MANY})
        d = env.daemon(routes=routes, with_api=True, queue={"retry": "1h"}).start()
        failures = []
        try:
            # Before any traffic.
            promtool(metrics(d), "idle daemon")
            r = d.api("POST", "/v1/queue/d.test/suspend")
            check(r.status == 200, f"suspend d.test: {r!r}")

            def m(to, i):
                return {"from": SENDER, "to": to, "subject": f"metrics {i}", "text": "m\n"}
            for i in range(N_A):
                check(d.api("POST", "/v1/messages", m(f"a{i}@a.test", i)).status == 202, "POST a")
            batch = [m(f"b{i}@b.test", i) for i in range(N_B)] + \
                [m(f"c{i}@c.test", i) for i in range(N_C)] + \
                [m(f"d{i}@d.test", i) for i in range(N_D)] + [m("not an address", 0)]
            res = []
            for k in range(0, len(batch), 5):
                r = d.api("POST", "/v1/messages/batch", {"messages": batch[k:k + 5]})
                check(r.status == 202, f"batch: {r!r}")
                res += r.json()["results"]
            check(sum("id" in e for e in res) == N_B + N_C + N_D, f"batch results {res}")
            r = d.api("POST", "/v1/messages", m([f"x@{dom}" for dom in MANY[:10]], 99))
            check(r.status == 202, f"POST to 10 domains: {r!r}")
            r = d.api("POST", "/v1/messages", m([f"x@{dom}" for dom in MANY[10:]], 98))
            check(r.status == 202, f"POST to 12 domains: {r!r}")
            with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
                for i in range(N_SMTP):
                    s.sendmail(SENDER, [f"s{i}@a.test"], f"Subject: smtp {i}\r\n\r\nx\r\n")
                try:
                    s.sendmail("bad sender@", ["z@a.test"], "Subject: x\r\n\r\nx\r\n")
                except smtplib.SMTPException:
                    pass

            def settled():
                s = stats(d)
                dom = {x["domain"]: x for x in s["domains"]}
                ok = (s["in_flight"] == 0 and s["queued"] == N_D and
                      dom.get("b.test", {}).get("bounced") == N_B and
                      dom.get("a.test", {}).get("delivered") == N_A + N_SMTP and
                      dom.get("c.test", {}).get("deferred") == N_C and
                      all(dom.get(x, {}).get("deferred") == 1 for x in MANY))
                return s if ok else None
            try:
                before = wait_for(settled, 30, "the queue to settle")
            except TestFailure:
                raise TestFailure(f"the queue did not settle: {json.dumps(stats(d))[:1500]}")
            text = metrics(d)
            after = stats(d)
            # Idle outbound sessions may close at any moment, and so may the
            # API connection of the previous request (the gauge counts it
            # until the daemon has seen its EOF); nothing else may move while
            # the queue is settled.
            def steady(x):
                return {k: v for k, v in x.items() if k not in ("spool", "connections",
                                                                  "inbound_connections",
                                                                  "domains", "destinations",
                                                                  "loop_max_busy_ms")}
            check(steady(before) == steady(after), f"the stats moved while the queue was "
                  f"settled: {steady(before)} -> {steady(after)}")
            promtool(text, "after the run")
            (env.dir / "metrics.txt").write_bytes(text)
            smp = parse(text)
            s = after
            log(f"  stats: queued {s['queued']} deferred {s['deferred']} delivered "
                f"{s['delivered']} bounced {s['bounced']} accepted {s['accepted']} rejected "
                f"{s['rejected']}, {len(s['domains'])} domains")
            checks = [
                (get(smp, "ringpost_messages_accepted_total", source="api"), s["accepted"]["api"],
                 "accepted api"),
                (get(smp, "ringpost_messages_accepted_total", source="smtp"),
                 s["accepted"]["smtp"], "accepted smtp"),
                (get(smp, "ringpost_messages_rejected_total"), s["rejected"], "rejected"),
                (get(smp, "ringpost_queue_recipients", state="queued"), s["queued"], "queued"),
                (get(smp, "ringpost_queue_recipients", state="deferred"), s["deferred"],
                 "deferred"),
                (get(smp, "ringpost_queue_recipients", state="in_flight"), s["in_flight"],
                 "in_flight"),
                (get(smp, "ringpost_connections", direction="outbound"), s["connections"],
                 "outbound connections"),
                (sum(series(smp, "ringpost_recipients_delivered_total").values()), s["delivered"],
                 "delivered (sum over domains)"),
                (sum(series(smp, "ringpost_recipients_bounced_total").values()), s["bounced"],
                 "bounced (sum over domains)"),
            ]
            for got, want, what in checks:
                if what == "outbound connections" and got == before["connections"]:
                    continue
                if got != want:
                    failures.append(f"/metrics {what} = {got}, /v1/stats says {want}")
            # The expected numbers themselves.
            check(s["accepted"]["api"] == N_A + N_B + N_C + N_D + 2,
                  f"accepted api {s['accepted']['api']}")
            check(s["accepted"]["smtp"] == N_SMTP, f"accepted smtp {s['accepted']['smtp']}")
            check(s["rejected"] >= 1, f"rejected {s['rejected']}")
            check(s["bounced"] == N_B, f"bounced {s['bounced']}")
            check(s["deferred"] == N_C + len(MANY), f"deferred {s['deferred']}")
            # Per domain: the listed ones match, the rest add up to "other".
            dom = {x["domain"]: x for x in s["domains"]}
            for name, key in (("ringpost_recipients_delivered_total", "delivered"),
                              ("ringpost_recipients_bounced_total", "bounced")):
                ser = series(smp, name)
                check(len(ser) == 21 and "other" in ser, f"{name}: {len(ser)} series, "
                      f"expected 20 domains and other: {sorted(ser)}")
                listed = set(ser) - {"other"}
                for dn in listed:
                    if ser[dn] != dom[dn][key]:
                        failures.append(f"{name}{{domain={dn}}} = {ser[dn]}, stats "
                                        f"{dom[dn][key]}")
                rest = sum(v[key] for k, v in dom.items() if k not in listed)
                if ser["other"] != rest:
                    failures.append(f"{name}{{domain=other}} = {ser['other']}, stats add up "
                                    f"to {rest}")
            for dn in ("a.test", "b.test"):
                check(dn in series(smp, "ringpost_recipients_delivered_total"),
                      f"the busiest domain {dn} is not listed by name")
            # The latency histogram: cumulative, +Inf == count == deliveries.
            h = sorted(((float(dict(k[1])["le"]), v) for k, v in smp.items()
                        if k[0] == "ringpost_delivery_latency_seconds_bucket"))
            check(h and h[-1][0] == float("inf"), f"histogram buckets {h}")
            check(all(a[1] <= b[1] for a, b in zip(h, h[1:])), f"buckets not cumulative {h}")
            cnt = get(smp, "ringpost_delivery_latency_seconds_count")
            check(h[-1][1] == cnt, f"+Inf bucket {h[-1][1]} != count {cnt}")
            check(cnt == s["delivered"], f"latency count {cnt}, delivered {s['delivered']}")
            check(get(smp, "ringpost_delivery_latency_seconds_sum") >= 0, "latency sum")
            # Resume d.test: the gauges move and still agree.
            check(d.api("POST", "/v1/queue/d.test/resume").status == 200, "resume d.test")
            wait_for(lambda: stats(d)["queued"] == 0 and stats(d)["in_flight"] == 0, 20,
                     "d.test to drain")
            smp = parse(metrics(d))
            s = stats(d)
            check(get(smp, "ringpost_queue_recipients", state="queued") == s["queued"] == 0,
                  "queued after resume")
            check(sum(series(smp, "ringpost_recipients_delivered_total").values()) ==
                  s["delivered"] == N_A + N_SMTP + N_D, f"delivered after resume {s['delivered']}")
        except (TestFailure, OSError, ValueError, KeyError) as e:
            failures.append(f"{type(e).__name__}: {e}")
        stop_clean(d, failures)
        hold.close()
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
