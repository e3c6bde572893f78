"""test_hostile_content.py - hostile message content, from the HTTP API and
SMTP, against the real daemon; what goes out is read byte for byte by a
raw-socket SMTP receiver written here (it records the wire form of DATA and
every RCPT line, and un-stuffs nothing by itself).

  - template bombs: {{x}} 20,000 times with a 10 KB and then a 100 KB value
    (2 GB in full) -> 413 at once, the daemon's VmHWM (/proc/PID/status)
    barely moves; an html and an unsubscribe bomb too; what one request
    renders for its recipients is bounded (max(4 x max_request_size, 64 MiB)):
    a message with 40 copies of 1.9 MB -> 413, and in a batch the message
    that passes the bound gets its own 413 entry;
  - header injection (curl and urllib): CR, LF or NUL in subject, in a
    subject once a recipient's {{vars}} are in (a batch names the message),
    in the From display name, in headers names and values, headers.To,
    unsubscribe.mailto and an attachment's filename -> 400 naming the
    field, nothing delivered; From "Help <a@x> <b@y>" or an open quote is
    refused; "a@evil.test, Name <s@x>" goes out as one mailbox (a quoted
    phrase) and every accepted message arrives without a smuggled field;
  - lone CR and bare LF: API text, html and raw bodies with "\\r.\\r" and
    "\\n.\\n", and raw-socket DATA and BDAT with the SMTP smuggling payloads:
    the wire our receiver reads has only CRLF line ends, never "<CR>.<CR>"
    or "<LF>.<LF>", one message each, and the text comes back with CRLF;
  - hop limit: 51 Received: fields -> 554 5.4.6 (DATA by a raw socket, BDAT,
    smtplib, swaks, and the bounce MX of a second daemon), 50 are fine,
    Received: lines in the body do not count; API raw -> 400 too_many_hops;
  - ORCPT: an addr-type that is not an atom, bad xtext, control bytes once
    decoded, over 500 octets -> 501 5.5.4; a good one reaches the next hop
    exactly;
  - log fields: a quoted local part "x dsn=9.9.9 status=bounced"@... and a
    remote reply "... status=delivered id=forged" stay inside their own
    fields of the delivery, api and back-off lines (each key once);
  - boundaries: two identical API messages get different boundaries, none
    the old formula of the message id; a DSN's boundary does not hold the
    queue id;
  - [domain] max_recipients_per_message = 100000: one message to 100,000
    recipients that the next hop refuses at RCPT -> one DSN naming all
    100,000 (its recipient records once overflowed the thread's stack), and
    the daemon lives on.
"""

import email
import email.policy
import email.utils
import json
import re
import smtplib
import socket
import subprocess
import threading
import time

from harness import (SLOW, SMTPConn, TestEnv, ThreadedListener, check, curl, dot_stuff, free_port,
                     log, port_accepts, queued_id, raise_failures, run_cases, run_test,
                     stop_clean, wait_for, Cases, API_KEY)

MAX_MESSAGE = 2 * 1024 * 1024
MAX_REQUEST = 8 * 1024 * 1024
RENDER_MAX = max(4 * MAX_REQUEST, 64 << 20)
BOUNCE_DOMAIN = "bounces.hostile.test"
SENDER = "sender@origin.test"

cases = Cases()


# ---- a raw-socket receiver ------------------------------------------------

