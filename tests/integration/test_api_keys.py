"""test_api_keys.py - [api] keys with names and scopes (issue 13), driven
with curl and raw sockets against the real daemon.

  - `keys = NAME:TOKEN:submit|read|admin, TOKEN`: every key against every
    class of endpoint: submit keys only submit (POST /v1/messages and
    /batch), read keys only look (message status, stats, /metrics, queue,
    bounces, suppressions), admin keys and bare tokens do everything (queue
    actions, purges, suppression changes too); the rest get 403 with
    {"error": {"code": "forbidden", "message": "key NAME has scope read;
    this needs admin"}}, no key or a wrong one 401, /healthz needs none;
  - a 403 leaves a keep-alive connection usable (raw socket, pipelined);
  - the log names keys (access lines at debug, forbidden lines at warn)
    and never shows a token;
  - SIGHUP applies new scopes; a malformed keys line keeps the old ones;
  - start-up (serve and check-config, FILE:LINE, exit 78, the token never
    shown): a key shorter than 16 characters (change-me too) when the API
    listens on 0.0.0.0 (refused before anything is bound), one colon, a
    bad scope, two keys with one token; on loopback change-me is accepted
    with a warning line;
  - the CLI picks a key with the scope each command needs (admin first)
    and exits 77 naming the scope when the config has none, or when the
    daemon answers 403.
Constant-time comparison is not observable from outside: not tested here.
"""

import json
import re
import signal
import subprocess

from harness import (EX_CONFIG, SLOW, Cases, HTTPConn, TestEnv, TestFailure, check, config_text,
                     curl, free_port, log, raise_failures, ringpost_bin, run_cases, stop_clean,
                     wait_for)

SUB = "ci-token-0123456789ab"
READ = "graf-token-0123456789"
ADM = "ops-token-0123456789ab"
BARE = "legacy-bare-token-0123"
KEYS = f"ci:{SUB}:submit, graf:{READ}:read, ops:{ADM}:admin, {BARE}, change-me"
TOKENS = {"ci": SUB, "graf": READ, "ops": ADM, "#4": BARE, "#5": "change-me"}
SCOPE = {"ci": "submit", "graf": "read", "ops": "admin", "#4": "admin", "#5": "admin"}
SENDER = "app@sender.test"

cases = Cases()


class Ctx:
    pass


def msg(tag):
    return {"from": SENDER, "to": [f"{tag}@ok.test"], "subject": tag, "text": f"{tag}\n"}


def call(x, method, path, token, body=None):
    """curl: (status, parsed JSON body or raw bytes)."""
    args = ["-o", "-", "-w", "\n%{http_code}", "-X", method]
    if token is not None:
        args += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    p = curl(args + [f"http://127.0.0.1:{x.d.api_port}{path}"])
    check(p.returncode == 0, f"curl {method} {path}: {p.stderr[-300:]!r}")
    out, _, code = p.stdout.rpartition(b"\n")
    try:
        doc = json.loads(out) if out.strip().startswith(b"{") else out
    except ValueError:
        doc = out
    return int(code), doc


def endpoints(x):
    """(method, path, body, scope needed, statuses that mean 'allowed')."""
    return [
        ("POST", "/v1/messages", msg("one"), "submit", (202,)),
        ("POST", "/v1/messages/batch", {"messages": [msg("b1"), msg("b2")]}, "submit", (202,)),
        ("GET", f"/v1/messages/{x.mid}", None, "read", (200,)),
        ("GET", "/v1/stats", None, "read", (200,)),
        ("GET", "/metrics", None, "read", (200,)),
        ("GET", "/v1/queue", None, "read", (200,)),
        ("GET", "/v1/bounces", None, "read", (200,)),
        ("GET", "/v1/bounces/999999", None, "read", (404,)),
        ("GET", "/v1/suppressions", None, "read", (200,)),
        ("POST", "/v1/queue/ok.test/retry", None, "admin", (200, 404)),
        ("POST", "/v1/queue/nowhere.test/suspend", None, "admin", (200,)),
        ("POST", "/v1/queue/nowhere.test/resume", None, "admin", (200,)),
        ("DELETE", f"/v1/messages/{x.mid}", None, "admin", (200, 404)),
        ("POST", "/v1/suppressions", {"address": "sup@ok.test", "reason": "test"}, "admin",
         (200, 201)),
        ("DELETE", "/v1/suppressions/sup@ok.test", None, "admin", (200, 404)),
    ]


