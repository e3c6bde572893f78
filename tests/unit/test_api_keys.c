/* test_api_keys.c - [api] keys with names and scopes (relay/config.c):
 * bare tokens (admin, named "#N"), NAME:TOKEN:SCOPE, every malformed
 * entry refused at its line without showing a token, short keys refused
 * when the API is not on loopback (loopback told apart from wildcards),
 * the change-me warning; [server] user syntax and its line; and the
 * scope each API route needs (api/http.c's route table).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "relay/config.h"
#include "tests/unit/support.h"

static char tmpdir[64];

static void setup(void)
{
	test_tmpdir(tmpdir, sizeof(tmpdir), "apikeys");
}

static void teardown(void)
{
	test_rmdir(tmpdir);
}

TestSuite(api_keys, .init = setup, .fini = teardown);

/* load - text in a file of the test's directory, loaded; NULL with err. */
static struct config *load(const char *text, char *path, size_t plen, char *err, size_t elen)
{
	snprintf(path, plen, "%s/k.conf", tmpdir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
	cr_assert_eq(fclose(f), 0);
	err[0] = '\0';
	return config_load(path, err, elen);
}

static struct config *load_ok(const char *text)
{
	char path[128], err[512];
	struct config *c = load(text, path, sizeof(path), err, sizeof(err));
	cr_assert_not_null(c, "must load: %s\n%s", err, text);
	return c;
}

Test(api_keys, bare_and_named)
{
	struct config *c =
	    load_ok("[server]\nhostname = h.example\n"
	            "[api]\n"
	            "keys = old-token, ci:ci-token-0123456789:submit,"
	            "  grafana:graf-token-0123456789:read ,ops.1:ops-tok:admin, tail\n");
	cr_assert_eq(c->napi_keys, 5);
	cr_assert_eq(c->api_keys_line, 4);
	static const struct {
		const char *name, *token;
		unsigned scopes;
	} want[] = {
		{ "#1", "old-token", CFG_API_ALL },
		{ "ci", "ci-token-0123456789", CFG_API_SUBMIT },
		{ "grafana", "graf-token-0123456789", CFG_API_READ },
		{ "ops.1", "ops-tok", CFG_API_ALL },
		{ "#5", "tail", CFG_API_ALL },
	};
	for (unsigned i = 0; i < 5; i++) {
		cr_assert_str_eq(c->api_key_names[i], want[i].name);
		cr_assert_str_eq(c->api_keys[i], want[i].token);
		cr_assert_eq(c->api_key_scopes[i], want[i].scopes, "key %u", i);
	}
	cr_assert_str_eq(config_api_scope_name(c->api_key_scopes[0]), "admin");
	cr_assert_str_eq(config_api_scope_name(c->api_key_scopes[1]), "submit");
	cr_assert_str_eq(config_api_scope_name(c->api_key_scopes[2]), "read");
	config_free(c);
}

Test(api_keys, later_keys_line_replaces)
{
	struct config *c = load_ok("[api]\nkeys = a:tok-a:read, b\nkeys = c:tok-c:submit\n");
	cr_assert_eq(c->napi_keys, 1);
	cr_assert_str_eq(c->api_key_names[0], "c");
	cr_assert_eq(c->api_key_scopes[0], CFG_API_SUBMIT);
	cr_assert_eq(c->api_keys_line, 3);
	config_free(c);
	c = load_ok("[api]\nkeys =\n");
	cr_assert_eq(c->napi_keys, 0);
	config_free(c);
}

struct bad {
	const char *keys;   /* the [api] keys value (line 2) */
	const char *reason; /* in the message */
	const char *secret; /* must not be in the message */
};

static const struct bad bad[] = {
	{ "name:tok-secret-1", "entry 1 is malformed: want TOKEN or NAME:TOKEN:SCOPE",
	  "tok-secret-1" },
	{ "ok, a:b:c:d", "entry 2 is malformed", "b:c" },
	{ "ci:tok-secret-2:superuser", "key ci: the scope must be submit, read or admin",
	  "tok-secret-2" },
	{ "ci:tok-secret-3:", "key ci: the scope must be", "tok-secret-3" },
	{ "ci:tok-secret-4:Admin", "key ci: the scope must be", "tok-secret-4" },
	{ "ci::read", "key ci has an empty token", NULL },
	{ ":tok-secret-5:read", "entry 1: the name must be 1 to 64 letters", "tok-secret-5" },
	{ "bad name:tok-secret-6:read", "entry 1: the name must be", "tok-secret-6" },
	{ "a/b:tok-secret-7:read", "entry 1: the name must be", "tok-secret-7" },
	{ "x:tok\x01secret:read", "key x: the token must be visible ASCII", "secret" },
	{ "x:tok\xc3\xa9secret:read", "key x: the token must be visible ASCII", "secret" },
	{ "a:tok-a:read, a:tok-b:submit", "the name a is given twice", "tok-" },
	{ "a:same-secret:read, b:same-secret:admin", "keys a and b have the same token",
	  "same-secret" },
	{ "same-secret, same-secret", "keys #1 and #2 have the same token", "same-secret" },
	{ "#1:tok-secret-8:read", "entry 1: the name must be", "tok-secret-8" },
};

Test(api_keys, malformed_entries_name_line_not_token)
{
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256], path[128], err[512], want[200];
		snprintf(text, sizeof(text), "[api]\nkeys = %s\n[server]\nhostname = h.example\n",
		         bad[i].keys);
		cr_assert_null(load(text, path, sizeof(path), err, sizeof(err)), "case %zu loads",
		               i);
		snprintf(want, sizeof(want), "%s:2: keys: ", path);
		cr_assert(!strncmp(err, want, strlen(want)), "case %zu: '%s' must start with '%s'",
		          i, err, want);
		cr_assert(strstr(err, bad[i].reason), "case %zu: '%s' must say '%s'", i, err,
		          bad[i].reason);
		if (bad[i].secret)
			cr_assert_null(strstr(err, bad[i].secret), "case %zu shows the token: %s",
			               i, err);
	}
}

