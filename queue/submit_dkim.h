/* submit_dkim.h - DKIM keys by signing domain, and signing submissions off
 * the event loops.
 *
 * A struct dkim_keys is an immutable, reference-counted table built from
 * the [dkim DOMAIN] sections (one per configuration generation). A
 * submission given a table and a pool of signing threads
 * (submission_sign) is signed on one of those threads when it is
 * committed: when the From: domain of its header has a key, a
 * DKIM-Signature field (base/dkim.h) is put in front of the message (of
 * each recipient's copy for personalised messages, one signature for a
 * shared body), and only then is it handed to the spool writer, so the
 * bytes stored are the bytes sent. The event loop only pushes and later
 * gets the spool's answer as before.
 */
#ifndef RP_SUBMIT_DKIM_H
#define RP_SUBMIT_DKIM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/dkim.h"
#include "base/workers.h"

struct dkim_keys;

/* One signing identity: d= domain (lower case), s= selector, the key. */
struct dkim_identity {
	char *domain;
	char *selector;
	struct dkim_key *key;
};

/* dkim_keys_new - an empty table (one reference). */
struct dkim_keys *dkim_keys_new(void);
/* dkim_keys_add - sign mail from domain with key (the table takes the
 * caller's reference to key). Only before the table is shared. */
void dkim_keys_add(struct dkim_keys *t, const char *domain, const char *selector,
                   struct dkim_key *key);
struct dkim_keys *dkim_keys_ref(struct dkim_keys *t);
void dkim_keys_unref(struct dkim_keys *t);
/* dkim_keys_count - identities in the table (0 for NULL). */
unsigned dkim_keys_count(const struct dkim_keys *t);
/* dkim_keys_find - the identity for From: domain (any case), or NULL. */
const struct dkim_identity *dkim_keys_find(const struct dkim_keys *t, const char *domain,
                                           size_t len);
/* dkim_from_domain - the domain of the (first) address in a From: field's
 * raw value, lower-cased into out; false when there is none. */
bool dkim_from_domain(const char *val, size_t len, char *out, size_t outlen);

struct submission;
/* submission_sign_now - sign s (a committed submission given keys with
 * submission_sign) on this thread; unsigned when its From: domain has no
 * key, or signing fails (logged). */
void submission_sign_now(struct submission *s);

/* Signatures made, for /v1/stats and /metrics (every thread adds). */
struct dkim_counters {
	_Atomic uint64_t signed_msgs;     /* messages (or per-recipient copies) signed */
	_Atomic uint64_t unsigned_no_key; /* no key for the From: domain (or no From:) */
	_Atomic uint64_t failed;          /* a key, but dkim_sign failed (logged) */
	_Atomic uint64_t sign_us;         /* CPU time spent signing, microseconds */
};
extern struct dkim_counters dkim_counters;

#endif
