/* list.h - intrusive doubly-linked lists: the one way ringpost links
 * objects it must unlink in O(1) (sessions, timers, LRU entries, rings).
 *
 * A list is a struct rp_list head, circular: an empty head points at
 * itself, and rp_list_init must run on it first. An element embeds a
 * struct rp_list; zeroed or after rp_list_del it is "not linked"
 * (rp_list_linked is false), and deleting it again is a no-op, so owners
 * need no separate "am I on the list" flag. Header-only, no allocation.
 */
#ifndef RP_LIST_H
#define RP_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct rp_list {
	struct rp_list *next, *prev; /* NULL in an element that is not linked */
};

/* rp_list_init - an empty list head. */
static inline void rp_list_init(struct rp_list *head)
{
	head->next = head->prev = head;
}

/* rp_list_empty - no element on head's list. */
static inline bool rp_list_empty(const struct rp_list *head)
{
	return head->next == head;
}

/* rp_list_linked - whether element n is on some list. */
static inline bool rp_list_linked(const struct rp_list *n)
{
	return n->next != NULL;
}

/* rp_list_insert - link n between prev and next (both linked). */
static inline void rp_list_insert(struct rp_list *n, struct rp_list *prev, struct rp_list *next)
{
	n->prev = prev;
	n->next = next;
	prev->next = n;
	next->prev = n;
}

/* rp_list_add - n first on head's list. n must not be linked. */
static inline void rp_list_add(struct rp_list *head, struct rp_list *n)
{
	rp_assert(!rp_list_linked(n));
	rp_list_insert(n, head, head->next);
}

/* rp_list_add_tail - n last on head's list. n must not be linked. */
static inline void rp_list_add_tail(struct rp_list *head, struct rp_list *n)
{
	rp_assert(!rp_list_linked(n));
	rp_list_insert(n, head->prev, head);
}

/* rp_list_del - unlink n if it is linked; afterwards it is not. */
static inline void rp_list_del(struct rp_list *n)
{
	if (!rp_list_linked(n))
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = NULL;
}

/* rp_list_move_tail - n (linked on head's list) goes last: round-robin. */
static inline void rp_list_move_tail(struct rp_list *head, struct rp_list *n)
{
	rp_list_del(n);
	rp_list_insert(n, head->prev, head);
}

/* rp_list_first - the first element, or NULL when empty. */
static inline struct rp_list *rp_list_first(const struct rp_list *head)
{
	return rp_list_empty(head) ? NULL : head->next;
}

/* rp_list_entry - the struct that embeds list member p. */
#define rp_list_entry(p, type, member) RP_CONTAINER_OF(p, type, member)

/* rp_list_foreach_safe - visit every element; the current one (pos) may be
 * unlinked or freed by the body, no other. */
#define rp_list_foreach_safe(pos, tmp, head)                                                       \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                           \
	     (pos) = (tmp), (tmp) = (pos)->next)

#endif