def allowed(key, need):
    return SCOPE[key] == "admin" or SCOPE[key] == need


@cases.add
def scope_matrix(x):
    fails = []
    n = 0
    for method, path, body, need, ok in endpoints(x):
        for name, token in TOKENS.items():
            status, doc = call(x, method, path, token, body)
            n += 1
            if allowed(name, need):
                if status not in ok:
                    fails.append(f"{name} ({SCOPE[name]}) {method} {path}: {status}, "
                                 f"expected {ok}: {doc!r:.200}")
                continue
            want = f"key {name} has scope {SCOPE[name]}; this needs {need}"
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            if status != 403 or err.get("code") != "forbidden" or err.get("message") != want:
                fails.append(f"{name} ({SCOPE[name]}) {method} {path}: {status} {doc!r:.200}, "
                             f"expected 403 {want!r}")
        # Without a key, or with one that is not configured: 401.
        for token in (None, "not-a-configured-key-0000"):
            status, doc = call(x, method, path, token, body)
            if status != 401:
                fails.append(f"{method} {path} with key {token}: {status}, expected 401")
    for token in (None, READ, SUB):
        status, _ = call(x, "GET", "/healthz", token)
        if status != 200:
            fails.append(f"/healthz with {token}: {status}")
    check(not fails, f"{len(fails)} of {n} wrong:\n    " + "\n    ".join(fails))
    log(f"     {n} requests: each key allowed exactly its scope")


@cases.add
def forbidden_keeps_the_connection(x):
    body = json.dumps(msg("pipelined")).encode()
    reqs = (f"GET /v1/stats HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {READ}\r\n\r\n"
            f"POST /v1/messages HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {READ}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    reqs += body + (f"POST /v1/queue/ok.test/retry HTTP/1.1\r\nHost: t\r\n"
                    f"Authorization: Bearer {SUB}\r\nContent-Length: 0\r\n\r\n"
                    f"GET /v1/stats HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {READ}\r\n"
                    f"Connection: close\r\n\r\n").encode()
    with HTTPConn(x.d.api_port) as c:
        c.send(reqs)
        got = [c.read_response() for _ in range(4)]
    statuses = [g[0] for g in got]
    check(statuses == [200, 403, 403, 200], f"pipelined statuses {statuses}: "
          f"{[g[2][:120] for g in got]}")
    check(json.loads(got[2][2])["error"]["message"] ==
          "key ci has scope submit; this needs admin", f"403 body {got[2][2]!r}")
    check("forbidden" in got[1][2].decode() and "www-authenticate" not in got[1][1],
          f"a 403 is not a 401: {got[1]}")


@cases.add
def log_names_keys_never_tokens(x):
    text = x.d.log()
    for name, token in TOKENS.items():
        if token == "change-me":
            continue  # the warning names the sample key on purpose
        check(token not in text, f"the log shows the token of key {name}")
    check(re.search(r"debug shard\d: api request method=GET path=\"/v1/stats\" key=graf "
                    r"client=127\.0\.0\.1:\d+", text), "no access line naming key graf")
    check(re.search(r"warn shard\d: api forbidden method=POST path=\"/v1/queue/ok\.test/retry\" "
                    r"key=ci scope=submit needs=admin client=", text),
          "no forbidden line naming key ci")
    check(re.search(r"warn main: config: \S+:\d+: \[api\] keys: key #5 is the sample key "
                    r"change-me", text), "no warning about change-me at start-up")


