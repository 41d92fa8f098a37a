/* SPDX-License-Identifier: MIT */
/*
 * backup: encrypted backup archives (DESIGN.md §5).
 *
 * An archive is one JSON object:
 *   {"format":"keyfs-backup-v1","created":"<RFC 3339 UTC>",
 *    "key_version":N,"versions":[N,...],"nonce":"<base64>",
 *    "ciphertext":"<base64>"[,"recovery":"<base64>"]}
 * The ciphertext is the encoded keyring (opaque bytes to this module)
 * sealed with XChaCha20-Poly1305 under the backup archive key; the
 * associated data binds the clear fields: the compact JSON text of
 * {"format":...,"created":...,"key_version":...,"versions":[...]} in that
 * order.  "recovery", optional, is the break-glass seal
 * (kf_backup_write_recoverable).  Archives are 0600 files named NAME.json
 * in a 0700 directory and are never overwritten.
 *
 * Implemented in backup_format.c (one archive: seal, parse, kf_backup_read)
 * and backup.c (the directory: names, write, list, prune);
 * backup_private.h is what they share.
 */
#ifndef KF_BACKUP_H
#define KF_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define KF_BACKUP_FORMAT "keyfs-backup-v1"
#define KF_BACKUP_KEY_BYTES 32 /* the archive key (master subkey 2) */
/* An X25519 key of the break-glass recovery pair (crypto_box). */
#define KF_BACKUP_RECOVERY_KEY_BYTES 32
#define KF_BACKUP_FILE_MAX (8u << 20) /* refuse larger archives */
/* An archive's file name is a backup name plus this ending. */
#define KF_BACKUP_NAME_MAX 64 /* without ".json" */
#define KF_BACKUP_SUFFIX ".json"
#define KF_BACKUP_SUFFIX_LEN (sizeof(KF_BACKUP_SUFFIX) - 1)
/* A buffer for a file name: a name, ".json" and the NUL. */
#define KF_BACKUP_FILE_NAME_MAX (KF_BACKUP_NAME_MAX + KF_BACKUP_SUFFIX_LEN + 1)
/* Names keyfs gives its own archives; a named backup may not take them. */
#define KF_BACKUP_AUTO_PREFIX "key_backup_"
#define KF_BACKUP_PRE_RESTORE_PREFIX "pre_restore_"

struct kf_backup_info {
	char name[KF_BACKUP_FILE_NAME_MAX]; /* file name, with ".json" */
	int64_t created;
	uint32_t key_version;
	uint32_t n_versions;
	off_t size;
	int64_t mtime;
	bool recovery; /* it carries a recovery seal (kf_backup_read only) */
};

/* True if name matches [A-Za-z0-9][A-Za-z0-9._-]{0,63} (no "..", no "/"). */
bool kf_backup_name_valid(const char *name);

/* True if name starts with a prefix reserved for keyfs's own archives
 * (KF_BACKUP_AUTO_PREFIX, KF_BACKUP_PRE_RESTORE_PREFIX). */
bool kf_backup_name_reserved(const char *name);

/*
 * The backup name in a file name: `file` less its ".json" ending (which
 * must be there when need_suffix, else may be) into stem.  True when that
 * is a valid name (kf_backup_name_valid); stem is then NUL-terminated.
 */
bool kf_backup_stem(const char *file, bool need_suffix,
		    char stem[KF_BACKUP_NAME_MAX + 1]);

/* name + ".json" into file; false (file cut short) when name is too long. */
bool kf_backup_file_name(const char *name, char file[KF_BACKUP_FILE_NAME_MAX]);

/*
 * Writes a new archive of blob into dir (durably, 0600, never replacing an
 * existing file: -EEXIST).  A given `name` that is invalid or reserved
 * (kf_backup_name_reserved) is refused with -EINVAL.  `name` NULL gives
 * key_backup_YYYYMMDD_HHMMSS from `now` (UTC); if that exists, a suffix _2,
 * _3... is added.  `prefix` (may be NULL) is put before a generated name (e.g.
 * "pre_restore_"). The archive's mtime is set to `now`.  ret_name
 * (KF_BACKUP_FILE_NAME_MAX bytes) gets the file name written.
 */
int kf_backup_write(const char *dir, const char *name, const char *prefix,
		    const uint8_t key[KF_BACKUP_KEY_BYTES], const uint8_t *blob,
		    size_t len, uint32_t key_version, const uint32_t *versions,
		    size_t n_versions, int64_t now, char *ret_name,
		    char err[KF_ERR_MAX]) KF_WUR;

/*
 * kf_backup_write, and with recovery_pk (NULL: none) the archive also
 * carries the recovery seal: "recovery", after "ciphertext", the base64 of
 * crypto_box_seal(recovery_pk, associated data || "\n" || blob), so the
 * private half alone opens it (kf_backup_recover), bound to this archive's
 * clear fields.
 */
int kf_backup_write_recoverable(const char *dir, const char *name,
				const char *prefix,
				const uint8_t key[KF_BACKUP_KEY_BYTES],
				const uint8_t *recovery_pk, const uint8_t *blob,
				size_t len, uint32_t key_version,
				const uint32_t *versions, size_t n_versions,
				int64_t now, char *ret_name,
				char err[KF_ERR_MAX]) KF_WUR;

