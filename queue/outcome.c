/* outcome.c - delivery policy: replies and failures to outcomes (see outcome.h).
 *
 * The table, in words:
 *   2xx                          delivered
 *   421 anywhere                 retry; the destination backs off
 *   452 4.5.3 / 552 to a RCPT    retry now in a new transaction, not an attempt
 *   after an accepted RCPT       (RFC 5321 4.5.3.1.10: too many recipients);
 *                                to the first RCPT they are an ordinary 4xx
 *                                (552 to RCPT is temporary, same section)
 *   other 4xx                    retry this recipient
 *   5xx to the greeting          retry, destination backs off (a 554 banner
 *                                often means "not now"; like Postfix's
 *                                smtp_skip_5xx_greeting)
 *   other 5xx                    failed
 *   connect failure, DNS
 *   temporary failure            retry; the destination backs off
 *   TLS failed or missing where  retry 4.7.5, never a bounce (the server
 *   it is required (no STARTTLS, may mend its TLS); the destination
 *   refused, bad handshake or    backs off
 *   certificate)
 *   timeout, lost connection     retry
 *   NXDOMAIN                     failed 5.1.2
 *   null MX                      failed 5.1.10
 *   mail loops back to us        failed 5.4.6
 *   larger than the server takes failed 5.3.4
 *   needs SMTPUTF8, not offered  failed 5.6.7
 *   abandoned (shutdown)         retry at once, not an attempt
 * and any retry past max_age becomes failed with 4.4.7 (delivery time
 * expired), keeping the last reply as the diagnostic.
 *
 * outcome_hard_bounce decides which failures suppress later mail to the
 * address (hard_rules, hard_phrases and soft_phrases below): bad
 * addresses and disabled mailboxes do; full mailboxes, policy, content and
 * anything temporary do not.
 */
#include "outcome.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"

uint64_t outcome_retry_delay(const struct retry_policy *pol, unsigned n, uint64_t rnd)
{
	if (!pol->ndelays)
		return 60000;
	unsigned i = n == 0 ? 0 : n - 1;
	if (i >= pol->ndelays)
		i = pol->ndelays - 1;
	uint64_t d = pol->delays_ms[i];
	if (pol->jitter_pct && d >= 100) {
		uint64_t span = d * pol->jitter_pct / 100; /* +- span */
		uint64_t off = span ? rnd % (2 * span + 1) : 0;
		d = d - span + off;
	}
	return d;
}

static void status_from_code(int code, const char *enh, char out[16])
{
	if (enh && enh[0] && enh[0] == '0' + code / 100) {
		snprintf(out, 16, "%s", enh);
		return;
	}
	snprintf(out, 16, "%d.0.0", code / 100 >= 2 && code / 100 <= 5 ? code / 100 : 4);
}

