/* sink.h - ringpost-sink internals: options, loop threads, counters.
 *
 * One process, --threads event loops. Each loop owns its listeners (one
 * SO_REUSEPORT socket per --listen address), its sessions and its counters;
 * counters have one writer (the loop) and are read by the main thread, which
 * prints the JSON lines. Shared across loops: the domain registry and the
 * --rcpt-script table (both behind a mutex, off the per-message path).
 */
#ifndef RP_BENCH_SINK_H
#define RP_BENCH_SINK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench/bench_histo.h"
#include "bench/bench_util.h"
#include "base/buf.h"
#include "base/mq.h"
#include "base/loop.h"
#include "base/tls.h"

#define SINK_MAX_DOMAINS 65536         /* more distinct domains fold into "(other)" */
#define SINK_MAX_SIZE    (64ull << 20) /* announced in SIZE */
#define SINK_MAX_RCPTS   1000          /* per transaction; more get 452 4.5.3 */
#define SINK_MAX_CODE    600           /* reply codes counted in "rejected" */
#define SINK_NO_DOMAIN   UINT32_MAX

/* --fault: probabilities per session (connect421, tarpit, silence), per
 * message (data451, drop, drop250) or per recipient (rcpt451, rcpt550). */
struct sink_faults {
	double connect421, rcpt451, rcpt550, data451, drop, tarpit, silence;
	double drop250;     /* the message is complete (and saved), then the connection
	                     * closes instead of the 250: the client must send it again */
	uint64_t tarpit_ms; /* reply delay of a tarpitted session */
};

struct sink_addr {
	char text[80]; /* as given */
	struct sockaddr_storage ss;
	socklen_t len;
};

struct sink_opts {
	struct sink_addr *listen; /* --listen, at least one */
	unsigned nlisten;
	unsigned threads;           /* event loops */
	const char *stats_file;     /* NULL: stdout at exit only */
	uint64_t stats_interval_ms; /* 0: only at exit */
	const char *save_dir;       /* NULL: do not keep messages */
	const char *latency_header; /* "X-Bench-Sent" */
	uint64_t reply_delay_ms;    /* every reply waits this long */
	struct sink_faults faults;
	int *script; /* --rcpt-script codes, NULL when none */
	unsigned nscript;
	double max_rate;                /* messages per second, 0 = unlimited */
	uint64_t seed;                  /* fault PRNG seed */
	char hostname[128];             /* in the greeting and EHLO reply */
	const char *tls_cert, *tls_key; /* --tls-cert, --tls-key: offer STARTTLS */
	bool tls_required;              /* --tls-required: no MAIL before STARTTLS */
	bool tls_implicit;              /* --tls-implicit: TLS from the first byte */
};

/* Per-domain counters of one loop. */
struct sink_dom_ctr {
	bench_ctr messages, recipients, bytes;
};

/* Counters of one loop: written by it alone, read by the stats printer. */
struct sink_counters {
	bench_ctr messages;                /* accepted messages */
	bench_ctr recipients;              /* accepted recipients of accepted messages */
	bench_ctr bytes;                   /* content bytes of accepted messages */
	bench_ctr dropped;                 /* connections closed mid-DATA by the drop fault */
	bench_ctr dropped_250;             /* messages received whole, 250 withheld (drop250) */
	bench_ctr silenced, tarpitted;     /* sessions the silence / tarpit fault took */
	bench_ctr saved;                   /* messages written by --save */
	bench_ctr rejected[SINK_MAX_CODE]; /* 4xx/5xx replies sent, by code */
	bench_ctr tls_open;                /* sessions in TLS now (goes up and down) */
	bench_ctr tls_handshakes;          /* TLS handshakes completed */
	bench_ctr tls_resumed;             /* of which resumed an earlier session */
	bench_ctr tls_failed;              /* TLS begun, handshake never completed */
	bench_ctr tls_messages;            /* accepted messages that came over TLS */
	struct histo latency;              /* end to end, from the latency header */
	struct sink_dom_ctr *dom;          /* [SINK_MAX_DOMAINS], by domain id */
};

/* A thread's cache of domain ids: lookups without the registry's lock. */
struct sink_dom_cache {
	uint32_t *slots; /* id + 1, 0 = empty; open addressing */
	uint32_t cap;    /* power of two */
	uint32_t used;
};

struct sink;
struct sink_sess;

