"""test_dkim.py - DKIM signing and one-click unsubscribe end to end, every
signature checked by an independent verifier: Debian's python3-dkim (dkimpy,
with python3-nacl for ed25519-sha256) run by /usr/bin/python3
(harness/dkim_check.py), which takes the public keys from DNS only: a
dnsmasq on loopback serves them as TXT records (the RSA-2048 records split
into 255-byte strings), and dkim_check asks it over UDP.

Keys are made at test time with `openssl genpkey` (RSA-2048 twice, Ed25519,
RSA-1024, RSA-512, EC P-256, an encrypted RSA key) and their TXT records
derived with `openssl pkey -pubout`, never with ringpost. The daemon "main"
signs origin.test (selector s1, RSA-2048) and ed.test (e1, Ed25519; its
section written [dkim Ed.Test]) and delivers rx.test to ringpost-sink --save
(byte-exact files; ringpost sends there with BDAT) and rx2.test to Python's
smtpd (DATA, dot-stuffed; its LF line ends are put back to CRLF, exact since
ringpost sends CRLF only); the daemon "rot" is reloaded with new keys.

Cases:
  - API messages verify: text only, html only, text+html (with Reply-To
    and an unsigned X- field in headers), 60 KB binary and a text
    attachment (read back), an 8-bit UTF-8 body (read back), a non-ASCII
    subject and display name (RFC 2047, decoded back), Ed25519
    (a=ed25519-sha256). Every copy has exactly one DKIM-Signature: v=1, the
    key's a=, c=relaxed/relaxed, d=, s=, t= within the test's clock, no l=,
    From oversigned (h= names it once more than the message has it), every
    default field present listed as often as it occurs, no Received or
    DKIM-Signature in h=, no line over 78 columns. A shared body sent to
    both receivers carries one identical signature in both copies (RSA and
    Ed25519). The verifier's lookups were the expected names, and dnsmasq
    logged them;
  - a templated batch (POST /v1/messages/batch): per-recipient vars in
    subject, text, html and unsubscribe (recipient vars over message vars,
    values percent-encoded in the URIs, a CRLF in a var stays encoded and
    adds no field): every copy verifies and has its own signature (distinct
    b=), Subject, body and List-Unsubscribe with its own rendered vars;
    an Ed25519 templated message too; the untemplated one has one signature
    for both copies; an entry whose rendered unsubscribe URL is too long
    gets its own 400 error naming unsubscribe.url, the others are accepted;
  - raw submissions verify: smtplib with folded headers (a value starting
    on the next line), runs of blanks, trailing blanks on header and body
    lines, two Cc fields, lines starting with dots and a lone dot, trailing
    blank lines, no Date or Message-ID (ringpost adds both and signs them),
    to both receivers; an empty body; a body of blank and white lines; bare
    LF and CR in the body (ringpost makes them CRLF); header fields only
    (no blank line); 280 KB of lines with blanks; swaks with folded headers
    and trailing blank lines; the API raw field with LF-only line ends, with
    an 8-bit Subject and From, and without a final line end (both
    receivers). The blanks arrive as sent, so canonicalisation, not the
    input, made them agree;
  - which messages are signed: not when the From: domain has no key (API
    and SMTP), for a subdomain of a signing domain, for a domain that only
    ends in one, nor for a From: at a keyless domain whose comment names a
    signing domain; but the signing domain in upper case, a "from:" field
    name in lower case, a display name holding another address in quotes
    (SMTP and API), and a comment after the address (with "<...>" or an
    address in it) are signed with d=origin.test;
  - unsubscribe: url and mailto give List-Unsubscribe with both URIs and
    List-Unsubscribe-Post: List-Unsubscribe=One-Click, each once and both in
    h=; mailto alone gives no -Post and "mailto:" once; a raw message with
    unsubscribe (no vars) gets both, signed. Bad input gets 400 bad_field
    naming unsubscribe.url / unsubscribe.mailto / the field: http:, blanks,
    CRLF, angle brackets, non-ASCII (as written and after rendering), empty,
    not a string, too long (as written and after rendering), an unknown
    field, neither url nor mailto, not an object, combined with
    headers.List-Unsubscribe or -Post, vars with raw, a raw message that has
    List-Unsubscribe (CRLF and LF line ends); none of it is delivered;
  - a one-byte change fails verification: in the body ("body hash
    mismatch"), Subject, From, To, List-Unsubscribe, List-Unsubscribe-Post,
    b=, and a From: added on top (oversigning), on RSA and Ed25519 copies
    from both receivers; changes that relaxed canonicalisation ignores
    (trailing blanks and blank lines in the body, a refolded Subject, field
    names in upper case) and a changed Received: still verify;
  - /v1/stats "dkim" counts signed (one per shared body, one per
    personalised copy), no_key and failed (none) exactly, sign_cpu_seconds
    grows, a 400 moves nothing; /metrics ringpost_dkim_signatures_total
    and ringpost_dkim_sign_cpu_seconds_total agree with /v1/stats;
  - start-up: a missing key file (named), a garbage file, an EC key, an
    encrypted key and a [dkim] without selector make `serve` and
    `check-config` exit 78 with one line "FILE:LINE: [dkim bad.test] ..."
    (LINE the section's or its key's);
    check-config exits 0 and warns once on stderr for an RSA-512 key with
    FILE:LINE, not for RSA-1024 nor Ed25519;
  - rot: its log warns about its RSA-512 key at start; that key signs, and
    dkimpy accepts the signature with minkey 512 only ("too small"
    otherwise); mail is signed s=s1 by the s1 key in its traditional PKCS#1
    form; after SIGHUP to selector s2 and a new key, API and SMTP mail is
    s=s2 and verifies with the s2 record, and fails with a resolver that
    serves the s1 key's record under s2; a reload to a garbage key logs an
    error "reload failed, keeping the running config" with FILE:LINE and
    mail is still s=s2 and verifies; a reload without the section leaves
    mail unsigned.
Both daemons stop cleanly (exit 0, no sanitizer report) and neither log
says a message could not be signed.
"""

import base64
import email
import email.header
import email.policy
import json
import re
import signal
import smtplib
import subprocess
import time
import urllib.parse

from harness import (EX_CONFIG, HERE, SLOW, Cases, TestEnv, TestFailure, check, config_text,
                     free_port, log, raise_failures, ringpost_bin, run_cases, run_test,
                     saved_mail, stop_clean, wait_for)

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: the one with python3-dkim and python3-nacl
CHECKER = HERE / "harness" / "dkim_check.py"
ORIGIN, ED = "origin.test", "ed.test"  # signing domains (s1 RSA-2048, e1 Ed25519)
# What dkim.h says is signed whenever present.
DEFAULT_SIGNED = ("from", "to", "cc", "subject", "date", "message-id", "mime-version",
                  "content-type", "content-transfer-encoding", "list-unsubscribe",
                  "list-unsubscribe-post", "reply-to", "in-reply-to", "references")
DKIM_MARK = "; ---- dkim ----"  # where the rot daemon's [dkim] sections start

cases = Cases()


class Ctx:
    pass


# ---- tools -----------------------------------------------------------------

def run(argv, input=None, timeout=30):
    """A tool to its end (bounded): the CompletedProcess (bytes)."""
    try:
        return subprocess.run([str(a) for a in argv], input=input, capture_output=True,
                              timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{' '.join(map(str, argv))[:200]} did not finish")


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def genkey(path, kind):
    """A private key in PEM made by openssl: rsa-BITS, ed25519, ec, rsa-enc."""
    if kind == "ed25519":
        argv = ["openssl", "genpkey", "-algorithm", "ED25519"]
    elif kind == "ec":
        argv = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    elif kind == "rsa-enc":
        argv = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024",
                "-aes-128-cbc", "-pass", "pass:secret"]
    else:
        argv = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                f"rsa_keygen_bits:{kind.split('-')[1]}"]
    p = run(argv + ["-out", path])
    check(p.returncode == 0 and path.exists(), f"openssl genpkey {kind}: {text(p.stderr)}")
    return path


