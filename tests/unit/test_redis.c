/* test_redis.c - the Redis client (relay/redis.c) against a real
 * redis-server that each test starts on a free loopback port (skipped, with
 * a message, only when redis-server is not installed), on a real loop:
 * SET/GET with binary values, 1,000 pipelined INCRs answered in order, an
 * error reply, EVAL returning an array, commands while down failing at
 * once (never inside redis_command) with one log line for the state, the
 * server killed (pending commands fail, state down) and started again on
 * the same port (state up, commands work), a server that accepts and never
 * answers (timeout), redis_stop with commands pending, callbacks that
 * issue commands, stop or free the client, and the pending bound.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "relay/redis.h"
#include "support.h"

/* ---- a redis-server of our own ----------------------------------------- */

struct server {
	pid_t pid;
	uint16_t port;
	char dir[64];
};

static void need_redis_server(void)
{
	if (system("command -v redis-server >/dev/null 2>&1") != 0)
		cr_skip_test("redis-server is not installed (apt-get install redis-server)");
}

/* free_port - a loopback port nobody listens on now. */
static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t len = sizeof(a);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static bool port_open(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET,
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
		                 .sin_port = htons(port) };
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* server_run - redis-server on s->port; false when it exited (port taken). */
static bool server_run(struct server *s)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no server behind */
		char port[8], log[128];
		snprintf(port, sizeof(port), "%u", s->port);
		snprintf(log, sizeof(log), "%s/redis.log", s->dir);
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
		       "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", s->dir,
		       (char *)NULL);
		_exit(127);
	}
	s->pid = pid;
	for (int i = 0; i < 500; i++) {
		if (port_open(s->port))
			return true;
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			s->pid = 0;
			return false;
		}
		usleep(10000);
	}
	cr_assert_fail("redis-server did not listen on %u within 5 s (see %s/redis.log)", s->port,
	               s->dir);
	return false;
}

static void server_start(struct server *s)
{
	need_redis_server();
	test_tmpdir(s->dir, sizeof(s->dir), "redis");
	for (int i = 0; i < 5; i++) {
		s->port = free_port();
		if (server_run(s))
			return;
	}
	cr_assert_fail("redis-server would not start (see %s/redis.log)", s->dir);
}

