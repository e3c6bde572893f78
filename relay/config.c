/* config.c - ringpost.conf parsing and validation (see config.h).
 *
 * inih does the INI syntax; we feed it through ini_parse_stream with a reader
 * that counts lines, so every error can name its line. Keys are table-driven:
 * one row per key with its parser and destination field.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/buf.h"
#include "base/conn.h"
#include "base/util.h"
#include "warmup.h"
#include "webhook.h"

enum {
	CFG_D_MAX_CONNECTIONS = 1u << 0,
	CFG_D_MAX_MSGS = 1u << 1,
	CFG_D_MAX_RCPTS = 1u << 2,
	CFG_D_RATE = 1u << 3,
	CFG_D_CONNECT_TIMEOUT = 1u << 4,
	CFG_D_PORT = 1u << 5,
	CFG_D_ROUTE = 1u << 6,
	CFG_D_TLS = 1u << 7,
	CFG_D_SOURCE = 1u << 8,
	CFG_D_EHLO = 1u << 9,
	CFG_D_IDLE = 1u << 10,
	CFG_D_WARMUP = 1u << 11,
};

struct parse_state {
	struct config *cfg;
	FILE *fp;
	unsigned line;     /* line being parsed */
	unsigned hdr_line; /* line of the last [section] header */
	bool long_line;    /* the reader saw a line longer than inih's buffer */
	char err[512];     /* first error */
	unsigned err_line;
	struct cfg_domain *cur_domain; /* current [domain X] section */
	bool exempt_set;               /* [limits] exempt was given */
};

static bool fail(struct parse_state *ps, const char *fmt, ...) RP_PRINTF(2, 3);
static bool fail(struct parse_state *ps, const char *fmt, ...)
{
	if (!ps->err[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ps->err, sizeof(ps->err), fmt, ap);
		va_end(ap);
		ps->err_line = ps->line;
	}
	return false;
}

/* ---- value parsers ----------------------------------------------------- */

bool config_parse_addr(const char *s, struct cfg_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (strlen(s) >= sizeof(a->text))
		return false;
	snprintf(a->text, sizeof(a->text), "%s", s);
	const char *colon;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(a->host))
			return false;
		memcpy(a->host, s + 1, (size_t)(rb - s - 1));
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(a->host))
			return false;
		memcpy(a->host, s, (size_t)(colon - s));
		if (strchr(a->host, ':'))
			return false; /* IPv6 needs brackets */
	}
	uint64_t port;
	if (!rp_parse_u64(colon + 1, &port) || port == 0 || port > 65535)
		return false;
	a->port = (uint16_t)port;
	if (!a->host[0] || !strcmp(a->host, "*")) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
		sin6->sin6_port = htons(a->port);
		a->sslen = sizeof(*sin6);
		snprintf(a->host, sizeof(a->host), "::");
	} else {
		a->sslen = conn_addr_ip(a->host, a->port, &a->ss);
		if (!a->sslen && addr_domain_check(a->host, strlen(a->host), false) != ADDR_OK)
			return false;
	}
	a->set = true;
	return true;
}

static bool parse_net(const char *s, struct climit_net *n)
{
	char tmp[128];
	if (strlen(s) >= sizeof(tmp))
		return false;
	strcpy(tmp, s);
	char *slash = strchr(tmp, '/');
	if (slash)
		*slash = '\0';
	memset(n, 0, sizeof(*n));
	if (inet_pton(AF_INET, tmp, n->addr) == 1) {
		n->family = AF_INET;
		n->prefix = 32;
	} else if (inet_pton(AF_INET6, tmp, n->addr) == 1) {
		n->family = AF_INET6;
		n->prefix = 128;
	} else {
		return false;
	}
	if (slash) {
		uint64_t p;
		if (!rp_parse_u64(slash + 1, &p) || p > n->prefix)
			return false;
		n->prefix = (unsigned)p;
	}
	return true;
}

