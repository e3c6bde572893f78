#!/usr/bin/python3
"""dkim_check.py - an independent DKIM verifier for the integration tests, run
as a script with Debian's /usr/bin/python3 (the only Python that has
python3-dkim, i.e. dkimpy, and python3-nacl for ed25519-sha256):
  /usr/bin/python3 harness/dkim_check.py --dns PORT [--minkey BITS] MSG...
  /usr/bin/python3 harness/dkim_check.py --dns PORT --txt NAME

Public keys come from DNS only: every TXT lookup dkimpy makes goes as a
real query to the test's resolver (a dnsmasq on 127.0.0.1:PORT), over UDP,
and over TCP when the answer is truncated; the character-strings of the
answer are joined (RFC 6376 3.6.2.2), so a long RSA record may be split.

For each MSG file (the message bytes as a receiver got them), dkim.verify()
checks its first DKIM-Signature; one JSON line is printed per file:
{"path", "ok": true|false, "why": dkimpy's reason (its errors; for a
signature over changed header fields, which dkimpy does not explain, "b=
does not verify"), "queried": [the names looked up]}.
--txt prints {"name", "txt"} for one lookup (null when there is none).
Exit status 0 unless the script itself breaks. Nothing of the harness or of
ringpost is imported: standard library and dkimpy only."""

import argparse
import io
import json
import logging
import random
import socket
import struct
import sys

T_TXT = 16


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def skip_name(msg, i):
    """The offset after the (possibly compressed) name at msg[i]."""
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def parse_txt(msg, qid):
    """(truncated, [TXT rdata as joined bytes]) of a DNS response."""
    rid, flags, qd, an = struct.unpack(">HHHH", msg[:8])
    if rid != qid or not flags & 0x8000:
        raise ValueError("not the answer to our query")
    if flags & 0x0200:
        return True, []
    i = 12
    for _ in range(qd):
        i = skip_name(msg, i) + 4
    out = []
    for _ in range(an):
        i = skip_name(msg, i)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
        i += 10
        rdata = msg[i:i + rdlen]
        i += rdlen
        if rtype != T_TXT:
            continue
        parts, j = [], 0
        while j < len(rdata):
            n = rdata[j]
            parts.append(rdata[j + 1:j + 1 + n])
            j += 1 + n
        out.append(b"".join(parts))
    return False, out


def query_txt(port, name, timeout):
    """The TXT records of name at 127.0.0.1:port (a list of bytes)."""
    qid = random.randint(0, 65535)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name)
    q += struct.pack(">HH", T_TXT, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, ("127.0.0.1", port))
        truncated, txt = parse_txt(s.recv(65535), qid)
    if not truncated:
        return txt
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">H", len(q)) + q)
        f = s.makefile("rb")
        n = struct.unpack(">H", f.read(2))[0]
        return parse_txt(f.read(n), qid)[1]


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dns", type=int, required=True, help="the resolver's port on 127.0.0.1")
    ap.add_argument("--minkey", type=int, default=1024)
    ap.add_argument("--txt", help="only look this name up")
    ap.add_argument("msgs", nargs="*")
    a = ap.parse_args(argv)
    if a.txt:
        txt = query_txt(a.dns, a.txt, 2.0)
        print(json.dumps({"name": a.txt, "txt": txt[0].decode() if txt else None}))
        return 0

    import dkim  # only here: --txt works without python3-dkim

    queried = []

    def dnsfunc(name, timeout=5):
        name = name.decode("ascii") if isinstance(name, bytes) else name
        queried.append(name)
        txt = query_txt(a.dns, name, min(timeout, 2.0))
        return txt[0] if txt else None

    buf = io.StringIO()
    logger = logging.getLogger("dkim_check")
    logger.addHandler(logging.StreamHandler(buf))
    logger.setLevel(logging.INFO)  # DEBUG would print whole canonical bodies
    logger.propagate = False
    for path in a.msgs:
        with open(path, "rb") as f:
            msg = f.read()
        buf.seek(0)
        buf.truncate()
        queried.clear()
        try:
            ok = bool(dkim.verify(msg, logger=logger, dnsfunc=dnsfunc, minkey=a.minkey))
            why = buf.getvalue().strip().replace("\n", " | ")
            if not ok and not why:
                why = "b= does not verify (signed header fields or signature changed)"
        except Exception as e:  # noqa: BLE001 - any error is a failed verification
            ok, why = False, f"{type(e).__name__}: {e}"
        print(json.dumps({"path": path, "ok": ok, "why": why, "queried": list(queried)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
