// SPDX-License-Identifier: MIT
/*
 * cluster_init: `keyfs cluster init` -- the cluster keyring's first
 * generation, made explicitly (DESIGN.md §9: no daemon ever makes one on
 * its own).  Its keyring comes from this node's single-node state_dir
 * (migration; its archives are published too), from ENCRYPTION_KEY..., or
 * is generated in development mode.  A prefix that already holds a keyring
 * is never overwritten: the compare-and-swap creates it only if absent.
 *
 * With --from-state on a node whose state is already a cluster copy (etcd
 * lost everything), the copy's keyring goes back in as the next
 * generation of the same cluster, so the other nodes adopt it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "log.h"
#include "manager_private.h"
#include "state.h"

/* The keyring of state_dir: a single-node keyring or a cluster copy. */
static int keyring_of_state(struct kf_manager *m, struct kf_keyring **ret,
			    char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	struct kf_audit_anchor anchor;
	struct kf_cluster_info info;
	const uint8_t *blob;
	uint8_t *plain = NULL;
	size_t len = 0, blen = 0;
	int r;

	r = m->store->ops->load(m->store, &plain, &len, err);
	if (r == -ENOENT)
		kf_err_set(err, "%s holds no keyring to move into the cluster",
			   m->cfg->state_dir);
	if (r < 0)
		return r;
	r = kf_state_decode(plain, len, &anchor, ret, err);
	if (r == -EMEDIUMTYPE) {
		r = kf_state_decode_cluster(plain, len, &anchor, &blob, &blen,
					    err);
		if (r == 0)
			r = kf_cluster_unseal(m->keys->cluster,
					      m->cfg->etcd.prefix, blob, blen,
					      &info, ret, err);
		/* The same cluster, one generation on. */
		if (r == 0)
			cl->info = info;
	}
	sodium_free(plain);
	return r;
}

/* Publishes every archive of backup_dir (a migration's history). */
static int publish_all(struct kf_manager *m, size_t *ret_n,
		       char err[KF_ERR_MAX])
{
	struct kf_backup_info *list = NULL;
	size_t n = 0;
	int r;

	r = kf_backup_list(m->cfg->backup_dir, &list, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = kf_mgr_cluster_publish_file(m, list[i].name, err);
	free(list);
	*ret_n = n;
	return r;
}

int kf_mgr_cluster_init(struct kf_manager *m, bool from_state,
			char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl;
	enum kf_event event = KF_EVENT_KEY_LOAD;
	struct kf_keyring *kr = NULL, *raised = NULL;
	struct kf_caller self;
	uint8_t *plain = NULL;
	uint64_t cancel = 0;
	size_t len = 0, published = 0;
	json_t *rec;
	int r;

	r = kf_mgr_cluster_setup(m, err);
	if (r < 0)
		return r;
	cl = m->cl;
	randombytes_buf(cl->info.cluster_id, sizeof(cl->info.cluster_id));
	if (from_state) {
		r = keyring_of_state(m, &kr, err);
	} else {
		r = m->store->ops->load(m->store, &plain, &len, err);
		if (plain)
			sodium_free(plain);
		if (r == 0) {
			kf_err_set(err,
				   "%s already holds a keyring; move it into "
				   "the cluster with --from-state, or use an "
				   "empty state_dir",
				   m->cfg->state_dir);
			r = -EEXIST;
		} else if (r == -ENOENT) {
			r = kf_mgr_new_keyring(m, &kr, &event, err);
		}
	}
	if (r < 0)
		return r;
	/* Numbers any archive here holds stay issued. */
	r = kf_keyring_raise_highest(kr, kf_mgr_highest_known(m, kr), &raised);
	kf_keyring_unref(kr);
	if (r < 0) {
		kf_err_set(err, "%s", strerror(-r));
		return r;
	}
	rec = kf_event_record(event, kf_event_self(&self));
	json_object_set_new(rec, "cluster_init", json_true());
	json_object_set_new(rec, "prefix", json_string(m->cfg->etcd.prefix));
	json_object_set_new(rec, "key_version",
			    json_integer(kf_keyring_current_version(raised)));
	json_object_set_new(rec, "versions", kf_mgr_versions_json(raised));
	cl->initializing = true;
	cl->ok = true; /* no heartbeat yet: the CAS itself will tell */
	r = kf_mgr_commit(m, raised, rec, &cancel, err);
	cl->initializing = false;
	json_decref(rec);
	kf_keyring_unref(raised);
	if (r < 0) {
		rec = kf_event_record(event, kf_event_self(&self));
		json_object_set_new(rec, "cluster_init", json_true());
		kf_mgr_record_failure(m, rec, cancel, err);
		return r;
	}
	if (publish_all(m, &published, err) < 0)
		kf_log(LOG_WARNING,
		       "the keyring is in the cluster, but not every archive "
		       "of %s is (they stay there): %s",
		       m->cfg->backup_dir, err);
	kf_log(LOG_NOTICE,
	       "cluster keyring created under %s: version %" PRIu32
	       ", generation %" PRIu64 ", %zu archive(s) published",
	       m->cfg->etcd.prefix, cl->info.version, cl->info.generation,
	       published);
	return 0;
}
