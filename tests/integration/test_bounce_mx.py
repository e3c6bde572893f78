"""test_bounce_mx.py - the bounce MX ([listen] inbound), signed VERP return
paths and the suppression list, end to end with real clients: Python's
smtplib and swaks on the SMTP side, urllib and curl for the API, the
`ringpost suppress` CLI. One daemon with [queue] bounce_domain =
bounces.test and suppress = yes delivers to an smtpd receiver (rx.test)
that accepts everything; the "remote" then bounces asynchronously to the
envelope sender it was given, as a real MTA would. Each case talks to the
bounce MX from its own 127.0.0.x address (the MX refuses an address after
30 refused recipients a minute).

Cases:
  - the real flow: a message submitted through the API and one through SMTP
    submission (smtplib; two recipients) reach the receiver, each recipient
    in its own transaction with the envelope sender
    bounce-<message id>-<index>-<16 hex>@bounces.test and From: untouched;
    an RFC 3464 DSN (multipart/report, Status 5.1.1, Postfix's layout) from
    the null sender to the first one's VERP address (smtplib) is answered
    "250 2.0.0 Ok: received as mailbox message N" and the recipient is
    already `bounced` with the remote's reply plus "(delivered before: 250
    ...)"; a second DSN sent with swaks bounces the SMTP message's first
    recipient while its second stays delivered; both addresses are on the
    suppression list (GET /v1/suppressions?address=, `ringpost suppress
    list`); a new message to one of them and to a fresh address answers 202
    with state `suppressed` for the first only, GET /v1/messages/{id} agrees
    (never attempted, "5.7.0 suppressed: hard bounce: 550 5.1.1 ...") while
    the other is delivered; GET /v1/bounces lists the DSN under its UID and
    GET /v1/bounces/{uid} is the DSN byte for byte after a null Return-Path
    and our Received: trace; /v1/stats and /metrics count 2 reports (both
    matched) and 1 suppressed recipient;
  - other formats, each to its own recipient: Postfix's plain-text bounce,
    Exim's, qmail-send's (to the VERP address in upper case), a text bounce
    quoting "550 5.1.1", a DSN sent in two BDAT chunks -> bounced and
    suppressed, with the format the log names; an ARF complaint
    (multipart/report; report-type=feedback-report) sent to
    abuse@bounces.test whose returned message carries the VERP Return-Path,
    with and without Original-Rcpt-To (a redacted report) -> `complained`
    and suppressed; a "delayed" DSN (4.4.1) and an out-of-office reply that
    quotes "550 5.1.1" are stored and change nothing; 5.2.2 mailbox full ->
    bounced, not suppressed;
  - a synchronous 550 5.1.1 at delivery (ringpost-sink) suppresses too;
  - refused recipients: relay attempts and other addresses at the bounce
    domain -> 550 5.7.1 relay access denied; a VERP address with a forged
    MAC, or with another index under a real MAC -> 550 5.7.1 "not a valid
    bounce address" and a warning in the log, the recipient unchanged; DATA
    after only refused recipients -> 554;
  - probing: the 30th refused recipient within a minute from one address
    gets 421 4.7.0 and the connection closes, a new connection from there
    gets 421 at once, another address is still served;
  - malformed reports (missing boundary, truncated, 50 nested multiparts,
    8-bit garbage, base64 garbage, a header with no body, overlong fields,
    a DSN naming 200 other addresses) are stored with 250; a NUL byte -> 554
    5.6.0 and a 2 MB line -> 500 5.5.2, not stored, the session goes on;
    the mailbox grows by exactly the 250s; those for postmaster@ are
    unmatched (log matched=0), garbage to a VERP address is matched but
    changes nothing, the overlong DSN bounces with a bounded response, the
    one naming 200 other addresses bounces and suppresses our recipient
    only;
  - one DSN sent to two recipients' VERP addresses, naming only the first:
    the first bounces and is suppressed, the second stays delivered;
  - a report for a recipient whose record is gone ([queue] keep_done = 0,
    a second daemon) naming another address (victim@important.test) is
    stored and suppresses nobody: a report's own words never list an
    address;
  - a second daemon with [listen] inbound and no bounce_domain warns at
    start, refuses every recipient (550 5.7.1) and sends with the original
    envelope sender;
  - restart (SIGTERM, exit 0, start): the suppression list, the mailbox
    (UIDVALIDITY, UIDs, sizes) and recipient states persist; a VERP address
    issued before the restart still validates (the key is in the spool) and
    its DSN bounces the recipient; a forged one is still refused; the next
    UID continues; a report answered 250 and then kill -9 at once is still
    there after a start, with its bounce and suppression;
  - the suppression API and CLI: add (curl, 201 then 200; CLI add), get one,
    list paged with ?limit= and ?after= (every address once, in order,
    `next` only while more), CLI list; mail to listed addresses is
    `suppressed`; delete (curl, CLI; 404 / exit 66 the second time), then
    mail to them (also to an address that hard-bounced) is delivered again;
    bad input -> 400/422 JSON errors naming the field, CLI exit 65, nothing
    added.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import email
import email.policy
import json
import re
import shutil
import smtplib
import subprocess

from harness import (API_KEY, SLOW, SMTPConn, Cases, TestEnv, TestFailure, api_rcpt, api_status,
                     bounce_get, bounce_list, check, curl, dot_stuff, free_port, log, parse_kv,
                     port_accepts, raise_failures, ringpost_cli, run_cases, run_test, stop_clean,
                     wait_for, wait_rcpts)

BOUNCE_DOMAIN = "bounces.test"
HOSTNAME = "mta.test.example"  # config_text's [server] hostname
SENDER = "app@origin.test"
VERP_RE = re.compile(r"^bounce-([0-9a-f]{16})-(\d+)-([0-9a-f]{16})@bounces\.test$")
STORED_RE = re.compile(r"^2\.0\.0 Ok: received as mailbox message (\d+)$")
RELAY_DENIED = "5.7.1 Error: relay access denied"
NOT_VALID = "5.7.1 Error: not a valid bounce address"
EX_DATAERR, EX_NOINPUT = 65, 66

cases = Cases()


class Ctx:
    pass


# ---- helpers -----------------------------------------------------------------

def crlf(text):
    """A report as bytes on the wire: CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def api_send1(x, to, tag):
    """POST /v1/messages (one message, X-Test-Id TAG): (id, the 202's recipients)."""
    r = x.d.api("POST", "/v1/messages", {"from": SENDER, "to": list(to), "subject": f"bmx {tag}",
                                         "text": f"body of {tag}\n",
                                         "headers": {"X-Test-Id": tag}})
    check(r.status == 202, f"POST /v1/messages ({tag}): HTTP {r.status}: {r.body[:300]!r}")
    return r.json()["id"], r.json()["recipients"]


def received_for(x, addr, tag, timeout=10):
    """The receiver's copy of message TAG for addr (exactly one)."""
    def find():
        got = [m for m in x.rx.messages() if m.header("X-Test-Id") == tag and addr in m.rcpts]
        return got or None
    got = wait_for(find, timeout, f"{tag} for {addr} at the receiver")
    check(len(got) == 1, f"{tag}: {len(got)} copies for {addr} at the receiver")
    check(got[0].rcpts == [addr], f"{tag}: transaction for {got[0].rcpts}, not one recipient")
    return got[0]


def verp_of(x, addr, tag, mid=None, idx=None):
    """addr's envelope sender for message TAG: a VERP address that names
    the message id and recipient index when given."""
    m = received_for(x, addr, tag)
    v = VERP_RE.match(m.mailfrom)
    check(v, f"{tag} to {addr}: envelope sender {m.mailfrom!r} is not a VERP address")
    if mid is not None:
        check(v.group(1) == mid and int(v.group(2)) == idx,
              f"{tag} to {addr}: VERP {m.mailfrom} does not name {mid} #{idx}")
    return m.mailfrom


def returned_headers(x, addr, tag):
    """The header section of what the receiver got, as the final MTA would
    return it: Return-Path first, no blank line after (LF ends: see crlf)."""
    m = received_for(x, addr, tag)
    head, _ = m.split()
    return f"Return-Path: <{m.mailfrom}>\n" + head.decode("utf-8", "replace").rstrip("\n")


