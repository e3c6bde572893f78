/* auth.c - users file, password checks on worker threads, failure limits
 * (see auth.h).
 *
 * Passwords live only in an auth_req and in the crypt_data scratch of the
 * thread that hashes them, and both are wiped as soon as the hash is done.
 * Nothing here logs a password or a hash.
 */
#include "auth.h"

#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base64.h"
#include "buf.h"
#include "log.h"
#include "util.h"
#include "workers.h"

/* ---- the users table --------------------------------------------------- */

struct auth_user {
	char *name;
	char *hash;
	unsigned line; /* in the file, for errors */
};

struct auth_users {
	struct auth_user *v; /* sorted by name */
	unsigned n;
	_Atomic unsigned refs;
};

static int user_cmp(const void *a, const void *b)
{
	return strcmp(((const struct auth_user *)a)->name, ((const struct auth_user *)b)->name);
}

/* hash_known - a hash crypt(3) can check and the users file takes: every
 * method libxcrypt counts as current ($y$, $6$, ...), and $5$ (SHA-256
 * crypt, `openssl passwd -5`), which the contract names but Debian's
 * libxcrypt counts as legacy. DES, MD5 and the other legacy methods, and
 * anything that is not a hash ("!", "*", a plain password), stay out. */
static bool hash_known(const char *hash)
{
	int r = crypt_checksalt(hash);
	return r == CRYPT_SALT_OK || (r == CRYPT_SALT_METHOD_LEGACY && !strncmp(hash, "$5$", 3));
}

/* parse_line - "name:hash" (trailing blanks and CR dropped). */
static bool parse_line(char *line, struct auth_user *out, const char **why)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
	             line[n - 1] == '\t'))
		line[--n] = '\0';
	char *colon = strchr(line, ':');
	if (!colon) {
		*why = "expected name:hash";
		return false;
	}
	*colon = '\0';
	const char *hash = colon + 1;
	if (!line[0] || strlen(line) > AUTH_NAME_MAX || strpbrk(line, " \t")) {
		*why = "bad user name";
		return false;
	}
	if (!hash_known(hash)) {
		*why = "the hash is not a crypt(3) hash this system accepts ($y$, $6$, $5$)";
		return false;
	}
	out->name = xstrdup(line);
	out->hash = xstrdup(hash);
	return true;
}

static void users_free(struct auth_users *u)
{
	for (unsigned i = 0; i < u->n; i++) {
		free(u->v[i].name);
		OPENSSL_cleanse(u->v[i].hash, strlen(u->v[i].hash));
		free(u->v[i].hash);
	}
	free(u->v);
	free(u);
}

struct auth_users *auth_users_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open the users file: %s", path, strerror(errno));
		return NULL;
	}
	struct auth_users *u = xcalloc(1, sizeof(*u));
	atomic_init(&u->refs, 1);
	unsigned cap = 0, lineno = 0;
	char line[1024];
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "%s:%u: line too long", path, lineno);
			goto fail;
		}
		const char *p = line + strspn(line, " \t");
		if (!*p || *p == '\n' || *p == '\r' || *p == '#')
			continue;
		if (u->n == cap) {
			cap = cap ? cap * 2 : 16;
			u->v = xrealloc(u->v, cap * sizeof(*u->v));
		}
		const char *why;
		if (!parse_line(line, &u->v[u->n], &why)) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
			goto fail;
		}
		u->v[u->n++].line = lineno;
	}
	fclose(f);
	OPENSSL_cleanse(line, sizeof(line));
	if (u->n) /* no array at all for a file of comments: qsort(NULL) is undefined */
		qsort(u->v, u->n, sizeof(*u->v), user_cmp);
	for (unsigned i = 1; i < u->n; i++)
		if (!strcmp(u->v[i].name, u->v[i - 1].name)) {
			unsigned a = RP_MIN(u->v[i].line, u->v[i - 1].line);
			unsigned b = RP_MAX(u->v[i].line, u->v[i - 1].line);
			snprintf(err, errlen, "%s:%u: user %s is listed twice (first on line %u)",
			         path, b, u->v[i].name, a);
			users_free(u);
			return NULL;
		}
	return u;
