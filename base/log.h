/* log.h - structured, per-thread buffered logging.
 *
 * One line per event: "2026-11-27T03:19:25.123Z info shard0: event k=v ...",
 * or with log_set_format(LOG_FORMAT_JSON) the same line as one JSON object:
 * {"time":"2026-11-27T03:19:25.123Z","level":"info","thread":"shard0",
 *  "event":"event","k":"v",...} (see log_json for the rules).
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

enum log_format {
	LOG_FORMAT_TEXT, /* time level thread: event k=v ... */
	LOG_FORMAT_JSON, /* one JSON object per line (log_json) */
};

/* log_open - send log lines to path ("" or "stderr" = standard error),
 * opened O_APPEND. Safe while other threads log: a file takes over the fd
 * number of the previous file (dup3), so no thread ever writes to a closed
 * or reused descriptor and every line lands whole in one file or the
 * other; standard error itself is never closed or replaced. Returns false
 * (errno set, the previous destination kept) when the file cannot be
 * opened. */
bool log_open(const char *path);
/* log_reopen - open the file of the last log_open again when its path no
 * longer names the file being written (logrotate renamed it); true
 * without doing anything otherwise, or when logging to standard error.
 * Returns false (errno set, the old file kept) when it cannot be opened. */
bool log_reopen(void);
/* log_set_format - text or JSON lines from now on (every thread). */
void log_set_format(enum log_format format);
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

/* log_json - one log line as a JSON object (no newline) into out, which
 * is always NUL-terminated; returns its length. time, level and thread are
 * the line's prefix, body[0..n) what follows "thread: ". The body's first
 * word is "event" (a trailing ':' dropped); each following key=value token
 * (key: up to 64 letters, digits, '_', '.', '-') becomes a member, its value
 * unescaped by the rules above when quoted; an unquoted value that is a
 * plain decimal integer (no leading zero, at most 15 digits) becomes a
 * JSON number, anything else a string. Words that are no key=value token
 * are joined into one "msg" member (before the fields). A key seen before
 * (or one of time, level, thread, event, msg) becomes key_2, key_3, ....
 * Strings are valid JSON whatever the bytes: control characters, DEL, and
 * well-formed UTF-8 that log_value would escape as \uXXXX; bytes that are
 * not UTF-8 as \u00XX (their Latin-1 reading). Only the first
 * LOG_LINE_MAX bytes of body are read; output over outlen (>= 64) is cut
 * ("..." ends the cut string) and stays a valid object. Allocates
 * nothing. */
#define LOG_LINE_MAX 4096
#define LOG_JSON_MAX 8192
size_t log_json(char *out, size_t outlen, const char *time, const char *level, const char *thread,
                const char *body, size_t n);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_enabled(LOG_DEBUG))                                                        \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                           \
	} while (0)

#endif