def report(x, rcpt, data, source, sender=""):
    """One report to the bounce MX with smtplib from source: (code, text)
    of the refused RCPT, or of the end of data."""
    with smtplib.SMTP("127.0.0.1", x.inbound, local_hostname="mx.rx.test", timeout=20 * SLOW,
                      source_address=(source, 0)) as s:
        code, _ = s.ehlo()
        check(code == 250, f"EHLO at the bounce MX: {code}")
        code, text = s.mail(sender)
        check(code == 250, f"MAIL FROM:<{sender}> at the bounce MX: {code} {text!r}")
        code, text = s.rcpt(rcpt)
        if code != 250:
            return code, text.decode()
        code, text = s.data(data)
        return code, text.decode()


def stored_uid(code, text, what):
    """The mailbox UID a 250 names."""
    m = STORED_RE.match(text) if code == 250 else None
    check(m, f"{what}: expected '250 2.0.0 Ok: received as mailbox message N', "
          f"got {code} {text!r}")
    return int(m.group(1))


def report_ok(x, rcpt, data, source, what, sender=""):
    code, text = report(x, rcpt, data, source, sender)
    return stored_uid(code, text, what)


def report_log(x, uid):
    """The fields of the log's 'bounce-mx accepted uid=UID ...' line."""
    def find():
        for line in x.d.log().splitlines():
            i = line.find(" bounce-mx accepted uid=")
            if i >= 0:
                f = parse_kv(line[i + 1:])
                if f.get("uid") == str(uid):
                    return f
        return None
    return wait_for(find, 5, f"the log line of mailbox message {uid}")


def check_report_log(x, uid, what, **want):
    f = report_log(x, uid)
    bad = {k: f.get(k) for k, v in want.items() if f.get(k) != str(v)}
    check(not bad, f"{what}: log says {bad}, expected {want}")
    return f


def suppression(x, addr):
    """GET /v1/suppressions?address=: the entry, or None on 404."""
    r = x.d.api("GET", f"/v1/suppressions?address={addr}")
    if r.status == 404:
        check(r.error()[0] == "not_found", f"?address={addr}: 404 {r.body[:200]!r}")
        return None
    check(r.status == 200, f"GET /v1/suppressions?address={addr}: HTTP {r.status} {r.body[:200]!r}")
    e = r.json()
    check(e.get("address") == addr, f"?address={addr}: answered for {e}")
    return e


def all_suppressions(x):
    r = x.d.api("GET", "/v1/suppressions?limit=1000")
    check(r.status == 200, f"GET /v1/suppressions: HTTP {r.status}")
    j = r.json()
    check(len(j["suppressions"]) == j["total"] and "next" not in j,
          f"GET /v1/suppressions?limit=1000: {j['total']} total, {len(j['suppressions'])} "
          f"listed, next {j.get('next')!r}")
    return j["suppressions"]


def stats(x):
    r = x.d.api("GET", "/v1/stats")
    check(r.status == 200, f"GET /v1/stats: HTTP {r.status}")
    return r.json()


def cli_suppressed(x):
    """`ringpost suppress list`: {address: (since, reason)}."""
    p = ringpost_cli(x.d, ["suppress", "list"])
    check(p.returncode == 0, f"ringpost suppress list: exit {p.returncode}: {p.stderr[-300:]!r}")
    out = {}
    for line in p.stdout.decode().splitlines():
        a, since, reason = line.split("\t", 2)
        out[a] = (since, reason)
    return out


def wait_inbound(x):
    wait_for(lambda: port_accepts(x.inbound, "127.0.0.1"), 10, "the bounce MX to listen")


# ---- the reports -----------------------------------------------------------

def postfix_dsn(verp, rcpt, returned, status="5.1.1", action="failed",
                diag="550 5.1.1 <{rcpt}>: Recipient address rejected:\n    User unknown in "
                     "local recipient table", qid="3F1A2C0B12"):
    """An RFC 3464 DSN as Postfix writes it (text, delivery-status, headers)."""
    diag = diag.format(rcpt=rcpt)
    subject, head = "Undelivered Mail Returned to Sender", "could not\nbe delivered to one or " \
        "more recipients. It's attached below."
    if action == "delayed":
        subject = "Delayed Mail (still being retried)"
        head = "has not yet been\ndelivered. The mail system will continue delivery attempts."
    return crlf(f"""Date: Thu,  7 Dec 2023 10:00:00 +0000 (UTC)
From: MAILER-DAEMON@mx.rx.test (Mail Delivery System)
Subject: {subject}
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{qid}.1701943200/mx.rx.test"
Content-Transfer-Encoding: 8bit
Message-Id: <20231207100000.{qid}@mx.rx.test>

This is a MIME-encapsulated message.

--{qid}.1701943200/mx.rx.test
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.rx.test.

I'm sorry to have to inform you that your message {head}

For further assistance, please send mail to postmaster.

                   The mail system

<{rcpt}>: host store.rx.test[192.0.2.25] said: {diag} (in reply to RCPT TO
    command)

--{qid}.1701943200/mx.rx.test
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.rx.test
X-Postfix-Queue-ID: {qid}
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Thu,  7 Dec 2023 09:59:58 +0000 (UTC)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {action}
Status: {status}
Remote-MTA: dns; store.rx.test
Diagnostic-Code: smtp; {diag}

--{qid}.1701943200/mx.rx.test
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

{returned}

--{qid}.1701943200/mx.rx.test--
""")


def postfix_text(verp, rcpt, returned):
    """Postfix's notification alone, the original below it (no DSN part)."""
    return crlf(f"""From: MAILER-DAEMON@mx.rx.test (Mail Delivery System)
To: {verp}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.rx.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<{rcpt}>: host store.rx.test[192.0.2.25] said: 550 5.1.1 <{rcpt}>:
    Recipient address rejected: User unknown in local recipient table (in
    reply to RCPT TO command)

--- Below this line is a copy of the message.

{returned}

body of the original, which says 550 5.7.1 policy and must not count
""")


def exim_text(verp, rcpt, returned):
    return crlf(f"""From: Mail Delivery System <Mailer-Daemon@mx.rx.test>
To: {verp}
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1rB7xY-0001Ab-Cd@mx.rx.test>
Date: Thu, 07 Dec 2023 10:00:00 +0000
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {rcpt}
    host store.rx.test [192.0.2.25]
    SMTP error from remote mail server after RCPT TO:<{rcpt}>:
    550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

{returned}

body of the original
""")


def qmail_text(verp, rcpt, returned):
    return crlf(f"""From: MAILER-DAEMON@mx.rx.test
To: {verp}
Subject: failure notice
Date: 7 Dec 2023 10:00:00 -0000

Hi. This is the qmail-send program at mx.rx.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{rcpt}>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <{rcpt}>... User unknown
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

{returned}

body of the original
""")


def plain_text(verp, rcpt):
    """A bounce of no known layout that quotes the remote's reply."""
    return crlf(f"""From: postmaster@rx.test
To: {verp}
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain; charset=UTF-8

Delivery to the following recipient failed permanently:

     {rcpt}

Technical details of permanent failure:
The remote server replied: 550 5.1.1 The email account that you tried to reach does not exist.
""")


def vacation(verp):
    """An out-of-office reply (RFC 3834) to the envelope sender that quotes
    an SMTP reply: not a bounce."""
    return crlf(f"""From: Vac Person <vacation@rx.test>
To: {verp}
Subject: Automatic reply: bmx fmt-vacation
Auto-Submitted: auto-replied

I am out of the office until Monday and could not read your message.
About the ticket (error 550 5.1.1 user unknown in our old system): ask bob.
""")


