// SPDX-License-Identifier: MIT
/* state: the sealed state's plaintext, an audit anchor and a keyring. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <sodium.h>

#include "state.h"

#define CLUSTER_MAGIC "KEYFSCL" /* cluster.h: a blob starts with it */

int kf_state_encode_bytes(const uint8_t *payload, size_t len,
			  const struct kf_audit_anchor *anchor, uint8_t **ret,
			  size_t *ret_len, char err[KF_ERR_MAX])
{
	uint8_t *plain = sodium_malloc(KF_STATE_ANCHOR_BYTES + len);

	if (!plain) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_le_put64(plain, anchor->seq);
	memcpy(plain + 8, anchor->chain, KF_AUDIT_CHAIN_BYTES);
	memcpy(plain + KF_STATE_ANCHOR_BYTES, payload, len);
	*ret = plain;
	*ret_len = KF_STATE_ANCHOR_BYTES + len;
	return 0;
}

int kf_state_encode(const struct kf_keyring *kr,
		    const struct kf_audit_anchor *anchor, uint8_t **ret,
		    size_t *ret_len, char err[KF_ERR_MAX])
{
	uint8_t *blob = NULL;
	size_t len = 0;
	int r;

	r = kf_keyring_encode(kr, &blob, &len);
	if (r < 0) {
		kf_err_set(err, "cannot encode keyring: %s", strerror(-r));
		return r;
	}
	r = kf_state_encode_bytes(blob, len, anchor, ret, ret_len, err);
	sodium_free(blob);
	return r;
}

int kf_state_anchor(const uint8_t *plain, size_t len,
		    struct kf_audit_anchor *ret_anchor, char err[KF_ERR_MAX])
{
	if (len < KF_STATE_ANCHOR_BYTES) {
		kf_err_set(err, "state too short");
		return -EBADMSG;
	}
	ret_anchor->seq = kf_le_get64(plain);
	memcpy(ret_anchor->chain, plain + 8, KF_AUDIT_CHAIN_BYTES);
	return 0;
}

static bool holds_cluster_copy(const uint8_t *plain, size_t len)
{
	return len >= KF_STATE_ANCHOR_BYTES + sizeof(CLUSTER_MAGIC) &&
	       memcmp(plain + KF_STATE_ANCHOR_BYTES, CLUSTER_MAGIC,
		      sizeof(CLUSTER_MAGIC)) == 0;
}

int kf_state_decode(const uint8_t *plain, size_t len,
		    struct kf_audit_anchor *ret_anchor, struct kf_keyring **ret,
		    char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	int r = kf_state_anchor(plain, len, &anchor, err);

	if (r < 0)
		return r;
	if (holds_cluster_copy(plain, len)) {
		kf_err_set(err, "the state holds a cluster node's copy of a "
				"cluster keyring (store = etcd), not a "
				"single-node keyring");
		return -EMEDIUMTYPE;
	}
	r = kf_keyring_decode(plain + KF_STATE_ANCHOR_BYTES,
			      len - KF_STATE_ANCHOR_BYTES, ret, err);
	if (r < 0)
		return r;
	*ret_anchor = anchor;
	return 0;
}

int kf_state_decode_cluster(const uint8_t *plain, size_t len,
			    struct kf_audit_anchor *ret_anchor,
			    const uint8_t **ret_blob, size_t *ret_blob_len,
			    char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	int r = kf_state_anchor(plain, len, &anchor, err);

	if (r < 0)
		return r;
	if (!holds_cluster_copy(plain, len)) {
		kf_err_set(err, "the state holds a single-node keyring; move "
				"it into the cluster with `keyfs cluster init "
				"--from-state`, or use store = file");
		return -EMEDIUMTYPE;
	}
	*ret_anchor = anchor;
	*ret_blob = plain + KF_STATE_ANCHOR_BYTES;
	*ret_blob_len = len - KF_STATE_ANCHOR_BYTES;
	return 0;
}
