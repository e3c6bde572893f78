/* smtp_server.h - the SMTP server session (submission listener).
 *
 * One session per accepted connection, on the accepting shard. It speaks
 * ESMTP with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 and
 * CHUNKING, enforces the [submission] limits, and answers the end of a
 * message only once the spool says it is durable.
 */
#ifndef RP_SMTP_SERVER_H
#define RP_SMTP_SERVER_H

struct shard;

/* srv_session_start - take over an accepted socket. */
void srv_session_start(struct shard *sh, int fd);
/* srv_shutdown_all - tell every session of sh that the service is going
 * away (421) and close them; sessions waiting for the spool finish first. */
void srv_shutdown_all(struct shard *sh);

#endif
