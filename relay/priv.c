/* priv.c - least privilege for serve (see priv.h).
 *
 * Promises: nothing here runs on an event loop; priv_drop either leaves
 * the process with the user's uids, gids and groups everywhere (real,
 * effective, saved, filesystem) and no way back, or reports failure and
 * serve exits; priv_prepare_dir never chowns through a symbolic link.
 */
#include "priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

#define PRIV_MAX_DEPTH  16  /* directory levels below data_dir */
#define PRIV_MAX_GROUPS 256 /* supplementary groups of the user */

/* listen_addrs - every [listen] address of cfg, set or not. */
static void listen_addrs(const struct config *cfg, const struct cfg_addr *out[8],
                         const char *names[8])
{
	const struct {
		const struct cfg_addr *a;
		const char *name;
	} ls[8] = {
		{ &cfg->listen_submission, "submission" },
		{ &cfg->listen_submissions, "submissions" },
		{ &cfg->listen_api, "api" },
		{ &cfg->listen_inbound, "inbound" },
		{ &cfg->listen_imap, "imap" },
		{ &cfg->listen_imaps, "imaps" },
		{ &cfg->listen_pop3, "pop3" },
		{ &cfg->listen_pop3s, "pop3s" },
	};
	for (unsigned i = 0; i < 8; i++) {
		out[i] = ls[i].a;
		names[i] = ls[i].name;
	}
}

/* in_root_group - whether name (primary group gid) belongs to group 0. */
static bool in_root_group(const char *name, gid_t gid)
{
	gid_t groups[PRIV_MAX_GROUPS];
	int n = PRIV_MAX_GROUPS;
	if (gid == 0)
		return true;
	if (getgrouplist(name, gid, groups, &n) < 0)
		return true; /* more groups than we look at: say no to the unknown */
	for (int i = 0; i < n; i++)
		if (groups[i] == 0)
			return true;
	return false;
}

bool priv_plan(const struct config *cfg, bool serving, struct priv_plan *plan, char *err,
               size_t errlen, int *code)
{
	memset(plan, 0, sizeof(*plan));
	*code = RP_EX_CONFIG;
	bool root = geteuid() == 0;
	if (!cfg->user[0]) {
		if (!root)
			return true;
		const struct cfg_addr *ls[8];
		const char *names[8];
		listen_addrs(cfg, ls, names);
		for (unsigned i = 0; i < 8; i++) {
			if (!ls[i]->set || config_addr_loopback(ls[i]))
				continue;
			snprintf(err, errlen,
			         "%s: running as root with [listen] %s on %s (not loopback): set "
			         "[server] user to an unprivileged user; ringpost binds as root, "
			         "then runs as that user",
			         cfg->path, names[i], ls[i]->text);
			return false;
		}
		snprintf(plan->warning, sizeof(plan->warning),
		         "running as root without [server] user: allowed because every listener "
		         "is on loopback; set [server] user to run unprivileged");
		return true;
	}
	long bufsize = sysconf(_SC_GETPW_R_SIZE_MAX);
	if (bufsize < 16384)
		bufsize = 16384;
	char *buf = xmalloc((size_t)bufsize);
	struct passwd pw, *found = NULL;
	int rc = getpwnam_r(cfg->user, &pw, buf, (size_t)bufsize, &found);
	if (!found) {
		snprintf(err, errlen, "%s:%u: [server] user %s %s", cfg->path, cfg->user_line,
		         cfg->user, rc ? "cannot be looked up" : "does not exist");
		if (rc)
			snprintf(err + strlen(err), errlen - strlen(err), ": %s", strerror(rc));
		free(buf);
		return false;
	}
	plan->uid = pw.pw_uid;
	plan->gid = pw.pw_gid;
	snprintf(plan->name, sizeof(plan->name), "%s", pw.pw_name);
	free(buf);
	if (plan->uid == 0) {
		snprintf(err, errlen,
		         "%s:%u: [server] user %s is root (uid 0): name an unprivileged user",
		         cfg->path, cfg->user_line, cfg->user);
		return false;
	}
	if (in_root_group(plan->name, plan->gid)) {
		snprintf(err, errlen,
		         "%s:%u: [server] user %s is in group root (gid 0): name a user outside it",
		         cfg->path, cfg->user_line, cfg->user);
		return false;
	}
	if (root) {
		plan->drop = true;
		return true;
	}
	if (getuid() == plan->uid && geteuid() == plan->uid)
		return true; /* already that user: nothing to switch */
	if (!serving)
		return true;
	*code = RP_EX_NOPERM;
	snprintf(err, errlen,
	         "%s:%u: [server] user is %s, but ringpost runs as uid %u, not root: it cannot "
	         "switch users (start it as root, or as %s)",
	         cfg->path, cfg->user_line, cfg->user, (unsigned)geteuid(), cfg->user);
	return false;
}

/* ---- limits ------------------------------------------------------------ */

uint64_t priv_raise_memlock(uint64_t need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return 0;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		struct rlimit want = { .rlim_cur = need, .rlim_max = rl.rlim_max };
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
			want.rlim_cur = rl.rlim_max;
		if (want.rlim_cur > rl.rlim_cur && setrlimit(RLIMIT_MEMLOCK, &want) == 0)
			rl = want;
	}
	return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

/* ---- data_dir ---------------------------------------------------------- */

/* make_dirs - create dir and its missing parents (0755; dir itself 0750). */
static bool make_dirs(const char *dir, char *err, size_t errlen)
{
	char tmp[4096];
	if (strlen(dir) >= sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return false;
	}
	strcpy(tmp, dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "%s: cannot create directory: %s", tmp,
			         strerror(errno));
			return false;
		}
		*p = '/';
	}
	if (mkdir(tmp, 0750) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: cannot create directory: %s", tmp, strerror(errno));
		return false;
	}
	return true;
}

