"""test_pop3.py - POP3 for the bounce mailbox (RFC 1939, RFC 2449, RFC 2595),
driven by real clients: Python's poplib (STLS and POP3_SSL, verifying our
CA), curl pop3:// and pop3s://, fetchmail in batch mode, and a raw-socket
client for exact bytes and bad input.

The mailbox is filled the way it fills in production: ringpost's own DSNs.
[domain *] routes to a ringpost-sink that answers 550 to every RCPT, so
each message submitted bounces at once and its DSN lands in the mailbox
(GET /v1/bounces shows them). Four come from API messages, one from an SMTP
submission with RET=FULL whose body has lines starting with dots and 8-bit
bytes, one from a 1.2 MB RET=FULL message (RETR of it is produced in
slices). Certificates come from a private CA (harness tlsfiles) for
mta.test.example and 127.0.0.1; the users file is made with `ringpost user
add` (the password on its stdin). Two daemons:

  "pop"   [tls], pop3 (STLS) and pop3s listeners, [auth] require_tls = yes,
          max_failures high, [mailbox] users = alice (bob may log in to
          SMTP but not read the mailbox); most cases;
  "edge"  no [tls], require_tls = no, max_failures = 3: plain-text logins,
          STLS unavailable, the failure limit (each from its own 127.0.0.x).

Cases:
  - CAPA before TLS offers STLS and neither USER nor SASL; USER and AUTH
    before STLS get -ERR [AUTH]; after poplib's stls() (verifying) CAPA
    offers USER, SASL PLAIN, TOP, UIDL, RESP-CODES, AUTH-RESP-CODE,
    PIPELINING, IMPLEMENTATION and no STLS; STLS after TLS and after login
    is refused; POP3_SSL verifies, and a client without our CA refuses us;
  - exact bytes: RETR's reply is the stored message dot-stuffed with
    CRLF.CRLF (our dot_stuff of GET /v1/bounces/UID), "+OK N octets" and
    LIST agree with the stored size; TOP n 0 and n 3 give the headers and
    that many body lines; UIDL is "UIDVALIDITY.UID" of GET /v1/bounces;
    RETR sets seen (the API says so), TOP does not;
  - poplib: stat, list, uidl, retr, top, dele, rset, quit: DELE'd
    messages are refused in the session, RSET brings them back, QUIT
    removes exactly the marked ones (the API no longer lists them), the
    next session sees the rest with the same UIDLs;
  - a session that DELEs everything and drops (close, and RST) deletes
    nothing; one logged in holds the mailbox: another login gets
    -ERR [IN-USE] until it has quit;
  - AUTH PLAIN with and without initial response, "*" cancels, bad base64,
    authzid for someone else; bob (right password, not in [mailbox] users)
    is refused; STLS with USER pipelined behind it: the USER is not read;
  - bad input: unknown commands, commands in the wrong state, PASS before
    USER, RETR/TOP/DELE/LIST of deleted, missing and malformed message
    numbers, an over-long line (then the session goes on), NUL and 8-bit
    garbage, ten bad commands close the session, 1 MB without a newline;
  - floods: 3000 pipelined NOOPs, 20 pipelined RETRs of the 1.2 MB message
    read only afterwards (each one exact); the daemon keeps serving;
  - edge: USER/PASS in clear text when require_tls = no, STLS refused
    without [tls]; 150 sessions of random commands, garbage, splits and
    endings (a fixed seed) get only POP3 replies; wrong passwords answered after >= 1 s, then >= 2 s,
    the third closes with -ERR [AUTH] and the address is refused at
    connect while another is served;
  - curl --ssl-reqd pop3:// (LIST and RETR, through AUTH PLAIN) and
    pop3s://; without our CA curl refuses (exit 60);
  - shutdown: a session in AUTHORIZATION gets -ERR [SYS/TEMP] and a
    close; one in TRANSACTION with DELE marks that asked for 10 MB and
    reads nothing does not hold the stop up; after the restart nothing is
    deleted and every UIDL is what it was;
  - fetchmail (--sslcertck with our CA, an mda appending to a file): a
    keep run over STLS fetches every message, a second one with the same
    UIDL file fetches none, a run over pop3s without keep fetches and
    deletes them all: the mailbox is empty, STAT says 0 0;
  - no password or credential blob in the logs; both daemons stop cleanly.
"""

import base64
import os
import poplib
import re
import socket
import ssl
import subprocess
import time

from harness import (CA, SANITIZE, SLOW, Cases, SMTPConn, TestEnv, TestFailure, api_send, bounce_get,
                     bounce_list, check, curl, dot_stuff, free_port, log, raise_failures,
                     ringpost_bin, run_cases, run_test, smtp_submit, stop_clean, wait_for)

HOST = "mta.test.example"  # config_text's [server] hostname: the certificate's name
ALICE, ALICE_PW = "alice", "alice's pop pass"
BOB, BOB_PW = "bob", "bob pw 22"
SENDER = "sender@origin.test"
BIG_LINES = 16000  # lines of 76 characters: 1.2 MB

cases = Cases()


# ---- helpers -------------------------------------------------------------------

def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def run(argv, input=None, timeout=60, cwd=None, env=None):
    try:
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout * SLOW,
                              cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{' '.join(map(str, argv))[:200]} did not finish")