fail:
	fclose(f);
	OPENSSL_cleanse(line, sizeof(line));
	users_free(u);
	return NULL;
}

struct auth_users *auth_users_ref(struct auth_users *u)
{
	if (u)
		atomic_fetch_add(&u->refs, 1);
	return u;
}

void auth_users_unref(struct auth_users *u)
{
	if (u && atomic_fetch_sub(&u->refs, 1) == 1)
		users_free(u);
}

unsigned auth_users_count(const struct auth_users *u)
{
	return u ? u->n : 0;
}

/* find - the hash of name, or NULL. */
static const char *find(const struct auth_users *u, const char *name)
{
	if (!u || !u->n) /* an empty table has no array to bsearch */
		return NULL;
	struct auth_user key = { .name = (char *)name };
	const struct auth_user *e = bsearch(&key, u->v, u->n, sizeof(*u->v), user_cmp);
	return e ? e->hash : NULL;
}

bool auth_users_has(const struct auth_users *u, const char *name)
{
	return find(u, name) != NULL;
}

/* ---- hashing ----------------------------------------------------------- */

bool auth_verify(const char *pass, const char *hash)
{
	struct crypt_data *cd = xcalloc(1, sizeof(*cd)); /* ~32 KiB: not on a small stack */
	const char *r = crypt_rn(pass, hash, cd, sizeof(*cd));
	bool ok = r && strlen(r) == strlen(hash) && CRYPTO_memcmp(r, hash, strlen(hash)) == 0;
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return ok;
}

bool auth_hash(const char *pass, char *out, size_t outlen)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	unsigned char rnd[32];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return false;
	if (!crypt_gensalt_rn("$y$", 0, (const char *)rnd, sizeof(rnd), setting, sizeof(setting)))
		return false;
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *r = crypt_rn(pass, setting, cd, sizeof(*cd));
	bool ok = r && r[0] != '*' && strlen(r) < outlen;
	if (ok)
		memcpy(out, r, strlen(r) + 1);
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return ok;
}

/* ---- the checker ------------------------------------------------------- */

struct auth_checker {
	struct workers *pool;
	char dummy[128]; /* a hash that unknown users are checked against */
};

/* check_one - hash and answer (on a worker thread); the password is wiped
 * either way. */
static void check_one(struct mq_item *item, void *ctx)
{
	struct auth_req *req = RP_CONTAINER_OF(item, struct auth_req, item);
	(void)ctx;
	const char *hash = find(req->users, req->user);
	/* An unknown name is hashed with a real user's setting (the same
	 * algorithm and cost): how long the answer takes does not tell which
	 * names exist, whatever mix of hash types the file holds. */
	const char *setting = hash;
	if (!setting && auth_users_count(req->users))
		setting =
		    req->users->v[rp_hash64(req->user, strlen(req->user)) % req->users->n].hash;
	bool ok = auth_verify(req->pass, setting ? setting : req->checker->dummy);
	OPENSSL_cleanse(req->pass, sizeof(req->pass));
	req->ok = ok && hash != NULL;
	auth_users_unref(req->users);
	req->users = NULL;
	mq_push(req->reply_to, &req->item, req->done);
}

struct auth_checker *auth_checker_new(unsigned nthreads)
{
	struct auth_checker *ac = xcalloc(1, sizeof(*ac));
	if (!auth_hash("not a password anyone has", ac->dummy, sizeof(ac->dummy)))
		rp_panic("crypt(3) cannot make a yescrypt hash");
	ac->pool = workers_new("auth", nthreads);
	return ac;
}

void auth_checker_free(struct auth_checker *ac)
{
	if (!ac)
		return;
	workers_free(ac->pool);
	free(ac);
}

