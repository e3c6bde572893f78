/* sink_fault.c - what ringpost-sink does wrong on purpose: --fault
 * probabilities, the --rcpt-script per-address code sequences, the
 * --max-rate pacer, and the reply texts of injected codes.
 *
 * Faults draw from a per-loop PRNG seeded with --seed + loop index, so one
 * loop with one client replays the same decisions run after run.
 */
#include "sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define SCRIPT_TABLE_MIN 1024

struct script_entry {
	char *addr; /* lower-cased address, NULL = empty slot */
	uint64_t hash;
	unsigned count; /* RCPTs seen for it */
};

struct sink_script {
	pthread_mutex_t lock;
	struct script_entry *tab; /* open addressing */
	size_t cap, used;
};

/* parse_prob - "0.25" into p in [0, 1]. */
static bool parse_prob(const char *s, size_t n, double *p)
{
	char tmp[32], *end;
	if (!n || n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	errno = 0;
	double v = strtod(tmp, &end);
	if (errno || *end || v < 0 || v > 1)
		return false;
	*p = v;
	return true;
}

/* sink_faults_parse - NAME=P pairs into f; tarpit takes P:MS. */
bool sink_faults_parse(const char *spec, struct sink_faults *f, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		size_t off;
	} keys[] = {
		{ "connect421", offsetof(struct sink_faults, connect421) },
		{ "rcpt451", offsetof(struct sink_faults, rcpt451) },
		{ "rcpt550", offsetof(struct sink_faults, rcpt550) },
		{ "data451", offsetof(struct sink_faults, data451) },
		{ "drop", offsetof(struct sink_faults, drop) },
		{ "tarpit", offsetof(struct sink_faults, tarpit) },
		{ "silence", offsetof(struct sink_faults, silence) },
		{ "drop250", offsetof(struct sink_faults, drop250) },
	};
	const char *p = spec;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		if (!eq) {
			snprintf(err, errlen, "fault '%.*s': expected NAME=P", (int)len, p);
			return false;
		}
		size_t klen = (size_t)(eq - p);
		const char *val = eq + 1;
		size_t vlen = len - klen - 1;
		bool found = false;
		for (size_t i = 0; i < RP_ARRAY_LEN(keys); i++) {
			if (strlen(keys[i].name) != klen || strncmp(keys[i].name, p, klen))
				continue;
			found = true;
			double *dst = (double *)((char *)f + keys[i].off);
			size_t plen = vlen;
			if (dst == &f->tarpit) {
				const char *colon = memchr(val, ':', vlen);
				uint64_t ms;
				char tmp[32];
				size_t mlen = colon ? vlen - (size_t)(colon + 1 - val) : 0;
				if (!colon || !mlen || mlen >= sizeof(tmp)) {
					snprintf(err, errlen, "fault tarpit: expected tarpit=P:MS");
					return false;
				}
				memcpy(tmp, colon + 1, mlen);
				tmp[mlen] = '\0';
				if (!rp_parse_u64(tmp, &ms)) {
					snprintf(err, errlen, "fault tarpit: bad delay '%s'", tmp);
					return false;
				}
				f->tarpit_ms = ms;
				plen = (size_t)(colon - val);
			}
			if (!parse_prob(val, plen, dst)) {
				snprintf(err, errlen, "fault %.*s: probability must be in 0..1",
				         (int)klen, p);
				return false;
			}
		}
		if (!found) {
			snprintf(err, errlen, "unknown fault '%.*s'", (int)klen, p);
			return false;
		}
		p = end ? end + 1 : p + len;
	}
	return true;
}

/* sink_script_parse - comma-separated three-digit codes, 2xx..5xx. */
bool sink_script_parse(const char *s, int **codes, unsigned *n)
{
	unsigned cap = 8, cnt = 0;
	int *v = xmalloc(cap * sizeof(int));
	const char *p = s;
	for (;;) {
		if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' ||
		    p[2] > '9' || (p[3] != ',' && p[3] != '\0')) {
			free(v);
			return false;
		}
		if (cnt == cap) {
			cap *= 2;
			v = xrealloc(v, cap * sizeof(int));
		}
		v[cnt++] = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		if (p[3] == '\0')
			break;
		p += 4;
	}
	*codes = v;
	*n = cnt;
	return true;
}

/* sink_script_new - an empty per-address table. */
struct sink_script *sink_script_new(void)
{
	struct sink_script *s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->cap = SCRIPT_TABLE_MIN;
	s->tab = xcalloc(s->cap, sizeof(*s->tab));
	return s;
}

