/* sched_job.c - jobs: a transaction's worth of recipients, loaded from the spool.
 *
 * sched_job_next takes the head message group of a destination's ready
 * FIFO and reads its envelope, recipients and body; sched_job_done decides
 * each recipient's outcome, logs it and settles it. Job records are
 * recycled (at most FREE_JOBS_MAX kept).
 */
#include "sched_impl.h"
#include "verp.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/util.h"

#define FREE_JOBS_MAX  64
#define JOB_KEEP_BYTES (64u * 1024) /* buffer memory a recycled job keeps */
#define JOB_OFFS_STACK 64           /* recipients whose scratch fits on the stack */

/* job_alloc - a recycled job or a new one. */
static struct sched_job *job_alloc(struct sched *s)
{
	struct sched_job *j = s->free_jobs;
	if (j) {
		s->free_jobs = j->next;
		s->nfree_jobs--;
		j->next = NULL;
		return j;
	}
	return xcalloc(1, sizeof(*j));
}

/* job_free - free a job and its buffers. */
static void job_free(struct sched_job *j)
{
	buf_free(&j->body);
	buf_free(&j->strings);
	free(j->rcpt);
	free(j);
}

/* job_recycle - keep j for the next job (with trimmed buffers) or free it. */
static void job_recycle(struct sched *s, struct sched_job *j)
{
	if (s->nfree_jobs >= FREE_JOBS_MAX) {
		job_free(j);
		return;
	}
	buf_shrink(&j->body, JOB_KEEP_BYTES);
	buf_shrink(&j->strings, JOB_KEEP_BYTES);
	j->nrcpt = 0;
	j->dest = NULL;
	j->next = s->free_jobs;
	s->free_jobs = j;
	s->nfree_jobs++;
}

/* sched_jobs_free - free the recycled jobs. */
void sched_jobs_free(struct sched *s)
{
	while (s->free_jobs) {
		struct sched_job *j = s->free_jobs;
		s->free_jobs = j->next;
		job_free(j);
	}
	s->nfree_jobs = 0;
}

/* job_load - read the envelope, recipients and body of the job's message.
 * Recipients that vanished (purged, expired) are dropped from the job. */
static bool job_load(struct sched *s, struct sched_job *j)
{
	struct spool_msg m;
	struct spool_rcpt rc;
	size_t sender_off, envid_off;
	/* Offsets of each recipient's strings: on the stack for a usual job,
	 * on the heap for a big one (max_recipients_per_message goes to
	 * 100,000: no thread stack is sized for that). */
	size_t small[2 * JOB_OFFS_STACK];
	size_t *addr_off =
	    j->nrcpt <= JOB_OFFS_STACK ? small : xcalloc(2 * (size_t)j->nrcpt, sizeof(*addr_off));
	size_t *orcpt_off = addr_off + j->nrcpt;
	uint32_t variant = 0;
	bool ok = false;

	if (!spool_reader_begin(s->reader)) {
		if (addr_off != small)
			free(addr_off);
		return false;
	}
	if (!spool_get_msg(s->reader, j->msgid, &m)) {
		/* Purged or expired: nothing left to deliver. */
		for (unsigned i = 0; i < j->nrcpt; i++) {
			j->rcpt[i].r->flags |= RF_PURGED;
			j->rcpt[i].r = NULL;
		}
		j->nrcpt = 0;
		ok = true;
		goto out;
	}
	j->msg_flags = m.flags;
	j->submit_ms = m.submit_ms;
	buf_reset(&j->strings);
	sender_off = buf_used(&j->strings);
	buf_append(&j->strings, m.sender, m.sender_len);
	j->sender_len = m.sender_len;
	envid_off = buf_used(&j->strings);
	buf_append(&j->strings, m.envid, m.envid_len);
	j->envid_len = m.envid_len;
	unsigned keep = 0;
	for (unsigned i = 0; i < j->nrcpt; i++) {
		struct sched_rcpt *r = j->rcpt[i].r;
		if (!spool_get_rcpt(s->reader, j->msgid, r->idx, &rc) ||
		    SPOOL_STATE_FINAL(rc.state)) {
			r->flags |= RF_PURGED;
			j->rcpt[i].r = NULL;
			continue;
		}
		variant = rc.variant;
		addr_off[keep] = buf_used(&j->strings);
		buf_append(&j->strings, rc.addr, rc.addr_len);
		orcpt_off[keep] = buf_used(&j->strings);
		buf_append(&j->strings, rc.orcpt, rc.orcpt_len);
		j->rcpt[keep] = j->rcpt[i];
		j->rcpt[keep].addr_len = rc.addr_len;
		j->rcpt[keep].orcpt_len = rc.orcpt_len;
		j->rcpt[keep].notify = rc.notify;
		j->rcpt[keep].attempts = r->attempts;
		keep++;
	}
	/* Dropped recipients still count as in flight until freed below. */
	for (unsigned i = keep; i < j->nrcpt; i++)
		j->rcpt[i].r = NULL;
	buf_reset(&j->body);
	if (keep && spool_get_body(s->reader, j->msgid, variant, &j->body)) {
		ok = true;
		const char *base = buf_head(&j->strings);
		j->sender = base + sender_off;
		j->envid = base + envid_off;
		for (unsigned i = 0; i < keep; i++) {
			j->rcpt[i].addr = base + addr_off[i];
			j->rcpt[i].orcpt = base + orcpt_off[i];
		}
	}
	j->nrcpt = keep;
	/* VERP: one recipient per transaction, whose return path names it.
	 * A bounce (null sender) keeps its null sender. */
	if (ok && keep == 1 && j->sender_len && s->cfg.verp_domain && s->cfg.verp_domain[0]) {
		char verp[VERP_ADDR_MAX];
		size_t n = verp_encode(s->cfg.verp_key, j->msgid, j->rcpt[0].r->idx,
		                       s->cfg.verp_domain, verp, sizeof(verp));
		if (n) {
			/* Appending may move the strings: re-point everything. */
			size_t off = buf_used(&j->strings);
			buf_append(&j->strings, verp, n);
			const char *base = buf_head(&j->strings);
			j->sender = base + off;
			j->sender_len = n;
			j->envid = base + envid_off;
			j->rcpt[0].addr = base + addr_off[0];
			j->rcpt[0].orcpt = base + orcpt_off[0];
		}
	}
out:
	spool_reader_end(s->reader);
	if (addr_off != small)
		free(addr_off);
	return ok;
}

