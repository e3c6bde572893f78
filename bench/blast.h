/* blast.h - ringpost-blast internals: the run, its sessions, the message
 * generator, and the protocol modes.
 *
 * The run (blast_run.c) owns connections, pacing, counters and the end of
 * the run; a mode (blast_smtp.c, blast_http.c) carries transactions over a
 * session and reports how each ended. A transaction is one message (SMTP,
 * one POST) or --batch messages (one batch POST); a session has one in
 * flight, or up to --pipeline when the mode pipelines, answered in order.
 * The run never looks at protocol bytes and a mode never decides what to
 * send next: they meet in struct blast_mode and the blast_sess_* calls below.
 */
#ifndef RP_BENCH_BLAST_H
#define RP_BENCH_BLAST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench/bench_histo.h"
#include "bench/bench_util.h"
#include "base/buf.h"
#include "base/conn.h"
#include "base/loop.h"
#include "base/tls.h"

#define BLAST_MAX_RCPTS 1000
#define BLAST_ERR_KEYS  16 /* distinct non-code error keys ("connect", "lost", ...) */

struct blast;
struct blast_sess;

/* How a message is rendered (blast_msg.c). */
enum blast_msg_format {
	BLAST_MSG_MIME, /* RFC 5322 headers and body lines: SMTP content */
	BLAST_MSG_JSON, /* the API's message object: {"from", "to", "subject", "headers", "text"} */
};

/* A protocol mode: how one session talks. Callbacks run on the loop thread.
 * A mode calls blast_sess_ready when the session can take messages,
 * blast_sess_done when the oldest transaction in flight has its final
 * answer (after blast_sess_fail_msgs for the messages of a batch that
 * failed alone), and blast_sess_fail when the session is unusable. */
struct blast_mode {
	const char *name;             /* --mode value and "mode" in the report */
	size_t state_size;            /* bytes of per-session state (blast_sess_state) */
	enum blast_msg_format format; /* what blast_msg_init sizes messages for */
	bool batches;                 /* takes --batch: a transaction carries several messages */
	bool pipelines;               /* takes --pipeline: several transactions in flight */
	/* start - the connection is up: greet, handshake, then ready. */
	void (*start)(struct blast_sess *s);
	/* send - s->job is set: write the whole transaction (or its start). */
	void (*send)(struct blast_sess *s);
	/* data - bytes arrived in s->conn.in. */
	void (*data)(struct blast_sess *s);
	/* quit - the run is over and the session idle: leave politely (NULL:
	 * just close). */
	void (*quit)(struct blast_sess *s);
	/* release - the session is being freed: free what the state holds
	 * (NULL: nothing to free). */
	void (*release)(struct blast_sess *s);
	/* tls_ready - the TLS handshake completed (NULL: the mode has no TLS). */
	void (*tls_ready)(struct blast_sess *s);
};

extern const struct blast_mode blast_mode_smtp;
extern const struct blast_mode blast_mode_http;       /* blast_http.c: POST /v1/messages */
extern const struct blast_mode blast_mode_http_batch; /* POST /v1/messages/batch */

