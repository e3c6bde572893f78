/* main.c - the ringpost command line: serve, and the client commands.
 *
 * Exit status: 0 on success, sysexits(3) codes on usage (64), config (78),
 * I/O (74), OS (71) and unavailable-service (69) errors, always with one
 * line on stderr naming the problem.
 */
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "priv.h"
#include "sdnotify.h"
#include "base/conn.h"
#include "base/log.h"
#include "queue/spool.h"
#include "base/util.h"
#include "shard.h"
#include "smtp_server.h"

#define AUTH_THREADS 2 /* password hashes in parallel (yescrypt: ~ms each) */
/* Locked memory one shard's rings take when made without CAP_IPC_LOCK (SQ
 * 4096, CQ 65536, a 1024-entry buffer ring: about 1.3 MiB measured on
 * Linux 6.18), with a margin. */
#define SHARD_MEMLOCK (2ull << 20)

static void usage(FILE *f)
{
	fputs("usage: ringpost serve -c FILE\n"
	      "       ringpost send -c FILE --from A --to B [--to C] [--subject S] [--text T | "
	      "--raw FILE]\n"
	      "       ringpost stats -c FILE [--json] [--watch]\n"
	      "       ringpost queue -c FILE list|show ID|retry DOMAIN|suspend DOMAIN|resume "
	      "DOMAIN|purge DOMAIN\n"
	      "       ringpost user -c FILE add|del NAME    (password on standard input)\n"
	      "       ringpost suppress -c FILE list|add ADDRESS [--reason TEXT]|del ADDRESS\n"
	      "       ringpost warmup -c FILE\n"
	      "       ringpost check-config -c FILE\n"
	      "       ringpost version\n",
	      f);
}

/* config_path - the value of -c/--config in argv, or the default. */
const char *cli_config_path(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
			return argv[i + 1];
		if (!strncmp(argv[i], "--config=", 9))
			return argv[i] + 9;
	}
	return "ringpost.conf";
}

struct config *cli_load_config(int argc, char **argv)
{
	char err[600];
	struct config *cfg = config_load(cli_config_path(argc, argv), err, sizeof(err));
	if (!cfg)
		rp_die(RP_EX_CONFIG, "%s", err);
	return cfg;
}

static int listen_on(const struct cfg_addr *a, char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create a socket for %s: %s", a->text,
		         strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->sslen) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, 4096) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- our own addresses (loop detection) -------------------------------- */

static void add_ours(struct relay *r, const struct sockaddr *sa, socklen_t len, uint16_t port)
{
	r->ours = xrealloc(r->ours, (r->nours + 1) * sizeof(*r->ours));
	struct sockaddr_storage *o = &r->ours[r->nours++];
	memset(o, 0, sizeof(*o));
	memcpy(o, sa, len);
	conn_addr_set_port(o, port);
}

/* find_ours - the addresses our listeners answer on; a wildcard listener
 * answers on every interface address. Mail routed there would loop. */
