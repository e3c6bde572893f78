"""test_shaping.py - traffic shaping as a receiver sees it (issue 17): sessions
that match the work, concurrency and rate that adapt to what the receiver
tolerates.

Each case has its own daemon (shipped defaults: no max_connections or
connect_timeout of the tests' own; [queue] retry as the harness sets it) and
its own receiver: an SMTP server on a thread of this process (asyncio, no
PIPELINING, no CHUNKING) that records every TCP session it accepts: when it
opened and closed, whether it was refused at the greeting, how many MAIL
commands it carried (an "empty" session is one that was not refused and
carried no MAIL, closed or still open once all mail is in: nothing is left
to send on it) and when each message (by its X-Test-Id) arrived.

Cases:
  - slow greeting: the receiver holds its 220 for 0.3 s; 300 messages to
    one domain through the API arrive, each exactly once, and fewer than 5%
    of the sessions are empty (sessions opened for work that other sessions
    had already taken: with TLS each is a full handshake for nothing);
  - concurrency cap: the receiver serves at most 5 sessions at once (from
    accept until it answers QUIT) and answers the others
    `421 4.7.0 Too many concurrent connections` at the greeting, then
    closes; 200 messages arrive, each once, with fewer than 20 refused
    connections, within 30 s of the submission (times SLOW);
  - rate limit: the receiver answers MAIL `451 4.7.1 Rate limited, try
    again later` while RATE_N transactions were already accepted (MAIL
    answered 250) in the last second (a sliding window); 100 messages
    arrive, each once, within 90 s, at least one 451 was given (else the
    case tested nothing) and /v1/stats counts none bounced. /v1/stats'
    "effective" fields of the domain and its destination (effective
    concurrency and rate) are logged as they change, in every case; their
    absence is only logged, not a failure (yet);
  - silent sessions: every third session the receiver accepts never gets
    a greeting (ringpost waits up to the 5-minute greeting timeout); with 2
    messages per session, 40 messages arrive within 30 s: a session stuck
    before its greeting is not counted as on its way, so the last few jobs
    do not wait for it.
In every case fewer than 5% of the sessions (refused and silent ones
included) end without a MAIL command: parked sessions that have carried
nothing are given work first. Each daemon exits 0 on SIGTERM with a clean log (ASan builds too).

The constants below can be changed to check the receivers themselves, e.g.
the slow-greeting case with GREETING_DELAY = 0 and SLOW_KEYS =
{"max_connections": 5} must pass on any build.
"""

import asyncio
import collections
import re
import threading
import time

from harness import (Cases, SLOW, TestEnv, TestFailure, api_submit_batch, check, log,
                     raise_failures, run_cases, run_test, stop_clean)

SENDER = "shaping@origin.test"

GREETING_DELAY = 0.3  # seconds the slow receiver holds its 220
N_SLOW = 300
SLOW_KEYS = {}  # [domain slow.test] keys beyond the route (none: shipped defaults)
EMPTY_SHARE = 0.05

CAP = 5  # concurrent sessions the capped receiver serves
N_CAP = 200
MAX_REFUSED = 20
CAP_SECONDS = 30
CAP_KEYS = {}

SILENT_EVERY = 3  # the silent receiver never greets every third session
N_SILENT = 40
SILENT_SECONDS = 30  # the greeting timeout is 300 s
SILENT_KEYS = {"max_messages_per_connection": 2}

RATE_N = 20  # messages per sliding second the rate-limited receiver accepts
N_RATE = 100
RATE_SECONDS = 90
RATE_KEYS = {}

IDLE_TIMEOUT = 120  # the receiver closes a session silent for this long

cases = Cases()


class Ctx:
    pass


# ---- the receiver --------------------------------------------------------

class Session:
    """One TCP session as the receiver saw it."""

    def __init__(self):
        self.opened = time.time()
        self.closed = None
        self.refused = False  # answered 421 at the greeting
        self.silent = False  # never greeted (silent_every)
        self.mails = 0  # MAIL commands, accepted or not
        self.messages = 0  # messages accepted (250 after the data)


