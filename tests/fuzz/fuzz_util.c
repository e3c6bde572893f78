/* fuzz_util.c - helpers shared by the fuzz targets (see fuzz.h). */
#include "fuzz.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/conn.h"
#include "base/log.h"
#include "base/mq.h"
#include "base/loop.h"
#include "base/util.h"
#include "queue/spool.h"

void fuzz_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "fuzz: %s:%d: check failed: %s\n", file, line, what);
	abort();
}

void fuzz_quiet(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	if (!log_open("/dev/null"))
		abort();
	log_set_level(LOG_DEBUG);
}

char *fuzz_dup(const void *p, size_t n)
{
	char *s = xmalloc(n + 1);
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

char *fuzz_copy(const void *p, size_t n)
{
	char *s = xmalloc(n ? n : 1);
	if (n)
		memcpy(s, p, n);
	return s;
}

uint8_t fuzz_u8(struct fuzz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

uint32_t fuzz_u32(struct fuzz_in *in)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < 4; i++)
		v |= (uint32_t)fuzz_u8(in) << (8 * i);
	return v;
}

bool fuzz_field(struct fuzz_in *in, const char *sep, const uint8_t **p, size_t *n)
{
	if (!in->n)
		return false;
	size_t sl = strlen(sep);
	const uint8_t *hit = memmem(in->p, in->n, sep, sl);
	*p = in->p;
	if (!hit) {
		*n = in->n;
		in->p += in->n;
		in->n = 0;
		return true;
	}
	*n = (size_t)(hit - in->p);
	in->n -= *n + sl;
	in->p = hit + sl;
	return true;
}

/* ---- the session environment ------------------------------------------- */

static struct fuzz_env env;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void env_cleanup(void)
{
	if (env.reader)
		spool_reader_free(env.reader);
	if (env.spool)
		spool_close(env.spool);
	env.reader = NULL;
	env.spool = NULL;
	if (env.dir[0])
		rm_tree(env.dir);
}

static void spool_make(struct fuzz_env *e)
{
	char dir[200], err[300];
	snprintf(dir, sizeof(dir), "%s/spool%u", e->dir, e->spools++);
	struct spool_options so = { .dir = dir,
		                    .max_size = 256u << 20,
		                    .keep_done_ms = 3600 * 1000,
		                    .suppress = true,
		                    .mbox_max_messages = 1000 };
	e->spool = spool_open(&so, err, sizeof(err));
	if (!e->spool) {
		fprintf(stderr, "fuzz: spool_open: %s\n", err);
		abort();
	}
	e->reader = spool_reader_new(e->spool);
}

struct fuzz_env *fuzz_env_get(const char *conf)
{
	if (env.loop)
		return &env;
	fuzz_quiet();
	const char *base = getenv("RINGPOST_FUZZ_TMP");
	if (!base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(env.dir, sizeof(env.dir), "%s/ringpost-fuzz-XXXXXX", base);
	if (!mkdtemp(env.dir)) {
		perror("fuzz: mkdtemp");
		abort();
	}
	atexit(env_cleanup);
	char path[200], err[400];
	snprintf(path, sizeof(path), "%s/ringpost.conf", env.dir);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror("fuzz: config");
		abort();
	}
	fprintf(f, "[server]\ndata_dir = %s\n%s", env.dir, conf);
	fclose(f);
	env.cfg = config_load(path, err, sizeof(err));
	if (!env.cfg) {
		fprintf(stderr, "fuzz: %s\n", err);
		abort();
	}
	env.gen.cfg = env.cfg;
	env.drain_fd = -1;
	struct loop_config lc = {
		.sq_entries = 256, .cq_entries = 1024, .buf_count = 16, .buf_size = 16384
	};
	env.loop = loop_new(&lc);
	if (!env.loop) {
		perror("fuzz: loop_new");
		abort();
	}
	spool_make(&env);
	return &env;
}

