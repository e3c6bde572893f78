/* config_check.c - a loaded config against good practice and this machine
 * (see config.h): the warnings check-config prints and serve logs, and
 * the bind() test of [domain] source addresses that start-up, SIGHUP and
 * check-config run; the checks across keys that do stop a load
 * (config_check_tls, config_check_keys); and the parse of the source
 * addresses themselves (config_parse_sources, part of the load).
 *
 * Promises: nothing here but config_parse_sources changes the config; a
 * warning never stops anything; config_check_sources takes no port
 * (IP_BIND_ADDRESS_NO_PORT) and leaves no socket open.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/conn.h"
#include "base/util.h"
#include "config.h"

const char *config_ehlo_problem(const char *name)
{
	unsigned char a[16];
	if (!name[0])
		return NULL; /* [server] hostname */
	if (name[0] == '[')
		return "is an address literal, not a fully qualified domain name";
	if (inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1)
		return "is an IP address, not a fully qualified domain name";
	if (addr_domain_check(name, strlen(name), false) != ADDR_OK)
		return "is not a valid domain name";
	const char *dot = strrchr(name, '.');
	if (!dot)
		return "has no dot: not a fully qualified domain name";
	if (strspn(dot + 1, "0123456789") == strlen(dot + 1))
		return "ends in a numeric label: not a fully qualified domain name";
	return NULL;
}

/* section - "[domain NAME]" of d, for messages. */
static const char *section(const struct cfg_domain *d, char *out, size_t n)
{
	snprintf(out, n, "[domain %s]", d->name);
	return out;
}

/* has_family - one of d's sources is of this family. */
static bool has_family(const struct cfg_domain *d, int family)
{
	for (unsigned i = 0; i < d->nsources; i++)
		if (d->sources[i].ss.ss_family == family)
			return true;
	return false;
}

/* warn_domain - the warnings about one section (d is cfg->defaults or a
 * [domain NAME] merged over it: only what the section set is its own). */
static unsigned warn_domain(const struct config *cfg, const struct cfg_domain *d,
                            config_warn_fn warn, void *arg)
{
	const struct cfg_domain *def = &cfg->defaults;
	char text[700], sect[300];
	unsigned n = 0;
	bool own_ehlo = d == def || d->ehlo != def->ehlo;
	const char *why = own_ehlo ? config_ehlo_problem(d->ehlo) : NULL;
	if (why) {
		snprintf(text, sizeof(text),
		         "%s ehlo '%s' %s; receivers may reject or mistrust mail that greets "
		         "with it",
		         section(d, sect, sizeof(sect)), d->ehlo, why);
		warn(arg, d->ehlo_line, text);
		n++;
	}
	/* A static route to an address no source can reach: its mail waits.
	 * Said once, by the section that set the route or the sources. */
	bool own = d == def || d->sources != def->sources ||
	           memcmp(&d->route, &def->route, sizeof(d->route));
	int family = d->route.ss.ss_family;
	if (own && d->nsources && d->route.set && d->route.sslen && !has_family(d, family)) {
		char v = family == AF_INET6 ? '6' : '4';
		snprintf(text, sizeof(text),
		         "%s route %s is IPv%c but source has no IPv%c address: its mail will "
		         "be deferred",
		         section(d, sect, sizeof(sect)), d->route.text, v, v);
		warn(arg, d->line ? d->line : d->source_line, text);
		n++;
	}
	return n;
}

/* warn_keys - the sample key from ringpost.conf and the README, still in
 * use (config_load refuses it, like every short key, off loopback). */
static unsigned warn_keys(const struct config *cfg, config_warn_fn warn, void *arg)
{
	char text[300];
	for (unsigned i = 0; cfg->listen_api.set && i < cfg->napi_keys; i++) {
		if (strcmp(cfg->api_keys[i], "change-me"))
			continue;
		snprintf(text, sizeof(text),
		         "[api] keys: key %s is the sample key change-me: every local user can "
		         "guess it; use a long random token (openssl rand -hex 24)",
		         cfg->api_key_names[i]);
		warn(arg, cfg->api_keys_line, text);
		return 1;
	}
	return 0;
}

unsigned config_warnings(const struct config *cfg, config_warn_fn warn, void *arg)
{
	unsigned n = warn_keys(cfg, warn, arg);
	n += warn_domain(cfg, &cfg->defaults, warn, arg);
	for (unsigned i = 0; i < cfg->ndomains; i++)
		n += warn_domain(cfg, &cfg->domains[i], warn, arg);
	return n;
}

