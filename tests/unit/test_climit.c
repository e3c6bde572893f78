/* test_climit.c - base/climit: the connection table (counts per address
 * and listener kind, IPv6 /64 and v4-mapped addresses as one client, the
 * limit, exempt networks, no limit, growth to thousands of addresses and
 * back, agreement with a simple model under random opens and closes), the
 * token bucket (burst, refill, the wait it names), data deadlines, exempt
 * network matching, notes, and the log budget.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/climit.h"
#include "base/util.h"

static struct sockaddr_storage v4(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(40000);
	cr_assert_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1, "%s", ip);
	return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(40000);
	cr_assert_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1, "%s", ip);
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static struct climit_config limits(uint32_t conns)
{
	struct climit_config cc;
	climit_config_defaults(&cc);
	cc.connections_per_client = conns;
	return cc;
}

/* ---- the connection table ---------------------------------------------- */

Test(climit_conns, counts_up_to_the_limit_per_address_and_kind)
{
	struct climit *cl = climit_new();
	struct climit_config cc = limits(3);
	struct sockaddr_storage a = v4("192.0.2.1"), b = v4("192.0.2.2");
	struct climit_ticket t[5];
	for (int i = 0; i < 3; i++)
		cr_assert(climit_conn_open(cl, &cc, CLIMIT_SUBMISSION, SA(a), &t[i]), "conn %d", i);
	cr_assert_eq(climit_conn_count(cl, CLIMIT_SUBMISSION, SA(a)), 3);
	struct climit_ticket refused;
	cr_assert(!climit_conn_open(cl, &cc, CLIMIT_SUBMISSION, SA(a), &refused), "the 4th");
	cr_assert_eq(refused.family, 0, "a refused connection holds nothing");
	cr_assert_eq(climit_conn_count(cl, CLIMIT_SUBMISSION, SA(a)), 3, "nothing counted");
	/* Another address, and the same address on another listener kind. */
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_SUBMISSION, SA(b), &t[3]));
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_IMAP, SA(a), &t[4]));
	cr_assert_eq(climit_conn_count(cl, CLIMIT_IMAP, SA(a)), 1);
	/* One closes: one more may come. */
	climit_conn_close(cl, &t[1]);
	cr_assert_eq(t[1].family, 0, "a returned ticket holds nothing");
	climit_conn_close(cl, &t[1]); /* a second return is a no-op */
	cr_assert_eq(climit_conn_count(cl, CLIMIT_SUBMISSION, SA(a)), 2);
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_SUBMISSION, SA(a), &t[1]));
	for (int i = 0; i < 5; i++)
		climit_conn_close(cl, &t[i]);
	cr_assert_eq(climit_entries(cl), 0);
	climit_free(cl);
}

Test(climit_conns, ipv6_64_and_v4_mapped_are_one_client)
{
	struct climit *cl = climit_new();
	struct climit_config cc = limits(2);
	struct sockaddr_storage a1 = v6("2001:db8:1:2::1"), a2 = v6("2001:db8:1:2:ffff::9"),
	                        other = v6("2001:db8:1:3::1");
	struct climit_ticket t[4];
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_API, SA(a1), &t[0]));
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_API, SA(a2), &t[1]));
	cr_assert(!climit_conn_open(cl, &cc, CLIMIT_API, SA(a1), &t[2]), "same /64");
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_API, SA(other), &t[2]), "another /64");
	struct sockaddr_storage m = v6("::ffff:198.51.100.7"), p = v4("198.51.100.7");
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_API, SA(m), &t[3]));
	cr_assert_eq(climit_conn_count(cl, CLIMIT_API, SA(p)), 1, "v4-mapped is the v4 client");
	for (int i = 0; i < 4; i++)
		climit_conn_close(cl, &t[i]);
	climit_free(cl);
}

Test(climit_conns, exempt_networks_and_no_limit)
{
	struct climit *cl = climit_new();
	struct climit_config cc = limits(1);
	struct climit_net nets[2] = { { .family = AF_INET, .addr = { 127 }, .prefix = 8 },
		                      { .family = AF_INET6, .prefix = 32 } };
	cr_assert_eq(inet_pton(AF_INET6, "2001:db8::", nets[1].addr), 1);
	cc.exempt = nets;
	cc.nexempt = 2;
	struct sockaddr_storage lo = v4("127.0.0.5"), in6 = v6("2001:db8:ff::1"),
	                        out = v4("10.0.0.1");
	struct climit_ticket t[8];
	for (int i = 0; i < 3; i++)
		cr_assert(climit_conn_open(cl, &cc, CLIMIT_POP3, SA(lo), &t[i]), "exempt %d", i);
	cr_assert_eq(climit_conn_count(cl, CLIMIT_POP3, SA(lo)), 3, "exempt ones are counted");
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_POP3, SA(in6), &t[3]));
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_POP3, SA(in6), &t[4]), "exempt v6");
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_POP3, SA(out), &t[5]));
	cr_assert(!climit_conn_open(cl, &cc, CLIMIT_POP3, SA(out), &t[6]), "not exempt");
	cc.connections_per_client = 0; /* no limit: a reload that lifts it */
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_POP3, SA(out), &t[6]));
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_POP3, SA(out), &t[7]));
	cr_assert_eq(climit_conn_count(cl, CLIMIT_POP3, SA(out)), 3);
	for (int i = 0; i < 8; i++)
		climit_conn_close(cl, &t[i]);
	cr_assert_eq(climit_entries(cl), 0);
	climit_free(cl);
}