class ShapingReceiver:
    """An asyncio SMTP server on its own thread and loop, on 127.0.0.1:0.
    greeting_delay: seconds before the 220. max_sessions: sessions served
    at once (0 = any); a session counts from accept until the server lets it
    go (just before its 221 to QUIT, or when it closes), and one beyond the
    cap is answered 421 4.7.0 at the greeting and closed. rate_n: MAIL is
    answered 451 4.7.1 while rate_n messages arrived in the last second
    (0 = no limit); a message counts from its accepted MAIL, as a receiver's
    limiter counts: sessions in parallel all reach MAIL before any message
    is complete. silent_every: every so many sessions (the 3rd, 6th, ...)
    never greet: accepted, then silent until the client goes."""

    def __init__(self, greeting_delay=0.0, max_sessions=0, rate_n=0, silent_every=0):
        self.greeting_delay = greeting_delay
        self.silent_every = silent_every
        self.max_sessions = max_sessions
        self.rate_n = rate_n
        self.lock = threading.Lock()
        self.sessions = []
        self.arrivals = []  # (time.time(), X-Test-Id)
        self.rate_refusals = 0
        self.current = 0
        self.peak = 0
        self.window = collections.deque()  # accepted MAILs within the last second
        self.tasks = set()
        self.writers = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.port = None

    def start(self):
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, "127.0.0.1", 0, backlog=1024, limit=1 << 20),
            self.loop)
        self.server = fut.result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if not self.thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        except Exception as e:  # cleanup goes on; say why it was not clean
            log(f"receiver shutdown: {type(e).__name__}: {e}")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()

    async def _shutdown(self):
        self.server.close()
        for w in list(self.writers):
            w.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- counting

    def snapshot(self):
        """The counts so far (a dict)."""
        with self.lock:
            sessions = list(self.sessions)
            arrivals = list(self.arrivals)
            rate_refusals = self.rate_refusals
            peak = self.peak
        ids = collections.Counter(i for _, i in arrivals)
        refused = sum(1 for s in sessions if s.refused)
        served = [s for s in sessions if not s.refused and not s.silent]
        return {
            "sessions": len(sessions), "refused": refused,
            "silent": sum(1 for s in sessions if s.silent),
            "empty": sum(1 for s in served if s.mails == 0),
            "open": sum(1 for s in served if s.closed is None),
            "messages": len(arrivals), "distinct": len(ids),
            "duplicates": sorted(i for i, k in ids.items() if k > 1),
            "ids": set(ids), "peak": peak, "rate_refusals": rate_refusals,
            "first": min((t for t, _ in arrivals), default=None),
            "last": max((t for t, _ in arrivals), default=None),
        }

    def distinct(self):
        with self.lock:
            return len({i for _, i in self.arrivals})

    def _rate_limited(self, now):
        w = self.window
        while w and w[0] <= now - 1.0:
            w.popleft()
        return self.rate_n and len(w) >= self.rate_n

    # -- one session

    async def _session(self, reader, writer):
        s = Session()
        self.tasks.add(asyncio.current_task())
        self.writers.add(writer)
        with self.lock:
            self.sessions.append(s)
            silent = self.silent_every and len(self.sessions) % self.silent_every == 0
        state = {"counted": False}
        try:
            if silent:
                s.silent = True
                await reader.read()  # until the client gives up
                return
            if self.max_sessions and self.current >= self.max_sessions:
                s.refused = True
                writer.write(b"421 4.7.0 Too many concurrent connections\r\n")
                await writer.drain()
                return
            with self.lock:
                self.current += 1
                self.peak = max(self.peak, self.current)
            state["counted"] = True
            if self.greeting_delay:
                await asyncio.sleep(self.greeting_delay)
            writer.write(b"220 shaping.test ESMTP\r\n")
            await writer.drain()
            await self._commands(s, reader, writer, state)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                asyncio.TimeoutError):
            pass
        finally:
            self._release(state)
            s.closed = time.time()
            self.writers.discard(writer)
            self.tasks.discard(asyncio.current_task())
            writer.close()

    def _release(self, state):
        if state["counted"]:
            state["counted"] = False
            with self.lock:
                self.current -= 1

    async def _commands(self, s, reader, writer, state):
        in_tx, rcpts = False, 0
        while True:
            line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                reply = b"250-shaping.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
            elif verb == b"HELO":
                reply = b"250 shaping.test\r\n"
            elif verb == b"MAIL":
                s.mails += 1
                if in_tx:
                    reply = b"503 5.5.1 Nested MAIL command\r\n"
                elif self._rate_limited(time.time()):
                    with self.lock:
                        self.rate_refusals += 1
                    reply = b"451 4.7.1 Rate limited, try again later\r\n"
                else:
                    self.window.append(time.time())
                    in_tx, rcpts = True, 0
                    reply = b"250 2.1.0 Ok\r\n"
            elif verb == b"RCPT":
                if in_tx:
                    rcpts += 1
                    reply = b"250 2.1.5 Ok\r\n"
                else:
                    reply = b"503 5.5.1 MAIL first\r\n"
            elif verb == b"DATA":
                if not in_tx or not rcpts:
                    reply = b"503 5.5.1 No valid recipients\r\n"
                else:
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    tid = await self._data(reader)
                    now = time.time()
                    with self.lock:
                        self.arrivals.append((now, tid))
                    s.messages += 1
                    in_tx = False
                    reply = b"250 2.0.0 Ok: queued\r\n"
            elif verb == b"RSET":
                in_tx = False
                reply = b"250 2.0.0 Ok\r\n"
            elif verb == b"NOOP":
                reply = b"250 2.0.0 Ok\r\n"
            elif verb == b"QUIT":
                self._release(state)
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                reply = b"502 5.5.2 Command not implemented\r\n"
            writer.write(reply)
            await writer.drain()

    async def _data(self, reader):
        """Read the data up to the lone dot; its X-Test-Id (or None)."""
        tid, in_head = None, True
        while True:
            ln = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
            if not ln:
                raise asyncio.IncompleteReadError(b"", None)
            if ln == b".\r\n":
                return tid
            if in_head:
                if ln in (b"\r\n", b"\n"):
                    in_head = False
                else:
                    m = re.match(rb"(?i)X-Test-Id:\s*(\S+)", ln)
                    if m:
                        tid = m.group(1).decode()


