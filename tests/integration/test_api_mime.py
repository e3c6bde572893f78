"""test_api_mime.py - what the HTTP API builds is what arrives: messages
submitted as JSON reach real receivers (Python smtpd for a.test, Postfix
smtp-sink for b.test) and parse back with Python's email package
(email.message_from_bytes, policy.default) to the very same parts.

  - html + text + attachments + a long non-ASCII subject: the subject
    decodes equal, text and html are equal (final newline included),
    every attachment's bytes are identical and its filename equal (ASCII,
    non-ASCII with blanks, quotes in the name, a text attachment with CRLF
    inside), extra headers (non-ASCII too) decode equal, the From display
    name decodes, the Message-ID carries the API's id; at both receivers;
  - text only, html only, html with a 2,000-character line: the single part
    decodes equal (a text without its final newline gets one);
  - per-recipient vars: {{name}} in subject, text and html is rendered per
    recipient; recipient vars win over message vars; HTML values are
    escaped (text and subject values are not); numbers and booleans render;
    unknown placeholders stay as written; each recipient gets its own
    message (one RCPT, its own To:) with its own rendering; without
    placeholders one copy serves every recipient of a domain;
  - the status of every message reports each recipient delivered.
"""

import base64
import email
import email.policy
import os
import random

from harness import (Cases, TestEnv, check, raise_failures, run_cases, run_test, stop_clean,
                     wait_for)

SENDER = "api@origin.test"
FROM = "Sënder Nämé <api@origin.test>"
cases = Cases()


class Ctx:
    def __init__(self, env, d, smtpd, sink):
        self.env, self.d, self.smtpd, self.sink = env, d, smtpd, sink


def submit(x, m):
    r = x.d.api("POST", "/v1/messages", m)
    check(r.status == 202, f"POST: HTTP {r.status}: {r.body[:300]!r}")
    return r.json()


def wait_delivered(x, mid):
    def done():
        s = x.d.api("GET", f"/v1/messages/{mid}").json()
        return all(r["state"] == "delivered" for r in s["recipients"])
    wait_for(done, 20, f"{mid} delivered", interval=0.1)


def arrived(rx, tid, n=1):
    """The n messages with X-Test-Id tid at receiver rx, parsed."""
    def got():
        ms = [m for m in rx.messages() if m.header("X-Test-Id") == tid]
        return ms if len(ms) >= n else None
    ms = wait_for(got, 20, f"{tid} at {rx.kind}", interval=0.1)
    check(len(ms) == n, f"{tid}: {len(ms)} messages at {rx.kind}, expected {n}")
    return [(m, email.message_from_bytes(m.data, policy=email.policy.default)) for m in ms]


def text_of(part):
    check(part is not None, "a body part is missing")
    return part.get_content()


# ---- the full message ---------------------------------------------------------------

SUBJECT = ("Grüße aus Köln — 日本語のテキスト, émojis 😀🎉 and a long tail: " +
           "ünïcödé wörds " * 12).strip()
TEXT = ("Hallo Wörld,\n\nthis text has ünïcode, a line longer than seventy-six characters "
        "so that quoted-printable has to fold it somewhere in the middle of it all,\n"
        ".a line starting with a dot\n..two dots\ntrailing blanks   \n= an equals sign\n"
        "tab\there\n\nBye.\n")
HTML = ("<html><body><p>Hallo <b>Wörld</b> &amp; friends</p>\n"
        "<p style=\"color: red\">" + "long line " * 40 + "</p>\n</body></html>\n")


def attachments():
    rnd = random.Random(7)
    binary = bytes(range(256)) * 4 + bytes(rnd.getrandbits(8) for _ in range(7001))
    return [
        ("report.bin", "application/octet-stream", binary),
        ("résumé 日本 2024.pdf", "application/pdf", b"%PDF-1.4\n" + os.urandom(3000)),
        ("notes \"v2\".txt", "text/plain", b"line one\r\nline two\nline three\r\n"),
        ("empty.dat", None, b""),
    ]


