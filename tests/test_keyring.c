// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "helpers.h"
#include "keyring.h"

static void init(void)
{
	cr_assert(sodium_init() >= 0);
}

TestSuite(keyring, .init = init);

static struct kf_keyring *fresh(uint32_t version, int64_t created)
{
	uint8_t key[KF_KEY_BYTES];
	struct kf_keyring *kr = NULL;

	kf_key_generate(key);
	cr_assert(kf_keyring_new(version, key, created, version, &kr) == 0);
	sodium_memzero(key, sizeof(key));
	return kr;
}

static struct kf_keyring *rotated(struct kf_keyring *kr, int64_t now)
{
	struct kf_keyring *nk = NULL;

	cr_assert(kf_keyring_rotate(kr, now, &nk) == 0);
	kf_keyring_unref(kr);
	return nk;
}

static bool same_key(const uint8_t *a, const uint8_t *b)
{
	return memcmp(a, b, KF_KEY_BYTES) == 0;
}

Test(keyring, new_holds_one_version_with_copied_key)
{
	uint8_t key[KF_KEY_BYTES];
	struct kf_keyring *kr = NULL;
	const struct kf_keyring_entry *e;

	memset(key, 'k', sizeof(key));
	cr_assert(kf_keyring_new(3, key, 1000, 7, &kr) == 0);
	memset(key, 'x', sizeof(key));
	cr_assert_eq(kf_keyring_count(kr), 1);
	cr_assert_eq(kf_keyring_current_version(kr), 3);
	cr_assert_eq(kf_keyring_highest(kr), 7);
	e = kf_keyring_at(kr, 0);
	cr_assert_not_null(e);
	cr_assert_eq(e->version, 3);
	cr_assert_eq(e->created, 1000);
	memset(key, 'k', sizeof(key));
	cr_assert(same_key(e->key, key), "key was not copied at new");
	cr_assert_null(kf_keyring_at(kr, 1));
	cr_assert_eq(kf_keyring_find(kr, 3), e);
	cr_assert_null(kf_keyring_find(kr, 2));
	cr_assert_null(kf_keyring_unref(kr));
}

Test(keyring, new_refuses_bad_arguments)
{
	uint8_t key[KF_KEY_BYTES] = {1};
	struct kf_keyring *kr = NULL;

	cr_assert_eq(kf_keyring_new(0, key, 0, 0, &kr), -EINVAL);
	cr_assert_eq(kf_keyring_new(5, key, 0, 4, &kr), -EINVAL);
	cr_assert_eq(kf_keyring_new(1, NULL, 0, 1, &kr), -EINVAL);
	cr_assert_null(kr);
}

Test(keyring, ref_and_unref)
{
	struct kf_keyring *kr = fresh(1, 0);

	cr_assert_eq(kf_keyring_ref(kr), kr);
	cr_assert_null(kf_keyring_unref(kr));
	/* Still held once: must be readable. */
	cr_assert_eq(kf_keyring_current_version(kr), 1);
	cr_assert_null(kf_keyring_unref(kr));
	cr_assert_null(kf_keyring_unref(NULL));
	cr_assert_null(kf_keyring_ref(NULL));
}

static void *ref_storm(void *arg)
{
	struct kf_keyring *kr = arg;

	for (int i = 0; i < 100000; i++) {
		kf_keyring_ref(kr);
		kf_keyring_unref(kr);
	}
	return NULL;
}

Test(keyring, refcount_is_atomic_across_threads)
{
	struct kf_keyring *kr = fresh(9, 0);
	pthread_t t[8];

	for (int i = 0; i < 8; i++)
		cr_assert(pthread_create(&t[i], NULL, ref_storm, kr) == 0);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	/*
	 * A lost update would have freed it (a later read faults) or left
	 * it leaking (LeakSanitizer).
	 */
	cr_assert_eq(kf_keyring_current_version(kr), 9);
	cr_assert_eq(kf_keyring_at(kr, 0)->version, 9);
	kf_keyring_unref(kr);
}

