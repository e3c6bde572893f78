/* test_outcome.c - delivery policy (queue/outcome.c): one table row per line
 * of the policy in outcome.c's header comment (replies, failures, expiry),
 * retry delays with their jitter bounds, and enhanced codes from reply text.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "queue/outcome.h"

#define NOW 1800000000000ull
#define DAY 86400000ull

static const uint64_t delays[] = { 60000, 300000, 900000 };
static const struct retry_policy pol = {
	.delays_ms = delays,
	.ndelays = 3,
	.max_age_ms = 3 * DAY,
	.jitter_pct = 0,
};

#define NONE (-1) /* no retry time */
#define NOW_ 0    /* retry at once */

struct row {
	const char *what;
	enum attempt_kind kind;
	enum attempt_stage stage;
	int code;
	const char *enh;
	unsigned attempts; /* before this one */
	uint64_t age_ms;
	enum outcome_action action;
	bool backoff;
	bool counts;
	const char *status;
	long long next; /* NONE, NOW_ or the delay: next_ms - now */
	bool after;     /* after_accept: an earlier RCPT was accepted */
};

#define R     ATTEMPT_REPLY
#define RETRY OUTCOME_RETRY
#define FAIL  OUTCOME_FAIL
#define OK    OUTCOME_DELIVERED

