"""test_e2e_integrity.py - 1,000 messages in, 1,000 messages out, byte for byte.

1,000 messages of 1 KB to 1 MB (log-uniform spread, both ends included),
8-bit bodies full of lines that start with '.', each with a unique
X-Test-Id, submitted concurrently through three real clients:
  - Python smtplib (most), one connection per batch of messages;
  - curl --upload-file (one process per message);
  - a raw-socket client that pipelines per RFC 2920: MAIL, the RCPTs and
    DATA in one write, and the content's final dot together with the next
    transaction's MAIL/RCPT/DATA.
Recipients are in three domains:
  a.test -> Python smtpd (no PIPELINING: ringpost talks one command at a time);
  b.test -> Postfix smtp-sink (PIPELINING: ringpost pipelines MAIL/RCPT/DATA);
  c.test -> a second ringpost, which offers CHUNKING (so the first one sends
            BDAT ... LAST) and relays to the same smtpd;
some messages have recipients in all three, some several in one.

Checks: every (message, recipient) arrives exactly once, with the envelope
sender, a body byte-identical to what was sent (SHA-256), the original header
section intact behind what ringpost may prepend (Received:, and Date: /
Message-ID: only when missing), the queue id from the 250 reply in the
Received: header, and nothing bounced.
"""

import concurrent.futures as cf
import hashlib
import math
import random
import re
import smtplib
import subprocess
import threading
import time

from harness import (SLOW, SMTPConn, TestEnv, check, dot_stuff, log, queued_id,
                     run_test, wait_for)

N = 1000
SEED = 20240611
MIN_SIZE, MAX_SIZE = 1024, 1024 * 1024
SENDER = "sender@origin.test"
ALLOWED = bytes(b for b in range(256) if b not in (0, 10, 13))  # no NUL, CR, LF
# Lines that exercise transparency (each ends in CRLF when used).
DOT_LINES = [b".", b"..", b"...", b".hidden", b". leading dot and space", b".\xe9t\xe9 8-bit",
             b".\t", b".x"]


def recipients_of(i):
    """Deterministic recipient list: mostly one, some in both domains, some
    several in one domain."""
    r = random.Random(SEED * 7 + i)
    k = r.random()
    dom = "abc"[i % 3]
    if k < 0.10:
        return [f"rcpt{i}@a.test", f"rcpt{i}@b.test", f"rcpt{i}@c.test"]
    if k < 0.15:
        return [f"rcpt{i}-{j}@{dom}.test" for j in range(3)]
    return [f"rcpt{i}@{dom}.test"]


def size_of(i):
    if i == 0:
        return MIN_SIZE
    if i == 1:
        return MAX_SIZE
    r = random.Random(SEED * 3 + i)
    return int(math.exp(r.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))


def make_message(i, test_id, rcpts):
    r = random.Random(SEED + i)
    head = [f"From: Sender <{SENDER}>", f"To: {', '.join('<%s>' % x for x in rcpts)}",
            f"Subject: e2e message {i}", f"X-Test-Id: {test_id}",
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=iso-8859-1",
            "Content-Transfer-Encoding: 8bit"]
    if i % 2 == 0:  # the other half lacks them: ringpost adds its own
        head.insert(0, f"Date: Tue, 11 Jun 2024 10:{i % 60:02d}:00 +0000")
        head.append(f"Message-ID: <e2e-{test_id}@origin.test>")
    head_b = ("\r\n".join(head) + "\r\n\r\n").encode()
    target = max(size_of(i) - len(head_b), 16)
    lines = [b".first body line starts with a dot"]
    n = len(lines[0]) + 2
    while n < target:
        k = r.random()
        if k < 0.08:
            line = r.choice(DOT_LINES)
        elif k < 0.10:
            line = b""
        else:
            ln = min(r.randint(0, 998), max(target - n - 2, 0))
            line = r.randbytes(ln).translate(TABLE)
            if r.random() < 0.15:
                line = b"." + line[1:]
            if line.startswith(b"."):
                # At most 997: the 998-octet dot line is test_bad_input's
                # boundary case (the stuffed dot must not count).
                line = line[:997]
        lines.append(line)
        n += len(line) + 2
    body = b"\r\n".join(lines) + b"\r\n"
    return head_b + body


# Map every byte onto ALLOWED so bodies carry all 8-bit values but no line
# breaks or NULs of their own.
TABLE = bytes(ALLOWED[b % len(ALLOWED)] for b in range(256))


def lf_parts(msg):
    """(header section, body) of a CRLF message, both with LF line ends."""
    m = msg.replace(b"\r\n", b"\n")
    i = m.index(b"\n\n")
    return m[:i + 1], m[i + 2:]


