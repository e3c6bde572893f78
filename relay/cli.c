/* cli.c - send, stats and queue: client commands over the HTTP API.
 *
 * Each command reads the same config as the daemon to find [listen] api and
 * an [api] key whose scope the request needs (an admin key first), makes one blocking HTTP/1.1
 * request (or one per second with --watch), and prints the answer. With [api] tls = yes the request
 * goes over TLS, and the daemon must present the certificate of [tls] cert (pinned: the CLI talks
 * to its own daemon, whatever CA signed it). Exit status: 0; 64 usage; 65 the API refused the input
 * (400/404/413/422); 69 no daemon at the address; 75 try later (503); 77 bad key (401), a key
 * without the scope (403) or no key with it in the config; 78 config.
 */
#include "cli.h"

#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "config.h"
#include "base/buf.h"
#include "base/util.h"

struct http_reply {
	int status;
	struct buf body;
	bool done;
};

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct http_reply *r = p->data;
	buf_append(&r->body, at, n);
	return 0;
}

static int on_complete(http_parser *p)
{
	struct http_reply *r = p->data;
	r->status = (int)p->status_code;
	r->done = true;
	return 0;
}

/* api_address - where to reach the API: a wildcard listener means loopback. */
static struct sockaddr_storage api_address(const struct config *cfg, socklen_t *len)
{
	struct sockaddr_storage ss = cfg->listen_api.ss;
	*len = cfg->listen_api.sslen;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
			sin6->sin6_addr = in6addr_loopback;
	}
	return ss;
}

/* A blocking connection to the API, clear or TLS. */
struct api_conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl; /* NULL in clear text */
};

/* tls_pin - the first certificate of [tls] cert, which the daemon must
 * present. */
static X509 *tls_pin(const struct config *cfg)
{
	FILE *f = fopen(cfg->tls_cert, "r");
	if (!f)
		rp_die(RP_EX_CONFIG, "%s: cannot open: %s", cfg->tls_cert, strerror(errno));
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		rp_die(RP_EX_CONFIG, "%s: no certificate in it", cfg->tls_cert);
	return x;
}

/* api_tls - the TLS handshake on fd; exits 69 when it fails or the daemon
 * shows another certificate. */
static void api_tls(const struct config *cfg, struct api_conn *c)
{
	c->ctx = SSL_CTX_new(TLS_client_method());
	c->ssl = c->ctx ? SSL_new(c->ctx) : NULL;
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
		rp_die(RP_EX_SOFTWARE, "cannot set up TLS");
	if (SSL_connect(c->ssl) != 1) {
		char e[200] = "";
		ERR_error_string_n(ERR_get_error(), e, sizeof(e));
		rp_die(RP_EX_UNAVAILABLE, "TLS with the API at %s failed: %s", cfg->listen_api.text,
		       e);
	}
	X509 *pin = tls_pin(cfg);
	X509 *peer = SSL_get0_peer_certificate(c->ssl);
	bool same = peer && X509_cmp(peer, pin) == 0;
	X509_free(pin);
	if (!same)
		rp_die(RP_EX_UNAVAILABLE,
		       "the API at %s does not present the certificate of %s: not our daemon?",
		       cfg->listen_api.text, cfg->tls_cert);
}

static ssize_t api_send(struct api_conn *c, const char *p, size_t n)
{
	if (c->ssl) {
		int r = SSL_write(c->ssl, p, (int)RP_MIN(n, (size_t)1 << 30));
		return r > 0 ? r : -1;
	}
	return send(c->fd, p, n, MSG_NOSIGNAL);
}

static ssize_t api_recv(struct api_conn *c, char *p, size_t n)
{
	if (c->ssl) {
		int r = SSL_read(c->ssl, p, (int)n);
		if (r > 0)
			return r;
		int e = SSL_get_error(c->ssl, r);
		return e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ? 0 : -1;
	}
	return recv(c->fd, p, n, 0);
}

static void api_close(struct api_conn *c)
{
	SSL_free(c->ssl);
	SSL_CTX_free(c->ctx);
	close(c->fd);
}

/* pick_key - the token of a key that may make this request: an admin key
 * first (the first one written), else the first with the scope the route
 * needs. Exits 77 naming the scope when the config has none. */
