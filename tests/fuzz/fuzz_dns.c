/* fuzz_dns.c - what ringpost does with a DNS answer a resolver hands back
 * (dns/dns_resolver.c mx_done, dns/dns_mx.c): the MX reply parsed by
 * c-ares, the smallest TTL read from the raw answer, null MX detection,
 * the preference order with its shuffle, and each exchanger's name
 * through IDNA as a host lookup would take it.
 *
 * Input: a raw DNS reply. Oracles: the order is sorted by preference and
 * a permutation of the records; a null MX is a single "." (or "") of
 * preference 0.
 */
#include <ares.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65535)
		return 0;
	unsigned char *abuf = (unsigned char *)fuzz_copy(data, size);
	unsigned ttl;
	dns_answer_min_ttl(abuf, (int)size, &ttl);
	struct ares_mx_reply *mx = NULL;
	if (ares_parse_mx_reply(abuf, (int)size, &mx) == ARES_SUCCESS) {
		unsigned n = 0;
		for (struct ares_mx_reply *m = mx; m; m = m->next)
			n++;
		struct dns_mx *v = calloc(n ? n : 1, sizeof(*v));
		unsigned sum = 0, k = 0;
		for (struct ares_mx_reply *m = mx; m; m = m->next, k++) {
			v[k].host = strdup(m->host);
			v[k].pref = m->priority;
			sum += m->priority;
		}
		ares_free_data(mx);
		if (dns_mx_is_null(v, n))
			fuzz_check(n == 1 && v[0].pref == 0 &&
			           (!strcmp(v[0].host, ".") || !v[0].host[0]));
		dns_mx_order(v, n, size * 0x9e3779b97f4a7c15ull);
		unsigned after = 0;
		for (unsigned i = 0; i < n; i++) {
			after += v[i].pref;
			if (i)
				fuzz_check(v[i - 1].pref <= v[i].pref);
			char out[300];
			dns_to_ascii(v[i].host, out, sizeof(out));
			free(v[i].host);
		}
		fuzz_check(after == sum);
		free(v);
	}
	free(abuf);
	return 0;
}