static void find_ours(struct relay *r, const struct config *cfg)
{
	const struct cfg_addr *ls[] = { &cfg->listen_submission, &cfg->listen_api,
		                        &cfg->listen_inbound,    &cfg->listen_imap,
		                        &cfg->listen_pop3,       &cfg->listen_submissions,
		                        &cfg->listen_imaps,      &cfg->listen_pop3s };
	struct ifaddrs *ifs = NULL;
	getifaddrs(&ifs);
	for (size_t i = 0; i < RP_ARRAY_LEN(ls); i++) {
		const struct cfg_addr *a = ls[i];
		if (!a->set || !a->sslen)
			continue;
		bool any =
		    a->ss.ss_family == AF_INET
		        ? ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY)
		        : IN6_IS_ADDR_UNSPECIFIED(
		              &((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
		if (!any) {
			add_ours(r, (const struct sockaddr *)&a->ss, a->sslen, a->port);
			continue;
		}
		for (struct ifaddrs *f = ifs; f; f = f->ifa_next) {
			if (!f->ifa_addr)
				continue;
			if (f->ifa_addr->sa_family == AF_INET)
				add_ours(r, f->ifa_addr, sizeof(struct sockaddr_in), a->port);
			else if (f->ifa_addr->sa_family == AF_INET6 && a->ss.ss_family == AF_INET6)
				add_ours(r, f->ifa_addr, sizeof(struct sockaddr_in6), a->port);
		}
	}
	if (ifs)
		freeifaddrs(ifs);
}

/* log_warnings - what the generation found legal but unwise, one log line each. */
static void log_warnings(const struct config_ref *cref)
{
	const char *p = buf_head(&cref->warnings);
	size_t n = buf_used(&cref->warnings);
	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t len = nl ? (size_t)(nl - p) : n;
		log_warn("config: %.*s", (int)len, p);
		p += len + (nl != NULL);
		n -= len + (nl != NULL);
	}
}

/* ---- serve ------------------------------------------------------------- */

/* log_settings - [server] log_level and log_format to the logger. */
static void log_settings(const struct config *cfg)
{
	log_set_level(cfg->log_level);
	log_set_format(cfg->log_format == CFG_LOG_JSON ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
}

/* reload - SIGHUP: the log file opened again first (logrotate renamed
 * it; even a config that no longer loads must not keep us writing to the
 * old file), then a new config generation for every shard; false (and the
 * running one kept) when the new one does not load. */
static bool reload(struct relay *r)
{
	char err[600];
	if (!log_reopen())
		log_error("reload: cannot reopen log %s: %s", r->cref->cfg->log_path,
		          strerror(errno));
	struct config *cfg = config_load(r->cref->cfg->path, err, sizeof(err));
	if (!cfg) {
		log_error("reload failed, keeping the running config: %s", err);
		return false;
	}
	const struct config *old = r->cref->cfg;
	if (strcmp(old->data_dir, cfg->data_dir) || config_shards(old) != config_shards(cfg) ||
	    strcmp(old->listen_submission.text, cfg->listen_submission.text) ||
	    strcmp(old->user, cfg->user))
		log_warn(
		    "reload: data_dir, shards, listen addresses and user change only on restart");
	log_settings(cfg);
	if (strcmp(old->log_path, cfg->log_path) && !log_open(cfg->log_path))
		log_error("reload: cannot open log %s: %s", cfg->log_path, strerror(errno));
	struct config_ref *cref = config_ref_new(cfg, err, sizeof(err));
	if (!cref) {
		log_error("reload failed, keeping the running config: %s", err);
		return false;
	}
	log_warnings(cref);
	auth_limiter_set_max(r->limiter, cfg->auth_max_failures);
	for (unsigned i = 0; i < r->nshards; i++)
		shard_reconfigure(r->shards[i], cref);
	config_ref_put(r->cref);
	r->cref = cref;
	log_info("configuration reloaded from %s", cfg->path);
	return true;
}

/* notify - one sd_notify datagram (systemd Type=notify); a failure is
 * logged and otherwise ignored: the service manager's view must never
 * stop the mail. Nothing happens without $NOTIFY_SOCKET. */
static void notify(const char *what, const char *msg)
{
	if (sdnotify_send(msg) < 0)
		log_warn("sd_notify %s to $NOTIFY_SOCKET failed: %s", what, strerror(errno));
}

/* notify_reloading - RELOADING=1 with the CLOCK_MONOTONIC time in
 * microseconds (what systemd's notify-reload wants; older managers
 * ignore it). */
static void notify_reloading(void)
{
	struct timespec ts;
	char msg[128];
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg),
	         "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=%llu",
	         (unsigned long long)ts.tv_sec * 1000000ull +
	             (unsigned long long)ts.tv_nsec / 1000);
	notify("RELOADING", msg);
}

/* bind_listeners - one SO_REUSEPORT socket per listener and shard; exits
 * 71 naming the address when one cannot be bound. */