static void server_kill(struct server *s, int sig)
{
	if (s->pid > 0) {
		kill(s->pid, sig);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

static void server_stop(struct server *s)
{
	server_kill(s, SIGTERM);
	test_rmdir(s->dir);
}

/* ---- a loop with a client ---------------------------------------------- */

struct world {
	struct loop *l;
	struct redis *r;
	struct loop_timer poll, watchdog;
	bool (*cond)(struct world *w);
	const char *waiting_for;
	int ups, downs;
	char down_err[200];
};

/* One command's outcome, copied in its callback (the reply is borrowed). */
struct res {
	struct world *w;
	int calls;
	char err[200];
	int type;
	long long integer;
	char str[256];
	size_t len;
	size_t elements;
	int el_type[4];
	long long el_int[4];
	char el_str[4][32];
};

static void on_state(void *arg, bool up, const char *err)
{
	struct world *w = arg;
	if (up) {
		w->ups++;
	} else {
		w->downs++;
		snprintf(w->down_err, sizeof(w->down_err), "%s", err);
	}
}

static void world_init(struct world *w)
{
	memset(w, 0, sizeof(*w));
	struct loop_config cfg = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 16, .buf_size = 4096
	};
	w->l = loop_new(&cfg);
	cr_assert_not_null(w->l, "loop_new: %s", strerror(errno));
}

static void client_new(struct world *w, const char *host, uint16_t port, uint64_t timeout_ms)
{
	struct redis_params p = {
		.loop = w->l,
		.host = host,
		.port = port,
		.timeout_ms = timeout_ms,
		.state = on_state,
		.arg = w,
	};
	w->r = redis_new(&p);
}

static void poll_fired(struct loop_timer *t)
{
	struct world *w = RP_CONTAINER_OF(t, struct world, poll);
	if (w->cond(w))
		loop_stop(w->l);
	else
		loop_timer_arm(w->l, &w->poll, 10, poll_fired);
}

static void watchdog(struct loop_timer *t)
{
	struct world *w = RP_CONTAINER_OF(t, struct world, watchdog);
	cr_assert_fail("timed out waiting for %s", w->waiting_for);
}

/* run_until - run the loop until cond holds (checked every 10 ms), at
 * most ms. */
static void run_until(struct world *w, bool (*cond)(struct world *w), const char *what, uint64_t ms)
{
	w->cond = cond;
	w->waiting_for = what;
	loop_timer_arm(w->l, &w->poll, 10, poll_fired);
	loop_timer_arm(w->l, &w->watchdog, ms, watchdog);
	loop_run(w->l);
	loop_timer_disarm(w->l, &w->poll);
	loop_timer_disarm(w->l, &w->watchdog);
}

static uint64_t run_for_end;
static bool time_up(struct world *w)
{
	(void)w;
	return rp_mono_ms() >= run_for_end;
}

/* run_for - run the loop for ms. */
static void run_for(struct world *w, uint64_t ms)
{
	run_for_end = rp_mono_ms() + ms;
	run_until(w, time_up, "the time to pass", ms + 5000);
}

static bool is_up(struct world *w)
{
	return redis_up(w->r);
}

static bool is_down(struct world *w)
{
	return !redis_up(w->r) && w->downs > 0;
}

static bool not_busy(struct world *w)
{
	return !redis_busy(w->r);
}

/* world_end - stop the client, wait for its connection, free everything. */
static void world_end(struct world *w)
{
	redis_stop(w->r);
	run_until(w, not_busy, "the connection's release", 5000);
	redis_free(w->r);
	cr_assert_eq(loop_registered(w->l), 0, "every connection released its slot");
	loop_free(w->l);
}

static void res_cb(void *arg, const redisReply *rep, const char *err)
{
	struct res *x = arg;
	x->calls++;
	if (err) {
		cr_assert_null(rep, "reply or error, not both");
		snprintf(x->err, sizeof(x->err), "%s", err);
		return;
	}
	cr_assert_not_null(rep);
	x->type = rep->type;
	x->integer = rep->integer;
	if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS ||
	    rep->type == REDIS_REPLY_ERROR) {
		x->len = rep->len;
		memcpy(x->str, rep->str, RP_MIN(rep->len, sizeof(x->str)));
	}
	x->elements = rep->type == REDIS_REPLY_ARRAY ? rep->elements : 0;
	for (size_t i = 0; i < x->elements && i < 4; i++) {
		const redisReply *e = rep->element[i];
		x->el_type[i] = e->type;
		x->el_int[i] = e->integer;
		if (e->type == REDIS_REPLY_STRING)
			snprintf(x->el_str[i], sizeof(x->el_str[i]), "%.*s", (int)e->len, e->str);
	}
}

static struct res *wait_res;
static bool res_done(struct world *w)
{
	(void)w;
	return wait_res->calls > 0;
}

/* wait_for - run until x's callback has run (once). */
static void wait_for(struct world *w, struct res *x, const char *what)
{
	wait_res = x;
	run_until(w, res_done, what, 5000);
	cr_assert_eq(x->calls, 1, "%s: one callback", what);
}

static void cmd(struct world *w, struct res *x, const char *what, int argc, const char **argv,
                const size_t *lens)
{
	memset(x, 0, sizeof(*x));
	x->w = w;
	redis_command(w->r, res_cb, x, argc, argv, lens);
	wait_for(w, x, what);
}

static void started(struct world *w, struct server *s)
{
	server_start(s);
	world_init(w);
	client_new(w, "127.0.0.1", s->port, 2000);
	run_until(w, is_up, "the connection", 5000);
	cr_assert_eq(w->ups, 1);
	cr_assert_eq(w->downs, 0);
}

/* ---- tests ------------------------------------------------------------- */

Test(redis, backoff_schedule)
{
	static const uint64_t want[] = { 100, 200, 400, 800, 1600, 3200, 5000, 5000 };
	uint64_t cur = 0;
	for (size_t i = 0; i < RP_ARRAY_LEN(want); i++) {
		cur = redis_backoff_next(cur);
		cr_assert_eq(cur, want[i], "step %zu: %llu", i, (unsigned long long)cur);
	}
}

