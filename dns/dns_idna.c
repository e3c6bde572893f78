/* dns_idna.c - internationalised domain names to their A-label form for
 * the DNS (RFC 5890, RFC 3492 Punycode; see dns.h).
 *
 * An SMTPUTF8 recipient may name its domain in Unicode (U-labels); the DNS
 * only knows the ASCII form. Each label with a non-ASCII character becomes
 * "xn--" followed by the Punycode of its code points, after lower-casing
 * the scripts whose case mapping is a fixed offset (Latin-1, Latin
 * Extended-A, Greek, Cyrillic). Not done: Unicode normalisation (NFC) and
 * the full UTS #46 mapping; names arrive from mail clients already in NFC
 * almost always, and a name that maps differently simply fails its lookup.
 */
#include <stdint.h>
#include <string.h>

#include "dns.h"
#include "base/util.h"

enum {
	PC_BASE = 36,
	PC_TMIN = 1,
	PC_TMAX = 26,
	PC_SKEW = 38,
	PC_DAMP = 700,
	PC_INITIAL_BIAS = 72,
	PC_INITIAL_N = 128,
	LABEL_MAX = 63,
};

/* lower - case mappings that are a fixed offset; the rest stay. */
static uint32_t lower(uint32_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c + 32;
	if (c >= 0xc0 && c <= 0xde && c != 0xd7)
		return c + 32; /* Latin-1 */
	if (c >= 0x100 && c <= 0x137 && !(c & 1))
		return c + 1; /* Latin Extended-A, first run */
	if (c >= 0x139 && c <= 0x148 && (c & 1))
		return c + 1;
	if (c >= 0x14a && c <= 0x177 && !(c & 1))
		return c + 1;
	if (c == 0x178)
		return 0xff;
	if (c >= 0x179 && c <= 0x17e && (c & 1))
		return c + 1;
	if (c >= 0x391 && c <= 0x3ab && c != 0x3a2)
		return c + 32; /* Greek */
	if (c >= 0x410 && c <= 0x42f)
		return c + 32; /* Cyrillic */
	if (c >= 0x400 && c <= 0x40f)
		return c + 80;
	return c;
}

static char digit(uint32_t d)
{
	return (char)(d < 26 ? 'a' + d : '0' + (d - 26));
}

static uint32_t adapt(uint32_t delta, uint32_t npoints, bool first)
{
	delta = first ? delta / PC_DAMP : delta / 2;
	delta += delta / npoints;
	uint32_t k = 0;
	while (delta > ((PC_BASE - PC_TMIN) * PC_TMAX) / 2) {
		delta /= PC_BASE - PC_TMIN;
		k += PC_BASE;
	}
	return k + (PC_BASE - PC_TMIN + 1) * delta / (delta + PC_SKEW);
}

/* punycode - RFC 3492 section 6.3 for cp[0..n); false when the output
 * would pass outlen (a label is at most 63 octets anyway). */
static bool punycode(const uint32_t *cp, unsigned n, char *out, size_t outlen, size_t *olen)
{
	size_t o = 0;
	for (unsigned j = 0; j < n; j++) {
		if (cp[j] < 0x80) {
			if (o + 1 >= outlen)
				return false;
			out[o++] = (char)cp[j];
		}
	}
	unsigned b = (unsigned)o, h = b;
	if (b > 0) {
		if (o + 1 >= outlen)
			return false;
		out[o++] = '-';
	}
	uint32_t next = PC_INITIAL_N, delta = 0, bias = PC_INITIAL_BIAS;
	while (h < n) {
		uint32_t m = UINT32_MAX;
		for (unsigned j = 0; j < n; j++)
			if (cp[j] >= next && cp[j] < m)
				m = cp[j];
		/* n <= 63 code points below 0x110000: no overflow */
		delta += (m - next) * (h + 1);
		next = m;
		for (unsigned j = 0; j < n; j++) {
			if (cp[j] < next)
				delta++;
			if (cp[j] != next)
				continue;
			uint32_t q = delta;
			for (uint32_t k = PC_BASE;; k += PC_BASE) {
				uint32_t t = k <= bias             ? PC_TMIN
				             : k >= bias + PC_TMAX ? PC_TMAX
				                                   : k - bias;
				if (q < t)
					break;
				if (o + 1 >= outlen)
					return false;
				out[o++] = digit(t + (q - t) % (PC_BASE - t));
				q = (q - t) / (PC_BASE - t);
			}
			if (o + 1 >= outlen)
				return false;
			out[o++] = digit(q);
			bias = adapt(delta, h + 1, h == b);
			delta = 0;
			h++;
		}
		delta++;
		next++;
	}
	*olen = o;
	return true;
}

bool dns_to_ascii(const char *name, char *out, size_t outlen)
{
	if (!outlen)
		return false;
	const unsigned char *p = (const unsigned char *)name;
	const unsigned char *end = p + strlen(name);
	size_t o = 0;
	while (p < end) {
		/* One label: its code points, lower-cased. */
		uint32_t cp[LABEL_MAX];
		unsigned n = 0;
		bool ascii = true;
		while (p < end && *p != '.') {
			uint32_t c;
			size_t k = rp_utf8_len(p, (size_t)(end - p), &c);
			if (!k || n == LABEL_MAX)
				return false;
			p += k;
			cp[n++] = lower(c);
			ascii = ascii && c < 0x80;
		}
		if (ascii) {
			if (o + n >= outlen) /* the label and the final NUL */
				return false;
			for (unsigned j = 0; j < n; j++)
				out[o++] = (char)cp[j];
		} else {
			size_t len;
			if (o + 4 >= outlen ||
			    !punycode(cp, n, out + o + 4, outlen - o - 4, &len) ||
			    len + 4 > LABEL_MAX)
				return false;
			memcpy(out + o, "xn--", 4);
			o += 4 + len;
		}
		if (p < end) { /* the dot */
			if (o + 1 >= outlen)
				return false;
			out[o++] = '.';
			p++;
		}
	}
	out[o] = '\0';
	return true;
}
