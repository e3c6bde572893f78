/* log.c - structured, per-thread buffered logging (see log.h). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_BUF_SIZE 65536

static _Atomic int log_fd = 2;
static _Atomic int log_max = LOG_INFO;
static _Atomic int log_format = LOG_FORMAT_TEXT;

/* The file's descriptor: made by the first log_open of a file and never
 * closed after that (only replaced with dup3), so that a thread holding
 * the number from log_fd always writes to an open file. Guarded by
 * open_lock, like the path log_reopen opens again ("" = stderr). */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static int file_fd = -1;
static char file_path[4096];

struct log_thread {
	char name[16];
	bool buffered;
	size_t len;
	time_t stamp_sec;        /* second of the cached timestamp prefix */
	char stamp[24];          /* "2026-11-27T03:19:25." */
	char body[LOG_LINE_MAX]; /* JSON format: the text line's body, before conversion */
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

/* swap_in - fd (just opened) becomes the log file: it takes file_fd's
 * number when there is one (dup3 replaces atomically: a write in flight
 * goes wholly to the old file or the new). Called under open_lock. */
static void swap_in(int fd)
{
	if (file_fd < 0) {
		file_fd = fd;
	} else {
		while (dup3(fd, file_fd, O_CLOEXEC) < 0)
			if (errno != EINTR && errno != EBUSY)
				rp_panic("log: dup3 failed: %s", strerror(errno));
		close(fd);
	}
	atomic_store(&log_fd, file_fd);
}

/* open_file - path opened for appending, or -1 (errno set). */
static int open_file(const char *path)
{
	int fd;
	do
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	while (fd < 0 && errno == EINTR);
	return fd;
}

bool log_open(const char *path)
{
	bool ok = true;
	pthread_mutex_lock(&open_lock);
	if (!path || !*path || !strcmp(path, "stderr")) {
		/* Never close the file's number: a thread may hold it. Point
		 * it at stderr too, and give up the file. */
		atomic_store(&log_fd, 2);
		if (file_fd >= 0)
			while (dup3(2, file_fd, O_CLOEXEC) < 0 &&
			       (errno == EINTR || errno == EBUSY))
				;
		file_path[0] = '\0';
	} else if (strlen(path) >= sizeof(file_path)) {
		errno = ENAMETOOLONG;
		ok = false;
	} else {
		int fd = open_file(path);
		ok = fd >= 0;
		if (ok) {
			swap_in(fd);
			snprintf(file_path, sizeof(file_path), "%s", path);
		}
	}
	pthread_mutex_unlock(&open_lock);
	return ok;
}

/* rotated - the path no longer names the file we write to (renamed,
 * removed or replaced): then it is worth opening again. A path still
 * naming our file is left alone: after [server] user it may be a file
 * root made that the user could not open again. */
static bool rotated(void)
{
	struct stat ours, now;
	if (fstat(file_fd, &ours) || stat(file_path, &now))
		return true;
	return ours.st_dev != now.st_dev || ours.st_ino != now.st_ino;
}

bool log_reopen(void)
{
	bool ok = true;
	pthread_mutex_lock(&open_lock);
	if (file_path[0] && rotated()) {
		int fd = open_file(file_path);
		ok = fd >= 0;
		if (ok)
			swap_in(fd);
	}
	pthread_mutex_unlock(&open_lock);
	return ok;
}

void log_set_format(enum log_format format)
{
	atomic_store(&log_format, (int)format);
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
	bool json = atomic_load_explicit(&log_format, memory_order_relaxed) == LOG_FORMAT_JSON;
	if (LOG_BUF_SIZE - t->len < (json ? LOG_JSON_MAX : LOG_LINE_MAX))
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
	size_t len;
	va_list ap;
	va_start(ap, fmt);
	if (json) {
		/* The text body into the thread's scratch, then converted. */
		char when[48];
		snprintf(when, sizeof(when), "%s%03ldZ", t->stamp, ts.tv_nsec / 1000000);
		int m = vsnprintf(t->body, sizeof(t->body), fmt, ap);
		size_t bl = m < 0 ? 0 : RP_MIN((size_t)m, sizeof(t->body) - 1);
		len = log_json(w, LOG_JSON_MAX - 1, when, level_names[level], t->name, t->body, bl);
	} else {
		size_t room = LOG_LINE_MAX - 1;
		int n = snprintf(w, room, "%s%03ldZ %s %s: ", t->stamp, ts.tv_nsec / 1000000,
		                 level_names[level], t->name);
		int m = vsnprintf(w + n, room - (size_t)n, fmt, ap);
		if (m < 0)
			m = 0;
		len = (size_t)n + RP_MIN((size_t)m, room - (size_t)n - 1);
	}
	va_end(ap);
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

/* ---- JSON lines ---------------------------------------------------------- */

/* Past jw.cap: room for a cut string's end ("...\""), the '}' and the NUL. */
#define JSON_RESERVE   8
#define JSON_KEY_MAX   64 /* a longer "key=" is a word, not a key */
#define JSON_KEYS_SEEN 64 /* keys remembered for renaming repeats */

/* jw - a JSON line being written: whole pieces or nothing, and once one
 * does not fit, nothing more but the closing bytes. */
struct jw {
	char *p;
	size_t len, cap;
	bool full;
};

/* jw_put - s[0..n) when it fits below cap; false (and full) otherwise. */
static bool jw_put(struct jw *w, const void *s, size_t n)
{
	if (w->full || w->len > w->cap || n > w->cap - w->len) {
		w->full = true;
		return false;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
	return true;
}

/* jw_force - closing bytes: JSON_RESERVE keeps room for them. */
static void jw_force(struct jw *w, const char *s)
{
	size_t n = strlen(s);
	memcpy(w->p + w->len, s, n);
	w->len += n;
}

/* json_piece - the JSON string bytes for p[0..n)'s first character into
 * e[6]; returns their count, *take the bytes used. What log_value would
 * escape is escaped here too: controls, DEL, and well-formed UTF-8 that
 * shown_utf8 refuses as \uXXXX (all in the BMP), other bytes >= 0x80 as
 * \u00XX. */
static size_t json_piece(const unsigned char *p, size_t n, char e[6], size_t *take)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = p[0];
	uint32_t cp = c;
	*take = 1;
	if (c >= 0x80) {
		size_t k = shown_utf8(p, n);
		if (k) {
			memcpy(e, p, k);
			*take = k;
			return k;
		}
		k = rp_utf8_len(p, n, &cp);
		if (k >= 2)
			*take = k;
		else
			cp = c;
	} else if (c >= ' ' && c != 0x7f && c != '"' && c != '\\') {
		e[0] = (char)c;
		return 1;
	} else if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
		e[0] = '\\';
		e[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : (char)c;
		return 2;
	}
	e[0] = '\\';
	e[1] = 'u';
	for (int i = 0; i < 4; i++)
		e[2 + i] = hex[(cp >> (12 - 4 * i)) & 15];
	return 6;
}

/* jw_chars - s[0..n) inside a string, escaped. */
static void jw_chars(struct jw *w, const void *s, size_t n)
{
	const unsigned char *p = s;
	char e[6];
	size_t take;
	for (size_t i = 0; i < n && !w->full; i += take)
		jw_put(w, e, json_piece(p + i, n - i, e, &take));
}

/* jw_key - ,"key_N": (the suffix when dup > 0) and then extra[0..xn) (a
 * number, or the opening quote of a string, <= 16 bytes) in one piece;
 * false when it did not fit. */
static bool jw_key(struct jw *w, const char *k, size_t kl, unsigned dup, const char *extra,
                   size_t xn)
{
	char b[JSON_KEY_MAX + 48];
	rp_assert(kl <= JSON_KEY_MAX && xn <= 16);
	int n = snprintf(b, sizeof(b), "%s\"%.*s", w->len > 1 ? "," : "", (int)kl, k);
	if (dup)
		n += snprintf(b + n, sizeof(b) - (size_t)n, "_%u", dup + 1);
	n += snprintf(b + n, sizeof(b) - (size_t)n, "\":%.*s", (int)xn, extra);
	return jw_put(w, b, (size_t)n);
}

/* jw_string - one member with a string value s[0..n). */
static void jw_string(struct jw *w, const char *k, unsigned dup, const void *s, size_t n)
{
	if (!jw_key(w, k, strlen(k), dup, "\"", 1))
		return;
	jw_chars(w, s, n);
	jw_force(w, w->full ? "...\"" : "\"");
}

/* A token of a line's body: a key=value pair or a word. */
struct log_tok {
	const char *s; /* the token's text */
	size_t n;
	size_t klen;   /* key=value: the key's length; 0 for a word */
	const char *v; /* the value (inside the quotes when quoted) */
	size_t vn;
	bool quoted;
};

static bool key_byte(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* next_tok - the token of b[*pos..n) into *t, *pos past it; false at
 * the end. A quoted value ends at its closing quote, which a blank or the
 * end must follow (else the token is a word); one cut by the end of the
 * line runs to the end. */
static bool next_tok(const char *b, size_t n, size_t *pos, struct log_tok *t)
{
	size_t i = *pos;
	while (i < n && b[i] == ' ')
		i++;
	if (i >= n) {
		*pos = n;
		return false;
	}
	memset(t, 0, sizeof(*t));
	t->s = b + i;
	size_t k = i, end = i;
	while (k < n && k - i <= JSON_KEY_MAX && key_byte(b[k]))
		k++;
	if (k > i && k - i <= JSON_KEY_MAX && k < n && b[k] == '=') {
		size_t j = k + 1, e = j;
		if (j < n && b[j] == '"') {
			for (e = j + 1; e < n && b[e] != '"';)
				e += b[e] == '\\' && e + 1 < n ? 2 : 1;
			if (e >= n || e + 1 == n || b[e + 1] == ' ') {
				t->klen = k - i;
				t->quoted = true;
				t->v = b + j + 1;
				t->vn = RP_MIN(e, n) - (j + 1);
				end = RP_MIN(e + 1, n);
			}
		} else {
			while (e < n && b[e] != ' ')
				e++;
			t->klen = k - i;
			t->v = b + j;
			t->vn = e - j;
			end = e;
		}
	}
	if (!t->klen)
		for (end = i; end < n && b[end] != ' ';)
			end++;
	t->n = end - i;
	*pos = end;
	return true;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* unquote - a quoted value's text with its escapes undone into out (>= n
 * bytes); returns the length. An unknown escape stays as it is. */
static size_t unquote(const char *s, size_t n, unsigned char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char e = i + 1 < n ? s[i + 1] : 0;
		int hi, lo;
		if (c == '\\' && (e == 'n' || e == 'r' || e == 't' || e == '"' || e == '\\')) {
			c = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : (unsigned char)e;
			i++;
		} else if (c == '\\' && e == 'x' && i + 3 < n && (hi = hex_value(s[i + 2])) >= 0 &&
		           (lo = hex_value(s[i + 3])) >= 0) {
			c = (unsigned char)(hi << 4 | lo);
			i += 3;
		}
		out[o++] = c;
	}
	return o;
}

/* is_number - a plain decimal integer JSON readers keep exactly. */
static bool is_number(const char *s, size_t n)
{
	size_t i = n && s[0] == '-';
	if (i >= n || n - i > 15 || (s[i] == '0' && n - i > 1))
		return false;
	for (; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* key_dup - how often k was seen before (the reserved names count); k is
 * remembered while there is room. */
static unsigned key_dup(const char *seen[], size_t seen_len[], size_t *nseen, const char *k,
                        size_t kl)
{
	unsigned dup = 0;
	for (size_t i = 0; i < *nseen; i++)
		dup += seen_len[i] == kl && !memcmp(seen[i], k, kl);
	if (*nseen < JSON_KEYS_SEEN) {
		seen[*nseen] = k;
		seen_len[(*nseen)++] = kl;
	}
	return dup;
}

/* json_msg - the body's words (the event's excepted), as one "msg"
 * member: words next to each other keep the blanks between them, words
 * apart (fields between) get one. */
static void json_msg(struct jw *w, const char *b, size_t n, size_t pos)
{
	struct log_tok t;
	const char *prev_end = NULL;
	bool started = false, adjacent = false;
	while (next_tok(b, n, &pos, &t) && !w->full) {
		if (t.klen) {
			adjacent = false;
			continue;
		}
		if (!started) {
			if (!jw_key(w, "msg", 3, 0, "\"", 1))
				return;
			started = true;
		} else if (adjacent) {
			jw_chars(w, prev_end, (size_t)(t.s - prev_end));
		} else {
			jw_chars(w, " ", 1);
		}
		jw_chars(w, t.s, t.n);
		prev_end = t.s + t.n;
		adjacent = true;
	}
	if (started)
		jw_force(w, w->full ? "...\"" : "\"");
}

/* json_fields - the body's key=value tokens as members. */
static void json_fields(struct jw *w, const char *b, size_t n, size_t pos)
{
	const char *seen[JSON_KEYS_SEEN] = { "time", "level", "thread", "event", "msg" };
	size_t seen_len[JSON_KEYS_SEEN] = { 4, 5, 6, 5, 3 }, nseen = 5;
	unsigned char dec[LOG_LINE_MAX];
	struct log_tok t;
	while (next_tok(b, n, &pos, &t) && !w->full) {
		if (!t.klen)
			continue;
		unsigned dup = key_dup(seen, seen_len, &nseen, t.s, t.klen);
		if (!t.quoted && is_number(t.v, t.vn)) {
			jw_key(w, t.s, t.klen, dup, t.v, t.vn);
			continue;
		}
		if (!jw_key(w, t.s, t.klen, dup, "\"", 1))
			break;
		if (t.quoted)
			jw_chars(w, dec, unquote(t.v, t.vn, dec));
		else
			jw_chars(w, t.v, t.vn);
		jw_force(w, w->full ? "...\"" : "\"");
	}
}

size_t log_json(char *out, size_t outlen, const char *time, const char *level, const char *thread,
                const char *body, size_t n)
{
	rp_assert(outlen >= 64);
	struct jw w = { .p = out, .cap = outlen - JSON_RESERVE };
	n = RP_MIN(n, (size_t)LOG_LINE_MAX);
	jw_put(&w, "{", 1);
	jw_string(&w, "time", 0, time, strlen(time));
	jw_string(&w, "level", 0, level, strlen(level));
	jw_string(&w, "thread", 0, thread, strlen(thread));
	size_t ev = 0;
	while (ev < n && body[ev] != ' ')
		ev++;
	jw_string(&w, "event", 0, body, ev && body[ev - 1] == ':' ? ev - 1 : ev);
	json_msg(&w, body, n, ev);
	json_fields(&w, body, n, ev);
	jw_force(&w, "}");
	out[w.len] = '\0';
	return w.len;
}
