/* blast_run.c - one ringpost-blast run on one event loop: --connections
 * sessions kept open (at most MAX_CONNECTING connects at once), one
 * transaction at a time per session (up to --pipeline when the mode
 * pipelines; each of --batch messages when it batches), messages evenly
 * paced with --rate, results and submission latency counted per message,
 * and the end of the run.
 *
 * The run ends when --messages transactions have ended, --duration has
 * passed, or SIGINT/SIGTERM arrived (a second one ends it at once); the
 * transactions in flight finish, then every session quits and the loop
 * stops when the last one is released.
 *
 * Without mail: with --handshakes a session that gets ready quits at once
 * and is replaced (a loop of connections, or TLS handshakes); with --hold
 * it stays idle until the end. TLS (--starttls, --tls) is begun by the
 * mode or at connect; the run owns the client context, counts handshakes
 * and keeps resumable sessions for --tls-resume.
 */
#include "blast.h"

#include <errno.h>
#include <liburing.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/log.h"

#define MAX_CONNECTING     512
#define CONNECT_TIMEOUT_MS 10000
#define RECONNECT_MS       200
#define GIVE_UP_MS         10000    /* connects failing this long with no success: stop */
#define PACE_SLACK_NS      10000000 /* behind by more: no catch-up burst */
#define DRAIN_MS           3000     /* after the end, sessions still open are closed */
#define PROGRESS_MS        1000

static const char *const state_names[BS_NSTATES] = {
	"connecting", "handshake", "ready", "busy", "quit",
};

struct blast {
	const struct blast_opts *o;
	struct loop *loop;
	struct rp_list sessions; /* every session */
	unsigned nsess;          /* allocated sessions */
	unsigned nconnecting;    /* connects in flight */
	bool ever_connected;
	bool unreachable;
	uint64_t last_connect_ok_ms;      /* start, or the last successful connect */
	uint64_t issued, ended, accepted; /* messages */
	uint64_t requests;                /* transactions ended */
	uint64_t first_ns, last_ns;       /* first transaction written, last one ended */
	bool stopping;                    /* no new transactions */
	bool finished;                    /* stopping and nothing in flight */
	struct histo lat;                 /* submission latency, us */
	uint64_t err_code[600];           /* failed transactions by reply code */
	struct {
		char key[16];
		uint64_t n;
	} err_keys[BLAST_ERR_KEYS]; /* "connect", "lost", "timeout", a batch entry's code, ... */
	unsigned nerr_keys;
	struct bench_rand rand; /* --size-mix */
	uint32_t size_floor;    /* smallest message the headers allow */
	double log_min, log_max;

	/* Pacing: an absolute io_uring timeout wakes the queue of ready sessions. */
	struct loop_io pace_io;
	struct __kernel_timespec pace_ts;
	bool pace_armed;
	uint64_t pace_next_ns, pace_gap_ns;
	struct rp_list waiting; /* sessions waiting for a pacing slot, oldest first */

	struct loop_timer reconnect, deadline, drain, progress;
	unsigned drained;      /* drain passes done */
	struct loop_io sig_io; /* signalfd read */
	int sigfd;
	struct signalfd_siginfo siginfo;
	unsigned signals;
	struct buf scratch;
	uint64_t start_ms, progress_ended;
	uint64_t start_ns; /* monotonic: the run began (the first connects) */
	bool fatal;        /* blast_run_fatal: the server cannot serve this run */

	struct tls_ctx *tls;                              /* client context, NULL without TLS */
	struct tls_session **tickets;                     /* --tls-resume: sessions to resume */
	unsigned ntickets;                                /* in tickets (at most --connections) */
	uint64_t tls_handshakes, tls_resumed, tls_failed; /* see struct blast_report */
	uint64_t tls_first_ns, tls_last_ns;               /* first TLS begun, last completed */
	struct histo tls_lat;                             /* TLS begun -> completed, us */
	uint64_t loop_sessions, loop_last_ns;             /* --handshakes */
	uint64_t held, held_peak, idle_closed;            /* --hold */
	uint64_t all_held_ns;                             /* when --connections were held */
};

static void open_more(struct blast *b);
static void begin_stop(struct blast *b);

/* set_state - every transition, with a debug line. */
static void set_state(struct blast_sess *s, enum blast_sess_state st)
{
	if (s->state != st)
		log_debug("blast session %u: %s -> %s", s->conn.io.slot, state_names[s->state],
		          state_names[st]);
	s->state = (uint8_t)st;
}

