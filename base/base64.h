/* base64.h - base64 (RFC 4648) encoding and decoding into buffers. */
#ifndef RP_BASE64_H
#define RP_BASE64_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* base64_encode - append base64 of p[0..n), CRLF every 76 characters
 * when lines is true (MIME bodies). */
void base64_encode(struct buf *out, const unsigned char *p, size_t n, bool lines);
/* base64_decode - decode standard or URL-safe base64 (whitespace ignored,
 * padding optional); false on any other character or a lone trailing one
 * (out may then hold part of the result). */
bool base64_decode(const char *p, size_t n, struct buf *out);

#endif
