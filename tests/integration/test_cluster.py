"""test_cluster.py - [cluster]: three ringpost nodes share per-destination
limits through a real redis-server started here.

One Redis, three nodes (one shard each, lease 3 s), two ringpost-sinks:
slow.test (every reply 100 ms late, max_connections 6) and r.test (fast,
rate 10/s). Phases, in order:
  sessions   60 messages to slow.test, 20 through each node: the sink's
             concurrent sessions, sampled every 100 ms, never pass 6 (and
             reach at least 4: the limit is what holds them); each node's
             /v1/stats names the destination's cluster-wide sessions.
  rate       60 messages to r.test, 20 through each node: the sink takes
             them at 10/s +-15% (first to last arrival).
  kill       180 messages to slow.test; once the sink sees 6 sessions node
             1 is killed with SIGKILL: within lease + 5 s the two others
             hold 6 sessions again; node 1 restarted delivers its queue.
  stats      `ringpost stats --cluster` lists the three nodes.
  redis      redis-server stopped: each node says "fallback"; 30 more
             messages are all delivered, each node within max_connections
             / 3 (its /v1/stats, sampled every 100 ms) and the sink never
             past 6; Redis back: "shared" again.
Every message submitted is delivered (the sink's counts); only those the
killed node had in flight may arrive twice (at least once, as promised).
"""

import json
import os
import shutil
import signal
import subprocess
import time

from harness import (SLOW, TestEnv, TestFailure, check, free_port, log, raise_failures,
                     ringpost_bin, run_test, sink_history, spawn, stop_clean, stop_process,
                     wait_for)

