/* test_loop.c - the io_uring event loop (base/loop.c), run in the test's
 * thread: timers (order, disarm, re-arm, 10 ms resolution, a due timer
 * disarmed by another's callback), deferred calls, and functions pushed
 * through loop_inbox from other threads. A loop made disabled in one
 * thread (ring and buffer ring) is enabled and run in another, receiving
 * through its buffer ring; made by root, it runs after a switch to nobody
 * with a locked-memory limit far below its size.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <grp.h>
#include <liburing.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "base/loop.h"

static struct loop *new_loop(void)
{
	struct loop_config cfg = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 16, .buf_size = 4096
	};
	struct loop *l = loop_new(&cfg);
	cr_assert_not_null(l, "loop_new: %s", strerror(errno));
	cr_assert_eq(loop_registered(l), 0);
	return l;
}

struct tctx {
	struct loop *l;
	struct loop_timer t[4];
	struct loop_timer watchdog;
	uint64_t fired_at[4];
	int order[8];
	int nfired;
	int rearm_left;
	uint64_t start;
};

static struct tctx *tc; /* one test per process: this test's context */

static void watchdog(struct loop_timer *t)
{
	(void)t;
	cr_assert_fail("the loop did not finish in time");
}

static void fire(struct loop_timer *t)
{
	int i = (int)(t - tc->t);
	cr_assert(!loop_timer_armed(t), "a firing timer is disarmed");
	tc->fired_at[i] = rp_mono_ms();
	tc->order[tc->nfired++] = i;
	if (i == 2 && tc->rearm_left-- > 0) {
		loop_timer_arm(tc->l, t, 20, fire);
		return;
	}
	if (i == 2) {
		loop_timer_disarm(tc->l, &tc->watchdog);
		loop_stop(tc->l);
	}
}

Test(loop, timers)
{
	struct tctx c = { 0 };
	tc = &c;
	c.l = new_loop();
	c.start = rp_mono_ms();
	c.rearm_left = 2;
	loop_timer_arm(c.l, &c.watchdog, 5000, watchdog);
	loop_timer_arm(c.l, &c.t[0], 60, fire);
	loop_timer_arm(c.l, &c.t[1], 25, fire);
	loop_timer_arm(c.l, &c.t[3], 40, fire);
	loop_timer_arm(c.l, &c.t[2], 100, fire);
	cr_assert(loop_timer_armed(&c.t[3]));
	loop_timer_disarm(c.l, &c.t[3]);
	cr_assert_not(loop_timer_armed(&c.t[3]));
	loop_timer_disarm(c.l, &c.t[3]); /* twice is fine */
	/* Re-arming moves a timer rather than adding a second one. */
	loop_timer_arm(c.l, &c.t[0], 10, fire);
	loop_timer_arm(c.l, &c.t[0], 50, fire);
	loop_run(c.l);
	/* t1 (25), t0 (50), t2 (100), t2 again (120), t2 again (140). */
	cr_assert_eq(c.nfired, 5, "%d timers fired", c.nfired);
	static const int want[5] = { 1, 0, 2, 2, 2 };
	for (int i = 0; i < 5; i++)
		cr_assert_eq(c.order[i], want[i], "fire %d was timer %d", i, c.order[i]);
	cr_assert_geq(c.fired_at[1] - c.start, 25);
	cr_assert_geq(c.fired_at[0] - c.start, 50);
	cr_assert_geq(c.fired_at[2] - c.start, 140);
	cr_assert_lt(c.fired_at[2] - c.start, 2000);
	cr_assert_eq(c.fired_at[3], 0, "a disarmed timer never fires");
	cr_assert_geq(loop_now_ms(c.l), c.fired_at[1] - 1);
	loop_free(c.l);
}

/* Two timers due in the same tick: whichever fires first disarms the
 * other (as a session closing another would), which must then not fire. */
struct sctx {
	struct loop *l;
	struct loop_timer a, b, stop, watchdog;
	int fired;
};

static struct sctx *sc;

static void disarm_other(struct loop_timer *t)
{
	sc->fired++;
	loop_timer_disarm(sc->l, t == &sc->a ? &sc->b : &sc->a);
}

static void stop_now(struct loop_timer *t)
{
	(void)t;
	loop_timer_disarm(sc->l, &sc->watchdog);
	loop_stop(sc->l);
}

