// SPDX-License-Identifier: MIT
/* state: the sealed state's plaintext, an audit anchor and a keyring. */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "state.h"

int kf_state_encode(const struct kf_keyring *kr,
		    const struct kf_audit_anchor *anchor, uint8_t **ret,
		    size_t *ret_len, char err[KF_ERR_MAX])
{
	uint8_t *blob = NULL, *plain;
	size_t len = 0;
	int r;

	r = kf_keyring_encode(kr, &blob, &len);
	if (r < 0) {
		kf_err_set(err, "cannot encode keyring: %s", strerror(-r));
		return r;
	}
	plain = sodium_malloc(KF_STATE_ANCHOR_BYTES + len);
	if (!plain) {
		sodium_free(blob);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_le_put64(plain, anchor->seq);
	memcpy(plain + 8, anchor->chain, KF_AUDIT_CHAIN_BYTES);
	memcpy(plain + KF_STATE_ANCHOR_BYTES, blob, len);
	sodium_free(blob);
	*ret = plain;
	*ret_len = KF_STATE_ANCHOR_BYTES + len;
	return 0;
}

int kf_state_decode(const uint8_t *plain, size_t len,
		    struct kf_audit_anchor *ret_anchor, struct kf_keyring **ret,
		    char err[KF_ERR_MAX])
{
	int r;

	if (len < KF_STATE_ANCHOR_BYTES) {
		kf_err_set(err, "state too short");
		return -EBADMSG;
	}
	r = kf_keyring_decode(plain + KF_STATE_ANCHOR_BYTES,
			      len - KF_STATE_ANCHOR_BYTES, ret, err);
	if (r < 0)
		return r;
	ret_anchor->seq = kf_le_get64(plain);
	memcpy(ret_anchor->chain, plain + 8, KF_AUDIT_CHAIN_BYTES);
	return 0;
}
