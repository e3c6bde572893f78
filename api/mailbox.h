/* mailbox.h - what the bounce mailbox's access protocols (IMAP, POP3)
 * share: their settings from the config, and the login check.
 *
 * Both serve the one mailbox (INBOX) of the spool (queue/spool.h) to the
 * users of [auth] users that [mailbox] users allows (all of them when it is
 * empty), over STARTTLS/STLS or implicit TLS, never with a password in
 * clear text when [auth] require_tls is set.
 */
#ifndef RP_MAILBOX_H
#define RP_MAILBOX_H

#include <stdbool.h>
#include <stdint.h>

#include "base/auth.h"
#include "base/climit.h"
#include "base/tls.h"

struct loop;
struct spool;
struct spool_reader;

struct mailbox_config {
	const char *hostname;     /* greetings */
	struct tls_ctx *tls;      /* STARTTLS / STLS and the implicit-TLS ports; NULL = none */
	struct auth_users *users; /* [auth] users; NULL = nobody can log in */
	const char *allowed;      /* [mailbox] users: comma-separated names, "" = every user */
	bool require_tls;         /* [auth] require_tls: no login before TLS */
	uint64_t idle_timeout_ms; /* a session idle this long is logged out */
	uint32_t max_clients;     /* concurrent sessions per shard and protocol */
	const struct climit_config *limits; /* [limits] */
};

/* What an IMAP or POP3 server is made with (imap_server_new,
 * pop3_server_new): the shard's parts it shares. */
struct mailbox_params {
	struct loop *loop;
	struct spool *spool;
	struct spool_reader *reader;      /* the shard's */
	struct auth_checker *checker;     /* password checks off the loop */
	struct auth_limiter *limiter;     /* failed logins per address (every protocol's) */
	struct climit *climit;            /* connections per client address (every listener's) */
	const struct mailbox_config *cfg; /* replace with *_server_set_config */
	void (*session_gone)(void *arg);  /* a session was freed (shutdown waits) */
	void *arg;
};

/* mailbox_user_allowed - whether name may read the mailbox ([mailbox] users). */
bool mailbox_user_allowed(const struct mailbox_config *cfg, const char *name);

#endif
