/* test_auth.c - base/auth: the users file (comments, blank lines, CRLF, bad
 * lines named by file:line, hash types crypt(3) knows and the contract
 * names, duplicates, an empty table), auth_hash and auth_verify ($y$, and
 * $6$/$5$ hashes as `openssl passwd -6/-5` and crypt_gensalt make them),
 * the checker (two threads asking at once, each answer on the asker's
 * queue, passwords wiped, the table kept alive by the request), and the
 * failure limiter (per address, IPv6 /64, the block, its doubling and its
 * end, independent addresses).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <crypt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/auth.h"
#include "base/buf.h"
#include "base/util.h"
#include "support.h"

/* Made with `openssl passwd -6 -salt rpTestSalt6 'correct horse'` and
 * `openssl passwd -5 -salt rpTestSalt5 'correct horse'`. */
#define PW "correct horse"
#define HASH6                                                                                      \
	"$6$rpTestSalt6$QQfT46pm7B6jfayvGSQMjF460rFmi7Aqh/aEvYk/DVrtFwdE/"                         \
	"mTcFEMvrcZcmkYfAhGUdLnxsk2WxflWAe53M0"
#define HASH5 "$5$rpTestSalt5$FnA2IvjB5idufnHmghzOTV/ivJMHI4fn4709DD8LWM."
/* yescrypt of "pw" (crypt_gensalt "$y$", default cost). */
#define HASHY    "$y$j9T$JfRa/q4ogM2MLax7FFzsG0$qm9WAMrAwW7Ekukkb4ofR5alUrHLpWyIUK/wvf4kc77"
#define HASHY_PW "pw"

/* ---- the users file ---------------------------------------------------- */

static char dir[128];

static void setup_dir(void)
{
	test_tmpdir(dir, sizeof(dir), "auth");
}

static void teardown_dir(void)
{
	test_rmdir(dir);
}

/* users_file - text written to DIR/name; its path in out. */
static void users_file(const char *name, const char *text, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", dir, name);
	FILE *f = fopen(out, "w");
	cr_assert_not_null(f, "%s", out);
	cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
	fclose(f);
}

struct load_case {
	const char *what;
	const char *text;
	int nusers;         /* -1: the file is refused */
	const char *names;  /* users that must be there, space-separated */
	unsigned err_line;  /* refused: the line the error names (0: none) */
	const char *reason; /* refused: a part of the reason */
};

static const struct load_case load_cases[] = {
	{ "comments, blank lines and blanks around",
	  "# the users\n\n   \n\t# indented comment\nalice:" HASH6 "\nbob:" HASH5
	  "   \t\n\n# end\n",
	  2, "alice bob", 0, NULL },
	{ "CRLF line ends", "# crlf\r\nalice:" HASH6 "\r\n\r\nbob:" HASHY "\r\n", 2, "alice bob", 0,
	  NULL },
	{ "the last line without a line end", "alice:" HASH6 "\nbob:" HASH5, 2, "alice bob", 0,
	  NULL },
	{ "$y$, $6$ and $5$ together", "y:" HASHY "\nsix:" HASH6 "\nfive:" HASH5 "\n", 3,
	  "y six five", 0, NULL },
	{ "$6$ with rounds=", "r:$6$rounds=1000$saltsalt$x\n", 1, "r", 0, NULL },
	{ "only comments", "# nobody yet\n\n# still nobody\n", 0, "", 0, NULL },
	{ "empty", "", 0, "", 0, NULL },
	{ "no colon", "# one\nalice:" HASH6 "\nthis line has no colon\n", -1, NULL, 3,
	  "expected name:hash" },
	{ "empty name", ":" HASH6 "\n", -1, NULL, 1, "bad user name" },
	{ "a blank in the name", "al ice:" HASH6 "\n", -1, NULL, 1, "bad user name" },
	{ "a name with leading blanks", "  alice:" HASH6 "\n", -1, NULL, 1, "bad user name" },
	{ "an unknown hash type", "alice:" HASH6 "\nbob:$9$abc$def\n", -1, NULL, 2,
	  "not a crypt(3) hash" },
	{ "a plain password", "alice:secret\n", -1, NULL, 1, "not a crypt(3) hash" },
	{ "an empty hash", "alice:\n", -1, NULL, 1, "not a crypt(3) hash" },
	{ "a locked account", "alice:!\n", -1, NULL, 1, "not a crypt(3) hash" },
	{ "DES (legacy)", "alice:ab01234567890\n", -1, NULL, 1, "not a crypt(3) hash" },
	{ "MD5 $1$ (legacy)", "alice:$1$saltsalt$3v4E1bI8sQQ7iIXwL0kbp.\n", -1, NULL, 1,
	  "not a crypt(3) hash" },
	{ "a duplicate user", "alice:" HASH6 "\nbob:" HASH5 "\nalice:" HASHY "\n", -1, NULL, 3,
	  "alice is listed twice (first on line 1)" },
};

