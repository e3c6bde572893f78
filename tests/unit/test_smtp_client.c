/* test_smtp_client.c - the outbound SMTP engine (relay/smtp_client.c) against a
 * scripted SMTP server on loopback: every byte it sends and in what order, what it reports
 * per recipient, and the order of its callbacks (ready, outcome, failed, closing, done).
 * STARTTLS: after a scripted 220 to STARTTLS the server speaks real TLS (OpenSSL's blocking
 * SSL on the accepted socket) with certificates the openssl command makes for each test.
 * A session bound to a source address: the server sees it, and the EHLO name given.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/loop.h"
#include "base/util.h"
#include "queue/spool.h"
#include "relay/smtp_client.h"
#include "support.h"

#define WATCHDOG_MS    5000 /* every conversation ends well before this */
#define SERVER_WAIT_MS 5000 /* the server gives up on a silent client */
#define LOCKSTEP_MS    50   /* how long a lockstep server listens for an early command */
#define MAX_JOBS       4
#define MAX_RCPT       4
#define MAX_SCRIPT     16
#define MAX_READY      8

/* ---- the scripted server ------------------------------------------------ */

/* A script entry that closes the connection instead of answering. */
static const char HANGUP[] = "(hang up)";
/* Script entries that answer STARTTLS and then speak TLS (the server's ssl_ctx): the second
 * sends a reply after its 220 in the same write, which the client must never read. */
static const char TLS_GO[] = "220 2.0.0 Ready to start TLS\r\n";
static const char TLS_GO_INJECT[] = "220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected\r\n";
/* What the transcript shows where the conversation turned to TLS. */
#define TLS_MARK "<tls>"

struct server {
	int lfd;                   /* listening socket on 127.0.0.1 */
	struct sockaddr_in addr;   /* where it listens */
	pthread_t thr;             /* the server thread */
	bool running;              /* thr was started */
	const char *const *script; /* [0] the greeting, [i] the answer to command i; NULL ends */
	bool lockstep;             /* fail when a command comes before the previous reply */
	bool split;                /* send each reply in two writes, 20 ms apart */
	pthread_mutex_t mu;        /* guards got and err */
	struct buf got;            /* every byte received, in order (plaintext) */
	char err[256];             /* the first protocol violation, "" when none */
	SSL_CTX *ssl_ctx;          /* for TLS_GO (the test's) */
	SSL *ssl;                  /* after TLS_GO: the conversation goes through it */
	bool tls_broke;            /* the TLS handshake failed (the client refused it) */
	bool tls_resumed;          /* the handshake resumed a session */
	struct sockaddr_in peer;   /* the client's address (accept) */
};

RP_PRINTF(2, 3) static void server_fail(struct server *s, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&s->mu);
	if (!s->err[0]) {
		va_start(ap, fmt);
		vsnprintf(s->err, sizeof(s->err), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&s->mu);
}

/* server_recv - read what is there into in, and record it. */
static ssize_t server_recv(struct server *s, int fd, struct buf *in)
{
	char tmp[4096];
	ssize_t n = s->ssl ? SSL_read(s->ssl, tmp, sizeof(tmp)) : recv(fd, tmp, sizeof(tmp), 0);
	if (n > 0) {
		buf_append(in, tmp, (size_t)n);
		pthread_mutex_lock(&s->mu);
		buf_append(&s->got, tmp, (size_t)n);
		pthread_mutex_unlock(&s->mu);
	}
	return n;
}

/* unit_len - bytes of the next complete command at the front of in (a line; a BDAT line with
 * its chunk; DATA content through its final dot when content is true), or 0 for more. */
static size_t unit_len(const struct buf *in, bool content)
{
	const char *p = buf_head(in);
	size_t n = buf_used(in);
	if (!n)
		return 0;
	if (content) {
		if (n >= 3 && !memcmp(p, ".\r\n", 3))
			return 3;
		const char *e = memmem(p, n, "\r\n.\r\n", 5);
		return e ? (size_t)(e - p) + 5 : 0;
	}
	const char *e = memmem(p, n, "\r\n", 2);
	if (!e)
		return 0;
	size_t line = (size_t)(e - p) + 2;
	if (line > 5 && !strncasecmp(p, "BDAT ", 5)) {
		size_t chunk = strtoul(p + 5, NULL, 10); /* stops at the " LAST" or the CRLF */
		return n >= line + chunk ? line + chunk : 0;
	}
	return line;
}

/* server_early - in lockstep: what came after the current command (n bytes) before its reply,
 * waiting LOCKSTEP_MS for it; NULL when nothing did. A client without PIPELINING must wait for
 * each reply, and for the reply to QUIT before it closes. */
static const char *server_early(int fd, const struct buf *in, size_t n)
{
	if (buf_used(in) > n)
		return "came with more behind it";
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, LOCKSTEP_MS) <= 0)
		return NULL;
	char ch;
	if (recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
		return "was followed by a close before its reply";
	return "was followed by more before its reply";
}

/* server_write - n bytes in clear text or through TLS. */
static void server_write(struct server *s, int fd, const char *p, size_t n)
{
	ssize_t w = s->ssl ? SSL_write(s->ssl, p, (int)n) : send(fd, p, n, MSG_NOSIGNAL);
	if (w != (ssize_t)n)
		server_fail(s, "send: %s", strerror(errno));
}

static void server_send(struct server *s, int fd, const char *reply)
{
	size_t n = strlen(reply), first = s->split ? n / 2 : n;
	server_write(s, fd, reply, first);
	if (first < n) {
		usleep(20000);
		server_write(s, fd, reply + first, n - first);
	}
}

/* server_tls - TLS on fd as the server, after the 220 to STARTTLS; false when the client
 * broke off the handshake (a certificate it refused). */
static bool server_tls(struct server *s, int fd)
{
	cr_assert_not_null(s->ssl_ctx, "a TLS script needs the server's ssl_ctx");
	s->ssl = SSL_new(s->ssl_ctx);
	cr_assert_not_null(s->ssl);
	SSL_set_fd(s->ssl, fd);
	if (SSL_accept(s->ssl) != 1) {
		ERR_clear_error();
		s->tls_broke = true;
		return false;
	}
	s->tls_resumed = SSL_session_reused(s->ssl);
	pthread_mutex_lock(&s->mu);
	buf_puts(&s->got, TLS_MARK);
	pthread_mutex_unlock(&s->mu);
	return true;
}

/* server_main - one connection: greet, answer each command from the script, then keep
 * recording until the client closes. */
static void *server_main(void *arg)
{
	struct server *s = arg;
	struct pollfd pfd = { .fd = s->lfd, .events = POLLIN };
	if (poll(&pfd, 1, SERVER_WAIT_MS) != 1) {
		server_fail(s, "no connection came");
		return NULL;
	}
	socklen_t plen = sizeof(s->peer);
	int fd = accept4(s->lfd, (struct sockaddr *)&s->peer, &plen, SOCK_CLOEXEC);
	if (fd < 0) {
		server_fail(s, "accept: %s", strerror(errno));
		return NULL;
	}
	struct timeval tv = { .tv_sec = SERVER_WAIT_MS / 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct buf in = { 0 };
	bool content = false; /* the next unit is DATA content (a 354 went out) */
	server_send(s, fd, s->script[0]);
	for (unsigned i = 1; s->script[i]; i++) {
		size_t n;
		while (!(n = unit_len(&in, content)))
			if (server_recv(s, fd, &in) <= 0) {
				server_fail(s, "the client went away before command %u", i);
				goto out;
			}
		const char *early = s->lockstep ? server_early(fd, &in, n) : NULL;
		if (early) {
			const char *p = buf_head(&in), *e = memchr(p, '\r', n);
			server_fail(s, "\"%.*s\" (command %u) %s", (int)(e ? e - p : 0), p, i,
			            early);
		}
		buf_consume(&in, n);
		if (s->script[i] == HANGUP)
			goto out;
		server_send(s, fd, s->script[i]);
		content = !strncmp(s->script[i], "354", 3);
		if (s->script[i] == TLS_GO || s->script[i] == TLS_GO_INJECT) {
			if (buf_used(&in))
				server_fail(s, "the client sent more after STARTTLS: \"%.*s\"",
				            (int)buf_used(&in), buf_head(&in));
			if (!server_tls(s, fd))
				goto out;
		}
	}
	/* The script is over: record whatever else comes until the client closes. */
	while (server_recv(s, fd, &in) > 0)
		;
out:
	if (s->ssl) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	close(fd);
	buf_free(&in);
	return NULL;
}

static void server_start(struct server *s, const char *const *script, bool lockstep, bool split)
{
	s->script = script;
	s->lockstep = lockstep;
	s->split = split;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s->lfd, 0);
	s->addr.sin_family = AF_INET;
	s->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(s->lfd, (struct sockaddr *)&s->addr, sizeof(s->addr)), 0);
	socklen_t len = sizeof(s->addr);
	cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&s->addr, &len), 0);
	cr_assert_eq(listen(s->lfd, 4), 0);
	cr_assert_eq(pthread_create(&s->thr, NULL, server_main, s), 0);
	s->running = true;
}

