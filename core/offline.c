// SPDX-License-Identifier: MIT
/*
 * offline: what the keyfs command does with a configuration and the master
 * key alone, no manager and no state lock -- audit verify, backup verify,
 * backup list.  Each internal key is derived when needed and wiped after.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "audit_verify.h"
#include "manager_private.h"
#include "state.h"

/*
 * The internal keys from the configured master key (never created here),
 * in sodium_malloc'd memory the caller sodium_free's.
 */
static int offline_keys(const struct kf_config *cfg, struct kf_subkeys **ret,
			char err[KF_ERR_MAX])
{
	struct kf_subkeys *keys;
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
	keys = kf_mgr_subkeys_new(master);
	sodium_free(master);
	if (!keys) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	*ret = keys;
	return 0;
}

/* The audit anchor sealed in cfg's state. */
static int sealed_anchor(const struct kf_config *cfg,
			 const struct kf_subkeys *keys,
			 struct kf_audit_anchor *ret, char err[KF_ERR_MAX])
{
	struct kf_store *st = NULL;
	uint8_t *plain = NULL;
	size_t len = 0;
	int r;

	r = kf_store_file_new(cfg->state_dir, keys->state, &st);
	if (r < 0) {
		kf_err_set(err, "out of memory");
		return r;
	}
	r = st->ops->load(st, &plain, &len, err);
	/* A single-node keyring or a cluster copy: the anchor leads both. */
	if (r == 0) {
		r = kf_state_anchor(plain, len, ret, err);
		sodium_free(plain);
	}
	kf_store_free(st);
	return r;
}

int kf_manager_verify_audit(const struct kf_config *cfg,
			    const char *const *paths, bool check_anchor,
			    char report[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor = {0};
	struct kf_subkeys *keys = NULL;
	const char *base = strrchr(cfg->audit_log, '/'), *folder[1];
	char *dir = NULL;
	size_t n = 0;
	int r;

	base = base ? base + 1 : cfg->audit_log;
	while (paths && paths[n])
		n++;
	if (n == 0) {
		/* The configured log: its active file and closed segments. */
		dir = base > cfg->audit_log + 1
			  ? strndup(cfg->audit_log,
				    (size_t)(base - 1 - cfg->audit_log))
			  : strdup(base > cfg->audit_log ? "/" : ".");
		if (!dir) {
			kf_err_set(report, "out of memory");
			return -ENOMEM;
		}
		folder[0] = dir;
		paths = folder;
		n = 1;
	}
	r = offline_keys(cfg, &keys, report);
	if (r < 0)
		goto out;
	/*
	 * Files given as paths are checked against the anchor too, or a copy
	 * cut short would verify.  A state that cannot be read fails the
	 * check rather than skipping it: skipping is the caller's explicit
	 * choice (check_anchor false), and the report then says so.
	 */
	if (check_anchor) {
		r = sealed_anchor(cfg, keys, &anchor, report);
		if (r < 0)
			kf_err_prefix(report, "sealed state: ");
	}
	if (r == 0)
		r = kf_audit_verify_files(paths, n, base, keys->audit,
					  check_anchor ? &anchor : NULL, report,
					  NULL);
	sodium_free(keys);
out:
	free(dir);
	return r;
}

int kf_manager_verify_backup(const struct kf_config *cfg, const char *path,
			     struct kf_backup_info *ret_info,
			     char err[KF_ERR_MAX])
{
	struct kf_subkeys *keys = NULL, *nk = NULL;
	struct kf_keyring *kr = NULL;
	uint8_t *blob = NULL, *next = NULL;
	size_t len = 0;
	int r;

	r = offline_keys(cfg, &keys, err);
	if (r < 0)
		return r;
	/* A cluster node in a master-key rotation's window: either key. */
	if (cfg->master_key_next &&
	    kf_master_load_file(cfg->master_key_next, "master_key_next", &next,
				NULL) == 0)
		nk = kf_mgr_subkeys_new(next);
	if (next)
		sodium_free(next);
	r = kf_mgr_backup_read_either(keys, nk, path, &blob, &len, ret_info,
				      err);
	sodium_free(keys);
	if (nk)
		sodium_free(nk);
	if (r < 0)
		return r;
	r = kf_keyring_decode(blob, len, &kr, err);
	sodium_free(blob);
	if (r == 0 && ret_info &&
	    kf_keyring_current_version(kr) != ret_info->key_version) {
		kf_err_set(err,
			   "key_version does not match the keyring inside");
		r = -EBADMSG;
	}
	kf_keyring_unref(kr);
	return r;
}

int kf_manager_list_backups_offline(const struct kf_config *cfg,
				    struct kf_backup_info **ret, size_t *ret_n,
				    char err[KF_ERR_MAX])
{
	return kf_backup_list(cfg->backup_dir, ret, ret_n, err);
}
