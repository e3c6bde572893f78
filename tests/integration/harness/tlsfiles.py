"""tlsfiles.py - certificates for the TLS tests, made with the openssl
command line: a private CA, server certificates it signs (RSA or ECDSA,
with the names given as subjectAltName), and self-signed ones."""

import subprocess
from pathlib import Path


def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise RuntimeError(f"openssl {' '.join(args[:2])}: {r.stderr.strip()[:300]}")


def _key(path, kind):
    if kind == "ec":
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", str(path))
    elif kind == "ed25519":
        _openssl("genpkey", "-algorithm", "ED25519", "-out", str(path))
    else:
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", str(path))


class CA:
    """A private certificate authority in directory d (ca.pem, ca.key)."""

    def __init__(self, d, name="ringpost test CA"):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.pem"
        self.key = self.dir / "ca.key"
        _key(self.key, "ec")
        _openssl("req", "-x509", "-new", "-key", str(self.key), "-days", "30",
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(self.cert))
        self._serial = 1

    def issue(self, name, names=None, kind="ec", prefix=None):
        """A server certificate for name (and names) signed by this CA:
        returns (cert path, key path); the cert file holds the chain."""
        prefix = prefix or name.replace("*", "star")
        key = self.dir / f"{prefix}.key"
        csr = self.dir / f"{prefix}.csr"
        crt = self.dir / f"{prefix}.crt"
        chain = self.dir / f"{prefix}.pem"
        _key(key, kind)
        _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
        sans = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}"
                        for n in [name, *(names or [])])
        ext = self.dir / f"{prefix}.ext"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                       "basicConstraints=CA:FALSE\n")
        self._serial += 1
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-set_serial", str(self._serial), "-days", "30", "-extfile", str(ext),
                 "-out", str(crt))
        chain.write_text(crt.read_text() + self.cert.read_text())
        return chain, key


def self_signed(d, name, kind="ec"):
    """A self-signed certificate for name in directory d: (cert, key)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    key = d / f"{name}-self.key"
    crt = d / f"{name}-self.pem"
    _key(key, kind)
    _openssl("req", "-x509", "-new", "-key", str(key), "-days", "30", "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name}", "-out", str(crt))
    return crt, key