class RawRecorder(ThreadedListener):
    """An SMTP server that keeps each message's wire form (the bytes after
    354 up to and including CRLF.CRLF) and every RCPT line as sent.
    mode: "accept", "reject" (550 to every RCPT), "busy" (greet with
    greeting, 421, and close). store=False: count messages, keep nothing."""

    def __init__(self, mode="accept", greeting=b"220 rec.hostile.test ESMTP", store=True):
        super().__init__(64)
        self.mode, self.greeting, self.store = mode, greeting, store
        self.lock = threading.Lock()
        self.messages = []  # {"mail", "rcpts": [lines], "wire": bytes}
        self.count = 0
        self.rcpt_lines = 0
        self.start()

    def on_accept(self, c):
        threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _reply(self, line, tx):
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            return (b"250-rec.hostile.test\r\n250-PIPELINING\r\n250-DSN\r\n250-8BITMIME\r\n"
                    b"250-SMTPUTF8\r\n250 SIZE 200000000\r\n"), None
        if verb == b"MAIL":
            tx.clear()
            tx.update(mail=line, rcpts=[])
            return b"250 2.1.0 Ok\r\n", None
        if verb == b"RCPT":
            with self.lock:
                self.rcpt_lines += 1
            if self.mode == "reject":
                return b"550 5.1.1 no such user here\r\n", None
            tx.setdefault("rcpts", []).append(line)
            return b"250 2.1.5 Ok\r\n", None
        if verb == b"DATA":
            return b"354 go ahead\r\n", "data"
        if verb in (b"RSET", b"NOOP"):
            return b"250 2.0.0 Ok\r\n", None
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n", "quit"
        return b"502 5.5.2 Not implemented\r\n", None

    def _session(self, c):
        c.settimeout(120)
        buf, pos, state, tx, data_start = b"", 0, "cmd", {}, 0
        try:
            c.sendall(self.greeting + b"\r\n")
            if self.mode == "busy":
                return
            while True:
                chunk = c.recv(1 << 16)
                if not chunk:
                    return
                buf = buf[pos:] + chunk
                data_start -= pos
                pos = 0
                out = []
                while True:
                    if state == "data":
                        i = (b"\r\n" + buf[data_start:]).find(b"\r\n.\r\n")
                        if i < 0:
                            break
                        end = data_start + i + 3
                        with self.lock:
                            self.count += 1
                            if self.store:
                                self.messages.append({"mail": tx.get("mail"),
                                                      "rcpts": tx.get("rcpts", []),
                                                      "wire": buf[data_start:end]})
                        pos = end
                        state = "cmd"
                        out.append(b"250 2.0.0 Ok: recorded\r\n")
                        continue
                    i = buf.find(b"\r\n", pos)
                    if i < 0:
                        break
                    line = buf[pos:i]
                    pos = i + 2
                    reply, nxt = self._reply(line, tx)
                    out.append(reply)
                    if nxt == "data":
                        state, data_start = "data", pos
                    elif nxt == "quit":
                        c.sendall(b"".join(out))
                        return
                if out:
                    c.sendall(b"".join(out))
        except OSError:
            pass
        finally:
            c.close()

    def find(self, pred, timeout=20, what="a message"):
        def got():
            with self.lock:
                for m in self.messages:
                    if pred(m):
                        return m
            return None
        return wait_for(got, timeout * SLOW, what, interval=0.05)

    def snapshot(self):
        with self.lock:
            return list(self.messages)


def unstuff(wire):
    """The message a wire form carries (CRLF lines, dots un-stuffed)."""
    check(wire.endswith(b"\r\n.\r\n") or wire == b".\r\n", f"wire end {wire[-20:]!r}")
    body = wire[:-3]
    lines = body.split(b"\r\n")
    return b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)


def parsed(m):
    return email.message_from_bytes(unstuff(m["wire"]), policy=email.policy.compat32)


def subject_is(s):
    return lambda m: (parsed(m)["Subject"] or "").strip() == s


def check_canonical(wire, what):
    """Only CRLF line ends, no smuggling terminator, one terminator at the end."""
    for i, b in enumerate(wire):
        if b == 0x0A:
            check(i > 0 and wire[i - 1] == 0x0D, f"{what}: a bare LF at {i}: {wire[max(0, i - 20):i + 20]!r}")
        elif b == 0x0D:
            check(i + 1 < len(wire) and wire[i + 1] == 0x0A,
                  f"{what}: a lone CR at {i}: {wire[max(0, i - 20):i + 20]!r}")
    check(b"\r.\r" not in wire.replace(b"\r\n.\r\n", b"") and b"\n.\n" not in wire,
          f"{what}: a smuggling terminator on the wire")
    check(wire.find(b"\r\n.\r\n") == len(wire) - 5 or wire == b".\r\n",
          f"{what}: CRLF.CRLF before the end")


# ---- helpers -------------------------------------------------------------

def api(x, body, path="/v1/messages"):
    return x.d.api("POST", path, body, timeout=120)


def expect_error(r, status, code, names, what):
    check(r.status == status, f"{what}: HTTP {r.status}, want {status}: {r.body[:300]!r}")
    c, msg = r.error()
    check(c == code, f"{what}: code {c!r}, want {code!r} ({msg!r})")
    for n in names:
        check(n in msg, f"{what}: the message does not name {n!r}: {msg!r}")


