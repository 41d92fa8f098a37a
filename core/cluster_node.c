// SPDX-License-Identifier: MIT
/*
 * cluster_node: the manager with store = etcd (DESIGN.md §9) -- start-up
 * from etcd or the local copy, changes by compare-and-swap, adoption of
 * other nodes' changes.  The etcd clients and the threads that watch etcd
 * and keep this node's record are in cluster_threads.c, the archives every
 * node keeps a copy of in cluster_archives.c.
 *
 * What a node serves is one generation of the cluster keyring: the sealed
 * blob (cluster.h) exactly as etcd held it, kept in the local state after
 * the audit anchor (state.h), so a restart while etcd is away serves the
 * same keys.  A generation is adopted only when it opens under this
 * cluster's key and prefix, carries the cluster id this node has served,
 * and is higher than the one served: an older one (a rollback, say an etcd
 * restored from an old snapshot) is refused and alerted, never served.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "etcd.h"
#include "log.h"
#include "manager_private.h"
#include "state.h"

/* --- what a node serves ----------------------------------------------------
 */

const struct kf_subkeys *kf_mgr_keys_of(const struct kf_manager *m,
					const uint8_t *blob, size_t len)
{
	if (m->next_keys &&
	    kf_cluster_sealed_under(m->next_keys->cluster, blob, len))
		return m->next_keys;
	return m->keys;
}

/* kf_cluster_unseal under the key blob was sealed with (either, in a
 * master-key rotation's window). */
static int cluster_unseal(const struct kf_manager *m, const uint8_t *blob,
			  size_t len, struct kf_cluster_info *ret_info,
			  struct kf_keyring **ret, char err[KF_ERR_MAX])
{
	return kf_cluster_unseal(kf_mgr_keys_of(m, blob, len)->cluster,
				 m->cfg->etcd.prefix, blob, len, ret_info, ret,
				 err);
}

const struct kf_subkeys *kf_mgr_seal_keys(const struct kf_manager *m)
{
	return m->cl && m->cl->sealer ? m->cl->sealer : m->keys;
}

/* The local copy: blob after the audit log's present anchor. */
static int save_copy(struct kf_manager *m, const uint8_t *blob, size_t len,
		     char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	struct kf_store *st = m->store;
	uint8_t *plain = NULL;
	size_t plen = 0;
	int r;

	kf_audit_anchor(m->audit, &anchor);
	r = kf_state_encode_bytes(blob, len, &anchor, &plain, &plen, err);
	if (r < 0)
		return r;
	r = st->ops->prepare(st, plain, plen, err);
	sodium_free(plain);
	if (r == 0)
		r = st->ops->commit(st, err);
	if (r == 0)
		kf_mgr_sealed(m, anchor.seq);
	if (r != 0)
		kf_err_prefix(err, "local copy of the cluster keyring: ");
	return r == KF_FILE_UNSYNCED ? -EIO : r;
}

int kf_mgr_cluster_save_copy(struct kf_manager *m, char err[KF_ERR_MAX])
{
	if (!m->cl->blob)
		return 0;
	return save_copy(m, m->cl->blob, m->cl->blob_len, err);
}

/* Makes blob (copied) the served generation; caller holds op_lock. */
static int serve(struct kf_manager *m, const uint8_t *blob, size_t len,
		 const struct kf_cluster_info *info, int64_t rev,
		 struct kf_keyring *kr)
{
	struct kf_mgr_cluster *cl = m->cl;
	uint8_t *copy = malloc(len);

	if (!copy)
		return -ENOMEM;
	memcpy(copy, blob, len);
	free(cl->blob);
	cl->blob = copy;
	cl->blob_len = len;
	cl->sealer = kf_mgr_keys_of(m, blob, len);
	cl->info = *info;
	cl->revision = rev;
	cl->rotated_ms =
	    info->change == KF_CHANGE_ROTATE ? kf_time_mono_ms() : 0;
	pthread_mutex_lock(&cl->lock);
	cl->shown = *info;
	pthread_mutex_unlock(&cl->lock);
	kf_mgr_swap(m, kr);
	return 0;
}

/* A node record's and log's short form of a generation. */
static void describe(const struct kf_cluster_info *i, char *buf, size_t size)
{
	snprintf(buf, size,
		 "version %" PRIu32 ", generation %" PRIu64 " (%s by node %s)",
		 i->version, i->generation, kf_cluster_change_name(i->change),
		 i->node);
}

