/* test_dns.c - the resolver (dns/): MX ordering and null MX (pure helpers),
 * answer TTLs from raw DNS replies, what each DNS status means for
 * delivery (relay/delivery.c's mapping, then queue/outcome.c), and the
 * cache through the public API: TTLs capped by max_ttl, negative entries,
 * LRU eviction, lookups in flight shared, and the memory it accounts.
 *
 * The resolver runs for real: a loop (base/loop.c) in its own thread with
 * dns_new on it, talking UDP to a small DNS server in this file that
 * answers from a zone table with reply packets built byte by byte (and
 * logs every question, so a test can count the queries the cache saved).
 * Criterion assertions stay in the test's own thread; the loop thread only
 * runs what the test pushes through the loop's inbox and waits for.
 *
 * Every wait is bounded (sem_wait_ms); the suites set no .timeout: with
 * one, Criterion 2.4.1's runner itself leaked 48 bytes now and then under
 * LeakSanitizer with --jobs=2 (ctest's TIMEOUT still bounds the program).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dns/dns.h"
#include "dns/dns_impl.h" /* sizeof(struct dns_entry), for the memory check */
#include "queue/outcome.h"
#include "base/util.h"
#include "relay/delivery.h"
#include "base/loop.h"

/* ---- DNS wire format ------------------------------------------------------ */

enum { T_A = 1, T_MX = 15, T_AAAA = 28 };
enum { RC_NOERROR = 0, RC_SERVFAIL = 2, RC_NXDOMAIN = 3, RC_REFUSED = 5 };

struct pkt {
	unsigned char b[1500];
	size_t n;
};

static void put8(struct pkt *p, unsigned v)
{
	cr_assert_lt(p->n, sizeof(p->b));
	p->b[p->n++] = (unsigned char)v;
}

static void put16(struct pkt *p, unsigned v)
{
	put8(p, v >> 8);
	put8(p, v);
}

static void put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

/* put_name - a name as labels ("." and "" are the root: one zero byte). */
static void put_name(struct pkt *p, const char *name)
{
	while (*name && strcmp(name, ".")) {
		const char *dot = strchr(name, '.');
		size_t len = dot ? (size_t)(dot - name) : strlen(name);
		put8(p, (unsigned)len);
		for (size_t i = 0; i < len; i++)
			put8(p, (unsigned char)name[i]);
		name += len + (dot ? 1 : 0);
	}
	put8(p, 0);
}

static void put_header(struct pkt *p, unsigned id, unsigned flags, unsigned qd, unsigned an,
                       unsigned ns, unsigned ar)
{
	put16(p, id);
	put16(p, flags);
	put16(p, qd);
	put16(p, an);
	put16(p, ns);
	put16(p, ar);
}

/* put_rr - one record; owner NULL: a pointer to the question's name. */
static void put_rr(struct pkt *p, const char *owner, unsigned type, uint32_t ttl, const void *rdata,
                   size_t rdlen)
{
	if (owner)
		put_name(p, owner);
	else
		put16(p, 0xc00c);
	put16(p, type);
	put16(p, 1); /* IN */
	put32(p, ttl);
	put16(p, (unsigned)rdlen);
	for (size_t i = 0; i < rdlen; i++)
		put8(p, ((const unsigned char *)rdata)[i]);
}

static void put_mx(struct pkt *p, const char *owner, uint32_t ttl, unsigned pref, const char *host)
{
	struct pkt rd = { .n = 0 };
	put16(&rd, pref);
	put_name(&rd, host);
	put_rr(p, owner, T_MX, ttl, rd.b, rd.n);
}

/* ---- a small DNS server, answering from a zone table ----------------------- */

struct zrec {
	const char *name;
	unsigned type;
	uint32_t ttl;
	unsigned pref;    /* MX */
	const char *data; /* MX: exchanger; A and AAAA: the address */
};

static const struct zrec zone[] = {
	/* exchangers */
	{ "mx-a.t", T_A, 300, 0, "192.0.2.1" },
	{ "mx-a.t", T_A, 300, 0, "192.0.2.2" },
	{ "mx-a.t", T_AAAA, 300, 0, "2001:db8::a" },
	{ "mx-b.t", T_A, 100, 0, "192.0.2.3" },
	{ "mx-c.t", T_A, 300, 0, "192.0.2.4" },
	{ "mx-d.t", T_A, 300, 0, "192.0.2.5" },
	{ "mx-e.t", T_A, 300, 0, "192.0.2.6" },
	{ "mx-6.t", T_AAAA, 300, 0, "2001:db8::6" },
	/* MX in wire order 30, 10, 20, 10, 10: the answer comes sorted */
	{ "sorted.t", T_MX, 600, 30, "mx-6.t" },
	{ "sorted.t", T_MX, 600, 10, "mx-c.t" },
	{ "sorted.t", T_MX, 600, 20, "mx-b.t" },
	{ "sorted.t", T_MX, 600, 10, "mx-d.t" },
	{ "sorted.t", T_MX, 600, 10, "mx-e.t" },
	/* RFC 7505 */
	{ "null.t", T_MX, 300, 0, "." },
	{ "mixednull.t", T_MX, 300, 0, "." },
	{ "mixednull.t", T_MX, 300, 10, "mx-b.t" },
	{ "nullpref.t", T_MX, 300, 10, "." }, /* "." at 10: not a null MX, no exchanger */
	/* no MX: the domain's own addresses */
	{ "implicit.t", T_A, 300, 0, "192.0.2.9" },
	/* an exchanger that has no address */
	{ "noaddr.t", T_MX, 300, 10, "nowhere.t" },
	/* TTLs */
	{ "ttl1.t", T_A, 1, 0, "192.0.2.11" },
	{ "long.t", T_A, 86400, 0, "192.0.2.12" },
	{ "mxlow.t", T_MX, 2, 10, "mx-c.t" }, /* the MX TTL is the smallest */
	{ "share1.t", T_MX, 300, 10, "mx-a.t" },
	{ "share2.t", T_MX, 300, 10, "mx-a.t" },
	{ "many.t", T_MX, 300, 10, "mx-c.t" },
	/* an internationalised domain, as the DNS knows it: münchen.t */
	{ "xn--mnchen-3ya.t", T_MX, 300, 10, "mx-c.t" },
	/* the LRU */
	{ "h1.t", T_A, 300, 0, "192.0.2.21" },
	{ "h2.t", T_A, 300, 0, "192.0.2.22" },
	{ "h3.t", T_A, 300, 0, "192.0.2.23" },
	{ "h4.t", T_A, 300, 0, "192.0.2.24" },
	{ "h5.t", T_A, 300, 0, "192.0.2.25" },
	{ "h5.t", T_A, 300, 0, "192.0.2.26" },
};

/* Names with a behaviour rather than records. */
#define SILENT   "silent.t"   /* never answered: c-ares times out (any silent*) */
#define SERVFAIL "servfail.t" /* SERVFAIL */
#define REFUSED  "refused.t"  /* REFUSED */
#define BADMX    "badmx.t"    /* an MX record whose data runs past the packet */
/* bulk<n>.t: MX 10 mx-c.t, for any n; held<n>.t: the same, when released */

struct fake_dns {
	int fd;
	uint16_t port;
	pthread_t thr;
	atomic_bool stop;
	pthread_mutex_t mu;
	struct {
		char name[256];
		unsigned type;
	} log[8192];
	unsigned nlog;
	/* held<n>.t questions are kept unanswered while hold is set, then
	 * answered like bulk<n>.t (server thread only, but hold) */
	atomic_bool hold;
	struct held {
		unsigned char q[512];
		size_t n;
		struct sockaddr_storage from;
		socklen_t fromlen;
	} held[256];
	unsigned nheld;
};

/* parse_question - the question of a query: name (lower case), type, and
 * where the question ends. false when it is not a query we understand. */