Test(loop, a_due_timer_disarmed_by_another_does_not_fire)
{
	struct sctx c = { 0 };
	sc = &c;
	c.l = new_loop();
	loop_timer_arm(c.l, &c.watchdog, 5000, watchdog);
	loop_timer_arm(c.l, &c.a, 20, disarm_other);
	loop_timer_arm(c.l, &c.b, 20, disarm_other);
	loop_timer_arm(c.l, &c.stop, 100, stop_now);
	loop_run(c.l);
	cr_assert_eq(c.fired, 1, "%d of the two timers fired", c.fired);
	cr_assert_not(loop_timer_armed(&c.a) || loop_timer_armed(&c.b));
	loop_free(c.l);
}

struct dctx {
	struct loop *l;
	struct loop_defer a, b;
	struct loop_timer t;
	int runs_a, runs_b;
	int order[4];
	int n;
};

static struct dctx *dc;

static void defer_b(struct loop_defer *d)
{
	(void)d;
	dc->runs_b++;
	dc->order[dc->n++] = 2;
	loop_stop(dc->l);
}

static void defer_a(struct loop_defer *d)
{
	(void)d;
	dc->runs_a++;
	dc->order[dc->n++] = 1;
	/* Queued while running: runs in the same pass. */
	loop_defer(dc->l, &dc->b, defer_b);
}

static void timer_defers(struct loop_timer *t)
{
	(void)t;
	loop_defer(dc->l, &dc->a, defer_a);
	loop_defer(dc->l, &dc->a, defer_a); /* already queued: once */
	loop_defer(dc->l, &dc->b, defer_b);
	loop_defer_cancel(dc->l, &dc->b); /* cancelled: only a's re-queue runs b */
	cr_assert_not(dc->b.queued);
}

Test(loop, deferred_calls)
{
	struct dctx c = { 0 };
	dc = &c;
	c.l = new_loop();
	loop_timer_arm(c.l, &c.t, 10, timer_defers);
	loop_run(c.l);
	cr_assert_eq(c.runs_a, 1);
	cr_assert_eq(c.runs_b, 1);
	cr_assert_eq(c.n, 2);
	cr_assert_eq(c.order[0], 1);
	cr_assert_eq(c.order[1], 2);
	loop_free(c.l);
}

struct ictx {
	struct loop *l;
	pthread_t loop_thread;
	int ran;
	int from_thread_ok;
};

struct inbox_item {
	struct mq_item item;
	struct ictx *c;
};

#define PUSHERS    3
#define PER_PUSHER 200

static void inbox_fn(struct mq_item *item, void *consumer_ctx)
{
	struct inbox_item *it = RP_CONTAINER_OF(item, struct inbox_item, item);
	struct ictx *c = it->c;
	cr_assert_eq(consumer_ctx, c->l, "the consumer context is the loop");
	c->from_thread_ok += pthread_equal(pthread_self(), c->loop_thread) != 0;
	if (++c->ran == PUSHERS * PER_PUSHER)
		loop_stop(c->l);
	free(it);
}

static void *pusher(void *arg)
{
	struct ictx *c = arg;
	usleep(20000); /* let the loop go to sleep first */
	for (int i = 0; i < PER_PUSHER; i++) {
		struct inbox_item *it = xcalloc(1, sizeof(*it));
		it->c = c;
		mq_push(loop_inbox(c->l), &it->item, inbox_fn);
		if (i % 50 == 0)
			usleep(2000);
	}
	return NULL;
}

/* No timer is armed: only the inbox's eventfd can wake the loop. */
Test(loop, inbox_from_other_threads, .timeout = 20)
{
	struct ictx c = { 0 };
	c.l = new_loop();
	c.loop_thread = pthread_self();
	pthread_t t[PUSHERS];
	for (int i = 0; i < PUSHERS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, pusher, &c), 0);
	loop_run(c.l);
	for (int i = 0; i < PUSHERS; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(c.ran, PUSHERS * PER_PUSHER);
	cr_assert_eq(c.from_thread_ok, c.ran, "every function ran on the loop's thread");
	cr_assert_eq(loop_registered(c.l), 0);
	loop_free(c.l);
}

struct counted_item {
	struct mq_item item;
	int ran;
};

static void count_run(struct mq_item *item, void *consumer_ctx)
{
	(void)consumer_ctx;
	RP_CONTAINER_OF(item, struct counted_item, item)->ran++;
}

Test(loop, free_runs_what_is_left_in_the_inbox)
{
	struct loop *l = new_loop();
	struct counted_item it = { .ran = 0 };
	mq_push(loop_inbox(l), &it.item, count_run);
	loop_free(l);
	cr_assert_eq(it.ran, 1, "queued functions still run (they may own memory)");
}

