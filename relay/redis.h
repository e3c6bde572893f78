/* redis.h - an asynchronous Redis client on the event loop (for the
 * cluster's shared limits, relay/cluster.c).
 *
 * One connection to one server, driven by the loop through base/conn.c;
 * hiredis is only the protocol layer (its reply reader, and its command
 * formatter for redis_commandf). Commands are pipelined: written at once,
 * their replies matched in order. The client never queues while it is not
 * connected: a command then fails at once ("not connected") so that the
 * caller falls back to what it can do alone. A lost connection is made
 * again after a back-off (REDIS_BACKOFF_MIN_MS doubling to
 * REDIS_BACKOFF_MAX_MS). Replies come in order, so a command that blocks
 * in the server (BLPOP) holds up those behind it and counts against
 * timeout_ms like any other: this client is not for blocking commands.
 *
 * Callbacks: every command's callback runs exactly once, never from inside
 * redis_command itself (a failure found there is delivered at the end of
 * the loop's batch). A callback may issue commands and may call
 * redis_stop; after redis_stop it may also call redis_free when no
 * connection is left (redis_busy false): the free then happens once the
 * client's own code has returned. Everything runs on the loop's thread.
 */
#ifndef RP_REDIS_H
#define RP_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/loop.h"
#include "dns/dns.h"

#define REDIS_BACKOFF_MIN_MS 100   /* the first reconnect after a loss */
#define REDIS_BACKOFF_MAX_MS 5000  /* ... doubling up to this */
#define REDIS_PENDING_MAX    10000 /* commands awaiting their reply, at most */

/* redis_cb - a command's outcome: reply (REDIS_REPLY_ERROR when Redis
 * refused the command) with err NULL, or reply NULL and err saying why no
 * reply came: "not connected", "too many pending", "bad command",
 * "timeout", "connection lost: REASON", "stopped". Both are borrowed for
 * the call only (the reply is freed when the callback returns). */
typedef void (*redis_cb)(void *arg, const redisReply *reply, const char *err);

struct redis_params {
	struct loop *loop;
	struct dns_resolver *dns; /* for a host name; NULL: addresses only */
	const char *host;         /* a name, an IPv4 or IPv6 address ("[::1]" too); copied */
	uint16_t port;
	uint64_t timeout_ms; /* the connect (and DNS), and each command's reply */
	/* state - up (err NULL) once connected; down with the reason when
	 * the connection is lost, or when the first attempts fail (once: not
	 * per retry). Not called for redis_stop. May be NULL. */
	void (*state)(void *arg, bool up, const char *err);
	void *arg;
};

struct redis_stats {
	uint64_t commands;   /* commands sent to the server */
	uint64_t errors;     /* commands that failed (err) or got an error reply */
	uint64_t reconnects; /* connections made after a loss (the first is not counted) */
	char last_error[160];
};

struct redis;

/* redis_new - a client for p (copied); it starts connecting at the end of
 * the loop's current batch. Never NULL. */
struct redis *redis_new(const struct redis_params *p);
/* redis_up - connected: commands go to the server. */
bool redis_up(const struct redis *r);
/* redis_command - send argv[0..argc) (argvlen[i] bytes each: binary safe;
 * argvlen NULL: C strings); cb reports. Commands beyond REDIS_PENDING_MAX
 * awaiting replies fail with "too many pending". */
void redis_command(struct redis *r, redis_cb cb, void *arg, int argc, const char **argv,
                   const size_t *argvlen);
/* redis_commandf - the same with hiredis's format ("SET %s %b", key, p,
 * len: %s a C string, %b pointer and size_t, %d, %lld ... as one
 * argument each); a format hiredis refuses fails with "bad command". */
void redis_commandf(struct redis *r, redis_cb cb, void *arg, const char *fmt, ...);
/* redis_stop - close the connection and stop reconnecting; the callbacks
 * of commands still waiting run now with "stopped" (those that had
 * already failed with their own error). Later commands fail with
 * "stopped". Idempotent; NULL is fine. */
void redis_stop(struct redis *r);
/* redis_busy - a connection has not been released yet (shutdown runs the
 * loop until this is false). */
bool redis_busy(const struct redis *r);
/* redis_free - after redis_stop, once not busy (aborts otherwise). A
 * failure still waiting for the end of the batch is delivered first
 * ("stopped"). NULL is fine. */
void redis_free(struct redis *r);
/* redis_get_stats - the client's numbers into out. */
void redis_get_stats(const struct redis *r, struct redis_stats *out);
/* redis_backoff_next - the wait before the next connect after one more
 * failure, from the current wait (0 after a success). */
uint64_t redis_backoff_next(uint64_t cur_ms);

#endif
