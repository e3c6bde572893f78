/* spool_record.c - encode and decode spool records (see spool.h).
 *
 * Layout: a fixed little-endian header, then the variable strings in order.
 * Records start with a version byte; decoders reject versions they do not
 * know and lengths that run past the value. The spool is not portable
 * between machines of different byte order (we write native little-endian;
 * the static assertion below keeps that honest).
 */
#include <string.h>

#include "spool.h"
#include "base/util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "spool records are little-endian");

#define MSG_VERSION  1
#define RCPT_VERSION 1

struct msg_hdr {
	uint8_t version;
	uint8_t submitter_len; /* 0 in records written before it existed */
	uint8_t pad[2];
	uint32_t flags;
	uint32_t nrcpt;
	uint32_t pending;
	uint64_t submit_ms;
	uint64_t done_ms;
	uint64_t body_len;
	uint32_t sender_len;
	uint16_t envid_len;
	uint16_t source_len;
};

struct rcpt_hdr {
	uint8_t version;
	uint8_t state;
	uint8_t notify;
	uint8_t pad;
	uint16_t attempts;
	uint16_t addr_len;
	uint32_t variant;
	uint16_t orcpt_len;
	uint16_t response_len;
	uint16_t remote_len;
	uint16_t pad2;
	uint32_t pad3;
	uint64_t next_ms;
	uint64_t last_ms;
};

const char *spool_state_name(unsigned state)
{
	static const char *names[] = { "queued",  "deferred",   "delivered",
		                       "bounced", "suppressed", "complained" };
	return state < RP_ARRAY_LEN(names) ? names[state] : "unknown";
}

/* Lengths are clamped to their field width; callers validate before. */
static size_t clamp16(size_t n)
{
	return n > 0xffff ? 0xffff : n;
}

static size_t clamp8(size_t n)
{
	return n > 0xff ? 0xff : n;
}

size_t spool_msg_size(const struct spool_msg *m)
{
	return sizeof(struct msg_hdr) + m->sender_len + clamp16(m->envid_len) +
	       clamp16(m->source_len) + clamp8(m->submitter_len);
}

void spool_msg_encode(const struct spool_msg *m, void *out)
{
	struct msg_hdr h;
	memset(&h, 0, sizeof(h));
	h.version = MSG_VERSION;
	h.flags = m->flags;
	h.nrcpt = m->nrcpt;
	h.pending = m->pending;
	h.submit_ms = m->submit_ms;
	h.done_ms = m->done_ms;
	h.body_len = m->body_len;
	h.sender_len = (uint32_t)m->sender_len;
	h.envid_len = (uint16_t)clamp16(m->envid_len);
	h.source_len = (uint16_t)clamp16(m->source_len);
	h.submitter_len = (uint8_t)clamp8(m->submitter_len);
	char *p = out;
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	if (m->sender_len)
		memcpy(p, m->sender, m->sender_len);
	p += m->sender_len;
	if (h.envid_len)
		memcpy(p, m->envid, h.envid_len);
	p += h.envid_len;
	if (h.source_len)
		memcpy(p, m->source, h.source_len);
	p += h.source_len;
	if (h.submitter_len)
		memcpy(p, m->submitter, h.submitter_len);
}

bool spool_msg_decode(const void *val, size_t n, struct spool_msg *m)
{
	struct msg_hdr h;
	const char *p = val;
	if (n < sizeof(h))
		return false;
	memcpy(&h, p, sizeof(h));
	if (h.version != MSG_VERSION)
		return false;
	if (sizeof(h) + (size_t)h.sender_len + h.envid_len + h.source_len + h.submitter_len != n)
		return false;
	uint64_t id = m->id;
	memset(m, 0, sizeof(*m));
	m->id = id;
	m->flags = h.flags;
	m->nrcpt = h.nrcpt;
	m->pending = h.pending;
	m->submit_ms = h.submit_ms;
	m->done_ms = h.done_ms;
	m->body_len = h.body_len;
	p += sizeof(h);
	m->sender = p;
	m->sender_len = h.sender_len;
	p += h.sender_len;
	m->envid = p;
	m->envid_len = h.envid_len;
	p += h.envid_len;
	m->source = p;
	m->source_len = h.source_len;
	p += h.source_len;
	m->submitter = p;
	m->submitter_len = h.submitter_len;
	return true;
}

size_t spool_rcpt_size(const struct spool_rcpt *r)
{
	return sizeof(struct rcpt_hdr) + clamp16(r->addr_len) + clamp16(r->orcpt_len) +
	       clamp16(r->response_len) + clamp16(r->remote_len);
}

void spool_rcpt_encode(const struct spool_rcpt *r, void *out)
{
	struct rcpt_hdr h;
	memset(&h, 0, sizeof(h));
	h.version = RCPT_VERSION;
	h.state = r->state;
	h.notify = r->notify;
	h.attempts = r->attempts;
	h.addr_len = (uint16_t)clamp16(r->addr_len);
	h.variant = r->variant;
	h.orcpt_len = (uint16_t)clamp16(r->orcpt_len);
	h.response_len = (uint16_t)clamp16(r->response_len);
	h.remote_len = (uint16_t)clamp16(r->remote_len);
	h.next_ms = r->next_ms;
	h.last_ms = r->last_ms;
	char *p = out;
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	if (h.addr_len)
		memcpy(p, r->addr, h.addr_len);
	p += h.addr_len;
	if (h.orcpt_len)
		memcpy(p, r->orcpt, h.orcpt_len);
	p += h.orcpt_len;
	if (h.response_len)
		memcpy(p, r->response, h.response_len);
	p += h.response_len;
	if (h.remote_len)
		memcpy(p, r->remote, h.remote_len);
}

bool spool_rcpt_decode(const void *val, size_t n, struct spool_rcpt *r)
{
	struct rcpt_hdr h;
	const char *p = val;
	if (n < sizeof(h))
		return false;
	memcpy(&h, p, sizeof(h));
	if (h.version != RCPT_VERSION)
		return false;
	if (sizeof(h) + (size_t)h.addr_len + h.orcpt_len + h.response_len + h.remote_len != n)
		return false;
	uint64_t msgid = r->msgid;
	uint32_t idx = r->idx;
	memset(r, 0, sizeof(*r));
	r->msgid = msgid;
	r->idx = idx;
	r->state = h.state;
	r->notify = h.notify;
	r->attempts = h.attempts;
	r->variant = h.variant;
	r->next_ms = h.next_ms;
	r->last_ms = h.last_ms;
	p += sizeof(h);
	r->addr = p;
	r->addr_len = h.addr_len;
	p += h.addr_len;
	r->orcpt = p;
	r->orcpt_len = h.orcpt_len;
	p += h.orcpt_len;
	r->response = p;
	r->response_len = h.response_len;
	p += h.response_len;
	r->remote = p;
	r->remote_len = h.remote_len;
	return true;
}
