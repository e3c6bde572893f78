/* test_log.c - log field values (base/log.c): client-supplied strings are
 * written so that they can never end their own key=value field or forge
 * another: plain when harmless, else quoted with escapes; cut to fit with
 * quotes kept balanced; and a real log line read back field by field.
 * JSON lines (log_json): every line parsed with jansson, field by field;
 * and the log file reopened (log_reopen) while threads write: no line
 * lost or split.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

struct value_case {
	const char *in;
	size_t n;          /* 0 = strlen(in) */
	const char *value; /* log_value */
	const char *addr;  /* log_addr */
};

static const struct value_case cases[] = {
	{ "a@x.test", 0, "a@x.test", "<a@x.test>" },
	{ "", 0, "\"\"", "<>" },
	{ "\"a key=value\"@x", 0, "\"\\\"a key=value\\\"@x\"", "\"<\\\"a key=value\\\"@x>\"" },
	{ "a=b@x", 0, "\"a=b@x\"", "\"<a=b@x>\"" },
	{ "a b", 0, "\"a b\"", "\"<a b>\"" },
	{ "back\\slash", 0, "\"back\\\\slash\"", "\"<back\\\\slash>\"" },
	{ "line\r\nstatus=delivered", 0, "\"line\\r\\nstatus=delivered\"",
	  "\"<line\\r\\nstatus=delivered>\"" },
	{ "tab\there", 0, "\"tab\\there\"", "\"<tab\\there>\"" },
	{ "nul\0x", 5, "\"nul\\x00x\"", "\"<nul\\x00x>\"" },
	{ "esc\x1b[31m", 0, "\"esc\\x1b[31m\"", "\"<esc\\x1b[31m>\"" },
	{ "del\x7f", 0, "\"del\\x7f\"", "\"<del\\x7f>\"" },
	/* Well-formed UTF-8 stays readable (quoted); malformed bytes, C1
	 * controls, separators and bidi overrides are escaped. */
	{ "d\xc3\xa9j\xc3\xa0@x.test", 0, "\"d\xc3\xa9j\xc3\xa0@x.test\"",
	  "\"<d\xc3\xa9j\xc3\xa0@x.test>\"" },
	{ "bad\xc3(", 0, "\"bad\\xc3(\"", "\"<bad\\xc3(>\"" },
	{ "c1\xc2\x85", 0, "\"c1\\xc2\\x85\"", "\"<c1\\xc2\\x85>\"" },
	{ "ls\xe2\x80\xa8", 0, "\"ls\\xe2\\x80\\xa8\"", "\"<ls\\xe2\\x80\\xa8>\"" },
	{ "rlo\xe2\x80\xae", 0, "\"rlo\\xe2\\x80\\xae\"", "\"<rlo\\xe2\\x80\\xae>\"" },
	{ "<x@y>", 0, "<x@y>", "<<x@y>>" },
};

Test(log, values_and_addresses)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct value_case *c = &cases[i];
		size_t n = c->n ? c->n : strlen(c->in);
		char out[LOG_VALUE_MAX];
		cr_assert_str_eq(log_value(out, sizeof(out), c->in, n), c->value, "case %zu", i);
		cr_assert_str_eq(log_addr(out, sizeof(out), c->in, n), c->addr, "case %zu", i);
	}
}

Test(log, quote_always_quotes)
{
	char out[64];
	log_quote(out, sizeof(out), "250 2.0.0 Ok", 12);
	cr_assert_str_eq(out, "\"250 2.0.0 Ok\"");
	log_quote(out, sizeof(out), "plain", 5);
	cr_assert_str_eq(out, "\"plain\"");
	log_quote(out, sizeof(out), "say \"hi\"", 8);
	cr_assert_str_eq(out, "\"say \\\"hi\\\"\"");
}

/* Cut to every size: NUL-terminated within outlen, quotes balanced, an
 * escape never split, "..." marking the cut. */
