"""test_privdrop.py - [server] user: ringpost started as root binds, then
runs as the user (issue 13, least privilege). Needs root: skipped (exit 77,
ctest's SKIP_RETURN_CODE) with a clear message otherwise; the test machine
and CI run as root.

  - started as root with `user = nobody` (listeners on 127.0.0.1 high
    ports, the spool in a temporary directory nobody can reach): every uid
    and gid in /proc/PID/status (all four fields of Uid: and Gid:) and in
    every /proc/PID/task/*/status is nobody's, Groups: has no 0, no
    capabilities are left, NoNewPrivs is set; the spool's files are
    nobody's;
  - mail still flows: SMTP submission and the API deliver to a loopback
    receiver, a hard bounce's DSN is read back from the bounce mailbox;
  - with `shards = 8` (more shards than this machine's cores) it starts,
    every shard delivers mail for a domain it owns, and every task is
    nobody's: the shards' io_uring rings and buffer rings are made as root
    before the switch, so they never count against nobody's locked-memory
    limit (made as nobody, on Linux 6.x with 8 MiB, the 7th shard failed
    with ENOMEM and ringpost did not start);
  - SIGHUP after the drop reloads (a new API key works); a config nobody
    cannot read keeps the running one and says so in the log; `ringpost
    user add` run by root keeps the users file's owner, group and mode
    (root, nobody's group, 0640), so nobody reloads it and the new user
    can AUTH;
  - a spool left by a run as root (no user, loopback only: allowed, with a
    warning) is given to nobody at the next start, which then delivers; a
    symbolic link in the spool is not followed, a hard link to a root file
    stops start-up (73) naming it;
  - refused at start, before binding or creating the spool: root without
    user on a non-loopback listener (0.0.0.0, exit 78, one line naming it),
    an unknown user and user root (78, FILE:LINE; check-config too), user
    set to another user when not started as root (77); the user we already
    are is fine.
"""

import os
import pwd
import re
import signal
import stat
import subprocess
import sys

from harness import (EX_CONFIG, SLOW, Cases, TestEnv, TestFailure, api_request, bounces_for,
                     check, config_text, free_port, log, raise_failures, ringpost_bin,
                     run_cases, smtp_submit, stop_clean, wait_for, wait_rcpt)
from harness.proc import stop_process

SKIP = 77  # ctest's SKIP_RETURN_CODE for the integration tests
NOBODY = None  # pwd entry of nobody (set in main)
SENDER = "app@sender.test"

cases = Cases()


class Ctx:
    pass


def run(argv, cwd, as_user=None, timeout=10):
    """ringpost ARGV, to completion; as_user: a pwd entry to run as."""
    def become():
        os.setgroups([])
        os.setgid(as_user.pw_gid)
        os.setuid(as_user.pw_uid)
    try:
        return subprocess.run([ringpost_bin()] + argv, cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout * SLOW,
                              preexec_fn=become if as_user else None)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"ringpost {' '.join(argv)} did not exit (did it start serving?)")


def stderr_lines(p):
    return [l for l in p.stderr.decode("utf-8", "replace").splitlines() if l.strip()]


def ids_of(status_text):
    """{'Uid': [4 ints], 'Gid': [...], 'Groups': [...], 'CapEff': int, ...}."""
    out = {}
    for line in status_text.splitlines():
        k, _, v = line.partition(":")
        if k in ("Uid", "Gid", "Groups"):
            out[k] = [int(x) for x in v.split()]
        elif k in ("CapEff", "CapPrm", "CapBnd"):
            out[k] = int(v.strip(), 16)
        elif k == "NoNewPrivs":
            out[k] = int(v)
    return out


def owned_by_nobody(path):
    bad = []
    for root, dirs, files in os.walk(path):
        for n in [root] + [os.path.join(root, f) for f in files]:
            st = os.lstat(n)
            if stat.S_ISLNK(st.st_mode):
                continue  # left alone: never followed, never chowned
            if st.st_uid != NOBODY.pw_uid or st.st_gid != NOBODY.pw_gid:
                bad.append(f"{n} ({st.st_uid}:{st.st_gid})")
    return bad