def dkim_record(pem, kind):
    """The TXT record for a key (RFC 6376 3.6.1, RFC 8463 4), from openssl's
    SubjectPublicKeyInfo: all of it for RSA, its last 32 bytes for Ed25519."""
    p = run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"])
    check(p.returncode == 0, f"openssl pkey -pubout {pem}: {text(p.stderr)}")
    der = p.stdout
    if kind == "ed25519":
        check(len(der) == 44, f"Ed25519 SubjectPublicKeyInfo of {len(der)} bytes")
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:]).decode()
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def txt_arg(name, record):
    """dnsmasq's --txt-record for a record of any length: character-strings
    of at most 255 bytes, comma-separated (no commas in a DKIM record)."""
    parts = [record[i:i + 255] for i in range(0, len(record), 255)]
    return f"--txt-record={name}," + ",".join(parts)


def dns_txt(x, name):
    """The TXT record dnsmasq serves for name, as dkim_check joins it."""
    p = run([SYSTEM_PYTHON, CHECKER, "--dns", x.dns.port, "--txt", name])
    check(p.returncode == 0, f"dkim_check --txt {name}: {text(p.stderr)[-400:]}")
    return json.loads(p.stdout)["txt"]


# ---- messages as received --------------------------------------------------

class Copy:
    """One delivered copy: envelope recipients, the bytes (CRLF), receiver."""

    def __init__(self, rcpts, data, via):
        self.rcpts, self.data, self.via = rcpts, data, via

    def head_body(self):
        """(header section, body); a message of header fields only (no
        blank line) has an empty body."""
        i = self.data.find(b"\r\n\r\n")
        if i < 0:
            check(self.data.endswith(b"\r\n"), f"a copy ends mid-line: {self.data[-80:]!r}")
            return self.data, b""
        return self.data[:i + 2], self.data[i + 4:]

    def fields(self):
        """[(lower-case name, raw value incl. folds)] of the header, in order."""
        head, _ = self.head_body()
        return [(m.group(1).decode().lower(), m.group(2)) for m in
                re.finditer(rb"(?m)^([!-9;-~]+):((?:.*\r\n)(?:[ \t].*\r\n)*)", head)]

    def header(self, name):
        """The first value of a field, unfolded and stripped (str), or None."""
        for n, v in self.fields():
            if n == name.lower():
                return text(re.sub(rb"\r\n", b"", v)).strip()
        return None

    def names(self):
        return [n for n, _ in self.fields()]

    def sigs(self):
        """The DKIM-Signature fields as {tag: value} (FWS removed)."""
        out = []
        for n, v in self.fields():
            if n == "dkim-signature":
                flat = re.sub(rb"\s+", b"", v).decode("ascii", "replace")
                out.append(dict(t.split("=", 1) for t in flat.split(";") if "=" in t))
        return out

    def parsed(self):
        return email.message_from_bytes(self.data, policy=email.policy.default)


def all_copies(x):
    """Every copy either receiver has so far."""
    out = [Copy(m.rcpts, m.data, "ringpost-sink") for m in saved_mail(x.save_dir)]
    for m in x.rx2.messages():
        out.append(Copy(m.rcpts, m.data.replace(b"\n", b"\r\n"), "smtpd"))
    return out


def wait_copies(x, rcpts, timeout=20):
    """{rcpt: Copy} once every recipient in rcpts has exactly one copy."""
    rcpts = list(rcpts)

    def got():
        found = {}
        for c in all_copies(x):
            for r in c.rcpts:
                if r in rcpts:
                    check(r not in found, f"two copies for {r}")
                    found[r] = c
        return found if len(found) == len(rcpts) else None
    return wait_for(got, timeout, f"copies for {rcpts}", interval=0.1)


def copy_for(x, rcpt, timeout=20):
    return wait_copies(x, [rcpt], timeout)[rcpt]


def verify(x, items, minkey=None, dns=None):
    """dkim_check on [(label, bytes)]: one result dict per item, in order.
    dns: another Dnsmasq to take the keys from."""
    vdir = x.env.dir / "verify"
    vdir.mkdir(exist_ok=True)
    paths = []
    for label, data in items:
        x.nfiles += 1
        p = vdir / f"{x.nfiles:04d}-{re.sub(r'[^A-Za-z0-9.-]', '_', label)}.eml"
        p.write_bytes(data)
        paths.append(p)
    argv = [SYSTEM_PYTHON, CHECKER, "--dns", (dns or x.dns).port]
    if minkey:
        argv += ["--minkey", minkey]
    p = run(argv + paths, timeout=60)
    check(p.returncode == 0, f"dkim_check: exit {p.returncode}: {text(p.stderr)[-800:]}")
    res = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    check(len(res) == len(items), f"dkim_check: {len(res)} results for {len(items)} files")
    for r, (label, _) in zip(res, items):
        r["label"] = label
    return res


def verified(x, copies, what):
    """Every copy ({label: Copy}) verifies: the results by label."""
    res = verify(x, [(k, c.data) for k, c in copies.items()])
    bad = [f"{r['label']} ({copies[r['label']].via}): {r['why']}" for r in res if not r["ok"]]
    check(not bad, f"{what}: signatures that do not verify: " + "; ".join(bad))
    return {r["label"]: r for r in res}


def check_sig(c, what, d, s, a, t0):
    """Exactly one DKIM-Signature on copy c, as ringpost promises: its tags."""
    sigs = c.sigs()
    check(len(sigs) == 1, f"{what}: {len(sigs)} DKIM-Signature fields: {c.data[:600]!r}")
    tg = sigs[0]
    want = {"v": "1", "a": a, "c": "relaxed/relaxed", "d": d, "s": s}
    bad = {k: tg.get(k) for k, v in want.items() if tg.get(k) != v}
    check(not bad, f"{what}: tags {bad}, expected {want}")
    check("l" not in tg, f"{what}: l= is used: {tg}")
    for k in ("bh", "b", "h", "t"):
        check(tg.get(k), f"{what}: no {k}= in {tg}")
    check(re.fullmatch(r"\d+", tg["t"]) and t0 - 1 <= int(tg["t"]) <= time.time() + 1,
          f"{what}: t={tg['t']} is not the signing time (test started {t0})")
    h = tg["h"].lower().split(":")
    names = [n for n in c.names() if n != "dkim-signature"]
    check(h.count("from") == names.count("from") + 1,
          f"{what}: From not oversigned: h={tg['h']} for {names.count('from')} From fields")
    missing = [n for n in DEFAULT_SIGNED if h.count(n) < names.count(n)]
    check(not missing, f"{what}: present but not in h=: {missing} (h={tg['h']})")
    check("dkim-signature" not in h and "received" not in h, f"{what}: h={tg['h']}")
    raw = [v for n, v in c.fields() if n == "dkim-signature"][0]
    long = [ln for ln in (b"DKIM-Signature:" + raw).split(b"\r\n")
            if len(ln.expandtabs(8)) > 78]
    check(not long, f"{what}: DKIM-Signature lines over 78 columns: {long}")
    return tg


def api_ok(x, body, what, d=None):
    """POST /v1/messages (202): the id."""
    r = (d or x.d).api("POST", "/v1/messages", body)
    check(r.status == 202, f"{what}: HTTP {r.status}: {r.body[:300]!r}")
    return r.json()["id"]


