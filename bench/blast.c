/* blast.c - ringpost-blast: an SMTP and HTTP API load generator
 * (bench/README.md is the contract). Parses the options, runs the load (blast_run.c) and prints the
 * report: text, or one JSON line with --json.
 *
 * Exit status: 0 when the run happened (failed transactions are counted,
 * not fatal), 69 when the server could never be reached, 64 on bad usage.
 */
#include "blast.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DEFAULT_MESSAGES 10000
#define DEFAULT_BATCH    100  /* messages per request in a batching mode */
#define MAX_PIPELINE     1024 /* requests in flight per connection */

/* The protocol modes; the first is the default. */
static const struct blast_mode *const modes[] = {
	&blast_mode_smtp,
	&blast_mode_http,
	&blast_mode_http_batch,
};

/* usage - the option summary. */
static void usage(FILE *f)
{
	fputs("usage: ringpost-blast [options] --server HOST:PORT\n"
	      "  --mode MODE            smtp (default), http (POST /v1/messages, one message\n"
	      "                         per request) or http-batch (POST /v1/messages/batch)\n"
	      "  --key KEY              http modes: the API's bearer token (default change-me)\n"
	      "  --batch N              http-batch: messages per request (default 100)\n"
	      "  --pipeline N           http modes: requests in flight per connection (default 1)\n"
	      "  --connections N        default 50\n"
	      "  --messages N           total messages (default 10000 unless --duration)\n"
	      "  --duration S           run this long (30, 30s, 2m)\n"
	      "  --size BYTES           default 2048; or --size-mix MIN-MAX (log-uniform)\n"
	      "  --domains D            default 1; --domain-format default d%u.bench.test\n"
	      "  --rcpts R              recipients per message, default 1\n"
	      "  --from ADDR            default blast@bench.test; \"\" = the null sender\n"
	      "  --rcpt-file FILE       recipients, one a line, used in turn (e.g. VERP\n"
	      "                         addresses for the bounce MX)\n"
	      "  --body-file FILE       send this message (LF or CRLF lines) every time\n"
	      "                         instead of generated ones (mode smtp)\n"
	      "  --rate N               messages per second overall; 0 = as fast as possible\n"
	      "  --no-pipelining, --no-chunking\n"
	      "  --timeout S            longest wait for one reply (default 60)\n"
	      "  --seed N               --size-mix PRNG seed\n"
	      "  --starttls             STARTTLS after EHLO, the handshake, EHLO again\n"
	      "  --tls                  TLS from the first byte (a submissions port)\n"
	      "  --tls-resume           resume the TLS session an earlier connection got\n"
	      "  --tls-ca FILE          verify the server's certificate (default: no check)\n"
	      "  --tls-name NAME        SNI and the name verified (default: the --server host)\n"
	      "  --handshakes N         no mail: each connection greets, EHLO, [STARTTLS and the\n"
	      "                         handshake,] QUIT, and is replaced; N sessions (0: until\n"
	      "                         --duration)\n"
	      "  --hold                 no mail: connections stay idle once ready (after EHLO,\n"
	      "                         and TLS) until --duration ends\n"
	      "  --json                 final report as one JSON line on stdout\n"
	      "  --progress             live rate on stderr (default when stderr is a tty)\n",
	      f);
}

/* num_opt - a number option or exit 64 naming it. */
static uint64_t num_opt(const char *name, const char *v, uint64_t min, uint64_t max)
{
	uint64_t n;
	if (!rp_parse_u64(v, &n) || n < min || n > max)
		rp_die(RP_EX_USAGE, "--%s: expected a number in %llu..%llu, got '%s'", name,
		       (unsigned long long)min, (unsigned long long)max, v);
	return n;
}

/* size_opt - "2048", "2k", "1M". */
static uint32_t size_opt(const char *name, const char *v)
{
	uint64_t n;
	if (!rp_parse_size(v, &n) || n < 1 || n > (1ull << 30))
		rp_die(RP_EX_USAGE, "--%s: expected a size up to 1G, got '%s'", name, v);
	return (uint32_t)n;
}

/* format_ok - the domain format has exactly one %u and no other conversion. */
static bool format_ok(const char *f)
{
	unsigned u = 0;
	for (const char *p = f; *p; p++) {
		if (*p != '%')
			continue;
		if (p[1] == '%') {
			p++;
			continue;
		}
		if (p[1] != 'u')
			return false;
		u++;
		p++;
	}
	return u == 1;
}