/* dead_port - a loopback address nobody listens on: take a port and give it back. */
static void dead_port(struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)sa, sizeof(*sa)), 0);
	socklen_t len = sizeof(*sa);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)sa, &len), 0);
	close(fd);
}

/* ---- the owner: the test's side of the callbacks ------------------------- */

struct tc {
	struct loop *l;
	struct server srv;
	struct smtp_client *c;
	struct loop_timer watchdog, linger, later;
	struct loop_defer probe; /* queued by an outcome; runs at the end of its batch */
	bool probe_pending;      /* an outcome came in this batch */
	/* What the test hands out, in order. */
	struct sched_job *jobs[MAX_JOBS];
	unsigned njobs, next;
	bool by_give;         /* ready never returns a job: a timer gives the next one */
	bool quit_in_ready;   /* ready calls smtp_client_quit (then hands out a job, if any) */
	bool quit_in_outcome; /* outcome calls smtp_client_quit */
	bool stay_idle;       /* nobody quits an idle session: its idle time does */
	/* What the engine did. */
	char events[32]; /* F ready(first) r ready o outcome f failed c closing d done */
	unsigned nevents;
	bool at_once[MAX_READY]; /* ready call k came in the batch of an outcome */
	unsigned nready;
	unsigned nout;
	struct attempt_report reps[MAX_JOBS][MAX_RCPT];
	uint64_t duration_ms[MAX_JOBS];
	struct attempt_report failed;
	uint64_t idle_ms_at, closing_ms_at; /* when ready parked it, when closing came */
	const char *got;                    /* the server's transcript, after tc_run */
	/* TLS: what the session is opened with, and what it said. */
	struct tls_ctx *tls;         /* client context (the test's) */
	enum smtp_tls_policy policy; /* opportunistic unless set */
	const char *tls_name;        /* SNI and the name to verify */
	struct tls_session *resume;  /* offered to the session (taken over) */
	struct tls_session *ticket;  /* what the session left at closing */
	char tls_text[96];           /* smtp_client_tls at the first outcome (or ready) */
	bool tls_resumed;            /* smtp_client_tls_resumed then */
	bool tls_handshake_failed;   /* smtp_client_tls_handshake_failed at failed */
	/* Source address and EHLO name: what the session is opened with and says. */
	const struct sockaddr_in *source; /* NULL: the kernel's choice */
	const char *helo;                 /* NULL: "client.test" */
	char source_seen[48];             /* smtp_client_source at the first ready */
	char helo_seen[64];               /* smtp_client_helo then */
};

static void event(struct tc *t, char ch)
{
	cr_assert_lt(t->nevents, sizeof(t->events) - 1, "too many callbacks: %s", t->events);
	t->events[t->nevents++] = ch;
	t->events[t->nevents] = '\0';
}

static void on_probe(struct loop_defer *d)
{
	struct tc *t = RP_CONTAINER_OF(d, struct tc, probe);
	t->probe_pending = false;
}

static void on_later(struct loop_timer *tm)
{
	struct tc *t = RP_CONTAINER_OF(tm, struct tc, later);
	cr_assert(smtp_client_idle(t->c), "a session that got no job is parked idle");
	if (t->by_give && t->next < t->njobs)
		smtp_client_give(t->c, t->jobs[t->next++]);
	else
		smtp_client_quit(t->c);
}

static struct sched_job *on_ready(struct smtp_client *c, void *arg, bool first)
{
	struct tc *t = arg;
	cr_assert_eq(c, t->c);
	event(t, first ? 'F' : 'r');
	if (first) {
		const char *src = smtp_client_source(c);
		snprintf(t->source_seen, sizeof(t->source_seen), "%s", src ? src : "(none)");
		snprintf(t->helo_seen, sizeof(t->helo_seen), "%s", smtp_client_helo(c));
	}
	if (t->nready < MAX_READY)
		t->at_once[t->nready] = t->probe_pending;
	t->nready++;
	cr_assert(!smtp_client_idle(c), "not idle while asked for work");
	if (t->quit_in_ready)
		smtp_client_quit(c);
	if (!t->by_give && t->next < t->njobs)
		return t->jobs[t->next++];
	t->idle_ms_at = rp_mono_ms();
	if (!t->stay_idle && !t->quit_in_ready)
		loop_timer_arm(t->l, &t->later, 30, on_later);
	return NULL;
}

static void on_outcome(struct smtp_client *c, void *arg, struct sched_job *job,
                       const struct attempt_report *reps, uint64_t duration_ms)
{
	struct tc *t = arg;
	cr_assert_eq(c, t->c);
	event(t, 'o');
	cr_assert_lt(t->nout, t->next, "an outcome for a job that was handed out");
	cr_assert_eq(job, t->jobs[t->nout], "jobs come back in order, each once");
	cr_assert_leq(job->nrcpt, MAX_RCPT);
	memcpy(t->reps[t->nout], reps, job->nrcpt * sizeof(*reps));
	t->duration_ms[t->nout] = duration_ms;
	if (!t->nout) {
		snprintf(t->tls_text, sizeof(t->tls_text), "%s", smtp_client_tls(c));
		t->tls_resumed = smtp_client_tls_resumed(c);
	}
	t->nout++;
	t->probe_pending = true;
	loop_defer(t->l, &t->probe, on_probe);
	if (t->quit_in_outcome)
		smtp_client_quit(c);
}

static void on_failed(struct smtp_client *c, void *arg, const struct attempt_report *rep)
{
	struct tc *t = arg;
	cr_assert_eq(c, t->c);
	event(t, 'f');
	t->failed = *rep;
	t->tls_handshake_failed = smtp_client_tls_handshake_failed(c);
}

static void on_closing(struct smtp_client *c, void *arg)
{
	struct tc *t = arg;
	cr_assert_eq(c, t->c);
	event(t, 'c');
	t->closing_ms_at = rp_mono_ms();
	t->ticket = smtp_client_tls_session_take(c);
}

static void on_linger(struct loop_timer *tm)
{
	struct tc *t = RP_CONTAINER_OF(tm, struct tc, linger);
	loop_timer_disarm(t->l, &t->watchdog);
	loop_stop(t->l);
}

static void on_done(struct smtp_client *c, void *arg)
{
	struct tc *t = arg;
	cr_assert_eq(c, t->c);
	event(t, 'd');
	cr_assert(!loop_timer_armed(&t->later), "done while the test still means to use it");
	/* Keep running a little: a late callback or a second done would show. */
	loop_timer_arm(t->l, &t->linger, 100, on_linger);
}

static const struct smtp_client_ops test_ops = {
	.ready = on_ready,
	.outcome = on_outcome,
	.failed = on_failed,
	.closing = on_closing,
	.done = on_done,
};

static void on_watchdog(struct loop_timer *tm)
{
	struct tc *t = RP_CONTAINER_OF(tm, struct tc, watchdog);
	pthread_mutex_lock(&t->srv.mu);
	char *got = xstrdup(buf_cstr(&t->srv.got));
	pthread_mutex_unlock(&t->srv.mu);
	cr_assert_fail("the session did not end in time; callbacks \"%s\"; server error \"%s\"; "
	               "the server got:\n%s",
	               t->events, t->srv.err, got);
}

