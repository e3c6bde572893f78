/* dkim_canon.c - DKIM relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4) and
 * the body hash (see dkim.h).
 *
 * The body canonicaliser is a byte-at-a-time state machine that writes into
 * a small batch buffer and flushes it to a hash or a struct buf, so a body
 * of any size is hashed without a copy of it.
 */
#include "dkim.h"

#include <openssl/evp.h>

#include "util.h"

static inline bool is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

void dkim_canon_header(const char *field, size_t len, struct buf *out)
{
	const char *colon = memchr(field, ':', len);
	size_t name_len = colon ? (size_t)(colon - field) : len;
	while (name_len && is_wsp((unsigned char)field[name_len - 1]))
		name_len--;
	char *w = buf_reserve(out, name_len + 1);
	for (size_t i = 0; i < name_len; i++) {
		char c = field[i];
		w[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	w[name_len] = ':';
	buf_commit(out, name_len + 1);
	if (colon) {
		/* The value: drop CRLFs (unfolding), one SP per WSP run, none at
		 * either end. Output is never longer than the input. */
		size_t start = (size_t)(colon - field) + 1, o = 0;
		bool space = false, any = false;
		w = buf_reserve(out, len - start);
		for (size_t i = start; i < len; i++) {
			unsigned char c = (unsigned char)field[i];
			if (c == '\r' && i + 1 < len && field[i + 1] == '\n') {
				i++;
				continue;
			}
			if (is_wsp(c)) {
				space = any;
				continue;
			}
			if (space)
				w[o++] = ' ';
			space = false;
			any = true;
			w[o++] = (char)c;
		}
		buf_commit(out, o);
	}
	buf_append(out, "\r\n", 2);
}

/* The relaxed body canonicaliser's state between bytes. */
struct canon_body {
	unsigned char batch[4096]; /* output not yet flushed */
	size_t n;                  /* bytes in batch */
	EVP_MD_CTX *md;            /* flush into this hash, or */
	struct buf *out;           /* into this buffer */
	size_t empty_lines;        /* empty lines held back: dropped if nothing follows */
	bool wsp;                  /* a WSP run is held back (dropped at the line end) */
	bool cr;                   /* the last byte was a CR: a line end if LF follows */
	bool line;                 /* the current line has content */
};

static void canon_flush(struct canon_body *c)
{
	if (!c->n)
		return;
	if (c->md) {
		if (EVP_DigestUpdate(c->md, c->batch, c->n) != 1)
			rp_panic("EVP_DigestUpdate failed");
	} else {
		buf_append(c->out, c->batch, c->n);
	}
	c->n = 0;
}

static inline void canon_put(struct canon_body *c, unsigned char b)
{
	if (c->n == sizeof(c->batch))
		canon_flush(c);
	c->batch[c->n++] = b;
}

/* canon_content - one content byte: first the empty lines it proves were
 * not trailing, and the single SP standing for a WSP run before it. */
static inline void canon_content(struct canon_body *c, unsigned char b)
{
	if (!c->line) {
		for (; c->empty_lines; c->empty_lines--) {
			canon_put(c, '\r');
			canon_put(c, '\n');
		}
		c->line = true;
	}
	if (c->wsp) {
		canon_put(c, ' ');
		c->wsp = false;
	}
	canon_put(c, b);
}

/* canon_run - n content bytes with no WSP or CR among them: batched when
 * short, straight to the sink when long (base64 attachments). */
static void canon_run(struct canon_body *c, const unsigned char *p, size_t n)
{
	if (n <= sizeof(c->batch) - c->n) {
		memcpy(c->batch + c->n, p, n);
		c->n += n;
		return;
	}
	canon_flush(c);
	if (c->md) {
		if (EVP_DigestUpdate(c->md, p, n) != 1)
			rp_panic("EVP_DigestUpdate failed");
	} else {
		buf_append(c->out, p, n);
	}
}

/* plain - the bytes that are content whatever comes next: not SP, HTAB, CR. */
static inline bool plain(unsigned char b)
{
	return b != ' ' && b != '\t' && b != '\r';
}

static void canon_feed(struct canon_body *c, const unsigned char *p, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char b = p[i];
		if (!c->cr && plain(b)) {
			size_t j = i + 1;
			while (j < len && plain(p[j]))
				j++;
			canon_content(c, b); /* held-back lines and WSP, then the run */
			canon_run(c, p + i + 1, j - i - 1);
			i = j;
			continue;
		}
		i++;
		if (c->cr) {
			c->cr = false;
			if (b == '\n') {
				/* Line end: trailing WSP is dropped; an empty line waits. */
				c->wsp = false;
				if (c->line) {
					canon_put(c, '\r');
					canon_put(c, '\n');
					c->line = false;
				} else {
					c->empty_lines++;
				}
				continue;
			}
			canon_content(c, '\r'); /* a bare CR is content */
		}
		if (b == '\r')
			c->cr = true;
		else if (is_wsp(b))
			c->wsp = true;
		else
			canon_content(c, b);
	}
}

/* canon_finish - the end of the body. An unterminated last line gets its
 * CRLF (after its trailing WSP is dropped, as a verifier sees it once SMTP
 * has terminated the line); held-back empty lines are trailing: dropped. */
static void canon_finish(struct canon_body *c)
{
	if (c->cr)
		canon_content(c, '\r');
	if (c->line) {
		canon_put(c, '\r');
		canon_put(c, '\n');
	}
	canon_flush(c);
}

void dkim_canon_body(const char *body, size_t len, struct buf *out)
{
	struct canon_body c = { .out = out };
	canon_feed(&c, (const unsigned char *)body, len);
	canon_finish(&c);
}

void dkim_body_hash(const char *body, size_t len, unsigned char out[DKIM_HASH_LEN])
{
	struct canon_body c = { .md = EVP_MD_CTX_new() };
	unsigned int n = 0;
	if (!c.md)
		rp_panic("out of memory");
	if (EVP_DigestInit_ex(c.md, EVP_sha256(), NULL) != 1)
		rp_panic("SHA-256 is not available");
	canon_feed(&c, (const unsigned char *)body, len);
	canon_finish(&c);
	if (EVP_DigestFinal_ex(c.md, out, &n) != 1 || n != DKIM_HASH_LEN)
		rp_panic("EVP_DigestFinal_ex failed");
	EVP_MD_CTX_free(c.md);
}