/* Long options (getopt_long values above any character). */
enum blast_opt {
	O_SERVER = 256,
	O_MODE,
	O_CONNS,
	O_MESSAGES,
	O_DURATION,
	O_SIZE,
	O_SIZE_MIX,
	O_DOMAINS,
	O_DOMAIN_FORMAT,
	O_RCPTS,
	O_FROM,
	O_RCPT_FILE,
	O_BODY_FILE,
	O_RATE,
	O_NO_PIPE,
	O_NO_CHUNK,
	O_TIMEOUT,
	O_SEED,
	O_JSON,
	O_KEY,
	O_BATCH,
	O_PIPELINE,
	O_PROGRESS,
	O_NO_PROGRESS,
	O_STARTTLS,
	O_TLS,
	O_TLS_RESUME,
	O_TLS_CA,
	O_TLS_NAME,
	O_HANDSHAKES,
	O_HOLD,
	O_HELP
};

static const struct option blast_longopts[] = {
	{ "server", required_argument, NULL, O_SERVER },
	{ "mode", required_argument, NULL, O_MODE },
	{ "connections", required_argument, NULL, O_CONNS },
	{ "messages", required_argument, NULL, O_MESSAGES },
	{ "duration", required_argument, NULL, O_DURATION },
	{ "size", required_argument, NULL, O_SIZE },
	{ "size-mix", required_argument, NULL, O_SIZE_MIX },
	{ "domains", required_argument, NULL, O_DOMAINS },
	{ "domain-format", required_argument, NULL, O_DOMAIN_FORMAT },
	{ "rcpts", required_argument, NULL, O_RCPTS },
	{ "from", required_argument, NULL, O_FROM },
	{ "rcpt-file", required_argument, NULL, O_RCPT_FILE },
	{ "body-file", required_argument, NULL, O_BODY_FILE },
	{ "rate", required_argument, NULL, O_RATE },
	{ "no-pipelining", no_argument, NULL, O_NO_PIPE },
	{ "no-chunking", no_argument, NULL, O_NO_CHUNK },
	{ "timeout", required_argument, NULL, O_TIMEOUT },
	{ "seed", required_argument, NULL, O_SEED },
	{ "json", no_argument, NULL, O_JSON },
	{ "key", required_argument, NULL, O_KEY },
	{ "batch", required_argument, NULL, O_BATCH },
	{ "pipeline", required_argument, NULL, O_PIPELINE },
	{ "progress", no_argument, NULL, O_PROGRESS },
	{ "no-progress", no_argument, NULL, O_NO_PROGRESS },
	{ "starttls", no_argument, NULL, O_STARTTLS },
	{ "tls", no_argument, NULL, O_TLS },
	{ "tls-resume", no_argument, NULL, O_TLS_RESUME },
	{ "tls-ca", required_argument, NULL, O_TLS_CA },
	{ "tls-name", required_argument, NULL, O_TLS_NAME },
	{ "handshakes", required_argument, NULL, O_HANDSHAKES },
	{ "hold", no_argument, NULL, O_HOLD },
	{ "help", no_argument, NULL, O_HELP },
	{ NULL, 0, NULL, 0 },
};

/* What parse_args learns besides the settings themselves. */
struct arg_state {
	bool server;       /* --server given */
	bool messages_set; /* --messages given */
	unsigned batch;    /* --batch, 0 = the mode's default */
};

/* read_all - a whole file, NUL-terminated; exits 66 when unreadable. */
static char *read_all(const char *opt, const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		rp_die(RP_EX_NOINPUT, "--%s: cannot open %s: %s", opt, path, strerror(errno));
	struct buf b = { 0 };
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	buf_append(&b, "", 1);
	*len = buf_used(&b) - 1;
	return b.data;
}

/* rcpt_file_opt - --rcpt-file: one address a line (blank lines skipped). */
static void rcpt_file_opt(struct blast_opts *o, const char *path)
{
	size_t len, cap = 0;
	char *text = read_all("rcpt-file", path, &len);
	for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
		if (strlen(line) > 254 || strpbrk(line, "<> "))
			rp_die(RP_EX_DATAERR, "--rcpt-file: not a mailbox: '%.80s'", line);
		if (o->nrcpt_list == cap) {
			cap = cap ? cap * 2 : 1024;
			o->rcpt_list = xrealloc(o->rcpt_list, cap * sizeof(*o->rcpt_list));
		}
		o->rcpt_list[o->nrcpt_list++] = xstrdup(line);
	}
	free(text);
	if (!o->nrcpt_list)
		rp_die(RP_EX_DATAERR, "--rcpt-file: no address in %s", path);
}

