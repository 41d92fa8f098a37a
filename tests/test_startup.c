// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/startup.c through core/manager.h, without a mount:
 * kf_manager_open (DESIGN.md §4) -- the master key, the import of the
 * environment, load of the sealed state, the state lock, the sweep of
 * temporary files, and an audit location it cannot write.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "helpers.h"
#include "manager_fixture.h"
#include "util.h"

/* Production's refusal with nothing to load, and its hint. */
#define KVE_NONE_HINTED                                                        \
	KVE_NONE ": set ENCRYPTION_KEY (for example from `keyfs genkey`), or " \
		 "restore a backup (`keyfs restore --offline FILE`)"

TestSuite(startup, .init = fx_init, .fini = fx_fini);

Test(startup, development_generates_version_1_and_master_key)
{
	struct fx *f = fx_new("mgr-dev", "development", NULL, NULL);
	struct kf_manager *m;
	struct snap *s, *again;
	const char *log;
	char *mtext, *mtext2;
	json_t *recs, *rec;
	struct stat st;
	size_t mark;

	cr_assert(!exists(f->master));
	mark = fx_log_mark();
	m = open_ok(f);

	s = snap_take(m);
	cr_assert_eq(s->n, 1, "a new keyring holds %zu versions", s->n);
	cr_assert_eq(s->version[0], 1);
	cr_assert_eq(s->highest, 1);

	cr_assert(stat(f->master, &st) == 0, "no master key file was created");
	cr_assert(S_ISREG(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0600, "master key mode %04o",
		     st.st_mode & 07777);
	cr_assert_eq(st.st_uid, 0);
	mtext = fx_own_secret(kt_read_file_ok(f->master, NULL));
	cr_assert(strlen(mtext) >= KF_KEY_TEXT_LEN &&
		      kf_key_decode(mtext, KF_KEY_TEXT_LEN, NULL, NULL) == 0,
		  "master key file does not hold a key in text form");
	mtext[KF_KEY_TEXT_LEN] = 0;

	cr_assert(stat(f->state_file, &st) == 0, "no sealed state written");
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert(stat(f->cfg->state_dir, &st) == 0);
	cr_assert_eq(st.st_mode & 07777, 0700);

	/* the warning, and no key text in it */
	log = fx_log_since(mark);
	cr_assert(kt_contains(log, "created a new master key") &&
		      kt_contains(log, f->master),
		  "no warning about the new master key: %s", log);
	cr_assert(!kt_contains(log, mtext), "the warning shows the master key");
	cr_assert(!holds_key(log, s->key[0]), "stderr shows the data key");

	recs = kt_audit_read(f->audit, 0);
	rec = last_success(recs, "key_generate", NULL);
	cr_assert_eq(int_field(rec, "key_version", "key_generate"), 1);
	json_decref(recs);
	fx_close(f);

	/* the second start loads the same key and keeps the master key */
	mark = fx_log_mark();
	m = open_ok(f);
	cr_assert(!kt_contains(fx_log_since(mark), "created a new master key"),
		  "a second master key was created");
	again = snap_take(m);
	cr_assert(snap_same(s, again), "restart changed the keyring");
	mtext2 = fx_own_secret(kt_read_file_ok(f->master, NULL));
	cr_assert(strncmp(mtext, mtext2, KF_KEY_TEXT_LEN) == 0,
		  "restart replaced the master key");
}

Test(startup, production_without_master_key_refused)
{
	struct fx *f = fx_new("mgr-prod-nomaster", "production", NULL, NULL);
	struct fx_key *k = fx_key_new();
	char err[KF_ERR_MAX], want[KF_ERR_MAX];
	int r;

	r = open_fails(f, err, "production, no master key");
	cr_assert_eq(r, -ENOENT, "returned %d (%s)", r, err);
	snprintf(want, sizeof(want),
		 KVE_NONE ": no master key: set KEYFS_MASTER_KEY or create %s",
		 f->master);
	cr_assert(strcmp(err, want) == 0, "message \"%s\", expected \"%s\"",
		  err, want);
	cr_assert(!exists(f->master), "production created a master key");
	cr_assert(!exists(f->state_file), "production wrote a state");

	/* an ENCRYPTION_KEY cannot be sealed without a master key either */
	setenv("ENCRYPTION_KEY", k->text, 1);
	r = open_fails(f, err, "production, ENCRYPTION_KEY, no master key");
	cr_assert(starts_with(err, KVE_NONE), "message: %s", err);
	cr_assert(!kt_contains(err, k->text), "the message shows the key");
	cr_assert(!exists(f->master) && !exists(f->state_file));
	cr_assert_eq(count_files(f->backups, NULL, NULL), 0);
}

Test(startup, production_with_master_key_but_no_keys_refused)
{
	struct fx *f = fx_new("mgr-prod-nokeys", "production", NULL, NULL);
	struct fx_key *k = fx_key_new();
	char err[KF_ERR_MAX];
	int r;

	write_master(f);
	r = open_fails(f, err, "production, master key, no keys");
	cr_assert_eq(r, -ENOENT, "returned %d", r);
	cr_assert(strcmp(err, KVE_NONE_HINTED) == 0, "message \"%s\"", err);
	cr_assert(!exists(f->state_file), "a state was written");
	cr_assert_eq(count_files(f->backups, NULL, NULL), 0,
		     "a backup was written");

	/* the same with the master key in KEYFS_MASTER_KEY */
	cr_assert(unlink(f->master) == 0);
	setenv("KEYFS_MASTER_KEY", k->text, 1);
	r = open_fails(f, err, "production, KEYFS_MASTER_KEY, no keys");
	cr_assert(strcmp(err, KVE_NONE_HINTED) == 0, "message \"%s\"", err);
	cr_assert(!exists(f->state_file) && !exists(f->master));
	/* The log's record of the first refusal is chained under the other
	 * master key. */
	fx_expect_alert("audit log %s does not verify", f->audit);
}

Test(startup, imports_environment_keys)
{
	struct fx *f = fx_new("mgr-import", "production", NULL, NULL), *g;
	struct fx_key *cur = fx_key_new(), *prev = fx_key_new();
	struct kf_manager *m;
	struct snap *s, *again;
	json_t *recs, *rec;

	write_master(f);
	setenv("ENCRYPTION_KEY", cur->text, 1);
	setenv("ENCRYPTION_KEY_PREVIOUS", prev->text, 1);
	setenv("ENCRYPTION_KEY_VERSION", "7", 1);
	m = open_ok(f);
	s = snap_take(m);
	cr_assert_eq(s->n, 2, "imported keyring holds %zu versions", s->n);
	cr_assert_eq(s->version[0], 7);
	cr_assert_eq(s->version[1], 6);
	cr_assert_eq(s->highest, 7);
	cr_assert(memcmp(s->key[0], cur->raw, KF_KEY_BYTES) == 0,
		  "current key is not the imported ENCRYPTION_KEY");
	cr_assert(memcmp(s->key[1], prev->raw, KF_KEY_BYTES) == 0,
		  "previous key is not the imported ENCRYPTION_KEY_PREVIOUS");
	cr_assert(exists(f->state_file), "import not sealed to disk");
	recs = kt_audit_read(f->audit, 0);
	rec = last_success(recs, "key_import", NULL);
	cr_assert_eq(int_field(rec, "key_version", "key_import"), 7);
	json_decref(recs);
	fx_close(f);

	/* sealed: the next start needs no environment */
	fx_clear_env();
	m = open_ok(f);
	again = snap_take(m);
	cr_assert(snap_same(s, again), "the reloaded keyring differs");
	fx_close(f);

	/* only ENCRYPTION_KEY: version 1, no previous */
	g = fx_new("mgr-import1", "production", NULL, NULL);
	write_master(g);
	setenv("ENCRYPTION_KEY", cur->text, 1);
	m = open_ok(g);
	again = snap_take(m);
	cr_assert_eq(again->n, 1);
	cr_assert_eq(again->version[0], 1);
	cr_assert(memcmp(again->key[0], cur->raw, KF_KEY_BYTES) == 0,
		  "current key is not the imported ENCRYPTION_KEY");

	/* ENCRYPTION_KEY and a version, no previous */
	g = fx_new("mgr-import3", "production", NULL, NULL);
	write_master(g);
	setenv("ENCRYPTION_KEY_VERSION", "3", 1);
	m = open_ok(g);
	cr_assert_eq(current_version(m), 3);
}

Test(startup, invalid_environment_refused_and_nothing_written)
{
	struct fx_key *good = fx_key_new(), *good2 = fx_key_new(),
		      *short43 = fx_key_new(), *stdalpha = fx_key_new();
	char err[KF_ERR_MAX];
	struct fx *f;

	memcpy(short43->text, good->text, KF_KEY_TEXT_LEN - 1);
	short43->text[KF_KEY_TEXT_LEN - 1] = 0;
	memcpy(stdalpha->text, good->text, sizeof(stdalpha->text));
	stdalpha->text[5] = '+'; /* standard, not URL-safe, alphabet */
	const struct {
		const char *cur, *prev, *ver, *what;
	} cases[] = {
	    {short43->text, NULL, NULL, "ENCRYPTION_KEY of 43 characters"},
	    {stdalpha->text, NULL, NULL, "ENCRYPTION_KEY with '+'"},
	    {"not a key", NULL, NULL, "ENCRYPTION_KEY junk"},
	    {good->text, short43->text, "2", "ENCRYPTION_KEY_PREVIOUS invalid"},
	    {good->text, stdalpha->text, "2",
	     "ENCRYPTION_KEY_PREVIOUS with '+'"},
	    {good->text, good2->text, "0", "ENCRYPTION_KEY_VERSION 0"},
	    {good->text, good2->text, "abc", "ENCRYPTION_KEY_VERSION abc"},
	    {good->text, good2->text, "-1", "ENCRYPTION_KEY_VERSION -1"},
	    {good->text, NULL, "0", "ENCRYPTION_KEY_VERSION 0, no previous"},
	    {good->text, NULL, "abc",
	     "ENCRYPTION_KEY_VERSION abc, no previous"},
	    {good->text, NULL, "-1", "ENCRYPTION_KEY_VERSION -1, no previous"},
	    {good->text, NULL, "4294967296", "ENCRYPTION_KEY_VERSION 2^32"},
	    {good->text, NULL, "1.5", "ENCRYPTION_KEY_VERSION 1.5"},
	};

	f = fx_new("mgr-badenv", "production", NULL, NULL);
	write_master(f);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fx_clear_env();
		setenv("ENCRYPTION_KEY", cases[i].cur, 1);
		if (cases[i].prev)
			setenv("ENCRYPTION_KEY_PREVIOUS", cases[i].prev, 1);
		if (cases[i].ver)
			setenv("ENCRYPTION_KEY_VERSION", cases[i].ver, 1);
		(void)open_fails(f, err, cases[i].what);
		cr_assert(starts_with(err, KVE_LOAD), "%s: message \"%s\"",
			  cases[i].what, err);
		cr_assert(strlen(err) > strlen(KVE_LOAD) + 2,
			  "%s: no reason given", cases[i].what);
		cr_assert(!kt_contains(err, good->text) &&
			      !kt_contains(err, good2->text) &&
			      !kt_contains(err, short43->text),
			  "%s: the message shows a key", cases[i].what);
		cr_assert(!exists(f->state_file), "%s: a state was written",
			  cases[i].what);
		cr_assert_eq(count_files(f->backups, NULL, NULL), 0,
			     "%s: a backup was written", cases[i].what);
	}
	/* and in development mode an invalid key is not replaced by a new one
	 */
	f = fx_new("mgr-badenv-dev", "development", NULL, NULL);
	fx_clear_env();
	setenv("ENCRYPTION_KEY", short43->text, 1);
	(void)open_fails(f, err, "development, invalid ENCRYPTION_KEY");
	cr_assert(starts_with(err, KVE_LOAD), "message \"%s\"", err);
	cr_assert(!exists(f->state_file), "development generated a keyring");
}