def smtp_send(port, mailfrom, rcpts, data):
    """One message with smtplib, bytes as given (CRLF): the 250 text."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test",
                      timeout=30 * SLOW) as s:
        s.ehlo()
        s.mail(mailfrom)
        for r in rcpts:
            code, msg = s.rcpt(r)
            check(code == 250, f"RCPT {r}: {code} {msg!r}")
        code, msg = s.data(data)
        check(code == 250 and b"queued as" in msg, f"end of data: {code} {msg!r}")
        return msg


# ---- one-byte changes -------------------------------------------------------

def flip(b, i):
    """b with the letter at i in the other case: one byte changed."""
    return b[:i] + bytes([b[i] ^ 0x20]) + b[i + 1:]


def alpha_at(b, start):
    m = re.compile(rb"[A-Za-z]").search(b, start)
    check(m, f"no letter after offset {start} in {b[start:start + 200]!r}")
    return m.start()


def flip_body(data):
    i = data.index(b"\r\n\r\n") + 4
    return flip(data, alpha_at(data, i))


def flip_field(data, name):
    """One letter of the first name: field's value in the other case."""
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":", data)
    check(m and m.start() < data.index(b"\r\n\r\n"), f"no {name}: field")
    return flip(data, alpha_at(data, m.end()))


def flip_b(data):
    """One letter of the signature's b= value in the other case."""
    m = re.search(rb"[;\s]b=\s*", data)
    check(m, "no b= tag")
    return flip(data, alpha_at(data, m.end()))


# ---- cases -----------------------------------------------------------------

@cases.add
def api_messages_verify(x):
    t0 = int(time.time())
    att_bin = bytes(range(256)) * 240  # 60 KB: the canonicaliser's batches fill
    msgs = {
        "text": {"from": f"App <app@{ORIGIN}>", "subject": "plain text",
                 "text": "Hello,\nthis is   plain text.\n"},
        "html": {"from": f"app@{ORIGIN}", "subject": "html only",
                 "html": "<html><body><p>Hello <b>there</b></p></body></html>\n"},
        "alt": {"from": f"app@{ORIGIN}", "subject": "both", "text": "Text part\n",
                "html": "<p>HTML part</p>\n",
                "headers": {"Reply-To": "Support <support@origin.test>", "X-Campaign": "c1"}},
        "att": {"from": f"app@{ORIGIN}", "subject": "attachments", "text": "See attached.\n",
                "attachments": [
                    {"filename": "data.bin", "content_type": "application/octet-stream",
                     "content": base64.b64encode(att_bin).decode()},
                    {"filename": "notes.txt", "content_type": "text/plain",
                     "content": base64.b64encode(b"line 1\r\nline 2  \r\n\r\n").decode()}]},
        "utf8": {"from": f"app@{ORIGIN}", "subject": "8-bit body",
                 "text": "Grüße aus Köln — naïve café ☕\nZweite Zeile  \n"},
        "intl": {"from": f"Zoë Müller <app@{ORIGIN}>", "subject": "Ünïcödé 日本語 subject",
                 "text": "headers in RFC 2047\n"},
        "ed": {"from": f"Ed <news@{ED}>", "subject": "ed25519", "text": "signed with Ed25519\n",
               "html": "<p>Ed25519</p>\n"},
    }
    rcpt = {k: f"api-{k}@rx.test" for k in msgs}
    for k, m in msgs.items():
        api_ok(x, dict(m, to=[rcpt[k]]), f"message {k}")
    # One shared body to both receivers, RSA and Ed25519: one signature.
    shared = {}
    for dom, frm in ((ORIGIN, f"app@{ORIGIN}"), (ED, f"news@{ED}")):
        rs = [f"shared-{dom}@rx.test", f"shared-{dom}@rx2.test"]
        api_ok(x, {"from": frm, "to": rs, "subject": "shared body", "text": "Same for all\n"},
               f"shared {dom}")
        shared[dom] = rs
    got = wait_copies(x, list(rcpt.values()) + shared[ORIGIN] + shared[ED])
    copies = {k: got[r] for k, r in rcpt.items()}
    for dom, rs in shared.items():
        for r in rs:
            copies[r] = got[r]
    x.samples.update({"api-text": copies["text"], "api-ed": copies["ed"],
                      "api-att": copies["att"], "api-smtpd": copies[shared[ORIGIN][1]]})
    res = verified(x, copies, "API messages")
    for k, c in copies.items():
        ed = k == "ed" or ED in k
        check_sig(c, k, ED if ed else ORIGIN, "e1" if ed else "s1",
                  "ed25519-sha256" if ed else "rsa-sha256", t0)
        want = f"e1._domainkey.{ED}" if ed else f"s1._domainkey.{ORIGIN}"
        check([q.rstrip(".") for q in res[k]["queried"]] == [want],
              f"{k}: the verifier looked up {res[k]['queried']}, expected {want}")
    for dom, (a, b) in shared.items():
        sa, sb = copies[a].header("DKIM-Signature"), copies[b].header("DKIM-Signature")
        check(sa == sb, f"shared body from {dom}: the copies differ in their signature:\n"
              f"  {copies[a].via}: {sa}\n  {copies[b].via}: {sb}")
        check({copies[a].via, copies[b].via} == {"ringpost-sink", "smtpd"},
              f"shared {dom}: both copies came through {copies[a].via}")
    # The records came from dnsmasq (nothing else could have answered).
    asked = x.dns.queries()
    for name in (f"s1._domainkey.{ORIGIN}", f"e1._domainkey.{ED}"):
        check(("TXT", name) in asked, f"dnsmasq was not asked for TXT {name}: {asked[-5:]}")
    # What was signed is what was asked for.
    p = copies["utf8"].parsed()
    body = p.get_body(("plain",)).get_content()
    check(body.replace("\r\n", "\n") == msgs["utf8"]["text"], f"8-bit body read back: {body!r}")
    raw_subj = copies["intl"].header("Subject")
    check(raw_subj.isascii() and "=?" in raw_subj, f"Subject not RFC 2047: {raw_subj!r}")
    subj = str(email.header.make_header(email.header.decode_header(raw_subj)))
    check(subj == msgs["intl"]["subject"], f"Subject decodes to {subj!r}")
    frm = copies["intl"].header("From")
    check(frm.isascii() and "=?" in frm and f"<app@{ORIGIN}>" in frm, f"From: {frm!r}")
    check(str(email.header.make_header(email.header.decode_header(frm))).startswith("Zoë Müller"),
          f"From decodes to {email.header.decode_header(frm)}")
    atts = {a.get_filename(): a.get_content() for a in copies["att"].parsed().iter_attachments()}
    check(atts.get("data.bin") == att_bin, "data.bin read back differs")


