"""test_dashboard.py - the dashboard page (GET / and /ui) served by the real
daemon and rendered by headless Chromium (Debian package chromium).

  - GET / and GET /ui answer the page without a key: text/html; charset=utf-8,
    a Content-Security-Policy that allows the page's own inline script and
    style only (their SHA-256 must match the bytes served: a page edit that
    forgot the hash would not run), connect-src 'self', no framing, nosniff,
    no-cache; HEAD answers the same headers and no body (a request pipelined
    after it is answered next); POST / is 405 with Allow; /uix is 404; the
    page is self-contained (no URL to another origin) and under 40 KB;
  - /v1/stats has the per-domain TLS state the page shows; GET
    /v1/bounces?limit=N gives the newest N;
  - mail to a receiver that takes it (a.test) and one that refuses every
    recipient (b.test: bounces), a suppression whose reason is markup (shown
    as text, not run), then Chromium
    opens http://127.0.0.1:PORT/#key=KEY: the DOM shows the totals of
    /v1/stats (delivered, bounced, queued, deferred, in flight), a row per
    domain, the bounces and suppressions, and "Live";
  - a wrong key shows the key form with the 401 message; no key, the form
    without one.
Skips (exit 77) only when chromium is not installed.
"""

import base64
import hashlib
import re
import socket
import sys

from harness import (API_KEY, SLOW, SOURCE_ROOT, TestEnv, check, log, raise_failures, run_test,
                     stop_clean, wait_for)

sys.path.insert(0, str(SOURCE_ROOT / "bench"))
import browser  # noqa: E402

N_A, N_B = 7, 3
EVIL = "<img src=x onerror=alert(1)> complained"


def raw(port, data, timeout=10):
    """Send data on one connection; everything the server says until it
    closes (or stays quiet for a moment after answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        s.settimeout(1.0 * SLOW)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except socket.timeout:
            pass
    return out


def csp_hash(page, tag):
    m = re.search(rf"<{tag}>(.*?)</{tag}>".encode(), page, re.S)
    check(m, f"the page has no <{tag}> element")
    return "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"


def check_page_http(d, failures):
    pages = {}
    for path in ("/", "/ui", "/ui?x=1"):
        r = d.api("GET", path, key=None)
        check(r.status == 200, f"GET {path} without a key: HTTP {r.status}")
        pages[path] = r
    r = pages["/"]
    body = r.body
    check(r.body == pages["/ui"].body, "GET / and GET /ui answer different pages")
    want = {"Content-Type": "text/html; charset=utf-8", "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
    for k, v in want.items():
        if r.header(k) != v:
            failures.append(f"GET /: {k} is {r.header(k)!r}, want {v!r}")
    csp = r.header("Content-Security-Policy") or ""
    parts = dict((p.strip().split(" ", 1) + [""])[:2] for p in csp.split(";") if p.strip())
    want_csp = {"default-src": "'none'", "script-src": csp_hash(body, "script"),
                "style-src": csp_hash(body, "style"), "connect-src": "'self'",
                "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'none'"}
    for k, v in want_csp.items():
        if parts.get(k) != v:
            failures.append(f"CSP {k} is {parts.get(k)!r}, want {v!r} (CSP: {csp})")
    check(len(body) < 40 * 1024, f"the page is {len(body)} bytes (over 40 KB)")
    # Self-contained: no URL to anything else (fonts, scripts, images).
    ext = re.findall(rb"(?:src|href)\s*=\s*[\"']?(?:https?:)?//|url\(\s*[\"']?https?:|@import",
                     body)
    check(not ext, f"the page loads something from elsewhere: {ext}")
    check(b"<script src" not in body and b"<link" not in body, "the page links other files")
    # HEAD: the same headers, no body: the pipelined request's answer follows
    # right after the HEAD's header block.
    out = raw(d.api_port, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, rest = out.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), f"HEAD /: {head[:200]!r}")
    check(f"Content-Length: {len(body)}".encode() in head,
          f"HEAD / says another length than GET: {head!r}")
    check(b"Content-Security-Policy" in head, "HEAD / has no CSP")
    check(rest.startswith(b"HTTP/1.1 200"), f"HEAD / sent a body: {rest[:120]!r}")
    # Other methods: 405 naming what is allowed, like the rest of the API.
    for path in ("/", "/ui"):
        r = d.api("POST", path, body=b"x", key=None)
        check(r.status == 405, f"POST {path}: HTTP {r.status}, want 405")
        check(r.header("Allow") == "GET, HEAD", f"POST {path}: Allow {r.header('Allow')!r}")
        check(r.json()["error"]["code"] == "method_not_allowed", f"POST {path}: {r.body!r}")
    r = d.api("DELETE", "/", key=API_KEY)
    check(r.status == 405, f"DELETE / with a key: HTTP {r.status}")
    for path in ("/uix", "/ui/", "/index.html"):
        r = d.api("GET", path, key=None)
        check(r.status == 404, f"GET {path}: HTTP {r.status}, want 404 (only / and /ui)")
    r = d.api("GET", "/v1/stats", key=None)
    check(r.status == 401, f"GET /v1/stats without a key: {r.status} (the page must not open it)")
    log(f"  GET / and /ui: {len(body):,} bytes, CSP {csp[:60]}...; HEAD, 405, 404 fine")
    return body


def settled(d):
    s = d.api("GET", "/v1/stats").json()
    return s if s["delivered"] == N_A and s["bounced"] == N_B and not s["in_flight"] else None


def values(dom):
    """{name: int} of the totals the page shows (data-value, the raw number)."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r'id="kpi-(\w+)" data-value="(\d+)"', dom)}


