/* spool.c - LMDB environment, ids, usage and read transactions (see spool.h). */
#include "spool_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "base/log.h"
#include "base/util.h"

static int mkdir_p(const char *dir)
{
	char tmp[4096];
	if (strlen(dir) >= sizeof(tmp))
		return ENAMETOOLONG;
	strcpy(tmp, dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
			return errno;
		*p = '/';
	}
	if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
		return errno;
	return 0;
}

static bool open_dbs(struct spool *sp, char *err, size_t errlen)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(sp->env, NULL, 0, &txn);
	if (rc) {
		snprintf(err, errlen, "%s: cannot start a transaction: %s", sp->dir,
		         mdb_strerror(rc));
		return false;
	}
	struct {
		const char *name;
		MDB_dbi *dbi;
	} dbs[] = {
		{ "meta", &sp->dbi_meta },           { "msg", &sp->dbi_msg },
		{ "body", &sp->dbi_body },           { "rcpt", &sp->dbi_rcpt },
		{ "expire", &sp->dbi_expire },       { "mbox", &sp->dbi_mbox },
		{ "mbox_meta", &sp->dbi_mbox_meta }, { "suppress", &sp->dbi_suppress },
		{ "events", &sp->dbi_events },       { "warmup", &sp->dbi_warmup },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(dbs); i++) {
		rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
		if (rc) {
			snprintf(err, errlen, "%s: cannot open database %s: %s", sp->dir,
			         dbs[i].name, mdb_strerror(rc));
			mdb_txn_abort(txn);
			return false;
		}
	}
	/* Format version: written once, checked on every open. */
	MDB_val k = { .mv_size = 7, .mv_data = "version" }, v;
	uint32_t version = SPOOL_FORMAT_VERSION;
	rc = mdb_get(txn, sp->dbi_meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		v.mv_size = sizeof(version);
		v.mv_data = &version;
		rc = mdb_put(txn, sp->dbi_meta, &k, &v, 0);
	} else if (rc == 0) {
		uint32_t have = 0;
		if (v.mv_size == sizeof(have))
			memcpy(&have, v.mv_data, sizeof(have));
		if (have != SPOOL_FORMAT_VERSION) {
			snprintf(err, errlen, "%s: spool format %u, this ringpost reads %u",
			         sp->dir, have, SPOOL_FORMAT_VERSION);
			mdb_txn_abort(txn);
			return false;
		}
	}
	if (rc) {
		snprintf(err, errlen, "%s: cannot write the format version: %s", sp->dir,
		         mdb_strerror(rc));
		mdb_txn_abort(txn);
		return false;
	}
	/* Ids continue after the newest message and never go back in time. */
	MDB_cursor *cur;
	uint64_t next = rp_now_ms() << 16;
	if (mdb_cursor_open(txn, sp->dbi_msg, &cur) == 0) {
		MDB_val ck, cv;
		if (mdb_cursor_get(cur, &ck, &cv, MDB_LAST) == 0 && ck.mv_size == 8) {
			uint64_t last = rp_get_be64(ck.mv_data);
			if (last + 1 > next)
				next = last + 1;
		}
		mdb_cursor_close(cur);
	}
	atomic_store(&sp->next_id, next);
	rc = spool_events_load(sp, txn);
	if (rc) {
		snprintf(err, errlen, "%s: cannot read the events: %s", sp->dir, mdb_strerror(rc));
		mdb_txn_abort(txn);
		return false;
	}
	/* The bounce mailbox's UIDVALIDITY is fixed when the spool is made. */
	MDB_val vk = { .mv_size = 11, .mv_data = "uidvalidity" }, vv;
	if (mdb_get(txn, sp->dbi_mbox_meta, &vk, &vv) == MDB_NOTFOUND) {
		uint32_t uv = (uint32_t)(rp_now_ms() / 1000);
		vv.mv_size = sizeof(uv);
		vv.mv_data = &uv;
		mdb_put(txn, sp->dbi_mbox_meta, &vk, &vv, 0);
	}
	/* The VERP signing key is made once, with the spool. */
	MDB_val kk = { .mv_size = 8, .mv_data = "verp_key" }, kv;
	if (mdb_get(txn, sp->dbi_meta, &kk, &kv) == 0 && kv.mv_size == sizeof(sp->verp_key)) {
		memcpy(sp->verp_key, kv.mv_data, sizeof(sp->verp_key));
	} else if (!rp_random_bytes(sp->verp_key, sizeof(sp->verp_key))) {
		snprintf(err, errlen, "%s: no random bytes for the VERP key", sp->dir);
		mdb_txn_abort(txn);
		return false;
	} else {
		kv.mv_size = sizeof(sp->verp_key);
		kv.mv_data = sp->verp_key;
		mdb_put(txn, sp->dbi_meta, &kk, &kv, 0);
	}
	rc = mdb_txn_commit(txn);
	if (rc) {
		snprintf(err, errlen, "%s: cannot commit: %s", sp->dir, mdb_strerror(rc));
		return false;
	}
	return true;
}