/* tc_init_ctx - a loop and, for a non-NULL script, a server playing it (TLS with ssl_ctx). */
static void tc_init_ctx(struct tc *t, const char *const *script, bool lockstep, bool split,
                        SSL_CTX *ssl_ctx)
{
	memset(t, 0, sizeof(*t));
	t->srv.ssl_ctx = ssl_ctx;
	struct loop_config cfg = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 8, .buf_size = 4096
	};
	t->l = loop_new(&cfg);
	cr_assert_not_null(t->l, "loop_new: %s", strerror(errno));
	pthread_mutex_init(&t->srv.mu, NULL);
	t->srv.lfd = -1;
	if (script)
		server_start(&t->srv, script, lockstep, split);
	loop_timer_arm(t->l, &t->watchdog, WATCHDOG_MS, on_watchdog);
}

/* tc_init - a loop and, for a non-NULL script, a server playing it in clear text. */
static void tc_init(struct tc *t, const char *const *script, bool lockstep, bool split)
{
	tc_init_ctx(t, script, lockstep, split, NULL);
}

/* tc_open - a session to to (the server's address when NULL). */
static void tc_open(struct tc *t, const struct sockaddr_in *to, unsigned max_transactions,
                    uint64_t idle_ms)
{
	struct smtp_client_params p = {
		.loop = t->l,
		.addr = (const struct sockaddr *)(to ? to : &t->srv.addr),
		.addrlen = sizeof(struct sockaddr_in),
		.source = (const struct sockaddr *)t->source,
		.sourcelen = t->source ? sizeof(*t->source) : 0,
		.helo = t->helo ? t->helo : "client.test",
		.name = "b.test",
		.connect_timeout_ms = 2000,
		.idle_ms = idle_ms,
		.max_transactions = max_transactions,
		.tls_ctx = t->tls,
		.tls_policy = t->policy,
		.tls_name = t->tls_name,
		.tls_resume = t->resume,
		.ops = &test_ops,
		.arg = t,
	};
	t->resume = NULL;
	t->c = smtp_client_open(&p);
	cr_assert_not_null(t->c, "smtp_client_open: %s", strerror(errno));
}

/* tc_run - run the session to its end, then collect the server's transcript. */
static void tc_run(struct tc *t)
{
	loop_run(t->l);
	cr_assert_eq(loop_registered(t->l), 0, "the session released its connection");
	loop_free(t->l);
	t->l = NULL;
	if (t->srv.running) {
		pthread_join(t->srv.thr, NULL);
		close(t->srv.lfd);
		cr_assert_str_empty(t->srv.err, "server: %s", t->srv.err);
	}
	t->got = buf_cstr(&t->srv.got);
}

static void tc_free(struct tc *t)
{
	for (unsigned i = 0; i < t->njobs; i++) {
		buf_free(&t->jobs[i]->body);
		free(t->jobs[i]->rcpt);
		free(t->jobs[i]);
	}
	buf_free(&t->srv.got);
	pthread_mutex_destroy(&t->srv.mu);
	tls_session_free(t->ticket);
}

/* tc_job - a job for the test to hand out: from@a.test to rcpts, with body. */
static void tc_job(struct tc *t, const char *const *rcpts, unsigned n, const char *body,
                   size_t body_len)
{
	cr_assert_lt(t->njobs, MAX_JOBS);
	cr_assert_leq(n, MAX_RCPT);
	struct sched_job *j = xcalloc(1, sizeof(*j));
	j->msgid = 100 + t->njobs;
	j->sender = "from@a.test";
	j->sender_len = strlen(j->sender);
	j->nrcpt = j->cap = n;
	j->rcpt = xcalloc(n, sizeof(*j->rcpt));
	for (unsigned i = 0; i < n; i++) {
		j->rcpt[i].addr = rcpts[i];
		j->rcpt[i].addr_len = strlen(rcpts[i]);
		j->rcpt[i].notify = NOTIFY_FAILURE;
	}
	buf_append(&j->body, body, body_len);
	t->jobs[t->njobs++] = j;
}

/* ---- expectations ------------------------------------------------------- */

struct want_rep {
	enum attempt_kind kind;
	enum attempt_stage stage;
	int code;
	bool after_accept;
};

static void check_rep(const struct attempt_report *got, const struct want_rep *w, unsigned job,
                      unsigned i)
{
	cr_assert_eq(got->kind, w->kind, "job %u rcpt %u: kind %s, want %s (\"%s\")", job, i,
	             outcome_kind_name(got->kind), outcome_kind_name(w->kind), got->text);
	cr_assert_eq(got->stage, w->stage, "job %u rcpt %u: stage %d, want %d (\"%s\")", job, i,
	             got->stage, w->stage, got->text);
	cr_assert_eq(got->code, w->code, "job %u rcpt %u: code %d, want %d (\"%s\")", job, i,
	             got->code, w->code, got->text);
	cr_assert_eq(got->after_accept, w->after_accept, "job %u rcpt %u: after_accept", job, i);
}

static void check_got(const struct tc *t, const char *want)
{
	cr_assert(!strcmp(t->got, want), "the server got:\n%s\n---- want:\n%s\n----", t->got, want);
}

static void check_events(const struct tc *t, const char *want)
{
	cr_assert_str_eq(t->events, want, "callbacks \"%s\", want \"%s\"", t->events, want);
}

/* The conversation's pieces. The body has a lone "." line and lines that start with dots:
 * BDAT carries it as it is, DATA dot-stuffed. */
#define GREETING        "220 mx.test ESMTP\r\n"
#define EHLO_PIPE_CHUNK "250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
#define EHLO_PIPE       "250-mx.test\r\n250 PIPELINING\r\n"
#define OK_MAIL         "250 2.1.0 ok\r\n"
#define OK_RCPT         "250 2.1.5 ok\r\n"
#define NO_RCPT         "550 5.1.1 no such user\r\n"
#define GO_AHEAD        "354 go ahead\r\n"
#define QUEUED          "250 2.0.0 queued\r\n"
#define BYE             "221 2.0.0 bye\r\n"

#define EHLO      "EHLO client.test\r\n"
#define MAIL      "MAIL FROM:<from@a.test>\r\n"
#define RCPT1     "RCPT TO:<one@b.test>\r\n"
#define RCPT2     RCPT1 "RCPT TO:<two@b.test>\r\n"
#define QUIT      "QUIT\r\n"
#define BODY      "Subject: test\r\n\r\nline one\r\n.\r\n.leading dot\r\n..two dots\r\nend\r\n"
#define BODY_BDAT "BDAT 61 LAST\r\n" BODY
#define BODY_DATA                                                                                  \
	"DATA\r\n"                                                                                 \
	"Subject: test\r\n\r\nline one\r\n..\r\n..leading dot\r\n...two dots\r\nend\r\n.\r\n"
_Static_assert(sizeof(BODY) - 1 == 61, "BODY_BDAT counts the body's bytes");

static const char *const two_rcpts[] = { "one@b.test", "two@b.test" };

/* ---- one transaction, table-driven --------------------------------------- */

struct txn_case {
	const char *script[MAX_SCRIPT];
	bool lockstep, split;
	const char *want;       /* every byte the server should get */
	const char *events;     /* the callbacks, in order */
	struct want_rep rep[2]; /* what became of one@b.test and two@b.test */
};

enum {
	TXN_PIPE_CHUNK,
	TXN_PIPE_DATA,
	TXN_LOCK_DATA,
	TXN_LOCK_CHUNK,
	TXN_HELO,
	TXN_NONE_ACCEPTED,
	TXN_DROP_PIPE,
	TXN_DROP_LOCK,
	TXN_DROP_CONTENT,
};