Test(api_keys, loopback)
{
	static const struct {
		const char *addr;
		bool loopback;
	} cases[] = {
		{ "127.0.0.1:8025", true },
		{ "127.0.0.2:8025", true },
		{ "127.255.255.254:1", true },
		{ "[::1]:8025", true },
		{ "[::ffff:127.0.0.1]:1", true },
		{ "0.0.0.0:8025", false },
		{ "*:8025", false },
		{ ":8025", false },
		{ "[::]:8025", false },
		{ "10.0.0.1:8025", false },
		{ "128.0.0.1:8025", false },
		{ "[::2]:8025", false },
		{ "[::ffff:10.0.0.1]:1", false },
		{ "localhost:8025", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cfg_addr a;
		cr_assert(config_parse_addr(cases[i].addr, &a), "%s", cases[i].addr);
		cr_assert_eq(config_addr_loopback(&a), cases[i].loopback, "%s", cases[i].addr);
	}
}

Test(api_keys, short_keys_off_loopback)
{
	static const char *const off[] = { "0.0.0.0:8025", "[::]:8025", "*:8025", "10.1.2.3:80" };
	for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
		char text[400], path[128], err[512], want[200];
		/* The listener comes after the keys: the check waits for the whole file. */
		snprintf(text, sizeof(text),
		         "[server]\nhostname = h.example\n[api]\n"
		         "keys = long-enough-token-01, ci:fifteen-chars-1:submit\n"
		         "[listen]\napi = %s\n",
		         off[i]);
		cr_assert_null(load(text, path, sizeof(path), err, sizeof(err)), "%s", off[i]);
		snprintf(want, sizeof(want), "%s:4: [api] keys: key ci has 15 characters", path);
		cr_assert(!strncmp(err, want, strlen(want)), "'%s' must start with '%s'", err,
		          want);
		cr_assert(strstr(err, off[i]) && strstr(err, "at least 16"), "%s", err);
		cr_assert_null(strstr(err, "fifteen-chars-1"), "shows the token: %s", err);
	}
	/* The shipped sample key, off loopback. */
	char path[128], err[512];
	cr_assert_null(load("[listen]\napi = 0.0.0.0:8025\n[api]\nkeys = change-me\n", path,
	                    sizeof(path), err, sizeof(err)));
	cr_assert(strstr(err, ":4: [api] keys: key #1 has 9 characters"), "%s", err);
	cr_assert_null(strstr(err, "change-me"), "%s", err);
	/* 16 characters are enough; on loopback anything goes; no API, no check. */
	struct config *c =
	    load_ok("[listen]\napi = 0.0.0.0:8025\n[api]\nkeys = n:sixteen-chars-16:read\n");
	config_free(c);
	c = load_ok("[listen]\napi = 127.0.0.2:8025\n[api]\nkeys = change-me, k\n");
	config_free(c);
	c = load_ok("[listen]\napi = [::1]:8025\n[api]\nkeys = k\n");
	config_free(c);
	c = load_ok("[listen]\nsubmission = 0.0.0.0:2587\n[api]\nkeys = k\n");
	config_free(c);
}