static bool parse_question(const unsigned char *q, size_t n, char *name, size_t namelen,
                           unsigned *type, size_t *end)
{
	if (n < 12 || (q[2] & 0x80) || ((q[4] << 8) | q[5]) != 1)
		return false;
	size_t i = 12, o = 0;
	while (i < n && q[i]) {
		unsigned len = q[i++];
		if (len > 63 || i + len > n || o + len + 2 > namelen)
			return false;
		if (o)
			name[o++] = '.';
		for (unsigned k = 0; k < len; k++) {
			unsigned char c = q[i + k];
			name[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
		i += len;
	}
	if (i + 5 > n)
		return false;
	name[o] = '\0';
	*type = (q[i + 1] << 8) | q[i + 2];
	*end = i + 5;
	return true;
}

/* fake_reply - the answer to query q (false: stay silent). */
static bool fake_reply(const unsigned char *q, size_t qn, const char *name, unsigned type,
                       size_t qend, struct pkt *out)
{
	if (!strncmp(name, "silent", 6))
		return false;
	unsigned rcode = RC_NXDOMAIN, an = 0;
	bool exists = false;
	if (!strncmp(name, "bulk", 4) || !strncmp(name, "held", 4)) {
		out->n = 0;
		put_header(out, (q[0] << 8) | q[1], 0x8580, 1, type == T_MX, 0, 0);
		for (size_t i = 12; i < qend; i++)
			put8(out, q[i]);
		if (type == T_MX)
			put_mx(out, NULL, 300, 10, "mx-c.t");
		return true;
	}
	for (size_t i = 0; i < RP_ARRAY_LEN(zone); i++)
		if (!strcmp(zone[i].name, name)) {
			exists = true;
			an += zone[i].type == type;
		}
	if (exists)
		rcode = RC_NOERROR;
	if (!strcmp(name, SERVFAIL))
		rcode = RC_SERVFAIL;
	if (!strcmp(name, REFUSED))
		rcode = RC_REFUSED;
	if (!strcmp(name, BADMX))
		rcode = RC_NOERROR, an = type == T_MX;
	(void)qn;
	out->n = 0;
	unsigned flags = 0x8000 | 0x0400 | (((q[2] << 8) | q[3]) & 0x0100) | 0x0080 | rcode;
	put_header(out, (q[0] << 8) | q[1], flags, 1, an, 0, 0);
	for (size_t i = 12; i < qend; i++)
		put8(out, q[i]);
	if (!strcmp(name, BADMX) && type == T_MX) {
		/* rdlength 40, but the packet ends after 4 bytes of it. */
		put16(out, 0xc00c);
		put16(out, T_MX);
		put16(out, 1);
		put32(out, 300);
		put16(out, 40);
		put16(out, 10);
		put16(out, 0x0102);
		return true;
	}
	for (size_t i = 0; i < RP_ARRAY_LEN(zone); i++) {
		const struct zrec *z = &zone[i];
		if (strcmp(z->name, name) || z->type != type)
			continue;
		if (type == T_MX) {
			put_mx(out, NULL, z->ttl, z->pref, z->data);
		} else {
			unsigned char addr[16];
			int fam = type == T_A ? AF_INET : AF_INET6;
			if (inet_pton(fam, z->data, addr) != 1)
				abort();
			put_rr(out, NULL, type, z->ttl, addr, type == T_A ? 4 : 16);
		}
	}
	return true;
}

static void *fake_main(void *arg)
{
	struct fake_dns *f = arg;
	while (!atomic_load(&f->stop)) {
		if (f->nheld && !atomic_load(&f->hold)) {
			for (unsigned i = 0; i < f->nheld; i++) {
				struct held *h = &f->held[i];
				char name[256];
				unsigned type;
				size_t end;
				struct pkt out;
				if (parse_question(h->q, h->n, name, sizeof(name), &type, &end) &&
				    fake_reply(h->q, h->n, name, type, end, &out))
					sendto(f->fd, out.b, out.n, 0, (struct sockaddr *)&h->from,
					       h->fromlen);
			}
			f->nheld = 0;
		}
		struct pollfd pfd = { .fd = f->fd, .events = POLLIN };
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		unsigned char q[1500];
		struct sockaddr_storage from;
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(f->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
		char name[256];
		unsigned type;
		size_t end;
		if (n <= 0 || !parse_question(q, (size_t)n, name, sizeof(name), &type, &end))
			continue;
		pthread_mutex_lock(&f->mu);
		if (f->nlog < RP_ARRAY_LEN(f->log)) {
			snprintf(f->log[f->nlog].name, sizeof(f->log[0].name), "%s", name);
			f->log[f->nlog].type = type;
			f->nlog++;
		}
		pthread_mutex_unlock(&f->mu);
		if (!strncmp(name, "held", 4) && atomic_load(&f->hold)) {
			if (f->nheld == RP_ARRAY_LEN(f->held) || (size_t)n > sizeof(f->held[0].q))
				abort(); /* the test asks for more than it should */
			struct held *h = &f->held[f->nheld++];
			memcpy(h->q, q, (size_t)n);
			h->n = (size_t)n;
			h->from = from;
			h->fromlen = fromlen;
			continue;
		}
		struct pkt out;
		if (fake_reply(q, (size_t)n, name, type, end, &out))
			sendto(f->fd, out.b, out.n, 0, (struct sockaddr *)&from, fromlen);
	}
	return NULL;
}

static struct fake_dns fake;

static void fake_start(void)
{
	memset(&fake, 0, sizeof(fake));
	pthread_mutex_init(&fake.mu, NULL);
	fake.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fake.fd, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fake.fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "bind: %s",
	             strerror(errno));
	socklen_t len = sizeof(sin);
	cr_assert_eq(getsockname(fake.fd, (struct sockaddr *)&sin, &len), 0);
	fake.port = ntohs(sin.sin_port);
	cr_assert_eq(pthread_create(&fake.thr, NULL, fake_main, &fake), 0);
}

static void fake_stop(void)
{
	atomic_store(&fake.stop, true);
	pthread_join(fake.thr, NULL);
	close(fake.fd);
}

/* queries - how many questions for (name, type) the server has seen. */
static unsigned queries(const char *name, unsigned type)
{
	unsigned n = 0;
	pthread_mutex_lock(&fake.mu);
	for (unsigned i = 0; i < fake.nlog; i++)
		n += !strcmp(fake.log[i].name, name) && fake.log[i].type == type;
	pthread_mutex_unlock(&fake.mu);
	return n;
}

/* ---- the resolver on a loop in its own thread ------------------------------ */

static struct {
	struct loop *l;
	struct dns_resolver *r;
	struct dns_config cfg;
	char servers[64];
	char err[256];
	pthread_t thr;
	sem_t ready;
} T;

static void *loop_main(void *arg)
{
	(void)arg;
	struct loop_config lc = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 16, .buf_size = 4096
	};
	T.l = loop_new(&lc);
	if (T.l)
		T.r = dns_new(T.l, &T.cfg, T.err, sizeof(T.err));
	sem_post(&T.ready);
	if (!T.r)
		return NULL;
	loop_run(T.l);
	dns_free(T.r);
	loop_free(T.l);
	return NULL;
}

static void sem_wait_ms(sem_t *s, unsigned ms, const char *what)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	int rc;
	while ((rc = sem_timedwait(s, &ts)) < 0 && errno == EINTR)
		;
	cr_assert_eq(rc, 0, "timed out waiting for %s", what);
}

struct call {
	struct mq_item item;
	void (*fn)(void *arg);
	void *arg;
	sem_t done;
};

static void call_run(struct mq_item *item, void *ctx)
{
	(void)ctx;
	struct call *c = RP_CONTAINER_OF(item, struct call, item);
	c->fn(c->arg);
	sem_post(&c->done);
}

