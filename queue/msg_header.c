/* msg_header.c - RFC 5322 header section scanning (see msg_header.h). */
#include "msg_header.h"

#include <string.h>
#include <strings.h>

/* field_name_len - length of a field name followed by ':' at p, or 0. */
static size_t field_name_len(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] != ':') {
		unsigned char c = (unsigned char)p[i];
		if (c < 33 || c > 126)
			return 0;
		i++;
	}
	return i < n && i > 0 ? i : 0;
}

static bool name_is(const char *p, size_t n, const char *name)
{
	return strlen(name) == n && !strncasecmp(p, name, n);
}

void msg_header_scan(const char *p, size_t n, struct msg_header_info *info)
{
	size_t off = 0;
	memset(info, 0, sizeof(*info));
	while (off < n) {
		const char *nl = memchr(p + off, '\n', n - off);
		size_t next = nl ? (size_t)(nl - p) + 1 : n;
		size_t llen = next - off;
		const char *l = p + off;
		if ((llen == 2 && l[0] == '\r' && l[1] == '\n') || (llen == 1 && l[0] == '\n')) {
			info->blank_line = true;
			info->end = next;
			return;
		}
		if (l[0] == ' ' || l[0] == '\t') {
			if (!info->fields) {
				info->end = off;
				return;
			}
			off = next;
			continue;
		}
		size_t fl = field_name_len(l, llen);
		if (!fl) {
			info->end = off;
			return;
		}
		info->fields++;
		if (name_is(l, fl, "Date"))
			info->has_date = true;
		else if (name_is(l, fl, "Message-ID"))
			info->has_message_id = true;
		else if (name_is(l, fl, "From"))
			info->has_from = true;
		off = next;
	}
	info->end = n;
}

bool msg_header_get(const char *p, size_t hdr_end, const char *name, const char **val,
		    size_t *len)
{
	size_t off = 0;
	while (off < hdr_end) {
		const char *nl = memchr(p + off, '\n', hdr_end - off);
		size_t next = nl ? (size_t)(nl - p) + 1 : hdr_end;
		const char *l = p + off;
		size_t fl = field_name_len(l, next - off);
		if (fl && name_is(l, fl, name)) {
			size_t v = off + fl + 1;
			while (v < next && (p[v] == ' ' || p[v] == '\t'))
				v++;
			/* Include continuation lines. */
			size_t e = next;
			while (e < hdr_end && (p[e] == ' ' || p[e] == '\t')) {
				const char *n2 = memchr(p + e, '\n', hdr_end - e);
				e = n2 ? (size_t)(n2 - p) + 1 : hdr_end;
			}
			while (e > v && (p[e - 1] == '\n' || p[e - 1] == '\r'))
				e--;
			*val = p + v;
			*len = e - v;
			return true;
		}
		off = next;
	}
	return false;
}
