"""submitters.py - concurrent clients that submit numbered messages until
each is acknowledged, surviving daemon restarts, for the kill -9 and
exhaustion tests.

Message i has the test id PREFIX-i in an X-Test-Id header and as its last
body line "X-End: PREFIX-i", so a copy cut short never counts (see
complete_ids). A Work object hands out message numbers; a client that
does not get the promise (250 "queued as", or an id in a 202) for one puts
it back and sends it again later, so nothing is ever given up: duplicates
are allowed, loss is not. Every refusal is counted by its reply (code and
enhanced code, or HTTP status and error code)."""

import json
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path

from .clients import SMTPConn, dot_stuff, queued_id
from .config import API_KEY

SENDER = "load@origin.test"


def smtp_message(prefix, i, rcpt, size=None):
    """Message i as SMTP content (CRLF lines)."""
    r = random.Random(i)
    tid = f"{prefix}-{i}"
    target = size or r.randint(400, 3000)
    lines, n = [], 0
    while n < target:
        ln = f"{tid} {len(lines)}: {'x' * r.randint(10, 70)}\r\n"
        lines.append(ln)
        n += len(ln)
    return (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {tid}\r\nX-Test-Id: {tid}\r\n\r\n"
            + "".join(lines) + f"X-End: {tid}\r\n").encode()


def api_message(prefix, i, rcpt, size=None):
    """Message i as an API message object."""
    r = random.Random(i)
    tid = f"{prefix}-{i}"
    target = size or r.randint(400, 3000)
    lines, n = [], 0
    while n < target:
        ln = f"{tid} {len(lines)}: {'y' * r.randint(10, 70)}\n"
        lines.append(ln)
        n += len(ln)
    return {"from": SENDER, "to": [rcpt], "subject": tid, "headers": {"X-Test-Id": tid},
            "text": "".join(lines) + f"X-End: {tid}\n"}


class Work:
    """Message numbers 0..n-1 to hand out, and the book of what was
    acknowledged (number -> queue id of the last promise)."""

    def __init__(self, n):
        self.lock = threading.Lock()
        self.next = 0
        self.n = n
        self.retry = []
        self.acked = {}
        self.refused = Counter()   # reply -> count (not promises: sent again)
        self.cut = 0               # transactions cut short (connection lost)
        self.stop = False
        self.failure = None

    def take(self, k):
        """Up to k numbers to send (retries first); [] when none is left now."""
        with self.lock:
            out = self.retry[:k]
            del self.retry[:k]
            while len(out) < k and self.next < self.n:
                out.append(self.next)
                self.next += 1
            return out

    def give_back(self, nums):
        with self.lock:
            self.retry.extend(nums)

    def ack(self, i, qid):
        with self.lock:
            self.acked[i] = qid

    def refuse(self, why, nums=()):
        with self.lock:
            self.refused[why] += 1
            self.retry.extend(nums)

    def done(self):
        with self.lock:
            return len(self.acked) >= self.n

    def count(self):
        with self.lock:
            return len(self.acked)


def _reply_key(lines):
    m = re.match(r"^(\d{3})(?:[ -](\d\.\d{1,3}\.\d{1,3}))?", lines[-1])
    return f"{m.group(1)} {m.group(2) or ''}".strip() if m else lines[-1][:20]


