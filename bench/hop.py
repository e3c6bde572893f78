"""hop.py - bench/run's `hop` preset: what relaying through ringpost costs
against one plain SMTP hop, measured with Postfix's own load tools.

Each pair of runs (--runs N pairs, alternating so that the shared machine's
load hits both alike):
  direct  smtp-source -> smtp-sink: the hop alone
  relay   smtp-source -> ringpost -> smtp-sink: ringpost accepts every
          message durably (250 = synced to its spool), then delivers it

smtp-source -d -s C -m N -l SIZE -N (C sessions that each send many
messages, unique recipients at d1.bench.test); smtp-sink -c counts the
messages it took ("mesg=N" on its stdout). A run ends when the sink has
all N: rate = N / (smtp-source start -> the sink has N). ringpost's CPU per
message is its process's user+system time over the relay run / N.

Reported: both rates, relay / direct (the efficiency), ringpost's CPU per
message; MEDIANS over the pairs and the median of the per-pair ratios.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import median

import benchlib as bl

HOP_DOMAIN = "d1.bench.test"
MESG_RE = re.compile(rb"mesg=(\d+)")


def tools_or_error():
    """Paths of smtp-source and smtp-sink (Debian: package postfix)."""
    found = {}
    for name in ("smtp-source", "smtp-sink"):
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                      else None)
        if not path:
            raise bl.BenchError(f"{name} not found: the hop preset uses Postfix's load tools "
                                "(apt-get install postfix)", bl.EX_UNAVAILABLE)
        found[name] = path
    return found


class PostfixSink:
    """smtp-sink -c on a free loopback port; count() reads its counter."""

    def __init__(self, binary, workdir):
        self.binary, self.out_path = binary, Path(workdir) / "smtp-sink.out"
        self.port, self.proc, self._out = None, None, None

    def start(self):
        self.port = bl.free_port()
        argv = [self.binary, "-c"]
        if os.geteuid() == 0:  # smtp-sink refuses to keep root privileges
            argv += ["-u", "nobody"]
        argv += [f"127.0.0.1:{self.port}", "1024"]
        self._out = open(self.out_path, "wb")
        self.proc = bl.spawn(argv, stdout=self._out, stderr=subprocess.STDOUT)
        bl.wait_until(lambda: bl.proclib.listening(self.port), 10,
                      f"smtp-sink to listen on 127.0.0.1:{self.port}",
                      alive=[(self.proc, "smtp-sink")])

    def count(self):
        """Messages the sink has taken so far (its last mesg= counter)."""
        try:
            data = self.out_path.read_bytes()[-4096:]
        except OSError:
            return 0
        found = MESG_RE.findall(data)
        return int(found[-1]) if found else 0

    def stop(self):
        if self.proc is not None:
            bl.stop_process(self.proc, timeout=5)
            self.proc = None
        if self._out:
            self._out.close()
            self._out = None


def source_argv(binary, port, p):
    return [binary, "-d", "-s", str(p.connections), "-m", str(p.messages), "-l", str(p.size),
            "-N", "-f", "load@bench.test", "-t", f"rcpt@{HOP_DOMAIN}", "-M", "source.bench.test",
            f"127.0.0.1:{port}"]


def one_run(tools, pf, p, kind, keep):
    """One direct or relay run; its metrics."""
    work = Path(tempfile.mkdtemp(prefix=f"ringpost-bench-hop-{kind}-"))
    sink, rp, ok = PostfixSink(pf["smtp-sink"], work), None, False
    try:
        sink.start()
        port = sink.port
        if kind == "relay":
            rp = bl.Ringpost(tools["ringpost"], work, {HOP_DOMAIN: f"127.0.0.1:{sink.port}"},
                             max_connections=p.max_connections, shards=p.shards)
            rp.start()
            port = rp.port
            time.sleep(0.3)  # let the shards settle
        cpu0 = rp.cpu() if rp else 0.0
        t0 = time.monotonic()
        src = subprocess.run(source_argv(pf["smtp-source"], port, p), capture_output=True,
                             timeout=p.wait_limit())
        t_submit = time.monotonic() - t0
        if src.returncode != 0:
            raise bl.BenchError(f"smtp-source exited with {src.returncode}: "
                                f"{src.stderr.decode(errors='replace')[-300:]}")
        deadline = time.monotonic() + p.wait_limit()
        while sink.count() < p.messages and time.monotonic() < deadline:
            if rp and not rp.alive():
                raise bl.BenchError("ringpost exited during the run\n" + rp.diagnostics())
            time.sleep(0.01)
        seconds = time.monotonic() - t0
        got = sink.count()
        m = {"kind": kind, "messages": p.messages, "delivered": got, "lost": p.messages - got,
             "seconds": round(seconds, 3), "rate": round(got / seconds, 1),
             "submit_rate": round(p.messages / t_submit, 1)}
        if rp:
            cpu = (rp.cpu() or 0.0) - cpu0
            m["cpu_s"] = round(cpu, 3)
            m["cpu_us_per_msg"] = round(cpu / max(1, got) * 1e6, 2)
            m["accepted"] = rp.accepted()
        ok = got == p.messages
        return m
    finally:
        if rp:
            rp.stop()
        sink.stop()
        if ok and not keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            bl.warn(f"hop {kind}: kept {work}")


def line(m):
    s = f"{m['kind']:6} {m['delivered']:,} in {m['seconds']:.2f} s = {m['rate']:,.0f}/s"
    if "cpu_us_per_msg" in m:
        s += f" (submit {m['submit_rate']:,.0f}/s), ringpost CPU {m['cpu_us_per_msg']:.1f} us/msg"
    return s


def run_hop(tools, p, a, doc):
    """The hop preset: a.runs pairs (direct, relay); fills doc; returns
    whether something failed."""
    pf = tools_or_error()
    failed = False
    pairs = []
    for i in range(a.runs):
        pair = {}
        for kind in ("direct", "relay"):
            label = f"hop run {i + 1}/{a.runs} {kind}"
            bl.say(f"{label}: smtp-source {p.messages:,} x {bl.fmt_bytes(p.size)} over "
                   f"{p.connections} sessions")
            try:
                m = one_run(tools, pf, p, kind, a.keep)
            except (bl.BenchError, subprocess.TimeoutExpired) as e:
                print(f"bench/run: {label} failed: {e}", flush=True)
                m = {"kind": kind, "error": str(e)}
            m["group"] = kind
            doc["runs"].append(m)
            failed |= "error" in m or bool(m.get("lost"))
            if "error" not in m and not a.json_only:
                print(f"run {i + 1}/{a.runs}: {line(m)}", flush=True)
            pair[kind] = m
        if all("error" not in pair[k] for k in pair):
            pair_ratio = pair["relay"]["rate"] / pair["direct"]["rate"]
            pairs.append(pair_ratio)
            if not a.json_only:
                print(f"run {i + 1}/{a.runs}: relay / direct = {pair_ratio:.2f}", flush=True)
    good = {k: [m for m in doc["runs"] if m.get("kind") == k and "error" not in m]
            for k in ("direct", "relay")}
    if good["direct"] and good["relay"]:
        med = {k: {"rate": median([m["rate"] for m in v])} for k, v in good.items()}
        med["relay"]["cpu_us_per_msg"] = median([m["cpu_us_per_msg"] for m in good["relay"]])
        med["relay"]["submit_rate"] = median([m["submit_rate"] for m in good["relay"]])
        med["ratio"] = round(med["relay"]["rate"] / med["direct"]["rate"], 3)
        med["pair_ratio_median"] = round(median(pairs), 3) if pairs else None
        doc["medians"] = med
        if not a.json_only:
            print(f"MEDIANS of {len(good['relay'])} pairs: direct {med['direct']['rate']:,.0f}/s, "
                  f"relay {med['relay']['rate']:,.0f}/s, relay / direct = {med['ratio']:.2f} "
                  f"(per-pair median {med['pair_ratio_median']}), ringpost CPU "
                  f"{med['relay']['cpu_us_per_msg']:.1f} us/msg")
    return failed