def arf(returned, rcpt=None):
    """An ARF abuse report (RFC 5965); rcpt None: redacted, as some
    feedback loops send them."""
    orcpt = f"Original-Rcpt-To: <{rcpt}>\n" if rcpt else ""
    to = rcpt or "redacted@rx.test"
    returned = re.sub(r"(?im)^To: .*$", f"To: {to}", returned)
    return crlf(f"""From: Feedback Loop <fbl@rx.test>
Date: Thu, 7 Dec 2023 17:40:36 +0000
Subject: FW: complaint about your mail
To: <abuse@{BOUNCE_DOMAIN}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
127.0.0.1 on Thu, 7 Dec 2023 14:00:00 +0000.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounce-masked@{BOUNCE_DOMAIN}>
{orcpt}Arrival-Date: Thu, 7 Dec 2023 14:00:00 +0000
Reporting-MTA: dns; mail.rx.test
Source-IP: 127.0.0.1

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

{returned}

Spam Spam Spam
--part1_13d.2e68ed54_boundary--
""")


# ---- 1. the real flow ------------------------------------------------------

@cases.add
def real_flow_dsn_suppresses(x):
    st0 = stats(x)
    dead_api, dead_smtp, keep = "dead-api@rx.test", "dead-smtp@rx.test", "keep@rx.test"
    mid_a, _ = api_send1(x, [dead_api], "flow-api")
    # SMTP submission with smtplib: two recipients, two transactions out.
    with smtplib.SMTP("127.0.0.1", x.d.port, timeout=20 * SLOW) as s:
        s.ehlo("client.test")
        check(s.mail(SENDER)[0] == 250, "submission MAIL")
        for r in (dead_smtp, keep):
            check(s.rcpt(r)[0] == 250, f"submission RCPT {r}")
        code, text = s.data(crlf(f"From: <{SENDER}>\nTo: <{dead_smtp}>, <{keep}>\n"
                                 f"Subject: bmx flow-smtp\nX-Test-Id: flow-smtp\n\nhello\n"))
    m = re.match(r"^2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$", text.decode())
    check(code == 250 and m, f"submission: {code} {text!r}")
    mid_s = m.group(1)
    wait_rcpts(x.d, mid_a, "delivered")
    wait_rcpts(x.d, mid_s, "delivered")
    va = verp_of(x, dead_api, "flow-api", mid_a, 0)
    vs = verp_of(x, dead_smtp, "flow-smtp", mid_s, 0)
    vk = verp_of(x, keep, "flow-smtp", mid_s, 1)
    check(len({va, vs, vk}) == 3, f"VERP addresses repeat: {va} {vs} {vk}")
    for addr, tag in ((dead_api, "flow-api"), (keep, "flow-smtp")):
        frm = received_for(x, addr, tag).header("From")
        check(frm and SENDER in frm, f"{tag}: From: {frm!r} is not the sender's")
    before = api_rcpt(x.d, mid_a)
    check(before["last_response"].startswith("250"), f"{dead_api} delivered: {before}")

    # The asynchronous DSN, from the null sender, with smtplib.
    diag = (f"550 5.1.1 <{dead_api}>: Recipient address rejected: User unknown in local "
            f"recipient table")
    dsn = postfix_dsn(va, dead_api, returned_headers(x, dead_api, "flow-api"))
    uid = report_ok(x, va, dsn, "127.0.0.2", "the DSN for dead-api")
    # The 250 came after the commit: the state is there at once.
    rc = api_rcpt(x.d, mid_a)
    want = f"{diag} (reported by store.rx.test) (delivered before: {before['last_response']})"
    check(rc["state"] == "bounced" and rc["last_response"] == want,
          f"{dead_api} after the DSN: {rc['state']} {rc['last_response']!r}, expected bounced "
          f"{want!r}")
    check(rc["attempts"] == before["attempts"], f"{dead_api}: attempts {before['attempts']} -> "
          f"{rc['attempts']}")
    check_report_log(x, uid, "the DSN for dead-api", kind="failed", format="dsn", matched=1,
                     applied=1, status="5.1.1")
    x.flow = {"mid": mid_a, "addr": dead_api, "verp": va, "uid": uid}

    # The second, with swaks (when installed) for the SMTP-submitted message.
    dsn2 = postfix_dsn(vs, dead_smtp, returned_headers(x, dead_smtp, "flow-smtp"),
                       qid="7A2B3C4D5E")
    if shutil.which("swaks"):
        f = x.env.dir / "dsn2.eml"
        f.write_bytes(dsn2[:-2])  # swaks ends the data with CRLF . CRLF itself
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(x.inbound),
                            "--local-interface", "127.0.0.2", "--ehlo", "mx.rx.test",
                            "--from", "<>", "--to", vs, "--data", f"@{f}"],
                           capture_output=True, timeout=30 * SLOW)
        out = p.stdout.decode("utf-8", "replace")
        check(p.returncode == 0, f"swaks: exit {p.returncode}: {out[-800:]}")
        check(re.search(r"(?m)^ *-> MAIL FROM:<>\s*$", out), f"swaks: no null sender: {out[:600]}")
        m = re.search(r"(?m)^<[~-]  250 (2\.0\.0 Ok: received as mailbox message \d+)\s*$", out)
        uid2 = stored_uid(250 if m else 0, m.group(1) if m else out[-400:], "swaks DSN")
    else:
        log("swaks is not installed: the second DSN goes with smtplib")
        uid2 = report_ok(x, vs, dsn2, "127.0.0.2", "the DSN for dead-smtp")
    check(uid2 == uid + 1, f"mailbox UIDs {uid} then {uid2}")
    st = api_status(x.d, mid_s)["recipients"]
    check(st[0]["state"] == "bounced" and st[0]["last_response"].startswith("550 5.1.1 <dead-smtp"),
          f"{dead_smtp} after the DSN: {st[0]}")
    check(st[1]["state"] == "delivered" and st[1]["last_response"].startswith("250"),
          f"{keep} (not named by the DSN): {st[1]}")

    # Suppressed: the API and the CLI.
    for a in (dead_api, dead_smtp):
        e = suppression(x, a)
        check(e and e["reason"].startswith("hard bounce: 550 5.1.1 <" + a) and e["since"],
              f"{a} on the suppression list: {e}")
    check(suppression(x, keep) is None, f"{keep} is suppressed")
    listed = cli_suppressed(x)
    check(dead_api in listed and dead_smtp in listed and keep not in listed,
          f"ringpost suppress list: {sorted(listed)}")
    check(listed[dead_api][1] == suppression(x, dead_api)["reason"],
          f"CLI and API reasons differ: {listed[dead_api]}")

    # A new message to a suppressed address and a fresh one.
    mid2, answer = api_send1(x, [dead_api, "fresh@rx.test"], "flow-again")
    check(answer[0].get("state") == "suppressed" and "state" not in answer[1],
          f"202 recipients {answer}")
    rs = api_status(x.d, mid2)["recipients"]
    check(rs[0]["state"] == "suppressed" and rs[0]["attempts"] == 0 and
          rs[0]["last_response"].startswith("5.7.0 suppressed: hard bounce: 550 5.1.1"),
          f"{dead_api} in the new message: {rs[0]}")

    def other_done():
        r = api_status(x.d, mid2)["recipients"]
        return r if r[1]["state"] == "delivered" else None
    rs = wait_for(other_done, 10, "fresh@rx.test delivered")
    check(rs[0]["state"] == "suppressed", f"{dead_api} later: {rs[0]}")
    received_for(x, "fresh@rx.test", "flow-again")
    check(not [m for m in x.rx.messages() if m.header("X-Test-Id") == "flow-again" and
               dead_api in m.rcpts], f"{dead_api} was sent the new message")
    attempt = f"delivery id={mid2} rcpt=<{dead_api}>"
    check(not [ln for ln in x.d.log().splitlines() if attempt in ln],
          f"a delivery attempt to the suppressed {dead_api} is logged")

    # The mailbox.
    entries = {e["uid"]: e for e in bounce_list(x.d)}
    check(uid in entries and uid2 in entries, f"UIDs {uid}, {uid2} not in GET /v1/bounces: "
          f"{sorted(entries)}")
    e = entries[uid]
    check(e["subject"] == "Undelivered Mail Returned to Sender" and e["seen"] is False,
          f"GET /v1/bounces entry {e}")
    raw = bounce_get(x.d, uid)
    check(e["size"] == len(raw), f"listed size {e['size']}, message {len(raw)} bytes")
    check(raw.startswith(b"Return-Path: <>\r\nReceived: from mx.rx.test "),
          f"the stored DSN's trace: {raw[:200]!r}")
    head = raw[:raw.index(b"\r\nDate: ")].decode()
    check(f"by {HOSTNAME}" in head and f"for <{va}>" in head, f"the Received: field {head!r}")
    check(raw.endswith(dsn), "the stored DSN is not the one sent, byte for byte")
    pm = email.message_from_bytes(raw, policy=email.policy.compat32)
    check(pm.get_content_type() == "multipart/report" and
          pm.get_param("report-type") == "delivery-status", f"stored: {pm.get_content_type()}")
    ds = [p for p in pm.walk() if p.get_content_type() == "message/delivery-status"]
    check(ds and ds[0].get_payload()[1]["Status"] == "5.1.1", "stored: no Status 5.1.1 group")
    raw2 = bounce_get(x.d, uid2)
    check(raw2.endswith(dsn2), f"the swaks DSN is not stored byte for byte: ends "
          f"{raw2[-120:]!r}, sent {dsn2[-120:]!r}")

    # The counters.
    def counted():
        st1 = stats(x)
        got = (st1["reports"]["received"] - st0["reports"]["received"],
               st1["reports"]["matched"] - st0["reports"]["matched"],
               st1["suppressed"] - st0["suppressed"])
        return st1 if got == (2, 2, 1) else None
    try:
        st1 = wait_for(counted, 5, "stats: 2 reports, 2 matched, 1 suppressed")
    except TestFailure:
        raise TestFailure(f"/v1/stats before {st0['reports']}, suppressed {st0['suppressed']}; "
                          f"after {stats(x)['reports']}, suppressed {stats(x)['suppressed']}; "
                          f"expected +2, +2 matched, +1")
    p = curl(["-H", f"Authorization: Bearer {API_KEY}", f"http://127.0.0.1:{x.d.api_port}/metrics"])
    text = p.stdout.decode()
    for line in (f"ringpost_recipients_suppressed_total {st1['suppressed']}",
                 f'ringpost_reports_received_total{{matched="yes"}} {st1["reports"]["matched"]}',
                 'ringpost_reports_received_total{matched="no"} '
                 f'{st1["reports"]["received"] - st1["reports"]["matched"]}'):
        check(re.search(rf"(?m)^{re.escape(line)}$", text), f"/metrics lacks {line!r}")


