// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/archives.c through core/manager.h, without a mount:
 * named and timestamped backups, restore (by name, by path, and every way
 * it can fail), prune (by hand and automatic), and the last copies of
 * versions that only archives hold.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "helpers.h"
#include "manager_fixture.h"

TestSuite(archives, .init = fx_init, .fini = fx_fini);

/* --- backups ---------------------------------------------------------------
 */

Test(archives, named_and_timestamped_backups)
{
	struct fx *f = fx_new("mgr-backup", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "", ret[KF_BACKUP_NAME_MAX + 6] = "";
	struct kf_backup_info info;
	char *path, *orig;
	size_t len = 0;
	json_t *recs, *rec;
	struct stat st;
	int r;

	rotate_ok(m, NULL);
	r = kf_manager_backup(m, &fx_who, "nightly", ret, err);
	cr_assert(r == 0, "named backup: %d %s", r, err);
	cr_assert_str_eq(ret, "nightly.json");
	path = fx_path(f->backups, "nightly.json");
	cr_assert(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600,
		  "nightly.json missing or not 0600");
	cr_assert(kf_manager_verify_backup(f->cfg, path, &info, err) == 0, "%s",
		  err);
	cr_assert_eq(info.key_version, 2);
	recs = kt_audit_read(f->audit, 0);
	rec = last_success(recs, "key_backup", &fx_who);
	cr_assert_str_eq(str_field(rec, "backup", "key_backup"),
			 "nightly.json");
	cr_assert_eq(int_field(rec, "key_version", "key_backup"), 2);
	json_decref(recs);

	/* an existing name is refused and the archive stays */
	orig = fx_own(kt_read_file_ok(path, &len));
	r = kf_manager_backup(m, &fx_who, "nightly", ret, err);
	cr_assert_eq(r, -EEXIST, "duplicate name: %d %s", r, err);
	fx_expect_alert("key_backup: %s", err);
	cr_assert(same_file(path, orig, len), "the archive was overwritten");
	recs = kt_audit_read(f->audit, 0);
	rec = last_record(recs, "key_backup");
	cr_assert(!bool_field(rec, "success", "duplicate backup"),
		  "the refused backup is not recorded as failed");
	assert_common(rec, &fx_who, "duplicate backup");
	json_decref(recs);

	/* timestamped */
	r = kf_manager_backup(m, &fx_who, NULL, ret, err);
	cr_assert(r == 0, "timestamped backup: %d %s", r, err);
	cr_assert(starts_with(ret, "key_backup_") && strlen(ret) > 5 &&
		      !strcmp(ret + strlen(ret) - 5, ".json"),
		  "timestamped name %s", ret);
}

Test(archives, invalid_backup_names_refused_unwritten_unrecorded)
{
	struct fx *f = fx_new("mgr-badname", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	struct fx_key *k = fx_key_new();
	char err[KF_ERR_MAX] = "", ret[KF_BACKUP_NAME_MAX + 6], longname[80];
	char *before, *after, *audit;
	json_t *recs, *rec;

	memset(longname, 'n', 65);
	longname[65] = 0;
	const char *names[] = {
	    "../escape-attempt",
	    "bad/name-slash",
	    ".hidden-name",
	    "",
	    longname,
	    "caf\xc3\xa9-name",
	    "a..b-dots",
	    "with space",
	    k->text,
	    "-leading-dash",
	};

	before = fx_own(kt_names(f->backups));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int r = kf_manager_backup(m, &fx_who, names[i], ret, err);

		cr_assert_eq(r, -EINVAL, "name %zu accepted: %d", i, r);
		cr_assert(!kt_contains(err, k->text),
			  "the error echoes the name");
		fx_expect_alert("key_backup: %s", err);
		after = kt_names(f->backups);
		cr_assert_str_eq(after, before,
				 "name %zu: the backup dir changed", i);
		free(after);
		recs = kt_audit_read(f->audit, 0);
		rec = last_record(recs, "key_backup");
		assert_common(rec, &fx_who, "invalid name");
		cr_assert(!bool_field(rec, "success", "invalid name"),
			  "name %zu: no failure record", i);
		json_decref(recs);
	}
	cr_assert(!exists(fx_path(f->dir, "escape-attempt.json")),
		  "a name escaped backup_dir");
	audit = fx_own(kt_read_file_ok(f->audit, NULL));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) >= 5)
			cr_assert(!kt_contains(audit, names[i]),
				  "invalid name %zu is in the audit log", i);
	cr_assert(!holds_key(audit, k->raw), "the key-shaped name is audited");
	fx_close(f);
	verify_audit_ok(f);
}

