/* support.h - helpers shared by the unit tests that need a real spool:
 * a private temporary directory per test, a spool in it, and a blocking
 * call through the spool writer (reply via an mq, as the relay does); and
 * certificates for TLS tests, made with the openssl command line.
 *
 * Header-only (static functions) so that each test file stays one program.
 */
#ifndef RP_TEST_SUPPORT_H
#define RP_TEST_SUPPORT_H

#include <criterion/criterion.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/mq.h"
#include "queue/spool.h"
#include "base/util.h"

/* test_tmpdir - a fresh directory for this test (mkdtemp). */
static inline void test_tmpdir(char *dir, size_t len, const char *name)
{
	snprintf(dir, len, "/tmp/rp_%s_XXXXXX", name);
	cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

static inline int test_rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

/* test_rmdir - remove dir and everything under it. */
static inline void test_rmdir(const char *dir)
{
	cr_assert_eq(nftw(dir, test_rm_one, 16, FTW_DEPTH | FTW_PHYS), 0, "cannot remove %s", dir);
}

/* Certificates made by test_certs_make, all for "mx.test" unless said. */
struct test_certs {
	char ca[PATH_MAX];      /* the private CA's certificate (a ca_file) */
	char ec_cert[PATH_MAX]; /* ECDSA P-256 leaf signed by the CA (chain: leaf, CA) */
	char ec_key[PATH_MAX];
	char rsa_cert[PATH_MAX]; /* RSA 2048 leaf signed by the CA (chain) */
	char rsa_key[PATH_MAX];
	char self_cert[PATH_MAX]; /* self-signed ECDSA */
	char self_key[PATH_MAX];
	char wrong_cert[PATH_MAX]; /* "other.test" signed by the CA (chain) */
	char wrong_key[PATH_MAX];
};

/* test_certs_make - a CA and the certificates above in dir (one shell
 * script running the openssl command line; its output is in
 * dir/openssl.log when it fails). */
static inline void test_certs_make(struct test_certs *c, const char *dir)
{
	static const char script[] =
	    "set -e\n"
	    "key() { if [ \"$2\" = rsa ]; then\n"
	    "    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out \"$1\"\n"
	    "  else\n"
	    "    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\"\n"
	    "  fi; }\n"
	    "leaf() { # name kind prefix serial\n"
	    "  key \"$3.key\" \"$2\"\n"
	    "  openssl req -new -key \"$3.key\" -subj \"/CN=$1\" -out \"$3.csr\"\n"
	    "  printf 'subjectAltName=DNS:%s\\nextendedKeyUsage=serverAuth\\n"
	    "basicConstraints=CA:FALSE\\n' \"$1\" > \"$3.ext\"\n"
	    "  openssl x509 -req -in \"$3.csr\" -CA ca.pem -CAkey ca.key -set_serial \"$4\" \\\n"
	    "    -days 30 -extfile \"$3.ext\" -out \"$3.crt\"\n"
	    "  cat \"$3.crt\" ca.pem > \"$3.pem\"; }\n"
	    "key ca.key ec\n"
	    "openssl req -x509 -new -key ca.key -days 30 -subj '/CN=ringpost test CA' \\\n"
	    "  -addext 'basicConstraints=critical,CA:TRUE' \\\n"
	    "  -addext 'keyUsage=critical,keyCertSign,cRLSign' -out ca.pem\n"
	    "leaf mx.test ec ec 2\n"
	    "leaf mx.test rsa rsa 3\n"
	    "leaf other.test ec wrong 4\n"
	    "key self.key ec\n"
	    "openssl req -x509 -new -key self.key -days 30 -subj /CN=mx.test \\\n"
	    "  -addext subjectAltName=DNS:mx.test -out self.pem\n";
	char path[PATH_MAX], cmd[2 * PATH_MAX];
	snprintf(path, sizeof(path), "%s/certs.sh", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "cannot write %s", path);
	fputs(script, f);
	cr_assert_eq(fclose(f), 0);
	snprintf(cmd, sizeof(cmd), "cd '%s' && sh certs.sh >openssl.log 2>&1", dir);
	int rc = system(cmd);
	cr_assert_eq(rc, 0, "openssl failed (%d): see %s/openssl.log", rc, dir);
	snprintf(c->ca, sizeof(c->ca), "%s/ca.pem", dir);
	snprintf(c->ec_cert, sizeof(c->ec_cert), "%s/ec.pem", dir);
	snprintf(c->ec_key, sizeof(c->ec_key), "%s/ec.key", dir);
	snprintf(c->rsa_cert, sizeof(c->rsa_cert), "%s/rsa.pem", dir);
	snprintf(c->rsa_key, sizeof(c->rsa_key), "%s/rsa.key", dir);
	snprintf(c->self_cert, sizeof(c->self_cert), "%s/self.pem", dir);
	snprintf(c->self_key, sizeof(c->self_key), "%s/self.key", dir);
	snprintf(c->wrong_cert, sizeof(c->wrong_cert), "%s/wrong.pem", dir);
	snprintf(c->wrong_key, sizeof(c->wrong_key), "%s/wrong.key", dir);
}

/* test_spool_open - a spool under dir with room to spare. */
static inline struct spool *test_spool_open(const char *dir, uint64_t keep_done_ms)
{
	char err[256] = "";
	struct spool_options o = {
		.dir = dir,
		.max_size = 64ull << 20,
		.min_free = 0,
		.keep_done_ms = keep_done_ms,
	};
	struct spool *sp = spool_open(&o, err, sizeof(err));
	cr_assert_not_null(sp, "spool_open: %s", err);
	return sp;
}

/* test_spool_call - hand req to the writer and wait for its answer. */
static inline enum spool_status test_spool_call(struct spool *sp, struct spool_req *req)
{
	struct mq q;
	cr_assert(mq_init(&q, false));
	req->reply_to = &q;
	req->reply_fn = NULL;
	spool_request(sp, req);
	uint64_t deadline = rp_mono_ms() + 20000;
	struct mq_item *got = NULL;
	while (!got) {
		uint64_t now = rp_mono_ms();
		cr_assert_lt(now, deadline, "the spool writer did not answer");
		struct pollfd pfd = { .fd = q.efd, .events = POLLIN };
		if (poll(&pfd, 1, (int)(deadline - now)) > 0) {
			uint64_t v;
			cr_assert_eq(read(q.efd, &v, sizeof(v)), (ssize_t)sizeof(v));
		}
		got = mq_take(&q);
	}
	cr_assert_eq(got, &req->item, "the reply is the request itself");
	cr_assert_null(got->next, "exactly one reply");
	mq_destroy(&q);
	return req->status;
}

/* test_spool_sync - returns once everything requested before is applied. */
static inline void test_spool_sync(struct spool *sp)
{
	struct spool_req req = { .type = SPOOL_REQ_SYNC };
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
}

/* A message to submit: envelope, recipients and a body in one piece. */
struct test_msg {
	struct spool_req req;
	struct spool_rcpt rcpts[64];
	char addrs[64][64];
	struct iovec body;
};

/* test_submit_with - store a message from sender ("" for <>, which marks
 * it a bounce) with envelope flags and body; recipient i is
 * rcpt<i>@domains[i] (or @domain when domains is NULL) with NOTIFY
 * notify[i] (FAILURE when notify is NULL); returns its id. */
static inline uint64_t test_submit_with(struct spool *sp, const char *sender, const char *domain,
                                        const char *const *domains, unsigned n, uint32_t flags,
                                        const uint8_t *notify, const char *body, size_t body_len,
                                        uint64_t submit_ms)
{
	struct test_msg *m = xcalloc(1, sizeof(*m));
	cr_assert_leq(n, 64);
	struct spool_submit *s = &m->req.u.submit;
	m->req.type = SPOOL_REQ_SUBMIT;
	s->msg.id = spool_next_id(sp);
	s->msg.submit_ms = submit_ms;
	s->msg.nrcpt = n;
	s->msg.body_len = body_len;
	s->msg.flags = flags | (sender[0] ? 0 : MSG_F_BOUNCE);
	s->msg.sender = sender;
	s->msg.sender_len = strlen(sender);
	s->msg.envid = "";
	s->msg.source = "test";
	s->msg.source_len = 4;
	for (unsigned i = 0; i < n; i++) {
		snprintf(m->addrs[i], sizeof(m->addrs[i]), "rcpt%u@%.40s", i,
		         domains ? domains[i] : domain);
		m->rcpts[i].addr = m->addrs[i];
		m->rcpts[i].addr_len = strlen(m->addrs[i]);
		m->rcpts[i].notify = notify ? notify[i] : NOTIFY_FAILURE;
	}
	s->rcpts = m->rcpts;
	m->body.iov_base = (void *)body;
	m->body.iov_len = body_len;
	s->body = &m->body;
	s->nbody = 1;
	cr_assert_eq(test_spool_call(sp, &m->req), SPOOL_OK, "submit failed");
	uint64_t id = s->msg.id;
	free(m);
	return id;
}

/* test_submit - store a message from sender to n recipients "rcpt<i>@domain"
 * with body; returns its id. */
static inline uint64_t test_submit(struct spool *sp, const char *sender, const char *domain,
                                   unsigned n, const char *body, size_t body_len,
                                   uint64_t submit_ms)
{
	return test_submit_with(sp, sender, domain, NULL, n, 0, NULL, body, body_len, submit_ms);
}

/* test_update - set one recipient's state (and wait until it is applied). */
static inline void test_update(struct spool *sp, uint64_t id, uint32_t idx, uint8_t state,
                               uint16_t attempts, uint64_t next_ms, const char *response)
{
	struct spool_update u = {
		.msgid = id,
		.idx = idx,
		.state = state,
		.attempts = attempts,
		.next_ms = next_ms,
		.last_ms = rp_now_ms(),
		.response = response,
		.response_len = strlen(response),
		.remote = "mx.test[127.0.0.1]:25",
		.remote_len = 21,
	};
	struct spool_req req = { .type = SPOOL_REQ_UPDATE, .u.update = { .v = &u, .n = 1 } };
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
}

#endif
