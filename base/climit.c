/* climit.c - per-client limits (see climit.h).
 *
 * The connection table is open addressing with linear probing and
 * backward-shift deletion, under one mutex (taken twice per connection: at
 * accept and at close, never per command). An entry exists exactly while
 * some connection holds it, so the table holds at most as many entries as
 * there are open connections; it doubles at half full and halves at an
 * eighth.
 */
#include "climit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "conn.h"
#include "log.h"
#include "util.h"

const char *const climit_kind_names[CLIMIT_KINDS] = { "submission", "inbound", "api", "imap",
	                                              "pop3" };
const char *const climit_reason_names[CLIMIT_REASONS] = { "connections", "rate", "slow", "output",
	                                                  "idle" };

#define TABLE_MIN 256 /* slots, a power of two */

void climit_config_defaults(struct climit_config *cc)
{
	memset(cc, 0, sizeof(*cc));
	cc->connections_per_client = 50; /* Postfix's smtpd_client_connection_count_limit */
	cc->commands_per_second = 100;
	cc->command_timeout_ms = 5 * 60000; /* RFC 5321 4.5.3.2.7 */
	cc->header_timeout_ms = 30000;
	cc->data_timeout_ms = 10 * 60000;
	cc->min_data_rate = 1024;
	cc->login_timeout_ms = 3 * 60000;
	cc->output_buffer = 256 * 1024;
}

/* prefix_match - whether a's first prefix bits are net's. */
static bool prefix_match(const unsigned char *a, const unsigned char *net, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;
	if (memcmp(a, net, bytes))
		return false;
	if (!bits)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - bits));
	return (a[bytes] & mask) == (net[bytes] & mask);
}