/* job_take - the head message group of d's ready FIFO (at most
 * max_rcpts_per_msg, one for a body of its own) goes in flight as j. */
static void job_take(struct sched_dest *d, struct sched_job *j)
{
	struct sched_rcpt *r0 = d->ready_head;
	unsigned max = d->lim.max_rcpts_per_msg ? d->lim.max_rcpts_per_msg : 1;
	if (r0->flags & RF_OWN_BODY)
		max = 1;
	if (j->cap < max) {
		j->cap = max;
		j->rcpt = xrealloc(j->rcpt, max * sizeof(*j->rcpt));
	}
	j->dest = d;
	j->msgid = r0->msgid;
	j->nrcpt = 0;
	struct sched_rcpt *r = r0;
	while (r && j->nrcpt < max && r->msgid == r0->msgid &&
	       !(j->nrcpt && (r->flags & RF_OWN_BODY))) {
		struct sched_rcpt *next = r->next;
		r->where = R_INFLIGHT;
		r->next = NULL;
		memset(&j->rcpt[j->nrcpt], 0, sizeof(j->rcpt[0]));
		j->rcpt[j->nrcpt++].r = r;
		r = next;
	}
	d->ready_head = r;
	if (!r) {
		d->ready_tail = NULL;
		d->tail_group = 0;
	}
	d->n.queued -= j->nrcpt;
	d->n.in_flight += j->nrcpt;
	if (d->nready_jobs)
		d->nready_jobs--;
	if (!d->ready_head)
		d->nready_jobs = 0;
	else if (!d->nready_jobs)
		d->nready_jobs = 1;
}

/* sched_job_next - the next transaction that still has recipients. */
struct sched_job *sched_job_next(struct sched *s, struct sched_dest *d, uint64_t now_ms)
{
	while (d->ready_head) {
		if (d->suspended || sched_dest_held(d, now_ms) || sched_settle_blocks(d))
			return NULL;
		if (!sched_rate_ok(s, d, now_ms))
			return NULL;
		struct sched_job *j = job_alloc(s);
		job_take(d, j);
		/* Keep the in-flight pointers to free the ones job_load drops
		 * (on the heap beyond a usual job: see job_load). */
		struct sched_rcpt *small[JOB_OFFS_STACK];
		unsigned ntaken = j->nrcpt;
		struct sched_rcpt **taken =
		    ntaken <= JOB_OFFS_STACK ? small : xcalloc(ntaken, sizeof(*taken));
		for (unsigned i = 0; i < ntaken; i++)
			taken[i] = j->rcpt[i].r;
		bool ok = job_load(s, j);
		for (unsigned i = 0; i < ntaken; i++) {
			if (taken[i]->flags & RF_PURGED) {
				d->n.in_flight--;
				sched_rcpt_free(s, taken[i]);
			}
		}
		if (taken != small)
			free(taken);
		if (!ok && j->nrcpt) {
			/* A spool read failure: put them back, try later. */
			for (unsigned i = 0; i < j->nrcpt; i++) {
				d->n.in_flight--;
				sched_defer(s, d, j->rcpt[i].r, now_ms + 60000);
			}
			log_error("sched: cannot load message %016llx; retrying in a minute",
			          (unsigned long long)j->msgid);
			j->nrcpt = 0;
		}
		if (!j->nrcpt) {
			job_recycle(s, j);
			continue;
		}
		if (d->lim.rate > 0)
			d->tokens -= 1;
		return j;
	}
	return NULL;
}

/* sched_attempt_format - what at says of the session beyond its relay, as
 * " SOURCE_WORDSRC ehlo=NAME tls=TLS" (each part only when known) into out:
 * the log line says "source=", the recipient's record "from ". */