Test(log, cut_to_fit)
{
	const char *in = "\"a key=value\"@x\r\n\xc3\xa9\x01 status=delivered reply=\"250 Ok\"";
	size_t n = strlen(in);
	char full[LOG_VALUE_MAX];
	log_addr(full, sizeof(full), in, n);
	for (size_t len = 8; len <= strlen(full) + 2; len++) {
		char *out = malloc(len);
		memset(out, '#', len);
		log_addr(out, len, in, n);
		size_t ol = strlen(out);
		cr_assert_lt(ol, len, "size %zu: '%s'", len, out);
		cr_assert_eq(out[0], '"', "size %zu: '%s'", len, out);
		cr_assert_eq(out[ol - 1], '"', "size %zu: '%s'", len, out);
		cr_assert_eq(out[ol - 2], '>', "size %zu: '%s'", len, out);
		if (ol < strlen(full))
			cr_assert_not_null(strstr(out, "...>\""), "size %zu: '%s'", len, out);
		else
			cr_assert_str_eq(out, full, "size %zu", len);
		/* Between the quotes: no bare quote, every backslash escapes. */
		for (size_t i = 1; i + 1 < ol; i++) {
			cr_assert_neq(out[i], '"', "size %zu: bare quote in '%s'", len, out);
			if (out[i] == '\\') {
				cr_assert(i + 2 < ol, "size %zu: cut escape in '%s'", len, out);
				if (out[i + 1] == 'x')
					i += 3;
				else
					i++;
			}
		}
		free(out);
	}
}

/* fields - split a log line's text after the prefix into key=value pairs
 * the way a logfmt reader does; returns how many, values unescaped. */
static unsigned fields(const char *s, char keys[][32], char vals[][256], unsigned max)
{
	unsigned n = 0;
	while (*s && n < max) {
		while (*s == ' ')
			s++;
		const char *eq = strchr(s, '=');
		const char *sp = strchr(s, ' ');
		if (!eq || (sp && sp < eq)) { /* a bare word */
			s = sp ? sp : s + strlen(s);
			continue;
		}
		snprintf(keys[n], 32, "%.*s", (int)(eq - s), s);
		s = eq + 1;
		size_t o = 0;
		if (*s == '"') {
			s++;
			while (*s && *s != '"') {
				char c = *s++;
				if (c == '\\' && *s) {
					c = *s++;
					if (c == 'n')
						c = '\n';
					else if (c == 'r')
						c = '\r';
					else if (c == 'x') {
						unsigned v;
						sscanf(s, "%2x", &v);
						c = (char)v;
						s += 2;
					}
				}
				if (o + 1 < 256)
					vals[n][o++] = c;
			}
			if (*s == '"')
				s++;
		} else {
			while (*s && *s != ' ')
				if (o + 1 < 256)
					vals[n][o++] = *s++;
				else
					s++;
		}
		vals[n][o] = '\0';
		n++;
	}
	return n;
}

/* A forged field in an address or a reply stays inside its own field of a
 * real log line (written by log_msg to a file and read back). */
Test(log, forged_fields_stay_inside)
{
	char path[] = "/tmp/rp_test_log_XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert(log_open(path));
	const char *rcpt = "\"a status=delivered dsn=2.0.0\"@x.test";
	const char *reply = "550 5.1.1 no\r\n id=forged status=delivered";
	char a[LOG_VALUE_MAX], r[LOG_VALUE_MAX];
	log_info("delivery id=0011 rcpt=%s status=bounced reply=%s",
	         log_addr(a, sizeof(a), rcpt, strlen(rcpt)),
	         log_value(r, sizeof(r), reply, strlen(reply)));
	log_flush();
	log_open("stderr");
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	char line[4096];
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_assert_null(fgets(line + strlen(line), (int)(sizeof(line) - strlen(line)), f),
	               "the log line was split: %s", line);
	fclose(f);
	unlink(path);
	line[strcspn(line, "\n")] = '\0';
	char *body = strstr(line, "delivery ");
	cr_assert_not_null(body, "%s", line);
	char keys[16][32], vals[16][256];
	unsigned n = fields(body + 9, keys, vals, 16);
	cr_assert_eq(n, 4, "fields of '%s'", body);
	cr_assert_str_eq(keys[0], "id");
	cr_assert_str_eq(vals[0], "0011");
	cr_assert_str_eq(keys[1], "rcpt");
	char want[128];
	snprintf(want, sizeof(want), "<%s>", rcpt);
	cr_assert_str_eq(vals[1], want);
	cr_assert_str_eq(keys[2], "status");
	cr_assert_str_eq(vals[2], "bounced");
	cr_assert_str_eq(keys[3], "reply");
	cr_assert_str_eq(vals[3], reply);
}