struct blast_opts {
	const struct blast_mode *mode;
	char server_text[80];
	struct sockaddr_storage server;
	socklen_t server_len;
	unsigned connections;
	uint64_t messages;    /* total; 0 = until --duration */
	uint64_t duration_ms; /* 0 = until --messages */
	uint32_t size_min;    /* --size, or --size-mix MIN */
	uint32_t size_max;    /* == size_min for --size */
	unsigned domains;
	const char *domain_format; /* printf format with one %u */
	unsigned rcpts;
	const char *from;
	char **rcpt_list; /* --rcpt-file: recipients used in turn (instead of
	                   * userNNNNNN@domain), NULL = none */
	size_t nrcpt_list;
	char *body; /* --body-file: every message is this content (CRLF
	             * lines), NULL = generated messages */
	size_t body_len;
	double rate;       /* messages per second overall; 0 = unpaced */
	bool pipelining;   /* false: --no-pipelining */
	bool chunking;     /* false: --no-chunking */
	unsigned batch;    /* messages per transaction (--batch; 1 unless the mode batches) */
	unsigned pipeline; /* transactions in flight per session (--pipeline; default 1) */
	const char *key;   /* --key: the API's bearer token */
	bool json;
	bool progress;
	uint64_t timeout_ms; /* longest wait for one reply */
	uint64_t seed;       /* size-mix PRNG */
	bool starttls;       /* --starttls: STARTTLS after EHLO, the handshake, EHLO again */
	bool tls_implicit;   /* --tls: TLS from the first byte (a submissions port) */
	bool tls_resume;     /* --tls-resume: resume the TLS session a previous one got */
	const char *tls_ca;  /* --tls-ca: verify the server against these CAs; NULL: never */
	char tls_name[256];  /* --tls-name (default the --server host): SNI, the verified name */
	bool handshake_loop; /* --handshakes: no mail; sessions end once ready, replaced */
	uint64_t handshakes; /* --handshakes N: the run ends after N of them (0: --duration) */
	bool hold;           /* --hold: ready sessions stay idle until --duration ends */
};

/* One transaction: chosen by the run, written by the mode with
 * blast_msg_write (or blast_msg_json for each of its messages). */
struct blast_job {
	uint64_t seq;          /* number of its first message, from 0 */
	uint32_t count;        /* messages: seq .. seq + count - 1 (> 1 only in a batch) */
	uint32_t size;         /* exact content bytes of each message */
	uint64_t start_ns;     /* monotonic: when the transaction was written */
	uint64_t sent_real_ns; /* CLOCK_REALTIME then: the X-Bench-Sent value */
};

enum blast_sess_state {
	BS_CONNECTING, /* connect in flight */
	BS_HANDSHAKE,  /* connected, the mode is greeting */
	BS_READY,      /* nothing in flight, waiting for a message (pacing) */
	BS_BUSY,       /* one or more transactions are in flight */
	BS_QUIT,       /* leaving */
	BS_NSTATES,
};

/* A transaction in flight, as the run counts it. */
struct blast_tx {
	uint64_t start_ns; /* monotonic: when it was written */
	uint32_t count;    /* its messages */
	uint32_t failed;   /* of which already counted as failed (blast_sess_fail_msgs) */
};

struct blast_sess {
	struct conn conn;
	struct blast *b;
	struct rp_list link;      /* on b->sessions */
	struct rp_list wait_link; /* on the pacing queue */
	struct loop_timer timer;  /* reply timeout */
	uint8_t state;            /* enum blast_sess_state */
	bool queued;              /* on the pacing queue */
	bool connect_done;        /* the connect completed (either way) */
	bool ever_connected;
	bool retiring;                           /* the server closes after the answers in flight */
	bool tls_started;                        /* TLS began on this connection */
	bool tls_up;                             /* and its handshake completed */
	bool held;                               /* --hold: counted among the held sessions */
	uint64_t tls_start_ns;                   /* monotonic: when TLS began */
	struct blast_tx *tx;                     /* ring of --pipeline transactions in flight */
	unsigned tx_head, tx_n;                  /* oldest, and how many */
	struct blast_job job;                    /* the newest transaction (the one send writes) */
	_Alignas(16) unsigned char mode_state[]; /* the mode's state_size bytes */
};

/* blast_sess_state - the mode's private state of s. */
static inline void *blast_sess_state(struct blast_sess *s)
{
	return s->mode_state;
}

/* blast_sess_oldest - the oldest transaction in flight (the next answer is
 * its), or NULL when nothing is in flight. Valid until that answer is
 * counted. */
static inline const struct blast_tx *blast_sess_oldest(const struct blast_sess *s)
{
	return s->tx_n ? &s->tx[s->tx_head] : NULL;
}

/* ---- blast_run.c ------------------------------------------------------- */

/* blast_sess_ready - the handshake is done: s can take messages (now,
 * after pacing, or never: quit). */
void blast_sess_ready(struct blast_sess *s);
/* blast_sess_fail_msgs - n messages of the oldest transaction in flight
 * failed on their own (a batch entry's error); key is a reply code ("503")
 * or a short word (copied; at most 15 characters are kept). Capped at the
 * messages not yet counted. */
