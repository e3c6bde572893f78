/* fuzz_imap_session.c - the IMAP server (api/imap*.c) fed what a client
 * sends: framing with literals (synchronising or not), the commands of
 * every state (CAPABILITY, STARTTLS, LOGIN and AUTHENTICATE without users,
 * SELECT/EXAMINE, LIST, STATUS, FETCH, STORE, SEARCH, EXPUNGE, UID ...,
 * IDLE, CLOSE, LOGOUT), long commands run in slices and flag changes and
 * expunges through the spool writer, on a bounce mailbox of a few reports
 * in a real spool.
 *
 * Input: a mode byte (bit 0: the session starts logged in, as after a
 * LOGIN; bits 1-7: how the bytes are cut into the chunks that arrive one
 * by one, 0 = all at once), then what the client sends. The session runs
 * on the loop over an AF_UNIX socketpair; its responses are read and dropped.
 * Messages it expunges are put back before the next input.
 */
#include <stdlib.h>
#include <unistd.h>

#include "api/imap.h"
#include "api/imap_impl.h"
#include "base/auth.h"
#include "base/list.h"
#include "fuzz.h"

static const char conf[] = "hostname = imap.fuzz.test\n";

static const char *const mailbox[] = {
	"Date: Mon, 2 Jan 2006 15:04:05 +0000\r\nFrom: MAILER-DAEMON@mx.example\r\n"
	"To: bounce-1@bounces.example\r\nSubject: Undelivered\r\nMessage-ID: <1@x>\r\n"
	"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
	"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\n"
	"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; x@y\r\n"
	"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
	"From: a@example.org\r\nSubject: hi\r\n\r\noriginal\r\n--b--\r\n",
	"From: \"Ann\" <a@example.org>, group: b@x, c@y;\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
	"\r\nplain body\r\nsecond line\r\n",
	"Subject: complaint\r\nContent-Type: multipart/report; report-type=feedback-report; "
	"boundary=x\r\n\r\n--x\r\nContent-Type: message/feedback-report\r\n\r\n"
	"Feedback-Type: abuse\r\n\r\n--x--\r\n",
};
#define NMSG (sizeof(mailbox) / sizeof(mailbox[0]))

static struct auth_limiter *limiter;
static struct mailbox_config mcfg = {
	.hostname = "imap.fuzz.test", .allowed = "", .idle_timeout_ms = 60000, .max_clients = 10
};

struct run {
	struct imap_session *s;
	bool gone; /* the session was freed */
};

static void session_gone(void *arg)
{
	((struct run *)arg)->gone = true;
}

/* settled - nothing the session waits for is on the loop: no spool
 * request, no command running in slices. */
static bool settled(void *arg)
{
	struct run *r = arg;
	if (r->gone)
		return true;
	enum imap_wait w = r->s->wait;
	return !r->s->inflight && w != IW_SPOOL && w != IW_JOB && w != IW_CHECK;
}

static bool gone(void *arg)
{
	return ((struct run *)arg)->gone;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mcfg.limits = fuzz_limits();
	(void)argc;
	(void)argv;
	fuzz_env_get(conf);
	limiter = auth_limiter_new(5);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_env *e = fuzz_env_get(conf);
	if (!size)
		return 0;
	fuzz_env_mailbox(e, mailbox, NMSG);
	bool logged_in = data[0] & 1;
	uint32_t cut = data[0] >> 1, rnd = data[0] * 2654435761u;
	data++;
	size--;

	struct run r = { 0 };
	struct mailbox_params p = { .loop = e->loop,
		                    .spool = e->spool,
		                    .reader = e->reader,
		                    .limiter = limiter,
		                    .cfg = &mcfg,
		                    .session_gone = session_gone,
		                    .arg = &r };
	struct imap_server *srv = imap_server_new(&p);
	int fds[2];
	fuzz_socketpair(fds);
	e->drain_fd = fds[1];
	imap_session_start(srv, fds[0], false);
	r.s = rp_list_entry(srv->sessions.next, struct imap_session, link);
	if (logged_in) {
		r.s->user = xstrdup("fuzz");
		imap_set_state(r.s, IMAP_AUTH);
	}

	fuzz_feed(e, &r.s->conn, data, size, cut, 8, rnd, &r.gone, settled, gone, &r);
	imap_server_free(srv);
	e->drain_fd = -1;
	close(fds[1]);
	fuzz_env_recycle(e);
	return 0;
}
