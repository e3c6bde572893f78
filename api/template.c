/* template.c - {{name}} substitution (see template.h). */
#include "template.h"

#include <string.h>

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.';
}

/* placeholder - at p[i] == '{', a placeholder? Sets the name and the end. */
static bool placeholder(const char *p, size_t n, size_t i, size_t *name, size_t *nlen, size_t *end)
{
	if (i + 4 > n || p[i] != '{' || p[i + 1] != '{')
		return false;
	size_t j = i + 2;
	while (j < n && p[j] == ' ')
		j++;
	size_t s = j;
	while (j < n && name_char(p[j]))
		j++;
	if (j == s)
		return false;
	size_t e = j;
	while (j < n && p[j] == ' ')
		j++;
	if (j + 1 >= n || p[j] != '}' || p[j + 1] != '}')
		return false;
	*name = s;
	*nlen = e - s;
	*end = j + 2;
	return true;
}

bool template_has_vars(const char *s, size_t n)
{
	size_t name, nlen, end;
	for (const char *q = memchr(s, '{', n); q; q = memchr(q + 1, '{', n - (size_t)(q + 1 - s)))
		if (placeholder(s, n, (size_t)(q - s), &name, &nlen, &end))
			return true;
	return false;
}

/* html_len - bytes of v[0..n) with &, <, >, " and ' as entities. */
static size_t html_len(const char *v, size_t n)
{
	size_t k = n;
	for (size_t i = 0; i < n; i++)
		k += v[i] == '&'                   ? 4
		     : v[i] == '<' || v[i] == '>'  ? 3
		     : v[i] == '"' || v[i] == '\'' ? 5
		                                   : 0;
	return k;
}

static void escaped(struct buf *out, const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		switch (v[i]) {
		case '&':
			buf_puts(out, "&amp;");
			break;
		case '<':
			buf_puts(out, "&lt;");
			break;
		case '>':
			buf_puts(out, "&gt;");
			break;
		case '"':
			buf_puts(out, "&quot;");
			break;
		case '\'':
			buf_puts(out, "&#39;");
			break;
		default:
			buf_append(out, v + i, 1);
		}
	}
}

static bool url_keep(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

/* url_len - bytes of v[0..n) percent-encoded. */
static size_t url_len(const char *v, size_t n)
{
	size_t k = n;
	for (size_t i = 0; i < n; i++)
		k += url_keep((unsigned char)v[i]) ? 0 : 2;
	return k;
}

/* url_escaped - v percent-encoded (RFC 3986 2.1), unreserved kept. */
static void url_escaped(struct buf *out, const char *v, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (url_keep(c)) {
			buf_append(out, v + i, 1);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			buf_append(out, e, 3);
		}
	}
}

bool template_render(struct buf *out, const char *s, size_t n, template_lookup fn, void *ctx,
                     enum template_escape esc, size_t max)
{
	/* Every piece is measured before it is written: a template of 20,000
	 * placeholders for a 100 KB value stops at max, not at 2 GB. */
	size_t left = max, i = 0;
	while (i < n) {
		const char *q = memchr(s + i, '{', n - i);
		size_t at = q ? (size_t)(q - s) : n, name, nlen, end;
		if (at - i > left)
			return false;
		buf_append(out, s + i, at - i);
		left -= at - i;
		if (!q)
			return true;
		const char *v = NULL;
		size_t vlen = 0;
		if (placeholder(s, n, at, &name, &nlen, &end) &&
		    (v = fn(ctx, s + name, nlen, &vlen))) {
			size_t k = esc == TEMPLATE_HTML  ? html_len(v, vlen)
			           : esc == TEMPLATE_URL ? url_len(v, vlen)
			                                 : vlen;
			if (k > left)
				return false;
			if (esc == TEMPLATE_HTML)
				escaped(out, v, vlen);
			else if (esc == TEMPLATE_URL)
				url_escaped(out, v, vlen);
			else
				buf_append(out, v, vlen);
			left -= k;
			i = end;
		} else {
			if (!left)
				return false;
			buf_append(out, "{", 1);
			left--;
			i = at + 1;
		}
	}
	return true;
}