def check_all_nobodys(d, spool, min_tasks):
    """Every id of d's process and of each of its tasks is nobody's, no
    capability is left, the spool is nobody's. Returns (tasks, groups)."""
    pid = d.proc.pid
    with open(f"/proc/{pid}/status") as f:
        main = ids_of(f.read())
    want_u, want_g = [NOBODY.pw_uid] * 4, [NOBODY.pw_gid] * 4
    check(main["Uid"] == want_u, f"Uid: {main['Uid']}, expected {want_u}")
    check(main["Gid"] == want_g, f"Gid: {main['Gid']}, expected {want_g}")
    check(0 not in main["Groups"], f"Groups: {main['Groups']} has 0")
    check(main["CapEff"] == 0 and main["CapPrm"] == 0,
          f"capabilities left: CapEff {main['CapEff']:x} CapPrm {main['CapPrm']:x}")
    check(main.get("NoNewPrivs") == 1, f"NoNewPrivs: {main.get('NoNewPrivs')}")
    tasks = sorted(os.listdir(f"/proc/{pid}/task"))
    check(len(tasks) >= min_tasks, f"only {len(tasks)} threads: are the shards running?")
    for t in tasks:
        with open(f"/proc/{pid}/task/{t}/status") as f:
            ids = ids_of(f.read())
        check(ids["Uid"] == want_u and ids["Gid"] == want_g and 0 not in ids["Groups"],
              f"thread {t}: Uid {ids['Uid']} Gid {ids['Gid']} Groups {ids['Groups']}")
        check(ids["CapEff"] == 0, f"thread {t}: CapEff {ids['CapEff']:x}")
    bad = owned_by_nobody(spool)
    check(not bad, f"spool files not nobody's: {bad}")
    check(re.search(rf"info main: running as nobody \(uid {NOBODY.pw_uid}, gid "
                    rf"{NOBODY.pw_gid}\)", d.log()), "no 'running as nobody' log line")
    return tasks, main["Groups"]


@cases.add
def every_id_is_nobodys(x):
    # Main thread, 2 shards, the spool writer, auth and DKIM workers.
    tasks, groups = check_all_nobodys(x.d, x.spool, 4)
    log(f"     pid {x.d.proc.pid}: {len(tasks)} threads, all uid/gid "
        f"{NOBODY.pw_uid}/{NOBODY.pw_gid}, groups {groups}")


def deliver_smtp(x, rcpt, tag, d=None):
    before = x.ok.count()
    data = (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {tag}\r\nX-Test-Id: {tag}\r\n\r\n"
            f"body of {tag}\r\n").encode()
    mid = smtp_submit((d or x.d).port, SENDER, [rcpt], data)
    wait_for(lambda: x.ok.count() > before, 15, f"{tag} at the receiver")
    got = [m for m in x.ok.messages() if m.header("X-Test-Id") == tag]
    check(len(got) == 1 and got[0].rcpts == [rcpt], f"{tag}: received {len(got)} copies")
    return mid


@cases.add
def mail_flows(x):
    deliver_smtp(x, "smtp@ok.test", "priv-smtp")
    before = x.ok.count()
    r = x.d.api("POST", "/v1/messages", {"from": SENDER, "to": ["api@ok.test"],
                                         "subject": "priv-api", "text": "hello\n",
                                         "headers": {"X-Test-Id": "priv-api"}})
    check(r.status == 202, f"API submission: {r}")
    wait_rcpt(x.d, r.json()["id"], "delivered")
    check(x.ok.count() == before + 1, "the API message did not arrive")
    r = x.d.api("POST", "/v1/messages", {"from": SENDER, "to": ["gone@hard.test"],
                                         "subject": "priv-bounce", "text": "bounce me\n"})
    check(r.status == 202, f"API submission to hard.test: {r}")
    wait_rcpt(x.d, r.json()["id"], "bounced")
    dsns = wait_for(lambda: bounces_for(x.d, "gone@hard.test"), 15, "the DSN in the mailbox")
    check(b"Status: 5" in dsns[0], f"DSN without a 5.x.x status: {dsns[0][:300]!r}")
    log("     SMTP and API mail delivered, the DSN read back from the bounce mailbox")