/* blast_opts_of - the run's options, for the mode. */
const struct blast_opts *blast_opts_of(const struct blast_sess *s)
{
	return s->b->o;
}

/* blast_scratch - the run's scratch buffer (one thread, one user at a time). */
struct buf *blast_scratch(struct blast_sess *s)
{
	return &s->b->scratch;
}

/* ---- counting ---------------------------------------------------------- */

/* count_errors - n more failures under key ("421", "lost", a batch entry's
 * code, ...). Keys come from servers too: past BLAST_ERR_KEYS - 1 distinct
 * words the rest count under "other". */
static void count_errors(struct blast *b, const char *key, uint64_t n)
{
	if (key[0] >= '2' && key[0] <= '5' && key[1] >= '0' && key[1] <= '9' && key[2] >= '0' &&
	    key[2] <= '9' && !key[3]) {
		b->err_code[(key[0] - '0') * 100 + (key[1] - '0') * 10 + (key[2] - '0')] += n;
		return;
	}
	char k[sizeof(b->err_keys[0].key)];
	snprintf(k, sizeof(k), "%s", b->nerr_keys < BLAST_ERR_KEYS - 1 ? key : "other");
	for (unsigned i = 0; i < b->nerr_keys; i++) {
		if (!strcmp(b->err_keys[i].key, k)) {
			b->err_keys[i].n += n;
			return;
		}
	}
	if (b->nerr_keys == BLAST_ERR_KEYS - 1)
		snprintf(k, sizeof(k), "other");
	rp_assert(b->nerr_keys < BLAST_ERR_KEYS);
	memcpy(b->err_keys[b->nerr_keys].key, k, sizeof(k));
	b->err_keys[b->nerr_keys++].n = n;
}

/* count_error - one more failure under key. */
static void count_error(struct blast *b, const char *key)
{
	count_errors(b, key, 1);
}

static void finish(struct blast *b);

/* tx_oldest - the oldest transaction in flight on s. */
static struct blast_tx *tx_oldest(struct blast_sess *s)
{
	rp_assert(s->tx_n > 0);
	return &s->tx[s->tx_head];
}

/* tx_pop - the oldest transaction ended: count it; the reply clock
 * restarts for the next one, or stops. The run may be over (finish). */
static void tx_pop(struct blast_sess *s)
{
	struct blast *b = s->b;
	struct blast_tx *t = tx_oldest(s);
	b->ended += t->count;
	b->requests++;
	b->last_ns = rp_mono_ns();
	s->tx_head = (s->tx_head + 1) % b->o->pipeline;
	s->tx_n--;
	if (s->tx_n)
		blast_sess_wait(s);
	else
		loop_timer_disarm(b->loop, &s->timer);
}

/* ---- TLS --------------------------------------------------------------- */

/* tls_harvest - --tls-resume: keep the resumable session s got (TLS 1.3
 * tickets arrive after the handshake, with the replies that follow). Each
 * is used once, by one later connection: OpenSSL retires a ticket as soon
 * as a connection that resumed with it gets a fresh one (TLS 1.3 wants
 * tickets used once), so a ticket shared by connections started together
 * would fail for those that offer it after that. */
static void tls_harvest(struct blast_sess *s)
{
	struct blast *b = s->b;
	if (!b->o->tls_resume || !s->conn.tls)
		return;
	struct tls_session *t = tls_session_take(s->conn.tls);
	if (!t)
		return;
	if (b->ntickets == b->o->connections) {
		tls_session_free(t); /* enough in stock for every connection */
		return;
	}
	if (!b->tickets)
		b->tickets = xcalloc(b->o->connections, sizeof(*b->tickets));
	b->tickets[b->ntickets++] = t;
}

/* blast_sess_tls_start - TLS with the run's context and options. */
void blast_sess_tls_start(struct blast_sess *s)
{
	struct blast *b = s->b;
	const struct blast_opts *o = b->o;
	struct tls_session *ticket = b->ntickets ? b->tickets[--b->ntickets] : NULL;
	struct tls_client_opts co = {
		.sni = o->tls_name,
		.verify_name = o->tls_ca ? o->tls_name : NULL,
		.resume = ticket,
	};
	rp_assert(b->tls && !s->tls_started);
	s->tls_started = true;
	s->tls_start_ns = rp_mono_ns();
	if (!b->tls_first_ns)
		b->tls_first_ns = s->tls_start_ns;
	conn_tls_client(&s->conn, b->tls, &co);
	tls_session_free(ticket); /* the session holds its own reference */
}

