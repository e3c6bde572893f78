/* test_sdnotify.c - the sd_notify protocol (relay/sdnotify.c) against a
 * real AF_UNIX datagram socket standing in for systemd: a path and an
 * abstract ("@") name receive exactly the message sent; unset or empty
 * $NOTIFY_SOCKET sends nothing; a malformed or too long value, or nobody
 * listening, is an error, never a crash; a manager that never reads
 * makes a send fail with EAGAIN at once instead of blocking.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "relay/sdnotify.h"
#include "tests/unit/support.h"

static char tmpdir[64];

static void setup(void)
{
	test_tmpdir(tmpdir, sizeof(tmpdir), "sdnotify");
	unsetenv("NOTIFY_SOCKET");
}

static void teardown(void)
{
	test_rmdir(tmpdir);
}

TestSuite(sdnotify, .init = setup, .fini = teardown, .timeout = 20);

/* bind_dgram - a datagram socket bound to name ("/path" or "@abstract"),
 * as systemd's notification socket is. */
static int bind_dgram(const char *name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(name);
	cr_assert_lt(n, sizeof(sa.sun_path));
	memcpy(sa.sun_path, name, n);
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	else
		len++;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, len), 0, "bind %s: %s", name,
	             strerror(errno));
	return fd;
}

/* recv_one - the next datagram on fd within 2 s, NUL-terminated; its
 * length, or -1 when none came. */
static ssize_t recv_one(int fd, char *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 2000) != 1)
		return -1;
	ssize_t n = recv(fd, buf, len - 1, MSG_DONTWAIT);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

static bool nothing_waiting(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 50) == 0;
}

Test(sdnotify, path_socket_gets_each_message_whole)
{
	char path[128], buf[2048];
	snprintf(path, sizeof(path), "%s/notify", tmpdir);
	int fd = bind_dgram(path);
	setenv("NOTIFY_SOCKET", path, 1);
	cr_assert_eq(sdnotify_send("READY=1\nSTATUS=accepting mail"), 1, "%s", strerror(errno));
	cr_assert_eq(recv_one(fd, buf, sizeof(buf)), 29);
	cr_assert_str_eq(buf, "READY=1\nSTATUS=accepting mail");
	cr_assert_eq(sdnotify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu", 12345ull), 1);
	cr_assert_gt(recv_one(fd, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "RELOADING=1\nMONOTONIC_USEC=12345");
	cr_assert_eq(sdnotify_send("STOPPING=1"), 1);
	cr_assert_gt(recv_one(fd, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "STOPPING=1");
	cr_assert(nothing_waiting(fd), "one datagram per notification");
	close(fd);
}

Test(sdnotify, abstract_socket)
{
	char name[108], buf[256];
	snprintf(name, sizeof(name), "@rp-sdnotify-test-%d-%ld", (int)getpid(), (long)time(NULL));
	int fd = bind_dgram(name);
	setenv("NOTIFY_SOCKET", name, 1);
	cr_assert_eq(sdnotify_send("READY=1"), 1, "%s", strerror(errno));
	cr_assert_eq(recv_one(fd, buf, sizeof(buf)), 7);
	cr_assert_str_eq(buf, "READY=1");
	/* The abstract name is the bytes after '@', no trailing NUL: a
	 * socket bound with a NUL appended must not get it. */
	close(fd);
	char longer[120];
	snprintf(longer, sizeof(longer), "%s", name);
	size_t n = strlen(longer);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, longer, n);
	sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa,
	                  (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1)),
	             0);
	cr_assert_eq(sdnotify_send("READY=1"), -1, "sent to the name with a NUL appended");
	cr_assert_eq(errno, ECONNREFUSED);
	close(fd);
}

Test(sdnotify, unset_or_empty_sends_nothing)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/notify", tmpdir);
	int fd = bind_dgram(path);
	cr_assert_eq(sdnotify_send("READY=1"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	cr_assert_eq(sdnotify_sendf("READY=%d", 1), 0);
	cr_assert(nothing_waiting(fd));
	close(fd);
}

Test(sdnotify, bad_values_are_errors)
{
	setenv("NOTIFY_SOCKET", "relative/notify", 1);
	cr_assert_eq(sdnotify_send("READY=1"), -1);
	cr_assert_eq(errno, EINVAL);
	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	cr_assert_eq(sdnotify_send("READY=1"), -1);
	cr_assert_eq(errno, EINVAL);
	char longpath[200];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longpath, 1);
	cr_assert_eq(sdnotify_send("READY=1"), -1);
	cr_assert_eq(errno, ENAMETOOLONG);
	longpath[108] = '\0'; /* exactly sun_path: no room for the NUL */
	setenv("NOTIFY_SOCKET", longpath, 1);
	cr_assert_eq(sdnotify_send("READY=1"), -1);
	cr_assert_eq(errno, ENAMETOOLONG);
	char path[128];
	snprintf(path, sizeof(path), "%s/nobody-listens", tmpdir);
	setenv("NOTIFY_SOCKET", path, 1);
	cr_assert_eq(sdnotify_send("READY=1"), -1);
	cr_assert_eq(errno, ENOENT);
}

/* A manager that never reads: its queue fills (net.unix.max_dgram_qlen
 * or its receive buffer) and a blocking sendto would wait forever; ours fails
 * with EAGAIN at once. */
Test(sdnotify, full_queue_never_blocks)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/notify", tmpdir);
	int fd = bind_dgram(path);
	setenv("NOTIFY_SOCKET", path, 1);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int sent = 0, failed = 0, err = 0;
	for (int i = 0; i < 5000 && !failed; i++) {
		if (sdnotify_send("STATUS=filling the queue of a manager that never reads") == 1) {
			sent++;
		} else {
			failed++;
			err = errno;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_assert_eq(failed, 1, "5000 datagrams all queued?");
	cr_assert_eq(err, EAGAIN, "errno %s", strerror(err));
	cr_assert_gt(sent, 0);
	cr_assert_lt(secs, 5.0, "took %.1f s", secs);
	close(fd);
}
