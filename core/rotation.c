// SPDX-License-Identifier: MIT
/*
 * rotation: a key's life in the manager (DESIGN.md §3) -- rotate, manual
 * or automatic when rotate_interval says it is due, and retire.  Both
 * change the keyring through the commit protocol (manager.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "manager_private.h"

/* A key_rotation record with what was asked: from which version, how. */
static json_t *rotation_record(const struct kf_caller *who, uint32_t from)
{
	json_t *rec = kf_event_record(KF_EVENT_KEY_ROTATION, who);

	json_object_set_new(rec, "previous_version", json_integer(from));
	return rec;
}

int kf_mgr_rotated_keyring(struct kf_manager *m, struct kf_keyring *plus,
			   struct kf_keyring **ret, char *ret_name,
			   char err[KF_ERR_MAX])
{
	char berr[KF_ERR_MAX];
	int r;

	/*
	 * The seed's step 6, taken before the state is replaced: an archive
	 * of the new keyring with every old version still in it.  Versions
	 * beyond retain_versions drop out only when that archive exists.
	 */
	if (kf_mgr_write_backup(m, plus, NULL, NULL, ret_name, berr) < 0) {
		kf_log(LOG_ALERT,
		       "automatic backup failed: %s; older versions are kept "
		       "until a backup holds them",
		       berr);
		ret_name[0] = 0;
		*ret = kf_keyring_ref(plus);
		return 0;
	}
	r = kf_keyring_trim(plus, m->cfg->retain_versions, ret);
	if (r < 0)
		kf_err_set(err, "cannot rotate: %s", strerror(-r));
	return r;
}

/*
 * store = etcd: another node committed first.  If that was a rotation of
 * the keyring this one started from, it is the new key this rotation
 * asked for: recorded (cancelling this node's own record, cancel) and
 * answered with its version and node.  Else -ESTALE stands.
 */
static int superseded(struct kf_manager *m, const struct kf_caller *who,
		      uint32_t from, bool automatic, uint64_t cancel,
		      uint32_t *ret_version, char *ret_note)
{
	const struct kf_cluster_info *won = &m->cl->info;
	char err[KF_ERR_MAX];
	json_t *rec;

	/* cancel 0: coalesced, nothing of this node's own was tried. */
	if (won->change != KF_CHANGE_ROTATE ||
	    (cancel > 0 && won->version == from))
		return -ESTALE;
	rec = rotation_record(who, from);
	json_object_set_new(rec, "key_version", json_integer(won->version));
	json_object_set_new(rec, "by_node", json_string(won->node));
	json_object_set_new(rec, "generation",
			    json_integer((json_int_t)won->generation));
	if (automatic)
		json_object_set_new(rec, "automatic", json_true());
	if (cancel > 0)
		json_object_set_new(rec, "cancels_seq",
				    json_integer((json_int_t)cancel));
	else
		json_object_set_new(rec, "coalesced", json_true());
	json_object_set_new(rec, "success", json_true());
	if (kf_mgr_record_durable(m, rec, NULL, err) < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	json_decref(rec);
	if (ret_version)
		*ret_version = won->version;
	if (ret_note)
		kf_err_set(ret_note, "by node %s", won->node);
	return 0;
}

/* 0 or KF_FILE_UNSYNCED (in effect), or -errno with nothing changed. */
static int rotate_locked(struct kf_manager *m, const struct kf_caller *who,
			 bool automatic, uint32_t *ret_version, char *ret_note,
			 char err[KF_ERR_MAX])
{
	struct kf_keyring *old = kf_mgr_current(m), *plus = NULL, *next = NULL;
	uint32_t from = kf_keyring_current_version(old);
	char name[KF_BACKUP_FILE_NAME_MAX] = "";
	uint64_t cancel = 0;
	json_t *rec;
	int r;

	/*
	 * store = etcd: a rotation asked for just after the cluster's last
	 * one (an orchestrator rotating every replica at once, whose writes
	 * reach the nodes a few milliseconds apart) is answered by it.
	 */
	if (m->cl && !automatic &&
	    kf_time_mono_ms() - m->cl->rotated_ms < KF_MGR_COALESCE_MS) {
		r = superseded(m, who, from, false, 0, ret_version, ret_note);
		if (r == 0)
			goto out;
	}
	r = kf_keyring_rotate(old, kf_time_now(), &plus);
	if (r < 0) {
		kf_err_set(err, "cannot rotate: %s",
			   r == -EOVERFLOW ? "version numbers exhausted"
			   : r == -E2BIG   ? "the keyring is full (backups "
					     "failing?); retire old versions"
			   : r == -EBUSY   ? "a version is staged; promote "
					     "or abort it first"
					   : strerror(-r));
		goto out;
	}
	r = kf_mgr_rotated_keyring(m, plus, &next, name, err);
	if (r < 0)
		goto out;
	rec = rotation_record(who, from);
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(next)));
	json_object_set_new(rec, "backup_created", json_boolean(name[0]));
	if (name[0])
		json_object_set_new(rec, "backup", json_string(name));
	if (automatic)
		json_object_set_new(rec, "automatic", json_true());
	r = kf_mgr_commit(m, next, rec, &cancel, err);
	json_decref(rec);
	if (r < 0 && name[0])
		kf_mgr_remove_backup(m, name);
	if (r >= 0 && ret_version)
		*ret_version = kf_keyring_current_version(next);
	if (r == -ESTALE && superseded(m, who, from, automatic, cancel,
				       ret_version, ret_note) == 0)
		r = 0;
