/* pop3_cmd.c - the TRANSACTION state (RFC 1939 section 5) and UPDATE
 * (section 6): STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT.
 *
 * Commands work on the snapshot taken at login: message numbers, sizes
 * and UIDs stay what they were then. DELE only marks; RSET unmarks; QUIT
 * hands the marked UIDs to the spool writer (SPOOL_REQ_MBOX_EXPUNGE),
 * then asks for a sync (SPOOL_REQ_SYNC), and says +OK only once the
 * deletions are on disk. A session that ends any other way deletes
 * nothing. RETR marks the message \Seen for IMAP (no answer awaited).
 *
 * Multi-line replies (LIST, UIDL, RETR, TOP) are produced in slices while
 * less than POP3_OUT_HIGH bytes are queued; a message is read again from
 * the spool for each slice, in its own short read transaction. UIDL's
 * unique-id is "UIDVALIDITY.UID": stable across restarts, never reused.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/util.h"
#include "pop3_impl.h"

/* A QUIT's commit: the expunge, then the sync. */
struct pop3_commit {
	struct spool_req req;
	struct pop3_session *s;
	unsigned removed; /* by the expunge */
	unsigned n;
	uint32_t uids[];
};

/* A RETR's \Seen: the writer frees it (no reply). */
struct pop3_seen {
	struct spool_req req; /* first: the writer free()s the request */
	uint32_t uid;
};

/* totals - messages not marked deleted, and their octets. */
static void totals(const struct pop3_session *s, uint32_t *n, uint64_t *octets)
{
	*n = 0;
	*octets = 0;
	for (uint32_t i = 0; i < s->nmsgs; i++) {
		if (s->msgs[i].deleted)
			continue;
		(*n)++;
		*octets += s->msgs[i].size;
	}
}

void pop3_enter_transaction(struct pop3_session *s)
{
	uint32_t n;
	uint64_t octets;
	char user[POP3_QUOTED_MAX];
	totals(s, &n, &octets);
	pop3_set_state(s, P3_TRANSACTION);
	pop3_user_quoted(s, user);
	log_info("pop3 %s: login user=%s method=%s messages=%u octets=%llu%s%s", s->peer, user,
	         s->mech, n, (unsigned long long)octets, s->tls ? " tls=" : "",
	         s->tls ? s->tls_desc : "");
	pop3_reply(s, "+OK maildrop has %u messages (%llu octets)", n, (unsigned long long)octets);
	pop3_resume(s);
}

/* budget - how much output a slice may add now. */
static size_t budget(const struct pop3_session *s)
{
	size_t pending = conn_pending_out(&s->conn);
	return pending + 4096 > POP3_OUT_HIGH ? 4096 : POP3_OUT_HIGH - pending;
}

/* msg_of - the message a command names (1-based), or NULL after an -ERR. */
static struct pop3_msg *msg_of(struct pop3_session *s, uint32_t n)
{
	if (!n || n > s->nmsgs) {
		pop3_reply(s, "-ERR no such message");
		return NULL;
	}
	if (s->msgs[n - 1].deleted) {
		pop3_reply(s, "-ERR message %u is deleted", n);
		return NULL;
	}
	return &s->msgs[n - 1];
}

/* ---- multi-line replies -------------------------------------------------- */

static void fill_list(struct pop3_session *s)
{
	struct buf *out = conn_outbuf(&s->conn);
	size_t room = budget(s), start = out->len;
	while (s->xfer_idx < s->nmsgs && out->len - start < room) {
		const struct pop3_msg *m = &s->msgs[s->xfer_idx++];
		if (m->deleted)
			continue;
		if (s->xfer == P3_XFER_LIST)
			buf_printf(out, "%u %llu\r\n", s->xfer_idx, (unsigned long long)m->size);
		else
			buf_printf(out, "%u %u.%u\r\n", s->xfer_idx, s->uidvalidity, m->uid);
	}
	if (s->xfer_idx == s->nmsgs) {
		buf_append(out, ".\r\n", 3);
		s->xfer = P3_XFER_NONE;
	}
	conn_flush_soon(&s->conn);
}

/* mark_seen - \Seen for IMAP after a RETR; nobody waits for it. */
static void mark_seen(struct pop3_session *s, struct pop3_msg *m)
{
	struct pop3_seen *r = xcalloc(1, sizeof(*r));
	r->uid = m->uid;
	r->req.type = SPOOL_REQ_MBOX_STORE;
	r->req.u.store.uids = &r->uid;
	r->req.u.store.n = 1;
	r->req.u.store.set = MBOX_SEEN;
	spool_request(s->srv->p.spool, &r->req);
	m->seen = true;
}

/* fill_msg - the next slice of msgs[xfer_idx] from e (in a read transaction). */
static void fill_msg(struct pop3_session *s, const struct spool_mbox_entry *e)
{
	pop3_emit_run(&s->emit, e->data, e->len, conn_outbuf(&s->conn), budget(s));
	conn_flush_soon(&s->conn);
	if (!s->emit.done)
		return;
	s->xfer = P3_XFER_NONE;
	struct pop3_msg *m = &s->msgs[s->xfer_idx];
	if (!s->emit.top && !m->seen)
		mark_seen(s, m);
}

