// SPDX-License-Identifier: MIT
/*
 * manager: the LocalKeyManager of the seed document, on top of keyring,
 * store, backup, audit and master.
 *
 * Every operation that changes the keyring goes through commit_keyring():
 *
 *   1. append its audit record (a write(2), no fsync: readers' opens, which
 *      are audited too, never wait for the disk) -- if that fails, the
 *      operation is refused and nothing has changed;
 *   2. seal the new keyring plus the anchor that record left into a
 *      temporary state file, fsync'd (kf_store_prepare);
 *   3. fdatasync the audit log (kf_audit_sync);
 *   4. rename the state file into place and fsync the directory;
 *   5. swap the in-memory keyring pointer.
 *
 * So a change is never visible, in memory or on disk, before its audit
 * record is durable, and the sealed state holds the anchor of its own
 * record.  If step 2, 3 or 4 fails, nothing changed but the log holds a
 * success record: the failure record that follows names it ("cancels_seq").
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit.h"
#include "env.h"
#include "backup.h"
#include "key.h"
#include "keyring.h"
#include "log.h"
#include "manager.h"
#include "master.h"
#include "store.h"

#define ANCHOR_BYTES (8 + KF_AUDIT_CHAIN_BYTES)
#define AUTO_BACKUP_PREFIX "key_backup_"

struct kf_subkeys {
	uint8_t state[32];
	uint8_t backup[32];
	uint8_t audit[32];
};

struct kf_manager {
	const struct kf_config *cfg;
	struct kf_subkeys *keys; /* sodium_malloc'd; read-only after open */
	struct kf_audit *audit;	 /* locks itself */
	int lock_fd;		 /* flock'd state_dir/lock */
	uint64_t sealed_seq;	 /* anchor in the state; op_lock */
	bool restore_only;	 /* may run without a keyring */

	pthread_mutex_t op_lock; /* serialises management operations */
	pthread_mutex_t kr_lock; /* held only to read or swap kr */
	struct kf_keyring *kr;	 /* protected by kr_lock */

	kf_manager_change_fn on_change; /* set before any request runs */
	void *on_change_data;
};

/* --- helpers ------------------------------------------------------------ */

/*
 * Appends record and waits until it is on disk, without holding the audit
 * lock across the fdatasync (audited opens never wait for the disk).  If
 * the sync fails the line cannot be taken back: "cancels_seq" is added to
 * record so that the failure record the caller writes names it.
 * *ret_seq (may be NULL) gets the record's seq once it is in the log.
 */