@cases.add
def sighup_applies_scopes(x):
    text = x.conf.read_text()
    promoted = text.replace(f"graf:{READ}:read", f"graf:{READ}:admin")
    check(promoted != text, "no graf key in the config")
    x.conf.write_text(promoted)
    n = x.d.log().count("configuration reloaded")
    x.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: x.d.log().count("configuration reloaded") > n, 10, "the reload")
    status, doc = call(x, "POST", "/v1/queue/nowhere.test/resume", READ)
    check(status == 200, f"graf promoted to admin: {status} {doc!r:.200}")
    # A broken keys line: the reload fails and the scopes stay.
    x.conf.write_text(text.replace(f"graf:{READ}:read", f"graf:{READ}:root"))
    x.d.proc.send_signal(signal.SIGHUP)
    m = wait_for(lambda: re.search(r"reload failed, keeping the running config: \S+:\d+: keys: "
                                   r"key graf: the scope must be submit, read or admin",
                                   x.d.log()), 10, "the failed reload")
    check(READ not in m.group(0), "the failed reload shows the token")
    status, _ = call(x, "POST", "/v1/queue/nowhere.test/resume", READ)
    check(status == 200, f"after a failed reload graf lost its scope: {status}")
    x.conf.write_text(text)
    x.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: x.d.log().count("configuration reloaded") > n + 1, 10, "the last reload")
    status, _ = call(x, "POST", "/v1/queue/nowhere.test/resume", READ)
    check(status == 403, f"graf back to read: {status}")


def run(argv, cwd, timeout=10):
    try:
        return subprocess.run([ringpost_bin()] + argv, cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"ringpost {' '.join(argv)} did not exit (did it start serving?)")


def stderr_lines(p):
    return [l for l in p.stderr.decode("utf-8", "replace").splitlines() if l.strip()]


def start_config(x, name, api_addr, keys, server=None):
    """A config file with [listen] api = api_addr and [api] keys = keys;
    (path, line of the keys)."""
    t = config_text(submission_port=free_port(), routes={}, api_port=free_port(),
                    api={"keys": keys}, server=server,
                    data_dir=str(x.env.dir / f"{name}-spool"))
    t = re.sub(r"(?m)^api = 127\.0\.0\.1:\d+$", f"api = {api_addr}", t)
    lines = t.splitlines()
    return x.env.write_config(t, f"{name}.conf"), lines.index(f"keys = {keys}") + 1


@cases.add
def refused_at_start(x):
    wide = f"0.0.0.0:{free_port()}"
    bad = [
        ("sample key off loopback", wide, "change-me", "key #1 has 9 characters", "change-me"),
        ("15 characters off loopback", wide, f"ops:{ADM}:admin, ci:short-token-015:submit",
         f"key ci has 15 characters, but the API listens on {wide} (not loopback), where a "
         f"key needs at least 16", "short-token-015"),
        ("one colon", "127.0.0.1:1", "ci:colon-secret-token",
         "keys: entry 1 is malformed: want TOKEN or NAME:TOKEN:SCOPE", "colon-secret"),
        ("bad scope", "127.0.0.1:1", "ci:scope-secret-token:root",
         "keys: key ci: the scope must be submit, read or admin", "scope-secret"),
        ("one token twice", "127.0.0.1:1", "a:twice-secret-token:read, b:twice-secret-token:submit",
         "keys: keys a and b have the same token", "twice-secret"),
    ]
    for name, addr, keys, words, secret in bad:
        path, line = start_config(x, "bad", addr, keys)
        for verb in ("serve", "check-config"):
            p = run([verb, "-c", str(path)], x.env.dir)
            errs = stderr_lines(p)
            what = f"{name} ({verb})"
            check(p.returncode == EX_CONFIG, f"{what}: exit {p.returncode}: {errs}")
            check(len(errs) == 1 and f"{path}:{line}: " in errs[0] and words in errs[0],
                  f"{what}: expected one line '{path}:{line}: ...{words}', got {errs}")
            check(secret not in errs[0], f"{what}: the token is shown: {errs[0]}")
        check(not (x.env.dir / "bad-spool").exists(), f"{name}: a spool was created")
        log(f"     {name}: {errs[0][:140]}")
    # Long keys may listen anywhere (check-config only: nothing binds 0.0.0.0).
    path, _ = start_config(x, "wide", wide, f"ops:{ADM}:admin, {BARE}",
                           server={"user": "nobody"})
    p = run(["check-config", "-c", str(path)], x.env.dir)
    check(p.returncode == 0 and not stderr_lines(p), f"long keys on {wide}: {p.returncode} "
          f"{stderr_lines(p)}")
    # change-me on loopback: accepted, with a warning naming it.
    path, line = start_config(x, "sample", "127.0.0.1:1", "change-me")
    p = run(["check-config", "-c", str(path)], x.env.dir)
    errs = stderr_lines(p)
    check(p.returncode == 0 and len(errs) == 1 and errs[0].startswith(
        f"{path}:{line}: [api] keys: key #1 is the sample key change-me"),
        f"change-me on loopback: {p.returncode} {errs}")