/* ---- a loop made disabled in one thread, run in another --------------- */

struct xctx {
	struct loop *l;
	struct loop_io io;
	struct loop_timer watchdog;
	struct mq_item item;
	int sv[2];         /* socket pair: the loop receives on sv[0] */
	pthread_t creator; /* the thread that made the loop */
	char got[16];      /* bytes received through the buffer ring */
	size_t ngot;
	const char *bad;     /* the first problem seen on the loop's thread */
	bool enabled, again; /* loop_enable results */
	int enable_errno;
	bool inbox_ran; /* the inbox function ran, on the loop's thread */
	unsigned flags; /* loop_setup_flags once enabled */
};

static void x_fail(struct xctx *x, const char *why)
{
	if (!x->bad)
		x->bad = why;
	loop_stop(x->l);
}

static void x_recv(struct loop_io *io, const struct loop_cqe *c)
{
	struct xctx *x = RP_CONTAINER_OF(io, struct xctx, io);
	if (pthread_equal(pthread_self(), x->creator))
		return x_fail(x, "a completion ran on the creating thread");
	if (c->res == 0 && !(c->flags & IORING_CQE_F_MORE)) {
		loop_timer_disarm(x->l, &x->watchdog);
		loop_stop(x->l); /* end of stream: the multishot recv is over */
		return;
	}
	if (c->res < 0 || !c->data || x->ngot + (size_t)c->res > sizeof(x->got))
		return x_fail(x, "a receive failed or did not come from the buffer ring");
	memcpy(x->got + x->ngot, c->data, (size_t)c->res);
	x->ngot += (size_t)c->res;
	if (x->ngot == 10)
		shutdown(x->sv[1], SHUT_WR);
}

static void x_inbox(struct mq_item *item, void *ctx)
{
	struct xctx *x = RP_CONTAINER_OF(item, struct xctx, item);
	(void)ctx;
	x->inbox_ran = !pthread_equal(pthread_self(), x->creator);
	if (write(x->sv[1], "world", 5) != 5)
		x_fail(x, "write from the inbox failed");
}

static void x_watchdog(struct loop_timer *t)
{
	x_fail(RP_CONTAINER_OF(t, struct xctx, watchdog), "the loop did not finish in time");
}

/* x_thread - enable the loop here, arm a multishot recv that selects
 * buffers from the ring registered by the creating thread, run. */
static void *x_thread(void *arg)
{
	struct xctx *x = arg;
	x->enabled = loop_enable(x->l);
	x->enable_errno = errno;
	if (!x->enabled)
		return NULL;
	x->again = loop_enable(x->l);
	x->flags = loop_setup_flags(x->l);
	loop_io_register(x->l, &x->io, x_recv);
	struct io_uring_sqe *sqe = loop_sqe(x->l, &x->io, LOOP_OP_RECV);
	io_uring_prep_recv_multishot(sqe, x->sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = loop_buf_group(x->l);
	loop_tag(x->l, sqe, &x->io, LOOP_OP_RECV);
	loop_timer_arm(x->l, &x->watchdog, 5000, x_watchdog);
	loop_run(x->l);
	if (!x->io.inflight)
		loop_io_release(x->l, &x->io);
	return NULL;
}

/* run_elsewhere - l was made disabled by the calling thread: enable and
 * run it on a new thread; "hello" written here and "world" written from
 * the loop's inbox arrive through its buffer ring. NULL when all went
 * well, else what went wrong (flags: loop_setup_flags once enabled). */
static const char *run_elsewhere(struct loop *l, unsigned *flags)
{
	static char why[160];
	struct xctx x = { .l = l, .creator = pthread_self() };
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, x.sv) < 0)
		return "socketpair failed";
	pthread_t t;
	if (pthread_create(&t, NULL, x_thread, &x))
		return "pthread_create failed";
	if (write(x.sv[1], "hello", 5) != 5)
		x.bad = "write failed";
	mq_push(loop_inbox(l), &x.item, x_inbox);
	pthread_join(t, NULL);
	close(x.sv[0]);
	close(x.sv[1]);
	*flags = x.flags;
	if (!x.enabled) {
		snprintf(why, sizeof(why), "loop_enable: %s", strerror(x.enable_errno));
		return why;
	}
	if (!x.again)
		return "a second loop_enable failed";
	if (x.bad)
		return x.bad;
	if (x.ngot != 10 || memcmp(x.got, "helloworld", 10))
		return "did not receive helloworld";
	if (!x.inbox_ran)
		return "the inbox function did not run on the loop's thread";
	if (x.flags & IORING_SETUP_R_DISABLED)
		return "loop_setup_flags still says R_DISABLED";
	if (loop_registered(l))
		return "objects left registered";
	return NULL;
}

