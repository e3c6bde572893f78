/* smtp_reply.c - SMTP reply parsing (see smtp_reply.h). */
#include "smtp_reply.h"

#include <string.h>
#include <strings.h>

#include "base/util.h"

static bool digit(char c)
{
	return c >= '0' && c <= '9';
}

/* enh_parse - "d.ddd.ddd " at p; copies it to out when valid. */
static void enh_parse(const char *p, size_t n, int code, char out[16])
{
	size_t i = 0, parts = 0, digits = 0;
	out[0] = '\0';
	/* The class is one digit, the reply code's first. */
	if (n < 2 || p[0] != '0' + code / 100 || p[1] != '.')
		return;
	for (; i < n && i < 15; i++) {
		if (digit(p[i])) {
			if (++digits > 3)
				return;
		} else if (p[i] == '.' && digits) {
			parts++;
			digits = 0;
		} else {
			break;
		}
	}
	if (parts != 2 || !digits || (i < n && p[i] != ' '))
		return;
	memcpy(out, p, i);
	out[i] = '\0';
}

long smtp_reply_parse(const char *p, size_t n, struct smtp_reply *r)
{
	size_t off = 0;
	int code = 0;
	memset(r, 0, sizeof(*r));
	for (unsigned line = 0;; line++) {
		const char *nl = memchr(p + off, '\n', n - off);
		if (!nl) {
			if (n - off > SMTP_REPLY_LINE_MAX)
				return -1;
			return -2;
		}
		size_t llen = (size_t)(nl - (p + off)); /* without LF */
		if (llen > SMTP_REPLY_LINE_MAX || line >= SMTP_REPLY_MAX_LINES)
			return -1;
		const char *l = p + off;
		size_t body = llen;
		if (body && l[body - 1] == '\r')
			body--;
		if (body < 3 || !digit(l[0]) || !digit(l[1]) || !digit(l[2]))
			return -1;
		int c = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
		if (l[0] < '2' || l[0] > '5')
			return -1; /* 2yz..5yz; SMTP has no 1yz replies */
		if (line == 0) {
			code = c;
			enh_parse(l + 4, body > 4 ? body - 4 : 0, c, r->enh);
			if (body > 3 && l[3] != ' ' && l[3] != '-')
				return -1;
		} else if (c != code) {
			return -1;
		}
		off += llen + 1;
		if (body == 3 || l[3] == ' ') {
			r->code = code;
			r->lines = line + 1;
			r->raw = p;
			r->raw_len = off;
			return (long)off;
		}
		if (l[3] != '-')
			return -1;
	}
}

void smtp_reply_summary(const struct smtp_reply *r, char *out, size_t outlen)
{
	size_t o = 0;
	const char *p = r->raw, *end = r->raw + r->raw_len;
	bool first = true;
	rp_assert(outlen >= 8);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		if (le > p && le[-1] == '\r')
			le--;
		const char *text = p + (le - p >= 4 ? 4 : le - p);
		if (first) {
			/* Keep "550 " from the first line. */
			size_t k = (size_t)(le - p) >= 4 ? 4 : (size_t)(le - p);
			for (size_t i = 0; i < k && o + 1 < outlen; i++)
				out[o++] = p[i] == '-' ? ' ' : p[i];
			first = false;
		} else if (o + 2 < outlen && (!o || out[o - 1] != ' ')) {
			out[o++] = ' '; /* one blank between lines, even after an empty one */
		}
		for (const char *q = text; q < le && o + 1 < outlen; q++) {
			unsigned char c = (unsigned char)*q;
			if (c >= 32 && c != 127)
				out[o++] = (char)c;
		}
		p = nl ? nl + 1 : end;
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
}

void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps)
{
	static const struct {
		const char *kw;
		unsigned flag;
	} kws[] = {
		{ "PIPELINING", SMTP_CAP_PIPELINING },
		{ "SIZE", SMTP_CAP_SIZE },
		{ "8BITMIME", SMTP_CAP_8BITMIME },
		{ "CHUNKING", SMTP_CAP_CHUNKING },
		{ "SMTPUTF8", SMTP_CAP_SMTPUTF8 },
		{ "STARTTLS", SMTP_CAP_STARTTLS },
		{ "ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES },
		{ "DSN", SMTP_CAP_DSN },
		{ "AUTH", SMTP_CAP_AUTH },
	};
	const char *p = r->raw, *end = r->raw + r->raw_len;
	memset(caps, 0, sizeof(*caps));
	/* The first line is the greeting text, not a capability. */
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	p = nl ? nl + 1 : end;
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		if (le > p && le[-1] == '\r')
			le--;
		const char *kw = p + 4;
		if (kw < le) {
			size_t kl = 0;
			while (kw + kl < le && kw[kl] != ' ' && kw[kl] != '=')
				kl++;
			for (size_t i = 0; i < RP_ARRAY_LEN(kws); i++) {
				if (strlen(kws[i].kw) == kl && !strncasecmp(kw, kws[i].kw, kl)) {
					caps->flags |= kws[i].flag;
					if (kws[i].flag == SMTP_CAP_SIZE) {
						uint64_t v = 0;
						for (const char *q = kw + kl + 1;
						     q < le && digit(*q) && v < UINT64_MAX / 10;
						     q++)
							v = v * 10 + (uint64_t)(*q - '0');
						caps->size_max = v;
					}
				}
			}
		}
		p = nl ? nl + 1 : end;
	}
}