Test(startup, state_wins_over_a_different_environment_key)
{
	struct fx *f = fx_new("mgr-statewins", "production", NULL, NULL);
	struct fx_key *a = fx_key_new(), *b = fx_key_new(), *c = fx_key_new();
	struct kf_manager *m;
	struct snap *s, *again;
	const char *log;
	size_t mark;

	write_master(f);
	setenv("ENCRYPTION_KEY", a->text, 1);
	m = open_ok(f);
	rotate_ok(m, NULL);
	s = snap_take(m);
	fx_close(f);

	/* the same ENCRYPTION_KEY again, after a rotation: state wins */
	setenv("ENCRYPTION_KEY", b->text, 1);
	setenv("ENCRYPTION_KEY_VERSION", "9", 1);
	mark = fx_log_mark();
	m = open_ok(f);
	again = snap_take(m);
	cr_assert(snap_same(s, again),
		  "a different ENCRYPTION_KEY replaced the stored keyring");
	cr_assert_eq(again->version[0], 2);
	fx_close(f);
	log = fx_log_since(mark);
	cr_assert(kt_contains(log, "ENCRYPTION_KEY differs"),
		  "no warning that the stored keyring wins: %s", log);
	cr_assert(!kt_contains(log, a->text) && !kt_contains(log, b->text) &&
		      !holds_key(log, s->key[0]) && !holds_key(log, s->key[1]),
		  "the warning shows key text");

	/* ENCRYPTION_KEY equal to the stored current key: no warning */
	kf_key_encode(s->key[0], c->text);
	setenv("ENCRYPTION_KEY", c->text, 1);
	mark = fx_log_mark();
	open_ok(f);
	fx_close(f);
	cr_assert(!kt_contains(fx_log_since(mark), "ENCRYPTION_KEY differs"),
		  "warned about an ENCRYPTION_KEY equal to the stored key");
}

