"""test_tls_submission.py - STARTTLS, implicit TLS and AUTH on submission,
HTTPS for the API, driven by real clients (openssl s_client, swaks, curl,
Python's smtplib and ssl) on loopback.

Certificates come from a private CA (harness tlsfiles) for mta.test.example
and 127.0.0.1, written into the test directory; the users file is made
with `ringpost user add` (the password on its stdin). Two daemons:

  "tls"   [submission] networks = 10.9.9.9/32, so 127.0.0.1 is outside and
          MAIL needs AUTH; [api] tls = yes; [domain *] route to a smtpd
          receiver; max_failures high, so its cases never block each other
          (each case that fails a login does so from its own 127.0.0.x);
  "edge"  loopback inside networks (may relay without AUTH), [auth]
          max_failures = 3, idle_timeout 2s: the cases that block
          addresses, stall handshakes or inject commands.

Cases:
  - s_client -starttls smtp -verify_return_error -CAfile -verify_hostname:
    the handshake verifies; EHLO after TLS offers AUTH PLAIN LOGIN and no
    STARTTLS (EHLO before TLS: STARTTLS, no AUTH); a wrong name fails;
  - swaks --tls --tls-verify with --auth PLAIN and --auth LOGIN, curl
    --ssl-reqd smtp://, smtplib starttls(verifying context) + login(), and
    SMTP_SSL on the submissions port (AUTH LOGIN): each message arrives at
    the receiver with "with ESMTPSA" and "(using TLSv1.x with cipher ...)"
    in ringpost's Received:, and GET /v1/messages/ID says "submitter":
    "alice"; an unverifiable certificate is refused by the client;
  - AUTH dialogues: PLAIN and LOGIN with and without initial responses,
    "*" aborts, bad base64, an unknown mechanism, AUTH twice, authzid for
    someone else, a NUL in the password or LOGIN's name (the right password
    then NUL and more is not the right password);
  - STARTTLS injection (CVE-2011-0411 class): "STARTTLS\\r\\nMAIL ..." in one
    write, then TLS: the MAIL is not run (RCPT gets 503, MAIL gets 250 not
    "nested"), nor an injected EHLO; clear text sent after the 220 is
    taken for the handshake, which fails;
  - 538 5.7.11 for AUTH before TLS; 530 5.7.0 for MAIL without AUTH from
    outside networks; MAIL after AUTH is accepted; a wrong password gets
    535 5.7.8 after >= 1 s (2 s for the next one), and the right one still
    works in that session;
  - at max_failures: 421 4.7.0, and the address is refused at connect on
    both ports while another address is served;
  - commands sent while a 535 is delayed are answered after it (they do
    not cancel it); a client that floods meanwhile is held back (the
    daemon stops reading), and the session ends in 421;
  - users reload: `user add bob`, SIGHUP, bob logs in (and $5$/$6$ lines
    from openssl passwd); `user del bob`, SIGHUP, 535; a malformed file or
    one with only comments: the first keeps the running users (the log
    says reload failed), the second empties them; alice afterwards;
  - hostile TLS on the submissions port: garbage, an HTTP request, a 1 MB
    ClientHello and 1 MB of junk get an alert (or nothing) and a close; a
    client stalled mid-handshake does not hold anyone up and is closed at
    idle_timeout; a normal submission works right after;
  - [api] tls = yes: curl --cacert https:// works, http:// and an
    unverified curl do not; `ringpost stats` and `ringpost send` work over
    HTTPS; a server with another certificate on the API port is refused
    by the CLI before it sends its key;
  - config errors: [listen] submissions or [api] tls without [tls], a key
    that does not match the certificate, a missing users file, a legacy
    hash: serve and check-config exit 78 naming the key or file;
  - no password or credential blob in any log; both daemons stop cleanly
    (no sanitizer report).
"""

import base64
import json
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

from harness import (CA, EX_CONFIG, SLOW, Cases, SMTPConn, TestEnv, TestFailure, ThreadedListener,
                     api_status, check, config_text, curl, dot_stuff, free_port, log, queued_id,
                     raise_failures, ringpost_bin, ringpost_cli, run_cases, run_test,
                     self_signed, stop_clean, wait_for)

HOST = "mta.test.example"  # config_text's [server] hostname: the certificate's name
ALICE, ALICE_PW = "alice", "alice's pass phrase"
BOB_PW = "bob pw 2"
SENDER, RCPT = "sender@origin.test", "user@dest.test"
IDLE_EDGE = 2  # the edge daemon's idle_timeout, seconds

cases = Cases()


# ---- helpers ---------------------------------------------------------------

def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain_ir(user, pw, authz=""):
    return b64(f"{authz}\0{user}\0{pw}")


def msg(tid, subject=None):
    return (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: {subject or 'tls ' + tid}\r\n"
            f"X-Test-Id: {tid}\r\n\r\nbody of {tid}\r\n").encode()


def run(argv, input=None, timeout=30, cwd=None):
    """A tool to its end (bounded): the CompletedProcess, output as text."""
    try:
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout * SLOW,
                              cwd=cwd)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{' '.join(map(str, argv))[:200]} did not finish")


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def wait_msg(x, tid, timeout=30, header="X-Test-Id"):
    """The message whose header (X-Test-Id) is tid, once the receiver has it."""
    def find():
        for m in x.smtpd.messages():
            if m.header(header) == tid:
                return m
        return None
    return wait_for(find, timeout, f"message {tid!r} at the receiver", interval=0.1)


def our_received(m):
    """ringpost's Received: field of a received message, unfolded."""
    head, _ = m.split()
    for f in re.findall(rb"(?im)^Received:[ \t]*(.*(?:\n[ \t].*)*)", head):
        v = re.sub(r"\s+", " ", text(f))
        if "(ringpost)" in v:
            return v
    raise TestFailure(f"no Received: by ringpost in {head[:400]!r}")