/* ---- JSON lines ---------------------------------------------------------- */

/* json_of - body as a JSON line (log_json, out of outlen bytes), parsed
 * by jansson (no duplicate key allowed; NUL allowed: "\u0000" is JSON);
 * fails the test when it does not parse. The caller json_decref()s. */
static json_t *json_of_len(const char *body, size_t n, size_t outlen)
{
	char *out = malloc(outlen);
	size_t len = log_json(out, outlen, "2026-11-27T03:19:25.123Z", "info", "shard0", body, n);
	cr_assert_lt(len, outlen);
	cr_assert_eq(strlen(out), len, "a NUL inside the line");
	cr_assert_null(memchr(out, '\n', len), "a newline inside the line: %s", out);
	json_error_t err;
	json_t *j = json_loadb(out, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
	cr_assert_not_null(j, "not JSON (%s at %d): %s", err.text, err.position, out);
	cr_assert(json_is_object(j), "%s", out);
	free(out);
	return j;
}

static json_t *json_of(const char *body)
{
	return json_of_len(body, strlen(body), LOG_JSON_MAX);
}

static const char *jstr(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);
	cr_assert(json_is_string(v), "%s is not a string", key);
	return json_string_value(v);
}

/* A delivery line as sched_job.c writes it: every field a member, numbers
 * only where the value is a plain integer; the message id stays a string. */
Test(log_json, delivery_line)
{
	char r[LOG_VALUE_MAX], a[LOG_VALUE_MAX];
	const char *reply = "250 2.0.0 Ok: queued as 7F3A";
	char body[1024];
	snprintf(body, sizeof(body),
	         "delivery id=0000000000000011 rcpt=%s dest=x.test relay=127.0.0.1:2525 "
	         "status=delivered dsn=2.0.0 attempts=1 delay=0.012 duration=0.003 reply=%s",
	         log_addr(a, sizeof(a), "a@x.test", 8),
	         log_value(r, sizeof(r), reply, strlen(reply)));
	json_t *j = json_of(body);
	cr_assert_str_eq(jstr(j, "time"), "2026-11-27T03:19:25.123Z");
	cr_assert_str_eq(jstr(j, "level"), "info");
	cr_assert_str_eq(jstr(j, "thread"), "shard0");
	cr_assert_str_eq(jstr(j, "event"), "delivery");
	cr_assert_str_eq(jstr(j, "id"), "0000000000000011");
	cr_assert_str_eq(jstr(j, "rcpt"), "<a@x.test>");
	cr_assert_str_eq(jstr(j, "dest"), "x.test");
	cr_assert_str_eq(jstr(j, "relay"), "127.0.0.1:2525");
	cr_assert_str_eq(jstr(j, "status"), "delivered");
	cr_assert_str_eq(jstr(j, "dsn"), "2.0.0");
	cr_assert(json_is_integer(json_object_get(j, "attempts")));
	cr_assert_eq(json_integer_value(json_object_get(j, "attempts")), 1);
	cr_assert_str_eq(jstr(j, "delay"), "0.012");
	cr_assert_str_eq(jstr(j, "reply"), reply);
	cr_assert_null(json_object_get(j, "msg"), "no free text in a delivery line");
	cr_assert_eq(json_object_size(j), 14);
	json_decref(j);
}

