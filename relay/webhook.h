/* webhook.h - posts the spool's delivery events to [webhook] url.
 *
 * One poster per process, on shard 0's loop. It reads the events the spool
 * writer recorded (queue/spool_events.c) in sequence order, posts them as a
 * JSON array (at most [webhook] batch per request) over its own HTTP/1.1
 * client (keep-alive; HTTPS through the TLS layer, the certificate verified
 * for the URL's host), signed with X-Ringpost-Signature: sha256=HEX
 * (HMAC-SHA256 of the body with [webhook] secret), and asks the writer to
 * delete them only after a 2xx. Anything else (refused, timeout, 5xx, 4xx)
 * keeps them and tries again after a back-off (1 s doubling to 60 s). One
 * request at a time: events arrive in the order they were recorded, which
 * is the order of the state changes of each message.
 */
#ifndef RP_WEBHOOK_H
#define RP_WEBHOOK_H

#include <stdbool.h>
#include <stdint.h>

#include "base/loop.h"
#include "base/stats.h"
#include "base/tls.h"
#include "dns/dns.h"
#include "queue/spool.h"

#define WEBHOOK_BACKOFF_MIN_MS 1000
#define WEBHOOK_BACKOFF_MAX_MS 60000
#define WEBHOOK_CONNECT_MS     10000
#define WEBHOOK_REQUEST_MS     30000
#define WEBHOOK_POLL_MS        100        /* how often an idle poster looks for new events */
#define WEBHOOK_BODY_MAX       (1u << 20) /* a request's body, about (one event always goes) */

struct webhook_url {
	bool tls;            /* https */
	char host[256];      /* a name, or an address (IPv6 without brackets) */
	uint16_t port;       /* 80 / 443 unless given */
	char path[1024];     /* "/" at least, with any query */
	char authority[300]; /* the Host header: host[:port] as written */
};

/* webhook_url_parse - "http://host[:port]/path" or "https://...". False
 * with a reason in err. */
bool webhook_url_parse(const char *url, struct webhook_url *out, char *err, size_t errlen);

struct webhook_params {
	struct loop *loop;
	struct spool *spool;
	struct spool_reader *reader; /* the shard's (used briefly, never held) */
	struct dns_resolver *dns;    /* for host names; NULL: addresses only */
	struct tls_ctx *tls_client;  /* HTTPS (a reference is taken) */
	const char *url;             /* [webhook] url, "" = no webhook */
	const char *secret;          /* [webhook] secret, may be "" (then no signature) */
	unsigned batch;              /* events per request */
	void (*released)(void *arg); /* after webhook_stop: the last connection is gone */
	void *arg;
};

struct webhook;

/* webhook_new - a poster for p->url (already checked by the config);
 * NULL when there is no url. Starts looking for events at once. */
struct webhook *webhook_new(const struct webhook_params *p);
/* webhook_set_config - a reloaded config: url, secret, batch, TLS. */
void webhook_set_config(struct webhook *wh, const struct webhook_params *p);
/* webhook_stop - stop posting, close the connection (events stay kept). */
void webhook_stop(struct webhook *wh);
/* webhook_busy - a connection has not been released yet. */
bool webhook_busy(const struct webhook *wh);
/* webhook_free - after webhook_stop, once not busy. NULL is fine. */
void webhook_free(struct webhook *wh);
/* webhook_stats - the poster's numbers into out (its thread). */
void webhook_stats(const struct webhook *wh, struct stats_webhook *out);

#endif
