/* sink.c - ringpost-sink: an io_uring SMTP receiver that takes far more mail
 * than a relay can send, and counts it (bench/README.md is the contract).
 *
 * main binds every --listen address once per loop (SO_REUSEPORT), starts
 * --threads loop threads, then only waits for signals and timer ticks to
 * print JSON lines: SIGUSR1 -> stdout; every --stats-interval -> the stats
 * file; SIGTERM/SIGINT -> stop the loops, the final line, exit 0.
 */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"

#define ADDRESS_WAIT_MS 2000

struct sink_listener {
	struct loop_io io;
	struct sink_loop *sl;
	const struct sink_addr *addr;
	int fd;
	bool armed;              /* a multishot accept is in flight */
	bool closing;            /* stopping: never re-arm */
	struct loop_timer retry; /* re-arm after descriptor exhaustion */
};

/* usage - the option summary. */
static void usage(FILE *f)
{
	fputs("usage: ringpost-sink [options] --listen HOST:PORT [--listen HOST:PORT ...]\n"
	      "  --threads N            event loops (default 1)\n"
	      "  --stats-file PATH      append a JSON line every --stats-interval and at exit\n"
	      "  --stats-interval MS    default 1000; 0 = only at exit\n"
	      "  --save DIR             write each message to DIR/<n>.eml\n"
	      "  --latency-header NAME  default X-Bench-Sent\n"
	      "  --reply-delay MS       delay every reply\n"
	      "  --fault SPEC           connect421=P,rcpt451=P,rcpt550=P,data451=P,drop=P,\n"
	      "                         tarpit=P:MS,silence=P,drop250=P\n"
	      "  --rcpt-script CODES    per recipient address, its k-th RCPT gets the k-th code\n"
	      "  --max-rate N           accept at most N messages per second\n"
	      "  --seed N               fault injection PRNG seed\n"
	      "  --hostname NAME        name in the greeting and EHLO reply\n"
	      "  --tls-cert FILE        PEM certificate chain: offer STARTTLS (with --tls-key)\n"
	      "  --tls-key FILE         its PEM private key\n"
	      "  --tls-required         refuse MAIL before STARTTLS (530 5.7.0)\n"
	      "  --tls-implicit         TLS from the first byte (like port 465), no STARTTLS\n",
	      f);
}

/* ---- listeners --------------------------------------------------------- */

static void listener_arm(struct sink_listener *li);

/* listener_retry - re-arm the accept after descriptor exhaustion. */
static void listener_retry(struct loop_timer *t)
{
	listener_arm(RP_CONTAINER_OF(t, struct sink_listener, retry));
}

/* listener_cqe - an accepted socket becomes a session. */
static void listener_cqe(struct loop_io *io, const struct loop_cqe *c)
{
	struct sink_listener *li = RP_CONTAINER_OF(io, struct sink_listener, io);
	if (!(c->flags & IORING_CQE_F_MORE))
		li->armed = false;
	if (c->res >= 0)
		sink_session_start(li->sl, c->res);
	else if (c->res != -ECANCELED)
		log_warn("accept on %s: %s", li->addr->text, strerror(-c->res));
	/* Any completion without F_MORE means re-arm; after descriptor
	 * exhaustion wait a little rather than spin. */
	if (!li->armed && !li->closing) {
		if (c->res == -EMFILE || c->res == -ENFILE || c->res == -ENOBUFS ||
		    c->res == -ENOMEM)
			loop_timer_arm(li->sl->loop, &li->retry, 100, listener_retry);
		else
			listener_arm(li);
	}
}

/* listener_arm - a multishot accept on the listener. */
static void listener_arm(struct sink_listener *li)
{
	struct loop *l = li->sl->loop;
	struct io_uring_sqe *sqe = loop_sqe(l, &li->io, LOOP_OP_ACCEPT);
	io_uring_prep_multishot_accept(sqe, li->fd, NULL, NULL, SOCK_CLOEXEC);
	loop_tag(l, sqe, &li->io, LOOP_OP_ACCEPT);
	li->armed = true;
}

/* address_free - nobody else listens on a: the loops' SO_REUSEPORT sockets
 * would otherwise silently share the port with another process's. A
 * listener that is going away (a killed sink's, held by its ring until the
 * kernel tears that down) gets ADDRESS_WAIT_MS to disappear. */
