/* loop.c - per-shard io_uring event loop (see loop.h).
 *
 * Tag layout in user_data (64 bits):
 *   bits  0..31  slot index in the slot table (0 is never used)
 *   bits 32..55  slot generation (24 bits, bumped on every register/release)
 *   bits 56..63  enum loop_op (or an owner's op >= LOOP_OP_USER)
 * A completion whose generation does not match its slot belongs to an object
 * that is gone: its ring buffer (if any) is returned and nothing else happens.
 */
#include "loop.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define TAG_SLOT_MASK 0xffffffffull
#define TAG_GEN_SHIFT 32
#define TAG_GEN_MASK  0xffffffull
#define TAG_OP_SHIFT  56

#define WHEEL_SLOTS   1024 /* power of two */
#define WHEEL_TICK_MS 10
#define BUF_GROUP     0
#define CQE_BATCH     256

struct slot {
	struct loop_io *io; /* NULL when free */
	uint32_t gen;       /* generation of the current (or last) owner */
	uint32_t next_free; /* free list link when io == NULL */
};

struct loop {
	struct io_uring ring;
	unsigned setup_flags;
	bool disabled; /* made IORING_SETUP_R_DISABLED, loop_enable not yet called */
	bool stop;
	uint64_t now_ms;
	uint64_t max_busy_ns; /* longest work between two waits since last read */

	struct slot *slots; /* slot table; slots[0] unused */
	uint32_t nslots;
	uint32_t free_head; /* first free slot, 0 = none */
	unsigned registered;

	/* Receive buffer ring, registered by hand (liburing 2.3 has no helper). */
	struct io_uring_buf_ring *br;
	size_t br_size;
	char *bufs;
	unsigned buf_count, buf_size;
	unsigned buf_returns; /* buffers added since the last advance */

	/* Timer wheel. */
	struct rp_list wheel[WHEEL_SLOTS]; /* timers by deadline tick, hashed */
	uint64_t wheel_tick;               /* last tick processed */
	unsigned timers;                   /* armed timers */

	/* Deferred calls: this pass, and the next iteration's. */
	struct loop_defer *defer_head, **defer_tail;
	struct loop_defer *next_head, **next_tail;

	/* Inbox: other threads push, the eventfd read wakes us. */
	struct mq inbox;
	struct loop_io inbox_io;
	uint64_t inbox_val;
};

static uint64_t make_tag(const struct loop *l, const struct loop_io *io, unsigned op)
{
	rp_assert(io->slot && io->slot < l->nslots && l->slots[io->slot].io == io);
	return ((uint64_t)op << TAG_OP_SHIFT) |
	       ((uint64_t)(l->slots[io->slot].gen & TAG_GEN_MASK) << TAG_GEN_SHIFT) | io->slot;
}

/* ring_setup - try the fastest flags first, fall back when the kernel
 * refuses. Every set may be made disabled (R_DISABLED: Linux 5.10). */
static int ring_setup(struct loop *l, const struct loop_config *cfg)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
		IORING_SETUP_SUBMIT_ALL,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < RP_ARRAY_LEN(flag_sets); i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
		if (cfg->disabled)
			p.flags |= IORING_SETUP_R_DISABLED;
		p.cq_entries = cfg->cq_entries;
		rc = io_uring_queue_init_params(cfg->sq_entries, &l->ring, &p);
		if (rc == 0) {
			l->setup_flags = p.flags & ~IORING_SETUP_R_DISABLED;
			l->disabled = cfg->disabled;
			return 0;
		}
		if (rc != -EINVAL)
			break;
	}
	return rc;
}

static int buf_ring_setup(struct loop *l, const struct loop_config *cfg)
{
	l->buf_count = cfg->buf_count;
	l->buf_size = cfg->buf_size;
	rp_assert(l->buf_count && (l->buf_count & (l->buf_count - 1)) == 0 &&
	          l->buf_count <= 32768);
	l->br_size = (size_t)l->buf_count * sizeof(struct io_uring_buf);
	void *mem =
	    mmap(NULL, l->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	l->br = mem;
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)l->br;
	reg.ring_entries = l->buf_count;
	reg.bgid = BUF_GROUP;
	int rc = io_uring_register_buf_ring(&l->ring, &reg, 0);
	if (rc < 0)
		return rc;
	io_uring_buf_ring_init(l->br);
	l->bufs = xmalloc((size_t)l->buf_count * l->buf_size);
	unsigned mask = io_uring_buf_ring_mask(l->buf_count);
	for (unsigned i = 0; i < l->buf_count; i++)
		io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * l->buf_size, l->buf_size,
		                      (unsigned short)i, mask, (int)i);
	io_uring_buf_ring_advance(l->br, (int)l->buf_count);
	return 0;
}

