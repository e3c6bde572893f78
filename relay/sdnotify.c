/* sdnotify.c - sd_notify(3) datagrams to $NOTIFY_SOCKET (see sdnotify.h).
 * One socket per notification, closed at once: notifications are rare
 * (start-up, reload, stop), and no descriptor is kept across fork or
 * privilege changes.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* notify_addr - $NOTIFY_SOCKET as a sockaddr_un: a path ("/...") or an
 * abstract name ("@..." -> a leading NUL, the length covering the name
 * only). 0 when unset, -1 (errno) when malformed, else 1. */
static int notify_addr(struct sockaddr_un *sa, socklen_t *len)
{
	const char *e = getenv("NOTIFY_SOCKET");
	if (!e || !*e)
		return 0;
	size_t n = strlen(e);
	if (e[0] != '/' && e[0] != '@') {
		errno = EINVAL; /* vsock:, relative paths: not ours to guess */
		return -1;
	}
	if (n > sizeof(sa->sun_path) || (e[0] == '/' && n == sizeof(sa->sun_path))) {
		errno = ENAMETOOLONG; /* a path needs room for its NUL */
		return -1;
	}
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, e, n);
	if (e[0] == '@') {
		sa->sun_path[0] = '\0';
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	return 1;
}

int sdnotify_send(const char *msg)
{
	struct sockaddr_un sa;
	socklen_t len = 0;
	int rc = notify_addr(&sa, &len);
	if (rc <= 0)
		return rc;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	size_t n = strlen(msg);
	ssize_t sent = sendto(fd, msg, n, MSG_NOSIGNAL, (const struct sockaddr *)&sa, len);
	int saved = errno;
	close(fd);
	if (sent < 0) {
		errno = saved;
		return -1;
	}
	if ((size_t)sent != n) { /* a datagram goes whole or not at all */
		errno = EMSGSIZE;
		return -1;
	}
	return 1;
}

int sdnotify_sendf(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return sdnotify_send(msg);
}
