/* dsn_emit.h - DSNs for failed recipients, from the spool to the bounce mailbox.
 *
 * The scheduler queues each failed recipient during a loop iteration;
 * dsn_emit_flush builds one DSN per message (dsn_build, reading the
 * original from the spool) and stores it with SPOOL_REQ_MBOX_PUT.
 *
 * Ordering: the body of a message is deleted when its last recipient
 * becomes final, so dsn_emit_flush must run before the iteration's state
 * updates reach the spool writer (sched_update_flush does so).
 *
 * Single-threaded: one emitter per scheduler, on the shard's loop.
 */
#ifndef RP_DSN_EMIT_H
#define RP_DSN_EMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "outcome.h"
#include "spool.h"

struct dsn_emit;

/* dsn_emit_new - an emitter reading through reader and storing through sp
 * (both owned by the caller, outliving the emitter). Free with
 * dsn_emit_free. Never NULL. */
struct dsn_emit *dsn_emit_new(struct spool *sp, struct spool_reader *reader);
/* dsn_emit_free - frees e; DSNs still queued are dropped (flush first). */
void dsn_emit_free(struct dsn_emit *e);

/* dsn_emit_queue - note that recipient idx of msgid failed with rep and
 * oc (remote: "host[ip]:port", perhaps followed by " tls=..." which is
 * dropped, or NULL), to be reported by the next
 * dsn_emit_flush. Copies what it needs. Whether a DSN is due at all (a
 * bounce, NOTIFY, a null sender) is decided when it is built. */
void dsn_emit_queue(struct dsn_emit *e, uint64_t msgid, uint32_t idx,
                    const struct attempt_report *rep, const struct outcome *oc, const char *remote,
                    uint64_t now_ms);
/* dsn_emit_flush - build and store the DSNs queued so far, one per
 * message, as reporting_mta (NULL: "localhost"). A message or body that
 * cannot be read gets no DSN. */
void dsn_emit_flush(struct dsn_emit *e, const char *reporting_mta);
/* dsn_emit_pending - whether dsn_emit_flush has anything to do. */
bool dsn_emit_pending(const struct dsn_emit *e);

#endif