/* A refused keyring from etcd: audited as a failed key_sync, alerted. */
static void refuse(struct kf_manager *m, const struct kf_cluster_info *i,
		   const char *why)
{
	json_t *rec = kf_event_record(KF_EVENT_KEY_SYNC, NULL);

	if (i) {
		json_object_set_new(rec, "generation",
				    json_integer((json_int_t)i->generation));
		json_object_set_new(rec, "key_version",
				    json_integer(i->version));
		json_object_set_new(rec, "origin_node", json_string(i->node));
	}
	json_object_set_new(rec, "served_generation",
			    json_integer((json_int_t)m->cl->info.generation));
	kf_mgr_report_failure(m, rec, 0, why);
}

/*
 * Whether candidate (peeked or opened) may replace what is served: 1 yes,
 * 0 it is what is served, -EBADMSG no (why set).
 */
static int newer(const struct kf_mgr_cluster *cl, const uint8_t *blob,
		 size_t len, const struct kf_cluster_info *c, char *why)
{
	const struct kf_cluster_info *s = &cl->info;

	if (!cl->blob)
		return 1;
	if (memcmp(c->cluster_id, s->cluster_id, KF_CLUSTER_ID_BYTES) != 0) {
		kf_err_set(why,
			   "the keyring in etcd belongs to another cluster "
			   "(another cluster id); not adopted");
		return -EBADMSG;
	}
	if (c->generation > s->generation)
		return 1;
	if (c->generation == s->generation && len == cl->blob_len &&
	    memcmp(blob, cl->blob, len) == 0)
		return 0;
	if (c->generation == s->generation)
		kf_err_set(why,
			   "the keyring in etcd is generation %" PRIu64
			   ", as served here, but not the same; not adopted",
			   c->generation);
	else
		kf_err_set(why,
			   "the keyring in etcd is generation %" PRIu64
			   ", older than generation %" PRIu64
			   " served here (a rollback?); not adopted",
			   c->generation, s->generation);
	return -EBADMSG;
}

int kf_mgr_cluster_adopt(struct kf_manager *m, const uint8_t *blob, size_t len,
			 int64_t rev)
{
	struct kf_mgr_cluster *cl = m->cl;
	struct kf_cluster_info info;
	struct kf_keyring *kr = NULL;
	char why[KF_ERR_MAX], d[KF_ERR_MAX];
	uint32_t before = cl->info.version;
	json_t *rec;
	int r;

	/* Refused once (audited, alerted): not again every second. */
	if (rev > 0 && rev == cl->refused)
		return -EBADMSG;
	/*
	 * An event older than what is served (the watch delivering, in
	 * order, a change this node already passed through a CAS reply or
	 * the heartbeat's read): nothing to do.  A rollback in etcd is a
	 * new write, so it has a higher revision and is judged below.
	 */
	if (rev > 0 && rev < cl->revision)
		return 0;
	r = cluster_unseal(m, blob, len, &info, &kr, why);
	if (r == 0)
		r = newer(cl, blob, len, &info, why);
	if (r < 0) {
		refuse(m, r == -EBADMSG && kr ? &info : NULL, why);
		kf_keyring_unref(kr);
		cl->refused = rev;
		pthread_mutex_lock(&cl->lock);
		snprintf(cl->refused_why, sizeof(cl->refused_why), "%s", why);
		pthread_mutex_unlock(&cl->lock);
		return r;
	}
	if (r == 0) {
		cl->revision = rev;
		kf_keyring_unref(kr);
		return 0;
	}
	rec = kf_event_record(KF_EVENT_KEY_SYNC, NULL);
	json_object_set_new(rec, "key_version", json_integer(info.version));
	json_object_set_new(rec, "previous_version", json_integer(before));
	json_object_set_new(rec, "generation",
			    json_integer((json_int_t)info.generation));
	json_object_set_new(rec, "origin_node", json_string(info.node));
	json_object_set_new(rec, "change",
			    json_string(kf_cluster_change_name(info.change)));
	json_object_set_new(rec, "versions", kf_mgr_versions_json(kr));
	json_object_set_new(rec, "success", json_true());
	r = kf_mgr_record_durable(m, rec, NULL, why);
	json_decref(rec);
	if (r < 0)
		/* Served all the same: every node must serve the cluster's
		 * keys; the audit log's failure is alerted. */
		kf_log(LOG_ALERT, "audit log: %s", why);
	r = save_copy(m, blob, len, why);
	if (r < 0) {
		json_t *f = kf_event_record(KF_EVENT_STATE_SYNC, NULL);

		json_object_set_new(f, "key_version",
				    json_integer(info.version));
		kf_mgr_report_failure(m, f, 0, why);
	}
	r = serve(m, blob, len, &info, rev, kr);
	kf_keyring_unref(kr);
	if (r < 0)
		return r;
	describe(&info, d, sizeof(d));
	kf_log(LOG_NOTICE, "adopted the cluster keyring: %s", d);
	return 1;
}