void fuzz_env_recycle(struct fuzz_env *e)
{
	struct spool_usage u;
	spool_usage(e->spool, &u);
	if (u.used < (8u << 20))
		return;
	spool_reader_free(e->reader);
	spool_close(e->spool);
	char dir[200];
	snprintf(dir, sizeof(dir), "%s/spool%u", e->dir, e->spools - 1);
	rm_tree(dir);
	spool_make(e);
}

struct run_ctx {
	struct loop_defer d;
	struct loop *loop;
	bool (*done)(void *arg);
	void *arg;
	uint64_t deadline;
};

static void run_check(struct loop_defer *d)
{
	struct run_ctx *c = RP_CONTAINER_OF(d, struct run_ctx, d);
	char sink[16384];
	while (env.drain_fd >= 0 && read(env.drain_fd, sink, sizeof(sink)) > 0)
		;
	if (c->done(c->arg)) {
		loop_stop(c->loop);
		return;
	}
	if (rp_mono_ms() > c->deadline) {
		fprintf(stderr, "fuzz: the loop did not settle in 10 s\n");
		abort();
	}
	loop_defer_next(c->loop, &c->d, run_check);
}

void fuzz_env_run(struct fuzz_env *e, bool (*done)(void *arg), void *arg)
{
	if (done(arg))
		return;
	struct run_ctx c = {
		.loop = e->loop, .done = done, .arg = arg, .deadline = rp_mono_ms() + 10000
	};
	loop_defer_next(e->loop, &c.d, run_check);
	loop_run(e->loop);
}

static bool count_one(const struct spool_mbox_entry *m, void *arg)
{
	(void)m;
	(*(unsigned *)arg)++;
	return true;
}

void fuzz_env_mailbox(struct fuzz_env *e, const char *const *msgs, unsigned n)
{
	unsigned have = 0;
	if (!spool_reader_begin(e->reader))
		abort();
	spool_mbox_foreach(e->reader, 1, count_one, &have);
	spool_reader_end(e->reader);
	for (unsigned i = have; i < n; i++) {
		struct mq q;
		if (!mq_init(&q, true))
			abort();
		struct spool_req req = { .type = SPOOL_REQ_MBOX_PUT, .reply_to = &q };
		req.u.mbox.data = msgs[i];
		req.u.mbox.len = strlen(msgs[i]);
		req.u.mbox.date_ms = 1136214245000ull + i * 3600000ull;
		spool_request(e->spool, &req);
		struct mq_item *got;
		while (!(got = mq_take(&q)))
			mq_wait(&q);
		if (got != &req.item || req.status != SPOOL_OK)
			abort();
		mq_destroy(&q);
	}
}

void fuzz_socketpair(int fds[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
		perror("fuzz: socketpair");
		abort();
	}
}

const struct climit_config *fuzz_limits(void)
{
	static struct climit_config cc;
	static bool done;
	if (!done) {
		climit_config_defaults(&cc);
		cc.commands_per_second = 0;
		done = true;
	}
	return &cc;
}

void fuzz_feed(struct fuzz_env *e, struct conn *c, const uint8_t *data, size_t size, uint32_t cut,
               uint32_t scale, uint32_t rnd, const bool *gone_flag, bool (*settled)(void *arg),
               bool (*gone)(void *arg), void *arg)
{
	size_t off = 0;
	while (off < size && !*gone_flag && !conn_closing(c)) {
		size_t n = size - off;
		if (cut) {
			rnd = rnd * 1103515245u + 12345u;
			n = RP_MIN(n, 1 + (size_t)(rnd >> 16) % (cut * scale));
		}
		buf_append(&c->in, data + off, n);
		off += n;
		c->ops->data(c);
		fuzz_env_run(e, settled, arg);
	}
	if (!*gone_flag) {
		conn_close(c);
		fuzz_env_run(e, gone, arg);
	}
}
