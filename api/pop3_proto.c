/* pop3_proto.c - the pure parts of POP3 (see pop3_proto.h): nothing here
 * knows about sessions, sockets or the spool. */
#include "pop3_proto.h"

#include <string.h>
#include <strings.h>

static const char *const cmd_names[POP3_CMD_COUNT] = {
	[POP3_CMD_UNKNOWN] = "?", [POP3_CMD_USER] = "USER", [POP3_CMD_PASS] = "PASS",
	[POP3_CMD_APOP] = "APOP", [POP3_CMD_AUTH] = "AUTH", [POP3_CMD_STLS] = "STLS",
	[POP3_CMD_CAPA] = "CAPA", [POP3_CMD_STAT] = "STAT", [POP3_CMD_LIST] = "LIST",
	[POP3_CMD_UIDL] = "UIDL", [POP3_CMD_RETR] = "RETR", [POP3_CMD_TOP] = "TOP",
	[POP3_CMD_DELE] = "DELE", [POP3_CMD_RSET] = "RSET", [POP3_CMD_NOOP] = "NOOP",
	[POP3_CMD_QUIT] = "QUIT",
};

void pop3_cmd_parse(const char *line, size_t len, struct pop3_cmd *c)
{
	const char *sp = memchr(line, ' ', len);
	size_t kw = sp ? (size_t)(sp - line) : len;
	c->id = POP3_CMD_UNKNOWN;
	c->name = cmd_names[POP3_CMD_UNKNOWN];
	c->arg = sp ? sp + 1 : line + len;
	c->arg_len = sp ? len - kw - 1 : 0;
	if (kw < 3 || kw > 4)
		return;
	for (int i = 1; i < POP3_CMD_COUNT; i++) {
		if (strlen(cmd_names[i]) == kw && !strncasecmp(line, cmd_names[i], kw)) {
			c->id = (enum pop3_cmd_id)i;
			c->name = cmd_names[i];
			break;
		}
	}
	/* Trailing blanks are noise, except in a password (RFC 1939 7: the
	 * whole rest of the line may be the password). */
	if (c->id != POP3_CMD_PASS)
		while (c->arg_len &&
		       (c->arg[c->arg_len - 1] == ' ' || c->arg[c->arg_len - 1] == '\t'))
			c->arg_len--;
}

int pop3_cmd_numbers(const struct pop3_cmd *c, unsigned min, unsigned max, uint32_t *out)
{
	const char *p = c->arg, *end = c->arg + c->arg_len;
	unsigned n = 0;
	for (;;) {
		while (p < end && *p == ' ')
			p++;
		if (p == end)
			break;
		uint64_t v = 0;
		const char *start = p;
		while (p < end && *p >= '0' && *p <= '9' && p - start < 11)
			v = v * 10 + (uint64_t)(*p++ - '0');
		if (p == start || (p < end && *p != ' ') || v > UINT32_MAX || n == max)
			return -1;
		out[n++] = (uint32_t)v;
	}
	return n < min ? -1 : (int)n;
}

/* line_at - the line holding p[off]: its content ends at *content_end
 * (before CR LF, LF, or a CR that ends the message) and the next line
 * starts at *next. */
static void line_at(const char *p, size_t n, size_t off, size_t *content_end, size_t *next)
{
	const char *lf = memchr(p + off, '\n', n - off);
	size_t end = lf ? (size_t)(lf - p) : n;
	*next = lf ? end + 1 : n;
	if (end > off && p[end - 1] == '\r')
		end--;
	*content_end = end;
}

uint64_t pop3_msg_size(const char *p, size_t n)
{
	uint64_t size = 0;
	size_t off = 0;
	while (off < n) {
		size_t end, next;
		line_at(p, n, off, &end, &next);
		size += (end - off) + 2;
		off = next;
	}
	return size;
}

void pop3_emit_init(struct pop3_emit *e, bool top, uint64_t lines)
{
	memset(e, 0, sizeof(*e));
	e->top = top;
	e->lines_left = lines;
	e->bol = true;
}

/* line_done - one line has gone out with its CRLF: the header/body
 * separator, or a body line TOP counts. */
static void line_done(struct pop3_emit *e)
{
	e->bol = true;
	if (!e->in_body) {
		if (e->line_empty)
			e->in_body = true;
	} else if (e->top && e->lines_left) {
		e->lines_left--;
	}
}

size_t pop3_emit_run(struct pop3_emit *e, const char *p, size_t n, struct buf *out, size_t budget)
{
	size_t start = out->len;
	while (!e->done && out->len - start < budget) {
		if (e->bol) {
			if (e->off >= n || (e->top && e->in_body && !e->lines_left)) {
				buf_append(out, ".\r\n", 3);
				e->done = true;
				break;
			}
			e->bol = false;
			e->line_empty = true;
			if (p[e->off] == '.')
				buf_append(out, ".", 1); /* RFC 1939 3: byte-stuffing */
		}
		size_t end, next;
		line_at(p, n, e->off, &end, &next);
		if (e->off < end) {
			size_t room = budget - RP_MIN(budget, out->len - start);
			size_t k = RP_MIN(end - e->off, room);
			buf_append(out, p + e->off, k);
			e->off += k;
			if (k)
				e->line_empty = false;
			if (e->off < end)
				continue; /* the budget is spent mid-line */
		}
		buf_append(out, "\r\n", 2);
		e->off = next;
		line_done(e);
	}
	return out->len - start;
}