static void sched_attempt_format(const struct sched_attempt *at, const char *source_word, char *out,
                                 size_t n)
{
	size_t o = 0;
	out[0] = '\0';
	if (at->source && o < n)
		o += (size_t)snprintf(out + o, n - o, " %s%s", source_word, at->source);
	if (at->ehlo && o < n)
		o += (size_t)snprintf(out + o, n - o, " ehlo=%s", at->ehlo);
	if (at->tls && o < n)
		snprintf(out + o, n - o, " tls=%s", at->tls);
}

/* sched_log_attempt - one "delivery" line per recipient and attempt; the
 * session's source address and EHLO name when [domain] set them
 * ("source=127.0.0.2 ehlo=out.example") and its TLS ("tls=TLSv1.3/CIPHER
 * verified=yes", "tls=no") follow the relay when known. */
void sched_log_attempt(uint64_t msgid, const char *addr, size_t addr_len, const char *dest,
                       const struct attempt_report *rep, const struct outcome *oc,
                       unsigned attempts, const struct sched_attempt *at, uint64_t submit_ms,
                       uint64_t now_ms)
{
	char id[17], reply[LOG_VALUE_MAX], rcpt[LOG_VALUE_MAX], how[500] = "";
	if (!log_enabled(oc->action == OUTCOME_FAIL ? LOG_WARN : LOG_INFO))
		return;
	rp_id_format(msgid, id);
	log_quote(reply, sizeof(reply), rep->text, strlen(rep->text));
	log_addr(rcpt, sizeof(rcpt), addr, addr_len);
	if (at)
		sched_attempt_format(at, "source=", how, sizeof(how));
	/* A bounce is worth a line even at log_level = warn. */
	log_msg(oc->action == OUTCOME_FAIL ? LOG_WARN : LOG_INFO,
	        "delivery id=%s rcpt=%s dest=%s relay=%s%s status=%s dsn=%s attempts=%u "
	        "delay=%.3f duration=%.3f reply=%s",
	        id, rcpt, dest, at && at->remote ? at->remote : "none", how,
	        outcome_action_name(oc->action), oc->status, attempts,
	        (double)(now_ms > submit_ms ? now_ms - submit_ms : 0) / 1000.0,
	        (double)(at ? at->duration_ms : 0) / 1000.0, reply);
}

/* sched_job_done - decide, log and settle each recipient; a report that
 * backs the destination off holds it, a reply from the server shows that
 * it works. */
void sched_job_done(struct sched *s, struct sched_job *j, const struct attempt_report *reps,
                    const struct sched_attempt *info, uint64_t now_ms)
{
	struct sched_dest *d = j->dest;
	const struct attempt_report *backoff = NULL;
	bool reached = false;
	const char *remote = info ? info->remote : NULL;
	/* The recipient's record names the relay and how the session talked
	 * ("192.0.2.1:25 from 192.0.2.9 ehlo=out.example tls=TLSv1.3/CIPHER
	 * verified=no"); DSNs keep the relay alone (dsn_emit_queue). */
	char stored[640];
	if (remote && (info->tls || info->source || info->ehlo)) {
		size_t o = (size_t)snprintf(stored, sizeof(stored), "%s", remote);
		sched_attempt_format(info, "from ", stored + o, sizeof(stored) - o);
		remote = stored;
	}
	if (info)
		stats_hist_add(&s->txn, stats_txn_bounds, STATS_TXN_BUCKETS,
		               (double)info->duration_ms / 1000.0);
	/* One jitter per transaction: its recipients (one message) come due
	 * together and are retried in one transaction again, not one each. */
	uint64_t rnd = sched_rnd(s);
	for (unsigned i = 0; i < j->nrcpt; i++) {
		struct sched_rcpt *r = j->rcpt[i].r;
		rp_assert(r->where == R_INFLIGHT);
		d->n.in_flight--;
		if (r->flags & RF_PURGED) {
			sched_rcpt_free(s, r);
			continue;
		}
		struct outcome oc;
		uint64_t age = now_ms > j->submit_ms ? now_ms - j->submit_ms : 0;
		outcome_decide(&reps[i], r->attempts, age, now_ms, rnd, &s->cfg.retry, &oc);
		sched_log_attempt(j->msgid, j->rcpt[i].addr, j->rcpt[i].addr_len, d->name, &reps[i],
		                  &oc, r->attempts + (oc.counts ? 1 : 0), info, j->submit_ms,
		                  now_ms);
		if (oc.dest_backoff && !backoff)
			backoff = &reps[i];
		if (reps[i].kind == ATTEMPT_REPLY && reps[i].stage != STAGE_GREETING)
			reached = true;
		sched_settle(s, d, r, &reps[i], &oc, remote, now_ms);
	}
	if (backoff)
		sched_dest_hold(s, d, backoff, info ? info->remote : NULL, now_ms);
	else if (reached)
		sched_dest_works(s, d);
	job_recycle(s, j);
}
