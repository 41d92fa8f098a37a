// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/status.c through core/manager.h, without a mount:
 * kf_manager_info, the object the tree's status file shows -- its fields,
 * and no key material in it.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "helpers.h"
#include "manager_fixture.h"
#include "util.h"

TestSuite(status, .init = fx_init, .fini = fx_fini);

static void assert_type(json_t *o, const char *name, json_type t)
{
	json_t *v = json_object_get(o, name);

	cr_assert_not_null(v, "status has no field %s", name);
	cr_assert_eq(json_typeof(v), t, "status field %s has type %d", name,
		     (int)json_typeof(v));
}

static void assert_bool(json_t *o, const char *name)
{
	cr_assert(json_is_boolean(json_object_get(o, name)),
		  "status field %s missing or not a boolean", name);
}

static void assert_fpr(const char *fpr, const uint8_t key[KF_KEY_BYTES],
		       const char *what)
{
	char want[KF_KEY_FPR_LEN + 1];

	kf_key_fingerprint(key, want);
	cr_assert(fpr && strcmp(fpr, want) == 0, "%s: wrong fingerprint", what);
}

/* No key of s, nor any purpose key derived from one, in o's text. */
static void assert_no_keys(json_t *o, const struct snap *s,
			   const struct kf_config *cfg)
{
	char *text = fx_own(json_dumps(o, JSON_COMPACT));

	cr_assert_not_null(text);
	for (size_t i = 0; i < s->n; i++) {
		cr_assert(!holds_key(text, s->key[i]),
			  "status holds the key of version %" PRIu32,
			  s->version[i]);
		for (size_t p = 0; p < cfg->n_purposes; p++) {
			uint8_t d[KF_KEY_BYTES];

			cr_assert(kf_key_derive(s->key[i],
						cfg->purposes[p].name, d,
						NULL) == 0);
			cr_assert(!holds_key(text, d),
				  "status holds derived key %s of version "
				  "%" PRIu32,
				  cfg->purposes[p].name, s->version[i]);
			sodium_memzero(d, sizeof(d));
		}
	}
}

static void decref(void *o)
{
	json_decref(o);
}

/* kf_manager_info(m), released at the end of the test. */
static json_t *info(struct kf_manager *m)
{
	json_t *o = kf_manager_info(m);

	cr_assert(json_is_object(o));
	return fx_defer(decref, o);
}

Test(status, fields_and_no_key_material)
{
	struct fx *f = fx_new("mgr-status", "development", NULL,
			      "rotate_interval = 12h\nretain_versions = 3\n"
			      "purposes = phi pii audit backup billing\n");
	struct kf_manager *m = open_ok(f);
	struct fx_key *k = fx_key_new();
	struct snap *s;
	json_t *o, *vs;
	int64_t created, next;

	o = info(m);
	cr_assert_eq(json_integer_value(json_object_get(o, "version")), 1);
	cr_assert(json_is_true(json_object_get(o, "has_current_key")));
	cr_assert(json_is_false(json_object_get(o, "has_previous_key")));
	cr_assert(json_is_null(json_object_get(o, "previous_version")),
		  "previous_version without a previous key");

	rotate_ok(m, NULL);
	rotate_ok(m, NULL);
	s = snap_take(m);
	o = info(m);
	assert_type(o, "version", JSON_INTEGER);
	cr_assert_eq(json_integer_value(json_object_get(o, "version")), 3);
	assert_bool(o, "has_current_key");
	cr_assert(json_is_true(json_object_get(o, "has_current_key")));
	assert_bool(o, "has_previous_key");
	cr_assert(json_is_true(json_object_get(o, "has_previous_key")));
	assert_type(o, "previous_version", JSON_INTEGER);
	cr_assert_eq(json_integer_value(json_object_get(o, "previous_version")),
		     2);
	assert_type(o, "created", JSON_STRING);
	cr_assert(kf_time_parse_rfc3339(
		      json_string_value(json_object_get(o, "created")),
		      &created) == 0,
		  "created is not RFC 3339");
	cr_assert_eq(created, s->created[0]);
	assert_type(o, "fingerprint", JSON_STRING);
	assert_fpr(json_string_value(json_object_get(o, "fingerprint")),
		   s->key[0], "fingerprint");
	assert_type(o, "previous_fingerprint", JSON_STRING);
	assert_fpr(
	    json_string_value(json_object_get(o, "previous_fingerprint")),
	    s->key[1], "previous_fingerprint");

	assert_type(o, "versions", JSON_ARRAY);
	vs = json_object_get(o, "versions");
	cr_assert_eq(json_array_size(vs), s->n);
	for (size_t i = 0; i < s->n; i++) {
		json_t *e = json_array_get(vs, i);

		cr_assert(json_is_object(e));
		cr_assert_eq(json_integer_value(json_object_get(e, "version")),
			     s->version[i]);
		cr_assert(json_is_string(json_object_get(e, "created")));
		assert_fpr(json_string_value(json_object_get(e, "fingerprint")),
			   s->key[i], "versions[].fingerprint");
	}

	assert_type(o, "purposes", JSON_ARRAY);
	cr_assert_eq(json_array_size(json_object_get(o, "purposes")), 5);
	for (size_t i = 0; i < 5; i++)
		cr_assert_str_eq(json_string_value(json_array_get(
				     json_object_get(o, "purposes"), i)),
				 f->cfg->purposes[i].name);
	assert_type(o, "mode", JSON_STRING);
	cr_assert_str_eq(json_string_value(json_object_get(o, "mode")),
			 "development");
	assert_type(o, "read_mode", JSON_STRING);
	cr_assert_str_eq(json_string_value(json_object_get(o, "read_mode")),
			 "audited");
	assert_type(o, "rotate_interval", JSON_STRING);
	cr_assert_str_eq(
	    json_string_value(json_object_get(o, "rotate_interval")), "12h");
	assert_type(o, "next_rotation", JSON_STRING);
	cr_assert(kf_time_parse_rfc3339(
		      json_string_value(json_object_get(o, "next_rotation")),
		      &next) == 0);
	cr_assert_eq(next, s->created[0] + 12 * 3600,
		     "next rotation is not created + 12h");
	assert_no_keys(o, s, f->cfg);

	/* rotate_interval 0: no next rotation */
	f = fx_new("mgr-status0", "production", NULL, NULL);
	write_master(f);
	setenv("ENCRYPTION_KEY", k->text, 1);
	m = open_ok(f);
	s = snap_take(m);
	o = info(m);
	cr_assert_str_eq(json_string_value(json_object_get(o, "mode")),
			 "production");
	cr_assert_str_eq(
	    json_string_value(json_object_get(o, "rotate_interval")), "0");
	cr_assert(json_is_null(json_object_get(o, "next_rotation")),
		  "next_rotation set with rotation off");
	assert_no_keys(o, s, f->cfg);
}
