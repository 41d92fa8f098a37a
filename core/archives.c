// SPDX-License-Identifier: MIT
/*
 * archives: the manager's backup operations (DESIGN.md §5) -- backup,
 * restore, prune and list -- and the archive helpers the other operations
 * use (an archive before every change, automatic pruning, the highest
 * version any archive holds).  The archive format is backup_format.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "log.h"
#include "manager_private.h"

/* Where the tree shows the archives, below the mountpoint. */
#define MOUNT_BACKUPS "/backups/"
#define MOUNT_BACKUPS_LEN (sizeof(MOUNT_BACKUPS) - 1)

/* --- helpers of every operation ------------------------------------------ */

int kf_mgr_write_backup(struct kf_manager *m, const struct kf_keyring *kr,
			const char *name, const char *prefix, char *ret_name,
			char err[KF_ERR_MAX])
{
	uint32_t versions[KF_KEYRING_MAX_VERSIONS];
	size_t n = kf_keyring_count(kr), len;
	uint8_t *blob;
	int r;

	for (size_t i = 0; i < n; i++)
		versions[i] = kf_keyring_at(kr, i)->version;
	r = kf_keyring_encode(kr, &blob, &len);
	if (r < 0) {
		kf_err_set(err, "cannot encode keyring: %s", strerror(-r));
		return r;
	}
	r = kf_backup_write_recoverable(
	    m->cfg->backup_dir, name, prefix, kf_mgr_seal_keys(m)->backup,
	    m->has_recovery ? m->recovery_pk : NULL, blob, len,
	    kf_keyring_current_version(kr), versions, n, kf_time_now(),
	    ret_name, err);
	sodium_free(blob);
	/* Cluster: every node gets a copy once the operation commits. */
	if (r == 0 && m->cl)
		kf_mgr_cluster_pending(m, ret_name);
	return r;
}

void kf_mgr_remove_backup(struct kf_manager *m, const char *file)
{
	char *path = kf_path_join(m->cfg->backup_dir, file);

	if (m->cl)
		kf_mgr_cluster_unpending(m, file);
	if (path && unlink(path) == 0 && kf_dir_fsync(m->cfg->backup_dir) < 0)
		kf_log(LOG_WARNING, "fsync of %s failed", m->cfg->backup_dir);
	KF_CRASH("archives/removed");
	free(path);
}

uint32_t kf_mgr_highest_known(struct kf_manager *m, const struct kf_keyring *kr)
{
	struct kf_backup_info *list = NULL;
	uint32_t high = kr ? kf_keyring_highest(kr) : 0;
	size_t n = 0;

	if (kf_backup_list(m->cfg->backup_dir, &list, &n, NULL) == 0)
		for (size_t i = 0; i < n; i++)
			if (list[i].key_version > high)
				high = list[i].key_version;
	free(list);
	return high;
}

/* What kf_backup_prune's callbacks get. */
struct prune_ctx {
	struct kf_manager *m;
	struct kf_keyring *kr;
};

/* kf_backup_prune's `held`: does the keyring still hold version? */
static bool keyring_holds(uint32_t version, void *data)
{
	const struct prune_ctx *c = data;

	return kf_keyring_find(c->kr, version) != NULL;
}

/* kf_backup_prune's `deleted`: with store = etcd, on every node. */
static void pruned(const char *file, void *data)
{
	const struct prune_ctx *c = data;

	if (c->m->cl)
		kf_mgr_cluster_unpublish(c->m, file);
}

/*
 * Deletes automatic backups beyond backup_keep, never the last copy of a
 * version the keyring no longer has; audits what it did.  Caller holds
 * op_lock, so it never races a restore or a manual prune.
 */
