/* test_priv.c - least privilege (relay/priv.c): the plan serve makes from
 * [server] user and who runs it (unknown user, root, group root, root
 * without user on loopback or not), the data_dir handed to the user
 * without following links or hard links, and the switch itself. Each
 * Criterion test is its own process, so a test may drop root for good.
 * Most need root (the test machine and CI run as root); they skip
 * otherwise.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay/config.h"
#include "relay/priv.h"
#include "tests/unit/support.h"

static char tmpdir[64];

static void setup(void)
{
	test_tmpdir(tmpdir, sizeof(tmpdir), "priv");
	chmod(tmpdir, 0755);
}

static void teardown(void)
{
	test_rmdir(tmpdir);
}

TestSuite(priv, .init = setup, .fini = teardown);

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root (the test machine and CI run as root)");
}

static struct config *load_ok(const char *text)
{
	char path[128], err[512] = "";
	snprintf(path, sizeof(path), "%s/p.conf", tmpdir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
	struct config *c = config_load(path, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	return c;
}

/* plan - priv_plan on text; its result, the plan, err and code. */
static bool plan(const char *text, bool serving, struct priv_plan *p, char *err, size_t n,
                 int *code)
{
	struct config *c = load_ok(text);
	err[0] = '\0';
	bool ok = priv_plan(c, serving, p, err, n, code);
	config_free(c);
	return ok;
}

Test(priv, plan_as_root)
{
	need_root();
	struct priv_plan p;
	char err[600];
	int code = 0;
	struct passwd *nb = getpwnam("nobody");
	cr_assert_not_null(nb);
	cr_assert(plan("[server]\nhostname = h.example\nuser = nobody\n[listen]\n"
	               "submission = 0.0.0.0:25\n",
	               true, &p, err, sizeof(err), &code),
	          "%s", err);
	cr_assert(p.drop);
	cr_assert_eq(p.uid, nb->pw_uid);
	cr_assert_eq(p.gid, nb->pw_gid);
	cr_assert_str_eq(p.name, "nobody");
	cr_assert_str_eq(p.warning, "");

	/* Unknown user: FILE:LINE, 78, for serve and check-config alike. */
	for (int serving = 0; serving < 2; serving++) {
		cr_assert_not(plan("[server]\nhostname = h.example\n\nuser = no-such-user-rp\n",
		                   serving, &p, err, sizeof(err), &code));
		cr_assert_eq(code, RP_EX_CONFIG);
		cr_assert(strstr(err, "/p.conf:4: [server] user no-such-user-rp does not exist"),
		          "%s", err);
	}
	/* root itself, and a user whose group is root. */
	cr_assert_not(plan("[server]\nuser = root\n", true, &p, err, sizeof(err), &code));
	cr_assert_eq(code, RP_EX_CONFIG);
	cr_assert(strstr(err, ":2: [server] user root is root (uid 0)"), "%s", err);
	struct passwd *rootgrp = NULL; /* a user in group root, if this system has one */
	setpwent();
	for (struct passwd *pw; (pw = getpwent()) != NULL;)
		if (pw->pw_uid != 0 && pw->pw_gid == 0) {
			rootgrp = pw;
			break;
		}
	if (rootgrp) {
		char text[200];
		snprintf(text, sizeof(text), "[server]\nuser = %s\n", rootgrp->pw_name);
		cr_assert_not(plan(text, true, &p, err, sizeof(err), &code));
		cr_assert(strstr(err, "is in group root (gid 0)"), "%s", err);
	}
	endpwent();

	/* No user: root only with every listener on loopback. */
	cr_assert(plan("[listen]\nsubmission = 127.0.0.1:2587\napi = [::1]:8025\n", true, &p, err,
	               sizeof(err), &code),
	          "%s", err);
	cr_assert_not(p.drop);
	cr_assert(strstr(p.warning, "running as root without [server] user"), "%s", p.warning);
	cr_assert(plan("[server]\nhostname = h.example\n", true, &p, err, sizeof(err), &code));
	cr_assert_not(p.drop);
	static const char *const open_to_all[] = { "0.0.0.0:2525", "[::]:2525", "*:2525",
		                                   "192.0.2.1:25" };
	for (size_t i = 0; i < sizeof(open_to_all) / sizeof(open_to_all[0]); i++) {
		char text[200];
		snprintf(text, sizeof(text),
		         "[listen]\nsubmission = 127.0.0.1:2587\ninbound = %s\n", open_to_all[i]);
		cr_assert_not(plan(text, true, &p, err, sizeof(err), &code), "%s", open_to_all[i]);
		cr_assert_eq(code, RP_EX_CONFIG);
		cr_assert(strstr(err, "running as root with [listen] inbound on ") &&
		              strstr(err, open_to_all[i]) && strstr(err, "set [server] user"),
		          "%s", err);
	}
}