def check_full(m, parsed, to_hdr, atts, what):
    check(parsed["subject"] == SUBJECT, f"{what}: subject {parsed['subject']!r}")
    frm = parsed["from"].addresses[0]
    check(frm.display_name == "Sënder Nämé" and frm.addr_spec == SENDER,
          f"{what}: From {parsed['from']!r}")
    check(parsed["x-campaign"] == "spring ✿ sale", f"{what}: X-Campaign {parsed['x-campaign']!r}")
    check(parsed["reply-to"] == "help@origin.test", f"{what}: Reply-To {parsed['reply-to']!r}")
    check(str(parsed["to"]) == to_hdr, f"{what}: To {parsed['to']!r}")
    check(parsed.get_content_type() == "multipart/mixed", f"{what}: {parsed.get_content_type()}")
    check(text_of(parsed.get_body(("plain",))) == TEXT, f"{what}: text differs: "
          f"{text_of(parsed.get_body(('plain',)))!r}")
    check(text_of(parsed.get_body(("html",))) == HTML, f"{what}: html differs: "
          f"{text_of(parsed.get_body(('html',)))!r}")
    got = list(parsed.iter_attachments())
    check(len(got) == len(atts), f"{what}: {len(got)} attachments, expected {len(atts)}")
    for part, (name, ctype, data) in zip(got, atts):
        check(part.get_filename() == name, f"{what}: filename {part.get_filename()!r}, "
              f"expected {name!r}")
        check(part.get_content_type() == (ctype or "application/octet-stream"),
              f"{what}: {name}: type {part.get_content_type()}")
        check(part.get_content_disposition() == "attachment", f"{what}: {name}: disposition")
        body = part.get_payload(decode=True)
        check(body == data, f"{what}: {name}: {len(body)} bytes back for {len(data)}, "
              f"{'same length but different' if len(body) == len(data) else 'different'}")
    defects = [d for p in parsed.walk() for d in p.defects]
    check(not defects, f"{what}: the email package found defects: {defects}")
    # No line of the message passes 998 octets, and header lines holding
    # encoded words stay within 76 (RFC 2047).
    head, _ = m.split()
    for line in m.data.split(b"\n"):
        check(len(line) <= 998, f"{what}: a line of {len(line)} octets")
    for line in head.split(b"\n"):
        if b"=?" in line:
            check(len(line) <= 76, f"{what}: an encoded-word header line of {len(line)}: {line!r}")


@cases.add
def full_message(x):
    atts = attachments()
    m = {"from": FROM, "to": ["full1@a.test", "full2@b.test"], "subject": SUBJECT,
         "text": TEXT, "html": HTML,
         "headers": {"X-Test-Id": "mime-full", "X-Campaign": "spring ✿ sale",
                     "Reply-To": "help@origin.test"},
         "attachments": [dict({"filename": n, "content": base64.b64encode(d).decode()},
                              **({"content_type": t} if t else {})) for n, t, d in atts]}
    r = submit(x, m)
    wait_delivered(x, r["id"])
    for rx, rcpt in ((x.smtpd, "full1@a.test"), (x.sink, "full2@b.test")):
        (msg, parsed), = arrived(rx, "mime-full")
        check(msg.rcpts == [rcpt], f"{rx.kind}: rcpts {msg.rcpts}")
        check(msg.mailfrom == SENDER, f"{rx.kind}: MAIL FROM {msg.mailfrom}")
        check_full(msg, parsed, "full1@a.test, full2@b.test", atts, rx.kind)
        check(parsed["message-id"].startswith(f"<{r['id']}@"),
              f"{rx.kind}: Message-ID {parsed['message-id']} for id {r['id']}")
        check(r["id"] in (parsed["received"] or ""), f"{rx.kind}: Received {parsed['received']}")


@cases.add
def single_parts(x):
    shapes = [
        ("mime-text", {"text": "Plain text ünïcode\nsecond line"}, "plain",
         "Plain text ünïcode\nsecond line\n"),
        ("mime-text-ascii", {"text": "ascii only\n"}, "plain", "ascii only\n"),
        ("mime-html", {"html": "<p>only html ü</p>"}, "html", "<p>only html ü</p>\n"),
        ("mime-long-line", {"html": "<p>" + "x" * 2000 + "</p>\n"}, "html",
         "<p>" + "x" * 2000 + "</p>\n"),
        ("mime-fake-boundary", {"text": "a\n--=_rp_0000000000000000_0\nb\n"}, "plain",
         "a\n--=_rp_0000000000000000_0\nb\n"),
    ]
    for tid, body, kind, want in shapes:
        m = {"from": SENDER, "to": f"{tid}@a.test", "subject": f"Ärger {tid}",
             "headers": {"X-Test-Id": tid}}
        m.update(body)
        submit(x, m)
        (msg, parsed), = arrived(x.smtpd, tid)
        check(parsed.get_content_type() == f"text/{kind}", f"{tid}: {parsed.get_content_type()}")
        check(parsed["subject"] == f"Ärger {tid}", f"{tid}: subject {parsed['subject']!r}")
        check(parsed.get_content() == want, f"{tid}: body {parsed.get_content()[:200]!r}")
        check(parsed.get_content_charset() == "utf-8", f"{tid}: charset")
        for line in msg.data.split(b"\n"):
            check(len(line) <= 998, f"{tid}: a line of {len(line)} octets")


# ---- per-recipient vars -------------------------------------------------------------