static const struct txn_case txn_cases[] = {
	/* 1. PIPELINING and CHUNKING: one write, BDAT LAST with the exact bytes. */
	[TXN_PIPE_CHUNK] = {
		.script = {GREETING, EHLO_PIPE_CHUNK, OK_MAIL, OK_RCPT, NO_RCPT, QUEUED, BYE},
		.want = EHLO MAIL RCPT2 BODY_BDAT QUIT,
		.events = "Forcd",
		.rep = {{ATTEMPT_REPLY, STAGE_CONTENT, 250, false},
			{ATTEMPT_REPLY, STAGE_RCPT, 550, true}},
	},
	/* 2. PIPELINING without CHUNKING: DATA, 354, dot-stuffed content. */
	[TXN_PIPE_DATA] = {
		.script = {GREETING, EHLO_PIPE, OK_MAIL, OK_RCPT, NO_RCPT, GO_AHEAD, QUEUED, BYE},
		.want = EHLO MAIL RCPT2 BODY_DATA QUIT,
		.events = "Forcd",
		.rep = {{ATTEMPT_REPLY, STAGE_CONTENT, 250, false},
			{ATTEMPT_REPLY, STAGE_RCPT, 550, true}},
	},
	/* 3. No PIPELINING: one command at a time, DATA ... */
	[TXN_LOCK_DATA] = {
		.script = {GREETING, "250-mx.test\r\n250 8BITMIME\r\n", OK_MAIL, OK_RCPT, NO_RCPT,
			   GO_AHEAD, QUEUED, BYE},
		.lockstep = true,
		.want = EHLO MAIL RCPT2 BODY_DATA QUIT,
		.events = "Forcd",
		.rep = {{ATTEMPT_REPLY, STAGE_CONTENT, 250, false},
			{ATTEMPT_REPLY, STAGE_RCPT, 550, true}},
	},
	/* ... or BDAT, with every reply arriving in two pieces. */
	[TXN_LOCK_CHUNK] = {
		.script = {GREETING, "250-mx.test\r\n250 CHUNKING\r\n", OK_MAIL, OK_RCPT, NO_RCPT,
			   QUEUED, BYE},
		.lockstep = true,
		.split = true,
		.want = EHLO MAIL RCPT2 BODY_BDAT QUIT,
		.events = "Forcd",
		.rep = {{ATTEMPT_REPLY, STAGE_CONTENT, 250, false},
			{ATTEMPT_REPLY, STAGE_RCPT, 550, true}},
	},
	/* 7. EHLO refused, HELO accepted: no extensions, whatever HELO's reply says. */
	[TXN_HELO] = {
		.script = {GREETING, "502 5.5.1 EHLO not supported\r\n",
			   "250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 10\r\n",
			   OK_MAIL, OK_RCPT, NO_RCPT, GO_AHEAD, QUEUED, BYE},
		.lockstep = true,
		.want = EHLO "HELO client.test\r\n" MAIL RCPT2 BODY_DATA QUIT,
		.events = "Forcd",
		.rep = {{ATTEMPT_REPLY, STAGE_CONTENT, 250, false},
			{ATTEMPT_REPLY, STAGE_RCPT, 550, true}},
	},
	/* Every RCPT refused but the server says 354 anyway: the content ends empty. */
	[TXN_NONE_ACCEPTED] = {
		.script = {GREETING, EHLO_PIPE, OK_MAIL, NO_RCPT, "450 4.2.1 later\r\n", GO_AHEAD,
			   "554 5.5.1 no valid recipients\r\n", BYE},
		.want = EHLO MAIL RCPT2 "DATA\r\n.\r\n" QUIT,
		.events = "Forcd",
		.rep = {{ATTEMPT_REPLY, STAGE_RCPT, 550, false},
			{ATTEMPT_REPLY, STAGE_RCPT, 450, false}},
	},
	/* 8. The server drops the connection after the RCPTs: pipelined BDAT ... */
	[TXN_DROP_PIPE] = {
		.script = {GREETING, EHLO_PIPE_CHUNK, OK_MAIL, OK_RCPT, OK_RCPT, HANGUP},
		.want = EHLO MAIL RCPT2 BODY_BDAT,
		.events = "Focd",
		.rep = {{ATTEMPT_LOST, STAGE_CONTENT, 0, false},
			{ATTEMPT_LOST, STAGE_CONTENT, 0, false}},
	},
	/* ... and DATA one command at a time. */
	[TXN_DROP_LOCK] = {
		.script = {GREETING, "250 mx.test\r\n", OK_MAIL, OK_RCPT, OK_RCPT, HANGUP},
		.lockstep = true,
		.want = EHLO MAIL RCPT2 "DATA\r\n",
		.events = "Focd",
		.rep = {{ATTEMPT_LOST, STAGE_DATA, 0, false}, {ATTEMPT_LOST, STAGE_DATA, 0, false}},
	},
	/* ... and after the DATA content, before its reply: the message may be delivered. */
	[TXN_DROP_CONTENT] = {
		.script = {GREETING, EHLO_PIPE, OK_MAIL, OK_RCPT, OK_RCPT, GO_AHEAD, HANGUP},
		.want = EHLO MAIL RCPT2 BODY_DATA,
		.events = "Focd",
		.rep = {{ATTEMPT_LOST, STAGE_CONTENT, 0, false},
			{ATTEMPT_LOST, STAGE_CONTENT, 0, false}},
	},
};

/* run_txn - one job to one@b.test and two@b.test, then QUIT when ready gets nothing. */
static void run_txn(unsigned k)
{
	const struct txn_case *tx = &txn_cases[k];
	struct tc t;
	tc_init(&t, tx->script, tx->lockstep, tx->split);
	tc_job(&t, two_rcpts, 2, BODY, sizeof(BODY) - 1);
	tc_open(&t, NULL, 0, 0);
	char remote[32];
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", ntohs(t.srv.addr.sin_port));
	cr_assert_str_eq(smtp_client_remote(t.c), remote);
	tc_run(&t);
	check_got(&t, tx->want);
	check_events(&t, tx->events);
	cr_assert_eq(t.nout, 1);
	for (unsigned i = 0; i < 2; i++)
		check_rep(&t.reps[0][i], &tx->rep[i], 0, i);
	cr_assert_lt(t.duration_ms[0], WATCHDOG_MS);
	tc_free(&t);
}

Test(smtp_client, pipelining_chunking, .timeout = 20)
{
	run_txn(TXN_PIPE_CHUNK);
}

Test(smtp_client, pipelining_data, .timeout = 20)
{
	run_txn(TXN_PIPE_DATA);
}

Test(smtp_client, lockstep_data, .timeout = 20)
{
	run_txn(TXN_LOCK_DATA);
}

Test(smtp_client, lockstep_chunking_split_replies, .timeout = 20)
{
	run_txn(TXN_LOCK_CHUNK);
}

Test(smtp_client, ehlo_refused_helo, .timeout = 20)
{
	run_txn(TXN_HELO);
}

Test(smtp_client, no_recipient_accepted, .timeout = 20)
{
	run_txn(TXN_NONE_ACCEPTED);
}

Test(smtp_client, dropped_after_rcpt_pipelined, .timeout = 20)
{
	run_txn(TXN_DROP_PIPE);
}

Test(smtp_client, dropped_after_rcpt_lockstep, .timeout = 20)
{
	run_txn(TXN_DROP_LOCK);
}

Test(smtp_client, dropped_after_content, .timeout = 20)
{
	run_txn(TXN_DROP_CONTENT);
}

/* The replies' text reaches the reports: enhanced codes and words. */
Test(smtp_client, reply_text_in_reports, .timeout = 20)
{
	struct tc t;
	tc_init(&t, txn_cases[TXN_PIPE_CHUNK].script, false, false);
	tc_job(&t, two_rcpts, 2, BODY, sizeof(BODY) - 1);
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	cr_assert_eq(t.nout, 1);
	cr_assert_str_eq(t.reps[0][0].enh, "2.0.0");
	cr_assert(strstr(t.reps[0][0].text, "queued"), "\"%s\"", t.reps[0][0].text);
	cr_assert_str_eq(t.reps[0][1].enh, "5.1.1");
	cr_assert(strstr(t.reps[0][1].text, "no such user"), "\"%s\"", t.reps[0][1].text);
	tc_free(&t);
}

/* DSN and 8BITMIME parameters go to a server that offers them (a server without them got none
 * in the cases above, though every recipient there has NOTIFY=FAILURE). */