/* msg_again - the next slice of a message being sent. It went away in
 * between (expunged by IMAP or by expiry): the reply cannot be ended
 * properly any more, so the connection is. */
static void msg_again(struct pop3_session *s)
{
	struct spool_reader *r = s->srv->p.reader;
	struct spool_mbox_entry e;
	uint32_t uid = s->msgs[s->xfer_idx].uid;
	if (!spool_reader_begin(r)) {
		log_error("pop3 %s: the spool cannot be read: closing mid-reply", s->peer);
		s->xfer = P3_XFER_NONE;
		pop3_set_state(s, P3_CLOSING);
		conn_close(&s->conn);
		return;
	}
	if (!spool_mbox_get(r, uid, &e)) {
		spool_reader_end(r);
		log_warn("pop3 %s: message UID %u was removed while being sent: closing", s->peer,
		         uid);
		s->xfer = P3_XFER_NONE;
		pop3_set_state(s, P3_CLOSING);
		conn_close(&s->conn);
		return;
	}
	fill_msg(s, &e);
	spool_reader_end(r);
}

void pop3_xfer_fill(struct pop3_session *s)
{
	switch (s->xfer) {
	case P3_XFER_NONE:
		return;
	case P3_XFER_LIST:
	case P3_XFER_UIDL:
		fill_list(s);
		return;
	case P3_XFER_MSG:
		msg_again(s);
		return;
	}
	rp_panic("unknown reply kind %d", (int)s->xfer);
}

/* send_msg - RETR (top false) or TOP n lines of message number n. */
static void send_msg(struct pop3_session *s, uint32_t n, bool top, uint32_t lines)
{
	struct pop3_msg *m = msg_of(s, n);
	if (!m)
		return;
	struct spool_reader *r = s->srv->p.reader;
	struct spool_mbox_entry e;
	if (!spool_reader_begin(r)) {
		pop3_reply(s, "-ERR [SYS/TEMP] the mailbox cannot be read right now");
		return;
	}
	if (!spool_mbox_get(r, m->uid, &e)) {
		spool_reader_end(r);
		pop3_reply(s, "-ERR message %u is no longer in the mailbox", n);
		return;
	}
	if (top)
		pop3_reply(s, "+OK top of message follows");
	else
		pop3_reply(s, "+OK %llu octets", (unsigned long long)m->size);
	pop3_emit_init(&s->emit, top, lines);
	s->xfer = P3_XFER_MSG;
	s->xfer_idx = n - 1;
	fill_msg(s, &e);
	spool_reader_end(r);
}

/* ---- the commands ---------------------------------------------------------- */

/* numbers - how many numeric arguments the command has, or -1 after an -ERR. */
static int numbers(struct pop3_session *s, const struct pop3_cmd *c, unsigned min, unsigned max,
                   uint32_t *v, const char *syntax)
{
	int n = pop3_cmd_numbers(c, min, max, v);
	if (n < 0)
		pop3_error(s, "-ERR syntax: %s", syntax);
	return n;
}

static void cmd_list(struct pop3_session *s, const struct pop3_cmd *c, bool uidl)
{
	uint32_t v[1];
	int args = numbers(s, c, 0, 1, v, uidl ? "UIDL [msg]" : "LIST [msg]");
	if (args < 0)
		return;
	if (args) {
		const struct pop3_msg *m = msg_of(s, v[0]);
		if (!m)
			return;
		if (uidl)
			pop3_reply(s, "+OK %u %u.%u", v[0], s->uidvalidity, m->uid);
		else
			pop3_reply(s, "+OK %u %llu", v[0], (unsigned long long)m->size);
		return;
	}
	uint32_t n;
	uint64_t octets;
	totals(s, &n, &octets);
	if (uidl)
		pop3_reply(s, "+OK unique-id listing follows");
	else
		pop3_reply(s, "+OK %u messages (%llu octets)", n, (unsigned long long)octets);
	s->xfer = uidl ? P3_XFER_UIDL : P3_XFER_LIST;
	s->xfer_idx = 0;
	fill_list(s);
}

/* commit_done - the end of UPDATE: the QUIT's answer. */
static void commit_done(struct pop3_commit *k, bool ok)
{
	struct pop3_session *s = k->s;
	unsigned n = k->n, removed = k->removed;
	char user[POP3_QUOTED_MAX];
	free(k);
	s->spool_inflight = false;
	pop3_unlock(s);
	pop3_user_quoted(s, user);
	if (ok) {
		log_info("pop3 %s: quit user=%s deleted=%u (%u already gone)", s->peer, user,
		         removed, n - removed);
	} else {
		log_error("pop3 %s: quit user=%s: the deletion of %u messages failed", s->peer,
		          user, n);
	}
	if (s->released) {
		pop3_may_free(s);
		return;
	}
	if (ok)
		pop3_close_with(s, "+OK ringpost POP3 server signing off");
	else
		pop3_close_with(s, "-ERR [SYS/TEMP] some deleted messages not removed");
}