Test(redis, set_get_binary, .timeout = 30)
{
	struct server s;
	struct world w;
	started(&w, &s);
	struct res x;
	static const char val[] = "a\0b\r\n$3\r\nc"; /* NUL, CRLF, RESP look-alikes */
	const char *set[] = { "SET", "k\r\n", val };
	size_t setlen[] = { 3, 3, sizeof(val) - 1 };
	cmd(&w, &x, "SET", 3, set, setlen);
	cr_assert_eq(x.type, REDIS_REPLY_STATUS);
	cr_assert(x.len == 2 && !memcmp(x.str, "OK", 2));
	const char *get[] = { "GET", "k\r\n" };
	size_t getlen[] = { 3, 3 };
	cmd(&w, &x, "GET", 2, get, getlen);
	cr_assert_eq(x.type, REDIS_REPLY_STRING);
	cr_assert_eq(x.len, sizeof(val) - 1);
	cr_assert(!memcmp(x.str, val, sizeof(val) - 1), "binary value intact");

	/* The same through the format: %b is binary, %s a C string. */
	memset(&x, 0, sizeof(x));
	redis_commandf(w.r, res_cb, &x, "SET %s %b", "f", val, sizeof(val) - 1);
	wait_for(&w, &x, "SET (format)");
	cr_assert_eq(x.type, REDIS_REPLY_STATUS);
	const char *getf[] = { "GET", "f" };
	cmd(&w, &x, "GET f", 2, getf, NULL);
	cr_assert_eq(x.len, sizeof(val) - 1);
	cr_assert(!memcmp(x.str, val, sizeof(val) - 1));
	const char *miss[] = { "GET", "missing" };
	cmd(&w, &x, "GET missing", 2, miss, NULL);
	cr_assert_eq(x.type, REDIS_REPLY_NIL);

	struct redis_stats st;
	redis_get_stats(w.r, &st);
	cr_assert_eq(st.commands, 5);
	cr_assert_eq(st.errors, 0);
	world_end(&w);
	server_stop(&s);
}

/* 1,000 INCRs written in one batch; each reply must be the next number. */
struct seq {
	int next, bad, done;
};

static void seq_cb(void *arg, const redisReply *rep, const char *err)
{
	struct seq *q = arg;
	q->done++;
	if (err || rep->type != REDIS_REPLY_INTEGER || rep->integer != ++q->next)
		q->bad++;
}

static struct seq *wait_seq;
static int wait_seq_n;
static bool seq_done(struct world *w)
{
	(void)w;
	return wait_seq->done >= wait_seq_n;
}

Test(redis, pipelined_incr_in_order, .timeout = 30)
{
	struct server s;
	struct world w;
	started(&w, &s);
	struct seq q = { 0 };
	const char *argv[] = { "INCR", "counter" };
	for (int i = 0; i < 1000; i++)
		redis_command(w.r, seq_cb, &q, 2, argv, NULL);
	cr_assert_eq(q.done, 0, "no callback inside redis_command");
	wait_seq = &q;
	wait_seq_n = 1000;
	run_until(&w, seq_done, "1,000 replies", 10000);
	cr_assert_eq(q.done, 1000);
	cr_assert_eq(q.bad, 0, "replies out of order or failed");
	cr_assert_eq(w.downs, 0);
	world_end(&w);
	server_stop(&s);
}

Test(redis, error_reply, .timeout = 30)
{
	struct server s;
	struct world w;
	started(&w, &s);
	struct res x;
	const char *set[] = { "SET", "s", "abc" };
	cmd(&w, &x, "SET", 3, set, NULL);
	const char *incr[] = { "INCR", "s" };
	cmd(&w, &x, "INCR of a string", 2, incr, NULL);
	cr_assert_str_empty(x.err, "Redis answered: no err");
	cr_assert_eq(x.type, REDIS_REPLY_ERROR);
	cr_assert(strstr(x.str, "not an integer"), "%s", x.str);
	const char *ping[] = { "PING" };
	cmd(&w, &x, "PING after the error", 1, ping, NULL);
	cr_assert_eq(x.type, REDIS_REPLY_STATUS, "the connection carries on");
	struct redis_stats st;
	redis_get_stats(w.r, &st);
	cr_assert_eq(st.errors, 1);
	cr_assert(strstr(st.last_error, "not an integer"), "%s", st.last_error);
	cr_assert_eq(w.downs, 0);
	world_end(&w);
	server_stop(&s);
}

