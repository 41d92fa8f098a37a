// SPDX-License-Identifier: MIT
/*
 * cluster_blob: the sealed keyring blob that etcd holds (format in
 * cluster.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "aead.h"
#include "cluster.h"
#include "key.h"

#define CL_MAGIC "KEYFSCL" /* with its NUL: 8 bytes */
#define CL_MAGIC_LEN 8
#define CL_FORMAT 1u
#define CL_OFF_FORMAT 8
#define CL_OFF_LEN 12
#define CL_OFF_GEN 16
#define CL_OFF_ID 24
#define CL_OFF_CREATED 40
#define CL_OFF_VERSION 48
#define CL_OFF_CHANGE 52
#define CL_OFF_NODE_LEN 53
#define CL_OFF_NODE 54
#define CL_NODE_FIELD 64
#define CL_OFF_KCV 118
#define CL_KCV_LEN 16
#define CL_OFF_NONCE 134
#define CL_TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES
#define CL_KCV_MSG "keyfs.cluster.kcv"

_Static_assert(CL_OFF_NONCE + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES ==
		   KF_CLUSTER_HEADER_LEN,
	       "the header ends with the nonce");
_Static_assert(CL_NODE_FIELD >= KF_NODE_NAME_MAX + 1, "a node name fits");
_Static_assert(KF_CLUSTER_KEY_BYTES ==
		   crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
	       "the cluster key is an XChaCha20-Poly1305 key");

const char *kf_cluster_change_name(enum kf_cluster_change c)
{
	switch (c) {
	case KF_CHANGE_INIT:
		return "init";
	case KF_CHANGE_ROTATE:
		return "rotate";
	case KF_CHANGE_RETIRE:
		return "retire";
	case KF_CHANGE_RESTORE:
		return "restore";
	case KF_CHANGE_STAGE:
		return "stage";
	case KF_CHANGE_PROMOTE:
		return "promote";
	case KF_CHANGE_ABORT:
		return "abort";
	case KF_CHANGE_REKEY:
		return "rekey";
	}
	return "unknown";
}

static void cluster_kcv(const uint8_t key[KF_CLUSTER_KEY_BYTES],
			uint8_t kcv[CL_KCV_LEN])
{
	crypto_generichash(kcv, CL_KCV_LEN, (const uint8_t *)CL_KCV_MSG,
			   strlen(CL_KCV_MSG), key, KF_CLUSTER_KEY_BYTES);
	kf_key_wipe_stack(KF_KEY_WIPE_CALL); /* BLAKE2b keyed with key */
}

/* Header bytes followed by the prefix: the associated data (malloc'd). */
static uint8_t *associated(const uint8_t *header, const char *prefix,
			   size_t *ret_len)
{
	size_t plen = strlen(prefix);
	uint8_t *ad = malloc(KF_CLUSTER_HEADER_LEN + plen);

	if (ad) {
		memcpy(ad, header, KF_CLUSTER_HEADER_LEN);
		memcpy(ad + KF_CLUSTER_HEADER_LEN, prefix, plen);
		*ret_len = KF_CLUSTER_HEADER_LEN + plen;
	}
	return ad;
}

static bool node_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > KF_NODE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

