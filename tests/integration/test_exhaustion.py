"""test_exhaustion.py - a full disk and a memory cap: clean refusals, no
crash, nothing acknowledged lost, and recovery.

Disk (data_dir on a small tmpfs; skipped with a message when mount is not
permitted). Submission by SMTP clients (DATA and BDAT) and an API client
while delivery is down:
  1. the spool fills the disk: new mail gets 452 4.3.1 (at MAIL, RCPT or the
     end of the message) and 503 with Retry-After from the API (a batch
     entry: "unavailable"), nothing else; the daemon keeps [queue] min_free for its own state writes
     instead of running the disk dry (the old code filled it to 0 bytes
     between two usage checks), and writes nothing it cannot commit;
  2. the tmpfs is remounted bigger: submission resumes by itself, and fills
     the new room the same clean way;
  3. a ballast file takes the last free byte, then the next hop comes up:
     deliveries go on while their state cannot be written (the writer holds
     the updates; the old code dropped them); the daemon lives;
  4. the ballast goes: every held update is written, the spool drains,
     takes mail again although data.mdb still fills most of the disk (its
     free pages count), the clients' last messages are acknowledged and
     delivered; every acknowledged message arrives complete;
  5. a restart finds 0 recipients queued and delivers nothing twice (the
     old code found every delivered-but-unrecorded recipient queued and
     sent each again).

Memory, RLIMIT_AS (prlimit on the running daemon; not under ASan, whose
shadow memory needs terabytes of address space): concurrent 16 MB
messages over SMTP and the API beyond the limit get 452 4.3.1 and 503
(Retry-After); the daemon lives; once the limit is lifted every refused
message goes in and every acknowledged one is delivered.

Memory, a cgroup v1 memory limit (/sys/fs/cgroup/memory; skipped when not
writable): malloc does not fail there, so the kernel's OOM killer ends the
daemon when concurrent large messages pass the limit (reported as found);
then the restarted daemon (no limit) delivers everything acknowledged.

Size: RINGPOST_CHAOS_FULL=1 for a 128 MB tmpfs and 40,000 messages; a
16 MB tmpfs and 5,000 by default (the clients stop once past the tests'
phases: whatever was acknowledged must arrive).
"""

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from harness import (SANITIZE, TestEnv, TestFailure, check, free_port, log, run_test, wait_for)
from harness.ledger import report, sizes
from harness.submitters import SENDER, Work, complete_ids, start_clients

DISK_MB = sizes(128, 16, 16)
N = sizes(40_000, 5_000, 5_000)
MSG_SIZE = 6000
MIN_FREE = "2M"
CLEAN_REFUSALS = re.compile(r"^((MAIL|RCPT|DATA|BDAT) 452 4\.3\.1|HTTP 503 unavailable Retry-After|"
                            r"entry unavailable)$")


def statvfs_free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def mount_tmpfs(path, mb):
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0755", "tmpfs",
                        str(path)], capture_output=True, text=True)
    return r.returncode == 0, (r.stderr or r.stdout).strip()


def umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def wait_stalled(work, secs, timeout, what):
    """Wait until the acknowledged count has not moved for secs seconds
    and some refusal has been seen since; returns the count."""
    state = {"n": -1, "t": time.monotonic(), "refused": sum(work.refused.values())}

    def stalled():
        check(not work.failure, work.failure)
        n = work.count()
        if n != state["n"]:
            state["n"], state["t"] = n, time.monotonic()
            return False
        return (time.monotonic() - state["t"] >= secs and
                sum(work.refused.values()) > state["refused"])
    wait_for(stalled, timeout, what, interval=0.1)
    return state["n"]


def check_refusals(work, what):
    bad = {k: v for k, v in work.refused.items() if not CLEAN_REFUSALS.match(k)}
    check(not bad, f"{what}: refusals other than 452 4.3.1 / 503 Retry-After: {bad}")


def rcpt_of(i):
    return f"x{i}@full.test"


# ---- disk ----------------------------------------------------------------

