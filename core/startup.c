// SPDX-License-Identifier: MIT
/*
 * startup: kf_manager_open (DESIGN.md §4) -- the state lock, the folders
 * and what a crash left in them, the master key and the store, then the
 * keyring: loaded, imported from ENCRYPTION_KEY..., or generated.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "env.h"
#include "key.h"
#include "log.h"
#include "manager_private.h"
#include "state.h"

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

struct kf_subkeys *kf_mgr_subkeys_new(const uint8_t master[KF_KEY_BYTES])
{
	struct kf_subkeys *k = sodium_malloc(sizeof(*k));

	if (!k)
		return NULL;
	kf_master_subkey(master, KF_SUBKEY_STATE, k->state);
	kf_master_subkey(master, KF_SUBKEY_BACKUP, k->backup);
	kf_master_subkey(master, KF_SUBKEY_AUDIT, k->audit);
	kf_master_subkey(master, KF_SUBKEY_CLUSTER, k->cluster);
	return k;
}

/*
 * master_key_next (store = etcd), beside master: its internal keys, unless
 * it is master itself (the window of a node already rotated).
 */
static int load_next(struct kf_manager *m, const uint8_t *master,
		     char err[KF_ERR_MAX])
{
	uint8_t *next = NULL;
	int r;

	r = kf_master_load_file(m->cfg->master_key_next, "master_key_next",
				&next, err);
	if (r < 0)
		return r;
	if (sodium_memcmp(next, master, KF_KEY_BYTES) != 0) {
		kf_master_fingerprint(next, m->next_fpr);
		m->next_keys = kf_mgr_subkeys_new(next);
		if (m->next_keys)
			sodium_mprotect_readonly(m->next_keys);
		else
			r = -ENOMEM;
	}
	sodium_free(next);
	if (r < 0)
		kf_err_set(err, "out of memory");
	return r;
}

/* The master key, the internal keys from it, and the store they seal. */
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
	m->keys = kf_mgr_subkeys_new(master);
	if (!m->keys) {
		sodium_free(master);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_master_fingerprint(master, m->master_fpr);
	r = cfg->master_key_next ? load_next(m, master, err) : 0;
	sodium_free(master);
	if (r < 0)
		return r;
	sodium_mprotect_readonly(m->keys);
	if (cfg->recovery_public_key) {
		r = kf_recovery_load_public(cfg->recovery_public_key,
					    m->recovery_pk, err);
		if (r < 0)
			return r;
		m->has_recovery = true;
	}
	r = kf_store_file_new(cfg->state_dir, m->keys->state, &m->store);
	if (r < 0)
		kf_err_set(err, "out of memory");
	return r;
}

/*
 * Removes the temporary files a process killed mid-write left in dir: all,
 * or those of file `name` only (NULL: all).
 */
static void sweep_temp(const char *dir, const char *name)
{
	size_t removed = 0;

	if (kf_dir_sweep_temp_of(dir, name, &removed) < 0)
		kf_log(LOG_WARNING, "%s: could not remove every temporary file",
		       dir);
	if (removed > 0)
		kf_log(LOG_NOTICE,
		       "%s: removed %zu temporary file%s left by an "
		       "interrupted write",
		       dir, removed, removed == 1 ? "" : "s");
}

/*
 * The master key file's own temporary files (".master.key.tmp.<12 hex>"),
 * which keyfs rekey or a development start leave when killed while writing
 * it: stray copies of a master key.  Only that name's: the folder (say
 * /etc/keyfs) is not keyfs's alone.
 */
static void sweep_master_temp(const char *path)
{
	char *dir = path && *path ? strdup(path) : NULL, *slash;

	if (!dir)
		return;
	slash = strrchr(dir, '/');
	if (slash && slash[1]) {
		*slash = 0;
		sweep_temp(*dir ? dir : "/", slash + 1);
	} else if (!slash) {
		sweep_temp(".", dir);
	}
	free(dir);
}

/* Tightens archives that are readable by group or other to 0600. */
static void tighten_archives(const char *backup_dir)
{
	struct kf_backup_info *list = NULL;
	size_t n = 0;

	if (kf_backup_list(backup_dir, &list, &n, NULL) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char *p = kf_path_join(backup_dir, list[i].name);
		struct stat st;

		if (p && lstat(p, &st) == 0 && S_ISREG(st.st_mode) &&
		    (st.st_mode & 0177) != 0) {
			if (chmod(p, 0600) == 0)
				kf_log(LOG_WARNING,
				       "%s had mode %04o; set to 0600", p,
				       st.st_mode & 07777);
		}
		free(p);
	}
	free(list);
}

/* dir exists with mode 0700 (a looser one is tightened, with a warning). */
static int private_dir(const char *dir, char err[KF_ERR_MAX])
{
	int tightened = 0, r;

	r = kf_dir_ensure(dir, 0700, &tightened, err);
	if (r == 0 && tightened)
		kf_log(LOG_WARNING, "%s had a looser mode; set to 0700", dir);
	return r;
}

