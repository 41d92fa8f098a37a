// SPDX-License-Identifier: MIT
/*
 * recover: break-glass recovery with the daemon stopped (keyfs restore
 * --offline --recovery-key, README: Break-glass recovery) -- an archive's
 * keyring opened with the recovery private key, when the master key that
 * sealed the state, the archives and the audit log is lost, and sealed
 * anew under the configured (new) master key.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "log.h"
#include "manager_private.h"

/* "lost-YYYYMMDD_HHMMSS" of now (UTC), for what is set aside. */
static void lost_stamp(char out[32])
{
	time_t t = (time_t)kf_time_now();
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "lost-%Y%m%d_%H%M%S", &tm);
}

/* The archive's keyring, opened with the private key in sk_path. */
static int open_archive(const char *path, const char *sk_path,
			struct kf_keyring **ret, char *fpr,
			char err[KF_ERR_MAX])
{
	uint8_t pk[KF_RECOVERY_KEY_BYTES], *sk = NULL, *blob = NULL;
	size_t len = 0;
	int r;

	r = kf_master_load_file(sk_path, "recovery private key file", &sk, err);
	if (r < 0)
		return r;
	crypto_scalarmult_base(pk, sk);
	kf_recovery_fingerprint(pk, fpr);
	r = kf_backup_recover(path, sk, &blob, &len, NULL, err);
	sodium_free(sk);
	if (r == 0) {
		r = kf_keyring_decode(blob, len, ret, err);
		sodium_free(blob);
	}
	return r;
}

/*
 * Sets aside what the lost master key sealed: the state (renamed
 * keyring.lost-STAMP) unless it opens under the configured key -- then
 * the key is not lost and the recovery is refused -- and the audit log
 * (moved into the folder lost-STAMP beside it) unless it verifies under
 * the configured key (a log a crashed recovery began).  fields gets
 * what was moved.
 */
static int set_aside(const struct kf_config *cfg, json_t *fields,
		     char err[KF_ERR_MAX])
{
	struct kf_subkeys *keys = NULL;
	uint8_t *master = NULL, *plain = NULL;
	char stamp[32], from[4096], to[4096 + 32], report[KF_ERR_MAX];
	size_t len = 0, moved = 0;
	int r;

	r = kf_master_load(cfg->master_key_file,
			   cfg->mode == KF_MODE_DEVELOPMENT, &master, NULL,
			   err);
	if (r < 0) {
		kf_err_prefix(err, "a new master key is needed first ((umask "
				   "077; keyfs genkey > master_key_file)): ");
		return r;
	}
	keys = sodium_malloc(sizeof(*keys));
	if (!keys) {
		sodium_free(master);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_master_subkey(master, KF_SUBKEY_STATE, keys->state);
	sodium_free(master);
	lost_stamp(stamp);
	r = kf_store_load(cfg->state_dir, keys->state, &plain, &len, err);
	sodium_free(keys);
	if (r == 0) {
		sodium_free(plain);
		kf_err_set(err, "the state opens under the configured master "
				"key, which is therefore not lost: restore "
				"with keyfs restore --offline NAME");
		return -EEXIST;
	}
	if (r == -EBADMSG) {
		snprintf(from, sizeof(from), "%s/%s", cfg->state_dir,
			 KF_STORE_FILE);
		snprintf(to, sizeof(to), "%s.%s", from, stamp);
		if (rename(from, to) < 0 || kf_dir_fsync(cfg->state_dir) < 0) {
			r = -errno;
			kf_err_set(err, "%s: %s", from, strerror(-r));
			return r;
		}
		json_object_set_new(fields, "state_set_aside", json_string(to));
	} else if (r != -ENOENT) {
		return r;
	}
	if (kf_manager_verify_audit(cfg, NULL, false, report) == 0)
		return 0;
	r = kf_audit_set_aside(cfg->audit_log, stamp, &moved, err);
	if (r < 0)
		kf_err_prefix(err, "audit log: ");
	else if (moved > 0)
		json_object_set_new(fields, "audit_set_aside",
				    json_string(stamp));
	return r;
}

int kf_manager_recover(const struct kf_config *cfg, const struct kf_caller *who,
		       const char *sk_path, const char *what,
		       uint32_t *ret_version, char err[KF_ERR_MAX])
{
	char fpr[KF_RECOVERY_FPR_LEN + 1] = "", why[KF_ERR_MAX];
	char file[KF_BACKUP_FILE_NAME_MAX], stem[KF_BACKUP_NAME_MAX + 1];
	struct kf_keyring *kr = NULL, *now = NULL;
	json_t *rec = kf_event_record(KF_EVENT_RECOVERY_RESTORE, who);
	struct kf_manager *m = NULL;
	uint64_t cancel = 0;
	char *path = NULL;
	int r;

	r = kf_mgr_open_bare(cfg, &m, why);
	if (r == 0 && cfg->store == KF_STORE_TYPE_ETCD) {
		r = -EOPNOTSUPP;
		kf_err_set(why, "recovery works on the file store only");
	}
	if (r == 0 && what[0] != '/' && !kf_backup_stem(what, false, stem)) {
		r = -EINVAL;
		kf_err_set(why, "not a backup name or absolute path");
	}
	if (r == 0) {
		kf_backup_file_name(stem, file);
		path = what[0] == '/' ? strdup(what)
				      : kf_path_join(cfg->backup_dir, file);
		json_object_set_new(rec, "backup", json_string(what));
		r = path ? open_archive(path, sk_path, &kr, fpr, why) : -ENOMEM;
		if (fpr[0])
			json_object_set_new(rec, "recovery_key",
					    json_string(fpr));
	}
	/* Nothing has changed so far; now what the lost key sealed goes. */
	if (r == 0)
		r = set_aside(cfg, rec, why);
	if (r == 0) {
		/* The lock is taken again at once by a manager that can
		 * restore: a new audit log under the configured key. */
		m = kf_manager_close(m);
		r = kf_manager_open_for_restore(cfg, &m, why);
	}
	if (r == 0) {
		pthread_mutex_lock(&m->op_lock);
		r = kf_mgr_adopt_locked(m, kr, rec, true, ret_version, NULL,
					&cancel, why);
		pthread_mutex_unlock(&m->op_lock);
		if (r == KF_FILE_UNSYNCED)
			r = -EIO;
	}
	if (r == 0) {
		/* Archives of the lost key open only with the recovery key:
		 * one under the new master key at once. */
		now = kf_manager_keyring(m);
		if (kf_mgr_write_backup(m, now, NULL, NULL, file, why) < 0)
			kf_log(LOG_WARNING, "first backup: %s", why);
		kf_keyring_unref(now);
	}
	if (r < 0) {
		kf_err_set(err, "KeyBackupError: Failed to restore keys: %s",
			   why);
		if (m)
			kf_mgr_report_failure(m, json_incref(rec), cancel, err);
	}
	json_decref(rec);
	kf_keyring_unref(kr);
	kf_manager_close(m);
	free(path);
	return r;
}
