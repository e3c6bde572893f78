/* fuzz_mime.c - building messages from parts (api/mime.c: header encoding
 * with RFC 2047 words and folding, 7bit or quoted-printable text and HTML,
 * multipart/alternative and /mixed, base64 attachments with RFC 2231
 * names) and {{vars}} rendering (api/template.c) in its three escapes.
 *
 * Input: a flags byte, then fields separated by a line "--": from, to,
 * subject, text, html, extra header lines ("Name: value"), template vars
 * ("name=value" lines), then one field per attachment ("filename TAB
 * content-type" on its first line, the data after it). What only the API
 * validators refuse (a bad field name, a reserved one, a line break in a
 * file name) is not built; mime_build judges the rest itself.
 * Oracles: CRLF lines of at most 998 octets, no NUL in the header section;
 * the message parsed back (api/imap_mime.c) has the structure built:
 * content cannot fake a boundary; rendering escapes every value: HTML
 * output has no markup character the template did not have, URL output
 * only unreserved characters and escapes; a bounded rendering never
 * passes its bound and says whether it was cut.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/imap_mime.h"
#include "api/mime.h"
#include "api/template.h"
#include "fuzz.h"

#define MAX_ITEMS 16

struct vars {
	const char *name[MAX_ITEMS], *value[MAX_ITEMS];
	size_t nlen[MAX_ITEMS], vlen[MAX_ITEMS];
	unsigned n;
};

static const char *lookup(void *ctx, const char *name, size_t len, size_t *vlen)
{
	const struct vars *v = ctx;
	for (unsigned i = 0; i < v->n; i++)
		if (v->nlen[i] == len && !memcmp(v->name[i], name, len)) {
			*vlen = v->vlen[i];
			return v->value[i];
		}
	return NULL;
}

static bool has_any(const char *p, size_t n, const char *set)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] && strchr(set, p[i]))
			return true;
	return false;
}

static void render(const char *t, size_t n, struct vars *v)
{
	static const char unreserved[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                 "0123456789-._~";
	struct buf raw = { 0 }, html = { 0 }, url = { 0 }, cut = { 0 };
	template_has_vars(t, n);
	template_render(&raw, t, n, lookup, v, TEMPLATE_RAW, SIZE_MAX);
	template_render(&html, t, n, lookup, v, TEMPLATE_HTML, SIZE_MAX);
	template_render(&url, t, n, lookup, v, TEMPLATE_URL, SIZE_MAX);
	/* Bounded: never past max, and complete exactly when it fits. */
	size_t max = n / 2 + 3;
	bool whole = template_render(&cut, t, n, lookup, v, TEMPLATE_HTML, max);
	fuzz_check(buf_used(&cut) <= max);
	fuzz_check(whole == (buf_used(&html) <= max));
	buf_free(&cut);
	if (!has_any(t, n, "<>\"'"))
		fuzz_check(!has_any(buf_head(&html), buf_used(&html), "<>\"'"));
	bool plain = true;
	for (size_t i = 0; i < n && plain; i++)
		plain = t[i] && (strchr(unreserved, t[i]) || strchr("{} ", t[i]));
	if (plain)
		for (size_t i = 0; i < buf_used(&url); i++) {
			char c = buf_head(&url)[i];
			fuzz_check(c && (strchr(unreserved, c) || strchr("{}% ", c)));
		}
	buf_free(&raw);
	buf_free(&html);
	buf_free(&url);
}

static void check_lines(const struct buf *b)
{
	const char *p = buf_head(b);
	size_t n = buf_used(b), i = 0;
	bool header = true;
	while (i < n) {
		const char *nl = memchr(p + i, '\n', n - i);
		fuzz_check(nl && nl > p + i && nl[-1] == '\r');
		size_t len = (size_t)(nl - (p + i)) - 1;
		fuzz_check(len <= 998 && !memchr(p + i, '\r', len));
		if (header)
			fuzz_check(!memchr(p + i, '\0', len));
		if (len == 0)
			header = false;
		i += len + 2;
	}
}