def cli(x, conf, argv):
    p = run([argv[0], "-c", str(conf)] + argv[1:], x.env.dir, timeout=20)
    return p.returncode, p.stdout.decode(), " ".join(stderr_lines(p))


@cases.add
def cli_picks_a_key(x):
    def conf(name, keys):
        t = x.conf.read_text()
        t = re.sub(r"(?m)^keys = .*$", f"keys = {keys}", t)
        return x.env.write_config(t, f"cli-{name}.conf")
    send = ["send", "--from", SENDER, "--to", "cli@ok.test", "--subject", "cli", "--text", "x"]
    stats = ["stats", "--json"]
    retry = ["queue", "retry", "ok.test"]
    read = conf("read", f"graf:{READ}:read")
    sub = conf("submit", f"ci:{SUB}:submit")
    mixed = conf("mixed", f"ci:{SUB}:submit, graf:{READ}:read")
    admin_last = conf("admin", f"ci:{SUB}:submit, graf:{READ}:read, ops:{ADM}:admin")
    lies = conf("lies", READ)  # admin in the CLI's config, read in the daemon's
    want = [
        (read, stats, 0, None), (read, send, 77, "it needs scope submit"),
        (read, retry, 77, "no [api] key may POST /v1/queue/ok.test/retry: it needs scope admin"),
        (sub, send, 0, None), (sub, stats, 77, "may GET /v1/stats: it needs scope read"),
        (mixed, send, 0, None), (mixed, stats, 0, None), (mixed, retry, 77, "scope admin"),
        (admin_last, retry, 0, None), (admin_last, send, 0, None),
        (lies, retry, 77, "403: key graf has scope read; this needs admin"),
        (lies, stats, 0, None),
    ]
    fails = []
    for path, argv, code, words in want:
        rc, out, err = cli(x, path, argv)
        if rc != code or (words and words not in err):
            fails.append(f"{path.name} {' '.join(argv[:2])}: exit {rc} {err[:200]!r}, "
                         f"expected {code} {words!r}")
        for token in (SUB, READ, ADM):
            if token in err or token in out:
                fails.append(f"{path.name} {argv[0]}: a token in the output")
    check(not fails, "\n    ".join(fails))
    # Admin first: with ci, graf and ops written in that order, send uses ops.
    mark = len(x.d.log())
    rc, _, err = cli(x, admin_last, send)
    check(rc == 0, f"send with an admin key last: {rc} {err}")
    used = re.findall(r'api request method=POST path="/v1/messages" key=(\S+)', x.d.log()[mark:])
    check(used == ["ops"], f"send used key {used}, expected the admin key ops")


def main():
    with TestEnv("api_keys") as env:
        x = Ctx()
        x.env = env
        ok = env.smtpd("ok")
        x.d = env.daemon(routes={"ok.test": ok.addr}, with_api=True,
                         api={"keys": KEYS}, server={"log_level": "debug"})
        x.conf = env.dir / "ringpost.conf"
        x.d.start()
        r = x.d.api("POST", "/v1/messages", msg("first"), key=ADM)
        check(r.status == 202, f"first submission with the admin key: {r}")
        x.mid = r.json()["id"]
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    from harness import run_test
    run_test(main)