void auth_check(struct auth_checker *ac, struct auth_req *req, struct auth_users *users,
                const char *user, size_t ulen, const char *pass, size_t plen, struct mq *reply_to,
                mq_fn done)
{
	memset(req, 0, sizeof(*req));
	snprintf(req->user, sizeof(req->user), "%.*s", (int)RP_MIN(ulen, (size_t)AUTH_NAME_MAX),
	         user);
	memcpy(req->pass, pass, RP_MIN(plen, (size_t)AUTH_PASS_MAX));
	req->users = auth_users_ref(users);
	req->reply_to = reply_to;
	req->done = done;
	req->checker = ac;
	workers_push(ac->pool, &req->item, check_one);
}

/* ---- the failure limiter ----------------------------------------------- */

#define LIMIT_WINDOW_MS    60000
#define LIMIT_BLOCK_MS     60000 /* the first back-off; doubles on repeat */
#define LIMIT_BLOCK_MAX_MS 3600000
#define LIMIT_SLOTS        4096 /* addresses tracked at once (oldest replaced) */

struct limit_entry {
	unsigned char key[16]; /* IPv4 address or IPv6 /64, zero-padded */
	uint8_t family;        /* 0 = free slot */
	unsigned failures;     /* in the window starting at window_ms */
	uint64_t window_ms;
	uint64_t blocked_until;
	uint64_t block_ms; /* the last back-off period */
};

struct auth_limiter {
	pthread_mutex_t lock;
	_Atomic unsigned active; /* entries in use: 0 means no lock needed */
	unsigned max;
	struct limit_entry v[LIMIT_SLOTS];
};

struct auth_limiter *auth_limiter_new(unsigned max_failures)
{
	struct auth_limiter *l = xcalloc(1, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	l->max = max_failures ? max_failures : 1;
	return l;
}

void auth_limiter_free(struct auth_limiter *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->lock);
	free(l);
}

void auth_limiter_set_max(struct auth_limiter *l, unsigned max_failures)
{
	pthread_mutex_lock(&l->lock);
	l->max = max_failures ? max_failures : 1;
	pthread_mutex_unlock(&l->lock);
}

bool auth_client_key(const struct sockaddr *sa, unsigned char key[16], uint8_t *family)
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		*family = 4;
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			memcpy(key, a->s6_addr + 12, 4);
			*family = 4;
		} else {
			memcpy(key, a->s6_addr, 8); /* one /64 is one client */
			*family = 6;
		}
		return true;
	}
	return false;
}

/* stale - e holds nothing worth keeping at now: not blocked, no failure in
 * the current window, and its last back-off over for longer than the
 * longest one. Such an entry may be replaced by another address, and its
 * own address starts over with it as with a new one (a repeat that long
 * after is a first offence again, whichever happens first). */
static bool stale(const struct limit_entry *e, uint64_t now)
{
	return e->family && e->blocked_until <= now && now - e->window_ms >= LIMIT_WINDOW_MS &&
	       (!e->block_ms || now - e->blocked_until > LIMIT_BLOCK_MAX_MS);
}

/* lookup - the entry for key (locked); with make, a new or the least
 * useful one replaced. */
static struct limit_entry *lookup(struct auth_limiter *l, const unsigned char *key, uint8_t family,
                                  bool make, uint64_t now)
{
	uint64_t h = rp_hash64(key, 16) ^ family;
	struct limit_entry *victim = NULL;
	for (unsigned probe = 0; probe < 8; probe++) {
		struct limit_entry *e = &l->v[(h + probe) & (LIMIT_SLOTS - 1)];
		if (e->family == family && !memcmp(e->key, key, 16))
			return e;
		if (!victim && (!e->family || stale(e, now)))
			victim = e;
	}
	if (!make)
		return NULL;
	if (!victim) {
		/* Every slot around is in use: replace the one whose block or
		 * window ends first, never a fresher block for an older entry. */
		for (unsigned probe = 0; probe < 8; probe++) {
			struct limit_entry *e = &l->v[(h + probe) & (LIMIT_SLOTS - 1)];
			uint64_t until = RP_MAX(e->blocked_until, e->window_ms + LIMIT_WINDOW_MS);
			if (!victim || until < RP_MAX(victim->blocked_until,
			                              victim->window_ms + LIMIT_WINDOW_MS))
				victim = e;
		}
	}
	if (!victim->family)
		atomic_fetch_add(&l->active, 1);
	memset(victim, 0, sizeof(*victim));
	memcpy(victim->key, key, 16);
	victim->family = family;
	victim->window_ms = now;
	return victim;
}