struct spool *spool_open(const struct spool_options *o, char *err, size_t errlen)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));
	sp->opt = *o;
	sp->dir = xstrdup(o->dir);
	spool_set_events(sp, o->events, o->events_max);
	sp->opt.dir = sp->dir;
	int rc = mkdir_p(sp->dir);
	if (rc) {
		snprintf(err, errlen, "%s: cannot create directory: %s", sp->dir, strerror(rc));
		goto fail;
	}
	rc = mdb_env_create(&sp->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(sp->env, 16);
	if (!rc)
		rc = mdb_env_set_maxreaders(sp->env, 1024);
	if (!rc)
		rc = mdb_env_set_mapsize(sp->env, (size_t)o->max_size);
	if (rc) {
		snprintf(err, errlen, "%s: cannot set up LMDB: %s", sp->dir, mdb_strerror(rc));
		goto fail;
	}
	/* NOTLS: read transactions belong to reader objects, not threads.
	 * NOMETASYNC: a commit syncs its data pages; the writer syncs the
	 * meta page (mdb_env_sync) before answering anything that must be
	 * durable, and the next commit's sync covers it otherwise.
	 * NORDAHEAD: access is random; read-ahead only pollutes the cache. */
	rc = mdb_env_open(sp->env, sp->dir, MDB_NOTLS | MDB_NOMETASYNC | MDB_NORDAHEAD, 0640);
	if (rc) {
		snprintf(err, errlen, "%s: cannot open the spool: %s", sp->dir, mdb_strerror(rc));
		goto fail;
	}
	int dead = 0;
	mdb_reader_check(sp->env, &dead);
	if (dead)
		log_info("spool: cleared %d stale reader slots", dead);
	MDB_envinfo info;
	MDB_stat st;
	mdb_env_info(sp->env, &info);
	mdb_env_stat(sp->env, &st);
	sp->page_size = st.ms_psize;
	/* LMDB 0.9: a page has 16 bytes of header; a leaf entry costs a
	 * 2-byte index, an 8-byte node header, the key and the data; an
	 * overflow value of n bytes takes (16 + n - 1) / psize + 1 pages.
	 * Leaf chunks are sized so that four fill a page: appended in id
	 * order, consecutive messages' chunks then pack pages full. */
	size_t usable = (size_t)st.ms_psize - 16;
	sp->inline_max = (usable / 4 - 2 - 8 - SPOOL_BODY_KEY) & ~(size_t)1;
	sp->page_max = usable;
	if (info.me_mapsize < o->max_size)
		log_warn("spool: map size %zu below the configured %llu", info.me_mapsize,
		         (unsigned long long)o->max_size);
	if (!open_dbs(sp, err, errlen))
		goto fail;
	spool_refresh_usage(sp, true);
	if (!mq_init(&sp->inbox, false)) {
		snprintf(err, errlen, "cannot create an eventfd: %s", strerror(errno));
		goto fail;
	}
	if (!spool_writer_start(sp, err, errlen))
		goto fail;
	return sp;
fail:
	if (sp->env)
		mdb_env_close(sp->env);
	if (sp->inbox.efd > 0)
		mq_destroy(&sp->inbox);
	free(sp->dir);
	free(sp);
	return NULL;
}

void spool_close(struct spool *sp)
{
	if (!sp)
		return;
	spool_writer_stop(sp);
	mdb_env_sync(sp->env, 1);
	mdb_env_close(sp->env);
	mq_destroy(&sp->inbox);
	free(sp->dir);
	free(sp);
}

size_t spool_body_chunk(const struct spool *sp, size_t remaining)
{
	/* Whole overflow pages for the bulk, quarter-page leaf chunks for
	 * the rest: every page ends up (nearly) full either way. */
	if (remaining >= sp->page_max)
		return sp->page_max;
	return RP_MIN(remaining, sp->inline_max);
}

uint64_t spool_next_id(struct spool *sp)
{
	return atomic_fetch_add(&sp->next_id, 1);
}

bool spool_accepting(const struct spool *sp)
{
	return atomic_load_explicit(&sp->accepting, memory_order_relaxed);
}

void spool_usage(const struct spool *sp, struct spool_usage *u)
{
	u->map_size = sp->opt.max_size;
	u->used = atomic_load(&sp->used);
	u->extent = atomic_load(&sp->extent);
	u->file_size = atomic_load(&sp->file_size);
	u->disk_free = atomic_load(&sp->disk_free);
	u->commits = atomic_load(&sp->commits);
	u->syncs = atomic_load(&sp->syncs);
	u->evicted = atomic_load(&sp->evicted);
}