Test(startup, corrupted_state_refused_and_left_as_it_was)
{
	struct fx *f = fx_new("mgr-corrupt", "development", NULL, NULL);
	struct kf_manager *m;
	struct snap *s, *again;
	char err[KF_ERR_MAX], *orig, *bad;
	size_t len = 0, nb;

	m = open_ok(f);
	rotate_ok(m, NULL);
	s = snap_take(m);
	fx_close(f);
	nb = count_files(f->backups, NULL, NULL);
	orig = fx_own(kt_read_file_ok(f->state_file, &len));
	cr_assert(len > 100);
	bad = fx_own(malloc(len));
	cr_assert_not_null(bad);

	const size_t pos[] = {0, 9, 13, 20, 40, 60, len / 2, len - 1};

	for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++) {
		memcpy(bad, orig, len);
		bad[pos[i]] ^= 0x01;
		kt_write_bytes(f->state_file, bad, len, 0600);
		(void)open_fails(f, err, "flipped byte");
		cr_assert(starts_with(err, KVE_LOAD),
			  "byte %zu flipped: message \"%s\"", pos[i], err);
		cr_assert(same_file(f->state_file, bad, len),
			  "byte %zu flipped: the state file was changed",
			  pos[i]);
		cr_assert_eq(count_files(f->backups, NULL, NULL), nb,
			     "byte %zu flipped: a backup was written", pos[i]);
	}
	/* truncated */
	kt_write_bytes(f->state_file, orig, len / 2, 0600);
	(void)open_fails(f, err, "truncated state");
	cr_assert(starts_with(err, KVE_LOAD), "truncated: \"%s\"", err);
	cr_assert(same_file(f->state_file, orig, len / 2),
		  "the truncated state file was changed");

	/* the original loads again, unchanged */
	kt_write_bytes(f->state_file, orig, len, 0600);
	m = open_ok(f);
	again = snap_take(m);
	cr_assert(snap_same(s, again), "the keyring changed");
}

