/* verp.h - signed VERP return paths (variable envelope return paths).
 *
 * With [queue] bounce_domain set, each recipient's envelope sender is an
 * address at that domain that names the message and the recipient:
 *   bounce-<message id, 16 hex>-<recipient index, decimal>-<MAC, 16 hex>@DOMAIN
 * The MAC is HMAC-SHA256 over the id and index with the spool's secret key,
 * truncated to 64 bits, so a bounce can be matched to its recipient and a
 * forged one cannot name recipients it has not seen. Pure functions.
 */
#ifndef RP_VERP_H
#define RP_VERP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VERP_KEY_LEN  32
#define VERP_ADDR_MAX 320

/* verp_encode - the return path for (msgid, idx) into out (NUL-terminated);
 * its length, or 0 when out is too small or domain is empty. */
size_t verp_encode(const unsigned char key[VERP_KEY_LEN], uint64_t msgid, uint32_t idx,
                   const char *domain, char *out, size_t outlen);

enum verp_result {
	VERP_OK,       /* a valid address: msgid and idx are set */
	VERP_NOT_VERP, /* not one of ours (another local part or domain) */
	VERP_BAD_MAC,  /* our shape, but the signature does not match: forged */
};

/* verp_decode - whether addr (the whole address, any case) is one of our
 * VERP addresses at domain, and for which recipient. */
enum verp_result verp_decode(const unsigned char key[VERP_KEY_LEN], const char *addr, size_t len,
                             const char *domain, uint64_t *msgid, uint32_t *idx);

#endif
