// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "helpers.h"
#include "env.h"
#include "master.h"

#define ENV "KEYFS_MASTER_KEY"

/* The environment as the test found it, restored in fini. */
static char *saved_env;

static void init(void)
{
	const char *v = getenv(ENV);

	cr_assert(sodium_init() >= 0);
	saved_env = v ? strdup(v) : NULL;
	unsetenv(ENV);
}

static void fini(void)
{
	if (saved_env) {
		setenv(ENV, saved_env, 1);
		sodium_memzero(saved_env, strlen(saved_env));
		free(saved_env);
		saved_env = NULL;
	} else {
		unsetenv(ENV);
	}
}

TestSuite(master, .init = init, .fini = fini);

/* A new key and its text form (with "\n" if nl) in text. */
static void new_key_text(uint8_t key[KF_KEY_BYTES], char text[46], bool nl)
{
	kf_key_generate(key);
	kf_key_encode(key, text);
	if (nl)
		strcat(text, "\n");
}

/* dir/name, written with text and mode, owned by root. */
static char *key_file(const char *dir, const char *name, const char *text,
		      mode_t mode)
{
	char *path = kf_path_join(dir, name);

	cr_assert_not_null(path);
	kt_write_file(path, text, mode);
	return path;
}

static void load_ok(const char *path, const uint8_t want[KF_KEY_BYTES],
		    const char *what)
{
	uint8_t *key = NULL;
	bool created = true;
	char err[KF_ERR_MAX] = "";
	int r = kf_master_load(path, false, &key, &created, err);

	cr_assert_eq(r, 0, "%s: %d %s", what, r, err);
	cr_assert(!created, "%s: reported as created", what);
	cr_assert(memcmp(key, want, KF_KEY_BYTES) == 0,
		  "%s: loaded a different master key", what);
	sodium_free(key);
}

/* Expects failure r with a reason containing both needles. */
static void load_fails(const char *path, bool may_create, int want_r,
		       const char *n1, const char *n2, const char *what)
{
	uint8_t *key = NULL;
	char err[KF_ERR_MAX] = "";
	int r = kf_master_load(path, may_create, &key, NULL, err);

	cr_assert_eq(r, want_r, "%s: returned %d (%s)", what, r, err);
	cr_assert(kt_contains(err, n1), "%s: reason \"%s\" lacks \"%s\"", what,
		  err, n1);
	if (n2)
		cr_assert(kt_contains(err, n2),
			  "%s: reason \"%s\" lacks \"%s\"", what, err, n2);
	cr_assert_null(key, "%s: a key was returned", what);
}

Test(master, env_wins_over_file)
{
	uint8_t fkey[KF_KEY_BYTES], ekey[KF_KEY_BYTES];
	char ftext[46], etext[46];
	char *dir = kt_tmpdir("master-env");
	char *path = key_file(dir, "master.key", "", 0600);

	new_key_text(fkey, ftext, true);
	new_key_text(ekey, etext, false);
	kt_write_file(path, ftext, 0600);
	cr_assert(setenv(ENV, etext, 1) == 0);
	load_ok(path, ekey, "env set");
	/* Also when the file is missing. */
	load_ok("/nonexistent/master.key", ekey, "env, no file");
	/* An empty variable is a mistake, not "unset": refused, clearly. */
	cr_assert(setenv(ENV, "", 1) == 0);
	{
		uint8_t *key = NULL;
		char err[KF_ERR_MAX] = "";
		int r = kf_master_load(path, false, &key, NULL, err);

		cr_assert(r == -EINVAL && strstr(err, "set but empty"),
			  "empty %s: %d %s", ENV, r, err);
	}
	/* The variable left the environment when it was read. */
	cr_assert_null(getenv(ENV), "%s is still in the environment", ENV);
	unsetenv(ENV);
	kf_env_forget();
	load_ok(path, fkey, "env unset");
	sodium_memzero(etext, sizeof(etext));
	sodium_memzero(ftext, sizeof(ftext));
	free(path);
	free(dir);
}