/* on_loop - run fn(arg) on the loop's thread and wait until it has. */
static void on_loop(void (*fn)(void *), void *arg)
{
	struct call c = { .fn = fn, .arg = arg };
	sem_init(&c.done, 0, 0);
	mq_push(loop_inbox(T.l), &c.item, call_run);
	sem_wait_ms(&c.done, 5000, "the loop thread");
	sem_destroy(&c.done);
}

/* dns_setup - the fake server and a resolver pointed at it; cfg fields left
 * zero get test defaults. */
static void dns_setup(struct dns_config cfg)
{
	fake_start();
	snprintf(T.servers, sizeof(T.servers), "127.0.0.1:%u", fake.port);
	cfg.servers = T.servers;
	if (!cfg.max_ttl_ms)
		cfg.max_ttl_ms = 3600 * 1000;
	if (!cfg.negative_ttl_ms)
		cfg.negative_ttl_ms = 60 * 1000;
	if (!cfg.cache_size)
		cfg.cache_size = 1000;
	if (!cfg.timeout_ms)
		cfg.timeout_ms = 300;
	if (!cfg.tries)
		cfg.tries = 1;
	T.cfg = cfg;
	sem_init(&T.ready, 0, 0);
	cr_assert_eq(pthread_create(&T.thr, NULL, loop_main, NULL), 0);
	sem_wait_ms(&T.ready, 5000, "dns_new");
	cr_assert_not_null(T.l, "loop_new: %s", strerror(errno));
	cr_assert_not_null(T.r, "dns_new: %s", T.err);
}

static void stop_fn(void *arg)
{
	(void)arg;
	loop_stop(T.l);
}

static void dns_teardown(void)
{
	on_loop(stop_fn, NULL);
	pthread_join(T.thr, NULL);
	fake_stop();
}

/* One answer awaited by the test. */
struct answer {
	struct dns_result *res; /* a reference of our own, once answered */
	sem_t sem;
	bool answered;
	bool at_once; /* answered inside dns_resolve_* (from the cache) */
};

static void answer_cb(void *arg, struct dns_result *res)
{
	struct answer *a = arg;
	if (a->answered)
		abort(); /* twice: a bug the test thread would miss */
	dns_result_ref(res);
	a->res = res;
	a->answered = true;
	sem_post(&a->sem);
}

struct ask {
	bool mx;
	const char *name;
	struct answer *a;
	unsigned n;
};

static void ask_fn(void *arg)
{
	struct ask *k = arg;
	for (unsigned i = 0; i < k->n; i++) {
		if (k->mx)
			dns_resolve_mx(T.r, k->name, answer_cb, &k->a[i]);
		else
			dns_resolve_host(T.r, k->name, answer_cb, &k->a[i]);
		k->a[i].at_once = k->a[i].answered;
	}
}

/* ask_many - n lookups of name started in one go (one loop callback). */
static void ask_many(bool mx, const char *name, struct answer *a, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		sem_init(&a[i].sem, 0, 0);
	}
	struct ask k = { mx, name, a, n };
	on_loop(ask_fn, &k);
}

static void await(struct answer *a, const char *name)
{
	sem_wait_ms(&a->sem, 5000, name);
	sem_destroy(&a->sem);
}

/* resolve - one lookup, waited for: the answer (a reference; drop()). */
static struct dns_result *resolve(bool mx, const char *name, bool *at_once)
{
	struct answer a;
	ask_many(mx, name, &a, 1);
	await(&a, name);
	if (at_once)
		*at_once = a.at_once;
	return a.res;
}

#define MX   true
#define HOST false

static void unref_fn(void *arg)
{
	dns_result_unref(arg);
}

/* drop - release a reference on the loop's thread (refs are not atomic). */
static void drop(struct dns_result *res)
{
	on_loop(unref_fn, res);
}

static void stats_fn(void *arg)
{
	dns_get_stats(T.r, arg);
}

static struct dns_stats stats(void)
{
	struct dns_stats st;
	on_loop(stats_fn, &st);
	return st;
}

static const char *hop_addr(const struct dns_hop *h, char *buf, size_t len)
{
	const void *a = h->addr.sa.sa_family == AF_INET ? (const void *)&h->addr.sin.sin_addr
	                                                : (const void *)&h->addr.sin6.sin6_addr;
	return inet_ntop(h->addr.sa.sa_family, a, buf, (socklen_t)len);
}

/* ---- MX ordering ------------------------------------------------------------ */

static void mx_set(struct dns_mx *mx, const char *const *hosts, const uint16_t *prefs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		mx[i].host = (char *)hosts[i];
		mx[i].pref = prefs[i];
	}
}

/* The resolver's seeds: a counter times the golden ratio (dns_resolver.c). */
static uint64_t seed_of(uint64_t i)
{
	return i * 0x9e3779b97f4a7c15ull;
}

Test(mx_order, sorted_by_preference_for_every_seed)
{
	/* Random preference lists: sorted, nothing lost or duplicated. */
	uint64_t x = 88172645463325252ull;
	for (unsigned round = 0; round < 2000; round++) {
		unsigned n = 1 + round % 12;
		static const char *const names[] = { "a", "b", "c", "d", "e", "f",
			                             "g", "h", "i", "j", "k", "l" };
		struct dns_mx mx[12];
		uint16_t prefs[12];
		for (unsigned i = 0; i < n; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			prefs[i] = (uint16_t)(x % 4 * 10); /* 0, 10, 20, 30: many ties */
		}
		mx_set(mx, names, prefs, n);
		dns_mx_order(mx, n, seed_of(round));
		unsigned seen = 0;
		for (unsigned i = 0; i < n; i++) {
			if (i)
				cr_assert_leq(mx[i - 1].pref, mx[i].pref, "round %u: %u before %u",
				              round, mx[i - 1].pref, mx[i].pref);
			unsigned k = (unsigned)(mx[i].host[0] - 'a');
			cr_assert_lt(k, n);
			cr_assert_eq(mx[i].pref, prefs[k], "round %u: %s lost its preference",
			             round, mx[i].host);
			cr_assert_not(seen & (1u << k), "round %u: %s twice", round, mx[i].host);
			seen |= 1u << k;
		}
	}
}

/* perm_index - which of the n! orders of hosts "a".."d" mx[0..n) is. */
static unsigned perm_index(const struct dns_mx *mx, unsigned n)
{
	unsigned idx = 0, used = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned k = (unsigned)(mx[i].host[0] - 'a'), rank = 0;
		for (unsigned j = 0; j < k; j++)
			rank += !(used & (1u << j));
		used |= 1u << k;
		unsigned f = 1;
		for (unsigned j = 2; j < n - i; j++)
			f *= j;
		idx += rank * f;
	}
	return idx;
}

Test(mx_order, equal_preferences_reach_every_order)
{
	/* pref 5: x; pref 10: a b c d (24 orders); pref 20: a' b' (2 orders),
	 * given in a scrambled wire order. */
	static const char *const hosts[] = { "b2", "c", "a", "x", "a2", "d", "b" };
	static const uint16_t prefs[] = { 20, 10, 10, 5, 20, 10, 10 };
	enum { N = 7, SEEDS = 24000 };
	unsigned count10[24] = { 0 }, count20[2] = { 0 };
	for (uint64_t s = 1; s <= SEEDS; s++) {
		struct dns_mx mx[N];
		mx_set(mx, hosts, prefs, N);
		dns_mx_order(mx, N, seed_of(s));
		cr_assert_str_eq(mx[0].host, "x", "seed %llu: the best preference is not first",
		                 (unsigned long long)s);
		for (unsigned i = 1; i < 5; i++)
			cr_assert_eq(mx[i].pref, 10, "seed %llu: position %u",
			             (unsigned long long)s, i);
		for (unsigned i = 5; i < 7; i++)
			cr_assert_eq(mx[i].pref, 20, "seed %llu: position %u",
			             (unsigned long long)s, i);
		count10[perm_index(mx + 1, 4)]++;
		count20[!strcmp(mx[5].host, "b2")]++;
	}
	/* Every order shows up, each near 1/24 (1/2) of the time: a loose
	 * bound (expected 1000 each; 700 is over 9 standard deviations off). */
	for (unsigned i = 0; i < 24; i++)
		cr_assert_gt(count10[i], SEEDS / 24 * 7 / 10,
		             "order %u of the pref-10 group: %u of %u", i, count10[i], SEEDS);
	for (unsigned i = 0; i < 2; i++)
		cr_assert_gt(count20[i], SEEDS / 2 * 9 / 10, "pref-20 order %u: %u of %u", i,
		             count20[i], SEEDS);
}

