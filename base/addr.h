/* addr.h - mail address syntax (RFC 5321 section 4.1.2, RFC 6531).
 *
 * Pure functions, no allocation: they validate caller-owned bytes and report
 * offsets. Shared by the SMTP server, the HTTP API and the scheduler (which
 * routes on the domain).
 */
#ifndef RP_ADDR_H
#define RP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_LOCAL_MAX  64
#define ADDR_DOMAIN_MAX 255
#define ADDR_MAX        254 /* RFC 5321 path limit (256) minus the angle brackets */

enum addr_error {
	ADDR_OK = 0,
	ADDR_EMPTY,      /* nothing there */
	ADDR_NO_AT,      /* no "@domain" */
	ADDR_BAD_LOCAL,  /* local part syntax */
	ADDR_BAD_DOMAIN, /* domain syntax */
	ADDR_TOO_LONG,   /* local part, domain or whole address too long */
	ADDR_NEEDS_UTF8, /* non-ASCII without SMTPUTF8 */
	ADDR_BAD_UTF8,   /* malformed UTF-8 */
};

/* addr_check - validate a mailbox "local@domain" (no angle brackets).
 * utf8 allows RFC 6531 non-ASCII. On ADDR_OK, *at is the offset of the
 * '@' that separates the domain. */
enum addr_error addr_check(const char *s, size_t n, bool utf8, size_t *at);
/* addr_error_str - a short human text for an error. */
const char *addr_error_str(enum addr_error e);
/* addr_is_ascii - no byte >= 0x80. */
bool addr_is_ascii(const char *s, size_t n);
/* addr_utf8_valid - well-formed UTF-8 (no overlongs, no surrogates). */
bool addr_utf8_valid(const char *s, size_t n);
/* addr_domain_check - a domain name or address literal, as in addr_check. */
enum addr_error addr_domain_check(const char *s, size_t n, bool utf8);

#endif