static void bind_listeners(struct relay *r, const struct config *cfg)
{
	char err[600];
	for (unsigned k = 0; k < LISTEN_KINDS; k++)
		for (unsigned i = 0; i < 256; i++)
			r->listen_fds[k][i] = -1;
	const struct cfg_addr *listens[LISTEN_KINDS] = {
		[LISTEN_SUBMISSION] = &cfg->listen_submission,
		[LISTEN_SUBMISSIONS] = &cfg->listen_submissions,
		[LISTEN_API] = &cfg->listen_api,
		[LISTEN_INBOUND] = &cfg->listen_inbound,
		[LISTEN_IMAP] = &cfg->listen_imap,
		[LISTEN_IMAPS] = &cfg->listen_imaps,
		[LISTEN_POP3] = &cfg->listen_pop3,
		[LISTEN_POP3S] = &cfg->listen_pop3s,
	};
	for (unsigned k = 0; k < LISTEN_KINDS; k++) {
		if (!listens[k]->set)
			continue;
		for (unsigned i = 0; i < r->nshards; i++) {
			r->listen_fds[k][i] = listen_on(listens[k], err, sizeof(err));
			if (r->listen_fds[k][i] < 0)
				rp_die(RP_EX_OSERR, "%s", err);
		}
	}
}

/* memlock_hint - why io_uring may say ENOMEM: the locked-memory limit. */
static const char *memlock_hint(uint64_t limit)
{
	static char hint[200];
	snprintf(hint, sizeof(hint),
	         " (the locked-memory limit is %llu KiB: raise it, e.g. ulimit -l or "
	         "LimitMEMLOCK=, set fewer [server] shards, or start ringpost as root "
	         "with [server] user)",
	         (unsigned long long)(limit / 1024));
	return hint;
}

/* make_shards - every shard with its loop, the loops disabled: before
 * the switch, so that rings made with root's CAP_IPC_LOCK never count
 * against RLIMIT_MEMLOCK (each shard's thread enables its own later).
 * Made by a process without CAP_IPC_LOCK (not started as root) they do
 * count: the soft limit is raised as far as the hard one lets it first.
 * Exits 71 naming the shard when the kernel refuses a ring. */
static void make_shards(struct relay *r, struct config_ref *cref)
{
	uint64_t memlock = priv_raise_memlock(SHARD_MEMLOCK * r->nshards);
	for (unsigned i = 0; i < r->nshards; i++) {
		r->shards[i] = shard_new(r, i, cref);
		if (!r->shards[i])
			rp_die(RP_EX_OSERR, "cannot start shard %u (io_uring): %s%s", i,
			       strerror(errno), errno == ENOMEM ? memlock_hint(memlock) : "");
	}
}

/* drop_privileges - as the plan says: data_dir to the user, then the
 * switch; exits 73/71 naming what failed. Runs before any thread. */
static void drop_privileges(const struct priv_plan *plan, const struct config *cfg)
{
	char err[600];
	unsigned changed = 0;
	if (!plan->drop)
		return;
	if (!priv_prepare_dir(plan, cfg->data_dir, &changed, err, sizeof(err)))
		rp_die(RP_EX_CANTCREAT, "%s", err);
	if (changed)
		log_info("data_dir %s: gave %u files and directories to %s", cfg->data_dir, changed,
		         plan->name);
	if (!priv_drop(plan, err, sizeof(err)))
		rp_die(RP_EX_OSERR, "%s", err);
	log_info("running as %s (uid %u, gid %u)", plan->name, (unsigned)plan->uid,
	         (unsigned)plan->gid);
}

/* open_spool - the spool in data_dir, as the user we run as; exits 74. */
static struct spool *open_spool(struct relay *r, const struct config *cfg,
                                const struct priv_plan *plan)
{
	char err[600];
	struct spool_options so = { .dir = cfg->data_dir,
		                    .max_size = cfg->max_size,
		                    .min_free = cfg->min_free,
		                    .keep_done_ms = cfg->keep_done_ms,
		                    .suppress = cfg->suppress,
		                    .events = cfg->webhook_url[0] ? cfg->webhook_event_mask : 0,
		                    .events_max = cfg->webhook_max_backlog,
		                    .mbox_max_messages = cfg->mailbox_max_messages,
		                    .mbox_max_age_ms = cfg->mailbox_max_age_ms,
		                    .mbox_changed = shard_mbox_changed,
		                    .mbox_arg = r };
	struct spool *spool = spool_open(&so, err, sizeof(err));
	if (!spool && plan->drop)
		rp_die(RP_EX_IOERR,
		       "%s (as user %s: data_dir and every directory above it must be reachable "
		       "by %s)",
		       err, plan->name, plan->name);
	if (!spool)
		rp_die(RP_EX_IOERR, "%s", err);
	return spool;
}