def check_esmtpsa(m, what):
    r = our_received(m)
    check(" with ESMTPSA " in r, f"{what}: Received: does not say ESMTPSA: {r}")
    check(re.search(r"\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)", r),
          f"{what}: Received: does not say the TLS version and cipher: {r}")
    return r


def check_submitter(x, mid, want, what):
    st = api_status(x.d, mid)
    check(st.get("submitter") == want,
          f"{what}: GET /v1/messages/{mid} submitter {st.get('submitter')!r}, want {want!r}")


def starttls(x, port, source=None):
    """A session after EHLO, STARTTLS, the handshake (verified) and EHLO
    again: (conn, capabilities after TLS)."""
    c = SMTPConn(port, source=source)
    c.expect(220, "banner")
    caps = c.ehlo()
    check("STARTTLS" in caps, f"EHLO before TLS does not offer STARTTLS: {caps}")
    c.cmd("STARTTLS", 220)
    c.start_tls(x.ctx, HOST)
    return c, c.ehlo()


def implicit(x, port, source=None):
    """A session on the submissions port, after the banner and EHLO."""
    c = SMTPConn(port, source=source)
    c.start_tls(x.ctx, HOST)
    c.expect(220, "banner through TLS")
    return c, c.ehlo()


def send_on(c, tid, rcpt=RCPT):
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{rcpt}>", 250)
    c.cmd("DATA", 354)
    c.send(dot_stuff(msg(tid)))
    return queued_id(c.expect(250, f"end of data of {tid}"))


def timed(c, line):
    """Send line; (seconds until the reply, code, lines)."""
    t0 = time.monotonic()
    c.send(line + "\r\n")
    code, lines = c.read_reply()
    return time.monotonic() - t0, code, lines


def silent(c, wait=0.3):
    """True when the server sends nothing (and does not close) within wait
    seconds; the socket's timeout is put back."""
    c.sock.settimeout(wait * SLOW)
    try:
        c.buf += c.sock.recv(4096) or b"(EOF)"
        return False
    except socket.timeout:
        return True
    finally:
        c.sock.settimeout(30 * SLOW)


def reloads(d, what):
    return d.log().count(what)


def sighup(d, expect="configuration reloaded"):
    """SIGHUP d and wait for the log line that says how it went. main logs
    "configuration reloaded" once it has posted the new generation to every
    shard, which take it up in their next loop turn: give them that turn."""
    n = reloads(d, expect)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads(d, expect) > n, 10, f"'{expect}' after SIGHUP")
    time.sleep(0.2 * SLOW)


def user_cli(x, argv, password=None):
    """ringpost user -c CONF ARGV with the password on stdin."""
    return run([ringpost_bin(), "user", "-c", x.d.config_path] + argv,
               input=None if password is None else (password + "\n").encode(), cwd=x.env.dir)


def auth_reply(x, user, pw, source):
    """One AUTH PLAIN after STARTTLS from source: the reply's lines (a
    refusal costs one failure, where smtplib would try PLAIN and LOGIN)."""
    c, _ = starttls(x, x.d.port, source=source)
    with c:
        return c.cmd(f"AUTH PLAIN {plain_ir(user, pw)}", (235, 535), f"AUTH PLAIN as {user}")


def smtplib_login(x, user, pw, source=("127.0.0.1", 0)):
    """STARTTLS + login with smtplib; the reply code to AUTH (235 or 535)."""
    with smtplib.SMTP("127.0.0.1", x.d.port, local_hostname="client.test",
                      timeout=30 * SLOW, source_address=source) as s:
        s.starttls(context=x.ctx)
        try:
            code, _ = s.login(user, pw)
        except smtplib.SMTPAuthenticationError as e:
            code = e.smtp_code
        s.quit()
        return code


def expect_eof(sock, timeout, what):
    """Read until the peer closes (within timeout seconds, times SLOW):
    what it sent before. A reset counts as a close."""
    sock.settimeout(timeout * SLOW)
    got = b""
    t0 = time.monotonic()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
            if len(got) > 1 << 20:
                raise TestFailure(f"{what}: over 1 MB of answer")
    except (ConnectionResetError, BrokenPipeError):
        return got
    except socket.timeout:
        raise TestFailure(f"{what}: still open after {time.monotonic() - t0:.1f}s")


def check_alert_only(got, what):
    """The server's answer to a broken handshake: nothing, or TLS records
    (an alert, 0x15), never clear text."""
    check(not got or got[0] in (0x15, 0x16), f"{what}: the server answered {got[:60]!r}")


