"""test_bad_input.py - hostile and broken SMTP clients get exact replies.

Each case runs on its own connection to one daemon (max_message_size 20000,
max_recipients 100, max_errors 5); every case is run even when an earlier
one fails, and the failures are listed together at the end:

  - command lines over 512 octets -> 500 (512 exactly is fine; an
    unterminated flood gets one 500), and the session goes on;
  - DATA text lines over 1000 octets -> 5xx at the end of data, not before
    (998 octets + CRLF is fine, also when the line starts with a dot that
    travels stuffed: RFC 5321 4.5.3.1.6 does not count that dot);
  - a message over max_message_size -> 552 via SIZE= on MAIL, by sending too
    much in DATA, and by a BDAT chunk; the session stays usable;
  - 1,000 pipelined RCPTs -> 250 for the first 100, 452 4.5.3 after; the
    message is accepted and delivered to exactly those 100;
  - binary junk and an HTTP request -> 500 each, and at max_errors a 421
    and a closed connection;
  - commands out of order -> 503 (RCPT before MAIL, DATA before RCPT, DATA
    without MAIL, MAIL before EHLO, nested MAIL);
  - BDAT: without MAIL -> 503 after its chunk is consumed (the chunk's bytes
    are never run as commands); chunked BDAT ... LAST and BDAT 0 LAST are
    accepted, and chunk content travels verbatim (dots included);
  - a NUL byte in DATA -> 554, not stored;
  - clients that vanish mid-DATA / mid-BDAT (FIN or RST, also right after
    "CRLF ." without its final CRLF): the message is never delivered;
  - a client outside [submission] networks (networks = 10.0.0.0/8, in a
    second daemon) cannot send MAIL: 530; that daemon's idle_timeout (1s)
    ends a silent session with 421;
  - SMTP smuggling: "\\n.\\n", "\\r.\\r", "\\r\\n.\\n", "\\n.\\r\\n" inside
    DATA do not end the message: one 250, and each receiver (smtpd, and
    Postfix smtp-sink which pipelines) gets one message carrying the
    smuggled commands as content, never a second message.
Afterwards the daemon still accepts and delivers a normal message, and
exits 0 on SIGTERM.
"""

import socket
import time

from harness import (Cases, SLOW, SMTPConn, TestEnv, TestFailure, check, dot_stuff, log, queued_id,
                     raise_failures, run_test, stop_clean, wait_for)

MAX_SIZE = 20000
MAX_RCPTS = 100
MAX_ERRORS = 5
SENDER = "bad@origin.test"

cases = Cases()


def session(port, ehlo=True):
    c = SMTPConn(port, timeout=20)
    c.expect(220, "banner")
    if ehlo:
        c.ehlo("bad.client.test")
    return c


def msg(tid, body=b"hello\r\n", extra_head=b""):
    return (b"From: <" + SENDER.encode() + b">\r\nSubject: bad input\r\nX-Test-Id: " +
            tid.encode() + b"\r\n" + extra_head + b"\r\n" + body)


def start_tx(c, rcpts=("user@a.test",)):
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    for r in rcpts:
        c.cmd(f"RCPT TO:<{r}>", 250)


def send_message(c, tid, body=b"hello\r\n", rcpts=("user@a.test",)):
    start_tx(c, rcpts)
    c.cmd("DATA", 354)
    c.send(dot_stuff(msg(tid, body)))
    return queued_id(c.expect(250, f"end of data of {tid}"))


def no_reply_yet(c, wait=0.3):
    """True when the server has said nothing within wait seconds."""
    if c.buf:
        return False
    c.sock.settimeout(wait)
    try:
        data = c.sock.recv(4096)
        c.buf += data
        return False
    except socket.timeout:
        return True
    finally:
        c.sock.settimeout(20 * SLOW)