/* as_nobody - the rest of this process runs as nobody (no way back); the
 * test's directory becomes nobody's so that it can write and remove it. */
static void as_nobody(void)
{
	struct passwd *nb = getpwnam("nobody");
	cr_assert_not_null(nb);
	cr_assert_eq(chown(tmpdir, nb->pw_uid, nb->pw_gid), 0);
	struct priv_plan p = { .drop = true, .uid = nb->pw_uid, .gid = nb->pw_gid };
	snprintf(p.name, sizeof(p.name), "nobody");
	char err[600] = "";
	cr_assert(priv_drop(&p, err, sizeof(err)), "%s", err);
}

Test(priv, plan_not_root)
{
	need_root();
	as_nobody();
	struct priv_plan p;
	char err[600];
	int code = 0;
	/* The user we already are: nothing to do. */
	cr_assert(plan("[server]\nuser = nobody\n", true, &p, err, sizeof(err), &code), "%s", err);
	cr_assert_not(p.drop);
	/* Someone else: serve cannot switch (77); check-config does not care. */
	cr_assert_not(plan("[server]\nuser = daemon\n", true, &p, err, sizeof(err), &code));
	cr_assert_eq(code, RP_EX_NOPERM);
	cr_assert(strstr(err, ":2: [server] user is daemon, but ringpost runs as uid ") &&
	              strstr(err, ", not root: it cannot switch users"),
	          "%s", err);
	cr_assert(plan("[server]\nuser = daemon\n", false, &p, err, sizeof(err), &code), "%s", err);
	/* Not root, no user: anything goes, without a warning. */
	cr_assert(plan("[listen]\nsubmission = 0.0.0.0:2587\n", true, &p, err, sizeof(err), &code));
	cr_assert_not(p.drop);
	cr_assert_str_eq(p.warning, "");
}

Test(priv, drop_is_for_good)
{
	need_root();
	struct passwd *nb = getpwnam("nobody");
	cr_assert_not_null(nb);
	gid_t zero = 0;
	cr_assert_eq(setgroups(1, &zero), 0); /* a root group to lose */
	as_nobody();
	uid_t r, e, s;
	gid_t rg, eg, sg;
	cr_assert_eq(getresuid(&r, &e, &s), 0);
	cr_assert(r == nb->pw_uid && e == nb->pw_uid && s == nb->pw_uid);
	cr_assert_eq(getresgid(&rg, &eg, &sg), 0);
	cr_assert(rg == nb->pw_gid && eg == nb->pw_gid && sg == nb->pw_gid);
	gid_t groups[64];
	int n = getgroups(64, groups);
	cr_assert_geq(n, 0);
	for (int i = 0; i < n; i++)
		cr_assert_neq(groups[i], 0, "still in group root");
	cr_assert_eq(setuid(0), -1);
	cr_assert_eq(setgid(0), -1);
	cr_assert_eq(open("/etc/shadow", O_RDONLY), -1, "nobody reads /etc/shadow");
}

/* owner - uid of path (not following a link). */
static uid_t owner(const char *path)
{
	struct stat st;
	cr_assert_eq(lstat(path, &st), 0, "%s", path);
	return st.st_uid;
}

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	cr_assert_geq(fd, 0, "%s", path);
	close(fd);
}