Test(master, bad_env_is_refused_without_fallback)
{
	uint8_t fkey[KF_KEY_BYTES], ekey[KF_KEY_BYTES];
	char ftext[46], etext[46];
	char *dir = kt_tmpdir("master-badenv");
	char *path;
	uint8_t *key = NULL;
	char err[KF_ERR_MAX] = "";

	new_key_text(fkey, ftext, true);
	path = key_file(dir, "master.key", ftext, 0600);
	new_key_text(ekey, etext, false);
	etext[43] = 0; /* 43 characters */
	cr_assert(setenv(ENV, etext, 1) == 0);
	cr_assert_eq(kf_master_load(path, false, &key, NULL, err), -EINVAL);
	cr_assert(kt_contains(err, ENV), "reason \"%s\" lacks the variable",
		  err);
	cr_assert(!kt_contains(err, etext), "reason quotes the key text");
	cr_assert_null(key);
	sodium_memzero(etext, sizeof(etext));
	sodium_memzero(ftext, sizeof(ftext));
	free(path);
	free(dir);
}

Test(master, file_loads_with_or_without_newline)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir = kt_tmpdir("master-file"), *path;

	new_key_text(k, text, true);
	path = key_file(dir, "a.key", text, 0600);
	load_ok(path, k, "with newline");
	free(path);
	new_key_text(k, text, false);
	path = key_file(dir, "b.key", text, 0400);
	load_ok(path, k, "without newline, 0400");
	sodium_memzero(text, sizeof(text));
	free(path);
	free(dir);
}

Test(master, group_or_other_access_is_refused)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir = kt_tmpdir("master-mode"), *path;
	static const mode_t modes[] = {0640, 0604, 0644, 0620, 0601};

	new_key_text(k, text, true);
	path = key_file(dir, "master.key", text, 0600);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		char want[32];

		cr_assert(chmod(path, modes[i]) == 0);
		snprintf(want, sizeof(want), "mode %04o", (unsigned)modes[i]);
		load_fails(path, true, -EPERM, want, path, "loose mode");
	}
	cr_assert(chmod(path, 0640) == 0);
	load_fails(path, true, -EPERM, "readable by group or other", NULL,
		   "0640");
	sodium_memzero(text, sizeof(text));
	free(path);
	free(dir);
}

Test(master, file_not_owned_by_root_is_refused)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir = kt_tmpdir("master-owner"), *path;

	cr_assert_eq(geteuid(), 0, "tests run as root");
	new_key_text(k, text, true);
	path = key_file(dir, "master.key", text, 0600);
	cr_assert(chown(path, 65534, 65534) == 0);
	load_fails(path, true, -EPERM, "owned by uid 65534",
		   "must be owned by root", "nobody's file");
	cr_assert(chown(path, 0, 65534) == 0);
	load_ok(path, k, "root-owned, other group, 0600");
	sodium_memzero(text, sizeof(text));
	free(path);
	free(dir);
}

Test(master, symlink_is_refused)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir = kt_tmpdir("master-link"), *path, *link;

	new_key_text(k, text, true);
	path = key_file(dir, "real.key", text, 0600);
	link = kf_path_join(dir, "master.key");
	cr_assert(symlink(path, link) == 0);
	load_fails(link, true, -ELOOP, "symbolic link", link, "symlink");
	/* may_create must not write through or replace the link. */
	load_ok(path, k, "link target unchanged");
	sodium_memzero(text, sizeof(text));
	free(link);
	free(path);
	free(dir);
}

/*
 * A Kubernetes Secret volume, as the kubelet writes it, in a new folder:
 * DIR/..2026_12_03_10_00_00.123/master.key (the key, `mode`),
 * DIR/..data -> ..2026_12_03_10_00_00.123, DIR/master.key ->
 * ..data/master.key.  Returns DIR/master.key; *ret_dir gets DIR.
 */
#define SECRET_TS "..2026_12_03_10_00_00.123"

static char *secret_volume(const char *tag, const char *text, mode_t mode,
			   char **ret_dir)
{
	char *dir = kt_tmpdir(tag), *ts, *file, *link;

	cr_assert(asprintf(&ts, "%s/%s", dir, SECRET_TS) > 0);
	cr_assert(mkdir(ts, 0755) == 0 && chmod(ts, 0755) == 0);
	file = key_file(ts, "master.key", text, mode);
	cr_assert(chmod(file, mode) == 0);
	link = kf_path_join(dir, "..data");
	cr_assert(symlink(SECRET_TS, link) == 0);
	free(link);
	link = kf_path_join(dir, "master.key");
	cr_assert(symlink("..data/master.key", link) == 0);
	free(file);
	free(ts);
	*ret_dir = dir;
	return link;
}

