// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/manager.c through core/manager.h, without a mount:
 * the commit protocol every change goes through -- the audit record of
 * each operation (DESIGN.md §6), and what a change does when its record,
 * its state or the sync of its directory cannot be written: refused with
 * nothing changed, or (after the rename) kept and reported.
 *
 * Linked with the libfiu build of core: a fault is injected at one exact
 * step (fiu_enable).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fiu-control.h>
#include <fiu.h>
#include <sodium.h>

#include "helpers.h"
#include "keyring.h"
#include "manager_fixture.h"

TestSuite(manager, .init = fx_init, .fini = fx_fini);

Test(manager, every_operation_is_audited_with_its_fields)
{
	struct fx *f = fx_new("mgr-auditfields", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "", report[KF_ERR_MAX] = "", want[64];
	size_t deleted = 0, lines;
	uint32_t v = 0;
	json_t *recs, *rec;
	struct snap *s;
	char *text;

	rotate_ok(m, NULL);
	cr_assert(kf_manager_backup(m, &fx_who, "fields", NULL, err) == 0, "%s",
		  err);
	cr_assert(kf_manager_retire(m, &fx_who, 1, false, NULL, err) == 0, "%s",
		  err);
	cr_assert(kf_manager_retire(m, &fx_who, 2, false, NULL, err) == -EBUSY);
	fx_expect_alert("key_retire: %s", err);
	cr_assert(
	    kf_manager_restore(m, &fx_who, "fields", false, &v, NULL, err) == 0,
	    "%s", err);
	cr_assert(
	    kf_manager_prune(m, &fx_who, 100, false, &deleted, NULL, err) == 0,
	    "%s", err);
	cr_assert(kf_manager_restore(m, &fx_who, "missing", false, &v, NULL,
				     err) < 0);
	fx_expect_alert("key_restore: %s", err);
	s = snap_take(m);
	fx_close(f);
	open_ok(f); /* key_load */
	fx_close(f);

	recs = kt_audit_read(f->audit, 0);
	lines = json_array_size(recs);

	rec = last_record(recs, "key_generate");
	assert_common(rec, NULL, "key_generate");
	cr_assert_eq(int_field(rec, "key_version", "key_generate"), 1);

	/* the seed's record, exactly its fields and values */
	rec = last_record(recs, "key_rotation");
	assert_common(rec, &fx_who, "key_rotation");
	cr_assert_eq(int_field(rec, "key_version", "key_rotation"), 2);
	cr_assert_eq(int_field(rec, "previous_version", "key_rotation"), 1);
	cr_assert(bool_field(rec, "success", "key_rotation"));
	cr_assert(bool_field(rec, "backup_created", "key_rotation"));

	rec = last_success(recs, "key_backup", &fx_who);
	cr_assert_eq(int_field(rec, "key_version", "key_backup"), 2);
	cr_assert_str_eq(str_field(rec, "backup", "key_backup"), "fields.json");

	cr_assert_eq(kt_count_records(recs, "key_retire", 1), 1);
	cr_assert_eq(kt_count_records(recs, "key_retire", 0), 1);
	rec = last_record(recs, "key_retire");
	assert_common(rec, &fx_who, "key_retire (refused)");
	cr_assert(!bool_field(rec, "success", "key_retire"));
	cr_assert_eq(int_field(rec, "key_version", "key_retire"), 2);

	cr_assert_eq(kt_count_records(recs, "key_restore", 1), 1);
	cr_assert_eq(kt_count_records(recs, "key_restore", 0), 1);
	for (size_t i = 0; i < lines; i++) {
		json_t *o = json_array_get(recs, i);

		if (strcmp(kt_str_of(o, "event"), "key_restore") != 0 ||
		    !json_is_true(json_object_get(o, "success")))
			continue;
		assert_common(o, &fx_who, "key_restore");
		cr_assert_eq(int_field(o, "key_version", "key_restore"), 2);
		cr_assert_eq(int_field(o, "previous_version", "key_restore"),
			     2);
		cr_assert_str_eq(str_field(o, "backup", "key_restore"),
				 "fields");
	}
	rec = last_record(recs, "key_restore");
	assert_common(rec, &fx_who, "key_restore (failed)");
	cr_assert(!bool_field(rec, "success", "key_restore"));
	cr_assert(
	    starts_with(str_field(rec, "error", "key_restore"), KBE_RESTORE));

	rec = last_success(recs, "backup_cleanup", &fx_who);
	cr_assert_eq(int_field(rec, "keep", "backup_cleanup"), 100);
	cr_assert_eq(int_field(rec, "deleted", "backup_cleanup"), 0);

	rec = last_record(recs, "key_load");
	assert_common(rec, NULL, "key_load");
	cr_assert_eq(int_field(rec, "key_version", "key_load"), 2);

	/* seq runs 1..N */
	for (size_t i = 0; i < lines; i++)
		cr_assert_eq(int_field(json_array_get(recs, i), "seq", "seq"),
			     (json_int_t)i + 1);
	json_decref(recs);

	cr_assert(kf_manager_verify_audit(f->cfg, NULL, true, report) == 0,
		  "%s", report);
	snprintf(want, sizeof(want), "ok: %zu records (seq 1-%zu); end checked",
		 lines, lines);
	cr_assert(starts_with(report, want), "report: %s", report);

	/* no key text anywhere in the log */
	text = fx_own(kt_read_file_ok(f->audit, NULL));
	for (size_t i = 0; i < s->n; i++)
		cr_assert(!holds_key(text, s->key[i]),
			  "the audit log holds the key of version %" PRIu32,
			  s->version[i]);
}

/* --- an audit log that cannot be written ---------------------------------- */

/* The tmpfs of the current test (fx_fini detaches it). */
static const char *tiny;

/* Fills the tmpfs with a filler file (until ENOSPC). */
static void fill_tiny(void)
{
	char *path = fx_path(tiny, "filler"), buf[512];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
}

static void free_tiny(void)
{
	cr_assert(unlink(fx_path(tiny, "filler")) == 0);
}

/*
 * A manager (retain 3, versions 3 2 1, a backup "kept") whose audit log is
 * on a full tmpfs: prune (the shortest record) is repeated until its record
 * no longer fits, so every longer record fails too.
 */
static struct fx *full_audit(const char *tag)
{
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct fx *f;
	size_t deleted;
	int r = 0;

	tiny = kt_tmpfs(tag, "12k");
	f = fx_new(tag, "development", fx_path(tiny, "audit.log"),
		   "retain_versions = 3\n");
	m = open_ok(f);
	rotate_ok(m, NULL);
	rotate_ok(m, NULL);
	cr_assert(kf_manager_backup(m, &fx_who, "kept", NULL, err) == 0, "%s",
		  err);
	fill_tiny();
	for (int i = 0; i < 200 && r == 0; i++)
		r = kf_manager_prune(m, &fx_who, 9, false, &deleted, NULL, err);
	cr_assert(r == -ENOSPC, "prune on a full audit fs ended with %d (%s)",
		  r, err);
	cr_assert(kt_contains(err, "audit log"), "unclear: %s", err);
	fx_expect_alert("backup_cleanup: %s", err);
	return f;
}

/* What a refused operation must leave as it was. */
struct frozen {
	struct snap *snap;
	char *state, *backups, *statedir;
	size_t slen;
};

static void freeze(struct fx *f, struct frozen *z)
{
	z->snap = snap_take(f->m);
	z->state = fx_own(kt_read_file_ok(f->state_file, &z->slen));
	z->backups = fx_own(kt_names(f->backups));
	z->statedir = fx_own(kt_names(f->cfg->state_dir));
}

static void assert_unchanged(struct fx *f, struct frozen *z, const char *what)
{
	struct snap *s = snap_take(f->m);
	char *b = fx_own(kt_names(f->backups)),
	     *sd = fx_own(kt_names(f->cfg->state_dir));

	cr_assert(snap_same(z->snap, s), "%s: the keyring changed in memory",
		  what);
	cr_assert(same_file(f->state_file, z->state, z->slen),
		  "%s: the sealed state changed", what);
	cr_assert(strcmp(b, z->backups) == 0,
		  "%s: backups/ changed:\nbefore:\n%s\nafter:\n%s", what,
		  z->backups, b);
	cr_assert(strcmp(sd, z->statedir) == 0,
		  "%s: state_dir changed (temporary file left?)", what);
	snap_free(s);
}

Test(manager, full_audit_log_refuses_rotation_and_changes_nothing,
     .timeout = 60)
{
	struct fx *f = full_audit("mgr-full-rotate");
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct frozen z;
	struct snap *s;
	uint32_t v = 0;
	int r;

	freeze(f, &z);
	r = kf_manager_rotate(f->m, &fx_who, &v, NULL, err);
	cr_assert_eq(r, -ENOSPC, "rotation with a full audit log: %d %s", r,
		     err);
	cr_assert(kt_contains(err, "audit log"), "unclear: %s", err);
	fx_expect_alert("key_rotation: %s", err);
	assert_unchanged(f, &z, "rotate");

	/* after space is freed: the version on disk is the old one */
	free_tiny();
	m = fx_reopen(f);
	s = snap_take(m);
	cr_assert(snap_same(z.snap, s), "the reloaded keyring differs");
	rotate_ok(m, &v);
	cr_assert_eq(v, z.snap->version[0] + 1);
	fx_close(f);
	verify_audit_ok(f);
}

Test(manager, full_audit_log_refuses_backup_and_prune, .timeout = 60)
{
	struct fx *f = full_audit("mgr-full-backup");
	char err[KF_ERR_MAX] = "", ret[KF_BACKUP_NAME_MAX + 6];
	size_t deleted = 77;
	struct frozen z;
	int r;

	freeze(f, &z);
	r = kf_manager_backup(f->m, &fx_who, "unrecorded", ret, err);
	cr_assert(r < 0, "a named backup succeeded with a full audit log");
	fx_expect_alert("key_backup: %s", err);
	assert_unchanged(f, &z, "named backup");
	r = kf_manager_backup(f->m, &fx_who, NULL, ret, err);
	cr_assert(r < 0, "a backup succeeded with a full audit log");
	fx_expect_alert("key_backup: %s", err);
	assert_unchanged(f, &z, "timestamped backup");
	r = kf_manager_prune(f->m, &fx_who, 0, true, &deleted, NULL, err);
	cr_assert(r < 0, "prune succeeded with a full audit log");
	fx_expect_alert("backup_cleanup: %s", err);
	assert_unchanged(f, &z, "prune 0");
	free_tiny();
	fx_close(f);
	verify_audit_ok(f);
}

Test(manager, full_audit_log_refuses_retire_and_leaves_no_archive,
     .timeout = 60)
{
	struct fx *f = full_audit("mgr-full-retire");
	char err[KF_ERR_MAX] = "";
	struct frozen z;
	int r;

	freeze(f, &z);
	r = kf_manager_retire(f->m, &fx_who, 1, false, NULL, err);
	cr_assert(r < 0, "retire succeeded with a full audit log");
	cr_assert(kt_contains(err, "audit log"), "unclear: %s", err);
	fx_expect_alert("key_retire: %s", err);
	assert_unchanged(f, &z, "retire");
	free_tiny();
}

Test(manager, full_audit_log_refuses_restore_and_leaves_no_archive,
     .timeout = 60)
{
	struct fx *f = full_audit("mgr-full-restore");
	char err[KF_ERR_MAX] = "";
	struct frozen z;
	uint32_t v = 0;
	int r;

	freeze(f, &z);
	r = kf_manager_restore(f->m, &fx_who, "kept", false, &v, NULL, err);
	cr_assert(r < 0, "restore succeeded with a full audit log");
	cr_assert(starts_with(err, KBE_RESTORE), "message: %s", err);
	fx_expect_alert("key_restore: %s", err);
	assert_unchanged(f, &z, "restore");
	free_tiny();
}

/* --- a state that cannot be written or synced ------------------------------
 */

/*
 * A full disk under state_dir: the rotation is refused, nothing changes in
 * memory or on disk, its automatic backup is removed again, and the success
 * record already in the log is cancelled by a failure record naming it.
 */
Test(manager, full_state_disk_refuses_rotation_and_loses_nothing, .timeout = 60)
{
	struct fx *f = fx_new("mgr-full-state", "development", NULL, NULL);
	char err[KF_ERR_MAX] = "", *filler;
	size_t backups_before, mark;
	struct kf_manager *m;
	struct snap *before, *after;
	json_t *recs, *ok, *bad;
	uint32_t v = 0;
	int r;

	free(f->cfg->state_dir);
	f->cfg->state_dir = strdup(kt_tmpfs("mgr-full-state-fs", "16k"));
	m = open_ok(f);
	before = snap_take(m);
	backups_before = count_files(f->backups, "key_backup_", ".json");
	filler = fx_path(f->cfg->state_dir, "filler");
	/* fails with ENOSPC: that is the point */
	kt_runf(NULL, NULL, "dd if=/dev/zero of='%s' bs=1k count=64", filler);
	mark = kt_file_size(f->audit);

	r = kf_manager_rotate(m, &fx_who, &v, NULL, err);
	cr_assert_eq(r, -ENOSPC, "rotation on a full state disk: %d %s", r,
		     err);
	cr_assert(kt_contains(err, "saving state"), "unclear: %s", err);
	fx_expect_alert("key_rotation: %s", err);
	after = snap_take(m);
	cr_assert(snap_same(before, after), "the keyring changed in memory");
	cr_assert_eq(count_files(f->backups, "key_backup_", ".json"),
		     backups_before, "the refused rotation left its backup");
	recs = kt_audit_read(f->audit, mark);
	ok = kt_find_record(recs, "key_rotation", 1);
	bad = kt_find_record(recs, "key_rotation", 0);
	cr_assert(ok && bad, "want a success record and its cancellation");
	cr_assert(json_integer_value(json_object_get(bad, "cancels_seq")) ==
		      json_integer_value(json_object_get(ok, "seq")),
		  "the failure record does not name the record it cancels");
	json_decref(recs);

	/* Space again: the state on disk is the old keyring. */
	cr_assert(unlink(filler) == 0);
	m = fx_reopen(f);
	after = snap_take(m);
	cr_assert(snap_same(before, after), "the reloaded keyring differs");
	rotate_ok(m, &v);
	cr_assert_eq(v, before->version[0] + 1);
	fx_close(f);
	verify_audit_ok(f);
}

/*
 * The state was renamed into place but the directory's fsync failed: the
 * change is in effect (memory, disk and the audit log agree), the caller
 * hears that its durability is not confirmed, and its number is never
 * issued again.  The fault is injected at that one step (libfiu).
 */
Test(manager, a_failed_directory_sync_after_the_rename_keeps_the_change)
{
	struct fx *f = fx_new("mgr-dirsync", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "";
	struct kf_keyring *kr;
	struct snap *at2;
	json_t *recs, *rec;
	uint32_t v = 0;
	int r;

	cr_assert(fiu_init(0) == 0);
	cr_assert(fiu_enable("keyfs/file/commit_dir_fsync", 1, NULL, 0) == 0);
	r = kf_manager_rotate(m, &fx_who, &v, NULL, err);
	fiu_disable("keyfs/file/commit_dir_fsync");
	cr_assert(r == -EIO, "rotate with a failing directory sync: %d %s", r,
		  err);
	cr_assert(kt_contains(err, "version 2 is in effect"), "%s", err);
	fx_expect_alert("state_sync: %s: fsync of directory",
			f->cfg->state_dir);
	cr_assert_eq(current_version(m), 2,
		     "memory does not hold what the disk shows");
	at2 = snap_take(m);
	cr_assert(snap_find(at2, 2) >= 0);
	/* The next rotation goes on from there: 2 is never issued twice. */
	rotate_ok(m, &v);
	cr_assert_eq(v, 3);
	recs = kt_audit_read(f->audit, 0);
	cr_assert(kt_count_records(recs, "state_sync", 0) == 1,
		  "the unconfirmed sync was not recorded");
	rec = kt_find_record(recs, "key_rotation", 1);
	cr_assert(rec &&
		      json_integer_value(json_object_get(rec, "key_version")) ==
			  2 &&
		      !json_object_get(rec, "cancels_seq"),
		  "the rotation to 2 is not recorded as done");
	cr_assert(kt_count_records(recs, "key_rotation", 0) == 0,
		  "the rotation was recorded as failed");
	json_decref(recs);
	fx_close(f);
	/* After a restart: 3 current, 2 held with the same key. */
	m = open_ok(f);
	kr = kf_manager_keyring(m);
	cr_assert_eq(kf_keyring_current_version(kr), 3);
	cr_assert(kf_keyring_find(kr, 2) &&
		      sodium_memcmp(kf_keyring_find(kr, 2)->key,
				    at2->key[snap_find(at2, 2)],
				    KF_KEY_BYTES) == 0,
		  "version 2 came back with another key");
	kf_keyring_unref(kr);
	fx_close(f);
	verify_audit_ok(f);
}