def client_hello(ctx):
    """The bytes of a real ClientHello (from an in-memory handshake)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=HOST)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class Ctx:
    def __init__(self, env, ca, d, e, smtpd, ctx, users):
        self.env, self.ca, self.d, self.e, self.smtpd = env, ca, d, e, smtpd
        self.ctx = ctx  # verifying client context: our CA, hostname checked
        self.users = users  # the users file
        self.subs = None  # the tls daemon's submissions port
        self.edge_subs = None


# ---- TLS and what it offers ---------------------------------------------------

@cases.add
def s_client_starttls(x):
    argv = ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{x.d.port}",
            "-verify_return_error", "-CAfile", str(x.ca.cert), "-servername", HOST, "-ign_eof"]
    r = run(argv + ["-verify_hostname", HOST], input=b"EHLO client.test\r\nQUIT\r\n")
    out = text(r.stdout)
    check(r.returncode == 0, f"s_client exit {r.returncode}: {text(r.stderr)[-400:]}")
    check("Verify return code: 0 (ok)" in out, f"the chain did not verify: {out[-800:]}")
    check(f"Verified peername: {HOST}" in out, "s_client did not check the name")
    # After the handshake: our EHLO's reply (s_client first echoes the
    # last line of its own EHLO before TLS).
    after = out.split("Verify return code: 0 (ok)", 1)[1].splitlines()
    i = next((k for k, l in enumerate(after) if l.startswith(f"250-{HOST}")), None)
    check(i is not None, f"no EHLO reply after TLS: {after[:20]}")
    ehlo = []
    for l in after[i:]:
        ehlo.append(l)
        if l.startswith("250 "):
            break
    check("250-AUTH PLAIN LOGIN" in ehlo, f"EHLO after TLS does not offer AUTH: {ehlo}")
    check(not any("STARTTLS" in l for l in ehlo), f"EHLO after TLS offers STARTTLS: {ehlo}")
    check("221 2.0.0 Bye" in out, "no 221 to QUIT through TLS")
    # The same with a name the certificate does not have: refused.
    r = run(argv + ["-verify_hostname", "wrong.example"], input=b"QUIT\r\n")
    check(r.returncode != 0 and "hostname mismatch" in text(r.stdout + r.stderr),
          f"s_client accepted the certificate for wrong.example (exit {r.returncode})")
    # Before TLS: STARTTLS offered, AUTH not.
    with SMTPConn(x.d.port) as c:
        c.expect(220)
        caps = c.ehlo()
        check("STARTTLS" in caps and not any(k.startswith("AUTH") for k in caps),
              f"EHLO in clear text: {caps}")


def swaks(x, mech, tid):
    r = run(["swaks", "--server", "127.0.0.1", "--port", str(x.d.port), "--ehlo", "client.test",
             "--tls", "--tls-verify", "--tls-ca-path", str(x.ca.cert),
             "--auth", mech, "--auth-user", ALICE, "--auth-password", ALICE_PW,
             "--from", SENDER, "--to", RCPT, "--header", f"X-Test-Id: {tid}",
             "--header", f"Subject: swaks {mech}", "--body", f"swaks {mech} body",
             "--timeout", str(int(30 * SLOW))], timeout=60)
    out = text(r.stdout + r.stderr)
    check(r.returncode == 0, f"swaks --auth {mech}: exit {r.returncode}: {out[-1200:]}")
    check("TLS started" in out, f"swaks --auth {mech} did not start TLS: {out[-800:]}")
    check(re.search(r"<~ +235 ", out), f"swaks --auth {mech}: no 235 through TLS: {out[-800:]}")
    m = re.search(r"<~ +250 2\.0\.0 Ok: queued as (\w+)", out)
    check(m, f"swaks --auth {mech}: not queued: {out[-800:]}")
    check_esmtpsa(wait_msg(x, tid), f"swaks --auth {mech}")
    check_submitter(x, m.group(1), ALICE, f"swaks --auth {mech}")


@cases.add
def swaks_plain(x):
    swaks(x, "PLAIN", "swaks-plain")


@cases.add
def swaks_login(x):
    swaks(x, "LOGIN", "swaks-login")


@cases.add
def curl_smtp(x):
    r = curl(["--ssl-reqd", "--cacert", str(x.ca.cert), "--user", f"{ALICE}:{ALICE_PW}",
              "--mail-from", SENDER, "--mail-rcpt", RCPT, "--upload-file", "-",
              f"smtp://127.0.0.1:{x.d.port}/client.test"], input=msg("curl"))
    check(r.returncode == 0, f"curl smtp: exit {r.returncode}: {text(r.stderr)[-400:]}")
    check_esmtpsa(wait_msg(x, "curl"), "curl")
    # Without our CA curl must refuse the certificate (so the above verified).
    r = curl(["--ssl-reqd", "--user", f"{ALICE}:{ALICE_PW}", "--mail-from", SENDER,
              "--mail-rcpt", RCPT, "--upload-file", "-",
              f"smtp://127.0.0.1:{x.d.port}/client.test"], input=msg("curl-unverified"))
    check(r.returncode == 60, f"curl without our CA: exit {r.returncode}, expected 60")


@cases.add
def smtplib_starttls(x):
    with smtplib.SMTP("127.0.0.1", x.d.port, local_hostname="client.test",
                      timeout=30 * SLOW) as s:
        s.ehlo()
        check(s.has_extn("starttls") and not s.has_extn("auth"),
              f"before TLS: {sorted(s.esmtp_features)}")
        s.starttls(context=x.ctx)
        s.ehlo()
        check(s.has_extn("auth") and not s.has_extn("starttls"),
              f"after TLS: {sorted(s.esmtp_features)}")
        check(s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"],
              f"AUTH mechanisms: {s.esmtp_features['auth']!r}")
        code, _ = s.login(ALICE, ALICE_PW)
        check(code == 235, f"login: {code}")
        s.mail(SENDER)
        s.rcpt(RCPT)
        code, resp = s.data(msg("smtplib-starttls"))
        mid = queued_id([f"{code} {text(resp)}"])
        s.quit()
    check_esmtpsa(wait_msg(x, "smtplib-starttls"), "smtplib starttls")
    check_submitter(x, mid, ALICE, "smtplib starttls")


@cases.add
def smtplib_implicit_tls(x):
    with smtplib.SMTP_SSL("127.0.0.1", x.subs, local_hostname="client.test", context=x.ctx,
                          timeout=30 * SLOW) as s:
        s.ehlo()
        check(s.has_extn("auth") and not s.has_extn("starttls"),
              f"submissions EHLO: {sorted(s.esmtp_features)}")
        s.user, s.password = ALICE, ALICE_PW
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        check(code == 235, f"AUTH LOGIN: {code}")
        s.mail(SENDER)
        s.rcpt(RCPT)
        code, resp = s.data(msg("smtplib-implicit"))
        mid = queued_id([f"{code} {text(resp)}"])
    check_esmtpsa(wait_msg(x, "smtplib-implicit"), "SMTP_SSL")
    check_submitter(x, mid, ALICE, "SMTP_SSL")
    # A client that trusts only the system store refuses our certificate.
    try:
        smtplib.SMTP_SSL("127.0.0.1", x.subs, context=ssl.create_default_context(),
                         timeout=10 * SLOW).quit()
        raise TestFailure("a client without our CA accepted the certificate")
    except ssl.SSLCertVerificationError:
        pass


# ---- AUTH -------------------------------------------------------------------

@cases.add
def auth_before_tls(x):
    with SMTPConn(x.d.port) as c:
        c.expect(220)
        c.ehlo()
        for line in (f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", "AUTH LOGIN", "AUTH PLAIN"):
            lines = c.cmd(line, 538, f"{line.split()[1]} before TLS")
            check(lines[0].startswith("538 5.7.11 "), f"reply {lines}")
        lines = c.cmd(f"MAIL FROM:<{SENDER}>", 530, "MAIL from outside networks without AUTH")
        check(lines[0].startswith("530 5.7.0 "), f"reply {lines}")
        c.cmd("QUIT", 221)


@cases.add
def mail_needs_auth(x):
    c, caps = starttls(x, x.d.port)
    with c:
        check("AUTH PLAIN LOGIN" in caps, f"caps {caps}")
        lines = c.cmd(f"MAIL FROM:<{SENDER}>", 530, "MAIL under TLS but without AUTH")
        check(lines[0].startswith("530 5.7.0 "), f"reply {lines}")
        c.cmd(f"RCPT TO:<{RCPT}>", 503, "RCPT after the refused MAIL")
        lines = c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 235)
        check(lines[0].startswith("235 2.7.0 "), f"reply {lines}")
        caps = c.ehlo()
        check(not any(k.startswith("AUTH") for k in caps), f"AUTH offered once done: {caps}")
        mid = send_on(c, "after-auth")
        c.cmd("QUIT", 221)
    check_esmtpsa(wait_msg(x, "after-auth"), "MAIL after AUTH")
    check_submitter(x, mid, ALICE, "MAIL after AUTH")


@cases.add
def auth_dialogues(x):
    c, _ = starttls(x, x.d.port)
    with c:
        # PLAIN without an initial response: an empty 334, then the response.
        lines = c.cmd("AUTH PLAIN", 334)
        check(lines == ["334 "], f"PLAIN challenge {lines}")
        c.cmd(plain_ir(ALICE, ALICE_PW), 235, "the PLAIN response")
        c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 503, "AUTH when authenticated")
    c, _ = starttls(x, x.d.port)
    with c:
        check(c.cmd("AUTH LOGIN", 334) == ["334 VXNlcm5hbWU6"], "Username: challenge")
        check(c.cmd(b64(ALICE), 334) == ["334 UGFzc3dvcmQ6"], "Password: challenge")
        c.cmd(b64(ALICE_PW), 235, "the LOGIN password")
    c, _ = starttls(x, x.d.port)
    with c:
        # LOGIN with the user name as initial response (RFC 4954 allows it).
        check(c.cmd(f"AUTH LOGIN {b64(ALICE)}", 334) == ["334 UGFzc3dvcmQ6"], "Password:")
        c.cmd(b64(ALICE_PW), 235)
    c, _ = starttls(x, x.d.port)
    with c:
        c.cmd("AUTH PLAIN", 334)
        lines = c.cmd("*", 501, "an aborted PLAIN")
        check(lines[0].startswith("501 5.7.0 "), f"reply {lines}")
        c.cmd("AUTH LOGIN", 334)
        c.cmd(b64(ALICE), 334)
        c.cmd("*", 501, "an aborted LOGIN")
        c.cmd("AUTH PLAIN !!!not-base64!!!", 501, "undecodable PLAIN")
        c.cmd("AUTH PLAIN " + b64("no nul bytes at all"), 501, "PLAIN without its NULs")
        c.cmd("AUTH CRAM-MD5", 504, "an unknown mechanism")
        c.cmd("AUTH", 501, "AUTH without a mechanism")
        c.cmd("NOOP", 250, "commands work after the aborted dialogues")
        c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 235, "then a login")
    c, _ = starttls(x, x.d.port, source="127.0.0.7")
    with c:
        # Acting for another identity is not granted: a failure.
        lines = c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW, authz='bob')}", 535,
                      "authzid bob for authcid alice")
        check(lines[0].startswith("535 5.7.8 "), f"reply {lines}")
        c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW, authz=ALICE)}", 235,
              "authzid = authcid is fine")
    # A NUL in the name or the password makes other credentials (crypt(3)
    # would stop at it): PLAIN's fourth field, LOGIN's password or name.
    nul = [("127.0.0.11", [f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW + chr(0) + 'more')}"]),
           ("127.0.0.12", ["AUTH LOGIN", b64(ALICE), b64(ALICE_PW + "\0more")]),
           ("127.0.0.13", ["AUTH LOGIN", b64(ALICE + "\0more"), b64(ALICE_PW)])]
    for source, dialogue in nul:
        c, _ = starttls(x, x.d.port, source=source)
        with c:
            for line in dialogue[:-1]:
                c.cmd(line, 334)
            c.cmd(dialogue[-1], (501, 535), f"{dialogue[0]}: credentials with a NUL in them")
            c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 235, "then the real ones")


@cases.add
def bad_password(x):
    c, _ = starttls(x, x.d.port, source="127.0.0.2")
    with c:
        took, code, lines = timed(c, f"AUTH PLAIN {plain_ir(ALICE, 'wrong')}")
        check(lines[0].startswith("535 5.7.8 "), f"a wrong password: {lines}")
        check(took >= 0.9, f"the first 535 came after {took:.2f}s; 1 s expected")
        c.cmd("AUTH LOGIN", 334)
        c.cmd(b64(ALICE), 334)
        took, code, lines = timed(c, b64("also wrong"))
        check(lines[0].startswith("535 5.7.8 "), f"a wrong LOGIN password: {lines}")
        check(took >= 1.9, f"the second 535 came after {took:.2f}s; 2 s expected")
        took, code, lines = timed(c, f"AUTH PLAIN {plain_ir('nobody', ALICE_PW)}")
        check(lines[0].startswith("535 5.7.8 "), f"an unknown user: {lines}")
        check(took >= 2.9, f"the third 535 came after {took:.2f}s; 3 s expected")
        c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 235, "the right password after three")
        send_on(c, "after-bad-password")
    wait_msg(x, "after-bad-password")


# ---- STARTTLS injection ---------------------------------------------------------

@cases.add
def starttls_injection(x):
    port = x.e.port  # loopback may relay here: an injected MAIL would succeed
    with SMTPConn(port) as c:
        c.expect(220)
        c.ehlo()
        c.send(f"STARTTLS\r\nMAIL FROM:<{SENDER}>\r\n")
        c.expect(220, "STARTTLS")
        check(silent(c), f"clear text after the 220: {c.buf!r}")
        c.start_tls(x.ctx, HOST)
        # The first reply through TLS must be the one to this EHLO: a reply
        # to the injected MAIL would come first.
        lines = c.cmd("EHLO client.test", 250, "EHLO after TLS (a 503/250 here was the "
                                               "injected MAIL)")
        check(lines[0] == f"250-{HOST}", f"EHLO reply {lines}")
        c.cmd(f"RCPT TO:<{RCPT}>", 503, "RCPT: the injected MAIL must not have run")
        c.cmd(f"MAIL FROM:<{SENDER}>", 250, "MAIL after TLS (503 nested = the injection ran)")
        c.cmd("RSET", 250)
    with SMTPConn(port) as c:
        # An injected EHLO and MAIL: the session starts over at the greeting.
        c.expect(220)
        c.ehlo()
        c.send(f"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<{SENDER}>\r\n")
        c.expect(220, "STARTTLS")
        c.start_tls(x.ctx, HOST)
        lines = c.cmd(f"RCPT TO:<{RCPT}>", 503, "RCPT right after TLS: neither the injected "
                                                 "EHLO nor MAIL may have run")
        c.cmd(f"MAIL FROM:<{SENDER}>", 503, "MAIL before EHLO after TLS")
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        c.cmd("QUIT", 221)
    with SMTPConn(port) as c:
        # Clear text sent after the 220: it is the first bytes of the TLS
        # stream as far as the server knows, and the handshake fails.
        c.expect(220)
        c.ehlo()
        c.cmd("STARTTLS", 220)
        c.send(f"MAIL FROM:<{SENDER}>\r\n")
        try:
            c.start_tls(x.ctx, HOST)
            c.send("NOOP\r\n")
            got = c.sock.recv(4096)
            raise TestFailure(f"a handshake after clear text succeeded (got {got!r})")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, EOFError):
            pass


# ---- the failure limit ------------------------------------------------------------

@cases.add
def too_many_failures(x):
    bad = "127.0.0.3"
    c, _ = implicit(x, x.edge_subs, source=bad)
    with c:
        for n in (1, 2):
            took, code, lines = timed(c, f"AUTH PLAIN {plain_ir(ALICE, f'wrong {n}')}")
            check(lines[0].startswith("535 5.7.8 "), f"failure {n}: {lines}")
        took, code, lines = timed(c, f"AUTH PLAIN {plain_ir(ALICE, 'wrong 3')}")
        check(lines[0].startswith("421 4.7.0 "), f"failure 3 of max_failures 3: {lines}")
        check(took < 1.0 * SLOW, f"the 421 took {took:.2f}s: it is not delayed")
        check(c.at_eof(), "the connection stays open after the 421")
    # The address is refused at connect: a 421 banner in clear text ...
    with SMTPConn(x.e.port, source=bad) as c:
        lines = c.expect(421, "banner to a blocked address")
        check(lines[0].startswith("421 4.7.0 "), f"banner {lines}")
        check(c.at_eof(), "a blocked address's connection stays open")
    # ... and no TLS at all on the submissions port.
    s = socket.create_connection(("127.0.0.1", x.edge_subs), timeout=10 * SLOW,
                                 source_address=(bad, 0))
    try:
        x.ctx.wrap_socket(s, server_hostname=HOST).close()
        raise TestFailure("a blocked address completed a TLS handshake on submissions")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError):
        s.close()
    # Another address is served as before, right password and all.
    c, _ = implicit(x, x.edge_subs, source="127.0.0.1")
    with c:
        c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 235, "another address")
    log_text = x.e.log()
    check("too many authentication failures" in log_text, "the block is not logged")
    check(re.search(r"\[127\.0\.0\.3\]:\d+: refused for \d+ more seconds", log_text),
          "the refusal at connect is not logged")


@cases.add
def input_during_failure_delay(x):
    """Commands that arrive while a 535 is delayed wait for it: they must
    not cancel the delayed reply (the session would hang with no timeout,
    and hold up the daemon's stop)."""
    c, _ = starttls(x, x.d.port, source="127.0.0.10")
    with c:
        t0 = time.monotonic()
        c.send(f"AUTH PLAIN {plain_ir(ALICE, 'wrong')}\r\n")
        # The check answers within milliseconds; the 1 s delay then runs,
        # and these arrive during it.
        for at in (0.3, 0.55, 0.8):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            c.send("NOOP\r\n")
        c.sock.settimeout(5 * SLOW)
        try:
            lines = c.expect(535, "the delayed 535 with commands pending")
        except socket.timeout:
            raise TestFailure(f"no 535 within {5 * SLOW:.0f}s: the commands sent during the "
                              f"failure delay cancelled it")
        took = time.monotonic() - t0
        check(lines[0].startswith("535 5.7.8 ") and took >= 0.9,
              f"535 after {took:.2f}s: {lines}")
        for k in range(3):
            c.expect(250, f"NOOP {k + 1} sent during the delay")
        c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 235, "the right password afterwards")