/* blast_run_fatal - say why once, fail s, end the run. */
void blast_run_fatal(struct blast_sess *s, const char *key, const char *why)
{
	struct blast *b = s->b;
	if (!b->fatal)
		fprintf(stderr, "ringpost-blast: %s: %s\n", b->o->server_text, why);
	b->fatal = true;
	blast_sess_fail(s, key);
	begin_stop(b);
	finish(b);
}

/* tls_setup - the client context for --starttls and --tls; exits 66 when
 * --tls-ca cannot be read. */
static void tls_setup(struct blast *b)
{
	char err[300];
	if (!b->o->starttls && !b->o->tls_implicit)
		return;
	struct tls_client_config cc = { .ca_file = b->o->tls_ca, .min_version = TLS_V1_2 };
	b->tls = tls_ctx_new_client(&cc, err, sizeof(err));
	if (!b->tls)
		rp_die(RP_EX_NOINPUT, "%s", err);
}

/* ---- sessions ---------------------------------------------------------- */

/* wait_unlink - take s off the pacing queue. */
static void wait_unlink(struct blast_sess *s)
{
	rp_list_del(&s->wait_link);
	s->queued = false;
}

/* sess_abort - end the connection now. conn_close cancels the ring's
 * requests by fd, which walks every request in the ring: with 20,000
 * sessions closing at once that is seconds of CPU (quadratic). A connected
 * socket is shut down instead: its recv ends with EOF and conn.c releases it
 * with nothing left to cancel. */
static void sess_abort(struct blast_sess *s)
{
	if (s->ever_connected && s->conn.fd >= 0 && !conn_closing(&s->conn) &&
	    shutdown(s->conn.fd, SHUT_RDWR) == 0)
		return;
	conn_close(&s->conn);
}

/* sess_quit - leave: politely once the handshake is done, else just close. */
static void sess_quit(struct blast_sess *s)
{
	enum blast_sess_state was = s->state;
	if (was == BS_QUIT)
		return;
	if (s->queued)
		wait_unlink(s);
	set_state(s, BS_QUIT);
	loop_timer_disarm(s->b->loop, &s->timer);
	if (was == BS_READY && !s->retiring && s->b->o->mode->quit)
		s->b->o->mode->quit(s);
	else
		sess_abort(s);
}

/* sess_timeout - a reply is overdue: the session is given up. */
static void sess_timeout(struct loop_timer *t)
{
	blast_sess_fail(RP_CONTAINER_OF(t, struct blast_sess, timer), "timeout");
}

/* blast_sess_wait - the reply timeout restarts now. */
void blast_sess_wait(struct blast_sess *s)
{
	loop_timer_arm(s->b->loop, &s->timer, s->b->o->timeout_ms, sess_timeout);
}

/* pick_size - --size, or log-uniform in --size-mix; never below the headers. */
static uint32_t pick_size(struct blast *b)
{
	const struct blast_opts *o = b->o;
	uint32_t size = o->size_min;
	if (o->size_max > o->size_min) {
		double u = bench_rand_unit(&b->rand);
		size = (uint32_t)llround(exp(b->log_min + u * (b->log_max - b->log_min)));
		size = RP_MIN(RP_MAX(size, o->size_min), o->size_max);
	}
	return RP_MAX(size, b->size_floor);
}

/* sess_room - s may take another transaction now. */
static bool sess_room(const struct blast_sess *s)
{
	const struct blast *b = s->b;
	return !b->stopping && !s->retiring && s->tx_n < b->o->pipeline &&
	       (s->state == BS_READY || s->state == BS_BUSY);
}

/* sess_idle_end - s has nothing in flight and will get nothing more
 * (the run is ending, or the server closes it): it leaves. */
static void sess_idle_end(struct blast_sess *s)
{
	if (!s->tx_n && (s->b->stopping || s->retiring))
		sess_quit(s);
}

/* issue - start the next transaction on s (a batch takes up to --batch
 * messages, fewer at the end of --messages). */