class Ctx:
    def __init__(self, env, d, smtpd, sink):
        self.env, self.d, self.smtpd, self.sink = env, d, smtpd, sink
        self.port = d.port
        self.expect_delivered = {}   # test id -> set of recipients (smtpd)
        self.expect_absent = set()   # test ids that must never arrive
        self.expect_content = {}     # test id -> exact LF data of the body


# ---- command lines -------------------------------------------------------

@cases.add
def long_command_line(x):
    with session(x.port) as c:
        c.cmd("NOOP " + "x" * (512 - 7), 250, "a 512-octet NOOP line")
        lines = c.cmd("NOOP " + "x" * (513 - 7), 500, "a 513-octet command line")
        check(lines[0].startswith("500 5.5.2"), f"reply {lines}")
        c.cmd("MAIL FROM:<" + "a" * 600 + "@x.test>", 500, "a 620-octet MAIL line")
        c.cmd("NOOP", 250, "NOOP after over-long lines")
    with session(x.port) as c:
        # No line end for 1500 octets, in pieces: one 500, and the rest of
        # that line is skipped rather than run as commands.
        for _ in range(3):
            c.send(b"X" * 500)
            time.sleep(0.02)
        c.send(b"QUIT\r\nNOOP\r\n")
        c.expect(500, "the unterminated flood")
        c.expect(250, "NOOP after the flood (its tail 'QUIT' must have been skipped)")
        c.cmd("QUIT", 221)
    with session(x.port) as c:
        # An endless line: every further 512 octets count as one more
        # error, so the junk ends in 421 and a closed connection.
        try:
            for _ in range(40):
                c.send(b"Y" * 1000)
                time.sleep(0.01)
        except OSError:
            pass  # the server may close while we are still sending
        code, lines = c.read_reply()
        check(code == 500, f"first reply to an endless line: {lines}")
        code, lines = c.read_reply()
        check(code == 421, f"an endless line must end in 421, got {lines}")


# ---- DATA line length and size ---------------------------------------------

@cases.add
def long_text_line(x):
    with session(x.port) as c:
        start_tx(c)
        c.cmd("DATA", 354)
        c.send(b"Subject: long\r\nX-Test-Id: longline\r\n\r\n" + b"y" * 999 + b"\r\nmore\r\n")
        check(no_reply_yet(c), "the server replied before the end of data")
        c.send(b".\r\n")
        code, lines = c.read_reply()
        check(500 <= code < 600, f"a 1001-octet text line: expected 5xx at end of data, got {lines}")
        x.expect_absent.add("longline")
        c.cmd("NOOP", 250, "NOOP after the rejected message")


@cases.add
def text_line_998_accepted(x):
    with session(x.port) as c:
        qid = send_message(c, "line998", b"z" * 998 + b"\r\n")
        x.expect_delivered["line998"] = {"user@a.test"}
        x.expect_content["line998"] = b"z" * 998 + b"\n"
        log(f"  998-octet line: queued as {qid}")


@cases.add
def dot_line_998_accepted(x):
    # ".zzz..." of 998 octets goes out as "..zzz..." (999): the added dot
    # does not count (RFC 5321 4.5.3.1.6).
    line = b"." + b"z" * 997
    with session(x.port) as c:
        start_tx(c)
        c.cmd("DATA", 354)
        c.send(dot_stuff(msg("dotline998", line + b"\r\n")))
        lines = c.expect(250, "a 998-octet text line starting with '.' (sent stuffed, 999 "
                         "octets): RFC 5321 4.5.3.1.6 says the stuffed dot does not count")
        queued_id(lines)
    x.expect_delivered["dotline998"] = {"user@a.test"}
    x.expect_content["dotline998"] = line + b"\n"