# ---- 2. other formats ------------------------------------------------------

@cases.add
def other_formats(x):
    names = ["postfix", "exim", "qmail", "plain", "arf", "arf-redacted", "delayed", "full",
             "vacation", "bdat"]
    addr = {n: f"{n}@rx.test" for n in names}
    mids, verps, before = {}, {}, {}
    for n in names:
        mids[n], _ = api_send1(x, [addr[n]], f"fmt-{n}")
    for n in names:
        wait_rcpts(x.d, mids[n], "delivered")
        verps[n] = verp_of(x, addr[n], f"fmt-{n}", mids[n], 0)
        before[n] = api_rcpt(x.d, mids[n])
    ret = {n: returned_headers(x, addr[n], f"fmt-{n}") for n in names}
    src = "127.0.0.3"
    uids = {}
    uids["postfix"] = report_ok(x, verps["postfix"],
                                postfix_text(verps["postfix"], addr["postfix"], ret["postfix"]),
                                src, "Postfix text")
    uids["exim"] = report_ok(x, verps["exim"], exim_text(verps["exim"], addr["exim"], ret["exim"]),
                             src, "Exim")
    uids["qmail"] = report_ok(x, verps["qmail"].upper(),
                              qmail_text(verps["qmail"], addr["qmail"], ret["qmail"]), src,
                              "qmail, to the VERP address in upper case")
    uids["plain"] = report_ok(x, verps["plain"], plain_text(verps["plain"], addr["plain"]), src,
                              "plain text")
    uids["arf"] = report_ok(x, f"abuse@{BOUNCE_DOMAIN}", arf(ret["arf"], addr["arf"]), src, "ARF",
                            sender="fbl-bounces@rx.test")
    uids["arf-redacted"] = report_ok(x, f"abuse@{BOUNCE_DOMAIN}", arf(ret["arf-redacted"]), src,
                                     "redacted ARF", sender="fbl-bounces@rx.test")
    uids["delayed"] = report_ok(x, verps["delayed"],
                                postfix_dsn(verps["delayed"], addr["delayed"], ret["delayed"],
                                            status="4.4.1", action="delayed",
                                            diag="X-Postfix; connect to store.rx.test[192.0.2.25]"
                                                 ":25: Connection timed out"),
                                src, "delayed DSN")
    uids["full"] = report_ok(x, verps["full"],
                             postfix_dsn(verps["full"], addr["full"], ret["full"], status="5.2.2",
                                         diag="552 5.2.2 <{rcpt}>: Mailbox full"),
                             src, "mailbox full DSN")
    uids["vacation"] = report_ok(x, verps["vacation"], vacation(verps["vacation"]), src,
                                 "an out-of-office reply")
    # A DSN in two BDAT chunks (RFC 3030: the MX offers CHUNKING).
    dsn = postfix_dsn(verps["bdat"], addr["bdat"], ret["bdat"])
    half = len(dsn) // 2
    with SMTPConn(x.inbound, source=src) as c:
        c.expect(220, "banner")
        check("CHUNKING" in c.ehlo("mx.rx.test"), "the bounce MX does not offer CHUNKING")
        c.cmd("MAIL FROM:<>", 250)
        c.cmd(f"RCPT TO:<{verps['bdat']}>", 250)
        c.send(f"BDAT {half}\r\n".encode() + dsn[:half])
        c.expect(250, "the first BDAT chunk")
        c.send(f"BDAT {len(dsn) - half} LAST\r\n".encode() + dsn[half:])
        line = c.expect(250, "BDAT LAST")[-1]
        uids["bdat"] = stored_uid(250, line[4:], "a DSN in BDAT chunks")
        c.cmd("QUIT", 221)
    check(bounce_get(x.d, uids["bdat"]).endswith(dsn), "the BDAT DSN is not stored byte for byte")
    check(len(set(uids.values())) == len(uids), f"UIDs repeat: {uids}")
    fails = []

    def expect(n, state, resp_prefix, suppressed, **logf):
        try:
            rc = api_rcpt(x.d, mids[n])
            check(rc["state"] == state, f"{n}: state {rc['state']}, expected {state}: {rc}")
            check(rc["last_response"].startswith(resp_prefix),
                  f"{n}: last_response {rc['last_response']!r}, expected {resp_prefix!r}...")
            if state != "delivered":
                check(rc["last_response"].endswith(
                    f" (delivered before: {before[n]['last_response']})"),
                    f"{n}: last_response {rc['last_response']!r} lacks the delivery")
            else:
                check(rc == before[n], f"{n}: record changed: {before[n]} -> {rc}")
            e = suppression(x, addr[n])
            check(bool(e) == suppressed, f"{n}: suppression entry {e}, expected "
                  f"{'one' if suppressed else 'none'}")
            check_report_log(x, uids[n], n, **logf)
        except TestFailure as e:
            fails.append(str(e))
    hard = "550 5.1.1 "
    expect("postfix", "bounced", hard + "<postfix@rx.test>: Recipient address rejected", True,
           kind="failed", format="postfix", matched=1, applied=1, status="5.1.1")
    expect("exim", "bounced", hard + "<exim@rx.test>: Recipient address rejected", True,
           kind="failed", format="exim", matched=1, applied=1, status="5.1.1")
    expect("qmail", "bounced", hard + "<qmail@rx.test>", True,
           kind="failed", format="qmail", matched=1, applied=1, status="5.1.1")
    expect("plain", "bounced", hard + "The email account", True,
           kind="failed", format="text-reply", matched=1, applied=1, status="5.1.1")
    expect("arf", "complained", "complaint: abuse", True,
           kind="complaint", format="arf", matched=1, applied=1)
    expect("arf-redacted", "complained", "complaint: abuse", True,
           kind="complaint", format="arf", matched=1, applied=1)
    expect("delayed", "delivered", "250", False,
           kind="delayed", format="dsn", matched=1, applied=0, status="4.4.1")
    expect("full", "bounced", "552 5.2.2 <full@rx.test>: Mailbox full", False,
           kind="failed", format="dsn", matched=1, applied=1, status="5.2.2")
    expect("vacation", "delivered", "250", False, kind="none", matched=1, applied=0)
    expect("bdat", "bounced", hard + "<bdat@rx.test>: Recipient address rejected", True,
           kind="failed", format="dsn", matched=1, applied=1, status="5.1.1")
    for n in ("arf", "arf-redacted"):
        e = suppression(x, addr[n])
        if not (e and e["reason"] == "complaint: abuse"):
            fails.append(f"{n}: suppression entry {e}, expected reason 'complaint: abuse'")
    # No stray address from the reports' texts got on the list.
    for a in ("redacted@rx.test", f"bounce-masked@{BOUNCE_DOMAIN}"):
        if suppression(x, a):
            fails.append(f"{a} (named in a report, not our recipient) is suppressed")
    # All are in the mailbox.
    listed = {e["uid"] for e in bounce_list(x.d)}
    missing = sorted(n for n, u in uids.items() if u not in listed)
    if missing:
        fails.append(f"not in GET /v1/bounces: {missing}")
    check(not fails, "; ".join(fails))