static void synced(struct mq_item *item, void *ctx)
{
	struct pop3_commit *k = RP_CONTAINER_OF(item, struct pop3_commit, req.item);
	(void)ctx;
	commit_done(k, k->req.status == SPOOL_OK);
}

static void expunged(struct mq_item *item, void *ctx)
{
	struct pop3_commit *k = RP_CONTAINER_OF(item, struct pop3_commit, req.item);
	(void)ctx;
	if (k->req.status != SPOOL_OK) {
		commit_done(k, false);
		return;
	}
	/* Committed, maybe not yet on disk: +OK waits for a sync. */
	k->removed = k->req.u.expunge.removed;
	struct mq *reply_to = k->req.reply_to;
	memset(&k->req, 0, sizeof(k->req));
	k->req.type = SPOOL_REQ_SYNC;
	k->req.reply_to = reply_to;
	k->req.reply_fn = synced;
	spool_request(k->s->srv->p.spool, &k->req);
}

/* cmd_quit - UPDATE: the marked messages go, durably, then +OK. */
static void cmd_quit(struct pop3_session *s)
{
	unsigned n = 0;
	for (uint32_t i = 0; i < s->nmsgs; i++)
		n += s->msgs[i].deleted;
	if (!n) {
		char user[POP3_QUOTED_MAX];
		pop3_user_quoted(s, user);
		log_info("pop3 %s: quit user=%s deleted=0", s->peer, user);
		pop3_unlock(s); /* free for the next login at once */
		pop3_close_with(s, "+OK ringpost POP3 server signing off");
		return;
	}
	struct pop3_commit *k = xcalloc(1, sizeof(*k) + n * sizeof(k->uids[0]));
	k->s = s;
	for (uint32_t i = 0; i < s->nmsgs; i++)
		if (s->msgs[i].deleted)
			k->uids[k->n++] = s->msgs[i].uid;
	k->req.type = SPOOL_REQ_MBOX_EXPUNGE;
	k->req.u.expunge.uids = k->uids;
	k->req.u.expunge.n = k->n;
	k->req.reply_to = loop_inbox(s->srv->p.loop);
	k->req.reply_fn = expunged;
	s->spool_inflight = true;
	pop3_set_state(s, P3_UPDATE);
	spool_request(s->srv->p.spool, &k->req);
}

static void cmd_dele(struct pop3_session *s, const struct pop3_cmd *c)
{
	uint32_t v[1];
	if (numbers(s, c, 1, 1, v, "DELE msg") < 0)
		return;
	struct pop3_msg *m = msg_of(s, v[0]);
	if (!m)
		return;
	m->deleted = true;
	pop3_reply(s, "+OK message %u deleted", v[0]);
}

static void cmd_rset(struct pop3_session *s)
{
	uint32_t n;
	uint64_t octets;
	for (uint32_t i = 0; i < s->nmsgs; i++)
		s->msgs[i].deleted = false;
	totals(s, &n, &octets);
	pop3_reply(s, "+OK maildrop has %u messages (%llu octets)", n, (unsigned long long)octets);
}

void pop3_transaction_command(struct pop3_session *s, const struct pop3_cmd *c)
{
	uint32_t v[2], n;
	uint64_t octets;
	bool bare = !c->arg_len;
	switch (c->id) {
	case POP3_CMD_STAT:
		if (!bare) {
			pop3_error(s, "-ERR syntax: STAT");
			return;
		}
		totals(s, &n, &octets);
		pop3_reply(s, "+OK %u %llu", n, (unsigned long long)octets);
		return;
	case POP3_CMD_LIST:
	case POP3_CMD_UIDL:
		cmd_list(s, c, c->id == POP3_CMD_UIDL);
		return;
	case POP3_CMD_RETR:
		if (numbers(s, c, 1, 1, v, "RETR msg") > 0)
			send_msg(s, v[0], false, 0);
		return;
	case POP3_CMD_TOP:
		if (numbers(s, c, 2, 2, v, "TOP msg n") > 0)
			send_msg(s, v[0], true, v[1]);
		return;
	case POP3_CMD_DELE:
		cmd_dele(s, c);
		return;
	case POP3_CMD_RSET:
	case POP3_CMD_NOOP:
	case POP3_CMD_QUIT:
		if (!bare) {
			pop3_error(s, "-ERR syntax: %s", c->name);
			return;
		}
		if (c->id == POP3_CMD_RSET)
			cmd_rset(s);
		else if (c->id == POP3_CMD_NOOP)
			pop3_reply(s, "+OK");
		else
			cmd_quit(s);
		return;
	case POP3_CMD_USER:
	case POP3_CMD_PASS:
	case POP3_CMD_APOP:
	case POP3_CMD_AUTH:
	case POP3_CMD_STLS:
		pop3_error(s, "-ERR already logged in: %s is for the AUTHORIZATION state", c->name);
		return;
	case POP3_CMD_UNKNOWN:
	case POP3_CMD_CAPA:
	case POP3_CMD_COUNT:
		break;
	}
	rp_panic("command %s reached the TRANSACTION dispatch", c->name);
}