/* One event-loop thread. */
struct sink_loop {
	struct sink *sk;
	unsigned index;
	pthread_t thread;
	struct loop *loop;
	struct sink_listener *listeners; /* one per --listen address */
	struct rp_list sessions;         /* every live session (sweep, peaks) */
	unsigned nsessions;
	struct loop_timer sweep; /* trims idle sessions' buffers */
	struct bench_rand rand;  /* fault decisions */
	uint64_t rate_next_us;   /* --max-rate: earliest next acceptance */
	uint64_t queued_seq;     /* messages accepted by this loop */
	uint32_t *dom_mark;      /* [SINK_MAX_DOMAINS]: message seen per domain */
	uint32_t mark_epoch;
	struct sink_dom_cache cache;
	struct sink_counters ctr;
	struct mq_item stop_item;
	int start_err; /* 0, or errno when the loop could not start */
	bool started;
};

/* The registry of domain names, shared by every loop. */
struct sink_domains {
	pthread_mutex_t lock;
	_Atomic uint32_t count;        /* ids in use */
	char *names[SINK_MAX_DOMAINS]; /* lower-case; immutable once published */
	uint64_t hashes[SINK_MAX_DOMAINS];
	uint32_t *table;                            /* id + 1 by hash, 2 * SINK_MAX_DOMAINS slots */
	_Atomic int64_t sessions[SINK_MAX_DOMAINS]; /* open sessions that joined */
	_Atomic int64_t peak[SINK_MAX_DOMAINS];
};

struct sink {
	struct sink_opts opt;
	struct sink_loop *loops;
	struct sink_domains *domains;
	_Atomic int64_t sessions; /* open sessions, all loops */
	_Atomic int64_t peak_sessions;
	_Atomic uint64_t save_seq;  /* last --save file number */
	int unacked_fd;             /* --save with drop250: DIR/unacked, O_APPEND; else -1 */
	struct sink_script *script; /* --rcpt-script state, NULL when none */
	struct buf greeting;        /* "220 host ESMTP ...\r\n" */
	struct buf ehlo;            /* the EHLO reply, every line */
	struct buf ehlo_starttls;   /* the same with STARTTLS (--tls-cert, before TLS) */
	struct tls_ctx *tls;        /* --tls-cert: the server context, NULL without */
	pthread_mutex_t start_lock;
	pthread_cond_t start_cond;
	unsigned started; /* loops that finished starting */
};

/* ---- sink_session.c ---------------------------------------------------- */

/* sink_session_setup - build the greeting and EHLO reply (before threads). */
void sink_session_setup(struct sink *sk);
/* sink_session_start - run the SMTP server on an accepted socket fd. */
void sink_session_start(struct sink_loop *sl, int fd);
/* sink_sweep_start - arm the periodic trim of idle sessions' buffers. */
void sink_sweep_start(struct sink_loop *sl);

/* ---- sink_stats.c ------------------------------------------------------ */

/* sink_stats_init - the registry and each loop's counters (before threads). */
void sink_stats_init(struct sink *sk);
/* sink_domain_id - id of a domain (lower-cased here; "" for none); on the
 * loop thread. Returns the "(other)" id once the registry is full. */
uint32_t sink_domain_id(struct sink_loop *sl, const char *d, size_t n);
/* sink_domain_join - one more open session counted for domain id. */
void sink_domain_join(struct sink *sk, uint32_t id);
/* sink_domain_leave - undo sink_domain_join. */
void sink_domain_leave(struct sink *sk, uint32_t id);
/* sink_sessions_add - open sessions += delta (peak kept). */
void sink_sessions_add(struct sink *sk, int delta);
/* sink_stats_json - append one JSON line (with "\n") of every counter. */
void sink_stats_json(struct sink *sk, struct buf *out);

/* ---- sink_fault.c ------------------------------------------------------ */

/* sink_faults_parse - "rcpt451=0.1,tarpit=0.5:200"; false with err set. */
bool sink_faults_parse(const char *spec, struct sink_faults *f, char *err, size_t errlen);
/* sink_script_parse - "451,451,250"; false on bad syntax. Caller frees *codes. */
bool sink_script_parse(const char *s, int **codes, unsigned *n);
/* sink_script_new - the per-address RCPT counters for --rcpt-script. */
struct sink_script *sink_script_new(void);
/* sink_script_code - the code for this RCPT of addr (any thread). */
int sink_script_code(struct sink *sk, const char *addr, size_t n);
/* sink_chance - true with probability p (loop thread). */
bool sink_chance(struct sink_loop *sl, double p);
/* sink_rate_delay_ms - --max-rate: book the next acceptance slot and return
 * how long the reply must wait for it (0 = now). */
uint64_t sink_rate_delay_ms(struct sink_loop *sl);
/* sink_reply_line - "451 4.3.0 text\r\n" for a code chosen by a fault or
 * the script; returns its length. */
size_t sink_reply_line(int code, const char *stage, char *out, size_t outlen);

#endif