Test(smtp_client, envelope_parameters, .timeout = 20)
{
	static const char *const script[] = {
		GREETING,
		"250-mx.test\r\n250-PIPELINING\r\n250-DSN\r\n250-8BITMIME\r\n250 SIZE 100000\r\n",
		OK_MAIL,
		OK_RCPT,
		OK_RCPT,
		GO_AHEAD,
		QUEUED,
		BYE,
		NULL,
	};
	struct tc t;
	tc_init(&t, script, false, false);
	tc_job(&t, two_rcpts, 2, BODY, sizeof(BODY) - 1);
	struct sched_job *j = t.jobs[0];
	j->msg_flags = MSG_F_8BIT | MSG_F_RET_HDRS;
	j->envid = "env+id=1";
	j->envid_len = strlen(j->envid);
	j->rcpt[0].notify = NOTIFY_SUCCESS | NOTIFY_FAILURE;
	j->rcpt[0].orcpt = "rfc822;one+x@b.test";
	j->rcpt[0].orcpt_len = strlen(j->rcpt[0].orcpt);
	j->rcpt[1].notify = NOTIFY_NEVER;
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	check_got(&t, EHLO
	          "MAIL FROM:<from@a.test> SIZE=61 BODY=8BITMIME RET=HDRS ENVID=env+2Bid+3D1\r\n"
	          "RCPT TO:<one@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;one+2Bx@b.test\r\n"
	          "RCPT TO:<two@b.test> NOTIFY=NEVER\r\n" BODY_DATA QUIT);
	check_events(&t, "Forcd");
	struct want_rep ok = { ATTEMPT_REPLY, STAGE_CONTENT, 250, false };
	check_rep(&t.reps[0][0], &ok, 0, 0);
	check_rep(&t.reps[0][1], &ok, 0, 1);
	tc_free(&t);
}

/* An SMTPUTF8 message: refused here for every recipient when the server lacks SMTPUTF8, sent
 * with the parameter when it has it. */
struct utf8_case {
	const char *script[MAX_SCRIPT];
	const char *want;
	struct want_rep rep[2];
};

static const struct utf8_case utf8_cases[] = {
	{
	    .script = { GREETING, EHLO_PIPE_CHUNK, BYE },
	    .want = EHLO QUIT,
	    .rep = { { ATTEMPT_NEEDS_UTF8, STAGE_MAIL, 0, false },
	             { ATTEMPT_NEEDS_UTF8, STAGE_MAIL, 0, false } },
	},
	{
	    .script = { GREETING,
	                "250-mx.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
	                OK_MAIL, OK_RCPT, NO_RCPT, QUEUED, BYE },
	    .want = EHLO "MAIL FROM:<from@a.test> SMTPUTF8\r\n" RCPT2 BODY_BDAT QUIT,
	    .rep = { { ATTEMPT_REPLY, STAGE_CONTENT, 250, false },
	             { ATTEMPT_REPLY, STAGE_RCPT, 550, true } },
	},
};

Test(smtp_client, smtputf8, .timeout = 20)
{
	for (unsigned k = 0; k < RP_ARRAY_LEN(utf8_cases); k++) {
		const struct utf8_case *uc = &utf8_cases[k];
		struct tc t;
		tc_init(&t, uc->script, false, false);
		tc_job(&t, two_rcpts, 2, BODY, sizeof(BODY) - 1);
		t.jobs[0]->msg_flags = MSG_F_SMTPUTF8;
		tc_open(&t, NULL, 0, 0);
		tc_run(&t);
		check_got(&t, uc->want);
		check_events(&t, "Forcd");
		for (unsigned i = 0; i < 2; i++)
			check_rep(&t.reps[0][i], &uc->rep[i], 0, i);
		tc_free(&t);
	}
}

/* ---- failures before any job --------------------------------------------- */

/* 4. A 554 greeting: failed, QUIT, and never a ready. */
Test(smtp_client, greeting_refused, .timeout = 20)
{
	static const char *const script[] = { "554 5.7.1 go away\r\n", BYE, NULL };
	struct tc t;
	tc_init(&t, script, true, false);
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	check_got(&t, QUIT);
	check_events(&t, "fcd");
	cr_assert_eq(t.failed.kind, ATTEMPT_REPLY);
	cr_assert_eq(t.failed.stage, STAGE_GREETING);
	cr_assert_eq(t.failed.code, 554);
	cr_assert_str_eq(t.failed.enh, "5.7.1");
	cr_assert(strstr(t.failed.text, "go away"), "\"%s\"", t.failed.text);
	tc_free(&t);
}

/* 5. Nobody listens. */
Test(smtp_client, connect_refused, .timeout = 20)
{
	struct tc t;
	tc_init(&t, NULL, false, false);
	struct sockaddr_in dead;
	dead_port(&dead);
	tc_open(&t, &dead, 0, 0);
	tc_run(&t);
	check_events(&t, "fcd");
	cr_assert_eq(t.failed.kind, ATTEMPT_CONNECT_FAIL, "kind %s (\"%s\")",
	             outcome_kind_name(t.failed.kind), t.failed.text);
	cr_assert_eq(t.failed.stage, STAGE_CONNECT);
	char remote[32];
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", ntohs(dead.sin_port));
	cr_assert(strstr(t.failed.text, remote), "\"%s\" names %s", t.failed.text, remote);
	tc_free(&t);
}

/* ---- more than one job ---------------------------------------------------- */

/* 6. SIZE 1000 and a 2000-byte job: refused here for every recipient without a MAIL, and the
 * next job is asked for in the same batch; it fits and goes with SIZE=. */
Test(smtp_client, size_refused_locally, .timeout = 20)
{
	static const char *const script[] = {
		GREETING, "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 CHUNKING\r\n",
		OK_MAIL,  OK_RCPT,
		QUEUED,   BYE,
		NULL
	};
	static const char *const one[] = { "one@b.test" };
	char big[2000];
	for (size_t i = 0; i < sizeof(big); i += 100) {
		memset(big + i, 'a' + (char)(i / 100), 98);
		memcpy(big + i + 98, "\r\n", 2);
	}
	struct tc t;
	tc_init(&t, script, false, false);
	tc_job(&t, two_rcpts, 2, big, sizeof(big));
	tc_job(&t, one, 1, BODY, sizeof(BODY) - 1);
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	check_got(&t, EHLO "MAIL FROM:<from@a.test> SIZE=61\r\n" RCPT1 BODY_BDAT QUIT);
	check_events(&t, "Fororcd");
	cr_assert_eq(t.nout, 2);
	for (unsigned i = 0; i < 2; i++) {
		cr_assert_eq(t.reps[0][i].kind, ATTEMPT_TOO_BIG, "rcpt %u: %s", i,
		             outcome_kind_name(t.reps[0][i].kind));
		cr_assert_eq(t.reps[0][i].code, 0);
	}
	cr_assert(t.at_once[1], "the next job is asked for at once, not on a later turn");
	struct want_rep ok = { ATTEMPT_REPLY, STAGE_CONTENT, 250, false };
	check_rep(&t.reps[1][0], &ok, 1, 0);
	tc_free(&t);
}

/* 9. Parked idle, then given a job by a timer: it runs. */
Test(smtp_client, idle_then_give, .timeout = 20)
{
	struct tc t;
	tc_init(&t, txn_cases[TXN_PIPE_CHUNK].script, false, false);
	tc_job(&t, two_rcpts, 2, BODY, sizeof(BODY) - 1);
	t.by_give = true;
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	check_got(&t, txn_cases[TXN_PIPE_CHUNK].want);
	check_events(&t, "Forcd");
	cr_assert_eq(t.next, 1, "the job was given");
	cr_assert_eq(t.nout, 1);
	for (unsigned i = 0; i < 2; i++)
		check_rep(&t.reps[0][i], &txn_cases[TXN_PIPE_CHUNK].rep[i], 0, i);
	tc_free(&t);
}

/* 10. max_transactions: after that many jobs the session says QUIT without asking for more,
 * though the owner has more. */
struct max_case {
	unsigned max;
	const char *script[MAX_SCRIPT];
	const char *want;
	const char *events;
};

static const struct max_case max_cases[] = {
	{ 1,
	  { GREETING, EHLO_PIPE_CHUNK, OK_MAIL, OK_RCPT, NO_RCPT, QUEUED, BYE },
	  EHLO MAIL RCPT2 BODY_BDAT QUIT,
	  "Focd" },
	{ 2,
	  { GREETING, EHLO_PIPE_CHUNK, OK_MAIL, OK_RCPT, NO_RCPT, QUEUED, OK_MAIL, OK_RCPT, NO_RCPT,
	    QUEUED, BYE },
	  EHLO MAIL RCPT2 BODY_BDAT MAIL RCPT2 BODY_BDAT QUIT,
	  "Forocd" },
};