static void buf_return(struct loop *l, unsigned bid)
{
	rp_assert(bid < l->buf_count);
	io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * l->buf_size, l->buf_size,
	                      (unsigned short)bid, io_uring_buf_ring_mask(l->buf_count),
	                      (int)l->buf_returns);
	l->buf_returns++;
}

static void inbox_arm(struct loop *l)
{
	struct io_uring_sqe *sqe = loop_sqe(l, &l->inbox_io, LOOP_OP_READ);
	io_uring_prep_read(sqe, l->inbox.efd, &l->inbox_val, sizeof(l->inbox_val), 0);
	loop_tag(l, sqe, &l->inbox_io, LOOP_OP_READ);
}

static void inbox_cqe(struct loop_io *io, const struct loop_cqe *c)
{
	struct loop *l = RP_CONTAINER_OF(io, struct loop, inbox_io);
	if (c->res < 0 && c->res != -EAGAIN && c->res != -EINTR && c->res != -ECANCELED)
		rp_panic("inbox eventfd read failed: %s", strerror(-c->res));
	if (c->res == -ECANCELED)
		return;
	mq_run(&l->inbox, l);
	inbox_arm(l);
}

struct loop *loop_new(const struct loop_config *cfg)
{
	struct loop *l = xcalloc(1, sizeof(*l));
	int rc = ring_setup(l, cfg);
	if (rc < 0) {
		free(l);
		errno = -rc;
		return NULL;
	}
	rc = buf_ring_setup(l, cfg);
	if (rc < 0) {
		io_uring_queue_exit(&l->ring);
		if (l->br)
			munmap(l->br, l->br_size);
		free(l);
		errno = -rc;
		return NULL;
	}
	/* The buffer ring may be registered while the ring is disabled. The
	 * kernel decides when the ring is made whether it and what is
	 * registered on it later count against RLIMIT_MEMLOCK (only when the
	 * maker lacks CAP_IPC_LOCK). Registering the ring fd is per task: the
	 * loop's thread does it (loop_enable). */
	if (!l->disabled)
		io_uring_register_ring_fd(&l->ring);

	l->nslots = 64;
	l->slots = xcalloc(l->nslots, sizeof(*l->slots));
	for (uint32_t i = l->nslots - 1; i >= 1; i--) {
		l->slots[i].next_free = l->free_head;
		l->free_head = i;
	}
	l->defer_tail = &l->defer_head;
	l->next_tail = &l->next_head;
	l->now_ms = rp_mono_ms();
	l->wheel_tick = l->now_ms / WHEEL_TICK_MS;
	for (unsigned i = 0; i < WHEEL_SLOTS; i++)
		rp_list_init(&l->wheel[i]);
	if (!mq_init(&l->inbox, false)) {
		int e = errno;
		loop_free(l);
		errno = e;
		return NULL;
	}
	loop_io_register(l, &l->inbox_io, inbox_cqe);
	inbox_arm(l);
	return l;
}

bool loop_enable(struct loop *l)
{
	if (!l->disabled)
		return true;
	/* liburing 2.3 declares io_uring_enable_rings but does not export it. */
	if (syscall(__NR_io_uring_register, l->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL,
	            0) < 0)
		return false;
	l->disabled = false;
	/* Registering the ring fd saves a fget/fput per io_uring_enter. */
	io_uring_register_ring_fd(&l->ring);
	return true;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	io_uring_queue_exit(&l->ring); /* cancels what is left, including the inbox read */
	if (l->inbox.efd > 0) {
		mq_run(&l->inbox, l);
		mq_destroy(&l->inbox);
	}
	if (l->br)
		munmap(l->br, l->br_size);
	free(l->bufs);
	free(l->slots);
	free(l);
}

struct mq *loop_inbox(struct loop *l)
{
	return &l->inbox;
}

uint64_t loop_now_ms(const struct loop *l)
{
	return l->now_ms;
}

unsigned loop_registered(const struct loop *l)
{
	return l->registered - 1; /* minus the inbox */
}

uint64_t loop_max_busy_us(struct loop *l)
{
	uint64_t v = l->max_busy_ns / 1000;
	l->max_busy_ns = 0;
	return v;
}

unsigned loop_setup_flags(const struct loop *l)
{
	return l->setup_flags;
}

