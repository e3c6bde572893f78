/* msg_header.c - RFC 5322 header section scanning (see msg_header.h). */
#include "msg_header.h"

#include <string.h>
#include <strings.h>

#include "util.h"

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
		else if (name_is(l, fl, "Received"))
			info->received++;
		off = next;
	}
	info->end = n;
}

bool msg_header_get(const char *p, size_t hdr_end, const char *name, const char **val, size_t *len)
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

void msg_normalize_newlines(struct buf *msg, size_t from)
{
	const char *p = buf_head(msg);
	size_t n = buf_used(msg), extra = 0;
	for (size_t i = from; i < n; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			extra++;
		else if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			extra++;
	}
	if (!extra)
		return;
	struct buf out = { 0 };
	buf_reserve(&out, n + extra);
	buf_append(&out, p, from);
	for (size_t i = from; i < n; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			buf_append(&out, "\r\n", 2);
		else if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			buf_append(&out, "\r\n", 2);
		else
			buf_append(&out, p + i, 1);
	}
	buf_free(msg);
	*msg = out;
}

void msg_add_missing(struct buf *out, const struct msg_header_info *hi, bool has_content,
                     uint64_t id, const char *hostname, uint64_t now_ms)
{
	char idstr[17], date[64];
	if (!hi->has_date) {
		rp_rfc5322_date(now_ms, date, sizeof(date));
		buf_printf(out, "Date: %s\r\n", date);
	}
	if (!hi->has_message_id) {
		rp_id_format(id, idstr);
		buf_printf(out, "Message-ID: <%s@%s>\r\n", idstr, hostname);
	}
	if (!hi->fields && has_content && !hi->blank_line)
		buf_puts(out, "\r\n");
}