@cases.add
def templated_batch(x):
    t0 = int(time.time())
    pre = "tb"
    m0_to = [{"email": f"{pre}-1@rx.test", "vars": {"name": "Ann", "uid": "u1", "code": 111}},
             {"email": f"{pre}-2@rx2.test", "vars": {"name": "Zoë K", "uid": "u/2&x=y"}},
             {"email": f"{pre}-3@rx.test",
              "vars": {"name": "Bob", "uid": "u3\r\nBcc: evil@attacker.test", "code": "333"}}]
    m0 = {"from": f"News <news@{ORIGIN}>", "to": m0_to, "vars": {"code": "000"},
          "subject": "Hello {{name}}", "text": "Dear {{name}}, your code is {{code}}.\n",
          "html": "<p>Dear {{name}}</p>\n",
          "unsubscribe": {"url": "https://u.test/unsub?u={{uid}}&n={{name}}",
                          "mailto": "unsub+{{uid}}@{{dom}}"}}
    m0["vars"]["dom"] = ORIGIN
    m1 = {"from": f"news@{ED}", "to": [{"email": f"{pre}-ed1@rx.test", "vars": {"n": "one"}},
                                       {"email": f"{pre}-ed2@rx2.test", "vars": {"n": "two"}}],
          "subject": "Ed {{n}}", "text": "number {{n}}\n",
          "unsubscribe": {"url": "https://u.test/ed?n={{n}}"}}
    m2 = {"from": f"news@{ORIGIN}", "to": [f"{pre}-s1@rx.test", f"{pre}-s2@rx2.test"],
          "subject": "no vars", "text": "the same for both\n",
          "unsubscribe": {"url": "https://u.test/all"}}
    m3 = {"from": f"news@{ORIGIN}", "to": [{"email": f"{pre}-long@rx.test",
                                            "vars": {"v": "a" * 950}}],
          "subject": "s", "text": "t\n", "unsubscribe": {"url": "https://u.test/{{v}}"}}
    r = x.d.api("POST", "/v1/messages/batch", {"messages": [m0, m1, m3, m2]})
    check(r.status == 202, f"batch: HTTP {r.status}: {r.body[:300]!r}")
    res = r.json()["results"]
    check(len(res) == 4 and all(res[i].get("id") for i in (0, 1, 3)),
          f"batch results: {res}")
    err = res[2].get("error") or {}
    check(err.get("code") == "bad_field" and "unsubscribe.url" in err.get("message", "")
          and not res[2].get("id"), f"the entry with a 950-byte var: {res[2]}")
    rcpts = [t["email"] for t in m0_to] + [t["email"] for t in m1["to"]] + m2["to"]
    got = wait_copies(x, rcpts)
    x.samples["tb-smtpd"] = got[f"{pre}-2@rx2.test"]
    verified(x, got, "templated batch")
    sigs = {}
    for rc, c in got.items():
        ed = "-ed" in rc
        tg = check_sig(c, rc, ED if ed else ORIGIN, "e1" if ed else "s1",
                       "ed25519-sha256" if ed else "rsa-sha256", t0)
        sigs[rc] = tg["b"]
        h = tg["h"].lower().split(":")
        check("list-unsubscribe" in h and "list-unsubscribe-post" in h, f"{rc}: h={tg['h']}")
    q = lambda v: urllib.parse.quote(str(v), safe="")  # noqa: E731 - RFC 3986 unreserved kept
    for t in m0_to:
        c, v = got[t["email"]], t["vars"]
        code = v.get("code", "000")
        want = (f"<https://u.test/unsub?u={q(v['uid'])}&n={q(v['name'])}>, "
                f"<mailto:unsub+{q(v['uid'])}@{q(ORIGIN)}>")
        check(c.header("List-Unsubscribe") == want,
              f"{t['email']}: List-Unsubscribe {c.header('List-Unsubscribe')!r}, want {want!r}")
        check(c.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click",
              f"{t['email']}: List-Unsubscribe-Post {c.header('List-Unsubscribe-Post')!r}")
        p = c.parsed()
        check(str(p["Subject"]) == f"Hello {v['name']}", f"{t['email']}: Subject {p['Subject']}")
        body = p.get_body(("plain",)).get_content()
        check(f"Dear {v['name']}, your code is {code}." in body, f"{t['email']}: {body!r}")
        check("bcc" not in c.names(), f"{t['email']}: a var made a Bcc: field")
    for t in m1["to"]:
        want = f"<https://u.test/ed?n={t['vars']['n']}>"
        check(got[t["email"]].header("List-Unsubscribe") == want,
              f"{t['email']}: {got[t['email']].header('List-Unsubscribe')!r}")
    personal = [t["email"] for t in m0_to + m1["to"]]
    check(len({sigs[r] for r in personal}) == len(personal),
          "personalised copies share a signature")
    a, b = m2["to"]
    check(got[a].header("DKIM-Signature") == got[b].header("DKIM-Signature"),
          "the untemplated message: the copies differ in their signature")


def raw_msg(frm, to, tid, extra_head=b"", body=b"body\r\n", from_name="From"):
    return (f"{from_name}: {frm}\r\nTo: {to}\r\nX-Test-Id: {tid}\r\n".encode() + extra_head +
            b"\r\n" + body)


@cases.add
def smtp_raw_verify(x):
    t0 = int(time.time())
    frm = f"\"Raw Sender\" <raw@{ORIGIN}>"
    folded = (b"From: \"Raw Sender\"\r\n <raw@origin.test>\r\n"
              b"To:\r\n  \"Some One\" <smtp-fold@rx.test>\r\n"
              b"Subject: a folded\r\n\tsubject   with  runs of   blanks   \r\n"
              b"X-Test-Id: smtp-fold\r\n"
              b"Cc: one@rx.test\r\n"
              b"Reply-To:  <reply@origin.test>  \r\n"
              b"References:\r\n <a@origin.test>\r\n\t<b@origin.test>\r\n"
              b"Cc: two@rx.test\r\n"
              b"Content-Type: text/plain;\r\n charset=\"us-ascii\"\r\n"
              b"\r\n"
              b"body line with trailing blanks   \r\n"
              b"tabs\tand  double  blanks\t \r\n"
              b".a line starting with a dot\r\n"
              b"..two dots\r\n"
              b".\r\n"
              b"\r\n"
              b"   \r\n"
              b"last line\r\n"
              b"\r\n\r\n\r\n")
    sends = {
        "smtp-fold@rx.test": folded,
        "smtp-fold@rx2.test": folded.replace(b"smtp-fold@rx.test", b"smtp-fold@rx2.test"),
        "smtp-empty@rx.test": raw_msg(frm, "smtp-empty@rx.test", "smtp-empty", body=b""),
        "smtp-blank@rx2.test": raw_msg(frm, "smtp-blank@rx2.test", "smtp-blank",
                                       body=b"\r\n \t\r\n\r\n"),
        # bare LF and CR (ringpost makes them CRLF before signing)
        "smtp-bare@rx.test": raw_msg(frm, "smtp-bare@rx.test", "smtp-bare",
                                     body=b"one\ntwo\rthree  \r\n"),
        # no blank line: all header, no body
        "smtp-nosep@rx.test": raw_msg(frm, "smtp-nosep@rx.test", "smtp-nosep", body=b"")[:-2],
        # 280 KB of lines with blanks: many canonicaliser batches
        "smtp-big@rx2.test": raw_msg(frm, "smtp-big@rx2.test", "smtp-big", body=b"".join(
            b"line %d  with\t blanks \t \r\n" % i for i in range(10000))),
    }
    for rc, data in sends.items():
        smtp_send(x.d.port, f"raw@{ORIGIN}", [rc], data)
    # swaks: the file has LF line ends; swaks sends CRLF and the final dot.
    f = x.env.dir / "swaks.eml"
    f.write_bytes(b"From: raw@origin.test\nTo: swaks@rx.test\nSubject: sent\n  with swaks,\n"
                  b"\tfolded twice\nX-Test-Id: swaks\n\nswaks body  \n\n  indented\n\n\n\n")
    p = run(["swaks", "--server", "127.0.0.1", "--port", x.d.port, "--ehlo", "client.test",
             "--from", f"raw@{ORIGIN}", "--to", "swaks@rx.test", "--data", f"@{f}"])
    out = text(p.stdout)
    check(p.returncode == 0 and re.search(r"(?m)^<[~-]  250 2\.0\.0 Ok: queued as ", out),
          f"swaks: exit {p.returncode}: {out[-600:]}")
    # The API's raw field: LF-only line ends, an 8-bit Subject.
    api_ok(x, {"from": f"app@{ORIGIN}", "to": ["raw-lf@rx.test"],
               "raw": "From: App <app@origin.test>\nTo: raw-lf@rx.test\nSubject: LF\n only\n"
                      "X-Test-Id: raw-lf\n\nline one  \nline two\n\n\n"}, "raw LF")
    api_ok(x, {"from": f"app@{ORIGIN}", "to": ["raw-8bit@rx2.test"],
               "raw": "From: Jürgen <app@origin.test>\r\nTo: raw-8bit@rx2.test\r\n"
                      "Subject: Grüße, 8-bit in the header\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n"}, "raw 8-bit")
    for rc in ("raw-noeol@rx.test", "raw-noeol@rx2.test"):  # BDAT and DATA
        api_ok(x, {"from": f"app@{ORIGIN}", "to": [rc],
                   "raw": f"From: app@origin.test\r\nTo: {rc}\r\n\r\nno line end"}, rc)
    rcpts = list(sends) + ["swaks@rx.test", "raw-lf@rx.test", "raw-8bit@rx2.test",
                           "raw-noeol@rx.test", "raw-noeol@rx2.test"]
    got = wait_copies(x, rcpts)
    x.samples["smtp-fold"] = got["smtp-fold@rx.test"]
    x.samples["smtp-fold-smtpd"] = got["smtp-fold@rx2.test"]
    verified(x, got, "raw submissions")
    for rc, c in got.items():
        tg = check_sig(c, rc, ORIGIN, "s1", "rsa-sha256", t0)
        if rc.startswith("smtp-") or rc.startswith("swaks"):
            h = tg["h"].lower().split(":")
            for n in ("date", "message-id"):
                check(c.names().count(n) == 1 and n in h,
                      f"{rc}: {n} added by ringpost: {c.names().count(n)} field(s), h={tg['h']}")
    fold = got["smtp-fold@rx.test"]
    for want in (b"body line with trailing blanks   \r\n", b"tabs\tand  double  blanks\t \r\n",
                 b"\r\n.a line starting with a dot\r\n..two dots\r\n.\r\n",
                 b"Subject: a folded\r\n\tsubject   with  runs of   blanks   \r\n"):
        for c in (fold, got["smtp-fold@rx2.test"]):
            check(want in c.data, f"{c.via}: {want!r} did not arrive as sent: "
                  f"{c.data[-400:]!r}")
    check(fold.data.endswith(b"last line\r\n\r\n\r\n\r\n"),
          f"trailing blank lines: {fold.data[-60:]!r}")
    check(b"\r\n\r\none\r\ntwo\r\nthree  \r\n" in got["smtp-bare@rx.test"].data,
          f"bare LF and CR: {got['smtp-bare@rx.test'].data[-60:]!r}")
    big = sends["smtp-big@rx2.test"]
    check(got["smtp-big@rx2.test"].data.endswith(big[big.index(b"\r\n\r\n"):]),
          "the big message did not arrive as sent")
    check(got["smtp-empty@rx.test"].head_body()[1] == b"",
          f"empty body: {got['smtp-empty@rx.test'].head_body()[1]!r}")
    check(b"line one  \r\nline two\r\n" in got["raw-lf@rx.test"].data,
          f"LF-only raw: {got['raw-lf@rx.test'].data[-200:]!r}")
    check("Grüße, 8-bit".encode() in got["raw-8bit@rx2.test"].data, "8-bit Subject changed")
    check(got["swaks@rx.test"].header("Subject") == "sent  with swaks,\tfolded twice",
          f"swaks Subject: {got['swaks@rx.test'].header('Subject')!r}")


