"""test_dns_load.py - the resolver under load: 10,000 distinct domains, each
with its own MX record at a private dnsmasq on loopback, one message each,
submitted as ten POST /v1/messages/batch requests of 1,000, while mail to a
statically routed domain keeps flowing beside it.

Setup: dnsmasq serves d0.load.test .. d9999.load.test, "MX 10
mx<i % 4>.load.test" (a conf file of --mx-host lines, --local-ttl=300);
mx0/mx2 have A 127.0.0.3, mx1/mx3 A 127.0.0.4 (no AAAA), where one
ringpost-sink listens; static.test is routed to another ringpost-sink on
127.0.0.5. --local=/test/ makes any name without records NXDOMAIN.

Checks:
  - every one of the N messages reaches the sink, one per domain (the
    sink's per-domain counters), none deferred or bounced, at the first
    attempt;
  - the static mail sent throughout (a batch of 10 every 50 ms) is all
    delivered, some of it between the first and the last DNS-routed
    delivery, and none of it waits more than 1 s from its batch's 202 to
    its delivery (it is not stuck behind the lookups);
  - no datagram was dropped on the DNS sockets at either end (the kernel's
    per-socket counter in /proc/net/udp): the resolver never floods its
    server or its own receive buffer;
  - dnsmasq's query log: each domain's MX was asked exactly once (lookups
    in flight and answers are shared; c-ares never had to retry), never an
    A/AAAA for a domain (they all have MX), never a query for static.test,
    and each exchanger's A and AAAA at most once per shard (each shard has
    its own cache; the exchangers' addresses are shared by the 2,500
    domains that use each);
  - GET /v1/stats loop_max_busy_ms, sampled every 100 ms (each read resets
    it), stays below LOOP_BOUND_MS: no shard's loop ever blocks. Why that
    bound: a loop that waited for DNS would block for at least one round
    trip per lookup (tens of microseconds on loopback, times the 1,000
    domains a batch brings: 50+ ms) and for the whole [dns] timeout (2 s)
    whenever a packet is lost; what the loop does legitimately in one
    iteration here - take in a 1,000-message batch, start lookups, take in
    answers, hand out deliveries - measured 18-36 ms on the 2-core VM with
    dnsmasq, the sinks and this script beside it (typically 20-25 ms).
    100 ms leaves room for a busy machine and still catches a loop that
    waits for DNS; ASan builds get 4x (measured there: 53-80 ms). One
    sample over the bound is allowed (a shared machine stalls a process now
    and then: 120-131 ms seen under parallel builds); a loop that waits for
    the DNS is slow in every sample with lookups in it.
The measured values (worst loop iteration, MX lookups per second, cache
bytes per entry) are printed; bench/dns-load repeats this run to measure.

Scale: N = 10,000 in both builds: about 3.5 s normally, 4-6 s under ASan
(RINGPOST_BUILD containing 'asan', or RINGPOST_SANITIZE: only the time
bounds stretch, by SCALE).
"""

import os
import re
import threading
import time
from collections import Counter
from pathlib import Path

from harness import (SANITIZE, SLOW, Dnsmasq, TestEnv, TestFailure, check, free_port, iso_epoch,
                     log, parse_kv, run_test, stop_clean, wait_for)

ASAN = SANITIZE or "asan" in os.environ.get("RINGPOST_BUILD", "").lower()
SCALE = max(SLOW, 4.0 if ASAN else 1.0)  # time bounds stretch under ASan
# Full scale under ASan too: it takes about 6 s there (DNS_LOAD_DOMAINS
# overrides, for bench/dns-load).
N = int(os.environ.get("DNS_LOAD_DOMAINS", 10000))
BATCH = 1000
EXCHANGERS = 4
SHARDS = 2
LOOP_BOUND_MS = 100 * SCALE
STATIC_DELAY_S = 1.0 * SCALE
STATIC = "static.test"
SENDER = "load@origin.test"


def domain(i):
    return f"d{i}.load.test"