TestSuite(auth_users, .init = setup_dir, .fini = teardown_dir);

Test(auth_users, load_table)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(load_cases); i++) {
		const struct load_case *c = &load_cases[i];
		char path[256], err[512] = "";
		char fname[32];
		snprintf(fname, sizeof(fname), "users%zu", i);
		users_file(fname, c->text, path, sizeof(path));
		struct auth_users *u = auth_users_load(path, err, sizeof(err));
		if (c->nusers < 0) {
			cr_expect_null(u, "%s: loaded, expected refusal", c->what);
			auth_users_unref(u);
			char want[300];
			if (c->err_line)
				snprintf(want, sizeof(want), "%s:%u: ", path, c->err_line);
			else
				snprintf(want, sizeof(want), "%s: ", path);
			cr_expect(!strncmp(err, want, strlen(want)),
			          "%s: error '%s' should start '%s'", c->what, err, want);
			cr_expect_not_null(strstr(err, c->reason), "%s: error '%s' should say '%s'",
			                   c->what, err, c->reason);
			continue;
		}
		cr_expect_not_null(u, "%s: refused: %s", c->what, err);
		if (!u)
			continue;
		cr_expect_eq(auth_users_count(u), (unsigned)c->nusers, "%s: %u users, want %d",
		             c->what, auth_users_count(u), c->nusers);
		char names[128];
		snprintf(names, sizeof(names), "%s", c->names);
		for (char *save = NULL, *n = strtok_r(names, " ", &save); n;
		     n = strtok_r(NULL, " ", &save))
			cr_expect(auth_users_has(u, n), "%s: user %s missing", c->what, n);
		cr_expect(!auth_users_has(u, "nobody"), "%s", c->what);
		cr_expect(!auth_users_has(u, ""), "%s", c->what);
		auth_users_unref(u);
	}
}

Test(auth_users, long_lines_and_names)
{
	char path[256], err[512] = "";
	/* A line longer than the reader's buffer is refused by its number. */
	char *text = xcalloc(1, 4096);
	strcpy(text, "alice:" HASH6 "\n#");
	memset(text + strlen(text), 'x', 2000);
	strcat(text, "\n");
	users_file("long", text, path, sizeof(path));
	cr_assert_null(auth_users_load(path, err, sizeof(err)));
	char want[300];
	snprintf(want, sizeof(want), "%s:2: line too long", path);
	cr_assert_str_eq(err, want);
	/* A name of AUTH_NAME_MAX is fine, one more is not. */
	char name[AUTH_NAME_MAX + 2];
	memset(name, 'n', AUTH_NAME_MAX);
	name[AUTH_NAME_MAX] = '\0';
	snprintf(text, 4096, "%s:%s\n", name, HASH6);
	users_file("name255", text, path, sizeof(path));
	struct auth_users *u = auth_users_load(path, err, sizeof(err));
	cr_assert_not_null(u, "%s", err);
	cr_assert(auth_users_has(u, name));
	auth_users_unref(u);
	strcat(name, "n");
	snprintf(text, 4096, "%s:%s\n", name, HASH6);
	users_file("name256", text, path, sizeof(path));
	cr_assert_null(auth_users_load(path, err, sizeof(err)));
	cr_assert_not_null(strstr(err, ":1: bad user name"), "%s", err);
	free(text);
}

Test(auth_users, missing_file)
{
	char path[256], err[512] = "";
	snprintf(path, sizeof(path), "%s/no-such-file", dir);
	cr_assert_null(auth_users_load(path, err, sizeof(err)));
	cr_assert_not_null(strstr(err, path), "%s", err);
	cr_assert_not_null(strstr(err, "cannot open"), "%s", err);
}