static int record_durable(struct kf_manager *m, json_t *record,
			  uint64_t *ret_seq, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	int r;

	r = kf_audit_append_anchored(m->audit, record, &anchor, err);
	if (r == 0) {
		if (ret_seq)
			*ret_seq = anchor.seq;
		r = kf_audit_sync(m->audit, err);
		if (r < 0)
			json_object_set_new(
			    record, "cancels_seq",
			    json_integer((json_int_t)anchor.seq));
	}
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

/*
 * A failure's audit record (success false, best effort: the failure may be
 * the audit log itself) and alert_command; `record` is consumed.
 */
static void record_failure(struct kf_manager *m, json_t *record,
			   const char *error)
{
	char aerr[KF_ERR_MAX];
	uint64_t seq = 0;
	bool logged = false;

	json_object_set_new(record, "success", json_false());
	json_object_set_new(record, "error", json_string(error));
	if (m->audit) {
		logged = record_durable(m, record, &seq, aerr) == 0;
		if (!logged)
			kf_log(LOG_ALERT, "audit log: %s", aerr);
	} else {
		kf_err_set(aerr, "the audit log is not open");
	}
	run_alert(m->cfg, record, seq, logged ? NULL : aerr);
	json_decref(record);
}

/* A failed operation: record_failure plus an alert-priority log line. */
static void report_failure(struct kf_manager *m, json_t *record,
			   const char *error)
{
	kf_log(LOG_ALERT, "%s: %s",
	       json_string_value(json_object_get(record, "event")), error);
	record_failure(m, record, error);
}

static struct kf_keyring *current_ref(struct kf_manager *m)
{
	struct kf_keyring *kr;

	pthread_mutex_lock(&m->kr_lock);
	kr = kf_keyring_ref(m->kr);
	pthread_mutex_unlock(&m->kr_lock);
	return kr;
}

static void swap_keyring(struct kf_manager *m, struct kf_keyring *next)
{
	struct kf_keyring *old;

	pthread_mutex_lock(&m->kr_lock);
	old = m->kr;
	m->kr = kf_keyring_ref(next);
	pthread_mutex_unlock(&m->kr_lock);
	kf_keyring_unref(old);
}

static void notify_change(struct kf_manager *m)
{
	if (m->on_change)
		m->on_change(m->on_change_data);
}

/* The versions held by kr, newest first, as a JSON array. */
static json_t *versions_json(const struct kf_keyring *kr)
{
	json_t *a = json_array();

	for (size_t i = 0; i < kf_keyring_count(kr); i++)
		json_array_append_new(
		    a, json_integer(kf_keyring_at(kr, i)->version));
	return a;
}

/*
 * Writes a backup archive of kr into backup_dir.  name NULL: generated
 * (with prefix when non-NULL).
 */
static int write_backup(struct kf_manager *m, const struct kf_keyring *kr,
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
	r = kf_backup_write(m->cfg->backup_dir, name, prefix, m->keys->backup,
			    blob, len, kf_keyring_current_version(kr), versions,
			    n, kf_time_now(), ret_name, err);
	sodium_free(blob);
	return r;
}

static void remove_backup(struct kf_manager *m, const char *file)
{
	char *path = kf_path_join(m->cfg->backup_dir, file);

	if (path && unlink(path) == 0 && kf_dir_fsync(m->cfg->backup_dir) < 0)
		kf_log(LOG_WARNING, "fsync of %s failed", m->cfg->backup_dir);
	free(path);
}

/*
 * The commit protocol described at the top of this file.  `record` (not
 * consumed) gets "success": true added.  On failure nothing changed, unless
 * the final rename failed after the record was written, which is then
 * followed by a failure record.
 */
/* The sealed state's plaintext: the audit anchor, then the keyring. */
static int state_plain(const struct kf_keyring *kr,
		       const struct kf_audit_anchor *anchor, uint8_t **ret,
		       size_t *ret_len, char err[KF_ERR_MAX])
{
	uint8_t *blob = NULL, *plain;
	size_t len = 0;
	int r;

	r = kf_keyring_encode(kr, &blob, &len);
	if (r < 0) {
		kf_err_set(err, "cannot encode keyring: %s", strerror(-r));
		return r;
	}
	plain = sodium_malloc(ANCHOR_BYTES + len);
	if (!plain) {
		sodium_free(blob);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_le_put64(plain, anchor->seq);
	memcpy(plain + 8, anchor->chain, KF_AUDIT_CHAIN_BYTES);
	memcpy(plain + ANCHOR_BYTES, blob, len);
	sodium_free(blob);
	*ret = plain;
	*ret_len = ANCHOR_BYTES + len;
	return 0;
}

/*
 * The commit protocol described at the top of this file.  `record` (not
 * consumed) gets "success": true added.  Returns 0 (committed), -errno
 * (nothing changed; the record, if written, is cancelled by the failure
 * record the caller writes: "cancels_seq"), or KF_FILE_UNSYNCED: the state
 * was renamed into place but the directory's fsync failed.  The change is
 * then in effect -- in memory, on disk as far as anyone can see, and in the
 * audit log, which already holds the success record durably -- so memory
 * is swapped (a number the disk shows as issued is never issued again), a
 * "state_sync" failure record and an alert say that its durability is not
 * confirmed, and err says so for the caller to pass on.
 */
static int commit_keyring(struct kf_manager *m, struct kf_keyring *next,
			  json_t *record, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	struct kf_store_pending sp;
	uint8_t *plain = NULL;
	size_t len = 0;
	int r;

	json_object_set_new(record, "success", json_true());
	r = kf_audit_append_anchored(m->audit, record, &anchor, err);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		return r;
	}
	r = state_plain(next, &anchor, &plain, &len, err);
	if (r == 0) {
		r = kf_store_prepare(m->cfg->state_dir, m->keys->state, plain,
				     len, &sp, err);
		sodium_free(plain);
		if (r < 0)
			kf_err_prefix(err, "saving state: ");
	}
	if (r == 0) {
		r = kf_audit_sync(m->audit, err);
		if (r < 0) {
			kf_store_discard(m->cfg->state_dir, &sp);
			kf_err_prefix(err, "audit log: ");
		}
	}
	if (r == 0) {
		r = kf_store_commit(m->cfg->state_dir, &sp, err);
		if (r < 0)
			kf_err_prefix(err, "saving state: ");
	}
	if (r < 0) {
		/* The record is in the log: the failure record cancels it. */
		json_object_set_new(record, "cancels_seq",
				    json_integer((json_int_t)anchor.seq));
		return r;
	}
	m->sealed_seq = anchor.seq;
	swap_keyring(m, next);
	if (r == KF_FILE_UNSYNCED) {
		json_t *rec = kf_event_record(KF_EVENT_STATE_SYNC, NULL);
		char why[KF_ERR_MAX];

		snprintf(why, sizeof(why), "%s", err);
		json_object_set_new(
		    rec, "key_version",
		    json_integer(kf_keyring_current_version(next)));
		json_object_set_new(rec, "record_seq",
				    json_integer((json_int_t)anchor.seq));
		report_failure(m, rec, why);
		kf_err_set(err,
			   "version %" PRIu32 " is in effect, but the state "
			   "directory could not be synced, so it may not "
			   "survive a crash (%s); check the disk",
			   kf_keyring_current_version(next), why);
	}
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
	struct kf_keyring *kr;
	uint8_t *plain = NULL;
	size_t len = 0;
	int r;

	kf_audit_anchor(m->audit, &anchor);
	if (anchor.seq == m->sealed_seq || !m->kr)
		return 0;
	kr = current_ref(m);
	r = state_plain(kr, &anchor, &plain, &len, err);
	kf_keyring_unref(kr);
	if (r < 0)
		return r;
	r = kf_store_save(m->cfg->state_dir, m->keys->state, plain, len, err);
	sodium_free(plain);
	if (r == 0)
		m->sealed_seq = anchor.seq;
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

/* kf_backup_prune's `held`: does the keyring (data) still hold version? */
static bool keyring_holds(uint32_t version, void *data)
{
	return kf_keyring_find(data, version) != NULL;
}

/*
 * Deletes automatic backups beyond backup_keep, never the last copy of a
 * version the keyring no longer has; audits what it did.  Caller holds
 * op_lock, so it never races a restore or a manual prune.
 */
static void prune_automatic_locked(struct kf_manager *m,
				   const struct kf_caller *who)
{
	struct kf_keyring *kr = current_ref(m);
	struct kf_backup_prune_opts o = {.keep = m->cfg->backup_keep,
					 .prefix = KF_BACKUP_AUTO_PREFIX,
					 .held = keyring_holds,
					 .data = kr};
	struct kf_backup_prune_result res;
	char err[KF_ERR_MAX];
	json_t *rec;
	int r;

	r = kf_backup_prune(m->cfg->backup_dir, &o, &res, err);
	kf_keyring_unref(kr);
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
	if (record_durable(m, rec, NULL, err) < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	json_decref(rec);
}

/* prune_automatic_locked under op_lock, after the change was announced. */
static void prune_automatic(struct kf_manager *m, const struct kf_caller *who)
{
	pthread_mutex_lock(&m->op_lock);
	prune_automatic_locked(m, who);
	pthread_mutex_unlock(&m->op_lock);
}

/* --- start-up ----------------------------------------------------------- */

static int parse_version(const char *s, uint32_t *ret)
{
	uint64_t v;

	if (kf_parse_u64(s, UINT32_MAX, &v) < 0 || v == 0)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

/* ENCRYPTION_KEY[_PREVIOUS|_VERSION] into a new keyring. */
static int import_env(struct kf_keyring **ret, char err[KF_ERR_MAX])
{
	const char *cur = kf_env_get(KF_ENV_ENCRYPTION_KEY);
	const char *prev = kf_env_get(KF_ENV_ENCRYPTION_KEY_PREVIOUS);
	const char *ver = getenv("ENCRYPTION_KEY_VERSION");
	uint8_t *keys = sodium_malloc(2 * KF_KEY_BYTES);
	char why[KF_ERR_MAX];
	uint32_t version = 1;
	int r;

	if (!keys) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	if (!*cur) {
		kf_err_set(err, "KeyValidationError: Failed to load keys: "
				"ENCRYPTION_KEY is set but empty");
		r = -EINVAL;
		goto out;
	}
	/* An empty ENCRYPTION_KEY_PREVIOUS is "no previous key" (a .env
	 * template's blank line); every other value must be a key. */
	if (prev && !*prev)
		prev = NULL;
	if (ver && parse_version(ver, &version) < 0) {
		kf_err_set(err, "KeyValidationError: Failed to load keys: "
				"ENCRYPTION_KEY_VERSION is not a positive "
				"integer");
		r = -EINVAL;
		goto out;
	}
	r = kf_key_decode(cur, strlen(cur), keys, why);
	if (r < 0) {
		kf_err_set(err,
			   "KeyValidationError: Failed to load keys: "
			   "ENCRYPTION_KEY: %s",
			   why);
		goto out;
	}
	if (prev) {
		r = kf_key_decode(prev, strlen(prev), keys + KF_KEY_BYTES, why);
		if (r < 0) {
			kf_err_set(err,
				   "KeyValidationError: Failed to load "
				   "keys: ENCRYPTION_KEY_PREVIOUS: %s",
				   why);
			goto out;
		}
	}
	r = kf_keyring_import(keys, prev ? keys + KF_KEY_BYTES : NULL, version,
			      kf_time_now(), ret, why);
	if (r < 0)
		kf_err_set(err, "KeyValidationError: Failed to load keys: %s",
			   why);
out:
	sodium_free(keys);
	return r;
}

/* Splits a state plaintext into the audit anchor and the keyring. */
static int decode_state(const uint8_t *plain, size_t len,
			struct kf_audit_anchor *ret_anchor,
			struct kf_keyring **ret, char err[KF_ERR_MAX])
{
	if (len < ANCHOR_BYTES) {
		kf_err_set(err, "state too short");
		return -EBADMSG;
	}
	ret_anchor->seq = kf_le_get64(plain);
	memcpy(ret_anchor->chain, plain + 8, KF_AUDIT_CHAIN_BYTES);
	return kf_keyring_decode(plain + ANCHOR_BYTES, len - ANCHOR_BYTES, ret,
				 err);
}

/* Warns when ENCRYPTION_KEY is set and differs from the loaded state. */
static void warn_env_differs(const struct kf_keyring *kr)
{
	const char *env = kf_env_get(KF_ENV_ENCRYPTION_KEY);
	uint8_t *key;

	if (!env)
		return;
	key = sodium_malloc(KF_KEY_BYTES);
	if (!key)
		return;
	if (kf_key_decode(env, strlen(env), key, NULL) < 0 ||
	    sodium_memcmp(key, kf_keyring_at(kr, 0)->key, KF_KEY_BYTES) != 0)
		kf_log(LOG_WARNING,
		       "ENCRYPTION_KEY differs from the stored keyring; the "
		       "stored keyring wins (unset ENCRYPTION_KEY to silence "
		       "this)");
	sodium_free(key);
}

static int load_master(struct kf_manager *m, char err[KF_ERR_MAX])
{
	const struct kf_config *cfg = m->cfg;
	bool dev = cfg->mode == KF_MODE_DEVELOPMENT, created = false;
	uint8_t *master;
	int r;

	r = kf_master_load(cfg->master_key_file, dev, &master, &created, err);
	if (r < 0) {
		if (r == -ENOENT && !dev)
			kf_err_prefix(err, "KeyValidationError: No current "
					   "encryption key available: ");
		return r;
	}
	if (created)
		kf_log(LOG_WARNING,
		       "development mode: created a new master key in %s",
		       cfg->master_key_file);
	m->keys = sodium_malloc(sizeof(*m->keys));
	if (!m->keys) {
		sodium_free(master);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_master_subkey(master, KF_SUBKEY_STATE, m->keys->state);
	kf_master_subkey(master, KF_SUBKEY_BACKUP, m->keys->backup);
	kf_master_subkey(master, KF_SUBKEY_AUDIT, m->keys->audit);
	sodium_free(master);
	sodium_mprotect_readonly(m->keys);
	return 0;
}

static int prepare_dirs(struct kf_manager *m, char err[KF_ERR_MAX])
{
	const struct kf_config *cfg = m->cfg;
	struct kf_backup_info *list = NULL;
	size_t n = 0;
	int tightened, r;

	r = kf_dir_ensure(cfg->state_dir, 0700, &tightened, err);
	if (r < 0)
		return r;
	if (tightened)
		kf_log(LOG_WARNING, "%s had a looser mode; set to 0700",
		       cfg->state_dir);
	r = kf_dir_ensure(cfg->backup_dir, 0700, &tightened, err);
	if (r < 0)
		return r;
	if (tightened)
		kf_log(LOG_WARNING, "%s had a looser mode; set to 0700",
		       cfg->backup_dir);
	/* Left by a process killed between writing and renaming. */
	for (int i = 0; i < 2; i++) {
		const char *dir = i ? cfg->backup_dir : cfg->state_dir;
		size_t removed = 0;

		if (kf_dir_sweep_temp(dir, &removed) < 0)
			kf_log(LOG_WARNING,
			       "%s: could not remove every temporary file",
			       dir);
		if (removed > 0)
			kf_log(LOG_NOTICE,
			       "%s: removed %zu temporary file%s left by an "
			       "interrupted write",
			       dir, removed, removed == 1 ? "" : "s");
	}
	if (kf_backup_list(cfg->backup_dir, &list, &n, NULL) == 0) {
		for (size_t i = 0; i < n; i++) {
			char *p = kf_path_join(cfg->backup_dir, list[i].name);
			struct stat st;

			if (p && lstat(p, &st) == 0 && S_ISREG(st.st_mode) &&
			    (st.st_mode & 0177) != 0) {
				if (chmod(p, 0600) == 0)
					kf_log(LOG_WARNING,
					       "%s had mode %04o; set to 0600",
					       p, st.st_mode & 07777);
			}
			free(p);
		}
		free(list);
	}
	return 0;
}

/* The first keyring of this state_dir: imported or generated. */
static int create_keyring(struct kf_manager *m, char err[KF_ERR_MAX])
{
	const char *env = kf_env_get(KF_ENV_ENCRYPTION_KEY);
	enum kf_event event;
	struct kf_keyring *kr = NULL;
	struct kf_caller self;
	char name[KF_BACKUP_NAME_MAX + 6], berr[KF_ERR_MAX];
	json_t *rec;
	int r;

	if (env) {
		r = import_env(&kr, err);
		event = KF_EVENT_KEY_IMPORT;
	} else if (m->cfg->mode == KF_MODE_DEVELOPMENT) {
		uint8_t *key = sodium_malloc(KF_KEY_BYTES);

		if (!key) {
			kf_err_set(err, "out of memory");
			return -ENOMEM;
		}
		kf_key_generate(key);
		r = kf_keyring_new(1, key, kf_time_now(), 1, &kr);
		sodium_free(key);
		if (r < 0)
			kf_err_set(err, "cannot create keyring: %s",
				   strerror(-r));
		event = KF_EVENT_KEY_GENERATE;
	} else {
		kf_err_set(err, "KeyValidationError: No current encryption key "
				"available");
		return -ENOENT;
	}
	if (r < 0)
		return r;
	rec = kf_event_record(event, kf_event_self(&self));
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(kr)));
	json_object_set_new(rec, "versions", versions_json(kr));
	r = commit_keyring(m, kr, rec, err);
	json_decref(rec);
	/* Unsynced: in effect and alerted; the daemon serves it. */
	if (r == KF_FILE_UNSYNCED)
		r = 0;
	if (r == 0) {
		kf_log(LOG_NOTICE, "%s: version %" PRIu32,
		       event == KF_EVENT_KEY_IMPORT ? "imported keys"
						    : "generated a keyring",
		       kf_keyring_current_version(kr));
		/* A first backup, so a new keyring is never held only once. */
		if (write_backup(m, kr, NULL, NULL, name, berr) < 0)
			kf_log(LOG_WARNING, "first backup: %s", berr);
	}
	kf_keyring_unref(kr);
	return r;
}

/* The highest version number known: the keyring's and every archive's. */
static uint32_t highest_known(struct kf_manager *m, const struct kf_keyring *kr)
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

/*
 * A crash between an automatic backup and the state's rename leaves an
 * archive of a version the state never committed: that number must not be
 * issued again, so the keyring's highest goes up to every archive's.
 */
static void raise_to_archives(struct kf_manager *m, struct kf_keyring **kr)
{
	struct kf_keyring *raised = NULL;

	if (kf_keyring_raise_highest(*kr, highest_known(m, *kr), &raised) ==
	    0) {
		kf_keyring_unref(*kr);
		*kr = raised;
	}
}

static int load_keyring(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor, tail;
	struct kf_keyring *kr = NULL;
	struct kf_caller self;
	uint8_t *plain = NULL;
	char why[KF_ERR_MAX];
	size_t len = 0;
	json_t *rec;
	int r;

	r = kf_store_load(m->cfg->state_dir, m->keys->state, &plain, &len, why);
	if (r == -ENOENT)
		return m->restore_only ? 0 : create_keyring(m, err);
	if (r < 0) {
		kf_err_set(err, "KeyValidationError: Failed to load keys: %s",
			   why);
		return r;
	}
	r = decode_state(plain, len, &anchor, &kr, why);
	sodium_free(plain);
	if (r < 0) {
		kf_err_set(err, "KeyValidationError: Failed to load keys: %s",
			   why);
		return r;
	}
	warn_env_differs(kr);
	raise_to_archives(m, &kr);
	m->sealed_seq = anchor.seq;
	kf_audit_anchor(m->audit, &tail);
	if (tail.seq < anchor.seq)
		kf_log(LOG_ALERT,
		       "audit log %s ends at record %" PRIu64
		       " but the sealed state saw record %" PRIu64
		       ": the log was truncated or replaced",
		       m->cfg->audit_log, tail.seq, anchor.seq);
	swap_keyring(m, kr);
	rec = kf_event_record(KF_EVENT_KEY_LOAD, kf_event_self(&self));
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(kr)));
	json_object_set_new(rec, "versions", versions_json(kr));
	json_object_set_new(rec, "success", json_true());
	r = record_durable(m, rec, NULL, err);
	if (r < 0)
		kf_err_prefix(err, "audit log: ");
	json_decref(rec);
	kf_keyring_unref(kr);
	return r;
}

static int lock_state(struct kf_manager *m, char err[KF_ERR_MAX])
{
	char *path = kf_path_join(m->cfg->state_dir, "lock");
	struct stat st;
	int r = 0;

	if (!path) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	/* Only a missing folder is made here; modes are fixed once locked. */
	if (stat(m->cfg->state_dir, &st) < 0 && errno == ENOENT) {
		r = kf_dir_ensure(m->cfg->state_dir, 0700, NULL, err);
		if (r < 0) {
			free(path);
			return r;
		}
	}
	m->lock_fd =
	    open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (m->lock_fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", path, strerror(-r));
	} else if (flock(m->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		kf_err_set(err,
			   "%s is in use by another keyfs process (stop the "
			   "daemon first)",
			   m->cfg->state_dir);
	}
	free(path);
	return r;
}

static int manager_open(const struct kf_config *cfg, bool restore_only,
			struct kf_manager **ret, char err[KF_ERR_MAX])
{
	struct kf_manager *m;
	struct kf_caller self;
	bool broken = false;
	int r;

	if (sodium_init() < 0) {
		kf_err_set(err, "libsodium failed to initialise");
		return -EIO;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	m->cfg = cfg;
	m->restore_only = restore_only;
	m->lock_fd = -1;
	pthread_mutex_init(&m->op_lock, NULL);
	pthread_mutex_init(&m->kr_lock, NULL);
	/*
	 * The lock first: a second process, which will be refused, must not
	 * change the first one's folder (modes, a new master key, temp files).
	 */
	r = lock_state(m, err);
	if (r < 0)
		goto fail;
	r = prepare_dirs(m, err);
	if (r < 0)
		goto fail;
	r = load_master(m, err);
	if (r < 0)
		goto fail;
	r = kf_audit_open(cfg->audit_log, m->keys->audit, &m->audit, &broken,
			  err);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		goto fail;
	}
	if (broken)
		kf_log(LOG_ALERT,
		       "audit log %s does not verify (run keyfs audit verify); "
		       "continuing its chain",
		       cfg->audit_log);
	r = load_keyring(m, err);
	if (r < 0)
		goto fail;
	*ret = m;
	return 0;
fail:
	/* A refused start is a failure like any other: audited if the log
	 * is open, and alerted; the caller logs err once. */
	record_failure(
	    m, kf_event_record(KF_EVENT_STARTUP, kf_event_self(&self)), err);
	kf_manager_close(m);
	return r;
}

int kf_manager_open(const struct kf_config *cfg, struct kf_manager **ret,
		    char err[KF_ERR_MAX])
{
	return manager_open(cfg, false, ret, err);
}

int kf_manager_open_for_restore(const struct kf_config *cfg,
				struct kf_manager **ret, char err[KF_ERR_MAX])
{
	return manager_open(cfg, true, ret, err);
}

struct kf_manager *kf_manager_close(struct kf_manager *m)
{
	if (!m)
		return NULL;
	if (m->kr && m->audit && m->keys) {
		char err[KF_ERR_MAX];

		if (kf_manager_checkpoint(m, err) < 0)
			kf_log(LOG_ALERT, "sealing the audit anchor: %s", err);
	}
	kf_keyring_unref(m->kr);
	kf_audit_close(m->audit);
	if (m->lock_fd >= 0)
		close(m->lock_fd);
	if (m->keys)
		sodium_free(m->keys);
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
	return current_ref(m);
}

/* --- operations --------------------------------------------------------- */

static int rotate_locked(struct kf_manager *m, const struct kf_caller *who,
			 bool automatic, uint32_t *ret_version,
			 char err[KF_ERR_MAX])
{
	struct kf_keyring *old = current_ref(m), *plus = NULL, *next = NULL;
	char name[KF_BACKUP_NAME_MAX + 6] = "", berr[KF_ERR_MAX];
	bool backed_up;
	json_t *rec = kf_event_record(KF_EVENT_KEY_ROTATION, who);
	int r;

	json_object_set_new(rec, "previous_version",
			    json_integer(kf_keyring_current_version(old)));
	r = kf_keyring_rotate(old, kf_time_now(), &plus);
	if (r < 0) {
		kf_err_set(err, "cannot rotate: %s",
			   r == -EOVERFLOW ? "version numbers exhausted"
			   : r == -E2BIG   ? "the keyring is full (backups "
					     "failing?); retire old versions"
					   : strerror(-r));
		goto fail;
	}
	/*
	 * The seed's step 6, taken before the state is replaced: an archive
	 * of the new keyring with every old version still in it.  Versions
	 * beyond retain_versions drop out only when that archive exists.
	 */
	backed_up = write_backup(m, plus, NULL, NULL, name, berr) == 0;
	if (backed_up) {
		r = kf_keyring_trim(plus, m->cfg->retain_versions, &next);
		if (r < 0) {
			kf_err_set(err, "cannot rotate: %s", strerror(-r));
			goto fail;
		}
	} else {
		kf_log(LOG_ALERT,
		       "automatic backup failed: %s; older versions are kept "
		       "until a backup holds them",
		       berr);
		next = kf_keyring_ref(plus);
		name[0] = 0;
	}
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(next)));
	json_object_set_new(rec, "backup_created", json_boolean(backed_up));
	if (backed_up)
		json_object_set_new(rec, "backup", json_string(name));
	if (automatic)
		json_object_set_new(rec, "automatic", json_true());
	r = commit_keyring(m, next, rec, err);
	if (r < 0) {
		if (backed_up)
			remove_backup(m, name);
		goto fail;
	}
	if (ret_version)
		*ret_version = kf_keyring_current_version(next);
	json_decref(rec);
	kf_keyring_unref(next);
	kf_keyring_unref(plus);
	kf_keyring_unref(old);
	return r; /* 0 or KF_FILE_UNSYNCED */
fail:
	json_object_del(rec, "success");
	json_object_del(rec, "key_version");
	json_object_del(rec, "backup_created");
	json_object_del(rec, "backup");
	report_failure(m, rec, err);
	kf_keyring_unref(next);
	kf_keyring_unref(plus);
	kf_keyring_unref(old);
	return r;
}

