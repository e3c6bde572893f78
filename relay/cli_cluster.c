/* cli_cluster.c - `ringpost stats -c FILE --cluster`: the nodes of a
 * cluster as their heartbeats in Redis describe them (cluster.c writes
 * them): rp:nodes holds each live node with its heartbeat's expiry, and
 * rp:node:NODE one JSON object per shard with its counts. Talks to Redis
 * directly (blocking hiredis: a command-line tool, not the event loop), so
 * it works with any node of the cluster down, this one included.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/util.h"
#include "cli.h"
#include "config.h"

static const char *const fields[] = { "queued",    "deferred", "in_flight",
	                              "delivered", "bounced",  "connections" };
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

/* node_totals - the shards' objects of one node added up into a JSON
 * object {"node", "shards", FIELDS..., "heartbeat_age_ms"}. */
static json_t *node_totals(redisContext *rc, const char *node, uint64_t expires_ms,
                           uint64_t lease_ms)
{
	json_t *o = json_object();
	json_object_set_new(o, "node", json_string(node));
	redisReply *r = redisCommand(rc, "HGETALL rp:node:%s", node);
	long long sum[NFIELDS] = { 0 };
	unsigned shards = 0;
	for (size_t i = 1; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i += 2) {
		json_t *s = json_loadb(r->element[i]->str, r->element[i]->len, 0, NULL);
		if (!s)
			continue;
		shards++;
		for (size_t f = 0; f < NFIELDS; f++)
			sum[f] += json_integer_value(json_object_get(s, fields[f]));
		json_decref(s);
	}
	freeReplyObject(r);
	json_object_set_new(o, "shards", json_integer(shards));
	for (size_t f = 0; f < NFIELDS; f++)
		json_object_set_new(o, fields[f], json_integer(sum[f]));
	uint64_t now = rp_now_ms();
	uint64_t beat = expires_ms > lease_ms ? expires_ms - lease_ms : 0;
	json_object_set_new(o, "heartbeat_age_ms",
	                    json_integer(now > beat ? (json_int_t)(now - beat) : 0));
	return o;
}

int cli_cluster_stats(const struct config *cfg, bool json)
{
	if (!cfg->cluster_redis[0]) {
		fprintf(stderr, "ringpost: %s has no [cluster] redis\n", cfg->path);
		return RP_EX_CONFIG;
	}
	char host[256];
	const char *h = cfg->cluster_redis, *colon = strrchr(h, ':');
	size_t hl = colon ? (size_t)(colon - h) : strlen(h);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)RP_MIN(hl, sizeof(host) - 1), h);
	int port = colon ? atoi(colon + 1) : 6379;
	struct timeval tv = { .tv_sec = 5 };
	redisContext *rc = redisConnectWithTimeout(host, port, tv);
	if (!rc || rc->err) {
		fprintf(stderr, "ringpost: cannot reach Redis at %s: %s\n", cfg->cluster_redis,
		        rc ? rc->errstr : "out of memory");
		redisFree(rc);
		return RP_EX_UNAVAILABLE;
	}
	redisSetTimeout(rc, tv);
	uint64_t now = rp_now_ms();
	redisReply *r = redisCommand(rc, "ZRANGEBYSCORE rp:nodes %llu +inf WITHSCORES",
	                             (unsigned long long)now);
	if (!r || r->type != REDIS_REPLY_ARRAY) {
		fprintf(stderr, "ringpost: Redis at %s: %s\n", cfg->cluster_redis,
		        r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
		freeReplyObject(r);
		redisFree(rc);
		return RP_EX_UNAVAILABLE;
	}
	json_t *nodes = json_array();
	for (size_t i = 0; i + 1 < r->elements; i += 2)
		json_array_append_new(nodes, node_totals(rc, r->element[i]->str,
		                                         strtoull(r->element[i + 1]->str, NULL, 10),
		                                         cfg->cluster_lease_ms));
	freeReplyObject(r);
	redisFree(rc);
	if (json) {
		json_t *doc = json_pack("{s:o}", "nodes", nodes);
		char *text = json_dumps(doc, JSON_COMPACT);
		printf("%s\n", text);
		free(text);
		json_decref(doc);
		return RP_EX_OK;
	}
	printf("%-24s %6s %10s %10s %10s %12s %10s %11s %9s\n", "node", "shards", "queued",
	       "deferred", "in_flight", "delivered", "bounced", "connections", "heartbeat");
	size_t i;
	json_t *o;
	json_array_foreach(nodes, i, o)
	{
		printf("%-24s %6lld", json_string_value(json_object_get(o, "node")),
		       (long long)json_integer_value(json_object_get(o, "shards")));
		for (size_t f = 0; f < NFIELDS; f++)
			printf(f == 3   ? " %12lld"
			       : f == 5 ? " %11lld"
			                : " %10lld",
			       (long long)json_integer_value(json_object_get(o, fields[f])));
		printf(" %7.1fs ago\n",
		       (double)json_integer_value(json_object_get(o, "heartbeat_age_ms")) / 1000.0);
	}
	printf("%zu live node%s\n", json_array_size(nodes), json_array_size(nodes) == 1 ? "" : "s");
	json_decref(nodes);
	return RP_EX_OK;
}