Test(priv, prepare_dir)
{
	need_root();
	struct passwd *nb = getpwnam("nobody");
	cr_assert_not_null(nb);
	struct priv_plan p = { .drop = true, .uid = nb->pw_uid, .gid = nb->pw_gid };
	snprintf(p.name, sizeof(p.name), "nobody");
	char dir[128], path[256], outside[128], err[600];
	unsigned changed = 0;

	/* Missing: created (parents too), the user's. */
	snprintf(dir, sizeof(dir), "%s/a/b/spool", tmpdir);
	cr_assert(priv_prepare_dir(&p, dir, &changed, err, sizeof(err)), "%s", err);
	cr_assert_eq(owner(dir), nb->pw_uid);
	snprintf(path, sizeof(path), "%s/a", tmpdir);
	cr_assert_eq(owner(path), 0, "parents stay root's");
	cr_assert_eq(changed, 1);

	/* Root's files and directories below: given; a second run changes nothing. */
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	touch(path);
	snprintf(path, sizeof(path), "%s/sub", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub/x", dir);
	touch(path);
	cr_assert(priv_prepare_dir(&p, dir, &changed, err, sizeof(err)), "%s", err);
	cr_assert_eq(changed, 3);
	cr_assert_eq(owner(path), nb->pw_uid);
	cr_assert(priv_prepare_dir(&p, dir, &changed, err, sizeof(err)), "%s", err);
	cr_assert_eq(changed, 0);

	/* A link below is never followed: what it points to stays root's. */
	snprintf(outside, sizeof(outside), "%s/secret", tmpdir);
	touch(outside);
	snprintf(path, sizeof(path), "%s/link", dir);
	cr_assert_eq(symlink(outside, path), 0);
	cr_assert(priv_prepare_dir(&p, dir, &changed, err, sizeof(err)), "%s", err);
	cr_assert_eq(owner(outside), 0, "followed a symbolic link");
	cr_assert_eq(owner(path), 0, "links are left alone");
	/* A hard link to a root file: refused, nothing given. */
	snprintf(path, sizeof(path), "%s/hard", dir);
	cr_assert_eq(link(outside, path), 0);
	cr_assert_not(priv_prepare_dir(&p, dir, &changed, err, sizeof(err)));
	cr_assert(strstr(err, "/hard has 2 hard links: refusing"), "%s", err);
	cr_assert_eq(owner(outside), 0);
	cr_assert_eq(unlink(path), 0);

	/* data_dir itself a link: the administrator's (root's) is followed,
	 * one another user made is not. */
	char target[128], alias[128];
	snprintf(target, sizeof(target), "%s/real", tmpdir);
	cr_assert_eq(mkdir(target, 0750), 0);
	snprintf(alias, sizeof(alias), "%s/alias", tmpdir);
	cr_assert_eq(symlink(target, alias), 0);
	cr_assert(priv_prepare_dir(&p, alias, &changed, err, sizeof(err)), "%s", err);
	cr_assert_eq(owner(target), nb->pw_uid);
	cr_assert_eq(lchown(alias, nb->pw_uid, nb->pw_gid), 0);
	cr_assert_eq(chown(target, 0, 0), 0);
	cr_assert_not(priv_prepare_dir(&p, alias, &changed, err, sizeof(err)));
	char want[100];
	snprintf(want, sizeof(want), "is a symbolic link owned by uid %u, not root",
	         (unsigned)nb->pw_uid);
	cr_assert(strstr(err, want), "%s", err);
	cr_assert_eq(owner(target), 0);
}

Test(priv, raise_memlock)
{
	struct rlimit rl, low;
	cr_assert_eq(getrlimit(RLIMIT_MEMLOCK, &rl), 0);
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (2u << 20))
		cr_skip_test("the hard locked-memory limit is below 2 MiB");
	low = rl;
	low.rlim_cur = 1u << 20;
	cr_assert_eq(setrlimit(RLIMIT_MEMLOCK, &low), 0);
	/* Within the hard limit: the soft one goes up, whoever we are. */
	cr_assert_eq(priv_raise_memlock(2u << 20), 2u << 20);
	cr_assert_eq(getrlimit(RLIMIT_MEMLOCK, &low), 0);
	cr_assert_eq(low.rlim_cur, 2u << 20);
	/* Enough already: nothing changes. */
	cr_assert_eq(priv_raise_memlock(1u << 20), 2u << 20);
	/* Beyond the hard limit: the hard limit, which stays as it was, even
	 * for root (the rings are made before the switch instead). */
	if (rl.rlim_max != RLIM_INFINITY) {
		uint64_t got = priv_raise_memlock((uint64_t)rl.rlim_max * 2);
		cr_assert_eq(got, (uint64_t)rl.rlim_max, "got %llu", (unsigned long long)got);
		cr_assert_eq(getrlimit(RLIMIT_MEMLOCK, &low), 0);
		cr_assert_eq(low.rlim_max, rl.rlim_max, "the hard limit changed");
	}
}
