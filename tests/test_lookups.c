// SPDX-License-Identifier: MIT
/*
 * The kernel's lookup counts (fs/lookups.h): what a change may skip rests
 * on them, so a count lost or kept too long is a stale key or wasted work.
 */
#include <stdint.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "lookups.h"

Test(lookups, counts_until_every_lookup_is_forgotten)
{
	struct kf_lookups *l = kf_lookups_new();

	cr_assert(l);
	cr_expect(!kf_lookups_held(l, 42), "an inode never looked up is held");
	cr_assert_eq(kf_lookups_add(l, 42), 0);
	cr_assert_eq(kf_lookups_add(l, 42), 0);
	cr_assert_eq(kf_lookups_add(l, 42), 0);
	cr_expect(kf_lookups_held(l, 42));
	kf_lookups_forget(l, 42, 2);
	cr_expect(kf_lookups_held(l, 42), "held after 2 of 3 were forgotten");
	kf_lookups_forget(l, 42, 1);
	cr_expect(!kf_lookups_held(l, 42), "held after all were forgotten");
	cr_expect_eq(kf_lookups_count(l), 0);
	/* A FORGET for more than was counted, or for nothing, is harmless. */
	kf_lookups_forget(l, 42, 5);
	cr_assert_eq(kf_lookups_add(l, 7), 0);
	kf_lookups_forget(l, 7, 9);
	cr_expect(!kf_lookups_held(l, 7));
	kf_lookups_free(l);
}

Test(lookups, the_root_is_always_held_and_never_counted)
{
	struct kf_lookups *l = kf_lookups_new();

	cr_assert(l);
	cr_expect(kf_lookups_held(l, 1));
	cr_assert_eq(kf_lookups_add(l, 1), 0);
	kf_lookups_forget(l, 1, 1);
	cr_expect(kf_lookups_held(l, 1));
	cr_expect_eq(kf_lookups_count(l), 0);
	kf_lookups_free(l);
}

/* Tree inode numbers: kind, version and index packed in one number. */
static uint64_t ino_of(uint64_t i)
{
	return ((i % 17) << 56) | ((i / 17) << 24) | (i % 1000) | 2;
}

Test(lookups, many_inodes_grow_and_shrink_without_losing_one)
{
	struct kf_lookups *l = kf_lookups_new();
	enum { N = 20000 };
	uint8_t *want = calloc(N, 1);

	cr_assert(l && want);
	/* Distinct numbers only: ino_of is one-to-one on [0, N). */
	for (uint64_t i = 0; i < N; i++)
		for (uint64_t j = 0; j < 1 + i % 3; j++)
			cr_assert_eq(kf_lookups_add(l, ino_of(i)), 0);
	cr_assert_eq(kf_lookups_count(l), N);
	/* Forget a pseudo-random half whole, and part of the rest. */
	srandom(11);
	for (uint64_t i = 0; i < N; i++) {
		uint64_t n = 1 + i % 3;

		want[i] = 1;
		if (random() % 2) {
			kf_lookups_forget(l, ino_of(i), n);
			want[i] = 0;
		} else if (n > 1) {
			kf_lookups_forget(l, ino_of(i), n - 1);
		}
	}
	size_t held = 0;

	for (uint64_t i = 0; i < N; i++) {
		cr_assert_eq(kf_lookups_held(l, ino_of(i)), want[i] == 1,
			     "inode %llu: held is wrong after removals",
			     (unsigned long long)i);
		held += want[i];
	}
	cr_expect_eq(kf_lookups_count(l), held);
	for (uint64_t i = 0; i < N; i++)
		kf_lookups_forget(l, ino_of(i), 1);
	cr_expect_eq(kf_lookups_count(l), 0);
	for (uint64_t i = 0; i < N; i++)
		cr_assert(!kf_lookups_held(l, ino_of(i)));
	free(want);
	kf_lookups_free(l);
}