Test(master, kubernetes_secret_layout_is_followed)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir, *path;

	cr_assert_eq(geteuid(), 0, "tests run as root");
	new_key_text(k, text, true);
	path = secret_volume("master-secret", text, 0400, &dir);
	load_ok(path, k, "Secret volume, defaultMode 0400");
	/* A Secret volume's root is a sticky, world-writable tmpfs. */
	cr_assert(chmod(dir, 01777) == 0);
	load_ok(path, k, "Secret volume, root 1777");
	sodium_memzero(text, sizeof(text));
	free(path);
	free(dir);
}

Test(master, secret_layout_keeps_the_file_rules)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir, *path, *file;

	new_key_text(k, text, true);
	path = secret_volume("master-secret-mode", text, 0440, &dir);
	cr_assert(asprintf(&file, "%s/%s/master.key", dir, SECRET_TS) > 0);
	/* With fsGroup the kubelet adds group read: refused. */
	load_fails(path, true, -EPERM, "mode 0440",
		   "readable by group or other", "group-readable target");
	cr_assert(chmod(file, 0400) == 0);
	cr_assert(chown(file, 65534, 0) == 0);
	load_fails(path, true, -EPERM, "owned by uid 65534",
		   "must be owned by root", "target owned by nobody");
	/* Nothing was created through the link or beside it. */
	{
		struct stat st;

		cr_assert(lstat(path, &st) == 0 && S_ISLNK(st.st_mode),
			  "the link was replaced");
	}
	sodium_memzero(text, sizeof(text));
	free(file);
	free(path);
	free(dir);
}

Test(master, link_owned_by_another_user_is_refused)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir, *path, *data;

	new_key_text(k, text, true);
	path = secret_volume("master-link-owner", text, 0400, &dir);
	data = kf_path_join(dir, "..data");
	cr_assert(lchown(data, 65534, 65534) == 0);
	load_fails(path, true, -EPERM,
		   "symbolic link ..data is owned by uid 65534",
		   "must be owned by root", "nobody's ..data");
	cr_assert(lchown(data, 0, 0) == 0);
	cr_assert(lchown(path, 1001, 0) == 0);
	load_fails(path, true, -EPERM,
		   "symbolic link master.key is owned by uid 1001", path,
		   "uid 1001's master.key");
	cr_assert(lchown(path, 0, 0) == 0);
	load_ok(path, k, "both root's again");
	sodium_memzero(text, sizeof(text));
	free(data);
	free(path);
	free(dir);
}

Test(master, link_leaving_the_folder_is_refused)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir = kt_tmpdir("master-link-out"), *sub, *path, *link;

	/* A root-owned 0400 key one level up, reached with "..". */
	new_key_text(k, text, true);
	path = key_file(dir, "outside.key", text, 0400);
	cr_assert(asprintf(&sub, "%s/secret", dir) > 0);
	cr_assert(mkdir(sub, 0755) == 0);
	link = kf_path_join(sub, "master.key");
	cr_assert(symlink("../outside.key", link) == 0);
	load_fails(link, true, -ELOOP, "climbs out with \"..\"", link,
		   "link with ..");
	/* Also hidden in the middle of a chain, and absolute. */
	cr_assert(unlink(link) == 0);
	cr_assert(symlink("..data/master.key", link) == 0);
	free(path);
	path = kf_path_join(sub, "..data");
	cr_assert(symlink("./../", path) == 0);
	load_fails(link, true, -ELOOP, "symbolic link ..data climbs out", NULL,
		   "..data -> ../");
	cr_assert(unlink(path) == 0);
	cr_assert(symlink(dir, path) == 0);
	load_fails(link, true, -ELOOP, "points to an absolute path", sub,
		   "..data -> absolute");
	/* A link to a missing file is refused, never created through. */
	cr_assert(unlink(path) == 0);
	cr_assert(mkdir(path, 0755) == 0);
	load_fails(link, true, -ENOENT, "..data/master.key", "missing",
		   "dangling");
	cr_assert(access(path, F_OK) == 0);
	{
		char *made = kf_path_join(path, "master.key");

		cr_assert(access(made, F_OK) < 0, "created through a link");
		free(made);
	}
	sodium_memzero(text, sizeof(text));
	free(link);
	free(path);
	free(sub);
	free(dir);
}