/* --- start-up --------------------------------------------------------------
 */

/* The local copy, if any: 0, -ENOENT, or -errno with a refusal in err. */
static int load_copy(struct kf_manager *m, uint8_t **ret_blob, size_t *ret_len,
		     struct kf_cluster_info *ret_info,
		     struct kf_keyring **ret_kr, struct kf_audit_anchor *anchor,
		     char err[KF_ERR_MAX])
{
	const uint8_t *blob;
	uint8_t *plain = NULL;
	size_t len = 0, blen = 0;
	int r;

	r = m->store->ops->load(m->store, &plain, &len, err);
	if (r < 0)
		return r;
	r = kf_state_decode_cluster(plain, len, anchor, &blob, &blen, err);
	if (r == 0)
		r = cluster_unseal(m, blob, blen, ret_info, ret_kr, err);
	if (r == 0) {
		*ret_blob = malloc(blen);
		if (*ret_blob) {
			memcpy(*ret_blob, blob, blen);
			*ret_len = blen;
		} else {
			*ret_kr = kf_keyring_unref(*ret_kr);
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
		}
	}
	sodium_free(plain);
	if (r < 0)
		kf_err_prefix(err, "local copy: ");
	return r;
}

/* The key_load record of a start in cluster mode. */
static int record_load(struct kf_manager *m, bool degraded, const char *why,
		       char err[KF_ERR_MAX])
{
	json_t *f = json_object();
	int r;

	json_object_set_new(f, "store", json_string("etcd"));
	json_object_set_new(f, "generation",
			    json_integer((json_int_t)m->cl->info.generation));
	json_object_set_new(f, "origin_node", json_string(m->cl->info.node));
	if (degraded)
		json_object_set_new(f, "degraded", json_string(why));
	r = kf_mgr_record_load(m, f, err);
	json_decref(f);
	return r;
}

/*
 * No usable keyring in etcd (why): serve the local copy, degraded, or
 * refuse to start when there is none.
 */
static int start_degraded(struct kf_manager *m, bool have_copy, const char *why,
			  char err[KF_ERR_MAX])
{
	if (!have_copy) {
		kf_err_set(err,
			   "KeyValidationError: Failed to load keys: %s; and "
			   "%s holds no local copy of the cluster keyring, so "
			   "this node cannot start until etcd serves one",
			   why, m->cfg->state_dir);
		return -EHOSTUNREACH;
	}
	kf_mgr_cluster_health(m, false, why);
	kf_log(LOG_ALERT,
	       "serving the local copy of the cluster keyring (version "
	       "%" PRIu32 ", generation %" PRIu64 "), degraded: %s",
	       m->cl->info.version, m->cl->info.generation, why);
	return record_load(m, true, why, err);
}

