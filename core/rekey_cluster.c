// SPDX-License-Identifier: MIT
/*
 * rekey_cluster: the cluster's part of a master-key rotation with store =
 * etcd (README: Master-key rotation, "A cluster").  The first node whose
 * `keyfs rekey` runs seals the cluster keyring in etcd anew under the new
 * key (one compare-and-swap: the next generation, change "rekey") and then
 * every archive etcd holds; the nodes still running open it because each
 * holds the new key as master_key_next (checked first, from their node
 * records).  Every later node finds etcd done and rotates only its own
 * files.  Each step finds what an earlier run did: a blob or an archive
 * already under the new key is left alone.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backup_private.h"
#include "etcd.h"
#include "rekey_cluster.h"

#define SWAP_TRIES 20 /* compare-and-swaps lost to other nodes' changes */

int kf_rekey_cluster_connect(const struct kf_config *cfg, struct kf_etcd **ret,
			     char err[KF_ERR_MAX])
{
	int r = kf_cluster_client(cfg, ret, err);

	if (r < 0)
		kf_err_prefix(err, "rekey of a cluster node needs etcd: ");
	return r;
}

/*
 * The live nodes other than self whose record shows neither master nor
 * master_next = fpr, as "a, b" into names: their count, or -errno.
 */
static int unprepared(struct kf_etcd *e, const char *self, const char *fpr,
		      char *names, size_t size, char err[KF_ERR_MAX])
{
	json_t *nodes = NULL, *o;
	size_t len = 0, i;
	int r, n = 0;

	names[0] = 0;
	r = kf_mgr_cluster_node_records(e, &nodes, err);
	if (r < 0)
		return r;
	json_array_foreach(nodes, i, o)
	{
		const char *node =
		    json_string_value(json_object_get(o, "node"));
		const char *cur =
		    json_string_value(json_object_get(o, "master"));
		const char *next =
		    json_string_value(json_object_get(o, "master_next"));

		if (!node || !strcmp(node, self) ||
		    (cur && !strcmp(cur, fpr)) || (next && !strcmp(next, fpr)))
			continue;
		n++;
		if (len < size)
			len += (size_t)snprintf(names + len, size - len, "%s%s",
						len ? ", " : "", node);
	}
	json_decref(nodes);
	return n;
}

int kf_rekey_cluster_check(struct kf_etcd *e, const struct kf_config *cfg,
			   const struct kf_subkeys *old,
			   const struct kf_subkeys *next, const char *fpr_next,
			   char err[KF_ERR_MAX])
{
	struct kf_etcd_kv kv = {0};
	struct kf_keyring *kr = NULL;
	char names[KF_ERR_MAX / 2];
	int r;

	r = kf_etcd_get(e, KF_CLUSTER_KEYRING, &kv, err);
	if (r == -ENOENT)
		kf_err_set(err, "no cluster keyring under %s in etcd",
			   cfg->etcd.prefix);
	if (r < 0) {
		kf_err_prefix(err, "rekey of a cluster node needs etcd: ");
		return r;
	}
	/* Done by another node's rekey: this one's own files are left. */
	if (kf_cluster_sealed_under(next->cluster, kv.value, kv.len))
		goto out;
	r = kf_cluster_unseal(old->cluster, cfg->etcd.prefix, kv.value, kv.len,
			      NULL, &kr, err);
	kf_keyring_unref(kr);
	if (r < 0) {
		kf_err_prefix(err, "the cluster keyring in etcd does not open "
				   "under the configured master key: ");
		goto out;
	}
	r = unprepared(e, cfg->etcd.node, fpr_next, names, sizeof(names), err);
	if (r < 0) {
		kf_err_prefix(err, "reading the node records: ");
		goto out;
	}
	if (r > 0) {
		kf_err_set(err,
			   "%d running node%s not hold the new master key "
			   "(fingerprint %s) as master_key_next: %s; set it on "
			   "each and restart it first, or stop it",
			   r, r == 1 ? " does" : "s do", fpr_next, names);
		r = -EBUSY;
	}
out:
	kf_etcd_kv_clear(&kv);
	return r;
}

/* The keyring in kv sealed anew under next as the next generation. */
static int reseal_keyring(const struct kf_config *cfg,
			  const struct kf_subkeys *old,
			  const struct kf_subkeys *next,
			  const struct kf_etcd_kv *kv, uint8_t **ret,
			  size_t *ret_len, uint64_t *ret_gen,
			  char err[KF_ERR_MAX])
{
	struct kf_cluster_info info;
	struct kf_keyring *kr = NULL;
	int r;

	if (!old) {
		kf_err_set(err, "the cluster keyring in etcd is not under the "
				"new master key, and the old one is no longer "
				"configured");
		return -EBADMSG;
	}
	r = kf_cluster_unseal(old->cluster, cfg->etcd.prefix, kv->value,
			      kv->len, &info, &kr, err);
	if (r < 0)
		return r;
	info.generation++;
	info.created = kf_time_now();
	info.change = KF_CHANGE_REKEY;
	snprintf(info.node, sizeof(info.node), "%s", cfg->etcd.node);
	r = kf_cluster_seal(next->cluster, cfg->etcd.prefix, &info, kr, ret,
			    ret_len, err);
	kf_keyring_unref(kr);
	if (r == 0)
		*ret_gen = info.generation;
	return r;
}

