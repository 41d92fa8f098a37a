// SPDX-License-Identifier: MIT
/*
 * manager: the LocalKeyManager of the seed document, on top of keyring,
 * store, backup, audit and master; this file holds its commit protocol and
 * the records it writes (the other files: manager_private.h).
 *
 * Every operation that changes the keyring goes through kf_mgr_commit():
 *
 *   1. append its audit record (a write(2), no fsync: readers' opens, which
 *      are audited too, never wait for the disk) -- if that fails, the
 *      operation is refused and nothing has changed;
 *   2. seal the new keyring plus the anchor that record left (state.h) and
 *      store it aside, durably (the store's prepare);
 *   3. fdatasync the audit log (kf_audit_sync);
 *   4. make the stored state current (the store's commit: for the file
 *      store, rename it into place and fsync the directory);
 *   5. swap the in-memory keyring pointer.
 *
 * So a change is never visible, in memory or on disk, before its audit
 * record is durable, and the sealed state holds the anchor of its own
 * record.  If step 2, 3 or 4 fails, nothing changed but the log holds a
 * success record: the failure record that follows names it ("cancels_seq").
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
#include "state.h"

/* --- records ------------------------------------------------------------- */

/*
 * Counts record's operation (its "event") as done or failed, for metrics.
 * A few string comparisons per management operation: cheap beside its
 * fsync.
 */
static void count_record(struct kf_manager *m, json_t *record, bool ok)
{
	const char *ev = json_string_value(json_object_get(record, "event"));

	for (int e = 0; ev && e < KF_EVENT_COUNT; e++) {
		if (strcmp(ev, kf_event_name((enum kf_event)e)) == 0) {
			m->counters.events[e][ok ? 0 : 1]++;
			return;
		}
	}
}

int kf_mgr_record_durable(struct kf_manager *m, json_t *record,
			  uint64_t *ret_seq, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	int r;

	r = kf_audit_append_anchored(m->audit, record, &anchor, err);
	if (r == 0) {
		if (ret_seq)
			*ret_seq = anchor.seq;
		r = kf_audit_sync(m->audit, err);
	}
	/* Failures are counted where they are reported. */
	if (r == 0 && json_is_true(json_object_get(record, "success")))
		count_record(m, record, true);
	return r;
}

/*
 * Runs alert_command with one line on its standard input: the failure's
 * audit record as a JSON object -- "timestamp", "seq" of its line in the
 * audit log (absent when the log could not take it, then "audit_error"
 * says why), "host" -- then the record's own fields, and a final newline,
 * so alerts appended to one file stay one per line.
 */
static void run_alert(const struct kf_config *cfg, json_t *record, uint64_t seq,
		      const char *audit_error)
{
	char ts[KF_RFC3339_LEN + 1], host[256] = "";
	json_t *alert;
	char *text;

	if (!cfg->alert_command || !*cfg->alert_command)
		return;
	alert = json_object();
	kf_time_rfc3339(kf_time_now(), ts);
	json_object_set_new(alert, "timestamp", json_string(ts));
	if (seq > 0)
		json_object_set_new(alert, "seq",
				    json_integer((json_int_t)seq));
	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = 0;
	json_object_set_new(alert, "host", json_string(host));
	json_object_update(alert, record);
	if (audit_error)
		json_object_set_new(alert, "audit_error",
				    json_string(audit_error));
	text = json_dumps(alert, JSON_COMPACT | JSON_ENSURE_ASCII |
				     JSON_PRESERVE_ORDER);
	if (text) {
		char *line;

		if (asprintf(&line, "%s\n", text) > 0) {
			kf_log_run_alert(cfg->alert_command, line);
			free(line);
		}
		free(text);
	}
	json_decref(alert);
}

void kf_mgr_record_failure(struct kf_manager *m, json_t *record,
			   uint64_t cancels_seq, const char *error)
{
	char aerr[KF_ERR_MAX];
	uint64_t seq = 0;
	bool logged = false;

	if (cancels_seq > 0)
		json_object_set_new(record, "cancels_seq",
				    json_integer((json_int_t)cancels_seq));
	json_object_set_new(record, "success", json_false());
	json_object_set_new(record, "error", json_string(error));
	if (m->audit) {
		logged = kf_mgr_record_durable(m, record, &seq, aerr) == 0;
		if (!logged)
			kf_log(LOG_ALERT, "audit log: %s", aerr);
	} else {
		kf_err_set(aerr, "the audit log is not open");
	}
	run_alert(m->cfg, record, seq, logged ? NULL : aerr);
	json_decref(record);
}