static const struct row rows[] = {
	/* 2xx: delivered. */
	{ "250 to content", R, STAGE_CONTENT, 250, "2.0.0", 0, 0, OK, false, true, "2.0.0", NONE },
	{ "250 without enh", R, STAGE_CONTENT, 250, "", 0, 0, OK, false, true, "2.0.0", NONE },
	{ "251 to rcpt", R, STAGE_RCPT, 251, "2.1.5", 4, 0, OK, false, true, "2.1.5", NONE },
	/* 421 anywhere: retry, the destination backs off. */
	{ "421 greeting", R, STAGE_GREETING, 421, "", 0, 0, RETRY, true, true, "4.0.0", 60000 },
	{ "421 mail", R, STAGE_MAIL, 421, "4.7.0", 1, 0, RETRY, true, true, "4.7.0", 300000 },
	{ "421 rcpt", R, STAGE_RCPT, 421, "4.4.2", 2, 0, RETRY, true, true, "4.4.2", 900000 },
	{ "421 content", R, STAGE_CONTENT, 421, "", 0, 0, RETRY, true, true, "4.0.0", 60000 },
	/* 452 4.5.3 / 552 to RCPT: too many recipients, retry now, not an attempt. */
	/* Too many recipients: only after an accepted RCPT in the transaction. */
	{ "452 4.5.3 rcpt", R, STAGE_RCPT, 452, "4.5.3", 0, 0, RETRY, false, false, "4.5.3", NOW_,
	  true },
	{ "552 rcpt", R, STAGE_RCPT, 552, "5.5.3", 3, 0, RETRY, false, false, "4.5.3", NOW_, true },
	{ "552 rcpt no enh", R, STAGE_RCPT, 552, "", 0, 0, RETRY, false, false, "4.5.3", NOW_,
	  true },
	{ "452 4.5.3 expired", R, STAGE_RCPT, 452, "4.5.3", 9, 4 * DAY, RETRY, false, false,
	  "4.5.3", NOW_, true },
	/* To the first RCPT they are an ordinary temporary failure (no hot loop). */
	{ "452 4.5.3 first rcpt", R, STAGE_RCPT, 452, "4.5.3", 0, 0, RETRY, false, true, "4.5.3",
	  60000 },
	{ "552 first rcpt", R, STAGE_RCPT, 552, "5.5.3", 1, 0, RETRY, false, true, "4.5.3",
	  300000 },
	{ "552 first rcpt expired", R, STAGE_RCPT, 552, "5.5.3", 9, 4 * DAY, FAIL, false, true,
	  "4.4.7", NONE },
	/* ...but only to RCPT, and 452 only with 4.5.3. */
	{ "452 4.2.2 rcpt", R, STAGE_RCPT, 452, "4.2.2", 0, 0, RETRY, false, true, "4.2.2", 60000 },
	{ "452 4.5.3 mail", R, STAGE_MAIL, 452, "4.5.3", 0, 0, RETRY, false, true, "4.5.3", 60000 },
	{ "552 content", R, STAGE_CONTENT, 552, "5.3.4", 0, 0, FAIL, false, true, "5.3.4", NONE },
	{ "552 mail", R, STAGE_MAIL, 552, "", 0, 0, FAIL, false, true, "5.0.0", NONE },
	/* Other 4xx: retry this recipient. */
	{ "451 rcpt", R, STAGE_RCPT, 451, "4.3.0", 0, 0, RETRY, false, true, "4.3.0", 60000 },
	{ "450 mail", R, STAGE_MAIL, 450, "", 1, 0, RETRY, false, true, "4.0.0", 300000 },
	{ "451 content", R, STAGE_CONTENT, 451, "4.7.1", 2, 0, RETRY, false, true, "4.7.1",
	  900000 },
	{ "451 last delay repeats", R, STAGE_DATA, 451, "", 3, 0, RETRY, false, true, "4.0.0",
	  900000 },
	{ "451 many attempts", R, STAGE_DATA, 451, "", 500, 0, RETRY, false, true, "4.0.0",
	  900000 },
	{ "450 enh of another class", R, STAGE_RCPT, 450, "5.1.1", 0, 0, RETRY, false, true,
	  "4.0.0", 60000 },
	{ "4xx greeting backs off", R, STAGE_GREETING, 450, "", 0, 0, RETRY, true, true, "4.0.0",
	  60000 },
	{ "4xx ehlo backs off", R, STAGE_EHLO, 451, "4.3.2", 0, 0, RETRY, true, true, "4.3.2",
	  60000 },
	/* 5xx to the greeting: retry, the destination backs off. */
	{ "554 greeting", R, STAGE_GREETING, 554, "5.7.1", 0, 0, RETRY, true, true, "4.7.1",
	  60000 },
	{ "550 greeting no enh", R, STAGE_GREETING, 550, "", 1, 0, RETRY, true, true, "4.0.0",
	  300000 },
	/* Other 5xx: failed. */
	{ "550 rcpt", R, STAGE_RCPT, 550, "5.1.1", 0, 0, FAIL, false, true, "5.1.1", NONE },
	{ "554 content", R, STAGE_CONTENT, 554, "", 0, 0, FAIL, false, true, "5.0.0", NONE },
	{ "550 ehlo", R, STAGE_EHLO, 550, "5.5.1", 0, 0, FAIL, false, true, "5.5.1", NONE },
	{ "553 enh of another class", R, STAGE_MAIL, 553, "4.1.8", 0, 0, FAIL, false, true, "5.0.0",
	  NONE },
	{ "550 expired stays 5.1.1", R, STAGE_RCPT, 550, "5.1.1", 9, 5 * DAY, FAIL, false, true,
	  "5.1.1", NONE },
	/* Failures without a reply. */
	{ "connect failure", ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "", 0, 0, RETRY, true, true,
	  "4.4.1", 60000 },
	{ "dns temporary", ATTEMPT_DNS_TEMP, STAGE_CONNECT, 0, "", 1, 0, RETRY, true, true, "4.4.3",
	  300000 },
	{ "timeout", ATTEMPT_TIMEOUT, STAGE_DATA, 0, "", 0, 0, RETRY, false, true, "4.4.2", 60000 },
	{ "lost connection", ATTEMPT_LOST, STAGE_CONTENT, 0, "", 2, 0, RETRY, false, true, "4.4.2",
	  900000 },
	{ "tls failure", ATTEMPT_TLS_FAIL, STAGE_EHLO, 0, "", 0, 0, RETRY, true, true, "4.7.5",
	  60000 },
	{ "no route", ATTEMPT_NO_ROUTE, STAGE_CONNECT, 0, "", 0, 0, RETRY, true, true, "4.4.4",
	  60000 },
	{ "local problem", ATTEMPT_LOCAL, STAGE_OTHER, 0, "", 0, 0, RETRY, false, true, "4.3.0",
	  60000 },
	{ "nxdomain", ATTEMPT_DNS_PERM, STAGE_CONNECT, 0, "", 0, 0, FAIL, false, true, "5.1.2",
	  NONE },
	{ "null mx", ATTEMPT_NULL_MX, STAGE_CONNECT, 0, "", 0, 0, FAIL, false, true, "5.1.10",
	  NONE },
	{ "loop", ATTEMPT_LOOP, STAGE_CONNECT, 0, "", 0, 0, FAIL, false, true, "5.4.6", NONE },
	{ "too big", ATTEMPT_TOO_BIG, STAGE_MAIL, 0, "", 0, 0, FAIL, false, true, "5.3.4", NONE },
	{ "needs smtputf8", ATTEMPT_NEEDS_UTF8, STAGE_MAIL, 0, "", 0, 0, FAIL, false, true, "5.6.7",
	  NONE },
	{ "abandoned", ATTEMPT_ABANDONED, STAGE_OTHER, 0, "", 5, 0, RETRY, false, false, "4.3.2",
	  NOW_ },
	{ "abandoned expired", ATTEMPT_ABANDONED, STAGE_OTHER, 0, "", 5, 10 * DAY, RETRY, false,
	  false, "4.3.2", NOW_ },
	/* Any retry past max_age fails with 4.4.7. */
	{ "451 just in time", R, STAGE_RCPT, 451, "4.2.0", 7, 3 * DAY - 1, RETRY, false, true,
	  "4.2.0", 900000 },
	{ "451 expired", R, STAGE_RCPT, 451, "4.2.0", 7, 3 * DAY, FAIL, false, true, "4.4.7",
	  NONE },
	{ "421 expired", R, STAGE_MAIL, 421, "", 7, 4 * DAY, FAIL, true, true, "4.4.7", NONE },
	{ "554 greeting expired", R, STAGE_GREETING, 554, "", 7, 4 * DAY, FAIL, true, true, "4.4.7",
	  NONE },
	{ "connect failure expired", ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "", 30, 3 * DAY + 1,
	  FAIL, true, true, "4.4.7", NONE },
	{ "dns temporary expired", ATTEMPT_DNS_TEMP, STAGE_CONNECT, 0, "", 30, 4 * DAY, FAIL, true,
	  true, "4.4.7", NONE },
	{ "timeout expired", ATTEMPT_TIMEOUT, STAGE_DATA, 0, "", 30, 4 * DAY, FAIL, false, true,
	  "4.4.7", NONE },
	{ "lost expired", ATTEMPT_LOST, STAGE_DATA, 0, "", 30, 4 * DAY, FAIL, false, true, "4.4.7",
	  NONE },
};