struct warnings {
	unsigned n;
	unsigned line;
	char text[400];
};

static void collect(void *arg, unsigned line, const char *text)
{
	struct warnings *w = arg;
	w->n++;
	w->line = line;
	snprintf(w->text, sizeof(w->text), "%s", text);
}

Test(api_keys, change_me_warns_on_loopback)
{
	struct config *c = load_ok("[server]\nhostname = h.example\n[listen]\napi = "
	                           "127.0.0.1:8025\n[api]\nkeys = real:a-long-one-here-01:admin, "
	                           "change-me\n");
	struct warnings w = { 0 };
	cr_assert_eq(config_warnings(c, collect, &w), 1);
	cr_assert_eq(w.line, 6);
	cr_assert(strstr(w.text, "[api] keys: key #2 is the sample key change-me"), "%s", w.text);
	config_free(c);
	/* Other short keys are fine on loopback; without an API, no warning. */
	c = load_ok("[server]\nhostname = h.example\n[listen]\napi = 127.0.0.1:8025\n"
	            "[api]\nkeys = k1\n");
	w.n = 0;
	cr_assert_eq(config_warnings(c, collect, &w), 0);
	config_free(c);
	c = load_ok("[server]\nhostname = h.example\n[api]\nkeys = change-me\n");
	cr_assert_eq(config_warnings(c, collect, &w), 0);
	config_free(c);
}

Test(api_keys, server_user)
{
	struct config *c = load_ok("[server]\nhostname = h.example\n\nuser = ringpost\n");
	cr_assert_str_eq(c->user, "ringpost");
	cr_assert_eq(c->user_line, 4);
	config_free(c);
	c = load_ok("[server]\nhostname = h.example\n");
	cr_assert_str_eq(c->user, "");
	cr_assert_eq(c->user_line, 0);
	config_free(c);
	static const char *const bad_users[] = { "two words", "a:b", "../x", "x\x01y" };
	for (size_t i = 0; i < sizeof(bad_users) / sizeof(bad_users[0]); i++) {
		char text[128], path[128], err[512];
		snprintf(text, sizeof(text), "[server]\nuser = %s\n", bad_users[i]);
		cr_assert_null(load(text, path, sizeof(path), err, sizeof(err)), "%s",
		               bad_users[i]);
		cr_assert(strstr(err, ":2: user must be a user name"), "%s", err);
	}
}

Test(api_keys, route_scopes)
{
	static const struct {
		const char *method, *path;
		unsigned scope;
	} cases[] = {
		{ "POST", "/v1/messages", API_SCOPE_SUBMIT },
		{ "POST", "/v1/messages/batch", API_SCOPE_SUBMIT },
		{ "GET", "/v1/messages/0123456789abcdef", API_SCOPE_READ },
		{ "GET", "/v1/messages/batch", API_SCOPE_READ },
		{ "DELETE", "/v1/messages/0123456789abcdef", API_SCOPE_ADMIN },
		{ "GET", "/v1/stats", API_SCOPE_READ },
		{ "GET", "/metrics", API_SCOPE_READ },
		{ "GET", "/healthz", 0 },
		{ "GET", "/v1/queue", API_SCOPE_READ },
		{ "POST", "/v1/queue/a.example/retry", API_SCOPE_ADMIN },
		{ "POST", "/v1/queue/a.example/purge", API_SCOPE_ADMIN },
		{ "GET", "/v1/bounces", API_SCOPE_READ },
		{ "GET", "/v1/bounces/7", API_SCOPE_READ },
		{ "GET", "/v1/suppressions", API_SCOPE_READ },
		{ "POST", "/v1/suppressions", API_SCOPE_ADMIN },
		{ "DELETE", "/v1/suppressions/a@b.example", API_SCOPE_ADMIN },
		/* What does not exist needs the most. */
		{ "GET", "/v1/nothing", API_SCOPE_ADMIN },
		{ "PUT", "/v1/messages", API_SCOPE_ADMIN },
		{ "POST", "/healthz", API_SCOPE_ADMIN },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(api_route_scope(cases[i].method, cases[i].path), cases[i].scope,
		             "%s %s", cases[i].method, cases[i].path);
	cr_assert_str_eq(api_scope_name(API_SCOPE_SUBMIT), "submit");
	cr_assert_str_eq(api_scope_name(API_SCOPE_READ), "read");
	cr_assert_str_eq(api_scope_name(API_SCOPE_ADMIN), "admin");
	cr_assert_str_eq(api_scope_name(API_SCOPE_SUBMIT | API_SCOPE_READ | API_SCOPE_ADMIN),
	                 "admin");
}