@cases.add
def flood_while_auth_waits(x):
    """A client that keeps sending while its 535 is delayed must not make
    the daemon buffer without bound: input is paused as during a commit."""
    c, _ = implicit(x, x.edge_subs, source="127.0.0.6")
    with c:
        c.send(f"AUTH PLAIN {plain_ir(ALICE, 'wrong')}\r\n")
        chunk = b"X" * 65536
        sent, t0 = 0, time.monotonic()
        c.sock.settimeout(0.3)
        try:
            while time.monotonic() - t0 < 0.8 and sent < (256 << 20):
                c.sock.sendall(chunk)
                sent += len(chunk)
        except (socket.timeout, ssl.SSLError, BlockingIOError):
            pass  # held back: what we wanted
        took = time.monotonic() - t0
        log(f"  flood: {sent >> 20} MB taken in {took:.2f}s while the 535 was pending")
        check(sent < (48 << 20), f"the daemon took {sent >> 20} MB of input in {took:.2f}s "
                                 f"while an AUTH answer was pending (no back-pressure)")
        c.sock.settimeout(30 * SLOW)
        lines = c.expect(535, "the delayed 535 after the flood")
        check(lines[0].startswith("535 5.7.8 "), f"reply {lines}")
        # Then the junk is read: one over-long line after another, 421.
        codes = []
        try:
            while True:
                code, _ = c.read_reply()
                codes.append(code)
                if code == 421:
                    break
        except (EOFError, OSError, ssl.SSLError):
            pass
        check(codes and codes[0] == 500 and codes[-1] == 421,
              f"the flood after the 535: replies {codes[:12]}")