Test(outcome, policy_table)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct attempt_report rep;
		memset(&rep, 0, sizeof(rep));
		rep.kind = r->kind;
		rep.stage = r->stage;
		rep.code = r->code;
		rep.after_accept = r->after;
		snprintf(rep.enh, sizeof(rep.enh), "%s", r->enh);
		snprintf(rep.text, sizeof(rep.text), "%s", r->what);
		struct outcome oc;
		memset(&oc, 0xa5, sizeof(oc));
		outcome_decide(&rep, r->attempts, r->age_ms, NOW, 12345, &pol, &oc);
		cr_assert_eq(oc.action, r->action, "row %zu (%s): action %s, want %s", i, r->what,
		             outcome_action_name(oc.action), outcome_action_name(r->action));
		cr_assert_eq(oc.dest_backoff, r->backoff, "row %zu (%s): dest_backoff %d", i,
		             r->what, oc.dest_backoff);
		cr_assert_eq(oc.counts, r->counts, "row %zu (%s): counts %d", i, r->what,
		             oc.counts);
		cr_assert_str_eq(oc.status, r->status, "row %zu (%s): status %s, want %s", i,
		                 r->what, oc.status, r->status);
		if (r->next == NONE)
			cr_assert_eq(oc.next_ms, 0, "row %zu (%s): next_ms %llu", i, r->what,
			             (unsigned long long)oc.next_ms);
		else
			cr_assert_eq(oc.next_ms, NOW + (uint64_t)r->next,
			             "row %zu (%s): delay %lld, want %lld", i, r->what,
			             (long long)(oc.next_ms - NOW), r->next);
	}
}