@cases.add
def sync_hard_bounce_suppresses(x):
    mid, _ = api_send1(x, ["nobody@gone.test"], "sync-1")
    rc = wait_rcpts(x.d, mid, "bounced")["recipients"][0]
    check(rc["last_response"].startswith("550 5.1.1"), f"nobody@gone.test: {rc}")
    e = suppression(x, "nobody@gone.test")
    check(e and "550 5.1.1" in e["reason"], f"nobody@gone.test after a synchronous 550 5.1.1: {e}")
    mid2, answer = api_send1(x, ["nobody@gone.test"], "sync-2")
    check(answer[0].get("state") == "suppressed", f"the next message to it: 202 {answer}")
    check(api_rcpt(x.d, mid2)["state"] == "suppressed", "the next message: not suppressed")


# ---- 3. bad input ------------------------------------------------------------

@cases.add
def refused_recipients(x):
    mid, _ = api_send1(x, ["probe-target@rx.test"], "refused")
    wait_rcpts(x.d, mid, "delivered")
    v = verp_of(x, "probe-target@rx.test", "refused", mid, 0)
    before = api_rcpt(x.d, mid)
    local, _, _ = v.partition("@")
    pre, mac = local.rsplit("-", 1)
    forged_mac = f"{pre}-{'0' * 16}@{BOUNCE_DOMAIN}"
    forged_mac2 = f"{pre}-{mac[:-1]}{'1' if mac[-1] == '0' else '0'}@{BOUNCE_DOMAIN}"
    forged_idx = f"{pre[:pre.rindex('-')]}-1-{mac}@{BOUNCE_DOMAIN}"
    want = [("user@other.test", RELAY_DENIED), ("probe-target@rx.test", RELAY_DENIED),
            (f"someone@{BOUNCE_DOMAIN}", RELAY_DENIED), (f"postmaster@{HOSTNAME}", RELAY_DENIED),
            (forged_mac, NOT_VALID), (forged_mac2, NOT_VALID), (forged_idx, NOT_VALID)]
    with smtplib.SMTP("127.0.0.1", x.inbound, local_hostname="mx.evil.test", timeout=20 * SLOW,
                      source_address=("127.0.0.4", 0)) as s:
        s.ehlo()
        check(s.mail("")[0] == 250, "MAIL FROM:<>")
        for rcpt, text in want:
            code, msg = s.rcpt(rcpt)
            check(code == 550 and msg.decode().startswith(text),
                  f"RCPT TO:<{rcpt}>: {code} {msg!r}, expected 550 {text}")
        code, msg = s.docmd("DATA")
        check(code == 554, f"DATA after refused recipients only: {code} {msg!r}")
        s.rset()
        # The session is still usable: a note to postmaster gets in.
        check(s.mail("")[0] == 250, "MAIL FROM:<> after the refusals")
        code, msg = s.rcpt(f"postmaster@{BOUNCE_DOMAIN}")
        check(code == 250, f"RCPT TO:<postmaster@{BOUNCE_DOMAIN}>: {code} {msg!r}")
        code, msg = s.data(crlf("Subject: hello postmaster\n\nhi\n"))
        uid = stored_uid(code, msg.decode(), "postmaster after refusals")
    check_report_log(x, uid, "a note to postmaster", matched=0, applied=0, kind="none")
    rc = api_rcpt(x.d, mid)
    check(rc == before, f"the recipient changed after forged RCPTs: {before} -> {rc}")
    forged = [ln for ln in x.d.log().splitlines() if "refused a forged VERP address" in ln]
    for f in (forged_mac, forged_mac2, forged_idx):
        check(any(f in ln and "127.0.0.4" in ln for ln in forged),
              f"no log warning for the forged {f}")
    # The real one is still good.
    check(report(x, v, crlf("Subject: not a bounce\n\nhello\n"), "127.0.0.4")[0] == 250,
          "the genuine VERP address refused after the forgeries")


@cases.add
def probing_is_cut_off(x):
    src, n = "127.0.0.66", 0
    for _ in range(3):  # 8 per session: below max_errors
        with SMTPConn(x.inbound, source=src) as c:
            c.expect(220, "banner")
            c.ehlo("prober.test")
            c.cmd("MAIL FROM:<>", 250)
            for _ in range(8):
                n += 1
                c.cmd(f"RCPT TO:<user{n}@victim.test>", 550, f"refused RCPT {n}")
            c.cmd("QUIT", 221)
    with SMTPConn(x.inbound, source=src) as c:
        c.expect(220, "banner")
        c.ehlo("prober.test")
        c.cmd("MAIL FROM:<>", 250)
        for _ in range(5):
            n += 1
            c.cmd(f"RCPT TO:<user{n}@victim.test>", 550, f"refused RCPT {n}")
        n += 1
        lines = c.cmd(f"RCPT TO:<user{n}@victim.test>", 421, f"refused RCPT {n}")
        check(lines[-1].startswith("421 4.7.0"), f"the 30th refusal: {lines}")
        check(c.at_eof(), "the connection stays open after the 421")
    with SMTPConn(x.inbound, source=src) as c:
        lines = c.expect(421, "banner for a blocked address")
        check(lines[-1].startswith("421 4.7.0"), f"blocked banner {lines}")
    check(report(x, f"postmaster@{BOUNCE_DOMAIN}", crlf("Subject: hi\n\nhi\n"), "127.0.0.67")[0]
          == 250, "another address is refused too")


def nested(depth):
    """depth levels of multipart/mixed, a DSN-ish text at the bottom."""
    out = ["From: MAILER-DAEMON@mx.rx.test", "Subject: nested", "MIME-Version: 1.0",
           'Content-Type: multipart/mixed; boundary="b0"', ""]
    for i in range(1, depth):
        out += [f"--b{i - 1}", f'Content-Type: multipart/mixed; boundary="b{i}"', ""]
    out += [f"--b{depth - 1}", "Content-Type: message/delivery-status", "",
            "Final-Recipient: rfc822; deep@rx.test", "Action: failed", "Status: 5.1.1", ""]
    for i in reversed(range(depth)):
        out += [f"--b{i}--", ""]
    return crlf("\n".join(out) + "\n")