/* Seconds until kr's current key is due (<= 0: due); -1 = off. */
static int64_t due_in(const struct kf_manager *m, const struct kf_keyring *kr)
{
	int64_t due;

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
		  bool automatic, uint32_t *ret_version, bool *ret_rotated,
		  char err[KF_ERR_MAX])
{
	struct kf_keyring *kr;
	bool due = true;
	int r = 0;

	pthread_mutex_lock(&m->op_lock);
	if (automatic) {
		kr = current_ref(m);
		due = due_in(m, kr) == 0;
		kf_keyring_unref(kr);
	}
	if (due)
		r = rotate_locked(m, who, automatic, ret_version, err);
	pthread_mutex_unlock(&m->op_lock);
	if (ret_rotated)
		*ret_rotated = due && r >= 0;
	if (due && r >= 0) {
		notify_change(m);
		prune_automatic(m, who);
	}
	/* In effect but not confirmed durable: the caller hears of it. */
	return r == KF_FILE_UNSYNCED ? -EIO : r;
}

int kf_manager_rotate(struct kf_manager *m, const struct kf_caller *who,
		      uint32_t *ret_version, char err[KF_ERR_MAX])
{
	return rotate(m, who, false, ret_version, NULL, err);
}

int64_t kf_manager_rotation_due_in(struct kf_manager *m)
{
	struct kf_keyring *kr = current_ref(m);
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
	return rotate(m, kf_event_self(&self), true, NULL, ret_rotated, err);
}