Test(auth_users, refcount_and_lookups_on_an_empty_table)
{
	char path[256], err[512] = "";
	users_file("empty", "# nobody\n", path, sizeof(path));
	struct auth_users *u = auth_users_load(path, err, sizeof(err));
	cr_assert_not_null(u, "%s", err);
	cr_assert_eq(auth_users_count(u), 0);
	cr_assert(!auth_users_has(u, "alice"), "a lookup in an empty table");
	cr_assert_eq(auth_users_ref(u), u);
	auth_users_unref(u);
	cr_assert(!auth_users_has(u, "alice"), "still alive after one of two unrefs");
	auth_users_unref(u);
	/* NULL is no table: no users, nothing to free. */
	cr_assert_eq(auth_users_count(NULL), 0);
	cr_assert(!auth_users_has(NULL, "alice"));
	cr_assert_null(auth_users_ref(NULL));
	auth_users_unref(NULL);
}

/* ---- hashing ----------------------------------------------------------- */

Test(auth_hash, yescrypt_round_trip)
{
	char h1[256], h2[256];
	cr_assert(auth_hash("s3cret pass", h1, sizeof(h1)));
	cr_assert(!strncmp(h1, "$y$", 3), "%s", h1);
	cr_assert_eq(crypt_checksalt(h1), CRYPT_SALT_OK, "%s", h1);
	cr_assert(auth_verify("s3cret pass", h1));
	cr_assert(!auth_verify("s3cret pas", h1), "a prefix of the password");
	cr_assert(!auth_verify("s3cret pass!", h1), "the password and more");
	cr_assert(!auth_verify("", h1));
	cr_assert(auth_hash("s3cret pass", h2, sizeof(h2)));
	cr_assert_str_neq(h1, h2, "each hash has its own salt");
	cr_assert(auth_verify("s3cret pass", h2));
	/* Too small an output buffer: refused, nothing half written. */
	char small[16] = "untouched";
	cr_assert(!auth_hash("s3cret pass", small, sizeof(small)));
	cr_assert_str_eq(small, "untouched");
}

struct verify_case {
	const char *pass;
	const char *hash;
	bool ok;
};

static const struct verify_case verify_cases[] = {
	{ PW, HASH6, true },
	{ PW, HASH5, true },
	{ HASHY_PW, HASHY, true },
	{ "correct horse ", HASH6, false },
	{ "Correct horse", HASH5, false },
	{ "", HASH6, false },
	{ "pw2", HASHY, false },
	/* A hash with its last character changed. */
	{ PW,
	  "$6$rpTestSalt6$QQfT46pm7B6jfayvGSQMjF460rFmi7Aqh/aEvYk/DVrtFwdE/"
	  "mTcFEMvrcZcmkYfAhGUdLnxsk2WxflWAe53M1",
	  false },
	/* Cut short: crypt makes the whole hash, which is longer. */
	{ PW, "$5$rpTestSalt5$FnA2IvjB5idufnHmghzOTV", false },
	/* Not hashes at all: never true, never a crash. */
	{ PW, "", false },
	{ PW, "*", false },
	{ PW, "!", false },
	{ PW, "$9$abc$def", false },
	{ "", "", false },
};

Test(auth_hash, verify_table)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(verify_cases); i++) {
		const struct verify_case *c = &verify_cases[i];
		cr_expect_eq(auth_verify(c->pass, c->hash), c->ok, "case %zu: '%s' against %s", i,
		             c->pass, c->hash);
	}
}

Test(auth_hash, gensalt_sha_hashes)
{
	/* $6$ and $5$ as crypt_gensalt makes them (random salt, rounds). */
	const char *prefixes[] = { "$6$", "$5$" };
	for (size_t i = 0; i < RP_ARRAY_LEN(prefixes); i++) {
		char setting[CRYPT_GENSALT_OUTPUT_SIZE];
		cr_assert_not_null(
		    crypt_gensalt_rn(prefixes[i], 5000, NULL, 0, setting, sizeof(setting)));
		struct crypt_data cd;
		memset(&cd, 0, sizeof(cd));
		const char *h = crypt_rn("a pass phrase", setting, &cd, sizeof(cd));
		cr_assert_not_null(h);
		char hash[256];
		snprintf(hash, sizeof(hash), "%s", h);
		cr_assert(auth_verify("a pass phrase", hash), "%s", hash);
		cr_assert(!auth_verify("a pass phrase.", hash), "%s", hash);
	}
}

