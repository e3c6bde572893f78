/* addr.c - mail address syntax (see addr.h). */
#include "addr.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static bool is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

bool addr_is_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return false;
	return true;
}

bool addr_utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	uint32_t cp;
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = rp_utf8_len(s + i, n - i, &cp)))
			return false;
	return true;
}

static enum addr_error local_check(const char *s, size_t n, bool utf8)
{
	if (n == 0)
		return ADDR_BAD_LOCAL;
	if (n > ADDR_LOCAL_MAX)
		return ADDR_TOO_LONG;
	if (s[0] == '"') {
		/* Quoted-string: DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE */
		if (n < 2 || s[n - 1] != '"')
			return ADDR_BAD_LOCAL;
		for (size_t i = 1; i < n - 1; i++) {
			unsigned char c = (unsigned char)s[i];
			if (c == '\\') {
				if (i + 1 >= n - 1)
					return ADDR_BAD_LOCAL;
				c = (unsigned char)s[++i];
				if (c < 32 || c > 126)
					return ADDR_BAD_LOCAL;
				continue;
			}
			if (c == '"')
				return ADDR_BAD_LOCAL;
			if (c >= 0x80) {
				if (!utf8)
					return ADDR_NEEDS_UTF8;
				continue;
			}
			if (c < 32 || c > 126)
				return ADDR_BAD_LOCAL;
		}
		return ADDR_OK;
	}
	/* Dot-string: atoms separated by single dots. */
	bool prev_dot = true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (prev_dot)
				return ADDR_BAD_LOCAL;
			prev_dot = true;
			continue;
		}
		prev_dot = false;
		if (c >= 0x80) {
			if (!utf8)
				return ADDR_NEEDS_UTF8;
			continue;
		}
		if (!is_atext(c))
			return ADDR_BAD_LOCAL;
	}
	return prev_dot ? ADDR_BAD_LOCAL : ADDR_OK;
}

static bool literal_ok(const char *s, size_t n)
{
	char tmp[64];
	unsigned char bin[16];
	if (n < 3 || s[0] != '[' || s[n - 1] != ']' || n - 2 >= sizeof(tmp))
		return false;
	memcpy(tmp, s + 1, n - 2);
	tmp[n - 2] = '\0';
	if (!strncasecmp(tmp, "IPv6:", 5))
		return inet_pton(AF_INET6, tmp + 5, bin) == 1;
	return inet_pton(AF_INET, tmp, bin) == 1;
}

enum addr_error addr_domain_check(const char *s, size_t n, bool utf8)
{
	if (n == 0)
		return ADDR_BAD_DOMAIN;
	if (n > ADDR_DOMAIN_MAX)
		return ADDR_TOO_LONG;
	if (s[0] == '[')
		return literal_ok(s, n) ? ADDR_OK : ADDR_BAD_DOMAIN;
	size_t label = 0;
	bool nonascii = false;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = i < n ? (unsigned char)s[i] : '.';
		if (c == '.') {
			if (label == 0 || label > 63)
				return ADDR_BAD_DOMAIN;
			if (s[i - 1] == '-' || s[i - label] == '-')
				return ADDR_BAD_DOMAIN;
			label = 0;
			continue;
		}
		label++;
		if (c >= 0x80) {
			if (!utf8)
				return ADDR_NEEDS_UTF8;
			nonascii = true;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return ADDR_BAD_DOMAIN;
	}
	if (nonascii && !addr_utf8_valid(s, n))
		return ADDR_BAD_UTF8;
	return ADDR_OK;
}

enum addr_error addr_check(const char *s, size_t n, bool utf8, size_t *at)
{
	if (n == 0)
		return ADDR_EMPTY;
	if (n > ADDR_MAX)
		return ADDR_TOO_LONG;
	if (!addr_is_ascii(s, n)) {
		if (!utf8)
			return ADDR_NEEDS_UTF8;
		if (!addr_utf8_valid(s, n))
			return ADDR_BAD_UTF8;
	}
	/* The domain follows the last '@' (a quoted local part may hold '@'). */
	size_t i = n;
	while (i > 0 && s[i - 1] != '@')
		i--;
	if (i == 0)
		return ADDR_NO_AT;
	size_t a = i - 1;
	enum addr_error e = local_check(s, a, utf8);
	if (e != ADDR_OK)
		return e;
	e = addr_domain_check(s + a + 1, n - a - 1, utf8);
	if (e != ADDR_OK)
		return e;
	if (at)
		*at = a;
	return ADDR_OK;
}

const char *addr_error_str(enum addr_error e)
{
	switch (e) {
	case ADDR_OK:
		return "ok";
	case ADDR_EMPTY:
		return "empty address";
	case ADDR_NO_AT:
		return "missing @domain";
	case ADDR_BAD_LOCAL:
		return "bad local part";
	case ADDR_BAD_DOMAIN:
		return "bad domain";
	case ADDR_TOO_LONG:
		return "address too long";
	case ADDR_NEEDS_UTF8:
		return "non-ASCII address needs SMTPUTF8";
	case ADDR_BAD_UTF8:
		return "malformed UTF-8";
	}
	return "bad address";
}