static void issue(struct blast_sess *s)
{
	struct blast *b = s->b;
	const struct blast_opts *o = b->o;
	if (b->stopping || (o->messages && b->issued >= o->messages)) {
		sess_idle_end(s);
		return;
	}
	rp_assert(s->tx_n < o->pipeline);
	uint64_t count = o->batch;
	if (o->messages && count > o->messages - b->issued)
		count = o->messages - b->issued;
	s->job.seq = b->issued;
	s->job.count = (uint32_t)count;
	b->issued += count;
	s->job.size = pick_size(b);
	s->job.start_ns = rp_mono_ns();
	s->job.sent_real_ns = bench_realtime_ns();
	if (!b->first_ns)
		b->first_ns = s->job.start_ns;
	s->tx[(s->tx_head + s->tx_n) % o->pipeline] =
	    (struct blast_tx){ .start_ns = s->job.start_ns, .count = s->job.count };
	if (!s->tx_n++)
		blast_sess_wait(s); /* with more in flight the clock runs from the last answer */
	set_state(s, BS_BUSY);
	o->mode->send(s);
	if (o->messages && b->issued == o->messages)
		begin_stop(b);
}

static void pace_run(struct blast *b);

/* wait_append - put s at the tail of the pacing queue. */
static void wait_append(struct blast_sess *s)
{
	struct blast *b = s->b;
	s->queued = true;
	rp_list_add_tail(&b->waiting, &s->wait_link);
}

/* sess_fill - s has room: fill it now (unpaced), or queue it for a
 * pacing slot; with nothing to do it may leave. */
static void sess_fill(struct blast_sess *s)
{
	struct blast *b = s->b;
	if (s->state == BS_QUIT)
		return;
	if (!sess_room(s)) {
		sess_idle_end(s);
		return;
	}
	if (b->o->rate <= 0) {
		while (sess_room(s))
			issue(s);
		return;
	}
	if (!s->queued)
		wait_append(s);
	pace_run(b);
}

/* pace_arm - wake the pacing queue at pace_next_ns. */
static void pace_arm(struct blast *b)
{
	struct io_uring_sqe *sqe = loop_sqe(b->loop, &b->pace_io, LOOP_OP_USER);
	b->pace_ts.tv_sec = (long long)(b->pace_next_ns / 1000000000ull);
	b->pace_ts.tv_nsec = (long long)(b->pace_next_ns % 1000000000ull);
	io_uring_prep_timeout(sqe, &b->pace_ts, 0, IORING_TIMEOUT_ABS);
	loop_tag(b->loop, sqe, &b->pace_io, LOOP_OP_USER);
	b->pace_armed = true;
}

/* pace_run - give due slots to waiting sessions, oldest first. */
static void pace_run(struct blast *b)
{
	uint64_t now = rp_mono_ns();
	if (b->pace_next_ns + PACE_SLACK_NS < now)
		b->pace_next_ns = now; /* behind (no session was free): no burst */
	struct rp_list *first;
	while ((first = rp_list_first(&b->waiting)) && b->pace_next_ns <= now) {
		struct blast_sess *s = rp_list_entry(first, struct blast_sess, wait_link);
		wait_unlink(s);
		issue(s);
		b->pace_next_ns += b->pace_gap_ns * s->job.count;
		if (sess_room(s))
			wait_append(s); /* pipelining: room for more, after the others */
	}
	if (!rp_list_empty(&b->waiting) && !b->pace_armed)
		pace_arm(b);
}

/* pace_cqe - the pacing timeout fired: hand out due slots. */
static void pace_cqe(struct loop_io *io, const struct loop_cqe *c)
{
	struct blast *b = RP_CONTAINER_OF(io, struct blast, pace_io);
	(void)c; /* -ETIME: the deadline passed */
	b->pace_armed = false;
	pace_run(b);
}

/* loop_done - --handshakes: one more session got ready; it quits now and
 * is replaced when released. */
static void loop_done(struct blast_sess *s)
{
	struct blast *b = s->b;
	b->loop_sessions++;
	b->loop_last_ns = rp_mono_ns();
	sess_quit(s);
	if (b->o->handshakes && b->loop_sessions >= b->o->handshakes)
		begin_stop(b);
}

/* hold_add - --hold: s stays idle until the end; the first time every
 * --connections session is held, one line on stderr says so (bench/run
 * waits for it before measuring). */
static void hold_add(struct blast_sess *s)
{
	struct blast *b = s->b;
	s->held = true;
	b->held++;
	b->held_peak = RP_MAX(b->held_peak, b->held);
	if (b->held == b->o->connections && !b->all_held_ns) {
		b->all_held_ns = rp_mono_ns();
		fprintf(stderr, "ringpost-blast: holding %u sessions\n", b->o->connections);
	}
}