/* ---- the checker ------------------------------------------------------- */

#define ASKERS    2
#define PER_ASKER 48

/* What a request should answer; one of these per request. */
struct expect {
	const char *user;
	const char *pass;
	bool ok;
};

static const struct expect expects[] = {
	{ "alice", PW, true },         { "alice", "wrong", false }, { "bob", "bob's pass", true },
	{ "bob", PW, false },          { "carol", PW, true },       { "alice", "", false },
	{ "nobody", PW, false },       { "ALICE", PW, false },      { "alice", PW "x", false },
	{ "bob", "bob's pass", true }, { "alice", PW, true },       { "carol", "Carol", false },
};

struct asker {
	struct auth_checker *ac;
	struct auth_users *users;
	struct mq q;
	unsigned id;
	struct asked {
		struct auth_req req; /* first: the answer comes back as this */
		struct asker *from;
		unsigned idx;
		bool answered;
		bool ok;
		bool wiped;
		bool on_my_queue;
	} * v;
	unsigned answers;
	unsigned unknown_fn; /* items that came back with another fn */
	bool timed_out;
};

static void answered(struct mq_item *item, void *ctx)
{
	struct asker *a = ctx;
	struct asked *x = (struct asked *)RP_CONTAINER_OF(item, struct auth_req, item);
	x->answered = true;
	x->ok = x->req.ok;
	x->on_my_queue = x->from == a;
	bool wiped = x->req.users == NULL;
	for (size_t i = 0; i < sizeof(x->req.pass); i++)
		wiped = wiped && x->req.pass[i] == 0;
	x->wiped = wiped;
	a->answers++;
}

/* ask - one thread: queue every request at once, then run the answers
 * as an event loop would (poll the doorbell, mq_run). */
static void *ask(void *arg)
{
	struct asker *a = arg;
	for (unsigned i = 0; i < PER_ASKER; i++) {
		const struct expect *e = &expects[(i + a->id * 5) % RP_ARRAY_LEN(expects)];
		struct asked *x = &a->v[i];
		x->from = a;
		x->idx = (i + a->id * 5) % RP_ARRAY_LEN(expects);
		auth_check(a->ac, &x->req, a->users, e->user, strlen(e->user), e->pass,
		           strlen(e->pass), &a->q, answered);
	}
	uint64_t deadline = rp_mono_ms() + 60000;
	while (a->answers < PER_ASKER) {
		if (rp_mono_ms() > deadline) {
			a->timed_out = true;
			break;
		}
		struct pollfd pfd = { .fd = a->q.efd, .events = POLLIN };
		if (poll(&pfd, 1, 1000) > 0) {
			uint64_t v;
			ssize_t n = read(a->q.efd, &v, sizeof(v));
			(void)n;
		}
		mq_run(&a->q, a);
	}
	return NULL;
}

/* users_with_three - alice (HASH6), bob ($5$ by crypt_gensalt), carol
 * ($y$ by auth_hash). */
static struct auth_users *users_with_three(void)
{
	char hb[256], hc[256], setting[CRYPT_GENSALT_OUTPUT_SIZE];
	cr_assert_not_null(crypt_gensalt_rn("$6$", 1000, NULL, 0, setting, sizeof(setting)));
	struct crypt_data cd;
	memset(&cd, 0, sizeof(cd));
	snprintf(hb, sizeof(hb), "%s", crypt_rn("bob's pass", setting, &cd, sizeof(cd)));
	cr_assert(auth_hash(PW, hc, sizeof(hc)));
	char text[1024], path[256], err[512] = "";
	snprintf(text, sizeof(text), "alice:%s\nbob:%s\ncarol:%s\n", HASH6, hb, hc);
	users_file("checker", text, path, sizeof(path));
	struct auth_users *u = auth_users_load(path, err, sizeof(err));
	cr_assert_not_null(u, "%s", err);
	return u;
}

TestSuite(auth_checker, .init = setup_dir, .fini = teardown_dir, .timeout = 120);

