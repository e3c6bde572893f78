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

void log_quote(char *out, size_t outlen, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	rp_assert(outlen >= 3);
	out[o++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 5 >= outlen)
			break;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
}
