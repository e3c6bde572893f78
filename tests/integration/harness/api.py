"""api.py - the HTTP API calls the tests repeat: batch submission, a message's
and a domain's status, waits on recipient states, the bounce mailbox."""

from .base import check
from .proc import wait_for


def api_submit_batch(d, messages, chunk=1000):
    """POST /v1/messages/batch in chunks; every entry must get an id.
    Returns the ids in order."""
    ids = []
    for i in range(0, len(messages), chunk):
        part = messages[i:i + chunk]
        r = d.api("POST", "/v1/messages/batch", {"messages": part}, timeout=60)
        check(r.status == 202, f"batch: HTTP {r.status}: {r.body[:300]!r}")
        res = r.json()["results"]
        check(len(res) == len(part), f"batch: {len(res)} results for {len(part)} messages")
        for e in res:
            check(e.get("id"), f"batch entry refused: {e}")
            ids.append(e["id"])
    return ids


def api_send(d, sender, rcpts, tag, n=1):
    """n text messages (one batch request), each to every address in rcpts,
    subjects "TAG 0".. ; their ids."""
    return api_submit_batch(d, [{"from": sender, "to": list(rcpts), "subject": f"{tag} {i}",
                                 "text": f"{tag} {i}\n"} for i in range(n)])


def api_status(d, mid):
    """GET /v1/messages/{id} as a dict."""
    r = d.api("GET", f"/v1/messages/{mid}")
    check(r.status == 200, f"GET /v1/messages/{mid}: HTTP {r.status}: {r.body[:200]!r}")
    return r.json()


def wait_rcpts(d, mid, want, timeout=20):
    """Wait until every recipient of mid is in state want; the status."""
    def done():
        st = api_status(d, mid)
        return st if all(r["state"] == want for r in st["recipients"]) else None
    return wait_for(done, timeout, f"every recipient of {mid} {want}", interval=0.1)


def api_rcpt(d, mid):
    """The first recipient's entry of GET /v1/messages/{id}."""
    return api_status(d, mid)["recipients"][0]


def wait_rcpt(d, mid, want, timeout=20):
    """Wait until every recipient of mid is in state want; the first one."""
    return wait_rcpts(d, mid, want, timeout)["recipients"][0]


def api_domain(d, domain):
    """The domain's entry in GET /v1/stats (None when it has none)."""
    for e in d.api("GET", "/v1/stats").json().get("domains", []):
        if e.get("domain") == domain:
            return e
    return None


def bounce_list(d):
    """GET /v1/bounces: the mailbox's entries."""
    r = d.api("GET", "/v1/bounces")
    check(r.status == 200, f"GET /v1/bounces: HTTP {r.status}")
    return r.json()["messages"]


def bounce_get(d, uid):
    r = d.api("GET", f"/v1/bounces/{uid}")
    check(r.status == 200, f"GET /v1/bounces/{uid}: HTTP {r.status}")
    check((r.header("Content-Type") or "").startswith("message/rfc822"),
          f"GET /v1/bounces/{uid}: Content-Type {r.header('Content-Type')!r}")
    return r.body


def bounces_for(d, rcpt):
    """Every DSN (bytes) in the mailbox whose Final-Recipient is rcpt."""
    want = f"Final-Recipient: rfc822; {rcpt}\r\n".encode().lower()
    out = []
    for e in bounce_list(d):
        b = bounce_get(d, e["uid"])
        if want in b.lower():
            out.append(b)
    return out
