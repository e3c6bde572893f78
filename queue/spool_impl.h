/* spool_impl.h - what spool.c and spool_writer.c share; not a public API. */
#ifndef RP_SPOOL_IMPL_H
#define RP_SPOOL_IMPL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "spool.h"

#define SPOOL_FORMAT_VERSION 1
#define SPOOL_ROOM_MIN       (1u << 20) /* less room than this: not accepting */
/* Bodies are stored in chunks that never need more than one page each:
 * whole overflow pages (spool.page_max bytes) for the bulk of a message,
 * and quarter-page leaf chunks (spool.inline_max bytes) for the rest, which
 * pack four to a page across message boundaries. A freed page therefore
 * always fits the next chunk, so churning mixed sizes does not fragment
 * the file the way multi-page overflow runs do, and small messages do not
 * leave pages half empty (measured in bench/run churn). */
#define SPOOL_BODY_KEY 16
/* spool_body_chunk - the size of the next chunk for remaining bytes. */
size_t spool_body_chunk(const struct spool *sp, size_t remaining);

struct spool {
	MDB_env *env;
	MDB_dbi dbi_meta, dbi_msg, dbi_body, dbi_rcpt, dbi_expire, dbi_mbox, dbi_mbox_meta;
	MDB_dbi dbi_suppress; /* lower-case address -> struct spool_suppress_hdr, reason */
	MDB_dbi dbi_events;   /* be64 sequence -> JSON object (spool_events.c) */
	MDB_dbi dbi_warmup;   /* "SOURCE DOMAIN" -> warm-up counter (spool_warmup.c) */
	/* Events: the writer's committed numbers (ev) and those of the
	 * transaction being built (ev_txn), published after each commit. */
	struct spool_evstate {
		uint64_t seq, count, dropped, recorded;
	} ev, ev_txn;
	_Atomic uint32_t ev_mask;
	_Atomic uint64_t ev_max;
	_Atomic uint64_t ev_seq_pub, ev_count_pub, ev_dropped_pub, ev_recorded_pub;
	unsigned char verp_key[32]; /* signs VERP addresses (meta "verp_key") */
	_Atomic uint64_t mbox_gen;  /* changes with the mailbox (spool_mbox_generation) */
	char *dir;
	struct spool_options opt;
	unsigned page_size;
	size_t inline_max; /* largest leaf body chunk (a quarter page) */
	size_t page_max;   /* largest body chunk in one overflow page */

	_Atomic uint64_t next_id;
	_Atomic bool accepting;  /* disk and map have room */
	_Atomic int64_t room;    /* bytes new mail may take: beyond min_free on disk
	                          * (free pages inside data.mdb count) and beyond the
	                          * map's reserve; accepting == room >= SPOOL_ROOM_MIN */
	bool usage_known;        /* refreshed at least once (writer thread after open) */
	bool logged_ok;          /* the accepting state the log last announced */
	_Atomic uint64_t used;   /* live pages * page size */
	_Atomic uint64_t extent; /* highest page ever used * page size */
	_Atomic uint64_t file_size, disk_free, commits, syncs, evicted;

	pthread_t writer;
	bool writer_started;
	struct mq inbox; /* requests for the writer (blocking eventfd) */
	_Atomic bool stopping;
};

/* Keys. */
static inline void spool_key_id(unsigned char k[8], uint64_t id)
{
	rp_put_be64(k, id);
}

static inline void spool_key_rcpt(unsigned char k[12], uint64_t id, uint32_t idx)
{
	rp_put_be64(k, id);
	rp_put_be32(k + 8, idx);
}

static inline void spool_key_body(unsigned char k[16], uint64_t id, uint32_t variant,
                                  uint32_t chunk)
{
	rp_put_be64(k, id);
	rp_put_be32(k + 8, variant);
	rp_put_be32(k + 12, chunk);
}

#define SPOOL_MBOX_VERSION 1

/* A bounce mailbox record: this header, then the message. */
struct spool_mbox_hdr {
	uint8_t version;
	uint8_t flags;
	uint16_t pad;
	uint32_t pad2;
	uint64_t date_ms;
};

struct spool_reader {
	struct spool *sp;
	MDB_txn *txn; /* reset between uses, renewed by begin */
	bool active;
};