int kf_manager_retire(struct kf_manager *m, const struct kf_caller *who,
		      uint32_t version, char err[KF_ERR_MAX])
{
	struct kf_keyring *old, *next = NULL;
	char name[KF_BACKUP_NAME_MAX + 6] = "";
	json_t *rec = kf_event_record(KF_EVENT_KEY_RETIRE, who);
	int r;

	json_object_set_new(rec, "key_version", json_integer(version));
	pthread_mutex_lock(&m->op_lock);
	old = current_ref(m);
	r = kf_keyring_retire(old, version, &next);
	if (r == -EBUSY) {
		kf_err_set(err,
			   "version %" PRIu32 " is the current key; "
			   "rotate first",
			   version);
		goto fail;
	} else if (r == -ENOENT) {
		kf_err_set(err, "version %" PRIu32 " is not in the keyring",
			   version);
		goto fail;
	} else if (r < 0) {
		kf_err_set(err, "cannot retire: %s", strerror(-r));
		goto fail;
	}
	/* A backup first: retiring is the one way a key is destroyed. */
	r = write_backup(m, old, NULL, NULL, name, err);
	if (r < 0) {
		kf_err_prefix(err, "backup before retire failed: ");
		goto fail;
	}
	json_object_set_new(rec, "current_version",
			    json_integer(kf_keyring_current_version(old)));
	json_object_set_new(rec, "backup_created", json_true());
	json_object_set_new(rec, "backup", json_string(name));
	r = commit_keyring(m, next, rec, err);
	if (r < 0) {
		/* Refused: leave nothing behind, not even the backup. */
		remove_backup(m, name);
		json_object_del(rec, "success");
		goto fail;
	}
	pthread_mutex_unlock(&m->op_lock);
	json_decref(rec);
	kf_keyring_unref(next);
	kf_keyring_unref(old);
	notify_change(m);
	prune_automatic(m, who);
	return r == KF_FILE_UNSYNCED ? -EIO : 0;
fail:
	pthread_mutex_unlock(&m->op_lock);
	report_failure(m, rec, err);
	kf_keyring_unref(next);
	kf_keyring_unref(old);
	return r;
}