/* script_find - the slot of addr (or the empty slot where it belongs). */
static struct script_entry *script_find(struct script_entry *tab, size_t cap, const char *a,
                                        size_t n, uint64_t h)
{
	size_t i = (size_t)h & (cap - 1);
	while (tab[i].addr &&
	       !(tab[i].hash == h && strlen(tab[i].addr) == n && !memcmp(tab[i].addr, a, n)))
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

/* script_grow - double the table when it is half full. */
static void script_grow(struct sink_script *s)
{
	size_t ocap = s->cap;
	struct script_entry *old = s->tab;
	s->cap *= 2;
	s->tab = xcalloc(s->cap, sizeof(*s->tab));
	for (size_t i = 0; i < ocap; i++)
		if (old[i].addr)
			*script_find(s->tab, s->cap, old[i].addr, strlen(old[i].addr),
			             old[i].hash) = old[i];
	free(old);
}

/* sink_script_code - count this RCPT for addr and return its scripted code. */
int sink_script_code(struct sink *sk, const char *addr, size_t n)
{
	struct sink_script *s = sk->script;
	char low[320];
	if (n >= sizeof(low))
		n = sizeof(low) - 1;
	for (size_t i = 0; i < n; i++)
		low[i] = (addr[i] >= 'A' && addr[i] <= 'Z') ? (char)(addr[i] + 32) : addr[i];
	uint64_t h = rp_hash64(low, n);
	pthread_mutex_lock(&s->lock);
	if (2 * (s->used + 1) > s->cap)
		script_grow(s);
	struct script_entry *e = script_find(s->tab, s->cap, low, n, h);
	if (!e->addr) {
		e->addr = xstrndup(low, n);
		e->hash = h;
		s->used++;
	}
	unsigned k = e->count++;
	pthread_mutex_unlock(&s->lock);
	return sk->opt.script[RP_MIN(k, sk->opt.nscript - 1)];
}

/* sink_chance - one Bernoulli draw from the loop's PRNG. */
bool sink_chance(struct sink_loop *sl, double p)
{
	if (p <= 0)
		return false;
	return bench_rand_unit(&sl->rand) < p;
}

/* sink_rate_delay_ms - book the next slot of this loop's share of the rate. */
uint64_t sink_rate_delay_ms(struct sink_loop *sl)
{
	/* Each loop takes an equal share of the rate; slots are 1/rate apart
	 * and an idle period earns no burst. */
	double per_loop = sl->sk->opt.max_rate / sl->sk->opt.threads;
	uint64_t gap_us = (uint64_t)(1e6 / per_loop);
	uint64_t now_us = rp_mono_ns() / 1000;
	uint64_t slot = RP_MAX(now_us, sl->rate_next_us);
	sl->rate_next_us = slot + RP_MAX(gap_us, 1);
	return slot > now_us ? (slot - now_us + 999) / 1000 : 0;
}

/* sink_reply_line - code, its usual enhanced code and text, and where it was injected. */
size_t sink_reply_line(int code, const char *stage, char *out, size_t outlen)
{
	const char *enh, *text;
	switch (code) {
	case 250:
		enh = "2.0.0";
		text = "Ok";
		break;
	case 421:
		enh = "4.3.2";
		text = "Service not available, closing transmission channel";
		break;
	case 450:
		enh = "4.2.0";
		text = "Mailbox unavailable";
		break;
	case 451:
		enh = "4.3.0";
		text = "Temporary failure, try again later";
		break;
	case 452:
		enh = "4.2.2";
		text = "Mailbox full";
		break;
	case 550:
		enh = "5.1.1";
		text = "No such user";
		break;
	case 552:
		enh = "5.2.2";
		text = "Mailbox full";
		break;
	case 553:
		enh = "5.1.3";
		text = "Bad address";
		break;
	case 554:
		enh = "5.0.0";
		text = "Transaction failed";
		break;
	default:
		enh = code >= 500 ? "5.0.0" : code >= 400 ? "4.0.0" : "2.0.0";
		text = code >= 400 ? "Failed" : "Ok";
		break;
	}
	if (code / 100 == 2 && !strcmp(stage, "rcpt"))
		enh = "2.1.5";
	int n = snprintf(out, outlen, "%d %s %s (sink %s)\r\n", code, enh, text, stage);
	rp_assert(n > 0 && (size_t)n < outlen);
	return (size_t)n;
}
