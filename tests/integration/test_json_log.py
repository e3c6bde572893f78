"""test_json_log.py - [server] log_format = json and the log file reopened on
SIGHUP (logrotate), against ringpost-sink receivers (ok.test answers 250,
hard.test 550).

Cases, in order, on one daemon with `log = FILE` and `log_format = json`:
  - json_lines_and_delivery_fields: mail submitted over SMTP and over the
    API (one recipient with a quoted local part: "odd user"@ok.test) is
    delivered to ok.test and bounced by hard.test; then EVERY line of the
    log file parses as a JSON object with time, level, thread and event;
    each delivery line carries id (the id the submission got), rcpt, dest,
    relay, status (delivered / bounced), dsn, attempts (a number), delay,
    duration and reply (the sink's own words), and the quoted address
    comes back unescaped; the accepted lines carry id, from, nrcpt, size;
  - sighup_reopens_the_log: the file is renamed (as logrotate does), the
    daemon gets SIGHUP, more mail goes through: its lines are in a new
    file at the configured path, every line of both files is whole JSON,
    and the renamed file has none of the new deliveries;
  - sighup_switches_to_text: log_format = text in the config and SIGHUP:
    the next delivery lines are key=value text with the same fields as the
    JSON lines had.
The daemon exits 0 on SIGTERM with a clean log (ASan builds too).
"""

import json
import os
import signal

from harness import (Cases, TestEnv, TestFailure, api_send, check, free_port, parse_kv,
                     raise_failures, run_cases, run_test, smtp_submit, stop_clean, wait_for,
                     wait_rcpts)

SENDER = "app@origin.test"
DELIVERY_FIELDS = {"id", "rcpt", "dest", "relay", "status", "dsn", "attempts", "delay",
                   "duration", "reply"}

cases = Cases()


class Ctx:
    pass


def read_json_lines(path):
    """Every line of path as a dict; fails on a line that is not a whole
    JSON object (a partial last line included)."""
    data = path.read_bytes()
    check(data.endswith(b"\n") or not data, f"{path.name}: the last line is not whole: "
          f"{data[-200:]!r}")
    out = []
    for n, raw in enumerate(data.split(b"\n")[:-1], 1):
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise TestFailure(f"{path.name} line {n} is not JSON ({e}): {raw[:300]!r}")
        check(isinstance(obj, dict), f"{path.name} line {n} is not an object: {raw[:300]!r}")
        for k in ("time", "level", "thread", "event"):
            check(isinstance(obj.get(k), str), f"{path.name} line {n} has no {k}: {obj}")
        out.append(obj)
    return out


def deliveries(lines, rcpt):
    return [o for o in lines if o["event"] == "delivery" and o.get("rcpt") == f"<{rcpt}>"]


def message(to, tag):
    return (f"From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: json {tag}\r\n\r\n"
            f"body of {tag}\r\n").encode()


def send_round(x, tag):
    """One message over SMTP (ok + hard), one over the API (ok + hard);
    waits until each is settled. Returns {rcpt: message id}."""
    ok1, hard1 = f"s-{tag}@ok.test", f"s-{tag}@hard.test"
    ok2, hard2 = f"a-{tag}@ok.test", f"a-{tag}@hard.test"
    sid = smtp_submit(x.d.port, SENDER, [ok1, hard1], message(ok1, tag))
    aid = api_send(x.d, SENDER, [ok2, hard2], f"json {tag}")[0]
    for mid in (sid, aid):
        def settled():
            st = x.d.api("GET", f"/v1/messages/{mid}").json()
            return all(r["state"] in ("delivered", "bounced") for r in st["recipients"])
        wait_for(settled, 20, f"message {mid} settled", interval=0.1)
    return {ok1: sid, hard1: sid, ok2: aid, hard2: aid}


def check_delivery(o, mid, ok):
    missing = DELIVERY_FIELDS - set(o)
    check(not missing, f"delivery line without {sorted(missing)}: {o}")
    check(o["id"] == mid, f"delivery id {o['id']!r}, the submission got {mid!r}: {o}")
    check(isinstance(o["attempts"], int) and o["attempts"] == 1, f"attempts: {o}")
    if ok:
        check(o["status"] == "delivered" and o["dest"] == "ok.test", f"delivered: {o}")
        check(o["relay"] == x_addr["ok"], f"relay {o['relay']!r}: {o}")
        check(o["reply"].startswith("250"), f"reply: {o}")
        check(o["level"] == "info", f"level: {o}")
    else:
        check(o["status"] == "bounced" and o["dest"] == "hard.test", f"bounced: {o}")
        check(o["relay"] == x_addr["hard"], f"relay {o['relay']!r}: {o}")
        check(o["reply"].startswith("550"), f"reply: {o}")
        check(o["dsn"].startswith("5."), f"dsn: {o}")
        check(o["level"] == "warn", f"a bounce is a warning: {o}")


x_addr = {}


