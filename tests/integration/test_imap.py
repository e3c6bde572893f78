"""test_imap.py - IMAP4rev1 (RFC 3501) on the bounce mailbox, driven by real
clients: Python's imaplib (STARTTLS and IMAP4_SSL), curl, mutt in batch
mode (under script(1) for its terminal) and mbsync copying into a local
Maildir; raw sockets for exact bytes and bad input.

The mailbox fills the way it does in production: messages submitted to
hard.test, whose receiver (ringpost-sink --rcpt-script 550) refuses every
recipient, bounce, and ringpost's DSNs land in the mailbox (GET
/v1/bounces). One is submitted over SMTP with RET=FULL and a MIME original
(multipart/alternative and an attachment), so its DSN carries a
message/rfc822 part with structure inside. Certificates come from a
private CA (harness tlsfiles); users are made with `ringpost user add`
(password on stdin): alice may read the mailbox, bob may log in elsewhere
but is not in [mailbox] users. [auth] max_failures = 3: the cases that fail
logins do so from their own 127.0.0.x.

Cases:
  - CAPABILITY before and after STARTTLS (STARTTLS, LOGINDISABLED, no
    AUTH=PLAIN in clear text; AUTH=PLAIN after); LOGIN before TLS: NO
    [PRIVACYREQUIRED]; STARTTLS with a command pipelined behind it: the
    command is not run; LOGIN and AUTHENTICATE PLAIN (with SASL-IR,
    without, "*" cancels) over STARTTLS and implicit TLS;
  - SELECT answers (FLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT,
    PERMANENTFLAGS, READ-WRITE) agree with GET /v1/bounces; EXAMINE says
    READ-ONLY and PERMANENTFLAGS ();
  - FETCH of every item (FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE
    BODYSTRUCTURE BODY BODY[] BODY.PEEK[...] HEADER TEXT HEADER.FIELDS
    (.NOT) n n.m n.MIME partial RFC822 RFC822.HEADER RFC822.TEXT ALL FAST
    FULL): BODY[] is the message GET /v1/bounces/{uid} gives; HEADER+TEXT
    is BODY[]; BODYSTRUCTURE's types, parameters, sizes and line counts
    agree with Python's email parser and with the BODY[n] fetched; the
    DSN's message/rfc822 part has its envelope and a nested structure;
  - \\Seen: BODY[] sets it (FLAGS in the same response), BODY.PEEK does not,
    nor BODY[] under EXAMINE; STORE FLAGS/+FLAGS/-FLAGS/.SILENT and UID
    STORE; /v1/bounces agrees;
  - SEARCH and UID SEARCH: flags, FROM/TO/SUBJECT/BODY/TEXT/HEADER,
    dates, sizes, sequence and UID sets, NOT, OR, parentheses, CHARSET;
  - EXPUNGE (untagged EXPUNGE, highest first), UID EXPUNGE, CLOSE
    (silent), EXAMINE refuses STORE and EXPUNGE and its CLOSE removes
    nothing; another session hears of expunges only when allowed (not
    during FETCH), and of flag changes (FETCH FLAGS);
  - IDLE: "+ idling", then EXISTS when a new bounce arrives, EXPUNGE and
    FETCH FLAGS when another session changes the mailbox, the same bytes
    for four idle sessions; DONE ends it;
  - four sessions FETCH, STORE, EXPUNGE, SEARCH and IDLE at random while
    bounces arrive: every EXISTS, EXPUNGE and FETCH agrees with the
    numbering a client keeps; what a FETCH leaves out is gone at the next
    NOOP;
  - LIST/LSUB patterns, STATUS, NOOP, CHECK, UNSELECT, LOGOUT;
  - curl --ssl-reqd imap:// (STARTTLS) and imaps://: list, fetch by UID,
    search;
  - mutt -f imaps://...: reads a message, saves it into a Maildir and
    deletes it (UID STORE, EXPUNGE): the saved copy is the message, and it
    is gone from the mailbox; mbsync copies INBOX into a Maildir: the same
    messages, byte for byte;
  - arbitrary mail through the bounce MX ([listen] inbound, [queue]
    bounce_domain = bounces.test, to postmaster@): a MIME message's
    BODYSTRUCTURE agrees with Python's parser; a malformed one (route
    addresses, a name without an address, 8-bit headers, a multipart never
    closed, another without a boundary) and 40 nested multiparts (shown to
    depth 16, then opaque) get answers, byte-exact BODY[];
  - bad input: unknown commands, commands before login (BAD), invalid
    sequence sets (and a valid one with junk behind it: no leak), 8-bit
    garbage, a line over 8 KiB, truncated literals, a synchronising
    literal over 64 KiB (NO [TOOBIG], nothing sent), a non-synchronising
    one (BYE), 20 BAD answers (BYE), a megabyte pipelined behind a
    password check (BYE); pipelined commands answered in order; after
    each the daemon serves;
  - wrong passwords: NO [AUTHENTICATIONFAILED] after >= 1 s; bob: NO
    [AUTHORIZATIONFAILED]; the third failure from an address: BYE, and
    that address is refused at connect;
  - UIDs and UIDVALIDITY are the same after a restart;
  - no password in the log; the daemon stops cleanly (no sanitizer report).
"""

import base64
import email
import email.policy
import imaplib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

from harness import (CA, SLOW, Cases, SMTPConn, TestEnv, TestFailure, bounce_get, bounce_list,
                     check, free_port, log, raise_failures, ringpost_bin, run_cases, run_test,
                     stop_clean, wait_for)

HOST = "mta.test.example"
ALICE, ALICE_PW = "alice", "alice's imap pass"
BOB, BOB_PW = "bob", "bob pass 2"
SENDER = "sender@origin.test"

cases = Cases()


class Ctx:
    pass


# ---- helpers ---------------------------------------------------------------

def run(argv, input=None, timeout=60, cwd=None, env=None):
    try:
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout * SLOW,
                              cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{' '.join(map(str, argv))[:200]} did not finish")


class IMAP(imaplib.IMAP4):
    """imaplib on the clear-text port, from a chosen local address."""

    def __init__(self, port, source=None):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=30 * SLOW)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0) if self._source else None)


class IMAPS(imaplib.IMAP4_SSL):
    """imaplib on the implicit-TLS port, from a chosen local address."""

    def __init__(self, port, ctx, source=None):
        self._source = source
        super().__init__("127.0.0.1", port, ssl_context=ctx, timeout=30 * SLOW)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0) if self._source else None)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def session(x, source=None):
    """A logged-in imaplib session over implicit TLS."""
    m = IMAPS(x.imaps, x.ctx, source)
    m.login(ALICE, ALICE_PW)
    return m


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", f"{what}: {typ} {data!r}")
    return data


class Raw(SMTPConn):
    """Exact IMAP bytes: lines in, tagged answers out."""

    def until(self, tag):
        """Lines (bytes, CRLF stripped) up to and including tag's answer."""
        out = []
        while True:
            line = self.read_line().rstrip(b"\r\n")
            out.append(line)
            if line.startswith(tag.encode() + b" "):
                return out

    def cmd_raw(self, tag, text):
        self.send(f"{tag} {text}\r\n")
        return self.until(tag)


def raw(x, tls=False, source=None):
    """A raw session, greeting read; over implicit TLS when tls."""
    c = Raw(x.imaps if tls else x.imap, source=source)
    if tls:
        c.start_tls(x.ctx, "127.0.0.1")
    g = c.read_line()
    check(g.startswith(b"* OK "), f"greeting {g!r}")
    return c


def raw_login(x, source=None):
    c = raw(x, tls=True, source=source)
    last = c.cmd_raw("L", f'LOGIN {ALICE} "{ALICE_PW}"')[-1]
    check(last.startswith(b"L OK"), f"LOGIN: {last!r}")
    return c


def tagged(lines):
    return lines[-1].split(b" ", 1)[1]


def fetch_items(data):
    """imaplib FETCH data -> [{NAME: value}] per message (literals as bytes)."""
    stream = b""
    for d in data:
        if isinstance(d, tuple):
            stream += d[0] + b"\r\n" + d[1]
        else:
            stream += d
        stream += b"\n"  # a separator the parser skips (never inside a literal)
    msgs = []
    p = Parser(stream)
    while True:
        p.skip_ws()
        if p.at_end():
            return msgs
        p.number()  # the sequence number (imaplib drops "* " and "FETCH")
        p.skip_ws()
        lst = p.value()
        msgs.append({lst[i].upper() if isinstance(lst[i], bytes) else lst[i]: lst[i + 1]
                     for i in range(0, len(lst), 2)})