static int load_remote(struct kf_manager *m, bool have_copy,
		       char err[KF_ERR_MAX])
{
	struct kf_etcd_kv kv = {0};
	char why[KF_ERR_MAX];
	int r;

	r = kf_etcd_get(m->cl->op, KF_CLUSTER_KEYRING, &kv, why);
	if (r == -ENOENT) {
		snprintf(err, KF_ERR_MAX,
			 "no cluster keyring under %s in etcd (create it with "
			 "`keyfs cluster init`)",
			 m->cfg->etcd.prefix);
		snprintf(why, sizeof(why), "%s", err);
		return start_degraded(m, have_copy, why, err);
	}
	if (r < 0) {
		kf_err_prefix(why, "cluster unavailable: ");
		return start_degraded(m, have_copy, why, err);
	}
	if (!have_copy) {
		struct kf_cluster_info info;
		struct kf_keyring *kr = NULL;

		/* A new node: what etcd holds must open, or no start. */
		r = cluster_unseal(m, kv.value, kv.len, &info, &kr, why);
		if (r < 0) {
			kf_err_set(err,
				   "KeyValidationError: Failed to load keys: "
				   "%s",
				   why);
			kf_etcd_kv_clear(&kv);
			return r;
		}
		kf_keyring_unref(kr);
	}
	r = kf_mgr_cluster_adopt(m, kv.value, kv.len, kv.mod_revision);
	kf_etcd_kv_clear(&kv);
	m->cl->rotated_ms = 0; /* a start is no rotation to coalesce with */
	if (r < 0) {
		/* Refused and alerted; serve the copy, refuse changes. */
		snprintf(why, sizeof(why),
			 "the keyring in etcd was refused (see the audit log)");
		return start_degraded(m, true, why, err);
	}
	kf_mgr_cluster_health(m, true, NULL);
	kf_mgr_cluster_fetch_archives(m);
	return record_load(m, false, NULL, err);
}

int kf_mgr_cluster_load(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_audit_anchor anchor;
	struct kf_cluster_info info;
	struct kf_keyring *kr = NULL;
	uint8_t *blob = NULL;
	size_t len = 0;
	char why[KF_ERR_MAX];
	int r;

	r = kf_mgr_cluster_setup(m, err);
	if (r < 0)
		return r;
	r = load_copy(m, &blob, &len, &info, &kr, &anchor, why);
	if (r < 0 && r != -ENOENT) {
		kf_err_set(err, "KeyValidationError: Failed to load keys: %s",
			   why);
		return r;
	}
	if (r == 0) {
		kf_mgr_take_anchor(m, &anchor);
		r = serve(m, blob, len, &info, 0, kr);
		m->cl->rotated_ms = 0;
		kf_keyring_unref(kr);
		free(blob);
		if (r < 0) {
			kf_err_set(err, "out of memory");
			return r;
		}
	}
	return load_remote(m, r == 0, err);
}

/* --- changes ---------------------------------------------------------------
 */

int kf_mgr_cluster_usable(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	bool ok;

	pthread_mutex_lock(&cl->lock);
	ok = cl->ok;
	if (!ok)
		kf_err_set(err,
			   "cluster unavailable (%s); keyring unchanged at "
			   "version %" PRIu32,
			   cl->reason, cl->shown.version);
	pthread_mutex_unlock(&cl->lock);
	return ok ? 0 : -EHOSTUNREACH;
}

/* What a commit record's event makes of the keyring. */
static enum kf_cluster_change change_of(json_t *record)
{
	const char *ev = json_string_value(json_object_get(record, "event"));

	if (!ev)
		return KF_CHANGE_INIT;
	if (!strcmp(ev, kf_event_name(KF_EVENT_KEY_ROTATION)))
		return KF_CHANGE_ROTATE;
	if (!strcmp(ev, kf_event_name(KF_EVENT_KEY_RETIRE)))
		return KF_CHANGE_RETIRE;
	if (!strcmp(ev, kf_event_name(KF_EVENT_KEY_STAGE)))
		return KF_CHANGE_STAGE;
	if (!strcmp(ev, kf_event_name(KF_EVENT_KEY_PROMOTE)))
		return KF_CHANGE_PROMOTE;
	if (!strcmp(ev, kf_event_name(KF_EVENT_KEY_ABORT)))
		return KF_CHANGE_ABORT;
	if (!strcmp(ev, kf_event_name(KF_EVENT_KEY_RESTORE)))
		return KF_CHANGE_RESTORE;
	return KF_CHANGE_INIT;
}

/* Another node changed the keyring first: adopt, and say what it was. */
static int lost_race(struct kf_manager *m, struct kf_etcd_kv *cur,
		     char err[KF_ERR_MAX])
{
	char d[KF_ERR_MAX];
	int r;

	if (!cur->value) {
		kf_err_set(err, "the cluster keyring is gone from etcd "
				"(deleted?); nothing was changed");
		return -ESTALE;
	}
	r = kf_mgr_cluster_adopt(m, cur->value, cur->len, cur->mod_revision);
	if (r < 0) {
		kf_err_set(err, "the keyring in etcd changed and was refused "
				"(see the audit log); nothing was changed");
		return -ESTALE;
	}
	describe(&m->cl->info, d, sizeof(d));
	kf_err_set(err,
		   "the cluster keyring changed on another node first (now "
		   "%s); nothing was changed by this request",
		   d);
	return -ESTALE;
}