static int prepare_dirs(struct kf_manager *m, char err[KF_ERR_MAX])
{
	const struct kf_config *cfg = m->cfg;
	int r;

	r = private_dir(cfg->state_dir, err);
	if (r == 0)
		r = private_dir(cfg->backup_dir, err);
	if (r < 0)
		return r;
	/* Left by a process killed between writing and renaming. */
	sweep_temp(cfg->state_dir, NULL);
	sweep_temp(cfg->backup_dir, NULL);
	sweep_master_temp(cfg->master_key_file);
	tighten_archives(cfg->backup_dir);
	return 0;
}

/* A new keyring for a state_dir without one: imported or generated. */
static int new_keyring(const struct kf_config *cfg, struct kf_keyring **ret,
		       enum kf_event *ret_event, char err[KF_ERR_MAX])
{
	uint8_t *key;
	int r;

	if (kf_env_get(KF_ENV_ENCRYPTION_KEY)) {
		*ret_event = KF_EVENT_KEY_IMPORT;
		return import_env(ret, err);
	}
	if (cfg->mode != KF_MODE_DEVELOPMENT) {
		kf_err_set(err, "KeyValidationError: No current encryption key "
				"available: set ENCRYPTION_KEY (for example "
				"from `keyfs genkey`), or restore a backup "
				"(`keyfs restore --offline FILE`)");
		return -ENOENT;
	}
	key = sodium_malloc(KF_KEY_BYTES);
	if (!key) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_key_generate(key);
	r = kf_keyring_new(1, key, kf_time_now(), 1, ret);
	sodium_free(key);
	if (r < 0)
		kf_err_set(err, "cannot create keyring: %s", strerror(-r));
	*ret_event = KF_EVENT_KEY_GENERATE;
	return r;
}

/* The first keyring of this state_dir, committed and backed up. */
static int create_keyring(struct kf_manager *m, char err[KF_ERR_MAX])
{
	enum kf_event event = KF_EVENT_KEY_GENERATE;
	struct kf_keyring *kr = NULL;
	struct kf_caller self;
	char name[KF_BACKUP_FILE_NAME_MAX], berr[KF_ERR_MAX];
	uint64_t cancel = 0;
	json_t *rec;
	int r;

	r = new_keyring(m->cfg, &kr, &event, err);
	if (r < 0)
		return r;
	rec = kf_event_record(event, kf_event_self(&self));
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(kr)));
	json_object_set_new(rec, "versions", kf_mgr_versions_json(kr));
	r = kf_mgr_commit(m, kr, rec, &cancel, err);
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
		if (kf_mgr_write_backup(m, kr, NULL, NULL, name, berr) < 0)
			kf_log(LOG_WARNING, "first backup: %s", berr);
	}
	kf_keyring_unref(kr);
	return r;
}

/*
 * A crash between an automatic backup and the state's commit leaves an
 * archive of a version the state never committed: that number must not be
 * issued again, so the keyring's highest goes up to every archive's.
 */
static void raise_to_archives(struct kf_manager *m, struct kf_keyring **kr)
{
	struct kf_keyring *raised = NULL;

	if (kf_keyring_raise_highest(*kr, kf_mgr_highest_known(m, *kr),
				     &raised) == 0) {
		kf_keyring_unref(*kr);
		*kr = raised;
	}
}

void kf_mgr_take_anchor(struct kf_manager *m,
			const struct kf_audit_anchor *anchor)
{
	struct kf_audit_anchor tail;

	kf_mgr_sealed(m, anchor->seq);
	kf_audit_anchor(m->audit, &tail);
	if (tail.seq < anchor->seq)
		kf_log(LOG_ALERT,
		       "audit log %s ends at record %" PRIu64
		       " but the sealed state saw record %" PRIu64
		       ": the log was truncated or replaced",
		       m->cfg->audit_log, tail.seq, anchor->seq);
}

int kf_mgr_record_load(struct kf_manager *m, json_t *fields,
		       char err[KF_ERR_MAX])
{
	struct kf_keyring *kr = kf_mgr_current(m);
	struct kf_caller self;
	json_t *rec = kf_event_record(KF_EVENT_KEY_LOAD, kf_event_self(&self));
	int r;

	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(kr)));
	json_object_set_new(rec, "versions", kf_mgr_versions_json(kr));
	if (fields)
		json_object_update(rec, fields);
	json_object_set_new(rec, "success", json_true());
	r = kf_mgr_record_durable(m, rec, NULL, err);
	if (r < 0)
		kf_err_prefix(err, "audit log: ");
	json_decref(rec);
	kf_keyring_unref(kr);
	return r;
}