Test(outcome, every_kind_has_a_row)
{
	bool seen[ATTEMPT_NEEDS_UTF8 + 1] = { false };
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		seen[rows[i].kind] = true;
	for (int k = 0; k <= ATTEMPT_NEEDS_UTF8; k++)
		cr_assert(seen[k], "no table row for %s", outcome_kind_name((enum attempt_kind)k));
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

Test(outcome, retry_delay_jitter_bounds)
{
	static const uint64_t d[] = { 60000, 300000, 900000, 3600000, 14400000 };
	static const unsigned pcts[] = { 1, 10, 25, 50, 100 };
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (size_t p = 0; p < sizeof(pcts) / sizeof(pcts[0]); p++) {
		struct retry_policy jp = {
			.delays_ms = d, .ndelays = 5, .max_age_ms = DAY, .jitter_pct = pcts[p]
		};
		for (unsigned n = 1; n <= 8; n++) {
			uint64_t nominal = d[n <= 5 ? n - 1 : 4];
			uint64_t span = nominal * pcts[p] / 100;
			uint64_t lo = UINT64_MAX, hi = 0;
			for (int i = 0; i < 5000; i++) {
				uint64_t v = outcome_retry_delay(&jp, n, xorshift(&seed));
				cr_assert_geq(v, nominal - span, "pct %u n %u: %llu < %llu",
				              pcts[p], n, (unsigned long long)v,
				              (unsigned long long)(nominal - span));
				cr_assert_leq(v, nominal + span, "pct %u n %u: %llu > %llu",
				              pcts[p], n, (unsigned long long)v,
				              (unsigned long long)(nominal + span));
				lo = v < lo ? v : lo;
				hi = v > hi ? v : hi;
			}
			/* The jitter really spreads to both sides. */
			cr_assert_lt(lo, nominal - span / 2, "pct %u n %u: never much lower",
			             pcts[p], n);
			cr_assert_gt(hi, nominal + span / 2, "pct %u n %u: never much higher",
			             pcts[p], n);
		}
		/* The extremes are reachable. */
		uint64_t span0 = d[0] * pcts[p] / 100;
		cr_assert_eq(outcome_retry_delay(&jp, 1, 0), d[0] - span0);
		cr_assert_eq(outcome_retry_delay(&jp, 1, 2 * span0), d[0] + span0);
		cr_assert_eq(outcome_retry_delay(&jp, 1, 2 * span0 + 1), d[0] - span0);
	}
}

Test(outcome, retry_delay_schedule)
{
	struct retry_policy p = pol;
	cr_assert_eq(outcome_retry_delay(&p, 0, 99), 60000, "n = 0 is treated as the first");
	cr_assert_eq(outcome_retry_delay(&p, 1, 99), 60000);
	cr_assert_eq(outcome_retry_delay(&p, 2, 99), 300000);
	cr_assert_eq(outcome_retry_delay(&p, 3, 99), 900000);
	cr_assert_eq(outcome_retry_delay(&p, 4, 99), 900000, "the last delay repeats");
	cr_assert_eq(outcome_retry_delay(&p, 1000000, 99), 900000);
	p.ndelays = 0;
	cr_assert_eq(outcome_retry_delay(&p, 3, 99), 60000, "no schedule: one minute");
	/* Delays under 100 ms are not jittered. */
	static const uint64_t tiny[] = { 50 };
	struct retry_policy t = { .delays_ms = tiny, .ndelays = 1, .jitter_pct = 50 };
	for (uint64_t r = 0; r < 100; r++)
		cr_assert_eq(outcome_retry_delay(&t, 1, r), 50);
}

Test(outcome, decide_uses_jitter)
{
	struct retry_policy jp = pol;
	jp.jitter_pct = 20;
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_TIMEOUT, STAGE_DATA, 0, "timed out");
	uint64_t lo = UINT64_MAX, hi = 0, seed = 42;
	for (int i = 0; i < 1000; i++) {
		struct outcome oc;
		outcome_decide(&rep, 1, 0, NOW, xorshift(&seed), &jp, &oc);
		cr_assert_eq(oc.action, OUTCOME_RETRY);
		cr_assert_geq(oc.next_ms, NOW + 240000);
		cr_assert_leq(oc.next_ms, NOW + 360000);
		lo = oc.next_ms < lo ? oc.next_ms : lo;
		hi = oc.next_ms > hi ? oc.next_ms : hi;
	}
	cr_assert_lt(lo, NOW + 280000);
	cr_assert_gt(hi, NOW + 320000);
}