/* The keyring in etcd under next: sealed anew here, or found so. */
static int switch_keyring(struct kf_etcd *e, const struct kf_config *cfg,
			  const struct kf_subkeys *old,
			  const struct kf_subkeys *next,
			  struct kf_rekey_cluster *res, char err[KF_ERR_MAX])
{
	struct kf_etcd_kv kv = {0};
	struct kf_cluster_info info;
	int r;

	r = kf_etcd_get(e, KF_CLUSTER_KEYRING, &kv, err);
	for (int i = 0; r == 0 && i < SWAP_TRIES; i++) {
		struct kf_etcd_op op = {.name = KF_CLUSTER_KEYRING};
		struct kf_etcd_kv now = {0};
		uint8_t *blob = NULL;
		size_t len = 0;
		uint64_t gen = 0;

		if (kf_cluster_sealed_under(next->cluster, kv.value, kv.len)) {
			r = kf_cluster_peek(kv.value, kv.len, &info, err);
			if (r < 0)
				break;
			res->blob = kv.value;
			res->len = kv.len;
			res->generation = info.generation;
			kv.value = NULL;
			break;
		}
		r = reseal_keyring(cfg, old, next, &kv, &blob, &len, &gen, err);
		if (r < 0)
			break;
		op.value = blob;
		op.len = len;
		r = kf_etcd_cas(e, KF_CLUSTER_KEYRING, kv.mod_revision, &op, 1,
				NULL, &now, err);
		kf_etcd_kv_clear(&kv);
		kv = now; /* after a conflict: the keyring as it is now */
		if (r == 0) {
			res->blob = blob;
			res->len = len;
			res->generation = gen;
			res->switched = true;
			break;
		}
		free(blob);
		if (r == KF_ETCD_CONFLICT && !kv.value) {
			kf_err_set(err,
				   "the cluster keyring is gone from etcd");
			r = -ENOENT;
		} else if (r == KF_ETCD_CONFLICT) {
			r = i + 1 < SWAP_TRIES ? 0 : -EAGAIN;
			kf_err_set(err, "the cluster keyring kept changing");
		}
	}
	kf_etcd_kv_clear(&kv);
	if (r < 0)
		kf_err_prefix(err, "cluster keyring: ");
	return r;
}

/* One archive etcd holds, under next: 1 rewritten, 0 already, -errno. */
static int switch_archive(struct kf_etcd *e, const struct kf_subkeys *old,
			  const struct kf_subkeys *next,
			  const struct kf_etcd_kv *kv, char err[KF_ERR_MAX])
{
	const uint8_t *value = kv->value;
	size_t len = kv->len;
	int64_t expect = kv->mod_revision;
	struct kf_etcd_kv now = {0};
	int r = 0;

	for (int i = 0; i < SWAP_TRIES; i++) {
		struct kf_etcd_op op = {.name = kv->name};
		char *text = NULL;
		int64_t created;

		r = kf_backup_reseal(value, len, old ? old->backup : NULL,
				     next->backup, &text, &created, err);
		if (r <= 0)
			break;
		op.value = (const uint8_t *)text;
		op.len = strlen(text);
		kf_etcd_kv_clear(&now);
		r = kf_etcd_cas(e, kv->name, expect, &op, 1, NULL, &now, err);
		free(text);
		if (r == 0) {
			r = 1;
			break;
		}
		if (r != KF_ETCD_CONFLICT)
			break;
		r = 0;
		/* Pruned meanwhile: nothing to rotate. */
		if (!now.value)
			break;
		value = now.value;
		len = now.len;
		expect = now.mod_revision;
		if (i + 1 == SWAP_TRIES) {
			kf_err_set(err, "it kept changing");
			r = -EAGAIN;
		}
	}
	kf_etcd_kv_clear(&now);
	return r;
}

int kf_rekey_cluster_switch(struct kf_etcd *e, const struct kf_config *cfg,
			    const struct kf_subkeys *old,
			    const struct kf_subkeys *next,
			    struct kf_rekey_cluster *res, char err[KF_ERR_MAX])
{
	struct kf_etcd_kv *kvs = NULL;
	size_t n = 0;
	int r;

	r = switch_keyring(e, cfg, old, next, res, err);
	if (r == 0) {
		r = kf_etcd_list(e, KF_CLUSTER_ARCHIVES, 0, &kvs, &n, NULL,
				 err);
		if (r < 0)
			kf_err_prefix(err, "listing the archives in etcd: ");
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		r = switch_archive(e, old, next, &kvs[i], err);
		if (r < 0) {
			kf_err_prefix(err, "archive %s in etcd: ", kvs[i].name);
			break;
		}
		res->archives++;
		res->archives_rewritten += r == 1;
		r = 0;
	}
	kf_etcd_kvs_free(kvs, n);
	return r;
}

void kf_rekey_cluster_done(struct kf_rekey_cluster *res)
{
	free(res->blob);
	memset(res, 0, sizeof(*res));
}
