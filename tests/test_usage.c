// SPDX-License-Identifier: MIT
/*
 * The usage table (core/usage.h) without a mount: readers per version,
 * the window, keys/<purpose> reads kept apart, the fixed cap and its
 * eviction of the row read longest ago, forgetting a retired version.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "usage.h"

#define T0 1700000000

Test(usage, last_reader_within_the_window)
{
	struct kf_usage *u = kf_usage_new(16);
	struct kf_usage_row r;

	cr_assert(u);
	cr_assert_eq(kf_usage_last(u, 3, 0, &r), 0, "an empty table has one");
	kf_usage_note(u, 3, "phi", false, 1001, T0);
	kf_usage_note(u, 3, "", false, 0, T0 + 5);
	kf_usage_note(u, 4, "phi", false, 1002, T0 + 9);
	cr_assert_eq(kf_usage_last(u, 3, T0, &r), 1);
	cr_assert_eq(r.uid, 0, "the last reader of 3 is uid 0");
	cr_assert_eq(r.last, T0 + 5);
	cr_assert_str_eq(r.what, "", "the data key is what uid 0 read");
	/* A window that starts after both reads sees none of them. */
	cr_assert_eq(kf_usage_last(u, 3, T0 + 6, &r), 0);
	cr_assert_eq(kf_usage_last(u, 4, T0 + 6, &r), 1);
	cr_assert_eq(r.uid, 1002);
	cr_assert_eq(kf_usage_last(u, 5, 0, &r), 0, "version 5 was never read");
	kf_usage_free(u);
}

Test(usage, repeated_reads_share_a_row)
{
	struct kf_usage *u = kf_usage_new(16);
	struct kf_usage_row r;

	for (int i = 0; i < 100; i++)
		kf_usage_note(u, 1, "phi", false, 1001, T0 + i);
	cr_assert_eq(kf_usage_rows(u), 1);
	cr_assert_eq(kf_usage_last(u, 1, 0, &r), 1);
	cr_assert_eq(r.opens, 100);
	cr_assert_eq(r.last, T0 + 99);
	/* An older time never moves the last read back. */
	kf_usage_note(u, 1, "phi", false, 1001, T0);
	cr_assert_eq(kf_usage_last(u, 1, 0, &r), 1);
	cr_assert_eq(r.last, T0 + 99);
	kf_usage_free(u);
}

Test(usage, json_keeps_set_readers_apart)
{
	struct kf_usage *u = kf_usage_new(16);
	json_t *o;
	char *s;

	kf_usage_note(u, 2, "phi", false, 1005, T0);
	kf_usage_note(u, 2, "phi", false, 1001, T0 + 1);
	kf_usage_note(u, 2, "pii", false, 1001, T0 + 2);
	kf_usage_note(u, 2, "phi", true, 1002, T0 + 3);
	kf_usage_note(u, 2, "phi", false, 7, T0 - 100); /* before the window */
	o = kf_usage_json(u, 2, T0);
	cr_assert(o);
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	cr_assert_str_eq(s, "{\"last_read\":\"2023-11-14T22:13:23Z\","
			    "\"last_uid\":1002,\"set_uids\":[1002],"
			    "\"uids\":[1001,1005]}");
	free(s);
	json_decref(o);
	o = kf_usage_json(u, 9, T0);
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	cr_assert_str_eq(s, "{\"last_read\":null,\"last_uid\":null,"
			    "\"set_uids\":[],\"uids\":[]}");
	free(s);
	json_decref(o);
	kf_usage_free(u);
}

Test(usage, a_full_table_evicts_the_row_read_longest_ago)
{
	struct kf_usage *u = kf_usage_new(4);
	struct kf_usage_row r;

	kf_usage_note(u, 1, "phi", false, 100, T0 + 10);
	kf_usage_note(u, 2, "phi", false, 101, T0); /* the oldest */
	kf_usage_note(u, 3, "phi", false, 102, T0 + 20);
	kf_usage_note(u, 4, "phi", false, 103, T0 + 30);
	cr_assert_eq(kf_usage_rows(u), 4);
	kf_usage_note(u, 5, "phi", false, 104, T0 + 40);
	cr_assert_eq(kf_usage_rows(u), 4, "the cap was passed");
	cr_assert_eq(kf_usage_last(u, 2, 0, &r), 0,
		     "the row read longest ago was kept");
	for (uint32_t v = 1; v <= 5; v++)
		cr_assert(v == 2 || kf_usage_last(u, v, 0, &r) == 1,
			  "version %u lost its row", v);
	/* Thousands of new readers: still 4 rows, the newest ones. */
	for (uid_t uid = 0; uid < 5000; uid++)
		kf_usage_note(u, 6, "phi", false, uid, T0 + 100 + uid);
	cr_assert_eq(kf_usage_rows(u), 4);
	cr_assert_eq(kf_usage_last(u, 6, 0, &r), 1);
	cr_assert_eq(r.uid, 4999);
	cr_assert_eq(kf_usage_last(u, 5, 0, &r), 0);
	kf_usage_free(u);
}

Test(usage, forget_drops_a_version)
{
	struct kf_usage *u = kf_usage_new(8);
	struct kf_usage_row r;

	kf_usage_note(u, 1, "phi", false, 1, T0);
	kf_usage_note(u, 2, "phi", true, 2, T0);
	kf_usage_note(u, 1, "", false, 3, T0);
	kf_usage_forget(u, 1);
	cr_assert_eq(kf_usage_rows(u), 1);
	cr_assert_eq(kf_usage_last(u, 1, 0, &r), 0);
	cr_assert_eq(kf_usage_last(u, 2, 0, &r), 1);
	cr_assert(r.via_set);
	cr_assert_null(kf_usage_new(0));
	kf_usage_free(NULL);
	kf_usage_free(u);
}