# ---- one case --------------------------------------------------------------

def msgs(domain, n, tag):
    return [{"from": SENDER, "to": [f"u{i}@{domain}"], "subject": f"{tag} {i}",
             "text": f"{tag} {i}\n", "headers": {"X-Test-Id": f"{tag}-{i}"}} for i in range(n)]


def stats(d):
    r = d.api("GET", "/v1/stats")
    check(r.status == 200, f"GET /v1/stats: HTTP {r.status}: {r.body[:200]!r}")
    return r.json()


def effective_fields(st, domain):
    """{path: value} of every key named like "effective" in the domain's
    entry of /v1/stats and in the destinations that hold the domain."""
    found = {}

    def walk(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if "effective" in str(k).lower():
                    found[f"{path}.{k}"] = v
                walk(v, f"{path}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{path}[{i}]")
    for e in st.get("domains", []):
        if e.get("domain") == domain:
            walk(e, "domain")
    for e in st.get("destinations", []):
        if domain in (e.get("domains") or []) or e.get("domain") == domain:
            walk(e, "destination")
    return found


class Shaped:
    """A case's receiver and daemon (routes the domain to the receiver);
    close() stops both, the daemon with stop_clean."""

    def __init__(self, x, name, domain, receiver, keys):
        self.x, self.name, self.domain = x, name, domain
        self.rx = receiver.start()
        x.env.receivers.append(self.rx)
        self.d = x.env.daemon(routes={domain: self.rx.addr}, name=name, with_api=True,
                              domain_defaults={"max_connections": None,
                                               "connect_timeout": None},
                              domains={domain: dict(keys)} if keys else None)
        self.d.start()
        self.seen = {}  # effective field -> the distinct values seen, in order
        self.t0 = None

    def submit(self, n, tag):
        self.t0 = time.time()
        api_submit_batch(self.d, msgs(self.domain, n, tag))
        self.ids = {f"{tag}-{i}" for i in range(n)}

    def observe(self):
        for k, v in effective_fields(stats(self.d), self.domain).items():
            vals = self.seen.setdefault(k, [])
            if not vals or vals[-1] != v:
                vals.append(v)

    def summary(self, snap):
        took = f"{snap['last'] - self.t0:.1f}s" if snap["last"] else "-"
        return (f"{self.name}: {snap['distinct']}/{len(self.ids)} messages "
                f"({snap['messages']} deliveries) in {took}; sessions {snap['sessions']}, "
                f"empty {snap['empty']}, refused at greeting {snap['refused']}, still open "
                f"{snap['open']}, peak concurrent {snap['peak']}, 451 rate refusals "
                f"{snap['rate_refusals']}")

    def check_empty(self, snap):
        """Fewer than EMPTY_SHARE of the sessions carried no MAIL."""
        share = snap["empty"] / max(snap["sessions"], 1)
        check(share < EMPTY_SHARE, f"{self.name}: {snap['empty']} of {snap['sessions']} "
              f"sessions carried no MAIL ({share:.0%}; under {EMPTY_SHARE:.0%} expected)")

    def wait_all(self, timeout):
        """Wait until every message arrived (timeout seconds from the
        submission, times SLOW), polling /v1/stats for the effective fields;
        then the receiver's snapshot. A timeout fails with the counts."""
        deadline = time.monotonic() + timeout * SLOW - (time.time() - self.t0)
        next_poll = 0
        while self.rx.distinct() < len(self.ids):
            now = time.monotonic()
            check(self.d.alive(), f"{self.name}: the daemon died (status "
                  f"{self.d.proc.returncode})")
            if now >= deadline:
                snap = self.rx.snapshot()
                self.log_effective()
                log(self.summary(snap))
                st = stats(self.d)
                raise TestFailure(f"{self.summary(snap)}: not all arrived within "
                                  f"{timeout * SLOW:.0f}s (/v1/stats: delivered "
                                  f"{st.get('delivered')}, deferred {st.get('deferred')}, "
                                  f"queued {st.get('queued')}, bounced {st.get('bounced')})")
            if now >= next_poll:
                self.observe()
                next_poll = now + 0.5
            time.sleep(0.05)
        time.sleep(0.5)  # a duplicate would show by now
        self.observe()
        snap = self.rx.snapshot()
        log(self.summary(snap))
        self.log_effective()
        check(snap["ids"] == self.ids, f"{self.name}: unexpected messages arrived: "
              f"{sorted(snap['ids'] - self.ids)[:5]}")
        check(not snap["duplicates"], f"{self.name}: {len(snap['duplicates'])} messages "
              f"arrived more than once, e.g. {snap['duplicates'][:5]}")
        return snap

    def log_effective(self):
        if self.seen:
            for k, vals in sorted(self.seen.items()):
                more = f" (+{len(vals) - 20} more)" if len(vals) > 20 else ""
                log(f"{self.name}: /v1/stats {k}: {vals[:20]}{more}")
            return
        st = stats(self.d)
        dom = [e for e in st.get("domains", []) if e.get("domain") == self.domain]
        dst = [e for e in st.get("destinations", []) if self.domain in (e.get("domains") or [])]
        log(f"{self.name}: no 'effective' field in /v1/stats for {self.domain}; domain "
            f"entry {dom[:1]}, destination {dst[:1]}")

    def close(self):
        """The daemon first (its sessions get their QUIT answered), then the
        receiver."""
        if self.d.alive():
            stop_clean(self.d, self.x.failures)
        elif self.d.proc is not None:
            self.x.failures.append(f"{self.name}: the daemon died (status "
                                   f"{self.d.proc.returncode})")
        self.rx.stop()


def shaped_case(x, name, domain, receiver, keys, body):
    s = Shaped(x, name, domain, receiver, keys)
    try:
        body(s)
    finally:
        s.close()


@cases.add
def slow_greeting_sessions_match_the_work(x):
    def body(s):
        s.submit(N_SLOW, "slow")
        snap = s.wait_all(60)
        share = snap["empty"] / max(snap["sessions"], 1)
        log(f"{s.name}: {snap['empty']} of {snap['sessions']} sessions empty ({share:.0%}), "
            f"{N_SLOW / max(snap['sessions'] - snap['empty'], 1):.1f} messages per working "
            f"session, {snap['last'] - s.t0:.1f}s")
        check(snap["sessions"] > 0, f"{s.name}: no session counted")
        s.check_empty(snap)
    shaped_case(x, "slowgreet", "slow.test", ShapingReceiver(greeting_delay=GREETING_DELAY),
                SLOW_KEYS, body)


@cases.add
def concurrency_cap_is_learned(x):
    def body(s):
        s.submit(N_CAP, "cap")
        snap = s.wait_all(max(CAP_SECONDS * 2, 60))
        took = snap["last"] - s.t0
        log(f"{s.name}: {snap['refused']} connections refused with 421, "
            f"{N_CAP} messages in {took:.1f}s")
        check(snap["peak"] <= CAP, f"{s.name}: the receiver served {snap['peak']} sessions "
              f"at once, its cap is {CAP} (the receiver is broken)")
        check(snap["refused"] < MAX_REFUSED, f"{s.name}: {snap['refused']} connections "
              f"refused at the greeting (fewer than {MAX_REFUSED} expected)")
        check(took < CAP_SECONDS * SLOW, f"{s.name}: {N_CAP} messages took {took:.1f}s "
              f"(under {CAP_SECONDS * SLOW:.0f}s expected)")
        s.check_empty(snap)
        eff = [v for k, v in effective_fields(stats(s.d), s.domain).items()
               if k.startswith("destination") and v.get("refused_sessions")]
        check(eff and eff[0]["concurrency"] <= CAP and "concurrency" in (eff[0]["reason"] or ""),
              f"{s.name}: /v1/stats does not show the learned concurrency: "
              f"{effective_fields(stats(s.d), s.domain)}")
    shaped_case(x, "capped", "capped.test", ShapingReceiver(max_sessions=CAP), CAP_KEYS, body)


@cases.add
def silent_sessions_are_not_waited_for(x):
    def body(s):
        s.submit(N_SILENT, "silent")
        snap = s.wait_all(SILENT_SECONDS)
        log(f"{s.name}: {snap['silent']} sessions never greeted; {N_SILENT} messages in "
            f"{snap['last'] - s.t0:.1f}s")
        check(snap["silent"] > 0, f"{s.name}: no session was silent: the case tested nothing")
        s.check_empty(snap)
    shaped_case(x, "silent", "silent.test", ShapingReceiver(silent_every=SILENT_EVERY),
                SILENT_KEYS, body)


@cases.add
def rate_limit_slows_and_retries(x):
    def body(s):
        s.submit(N_RATE, "rate")
        snap = s.wait_all(RATE_SECONDS)
        st = stats(s.d)
        log(f"{s.name}: {snap['rate_refusals']} MAIL commands answered 451, {N_RATE} "
            f"messages in {snap['last'] - s.t0:.1f}s; /v1/stats delivered "
            f"{st.get('delivered')}, bounced {st.get('bounced')}")
        check(st.get("bounced") == 0, f"{s.name}: /v1/stats counts {st.get('bounced')} "
              f"bounced: rate-limited mail must wait, never bounce")
        s.check_empty(snap)
        check(snap["rate_refusals"] > 0, f"{s.name}: no MAIL was answered 451: the rate limit "
              f"({RATE_N}/s) was never reached and the case tested nothing")
        # Adapting, not hammering: before shaping every session kept
        # trying (200 refusals for 100 messages).
        check(snap["rate_refusals"] < N_RATE // 2, f"{s.name}: {snap['rate_refusals']} "
              f"refusals for {N_RATE} messages: the rate did not adapt")
        eff = [v for k, v in effective_fields(st, s.domain).items()
               if k.startswith("destination") and v.get("rate_signals")]
        check(eff and eff[0]["rate"] and "rate" in (eff[0]["reason"] or ""),
              f"{s.name}: /v1/stats does not show the rate cap: "
              f"{effective_fields(st, s.domain)}")
    shaped_case(x, "ratelim", "ratelim.test", ShapingReceiver(rate_n=RATE_N), RATE_KEYS, body)


def main():
    with TestEnv("shaping") as env:
        x = Ctx()
        x.env = env
        x.failures = []
        x.failures += run_cases(cases, x, [])
        raise_failures(x.failures)


if __name__ == "__main__":
    run_test(main)
