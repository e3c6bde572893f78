/* fuzz_smtp_server.c - the SMTP server (relay/smtp_server*.c) fed what a
 * client sends: commands with their MAIL/RCPT parameters (SIZE, BODY, RET,
 * ENVID, NOTIFY, ORCPT, SMTPUTF8, AUTH=), pipelining, DATA and BDAT
 * content up to the commit into a real spool; as the submission listener
 * (a client inside [submission] networks) or as the bounce MX (VERP
 * recipients, postmaster@, reports parsed into the bounce mailbox).
 *
 * Input: a mode byte (bit 0: the bounce MX; bits 1-7: how the bytes are
 * cut into the chunks that arrive one by one, 0 = all at once), then
 * what the client sends. The session runs on the loop over an AF_UNIX
 * socketpair; its replies are read and dropped.
 */
#include <stdlib.h>
#include <unistd.h>

#include "base/auth.h"
#include "base/list.h"
#include "fuzz.h"
#include "relay/smtp_server_impl.h"

static const char conf[] = "hostname = mx.fuzz.test\n"
                           "[submission]\n"
                           "max_message_size = 65536\n"
                           "max_recipients = 20\n"
                           "max_errors = 50\n"
                           "[queue]\n"
                           "bounce_domain = bounces.fuzz.test\n";

static struct auth_limiter *limiter, *refused, *flood;

struct run {
	struct srv_session *s;
	bool gone; /* the session was freed */
};

static void session_gone(void *arg)
{
	((struct run *)arg)->gone = true;
}

static void route(void *ctx, const struct sched_add *adds, unsigned n)
{
	(void)ctx;
	(void)adds;
	(void)n;
}

/* settled - nothing waits for the spool: the input read so far is done. */
static bool settled(void *arg)
{
	struct run *r = arg;
	return r->gone || !r->s->commit_inflight;
}

static bool gone(void *arg)
{
	return ((struct run *)arg)->gone;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_env_get(conf);
	limiter = auth_limiter_new(5);
	refused = auth_limiter_new(INBOUND_MAX_REFUSED);
	flood = auth_limiter_new(INBOUND_MAX_REPORTS);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_env *e = fuzz_env_get(conf);
	if (!size)
		return 0;
	bool inbound = data[0] & 1;
	uint32_t cut = data[0] >> 1, rnd = data[0] * 2654435761u;
	data++;
	size--;

	struct run r = { 0 };
	struct smtpd_params p = { .loop = e->loop,
		                  .spool = e->spool,
		                  .gen = &e->gen,
		                  .limiter = limiter,
		                  .inbound = inbound,
		                  .reader = e->reader,
		                  .refused = refused,
		                  .flood = flood,
		                  .route = route,
		                  .session_gone = session_gone,
		                  .arg = &r };
	struct smtpd *srv = smtpd_new(&p);
	int fds[2];
	fuzz_socketpair(fds);
	e->drain_fd = fds[1];
	smtpd_session_start(srv, fds[0], false);
	r.s = rp_list_entry(srv->sessions.next, struct srv_session, link);
	r.s->relay_ok = !inbound; /* a client inside [submission] networks */

	fuzz_feed(e, &r.s->conn, data, size, cut, 4, rnd, &r.gone, settled, gone, &r);
	smtpd_free(srv);
	e->drain_fd = -1;
	close(fds[1]);
	fuzz_env_recycle(e);
	return 0;
}