/* Values escaped by log_value/log_quote come back byte for byte when they
 * are UTF-8 (controls, quotes, backslashes, C1, separators, bidi marks
 * included); bytes that are not UTF-8 come back as their Latin-1 reading. */
struct json_value_case {
	const char *in;
	size_t n;         /* 0 = strlen(in) */
	const char *want; /* NULL = in */
};

static const struct json_value_case value_cases[] = {
	{ "plain", 0, NULL },
	{ "", 0, NULL },
	{ "say \"hi\" \\ back", 0, NULL },
	{ "line\r\nstatus=delivered\tx", 0, NULL },
	{ "nul\0x", 5, NULL },
	{ "esc\x1b[31m del\x7f", 0, NULL },
	{ "d\xc3\xa9j\xc3\xa0 \xf0\x9f\x93\xa8", 0, NULL },
	{ "c1\xc2\x85 ls\xe2\x80\xa8 rlo\xe2\x80\xae bom\xef\xbb\xbf", 0, NULL },
	{ "bad\xc3( \xff\xfe \x80", 0, "bad\xc3\x83( \xc3\xbf\xc3\xbe \xc2\x80" },
	{ "a key=value\" x=\"y", 0, NULL },
	{ "trailing\\", 0, NULL },
	{ "\\x41 not an escape", 0, NULL },
};

Test(log_json, escaped_values_round_trip)
{
	for (size_t i = 0; i < sizeof(value_cases) / sizeof(value_cases[0]); i++) {
		const struct json_value_case *c = &value_cases[i];
		size_t n = c->n ? c->n : strlen(c->in);
		const char *want = c->want ? c->want : c->in;
		size_t wn = c->want ? strlen(c->want) : n;
		char v[LOG_VALUE_MAX], q[LOG_VALUE_MAX], body[3 * LOG_VALUE_MAX];
		log_value(v, sizeof(v), c->in, n);
		log_quote(q, sizeof(q), c->in, n);
		snprintf(body, sizeof(body), "ev v=%s q=%s after=1", v, q);
		json_t *j = json_of(body);
		for (int k = 0; k < 2; k++) {
			json_t *s = json_object_get(j, k ? "q" : "v");
			cr_assert(json_is_string(s), "case %zu: %s", i, body);
			cr_assert_eq(json_string_length(s), wn, "case %zu: %s", i, body);
			cr_assert(!memcmp(json_string_value(s), want, wn), "case %zu: %s", i, body);
		}
		cr_assert_eq(json_integer_value(json_object_get(j, "after")), 1, "case %zu", i);
		cr_assert_eq(json_object_size(j), 7, "case %zu: %s", i, body);
		json_decref(j);
	}
}

/* Raw 8-bit bytes and controls where the text has them unescaped (free
 * text, a thread name) still make valid JSON. */
Test(log_json, raw_bytes)
{
	const char body[] = "smtpd 1.2.3.4:55: bad \xff\xfe\x01 byte d\xc3\xa9j\xc3\xa0 k=\xff";
	json_t *j = json_of_len(body, sizeof(body) - 1, LOG_JSON_MAX);
	cr_assert_str_eq(jstr(j, "event"), "smtpd");
	cr_assert_str_eq(jstr(j, "msg"),
	                 "1.2.3.4:55: bad \xc3\xbf\xc3\xbe\x01 byte d\xc3\xa9j\xc3\xa0");
	cr_assert_str_eq(jstr(j, "k"), "\xc3\xbf");
	json_decref(j);

	char out[256];
	log_json(out, sizeof(out), "t", "info", "th\"r\xff\n", "x", 1);
	json_error_t err;
	j = json_loads(out, 0, &err);
	cr_assert_not_null(j, "%s: %s", err.text, out);
	cr_assert_str_eq(jstr(j, "thread"), "th\"r\xc3\xbf\n");
	json_decref(j);
}

/* Free text around the fields is one "msg" member: adjacent words keep
 * their blanks, words on both sides of a field are joined by one. */