Test(outcome, report_set)
{
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_RCPT, 550, "550 5.1.1 <a@b>: no such user");
	cr_assert_eq(rep.kind, ATTEMPT_REPLY);
	cr_assert_eq(rep.stage, STAGE_RCPT);
	cr_assert_eq(rep.code, 550);
	cr_assert_str_eq(rep.enh, "5.1.1");
	cr_assert_str_eq(rep.text, "550 5.1.1 <a@b>: no such user");
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_RCPT, 452, "452 4.5.3");
	cr_assert_str_eq(rep.enh, "4.5.3");
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_CONTENT, 250, "250 Ok queued");
	cr_assert_str_eq(rep.enh, "");
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_RCPT, 550, "550 4.1.1 wrong class");
	cr_assert_str_eq(rep.enh, "");
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_RCPT, 550, "550 5.1.1x glued");
	cr_assert_str_eq(rep.enh, "");
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_RCPT, 554, "554 5.123.456");
	cr_assert_str_eq(rep.enh, "5.123.456");
	static const char *const not_enh[] = {
		"550 5.... dots",    "550 5..1 empty part", "550 5.1. empty detail",
		"550 5.1 two parts", "550 5.1.1.1 four",    "550 5.1234.1 long part",
		"550 55.1.1 class",  "550 5.1.1234 long",   "550 .5.1.1 dot first",
		"550 5.1.1\ttab",
	};
	for (size_t i = 0; i < sizeof(not_enh) / sizeof(not_enh[0]); i++) {
		outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_RCPT, 550, not_enh[i]);
		cr_assert_str_eq(rep.enh, "", "'%s' has no enhanced code, got '%s'", not_enh[i],
		                 rep.enh);
	}
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "5.1.1 looks like one");
	cr_assert_str_eq(rep.enh, "", "only replies carry enhanced codes");
	outcome_report_set(&rep, ATTEMPT_LOST, STAGE_DATA, 0, NULL);
	cr_assert_str_eq(rep.text, "");
	char longtext[1000];
	memset(longtext, 'x', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = '\0';
	outcome_report_set(&rep, ATTEMPT_LOST, STAGE_DATA, 0, longtext);
	cr_assert_eq(strlen(rep.text), sizeof(rep.text) - 1, "text is truncated, terminated");
}

Test(outcome, names)
{
	cr_assert_str_eq(outcome_action_name(OUTCOME_DELIVERED), "delivered");
	cr_assert_str_eq(outcome_action_name(OUTCOME_RETRY), "deferred");
	cr_assert_str_eq(outcome_action_name(OUTCOME_FAIL), "bounced");
	cr_assert_str_eq(outcome_kind_name(ATTEMPT_REPLY), "reply");
	cr_assert_str_eq(outcome_kind_name(ATTEMPT_NULL_MX), "null-mx");
	cr_assert_str_eq(outcome_kind_name(ATTEMPT_NEEDS_UTF8), "needs-smtputf8");
	cr_assert_str_eq(outcome_kind_name((enum attempt_kind)99), "unknown");
}