Test(mx_order, same_seed_same_order_and_small_inputs)
{
	static const char *const hosts[] = { "a", "b", "c", "d" };
	static const uint16_t prefs[] = { 10, 10, 10, 10 };
	struct dns_mx m1[4], m2[4];
	mx_set(m1, hosts, prefs, 4);
	mx_set(m2, hosts, prefs, 4);
	dns_mx_order(m1, 4, 12345);
	dns_mx_order(m2, 4, 12345);
	for (unsigned i = 0; i < 4; i++)
		cr_assert_str_eq(m1[i].host, m2[i].host);
	/* Seed 0 is a seed like any other (the generator must not stick at 0). */
	unsigned orders = 0;
	for (uint64_t s = 0; s < 50; s++) {
		mx_set(m1, hosts, prefs, 4);
		dns_mx_order(m1, 4, s);
		orders |= 1u << (perm_index(m1, 4) % 32);
	}
	cr_assert_gt(__builtin_popcount(orders), 4, "consecutive seeds give hardly any orders");
	dns_mx_order(NULL, 0, 1); /* nothing to order */
	struct dns_mx one = { (char *)"only", 7 };
	dns_mx_order(&one, 1, 99);
	cr_assert_str_eq(one.host, "only");
	cr_assert_eq(one.pref, 7);
}

/* ---- null MX (RFC 7505) ----------------------------------------------------- */

struct null_row {
	const char *what;
	unsigned n;
	struct dns_mx mx[3];
	bool null;
};

Test(mx_null, table)
{
	static const struct null_row rows[] = {
		{ "MX 0 \".\"", 1, { { (char *)".", 0 } }, true },
		{ "MX 0 \"\" (c-ares' root name)", 1, { { (char *)"", 0 } }, true },
		{ "MX 10 \".\"", 1, { { (char *)".", 10 } }, false },
		{ "MX 0 mx.example", 1, { { (char *)"mx.example", 0 } }, false },
		{ "MX 0 . with MX 10 mx",
		  2,
		  { { (char *)"", 0 }, { (char *)"mx.example", 10 } },
		  false },
		{ "MX 10 mx with MX 0 .",
		  2,
		  { { (char *)"mx.example", 10 }, { (char *)".", 0 } },
		  false },
		{ "two MX 0 .", 2, { { (char *)".", 0 }, { (char *)".", 0 } }, false },
		{ "no MX at all", 0, { { NULL, 0 } }, false },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(rows); i++)
		cr_assert_eq(dns_mx_is_null(rows[i].mx, rows[i].n), rows[i].null, "%s: %s",
		             rows[i].what, rows[i].null ? "not seen as null" : "taken for null");
}

/* ---- answer TTLs from raw replies ------------------------------------------- */

/* reply - an MX reply for example.t with the given answer TTLs, plus an
 * additional A record with TTL extra_ttl (not an answer). */
static void reply(struct pkt *p, const uint32_t *ttls, unsigned n, uint32_t extra_ttl)
{
	p->n = 0;
	put_header(p, 0x1234, 0x8180, 1, n, 0, extra_ttl ? 1 : 0);
	put_name(p, "example.t");
	put16(p, T_MX);
	put16(p, 1);
	for (unsigned i = 0; i < n; i++) {
		char host[32];
		snprintf(host, sizeof(host), "mx%u.example.t", i);
		put_mx(p, NULL, ttls[i], 10 * i, host);
	}
	if (extra_ttl) {
		static const unsigned char a[4] = { 192, 0, 2, 1 };
		put_rr(p, "mx0.example.t", T_A, extra_ttl, a, 4);
	}
}

Test(idna, a_labels)
{
	static const struct {
		const char *in, *out;
	} t[] = {
		{ "example.com", "example.com" },
		{ "Example.COM", "example.com" },
		{ "m\xc3\xbcnchen.test", "xn--mnchen-3ya.test" },
		{ "M\xc3\x9cNCHEN.test", "xn--mnchen-3ya.test" }, /* upper case maps first */
		{ "b\xc3\xbc"
		  "cher.example",
		  "xn--bcher-kva.example" },
		{ "\xc3\xbc", "xn--tda" },
		{ "fa\xc3\x9f.de", "xn--fa-hia.de" }, /* IDNA2008 keeps the sharp s */
		{ "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e.jp", "xn--wgv71a119e.jp" }, /* 日本語 */
		/* RFC 3492 section 7.1 (B), Chinese (simplified) */
		{ "\xe4\xbb\x96\xe4\xbb\xac\xe4\xb8\xba\xe4\xbb\x80\xe4\xb9\x88\xe4\xb8"
		  "\x8d\xe8\xaf\xb4\xe4\xb8\xad\xe6\x96\x87",
		  "xn--ihqwcrb4cv8a8dqg056pqjye" },
		/* RFC 3492 section 7.1 (L), 3年B組金八先生, lower-cased */
		{ "3\xe5\xb9\xb4"
		  "B\xe7\xb5\x84\xe9\x87\x91\xe5\x85\xab\xe5\x85\x88\xe7"
		  "\x94\x9f",
		  "xn--3b-ww4c5e180e575a65lsy2b" },
		/* Cyrillic upper case: ПРИМЕР.испытание */
		{ "\xd0\x9f\xd0\xa0\xd0\x98\xd0\x9c\xd0\x95\xd0\xa0.\xd0\xb8\xd1\x81\xd0"
		  "\xbf\xd1\x8b\xd1\x82\xd0\xb0\xd0\xbd\xd0\xb8\xd0\xb5",
		  "xn--e1afmkfd.xn--80akhbyknj4f" },
	};
	char out[256];
	for (size_t i = 0; i < RP_ARRAY_LEN(t); i++) {
		cr_assert(dns_to_ascii(t[i].in, out, sizeof(out)), "case %zu failed", i);
		cr_assert_str_eq(out, t[i].out, "case %zu", i);
	}
}

Test(idna, bad_input_fails_and_nothing_overflows)
{
	char out[256];
	static const char *const bad[] = {
		"\xff.test",         /* not UTF-8 */
		"a\xc3",             /* truncated sequence */
		"\xc0\xaf.test",     /* overlong '/' */
		"\xed\xa0\x80.test", /* a surrogate */
		"\xf4\x90\x80\x80",  /* past U+10FFFF */
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(bad); i++)
		cr_assert_not(dns_to_ascii(bad[i], out, sizeof(out)), "bad case %zu accepted", i);
	/* A label of 64 octets is too long, 63 is fine; a U-label whose
	 * A-label passes 63 octets fails too. */
	char name[80];
	memset(name, 'a', 64);
	name[64] = '\0';
	cr_assert_not(dns_to_ascii(name, out, sizeof(out)));
	name[63] = '\0';
	cr_assert(dns_to_ascii(name, out, sizeof(out)));
	char u[200] = "";
	for (int i = 0; i < 40; i++)
		strcat(u, "\xc3\xbc"); /* 40 x ü: "xn--tda" + 39 x "a", 46 octets */
	cr_assert(dns_to_ascii(u, out, sizeof(out)));
	cr_assert_eq(strlen(out), 46, "%s", out);
	for (int i = 0; i < 23; i++)
		strcat(u, "\xc3\xbc"); /* 63 code points: an A-label of 69 octets */
	cr_assert_not(dns_to_ascii(u, out, sizeof(out)));
	/* Every short output buffer fails cleanly (ASan checks the bounds). */
	for (size_t n = 0; n < 24; n++) {
		char small[24];
		bool ok = dns_to_ascii("m\xc3\xbcnchen.test", small, n);
		cr_assert_eq(ok, n > strlen("xn--mnchen-3ya.test"), "buffer of %zu", n);
	}
}