Test(keyring, rotation_moves_current_to_previous)
{
	struct kf_keyring *kr = fresh(1, 100), *nk = NULL;
	const struct kf_keyring_entry *cur, *prev;

	cr_assert(kf_keyring_rotate(kr, 200, &nk) == 0);
	cr_assert_eq(kf_keyring_count(nk), 2);
	cr_assert_eq(kf_keyring_current_version(nk), 2);
	cr_assert_eq(kf_keyring_highest(nk), 2);
	cur = kf_keyring_at(nk, 0);
	prev = kf_keyring_at(nk, 1);
	cr_assert_eq(cur->created, 200);
	cr_assert_eq(prev->version, 1);
	cr_assert_eq(prev->created, 100);
	cr_assert(same_key(prev->key, kf_keyring_at(kr, 0)->key),
		  "previous is not the old current key");
	cr_assert(!same_key(cur->key, prev->key),
		  "rotation produced the same key");
	/* The old keyring is unchanged (immutable snapshot). */
	cr_assert_eq(kf_keyring_count(kr), 1);
	cr_assert_eq(kf_keyring_current_version(kr), 1);
	kf_keyring_unref(kr);
	/* The new one owns its copy: still readable after the old is gone. */
	cr_assert_eq(kf_keyring_at(nk, 1)->version, 1);
	kf_keyring_unref(nk);
}

Test(keyring, fifty_rotations_give_distinct_keys)
{
	struct kf_keyring *kr = fresh(1, 0);
	size_t n;

	for (int i = 0; i < 50; i++)
		kr = rotated(kr, i + 1);
	n = kf_keyring_count(kr);
	cr_assert_eq(n, 51);
	cr_assert_eq(kf_keyring_current_version(kr), 51);
	for (size_t i = 0; i < n; i++) {
		const struct kf_keyring_entry *a = kf_keyring_at(kr, i);

		cr_assert_eq(a->version, 51 - i, "entries not newest first");
		for (size_t j = i + 1; j < n; j++)
			cr_assert(!same_key(a->key, kf_keyring_at(kr, j)->key),
				  "versions %zu and %zu share a key", 51 - i,
				  51 - j);
	}
	kf_keyring_unref(kr);
}

Test(keyring, rotation_refuses_exhausted_counter)
{
	uint8_t key[KF_KEY_BYTES] = {7};
	struct kf_keyring *kr = NULL, *nk = NULL;

	cr_assert(kf_keyring_new(UINT32_MAX, key, 0, UINT32_MAX, &kr) == 0);
	cr_assert_eq(kf_keyring_rotate(kr, 1, &nk), -EOVERFLOW);
	kf_keyring_unref(kr);
	/* A lower current does not help once the counter is spent. */
	cr_assert(kf_keyring_new(5, key, 0, UINT32_MAX, &kr) == 0);
	cr_assert_eq(kf_keyring_rotate(kr, 1, &nk), -EOVERFLOW);
	cr_assert_null(nk);
	kf_keyring_unref(kr);
	cr_assert(kf_keyring_new(5, key, 0, UINT32_MAX - 1, &kr) == 0);
	cr_assert(kf_keyring_rotate(kr, 1, &nk) == 0);
	cr_assert_eq(kf_keyring_current_version(nk), UINT32_MAX);
	kf_keyring_unref(nk);
	kf_keyring_unref(kr);
}

static struct kf_keyring *five_versions(void)
{
	struct kf_keyring *kr = fresh(1, 0);

	for (int i = 0; i < 4; i++)
		kr = rotated(kr, i + 1);
	cr_assert_eq(kf_keyring_count(kr), 5);
	return kr;
}

static void check_trim(struct kf_keyring *kr, unsigned retain, size_t want)
{
	struct kf_keyring *t = NULL;

	cr_assert(kf_keyring_trim(kr, retain, &t) == 0);
	cr_assert_neq(t, NULL);
	cr_assert_eq(kf_keyring_count(t), want, "retain %u kept %zu", retain,
		     kf_keyring_count(t));
	cr_assert_eq(kf_keyring_highest(t), kf_keyring_highest(kr));
	for (size_t i = 0; i < want; i++) {
		cr_assert_eq(kf_keyring_at(t, i)->version,
			     kf_keyring_at(kr, i)->version);
		cr_assert(same_key(kf_keyring_at(t, i)->key,
				   kf_keyring_at(kr, i)->key),
			  "trim changed a kept key");
	}
	kf_keyring_unref(t);
}

Test(keyring, trim_keeps_the_newest)
{
	struct kf_keyring *kr = five_versions(), *t = NULL;

	check_trim(kr, 1, 1);
	check_trim(kr, 2, 2);
	check_trim(kr, 5, 5);
	check_trim(kr, 9, 5);
	cr_assert_eq(kf_keyring_trim(kr, 0, &t), -EINVAL);
	cr_assert_eq(kf_keyring_count(kr), 5, "trim changed its input");
	kf_keyring_unref(kr);
}