void kf_mgr_report_failure(struct kf_manager *m, json_t *record,
			   uint64_t cancels_seq, const char *error)
{
	count_record(m, record, false);
	kf_log(LOG_ALERT, "%s: %s",
	       json_string_value(json_object_get(record, "event")), error);
	kf_mgr_record_failure(m, record, cancels_seq, error);
}

void kf_mgr_alert(struct kf_manager *m, int prio, json_t *record,
		  const char *message)
{
	char aerr[KF_ERR_MAX];
	uint64_t seq = 0;
	bool logged;

	kf_log(prio, "%s", message);
	logged = kf_mgr_record_durable(m, record, &seq, aerr) == 0;
	if (!logged)
		kf_log(LOG_ALERT, "audit log: %s", aerr);
	run_alert(m->cfg, record, seq, logged ? NULL : aerr);
	json_decref(record);
}

json_t *kf_mgr_versions_json(const struct kf_keyring *kr)
{
	json_t *a = json_array();

	for (size_t i = 0; i < kf_keyring_count(kr); i++)
		json_array_append_new(
		    a, json_integer(kf_keyring_at(kr, i)->version));
	return a;
}

/* --- the keyring --------------------------------------------------------- */

struct kf_keyring *kf_mgr_current(struct kf_manager *m)
{
	struct kf_keyring *kr;

	pthread_mutex_lock(&m->kr_lock);
	kr = kf_keyring_ref(m->kr);
	pthread_mutex_unlock(&m->kr_lock);
	return kr;
}

void kf_mgr_swap(struct kf_manager *m, struct kf_keyring *next)
{
	struct kf_keyring *old;

	pthread_mutex_lock(&m->kr_lock);
	old = m->kr;
	m->kr = kf_keyring_ref(next);
	pthread_mutex_unlock(&m->kr_lock);
	kf_keyring_unref(old);
}

void kf_mgr_sealed(struct kf_manager *m, uint64_t seq)
{
	m->sealed_seq = seq;
	kf_audit_set_sealed(m->audit, seq);
}

void kf_mgr_notify(struct kf_manager *m)
{
	if (m->on_change)
		m->on_change(m->on_change_data);
}

/* --- the commit protocol ------------------------------------------------- */

/*
 * Steps 2 to 4 of the protocol for a record already appended with anchor:
 * 0, -errno (nothing changed), or KF_FILE_UNSYNCED from the store's commit.
 */
static int seal_and_commit(struct kf_manager *m, struct kf_keyring *next,
			   const struct kf_audit_anchor *anchor,
			   char err[KF_ERR_MAX])
{
	struct kf_store *st = m->store;
	uint8_t *plain = NULL;
	size_t len = 0;
	int r;

	r = kf_state_encode(next, anchor, &plain, &len, err);
	if (r < 0)
		return r;
	r = st->ops->prepare(st, plain, len, err);
	sodium_free(plain);
	if (r < 0) {
		kf_err_prefix(err, "saving state: ");
		return r;
	}
	r = kf_audit_sync(m->audit, err);
	if (r < 0) {
		st->ops->discard(st);
		kf_err_prefix(err, "audit log: ");
		return r;
	}
	KF_CRASH("manager/commit/audit_synced");
	r = st->ops->commit(st, err);
	if (r < 0)
		kf_err_prefix(err, "saving state: ");
	return r;
}

/*
 * The rename happened, the directory's fsync did not: the change is in
 * effect -- in memory, on disk as far as anyone can see, and in the audit
 * log, which already holds the success record (seq) durably -- so a
 * "state_sync" failure record and an alert say that its durability is not
 * confirmed, and err says so for the caller to pass on.
 */
static void report_unsynced(struct kf_manager *m, struct kf_keyring *next,
			    uint64_t seq, char err[KF_ERR_MAX])
{
	json_t *rec = kf_event_record(KF_EVENT_STATE_SYNC, NULL);
	char why[KF_ERR_MAX];

	snprintf(why, sizeof(why), "%s", err);
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(next)));
	json_object_set_new(rec, "record_seq", json_integer((json_int_t)seq));
	kf_mgr_report_failure(m, rec, 0, why);
	kf_err_set(err,
		   "version %" PRIu32 " is in effect, but the state "
		   "directory could not be synced, so it may not "
		   "survive a crash (%s); check the disk",
		   kf_keyring_current_version(next), why);
}