Test(log_json, free_text)
{
	json_t *j = json_of("dest x.test backs off for 1.5s after 3 failures: reply=\"421 busy\"");
	cr_assert_str_eq(jstr(j, "event"), "dest");
	cr_assert_str_eq(jstr(j, "msg"), "x.test backs off for 1.5s after 3 failures:");
	cr_assert_str_eq(jstr(j, "reply"), "421 busy");
	json_decref(j);

	j = json_of("spool: forgot 3 finished  messages (early: the spool is over half full)");
	cr_assert_str_eq(jstr(j, "event"), "spool");
	cr_assert_str_eq(jstr(j, "msg"),
	                 "forgot 3 finished  messages (early: the spool is over half full)");
	json_decref(j);

	j = json_of("pop3 c12: login user=bob method=PLAIN messages=3 octets=1200 tls=TLSv1.3 ok");
	cr_assert_str_eq(jstr(j, "msg"), "c12: login ok");
	cr_assert_str_eq(jstr(j, "user"), "bob");
	cr_assert_eq(json_integer_value(json_object_get(j, "octets")), 1200);
	json_decref(j);

	j = json_of("stopped");
	cr_assert_str_eq(jstr(j, "event"), "stopped");
	cr_assert_eq(json_object_size(j), 4);
	json_decref(j);
}

/* Numbers: unquoted plain decimal integers only. */
Test(log_json, numbers_and_strings)
{
	json_t *j = json_of("ev a=0 b=-5 c=007 d=1234567890123456 e=123456789012345 f=12a g=\"5\" "
	                    "h= i=1.5 j=- k=-0 l=+3");
	cr_assert_eq(json_integer_value(json_object_get(j, "a")), 0);
	cr_assert(json_is_integer(json_object_get(j, "a")));
	cr_assert_eq(json_integer_value(json_object_get(j, "b")), -5);
	cr_assert_str_eq(jstr(j, "c"), "007");
	cr_assert_str_eq(jstr(j, "d"), "1234567890123456");
	cr_assert_eq(json_integer_value(json_object_get(j, "e")), 123456789012345LL);
	cr_assert_str_eq(jstr(j, "f"), "12a");
	cr_assert_str_eq(jstr(j, "g"), "5");
	cr_assert_str_eq(jstr(j, "h"), "");
	cr_assert_str_eq(jstr(j, "i"), "1.5");
	cr_assert_str_eq(jstr(j, "j"), "-");
	cr_assert(json_is_integer(json_object_get(j, "k")));
	cr_assert_str_eq(jstr(j, "l"), "+3");
	json_decref(j);
}

/* A key seen twice, or one of ours, is renamed: never a duplicate member. */
Test(log_json, repeated_keys)
{
	json_t *j = json_of("ev a=1 a=2 a=x time=t event=e msg=m level=l thread=h words here");
	cr_assert_eq(json_integer_value(json_object_get(j, "a")), 1);
	cr_assert_eq(json_integer_value(json_object_get(j, "a_2")), 2);
	cr_assert_str_eq(jstr(j, "a_3"), "x");
	cr_assert_str_eq(jstr(j, "time"), "2026-11-27T03:19:25.123Z");
	cr_assert_str_eq(jstr(j, "time_2"), "t");
	cr_assert_str_eq(jstr(j, "event"), "ev");
	cr_assert_str_eq(jstr(j, "event_2"), "e");
	cr_assert_str_eq(jstr(j, "msg"), "words here");
	cr_assert_str_eq(jstr(j, "msg_2"), "m");
	cr_assert_str_eq(jstr(j, "level_2"), "l");
	cr_assert_str_eq(jstr(j, "thread_2"), "h");
	json_decref(j);
}