static const char *pick_key(const struct config *cfg, const char *method, const char *path)
{
	char route[512];
	snprintf(route, sizeof(route), "%.*s", (int)strcspn(path, "?#"), path);
	unsigned need = api_route_scope(method, route);
	for (unsigned i = 0; i < cfg->napi_keys; i++)
		if ((cfg->api_key_scopes[i] & CFG_API_ALL) == CFG_API_ALL)
			return cfg->api_keys[i];
	for (unsigned i = 0; i < cfg->napi_keys; i++)
		if (!need || (cfg->api_key_scopes[i] & need))
			return cfg->api_keys[i];
	const char *sc = config_api_scope_name(need);
	rp_die(RP_EX_NOPERM,
	       "%s:%u: no [api] key may %s %s: it needs scope %s (add NAME:TOKEN:%s, or an admin "
	       "key)",
	       cfg->path, cfg->api_keys_line, method, route, sc, sc);
}

/* request - one HTTP exchange; returns the status, or exits 69. */
int cli_request(const struct config *cfg, const char *method, const char *path, const char *body,
                struct buf *out)
{
	if (!cfg->listen_api.set)
		rp_die(RP_EX_CONFIG, "%s: [listen] api is not set; the command needs the HTTP API",
		       cfg->path);
	if (!cfg->napi_keys)
		rp_die(RP_EX_CONFIG, "%s: [api] keys is empty", cfg->path);
	const char *key = pick_key(cfg, method, path);
	socklen_t len;
	struct sockaddr_storage ss = api_address(cfg, &len);
	struct api_conn c = { .fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0) };
	if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&ss, len) < 0)
		rp_die(RP_EX_UNAVAILABLE, "cannot reach the API at %s: %s (is ringpost running?)",
		       cfg->listen_api.text, strerror(errno));
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (cfg->api_tls)
		api_tls(cfg, &c);
	struct buf req = { 0 };
	size_t blen = body ? strlen(body) : 0;
	buf_printf(
	    &req,
	    "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
	    method, path, cfg->listen_api.text, key, blen);
	buf_append(&req, body, blen);
	for (size_t off = 0; off < buf_used(&req);) {
		ssize_t n = api_send(&c, buf_head(&req) + off, buf_used(&req) - off);
		if (n <= 0)
			rp_die(RP_EX_UNAVAILABLE, "cannot send to the API at %s: %s",
			       cfg->listen_api.text, strerror(errno));
		off += (size_t)n;
	}
	buf_free(&req);

	http_parser p;
	http_parser_settings st = { .on_body = on_body, .on_message_complete = on_complete };
	struct http_reply r = { 0 };
	http_parser_init(&p, HTTP_RESPONSE);
	p.data = &r;
	char chunk[16384];
	for (;;) {
		ssize_t n = api_recv(&c, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rp_die(RP_EX_UNAVAILABLE, "no answer from the API at %s: %s",
			       cfg->listen_api.text, strerror(errno));
		http_parser_execute(&p, &st, chunk, (size_t)n);
		if (r.done || n == 0 || HTTP_PARSER_ERRNO(&p) != HPE_OK)
			break;
	}
	api_close(&c);
	if (!r.done)
		rp_die(RP_EX_PROTOCOL, "malformed answer from the API at %s", cfg->listen_api.text);
	*out = r.body;
	return r.status;
}

/* fail_status - print the API's error message and map the status. */
void cli_url_encode(struct buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-._~", c))
			buf_append(b, s, 1);
		else
			buf_printf(b, "%%%02X", c);
	}
}

int cli_get_pages(const struct config *cfg, const char *path, const char *array,
                  void (*fn)(json_t *e))
{
	char after[400] = "";
	for (;;) {
		struct buf url = { 0 }, out = { 0 };
		buf_printf(&url, "%s?limit=1000", path);
		if (after[0]) {
			buf_puts(&url, "&after=");
			cli_url_encode(&url, after);
		}
		int status = cli_request(cfg, "GET", buf_cstr(&url), NULL, &out);
		buf_free(&url);
		if (status != 200) {
			int rc = cli_fail_status(status, &out);
			buf_free(&out);
			return rc;
		}
		json_t *doc = json_loadb(buf_head(&out), buf_used(&out), 0, NULL);
		buf_free(&out);
		json_t *e;
		size_t i;
		json_array_foreach(json_object_get(doc, array), i, e)
		{
			fn(e);
		}
		json_t *next = json_object_get(doc, "next");
		bool more = json_is_string(next);
		if (more)
			snprintf(after, sizeof(after), "%s", json_string_value(next));
		json_decref(doc);
		if (!more)
			return RP_EX_OK;
	}
}