class P3(SMTPConn):
    """A raw-socket POP3 client: exact bytes out, exact replies in."""

    def line(self):
        return self.read_line().rstrip(b"\r\n")

    def greeting(self):
        g = self.line()
        check(g.startswith(b"+OK"), f"greeting: {g!r}")
        return g

    def ok(self, cmd, what=None):
        self.send(cmd + "\r\n" if isinstance(cmd, str) else cmd + b"\r\n")
        r = self.line()
        check(r.startswith(b"+OK"), f"{what or cmd!r}: {r!r}")
        return r

    def err(self, cmd, what=None, has=None):
        self.send(cmd + "\r\n" if isinstance(cmd, str) else cmd + b"\r\n")
        r = self.line()
        check(r.startswith(b"-ERR"), f"{what or cmd!r}: expected -ERR, got {r!r}")
        if has:
            check(has.encode() in r, f"{what or cmd!r}: {r!r} does not say {has!r}")
        return r

    def multi(self):
        """The lines of a multi-line reply up to its "." (as sent)."""
        out = []
        while True:
            line = self.line()
            if line == b".":
                return out
            out.append(line)

    def wire_body(self):
        """The bytes of a multi-line reply as sent, terminator included."""
        out = []
        while True:
            line = self.read_line()
            out.append(line)
            if line == b".\r\n":
                return b"".join(out)


def p3_small_window(port):
    """A P3 whose receive buffer is tiny from before the connect (the
    kernel would otherwise grow it to megabytes): a client that stops
    reading stops the server's sends soon."""
    c = P3.__new__(P3)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.settimeout(30 * SLOW)
    c.sock.connect(("127.0.0.1", port))
    c.buf = b""
    return c


def p3_tls(x, port=None, source=None, user=ALICE, pw=ALICE_PW, login=True, small=False):
    """A session on the pop daemon after STLS (verified) and, with login,
    USER/PASS (waiting out another session's [IN-USE])."""
    def attempt():
        c = p3_small_window(port or x.pop3) if small else P3(port or x.pop3, source=source)
        c.greeting()
        c.ok("STLS")
        c.start_tls(x.ctx, "127.0.0.1")
        if not login:
            return c
        c.ok(f"USER {user}")
        c.send(f"PASS {pw}\r\n")
        r = c.line()
        if b"[IN-USE]" in r:
            c.close()
            return None
        check(r.startswith(b"+OK maildrop has "), f"PASS: {r!r}")
        return c
    return wait_for(attempt, 10, "a POP3 login (the mailbox in use)", interval=0.1)


def poplib_tls(x, user=ALICE, pw=ALICE_PW):
    """poplib over STLS, logged in (waiting out [IN-USE])."""
    def attempt():
        p = poplib.POP3("127.0.0.1", x.pop3, timeout=30 * SLOW)
        p.stls(context=x.ctx)
        p.user(user)
        try:
            p.pass_(pw)
        except poplib.error_proto as e:
            if b"[IN-USE]" in e.args[0]:
                p.close()
                return None
            raise
        return p
    return wait_for(attempt, 10, "a poplib login (the mailbox in use)", interval=0.1)


def stored(x):
    """{uid: bytes} of the mailbox now (through the API), and UIDVALIDITY."""
    r = x.d.api("GET", "/v1/bounces")
    check(r.status == 200, f"GET /v1/bounces: {r.status}")
    j = r.json()
    return {e["uid"]: bounce_get(x.d, e["uid"]) for e in j["messages"]}, j["uidvalidity"]


def api_entries(x):
    return {e["uid"]: e for e in bounce_list(x.d)}


def split_message(msg):
    """(header lines, body lines) of a stored message (CRLF lines)."""
    lines = msg.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    i = lines.index(b"") if b"" in lines else len(lines)
    return lines[:i + 1], lines[i + 1:]


def wait_log(d, pattern, count=1, timeout=10):
    """Wait until d's log has count lines matching pattern."""
    wait_for(lambda: len(re.findall(pattern, d.log())) >= count, timeout,
             f"{count} log lines /{pattern}/")


def anon_kb(d):
    """The daemon's anonymous resident memory (KiB): heap, not the spool's map."""
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise TestFailure("no RssAnon in /proc/PID/status")


class Ctx:
    pass


# ---- TLS, CAPA and logins ---------------------------------------------------------

def capa_set(lines):
    return {text(l).split(" ")[0].upper(): text(l) for l in lines}


@cases.add
def capa_and_stls(x):
    p = poplib.POP3("127.0.0.1", x.pop3, timeout=30 * SLOW)
    check(p.getwelcome().startswith(b"+OK"), f"greeting {p.getwelcome()!r}")
    caps = p.capa()
    check("STLS" in caps and "USER" not in caps and "SASL" not in caps,
          f"CAPA before TLS: {caps}")
    for want in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
        check(want in caps, f"CAPA before TLS lacks {want}: {caps}")
    check(caps.get("IMPLEMENTATION") == ["ringpost"], f"IMPLEMENTATION: {caps}")
    try:
        p.user(ALICE)
        raise TestFailure("USER accepted before TLS with require_tls")
    except poplib.error_proto as e:
        check(e.args[0].startswith(b"-ERR [AUTH]"), f"USER before TLS: {e.args[0]!r}")
    p.stls(context=x.ctx)
    caps = p.capa()
    check("USER" in caps and caps.get("SASL") == ["PLAIN"] and "STLS" not in caps,
          f"CAPA after TLS: {caps}")
    try:
        p._shortcmd("STLS")
        raise TestFailure("STLS accepted twice")
    except poplib.error_proto as e:
        check(e.args[0].startswith(b"-ERR"), f"STLS again: {e.args[0]!r}")
    p.quit()
    # AUTH before TLS: refused the same way.
    with P3(x.pop3) as c:
        c.greeting()
        c.err(f"AUTH PLAIN {b64(chr(0) + ALICE + chr(0) + ALICE_PW)}", has="[AUTH]")
        c.err("PASS x", has="[AUTH]")
        c.ok("QUIT")
    # After login: CAPA has no login capability and STLS is refused.
    c = p3_tls(x)
    with c:
        c.ok("CAPA")
        caps = capa_set(c.multi())
        check("USER" not in caps and "STLS" not in caps and "SASL" not in caps and "TOP" in caps,
              f"CAPA in TRANSACTION: {caps}")
        c.err("STLS")
        c.ok("QUIT")