/* give - fchownat(dirfd, name) without following a link (name "": dirfd
 * itself), when st is not already the user's. */
static bool give(const struct priv_plan *plan, int dirfd, const char *name, const struct stat *st,
                 const char *path, unsigned *changed, char *err, size_t errlen)
{
	if (st->st_uid == plan->uid && st->st_gid == plan->gid)
		return true;
	int rc = name[0] ? fchownat(dirfd, name, plan->uid, plan->gid, AT_SYMLINK_NOFOLLOW)
	                 : fchown(dirfd, plan->uid, plan->gid);
	if (rc < 0) {
		snprintf(err, errlen, "%s: cannot give it to %s: %s", path, plan->name,
		         strerror(errno));
		return false;
	}
	(*changed)++;
	return true;
}

/* give_tree - dirfd (path, owned by the caller's fd) and what is below it. */
static bool give_tree(const struct priv_plan *plan, int dirfd, const char *path, unsigned depth,
                      unsigned *changed, char *err, size_t errlen)
{
	struct stat st;
	if (fstat(dirfd, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return false;
	}
	if (!give(plan, dirfd, "", &st, path, changed, err, errlen))
		return false;
	if (depth > PRIV_MAX_DEPTH) {
		snprintf(err, errlen, "%s: directories nested too deep", path);
		return false;
	}
	int lfd = dup(dirfd);
	DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
	if (!d) {
		snprintf(err, errlen, "%s: cannot list: %s", path, strerror(errno));
		if (lfd >= 0)
			close(lfd);
		return false;
	}
	bool ok = true;
	struct dirent *e;
	while (ok && (e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char sub[4096];
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			snprintf(err, errlen, "%s: %s", sub, strerror(errno));
			ok = false;
		} else if (S_ISDIR(st.st_mode)) {
			int fd = openat(dirfd, e->d_name,
			                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0) {
				snprintf(err, errlen, "%s: cannot open: %s", sub, strerror(errno));
				ok = false;
			} else {
				ok = give_tree(plan, fd, sub, depth + 1, changed, err, errlen);
				close(fd);
			}
		} else if (S_ISREG(st.st_mode)) {
			/* A hard link to a file elsewhere would hand that file over. */
			if (st.st_nlink > 1 && st.st_uid != plan->uid) {
				snprintf(err, errlen,
				         "%s has %lu hard links: refusing to give it to %s (remove "
				         "the extra links)",
				         sub, (unsigned long)st.st_nlink, plan->name);
				ok = false;
			} else {
				ok = give(plan, dirfd, e->d_name, &st, sub, changed, err, errlen);
			}
		}
	}
	closedir(d);
	return ok;
}

bool priv_prepare_dir(const struct priv_plan *plan, const char *dir, unsigned *changed, char *err,
                      size_t errlen)
{
	*changed = 0;
	if (!make_dirs(dir, err, errlen))
		return false;
	/* data_dir itself may be a link the administrator made (owned by
	 * root); one the user could have made is not followed. */
	struct stat lst;
	if (lstat(dir, &lst) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return false;
	}
	if (S_ISLNK(lst.st_mode) && lst.st_uid != 0) {
		snprintf(err, errlen,
		         "%s is a symbolic link owned by uid %u, not root: refusing to give what "
		         "it points to to %s",
		         dir, (unsigned)lst.st_uid, plan->name);
		return false;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", dir, strerror(errno));
		return false;
	}
	bool ok = give_tree(plan, fd, dir, 0, changed, err, errlen);
	close(fd);
	return ok;
}

/* ---- the switch -------------------------------------------------------- */

bool priv_drop(const struct priv_plan *plan, char *err, size_t errlen)
{
	if (initgroups(plan->name, plan->gid) < 0) {
		snprintf(err, errlen, "cannot set the groups of %s: %s", plan->name,
		         strerror(errno));
		return false;
	}
	if (setresgid(plan->gid, plan->gid, plan->gid) < 0) {
		snprintf(err, errlen, "cannot switch to group %u: %s", (unsigned)plan->gid,
		         strerror(errno));
		return false;
	}
	if (setresuid(plan->uid, plan->uid, plan->uid) < 0) {
		snprintf(err, errlen, "cannot switch to user %s (uid %u): %s", plan->name,
		         (unsigned)plan->uid, strerror(errno));
		return false;
	}
	/* No exec may gain privileges back (ringpost execs nothing). */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(err, errlen, "cannot set no_new_privs: %s", strerror(errno));
		return false;
	}
	/* Trust, but verify: every id is the user's, and there is no way back. */
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != plan->uid ||
	    eu != plan->uid || su != plan->uid || rg != plan->gid || eg != plan->gid ||
	    sg != plan->gid) {
		snprintf(err, errlen, "after switching to %s the process still has other ids",
		         plan->name);
		return false;
	}
	gid_t groups[PRIV_MAX_GROUPS];
	int n = getgroups(PRIV_MAX_GROUPS, groups);
	if (n < 0) {
		snprintf(err, errlen, "cannot read the groups of %s: %s", plan->name,
		         strerror(errno));
		return false;
	}
	for (int i = 0; i < n; i++)
		if (groups[i] == 0) {
			snprintf(err, errlen,
			         "after switching to %s the process is still in group root",
			         plan->name);
			return false;
		}
	if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || setegid(0) == 0) {
		snprintf(err, errlen, "after switching to %s the process could become root again",
		         plan->name);
		return false;
	}
	return true;
}