VARS_MSG = {
    "from": SENDER,
    "to": [{"email": "ann@a.test", "vars": {"name": "Ann <&> \"A\" 'B'", "city": "Köln"}},
           {"email": "bob@a.test", "vars": {"name": "Bob", "count": 7, "vip": False}},
           {"email": "cy@b.test", "vars": {}},
           "dee@a.test",
           {"email": "eve@b.test", "vars": {"name": "Ève", "city": "Genève", "count": 1.5}},
           {"email": "fay@a.test", "vars": {"count": 1234567.89}}],
    "vars": {"name": "Friend", "city": "Berlin", "count": 3, "vip": True},
    "subject": "Hi {{name}} from {{ city }}",
    "text": "Dear {{name}},\n{{count}} items, vip={{vip}}. {{unknown}} and {{ unknown2 }} stay.\n",
    "html": "<p>Dear {{name}} in {{city}}</p><p>{{unknown}}</p>\n",
    "headers": {"X-Test-Id": "vars"},
}


def render(tmpl, v, html):
    import html as h
    out = tmpl
    for k, val in v.items():
        s = str(val).lower() if isinstance(val, bool) else "" if val is None else str(val)
        if html:
            s = h.escape(s, quote=True).replace("&#x27;", "&#39;")
        out = out.replace("{{" + k + "}}", s).replace("{{ " + k + " }}", s)
    return out


def expected_vars():
    base = VARS_MSG["vars"]
    out = {}
    for t in VARS_MSG["to"]:
        email_, rv = (t, {}) if isinstance(t, str) else (t["email"], t["vars"])
        v = dict(base, **rv)
        out[email_] = (render(VARS_MSG["subject"], v, False), render(VARS_MSG["text"], v, False),
                       render(VARS_MSG["html"], v, True))
    return out


@cases.add
def per_recipient_vars(x):
    want = expected_vars()
    # The expectations, spelled out for two recipients.
    check(want["ann@a.test"][0] == "Hi Ann <&> \"A\" 'B' from Köln", f"{want['ann@a.test']}")
    check(want["ann@a.test"][2] == "<p>Dear Ann &lt;&amp;&gt; &quot;A&quot; &#39;B&#39; in "
          "Köln</p><p>{{unknown}}</p>\n", f"{want['ann@a.test'][2]!r}")
    check(want["bob@a.test"][1] == "Dear Bob,\n7 items, vip=false. {{unknown}} and "
          "{{ unknown2 }} stay.\n", f"{want['bob@a.test'][1]!r}")
    # A real number prints in full.
    check(want["fay@a.test"][1].startswith("Dear Friend,\n1234567.89 items"),
          f"{want['fay@a.test']}")
    r = submit(x, VARS_MSG)
    wait_delivered(x, r["id"])
    got = {}
    for rx in (x.smtpd, x.sink):
        n = sum(1 for e in want if (e.endswith("@a.test")) == (rx is x.smtpd))
        for msg, parsed in arrived(rx, "vars", n):
            check(len(msg.rcpts) == 1, f"{rx.kind}: one message for {msg.rcpts}: per-recipient "
                  "rendering must give each recipient its own message")
            rcpt = msg.rcpts[0]
            check(str(parsed["to"]) == rcpt, f"{rcpt}: To {parsed['to']!r}")
            got[rcpt] = (parsed["subject"], text_of(parsed.get_body(("plain",))),
                         text_of(parsed.get_body(("html",))))
    check(set(got) == set(want), f"recipients {sorted(got)}, expected {sorted(want)}")
    for e, w in want.items():
        for what, g, ww in zip(("subject", "text", "html"), got[e], w):
            check(g == ww, f"{e}: {what} {g!r}, expected {ww!r}")


@cases.add
def vars_without_placeholders(x):
    # vars given but no placeholder: one copy for the two a.test recipients.
    m = {"from": SENDER, "to": [{"email": "nv1@a.test", "vars": {"name": "N"}}, "nv2@a.test"],
         "vars": {"name": "M"}, "subject": "static {name}", "text": "{ {name} }\n",
         "headers": {"X-Test-Id": "novars"}}
    r = submit(x, m)
    wait_delivered(x, r["id"])
    (msg, parsed), = arrived(x.smtpd, "novars")
    check(sorted(msg.rcpts) == ["nv1@a.test", "nv2@a.test"], f"rcpts {msg.rcpts}")
    check(parsed["subject"] == "static {name}" and parsed.get_content() == "{ {name} }\n",
          f"{parsed['subject']!r} {parsed.get_content()!r}")


def main():
    with TestEnv("apimime") as env:
        smtpd = env.smtpd()
        sink = env.sink()
        d = env.daemon(routes={"a.test": smtpd.addr, "b.test": sink.addr}, with_api=True).start()
        x = Ctx(env, d, smtpd, sink)
        failures = run_cases(cases, x, [d])
        stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