int kf_mgr_commit(struct kf_manager *m, struct kf_keyring *next, json_t *record,
		  uint64_t *cancel_seq, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	int r;

	if (m->cl) {
		r = kf_mgr_cluster_commit(m, next, record, cancel_seq, err);
		if (r >= 0)
			count_record(m, record, true);
		return r;
	}
	*cancel_seq = 0;
	json_object_set_new(record, "success", json_true());
	r = kf_audit_append_anchored(m->audit, record, &anchor, err);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		return r;
	}
	KF_CRASH("manager/commit/recorded");
	r = seal_and_commit(m, next, &anchor, err);
	if (r < 0) {
		/* The record is in the log: the failure record cancels it. */
		*cancel_seq = anchor.seq;
		return r;
	}
	kf_mgr_sealed(m, anchor.seq);
	/* Even unsynced: a number the disk shows as issued stays issued. */
	kf_mgr_swap(m, next);
	KF_CRASH("manager/commit/swapped");
	if (r == KF_FILE_UNSYNCED)
		report_unsynced(m, next, anchor.seq, err);
	count_record(m, record, true);
	return r;
}

/*
 * Re-seals the current keyring with the audit log's present anchor, so
 * records that changed no key (opens, backups, exports, unmount) are covered
 * by the truncation check too.  Caller holds op_lock.
 */
static int checkpoint_locked(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	struct kf_store *st = m->store;
	struct kf_keyring *kr;
	uint8_t *plain = NULL;
	size_t len = 0;
	int r;

	kf_audit_anchor(m->audit, &anchor);
	if (anchor.seq == m->sealed_seq || !m->kr)
		return 0;
	/* The lines up to the anchor on disk before the state names it. */
	r = kf_audit_sync(m->audit, err);
	if (r < 0)
		return r;
	if (m->cl)
		return kf_mgr_cluster_save_copy(m, err);
	kr = kf_mgr_current(m);
	r = kf_state_encode(kr, &anchor, &plain, &len, err);
	kf_keyring_unref(kr);
	if (r < 0)
		return r;
	r = st->ops->prepare(st, plain, len, err);
	sodium_free(plain);
	if (r < 0)
		return r;
	r = st->ops->commit(st, err);
	/* Nothing is swapped here: an unconfirmed seal is a failed one. */
	if (r == KF_FILE_UNSYNCED)
		return -EIO;
	if (r == 0)
		kf_mgr_sealed(m, anchor.seq);
	return r;
}

int kf_manager_checkpoint(struct kf_manager *m, char err[KF_ERR_MAX])
{
	int r;

	pthread_mutex_lock(&m->op_lock);
	r = checkpoint_locked(m, err);
	pthread_mutex_unlock(&m->op_lock);
	return r;
}

/* --- life cycle and accessors -------------------------------------------- */

struct kf_manager *kf_manager_close(struct kf_manager *m)
{
	if (!m)
		return NULL;
	kf_mgr_cluster_stop(m);
	/* The open windows' repeats, before the anchor is sealed. */
	kf_manager_stop_audit(m);
	if (m->kr && m->audit && m->store) {
		char err[KF_ERR_MAX];

		if (kf_manager_checkpoint(m, err) < 0)
			kf_log(LOG_ALERT, "sealing the audit anchor: %s", err);
	}
	kf_mgr_cluster_free(m);
	kf_keyring_unref(m->kr);
	kf_mgr_audit_free(m);
	kf_audit_close(m->audit);
	kf_backup_cache_free(m->backups);
	kf_usage_free(m->usage);
	kf_store_free(m->store); /* before the keys: it borrows the seal key */
	if (m->lock_fd >= 0)
		close(m->lock_fd);
	if (m->keys)
		sodium_free(m->keys);
	if (m->next_keys)
		sodium_free(m->next_keys);
	pthread_mutex_destroy(&m->op_lock);
	pthread_mutex_destroy(&m->kr_lock);
	free(m);
	return NULL;
}

const struct kf_config *kf_manager_config(const struct kf_manager *m)
{
	return m->cfg;
}

void kf_manager_on_change(struct kf_manager *m, kf_manager_change_fn fn,
			  void *userdata)
{
	m->on_change = fn;
	m->on_change_data = userdata;
}

