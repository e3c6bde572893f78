"""test_api_http.py - the HTTP/1.1 layer of the API under good and hostile
clients. Each case runs on its own connections; after each, a fresh
connection must get 200 from /healthz (the daemon keeps serving, no hang:
every read has a deadline); all cases run even when one fails.

  - pipelining: many requests in one send (sync and async handlers, errors
    in between, a POST that waits for the spool), answered in order; 500
    /healthz requests in one write; "Connection: close" ends the series;
  - keep-alive with separate sends (raw socket and http.client), and an
    HTTP/1.0 request (closed after its answer);
  - Expect: 100-continue: answered before the body is sent (raw), not when
    the body is refused by its declared size (413), and curl's own Expect
    for a body over 1 MiB;
  - slow clients: a request one byte per send; the [api] idle_timeout
    closes a connection that stops mid-request;
  - fuzz-style input: truncated requests (closed by the client or left
    hanging), huge headers (431), a huge URL (414), invalid JSON and
    invalid UTF-8 in JSON strings (400), wrong types in every field (400
    naming the field, never a 5xx), NUL bytes in the body, the URL and a
    header, chunked bodies (valid with extensions and trailers -> 202;
    broken sizes, missing CRLF, overflowing sizes -> 4xx), request
    smuggling shapes (two Content-Lengths, CL with TE), garbage bytes
    (binary, a TLS hello, SMTP) -> 400 or a closed connection;
  - clients that vanish: mid-body (FIN and RST), right after a POST, a
    stats request, an admin request and a pipelined series (the daemon
    finishes the work for a session that is gone).
Afterwards the daemon exits 0 on SIGTERM, with idle, half-sent and busy
clients connected, and its log is clean (ASan too).
"""

import http.client
import json
import os
import random
import socket
import struct
import time

from harness import (API_KEYS, Cases, HTTPConn, SLOW, TestEnv, TestFailure, check, curl, log,
                     raise_failures, run_test, stop_clean)

IDLE = 2  # [api] idle_timeout, seconds
KEY = API_KEYS[0]
AUTH = f"Authorization: Bearer {KEY}\r\n"
SENDER = "http@origin.test"

cases = Cases()


class Ctx:
    def __init__(self, env, d, smtpd):
        self.env, self.d, self.smtpd = env, d, smtpd
        self.port = d.api_port


def conn(x, timeout=10):
    return HTTPConn(x.port, timeout=timeout)


def req(method, path, body=b"", headers="", auth=True):
    if isinstance(body, str):
        body = body.encode()
    h = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{AUTH if auth else ''}{headers}"
    if body or method == "POST":
        h += f"Content-Length: {len(body)}\r\n"
    return h.encode() + b"\r\n" + body


def message(tid, **kw):
    m = {"from": SENDER, "to": [f"{tid}@a.test"], "subject": tid, "text": "hi\n",
         "headers": {"X-Test-Id": tid}}
    m.update(kw)
    return json.dumps(m)


def answer_or_close(c, what):
    """The status of the next response, or None when the server closed the
    connection without one. Fails on a hang."""
    try:
        st, hdrs, body = c.read_response()
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return None, {}, b""
    except socket.timeout:
        raise TestFailure(f"{what}: no answer and no close (hang)")
    return st, hdrs, body


def expect_4xx_or_close(c, what, allowed=(400, 413, 414, 431)):
    st, hdrs, body = answer_or_close(c, what)
    if st is None:
        return None
    check(st in allowed, f"{what}: HTTP {st}, expected one of {allowed}: {body[:200]!r}")
    if body:
        check("error" in json.loads(body), f"{what}: body {body[:200]!r}")
    check(c.at_eof(5), f"{what}: the connection stayed open after {st}")
    return st


def healthy(x, what):
    with conn(x) as c:
        c.send(req("GET", "/healthz", auth=False))
        st, _, body = answer_or_close(c, f"healthz after {what}")
        check(st == 200, f"healthz after {what}: {st} {body!r}")


# ---- pipelining and keep-alive ------------------------------------------------------