/* blast_sess_ready - the handshake is done: issue now, queue for a pacing
 * slot, or quit (--handshakes), or stay idle (--hold). */
void blast_sess_ready(struct blast_sess *s)
{
	const struct blast_opts *o = s->b->o;
	rp_assert(!s->tx_n);
	loop_timer_disarm(s->b->loop, &s->timer);
	set_state(s, BS_READY);
	if (s->b->stopping) {
		sess_quit(s);
		return;
	}
	if (o->handshake_loop) {
		loop_done(s);
		return;
	}
	if (o->hold) {
		hold_add(s);
		return;
	}
	sess_fill(s);
}

/* blast_sess_fail_msgs - count n messages of the oldest transaction as failed. */
void blast_sess_fail_msgs(struct blast_sess *s, uint32_t n, const char *key)
{
	struct blast_tx *t = tx_oldest(s);
	n = RP_MIN(n, t->count - t->failed);
	t->failed += n;
	if (n)
		count_errors(s->b, key, n);
}

/* blast_sess_done - count the outcome and its latency; the session takes
 * the next message (or leaves when the run is over). */
void blast_sess_done(struct blast_sess *s, int code)
{
	struct blast *b = s->b;
	rp_assert(s->state == BS_BUSY);
	struct blast_tx *t = tx_oldest(s);
	uint32_t rest = t->count - t->failed;
	if (code / 100 == 2) {
		b->accepted += rest;
		uint64_t us = (rp_mono_ns() - t->start_ns) / 1000;
		for (uint32_t i = 0; i < rest; i++)
			histo_add(&b->lat, us);
	} else if (code >= 200 && code < 600) {
		b->err_code[code] += rest;
	} else {
		count_errors(b, "protocol", rest);
	}
	tx_pop(s);
	if (!s->tx_n)
		set_state(s, BS_READY);
	if (b->stopping && b->ended == b->issued)
		finish(b); /* quits every idle session, s too */
	sess_fill(s);
}

/* blast_sess_retire - no new transactions on s; it leaves once idle. */
void blast_sess_retire(struct blast_sess *s)
{
	s->retiring = true;
	if (s->queued)
		wait_unlink(s);
}

/* blast_sess_fail - count, end every transaction in flight, close. */
void blast_sess_fail(struct blast_sess *s, const char *what)
{
	struct blast *b = s->b;
	if (s->state == BS_QUIT)
		return;
	if (!s->tx_n)
		count_error(b, what);
	if (s->tls_started && !s->tls_up)
		b->tls_failed++;
	bool ended = s->tx_n > 0;
	while (s->tx_n) {
		struct blast_tx *t = tx_oldest(s);
		count_errors(b, what, t->count - t->failed);
		tx_pop(s);
	}
	if (s->queued)
		wait_unlink(s);
	set_state(s, BS_QUIT);
	loop_timer_disarm(b->loop, &s->timer);
	sess_abort(s);
	if (ended && b->stopping && b->ended == b->issued)
		finish(b);
}

/* on_connected - the connect ended: start the mode, or count "connect" and retry later. */
static void on_connected(struct conn *c, int err)
{
	struct blast_sess *s = c->owner;
	struct blast *b = s->b;
	b->nconnecting--;
	s->connect_done = true;
	if (s->state != BS_CONNECTING)
		return; /* the run ended meanwhile */
	if (err) {
		count_error(b, "connect");
		set_state(s, BS_QUIT);
		conn_close(c);
		if (loop_now_ms(b->loop) - b->last_connect_ok_ms > GIVE_UP_MS) {
			fprintf(stderr, "ringpost-blast: cannot connect to %s: %s\n",
			        b->o->server_text, strerror(-err));
			b->unreachable = !b->ever_connected;
			begin_stop(b);
			finish(b);
		}
		return;
	}
	s->ever_connected = true;
	b->ever_connected = true;
	b->last_connect_ok_ms = loop_now_ms(b->loop);
	set_state(s, BS_HANDSHAKE);
	blast_sess_wait(s);
	b->o->mode->start(s);
	if (b->o->tls_implicit)
		blast_sess_tls_start(s); /* the greeting comes through TLS */
	open_more(b);
}

/* on_data - reply bytes go to the mode (dropped once quitting). */
static void on_data(struct conn *c)
{
	struct blast_sess *s = c->owner;
	tls_harvest(s);
	if (s->state == BS_QUIT) {
		buf_consume(&c->in, buf_used(&c->in));
		return;
	}
	s->b->o->mode->data(s);
}