def vm_hwm_kb(d):
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def kv_fields(s):
    """[(key, value)] of a log line as a logfmt reader sees it: a value in
    double quotes with \\" \\\\ \\n \\r \\t \\xHH escapes, else up to a blank."""
    out, i, n = [], 0, len(s)
    key_re = re.compile(r"([A-Za-z_][\w.-]*)=")
    while i < n:
        while i < n and s[i] == " ":
            i += 1
        m = key_re.match(s, i)
        if not m:
            j = s.find(" ", i)
            i = n if j < 0 else j
            continue
        i = m.end()
        if i < n and s[i] == '"':
            i += 1
            v = []
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n:
                    e = s[i + 1]
                    if e == "x":
                        v.append(chr(int(s[i + 2:i + 4], 16)))
                        i += 4
                        continue
                    v.append({"n": "\n", "r": "\r", "t": "\t"}.get(e, e))
                    i += 2
                    continue
                v.append(s[i])
                i += 1
            i += 1
            out.append((m.group(1), "".join(v)))
        else:
            j = s.find(" ", i)
            j = n if j < 0 else j
            out.append((m.group(1), s[i:j]))
            i = j
    return out


def log_line(x, pattern, timeout=20):
    """The first daemon log line matching the regex (waits for it)."""
    rx = re.compile(pattern)

    def find():
        for line in x.d.log().splitlines():
            if rx.search(line):
                return line
        return None
    return wait_for(find, timeout * SLOW, f"a log line matching {pattern!r}")


def smtp_session(port, ehlo="client.hostile.test"):
    c = SMTPConn(port, timeout=30)
    c.expect(220, "banner")
    c.ehlo(ehlo)
    return c


def received_fields(n):
    return b"".join(b"Received: from hop%d.test by hop%d.test; Thu, 1 Jan 2026 00:00:%02d +0000\r\n"
                    % (i, i + 1, i % 60) for i in range(n))


# ---- template bombs ---------------------------------------------------------

@cases.add
def template_bomb(x):
    """{{x}} x 20,000 with a 10 KB value (200 MB in full): 413 from a bound
    checked while rendering, and almost no memory."""
    before = vm_hwm_kb(x.d)
    t0 = time.monotonic()
    r = api(x, {"from": SENDER, "to": ["bomb@hostile.test"], "subject": "bomb",
                "text": "{{x}}" * 20000, "vars": {"x": "a" * 10 * 1024}})
    grew = vm_hwm_kb(x.d) - before
    log(f"     10 KB bomb: HTTP {r.status} in {time.monotonic() - t0:.2f}s, VmHWM +{grew} kB")
    expect_error(r, 413, "too_large", ("to[0]", str(MAX_MESSAGE)), "10 KB bomb")
    check(grew < 48 * 1024, f"the 10 KB bomb grew VmHWM by {grew} kB")
    x.bomb_ok = True


@cases.add
def template_bomb_as_in_the_issue(x):
    """The issue's bomb (100 KB value: 2 GB in full), in text, html (values
    escaped: 6x for '"') and a batch; and unsubscribe bombs."""
    check(getattr(x, "bomb_ok", False), "skipped: the 10 KB bomb failed (this one would take GBs)")
    before = vm_hwm_kb(x.d)
    for field, val in (("text", "a" * 100 * 1024), ("html", '"' * 100 * 1024)):
        r = api(x, {"from": SENDER, "to": ["bomb@hostile.test"], "subject": "bomb",
                    field: "{{x}}" * 20000, "vars": {"x": val}})
        expect_error(r, 413, "too_large", ("to[0]",), f"100 KB {field} bomb")
    r = api(x, {"messages": [
        {"from": SENDER, "to": [{"email": "b@hostile.test", "vars": {"x": "b" * 100 * 1024}}],
         "subject": "{{x}}" * 20000, "text": "t"},
        {"from": SENDER, "to": ["ok@parked.test"], "subject": "bomb batch fine", "text": "t"}]},
        "/v1/messages/batch")
    check(r.status == 202, f"bomb batch: HTTP {r.status}")
    res = r.json()["results"]
    check(res[0].get("error", {}).get("code") == "too_large", f"bomb batch [0]: {res[0]}")
    check(res[1].get("id"), f"bomb batch [1] should be accepted: {res[1]}")
    for key in ("url", "mailto"):
        base = "https://u.test/" if key == "url" else "a@u.test?x="
        r = api(x, {"from": SENDER, "to": [{"email": "u@hostile.test",
                                            "vars": {"x": "c" * 100 * 1024}}],
                    "subject": "unsub bomb", "text": "t",
                    "unsubscribe": {key: base + "{{x}}" * 20000}})
        expect_error(r, 400, "bad_field", (f"unsubscribe.{key}",), f"unsubscribe.{key} bomb")
    grew = vm_hwm_kb(x.d) - before
    log(f"     100 KB bombs: VmHWM +{grew} kB")
    check(grew < 64 * 1024, f"the 100 KB bombs grew VmHWM by {grew} kB")