static void prune_automatic_locked(struct kf_manager *m,
				   const struct kf_caller *who)
{
	struct prune_ctx ctx = {m, kf_mgr_current(m)};
	struct kf_backup_prune_opts o = {.keep = m->cfg->backup_keep,
					 .prefix = KF_BACKUP_AUTO_PREFIX,
					 .held = keyring_holds,
					 .deleted = pruned,
					 .data = &ctx,
					 .cache = m->backups};
	struct kf_backup_prune_result res;
	char err[KF_ERR_MAX];
	json_t *rec;
	int r;

	/* Cluster: pruned by whoever can reach etcd; the others follow. */
	if (m->cl && kf_mgr_cluster_usable(m, err) < 0) {
		kf_keyring_unref(ctx.kr);
		return;
	}
	r = kf_backup_prune(m->cfg->backup_dir, &o, &res, err);
	kf_keyring_unref(ctx.kr);
	if (r < 0)
		kf_log(LOG_WARNING, "automatic backup pruning: %s", err);
	if (res.deleted == 0)
		return;
	rec = kf_event_record(KF_EVENT_BACKUP_CLEANUP, who);
	json_object_set_new(rec, "automatic", json_true());
	json_object_set_new(rec, "keep", json_integer(m->cfg->backup_keep));
	json_object_set_new(rec, "deleted",
			    json_integer((json_int_t)res.deleted));
	json_object_set_new(rec, "kept_last_copies",
			    json_integer((json_int_t)res.protected));
	json_object_set_new(rec, "success", json_true());
	if (kf_mgr_record_durable(m, rec, NULL, err) < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	json_decref(rec);
}

void kf_mgr_prune_automatic(struct kf_manager *m, const struct kf_caller *who)
{
	pthread_mutex_lock(&m->op_lock);
	prune_automatic_locked(m, who);
	pthread_mutex_unlock(&m->op_lock);
}

/* --- backup -------------------------------------------------------------- */

/*
 * A failed backup's record: what was asked, the name when one was given
 * (an invalid name is never recorded: it could be a pasted key).
 */
static void backup_failed(struct kf_manager *m, const struct kf_caller *who,
			  const char *name, uint64_t cancel, const char *err)
{
	json_t *rec = kf_event_record(KF_EVENT_KEY_BACKUP, who);

	if (name && kf_backup_name_valid(name))
		json_object_set_new(rec, "backup", json_string(name));
	kf_mgr_report_failure(m, rec, cancel, err);
}

int kf_manager_backup(struct kf_manager *m, const struct kf_caller *who,
		      const char *name, char *ret_name, char err[KF_ERR_MAX])
{
	struct kf_keyring *kr;
	char file[KF_BACKUP_FILE_NAME_MAX] = "";
	uint64_t seq = 0;
	json_t *rec;
	int r;

	if (name && !kf_backup_name_valid(name)) {
		kf_err_set(err, "invalid backup name (allowed: "
				"[A-Za-z0-9][A-Za-z0-9._-]{0,63}, no \"..\")");
		backup_failed(m, who, name, 0, err);
		return -EINVAL;
	}
	pthread_mutex_lock(&m->op_lock);
	kr = kf_mgr_current(m);
	r = m->cl ? kf_mgr_cluster_usable(m, err) : 0;
	if (r == 0)
		r = kf_mgr_write_backup(m, kr, name, NULL, file, err);
	if (r == 0) {
		rec = kf_event_record(KF_EVENT_KEY_BACKUP, who);
		json_object_set_new(rec, "backup", json_string(file));
		json_object_set_new(
		    rec, "key_version",
		    json_integer(kf_keyring_current_version(kr)));
		json_object_set_new(rec, "versions", kf_mgr_versions_json(kr));
		json_object_set_new(rec, "success", json_true());
		r = kf_mgr_record_durable(m, rec, &seq, err);
		json_decref(rec);
		if (r < 0) {
			/* Unrecorded: undo, so nothing changed. */
			kf_mgr_remove_backup(m, file);
			kf_err_prefix(err, "audit log: ");
		} else if (m->cl) {
			kf_mgr_cluster_publish(m);
		}
	}
	pthread_mutex_unlock(&m->op_lock);
	kf_keyring_unref(kr);
	if (r < 0) {
		backup_failed(m, who, name, seq, err);
		return r;
	}
	if (ret_name)
		snprintf(ret_name, KF_BACKUP_FILE_NAME_MAX, "%s", file);
	if (!name)
		kf_mgr_prune_automatic(m, who);
	return 0;
}

/* --- restore ------------------------------------------------------------- */

/* A backup name (with or without .json) or an absolute path -> a path. */
static char *restore_path(struct kf_manager *m, const char *what,
			  char err[KF_ERR_MAX])
{
	char stem[KF_BACKUP_NAME_MAX + 1], file[KF_BACKUP_FILE_NAME_MAX];

	if (what[0] == '/') {
		const char *mnt = m->cfg->mountpoint;
		size_t n = mnt ? strlen(mnt) : 0;

		/* Never read through our own mount: map backups/NAME. */
		if (!mnt || !kf_path_under(what, mnt))
			return strdup(what);
		if (strncmp(what + n, MOUNT_BACKUPS, MOUNT_BACKUPS_LEN) != 0 ||
		    strchr(what + n + MOUNT_BACKUPS_LEN, '/')) {
			kf_err_set(err, "a path inside the mount; give a name "
					"from backups/");
			return NULL;
		}
		what += n + MOUNT_BACKUPS_LEN;
	}
	if (!kf_backup_stem(what, false, stem)) {
		kf_err_set(err, "not a backup name or absolute path");
		return NULL;
	}
	kf_backup_file_name(stem, file);
	return kf_path_join(m->cfg->backup_dir, file);
}

/*
 * The keyring a restore adopts: `restored` less what `old` retired since
 * (unless force), the retired numbers of both remembered.  The record gets
 * what was kept out ("retired_kept_out") or brought back ("unretired").
 */
static int adopt_retired(struct kf_keyring *old, struct kf_keyring **restored,
			 bool force, json_t *rec, char *ret_note,
			 char why[KF_ERR_MAX])
{
	struct kf_keyring *adopted = NULL;
	json_t *touched = json_array(); /* held by the archive, retired here */
	char list[KF_ERR_MAX] = "";
	int r;

	for (size_t i = 0; i < kf_keyring_count(*restored); i++) {
		uint32_t v = kf_keyring_at(*restored, i)->version;

		if (!kf_keyring_is_retired(old, v))
			continue;
		json_array_append_new(touched, json_integer(v));
		snprintf(list + strlen(list), sizeof(list) - strlen(list),
			 "%s%" PRIu32, json_array_size(touched) > 1 ? ", " : "",
			 v);
	}
	r = kf_keyring_adopt_retired(*restored, old, force, &adopted);
	if (r == -EBUSY) {
		kf_err_set(why,
			   "the archive's current version %" PRIu32
			   " was retired; to bring a retired key back, "
			   "restore with \"force\" (NAME force)",
			   kf_keyring_current_version(*restored));
	} else if (r < 0) {
		kf_err_set(why, "%s", strerror(-r));
	} else {
		kf_keyring_unref(*restored);
		*restored = adopted;
		if (json_array_size(touched) > 0)
			json_object_set(
			    rec, force ? "unretired" : "retired_kept_out",
			    touched);
		if (ret_note && !force && json_array_size(touched) > 0)
			kf_err_set(ret_note,
				   "retired versions stay retired: %s (restore "
				   "with \"force\" to bring them back)",
				   list);
	}
	json_decref(touched);
	return r;
}

/* A key_restore record with what was asked: the archive, force. */
static json_t *restore_record(const struct kf_caller *who, const char *what,
			      bool force)
{
	json_t *rec = kf_event_record(KF_EVENT_KEY_RESTORE, who);

	if (what)
		json_object_set_new(rec, "backup", json_string(what));
	if (force)
		json_object_set_new(rec, "force", json_true());
	return rec;
}

int kf_mgr_backup_read_either(const struct kf_subkeys *keys,
			      const struct kf_subkeys *next, const char *path,
			      uint8_t **ret_blob, size_t *ret_len,
			      struct kf_backup_info *ret_info,
			      char err[KF_ERR_MAX])
{
	int r = kf_backup_read(path, keys->backup, ret_blob, ret_len, ret_info,
			       err);

	if (r == -EBADMSG && next &&
	    kf_backup_read(path, next->backup, ret_blob, ret_len, ret_info,
			   NULL) == 0)
		r = 0;
	return r;
}

int kf_mgr_backup_read(const struct kf_manager *m, const char *path,
		       uint8_t **ret_blob, size_t *ret_len,
		       char err[KF_ERR_MAX])
{
	return kf_mgr_backup_read_either(m->keys, m->next_keys, path, ret_blob,
					 ret_len, NULL, err);
}

/* The keyring in the archive at path; -EBADMSG when it does not decode. */
static int read_archive(struct kf_manager *m, const char *path,
			struct kf_keyring **ret, char why[KF_ERR_MAX])
{
	uint8_t *blob = NULL;
	size_t len = 0;
	int r;

	r = kf_mgr_backup_read(m, path, &blob, &len, why);
	if (r < 0)
		return r;
	r = kf_keyring_decode(blob, len, ret, why);
	sodium_free(blob);
	return r < 0 ? -EBADMSG : 0;
}

/*
 * A restore of the archive at path, under op_lock (kf_mgr_adopt_locked).
 * 0, KF_FILE_UNSYNCED or -errno (with *cancel_seq as kf_mgr_commit sets
 * it).
 */
static int restore_locked(struct kf_manager *m, const struct kf_caller *who,
			  const char *what, const char *path, bool force,
			  uint32_t *ret_version, char *ret_note,
			  uint64_t *cancel_seq, char why[KF_ERR_MAX])
{
	struct kf_keyring *restored = NULL;
	json_t *rec = restore_record(who, what, force);
	int r;

	r = read_archive(m, path, &restored, why);
	if (r == 0)
		r = kf_mgr_adopt_locked(m, restored, rec, force, ret_version,
					ret_note, cancel_seq, why);
	json_decref(rec);
	kf_keyring_unref(restored);
	return r;
}

int kf_mgr_adopt_locked(struct kf_manager *m, struct kf_keyring *given,
			json_t *rec, bool force, uint32_t *ret_version,
			char *ret_note, uint64_t *cancel_seq,
			char why[KF_ERR_MAX])
{
	struct kf_keyring *old, *restored = kf_keyring_ref(given), *next = NULL;
	char pre[KF_BACKUP_FILE_NAME_MAX] = "";
	int r = 0;

	old = kf_mgr_current(m);
	if (old)
		r = adopt_retired(old, &restored, force, rec, ret_note, why);
	/* A restore never loses a key: the keyring it replaces is kept. */
	if (r == 0 && old) {
		r = kf_mgr_write_backup(m, old, NULL,
					KF_BACKUP_PRE_RESTORE_PREFIX, pre, why);
		if (r < 0)
			kf_err_prefix(why,
				      "backup of the current keyring failed: ");
	}
	/*
	 * Numbers issued before stay issued, even when the keyring was lost:
	 * the next rotation goes above the keyring's and every archive's.
	 */
	if (r == 0) {
		r = kf_keyring_raise_highest(
		    restored, kf_mgr_highest_known(m, old), &next);
		if (r < 0)
			kf_err_set(why, "%s", strerror(-r));
	}
	if (r == 0) {
		json_object_set_new(
		    rec, "key_version",
		    json_integer(kf_keyring_current_version(next)));
		json_object_set_new(
		    rec, "previous_version",
		    old ? json_integer(kf_keyring_current_version(old))
			: json_null());
		json_object_set_new(rec, "versions",
				    kf_mgr_versions_json(next));
		json_object_set_new(rec, "pre_restore_backup",
				    old ? json_string(pre) : json_null());
		r = kf_mgr_commit(m, next, rec, cancel_seq, why);
		if (r < 0 && old)
			kf_mgr_remove_backup(m, pre);
		if (r >= 0 && ret_version)
			*ret_version = kf_keyring_current_version(next);
	}
	kf_keyring_unref(next);
	kf_keyring_unref(restored);
	kf_keyring_unref(old);
	return r;
}

int kf_manager_restore(struct kf_manager *m, const struct kf_caller *who,
		       const char *what, bool force, uint32_t *ret_version,
		       char *ret_note, char err[KF_ERR_MAX])
{
	char why[KF_ERR_MAX];
	uint64_t cancel = 0;
	char *path;
	int r = -EINVAL;

	path = restore_path(m, what, why);
	if (path) {
		if (ret_note)
			ret_note[0] = 0;
		pthread_mutex_lock(&m->op_lock);
		r = restore_locked(m, who, what, path, force, ret_version,
				   ret_note, &cancel, why);
		pthread_mutex_unlock(&m->op_lock);
	}
	if (r < 0) {
		kf_err_set(err, "KeyBackupError: Failed to restore keys: %s",
			   why);
		/* A name that is not one is not recorded: a pasted key? */
		kf_mgr_report_failure(
		    m, restore_record(who, path ? what : NULL, force), cancel,
		    err);
		free(path);
		if (r == -ESTALE)
			kf_mgr_notify(m);
		return r;
	}
	free(path);
	kf_mgr_notify(m);
	if (r == KF_FILE_UNSYNCED) {
		snprintf(err, KF_ERR_MAX, "%s", why);
		return -EIO;
	}
	return 0;
}

/* --- prune and list ------------------------------------------------------ */

/* A backup_cleanup record with what was asked: keep, force. */
static json_t *prune_record(const struct kf_caller *who, unsigned keep,
			    bool force)
{
	json_t *rec = kf_event_record(KF_EVENT_BACKUP_CLEANUP, who);

	json_object_set_new(rec, "keep", json_integer(keep));
	if (force)
		json_object_set_new(rec, "force", json_true());
	return rec;
}

int kf_manager_prune(struct kf_manager *m, const struct kf_caller *who,
		     unsigned keep, bool force, size_t *ret_deleted,
		     size_t *ret_kept_last, char err[KF_ERR_MAX])
{
	struct prune_ctx ctx = {m, NULL};
	struct kf_backup_prune_opts o = {.keep = keep,
					 .force = force,
					 .held = keyring_holds,
					 .deleted = pruned,
					 .data = &ctx,
					 .cache = m->backups};
	struct kf_backup_prune_result res = {0};
	uint64_t seq = 0;
	size_t done = 0;
	json_t *rec;
	int r;

	if (keep == 0 && !force) {
		kf_err_set(err, "pruning to 0 would delete every backup; "
				"write \"0 force\" to mean it");
		kf_mgr_report_failure(m, prune_record(who, keep, force), 0,
				      err);
		return -EINVAL;
	}
	pthread_mutex_lock(&m->op_lock);
	ctx.kr = kf_mgr_current(m);
	/* Planned, then recorded, then done: unrecorded, nothing changes. */
	o.dry_run = true;
	r = m->cl ? kf_mgr_cluster_usable(m, err) : 0;
	if (r == 0)
		r = kf_backup_prune(m->cfg->backup_dir, &o, &res, err);
	if (r == 0) {
		rec = prune_record(who, keep, force);
		json_object_set_new(rec, "deleted",
				    json_integer((json_int_t)res.deleted));
		json_object_set_new(rec, "kept_last_copies",
				    json_integer((json_int_t)res.protected));
		json_object_set_new(rec, "success", json_true());
		r = kf_mgr_record_durable(m, rec, &seq, err);
		json_decref(rec);
		if (r < 0)
			kf_err_prefix(err, "audit log: ");
	}
	if (r == 0) {
		o.dry_run = false;
		r = kf_backup_prune(m->cfg->backup_dir, &o, &res, err);
		done = res.deleted;
	}
	kf_keyring_unref(ctx.kr);
	pthread_mutex_unlock(&m->op_lock);
	if (r < 0) {
		/* What was asked and what happened; the success line, if
		 * written, did not come true. */
		rec = prune_record(who, keep, force);
		json_object_set_new(rec, "deleted",
				    json_integer((json_int_t)done));
		kf_mgr_report_failure(m, rec, seq, err);
		return r;
	}
	*ret_deleted = res.deleted;
	if (ret_kept_last)
		*ret_kept_last = res.protected;
	return 0;
}

int kf_manager_list_backups(struct kf_manager *m, struct kf_backup_info **ret,
			    size_t *ret_n, char err[KF_ERR_MAX])
{
	return kf_backup_list(m->cfg->backup_dir, ret, ret_n, err);
}
