/* fuzz_http.c - the HTTP API server (api/http.c) fed what a client sends:
 * request lines, headers (Authorization, Content-Length, chunked bodies,
 * Expect), pipelined requests and every route behind them with a valid
 * key: submissions (JSON, MIME building, the commit into a real spool),
 * message status and purge, stats, metrics, queue administration, the
 * bounce mailbox and the suppression list.
 *
 * Input: a mode byte (bits 0-6: how the bytes are cut into the chunks that
 * arrive one by one, 0 = all at once), then what the client sends. The
 * key is "fuzz-key-0123456789"; the dictionary and the seeds carry it.
 * The session runs on the loop over an AF_UNIX socketpair; its responses
 * are read and dropped. The daemon's answers to stats and administration
 * requests (relay/shard_api.c) are stood in for: empty counters, unknown
 * domains, answered later on the loop as the daemon does.
 */
#include <stdlib.h>
#include <unistd.h>

#include "api/api.h"
#include "api/http.h"
#include "base/list.h"
#include "base/loop.h"
#include "fuzz.h"

static const char conf[] = "hostname = api.fuzz.test\n";

static char key[] = "fuzz-key-0123456789";
static char *keys[] = { key };

static struct api_config api_cfg = {
	.keys = keys,
	.nkeys = 1,
	.hostname = "api.fuzz.test",
	.max_message_size = 65536,
	.max_request = 256 * 1024,
	.max_recipients = 20,
	.max_batch = 10,
	.idle_timeout_ms = 60000,
	.max_clients = 10,
};

/* Requests to the daemon, answered at the end of the loop's batch. */
#define PENDING_MAX 64
static struct {
	struct api_stats_req *stats[PENDING_MAX];
	struct api_admin_req *admin[PENDING_MAX];
	unsigned nstats, nadmin;
	struct loop_defer d;
	struct loop *loop;
} shards;

static void answer(struct loop_defer *d)
{
	(void)d;
	while (shards.nstats || shards.nadmin) {
		if (shards.nstats) {
			struct api_stats_req *r = shards.stats[--shards.nstats];
			r->done(r);
		} else {
			struct api_admin_req *r = shards.admin[--shards.nadmin];
			r->found = false;
			r->affected = 0;
			r->done(r);
		}
	}
}

static void ask_stats(void *ctx, struct api_stats_req *req)
{
	(void)ctx;
	if (shards.nstats == PENDING_MAX)
		abort();
	shards.stats[shards.nstats++] = req;
	loop_defer(shards.loop, &shards.d, answer);
}

static void ask_admin(void *ctx, struct api_admin_req *req)
{
	(void)ctx;
	if (shards.nadmin == PENDING_MAX)
		abort();
	shards.admin[shards.nadmin++] = req;
	loop_defer(shards.loop, &shards.d, answer);
}

static void route(void *ctx, const struct sched_add *adds, unsigned n)
{
	(void)ctx;
	(void)adds;
	(void)n;
}

static const struct api_ops ops = { .route = route, .stats = ask_stats, .admin = ask_admin };

struct run {
	struct api_session *s;
	bool gone; /* the session was freed */
};

static struct run *current;

static void session_gone(void *ctx)
{
	(void)ctx;
	current->gone = true;
}

/* settled - no request is being answered: the input read so far is done. */
static bool settled(void *arg)
{
	struct run *r = arg;
	return r->gone || !r->s->busy;
}

static bool gone(void *arg)
{
	return ((struct run *)arg)->gone;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	struct fuzz_env *e = fuzz_env_get(conf);
	api_cfg.limits = fuzz_limits();
	shards.loop = e->loop;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_env *e = fuzz_env_get(conf);
	if (!size)
		return 0;
	uint32_t cut = data[0] & 0x7f, rnd = data[0] * 2654435761u;
	data++;
	size--;

	struct run r = { 0 };
	current = &r;
	struct api_server *srv = api_server_new(e->loop, e->spool, e->reader, &api_cfg, &ops, NULL);
	api_set_session_gone(srv, session_gone);
	int fds[2];
	fuzz_socketpair(fds);
	e->drain_fd = fds[1];
	api_session_start(srv, fds[0]);
	r.s = rp_list_entry(srv->sessions.next, struct api_session, link);

	fuzz_feed(e, &r.s->conn, data, size, cut, 16, rnd, &r.gone, settled, gone, &r);
	api_server_free(srv);
	e->drain_fd = -1;
	close(fds[1]);
	current = NULL;
	fuzz_env_recycle(e);
	return 0;
}