@cases.add
def render_total_per_request(x):
    """Copies of 1.9 MB (each under max_message_size): 40 in one message
    pass max(4 x max_request_size, 64 MiB) -> 413 for the message; in a
    batch, the message that passes it gets the 413 entry, the one before
    is accepted."""
    var = ("a" * 69 + "\n") * 67

    def msg(tag, n):
        return {"from": SENDER, "to": [f"r{i}@parked.test" for i in range(n)],
                "subject": tag, "text": "{{x}}" * 400, "vars": {"x": var}}
    r = api(x, msg("total one", 40))
    expect_error(r, 413, "too_large", ("request renders", str(RENDER_MAX)), "40 copies")
    r = api(x, {"messages": [msg("total a", 20), msg("total b", 20)]}, "/v1/messages/batch")
    check(r.status == 202, f"batch of copies: HTTP {r.status} {r.body[:200]!r}")
    res = r.json()["results"]
    check(res[0].get("id"), f"batch [0] (38 MB) should be accepted: {res[0]}")
    e = res[1].get("error", {})
    check(e.get("code") == "too_large" and "request renders" in e.get("message", ""),
          f"batch [1] should pass the request's bound: {res[1]}")


# ---- header injection ---------------------------------------------------------

INJECTED = "Bcc: victim@evil.test"


@cases.add
def header_injection_subject(x):
    for sep in ("\r\n", "\n", "\r"):
        body = {"from": SENDER, "to": ["inj@hostile.test"], "subject": f"hi{sep}{INJECTED}{sep}{sep}fake",
                "text": "body"}
        r = api(x, body)
        expect_error(r, 400, "bad_field", ("subject",), f"subject with {sep!r}")
    # curl, the way an application would send it.
    p = curl(["-H", f"Authorization: Bearer {API_KEY}", "-d",
              json.dumps({"from": SENDER, "to": "inj@hostile.test",
                          "subject": "hi\r\nBcc: victim@evil.test\r\n\r\nfake", "text": "b"}),
              "-w", "\n%{http_code}", f"http://127.0.0.1:{x.d.api_port}/v1/messages"])
    check(p.stdout.endswith(b"\n400") and b"subject" in p.stdout, f"curl: {p.stdout!r}")
    # Rendered: a recipient's var brings the line break; in a batch only
    # that message is refused, naming the recipient.
    r = api(x, {"messages": [
        {"from": SENDER, "subject": "Hello {{name}}", "text": "t",
         "to": [{"email": "v0@hostile.test", "vars": {"name": "Ann"}},
                {"email": "v1@hostile.test", "vars": {"name": f"x\r\n{INJECTED}"}}]},
        {"from": SENDER, "to": ["v2@hostile.test"], "subject": "injection batch ok", "text": "t"}]},
        "/v1/messages/batch")
    check(r.status == 202, f"batch: HTTP {r.status}")
    res = r.json()["results"]
    e = res[0].get("error", {})
    check(e.get("code") == "bad_field" and "subject" in e.get("message", "")
          and "to[1]" in e.get("message", ""), f"batch [0]: {res[0]}")
    check(res[1].get("id"), f"batch [1]: {res[1]}")
    m = x.rec.find(subject_is("injection batch ok"), what="the good message of the batch")
    check(parsed(m)["Bcc"] is None, "a Bcc arrived")