Test(smtp_client, max_transactions, .timeout = 20)
{
	for (unsigned k = 0; k < RP_ARRAY_LEN(max_cases); k++) {
		const struct max_case *mc = &max_cases[k];
		struct tc t;
		tc_init(&t, mc->script, false, false);
		for (unsigned j = 0; j < 3; j++)
			tc_job(&t, two_rcpts, 2, BODY, sizeof(BODY) - 1);
		tc_open(&t, NULL, mc->max, 0);
		tc_run(&t);
		check_got(&t, mc->want);
		check_events(&t, mc->events);
		cr_assert_eq(t.next, mc->max, "max %u: jobs taken", mc->max);
		cr_assert_eq(t.nout, mc->max);
		tc_free(&t);
	}
}

/* A job refused here (too big for the server's SIZE) used no transaction:
 * with max_transactions 2 the session still carries two real ones. */
Test(smtp_client, a_job_refused_locally_does_not_count, .timeout = 20)
{
	static const char *const script[] = {
		GREETING, "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 CHUNKING\r\n",
		OK_MAIL,  OK_RCPT,
		QUEUED,   OK_MAIL,
		OK_RCPT,  QUEUED,
		BYE,      NULL
	};
	static const char *const one[] = { "one@b.test" };
	char big[2000];
	memset(big, 'x', sizeof(big));
	memcpy(big + sizeof(big) - 2, "\r\n", 2);
	struct tc t;
	tc_init(&t, script, false, false);
	tc_job(&t, one, 1, big, sizeof(big));
	tc_job(&t, one, 1, BODY, sizeof(BODY) - 1);
	tc_job(&t, one, 1, BODY, sizeof(BODY) - 1);
	tc_open(&t, NULL, 2, 0);
	tc_run(&t);
	cr_assert_eq(t.next, 3, "jobs taken: %u (the refused one must not count)", t.next);
	cr_assert_eq(t.nout, 3);
	cr_assert_eq(t.reps[0][0].kind, ATTEMPT_TOO_BIG);
	struct want_rep ok = { ATTEMPT_REPLY, STAGE_CONTENT, 250, false };
	check_rep(&t.reps[1][0], &ok, 1, 0);
	check_rep(&t.reps[2][0], &ok, 2, 0);
	tc_free(&t);
}

/* An idle session nobody uses says QUIT by itself after idle_ms. */
Test(smtp_client, idle_time_ends_session, .timeout = 20)
{
	static const char *const script[] = { GREETING, EHLO_PIPE_CHUNK, BYE, NULL };
	struct tc t;
	tc_init(&t, script, false, false);
	t.stay_idle = true;
	tc_open(&t, NULL, 0, 150);
	tc_run(&t);
	check_got(&t, EHLO QUIT);
	check_events(&t, "Fcd");
	uint64_t idle = t.closing_ms_at - t.idle_ms_at;
	cr_assert(idle >= 100 && idle < 2000, "idle for %llu ms, want 150",
	          (unsigned long long)idle);
	tc_free(&t);
}

/* ---- source address and EHLO name ---------------------------------------- */

static struct sockaddr_in v4(const char *ip)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	cr_assert_eq(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
	return sa;
}

/* Bound to 127.0.0.2 and greeting as out.example: the server sees both. */
Test(smtp_client, source_and_helo, .timeout = 20)
{
	static const char *const script[] = { GREETING, EHLO_PIPE_CHUNK, BYE, NULL };
	struct tc t;
	tc_init(&t, script, true, false);
	struct sockaddr_in src = v4("127.0.0.2");
	t.source = &src;
	t.helo = "out.example";
	t.quit_in_ready = true;
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	check_got(&t, "EHLO out.example\r\n" QUIT);
	char peer[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &t.srv.peer.sin_addr, peer, sizeof(peer));
	cr_assert_str_eq(peer, "127.0.0.2");
	cr_assert_str_eq(t.source_seen, "127.0.0.2");
	cr_assert_str_eq(t.helo_seen, "out.example");
	tc_free(&t);
	/* Without a source: the kernel's choice, and the engine says none. */
	tc_init(&t, script, true, false);
	t.quit_in_ready = true;
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	inet_ntop(AF_INET, &t.srv.peer.sin_addr, peer, sizeof(peer));
	cr_assert_str_eq(peer, "127.0.0.1");
	cr_assert_str_eq(t.source_seen, "(none)");
	cr_assert_str_eq(t.helo_seen, "client.test");
	tc_free(&t);
}

/* A refused connection from a source says which; a source that is not ours opens nothing. */
Test(smtp_client, source_failures, .timeout = 20)
{
	struct tc t;
	tc_init(&t, NULL, false, false);
	struct sockaddr_in dead, src = v4("127.0.0.3");
	dead_port(&dead);
	t.source = &src;
	tc_open(&t, &dead, 0, 0);
	tc_run(&t);
	check_events(&t, "fcd");
	cr_assert_eq(t.failed.kind, ATTEMPT_CONNECT_FAIL);
	cr_assert(strstr(t.failed.text, " from 127.0.0.3: "), "\"%s\"", t.failed.text);
	tc_free(&t);

	tc_init(&t, NULL, false, false);
	struct sockaddr_in foreign = v4("192.0.2.7");
	struct smtp_client_params p = {
		.loop = t.l,
		.addr = (const struct sockaddr *)&dead,
		.addrlen = sizeof(dead),
		.source = (const struct sockaddr *)&foreign,
		.sourcelen = sizeof(foreign),
		.helo = "client.test",
		.name = "b.test",
		.connect_timeout_ms = 2000,
		.ops = &test_ops,
		.arg = &t,
	};
	errno = 0;
	cr_assert_null(smtp_client_open(&p));
	cr_assert_eq(errno, EADDRNOTAVAIL, "errno %d", errno);
	cr_assert_eq(loop_registered(t.l), 0);
	loop_free(t.l);
	tc_free(&t);
}

/* A refused MAIL fails the job at MAIL for every recipient; the next transaction starts with
 * RSET (pipelined in front of it, or alone without PIPELINING). */
struct rset_case {
	const char *script[MAX_SCRIPT];
	bool lockstep;
	const char *want;
};

static const struct rset_case rset_cases[] = {
	{ { GREETING, EHLO_PIPE_CHUNK, "451 4.3.0 try again later\r\n", "503 5.5.1 no MAIL\r\n",
	    "503 5.5.1 no MAIL\r\n", "250 2.0.0 reset\r\n", OK_MAIL, OK_RCPT, QUEUED, BYE },
	  false,
	  EHLO MAIL RCPT1 BODY_BDAT "RSET\r\n" MAIL RCPT1 BODY_BDAT QUIT },
	{ { GREETING, "250-mx.test\r\n250 CHUNKING\r\n", "451 4.3.0 try again later\r\n",
	    "250 2.0.0 reset\r\n", OK_MAIL, OK_RCPT, QUEUED, BYE },
	  true,
	  EHLO MAIL "RSET\r\n" MAIL RCPT1 BODY_BDAT QUIT },
};

Test(smtp_client, mail_refused_then_rset, .timeout = 20)
{
	static const char *const one[] = { "one@b.test" };
	for (unsigned k = 0; k < RP_ARRAY_LEN(rset_cases); k++) {
		const struct rset_case *rc = &rset_cases[k];
		struct tc t;
		tc_init(&t, rc->script, rc->lockstep, false);
		tc_job(&t, one, 1, BODY, sizeof(BODY) - 1);
		tc_job(&t, one, 1, BODY, sizeof(BODY) - 1);
		tc_open(&t, NULL, 0, 0);
		tc_run(&t);
		check_got(&t, rc->want);
		check_events(&t, "Fororcd");
		struct want_rep refused = { ATTEMPT_REPLY, STAGE_MAIL, 451, false };
		struct want_rep ok = { ATTEMPT_REPLY, STAGE_CONTENT, 250, false };
		check_rep(&t.reps[0][0], &refused, 0, 0);
		check_rep(&t.reps[1][0], &ok, 1, 0);
		tc_free(&t);
	}
}