def smtp_client(work, port, prefix, rcpt_of, *, bdat=False, deadline, batch=1, size=None):
    """A thread's body: SMTP submission until every number is acknowledged
    or work.stop. bdat: MAIL, RCPT and BDAT n LAST with the content in one
    write; else MAIL/RCPT/DATA pipelined, then the content."""
    conn = None
    while not work.stop and not work.done():
        if time.monotonic() > deadline:
            work.failure = work.failure or "a client gave up: the daemon did not come back"
            return
        nums = work.take(batch)
        if not nums:
            time.sleep(0.05)  # others hold the last ones; they may come back
            continue
        k = 0
        try:
            if conn is None:
                conn = SMTPConn(port, timeout=30)
                conn.expect(220, "banner")
                conn.ehlo("load.client.test")
            for k, i in enumerate(nums):
                rcpt = rcpt_of(i)
                data = smtp_message(prefix, i, rcpt, size)
                if bdat:
                    conn.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\n"
                              f"BDAT {len(data)} LAST\r\n".encode() + data)
                else:
                    conn.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
                refused = None
                for stage in ("MAIL", "RCPT"):
                    code, lines = conn.read_reply()
                    if code not in (250, 251):
                        refused = f"{stage} {_reply_key(lines)}"
                        break
                if refused:
                    # Refused at MAIL or RCPT (452 4.3.1 when the spool is
                    # full): what was pipelined behind fails too; start over.
                    work.refuse(refused, [i] + nums[k + 1:])
                    conn.close()
                    conn = None
                    time.sleep(0.1)
                    break
                if not bdat:
                    conn.expect(354, "DATA")
                    conn.send(dot_stuff(data))
                code, lines = conn.read_reply()
                if code == 250 and "queued as" in lines[-1]:
                    work.ack(i, queued_id(lines))
                else:
                    work.refuse(("BDAT " if bdat else "DATA ") + _reply_key(lines), [i])
                    time.sleep(0.05)
        except (OSError, EOFError, ConnectionError, Exception) as e:
            # The daemon went away mid-transaction (kill -9) or answered
            # out of turn: whatever had no promise is sent again.
            work.give_back(nums[k:] if nums[k] not in work.acked else nums[k + 1:])
            with work.lock:
                work.cut += 1
            if conn:
                conn.close()
            conn = None
            if not isinstance(e, (OSError, EOFError, ConnectionError)):
                work.refused[f"{type(e).__name__}"] += 1
            time.sleep(0.05)
    if conn:
        try:
            conn.send("QUIT\r\n")
        except OSError:
            pass
        conn.close()


def api_client(work, port, prefix, rcpt_of, *, deadline, batch=200, size=None, key=API_KEY):
    """A thread's body: POST /v1/messages/batch of `batch` messages (batch
    0: POST /v1/messages, one message a request) until every number is
    acknowledged; an entry without an id, or a request without an answer,
    is sent again. 503 answers are counted with their Retry-After (present
    or not), refused batch entries by their error code."""
    import http.client
    conn = None
    while not work.stop and not work.done():
        if time.monotonic() > deadline:
            work.failure = work.failure or "the API client gave up"
            return
        nums = work.take(batch or 1)
        if not nums:
            time.sleep(0.05)
            continue
        msgs = [api_message(prefix, i, rcpt_of(i), size) for i in nums]
        body = json.dumps(msgs[0] if not batch else {"messages": msgs}).encode()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/v1/messages/batch" if batch else "/v1/messages", body,
                         {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 202:
                try:
                    code = json.loads(data)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = "?"
                ra = r.getheader("Retry-After")
                work.refuse(f"HTTP {r.status} {code}{' Retry-After' if ra else ''}", nums)
                time.sleep(0.2)
                continue
            doc = json.loads(data)
            res = doc["results"] if batch else [doc]
            again = []
            for i, e in zip(nums, res):
                if e.get("id"):
                    work.ack(i, e["id"])
                else:
                    again.append(i)
                    work.refuse(f"entry {(e.get('error') or {}).get('code')}")
            again += nums[len(res):]
            if again:
                work.give_back(again)
                time.sleep(0.1)
        except (OSError, http.client.HTTPException, ValueError):
            work.give_back(nums)
            with work.lock:
                work.cut += 1
            if conn:
                conn.close()
            conn = None
            time.sleep(0.05)
    if conn:
        conn.close()


def start_clients(work, *, smtp_port, api_port=None, prefix, rcpt_of, smtp=4, api=0,
                  timeout=300, size=None, api_batch=200):
    """Start the client threads (half the SMTP ones use BDAT, and with
    more than one API client the odd ones post single messages); returns
    them."""
    deadline = time.monotonic() + timeout
    ths = []
    for c in range(smtp):
        ths.append(threading.Thread(target=smtp_client, args=(work, smtp_port, prefix, rcpt_of),
                                    kwargs={"bdat": c % 2 == 1, "deadline": deadline,
                                            "size": size}, daemon=True))
    for c in range(api):
        ths.append(threading.Thread(target=api_client, args=(work, api_port, prefix, rcpt_of),
                                    kwargs={"deadline": deadline,
                                            "batch": api_batch if c % 2 == 0 else 0,
                                            "size": size}, daemon=True))
    for t in ths:
        t.start()
    return ths


def complete_ids(directory, prefix):
    """Test ids of complete copies in a ringpost-sink --save directory
    (X-Test-Id and, later, X-End with the same id): id -> copies."""
    got = Counter()
    rx = re.compile(rb"^X-Test-Id: (" + re.escape(prefix.encode()) + rb"-\d+)\r?$.*"
                    rb"^X-End: \1\r?$", re.M | re.S)
    for p in Path(directory).glob("*.eml"):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue
        m = rx.search(data)
        if m:
            got[m.group(1).decode()] += 1
    return got