def main():
    if not browser.chromium():
        print("SKIP test_dashboard: chromium is not installed (apt-get install chromium)",
              file=sys.stderr)
        sys.exit(77)
    with TestEnv("dashboard") as env:
        smtpd = env.smtpd()
        sink = env.sink(extra_args=["-f", "RCPT"])  # 550 to every RCPT
        d = env.daemon(routes={"a.test": smtpd.addr, "b.test": sink.addr}, with_api=True,
                       queue={"retry": "1h"}).start()
        failures = []
        try:
            check_page_http(d, failures)
            for i in range(N_A):
                r = d.api("POST", "/v1/messages", {"from": "dash@origin.test",
                                                   "to": [f"u{i}@a.test"], "subject": f"a{i}",
                                                   "text": "hi\n"})
                check(r.status == 202, f"POST a.test: {r.status} {r.body!r}")
            for i in range(N_B):
                r = d.api("POST", "/v1/messages", {"from": "dash@origin.test",
                                                   "to": [f"gone{i}@b.test"],
                                                   "subject": f"b{i}", "text": "hi\n"})
                check(r.status == 202, f"POST b.test: {r.status}")
            # An operator's entry whose reason is markup: shown as text.
            r = d.api("POST", "/v1/suppressions", {"address": "gone0@b.test", "reason": EVIL})
            check(r.status == 201, f"POST /v1/suppressions: {r.status} {r.body!r}")
            stats = wait_for(lambda: settled(d), 30 * SLOW, "the mail to be delivered/bounced")
            dom = {x["domain"]: x for x in stats["domains"]}
            tls = dom["a.test"].get("tls")
            check(tls and tls["policy"] == "opportunistic" and tls["sessions"] >= 1 and
                  tls["tls_sessions"] == 0 and tls["handshake_failures"] == 0,
                  f"a.test tls: {tls} (a plain receiver: sessions, none in TLS)")
            check(dom["b.test"].get("tls", {}).get("sessions", 0) >= 1,
                  f"b.test tls: {dom['b.test'].get('tls')}")
            # The bounce mailbox has ringpost's DSNs: ?limit gives the newest.
            allb = wait_for(lambda: (lambda b: b if len(b["messages"]) >= N_B else None)(
                d.api("GET", "/v1/bounces").json()), 10 * SLOW, "the DSNs in the mailbox")
            two = d.api("GET", "/v1/bounces?limit=2").json()["messages"]
            check([m["uid"] for m in two] == [m["uid"] for m in allb["messages"][-2:]],
                  f"?limit=2 gave {two}, the newest are {allb['messages'][-2:]}")
            check(d.api("GET", "/v1/bounces?limit=0").status == 400, "?limit=0 is not a 400")

            url = f"http://127.0.0.1:{d.api_port}/#key={API_KEY}"
            page = browser.dump_dom(url, budget_ms=4000, timeout=45)
            (env.dir / "dashboard.html").write_text(page)
            got = values(page)
            now = d.api("GET", "/v1/stats").json()
            for k in ("delivered", "bounced", "queued", "deferred", "in_flight"):
                if got.get(k) != now[k]:
                    failures.append(f"the page shows {k} = {got.get(k)}, /v1/stats {now[k]}")
            for name in ("a.test", "b.test"):
                if f'data-domain="{name}"' not in page:
                    failures.append(f"no row for {name} on the page")
            m = re.search(r'<tr data-domain="a.test">(.*?)</tr>', page, re.S)
            cells = re.findall(r"<td[^>]*>(.*?)</td>", m.group(1), re.S) if m else []
            if not cells or re.sub(r"\D", "", cells[5]) != str(N_A):
                failures.append(f"a.test's row does not show {N_A} delivered: {cells}")
            if "Undelivered Mail Returned to Sender" not in page:
                failures.append("the latest bounces are not on the page")
            if "gone0@b.test" not in page:
                failures.append("the suppression of gone0@b.test is not on the page")
            if "&lt;img src=x" not in page or "<img" in page:
                failures.append("the suppression's reason is not shown as text (escaped)")
            if not re.search(r'id="status-text">Live', page):
                failures.append("the page does not say it is live")
            if re.search(r'<form id="login"[^>]*>', page).group(0).find("hidden") < 0:
                failures.append("the key form shows although the key is good")
            log(f"  Chromium shows {got}")

            bad = browser.dump_dom(f"http://127.0.0.1:{d.api_port}/#key=not-a-key",
                                   budget_ms=3000, timeout=45)
            form = re.search(r'<form id="login"[^>]*>', bad).group(0)
            err = re.search(r'<p id="login-error"[^>]*>(.*?)</p>', bad, re.S)
            if "hidden" in form or not err or "refused" not in err.group(1):
                failures.append(f"a wrong key: the form {form!r}, error {err and err.group(0)!r}")
            if values(bad):
                failures.append(f"a wrong key still shows numbers: {values(bad)}")
            none = browser.dump_dom(f"http://127.0.0.1:{d.api_port}/", budget_ms=2000,
                                    timeout=45)
            form = re.search(r'<form id="login"[^>]*>', none).group(0)
            if "hidden" in form or not re.search(r'<p id="login-error"[^>]*hidden', none):
                failures.append(f"no key: the form {form!r} should show, without an error")
        finally:
            stop_clean(d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
