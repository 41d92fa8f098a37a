// SPDX-License-Identifier: MIT
/*
 * rekey: master-key rotation with the daemon stopped (keyfs rekey, README:
 * Master-key rotation).  Every archive, the audit log and the sealed state
 * are sealed anew under the new master key, one file at a time, each
 * replaced atomically; a journal in state_dir (two fingerprints, never a
 * key byte) says a rotation is under way, so a rerun after a crash
 * finishes it and a daemon refuses to start until then.  The master key
 * file is replaced last.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "env.h"
#include "etcd.h"
#include "log.h"
#include "manager_private.h"
#include "rekey_cluster.h"
#include "state.h"

#define JOURNAL_TAG "keyfs-rekey-v1"
#define JOURNAL_MAX 256

/* One rotation: the keys (sodium_malloc'd) and what it did. */
struct rekey {
	struct kf_manager *m;
	const struct kf_caller *who;
	uint8_t *cur;		     /* the configured master key */
	uint8_t *next;		     /* the new one */
	const uint8_t *old;	     /* cur, or NULL once cur is next */
	struct kf_subkeys *keys_old; /* from old (NULL with it) */
	struct kf_subkeys *keys_new;
	char fpr_old[KF_MASTER_FPR_LEN + 1];
	char fpr_new[KF_MASTER_FPR_LEN + 1];
	bool from_env;		    /* cur came from KEYFS_MASTER_KEY */
	bool resumed;		    /* a journal was there */
	bool journaled;		    /* the journal is there now */
	struct kf_etcd *etcd;	    /* store = etcd: its client, else NULL */
	struct kf_rekey_cluster cl; /* and what was done there */
	struct kf_manager_rekey_result res;
};

/* --- the journal --------------------------------------------------------- */

/*
 * The journal's fingerprints: 1 with them, 0 when there is no journal,
 * -EBADMSG when it is not one.
 */
static int journal_read(const struct kf_config *cfg,
			char old[KF_MASTER_FPR_LEN + 1],
			char next[KF_MASTER_FPR_LEN + 1], char err[KF_ERR_MAX])
{
	char *path = kf_path_join(cfg->state_dir, KF_REKEY_JOURNAL);
	uint8_t *buf = NULL;
	char text[JOURNAL_MAX + 1];
	size_t len = 0;
	int r;

	if (!path) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = kf_file_read_all(path, JOURNAL_MAX, &buf, &len, NULL, err);
	if (r == -ENOENT) {
		free(path);
		return 0;
	}
	if (r == 0) {
		memcpy(text, buf, len);
		text[len] = 0;
		sodium_free(buf);
		if (sscanf(text,
			   JOURNAL_TAG "\nold %16[0-9a-f]\nnew %16[0-9a-f]\n",
			   old, next) != 2 ||
		    strlen(old) != KF_MASTER_FPR_LEN ||
		    strlen(next) != KF_MASTER_FPR_LEN) {
			r = -EBADMSG;
			kf_err_set(err, "%s: not a keyfs rekey journal", path);
		}
	}
	free(path);
	return r < 0 ? r : 1;
}

static int journal_write(struct rekey *k, char err[KF_ERR_MAX])
{
	char text[JOURNAL_MAX];
	int n = snprintf(text, sizeof(text), JOURNAL_TAG "\nold %s\nnew %s\n",
			 k->fpr_old, k->fpr_new);

	return kf_file_write_atomic(k->m->cfg->state_dir, KF_REKEY_JOURNAL,
				    text, (size_t)n, 0600, 0, err);
}

static int journal_remove(struct rekey *k, char err[KF_ERR_MAX])
{
	char *path = kf_path_join(k->m->cfg->state_dir, KF_REKEY_JOURNAL);
	int r = 0;

	if (!path || (unlink(path) < 0 && errno != ENOENT))
		r = path ? -errno : -ENOMEM;
	KF_CRASH("rekey/journal_removed");
	if (r == 0)
		r = kf_dir_fsync(k->m->cfg->state_dir);
	if (r < 0)
		kf_err_set(err, "%s: %s", path ? path : KF_REKEY_JOURNAL,
			   strerror(-r));
	free(path);
	return r;
}

/* --- the steps ------------------------------------------------------------ */

/* A key_rekey record (or event's) with both fingerprints. */
static json_t *rekey_record(const struct rekey *k, enum kf_event event)
{
	json_t *rec = kf_event_record(event, k->who);

	if (k->fpr_old[0])
		json_object_set_new(rec, "old_master", json_string(k->fpr_old));
	if (k->fpr_new[0])
		json_object_set_new(rec, "new_master", json_string(k->fpr_new));
	return rec;
}

/*
 * Before anything changes: the state, every archive and the whole audit
 * log must open under the configured (old) key, so that nothing the
 * rotation rewrites is lost and the audit chain it rewrites was whole.
 */