@cases.add
def unsigned_and_from_domains(x):
    t0 = int(time.time())
    unsigned = {"nokey-api@rx.test": "app@nokey.test", "sub-api@rx.test": f"app@sub.{ORIGIN}",
                "suffix-api@rx.test": f"app@not{ORIGIN}"}
    signed = {"upper@rx.test": f"App <APP@{ORIGIN.upper()}>",
              "quoted@rx.test": f"\"Help <help@nokey.test>\" <app@{ORIGIN}>",
              "comment@rx.test": f"app@{ORIGIN} (App <nobody>)",
              "comment-at@rx.test": f"app@{ORIGIN} (ask x@nokey.test)"}
    for rc, frm in unsigned.items():
        api_ok(x, {"from": frm, "to": [rc], "subject": "no key", "text": "plain\n"}, rc)
    smtp_send(x.d.port, "app@nokey.test", ["nokey-smtp@rx2.test"],
              raw_msg("app@nokey.test", "nokey-smtp@rx2.test", "nokey-smtp"))
    smtp_send(x.d.port, f"app@sub.{ORIGIN}", ["sub-smtp@rx.test"],
              raw_msg(f"App <app@sub.{ORIGIN}>", "sub-smtp@rx.test", "sub-smtp"))
    # The From: address is at nokey.test; a signing domain in a comment.
    smtp_send(x.d.port, "app@nokey.test", ["nokey-comment@rx.test"],
              raw_msg(f"app@nokey.test (sent via x@{ORIGIN} )", "nokey-comment@rx.test", "nc"))
    for rc, frm in signed.items():
        smtp_send(x.d.port, f"app@{ORIGIN}", [rc], raw_msg(frm, rc, rc))
    smtp_send(x.d.port, f"app@{ORIGIN}", ["lower-name@rx.test"],
              raw_msg(f"app@{ORIGIN}", "lower-name@rx.test", "lower", from_name="from"))
    signed["lower-name@rx.test"] = f"app@{ORIGIN} (in a from: field)"
    signed["quoted-api@rx.test"] = f"\"Help <help@nokey.test>\" <app@{ORIGIN}> (API)"
    api_ok(x, {"from": f"\"Help <help@nokey.test>\" <app@{ORIGIN}>", "to": ["quoted-api@rx.test"],
               "subject": "quoted", "text": "plain\n"}, "API From with a quoted name")
    no = list(unsigned) + ["nokey-smtp@rx2.test", "sub-smtp@rx.test", "nokey-comment@rx.test"]
    got = wait_copies(x, no + list(signed))
    fails = []
    for rc in no:
        for tg in got[rc].sigs():
            fails.append(f"From: {got[rc].header('From')} is signed (d={tg.get('d')})")
    for rc in signed:
        if not got[rc].sigs():
            fails.append(f"From: {signed[rc]} is not signed")
            continue
        try:
            check_sig(got[rc], f"From: {signed[rc]}", ORIGIN, "s1", "rsa-sha256", t0)
        except TestFailure as e:
            fails.append(str(e))
    check(not fails, "; ".join(fails))
    verified(x, {rc: got[rc] for rc in signed}, "From: variants")