/* smtp_client_quit from inside a callback: one QUIT, after the job ready handed over in the
 * same call, and no work asked for after it. */
struct quit_case {
	const char *name;
	bool in_ready, in_outcome;
	unsigned njobs;
	bool big; /* the jobs are refused locally (their outcome comes inside ready's loop) */
	const char *script[MAX_SCRIPT];
	const char *want;
	const char *events;
};

static const struct quit_case quit_cases[] = {
	{
	    .name = "in ready, no job",
	    .in_ready = true,
	    .script = { GREETING, EHLO_PIPE_CHUNK, BYE },
	    .want = EHLO QUIT,
	    .events = "Fcd",
	},
	{
	    .name = "in ready, with a job",
	    .in_ready = true,
	    .njobs = 2,
	    .script = { GREETING, EHLO_PIPE_CHUNK, OK_MAIL, OK_RCPT, NO_RCPT, QUEUED, BYE },
	    .want = EHLO MAIL RCPT2 BODY_BDAT QUIT,
	    .events = "Focd",
	},
	{
	    .name = "in the outcome of a job refused locally",
	    .in_outcome = true,
	    .njobs = 2,
	    .big = true,
	    .script = { GREETING, "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n", BYE },
	    .want = EHLO QUIT,
	    .events = "Focd",
	},
	{
	    .name = "in the outcome of a transaction",
	    .in_outcome = true,
	    .njobs = 2,
	    .script = { GREETING, EHLO_PIPE_CHUNK, OK_MAIL, OK_RCPT, NO_RCPT, QUEUED, BYE },
	    .want = EHLO MAIL RCPT2 BODY_BDAT QUIT,
	    .events = "Focd",
	},
};

Test(smtp_client, quit_from_callback, .timeout = 20)
{
	for (unsigned k = 0; k < RP_ARRAY_LEN(quit_cases); k++) {
		const struct quit_case *qc = &quit_cases[k];
		struct tc t;
		tc_init(&t, qc->script, false, false);
		for (unsigned j = 0; j < qc->njobs; j++)
			tc_job(&t, two_rcpts, 2, BODY, sizeof(BODY) - 1);
		t.quit_in_ready = qc->in_ready;
		t.quit_in_outcome = qc->in_outcome;
		tc_open(&t, NULL, 0, 0);
		tc_run(&t);
		cr_assert(!strcmp(t.got, qc->want), "quit %s: the server got:\n%s\n---- want:\n%s",
		          qc->name, t.got, qc->want);
		cr_assert_str_eq(t.events, qc->events, "quit %s: callbacks %s, want %s", qc->name,
		                 t.events, qc->events);
		cr_assert_eq(t.next, qc->njobs ? 1 : 0, "quit %s: jobs taken", qc->name);
		if (qc->big)
			cr_assert_eq(t.reps[0][0].kind, ATTEMPT_TOO_BIG);
		tc_free(&t);
	}
}

/* ---- STARTTLS ------------------------------------------------------------ */

/* Certificates made with the openssl command in the test's directory: a CA, a server
 * certificate it signs for mx.b.test, and a self-signed one for the same name. */
struct certs {
	char dir[64];
	char ca[96], cert[96], key[96], self[96], self_key[96];
};

/* sh - run a shell command quietly in dir; it must succeed. */
RP_PRINTF(2, 3) static void sh(const char *dir, const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = snprintf(cmd, sizeof(cmd), "cd '%s' && (", dir);
	vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
	va_end(ap);
	strncat(cmd, ") >/dev/null 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	int rc = system(cmd);
	cr_assert(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "failed: %s", cmd);
}

static void certs_make(struct certs *k)
{
	test_tmpdir(k->dir, sizeof(k->dir), "smtp_tls");
	const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
	sh(k->dir,
	   "openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 -subj '/CN=test CA' "
	   "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
	   ec);
	sh(k->dir, "openssl req %s -keyout mx.key -out mx.csr -subj /CN=mx.b.test", ec);
	sh(k->dir, "printf 'subjectAltName=DNS:mx.b.test\\nextendedKeyUsage=serverAuth\\n' > mx.ext"
	           " && openssl x509 -req -in mx.csr -CA ca.pem -CAkey ca.key -set_serial 2 "
	           "-days 2 -extfile mx.ext -out mx.pem");
	sh(k->dir,
	   "openssl req -x509 %s -keyout self.key -out self.pem -days 2 -subj /CN=mx.b.test "
	   "-addext subjectAltName=DNS:mx.b.test",
	   ec);
	snprintf(k->ca, sizeof(k->ca), "%s/ca.pem", k->dir);
	snprintf(k->cert, sizeof(k->cert), "%s/mx.pem", k->dir);
	snprintf(k->key, sizeof(k->key), "%s/mx.key", k->dir);
	snprintf(k->self, sizeof(k->self), "%s/self.pem", k->dir);
	snprintf(k->self_key, sizeof(k->self_key), "%s/self.key", k->dir);
}

/* server_ctx - the scripted server's TLS context with cert and key. */
static SSL_CTX *server_ctx(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	cr_assert_not_null(ctx);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx, cert), 1, "%s", cert);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1, "%s", key);
	return ctx;
}

/* client_ctx - ringpost's client context, trusting ca_file. */
static struct tls_ctx *client_ctx(const char *ca_file)
{
	char err[256];
	struct tls_client_config cc = { .ca_file = ca_file, .min_version = TLS_V1_2 };
	struct tls_ctx *ctx = tls_ctx_new_client(&cc, err, sizeof(err));
	cr_assert_not_null(ctx, "%s", err);
	return ctx;
}

#define EHLO_TLS     "250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
#define STARTTLS     "STARTTLS\r\n"
#define TXN_DATA     MAIL RCPT1 BODY_DATA
#define NO_TLS_OFFER "250-mx.test\r\n250 PIPELINING\r\n"

/* A conversation with TLS on offer, and what should come of it. */
struct tls_case {
	const char *name;
	enum smtp_tls_policy policy;
	bool self_signed;  /* the server shows the self-signed certificate */
	const char *tname; /* the name to verify ("mx.b.test" when NULL) */
	const char *script[MAX_SCRIPT];
	const char *want;   /* every byte the server should get (TLS_MARK where TLS began) */
	const char *events; /* the callbacks */
	const char *tls;    /* smtp_client_tls at the outcome, a prefix ("" when none) */
	enum attempt_kind fail_kind;
	const char *fail_text; /* in the failure's text (NULL: no failure) */
	bool handshake_failed;
};

static const char *const one_rcpt[] = { "one@b.test" };