/* Odd shapes: each still one valid object, nothing lost that is not cut. */
Test(log_json, odd_shapes)
{
	static const char *const bodies[] = {
		"",
		" ",
		"   lead",
		"event:",
		"=",
		"ev =x ==",
		"ev k=\"unterminated value with spaces",
		"ev k=\"abc\"def m=1",
		"ev k=\"a\\\"",
		"ev k=\"a\\",
		"ev \"quoted free\" text",
		"ev k=\"\\x4\" j=\"\\xzz\"",
		"ev a.b-c_d=1 weird/key=2",
		"ev k=v\tx=y",
		"ev kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk=v",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
		json_decref(json_of(bodies[i]));
	json_t *j = json_of("ev k=\"unterminated value with spaces");
	cr_assert_str_eq(jstr(j, "k"), "unterminated value with spaces");
	json_decref(j);
	j = json_of("ev k=\"abc\"def m=1");
	cr_assert_str_eq(jstr(j, "msg"), "k=\"abc\"def");
	cr_assert_eq(json_integer_value(json_object_get(j, "m")), 1);
	json_decref(j);
	j = json_of("event: x");
	cr_assert_str_eq(jstr(j, "event"), "event");
	json_decref(j);
}

/* Cut to every size, from lines that grow six-fold when escaped: always a
 * whole object, within outlen. */
Test(log_json, cut_to_fit)
{
	char body[LOG_LINE_MAX];
	memcpy(body, "ev k=\"", 6);
	for (size_t i = 6; i < sizeof(body); i++)
		body[i] = (char)(i % 3 ? 0x01 : 0xff);
	json_decref(json_of_len(body, sizeof(body), LOG_JSON_MAX));
	memset(body, 0x01, sizeof(body));
	json_decref(json_of_len(body, sizeof(body), LOG_JSON_MAX));
	const char *line =
	    "delivery id=0011 rcpt=\"<a b>\" reply=\"550 \\xff\\x01 no\" n=12345 free";
	for (size_t len = 64; len < 220; len++)
		json_decref(json_of_len(line, strlen(line), len));
}

/* Random bodies (a fixed seed): every one a valid object. */
Test(log_json, random_bodies)
{
	static const char alphabet[] = "ab=\" \\xn0-9:\x01\xff\xc3\xa9\x80.";
	unsigned seed = 12345;
	char body[300];
	for (int round = 0; round < 3000; round++) {
		size_t n = (size_t)(rand_r(&seed) % sizeof(body));
		for (size_t i = 0; i < n; i++)
			body[i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
		char out[LOG_JSON_MAX];
		size_t outlen = round % 2 ? sizeof(out) : 64 + (size_t)(rand_r(&seed) % 400);
		size_t len = log_json(out, outlen, "t", "debug", "w", body, n);
		json_error_t err;
		json_t *j = json_loadb(out, len, JSON_ALLOW_NUL, &err);
		cr_assert_not_null(j, "round %d: %s: %s", round, err.text, out);
		json_decref(j);
	}
}

/* log_msg in JSON format: one object per line in the file. */
Test(log_json, log_msg_writes_json)
{
	char path[] = "/tmp/rp_test_log_XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert(log_open(path));
	log_set_format(LOG_FORMAT_JSON);
	log_set_thread("tester");
	char a[LOG_VALUE_MAX];
	log_warn("delivery id=00ab rcpt=%s status=bounced attempts=%u",
	         log_addr(a, sizeof(a), "x y@z", 5), 3u);
	log_info("plain text only");
	log_flush();
	log_set_format(LOG_FORMAT_TEXT);
	log_info("text again k=1");
	log_flush();
	log_open("stderr");
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	char line[LOG_JSON_MAX];
	cr_assert_not_null(fgets(line, sizeof(line), f));
	json_error_t err;
	json_t *j = json_loads(line, 0, &err);
	cr_assert_not_null(j, "%s: %s", err.text, line);
	cr_assert_str_eq(jstr(j, "level"), "warn");
	cr_assert_str_eq(jstr(j, "thread"), "tester");
	cr_assert_str_eq(jstr(j, "event"), "delivery");
	cr_assert_str_eq(jstr(j, "rcpt"), "<x y@z>");
	cr_assert_eq(json_integer_value(json_object_get(j, "attempts")), 3);
	const char *t = jstr(j, "time");
	cr_assert_eq(strlen(t), 24, "%s", t);
	cr_assert_eq(t[10], 'T');
	cr_assert_eq(t[23], 'Z');
	json_decref(j);
	cr_assert_not_null(fgets(line, sizeof(line), f));
	j = json_loads(line, 0, &err);
	cr_assert_not_null(j, "%s: %s", err.text, line);
	cr_assert_str_eq(jstr(j, "event"), "plain");
	cr_assert_str_eq(jstr(j, "msg"), "text only");
	json_decref(j);
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_assert_not_null(strstr(line, "Z info tester: text again k=1\n"), "%s", line);
	cr_assert_null(fgets(line, sizeof(line), f));
	fclose(f);
	unlink(path);
}

/* ---- reopening ------------------------------------------------------------ */

#define WRITERS 3
#define LINES   40000 /* at most, per writer */

static atomic_bool writers_go, writers_stop;
static int written[WRITERS];
static atomic_int progress[WRITERS]; /* lines written so far (the rotator watches) */

static void *writer(void *arg)
{
	char name[16];
	snprintf(name, sizeof(name), "w%d", (int)(intptr_t)arg);
	log_set_thread(name);
	log_set_buffered((intptr_t)arg % 2 == 0); /* buffered and unbuffered writers */
	while (!atomic_load(&writers_go))
		;
	int i = 0;
	for (; i < LINES && !atomic_load(&writers_stop); i++) {
		atomic_store_explicit(&progress[(intptr_t)arg], i, memory_order_relaxed);
		log_info(
		    "line writer=%s n=%d pad=%s", name, i,
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		if (i % 50 == 49)
			log_flush();
		if (i % 16 == 15)
			usleep(10); /* keep writing through all the rotations */
	}
	written[(intptr_t)arg] = i;
	log_set_buffered(false);
	return NULL;
}

/* count_lines - whole lines of path, each "... line writer=wK n=I ..."
 * counted in seen[K][I]; fails on a partial or foreign line. */
static size_t count_lines(const char *path, unsigned char seen[WRITERS][LINES])
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	char line[512];
	size_t n = 0;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		cr_assert(len && line[len - 1] == '\n', "%s: partial line: %s", path, line);
		int k, i;
		const char *p = strstr(line, ": line writer=w");
		cr_assert_not_null(p, "%s: foreign line: %s", path, line);
		cr_assert_eq(sscanf(p, ": line writer=w%d n=%d pad=", &k, &i), 2, "%s", line);
		cr_assert(k >= 0 && k < WRITERS && i >= 0 && i < LINES, "%s", line);
		cr_assert_eq(seen[k][i], 0, "line twice: %s", line);
		seen[k][i] = 1;
		n++;
	}
	fclose(f);
	return n;
}

/* assert_first_line - path's first line holds want. */
static void assert_first_line(const char *path, const char *want)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	char line[256];
	cr_assert_not_null(fgets(line, sizeof(line), f), "%s is empty", path);
	cr_assert_not_null(strstr(line, want), "%s", line);
	fclose(f);
}