static void address_free(const struct sink_addr *a)
{
	int one = 1;
	for (unsigned waited = 0;; waited += 100) {
		int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			rp_die(RP_EX_OSERR, "cannot create a socket for %s: %s", a->text,
			       strerror(errno));
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* TIME_WAIT is fine */
		int rc = bind(fd, (const struct sockaddr *)&a->ss, a->len);
		int err = errno;
		close(fd);
		if (rc == 0)
			return;
		if (err != EADDRINUSE || waited >= ADDRESS_WAIT_MS)
			rp_die(RP_EX_OSERR, "cannot listen on %s: %s", a->text, strerror(err));
		usleep(100 * 1000);
	}
}

/* listen_on - a bound, listening SO_REUSEPORT socket; exits on failure. */
static int listen_on(const struct sink_addr *a)
{
	int one = 1;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		rp_die(RP_EX_OSERR, "cannot create a socket for %s: %s", a->text, strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, 65535) < 0)
		rp_die(RP_EX_OSERR, "cannot listen on %s: %s", a->text, strerror(errno));
	return fd;
}

/* ---- loop threads ------------------------------------------------------ */

/* loop_started - tell main that this loop is up (or could not start). */
static void loop_started(struct sink_loop *sl)
{
	struct sink *sk = sl->sk;
	pthread_mutex_lock(&sk->start_lock);
	sl->started = true;
	sk->started++;
	pthread_cond_signal(&sk->start_cond);
	pthread_mutex_unlock(&sk->start_lock);
}

/* loop_thread - one event loop: its ring, its listeners, its sessions. */
static void *loop_thread(void *arg)
{
	struct sink_loop *sl = arg;
	char name[16];
	snprintf(name, sizeof(name), "sink%u", sl->index);
	log_set_thread(name);
	/* 8 MB of receive buffers: a 2 KB message and its commands fit in one;
	 * a dry ring only costs a re-armed recv (conn.c). */
	struct loop_config lc = {
		.sq_entries = 4096, .cq_entries = 65536, .buf_count = 1024, .buf_size = 8192
	};
	sl->loop = loop_new(&lc);
	if (!sl->loop) {
		sl->start_err = errno;
		loop_started(sl);
		return NULL;
	}
	for (unsigned i = 0; i < sl->sk->opt.nlisten; i++) {
		struct sink_listener *li = &sl->listeners[i];
		loop_io_register(sl->loop, &li->io, listener_cqe);
		listener_arm(li);
	}
	sink_sweep_start(sl);
	loop_started(sl);
	loop_run(sl->loop);
	return NULL;
}

/* stop_run - on the loop thread: stop listening, make loop_run return.
 * The ring is torn down by the kernel after exit, asynchronously; its
 * pending accepts would keep the listening sockets alive until then, and a
 * sink started right after this one could share the port with them. A
 * shut-down listener stops listening at once. */
static void stop_run(struct mq_item *item, void *ctx)
{
	struct sink_loop *sl = RP_CONTAINER_OF(item, struct sink_loop, stop_item);
	for (unsigned i = 0; i < sl->sk->opt.nlisten; i++) {
		struct sink_listener *li = &sl->listeners[i];
		li->closing = true;
		loop_timer_disarm(sl->loop, &li->retry);
		shutdown(li->fd, SHUT_RDWR);
	}
	loop_stop(ctx);
}