Test(climit_conns, other_families_are_not_counted)
{
	struct climit *cl = climit_new();
	struct climit_config cc = limits(1);
	struct sockaddr_storage un;
	memset(&un, 0, sizeof(un));
	un.ss_family = AF_UNIX;
	struct climit_ticket t[2];
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_API, SA(un), &t[0]));
	cr_assert(climit_conn_open(cl, &cc, CLIMIT_API, SA(un), &t[1]));
	cr_assert_eq(t[0].family, 0);
	climit_conn_close(cl, &t[0]);
	cr_assert(climit_conn_open(NULL, &cc, CLIMIT_API, SA(un), &t[0]), "no table: allowed");
	climit_free(cl);
}

/* The table against a plain array of counts, under random opens and
 * closes of 3,000 addresses (so it grows, shifts entries back on removal
 * and shrinks again). */
Test(climit_conns, agrees_with_a_model)
{
	enum { NADDR = 3000, NOPS = 60000, LIMIT = 4 };
	struct climit *cl = climit_new();
	struct climit_config cc = limits(LIMIT);
	static unsigned count[NADDR][2];
	static struct climit_ticket held[NADDR][2][LIMIT];
	memset(count, 0, sizeof(count));
	uint64_t seed = 42;
	for (int op = 0; op < NOPS; op++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		unsigned a = (unsigned)(seed >> 33) % NADDR, kind = (unsigned)(seed >> 20) & 1;
		bool open = ((seed >> 13) & 3) != 0 || op < NOPS / 2;
		if (op >= NOPS * 3 / 4)
			open = false; /* then everything closes */
		char ip[32];
		snprintf(ip, sizeof(ip), "10.%u.%u.1", a / 256, a % 256);
		struct sockaddr_storage ss = v4(ip);
		enum climit_kind k = kind ? CLIMIT_IMAP : CLIMIT_INBOUND;
		if (open) {
			struct climit_ticket t;
			bool ok = climit_conn_open(cl, &cc, k, SA(ss), &t);
			cr_assert_eq(ok, count[a][kind] < LIMIT, "op %d: %s", op, ip);
			if (ok)
				held[a][kind][count[a][kind]++] = t;
		} else if (count[a][kind]) {
			climit_conn_close(cl, &held[a][kind][--count[a][kind]]);
		}
		if (op % 997 == 0)
			cr_assert_eq(climit_conn_count(cl, k, SA(ss)), count[a][kind], "op %d", op);
	}
	unsigned live = 0;
	for (unsigned a = 0; a < NADDR; a++)
		for (unsigned kind = 0; kind < 2; kind++) {
			char ip[32];
			snprintf(ip, sizeof(ip), "10.%u.%u.1", a / 256, a % 256);
			struct sockaddr_storage ss = v4(ip);
			cr_assert_eq(
			    climit_conn_count(cl, kind ? CLIMIT_IMAP : CLIMIT_INBOUND, SA(ss)),
			    count[a][kind], "%s kind %u", ip, kind);
			live += count[a][kind] > 0;
		}
	cr_assert_eq(climit_entries(cl), live);
	for (unsigned a = 0; a < NADDR; a++)
		for (unsigned kind = 0; kind < 2; kind++)
			while (count[a][kind])
				climit_conn_close(cl, &held[a][kind][--count[a][kind]]);
	cr_assert_eq(climit_entries(cl), 0);
	climit_free(cl);
}

/* ---- the bucket --------------------------------------------------------- */

#define T0 1000000ull

Test(climit_bucket, burst_then_the_rate)
{
	struct climit_bucket b = { 0 };
	uint64_t wait = 0;
	int n = 0;
	while (climit_bucket_ready(&b, 100, T0, &wait)) { /* all at one instant */
		climit_bucket_take(&b, 100);
		cr_assert_lt(++n, 1000, "no end to the burst");
	}
	cr_assert_eq(n, 200, "a burst of twice the rate, got %d", n);
	cr_assert_eq(wait, 10, "the next in 1/100 s, said %llu ms", (unsigned long long)wait);
	cr_assert(!climit_bucket_ready(&b, 100, T0 + 9, &wait));
	cr_assert_eq(wait, 1);
	cr_assert(climit_bucket_ready(&b, 100, T0 + 10, &wait));
	climit_bucket_take(&b, 100);
	/* One second later: 100 more, not 200. */
	n = 0;
	while (climit_bucket_ready(&b, 100, T0 + 1010, &wait)) {
		climit_bucket_take(&b, 100);
		n++;
	}
	cr_assert_eq(n, 100, "a second refills the rate, got %d", n);
	/* A long pause refills to the burst, no further. */
	n = 0;
	while (climit_bucket_ready(&b, 100, T0 + 3600000, &wait)) {
		climit_bucket_take(&b, 100);
		n++;
	}
	cr_assert_eq(n, 200);
}

