/* SPDX-License-Identifier: MIT */
/*
 * recovery: the break-glass recovery key pair (README: Break-glass
 * recovery).  An X25519 pair (crypto_box): the public half, named by
 * recovery_public_key, seals every new archive's keyring once more
 * (backup.h: "recovery"); the private half stays offline and restores an
 * archive when the master key itself is lost.  Both halves are kept in
 * the text form of keys (44 characters of URL-safe base64, and "\n").
 */
#ifndef KF_RECOVERY_H
#define KF_RECOVERY_H

#include <stdint.h>

#include "backup.h"
#include "key.h"
#include "util.h"

#define KF_RECOVERY_KEY_BYTES KF_BACKUP_RECOVERY_KEY_BYTES
#define KF_RECOVERY_FPR_LEN KF_KEY_FPR_LEN

_Static_assert(KF_RECOVERY_KEY_BYTES == KF_KEY_BYTES,
	       "a recovery key has the text form of a key");

/*
 * keyfs recovery-keygen: a new pair, the private half into priv_path (0600)
 * and the public half into pub_path (0644), each created anew (never
 * replacing a file: -EEXIST, and neither is written).  ret_fpr gets the
 * public key's fingerprint (kf_recovery_fingerprint).
 */
int kf_recovery_keygen(const char *pub_path, const char *priv_path,
		       char ret_fpr[KF_RECOVERY_FPR_LEN + 1],
		       char err[KF_ERR_MAX]) KF_WUR;

/*
 * The public key in path (recovery_public_key): a regular file, not a
 * symbolic link, owned by root and writable by nobody else (whoever could
 * replace it would receive every later archive's keyring), holding a key's
 * text form and an optional newline.  0, or -errno with the reason.
 */
int kf_recovery_load_public(const char *path,
			    uint8_t ret_pk[KF_RECOVERY_KEY_BYTES],
			    char err[KF_ERR_MAX]) KF_WUR;

/*
 * A recovery public key's fingerprint: the first 16 hex digits of
 * BLAKE2b-256 of it with personal "keyfs.rfpr.v1".
 */
void kf_recovery_fingerprint(const uint8_t pk[KF_RECOVERY_KEY_BYTES],
			     char out[KF_RECOVERY_FPR_LEN + 1]);

#endif
