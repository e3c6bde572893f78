/* auth.h - the users file, password checks off the event loops, and the
 * per-address failure limit.
 *
 * The users file ([auth] users) has one "name:hash" a line, hash a crypt(3)
 * string: $y$ (yescrypt), $6$ (SHA-512), $5$ (SHA-256); blank lines and
 * lines starting with '#' are ignored. A struct auth_users is an immutable,
 * reference-counted table: loaded at start-up and on SIGHUP, shared by all
 * threads. Checking a password costs milliseconds (yescrypt), so it never
 * runs on an event loop: struct auth_checker hashes on its own threads and
 * answers through the asking loop's inbox. An unknown user costs the same
 * hash as a known one, so timing does not tell which names exist.
 *
 * struct auth_limiter counts failed logins per client address (IPv4 /32,
 * IPv6 /64) over a minute; past the limit the address is refused for a
 * back-off period that doubles on each repeat (up to an hour); a repeat more
 * than an hour after the last back-off ended starts over at a minute. One limiter
 * serves every shard and protocol (SMTP AUTH, IMAP, POP3); its lock is
 * taken only when an address has failed recently.
 */
#ifndef RP_AUTH_H
#define RP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mq.h"

#define AUTH_NAME_MAX 255 /* user names */
#define AUTH_PASS_MAX 255 /* passwords */

/* A decoded SASL PLAIN response (RFC 4616). The pointers are into the
 * decode buffer, which the caller wipes with auth_wipe once checked. */
enum auth_plain_result {
	AUTH_PLAIN_OK,        /* cid/pw are the identity and password */
	AUTH_PLAIN_BAD_B64,   /* not base64, or longer than any credentials */
	AUTH_PLAIN_MALFORMED, /* fewer than two NULs */
	AUTH_PLAIN_PROXY,     /* an authzid other than the authcid: refuse, as cid */
};
struct auth_plain {
	const char *cid, *pw;
	size_t clen, plen;
};

struct buf;
struct auth_users;
struct auth_checker;
struct auth_limiter;

/* auth_users_load - read path. NULL and "path:line: reason" in err on a
 * malformed line (no ':', an empty name, a hash crypt(3) does not know) or
 * an unreadable file. */
struct auth_users *auth_users_load(const char *path, char *err, size_t errlen);
/* auth_users_ref / _unref - share the table; the last unref frees it. */
struct auth_users *auth_users_ref(struct auth_users *u);
void auth_users_unref(struct auth_users *u);
/* auth_users_count - how many users. */
unsigned auth_users_count(const struct auth_users *u);
/* auth_users_has - whether name is in the table. */
bool auth_users_has(const struct auth_users *u, const char *name);

/* A password check in flight. The caller owns it; it must stay valid until
 * done has run. user and pass are copied in by auth_check and wiped there. */
struct auth_req {
	struct mq_item item;      /* queue link: the checker's while in flight */
	struct auth_users *users; /* the table to check against (ref held while queued) */
	char user[AUTH_NAME_MAX + 1];
	char pass[AUTH_PASS_MAX + 1];
	bool ok;             /* the answer: the password is right */
	struct mq *reply_to; /* done runs on this queue's consumer */
	mq_fn done;
	struct auth_checker *checker; /* the checker's own (auth_check sets it) */
};

/* auth_checker_new - start nthreads hashing threads. */
struct auth_checker *auth_checker_new(unsigned nthreads);
/* auth_checker_free - stop them after the requests queued so far. */
void auth_checker_free(struct auth_checker *ac);
/* auth_check - check user/pass (copied) against users; the answer comes
 * through reply_to with done. pass is wiped from req once hashed. */
void auth_check(struct auth_checker *ac, struct auth_req *req, struct auth_users *users,
                const char *user, size_t ulen, const char *pass, size_t plen, struct mq *reply_to,
                mq_fn done);

/* auth_hash - a new crypt(3) hash of pass (yescrypt, random salt) into out;
 * false when the library refuses. For `ringpost user add`. */
bool auth_hash(const char *pass, char *out, size_t outlen);
/* auth_verify - check pass against a crypt(3) hash (blocking: milliseconds). */
bool auth_verify(const char *pass, const char *hash);

/* auth_client_key - sa as one client: an IPv4 address (also v4-mapped in
 * IPv6) or an IPv6 /64, zero-padded to 16 bytes, and its family (4 or 6).
 * false for other families. Every per-address limit counts clients so
 * (this limiter, and the connection limits of climit.h). */
bool auth_client_key(const struct sockaddr *sa, unsigned char key[16], uint8_t *family);
/* auth_limiter_new - max_failures per address per minute. */
struct auth_limiter *auth_limiter_new(unsigned max_failures);
void auth_limiter_free(struct auth_limiter *l);
/* auth_limiter_set_max - a reloaded [auth] max_failures. */
void auth_limiter_set_max(struct auth_limiter *l, unsigned max_failures);
/* auth_limiter_blocked - whether sa is in its back-off period now; *left_ms
 * (if not NULL) says for how long. Cheap when nobody has failed. */
bool auth_limiter_blocked(struct auth_limiter *l, const struct sockaddr *sa, uint64_t now_ms,
                          uint64_t *left_ms);
/* auth_limiter_fail - one more failure from sa; returns how many in the
 * current minute. When that reaches the limit, sa is blocked and true is
 * returned in *blocked. */
unsigned auth_limiter_fail(struct auth_limiter *l, const struct sockaddr *sa, uint64_t now_ms,
                           bool *blocked);

/* auth_plain_decode - base64 "authzid NUL authcid NUL password" (a lone
 * "=" is an empty response) into b, pointed into by out. */
enum auth_plain_result auth_plain_decode(const char *p, size_t n, struct buf *b,
                                         struct auth_plain *out);
/* auth_wipe - forget a buffer that held credentials. */
void auth_wipe(struct buf *b);

#endif