int kf_mgr_cluster_commit(struct kf_manager *m, struct kf_keyring *next,
			  json_t *record, uint64_t *cancel_seq,
			  char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	struct kf_cluster_info info = cl->info;
	struct kf_audit_anchor anchor;
	struct kf_etcd_kv cur = {0};
	struct kf_etcd_op op = {.name = KF_CLUSTER_KEYRING};
	uint8_t *blob = NULL;
	size_t len = 0;
	int64_t rev = 0;
	int r;

	*cancel_seq = 0;
	r = kf_mgr_cluster_usable(m, err);
	if (r < 0)
		return r;
	info.generation++;
	info.created = kf_time_now();
	info.change = change_of(record);
	snprintf(info.node, sizeof(info.node), "%s", m->cfg->etcd.node);
	r = kf_cluster_seal(kf_mgr_seal_keys(m)->cluster, m->cfg->etcd.prefix,
			    &info, next, &blob, &len, err);
	if (r < 0)
		return r;
	info.version = kf_keyring_current_version(next);
	json_object_set_new(record, "generation",
			    json_integer((json_int_t)info.generation));
	json_object_set_new(record, "node", json_string(info.node));
	json_object_set_new(record, "success", json_true());
	r = kf_audit_append_anchored(m->audit, record, &anchor, err);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		goto out;
	}
	*cancel_seq = anchor.seq;
	r = kf_audit_sync(m->audit, err);
	if (r < 0) {
		kf_err_prefix(err, "audit log: ");
		goto out;
	}
	op.value = blob;
	op.len = len;
	r = kf_etcd_cas(cl->op, KF_CLUSTER_KEYRING, cl->revision, &op, 1, &rev,
			&cur, err);
	if (r == KF_ETCD_CONFLICT && cl->initializing) {
		struct kf_cluster_info there = {0};
		char d[KF_ERR_MAX] = "a keyring that is not keyfs's";

		if (cur.value &&
		    kf_cluster_peek(cur.value, cur.len, &there, NULL) == 0)
			describe(&there, d, sizeof(d));
		kf_err_set(err,
			   "%s already holds a cluster keyring (%s); nothing "
			   "was changed",
			   m->cfg->etcd.prefix, d);
		r = -EEXIST;
		goto out;
	}
	if (r == KF_ETCD_CONFLICT) {
		r = lost_race(m, &cur, err);
		goto out;
	}
	if (r < 0) {
		char why[KF_ERR_MAX];

		snprintf(why, sizeof(why), "%s", err);
		kf_mgr_cluster_health(m, false, why);
		kf_err_set(err,
			   "cluster unavailable (%s); keyring unchanged at "
			   "version %" PRIu32,
			   why, cl->info.version);
		r = -EHOSTUNREACH;
		goto out;
	}
	/* Committed: in effect on every node from here on. */
	*cancel_seq = 0;
	r = serve(m, blob, len, &info, rev, next);
	if (r == 0)
		r = save_copy(m, blob, len, err);
	if (r < 0) {
		json_t *f = kf_event_record(KF_EVENT_STATE_SYNC, NULL);
		char why[KF_ERR_MAX];

		snprintf(why, sizeof(why), "%s", err);
		json_object_set_new(f, "key_version",
				    json_integer(info.version));
		json_object_set_new(f, "record_seq",
				    json_integer((json_int_t)anchor.seq));
		kf_mgr_report_failure(m, f, 0, why);
		kf_err_set(err,
			   "version %" PRIu32 " is in effect in the cluster, "
			   "but this node's local copy could not be saved "
			   "(%s); check the disk",
			   info.version, why);
		r = KF_FILE_UNSYNCED;
	}
	kf_mgr_cluster_publish(m);
out:
	/* Refused: the operation removes its archives; none is published. */
	if (r < 0)
		cl->n_pending = 0;
	kf_etcd_kv_clear(&cur);
	free(blob);
	return r;
}