def write_records(path, n):
    lines = [f"host-record=mx{k}.load.test,127.0.0.{3 + k % 2}" for k in range(EXCHANGERS)]
    lines += [f"mx-host={domain(i)},mx{i % EXCHANGERS}.load.test,10" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


class Sampler(threading.Thread):
    """GET /v1/stats every interval: the worst loop iteration since the last
    read, DNS counters and delivery totals, with the time."""

    def __init__(self, d, dns_port, interval=0.1):
        super().__init__(daemon=True)
        self.d = d
        self.dns_port = dns_port
        self.udp = {}  # udp_sockets
        self.interval = interval
        self.samples = []  # (monotonic time, stats dict)
        self.stop_ev = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop_ev.is_set():
                r = self.d.api("GET", "/v1/stats")
                if r.status != 200:
                    raise TestFailure(f"GET /v1/stats: HTTP {r.status}")
                self.samples.append((time.monotonic(), r.json()))
                udp_sockets(self.dns_port, self.udp)
                self.stop_ev.wait(self.interval)
        except Exception as e:  # reported by the main thread
            self.error = e

    def finish(self):
        self.stop_ev.set()
        self.join(30)
        if self.error:
            raise TestFailure(f"stats sampler: {self.error}")

    def drops(self):
        """{"dnsmasq": dropped, "ringpost": dropped, "sockets": ours seen}."""
        udp_sockets(self.dns_port, self.udp)
        out = {"dnsmasq": 0, "ringpost": 0, "sockets": 0}
        for side, n in self.udp.values():
            out[side] += n
            out["sockets"] += side == "ringpost"
        return out

    def max_busy(self):
        return max((s["loop_max_busy_ms"] for _, s in self.samples), default=0.0)

    def busy_over(self, bound):
        """The samples whose worst loop iteration passed bound."""
        return [s["loop_max_busy_ms"] for _, s in self.samples if s["loop_max_busy_ms"] >= bound]


class StaticFlow(threading.Thread):
    """A batch of 10 messages to the static route every 50 ms."""

    def __init__(self, d):
        super().__init__(daemon=True)
        self.d = d
        self.sent = 0
        self.acked = {}  # first recipient number of a batch -> when its 202 arrived
        self.stop_ev = threading.Event()
        self.error = None

    def run(self):
        try:
            i = 0
            while not self.stop_ev.is_set():
                msgs = [{"from": SENDER, "to": [f"s{i + k}@{STATIC}"], "subject": f"static {i + k}",
                         "text": "static\n"} for k in range(10)]
                r = self.d.api("POST", "/v1/messages/batch", {"messages": msgs})
                if r.status != 202 or not all(e.get("id") for e in r.json()["results"]):
                    raise TestFailure(f"static batch: HTTP {r.status}: {r.body[:200]!r}")
                self.acked[i] = time.time()
                i += 10
                self.sent = i
                self.stop_ev.wait(0.05)
        except Exception as e:
            self.error = e

    def finish(self):
        self.stop_ev.set()
        self.join(30)
        if self.error:
            raise TestFailure(f"static flow: {self.error}")


def submit(d, lo, hi):
    msgs = [{"from": SENDER, "to": [f"u@{domain(i)}"], "subject": f"load {i}",
             "text": f"load {i}\n"} for i in range(lo, hi)]
    r = d.api("POST", "/v1/messages/batch", {"messages": msgs}, timeout=60)
    check(r.status == 202, f"batch {lo}-{hi}: HTTP {r.status}: {r.body[:300]!r}")
    res = r.json()["results"]
    check(len(res) == hi - lo and all(e.get("id") for e in res),
          f"batch {lo}-{hi}: {[e for e in res if not e.get('id')][:3]}")


_stamp_re = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")
_static_rcpt_re = re.compile(r"^<s(\d+)@")


def check_static_flow(d, flow):
    """Static mail was delivered while the DNS-routed mail was (between the
    first and the last DNS-routed delivery in the log), and none of it
    waited: under STATIC_DELAY_S from its batch's 202 (the message on disk)
    to its delivery line. Measured from the 202, not from the submission
    (the log's delay): a submission's spool sync under a neighbour's disk
    load is not delivery waiting behind the lookups."""
    load, static = [], []
    for line in d.log().splitlines():
        i = line.find(" delivery id=")
        m = _stamp_re.match(line)
        if i < 0 or not m:
            continue
        t = iso_epoch(m.group(1))
        f = parse_kv(line[i + 1:])
        if f.get("status") != "delivered":
            continue
        if f.get("dest") == STATIC:
            n = _static_rcpt_re.match(f.get("rcpt", ""))
            check(n, f"a static delivery line without its recipient: {line}")
            acked = flow.acked.get(int(n.group(1)) // 10 * 10)
            check(acked, f"a static delivery of a batch never acknowledged: {line}")
            static.append((t, t - acked, float(f.get("delay", "nan"))))
        elif f.get("dest", "").endswith(".load.test"):
            load.append(t)
    check(len(load) == N, f"{len(load)} DNS-routed deliveries in the log, expected {N}")
    lo, hi = min(load), max(load)
    inside = [w for t, w, _ in static if lo < t < hi]
    worst = max(w for _, w, _ in static)
    log(f"static mail: {len(inside)} of {len(static)} delivered during the {hi - lo:.2f}s of "
        f"DNS-routed deliveries; worst wait after its 202 {worst * 1000:.0f} ms, worst delay "
        f"from submission {max(dl for _, _, dl in static) * 1000:.0f} ms")
    check(inside, f"no static mail was delivered in the {hi - lo:.2f}s the DNS-routed mail "
          f"took")
    check(worst < STATIC_DELAY_S, f"static mail waited {worst:.2f}s after its 202 (bound "
          f"{STATIC_DELAY_S}s)")


def udp_sockets(port, seen):
    """Record in seen {inode: (side, drops)} the sockets of this DNS
    conversation with the datagrams the kernel dropped on each (receive
    buffer full), from /proc/net/udp: dnsmasq's (bound to port) and
    ringpost's c-ares sockets (connected to it). c-ares closes its sockets
    when the channel goes idle, so this is sampled during the run; a socket
    that dropped an answer stays open at least until that query's timeout."""
    lo = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        side = "dnsmasq" if f[1] == lo else "ringpost" if f[2] == lo else None
        if side:
            seen[f[9]] = (side, max(int(f[-1]), seen.get(f[9], (side, 0))[1]))


def check_queries(dns):
    q = dns.queries()
    per = Counter(q)
    mx = {name: c for (t, name), c in per.items() if t == "MX"}
    want = {domain(i) for i in range(N)}
    missing = want - set(mx)
    check(not missing, f"{len(missing)} domains never had an MX query, e.g. {sorted(missing)[:5]}")
    extra = set(mx) - want
    check(not extra, f"MX queries for names that were not sent to: {sorted(extra)[:5]}")
    twice = {n: c for n, c in mx.items() if c != 1}
    check(not twice, f"{len(twice)} domains had their MX asked more than once: "
          f"{dict(list(twice.items())[:5])}")
    for (t, name), c in per.items():
        if name == "probe.invalid":
            continue  # the harness asking whether dnsmasq is up
        if t in ("A", "AAAA") and name.startswith("mx"):
            check(c <= SHARDS, f"{t} {name} asked {c} times (at most once per shard)")
        elif t != "MX":
            check(False, f"unexpected query {t} {name} ({c} times)")
        check(STATIC not in name, f"static.test was looked up: {t} {name}")
    addr = sum(c for (t, name), c in per.items() if t != "MX" and name != "probe.invalid")
    log(f"dnsmasq saw {len(q)} queries: {len(mx)} MX, {addr} A/AAAA for "
        f"{EXCHANGERS} exchangers")
    lost = [ln for ln in dns.log_path.read_text(errors="replace").splitlines()
            if re.search(r"\blost\b|overflow", ln)]
    check(not lost, f"dnsmasq dropped log lines, the counts cannot be trusted: {lost[:2]}")


def rate_of(samples, key_fn, lo, hi):
    """Per-second growth of key_fn(stats) between its first sample above lo
    and its first sample at or above hi."""
    t0 = t1 = None
    for t, s in samples:
        v = key_fn(s)
        if t0 is None and v > lo:
            t0, v0 = t, v
        if v >= hi:
            t1, v1 = t, v
            break
    if t0 is None or t1 is None or t1 <= t0:
        return None
    return (v1 - v0) / (t1 - t0)


def main():
    Dnsmasq.require()
    with TestEnv("dns_load") as env:
        sink_port = free_port()
        static_port = free_port()
        conf = env.dir / "load-records.conf"
        write_records(conf, N)
        dns = env.dnsmasq(["--local=/test/", "--local-ttl=300", f"--conf-file={conf}"])
        # A stats line every 500 ms, not 100: each holds every domain.
        mx_sink = env.fast_sink("mx", [f"127.0.0.3:{sink_port}", f"127.0.0.4:{sink_port}"],
                                extra_args=["--stats-interval", "500"])
        static_sink = env.fast_sink("static", [f"127.0.0.5:{static_port}"])
        d = env.daemon(routes={STATIC: f"127.0.0.5:{static_port}"}, with_api=True,
                       shards=SHARDS, domain_defaults={"port": sink_port},
                       extra=f"[dns]\nservers = {dns.addr}\n")
        d.start()
        failures = []
        sampler = Sampler(d, dns.port)
        flow = StaticFlow(d)
        sampler.start()
        flow.start()
        try:
            wait_for(lambda: static_sink.messages() >= 20, 10, "static mail flowing")
            t0 = time.monotonic()
            for lo in range(0, N, BATCH):
                submit(d, lo, min(N, lo + BATCH))
            t_submitted = time.monotonic() - t0
            wait_for(lambda: mx_sink.messages() >= N, 60, f"{N} messages at the DNS-routed sink "
                     f"(have {mx_sink.messages()})", interval=0.25)
            t_done = time.monotonic() - t0
            time.sleep(0.6)  # the stats after the last delivery
        finally:
            flow.finish()
            sampler.finish()
        # No question or answer was lost on the way (a lost question is
        # asked again by c-ares after [dns] timeout: once in dnsmasq's
        # log, but late).
        drops = sampler.drops()
        log(f"UDP receive-buffer drops: {drops}")
        check(drops["sockets"] > 0, f"no ringpost socket talking to dnsmasq in /proc/net/udp")
        check(drops["dnsmasq"] == 0 and drops["ringpost"] == 0,
              f"datagrams dropped on the DNS sockets: {drops}")
        sent = flow.sent
        wait_for(lambda: static_sink.messages() >= sent, 20,
                 f"{sent} static messages delivered (have {static_sink.messages()})")
        time.sleep(0.3)

        # Delivery: one message per domain, nothing deferred or bounced.
        st = d.api("GET", "/v1/stats").json()
        mx_final = mx_sink.stats()
        per_dom = mx_final.get("domains", {})
        bad = [domain(i) for i in range(N) if per_dom.get(domain(i), {}).get("messages") != 1]
        check(not bad, f"{len(bad)} domains without exactly one message at the sink: {bad[:5]}")
        check(mx_final.get("messages") == N, f"sink has {mx_final.get('messages')} messages, "
              f"sent {N}")
        check(static_sink.messages() == sent, f"static: {static_sink.messages()} of {sent}")
        deferred = d.deliveries("deferred")
        check(not deferred, f"{len(deferred)} deferrals, e.g. {deferred[:2]}")
        check(st["delivered"] == N + sent and st["deferred"] == 0 and st["bounced"] == 0,
              f"totals: delivered {st['delivered']} (want {N + sent}), deferred "
              f"{st['deferred']}, bounced {st['bounced']}")
        check_static_flow(d, flow)

        check_queries(dns)

        dst = st["dns"]
        entries = dst["cache_entries"]
        check(entries >= N, f"dns cache has {entries} entries for {N} domains")
        check(dst["lookups"] >= N and dst["shared"] + dst["cache_hits"] >= N - 2 * EXCHANGERS,
              f"dns counters: {dst}")
        busy = sampler.max_busy()
        mx_rate = rate_of(sampler.samples, lambda s: s["dns"]["queries"], 0, N)
        log(f"N={N}: submitted in {t_submitted:.2f}s, all delivered {t_done:.2f}s after the "
            f"first batch; static mail: {sent} messages")
        log(f"dns: {dst}; {dst['cache_bytes'] / max(1, entries):.0f} bytes per cache entry")
        log(f"DNS queries/s (stats, 100 ms samples): "
            f"{mx_rate:.0f}" if mx_rate else "DNS queries/s: too fast to sample")
        log(f"loop_max_busy_ms: worst {busy:.3f} over {len(sampler.samples)} samples "
            f"(bound {LOOP_BOUND_MS:.0f})")
        # A loop that waited for the DNS would be slow in every sample that
        # saw a batch of lookups (ten of them); a machine busy with other
        # work stalls one now and then. One slow sample is noise, two are
        # not, and none may be slower than a lost packet's DNS timeout.
        over = sampler.busy_over(LOOP_BOUND_MS)
        check(len(over) <= 1 and busy < 1000 * SCALE,
              f"loop iterations took {over} ms (bound {LOOP_BOUND_MS:.0f} ms, one outlier "
              f"allowed): the loop blocked")
        stop_clean(d, failures)
        if failures:
            raise TestFailure("; ".join(failures))


if __name__ == "__main__":
    run_test(main)
