/* config_ref.c - configuration generations (see config_ref.h). */
#include "config_ref.h"

#include <stdlib.h>

#include "base/util.h"

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
		config_free(r->cfg);
		free(r);
	}
}