uint16_t loop_buf_group(const struct loop *l)
{
	(void)l;
	return BUF_GROUP;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

void loop_io_register(struct loop *l, struct loop_io *io, loop_cqe_fn handler)
{
	rp_assert(io->slot == 0);
	if (!l->free_head) {
		uint32_t old = l->nslots;
		rp_assert(old < (1u << 31));
		l->nslots = old * 2;
		l->slots = xrealloc(l->slots, l->nslots * sizeof(*l->slots));
		memset(l->slots + old, 0, (l->nslots - old) * sizeof(*l->slots));
		for (uint32_t i = l->nslots - 1; i >= old; i--) {
			l->slots[i].next_free = l->free_head;
			l->free_head = i;
		}
	}
	uint32_t s = l->free_head;
	l->free_head = l->slots[s].next_free;
	l->slots[s].io = io;
	l->slots[s].gen++;
	io->slot = s;
	io->inflight = 0;
	io->handler = handler;
	l->registered++;
}

void loop_io_release(struct loop *l, struct loop_io *io)
{
	if (!io->slot)
		return;
	if (io->inflight)
		rp_panic("releasing slot %u with %u requests in flight", io->slot, io->inflight);
	struct slot *s = &l->slots[io->slot];
	rp_assert(s->io == io);
	s->io = NULL;
	s->gen++;
	s->next_free = l->free_head;
	l->free_head = io->slot;
	io->slot = 0;
	l->registered--;
}

struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_io *io, unsigned op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
	while (!sqe) {
		int rc = io_uring_submit(&l->ring);
		if (rc < 0 && rc != -EBUSY && rc != -EINTR && rc != -EAGAIN)
			rp_panic("io_uring_submit: %s", strerror(-rc));
		sqe = io_uring_get_sqe(&l->ring);
	}
	io_uring_sqe_set_data64(sqe, make_tag(l, io, op));
	io->inflight++;
	return sqe;
}

void loop_submit(struct loop *l)
{
	int rc = io_uring_submit(&l->ring);
	if (rc < 0 && rc != -EBUSY && rc != -EINTR && rc != -EAGAIN)
		rp_panic("io_uring_submit: %s", strerror(-rc));
}

void loop_tag(struct loop *l, struct io_uring_sqe *sqe, struct loop_io *io, unsigned op)
{
	io_uring_sqe_set_data64(sqe, make_tag(l, io, op));
}

uint64_t loop_user_data(const struct loop *l, const struct loop_io *io, unsigned op)
{
	return make_tag(l, io, op);
}

/* ---- timers ------------------------------------------------------------ */

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms, loop_timer_fn fn)
{
	loop_timer_disarm(l, t);
	t->fn = fn;
	t->expire_ms = l->now_ms + delay_ms;
	uint64_t tick = (t->expire_ms + WHEEL_TICK_MS - 1) / WHEEL_TICK_MS;
	if (tick <= l->wheel_tick)
		tick = l->wheel_tick + 1;
	rp_list_add(&l->wheel[tick & (WHEEL_SLOTS - 1)], &t->link);
	l->timers++;
}

void loop_timer_disarm(struct loop *l, struct loop_timer *t)
{
	if (!rp_list_linked(&t->link))
		return;
	rp_list_del(&t->link);
	rp_assert(l->timers > 0);
	l->timers--;
}

static void timers_run(struct loop *l)
{
	uint64_t now_tick = l->now_ms / WHEEL_TICK_MS;
	unsigned steps = 0;
	while (l->wheel_tick < now_tick) {
		l->wheel_tick++;
		struct rp_list *slot = &l->wheel[l->wheel_tick & (WHEEL_SLOTS - 1)];
		/* Move the due timers to a list of their own first: callbacks
		 * may re-arm into this slot. A timer disarmed (or re-armed) by
		 * an earlier callback leaves the due list and does not fire. */
		struct rp_list due, *pos, *tmp;
		rp_list_init(&due);
		rp_list_foreach_safe(pos, tmp, slot)
		{
			if (rp_list_entry(pos, struct loop_timer, link)->expire_ms <= l->now_ms)
				rp_list_move_tail(&due, pos);
		}
		while ((pos = rp_list_first(&due))) {
			struct loop_timer *t = rp_list_entry(pos, struct loop_timer, link);
			loop_timer_disarm(l, t);
			t->fn(t);
		}
		/* After a long stall, one pass over the wheel fires everything due. */
		if (++steps >= WHEEL_SLOTS) {
			l->wheel_tick = now_tick;
			break;
		}
	}
}

/* ---- deferred calls ---------------------------------------------------- */

void loop_defer(struct loop *l, struct loop_defer *d, loop_defer_fn fn)
{
	d->fn = fn;
	if (d->queued)
		return;
	d->queued = true;
	d->next = NULL;
	*l->defer_tail = d;
	l->defer_tail = &d->next;
}

void loop_defer_next(struct loop *l, struct loop_defer *d, loop_defer_fn fn)
{
	d->fn = fn;
	if (d->queued)
		return;
	d->queued = true;
	d->next = NULL;
	*l->next_tail = d;
	l->next_tail = &d->next;
}

static bool unlink_defer(struct loop_defer **head, struct loop_defer ***tail, struct loop_defer *d)
{
	for (struct loop_defer **pp = head; *pp; pp = &(*pp)->next) {
		if (*pp == d) {
			*pp = d->next;
			if (*tail == &d->next)
				*tail = pp;
			return true;
		}
	}
	return false;
}