void outcome_decide(const struct attempt_report *rep, unsigned attempts, uint64_t age_ms,
                    uint64_t now_ms, uint64_t rnd, const struct retry_policy *pol,
                    struct outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->counts = true;
	switch (rep->kind) {
	case ATTEMPT_REPLY: {
		int cls = rep->code / 100;
		status_from_code(rep->code, rep->enh, out->status);
		if (cls == 2) {
			out->action = OUTCOME_DELIVERED;
			return;
		}
		/* A concurrency or rate signal: delivery adapts, no back-off, the
		 * recipients come back soon. Any other 421 backs off. */
		out->signal = cls == 4 ? outcome_signal_of(rep) : SIGNAL_NONE;
		if (out->signal != SIGNAL_NONE || rep->code == 421) {
			out->action = OUTCOME_RETRY;
			out->dest_backoff = out->signal == SIGNAL_NONE;
			break;
		}
		bool too_many =
		    rep->stage == STAGE_RCPT &&
		    (rep->code == 552 || (rep->code == 452 && !strcmp(rep->enh, "4.5.3")));
		if (too_many && rep->after_accept) {
			out->action = OUTCOME_RETRY;
			out->counts = false;
			out->next_ms = now_ms;
			snprintf(out->status, sizeof(out->status), "4.5.3");
			return;
		}
		if (too_many) {
			out->action = OUTCOME_RETRY;
			snprintf(out->status, sizeof(out->status), "4.5.3");
			break;
		}
		if (cls == 5 && rep->stage == STAGE_GREETING) {
			out->action = OUTCOME_RETRY;
			out->dest_backoff = true;
			out->status[0] = '4';
			break;
		}
		if (cls == 5) {
			out->action = OUTCOME_FAIL;
			return;
		}
		out->action = OUTCOME_RETRY;
		if (rep->stage == STAGE_GREETING || rep->stage == STAGE_EHLO)
			out->dest_backoff = true;
		if (cls != 4)
			snprintf(out->status, sizeof(out->status), "4.0.0");
		break;
	}
	case ATTEMPT_CONNECT_FAIL:
		out->action = OUTCOME_RETRY;
		out->dest_backoff = true;
		snprintf(out->status, sizeof(out->status), "4.4.1");
		break;
	case ATTEMPT_DNS_TEMP:
		out->action = OUTCOME_RETRY;
		out->dest_backoff = true;
		snprintf(out->status, sizeof(out->status), "4.4.3");
		break;
	case ATTEMPT_TIMEOUT:
		out->action = OUTCOME_RETRY;
		snprintf(out->status, sizeof(out->status), "4.4.2");
		break;
	case ATTEMPT_LOST:
		out->action = OUTCOME_RETRY;
		snprintf(out->status, sizeof(out->status), "4.4.2");
		break;
	case ATTEMPT_TLS_FAIL:
		out->action = OUTCOME_RETRY;
		out->dest_backoff = true;
		snprintf(out->status, sizeof(out->status), "4.7.5");
		break;
	case ATTEMPT_NO_ROUTE:
		out->action = OUTCOME_RETRY;
		out->dest_backoff = true;
		snprintf(out->status, sizeof(out->status), "4.4.4");
		break;
	case ATTEMPT_LOCAL:
		out->action = OUTCOME_RETRY;
		snprintf(out->status, sizeof(out->status), "4.3.0");
		break;
	case ATTEMPT_ABANDONED:
		out->action = OUTCOME_RETRY;
		out->counts = false;
		out->next_ms = now_ms;
		snprintf(out->status, sizeof(out->status), "4.3.2");
		return;
	case ATTEMPT_DNS_PERM:
		out->action = OUTCOME_FAIL;
		snprintf(out->status, sizeof(out->status), "5.1.2");
		return;
	case ATTEMPT_NULL_MX:
		out->action = OUTCOME_FAIL;
		snprintf(out->status, sizeof(out->status), "5.1.10");
		return;
	case ATTEMPT_LOOP:
		out->action = OUTCOME_FAIL;
		snprintf(out->status, sizeof(out->status), "5.4.6");
		return;
	case ATTEMPT_TOO_BIG:
		out->action = OUTCOME_FAIL;
		snprintf(out->status, sizeof(out->status), "5.3.4");
		return;
	case ATTEMPT_NEEDS_UTF8:
		out->action = OUTCOME_FAIL;
		snprintf(out->status, sizeof(out->status), "5.6.7");
		return;
	}
	/* A retry: when, unless the recipient has run out of time. */
	if (age_ms >= pol->max_age_ms) {
		out->action = OUTCOME_FAIL;
		snprintf(out->status, sizeof(out->status), "4.4.7");
		return;
	}
	out->next_ms =
	    now_ms + (out->signal != SIGNAL_NONE ? OUTCOME_SHAPE_RETRY_MS + rnd % 2000
	                                         : outcome_retry_delay(pol, attempts + 1, rnd));
}

/* Phrasings of "too many sessions" and "too fast" in 4xx replies, from
 * Postfix, Exim, Sendmail and the large providers' own texts (lower case;
 * matched anywhere in the reply). "Try again later" alone is everyone's
 * greylisting and means neither. */