/* on_closed - the server went away: "lost" (or "tls-<error>" when TLS
 * failed) unless idle or leaving. */
static void on_closed(struct conn *c, int err)
{
	struct blast_sess *s = c->owner;
	char key[16] = "lost";
	log_debug("blast session %u: closed by the server in %s (%s)", c->io.slot,
	          state_names[s->state], err ? strerror(-err) : "eof");
	tls_harvest(s);
	enum tls_error te = conn_tls_error(c);
	if (te)
		snprintf(key, sizeof(key), "tls-%s", tls_error_name(te));
	if ((te == TLS_E_VERIFY || te == TLS_E_HANDSHAKE) && !s->b->tls_handshakes) {
		/* No handshake ever worked: the next one will not either. */
		blast_run_fatal(s, key, tls_error_text(c->tls));
		return;
	}
	if (s->held && !s->b->stopping)
		s->b->idle_closed++;
	if (s->state == BS_BUSY || s->state == BS_HANDSHAKE)
		blast_sess_fail(s, key);
	else
		sess_quit(s);
}

/* on_tls_ready - the handshake completed: count it, then the mode goes on. */
static void on_tls_ready(struct conn *c)
{
	struct blast_sess *s = c->owner;
	struct blast *b = s->b;
	uint64_t now = rp_mono_ns();
	if (s->state == BS_QUIT)
		return; /* abandoned: our Finished will not leave */
	s->tls_up = true;
	b->tls_handshakes++;
	if (tls_resumed(c->tls))
		b->tls_resumed++;
	b->tls_last_ns = now;
	histo_add(&b->tls_lat, (now - s->tls_start_ns) / 1000);
	if (b->o->mode->tls_ready)
		b->o->mode->tls_ready(s);
}

/* reconnect_tick - retry connects after a failure. */
static void reconnect_tick(struct loop_timer *t)
{
	open_more(RP_CONTAINER_OF(t, struct blast, reconnect));
}

/* on_released - free the session; replace it while the run goes on. */
static void on_released(struct conn *c)
{
	struct blast_sess *s = c->owner;
	struct blast *b = s->b;
	loop_timer_disarm(b->loop, &s->timer);
	rp_assert(!s->queued);
	/* tx_n > 0 only after a second signal closed busy sessions: those
	 * transactions are abandoned, neither accepted nor failed. */
	if (b->o->mode->release)
		b->o->mode->release(s);
	if (s->held)
		b->held--;
	free(s->tx);
	rp_list_del(&s->link);
	b->nsess--;
	if (!s->connect_done)
		b->nconnecting--; /* closed while connecting: connected never ran */
	bool worked = s->ever_connected;
	free(s);
	if (b->finished) {
		if (!b->nsess)
			loop_stop(b->loop);
		return;
	}
	if (b->stopping)
		return;
	/* A lost session is replaced at once; a failed connect waits a little. */
	if (worked)
		open_more(b);
	else if (!loop_timer_armed(&b->reconnect))
		loop_timer_arm(b->loop, &b->reconnect, RECONNECT_MS, reconnect_tick);
}

static const struct conn_ops blast_conn_ops = {
	.connected = on_connected,
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
	.tls_ready = on_tls_ready,
};

/* sess_open - one more session; false when no socket could be made. */
static bool sess_open(struct blast *b)
{
	struct blast_sess *s = xcalloc(1, sizeof(*s) + b->o->mode->state_size);
	s->b = b;
	s->tx = xcalloc(b->o->pipeline, sizeof(*s->tx));
	conn_init(&s->conn, b->loop, &blast_conn_ops, s);
	int rc = conn_connect(&s->conn, (const struct sockaddr *)&b->o->server, b->o->server_len,
	                      CONNECT_TIMEOUT_MS);
	if (rc < 0) {
		log_warn("blast: cannot create a socket: %s", strerror(-rc));
		count_error(b, "connect");
		free(s->tx);
		free(s);
		return false;
	}
	set_state(s, BS_CONNECTING);
	rp_list_add(&b->sessions, &s->link);
	b->nsess++;
	b->nconnecting++;
	return true;
}

/* open_more - connect until --connections sessions exist (MAX_CONNECTING at a time). */
static void open_more(struct blast *b)
{
	while (!b->stopping && b->nsess < b->o->connections && b->nconnecting < MAX_CONNECTING) {
		if (!sess_open(b)) {
			if (!loop_timer_armed(&b->reconnect))
				loop_timer_arm(b->loop, &b->reconnect, RECONNECT_MS,
				               reconnect_tick);
			return;
		}
	}
}