bool climit_nets_match(const struct climit_net *nets, unsigned n, const struct sockaddr *sa)
{
	unsigned char a4[4], a6[16];
	bool v4 = false, v6 = false;
	if (sa->sa_family == AF_INET) {
		memcpy(a4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		v4 = true;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		memcpy(a6, in6, 16);
		v6 = true;
		if (IN6_IS_ADDR_V4MAPPED(in6)) {
			memcpy(a4, a6 + 12, 4);
			v4 = true;
		}
	}
	for (unsigned i = 0; i < n; i++) {
		if (nets[i].family == AF_INET && v4 &&
		    prefix_match(a4, nets[i].addr, nets[i].prefix))
			return true;
		if (nets[i].family == AF_INET6 && v6 &&
		    prefix_match(a6, nets[i].addr, nets[i].prefix))
			return true;
	}
	return false;
}

bool climit_exempt(const struct climit_config *cc, const struct sockaddr *sa)
{
	return climit_nets_match(cc->exempt, cc->nexempt, sa);
}

uint64_t climit_data_deadline(const struct climit_config *cc, uint64_t start_ms, uint64_t bytes)
{
	uint64_t extra = cc->min_data_rate ? bytes / cc->min_data_rate * 1000 : 0;
	return start_ms + cc->data_timeout_ms + extra;
}

/* ---- the connection table ---------------------------------------------- */

struct entry {
	unsigned char key[16];
	uint8_t family; /* 0 = free slot */
	uint8_t kind;
	uint32_t count; /* connections holding it (> 0 when in use) */
};

struct climit {
	pthread_mutex_t lock;
	struct entry *v; /* cap slots */
	unsigned cap;    /* a power of two */
	unsigned used;   /* slots in use */
};

struct climit *climit_new(void)
{
	struct climit *cl = xcalloc(1, sizeof(*cl));
	pthread_mutex_init(&cl->lock, NULL);
	cl->cap = TABLE_MIN;
	cl->v = xcalloc(cl->cap, sizeof(*cl->v));
	return cl;
}

void climit_free(struct climit *cl)
{
	if (!cl)
		return;
	rp_assert(cl->used == 0);
	pthread_mutex_destroy(&cl->lock);
	free(cl->v);
	free(cl);
}

static unsigned home(const struct climit *cl, const unsigned char *key, uint8_t family,
                     uint8_t kind)
{
	return (unsigned)((rp_hash64(key, 16) ^ ((uint64_t)family << 8 | kind)) & (cl->cap - 1));
}

/* find - the slot holding (key, family, kind), or of the free slot where it
 * would go. Locked. */
static struct entry *find(struct climit *cl, const unsigned char *key, uint8_t family, uint8_t kind)
{
	unsigned i = home(cl, key, family, kind);
	for (;;) {
		struct entry *e = &cl->v[i];
		if (!e->family ||
		    (e->family == family && e->kind == kind && !memcmp(e->key, key, 16)))
			return e;
		i = (i + 1) & (cl->cap - 1);
	}
}

/* resize - move every entry into a table of cap slots. Locked. */
static void resize(struct climit *cl, unsigned cap)
{
	struct entry *old = cl->v;
	unsigned oldcap = cl->cap;
	cl->v = xcalloc(cap, sizeof(*cl->v));
	cl->cap = cap;
	for (unsigned i = 0; i < oldcap; i++)
		if (old[i].family)
			*find(cl, old[i].key, old[i].family, old[i].kind) = old[i];
	free(old);
}

/* remove_at - free slot i and shift back the entries after it that probed
 * past it (no tombstones). Locked. */
static void remove_at(struct climit *cl, unsigned i)
{
	unsigned mask = cl->cap - 1, j = i;
	cl->v[i].family = 0;
	for (;;) {
		j = (j + 1) & mask;
		struct entry *e = &cl->v[j];
		if (!e->family)
			break;
		unsigned h = home(cl, e->key, e->family, e->kind);
		/* e may move to i when its home is not in (i, j] (cyclically). */
		bool stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
		if (stays)
			continue;
		cl->v[i] = *e;
		e->family = 0;
		i = j;
	}
	cl->used--;
}

bool climit_conn_open(struct climit *cl, const struct climit_config *cc, enum climit_kind kind,
                      const struct sockaddr *sa, struct climit_ticket *t)
{
	memset(t, 0, sizeof(*t));
	unsigned char key[16];
	uint8_t family;
	rp_assert((unsigned)kind < CLIMIT_KINDS);
	if (!cl || !auth_client_key(sa, key, &family))
		return true;
	bool limited = cc->connections_per_client && !climit_exempt(cc, sa);
	pthread_mutex_lock(&cl->lock);
	struct entry *e = find(cl, key, family, (uint8_t)kind);
	if (e->family && limited && e->count >= cc->connections_per_client) {
		pthread_mutex_unlock(&cl->lock);
		return false;
	}
	if (!e->family) {
		memcpy(e->key, key, 16);
		e->family = family;
		e->kind = (uint8_t)kind;
		e->count = 0;
		cl->used++;
	}
	e->count++;
	if (cl->used * 2 > cl->cap)
		resize(cl, cl->cap * 2);
	pthread_mutex_unlock(&cl->lock);
	memcpy(t->key, key, 16);
	t->family = family;
	t->kind = (uint8_t)kind;
	return true;
}

void climit_conn_close(struct climit *cl, struct climit_ticket *t)
{
	if (!t->family)
		return;
	pthread_mutex_lock(&cl->lock);
	struct entry *e = find(cl, t->key, t->family, t->kind);
	rp_assert(e->family && e->count > 0);
	if (!--e->count) {
		remove_at(cl, (unsigned)(e - cl->v));
		if (cl->cap > TABLE_MIN && cl->used * 8 < cl->cap)
			resize(cl, cl->cap / 2);
	}
	pthread_mutex_unlock(&cl->lock);
	memset(t, 0, sizeof(*t));
}

unsigned climit_conn_count(struct climit *cl, enum climit_kind kind, const struct sockaddr *sa)
{
	unsigned char key[16];
	uint8_t family;
	if (!auth_client_key(sa, key, &family))
		return 0;
	pthread_mutex_lock(&cl->lock);
	struct entry *e = find(cl, key, family, (uint8_t)kind);
	unsigned n = e->family ? e->count : 0;
	pthread_mutex_unlock(&cl->lock);
	return n;
}

unsigned climit_entries(struct climit *cl)
{
	pthread_mutex_lock(&cl->lock);
	unsigned n = cl->used;
	pthread_mutex_unlock(&cl->lock);
	return n;
}

/* ---- the bucket ------------------------------------------------------- */

bool climit_bucket_ready(struct climit_bucket *b, uint32_t rate, uint64_t now_ms, uint64_t *wait_ms)
{
	if (!rate)
		return true;
	uint64_t full = (uint64_t)rate * 2000; /* burst: two seconds' worth */
	if (!b->last_ms) {
		b->milli = full;
	} else if (now_ms > b->last_ms) {
		/* rate tokens a second = rate milli-tokens a millisecond */
		uint64_t add = (now_ms - b->last_ms) * rate;
		b->milli = add >= full - RP_MIN(b->milli, full) ? full : b->milli + add;
	}
	b->last_ms = now_ms ? now_ms : 1;
	if (b->milli >= 1000)
		return true;
	if (wait_ms)
		*wait_ms = (1000 - b->milli + rate - 1) / rate;
	return false;
}

void climit_bucket_take(struct climit_bucket *b, uint32_t rate)
{
	if (rate)
		b->milli = b->milli >= 1000 ? b->milli - 1000 : 0;
}

/* ---- sessions --------------------------------------------------------- */

bool climit_note(struct climit_session *s, enum climit_reason r)
{
	uint8_t bit = (uint8_t)(1u << r);
	if (s->noted & bit)
		return false;
	s->noted |= bit;
	return true;
}

bool climit_gate(struct climit_session *s, struct conn *c, const struct climit_config *cc,
                 bool counted, uint64_t now_ms, enum climit_reason *why)
{
	*why = CLIMIT_REASONS;
	if (conn_out_blocked(c)) {
		if (climit_note(s, CLIMIT_OUTPUT))
			*why = CLIMIT_OUTPUT;
		return false;
	}
	if (!counted || s->exempt)
		return true;
	uint64_t wait = 0;
	if (!climit_bucket_ready(&s->bucket, cc->commands_per_second, now_ms, &wait)) {
		conn_throttle(c, wait);
		if (climit_note(s, CLIMIT_RATE))
			*why = CLIMIT_RATE;
		return false;
	}
	climit_bucket_take(&s->bucket, cc->commands_per_second);
	return true;
}

/* ---- logging ---------------------------------------------------------- */

bool climit_log_ok(struct climit_log *l, uint64_t now_ms, unsigned *dropped)
{
	uint64_t sec = now_ms / 1000;
	if (sec != l->second) {
		l->second = sec;
		l->n = 0;
	}
	if (l->n >= CLIMIT_LOG_PER_SEC) {
		l->dropped++;
		return false;
	}
	l->n++;
	*dropped = l->dropped;
	l->dropped = 0;
	return true;
}

void climit_log_cut(struct climit_log *l, uint64_t now_ms, const char *proto, const char *peer,
                    enum climit_reason r, const char *detail)
{
	unsigned dropped;
	if (!climit_log_ok(l, now_ms, &dropped))
		return;
	if (dropped)
		log_info("%s %s: client limit %s: %s (and %u more lines like it not logged)", proto,
		         peer, climit_reason_names[r], detail, dropped);
	else
		log_info("%s %s: client limit %s: %s", proto, peer, climit_reason_names[r], detail);
}
