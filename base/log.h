/* log.h - structured, per-thread buffered logging.
 *
 * One line per event: "2026-11-27T03:19:25.123Z info shard0: event k=v ...".
 * Event-loop threads call log_set_buffered(true) and log_flush() once per
 * loop iteration, so a busy loop makes one write(2) per iteration, not one per
 * line. Other threads write each line at once. Never log secrets.
 */
#ifndef RP_LOG_H
#define RP_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

enum log_level {
	LOG_ERROR,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
};

/* log_open - send log lines to path ("" or "stderr" = standard error).
 * Returns false (errno set) when the file cannot be opened. */
bool log_open(const char *path);
/* log_set_level - lines above level are dropped. */
void log_set_level(enum log_level level);
/* log_level_parse - "error", "warn", "info", "debug"; false otherwise. */
bool log_level_parse(const char *s, enum log_level *level);
/* log_enabled - whether a line at level would be written. */
bool log_enabled(enum log_level level);
/* log_set_thread - name the calling thread in its lines (copied, <= 15 chars). */
void log_set_thread(const char *name);
/* log_set_buffered - buffer this thread's lines until log_flush. */
void log_set_buffered(bool on);
/* log_msg - format and log one line (a trailing newline is added). */
RP_PRINTF(2, 3) void log_msg(enum log_level level, const char *fmt, ...);
/* log_flush - write this thread's buffered lines. */
void log_flush(void);
/* Client-supplied strings (addresses, EHLO names, AUTH users, replies of
 * remote servers, tags) go into key=value fields only through log_value,
 * log_addr or log_quote, so that none can end its field early or forge
 * another ("a key=value"@x). A value is written as it is when every byte
 * is printable ASCII other than blank, '"', '=' and '\'; otherwise it is
 * double-quoted with \" \\ \n \r \t and \xHH escapes (bytes >= 0x80
 * too). Output is cut to fit outlen (>= 8), "..." marking the cut, and
 * always NUL-terminated. LOG_VALUE_MAX holds any SMTP line escaped. */
#define LOG_VALUE_MAX 2200

/* log_value - s[0..n) as one field value (quoted only when needed). Returns out. */
const char *log_value(char *out, size_t outlen, const char *s, size_t n);
/* log_addr - "<" s[0..n) ">" as one field value: from=<a@x.test>, or
 * from="<\"a key=value\"@x>" when the address needs quoting. Returns out. */
const char *log_addr(char *out, size_t outlen, const char *s, size_t n);
/* log_quote - s[0..n) always double-quoted (reply="250 Ok"), escaped as above. */
void log_quote(char *out, size_t outlen, const char *s, size_t n);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_enabled(LOG_DEBUG))                                                        \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                           \
	} while (0)

#endif