Test(auth_checker, two_threads_many_requests)
{
	struct auth_checker *ac = auth_checker_new(2);
	struct auth_users *users = users_with_three();
	struct asker a[ASKERS];
	pthread_t t[ASKERS];
	for (unsigned i = 0; i < ASKERS; i++) {
		a[i] = (struct asker){ .ac = ac, .users = users, .id = i };
		cr_assert(mq_init(&a[i].q, false));
		a[i].v = xcalloc(PER_ASKER, sizeof(*a[i].v));
	}
	/* The caller lets go of its table right after asking: each queued
	 * request holds its own reference (a reload does just this). */
	for (unsigned i = 0; i < ASKERS; i++)
		auth_users_ref(users);
	auth_users_unref(users);
	for (unsigned i = 0; i < ASKERS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, ask, &a[i]), 0);
	for (unsigned i = 0; i < ASKERS; i++) {
		pthread_join(t[i], NULL);
		auth_users_unref(users);
	}
	for (unsigned i = 0; i < ASKERS; i++) {
		cr_assert(!a[i].timed_out, "asker %u: %u of %u answers in 60 s", i, a[i].answers,
		          PER_ASKER);
		cr_assert_eq(a[i].answers, PER_ASKER, "asker %u: every request answered once", i);
		for (unsigned k = 0; k < PER_ASKER; k++) {
			struct asked *x = &a[i].v[k];
			const struct expect *e = &expects[x->idx];
			cr_assert(x->answered, "asker %u request %u unanswered", i, k);
			cr_assert(x->on_my_queue, "asker %u request %u answered elsewhere", i, k);
			cr_assert_eq(x->ok, e->ok, "asker %u request %u: %s / '%s' answered %d", i,
			             k, e->user, e->pass, x->ok);
			cr_assert(x->wiped,
			          "asker %u request %u: the password (or the table "
			          "reference) was left in the request",
			          i, k);
			cr_assert_str_eq(x->req.user, e->user, "the user name stays for the log");
		}
		mq_destroy(&a[i].q);
		free(a[i].v);
	}
	auth_checker_free(ac);
}

Test(auth_checker, free_answers_what_was_queued)
{
	/* auth_checker_free stops the threads only after the requests queued
	 * so far: each of them is answered. */
	struct auth_checker *ac = auth_checker_new(1);
	struct auth_users *users = users_with_three();
	struct asker a = { .ac = ac, .users = users };
	cr_assert(mq_init(&a.q, false));
	a.v = xcalloc(8, sizeof(*a.v));
	for (unsigned i = 0; i < 8; i++) {
		a.v[i].from = &a;
		a.v[i].idx = i % 3 == 0 ? 0 : 1; /* alice right, alice wrong */
		const struct expect *e = &expects[a.v[i].idx];
		auth_check(ac, &a.v[i].req, users, e->user, strlen(e->user), e->pass,
		           strlen(e->pass), &a.q, answered);
	}
	auth_users_unref(users);
	auth_checker_free(ac);
	cr_assert_eq(mq_run(&a.q, &a), 8, "every queued request answered before the stop");
	for (unsigned i = 0; i < 8; i++) {
		cr_assert(a.v[i].answered);
		cr_assert_eq(a.v[i].ok, i % 3 == 0);
		cr_assert(a.v[i].wiped);
	}
	mq_destroy(&a.q);
	free(a.v);
}

Test(auth_checker, no_table_and_long_input)
{
	struct auth_checker *ac = auth_checker_new(1);
	struct asker a = { .ac = ac };
	cr_assert(mq_init(&a.q, false));
	a.v = xcalloc(2, sizeof(*a.v));
	/* No table at all: nobody logs in. */
	a.v[0].from = &a;
	auth_check(ac, &a.v[0].req, NULL, "alice", 5, PW, strlen(PW), &a.q, answered);
	/* A user name longer than any allowed is cut, not overflowed. */
	char longname[AUTH_NAME_MAX * 2];
	memset(longname, 'u', sizeof(longname));
	a.v[1].from = &a;
	auth_check(ac, &a.v[1].req, NULL, longname, sizeof(longname), PW, strlen(PW), &a.q,
	           answered);
	uint64_t deadline = rp_mono_ms() + 30000;
	while (a.answers < 2 && rp_mono_ms() < deadline) {
		struct pollfd pfd = { .fd = a.q.efd, .events = POLLIN };
		poll(&pfd, 1, 200);
		mq_run(&a.q, &a);
	}
	cr_assert_eq(a.answers, 2);
	cr_assert(!a.v[0].ok);
	cr_assert(!a.v[1].ok);
	cr_assert_eq(strlen(a.v[1].req.user), AUTH_NAME_MAX);
	auth_checker_free(ac);
	mq_destroy(&a.q);
	free(a.v);
}

