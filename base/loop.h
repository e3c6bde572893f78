/* loop.h - the per-shard io_uring event loop: the only way ringpost does I/O.
 *
 * One loop per thread. Objects that have requests in flight embed a struct
 * loop_io; every SQE carries a tag (slot, generation, op) in user_data, never
 * a pointer, so a completion for an object that is gone is recognised and
 * dropped. An object may be freed only when its inflight count is zero
 * (see loop_io_release). Receive buffers come from one hand-registered buffer
 * ring per loop; the loop hands the bytes to the handler and gives the buffer
 * back to the kernel right after the handler returns.
 *
 * Also here: a hashed timer wheel (10 ms ticks) for per-session timeouts and
 * periodic work, deferred calls that run once after each batch of
 * completions (used to coalesce sends), and an inbox (struct mq) through
 * which other threads run functions on this loop.
 *
 * Nothing in this file blocks except the single wait for completions.
 */
#ifndef RP_LOOP_H
#define RP_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "list.h"
#include "mq.h"

struct loop;
struct io_uring_sqe;

/* Operations carried in a tag; the handler sees which request completed. */
enum loop_op {
	LOOP_OP_NONE = 0,
	LOOP_OP_ACCEPT,       /* multishot accept */
	LOOP_OP_RECV,         /* multishot recv from the buffer ring */
	LOOP_OP_SEND,         /* one send; short sends are resubmitted by the owner */
	LOOP_OP_CONNECT,      /* connect, linked to LOOP_OP_LINK_TIMEOUT */
	LOOP_OP_LINK_TIMEOUT, /* the deadline of a linked request */
	LOOP_OP_POLL,         /* poll_add (c-ares sockets) */
	LOOP_OP_CANCEL,       /* an async cancel request's own completion */
	LOOP_OP_READ,         /* plain read (eventfd) */
	LOOP_OP_USER,         /* first op number free for owners */
};

/* What one completion says, as handed to a loop_io's handler. */
struct loop_cqe {
	unsigned op;      /* enum loop_op of the request */
	int res;          /* cqe->res: bytes, fd, or -errno */
	unsigned flags;   /* cqe->flags (IORING_CQE_F_MORE, ...) */
	const char *data; /* received bytes (res of them) when a ring buffer was used */
};

struct loop_io;
/* loop_cqe_fn - handle one completion. The io's inflight count has already
 * been decremented when this was the request's last completion. */
typedef void (*loop_cqe_fn)(struct loop_io *io, const struct loop_cqe *cqe);

struct loop_io {
	uint32_t slot;       /* index in the loop's slot table; 0 = unregistered */
	uint32_t inflight;   /* requests whose last completion has not arrived */
	loop_cqe_fn handler; /* completion handler */
};

/* A timer in the loop's wheel. Embed it; zero-initialise it before first use. */
struct loop_timer;
typedef void (*loop_timer_fn)(struct loop_timer *t);
struct loop_timer {
	struct rp_list link; /* on a wheel slot (or about to fire); not linked
	                      * when not armed */
	uint64_t expire_ms;  /* monotonic deadline */
	loop_timer_fn fn;    /* runs once when the deadline passes */
};

/* A call deferred to the end of the current batch of completions. */
struct loop_defer;
typedef void (*loop_defer_fn)(struct loop_defer *d);
struct loop_defer {
	struct loop_defer *next; /* defer list link */
	bool queued;             /* already on the list */
	loop_defer_fn fn;
};

struct loop_config {
	unsigned sq_entries; /* submission queue size (power of two) */
	unsigned cq_entries; /* completion queue size (power of two) */
	unsigned buf_count;  /* receive buffers in the ring (power of two, <= 32768) */
	unsigned buf_size;   /* bytes per receive buffer */
	bool disabled;       /* make the ring disabled, for another thread: that
	                      * thread calls loop_enable before any other loop
	                      * call (see loop_new) */
};