int kf_manager_backup(struct kf_manager *m, const struct kf_caller *who,
		      const char *name, char *ret_name, char err[KF_ERR_MAX])
{
	struct kf_keyring *kr;
	char file[KF_BACKUP_NAME_MAX + 6] = "";
	json_t *rec = kf_event_record(KF_EVENT_KEY_BACKUP, who);
	int r;

	/* An invalid name is never recorded: it could be a pasted key. */
	if (name && !kf_backup_name_valid(name)) {
		kf_err_set(err, "invalid backup name (allowed: "
				"[A-Za-z0-9][A-Za-z0-9._-]{0,63}, no \"..\")");
		report_failure(m, rec, err);
		return -EINVAL;
	}
	pthread_mutex_lock(&m->op_lock);
	kr = current_ref(m);
	r = write_backup(m, kr, name, NULL, file, err);
	if (r == 0) {
		json_object_set_new(rec, "backup", json_string(file));
		json_object_set_new(
		    rec, "key_version",
		    json_integer(kf_keyring_current_version(kr)));
		json_object_set_new(rec, "versions", versions_json(kr));
		json_object_set_new(rec, "success", json_true());
		r = record_durable(m, rec, NULL, err);
		if (r < 0) {
			/* Unrecorded: undo, so nothing changed. */
			remove_backup(m, file);
			kf_err_prefix(err, "audit log: ");
			json_object_del(rec, "success");
		}
	}
	pthread_mutex_unlock(&m->op_lock);
	kf_keyring_unref(kr);
	if (r < 0) {
		report_failure(m, rec, err);
		return r;
	}
	json_decref(rec);
	if (ret_name)
		snprintf(ret_name, KF_BACKUP_NAME_MAX + 6, "%s", file);
	if (!name)
		prune_automatic(m, who);
	return 0;
}