Test(answer_ttl, smallest_answer_record)
{
	struct pkt p;
	unsigned ttl = 4242;
	static const uint32_t t1[] = { 300, 60, 3600 };
	reply(&p, t1, 3, 0);
	cr_assert(dns_answer_min_ttl(p.b, (int)p.n, &ttl));
	cr_assert_eq(ttl, 60);
	/* Only the answer section counts, not additional records. */
	static const uint32_t t2[] = { 500 };
	reply(&p, t2, 1, 5);
	cr_assert(dns_answer_min_ttl(p.b, (int)p.n, &ttl));
	cr_assert_eq(ttl, 500);
	static const uint32_t t3[] = { 0, 7 };
	reply(&p, t3, 2, 0);
	cr_assert(dns_answer_min_ttl(p.b, (int)p.n, &ttl));
	cr_assert_eq(ttl, 0);
	/* TTLs with the top bit set are read as the 32-bit value. */
	static const uint32_t t4[] = { 2147483647u };
	reply(&p, t4, 1, 0);
	cr_assert(dns_answer_min_ttl(p.b, (int)p.n, &ttl));
	cr_assert_eq(ttl, 2147483647u);
}

Test(answer_ttl, no_answer_or_bad_input)
{
	struct pkt p;
	unsigned ttl = 4242;
	reply(&p, NULL, 0, 0); /* NODATA: a question, no answer */
	cr_assert_not(dns_answer_min_ttl(p.b, (int)p.n, &ttl));
	reply(&p, NULL, 0, 30); /* an additional record only */
	cr_assert_not(dns_answer_min_ttl(p.b, (int)p.n, &ttl));
	static const uint32_t t[] = { 300, 60 };
	reply(&p, t, 2, 0);
	for (size_t cut = 0; cut < p.n; cut++) /* every truncation fails, none reads past */
		cr_assert_not(dns_answer_min_ttl(p.b, (int)cut, &ttl), "truncated at %zu", cut);
	cr_assert_not(dns_answer_min_ttl(p.b, -1, &ttl));
	unsigned char garbage[64];
	memset(garbage, 0xff, sizeof(garbage));
	cr_assert_not(dns_answer_min_ttl(garbage, (int)sizeof(garbage), &ttl));
	cr_assert_eq(ttl, 4242, "ttl written on failure");
}

/* ---- what a DNS answer means for delivery ------------------------------------ */

struct meaning {
	enum dns_status st;
	enum attempt_kind kind;
	enum outcome_action action; /* a first attempt, just submitted */
	const char *status;
	bool backoff;
};

static const struct meaning meanings[] = {
	{ DNS_NXDOMAIN, ATTEMPT_DNS_PERM, OUTCOME_FAIL, "5.1.2", false },
	{ DNS_NULL_MX, ATTEMPT_NULL_MX, OUTCOME_FAIL, "5.1.10", false },
	{ DNS_NO_ADDRESS, ATTEMPT_NO_ROUTE, OUTCOME_RETRY, "4.4.4", true },
	{ DNS_TEMPFAIL, ATTEMPT_DNS_TEMP, OUTCOME_RETRY, "4.4.3", true },
};

#define NOW 1800000000000ull
static const uint64_t delays[] = { 60000, 300000 };
static const struct retry_policy pol = {
	.delays_ms = delays, .ndelays = 2, .max_age_ms = 3 * 86400000ull, .jitter_pct = 0
};

static const struct meaning *meaning_of(enum dns_status st)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(meanings); i++)
		if (meanings[i].st == st)
			return &meanings[i];
	return NULL;
}

/* check_meaning - delivery_dns_kind, then outcome_decide, for st. */
static void check_meaning(enum dns_status st, const char *text)
{
	const struct meaning *m = meaning_of(st);
	cr_assert_not_null(m, "no row for DNS status %s", dns_status_name(st));
	enum attempt_kind kind = delivery_dns_kind(st);
	cr_assert_eq(kind, m->kind, "%s -> %s", dns_status_name(st), outcome_kind_name(kind));
	struct attempt_report rep;
	outcome_report_set(&rep, kind, STAGE_CONNECT, 0, text);
	struct outcome o;
	/* A first attempt. */
	outcome_decide(&rep, 0, 0, NOW, 0, &pol, &o);
	cr_assert_eq(o.action, m->action, "%s: %s", dns_status_name(st),
	             outcome_action_name(o.action));
	cr_assert_str_eq(o.status, m->status, "%s", dns_status_name(st));
	cr_assert_eq(o.dest_backoff, m->backoff, "%s: backoff", dns_status_name(st));
	cr_assert(o.counts, "%s: not counted as an attempt", dns_status_name(st));
	cr_assert_not(o.no_dsn, "%s: a failure without a DSN", dns_status_name(st));
	if (m->action == OUTCOME_RETRY) {
		cr_assert_eq(o.next_ms, NOW + 60000, "%s: retry time", dns_status_name(st));
		/* Still temporary on the 20th attempt, until max_age... */
		outcome_decide(&rep, 20, pol.max_age_ms - 1, NOW, 0, &pol, &o);
		cr_assert_eq(o.action, OUTCOME_RETRY);
		cr_assert_eq(o.next_ms, NOW + 300000, "%s: the last delay repeats",
		             dns_status_name(st));
		/* ...then it bounces as expired. */
		outcome_decide(&rep, 20, pol.max_age_ms, NOW, 0, &pol, &o);
		cr_assert_eq(o.action, OUTCOME_FAIL);
		cr_assert_str_eq(o.status, "4.4.7");
	} else {
		cr_assert_eq(o.next_ms, 0);
	}
}

Test(dns_meaning, every_status)
{
	/* Every status dns_status_name knows (past the last it says "?"),
	 * DNS_OK aside, has a row: a new status cannot go unnoticed. */
	unsigned n = 0;
	for (int s = DNS_OK + 1; strcmp(dns_status_name((enum dns_status)s), "?"); s++, n++)
		check_meaning((enum dns_status)s, "a DNS answer");
	cr_assert_eq(n, RP_ARRAY_LEN(meanings), "rows for statuses that do not exist");
	cr_assert_str_eq(dns_status_name(DNS_OK), "ok");
}

/* ---- the resolver against a DNS server --------------------------------------- */

static void cleanup_dns(void)
{
	dns_teardown();
}

static void setup_default(void)
{
	dns_setup((struct dns_config){ 0 });
}

TestSuite(resolver, .init = setup_default, .fini = cleanup_dns);