@cases.add
def malformed_reports(x):
    mid, _ = api_send1(x, ["garbage@rx.test"], "garbage")
    mid_odd, _ = api_send1(x, ["odd@rx.test"], "odd")
    mid_multi, _ = api_send1(x, ["multi@rx.test"], "multi")
    for m in (mid, mid_odd, mid_multi):
        wait_rcpts(x.d, m, "delivered")
    vg = verp_of(x, "garbage@rx.test", "garbage", mid, 0)
    vo = verp_of(x, "odd@rx.test", "odd", mid_odd, 0)
    vm = verp_of(x, "multi@rx.test", "multi", mid_multi, 0)
    before = api_rcpt(x.d, mid)
    supp0 = {e["address"] for e in all_suppressions(x)}
    box0 = bounce_list(x.d)
    pm = f"postmaster@{BOUNCE_DOMAIN}"
    rnd = bytes((i * 7919 + 13) % 256 for i in range(20000))
    garbage = b"".join(rnd[i:i + 70].replace(b"\r", b"!").replace(b"\n", b"!").replace(b"\0", b"?")
                       + b"\r\n" for i in range(0, len(rnd), 70))
    anon = postfix_dsn("somebody@rx.test", "odd@rx.test", "Subject: x")  # names no VERP address
    many = crlf("From: MAILER-DAEMON@mx.rx.test\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
                'Content-Type: multipart/report; report-type=delivery-status; boundary="M"\n\n'
                "--M\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.rx.test\n\n" +
                "".join(f"Final-Recipient: rfc822; victim{i}@rx.test\nAction: failed\n"
                        f"Status: 5.1.1\n\n" for i in range(200)) + "--M--\n")
    long_diag = "550 5.1.1 <odd@rx.test> " + " ".join(f"word{i}" for i in range(1500))
    overlong = postfix_dsn(vo, "odd@rx.test", "Subject: x",
                           diag="\n    ".join(long_diag[i:i + 70]
                                              for i in range(0, len(long_diag), 70)))
    overlong = overlong.replace(b"Status: 5.1.1", b"Status: 5.1.1" + b"1" * 500, 1)
    # (rcpt, name, payload, expected code): every payload ends with CRLF.
    items = [
        (pm, "missing boundary", anon.replace(b';\r\n\tboundary="3F1A2C0B12.1701943200/mx.rx.test"',
                                              b""), 250),
        (pm, "truncated", anon[:len(anon) * 2 // 3].rsplit(b"\r\n", 1)[0] + b"\r\n", 250),
        (pm, "50 nested multiparts", nested(50), 250),
        (pm, "8-bit garbage", garbage, 250),
        (vg, "8-bit garbage to a VERP address", garbage, 250),
        (pm, "base64 garbage", crlf("From: MAILER-DAEMON@mx.rx.test\nMIME-Version: 1.0\n"
                                    'Content-Type: multipart/report; boundary="Q"\n\n--Q\n'
                                    "Content-Type: message/delivery-status\n"
                                    "Content-Transfer-Encoding: base64\n\n"
                                    "!!!!====****@@@@\n====\nQUJD\n--Q--\n"), 250),
        (vm, "200 other recipients", many, 250),
        (pm, "a header with no body", crlf("Subject: Undelivered Mail\n"), 250),
        (vo, "overlong fields", overlong, 250),
        (pm, "a NUL byte", b"Subject: nul\r\n\r\nbefore\0after\r\n", 554),
        (pm, "a 2 MB line", b"Subject: long\r\n\r\n" + b"x" * (2 << 20) + b"\r\n", 500),
    ]
    check(b"boundary" not in items[0][2].split(b"\r\n\r\n")[0], "the boundary is still there")
    check(nested(50).count(b"multipart/mixed") == 50, "not 50 levels")
    results, fails, broken = [], [], False
    with SMTPConn(x.inbound, source="127.0.0.5", timeout=30) as c:
        c.expect(220, "banner")
        c.ehlo("mx.rx.test")
        for rcpt, name, payload, code in items:
            try:
                c.cmd("MAIL FROM:<>", 250, f"{name}: MAIL")
                c.cmd(f"RCPT TO:<{rcpt}>", 250, f"{name}: RCPT")
                c.cmd("DATA", 354, f"{name}: DATA")
                c.send(dot_stuff(payload))
                got, lines = c.read_reply()
                results.append((name, rcpt, got, lines[-1]))
                if got != code:
                    fails.append(f"{name}: {lines[-1]!r}, expected {code}")
                elif code == 554:
                    check(lines[-1].startswith("554 5.6.0"), f"{name}: {lines[-1]}")
                elif code == 500:
                    check(lines[-1].startswith("500 5.5.2"), f"{name}: {lines[-1]}")
            except (TestFailure, OSError, EOFError) as e:
                fails.append(f"{name}: {e}")
                broken = True
                break
        if not broken:
            c.cmd("QUIT", 221)
    check(x.d.alive(), "the daemon died")
    stored = {}
    for name, rcpt, got, line in results:
        if got == 250:
            stored[name] = stored_uid(250, line[4:], name)
    box1 = bounce_list(x.d)
    new = [e["uid"] for e in box1 if e["uid"] not in {b["uid"] for b in box0}]
    if sorted(new) != sorted(stored.values()):
        fails.append(f"mailbox: new UIDs {sorted(new)}, the 250s named {sorted(stored.values())}")
    for name, uid in stored.items():
        rcpt = next(r for r in items if r[1] == name)[0]
        f = report_log(x, uid)
        if (f.get("matched") == "0") != (rcpt == pm):
            fails.append(f"{name} (to {rcpt}): log matched={f.get('matched')}")
        if rcpt == pm and f.get("applied") != "0":
            fails.append(f"{name}: applied={f.get('applied')}")
        raw = bounce_get(x.d, uid)
        payload = next(r for r in items if r[1] == name)[2]
        if not raw.endswith(payload):
            fails.append(f"{name}: not stored byte for byte ({len(raw)} bytes)")
    rc = api_rcpt(x.d, mid)
    if rc != before:
        fails.append(f"garbage to a VERP address changed the recipient: {before} -> {rc}")
    ro = api_rcpt(x.d, mid_odd)
    if not (ro["state"] == "bounced" and ro["last_response"].startswith("550 5.1.1 <odd@rx.test>")
            and len(ro["last_response"]) <= 1000):
        fails.append(f"the overlong DSN: odd@rx.test {ro['state']} "
                     f"{len(ro['last_response'])} bytes {ro['last_response'][:120]!r}")
    rm = api_rcpt(x.d, mid_multi)
    if rm["state"] != "bounced":
        fails.append(f"the DSN naming 200 others to multi@rx.test's VERP address: {rm}")
    # Our recipients' own addresses are suppressed, never the ones a report names.
    supp1 = {e["address"] for e in all_suppressions(x)}
    if supp1 - supp0 != {"odd@rx.test", "multi@rx.test"}:
        fails.append(f"suppression list grew by {sorted(supp1 - supp0)[:5]}, expected "
                     f"odd@rx.test and multi@rx.test")
    check(not fails, "; ".join(fails))


@cases.add
def one_report_two_recipients(x):
    mids = {n: api_send1(x, [f"{n}@rx.test"], n)[0] for n in ("twoa", "twob")}
    for n, mid in mids.items():
        wait_rcpts(x.d, mid, "delivered")
    v = {n: verp_of(x, f"{n}@rx.test", n) for n in mids}
    dsn = postfix_dsn(v["twoa"], "twoa@rx.test", returned_headers(x, "twoa@rx.test", "twoa"))
    with smtplib.SMTP("127.0.0.1", x.inbound, local_hostname="mx.rx.test", timeout=20 * SLOW,
                      source_address=("127.0.0.11", 0)) as s:
        refused = s.sendmail("", [v["twoa"], v["twob"]], dsn)
        check(not refused, f"a DSN to two VERP addresses: refused {refused}")
    a, b = api_rcpt(x.d, mids["twoa"]), api_rcpt(x.d, mids["twob"])
    check(a["state"] == "bounced", f"the recipient the DSN names: {a['state']}")
    check(b["state"] == "delivered" and b["last_response"].startswith("250"),
          f"the recipient the DSN does not name: {b['state']} {b['last_response']!r}")
    check(suppression(x, "twoa@rx.test") is not None, "twoa@rx.test is not suppressed")
    check(suppression(x, "twob@rx.test") is None, "twob@rx.test was suppressed by another's DSN")


@cases.add
def expired_record_suppresses_nobody(x):
    sub, api, inb = free_port(), free_port(), free_port()
    d2 = x.env.daemon(routes={"rx.test": x.rx.addr}, name="expired", port=sub, api_port=api,
                      queue={"bounce_domain": BOUNCE_DOMAIN, "suppress": "yes",
                             "keep_done": "0s"},
                      extra=f"[listen]\ninbound = 127.0.0.1:{inb}\n")
    d2.start()
    try:
        wait_for(lambda: port_accepts(inb, "127.0.0.1"), 10, "the keep_done=0 bounce MX")
        r = d2.api("POST", "/v1/messages", {"from": SENDER, "to": ["attacker@rx.test"],
                                             "subject": "x", "text": "x\n",
                                             "headers": {"X-Test-Id": "expired"}})
        check(r.status == 202, f"POST: HTTP {r.status}")
        mid = r.json()["id"]
        verp = verp_of(x, "attacker@rx.test", "expired")
        wait_for(lambda: d2.api("GET", f"/v1/messages/{mid}").status == 404, 10 * SLOW,
                 "the finished message's records to go (keep_done = 0)")
        dsn = postfix_dsn(verp, "victim@important.test", "Subject: x")
        with smtplib.SMTP("127.0.0.1", inb, local_hostname="mx.rx.test", timeout=20 * SLOW,
                          source_address=("127.0.0.12", 0)) as s:
            refused = s.sendmail("", [verp], dsn)
            check(not refused, f"the DSN: refused {refused}")
        j = d2.api("GET", "/v1/suppressions").json()
        check(j["total"] == 0, f"a report for an expired record listed {j['suppressions']}")
        check(len(d2.api("GET", "/v1/bounces").json()["messages"]) == 1,
              "the report is not kept in the mailbox")
        rc = d2.stop()
        check(rc == 0, f"the keep_done=0 daemon: SIGTERM exit {rc}")
        d2.check_log_clean()
    finally:
        d2.kill()


@cases.add
def inbound_without_bounce_domain(x):
    port = free_port()
    d2 = x.env.daemon(routes={"rx.test": x.rx.addr}, name="nobd",
                      extra=f"[listen]\ninbound = 127.0.0.1:{port}\n")
    d2.start()
    try:
        check("[listen] inbound is set but [queue] bounce_domain is not" in d2.log(),
              "no warning for inbound without bounce_domain")
        wait_for(lambda: port_accepts(port, "127.0.0.1"), 10, "the second bounce MX")
        with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.rx.test", timeout=20 * SLOW,
                          source_address=("127.0.0.6", 0)) as s:
            s.ehlo()
            check(s.mail("")[0] == 250, "MAIL FROM:<> without bounce_domain")
            for r in (f"postmaster@{BOUNCE_DOMAIN}", f"abuse@{BOUNCE_DOMAIN}", x.flow["verp"],
                      f"postmaster@{HOSTNAME}"):
                code, msg = s.rcpt(r)
                check(code == 550 and msg.decode().startswith("5.7.1"),
                      f"RCPT TO:<{r}> without bounce_domain: {code} {msg!r}")
        # Its outbound mail keeps the sender's envelope.
        with smtplib.SMTP("127.0.0.1", d2.port, timeout=20 * SLOW) as s:
            s.sendmail(SENDER, ["plainfrom@rx.test"],
                       crlf(f"From: <{SENDER}>\nSubject: x\nX-Test-Id: nobd\n\nhi\n"))
        m = received_for(x, "plainfrom@rx.test", "nobd")
        check(m.mailfrom == SENDER, f"without bounce_domain the envelope sender is {m.mailfrom!r}")
        rc = d2.stop()
        check(rc == 0, f"the second daemon: SIGTERM exit {rc}")
        d2.check_log_clean()
    finally:
        d2.kill()


# ---- 4. restart ------------------------------------------------------------

@cases.add
def restart_keeps_everything(x):
    mid, _ = api_send1(x, ["later@rx.test"], "restart")
    mid_k, _ = api_send1(x, ["killed@rx.test"], "restart-kill")
    wait_rcpts(x.d, mid, "delivered")
    wait_rcpts(x.d, mid_k, "delivered")
    v = verp_of(x, "later@rx.test", "restart", mid, 0)
    supp = all_suppressions(x)
    r = x.d.api("GET", "/v1/bounces")
    box = r.json()
    flow = api_status(x.d, x.flow["mid"])
    rc = x.d.stop()
    check(rc == 0, f"SIGTERM before the restart: exit {rc}")
    x.d.start()
    wait_inbound(x)
    check(all_suppressions(x) == supp, "the suppression list changed over the restart")
    box2 = x.d.api("GET", "/v1/bounces").json()
    check(box2 == box, f"the mailbox changed over the restart: uidvalidity {box['uidvalidity']} -> "
          f"{box2['uidvalidity']}, uidnext {box['uidnext']} -> {box2['uidnext']}, "
          f"{len(box['messages'])} -> {len(box2['messages'])} messages")
    check(bounce_get(x.d, x.flow["uid"]).startswith(b"Return-Path: <>\r\n"),
          "the flow's DSN is not readable after the restart")
    check(api_status(x.d, x.flow["mid"]) == flow, "the bounced recipient changed over the restart")
    # A VERP address from before the restart.
    bad = v[:-len(BOUNCE_DOMAIN) - 2] + ("0" if v[-len(BOUNCE_DOMAIN) - 2] != "0" else "1") + \
        "@" + BOUNCE_DOMAIN
    code, text = report(x, bad, b"x\r\n", "127.0.0.8")
    check(code == 550 and text.startswith(NOT_VALID), f"forged after the restart: {code} {text}")
    before = api_rcpt(x.d, mid)
    uid = report_ok(x, v, postfix_dsn(v, "later@rx.test", returned_headers(x, "later@rx.test",
                                                                           "restart")),
                    "127.0.0.8", "a DSN to a VERP address issued before the restart")
    check(uid == box["uidnext"], f"the first UID after the restart is {uid}, uidnext was "
          f"{box['uidnext']}")
    rc = api_rcpt(x.d, mid)
    check(rc["state"] == "bounced" and rc["last_response"].startswith("550 5.1.1 <later@rx.test>")
          and rc["last_response"].endswith(f"(delivered before: {before['last_response']})"),
          f"later@rx.test after its DSN: {rc}")
    check(suppression(x, "later@rx.test"), "later@rx.test not suppressed")
    _, answer = api_send1(x, [x.flow["addr"]], "restart-again")
    check(answer[0].get("state") == "suppressed", f"after the restart: {answer}")
    # A report answered 250 is committed: kill -9 right after the reply.
    vk = verp_of(x, "killed@rx.test", "restart-kill", mid_k, 0)
    uid_k = report_ok(x, vk, postfix_dsn(vk, "killed@rx.test", "Subject: x"), "127.0.0.8",
                      "a DSN just before kill -9")
    x.d.kill()
    x.d.start()
    wait_inbound(x)
    check(uid_k in {e["uid"] for e in bounce_list(x.d)}, f"UID {uid_k} lost by kill -9")
    rc = api_rcpt(x.d, mid_k)
    check(rc["state"] == "bounced", f"killed@rx.test after kill -9: {rc}")
    check(suppression(x, "killed@rx.test"), "killed@rx.test's suppression lost by kill -9")


# ---- 5. the suppression API and CLI ----------------------------------------

def curl_api(x, method, path, body=None):
    """curl against the API: (status, parsed JSON body or None)."""
    args = ["-X", method, "-H", f"Authorization: Bearer {API_KEY}", "-o", "-", "-w",
            "\n%{http_code}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary",
                 body if isinstance(body, str) else json.dumps(body)]
    p = curl(args + [f"http://127.0.0.1:{x.d.api_port}{path}"])
    check(p.returncode == 0, f"curl {method} {path}: exit {p.returncode} {p.stderr[-300:]!r}")
    out, _, status = p.stdout.decode().rpartition("\n")
    try:
        return int(status), json.loads(out) if out.strip() else None
    except ValueError:
        raise TestFailure(f"curl {method} {path}: {status} body not JSON: {out[:300]!r}")


@cases.add
def suppression_api_and_cli(x):
    st, j = curl_api(x, "POST", "/v1/suppressions", {"address": "Manual@RX.test",
                                                     "reason": "asked to stop"})
    check(st == 201 and j == {"address": "manual@rx.test", "added": True}, f"POST: {st} {j}")
    st, j = curl_api(x, "POST", "/v1/suppressions", {"address": "manual@rx.test",
                                                     "reason": "asked to stop"})
    check(st == 200 and j.get("added") is True, f"POST again: {st} {j}")
    p = ringpost_cli(x.d, ["suppress", "add", "cli-added@rx.test", "--reason", "via the cli"])
    check(p.returncode == 0 and b"cli-added@rx.test is on the suppression list" in p.stdout,
          f"ringpost suppress add: exit {p.returncode} {p.stdout!r} {p.stderr!r}")
    e = suppression(x, "manual@rx.test")
    check(e and e["reason"] == "asked to stop" and re.match(r"^\d{4}-\d\d-\d\dT", e["since"]),
          f"manual@rx.test entry {e}")
    check(suppression(x, "cli-added@rx.test")["reason"] == "via the cli", "CLI reason")
    check(suppression(x, "never@rx.test") is None, "never@rx.test is listed")

    # Pages of 2, in address order, every address once (five more
    # addresses, so that there are several pages whatever came before).
    for i in (3, 1, 4, 0, 2):
        r = x.d.api("POST", "/v1/suppressions", {"address": f"page-{i}@rx.test"})
        check(r.status == 201, f"POST page-{i}@rx.test: {r.status} {r.body[:200]!r}")
    check(suppression(x, "page-0@rx.test")["reason"] == "added by the API",
          "the default reason")
    full = [e["address"] for e in all_suppressions(x)]
    check(full == sorted(full) and len(set(full)) == len(full), f"the list is not in order: {full}")
    check(len(full) >= 7, f"only {len(full)} suppressed addresses: {full}")
    paged, after, pages = [], None, 0
    while True:
        q = "/v1/suppressions?limit=2" + (f"&after={after}" if after else "")
        r = x.d.api("GET", q)
        check(r.status == 200, f"GET {q}: HTTP {r.status}")
        j = r.json()
        pages += 1
        check(j["total"] == len(full), f"page {pages}: total {j['total']}, expected {len(full)}")
        check(len(j["suppressions"]) <= 2, f"page {pages}: {len(j['suppressions'])} entries")
        paged += [e["address"] for e in j["suppressions"]]
        if "next" not in j:
            break
        check(j["next"] == paged[-1], f"page {pages}: next {j['next']!r}, last {paged[-1]!r}")
        after = j["next"]
        check(pages <= len(full), "paging does not end")
    check(paged == full, f"paged {paged} != listed {full}")
    check(pages in (len(full) // 2 + 1, (len(full) + 1) // 2),
          f"{pages} pages of 2 for {len(full)} addresses")
    listed = cli_suppressed(x)
    check(sorted(listed) == full, f"ringpost suppress list {sorted(listed)} != {full}")

    # Mail to them is suppressed.
    mid, answer = api_send1(x, ["manual@rx.test", "cli-added@rx.test"], "supp-1")
    check([a.get("state") for a in answer] == ["suppressed", "suppressed"], f"202 {answer}")
    rs = api_status(x.d, mid)["recipients"]
    check(rs[0]["last_response"] == "5.7.0 suppressed: asked to stop", f"record {rs[0]}")

    # Delete: curl, the CLI; a second time is 404 / exit 66.
    st, j = curl_api(x, "DELETE", "/v1/suppressions/manual%40rx.test")
    check(st == 200 and j == {"address": "manual@rx.test", "removed": True}, f"DELETE: {st} {j}")
    st, j = curl_api(x, "DELETE", "/v1/suppressions/manual%40rx.test")
    check(st == 404 and j["error"]["code"] == "not_found", f"DELETE again: {st} {j}")
    p = ringpost_cli(x.d, ["suppress", "del", "cli-added@rx.test"])
    check(p.returncode == 0, f"ringpost suppress del: exit {p.returncode} {p.stderr!r}")
    p = ringpost_cli(x.d, ["suppress", "del", "cli-added@rx.test"])
    check(p.returncode == EX_NOINPUT and b"not on the suppression list" in p.stderr,
          f"ringpost suppress del again: exit {p.returncode} {p.stderr!r}")
    r = x.d.api("DELETE", "/v1/suppressions/" + x.flow["addr"].replace("@", "%40"))
    check(r.status == 200, f"DELETE the hard-bounced {x.flow['addr']}: {r.status}")
    check(suppression(x, x.flow["addr"]) is None, "still listed after DELETE")

    # Delivered again.
    again = ["manual@rx.test", "cli-added@rx.test", x.flow["addr"]]
    mid, answer = api_send1(x, again, "supp-2")
    check(not any("state" in a for a in answer), f"202 after the deletes: {answer}")
    wait_rcpts(x.d, mid, "delivered")
    got = [m for m in x.rx.messages() if m.header("X-Test-Id") == "supp-2"]
    check(sorted(a for m in got for a in m.rcpts) == sorted(again),
          f"the receiver got supp-2 for {[m.rcpts for m in got]}")

    # Bad input names the field and adds nothing.
    n0 = len(all_suppressions(x))
    bad = [({"address": "not an address"}, 422, "invalid_address", "not an address"),
           ({"address": "a@"}, 422, "invalid_address", "a@"),
           ({"reason": "no address"}, 400, "bad_field", "address"),
           ({"address": 5}, 400, "bad_field", "address"),
           ({"address": "ok@rx.test", "bogus": 1}, 400, "bad_field", "bogus"),
           ({"address": "ok@rx.test", "reason": "two\nlines"}, 400, "bad_field", "reason"),
           ({"address": "ok@rx.test", "reason": 7}, 400, "bad_field", "reason"),
           ("{\"address\": ", 400, "bad_json", "JSON"),
           ([1, 2], 400, "bad_field", "address")]
    fails = []
    for body, status, code, word in bad:
        st, j = curl_api(x, "POST", "/v1/suppressions", body)
        err = (j or {}).get("error") or {}
        if st != status or err.get("code") != code or word not in err.get("message", ""):
            fails.append(f"POST {body!r}: {st} {j}, expected {status} {code} naming {word!r}")
    for q, word in (("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit")):
        r = x.d.api("GET", f"/v1/suppressions?{q}")
        if r.status != 400 or word not in r.error()[1]:
            fails.append(f"GET ?{q}: {r.status} {r.body[:200]!r}")
    r = x.d.api("GET", "/v1/suppressions", key=None)
    if r.status != 401:
        fails.append(f"GET /v1/suppressions without a key: {r.status}")
    p = ringpost_cli(x.d, ["suppress", "add", "not an address"])
    if p.returncode != EX_DATAERR or b"not a valid address" not in p.stderr:
        fails.append(f"ringpost suppress add 'not an address': exit {p.returncode} {p.stderr!r}")
    if len(all_suppressions(x)) != n0:
        fails.append(f"bad input changed the list: {n0} -> {len(all_suppressions(x))}")
    check(not fails, "; ".join(fails))


def main():
    with TestEnv("bounce_mx") as env:
        x = Ctx()
        x.env = env
        x.rx = env.smtpd("rx")
        gone_port = free_port()
        x.gone = env.fast_sink("gone", [f"127.0.0.1:{gone_port}"], ["--rcpt-script", "550"])
        x.inbound = free_port()
        x.d = env.daemon(routes={"rx.test": x.rx.addr, "gone.test": f"127.0.0.1:{gone_port}"},
                         with_api=True,
                         queue={"bounce_domain": BOUNCE_DOMAIN, "suppress": "yes"},
                         extra=f"[listen]\ninbound = 127.0.0.1:{x.inbound}\n")
        x.d.start()
        wait_inbound(x)
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