/* loops_start - bind every address per loop, start the threads, wait until all run. */
static void loops_start(struct sink *sk)
{
	for (unsigned k = 0; k < sk->opt.nlisten; k++)
		address_free(&sk->opt.listen[k]);
	for (unsigned i = 0; i < sk->opt.threads; i++) {
		struct sink_loop *sl = &sk->loops[i];
		sl->sk = sk;
		sl->index = i;
		rp_list_init(&sl->sessions);
		sl->rand.s = sk->opt.seed + i * 0x9e3779b97f4a7c15ull;
		sl->listeners = xcalloc(sk->opt.nlisten, sizeof(*sl->listeners));
		for (unsigned k = 0; k < sk->opt.nlisten; k++) {
			sl->listeners[k].sl = sl;
			sl->listeners[k].addr = &sk->opt.listen[k];
			sl->listeners[k].fd = listen_on(&sk->opt.listen[k]);
		}
	}
	for (unsigned i = 0; i < sk->opt.threads; i++) {
		int rc = pthread_create(&sk->loops[i].thread, NULL, loop_thread, &sk->loops[i]);
		if (rc)
			rp_die(RP_EX_OSERR, "cannot start a thread: %s", strerror(rc));
	}
	pthread_mutex_lock(&sk->start_lock);
	while (sk->started < sk->opt.threads)
		pthread_cond_wait(&sk->start_cond, &sk->start_lock);
	pthread_mutex_unlock(&sk->start_lock);
	for (unsigned i = 0; i < sk->opt.threads; i++)
		if (sk->loops[i].start_err)
			rp_die(RP_EX_OSERR, "cannot start event loop %u (io_uring): %s", i,
			       strerror(sk->loops[i].start_err));
}

/* loops_stop - stop every loop and wait for its thread. */
static void loops_stop(struct sink *sk)
{
	for (unsigned i = 0; i < sk->opt.threads; i++)
		mq_push(loop_inbox(sk->loops[i].loop), &sk->loops[i].stop_item, stop_run);
	for (unsigned i = 0; i < sk->opt.threads; i++)
		pthread_join(sk->loops[i].thread, NULL);
}

/* ---- options ----------------------------------------------------------- */

/* parse_u64_opt - a number option or exit 64 naming it. */
static uint64_t parse_u64_opt(const char *name, const char *v)
{
	uint64_t n;
	if (!rp_parse_u64(v, &n))
		rp_die(RP_EX_USAGE, "--%s: not a number: '%s'", name, v);
	return n;
}

/* Long options (getopt_long values above any character). */
enum sink_opt {
	O_LISTEN = 256,
	O_THREADS,
	O_STATS_FILE,
	O_STATS_INTERVAL,
	O_SAVE,
	O_LATENCY,
	O_DELAY,
	O_FAULT,
	O_SCRIPT,
	O_RATE,
	O_SEED,
	O_HOSTNAME,
	O_TLS_CERT,
	O_TLS_KEY,
	O_TLS_REQUIRED,
	O_TLS_IMPLICIT,
	O_HELP
};

static const struct option sink_longopts[] = {
	{ "listen", required_argument, NULL, O_LISTEN },
	{ "threads", required_argument, NULL, O_THREADS },
	{ "stats-file", required_argument, NULL, O_STATS_FILE },
	{ "stats-interval", required_argument, NULL, O_STATS_INTERVAL },
	{ "save", required_argument, NULL, O_SAVE },
	{ "latency-header", required_argument, NULL, O_LATENCY },
	{ "reply-delay", required_argument, NULL, O_DELAY },
	{ "fault", required_argument, NULL, O_FAULT },
	{ "rcpt-script", required_argument, NULL, O_SCRIPT },
	{ "max-rate", required_argument, NULL, O_RATE },
	{ "seed", required_argument, NULL, O_SEED },
	{ "hostname", required_argument, NULL, O_HOSTNAME },
	{ "tls-cert", required_argument, NULL, O_TLS_CERT },
	{ "tls-key", required_argument, NULL, O_TLS_KEY },
	{ "tls-required", no_argument, NULL, O_TLS_REQUIRED },
	{ "tls-implicit", no_argument, NULL, O_TLS_IMPLICIT },
	{ "help", no_argument, NULL, O_HELP },
	{ NULL, 0, NULL, 0 },
};

/* listen_opt - one more --listen address. */
static void listen_opt(struct sink_opts *o, const char *v)
{
	o->listen = xrealloc(o->listen, (o->nlisten + 1) * sizeof(*o->listen));
	struct sink_addr *a = &o->listen[o->nlisten++];
	memset(a, 0, sizeof(*a));
	snprintf(a->text, sizeof(a->text), "%s", v);
	if (!bench_parse_hostport(v, &a->ss, &a->len))
		rp_die(RP_EX_USAGE, "--listen: expected IP:PORT or [IPv6]:PORT, got '%s'", v);
}

