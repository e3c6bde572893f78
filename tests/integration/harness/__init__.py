"""harness - shared helpers for the ringpost integration tests, one module per
job; this file re-exports their public names, so tests say `from harness
import ...` whichever module a name lives in.

Real parts only: the real daemon binary, real sockets on loopback, real
clients (smtplib, curl, a raw-socket client) and receivers we did not write
(Python's smtpd module in a separate process, Postfix's smtp-sink). Every
wait is bounded; every process we start is stopped in cleanup (a TestEnv is
a context manager; when a test fails it prints the tail of each daemon's log
and keeps its directory). Environment:
  RINGPOST_BIN      the ringpost binary (default ../../build/bin/ringpost)
  RINGPOST_BUILD    the build directory (tools such as ringpost-sink)
  RINGPOST_SANITIZE ON when the binary is an ASan/UBSan build: waits scale up
  RINGPOST_KEEP=1   keep the temporary directories for a post-mortem

  base.py      paths, SLOW, TestFailure, check, log
  proc.py      processes and ports: bench/proclib with the tests' choices
  config.py    config_text, API_KEYS
  clients.py   SMTPConn, HTTPConn, api_request, curl, smtp_submit
  daemon.py    Daemon, its log (parse_kv, log_events), ringpost_cli
  servers.py   receivers (smtpd, aiosmtpd with STARTTLS, smtp-sink, ringpost-sink), dnsmasq,
               fake listeners
  api.py       api_* calls, waits on recipient states, the bounce mailbox
  env.py       TestEnv, Cases, run_cases, stop_clean, run_test
  receiver.py  the smtpd receiver process (a script)
  tls_receiver.py  the aiosmtpd receiver with STARTTLS (a script for /usr/bin/python3)
  dkim_check.py  dkimpy verifying DKIM signatures with keys from a test DNS server
               (a script for /usr/bin/python3)
  tlsfiles.py  a private CA and certificates for the TLS tests (openssl)
"""

from .api import (api_domain, api_rcpt, api_send, api_status, api_submit_batch, bounce_get,
                  bounce_list, bounces_for, wait_rcpt, wait_rcpts)
from .base import (ASAN_BUILD, HERE, SANITIZE, SLOW, SOURCE_ROOT, TestFailure, build_bin, check,
                   log, ringpost_bin)
from .clients import (QUEUED_RE, ApiReply, HTTPConn, SMTPConn, api_request, curl, dot_stuff,
                      queued_id, smtp_submit)
from .config import API_KEY, API_KEYS, config_text
from .daemon import EX_CONFIG, Daemon, iso_epoch, log_events, parse_kv, ringpost_cli
from .env import Cases, TestEnv, raise_failures, run_cases, run_test, stop_clean
from .proc import (free_port, kill_all_children, port_accepts, spawn, stop_process,
                   wait_for)
from .tlsfiles import CA, self_signed
from .servers import (ClosedPort, Dnsmasq, FastSink, Received, SavedMail, SlammingPort,
                      SmtpdReceiver, SmtpSink, StrictSmtpServer, ThreadedListener, TlsReceiver,
                      dns_query, saved_mail, sink_counts, sink_history)