@cases.add
def pop3s_verified(x):
    p = poplib.POP3_SSL("127.0.0.1", x.pop3s, context=x.ctx, timeout=30 * SLOW)
    caps = p.capa()
    check("STLS" not in caps and "USER" in caps, f"pop3s CAPA: {caps}")
    p.user(ALICE)
    resp = p.pass_(ALICE_PW)
    check(resp.startswith(b"+OK maildrop has "), f"pop3s PASS: {resp!r}")
    n, _ = p.stat()
    check(n == len(x.msgs), f"pop3s STAT: {n} messages, {len(x.msgs)} stored")
    p.quit()
    try:
        poplib.POP3_SSL("127.0.0.1", x.pop3s, context=ssl.create_default_context(),
                        timeout=10 * SLOW).quit()
        raise TestFailure("a client without our CA accepted the certificate")
    except ssl.SSLCertVerificationError:
        pass
    try:
        p = poplib.POP3("127.0.0.1", x.pop3, timeout=10 * SLOW)
        p.stls(context=ssl.create_default_context())
        raise TestFailure("STLS: a client without our CA accepted the certificate")
    except ssl.SSLCertVerificationError:
        pass


# ---- the exact bytes --------------------------------------------------------------------

@cases.add
def exact_bytes(x):
    msgs, uidv = stored(x)
    uids = sorted(msgs)
    c = p3_tls(x)
    with c:
        r = c.ok("STAT")
        check(r == f"+OK {len(uids)} {sum(len(m) for m in msgs.values())}".encode(),
              f"STAT {r!r} for sizes {[len(msgs[u]) for u in uids]}")
        # TOP first: headers, the blank line, then n body lines, stuffed; it
        # does not set seen.
        k = uids.index(x.dotted_uid)
        head, body = split_message(msgs[x.dotted_uid])
        for n in (0, 3, 100000):
            c.ok(f"TOP {k + 1} {n}")
            want = b"".join(l + b"\r\n" for l in head + body[:n])
            check(c.wire_body() == dot_stuff(want), f"TOP {k + 1} {n}")
        c.ok("NOOP")
        time.sleep(0.3 * SLOW)
        check(not api_entries(x)[x.dotted_uid]["seen"], "TOP set seen")
        c.ok("LIST")
        listed = c.multi()
        want = [f"{i + 1} {len(msgs[u])}".encode() for i, u in enumerate(uids)]
        check(listed == want, f"LIST {listed} != {want}")
        c.ok("UIDL")
        got = c.multi()
        want = [f"{i + 1} {uidv}.{u}".encode() for i, u in enumerate(uids)]
        check(got == want, f"UIDL {got} != {want}")
        for i, u in enumerate(uids):
            r = c.ok(f"RETR {i + 1}")
            check(r == f"+OK {len(msgs[u])} octets".encode(), f"RETR {i + 1}: {r!r}")
            body = c.wire_body()
            check(body == dot_stuff(msgs[u]), f"RETR {i + 1} (UID {u}): the wire bytes differ "
                  f"({len(body)} vs {len(dot_stuff(msgs[u]))})")
            check(c.ok(f"LIST {i + 1}") == f"+OK {i + 1} {len(msgs[u])}".encode(), "LIST n")
            check(c.ok(f"UIDL {i + 1}") == f"+OK {i + 1} {uidv}.{u}".encode(), "UIDL n")
        c.ok("QUIT")
    check(any(b"\r\n..\r\n" in dot_stuff(m) for m in msgs.values()),
          "no stored message has a line of one dot: the stuffing case is untested")
    # RETR sets seen (the writer does it after the reply: wait).
    wait_for(lambda: all(e["seen"] for e in api_entries(x).values()), 10,
             "every message seen after RETR")


# ---- poplib: a whole session ------------------------------------------------------------