/* apply_opt - one option c with its argument v; bad usage exits 64. */
static void apply_opt(struct sink_opts *o, int c, const char *v)
{
	char err[200];
	switch (c) {
	case O_LISTEN:
		listen_opt(o, v);
		break;
	case O_THREADS:
		o->threads = (unsigned)parse_u64_opt("threads", v);
		if (o->threads < 1 || o->threads > 256)
			rp_die(RP_EX_USAGE, "--threads: 1..256");
		break;
	case O_STATS_FILE:
		o->stats_file = v;
		break;
	case O_STATS_INTERVAL:
		o->stats_interval_ms = parse_u64_opt("stats-interval", v);
		break;
	case O_SAVE:
		o->save_dir = v;
		break;
	case O_LATENCY:
		o->latency_header = v;
		break;
	case O_DELAY:
		o->reply_delay_ms = parse_u64_opt("reply-delay", v);
		break;
	case O_FAULT:
		if (!sink_faults_parse(v, &o->faults, err, sizeof(err)))
			rp_die(RP_EX_USAGE, "--fault: %s", err);
		break;
	case O_SCRIPT:
		free(o->script);
		if (!sink_script_parse(v, &o->script, &o->nscript))
			rp_die(RP_EX_USAGE, "--rcpt-script: expected codes like 451,451,250");
		break;
	case O_RATE:
		o->max_rate = (double)parse_u64_opt("max-rate", v);
		break;
	case O_SEED:
		o->seed = parse_u64_opt("seed", v);
		break;
	case O_HOSTNAME:
		snprintf(o->hostname, sizeof(o->hostname), "%s", v);
		break;
	case O_TLS_CERT:
		o->tls_cert = v;
		break;
	case O_TLS_KEY:
		o->tls_key = v;
		break;
	case O_TLS_REQUIRED:
		o->tls_required = true;
		break;
	case O_TLS_IMPLICIT:
		o->tls_implicit = true;
		break;
	case O_HELP:
		usage(stdout);
		exit(RP_EX_OK);
	default:
		usage(stderr);
		exit(RP_EX_USAGE);
	}
}

/* parse_args - options into sk->opt; bad usage exits 64. */
static void parse_args(struct sink *sk, int argc, char **argv)
{
	struct sink_opts *o = &sk->opt;
	int c;
	o->threads = 1;
	o->stats_interval_ms = 1000;
	o->latency_header = "X-Bench-Sent";
	if (gethostname(o->hostname, sizeof(o->hostname) - 1) < 0 || !o->hostname[0])
		snprintf(o->hostname, sizeof(o->hostname), "sink.bench.test");
	while ((c = getopt_long(argc, argv, "", sink_longopts, NULL)) != -1)
		apply_opt(o, c, optarg);
	if (optind < argc)
		rp_die(RP_EX_USAGE, "unexpected argument '%s'", argv[optind]);
	if (!o->nlisten) {
		usage(stderr);
		exit(RP_EX_USAGE);
	}
	if (!o->tls_cert != !o->tls_key)
		rp_die(RP_EX_USAGE, "--tls-cert and --tls-key go together");
	if ((o->tls_required || o->tls_implicit) && !o->tls_cert)
		rp_die(RP_EX_USAGE,
		       "--tls-required and --tls-implicit need --tls-cert and --tls-key");
	if (o->save_dir && mkdir(o->save_dir, 0755) < 0 && errno != EEXIST)
		rp_die(RP_EX_CANTCREAT, "--save: cannot create %s: %s", o->save_dir,
		       strerror(errno));
	if (o->save_dir && access(o->save_dir, W_OK) < 0)
		rp_die(RP_EX_CANTCREAT, "--save: cannot write to %s: %s", o->save_dir,
		       strerror(errno));
}

/* tls_setup - the server context for --tls-cert/--tls-key; exits 66 when
 * they cannot be used. One context serves every loop (tls.h). */
static void tls_setup(struct sink *sk)
{
	char err[300];
	if (!sk->opt.tls_cert)
		return;
	struct tls_server_config sc = { .cert_file = sk->opt.tls_cert,
		                        .key_file = sk->opt.tls_key,
		                        .min_version = TLS_V1_2 };
	sk->tls = tls_ctx_new_server(&sc, err, sizeof(err));
	if (!sk->tls)
		rp_die(RP_EX_NOINPUT, "%s", err);
}