class Parser:
    """Enough of RFC 3501 9 to read FETCH data: atoms (section names kept
    whole: BODY[HEADER.FIELDS (A B)]<0>), numbers, quoted strings,
    literals, NIL (None) and lists."""

    def __init__(self, b):
        self.b, self.i = b, 0

    def at_end(self):
        return self.i >= len(self.b)

    def skip_ws(self):
        while self.i < len(self.b) and self.b[self.i] in b" \r\n":
            self.i += 1

    def take(self, s):
        if self.b.startswith(s, self.i):
            self.i += len(s)
            return True
        return False

    def number(self):
        m = re.compile(rb"\d+").match(self.b, self.i)
        check(m, f"number expected at {self.b[self.i:self.i + 30]!r}")
        self.i = m.end()
        return int(m.group())

    def value(self):
        self.skip_ws()
        c = self.b[self.i:self.i + 1]
        if c == b"(":
            self.i += 1
            out = []
            while True:
                self.skip_ws()
                if self.take(b")"):
                    return out
                out.append(self.value())
        if c == b'"':
            j, s = self.i + 1, b""
            while self.b[j:j + 1] != b'"':
                if self.b[j:j + 1] == b"\\":
                    j += 1
                s += self.b[j:j + 1]
                j += 1
            self.i = j + 1
            return s
        if c == b"{":
            m = re.compile(rb"\{(\d+)\}\r\n").match(self.b, self.i)
            n = int(m.group(1))
            self.i = m.end() + n
            return self.b[m.end():m.end() + n]
        m = re.compile(rb"[^ ()\r\n\[]+(\[[^\]]*\](<\d+>)?)?").match(self.b, self.i)
        check(m, f"atom expected at {self.b[self.i:self.i + 30]!r}")
        self.i = m.end()
        a = m.group()
        if a == b"NIL":
            return None
        return int(a) if a.isdigit() else a


def fetch1(m, seq, items, uid=False):
    """One message's items (dict) from FETCH or UID FETCH."""
    if uid:
        data = ok(m.uid("FETCH", str(seq), items), f"UID FETCH {seq} {items}")
    else:
        data = ok(m.fetch(str(seq), items), f"FETCH {seq} {items}")
    got = fetch_items(data)
    check(len(got) >= 1, f"FETCH {seq} {items}: {data!r}")
    return got[0]


def uids_of(m):
    return [int(u) for u in ok(m.uid("SEARCH", None, "ALL"), "UID SEARCH ALL")[0].split()]


def new_bounces(x, n, tag):
    """n more DSNs in the mailbox (API submissions to hard.test); their UIDs."""
    before = {e["uid"] for e in bounce_list(x.d)}
    msgs = [{"from": SENDER, "to": [f"{tag}{i}@hard.test"], "subject": f"{tag} {i}",
             "text": f"{tag} {i}\n"} for i in range(n)]
    r = x.d.api("POST", "/v1/messages/batch", {"messages": msgs})
    check(r.status == 202, f"batch: {r.status} {r.body[:200]!r}")
    got = wait_for(lambda: (lambda s: s if len(s) >= n else None)(
        sorted({e["uid"] for e in bounce_list(x.d)} - before)), 20, f"{n} DSNs ({tag})")
    return got


MIME_ORIGINAL = (
    "From: Origin Sender <sender@origin.test>\r\n"
    "To: full@hard.test\r\n"
    "Subject: full original\r\n"
    "Message-ID: <full-original@origin.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"mix\"\r\n"
    "\r\n"
    "--mix\r\n"
    "Content-Type: multipart/alternative; boundary=\"alt\"\r\n"
    "\r\n"
    "--alt\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "plain words\r\n"
    "second line\r\n"
    "--alt\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "<p>caf=C3=A9</p>\r\n"
    "--alt--\r\n"
    "--mix\r\n"
    "Content-Type: application/octet-stream; name=\"blob.bin\"\r\n"
    "Content-Disposition: attachment; filename=\"blob.bin\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAECAwQFBgcICQ==\r\n"
    "--mix--\r\n")


def full_bounce(x):
    """A DSN with the whole original (RET=FULL) as message/rfc822: its UID."""
    before = {e["uid"] for e in bounce_list(x.d)}
    c = SMTPConn(x.d.port)
    with c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}> RET=FULL", 250)
        c.cmd("RCPT TO:<full@hard.test>", 250)
        c.cmd("DATA", 354)
        c.send(MIME_ORIGINAL + ".\r\n")
        c.expect(250, "end of data")
        c.cmd("QUIT", 221)
    got = wait_for(lambda: sorted({e["uid"] for e in bounce_list(x.d)} - before), 20,
                   "the RET=FULL DSN")
    return got[0]


def select_info(m):
    """SELECT's untagged data as a dict."""
    r = {}
    for k in ("EXISTS", "RECENT", "FLAGS", "UIDVALIDITY", "UIDNEXT", "UNSEEN",
              "PERMANENTFLAGS", "READ-ONLY", "READ-WRITE"):
        typ, v = m.response(k)
        if v and v[-1] is not None:
            r[k] = v[-1]
    return r


def flags_of(item):
    return sorted(f.decode() for f in item.get(b"FLAGS", []))


# ---- TLS and login ---------------------------------------------------------

@cases.add
def capabilities_and_starttls(x):
    m = IMAP(x.imap)
    caps = m.capabilities
    check("STARTTLS" in caps and "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps,
          f"clear-text capabilities {caps}")
    check("IMAP4REV1" in caps and "IDLE" in caps and "LITERAL+" in caps, f"caps {caps}")
    try:
        m.login(ALICE, ALICE_PW)
        raise TestFailure("LOGIN before STARTTLS was accepted")
    except imaplib.IMAP4.error as e:
        check("PRIVACYREQUIRED" in str(e), f"LOGIN before TLS: {e}")
    m.starttls(x.ctx)
    caps = m.capabilities
    check("STARTTLS" not in caps and "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps,
          f"capabilities after STARTTLS {caps}")
    data = ok(m.login(ALICE, ALICE_PW), "LOGIN after STARTTLS")
    check(b"CAPABILITY" in data[0], f"LOGIN's OK carries capabilities: {data}")
    ok(m.select("INBOX"), "SELECT")
    m.logout()
    # Implicit TLS; AUTHENTICATE PLAIN with SASL-IR (imaplib sends it so).
    m = IMAPS(x.imaps, x.ctx)
    check("AUTH=PLAIN" in m.capabilities, f"imaps capabilities {m.capabilities}")
    ok(m.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{ALICE_PW}".encode()), "AUTHENTICATE")
    ok(m.noop(), "NOOP")
    m.logout()


@cases.add
def starttls_injection_is_not_run(x):
    c = raw(x)
    c.send("S STARTTLS\r\nX CAPABILITY\r\n")
    line = c.read_line()
    check(line.startswith(b"S OK"), f"STARTTLS: {line!r}")
    c.start_tls(x.ctx, "127.0.0.1")
    lines = c.cmd_raw("Y", "CAPABILITY")
    check(not any(l.startswith(b"X ") for l in lines), f"the injected command ran: {lines}")
    check(b"AUTH=PLAIN" in lines[0] and b"STARTTLS" not in lines[0], f"{lines}")
    c.close()


@cases.add
def authenticate_dialogues(x):
    c = raw(x, tls=True)
    c.send("A AUTHENTICATE PLAIN\r\n")
    check(c.read_line().startswith(b"+"), "AUTHENTICATE: no continuation")
    c.send(base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()) + b"\r\n")
    check(c.until("A")[-1].startswith(b"A OK"), "AUTHENTICATE without SASL-IR")
    c.close()
    c = raw(x, tls=True)
    c.send("B AUTHENTICATE PLAIN\r\n")
    c.read_line()
    c.send("*\r\n")
    check(c.until("B")[-1].startswith(b"B BAD"), "a cancelled AUTHENTICATE gets BAD")
    check(c.cmd_raw("C", "AUTHENTICATE CRAM-MD5")[-1].startswith(b"C NO"), "CRAM-MD5")
    check(c.cmd_raw("D", "AUTHENTICATE PLAIN !!!")[-1].startswith(b"D BAD"), "bad base64")
    # A literal password (with a space and a quote) through LOGIN.
    pw = ALICE_PW.encode()
    c.send(b"E LOGIN alice {%d}\r\n" % len(pw))
    check(c.read_line().startswith(b"+"), "no continuation for a synchronising literal")
    c.send(pw + b"\r\n")
    check(c.until("E")[-1].startswith(b"E OK"), "LOGIN with a literal password")
    c.close()


