/* base64.c - base64 (see base64.h). */
#include "base64.h"

#include <stdint.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(struct buf *out, const unsigned char *p, size_t n, bool lines)
{
	size_t col = 0;
	char *w = buf_reserve(out, (n + 2) / 3 * 4 + (n / 57 + 1) * 2);
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		w[o++] = b64[(v >> 18) & 63];
		w[o++] = b64[(v >> 12) & 63];
		w[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		w[o++] = i + 2 < n ? b64[v & 63] : '=';
		col += 4;
		if (lines && col == 76 && i + 3 < n) {
			w[o++] = '\r';
			w[o++] = '\n';
			col = 0;
		}
	}
	buf_commit(out, o);
}

bool base64_decode(const char *p, size_t n, struct buf *out)
{
	uint32_t acc = 0;
	int bits = 0;
	bool pad = false;
	char *w = buf_reserve(out, n / 4 * 3 + 3);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		int v;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad = true;
			continue;
		}
		if (pad)
			return false; /* data after padding */
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '+' || c == '-')
			v = 62;
		else if (c == '/' || c == '_')
			v = 63;
		else
			return false;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			w[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	if (bits >= 6)
		return false; /* a lone trailing character */
	buf_commit(out, o);
	return true;
}
