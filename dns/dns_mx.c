/* dns_mx.c - pure helpers: MX ordering, null MX, answer TTLs (see dns.h). */
#include <arpa/nameser.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

static int pref_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;
	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return strcmp(x->host, y->host); /* a stable base before the shuffle */
}

static uint64_t next(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 2685821657736338717ull;
}

void dns_mx_order(struct dns_mx *mx, unsigned n, uint64_t rnd)
{
	if (n < 2)
		return; /* nothing to order, and mx may be NULL */
	qsort(mx, n, sizeof(*mx), pref_cmp);
	unsigned i = 0;
	while (i < n) {
		unsigned j = i + 1;
		while (j < n && mx[j].pref == mx[i].pref)
			j++;
		/* Fisher-Yates within the run [i, j). */
		for (unsigned k = j - 1; k > i; k--) {
			unsigned m = i + (unsigned)(next(&rnd) % (k - i + 1));
			struct dns_mx t = mx[k];
			mx[k] = mx[m];
			mx[m] = t;
		}
		i = j;
	}
}

bool dns_mx_is_null(const struct dns_mx *mx, unsigned n)
{
	return n == 1 && mx[0].pref == 0 && (!mx[0].host[0] || !strcmp(mx[0].host, "."));
}

bool dns_answer_min_ttl(const unsigned char *abuf, int alen, unsigned *ttl)
{
	ns_msg msg;
	if (alen <= 0 || ns_initparse(abuf, alen, &msg) < 0)
		return false;
	int n = ns_msg_count(msg, ns_s_an);
	bool any = false;
	unsigned min = 0;
	for (int i = 0; i < n; i++) {
		ns_rr rr;
		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
			return false;
		unsigned t = (unsigned)ns_rr_ttl(rr);
		if (!any || t < min)
			min = t;
		any = true;
	}
	if (any)
		*ttl = min;
	return any;
}