static const char *const concurrency_words[] = {
	"too many connections", "too many concurrent",    "too many simultaneous",
	"too many sessions",    "concurrent connections", "connection limit",
	"max connections",      "maximum connections",    "too many open connections",
	"server busy",          "too many smtp sessions",
};
static const char *const rate_words[] = {
	"rate limit",
	"ratelimit",
	"rate-limit",
	"too many messages",
	"too many mails",
	"too many emails",
	"sending rate",
	"message rate",
	"unexpected volume",
	"unusual rate",
	"throttl",
	"slow down",
	"too fast",
	"exceeded the limit",
	"temporarily deferred due to",
};

static bool says(const char *text, const char *const *words, size_t n)
{
	char low[sizeof(((struct attempt_report *)0)->text)];
	size_t i;
	for (i = 0; text[i] && i + 1 < sizeof(low); i++)
		low[i] = (char)tolower((unsigned char)text[i]);
	low[i] = '\0';
	for (size_t k = 0; k < n; k++)
		if (strstr(low, words[k]))
			return true;
	return false;
}

enum outcome_signal outcome_signal_of(const struct attempt_report *rep)
{
	if (rep->kind != ATTEMPT_REPLY || rep->code / 100 != 4)
		return SIGNAL_NONE;
	if (says(rep->text, concurrency_words, RP_ARRAY_LEN(concurrency_words)))
		return SIGNAL_CONCURRENCY;
	if (says(rep->text, rate_words, RP_ARRAY_LEN(rate_words)))
		return SIGNAL_RATE;
	return SIGNAL_NONE;
}

const char *outcome_signal_name(enum outcome_signal s)
{
	return s == SIGNAL_CONCURRENCY ? "concurrency" : s == SIGNAL_RATE ? "rate" : "none";
}

/* enh_valid - "class.subject.detail" (RFC 3463): one digit, then 1-3 digits
 * twice, in exactly n bytes. */
static bool enh_valid(const char *e, size_t n)
{
	size_t i = 2;
	if (n < 5 || e[0] < '2' || e[0] > '5' || e[1] != '.')
		return false;
	for (int part = 0; part < 2; part++) {
		size_t start = i;
		while (i < n && i - start < 4 && e[i] >= '0' && e[i] <= '9')
			i++;
		if (i == start || i - start > 3)
			return false;
		if (part == 0) {
			if (i >= n || e[i] != '.')
				return false;
			i++;
		}
	}
	return i == n;
}

void outcome_report_set(struct attempt_report *rep, enum attempt_kind kind,
                        enum attempt_stage stage, int code, const char *text)
{
	rep->kind = kind;
	rep->stage = stage;
	rep->code = code;
	rep->after_accept = false;
	rep->enh[0] = '\0';
	snprintf(rep->text, sizeof(rep->text), "%s", text ? text : "");
	if (kind == ATTEMPT_REPLY && text && strlen(text) > 4) {
		/* "550 5.1.1 ..." -> "5.1.1" */
		const char *e = text + 4;
		size_t n = strspn(e, "0123456789.");
		if (n < sizeof(rep->enh) && enh_valid(e, n) && e[0] == text[0] &&
		    (e[n] == ' ' || !e[n])) {
			memcpy(rep->enh, e, n);
			rep->enh[n] = '\0';
		}
	}
}

/* ---- suppression: which permanent failures mean the address is dead ---- */

enum hard_rule {
	HARD_NEVER,      /* the address may be fine (full, policy, content, sender) */
	HARD_ALWAYS,     /* the address is dead */
	HARD_IF_UNKNOWN, /* only when the text says so (hard_phrases, no soft_phrases) */
};

static const struct {
	const char *status;
	enum hard_rule rule;
} hard_rules[] = {
	{ "5.1.1", HARD_ALWAYS },     /* bad destination mailbox address */
	{ "5.1.2", HARD_ALWAYS },     /* bad destination system (no such domain) */
	{ "5.1.3", HARD_ALWAYS },     /* bad destination mailbox address syntax */
	{ "5.1.6", HARD_ALWAYS },     /* mailbox has moved, no forwarding address */
	{ "5.1.10", HARD_ALWAYS },    /* RFC 7505: null MX, the domain takes no mail */
	{ "5.2.1", HARD_ALWAYS },     /* mailbox disabled */
	{ "5.0.0", HARD_IF_UNKNOWN }, /* a bare 5xx: only its words tell */
	{ "5.1.0", HARD_IF_UNKNOWN }, /* other address status */
	{ "5.2.0", HARD_IF_UNKNOWN }, /* other mailbox status */
	{ "5.7.1", HARD_IF_UNKNOWN }, /* mostly policy; some servers say "user unknown" */
	{ "5.1.7", HARD_NEVER },      /* the sender's address, not the recipient's */
	{ "5.1.8", HARD_NEVER },      /* the sender's domain */
	{ "5.2.2", HARD_NEVER },      /* mailbox full: it may be emptied */
	{ "5.2.3", HARD_NEVER },      /* message too big */
};