@cases.add
def unsubscribe(x):
    t0 = int(time.time())
    base = {"from": f"app@{ORIGIN}", "subject": "unsubscribe", "text": "list mail\n"}
    api_ok(x, dict(base, to=["unsub-both@rx.test"],
                   unsubscribe={"url": "https://u.test/one-click?list=7",
                                "mailto": "unsub@origin.test?subject=unsubscribe"}), "both")
    api_ok(x, dict(base, to=["unsub-mailto@rx2.test"],
                   unsubscribe={"mailto": "mailto:stop@origin.test"}), "mailto")
    api_ok(x, {"from": f"app@{ORIGIN}", "to": ["unsub-raw@rx.test"],
               "raw": "From: app@origin.test\r\nTo: unsub-raw@rx.test\r\nSubject: raw\r\n"
                      "\r\nhi\r\n",
               "unsubscribe": {"url": "https://u.test/raw", "mailto": "r@origin.test"}}, "raw")

    # Bad input: 400 bad_field naming the field; nothing of it is sent.
    raw = "From: app@origin.test\r\nTo: bad@rx.test\r\nSubject: raw\r\n\r\nhi\r\n"
    lu = "List-Unsubscribe: <mailto:x@origin.test>"
    bad = [
        ({"url": "http://u.test/x"}, "unsubscribe.url"),
        ({"url": "https://u.test/a b"}, "unsubscribe.url"),
        ({"url": "https://u.test/x\r\nBcc: evil@attacker.test"}, "unsubscribe.url"),
        ({"url": "https://u.test/caf\u00e9"}, "unsubscribe.url"),
        ({"url": ""}, "unsubscribe.url"),
        ({"url": "   "}, "unsubscribe.url"),
        ({"url": 5}, "unsubscribe.url"),
        ({"url": "https://u.test/" + "a" * 1000}, "unsubscribe.url"),
        ({"mailto": "un sub@origin.test"}, "unsubscribe.mailto"),
        ({"mailto": "x@origin.test>, <https://evil.test"}, "unsubscribe.mailto"),
        ({"mailto": "d\u00e9sabonner@origin.test"}, "unsubscribe.mailto"),
        ({"mailto": ""}, "unsubscribe.mailto"),
        ({"url": "https://u.test/x", "fax": "1"}, "fax"),
        ({}, "unsubscribe"),
        ("https://u.test/x", "unsubscribe"),
    ]
    reqs = [(f"unsubscribe={u!r}", dict(base, unsubscribe=u), w) for u, w in bad]
    reqs += [
        ("rendered too long", dict(base, vars={"v": "b" * 950},
                                   unsubscribe={"url": "https://u.test/{{v}}"}),
         "unsubscribe.url"),
        ("rendered non-ASCII mailto", dict(base, vars={"v": "x"},
                                           unsubscribe={"mailto": "st\u00f6p+{{v}}@origin.test"}),
         "unsubscribe.mailto"),
        ("headers.List-Unsubscribe", dict(base, headers={"List-Unsubscribe": "<mailto:x@o.test>"},
                                          unsubscribe={"url": "https://u.test/x"}),
         "headers.List-Unsubscribe"),
        ("headers.List-Unsubscribe-Post",
         dict(base, headers={"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
              unsubscribe={"mailto": "x@origin.test"}), "headers.List-Unsubscribe-Post"),
        ("raw with vars", {"from": f"app@{ORIGIN}", "raw": raw,
                           "unsubscribe": {"url": "https://u.test/{{id}}"}}, "unsubscribe"),
        ("raw with List-Unsubscribe", {"from": f"app@{ORIGIN}",
                                       "raw": raw.replace("\r\n\r\n", f"\r\n{lu}\r\n\r\n"),
                                       "unsubscribe": {"url": "https://u.test/x"}},
         "List-Unsubscribe"),
        ("raw (LF) with List-Unsubscribe",
         {"from": f"app@{ORIGIN}",
          "raw": raw.replace("\r\n\r\n", f"\r\n{lu}\r\n\r\n").replace("\r\n", "\n"),
          "unsubscribe": {"url": "https://u.test/x"}}, "List-Unsubscribe"),
    ]
    fails = []
    for i, (what, body, word) in enumerate(reqs):
        body = dict(body, to=[f"unsub-bad-{i}@rx.test"])
        r = x.d.api("POST", "/v1/messages", body)
        code, msg = r.error() if r.status == 400 else (None, "")
        if r.status != 400 or code != "bad_field" or word not in msg:
            fails.append(f"{what}: HTTP {r.status} {r.body[:200]!r}, expected 400 bad_field "
                         f"naming {word!r}")
    check(not fails, f"{len(fails)} of {len(reqs)} bad inputs: " + "; ".join(fails))

    got = wait_copies(x, ["unsub-both@rx.test", "unsub-mailto@rx2.test", "unsub-raw@rx.test"])
    x.samples["unsub-both"] = got["unsub-both@rx.test"]
    verified(x, got, "unsubscribe")
    want = {"unsub-both@rx.test": ("<https://u.test/one-click?list=7>, "
                                   "<mailto:unsub@origin.test?subject=unsubscribe>", True),
            "unsub-mailto@rx2.test": ("<mailto:stop@origin.test>", False),
            "unsub-raw@rx.test": ("<https://u.test/raw>, <mailto:r@origin.test>", True)}
    for rc, (lu_want, post) in want.items():
        c = got[rc]
        tg = check_sig(c, rc, ORIGIN, "s1", "rsa-sha256", t0)
        h = tg["h"].lower().split(":")
        check(c.header("List-Unsubscribe") == lu_want and c.names().count("list-unsubscribe") == 1,
              f"{rc}: List-Unsubscribe {c.header('List-Unsubscribe')!r} "
              f"({c.names().count('list-unsubscribe')} fields), want {lu_want!r}")
        check("list-unsubscribe" in h, f"{rc}: List-Unsubscribe not in h={tg['h']}")
        if post:
            check(c.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
                  and "list-unsubscribe-post" in h,
                  f"{rc}: List-Unsubscribe-Post {c.header('List-Unsubscribe-Post')!r}, "
                  f"h={tg['h']}")
        else:
            check("list-unsubscribe-post" not in c.names(),
                  f"{rc}: List-Unsubscribe-Post without a URL")
    # The refused ones never reach a receiver (they came before the good ones).
    stray = [r for c in all_copies(x) for r in c.rcpts if r.startswith("unsub-bad-")]
    check(not stray, f"refused messages were delivered to {stray}")


@cases.add
def one_byte_changes(x):
    check(x.samples, "no copies from the earlier cases")
    bad, good = [], []
    for k, c in x.samples.items():
        d = c.data
        bad += [(f"{k} body", flip_body(d), "body hash mismatch"),
                (f"{k} Subject", flip_field(d, "Subject"), None),
                (f"{k} From", flip_field(d, "From"), None),
                (f"{k} b=", flip_b(d), None),
                (f"{k} From added", b"From: x@attacker.test\r\n" + d, None)]
        if c.header("To"):
            bad.append((f"{k} To", flip_field(d, "To"), None))
        if c.header("List-Unsubscribe"):
            bad += [(f"{k} List-Unsubscribe", flip_field(d, "List-Unsubscribe"), None),
                    (f"{k} List-Unsubscribe-Post", flip_field(d, "List-Unsubscribe-Post"),
                     None)]
        head, body = c.head_body()
        good += [(f"{k} as received", d),
                 (f"{k} body blanks", head + b"\r\n" +
                  body.replace(b"\r\n", b" \t \r\n", 1) + b"\r\n\r\n"),
                 (f"{k} Subject refolded", re.sub(rb"(?im)^subject:[ \t]*", b"SUBJECT:\r\n\t ",
                                                  d, count=1)),
                 (f"{k} From name case", re.sub(rb"(?im)^from:", b"FROM:", d, count=1)),
                 (f"{k} Received changed", flip_field(d, "Received"))]
    res = verify(x, [(k, d) for k, d, _ in bad] + good)
    fails = []
    for r, (label, _, why) in zip(res, bad):
        if r["ok"]:
            fails.append(f"{label}: still verifies")
        elif why and why not in r["why"]:
            fails.append(f"{label}: fails for another reason: {r['why']}")
        elif not why and "body hash" in r["why"]:
            fails.append(f"{label}: a header change taken for a body change: {r['why']}")
    for r in res[len(bad):]:
        if not r["ok"]:
            fails.append(f"{r['label']}: should still verify: {r['why']}")
    check(not fails, "; ".join(fails))
    check(len(bad) >= 30, f"only {len(bad)} changed copies")


def dkim_stats(x):
    r = x.d.api("GET", "/v1/stats")
    check(r.status == 200, f"GET /v1/stats: HTTP {r.status}")
    st = r.json().get("dkim")
    check(isinstance(st, dict) and set(st) >= {"signed", "no_key", "failed", "sign_cpu_seconds"},
          f"/v1/stats dkim: {st}")
    return st


def dkim_metrics(x):
    r = x.d.api("GET", "/metrics")
    check(r.status == 200, f"GET /metrics: HTTP {r.status}")
    out = {}
    for line in text(r.body).splitlines():
        m = re.match(r'^ringpost_dkim_signatures_total\{result="(\w+)"\} (\d+)$', line)
        if m:
            out[m.group(1)] = int(m.group(2))
        m = re.match(r"^ringpost_dkim_sign_cpu_seconds_total ([0-9.eE+-]+)$", line)
        if m:
            out["cpu"] = float(m.group(1))
    check(set(out) == {"signed", "no_key", "failed", "cpu"}, f"/metrics dkim lines: {out}")
    return out


@cases.add
def stats_and_metrics(x):
    s0, m0 = dkim_stats(x), dkim_metrics(x)
    body = {"from": f"app@{ORIGIN}", "subject": "stats", "text": "x\n"}
    # shared: +1; templated to 3: +3; Ed25519 shared to 2: +1; SMTP: +1
    api_ok(x, dict(body, to=["st-1@rx.test", "st-2@rx2.test"]), "shared")
    api_ok(x, dict(body, subject="for {{n}}", to=[{"email": f"st-v{i}@rx.test",
                                                     "vars": {"n": str(i)}} for i in range(3)]),
           "templated")
    api_ok(x, dict(body, **{"from": f"news@{ED}"}, to=["st-ed1@rx.test", "st-ed2@rx.test"]),
           "ed25519")
    smtp_send(x.d.port, f"app@{ORIGIN}", ["st-smtp@rx.test"],
              raw_msg(f"app@{ORIGIN}", "st-smtp@rx.test", "st-smtp"))
    # no key: +1 each (API, SMTP); refused requests count nothing.
    api_ok(x, dict(body, **{"from": "app@nokey.test"}, to=["st-nokey@rx.test"]), "no key")
    smtp_send(x.d.port, "app@nokey.test", ["st-nokey2@rx.test"],
              raw_msg("app@nokey.test", "st-nokey2@rx.test", "st-nokey2"))
    r = x.d.api("POST", "/v1/messages", dict(body, to=["st-bad@rx.test"],
                                              unsubscribe={"url": "http://no"}))
    check(r.status == 400, f"bad unsubscribe: HTTP {r.status}")
    s1, m1 = dkim_stats(x), dkim_metrics(x)
    delta = {k: s1[k] - s0[k] for k in ("signed", "no_key", "failed")}
    check(delta == {"signed": 6, "no_key": 2, "failed": 0},
          f"/v1/stats dkim moved by {delta}, expected signed +6, no_key +2, failed +0 "
          f"({s0} -> {s1})")
    check(s1["sign_cpu_seconds"] > s0["sign_cpu_seconds"],
          f"sign_cpu_seconds {s0['sign_cpu_seconds']} -> {s1['sign_cpu_seconds']}")
    mdelta = {k: m1[k] - m0[k] for k in ("signed", "no_key", "failed")}
    check(mdelta == delta, f"/metrics moved by {mdelta}, /v1/stats by {delta}")
    same = {k: (s1[k], m1[k]) for k in ("signed", "no_key", "failed") if s1[k] != m1[k]}
    check(not same, f"/v1/stats and /metrics disagree: {same}")
    check(abs(m1["cpu"] - s1["sign_cpu_seconds"]) < 0.01 and m1["cpu"] > m0["cpu"],
          f"cpu seconds: /metrics {m0['cpu']} -> {m1['cpu']}, /v1/stats {s1['sign_cpu_seconds']}")
    check(s1["signed"] >= 20, f"only {s1['signed']} signatures counted in all")
    wait_copies(x, ["st-1@rx.test", "st-2@rx2.test", "st-v0@rx.test", "st-v1@rx.test",
                    "st-v2@rx.test", "st-ed1@rx.test", "st-ed2@rx.test", "st-smtp@rx.test",
                    "st-nokey@rx.test", "st-nokey2@rx.test"])


def conf_with_dkim(x, sections):
    """A config (in the test directory) with [dkim] sections [(domain,
    [(key, value)])] after the usual ones: (path, text, {domain: (section
    line, key line)})."""
    x.nconf += 1
    head = config_text(submission_port=free_port(), routes={"rx.test": x.sink_addr},
                       data_dir=str(x.env.dir / f"bad-spool-{x.nconf}"))
    lines = head.rstrip("\n").split("\n") + [DKIM_MARK]
    where = {}
    for dom, kv in sections:
        lines.append(f"[dkim {dom}]")
        sec = len(lines)
        keyline = None
        for k, v in kv:
            lines.append(f"{k} = {v}")
            if k == "key":
                keyline = len(lines)
        where[dom] = (sec, keyline)
    path = x.env.dir / f"dkim-{x.nconf}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path, where


@cases.add
def bad_keys_at_start(x):
    k = x.keys
    garbage = x.env.dir / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    variants = [("missing", [("selector", "s1"), ("key", x.env.dir / "no-such.pem")], "key"),
                ("garbage", [("selector", "s1"), ("key", garbage)], "key"),
                ("EC", [("selector", "s1"), ("key", k["ec"])], "key"),
                ("encrypted", [("selector", "s1"), ("key", k["enc"])], "key"),
                ("no selector", [("key", k["rsa2048"])], "selector")]
    fails = []
    for what, kv, word in variants:
        path, where = conf_with_dkim(x, [(ORIGIN, [("selector", "s1"), ("key", k["rsa2048"])]),
                                         ("bad.test", kv)])
        sec, keyline = where["bad.test"]
        lines = {f"{path}:{n}:" for n in (sec, keyline) if n}
        for cmd in ("serve", "check-config"):
            p = run([ringpost_bin(), cmd, "-c", path], timeout=20)
            err = text(p.stderr).strip()
            first = err.splitlines()[0] if err else ""
            where_ok = any(first.startswith(pre) or f" {pre}" in first for pre in lines)
            if (p.returncode != EX_CONFIG or not where_ok or "[dkim bad.test]" not in first
                    or word not in first or len(err.splitlines()) != 1):
                fails.append(f"{what} key, {cmd}: exit {p.returncode}, stderr {err!r} "
                             f"(expected {EX_CONFIG} and one line at {sorted(lines)} naming "
                             f"[dkim bad.test] and {word})")
        if what == "missing" and str(x.env.dir / "no-such.pem") not in err:
            fails.append(f"missing key: the path is not named: {err!r}")
    check(not fails, "; ".join(fails))

    # Weak keys: RSA-512 warns (stderr, FILE:LINE), RSA-1024 does not.
    path, where = conf_with_dkim(x, [("weak.test", [("selector", "w"), ("key", k["rsa512"])]),
                                     ("ok.test", [("selector", "k"), ("key", k["rsa1024"])]),
                                     (ED, [("selector", "e1"), ("key", k["ed25519"])])])
    p = run([ringpost_bin(), "check-config", "-c", path])
    err = text(p.stderr)
    sec, keyline = where["weak.test"]
    check(p.returncode == 0 and f"{path}: ok" in text(p.stdout),
          f"check-config with an RSA-512 key: exit {p.returncode} {text(p.stdout)!r} {err!r}")
    check(re.search(rf"(?m)^{re.escape(str(path))}:({sec}|{keyline}): \[dkim weak\.test\] .*"
                    rf"RSA-512", err), f"check-config: no RSA-512 warning with FILE:LINE: {err!r}")
    check("ok.test" not in err and ED not in err and len(err.strip().splitlines()) == 1,
          f"check-config warns about more than the RSA-512 key: {err!r}")


def rot_dkim(x, selector=None, key=None):
    """The rot daemon's [dkim] sections: weak.test (RSA-512) and, when
    given, origin.test with this selector and key."""
    out = [DKIM_MARK, "[dkim weak.test]", "selector = w1", f"key = {x.keys['rsa512']}"]
    if selector:
        out += [f"[dkim {ORIGIN}]", f"selector = {selector}", f"key = {key}"]
    return "\n".join(out) + "\n"


def rot_reconfigure(x, selector=None, key=None, expect="configuration reloaded"):
    """Rewrite rot's [dkim] sections, SIGHUP, wait for the log line. The
    shards take the new generation in their next loop turn: give them it."""
    path = x.rot.config_path
    head = open(path).read().split(DKIM_MARK)[0]
    with open(path, "w") as f:
        f.write(head + rot_dkim(x, selector, key))
    n = x.rot.log().count(expect)
    x.rot.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: x.rot.log().count(expect) > n, 10, f"'{expect}' after SIGHUP")
    time.sleep(0.3 * SLOW)
    return head.count("\n") + 1  # the line of DKIM_MARK