/* split_list - call fn for each comma-separated, trimmed, non-empty item. */
static bool split_list(struct parse_state *ps, const char *value, const char *key,
                       bool (*fn)(struct parse_state *, const char *, void *), void *arg)
{
	char *copy = xstrdup(value), *save = NULL;
	bool ok = true;
	for (char *tok = strtok_r(copy, ",", &save); tok && ok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		char *e = tok + strlen(tok);
		while (e > tok && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (!*tok)
			continue;
		ok = fn(ps, tok, arg);
		if (!ok)
			fail(ps, "bad value '%s' in %s", tok, key);
	}
	free(copy);
	return ok;
}

/* add_net - one network: of [submission] networks, or (arg) of [limits] exempt. */
static bool add_net(struct parse_state *ps, const char *item, void *arg)
{
	struct climit_config *l = arg;
	struct climit_net n, **v = l ? &l->exempt : &ps->cfg->networks;
	unsigned *nv = l ? &l->nexempt : &ps->cfg->nnetworks;
	if (!parse_net(item, &n))
		return false;
	*v = xrealloc(*v, (*nv + 1) * sizeof(**v));
	(*v)[(*nv)++] = n;
	return true;
}

/* key_name_ok - a key's NAME: 1 to 64 letters, digits, '.', '_', '-' (it
 * goes into log lines and error messages in place of the token). */
static bool key_name_ok(const char *s, size_t n)
{
	if (!n || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return false;
	return true;
}

/* add_key - one [api] keys entry: TOKEN (admin, named "#N" by its place)
 * or NAME:TOKEN:SCOPE. Every failure says which entry by its place and
 * name, never by its token: the message goes to stderr and logs. */
static bool add_key(struct parse_state *ps, const char *item, void *arg)
{
	(void)arg;
	struct config *c = ps->cfg;
	unsigned n = c->napi_keys + 1, scopes = CFG_API_ALL;
	const char *c1 = strchr(item, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	char *name, *token;
	if (!c1) {
		char num[16];
		snprintf(num, sizeof(num), "#%u", n);
		name = xstrdup(num);
		token = xstrdup(item);
	} else {
		if (!c2 || strchr(c2 + 1, ':'))
			return fail(ps,
			            "keys: entry %u is malformed: want TOKEN or NAME:TOKEN:SCOPE "
			            "(SCOPE = submit, read or admin)",
			            n);
		if (!key_name_ok(item, (size_t)(c1 - item)))
			return fail(
			    ps,
			    "keys: entry %u: the name must be 1 to 64 letters, digits, '.', "
			    "'_' or '-'",
			    n);
		name = xstrndup(item, (size_t)(c1 - item));
		token = xstrndup(c1 + 1, (size_t)(c2 - c1 - 1));
		const char *sc = c2 + 1;
		if (!strcmp(sc, "submit"))
			scopes = CFG_API_SUBMIT;
		else if (!strcmp(sc, "read"))
			scopes = CFG_API_READ;
		else if (!strcmp(sc, "admin"))
			scopes = CFG_API_ALL;
		else
			scopes = 0;
	}
	bool ok = true;
	if (!scopes)
		ok = fail(ps, "keys: key %s: the scope must be submit, read or admin", name);
	else if (!*token)
		ok = fail(ps, "keys: key %s has an empty token", name);
	for (const char *p = token; ok && *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			ok = fail(ps,
			          "keys: key %s: the token must be visible ASCII, without spaces",
			          name);
	for (unsigned i = 0; ok && i < c->napi_keys; i++) {
		if (!strcmp(c->api_key_names[i], name))
			ok = fail(ps, "keys: the name %s is given twice", name);
		else if (!strcmp(c->api_keys[i], token))
			ok = fail(ps, "keys: keys %s and %s have the same token",
			          c->api_key_names[i], name);
	}
	if (!ok) {
		free(name);
		free(token);
		return false;
	}
	c->api_keys = xrealloc(c->api_keys, n * sizeof(*c->api_keys));
	c->api_key_names = xrealloc(c->api_key_names, n * sizeof(*c->api_key_names));
	c->api_key_scopes = xrealloc(c->api_key_scopes, n * sizeof(*c->api_key_scopes));
	c->api_keys[n - 1] = token;
	c->api_key_names[n - 1] = name;
	c->api_key_scopes[n - 1] = scopes;
	c->napi_keys = n;
	return true;
}

/* free_keys - the [api] keys lists, emptied. */
static void free_keys(struct config *c)
{
	for (unsigned i = 0; i < c->napi_keys; i++) {
		free(c->api_keys[i]);
		free(c->api_key_names[i]);
	}
	free(c->api_keys);
	free(c->api_key_names);
	free(c->api_key_scopes);
	c->api_keys = c->api_key_names = NULL;
	c->api_key_scopes = NULL;
	c->napi_keys = 0;
}

static bool add_retry(struct parse_state *ps, const char *item, void *arg)
{
	(void)arg;
	struct config *c = ps->cfg;
	uint64_t ms;
	if (!rp_parse_duration_ms(item, &ms) || ms == 0)
		return false;
	c->retry_ms = xrealloc(c->retry_ms, (c->nretry + 1) * sizeof(*c->retry_ms));
	c->retry_ms[c->nretry++] = ms;
	return true;
}

/* ---- key tables -------------------------------------------------------- */

enum vtype {
	V_STR,
	V_U32,
	V_SERVERS,
	V_DURATION,
	V_SIZE,
	V_ADDR,
	V_NETS,
	V_KEYS,
	V_RETRY,
	V_SHARDS,
	V_LOGLEVEL,
	V_RATE,
	V_PORT,
	V_BOOL,     /* yes/no, true/false, on/off, 1/0 into a bool */
	V_CHOICE,   /* one of key->choices, its index into an unsigned */
	V_IPLIST,   /* comma-separated IP addresses, kept as written */
	V_HOSTPORT, /* host:port, the host a name or an address */
	V_DOMAIN,   /* a domain name (ASCII, dot-atom), or empty */
	V_EHLO,     /* an EHLO name: one word (a poor name is only warned about) */
	V_USER,     /* a user name (looked up by serve and check-config), or empty */
	V_URL,      /* a webhook URL (http:// or https://), or empty */
	V_EVENTS,   /* a list of event names into a SPOOL_EV_BIT() mask */
	V_NODE,     /* a cluster node name: letters, digits, '.', '_', '-' */
	V_WARMUP    /* a warm-up schedule: "50/d, 100/d, ..." (warmup_parse) */
};

struct key {
	const char *section;
	const char *name;
	enum vtype type;
	size_t off;                 /* field offset in struct config (or cfg_domain) */
	uint64_t min, max;          /* bounds for numbers */
	unsigned dflag;             /* CFG_D_* for domain keys */
	const char *pending;        /* non-NULL: accepted, feature not built yet */
	const char *const *choices; /* V_CHOICE: the words, NULL-terminated */
};

static const char *const tls_policies[] = { "opportunistic", "required", "verify", "off", NULL };
static const char *const tls_versions[] = { "TLSv1.2", "TLSv1.3", NULL };
static const char *const log_formats[] = { "text", "json", NULL };

#define C(f) offsetof(struct config, f)
#define D(f) offsetof(struct cfg_domain, f)
#define K(f) offsetof(struct cfg_dkim, f)

static const struct key keys[] = {
	{ "server", "hostname", V_STR, C(hostname), 0, 0, 0, NULL },
	{ "server", "data_dir", V_STR, C(data_dir), 0, 0, 0, NULL },
	{ "server", "shards", V_SHARDS, C(shards), 0, 256, 0, NULL },
	{ "server", "log", V_STR, C(log_path), 0, 0, 0, NULL },
	{ "server", "log_level", V_LOGLEVEL, C(log_level), 0, 0, 0, NULL },
	{ "server", "max_outbound", V_U32, C(max_outbound), 1, 1000000, 0, NULL },
	{ "server", "user", V_USER, C(user), 0, 0, 0, NULL },
	{ "server", "log_format", V_CHOICE, C(log_format), 0, 0, 0, NULL, log_formats },
	{ "listen", "submission", V_ADDR, C(listen_submission), 0, 0, 0, NULL },
	{ "listen", "api", V_ADDR, C(listen_api), 0, 0, 0, NULL },
	{ "listen", "inbound", V_ADDR, C(listen_inbound), 0, 0, 0, NULL },
	{ "listen", "imap", V_ADDR, C(listen_imap), 0, 0, 0, NULL },
	{ "listen", "pop3", V_ADDR, C(listen_pop3), 0, 0, 0, NULL },
	{ "listen", "submissions", V_ADDR, C(listen_submissions), 0, 0, 0, NULL },
	{ "listen", "imaps", V_ADDR, C(listen_imaps), 0, 0, 0, NULL },
	{ "listen", "pop3s", V_ADDR, C(listen_pop3s), 0, 0, 0, NULL },
	{ "tls", "cert", V_STR, C(tls_cert), 0, 0, 0, NULL },
	{ "tls", "key", V_STR, C(tls_key), 0, 0, 0, NULL },
	{ "tls", "min_version", V_CHOICE, C(tls_min_version), 0, 0, 0, NULL, tls_versions },
	{ "tls", "ca_file", V_STR, C(tls_ca_file), 0, 0, 0, NULL },
	{ "auth", "users", V_STR, C(auth_users), 0, 0, 0, NULL },
	{ "auth", "require_tls", V_BOOL, C(auth_require_tls), 0, 0, 0, NULL },
	{ "auth", "max_failures", V_U32, C(auth_max_failures), 1, 1000000, 0, NULL },
	{ "mailbox", "users", V_STR, C(mailbox_users), 0, 0, 0, NULL },
	{ "mailbox", "max_messages", V_U32, C(mailbox_max_messages), 1, 100000000, 0, NULL },
	{ "mailbox", "max_age", V_DURATION, C(mailbox_max_age_ms), 60000, 3650ull * 86400000, 0,
	  NULL },
	{ "submission", "networks", V_NETS, 0, 0, 0, 0, NULL },
	{ "submission", "max_message_size", V_SIZE, C(max_message_size), 1024, 1ull << 34, 0,
	  NULL },
	{ "submission", "max_recipients", V_U32, C(max_recipients), 1, 100000, 0, NULL },
	{ "submission", "max_errors", V_U32, C(max_errors), 1, 1000, 0, NULL },
	{ "submission", "idle_timeout", V_DURATION, C(idle_timeout_ms), 1000, 3600000, 0, NULL },
	{ "submission", "max_line_length", V_U32, C(max_line_length), 1000, 1000000, 0, NULL },
	{ "submission", "max_clients", V_U32, C(max_clients), 1, 1000000, 0, NULL },
	{ "api", "keys", V_KEYS, 0, 0, 0, 0, NULL },
	{ "api", "max_request_size", V_SIZE, C(api_max_request), 1024, 1ull << 34, 0, NULL },
	{ "api", "max_batch", V_U32, C(api_max_batch), 1, 100000, 0, NULL },
	{ "api", "idle_timeout", V_DURATION, C(api_idle_timeout_ms), 1000, 3600000, 0, NULL },
	{ "api", "max_clients", V_U32, C(api_max_clients), 1, 1000000, 0, NULL },
	{ "api", "tls", V_BOOL, C(api_tls), 0, 0, 0, NULL },
	{ "limits", "connections_per_client", V_U32, C(limits.connections_per_client), 0, 1000000,
	  0, NULL },
	{ "limits", "commands_per_second", V_U32, C(limits.commands_per_second), 0, 1000000, 0,
	  NULL },
	{ "limits", "command_timeout", V_DURATION, C(limits.command_timeout_ms), 100, 3600000, 0,
	  NULL },
	{ "limits", "header_timeout", V_DURATION, C(limits.header_timeout_ms), 100, 3600000, 0,
	  NULL },
	{ "limits", "data_timeout", V_DURATION, C(limits.data_timeout_ms), 100, 86400000, 0, NULL },
	{ "limits", "min_data_rate", V_SIZE, C(limits.min_data_rate), 0, 1ull << 30, 0, NULL },
	{ "limits", "login_timeout", V_DURATION, C(limits.login_timeout_ms), 100, 3600000, 0,
	  NULL },
	{ "limits", "output_buffer", V_SIZE, C(limits.output_buffer), 4096, 1ull << 30, 0, NULL },
	{ "limits", "exempt", V_NETS, 0, 0, 0, 0, NULL },
	{ "dns", "servers", V_SERVERS, C(dns_servers), 0, 0, 0, NULL },
	{ "dns", "max_ttl", V_DURATION, C(dns_max_ttl_ms), 0, 7ull * 86400000, 0, NULL },
	{ "dns", "negative_ttl", V_DURATION, C(dns_negative_ttl_ms), 0, 86400000, 0, NULL },
	{ "dns", "cache_size", V_U32, C(dns_cache_size), 16, 10000000, 0, NULL },
	{ "dns", "timeout", V_DURATION, C(dns_timeout_ms), 100, 60000, 0, NULL },
	{ "dns", "tries", V_U32, C(dns_tries), 1, 10, 0, NULL },
	{ "queue", "retry", V_RETRY, 0, 0, 0, 0, NULL },
	{ "queue", "max_age", V_DURATION, C(max_age_ms), 1000, 365ull * 86400000, 0, NULL },
	{ "queue", "bounce_domain", V_DOMAIN, C(bounce_domain), 0, 0, 0, NULL },
	{ "queue", "max_size", V_SIZE, C(max_size), 16ull << 20, 1ull << 46, 0, NULL },
	{ "queue", "min_free", V_SIZE, C(min_free), 0, 1ull << 50, 0, NULL },
	{ "queue", "keep_done", V_DURATION, C(keep_done_ms), 0, 365ull * 86400000, 0, NULL },
	{ "queue", "suppress", V_BOOL, C(suppress), 0, 0, 0, NULL },
	{ "webhook", "url", V_URL, C(webhook_url), 0, 0, 0, NULL },
	{ "webhook", "events", V_EVENTS, C(webhook_events), 0, 0, 0, NULL },
	{ "webhook", "secret", V_STR, C(webhook_secret), 0, 0, 0, NULL },
	{ "webhook", "batch", V_U32, C(webhook_batch), 1, 10000, 0, NULL },
	{ "webhook", "max_backlog", V_U32, C(webhook_max_backlog), 1, 1000000000, 0, NULL },
	{ "cluster", "redis", V_HOSTPORT, C(cluster_redis), 0, 0, 0, NULL },
	{ "cluster", "node", V_NODE, C(cluster_node), 0, 0, 0, NULL },
	{ "cluster", "lease", V_DURATION, C(cluster_lease_ms), 1000, 3600000, 0, NULL },
	{ "dkim", "selector", V_STR, K(selector), 0, 0, 0, NULL },
	{ "dkim", "key", V_STR, K(key), 0, 0, 0, NULL },
	{ "domain", "max_connections", V_U32, D(max_connections), 1, 100000, CFG_D_MAX_CONNECTIONS,
	  NULL },
	{ "domain", "max_messages_per_connection", V_U32, D(max_messages_per_connection), 1,
	  10000000, CFG_D_MAX_MSGS, NULL },
	{ "domain", "max_recipients_per_message", V_U32, D(max_recipients_per_message), 1, 100000,
	  CFG_D_MAX_RCPTS, NULL },
	{ "domain", "rate", V_RATE, D(rate), 0, 1000000, CFG_D_RATE, NULL },
	{ "domain", "connect_timeout", V_DURATION, D(connect_timeout_ms), 100, 3600000,
	  CFG_D_CONNECT_TIMEOUT, NULL },
	{ "domain", "idle_timeout", V_DURATION, D(idle_ms), 100, 600000, CFG_D_IDLE, NULL },
	{ "domain", "port", V_PORT, D(port), 1, 65535, CFG_D_PORT, NULL },
	{ "domain", "route", V_ADDR, D(route), 0, 0, CFG_D_ROUTE, NULL },
	{ "domain", "tls", V_CHOICE, D(tls), 0, 0, CFG_D_TLS, NULL, tls_policies },
	{ "domain", "source", V_IPLIST, D(source), 0, 0, CFG_D_SOURCE, NULL },
	{ "domain", "ehlo", V_EHLO, D(ehlo), 0, 0, CFG_D_EHLO, NULL },
	{ "domain", "warmup", V_WARMUP, D(warmup), 0, 0, CFG_D_WARMUP, NULL },
};

/* set_list - the value types that hold lists or addresses. */
static bool set_list(struct parse_state *ps, const struct key *k, char *field, const char *value)
{
	switch (k->type) {
	case V_NETS:
		if (!strcmp(k->section, "limits")) {
			ps->exempt_set = true;
			ps->cfg->limits.nexempt = 0;
			return split_list(ps, value, k->name, add_net, &ps->cfg->limits);
		}
		ps->cfg->nnetworks = 0;
		return split_list(ps, value, k->name, add_net, NULL);
	case V_KEYS:
		free_keys(ps->cfg);
		ps->cfg->api_keys_line = ps->line;
		return split_list(ps, value, k->name, add_key, NULL);
	case V_RETRY:
		ps->cfg->nretry = 0;
		if (!split_list(ps, value, k->name, add_retry, NULL))
			return false;
		if (!ps->cfg->nretry)
			return fail(ps, "retry needs at least one duration");
		return true;
	case V_IPLIST: {
		char *copy = xstrdup(value), *save = NULL;
		for (char *tok = strtok_r(copy, ", \t", &save); tok;
		     tok = strtok_r(NULL, ", \t", &save)) {
			unsigned char a[16];
			if (inet_pton(AF_INET, tok, a) != 1 && inet_pton(AF_INET6, tok, a) != 1) {
				fail(ps, "%s: '%s' is not an IP address", k->name, tok);
				free(copy);
				return false;
			}
		}
		free(copy);
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return true;
	}
	case V_HOSTPORT: {
		struct cfg_addr a;
		if (*value && !config_parse_addr(value, &a))
			return fail(ps, "%s must be host:port", k->name);
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return true;
	}
	case V_SERVERS: {
		/* host:port list of IP addresses, as c-ares takes it. */
		char *copy = xstrdup(value), *save = NULL;
		struct buf norm = { 0 };
		for (char *tok = strtok_r(copy, ", \t", &save); tok;
		     tok = strtok_r(NULL, ", \t", &save)) {
			struct cfg_addr a;
			if (!config_parse_addr(tok, &a) || !a.sslen) {
				fail(ps, "servers: '%s' is not ip:port ([v6]:port)",
				     tok); /* tok is in copy */
				free(copy);
				buf_free(&norm);
				return false;
			}
			buf_printf(&norm, "%s%s", buf_used(&norm) ? "," : "", tok);
		}
		free(copy);
		free(*(char **)field);
		*(char **)field = xstrdup(buf_used(&norm) ? buf_cstr(&norm) : "");
		buf_free(&norm);
		return true;
	}
	default:
		break;
	}
	rp_panic("not a list type %d", (int)k->type);
}

/* set_user - [server] user: a name (looked up later, by serve and
 * check-config), its line kept for their messages. */
static bool set_user(struct parse_state *ps, const struct key *k, char *field, const char *value)
{
	for (const char *p = value; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == ':' || *p == '/')
			return fail(ps, "%s must be a user name, like ringpost or nobody", k->name);
	ps->cfg->user_line = ps->line;
	free(*(char **)field);
	*(char **)field = xstrdup(value);
	return true;
}

/* set_choice - one of k->choices (any case), its index into field. */
static bool set_choice(struct parse_state *ps, const struct key *k, char *field, const char *value)
{
	struct buf words = { 0 };
	for (unsigned i = 0; k->choices[i]; i++) {
		if (!strcasecmp(value, k->choices[i])) {
			*(unsigned *)field = i;
			buf_free(&words);
			return true;
		}
		buf_printf(&words, "%s%s", i ? ", " : "", k->choices[i]);
	}
	fail(ps, "%s must be one of %s", k->name, buf_cstr(&words));
	buf_free(&words);
	return false;
}

/* node_ok - a cluster node name (it names Redis keys and lease holders). */
static bool node_ok(const char *v, char *why, size_t len)
{
	size_t n = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
	if (v[n] || n > 63) {
		snprintf(why, len, "a node name is up to 63 letters, digits, '.', '_' or '-'");
		return false;
	}
	return true;
}

/* set_webhook - [webhook] url (checked whole) and events (into the mask);
 * [cluster] node. */
static bool set_webhook(struct parse_state *ps, const struct key *k, char *field, const char *value)
{
	char why[200];
	struct webhook_url u;
	bool ok = k->type == V_NODE ? node_ok(value, why, sizeof(why))
	          : k->type == V_URL
	              ? !value[0] || webhook_url_parse(value, &u, why, sizeof(why))
	              : spool_ev_mask_parse(value, &ps->cfg->webhook_event_mask, why, sizeof(why));
	if (!ok)
		return fail(ps, "%s: %s", k->name, why);
	free(*(char **)field);
	*(char **)field = xstrdup(value);
	return true;
}

static bool set_value(struct parse_state *ps, const struct key *k, void *base, const char *value)
{
	char *field = (char *)base + k->off;
	uint64_t v;
	switch (k->type) {
	case V_EHLO:
		/* What would break the EHLO command line is refused; a name that
		 * is merely poor (no dot) is config_warnings' business. */
		for (const char *p = value; *p; p++)
			if ((unsigned char)*p <= ' ' || *p == 0x7f)
				return fail(ps,
				            "%s must be one word (a host name), without spaces "
				            "or control characters",
				            k->name);
		if (strlen(value) > 255)
			return fail(ps, "%s must be at most 255 characters", k->name);
		/* fall through */
	case V_DOMAIN:
		if (k->type == V_DOMAIN && value[0] &&
		    addr_domain_check(value, strlen(value), false) != ADDR_OK)
			return fail(ps, "%s must be a domain name (like bounces.example.com)",
			            k->name);
		/* fall through */
	case V_STR:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return true;
	case V_USER:
		return set_user(ps, k, field, value);
	case V_URL:
	case V_EVENTS:
	case V_NODE:
		return set_webhook(ps, k, field, value);
	case V_WARMUP: {
		char why[160];
		if (!warmup_parse(value, (uint32_t *)field, &((struct cfg_domain *)base)->nwarmup,
		                  why, sizeof(why)))
			return fail(ps, "warmup: %s", why);
		return true;
	}
	case V_U32:
		if (!rp_parse_u64(value, &v) || v < k->min || v > k->max)
			return fail(ps, "%s must be a number from %llu to %llu", k->name,
			            (unsigned long long)k->min, (unsigned long long)k->max);
		*(uint32_t *)field = (uint32_t)v;
		return true;
	case V_PORT:
		if (!rp_parse_u64(value, &v) || v < 1 || v > 65535)
			return fail(ps, "%s must be a port number", k->name);
		*(uint16_t *)field = (uint16_t)v;
		return true;
	case V_SHARDS:
		if (!rp_parse_u64(value, &v) || v > k->max)
			return fail(ps, "shards must be 0 (one per core) to %llu",
			            (unsigned long long)k->max);
		*(unsigned *)field = (unsigned)v;
		return true;
	case V_DURATION:
		if (!rp_parse_duration_ms(value, &v) || v < k->min || v > k->max)
			return fail(
			    ps,
			    "%s must be a duration like 30s, 5m, 2h, 3d (from %llu ms to %llu ms)",
			    k->name, (unsigned long long)k->min, (unsigned long long)k->max);
		*(uint64_t *)field = v;
		return true;
	case V_SIZE:
		if (!rp_parse_size(value, &v) || v < k->min || v > k->max)
			return fail(
			    ps, "%s must be a size like 512k, 10M, 8G (from %llu to %llu bytes)",
			    k->name, (unsigned long long)k->min, (unsigned long long)k->max);
		*(uint64_t *)field = v;
		return true;
	case V_RATE: {
		char *end;
		errno = 0;
		double d = strtod(value, &end);
		if (errno || end == value || *end || !(d >= 0 && d <= (double)k->max)) /* NaN too */
			return fail(ps, "%s must be a number of messages per second", k->name);
		*(double *)field = d;
		return true;
	}
	case V_LOGLEVEL:
		if (!log_level_parse(value, (enum log_level *)field))
			return fail(ps, "log_level must be error, warn, info or debug");
		return true;
	case V_ADDR:
		if (!*value) {
			memset(field, 0, sizeof(struct cfg_addr));
			return true;
		}
		if (!config_parse_addr(value, (struct cfg_addr *)field))
			return fail(ps, "%s must be host:port (IPv6 as [addr]:port)", k->name);
		/* We bind listeners without resolving names: say so at its line. */
		if (!strcmp(k->section, "listen") && !((struct cfg_addr *)field)->sslen)
			return fail(ps, "listen address %s must be an IP address", value);
		return true;
	case V_BOOL:
		if (!strcasecmp(value, "yes") || !strcasecmp(value, "true") ||
		    !strcasecmp(value, "on") || !strcmp(value, "1")) {
			*(bool *)field = true;
			return true;
		}
		if (!strcasecmp(value, "no") || !strcasecmp(value, "false") ||
		    !strcasecmp(value, "off") || !strcmp(value, "0")) {
			*(bool *)field = false;
			return true;
		}
		return fail(ps, "%s must be yes or no", k->name);
	case V_CHOICE:
		return set_choice(ps, k, field, value);
	case V_NETS:
	case V_KEYS:
	case V_RETRY:
	case V_IPLIST:
	case V_HOSTPORT:
	case V_SERVERS:
		return set_list(ps, k, field, value);
	}
	rp_panic("unknown value type %d", (int)k->type);
}

static struct cfg_domain *domain_section(struct parse_state *ps, const char *name)
{
	struct config *c = ps->cfg;
	if (!strcmp(name, "*"))
		return &c->defaults;
	char *lname = rp_lower(xstrdup(name));
	for (unsigned i = 0; i < c->ndomains; i++)
		if (!strcmp(c->domains[i].name, lname)) {
			free(lname);
			return &c->domains[i];
		}
	if (addr_domain_check(lname, strlen(lname), true) != ADDR_OK) {
		free(lname);
		fail(ps, "bad domain name in [domain %s]", name);
		return NULL;
	}
	c->domains = xrealloc(c->domains, (c->ndomains + 1) * sizeof(*c->domains));
	struct cfg_domain *d = &c->domains[c->ndomains++];
	memset(d, 0, sizeof(*d));
	d->name = lname;
	d->line = ps->hdr_line;
	return d;
}

/* dkim_section - the [dkim NAME] entry, made on first use. */
static struct cfg_dkim *dkim_section(struct parse_state *ps, const char *name)
{
	struct config *c = ps->cfg;
	char *lname = rp_lower(xstrdup(name));
	for (unsigned i = 0; i < c->ndkim; i++)
		if (!strcmp(c->dkim[i].domain, lname)) {
			free(lname);
			return &c->dkim[i];
		}
	if (addr_domain_check(lname, strlen(lname), false) != ADDR_OK) {
		free(lname);
		fail(ps, "bad domain name in [dkim %s]", name);
		return NULL;
	}
	c->dkim = xrealloc(c->dkim, (c->ndkim + 1) * sizeof(*c->dkim));
	struct cfg_dkim *d = &c->dkim[c->ndkim++];
	memset(d, 0, sizeof(*d));
	d->domain = lname;
	d->line = ps->hdr_line;
	d->selector = xstrdup("");
	d->key = xstrdup("");
	return d;
}

/* named_section - "[kind NAME]": the NAME part, or NULL. */
static const char *named_section(const char *section, const char *kind)
{
	size_t n = strlen(kind);
	if (strncmp(section, kind, n) || (section[n] != ' ' && section[n] != '\t'))
		return NULL;
	const char *p = section + n;
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* set_key - key i of the table, in base (the config or a named section). */
static int set_key(struct parse_state *ps, size_t i, void *base, const char *value)
{
	if (!set_value(ps, &keys[i], base, value))
		return 0;
	ps->cfg->given[i] = true;
	return 1;
}

static int config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *ps = user;
	void *base = ps->cfg;
	const char *sect = section;
	if (ps->err[0])
		return 0;
	if (ps->long_line)
		return fail(ps, "line too long");
	if (!strncmp(section, "domain", 6) && (section[6] == ' ' || section[6] == '\t')) {
		const char *dn = section + 7;
		while (*dn == ' ' || *dn == '\t')
			dn++;
		struct cfg_domain *d = domain_section(ps, dn);
		if (!d)
			return 0;
		base = d;
		sect = "domain";
		for (size_t i = 0; i < RP_ARRAY_LEN(keys); i++) {
			if (strcmp(keys[i].section, "domain") || strcmp(keys[i].name, name))
				continue;
			if (!set_key(ps, i, base, value))
				return 0;
			d->set |= keys[i].dflag;
			if (keys[i].dflag == CFG_D_SOURCE)
				d->source_line = ps->line;
			else if (keys[i].dflag == CFG_D_EHLO)
				d->ehlo_line = ps->line;
			return 1;
		}
		return fail(ps, "unknown key '%s' in [%s]", name, section);
	}
	const char *dkim = named_section(section, "dkim");
	if (dkim) {
		struct cfg_dkim *d = dkim_section(ps, dkim);
		if (!d)
			return 0;
		for (size_t i = 0; i < RP_ARRAY_LEN(keys); i++)
			if (!strcmp(keys[i].section, "dkim") && !strcmp(keys[i].name, name))
				return set_key(ps, i, d, value);
		return fail(ps, "unknown key '%s' in [%s]", name, section);
	}
	for (size_t i = 0; i < RP_ARRAY_LEN(keys); i++) {
		if (strcmp(keys[i].section, sect) || strcmp(keys[i].name, name))
			continue;
		if (!strcmp(sect, "domain") || !strcmp(sect, "dkim"))
			break;
		return set_key(ps, i, base, value);
	}
	for (size_t i = 0; i < RP_ARRAY_LEN(keys); i++)
		if (!strcmp(keys[i].section, section))
			return fail(ps, "unknown key '%s' in [%s]", name, section);
	if (!section[0])
		return fail(ps, "key '%s' outside any section", name);
	return fail(ps, "unknown section [%s]", section);
}

/* section_known - whether [name] (n bytes) is a section we read. */
static bool section_known(const char *name, size_t n)
{
	if (n > 7 && !strncmp(name, "domain", 6) && (name[6] == ' ' || name[6] == '\t'))
		return true;
	if (n > 5 && !strncmp(name, "dkim", 4) && (name[4] == ' ' || name[4] == '\t'))
		return true;
	for (size_t i = 0; i < RP_ARRAY_LEN(keys); i++)
		if (strlen(keys[i].section) == n && !strncmp(keys[i].section, name, n))
			return true;
	return false;
}

/* check_section - note where a "[name]" header line is and refuse unknown
 * names there, not at the section's first key (or never, when it has none). */
static void check_section(struct parse_state *ps, const char *str)
{
	if (ps->line == 1 && !strncmp(str, "\xef\xbb\xbf", 3))
		str += 3; /* inih skips a UTF-8 BOM */
	if (str[0] != '[')
		return;
	ps->hdr_line = ps->line;
	const char *end = strchr(str, ']');
	if (!end || ps->err[0] || section_known(str + 1, (size_t)(end - str - 1)))
		return; /* inih reports a missing ']' */
	int n = (int)(end - str - 1);
	snprintf(ps->err, sizeof(ps->err), "unknown section [%.*s]", n, str + 1);
	ps->err_line = ps->line;
}

/* reader - fgets for inih that counts lines and notices over-long ones. */
static char *reader(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	char *r = fgets(str, num, ps->fp);
	if (!r)
		return NULL;
	size_t n = strlen(str);
	if (n && str[n - 1] == '\n') {
		ps->line++;
	} else if (!feof(ps->fp)) {
		/* inih would see the rest as a new line; refuse instead. */
		ps->line++;
		ps->long_line = true;
		int ch;
		while ((ch = fgetc(ps->fp)) != EOF && ch != '\n')
			;
		if (!ps->err[0]) {
			snprintf(ps->err, sizeof(ps->err), "line too long (at most %d characters)",
			         num - 2);
			ps->err_line = ps->line;
		}
	} else {
		ps->line++;
	}
	check_section(ps, str);
	return r;
}

static void set_defaults(struct config *c)
{
	c->hostname = NULL;
	c->data_dir = xstrdup("var");
	c->shards = 0;
	c->log_path = xstrdup("");
	c->log_level = LOG_INFO;
	c->max_outbound = 20000;
	c->max_message_size = 50ull << 20;
	c->max_recipients = 1000;
	c->max_errors = 10;
	c->idle_timeout_ms = 300000;
	c->max_line_length = 1000;
	c->max_clients = 10000;
	c->dns_servers = xstrdup("");
	c->dns_max_ttl_ms = 3600000;
	c->dns_negative_ttl_ms = 60000;
	c->dns_cache_size = 100000;
	c->dns_timeout_ms = 2000;
	c->dns_tries = 2;
	c->api_max_request = 64ull << 20;
	c->api_max_batch = 1000;
	c->api_idle_timeout_ms = 60000;
	c->api_max_clients = 10000;
	climit_config_defaults(&c->limits);
	c->max_age_ms = 3ull * 86400000;
	c->bounce_domain = xstrdup("");
	c->max_size = 8ull << 30;
	c->min_free = 256ull << 20;
	c->keep_done_ms = 86400000;
	c->user = xstrdup("");
	c->tls_cert = xstrdup("");
	c->tls_key = xstrdup("");
	c->tls_ca_file = xstrdup("");
	c->auth_users = xstrdup("");
	c->auth_require_tls = true;
	c->auth_max_failures = 5;
	c->mailbox_users = xstrdup("");
	c->mailbox_max_messages = 100000;
	c->mailbox_max_age_ms = 30ull * 86400000;
	c->suppress = true;
	c->webhook_url = xstrdup("");
	c->webhook_events = xstrdup("");
	c->webhook_secret = xstrdup("");
	c->webhook_batch = 100;
	c->webhook_event_mask = SPOOL_EV_DEFAULTS;
	c->webhook_max_backlog = 1000000;
	c->cluster_redis = xstrdup("");
	c->cluster_node = xstrdup("");
	c->cluster_lease_ms = 30000;
	static const uint64_t retry[] = {
		60000, 300000, 900000, 1800000, 3600000, 7200000, 14400000
	};
	c->nretry = RP_ARRAY_LEN(retry);
	c->retry_ms = xmemdup(retry, sizeof(retry));
	static const unsigned char lo4[16] = { 127 }, lo6[16] = { [15] = 1 };
	c->networks = xcalloc(2, sizeof(*c->networks));
	c->networks[0] = (struct climit_net){ .family = AF_INET, .prefix = 8 };
	memcpy(c->networks[0].addr, lo4, 16);
	c->networks[1] = (struct climit_net){ .family = AF_INET6, .prefix = 128 };
	memcpy(c->networks[1].addr, lo6, 16);
	c->nnetworks = 2;
	c->defaults.name = xstrdup("*");
	c->defaults.max_connections = 100;
	c->defaults.max_messages_per_connection = 1000;
	c->defaults.max_recipients_per_message = 100;
	c->defaults.rate = 0;
	c->defaults.connect_timeout_ms = 30000;
	c->defaults.idle_ms = 5000;
	c->defaults.port = 25;
	c->defaults.source = xstrdup("");
	c->defaults.ehlo = xstrdup("");
}

_Static_assert(RP_ARRAY_LEN(keys) <= CFG_MAX_KEYS, "CFG_MAX_KEYS is too small for the key table");

/* merge_domain - fill keys a [domain X] section did not set from [domain *]. */
static void merge_domain(struct cfg_domain *d, const struct cfg_domain *def)
{
	if (!(d->set & CFG_D_MAX_CONNECTIONS))
		d->max_connections = def->max_connections;
	if (!(d->set & CFG_D_MAX_MSGS))
		d->max_messages_per_connection = def->max_messages_per_connection;
	if (!(d->set & CFG_D_MAX_RCPTS))
		d->max_recipients_per_message = def->max_recipients_per_message;
	if (!(d->set & CFG_D_RATE))
		d->rate = def->rate;
	if (!(d->set & CFG_D_CONNECT_TIMEOUT))
		d->connect_timeout_ms = def->connect_timeout_ms;
	if (!(d->set & CFG_D_IDLE))
		d->idle_ms = def->idle_ms;
	if (!(d->set & CFG_D_PORT))
		d->port = def->port;
	if (!(d->set & CFG_D_ROUTE))
		d->route = def->route;
	if (!(d->set & CFG_D_TLS))
		d->tls = def->tls;
	if (!(d->set & CFG_D_WARMUP)) {
		memcpy(d->warmup, def->warmup, sizeof(d->warmup));
		d->nwarmup = def->nwarmup;
	}
	/* Strings and lists stay owned by the section that set them
	 * (config_free). */
	if (!(d->set & CFG_D_SOURCE)) {
		d->source = def->source;
		d->sources = def->sources;
		d->nsources = def->nsources;
		d->source_line = def->source_line;
	}
	if (!(d->set & CFG_D_EHLO)) {
		d->ehlo = def->ehlo;
		d->ehlo_line = def->ehlo_line;
	}
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
	struct parse_state ps;
	memset(&ps, 0, sizeof(ps));
	ps.cfg = xcalloc(1, sizeof(*ps.cfg));
	ps.cfg->path = xstrdup(path);
	set_defaults(ps.cfg);
	ps.fp = fopen(path, "r");
	if (!ps.fp) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		config_free(ps.cfg);
		return NULL;
	}
	int rc = ini_parse_stream(reader, &ps, config_ini_handler, &ps);
	fclose(ps.fp);
	if (rc != 0 || ps.err[0]) {
		if (ps.err[0])
			snprintf(err, errlen, "%s:%u: %s", path, ps.err_line, ps.err);
		else if (rc > 0)
			snprintf(err, errlen, "%s:%d: syntax error", path, rc);
		else
			snprintf(err, errlen, "%s: cannot parse (error %d)", path, rc);
		config_free(ps.cfg);
		return NULL;
	}
	struct config *c = ps.cfg;
	if (!ps.exempt_set && c->nnetworks) {
		/* As Postfix exempts $mynetworks from its client limits: the
		 * networks trusted to relay are not throttled either. */
		c->limits.exempt = xmemdup(c->networks, c->nnetworks * sizeof(*c->networks));
		c->limits.nexempt = c->nnetworks;
	}
	if (!c->hostname || !*c->hostname) {
		char host[256] = "localhost";
		gethostname(host, sizeof(host) - 1);
		free(c->hostname);
		c->hostname = xstrdup(host);
	}
	if (addr_domain_check(c->hostname, strlen(c->hostname), false) != ADDR_OK) {
		snprintf(err, errlen, "%s: hostname '%s' is not a valid domain name", path,
		         c->hostname);
		config_free(c);
		return NULL;
	}
	if (!*c->data_dir) {
		snprintf(err, errlen, "%s: data_dir must not be empty", path);
		config_free(c);
		return NULL;
	}
	struct cfg_addr *listens[] = { &c->listen_submission, &c->listen_api,
		                       &c->listen_inbound,    &c->listen_imap,
		                       &c->listen_pop3,       &c->listen_submissions,
		                       &c->listen_imaps,      &c->listen_pop3s };
	for (size_t i = 0; i < RP_ARRAY_LEN(listens); i++) {
		if (listens[i]->set && !listens[i]->sslen) {
			snprintf(err, errlen, "%s: listen address %s must be an IP address", path,
			         listens[i]->text);
			config_free(c);
			return NULL;
		}
	}
	if (!config_check_tls(c, err, errlen) || !config_check_keys(c, err, errlen)) {
		config_free(c);
		return NULL;
	}
	config_parse_sources(&c->defaults);
	for (unsigned i = 0; i < c->ndomains; i++)
		if (c->domains[i].set & CFG_D_SOURCE)
			config_parse_sources(&c->domains[i]);
	for (unsigned i = 0; i < c->ndomains; i++)
		merge_domain(&c->domains[i], &c->defaults);
	return c;
}

void config_free(struct config *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->hostname);
	free(c->data_dir);
	free(c->log_path);
	free(c->networks);
	free_keys(c);
	free(c->limits.exempt);
	free(c->dns_servers);
	free(c->retry_ms);
	free(c->bounce_domain);
	free(c->user);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->tls_ca_file);
	free(c->auth_users);
	free(c->mailbox_users);
	free(c->webhook_url);
	free(c->webhook_events);
	free(c->webhook_secret);
	free(c->cluster_redis);
	free(c->cluster_node);
	free(c->defaults.name);
	free(c->defaults.source);
	free(c->defaults.sources);
	free(c->defaults.ehlo);
	for (unsigned i = 0; i < c->ndomains; i++) {
		struct cfg_domain *d = &c->domains[i];
		free(d->name);
		if (d->set & CFG_D_SOURCE) {
			free(d->source);
			free(d->sources);
		}
		if (d->set & CFG_D_EHLO)
			free(d->ehlo);
	}
	free(c->domains);
	for (unsigned i = 0; i < c->ndkim; i++) {
		free(c->dkim[i].domain);
		free(c->dkim[i].selector);
		free(c->dkim[i].key);
	}
	free(c->dkim);
	free(c);
}

bool config_has_tls(const struct config *cfg)
{
	return cfg->tls_cert[0] && cfg->tls_key[0];
}

bool config_addr_loopback(const struct cfg_addr *a)
{
	if (!a->sslen)
		return false;
	if (a->ss.ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *in6 = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(in6) || (IN6_IS_ADDR_V4MAPPED(in6) && in6->s6_addr[12] == 127);
}

const char *config_api_scope_name(unsigned scopes)
{
	if (scopes & CFG_API_ADMIN)
		return "admin";
	if (scopes & CFG_API_READ)
		return "read";
	if (scopes & CFG_API_SUBMIT)
		return "submit";
	return "none";
}

const char *config_tls_policy_name(unsigned policy)
{
	return policy < RP_ARRAY_LEN(tls_policies) - 1 ? tls_policies[policy] : "?";
}

void config_log_pending(const struct config *cfg)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(keys); i++) {
		const struct key *k = &keys[i];
		if (k->pending && cfg->given[i])
			log_warn("config: [%s] %s is accepted, but %s is not built yet", k->section,
			         k->name, k->pending);
	}
	if (cfg->listen_inbound.set && !cfg->bounce_domain[0])
		log_warn("config: [listen] inbound is set but [queue] bounce_domain is not: the "
		         "bounce MX refuses every recipient (550 5.7.1)");
}

const struct cfg_domain *config_domain(const struct config *cfg, const char *domain)
{
	for (unsigned i = 0; i < cfg->ndomains; i++)
		if (!strcmp(cfg->domains[i].name, domain))
			return &cfg->domains[i];
	return &cfg->defaults;
}

bool config_net_allowed(const struct config *cfg, const struct sockaddr *sa)
{
	return climit_nets_match(cfg->networks, cfg->nnetworks, sa);
}

unsigned config_shards(const struct config *cfg)
{
	if (cfg->shards)
		return cfg->shards;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)RP_MIN(n, 64) : 1;
}