static int precheck(struct rekey *k, char err[KF_ERR_MAX])
{
	const struct kf_config *cfg = k->m->cfg;
	struct kf_backup_info *list = NULL;
	uint8_t *plain = NULL, *blob = NULL;
	char path[4096];
	size_t n = 0, len = 0;
	int r;

	r = kf_store_load(cfg->state_dir, k->keys_old->state, &plain, &len,
			  err);
	if (r == 0)
		sodium_free(plain);
	if (r < 0 && r != -ENOENT) {
		kf_err_prefix(err, "the state does not open under the "
				   "configured master key: ");
		return r;
	}
	r = kf_manager_verify_audit(cfg, NULL, r == 0, err);
	if (r < 0) {
		kf_err_prefix(err, "the audit log does not verify under the "
				   "configured master key (run keyfs audit "
				   "verify): ");
		return r;
	}
	r = kf_backup_list(cfg->backup_dir, &list, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", cfg->backup_dir,
			 list[i].name);
		r = kf_backup_read(path, k->keys_old->backup, &blob, &len, NULL,
				   err);
		/* A cluster's window: copied from etcd, or made by a node
		 * whose cluster was already under the new key. */
		if (r == -EBADMSG && k->etcd)
			r = kf_backup_read(path, k->keys_new->backup, &blob,
					   &len, NULL, err);
		if (r == 0)
			sodium_free(blob);
		else
			kf_err_prefix(err,
				      "archive %s does not open under the "
				      "configured master key: ",
				      list[i].name);
	}
	free(list);
	if (r == 0 && k->etcd)
		r = kf_rekey_cluster_check(k->etcd, cfg, k->keys_old,
					   k->keys_new, k->fpr_new, err);
	return r;
}

/* Every archive in backup_dir, sealed under the new key. */
static int rekey_archives(struct rekey *k, char err[KF_ERR_MAX])
{
	const struct kf_config *cfg = k->m->cfg;
	struct kf_backup_info *list = NULL;
	size_t n = 0;
	bool rewritten;
	int r;

	r = kf_backup_list(cfg->backup_dir, &list, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		r = kf_backup_rekey(cfg->backup_dir, list[i].name,
				    k->keys_old ? k->keys_old->backup : NULL,
				    k->keys_new->backup, &rewritten, err);
		if (r < 0)
			kf_err_prefix(err, "archive %s: ", list[i].name);
		k->res.archives += r == 0;
		k->res.archives_rewritten += r == 0 && rewritten;
	}
	free(list);
	return r;
}

/* The state sealed under the new key, holding anchor. */
static int rekey_state(struct rekey *k, const struct kf_audit_anchor *anchor,
		       char err[KF_ERR_MAX])
{
	const char *dir = k->m->cfg->state_dir;
	uint8_t *plain = NULL, *out = NULL;
	size_t len = 0, out_len = 0;
	int r;

	r = kf_store_load(dir, k->keys_new->state, &plain, &len, err);
	if (r == -EBADMSG && k->keys_old)
		r = kf_store_load(dir, k->keys_old->state, &plain, &len, err);
	if (r == -ENOENT)
		return 0;
	if (r == 0 && len < KF_STATE_ANCHOR_BYTES) {
		r = -EBADMSG;
		kf_err_set(err, "state too short");
	}
	/* A cluster node's copy: the keyring as etcd now holds it. */
	if (r == 0 && k->cl.blob)
		r = kf_state_encode_bytes(k->cl.blob, k->cl.len, anchor, &out,
					  &out_len, err);
	else if (r == 0)
		r = kf_state_encode_bytes(plain + KF_STATE_ANCHOR_BYTES,
					  len - KF_STATE_ANCHOR_BYTES, anchor,
					  &out, &out_len, err);
	if (r == 0)
		r = kf_store_save(dir, k->keys_new->state, out, out_len, err);
	if (r < 0)
		kf_err_prefix(err, "state: ");
	else
		k->res.state = true;
	if (plain)
		sodium_free(plain);
	if (out)
		sodium_free(out);
	return r;
}

/*
 * The new key into master_key_file, in place of the old (same mode; the
 * owner is root, who runs this).  Nothing to do when the key came from
 * KEYFS_MASTER_KEY (the administrator sets it anew) or is in place.
 */