static const struct loop_config shard_like = {
	.sq_entries = 4096, .cq_entries = 65536, .buf_count = 1024, .buf_size = 4096
};

Test(loop, made_disabled_here_enabled_and_run_on_another_thread, .timeout = 20)
{
	struct loop_config cfg = shard_like;
	struct loop *plain = loop_new(&cfg);
	cr_assert_not_null(plain, "loop_new: %s", strerror(errno));
	unsigned plain_flags = loop_setup_flags(plain);
	loop_free(plain);
	cfg.disabled = true;
	struct loop *l = loop_new(&cfg);
	cr_assert_not_null(l, "loop_new disabled: %s", strerror(errno));
	unsigned flags = 0;
	const char *why = run_elsewhere(l, &flags);
	cr_assert_null(why, "%s", why);
	/* Made disabled, the ring keeps the flags a ring made in place gets
	 * (SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them). */
	cr_assert_eq(flags, plain_flags, "flags 0x%x, made in place 0x%x", flags, plain_flags);
	cr_log_info("ring flags 0x%x (SINGLE_ISSUER %s, DEFER_TASKRUN %s)", flags,
	            flags & IORING_SETUP_SINGLE_ISSUER ? "yes" : "no",
	            flags & IORING_SETUP_DEFER_TASKRUN ? "yes" : "no");
	loop_free(l);
}

Test(loop, a_loop_never_enabled_is_freed)
{
	struct loop_config cfg = { .sq_entries = 64,
		                   .cq_entries = 256,
		                   .buf_count = 16,
		                   .buf_size = 4096,
		                   .disabled = true };
	struct loop *l = loop_new(&cfg);
	cr_assert_not_null(l, "loop_new: %s", strerror(errno));
	struct counted_item it = { .ran = 0 };
	mq_push(loop_inbox(l), &it.item, count_run);
	loop_free(l);
	cr_assert_eq(it.ran, 1);
}

/* made_by_root_child - in a child: a 64 KiB locked-memory limit, a
 * shard-sized loop (over 1 MiB of rings) made disabled as root, then a
 * switch to nobody, then the loop enabled and run there. Exit 0 when it
 * ran and a loop made after the switch was refused (the kernel accounts
 * rings), 1 when it ran and the kernel did not refuse, 2+ on failure. */
static int made_by_root_child(void)
{
	struct rlimit small = { .rlim_cur = 64 << 10, .rlim_max = 64 << 10 };
	if (setrlimit(RLIMIT_MEMLOCK, &small) < 0)
		return 2;
	struct loop_config cfg = shard_like;
	cfg.disabled = true;
	struct loop *l = loop_new(&cfg);
	if (!l) {
		fprintf(stderr, "loop_new as root: %s\n", strerror(errno));
		return 3;
	}
	struct passwd *nb = getpwnam("nobody");
	if (!nb || setgroups(0, NULL) < 0 || setresgid(nb->pw_gid, nb->pw_gid, nb->pw_gid) < 0 ||
	    setresuid(nb->pw_uid, nb->pw_uid, nb->pw_uid) < 0 || geteuid() != nb->pw_uid)
		return 4;
	cfg.disabled = false;
	struct loop *after = loop_new(&cfg);
	bool refused = !after && errno == ENOMEM;
	loop_free(after);
	unsigned flags;
	const char *why = run_elsewhere(l, &flags);
	loop_free(l);
	if (why) {
		fprintf(stderr, "as nobody: %s\n", why);
		return 5;
	}
	return refused ? 0 : 1;
}

Test(loop, made_by_root_runs_after_the_switch_to_nobody, .timeout = 20)
{
	if (geteuid() != 0 || !getpwnam("nobody"))
		cr_skip_test("needs root and a user nobody");
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(made_by_root_child());
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st), "the child died (status 0x%x)", st);
	cr_assert_leq(WEXITSTATUS(st), 1, "the child failed with %d (see stderr)", WEXITSTATUS(st));
	cr_log_info("a loop made after the switch to nobody was %s",
	            WEXITSTATUS(st) == 0 ? "refused (ENOMEM): this kernel accounts rings"
	                                 : "accepted: this kernel does not account rings");
}
