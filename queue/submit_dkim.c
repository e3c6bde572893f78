/* submit_dkim.c - the DKIM key table and the signing step of a submission
 * (see submit_dkim.h). Runs on the signing threads: nothing here touches
 * an event loop's state but the submission it was handed, which its loop
 * leaves alone until the spool has answered. */
#include "submit_dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

#include "base/log.h"
#include "base/msg_header.h"
#include "base/util.h"
#include "submit.h"

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

struct dkim_keys {
	_Atomic unsigned refs;
	struct dkim_identity *v;
	unsigned n, cap;
};

struct dkim_counters dkim_counters;

struct dkim_keys *dkim_keys_new(void)
{
	struct dkim_keys *t = xcalloc(1, sizeof(*t));
	atomic_init(&t->refs, 1);
	return t;
}

void dkim_keys_add(struct dkim_keys *t, const char *domain, const char *selector,
                   struct dkim_key *key)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 4;
		t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
	}
	struct dkim_identity *id = &t->v[t->n++];
	id->domain = xstrdup(domain);
	for (char *p = id->domain; *p; p++)
		*p = lower(*p);
	id->selector = xstrdup(selector);
	id->key = key;
}

struct dkim_keys *dkim_keys_ref(struct dkim_keys *t)
{
	if (t)
		atomic_fetch_add(&t->refs, 1);
	return t;
}

void dkim_keys_unref(struct dkim_keys *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	for (unsigned i = 0; i < t->n; i++) {
		free(t->v[i].domain);
		free(t->v[i].selector);
		dkim_key_free(t->v[i].key);
	}
	free(t->v);
	free(t);
}

unsigned dkim_keys_count(const struct dkim_keys *t)
{
	return t ? t->n : 0;
}

const struct dkim_identity *dkim_keys_find(const struct dkim_keys *t, const char *domain,
                                           size_t len)
{
	for (unsigned i = 0; t && i < t->n; i++)
		if (strlen(t->v[i].domain) == len && !strncasecmp(t->v[i].domain, domain, len))
			return &t->v[i];
	return NULL;
}

