/* verp.c - signed VERP return paths (see verp.h). */
#include "verp.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

#define PREFIX     "bounce-"
#define PREFIX_LEN 7
#define MAC_HEX    16

/* mac - the truncated HMAC of (msgid, idx) as 16 lower-case hex digits. */
static void mac(const unsigned char key[VERP_KEY_LEN], uint64_t msgid, uint32_t idx,
                char out[MAC_HEX + 1])
{
	unsigned char msg[16], md[32];
	unsigned int mdlen = sizeof(md);
	memcpy(msg, "verp", 4);
	rp_put_be64(msg + 4, msgid);
	rp_put_be32(msg + 12, idx);
	HMAC(EVP_sha256(), key, VERP_KEY_LEN, msg, sizeof(msg), md, &mdlen);
	for (int i = 0; i < MAC_HEX / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

size_t verp_encode(const unsigned char key[VERP_KEY_LEN], uint64_t msgid, uint32_t idx,
                   const char *domain, char *out, size_t outlen)
{
	char m[MAC_HEX + 1];
	if (!domain || !domain[0])
		return 0;
	mac(key, msgid, idx, m);
	int n = snprintf(out, outlen, PREFIX "%016llx-%u-%s@%s", (unsigned long long)msgid, idx, m,
	                 domain);
	return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

/* hex_u64 - exactly n hex digits into v. */
static bool hex_u64(const char *p, size_t n, uint64_t *v)
{
	uint64_t r = 0;
	if (!n || n > 16)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return false;
		r = r << 4 | d;
	}
	*v = r;
	return true;
}

enum verp_result verp_decode(const unsigned char key[VERP_KEY_LEN], const char *addr, size_t len,
                             const char *domain, uint64_t *msgid, uint32_t *idx)
{
	const char *at = NULL;
	for (size_t i = len; i > 0; i--)
		if (addr[i - 1] == '@') {
			at = addr + i - 1;
			break;
		}
	size_t dlen = domain ? strlen(domain) : 0;
	if (!at || !dlen || (size_t)(addr + len - at - 1) != dlen ||
	    strncasecmp(at + 1, domain, dlen))
		return VERP_NOT_VERP;
	size_t llen = (size_t)(at - addr);
	if (llen < PREFIX_LEN || strncasecmp(addr, PREFIX, PREFIX_LEN))
		return VERP_NOT_VERP;
	const char *p = addr + PREFIX_LEN, *end = at;
	const char *d1 = memchr(p, '-', (size_t)(end - p));
	const char *d2 = d1 ? memchr(d1 + 1, '-', (size_t)(end - d1 - 1)) : NULL;
	uint64_t id, ix = 0;
	if (!d2 || d1 - p != 16 || end - (d2 + 1) != MAC_HEX || !hex_u64(p, 16, &id))
		return VERP_NOT_VERP;
	if (d2 == d1 + 1 || d2 - d1 - 1 > 10)
		return VERP_NOT_VERP;
	for (const char *q = d1 + 1; q < d2; q++) {
		if (*q < '0' || *q > '9')
			return VERP_NOT_VERP;
		ix = ix * 10 + (uint64_t)(*q - '0');
	}
	if (ix > UINT32_MAX)
		return VERP_NOT_VERP;
	char want[MAC_HEX + 1], got[MAC_HEX + 1];
	mac(key, id, (uint32_t)ix, want);
	for (int i = 0; i < MAC_HEX; i++) {
		char c = d2[1 + i];
		got[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
	}
	got[MAC_HEX] = '\0';
	if (CRYPTO_memcmp(want, got, MAC_HEX))
		return VERP_BAD_MAC;
	*msgid = id;
	*idx = (uint32_t)ix;
	return VERP_OK;
}