int cli_fail_status(int status, const struct buf *body)
{
	json_error_t je;
	json_t *doc = json_loadb(buf_head(body), buf_used(body), 0, &je);
	const char *msg = NULL;
	if (doc)
		msg = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
	fprintf(stderr, "ringpost: the API answered %d: %s\n", status, msg ? msg : "(no message)");
	json_decref(doc);
	if (status == 401 || status == 403)
		return RP_EX_NOPERM;
	if (status == 503)
		return RP_EX_TEMPFAIL;
	if (status >= 500)
		return RP_EX_SOFTWARE;
	return RP_EX_DATAERR;
}

/* read_file - the whole file (or stdin for "-") as a C string; its length,
 * NULs included, in *len. */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f)
		rp_die(RP_EX_NOINPUT, "cannot open %s: %s", path, strerror(errno));
	struct buf b = { 0 };
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	if (f != stdin)
		fclose(f);
	*len = buf_used(&b);
	return buf_cstr(&b);
}

/* ---- send -------------------------------------------------------------- */

int cli_send(int argc, char **argv)
{
	const char *from = NULL, *subject = NULL, *text = NULL, *raw = NULL;
	json_t *to = json_array();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
			i++;
		} else if (!strncmp(a, "--config=", 9)) {
			/* cli_config_path reads it */
		} else if (!strcmp(a, "--from") && v) {
			from = v, i++;
		} else if (!strcmp(a, "--to") && v) {
			json_array_append_new(to, json_string(v)), i++;
		} else if (!strcmp(a, "--subject") && v) {
			subject = v, i++;
		} else if (!strcmp(a, "--text") && v) {
			text = v, i++;
		} else if (!strcmp(a, "--raw") && v) {
			raw = v, i++;
		} else {
			fprintf(stderr, "ringpost send: unexpected argument '%s'\n", a);
			json_decref(to);
			return RP_EX_USAGE;
		}
	}
	if (!from || !json_array_size(to) || (text && raw)) {
		fprintf(stderr,
		        "usage: ringpost send -c FILE --from A --to B [--to C] [--subject S] "
		        "[--text T | --raw FILE]\n");
		json_decref(to);
		return RP_EX_USAGE;
	}
	struct config *cfg = cli_load_config(argc, argv);
	json_t *msg = json_object();
	json_object_set_new(msg, "from", json_string(from));
	json_object_set_new(msg, "to", to);
	char *rawbuf = NULL;
	if (raw) {
		size_t rawlen;
		rawbuf = read_file(raw, &rawlen);
		/* json_string stops at a NUL: the message would go out cut short. */
		if (memchr(rawbuf, '\0', rawlen))
			rp_die(RP_EX_DATAERR, "%s contains a NUL byte; a message cannot", raw);
		json_t *r = json_string(rawbuf);
		if (!r)
			rp_die(RP_EX_DATAERR,
			       "%s is not UTF-8 text; the API takes raw messages as JSON strings",
			       raw);
		json_object_set_new(msg, "raw", r);
	} else {
		if (subject)
			json_object_set_new(msg, "subject", json_string(subject));
		json_object_set_new(msg, "text", json_string(text ? text : ""));
	}
	char *body = json_dumps(msg, JSON_COMPACT);
	if (!body)
		rp_die(RP_EX_DATAERR, "arguments must be UTF-8");
	struct buf out;
	int status = cli_request(cfg, "POST", "/v1/messages", body, &out);
	int rc = RP_EX_OK;
	if (status == 202) {
		json_t *doc = json_loadb(buf_head(&out), buf_used(&out), 0, NULL);
		const char *id = json_string_value(json_object_get(doc, "id"));
		printf("%s\n", id ? id : "?");
		json_decref(doc);
	} else {
		rc = cli_fail_status(status, &out);
	}
	buf_free(&out);
	free(body);
	free(rawbuf);
	json_decref(msg);
	config_free(cfg);
	return rc;
}