static int install_master(struct rekey *k, char err[KF_ERR_MAX])
{
	const char *path = k->m->cfg->master_key_file;
	char text[KF_KEY_TEXT_LEN + 2], *dir, *name;
	struct stat st;
	int r;

	if (k->from_env || !k->old)
		return 0;
	if (lstat(path, &st) < 0) {
		r = -errno;
		kf_err_set(err, "master key file %s: %s", path, strerror(-r));
		return r;
	}
	dir = strdup(path);
	if (!dir) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	name = strrchr(dir, '/');
	if (name)
		*name++ = 0;
	kf_key_encode(k->next, text);
	text[KF_KEY_TEXT_LEN] = '\n';
	text[KF_KEY_TEXT_LEN + 1] = 0;
	r = kf_file_write_atomic(name ? (*dir ? dir : "/") : ".",
				 name ? name : dir, text, KF_KEY_TEXT_LEN + 1,
				 st.st_mode & 0600, 0, err);
	sodium_memzero(text, sizeof(text));
	free(dir);
	if (r < 0)
		kf_err_prefix(err, "master key file %s: ", path);
	k->res.installed = r == 0;
	return r;
}

/* What the rotation did in etcd, for the key_rekey record. */
static json_t *cluster_fields(const struct rekey *k)
{
	json_t *o = json_object();

	json_object_set_new(o, "node", json_string(k->m->cfg->etcd.node));
	json_object_set_new(o, "generation",
			    json_integer((json_int_t)k->cl.generation));
	json_object_set_new(o, "switched", json_boolean(k->cl.switched));
	json_object_set_new(o, "archives",
			    json_integer((json_int_t)k->cl.archives));
	json_object_set_new(o, "archives_rewritten",
			    json_integer((json_int_t)k->cl.archives_rewritten));
	return o;
}

/*
 * From the journal on: archives, audit log, the key_rekey record under the
 * new key, the state holding its anchor, the master key file, the journal
 * gone.  Each step finds what an earlier run did and goes on from there.
 */
static int finish(struct rekey *k, char err[KF_ERR_MAX])
{
	const struct kf_config *cfg = k->m->cfg;
	struct kf_audit_rekey_result ares = {0};
	struct kf_audit_anchor anchor = {0};
	bool broken = false;
	json_t *rec;
	int r;

	if (k->etcd) {
		r = kf_rekey_cluster_switch(k->etcd, cfg, k->keys_old,
					    k->keys_new, &k->cl, err);
		if (r < 0)
			return r;
	}
	r = rekey_archives(k, err);
	if (r == 0) {
		r = kf_audit_rekey(cfg->audit_log,
				   k->keys_old ? k->keys_old->audit : NULL,
				   k->keys_new->audit, &ares, err);
		if (r < 0)
			kf_err_prefix(err, "audit log: ");
	}
	if (r < 0)
		return r;
	k->res.audit_files = ares.files;
	k->res.audit_files_rewritten = ares.rewritten;
	r = kf_audit_open(cfg->audit_log, k->keys_new->audit, &k->m->audit,
			  &broken, err);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		return r;
	}
	rec = rekey_record(k, KF_EVENT_KEY_REKEY);
	json_object_set_new(rec, "resumed", json_boolean(k->resumed));
	json_object_set_new(rec, "archives",
			    json_integer((json_int_t)k->res.archives));
	json_object_set_new(
	    rec, "archives_rewritten",
	    json_integer((json_int_t)k->res.archives_rewritten));
	json_object_set_new(rec, "audit_files",
			    json_integer((json_int_t)ares.files));
	json_object_set_new(rec, "audit_files_rewritten",
			    json_integer((json_int_t)ares.rewritten));
	if (k->etcd)
		json_object_set_new(rec, "cluster", cluster_fields(k));
	json_object_set_new(rec, "success", json_true());
	r = kf_audit_append_anchored(k->m->audit, rec, &anchor, err);
	if (r == 0)
		r = kf_audit_sync(k->m->audit, err);
	KF_CRASH("rekey/recorded");
	json_decref(rec);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		return r;
	}
	r = rekey_state(k, &anchor, err);
	if (r == 0)
		r = install_master(k, err);
	if (r == 0)
		r = journal_remove(k, err);
	return r;
}

/*
 * Loads both keys and decides what this run is: a new rotation (checked
 * first, audited under the old key) or the rest of an interrupted one.
 */