/* ---- stats output ------------------------------------------------------ */

/* write_all - one JSON line in one write (appends stay whole lines). */
static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* emit - one stats line to fd. */
static void emit(struct sink *sk, int fd)
{
	struct buf b = { 0 };
	sink_stats_json(sk, &b);
	write_all(fd, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

/* same_file - whether two descriptors are the same open file (no double lines). */
static bool same_file(int a, int b)
{
	struct stat sa, sb;
	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* ms_to_ts - a relative timeout for sigtimedwait. */
static struct timespec ms_to_ts(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
		               .tv_nsec = (long)(ms % 1000) * 1000000 };
	return ts;
}

/* wait_signals - print periodic lines and SIGUSR1 lines until SIGTERM/SIGINT. */
static void wait_signals(struct sink *sk, const sigset_t *set, int stats_fd)
{
	uint64_t interval = stats_fd >= 0 ? sk->opt.stats_interval_ms : 0;
	uint64_t next = rp_mono_ms() + interval;
	for (;;) {
		int sig;
		if (interval) {
			uint64_t now = rp_mono_ms();
			if (now >= next) {
				emit(sk, stats_fd);
				next += interval;
				if (next <= now)
					next = now + interval;
				continue;
			}
			struct timespec ts = ms_to_ts(next - now);
			sig = sigtimedwait(set, NULL, &ts);
		} else {
			sig = sigwaitinfo(set, NULL);
		}
		if (sig < 0)
			continue; /* EAGAIN (the tick) or EINTR */
		if (sig == SIGUSR1) {
			emit(sk, STDOUT_FILENO);
			continue;
		}
		return;
	}
}

/* The process state. It lives until exit: at the final line the stopped
 * loops may still hold open sessions, which the kernel reclaims with the
 * process (kept reachable here, so a leak checker does not report them). */
static struct sink *volatile sink_root; /* volatile: the store must stay */

/* main - parse, bind, start the loops, print stats until told to stop. */
int main(int argc, char **argv)
{
	struct sink *sk = sink_root = xcalloc(1, sizeof(*sk));
	parse_args(sk, argc, argv);
	tls_setup(sk);
	uint64_t nofile = rp_raise_nofile();
	pthread_mutex_init(&sk->start_lock, NULL);
	pthread_cond_init(&sk->start_cond, NULL);
	sk->loops = xcalloc(sk->opt.threads, sizeof(*sk->loops));
	if (sk->opt.script)
		sk->script = sink_script_new();
	sink_stats_init(sk);
	sink_session_setup(sk);

	sk->unacked_fd = -1;
	if (sk->opt.save_dir && sk->opt.faults.drop250 > 0) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/unacked", sk->opt.save_dir);
		sk->unacked_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (sk->unacked_fd < 0)
			rp_die(RP_EX_CANTCREAT, "--save: cannot open %s: %s", path,
			       strerror(errno));
	}

	int stats_fd = -1;
	if (sk->opt.stats_file) {
		stats_fd =
		    open(sk->opt.stats_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (stats_fd < 0)
			rp_die(RP_EX_CANTCREAT, "--stats-file: cannot open %s: %s",
			       sk->opt.stats_file, strerror(errno));
	}

	/* Signals are taken by main alone; the loops inherit the blocked mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	loops_start(sk);
	fprintf(stderr, "ringpost-sink: listening on");
	for (unsigned i = 0; i < sk->opt.nlisten; i++)
		fprintf(stderr, "%s %s", i ? "," : "", sk->opt.listen[i].text);
	fprintf(stderr, " (%u thread%s, descriptor limit %llu)\n", sk->opt.threads,
	        sk->opt.threads == 1 ? "" : "s", (unsigned long long)nofile);

	wait_signals(sk, &set, stats_fd);
	loops_stop(sk);
	log_flush();
	if (stats_fd >= 0)
		emit(sk, stats_fd);
	if (stats_fd < 0 || !same_file(stats_fd, STDOUT_FILENO))
		emit(sk, STDOUT_FILENO);
	return RP_EX_OK;
}