/* spool_mbox_decode - a mailbox value into e (uid not set). */
bool spool_mbox_decode(const void *p, size_t n, struct spool_mbox_entry *e);

/* ---- writer-side parts (the writer thread, inside its transaction) ---- */

/* spool_apply_mbox_put - append req's message (MBOX_PUT, and INBOUND's). */
int spool_apply_mbox_put(struct spool *sp, MDB_txn *txn, struct spool_req *req);
/* spool_apply_mbox_store / _expunge - flags, removal. */
int spool_apply_mbox_store(struct spool *sp, MDB_txn *txn, struct spool_req *req);
int spool_apply_mbox_expunge(struct spool *sp, MDB_txn *txn, struct spool_req *req);
/* spool_apply_inbound - the mailbox copy and the events of a report. */
int spool_apply_inbound(struct spool *sp, MDB_txn *txn, struct spool_req *req);
/* spool_mbox_expire - enforce mbox_max_messages and mbox_max_age (its own
 * transaction; bounded work). Returns how many messages went. */
unsigned spool_mbox_expire(struct spool *sp, uint64_t now_ms);
/* spool_commit_deletes - the end of an expiry pass: closes cur, commits txn
 * when it deleted n > 0 entries (true), else aborts it (false). */
bool spool_commit_deletes(struct spool *sp, MDB_txn *txn, MDB_cursor *cur, unsigned n);
/* spool_mbox_changed - count a change and tell the owner. */
void spool_mbox_changed(struct spool *sp);

/* spool_apply_warmup - WARMUP: store the counters. */
int spool_apply_warmup(struct spool *sp, MDB_txn *txn, struct spool_req *req);
/* spool_apply_suppress - SUPPRESS: add or remove an address. */
int spool_apply_suppress(struct spool *sp, MDB_txn *txn, struct spool_req *req);
#define SUPPRESS_ADDR_MAX 320 /* longest address the list keeps, plus one */
/* spool_suppress_put - add addr with reason (lower-cased here). */
int spool_suppress_put(struct spool *sp, MDB_txn *txn, const char *addr, size_t len,
                       const char *reason, size_t reason_len, uint64_t now_ms);
/* spool_suppressed - whether addr is on the list: its reason into
 * reason/reason_len (pointing into LMDB memory, valid in txn). */
bool spool_suppressed(struct spool *sp, MDB_txn *txn, const char *addr, size_t len,
                      const char **reason, size_t *reason_len);

/* ---- events (spool_events.c; the writer thread) ---- */

/* spool_event_put - record an event of type for recipient r (its addr,
 * msgid, idx) with this attempt's numbers, unless the type is not wanted.
 * Copies everything before writing (r may point into a page). */
int spool_event_put(struct spool *sp, MDB_txn *txn, unsigned type, const struct spool_rcpt *r,
                    unsigned attempts, const char *response, size_t response_len,
                    const char *remote, size_t remote_len, uint64_t now_ms);
/* spool_event_wanted - whether events of type are recorded. */
static inline bool spool_event_wanted(struct spool *sp, unsigned type)
{
	return atomic_load_explicit(&sp->ev_mask, memory_order_relaxed) & SPOOL_EV_BIT(type);
}
/* spool_apply_events_done - EVENTS_DONE: delete the posted events. */
int spool_apply_events_done(struct spool *sp, MDB_txn *txn, struct spool_req *req);
/* spool_events_load - the committed numbers at open (open's transaction). */
int spool_events_load(struct spool *sp, MDB_txn *txn);
/* spool_events_published - a commit succeeded: ev = ev_txn, published. */
void spool_events_published(struct spool *sp);

/* spool_writer_start - start the writer thread (spool.c calls it). */
bool spool_writer_start(struct spool *sp, char *err, size_t errlen);
/* spool_writer_stop - answer what is queued, then join the thread. */
void spool_writer_stop(struct spool *sp);
/* spool_refresh_usage - recompute the numbers behind spool_accepting (the
 * writer thread); with announce, log when accepting changed since the last
 * announcement (at most once per call site's period, never per batch). */
void spool_refresh_usage(struct spool *sp, bool announce);

#endif
