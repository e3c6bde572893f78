/* pop3.h - the bounce mailbox over POP3 (see mailbox.h).
 *
 * One server per shard, on the shard's loop; one session per accepted
 * connection. Reads go through the shard's spool reader (short read
 * transactions), changes (flags, deletions) through the spool writer.
 */
#ifndef RP_POP3_H
#define RP_POP3_H

#include <stdbool.h>

#include "base/auth.h"
#include "base/loop.h"
#include "mailbox.h"
#include "queue/spool.h"

struct pop3_server;

struct pop3_params {
	struct loop *loop;
	struct spool *spool;
	struct spool_reader *reader;      /* the shard's */
	struct auth_checker *checker;     /* password checks off the loop */
	struct auth_limiter *limiter;     /* failed logins per address (every protocol's) */
	const struct mailbox_config *cfg; /* replace with pop3_server_set_config */
	void (*session_gone)(void *arg);  /* a session was freed (shutdown waits) */
	void *arg;
};

/* pop3_server_new - a server with no session yet. */
struct pop3_server *pop3_server_new(const struct pop3_params *p);
/* pop3_server_free - every session must be gone. */
void pop3_server_free(struct pop3_server *srv);
/* pop3_server_set_config - a reloaded config (the old one may be freed after). */
void pop3_server_set_config(struct pop3_server *srv, const struct mailbox_config *cfg);
/* pop3_session_start - serve an accepted socket; implicit_tls: TLS from the first byte. */
void pop3_session_start(struct pop3_server *srv, int fd, bool implicit_tls);
/* pop3_shutdown_all - say goodbye to every session and close it. */
void pop3_shutdown_all(struct pop3_server *srv);
/* pop3_sessions - sessions not yet freed. */
unsigned pop3_sessions(const struct pop3_server *srv);
/* pop3_mailbox_changed - the mailbox changed (new mail, flags,
 * expunges): sessions waiting for news (IMAP IDLE) look again. Shard thread. */
void pop3_mailbox_changed(struct pop3_server *srv);

#endif
