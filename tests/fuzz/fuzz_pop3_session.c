/* fuzz_pop3_session.c - the POP3 server (api/pop3*.c) fed what a client
 * sends: the AUTHORIZATION state (CAPA, STLS, USER/PASS, APOP and AUTH
 * PLAIN with its SASL response, all refused without users), long lines,
 * bad commands up to the session's end; and the TRANSACTION state on a
 * bounce mailbox of a few reports in a real spool (STAT, LIST, UIDL,
 * RETR and TOP produced in slices under output flow control, DELE, RSET,
 * NOOP, QUIT and its expunge through the spool writer).
 *
 * Input: a mode byte (bit 0: the session starts logged in, with the
 * snapshot a login takes; bits 1-7: how the bytes are cut into the chunks
 * that arrive one by one, 0 = all at once), then what the client sends.
 * The session runs on the loop over an AF_UNIX socketpair; its replies are
 * read and dropped. Messages it deletes are put back before the next input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "api/pop3.h"
#include "api/pop3_impl.h"
#include "api/pop3_proto.h"
#include "base/auth.h"
#include "base/list.h"
#include "fuzz.h"

static const char conf[] = "hostname = pop3.fuzz.test\n";

static const char msg1[] = "From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered\r\n\r\n"
                           "failed\r\n.dotted line\r\n..\r\n.\r\nend\r\n";
static const char *const mailbox[] = {
	msg1,
	"Subject: two\r\n\r\nline one\r\nline two\r\nline three\r\n",
	"Subject: no final line end\r\n\r\nlast",
};
#define NMSG (sizeof(mailbox) / sizeof(mailbox[0]))

static struct auth_limiter *limiter;
static struct mailbox_config mcfg = {
	.hostname = "pop3.fuzz.test", .allowed = "", .idle_timeout_ms = 60000, .max_clients = 10
};

struct run {
	struct pop3_session *s;
	bool gone; /* the session was freed */
};

static void session_gone(void *arg)
{
	((struct run *)arg)->gone = true;
}

/* settled - nothing the session waits for is on the loop: no login, no
 * snapshot, no spool request, no reply being produced. */
static bool settled(void *arg)
{
	struct run *r = arg;
	if (r->gone)
		return true;
	const struct pop3_session *s = r->s;
	return s->state != P3_AUTH_WAIT && s->state != P3_LOADING && s->state != P3_UPDATE &&
	       !s->spool_inflight && !s->auth_inflight && s->xfer == P3_XFER_NONE;
}

static bool gone(void *arg)
{
	return ((struct run *)arg)->gone;
}

static bool snapshot_one(const struct spool_mbox_entry *e, void *arg)
{
	struct pop3_session *s = arg;
	if (s->nmsgs == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 8;
		s->msgs = xrealloc(s->msgs, s->cap * sizeof(*s->msgs));
	}
	s->msgs[s->nmsgs++] = (struct pop3_msg){ .uid = e->uid,
		                                 .size = pop3_msg_size(e->data, e->len),
		                                 .seen = e->flags & MBOX_SEEN };
	return true;
}

/* login - what a successful USER/PASS leaves: the user, the snapshot of
 * the maildrop, the TRANSACTION state. (The maildrop lock is not taken:
 * one session at a time runs here.) */
static void login(struct fuzz_env *e, struct pop3_session *s)
{
	uint32_t uidnext;
	snprintf(s->user, sizeof(s->user), "fuzz");
	s->mech = "USER";
	if (!spool_reader_begin(e->reader))
		abort();
	spool_mbox_ids(e->reader, &s->uidvalidity, &uidnext);
	spool_mbox_foreach(e->reader, 1, snapshot_one, s);
	spool_reader_end(e->reader);
	pop3_enter_transaction(s);
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
	struct pop3_server *srv = pop3_server_new(&p);
	int fds[2];
	fuzz_socketpair(fds);
	e->drain_fd = fds[1];
	pop3_session_start(srv, fds[0], false);
	r.s = rp_list_entry(srv->sessions.next, struct pop3_session, link);
	if (logged_in)
		login(e, r.s);

	fuzz_feed(e, &r.s->conn, data, size, cut, 8, rnd, &r.gone, settled, gone, &r);
	pop3_server_free(srv);
	e->drain_fd = -1;
	close(fds[1]);
	fuzz_env_recycle(e);
	return 0;
}