Test(archives, a_named_backup_may_not_take_a_reserved_name)
{
	static const char *const reserved[] = {"key_backup_99991231_235959",
					       "pre_restore_20240101_000000",
					       "key_backup_x"};
	struct fx *f = fx_new("mgr-reserved", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "";

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		int r = kf_manager_backup(m, &fx_who, reserved[i], NULL, err);

		cr_assert(r == -EINVAL && kt_contains(err, "reserved"),
			  "%s: %d %s", reserved[i], r, err);
		fx_expect_alert("key_backup: %s", err);
	}
	cr_assert(kf_manager_backup(m, &fx_who, "key_backupx", NULL, err) == 0,
		  "%s", err);
}

/* --- restore ---------------------------------------------------------------
 */

Test(archives, restore_by_name_by_name_json_and_by_path)
{
	struct fx *f = fx_new("mgr-restore", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "";
	struct kf_backup_info info;
	struct snap *at1, *s;
	uint32_t v = 0;
	int r;

	at1 = snap_take(m);
	cr_assert(kf_manager_backup(m, &fx_who, "snap", NULL, err) == 0, "%s",
		  err);

	const char *whats[] = {"snap", "snap.json",
			       fx_path(f->backups, "snap.json")};

	for (size_t i = 0; i < 3; i++) {
		size_t pre = count_files(f->backups, "pre_restore_", ".json");
		uint32_t was;
		char name[KF_BACKUP_NAME_MAX + 6];
		json_t *recs, *rec;

		rotate_ok(m, NULL);
		rotate_ok(m, NULL);
		was = current_version(m);
		r = kf_manager_restore(m, &fx_who, whats[i], false, &v, NULL,
				       err);
		cr_assert(r == 0, "restore \"%s\": %d %s", whats[i], r, err);
		cr_assert_eq(v, 1);
		s = snap_take(m);
		cr_assert(s->n == 1 && s->version[0] == 1 &&
			      sodium_memcmp(s->key[0], at1->key[0],
					    KF_KEY_BYTES) == 0,
			  "restore \"%s\" did not bring back version 1",
			  whats[i]);
		cr_assert_eq(s->highest, was);
		snap_free(s);
		cr_assert_eq(count_files(f->backups, "pre_restore_", ".json"),
			     pre + 1, "no pre_restore_ archive after \"%s\"",
			     whats[i]);
		recs = kt_audit_read(f->audit, 0);
		rec = last_success(recs, "key_restore", &fx_who);
		cr_assert_eq(int_field(rec, "key_version", "key_restore"), 1);
		cr_assert_eq(int_field(rec, "previous_version", "key_restore"),
			     was);
		snprintf(name, sizeof(name), "%s",
			 str_field(rec, "pre_restore_backup", "key_restore"));
		json_decref(recs);
		/* the pre_restore_ archive holds the replaced keyring */
		cr_assert(kf_manager_verify_backup(f->cfg,
						   fx_path(f->backups, name),
						   &info, err) == 0,
			  "%s: %s", name, err);
		cr_assert_eq(info.key_version, was);
	}
}

/* Writes len bytes of data to dir/name (0600); the path. */
static char *archive_at(const char *dir, const char *name, const char *data,
			size_t len)
{
	char *path = fx_path(dir, name);

	kt_write_bytes(path, data, len, 0600);
	return path;
}

Test(archives, failed_restores_change_nothing)
{
	struct fx *f = fx_new("mgr-badrestore", "development", NULL, NULL),
		  *g = fx_new("mgr-foreign", "development", NULL, NULL);
	char err[KF_ERR_MAX] = "", *orig, *data, *p, *state, *list;
	struct kf_manager *m, *other;
	struct snap *before, *s;
	size_t len = 0, slen = 0, failures;
	uint32_t v = 0;
	json_t *recs;

	m = open_ok(f);
	other = open_ok(g);
	cr_assert(kf_manager_backup(other, &fx_who, "foreign", NULL, err) == 0,
		  "%s", err);
	fx_close(g);
	kt_copy_file(fx_path(g->backups, "foreign.json"),
		     fx_path(f->backups, "foreign.json"));

	cr_assert(kf_manager_backup(m, &fx_who, "good", NULL, err) == 0, "%s",
		  err);
	orig = fx_own(kt_read_file_ok(fx_path(f->backups, "good.json"), &len));
	data = fx_own(malloc(len + 1));
	cr_assert_not_null(data);
	memcpy(data, orig, len + 1);
	/* one base64 character of the ciphertext changed */
	p = strstr(data, "\"ciphertext\":\"");
	cr_assert_not_null(p);
	p += strlen("\"ciphertext\":\"") + 10;
	*p = *p == 'A' ? 'B' : 'A';
	const char *abs_tampered =
	    archive_at(f->backups, "tampered.json", data, len);
	memcpy(data, orig, len);
	/* a clear field edited: key_version */
	p = strstr(data, "\"key_version\":");
	cr_assert_not_null(p);
	p += strlen("\"key_version\":");
	*p = *p == '9' ? '8' : (char)(*p + 1);
	archive_at(f->backups, "edited.json", data, len);
	memcpy(data, orig, len);
	archive_at(f->backups, "truncated.json", data, len / 2);
	kt_write_file(fx_path(f->backups, "notarchive.json"),
		      "{\"hello\":\"world\"}\n", 0600);
	kt_write_file(fx_path(f->dir, "plain.txt"), "not json\n", 0600);

	const char *whats[] = {
	    "missing",	 "missing.json", fx_path(f->dir, "missing.json"),
	    "tampered",	 abs_tampered,	 "edited.json",
	    "truncated", "notarchive",	 fx_path(f->dir, "plain.txt"),
	    "foreign",	 "../good.json", "",
	    "a/b",	 f->backups,
	};
	const size_t n = sizeof(whats) / sizeof(whats[0]);

	rotate_ok(m, NULL);
	before = snap_take(m);
	state = fx_own(kt_read_file_ok(f->state_file, &slen));
	list = fx_own(kt_names(f->backups));
	for (size_t i = 0; i < n; i++) {
		char *now;
		int r = kf_manager_restore(m, &fx_who, whats[i], false, &v,
					   NULL, err);

		cr_assert(r < 0, "restore of \"%s\" succeeded", whats[i]);
		cr_assert(starts_with(err, KBE_RESTORE) &&
			      strlen(err) > strlen(KBE_RESTORE) + 2,
			  "restore of \"%s\": message \"%s\"", whats[i], err);
		fx_expect_alert("key_restore: %s", err);
		s = snap_take(m);
		cr_assert(snap_same(before, s),
			  "a failed restore of \"%s\" changed the keyring",
			  whats[i]);
		snap_free(s);
		cr_assert(same_file(f->state_file, state, slen),
			  "a failed restore of \"%s\" changed the state",
			  whats[i]);
		now = kt_names(f->backups);
		cr_assert_str_eq(now, list,
				 "a failed restore of \"%s\" changed backups/",
				 whats[i]);
		free(now);
	}
	recs = kt_audit_read(f->audit, 0);
	failures = kt_count_records(recs, "key_restore", 0);
	cr_assert_eq(failures, n, "%zu failed restores audited, not %zu",
		     failures, n);
	assert_common(last_record(recs, "key_restore"), &fx_who, "key_restore");
	cr_assert(kt_contains(
	    str_field(last_record(recs, "key_restore"), "error", "key_restore"),
	    KBE_RESTORE));
	json_decref(recs);
	fx_close(f);
	verify_audit_ok(f);
}

/* --- prune -----------------------------------------------------------------
 */

Test(archives, prune_keeps_n_newest_and_reports_deleted)
{
	struct fx *f = fx_new("mgr-prune", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "", name[16];
	struct kf_backup_info *list = NULL;
	size_t n = 0, deleted = 99;
	json_t *recs, *rec;
	int r;

	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "b%d", i);
		cr_assert(kf_manager_backup(m, &fx_who, name, NULL, err) == 0,
			  "%s", err);
	}
	cr_assert(kf_manager_list_backups(m, &list, &n, err) == 0, "%s", err);
	free(list);
	cr_assert(n >= 5);

	r = kf_manager_prune(m, &fx_who, 2, false, &deleted, NULL, err);
	cr_assert(r == 0, "prune: %d %s", r, err);
	cr_assert_eq(deleted, n - 2, "prune reported %zu deleted of %zu",
		     deleted, n);
	cr_assert_eq(count_files(f->backups, NULL, ".json"), 2);
	recs = kt_audit_read(f->audit, 0);
	rec = last_success(recs, "backup_cleanup", &fx_who);
	cr_assert_eq(int_field(rec, "keep", "backup_cleanup"), 2);
	cr_assert_eq(int_field(rec, "deleted", "backup_cleanup"),
		     (json_int_t)(n - 2));
	json_decref(recs);

	r = kf_manager_prune(m, &fx_who, 2, false, &deleted, NULL, err);
	cr_assert(r == 0 && deleted == 0, "second prune: %d, %zu deleted", r,
		  deleted);
	/* 0 would delete every backup: refused unless forced. */
	r = kf_manager_prune(m, &fx_who, 0, false, &deleted, NULL, err);
	cr_assert(r == -EINVAL && kt_contains(err, "0 force"), "prune 0: %d %s",
		  r, err);
	fx_expect_alert("backup_cleanup: %s", err);
	cr_assert_eq(count_files(f->backups, NULL, ".json"), 2);
	r = kf_manager_prune(m, &fx_who, 0, true, &deleted, NULL, err);
	cr_assert(r == 0 && deleted == 2, "prune 0 force: %d, %zu deleted", r,
		  deleted);
	cr_assert_eq(count_files(f->backups, NULL, ".json"), 0);
}