/* ---- stats ------------------------------------------------------------- */

static unsigned long long num(json_t *o, const char *k)
{
	return (unsigned long long)json_integer_value(json_object_get(o, k));
}

static void print_stats(json_t *doc, bool clear)
{
	if (clear)
		fputs("\033[H\033[2J", stdout);
	char when[32];
	time_t t = time(NULL);
	strftime(when, sizeof(when), "%H:%M:%S", localtime(&t));
	json_t *acc = json_object_get(doc, "accepted");
	printf("ringpost %s  accepted smtp %llu api %llu  rejected %llu\n", when, num(acc, "smtp"),
	       num(acc, "api"), num(doc, "rejected"));
#define ROWF "%-32.32s %9llu %9llu %9llu %11llu %9llu %6llu%s\n"
	printf("%-32s %9s %9s %9s %11s %9s %6s\n", "DOMAIN", "QUEUED", "DEFERRED", "IN-FLIGHT",
	       "DELIVERED", "BOUNCED", "CONNS");
	printf(ROWF, "(total)", num(doc, "queued"), num(doc, "deferred"), num(doc, "in_flight"),
	       num(doc, "delivered"), num(doc, "bounced"), num(doc, "connections"), "");
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(doc, "domains"), i, d)
	{
		const char *note = json_is_true(json_object_get(d, "suspended")) ? "  suspended"
		                   : json_is_string(json_object_get(d, "backoff_until"))
		                       ? "  backing off"
		                       : "";
		printf(ROWF, json_string_value(json_object_get(d, "domain")), num(d, "queued"),
		       num(d, "deferred"), num(d, "in_flight"), num(d, "delivered"),
		       num(d, "bounced"), num(d, "connections"), note);
	}
	fflush(stdout);
}

int cli_stats(int argc, char **argv)
{
	bool json = false, watch = false, cluster = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))
			i++;
		else if (!strncmp(argv[i], "--config=", 9))
			continue; /* cli_config_path reads it */
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--watch"))
			watch = true;
		else if (!strcmp(argv[i], "--cluster"))
			cluster = true;
		else {
			fprintf(stderr,
			        "usage: ringpost stats -c FILE [--json] [--watch] [--cluster]\n");
			return RP_EX_USAGE;
		}
	}
	struct config *cfg = cli_load_config(argc, argv);
	if (cluster) {
		int rc = cli_cluster_stats(cfg, json);
		config_free(cfg);
		return rc;
	}
	for (;;) {
		struct buf out;
		int status = cli_request(cfg, "GET", "/v1/stats", NULL, &out);
		if (status != 200) {
			int rc = cli_fail_status(status, &out);
			buf_free(&out);
			config_free(cfg);
			return rc;
		}
		if (json) {
			fwrite(buf_head(&out), 1, buf_used(&out), stdout);
			fflush(stdout);
		} else {
			json_t *doc = json_loadb(buf_head(&out), buf_used(&out), 0, NULL);
			if (doc)
				print_stats(doc, watch);
			json_decref(doc);
		}
		buf_free(&out);
		if (!watch)
			break;
		sleep(1);
	}
	config_free(cfg);
	return RP_EX_OK;
}

/* ---- queue ------------------------------------------------------------- */

static int queue_show(const struct config *cfg, const char *id)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/messages/%.64s", id);
	struct buf out;
	int status = cli_request(cfg, "GET", path, NULL, &out);
	if (status != 200) {
		int rc = cli_fail_status(status, &out);
		buf_free(&out);
		return rc;
	}
	json_t *doc = json_loadb(buf_head(&out), buf_used(&out), 0, NULL);
	printf("id %s  from <%s>  submitted %s  size %llu\n",
	       json_string_value(json_object_get(doc, "id")),
	       json_string_value(json_object_get(doc, "from")),
	       json_string_value(json_object_get(doc, "submitted")), num(doc, "size"));
	size_t i;
	json_t *r;
	json_array_foreach(json_object_get(doc, "recipients"), i, r)
	{
		const char *resp = json_string_value(json_object_get(r, "last_response"));
		const char *next = json_string_value(json_object_get(r, "next_attempt"));
		printf("  <%s> %s attempts=%llu%s%s%s%s\n",
		       json_string_value(json_object_get(r, "email")),
		       json_string_value(json_object_get(r, "state")), num(r, "attempts"),
		       next ? " next=" : "", next ? next : "", resp ? " last=" : "",
		       resp ? resp : "");
	}
	json_decref(doc);
	buf_free(&out);
	return RP_EX_OK;
}