# ---- the users file ---------------------------------------------------------------------

@cases.add
def users_reload(x):
    before = x.users.read_text()
    try:
        users_edits(x, before)
    finally:
        if x.users.read_text() != before:  # the later cases need alice
            x.users.write_text(before)
            sighup(x.d)


def users_edits(x, before):
    r = user_cli(x, ["add", "bob"], BOB_PW)
    check(r.returncode == 0, f"user add bob: exit {r.returncode}: {text(r.stderr)}")
    check(re.search(r"(?m)^bob:\$y\$", x.users.read_text()), "bob's line is not $y$")
    # Lines in the other documented formats, straight from openssl passwd.
    for name, flag in (("carol", "-5"), ("dave", "-6")):
        h = run(["openssl", "passwd", flag, f"{name} pw"]).stdout.decode().strip()
        with open(x.users, "a") as f:
            f.write(f"{name}:{h}\n")
    lines = auth_reply(x, "bob", BOB_PW, "127.0.0.9")
    check(lines[0].startswith("535 5.7.8 "), f"bob before the SIGHUP: {lines}")
    sighup(x.d)
    for user, pw in (("bob", BOB_PW), ("carol", "carol pw"), ("dave", "dave pw"),
                     (ALICE, ALICE_PW)):
        check(smtplib_login(x, user, pw) == 235, f"{user} cannot log in after the reload")
    r = user_cli(x, ["del", "bob"])
    check(r.returncode == 0, f"user del bob: exit {r.returncode}: {text(r.stderr)}")
    check("bob:" not in x.users.read_text(), "bob is still in the file")
    r = user_cli(x, ["del", "nosuch"])
    check(r.returncode == 67, f"user del of nobody: exit {r.returncode}, expected 67")
    sighup(x.d)
    lines = auth_reply(x, "bob", BOB_PW, "127.0.0.4")
    check(lines[0].startswith("535 5.7.8 "), f"bob after user del: {lines}")
    # A malformed file: the reload fails as a whole, the running users stay.
    good = x.users.read_text()
    x.users.write_text(good + "this line has no colon\n")
    bad_line = len(good.splitlines()) + 1
    sighup(x.d, "reload failed")
    line = [l for l in x.d.log().splitlines() if "reload failed" in l][-1]
    check(f"{x.users}:{bad_line}:" in line, f"the failure does not name users:{bad_line}: {line}")
    check(smtplib_login(x, ALICE, ALICE_PW) == 235, "alice after a failed reload")
    check(smtplib_login(x, "carol", "carol pw") == 235, "carol after a failed reload")
    # Only comments: a table of nobody (AUTH still offered, every login fails).
    x.users.write_text("# nobody here\n\n# for now\n")
    sighup(x.d)
    lines = auth_reply(x, ALICE, ALICE_PW, "127.0.0.8")
    check(lines[0].startswith("535 5.7.8 "), f"alice with an empty users file: {lines}")
    x.users.write_text(before)
    sighup(x.d)
    check(smtplib_login(x, ALICE, ALICE_PW) == 235, "alice after the file came back")