@cases.add
def size_announced_too_big(x):
    with session(x.port, ehlo=False) as c:
        caps = c.ehlo()
        check(f"SIZE {MAX_SIZE}" in caps, f"EHLO does not announce SIZE {MAX_SIZE}: {caps}")
        lines = c.cmd(f"MAIL FROM:<{SENDER}> SIZE={MAX_SIZE + 1}", 552, "MAIL with SIZE over the limit")
        check(lines[0].startswith("552 5.3.4"), f"reply {lines}")
        c.cmd("RCPT TO:<user@a.test>", 503, "RCPT after a refused MAIL")
        c.cmd(f"MAIL FROM:<{SENDER}> SIZE={MAX_SIZE}", 250, "MAIL with SIZE at the limit")


@cases.add
def data_too_big(x):
    with session(x.port) as c:
        start_tx(c)
        c.cmd("DATA", 354)
        big = msg("toobig", (b"w" * 78 + b"\r\n") * (MAX_SIZE // 80 + 50))
        c.send(dot_stuff(big))
        lines = c.expect(552, f"a {len(big)}-octet message in DATA")
        check(lines[0].startswith("552 5.3.4"), f"reply {lines}")
        x.expect_absent.add("toobig")
        # The session goes on, and a fitting message is fine.
        send_message(c, "after-toobig")
        x.expect_delivered["after-toobig"] = {"user@a.test"}


@cases.add
def bdat_too_big(x):
    with session(x.port) as c:
        start_tx(c)
        big = msg("bdat-toobig", b"v" * (MAX_SIZE + 10) + b"\r\n")
        c.send(f"BDAT {len(big)} LAST\r\n".encode() + big)
        c.expect(552, "a BDAT chunk over the size limit")
        x.expect_absent.add("bdat-toobig")
        c.cmd("NOOP", 250, "NOOP after the refused chunk (was it consumed?)")


@cases.add
def nul_in_data(x):
    with session(x.port) as c:
        start_tx(c)
        c.cmd("DATA", 354)
        c.send(dot_stuff(msg("nul", b"a NUL \x00 here\r\n")))
        code, lines = c.read_reply()
        check(500 <= code < 600, f"a NUL byte in DATA: expected 5xx, got {lines}")
        x.expect_absent.add("nul")


# ---- recipients ------------------------------------------------------------

@cases.add
def thousand_recipients(x):
    rcpts = [f"r{k:04d}@a.test" for k in range(1000)]
    with session(x.port) as c:
        c.send(f"MAIL FROM:<{SENDER}>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts))
        c.expect(250, "MAIL")
        for k, r in enumerate(rcpts):
            code, lines = c.read_reply()
            if k < MAX_RCPTS:
                check(code == 250, f"RCPT #{k + 1}: expected 250, got {lines}")
            else:
                check(lines[0].startswith("452 4.5.3"),
                      f"RCPT #{k + 1}: expected 452 4.5.3, got {lines}")
        c.cmd("DATA", 354)
        c.send(dot_stuff(msg("rcpt1000")))
        queued_id(c.expect(250, "end of data with 100 recipients"))
        c.cmd("NOOP", 250, "the session survives 900 refused RCPTs")
    x.expect_delivered["rcpt1000"] = set(rcpts[:MAX_RCPTS])


# ---- junk --------------------------------------------------------------------

@cases.add
def binary_junk(x):
    junk = [b"\x00\x01\x02\x03\xff\xfe\xfd\r\n", b"\x80\x81\x82 \xc3\x28 binary\r\n",
            b"GET / HTTP/1.1\r\n", b"Host: example\r\n", b"\r\n", b"\x1b[2J\x7f\r\n",
            b"MAIL\x00FROM:<x@y>\r\n", b"junk again\r\n"]
    with session(x.port) as c:
        c.send(b"".join(junk))
        for k in range(MAX_ERRORS):
            lines = c.expect(500, f"junk line {k + 1}")
        code, lines = c.read_reply()
        check(code == 421, f"after {MAX_ERRORS} errors: expected 421, got {lines}")
        check(c.at_eof(), "the connection stayed open after 421")
    with session(x.port, ehlo=False) as c:
        # Random-looking binary with bare LFs here and there, before EHLO.
        blob = b"".join(bytes((k * 37 + j * 11) % 256 for j in range(90)).replace(b"\n", b"") + b"\n"
                        for k in range(40))
        c.send(blob)
        codes = []
        try:
            while True:
                code, _ = c.read_reply()
                codes.append(code)
                if code == 421:
                    break
        except (EOFError, OSError):
            pass
        check(codes == [500] * MAX_ERRORS + [421],
              f"40 lines of binary: expected {MAX_ERRORS} x 500 then 421, got {codes}")
        check(c.at_eof(), "the connection stayed open after 421")


# ---- order ---------------------------------------------------------------------

@cases.add
def out_of_order(x):
    with session(x.port) as c:
        c.cmd("RCPT TO:<user@a.test>", 503, "RCPT before MAIL")
    with session(x.port) as c:
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd("DATA", 503, "DATA before RCPT")
    with session(x.port) as c:
        c.cmd("DATA", 503, "DATA without MAIL")
    with session(x.port, ehlo=False) as c:
        c.cmd(f"MAIL FROM:<{SENDER}>", 503, "MAIL before EHLO")
        c.cmd("RCPT TO:<user@a.test>", 503, "RCPT before EHLO")
    with session(x.port) as c:
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"MAIL FROM:<{SENDER}>", 503, "nested MAIL")
        c.cmd("RCPT TO:<user@a.test>", 250, "RCPT after the refused nested MAIL")


# ---- BDAT ------------------------------------------------------------------------

@cases.add
def bdat_without_mail(x):
    with session(x.port) as c:
        # The chunk's bytes look like commands; they must be consumed as data.
        chunk = b"QUIT\r\n"
        c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk + b"NOOP\r\n")
        c.expect(503, "BDAT without MAIL")
        c.expect(250, "NOOP after the refused chunk (a 221 means the chunk ran as QUIT)")
    with session(x.port) as c:
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.send(b"BDAT 4 LAST\r\nRSET")
        c.expect(503, "BDAT without RCPT")
        c.cmd("NOOP", 250)


@cases.add
def bdat_chunks(x):
    # Chunk content is verbatim: dots are not stuffed, and the chunk
    # boundary falls inside a CRLF.
    data = msg("bdat-chunks", b".leading dot\r\n..two dots\r\n.\r\nlast line\r\n")
    cut = data.index(b"\r\n..two") + 1
    with session(x.port) as c:
        start_tx(c)
        c.send(f"BDAT {cut}\r\n".encode() + data[:cut])
        lines = c.expect(250, "first BDAT chunk")
        c.send(f"BDAT {len(data) - cut} LAST\r\n".encode() + data[cut:])
        queued_id(c.expect(250, "BDAT LAST"))
        # And a message ended by an empty last chunk.
        start_tx(c)
        data2 = msg("bdat-zero-last")
        c.send(f"BDAT {len(data2)}\r\n".encode() + data2 + b"BDAT 0 LAST\r\n")
        c.expect(250, "BDAT chunk")
        queued_id(c.expect(250, "BDAT 0 LAST"))
        c.cmd("DATA", 503, "DATA without a transaction after BDAT")
    x.expect_delivered["bdat-chunks"] = {"user@a.test"}
    x.expect_content["bdat-chunks"] = b".leading dot\n..two dots\n.\nlast line\n"
    x.expect_delivered["bdat-zero-last"] = {"user@a.test"}


# ---- vanishing clients -------------------------------------------------------------

@cases.add
def vanish_mid_data(x):
    for how in ("fin", "rst", "dot-no-crlf"):
        tid = f"vanish-{how}"
        c = session(x.port)
        start_tx(c)
        c.cmd("DATA", 354)
        part = msg(tid, b"half a message\r\n" * 50)
        if how == "dot-no-crlf":
            c.send(part + b".")  # "CRLF ." but never its CRLF
        else:
            c.send(part)
        time.sleep(0.1)
        if how == "rst":
            c.abort()
        else:
            c.close()
        x.expect_absent.add(tid)
    for how in ("fin", "rst"):
        tid = f"vanish-bdat-{how}"
        c = session(x.port)
        start_tx(c)
        part = msg(tid)
        c.send(f"BDAT {len(part) + 100} LAST\r\n".encode() + part)
        time.sleep(0.1)
        c.abort() if how == "rst" else c.close()
        x.expect_absent.add(tid)


# ---- networks -----------------------------------------------------------------------

@cases.add
def outside_networks(x):
    d2 = x.env.daemon(routes={"a.test": x.smtpd.addr}, name="closed",
                      submission={"networks": "10.0.0.0/8", "idle_timeout": "1s"}).start()
    try:
        with session(d2.port) as c:
            lines = c.cmd(f"MAIL FROM:<{SENDER}>", 530, "MAIL from outside [submission] networks")
            check(lines[0].startswith("530 5.7.0"), f"reply {lines}")
            c.cmd("RCPT TO:<user@a.test>", 503, "RCPT after the refused MAIL")
            c.cmd("DATA", 503, "DATA after the refused MAIL")
            c.cmd("QUIT", 221)
        # The same daemon has idle_timeout = 1s: a silent client is told
        # 421 and dropped.
        with session(d2.port) as c:
            t0 = time.monotonic()
            lines = c.expect(421, "a silent client after idle_timeout")
            waited = time.monotonic() - t0
            check(lines[0].startswith("421 4.4.2"), f"reply {lines}")
            check(0.8 <= waited <= 5 * SLOW, f"421 after {waited:.1f}s, idle_timeout is 1s")
            check(c.at_eof(), "the connection stayed open after the timeout's 421")
        rc = d2.stop()
        check(rc == 0, f"second daemon: SIGTERM exit status {rc}")
        d2.check_log_clean()
    finally:
        d2.kill()


# ---- smuggling ------------------------------------------------------------------------

SMUGGLE = [("lf-dot-lf", b"\n.\n"), ("cr-dot-cr", b"\r.\r"), ("crlf-dot-lf", b"\r\n.\n"),
           ("lf-dot-crlf", b"\n.\r\n")]


@cases.add
def smuggling(x):
    for name, seq in SMUGGLE:
        tid = f"smuggle-{name}"
        nl = seq[-1:] if seq.endswith(b"\n") else seq  # the variant's idea of a line end
        body = (b"innocent text" + seq +
                b"MAIL FROM:<smuggler@evil.test>" + nl + b"RCPT TO:<victim@a.test>" + nl +
                b"RCPT TO:<victim@b.test>" + nl + b"DATA" + nl +
                b"X-Test-Id: smuggled-" + name.encode() + nl + nl + b"smuggled body" + seq +
                b"trailing text\r\n")
        with session(x.port) as c:
            start_tx(c, ("user@a.test", "user@b.test"))
            c.cmd("DATA", 354)
            c.send(msg(tid, body) + b".\r\nNOOP\r\n")
            lines = c.expect(250, f"{name}: end of data")
            queued_id(lines)
            c.expect(250, f"{name}: NOOP right after (any other reply means the server saw "
                          f"a smuggled command)")
            check(no_reply_yet(c), f"{name}: extra replies after NOOP: {c.buf!r}")
        x.expect_delivered[tid] = {"user@a.test"}


# ---- the checks at the receivers ----------------------------------------------------------

def final_message(x):
    with session(x.port) as c:
        qid = send_message(c, "final-normal", b"still alive\r\n", rcpts=("user@a.test", "user@b.test"))
        c.cmd("QUIT", 221)
    log(f"  final normal message queued as {qid}")
    x.expect_delivered["final-normal"] = {"user@a.test"}


def check_receivers(x):
    fails = []
    # The final message is the last thing sent: wait for it at both, then
    # give anything that should not arrive a little time to do so.
    wait_for(lambda: any(m.header("X-Test-Id") == "final-normal" for m in x.smtpd.messages()) and
             any(m.header("X-Test-Id") == "final-normal" for m in x.sink.messages()),
             30, "the final message at both receivers", interval=0.2)
    wanted = set(x.expect_delivered)
    wait_for(lambda: wanted <= {m.header("X-Test-Id") for m in x.smtpd.messages()},
             30, "every accepted message at smtpd", interval=0.2) if wanted else None
    time.sleep(1.0)
    by_id = {}
    for rx in (x.smtpd, x.sink):
        for m in rx.messages():
            tid = m.header("X-Test-Id")
            if m.mailfrom == "smuggler@evil.test" or any(r.startswith("victim@") for r in m.rcpts):
                fails.append(f"{rx.kind} received a SMUGGLED message: from {m.mailfrom} to {m.rcpts}")
            if tid and tid.startswith("smuggled-"):
                fails.append(f"{rx.kind} received the smuggled message {tid} as a message")
            by_id.setdefault((rx.kind, tid), []).append(m)
    for tid in sorted(x.expect_absent):
        for kind in ("smtpd", "smtp-sink"):
            if (kind, tid) in by_id:
                fails.append(f"{tid} must not be delivered, but {kind} received it")
    for tid, rcpts in sorted(x.expect_delivered.items()):
        ms = by_id.get(("smtpd", tid), [])
        got = [r for m in ms for r in m.rcpts]
        if sorted(got) != sorted(rcpts):
            fails.append(f"{tid}: smtpd got recipients {sorted(got)[:5]}... ({len(got)}), "
                         f"expected {len(rcpts)} of them once each")
            continue
        if tid in x.expect_content:
            _, body = ms[0].split()
            if body != x.expect_content[tid]:
                fails.append(f"{tid}: body {body[:80]!r}... differs from what was sent")
    for name, _ in SMUGGLE:
        tid = f"smuggle-{name}"
        for kind in ("smtpd", "smtp-sink"):
            ms = by_id.get((kind, tid), [])
            if len(ms) != 1:
                fails.append(f"{tid}: {kind} got {len(ms)} messages, expected exactly one")
                continue
            _, body = ms[0].split()
            if b"MAIL FROM:<smuggler@evil.test>" not in body or b"trailing text" not in body:
                fails.append(f"{tid}: {kind} lacks the smuggled lines as content: {body[:200]!r}")
    for kind in ("smtp-sink",):
        if len(by_id.get((kind, "final-normal"), [])) != 1:
            fails.append(f"final-normal: {kind} did not get it exactly once")
    return fails


def main():
    with TestEnv("badinput") as env:
        smtpd = env.smtpd()
        sink = env.sink()
        d = env.daemon(routes={"a.test": smtpd.addr, "b.test": sink.addr},
                       submission={"max_message_size": MAX_SIZE, "max_recipients": MAX_RCPTS,
                                   "max_errors": MAX_ERRORS}).start()
        x = Ctx(env, d, smtpd, sink)
        failures = []
        for fn in cases:
            try:
                fn(x)
                log(f"ok   {fn.__name__}")
            except (TestFailure, OSError, EOFError) as e:
                failures.append(f"{fn.__name__}: {e}")
                log(f"FAIL {fn.__name__}: {e}")
            if not d.alive():
                failures.append(f"the daemon died during {fn.__name__} "
                                f"(status {d.proc.returncode})")
                break
        if d.alive():
            try:
                final_message(x)
                failures += check_receivers(x)
            except (TestFailure, OSError, EOFError) as e:
                failures.append(f"after the bad input: {e}")
            log_text = d.log()
            if "message discarded" not in log_text:
                failures.append("the log does not say a vanished client's message was discarded")
            stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
