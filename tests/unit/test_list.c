/* test_list.c - intrusive lists (base/list.h): order of add and add_tail,
 * unlinking (twice is a no-op), round-robin with move_tail, and the safe
 * walk that frees the element it is on.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "base/list.h"

struct item {
	int v;
	struct rp_list link;
};

/* values - the list's values in order, into out; how many. */
static int values(struct rp_list *head, int *out, int max)
{
	int n = 0;
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, head)
	{
		cr_assert_lt(n, max, "the list does not end");
		out[n++] = rp_list_entry(pos, struct item, link)->v;
	}
	return n;
}

static void expect(struct rp_list *head, const int *want, int n)
{
	int got[16];
	int k = values(head, got, 16);
	cr_assert_eq(k, n, "%d elements, expected %d", k, n);
	for (int i = 0; i < n; i++)
		cr_assert_eq(got[i], want[i], "element %d is %d, expected %d", i, got[i], want[i]);
}

Test(list, add_del_and_order)
{
	struct rp_list h;
	struct item it[4] = { { .v = 0 }, { .v = 1 }, { .v = 2 }, { .v = 3 } };
	rp_list_init(&h);
	cr_assert(rp_list_empty(&h));
	cr_assert_null(rp_list_first(&h));
	cr_assert_not(rp_list_linked(&it[0].link), "a zeroed element is not linked");
	rp_list_add_tail(&h, &it[1].link);
	rp_list_add_tail(&h, &it[2].link);
	rp_list_add(&h, &it[0].link);
	rp_list_add_tail(&h, &it[3].link);
	expect(&h, (int[]){ 0, 1, 2, 3 }, 4);
	rp_list_del(&it[2].link);
	cr_assert_not(rp_list_linked(&it[2].link));
	rp_list_del(&it[2].link); /* twice: nothing happens */
	expect(&h, (int[]){ 0, 1, 3 }, 3);
	rp_list_move_tail(&h, &it[0].link);
	expect(&h, (int[]){ 1, 3, 0 }, 3);
	cr_assert_eq(rp_list_first(&h), &it[1].link);
	rp_list_del(&it[1].link);
	rp_list_del(&it[3].link);
	rp_list_del(&it[0].link);
	cr_assert(rp_list_empty(&h), "every element gone: empty again");
	rp_list_add(&h, &it[2].link); /* a deleted element can be linked again */
	expect(&h, (int[]){ 2 }, 1);
}

Test(list, walk_frees_the_current_element)
{
	struct rp_list h;
	rp_list_init(&h);
	for (int i = 0; i < 10; i++) {
		struct item *x = calloc(1, sizeof(*x));
		x->v = i;
		rp_list_add_tail(&h, &x->link);
	}
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &h)
	{
		struct item *x = rp_list_entry(pos, struct item, link);
		if (x->v % 2) {
			rp_list_del(pos);
			free(x);
		}
	}
	expect(&h, (int[]){ 0, 2, 4, 6, 8 }, 5);
	rp_list_foreach_safe(pos, tmp, &h)
	{
		rp_list_del(pos);
		free(rp_list_entry(pos, struct item, link));
	}
	cr_assert(rp_list_empty(&h));
}