Test(resolver, mx_answer_sorted_with_addresses)
{
	uint64_t t0 = rp_mono_ms();
	struct dns_result *res = resolve(MX, "Sorted.T", NULL);
	uint64_t t1 = rp_mono_ms();
	cr_assert_eq(res->status, DNS_OK, "%s: %s", dns_status_name(res->status), res->error);
	/* c, d, e at 10 (one address each, shuffled), b at 20, 6 at 30. */
	cr_assert_eq(res->nhops, 5);
	char seen[8] = "";
	for (unsigned i = 0; i < 3; i++) {
		cr_assert_eq(res->hops[i].pref, 10);
		cr_assert(strlen(res->hops[i].host) == 6 && res->hops[i].host[3] >= 'c' &&
		              res->hops[i].host[3] <= 'e',
		          "hop %u is %s", i, res->hops[i].host);
		cr_assert_null(strchr(seen, res->hops[i].host[3]), "%s twice", res->hops[i].host);
		seen[i] = res->hops[i].host[3];
	}
	cr_assert_str_eq(res->hops[3].host, "mx-b.t");
	cr_assert_eq(res->hops[3].pref, 20);
	cr_assert_str_eq(res->hops[4].host, "mx-6.t");
	cr_assert_eq(res->hops[4].pref, 30);
	char buf[64];
	cr_assert_str_eq(hop_addr(&res->hops[3], buf, sizeof(buf)), "192.0.2.3");
	cr_assert_str_eq(hop_addr(&res->hops[4], buf, sizeof(buf)), "2001:db8::6");
	for (unsigned i = 0; i < res->nhops; i++)
		cr_assert_eq(res->hops[i].addr.sin.sin_port, 0, "the caller sets the port");
	/* Expiry: the smallest TTL involved, mx-b.t's A record (100 s). */
	cr_assert_geq(res->expires_ms, t0 + 100000);
	cr_assert_leq(res->expires_ms, t1 + 100000);
	cr_assert_eq(queries("sorted.t", T_MX), 1, "the key is case-insensitive");
	drop(res);
}

Test(resolver, equal_preferences_vary_between_lookups)
{
	/* A fresh seed per MX answer: over a few expiring lookups the first
	 * exchanger of the pref-10 group changes. Max TTL 0 forces each
	 * lookup to the server. */
	dns_teardown();
	dns_setup((struct dns_config){ .max_ttl_ms = 1 });
	unsigned firsts = 0;
	for (int i = 0; i < 60; i++) { /* all three first: 1 - 3 (2/3)^60 */
		struct dns_result *res = resolve(MX, "sorted.t", NULL);
		cr_assert_eq(res->status, DNS_OK, "%s", res->error);
		firsts |= 1u << (res->hops[0].host[3] - 'c');
		drop(res);
		usleep(3000);
	}
	cr_assert_eq(firsts, 7, "first exchangers seen: mask %u of c,d,e", firsts);
	cr_assert_geq(queries("sorted.t", T_MX), 60);
}

Test(resolver, null_mx_and_failures)
{
	struct row {
		bool mx;
		const char *name;
		enum dns_status st;
		const char *words;
	} rows[] = {
		{ MX, "null.t", DNS_NULL_MX, "null MX" },
		{ MX, "nx.t", DNS_NXDOMAIN, "NXDOMAIN" },
		{ MX, SERVFAIL, DNS_TEMPFAIL, "failed" },
		{ MX, REFUSED, DNS_TEMPFAIL, "failed" },
		{ MX, SILENT, DNS_TEMPFAIL, "failed" },
		{ MX, BADMX, DNS_TEMPFAIL, "malformed" },
		{ MX, "noaddr.t", DNS_NO_ADDRESS, "nowhere.t" },
		{ MX, "nullpref.t", DNS_NO_ADDRESS, "no usable exchanger" },
		{ HOST, "nx.t", DNS_NO_ADDRESS, "no such host" },
		{ HOST, "null.t", DNS_NO_ADDRESS, "no A or AAAA" },
		{ HOST, SERVFAIL, DNS_TEMPFAIL, "failed" },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(rows); i++) {
		struct dns_result *res = resolve(rows[i].mx, rows[i].name, NULL);
		cr_assert_eq(res->status, rows[i].st, "%s %s: %s (%s)", rows[i].mx ? "MX" : "host",
		             rows[i].name, dns_status_name(res->status), res->error);
		cr_assert_eq(res->nhops, 0);
		cr_assert_not_null(strstr(res->error, rows[i].words), "%s: '%s' lacks '%s'",
		                   rows[i].name, res->error, rows[i].words);
		/* From the wire to the outcome. */
		check_meaning(res->status, res->error);
		drop(res);
	}
	/* The null MX's exchanger "." is never looked up. */
	cr_assert_eq(queries("", T_A) + queries("", T_AAAA), 0);
}

Test(resolver, null_mx_mixed_with_others_is_not_null)
{
	struct dns_result *res = resolve(MX, "mixednull.t", NULL);
	cr_assert_eq(res->status, DNS_OK, "%s: %s", dns_status_name(res->status), res->error);
	cr_assert_eq(res->nhops, 1);
	cr_assert_str_eq(res->hops[0].host, "mx-b.t");
	cr_assert_eq(res->hops[0].pref, 10);
	/* "." is no host to look up (it would be a query for the root). */
	cr_assert_eq(queries("", T_A) + queries("", T_AAAA), 0, "the root was queried");
	drop(res);
}

Test(resolver, implicit_mx)
{
	struct dns_result *res = resolve(MX, "implicit.t", NULL);
	cr_assert_eq(res->status, DNS_OK, "%s", res->error);
	cr_assert_eq(res->nhops, 1);
	cr_assert_str_eq(res->hops[0].host, "implicit.t");
	cr_assert_eq(res->hops[0].pref, 0);
	char buf[64];
	cr_assert_str_eq(hop_addr(&res->hops[0], buf, sizeof(buf)), "192.0.2.9");
	cr_assert_eq(queries("implicit.t", T_MX), 1);
	cr_assert_eq(queries("implicit.t", T_A), 1);
	drop(res);
}

Test(resolver, an_internationalised_domain_is_looked_up_by_its_a_label)
{
	struct dns_result *res = resolve(MX, "M\xc3\x9cnchen.t", NULL); /* MÜnchen.t */
	cr_assert_eq(res->status, DNS_OK, "%s: %s", dns_status_name(res->status), res->error);
	cr_assert_str_eq(res->hops[0].host, "mx-c.t");
	drop(res);
	res = resolve(MX, "xn--mnchen-3ya.t", NULL);
	cr_assert_eq(res->status, DNS_OK);
	drop(res);
	cr_assert_eq(queries("xn--mnchen-3ya.t", T_MX), 1,
	             "the U-label and the A-label are one cache entry");
}

Test(resolver, lookups_in_flight_are_shared)
{
	enum { N = 40 };
	struct answer a[N];
	ask_many(MX, "many.t", a, N);
	for (unsigned i = 0; i < N; i++) {
		await(&a[i], "many.t");
		cr_assert_not(a[i].at_once);
		cr_assert_eq(a[i].res, a[0].res, "waiter %u got another answer", i);
	}
	cr_assert_eq(a[0].res->status, DNS_OK, "%s", a[0].res->error);
	struct dns_stats st = stats();
	cr_assert_eq(queries("many.t", T_MX), 1);
	cr_assert_eq(st.lookups, N + 1, "N MX lookups and one for the exchanger");
	cr_assert_eq(st.shared, N - 1);
	for (unsigned i = 0; i < N; i++)
		drop(a[i].res);
	/* Two domains with one exchanger: its addresses are looked up once. */
	struct dns_result *r1 = resolve(MX, "share1.t", NULL);
	struct dns_result *r2 = resolve(MX, "share2.t", NULL);
	cr_assert_eq(r1->status, DNS_OK);
	cr_assert_eq(r2->status, DNS_OK);
	cr_assert_eq(r1->nhops, 3);
	cr_assert_eq(queries("mx-a.t", T_A), 1);
	cr_assert_eq(queries("mx-a.t", T_AAAA), 1);
	cr_assert_eq(stats().hits, 1, "share2.t's exchanger came from the cache");
	drop(r1);
	drop(r2);
}

/* asked - how many of the server's questions so far start with prefix. */
static unsigned asked(const char *prefix)
{
	unsigned n = 0;
	pthread_mutex_lock(&fake.mu);
	for (unsigned i = 0; i < fake.nlog; i++)
		n += !strncmp(fake.log[i].name, prefix, strlen(prefix));
	pthread_mutex_unlock(&fake.mu);
	return n;
}

struct ask_each {
	char (*names)[32];
	struct answer *a;
	unsigned n;
};