Test(startup, wrong_master_key_refused)
{
	struct fx *f = fx_new("mgr-wrongmaster", "production", NULL, NULL);
	struct fx_key *m1 = fx_key_new(), *m2 = fx_key_new(), *k = fx_key_new();
	struct kf_manager *m;
	struct snap *s, *again;
	char err[KF_ERR_MAX], *orig;
	size_t len = 0;

	setenv("KEYFS_MASTER_KEY", m1->text, 1);
	setenv("ENCRYPTION_KEY", k->text, 1);
	m = open_ok(f);
	s = snap_take(m);
	fx_close(f);
	orig = fx_own(kt_read_file_ok(f->state_file, &len));

	setenv("KEYFS_MASTER_KEY", m2->text, 1);
	(void)open_fails(f, err, "wrong master key");
	cr_assert(starts_with(err, KVE_LOAD), "message \"%s\"", err);
	cr_assert(kt_contains(err, "master key"),
		  "the reason does not name the master key: %s", err);
	cr_assert(!kt_contains(err, m1->text) && !kt_contains(err, m2->text) &&
		      !kt_contains(err, k->text),
		  "the message shows a key");
	cr_assert(same_file(f->state_file, orig, len),
		  "the state was changed under a wrong master key");
	/* Its audit key is another one too. */
	fx_expect_alert("audit log %s does not verify", f->audit);

	setenv("KEYFS_MASTER_KEY", m1->text, 1);
	m = open_ok(f);
	again = snap_take(m);
	cr_assert(snap_same(s, again));
}

