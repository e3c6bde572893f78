"""receiver.py - the smtpd receiver, run as a script by SmtpdReceiver (servers.py):
  python3 harness/receiver.py --dir DIR [--host H] [--port P]
prints "PORT n" once it listens, then records each message in DIR (see main);
--host ::1 listens on IPv6."""

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path


def main(argv):
    """Python's smtpd.SMTPServer in its own process (no GIL shared with the
    test). Every message it receives goes to DIR as NNNNNNNN-PID.eml (the
    data as smtpd hands it: CRLF turned into LF, dots un-stuffed, the last
    line end dropped) plus NNNNNNNN-PID.json (the envelope, the client's
    address as "peer" and its EHLO/HELO name as "helo"); the .json appears
    last, so a reader that lists *.json only sees complete messages.
    Standard library only: nothing of the harness is imported."""
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore
    import smtpd

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    out = Path(a.dir)
    seq = [len(list(out.glob("*.json")))]
    pid = os.getpid()

    class Channel(smtpd.SMTPChannel):
        def found_terminator(self):
            # process_message is not told which session it serves: say it.
            self.smtp_server.current = self
            super().found_terminator()

    class Server(smtpd.SMTPServer):
        channel_class = Channel
        current = None

        def process_message(self, peer, mailfrom, rcpttos, data, **kw):
            seq[0] += 1
            base = out / f"{seq[0]:08d}-{pid}"
            tmp = base.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.rename(tmp, base.with_suffix(".eml"))
            helo = self.current.seen_greeting if self.current else None
            tmp.write_text(json.dumps({"peer": list(peer), "mailfrom": mailfrom, "rcpttos": rcpttos,
                                       "mail_options": kw.get("mail_options", []),
                                       "helo": helo or None}))
            os.rename(tmp, base.with_suffix(".json"))
            return None

    srv = Server((a.host, a.port), None, data_size_limit=64 << 20, decode_data=False)
    srv.listen(1024)  # smtpd's own backlog is 5: concurrent connects would stall
    print("PORT", srv.socket.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *x: sys.exit(0))
    asyncore.loop(timeout=0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