static void ask_each_fn(void *arg)
{
	struct ask_each *k = arg;
	for (unsigned i = 0; i < k->n; i++)
		dns_resolve_mx(T.r, k->names[i], answer_cb, &k->a[i]);
}

/* ask_distinct - n MX lookups of prefix<i>.t, all started in one go. */
static struct answer *ask_distinct(const char *prefix, unsigned n, char (**names)[32])
{
	struct answer *a = xcalloc(n, sizeof(*a));
	*names = xcalloc(n, sizeof(**names));
	for (unsigned i = 0; i < n; i++) {
		snprintf((*names)[i], sizeof((*names)[i]), "%s%u.t", prefix, i);
		sem_init(&a[i].sem, 0, 0);
	}
	struct ask_each k = { *names, a, n };
	on_loop(ask_each_fn, &k);
	return a;
}

TestSuite(inflight);

Test(inflight, at_most_max_lookups_out)
{
	/* The server holds every question: the first DNS_MAX_INFLIGHT go out
	 * at once and no more while none is answered; once answers flow, the
	 * rest follow, each asked once. */
	dns_setup((struct dns_config){ .timeout_ms = 10000, .cache_size = 10000 });
	atomic_store(&fake.hold, true);
	enum { N = 2 * DNS_MAX_INFLIGHT + 1 };
	char(*names)[32];
	struct answer *a = ask_distinct("held", N, &names);
	uint64_t deadline = rp_mono_ms() + 5000;
	while (asked("held") < DNS_MAX_INFLIGHT && rp_mono_ms() < deadline)
		usleep(5000);
	usleep(200 * 1000); /* time for any more to arrive */
	unsigned out = asked("held");
	cr_assert_eq(out, DNS_MAX_INFLIGHT, "%u questions out at once, the limit is %u", out,
	             DNS_MAX_INFLIGHT);
	for (unsigned i = 0; i < N; i++) {
		int v;
		sem_getvalue(&a[i].sem, &v);
		cr_assert_eq(v, 0, "%s answered while the server held it", names[i]);
	}
	atomic_store(&fake.hold, false);
	for (unsigned i = 0; i < N; i++) {
		sem_wait_ms(&a[i].sem, 10000, names[i]);
		cr_assert_eq(a[i].res->status, DNS_OK, "%s: %s", names[i], a[i].res->error);
		drop(a[i].res);
	}
	cr_assert_eq(asked("held"), N, "each asked once");
	free(a);
	free(names);
	dns_teardown();
}

Test(inflight, a_burst_of_new_domains_loses_nothing)
{
	/* 3,000 new domains at once, one try each: any question or answer
	 * dropped by a full socket buffer would come back as a timeout. */
	dns_setup((struct dns_config){ .timeout_ms = 2000, .cache_size = 10000 });
	enum { N = 3000 };
	char(*names)[32];
	uint64_t t0 = rp_mono_ms();
	struct answer *a = ask_distinct("bulk", N, &names);
	for (unsigned i = 0; i < N; i++) {
		sem_wait_ms(&a[i].sem, 20000, names[i]);
		cr_assert_eq(a[i].res->status, DNS_OK, "%s: %s", names[i], a[i].res->error);
		cr_assert_str_eq(a[i].res->hops[0].host, "mx-c.t");
		drop(a[i].res);
	}
	uint64_t ms = rp_mono_ms() - t0;
	cr_assert_eq(asked("bulk"), N, "each asked once");
	cr_assert_eq(queries("mx-c.t", T_A), 1);
	struct dns_stats st = stats();
	cr_assert_eq(st.queries, N + 1);
	fprintf(stderr, "%u MX lookups in %llu ms\n", N, (unsigned long long)ms);
	free(a);
	free(names);
	dns_teardown();
}

/* ---- the cache: TTLs ----------------------------------------------------- */

TestSuite(cache);

/* expect_expiry - res expires ttl_ms after it was answered (t0..t1). */
static void expect_expiry(const struct dns_result *res, uint64_t t0, uint64_t t1, uint64_t ttl_ms,
                          const char *what)
{
	cr_assert(res->expires_ms >= t0 + ttl_ms && res->expires_ms <= t1 + ttl_ms,
	          "%s: expires %lld ms after the lookup, expected %llu", what,
	          (long long)(res->expires_ms - t0), (unsigned long long)ttl_ms);
}

/* timed - resolve with the time around it. */
static struct dns_result *timed(bool mx, const char *name, uint64_t *t0, uint64_t *t1,
                                bool *at_once)
{
	*t0 = rp_mono_ms();
	struct dns_result *res = resolve(mx, name, at_once);
	*t1 = rp_mono_ms();
	return res;
}

/* again - look name up again; its cached answer expires at exp. Asked
 * (from the loop's clock) before exp it must be a hit, from exp on a miss
 * (a new query); a lookup that straddles exp is not judged. Returns hit. */
static bool again(bool mx, const char *name, unsigned type, uint64_t exp)
{
	unsigned before_q = queries(name, type);
	uint64_t before = rp_mono_ms();
	bool hit;
	struct dns_result *res = resolve(mx, name, &hit);
	uint64_t after = rp_mono_ms();
	drop(res);
	if (after < exp)
		cr_assert(hit, "%s: not answered from the cache %lld ms before it expires", name,
		          (long long)(exp - after));
	if (before >= exp)
		cr_assert_not(hit, "%s: answered from the cache %llu ms after it expired", name,
		              (unsigned long long)(before - exp));
	cr_assert_eq(queries(name, type), before_q + !hit, "%s: a hit that asked, or the reverse",
	             name);
	return hit;
}

/* sleep_until - until the monotonic clock passes t. */
static void sleep_until(uint64_t t)
{
	while (rp_mono_ms() <= t)
		usleep(5 * 1000);
}

Test(cache, positive_ttl_then_a_new_query)
{
	dns_setup((struct dns_config){ .negative_ttl_ms = 50 });
	uint64_t t0, t1;
	bool hit;
	struct dns_result *res = timed(HOST, "ttl1.t", &t0, &t1, &hit);
	cr_assert_eq(res->status, DNS_OK);
	cr_assert_not(hit);
	expect_expiry(res, t0, t1, 1000, "TTL 1 s");
	uint64_t exp = res->expires_ms;
	drop(res);
	/* Within the TTL (and past negative_ttl, which is not for answers):
	 * from the cache, no query. Past it: asked again. */
	usleep(200 * 1000);
	again(HOST, "ttl1.t", T_A, exp);
	sleep_until(exp);
	cr_assert_not(again(HOST, "ttl1.t", T_A, exp));
	/* An MX answer lives as long as its shortest TTL: mxlow.t's MX (2 s),
	 * not its exchanger's address (300 s). */
	res = timed(MX, "mxlow.t", &t0, &t1, &hit);
	cr_assert_eq(res->status, DNS_OK);
	expect_expiry(res, t0, t1, 2000, "MX TTL 2 s");
	drop(res);
	dns_teardown();
}

Test(cache, positive_ttl_capped_by_max_ttl)
{
	dns_setup((struct dns_config){ .max_ttl_ms = 300 });
	uint64_t t0, t1;
	bool hit;
	struct dns_result *res = timed(HOST, "long.t", &t0, &t1, &hit);
	cr_assert_eq(res->status, DNS_OK);
	expect_expiry(res, t0, t1, 300, "TTL 1 day, max_ttl 300 ms");
	uint64_t exp = res->expires_ms;
	drop(res);
	again(HOST, "long.t", T_A, exp);
	sleep_until(exp);
	cr_assert_not(again(HOST, "long.t", T_A, exp), "kept past max_ttl");
	/* An implicit MX has no MX TTL of its own: max_ttl or the address's. */
	res = timed(MX, "implicit.t", &t0, &t1, &hit);
	cr_assert_eq(res->status, DNS_OK);
	expect_expiry(res, t0, t1, 300, "implicit MX");
	drop(res);
	dns_teardown();
}

