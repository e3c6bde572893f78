"""ledger.py - who got what, for the chaos, kill -9 and exhaustion tests:
every recipient's outcome from three independent sources, and the checks
that tie them together.

  sink copies   ringpost-sink --save files: the envelope line names the
                recipients the sink took; numbers listed in DIR/unacked are
                copies whose 250 the sink withheld (the drop250 fault)
  API states    GET /v1/messages/{id} for every message, fetched over a few
                keep-alive connections (100,000 GETs take seconds, not minutes)
  DSNs          GET /v1/bounces and each report's Final-Recipient lines

Also sizes(): how big a test runs (RINGPOST_CHAOS_FULL=1 for the sizes of
issue 13, reduced by default, reduced further under ASan)."""

import http.client
import json
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path

from .base import SANITIZE, TestFailure, check, log
from .config import API_KEY

FULL = os.environ.get("RINGPOST_CHAOS_FULL", "") not in ("", "0")


def sizes(full, reduced, asan):
    """The size a test runs at: full with RINGPOST_CHAOS_FULL=1, else
    reduced (asan under a sanitizer build, which runs about 3x slower).
    Each may be a number or a dict of them."""
    if FULL:
        return full
    return asan if SANITIZE else reduced


# ---- the sink's saved copies ---------------------------------------------

_env_re = re.compile(rb"^X-Sink-Envelope: from=<([^>]*)>(?: to=(.*))?$")


class SinkCopies:
    """Every copy a ringpost-sink --save directory holds, by recipient.
    tag_re (bytes regex with one group) names the test id found in each
    copy's first 4 KiB (the header), kept per copy for content checks."""

    def __init__(self, directory, tag_re=None):
        self.dir = Path(directory)
        self.acked = Counter()     # recipient -> copies the sink said 250 for
        self.unacked = Counter()   # recipient -> copies whose 250 was withheld
        self.tags = {}             # recipient -> set of test ids seen in its copies
        self.files = 0
        self.partial = 0           # files caught mid-write (no envelope line yet)
        withheld = set()
        try:
            withheld = {int(x) for x in (self.dir / "unacked").read_text().split()}
        except FileNotFoundError:
            pass
        self.withheld = len(withheld)
        rx = re.compile(tag_re) if tag_re else None
        for p in self.dir.glob("*.eml"):
            try:
                with open(p, "rb") as f:
                    head = f.read(4096)
            except FileNotFoundError:
                continue
            line, _, rest = head.partition(b"\r\n")
            m = _env_re.match(line)
            if not m or not _:
                self.partial += 1
                continue
            self.files += 1
            rcpts = [a.strip(b"<>").decode() for a in (m.group(2) or b"").split(b",") if a]
            into = self.unacked if int(p.stem) in withheld else self.acked
            tag = None
            if rx:
                t = rx.search(rest)
                tag = t.group(1).decode() if t else None
            for r in rcpts:
                into[r] += 1
                if rx:
                    self.tags.setdefault(r, set()).add(tag)

    def copies(self, rcpt):
        return self.acked[rcpt] + self.unacked[rcpt]


def sink_envelope_rcpts(directory):
    """Recipients of the complete copies in a --save directory (Counter),
    without telling acknowledged from withheld ones."""
    c = SinkCopies(directory)
    return c.acked + c.unacked


# ---- the API ------------------------------------------------------------