/* ---- the end of the run ------------------------------------------------ */

/* drain_timeout - sessions still open after the end are shut down; those
 * still there one period later are closed. */
static void drain_timeout(struct loop_timer *t)
{
	struct blast *b = RP_CONTAINER_OF(t, struct blast, drain);
	bool last = b->drained++ > 0;
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &b->sessions)
	{
		struct blast_sess *s = rp_list_entry(pos, struct blast_sess, link);
		set_state(s, BS_QUIT);
		if (last)
			conn_close(&s->conn);
		else
			sess_abort(s);
	}
	if (!last && !rp_list_empty(&b->sessions))
		loop_timer_arm(b->loop, &b->drain, DRAIN_MS, drain_timeout);
}

/* quit_idle - every session that is not busy says QUIT. A TLS handshake
 * in progress (with --handshakes, any session still greeting) is let
 * finish: the session quits once ready, or the drain ends it. Cut off, the
 * server would count a failed handshake. */
static void quit_idle(struct blast *b)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &b->sessions)
	{
		struct blast_sess *s = rp_list_entry(pos, struct blast_sess, link);
		bool greeting = s->state == BS_HANDSHAKE &&
		                (b->o->handshake_loop || (s->tls_started && !s->tls_up));
		if (s->state != BS_BUSY && !greeting)
			sess_quit(s);
	}
}

/* finish - nothing in flight and nothing more to send: everyone leaves. */
static void finish(struct blast *b)
{
	if (b->finished)
		return;
	b->finished = true;
	b->stopping = true;
	if (!b->last_ns)
		b->last_ns = rp_mono_ns();
	quit_idle(b);
	loop_timer_disarm(b->loop, &b->reconnect);
	loop_timer_disarm(b->loop, &b->deadline);
	loop_timer_arm(b->loop, &b->drain, DRAIN_MS, drain_timeout);
	if (!b->nsess)
		loop_stop(b->loop);
}

/* begin_stop - no new transactions; idle sessions leave now, busy ones after. */
static void begin_stop(struct blast *b)
{
	if (b->stopping)
		return;
	b->stopping = true;
	quit_idle(b);
	if (b->ended == b->issued)
		finish(b);
}

/* deadline_hit - --duration has passed. */
static void deadline_hit(struct loop_timer *t)
{
	begin_stop(RP_CONTAINER_OF(t, struct blast, deadline));
}

/* sig_arm - read the next SIGINT/SIGTERM from the signalfd. */
static void sig_arm(struct blast *b)
{
	struct io_uring_sqe *sqe = loop_sqe(b->loop, &b->sig_io, LOOP_OP_READ);
	io_uring_prep_read(sqe, b->sigfd, &b->siginfo, sizeof(b->siginfo), 0);
	loop_tag(b->loop, sqe, &b->sig_io, LOOP_OP_READ);
}

/* sig_cqe - first signal: stop starting messages; second: stop now. */
static void sig_cqe(struct loop_io *io, const struct loop_cqe *c)
{
	struct blast *b = RP_CONTAINER_OF(io, struct blast, sig_io);
	if (c->res != (int)sizeof(b->siginfo))
		return; /* cancelled at exit */
	if (++b->signals >= 2) {
		finish(b);
		drain_timeout(&b->drain);
	} else {
		begin_stop(b);
	}
	sig_arm(b);
}

/* progress_tick - one live line on stderr per second. */
static void progress_tick(struct loop_timer *t)
{
	struct blast *b = RP_CONTAINER_OF(t, struct blast, progress);
	uint64_t errs = b->ended - b->accepted;
	fprintf(stderr, "\r[%6.1fs] sent %llu  accepted %llu  %llu/s  failed %llu  sessions %u   ",
	        (double)(loop_now_ms(b->loop) - b->start_ms) / 1000.0,
	        (unsigned long long)b->issued, (unsigned long long)b->accepted,
	        (unsigned long long)((b->ended - b->progress_ended) * 1000 / PROGRESS_MS),
	        (unsigned long long)errs, b->nsess);
	b->progress_ended = b->ended;
	loop_timer_arm(b->loop, &b->progress, PROGRESS_MS, progress_tick);
}

/* ---- the run ----------------------------------------------------------- */