@cases.add
def json_lines_and_delivery_fields(x):
    ids = send_round(x, "r1")
    odd = '"odd user"@ok.test'
    oid = api_send(x.d, SENDER, [odd], "json odd")[0]
    wait_rcpts(x.d, oid, "delivered")
    lines = wait_for(lambda: (lambda ls: ls if deliveries(ls, odd) else None)(
        read_json_lines(x.log)), 10, "the odd recipient's delivery line")
    for rcpt, mid in ids.items():
        ds = deliveries(lines, rcpt)
        check(len(ds) == 1, f"{rcpt}: {len(ds)} delivery lines")
        check_delivery(ds[0], mid, rcpt.endswith("@ok.test"))
    check_delivery(deliveries(lines, odd)[0], oid, True)
    acc = [o for o in lines if o.get("msg", "").startswith("accepted") or
           (o["event"] in ("smtpd", "api") and "nrcpt" in o)]
    by_id = {o.get("id"): o for o in acc}
    for mid in set(ids.values()):
        o = by_id.get(mid)
        check(o is not None, f"no accepted line for {mid}: {acc}")
        check(o["from"] == f"<{SENDER}>" and o["nrcpt"] == 2 and isinstance(o["size"], int),
              f"accepted line: {o}")
    check(any(o["event"] == "ringpost" and o.get("msg", "").startswith("ready:")
              for o in lines), "no ready line")
    x.fields = set(deliveries(lines, f"s-r1@ok.test")[0]) - {"time", "level", "thread",
                                                             "event"}
    x.lines_before = len(lines)


@cases.add
def sighup_reopens_the_log(x):
    rotated = x.log.with_name(x.log.name + ".1")
    os.rename(x.log, rotated)
    before = read_json_lines(rotated)
    x.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: x.log.exists() and any(
        o.get("msg", "").startswith("reloaded") or o["event"] == "configuration"
        for o in read_json_lines(x.log)), 10, "the reload line in a new log file")
    ids = send_round(x, "r2")
    wait_for(lambda: all(deliveries(read_json_lines(x.log), r) for r in ids), 10,
             "the second round's delivery lines in the new file")
    new = read_json_lines(x.log)
    old = read_json_lines(rotated)
    check(len(old) >= len(before), f"the rotated file lost lines: {len(old)} < {len(before)}")
    for rcpt, mid in ids.items():
        check(not deliveries(old, rcpt), f"{rcpt}: delivered after the reopen, logged in the "
              f"rotated file")
        check_delivery(deliveries(new, rcpt)[0], mid, rcpt.endswith("@ok.test"))
    for o in new:
        check(not o.get("rcpt", "").startswith("<s-r1@"), f"a first-round line in the new "
              f"file: {o}")
    x.rotated = rotated


@cases.add
def sighup_switches_to_text(x):
    conf = x.d.config_path
    text = open(conf).read()
    check("log_format = json" in text, "the config has no log_format = json")
    with open(conf, "w") as f:
        f.write(text.replace("log_format = json", "log_format = text"))
    start = x.log.stat().st_size
    x.d.proc.send_signal(signal.SIGHUP)

    def reloaded():
        with open(x.log, "rb") as f:
            f.seek(start)
            return b" configuration reloaded from " in f.read()
    wait_for(reloaded, 10, "the reload line in text")
    ids = send_round(x, "r3")
    with open(x.log, "rb") as f:
        f.seek(start)
        tail = f.read().decode("utf-8", "replace")
    for rcpt, mid in ids.items():
        ln = [ln for ln in tail.splitlines() if f" delivery id={mid} rcpt=<{rcpt}> " in ln]
        check(len(ln) == 1, f"{rcpt}: {len(ln)} text delivery lines")
        f = parse_kv(ln[0][ln[0].find(" delivery id=") + 1:])
        check(set(f) == x.fields, f"text fields {sorted(f)} != JSON fields {sorted(x.fields)}")
        check(f["status"] == ("delivered" if rcpt.endswith("@ok.test") else "bounced"), ln[0])


def start_daemon(d, log_file, timeout=15):
    """Start d; ready when the JSON log file says so (stderr stays empty)."""
    d.start(timeout, ready=lambda: log_file.exists() and
            b'"msg":"ready: ' in log_file.read_bytes())


def main():
    with TestEnv("json_log") as env:
        x = Ctx()
        op, hp = free_port(), free_port()
        x_addr["ok"], x_addr["hard"] = f"127.0.0.1:{op}", f"127.0.0.1:{hp}"
        env.fast_sink("ok", [x_addr["ok"]])
        env.fast_sink("hard", [x_addr["hard"]], ["--rcpt-script", "550"])
        x.log = env.dir / "ringpost.json.log"
        x.d = env.daemon(routes={"ok.test": x_addr["ok"], "hard.test": x_addr["hard"]},
                         with_api=True,
                         server={"log": str(x.log), "log_format": "json"})
        start_daemon(x.d, x.log)
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        if x.d.log().strip():
            failures.append(f"ringpost wrote to stderr with a log file set: {x.d.log_tail()}")
        raise_failures(failures)


if __name__ == "__main__":
    run_test(main)