LEASE_S = 3
MAXCONN = 6
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class Redis:
    """redis-server on a fixed loopback port, no persistence."""

    def __init__(self, env):
        self.env, self.port, self.proc = env, free_port(), None

    def start(self):
        d = self.env.dir / "redis"
        d.mkdir(exist_ok=True)
        self.proc = spawn([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", str(d), "--daemonize", "no"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.ping(), 10, "redis-server to answer")
        return self

    def ping(self):
        p = subprocess.run(["redis-cli", "-p", str(self.port), "PING"], capture_output=True,
                           timeout=5)
        return p.stdout.strip() == b"PONG"

    def stop(self):
        if self.proc:
            stop_process(self.proc)
            self.proc = None


def stats(d):
    r = d.api("GET", "/v1/stats")
    check(r.status == 200, f"{d.name}: /v1/stats {r!r}")
    return r.json()


def submit(nodes, domain, n, tag):
    """n messages to distinct recipients at domain, spread over the nodes."""
    for i in range(n):
        d = nodes[i % len(nodes)]
        r = d.api("POST", "/v1/messages", {"from": "c@origin.test", "to": [f"{tag}{i}@{domain}"],
                                           "subject": tag, "text": "x\n"})
        check(r.status == 202, f"{d.name}: POST {r!r}")


def peak_since(sink, t0):
    return max((s.get("sessions", 0) for s in sink_history(sink) if s.get("t", 0) >= t0),
               default=0)


def delivered(sink, domain):
    return sink.messages(domain)


def main():
    if not os.access(REDIS, os.X_OK):
        print("SKIP test_cluster: no redis-server (apt-get install redis-server)")
        raise SystemExit(77)
    with TestEnv("cluster") as env:
        redis = Redis(env).start()
        sp, fp = free_port(), free_port()
        slow = env.fast_sink("slow", [f"127.0.0.1:{sp}"], ["--reply-delay", "100"])
        fast = env.fast_sink("fast", [f"127.0.0.1:{fp}"])
        nodes = []
        for i in range(3):
            nodes.append(env.daemon(
                routes={"slow.test": f"127.0.0.1:{sp}", "r.test": f"127.0.0.1:{fp}"},
                name=f"n{i}", with_api=True, shards=1,
                domains={"slow.test": {"max_connections": MAXCONN}, "r.test": {"rate": 10}},
                extra=f"[cluster]\nredis = 127.0.0.1:{redis.port}\nnode = n{i}\n"
                      f"lease = {LEASE_S}s\n").start())
        failures = []
        sent = {"slow.test": 0, "r.test": 0}
        try:
            wait_for(lambda: all(stats(d)["cluster"]["nodes"] == 3 for d in nodes), 10 * SLOW,
                     "every node to count three")

            # sessions
            t0 = time.time()
            submit(nodes, "slow.test", 60, "s")
            sent["slow.test"] += 60
            wait_for(lambda: delivered(slow, "slow.test") >= 60, 60, "60 through the slow sink")
            peak = peak_since(slow, t0)
            log(f"sessions: peak {peak} at the sink (max_connections {MAXCONN})")
            check(peak <= MAXCONN, f"the sink saw {peak} sessions > max_connections {MAXCONN}")
            check(peak >= 4, f"only {peak} sessions: the limit was not what held them")
            dest = [x for x in stats(nodes[0])["destinations"] if "slow.test" in x["domains"]]
            check(dest and "cluster" in dest[0], f"no cluster numbers per destination: {dest}")

            # rate
            submit(nodes, "r.test", 60, "r")
            sent["r.test"] += 60
            wait_for(lambda: delivered(fast, "r.test") >= 60, 30, "60 at 10/s")
            times = [s["t"] for s in sink_history(fast)
                     if s.get("domains", {}).get("r.test", {}).get("messages", 0)]
            hist = [(s["t"], s["domains"]["r.test"]["messages"]) for s in sink_history(fast)
                    if s.get("domains", {}).get("r.test")]
            first = next(t for t, n in hist if n >= 1)
            last = next(t for t, n in hist if n >= 60)
            rate = 59 / max(0.1, last - first)
            log(f"rate: 60 messages in {last - first:.2f} s = {rate:.2f}/s (limit 10/s)")
            check(8.5 <= rate <= 11.5, f"shared rate {rate:.2f}/s, not 10/s +-15%")
            del times

            # kill
            submit(nodes, "slow.test", 180, "k")
            sent["slow.test"] += 180
            wait_for(lambda: slow.stats().get("sessions", 0) >= MAXCONN, 20,
                     f"{MAXCONN} sessions at the sink")
            nodes[1].proc.send_signal(signal.SIGKILL)
            nodes[1].proc.wait()
            tk = time.time()
            try:
                wait_for(lambda: slow.stats().get("sessions", 0) >= MAXCONN - 1 and
                         time.time() - tk > 0.5, LEASE_S + 5,
                         "the other nodes to take the dead node's sessions")
            except TestFailure as e:
                views = {d.name: [(x.get("cluster"), x["connections"])
                                  for x in stats(d)["destinations"]]
                         for d in (nodes[0], nodes[2])}
                raise TestFailure(f"{e}: sink {slow.stats().get('sessions')} sessions; "
                                  f"nodes say {views}") from None
            took = time.time() - tk
            log(f"kill: the others held {MAXCONN - 1}+ sessions {took:.1f} s after the kill")
            check(peak_since(slow, t0) <= MAXCONN, "more than max_connections after the kill")
            nodes[1].start()
            wait_for(lambda: delivered(slow, "slow.test") >= sent["slow.test"], 90,
                     "every slow.test message, the restarted node's included")

            # stats --cluster
            p = subprocess.run([ringpost_bin(), "stats", "-c", str(nodes[0].config_path),
                                "--cluster", "--json"], capture_output=True, timeout=20)
            check(p.returncode == 0, f"stats --cluster: exit {p.returncode} {p.stderr!r}")
            names = sorted(n["node"] for n in json.loads(p.stdout)["nodes"])
            check(names == ["n0", "n1", "n2"], f"stats --cluster nodes {names}")

            # redis
            redis.stop()
            wait_for(lambda: all(stats(d)["cluster"]["mode"] == "fallback" for d in nodes), 15,
                     "every node to fall back")
            time.sleep(0.5)  # idle sessions beyond each node's share say QUIT
            t1 = time.time()
            submit(nodes, "slow.test", 30, "f")
            sent["slow.test"] += 30
            most = {d.name: 0 for d in nodes}

            def flowed():
                for d in nodes:  # each node within max_connections / 3
                    c = sum(x["connections"] for x in stats(d)["destinations"]
                            if "slow.test" in x["domains"])
                    most[d.name] = max(most[d.name], c)
                return delivered(slow, "slow.test") >= sent["slow.test"]
            wait_for(flowed, 60, "30 more while Redis is down", interval=0.1)
            peak = peak_since(slow, t1)
            log(f"redis down: peak {peak} sessions at the sink, per node {most}")
            check(all(v <= MAXCONN // 3 for v in most.values()),
                  f"a node passed max_connections / 3 without Redis: {most}")
            check(peak <= MAXCONN, f"{peak} sessions > {MAXCONN} without Redis")
            redis.start()
            wait_for(lambda: all(stats(d)["cluster"]["mode"] == "shared" for d in nodes),
                     LEASE_S + 10, "shared mode again")
            time.sleep(0.5)
            # None lost; a few twice at most: what the killed node had
            # sent but not yet recorded as delivered (at most one
            # transaction per session it had) goes again after its restart.
            check(delivered(fast, "r.test") == sent["r.test"],
                  f"r.test: {delivered(fast, 'r.test')} of {sent['r.test']}")
            got = delivered(slow, "slow.test")
            check(sent["slow.test"] <= got <= sent["slow.test"] + MAXCONN,
                  f"slow.test: {got} of {sent['slow.test']}")
        except (TestFailure, OSError, ValueError, KeyError, StopIteration) as e:
            failures.append(f"{type(e).__name__}: {e}")
        for d in nodes:
            try:
                stop_clean(d, failures)
            except TestFailure as e:
                failures.append(f"{d.name}: {e}")
        redis.stop()
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