def shard_of(domain, nshards):
    """The shard that owns domain: rp_hash64 (FNV-1a, 64 bits) modulo
    the shard count, as shard_owner computes it."""
    h = 14695981039346656037
    for b in domain.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % nshards


@cases.add
def many_shards(x):
    """shards = 8 as nobody: 8 rings of about 1.3 MiB of locked memory each
    are more than nobody's 8 MiB limit would allow, had nobody made them."""
    n = 8
    owned = {}  # shard -> a domain it owns
    i = 0
    while len(owned) < n:
        dom = f"s{i}.ok.test"
        owned.setdefault(shard_of(dom, n), dom)
        i += 1
    spool = str(x.env.dir / "shards8-spool")
    d = x.env.daemon(routes={dom: x.ok.addr for dom in owned.values()}, name="shards8",
                     server={"user": "nobody", "shards": n}, data_dir=spool)
    d.start()
    try:
        check(f", {n} shards," in d.log(since_start=True), "the ready line does not say 8 shards")
        for k, dom in sorted(owned.items()):
            deliver_smtp(x, f"rcpt@{dom}", f"priv-shard{k}", d)
        for k, dom in sorted(owned.items()):
            check(re.search(rf" shard{k}: delivery id=\S+ rcpt=<rcpt@{re.escape(dom)}> .*"
                            rf"status=delivered", d.log()),
                  f"shard {k} did not deliver to {dom}: {d.log_tail(5)}")
        # Main, 8 shards, the spool writer, auth and DKIM workers.
        tasks, _ = check_all_nobodys(d, spool, 1 + n + 1)
    finally:
        rc = d.stop()
    check(rc == 0, f"shards = {n}: SIGTERM exit {rc}")
    d.check_log_clean()
    log(f"     {n} shards as nobody: each delivered its domain; {len(tasks)} threads, all "
        f"nobody's")


@cases.add
def reload_after_drop(x):
    text = x.config_text.replace("keys = test-key-one, test-key-two",
                                 "keys = test-key-one, test-key-two, reload-key-0123456789")
    check(text != x.config_text, "the config has no [api] keys line to change")
    x.conf.write_text(text)
    n = x.d.log().count("configuration reloaded")
    x.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: x.d.log().count("configuration reloaded") > n, 10, "the reload")
    r = x.d.api("GET", "/v1/stats", key="reload-key-0123456789")
    check(r.status == 200, f"the reloaded key: {r}")
    # A config nobody cannot read: the running one stays, the log says why.
    os.chmod(x.conf, 0o600)
    try:
        x.d.proc.send_signal(signal.SIGHUP)
        m = wait_for(lambda: re.search(r"reload failed, keeping the running config: .*"
                                       r"Permission denied", x.d.log()), 10,
                     "'reload failed' in the log")
        r = x.d.api("GET", "/v1/stats", key="reload-key-0123456789")
        check(r.status == 200, f"after a failed reload the key stopped working: {r}")
    finally:
        os.chmod(x.conf, 0o644)
    log(f"     {m.group(0)[:120]}")


@cases.add
def users_file_stays_readable(x):
    """`ringpost user add` run by root keeps the users file's owner, group
    and mode, so the daemon (nobody) still reads it on SIGHUP."""
    users = x.env.dir / "users"
    x.conf.write_text(x.config_text + "\n[auth]\nusers = users\nrequire_tls = no\n")

    def user_add(name, pw):
        p = subprocess.run([ringpost_bin(), "user", "-c", str(x.conf), "add", name],
                           input=f"{pw}\n".encode(), capture_output=True, cwd=str(x.env.dir),
                           timeout=20 * SLOW)
        check(p.returncode == 0, f"user add {name}: {p.returncode} {p.stderr[-300:]!r}")

    def reload(what):
        n = x.d.log().count("configuration reloaded")
        failed = x.d.log().count("reload failed")
        x.d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: x.d.log().count("configuration reloaded") > n or
                 x.d.log().count("reload failed") > failed, 10, f"the reload ({what})")
        check(x.d.log().count("reload failed") == failed,
              f"{what}: {x.d.log().splitlines()[-1]}")
    user_add("alice", "alice-password")
    os.chown(users, 0, NOBODY.pw_gid)
    os.chmod(users, 0o640)
    reload("users file root:nobody's group 0640")
    user_add("bob", "bob-password")
    st = os.stat(users)
    check((st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, NOBODY.pw_gid, 0o640),
          f"after user add: owner {st.st_uid}:{st.st_gid} mode {st.st_mode & 0o777:o}, "
          f"expected 0:{NOBODY.pw_gid} 640")
    reload("after user add bob")
    import smtplib
    with smtplib.SMTP("127.0.0.1", x.d.port, timeout=10 * SLOW) as s:
        s.ehlo("client.test")
        code, _ = s.login("bob", "bob-password")
        check(code == 235, f"AUTH as bob after the reload: {code}")
    x.conf.write_text(x.config_text)
    reload("without [auth]")
    log("     users file kept root:nogroup 0640 through user add; nobody reloaded it")