/* ---- outcome_hard_bounce: the suppression rules ------------------------- */

struct hard_row {
	const char *status; /* NULL: read from the text */
	const char *text;
	bool hard;
};

static const struct hard_row hard_rows[] = {
	/* 5.1.x about the recipient's address: dead, whatever the words. */
	{ "5.1.1", "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown", true },
	{ "5.1.1", "", true },
	{ "5.1.1", NULL, true },
	{ "5.1.2", "Host or domain name not found", true },
	{ "5.1.3", "501 5.1.3 Bad recipient address syntax", true },
	{ "5.1.6", "550 5.1.6 Recipient mailbox has moved", true },
	{ "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found by SMTP address lookup",
	  true },
	{ "5.1.10", "null MX", true },
	/* Mailbox disabled: dead. Mailbox full, message too big: not. */
	{ "5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", true },
	{ "5.2.2", "552 5.2.2 The email account that you tried to reach is over quota", false },
	{ "5.2.2", "552 5.2.2 user unknown? no: mailbox full", false },
	{ "5.2.3", "552 5.2.3 message too big", false },
	/* 5.1.x about the sender: not the recipient's problem. */
	{ "5.1.7", "553 5.1.7 bad sender address syntax (user unknown)", false },
	{ "5.1.8", "553 5.1.8 Sender address rejected: Domain does not exist", false },
	/* 5.7.1: only when the words say the user is unknown or disabled. */
	{ "5.7.1", "550 5.7.1 Recipient address rejected: User unknown", true },
	{ "5.7.1", "550 5.7.1 This account has been disabled or discontinued", true },
	{ "5.7.1", "550 5.7.1 The user does not exist", true },
	{ "5.7.1", "550 5.7.1 No such user here", true },
	{ "5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", false },
	{ "5.7.1",
	  "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
	  "zen.spamhaus.org",
	  false },
	{ "5.7.1", "550 5.7.1 Rate limit exceeded, try later", false },
	{ "5.7.1", "550 5.7.1 Too many messages from your IP", false },
	{ "5.7.1", "550 5.7.1 Relaying denied", false },
	{ "5.7.1",
	  "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Our "
	  "policy ...",
	  false },
	{ "5.7.1", "550 5.7.1 user unknown, and you are blocked anyway", false },
	{ "5.7.1", "550 5.7.1 Sender address does not exist", false },
	{ "5.7.1", "", false },
	{ "5.7.1", NULL, false },
	/* A bare 5xx (no enhanced code): the same words decide. */
	{ "5.0.0", "550 User unknown", true },
	{ "5.0.0", "550 <a@b.example>... no such mailbox", true },
	{ "5.0.0", "550 Requested action not taken: mailbox unavailable", false },
	{ "5.0.0", "554 transaction failed", false },
	{ "5.1.0", "550 5.1.0 Address rejected: user not found", true },
	{ "5.1.0", "550 5.1.0 Sender rejected", false },
	{ "5.2.0", "550 5.2.0 mailbox disabled", true },
	/* Never: temporary, network, system, protocol, other policy. */
	{ "4.1.1", "450 4.1.1 user unknown (try again later)", false },
	{ "4.2.2", "452 4.2.2 over quota", false },
	{ "4.0.0", "user unknown", false },
	{ "4.4.7", "delivery time expired", false },
	{ "5.4.1", "550 5.4.1 Recipient address rejected: Access denied", false },
	{ "5.4.4", "Unable to route: user does not exist", false },
	{ "5.4.6", "mail loops back to myself", false },
	{ "5.3.0", "mail system full", false },
	{ "5.3.4", "message too big for system", false },
	{ "5.5.0", "550 5.5.0 user unknown", false },
	{ "5.7.26", "550 5.7.26 unauthenticated email is not accepted (DMARC)", false },
	{ "5.7.0", "user unknown", false },
	{ "2.0.0", "250 2.0.0 ok", false },
	{ "5.1.11", "not 5.1.1", false },
	{ "5.1.1 ", "not exactly a status", false },
	{ "garbage", "user unknown", false },
	/* No status: read from the reply at the start of the text. */
	{ "", "550 5.1.1 <a@b.example>: Recipient address rejected", true },
	{ NULL, "550-5.1.1 The email account that you tried to reach does not exist", true },
	{ NULL, "550 no such user here", true },
	{ NULL, "550 5.7.1 blocked", false },
	{ NULL, "552 5.2.2 full", false },
	{ NULL, "450 4.1.1 unknown user", false },
	{ NULL, "550 4.1.1 a 4.x.x code in a 5xx reply: only its class counts, words decide",
	  false },
	{ NULL, "User unknown", false },
	{ NULL, NULL, false },
};