/* report_fill - the counters as a report. */
static void report_fill(struct blast *b, struct blast_report *rep)
{
	memset(rep, 0, sizeof(*rep));
	rep->messages = b->ended;
	rep->requests = b->requests;
	rep->accepted = b->accepted;
	rep->seconds =
	    b->first_ns && b->last_ns > b->first_ns ? (double)(b->last_ns - b->first_ns) / 1e9 : 0;
	struct histo *h = &b->lat;
	histo_summarize(&h, 1, &rep->latency);
	for (unsigned code = 0; code < 600; code++) {
		if (!b->err_code[code])
			continue;
		snprintf(rep->errors[rep->nerr].key, sizeof(rep->errors[0].key), "%u", code);
		rep->errors[rep->nerr++].n = b->err_code[code];
	}
	for (unsigned i = 0; i < b->nerr_keys; i++) {
		memcpy(rep->errors[rep->nerr].key, b->err_keys[i].key, sizeof(rep->errors[0].key));
		rep->errors[rep->nerr++].n = b->err_keys[i].n;
	}
	rep->tls_handshakes = b->tls_handshakes;
	rep->tls_resumed = b->tls_resumed;
	rep->tls_failed = b->tls_failed;
	if (b->tls_last_ns > b->tls_first_ns)
		rep->tls_seconds = (double)(b->tls_last_ns - b->tls_first_ns) / 1e9;
	h = &b->tls_lat;
	histo_summarize(&h, 1, &rep->tls_latency);
	rep->loop_sessions = b->loop_sessions;
	if (b->loop_last_ns > b->start_ns)
		rep->loop_seconds = (double)(b->loop_last_ns - b->start_ns) / 1e9;
	rep->held_peak = b->held_peak;
	rep->idle_closed = b->idle_closed;
	if (b->all_held_ns)
		rep->all_held_s = (double)(b->all_held_ns - b->start_ns) / 1e9;
}

/* blast_run - set up the loop, pacer and signals, run, fill the report. */
bool blast_run(const struct blast_opts *o, struct blast_report *rep)
{
	struct blast *b = xcalloc(1, sizeof(*b));
	rp_list_init(&b->sessions);
	rp_list_init(&b->waiting);
	b->o = o;
	b->rand.s = o->seed ? o->seed : rp_mono_ns();
	b->size_floor = blast_msg_init(o);
	if (o->size_min < b->size_floor)
		fprintf(stderr,
		        "ringpost-blast: messages smaller than %u bytes are raised to %u "
		        "(the headers alone take that much)\n",
		        b->size_floor, b->size_floor);
	tls_setup(b);
	b->log_min = log((double)RP_MAX(o->size_min, 1u));
	b->log_max = log((double)RP_MAX(o->size_max, 1u));

	struct loop_config lc = {
		.sq_entries = 4096, .cq_entries = 65536, .buf_count = 1024, .buf_size = 4096
	};
	b->loop = loop_new(&lc);
	if (!b->loop)
		rp_die(RP_EX_OSERR, "cannot create an io_uring: %s", strerror(errno));
	loop_io_register(b->loop, &b->pace_io, pace_cqe);
	b->pace_gap_ns = o->rate > 0 ? (uint64_t)(1e9 / o->rate) : 0;

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	b->sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (b->sigfd < 0)
		rp_die(RP_EX_OSERR, "signalfd: %s", strerror(errno));
	loop_io_register(b->loop, &b->sig_io, sig_cqe);
	sig_arm(b);

	b->start_ms = loop_now_ms(b->loop);
	b->start_ns = rp_mono_ns();
	b->last_connect_ok_ms = b->start_ms;
	if (o->duration_ms)
		loop_timer_arm(b->loop, &b->deadline, o->duration_ms, deadline_hit);
	if (o->progress)
		loop_timer_arm(b->loop, &b->progress, PROGRESS_MS, progress_tick);
	open_more(b);
	loop_run(b->loop);
	if (o->progress) {
		progress_tick(&b->progress);
		fputc('\n', stderr);
	}
	report_fill(b, rep);
	bool reached = !b->unreachable && !b->fatal;
	/* Every session is released; exiting the ring cancels the pacer and
	 * the signal read, whose buffers are in b. */
	loop_free(b->loop);
	close(b->sigfd);
	buf_free(&b->scratch);
	blast_msg_free();
	for (unsigned i = 0; i < b->ntickets; i++)
		tls_session_free(b->tickets[i]);
	free(b->tickets);
	tls_ctx_unref(b->tls);
	free(b);
	return reached;
}
