// SPDX-License-Identifier: MIT
/*
 * status: kf_manager_info, the seed's get_key_info -- the object the
 * `status` file and `keyfs ctl status` show.  Fingerprints and numbers
 * only: never a key byte.
 */
#include <inttypes.h>
#include <stdio.h>

#include "key.h"
#include "manager_private.h"

json_t *kf_mgr_interval_json(int64_t s)
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

json_t *kf_mgr_time_json(int64_t t)
{
	char buf[KF_RFC3339_LEN + 1];

	kf_time_rfc3339(t, buf);
	return json_string(buf);
}

static json_t *fingerprint_json(const struct kf_keyring_entry *e)
{
	char fpr[KF_KEY_FPR_LEN + 1];

	if (!e)
		return json_null();
	kf_key_fingerprint(e->key, fpr);
	return json_string(fpr);
}

/* The keyring's part: current, previous, every version, retired ones. */
static void keyring_info(json_t *o, const struct kf_keyring *kr)
{
	const struct kf_keyring_entry *cur = kf_keyring_at(kr, 0);
	const struct kf_keyring_entry *prev = kf_keyring_at(kr, 1);
	json_t *vs = json_array(), *rs = json_array();

	json_object_set_new(o, "version", json_integer(cur->version));
	json_object_set_new(o, "has_current_key", json_true());
	json_object_set_new(o, "has_previous_key", json_boolean(prev != NULL));
	json_object_set_new(o, "previous_version",
			    prev ? json_integer(prev->version) : json_null());
	json_object_set_new(o, "created", kf_mgr_time_json(cur->created));
	json_object_set_new(o, "fingerprint", fingerprint_json(cur));
	json_object_set_new(o, "previous_fingerprint", fingerprint_json(prev));
	for (size_t i = 0; i < kf_keyring_count(kr); i++) {
		const struct kf_keyring_entry *e = kf_keyring_at(kr, i);
		json_t *v = json_object();

		json_object_set_new(v, "version", json_integer(e->version));
		json_object_set_new(v, "created", kf_mgr_time_json(e->created));
		json_object_set_new(v, "fingerprint", fingerprint_json(e));
		json_array_append_new(vs, v);
	}
	json_object_set_new(o, "versions", vs);
	json_object_set_new(o, "highest_issued",
			    json_integer(kf_keyring_highest(kr)));
	for (size_t i = 0; i < kf_keyring_retired_count(kr); i++)
		json_array_append_new(
		    rs, json_integer(kf_keyring_retired_at(kr, i)));
	json_object_set_new(o, "retired_versions", rs);
}

/*
 * The staged version (README: Staged rotation): number, fingerprint,
 * created, and when the scheduler promotes it (null: by hand).  All null
 * when nothing is staged.
 */
static void staged_info(json_t *o, const struct kf_config *cfg,
			const struct kf_keyring *kr)
{
	const struct kf_keyring_entry *s = kf_keyring_staged(kr);
	bool scheduled =
	    s && cfg->rotate_mode == KF_ROTATE_STAGE && cfg->stage_delay > 0;

	json_object_set_new(o, "staged_version",
			    s ? json_integer(s->version) : json_null());
	json_object_set_new(o, "staged_fingerprint", fingerprint_json(s));
	json_object_set_new(o, "staged_created",
			    s ? kf_mgr_time_json(s->created) : json_null());
	json_object_set_new(
	    o, "next_promotion",
	    scheduled ? kf_mgr_time_json(s->created + cfg->stage_delay)
		      : json_null());
}

/*
 * The configuration's part; created is the current key's, staged whether a
 * version is staged (then no rotation is scheduled: next_rotation null).
 */
static void config_info(json_t *o, const struct kf_config *cfg, int64_t created,
			bool staged)
{
	json_t *ps = json_array();

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
			    json_string(kf_config_read_modes[cfg->read_mode]));
	json_object_set_new(o, "opens_audited",
			    json_boolean(cfg->read_mode != KF_READ_CACHED));
	json_object_set_new(o, "rotate_interval",
			    kf_mgr_interval_json(cfg->rotate_interval));
	json_object_set_new(
	    o, "next_rotation",
	    cfg->rotate_interval > 0 && !staged
		? kf_mgr_time_json(created + cfg->rotate_interval)
		: json_null());
	json_object_set_new(
	    o, "rotate_mode",
	    json_string(kf_config_rotate_modes[cfg->rotate_mode]));
	json_object_set_new(o, "stage_delay",
			    kf_mgr_interval_json(cfg->stage_delay));
	json_object_set_new(o, "backup_keep", json_integer(cfg->backup_keep));
}

/*
 * Break-glass recovery: whether new archives carry the recovery seal, and
 * the public key's fingerprint (null without recovery_public_key).
 */
static json_t *recovery_info(const struct kf_manager *m)
{
	char fpr[KF_RECOVERY_FPR_LEN + 1];
	json_t *o = json_object();

	json_object_set_new(o, "archives_sealed",
			    json_boolean(m->has_recovery));
	if (m->has_recovery)
		kf_recovery_fingerprint(m->recovery_pk, fpr);
	json_object_set_new(o, "public_key_fingerprint",
			    m->has_recovery ? json_string(fpr) : json_null());
	return o;
}

json_t *kf_manager_info(struct kf_manager *m)
{
	struct kf_keyring *kr = kf_mgr_current(m);
	json_t *o = json_object();

	keyring_info(o, kr);
	staged_info(o, m->cfg, kr);
	config_info(o, m->cfg, kf_keyring_at(kr, 0)->created,
		    kf_keyring_staged(kr) != NULL);
	if (m->cl) {
		json_object_set_new(o, "store", kf_mgr_cluster_info(m));
	} else {
		json_t *st = json_object();

		json_object_set_new(st, "type", json_string("file"));
		json_object_set_new(o, "store", st);
	}
	json_object_set_new(o, "audit", kf_mgr_audit_info(m));
	json_object_set_new(o, "usage", kf_mgr_usage_info(m, kr));
	json_object_set_new(o, "recovery", recovery_info(m));
	kf_keyring_unref(kr);
	return o;
}
