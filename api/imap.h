/* imap.h - the bounce mailbox over IMAP (see mailbox.h).
 *
 * One server per shard, on the shard's loop; one session per accepted
 * connection. Reads go through the shard's spool reader (short read
 * transactions), changes (flags, deletions) through the spool writer.
 */
#ifndef RP_IMAP_H
#define RP_IMAP_H

#include <stdbool.h>

#include "base/auth.h"
#include "base/loop.h"
#include "base/stats.h"
#include "mailbox.h"
#include "queue/spool.h"

struct imap_server;

/* imap_fill_stats - this server's counters into a stats part. */
void imap_fill_stats(const struct imap_server *srv, struct stats_snapshot *part);
/* imap_server_new - a server with no session yet. */
struct imap_server *imap_server_new(const struct mailbox_params *p);
/* imap_server_free - every session must be gone. */
void imap_server_free(struct imap_server *srv);
/* imap_server_set_config - a reloaded config (the old one may be freed after). */
void imap_server_set_config(struct imap_server *srv, const struct mailbox_config *cfg);
/* imap_session_start - serve an accepted socket; implicit_tls: TLS from the first byte. */
void imap_session_start(struct imap_server *srv, int fd, bool implicit_tls);
/* imap_shutdown_all - say goodbye to every session and close it. */
void imap_shutdown_all(struct imap_server *srv);
/* imap_sessions - sessions not yet freed. */
unsigned imap_sessions(const struct imap_server *srv);
/* imap_mailbox_changed - the mailbox changed (new mail, flags,
 * expunges): sessions waiting for news (IMAP IDLE) look again. Shard thread. */
void imap_mailbox_changed(struct imap_server *srv);

#endif