/* --- the state lock, the sweep, strict import ----------------------------- */

Test(startup, a_refused_second_manager_changes_nothing_in_the_folder)
{
	struct fx *f = fx_new("mgr-second", "development", NULL, NULL);
	char err[KF_ERR_MAX] = "", *archive, *tmp;
	struct kf_manager *m;
	struct stat st;
	int r;

	m = open_ok(f);
	cr_assert(kf_manager_backup(m, &fx_who, "loose", NULL, err) == 0, "%s",
		  err);
	archive = fx_path(f->backups, "loose.json");
	cr_assert(chmod(archive, 0644) == 0);
	/* What a second, refused start must not touch: a looser archive, a
	 * missing master key file, a temporary file of the first. */
	cr_assert(unlink(f->master) == 0);
	tmp = fx_path(f->cfg->state_dir, ".keyring.tmp.0123456789ab");
	kt_write_file(tmp, "in flight\n", 0600);
	r = open_fails(f, err, "second open");
	cr_assert(r == -EBUSY, "second open: %d %s", r, err);
	cr_assert(stat(archive, &st) == 0 && (st.st_mode & 07777) == 0644,
		  "the refused manager changed an archive's mode");
	cr_assert(access(f->master, F_OK) != 0,
		  "the refused manager created a master key");
	cr_assert(access(tmp, F_OK) == 0,
		  "the refused manager removed the first one's temp file");
}

Test(startup, removes_temp_files_of_interrupted_writes)
{
	struct fx *f = fx_new("mgr-sweep", "development", NULL, NULL);
	char *paths[3];

	open_ok(f);
	fx_close(f);
	paths[0] = fx_path(f->cfg->state_dir, ".keyring.tmp.0123456789ab");
	paths[1] = fx_path(f->backups, ".nightly.json.tmp.abcdef012345");
	/* Not one of ours: kept. */
	paths[2] = fx_path(f->backups, ".notes.tmp.txt");
	for (int i = 0; i < 3; i++)
		kt_write_file(paths[i], "x\n", 0600);
	open_ok(f);
	cr_assert(access(paths[0], F_OK) != 0, "state temp file left");
	cr_assert(access(paths[1], F_OK) != 0, "backup temp file left");
	cr_assert(access(paths[2], F_OK) == 0, "a foreign file was removed");
}

/* A rekey killed while writing the master key leaves a copy of it beside
 * master_key_file; in that shared folder only such files go. */