def disk_case(env):
    mnt = env.dir / "disk"
    ok, why = mount_tmpfs(mnt, DISK_MB)
    if not ok:
        log(f"SKIP disk: cannot mount a tmpfs ({why}); run as root to test a full disk")
        return {"disk": "skipped"}
    try:
        return disk_phases(env, mnt)
    finally:
        for d in env.daemons:
            d.kill()
        umount(mnt)


def disk_phases(env, mnt):
    sink_port = free_port()
    saved = env.dir / "disk-saved"
    d = env.daemon(name="disk", routes={"full.test": f"127.0.0.1:{sink_port}"}, with_api=True,
                   data_dir=str(mnt / "spool"),
                   queue={"max_size": "1G", "min_free": MIN_FREE},
                   domain_defaults={"connect_timeout": "1s"}).start()
    work = Work(N)
    t0 = time.monotonic()
    ths = start_clients(work, smtp_port=d.port, api_port=d.api_port, prefix="dk",
                        rcpt_of=rcpt_of, smtp=3, api=2, size=MSG_SIZE, api_batch=20,
                        timeout=180 + N / 100)
    try:
        # 1. The spool fills the disk.
        n1 = wait_stalled(work, 2.0, 120, "submission to stall on a full disk")
        free1 = statvfs_free(mnt)
        log(f"1. full after {n1} acknowledged ({time.monotonic() - t0:.1f}s): {free1} bytes "
            f"free on the tmpfs; refusals {dict(work.refused)}")
        check(d.alive(), f"the daemon died on a full disk:\n{d.log_tail()}")
        check_refusals(work, "full disk")
        kinds = set(work.refused)
        check(any(k.startswith("HTTP 503") for k in kinds), f"the API was never refused: {kinds}")
        check(any(" 452 4.3.1" in k for k in kinds), f"SMTP was never refused: {kinds}")
        check(free1 > 0, "the disk was filled to its last byte: min_free was not kept")
        st = d.api("GET", "/v1/stats").json()["spool"]
        check(st["accepting"] is False, f"/v1/stats spool: {st}")
        hz = d.api("GET", "/healthz", key=None)
        check(hz.status == 503, f"/healthz on a full disk: HTTP {hz.status}")
        check("commit failed" not in d.log(), "a commit failed for lack of space in phase 1")

        # 2. More room: submission resumes by itself, and fills it again.
        subprocess.run(["mount", "-o", f"remount,size={DISK_MB * 3 // 2}m", str(mnt)],
                       check=True)
        wait_for(lambda: work.count() > n1, 15, "submission to resume after the remount",
                 interval=0.1)
        n2 = wait_stalled(work, 2.0, 120, "submission to stall on the bigger disk")
        free2 = statvfs_free(mnt)
        log(f"2. remounted at {DISK_MB * 3 // 2} MB: resumed, full again at {n2} "
            f"acknowledged; {free2} bytes free")
        check_refusals(work, "full disk after the remount")
        check(free2 > 0, "the bigger disk was filled to its last byte")

        # 3. A ballast takes the last byte; the next hop comes up.
        ballast = mnt / "ballast"
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for chunk in (1 << 20, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        check(statvfs_free(mnt) == 0, "the ballast left room")
        sink = env.fast_sink("disk-sink", [f"127.0.0.1:{sink_port}"],
                             ["--save", str(saved)])
        wait_for(lambda: sink.messages() >= min(n2, 200), 60,
                 "deliveries while the disk is full", interval=0.2)
        time.sleep(2.0)
        check(d.alive(), f"the daemon died with a full disk under delivery:\n{d.log_tail()}")
        at_full = sink.messages()
        log(f"3. ballast: 0 bytes free; {at_full} delivered meanwhile; daemon alive")

        # 4. The ballast goes: everything drains, submission finishes.
        ballast.unlink()

        def accepting():
            check(d.alive(), f"the daemon died:\n{d.log_tail()}")
            return d.api("GET", "/v1/stats").json()["spool"]["accepting"]
        wait_for(accepting, 60, "the spool to take mail again once the ballast went",
                 interval=0.5)
        for t in ths:
            t.join(timeout=300)
        check(not any(t.is_alive() for t in ths), "the clients did not finish")
        check(not work.failure, work.failure)
        check_refusals(work, "recovery")
        t_sub = time.monotonic() - t0
    finally:
        work.stop = True
    check(len(work.acked) == N, f"{len(work.acked)} of {N} acknowledged")
    want = {f"dk-{i}" for i in work.acked}
    got = {}

    def all_there():
        if sink.messages() < len(want):
            return False
        got.update(complete_ids(saved, "dk"))
        return want <= set(got)
    try:
        wait_for(all_there, 120, "every acknowledged message delivered", interval=1.0)
    except TestFailure:
        lost = sorted(want - set(got or complete_ids(saved, "dk")))
        raise TestFailure(f"{len(lost)} acknowledged messages never arrived: {lost[:5]}")
    dups = sum(v - 1 for v in got.values())
    st = d.api("GET", "/v1/stats").json()["spool"]
    check(st["accepting"] is True, f"not accepting after the drain: {st}")
    log(f"4. ballast gone: all {N} acknowledged and delivered ({dups} duplicates), spool "
        f"accepting with data.mdb at {st['file_bytes']} bytes, {st['disk_free_bytes']} free")
    check("delayed state updates written" in d.log() or "commit failed" not in d.log(),
          "updates failed and were never written")

    # 5. A restart finds nothing left to do.
    before = sink.messages()
    rc = d.stop(timeout=30)
    check(rc == 0, f"SIGTERM: exit status {rc}")
    d.start(timeout=30)
    m = re.search(r"ringpost ready:.* (\d+) recipients queued", d.log(since_start=True))
    queued = int(m.group(1)) if m else -1
    time.sleep(2.0)
    again = sink.messages() - before
    log(f"5. restart: {queued} recipients queued, {again} delivered again")
    check(queued == 0, f"the restart found {queued} recipients queued: their delivered "
          f"state was never written")
    check(again == 0, f"{again} messages delivered a second time after the restart")
    check(dups == 0, f"{dups} duplicates without any crash")
    rc = d.stop(timeout=30)
    check(rc == 0, f"SIGTERM: exit status {rc}")
    d.check_log_clean()
    return {"disk_mb": DISK_MB, "disk_messages": N, "disk_acked": len(work.acked),
            "disk_refused": sum(work.refused.values()),
            "disk_refusals": "/".join(f"{k.replace(' ', '_')}:{v}"
                                      for k, v in sorted(work.refused.items())),
            "disk_duplicates": dups, "disk_lost": len(want - set(got)),
            "disk_held_updates": held_count(d), "disk_s": f"{t_sub:.1f}"}


def held_count(d):
    m = re.findall(r"spool: (\d+) delayed state updates written", d.log())
    return sum(int(x) for x in m)


# ---- memory --------------------------------------------------------------

BIG = 16 << 20  # bytes per message in the memory cases


def vm_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def big_message(prefix, i, api):
    """Message i of BIG bytes (test id, X-End), SMTP content or an API object."""
    tid = f"{prefix}-{i}"
    line = f"{tid} " + "z" * 66
    body = (line + "\r\n") * (BIG // (len(line) + 2))
    if api:
        return {"from": SENDER, "to": [f"{prefix}{i}@mem.test"], "subject": tid,
                "headers": {"X-Test-Id": tid}, "text": body.replace("\r\n", "\n") +
                f"X-End: {tid}\n"}
    return (f"From: <{SENDER}>\r\nSubject: {tid}\r\nX-Test-Id: {tid}\r\n\r\n{body}"
            f"X-End: {tid}\r\n").encode()


def big_burst(d, prefix, smtp, api, results):
    """smtp + api concurrent BIG messages, one each, all sent at once (the
    content is built first); results[i] = the final reply."""
    from harness import SMTPConn, dot_stuff
    payload = {i: dot_stuff(big_message(prefix, i, False)) for i in range(smtp)}
    payload.update({smtp + i: json.dumps(big_message(prefix, smtp + i, True)).encode()
                    for i in range(api)})
    go = threading.Barrier(smtp + api)

    def one_smtp(i):
        try:
            with SMTPConn(d.port, timeout=120) as c:
                c.expect(220, "banner")
                c.ehlo("big.client.test")
                c.cmd(f"MAIL FROM:<{SENDER}>", 250)
                c.cmd(f"RCPT TO:<{prefix}{i}@mem.test>", 250)
                c.cmd("DATA", 354)
                go.wait(timeout=60)
                c.send(payload[i])
                code, lines = c.read_reply()
                results[i] = lines[-1]
        except (OSError, EOFError, TestFailure, threading.BrokenBarrierError) as e:
            results[i] = f"{type(e).__name__}: {e}"

    def one_api(i):
        try:
            go.wait(timeout=60)
            r = d.api("POST", "/v1/messages", payload[i], timeout=120)
            results[i] = (f"HTTP {r.status} {r.error()[0] if r.status != 202 else ''}"
                          f"{' Retry-After' if r.header('Retry-After') else ''}").strip()
        except OSError as e:
            results[i] = f"{type(e).__name__}: {e}"
    ths = [threading.Thread(target=one_smtp, args=(i,)) for i in range(smtp)]
    ths += [threading.Thread(target=one_api, args=(smtp + i,)) for i in range(api)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(timeout=300)


def resend_and_deliver(env, d, prefix, results, sink_port, name):
    """Send every message without a promise again (no limit now), start the
    sink, and check every acknowledged one arrives complete."""
    from harness import smtp_submit
    for i, r in results.items():
        if not (r.startswith("250") or r.startswith("HTTP 202")):
            smtp_submit(d.port, SENDER, [f"{prefix}{i}@mem.test"], big_message(prefix, i, False))
    saved = env.dir / f"{name}-saved"
    sink = env.fast_sink(f"{name}-sink", [f"127.0.0.1:{sink_port}"], ["--save", str(saved)])
    want = {f"{prefix}-{i}" for i in results}
    got = {}

    def there():
        if sink.messages() < len(want):
            return False
        got.update(complete_ids(saved, prefix))
        return want <= set(got)
    wait_for(there, 120, f"every {name} message delivered", interval=1.0)
    return sum(v - 1 for v in got.values())


def rlimit_case(env):
    if SANITIZE:
        log("SKIP rlimit: ASan reserves terabytes of address space; RLIMIT_AS cannot apply")
        return {"rlimit": "skipped (ASan)"}
    sink_port = free_port()
    d = env.daemon(name="mem", routes={"mem.test": f"127.0.0.1:{sink_port}"}, with_api=True,
                   queue={"max_size": "1G"}, submission={"max_message_size": "64M"},
                   api={"max_request_size": "128M"}).start()
    pid = d.proc.pid
    vm = vm_kb(pid, "VmSize") << 10
    head = 56 << 20
    subprocess.run(["prlimit", f"--pid={pid}", f"--as={vm + head}:unlimited"], check=True)
    results = {}
    big_burst(d, "rl", 10, 3, results)
    check(d.alive(), f"the daemon died under RLIMIT_AS:\n{d.log_tail()}")
    kinds = {}
    for r in results.values():
        k = re.sub(r"queued as \w+", "queued", r)
        kinds[k] = kinds.get(k, 0) + 1
    log(f"RLIMIT_AS = VmSize + {head >> 20} MB, 10 SMTP + 3 API messages of 16 MB at once: "
        f"{kinds}")
    for k in kinds:
        check(k.startswith("250 2.0.0 Ok: queued") or k == "HTTP 202" or
              k == "452 4.3.1 Insufficient system storage" or
              k == "HTTP 503 unavailable Retry-After",
              f"under RLIMIT_AS: {k!r}")
    refused = sum(v for k, v in kinds.items() if k.startswith("452") or k.startswith("HTTP 503"))
    check(refused > 0, f"RLIMIT_AS never bit: {kinds}")
    subprocess.run(["prlimit", f"--pid={pid}", "--as=unlimited"], check=True)
    dups = resend_and_deliver(env, d, "rl", results, sink_port, "mem")
    rc = d.stop(timeout=30)
    check(rc == 0, f"SIGTERM: exit status {rc}")
    d.check_log_clean()
    return {"rlimit_refused": refused, "rlimit_accepted": len(results) - refused,
            "rlimit_duplicates": dups}


def cgroup_dir():
    for line in open("/proc/self/cgroup"):
        parts = line.strip().split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            return Path("/sys/fs/cgroup/memory" + parts[2])
    return None


def cgroup_case(env):
    base = cgroup_dir()
    if not base or not (base / "cgroup.procs").exists():
        log("SKIP cgroup: no cgroup v1 memory controller here")
        return {"cgroup": "skipped"}
    cg = base / f"rp-exhaustion-{os.getpid()}"
    try:
        cg.mkdir()
    except OSError as e:
        log(f"SKIP cgroup: cannot create {cg}: {e}")
        return {"cgroup": "skipped"}
    sink_port = free_port()
    d = env.daemon(name="cg", routes={"mem.test": f"127.0.0.1:{sink_port}"}, with_api=True,
                   queue={"max_size": "1G"}, submission={"max_message_size": "64M"},
                   api={"max_request_size": "128M"}).start()
    try:
        (cg / "cgroup.procs").write_text(str(d.proc.pid))
        limit = (int((cg / "memory.usage_in_bytes").read_text()) + (96 << 20))
        (cg / "memory.limit_in_bytes").write_text(str(limit))
        # Small mail first: acknowledged, it must survive what follows.
        from harness.submitters import api_message
        results = {}
        small = [api_message("cg", 100 + i, f"cg{100 + i}@mem.test", 600) for i in range(50)]
        r = d.api("POST", "/v1/messages/batch", {"messages": small})
        check(r.status == 202, f"small batch: HTTP {r.status}")
        for i, e in enumerate(r.json()["results"]):
            results[100 + i] = "HTTP 202" if e.get("id") else str(e)
        big_burst(d, "cg", 12, 2, results)
        time.sleep(0.5)
        oom = re.search(r"oom_kill (\d+)", (cg / "memory.oom_control").read_text())
        kills = int(oom.group(1)) if oom else 0
        alive = d.alive()
        acked = sum(1 for r in results.values() if r.startswith("250") or r == "HTTP 202")
        log(f"cgroup memory limit {limit >> 20} MB, 50 small messages, then 12 SMTP + 2 API "
            f"messages of 16 MB at once: {acked} acknowledged; daemon "
            f"{'alive' if alive else 'killed'} "
            f"(status {d.proc.returncode}), OOM kills {kills}")
        check(alive or kills, f"the daemon died, not by the OOM killer: {d.proc.returncode}\n"
              f"{d.log_tail()}")
        if not alive:
            d.start(timeout=60)  # a new process, outside the cgroup
        else:
            d.stop(timeout=60)
            d.start(timeout=60)
    finally:
        try:
            cg.rmdir()
        except OSError:
            pass
    dups = resend_and_deliver(env, d, "cg", results, sink_port, "cg")
    rc = d.stop(timeout=30)
    check(rc == 0, f"SIGTERM: exit status {rc}")
    d.check_log_clean()
    return {"cgroup_limit_mb": limit >> 20, "cgroup_oom_killed": int(not alive),
            "cgroup_acked_before": acked, "cgroup_duplicates": dups}


def main():
    with TestEnv("exhaustion") as env:
        t0 = time.monotonic()
        out = {}
        out.update(disk_case(env))
        out.update(rlimit_case(env))
        out.update(cgroup_case(env))
        out["elapsed_s"] = f"{time.monotonic() - t0:.1f}"
        report("exhaustion", out)


if __name__ == "__main__":
    run_test(main)