Test(outcome, hard_bounce_table)
{
	for (size_t i = 0; i < sizeof(hard_rows) / sizeof(hard_rows[0]); i++) {
		const struct hard_row *h = &hard_rows[i];
		cr_assert_eq(outcome_hard_bounce(h->status, h->text), h->hard,
		             "row %zu: status '%s', text '%s': want %s", i,
		             h->status ? h->status : "(null)", h->text ? h->text : "(null)",
		             h->hard ? "hard" : "not hard");
	}
}

/* The receiver's words about how we connect: concurrency, rate, or
 * neither (greylisting, a full mailbox, a 5xx, a failure that is no reply). */
Test(outcome, signals)
{
	static const struct {
		int code;
		enum attempt_stage stage;
		const char *text;
		enum outcome_signal want;
	} sig_rows[] = {
		{ 421, STAGE_GREETING, "421 4.7.0 Too many concurrent connections",
		  SIGNAL_CONCURRENCY },
		{ 421, STAGE_GREETING, "421 Too many connections from your IP",
		  SIGNAL_CONCURRENCY },
		{ 451, STAGE_MAIL, "451 4.7.500 Server busy. Please try again later",
		  SIGNAL_CONCURRENCY },
		{ 421, STAGE_EHLO, "421 mx.example: Connection limit exceeded",
		  SIGNAL_CONCURRENCY },
		{ 451, STAGE_MAIL, "451 4.7.1 Rate limited, try again later", SIGNAL_RATE },
		{ 450, STAGE_RCPT, "450 4.7.1 Too many messages, slow down", SIGNAL_RATE },
		{ 421, STAGE_MAIL,
		  "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to "
		  "unexpected "
		  "volume",
		  SIGNAL_RATE },
		{ 451, STAGE_RCPT, "451 4.7.1 Greylisted, try again later", SIGNAL_NONE },
		{ 452, STAGE_RCPT, "452 4.2.2 Mailbox full", SIGNAL_NONE },
		{ 550, STAGE_RCPT, "550 5.7.1 Too many connections (a 5xx is no signal)",
		  SIGNAL_NONE },
	};
	for (size_t i = 0; i < sizeof(sig_rows) / sizeof(sig_rows[0]); i++) {
		struct attempt_report rep;
		outcome_report_set(&rep, ATTEMPT_REPLY, sig_rows[i].stage, sig_rows[i].code,
		                   sig_rows[i].text);
		cr_assert_eq(outcome_signal_of(&rep), sig_rows[i].want, "%s: %s", sig_rows[i].text,
		             outcome_signal_name(outcome_signal_of(&rep)));
		struct outcome oc;
		outcome_decide(&rep, 3, 1000, NOW, 0, &pol, &oc);
		if (sig_rows[i].want != SIGNAL_NONE) {
			cr_assert_eq(oc.action, OUTCOME_RETRY, "%s", sig_rows[i].text);
			cr_assert_not(oc.dest_backoff, "%s: no back-off for a signal",
			              sig_rows[i].text);
			cr_assert_eq(oc.next_ms, NOW + OUTCOME_SHAPE_RETRY_MS, "%s: back soon",
			             sig_rows[i].text);
		}
	}
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "too many connections");
	cr_assert_eq(outcome_signal_of(&rep), SIGNAL_NONE, "not a reply");
}