@cases.add
def header_injection_from_and_headers(x):
    bad = [
        ({"from": f"Evil\r\n{INJECTED} <{SENDER}>"}, 400, "from"),
        ({"from": f"Evil\n <{SENDER}>"}, 400, "from"),
        ({"from": f"Help <help@origin.test> <{SENDER}>"}, 422, "from"),
        ({"from": f"\"Help <{SENDER}>"}, 400, "from"),
        ({"from": f"He\"lp <{SENDER}>"}, 400, "from"),
        ({"from": f"Help> <{SENDER}>"}, 400, "from"),
        ({"headers": {"X-Campaign": f"c1\r\n{INJECTED}"}}, 400, "headers.X-Campaign"),
        ({"headers": {"X-Campaign": "c1\rX: y"}}, 400, "headers.X-Campaign"),
        ({"headers": {f"X-A\r\n{INJECTED}\r\nX-B": "v"}}, 400, "headers"),
        ({"headers": {"To": f"a@hostile.test\r\n{INJECTED}"}}, 400, "headers.To"),
        ({"headers": {"To": "Help <a@hostile.test> <b@hostile.test>"}}, 422, "headers.To"),
        ({"headers": {"To": "\"Open <a@hostile.test>"}}, 400, "headers.To"),
        ({"unsubscribe": {"mailto": f"u@x.test\r\n{INJECTED}"}}, 400, "unsubscribe.mailto"),
        ({"unsubscribe": {"url": "https://u.test/\r\nX: y"}}, 400, "unsubscribe.url"),
        ({"attachments": [{"filename": f"a.txt\r\n{INJECTED}", "content": "YQ=="}]}, 400,
         "attachments[0].filename"),
    ]
    for extra, status, name in bad:
        body = {"from": SENDER, "to": ["hdr@hostile.test"], "subject": "hdr", "text": "t"}
        body.update(extra)
        r = api(x, body)
        code = "invalid_address" if status == 422 else "bad_field"
        expect_error(r, status, code, (name,), f"{extra}")
    # Accepted: a display name with commas and an address-like word is one
    # quoted phrase; a var in the unsubscribe URL is percent-encoded.
    r = api(x, {"from": f"a@evil.test, Name <{SENDER}>", "to": ["phrase@hostile.test"],
                "subject": "phrase", "text": "t",
                "headers": {"To": "\"Doe, Ann\" <phrase@hostile.test>"}})
    check(r.status == 202, f"phrase: HTTP {r.status} {r.body[:200]!r}")
    m = parsed(x.rec.find(subject_is("phrase"), what="the phrase message"))
    froms = email.utils.getaddresses([m["From"]])
    check(froms == [("a@evil.test, Name", SENDER)], f"From {m['From']!r} reads as {froms}")
    tos = email.utils.getaddresses([m["To"]])
    check(tos == [("Doe, Ann", "phrase@hostile.test")], f"To {m['To']!r} reads as {tos}")
    r = api(x, {"from": SENDER, "to": [{"email": "unsub@hostile.test",
                                        "vars": {"u": f"x\r\n{INJECTED}"}}],
                "subject": "unsub var", "text": "t",
                "unsubscribe": {"url": "https://u.test/{{u}}"}})
    check(r.status == 202, f"unsub var: HTTP {r.status} {r.body[:200]!r}")
    m = parsed(x.rec.find(subject_is("unsub var"), what="the unsubscribe message"))
    check(m["Bcc"] is None and "%0D%0ABcc" in m["List-Unsubscribe"],
          f"List-Unsubscribe {m['List-Unsubscribe']!r}")
    for msg in x.rec.snapshot():
        check(parsed(msg)["Bcc"] is None, "a Bcc field reached the next hop")


# ---- lone CR and bare LF -----------------------------------------------------

SMUGGLE = "one\r.\rMAIL FROM:<evil@x.test>\rtwo\n.\nRCPT TO:<v@x.test>\nthree\r\n.\r\nfour"
SMUGGLE_CRLF = SMUGGLE.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


@cases.add
def api_bodies_are_canonical(x):
    for field in ("text", "html"):
        r = api(x, {"from": SENDER, "to": ["body@hostile.test"], "subject": f"body {field}",
                    field: SMUGGLE})
        check(r.status == 202, f"{field}: HTTP {r.status} {r.body[:200]!r}")
        m = x.rec.find(subject_is(f"body {field}"), what=f"the {field} message")
        check_canonical(m["wire"], field)
        part = parsed(m)
        got = part.get_payload(decode=True)
        check(got.rstrip(b"\r\n") == SMUGGLE_CRLF.encode(),
              f"{field} came back as {got!r}, want CRLF lines")
    raw = ("From: <" + SENDER + ">\r\nSubject: body raw\r\n\r\n" + SMUGGLE + "\r\n")
    r = api(x, {"from": SENDER, "to": ["body@hostile.test"], "raw": raw})
    check(r.status == 202, f"raw: HTTP {r.status} {r.body[:200]!r}")
    m = x.rec.find(subject_is("body raw"), what="the raw message")
    check_canonical(m["wire"], "raw")
    check(SMUGGLE_CRLF.encode() in unstuff(m["wire"]), f"raw came back as {m['wire'][-200:]!r}")
    check(len([s for s in x.rec.snapshot() if b"evil@x.test" in s.get("mail", b"")]) == 0,
          "a smuggled MAIL FROM became a transaction")