/* wait_for_stop - take the signals in set until one says stop: SIGHUP
 * reloads (RELOADING=1, then READY=1 for systemd), SIGTERM and SIGINT
 * return (STOPPING=1: the drain starts). */
static void wait_for_stop(struct relay *r, const sigset_t *set)
{
	for (;;) {
		int sig = 0;
		if (sigwait(set, &sig))
			continue;
		if (sig == SIGHUP) {
			notify_reloading();
			bool ok = reload(r);
			notify("READY",
			       ok ? "READY=1\nSTATUS=accepting mail"
			          : "READY=1\nSTATUS=accepting mail (the last reload failed, "
			            "see the log)");
			continue;
		}
		log_info("signal %d: draining and stopping", sig);
		notify("STOPPING", "STOPPING=1\nSTATUS=draining");
		return;
	}
}

static int cmd_serve(int argc, char **argv)
{
	struct config *cfg = cli_load_config(argc, argv);
	char err[600];
	int code;
	/* Certificates, keys and the users file before anything else, logging
	 * included: a bad one is the one line on stderr that goes with exit 78.
	 * Read as whoever started us (root may read what the user cannot); a
	 * reload reads them as [server] user. */
	struct config_ref *cref = config_ref_new(cfg, err, sizeof(err));
	if (!cref)
		rp_die(RP_EX_CONFIG, "%s", err);
	struct priv_plan plan;
	if (!priv_plan(cfg, true, &plan, err, sizeof(err), &code))
		rp_die(code, "%s", err);
	if (!log_open(cfg->log_path))
		rp_die(RP_EX_CANTCREAT, "cannot open log %s: %s", cfg->log_path, strerror(errno));
	log_settings(cfg);
	log_warnings(cref);
	if (plan.warning[0])
		log_warn("%s", plan.warning);
	uint64_t nofile = rp_raise_nofile();
	if (nofile < 65536)
		log_warn("open file limit is %llu: at most that many sessions",
		         (unsigned long long)nofile);

	/* Signals are taken synchronously by this thread; the shards and the
	 * spool writer inherit the blocked mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct relay *r = xcalloc(1, sizeof(*r));
	r->nshards = config_shards(cfg);
	if (r->nshards > 256)
		r->nshards = 256;
	r->shards = xcalloc(r->nshards, sizeof(*r->shards));
	/* Ports below 1024 need root: bind first, and make the shards' rings
	 * (locked memory) as root too; then drop for good, before the spool
	 * (its files are created as the user), before any thread, and before
	 * any client byte is read (accepting starts in shard_open). */
	bind_listeners(r, cfg);
	find_ours(r, cfg);
	make_shards(r, cref);
	drop_privileges(&plan, cfg);
	struct spool *spool = open_spool(r, cfg, &plan);
	pthread_mutex_init(&r->drain_lock, NULL);
	pthread_cond_init(&r->drain_cond, NULL);
	r->cref = cref;
	r->spool = spool;
	r->checker = auth_checker_new(AUTH_THREADS);
	/* Signing threads: as many as shards (each signature is CPU only). */
	r->signers = workers_new("dkim", RP_MIN(config_shards(cfg), 16u));
	r->limiter = auth_limiter_new(cfg->auth_max_failures);
	r->inbound_refused = auth_limiter_new(INBOUND_MAX_REFUSED);
	r->inbound_flood = auth_limiter_new(INBOUND_MAX_REPORTS);
	for (unsigned i = 0; i < r->nshards; i++)
		if (!shard_start(r->shards[i]))
			rp_die(RP_EX_OSERR, "cannot start shard %u (io_uring): %s", i,
			       strerror(errno));
	atomic_store(&r->running, true);
	uint64_t pending = shard_recover(r);
	config_log_pending(cfg);
	for (unsigned i = 0; i < r->nshards; i++)
		shard_open(r->shards[i]);
	shard_wait_opened(r); /* READY=1 below: only once every listener accepts */
#define ON(a) ((a).set ? (a).text : "off")
	log_info("ringpost ready: submission %s, submissions %s, api %s%s, inbound %s, imap %s, "
	         "imaps %s, pop3 %s, pop3s %s, %u shards, spool %s, "
	         "%llu recipients queued, TLS %s, AUTH %u users",
	         ON(cfg->listen_submission), ON(cfg->listen_submissions), ON(cfg->listen_api),
	         cfg->api_tls ? " (HTTPS)" : "", ON(cfg->listen_inbound), ON(cfg->listen_imap),
	         ON(cfg->listen_imaps), ON(cfg->listen_pop3), ON(cfg->listen_pop3s), r->nshards,
	         cfg->data_dir, (unsigned long long)pending, config_has_tls(cfg) ? "on" : "off",
	         auth_users_count(cref->users));
#undef ON
	/* Listeners bound and accepting, spool open, privileges dropped: what
	 * systemd's Type=notify waits for before it calls the start done. */
	notify("READY", "READY=1\nSTATUS=accepting mail");
	wait_for_stop(r, &set);
	atomic_store(&r->stopping, true);
	/* Two phases: every shard drains its sessions while all loops still
	 * run (a late commit on one shard may route recipients to another),
	 * then the loops end. */
	for (unsigned i = 0; i < r->nshards; i++)
		shard_stop(r->shards[i]);
	shard_wait_drained(r);
	pthread_mutex_lock(&r->drain_lock);
	atomic_store(&r->running, false); /* no more mailbox news to the shards */
	pthread_mutex_unlock(&r->drain_lock);
	for (unsigned i = 0; i < r->nshards; i++)
		shard_exit(r->shards[i]);
	for (unsigned i = 0; i < r->nshards; i++)
		shard_join(r->shards[i]);
	workers_free(r->signers); /* idle: every commit has been answered */
	spool_close(spool);
	auth_checker_free(r->checker);
	auth_limiter_free(r->limiter);
	auth_limiter_free(r->inbound_refused);
	auth_limiter_free(r->inbound_flood);
	log_info("stopped");
	log_flush();
	config_ref_put(r->cref);
	pthread_mutex_destroy(&r->drain_lock);
	pthread_cond_destroy(&r->drain_cond);
	free(r->shards);
	free(r->ours);
	free(r);
	return RP_EX_OK;
}

