// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/rotation.c through core/manager.h, without a mount:
 * rotate (what it keeps, what it writes, the numbers it issues, many at
 * once) and retire.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "helpers.h"
#include "manager_fixture.h"

TestSuite(rotation, .init = fx_init, .fini = fx_fini);

Test(rotation, moves_current_to_previous_and_adds_one)
{
	struct fx *f = fx_new("mgr-rotate", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	struct snap *a, *b;
	uint32_t v = 0;

	a = snap_take(m);
	rotate_ok(m, &v);
	b = snap_take(m);
	cr_assert_eq(v, 2, "rotate reported version %" PRIu32, v);
	cr_assert_eq(b->version[0], 2);
	cr_assert_eq(b->n, 2);
	cr_assert_eq(b->version[1], 1);
	cr_assert(sodium_memcmp(b->key[1], a->key[0], KF_KEY_BYTES) == 0,
		  "previous is not the old current key");
	cr_assert(sodium_memcmp(b->key[0], a->key[0], KF_KEY_BYTES) != 0,
		  "the new key equals the old one");
	cr_assert_eq(b->highest, 2);
}

Test(rotation, retain_versions_honoured)
{
	for (unsigned retain = 1; retain <= 3; retain++) {
		char extra[64];
		struct kf_manager *m;
		struct snap *s, *again;
		struct fx *f;

		snprintf(extra, sizeof(extra), "retain_versions = %u\n",
			 retain);
		f = fx_new("mgr-retain", "development", NULL, extra);
		m = open_ok(f);
		for (int i = 0; i < 3; i++)
			rotate_ok(m, NULL);
		s = snap_take(m);
		cr_assert_eq(s->n, retain, "retain %u: %zu versions held",
			     retain, s->n);
		for (size_t i = 0; i < s->n; i++)
			cr_assert_eq(s->version[i], 4 - i,
				     "retain %u: entry %zu is version %" PRIu32,
				     retain, i, s->version[i]);
		cr_assert_eq(s->highest, 4);
		m = fx_reopen(f);
		again = snap_take(m);
		cr_assert(snap_same(s, again), "retain %u: reload differs",
			  retain);
		fx_close(f);
	}
}

Test(rotation, each_rotation_writes_a_backup_of_the_new_keyring)
{
	struct fx *f = fx_new("mgr-rotbackup", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	struct kf_backup_info info;
	char err[KF_ERR_MAX] = "";
	size_t before;

	for (uint32_t i = 0; i < 4; i++) {
		uint32_t v = 0;
		const char *name, *path;
		json_t *recs, *rec;
		struct stat st;

		before = count_files(f->backups, "key_backup_", ".json");
		rotate_ok(m, &v);
		cr_assert_eq(
		    count_files(f->backups, "key_backup_", ".json"), before + 1,
		    "rotation to %" PRIu32 " did not add one archive", v);
		recs = kt_audit_read(f->audit, 0);
		rec = last_record(recs, "key_rotation");
		assert_common(rec, &fx_who, "key_rotation");
		cr_assert(bool_field(rec, "backup_created", "key_rotation"));
		name = str_field(rec, "backup", "key_rotation");
		path = fx_path(f->backups, name);
		cr_assert(stat(path, &st) == 0,
			  "archive %s named in the audit "
			  "record does not exist",
			  name);
		cr_assert_eq(st.st_mode & 07777, 0600);
		cr_assert(kf_manager_verify_backup(f->cfg, path, &info, err) ==
			      0,
			  "%s: %s", name, err);
		cr_assert_eq(info.key_version, v,
			     "the rotation's archive holds version %" PRIu32,
			     info.key_version);
		/* before the trim: every old version is still in it */
		cr_assert_eq(info.n_versions, v == 2 ? 2 : 3);
		json_decref(recs);
	}
}

Test(rotation, state_on_disk_equals_memory)
{
	struct fx *f =
	    fx_new("mgr-disk", "development", NULL, "retain_versions = 3\n");
	struct kf_manager *m = open_ok(f);
	struct snap *s, *again;

	for (int i = 0; i < 5; i++) {
		rotate_ok(m, NULL);
		s = snap_take(m);
		m = fx_reopen(f);
		again = snap_take(m);
		cr_assert(snap_same(s, again),
			  "after rotation %d the reloaded keyring differs",
			  i + 1);
		snap_free(s);
		snap_free(again);
	}
	cr_assert_eq(current_version(m), 6);
}

Test(rotation, version_numbers_never_reused_after_restore)
{
	struct fx *f = fx_new("mgr-noreuse", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	char name[KF_BACKUP_NAME_MAX + 6], err[KF_ERR_MAX] = "";
	struct snap *at2, *now;
	uint32_t v = 0;
	int r;

	rotate_ok(m, &v);
	cr_assert_eq(v, 2);
	at2 = snap_take(m);
	backup_with_version(m, 2, name);
	cr_assert(name[0], "no archive holds version 2");
	rotate_ok(m, &v);
	rotate_ok(m, &v);
	cr_assert_eq(v, 4);

	r = kf_manager_restore(m, &fx_who, name, false, &v, NULL, err);
	cr_assert(r == 0, "restore %s: %d %s", name, r, err);
	cr_assert_eq(v, 2, "restore reported version %" PRIu32, v);
	now = snap_take(m);
	cr_assert_eq(now->version[0], 2);
	cr_assert(sodium_memcmp(now->key[0], at2->key[0], KF_KEY_BYTES) == 0,
		  "restored current key is not the key of version 2");
	cr_assert_eq(now->highest, 4, "highest issued forgotten: %" PRIu32,
		     now->highest);

	rotate_ok(m, &v);
	cr_assert_eq(v, 5, "rotation after restore issued %" PRIu32, v);
	/* and across a restart */
	cr_assert(kf_manager_restore(m, &fx_who, name, false, &v, NULL, err) ==
		      0,
		  "%s", err);
	m = fx_reopen(f);
	rotate_ok(m, &v);
	cr_assert_eq(v, 6, "rotation after restart issued %" PRIu32, v);
}

/* --- many at once ----------------------------------------------------------
 */

#define THREADS 8
#define PER_THREAD 5

struct rot_arg {
	struct kf_manager *m;
	uint32_t got[PER_THREAD];
	int rc[PER_THREAD];
	char err[KF_ERR_MAX];
};

static void *rotate_thread(void *p)
{
	struct rot_arg *a = p;

	for (int i = 0; i < PER_THREAD; i++)
		a->rc[i] =
		    kf_manager_rotate(a->m, &fx_who, &a->got[i], NULL, a->err);
	return NULL;
}

static atomic_int changes;

static void count_change(void *userdata)
{
	(void)userdata;
	atomic_fetch_add(&changes, 1);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

Test(rotation, concurrent_rotations_serialise, .timeout = 120)
{
	struct fx *f = fx_new("mgr-threads", "development", NULL,
			      "retain_versions = 64\n");
	struct kf_manager *m = open_ok(f);
	struct rot_arg args[THREADS];
	pthread_t th[THREADS];
	uint32_t all[THREADS * PER_THREAD];
	struct snap *s;
	json_t *recs;

	kf_manager_on_change(m, count_change, NULL);
	for (int t = 0; t < THREADS; t++) {
		memset(&args[t], 0, sizeof(args[t]));
		args[t].m = m;
		cr_assert(
		    pthread_create(&th[t], NULL, rotate_thread, &args[t]) == 0);
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < THREADS; t++)
		for (int i = 0; i < PER_THREAD; i++) {
			cr_assert(args[t].rc[i] == 0,
				  "thread %d rotation %d: %d %s", t, i,
				  args[t].rc[i], args[t].err);
			all[t * PER_THREAD + i] = args[t].got[i];
		}
	qsort(all, THREADS * PER_THREAD, sizeof(all[0]), cmp_u32);
	for (uint32_t i = 0; i < THREADS * PER_THREAD; i++)
		cr_assert_eq(all[i], i + 2,
			     "returned versions are not exactly 2..41 "
			     "(position %" PRIu32 " holds %" PRIu32 ")",
			     i, all[i]);
	cr_assert_eq(atomic_load(&changes), THREADS * PER_THREAD,
		     "change callback ran %d times", atomic_load(&changes));

	s = snap_take(m);
	cr_assert_eq(s->n, 1 + THREADS * PER_THREAD);
	for (size_t i = 0; i < s->n; i++)
		cr_assert_eq(s->version[i], s->n - i,
			     "held versions are not contiguous");
	for (size_t i = 0; i < s->n; i++)
		for (size_t j = i + 1; j < s->n; j++)
			cr_assert(sodium_memcmp(s->key[i], s->key[j],
						KF_KEY_BYTES) != 0,
				  "versions %" PRIu32 " and %" PRIu32
				  " share a key",
				  s->version[i], s->version[j]);
	recs = kt_audit_read(f->audit, 0);
	cr_assert_eq(kt_count_records(recs, "key_rotation", 1),
		     THREADS * PER_THREAD);
	cr_assert_eq(kt_count_records(recs, "key_rotation", 0), 0);
	json_decref(recs);
	fx_close(f);
	verify_audit_ok(f);

	/* the sealed state is the last of them */
	m = open_ok(f);
	cr_assert_eq(current_version(m), 1 + THREADS * PER_THREAD);
}

/* --- retire ----------------------------------------------------------------
 */

/*
 * Usage-aware retire in the manager: a version noted as read within
 * usage_window is refused (EBUSY, naming the reader, audited and alerted,
 * nothing changes), retired with force (the note says it was forced), and
 * status's usage object names its reader until then.  A key set's read
 * counts for every version it holds.
 */
Test(rotation, retire_waits_for_recent_readers_unless_forced)
{
	struct fx *f = fx_new("mgr-usage", "development", NULL,
			      "usage_window = 1h\nretain_versions = 3\n");
	struct kf_manager *m = open_ok(f);
	struct kf_caller reader = {1001, 2001, 4242};
	char err[KF_ERR_MAX] = "", note[KF_ERR_MAX] = "";
	struct kf_keyring *kr;
	struct snap *before, *s;
	json_t *info, *v, *recs, *rec;
	int r;

	rotate_ok(m, NULL);
	rotate_ok(m, NULL);
	kr = kf_manager_keyring(m);
	kf_manager_note_read(m, &reader, kr, 1, "phi");
	kf_manager_note_read(m, &fx_who, kr, 0, "pii"); /* keys/pii: 3, 2, 1 */
	kf_keyring_unref(kr);
	info = kf_manager_info(m);
	v = json_array_get(
	    json_object_get(json_object_get(info, "usage"), "versions"), 2);
	cr_assert_eq(json_integer_value(json_object_get(v, "version")), 1);
	cr_assert_eq(
	    json_integer_value(json_array_get(json_object_get(v, "uids"), 0)),
	    1001);
	cr_assert_eq(json_integer_value(
			 json_array_get(json_object_get(v, "set_uids"), 0)),
		     (json_int_t)fx_who.uid);
	json_decref(info);

	before = snap_take(m);
	r = kf_manager_retire(m, &fx_who, 1, false, note, err);
	cr_assert_eq(r, -EBUSY, "retire of a version read: %d %s", r, err);
	cr_assert(kt_contains(err, "still read") && kt_contains(err, "force"),
		  "unclear: %s", err);
	fx_expect_alert("key_retire: %s", err);
	s = snap_take(m);
	cr_assert(snap_same(before, s), "a refused retire changed the keyring");
	snap_free(before);
	snap_free(s);
	recs = kt_audit_read(f->audit, 0);
	rec = kt_find_record(recs, "key_retire", 0);
	cr_assert(rec && json_is_false(json_object_get(rec, "force")));
	cr_assert(json_is_object(json_object_get(rec, "readers")));
	json_decref(recs);

	/* Version 2 was read only through keys/pii: that counts too. */
	r = kf_manager_retire(m, &fx_who, 2, false, note, err);
	cr_assert_eq(r, -EBUSY, "retire of a version in a key set read: %s",
		     err);
	cr_assert(kt_contains(err, "keys/pii"), "unclear: %s", err);
	fx_expect_alert("key_retire: %s", err);

	r = kf_manager_retire(m, &fx_who, 1, true, note, err);
	cr_assert_eq(r, 0, "retire 1 force: %d %s", r, err);
	cr_assert(strncmp(note, "forced: ", 8) == 0, "note: %s", note);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) < 0, "version 1 still held");
	snap_free(s);
	recs = kt_audit_read(f->audit, 0);
	rec = kt_find_record(recs, "key_retire", 1);
	cr_assert(rec && json_is_true(json_object_get(rec, "force")));
	json_decref(recs);
}

Test(rotation, retire_refuses_current_and_unknown_and_backs_up_first)
{
	struct fx *f = fx_new("mgr-retire", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	struct kf_backup_info info;
	char err[KF_ERR_MAX] = "", note[KF_ERR_MAX] = "",
	     name[KF_BACKUP_NAME_MAX + 6];
	struct snap *before, *s;
	uint32_t v = 0;
	json_t *recs, *rec;
	size_t nb;
	int r;

	rotate_ok(m, NULL);
	before = snap_take(m);
	cr_assert_eq(before->n, 2);

	r = kf_manager_retire(m, &fx_who, 2, false, NULL, err);
	cr_assert_eq(r, -EBUSY, "retire of the current version: %d %s", r, err);
	cr_assert(kt_contains(err, "current"), "unclear: %s", err);
	fx_expect_alert("key_retire: %s", err);
	r = kf_manager_retire(m, &fx_who, 99, false, NULL, err);
	cr_assert_eq(r, -ENOENT, "retire of an unknown version: %d %s", r, err);
	fx_expect_alert("key_retire: %s", err);
	s = snap_take(m);
	cr_assert(snap_same(before, s), "a refused retire changed the keyring");
	recs = kt_audit_read(f->audit, 0);
	cr_assert_eq(kt_count_records(recs, "key_retire", 0), 2,
		     "refused retires not audited");
	json_decref(recs);

	nb = count_files(f->backups, NULL, ".json");
	r = kf_manager_retire(m, &fx_who, 1, false, NULL, err);
	cr_assert(r == 0, "retire of the previous version: %d %s", r, err);
	s = snap_take(m);
	cr_assert_eq(s->n, 1);
	cr_assert_eq(s->version[0], 2);
	cr_assert(snap_find(s, 1) < 0, "version 1 still held");
	cr_assert_eq(count_files(f->backups, NULL, ".json"), nb + 1,
		     "retire wrote no backup");

	recs = kt_audit_read(f->audit, 0);
	rec = last_success(recs, "key_retire", &fx_who);
	cr_assert_eq(int_field(rec, "key_version", "key_retire"), 1);
	cr_assert(bool_field(rec, "backup_created", "key_retire"));
	snprintf(name, sizeof(name), "%s", str_field(rec, "backup", "retire"));
	json_decref(recs);
	cr_assert(kf_manager_verify_backup(f->cfg, fx_path(f->backups, name),
					   &info, err) == 0,
		  "the backup taken before the retire: %s", err);
	cr_assert_eq(info.key_version, 2);
	cr_assert_eq(info.n_versions, 2, "it does not hold the retired key");

	/* gone across a restart too */
	m = fx_reopen(f);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) < 0, "the retired version came back");

	/* a routine restore keeps it retired, and says so */
	r = kf_manager_restore(m, &fx_who, name, false, &v, note, err);
	cr_assert(r == 0, "restore of %s: %s", name, err);
	cr_assert(kt_contains(note, "stay retired: 1"), "note: %s", note);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) < 0,
		  "a restore brought retired version 1 back");
	/* and across a restart: the keyring remembers what it retired */
	m = fx_reopen(f);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) < 0, "the retired version came back");

	/* the backup brings it back with force, with the same key */
	r = kf_manager_restore(m, &fx_who, name, true, &v, NULL, err);
	cr_assert(r == 0, "restore of %s: %s", name, err);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) == 1, "restore did not bring version 1 back");
	cr_assert(sodium_memcmp(s->key[1], before->key[1], KF_KEY_BYTES) == 0,
		  "the restored version 1 has another key");
	cr_assert(sodium_memcmp(s->key[0], before->key[0], KF_KEY_BYTES) == 0);
}