/* A backup name (with or without .json) or an absolute path -> a path. */
static char *restore_path(struct kf_manager *m, const char *what,
			  char err[KF_ERR_MAX])
{
	char base[KF_BACKUP_NAME_MAX + 6];
	size_t len = strlen(what);

	if (what[0] == '/') {
		const char *mnt = m->cfg->mountpoint;
		size_t n = mnt ? strlen(mnt) : 0;

		/* Never read through our own mount: map backups/NAME. */
		if (!mnt || !kf_path_under(what, mnt))
			return strdup(what);
		if (strncmp(what + n, "/backups/", 9) != 0 ||
		    strchr(what + n + 9, '/')) {
			kf_err_set(err, "a path inside the mount; give a name "
					"from backups/");
			return NULL;
		}
		what += n + 9;
		len = strlen(what);
	}
	if (len > 5 && strcmp(what + len - 5, ".json") == 0)
		len -= 5;
	if (len == 0 || len > KF_BACKUP_NAME_MAX) {
		kf_err_set(err, "not a backup name or absolute path");
		return NULL;
	}
	memcpy(base, what, len);
	base[len] = 0;
	if (!kf_backup_name_valid(base)) {
		kf_err_set(err, "not a backup name or absolute path");
		return NULL;
	}
	strcat(base, ".json");
	return kf_path_join(m->cfg->backup_dir, base);
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
	uint32_t dropped[KF_KEYRING_MAX_VERSIONS];
	struct kf_keyring *adopted = NULL;
	json_t *back = json_array(), *out = json_array();
	size_t n = 0;
	char list[KF_ERR_MAX] = "";
	int r;

	for (size_t i = 0; i < kf_keyring_count(*restored); i++) {
		uint32_t v = kf_keyring_at(*restored, i)->version;

		if (kf_keyring_is_retired(old, v))
			json_array_append_new(force ? back : out,
					      json_integer(v));
	}
	r = kf_keyring_adopt_retired(*restored, old, force, &adopted, dropped,
				     &n);
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
		if (json_array_size(out) > 0)
			json_object_set(rec, "retired_kept_out", out);
		if (json_array_size(back) > 0)
			json_object_set(rec, "unretired", back);
		for (size_t i = 0; i < n; i++)
			snprintf(list + strlen(list),
				 sizeof(list) - strlen(list), "%s%" PRIu32,
				 i ? ", " : "", dropped[i]);
		if (ret_note && n > 0)
			kf_err_set(ret_note,
				   "retired versions stay retired: %s (restore "
				   "with \"force\" to bring them back)",
				   list);
	}
	json_decref(back);
	json_decref(out);
	return r;
}