@cases.add
def smtp_bodies_are_canonical(x):
    payload = (b"one\r.\rMAIL FROM:<evil@x.test>\rtwo\n.\nRCPT TO:<v@x.test>\n"
               b"three\r\n.\nfour\n.\r\nfive\r\n")
    head = b"From: <" + SENDER.encode() + b">\r\nSubject: smtp %s\r\n\r\n"
    with smtp_session(x.d.port) as c:
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd("RCPT TO:<data@hostile.test>", 250)
        c.cmd("DATA", 354)
        c.send(head % b"data" + payload + b".\r\n")
        queued_id(c.expect(250, "end of DATA"))
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd("RCPT TO:<bdat@hostile.test>", 250)
        msg = head % b"bdat" + payload
        c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg)
        queued_id(c.expect(250, "BDAT LAST"))
        c.cmd("QUIT", 221)
    for kind in ("data", "bdat"):
        m = x.rec.find(subject_is(f"smtp {kind}"), what=f"the {kind} message")
        check_canonical(m["wire"], kind)
        body = unstuff(m["wire"]).split(b"\r\n\r\n", 1)[1]
        want = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        check(body == want, f"{kind}: {body!r}")


# ---- hop limit ---------------------------------------------------------------

def hops_message(n, tag, body=b"hop\r\n"):
    return received_fields(n) + b"From: <" + SENDER.encode() + b">\r\nSubject: " + tag + \
        b"\r\n\r\n" + body


@cases.add
def hop_limit(x):
    with smtp_session(x.d.port) as c:
        for n, want in ((51, 554), (50, 250), (100, 554)):
            c.cmd(f"MAIL FROM:<{SENDER}>", 250)
            c.cmd("RCPT TO:<hops@hostile.test>", 250)
            c.cmd("DATA", 354)
            c.send(dot_stuff(hops_message(n, b"hops data %d" % n)))
            lines = c.expect(want, f"DATA with {n} Received:")
            if want == 554:
                check(lines[-1].startswith("554 5.4.6"), f"DATA {n}: {lines}")
        msg = hops_message(51, b"hops bdat")
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd("RCPT TO:<hops@hostile.test>", 250)
        c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg)
        lines = c.expect(554, "BDAT with 51 Received:")
        check(lines[-1].startswith("554 5.4.6"), f"BDAT: {lines}")
        # Only the header section counts: 100 in the body are text.
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd("RCPT TO:<hops@hostile.test>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(hops_message(3, b"hops body", received_fields(100))))
        c.expect(250, "Received: lines in the body")
        c.cmd("QUIT", 221)
    with smtplib.SMTP("127.0.0.1", x.d.port, timeout=30 * SLOW) as s:
        try:
            s.sendmail(SENDER, ["hops@hostile.test"], hops_message(60, b"hops smtplib"))
            check(False, "smtplib: 60 Received: accepted")
        except smtplib.SMTPDataError as e:
            check(e.smtp_code == 554 and b"5.4.6" in e.smtp_error, f"smtplib: {e}")
    eml = x.env.dir / "hops.eml"
    eml.write_bytes(hops_message(51, b"hops swaks"))
    p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(x.d.port), "--from", SENDER,
                        "--to", "hops@hostile.test", "--data", f"@{eml}", "--timeout", "30"],
                       capture_output=True, timeout=60 * SLOW)
    check(p.returncode != 0 and b"554 5.4.6" in p.stdout, f"swaks: {p.returncode} {p.stdout[-300:]!r}")
    # The bounce MX (a second daemon with [listen] inbound).
    with smtp_session(x.mx_port) as c:
        for n, want in ((51, 554), (50, 250)):
            c.cmd("MAIL FROM:<>", 250)
            c.cmd(f"RCPT TO:<postmaster@{BOUNCE_DOMAIN}>", 250)
            c.cmd("DATA", 354)
            c.send(dot_stuff(hops_message(n, b"mx hops %d" % n)))
            lines = c.expect(want, f"bounce MX with {n} Received:")
            if want == 554:
                check(lines[-1].startswith("554 5.4.6"), f"bounce MX {n}: {lines}")
        c.cmd("QUIT", 221)
    # API raw.
    for n, status in ((51, 400), (50, 202)):
        r = api(x, {"from": SENDER, "to": ["hops@hostile.test"],
                    "raw": hops_message(n, b"hops api %d" % n).decode()})
        if status == 400:
            expect_error(r, 400, "too_many_hops", ("Received",), f"API raw with {n}")
        else:
            check(r.status == 202, f"API raw with {n}: HTTP {r.status} {r.body[:200]!r}")
    x.rec.find(subject_is("hops data 50"), what="the 50-hop message")
    x.rec.find(subject_is("hops body"), what="the message with Received: in its body")
    for m in x.rec.snapshot():
        s = parsed(m)["Subject"] or ""
        check(s not in ("hops data 51", "hops data 100", "hops bdat", "hops smtplib",
                        "hops swaks", "hops api 51"), f"{s!r} was delivered")


