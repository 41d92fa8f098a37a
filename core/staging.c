// SPDX-License-Identifier: MIT
/*
 * staging: rotation in two steps (README: Staged rotation) -- stage makes
 * the next version, served for decryption but not current; promote makes
 * it current; abort destroys it.  Each changes the keyring through the
 * commit protocol (manager.c), like rotation.c's one-step rotation.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "manager_private.h"

/* A record of event ev with what was asked: the current version. */
static json_t *step_record(enum kf_event ev, const struct kf_caller *who,
			   const struct kf_keyring *kr, bool automatic)
{
	json_t *rec = kf_event_record(ev, who);
	const struct kf_keyring_entry *s = kf_keyring_staged(kr);

	json_object_set_new(rec, "current_version",
			    json_integer(kf_keyring_current_version(kr)));
	if (s)
		json_object_set_new(rec, "staged_version",
				    json_integer(s->version));
	if (automatic)
		json_object_set_new(rec, "automatic", json_true());
	return rec;
}

/*
 * The keyring the step ev makes of old, with err saying why not.  A
 * promotion is a rotation: kf_mgr_rotated_keyring archives it and trims.
 */
static int stepped_keyring(struct kf_manager *m, enum kf_event ev,
			   const struct kf_keyring *old,
			   struct kf_keyring **ret, char *ret_name,
			   char err[KF_ERR_MAX])
{
	const struct kf_keyring_entry *s = kf_keyring_staged(old);
	struct kf_keyring *plus = NULL;
	int r;

	switch (ev) {
	case KF_EVENT_KEY_STAGE:
		r = kf_keyring_stage(old, kf_time_now(), ret);
		if (r == -EBUSY)
			kf_err_set(err,
				   "version %" PRIu32 " is staged already; "
				   "promote or abort it first",
				   s->version);
		break;
	case KF_EVENT_KEY_PROMOTE:
		r = kf_keyring_promote(old, &plus);
		/*
		 * store = etcd: a record encrypted under the new current key
		 * on this node must be readable on every other, so each live
		 * node serves the staged version before it becomes current.
		 */
		if (r == 0 && m->cl) {
			r = kf_mgr_cluster_wait_served(m, s->version, err);
			if (r < 0) {
				kf_keyring_unref(plus);
				return r;
			}
		}
		if (r == 0) {
			r = kf_mgr_rotated_keyring(m, plus, ret, ret_name, err);
			kf_keyring_unref(plus);
			return r;
		}
		break;
	default:
		r = kf_keyring_abort(old, ret);
		break;
	}
	if (r == -ENOENT)
		kf_err_set(err, "no version is staged (stage one first: "
				"write \"stage\")");
	else if (r == -EOVERFLOW)
		kf_err_set(err, "cannot stage: version numbers exhausted");
	else if (r < 0 && r != -EBUSY)
		kf_err_set(err, "cannot %s: %s",
			   ev == KF_EVENT_KEY_STAGE	? "stage"
			   : ev == KF_EVENT_KEY_PROMOTE ? "promote"
							: "abort",
			   strerror(-r));
	return r;
}

/*
 * store = etcd: a scheduled step that another node's schedule took first
 * (the keyring it committed, adopted now, records the same step) is done:
 * recorded as that node's, cancelling this node's own record, and no
 * failure.  Whether it was.
 */