/*
 * Break-glass recovery: opens the recovery seal of the archive at path
 * with the private key sk (the master key is not needed) and checks that
 * the clear fields sealed in it are the archive's own.  *ret_blob
 * (sodium_malloc'd) and ret_info (may be NULL) as kf_backup_read.
 * -ENODATA "the archive has no recovery seal ..."; -EBADMSG "does not open
 * under this private key", "belongs to another archive", or the archive's
 * parse errors.
 */
int kf_backup_recover(const char *path,
		      const uint8_t sk[KF_BACKUP_RECOVERY_KEY_BYTES],
		      uint8_t **ret_blob, size_t *ret_len,
		      struct kf_backup_info *ret_info,
		      char err[KF_ERR_MAX]) KF_WUR;

/*
 * Writes archive text received from elsewhere (another node, through
 * etcd) into dir as `file`, after checking that it is a whole archive that
 * opens under key; its mtime is its created time.  Never replaces a file:
 * -EEXIST when dir already has one of that name.  -EINVAL for a name that
 * is not an archive's, the errors of kf_backup_read for the text.
 */
int kf_backup_import(const char *dir, const char *file,
		     const uint8_t key[KF_BACKUP_KEY_BYTES],
		     const uint8_t *text, size_t len,
		     char err[KF_ERR_MAX]) KF_WUR;

/*
 * Master-key rotation (keyfs rekey) of the archive dir/file: 0 when it
 * already opens under new_key (*ret_rewritten false), or when it opened
 * under old_key (may be NULL) and was replaced by the same archive sealed
 * under new_key (*ret_rewritten true): temporary file, fsync, rename,
 * fsync(dir), mtime kept at its created time, so a crash leaves the old or
 * the new archive, each whole.  -errno with err for a file that is no
 * archive or opens under neither key (left as it is).
 */
int kf_backup_rekey(const char *dir, const char *file, const uint8_t *old_key,
		    const uint8_t new_key[KF_BACKUP_KEY_BYTES],
		    bool *ret_rewritten, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Reads, verifies and decrypts an archive at path.  Every failure leaves
 * nothing behind and says why in err: "no such backup", "truncated or not
 * JSON", "not a keyfs backup (format)", "field X missing or malformed",
 * "authentication failed (tampered, or made under another master key)".
 * *ret_blob is sodium_malloc'd.  ret_info may be NULL.
 */
int kf_backup_read(const char *path, const uint8_t key[KF_BACKUP_KEY_BYTES],
		   uint8_t **ret_blob, size_t *ret_len,
		   struct kf_backup_info *ret_info,
		   char err[KF_ERR_MAX]) KF_WUR;

/*
 * Lists the *.json archives in dir from their clear fields (files that do
 * not parse are skipped), newest first (created, then name).  *ret is
 * malloc'd (free()).  A missing dir is an empty list.
 */
int kf_backup_list(const char *dir, struct kf_backup_info **ret, size_t *ret_n,
		   char err[KF_ERR_MAX]) KF_WUR;

struct kf_backup_prune_opts {
	unsigned keep;	    /* the `keep` newest (of those with prefix) stay */
	const char *prefix; /* only archives whose name starts so; NULL: all */
	bool force;	    /* also delete the last copy of a version */
	bool dry_run;	    /* delete nothing: count what would go */
	/* Whether the keyring still holds version (NULL: never protect). */
	bool (*held)(uint32_t version, void *data);
	/* Told each file deleted (NULL: nobody). */
	void (*deleted)(const char *file, void *data);
	void *data;
	/* Clear fields kept from the last prune (NULL: read every archive). */
	struct kf_backup_cache *cache;
};

/*
 * A cache of archives' clear fields for kf_backup_prune, so that a prune
 * reads only the archives that are new since the last one (backup_cache.c;
 * locks inside).  new: NULL when out of memory; free accepts NULL.
 */
struct kf_backup_cache;
struct kf_backup_cache *kf_backup_cache_new(void);
struct kf_backup_cache *kf_backup_cache_free(struct kf_backup_cache *c);

struct kf_backup_prune_result {
	size_t listed;	  /* archives in dir */
	size_t deleted;	  /* archives deleted (dry_run: would be) */
	size_t protected; /* older than `keep` but kept: a version's last copy
			   */
};

/*
 * cleanup_old_backups: keeps the o->keep newest archives (of those named
 * with o->prefix) and deletes the older ones, then fsyncs dir.  Unless
 * o->force, an older archive is kept when it is the newest holding a
 * version that o->held says the keyring no longer has (retired or dropped
 * beyond retain_versions) and no archive kept before it holds that version:
 * pruning never destroys the last copy of a key.  *ret is filled even on
 * failure (what was deleted before it).
 */
int kf_backup_prune(const char *dir, const struct kf_backup_prune_opts *o,
		    struct kf_backup_prune_result *ret,
		    char err[KF_ERR_MAX]) KF_WUR;

#endif
