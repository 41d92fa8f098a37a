/* SPDX-License-Identifier: MIT */
/*
 * state: what the sealed state holds -- the plaintext a store seals
 * (store.h), made of the audit log's anchor and the encoded keyring.
 *
 * Layout (integers little-endian):
 *   0   8  seq of the last audit record the state saw (0: none)
 *   8  32  that record's chain value
 *  40   n  the keyring, as kf_keyring_encode makes it
 *
 * With store = etcd the payload after the anchor is not a keyring but the
 * node's copy of the cluster keyring: the sealed blob exactly as etcd held
 * it (cluster.h), so the copy says which generation it is.
 *
 * The anchor lets a truncated audit log be told from a whole one
 * (DESIGN.md §6): the log must reach the record the state saw.
 */
#ifndef KF_STATE_H
#define KF_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "keyring.h"
#include "util.h"

#define KF_STATE_ANCHOR_BYTES (8 + KF_AUDIT_CHAIN_BYTES)

/*
 * The plaintext of a state holding kr and anchor.  *ret is sodium_malloc'd
 * (it holds keys; the caller sodium_free's it).  0, or -errno with err.
 */
int kf_state_encode(const struct kf_keyring *kr,
		    const struct kf_audit_anchor *anchor, uint8_t **ret,
		    size_t *ret_len, char err[KF_ERR_MAX]) KF_WUR;

/* The plaintext of a state holding anchor and payload (sodium_malloc'd). */
int kf_state_encode_bytes(const uint8_t *payload, size_t len,
			  const struct kf_audit_anchor *anchor, uint8_t **ret,
			  size_t *ret_len, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Splits a state plaintext into its anchor and a new keyring (*ret, a
 * reference the caller drops).  -EBADMSG with the reason in err when it is
 * too short or the keyring does not decode (kf_keyring_decode), or another
 * -errno; the outputs are written only on success.
 */
int kf_state_decode(const uint8_t *plain, size_t len,
		    struct kf_audit_anchor *ret_anchor, struct kf_keyring **ret,
		    char err[KF_ERR_MAX]) KF_WUR;

/* The anchor alone, whatever the payload; -EBADMSG when too short. */
int kf_state_anchor(const uint8_t *plain, size_t len,
		    struct kf_audit_anchor *ret_anchor,
		    char err[KF_ERR_MAX]) KF_WUR;

/*
 * kf_state_decode refuses a state holding a cluster copy, and this refuses
 * one holding a keyring, each with -EMEDIUMTYPE and a message saying what
 * to do.  *ret_blob points into plain.
 */
int kf_state_decode_cluster(const uint8_t *plain, size_t len,
			    struct kf_audit_anchor *ret_anchor,
			    const uint8_t **ret_blob, size_t *ret_blob_len,
			    char err[KF_ERR_MAX]) KF_WUR;

#endif