int kf_manager_restore(struct kf_manager *m, const struct kf_caller *who,
		       const char *what, bool force, uint32_t *ret_version,
		       char *ret_note, char err[KF_ERR_MAX])
{
	struct kf_keyring *old = NULL, *restored = NULL, *next = NULL;
	char pre[KF_BACKUP_NAME_MAX + 6] = "", why[KF_ERR_MAX];
	json_t *rec = kf_event_record(KF_EVENT_KEY_RESTORE, who);
	uint8_t *blob = NULL;
	size_t len = 0;
	char *path;
	int r;

	path = restore_path(m, what, why);
	if (!path) {
		r = -EINVAL;
		goto fail_unlocked;
	}
	json_object_set_new(rec, "backup", json_string(what));
	if (force)
		json_object_set_new(rec, "force", json_true());
	if (ret_note)
		ret_note[0] = 0;
	pthread_mutex_lock(&m->op_lock);
	r = kf_backup_read(path, m->keys->backup, &blob, &len, NULL, why);
	if (r == 0) {
		r = kf_keyring_decode(blob, len, &restored, why);
		sodium_free(blob);
		if (r < 0)
			r = -EBADMSG;
	}
	if (r < 0)
		goto fail;
	old = current_ref(m);
	if (old) {
		r = adopt_retired(old, &restored, force, rec, ret_note, why);
		if (r < 0)
			goto fail;
	}
	/* A restore never loses a key: the keyring it replaces is kept. */
	if (old) {
		r = write_backup(m, old, NULL, "pre_restore_", pre, why);
		if (r < 0) {
			kf_err_prefix(why,
				      "backup of the current keyring failed: ");
			goto fail;
		}
	}
	/*
	 * Numbers issued before stay issued, even when the keyring was lost:
	 * the next rotation goes above the keyring's and every archive's.
	 */
	r = kf_keyring_raise_highest(restored, highest_known(m, old), &next);
	if (r < 0) {
		kf_err_set(why, "%s", strerror(-r));
		goto fail;
	}
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(next)));
	json_object_set_new(rec, "previous_version",
			    old ? json_integer(kf_keyring_current_version(old))
				: json_null());
	json_object_set_new(rec, "versions", versions_json(next));
	json_object_set_new(rec, "pre_restore_backup",
			    old ? json_string(pre) : json_null());
	r = commit_keyring(m, next, rec, why);
	if (r < 0) {
		if (old)
			remove_backup(m, pre);
		json_object_del(rec, "success");
		goto fail;
	}
	pthread_mutex_unlock(&m->op_lock);
	if (ret_version)
		*ret_version = kf_keyring_current_version(next);
	json_decref(rec);
	kf_keyring_unref(next);
	kf_keyring_unref(restored);
	kf_keyring_unref(old);
	free(path);
	notify_change(m);
	if (r == KF_FILE_UNSYNCED) {
		snprintf(err, KF_ERR_MAX, "%s", why);
		return -EIO;
	}
	return 0;
fail:
	pthread_mutex_unlock(&m->op_lock);
fail_unlocked:
	kf_err_set(err, "KeyBackupError: Failed to restore keys: %s", why);
	report_failure(m, rec, err);
	kf_keyring_unref(next);
	kf_keyring_unref(restored);
	kf_keyring_unref(old);
	free(path);
	return r;
}

int kf_manager_prune(struct kf_manager *m, const struct kf_caller *who,
		     unsigned keep, bool force, size_t *ret_deleted,
		     size_t *ret_kept_last, char err[KF_ERR_MAX])
{
	struct kf_backup_prune_opts o = {
	    .keep = keep, .force = force, .held = keyring_holds};
	struct kf_backup_prune_result res = {0};
	json_t *rec = kf_event_record(KF_EVENT_BACKUP_CLEANUP, who);
	size_t done = 0;
	int r;

	json_object_set_new(rec, "keep", json_integer(keep));
	if (force)
		json_object_set_new(rec, "force", json_true());
	if (keep == 0 && !force) {
		kf_err_set(err, "pruning to 0 would delete every backup; "
				"write \"0 force\" to mean it");
		report_failure(m, rec, err);
		return -EINVAL;
	}
	pthread_mutex_lock(&m->op_lock);
	o.data = current_ref(m);
	/* Planned, then recorded, then done: unrecorded, nothing changes. */
	o.dry_run = true;
	r = kf_backup_prune(m->cfg->backup_dir, &o, &res, err);
	if (r < 0)
		goto fail;
	json_object_set_new(rec, "deleted",
			    json_integer((json_int_t)res.deleted));
	json_object_set_new(rec, "kept_last_copies",
			    json_integer((json_int_t)res.protected));
	json_object_set_new(rec, "success", json_true());
	r = record_durable(m, rec, NULL, err);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		goto fail;
	}
	o.dry_run = false;
	r = kf_backup_prune(m->cfg->backup_dir, &o, &res, err);
	done = res.deleted;
	if (r < 0)
		goto fail;
	kf_keyring_unref(o.data);
	pthread_mutex_unlock(&m->op_lock);
	json_decref(rec);
	*ret_deleted = res.deleted;
	if (ret_kept_last)
		*ret_kept_last = res.protected;
	return 0;
fail:
	kf_keyring_unref(o.data);
	pthread_mutex_unlock(&m->op_lock);
	/* A failure record of its own: what was asked and what happened. */
	json_decref(rec);
	rec = kf_event_record(KF_EVENT_BACKUP_CLEANUP, who);
	json_object_set_new(rec, "keep", json_integer(keep));
	if (force)
		json_object_set_new(rec, "force", json_true());
	json_object_set_new(rec, "deleted", json_integer((json_int_t)done));
	report_failure(m, rec, err);
	return r;
}

int kf_manager_list_backups(struct kf_manager *m, struct kf_backup_info **ret,
			    size_t *ret_n, char err[KF_ERR_MAX])
{
	return kf_backup_list(m->cfg->backup_dir, ret, ret_n, err);
}

/* --- status and audit --------------------------------------------------- */

static json_t *interval_json(int64_t s)
{
	static const struct {
		int64_t secs;
		char unit;
	} units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
	char buf[32];

	if (s <= 0)
		return json_string("0");
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (s % units[i].secs == 0) {
			snprintf(buf, sizeof(buf), "%" PRId64 "%c",
				 s / units[i].secs, units[i].unit);
			break;
		}
	}
	return json_string(buf);
}

static json_t *time_json(int64_t t)
{
	char buf[KF_RFC3339_LEN + 1];

	kf_time_rfc3339(t, buf);
	return json_string(buf);
}

