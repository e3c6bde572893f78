/* spool_impl.h - what spool.c and spool_writer.c share; not a public API. */
#ifndef RP_SPOOL_IMPL_H
#define RP_SPOOL_IMPL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "spool.h"

#define SPOOL_FORMAT_VERSION 1
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
	char *dir;
	struct spool_options opt;
	unsigned page_size;
	size_t inline_max; /* largest leaf body chunk (a quarter page) */
	size_t page_max;   /* largest body chunk in one overflow page */

	_Atomic uint64_t next_id;
	_Atomic bool accepting;  /* disk and map have room */
	bool usage_known;        /* refreshed at least once (writer thread after open) */
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

/* spool_mbox_decode - a mailbox value into e (uid not set). */
bool spool_mbox_decode(const void *p, size_t n, struct spool_mbox_entry *e);

/* spool_writer_start - start the writer thread (spool.c calls it). */
bool spool_writer_start(struct spool *sp, char *err, size_t errlen);
/* spool_writer_stop - answer what is queued, then join the thread. */
void spool_writer_stop(struct spool *sp);
/* spool_refresh_usage - recompute the numbers behind spool_accepting. */
void spool_refresh_usage(struct spool *sp);

#endif