out:
	if (r < 0) {
		rec = rotation_record(who, from);
		if (automatic)
			json_object_set_new(rec, "automatic", json_true());
		kf_mgr_report_failure(m, rec, cancel, err);
	}
	kf_keyring_unref(next);
	kf_keyring_unref(plus);
	kf_keyring_unref(old);
	return r;
}

/*
 * Seconds until kr's next scheduled step is due (<= 0: due); -1 = none.
 * With a version staged, that is its promotion (rotate_mode = stage with
 * stage_delay set), or nothing: a staged version is promoted or aborted
 * before the key rotates again.
 */
static int64_t due_in(const struct kf_manager *m, const struct kf_keyring *kr)
{
	const struct kf_keyring_entry *s = kf_keyring_staged(kr);
	int64_t due;

	if (s) {
		if (m->cfg->rotate_mode != KF_ROTATE_STAGE ||
		    m->cfg->stage_delay <= 0)
			return -1;
		due = s->created + m->cfg->stage_delay - kf_time_now();
		return due < 0 ? 0 : due;
	}
	if (m->cfg->rotate_interval <= 0)
		return -1;
	due = kf_keyring_at(kr, 0)->created + m->cfg->rotate_interval -
	      kf_time_now();
	return due < 0 ? 0 : due;
}

/*
 * A rotation; an automatic one only if still due once op_lock is held, so
 * a manual rotation that just ran is never followed by an automatic one.
 * *ret_rotated (may be NULL) says whether it rotated.
 */
static int rotate(struct kf_manager *m, const struct kf_caller *who,
		  bool automatic, uint32_t *ret_version, char *ret_note,
		  bool *ret_rotated, char err[KF_ERR_MAX])
{
	struct kf_keyring *kr;
	bool due = true, staged = false;
	int r = 0;

	pthread_mutex_lock(&m->op_lock);
	if (automatic) {
		kr = kf_mgr_current(m);
		due = due_in(m, kr) == 0;
		staged = kf_keyring_staged(kr) != NULL;
		kf_keyring_unref(kr);
	}
	if (ret_note)
		ret_note[0] = 0;
	if (due && staged)
		r = kf_mgr_step_locked(m, who, KF_EVENT_KEY_PROMOTE, true,
				       ret_version, err);
	else if (due && automatic && m->cfg->rotate_mode == KF_ROTATE_STAGE)
		r = kf_mgr_step_locked(m, who, KF_EVENT_KEY_STAGE, true,
				       ret_version, err);
	else if (due)
		r = rotate_locked(m, who, automatic, ret_version, ret_note,
				  err);
	pthread_mutex_unlock(&m->op_lock);
	/* Lost a race: the keyring adopted meanwhile is served now. */
	if (r == -ESTALE)
		kf_mgr_notify(m);
	if (ret_rotated)
		*ret_rotated = due && r >= 0;
	if (due && r >= 0) {
		kf_mgr_notify(m);
		kf_mgr_prune_automatic(m, who);
	}
	/* In effect but not confirmed durable: the caller hears of it. */
	return r == KF_FILE_UNSYNCED ? -EIO : r;
}