@cases.add
def wrong_passwords_and_the_limit(x):
    src = "127.0.0.9"
    for i in range(2):
        c = raw(x, tls=True, source=src)
        t0 = time.monotonic()
        last = c.cmd_raw("W", f'LOGIN {ALICE} "wrong {i}"')[-1]
        took = time.monotonic() - t0
        check(last.startswith(b"W NO [AUTHENTICATIONFAILED]"), f"wrong password: {last!r}")
        check(took >= 0.9 * (i + 1), f"the NO came after {took:.2f}s")
        c.close()
    c = raw(x, tls=True, source=src)
    c.send(f'W LOGIN {ALICE} "wrong 3"\r\n')
    line = c.read_line()
    check(line.startswith(b"* BYE"), f"the third failure: {line!r}")
    check(c.at_eof(), "still open after BYE")
    c = Raw(x.imap, source=src)
    line = c.read_line()
    check(line.startswith(b"* BYE") and b"authentication failures" in line,
          f"a blocked address at connect: {line!r}")
    c.close()
    # Another address is served; bob knows his password but may not read.
    c = raw(x, tls=True, source="127.0.0.10")
    last = c.cmd_raw("B", f'LOGIN {BOB} "{BOB_PW}"')[-1]
    check(last.startswith(b"B NO [AUTHORIZATIONFAILED]"), f"bob: {last!r}")
    last = c.cmd_raw("A", f'LOGIN {ALICE} "{ALICE_PW}"')[-1]
    check(last.startswith(b"A OK"), f"alice after bob: {last!r}")
    c.close()


# ---- SELECT, FETCH ---------------------------------------------------------

@cases.add
def select_and_examine(x):
    m = session(x)
    data = ok(m.select("INBOX"), "SELECT")
    info = select_info(m)
    bl = x.d.api("GET", "/v1/bounces").json()
    check(int(data[0]) == len(bl["messages"]), f"EXISTS {data} vs {len(bl['messages'])}")
    check(info.get("UIDVALIDITY") == str(bl["uidvalidity"]).encode(), f"UIDVALIDITY {info}")
    check(info.get("UIDNEXT") == str(bl["uidnext"]).encode(), f"UIDNEXT {info}")
    check(info.get("RECENT") == b"0", f"RECENT {info}")
    check(b"\\Seen" in info.get("FLAGS", b"") and b"\\Deleted" in info.get("PERMANENTFLAGS", b""),
          f"FLAGS/PERMANENTFLAGS {info}")
    check("READ-WRITE" in info, f"no READ-WRITE: {info}")
    unseen = [e for e in bl["messages"] if not e["seen"]]
    if unseen:
        first = [e["uid"] for e in bl["messages"]].index(unseen[0]["uid"]) + 1
        check(info.get("UNSEEN") == str(first).encode(), f"UNSEEN {info} want {first}")
    check(uids_of(m) == [e["uid"] for e in bl["messages"]], "UIDs differ from /v1/bounces")
    m.close()
    ok(m.select("INBOX", readonly=True), "EXAMINE")
    info = select_info(m)
    check("READ-ONLY" in info and info.get("PERMANENTFLAGS") == b"()", f"EXAMINE {info}")
    typ, _ = m.select("Other")
    check(typ == "NO", f"SELECT Other: {typ}")
    c = raw_login(x)  # a failed SELECT leaves no mailbox selected
    c.cmd_raw("s", "SELECT INBOX")
    check(c.cmd_raw("t", "SELECT Other")[-1].startswith(b"t NO [NONEXISTENT]"), "SELECT Other")
    check(c.cmd_raw("u", "FETCH 1 FLAGS")[-1].startswith(b"u BAD"), "FETCH after it")
    c.close()
    m.logout()


def walk_email(part):
    """(type, subtype, params, children) from Python's email parser."""
    ctype = part.get_content_type().split("/")
    params = {k.lower(): v for k, v in (part.get_params() or [])[1:]}
    kids = []
    if part.get_content_maintype() == "multipart":  # not message/*: those are parts
        kids = [walk_email(p) for p in part.get_payload()]
    return ctype[0], ctype[1], params, kids


def check_structure(m, seq, bs, em, path, what):
    """BODYSTRUCTURE bs against the email part em and the BODY[path] data."""
    t, st, params, kids = em
    where = f"{what} part {'.'.join(map(str, path)) or 'root'}"
    if kids:
        check(isinstance(bs[0], list), f"{where}: a multipart without parts: {bs!r}")
        n = 0
        while isinstance(bs[n], list):
            n += 1
        check(n == len(kids), f"{where}: {n} parts, the email parser sees {len(kids)}")
        check(bs[n].lower().decode() == st, f"{where}: subtype {bs[n]!r} want {st}")
        for i in range(n):
            check_structure(m, seq, bs[i], kids[i], path + [i + 1], what)
        return
    check(bs[0].decode().lower() == t and bs[1].decode().lower() == st,
          f"{where}: {bs[0]!r}/{bs[1]!r} want {t}/{st}")
    got = {bs[2][i].decode().lower(): bs[2][i + 1].decode() for i in range(0, len(bs[2] or []), 2)}
    for k, v in params.items():
        check(got.get(k) == v, f"{where}: parameter {k}={got.get(k)!r} want {v!r}")
    size = bs[6]
    sec = ".".join(map(str, path or [1]))
    data = fetch1(m, seq, f"(BODY.PEEK[{sec}])")[f"BODY[{sec}]".encode()]
    check(size == len(data), f"{where}: size {size}, BODY[{sec}] has {len(data)} bytes")
    if t == "text":
        lfs = data.count(b"\n")
        check(bs[7] == lfs, f"{where}: {bs[7]} lines, {lfs} LFs")
    if (t, st) == ("message", "rfc822"):
        env, inner, lines = bs[7], bs[8], bs[9]
        check(isinstance(env, list) and len(env) == 10, f"{where}: envelope {env!r}")
        check(lines == data.count(b"\n"), f"{where}: message lines {lines}")
        inner_em = walk_email(email.message_from_bytes(data, policy=email.policy.compat32))
        check_structure(m, seq, inner, inner_em, path + [1] if not inner_em[3] else path, what)


