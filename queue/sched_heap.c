/* sched_heap.c - the retry heap: deferred recipients of every destination.
 *
 * One binary min-heap per scheduler ordered by (due_ms, msgid, idx), so a
 * message's recipients that come due together leave it together. Each
 * recipient knows its index (heap_pos) for O(log n) removal.
 */
#include "sched_impl.h"

#include <stdlib.h>

#include "base/util.h"

/* heap_less - a is due before b (then message and recipient order). */
static bool heap_less(const struct sched_rcpt *a, const struct sched_rcpt *b)
{
	if (a->due_ms != b->due_ms)
		return a->due_ms < b->due_ms;
	if (a->msgid != b->msgid)
		return a->msgid < b->msgid;
	return a->idx < b->idx;
}

/* heap_set - place r at index i. */
static void heap_set(struct sched *s, uint32_t i, struct sched_rcpt *r)
{
	s->heap[i] = r;
	r->heap_pos = i;
}

/* heap_up - sift the entry at i towards the root. */
static void heap_up(struct sched *s, uint32_t i)
{
	struct sched_rcpt *r = s->heap[i];
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (!heap_less(r, s->heap[p]))
			break;
		heap_set(s, i, s->heap[p]);
		i = p;
	}
	heap_set(s, i, r);
}

/* heap_down - sift the entry at i towards the leaves. */
static void heap_down(struct sched *s, uint32_t i)
{
	struct sched_rcpt *r = s->heap[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= s->heap_len)
			break;
		if (c + 1 < s->heap_len && heap_less(s->heap[c + 1], s->heap[c]))
			c++;
		if (!heap_less(s->heap[c], r))
			break;
		heap_set(s, i, s->heap[c]);
		i = c;
	}
	heap_set(s, i, r);
}

/* heap_fix - restore the heap order after entries were re-keyed or
 * removed wholesale: O(n). */
static void heap_fix(struct sched *s)
{
	for (uint32_t i = s->heap_len / 2; i-- > 0;)
		heap_down(s, i);
}

/* sched_heap_push - insert r. */
void sched_heap_push(struct sched *s, struct sched_rcpt *r)
{
	if (s->heap_len == s->heap_cap) {
		s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 1024;
		s->heap = xrealloc(s->heap, s->heap_cap * sizeof(*s->heap));
	}
	s->heap[s->heap_len] = r;
	r->heap_pos = s->heap_len++;
	heap_up(s, r->heap_pos);
}

/* sched_heap_remove - take r out: the last entry fills its place. */
void sched_heap_remove(struct sched *s, struct sched_rcpt *r)
{
	uint32_t i = r->heap_pos;
	rp_assert(i < s->heap_len && s->heap[i] == r);
	r->heap_pos = SCHED_HEAP_NONE;
	s->heap_len--;
	if (i == s->heap_len)
		return;
	heap_set(s, i, s->heap[s->heap_len]);
	heap_up(s, i);
	heap_down(s, s->heap[i]->heap_pos);
}

/* sched_heap_move_due - at most max recipients whose time has come leave
 * the heap, earliest first. */
void sched_heap_move_due(struct sched *s, uint64_t now, unsigned max)
{
	unsigned moved = 0;
	while (s->heap_len && s->heap[0]->due_ms <= now && moved < max) {
		struct sched_rcpt *r = s->heap[0];
		sched_heap_remove(s, r);
		r->dest->n.deferred--;
		sched_make_ready(s, r->dest, r, now);
		moved++;
	}
}

/* sched_heap_due_now - d's deferred recipients are due now: they go to the
 * front of the heap, in message order (heap_less), and leave it like any
 * due recipient. */
uint64_t sched_heap_due_now(struct sched *s, struct sched_dest *d, uint64_t now)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		struct sched_rcpt *r = s->heap[i];
		if (r->dest != d)
			continue;
		if (r->due_ms > now)
			r->due_ms = now;
		n++;
	}
	if (n)
		heap_fix(s);
	return n;
}

/* heap_order - qsort comparator in heap order. */
static int heap_order(const void *a, const void *b)
{
	const struct sched_rcpt *x = *(struct sched_rcpt *const *)a;
	const struct sched_rcpt *y = *(struct sched_rcpt *const *)b;
	return heap_less(x, y) ? -1 : heap_less(y, x);
}

/* sched_heap_take - d's recipients (of message msgid, or all when 0) leave
 * the heap into a list, in the order they were due (a message's
 * recipients stay together). They are found first and removed after: a
 * removal sifts the heap's last element into the hole, possibly up to an
 * index a scan has already passed. */
struct sched_rcpt *sched_heap_take(struct sched *s, struct sched_dest *d, uint64_t msgid)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		const struct sched_rcpt *r = s->heap[i];
		n += r->dest == d && (!msgid || r->msgid == msgid);
	}
	if (!n)
		return NULL;
	struct sched_rcpt **found = xmalloc(n * sizeof(*found));
	uint32_t k = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		struct sched_rcpt *r = s->heap[i];
		if (r->dest == d && (!msgid || r->msgid == msgid))
			found[k++] = r;
	}
	qsort(found, n, sizeof(*found), heap_order);
	struct sched_rcpt *list = NULL;
	for (uint32_t i = n; i-- > 0;) {
		sched_heap_remove(s, found[i]);
		d->n.deferred--;
		found[i]->next = list;
		list = found[i];
	}
	free(found);
	return list;
}

/* sched_heap_extract - every recipient of d leaves the heap onto the list
 * head/tail, in one pass over the heap and one re-heapify: O(heap), where
 * removing each would cost a sift per recipient. */
uint64_t sched_heap_extract(struct sched *s, struct sched_dest *d, struct sched_rcpt **head,
                            struct sched_rcpt **tail)
{
	uint32_t k = 0;
	uint64_t n = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		struct sched_rcpt *r = s->heap[i];
		if (r->dest != d) {
			heap_set(s, k++, r);
			continue;
		}
		r->heap_pos = SCHED_HEAP_NONE;
		r->next = NULL;
		if (*tail)
			(*tail)->next = r;
		else
			*head = r;
		*tail = r;
		n++;
	}
	if (n) {
		s->heap_len = k;
		heap_fix(s);
	}
	return n;
}
