"""test_sched_retry.py - retries, bounces and destination back-off, against
ringpost-sink processes that answer as told ([queue] retry = 2s, 4s).

Cases:
  - soft.test's sink answers every address 451, 451, then 250
    (--rcpt-script): each recipient is delivered at its third attempt.
    Between tries GET /v1/messages/{id} says deferred with attempts 1, then
    2, and next_attempt = last_attempt + 2 s, then + 4 s, each within the
    +-10% jitter (exact, from the API); the daemon's log shows every
    attempt no earlier than the next_attempt the API announced and at most
    a little later (slack for a loaded machine and ASan); by the sink's own
    clock (its stats lines) the second round of RCPTs and the deliveries
    came no earlier than due; the sink counted two 451s per address and
    saved each message once;
  - hard.test's sink answers 550: bounced at the first attempt with the
    reply as last_response, and an RFC 3464 DSN in the bounce mailbox (GET
    /v1/bounces, /v1/bounces/{uid}) parsed with Python's email package:
    multipart/report; report-type=delivery-status with a human-readable
    text/plain part, a message/delivery-status part (Reporting-MTA,
    Arrival-Date, Final-Recipient, Action: failed, Status 5.1.1,
    Remote-MTA, Diagnostic-Code: smtp; 550 ..., Last-Attempt-Date), the
    original header section as text/rfc822-headers (the whole message as
    message/rfc822 for SMTP RET=FULL, with ENVID and ORCPT reported), a
    null return path (Return-Path: <>), From MAILER-DAEMON, To the sender,
    Auto-Submitted; a message from the null sender (MAIL FROM:<>) that
    fails gets no DSN (a bounce is never bounced), nor does NOTIFY=NEVER;
  - a destination that refuses connections (dead.test: a bound port that
    never listens) and one that accepts and closes at once (slam.test,
    counted by the listener itself) back off as a whole: after the first
    burst (at most max_connections) each back-off period costs one probe
    however many messages wait (200 more queued during the back-off add no
    connection), the probes are spaced by the retry schedule, /v1/stats
    shows backoff_until, and ok.test's mail keeps flowing meanwhile.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import email
import email.policy
import email.utils
import time

from harness import (Cases, ClosedPort, SLOW, SlammingPort, TestEnv, api_domain, api_status,
                     api_submit_batch, bounce_list, bounces_for, check, free_port, iso_epoch, log,
                     log_events, parse_kv, raise_failures, run_cases, run_test, saved_mail,
                     sink_history, smtp_submit, stop_clean, wait_for)

RETRY = (2.0, 4.0)  # [queue] retry, seconds
JITTER = 0.10
HOSTNAME = "mta.sched.test"
SENDER = "sched@origin.test"
# How late an attempt may come after its next_attempt: the tick (20 ms), a
# connection and a round trip, on a busy 2-core machine; ASan is slower.
LATE = 1.0 * SLOW

cases = Cases()


class Ctx:
    pass


def msg(to, tag, **kw):
    m = {"from": SENDER, "to": to, "subject": f"sched {tag}", "text": f"body of {tag}\n",
         "headers": {"X-Test-Id": tag}}
    m.update(kw)
    return m


def attempt_lines(x, addr):
    """(time, fields) of every delivery attempt logged for addr."""
    out = []
    for t, line in log_events(x.d, rf" delivery id=\S+ rcpt=<{addr}> "):
        out.append((t, parse_kv(line[line.find(" delivery id=") + 1:])))
    return out


# ---- 451, 451, 250 ---------------------------------------------------------

@cases.add
def soft_fail_twice_then_delivered(x):
    # Three messages: one recipient each, and one with two recipients (one
    # transaction, one jitter for both).
    to = [["s1@soft.test"], ["s2@soft.test"], ["s3@soft.test", "s4@soft.test"]]
    ids = api_submit_batch(x.d, [msg(t, f"soft-{i}") for i, t in enumerate(to)])
    t_submit = time.time()
    seen = {}  # (mid, rcpt index) -> list of status snapshots at each attempt count

    def poll():
        done = True
        for mid in ids:
            for rc in api_status(x.d, mid)["recipients"]:
                key = (mid, rc["email"])
                snaps = seen.setdefault(key, {})
                snaps.setdefault((rc["state"], rc["attempts"]), rc)
                if rc["state"] != "delivered":
                    done = False
                check(rc["state"] in ("queued", "deferred", "delivered"),
                      f"{rc['email']}: state {rc['state']}: {rc}")
        return done
    # Both retries and a margin: ~6 s in all.
    wait_for(poll, sum(RETRY) * (1 + JITTER) + 4 * LATE + 5, "every soft.test recipient delivered",
             interval=0.05)
    log(f"soft.test delivered {time.time() - t_submit:.2f}s after submission")
    for (mid, addr), snaps in seen.items():
        d1 = snaps.get(("deferred", 1))
        d2 = snaps.get(("deferred", 2))
        ok = snaps.get(("delivered", 3))
        check(d1 and d2 and ok, f"{addr}: did not see deferred/1, deferred/2 and delivered/3 "
              f"(saw {sorted(snaps)})")
        check(not any(a > 3 for _, a in snaps), f"{addr}: more than three attempts: {sorted(snaps)}")
        for snap, n, delay in ((d1, 1, RETRY[0]), (d2, 2, RETRY[1])):
            last, nxt = iso_epoch(snap["last_attempt"]), iso_epoch(snap["next_attempt"])
            gap = nxt - last
            check(delay * (1 - JITTER) - 0.002 <= gap <= delay * (1 + JITTER) + 0.002,
                  f"{addr} after attempt {n}: next_attempt - last_attempt = {gap:.3f}s, "
                  f"expected {delay}s +-{JITTER:.0%}: {snap}")
            check("451" in (snap["last_response"] or ""), f"{addr}: last_response {snap}")
        check(ok["next_attempt"] is None and (ok["last_response"] or "").startswith("250"),
              f"{addr}: delivered status {ok}")
        # The log: three attempts, each no earlier than announced.
        lines = attempt_lines(x, addr)
        check([f["status"] for _, f in lines] == ["deferred", "deferred", "delivered"],
              f"{addr}: logged attempts {[f['status'] for _, f in lines]}")
        check([f["attempts"] for _, f in lines] == ["1", "2", "3"],
              f"{addr}: logged attempt numbers {[f['attempts'] for _, f in lines]}")
        t1, t2, t3 = (t for t, _ in lines)
        for n, (t_prev, t_next, snap) in enumerate(((t1, t2, d1), (t2, t3, d2)), 1):
            due = iso_epoch(snap["next_attempt"])
            # The log line of an attempt is written when its reply is in:
            # never before the time the API announced for it.
            check(t_next >= due - 0.002, f"{addr}: attempt {n + 1} at {t_next:.3f}, before "
                  f"its next_attempt {due:.3f}")
            check(t_next <= due + LATE, f"{addr}: attempt {n + 1} {t_next - due:.3f}s after "
                  f"its next_attempt (allowed {LATE:.1f}s)")
            delay = RETRY[n - 1]
            check(delay * (1 - JITTER) - 0.05 <= t_next - t_prev <= delay * (1 + JITTER) + LATE,
                  f"{addr}: attempts {n} and {n + 1} {t_next - t_prev:.3f}s apart, expected "
                  f"{delay}s +-{JITTER:.0%}")
    # The two recipients of one message went together (one transaction each time).
    t3a = [t for t, _ in attempt_lines(x, "s3@soft.test")]
    t3b = [t for t, _ in attempt_lines(x, "s4@soft.test")]
    check(all(abs(a - b) < 0.05 for a, b in zip(t3a, t3b)),
          f"recipients of one message retried apart: {t3a} vs {t3b}")
    # At the sink: two 451s per address, each message saved exactly once.
    wait_for(lambda: x.soft.messages("soft.test") >= 3, 5, "3 messages at the soft sink")
    # The sink's own clock (a stats line every 100 ms, written after the
    # counts it holds): the second round of RCPTs (451 number 5 and up)
    # came no earlier than the first next_attempt, the deliveries no
    # earlier than the second and not much later than the last.
    time.sleep(0.3)
    hist = sink_history(x.soft)
    due1 = min(iso_epoch(s[("deferred", 1)]["next_attempt"]) for s in seen.values())
    due2 = min(iso_epoch(s[("deferred", 2)]["next_attempt"]) for s in seen.values())
    last2 = max(iso_epoch(s[("deferred", 2)]["next_attempt"]) for s in seen.values())
    t_round2 = next(h["t"] for h in hist if h.get("rejected", {}).get("451", 0) >= 5)
    t_first = next(h["t"] for h in hist if h.get("messages", 0) >= 1)
    t_all = next(h["t"] for h in hist if h.get("messages", 0) >= 3)
    check(t_round2 >= due1 - 0.002, f"the sink saw second attempts at {t_round2:.3f}, before "
          f"the first next_attempt {due1:.3f}")
    check(t_first >= due2 - 0.002, f"the sink had a message at {t_first:.3f}, before the "
          f"first third attempt was due {due2:.3f}")
    check(t_all <= last2 + LATE + 0.2, f"the sink had all messages {t_all - last2:.3f}s "
          f"after the last third attempt was due")
    st = x.soft.stats()
    check(st.get("rejected", {}).get("451") == 8, f"soft sink rejected {st.get('rejected')}, "
          f"expected 8 x 451 (4 addresses x 2)")
    saved = saved_mail(x.soft_dir)
    tags = sorted(m.header("X-Test-Id") for m in saved)
    check(tags == ["soft-0", "soft-1", "soft-2"], f"soft sink saved {tags}")
    both = [m for m in saved if m.header("X-Test-Id") == "soft-2"][0]
    check(sorted(both.rcpts) == ["s3@soft.test", "s4@soft.test"],
          f"soft-2 envelope {both.rcpts}")


# ---- 550 and the DSN -------------------------------------------------------

def parse_dsn(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def status_fields(part):
    """The message/delivery-status part's field groups: [per-message, per-recipient...]
    as dicts (lowercase names)."""
    groups = []
    for sub in part.get_payload():
        groups.append({k.lower(): v for k, v in sub.items()})
    return groups


def check_dsn(raw, *, rcpt, sender, submitted, subject, test_id, full=False, envid=None,
              orcpt=None, remote=None, diag_prefix="550 5.1.1"):
    what = f"DSN for {rcpt}"
    text = raw.decode("utf-8", "replace")
    check(raw.startswith(b"Return-Path: <>\r\n"),
          f"{what}: the mailbox copy does not record the null return path first: "
          f"{text[:200]!r}")
    m = parse_dsn(raw)
    check(m.get("Return-Path") == "<>", f"{what}: Return-Path {m.get('Return-Path')!r}")
    check(m.get_content_type() == "multipart/report", f"{what}: {m.get_content_type()}")
    check(m.get_param("report-type") == "delivery-status",
          f"{what}: report-type {m.get_param('report-type')!r}")
    check(m.get("MIME-Version") == "1.0", f"{what}: MIME-Version {m.get('MIME-Version')!r}")
    frm = email.utils.parseaddr(m.get("From", ""))[1]
    check(frm.lower() == f"mailer-daemon@{HOSTNAME}", f"{what}: From {m.get('From')!r}")
    check(email.utils.parseaddr(m.get("To", ""))[1] == sender, f"{what}: To {m.get('To')!r}")
    check(m.get("Auto-Submitted") == "auto-replied", f"{what}: Auto-Submitted "
          f"{m.get('Auto-Submitted')!r}")
    check(m.get("Subject") and m.get("Message-ID"), f"{what}: Subject/Message-ID missing")
    date = email.utils.parsedate_to_datetime(m.get("Date")).timestamp()
    check(abs(date - time.time()) < 120, f"{what}: Date {m.get('Date')!r}")
    parts = m.get_payload()
    check(isinstance(parts, list) and len(parts) == 3,
          f"{what}: {len(parts) if isinstance(parts, list) else 0} parts, expected 3")
    human, report, orig = parts
    # 1. For people.
    check(human.get_content_type() == "text/plain", f"{what}: first part {human.get_content_type()}")
    htext = human.get_payload(decode=True).decode("utf-8", "replace")
    check(rcpt in htext and diag_prefix in htext,
          f"{what}: the human-readable part names neither {rcpt} nor the reply: {htext!r}")
    # 2. For programs (RFC 3464 section 2).
    check(report.get_content_type() == "message/delivery-status",
          f"{what}: second part {report.get_content_type()}")
    groups = status_fields(report)
    check(len(groups) == 2, f"{what}: {len(groups)} field groups, expected per-message + one "
          f"recipient: {groups}")
    pm, pr = groups
    check(pm.get("reporting-mta") == f"dns; {HOSTNAME}", f"{what}: Reporting-MTA {pm}")
    check("arrival-date" in pm, f"{what}: no Arrival-Date: {pm}")
    arrival = email.utils.parsedate_to_datetime(pm["arrival-date"]).timestamp()
    check(abs(arrival - submitted) <= 2, f"{what}: Arrival-Date {pm['arrival-date']} vs "
          f"submitted {submitted:.0f}")
    if envid:
        check(pm.get("original-envelope-id") == envid, f"{what}: Original-Envelope-Id {pm}")
    else:
        check("original-envelope-id" not in pm, f"{what}: Original-Envelope-Id {pm}")
    check(pr.get("final-recipient", "").lower() == f"rfc822; {rcpt}".lower(),
          f"{what}: Final-Recipient {pr}")
    if orcpt:
        check(pr.get("original-recipient", "").lower() == orcpt.lower(),
              f"{what}: Original-Recipient {pr}")
    check(pr.get("action") == "failed", f"{what}: Action {pr.get('action')!r}")
    st = pr.get("status", "")
    check(len(st.split(".")) == 3 and st.startswith("5.") and st == diag_prefix.split()[1],
          f"{what}: Status {st!r}, expected {diag_prefix.split()[1]}")
    check(pr.get("diagnostic-code", "").startswith(f"smtp; {diag_prefix}"),
          f"{what}: Diagnostic-Code {pr.get('diagnostic-code')!r}")
    if remote:
        # RFC 3464 2.3.5: a DNS name or an address literal, no port
        host = remote.rsplit(":", 1)[0].strip("[]")
        check(pr.get("remote-mta", "") == f"dns; [{host}]",
              f"{what}: Remote-MTA {pr.get('remote-mta')!r}, expected {remote}")
    check("last-attempt-date" in pr, f"{what}: no Last-Attempt-Date: {pr}")
    last = email.utils.parsedate_to_datetime(pr["last-attempt-date"]).timestamp()
    check(arrival - 1 <= last <= time.time() + 1, f"{what}: Last-Attempt-Date "
          f"{pr['last-attempt-date']} before Arrival-Date {pm['arrival-date']}")
    # 3. The original.
    if full:
        check(orig.get_content_type() == "message/rfc822",
              f"{what}: RET=FULL returned {orig.get_content_type()}")
        inner = orig.get_payload()[0]
        body = inner.get_payload()
        check(f"body of {test_id}" in body, f"{what}: RET=FULL without the body: {body!r}")
    else:
        check(orig.get_content_type() == "text/rfc822-headers",
              f"{what}: third part {orig.get_content_type()}")
        inner = email.message_from_string(orig.get_payload(), policy=email.policy.compat32)
        check(f"body of {test_id}" not in orig.get_payload(),
              f"{what}: headers only, but the body is there")
    check(inner.get("Subject") == subject, f"{what}: original Subject {inner.get('Subject')!r}")
    check(inner.get("X-Test-Id") == test_id, f"{what}: original X-Test-Id "
          f"{inner.get('X-Test-Id')!r}")
    check(inner.get("Message-ID") and inner.get("Received"),
          f"{what}: original header section lacks Message-ID/Received: {list(inner.keys())}")
    return m


@cases.add
def hard_fail_bounces_with_dsn(x):
    before = {e["uid"] for e in bounce_list(x.d)}
    t0 = time.time()
    mid = api_submit_batch(x.d, [msg(["h1@hard.test"], "hard-api")])[0]

    def bounced():
        rc = api_status(x.d, mid)["recipients"][0]
        return rc if rc["state"] == "bounced" else None
    rc = wait_for(bounced, 10, "h1@hard.test bounced")
    check(rc["attempts"] == 1, f"bounced after {rc['attempts']} attempts: {rc}")
    check((rc["last_response"] or "").startswith("550 5.1.1"), f"last_response {rc}")
    check(rc["next_attempt"] is None, f"a bounced recipient has a next attempt: {rc}")
    dsns = wait_for(lambda: bounces_for(x.d, "h1@hard.test"), 10, "the DSN for h1@hard.test")
    check(len(dsns) == 1, f"{len(dsns)} DSNs for h1@hard.test")
    check_dsn(dsns[0], rcpt="h1@hard.test", sender=SENDER, submitted=t0,
              subject="sched hard-api", test_id="hard-api", remote=x.hard_addr)
    new = [e for e in bounce_list(x.d) if e["uid"] not in before]
    check(len(new) == 1 and "Undelivered" in new[0]["subject"], f"new mailbox entries {new}")
    # SMTP with RET=FULL, ENVID and ORCPT: the whole message comes back.
    data = (f"From: <{SENDER}>\r\nTo: <h2@hard.test>\r\nSubject: sched hard-smtp\r\n"
            f"X-Test-Id: hard-smtp\r\n\r\nbody of hard-smtp\r\n").encode()
    t0 = time.time()
    smtp_submit(x.d.port, SENDER, ["h2@hard.test"], data, mail_params=" RET=FULL ENVID=env-77",
                rcpt_params=" NOTIFY=FAILURE ORCPT=rfc822;orig-h2@hard.test")
    dsns = wait_for(lambda: bounces_for(x.d, "h2@hard.test"), 10, "the DSN for h2@hard.test")
    check_dsn(dsns[0], rcpt="h2@hard.test", sender=SENDER, submitted=t0,
              subject="sched hard-smtp", test_id="hard-smtp", full=True, envid="env-77",
              orcpt="rfc822;orig-h2@hard.test", remote=x.hard_addr)


@cases.add
def bounce_is_never_bounced(x):
    n_before = len(bounce_list(x.d))
    data = (b"From: <MAILER-DAEMON@elsewhere.test>\r\nTo: <h3@hard.test>\r\n"
            b"Subject: a bounce\r\nX-Test-Id: null-sender\r\n\r\nbody\r\n")
    mid_null = smtp_submit(x.d.port, "", ["h3@hard.test"], data)
    data = (f"From: <{SENDER}>\r\nTo: <h4@hard.test>\r\nSubject: never\r\n\r\nbody\r\n").encode()
    mid_never = smtp_submit(x.d.port, SENDER, ["h4@hard.test"], data, rcpt_params=" NOTIFY=NEVER")
    for mid in (mid_null, mid_never):
        def bounced(mid=mid):
            return api_status(x.d, mid)["recipients"][0]["state"] == "bounced"
        wait_for(bounced, 10, f"{mid} bounced")
    check(api_status(x.d, mid_null)["from"] == "", f"null sender stored as "
          f"{api_status(x.d, mid_null)['from']!r}")
    # A DSN would be built in the same iteration as the bounce: give it
    # time anyway, then look.
    time.sleep(1.0 * SLOW)
    check(len(bounce_list(x.d)) == n_before, "a DSN was stored for a null-sender message or "
          "for NOTIFY=NEVER")
    for rcpt in ("h3@hard.test", "h4@hard.test"):
        check(not bounces_for(x.d, rcpt), f"a DSN for {rcpt}")
    check(not log_events(x.d, rf"dsn id=({mid_null}|{mid_never}) "),
          "the log says a DSN was made for a null-sender or NOTIFY=NEVER message")


# ---- back-off of a whole destination ---------------------------------------

def dead_connects(x):
    """Connections dead.test refused: one 'session dest=dead.test' line each."""
    return [t for t, _ in log_events(x.d, r" session dest=dead\.test relay=.* status=connect-failed")]


@cases.add
def refused_destination_backs_off(x):
    t_start = time.time()
    first = api_submit_batch(x.d, [msg([f"d{i}@dead.test"], f"dead-{i}") for i in range(40)] +
                             [msg([f"s{i}@slam.test"], f"slam-{i}") for i in range(40)] +
                             [msg([f"o{i}@ok.test"], f"ok-a{i}") for i in range(20)])
    # The first burst: as many connections as jobs allow, at most
    # max_connections (20), then the destination is held.
    wait_for(lambda: (api_domain(x.d, "dead.test") or {}).get("backoff_until") and
             (api_domain(x.d, "slam.test") or {}).get("backoff_until"), 10,
             "dead.test and slam.test backing off")
    wait_for(lambda: x.ok.messages("ok.test") >= 20, 10, "ok.test's first 20 messages")
    time.sleep(0.3)
    burst_dead, burst_slam = len(dead_connects(x)), x.slam.count()
    log(f"first burst: dead.test {burst_dead} refused connects, slam.test {burst_slam} accepts")
    check(1 <= burst_dead <= 20, f"dead.test: {burst_dead} connections in the first burst "
          f"(max_connections 20)")
    check(1 <= burst_slam <= 20, f"slam.test: {burst_slam} connections in the first burst")
    ds = api_domain(x.d, "dead.test")
    check(ds["deferred"] == 40 and ds["queued"] == 0, f"dead.test stats during back-off {ds}")
    hold_end = iso_epoch(ds["backoff_until"])
    check(t_start < hold_end <= time.time() + RETRY[-1] * (1 + JITTER) + 0.1,
          f"dead.test backoff_until {ds['backoff_until']}")
    # 200 more each while held, and more ok.test mail: it flows at once.
    t_more = time.time()
    more = api_submit_batch(x.d, [msg([f"d{i}@dead.test"], f"dead-{i}") for i in range(40, 240)] +
                            [msg([f"s{i}@slam.test"], f"slam-{i}") for i in range(40, 240)] +
                            [msg([f"o{i}@ok.test"], f"ok-b{i}") for i in range(20)])
    wait_for(lambda: x.ok.messages("ok.test") >= 40, 5, "ok.test's next 20 messages while "
             "dead.test and slam.test back off")
    # Mail that arrived during the back-off was not tried, but its record
    # says what the stats say: deferred until the back-off ends.
    def waiting():
        rc = api_status(x.d, more[0])["recipients"][0]
        return rc if rc["state"] == "deferred" else None
    rc = wait_for(waiting, 5, "d40@dead.test recorded as deferred")
    check(rc["attempts"] == 0 and rc["last_attempt"] is None and rc["last_response"] is None,
          f"d40@dead.test was not tried: {rc}")
    check(abs(iso_epoch(rc["next_attempt"]) - hold_end) < 0.002,
          f"d40@dead.test next_attempt {rc['next_attempt']}, back-off until {ds['backoff_until']}")
    log(f"ok.test flowed: 20 more in {time.time() - t_more:.2f}s")
    # Two back-off periods (2 s, then 4 s) and a margin.
    time.sleep(RETRY[0] + RETRY[1] * (1 + JITTER) + 0.8 * SLOW)
    dead = dead_connects(x)
    slam = list(x.slam.times)
    log(f"after the back-off: dead.test {len(dead)} connects, slam.test {len(slam)}")
    for name, times, burst in (("dead.test", dead, burst_dead), ("slam.test", slam, burst_slam)):
        probes = times[burst:]
        check(1 <= len(probes) <= 3, f"{name}: {len(probes)} connections after the first burst "
              f"with 440 messages waiting; expected one probe per back-off period (2)")
        gaps = [b - a for a, b in zip([times[burst - 1]] + probes, probes)]
        check(all(g >= RETRY[0] * (1 - JITTER) - 0.1 for g in gaps),
              f"{name}: probes closer than the back-off: gaps {gaps}")
        ds = api_domain(x.d, name)
        check(ds["deferred"] + ds["queued"] + ds["in_flight"] == 240 and ds["delivered"] == 0 and
              ds["bounced"] == 0, f"{name}: stats {ds}")
    check(x.ok.messages("ok.test") == 40, f"ok.test: {x.ok.messages('ok.test')} messages")
    # The recipients' records: deferred, with the refusal.
    rc = api_status(x.d, first[0])["recipients"][0]
    check(rc["state"] == "deferred" and rc["attempts"] >= 1 and rc["next_attempt"],
          f"d0@dead.test {rc}")
    check("4.4.1" in (rc["last_response"] or "") or "refused" in (rc["last_response"] or "").lower(),
          f"d0@dead.test last_response {rc['last_response']!r}")
    # Nothing reached any sink for them.
    check(x.ok.messages("dead.test") == 0 and x.ok.messages("slam.test") == 0,
          "dead/slam mail at the ok sink")


def main():
    with TestEnv("sched_retry") as env:
        x = Ctx()
        x.env = env
        x.soft_dir = env.dir / "soft-saved"
        sp, hp, op = free_port(), free_port(), free_port()
        x.soft = env.fast_sink("soft", [f"127.0.0.1:{sp}"],
                               ["--rcpt-script", "451,451,250", "--save", str(x.soft_dir)])
        x.hard = env.fast_sink("hard", [f"127.0.0.1:{hp}"], ["--rcpt-script", "550"])
        x.hard_addr = f"127.0.0.1:{hp}"
        x.ok = env.fast_sink("ok", [f"127.0.0.1:{op}"])
        x.dead = ClosedPort()
        x.slam = SlammingPort()
        try:
            x.d = env.daemon(routes={"soft.test": f"127.0.0.1:{sp}", "hard.test": x.hard_addr,
                                     "ok.test": f"127.0.0.1:{op}", "dead.test": x.dead.addr,
                                     "slam.test": x.slam.addr},
                             with_api=True, server={"hostname": HOSTNAME},
                             queue={"retry": ", ".join(f"{r:g}s" for r in RETRY),
                                    "max_age": "1h"},
                             domains={"dead.test": {"max_connections": 20},
                                      "slam.test": {"max_connections": 20}})
            x.d.start()
            failures = run_cases(cases, x, [x.d])
            stop_clean(x.d, failures)
        finally:
            x.dead.close()
            x.slam.close()
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