@cases.add
def fetch_every_item(x):
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    uid = x.full_uid
    seq = uids_of(m).index(uid) + 1
    body = bounce_get(x.d, uid)
    it = fetch1(m, seq, "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY "
                "BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] "
                "BODY.PEEK[HEADER.FIELDS (Subject From)] BODY.PEEK[HEADER.FIELDS.NOT (Subject)])")
    check(it[b"UID"] == uid, f"UID {it[b'UID']} want {uid}")
    check(it[b"BODY[]"] == body, "BODY[] differs from GET /v1/bounces/{uid}")
    check(it[b"RFC822.SIZE"] == len(body), f"RFC822.SIZE {it[b'RFC822.SIZE']} != {len(body)}")
    check(it[b"BODY[HEADER]"] + it[b"BODY[TEXT]"] == body, "HEADER + TEXT != BODY[]")
    check(re.match(rb"^[ \d]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d \+0000$", it[b"INTERNALDATE"]),
          f"INTERNALDATE {it[b'INTERNALDATE']!r}")
    msg = email.message_from_bytes(body, policy=email.policy.compat32)
    hf = it[b"BODY[HEADER.FIELDS (SUBJECT FROM)]"]
    check(hf == f"From: {msg['From']}\r\nSubject: {msg['Subject']}\r\n\r\n".encode(),
          f"HEADER.FIELDS {hf!r}")
    check(b"Subject:" not in it[b"BODY[HEADER.FIELDS.NOT (SUBJECT)]"], "HEADER.FIELDS.NOT")
    env = it[b"ENVELOPE"]
    check(env[0] == msg["Date"].encode() and env[1] == msg["Subject"].encode(), f"ENVELOPE {env}")
    check(env[2][0][2] == b"MAILER-DAEMON" and env[2][0][3] == HOST.encode(), f"From {env[2]}")
    check(env[5] == [[None, None, b"sender", b"origin.test"]], f"To {env[5]}")
    check(env[9] == msg["Message-ID"].encode(), f"Message-ID {env[9]}")
    bs = it[b"BODYSTRUCTURE"]
    check_structure(m, seq, bs, walk_email(msg), [], "the DSN")
    check(bs[3] == b"report" and bs[4][:2] == [b"report-type", b"delivery-status"],
          f"multipart/report {bs[3:]!r}")
    rfc = bs[2]
    check(rfc[0] == b"message" and rfc[1] == b"rfc822", f"part 3 {rfc[:2]}")
    check(rfc[7][1] == b"full original" and rfc[7][9] == b"<full-original@origin.test>",
          f"the inner envelope {rfc[7]}")
    inner = rfc[8]  # (alternative (text/plain text/html)) (blob) "mixed"
    check(inner[2] == b"mixed" and inner[0][2] == b"alternative", f"inner {inner!r}")
    check(inner[1][:2] == [b"application", b"octet-stream"] and
          inner[1][8] == [b"attachment", [b"filename", b"blob.bin"]], f"attachment {inner[1]!r}")
    # Sections into the encapsulated message, partials, MIME headers.
    it = fetch1(m, seq, "(BODY.PEEK[3.HEADER.FIELDS (Subject)] BODY.PEEK[3.1.1] "
                "BODY.PEEK[3.1.2] BODY.PEEK[3.2] BODY.PEEK[3.2.MIME] BODY.PEEK[2.MIME] "
                "BODY.PEEK[1]<0.10> BODY.PEEK[3.TEXT]<2.5> BODY.PEEK[9])")
    check(it[b"BODY[3.HEADER.FIELDS (SUBJECT)]"] == b"Subject: full original\r\n\r\n",
          f"3.HEADER.FIELDS {it}")
    check(it[b"BODY[3.1.1]"] == b"plain words\r\nsecond line", f"3.1.1 {it[b'BODY[3.1.1]']!r}")
    check(it[b"BODY[3.1.2]"] == b"<p>caf=C3=A9</p>", f"3.1.2 {it[b'BODY[3.1.2]']!r}")
    check(it[b"BODY[3.2]"] == b"AAECAwQFBgcICQ==", f"3.2 {it[b'BODY[3.2]']!r}")
    check(it[b"BODY[3.2.MIME]"].startswith(b"Content-Type: application/octet-stream") and
          it[b"BODY[3.2.MIME]"].endswith(b"base64\r\n\r\n"), f"3.2.MIME {it[b'BODY[3.2.MIME]']!r}")
    check(it[b"BODY[2.MIME]"] == b"Content-Type: message/delivery-status\r\n\r\n", "2.MIME")
    check(it[b"BODY[1]<0>"] == fetch1(m, seq, "(BODY.PEEK[1])")[b"BODY[1]"][:10], f"partial {it}")
    check(it[b"BODY[3.TEXT]<2>"] == b"mix\r\n", f"3.TEXT partial {it[b'BODY[3.TEXT]<2>']!r}")
    check(it[b"BODY[9]"] == b"", f"a missing part: {it[b'BODY[9]']!r}")
    # RFC822.*, the macros, and UID FETCH adds UID.
    it = fetch1(m, seq, "(RFC822.HEADER RFC822.SIZE)")
    check(it[b"RFC822.HEADER"] == body[:body.index(b"\r\n\r\n") + 4], "RFC822.HEADER")
    for macro, want in (("FAST", {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"}),
                        ("ALL", {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"}),
                        ("FULL", {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY"})):
        got = set(fetch1(m, seq, macro))
        check(got == want, f"{macro}: {got}")
    it = fetch1(m, uid, "(FLAGS)", uid=True)
    check(it.get(b"UID") == uid, f"UID FETCH without UID asked: {it}")
    data = ok(m.fetch("1:*", "(UID RFC822.SIZE)"), "FETCH 1:*")
    check(len(fetch_items(data)) == len(uids_of(m)), "FETCH 1:* count")
    m.logout()


@cases.add
def seen_flag_and_store(x):
    uids = new_bounces(x, 2, "seen")
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    all_uids = uids_of(m)
    s1, s2 = all_uids.index(uids[0]) + 1, all_uids.index(uids[1]) + 1
    check(flags_of(fetch1(m, s1, "(FLAGS)")) == [], "a new DSN has flags")
    fetch1(m, s1, "(BODY.PEEK[TEXT])")
    check(flags_of(fetch1(m, s1, "(FLAGS)")) == [], "BODY.PEEK set \\Seen")
    it = fetch1(m, s1, "(BODY[HEADER])")
    check(flags_of(it) == ["\\Seen"], f"BODY[] without PEEK: FLAGS in the response {it.keys()}")
    check([e for e in bounce_list(x.d) if e["uid"] == uids[0]][0]["seen"], "/v1/bounces: not seen")
    it = fetch1(m, s2, "(RFC822)")
    check(flags_of(it) == ["\\Seen"], "RFC822 sets \\Seen")
    r = ok(m.store(str(s1), "FLAGS", "(\\Flagged \\Answered)"), "STORE FLAGS")
    check(flags_of(fetch_items(r)[0]) == ["\\Answered", "\\Flagged"], f"STORE FLAGS {r}")
    r = ok(m.store(str(s1), "+FLAGS", "(\\Seen \\Draft)"), "STORE +FLAGS")
    check(flags_of(fetch_items(r)[0]) == ["\\Answered", "\\Draft", "\\Flagged", "\\Seen"], f"{r}")
    r = ok(m.store(str(s1), "-FLAGS.SILENT", "(\\Draft \\Answered)"), "STORE -FLAGS.SILENT")
    check(r == [None], f".SILENT answered with {r}")
    r = ok(m.uid("STORE", str(uids[0]), "+FLAGS", "(\\Seen)"), "UID STORE")
    it = fetch_items(r)[0]
    check(it.get(b"UID") == uids[0] and flags_of(it) == ["\\Flagged", "\\Seen"], f"UID STORE {r}")
    try:
        m.store(str(s1), "+FLAGS", "(\\Recent)")
        raise TestFailure("STORE \\Recent was accepted")
    except imaplib.IMAP4.error as e:
        check("BAD" in str(e), f"STORE \\Recent: {e}")
    ok(m.store(f"{s1}:{s2}", "-FLAGS", "(\\Seen \\Flagged)"), "STORE range")
    ok(m.store(str(s1), "+FLAGS", "($Label1)"), "a keyword is dropped, not refused")
    check(flags_of(fetch1(m, s1, "(FLAGS)")) == [], "flags left over")
    # EXAMINE: BODY[] does not set \Seen, STORE and EXPUNGE are refused.
    ok(m.select("INBOX", readonly=True), "EXAMINE")
    it = fetch1(m, s1, "(BODY[])")
    check(b"FLAGS" not in it, f"EXAMINE's BODY[] changed flags: {it.keys()}")
    check(flags_of(fetch1(m, s1, "(FLAGS)")) == [], "EXAMINE set \\Seen")
    check(m.store(str(s1), "+FLAGS", "(\\Deleted)")[0] == "NO", "STORE under EXAMINE")
    check(m.expunge()[0] == "NO", "EXPUNGE under EXAMINE")
    m.logout()


@cases.add
def search_criteria(x):
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    uids = uids_of(m)
    n = len(uids)
    ok(m.store("1:*", "-FLAGS", "(\\Flagged)"), "STORE")
    ok(m.store("1", "+FLAGS", "(\\Flagged)"), "STORE")

    def s(*crit, uid=False):
        data = ok(m.uid("SEARCH", *crit) if uid else m.search(*crit), f"SEARCH {crit}")
        return [int(v) for v in data[0].split()]
    check(s(None, "ALL") == list(range(1, n + 1)), "ALL")
    check(s(None, "FLAGGED") == [1], f"FLAGGED {s(None, 'FLAGGED')}")
    check(s(None, "UNFLAGGED") == list(range(2, n + 1)), "UNFLAGGED")
    check(1 not in s(None, "NOT", "FLAGGED"), "NOT FLAGGED")
    check(s(None, "OR", "FLAGGED", str(n)) == sorted({1, n}), "OR FLAGGED n")
    check(s(None, "(FLAGGED", "ALL)") == [1], "parentheses")
    check(s(None, "FROM", "MAILER-DAEMON") == list(range(1, n + 1)), "FROM")
    check(s(None, "FROM", "nobody-here") == [], "FROM nobody")
    check(s(None, "TO", "sender@origin.test") == list(range(1, n + 1)), "TO")
    check(s(None, "SUBJECT", '"Undelivered Mail"') == list(range(1, n + 1)), "SUBJECT")
    full = uids.index(x.full_uid) + 1
    got = s(None, "BODY", '"plain words"')
    check(got == [full], f"BODY: {got} want {[full]}")
    check(full in s(None, "TEXT", '"full original"'), "TEXT")
    check(s(None, "HEADER", "Auto-Submitted", "auto-replied") == list(range(1, n + 1)), "HEADER")
    today = time.strftime("%d-%b-%Y", time.gmtime())
    check(s(None, "SINCE", today) == list(range(1, n + 1)), "SINCE today")
    check(s(None, "ON", today) == list(range(1, n + 1)), "ON today")
    check(s(None, "BEFORE", today) == [], "BEFORE today")
    check(s(None, "SENTSINCE", "1-Jan-2000") == list(range(1, n + 1)), "SENTSINCE")
    check(s(None, "LARGER", "1") == list(range(1, n + 1)) and s(None, "SMALLER", "10") == [],
          "LARGER/SMALLER")
    check(s(None, "2:3") == [2, 3], "a sequence set")
    check(s(None, "UID", f"{uids[1]}:{uids[2]}") == [2, 3], "UID set")
    check(s(None, "UID", "*") == [n], "UID *")
    check(s(None, "FLAGGED", uid=True) == [uids[0]], "UID SEARCH answers UIDs")
    check(s("UTF-8", "ALL") == list(range(1, n + 1)), "CHARSET UTF-8")
    typ, data = m.search("KOI8-R", "ALL")
    check(typ == "NO" and b"BADCHARSET" in data[0], f"CHARSET KOI8-R: {typ} {data}")
    try:
        m.search(None, "BOGUS")
        raise TestFailure("SEARCH BOGUS was accepted")
    except imaplib.IMAP4.error as e:
        check("BAD" in str(e), f"SEARCH BOGUS: {e}")
    ok(m.store("1", "-FLAGS", "(\\Flagged)"), "STORE")
    m.logout()


# ---- expunges, other sessions, IDLE ----------------------------------------

@cases.add
def expunge_uid_expunge_close(x):
    uids = new_bounces(x, 4, "exp")
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    all_uids = uids_of(m)
    seqs = [all_uids.index(u) + 1 for u in uids]
    ok(m.store(f"{seqs[0]},{seqs[2]}", "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
    typ, data = m.expunge()
    check(typ == "OK", f"EXPUNGE {typ}")
    check([int(v) for v in data] == [seqs[2], seqs[0]], f"EXPUNGE responses {data}, highest first")
    left = uids_of(m)
    check(uids[0] not in left and uids[2] not in left and uids[1] in left, "after EXPUNGE")
    check(not any(e["uid"] in (uids[0], uids[2]) for e in bounce_list(x.d)), "/v1/bounces")
    # UID EXPUNGE removes only the UIDs named.
    s1, s3 = left.index(uids[1]) + 1, left.index(uids[3]) + 1
    ok(m.store(f"{s1},{s3}", "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
    typ, data = m.uid("EXPUNGE", str(uids[3]))
    check(typ == "OK" and m.response("EXPUNGE")[1] in ([str(s3).encode()], [None]), f"{data}")
    left = uids_of(m)
    check(uids[3] not in left and uids[1] in left, "UID EXPUNGE")
    # CLOSE expunges \Deleted silently; EXAMINE's CLOSE does not.
    ok(m.close(), "CLOSE")
    check(not any(e["uid"] == uids[1] for e in bounce_list(x.d)), "CLOSE left a \\Deleted one")
    more = new_bounces(x, 1, "exc")
    ok(m.select("INBOX"), "SELECT")
    ok(m.store(str(uids_of(m).index(more[0]) + 1), "+FLAGS", "(\\Deleted)"), "STORE")
    ok(m.select("INBOX", readonly=True), "EXAMINE")
    ok(m.close(), "CLOSE")
    check(any(e["uid"] == more[0] for e in bounce_list(x.d)), "EXAMINE's CLOSE expunged")
    ok(m.select("INBOX"), "SELECT")
    ok(m.store(str(uids_of(m).index(more[0]) + 1), "-FLAGS", "(\\Deleted)"), "STORE")
    m.logout()


@cases.add
def other_sessions_hear_when_allowed(x):
    uids = new_bounces(x, 2, "two")
    a, b = raw_login(x), session(x)
    lines = a.cmd_raw("S", "SELECT INBOX")
    exists = int([l for l in lines if l.endswith(b" EXISTS")][0].split()[1])
    ok(b.select("INBOX"), "SELECT")
    bu = uids_of(b)
    seq = bu.index(uids[0]) + 1
    ok(b.store(str(seq), "+FLAGS", "(\\Deleted \\Flagged)"), "STORE in b")
    b.expunge()
    # FETCH in a: flag changes may come, the expunge may not.
    lines = a.cmd_raw("F", f"FETCH {exists} (UID)")
    check(not any(l.endswith(b" EXPUNGE") for l in lines), f"EXPUNGE during FETCH: {lines}")
    lines = a.cmd_raw("N", "NOOP")
    check(any(l == f"* {seq} EXPUNGE".encode() for l in lines), f"NOOP after: {lines}")
    # A flag change in b reaches a as FETCH FLAGS; new mail as EXISTS.
    seq2 = uids_of(b).index(uids[1]) + 1
    ok(b.store(str(seq2), "+FLAGS", "(\\Answered)"), "STORE in b")
    lines = a.cmd_raw("N2", "NOOP")
    check(any(re.match(rb"^\* %d FETCH \(UID %d FLAGS \(\\Answered\)\)$" % (seq2, uids[1]), l)
              for l in lines), f"FETCH FLAGS: {lines}")
    new_bounces(x, 1, "two-new")
    lines = a.cmd_raw("N3", "NOOP")
    check(any(l == f"* {exists} EXISTS".encode() for l in lines), f"EXISTS: {lines}")
    a.close()
    b.logout()


@cases.add
def idle(x):
    """Four sessions idle (on two shards: some share one): all hear every
    change, the same bytes (a shard computes the update once for all)."""
    tags = ("I", "K", "L", "M")
    cs = []
    for tag in tags:
        c = raw_login(x)
        lines = c.cmd_raw("S", "SELECT INBOX")
        exists = int([l for l in lines if l.endswith(b" EXISTS")][0].split()[1])
        c.send(f"{tag} IDLE\r\n")
        line = c.read_line()
        check(line.startswith(b"+ "), f"IDLE: {line!r}")
        c.sock.settimeout(20 * SLOW)
        cs.append(c)

    def heard():
        lines = [c.read_line().rstrip(b"\r\n") for c in cs]
        check(len(set(lines)) == 1, f"the idle sessions heard different things: {lines}")
        return lines[0]
    t0 = time.monotonic()
    uid = new_bounces(x, 1, "idle")[0]
    line = heard()
    check(line == f"* {exists + 1} EXISTS".encode(), f"IDLE woke with {line!r}")
    log(f"IDLE heard of the new bounce {time.monotonic() - t0:.2f}s after the submission")
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    seq = uids_of(m).index(uid) + 1
    ok(m.store(str(seq), "+FLAGS", "(\\Seen)"), "STORE in another session")
    line = heard()
    check(line == f"* {seq} FETCH (UID {uid} FLAGS (\\Seen))".encode(), f"{line!r}")
    ok(m.store(str(seq), "+FLAGS", "(\\Deleted)"), "STORE")
    line = heard()
    check(line.endswith(b"FLAGS (\\Deleted \\Seen))"), f"{line!r}")
    m.expunge()
    line = heard()
    check(line == f"* {seq} EXPUNGE".encode(), f"IDLE heard {line!r}")
    for tag, c in zip(tags, cs):
        c.send("DONE\r\n")
        check(c.until(tag)[-1].startswith(tag.encode() + b" OK"), "DONE")
    c = cs[0]
    c.send("J IDLE\r\nnot done\r\n")
    lines = c.until("J")
    check(lines[-1].startswith(b"J BAD"), f"IDLE ended by junk: {lines}")
    m.logout()
    for c in cs:
        c.close()


# ---- the rest of the commands ----------------------------------------------

@cases.add
def list_lsub_status_and_friends(x):
    m = session(x)
    for ref, pat, want in (('""', '"*"', True), ('""', "%", True), ('""', "inbox", True),
                           ('""', "IN*", True), ('""', "foo*", False), ('"INB"', '"OX"', True),
                           ('""', "*/x", False)):
        data = ok(m.list(ref, pat), f"LIST {ref} {pat}")
        got = [d for d in data if d]
        check(bool(got) == want, f"LIST {ref} {pat}: {data}")
        if want:
            check(got == [b'(\\HasNoChildren) "/" INBOX'], f"LIST {ref} {pat}: {data}")
    check(ok(m.list('""', '""'), "LIST delimiter") == [b'(\\Noselect) "/" ""'], "delimiter")
    check(ok(m.lsub('""', "*"), "LSUB") == [b'() "/" INBOX'], "LSUB")
    data = ok(m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)"), "STATUS")
    bl = x.d.api("GET", "/v1/bounces").json()
    want = (f"INBOX (MESSAGES {len(bl['messages'])} UIDNEXT {bl['uidnext']} UIDVALIDITY "
            f"{bl['uidvalidity']} UNSEEN {sum(not e['seen'] for e in bl['messages'])} RECENT 0)")
    check(data == [want.encode()], f"STATUS {data} want {want}")
    check(m.status("Nope", "(MESSAGES)")[0] == "NO", "STATUS Nope")
    ok(m.subscribe("INBOX"), "SUBSCRIBE")
    check(m.create("Other")[0] == "NO", "CREATE")
    ok(m.select("INBOX"), "SELECT")
    ok(m.check(), "CHECK")
    ok(m._simple_command("UNSELECT"), "UNSELECT")
    m.state = "AUTH"
    ok(m.select("INBOX"), "SELECT after UNSELECT")
    check(m.logout()[0] == "BYE", "LOGOUT")


@cases.add
def pipelined_commands_in_order(x):
    c = raw_login(x)
    c.send("P1 SELECT INBOX\r\nP2 FETCH 1 (UID)\r\nP3 NOOP\r\nP4 UID SEARCH ALL\r\n"
           "P5 FETCH 1 BODY.PEEK[HEADER.FIELDS ({7+}\r\nSubject)]\r\nP6 LOGOUT\r\n")
    seen = []
    while True:
        line = c.read_line()
        m = re.match(rb"^(P\d) ", line)
        if m:
            seen.append(m.group(1).decode())
            check(line.startswith(m.group(1) + b" OK"), f"{line!r}")
            if m.group(1) == b"P6":
                break
    check(seen == ["P1", "P2", "P3", "P4", "P5", "P6"], f"order {seen}")
    c.close()


# ---- real clients ----------------------------------------------------------

@cases.add
def curl_lists_and_fetches(x):
    common = ["curl", "-sS", "--cacert", str(x.ca.cert), "-u", f"{ALICE}:{ALICE_PW}"]
    r = run(common + ["--ssl-reqd", f"imap://127.0.0.1:{x.imap}/"])
    check(r.returncode == 0 and b'"/" INBOX' in r.stdout, f"curl LIST: {r.returncode} "
          f"{r.stdout!r} {r.stderr!r}")
    uid = x.full_uid
    r = run(common + ["--ssl-reqd", f"imap://127.0.0.1:{x.imap}/INBOX;UID={uid}"])
    check(r.returncode == 0 and r.stdout == bounce_get(x.d, uid), f"curl fetch UID {uid}: "
          f"{r.returncode} {r.stderr!r} {r.stdout[:200]!r}")
    r = run(common + [f"imaps://127.0.0.1:{x.imaps}/INBOX?TEXT%20%22full%20original%22"])
    check(r.returncode == 0 and r.stdout.startswith(b"* SEARCH "), f"curl search {r.stdout!r}")
    r = run(["curl", "-sS", "--cacert", str(x.ca.cert), "-u", f"{ALICE}:nope",
             f"imaps://127.0.0.1:{x.imaps}/"], timeout=30)
    check(r.returncode != 0, "curl with a wrong password succeeded")
    r = run(["curl", "-sS", f"imaps://127.0.0.1:{x.imaps}/", "-u", f"{ALICE}:{ALICE_PW}"])
    check(r.returncode != 0, "curl accepted a certificate it cannot verify")


def on_pty(argv, env, timeout):
    """Run argv on a fresh pseudo-terminal (mutt wants one; script(1) would
    pass on an end of input at once): (exit status, what it drew)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                         start_new_session=True)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout * SLOW
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child is gone
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        else:
            p.kill()
            raise TestFailure(f"{argv[0]} did not finish: {out[-300:]!r}")
        return p.wait(timeout=10), out
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()


def mutt(x, argv_tail, cmds, name):
    """mutt in batch mode (keys pushed), bounded; its screen text."""
    home = x.env.dir / f"mutt-{name}"
    (home / "Mail").mkdir(parents=True, exist_ok=True)  # or mutt asks to create it
    rc = home / "muttrc"
    rc.write_text(
        f"set imap_user={ALICE}\nset imap_pass=\"{ALICE_PW}\"\n"
        f"set ssl_ca_certificates_file={x.ca.cert}\nset certificate_file={home}/certs\n"
        "set mbox_type=Maildir\nset confirmcreate=no\nset confirmappend=no\nset delete=yes\n"
        "set quit=yes\nset move=no\nset mark_old=no\nset header_cache=\n"
        "set message_cachedir=\nset ssl_force_tls=yes\nset imap_passive=no\n"
        "set sleep_time=0\nset wait_key=no\n")
    argv = ["mutt", "-n", "-F", str(rc), *argv_tail, "-e", f"push '{cmds}'"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "vt100", "HOME": str(home),
           "LANG": "C.UTF-8"}
    code, out = on_pty(argv, env, 60)
    screen = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][A-Z0-9]|\x1b[=>]", b" ", out)
    (home / "screen.txt").write_bytes(screen)
    return code, screen.decode("utf-8", "replace")


@cases.add
def mutt_reads_saves_and_deletes(x):
    if not shutil.which("mutt"):
        raise TestFailure("mutt is not installed (.ci/deps)")
    uid = new_bounces(x, 1, "mutt")[0]
    want = bounce_get(x.d, uid)
    maildir = x.env.dir / "mutt-saved"
    # The newest message is the last; mutt sorts by date: go to the end.
    rc, screen = mutt(x, ["-f", f"imaps://{ALICE}@127.0.0.1:{x.imaps}/INBOX"],
                      f"<last-entry><save-message>{maildir}<enter><sync-mailbox><quit>", "save")
    check(rc == 0, f"mutt exit {rc}: {screen[-600:]}")
    saved = list((maildir / "new").glob("*")) + list((maildir / "cur").glob("*"))
    check(len(saved) == 1, f"mutt saved {len(saved)} messages: {screen[-600:]}")
    got = saved[0].read_bytes()
    want_lf = want.replace(b"\r\n", b"\n")
    # mutt adds Status/Content-Length/Lines headers of its own: compare the rest.
    strip = re.compile(rb"^(Status|X-Status|Content-Length|Lines): .*\n", re.M)
    check(strip.sub(b"", got) == strip.sub(b"", want_lf),
          f"mutt's copy differs: {got[:300]!r} vs {want_lf[:300]!r}")
    check(not any(e["uid"] == uid for e in bounce_list(x.d)), "the saved message was not deleted")


@cases.add
def mbsync_copies_the_mailbox(x):
    if not shutil.which("mbsync"):
        raise TestFailure("mbsync is not installed (isync, .ci/deps)")
    d = x.env.dir / "mbsync"
    d.mkdir(exist_ok=True)
    conf = d / "mbsyncrc"
    conf.write_text(
        "IMAPAccount rp\nHost 127.0.0.1\n"
        f"Port {x.imaps}\nUser {ALICE}\nPass \"{ALICE_PW}\"\nSSLType IMAPS\n"
        # isync checks host names, not IP addresses: it trusts a server
        # certificate listed in CertificateFile as it is.
        f"CertificateFile {x.cert}\nAuthMechs PLAIN\n\n"
        "IMAPStore rp-remote\nAccount rp\n\n"
        f"MaildirStore local\nPath {d}/mail/\nInbox {d}/mail/INBOX\n\n"
        "Channel rp\nFar :rp-remote:\nNear :local:\nPatterns INBOX\nSync Pull\nCreate Near\n"
        f"SyncState {d}/state/\n")
    (d / "state").mkdir(exist_ok=True)
    (d / "mail").mkdir(exist_ok=True)
    r = run(["mbsync", "-c", str(conf), "-a"], timeout=60)
    check(r.returncode == 0, f"mbsync exit {r.returncode}: {r.stderr[-500:]!r}")
    files = [p for sub in ("new", "cur") for p in (d / "mail" / "INBOX" / sub).glob("*")]
    want = {e["uid"]: bounce_get(x.d, e["uid"]) for e in bounce_list(x.d)}
    # mbsync marks its copies with an X-TUID field of its own.
    got = sorted(re.sub(rb"(?m)^X-TUID: .*\n", b"", p.read_bytes()) for p in files)
    check(len(got) == len(want), f"mbsync copied {len(got)} of {len(want)}")
    lf = sorted(b.replace(b"\r\n", b"\n") for b in want.values())
    check(got == lf or got == sorted(want.values()), "mbsync's copies differ from the mailbox")
    # A second run copies nothing new (UIDs are stable).
    r = run(["mbsync", "-c", str(conf), "-a"], timeout=60)
    check(r.returncode == 0, f"mbsync again: {r.stderr[-300:]!r}")
    files2 = [p for sub in ("new", "cur") for p in (d / "mail" / "INBOX" / sub).glob("*")]
    check(len(files2) == len(files), f"mbsync again: {len(files2)} files")


# ---- any mail, through the bounce MX -----------------------------------------

MALFORMED = (
    "From: <@a.test,@b.test:joe@origin.test>, \"no domain\", broken@\r\n"
    "To: \"\xc3\x9cml\xc3\xa4ut\" <u@origin.test>, group: a@x.test, b@y.test;\r\n"
    "Reply-To:\r\n"
    "Subject: =?utf-8?q?caf=C3=A9?= \xff\xfe raw 8-bit\r\n"
    "Content-Type: multipart/mixed; boundary=\"never-closed\"\r\n"
    "\r\n"
    "--never-closed\r\n"
    "Content-Type: text\r\n"
    "Content-Transfer-Encoding: BASE64\r\n"
    "\r\n"
    "aGVsbG8=\r\n"
    "--never-closed\r\n"
    "Content-Type: multipart/related\r\n"
    "\r\n"
    "no boundary here\r\n")


def deep_message(levels=40):
    head = "From: deep@origin.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    body = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
                   for i in range(levels))
    return head + body + "Content-Type: text/plain\r\n\r\nat the bottom\r\n"


@cases.add
def any_mail_through_the_bounce_mx(x):
    """The bounce MX keeps whatever postmaster@ gets: FETCH tells the
    structure of a well-formed MIME message as Python's parser sees it,
    and answers for a malformed one, 8-bit headers and 40 nested
    multiparts (the depth past 16 is shown opaque) without harm."""
    before = {e["uid"] for e in bounce_list(x.d)}
    bodies = [MIME_ORIGINAL.encode(), MALFORMED.encode("latin-1"), deep_message().encode()]
    for b in bodies:
        with SMTPConn(x.inbound) as c:
            c.expect(220)
            c.ehlo("mx.origin.test")
            c.cmd("MAIL FROM:<>", 250)
            c.cmd("RCPT TO:<postmaster@bounces.test>", 250)
            c.cmd("DATA", 354)
            c.send(b + b".\r\n")
            c.expect(250, "the bounce MX's answer")
            c.cmd("QUIT", 221)
    uids = wait_for(lambda: (lambda n: n if len(n) == len(bodies) else None)(
        sorted({e["uid"] for e in bounce_list(x.d)} - before)), 20, "the messages in the mailbox")
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    for uid, sent in zip(uids, bodies):
        it = fetch1(m, uid, "(BODYSTRUCTURE BODY ENVELOPE BODY.PEEK[] RFC822.SIZE)", uid=True)
        stored = bounce_get(x.d, uid)
        check(it[b"BODY[]"] == stored and stored.endswith(sent), f"UID {uid}: BODY[]")
        check(it[b"RFC822.SIZE"] == len(stored), f"UID {uid}: RFC822.SIZE")
        check(isinstance(it[b"BODYSTRUCTURE"], list) and isinstance(it[b"ENVELOPE"], list) and
              len(it[b"ENVELOPE"]) == 10, f"UID {uid}: {it[b'BODYSTRUCTURE']!r}")
    seq = uids_of(m).index(uids[0]) + 1
    msg = email.message_from_bytes(bounce_get(x.d, uids[0]), policy=email.policy.compat32)
    check_structure(m, seq, fetch1(m, seq, "(BODYSTRUCTURE)")[b"BODYSTRUCTURE"],
                    walk_email(msg), [], "the MIME message")
    env = fetch1(m, uids[1], "(ENVELOPE)", uid=True)[b"ENVELOPE"]
    check(env[2][0] == [None, b"@a.test,@b.test", b"joe", b"origin.test"], f"route {env[2]}")
    check(env[2][1] == [b"no domain", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN"], f"{env[2]}")
    check(env[4] == env[2], "an empty Reply-To is From")
    check(env[5][0][0] == "\u00dcml\u00e4ut".encode() and
          env[5][1] == [None, None, b"group", None] and env[5][-1] == [None] * 4, f"To {env[5]}")
    check(env[1].startswith(b"=?utf-8?q?caf=C3=A9?= \xff\xfe"), f"Subject {env[1]!r}")
    bs = fetch1(m, uids[2], "(BODYSTRUCTURE)", uid=True)[b"BODYSTRUCTURE"]
    depth = 0
    while isinstance(bs[0], list):
        bs, depth = bs[0], depth + 1
    check(depth == 16 and bs[:2] == [b"application", b"octet-stream"],
          f"nesting shown to depth {depth}: {bs[:3]!r}")
    m.logout()


# ---- bad input -------------------------------------------------------------

@cases.add
def bad_input(x):
    c = raw(x)
    for tag, text, want in (
            ("a", "FROB", b"a BAD"),
            ("b", "SELECT INBOX", b"b BAD"),
            ("c", "FETCH 1 FLAGS", b"b BAD"[:0] + b"c BAD"),
            ("d", "LOGIN", b"d BAD"),
            ("e", "NOOP extra", b"e BAD"),
            ("f", "CAPABILITY", b"f OK")):
        last = c.cmd_raw(tag, text)[-1]
        check(last.startswith(want), f"{text}: {last!r}")
    c.send(b"\xff\xfe garbage \x80\r\n")
    check(c.read_line().startswith(b"* BAD"), "8-bit garbage")
    c.send(b"g " + b"x" * 9000 + b"\r\n")
    line = c.read_line()
    check(line.startswith(b"g BAD") and b"too long" in line, f"a long line: {line[:80]!r}")
    check(c.cmd_raw("h", "NOOP")[-1].startswith(b"h OK"), "after the long line")
    c.send("i LOGIN {70000}\r\n")
    line = c.read_line()
    check(line.startswith(b"i NO [TOOBIG]"), f"a big synchronising literal: {line!r}")
    check(c.cmd_raw("j", "NOOP")[-1].startswith(b"j OK"), "after the refused literal")
    c.close()
    # Selected: invalid sequence sets.
    c = raw_login(x)
    c.cmd_raw("s", "SELECT INBOX")
    for text in ("FETCH 0 FLAGS", "FETCH 1:x FLAGS", "FETCH 99999 FLAGS", "FETCH 1 FLAGSS",
                 "STORE 1 +FLAGS (\\Bogus)", "SEARCH UID", "UID FROB 1", "FETCH 1,,2 UID",
                 "FETCH 1 (BODY[1.])"):
        last = c.cmd_raw("t", text)[-1]
        check(last.startswith(b"t BAD"), f"{text}: {last!r}")
    # A set that parses with junk behind it: BAD, and (ASan build) no leak
    # at shutdown: its ranges were not freed (found by fuzz_imap_session).
    for _ in range(3):
        last = c.cmd_raw("w", "UID EXPUNGE 1:3,5 junk")[-1]
        check(last.startswith(b"w BAD"), f"UID EXPUNGE with junk: {last!r}")
    check(c.cmd_raw("u", "UID FETCH 999999 FLAGS")[-1].startswith(b"u OK"), "UIDs that do not exist")
    check(c.cmd_raw("v", "FETCH * UID")[-1].startswith(b"v OK"), "FETCH *")
    c.close()
    # A non-synchronising literal over the limit: BYE.
    c = raw(x)
    c.send("k LOGIN {70000+}\r\n" + "y" * 1000)
    line = c.read_line()
    check(line.startswith(b"* BYE"), f"a big LITERAL+: {line!r}")
    check(c.at_eof(), "open after BYE")
    # A truncated literal, then the client leaves.
    c = raw(x)
    c.send("l LOGIN {50}\r\n")
    c.read_line()
    c.send("only part")
    c.close()
    # Twenty bad commands end the session.
    c = raw(x)
    c.send("".join(f"z{i} BOGUS\r\n" for i in range(25)))
    lines = []
    while True:
        try:
            lines.append(c.read_line())
        except (EOFError, ConnectionResetError):
            break
    check(lines[-1].startswith(b"* BYE") and len(lines) == 21, f"flood: {len(lines)} {lines[-2:]}")
    # A megabyte behind a password check: BYE. The daemon may close while
    # the client still sends: then the log says it.
    c = raw(x, tls=True, source="127.0.0.20")
    lines = []
    try:
        c.send(f'm LOGIN {ALICE} "not it"\r\n' + ("n NOOP\r\n" * 200000))
        while True:
            lines.append(c.read_line())
    except (EOFError, OSError):
        pass
    check(any(l.startswith(b"* BYE") for l in lines) or wait_for(
        lambda: "127.0.0.20" in x.d.log() and "of input waiting; closing" in x.d.log(), 10,
        "the pipelined flood's BYE"), f"pipelined flood: {lines[:3]}")
    check(not any(l.startswith(b"n ") for l in lines), "NOOPs behind the check were answered")
    # The daemon still serves.
    m = session(x)
    ok(m.select("INBOX"), "SELECT after the bad input")
    m.logout()


# ---- many sessions at once (last: it expunges at random) --------------------

class Model:
    """A session that checks the server's numbering as a client must keep
    it: EXISTS appends, EXPUNGE n removes the nth, every FETCH's UID must
    be the one its sequence number stands for."""

    def __init__(self, x, errors):
        self.c, self.errors, self.uids, self.n = raw_login(x), errors, [], 0

    def line(self):
        """A response line, literals folded in."""
        line = self.c.read_line().rstrip(b"\r\n")
        m = re.search(rb"\{(\d+)\}$", line)
        while m:
            k = int(m.group(1))
            while len(self.c.buf) < k:
                self.c._fill()
            self.c.buf = self.c.buf[k:]
            rest = self.c.read_line().rstrip(b"\r\n")
            line += b"<literal>" + rest
            m = re.search(rb"\{(\d+)\}$", rest)
        return line

    def untagged(self, line, fetched):
        m = re.match(rb"^\* (\d+) (EXISTS|EXPUNGE|FETCH)(.*)$", line)
        if not m:
            return
        n, what = int(m.group(1)), m.group(2)
        if what == b"EXISTS":
            if n < len(self.uids):
                self.errors.append(f"EXISTS {n} with {len(self.uids)} known")
            self.uids += [None] * (n - len(self.uids))
        elif not 1 <= n <= len(self.uids):
            self.errors.append(f"{line[:60]!r} with {len(self.uids)} known")
        elif what == b"EXPUNGE":
            del self.uids[n - 1]
        else:
            u = re.search(rb"UID (\d+)", m.group(3))
            if u:
                u = int(u.group(1))
                if self.uids[n - 1] not in (None, u):
                    self.errors.append(f"{n} is UID {self.uids[n - 1]}; FETCH says {u}")
                self.uids[n - 1] = u
                fetched.append(u)

    def cmd(self, text):
        self.n += 1
        tag = f"m{self.n}"
        self.c.send(f"{tag} {text}\r\n")
        return self.until(tag, text)

    def until(self, tag, text):
        fetched = []
        while True:
            line = self.line()
            if line.startswith(tag.encode() + b" "):
                if not line.startswith(tag.encode() + b" OK"):
                    self.errors.append(f"{text}: {line[:100]!r}")
                return fetched
            self.untagged(line, fetched)

    def idle(self, seconds):
        self.n += 1
        tag = f"m{self.n}"
        self.c.send(f"{tag} IDLE\r\n")
        line = self.line()
        while not line.startswith(b"+"):
            self.untagged(line, [])
            line = self.line()
        time.sleep(seconds)
        self.c.send("DONE\r\n")
        self.until(tag, "IDLE")


@cases.add
def concurrent_sessions_keep_numbers_straight(x):
    """Four sessions FETCH, STORE \\Deleted, EXPUNGE, SEARCH and IDLE at
    random while bounces arrive: every EXISTS, EXPUNGE and FETCH agrees
    with the numbering the client keeps, and a message a FETCH left out
    (expunged meanwhile) is announced gone by the next NOOP."""
    errors, seconds = [], 5

    def worker(seed):
        rnd = random.Random(seed)
        try:
            m = Model(x, errors)
            m.cmd("SELECT INBOX")
            end = time.monotonic() + seconds
            while time.monotonic() < end and not errors:
                op, n = rnd.random(), len(m.uids)
                if op < 0.2 and n:
                    m.cmd("FETCH 1:* (UID FLAGS)")
                elif op < 0.3:
                    m.cmd("UID FETCH 1:* (UID)")
                elif op < 0.45 and n:
                    a = rnd.randint(1, n)
                    m.cmd(f"STORE {a}:{rnd.randint(a, n)} +FLAGS.SILENT (\\Deleted)")
                elif op < 0.55 and n:
                    m.cmd(f"STORE {rnd.randint(1, n)} -FLAGS (\\Deleted)")
                elif op < 0.65:
                    m.cmd("EXPUNGE")
                elif op < 0.75:
                    m.cmd("UID SEARCH DELETED")
                elif op < 0.85:
                    m.idle(rnd.random() * 0.2)
                else:
                    m.cmd("NOOP")
                    fetched = m.cmd("FETCH 1:* (UID)") if m.uids else []
                    skipped = [u for u in m.uids if u is not None and u not in fetched]
                    if skipped:
                        m.cmd("NOOP")
                        if any(u in m.uids for u in skipped):
                            errors.append(f"FETCH 1:* left out {skipped} that are not gone")
            m.c.close()
        except Exception as e:  # noqa: BLE001 - any failure of a worker is the case's
            errors.append(f"worker {seed}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end and not errors:  # bounces arrive meanwhile
        r = x.d.api("POST", "/v1/messages/batch", {"messages": [
            {"from": SENDER, "to": [f"conc{i}-{k}@hard.test"], "subject": "conc", "text": "x\n"}
            for k in range(2)]})
        check(r.status == 202, f"batch: {r.status}")
        i += 1
        time.sleep(0.1)
    for t in threads:
        t.join(timeout=60 * SLOW)
    check(not errors, f"{len(errors)} problem(s): {errors[:5]}")


# ---- restarts --------------------------------------------------------------

@cases.add
def uids_survive_a_restart(x):
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    before = (select_info(m).get("UIDVALIDITY"), uids_of(m), select_info(m).get("UIDNEXT"))
    m.logout()
    rc = x.d.stop()
    check(rc == 0, f"stop: {rc}")
    x.d.start()
    m = session(x)
    ok(m.select("INBOX"), "SELECT")
    after = (select_info(m).get("UIDVALIDITY"), uids_of(m), select_info(m).get("UIDNEXT"))
    check(before == after, f"before {before} after {after}")
    m.logout()


def main():
    with TestEnv("imap") as env:
        x = Ctx()
        x.env = env
        x.ca = CA(env.dir / "ca")
        cert, key = x.ca.issue(HOST, names=["127.0.0.1"])
        x.cert = cert
        x.ctx = ssl.create_default_context(cafile=str(x.ca.cert))
        hp = free_port()
        env.fast_sink("hard", [f"127.0.0.1:{hp}"], ["--rcpt-script", "550"])
        users = env.dir / "users"
        users.write_text("")
        x.imap, x.imaps, x.inbound = free_port(), free_port(), free_port()
        x.d = env.daemon(routes={"hard.test": f"127.0.0.1:{hp}"}, with_api=True,
                         server={"hostname": HOST},
                         queue={"retry": "1s, 2s", "max_age": "1h",
                                "bounce_domain": "bounces.test"},
                         extra=(f"[listen]\nimap = 127.0.0.1:{x.imap}\n"
                                f"imaps = 127.0.0.1:{x.imaps}\n"
                                f"inbound = 127.0.0.1:{x.inbound}\n"
                                f"[tls]\ncert = {cert}\nkey = {key}\n"
                                f"[auth]\nusers = {users}\nmax_failures = 3\n"
                                f"[mailbox]\nusers = {ALICE}, carol\n"))
        for name, pw in ((ALICE, ALICE_PW), (BOB, BOB_PW)):
            r = run([ringpost_bin(), "user", "-c", x.d.config_path, "add", name],
                    input=(pw + "\n").encode(), cwd=env.dir)
            check(r.returncode == 0, f"user add {name}: {r.stderr!r}")
        x.d.start()
        new_bounces(x, 3, "first")
        x.full_uid = full_bounce(x)
        only = os.environ.get("IMAP_CASES")  # a comma-separated subset, for debugging
        todo = Cases(c for c in cases if not only or c.__name__ in only.split(","))
        failures = run_cases(todo, x, [x.d])
        log_text = x.d.log()
        for secret in (ALICE_PW, BOB_PW, base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()):
            if secret in log_text:
                failures.append(f"the log holds a password: {secret!r}")
        stop_clean(x.d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