@cases.add
def poplib_session(x):
    msgs, uidv = stored(x)
    uids = sorted(msgs)
    p = poplib_tls(x)
    n, octets = p.stat()
    check((n, octets) == (len(uids), sum(map(len, msgs.values()))), f"STAT {n} {octets}")
    resp, lines, _ = p.list()
    check([l.split()[1] for l in lines] == [str(len(msgs[u])).encode() for u in uids],
          f"LIST {lines}")
    resp, lines, _ = p.uidl()
    ids = [l.split()[1] for l in lines]
    check(ids == [f"{uidv}.{u}".encode() for u in uids], f"UIDL {lines}")
    for i, u in enumerate(uids):
        resp, lines, octets = p.retr(i + 1)
        check(b"\r\n".join(lines) + b"\r\n" == msgs[u], f"poplib RETR {i + 1} differs")
        check(resp == f"+OK {len(msgs[u])} octets".encode(), f"RETR {i + 1}: {resp!r}")
    head, body = split_message(msgs[uids[0]])
    resp, lines, _ = p.top(1, 2)
    check(lines == head + body[:2], f"TOP 1 2: {lines[-4:]} vs {(head + body[:2])[-4:]}")
    p.dele(1)
    p.dele(2)
    for bad in (lambda: p.retr(1), lambda: p.dele(2), lambda: p.top(1, 0), lambda: p.list(2),
                lambda: p.uidl(1)):
        try:
            bad()
            raise TestFailure("a command on a deleted message succeeded")
        except poplib.error_proto as e:
            check(e.args[0].startswith(b"-ERR"), f"on a deleted message: {e.args[0]!r}")
    n, _ = p.stat()
    check(n == len(uids) - 2, f"STAT after two DELE: {n}")
    check(len(p.list()[1]) == len(uids) - 2, "LIST after DELE lists deleted messages")
    check(len(p.uidl()[1]) == len(uids) - 2, "UIDL after DELE lists deleted messages")
    resp = p.rset()
    check(resp.startswith(b"+OK"), f"RSET: {resp!r}")
    check(p.stat()[0] == len(uids), "RSET did not bring the messages back")
    p.retr(1)
    p.dele(1)
    p.dele(2)
    check(p.noop().startswith(b"+OK"), "NOOP")
    resp = p.quit()
    check(resp.startswith(b"+OK"), f"QUIT: {resp!r}")
    left, _ = stored(x)
    check(sorted(left) == uids[2:], f"after QUIT the mailbox has {sorted(left)}, want {uids[2:]}")
    x.msgs = left
    wait_log(x.d, r'pop3 .*quit user="alice" deleted=2')
    p = poplib_tls(x)
    resp, lines, _ = p.uidl()
    check([l.split()[1] for l in lines] == [f"{uidv}.{u}".encode() for u in uids[2:]],
          f"UIDL after the deletions: {lines}")
    check([l.split()[0] for l in lines] == [str(i + 1).encode() for i in range(len(uids) - 2)],
          f"message numbers after the deletions: {lines}")
    p.quit()


@cases.add
def dropped_session_deletes_nothing(x):
    before, _ = stored(x)
    seen = len(re.findall(r"left without QUIT", x.d.log()))
    for how in ("close", "rst"):
        c = p3_tls(x)
        for i in range(len(before)):
            c.ok(f"DELE {i + 1}")
        c.ok("STAT")
        if how == "close":
            c.close()
        else:
            c.abort()
        seen += 1
        wait_log(x.d, r"left without QUIT: nothing deleted", seen)
        after, _ = stored(x)
        check(sorted(after) == sorted(before), f"a dropped session ({how}) deleted "
              f"{sorted(set(before) - set(after))}")
    # And the mailbox is free again.
    c = p3_tls(x)
    c.ok("QUIT")
    c.close()


@cases.add
def mailbox_in_use(x):
    a = p3_tls(x)
    with P3(x.pop3) as b:
        b.greeting()
        b.ok("STLS")
        b.start_tls(x.ctx, "127.0.0.1")
        b.ok(f"USER {ALICE}")
        b.err(f"PASS {ALICE_PW}", has="[IN-USE]")
        b.ok("CAPA")  # still in AUTHORIZATION
        b.multi()
        a.ok("QUIT")
        a.close()
        def login():
            b.ok(f"USER {ALICE}")
            b.send(f"PASS {ALICE_PW}\r\n")
            r = b.line()
            check(r.startswith(b"+OK") or b"[IN-USE]" in r, f"PASS after the other QUIT: {r!r}")
            return r.startswith(b"+OK")
        wait_for(login, 10, "the login after the other session's QUIT", interval=0.1)
        b.ok("QUIT")


@cases.add
def auth_plain(x):
    ir = b64(f"\0{ALICE}\0{ALICE_PW}")
    c = p3_tls(x, login=False)
    with c:
        c.ok("AUTH")
        check(c.multi() == [b"PLAIN"], "AUTH without a mechanism lists PLAIN")
        c.err("AUTH CRAM-MD5")
        c.send("AUTH PLAIN\r\n")
        check(c.line() == b"+ ", "AUTH PLAIN: no '+ '")
        c.err("*", has="cancel")
        c.send("AUTH PLAIN\r\n")
        check(c.line() == b"+ ", "AUTH PLAIN: no '+ '")
        c.err("not base64!")
        c.ok(f"AUTH PLAIN {ir}")
        c.ok("STAT")
        c.ok("QUIT")
    c = p3_tls(x, login=False)
    with c:
        c.send("AUTH PLAIN\r\n")
        c.line()
        c.ok(b64(f"{ALICE}\0{ALICE}\0{ALICE_PW}"), "AUTH PLAIN with authzid = authcid")
        c.ok("QUIT")
    # Someone else's identity, and bob (right password, not in [mailbox] users).
    c = p3_tls(x, source="127.0.0.5", login=False)
    with c:
        c.err(f"AUTH PLAIN {b64(f'{BOB}{chr(0)}{ALICE}{chr(0)}{ALICE_PW}')}", has="[AUTH]")
        c.ok(f"USER {BOB}")
        c.err(f"PASS {BOB_PW}", has="[AUTH]")
        c.err(f"AUTH PLAIN {b64(chr(0) + BOB + chr(0) + BOB_PW)}", has="[AUTH]")
        c.ok(f"USER {ALICE}")
        c.ok(f"PASS {ALICE_PW}")
        c.ok("QUIT")
    check(re.search(r'pop3 .*user="bob" may not read the mailbox', x.d.log()),
          "no log line for bob's refusal")