/* ---- the limiter ------------------------------------------------------- */

#define MINUTE 60000ull
#define HOUR   3600000ull
#define T0     1000000000ull /* a monotonic "now" far from zero */

static struct sockaddr_storage v4(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(40000);
	cr_assert_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1, "%s", ip);
	return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(40000);
	cr_assert_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1, "%s", ip);
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* fail_n - n failures at now; the count after the last; *blocked_at: on
 * which failure (1-based) the block came, 0 if none. */
static unsigned fail_n(struct auth_limiter *l, const struct sockaddr_storage *ss, unsigned n,
                       uint64_t now, unsigned *blocked_at)
{
	unsigned count = 0;
	*blocked_at = 0;
	for (unsigned i = 1; i <= n; i++) {
		bool b;
		count = auth_limiter_fail(l, (const struct sockaddr *)ss, now, &b);
		if (b && !*blocked_at)
			*blocked_at = i;
	}
	return count;
}

Test(auth_limiter, counts_then_blocks_for_a_minute)
{
	struct auth_limiter *l = auth_limiter_new(5);
	struct sockaddr_storage a = v4("192.0.2.1");
	uint64_t left = 12345;
	cr_assert(!auth_limiter_blocked(l, SA(a), T0, &left), "nobody has failed yet");
	cr_assert_eq(left, 12345, "left untouched when not blocked");
	for (unsigned i = 1; i <= 4; i++) {
		bool b = true;
		cr_assert_eq(auth_limiter_fail(l, SA(a), T0 + i, &b), i);
		cr_assert(!b, "blocked after %u of 5", i);
		cr_assert(!auth_limiter_blocked(l, SA(a), T0 + i, NULL));
	}
	bool b = false;
	cr_assert_eq(auth_limiter_fail(l, SA(a), T0 + 10, &b), 5);
	cr_assert(b, "the fifth failure blocks");
	cr_assert(auth_limiter_blocked(l, SA(a), T0 + 10, &left));
	cr_assert_eq(left, MINUTE, "blocked for a minute");
	cr_assert(auth_limiter_blocked(l, SA(a), T0 + 10 + MINUTE - 1, &left));
	cr_assert_eq(left, 1);
	cr_assert(!auth_limiter_blocked(l, SA(a), T0 + 10 + MINUTE, NULL), "over at blocked_until");
	auth_limiter_free(l);
}

Test(auth_limiter, the_window_is_a_minute)
{
	struct auth_limiter *l = auth_limiter_new(3);
	struct sockaddr_storage a = v4("192.0.2.7");
	unsigned at;
	cr_assert_eq(fail_n(l, &a, 2, T0, &at), 2);
	cr_assert_eq(at, 0);
	/* A minute later the count starts over. */
	cr_assert_eq(fail_n(l, &a, 1, T0 + MINUTE, &at), 1);
	cr_assert_eq(at, 0);
	cr_assert_eq(fail_n(l, &a, 1, T0 + MINUTE + 5, &at), 2);
	cr_assert_eq(fail_n(l, &a, 1, T0 + MINUTE + 9, &at), 3);
	cr_assert_eq(at, 1, "three within the minute block");
	auth_limiter_free(l);
}

Test(auth_limiter, doubling_up_to_an_hour)
{
	struct auth_limiter *l = auth_limiter_new(2);
	struct sockaddr_storage a = v4("198.51.100.9");
	uint64_t now = T0, left = 0;
	uint64_t want = MINUTE;
	for (unsigned round = 0; round < 10; round++) {
		unsigned at;
		fail_n(l, &a, 2, now, &at);
		cr_assert_eq(at, 2, "round %u: blocked at the second failure", round);
		cr_assert(auth_limiter_blocked(l, SA(a), now, &left));
		cr_assert_eq(left, want, "round %u: blocked %llu ms, want %llu", round,
		             (unsigned long long)left, (unsigned long long)want);
		/* The next round comes right after this block ends. */
		now += left;
		cr_assert(!auth_limiter_blocked(l, SA(a), now, NULL));
		want = RP_MIN(want * 2, HOUR);
	}
	cr_assert_eq(want, HOUR, "the cap was reached");
	auth_limiter_free(l);
}