static int queue_action(const struct config *cfg, const char *action, const char *domain,
                        bool bounce)
{
	char path[400];
	snprintf(path, sizeof(path), "/v1/queue/%.255s/%s%s", domain, action,
	         bounce ? "?mode=bounce" : "");
	struct buf out;
	int status = cli_request(cfg, "POST", path, NULL, &out);
	if (status != 200) {
		int rc = cli_fail_status(status, &out);
		buf_free(&out);
		return rc;
	}
	json_t *doc = json_loadb(buf_head(&out), buf_used(&out), 0, NULL);
	if (!strcmp(action, "purge"))
		printf("%s: purged %llu recipients (%s)\n", domain, num(doc, "recipients"),
		       bounce ? "bounced with a DSN" : "dropped without a DSN");
	else
		printf("%s: %s (%llu recipients)\n", domain, action, num(doc, "recipients"));
	json_decref(doc);
	buf_free(&out);
	return RP_EX_OK;
}

/* purge_message - DELETE /v1/messages/ID: one message's waiting recipients. */
static int purge_message(const struct config *cfg, const char *id, bool bounce)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/messages/%s%s", id, bounce ? "?mode=bounce" : "");
	struct buf out;
	int status = cli_request(cfg, "DELETE", path, NULL, &out);
	if (status != 200) {
		int rc = cli_fail_status(status, &out);
		buf_free(&out);
		return rc;
	}
	json_t *doc = json_loadb(buf_head(&out), buf_used(&out), 0, NULL);
	printf("%s: purged %llu recipients (%s)\n", id, num(doc, "recipients"),
	       bounce ? "bounced with a DSN" : "dropped without a DSN");
	json_decref(doc);
	buf_free(&out);
	return RP_EX_OK;
}

int cli_queue(int argc, char **argv)
{
	const char *args[3] = { 0 };
	unsigned nargs = 0;
	bool bounce = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))
			i++;
		else if (!strncmp(argv[i], "--config=", 9))
			continue; /* cli_config_path reads it */
		else if (!strcmp(argv[i], "--bounce"))
			bounce = true;
		else if (nargs < 3)
			args[nargs++] = argv[i];
	}
	static const char *const actions[] = { "retry", "suspend", "resume", "purge" };
	bool ok = nargs == 1 && !strcmp(args[0], "list");
	ok |= nargs == 2 && !strcmp(args[0], "show");
	for (size_t i = 0; i < RP_ARRAY_LEN(actions); i++)
		ok |= nargs == 2 && !strcmp(args[0], actions[i]);
	if (!ok) {
		fprintf(stderr,
		        "usage: ringpost queue -c FILE list|show ID|retry DOMAIN|suspend DOMAIN|"
		        "resume DOMAIN|purge DOMAIN|ID [--bounce]\n");
		return RP_EX_USAGE;
	}
	struct config *cfg = cli_load_config(argc, argv);
	int rc;
	if (!strcmp(args[0], "list")) {
		struct buf out;
		int status = cli_request(cfg, "GET", "/v1/queue", NULL, &out);
		if (status == 200) {
			json_t *doc = json_loadb(buf_head(&out), buf_used(&out), 0, NULL);
			if (doc)
				print_stats(doc, false);
			json_decref(doc);
			rc = RP_EX_OK;
		} else {
			rc = cli_fail_status(status, &out);
		}
		buf_free(&out);
	} else if (!strcmp(args[0], "show")) {
		rc = queue_show(cfg, args[1]);
	} else if (!strcmp(args[0], "purge") && strlen(args[1]) == 16 &&
	           strspn(args[1], "0123456789abcdefABCDEF") == 16) {
		rc = purge_message(cfg, args[1], bounce);
	} else {
		rc = queue_action(cfg, args[0], args[1], bounce);
	}
	config_free(cfg);
	return rc;
}