Test(master, link_through_an_open_folder_is_refused)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir, *path, *ts;

	new_key_text(k, text, true);
	path = secret_volume("master-link-dir", text, 0400, &dir);
	cr_assert(asprintf(&ts, "%s/%s", dir, SECRET_TS) > 0);
	cr_assert(chmod(ts, 0777) == 0);
	load_fails(path, true, -EPERM, "folder " SECRET_TS " is writable",
		   "not sticky", "0777 timestamped folder");
	cr_assert(chmod(ts, 0755) == 0);
	cr_assert(chown(ts, 1001, 0) == 0);
	load_fails(path, true, -EPERM, "owned by uid 1001", SECRET_TS,
		   "uid 1001's folder");
	cr_assert(chown(ts, 0, 0) == 0);
	cr_assert(chmod(dir, 0757) == 0);
	load_fails(path, true, -EPERM, "writable by group or other", dir,
		   "the volume's folder 0757");
	cr_assert(chmod(dir, 0700) == 0);
	load_ok(path, k, "restored");
	sodium_memzero(text, sizeof(text));
	free(ts);
	free(path);
	free(dir);
}

Test(master, link_loop_is_refused)
{
	char *dir = kt_tmpdir("master-link-loop"), *a, *b;

	a = kf_path_join(dir, "master.key");
	b = kf_path_join(dir, "b");
	cr_assert(symlink("b", a) == 0 && symlink("master.key", b) == 0);
	load_fails(a, true, -ELOOP, "too many symbolic links", NULL, "loop");
	free(a);
	free(b);
	free(dir);
}

static char *other_fs_dir;

static void other_fs_cleanup(void)
{
	if (other_fs_dir) {
		kt_runf(NULL, NULL, "umount -l '%s'", other_fs_dir);
		free(other_fs_dir);
		other_fs_dir = NULL;
	}
}

Test(master, link_to_another_file_system_is_refused, .fini = other_fs_cleanup)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46];
	char *dir = kt_tmpdir("master-link-fs"), *path, *link;

	other_fs_dir = kf_path_join(dir, "other");
	cr_assert(mkdir(other_fs_dir, 0755) == 0);
	cr_assert_eq(kt_runf(NULL, NULL,
			     "mount -t tmpfs -o size=16k,mode=0755 tmpfs '%s'",
			     other_fs_dir),
		     0, "cannot mount a tmpfs");
	new_key_text(k, text, true);
	path = key_file(other_fs_dir, "master.key", text, 0400);
	link = kf_path_join(dir, "master.key");
	cr_assert(symlink("other/master.key", link) == 0);
	load_fails(link, true, -EPERM, "folder other is on another file system",
		   NULL, "tmpfs under the folder");
	load_ok(path, k, "the file itself, named plainly");
	sodium_memzero(text, sizeof(text));
	free(link);
	free(path);
	free(dir);
}

Test(master, non_regular_file_is_refused)
{
	char *dir = kt_tmpdir("master-dir"), *path = kf_path_join(dir, "k");

	cr_assert(mkdir(path, 0700) == 0);
	load_fails(path, true, -EINVAL, "not a regular file", path,
		   "directory");
	free(path);
	free(dir);
}

