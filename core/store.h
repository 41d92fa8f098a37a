/* SPDX-License-Identifier: MIT */
/*
 * store: the sealed state file `state_dir/keyring` (DESIGN.md §4).
 *
 * The store seals opaque bytes (the manager puts the encoded keyring and the
 * audit anchor in them) with XChaCha20-Poly1305 under the state seal key, and
 * writes them by temp file -> fsync -> rename -> fsync(dir).
 *
 * File format (all integers little-endian):
 *   0  8  magic "KEYFSST\0"
 *   8  4  format version (1)
 *  12  4  plaintext length
 *  16 16  key check value: BLAKE2b-128 keyed with the seal key over
 *         "keyfs.state.kcv" (a mismatch is a wrong master key, or a flip
 *         in these 16 bytes: the message names both)
 *  32 24  nonce
 *  56  n  ciphertext (plaintext length + 16-byte tag); bytes 0..55 are the
 *         associated data, so every header byte is authenticated.
 */
#ifndef KF_STORE_H
#define KF_STORE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define KF_STORE_FILE "keyring"
#define KF_STORE_MAX (4u << 20) /* refuse larger state files */
#define KF_STORE_KEY_BYTES 32	/* the seal key (master subkey 1) */

struct kf_store_pending {
	char tmp_name[PATH_MAX];
};

/*
 * Opens and authenticates state_dir/keyring.  On success *ret_plain is a
 * sodium_malloc'd buffer (caller sodium_free's it).  Errors, each with its
 * own reason in err and the file left as it was:
 *   -ENOENT   no state file
 *   -EBADMSG  "not a keyfs state file" (magic), "unsupported format N",
 *             "truncated (N bytes, expected M)", "wrong master key or
 *             corrupted header", "authentication failed (corrupted or
 *             tampered)"
 *   other     I/O errors.
 */
int kf_store_load(const char *state_dir,
		  const uint8_t seal_key[KF_STORE_KEY_BYTES],
		  uint8_t **ret_plain, size_t *ret_len,
		  char err[KF_ERR_MAX]) KF_WUR;

/*
 * First phase of a save: seals plain and writes it durably to a temporary
 * file in state_dir (0600).  Nothing visible changes until commit.
 */
int kf_store_prepare(const char *state_dir,
		     const uint8_t seal_key[KF_STORE_KEY_BYTES],
		     const uint8_t *plain, size_t len,
		     struct kf_store_pending *ret_pending,
		     char err[KF_ERR_MAX]) KF_WUR;

/*
 * Second phase: rename over state_dir/keyring and fsync the directory.
 * 0, -errno (the old state is still in place), or KF_FILE_UNSYNCED: the
 * new state is in place but the directory's fsync failed (util.h).
 */
int kf_store_commit(const char *state_dir, struct kf_store_pending *pending,
		    char err[KF_ERR_MAX]) KF_WUR;

/* Drops a prepared save (unlinks its temporary file). */
void kf_store_discard(const char *state_dir, struct kf_store_pending *pending);

/* prepare + commit; KF_FILE_UNSYNCED becomes -EIO (the new state is in
 * place, not confirmed durable). */
int kf_store_save(const char *state_dir,
		  const uint8_t seal_key[KF_STORE_KEY_BYTES],
		  const uint8_t *plain, size_t len,
		  char err[KF_ERR_MAX]) KF_WUR;

#endif
