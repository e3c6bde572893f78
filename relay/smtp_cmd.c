/* smtp_cmd.c - SMTP command-line parsing (see smtp_cmd.h). */
#include "smtp_cmd.h"

#include <string.h>
#include <strings.h>

#include "base/util.h"

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
	{ "EHLO", SMTP_EHLO }, { "HELO", SMTP_HELO },         { "MAIL", SMTP_MAIL },
	{ "RCPT", SMTP_RCPT }, { "DATA", SMTP_DATA },         { "BDAT", SMTP_BDAT },
	{ "RSET", SMTP_RSET }, { "NOOP", SMTP_NOOP },         { "QUIT", SMTP_QUIT },
	{ "VRFY", SMTP_VRFY }, { "EXPN", SMTP_EXPN },         { "HELP", SMTP_HELP },
	{ "AUTH", SMTP_AUTH }, { "STARTTLS", SMTP_STARTTLS },
};

void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd)
{
	size_t v = 0;
	while (v < len && line[v] != ' ')
		v++;
	cmd->verb = SMTP_UNKNOWN;
	for (size_t i = 0; i < RP_ARRAY_LEN(verbs); i++) {
		if (strlen(verbs[i].name) == v && !strncasecmp(line, verbs[i].name, v)) {
			cmd->verb = verbs[i].verb;
			break;
		}
	}
	size_t a = v < len ? v + 1 : len;
	size_t e = len;
	while (e > a && (line[e - 1] == ' ' || line[e - 1] == '\t'))
		e--;
	cmd->arg = line + a;
	cmd->arg_len = e - a;
}

const char *smtp_verb_name(enum smtp_verb v)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(verbs); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

bool smtp_param_is(const struct smtp_param *p, const char *key)
{
	return strlen(key) == p->key_len && !strncasecmp(p->key, key, p->key_len);
}

static bool parse_params(const char *s, size_t n, struct smtp_path *out)
{
	size_t i = 0;
	out->nparams = 0;
	while (i < n) {
		while (i < n && s[i] == ' ')
			i++;
		if (i >= n)
			break;
		size_t start = i;
		while (i < n && s[i] != ' ')
			i++;
		if (out->nparams >= SMTP_MAX_PARAMS)
			return false;
		struct smtp_param *p = &out->params[out->nparams++];
		const char *eq = memchr(s + start, '=', i - start);
		p->key = s + start;
		if (eq) {
			p->key_len = (size_t)(eq - (s + start));
			p->val = eq + 1;
			p->val_len = (size_t)(s + i - (eq + 1));
		} else {
			p->key_len = i - start;
			p->val = NULL;
			p->val_len = 0;
		}
		if (p->key_len == 0)
			return false;
		for (size_t k = 0; k < p->key_len; k++) {
			char c = p->key[k];
			if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			      (c >= '0' && c <= '9') || (c == '-' && k > 0)))
				return false;
		}
	}
	return true;
}

bool smtp_path_parse(const char *arg, size_t len, const char *keyword, struct smtp_path *out)
{
	size_t kl = strlen(keyword);
	memset(out, 0, sizeof(*out));
	if (len < kl || strncasecmp(arg, keyword, kl))
		return false;
	size_t i = kl;
	while (i < len && arg[i] == ' ')
		i++;
	if (i >= len)
		return false;
	size_t addr_start, addr_end, rest;
	if (arg[i] == '<') {
		/* Find the closing bracket outside a quoted local part. */
		size_t j = i + 1;
		bool quoted = false;
		for (; j < len; j++) {
			if (quoted && arg[j] == '\\' && j + 1 < len) {
				j++;
				continue;
			}
			if (arg[j] == '"')
				quoted = !quoted;
			else if (!quoted && arg[j] == '>')
				break;
			else if (!quoted && (arg[j] == '<' || arg[j] == ' '))
				return false;
		}
		if (j >= len)
			return false;
		addr_start = i + 1;
		addr_end = j;
		rest = j + 1;
		if (rest < len && arg[rest] != ' ')
			return false;
	} else {
		size_t j = i;
		while (j < len && arg[j] != ' ')
			j++;
		addr_start = i;
		addr_end = j;
		rest = j;
	}
	/* Drop an obsolete source route "@a,@b:". */
	if (addr_start < addr_end && arg[addr_start] == '@') {
		const char *colon = memchr(arg + addr_start, ':', addr_end - addr_start);
		if (!colon)
			return false;
		addr_start = (size_t)(colon - arg) + 1;
	}
	out->addr = arg + addr_start;
	out->addr_len = addr_end - addr_start;
	return parse_params(arg + rest, len - rest, out);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1; /* xtext hex digits are upper case only */
}

long smtp_xtext_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 1 >= outlen)
			return -1;
		if (c == '+') {
			if (i + 2 >= n)
				return -1;
			int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			out[o++] = (char)(h * 16 + l);
			i += 2;
			continue;
		}
		if (c < 33 || c > 126 || c == '=')
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return (long)o;
}

long smtp_xtext_encode(const char *s, size_t n, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 33 || c > 126 || c == '+' || c == '=') {
			if (o + 4 > outlen)
				return -1;
			out[o++] = '+';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			if (o + 2 > outlen)
				return -1;
			out[o++] = (char)c;
		}
	}
	if (o >= outlen)
		return -1;
	out[o] = '\0';
	return (long)o;
}

/* orcpt_type_ok - an addr-type: an atom (RFC 3461 4.2, RFC 5321 atext). */
static bool orcpt_type_ok(const char *t, size_t n)
{
	if (!n || n > SMTP_ORCPT_TYPE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];
		bool atext = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
		if (!atext)
			return false;
	}
	return true;
}

/* orcpt_addr_ok - a decoded original address: printable US-ASCII. */
static bool orcpt_addr_ok(const char *a, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)a[i] < 0x20 || (unsigned char)a[i] > 0x7e)
			return false;
	return true;
}

long smtp_orcpt_parse(const char *val, size_t n, char *out, size_t outlen)
{
	const char *semi = memchr(val, ';', n);
	if (!semi || n > SMTP_ORCPT_MAX)
		return -1;
	size_t tl = (size_t)(semi - val);
	if (!orcpt_type_ok(val, tl) || tl + 2 > outlen)
		return -1;
	memcpy(out, val, tl);
	out[tl] = ';';
	long al = smtp_xtext_decode(semi + 1, n - tl - 1, out + tl + 1, outlen - tl - 1);
	if (al < 0 || !orcpt_addr_ok(out + tl + 1, (size_t)al))
		return -1;
	return (long)tl + 1 + al;
}

long smtp_orcpt_encode(const char *orcpt, size_t n, char *out, size_t outlen)
{
	const char *semi = orcpt ? memchr(orcpt, ';', n) : NULL;
	if (!semi)
		return -1;
	size_t tl = (size_t)(semi - orcpt), al = n - tl - 1;
	if (!orcpt_type_ok(orcpt, tl) || !orcpt_addr_ok(semi + 1, al) || tl + 2 > outlen)
		return -1;
	memcpy(out, orcpt, tl);
	out[tl] = ';';
	long xl = smtp_xtext_encode(semi + 1, al, out + tl + 1, outlen - tl - 1);
	if (xl < 0 || tl + 1 + (size_t)xl > SMTP_ORCPT_MAX)
		return -1;
	return (long)tl + 1 + xl;
}