def rot_send(x, tag):
    rc = f"rot-{tag}@rx.test"
    api_ok(x, {"from": f"app@{ORIGIN}", "to": [rc], "subject": f"rotation {tag}",
               "text": f"{tag}\n"}, tag, d=x.rot)
    return copy_for(x, rc)


@cases.add
def sighup_key_rotation(x):
    warn = [line for line in x.rot.log().splitlines() if "[dkim weak.test]" in line]
    check(warn and "RSA-512" in warn[0] and f"{x.rot.config_path}:" in warn[0],
          f"rot's log does not warn about its RSA-512 key: {warn}")
    t0 = int(time.time())
    # The RSA-512 key signs; dkimpy accepts it only below its default minimum.
    api_ok(x, {"from": "app@weak.test", "to": ["rot-weak@rx.test"], "subject": "weak",
               "text": "RSA-512\n"}, "weak", d=x.rot)
    cw = copy_for(x, "rot-weak@rx.test")
    check_sig(cw, "weak.test", "weak.test", "w1", "rsa-sha256", t0)
    small, default = verify(x, [("weak", cw.data)], minkey=512) + verify(x, [("weak", cw.data)])
    check(small["ok"] and not default["ok"] and "too small" in default["why"],
          f"RSA-512 signature: minkey 512 {small}, default {default}")
    c1 = rot_send(x, "s1")
    check_sig(c1, "before the reload", ORIGIN, "s1", "rsa-sha256", t0)
    rot_reconfigure(x, "s2", x.keys["rsa2048-new"])
    c2 = rot_send(x, "s2")
    check_sig(c2, "after the reload to s2", ORIGIN, "s2", "rsa-sha256", t0)
    smtp_send(x.rot.port, f"app@{ORIGIN}", ["rot-smtp@rx.test"],
              raw_msg(f"app@{ORIGIN}", "rot-smtp@rx.test", "rot-smtp"))
    c2s = copy_for(x, "rot-smtp@rx.test")
    check_sig(c2s, "SMTP after the reload to s2", ORIGIN, "s2", "rsa-sha256", t0)
    res = verified(x, {"s1": c1, "s2": c2, "s2 smtp": c2s}, "key rotation")
    check([q.rstrip(".") for q in res["s2"]["queried"]] == [f"s2._domainkey.{ORIGIN}"],
          f"s2 verified with {res['s2']['queried']}")
    # The s2 signature is the new key's: a resolver that serves s1's
    # record under s2's name makes it fail.
    check(not verify(x, [("s2 with the old key's record", c2.data)], dns=x.dns_old)[0]["ok"],
          "a signature by the new key verifies with the old key's record")

    # A broken key on reload: the running keys stay.
    garbage = x.env.dir / "rot-garbage.pem"
    garbage.write_text("garbage\n")
    mark = rot_reconfigure(x, "s3", garbage, expect="reload failed")
    line = [ln for ln in x.rot.log().splitlines() if "reload failed" in ln][-1]
    check(re.search(rf"{re.escape(x.rot.config_path)}:({mark + 4}|{mark + 6}): "
                    rf"\[dkim {re.escape(ORIGIN)}\] key: ", line)
          and "error" in line.lower().split("reload failed")[0],
          f"reload with a garbage key: log line {line!r} (expected an error naming "
          f"{x.rot.config_path}:{mark + 4} [dkim {ORIGIN}] key:)")
    c3 = rot_send(x, "after-bad")
    check_sig(c3, "after the failed reload", ORIGIN, "s2", "rsa-sha256", t0)
    verified(x, {"after-bad": c3}, "after the failed reload")
    # Without the section: unsigned.
    rot_reconfigure(x)
    c4 = rot_send(x, "none")
    check("dkim-signature" not in c4.names(), f"signed after its [dkim] was removed: {c4.sigs()}")