Test(keyring, retire_refuses_current_and_unknown)
{
	struct kf_keyring *kr = five_versions(), *nk = NULL;

	cr_assert_eq(kf_keyring_retire(kr, 5, &nk), -EBUSY);
	cr_assert_eq(kf_keyring_retire(kr, 6, &nk), -ENOENT);
	cr_assert_eq(kf_keyring_retire(kr, 0, &nk), -ENOENT);
	cr_assert_null(nk);
	kf_keyring_unref(kr);
}

Test(keyring, retire_removes_a_middle_version)
{
	struct kf_keyring *kr = five_versions(), *nk = NULL;
	uint32_t want[] = {5, 4, 2, 1};

	cr_assert(kf_keyring_retire(kr, 3, &nk) == 0);
	cr_assert_eq(kf_keyring_count(nk), 4);
	cr_assert_null(kf_keyring_find(nk, 3));
	for (size_t i = 0; i < 4; i++) {
		cr_assert_eq(kf_keyring_at(nk, i)->version, want[i]);
		cr_assert(same_key(kf_keyring_at(nk, i)->key,
				   kf_keyring_find(kr, want[i])->key),
			  "retire changed another version's key");
	}
	cr_assert_eq(kf_keyring_highest(nk), 5);
	cr_assert_not_null(kf_keyring_find(kr, 3), "retire changed its input");
	kf_keyring_unref(kr);
	kf_keyring_unref(nk);
}

Test(keyring, version_numbers_are_never_reissued)
{
	struct kf_keyring *kr = fresh(1, 0), *old = NULL, *t = NULL;
	struct kf_keyring *raised = NULL, *nk = NULL;

	kr = rotated(kr, 1); /* 2 */
	old = kf_keyring_ref(kr);
	for (int i = 0; i < 3; i++)
		kr = rotated(kr, 2 + i); /* 5 */
	cr_assert_eq(kf_keyring_current_version(kr), 5);

	cr_assert(kf_keyring_trim(kr, 1, &t) == 0);
	cr_assert_eq(kf_keyring_highest(t), 5, "trim lowered highest");
	cr_assert(kf_keyring_rotate(t, 9, &nk) == 0);
	cr_assert_eq(kf_keyring_current_version(nk), 6);
	kf_keyring_unref(nk);
	kf_keyring_unref(t);

	/* Restore of the older keyring (current 2) that knows about 5. */
	cr_assert_eq(kf_keyring_highest(old), 2);
	cr_assert(kf_keyring_raise_highest(old, 5, &raised) == 0);
	cr_assert_eq(kf_keyring_highest(raised), 5);
	cr_assert_eq(kf_keyring_current_version(raised), 2);
	cr_assert_eq(kf_keyring_count(raised), kf_keyring_count(old));
	cr_assert(
	    same_key(kf_keyring_at(raised, 0)->key, kf_keyring_at(old, 0)->key),
	    "raise_highest changed a key");
	cr_assert(kf_keyring_rotate(raised, 10, &nk) == 0);
	cr_assert_eq(kf_keyring_current_version(nk), 6);
	cr_assert_eq(kf_keyring_highest(nk), 6);
	kf_keyring_unref(raised);

	/* raise_highest never lowers. */
	cr_assert(kf_keyring_raise_highest(nk, 3, &raised) == 0);
	cr_assert_eq(kf_keyring_highest(raised), 6);
	kf_keyring_unref(raised);

	/* Retiring a version does not free its number. */
	cr_assert(kf_keyring_retire(nk, 2, &t) == 0);
	cr_assert(kf_keyring_rotate(t, 11, &raised) == 0);
	cr_assert_eq(kf_keyring_current_version(raised), 7);
	kf_keyring_unref(raised);
	kf_keyring_unref(t);
	kf_keyring_unref(nk);
	kf_keyring_unref(old);
	kf_keyring_unref(kr);
}

Test(keyring, import_current_only)
{
	uint8_t cur[KF_KEY_BYTES];
	struct kf_keyring *kr = NULL;
	char err[KF_ERR_MAX] = "";

	kf_key_generate(cur);
	cr_assert(kf_keyring_import(cur, NULL, 4, 77, &kr, err) == 0, "%s",
		  err);
	cr_assert_eq(kf_keyring_count(kr), 1);
	cr_assert_eq(kf_keyring_current_version(kr), 4);
	cr_assert_eq(kf_keyring_highest(kr), 4);
	cr_assert_eq(kf_keyring_at(kr, 0)->created, 77);
	cr_assert(same_key(kf_keyring_at(kr, 0)->key, cur),
		  "imported current key differs");
	kf_keyring_unref(kr);
	cr_assert(kf_keyring_import(cur, NULL, 1, 77, &kr, err) == 0, "%s",
		  err);
	cr_assert_eq(kf_keyring_current_version(kr), 1);
	kf_keyring_unref(kr);
	sodium_memzero(cur, sizeof(cur));
}

