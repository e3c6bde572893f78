/* config_ref.h - one configuration generation: the parsed config and what
 * is built from it (the TLS contexts), shared by every shard.
 *
 * main builds a generation at start-up and on each SIGHUP; a generation
 * that cannot be built (a certificate that does not load) is refused as a
 * whole, so a reload keeps the running one. DKIM keys are loaded here too
 * (a key that does not load is an error naming the section's line). Shards hold a reference to the
 * generation they use; the last one to let go frees it. Everything in it
 * is read-only once built.
 */
#ifndef RP_CONFIG_REF_H
#define RP_CONFIG_REF_H

#include <stdatomic.h>
#include <stddef.h>

#include "base/auth.h"
#include "base/buf.h"
#include "base/tls.h"
#include "config.h"
#include "queue/submit_dkim.h"

struct config_ref {
	struct config *cfg;         /* the parsed file */
	struct tls_ctx *tls_server; /* our certificate ([tls]); NULL without */
	struct tls_ctx *tls_client; /* outbound STARTTLS, verifying with ca_file */
	struct auth_users *users;   /* [auth] users; NULL: no AUTH offered */
	struct dkim_keys *dkim;     /* [dkim DOMAIN] keys; NULL: nothing signed */
	struct buf warnings;        /* "FILE:LINE: warning ...\n" lines: legal but unwise
	                             * (DKIM keys, config_warnings) */
	_Atomic unsigned refs;
};

/* config_ref_new - build a generation from cfg (taken over: freed with the
 * generation, or at once on failure). NULL and the reason in err when a
 * certificate, key or CA file cannot be used, or a [domain] source address
 * cannot be bound (config_check_sources). */
struct config_ref *config_ref_new(struct config *cfg, char *err, size_t errlen);
/* config_ref_get / _put - share it; the last put frees it. NULL is fine. */
void config_ref_get(struct config_ref *r);
void config_ref_put(struct config_ref *r);

#endif