void spool_refresh_usage(struct spool *sp, bool announce)
{
	MDB_envinfo info;
	struct statvfs vfs;
	struct stat st;
	char path[4200];
	mdb_env_info(sp->env, &info);
	/* Live pages: what every database holds now. The file's extent
	 * (last_pgno) only grows; freed pages inside it are reused first. */
	uint64_t live_pages = 4;  /* the two meta pages and the free and main DB roots */
	uint64_t state_pages = 0; /* what state updates rewrite: msg, rcpt, expire */
	MDB_txn *txn;
	if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) == 0) {
		MDB_dbi dbis[] = { sp->dbi_msg,      sp->dbi_rcpt, sp->dbi_expire,
			           sp->dbi_meta,     sp->dbi_body, sp->dbi_mbox_meta,
			           sp->dbi_suppress, sp->dbi_mbox, sp->dbi_events };
		for (size_t i = 0; i < RP_ARRAY_LEN(dbis); i++) {
			MDB_stat st2;
			if (mdb_stat(txn, dbis[i], &st2) != 0)
				continue;
			uint64_t n =
			    st2.ms_branch_pages + st2.ms_leaf_pages + st2.ms_overflow_pages;
			live_pages += n;
			state_pages += i < 3 ? n : 0;
		}
		mdb_txn_abort(txn);
	}
	uint64_t used = live_pages * sp->page_size;
	atomic_store(&sp->extent, (uint64_t)(info.me_last_pgno + 1) * sp->page_size);
	uint64_t free_disk = UINT64_MAX;
	if (statvfs(sp->dir, &vfs) == 0)
		free_disk = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	snprintf(path, sizeof(path), "%s/data.mdb", sp->dir);
	if (stat(path, &st) == 0)
		atomic_store(&sp->file_size, (uint64_t)st.st_size);
	uint64_t file = atomic_load(&sp->file_size);
	atomic_store(&sp->used, used);
	atomic_store(&sp->disk_free, free_disk);
	/* Keep room for state updates and deletes, which must go on when new
	 * mail is refused: 5% of the map (at least 8 MiB), and on disk
	 * min_free, but at least twice the state records: one pass of
	 * deferrals rewrites every recipient record (copy on write), and the
	 * pages it frees are reused only two transactions later. Free pages
	 * inside data.mdb are reused before the file grows, so they count as
	 * room: a spool that once filled the disk and has drained since takes
	 * mail again (the file never shrinks). */
	uint64_t state = 2 * state_pages * sp->page_size;
	uint64_t reserve = RP_MAX(RP_MAX(sp->opt.max_size / 20, 8ull << 20), state);
	int64_t map_room = (int64_t)sp->opt.max_size - (int64_t)reserve - (int64_t)used;
	int64_t room = map_room;
	if (free_disk != UINT64_MAX) {
		uint64_t inside = file > used ? file - used : 0;
		uint64_t keep = RP_MAX(sp->opt.min_free, state);
		int64_t disk_room = (int64_t)RP_MIN(free_disk + inside, (uint64_t)INT64_MAX / 2) -
		                    (int64_t)RP_MIN(keep, (uint64_t)INT64_MAX / 2);
		room = RP_MIN(room, disk_room);
	}
	/* Refuse at MAIL (or the API's first check) once less than SPOOL_ROOM_MIN
	 * is left, rather than take a message's bytes only to refuse it at its
	 * end; /healthz and /v1/stats then agree with what clients get. */
	bool ok = room >= (int64_t)SPOOL_ROOM_MIN;
	atomic_store(&sp->room, room);
	atomic_store(&sp->accepting, ok);
	bool first = !sp->usage_known;
	sp->usage_known = true;
	if (!announce || (first ? ok : sp->logged_ok == ok)) {
		if (first)
			sp->logged_ok = true; /* the first refusal is announced when seen */
		return;
	}
	sp->logged_ok = ok;
	log_warn("spool: %s new mail (used %llu of %llu bytes, file %llu bytes, %llu bytes free "
	         "on disk, min_free %llu)",
	         ok ? "accepting" : "refusing", (unsigned long long)used,
	         (unsigned long long)sp->opt.max_size, (unsigned long long)file,
	         (unsigned long long)free_disk, (unsigned long long)sp->opt.min_free);
}

/* ---- readers ----------------------------------------------------------- */

struct spool_reader *spool_reader_new(struct spool *sp)
{
	struct spool_reader *r = xcalloc(1, sizeof(*r));
	r->sp = sp;
	return r;
}

void spool_reader_free(struct spool_reader *r)
{
	if (!r)
		return;
	if (r->txn)
		mdb_txn_abort(r->txn);
	free(r);
}