static char *field(struct fuzz_in *in, size_t *len)
{
	const uint8_t *p;
	*len = 0;
	if (!fuzz_field(in, "\n--\n", &p, len))
		return NULL;
	return fuzz_dup(p, *len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t flags = fuzz_u8(&in);
	char *f[7] = { 0 };
	size_t fl[7];
	for (unsigned i = 0; i < 7; i++)
		f[i] = field(&in, &fl[i]);
	struct mime_header hv[MAX_ITEMS];
	struct mime_attachment att[MAX_ITEMS];
	char *atts[MAX_ITEMS] = { 0 };
	struct vars v = { 0 };
	unsigned nh = 0, na = 0;
	bool ok = f[0] != NULL; /* From, To and Subject: mime_build judges them */
	/* Extra fields, one a line. */
	for (char *l = f[5], *next; ok && l && *l && nh < MAX_ITEMS; l = next) {
		next = strchr(l, '\n');
		if (next)
			*next++ = '\0';
		char *colon = strchr(l, ':');
		if (!colon)
			break;
		*colon = '\0';
		char *value = colon + 1 + (colon[1] == ' ');
		ok = mime_header_name_ok(l) && !mime_header_reserved(l);
		hv[nh++] = (struct mime_header){ .name = l, .value = value };
		if (!next)
			break;
	}
	/* Vars, "name=value" a line. */
	for (char *l = f[6], *next; l && *l && v.n < MAX_ITEMS; l = next) {
		next = strchr(l, '\n');
		if (next)
			*next++ = '\0';
		char *eq = strchr(l, '=');
		if (!eq)
			break;
		v.name[v.n] = l;
		v.nlen[v.n] = (size_t)(eq - l);
		v.value[v.n] = eq + 1;
		v.vlen[v.n] = strlen(eq + 1);
		v.n++;
		if (!next)
			break;
	}
	const uint8_t *p;
	size_t n;
	while (na < MAX_ITEMS && fuzz_field(&in, "\n--\n", &p, &n)) {
		char *a = atts[na] = fuzz_dup(p, n);
		char *nl = memchr(a, '\n', n);
		size_t head = nl ? (size_t)(nl - a) : n;
		char *tab = memchr(a, '\t', head);
		if (nl)
			*nl = '\0';
		if (tab)
			*tab = '\0';
		att[na].filename = a;
		att[na].content_type = tab ? tab + 1 : NULL;
		att[na].data = (const unsigned char *)a + head + (nl != NULL);
		att[na].len = n - head - (nl != NULL);
		ok = ok && mime_header_value_ok(a, strlen(a)) && !memchr(a, '\0', head);
		na++;
	}
	if (f[2])
		render(f[2], fl[2], &v);
	if (f[3])
		render(f[3], fl[3], &v);

	if (ok) {
		struct mime_message m = {
			.from = f[0],
			.to = f[1],
			.subject = (flags & 1) ? f[2] : NULL,
			.text = (flags & 2) || !f[4] ? f[3] : NULL,
			.text_len = fl[3],
			.html = (flags & 4) ? f[4] : NULL,
			.html_len = fl[4],
			.headers = hv,
			.nheaders = nh,
			.attachments = att,
			.nattachments = na,
			.message_id = "1.2@fuzz.test",
			.date_ms = 1136214245000ull,
		};
		if (!m.text)
			m.text_len = 0;
		if (!m.html)
			m.html_len = 0;
		struct buf out = { 0 };
		char err[200];
		if (mime_build(&m, &out, err, sizeof(err))) {
			check_lines(&out);
			struct imap_mime *mm = malloc(sizeof(*mm));
			imap_mime_parse(mm, buf_head(&out), buf_used(&out));
			unsigned body = m.text && m.html ? 3 : 1;
			fuzz_check(mm->n == (na ? 1 + body + na : body));
			free(mm);
		}
		buf_free(&out);
	}
	for (unsigned i = 0; i < 7; i++)
		free(f[i]);
	for (unsigned i = 0; i < na; i++)
		free(atts[i]);
	return 0;
}