int kf_manager_rotate(struct kf_manager *m, const struct kf_caller *who,
		      uint32_t *ret_version, char *ret_note,
		      char err[KF_ERR_MAX])
{
	return rotate(m, who, false, ret_version, ret_note, NULL, err);
}

int64_t kf_manager_rotation_due_in(struct kf_manager *m)
{
	struct kf_keyring *kr = kf_mgr_current(m);
	int64_t due = due_in(m, kr);

	kf_keyring_unref(kr);
	return due;
}

int kf_manager_rotate_if_due(struct kf_manager *m, bool *ret_rotated,
			     char err[KF_ERR_MAX])
{
	struct kf_caller self;

	*ret_rotated = false;
	if (kf_manager_rotation_due_in(m) != 0)
		return 0;
	return rotate(m, kf_event_self(&self), true, NULL, NULL, ret_rotated,
		      err);
}

/*
 * A key_retire record with what was asked: the version, force, and the
 * version's recent readers when usage is counted (readers may be NULL).
 */
static json_t *retire_record(const struct kf_caller *who, uint32_t version,
			     bool force, json_t *readers)
{
	json_t *rec = kf_event_record(KF_EVENT_KEY_RETIRE, who);

	json_object_set_new(rec, "key_version", json_integer(version));
	json_object_set_new(rec, "force", json_boolean(force));
	if (readers)
		json_object_set(rec, "readers", readers);
	return rec;
}

/* old less `version`, with err saying why not. */
static int retired_keyring(const struct kf_keyring *old, uint32_t version,
			   struct kf_keyring **ret, char err[KF_ERR_MAX])
{
	int r = kf_keyring_retire(old, version, ret);

	if (r == -EBUSY)
		kf_err_set(err,
			   "version %" PRIu32 " is the current key; "
			   "rotate first",
			   version);
	else if (r == -ENOENT)
		kf_err_set(err, "version %" PRIu32 " is not in the keyring",
			   version);
	else if (r < 0)
		kf_err_set(err, "cannot retire: %s", strerror(-r));
	return r;
}

int kf_manager_retire(struct kf_manager *m, const struct kf_caller *who,
		      uint32_t version, bool force, char *ret_note,
		      char err[KF_ERR_MAX])
{
	struct kf_keyring *old, *next = NULL;
	char name[KF_BACKUP_FILE_NAME_MAX] = "";
	json_t *rec, *readers = NULL;
	uint64_t cancel = 0;
	int r;

	if (ret_note)
		ret_note[0] = 0;
	pthread_mutex_lock(&m->op_lock);
	old = kf_mgr_current(m);
	r = retired_keyring(old, version, &next, err);
	if (r < 0)
		goto out;
	/* Still read (or maybe): refused, unless the caller insists. */
	r = kf_mgr_usage_check(m, version, &readers, err);
	if (r == -EBUSY && force) {
		if (ret_note)
			snprintf(ret_note, KF_ERR_MAX, "forced: %s", err);
		err[0] = 0;
		r = 0;
	}
	if (r < 0)
		goto out;
	/* A backup first: retiring is the one way a key is destroyed. */
	r = kf_mgr_write_backup(m, old, NULL, NULL, name, err);
	if (r < 0) {
		kf_err_prefix(err, "backup before retire failed: ");
		goto out;
	}
	rec = retire_record(who, version, force, readers);
	json_object_set_new(rec, "current_version",
			    json_integer(kf_keyring_current_version(old)));
	json_object_set_new(rec, "backup_created", json_true());
	json_object_set_new(rec, "backup", json_string(name));
	r = kf_mgr_commit(m, next, rec, &cancel, err);
	json_decref(rec);
	/* Refused: leave nothing behind, not even the backup. */
	if (r < 0)
		kf_mgr_remove_backup(m, name);
out:
	pthread_mutex_unlock(&m->op_lock);
	kf_keyring_unref(next);
	kf_keyring_unref(old);
	if (r < 0) {
		kf_mgr_report_failure(
		    m, retire_record(who, version, force, readers), cancel,
		    err);
		json_decref(readers);
		if (r == -ESTALE)
			kf_mgr_notify(m);
		return r;
	}
	json_decref(readers);
	kf_mgr_usage_forget(m, version);
	kf_mgr_notify(m);
	kf_mgr_prune_automatic(m, who);
	return r == KF_FILE_UNSYNCED ? -EIO : 0;
}
