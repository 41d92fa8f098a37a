/* SPDX-License-Identifier: MIT */
/*
 * cluster: the keyring as etcd holds it (DESIGN.md §9) -- a sealed blob
 * that only the holders of the master key can open, bound to one cluster
 * prefix, numbered by a generation that every change raises by one.
 *
 * The blob (integers little-endian):
 *    0  8  magic "KEYFSCL\0"
 *    8  4  format (1)
 *   12  4  ciphertext length (keyring encoding + 16-byte tag)
 *   16  8  generation: 1 for the keyring `keyfs cluster init` made, +1 per
 *          change; a daemon adopts only a higher one
 *   24 16  cluster id: random, made by init; a daemon that has served one
 *          cluster refuses the blob of another
 *   40  8  created: when this generation was made (seconds since the epoch)
 *   48  4  the current version of the keyring inside
 *   52  1  what made it (enum kf_cluster_change)
 *   53  1  length of the origin node's name
 *   54 64  the origin node's name, zero-padded
 *  118 16  key check value: BLAKE2b-128 keyed with the cluster key over
 *          "keyfs.cluster.kcv" (a mismatch: wrong master key)
 *  134 24  nonce
 *  158  n  XChaCha20-Poly1305 ciphertext of the keyring (kf_keyring_encode)
 *
 * The associated data is bytes 0..157 followed by the cluster prefix, so
 * every header field is authenticated and a blob copied to another prefix
 * does not open.  The header is clear on purpose: `keyfs cluster status`
 * and the daemons' logs can say which generation, version and node a blob
 * holds without the key.  No key is ever in it.
 */
#ifndef KF_CLUSTER_H
#define KF_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "keyring.h"
#include "util.h"

#define KF_CLUSTER_KEY_BYTES 32
#define KF_CLUSTER_ID_BYTES 16
#define KF_CLUSTER_HEADER_LEN 158
/* The largest blob (etcd refuses requests over 1.5 MiB). */
#define KF_CLUSTER_BLOB_MAX (1024 * 1024)

/* The names under the prefix (etcd.h: relative to it). */
#define KF_CLUSTER_KEYRING "store/keyring"
#define KF_CLUSTER_ARCHIVES "store/archives/" /* + archive file name */
#define KF_CLUSTER_DATA "store/"	      /* what daemons watch */
#define KF_CLUSTER_NODES "nodes/"	      /* + node name */

enum kf_cluster_change {
	KF_CHANGE_INIT = 1,
	KF_CHANGE_ROTATE = 2,
	KF_CHANGE_RETIRE = 3,
	KF_CHANGE_RESTORE = 4,
	KF_CHANGE_STAGE = 5,   /* staged rotation (README: Staged rotation) */
	KF_CHANGE_PROMOTE = 6, /* older nodes name these three "unknown" */
	KF_CHANGE_ABORT = 7,
	KF_CHANGE_REKEY = 8, /* sealed anew under a new master key */
};

/* A blob's clear header. */
struct kf_cluster_info {
	uint64_t generation;
	uint8_t cluster_id[KF_CLUSTER_ID_BYTES];
	int64_t created;
	uint32_t version;
	enum kf_cluster_change change;
	char node[KF_NODE_NAME_MAX + 1];
};

/* "init", "rotate", "retire", "restore", "stage", "promote", "abort",
 * "rekey" ("unknown" otherwise). */
const char *kf_cluster_change_name(enum kf_cluster_change c);

/*
 * Seals kr under key for prefix with info's header (its version is taken
 * from kr).  *ret is malloc'd (ciphertext only).  -EFBIG over
 * KF_CLUSTER_BLOB_MAX, -EINVAL for a node name that does not fit.
 */
int kf_cluster_seal(const uint8_t key[KF_CLUSTER_KEY_BYTES], const char *prefix,
		    const struct kf_cluster_info *info,
		    const struct kf_keyring *kr, uint8_t **ret, size_t *ret_len,
		    char err[KF_ERR_MAX]) KF_WUR;

/*
 * Reads a blob's header without opening it: 0, or -EBADMSG with the reason
 * ("not a keyfs cluster keyring", "unsupported format N", "truncated",
 * "has trailing data", "bad node name").
 */
int kf_cluster_peek(const uint8_t *blob, size_t len,
		    struct kf_cluster_info *ret_info,
		    char err[KF_ERR_MAX]) KF_WUR;

/*
 * Opens a blob sealed for prefix: its header (ret_info may be NULL) and a
 * new keyring.  -EBADMSG with the reason: those of kf_cluster_peek, "wrong
 * master key or corrupted header", "authentication failed (tampered, or
 * sealed for another prefix)", a keyring that does not decode or whose
 * current version is not the header's.
 */
int kf_cluster_unseal(const uint8_t key[KF_CLUSTER_KEY_BYTES],
		      const char *prefix, const uint8_t *blob, size_t len,
		      struct kf_cluster_info *ret_info, struct kf_keyring **ret,
		      char err[KF_ERR_MAX]) KF_WUR;

/*
 * Whether blob's key check value is key's: which of two master keys (a
 * master-key rotation's window) a blob was sealed under, without opening
 * it.  False for a blob too short to have one.
 */
bool kf_cluster_sealed_under(const uint8_t key[KF_CLUSTER_KEY_BYTES],
			     const uint8_t *blob, size_t len);

struct kf_etcd;

/*
 * A client of the configuration's [etcd] (its password_file read into
 * guarded memory: owned by root, mode 0600 or stricter).
 */
int kf_cluster_client(const struct kf_config *cfg, struct kf_etcd **ret,
		      char err[KF_ERR_MAX]) KF_WUR;

#endif
