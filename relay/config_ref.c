/* config_ref.c - configuration generations (see config_ref.h). */
#include "config_ref.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"

/* load_dkim - every [dkim DOMAIN] key; false with "FILE:LINE: reason". */
static bool load_dkim(struct config_ref *r, char *err, size_t errlen)
{
	const struct config *cfg = r->cfg;
	if (!cfg->ndkim)
		return true;
	r->dkim = dkim_keys_new();
	for (unsigned i = 0; i < cfg->ndkim; i++) {
		const struct cfg_dkim *d = &cfg->dkim[i];
		if (!d->selector || !d->selector[0] || !d->key || !d->key[0]) {
			snprintf(err, errlen, "%s:%u: [dkim %s] needs selector and key", cfg->path,
			         d->line, d->domain);
			return false;
		}
		char why[400];
		struct dkim_key *k = dkim_key_load(d->key, why, sizeof(why));
		if (!k) {
			snprintf(err, errlen, "%s:%u: [dkim %s] key: %s", cfg->path, d->line,
			         d->domain, why);
			return false;
		}
		if (dkim_key_alg(k) == DKIM_RSA_SHA256 && dkim_key_bits(k) < 1024)
			buf_printf(
			    &r->warnings,
			    "%s:%u: [dkim %s] the key is RSA-%u: receivers ignore signatures "
			    "by keys under 1024 bits (use 2048, or Ed25519 beside it)\n",
			    cfg->path, d->line, d->domain, dkim_key_bits(k));
		dkim_keys_add(r->dkim, d->domain, d->selector, k);
	}
	return true;
}

/* add_warning - one config_warnings line into r->warnings. */
static void add_warning(void *arg, unsigned line, const char *text)
{
	struct config_ref *r = arg;
	buf_printf(&r->warnings, "%s:%u: %s\n", r->cfg->path, line, text);
}

struct config_ref *config_ref_new(struct config *cfg, char *err, size_t errlen)
{
	struct config_ref *r = xcalloc(1, sizeof(*r));
	r->cfg = cfg;
	atomic_init(&r->refs, 1);
	/* A source address this machine does not have would defer mail for
	 * good: refuse it now (start-up, reload, check-config). */
	if (!config_check_sources(cfg, err, errlen))
		goto fail;
	enum tls_version min = cfg->tls_min_version == CFG_TLS_V1_3 ? TLS_V1_3 : TLS_V1_2;
	if (config_has_tls(cfg)) {
		struct tls_server_config sc = { .cert_file = cfg->tls_cert,
			                        .key_file = cfg->tls_key,
			                        .min_version = min };
		r->tls_server = tls_ctx_new_server(&sc, err, errlen);
		if (!r->tls_server)
			goto fail;
	}
	if (cfg->auth_users[0]) {
		r->users = auth_users_load(cfg->auth_users, err, errlen);
		if (!r->users)
			goto fail;
	}
	/* Outbound TLS works without a certificate of our own. */
	struct tls_client_config cc = { .ca_file = cfg->tls_ca_file, .min_version = min };
	r->tls_client = tls_ctx_new_client(&cc, err, errlen);
	if (!r->tls_client)
		goto fail;
	if (!load_dkim(r, err, errlen))
		goto fail;
	config_warnings(cfg, add_warning, r);
	return r;
fail:
	config_ref_put(r);
	return NULL;
}

void config_ref_get(struct config_ref *r)
{
	atomic_fetch_add(&r->refs, 1);
}

void config_ref_put(struct config_ref *r)
{
	if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
		tls_ctx_unref(r->tls_server);
		tls_ctx_unref(r->tls_client);
		auth_users_unref(r->users);
		dkim_keys_unref(r->dkim);
		buf_free(&r->warnings);
		config_free(r->cfg);
		free(r);
	}
}
