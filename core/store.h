/* SPDX-License-Identifier: MIT */
/*
 * store: where the sealed state lives (DESIGN.md §4), behind a small
 * interface, and the one store there is today: the file `state_dir/keyring`.
 *
 * A store seals opaque bytes (the manager puts the audit anchor and the
 * encoded keyring in them: state.h) under the state seal key, so whatever
 * holds them only ever holds ciphertext.  The manager reaches its store
 * only through struct kf_store_ops (below); kf_store_file_new makes the
 * file store, which writes by temp file -> fsync -> rename -> fsync(dir).
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

/* --- the interface ------------------------------------------------------ */

/*
 * A store: ops, then the implementation's own fields (opaque to callers).
 * A store is used by one caller at a time (the manager serialises its
 * changes under its op_lock); it has at most one prepared state.
 *
 * What the file store does is all there is here.  A compare-and-swap store
 * (etcd, DESIGN.md §9) will add two things: a revision that load returns
 * and commit compares, so that commit fails (and changes nothing) when
 * another node committed in between; and a watch, a way to hear that
 * another node committed, so the daemon can load and adopt it.
 */
struct kf_store;

struct kf_store_ops {
	/*
	 * Reads and authenticates the current state.  0 and *ret_plain, a
	 * sodium_malloc'd buffer the caller sodium_free's; -ENOENT when
	 * there is no state yet; -EBADMSG (with the reason in err) when it
	 * is damaged or sealed under another key; another -errno.
	 */
	int (*load)(struct kf_store *s, uint8_t **ret_plain, size_t *ret_len,
		    char err[KF_ERR_MAX]);
	/*
	 * First phase of a change: seals plain (not kept) and stores it
	 * durably aside; nothing visible changes.  Replaces a prepared state
	 * not yet committed or discarded.
	 */
	int (*prepare)(struct kf_store *s, const uint8_t *plain, size_t len,
		       char err[KF_ERR_MAX]);
	/*
	 * Second phase: the prepared state becomes the current one.  0;
	 * -errno: the old state is still current and the prepared one is
	 * gone; or KF_FILE_UNSYNCED (util.h): the new state is current, as
	 * far as any reader can see, but its durability is not confirmed
	 * (the file store: the rename happened, the directory's fsync
	 * failed).  The caller must then act as if it had been committed.
	 */
	int (*commit)(struct kf_store *s, char err[KF_ERR_MAX]);
	/* Drops the prepared state, if any. */
	void (*discard)(struct kf_store *s);
	/* Discards, then frees s and what it holds. */
	void (*free)(struct kf_store *s);
};

struct kf_store {
	const struct kf_store_ops *ops;
};

/*
 * The file store of state_dir/keyring, sealed under seal_key.  Both are
 * borrowed: they must outlive the store.  0 or -ENOMEM.
 */
int kf_store_file_new(const char *state_dir,
		      const uint8_t seal_key[KF_STORE_KEY_BYTES],
		      struct kf_store **ret) KF_WUR;

/* s->ops->free(s) (NULL is fine); returns NULL. */
struct kf_store *kf_store_free(struct kf_store *s);

/* --- the file store's functions, for its tests and kf_store_file_new --- */

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