/* Writers log while the file is renamed and reopened again and again (as
 * logrotate and SIGHUP do): every line lands whole, once, in one of the
 * files, and the last file gets the lines written after the last reopen. */
Test(log_reopen, rotation_under_load)
{
	char dir[] = "/tmp/rp_test_logrot_XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char path[128], old[128];
	snprintf(path, sizeof(path), "%s/ringpost.log", dir);
	cr_assert(log_open(path));
	log_set_format(LOG_FORMAT_TEXT);
	pthread_t th[WRITERS];
	for (intptr_t k = 0; k < WRITERS; k++)
		cr_assert_eq(pthread_create(&th[k], NULL, writer, (void *)k), 0);
	atomic_store(&writers_go, true);
	/* Rotate while every writer still has lines to write (a loaded
	 * machine may run the writers faster than the rotations). */
	int rotations = 0;
	for (; rotations < 200; rotations++) {
		bool room = true;
		for (int k = 0; k < WRITERS; k++)
			room &= atomic_load(&progress[k]) < LINES * 9 / 10;
		if (!room)
			break;
		usleep(500);
		snprintf(old, sizeof(old), "%s/ringpost.log.%d", dir, rotations);
		cr_assert_eq(rename(path, old), 0);
		cr_assert(log_reopen());
	}
	atomic_store(&writers_stop, true);
	int want = 0;
	for (int k = 0; k < WRITERS; k++) {
		pthread_join(th[k], NULL);
		want += written[k];
	}
	cr_assert_lt(want, WRITERS * LINES, "the writers stopped before the rotations did");
	cr_assert_geq(rotations, 10, "only %d rotations while the writers wrote", rotations);
	log_info("after the last reopen");
	log_flush();
	log_open("stderr");

	static unsigned char seen[WRITERS][LINES];
	size_t total = 0;
	for (int r = 0; r < rotations; r++) {
		snprintf(old, sizeof(old), "%s/ringpost.log.%d", dir, r);
		total += count_lines(old, seen);
		unlink(old);
	}
	/* The current file: the writers' last lines and ours. */
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	char line[512];
	bool ours = false;
	while (fgets(line, sizeof(line), f)) {
		cr_assert(strchr(line, '\n'), "partial line: %s", line);
		if (strstr(line, "after the last reopen")) {
			ours = true;
			continue;
		}
		int k, i;
		const char *p = strstr(line, ": line writer=w");
		cr_assert_not_null(p, "foreign line: %s", line);
		cr_assert_eq(sscanf(p, ": line writer=w%d n=%d", &k, &i), 2);
		cr_assert_eq(seen[k][i], 0, "line twice: %s", line);
		seen[k][i] = 1;
		total++;
	}
	fclose(f);
	cr_assert(ours, "the line written after the last reopen is not in the new file");
	cr_assert_eq(total, (size_t)want, "lines lost: %zu of %d", total, want);
	unlink(path);
	rmdir(dir);
}