@cases.add
def root_spool_given_to_user(x):
    """A spool written by a root run (no user, loopback only) is nobody's
    after the next start; links in it are not followed; hard links stop it."""
    check(x.d.stop() == 0, "SIGTERM")
    plain = x.config_text.replace("user = nobody\n", "")
    check(plain != x.config_text, "no user line to take out")
    x.conf.write_text(plain)
    x.d.start()
    check("running as root without [server] user: allowed because every listener is on "
          "loopback" in x.d.log(since_start=True), "no warning about running as root")
    with open(f"/proc/{x.d.proc.pid}/status") as f:
        check(ids_of(f.read())["Uid"] == [0] * 4, "without user it should still be root")
    deliver_smtp(x, "asroot@ok.test", "priv-as-root")
    check(x.d.stop() == 0, "SIGTERM")
    secret = x.env.dir / "secret"
    secret.write_text("root only\n")
    os.chmod(secret, 0o600)
    os.chown(x.spool, 0, 0)
    for f in os.listdir(x.spool):
        os.chown(os.path.join(x.spool, f), 0, 0)
    os.symlink(secret, os.path.join(x.spool, "evil-link"))
    x.conf.write_text(x.config_text)
    x.d.start()
    m = re.search(r"data_dir \S+: gave (\d+) files and directories to nobody",
                  x.d.log(since_start=True))
    check(m and int(m.group(1)) >= 3, f"no or too few files given to nobody: "
          f"{m.group(0) if m else x.d.log_tail(5)}")
    st = os.stat(secret)
    check(st.st_uid == 0 and os.lstat(os.path.join(x.spool, "evil-link")).st_uid == 0,
          "a symbolic link in the spool was followed")
    bad = owned_by_nobody(x.spool)
    check(not bad, f"still root's: {bad}")
    deliver_smtp(x, "again@ok.test", "priv-again")
    # A hard link to a root file: start-up refuses, naming it.
    check(x.d.stop() == 0, "SIGTERM")
    hard = os.path.join(x.spool, "hard-link")
    os.link(secret, hard)
    p = run(["serve", "-c", str(x.conf)], x.env.dir)
    errs = stderr_lines(p)
    os.unlink(hard)
    check(p.returncode == 73 and errs and "hard-link has 2 hard links" in errs[-1],
          f"hard link: exit {p.returncode}, {errs[-1:]}")
    check(os.stat(secret).st_uid == 0, "the hard-linked root file was given away")
    x.d.start()
    every_id_is_nobodys(x)
    log(f"     {m.group(0)}; a hard link: {errs[-1][-80:]}")


def refused(x, name, text, argv_list, code, words, as_user=None, line=None):
    path = x.env.write_config(text, f"{name}.conf")
    for argv in argv_list:
        p = run([argv, "-c", str(path)], x.env.dir, as_user=as_user)
        errs = stderr_lines(p)
        what = f"{name} ({argv})"
        check(p.returncode == code, f"{what}: exit {p.returncode}, expected {code}: {errs}")
        check(len(errs) == 1, f"{what}: expected one stderr line, got {errs}")
        for w in words:
            check(w in errs[0], f"{what}: {w!r} not in {errs[0]!r}")
        if line:
            check(f"{path}:{line}: " in errs[0], f"{what}: not FILE:LINE: {errs[0]!r}")
    check(not (x.env.dir / f"{name}-spool").exists(), f"{name}: a spool was created")
    log(f"     {name}: {errs[0][:150]}")


