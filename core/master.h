/* SPDX-License-Identifier: MIT */
/*
 * master: the master key and the internal keys derived from it
 * (DESIGN.md §4).  Internal keys never leave the daemon.
 */
#ifndef KF_MASTER_H
#define KF_MASTER_H

#include <stdbool.h>
#include <stdint.h>

#include "key.h"
#include "util.h"

#define KF_MASTER_CONTEXT "keyfs-mk"
#define KF_SUBKEY_BYTES 32 /* every internal key */
enum kf_subkey {
	KF_SUBKEY_STATE = 1,
	KF_SUBKEY_BACKUP = 2,
	KF_SUBKEY_AUDIT = 3,
	KF_SUBKEY_CLUSTER = 4, /* the keyring in etcd (cluster.h) */
};

/*
 * Loads the master key: KEYFS_MASTER_KEY when set in the environment (text
 * form; taken through kf_env_get, so it is scrubbed from the environment;
 * set but empty: -EINVAL), else the file `path` (text form, optional
 * trailing newline), which must be a regular file owned by root with no
 * group/other permission bits.  `path` may be a symbolic link, as in a
 * Kubernetes Secret volume (master.key -> ..data/master.key), only when
 * every link on the way is root's, relative, without a ".." component (it
 * stays in the folder holding `path`), every folder entered is root's and
 * not group/other-writable unless sticky, and all are on that folder's file
 * system; anything else is refused, naming why (-ELOOP for the shape of a
 * link, -EPERM for an owner, mode or file system).  A link is never created
 * or written through. When neither exists and `may_create`
 * (development mode), creates `path` (0600, parent 0700) with a new key and
 * sets *ret_created.  Otherwise -ENOENT, "no master key: set KEYFS_MASTER_KEY
 * or create <path>". *ret_key is KF_KEY_BYTES of sodium_malloc memory (free
 * with sodium_free).
 */
int kf_master_load(const char *path, bool may_create, uint8_t **ret_key,
		   bool *ret_created, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Loads a master key from the file `path` alone (never the environment,
 * never created), with kf_master_load's checks: a regular file owned by
 * root, no group/other permission bits, 44 characters and an optional
 * newline (and kf_master_load's rules for a symbolic link).  The same checks
 * serve other secret key files (the recovery private key): `what` (may be NULL)
 * then starts the message. *ret_key as kf_master_load's.
 */
int kf_master_load_file(const char *path, const char *what, uint8_t **ret_key,
			char err[KF_ERR_MAX]) KF_WUR;

/* Characters of a master key's fingerprint (hex), without the NUL. */
#define KF_MASTER_FPR_LEN KF_KEY_FPR_LEN

/*
 * The fingerprint of a master key: the first KF_MASTER_FPR_LEN hex digits
 * of BLAKE2b-256 of the key with personal "keyfs.mfpr.v1", so people (and
 * the rekey journal) can tell master keys apart without seeing them.
 */
void kf_master_fingerprint(const uint8_t master[KF_KEY_BYTES],
			   char out[KF_MASTER_FPR_LEN + 1]);

/* crypto_kdf_derive_from_key(out, KF_SUBKEY_BYTES, id, "keyfs-mk", master). */
void kf_master_subkey(const uint8_t master[KF_KEY_BYTES], enum kf_subkey id,
		      uint8_t out[KF_SUBKEY_BYTES]);

#endif