@cases.add
def stls_injection(x):
    with P3(x.pop3) as c:
        c.greeting()
        c.send(f"STLS\r\nUSER {ALICE}\r\n")
        check(c.line().startswith(b"+OK"), "STLS")
        c.start_tls(x.ctx, "127.0.0.1")
        # The USER sent in clear text behind STLS was not read.
        c.err(f"PASS {ALICE_PW}", has="USER first")
        c.ok(f"USER {ALICE}")
        c.ok(f"PASS {ALICE_PW}")
        c.ok("QUIT")


# ---- bad input ------------------------------------------------------------------------------

@cases.add
def bad_input_authorization(x):
    with P3(x.pop3) as c:
        c.greeting()
        for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP"):
            c.err(cmd, has="not logged in")
        c.ok("CAPA")
        c.multi()  # CAPA is not an error
    with P3(x.pop3) as c:
        c.greeting()
        c.ok("STLS")
        c.start_tls(x.ctx, "127.0.0.1")
        c.err("PASS x", has="USER first")
        c.err("APOP alice 0123456789abcdef0123456789abcdef")
        c.err("XYZZY")
        c.err("")
        c.err("\xff\xfe\x00garbage".encode("latin-1"))
        c.err(b"US\x00R alice")
        c.ok("QUIT")


@cases.add
def bad_input_transaction(x):
    c = p3_tls(x)
    with c:
        n = int(c.ok("STAT").split()[1])
        check(n >= 2, f"{n} messages: too few for this case")
        c.ok("DELE 1")
        c.err("DELE 1", has="deleted")
        c.err("RETR 1", has="deleted")
        c.err("TOP 1 0", has="deleted")
        c.err("LIST 1", has="deleted")
        c.err("UIDL 1", has="deleted")
        for cmd in ("RETR 0", f"RETR {n + 1}", "RETR 4294967295", "LIST 999999", "TOP 99999 1"):
            c.err(cmd, has="no such message")
        c.ok("RSET")
        c.ok("NOOP")
        # Syntax: each counts as a bad command, so a second session goes on.
        for cmd in ("RETR", "RETR x", "RETR -1", "RETR 4294967296", "TOP 1", "TOP 1 -1"):
            c.err(cmd, has="syntax")
        c.ok("NOOP")
        c.ok("QUIT")
    c = p3_tls(x)
    with c:
        for cmd in ("LIST 1 2", "DELE", "STAT 1", "NOOP x", f"USER {ALICE}", "PASS x",
                    "AUTH PLAIN"):
            c.err(cmd)
        c.ok("RSET")
        c.ok("QUIT")
    check(not stored(x)[0].keys() ^ x.msgs.keys(), "bad input changed the mailbox")


@cases.add
def overlong_lines(x):
    c = p3_tls(x)
    with c:
        c.err("NOOP " + "x" * 300, has="too long")
        c.ok("NOOP")  # the session goes on
        # 10000 bytes without a newline: every 255 of them count as a bad
        # line, and ten bad commands end the session.
        c.send("X" * 10000)
        check(c.line().startswith(b"-ERR line too long"), "the first of 10000 bytes")
        check(c.at_eof(10), "10000 bytes without a newline did not close the session")
    # A long line in one write, then more on the next: exactly one error.
    with P3(x.pop3) as c:
        c.greeting()
        c.send("CAPA" + " " * 200)
        time.sleep(0.1)
        c.send(" " * 100 + "\r\nNOOP\r\n")
        r = c.line()
        check(r.startswith(b"-ERR") and b"too long" in r, f"long line: {r!r}")
        r = c.line()
        check(r.startswith(b"-ERR not logged in"), f"the NOOP behind the long line: {r!r}")
        c.ok("QUIT")