Test(redis, eval_returns_array, .timeout = 30)
{
	struct server s;
	struct world w;
	started(&w, &s);
	struct res x;
	const char *eval[] = { "EVAL", "return {1, 'two', ARGV[1]}", "0", "three" };
	cmd(&w, &x, "EVAL", 4, eval, NULL);
	cr_assert_eq(x.type, REDIS_REPLY_ARRAY);
	cr_assert_eq(x.elements, 3);
	cr_assert_eq(x.el_type[0], REDIS_REPLY_INTEGER);
	cr_assert_eq(x.el_int[0], 1);
	cr_assert_str_eq(x.el_str[1], "two");
	cr_assert_str_eq(x.el_str[2], "three");
	world_end(&w);
	server_stop(&s);
}

/* A callback that issues its command again on "not connected": the
 * retries run in later iterations, never all in one pass. */
struct retry {
	struct world *w;
	int calls, left;
	char err[64];
};

static void retry_cb(void *arg, const redisReply *rep, const char *err)
{
	struct retry *t = arg;
	cr_assert_null(rep);
	t->calls++;
	snprintf(t->err, sizeof(t->err), "%s", err);
	if (t->left-- > 0) {
		const char *ping[] = { "PING" };
		int before = t->calls;
		redis_command(t->w->r, retry_cb, t, 1, ping, NULL);
		cr_assert_eq(t->calls, before, "not called back inside redis_command");
	}
}

static struct retry *wait_retry;
static bool retry_done(struct world *w)
{
	(void)w;
	return wait_retry->calls >= 6;
}