/* body_file_opt - --body-file: the message, its line ends made CRLF. */
static void body_file_opt(struct blast_opts *o, const char *path)
{
	size_t len;
	char *text = read_all("body-file", path, &len);
	struct buf b = { 0 };
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r'))
			buf_append(&b, "\r", 1);
		buf_append(&b, &text[i], 1);
	}
	if (buf_used(&b) < 2 || memcmp(buf_head(&b) + buf_used(&b) - 2, "\r\n", 2))
		buf_append(&b, "\r\n", 2);
	free(text);
	o->body = b.data;
	o->body_len = buf_used(&b);
	if (o->body_len > UINT32_MAX / 2)
		rp_die(RP_EX_DATAERR, "--body-file: %s is too large", path);
	o->size_min = o->size_max = (uint32_t)o->body_len;
}

/* mode_opt - --mode by name. */
static const struct blast_mode *mode_opt(const char *v)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(modes); i++)
		if (!strcmp(modes[i]->name, v))
			return modes[i];
	rp_die(RP_EX_USAGE, "--mode: unknown mode '%s' (smtp, http, http-batch)", v);
}

/* size_mix_opt - --size-mix MIN-MAX. */
static void size_mix_opt(struct blast_opts *o, const char *v)
{
	char lo[32];
	const char *dash = strchr(v, '-');
	if (!dash || (size_t)(dash - v) >= sizeof(lo))
		rp_die(RP_EX_USAGE, "--size-mix: expected MIN-MAX, got '%s'", v);
	memcpy(lo, v, (size_t)(dash - v));
	lo[dash - v] = '\0';
	o->size_min = size_opt("size-mix", lo);
	o->size_max = size_opt("size-mix", dash + 1);
	if (o->size_min > o->size_max)
		rp_die(RP_EX_USAGE, "--size-mix: MIN is larger than MAX");
}

/* rate_opt - --rate, messages per second. */
static double rate_opt(const char *v)
{
	char *end;
	errno = 0;
	double r = strtod(v, &end);
	if (errno || *end || r < 0)
		rp_die(RP_EX_USAGE, "--rate: expected messages per second, got '%s'", v);
	return r;
}

/* set_defaults - the settings without any option. */
static void set_defaults(struct blast_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->mode = modes[0];
	o->connections = 50;
	o->size_min = o->size_max = 2048;
	o->domains = 1;
	o->domain_format = "d%u.bench.test";
	o->rcpts = 1;
	o->from = "blast@bench.test";
	o->pipelining = o->chunking = true;
	o->timeout_ms = 60000;
	o->pipeline = 1;
	o->key = "change-me";
	o->progress = isatty(STDERR_FILENO);
}

/* apply_tls_opt - the TLS and no-mail options; false when c is none of them. */
static bool apply_tls_opt(struct blast_opts *o, int c, const char *v)
{
	switch (c) {
	case O_STARTTLS:
		o->starttls = true;
		return true;
	case O_TLS:
		o->tls_implicit = true;
		return true;
	case O_TLS_RESUME:
		o->tls_resume = true;
		return true;
	case O_TLS_CA:
		o->tls_ca = v;
		return true;
	case O_TLS_NAME:
		if (!*v || strlen(v) >= sizeof(o->tls_name))
			rp_die(RP_EX_USAGE, "--tls-name: expected a host name");
		snprintf(o->tls_name, sizeof(o->tls_name), "%s", v);
		return true;
	case O_HANDSHAKES:
		o->handshakes = num_opt("handshakes", v, 0, UINT64_MAX);
		o->handshake_loop = true;
		return true;
	case O_HOLD:
		o->hold = true;
		return true;
	}
	return false;
}