Test(archives, automatic_backups_pruned_to_backup_keep)
{
	struct fx *f =
	    fx_new("mgr-autoprune", "development", NULL, "backup_keep = 3\n");
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "", *mine, *orig;
	size_t len = 0;
	json_t *recs;

	cr_assert(kf_manager_backup(m, &fx_who, "mine", NULL, err) == 0, "%s",
		  err);
	mine = fx_path(f->backups, "mine.json");
	orig = fx_own(kt_read_file_ok(mine, &len));
	for (int i = 0; i < 6; i++)
		rotate_ok(m, NULL);
	/* The newest 3 (versions 7, 6, 5), and version 4's (4, 3, 2), the
	 * last copy of version 2; version 1 is in "mine". */
	cr_assert_eq(count_files(f->backups, "key_backup_", ".json"), 4,
		     "%zu automatic archives kept, backup_keep is 3",
		     count_files(f->backups, "key_backup_", ".json"));
	cr_assert(same_file(mine, orig, len), "the named backup was touched");
	recs = kt_audit_read(f->audit, 0);
	cr_assert(kt_count_records(recs, "backup_cleanup", 1) >= 1,
		  "automatic pruning is not audited");
	json_decref(recs);
}

/*
 * Automatic pruning must keep the newest archives, also when many are made
 * within one second (generated names then carry _2, _3, ... _10, _11).
 */