void loop_defer_cancel(struct loop *l, struct loop_defer *d)
{
	if (!d->queued)
		return;
	if (!unlink_defer(&l->defer_head, &l->defer_tail, d))
		unlink_defer(&l->next_head, &l->next_tail, d);
	d->queued = false;
	d->next = NULL;
}

/* next_splice - the next iteration has come: its calls join this pass. */
static void next_splice(struct loop *l)
{
	if (!l->next_head)
		return;
	*l->defer_tail = l->next_head;
	l->defer_tail = l->next_tail;
	l->next_head = NULL;
	l->next_tail = &l->next_head;
}

static void defer_run(struct loop *l)
{
	/* Calls queued while running are run in the same pass. */
	while (l->defer_head) {
		struct loop_defer *d = l->defer_head;
		l->defer_head = d->next;
		if (!l->defer_head)
			l->defer_tail = &l->defer_head;
		d->queued = false;
		d->next = NULL;
		d->fn(d);
	}
}

/* ---- the loop ---------------------------------------------------------- */

static void dispatch(struct loop *l, uint64_t tag, int res, unsigned flags)
{
	uint32_t slot = (uint32_t)(tag & TAG_SLOT_MASK);
	uint32_t gen = (uint32_t)((tag >> TAG_GEN_SHIFT) & TAG_GEN_MASK);
	unsigned op = (unsigned)(tag >> TAG_OP_SHIFT);
	struct loop_cqe c = { .op = op, .res = res, .flags = flags, .data = NULL };
	bool has_buf = flags & IORING_CQE_F_BUFFER;
	unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;

	if (has_buf && res > 0)
		c.data = l->bufs + (size_t)bid * l->buf_size;
	if (slot && slot < l->nslots && l->slots[slot].io &&
	    (l->slots[slot].gen & TAG_GEN_MASK) == gen) {
		struct loop_io *io = l->slots[slot].io;
		if (!(flags & IORING_CQE_F_MORE)) {
			rp_assert(io->inflight > 0);
			io->inflight--;
		}
		io->handler(io, &c);
	} else {
		log_debug("stale completion slot=%u gen=%u op=%u res=%d", slot, gen, op, res);
	}
	if (has_buf)
		buf_return(l, bid);
}

static void reap(struct loop *l)
{
	struct io_uring_cqe *cqes[CQE_BATCH];
	for (;;) {
		unsigned n = io_uring_peek_batch_cqe(&l->ring, cqes, CQE_BATCH);
		if (!n)
			break;
		for (unsigned i = 0; i < n; i++) {
			uint64_t tag = io_uring_cqe_get_data64(cqes[i]);
			int res = cqes[i]->res;
			unsigned flags = cqes[i]->flags;
			dispatch(l, tag, res, flags);
		}
		io_uring_cq_advance(&l->ring, n);
		if (l->buf_returns) {
			io_uring_buf_ring_advance(l->br, (int)l->buf_returns);
			l->buf_returns = 0;
		}
		if (n < CQE_BATCH)
			break;
	}
}

void loop_run(struct loop *l)
{
	if (l->disabled)
		rp_panic("loop_run: the ring is disabled (loop_enable first)");
	log_set_buffered(true);
	while (!l->stop) {
		defer_run(l);
		log_flush();
		if (l->stop)
			break;

		struct io_uring_cqe *cqe;
		int rc;
		if (l->next_head) {
			/* Work waits for the next iteration: look for
			 * completions without sleeping. */
			struct __kernel_timespec ts = { 0 };
			rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
		} else if (l->timers) {
			/* Sleep until the next wheel tick at most. */
			uint64_t next_ms = (l->wheel_tick + 1) * WHEEL_TICK_MS;
			uint64_t now = rp_mono_ms();
			uint64_t wait = next_ms > now ? next_ms - now : 0;
			struct __kernel_timespec ts = { .tv_sec = (long long)(wait / 1000),
				                        .tv_nsec =
				                            (long long)(wait % 1000) * 1000000 };
			rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
		} else {
			rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, NULL, NULL);
		}
		if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
			rp_panic("io_uring wait: %s", strerror(-rc));
		uint64_t busy_start = rp_mono_ns();
		l->now_ms = busy_start / 1000000;
		reap(l);
		timers_run(l);
		next_splice(l);
		defer_run(l);
		uint64_t busy = rp_mono_ns() - busy_start;
		if (busy > l->max_busy_ns)
			l->max_busy_ns = busy;
	}
	next_splice(l);
	defer_run(l);
	io_uring_submit(&l->ring);
	log_flush();
	l->stop = false; /* loop_run may be called again (tests, fuzz targets) */
}