/* loop_new - create a loop: its ring, its buffer ring, its inbox. Returns
 * NULL with errno when the kernel refuses io_uring (ENOMEM: the
 * locked-memory limit, see below); falls back gracefully when a setup flag
 * is refused. Without cfg->disabled the loop belongs to the calling thread
 * (with IORING_SETUP_SINGLE_ISSUER only the enabling task may submit).
 * With cfg->disabled the ring is made IORING_SETUP_R_DISABLED: nothing is
 * submitted until the thread that will run the loop calls loop_enable.
 * Why: a process without CAP_IPC_LOCK pays for the ring and buffer ring
 * out of RLIMIT_MEMLOCK (Linux 6.x), per user; a ring made with
 * CAP_IPC_LOCK is never accounted, even after the process gives the
 * capability up. So a daemon that drops privileges makes its loops
 * disabled while root and enables them in its threads afterwards. */
struct loop *loop_new(const struct loop_config *cfg);
/* loop_enable - on the thread that will run l: enable a loop made with
 * cfg->disabled (that thread becomes the ring's single issuer) and
 * register the ring fd for it. true at once for a loop already enabled;
 * false with errno when the kernel refuses. */
bool loop_enable(struct loop *l);
/* loop_free - the loop must be stopped and hold no registered objects.
 * Any thread, once the loop's thread is done with it; a loop never
 * enabled may be freed too. */
void loop_free(struct loop *l);
/* loop_run - process completions, timers and deferred calls until
 * loop_stop (then it may be run again). On the loop's thread, after
 * loop_enable when made disabled. */
void loop_run(struct loop *l);
/* loop_stop - make loop_run return after the current iteration (loop thread). */
void loop_stop(struct loop *l);
/* loop_inbox - the queue other threads push functions through. */
struct mq *loop_inbox(struct loop *l);
/* loop_now_ms - monotonic time cached at the start of this iteration. */
uint64_t loop_now_ms(const struct loop *l);
/* loop_registered - objects currently registered (for shutdown checks). */
unsigned loop_registered(const struct loop *l);
/* loop_max_busy_us - the longest stretch of work between two waits since
 * the last call (then reset): how long the loop was ever unresponsive. */
uint64_t loop_max_busy_us(struct loop *l);
/* loop_setup_flags - the ring setup flags the kernel accepted (for logs). */
unsigned loop_setup_flags(const struct loop *l);

/* loop_io_register - give io a slot; handler receives its completions. */
void loop_io_register(struct loop *l, struct loop_io *io, loop_cqe_fn handler);
/* loop_io_release - drop the slot; io->inflight must be zero. Late
 * completions for the old tag are then ignored. */
void loop_io_release(struct loop *l, struct loop_io *io);
/* loop_sqe - an SQE tagged for (io, op), counted in io->inflight. Submits
 * pending SQEs first when the queue is full; never returns NULL. */
struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_io *io, unsigned op);
/* loop_submit - submit prepared SQEs now (normally done once per iteration). */
void loop_submit(struct loop *l);
/* loop_tag - re-tag an SQE after a liburing prep helper (preps keep
 * user_data, but this makes the order irrelevant). */
void loop_tag(struct loop *l, struct io_uring_sqe *sqe, struct loop_io *io, unsigned op);
/* loop_user_data - the tag value loop_sqe gives (io, op); for cancel64. */
uint64_t loop_user_data(const struct loop *l, const struct loop_io *io, unsigned op);
/* loop_buf_group - the buffer group id of the receive buffer ring. */
uint16_t loop_buf_group(const struct loop *l);

/* loop_timer_arm - (re)arm t to fire fn after delay_ms (10 ms resolution). */
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms, loop_timer_fn fn);
/* loop_timer_disarm - no-op when not armed. */
void loop_timer_disarm(struct loop *l, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t)
{
	return rp_list_linked(&t->link);
}

/* loop_defer - run d->fn once after the current batch of completions. */
void loop_defer(struct loop *l, struct loop_defer *d, loop_defer_fn fn);
/* loop_defer_next - run d->fn once in the next iteration, after its
 * completions: work cut into slices lets I/O in between. The loop does not
 * sleep while such a call waits. */
void loop_defer_next(struct loop *l, struct loop_defer *d, loop_defer_fn fn);
/* loop_defer_cancel - take d off its list if queued. */
void loop_defer_cancel(struct loop *l, struct loop_defer *d);

#endif
