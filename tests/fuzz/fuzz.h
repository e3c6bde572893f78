/* fuzz.h - what the libFuzzer targets in tests/fuzz share.
 *
 * Each fuzz_NAME.c is one target: it defines LLVMFuzzerTestOneInput (and
 * LLVMFuzzerInitialize when it sets up once). Targets are deterministic in
 * what they do with an input, open no network socket (the session targets
 * use an AF_UNIX socketpair), and keep no state from one input to the next
 * beyond what fuzz_env resets. Built only with -DRINGPOST_FUZZ=ON (clang,
 * -fsanitize=fuzzer,address,undefined); see tests/fuzz/README in README.md.
 */
#ifndef RP_FUZZ_H
#define RP_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/config.h"
#include "relay/config_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* fuzz_check - an oracle: a property every input must keep. A failure
 * aborts, which libFuzzer reports as a crash with the input saved. */
#define fuzz_check(cond)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fuzz_fail(__FILE__, __LINE__, #cond);                                      \
	} while (0)
__attribute__((noreturn)) void fuzz_fail(const char *file, int line, const char *what);

/* fuzz_quiet - log lines go to /dev/null, at debug level so that their
 * formatting (quoting of what clients sent) still runs. */
void fuzz_quiet(void);
/* fuzz_limits - [limits] as shipped, but no command rate (a target's
 * session must not wait for a token bucket). */
const struct climit_config *fuzz_limits(void);

/* fuzz_dup - a malloc'd copy of p[0..n) followed by a NUL; reading past
 * the NUL is caught by ASan. The caller frees it. */
char *fuzz_dup(const void *p, size_t n);
/* fuzz_copy - a malloc'd copy of exactly p[0..n): for length-bounded
 * parsers, where reading p[n] is a bug ASan must see. The caller frees. */
char *fuzz_copy(const void *p, size_t n);

/* A cursor over the input, to cut it into fields. */
struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

/* fuzz_u8 - the next byte (0 once the input is used up). */
uint8_t fuzz_u8(struct fuzz_in *in);
/* fuzz_u32 - the next four bytes, little-endian (missing bytes are 0). */
uint32_t fuzz_u32(struct fuzz_in *in);
/* fuzz_field - the bytes up to the next occurrence of sep (consumed, not
 * returned) or the rest of the input; false once nothing is left. */
bool fuzz_field(struct fuzz_in *in, const char *sep, const uint8_t **p, size_t *n);

/* The shared environment of the session targets: one event loop, one
 * spool in a temporary directory (tmpfs when there is one; removed at
 * exit) and a config loaded from fuzz_env_get's text. */
struct fuzz_env {
	struct loop *loop;
	struct spool *spool;
	struct spool_reader *reader;
	struct config *cfg;
	struct config_ref gen; /* cfg only: no TLS, no users, no DKIM keys */
	char dir[128];
	unsigned spools; /* spools made so far (fuzz_env_recycle) */
	int drain_fd;    /* the client's end: read and dropped while the loop runs
	                  * (the server's sends complete), -1 = none */
};

/* fuzz_env_get - the environment, made on the first call with a config
 * file of conf's text (data_dir is the temporary directory). */
struct fuzz_env *fuzz_env_get(const char *conf);
/* fuzz_env_recycle - between inputs (nothing in flight): replace the spool
 * by an empty one once it holds more than a few MiB, so that a long run
 * neither grows without bound nor slows down. Objects holding the old spool
 * or reader must be made again (targets make theirs per input). */
void fuzz_env_recycle(struct fuzz_env *e);
/* fuzz_env_run - run the loop until done(arg) is true; the loop does not
 * sleep meanwhile. Aborts after 10 s (a hang). */
void fuzz_env_run(struct fuzz_env *e, bool (*done)(void *arg), void *arg);
struct conn;
/* fuzz_feed - what a client sends, into a server session's conn c: all at
 * once (cut 0) or in pieces of 1 to cut x scale bytes drawn from rnd, the
 * loop run until settled(arg) after each, while the session lives (*gone
 * false) and is not closing; then closed and run until gone(arg). */
void fuzz_feed(struct fuzz_env *e, struct conn *c, const uint8_t *data, size_t size, uint32_t cut,
               uint32_t scale, uint32_t rnd, const bool *gone_flag, bool (*settled)(void *arg),
               bool (*gone)(void *arg), void *arg);
/* fuzz_env_mailbox - between inputs: the bounce mailbox holds at least n
 * messages; missing ones are appended from msgs (blocking on the spool
 * writer), so that what sessions expunge comes back. */
void fuzz_env_mailbox(struct fuzz_env *e, const char *const *msgs, unsigned n);
/* fuzz_socketpair - a connected AF_UNIX stream pair (non-blocking); aborts
 * when it cannot be made. */
void fuzz_socketpair(int fds[2]);

#endif