/* Words that say the recipient is unknown, disabled or gone. */
static const char *const hard_phrases[] = {
	"user unknown",        "unknown user",      "unknown recipient", "recipient unknown",
	"no such user",        "no such mailbox",   "no such recipient", "no such account",
	"recipient not found", "recipientnotfound", "user not found",    "mailbox not found",
	"address not found",   "does not exist",    "doesn't exist",     "invalid recipient",
	"invalid mailbox",     "disabled",          "deactivated",       "discontinued",
	"no longer active",
};

/* Words that say it is about policy or the sender, whatever else it says. */
static const char *const soft_phrases[] = {
	"spam",       "block",      "blacklist", "listed in",  "listed on", "policy",
	"rate limit", "rate-limit", "too many",  "reputation", "spf",       "dkim",
	"dmarc",      "rbl",        "sender",    "relay",      "virus",     "content",
};

static bool has_phrase(const char *text, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcasestr(text, list[i]))
			return true;
	return false;
}

/* status_of_reply - "550 5.1.1 ..." -> "5.1.1", "550 ..." -> "5.0.0". */
static bool status_of_reply(const char *text, char out[16])
{
	size_t n = strlen(text);
	if (n < 4 || text[0] < '2' || text[0] > '5' || !isdigit((unsigned char)text[1]) ||
	    !isdigit((unsigned char)text[2]) || (text[3] != ' ' && text[3] != '-'))
		return false;
	const char *e = text + 4;
	size_t el = strspn(e, "0123456789.");
	if (el < 16 && enh_valid(e, el) && e[0] == text[0] && (!e[el] || e[el] == ' ')) {
		memcpy(out, e, el);
		out[el] = '\0';
	} else {
		snprintf(out, 16, "%c.0.0", text[0]);
	}
	return true;
}

bool outcome_hard_bounce(const char *status, const char *text)
{
	char derived[16];
	if (!text)
		text = "";
	if (!status || !status[0]) {
		if (!status_of_reply(text, derived))
			return false;
		status = derived;
	}
	for (size_t i = 0; i < RP_ARRAY_LEN(hard_rules); i++) {
		if (strcmp(status, hard_rules[i].status))
			continue;
		switch (hard_rules[i].rule) {
		case HARD_NEVER:
			return false;
		case HARD_ALWAYS:
			return true;
		case HARD_IF_UNKNOWN:
			return has_phrase(text, hard_phrases, RP_ARRAY_LEN(hard_phrases)) &&
			       !has_phrase(text, soft_phrases, RP_ARRAY_LEN(soft_phrases));
		}
	}
	return false; /* 4.x.x, 5.3.x, 5.4.x, other 5.7.x, anything unlisted */
}

const char *outcome_kind_name(enum attempt_kind k)
{
	static const char *names[] = {
		"reply",    "connect-failed", "timeout", "lost",           "tls-failed",
		"dns-temp", "dns-nxdomain",   "null-mx", "no-route",       "loop",
		"local",    "abandoned",      "too-big", "needs-smtputf8",
	};
	return (unsigned)k < RP_ARRAY_LEN(names) ? names[k] : "unknown";
}

const char *outcome_action_name(enum outcome_action a)
{
	switch (a) {
	case OUTCOME_DELIVERED:
		return "delivered";
	case OUTCOME_RETRY:
		return "deferred";
	case OUTCOME_FAIL:
		return "bounced";
	}
	return "unknown";
}