/* apply_opt - one option c with its argument v; bad usage exits 64. */
static void apply_opt(struct blast_opts *o, struct arg_state *st, int c, const char *v)
{
	if (apply_tls_opt(o, c, v))
		return;
	switch (c) {
	case O_SERVER:
		snprintf(o->server_text, sizeof(o->server_text), "%s", v);
		if (!bench_parse_hostport(v, &o->server, &o->server_len))
			rp_die(RP_EX_USAGE, "--server: expected IP:PORT or [IPv6]:PORT, got '%s'",
			       v);
		st->server = true;
		break;
	case O_MODE:
		o->mode = mode_opt(v);
		break;
	case O_CONNS:
		o->connections = (unsigned)num_opt("connections", v, 1, 1000000);
		break;
	case O_MESSAGES:
		o->messages = num_opt("messages", v, 1, UINT64_MAX);
		st->messages_set = true;
		break;
	case O_DURATION:
		if (!rp_parse_duration_ms(v, &o->duration_ms) || !o->duration_ms)
			rp_die(RP_EX_USAGE, "--duration: expected seconds (30, 30s, 2m), got '%s'",
			       v);
		break;
	case O_SIZE:
		o->size_min = o->size_max = size_opt("size", v);
		break;
	case O_SIZE_MIX:
		size_mix_opt(o, v);
		break;
	case O_DOMAINS:
		o->domains = (unsigned)num_opt("domains", v, 1, 10000000);
		break;
	case O_DOMAIN_FORMAT:
		if (!format_ok(v) || strlen(v) > 200)
			rp_die(RP_EX_USAGE, "--domain-format: needs exactly one %%u, got '%s'", v);
		o->domain_format = v;
		break;
	case O_RCPTS:
		o->rcpts = (unsigned)num_opt("rcpts", v, 1, BLAST_MAX_RCPTS);
		break;
	case O_FROM:
		if (strlen(v) > 250 || strpbrk(v, "<> \r\n"))
			rp_die(RP_EX_USAGE, "--from: not a mailbox: '%s'", v);
		o->from = v;
		break;
	case O_RCPT_FILE:
		rcpt_file_opt(o, v);
		break;
	case O_BODY_FILE:
		body_file_opt(o, v);
		break;
	case O_RATE:
		o->rate = rate_opt(v);
		break;
	case O_NO_PIPE:
		o->pipelining = false;
		break;
	case O_NO_CHUNK:
		o->chunking = false;
		break;
	case O_TIMEOUT:
		if (!rp_parse_duration_ms(v, &o->timeout_ms) || !o->timeout_ms)
			rp_die(RP_EX_USAGE, "--timeout: expected seconds, got '%s'", v);
		break;
	case O_SEED:
		o->seed = num_opt("seed", v, 0, UINT64_MAX);
		break;
	case O_JSON:
		o->json = true;
		break;
	case O_KEY:
		/* It goes into a header line as given. */
		if (!*v || strlen(v) > 1000 || strpbrk(v, " \t\r\n"))
			rp_die(RP_EX_USAGE, "--key: expected a token without spaces");
		o->key = v;
		break;
	case O_BATCH:
		st->batch = (unsigned)num_opt("batch", v, 1, 100000);
		break;
	case O_PIPELINE:
		o->pipeline = (unsigned)num_opt("pipeline", v, 1, MAX_PIPELINE);
		break;
	case O_PROGRESS:
		o->progress = true;
		break;
	case O_NO_PROGRESS:
		o->progress = false;
		break;
	case O_HELP:
		usage(stdout);
		exit(RP_EX_OK);
	default:
		usage(stderr);
		exit(RP_EX_USAGE);
	}
}

/* server_host - the host part of --server ("[::1]:25" -> "::1"). */
static void server_host(const char *hostport, char *out, size_t outlen)
{
	const char *p = hostport;
	size_t n;
	if (*p == '[') {
		p++;
		n = strcspn(p, "]");
	} else {
		const char *colon = strrchr(p, ':');
		n = colon ? (size_t)(colon - p) : strlen(p);
	}
	snprintf(out, outlen, "%.*s", (int)n, p);
}

/* check_tls_opts - the TLS and no-mail options fit together; exits 64. */
static void check_tls_opts(struct blast_opts *o)
{
	bool tls = o->starttls || o->tls_implicit;
	if (o->starttls && o->tls_implicit)
		rp_die(RP_EX_USAGE, "--starttls and --tls: one or the other");
	if ((tls || o->handshake_loop || o->hold) && o->mode != &blast_mode_smtp)
		rp_die(RP_EX_USAGE, "--starttls, --tls, --handshakes and --hold are for mode smtp");
	if (!tls && (o->tls_resume || o->tls_ca || o->tls_name[0]))
		rp_die(RP_EX_USAGE,
		       "--tls-resume, --tls-ca and --tls-name need --starttls or --tls");
	if (o->handshake_loop && o->hold)
		rp_die(RP_EX_USAGE, "--handshakes and --hold: one or the other");
	if ((o->hold || (o->handshake_loop && !o->handshakes)) && !o->duration_ms)
		rp_die(RP_EX_USAGE, "--hold and --handshakes 0 end with --duration: give it");
	if (tls && !o->tls_name[0])
		server_host(o->server_text, o->tls_name, sizeof(o->tls_name));
}