# ---- ORCPT -----------------------------------------------------------------------

@cases.add
def orcpt(x):
    bad = ["x<y>;a@x.test", "rfc822 x;a@x.test", "rfc822", "rfc822;", "rfc822;a+0D+0AMAIL",
           "rfc822;a+00b", "rfc822;a+4", "rf\"c;a@x.test", "a" * 33 + ";a@x.test"]
    for part in (bad[:5], bad[5:]):  # under [submission] max_errors
        with smtp_session(x.d.port) as c:
            c.cmd(f"MAIL FROM:<{SENDER}>", 250)
            for v in part:
                lines = c.cmd(f"RCPT TO:<orcpt@hostile.test> ORCPT={v}", 501, f"ORCPT={v[:40]}")
                check(lines[-1].startswith("501 5.5.4"), f"ORCPT={v[:40]}: {lines}")
            c.cmd("QUIT", 221)
    with smtp_session(x.d.port) as c:
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd("RCPT TO:<orcpt@hostile.test> ORCPT=rfc822;orig+2Bx@x.test NOTIFY=FAILURE", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(b"From: <" + SENDER.encode() + b">\r\nSubject: orcpt\r\n\r\nx\r\n"))
        c.expect(250, "end of data")
        c.cmd("QUIT", 221)
    m = x.rec.find(subject_is("orcpt"), what="the ORCPT message")
    check(len(m["rcpts"]) == 1, f"RCPT lines {m['rcpts']}")
    line = m["rcpts"][0]
    check(line == b"RCPT TO:<orcpt@hostile.test> NOTIFY=FAILURE ORCPT=rfc822;orig+2Bx@x.test",
          f"the RCPT that went out: {line!r}")


# ---- log fields ---------------------------------------------------------------------

@cases.add
def log_fields_not_forged(x):
    rcpt = '"x dsn=9.9.9 status=bounced"@hostile.test'
    frm = '"a status=delivered"@origin.test'
    r = api(x, {"from": frm, "to": [rcpt], "subject": "log fields", "text": "t"})
    check(r.status == 202, f"HTTP {r.status} {r.body[:200]!r}")
    mid = r.json()["id"]
    line = log_line(x, rf" api accepted id={mid} ")
    f = kv_fields(line[line.index(" api accepted ") + 14:])
    keys = [k for k, _ in f]
    check(len(keys) == len(set(keys)) and "status" not in keys,
          f"api accepted line has forged fields {keys}: {line}")
    check(dict(f).get("from") == f"<{frm}>", f"from= {dict(f).get('from')!r}: {line}")
    line = log_line(x, rf" delivery id={mid} ")
    f = kv_fields(line[line.index(" delivery ") + 10:])
    keys = [k for k, _ in f]
    check(len(keys) == len(set(keys)), f"delivery line has a key twice {keys}: {line}")
    d = dict(f)
    check(d.get("rcpt") == f"<{rcpt}>" and d.get("status") == "delivered" and
          d.get("dsn") == "2.0.0", f"delivery fields {d}: {line}")
    # A remote's greeting with fields in it, in the back-off line.
    r = api(x, {"from": SENDER, "to": ["b@busy.test"], "subject": "busy", "text": "t"})
    check(r.status == 202, f"busy: HTTP {r.status}")
    line = log_line(x, r" dest busy\.test backs off ")
    f = kv_fields(line[line.index(" backs off ") + 11:])
    keys = [k for k, _ in f]
    check("status" not in keys and "id" not in keys, f"back-off line has forged fields {keys}: {line}")
    check("id=forged" in dict(f).get("reply", ""), f"reply= {f}: {line}")


# ---- boundaries ---------------------------------------------------------------------------

OLD_MIX = 0x9E3779B97F4A7C15