static int begin(struct rekey *k, const char *new_path, char err[KF_ERR_MAX])
{
	const struct kf_config *cfg = k->m->cfg;
	char j_old[KF_MASTER_FPR_LEN + 1] = "", j_new[KF_MASTER_FPR_LEN + 1];
	char fpr_cur[KF_MASTER_FPR_LEN + 1];
	bool broken = false;
	int r;

	k->from_env = kf_env_get(KF_ENV_MASTER_KEY) != NULL;
	r = kf_master_load(cfg->master_key_file, false, &k->cur, NULL, err);
	if (r < 0)
		return r;
	kf_master_fingerprint(k->cur, fpr_cur);
	r = journal_read(cfg, j_old, j_new, err);
	if (r < 0)
		return r;
	k->resumed = r == 1;
	/* A new rotation: its refusals go into the log, still whole. */
	if (!k->resumed) {
		snprintf(k->fpr_old, sizeof(k->fpr_old), "%s", fpr_cur);
		k->keys_old = kf_mgr_subkeys_new(k->cur);
		if (!k->keys_old) {
			kf_err_set(err, "out of memory");
			return -ENOMEM;
		}
		r = kf_audit_open(cfg->audit_log, k->keys_old->audit,
				  &k->m->audit, &broken, err);
		if (r < 0) {
			kf_err_prefix(err, "audit log: ");
			return r;
		}
	}
	r = kf_master_load_file(new_path, NULL, &k->next, err);
	if (r < 0) {
		kf_err_prefix(err, "new master key: ");
		return r;
	}
	kf_master_fingerprint(k->next, k->fpr_new);
	if (!k->resumed) {
		k->old = k->cur;
		if (sodium_memcmp(k->cur, k->next, KF_KEY_BYTES) == 0) {
			kf_err_set(err, "the new master key is the one in use "
					"(make one with keyfs genkey)");
			return -EINVAL;
		}
		return 0;
	}
	if (strcmp(k->fpr_new, j_new) != 0) {
		kf_err_set(err,
			   "a rotation to the master key with fingerprint %s "
			   "is incomplete; finish it with that key's file "
			   "(this one's fingerprint is %s)",
			   j_new, k->fpr_new);
		return -EINVAL;
	}
	snprintf(k->fpr_old, sizeof(k->fpr_old), "%s", j_old);
	if (strcmp(fpr_cur, j_old) == 0) {
		k->old = k->cur;
	} else if (strcmp(fpr_cur, j_new) != 0) {
		kf_err_set(err,
			   "the configured master key (fingerprint %s) is "
			   "neither the old (%s) nor the new (%s) key of the "
			   "incomplete rotation",
			   fpr_cur, j_old, j_new);
		return -EINVAL;
	}
	return 0;
}

int kf_manager_rekey(const struct kf_config *cfg, const char *new_master,
		     const struct kf_caller *who,
		     struct kf_manager_rekey_result *ret, char err[KF_ERR_MAX])
{
	struct rekey k = {.who = who};
	int r;

	memset(ret, 0, sizeof(*ret));
	r = kf_mgr_open_bare(cfg, &k.m, err);
	if (r < 0)
		return r;
	r = begin(&k, new_master, err);
	if (r == 0 && cfg->store == KF_STORE_TYPE_ETCD)
		r = kf_rekey_cluster_connect(cfg, &k.etcd, err);
	if (r == 0 && k.old && !k.keys_old &&
	    !(k.keys_old = kf_mgr_subkeys_new(k.old)))
		r = -ENOMEM;
	if (r == 0 && !(k.keys_new = kf_mgr_subkeys_new(k.next)))
		r = -ENOMEM;
	if (r == -ENOMEM)
		kf_err_set(err, "out of memory");
	if (r == 0 && !k.resumed)
		r = precheck(&k, err);
	if (r == 0 && !k.resumed) {
		json_t *rec = rekey_record(&k, KF_EVENT_KEY_REKEY_START);
		uint64_t seq = 0;

		json_object_set_new(rec, "success", json_true());
		r = kf_mgr_record_durable(k.m, rec, &seq, err);
		json_decref(rec);
		if (r == 0)
			k.m->audit = kf_audit_close(k.m->audit);
		if (r == 0)
			r = journal_write(&k, err);
	}
	k.journaled = r == 0;
	if (r == 0)
		r = finish(&k, err);
	if (r == 0) {
		k.res.resumed = k.resumed;
		k.res.from_env = k.from_env;
		snprintf(k.res.old_fpr, sizeof(k.res.old_fpr), "%s", k.fpr_old);
		snprintf(k.res.new_fpr, sizeof(k.res.new_fpr), "%s", k.fpr_new);
		k.res.cluster = k.etcd != NULL;
		k.res.cluster_switched = k.cl.switched;
		k.res.cluster_generation = k.cl.generation;
		k.res.cluster_archives = k.cl.archives;
		k.res.cluster_archives_rewritten = k.cl.archives_rewritten;
		*ret = k.res;
	}
	if (r < 0) {
		if (k.journaled)
			kf_err_prefix(err, "rotation incomplete (run keyfs "
					   "rekey again to finish it): ");
		kf_mgr_report_failure(k.m, rekey_record(&k, KF_EVENT_KEY_REKEY),
				      0, err);
	}
	kf_rekey_cluster_done(&k.cl);
	kf_etcd_free(k.etcd);
	if (k.keys_old)
		sodium_free(k.keys_old);
	if (k.keys_new)
		sodium_free(k.keys_new);
	if (k.cur)
		sodium_free(k.cur);
	if (k.next)
		sodium_free(k.next);
	kf_manager_close(k.m);
	return r;
}
