"""tls_receiver.py - an SMTP receiver with STARTTLS (aiosmtpd), run as a script
by TlsReceiver (servers.py) with Debian's /usr/bin/python3, the only Python
that has python3-aiosmtpd:
  /usr/bin/python3 harness/tls_receiver.py --dir DIR [--port P]
      [--cert PEM --key PEM] [--broken-tls]
prints "PORT n" once it listens, then records each message in DIR (see main).

--cert/--key: STARTTLS is offered with that certificate (without them it is
not offered). --broken-tls: STARTTLS is offered and answered 220, but what
follows is garbage instead of a TLS handshake; a session that does not say
STARTTLS gets its mail through as usual."""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
from pathlib import Path


def main(argv):
    """Every message goes to DIR as NNNNNNNN-PID.eml (the data as aiosmtpd
    hands it, CRLF line ends) plus NNNNNNNN-PID.json: the envelope and the
    session's TLS ({"tls": true, "version": "TLSv1.3", "cipher": "..."} or
    {"tls": false}); the .json appears last, so a reader that lists *.json
    only sees complete messages. Nothing of the harness is imported."""
    from aiosmtpd.smtp import SMTP, syntax

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--broken-tls", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.dir)
    seq = [len(list(out.glob("*.json")))]
    pid = os.getpid()

    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            seq[0] += 1
            base = out / f"{seq[0]:08d}-{pid}"
            tmp = base.with_suffix(".tmp")
            tmp.write_bytes(envelope.original_content or envelope.content)
            os.rename(tmp, base.with_suffix(".eml"))
            info = {"mailfrom": envelope.mail_from, "rcpttos": envelope.rcpt_tos,
                    "peer": list(session.peer), "tls": session.ssl is not None}
            if session.ssl is not None:
                obj = session.ssl.get("ssl_object")
                info["version"] = obj.version() if obj else None
                info["cipher"] = obj.cipher()[0] if obj else None
            tmp.write_text(json.dumps(info))
            os.rename(tmp, base.with_suffix(".json"))
            return "250 2.0.0 OK: queued"

    class BrokenTls(SMTP):
        """STARTTLS answered 220, then bytes that are no TLS at all."""

        @syntax("STARTTLS", when="tls_context")
        async def smtp_STARTTLS(self, arg):
            await self.push("220 Ready to start TLS")
            self.transport.write(b"this is not a TLS handshake\r\n" * 4)
            await asyncio.sleep(0.2)
            self.transport.close()

    cls = BrokenTls if a.broken_tls else SMTP

    def factory():
        return cls(Handler(), hostname="tls-receiver.test", tls_context=ctx,
                   data_size_limit=64 << 20, enable_SMTPUTF8=True, decode_data=False,
                   ident="tls-receiver")

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    srv = loop.run_until_complete(loop.create_server(factory, a.host, a.port, backlog=1024))
    print("PORT", srv.sockets[0].getsockname()[1], flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    srv.close()


if __name__ == "__main__":
    main(sys.argv[1:])
