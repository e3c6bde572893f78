/* log.c - structured, per-thread buffered logging (see log.h). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define LOG_BUF_SIZE 65536
#define LOG_LINE_MAX 4096

static _Atomic int log_fd = 2;
static _Atomic int log_max = LOG_INFO;

struct log_thread {
	char name[16];
	bool buffered;
	size_t len;
	time_t stamp_sec; /* second of the cached timestamp prefix */
	char stamp[24];   /* "2026-11-27T03:19:25." */
	char data[LOG_BUF_SIZE];
};

static _Thread_local struct log_thread *lt;
static pthread_key_t lt_key; /* frees a thread's state when the thread exits */
static pthread_once_t lt_once = PTHREAD_ONCE_INIT;

static const char *level_names[] = { "error", "warn", "info", "debug" };

/* thread_gone - a thread that logged is exiting: write what it buffered and
 * free its state (without this, every exited thread leaks it). */
static void thread_gone(void *p)
{
	lt = p;
	log_flush();
	lt = NULL;
	free(p);
}

static void key_create(void)
{
	if (pthread_key_create(&lt_key, thread_gone))
		rp_panic("pthread_key_create failed");
}

static struct log_thread *thread_state(void)
{
	if (!lt) {
		lt = xcalloc(1, sizeof(*lt));
		strcpy(lt->name, "main");
		lt->stamp_sec = -1;
		pthread_once(&lt_once, key_create);
		pthread_setspecific(lt_key, lt);
	}
	return lt;
}

bool log_open(const char *path)
{
	if (!path || !*path || !strcmp(path, "stderr")) {
		atomic_store(&log_fd, 2);
		return true;
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return false;
	int old = atomic_exchange(&log_fd, fd);
	if (old > 2)
		close(old);
	return true;
}

void log_set_level(enum log_level level)
{
	atomic_store(&log_max, (int)level);
}

bool log_level_parse(const char *s, enum log_level *level)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(level_names); i++)
		if (!strcmp(s, level_names[i])) {
			*level = (enum log_level)i;
			return true;
		}
	return false;
}

bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&log_max, memory_order_relaxed);
}

void log_set_thread(const char *name)
{
	struct log_thread *t = thread_state();
	snprintf(t->name, sizeof(t->name), "%s", name);
}

void log_set_buffered(bool on)
{
	struct log_thread *t = thread_state();
	if (!on)
		log_flush();
	t->buffered = on;
}

void log_flush(void)
{
	struct log_thread *t = lt;
	if (!t || !t->len)
		return;
	int fd = atomic_load(&log_fd);
	size_t done = 0;
	while (done < t->len) {
		ssize_t n = write(fd, t->data + done, t->len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* nowhere to log: drop rather than spin */
		done += (size_t)n;
	}
	t->len = 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	struct log_thread *t = thread_state();
	if (LOG_BUF_SIZE - t->len < LOG_LINE_MAX)
		log_flush();

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != t->stamp_sec) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		strftime(t->stamp, sizeof(t->stamp), "%Y-%m-%dT%H:%M:%S.", &tm);
		t->stamp_sec = ts.tv_sec;
	}
	char *w = t->data + t->len;
	size_t room = LOG_LINE_MAX - 1;
	int n = snprintf(w, room, "%s%03ldZ %s %s: ", t->stamp, ts.tv_nsec / 1000000,
	                 level_names[level], t->name);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(w + n, room - (size_t)n, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + RP_MIN((size_t)m, room - (size_t)n - 1);
	w[len++] = '\n';
	t->len += len;
	if (!t->buffered || level == LOG_ERROR)
		log_flush();
}

/* ---- field values ------------------------------------------------------ */

/* plain_byte - c may stand in an unquoted value. */
static bool plain_byte(unsigned char c)
{
	return c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
}

/* shown_utf8 - the length of a well-formed UTF-8 character at p that a
 * reader can see for what it is (no C1 controls, no line or paragraph
 * separators, no bidirectional overrides), or 0: then its bytes are
 * escaped one by one. */
static size_t shown_utf8(const unsigned char *p, size_t n)
{
	uint32_t cp;
	size_t k = rp_utf8_len(p, n, &cp);
	if (k < 2 || cp < 0xa0 || cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069) || cp == 0xfeff)
		return 0;
	return k;
}

/* piece - the bytes that show p[0..n)'s first character in a value
 * (quoted: escaped) into e[4]; returns their count, *take the bytes used. */
static size_t piece(const unsigned char *p, size_t n, bool quote, char e[4], size_t *take)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = p[0];
	*take = 1;
	if (!quote || (c >= ' ' && c < 0x7f && c != '"' && c != '\\')) {
		e[0] = (char)c;
		return 1;
	}
	if (c == '"' || c == '\\') {
		e[0] = '\\';
		e[1] = (char)c;
		return 2;
	}
	if (c == '\n' || c == '\r' || c == '\t') {
		e[0] = '\\';
		e[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		return 2;
	}
	size_t k = c >= 0x80 ? shown_utf8(p, n) : 0;
	if (k) {
		memcpy(e, p, k);
		*take = k;
		return k;
	}
	e[0] = '\\';
	e[1] = 'x';
	e[2] = hex[c >> 4];
	e[3] = hex[c & 15];
	return 4;
}

/* field - pre s post as one value into out; quoted when force or when a
 * byte needs it. */
static const char *field(char *out, size_t outlen, const char *pre, const char *s, size_t n,
                         const char *post, bool force)
{
	size_t pl = strlen(pre), ql = strlen(post);
	rp_assert(outlen >= 8 && pl <= 1 && ql <= 1);
	const unsigned char *p = (const unsigned char *)s;
	bool quote = force;
	for (size_t i = 0; i < n && !quote; i++)
		quote = !plain_byte(p[i]);
	/* Bytes left for s itself: quotes, pre, post and the NUL apart. */
	size_t room = outlen - 1 - (quote ? 2 : 0) - pl - ql, need = 0, take;
	char e[4];
	for (size_t i = 0; i < n && need <= room; i += take)
		need += piece(p + i, n - i, quote, e, &take);
	size_t o = 0, used = 0;
	if (quote)
		out[o++] = '"';
	memcpy(out + o, pre, pl);
	o += pl;
	for (size_t i = 0; i < n; i += take) {
		size_t el = piece(p + i, n - i, quote, e, &take);
		/* Cut: leave room for the "..." (escapes are never split). */
		if (need > room && used + el + 3 > room) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, e, el);
		o += el;
		used += el;
	}
	memcpy(out + o, post, ql);
	o += ql;
	if (quote)
		out[o++] = '"';
	out[o] = '\0';
	return out;
}

const char *log_value(char *out, size_t outlen, const char *s, size_t n)
{
	return field(out, outlen, "", s, n, "", n == 0);
}

const char *log_addr(char *out, size_t outlen, const char *s, size_t n)
{
	return field(out, outlen, "<", s, n, ">", false);
}

void log_quote(char *out, size_t outlen, const char *s, size_t n)
{
	field(out, outlen, "", s, n, "", true);
}