@cases.add
def refusals(x):
    port, wide = free_port(), free_port()

    def conf(name, server=None, inbound=None):
        extra = f"\n[listen]\ninbound = {inbound}\n" if inbound else ""
        t = config_text(submission_port=port, routes={}, server=server,
                        data_dir=str(x.env.dir / f"{name}-spool"))
        if extra:
            t = t.replace("[listen]\n", f"[listen]\ninbound = {inbound}\n")
        return t
    refused(x, "wide", conf("wide", inbound=f"0.0.0.0:{wide}"), ["serve", "check-config"],
            EX_CONFIG, [f"[listen] inbound on 0.0.0.0:{wide} (not loopback)",
                        "set [server] user"])
    t = conf("unknown", server={"user": "no-such-user-here"})
    refused(x, "unknown", t, ["serve", "check-config"], EX_CONFIG,
            ["[server] user no-such-user-here does not exist"],
            line=t.splitlines().index("user = no-such-user-here") + 1)
    t = conf("root", server={"user": "root"})
    refused(x, "root", t, ["serve", "check-config"], EX_CONFIG,
            ["[server] user root is root (uid 0)"],
            line=t.splitlines().index("user = root") + 1)
    # Not started as root: another user cannot be switched to (77).
    t = conf("other", server={"user": "daemon"})
    refused(x, "other", t, ["serve"], 77, ["[server] user is daemon, but ringpost runs as uid "
                                           f"{NOBODY.pw_uid}, not root"],
            as_user=NOBODY, line=t.splitlines().index("user = daemon") + 1)
    # ... but the user it already is, is fine.
    spool = x.env.dir / "self-spool"
    spool.mkdir()
    os.chown(spool, NOBODY.pw_uid, NOBODY.pw_gid)
    path = x.env.write_config(config_text(submission_port=port, routes={},
                                          server={"user": "nobody"}, data_dir=str(spool)),
                              "self.conf")
    logf = open(x.env.dir / "self.log", "wb")

    def become():
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)
    p = subprocess.Popen([ringpost_bin(), "serve", "-c", str(path)], stdin=subprocess.DEVNULL,
                         stdout=logf, stderr=logf, cwd=str(x.env.dir), preexec_fn=become)
    logf.close()
    try:
        def ready():
            if p.poll() is not None:
                raise TestFailure(f"serve as nobody with user = nobody exited {p.returncode}: "
                                  f"{(x.env.dir / 'self.log').read_text()[-400:]}")
            return "ringpost ready" in (x.env.dir / "self.log").read_text()
        wait_for(ready, 15, "serve as nobody to be ready")
        with open(f"/proc/{p.pid}/status") as f:
            check(ids_of(f.read())["Uid"] == [NOBODY.pw_uid] * 4, "not running as nobody")
    finally:
        rc = stop_process(p)
    check(rc == 0, f"serve as nobody: SIGTERM exit {rc}")
    log("     user = nobody started as nobody: runs")


def main():
    global NOBODY
    if os.geteuid() != 0:
        print("SKIP test_privdrop: needs root to test dropping privileges ([server] user); "
              "the test machine and CI run as root", file=sys.stderr)
        sys.exit(SKIP)
    NOBODY = pwd.getpwnam("nobody")
    with TestEnv("privdrop") as env:
        x = Ctx()
        x.env = env
        x.ok = env.smtpd("ok")
        hp = free_port()
        env.fast_sink("hard", [f"127.0.0.1:{hp}"], ["--rcpt-script", "550"])
        x.spool = str(env.dir / "ringpost-spool")
        x.d = env.daemon(routes={"ok.test": x.ok.addr, "hard.test": f"127.0.0.1:{hp}"},
                         with_api=True, server={"user": "nobody"}, data_dir=x.spool)
        x.conf = env.dir / "ringpost.conf"
        x.config_text = x.conf.read_text()
        check("user = nobody\n" in x.config_text, "the config has no user line")
        x.d.start()
        failures = run_cases(cases, x, [x.d])
        stop_clean(x.d, failures)
        raise_failures(failures)


if __name__ == "__main__":
    from harness import run_test
    run_test(main)
