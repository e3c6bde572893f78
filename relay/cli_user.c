/* cli_user.c - `ringpost user add NAME` and `ringpost user del NAME`: edit
 * the [auth] users file.
 *
 * The password comes from standard input: prompted twice without echo on
 * a terminal, the first line otherwise. It is hashed with yescrypt
 * (crypt(3) "$y$"). The file is rewritten whole into a temporary file in
 * the same directory, synced and renamed over the old one, so a crash
 * leaves either the old file or the new one; other lines (comments, other
 * users) are kept as they were. A running daemon picks the change up on
 * SIGHUP. Exit status: 0; 64 usage; 65 a bad name or password; 67 no such
 * user (del); 73 the file cannot be written; 78 config.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "base/auth.h"
#include "base/buf.h"
#include "base/util.h"
#include "cli.h"
#include "config.h"

#define EX_NOUSER 67

/* name_ok - a user name the file can hold. */
static bool name_ok(const char *n)
{
	size_t len = strlen(n);
	if (!len || len > AUTH_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)n[i];
		if (c <= ' ' || c == ':' || c == 127)
			return false;
	}
	return true;
}

/* read_line - one line from f without its line end; false at EOF. */
static bool read_line(FILE *f, char *out, size_t outlen)
{
	if (!fgets(out, (int)outlen, f))
		return false;
	size_t n = strlen(out);
	if (n && out[n - 1] == '\n')
		out[--n] = '\0';
	else if (n == outlen - 1)
		return false; /* longer than a password may be */
	if (n && out[n - 1] == '\r')
		out[--n] = '\0';
	return true;
}

/* prompt - ask on the terminal without echo. */
static bool prompt(const char *what, char *out, size_t outlen)
{
	struct termios old, quiet;
	fprintf(stderr, "%s", what);
	fflush(stderr);
	bool tty = tcgetattr(STDIN_FILENO, &old) == 0;
	if (tty) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	bool ok = read_line(stdin, out, outlen);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	return ok;
}

/* get_password - from a prompt (twice) or the first line of stdin. */
static void get_password(char *pass, size_t len)
{
	if (isatty(STDIN_FILENO)) {
		char again[AUTH_PASS_MAX + 2];
		if (!prompt("Password: ", pass, len) || !prompt("Again: ", again, sizeof(again)))
			rp_die(RP_EX_DATAERR, "no password given");
		bool same = !strcmp(pass, again);
		OPENSSL_cleanse(again, sizeof(again));
		if (!same)
			rp_die(RP_EX_DATAERR, "the two passwords differ");
	} else if (!read_line(stdin, pass, len)) {
		rp_die(RP_EX_DATAERR, "no password on standard input (one line, at most %d bytes)",
		       AUTH_PASS_MAX);
	}
	if (!pass[0])
		rp_die(RP_EX_DATAERR, "the password is empty");
}

/* line_user - whether line is NAME's entry ("NAME:..."). */
static bool line_user(const char *line, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(line, name, n) && line[n] == ':';
}

/* rewrite - path's lines with NAME's entry replaced by entry (or removed
 * when entry is NULL), written atomically, keeping the file's mode (and,
 * run as root, its owner and group). Returns whether NAME was there. */
static bool rewrite(const char *path, const char *name, const char *entry)
{
	struct buf out = { 0 };
	bool found = false;
	mode_t mode = 0600;
	struct stat st = { 0 };
	bool had = false;
	FILE *f = fopen(path, "r");
	if (f) {
		if (fstat(fileno(f), &st) == 0) {
			mode = st.st_mode & 0777;
			had = true;
		}
		char line[1024];
		while (fgets(line, sizeof(line), f)) {
			if (line_user(line, name)) {
				found = true;
				if (entry)
					buf_printf(&out, "%s:%s\n", name, entry);
				continue;
			}
			buf_puts(&out, line);
			if (line[0] && line[strlen(line) - 1] != '\n')
				buf_puts(&out, "\n");
		}
		fclose(f);
	} else if (errno != ENOENT) {
		rp_die(RP_EX_CANTCREAT, "%s: cannot read: %s", path, strerror(errno));
	}
	if (!found && entry)
		buf_printf(&out, "%s:%s\n", name, entry);
	char *copy = xstrdup(path);
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", dirname(copy), basename((char *)path),
	         (int)getpid());
	free(copy);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		rp_die(RP_EX_CANTCREAT, "%s: cannot create: %s", tmp, strerror(errno));
	/* Root editing a file the daemon's [server] user reads on SIGHUP
	 * (root:ringpost 0640): the new file keeps the old owner and group. */
	if (had && geteuid() == 0 && (st.st_uid != 0 || st.st_gid != getegid()) &&
	    fchown(fd, st.st_uid, st.st_gid) != 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		rp_die(RP_EX_CANTCREAT, "%s: cannot keep its owner: %s", path, strerror(e));
	}
	bool ok =
	    write(fd, buf_head(&out), buf_used(&out)) == (ssize_t)buf_used(&out) && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	buf_free(&out);
	if (!ok || rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		rp_die(RP_EX_CANTCREAT, "%s: cannot write: %s", path, strerror(e));
	}
	return found;
}

int cli_user(int argc, char **argv)
{
	const char *verb = NULL, *name = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
			i++;
			continue;
		}
		if (!strncmp(argv[i], "--config=", 9))
			continue;
		if (!verb)
			verb = argv[i];
		else if (!name)
			name = argv[i];
		else
			rp_die(RP_EX_USAGE, "usage: ringpost user -c FILE add|del NAME");
	}
	if (!verb || !name || (strcmp(verb, "add") && strcmp(verb, "del")))
		rp_die(RP_EX_USAGE, "usage: ringpost user -c FILE add|del NAME");
	if (!name_ok(name))
		rp_die(RP_EX_DATAERR,
		       "'%s' is not a user name (no ':', spaces or control characters)", name);
	struct config *cfg = cli_load_config(argc, argv);
	if (!cfg->auth_users[0])
		rp_die(RP_EX_CONFIG, "%s: [auth] users is not set", cfg->path);
	if (!strcmp(verb, "del")) {
		if (!rewrite(cfg->auth_users, name, NULL))
			rp_die(EX_NOUSER, "%s: no user %s", cfg->auth_users, name);
		printf("user %s deleted from %s (SIGHUP the daemon to apply)\n", name,
		       cfg->auth_users);
		config_free(cfg);
		return RP_EX_OK;
	}
	char pass[AUTH_PASS_MAX + 2], hash[256];
	get_password(pass, sizeof(pass));
	bool hashed = auth_hash(pass, hash, sizeof(hash));
	OPENSSL_cleanse(pass, sizeof(pass));
	if (!hashed)
		rp_die(RP_EX_SOFTWARE, "crypt(3) could not hash the password");
	bool existed = rewrite(cfg->auth_users, name, hash);
	printf("user %s %s in %s (SIGHUP the daemon to apply)\n", name,
	       existed ? "has a new password" : "added", cfg->auth_users);
	config_free(cfg);
	return RP_EX_OK;
}