Test(climit_bucket, slow_rates_and_no_limit)
{
	struct climit_bucket b = { 0 };
	uint64_t wait = 0;
	for (int i = 0; i < 2; i++) {
		cr_assert(climit_bucket_ready(&b, 1, T0, &wait));
		climit_bucket_take(&b, 1);
	}
	cr_assert(!climit_bucket_ready(&b, 1, T0, &wait));
	cr_assert_eq(wait, 1000, "one a second: %llu", (unsigned long long)wait);
	cr_assert(climit_bucket_ready(&b, 1, T0 + 1000, &wait));
	struct climit_bucket u = { 0 };
	for (int i = 0; i < 100000; i++) {
		cr_assert(climit_bucket_ready(&u, 0, T0, &wait), "rate 0 is no limit");
		climit_bucket_take(&u, 0);
	}
}

/* ---- deadlines, networks, notes, logs ------------------------------------ */

Test(climit_misc, data_deadline)
{
	struct climit_config cc = limits(50);
	cc.data_timeout_ms = 60000;
	cc.min_data_rate = 1000;
	cr_assert_eq(climit_data_deadline(&cc, T0, 0), T0 + 60000);
	cr_assert_eq(climit_data_deadline(&cc, T0, 999), T0 + 60000);
	cr_assert_eq(climit_data_deadline(&cc, T0, 5000), T0 + 65000);
	cc.min_data_rate = 0;
	cr_assert_eq(climit_data_deadline(&cc, T0, 1u << 30), T0 + 60000, "a plain deadline");
}

Test(climit_misc, defaults)
{
	struct climit_config cc;
	climit_config_defaults(&cc);
	cr_assert_eq(cc.connections_per_client, 50);
	cr_assert_eq(cc.commands_per_second, 100);
	cr_assert_eq(cc.command_timeout_ms, 300000);
	cr_assert_eq(cc.header_timeout_ms, 30000);
	cr_assert_eq(cc.output_buffer, 256 * 1024);
	cr_assert_eq(cc.nexempt, 0, "loopback is not exempt by default");
}

Test(climit_misc, exempt_prefixes)
{
	struct climit_config cc = limits(1);
	struct climit_net n[2] = { { .family = AF_INET, .prefix = 20 },
		                   { .family = AF_INET6, .prefix = 0 } };
	cr_assert_eq(inet_pton(AF_INET, "192.0.16.0", n[0].addr), 1);
	cc.exempt = n;
	cc.nexempt = 1;
	struct sockaddr_storage in1 = v4("192.0.31.255"), out1 = v4("192.0.32.0"),
	                        mapped = v6("::ffff:192.0.20.1"), six = v6("2001:db8::1");
	cr_assert(climit_exempt(&cc, SA(in1)));
	cr_assert(!climit_exempt(&cc, SA(out1)));
	cr_assert(climit_exempt(&cc, SA(mapped)), "v4-mapped matches the IPv4 network");
	cr_assert(!climit_exempt(&cc, SA(six)));
	cc.nexempt = 2; /* ::/0: every IPv6 address */
	cr_assert(climit_exempt(&cc, SA(six)));
}

Test(climit_misc, notes_once_per_reason)
{
	struct climit_session s;
	memset(&s, 0, sizeof(s));
	cr_assert(climit_note(&s, CLIMIT_RATE));
	cr_assert(!climit_note(&s, CLIMIT_RATE));
	cr_assert(climit_note(&s, CLIMIT_OUTPUT));
	cr_assert(!climit_note(&s, CLIMIT_OUTPUT));
}

Test(climit_misc, log_budget)
{
	struct climit_log l = { 0 };
	unsigned dropped = 99;
	for (int i = 0; i < CLIMIT_LOG_PER_SEC; i++) {
		cr_assert(climit_log_ok(&l, T0 + (uint64_t)i, &dropped));
		cr_assert_eq(dropped, 0);
	}
	for (int i = 0; i < 5; i++)
		cr_assert(!climit_log_ok(&l, T0 + 500, &dropped), "over the budget");
	cr_assert(climit_log_ok(&l, T0 + 1000, &dropped), "the next second");
	cr_assert_eq(dropped, 5, "the suppressed lines are counted");
	cr_assert(climit_log_ok(&l, T0 + 1001, &dropped));
	cr_assert_eq(dropped, 0);
}

Test(climit_misc, names)
{
	cr_assert_str_eq(climit_kind_names[CLIMIT_SUBMISSION], "submission");
	cr_assert_str_eq(climit_kind_names[CLIMIT_POP3], "pop3");
	cr_assert_str_eq(climit_reason_names[CLIMIT_CONNECTIONS], "connections");
	cr_assert_str_eq(climit_reason_names[CLIMIT_IDLE], "idle");
}