/* parse_args - options into the run's settings; bad usage exits 64. */
static void parse_args(struct blast_opts *o, int argc, char **argv)
{
	struct arg_state st = { 0 };
	int c;
	set_defaults(o);
	while ((c = getopt_long(argc, argv, "", blast_longopts, NULL)) != -1)
		apply_opt(o, &st, c, optarg);
	if (optind < argc)
		rp_die(RP_EX_USAGE, "unexpected argument '%s'", argv[optind]);
	if (!st.server) {
		usage(stderr);
		exit(RP_EX_USAGE);
	}
	if (!st.messages_set && !o->duration_ms)
		o->messages = DEFAULT_MESSAGES;
	if (st.batch && !o->mode->batches)
		rp_die(RP_EX_USAGE, "--batch: mode %s sends one message per transaction",
		       o->mode->name);
	if (o->pipeline > 1 && !o->mode->pipelines)
		rp_die(RP_EX_USAGE, "--pipeline: mode %s has one transaction in flight",
		       o->mode->name);
	o->batch = st.batch ? st.batch : o->mode->batches ? DEFAULT_BATCH : 1;
	if (o->body && o->mode != &blast_mode_smtp)
		rp_die(RP_EX_USAGE, "--body-file is for mode smtp");
	if (o->body)
		o->size_min = o->size_max = (uint32_t)o->body_len; /* over any --size */
	check_tls_opts(o);
}

/* per_s - n / seconds, whole (0 when no time passed). */
static double per_s(uint64_t n, double seconds)
{
	return seconds > 0 ? (double)(uint64_t)((double)n / seconds) : 0;
}

/* report_json_extra - "tls", "loop" and "hold", when the options made them. */
static void report_json_extra(const struct blast_opts *o, const struct blast_report *r,
                              struct buf *b)
{
	if (o->starttls || o->tls_implicit) {
		buf_printf(b,
		           ", \"tls\": {\"mode\": \"%s\", \"handshakes\": %llu, \"resumed\": %llu, "
		           "\"failed\": %llu, \"seconds\": ",
		           o->starttls ? "starttls" : "implicit",
		           (unsigned long long)r->tls_handshakes,
		           (unsigned long long)r->tls_resumed, (unsigned long long)r->tls_failed);
		bench_json_num(b, r->tls_seconds);
		buf_puts(b, ", \"handshakes_per_s\": ");
		bench_json_num(b, per_s(r->tls_handshakes, r->tls_seconds));
		buf_puts(b, ", \"handshake_ms\": {\"p50\": ");
		bench_json_num(b, r->tls_latency.p50);
		buf_puts(b, ", \"p99\": ");
		bench_json_num(b, r->tls_latency.p99);
		buf_puts(b, ", \"max\": ");
		bench_json_num(b, r->tls_latency.max);
		buf_puts(b, "}}");
	}
	if (o->handshake_loop) {
		buf_printf(b, ", \"loop\": {\"sessions\": %llu, \"seconds\": ",
		           (unsigned long long)r->loop_sessions);
		bench_json_num(b, r->loop_seconds);
		buf_puts(b, ", \"sessions_per_s\": ");
		bench_json_num(b, per_s(r->loop_sessions, r->loop_seconds));
		buf_puts(b, "}");
	}
	if (o->hold) {
		buf_printf(b,
		           ", \"hold\": {\"peak\": %llu, \"idle_closed\": %llu, \"all_held_s\": ",
		           (unsigned long long)r->held_peak, (unsigned long long)r->idle_closed);
		bench_json_num(b, r->all_held_s);
		buf_puts(b, "}");
	}
}