Test(auth_limiter, a_repeat_long_after_starts_over)
{
	/* Back-off history older than an hour past the block is forgotten:
	 * the next block is a minute again, whether or not another address
	 * happened to share the slot. */
	struct auth_limiter *l = auth_limiter_new(2);
	struct sockaddr_storage a = v4("203.0.113.77");
	uint64_t left = 0;
	unsigned at;
	fail_n(l, &a, 2, T0, &at);
	cr_assert(auth_limiter_blocked(l, SA(a), T0, &left));
	cr_assert_eq(left, MINUTE);
	/* Within the hour after the block: doubled. */
	uint64_t t1 = T0 + MINUTE + 30 * MINUTE;
	fail_n(l, &a, 2, t1, &at);
	cr_assert(auth_limiter_blocked(l, SA(a), t1, &left));
	cr_assert_eq(left, 2 * MINUTE);
	/* Two hours after that block ended: a first offence again. */
	uint64_t t2 = t1 + 2 * MINUTE + 2 * HOUR;
	cr_assert(!auth_limiter_blocked(l, SA(a), t2, NULL));
	cr_assert_eq(fail_n(l, &a, 1, t2, &at), 1, "the count starts over");
	fail_n(l, &a, 1, t2 + 1, &at);
	cr_assert_eq(at, 1);
	cr_assert(auth_limiter_blocked(l, SA(a), t2 + 1, &left));
	cr_assert_eq(left, MINUTE, "a repeat two hours after is not doubled (got %llu ms)",
	             (unsigned long long)left);
	auth_limiter_free(l);
}

Test(auth_limiter, addresses_are_independent)
{
	struct auth_limiter *l = auth_limiter_new(3);
	struct sockaddr_storage a = v4("192.0.2.1"), b = v4("192.0.2.2"), c = v4("10.0.0.1");
	unsigned at;
	fail_n(l, &a, 3, T0, &at);
	cr_assert_eq(at, 3);
	cr_assert(auth_limiter_blocked(l, SA(a), T0 + 1, NULL));
	cr_assert(!auth_limiter_blocked(l, SA(b), T0 + 1, NULL), "the neighbour is not blocked");
	cr_assert(!auth_limiter_blocked(l, SA(c), T0 + 1, NULL));
	cr_assert_eq(fail_n(l, &b, 1, T0 + 1, &at), 1, "the neighbour's count is its own");
	cr_assert_eq(fail_n(l, &b, 1, T0 + 2, &at), 2);
	cr_assert_eq(at, 0);
	/* The port does not matter: one address, one count. */
	struct sockaddr_storage a2 = a;
	((struct sockaddr_in *)&a2)->sin_port = htons(51000);
	cr_assert(auth_limiter_blocked(l, SA(a2), T0 + 1, NULL));
	/* Many other addresses failing do not lift the block. */
	for (unsigned i = 0; i < 500; i++) {
		char ip[32];
		snprintf(ip, sizeof(ip), "10.1.%u.%u", i / 200, i % 200 + 1);
		struct sockaddr_storage o = v4(ip);
		bool blk;
		auth_limiter_fail(l, SA(o), T0 + 3, &blk);
	}
	cr_assert(auth_limiter_blocked(l, SA(a), T0 + 4, NULL));
	auth_limiter_free(l);
}

Test(auth_limiter, ipv6_counts_per_64)
{
	struct auth_limiter *l = auth_limiter_new(3);
	struct sockaddr_storage a1 = v6("2001:db8:1:2::1"), a2 = v6("2001:db8:1:2:ffff:ee:dd:9"),
	                        a3 = v6("2001:db8:1:2:8000::42"), other = v6("2001:db8:1:3::1");
	unsigned at;
	cr_assert_eq(fail_n(l, &a1, 1, T0, &at), 1);
	cr_assert_eq(fail_n(l, &a2, 1, T0, &at), 2, "the same /64 counts together");
	cr_assert_eq(fail_n(l, &other, 1, T0, &at), 1, "another /64 is another client");
	cr_assert_eq(fail_n(l, &a3, 1, T0, &at), 3);
	cr_assert_eq(at, 1);
	cr_assert(auth_limiter_blocked(l, SA(a1), T0, NULL));
	cr_assert(auth_limiter_blocked(l, SA(a2), T0, NULL), "the whole /64 is blocked");
	cr_assert(!auth_limiter_blocked(l, SA(other), T0, NULL));
	auth_limiter_free(l);
}

