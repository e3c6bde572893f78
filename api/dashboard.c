/* dashboard.c - GET / and /ui: the dashboard page (api/dashboard.html, in
 * the binary since the build: api/embed.cmake).
 *
 * The page holds no data, so it needs no key; what it shows it fetches
 * from the API with the key the user gives it. Its Content-Security-Policy
 * allows its own inline script and style only (by their SHA-256, computed
 * once from the embedded page), requests to this origin only, and no
 * framing; nothing else may load or run.
 */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "http.h"

extern const unsigned char api_dashboard_html[];
extern const size_t api_dashboard_html_len;

static char csp_headers[1024];
static pthread_once_t csp_once = PTHREAD_ONCE_INIT;

/* element_hash - "'sha256-BASE64'" of the text between <tag> and </tag>
 * (the first such element; no attributes), or "'none'" when absent. */
static void element_hash(const char *page, size_t len, const char *tag, char *out, size_t outlen)
{
	char open[16], close[16];
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	const char *a = memmem(page, len, open, strlen(open));
	const char *b = a ? memmem(a, len - (size_t)(a - page), close, strlen(close)) : NULL;
	if (!a || !b) {
		snprintf(out, outlen, "'none'");
		return;
	}
	a += strlen(open);
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)a, (size_t)(b - a), md);
	unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
	EVP_EncodeBlock(b64, md, sizeof(md));
	snprintf(out, outlen, "'sha256-%s'", (const char *)b64);
}

/* csp_init - the page's headers, once (any shard's thread may be first). */
static void csp_init(void)
{
	char script[64], style[64];
	const char *page = (const char *)api_dashboard_html;
	element_hash(page, api_dashboard_html_len, "script", script, sizeof(script));
	element_hash(page, api_dashboard_html_len, "style", style, sizeof(style));
	snprintf(csp_headers, sizeof(csp_headers),
	         "Content-Security-Policy: default-src 'none'; script-src %s; style-src %s; "
	         "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
	         "frame-ancestors 'none'\r\n"
	         "X-Content-Type-Options: nosniff\r\n"
	         "X-Frame-Options: DENY\r\n"
	         "Referrer-Policy: no-referrer\r\n"
	         "Cache-Control: no-cache\r\n",
	         script, style);
}

void api_dashboard(struct api_session *s, const char *arg)
{
	(void)arg;
	pthread_once(&csp_once, csp_init);
	http_respond(s, 200, "text/html; charset=utf-8", (const char *)api_dashboard_html,
	             api_dashboard_html_len, csp_headers);
}
