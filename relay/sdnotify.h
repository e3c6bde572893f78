/* sdnotify.h - the sd_notify protocol without libsystemd: tell the service
 * manager (systemd's Type=notify) that the daemon is ready, reloading or
 * stopping.
 *
 * The protocol (sd_notify(3)): $NOTIFY_SOCKET names an AF_UNIX datagram
 * socket, a file system path ("/run/systemd/notify") or an abstract name
 * ("@name"); each notification is one datagram of newline-separated
 * VAR=VALUE lines ("READY=1\nSTATUS=accepting mail"). Without
 * $NOTIFY_SOCKET (not started by systemd) nothing is sent. Sending never
 * blocks: one non-blocking sendto on a fresh SOCK_DGRAM socket, so a
 * manager that does not read costs a lost notification, never a stall.
 */
#ifndef RP_SDNOTIFY_H
#define RP_SDNOTIFY_H

/* sdnotify_send - send msg (VAR=VALUE lines) to $NOTIFY_SOCKET. Returns 1
 * when sent, 0 when $NOTIFY_SOCKET is unset or empty (nothing to do), -1
 * with errno when it could not be sent: EINVAL a value that is neither an
 * absolute path nor "@name", ENAMETOOLONG a name longer than sun_path,
 * EAGAIN the manager's queue is full, or what socket(2)/sendto(2) said.
 * Any thread. */
int sdnotify_send(const char *msg);

/* sdnotify_sendf - sdnotify_send of a printf-formatted message; a message
 * longer than 1 KiB is cut there. Same returns. */
int sdnotify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