static int load_keyring(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	struct kf_keyring *kr = NULL;
	uint8_t *plain = NULL;
	char why[KF_ERR_MAX];
	size_t len = 0;
	int r;

	r = m->store->ops->load(m->store, &plain, &len, why);
	if (r == -ENOENT)
		return m->restore_only ? 0 : create_keyring(m, err);
	if (r == 0) {
		r = kf_state_decode(plain, len, &anchor, &kr, why);
		sodium_free(plain);
	}
	if (r < 0) {
		kf_err_set(err, "KeyValidationError: Failed to load keys: %s",
			   why);
		return r;
	}
	warn_env_differs(kr);
	raise_to_archives(m, &kr);
	kf_mgr_take_anchor(m, &anchor);
	kf_mgr_swap(m, kr);
	kf_keyring_unref(kr);
	return kf_mgr_record_load(m, NULL, err);
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

/* Refuses a state_dir whose master-key rotation is incomplete. */
static int check_rekey(const struct kf_config *cfg, char err[KF_ERR_MAX])
{
	char *path = kf_path_join(cfg->state_dir, KF_REKEY_JOURNAL);
	int r = 0;

	if (!path) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	if (access(path, F_OK) == 0) {
		kf_err_set(err,
			   "a master key rotation is incomplete (%s): finish "
			   "it with `keyfs rekey --new-master FILE` (the same "
			   "new key) before starting",
			   path);
		r = -EBUSY;
	}
	free(path);
	return r;
}

/* What kf_manager_open and its variants open a manager for. */
enum open_for { OPEN_SERVE, OPEN_RESTORE, OPEN_CLUSTER_INIT, OPEN_BARE };

static int manager_open(const struct kf_config *cfg, enum open_for what,
			bool from_state, struct kf_manager **ret,
			char err[KF_ERR_MAX])
{
	bool restore_only = what == OPEN_RESTORE;
	bool etcd = cfg->store == KF_STORE_TYPE_ETCD;
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
	/* Without it (ENOMEM) prunes read every archive: slower, still right.
	 */
	m->backups = kf_backup_cache_new();
	pthread_mutex_init(&m->op_lock, NULL);
	pthread_mutex_init(&m->kr_lock, NULL);
	m->usage = kf_usage_new(KF_USAGE_ROWS_MAX);
	m->started = time(NULL);
	if (!m->usage) {
		kf_err_set(err, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	if ((what == OPEN_RESTORE && etcd) ||
	    (what == OPEN_CLUSTER_INIT && !etcd)) {
		kf_err_set(
		    err, etcd ? "restore --offline works on the file store; "
				"with store = etcd, restore through a "
				"running node (control/restore)"
			      : "keyfs cluster init needs store = etcd and an "
				"[etcd] section in the configuration");
		r = -EINVAL;
		goto fail;
	}
	/*
	 * The lock first: a second process, which will be refused, must not
	 * change the first one's folder (modes, a new master key, temp files).
	 */
	r = lock_state(m, err);
	if (r == 0 && what != OPEN_BARE)
		r = check_rekey(cfg, err);
	if (r < 0)
		goto fail;
	r = prepare_dirs(m, err);
	if (r < 0 || what == OPEN_BARE)
		goto done;
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
		       "audit log %s does not verify at its end: %s (run keyfs "
		       "audit verify); continuing its chain",
		       cfg->audit_log, err);
	kf_audit_set_limits(m->audit, &(struct kf_audit_limits){
					  .max_size = cfg->auditing.max_size,
					  .max_age = cfg->auditing.rotate,
					  .keep = cfg->auditing.keep});
	/* The window and shipping, before the first line of this start. */
	r = kf_mgr_audit_setup(m, err);
	if (r < 0)
		goto fail;
	if (what == OPEN_CLUSTER_INIT)
		r = kf_mgr_cluster_init(m, from_state, err);
	else if (etcd)
		r = kf_mgr_cluster_load(m, err);
	else
		r = load_keyring(m, err);
done:
	if (r < 0)
		goto fail;
	*ret = m;
	return 0;
fail:
	/* A refused start is a failure like any other: audited if the log
	 * is open, and alerted; the caller logs err once. */
	kf_mgr_record_failure(
	    m, kf_event_record(KF_EVENT_STARTUP, kf_event_self(&self)), 0, err);
	kf_manager_close(m);
	return r;
}

int kf_manager_open(const struct kf_config *cfg, struct kf_manager **ret,
		    char err[KF_ERR_MAX])
{
	return manager_open(cfg, OPEN_SERVE, false, ret, err);
}

int kf_manager_open_for_restore(const struct kf_config *cfg,
				struct kf_manager **ret, char err[KF_ERR_MAX])
{
	return manager_open(cfg, OPEN_RESTORE, false, ret, err);
}

int kf_manager_cluster_init(const struct kf_config *cfg, bool from_state,
			    struct kf_manager **ret, char err[KF_ERR_MAX])
{
	return manager_open(cfg, OPEN_CLUSTER_INIT, from_state, ret, err);
}

int kf_mgr_new_keyring(struct kf_manager *m, struct kf_keyring **ret,
		       enum kf_event *ret_event, char err[KF_ERR_MAX])
{
	return new_keyring(m->cfg, ret, ret_event, err);
}

int kf_mgr_open_bare(const struct kf_config *cfg, struct kf_manager **ret,
		     char err[KF_ERR_MAX])
{
	return manager_open(cfg, OPEN_BARE, false, ret, err);
}