bool auth_limiter_blocked(struct auth_limiter *l, const struct sockaddr *sa, uint64_t now_ms,
                          uint64_t *left_ms)
{
	unsigned char key[16];
	uint8_t family;
	if (!atomic_load_explicit(&l->active, memory_order_relaxed) ||
	    !auth_client_key(sa, key, &family))
		return false;
	pthread_mutex_lock(&l->lock);
	struct limit_entry *e = lookup(l, key, family, false, now_ms);
	bool blocked = e && e->blocked_until > now_ms;
	if (blocked && left_ms)
		*left_ms = e->blocked_until - now_ms;
	pthread_mutex_unlock(&l->lock);
	return blocked;
}

unsigned auth_limiter_fail(struct auth_limiter *l, const struct sockaddr *sa, uint64_t now_ms,
                           bool *blocked)
{
	unsigned char key[16];
	uint8_t family;
	*blocked = false;
	if (!auth_client_key(sa, key, &family))
		return 0;
	pthread_mutex_lock(&l->lock);
	struct limit_entry *e = lookup(l, key, family, true, now_ms);
	if (stale(e, now_ms)) {
		e->block_ms = 0;
		e->blocked_until = 0;
	}
	if (now_ms - e->window_ms >= LIMIT_WINDOW_MS) {
		e->window_ms = now_ms;
		e->failures = 0;
	}
	unsigned n = ++e->failures;
	if (n >= l->max) {
		e->block_ms = e->block_ms ? RP_MIN(e->block_ms * 2, (uint64_t)LIMIT_BLOCK_MAX_MS)
		                          : LIMIT_BLOCK_MS;
		e->blocked_until = now_ms + e->block_ms;
		e->failures = 0;
		e->window_ms = now_ms;
		*blocked = true;
	}
	pthread_mutex_unlock(&l->lock);
	return n;
}

void auth_wipe(struct buf *b)
{
	if (b->data)
		OPENSSL_cleanse(b->data, b->cap);
	buf_free(b);
}

enum auth_plain_result auth_plain_decode(const char *p, size_t n, struct buf *b,
                                         struct auth_plain *out)
{
	if (n == 1 && p[0] == '=')
		n = 0;
	if (!base64_decode(p, n, b) || buf_used(b) > 2 * AUTH_NAME_MAX + AUTH_PASS_MAX + 2)
		return AUTH_PLAIN_BAD_B64;
	const char *d = buf_head(b), *end = d + buf_used(b);
	const char *n1 = d ? memchr(d, '\0', (size_t)(end - d)) : NULL;
	const char *n2 = n1 ? memchr(n1 + 1, '\0', (size_t)(end - n1 - 1)) : NULL;
	if (!n2)
		return AUTH_PLAIN_MALFORMED;
	out->cid = n1 + 1;
	out->clen = (size_t)(n2 - out->cid);
	out->pw = n2 + 1;
	out->plen = (size_t)(end - out->pw);
	size_t zlen = (size_t)(n1 - d);
	if (zlen && (zlen != out->clen || memcmp(d, out->cid, out->clen)))
		return AUTH_PLAIN_PROXY; /* acting for another identity: not granted */
	return AUTH_PLAIN_OK;
}