Test(keyring, import_with_previous)
{
	uint8_t cur[KF_KEY_BYTES], prev[KF_KEY_BYTES];
	struct kf_keyring *kr = NULL, *nk = NULL;
	char err[KF_ERR_MAX] = "";

	kf_key_generate(cur);
	kf_key_generate(prev);
	cr_assert(kf_keyring_import(cur, prev, 2, 5, &kr, err) == 0, "%s", err);
	cr_assert_eq(kf_keyring_count(kr), 2);
	cr_assert_eq(kf_keyring_at(kr, 0)->version, 2);
	cr_assert_eq(kf_keyring_at(kr, 1)->version, 1);
	cr_assert_eq(kf_keyring_at(kr, 1)->created, 5);
	cr_assert(same_key(kf_keyring_at(kr, 0)->key, cur),
		  "imported current key differs");
	cr_assert(same_key(kf_keyring_at(kr, 1)->key, prev),
		  "imported previous key differs");
	cr_assert(kf_keyring_rotate(kr, 6, &nk) == 0);
	cr_assert_eq(kf_keyring_current_version(nk), 3);
	kf_keyring_unref(nk);
	kf_keyring_unref(kr);
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(prev, sizeof(prev));
}

Test(keyring, import_refusals)
{
	uint8_t cur[KF_KEY_BYTES], prev[KF_KEY_BYTES];
	struct kf_keyring *kr = NULL;
	char err[KF_ERR_MAX];

	kf_key_generate(cur);
	kf_key_generate(prev);
	err[0] = 0;
	cr_assert_eq(kf_keyring_import(cur, NULL, 0, 0, &kr, err), -EINVAL);
	cr_assert(err[0], "no reason for version 0");
	err[0] = 0;
	cr_assert_eq(kf_keyring_import(cur, prev, 1, 0, &kr, err), -EINVAL);
	cr_assert(err[0], "no reason for previous at version 1");
	err[0] = 0;
	cr_assert_eq(kf_keyring_import(cur, cur, 3, 0, &kr, err), -EINVAL);
	cr_assert(kt_contains(err, "same"), "reason: %s", err);
	cr_assert_eq(kf_keyring_import(cur, prev, 0, 0, &kr, NULL), -EINVAL);
	cr_assert_null(kr);
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(prev, sizeof(prev));
}

static void encoded(struct kf_keyring *kr, uint8_t **buf, size_t *len)
{
	cr_assert(kf_keyring_encode(kr, buf, len) == 0);
}

Test(keyring, encode_decode_round_trip)
{
	struct kf_keyring *kr = five_versions(), *r1 = NULL, *r2 = NULL;
	struct kf_keyring *back = NULL;
	uint8_t *buf, *buf2;
	size_t len, len2;
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_keyring_retire(kr, 2, &r1) == 0);
	cr_assert(kf_keyring_raise_highest(r1, 40, &r2) == 0);
	encoded(r2, &buf, &len);
	/* Header, 4 entries, then the retired list: count 1, version 2. */
	cr_assert_eq(len, 16 + 4 * 44 + 4 + 4);
	cr_assert(memcmp(buf, "KFKR\2\0\0\0\50\0\0\0\4\0\0\0", 16) == 0,
		  "header bytes are not the documented layout");
	cr_assert(memcmp(buf + 16 + 4 * 44, "\1\0\0\0\2\0\0\0", 8) == 0,
		  "the retired list is not the documented layout");
	cr_assert(kf_keyring_decode(buf, len, &back, err) == 0, "%s", err);
	cr_assert_eq(kf_keyring_count(back), 4);
	cr_assert_eq(kf_keyring_highest(back), 40);
	cr_assert(kf_keyring_retired_count(back) == 1 &&
		      kf_keyring_is_retired(back, 2),
		  "the retired version did not survive the round trip");
	for (size_t i = 0; i < 4; i++) {
		const struct kf_keyring_entry *a = kf_keyring_at(r2, i);
		const struct kf_keyring_entry *b = kf_keyring_at(back, i);

		cr_assert_eq(a->version, b->version);
		cr_assert_eq(a->created, b->created);
		cr_assert(same_key(a->key, b->key),
			  "key of entry %zu changed in the round trip", i);
	}
	encoded(back, &buf2, &len2);
	cr_assert(len2 == len && memcmp(buf, buf2, len) == 0,
		  "re-encoding differs");
	sodium_free(buf);
	sodium_free(buf2);
	kf_keyring_unref(back);
	kf_keyring_unref(r2);
	kf_keyring_unref(r1);
	kf_keyring_unref(kr);
}

