/* util.c - allocation wrappers, fatal errors, clocks and parsing helpers.
 *
 * Everything here is stateless and thread-safe.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <strings.h>
#include <time.h>

#include "log.h"

static RP_NORETURN void oom(size_t n)
{
	fprintf(stderr, "ringpost: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *xcalloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);
	if (!p)
		oom(count * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	rp_assert(n > 0);
	void *q = realloc(p, n);
	if (!q)
		oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xmemdup(s, strlen(s) + 1);
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void *xmemdup(const void *p, size_t n)
{
	void *q = xmalloc(n);
	if (n)
		memcpy(q, p, n);
	return q;
}

void rp_panic_at(const char *func, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_flush();
	fprintf(stderr, "ringpost: panic in %s: %s\n", func, msg);
	abort();
}

void rp_die(int code, const char *fmt, ...)
{
	va_list ap;
	log_flush();
	fputs("ringpost: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

uint64_t rp_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t rp_mono_ms(void)
{
	return rp_mono_ns() / 1000000;
}

uint64_t rp_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

size_t rp_utf8_len(const unsigned char *p, size_t n, uint32_t *cp)
{
	if (!n)
		return 0;
	unsigned c = p[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c < 0xc2 || c > 0xf4)
		return 0;
	size_t k = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	if (n < k)
		return 0;
	uint32_t v = c & (0x7fu >> k);
	for (size_t i = 1; i < k; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (p[i] & 0x3fu);
	}
	if ((k == 3 && v < 0x800) || (k == 4 && v < 0x10000) || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return k;
}

char *rp_lower(char *s)
{
	for (char *p = s; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
	return s;
}

bool rp_strcaseprefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	if (len < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (tolower((unsigned char)s[i]) != tolower((unsigned char)prefix[i]))
			return false;
	return true;
}

uint64_t rp_hash64(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 1099511628211ull;
	}
	return h;
}

void rp_iso_time(uint64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

void rp_id_format(uint64_t id, char out[17])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 15; i >= 0; i--) {
		out[i] = hex[id & 15];
		id >>= 4;
	}
	out[16] = '\0';
}

bool rp_id_parse(const char *s, size_t n, uint64_t *id)
{
	uint64_t v = 0;
	if (n != 16)
		return false;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return false;
		v = (v << 4) | (uint64_t)d;
	}
	*id = v;
	return true;
}

void rp_rfc5322_date(uint64_t unix_ms, char *out, size_t outlen)
{
	static const char *days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, outlen, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
	         months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* add_digit - *r = *r * 10 + digit c; false when that passes UINT64_MAX. */
static bool add_digit(uint64_t *r, char c)
{
	unsigned d = (unsigned)(c - '0');
	if (*r > UINT64_MAX / 10 || (*r == UINT64_MAX / 10 && d > UINT64_MAX % 10))
		return false;
	*r = *r * 10 + d;
	return true;
}

bool rp_parse_u64(const char *s, uint64_t *v)
{
	uint64_t r = 0;
	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (!add_digit(&r, *s))
			return false;
	}
	*v = r;
	return true;
}

/* split_number - leading decimal digits of s into *v; returns the suffix. */
static const char *split_number(const char *s, uint64_t *v, bool *ok)
{
	uint64_t r = 0;
	const char *p = s;
	*ok = false;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p < '0' || *p > '9')
		return p;
	for (; *p >= '0' && *p <= '9'; p++)
		if (!add_digit(&r, *p))
			return p;
	*ok = true;
	*v = r;
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
	if (a && b > UINT64_MAX / a)
		return false;
	*out = a * b;
	return true;
}

bool rp_parse_duration_ms(const char *s, uint64_t *ms)
{
	bool ok;
	uint64_t v, mult;
	const char *suf = split_number(s, &v, &ok);
	if (!ok)
		return false;
	if (!strcmp(suf, "") || !strcmp(suf, "s"))
		mult = 1000;
	else if (!strcmp(suf, "ms"))
		mult = 1;
	else if (!strcmp(suf, "m"))
		mult = 60 * 1000;
	else if (!strcmp(suf, "h"))
		mult = 3600 * 1000;
	else if (!strcmp(suf, "d"))
		mult = 86400 * 1000;
	else
		return false;
	return mul_ok(v, mult, ms);
}

bool rp_parse_size(const char *s, uint64_t *bytes)
{
	bool ok;
	uint64_t v, mult;
	const char *suf = split_number(s, &v, &ok);
	if (!ok)
		return false;
	if (!strcmp(suf, "") || !strcasecmp(suf, "b"))
		mult = 1;
	else if (!strcasecmp(suf, "k") || !strcasecmp(suf, "kb") || !strcasecmp(suf, "kib"))
		mult = 1024;
	else if (!strcasecmp(suf, "m") || !strcasecmp(suf, "mb") || !strcasecmp(suf, "mib"))
		mult = 1024 * 1024;
	else if (!strcasecmp(suf, "g") || !strcasecmp(suf, "gb") || !strcasecmp(suf, "gib"))
		mult = 1024ull * 1024 * 1024;
	else if (!strcasecmp(suf, "t") || !strcasecmp(suf, "tb") || !strcasecmp(suf, "tib"))
		mult = 1024ull * 1024 * 1024 * 1024;
	else
		return false;
	return mul_ok(v, mult, bytes);
}

uint64_t rp_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	rlim_t want = 1048576;
	FILE *f = fopen("/proc/sys/fs/nr_open", "r");
	if (f) {
		unsigned long v;
		if (fscanf(f, "%lu", &v) == 1 && v > 0)
			want = v;
		fclose(f);
	}
	if (rl.rlim_max < want) {
		struct rlimit up = { .rlim_cur = want, .rlim_max = want };
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return want;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur;
}

bool rp_random_bytes(void *p, size_t n)
{
	unsigned char *w = p;
	while (n) {
		ssize_t r = getrandom(w, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		w += r;
		n -= (size_t)r;
	}
	return true;
}