class Book:
    """What was sent: test id -> (rcpts, body sha, header section, queue id)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}

    def record(self, test_id, rcpts, msg, qid):
        head, body = lf_parts(msg)
        with self.lock:
            check(test_id not in self.sent, f"{test_id} sent twice")
            self.sent[test_id] = (rcpts, hashlib.sha256(body).hexdigest(), head, qid, len(msg))


def job(i):
    return i, f"e2e-{SEED}-{i:04d}", recipients_of(i)


def send_smtplib(port, idxs, book):
    with smtplib.SMTP("127.0.0.1", port, local_hostname="smtplib.client.test",
                      timeout=60 * SLOW) as c:
        c.ehlo()
        for i in idxs:
            _, tid, rcpts = job(i)
            msg = make_message(i, tid, rcpts)
            code, resp = c.mail(SENDER, ["BODY=8BITMIME", f"SIZE={len(msg)}"])
            check(code == 250, f"smtplib MAIL for #{i}: {code} {resp}")
            for rc in rcpts:
                code, resp = c.rcpt(rc)
                check(code == 250, f"smtplib RCPT {rc}: {code} {resp}")
            code, resp = c.data(msg)
            check(code == 250, f"smtplib DATA for #{i}: {code} {resp}")
            book.record(tid, rcpts, msg, queued_id([f"{code} {resp.decode()}"]))


def send_curl(port, i, book, workdir):
    _, tid, rcpts = job(i)
    msg = make_message(i, tid, rcpts)
    path = workdir / f"curl-{i}.eml"
    path.write_bytes(msg)
    argv = ["curl", "-sS", "-v", "--max-time", str(int(60 * SLOW)),
            f"smtp://127.0.0.1:{port}/curl.client.test", "--mail-from", SENDER]
    for rc in rcpts:
        argv += ["--mail-rcpt", rc]
    argv += ["--upload-file", str(path)]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=90 * SLOW)
    err = p.stderr.decode("utf-8", "replace")
    check(p.returncode == 0, f"curl for #{i} exited {p.returncode}: {err[-800:]}")
    qids = [ln[2:].strip() for ln in err.splitlines() if ln.startswith("< 250 2.0.0 Ok: queued as")]
    check(len(qids) == 1, f"curl for #{i}: no single queued reply in:\n{err[-800:]}")
    book.record(tid, rcpts, msg, queued_id(qids))
    path.unlink()


def send_pipelined(port, idxs, book):
    """RFC 2920: the envelope in one write; the final dot shares a write
    with the next envelope."""
    with SMTPConn(port, timeout=60) as c:
        c.expect(220, "banner")
        caps = c.ehlo("pipe.client.test")
        check("PIPELINING" in caps, f"EHLO does not offer PIPELINING: {caps}")
        check("8BITMIME" in caps, f"EHLO does not offer 8BITMIME: {caps}")
        pending = b""  # the previous transaction's content, sent with this envelope
        prev = None
        for i in list(idxs) + [None]:
            if i is None:
                c.send(pending + b"QUIT\r\n")
            else:
                _, tid, rcpts = job(i)
                msg = make_message(i, tid, rcpts)
                env = f"MAIL FROM:<{SENDER}> BODY=8BITMIME SIZE={len(msg)}\r\n"
                env += "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n"
                c.send(pending + env.encode())
            if prev is not None:
                pi, ptid, prcpts, pmsg = prev
                lines = c.expect(250, f"end of data of #{pi}")
                book.record(ptid, prcpts, pmsg, queued_id(lines))
            if i is None:
                c.expect(221, "QUIT")
                break
            c.expect(250, f"MAIL of #{i}")
            for r in rcpts:
                c.expect(250, f"RCPT {r}")
            c.expect(354, f"DATA of #{i}")
            pending = dot_stuff(msg)
            prev = (i, tid, rcpts, msg)


def main():
    with TestEnv("e2e") as env:
        smtpd = env.smtpd()
        sink = env.sink()
        # debug: its session state changes show that BDAT was used.
        relay2 = env.daemon(routes={"c.test": smtpd.addr}, name="relay2",
                            hostname="relay2.test.example", server={"log_level": "debug"},
                            domain_defaults={"max_connections": 8},
                            submission={"max_message_size": "4M"}).start()
        d = env.daemon(routes={"a.test": smtpd.addr, "b.test": sink.addr,
                               "c.test": f"127.0.0.1:{relay2.port}"},
                       domain_defaults={"max_connections": 8},
                       submission={"max_message_size": "4M"}).start()
        log(f"daemon on {d.port}; a.test -> smtpd {smtpd.addr}, b.test -> smtp-sink {sink.addr}, "
            f"c.test -> ringpost {relay2.port} (BDAT) -> smtpd")

        book = Book()
        curl_idx = [i for i in range(N) if i % 10 == 3]
        pipe_idx = [i for i in range(N) if i % 10 in (5, 8)]
        lib_idx = [i for i in range(N) if i % 10 not in (3, 5, 8)]
        total_bytes = sum(size_of(i) for i in range(N))
        log(f"submitting {N} messages ({total_bytes / 1e6:.0f} MB): {len(lib_idx)} smtplib, "
            f"{len(pipe_idx)} pipelined raw, {len(curl_idx)} curl")
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(max_workers=8) as ex:
            futs = []
            for k in range(0, len(lib_idx), 35):
                futs.append(ex.submit(send_smtplib, d.port, lib_idx[k:k + 35], book))
            for k in range(0, len(pipe_idx), 25):
                futs.append(ex.submit(send_pipelined, d.port, pipe_idx[k:k + 25], book))
            for i in curl_idx:
                futs.append(ex.submit(send_curl, d.port, i, book, env.dir))
            for f in cf.as_completed(futs, timeout=300 * SLOW):
                f.result()
        check(len(book.sent) == N, f"only {len(book.sent)} of {N} submissions got 250")
        log(f"all {N} accepted in {time.monotonic() - t0:.1f}s")

        want = {(tid, r) for tid, (rcpts, *_rest) in book.sent.items() for r in rcpts}
        want2 = {k for k in want if k[1].endswith("@c.test")}
        wait_for(lambda: (len(d.deliveries("delivered")) >= len(want) and
                          len(relay2.deliveries("delivered")) >= len(want2)) or
                 d.deliveries("bounced") or relay2.deliveries("bounced"),
                 120, f"{len(want)} + {len(want2)} deliveries in the daemons' logs", interval=0.5)
        check(not d.deliveries("bounced"), f"bounced: {d.deliveries('bounced')[:3]}")
        check(not relay2.deliveries("bounced"), f"bounced: {relay2.deliveries('bounced')[:3]}")
        check(" -> bdat" in relay2.log(), "the first ringpost did not use BDAT towards the second")
        deferred = d.deliveries("deferred") + relay2.deliveries("deferred")
        if deferred:
            log(f"note: {len(deferred)} deferred attempts, e.g. {deferred[0].get('reply')}")
        time.sleep(1.0)  # room for a late duplicate to show up
        log(f"delivered after {time.monotonic() - t0:.1f}s; checking the receivers")

        seen = {}
        qid_of = {tid: v[3] for tid, v in book.sent.items()}
        for rx in (smtpd, sink):
            for m in rx.messages():
                tid = m.header("X-Test-Id")
                check(tid in book.sent, f"{rx.kind} got a message with unknown id {tid!r} ({m.path})")
                rcpts, sha, head, qid, _ = book.sent[tid]
                check(m.mailfrom == SENDER, f"{tid}: envelope sender {m.mailfrom!r}")
                rhead, rbody = m.split()
                got = hashlib.sha256(rbody).hexdigest()
                check(got == sha, f"{tid} at {rx.kind}: body differs from what was sent "
                      f"({len(rbody)} bytes received; {m.path})")
                check(rhead.endswith(head), f"{tid} at {rx.kind}: original header section "
                      f"not intact ({m.path})")
                added = rhead[:len(rhead) - len(head)]
                names = m.header_names()
                check(names[0] == "received", f"{tid}: first header is {names[0]}, not Received")
                check(names.count("date") == 1 and names.count("message-id") == 1,
                      f"{tid}: Date/Message-ID count wrong: {names}")
                extra = {n.decode().split(":")[0].lower() for n in added.split(b"\n")
                         if n and n[:1] not in (b" ", b"\t")}
                check(extra <= {"received", "date", "message-id"},
                      f"{tid}: ringpost added unexpected fields {extra}")
                via2 = bool(m.rcpts) and m.rcpts[0].endswith("@c.test")
                check(names.count("received") == (2 if via2 else 1),
                      f"{tid}: {names.count('received')} Received: fields")
                recs = re.findall(rb"(?m)^Received: .*(?:\n[ \t].*)*", rhead)
                rec = recs[-1].decode("utf-8", "replace")  # the first hop's, below relay2's
                check("by mta.test.example (ringpost)" in rec and f"id {qid_of[tid]}" in rec,
                      f"{tid}: Received: {rec!r} lacks the queue id {qid_of[tid]}")
                if via2:
                    check(b"by relay2.test.example (ringpost)" in recs[0],
                          f"{tid}: relay2's Received: missing: {recs[0][:120]!r}")
                for r in m.rcpts:
                    key = (tid, r)
                    check(key in want, f"{tid}: unexpected recipient {r} at {rx.kind}")
                    check((not r.endswith("@b.test")) == (rx is smtpd),
                          f"{tid}: {r} arrived at the wrong receiver ({rx.kind})")
                    check(r.endswith("@c.test") == via2, f"{tid}: recipients {m.rcpts} mixed")
                    seen[key] = seen.get(key, 0) + 1
        missing = want - set(seen)
        dups = {k: v for k, v in seen.items() if v > 1}
        check(not missing, f"{len(missing)} recipients never arrived, e.g. {sorted(missing)[:5]}")
        check(not dups, f"{len(dups)} recipients got duplicates, e.g. {list(dups.items())[:5]}")
        log(f"{len(want)} recipients of {N} messages arrived once each, bodies identical "
            f"({smtpd.count()} at smtpd, {len(sink.files())} at smtp-sink)")

        bdat = [f for f in relay2.log().splitlines() if "smtpd accepted" in f]
        check(len(bdat) == sum(1 for v in book.sent.values() if any(r.endswith("@c.test") for r in v[0])),
              f"relay2 accepted {len(bdat)} messages")
        for dd in (d, relay2):
            rc = dd.stop()
            check(rc == 0, f"{dd.log_path.stem}: SIGTERM: exit status {rc}")
            dd.check_log_clean()


if __name__ == "__main__":
    run_test(main)