/* report_json - the contract's JSON line. */
static void report_json(const struct blast_opts *o, const struct blast_report *r)
{
	struct buf b = { 0 };
	buf_puts(&b, "{\"mode\": ");
	bench_json_str(&b, o->mode->name, strlen(o->mode->name));
	buf_printf(&b,
	           ", \"messages\": %llu, \"requests\": %llu, \"accepted\": %llu, \"errors\": {",
	           (unsigned long long)r->messages, (unsigned long long)r->requests,
	           (unsigned long long)r->accepted);
	for (unsigned i = 0; i < r->nerr; i++) {
		if (i)
			buf_puts(&b, ", ");
		bench_json_str(&b, r->errors[i].key, strlen(r->errors[i].key));
		buf_printf(&b, ": %llu", (unsigned long long)r->errors[i].n);
	}
	buf_puts(&b, "}, \"seconds\": ");
	bench_json_num(&b, r->seconds);
	buf_puts(&b, ", \"rate\": ");
	bench_json_num(&b,
	               r->seconds > 0 ? (double)(uint64_t)((double)r->accepted / r->seconds) : 0);
	buf_printf(&b, ", \"request_rate\": ");
	bench_json_num(&b,
	               r->seconds > 0 ? (double)(uint64_t)((double)r->requests / r->seconds) : 0);
	buf_printf(&b,
	           ", \"connections\": %u, \"batch\": %u, \"pipeline\": %u, "
	           "\"latency_ms\": {\"n\": %llu, \"p50\": ",
	           o->connections, o->batch, o->pipeline, (unsigned long long)r->latency.n);
	bench_json_num(&b, r->latency.p50);
	buf_puts(&b, ", \"p99\": ");
	bench_json_num(&b, r->latency.p99);
	buf_puts(&b, ", \"p999\": ");
	bench_json_num(&b, r->latency.p999);
	buf_puts(&b, ", \"max\": ");
	bench_json_num(&b, r->latency.max);
	buf_puts(&b, "}");
	report_json_extra(o, r, &b);
	buf_puts(&b, "}\n");
	fwrite(buf_head(&b), 1, buf_used(&b), stdout);
	buf_free(&b);
}

/* report_text - the same for people. */
static void report_text(const struct blast_opts *o, const struct blast_report *r)
{
	printf("mode %s  server %s  connections %u", o->mode->name, o->server_text, o->connections);
	if (o->batch > 1)
		printf("  batch %u", o->batch);
	if (o->pipeline > 1)
		printf("  pipeline %u", o->pipeline);
	printf("\nmessages %llu  requests %llu  accepted %llu  errors",
	       (unsigned long long)r->messages, (unsigned long long)r->requests,
	       (unsigned long long)r->accepted);
	if (!r->nerr)
		printf(" none");
	for (unsigned i = 0; i < r->nerr; i++)
		printf(" %s=%llu", r->errors[i].key, (unsigned long long)r->errors[i].n);
	printf("\nseconds %.3f  rate %.0f messages/s  %.0f requests/s\n", r->seconds,
	       r->seconds > 0 ? (double)r->accepted / r->seconds : 0.0,
	       r->seconds > 0 ? (double)r->requests / r->seconds : 0.0);
	printf("latency ms (request written -> final reply)  p50 %.3f  p99 %.3f  p999 %.3f  "
	       "max %.3f\n",
	       r->latency.p50, r->latency.p99, r->latency.p999, r->latency.max);
	if (o->starttls || o->tls_implicit)
		printf("tls (%s) handshakes %llu  resumed %llu  failed %llu  %.0f/s  "
		       "handshake ms p50 %.3f  p99 %.3f\n",
		       o->starttls ? "starttls" : "implicit", (unsigned long long)r->tls_handshakes,
		       (unsigned long long)r->tls_resumed, (unsigned long long)r->tls_failed,
		       per_s(r->tls_handshakes, r->tls_seconds), r->tls_latency.p50,
		       r->tls_latency.p99);
	if (o->handshake_loop)
		printf("sessions %llu in %.3f s  %.0f/s\n", (unsigned long long)r->loop_sessions,
		       r->loop_seconds, per_s(r->loop_sessions, r->loop_seconds));
	if (o->hold)
		printf(
		    "held at most %llu sessions (all %u after %.3f s); %llu closed by the server\n",
		    (unsigned long long)r->held_peak, o->connections, r->all_held_s,
		    (unsigned long long)r->idle_closed);
}

/* main - parse, run, report. */
int main(int argc, char **argv)
{
	struct blast_opts o;
	parse_args(&o, argc, argv);
	uint64_t nofile = rp_raise_nofile();
	if (o.connections + 16 > nofile)
		rp_die(RP_EX_USAGE, "--connections %u needs more descriptors than the limit %llu",
		       o.connections, (unsigned long long)nofile);
	signal(SIGPIPE, SIG_IGN);
	struct blast_report *rep = xcalloc(1, sizeof(*rep));
	bool reached = blast_run(&o, rep);
	if (o.json)
		report_json(&o, rep);
	else
		report_text(&o, rep);
	fflush(stdout);
	free(rep);
	return reached ? RP_EX_OK : RP_EX_UNAVAILABLE;
}