@cases.add
def pipelined_mixed(x):
    with conn(x) as c:
        c.send(req("POST", "/v1/messages", message("pipe-0")))
        st, _, body = c.read_response()
        check(st == 202, f"first POST {st} {body!r}")
        known = json.loads(body)["id"]
        series = [
            (req("GET", "/healthz", auth=False), 200, b'"ok"'),
            (req("GET", "/v1/stats"), 200, b'"domains"'),
            (req("POST", "/v1/messages", message("pipe-1")), 202, b'"recipients"'),
            (req("GET", "/nowhere"), 404, b"not_found"),
            (req("GET", f"/v1/messages/{known}"), 200, known.encode()),
            (req("GET", "/v1/stats", auth=False), 401, b"unauthorized"),
            (req("POST", "/v1/messages/batch",
                 json.dumps({"messages": [json.loads(message("pipe-2")), {"bad": 1}]})), 202,
             b'"results"'),
            (req("DELETE", "/v1/stats"), 405, b"method_not_allowed"),
            (req("GET", "/metrics"), 200, b"# TYPE"),
            (req("POST", "/v1/messages", "{bad json"), 400, b"bad_json"),
            (req("POST", "/v1/queue/a.test/retry"), 200, b'"retry"'),
            (req("GET", "/v1/queue"), 200, b'"domains"'),
            (req("GET", "/healthz", headers="Connection: close\r\n", auth=False), 200, b'"ok"'),
        ]
        c.send(b"".join(r for r, _, _ in series))
        for i, (_, want, marker) in enumerate(series):
            st, hdrs, body = c.read_response()
            check(st == want and marker in body, f"pipelined #{i}: HTTP {st} {body[:120]!r}, "
                  f"expected {want} with {marker!r}")
        check(hdrs.get("connection", "").lower() == "close", f"last answer headers {hdrs}")
        check(c.at_eof(5), "the connection stayed open after 'Connection: close'")


@cases.add
def pipelined_many(x):
    n = 500
    with conn(x) as c:
        c.send(req("GET", "/healthz", auth=False) * n + req("GET", "/v1/messages/zz"))
        for i in range(n):
            st, _, _ = c.read_response()
            check(st == 200, f"pipelined healthz #{i}: {st}")
        st, _, _ = c.read_response()
        check(st == 404, f"the last of {n + 1}: {st}")


@cases.add
def pipelined_posts_in_order(x):
    # Several POSTs in one send: each is answered with its own id, in order.
    tids = [f"pipe-post-{i}" for i in range(8)]
    with conn(x) as c:
        c.send(b"".join(req("POST", "/v1/messages", message(t)) for t in tids))
        ids = []
        for t in tids:
            st, _, body = c.read_response()
            check(st == 202, f"{t}: {st} {body!r}")
            ids.append(json.loads(body)["id"])
        check(len(set(ids)) == len(ids), f"ids repeat: {ids}")
        check(ids == sorted(ids), f"ids out of order (answers not in request order?): {ids}")
        for t, mid in zip(tids, ids):
            c.send(req("GET", f"/v1/messages/{mid}"))
            st, _, body = c.read_response()
            check(st == 200 and json.loads(body)["recipients"][0]["email"] == f"{t}@a.test",
                  f"{t}: status {st} {body[:200]!r}")


@cases.add
def keep_alive_separate_sends(x):
    with conn(x) as c:
        for i in range(20):
            c.send(req("GET", "/healthz" if i % 2 else "/v1/stats", auth=bool(i % 4 != 3)))
            st, hdrs, _ = c.read_response()
            check(st in (200, 401), f"request {i}: {st}")
            check(hdrs.get("connection", "").lower() != "close", f"request {i} closes: {hdrs}")
    # The standard library's keep-alive client.
    h = http.client.HTTPConnection("127.0.0.1", x.port, timeout=10 * SLOW)
    try:
        for i in range(10):
            h.request("POST", "/v1/messages", body=message(f"ka-{i}"),
                      headers={"Authorization": f"Bearer {KEY}",
                               "Content-Type": "application/json"})
            r = h.getresponse()
            body = r.read()
            check(r.status == 202, f"http.client #{i}: {r.status} {body!r}")
            check(not r.will_close, f"http.client #{i}: the server closes")
    finally:
        h.close()
    # HTTP/1.0: answered, then closed.
    with conn(x) as c:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        st, _, _ = c.read_response()
        check(st == 200, f"HTTP/1.0: {st}")
        check(c.at_eof(5), "an HTTP/1.0 connection stayed open")


