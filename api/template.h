/* template.h - {{name}} substitution for per-recipient rendering.
 *
 * Pure. A placeholder is "{{" optional blanks, a name of letters, digits,
 * '_', '-' or '.', optional blanks, "}}". Names the lookup does not know are
 * left as written, so a typo is visible in the mail rather than silently
 * blank. Values go into HTML escaped (&, <, >, ", '), into URLs
 * percent-encoded.
 */
#ifndef RP_TEMPLATE_H
#define RP_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

/* template_lookup - the value of name[0..len), or NULL when unknown. */
typedef const char *(*template_lookup)(void *ctx, const char *name, size_t len, size_t *vlen);

/* template_has_vars - whether s[0..n) holds at least one placeholder. */
bool template_has_vars(const char *s, size_t n);
/* How values are written. */
enum template_escape {
	TEMPLATE_RAW,  /* as they are (text, subjects) */
	TEMPLATE_HTML, /* &, <, >, ", ' as entities */
	TEMPLATE_URL,  /* percent-encoded, all but RFC 3986 unreserved characters */
};

/* template_render - append s[0..n) with placeholders replaced, at most max
 * bytes: true when it all fit; false as soon as the next piece would pass
 * max (out then holds a cut rendering of at most max bytes, for the caller
 * to discard). Nothing is ever rendered past the bound. */
bool template_render(struct buf *out, const char *s, size_t n, template_lookup fn, void *ctx,
                     enum template_escape esc, size_t max);

#endif
