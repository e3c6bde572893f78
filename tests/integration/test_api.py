"""test_api.py - every HTTP API route and every error code, with Python's
urllib and curl against the real daemon, deliveries checked at real
receivers (Python smtpd for a.test, Postfix smtp-sink for b.test).

Routes:
  - POST /v1/messages (to as a string, a list of strings and {email, vars}
    objects, and raw) -> 202 with the id and one id per recipient; each
    message arrives at its receiver; GET /v1/messages/{id} then reports
    every recipient delivered (attempts 1, the 250 reply), {id}.{n} only
    recipient n;
  - POST /v1/messages/batch with good and bad messages mixed -> 202; the
    good ones get ids and are delivered, each bad one is reported in its
    place with its own error (400 field, 422 address, 413 size);
  - GET /v1/stats and GET /v1/queue (JSON totals and domains), GET /metrics
    (text/plain), GET /healthz without a key;
  - POST /v1/queue/DOMAIN/retry|suspend|resume|purge -> 200 {domain,
    action, recipients}.
Errors, each with {"error": {"code", "message"}}:
  - 400: bad JSON in many shapes; a wrong type or a missing or unknown
    field anywhere -> the message names the field;
  - 401 with WWW-Authenticate: no key, a wrong key, the wrong scheme; the
    second configured key works;
  - 404: unknown paths, ids, recipient numbers, domains, actions;
  - 405 with an Allow header naming the methods the path takes;
  - 413: a body over [api] max_request_size (declared: answered before the
    body; chunked: when the limit is crossed; curl with its Expect), a
    message over [submission] max_message_size, a batch over max_batch;
  - 422: invalid addresses, named in the message;
  - 503 with Retry-After: a connection over [api] max_clients (a third
    daemon, which also shows that SIGHUP reloads [api] keys and max_batch);
    a second daemon whose [queue] min_free is larger
    than the disk's free space refuses POSTs (single and in a batch) and
    says so on /healthz and /v1/stats, while SMTP MAIL gets 452 4.3.1.
Every daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import base64
import json
import os
import signal
import time

from harness import (API_KEYS, Cases, HTTPConn, SMTPConn, TestEnv, TestFailure, api_status, check,
                     curl, log, raise_failures, run_cases, run_test, stop_clean, wait_for,
                     wait_rcpts)

MAX_MESSAGE = 32 * 1024
MAX_REQUEST = 128 * 1024
MAX_BATCH = 5
MAX_RCPTS = 10
SENDER = "api@origin.test"

cases = Cases()


class Ctx:
    def __init__(self, env, d, smtpd, sink):
        self.env, self.d, self.smtpd, self.sink = env, d, smtpd, sink
        self.delivered = {}  # X-Test-Id -> set of recipients, checked at the end


def msg(tid, to, **kw):
    m = {"from": SENDER, "to": to, "subject": f"test {tid}", "text": f"body of {tid}\n",
         "headers": {"X-Test-Id": tid}}
    m.update(kw)
    return m


def expect_error(r, status, code=None, names=(), what=""):
    """r is an error answer with status, the JSON error shape, and a message
    naming every string in names."""
    check(r.status == status, f"{what}: HTTP {r.status}, expected {status}: {r.body[:300]!r}")
    ctype = r.header("Content-Type") or ""
    check(ctype.startswith("application/json"), f"{what}: Content-Type {ctype!r}")
    got_code, message = r.error()
    check(isinstance(got_code, str) and got_code and isinstance(message, str) and message,
          f"{what}: not an error object: {r.body[:300]!r}")
    if code:
        check(got_code == code, f"{what}: error code {got_code!r}, expected {code!r}")
    for n in names:
        check(n in message, f"{what}: the message {message!r} does not name {n!r}")
    if status == 401:
        check((r.header("WWW-Authenticate") or "").startswith("Bearer"),
              f"{what}: 401 without 'WWW-Authenticate: Bearer': {dict(r.headers)}")
    if status == 503:
        ra = r.header("Retry-After")
        check(ra is not None and ra.isdigit() and int(ra) > 0, f"{what}: 503 Retry-After {ra!r}")
    return message


def submit(x, m, status=202):
    r = x.d.api("POST", "/v1/messages", m)
    check(r.status == status, f"POST /v1/messages: HTTP {r.status}: {r.body[:300]!r}")
    return r.json()


# ---- routes --------------------------------------------------------------------------

@cases.add
def healthz_without_key(x):
    for key in (None, "wrong-key", API_KEYS[0]):
        r = x.d.api("GET", "/healthz", key=key)
        check(r.status == 200, f"/healthz (key {key}): HTTP {r.status}")
        check(r.json().get("status") == "ok", f"/healthz body {r.body!r}")
    p = curl([f"http://127.0.0.1:{x.d.api_port}/healthz", "-o", "-", "-w", "\n%{http_code}"])
    check(p.returncode == 0 and p.stdout.endswith(b"\n200"), f"curl /healthz: {p.stdout!r} "
          f"{p.stderr!r}")


@cases.add
def submit_one_and_status(x):
    # to as one string, as a list, as objects; recipients at both receivers.
    shapes = [("one-string", "solo@a.test", ["solo@a.test"]),
              ("list", ["l1@a.test", "l2@b.test"], ["l1@a.test", "l2@b.test"]),
              ("objects", [{"email": "o1@a.test"}, {"email": "o2@b.test", "vars": {"k": 1}},
                           "o3@a.test"], ["o1@a.test", "o2@b.test", "o3@a.test"])]
    for tid, to, rcpts in shapes:
        r = submit(x, msg(f"route-{tid}", to))
        mid = r["id"]
        check(isinstance(mid, str) and len(mid) == 16 and int(mid, 16) >= 0, f"id {mid!r}")
        got = [(e["email"], e["id"]) for e in r["recipients"]]
        check(got == [(a, f"{mid}.{i}") for i, a in enumerate(rcpts)],
              f"{tid}: recipients {got}")
        x.delivered[f"route-{tid}"] = set(rcpts)
        s = wait_rcpts(x.d, mid, "delivered")
        check(s["id"] == mid and s["from"] == SENDER, f"status head {s}")
        check(s["submitted"].endswith("Z") and s["size"] > 0, f"status {s}")
        for i, rc in enumerate(s["recipients"]):
            check(rc["email"] == rcpts[i] and rc["id"] == f"{mid}.{i}", f"status rcpt {rc}")
            check(rc["attempts"] == 1, f"{rc['email']}: attempts {rc['attempts']}")
            check(rc["last_response"] and rc["last_response"].startswith("250"),
                  f"{rc['email']}: last_response {rc['last_response']!r}")
            check(rc["next_attempt"] is None, f"next_attempt {rc['next_attempt']!r}")
        # {id}.{n}: that recipient only.
        for i, a in enumerate(rcpts):
            one = api_status(x.d, f"{mid}.{i}")
            check([e["email"] for e in one["recipients"]] == [a], f"{mid}.{i}: {one}")
    # The id from curl's answer works too.
    body = json.dumps(msg("route-curl", ["c@a.test"]))
    p = curl(["-H", f"Authorization: Bearer {API_KEYS[1]}", "-H", "Content-Type: application/json",
              "--data-binary", body, f"http://127.0.0.1:{x.d.api_port}/v1/messages"])
    check(p.returncode == 0, f"curl: {p.stderr!r}")
    mid = json.loads(p.stdout)["id"]
    wait_rcpts(x.d, mid, "delivered")
    x.delivered["route-curl"] = {"c@a.test"}


@cases.add
def submit_raw(x):
    raw = ("From: Raw Sender <api@origin.test>\r\nTo: raw@b.test\r\nSubject: raw route\r\n"
           "X-Test-Id: route-raw\r\n\r\nraw body line 1\r\n.leading dot\r\n")
    r = submit(x, {"from": SENDER, "to": ["raw@b.test"], "raw": raw})
    wait_rcpts(x.d, r["id"], "delivered")
    x.delivered["route-raw"] = {"raw@b.test"}
    # LF-only raw input is stored with CRLF and arrives the same.
    raw_lf = raw.replace("\r\n", "\n").replace("route-raw", "route-raw-lf")
    r = submit(x, {"from": SENDER, "to": "raw2@a.test", "raw": raw_lf})
    wait_rcpts(x.d, r["id"], "delivered")
    x.delivered["route-raw-lf"] = {"raw2@a.test"}


@cases.add
def batch_mixed(x):
    good1 = msg("batch-good-1", ["bg1@a.test", "bg1@b.test"])
    bad_field = msg("batch-bad-field", ["bf@a.test"], subject=42)
    bad_addr = msg("batch-bad-addr", ["ok@a.test", "not an address"])
    too_big = msg("batch-too-big", ["tb@a.test"], text="x" * (MAX_MESSAGE + 100))
    good2 = msg("batch-good-2", "bg2@a.test")
    r = x.d.api("POST", "/v1/messages/batch",
                {"messages": [good1, bad_field, bad_addr, too_big, good2]})
    check(r.status == 202, f"batch: HTTP {r.status}: {r.body[:300]!r}")
    res = r.json()["results"]
    check(len(res) == 5, f"batch: {len(res)} results for 5 messages")
    for i in (0, 4):
        check("id" in res[i] and "error" not in res[i], f"result {i}: {res[i]}")
    check(len(res[0]["recipients"]) == 2 and res[0]["recipients"][1]["id"] == res[0]["id"] + ".1",
          f"result 0 recipients {res[0]}")
    for i, code, name in ((1, "bad_field", "subject"), (2, "invalid_address", "not an address"),
                          (3, "too_large", "")):
        e = res[i].get("error")
        check(e and "id" not in res[i], f"result {i}: expected an error, got {res[i]}")
        check(e["code"] == code and name in e["message"], f"result {i}: {e}")
    check(res[0]["id"] != res[4]["id"], "two accepted messages share an id")
    for i in (0, 4):
        wait_rcpts(x.d, res[i]["id"], "delivered")
    x.delivered["batch-good-1"] = {"bg1@a.test", "bg1@b.test"}
    x.delivered["batch-good-2"] = {"bg2@a.test"}
    x.absent = getattr(x, "absent", set()) | {"batch-bad-field", "batch-bad-addr",
                                               "batch-too-big"}


@cases.add
def stats_queue_metrics(x):
    for path in ("/v1/stats", "/v1/queue"):
        r = x.d.api("GET", path)
        check(r.status == 200, f"{path}: HTTP {r.status}")
        s = r.json()
        for k in ("queued", "deferred", "in_flight", "delivered", "bounced", "connections"):
            check(isinstance(s.get(k), int), f"{path}: {k} = {s.get(k)!r}")
        check(s["accepted"]["api"] >= 7, f"{path}: accepted {s['accepted']}")
        check(s["delivered"] >= 10, f"{path}: delivered {s['delivered']}")
        doms = {d["domain"]: d for d in s["domains"]}
        check({"a.test", "b.test"} <= set(doms), f"{path}: domains {sorted(doms)}")
        check(s["spool"]["accepting"] is True, f"{path}: spool {s['spool']}")
    r = x.d.api("GET", "/metrics")
    check(r.status == 200, f"/metrics: HTTP {r.status}")
    check((r.header("Content-Type") or "").startswith("text/plain"), f"/metrics Content-Type "
          f"{r.header('Content-Type')!r}")
    check(b'ringpost_messages_accepted_total{source="api"}' in r.body, "/metrics content")


@cases.add
def queue_admin_routes(x):
    for action in ("retry", "suspend", "resume", "purge"):
        r = x.d.api("POST", f"/v1/queue/a.test/{action}")
        check(r.status == 200, f"{action}: HTTP {r.status}: {r.body!r}")
        j = r.json()
        check(j.get("domain") == "a.test" and j.get("action") == action and
              isinstance(j.get("recipients"), int), f"{action}: {j}")
    # Domains are case-insensitive; ?mode=bounce is accepted on purge.
    r = x.d.api("POST", "/v1/queue/B.TEST/purge?mode=bounce")
    check(r.status == 200 and r.json()["domain"] == "b.test", f"purge B.TEST: {r!r}")
    # Suspending a domain nobody has written to yet holds its future mail.
    r = x.d.api("POST", "/v1/queue/later.test/suspend")
    check(r.status == 200, f"suspend unknown domain: {r!r}")
    r = x.d.api("POST", "/v1/queue/later.test/resume")
    check(r.status == 200, f"resume it: {r!r}")


# ---- errors ------------------------------------------------------------------------

@cases.add
def errors_401(x):
    routes = [("POST", "/v1/messages", msg("x", "a@a.test")),
              ("POST", "/v1/messages/batch", {"messages": [msg("x", "a@a.test")]}),
              ("GET", "/v1/messages/0123456789abcdef", None), ("GET", "/v1/stats", None),
              ("GET", "/metrics", None), ("GET", "/v1/queue", None),
              ("POST", "/v1/queue/a.test/retry", None)]
    for method, path, body in routes:
        expect_error(x.d.api(method, path, body, key=None), 401, "unauthorized",
                     what=f"{method} {path} without a key")
        expect_error(x.d.api(method, path, body, key="not-a-key"), 401, "unauthorized",
                     what=f"{method} {path} with a wrong key")
    for hdr in ("Basic dGVzdC1rZXktb25lOg==", "Bearer", "Bearer ", "test-key-one",
                "Bearer test-key-one-x", "Bearer test-key", "Token test-key-one"):
        r = x.d.api("GET", "/v1/stats", key=None, headers={"Authorization": hdr})
        expect_error(r, 401, what=f"Authorization: {hdr}")
    # Both configured keys work; the scheme is case-insensitive.
    for hdr in (f"Bearer {API_KEYS[1]}", f"bearer {API_KEYS[0]}", f"Bearer   {API_KEYS[0]}  "):
        r = x.d.api("GET", "/v1/stats", key=None, headers={"Authorization": hdr})
        check(r.status == 200, f"Authorization: {hdr!r}: HTTP {r.status}")
    # curl shows the header too.
    p = curl(["-i", f"http://127.0.0.1:{x.d.api_port}/v1/stats"])
    check(b" 401 " in p.stdout.split(b"\r\n")[0] and b"WWW-Authenticate: Bearer" in p.stdout,
          f"curl without a key: {p.stdout[:300]!r}")


@cases.add
def errors_404(x):
    for path in ("/index.html", "/v2/messages", "/v1", "/v1/messagesX", "/v1/stats/extra", "/metrics/x",
                 "/healthz/", "/v1/messages/0123456789abcdef", "/v1/messages/nothex",
                 "/v1/messages/0123", "/v1/messages/0123456789abcdef0", "/v1/messages/batch",
                 "/v1/messages/0123456789abcdef.0", "/v1/messages/%00"):
        expect_error(x.d.api("GET", path), 404, "not_found", what=f"GET {path}")
    r = submit(x, msg("for-404", "n404@a.test"))
    x.delivered["for-404"] = {"n404@a.test"}
    mid = r["id"]
    for suffix in (".1", ".99", ".-1", ".x", ".", ".0x", "..0"):
        expect_error(x.d.api("GET", f"/v1/messages/{mid}{suffix}"), 404, "not_found",
                     what=f"GET {mid}{suffix}")
    for path in ("/v1/queue/nowhere.test/retry", "/v1/queue/nowhere.test/resume",
                 "/v1/queue/nowhere.test/purge", "/v1/queue/a.test/frobnicate",
                 "/v1/queue/a.test", "/v1/queue/a.test/", "/v1/queue//retry"):
        expect_error(x.d.api("POST", path), 404, "not_found", what=f"POST {path}")


@cases.add
def errors_405(x):
    table = [("GET", "/v1/messages", "POST"), ("PUT", "/v1/messages", "POST"),
             ("DELETE", "/v1/stats", "GET"), ("POST", "/v1/stats", "GET"),
             ("POST", "/metrics", "GET"), ("PUT", "/healthz", "GET"),
             ("POST", "/v1/queue", "GET"), ("GET", "/v1/queue/a.test/retry", "POST"),
             ("PUT", "/v1/messages/0123456789abcdef", "DELETE"),
             ("PATCH", "/v1/messages/batch", "POST")]
    for method, path, allow in table:
        r = x.d.api(method, path, b"{}" if method in ("PUT", "PATCH", "POST") else None)
        expect_error(r, 405, "method_not_allowed", what=f"{method} {path}")
        got = {m.strip() for m in (r.header("Allow") or "").split(",") if m.strip()}
        check(allow in got, f"{method} {path}: Allow {r.header('Allow')!r}, expected {allow}")
        check(method not in got, f"{method} {path}: Allow {got} lists the refused method")
    # Without a key: still 405 (the method is wrong whoever asks).
    r = x.d.api("DELETE", "/v1/stats", key=None)
    check(r.status == 405, f"DELETE /v1/stats without a key: HTTP {r.status}")


BAD_JSON = [b"", b"{", b"not json", b'{"from": "a@a.test",}', b'{"from": "a@a.test"} {}',
            b'{"from": "a@a.test", "from": "b@a.test", "to": "c@a.test", "text": "t"}',
            b"\xff\xfe{}", b'{"to": "\xff@a.test"}', b"nul\x00", b"[" * 5000, b"1e999999"]

# (what, the message with the mistake, a name the error message must contain)
WRONG_FIELDS = [
    ("from number", {"from": 5, "to": "a@a.test", "text": "t"}, "from"),
    ("from missing", {"to": "a@a.test", "text": "t"}, "from"),
    ("to missing", {"from": SENDER, "text": "t"}, "to"),
    ("to number", {"from": SENDER, "to": 5, "text": "t"}, "to"),
    ("to empty", {"from": SENDER, "to": [], "text": "t"}, "to"),
    ("to[0] number", {"from": SENDER, "to": [5], "text": "t"}, "to[0]"),
    ("to[1] email number", {"from": SENDER, "to": ["a@a.test", {"email": 5}], "text": "t"},
     "to[1]"),
    ("to[0] unknown key", {"from": SENDER, "to": [{"email": "a@a.test", "name": "A"}],
                           "text": "t"}, "name"),
    ("to[0].vars list", {"from": SENDER, "to": [{"email": "a@a.test", "vars": [1]}],
                         "text": "t"}, "to[0].vars"),
    ("to[0].vars.k object", {"from": SENDER, "to": [{"email": "a@a.test", "vars": {"k": {}}}],
                             "text": "t"}, "to[0].vars.k"),
    ("too many recipients", {"from": SENDER, "to": [f"r{i}@a.test" for i in range(MAX_RCPTS + 1)],
                             "text": "t"}, "to"),
    ("subject number", {"from": SENDER, "to": "a@a.test", "subject": 1, "text": "t"}, "subject"),
    ("text list", {"from": SENDER, "to": "a@a.test", "text": ["t"]}, "text"),
    ("html object", {"from": SENDER, "to": "a@a.test", "html": {"b": 1}}, "html"),
    ("text true", {"from": SENDER, "to": "a@a.test", "text": True}, "text"),
    ("no body", {"from": SENDER, "to": "a@a.test", "subject": "s"}, "text"),
    ("headers list", {"from": SENDER, "to": "a@a.test", "text": "t", "headers": ["X-A: b"]},
     "headers"),
    ("headers value number", {"from": SENDER, "to": "a@a.test", "text": "t",
                              "headers": {"X-Count": 3}}, "headers.X-Count"),
    ("header name with blank", {"from": SENDER, "to": "a@a.test", "text": "t",
                                "headers": {"X Bad": "v"}}, "X Bad"),
    ("header injection", {"from": SENDER, "to": "a@a.test", "text": "t",
                          "headers": {"X-A": "v\r\nBcc: evil@x.test"}}, "headers.X-A"),
    ("reserved header", {"from": SENDER, "to": "a@a.test", "text": "t",
                         "headers": {"Message-ID": "<x@y>"}}, "headers.Message-ID"),
    ("vars list", {"from": SENDER, "to": "a@a.test", "text": "t", "vars": [1]}, "vars"),
    ("vars.k list", {"from": SENDER, "to": "a@a.test", "text": "t", "vars": {"k": [1]}},
     "vars.k"),
    ("attachments object", {"from": SENDER, "to": "a@a.test", "text": "t", "attachments": {}},
     "attachments"),
    ("attachments[0] number", {"from": SENDER, "to": "a@a.test", "text": "t",
                               "attachments": [5]}, "attachments[0]"),
    ("attachments[0] no content", {"from": SENDER, "to": "a@a.test", "text": "t",
                                   "attachments": [{"filename": "a.txt"}]}, "attachments[0]"),
    ("attachments[0].filename number", {"from": SENDER, "to": "a@a.test", "text": "t",
                                        "attachments": [{"filename": 1, "content": "YQ=="}]},
     "attachments[0]"),
    ("attachments[1].content not base64", {"from": SENDER, "to": "a@a.test", "text": "t",
                                           "attachments": [{"content": "YQ=="},
                                                           {"content": "!!not base64!!"}]},
     "attachments[1].content"),
    ("attachments[0].content_type bad", {"from": SENDER, "to": "a@a.test", "text": "t",
                                         "attachments": [{"content": "YQ==",
                                                          "content_type": "text plain"}]},
     "attachments[0].content_type"),
    ("raw number", {"from": SENDER, "to": "a@a.test", "raw": 5}, "raw"),
    ("raw without header", {"from": SENDER, "to": "a@a.test", "raw": "just text"}, "raw"),
    ("raw and subject", {"from": SENDER, "to": "a@a.test", "raw": "A: b\r\n\r\nc",
                         "subject": "s"}, "subject"),
    ("unknown field", {"from": SENDER, "to": "a@a.test", "text": "t", "cc": ["b@a.test"]}, "cc"),
    ("not an object", ["from", "to"], "object"),
]

INVALID_ADDRESSES = [
    ("from plain", {"from": "not-an-address", "to": "a@a.test", "text": "t"}, "not-an-address"),
    ("from display", {"from": "Name <nobody>", "to": "a@a.test", "text": "t"}, "nobody"),
    ("from unclosed", {"from": "Name <a@a.test", "to": "a@a.test", "text": "t"}, "Name <a@a.test"),
    ("from empty", {"from": "", "to": "a@a.test", "text": "t"}, "from"),
    ("to[1] double at", {"from": SENDER, "to": ["a@a.test", "b@@a.test"], "text": "t"},
     "b@@a.test"),
    ("to[0] object", {"from": SENDER, "to": [{"email": "no-at-sign"}], "text": "t"},
     "no-at-sign"),
    ("to blank", {"from": SENDER, "to": "a b@a.test", "text": "t"}, "a b@a.test"),
    ("to bad domain", {"from": SENDER, "to": "a@exa mple.test", "text": "t"}, "a@exa mple.test"),
    ("to without domain", {"from": SENDER, "to": "a@", "text": "t"}, "a@"),
    # Long: quoted up to a limit, which must not cut a UTF-8 character.
    ("to long non-ASCII", {"from": SENDER, "to": "x" + "é" * 150 + "@a.test", "text": "t"},
     "xéé"),
    ("from long non-ASCII", {"from": "€" * 300 + "@a.test", "to": "a@a.test", "text": "t"},
     "€€"),
]


@cases.add
def errors_400(x):
    for body in BAD_JSON:
        r = x.d.api("POST", "/v1/messages", body)
        expect_error(r, 400, "bad_json", what=f"bad JSON {body[:30]!r}")
    r = x.d.api("POST", "/v1/messages/batch", b"{nope")
    expect_error(r, 400, "bad_json", what="batch: bad JSON")
    for what, m, name in WRONG_FIELDS:
        r = x.d.api("POST", "/v1/messages", m)
        expect_error(r, 400, "bad_field", (name,), what=what)
    # The same mistakes inside a batch are reported in their place.
    r = x.d.api("POST", "/v1/messages/batch", {"messages": [m for _, m, _ in WRONG_FIELDS[:5]]})
    check(r.status == 202, f"batch of bad messages: HTTP {r.status}")
    for (what, _, name), res in zip(WRONG_FIELDS[:5], r.json()["results"]):
        e = res.get("error") or {}
        check(e.get("code") == "bad_field" and name in e.get("message", ""),
              f"batch {what}: {res}")
    # Batch envelopes.
    for body, name in (({"messages": "x"}, "messages"), ({"messages": []}, "messages"),
                       ({"msgs": [1]}, "messages"), ([1], "messages"),
                       ({"messages": [msg("y", "y@a.test")], "extra": 1}, "messages")):
        expect_error(x.d.api("POST", "/v1/messages/batch", body), 400, "bad_field", (name,),
                     what=f"batch envelope {body!r:.40}")


@cases.add
def errors_422(x):
    for what, m, name in INVALID_ADDRESSES:
        r = x.d.api("POST", "/v1/messages", m)
        expect_error(r, 422, "invalid_address", (name,), what=what)


@cases.add
def errors_413(x):
    port = x.d.api_port
    # Declared body over max_request_size: answered from the headers alone.
    with HTTPConn(port) as c:
        c.send(f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEYS[0]}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {MAX_REQUEST + 1}\r\n\r\n")
        st, hdrs, body = c.read_response()
        check(st == 413, f"declared {MAX_REQUEST + 1} bytes: HTTP {st} {body!r}")
        check(json.loads(body)["error"]["code"] == "too_large", f"413 body {body!r}")
        check(c.at_eof(), "the connection stays open after a 413 on the headers")
    # Exactly max_request_size is not too large (the JSON itself is bad).
    with HTTPConn(port) as c:
        c.send(f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEYS[0]}\r\n"
               f"Content-Length: {MAX_REQUEST}\r\n\r\n".encode() + b" " * MAX_REQUEST)
        st, _, body = c.read_response()
        check(st == 400, f"a body of exactly max_request_size: HTTP {st} {body!r}")
    # Chunked: refused once the chunks pass the limit.
    with HTTPConn(port) as c:
        c.send(f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEYS[0]}\r\n"
               f"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 16384 + b" " * 16384 + b"\r\n"
        try:
            for _ in range(MAX_REQUEST // 16384 + 2):
                c.send(chunk)
        except OSError:
            pass  # the server may close while we still write
        st, _, body = c.read_response()
        check(st == 413, f"chunked over the limit: HTTP {st} {body!r}")
    # curl with a real body over the limit (curl sends Expect: 100-continue).
    big = x.env.dir / "big.json"
    big.write_text(json.dumps(msg("too-big-request", "big@a.test", text="b" * (MAX_REQUEST + 10))))
    p = curl(["-H", f"Authorization: Bearer {API_KEYS[0]}", "-H", "Content-Type: application/json",
              "--data-binary", f"@{big}", "-w", "\n%{http_code}",
              f"http://127.0.0.1:{port}/v1/messages"])
    check(p.stdout.endswith(b"\n413"), f"curl over max_request_size: {p.stdout[-300:]!r} "
          f"{p.stderr!r}")
    # urllib, the same request (no Expect: the whole body is sent first).
    try:
        r = x.d.api("POST", "/v1/messages", big.read_bytes())
        expect_error(r, 413, "too_large", what="urllib over max_request_size")
    except OSError as e:
        # The server may close before urllib has written everything; the
        # answer it sent is then lost to urllib. Not an error of ours.
        log(f"  (urllib saw {e!r} sending {MAX_REQUEST + 10} bytes: the server closed first)")
    # The message, once built, over max_message_size.
    r = x.d.api("POST", "/v1/messages", msg("too-big-msg", "big@a.test",
                                               text="m" * (MAX_MESSAGE + 1)))
    expect_error(r, 413, "too_large", (str(MAX_MESSAGE),), what="message over max_message_size")
    # Small text, big attachment: the base64 makes it too large.
    att = base64.b64encode(os.urandom(MAX_MESSAGE * 3 // 4)).decode()
    r = x.d.api("POST", "/v1/messages", msg("too-big-att", "big@a.test",
                                               attachments=[{"filename": "a.bin",
                                                             "content": att}]))
    expect_error(r, 413, "too_large", what="attachment over max_message_size")
    r = x.d.api("POST", "/v1/messages", {"from": SENDER, "to": "big@a.test",
                                         "raw": "Subject: big\r\n\r\n" + "r" * MAX_MESSAGE})
    expect_error(r, 413, "too_large", what="raw over max_message_size")
    # A batch over max_batch.
    r = x.d.api("POST", "/v1/messages/batch",
                {"messages": [msg(f"batch-over-{i}", "bo@a.test") for i in range(MAX_BATCH + 1)]})
    expect_error(r, 413, "too_large", (str(MAX_BATCH),), what="batch over max_batch")
    x.absent = getattr(x, "absent", set()) | {"too-big-request", "too-big-msg", "too-big-att"} | \
        {f"batch-over-{i}" for i in range(MAX_BATCH + 1)}
    # Exactly max_batch is fine.
    r = x.d.api("POST", "/v1/messages/batch",
                {"messages": [msg(f"batch-max-{i}", f"bm{i}@a.test") for i in range(MAX_BATCH)]})
    check(r.status == 202 and all("id" in e for e in r.json()["results"]),
          f"a batch of max_batch: {r!r}")
    for i in range(MAX_BATCH):
        x.delivered[f"batch-max-{i}"] = {f"bm{i}@a.test"}


# ---- the spool refuses mail: 503 -----------------------------------------------------

def full_spool(x):
    d2 = x.env.daemon(routes={"a.test": x.smtpd.addr}, name="full", with_api=True,
                      queue={"min_free": "16T"})  # the largest min_free the config takes
    d2.start()
    try:
        expect_error(d2.api("GET", "/healthz", key=None), 503, "unavailable",
                     what="/healthz with the disk 'full'")
        expect_error(d2.api("POST", "/v1/messages", msg("full-1", "f@a.test")), 503,
                     "unavailable", what="POST with the disk 'full'")
        p = curl(["-i", "-H", f"Authorization: Bearer {API_KEYS[0]}", "--data-binary",
                  json.dumps(msg("full-2", "f@a.test")),
                  f"http://127.0.0.1:{d2.api_port}/v1/messages"])
        check(b" 503 " in p.stdout.split(b"\r\n")[0] and b"\r\nRetry-After: " in p.stdout,
              f"curl POST with the disk 'full': {p.stdout[:300]!r}")
        r = d2.api("POST", "/v1/messages/batch", {"messages": [msg("full-3", "f@a.test")]})
        check(r.status in (202, 503), f"batch with the disk 'full': {r!r}")
        if r.status == 202:
            e = r.json()["results"][0].get("error") or {}
            check(e.get("code") == "unavailable", f"batch item with the disk 'full': {r.json()}")
        else:
            expect_error(r, 503, what="batch with the disk 'full'")
        s = d2.api("GET", "/v1/stats").json()
        check(s["spool"]["accepting"] is False, f"stats spool {s['spool']}")
        check(s["accepted"]["api"] == 0, f"stats accepted {s['accepted']}")
        with SMTPConn(d2.port) as c:
            c.expect(220, "banner")
            c.ehlo()
            lines = c.cmd(f"MAIL FROM:<{SENDER}>", 452, "MAIL with the disk 'full'")
            check(lines[0].startswith("452 4.3.1"), f"MAIL reply {lines}")
            c.cmd("QUIT", 221)
        x.absent = getattr(x, "absent", set()) | {"full-1", "full-2", "full-3"}
    finally:
        fails = []
        stop_clean(d2, fails)
        if fails:
            raise TestFailure("; ".join(fails))


cases.append(full_spool)


def max_clients_and_reload(x):
    """[api] max_clients (per shard): one more connection gets 503 with
    Retry-After and is closed. SIGHUP reloads [api] keys: the old key is
    refused from then on, the new one accepted, and [api] max_batch too."""
    d3 = x.env.daemon(routes={"a.test": x.smtpd.addr}, name="small", with_api=True, shards=1,
                      api={"max_clients": 2})
    d3.start()
    try:
        held = [HTTPConn(d3.api_port), HTTPConn(d3.api_port)]
        for c in held:  # both are served
            c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            st, _, _ = c.read_response()
            check(st == 200, f"one of max_clients connections: {st}")
        with HTTPConn(d3.api_port) as c:
            st, hdrs, body = c.read_response()  # answered without a request
            check(st == 503 and hdrs.get("retry-after", "").isdigit(),
                  f"connection over max_clients: {st} {hdrs} {body!r}")
            check(c.at_eof(5), "the connection over max_clients stays open")
        for c in held:
            c.close()
        wait_for(lambda: d3.api("GET", "/healthz", key=None).status == 200, 5,
                 "a connection once the others closed")
        # Reload with other keys and a smaller max_batch.
        text = open(d3.config_path).read().replace(", ".join(API_KEYS), "new-key")
        text = text.replace("[api]\n", "[api]\nmax_batch = 1\n")
        open(d3.config_path, "w").write(text)
        n = d3.log().count("configuration reloaded")
        d3.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d3.log().count("configuration reloaded") > n, 10, "the reload")
        wait_for(lambda: d3.api("GET", "/v1/stats", key=API_KEYS[0]).status == 401, 5,
                 "the old key refused after SIGHUP")
        r = d3.api("GET", "/v1/stats", key="new-key")
        check(r.status == 200, f"the new key after SIGHUP: {r!r}")
        r = d3.api("POST", "/v1/messages/batch", {"messages": [msg("r1", "r@a.test")] * 2},
                   key="new-key")
        expect_error(r, 413, "too_large", what="max_batch after SIGHUP")
    finally:
        fails = []
        stop_clean(d3, fails)
        if fails:
            raise TestFailure("; ".join(fails))


cases.append(max_clients_and_reload)


# ---- the end: what arrived ----------------------------------------------------------------

def check_receivers(x):
    """Every accepted message reached each of its recipients once (a.test at
    smtpd, b.test at smtp-sink); nothing refused arrived."""
    fails = []
    want = {"smtpd": {}, "smtp-sink": {}}
    for tid, rcpts in x.delivered.items():
        for r in rcpts:
            kind = "smtpd" if r.endswith("@a.test") else "smtp-sink"
            want[kind].setdefault(tid, set()).add(r)
    for rx in (x.smtpd, x.sink):
        wait_for(lambda: set(want[rx.kind]) <= {m.header("X-Test-Id") for m in rx.messages()},
                 30, f"every message at {rx.kind}", interval=0.2)
    time.sleep(0.5)
    for rx in (x.smtpd, x.sink):
        seen = {}
        for m in rx.messages():
            seen.setdefault(m.header("X-Test-Id"), []).extend(m.rcpts)
            if m.mailfrom != SENDER:
                fails.append(f"{rx.kind}: envelope sender {m.mailfrom}")
        for tid, rcpts in want[rx.kind].items():
            if sorted(seen.get(tid, [])) != sorted(rcpts):
                fails.append(f"{rx.kind}: {tid} went to {seen.get(tid)}, expected {sorted(rcpts)}")
        for tid in getattr(x, "absent", ()):
            if tid in seen:
                fails.append(f"{rx.kind}: {tid} was refused but delivered")
    # The raw message arrives as written, behind the Received: line.
    for m in x.sink.messages():
        if m.header("X-Test-Id") == "route-raw":
            if b"raw body line 1\n.leading dot\n" not in m.data or \
                    m.header("From") != "Raw Sender <api@origin.test>":
                fails.append(f"route-raw arrived changed: {m.data[:400]!r}")
    return fails


def main():
    with TestEnv("api") as env:
        smtpd = env.smtpd()
        sink = env.sink()
        d = env.daemon(routes={"a.test": smtpd.addr, "b.test": sink.addr}, with_api=True,
                       submission={"max_message_size": MAX_MESSAGE, "max_recipients": MAX_RCPTS},
                       api={"max_request_size": MAX_REQUEST, "max_batch": MAX_BATCH}).start()
        x = Ctx(env, d, smtpd, sink)
        failures = run_cases(cases, x, [d])
        if d.alive():
            try:
                failures += check_receivers(x)
            except (TestFailure, OSError) as e:
                failures.append(f"at the receivers: {e}")
        stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