# ---- hostile TLS --------------------------------------------------------------------------

def raw(port, source=None):
    return socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW,
                                    source_address=(source, 0) if source else None)


def normal_submission(x, tid):
    c, _ = implicit(x, x.subs)
    with c:
        c.cmd(f"AUTH PLAIN {plain_ir(ALICE, ALICE_PW)}", 235)
        send_on(c, tid)
        c.cmd("QUIT", 221)
    wait_msg(x, tid)


@cases.add
def hostile_handshakes(x):
    junk = [
        ("a short garbage record", b"\x16\x03\x01\x00\x10" + os.urandom(16)),
        ("random bytes", bytes((k * 151 + 7) % 256 for k in range(3000))),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: mta.test.example\r\n\r\n"),
        ("SMTP in clear text", b"EHLO client.test\r\nQUIT\r\n"),
    ]
    for what, data in junk:
        with raw(x.subs) as s:
            s.sendall(data)
            check_alert_only(expect_eof(s, 10, what), what)
    # A ClientHello that says it is 1 MB long, sent whole in 16 KB records.
    hello = b"\x01" + (1 << 20).to_bytes(3, "big") + b"\x03\x03" + os.urandom(1 << 20)
    recs = b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p
                    for p in (hello[i:i + 16384] for i in range(0, len(hello), 16384)))
    # And 1 MB of junk behind a valid ClientHello.
    ch = client_hello(x.ctx)
    for what, data in (("a 1 MB ClientHello", recs), ("a ClientHello and 1 MB of junk",
                                                      ch + os.urandom(1 << 20))):
        with raw(x.subs) as s:
            box = {}

            def push():
                try:
                    s.sendall(data)
                except OSError as e:
                    box["err"] = e  # the server closed while we sent: fine
            t = threading.Thread(target=push, daemon=True)
            t.start()
            check_alert_only(expect_eof(s, 15, what), what)
            t.join(15 * SLOW)
    # A client that stops in the middle of its ClientHello holds nobody up.
    stalled = raw(x.subs)
    stalled.sendall(ch[:len(ch) // 2])
    try:
        normal_submission(x, "during-stalled-handshake")
    finally:
        stalled.close()
    normal_submission(x, "after-hostile-handshakes")
    wait_for(lambda: "TLS handshake" in x.d.log(), 10, "the failed handshakes in the log")


@cases.add
def stalled_handshake_times_out(x):
    s = raw(x.edge_subs)
    with s:
        s.sendall(client_hello(x.ctx)[:40])
        t0 = time.monotonic()
        got = expect_eof(s, IDLE_EDGE + 10, "a handshake stalled past idle_timeout")
        took = time.monotonic() - t0
        check(took >= IDLE_EDGE - 0.5, f"closed after {took:.1f}s, idle_timeout is {IDLE_EDGE}s")
        check(not got, f"clear text to a client in its handshake: {got[:80]!r}")
    # Likewise after STARTTLS's 220, on the submission port.
    with SMTPConn(x.e.port) as c:
        c.expect(220)
        c.ehlo()
        c.cmd("STARTTLS", 220)
        c.send(client_hello(x.ctx)[:40])
        t0 = time.monotonic()
        check(c.at_eof(IDLE_EDGE + 10), "a STARTTLS handshake stalled past idle_timeout")
        check(time.monotonic() - t0 >= IDLE_EDGE - 0.5, "closed before idle_timeout")
        check(not c.buf, f"clear text after STARTTLS: {c.buf[:80]!r}")


# ---- HTTPS for the API and the CLI ------------------------------------------------------

class Impostor(ThreadedListener):
    """A TLS server with another certificate: records what a client sends."""

    def __init__(self, cert, key):
        super().__init__(8)
        self.sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.sctx.load_cert_chain(str(cert), str(key))
        self.handshakes = 0
        self.received = b""
        self.start()

    def on_accept(self, c):
        try:
            c.settimeout(3)
            t = self.sctx.wrap_socket(c, server_side=True)
            self.handshakes += 1
            while True:
                data = t.recv(4096)
                if not data:
                    break
                self.received += data
        except (OSError, ssl.SSLError):
            pass
        finally:
            c.close()


@cases.add
def https_api(x):
    port, key = x.d.api_port, "test-key-one"
    url = f"https://127.0.0.1:{port}/v1/stats"
    r = curl(["--cacert", str(x.ca.cert), "-H", f"Authorization: Bearer {key}", url])
    check(r.returncode == 0, f"curl {url}: exit {r.returncode}: {text(r.stderr)}")
    check("queued" in json.loads(r.stdout), f"/v1/stats: {r.stdout[:200]!r}")
    r = curl(["-H", f"Authorization: Bearer {key}", f"http://127.0.0.1:{port}/v1/stats"],
             timeout=10)
    check(r.returncode != 0 and b'"queued"' not in r.stdout,
          f"plain HTTP to the HTTPS API: exit {r.returncode}, {r.stdout[:100]!r}")
    r = curl(["-H", f"Authorization: Bearer {key}", url])
    check(r.returncode == 60, f"curl without our CA: exit {r.returncode}, expected 60")
    # The CLI over HTTPS (it pins [tls] cert).
    r = ringpost_cli(x.d, ["stats", "--json"])
    check(r.returncode == 0, f"ringpost stats: exit {r.returncode}: {text(r.stderr)}")
    check("queued" in json.loads(r.stdout), f"ringpost stats --json: {r.stdout[:200]!r}")
    r = ringpost_cli(x.d, ["send", "--from", SENDER, "--to", RCPT, "--subject", "cli over https",
                           "--text", "sent by ringpost send"])
    check(r.returncode == 0, f"ringpost send: exit {r.returncode}: {text(r.stderr)}")
    mid = text(r.stdout).strip().split()[-1]
    wait_msg(x, "cli over https", header="Subject")
    check_submitter(x, mid, None, "a message through the API")
    # Another certificate on the API port: the CLI refuses it, key unsent.
    cert, key_file = self_signed(x.env.dir / "impostor", HOST)
    imp = Impostor(cert, key_file)
    try:
        conf = x.env.dir / "impostor.conf"
        conf.write_text(re.sub(r"(?m)^api = 127\.0\.0\.1:\d+$", f"api = 127.0.0.1:{imp.port}",
                               open(x.d.config_path).read()))
        r = run([ringpost_bin(), "stats", "-c", str(conf)], cwd=x.env.dir)
        err = text(r.stderr)
        check(r.returncode == 69, f"ringpost stats against another certificate: exit "
                                  f"{r.returncode}: {err}")
        check("does not present the certificate" in err, f"stderr: {err}")
        check(imp.handshakes >= 1, "the CLI never reached the impostor")
        check(key.encode() not in imp.received, "the CLI sent its API key to the impostor")
    finally:
        imp.close()


# ---- config errors -------------------------------------------------------------------

@cases.add
def config_errors(x):
    other_cert, other_key = x.ca.issue("other.test", prefix="other")
    base = config_text(submission_port=free_port(), routes={"dest.test": "127.0.0.1:9"},
                       data_dir=str(x.env.dir / "never-created"))
    tls = f"[tls]\ncert = {x.d_cert}\nkey = {x.d_key}\n"
    bad = [
        ("submissions without [tls]", f"[listen]\nsubmissions = 127.0.0.1:{free_port()}\n",
         "submissions"),
        ("[api] tls without [tls]", "[api]\ntls = yes\n", "[api] tls"),
        ("a key that is not the certificate's", f"[tls]\ncert = {x.d_cert}\nkey = {other_key}\n",
         str(other_key)),
        ("a missing users file", tls + f"[auth]\nusers = {x.env.dir / 'no-such-users'}\n",
         str(x.env.dir / "no-such-users")),
    ]
    legacy = x.env.dir / "legacy-users"
    legacy.write_text("# md5crypt is not taken\nold:" +
                      run(["openssl", "passwd", "-1", "pw"]).stdout.decode().strip() + "\n")
    bad.append(("an MD5 hash", tls + f"[auth]\nusers = {legacy}\n", f"{legacy}:2:"))
    for what, extra, word in bad:
        path = x.env.write_config(base + extra, "bad.conf")
        for verb in ("serve", "check-config"):
            r = run([ringpost_bin(), verb, "-c", str(path)], cwd=x.env.dir, timeout=15)
            err = text(r.stderr).strip()
            check(r.returncode == EX_CONFIG, f"{what}: {verb} exit {r.returncode}, expected "
                                             f"{EX_CONFIG}: {err}")
            check(word in err, f"{what}: {verb} does not name {word!r}: {err}")
            check(len(err.splitlines()) == 1, f"{what}: {verb}: not one line: {err}")
    check(not (x.env.dir / "never-created").exists(), "a refused config created its spool")
    # And the good ones pass check-config (so the above were not refused for
    # something else).
    path = x.env.write_config(base + tls + f"[listen]\nsubmissions = 127.0.0.1:{free_port()}\n"
                              f"[auth]\nusers = {x.users}\n", "good.conf")
    r = run([ringpost_bin(), "check-config", "-c", str(path)], cwd=x.env.dir)
    check(r.returncode == 0, f"the corrected config: exit {r.returncode}: {text(r.stderr)}")


# ---- main ------------------------------------------------------------------------------------

def secrets_absent(ds):
    fails = []
    blobs = [ALICE_PW, BOB_PW, plain_ir(ALICE, ALICE_PW), b64(ALICE_PW), b64(BOB_PW)]
    for d in ds:
        t = d.log()
        for b in blobs:
            if b in t:
                fails.append(f"{d.log_path.name} holds a credential: {b!r}")
    return fails


def main():
    with TestEnv("tlssub") as env:
        ca = CA(env.dir / "ca")
        cert, key = ca.issue(HOST, names=["127.0.0.1"])
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        smtpd = env.smtpd()
        users = env.dir / "users"
        users.write_text("# ringpost users (made by ringpost user add)\n")
        subs, api_port, edge_subs = free_port(), free_port(), free_port()
        common = f"[tls]\ncert = {cert}\nkey = {key}\n"
        d = env.daemon(routes={}, name="tls", domain_defaults={"route": smtpd.addr},
                       submission={"networks": "10.9.9.9/32"}, api_port=api_port,
                       api={"tls": "yes"},
                       extra=f"[listen]\nsubmissions = 127.0.0.1:{subs}\n" + common +
                       f"[auth]\nusers = {users}\nmax_failures = 50\n")
        d.api_tls = ctx
        e = env.daemon(routes={}, name="edge", domain_defaults={"route": smtpd.addr},
                       submission={"idle_timeout": f"{IDLE_EDGE}s"},
                       extra=f"[listen]\nsubmissions = 127.0.0.1:{edge_subs}\n" + common +
                       f"[auth]\nusers = {users}\nmax_failures = 3\n")
        x = Ctx(env, ca, d, e, smtpd, ctx, users)
        x.subs, x.edge_subs = subs, edge_subs
        x.d_cert, x.d_key = cert, key
        r = user_cli(x, ["add", ALICE], ALICE_PW)
        check(r.returncode == 0, f"user add alice: exit {r.returncode}: {text(r.stderr)}")
        d.start()
        e.start()
        failures = run_cases(cases, x, [d, e])
        failures += secrets_absent([d, e])
        for dd in (d, e):
            stop_clean(dd, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