json_t *kf_manager_info(struct kf_manager *m)
{
	const struct kf_config *cfg = m->cfg;
	struct kf_keyring *kr = current_ref(m);
	const struct kf_keyring_entry *cur = kf_keyring_at(kr, 0);
	const struct kf_keyring_entry *prev = kf_keyring_at(kr, 1);
	char fpr[KF_KEY_FPR_LEN + 1];
	json_t *o = json_object(), *vs = json_array(), *ps = json_array();
	json_t *rs = json_array();

	json_object_set_new(o, "version", json_integer(cur->version));
	json_object_set_new(o, "has_current_key", json_true());
	json_object_set_new(o, "has_previous_key", json_boolean(prev != NULL));
	json_object_set_new(o, "previous_version",
			    prev ? json_integer(prev->version) : json_null());
	json_object_set_new(o, "created", time_json(cur->created));
	kf_key_fingerprint(cur->key, fpr);
	json_object_set_new(o, "fingerprint", json_string(fpr));
	if (prev) {
		kf_key_fingerprint(prev->key, fpr);
		json_object_set_new(o, "previous_fingerprint",
				    json_string(fpr));
	} else {
		json_object_set_new(o, "previous_fingerprint", json_null());
	}
	for (size_t i = 0; i < kf_keyring_count(kr); i++) {
		const struct kf_keyring_entry *e = kf_keyring_at(kr, i);
		json_t *v = json_object();

		kf_key_fingerprint(e->key, fpr);
		json_object_set_new(v, "version", json_integer(e->version));
		json_object_set_new(v, "created", time_json(e->created));
		json_object_set_new(v, "fingerprint", json_string(fpr));
		json_array_append_new(vs, v);
	}
	json_object_set_new(o, "versions", vs);
	json_object_set_new(o, "highest_issued",
			    json_integer(kf_keyring_highest(kr)));
	for (size_t i = 0; i < kf_keyring_retired_count(kr); i++)
		json_array_append_new(
		    rs, json_integer(kf_keyring_retired_at(kr, i)));
	json_object_set_new(o, "retired_versions", rs);
	json_object_set_new(o, "retain_versions",
			    json_integer(cfg->retain_versions));
	for (size_t i = 0; i < cfg->n_purposes; i++)
		json_array_append_new(ps, json_string(cfg->purposes[i].name));
	json_object_set_new(o, "purposes", ps);
	json_object_set_new(o, "mode",
			    json_string(cfg->mode == KF_MODE_PRODUCTION
					    ? "production"
					    : "development"));
	json_object_set_new(o, "read_mode",
			    json_string(cfg->read_mode == KF_READ_AUDITED
					    ? "audited"
					    : "cached"));
	json_object_set_new(o, "opens_audited",
			    json_boolean(cfg->read_mode == KF_READ_AUDITED));
	json_object_set_new(o, "rotate_interval",
			    interval_json(cfg->rotate_interval));
	json_object_set_new(o, "next_rotation",
			    cfg->rotate_interval > 0
				? time_json(cur->created + cfg->rotate_interval)
				: json_null());
	json_object_set_new(o, "backup_keep", json_integer(cfg->backup_keep));
	kf_keyring_unref(kr);
	return o;
}

int kf_manager_audit_open(struct kf_manager *m, const struct kf_caller *who,
			  const char *path)
{
	char err[KF_ERR_MAX];
	json_t *rec = kf_event_record(KF_EVENT_KEY_OPEN, who);
	int r;

	json_object_set_new(rec, "path", json_string(path));
	r = kf_audit_append(m->audit, rec, false, err);
	json_decref(rec);
	if (r < 0)
		kf_log(LOG_ALERT, "open of %s refused: audit log: %s", path,
		       err);
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
	r = record_durable(m, rec, NULL, err);
	json_decref(rec);
	if (r < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	return r;
}

void kf_manager_audit_refused(struct kf_manager *m, const struct kf_caller *who,
			      enum kf_event event, const char *error)
{
	report_failure(m, kf_event_record(event, who), error);
}

/* --- offline ------------------------------------------------------------ */

static int offline_subkey(const struct kf_config *cfg, enum kf_subkey id,
			  uint8_t out[32], char err[KF_ERR_MAX])
{
	uint8_t *master;
	bool created;
	int r;

	if (sodium_init() < 0) {
		kf_err_set(err, "libsodium failed to initialise");
		return -EIO;
	}
	r = kf_master_load(cfg->master_key_file, false, &master, &created, err);
	if (r < 0)
		return r;
	kf_master_subkey(master, id, out);
	sodium_free(master);
	return 0;
}

int kf_manager_verify_audit(const struct kf_config *cfg, const char *path,
			    bool check_anchor, char report[KF_ERR_MAX])
{
	struct kf_subkeys *keys = sodium_malloc(sizeof(*keys));
	struct kf_audit_anchor anchor = {0};
	struct kf_keyring *kr = NULL;
	uint8_t *plain = NULL;
	size_t len = 0;
	int r;

	if (!keys) {
		kf_err_set(report, "out of memory");
		return -ENOMEM;
	}
	r = offline_subkey(cfg, KF_SUBKEY_AUDIT, keys->audit, report);
	if (r < 0)
		goto out;
	/*
	 * A copy given as path is checked against the anchor too, or a copy
	 * cut short would verify.  A state that cannot be read fails the
	 * check rather than skipping it: skipping is the caller's explicit
	 * choice (check_anchor false), and the report then says so.
	 */
	if (check_anchor) {
		r = offline_subkey(cfg, KF_SUBKEY_STATE, keys->state, report);
		if (r < 0)
			goto out;
		r = kf_store_load(cfg->state_dir, keys->state, &plain, &len,
				  report);
		if (r == 0) {
			r = decode_state(plain, len, &anchor, &kr, report);
			sodium_free(plain);
		}
		if (r < 0) {
			kf_err_prefix(report, "sealed state: ");
			goto out;
		}
	}
	r = kf_audit_verify(path ? path : cfg->audit_log, keys->audit,
			    check_anchor ? &anchor : NULL, report, NULL);
out:
	kf_keyring_unref(kr);
	sodium_free(keys);
	return r;
}

int kf_manager_verify_backup(const struct kf_config *cfg, const char *path,
			     struct kf_backup_info *ret_info,
			     char err[KF_ERR_MAX])
{
	struct kf_subkeys *keys = sodium_malloc(sizeof(*keys));
	struct kf_keyring *kr = NULL;
	uint8_t *blob = NULL;
	size_t len = 0;
	int r;

	if (!keys) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = offline_subkey(cfg, KF_SUBKEY_BACKUP, keys->backup, err);
	if (r < 0)
		goto out;
	r = kf_backup_read(path, keys->backup, &blob, &len, ret_info, err);
	if (r < 0)
		goto out;
	r = kf_keyring_decode(blob, len, &kr, err);
	sodium_free(blob);
	if (r < 0)
		goto out;
	if (ret_info &&
	    kf_keyring_current_version(kr) != ret_info->key_version) {
		kf_err_set(err,
			   "key_version does not match the keyring inside");
		r = -EBADMSG;
	}
out:
	kf_keyring_unref(kr);
	sodium_free(keys);
	return r;
}

int kf_manager_list_backups_offline(const struct kf_config *cfg,
				    struct kf_backup_info **ret, size_t *ret_n,
				    char err[KF_ERR_MAX])
{
	return kf_backup_list(cfg->backup_dir, ret, ret_n, err);
}