bool spool_reader_begin(struct spool_reader *r)
{
	rp_assert(!r->active);
	int rc;
	if (r->txn)
		rc = mdb_txn_renew(r->txn);
	else
		rc = mdb_txn_begin(r->sp->env, NULL, MDB_RDONLY, &r->txn);
	if (rc) {
		log_error("spool: cannot begin a read transaction: %s", mdb_strerror(rc));
		if (r->txn) {
			mdb_txn_abort(r->txn);
			r->txn = NULL;
		}
		return false;
	}
	r->active = true;
	return true;
}

void spool_reader_end(struct spool_reader *r)
{
	if (!r->active)
		return;
	mdb_txn_reset(r->txn);
	r->active = false;
}

bool spool_get_msg(struct spool_reader *r, uint64_t id, struct spool_msg *m)
{
	unsigned char kb[8];
	spool_key_id(kb, id);
	MDB_val k = { .mv_size = sizeof(kb), .mv_data = kb }, v;
	rp_assert(r->active);
	if (mdb_get(r->txn, r->sp->dbi_msg, &k, &v))
		return false;
	m->id = id;
	return spool_msg_decode(v.mv_data, v.mv_size, m);
}

bool spool_get_rcpt(struct spool_reader *r, uint64_t id, uint32_t idx, struct spool_rcpt *rc)
{
	unsigned char kb[12];
	spool_key_rcpt(kb, id, idx);
	MDB_val k = { .mv_size = sizeof(kb), .mv_data = kb }, v;
	rp_assert(r->active);
	if (mdb_get(r->txn, r->sp->dbi_rcpt, &k, &v))
		return false;
	rc->msgid = id;
	rc->idx = idx;
	return spool_rcpt_decode(v.mv_data, v.mv_size, rc);
}

bool spool_get_body(struct spool_reader *r, uint64_t id, uint32_t variant, struct buf *out)
{
	unsigned char kb[16];
	MDB_cursor *cur;
	bool found = false;
	rp_assert(r->active);
	spool_key_body(kb, id, variant, 0);
	if (mdb_cursor_open(r->txn, r->sp->dbi_body, &cur))
		return false;
	MDB_val k = { .mv_size = sizeof(kb), .mv_data = kb }, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size == 16 && !memcmp(k.mv_data, kb, 12)) {
		buf_append(out, v.mv_data, v.mv_size);
		found = true;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	return found;
}

unsigned spool_foreach_rcpt(struct spool_reader *r, uint64_t id,
                            bool (*fn)(const struct spool_rcpt *rc, void *arg), void *arg)
{
	unsigned char kb[12];
	MDB_cursor *cur;
	unsigned n = 0;
	rp_assert(r->active);
	spool_key_rcpt(kb, id, 0);
	if (mdb_cursor_open(r->txn, r->sp->dbi_rcpt, &cur))
		return 0;
	MDB_val k = { .mv_size = sizeof(kb), .mv_data = kb }, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size == 12 && !memcmp(k.mv_data, kb, 8)) {
		struct spool_rcpt rec;
		rec.msgid = id;
		rec.idx = rp_get_be32((const unsigned char *)k.mv_data + 8);
		if (spool_rcpt_decode(v.mv_data, v.mv_size, &rec)) {
			n++;
			if (!fn(&rec, arg))
				break;
		}
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	return n;
}

uint64_t spool_scan_pending(struct spool_reader *r,
                            void (*fn)(const struct spool_msg *m, const struct spool_rcpt *rc,
                                       void *arg),
                            void *arg)
{
	MDB_cursor *cur;
	uint64_t n = 0, cur_id = 0;
	struct spool_msg msg;
	bool have_msg = false;
	rp_assert(r->active);
	if (mdb_cursor_open(r->txn, r->sp->dbi_rcpt, &cur))
		return 0;
	MDB_val k, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 12)
			continue;
		struct spool_rcpt rec;
		rec.msgid = rp_get_be64(k.mv_data);
		rec.idx = rp_get_be32((const unsigned char *)k.mv_data + 8);
		if (!spool_rcpt_decode(v.mv_data, v.mv_size, &rec)) {
			log_warn("spool: undecodable recipient record %016llx.%u",
			         (unsigned long long)rec.msgid, rec.idx);
			continue;
		}
		if (SPOOL_STATE_FINAL(rec.state))
			continue;
		if (rec.msgid != cur_id) {
			cur_id = rec.msgid;
			have_msg = spool_get_msg(r, cur_id, &msg);
			if (!have_msg)
				log_warn("spool: recipient %016llx.%u has no message",
				         (unsigned long long)rec.msgid, rec.idx);
		}
		if (!have_msg)
			continue;
		fn(&msg, &rec, arg);
		n++;
	}
	mdb_cursor_close(cur);
	return n;
}