static int cmd_check_config(int argc, char **argv)
{
	struct config *cfg = cli_load_config(argc, argv);
	char err[600];
	/* What serve builds from it too: certificates, keys, CA files. */
	struct config_ref *cref = config_ref_new(cfg, err, sizeof(err));
	if (!cref)
		rp_die(RP_EX_CONFIG, "%s", err);
	/* [server] user must exist; root needs it off loopback. Who will
	 * start serve is not known here: no check that we are that user,
	 * and no warning about running as root on loopback. */
	struct priv_plan plan;
	int code;
	if (!priv_plan(cfg, false, &plan, err, sizeof(err), &code))
		rp_die(code, "%s", err);
	fputs(buf_cstr(&cref->warnings), stderr);
	printf("%s: ok\n", cref->cfg->path);
	config_ref_put(cref);
	return RP_EX_OK;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return RP_EX_USAGE;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "serve"))
		return cmd_serve(argc - 1, argv + 1);
	if (!strcmp(cmd, "check-config"))
		return cmd_check_config(argc - 1, argv + 1);
	if (!strcmp(cmd, "send"))
		return cli_send(argc - 1, argv + 1);
	if (!strcmp(cmd, "stats"))
		return cli_stats(argc - 1, argv + 1);
	if (!strcmp(cmd, "queue"))
		return cli_queue(argc - 1, argv + 1);
	if (!strcmp(cmd, "user"))
		return cli_user(argc - 1, argv + 1);
	if (!strcmp(cmd, "suppress"))
		return cli_suppress(argc - 1, argv + 1);
	if (!strcmp(cmd, "warmup"))
		return cli_warmup(argc - 1, argv + 1);
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("ringpost 0.1.0\n");
		return RP_EX_OK;
	}
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage(stdout);
		return RP_EX_OK;
	}
	fprintf(stderr, "ringpost: unknown command '%s'\n", cmd);
	usage(stderr);
	return RP_EX_USAGE;
}
