/* util.h - small utilities shared by every ringpost module.
 *
 * Allocation wrappers that never return NULL (they abort on exhaustion),
 * fatal-error helpers, clocks, big-endian helpers and string helpers. No
 * module state; everything here is safe to call from any thread.
 */
#ifndef RP_UTIL_H
#define RP_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#define RP_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define RP_MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define RP_MAX(a, b)                       ((a) > (b) ? (a) : (b))
#define RP_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define RP_UNUSED                          __attribute__((unused))
#define RP_PRINTF(f, a)                    __attribute__((format(printf, f, a)))
#define RP_NORETURN                        __attribute__((noreturn))
#define RP_LIKELY(x)                       __builtin_expect(!!(x), 1)
#define RP_UNLIKELY(x)                     __builtin_expect(!!(x), 0)

/* sysexits(3) codes used for the CLI's exit status. */
enum {
	RP_EX_OK = 0,
	RP_EX_USAGE = 64,
	RP_EX_DATAERR = 65,
	RP_EX_NOINPUT = 66,
	RP_EX_UNAVAILABLE = 69,
	RP_EX_SOFTWARE = 70,
	RP_EX_OSERR = 71,
	RP_EX_CANTCREAT = 73,
	RP_EX_IOERR = 74,
	RP_EX_TEMPFAIL = 75,
	RP_EX_PROTOCOL = 76,
	RP_EX_NOPERM = 77,
	RP_EX_CONFIG = 78,
};

/* xmalloc - malloc that aborts on failure; never returns NULL. */
void *xmalloc(size_t n);
/* xcalloc - zeroed array allocation; aborts on failure or overflow. */
void *xcalloc(size_t count, size_t size);
/* xrealloc - realloc that aborts on failure; n == 0 is a bug. */
void *xrealloc(void *p, size_t n);
/* xstrdup - copy a C string; caller frees. */
char *xstrdup(const char *s);
/* xstrndup - copy at most n bytes plus a NUL; caller frees. */
char *xstrndup(const char *s, size_t n);
/* xmemdup - copy n bytes; caller frees. */
void *xmemdup(const void *p, size_t n);

/* rp_panic - a broken invariant: log the message naming the function and abort. */
RP_NORETURN RP_PRINTF(2, 3) void rp_panic_at(const char *func, const char *fmt, ...);
#define rp_panic(...) rp_panic_at(__func__, __VA_ARGS__)
#define rp_assert(cond)                                                                            \
	do {                                                                                       \
		if (RP_UNLIKELY(!(cond)))                                                          \
			rp_panic_at(__func__, "assertion failed: %s", #cond);                      \
	} while (0)

/* rp_die - the environment is unusable: one line on stderr, exit(code). */
RP_NORETURN RP_PRINTF(2, 3) void rp_die(int code, const char *fmt, ...);

/* Clocks. rp_now_ms is wall-clock (unix epoch ms, for records and headers);
 * rp_mono_ms and rp_mono_ns are monotonic (for timeouts and durations). */
uint64_t rp_now_ms(void);
uint64_t rp_mono_ms(void);
uint64_t rp_mono_ns(void);

static inline void rp_put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)v;
		v >>= 8;
	}
}

static inline uint64_t rp_get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline void rp_put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static inline uint32_t rp_get_be32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* rp_utf8_len - the length of the well-formed UTF-8 sequence at p[0..n)
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF; ASCII is
 * a sequence of one) with its code point in *cp; 0 when there is none. */
size_t rp_utf8_len(const unsigned char *p, size_t n, uint32_t *cp);
/* rp_lower - ASCII lower-case in place; returns s. */
char *rp_lower(char *s);
/* rp_strcaseprefix - true when s starts with prefix, ASCII case-insensitive. */
bool rp_strcaseprefix(const char *s, size_t len, const char *prefix);
/* rp_hash64 - FNV-1a over bytes; stable across runs (used for sharding). */
uint64_t rp_hash64(const void *p, size_t n);
/* rp_random_bytes - n bytes from the kernel's CSPRNG (getrandom); false
 * when it cannot give them. */
bool rp_random_bytes(void *p, size_t n);

/* rp_id_format - a message id as 16 lower-case hex digits plus NUL. */
void rp_id_format(uint64_t id, char out[17]);
/* rp_iso_time - unix ms as "2026-12-07T09:00:00.000Z" (RFC 3339, UTC). */
void rp_iso_time(uint64_t ms, char out[32]);
/* rp_id_parse - parse 16 hex digits; returns false on anything else. */
bool rp_id_parse(const char *s, size_t n, uint64_t *id);

/* rp_rfc5322_date - "Fri, 27 Nov 2026 03:19:25 +0000" for unix ms; out >= 40. */
void rp_rfc5322_date(uint64_t unix_ms, char *out, size_t outlen);

/* rp_parse_duration_ms - "30s", "5m", "2h", "3d", "250ms" or bare seconds.
 * Returns false on syntax errors or overflow. */
bool rp_parse_duration_ms(const char *s, uint64_t *ms);
/* rp_parse_size - "10M", "512k", "1G" (binary multiples) or bytes. */
bool rp_parse_size(const char *s, uint64_t *bytes);
/* rp_raise_nofile - lift RLIMIT_NOFILE as far as allowed: root may raise
 * the hard limit up to fs.nr_open, anyone the soft one to the hard one.
 * Returns the soft limit now in force. */
uint64_t rp_raise_nofile(void);
/* rp_parse_u64 - a decimal number, no sign, no trailing garbage. */
bool rp_parse_u64(const char *s, uint64_t *v);

#endif