class _Api:
    """One keep-alive connection to the daemon's HTTP API."""

    def __init__(self, port, key, timeout):
        self.port, self.key, self.timeout = port, key, timeout
        self.c = None

    def get(self, path):
        for attempt in range(3):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port,
                                                        timeout=self.timeout)
                self.c.request("GET", path, headers={"Authorization": f"Bearer {self.key}"})
                r = self.c.getresponse()
                body = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, body
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def api_get_many(port, paths, conns=4, key=API_KEY, timeout=30):
    """GET every path over `conns` keep-alive connections in threads:
    {path: (status, body bytes)}."""
    out = {}
    lock = threading.Lock()
    work = list(paths)
    errors = []

    def worker(part):
        a = _Api(port, key, timeout)
        try:
            for p in part:
                st, body = a.get(p)
                with lock:
                    out[p] = (st, body)
        except Exception as e:  # reported below, not lost in a thread
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            a.close()
    ths = [threading.Thread(target=worker, args=(work[i::conns],), daemon=True)
           for i in range(conns)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    check(not errors, f"API GETs failed: {errors[:3]}")
    return out


def api_states(d, ids, conns=4):
    """Every recipient of the messages ids: {email: (state, last_response,
    message id)}. A message the API does not know fails the test."""
    res = api_get_many(d.api_port, [f"/v1/messages/{i}" for i in ids], conns)
    states = {}
    for path, (st, body) in res.items():
        check(st == 200, f"GET {path}: HTTP {st}: {body[:200]!r}")
        m = json.loads(body)
        for r in m["recipients"]:
            states[r["email"]] = (r["state"], r.get("last_response") or "", m["id"])
    return states


def dsn_recipients(d, conns=4):
    """Final-Recipient addresses over every DSN in the bounce mailbox, with
    their Action (Counter of (address, action)), and the number of DSNs."""
    st, body = _Api(d.api_port, API_KEY, 60).get("/v1/bounces")
    check(st == 200, f"GET /v1/bounces: HTTP {st}")
    uids = [m["uid"] for m in json.loads(body)["messages"]]
    res = api_get_many(d.api_port, [f"/v1/bounces/{u}" for u in uids], conns)
    out = Counter()
    rx = re.compile(rb"(?im)^Final-Recipient:\s*rfc822;\s*(\S+?)\r?\nAction:\s*(\w+)")
    for path, (st, raw) in res.items():
        check(st == 200, f"GET {path}: HTTP {st}")
        for m in rx.finditer(raw):
            out[(m.group(1).decode().lower(), m.group(2).decode().lower())] += 1
    return out, len(uids)


def wait_queue_empty(d, timeout, what="the queue to drain", interval=1.0, progress=None):
    """Poll GET /v1/stats until nothing is queued, deferred or in flight;
    the last stats. progress(stats) is called every few seconds."""
    t0 = time.monotonic()
    last = 0
    st = {}
    while True:
        st = json.loads(_Api(d.api_port, API_KEY, 30).get("/v1/stats")[1])
        if not (st.get("queued", 0) + st.get("deferred", 0) + st.get("in_flight", 0)):
            return st
        if not d.alive():
            raise TestFailure(f"the daemon died while waiting for {what}:\n{d.log_tail()}")
        if time.monotonic() - t0 > timeout:
            raise TestFailure(f"{what}: still {st.get('queued')} queued, {st.get('deferred')} "
                              f"deferred, {st.get('in_flight')} in flight after {timeout:.0f}s")
        if progress and time.monotonic() - last >= 5:
            last = time.monotonic()
            progress(st)
        time.sleep(interval)


# ---- the ledger ----------------------------------------------------------

class Ledger:
    """Every recipient's fate from the three sources; check() says whether
    each ended delivered or bounced exactly once.

    Rules (at least once, never lost, never both):
    - the API says delivered or bounced for every recipient, nothing else;
    - delivered: exactly one copy the sink acknowledged, no DSN;
    - bounced: no acknowledged copy, exactly one DSN naming it (failed);
    - every further copy is one the sink took whole and withheld the 250
      for (DIR/unacked): a duplicate the fault explains. Any other extra
      copy, or a copy for an address never submitted, is a failure."""

    def __init__(self, rcpts, states, copies, dsns):
        self.rcpts = set(rcpts)
        self.states = states
        self.copies = copies
        self.dsns = dsns

    def check(self, expect_bounced=(), expect_delivered_only=()):
        c, st = self.copies, self.states
        problems = []
        n = Counter()
        dsn_by = Counter()
        for (addr, action), k in self.dsns.items():
            if action == "failed":
                dsn_by[addr] += k
        for r in sorted(self.rcpts):
            state, resp, _ = st.get(r, (None, "", None))
            acked, unacked, nd = c.acked[r], c.unacked[r], dsn_by[r.lower()]
            n[state] += 1
            n["copies_unacked"] += unacked
            if unacked:
                n["rcpts_with_withheld_copy"] += 1
            if state == "delivered":
                if acked != 1:
                    problems.append(f"{r}: delivered, but the sink acknowledged {acked} copies")
                if nd:
                    problems.append(f"{r}: delivered, yet {nd} DSN(s) name it")
                n["duplicates"] += acked + unacked - 1 if acked else 0
            elif state == "bounced":
                if acked:
                    problems.append(f"{r}: bounced ({resp}), yet the sink acknowledged "
                                    f"{acked} copies")
                if nd != 1:
                    problems.append(f"{r}: bounced ({resp}) with {nd} DSNs")
                if unacked:
                    n["bounced_after_withheld_250"] += 1
            else:
                problems.append(f"{r}: state {state} ({resp})")
        unknown = (set(c.acked) | set(c.unacked)) - self.rcpts
        if unknown:
            problems.append(f"{len(unknown)} addresses at the sink were never submitted, "
                            f"e.g. {sorted(unknown)[:3]}")
        for r in expect_bounced:
            if st.get(r, ("",))[0] != "bounced":
                problems.append(f"{r}: expected bounced, got {st.get(r)}")
        stray = set(dsn_by) - {r.lower() for r in self.rcpts}
        if stray:
            problems.append(f"DSNs for addresses never submitted: {sorted(stray)[:3]}")
        self.counts = n
        return problems

    def summary(self):
        n = self.counts
        return (f"{len(self.rcpts)} recipients: {n['delivered']} delivered, {n['bounced']} "
                f"bounced, {n['duplicates']} duplicates (all explained by "
                f"{n['copies_unacked']} withheld 250s), {n['bounced_after_withheld_250']} "
                f"bounced after a withheld 250")


def report(name, fields):
    """One line of key=value results, also appended to RINGPOST_CHAOS_REPORT
    (a file) when that is set, for the results note."""
    line = f"{name}: " + " ".join(f"{k}={v}" for k, v in fields.items())
    log(line)
    path = os.environ.get("RINGPOST_CHAOS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")