@cases.add
def boundaries_are_random(x):
    seen = []
    for i in range(2):
        r = api(x, {"from": SENDER, "to": ["mime@hostile.test"], "subject": f"boundary {i}",
                    "text": "same", "html": "<p>same</p>"})
        check(r.status == 202, f"HTTP {r.status}")
        mid = int(r.json()["id"], 16)
        m = parsed(x.rec.find(subject_is(f"boundary {i}"), what=f"boundary message {i}"))
        b = m.get_boundary()
        check(b and len(b) >= 24, f"boundary {b!r}")
        old = "=_rp_%016x_0" % ((mid * OLD_MIX) & (2 ** 64 - 1))
        check(b != old, f"the boundary is the old formula of the id: {b}")
        check(("%016x" % mid) not in b, f"the id is in the boundary {b}")
        seen.append(b)
    check(seen[0] != seen[1], f"the same boundary twice: {seen}")
    # A DSN's boundary: not the queue id.
    r = api(x, {"from": SENDER, "to": ["one@reject.test"], "subject": "dsn boundary", "text": "t"})
    check(r.status == 202, f"HTTP {r.status}")
    qid = r.json()["id"]

    def dsn():
        for e in x.d.api("GET", "/v1/bounces").json()["messages"]:
            body = x.d.api("GET", f"/v1/bounces/{e['uid']}").body
            if f"X-Ringpost-Queue-ID: {qid}".encode() in body:
                return body
        return None
    body = wait_for(dsn, 30 * SLOW, "the DSN", interval=0.2)
    b = email.message_from_bytes(body).get_boundary()
    check(b and qid not in b and len(b) >= 32, f"DSN boundary {b!r} (queue id {qid})")


# ---- 100,000 recipients ----------------------------------------------------------------

@cases.add
def hundred_thousand_recipients(x):
    n = 100000
    t0 = time.monotonic()
    r = api(x, {"from": "many@origin.test", "to": [f"r{i}@reject.test" for i in range(n)],
                "subject": "many", "text": "t"})
    check(r.status == 202, f"100,000 recipients: HTTP {r.status} {r.body[:200]!r}")
    qid = r.json()["id"]
    log(f"     accepted in {time.monotonic() - t0:.1f}s")

    def done():
        check(x.d.alive(), f"the daemon died (status {x.d.proc.returncode})")
        st = x.d.api("GET", f"/v1/messages/{qid}.{n - 1}")
        return st.status == 200 and st.json()["recipients"][0]["state"] == "bounced"
    wait_for(done, 180 * SLOW, "the last of 100,000 recipients bounced", interval=0.5)
    log(f"     all bounced in {time.monotonic() - t0:.1f}s; {x.reject.rcpt_lines} RCPTs seen")

    # One DSN for them all, or a few when the failures are settled in
    # slices: together they name every recipient once.
    want = f"X-Ringpost-Queue-ID: {qid}".encode()

    def dsns():
        check(x.d.alive(), f"the daemon died (status {x.d.proc.returncode})")
        got, total = 0, 0
        for e in x.d.api("GET", "/v1/bounces").json()["messages"]:
            if e.get("size", 0) < 100000:
                continue
            body = x.d.api("GET", f"/v1/bounces/{e['uid']}", timeout=120).body
            if want in body:
                got += body.count(b"\r\nFinal-Recipient: rfc822; r")
                total += len(body)
        return (got, total) if got >= n else None
    got, total = wait_for(dsns, 120 * SLOW, "DSNs for 100,000 recipients", interval=1)
    check(got == n, f"the DSNs name {got} recipients, want {n}")
    log(f"     DSNs of {total} bytes in all in {time.monotonic() - t0:.1f}s")
    check(x.d.api("GET", "/healthz").status == 200, "not healthy afterwards")


def main():
    with TestEnv("hostile_content") as env:
        x = type("Ctx", (), {})()
        x.env = env
        x.rec = RawRecorder()
        x.parked = RawRecorder(store=False)
        x.reject = RawRecorder(mode="reject")
        x.busy = RawRecorder(mode="busy",
                             greeting=b"421 4.3.2 busy now status=delivered id=forged")
        routes = {"hostile.test": x.rec.addr, "parked.test": x.parked.addr,
                  "reject.test": x.reject.addr, "busy.test": x.busy.addr}
        x.d = env.daemon(routes=routes, with_api=True,
                         submission={"max_message_size": MAX_MESSAGE, "max_recipients": 100000},
                         api={"max_request_size": MAX_REQUEST},
                         domains={"reject.test": {"max_recipients_per_message": 100000}})
        x.mx_port = free_port()
        mx = env.daemon(routes={}, name="mx", queue={"bounce_domain": BOUNCE_DOMAIN},
                        extra=f"[listen]\ninbound = 127.0.0.1:{x.mx_port}\n")
        x.d.start()
        mx.start()
        wait_for(lambda: port_accepts(x.mx_port, "127.0.0.1"), 10 * SLOW, "the bounce MX")
        failures = run_cases(cases, x, [x.d, mx])
        stop_clean(x.d, failures)
        stop_clean(mx, failures)
        for r in (x.rec, x.parked, x.reject, x.busy):
            r.close()
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