# ---- main --------------------------------------------------------------------

def make_keys(x):
    kinds = {"rsa2048": "rsa-2048", "rsa2048-new": "rsa-2048", "ed25519": "ed25519",
             "rsa1024": "rsa-1024", "rsa512": "rsa-512", "ec": "ec", "enc": "rsa-enc"}
    kdir = x.env.dir / "keys"
    kdir.mkdir()
    x.keys = {name: genkey(kdir / f"{name}.pem", kind) for name, kind in kinds.items()}
    check(b"ENCRYPTED" in x.keys["enc"].read_bytes(), "the encrypted key is not encrypted")
    # The s1 key again in OpenSSL's traditional form ("BEGIN RSA PRIVATE KEY").
    pkcs1 = kdir / "rsa2048-pkcs1.pem"
    p = run(["openssl", "pkey", "-in", x.keys["rsa2048"], "-traditional", "-out", pkcs1])
    check(p.returncode == 0 and b"BEGIN RSA PRIVATE KEY" in pkcs1.read_bytes(),
          f"openssl pkey -traditional: {text(p.stderr)}")
    x.keys["rsa2048-pkcs1"] = pkcs1


def main():
    for need in (SYSTEM_PYTHON, "/usr/sbin/dnsmasq", "/usr/bin/swaks"):
        check(subprocess.run(["test", "-x", need]).returncode == 0, f"{need} is missing")
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import dkim, nacl"], capture_output=True)
    check(p.returncode == 0, f"{SYSTEM_PYTHON} cannot import dkim and nacl (apt-get install "
          f"python3-dkim python3-nacl; .ci/deps installs them): {text(p.stderr)[-300:]}")
    with TestEnv("dkim") as env:
        x = Ctx()
        x.env, x.samples, x.nfiles, x.nconf = env, {}, 0, 0
        make_keys(x)
        records = {f"s1._domainkey.{ORIGIN}": dkim_record(x.keys["rsa2048"], "rsa"),
                   f"s2._domainkey.{ORIGIN}": dkim_record(x.keys["rsa2048-new"], "rsa"),
                   f"e1._domainkey.{ED}": dkim_record(x.keys["ed25519"], "ed25519"),
                   "w1._domainkey.weak.test": dkim_record(x.keys["rsa512"], "rsa")}
        x.dns = env.dnsmasq([txt_arg(n, r) for n, r in records.items()])
        for n, r in records.items():
            served = dns_txt(x, n)
            check(served == r, f"dnsmasq serves {n} as {served!r}, expected {r!r}")
        check(len(records[f"s1._domainkey.{ORIGIN}"]) > 255, "the RSA record is not split")
        x.dns_old = env.dnsmasq([txt_arg(f"s2._domainkey.{ORIGIN}",
                                         records[f"s1._domainkey.{ORIGIN}"])], name="dns-old")

        x.save_dir = env.dir / "saved"
        sink_port = free_port()
        x.sink_addr = f"127.0.0.1:{sink_port}"
        env.fast_sink("sink", [x.sink_addr], ["--save", str(x.save_dir)])
        x.rx2 = env.smtpd("rx2")
        routes = {"rx.test": x.sink_addr, "rx2.test": x.rx2.addr}
        dkim = (f"[dkim {ORIGIN}]\nselector = s1\nkey = {x.keys['rsa2048']}\n"
                f"[dkim Ed.Test]\nselector = e1\nkey = {x.keys['ed25519']}\n")
        x.d = env.daemon(routes=routes, with_api=True, extra=dkim)
        x.rot = env.daemon(routes=routes, name="rot", with_api=True,
                           extra=rot_dkim(x, "s1", x.keys["rsa2048-pkcs1"]))
        x.d.start()
        x.rot.start()
        failures = run_cases(cases, x, [x.d, x.rot])
        log(f"{x.nfiles} message files through dkim_check")
        for d in (x.d, x.rot):
            bad = [ln for ln in d.log().splitlines() if re.search(r" dkim id=\S+ .*not signed", ln)]
            if bad:
                failures.append(f"{d.log_path.name}: {bad[:3]}")
            stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