static const struct tls_case tls_cases[] = {
	{
	    .name = "opportunistic: TLS when offered, EHLO again, the transaction inside",
	    .policy = SMTP_TLS_OPPORTUNISTIC,
	    .script = { GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED,
	                BYE },
	    .want = EHLO STARTTLS TLS_MARK EHLO TXN_DATA QUIT,
	    .events = "Forcd",
	    .tls = "TLSv1.3/TLS_AES_256_GCM_SHA384 verified=yes",
	},
	{
	    .name = "opportunistic: the verification is reported, not required",
	    .policy = SMTP_TLS_OPPORTUNISTIC,
	    .self_signed = true,
	    .script = { GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED,
	                BYE },
	    .want = EHLO STARTTLS TLS_MARK EHLO TXN_DATA QUIT,
	    .events = "Forcd",
	    .tls = "TLSv1.3/TLS_AES_256_GCM_SHA384 verified=no",
	},
	{
	    .name = "what the server sent after its 220 is never read",
	    .policy = SMTP_TLS_REQUIRED,
	    .script = { GREETING, EHLO_TLS, TLS_GO_INJECT, EHLO_PIPE, OK_MAIL, OK_RCPT, GO_AHEAD,
	                QUEUED, BYE },
	    .want = EHLO STARTTLS TLS_MARK EHLO TXN_DATA QUIT,
	    .events = "Forcd",
	    .tls = "TLSv1.3/",
	},
	{
	    .name = "opportunistic: clear text when not offered",
	    .policy = SMTP_TLS_OPPORTUNISTIC,
	    .script = { GREETING, NO_TLS_OFFER, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE },
	    .want = EHLO TXN_DATA QUIT,
	    .events = "Forcd",
	    .tls = "no",
	},
	{
	    .name = "off: no STARTTLS even when offered",
	    .policy = SMTP_TLS_OFF,
	    .script = { GREETING, EHLO_TLS, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE },
	    .want = EHLO TXN_DATA QUIT,
	    .events = "Forcd",
	    .tls = "no",
	},
	{
	    .name = "opportunistic: STARTTLS refused, clear text",
	    .policy = SMTP_TLS_OPPORTUNISTIC,
	    .script = { GREETING, EHLO_TLS, "454 4.7.0 TLS not available\r\n", OK_MAIL, OK_RCPT,
	                GO_AHEAD, QUEUED, BYE },
	    .want = EHLO STARTTLS TXN_DATA QUIT,
	    .events = "Forcd",
	    .tls = "no",
	},
	{
	    .name = "required: not offered is a TLS failure, then QUIT",
	    .policy = SMTP_TLS_REQUIRED,
	    .script = { GREETING, NO_TLS_OFFER, BYE },
	    .want = EHLO QUIT,
	    .events = "fcd",
	    .fail_kind = ATTEMPT_TLS_FAIL,
	    .fail_text = "STARTTLS was not offered",
	},
	{
	    .name = "verify: refused with 454 is a TLS failure, then QUIT",
	    .policy = SMTP_TLS_VERIFY,
	    .script = { GREETING, EHLO_TLS, "454 4.7.0 TLS not available\r\n", BYE },
	    .want = EHLO STARTTLS QUIT,
	    .events = "fcd",
	    .fail_kind = ATTEMPT_TLS_FAIL,
	    .fail_text = "refused STARTTLS: 454 4.7.0 TLS not available",
	},
	{
	    .name = "required: 554 to STARTTLS is a TLS failure too (never a bounce)",
	    .policy = SMTP_TLS_REQUIRED,
	    .script = { GREETING, EHLO_TLS, "554 5.7.0 no TLS for you\r\n", BYE },
	    .want = EHLO STARTTLS QUIT,
	    .events = "fcd",
	    .fail_kind = ATTEMPT_TLS_FAIL,
	    .fail_text = "554 5.7.0",
	},
	{
	    .name = "verify: a self-signed certificate fails the handshake",
	    .policy = SMTP_TLS_VERIFY,
	    .self_signed = true,
	    .script = { GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE, NULL },
	    .want = EHLO STARTTLS,
	    .events = "fcd",
	    .fail_kind = ATTEMPT_TLS_FAIL,
	    .fail_text = "certificate verification failed: self-signed certificate",
	    .handshake_failed = true,
	},
	{
	    .name = "verify: a certificate for another name fails the handshake",
	    .policy = SMTP_TLS_VERIFY,
	    .tname = "other.b.test",
	    .script = { GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE, NULL },
	    .want = EHLO STARTTLS,
	    .events = "fcd",
	    .fail_kind = ATTEMPT_TLS_FAIL,
	    .fail_text = "certificate verification failed: hostname mismatch",
	    .handshake_failed = true,
	},
	{
	    .name = "verify: the right CA and name",
	    .policy = SMTP_TLS_VERIFY,
	    .script = { GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED,
	                BYE },
	    .want = EHLO STARTTLS TLS_MARK EHLO TXN_DATA QUIT,
	    .events = "Forcd",
	    .tls = "TLSv1.3/TLS_AES_256_GCM_SHA384 verified=yes",
	},
};

/* run_tls - one case: a session with a client context that trusts the CA. */
static void run_tls(const struct certs *k, const struct tls_case *tc)
{
	SSL_CTX *sctx =
	    tc->self_signed ? server_ctx(k->self, k->self_key) : server_ctx(k->cert, k->key);
	struct tc t;
	tc_init_ctx(&t, tc->script, false, false, sctx);
	tc_job(&t, one_rcpt, 1, BODY, sizeof(BODY) - 1);
	t.tls = client_ctx(k->ca);
	t.policy = tc->policy;
	t.tls_name = tc->tname ? tc->tname : "mx.b.test";
	tc_open(&t, NULL, 0, 0);
	tc_run(&t);
	cr_assert(!strcmp(t.got, tc->want), "%s: the server got:\n%s\n---- want:\n%s", tc->name,
	          t.got, tc->want);
	cr_assert_str_eq(t.events, tc->events, "%s: callbacks %s, want %s", tc->name, t.events,
	                 tc->events);
	if (tc->fail_text) {
		cr_assert_eq(t.failed.kind, tc->fail_kind, "%s: failed with %s (\"%s\")", tc->name,
		             outcome_kind_name(t.failed.kind), t.failed.text);
		cr_assert_eq(t.failed.stage, STAGE_EHLO, "%s", tc->name);
		cr_assert(strstr(t.failed.text, tc->fail_text), "%s: \"%s\" lacks \"%s\"", tc->name,
		          t.failed.text, tc->fail_text);
	} else {
		cr_assert_eq(t.nout, 1, "%s", tc->name);
		cr_assert_eq(t.reps[0][0].kind, ATTEMPT_REPLY, "%s: %s", tc->name,
		             t.reps[0][0].text);
		cr_assert_eq(t.reps[0][0].code, 250, "%s: %s", tc->name, t.reps[0][0].text);
		cr_assert(!strncmp(t.tls_text, tc->tls, strlen(tc->tls)),
		          "%s: TLS \"%s\", want \"%s...\"", tc->name, t.tls_text, tc->tls);
		if (strcmp(tc->tls, "no"))
			cr_assert(strstr(t.tls_text, " verified="), "%s: \"%s\"", tc->name,
			          t.tls_text);
	}
	cr_assert_eq(t.tls_handshake_failed, tc->handshake_failed, "%s", tc->name);
	cr_assert_eq(t.srv.tls_broke, tc->handshake_failed, "%s: the server's handshake", tc->name);
	tc_free(&t);
	tls_ctx_unref(t.tls);
	SSL_CTX_free(sctx);
}

/* Every test here has the same timeout: with two different ones Criterion 2.4.1's runner
 * leaks 48 bytes, which LeakSanitizer turns into a failed run. */
Test(smtp_client, starttls, .timeout = 20)
{
	struct certs k;
	certs_make(&k);
	for (unsigned i = 0; i < RP_ARRAY_LEN(tls_cases); i++)
		run_tls(&k, &tls_cases[i]);
	test_rmdir(k.dir);
}

/* The second session to the same server resumes the first one's session (a TLS 1.3
 * ticket, which comes after the handshake), and a resumed session stays verified. */
Test(smtp_client, starttls_resumption, .timeout = 20)
{
	static const char *const script[] = { GREETING, EHLO_TLS, TLS_GO, EHLO_PIPE, OK_MAIL,
		                              OK_RCPT,  GO_AHEAD, QUEUED, BYE,       NULL };
	struct certs k;
	certs_make(&k);
	SSL_CTX *sctx = server_ctx(k.cert, k.key);
	struct tls_ctx *cctx = client_ctx(k.ca);
	struct tls_session *ticket = NULL;
	for (unsigned round = 0; round < 2; round++) {
		struct tc t;
		tc_init_ctx(&t, script, false, false, sctx);
		tc_job(&t, one_rcpt, 1, BODY, sizeof(BODY) - 1);
		t.tls = cctx;
		t.policy = SMTP_TLS_VERIFY;
		t.tls_name = "mx.b.test";
		t.resume = ticket;
		tc_open(&t, NULL, 0, 0);
		tc_run(&t);
		check_got(&t, EHLO STARTTLS TLS_MARK EHLO TXN_DATA QUIT);
		check_events(&t, "Forcd");
		cr_assert_not_null(t.ticket, "round %u: no session to resume at closing", round);
		cr_assert_eq(t.tls_resumed, round == 1, "round %u: resumed %d", round,
		             t.tls_resumed);
		cr_assert_eq(t.srv.tls_resumed, round == 1, "round %u: the server", round);
		cr_assert(strstr(t.tls_text, "verified=yes"), "round %u: %s", round, t.tls_text);
		ticket = t.ticket;
		t.ticket = NULL;
		tc_free(&t);
	}
	tls_session_free(ticket);
	tls_ctx_unref(cctx);
	SSL_CTX_free(sctx);
	test_rmdir(k.dir);
}
