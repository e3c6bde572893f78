#!/usr/bin/python3
"""dkim_verify.py - verify messages signed by test_dkim.c with dkimpy.

Usage: dkim_verify.py KEY.pem SELECTOR DOMAIN MSG...

Derives the public key from the private PEM with python3-cryptography (not
with ringpost's code), serves it as the TXT record of
SELECTOR._domainkey.DOMAIN, and verifies the first DKIM-Signature of each
message file with dkim.verify(). Prints "record: <TXT>" and then one line
per message: "pass PATH" or "fail PATH: reason". Exit status 0 unless the
script itself breaks.
"""

import base64
import io
import logging
import sys

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def record_for(pem):
    key = serialization.load_pem_private_key(pem, password=None)
    pub = key.public_key()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()
    assert isinstance(key, rsa.RSAPrivateKey)
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def main():
    keyfile, selector, domain, msgs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    with open(keyfile, "rb") as f:
        record = record_for(f.read())
    print("record: " + record)
    want = f"{selector}._domainkey.{domain}.".encode()

    def dnsfunc(name, timeout=5):
        return record.encode() if name == want else None

    log = io.StringIO()
    logger = logging.getLogger("dkim_verify")
    logger.addHandler(logging.StreamHandler(log))
    logger.setLevel(logging.INFO)
    for path in msgs:
        with open(path, "rb") as f:
            msg = f.read()
        log.seek(0)
        log.truncate()
        try:
            ok = dkim.verify(msg, logger=logger, dnsfunc=dnsfunc, minkey=1024)
            why = log.getvalue().strip().replace("\n", " | ") or "signature mismatch"
        except Exception as e:  # noqa: BLE001 - any error is a failed verification
            ok, why = False, f"{type(e).__name__}: {e}"
        print(f"pass {path}" if ok else f"fail {path}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