Test(cache, negative_entries_expire_at_negative_ttl)
{
	dns_setup((struct dns_config){ .negative_ttl_ms = 400, .max_ttl_ms = 100 });
	static const struct {
		bool mx;
		const char *name;
		unsigned type;
	} names[] = {
		{ MX, "nx.t", T_MX },     { MX, SERVFAIL, T_MX }, { MX, "null.t", T_MX },
		{ MX, "noaddr.t", T_MX }, { HOST, "nx2.t", T_A },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(names); i++) {
		uint64_t t0, t1;
		bool hit;
		struct dns_result *res = timed(names[i].mx, names[i].name, &t0, &t1, &hit);
		cr_assert_neq(res->status, DNS_OK);
		/* negative_ttl, longer than max_ttl here: max_ttl is for answers. */
		expect_expiry(res, t0, t1, 400, names[i].name);
		uint64_t exp = res->expires_ms;
		drop(res);
		usleep(150 * 1000); /* past max_ttl */
		again(names[i].mx, names[i].name, names[i].type, exp);
		sleep_until(exp);
		cr_assert_not(again(names[i].mx, names[i].name, names[i].type, exp),
		              "%s: kept past negative_ttl", names[i].name);
	}
	dns_teardown();
}

/* ---- the cache: LRU and memory ---------------------------------------------- */

/* host_bytes - what the cache accounts for an "a:" entry of host with n
 * addresses (or a failure: n = 0, no name): the entry, its key, the answer
 * (result, hops, one copy of the name). */
static uint64_t host_bytes(const char *host, unsigned n)
{
	return sizeof(struct dns_entry) + strlen("a:") + strlen(host) + 1 +
	       sizeof(struct dns_result) + n * sizeof(struct dns_hop) + (n ? strlen(host) + 1 : 0);
}

static bool cached(const char *host)
{
	unsigned before = queries(host, T_A);
	bool hit;
	struct dns_result *res = resolve(HOST, host, &hit);
	drop(res);
	cr_assert_eq(queries(host, T_A), before + !hit, "%s: a hit that asked, or the reverse",
	             host);
	return hit;
}

Test(cache, lru_evicts_the_least_recently_used)
{
	dns_setup((struct dns_config){ .cache_size = 3 });
	const char *h[] = { "h1.t", "h2.t", "h3.t", "h4.t" };
	for (int i = 0; i < 3; i++)
		cr_assert_not(cached(h[i]));
	struct dns_stats st = stats();
	cr_assert_eq(st.entries, 3);
	cr_assert_eq(st.evictions, 0);
	/* Use h1: h2 is now the least recently used. */
	cr_assert(cached(h[0]));
	cr_assert_not(cached(h[3])); /* h4 comes in, h2 goes */
	st = stats();
	cr_assert_eq(st.entries, 3);
	cr_assert_eq(st.evictions, 1);
	/* Order of use now (oldest first): h3, h1, h4 - all still there. Each
	 * hit makes it the most recent: after h3, h1, h4 the oldest is h3. */
	cr_assert(cached(h[2]));
	cr_assert(cached(h[0]));
	cr_assert(cached(h[3]));
	cr_assert_not(cached(h[1]), "h2 was evicted: a new query"); /* h3 goes */
	st = stats();
	cr_assert_eq(st.evictions, 2);
	cr_assert_eq(st.entries, 3);
	cr_assert(cached(h[0]));
	cr_assert(cached(h[3]));
	cr_assert(cached(h[1]));
	cr_assert_not(cached(h[2]), "h3 was the one evicted");
	dns_teardown();
}

Test(cache, lru_keeps_answers_held_elsewhere_valid)
{
	/* An evicted answer that a caller still holds stays readable. */
	dns_setup((struct dns_config){ .cache_size = 1 });
	struct dns_result *a = resolve(HOST, "h5.t", NULL);
	cr_assert_eq(a->nhops, 2);
	cr_assert(!cached("h1.t"));
	cr_assert_eq(stats().evictions, 1);
	char buf[64];
	cr_assert_str_eq(a->hops[1].host, "h5.t");
	cr_assert_str_eq(hop_addr(&a->hops[1], buf, sizeof(buf)), "192.0.2.26");
	drop(a);
	dns_teardown();
}

Test(cache, memory_accounting)
{
	dns_setup(
	    (struct dns_config){ .cache_size = 3, .negative_ttl_ms = 100000, .timeout_ms = 10000 });
	cr_assert_eq(stats().memory, 0);
	/* Entries of different shapes: 1 address, 2 addresses. */
	cr_assert(!cached("h1.t"));
	cr_assert_eq(stats().memory, host_bytes("h1.t", 1));
	cr_assert(!cached("h5.t"));
	uint64_t two = host_bytes("h1.t", 1) + host_bytes("h5.t", 2);
	cr_assert_eq(stats().memory, two);
	/* A lookup in flight (the server holds it): the entry and its key,
	 * no answer yet. Then the answer: no address. */
	atomic_store(&fake.hold, true);
	struct answer a;
	ask_many(HOST, "heldmem.t", &a, 1);
	struct dns_stats st = stats();
	cr_assert_eq(st.entries, 3);
	cr_assert_eq(st.memory, two + sizeof(struct dns_entry) + strlen("a:heldmem.t") + 1,
	             "pending entry: %llu", (unsigned long long)(st.memory - two));
	atomic_store(&fake.hold, false);
	await(&a, "heldmem.t");
	cr_assert_eq(a.res->status, DNS_NO_ADDRESS, "%s", a.res->error);
	size_t why = strlen(a.res->error) + 1; /* a failure keeps its reason */
	cr_assert_gt(why, 1);
	drop(a.res);
	uint64_t three = two + host_bytes("heldmem.t", 0) + why;
	cr_assert_eq(stats().memory, three);
	/* An eviction gives back exactly the entry's bytes (h1.t is the LRU). */
	cr_assert(!cached("h2.t"));
	st = stats();
	cr_assert_eq(st.evictions, 1);
	cr_assert_eq(st.memory, three - host_bytes("h1.t", 1) + host_bytes("h2.t", 1));
	/* An MX answer: one copy of each exchanger's name, however many
	 * addresses it has (mx-a.t has three), plus the exchanger's own "a:"
	 * entry. Cache size 3 now holds m:share1.t, a:mx-a.t and one more. */
	struct dns_result *mx = resolve(MX, "share1.t", NULL);
	cr_assert_eq(mx->nhops, 3);
	uint64_t mx_bytes = sizeof(struct dns_entry) + strlen("m:share1.t") + 1 +
	                    sizeof(struct dns_result) + 3 * sizeof(struct dns_hop) +
	                    strlen("mx-a.t") + 1;
	uint64_t exch_bytes = host_bytes("mx-a.t", 3);
	st = stats();
	cr_assert_eq(st.entries, 3);
	cr_assert(cached("h2.t"), "h2.t, the most recent before, is still there");
	st = stats();
	cr_assert_eq(st.memory, mx_bytes + exch_bytes + host_bytes("h2.t", 1),
	             "memory %llu, entries %llu", (unsigned long long)st.memory,
	             (unsigned long long)st.entries);
	drop(mx);
	dns_teardown();
}

Test(cache, memory_steady_across_expiry)
{
	/* An answer replaced after its TTL is accounted once. */
	dns_setup((struct dns_config){ .max_ttl_ms = 50 });
	cr_assert(!cached("h1.t"));
	uint64_t m = stats().memory;
	cr_assert_eq(m, host_bytes("h1.t", 1));
	for (int i = 0; i < 5; i++) {
		usleep(80 * 1000);
		cr_assert(!cached("h1.t"), "round %d: expired answer used", i);
		cr_assert_eq(stats().memory, m, "round %d", i);
		cr_assert_eq(stats().entries, 1);
	}
	dns_teardown();
}
