/* priv.h - least privilege for `ringpost serve`: who the daemon runs as.
 *
 * Started as root with [server] user, serve reads what only root may read
 * (certificates, keys, the users file) and binds its listeners as root;
 * then priv_prepare_dir gives the data_dir to the user and priv_drop
 * switches groups, gid and uid for good, before any thread starts and
 * before any client byte is read. Without [server] user, root is allowed
 * only when every listener is on loopback.
 */
#ifndef RP_PRIV_H
#define RP_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"

/* What serve does about its privileges (priv_plan fills it). */
struct priv_plan {
	bool drop;         /* started as root with [server] user: switch to it */
	uid_t uid;         /* the user's */
	gid_t gid;         /* its primary group */
	char name[64];     /* its name (initgroups) */
	char warning[400]; /* a line to log at start-up ("" = none) */
};

/* priv_plan - decide, from cfg and the identity we run with, whether serve
 * may start and whether it drops. Looks [server] user up (getpwnam).
 * false when it must not start: "FILE[:LINE]: reason" in err and the exit
 * status in *code: 78 an unknown user, user root (uid 0) or a user in
 * group root, or root without user on a non-loopback listener; 77 user
 * set, not started as root, and not running as that user (only when
 * serving: check-config may be run by anyone). */
bool priv_plan(const struct config *cfg, bool serving, struct priv_plan *plan, char *err,
               size_t errlen, int *code);

/* priv_raise_memlock - io_uring rings and buffer rings made by a process
 * without CAP_IPC_LOCK count against RLIMIT_MEMLOCK (Linux 6.x), per user
 * (serve makes them before priv_drop, so this matters only when it was
 * not started as root): raise the soft limit towards need bytes, never
 * past the hard limit (the hard limit is left alone: the user gets no
 * more locked memory than the administrator gave). Returns the soft
 * limit now (UINT64_MAX for unlimited). */
uint64_t priv_raise_memlock(uint64_t need);

/* priv_prepare_dir - as root: create dir when missing (parents 0755, dir
 * 0750) and give it, and every directory and regular file below it, to
 * the plan's user where not already its. Never follows a symbolic link
 * below dir; leaves links, devices, fifos and sockets alone; refuses a
 * file with several hard links. *changed counts what was chowned. false
 * with err naming the path. */
bool priv_prepare_dir(const struct priv_plan *plan, const char *dir, unsigned *changed, char *err,
                      size_t errlen);

/* priv_drop - setgroups (the user's groups), setresgid, setresuid,
 * no_new_privs; then checks that every uid and gid is the user's, that no
 * group is 0, and that setuid(0) and setgid(0) fail. Call before any
 * thread exists. false with err when any step fails (serve exits). */
bool priv_drop(const struct priv_plan *plan, char *err, size_t errlen);

#endif