@cases.add
def too_many_errors(x):
    with P3(x.pop3) as c:
        c.greeting()
        for i in range(9):
            c.err(f"BAD{i}")
        c.send("BAD9\r\n")
        check(c.line().startswith(b"-ERR"), "the tenth bad command")
        r = c.line()
        check(b"too many bad commands" in r, f"after ten bad commands: {r!r}")
        check(c.at_eof(10), "still open after ten bad commands")
    with P3(x.pop3) as c:  # 1 MB of junk without a newline
        c.greeting()
        try:
            c.send(os.urandom(1 << 20).replace(b"\n", b"x"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        check(c.at_eof(10), "1 MB without a newline did not close the session")


@cases.add
def floods(x):
    c = p3_tls(x)
    with c:
        c.send("NOOP\r\n" * 3000)
        for i in range(3000):
            r = c.line()
            check(r == b"+OK", f"NOOP {i}: {r!r}")
        # 20 RETRs of the big message (1.2 MB) in one write, read afterwards.
        msgs, _ = stored(x)
        k = sorted(msgs).index(x.big_uid) + 1
        want = dot_stuff(msgs[x.big_uid])
        check(len(want) > 1 << 20, f"the big message has {len(want)} bytes")
        rss = anon_kb(x.d)
        c.send(f"RETR {k}\r\n" * 20 + "LIST\r\n")
        time.sleep(1 * SLOW)  # the daemon must not queue 24 MB for us meanwhile
        grown = anon_kb(x.d) - rss
        # (ASan keeps freed memory in quarantine: no measure there.)
        check(SANITIZE or grown < 8192, f"the daemon grew by {grown} KiB while the client "
              "did not read 20 pipelined RETRs of 1.2 MB")
        for i in range(20):
            c.line()
            check(c.wire_body() == want, f"pipelined RETR {i}: the bytes differ")
        c.line()
        check(len(c.multi()) == len(msgs), "the LIST behind the RETRs")
        c.ok("QUIT")
    # Still serving.
    c = p3_tls(x)
    c.ok("QUIT")
    c.close()


# ---- the edge daemon: clear text, the failure limit -------------------------------------------

@cases.add
def edge_plain_login(x):
    with P3(x.edge_pop3) as c:
        c.greeting()
        c.ok("CAPA")
        caps = capa_set(c.multi())
        check("USER" in caps and "STLS" not in caps, f"edge CAPA: {caps}")
        c.err("STLS", has="not available")
        c.ok(f"USER {ALICE}")
        c.ok(f"PASS {ALICE_PW}")
        c.ok("STAT")
        c.ok("QUIT")


def timed(c, line):
    t0 = time.monotonic()
    c.send(line + "\r\n")
    r = c.line()
    return time.monotonic() - t0, r


@cases.add
def edge_failure_limit(x):
    src = "127.0.0.2"
    with P3(x.edge_pop3, source=src) as c:
        c.greeting()
        c.ok(f"USER {ALICE}")
        t, r = timed(c, "PASS wrong one")
        check(r.startswith(b"-ERR [AUTH]"), f"a wrong password: {r!r}")
        check(t >= 0.9, f"the first failure answered after {t:.2f}s")
        c.ok(f"USER {ALICE}")
        t, r = timed(c, "PASS wrong two")
        check(r.startswith(b"-ERR [AUTH]") and t >= 1.9, f"second: {r!r} after {t:.2f}s")
        c.ok(f"USER {ALICE}")
        t, r = timed(c, "PASS wrong three")
        check(r.startswith(b"-ERR [AUTH]") and b"too many" in r, f"third: {r!r}")
        check(c.at_eof(10), "still open at the failure limit")
    with P3(x.edge_pop3, source=src) as c:
        r = c.line()
        check(r.startswith(b"-ERR [SYS/TEMP]"), f"a blocked address at connect: {r!r}")
        check(c.at_eof(10), "a blocked address is not closed")
    with P3(x.edge_pop3, source="127.0.0.3") as c:  # another address is served
        c.greeting()
        c.ok(f"USER {ALICE}")
        c.ok(f"PASS {ALICE_PW}")
        c.ok("QUIT")


@cases.add
def edge_random_sessions(x):
    """150 sessions of random commands, arguments, garbage and splits,
    pipelined and ended in random ways (a fixed seed): POP3 replies come
    back, and the daemon keeps serving."""
    import random
    rnd = random.Random(1939)
    words = ["STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "CAPA", "AUTH",
             "STLS", "APOP", "XTND", "list", "Top"]
    for i in range(150):
        cmds = [f"USER {ALICE}", f"PASS {ALICE_PW}"] if rnd.random() < 0.8 else []
        for _ in range(rnd.randrange(1, 12)):
            w = rnd.choice(words)
            args = " ".join(str(rnd.choice([0, 1, 2, 3, 4294967295, -1, "x", ""]))
                            for _ in range(rnd.randrange(0, 3)))
            cmds.append(f"{w} {args}".rstrip() if args else w)
            if rnd.random() < 0.1:
                cmds.append(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
                            .replace(b"\n", b" ").decode("latin-1"))
        # (Two QUITs: an AUTH dialogue may take the first as its response.)
        end = rnd.choice(["RSET\r\nQUIT\r\nQUIT\r\n", "", "QUIT\r\nQUIT\r\n"])
        data = ("\r\n".join(cmds) + "\r\n" + end).encode("latin-1")
        if rnd.random() < 0.3:
            data = data.replace(b"\r\n", b"\n")
        c = P3(x.edge_pop3, source="127.0.0.9")
        try:
            c.greeting()
            cut = 0
            while cut < len(data):
                step = rnd.randrange(1, 64)
                c.send(data[cut:cut + step])
                cut += step
            if end:
                c.sock.settimeout(5 * SLOW)
                try:
                    first = c.line()
                    check(first.startswith((b"+OK", b"-ERR")), f"session {i}: {first[:80]!r}")
                    while True:
                        c.line()
                except (EOFError, ConnectionResetError):
                    pass
                except socket.timeout:
                    raise TestFailure(f"session {i}: not closed after QUIT: {data[-300:]!r}")
        finally:
            c.abort() if rnd.random() < 0.5 else c.close()
    wait_for(lambda: x.e.alive(), 1, "the edge daemon alive")
    def serving():
        with P3(x.edge_pop3) as c:
            c.greeting()
            c.ok(f"USER {ALICE}")
            c.send(f"PASS {ALICE_PW}\r\n")
            r = c.line()
            if b"[IN-USE]" in r:
                return False
            check(r.startswith(b"+OK"), f"PASS after the random sessions: {r!r}")
            c.ok("QUIT")
            return True
    wait_for(serving, 10, "a login after the random sessions", interval=0.1)


# ---- curl ---------------------------------------------------------------------------------------

@cases.add
def curl_pop3(x):
    msgs, _ = stored(x)
    uids = sorted(msgs)
    user = ["--user", f"{ALICE}:{ALICE_PW}"]
    for scheme, port, extra in (("pop3", x.pop3, ["--ssl-reqd"]), ("pop3s", x.pop3s, [])):
        base = f"{scheme}://127.0.0.1:{port}/"
        r = curl(extra + ["--cacert", str(x.ca.cert)] + user + [base])
        check(r.returncode == 0, f"curl {base}: exit {r.returncode}: {text(r.stderr)}")
        want = "".join(f"{i + 1} {len(msgs[u])}\r\n" for i, u in enumerate(uids)).encode()
        check(r.stdout == want, f"curl {base} (LIST): {r.stdout!r}, want {want!r}")
        for i in (1, len(uids)):
            r = curl(extra + ["--cacert", str(x.ca.cert)] + user + [f"{base}{i}"])
            check(r.returncode == 0, f"curl {base}{i}: exit {r.returncode}: {text(r.stderr)}")
            check(r.stdout == msgs[uids[i - 1]], f"curl {base}{i}: the message differs")
        r = curl(extra + user + [base])
        check(r.returncode == 60, f"curl {base} without our CA: exit {r.returncode}")
    check(re.search(r'pop3 .*login user="alice" method=PLAIN', x.d.log()),
          "curl did not log in with AUTH PLAIN")
    check(stored(x)[0].keys() == msgs.keys(), "curl changed the mailbox")


# ---- shutdown and restart ---------------------------------------------------------------------

@cases.add
def shutdown_and_restart(x):
    msgs, uidv = stored(x)
    p = poplib_tls(x)
    before = p.uidl()[1]
    p.quit()
    a = P3(x.pop3)
    a.greeting()
    t = p3_tls(x, small=True)
    k = sorted(msgs).index(x.big_uid) + 1
    for i in range(len(msgs)):
        if i + 1 != k:
            t.ok(f"DELE {i + 1}")
    # Then it asks for 10 MB and reads nothing: that must not hold the stop.
    t.send(f"RETR {k}\r\n" * 8)
    time.sleep(1 * SLOW)
    t0 = time.monotonic()
    rc = x.d.stop()
    check(rc == 0, f"SIGTERM exit status {rc}")
    check(time.monotonic() - t0 < 5 * SLOW, f"the stop took {time.monotonic() - t0:.1f}s")
    t.abort()
    for c, what in ((a, "AUTHORIZATION"),):
        r = c.line()
        check(r.startswith(b"-ERR [SYS/TEMP]"), f"a session in {what} at shutdown: {r!r}")
        check(c.at_eof(10), f"a session in {what} not closed at shutdown")
        c.close()
    x.d.start()
    after, uidv2 = stored(x)
    check(after.keys() == msgs.keys() and uidv2 == uidv,
          f"after the restart: {sorted(after)} (UIDVALIDITY {uidv2}), "
          f"before {sorted(msgs)} ({uidv})")
    p = poplib_tls(x)
    check(p.uidl()[1] == before, "UIDL changed across the restart")
    p.quit()


# ---- fetchmail ------------------------------------------------------------------------------------

def fetchmail(x, name, poll, keep, user_opts=""):
    """One fetchmail run (batch mode, verbose) with an rc file: the
    CompletedProcess and the mbox it appended to."""
    out = x.env.dir / f"{name}.mbox"
    rc = x.env.dir / f"{name}.fetchmailrc"
    rc.write_text(
        "set no syslog\nset no bouncemail\n"
        f"{poll}\n"
        f'  user "{ALICE}" there with password "{ALICE_PW}" is "root" here\n'
        f'  {user_opts}sslproto "TLS1.2+" sslcertck sslcertfile "{x.ca.cert}" sslcommonname "{HOST}"\n'
        f"  mda \"cat >> {out}\"\n" + ("  keep\n" if keep else "  fetchall\n"))
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(x.env.dir))
    r = run(["fetchmail", "-f", str(rc), "-v", "--nodetach", "--idfile",
             str(x.env.dir / "fetchmail.ids"), "--pidfile", str(x.env.dir / "fetchmail.pid")],
            env=env, timeout=120)
    return r, out


def mbox_ids(path):
    """The X-Ringpost-Queue-ID of each DSN in an mbox fetchmail appended to."""
    data = path.read_bytes() if path.exists() else b""
    return re.findall(rb"X-Ringpost-Queue-ID: (\w+)", data)


@cases.add
def fetchmail_batch(x):
    msgs, _ = stored(x)
    ids = sorted(re.search(rb"X-Ringpost-Queue-ID: (\w+)", m).group(1) for m in msgs.values())
    poll_stls = f"poll 127.0.0.1 service {x.pop3} protocol POP3 uidl"
    r, out = fetchmail(x, "keep", poll_stls, keep=True)
    log_text = text(r.stdout + r.stderr)
    check(r.returncode == 0, f"fetchmail (keep): exit {r.returncode}: {log_text[-1500:]}")
    check("STLS" in log_text and "upgrade to TLS succeeded" in log_text,
          f"fetchmail did not use STLS: {log_text[-1500:]}")
    check(sorted(mbox_ids(out)) == ids, f"fetchmail (keep) fetched {mbox_ids(out)}, want {ids}")
    check(stored(x)[0].keys() == msgs.keys(), "a keep run changed the mailbox")
    # The same UIDL file: nothing new.
    r, out2 = fetchmail(x, "again", poll_stls, keep=True)
    check(r.returncode == 1, f"fetchmail (again): exit {r.returncode} (1 = no new mail): "
          f"{text(r.stdout + r.stderr)[-1500:]}")
    check(not mbox_ids(out2), f"the second keep run fetched {mbox_ids(out2)}")
    # pop3s, fetch and delete everything.
    r, out3 = fetchmail(x, "delete", f"poll 127.0.0.1 service {x.pop3s} protocol POP3",
                        keep=False, user_opts="ssl ")
    log_text = text(r.stdout + r.stderr)
    check(r.returncode == 0, f"fetchmail (delete): exit {r.returncode}: {log_text[-1500:]}")
    check(sorted(mbox_ids(out3)) == ids, f"fetchmail (delete) fetched {mbox_ids(out3)}")
    check(re.search(r"POP3> DELE", log_text), "fetchmail sent no DELE")
    wait_for(lambda: not stored(x)[0], 10, "the mailbox emptied by fetchmail")
    c = p3_tls(x)
    with c:
        check(c.ok("STAT") == b"+OK 0 0", "STAT of the empty mailbox")
        c.ok("LIST")
        check(c.multi() == [], "LIST of the empty mailbox")
        c.ok("QUIT")


# ---- main ------------------------------------------------------------------------------------------

def fill_mailbox(x):
    """Six DSNs: four from API messages, one from an SMTP RET=FULL message
    with dotted and 8-bit lines, one from a 1.2 MB RET=FULL message."""
    for i in range(4):
        api_send(x.d, SENDER, [f"solo{i}@dest.test"], f"solo{i}")
    dotted = (b"From: <sender@origin.test>\r\nTo: <dots@dest.test>\r\nSubject: dots\r\n\r\n"
              b".\r\n..\r\n.leading dot\r\nmiddle . dot\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n"
              b"From the start\r\n.\r\nend\r\n")
    smtp_submit(x.d.port, SENDER, ["dots@dest.test"], dotted, " RET=FULL BODY=8BITMIME")
    big = (b"From: <sender@origin.test>\r\nTo: <big@dest.test>\r\nSubject: big\r\n\r\n" +
           b"".join((b"." if i % 7 == 0 else b"x") + b"%074d\r\n" % i for i in range(BIG_LINES)))
    smtp_submit(x.d.port, SENDER, ["big@dest.test"], big, " RET=FULL")
    # The edge daemon's mailbox (for its random sessions): two DSNs.
    for i in range(2):
        smtp_submit(x.e.port, SENDER, [f"edge{i}@dest.test"], dotted)
    wait_for(lambda: len(bounce_list(x.d)) >= 6, 30, "six DSNs in the mailbox")
    time.sleep(0.3 * SLOW)
    x.msgs, x.uidvalidity = stored(x)
    check(len(x.msgs) == 6, f"{len(x.msgs)} DSNs in the mailbox, want 6")
    for uid, m in x.msgs.items():
        if b"\r\n..leading dot" in dot_stuff(m):
            x.dotted_uid = uid
        if len(m) > 1 << 20:
            x.big_uid = uid
    check(getattr(x, "dotted_uid", None) and getattr(x, "big_uid", None),
          "the RET=FULL DSNs are not in the mailbox")


def secrets_absent(ds):
    fails = []
    blobs = [ALICE_PW, BOB_PW, b64(f"\0{ALICE}\0{ALICE_PW}"), b64(ALICE_PW)]
    for d in ds:
        t = d.log()
        for b in blobs:
            if b in t:
                fails.append(f"{d.log_path.name} holds a credential: {b!r}")
    return fails


def main():
    with TestEnv("pop3") as env:
        x = Ctx()
        x.env = env
        x.ca = CA(env.dir / "ca")
        cert, key = x.ca.issue(HOST, names=["127.0.0.1"])
        x.ctx = ssl.create_default_context(cafile=str(x.ca.cert))
        sink_port = free_port()
        env.fast_sink("reject", [f"127.0.0.1:{sink_port}"], ["--fault", "rcpt550=1"])
        users = env.dir / "users"
        users.write_text("# ringpost users (made by ringpost user add)\n")
        x.pop3, x.pop3s, x.edge_pop3 = free_port(), free_port(), free_port()
        x.d = env.daemon(routes={}, name="pop", with_api=True,
                         domain_defaults={"route": f"127.0.0.1:{sink_port}"},
                         extra=f"[listen]\npop3 = 127.0.0.1:{x.pop3}\n"
                         f"pop3s = 127.0.0.1:{x.pop3s}\n"
                         f"[tls]\ncert = {cert}\nkey = {key}\n"
                         f"[auth]\nusers = {users}\nrequire_tls = yes\nmax_failures = 50\n"
                         f"[mailbox]\nusers = {ALICE}\n"
                         # floods pipelines 3,000 NOOPs: unthrottled here
                         # (test_client_limits tests commands_per_second)
                         "[limits]\ncommands_per_second = 0\n")
        x.e = env.daemon(routes={}, name="edge",
                         domain_defaults={"route": f"127.0.0.1:{sink_port}"},
                         extra=f"[listen]\npop3 = 127.0.0.1:{x.edge_pop3}\n"
                         f"[auth]\nusers = {users}\nrequire_tls = no\nmax_failures = 3\n")
        for name, pw in ((ALICE, ALICE_PW), (BOB, BOB_PW)):
            r = run([ringpost_bin(), "user", "-c", x.d.config_path, "add", name],
                    input=(pw + "\n").encode(), cwd=env.dir)
            check(r.returncode == 0, f"user add {name}: exit {r.returncode}: {text(r.stderr)}")
        x.d.start()
        x.e.start()
        fill_mailbox(x)
        log(f"mailbox: {len(x.msgs)} DSNs, sizes {sorted(len(m) for m in x.msgs.values())}")
        failures = run_cases(cases, x, [x.d, x.e])
        failures += secrets_absent([x.d, x.e])
        for d in (x.d, x.e):
            stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