Test(keyring, encode_keeps_negative_and_large_times)
{
	uint8_t key[KF_KEY_BYTES] = {3};
	struct kf_keyring *kr = NULL, *back = NULL;
	uint8_t *buf;
	size_t len;

	cr_assert(kf_keyring_new(1, key, -12345678901LL, 1, &kr) == 0);
	encoded(kr, &buf, &len);
	cr_assert(kf_keyring_decode(buf, len, &back, NULL) == 0);
	cr_assert_eq(kf_keyring_at(back, 0)->created, -12345678901LL);
	sodium_free(buf);
	kf_keyring_unref(back);
	kf_keyring_unref(kr);
}

static void refused(const uint8_t *buf, size_t len, const char *what)
{
	struct kf_keyring *kr = NULL;
	char err[KF_ERR_MAX] = "";
	int r = kf_keyring_decode(buf, len, &kr, err);

	cr_assert_eq(r, -EBADMSG, "%s: decode returned %d", what, r);
	cr_assert(err[0], "%s: no reason given", what);
	cr_assert_null(kr, "%s: a keyring was returned", what);
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

Test(keyring, decode_refuses_bad_length)
{
	struct kf_keyring *kr = five_versions();
	uint8_t *buf, *big;
	size_t len;

	encoded(kr, &buf, &len);
	for (size_t n = 0; n < len; n++)
		refused(buf, n, "truncated");
	big = calloc(1, len + 44);
	memcpy(big, buf, len);
	refused(big, len + 1, "one byte extra");
	refused(big, len + 44, "one entry extra");
	free(big);
	sodium_free(buf);
	kf_keyring_unref(kr);
}

Test(keyring, decode_refuses_bad_fields)
{
	struct kf_keyring *kr = five_versions();
	uint8_t *buf, *c;
	size_t len;

	encoded(kr, &buf, &len);
	c = malloc(len);

	memcpy(c, buf, len);
	c[0] = 'X';
	refused(c, len, "bad magic");

	memcpy(c, buf, len);
	put32(c + 4, 3);
	refused(c, len, "format 3");

	memcpy(c, buf, len);
	put32(c + 12, 0);
	refused(c, 16, "count 0");
	put32(c + 12, KF_KEYRING_MAX_VERSIONS + 1);
	refused(c, len, "count above the maximum");
	put32(c + 12, 4);
	refused(c, len, "count 4 with 5 entries");

	/* Entry versions are 5,4,3,2,1 at offsets 16 + 44 i. */
	memcpy(c, buf, len);
	put32(c + 16 + 44, 5);
	refused(c, len, "equal versions");
	put32(c + 16 + 44, 6);
	refused(c, len, "increasing versions");
	memcpy(c, buf, len);
	put32(c + 16 + 4 * 44, 0);
	refused(c, len, "version 0");

	memcpy(c, buf, len);
	put32(c + 8, 4);
	refused(c, len, "highest below current");

	free(c);
	sodium_free(buf);
	kf_keyring_unref(kr);
}

Test(keyring, decode_reads_format_1_without_a_retired_list)
{
	struct kf_keyring *kr = five_versions(), *back = NULL;
	uint8_t *buf;
	size_t len;
	char err[KF_ERR_MAX] = "";

	encoded(kr, &buf, &len);
	/* Format 1 is format 2 without the retired list. */
	put32(buf + 4, 1);
	cr_assert(kf_keyring_decode(buf, len - 4, &back, err) == 0, "%s", err);
	cr_assert_eq(kf_keyring_count(back), 5);
	cr_assert_eq(kf_keyring_retired_count(back), 0);
	refused(buf, len, "format 1 with a retired list");
	sodium_free(buf);
	kf_keyring_unref(back);
	kf_keyring_unref(kr);
}

Test(keyring, decode_refuses_a_bad_retired_list)
{
	struct kf_keyring *kr = five_versions(), *r1 = NULL, *r2 = NULL;
	uint8_t *buf;
	size_t len, at;

	/* Retired 2 and 3: the list is 2, 3 after the 3 entries. */
	cr_assert(kf_keyring_retire(kr, 2, &r1) == 0);
	cr_assert(kf_keyring_retire(r1, 3, &r2) == 0);
	encoded(r2, &buf, &len);
	at = 16 + 3 * 44;
	put32(buf + at + 4, 3);
	refused(buf, len, "retired list not ascending");
	put32(buf + at + 4, 2);
	put32(buf + at + 8, 4);
	refused(buf, len, "a held version listed as retired");
	put32(buf + at + 8, 99);
	refused(buf, len, "a retired version above highest");
	put32(buf + at + 8, 0);
	refused(buf, len, "retired version 0");
	put32(buf + at + 8, 3);
	put32(buf + at, KF_KEYRING_MAX_RETIRED + 1);
	refused(buf, len, "too many retired");
	sodium_free(buf);
	kf_keyring_unref(r2);
	kf_keyring_unref(r1);
	kf_keyring_unref(kr);
}

Test(keyring, adopt_retired_keeps_retired_keys_out_unless_forced)
{
	struct kf_keyring *kr = five_versions(), *now = NULL, *r1 = NULL;
	struct kf_keyring *got = NULL;

	/* `now` retired 2 after the archive `kr` (5..1) was taken. */
	cr_assert(kf_keyring_retire(kr, 2, &r1) == 0);
	cr_assert(kf_keyring_rotate(r1, 100, &now) == 0);
	cr_assert(kf_keyring_adopt_retired(kr, now, false, &got) == 0);
	/* Only 2 was left out. */
	cr_assert_eq(kf_keyring_count(got), kf_keyring_count(kr) - 1);
	cr_assert_null(kf_keyring_find(got, 2), "a retired key came back");
	cr_assert(kf_keyring_is_retired(got, 2));
	cr_assert_eq(kf_keyring_highest(got), 6, "highest went down");
	kf_keyring_unref(got);
	/* Forced: it is back and no longer retired. */
	cr_assert(kf_keyring_adopt_retired(kr, now, true, &got) == 0);
	cr_assert(kf_keyring_count(got) == kf_keyring_count(kr) &&
		  kf_keyring_find(got, 2));
	cr_assert(!kf_keyring_is_retired(got, 2));
	kf_keyring_unref(got);
	/* An archive whose current version was retired: refused. */
	kf_keyring_unref(r1);
	cr_assert(kf_keyring_retire(now, 5, &r1) == 0);
	cr_assert(kf_keyring_adopt_retired(kr, r1, false, &got) == -EBUSY);
	kf_keyring_unref(r1);
	kf_keyring_unref(now);
	kf_keyring_unref(kr);
}

Test(keyring, decode_refuses_every_header_bit_flip)
{
	struct kf_keyring *kr = five_versions(), *ok = NULL;
	uint8_t *buf, *c;
	size_t len;
	char what[64];

	encoded(kr, &buf, &len);
	c = malloc(len);
	for (size_t i = 0; i < 16; i++) {
		/* Raising `highest` is valid by design; lowering it is not. */
		if (i >= 8 && i < 12)
			continue;
		for (int bit = 0; bit < 8; bit++) {
			memcpy(c, buf, len);
			c[i] ^= (uint8_t)(1u << bit);
			snprintf(what, sizeof(what), "byte %zu bit %d", i, bit);
			refused(c, len, what);
		}
	}
	/* highest = 5 (0b101): clearing either set bit drops below 5. */
	for (int bit = 0; bit < 3; bit += 2) {
		memcpy(c, buf, len);
		c[8] ^= (uint8_t)(1u << bit);
		snprintf(what, sizeof(what), "highest bit %d", bit);
		refused(c, len, what);
	}
	memcpy(c, buf, len);
	c[11] ^= 0x80;
	cr_assert(kf_keyring_decode(c, len, &ok, NULL) == 0,
		  "a raised highest must decode");
	cr_assert_eq(kf_keyring_highest(ok), 0x80000005u);
	kf_keyring_unref(ok);
	free(c);
	sodium_free(buf);
	kf_keyring_unref(kr);
}

Test(keyring, rotation_refuses_a_full_keyring)
{
	size_t n = KF_KEYRING_MAX_VERSIONS, len = 16 + n * 44;
	uint8_t *buf = calloc(1, len);
	struct kf_keyring *kr = NULL, *nk = NULL, *t = NULL;

	memcpy(buf, "KFKR", 4);
	put32(buf + 4, 1);
	put32(buf + 8, (uint32_t)n);
	put32(buf + 12, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		put32(buf + 16 + 44 * i, (uint32_t)(n - i));
		/* Distinct non-zero keys. */
		put32(buf + 16 + 44 * i + 12, (uint32_t)i + 1);
	}
	cr_assert(kf_keyring_decode(buf, len, &kr, NULL) == 0);
	cr_assert_eq(kf_keyring_count(kr), n);
	cr_assert_eq(kf_keyring_rotate(kr, 1, &nk), -E2BIG);
	cr_assert_null(nk);
	cr_assert(kf_keyring_trim(kr, (unsigned)n - 1, &t) == 0);
	cr_assert(kf_keyring_rotate(t, 1, &nk) == 0);
	cr_assert_eq(kf_keyring_count(nk), n);
	kf_keyring_unref(nk);
	kf_keyring_unref(t);
	kf_keyring_unref(kr);
	free(buf);
}

/* --- the staged entry (README: Staged rotation) ----------------------- */

static struct kf_keyring *staged(struct kf_keyring *kr, int64_t now)
{
	struct kf_keyring *nk = NULL;

	cr_assert(kf_keyring_stage(kr, now, &nk) == 0);
	return nk;
}

Test(keyring, stage_adds_a_next_version_that_is_not_current)
{
	struct kf_keyring *kr = five_versions(), *st = staged(kr, 777);
	const struct kf_keyring_entry *s = kf_keyring_staged(st);

	cr_assert_null(kf_keyring_staged(kr), "the old keyring changed");
	cr_assert_not_null(s);
	cr_assert_eq(s->version, kf_keyring_highest(kr) + 1);
	cr_assert_eq(s->created, 777);
	cr_assert_eq(kf_keyring_highest(st), s->version);
	cr_assert_eq(kf_keyring_current_version(st),
		     kf_keyring_current_version(kr), "current moved");
	cr_assert_eq(kf_keyring_count(st), kf_keyring_count(kr),
		     "the staged entry counts among the entries");
	cr_assert_null(kf_keyring_find(st, s->version));
	cr_assert(kf_keyring_lookup(st, s->version) == s);
	for (size_t i = 0; i < kf_keyring_count(st); i++)
		cr_assert(!same_key(kf_keyring_at(st, i)->key, s->key),
			  "the staged key equals a held key");
	kf_keyring_unref(st);
	kf_keyring_unref(kr);
}

Test(keyring, stage_twice_and_rotate_while_staged_are_refused)
{
	struct kf_keyring *kr = five_versions(), *st = staged(kr, 1);
	struct kf_keyring *nk = NULL;
	uint32_t v = kf_keyring_staged(st)->version;

	cr_assert_eq(kf_keyring_stage(st, 2, &nk), -EBUSY);
	cr_assert_eq(kf_keyring_rotate(st, 2, &nk), -EBUSY);
	cr_assert_eq(kf_keyring_retire(st, v, &nk), -EBUSY);
	cr_assert_null(nk);
	cr_assert_eq(kf_keyring_promote(kr, &nk), -ENOENT);
	cr_assert_eq(kf_keyring_abort(kr, &nk), -ENOENT);
	kf_keyring_unref(st);
	kf_keyring_unref(kr);
}

Test(keyring, promote_makes_the_staged_key_current)
{
	struct kf_keyring *kr = five_versions(), *st = staged(kr, 99);
	struct kf_keyring *pr = NULL;
	const struct kf_keyring_entry *s = kf_keyring_staged(st), *c;

	cr_assert(kf_keyring_promote(st, &pr) == 0);
	c = kf_keyring_at(pr, 0);
	cr_assert_eq(c->version, s->version);
	cr_assert_eq(c->created, 99);
	cr_assert(same_key(c->key, s->key), "current is not the staged key");
	cr_assert_eq(kf_keyring_at(pr, 1)->version,
		     kf_keyring_current_version(kr),
		     "previous is not the "
		     "old current");
	cr_assert_null(kf_keyring_staged(pr));
	cr_assert_eq(kf_keyring_count(pr), kf_keyring_count(kr) + 1);
	kf_keyring_unref(pr);
	kf_keyring_unref(st);
	kf_keyring_unref(kr);
}

Test(keyring, abort_destroys_and_never_reissues_the_number)
{
	struct kf_keyring *kr = five_versions(), *st = staged(kr, 1);
	struct kf_keyring *ab = NULL, *next = NULL;
	uint32_t v = kf_keyring_staged(st)->version;

	cr_assert(kf_keyring_abort(st, &ab) == 0);
	cr_assert_null(kf_keyring_staged(ab));
	cr_assert_null(kf_keyring_lookup(ab, v));
	cr_assert(kf_keyring_is_retired(ab, v), "aborted number forgotten");
	cr_assert_eq(kf_keyring_highest(ab), v);
	cr_assert(kf_keyring_rotate(ab, 2, &next) == 0);
	cr_assert_eq(kf_keyring_current_version(next), v + 1,
		     "the aborted number was issued again");
	kf_keyring_unref(next);
	/* A restore of an archive taken while it was staged: left out. */
	cr_assert(kf_keyring_adopt_retired(st, ab, false, &next) == 0);
	cr_assert_null(kf_keyring_staged(next), "an aborted key came back");
	kf_keyring_unref(next);
	cr_assert(kf_keyring_adopt_retired(st, ab, true, &next) == 0);
	cr_assert_not_null(kf_keyring_staged(next));
	cr_assert(!kf_keyring_is_retired(next, v));
	kf_keyring_unref(next);
	kf_keyring_unref(ab);
	kf_keyring_unref(st);
	kf_keyring_unref(kr);
}

Test(keyring, trim_and_retire_keep_the_staged_entry_uncounted)
{
	struct kf_keyring *kr = five_versions(), *st = staged(kr, 1);
	struct kf_keyring *tr = NULL, *re = NULL;
	const struct kf_keyring_entry *s = kf_keyring_staged(st);

	cr_assert(kf_keyring_trim(st, 2, &tr) == 0);
	cr_assert_eq(kf_keyring_count(tr), 2, "the staged entry was counted");
	cr_assert_eq(kf_keyring_current_version(tr),
		     kf_keyring_current_version(kr));
	cr_assert(kf_keyring_staged(tr) &&
		  same_key(kf_keyring_staged(tr)->key, s->key));
	cr_assert(kf_keyring_retire(tr, kf_keyring_at(tr, 1)->version, &re) ==
		  0);
	cr_assert(kf_keyring_staged(re) &&
		  kf_keyring_staged(re)->version == s->version);
	kf_keyring_unref(re);
	kf_keyring_unref(tr);
	kf_keyring_unref(st);
	kf_keyring_unref(kr);
}

Test(keyring, staged_encoding_round_trips_and_old_formats_still_read)
{
	struct kf_keyring *kr = five_versions(), *st = staged(kr, -5);
	struct kf_keyring *back = NULL;
	const struct kf_keyring_entry *s = kf_keyring_staged(st), *b;
	uint8_t *buf, *plain;
	size_t len, plain_len;
	char err[KF_ERR_MAX] = "";

	encoded(kr, &plain, &plain_len);
	cr_assert_eq(plain[4], 2, "nothing staged must stay format 2");
	encoded(st, &buf, &len);
	cr_assert_eq(buf[4], 3, "a staged keyring is not format 3");
	cr_assert_eq(len, plain_len + 4 + 44);
	cr_assert(memcmp(buf + plain_len, "\1\0\0\0", 4) == 0);
	cr_assert(kf_keyring_decode(buf, len, &back, err) == 0, "%s", err);
	b = kf_keyring_staged(back);
	cr_assert(b && b->version == s->version && b->created == -5 &&
		      same_key(b->key, s->key),
		  "the staged entry changed");
	kf_keyring_unref(back);
	/* Format 2 (an older state) still reads, with nothing staged. */
	cr_assert(kf_keyring_decode(plain, plain_len, &back, err) == 0, "%s",
		  err);
	cr_assert_null(kf_keyring_staged(back));
	kf_keyring_unref(back);
	/* Defects are refused. */
	refused(buf, len - 1, "staged entry cut short");
	put32(buf + plain_len, 2);
	refused(buf, len, "two staged entries");
	put32(buf + plain_len, 1);
	put32(buf + plain_len + 4, kf_keyring_current_version(kr));
	refused(buf, len, "staged version not above current");
	put32(buf + plain_len + 4, s->version + 1);
	refused(buf, len, "staged version above highest");
	put32(buf + 4, 2);
	refused(buf, len, "format 2 with a staged entry");
	sodium_free(buf);
	sodium_free(plain);
	kf_keyring_unref(st);
	kf_keyring_unref(kr);
}