Test(master, bad_content_is_refused)
{
	uint8_t k[KF_KEY_BYTES];
	char text[46], bad[128];
	char *dir = kt_tmpdir("master-bad"), *path;

	new_key_text(k, text, false);
	path = kf_path_join(dir, "master.key");

	kt_write_file(path, "", 0600);
	load_fails(path, false, -EINVAL, "master key file ", path, "empty");

	snprintf(bad, sizeof(bad), "%.43s\n", text);
	kt_write_file(path, bad, 0600);
	load_fails(path, false, -EINVAL, "master key file ", "got 43", "short");

	snprintf(bad, sizeof(bad), "%s\n\n", text);
	kt_write_file(path, bad, 0600);
	load_fails(path, false, -EINVAL, "master key file ", path,
		   "two newlines");

	snprintf(bad, sizeof(bad), " %s", text);
	kt_write_file(path, bad, 0600);
	load_fails(path, false, -EINVAL, "master key file ", path,
		   "leading space");

	snprintf(bad, sizeof(bad), "%s%s", text, text);
	kt_write_file(path, bad, 0600);
	load_fails(path, false, -EINVAL, "master key file ", path, "doubled");

	memcpy(bad, text, 45);
	bad[7] = '+'; /* standard, not URL-safe, base64 */
	kt_write_file(path, bad, 0600);
	load_fails(path, false, -EINVAL, "master key file ", path,
		   "bad alphabet");

	/* Invalid content must never be replaced, even with may_create. */
	load_fails(path, true, -EINVAL, "master key file ", path,
		   "bad, may_create");
	{
		char *now = kt_read_file(path, NULL);

		cr_assert(now && !strcmp(now, bad), "bad file was replaced");
		free(now);
	}
	sodium_memzero(text, sizeof(text));
	sodium_memzero(bad, sizeof(bad));
	free(path);
	free(dir);
}

