// SPDX-License-Identifier: MIT
/*
 * core/cluster_blob.c: the keyring as etcd holds it -- sealed, bound to its
 * prefix, its header readable without the key.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cluster.h"
#include "keyring.h"

#define PREFIX "/keyfs/unit"

static uint8_t key[KF_CLUSTER_KEY_BYTES];

static void setup(void)
{
	cr_assert(sodium_init() >= 0);
	randombytes_buf(key, sizeof(key));
}

TestSuite(cluster_blob, .init = setup);

/* A keyring at version 3 (versions 3 and 2). */
static struct kf_keyring *keyring3(void)
{
	uint8_t k[KF_KEY_BYTES];
	struct kf_keyring *a = NULL, *b = NULL;

	randombytes_buf(k, sizeof(k));
	cr_assert_eq(kf_keyring_new(2, k, 1000, 2, &a), 0);
	cr_assert_eq(kf_keyring_rotate(a, 2000, &b), 0);
	kf_keyring_unref(a);
	sodium_memzero(k, sizeof(k));
	return b;
}

static struct kf_cluster_info info_of(uint64_t gen, const char *node)
{
	struct kf_cluster_info i = {.generation = gen,
				    .created = 1700000000,
				    .change = KF_CHANGE_ROTATE};

	memset(i.cluster_id, 0xab, sizeof(i.cluster_id));
	snprintf(i.node, sizeof(i.node), "%s", node);
	return i;
}

static uint8_t *seal(const struct kf_keyring *kr, size_t *len)
{
	struct kf_cluster_info i = info_of(7, "node-a");
	char err[KF_ERR_MAX] = "";
	uint8_t *blob = NULL;

	cr_assert_eq(kf_cluster_seal(key, PREFIX, &i, kr, &blob, len, err), 0,
		     "%s", err);
	return blob;
}

Test(cluster_blob, round_trip_keeps_header_and_keys)
{
	struct kf_keyring *kr = keyring3(), *back = NULL;
	struct kf_cluster_info i, peeked;
	char err[KF_ERR_MAX] = "";
	size_t len = 0;
	uint8_t *blob = seal(kr, &len);

	cr_assert_eq(kf_cluster_peek(blob, len, &peeked, err), 0, "%s", err);
	cr_assert_eq(peeked.generation, 7);
	cr_assert_eq(peeked.version, 3);
	cr_assert_str_eq(peeked.node, "node-a");
	cr_assert_eq(kf_cluster_unseal(key, PREFIX, blob, len, &i, &back, err),
		     0, "%s", err);
	cr_assert_eq(i.generation, 7);
	cr_assert_eq(i.change, KF_CHANGE_ROTATE);
	cr_assert_eq(kf_keyring_count(back), 2);
	for (size_t n = 0; n < 2; n++)
		cr_assert(sodium_memcmp(kf_keyring_at(kr, n)->key,
					kf_keyring_at(back, n)->key,
					KF_KEY_BYTES) == 0);
	kf_keyring_unref(back);
	kf_keyring_unref(kr);
	free(blob);
}

/* Unseal must fail with -EBADMSG and a reason holding `why`. */
static void refused(const uint8_t *k, const char *prefix, const uint8_t *blob,
		    size_t len, const char *why)
{
	struct kf_keyring *kr = NULL;
	char err[KF_ERR_MAX] = "";

	cr_assert_eq(kf_cluster_unseal(k, prefix, blob, len, NULL, &kr, err),
		     -EBADMSG, "accepted (%s)", why);
	cr_assert_null(kr);
	cr_assert(strstr(err, why), "\"%s\" lacks \"%s\"", err, why);
}

Test(cluster_blob, another_key_prefix_or_a_flipped_byte_is_refused)
{
	struct kf_keyring *kr = keyring3();
	uint8_t other[KF_CLUSTER_KEY_BYTES];
	size_t len = 0;
	uint8_t *blob = seal(kr, &len);

	randombytes_buf(other, sizeof(other));
	refused(other, PREFIX, blob, len, "wrong master key");
	refused(key, "/keyfs/other", blob, len, "another prefix");
	/* Every byte of header and ciphertext is covered. */
	for (size_t at = 8; at < len; at += 7) {
		blob[at] ^= 0x01;
		refused(key, PREFIX, blob, len, "");
		blob[at] ^= 0x01;
	}
	refused(key, PREFIX, blob, len - 1, "truncated");
	refused(key, PREFIX, (const uint8_t *)"garbage", 7,
		"not a keyfs cluster keyring");
	kf_keyring_unref(kr);
	free(blob);
}

Test(cluster_blob, bad_node_names_are_refused_when_sealing)
{
	struct kf_keyring *kr = keyring3();
	struct kf_cluster_info i = info_of(1, "-starts-badly");
	char err[KF_ERR_MAX] = "";
	uint8_t *blob = NULL;
	size_t len = 0;

	cr_assert_eq(kf_cluster_seal(key, PREFIX, &i, kr, &blob, &len, err),
		     -EINVAL);
	cr_assert_null(blob);
	i = info_of(1, "");
	cr_assert_eq(kf_cluster_seal(key, PREFIX, &i, kr, &blob, &len, err),
		     -EINVAL);
	kf_keyring_unref(kr);
}