struct kf_keyring *kf_manager_keyring(struct kf_manager *m)
{
	return kf_mgr_current(m);
}

/* --- audit records of the daemon ----------------------------------------- */

int kf_manager_audit_open(struct kf_manager *m, const struct kf_caller *who,
			  const char *path)
{
	struct kf_window_time now;
	char err[KF_ERR_MAX];
	json_t *rec;
	int r;

	if (m->aud.window) {
		/* A repeat: a lookup and a count, no record (auditing.c). */
		r = kf_window_open(m->aud.window, who, path,
				   kf_window_now(&now), err);
	} else {
		rec = kf_event_record(KF_EVENT_KEY_OPEN, who);
		json_object_set_new(rec, "path", json_string(path));
		r = kf_audit_append(m->audit, rec, false, err);
		json_decref(rec);
	}
	if (r < 0)
		kf_log(LOG_ALERT, "open of %s refused: audit log: %s", path,
		       err);
	return r < 0 ? r : 0;
}

_Static_assert(KF_MANAGER_SEGMENT_NAME_MAX == KF_AUDIT_NAME_MAX,
	       "a segment name fits the manager's buffer");

int kf_manager_audit_rotate(struct kf_manager *m, const struct kf_caller *who,
			    char *ret_name, char err[KF_ERR_MAX])
{
	json_t *by =
	    json_pack("{s:I, s:I, s:I}", "uid", (json_int_t)who->uid, "gid",
		      (json_int_t)who->gid, "pid", (json_int_t)who->pid);
	int r;

	if (!by) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = kf_audit_rotate(m->audit, KF_AUDIT_CLOSE_REQUEST, by, ret_name,
			    err);
	json_decref(by);
	if (r == 0)
		r = kf_manager_audit_retain(m, err);
	if (r < 0)
		kf_mgr_report_failure(
		    m, kf_event_record(KF_EVENT_AUDIT_ROTATE, who), 0, err);
	return r;
}

int kf_manager_audit_retain(struct kf_manager *m, char err[KF_ERR_MAX])
{
	int r;

	/* The anchor first: retention keeps the segment the state names. */
	pthread_mutex_lock(&m->op_lock);
	r = checkpoint_locked(m, err);
	pthread_mutex_unlock(&m->op_lock);
	if (r == 0)
		r = kf_audit_retain(m->audit, err);
	return r;
}

int kf_manager_audit_event(struct kf_manager *m, const struct kf_caller *who,
			   enum kf_event event, json_t *fields)
{
	char err[KF_ERR_MAX];
	json_t *rec = kf_event_record(event, who);
	int r;

	if (fields)
		json_object_update(rec, fields);
	json_object_set_new(rec, "success", json_true());
	r = kf_mgr_record_durable(m, rec, NULL, err);
	json_decref(rec);
	if (r < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	return r;
}

void kf_manager_audit_refused(struct kf_manager *m, const struct kf_caller *who,
			      enum kf_event event, const char *error)
{
	json_t *rec = kf_event_record(event, who);

	/* kf_mgr_report_failure, uncounted: no operation ran (manager.h). */
	kf_log(LOG_ALERT, "%s: %s", kf_event_name(event), error);
	kf_mgr_record_failure(m, rec, 0, error);
}

/* --- counters ------------------------------------------------------------ */

void kf_manager_count_open(struct kf_manager *m, enum kf_manager_open_kind kind)
{
	if (kind < KF_MANAGER_OPEN_KINDS)
		m->counters.opens[kind]++;
}

void kf_manager_count_control(struct kf_manager *m, size_t row, bool ok)
{
	if (row < KF_MANAGER_CONTROLS_MAX)
		m->counters.controls[row][ok ? 0 : 1]++;
}

void kf_manager_counters(struct kf_manager *m, struct kf_manager_counters *ret)
{
	memset(ret, 0, sizeof(*ret));
	for (int e = 0; e < KF_EVENT_COUNT; e++)
		for (int i = 0; i < 2; i++)
			ret->events[e][i] = m->counters.events[e][i];
	for (int k = 0; k < KF_MANAGER_OPEN_KINDS; k++)
		ret->opens[k] = m->counters.opens[k];
	for (size_t c = 0; c < KF_MANAGER_CONTROLS_MAX; c++)
		for (int i = 0; i < 2; i++)
			ret->controls[c][i] = m->counters.controls[c][i];
}