Test(auth_limiter, v4_mapped_is_v4)
{
	struct auth_limiter *l = auth_limiter_new(2);
	struct sockaddr_storage a = v4("192.0.2.33"), m = v6("::ffff:192.0.2.33"),
	                        n = v6("::ffff:192.0.2.34");
	unsigned at;
	cr_assert_eq(fail_n(l, &a, 1, T0, &at), 1);
	cr_assert_eq(fail_n(l, &m, 1, T0, &at), 2, "::ffff:a.b.c.d is a.b.c.d");
	cr_assert_eq(at, 1);
	cr_assert(auth_limiter_blocked(l, SA(a), T0, NULL));
	cr_assert(!auth_limiter_blocked(l, SA(n), T0, NULL), "mapped addresses are not a /64");
	auth_limiter_free(l);
}

Test(auth_limiter, max_changes_and_odd_input)
{
	struct auth_limiter *l = auth_limiter_new(0); /* 0 means 1 */
	struct sockaddr_storage a = v4("192.0.2.50"), b = v4("192.0.2.51");
	unsigned at;
	fail_n(l, &a, 1, T0, &at);
	cr_assert_eq(at, 1, "max_failures 0 acts as 1");
	auth_limiter_set_max(l, 4);
	cr_assert_eq(fail_n(l, &b, 3, T0, &at), 3);
	cr_assert_eq(at, 0);
	auth_limiter_set_max(l, 2); /* a reload lowers it: the next failure blocks */
	fail_n(l, &b, 1, T0 + 1, &at);
	cr_assert_eq(at, 1);
	/* Addresses of other families are not counted. */
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	bool blk = true;
	cr_assert_eq(auth_limiter_fail(l, (struct sockaddr *)&un, T0, &blk), 0);
	cr_assert(!blk);
	cr_assert(!auth_limiter_blocked(l, (struct sockaddr *)&un, T0, NULL));
	auth_limiter_free(l);
	auth_limiter_free(NULL);
}

/* ---- SASL PLAIN responses --------------------------------------------- */

static enum auth_plain_result decode_plain(const char *b64, struct buf *b, struct auth_plain *a)
{
	return auth_plain_decode(b64, strlen(b64), b, a);
}

Test(auth_plain, identity_and_password)
{
	struct buf b = { 0 };
	struct auth_plain a;
	/* "\0alice\0s3cret" and "alice\0alice\0s3cret" */
	cr_assert_eq(decode_plain("AGFsaWNlAHMzY3JldA==", &b, &a), AUTH_PLAIN_OK);
	cr_assert_eq(a.clen, 5);
	cr_assert(!memcmp(a.cid, "alice", 5));
	cr_assert_eq(a.plen, 6);
	cr_assert(!memcmp(a.pw, "s3cret", 6));
	auth_wipe(&b);
	cr_assert_eq(decode_plain("YWxpY2UAYWxpY2UAczNjcmV0", &b, &a), AUTH_PLAIN_OK);
	auth_wipe(&b);
	cr_assert_null(b.data);
}

Test(auth_plain, refusals)
{
	struct buf b = { 0 };
	struct auth_plain a;
	cr_assert_eq(decode_plain("not base64!", &b, &a), AUTH_PLAIN_BAD_B64);
	auth_wipe(&b);
	cr_assert_eq(decode_plain("=", &b, &a), AUTH_PLAIN_MALFORMED); /* empty */
	auth_wipe(&b);
	cr_assert_eq(decode_plain("YWxpY2U=", &b, &a), AUTH_PLAIN_MALFORMED); /* "alice" */
	auth_wipe(&b);
	/* "bob\0alice\0pw": alice acting for bob is not granted; cid is alice */
	cr_assert_eq(decode_plain("Ym9iAGFsaWNlAHB3", &b, &a), AUTH_PLAIN_PROXY);
	cr_assert_eq(a.clen, 5);
	cr_assert(!memcmp(a.cid, "alice", 5));
	auth_wipe(&b);
	/* longer than any name and password together */
	char big[1200];
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(decode_plain(big, &b, &a), AUTH_PLAIN_BAD_B64);
	auth_wipe(&b);
}