bool dkim_from_domain(const char *val, size_t len, char *out, size_t outlen)
{
	/* RFC 5322 3.4: the first mailbox of the list; its angle-addr when it
	 * has one, else its addr-spec. Quoted strings are kept as text (an
	 * '@' in them is not the domain's) and comments are skipped, so
	 * neither a display name nor a comment can choose the key. */
	size_t at = 0, n = 0; /* n: bytes of the current address, at: its last '@' + 1 */
	unsigned depth = 0;   /* comment nesting */
	bool inq = false, angle = false;
	char addr[320];
	for (size_t i = 0; i < len; i++) {
		char c = val[i];
		if (c == '\\' && (inq || depth) && i + 1 < len) {
			i++;
			continue; /* a quoted pair: never a delimiter */
		}
		if (depth) {
			depth += c == '(';
			depth -= c == ')';
			continue;
		}
		if (c == '"') {
			inq = !inq;
			continue;
		}
		if (!inq && c == '(') {
			depth = 1;
			continue;
		}
		if (!inq && c == '<') { /* what came before was a display name */
			angle = true;
			n = at = 0;
			continue;
		}
		if (!inq && ((angle && c == '>') || (!angle && c == ',')))
			break;
		if (inq || c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue; /* quoted text and blanks are not in the domain */
		if (n < sizeof(addr))
			addr[n++] = c;
		if (c == '@')
			at = n;
	}
	if (!at || at >= n || n - at >= outlen)
		return false;
	for (size_t i = at; i < n; i++)
		out[i - at] = lower(addr[i]);
	out[n - at] = '\0';
	return true;
}

/* thread_us - this thread's CPU time, microseconds. */
static uint64_t thread_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* identity_of - the key for the From: domain of header[0..len), or NULL. */
static const struct dkim_identity *identity_of(const struct dkim_keys *keys, const char *header,
                                               size_t len)
{
	struct msg_header_info hi;
	const char *v;
	size_t vl;
	char dom[256];
	msg_header_scan(header, len, &hi);
	if (!msg_header_get(header, hi.end, "From", &v, &vl) ||
	    !dkim_from_domain(v, vl, dom, sizeof(dom)))
		return NULL;
	return dkim_keys_find(keys, dom, strlen(dom));
}

/* sign_shared - one signature in front of the prefix and shared content. */
static bool sign_shared(struct submission *s, const struct dkim_identity *id, uint64_t t, char *err,
                        size_t errlen)
{
	const char *c = s->body[2].iov_base;
	size_t clen = s->body[2].iov_len;
	struct msg_header_info hi;
	msg_header_scan(c, clen, &hi);
	struct buf head = { 0 };
	buf_append(&head, buf_head(&s->prefix), buf_used(&s->prefix));
	buf_append(&head, c, hi.end);
	unsigned char bh[DKIM_HASH_LEN];
	dkim_body_hash(c + hi.end, clen - hi.end, bh);
	buf_reset(&s->sig);
	bool ok = dkim_sign(id->key, id->domain, id->selector, buf_head(&head), buf_used(&head), bh,
	                    t, &s->sig, err, errlen);
	buf_free(&head);
	s->body[0].iov_base = buf_head(&s->sig);
	s->body[0].iov_len = buf_used(&s->sig);
	return ok;
}

/* sign_variants - each recipient's copy signed on its own; the signed
 * copies replace the caller's. */
static bool sign_variants(struct submission *s, const struct dkim_identity *id, uint64_t t,
                          char *err, size_t errlen)
{
	if (s->signed_cap < s->nrcpt) {
		s->signed_v = xrealloc(s->signed_v, s->nrcpt * sizeof(*s->signed_v));
		memset(s->signed_v + s->signed_cap, 0,
		       (s->nrcpt - s->signed_cap) * sizeof(*s->signed_v));
		s->signed_iov = xrealloc(s->signed_iov, s->nrcpt * sizeof(*s->signed_iov));
		s->signed_cap = s->nrcpt;
	}
	for (unsigned i = 0; i < s->nrcpt; i++) {
		struct buf *b = &s->signed_v[i];
		buf_reset(b);
		if (!dkim_sign_message(id->key, id->domain, id->selector, s->variants[i].iov_base,
		                       s->variants[i].iov_len, t, b, err, errlen))
			return false;
		buf_append(b, s->variants[i].iov_base, s->variants[i].iov_len);
	}
	for (unsigned i = 0; i < s->nrcpt; i++) {
		s->signed_iov[i].iov_base = buf_head(&s->signed_v[i]);
		s->signed_iov[i].iov_len = buf_used(&s->signed_v[i]);
	}
	s->variants = s->signed_iov;
	return true;
}

/* submission_sign_now - sign s as submit_dkim.h says (on this thread). */
void submission_sign_now(struct submission *s)
{
	uint64_t t0 = thread_us();
	const struct dkim_identity *id;
	if (s->variants)
		id = identity_of(s->keys, s->variants[0].iov_base, s->variants[0].iov_len);
	else
		id = identity_of(s->keys, s->body[2].iov_base, s->body[2].iov_len);
	if (!id) {
		atomic_fetch_add(&dkim_counters.unsigned_no_key, 1);
		return;
	}
	char err[200] = "";
	uint64_t t = rp_now_ms() / 1000;
	bool ok = s->variants ? sign_variants(s, id, t, err, sizeof(err))
	                      : sign_shared(s, id, t, err, sizeof(err));
	if (ok) {
		atomic_fetch_add(&dkim_counters.signed_msgs, s->variants ? s->nrcpt : 1);
	} else {
		/* Sent unsigned rather than not at all; the log says why. */
		char idtext[17];
		rp_id_format(s->id, idtext);
		log_warn("dkim id=%s d=%s: not signed: %s", idtext, id->domain, err);
		atomic_fetch_add(&dkim_counters.failed, 1);
		buf_reset(&s->sig);
		memset(&s->body[0], 0, sizeof(s->body[0]));
	}
	atomic_fetch_add(&dkim_counters.sign_us, thread_us() - t0);
}
