// SPDX-License-Identifier: MIT
/*
 * readers: the manager's usage table (usage.h) -- every audited open of a
 * key file noted by version, purpose and uid; status's "usage" object; and
 * the check that holds a retire back while a version is still read
 * (README: Usage-aware retire).  Never a key byte: versions, purposes,
 * uids and times.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "manager_private.h"

/* Why usage is not known, or NULL when it is. */
static const char *unknown_why(const struct kf_manager *m)
{
	if (m->cfg->usage_window <= 0)
		return "usage_window = 0: reads are not counted";
	if (m->cfg->read_mode == KF_READ_CACHED)
		return "read_mode = cached: the daemon does not see opens";
	return NULL;
}

void kf_manager_note_read(struct kf_manager *m, const struct kf_caller *who,
			  const struct kf_keyring *kr, uint32_t version,
			  const char *purpose)
{
	const struct kf_keyring_entry *e;
	int64_t now = time(NULL);

	if (unknown_why(m))
		return;
	if (version) {
		kf_usage_note(m->usage, version, purpose, false, who->uid, now);
		return;
	}
	/* A key set holds every version of the set: a read of each. */
	for (size_t i = 0; (e = kf_keyring_decryption_at(kr, i)); i++)
		kf_usage_note(m->usage, e->version, purpose, true, who->uid,
			      now);
}

json_t *kf_mgr_usage_info(struct kf_manager *m, const struct kf_keyring *kr)
{
	const char *why = unknown_why(m);
	int64_t since = time(NULL) - m->cfg->usage_window;
	json_t *o = json_object(), *vs;

	json_object_set_new(o, "window",
			    kf_mgr_interval_json(m->cfg->usage_window));
	json_object_set_new(o, "known", json_boolean(!why));
	if (why) {
		json_object_set_new(o, "why_unknown", json_string(why));
		return o;
	}
	/* Reads before the daemon started are not in the table. */
	json_object_set_new(o, "since", kf_mgr_time_json(m->started));
	vs = json_array();
	for (size_t i = 0; i < kf_keyring_count(kr); i++) {
		uint32_t v = kf_keyring_at(kr, i)->version;
		json_t *r = kf_usage_json(m->usage, v, since);

		if (!r)
			continue;
		json_object_set_new(r, "version", json_integer(v));
		json_array_append_new(vs, r);
	}
	json_object_set_new(o, "versions", vs);
	return o;
}

int kf_mgr_usage_check(struct kf_manager *m, uint32_t version,
		       json_t **ret_readers, char err[KF_ERR_MAX])
{
	int64_t since = time(NULL) - m->cfg->usage_window;
	char when[KF_RFC3339_LEN + 1], how[2 * KF_PURPOSE_MAX + 32];
	const char *why = unknown_why(m);
	struct kf_usage_row last;

	*ret_readers = NULL;
	if (m->cfg->usage_window <= 0)
		return 0;
	if (why) {
		kf_err_set(err,
			   "version %" PRIu32 " may still be read: usage is "
			   "unknown (%s); re-encrypt what it protects, then "
			   "write \"%" PRIu32 " force\"",
			   version, why, version);
		return -EBUSY;
	}
	*ret_readers = kf_usage_json(m->usage, version, since);
	if (!kf_usage_last(m->usage, version, since, &last))
		return 0;
	kf_time_rfc3339(last.last, when);
	if (!last.what[0])
		snprintf(how, sizeof(how), "its key");
	else if (last.via_set)
		snprintf(how, sizeof(how), "keys/%s", last.what);
	else
		snprintf(how, sizeof(how), "its %s key", last.what);
	kf_err_set(err,
		   "version %" PRIu32 " is still read: last by uid %u at %s "
		   "(%s), within usage_window; re-encrypt with the current "
		   "key (keys/<purpose>, MultiFernet.rotate), then retire "
		   "once no one reads it, or write \"%" PRIu32 " force\"",
		   version, (unsigned)last.uid, when, how, version);
	return -EBUSY;
}

void kf_mgr_usage_forget(struct kf_manager *m, uint32_t version)
{
	kf_usage_forget(m->usage, version);
}