static int count_lines(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	char line[1024];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

Test(redis, down_fails_at_once, .timeout = 30)
{
	char dir[64], log[128];
	test_tmpdir(dir, sizeof(dir), "redis_down");
	snprintf(log, sizeof(log), "%s/log", dir);
	cr_assert(log_open(log));
	struct world w;
	world_init(&w);
	client_new(&w, "127.0.0.1", free_port(), 1000); /* nobody listens */
	/* A caller that retries at once, for ever: the loop goes on (timers
	 * run) between its refusals. */
	struct retry t = { .w = &w, .left = INT_MAX };
	const char *ping[] = { "PING" };
	redis_command(w.r, retry_cb, &t, 1, ping, NULL);
	cr_assert_eq(t.calls, 0, "not called back inside redis_command");
	wait_retry = &t;
	run_until(&w, retry_done, "six refusals", 2000);
	run_for(&w, 50);
	cr_assert_gt(t.calls, 6);
	cr_assert_str_eq(t.err, "not connected");
	t.left = 0;
	run_for(&w, 20);
	int calls = t.calls;
	/* Retries at 100, 200, 400, 800 ms: one down report, one log line. */
	run_for(&w, 1700);
	cr_assert_eq(t.calls, calls, "each callback once");
	cr_assert_eq(w.downs, 1, "down reported once, not per retry");
	cr_assert(strstr(w.down_err, "refused"), "%s", w.down_err);
	cr_assert_eq(w.ups, 0);
	struct redis_stats st;
	redis_get_stats(w.r, &st);
	cr_assert_eq(st.commands, 0);
	cr_assert_eq(st.errors, (uint64_t)calls);
	cr_assert(strstr(st.last_error, "refused"), "%s", st.last_error);
	world_end(&w);
	cr_assert(log_open("stderr"));
	cr_assert_eq(count_lines(log, "redis: down"), 1, "one log line for the state");
	test_rmdir(dir);
}

Test(redis, server_killed_and_restarted, .timeout = 60)
{
	struct server s;
	struct world w;
	started(&w, &s);
	/* Two commands that wait in the server (within the 2 s timeout). */
	struct res b1 = { 0 }, b2 = { 0 }, x;
	const char *blpop[] = { "BLPOP", "nothing", "0" };
	redis_command(w.r, res_cb, &b1, 3, blpop, NULL);
	redis_command(w.r, res_cb, &b2, 3, blpop, NULL);
	run_for(&w, 200);
	cr_assert_eq(b1.calls + b2.calls, 0, "BLPOP blocks");
	server_kill(&s, SIGKILL);
	run_until(&w, is_down, "the state down", 5000);
	cr_assert_eq(b1.calls, 1);
	cr_assert_eq(b2.calls, 1);
	cr_assert(!strncmp(b1.err, "connection lost: ", 17), "%s", b1.err);
	cr_assert(!strncmp(b2.err, "connection lost: ", 17), "%s", b2.err);
	cr_assert_eq(w.downs, 1);
	cr_assert_eq(w.ups, 1);
	const char *set[] = { "SET", "k", "v" };
	cmd(&w, &x, "SET while down", 3, set, NULL);
	cr_assert_str_eq(x.err, "not connected");

	cr_assert(server_run(&s), "redis-server again on port %u", s.port);
	run_until(&w, is_up, "the connection again", 8000);
	cr_assert_eq(w.ups, 2);
	cr_assert_eq(w.downs, 1, "one down report for the whole outage");
	cmd(&w, &x, "SET after the restart", 3, set, NULL);
	cr_assert_eq(x.type, REDIS_REPLY_STATUS, "%s", x.err);
	const char *get[] = { "GET", "k" };
	cmd(&w, &x, "GET after the restart", 2, get, NULL);
	cr_assert_eq(x.type, REDIS_REPLY_STRING);
	cr_assert_str_eq(x.str, "v");
	struct redis_stats st;
	redis_get_stats(w.r, &st);
	cr_assert_eq(st.reconnects, 1);
	world_end(&w);
	server_stop(&s);
}

Test(redis, timeout_on_silent_server, .timeout = 30)
{
	/* A socket that listens and never reads: the kernel completes the
	 * handshake, nobody answers. */
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t len = sizeof(a);
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
	cr_assert_eq(listen(lfd, 16), 0);
	struct world w;
	world_init(&w);
	client_new(&w, "127.0.0.1", ntohs(a.sin_port), 300);
	run_until(&w, is_up, "the connection", 5000);
	struct res x1 = { 0 }, x2 = { 0 };
	const char *ping[] = { "PING" };
	uint64_t t0 = rp_mono_ms();
	redis_command(w.r, res_cb, &x1, 1, ping, NULL);
	redis_command(w.r, res_cb, &x2, 1, ping, NULL);
	wait_for(&w, &x1, "the timeout");
	uint64_t took = rp_mono_ms() - t0;
	cr_assert_eq(x2.calls, 1, "every pending command fails");
	cr_assert_str_eq(x1.err, "timeout");
	cr_assert_str_eq(x2.err, "timeout");
	cr_assert(took >= 280 && took < 1500, "timed out after %llu ms", (unsigned long long)took);
	cr_assert_eq(w.downs, 1);
	cr_assert(strstr(w.down_err, "no reply within 300 ms"), "%s", w.down_err);
	/* ... and it connects again (the backlog accepts). */
	run_until(&w, is_up, "the connection again", 3000);
	cr_assert_eq(w.ups, 2);
	world_end(&w);
	close(lfd);
}

Test(redis, stop_with_commands_pending, .timeout = 30)
{
	struct server s;
	struct world w;
	started(&w, &s);
	struct res x[5] = { 0 };
	const char *blpop[] = { "BLPOP", "nothing", "0" };
	const char *ping[] = { "PING" };
	for (int i = 0; i < 3; i++)
		redis_command(w.r, res_cb, &x[i], 3, blpop, NULL);
	run_for(&w, 100); /* sent and blocked in the server */
	redis_command(w.r, res_cb, &x[3], 1, ping, NULL);
	cr_assert_eq(x[3].calls, 0);
	redis_stop(w.r);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(x[i].calls, 1, "command %d: its callback ran in redis_stop", i);
		cr_assert_str_eq(x[i].err, "stopped");
	}
	cr_assert(!redis_up(w.r));
	redis_command(w.r, res_cb, &x[4], 1, ping, NULL);
	cr_assert_eq(x[4].calls, 0, "not inside redis_command");
	wait_for(&w, &x[4], "a command after the stop");
	cr_assert_str_eq(x[4].err, "stopped");
	cr_assert_eq(w.downs, 0, "no state report for redis_stop");
	world_end(&w);
	server_stop(&s);
}

/* A chain: SET's callback sends GET, GET's sends DEL. */
struct chain {
	struct world *w;
	int step;
	char got[16];
};

static void chain_cb(void *arg, const redisReply *rep, const char *err)
{
	struct chain *c = arg;
	cr_assert_null(err, "%s", err);
	switch (c->step++) {
	case 0: {
		const char *get[] = { "GET", "chain" };
		redis_command(c->w->r, chain_cb, c, 2, get, NULL);
		break;
	}
	case 1: {
		snprintf(c->got, sizeof(c->got), "%.*s", (int)rep->len, rep->str);
		redis_commandf(c->w->r, chain_cb, c, "DEL %s", "chain");
		break;
	}
	case 2:
		cr_assert_eq(rep->integer, 1);
		break;
	}
}