Test(startup, removes_the_master_key_files_temp_files_only)
{
	struct fx *f = fx_new("mgr-sweep-master", "development", NULL, NULL);
	char *dir = strdup(f->master), *slash, *mine, *other;

	open_ok(f);
	fx_close(f);
	cr_assert(dir && (slash = strrchr(dir, '/')));
	*slash = 0;
	cr_assert(asprintf(&mine, "%s/.%s.tmp.0123456789ab", dir, slash + 1) >
		  0);
	other = fx_path(dir, ".other.key.tmp.0123456789ab");
	kt_write_file(mine, "x\n", 0600);
	kt_write_file(other, "x\n", 0600);
	open_ok(f);
	cr_assert(access(mine, F_OK) != 0, "master key temp file left");
	cr_assert(access(other, F_OK) == 0, "another file's was removed");
	free(mine);
	free(dir);
}

Test(startup, import_refuses_a_padded_version_and_an_empty_key)
{
	static const char *const bad[] = {" 3", "3 ", "+3", "0x3", "", "3\n"};
	struct fx *f = fx_new("mgr-import-strict", "development", NULL, NULL);
	struct fx_key *k = fx_key_new();
	char err[KF_ERR_MAX];
	int r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fx_clear_env();
		setenv("ENCRYPTION_KEY", k->text, 1);
		setenv("ENCRYPTION_KEY_VERSION", bad[i], 1);
		r = open_fails(f, err, "a padded ENCRYPTION_KEY_VERSION");
		cr_assert(r == -EINVAL && kt_contains(err, KVE_LOAD) &&
			      kt_contains(err, "ENCRYPTION_KEY_VERSION"),
			  "version #%zu: %d %s", i, r, err);
	}
	fx_clear_env();
	setenv("ENCRYPTION_KEY", "", 1);
	r = open_fails(f, err, "an empty ENCRYPTION_KEY");
	cr_assert(kt_contains(err, KVE_LOAD) && kt_contains(err, "empty"),
		  "empty ENCRYPTION_KEY: %d %s", r, err);
	cr_assert(access(f->state_file, F_OK) != 0,
		  "a keyring was made from an empty ENCRYPTION_KEY");
}

/* --- an audit location it cannot write ------------------------------------ */

/*
 * Read-only: the kernel refuses to remount a file system read-only while a
 * file on it is open for writing (EBUSY), so a running manager's log cannot
 * become read-only under it.  A manager started on a read-only audit
 * location must refuse to start and change nothing.
 */
Test(startup, read_only_audit_log_refuses_start_and_changes_nothing,
     .timeout = 60)
{
	const char *tiny = kt_tmpfs("mgr-ro", "12k");
	struct fx *f =
	    fx_new("mgr-ro", "development", fx_path(tiny, "audit.log"), NULL);
	char err[KF_ERR_MAX] = "", *state, *backups, *now;
	struct kf_manager *m;
	struct snap *s, *again;
	size_t slen = 0;
	int r;

	m = open_ok(f);
	rotate_ok(m, NULL);
	r = mount(NULL, tiny, NULL, MS_REMOUNT | MS_RDONLY, "size=12k");
	cr_assert(r < 0 && errno == EBUSY,
		  "remount read-only under an open audit log: %d (%s)", r,
		  strerror(errno));
	s = snap_take(m);
	fx_close(f);
	state = fx_own(kt_read_file_ok(f->state_file, &slen));
	backups = fx_own(kt_names(f->backups));

	cr_assert(mount(NULL, tiny, NULL, MS_REMOUNT | MS_RDONLY, "size=12k") ==
		      0,
		  "remount ro: %s", strerror(errno));
	(void)open_fails(f, err, "started with a read-only audit log");
	cr_assert(kt_contains(err, "audit log") &&
		      kt_contains(err, "Read-only"),
		  "unclear: %s", err);
	cr_assert(same_file(f->state_file, state, slen), "the state changed");
	now = fx_own(kt_names(f->backups));
	cr_assert_str_eq(now, backups, "backups/ changed");

	cr_assert(mount(NULL, tiny, NULL, MS_REMOUNT, "size=12k") == 0,
		  "remount rw: %s", strerror(errno));
	m = open_ok(f);
	again = snap_take(m);
	cr_assert(snap_same(s, again));
	fx_close(f);
	verify_audit_ok(f);
}