/* try_source - bind a throw-away socket to src; 0 or -errno. */
static int try_source(const struct cfg_source *src)
{
	int fd = socket(src->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int rc = conn_bind_source(fd, (const struct sockaddr *)&src->ss, src->len);
	close(fd);
	return rc;
}

/* check_domain - d's own source addresses (not those it merged), each
 * address once per call of config_check_sources (seen, nseen). */
static bool check_domain(const struct config *cfg, const struct cfg_domain *d,
                         const struct cfg_source **seen, unsigned *nseen, char *err, size_t errlen)
{
	if (d != &cfg->defaults && d->sources == cfg->defaults.sources)
		return true;
	for (unsigned i = 0; i < d->nsources; i++) {
		const struct cfg_source *src = &d->sources[i];
		bool dup = false;
		for (unsigned k = 0; k < *nseen && !dup; k++)
			dup = !strcmp(seen[k]->text, src->text);
		if (dup)
			continue;
		seen[(*nseen)++] = src;
		int rc = try_source(src);
		if (!rc)
			continue;
		char sect[300];
		snprintf(err, errlen, "%s:%u: %s source %s %s (bind: %s)", cfg->path,
		         d->source_line, section(d, sect, sizeof(sect)), src->text,
		         rc == -EADDRNOTAVAIL ? "is not an address of this machine"
		                              : "cannot be used to send from",
		         strerror(-rc));
		return false;
	}
	return true;
}

bool config_check_sources(const struct config *cfg, char *err, size_t errlen)
{
	unsigned total = cfg->defaults.nsources, nseen = 0;
	for (unsigned i = 0; i < cfg->ndomains; i++)
		total += cfg->domains[i].nsources;
	const struct cfg_source **seen = xcalloc(total ? total : 1, sizeof(*seen));
	bool ok = check_domain(cfg, &cfg->defaults, seen, &nseen, err, errlen);
	for (unsigned i = 0; ok && i < cfg->ndomains; i++)
		ok = check_domain(cfg, &cfg->domains[i], seen, &nseen, err, errlen);
	free(seen);
	return ok;
}

/* config_check_tls - [tls] is whole, and present wherever TLS is needed: a
 * TLS-only listener or an HTTPS API without a certificate is an error. */
bool config_check_tls(const struct config *c, char *err, size_t errlen)
{
	if (!c->tls_cert[0] != !c->tls_key[0]) {
		snprintf(err, errlen, "%s: [tls] needs both cert and key", c->path);
		return false;
	}
	if (config_has_tls(c))
		return true;
	const struct {
		bool on;
		const char *what;
	} need[] = {
		{ c->listen_submissions.set, "[listen] submissions (implicit TLS)" },
		{ c->listen_imaps.set, "[listen] imaps (implicit TLS)" },
		{ c->listen_pop3s.set, "[listen] pop3s (implicit TLS)" },
		{ c->api_tls, "[api] tls = yes" },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(need); i++)
		if (need[i].on) {
			snprintf(err, errlen, "%s: %s needs a certificate: set [tls] cert and key",
			         c->path, need[i].what);
			return false;
		}
	return true;
}

/* config_check_keys - an API that listens beyond loopback takes no key
 * shorter than CFG_API_MIN_KEY (change-me, test keys): refused at the keys
 * line, the key named, its token not shown. */
bool config_check_keys(const struct config *c, char *err, size_t errlen)
{
	if (!c->listen_api.set || config_addr_loopback(&c->listen_api))
		return true;
	for (unsigned i = 0; i < c->napi_keys; i++) {
		size_t n = strlen(c->api_keys[i]);
		if (n >= CFG_API_MIN_KEY)
			continue;
		snprintf(err, errlen,
		         "%s:%u: [api] keys: key %s has %zu characters, but the API listens on %s "
		         "(not loopback), where a key needs at least %d: use a long random token "
		         "(openssl rand -hex 24)",
		         c->path, c->api_keys_line, c->api_key_names[i], n, c->listen_api.text,
		         CFG_API_MIN_KEY);
		return false;
	}
	return true;
}

void config_parse_sources(struct cfg_domain *d)
{
	char *copy = xstrdup(d->source), *save = NULL;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		d->sources = xrealloc(d->sources, (d->nsources + 1) * sizeof(*d->sources));
		struct cfg_source *src = &d->sources[d->nsources++];
		memset(src, 0, sizeof(*src));
		struct sockaddr_in *sin = (struct sockaddr_in *)&src->ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&src->ss;
		if (inet_pton(AF_INET, tok, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			src->len = sizeof(*sin);
			inet_ntop(AF_INET, &sin->sin_addr, src->text, sizeof(src->text));
		} else if (inet_pton(AF_INET6, tok, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			src->len = sizeof(*sin6);
			inet_ntop(AF_INET6, &sin6->sin6_addr, src->text, sizeof(src->text));
		} else {
			rp_panic("source '%s' passed the check but does not parse", tok);
		}
	}
	free(copy);
}