static struct chain *wait_chain;
static bool chain_done(struct world *w)
{
	(void)w;
	return wait_chain->step == 3;
}

/* The third PING's callback stops the client: the rest get "stopped". */
struct stopper {
	struct world *w;
	int pongs, stopped, other;
};

static void stopper_cb(void *arg, const redisReply *rep, const char *err)
{
	struct stopper *p = arg;
	if (rep && rep->type == REDIS_REPLY_STATUS) {
		if (++p->pongs == 3)
			redis_stop(p->w->r);
	} else if (err && !strcmp(err, "stopped")) {
		p->stopped++;
	} else {
		p->other++;
	}
}

Test(redis, callbacks_issue_commands_and_stop, .timeout = 30)
{
	struct server s;
	struct world w;
	started(&w, &s);
	struct chain c = { .w = &w };
	const char *set[] = { "SET", "chain", "link" };
	redis_command(w.r, chain_cb, &c, 3, set, NULL);
	wait_chain = &c;
	run_until(&w, chain_done, "the chain", 5000);
	cr_assert_str_eq(c.got, "link");

	struct stopper p = { .w = &w };
	const char *ping[] = { "PING" };
	for (int i = 0; i < 10; i++)
		redis_command(w.r, stopper_cb, &p, 1, ping, NULL);
	run_until(&w, not_busy, "the stop", 5000);
	cr_assert_eq(p.pongs, 3);
	cr_assert_eq(p.stopped, 7);
	cr_assert_eq(p.other, 0);
	/* Stopped for good: no report, no reconnect. */
	run_for(&w, 300);
	cr_assert_eq(w.downs, 0, "no state report for redis_stop: %s", w.down_err);
	cr_assert_eq(w.ups, 1);
	cr_assert(!redis_busy(w.r), "no new connection");
	world_end(&w);
	server_stop(&s);
}

/* A client that can never connect (a name, no resolver) freed from the
 * callback of its refused command: legal (no connection), and the second
 * refused command still gets its callback, once. */
struct freer {
	struct world *w;
	int calls;
};

static void freer_cb(void *arg, const redisReply *rep, const char *err)
{
	struct freer *f = arg;
	cr_assert_null(rep);
	cr_assert_str_eq(err, "not connected");
	if (f->calls++ == 0) {
		redis_stop(f->w->r);
		cr_assert(!redis_busy(f->w->r));
		redis_free(f->w->r);
		f->w->r = NULL;
	}
}

static struct freer *wait_freer;
static bool freer_done(struct world *w)
{
	(void)w;
	return wait_freer->calls >= 2;
}

Test(redis, free_from_a_callback, .timeout = 30)
{
	struct world w;
	world_init(&w);
	client_new(&w, "redis.invalid", 6379, 500);
	run_until(&w, is_down, "the state down", 2000);
	cr_assert(strstr(w.down_err, "no resolver"), "%s", w.down_err);
	struct freer f = { .w = &w };
	const char *ping[] = { "PING" };
	redis_command(w.r, freer_cb, &f, 1, ping, NULL);
	redis_command(w.r, freer_cb, &f, 1, ping, NULL);
	wait_freer = &f;
	run_until(&w, freer_done, "both callbacks", 2000);
	run_for(&w, 50);
	cr_assert_eq(f.calls, 2, "each callback once");
	cr_assert_null(w.r);
	cr_assert_eq(loop_registered(w.l), 0);
	loop_free(w.l);
}

Test(redis, pending_bound, .timeout = 60)
{
	struct server s;
	struct world w;
	started(&w, &s);
	struct seq ok = { 0 };
	struct res over[3] = { 0 };
	const char *ping[] = { "PING" };
	for (int i = 0; i < REDIS_PENDING_MAX; i++)
		redis_command(w.r, seq_cb, &ok, 1, ping, NULL);
	for (int i = 0; i < 3; i++)
		redis_command(w.r, res_cb, &over[i], 1, ping, NULL);
	cr_assert_eq(over[0].calls, 0, "not inside redis_command");
	wait_seq = &ok;
	wait_seq_n = REDIS_PENDING_MAX;
	run_until(&w, seq_done, "the replies", 20000);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(over[i].calls, 1);
		cr_assert_str_eq(over[i].err, "too many pending");
	}
	cr_assert_eq(ok.done, REDIS_PENDING_MAX);
	world_end(&w);
	server_stop(&s);
}