void blast_sess_fail_msgs(struct blast_sess *s, uint32_t n, const char *key);
/* blast_sess_done - the oldest transaction ended with this reply code: its
 * messages not counted by blast_sess_fail_msgs are accepted if code is 2xx,
 * else failed under code. The session takes more messages when it has room. */
void blast_sess_done(struct blast_sess *s, int code);
/* blast_sess_retire - the server closes after answering what is in flight:
 * no new transactions on s; it closes (and is replaced) once idle. */
void blast_sess_retire(struct blast_sess *s);
/* blast_sess_fail - the session is unusable (what: "lost", "timeout", or a
 * reply code like "421"); fails every message in flight under what (or
 * counts what once when nothing is in flight), closes. */
void blast_sess_fail(struct blast_sess *s, const char *what);
/* blast_sess_wait - (re)arm the reply timeout: a reply is due. */
void blast_sess_wait(struct blast_sess *s);
/* blast_sess_tls_start - switch s to TLS now (the ClientHello goes out;
 * unread input is dropped, conn.h): the run's client context, --tls-name,
 * the session to resume with --tls-resume. The mode hears of the end of the
 * handshake through its tls_ready; a failure closes the session. */
void blast_sess_tls_start(struct blast_sess *s);
/* blast_run_fatal - the server cannot serve this run at all (a capability
 * the options need is missing): why goes to stderr once, s fails under key,
 * the run ends and blast_run returns false. */
void blast_run_fatal(struct blast_sess *s, const char *key, const char *why);
/* blast_opts_of - the options of the run s belongs to. */
const struct blast_opts *blast_opts_of(const struct blast_sess *s);
/* blast_scratch - a buffer the mode may use between two callbacks. */
struct buf *blast_scratch(struct blast_sess *s);

/* blast_run - the whole run on this thread; fills the report. Returns false
 * when the server could never be reached or could not serve the run
 * (blast_run_fatal). */
struct blast_report {
	uint64_t messages; /* messages whose transaction ended */
	uint64_t requests; /* transactions ended (SMTP transactions, HTTP requests) */
	uint64_t accepted;
	double seconds; /* first transaction written -> last one ended */
	struct histo_summary latency;
	unsigned nerr;
	struct {
		char key[16];
		uint64_t n;
	} errors[BLAST_ERR_KEYS + 600];
	/* TLS (--starttls, --tls): handshakes completed, of which resumed, and
	 * failed (TLS begun, never completed); first began -> last completed. */
	uint64_t tls_handshakes, tls_resumed, tls_failed;
	double tls_seconds;
	struct histo_summary tls_latency; /* TLS begun -> handshake completed */
	/* --handshakes: sessions that got ready (and quit); start -> last one. */
	uint64_t loop_sessions;
	double loop_seconds;
	/* --hold: most sessions held at once; seconds from the start until all
	 * --connections were (0: never); held sessions the server closed. */
	uint64_t held_peak, idle_closed;
	double all_held_s;
};
bool blast_run(const struct blast_opts *o, struct blast_report *rep);

/* ---- blast_msg.c ------------------------------------------------------- */

/* blast_msg_init - build the templates for o; returns the smallest message
 * size possible in o->mode's format with these headers (smaller sizes are
 * raised to it). */
uint32_t blast_msg_init(const struct blast_opts *o);
/* blast_msg_rcpt - recipient j of message seq into out (>= 300 bytes);
 * returns its length. */
size_t blast_msg_rcpt(uint64_t seq, unsigned j, char *out);
/* blast_msg_write - append exactly job->size bytes of message to out. */
void blast_msg_write(const struct blast_job *job, struct buf *out);
/* blast_msg_json - append message seq as the API's JSON object, exactly
 * size bytes (>= the floor of blast_msg_init), stamped with sent_real_ns. */
void blast_msg_json(uint64_t seq, uint32_t size, uint64_t sent_real_ns, struct buf *out);
/* blast_msg_free - release the templates. */
void blast_msg_free(void);

#endif
