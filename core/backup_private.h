/* SPDX-License-Identifier: MIT */
/*
 * backup_private: what the two parts of the backup module share.  Other
 * modules include backup.h only.
 *
 *   backup_format.c  one archive: its clear fields and associated data,
 *                    sealing, the strict parse, kf_backup_read
 *   backup.c         the backup directory: names, kf_backup_write (generated
 *                    names, suffixes, link that never overwrites), list,
 *                    prune with last-copy protection
 *
 * The directory never sees a nonce or a ciphertext: it hands the format a
 * keyring blob to seal and gets text back, and reads archives' clear fields.
 */
#ifndef KF_BACKUP_PRIVATE_H
#define KF_BACKUP_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "backup.h"

/* The clear fields of one archive (the associated data). */
struct kf_backup_clear {
	int64_t created;
	uint32_t key_version;
	uint32_t *versions; /* strictly decreasing; malloc'd when parsed */
	size_t n_versions;
};

/*
 * The cache of clear fields (backup_cache.c): get fills *ret (a copy the
 * caller frees with kf_backup_clear_done) when name was put from the very
 * file st describes, else -ENOENT; put keeps a copy (nothing on ENOMEM).
 * A listing calls begin, then get/put per file, then end, which drops the
 * entries it did not meet.
 */
int kf_backup_cache_get(struct kf_backup_cache *c, const char *name,
			const struct stat *st, struct kf_backup_clear *ret);
void kf_backup_cache_put(struct kf_backup_cache *c, const char *name,
			 const struct stat *st,
			 const struct kf_backup_clear *clear);
void kf_backup_cache_begin(struct kf_backup_cache *c);
void kf_backup_cache_end(struct kf_backup_cache *c);

/* Frees the versions kf_backup_load_clear put in c and zeroes c. */
void kf_backup_clear_done(struct kf_backup_clear *c);

/*
 * Seals blob (len bytes; NULL when len is 0) under key with the clear fields
 * c into the archive's text -- with its recovery seal (backup.h) when
 * recovery_pk is non-NULL -- one line with its "\n", malloc'd into
 * *ret_text (free()).  A fresh random nonce each call.  Refuses a missing
 * key or blob and a version list that is empty, not strictly decreasing,
 * holds 0 or lacks c->key_version (-EINVAL), and a blob or text beyond
 * KF_BACKUP_FILE_MAX (-EFBIG).
 */
int kf_backup_seal(const struct kf_backup_clear *c,
		   const uint8_t key[KF_BACKUP_KEY_BYTES],
		   const uint8_t *recovery_pk, const uint8_t *blob, size_t len,
		   char **ret_text, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Reads the archive at path (at most KF_BACKUP_FILE_MAX bytes) and checks
 * it as kf_backup_read does, short of decrypting it; *ret gets its clear
 * fields (kf_backup_clear_done frees them), ret_st (may be NULL) the stat
 * of the file read.  err may be NULL.
 */
int kf_backup_load_clear(const char *path, struct kf_backup_clear *ret,
			 struct stat *ret_st, char *err) KF_WUR;

/*
 * Checks archive text (as a file would hold it) the way kf_backup_read
 * checks a file, decryption included; *ret_created gets its created time.
 */
int kf_backup_check_bytes(const uint8_t *text, size_t len,
			  const uint8_t key[KF_BACKUP_KEY_BYTES],
			  int64_t *ret_created, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Master-key rotation of one archive's text: 0 when it already opens under
 * new_key; 1 and *ret_text (malloc'd, as kf_backup_seal makes it) when it
 * opens under old_key (may be NULL) and was sealed anew under new_key, with
 * the same clear fields and a fresh nonce; else -errno and err (a text
 * that is no archive, or opens under neither key).  *ret_created gets its
 * created time whenever it parses.
 */
int kf_backup_reseal(const uint8_t *buf, size_t len, const uint8_t *old_key,
		     const uint8_t new_key[KF_BACKUP_KEY_BYTES],
		     char **ret_text, int64_t *ret_created,
		     char err[KF_ERR_MAX]) KF_WUR;

#endif