static bool taken_by_other(struct kf_manager *m, const struct kf_caller *who,
			   enum kf_event ev, const struct kf_keyring *old,
			   uint64_t cancel)
{
	const struct kf_cluster_info *won = &m->cl->info;
	char err[KF_ERR_MAX];
	json_t *rec;

	if (won->change != (ev == KF_EVENT_KEY_STAGE	 ? KF_CHANGE_STAGE
			    : ev == KF_EVENT_KEY_PROMOTE ? KF_CHANGE_PROMOTE
							 : 0))
		return false;
	rec = step_record(ev, who, old, true);
	json_object_set_new(rec, "by_node", json_string(won->node));
	json_object_set_new(rec, "generation",
			    json_integer((json_int_t)won->generation));
	if (cancel > 0)
		json_object_set_new(rec, "cancels_seq",
				    json_integer((json_int_t)cancel));
	json_object_set_new(rec, "success", json_true());
	if (kf_mgr_record_durable(m, rec, NULL, err) < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	json_decref(rec);
	return true;
}

int kf_mgr_step_locked(struct kf_manager *m, const struct kf_caller *who,
		       enum kf_event ev, bool automatic, uint32_t *ret_version,
		       char err[KF_ERR_MAX])
{
	struct kf_keyring *old = kf_mgr_current(m), *next = NULL;
	char name[KF_BACKUP_FILE_NAME_MAX] = "";
	uint64_t cancel = 0;
	json_t *rec;
	uint32_t v;
	int r;

	r = stepped_keyring(m, ev, old, &next, name, err);
	if (r < 0)
		goto out;
	/* Stage: an archive holds the staged key before anyone may use it. */
	if (ev == KF_EVENT_KEY_STAGE) {
		r = kf_mgr_write_backup(m, next, NULL, NULL, name, err);
		if (r < 0) {
			kf_err_prefix(err,
				      "backup of the staged keyring failed: ");
			goto out;
		}
	}
	if (ev == KF_EVENT_KEY_PROMOTE)
		v = kf_keyring_current_version(next);
	else if (ev == KF_EVENT_KEY_STAGE)
		v = kf_keyring_staged(next)->version;
	else
		v = kf_keyring_staged(old)->version;
	rec = step_record(ev, who, old, automatic);
	json_object_set_new(rec, "key_version", json_integer(v));
	json_object_set_new(rec, "backup_created", json_boolean(name[0]));
	if (name[0])
		json_object_set_new(rec, "backup", json_string(name));
	r = kf_mgr_commit(m, next, rec, &cancel, err);
	json_decref(rec);
	if (r < 0 && name[0])
		kf_mgr_remove_backup(m, name);
	if (r >= 0 && ret_version)
		*ret_version = v;
	if (r == -ESTALE && automatic && m->cl &&
	    taken_by_other(m, who, ev, old, cancel))
		r = 0;
out:
	if (r < 0)
		kf_mgr_report_failure(m, step_record(ev, who, old, automatic),
				      cancel, err);
	kf_keyring_unref(next);
	kf_keyring_unref(old);
	return r;
}

/* One step, asked for by who: serialised, announced, pruned after. */
static int step(struct kf_manager *m, const struct kf_caller *who,
		enum kf_event ev, uint32_t *ret_version, char err[KF_ERR_MAX])
{
	int r;

	pthread_mutex_lock(&m->op_lock);
	r = kf_mgr_step_locked(m, who, ev, false, ret_version, err);
	pthread_mutex_unlock(&m->op_lock);
	if (r == -ESTALE)
		kf_mgr_notify(m);
	if (r < 0)
		return r;
	kf_mgr_notify(m);
	kf_mgr_prune_automatic(m, who);
	/* In effect but not confirmed durable: the caller hears of it. */
	return r == KF_FILE_UNSYNCED ? -EIO : 0;
}

int kf_manager_stage(struct kf_manager *m, const struct kf_caller *who,
		     uint32_t *ret_version, char err[KF_ERR_MAX])
{
	return step(m, who, KF_EVENT_KEY_STAGE, ret_version, err);
}

int kf_manager_promote(struct kf_manager *m, const struct kf_caller *who,
		       uint32_t *ret_version, char err[KF_ERR_MAX])
{
	return step(m, who, KF_EVENT_KEY_PROMOTE, ret_version, err);
}

int kf_manager_abort(struct kf_manager *m, const struct kf_caller *who,
		     uint32_t *ret_version, char err[KF_ERR_MAX])
{
	return step(m, who, KF_EVENT_KEY_ABORT, ret_version, err);
}