@cases.add
def expect_continue(x):
    body = message("expect-raw").encode()
    with conn(x) as c:
        c.send(req("POST", "/v1/messages", b"", f"Expect: 100-continue\r\n").replace(
            b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
        line = c.read_line()
        check(line == b"HTTP/1.1 100 Continue\r\n", f"interim answer {line!r}")
        check(c.read_line() == b"\r\n", "100 Continue has no headers")
        c.send(body)
        st, _, rb = c.read_response()
        check(st == 202, f"after 100 Continue: {st} {rb!r}")
        # On the same connection, a refused size gets 413 and no 100.
        c.send(f"POST /v1/messages HTTP/1.1\r\nHost: t\r\n{AUTH}Expect: 100-continue\r\n"
               f"Content-Length: {64 << 20}\r\n\r\n".encode())
        st, _, rb = c.read_response()
        check(st == 413, f"Expect with an oversized body: {st} {rb!r}")
    # curl sends Expect: 100-continue for bodies over 1 MiB; it must not have
    # to wait out its one-second fallback, and the body must arrive whole.
    text = ("0123456789abcdef" * 64 + "\n") * 1100  # 1.1 MiB
    f = x.env.dir / "expect.json"
    f.write_text(message("expect-curl", text=text))
    t0 = time.monotonic()
    p = curl(["-v", "-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json",
              "--data-binary", f"@{f}", f"http://127.0.0.1:{x.port}/v1/messages"])
    took = time.monotonic() - t0
    check(p.returncode == 0, f"curl: {p.stderr[-500:]!r}")
    check(b"Expect: 100-continue" in p.stderr, "curl did not send Expect (test premise)")
    check(b"HTTP/1.1 100 Continue" in p.stderr, f"no 100 Continue: {p.stderr[-800:]!r}")
    mid = json.loads(p.stdout)["id"]
    s = x.d.api("GET", f"/v1/messages/{mid}").json()
    check(s["size"] > len(text), f"stored size {s['size']} for a {len(text)}-byte text")
    check(took < 5 * SLOW, f"curl took {took:.1f}s")


@cases.add
def slow_client_and_idle_timeout(x):
    with conn(x) as c:
        for b in req("GET", "/v1/stats"):
            c.send(bytes([b]))
        st, _, _ = c.read_response()
        check(st == 200, f"byte-by-byte request: {st}")
    # Stop mid-request: the idle timeout closes the connection.
    with conn(x) as c:
        # (with a key: without one the request is answered 401 at its headers)
        c.send(b"POST /v1/messages HTTP/1.1\r\nHost: t\r\n" + AUTH.encode() +
               b"Content-Length: 100\r\n\r\n{\"fr")
        t0 = time.monotonic()
        check(c.at_eof(IDLE * 3 + 5), "a stalled request was not closed by the idle timeout")
        took = time.monotonic() - t0
        check(took >= IDLE * 0.8, f"closed after {took:.1f}s, idle_timeout is {IDLE}s")
    # An idle keep-alive connection, too.
    with conn(x) as c:
        c.send(req("GET", "/healthz", auth=False))
        c.read_response()
        check(c.at_eof(IDLE * 3 + 5), "an idle keep-alive connection was never closed")


# ---- fuzz-style input ---------------------------------------------------------------

@cases.add
def truncated_requests(x):
    pieces = [b"GET", b"GET /healthz", b"GET /healthz HTTP/1.1", b"GET /healthz HTTP/1.1\r\n",
              b"GET /healthz HTTP/1.1\r\nHost: t\r\n", b"POST /v1/messages HTTP/1.1\r\n" + AUTH.encode()
              + b"Content-Length: 50\r\n\r\n{\"from\":", b"POST /v1/messages HTTP/1.1\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nab"]
    for p in pieces:
        with conn(x) as c:
            c.send(p)
            c.sock.shutdown(socket.SHUT_WR)
            st, _, body = answer_or_close(c, f"truncated {p[:40]!r}")
            check(st is None or 400 <= st < 500, f"truncated {p[:40]!r}: HTTP {st} {body!r}")
            check(c.at_eof(5), f"truncated {p[:40]!r}: not closed")


@cases.add
def huge_headers_and_url(x):
    with conn(x) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        check(expect_4xx_or_close(c, "one 20 KB header", (431,)) == 431, "no 431 for 20 KB")
    with conn(x) as c:
        c.send(b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90)
                                                        for i in range(300)) + b"\r\n")
        check(expect_4xx_or_close(c, "300 headers", (431,)) == 431, "no 431 for 300 headers")
    with conn(x) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 100000)  # never ends
        check(expect_4xx_or_close(c, "an endless header", (431,)) == 431,
              "no 431 for an endless header")
    with conn(x) as c:
        c.send(b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        check(expect_4xx_or_close(c, "a 9 KB URL", (414,)) == 414, "no 414 for a 9 KB URL")
    with conn(x) as c:
        c.send(b"GET /v1/messages/" + b"0" * 8100 + b"?" + b"q" * 100 + b" HTTP/1.1\r\n\r\n")
        check(expect_4xx_or_close(c, "URL + query > 8 KB", (414,)) == 414, "no 414 with query")
    # Just under the limits is served.
    with conn(x) as c:
        c.send(b"GET /healthz?" + b"p" * 8000 + b" HTTP/1.1\r\nX-Big: " + b"b" * 7000 +
               b"\r\n\r\n")
        st, _, _ = c.read_response()
        check(st == 200, f"a long URL and headers under the limits: {st}")


BAD_JSON = [
    b'{"from":"a@a.test","to":"b@a.test","text":"\xc3\x28"}',       # invalid UTF-8
    b'{"from":"a@a.test","to":"b@a.test","text":"\xc0\xaf"}',       # overlong
    b'{"from":"a@a.test","to":"b@a.test","text":"\xed\xa0\x80"}',   # surrogate
    b'{"from":"a@a.test","to":"b@a.test","text":"\xf8\x88\x80\x80\x80"}',
    b'{"from":"a@a.test","to":"b@a.test","text":"\\ud800"}',        # lone surrogate escape
    b'{"from":"a@a.test","to":"b@a.test","text":"a\\u0000b"}',      # NUL escape
    b'{"from":"a@a.test","to":"b@a.test","text":"a\x00b"}',         # raw NUL
    b'{"from":"a@a.test","to":"b@a.test","text":"a\nb"}',           # raw control character
    b'{"from":"a@a.test","to":"b@a.test","text":"\\x41"}',          # bad escape
    b'{"from":"a@a.test",' + b'"to":' * 3 + b'}',
    b'\x00' * 64, b'{' * 100000, b'["' + b'a' * 100 + b'"',
    b'{"from":"a@a.test","to":"b@a.test","text":"t"' + b' ' * 1000,
    b'{"from":1e400}', b'{"from":-}', b'{"from":tru}', b'{"from":NaN}',
]


@cases.add
def invalid_json_and_utf8(x):
    with conn(x) as c:  # all on one keep-alive connection: a JSON error keeps it open
        for b in BAD_JSON:
            c.send(req("POST", "/v1/messages", b))
            st, _, body = c.read_response()
            check(st == 400 and json.loads(body)["error"]["code"] == "bad_json",
                  f"{b[:50]!r}: HTTP {st} {body[:200]!r}")
            c.send(req("POST", "/v1/messages/batch", b'{"messages":[' + b + b']}'))
            st, _, body = c.read_response()
            check(st == 400, f"batch with {b[:50]!r}: HTTP {st} {body[:200]!r}")


WRONG = [0, -1, 1.5, True, False, "", "x", [], [1], ["a@a.test", 2], {}, {"a": 1},
         {"email": 1}, "\u00e9\u00e8", "a" * 5000]


@cases.add
def wrong_types_everywhere(x):
    base = {"from": SENDER, "to": ["wt@a.test"], "subject": "s", "text": "t", "html": "<p>h</p>",
            "headers": {"X-Test-Id": "wrong-types"}, "vars": {"k": "v"},
            "attachments": [{"filename": "a.txt", "content_type": "text/plain",
                             "content": "YQ=="}]}
    paths = [("from",), ("to",), ("to", 0), ("subject",), ("text",), ("html",), ("headers",),
             ("headers", "X-Test-Id"), ("vars",), ("vars", "k"), ("attachments",),
             ("attachments", 0), ("attachments", 0, "filename"),
             ("attachments", 0, "content_type"), ("attachments", 0, "content"), ("raw",)]
    statuses = {}
    with conn(x) as c:
        for path in paths:
            for w in WRONG:
                m = json.loads(json.dumps(base))
                o = m
                for k in path[:-1]:
                    o = o[k]
                o[path[-1]] = w
                if path == ("raw",):
                    for k in ("subject", "text", "html", "headers", "attachments"):
                        m.pop(k)
                c.send(req("POST", "/v1/messages", json.dumps(m)))
                st, _, body = c.read_response()
                what = f"{'.'.join(map(str, path))} = {json.dumps(w)[:30]}"
                check(st in (202, 400, 413, 422), f"{what}: HTTP {st} {body[:200]!r}")
                statuses[st] = statuses.get(st, 0) + 1
                if st == 400:
                    msg = json.loads(body)["error"]["message"]
                    check(str(path[0]) in msg, f"{what}: message {msg!r} does not name "
                          f"{path[0]!r}")
    log(f"  {sum(statuses.values())} wrong-type submissions: {statuses}")
    check(statuses.get(400, 0) > 100, f"too few 400s: {statuses}")


@cases.add
def error_bodies_are_utf8(x):
    # Whatever bytes a client sends, the JSON answers stay valid UTF-8.
    for path in (b"/\xff\xfe", b"/v1/messages/\xc3", b"/v1/messages/" + b"\xe2\x82\xac" * 30,
                 b"/v1/queue/a.test/\xc3\xa9" * 20, b"/\xed\xa0\x80", b"/\xc0\xaf"):
        method = b"POST" if b"queue" in path else b"GET"
        with conn(x) as c:
            c.send(method + b" " + path + b" HTTP/1.1\r\nHost: t\r\n" + AUTH.encode() +
                   b"Content-Length: 0\r\n\r\n")
            st, _, body = c.read_response()
            check(st == 404, f"{path!r}: {st}")
            try:
                json.loads(body.decode("utf-8"))
            except ValueError as e:
                raise TestFailure(f"{path!r}: the 404 body is not UTF-8 JSON ({e}): {body!r}")


@cases.add
def nul_bytes(x):
    with conn(x) as c:
        c.send(req("POST", "/v1/messages", b'{"from":"a\x00@a.test"}'))
        st, _, _ = c.read_response()
        check(st == 400, f"NUL in the body: {st}")
    for raw in (b"GET /heal\x00thz HTTP/1.1\r\n\r\n", b"GET /healthz HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nX-\x00A: b\r\n\r\n", b"\x00GET /healthz HTTP/1.1\r\n\r\n",
                b"GET\x00/healthz HTTP/1.1\r\n\r\n"):
        with conn(x) as c:
            c.send(raw)
            st = expect_4xx_or_close(c, f"NUL in {raw!r}", (400, 404))
            log(f"  {raw[:32]!r}: {st or 'closed'}")


def chunked(body, sizes, ext=b"", trailer=b""):
    out, i = b"", 0
    for n in sizes:
        n = min(n, len(body) - i)
        if n <= 0:
            break  # a 0 chunk would end the body
        out += b"%x%s\r\n" % (n, ext) + body[i:i + n] + b"\r\n"
        i += n
    rest = body[i:]
    if rest:
        out += b"%x\r\n" % len(rest) + rest + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


@cases.add
def chunked_bodies(x):
    head = f"POST /v1/messages HTTP/1.1\r\nHost: t\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n"
    body = message("chunked-ok", text="chunk " * 200 + "\n").encode()
    with conn(x) as c:
        # Valid: tiny chunks, an extension, a trailer; twice on one connection.
        c.send(head.encode() + chunked(body, [1, 2, 3, 50, 7]))
        st, _, rb = c.read_response()
        check(st == 202, f"chunked: {st} {rb!r}")
        c.send(head.encode() + chunked(message("chunked-ext").encode(), [10, 10], b";name=val",
                                       b"X-Trailer: yes\r\n"))
        st, _, rb = c.read_response()
        check(st == 202, f"chunked with extension and trailer: {st} {rb!r}")
        # Sent slowly, chunk by chunk.
        c.send(head.encode())
        for piece in [chunked(message("chunked-slow").encode(), [20] * 30)[i:i + 37]
                      for i in range(0, 2000, 37)]:
            if piece:
                c.send(piece)
        st, _, rb = c.read_response()
        check(st == 202, f"chunked, slowly: {st} {rb!r}")
    broken = [
        b"zz\r\n{}\r\n0\r\n\r\n",                  # not hex
        b"2\r\n{}XX0\r\n\r\n",                     # no CRLF after the data
        b"-2\r\n{}\r\n0\r\n\r\n",                  # negative
        b"fffffffffffffffffff\r\n{}\r\n",          # overflows
        b"\r\n{}\r\n0\r\n\r\n",                    # empty size
        b"2\r\n{}\r\n0\r\nBad Trailer\r\n\r\n",    # bad trailer
    ]
    for b in broken:
        with conn(x) as c:
            c.send(head.encode() + b)
            st = expect_4xx_or_close(c, f"chunked {b[:24]!r}", (400, 413))
            log(f"  chunked {b[:24]!r}: {st or 'closed'}")
    # A chunk announced larger than max_request_size (4M): 413 at once, not
    # after its bytes (or an idle timeout).
    for size in (b"1000000", b"400001", b"3ffff0\r\n" + b"a" * 0x3ffff0 + b"\r\n20"):
        with conn(x) as c:
            c.send(head.encode() + size + b"\r\n" + b"a" * 100)
            t0 = time.monotonic()
            st = expect_4xx_or_close(c, f"chunk of {size[:8]!r}", (413,))
            check(st == 413 and time.monotonic() - t0 < IDLE, f"chunk of {size[:8]!r}: {st} "
                  f"after {time.monotonic() - t0:.1f}s")
    # http-parser reads "2 2" as size 2 and ignores the rest of the line
    # (like an extension): the body "{}" is then a message without from.
    with conn(x) as c:
        c.send(head.encode() + b"2 2\r\n{}\r\n0\r\n\r\n")
        st, _, rb = c.read_response()
        check(st == 400 and b"from" in rb, f"chunk size '2 2': {st} {rb!r}")
    # Smuggling shapes: both must be refused, not guessed.
    for h in (b"Content-Length: 5\r\nContent-Length: 6\r\n",
              b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
              b"Transfer-Encoding: chunked, identity\r\n"):
        with conn(x) as c:
            c.send(b"POST /v1/messages HTTP/1.1\r\nHost: t\r\n" + AUTH.encode() + h +
                   b"\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
            st, _, rb = answer_or_close(c, f"smuggling {h!r}")
            check(st is None or st == 400, f"smuggling {h!r}: HTTP {st} {rb!r}")


@cases.add
def garbage(x):
    rnd = random.Random(99)
    blobs = [bytes(rnd.getrandbits(8) for _ in range(n)) for n in (1, 10, 100, 1000, 100000)]
    blobs += [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200),  # TLS hello
              b"EHLO client.test\r\nMAIL FROM:<a@b>\r\n", b"\r\n\r\n\r\n\r\n",
              b"get /healthz HTTP/1.1\r\n\r\n",
              b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
              b"POST /v1/messages HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
              b"POST /v1/messages HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
              b"POST /v1/messages HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
              b"\xff" * 5000]
    closed = answered = 0
    for b in blobs:
        with conn(x) as c:
            try:
                c.send(b)
            except OSError:
                pass
            st = expect_4xx_or_close(c, f"garbage {b[:16]!r}", (400, 404, 405, 413, 431))
            if st is None:
                closed += 1
            else:
                answered += 1
    log(f"  garbage: {answered} answered 4xx, {closed} closed")
    # Shapes http-parser tolerates (RFC 7230 allows consuming them): any
    # answer below 500, or a close.
    for b in (b"GET / HTTP/9.9\r\n\r\n", b"GET /healthz\tHTTP/1.1\r\n\r\n",
              b"GET  /healthz  HTTP/1.1\r\n\r\n", b"GET /healthz HTTP/1.1\r\n : x\r\n\r\n"):
        with conn(x) as c:
            c.send(b)
            st, _, body = answer_or_close(c, f"odd request {b!r}")
            check(st is None or st < 500, f"odd request {b!r}: HTTP {st} {body!r}")


@cases.add
def vanishing_clients(x):
    def rst(c):
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sock.close()
    head = f"POST /v1/messages HTTP/1.1\r\nHost: t\r\n{AUTH}Content-Length: 10000\r\n\r\n"
    for how in ("fin", "rst"):
        # Mid-body.
        c = conn(x)
        c.send(head.encode() + b"{" + b" " * 4000)
        rst(c) if how == "rst" else c.close()
        # Right after a request whose answer is asynchronous.
        for r in (req("POST", "/v1/messages", message(f"vanish-{how}")), req("GET", "/v1/stats"),
                  req("GET", "/metrics"), req("POST", "/v1/queue/a.test/retry"),
                  req("POST", "/v1/messages/batch",
                      json.dumps({"messages": [json.loads(message(f"vanish-b{i}-{how}"))
                                               for i in range(5)]})),
                  req("GET", "/v1/stats") * 50 + req("POST", "/v1/messages",
                                                     message(f"vanish-p-{how}")) * 3):
            c = conn(x)
            c.send(r)
            rst(c) if how == "rst" else c.close()
    # Many at once, while a normal client keeps working.
    socks = []
    for i in range(40):
        c = conn(x)
        c.send(req("POST", "/v1/messages", message(f"vanish-many-{i}")))
        socks.append(c)
    for c in socks:
        rst(c)
    time.sleep(0.5)
    r = x.d.api("POST", "/v1/messages", json.loads(message("after-vanish")))
    check(r.status == 202, f"a submission after the vanishing clients: {r!r}")


def main():
    with TestEnv("apihttp") as env:
        smtpd = env.smtpd()
        d = env.daemon(routes={"a.test": smtpd.addr}, with_api=True,
                       api={"idle_timeout": f"{IDLE}s", "max_request_size": "4M"}).start()
        x = Ctx(env, d, smtpd)
        failures = []
        for fn in cases:
            try:
                fn(x)
                healthy(x, fn.__name__)
                log(f"ok   {fn.__name__}")
            except (TestFailure, OSError, EOFError, ValueError, KeyError) as e:
                failures.append(f"{fn.__name__}: {type(e).__name__}: {e}")
                log(f"FAIL {fn.__name__}: {e}")
            if not d.alive():
                failures.append(f"the daemon died during {fn.__name__} "
                                f"(status {d.proc.returncode})")
                break
        if d.alive():
            s = d.api("GET", "/v1/stats").json()
            log(f"  at the end: accepted {s['accepted']}, rejected {s['rejected']}, "
                f"inbound connections {s['inbound_connections']}")
            # SIGTERM with clients connected: idle keep-alive ones, one in the
            # middle of a request, one that has just sent POSTs. The daemon
            # exits 0 and closes them all.
            clients = [conn(x) for _ in range(3)]
            for c in clients:
                c.send(req("GET", "/healthz", auth=False))
                c.read_response()
            mid = conn(x)
            mid.send(b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
            busy = conn(x)
            busy.send(req("POST", "/v1/messages", message("at-shutdown")) * 3)
            clients += [mid, busy]
            t0 = time.monotonic()
            stop_clean(d, failures)
            log(f"  stopped with {len(clients)} clients in {time.monotonic() - t0:.2f}s")
            for i, c in enumerate(clients):
                if not c.at_eof(5):
                    failures.append(f"client {i} still connected after the daemon stopped")
                c.close()
        stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
