/* pop3.h - the bounce mailbox over POP3 (see mailbox.h): RFC 1939 (USER,
 * PASS, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT), RFC 2449
 * (CAPA, RESP-CODES, AUTH-RESP-CODE, PIPELINING), RFC 2595 (STLS, and
 * implicit TLS on pop3s), RFC 5034 (AUTH PLAIN).
 *
 * One server per shard, on the shard's loop; one session per accepted
 * connection. Reads go through the shard's spool reader (short read
 * transactions), changes (flags, deletions) through the spool writer.
 *
 * What a client can rely on:
 * - A login takes a snapshot of the mailbox (UIDs and sizes); message
 *   numbers and sizes hold for the session. Sizes count CRLF lines as
 *   RETR sends them (before dot-stuffing). UIDL gives "UIDVALIDITY.UID",
 *   stable across restarts and never reused.
 * - DELE marks, RSET unmarks; only QUIT in TRANSACTION removes the marked
 *   messages, and its +OK comes once that is on disk. A session that ends
 *   without QUIT (dropped, timed out, shut down) removes nothing.
 * - One POP3 session at a time holds the mailbox (RFC 1939 section 8);
 *   another login gets -ERR [IN-USE] until it has ended.
 * - RETR sets \Seen (for IMAP readers); TOP does not.
 * - Limits: command lines of 255 octets (2048 for AUTH PLAIN), 10 bad
 *   commands, the idle timeout of the config (RFC 1939: >= 10 minutes);
 *   failed logins count in the shared limiter and are answered slowly.
 */
#ifndef RP_POP3_H
#define RP_POP3_H

#include <stdbool.h>

#include "base/auth.h"
#include "base/loop.h"
#include "base/stats.h"
#include "mailbox.h"
#include "queue/spool.h"

struct pop3_server;

/* pop3_fill_stats - this server's counters into a stats part. */
void pop3_fill_stats(const struct pop3_server *srv, struct stats_snapshot *part);
/* pop3_server_new - a server with no session yet. */
struct pop3_server *pop3_server_new(const struct mailbox_params *p);
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
 * expunges). POP3 sessions keep their snapshot: nothing to do. Shard thread. */
void pop3_mailbox_changed(struct pop3_server *srv);

#endif