Test(archives, automatic_prune_keeps_the_newest_archive, .timeout = 60)
{
	struct fx *f = fx_new("mgr-autoprune-newest", "development", NULL,
			      "backup_keep = 3\n");
	struct kf_manager *m = open_ok(f);
	char name[KF_BACKUP_NAME_MAX + 6];

	for (int i = 0; i < 25; i++) {
		uint32_t v = 0;

		rotate_ok(m, &v);
		backup_with_version(m, v, name);
		cr_assert(name[0],
			  "rotation %d: the archive of the new version %" PRIu32
			  " was pruned at once (older ones kept)",
			  i + 1, v);
	}
}

Test(archives, prune_keeps_the_last_archive_of_a_retired_version)
{
	struct fx *f = fx_new("mgr-prune-last", "development", NULL,
			      "retain_versions = 3\n");
	struct kf_manager *m = open_ok(f);
	char err[KF_ERR_MAX] = "", note[KF_ERR_MAX];
	struct kf_backup_info *list = NULL;
	size_t deleted = 0, kept = 0, n = 0;
	json_t *recs, *rec;
	uint32_t v;
	int r;

	rotate_ok(m, NULL);
	/* The backup taken before the retire is version 1's last copy... */
	cr_assert(kf_manager_retire(m, &fx_who, 1, false, NULL, err) == 0, "%s",
		  err);
	/* ...once the first archives (which hold 1 too) are pruned; and
	 * version 2 drops out of the keyring (5, 4, 3) on the way. */
	for (int i = 0; i < 3; i++) {
		rotate_ok(m, NULL);
		cr_assert(kf_manager_backup(m, &fx_who, NULL, NULL, err) == 0);
	}
	r = kf_manager_prune(m, &fx_who, 1, false, &deleted, &kept, err);
	cr_assert(r == 0, "%d %s", r, err);
	/* Kept: the newest, the last copy of 2 (4, 3, 2), of 1 (2, 1). */
	cr_assert(kept == 2, "%zu archives kept as a last copy", kept);
	cr_assert_eq(count_files(f->backups, NULL, ".json"), 3);
	recs = kt_audit_read(f->audit, 0);
	rec = last_record(recs, "backup_cleanup");
	cr_assert_eq(int_field(rec, "kept_last_copies", "prune"), 2);
	json_decref(recs);
	/* The kept one still restores version 1 (with force: retired). */
	cr_assert(kf_manager_list_backups(m, &list, &n, err) == 0);
	fx_own(list);
	cr_assert(n == 3 && list[2].key_version == 2);
	r = kf_manager_restore(m, &fx_who, list[2].name, true, &v, note, err);
	cr_assert(r == 0, "restore of the last copy: %s", err);
	/* force: the last copies go too (the restore's pre_restore_ archive
	 * is now the newest). */
	r = kf_manager_prune(m, &fx_who, 1, true, &deleted, &kept, err);
	cr_assert(r == 0 && kept == 0, "%d %s", r, err);
	cr_assert_eq(count_files(f->backups, NULL, ".json"), 1);
}