/* A file that cannot be reopened keeps the old one; back to stderr, the
 * file's descriptor is not left pointing at the file. */
Test(log_reopen, failure_keeps_the_old_file)
{
	char dir[] = "/tmp/rp_test_logrot_XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char sub[128], path[160], moved[160];
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	cr_assert_eq(mkdir(sub, 0700), 0);
	snprintf(path, sizeof(path), "%s/ringpost.log", sub);
	snprintf(moved, sizeof(moved), "%s/moved.log", dir);
	cr_assert(log_open(path));
	cr_assert_eq(rename(path, moved), 0);
	cr_assert_eq(rmdir(sub), 0);
	cr_assert_not(log_reopen(), "reopened in a directory that is gone");
	log_info("still here");
	log_flush();
	log_open("stderr");
	cr_assert(log_reopen(), "stderr needs no reopening");
	assert_first_line(moved, "still here");
	unlink(moved);
	rmdir(dir);
}

/* SIGHUP without a rotation leaves the file alone: after [server] user,
 * the daemon may not be able to open again a file root made (checked as
 * root turned nobody for the test; skipped when not root). */
Test(log_reopen, not_rotated_not_reopened)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to become nobody");
	char dir[] = "/tmp/rp_test_logrot_XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(chmod(dir, 0755), 0);
	char path[128];
	snprintf(path, sizeof(path), "%s/ringpost.log", dir);
	cr_assert(log_open(path)); /* root's, 0640 */
	cr_assert_eq(seteuid(65534), 0);
	cr_assert(log_reopen(), "a file that was not rotated was opened again");
	log_info("as nobody");
	log_flush();
	cr_assert_eq(seteuid(0), 0);
	assert_first_line(path, "as nobody");
	unlink(path);
	rmdir(dir);
}