int kf_cluster_seal(const uint8_t key[KF_CLUSTER_KEY_BYTES], const char *prefix,
		    const struct kf_cluster_info *info,
		    const struct kf_keyring *kr, uint8_t **ret, size_t *ret_len,
		    char err[KF_ERR_MAX])
{
	size_t nlen = strlen(info->node), adlen = 0, total;
	uint8_t *plain = NULL, *blob = NULL, *ad = NULL;
	size_t plen = 0;
	int r;

	if (!node_name_ok(info->node, nlen)) {
		kf_err_set(err, "bad node name \"%s\"", info->node);
		return -EINVAL;
	}
	r = kf_keyring_encode(kr, &plain, &plen);
	if (r < 0) {
		kf_err_set(err, "cannot encode the keyring: %s", strerror(-r));
		return r;
	}
	total = KF_CLUSTER_HEADER_LEN + plen + CL_TAG_LEN;
	if (total > KF_CLUSTER_BLOB_MAX) {
		kf_err_set(err,
			   "the sealed keyring would be %zu bytes, over the "
			   "cluster's limit of %d; retire old versions",
			   total, KF_CLUSTER_BLOB_MAX);
		r = -EFBIG;
		goto out;
	}
	blob = calloc(1, total);
	if (!blob)
		goto nomem;
	memcpy(blob, CL_MAGIC, CL_MAGIC_LEN);
	kf_le_put32(blob + CL_OFF_FORMAT, CL_FORMAT);
	kf_le_put32(blob + CL_OFF_LEN, (uint32_t)(plen + CL_TAG_LEN));
	kf_le_put64(blob + CL_OFF_GEN, info->generation);
	memcpy(blob + CL_OFF_ID, info->cluster_id, KF_CLUSTER_ID_BYTES);
	kf_le_put64(blob + CL_OFF_CREATED, (uint64_t)info->created);
	kf_le_put32(blob + CL_OFF_VERSION, kf_keyring_current_version(kr));
	blob[CL_OFF_CHANGE] = (uint8_t)info->change;
	blob[CL_OFF_NODE_LEN] = (uint8_t)nlen;
	memcpy(blob + CL_OFF_NODE, info->node, nlen);
	cluster_kcv(key, blob + CL_OFF_KCV);
	randombytes_buf(blob + CL_OFF_NONCE,
			crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	ad = associated(blob, prefix, &adlen);
	if (!ad)
		goto nomem;
	crypto_aead_xchacha20poly1305_ietf_encrypt(
	    blob + KF_CLUSTER_HEADER_LEN, NULL, plain, plen, ad, adlen, NULL,
	    blob + CL_OFF_NONCE, key);
	kf_key_wipe_stack(KF_KEY_WIPE_CALL);
	*ret = blob;
	*ret_len = total;
	blob = NULL;
	r = 0;
	goto out;
nomem:
	kf_err_set(err, "out of memory");
	r = -ENOMEM;
out:
	free(ad);
	free(blob);
	sodium_free(plain);
	return r;
}

bool kf_cluster_sealed_under(const uint8_t key[KF_CLUSTER_KEY_BYTES],
			     const uint8_t *blob, size_t len)
{
	uint8_t kcv[CL_KCV_LEN];
	bool yes;

	if (len < KF_CLUSTER_HEADER_LEN)
		return false;
	cluster_kcv(key, kcv);
	yes = sodium_memcmp(kcv, blob + CL_OFF_KCV, CL_KCV_LEN) == 0;
	sodium_memzero(kcv, sizeof(kcv));
	return yes;
}

int kf_cluster_peek(const uint8_t *blob, size_t len,
		    struct kf_cluster_info *ret_info, char err[KF_ERR_MAX])
{
	size_t head = len < CL_MAGIC_LEN ? len : CL_MAGIC_LEN;
	uint64_t expected;
	uint32_t format;
	size_t nlen;

	if (memcmp(blob, CL_MAGIC, head) != 0 || len == 0) {
		kf_err_set(err, "not a keyfs cluster keyring");
		return -EBADMSG;
	}
	if (len < KF_CLUSTER_HEADER_LEN + CL_TAG_LEN) {
		kf_err_set(err, "truncated cluster keyring (%zu bytes)", len);
		return -EBADMSG;
	}
	format = kf_le_get32(blob + CL_OFF_FORMAT);
	if (format != CL_FORMAT) {
		kf_err_set(err, "unsupported cluster keyring format %u",
			   format);
		return -EBADMSG;
	}
	expected =
	    (uint64_t)KF_CLUSTER_HEADER_LEN + kf_le_get32(blob + CL_OFF_LEN);
	if (len != expected) {
		kf_err_set(err, "%s cluster keyring (%zu bytes, expected %llu)",
			   len < expected ? "truncated" : "overlong", len,
			   (unsigned long long)expected);
		return -EBADMSG;
	}
	nlen = blob[CL_OFF_NODE_LEN];
	if (!node_name_ok((const char *)blob + CL_OFF_NODE, nlen)) {
		kf_err_set(err, "cluster keyring with a bad node name");
		return -EBADMSG;
	}
	memset(ret_info, 0, sizeof(*ret_info));
	ret_info->generation = kf_le_get64(blob + CL_OFF_GEN);
	memcpy(ret_info->cluster_id, blob + CL_OFF_ID, KF_CLUSTER_ID_BYTES);
	ret_info->created = (int64_t)kf_le_get64(blob + CL_OFF_CREATED);
	ret_info->version = kf_le_get32(blob + CL_OFF_VERSION);
	ret_info->change = (enum kf_cluster_change)blob[CL_OFF_CHANGE];
	memcpy(ret_info->node, blob + CL_OFF_NODE, nlen);
	return 0;
}

int kf_cluster_unseal(const uint8_t key[KF_CLUSTER_KEY_BYTES],
		      const char *prefix, const uint8_t *blob, size_t len,
		      struct kf_cluster_info *ret_info, struct kf_keyring **ret,
		      char err[KF_ERR_MAX])
{
	struct kf_cluster_info info;
	uint8_t kcv[CL_KCV_LEN], *plain = NULL, *ad = NULL;
	unsigned long long plen = 0;
	struct kf_keyring *kr = NULL;
	size_t adlen = 0, clen;
	int r;

	r = kf_cluster_peek(blob, len, &info, err);
	if (r < 0)
		return r;
	cluster_kcv(key, kcv);
	r = kf_mac_equal(kcv, blob + CL_OFF_KCV, CL_KCV_LEN) ? 0 : -EBADMSG;
	sodium_memzero(kcv, sizeof(kcv));
	if (r < 0) {
		kf_err_set(err, "cluster keyring: wrong master key or "
				"corrupted header");
		return -EBADMSG;
	}
	clen = len - KF_CLUSTER_HEADER_LEN;
	ad = associated(blob, prefix, &adlen);
	plain = sodium_malloc(clen + 1);
	if (!ad || !plain) {
		kf_err_set(err, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	if (kf_aead_open(plain, &plen, blob + KF_CLUSTER_HEADER_LEN, clen, ad,
			 adlen, blob + CL_OFF_NONCE, key) < 0) {
		kf_key_wipe_stack(KF_KEY_WIPE_CALL);
		kf_err_set(err, "cluster keyring: authentication failed "
				"(tampered, or sealed for another prefix)");
		r = -EBADMSG;
		goto out;
	}
	kf_key_wipe_stack(KF_KEY_WIPE_CALL);
	r = kf_keyring_decode(plain, (size_t)plen, &kr, err);
	if (r < 0) {
		kf_err_prefix(err, "cluster keyring: ");
		goto out;
	}
	if (kf_keyring_current_version(kr) != info.version) {
		kf_err_set(err,
			   "cluster keyring: its header says version %u, "
			   "its keyring holds %u",
			   info.version, kf_keyring_current_version(kr));
		kr = kf_keyring_unref(kr);
		r = -EBADMSG;
		goto out;
	}
	if (ret_info)
		*ret_info = info;
	*ret = kr;
out:
	free(ad);
	if (plain)
		sodium_free(plain);
	return r;
}