Test(master, missing_file_is_created_in_development)
{
	char *root = kt_tmpdir("master-create");
	char *sub, *path, *text;
	uint8_t *key = NULL, back[KF_KEY_BYTES];
	bool created = false;
	char err[KF_ERR_MAX] = "";
	struct stat st;
	size_t len;

	cr_assert(asprintf(&sub, "%s/etc/keyfs", root) > 0);
	path = kf_path_join(sub, "master.key");
	cr_assert(kf_master_load(path, true, &key, &created, err) == 0, "%s",
		  err);
	cr_assert(created, "created not reported");
	cr_assert(stat(sub, &st) == 0 && S_ISDIR(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0700, "parent mode %o",
		     (unsigned)(st.st_mode & 07777));
	cr_assert(stat(path, &st) == 0 && S_ISREG(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0600, "file mode %o",
		     (unsigned)(st.st_mode & 07777));
	cr_assert_eq(st.st_uid, 0);
	text = kt_read_file(path, &len);
	cr_assert_eq(len, 45);
	cr_assert_eq(text[44], '\n');
	cr_assert(kf_key_decode(text, 44, back, NULL) == 0,
		  "created file is not a valid key");
	cr_assert(memcmp(back, key, KF_KEY_BYTES) == 0,
		  "returned key differs from the file's");
	sodium_memzero(text, len);
	free(text);
	sodium_free(key);

	/* The next load reads it back and creates nothing. */
	created = true;
	cr_assert(kf_master_load(path, true, &key, &created, err) == 0, "%s",
		  err);
	cr_assert(!created);
	cr_assert(memcmp(back, key, KF_KEY_BYTES) == 0,
		  "second load gave another key");
	sodium_free(key);
	sodium_memzero(back, sizeof(back));
	free(path);
	free(sub);
	free(root);
}

Test(master, creation_leaves_existing_parent_mode_alone)
{
	char *root = kt_tmpdir("master-parent"), *path;
	uint8_t *key = NULL;
	bool created = false;
	struct stat st;

	cr_assert(chmod(root, 0755) == 0);
	path = kf_path_join(root, "master.key");
	cr_assert(kf_master_load(path, true, &key, &created, NULL) == 0);
	cr_assert(created);
	cr_assert(stat(root, &st) == 0);
	cr_assert_eq(st.st_mode & 07777, 0755, "existing parent tightened");
	sodium_free(key);
	free(path);
	free(root);
}

Test(master, missing_file_is_refused_in_production)
{
	char *root = kt_tmpdir("master-missing"), *path, want[PATH_MAX + 64];
	struct stat st;

	path = kf_path_join(root, "master.key");
	snprintf(want, sizeof(want),
		 "no master key: set KEYFS_MASTER_KEY or create %s", path);
	load_fails(path, false, -ENOENT, want, NULL, "missing");
	cr_assert(stat(path, &st) < 0 && errno == ENOENT, "file was created");
	free(path);
	free(root);
}

Test(master, subkeys_differ_per_id_and_are_deterministic)
{
	uint8_t m[KF_KEY_BYTES], s[4][32], again[32];

	kf_key_generate(m);
	kf_master_subkey(m, KF_SUBKEY_STATE, s[1]);
	kf_master_subkey(m, KF_SUBKEY_BACKUP, s[2]);
	kf_master_subkey(m, KF_SUBKEY_AUDIT, s[3]);
	cr_assert(memcmp(s[1], s[2], 32) != 0, "state == backup subkey");
	cr_assert(memcmp(s[1], s[3], 32) != 0, "state == audit subkey");
	cr_assert(memcmp(s[2], s[3], 32) != 0, "backup == audit subkey");
	for (int id = 1; id <= 3; id++) {
		cr_assert(memcmp(s[id], m, 32) != 0, "subkey %d is the master",
			  id);
		kf_master_subkey(m, (enum kf_subkey)id, again);
		cr_assert(memcmp(s[id], again, 32) == 0,
			  "subkey %d not deterministic", id);
	}
	sodium_memzero(m, sizeof(m));
	sodium_memzero(s, sizeof(s));
	sodium_memzero(again, sizeof(again));
}

Test(master, different_masters_give_different_subkeys)
{
	uint8_t m1[KF_KEY_BYTES], m2[KF_KEY_BYTES], a[32], b[32];

	kf_key_generate(m1);
	memcpy(m2, m1, sizeof(m2));
	m2[31] ^= 1;
	for (int id = 1; id <= 3; id++) {
		kf_master_subkey(m1, (enum kf_subkey)id, a);
		kf_master_subkey(m2, (enum kf_subkey)id, b);
		cr_assert(memcmp(a, b, 32) != 0,
			  "subkey %d equal for two masters", id);
	}
	sodium_memzero(m1, sizeof(m1));
	sodium_memzero(m2, sizeof(m2));
	sodium_memzero(a, sizeof(a));
	sodium_memzero(b, sizeof(b));
}

/*
 * kf_master_load_file (keyfs rekey's new key): the file only, with the
 * file's checks, whatever KEYFS_MASTER_KEY says.
 */
Test(master, load_file_ignores_the_environment_and_checks_the_file)
{
	char *dir = kt_tmpdir("master-file"), text[46], env_text[46];
	uint8_t want[KF_KEY_BYTES], other[KF_KEY_BYTES], *got = NULL;
	char err[KF_ERR_MAX] = "", *path, *loose;

	new_key_text(want, text, true);
	new_key_text(other, env_text, false);
	cr_assert(setenv(ENV, env_text, 1) == 0);
	path = key_file(dir, "new.key", text, 0600);
	cr_assert(kf_master_load_file(path, NULL, &got, err) == 0, "%s", err);
	cr_assert(memcmp(got, want, KF_KEY_BYTES) == 0,
		  "the file's key was not the one loaded");
	sodium_free(got);
	got = NULL;
	loose = key_file(dir, "loose.key", text, 0640);
	cr_assert(kf_master_load_file(loose, NULL, &got, err) == -EPERM);
	cr_assert(kt_contains(err, "readable by group or other"), "%s", err);
	cr_assert(kf_master_load_file("/nonexistent/k", NULL, &got, err) ==
		  -ENOENT);
	cr_assert_null(got);
	unsetenv(ENV);
	sodium_memzero(text, sizeof(text));
	sodium_memzero(env_text, sizeof(env_text));
	free(loose);
	free(path);
	free(dir);
}

/* A master key's fingerprint: 16 hex digits, its own personal. */
Test(master, fingerprint_is_stable_and_not_the_data_key_fingerprint)
{
	uint8_t k[KF_KEY_BYTES], k2[KF_KEY_BYTES];
	char a[KF_MASTER_FPR_LEN + 1], b[KF_MASTER_FPR_LEN + 1];
	char c[KF_MASTER_FPR_LEN + 1], d[KF_KEY_FPR_LEN + 1];

	memset(k, 'k', sizeof(k));
	memcpy(k2, k, sizeof(k));
	k2[31] ^= 1;
	kf_master_fingerprint(k, a);
	kf_master_fingerprint(k, b);
	kf_master_fingerprint(k2, c);
	kf_key_fingerprint(k, d);
	cr_assert(strlen(a) == 16 && strspn(a, "0123456789abcdef") == 16, "%s",
		  a);
	cr_assert_str_eq(a, b);
	cr_assert_str_neq(a, c);
	cr_assert_str_neq(a, d,
			  "the personal keyfs.mfpr.v1 made no difference");
}
