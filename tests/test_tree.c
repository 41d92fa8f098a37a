// SPDX-License-Identifier: MIT
/*
 * The mounted tree, against the real keyfs binary (DESIGN.md §1): its
 * names, sizes, modes and owners, the keys and the status it serves, and
 * that it is read-only, for root too.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <sodium.h>

#include "mount_fixture.h"

TestSuite(tree, .fini = mt_fini);

/* --- the tree as root ----------------------------------------------------- */

Test(tree, root_lists_exactly_the_tree, .timeout = 30)
{
	struct kt_mount *m = start("ls", "retain_versions = 3\n");
	char path[64];
	uint32_t v = read_version(m);

	expect_listing(m, "",
		       "audit.log backups control current derived keys "
		       "metrics status version versions");
	expect_listing(m, "derived", "billing phi pii");
	expect_listing(m, "keys", "billing phi pii");
	expect_listing(m, "control",
		       "audit-rotate backup prune restore retire rotate");
	snprintf(path, sizeof(path), "%" PRIu32, v);
	expect_listing(m, "versions", path);
	snprintf(path, sizeof(path), "versions/%" PRIu32, v);
	expect_listing(m, path, "derived key");
	snprintf(path, sizeof(path), "versions/%" PRIu32 "/derived", v);
	expect_listing(m, path, "billing phi pii");

	rotate_ok(m);
	expect_listing(m, "",
		       "audit.log backups control current derived keys "
		       "metrics previous status version versions");
	rotate_ok(m);
	rotate_ok(m);
	/* retain_versions = 3: the current version and two older ones. */
	snprintf(path, sizeof(path), "%" PRIu32 " %" PRIu32 " %" PRIu32, v + 1,
		 v + 2, v + 3);
	expect_listing(m, "versions", path);
	snprintf(path, sizeof(path), "versions/%" PRIu32 "/derived", v + 1);
	expect_listing(m, path, "billing phi pii");
	snprintf(path, sizeof(path), "versions/%" PRIu32, v);
	{
		char *p = kt_mpath(m, path);
		struct stat st;

		errno = 0;
		cr_expect(stat(p, &st) < 0 && errno == ENOENT,
			  "dropped version %s still present (%s)", path,
			  strerror(errno));
		free(p);
	}
}

/* Every regular file under rel (except control files): stat == read. */
static unsigned check_sizes(struct kt_mount *m, const char *rel)
{
	char *dpath = kt_mpath(m, rel);
	DIR *dir = opendir(dpath);
	struct dirent *d;
	unsigned files = 0;

	cr_assert(dir, "opendir %s: %s", rel, strerror(errno));
	while ((d = readdir(dir))) {
		char sub[PATH_MAX], *full;
		struct stat st;
		size_t len = 0;
		char *text;

		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..") ||
		    !strcmp(rel, "control"))
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "",
			 d->d_name);
		full = kt_mpath(m, sub);
		cr_assert(lstat(full, &st) == 0, "stat %s: %s", sub,
			  strerror(errno));
		free(full);
		if (S_ISDIR(st.st_mode)) {
			files += check_sizes(m, sub);
			continue;
		}
		text = kt_mread(m, sub, &len);
		cr_assert(text, "read %s: %s", sub, strerror(errno));
		free_secret(text, len);
		cr_expect((size_t)st.st_size == len,
			  "%s: stat says %lld bytes, read gave %zu", sub,
			  (long long)st.st_size, len);
		files++;
	}
	closedir(dir);
	free(dpath);
	return files;
}

Test(tree, sizes_equal_bytes_read, .timeout = 30)
{
	struct kt_mount *m = start("sizes", NULL);
	char want[32];
	struct stat st;
	char *p;
	uint32_t v;

	rotate_ok(m); /* previous, two versions, a backup archive */
	v = read_version(m);
	/* current, previous, version, status, audit.log, 3 derived,
	 * 2 x (key + 3 derived), at least one backup. */
	cr_expect(check_sizes(m, "") >= 17, "fewer files than the tree has");

	p = kt_mpath(m, "current");
	cr_assert(stat(p, &st) == 0);
	cr_expect(st.st_size == TEXT_LEN, "current is not 44 bytes");
	free(p);
	p = kt_mpath(m, "version");
	cr_assert(stat(p, &st) == 0);
	snprintf(want, sizeof(want), "%" PRIu32 "\n", v);
	cr_expect(st.st_size == (off_t)strlen(want), "version size %lld",
		  (long long)st.st_size);
	free(p);
	json_decref(read_status(m)); /* one JSON line + "\n" */
}

struct want_node {
	const char *path; /* %u = the current version */
	bool dir;
	mode_t mode;
	uid_t uid;
	gid_t gid;
};

static void check_node(struct kt_mount *m, const char *rel, bool dir,
		       mode_t mode, uid_t uid, gid_t gid)
{
	char *p = kt_mpath(m, rel);
	struct stat st;

	cr_assert(lstat(p, &st) == 0, "stat %s: %s", rel, strerror(errno));
	free(p);
	cr_expect(dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode),
		  "%s: wrong file type", rel);
	cr_expect((st.st_mode & 07777) == mode && st.st_uid == uid &&
		      st.st_gid == gid,
		  "%s: %04o %u:%u, want %04o %u:%u", rel,
		  (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
		  (unsigned)st.st_gid, (unsigned)mode, (unsigned)uid,
		  (unsigned)gid);
}

static void check_nodes(struct kt_mount *m, const struct want_node *w, size_t n,
			uint32_t v)
{
	for (size_t i = 0; i < n; i++) {
		char rel[128];

		snprintf(rel, sizeof(rel), w[i].path, (unsigned)v);
		check_node(m, rel, w[i].dir, w[i].mode, w[i].uid, w[i].gid);
	}
}

/* Every entry of backups/ (there must be one): mode, owner, group. */
static void check_backup_entries(struct kt_mount *m, mode_t mode, uid_t uid,
				 gid_t gid)
{
	char *names = listing(m, "backups"), *save = NULL;
	unsigned n = 0;

	for (char *w = strtok_r(names, " ", &save); w;
	     w = strtok_r(NULL, " ", &save), n++) {
		char rel[PATH_MAX];

		snprintf(rel, sizeof(rel), "backups/%s", w);
		check_node(m, rel, false, mode, uid, gid);
	}
	cr_expect(n > 0, "no backup archive listed after a rotation");
	free(names);
}

Test(tree, modes_and_owners_follow_config, .timeout = 30)
{
	static const struct want_node common[] = {
	    {"", true, 0555, 0, 0},
	    {"version", false, 0444, 0, 0},
	    {"derived", true, 0555, 0, 0},
	    {"derived/phi", false, 0440, 0, 2001},
	    {"derived/pii", false, 0400, 0, 0},
	    {"derived/billing", false, 0400, 1002, 2002},
	    {"keys", true, 0555, 0, 0},
	    {"keys/phi", false, 0440, 0, 2001},
	    {"keys/pii", false, 0400, 0, 0},
	    {"keys/billing", false, 0400, 1002, 2002},
	    {"versions", true, 0555, 0, 0},
	    {"versions/%u", true, 0555, 0, 0},
	    {"versions/%u/derived", true, 0555, 0, 0},
	    {"versions/%u/derived/phi", false, 0440, 0, 2001},
	    {"versions/%u/derived/pii", false, 0400, 0, 0},
	    {"versions/%u/derived/billing", false, 0400, 1002, 2002},
	    {"control", true, 0700, 0, 0},
	    {"control/rotate", false, 0600, 0, 0},
	    {"control/retire", false, 0600, 0, 0},
	    {"control/backup", false, 0600, 0, 0},
	    {"control/restore", false, 0600, 0, 0},
	    {"control/prune", false, 0600, 0, 0},
	    {"control/audit-rotate", false, 0600, 0, 0},
	};
	static const struct want_node as_brief[] = {
	    {"current", false, 0400, 0, 0},
	    {"previous", false, 0400, 0, 0},
	    {"versions/%u/key", false, 0400, 0, 0},
	    {"status", false, 0444, 0, 0},
	    {"backups", true, 0550, 0, 2003},
	    {"audit.log", false, 0440, 0, 2004},
	};
	/* Non-default keys/status/backups/audit: proves they are read. */
	static const char other[] = "[access]\n"
				    "keys = 1003:2010 0440\n"
				    "status = 0:2011 0440\n"
				    "backups = 0:2012 0400\n"
				    "audit = 1004:0 0400\n"
				    "[purpose phi]\n"
				    "access = 0:2001 0440\n"
				    "[purpose billing]\n"
				    "access = 1002:2002 0400\n";
	static const struct want_node as_other[] = {
	    {"current", false, 0440, 1003, 2010},
	    {"previous", false, 0440, 1003, 2010},
	    {"versions/%u/key", false, 0440, 1003, 2010},
	    {"status", false, 0440, 0, 2011},
	    {"version", false, 0440, 0, 2011},
	    {"backups", true, 0500, 0, 2012},
	    {"audit.log", false, 0400, 1004, 0},
	};
	struct kt_mount *m = start("modes", NULL), *o = mount_new();
	uint32_t v;

	rotate_ok(m);
	v = read_version(m);
	check_nodes(m, common, sizeof(common) / sizeof(common[0]), v);
	check_nodes(m, common, sizeof(common) / sizeof(common[0]), v - 1);
	check_nodes(m, as_brief, sizeof(as_brief) / sizeof(as_brief[0]), v);
	check_backup_entries(m, 0440, 0, 2003);

	kt_mount_config(o, "modes2", PURPOSES_LINE, other);
	start_ok(o);
	rotate_ok(o);
	v = read_version(o);
	check_nodes(o, as_other, sizeof(as_other) / sizeof(as_other[0]), v);
	check_backup_entries(o, 0400, 0, 2012);
}

/* --- contents ------------------------------------------------------------- */

/* `keyfs derive P < MNT/current` equals derived/P (compared in C). */
static void check_cli_derive(struct kt_mount *m, const char *purpose)
{
	char rel[64], *out = NULL;
	uint8_t want[KEY_LEN], got[KEY_LEN];
	char err[KF_ERR_MAX] = "";
	int r;

	r = kt_runf(&out, NULL, "'%s' derive %s < '%s/current'", kt_keyfs(),
		    purpose, m->mnt);
	cr_assert(r == 0, "keyfs derive %s exited %d", purpose, r);
	cr_assert(strlen(out) == TEXT_LEN + 1 && out[TEXT_LEN] == '\n',
		  "keyfs derive %s did not print one key line", purpose);
	r = kf_key_decode(out, TEXT_LEN, want, err);
	free_secret(out, TEXT_LEN + 1);
	cr_assert(r == 0, "keyfs derive output does not validate: %s", err);
	snprintf(rel, sizeof(rel), "derived/%s", purpose);
	read_key(m, rel, got);
	cr_expect(sodium_memcmp(got, want, KEY_LEN) == 0,
		  "derived/%s differs from keyfs derive %s of current", purpose,
		  purpose);
	sodium_memzero(want, sizeof(want));
	sodium_memzero(got, sizeof(got));
}

Test(tree, key_files_hold_current_previous_and_derived_keys, .timeout = 30)
{
	struct kt_mount *m = start("contents", NULL);
	uint8_t *first = mt_secret(KEY_LEN), *cur = mt_secret(KEY_LEN),
		*prev = mt_secret(KEY_LEN), *k = mt_secret(KEY_LEN),
		*d = mt_secret(KEY_LEN), *want = mt_secret(KEY_LEN);
	char rel[96];
	uint32_t v;

	read_key(m, "current", first);
	for (size_t i = 0; i < N_PURPOSES; i++)
		check_cli_derive(m, purposes[i]);
	rotate_ok(m);
	v = read_version(m);
	read_key(m, "current", cur);
	read_key(m, "previous", prev);
	cr_expect(sodium_memcmp(prev, first, KEY_LEN) == 0,
		  "previous is not the key current held before the rotation");
	cr_expect(sodium_memcmp(cur, first, KEY_LEN) != 0,
		  "current did not change on rotation");
	for (size_t i = 0; i < N_PURPOSES; i++)
		check_cli_derive(m, purposes[i]);

	snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key", v);
	read_key(m, rel, k);
	cr_expect(sodium_memcmp(k, cur, KEY_LEN) == 0,
		  "versions/N/key differs from current");
	snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key", v - 1);
	read_key(m, rel, k);
	cr_expect(sodium_memcmp(k, prev, KEY_LEN) == 0,
		  "versions/N-1/key differs from previous");
	for (size_t i = 0; i < N_PURPOSES; i++) {
		for (uint32_t ver = v - 1; ver <= v; ver++) {
			snprintf(rel, sizeof(rel),
				 "versions/%" PRIu32 "/derived/%s", ver,
				 purposes[i]);
			read_key(m, rel, d);
			derive(ver == v ? cur : prev, purposes[i], want);
			cr_expect(sodium_memcmp(d, want, KEY_LEN) == 0,
				  "%s is not derive(versions/%" PRIu32
				  "/key, %s)",
				  rel, ver, purposes[i]);
		}
	}
}

/* status agrees with version, current and the configuration. */
static void check_status(struct kt_mount *m, const char *read_mode)
{
	json_t *s = read_status(m), *ps;
	uint8_t cur[KEY_LEN];
	char fpr[KF_KEY_FPR_LEN + 1];
	uint32_t v = read_version(m);
	const char *got;
	bool has_prev;

	cr_expect(jint(s, "version") == v, "status version %lld, version %u",
		  (long long)jint(s, "version"), (unsigned)v);
	cr_expect(json_is_true(json_object_get(s, "has_current_key")),
		  "has_current_key is not true");
	has_prev = json_is_true(json_object_get(s, "has_previous_key"));
	cr_expect(has_prev == (v > 1) &&
		      json_is_boolean(json_object_get(s, "has_previous_key")),
		  "has_previous_key wrong at version %u", (unsigned)v);
	if (v > 1)
		cr_expect(jint(s, "previous_version") == v - 1,
			  "previous_version is not %u", (unsigned)v - 1);
	else
		cr_expect(json_is_null(json_object_get(s, "previous_version")),
			  "previous_version is not null without a previous");
	ps = json_object_get(s, "purposes");
	cr_assert(json_is_array(ps) && json_array_size(ps) == N_PURPOSES,
		  "purposes is not the configured list");
	for (size_t i = 0; i < N_PURPOSES; i++) {
		got = json_string_value(json_array_get(ps, i));
		cr_expect(got && strcmp(got, purposes[i]) == 0,
			  "purposes[%zu] is not %s", i, purposes[i]);
	}
	got = json_string_value(json_object_get(s, "read_mode"));
	cr_expect(got && strcmp(got, read_mode) == 0, "read_mode is not %s",
		  read_mode);
	read_key(m, "current", cur);
	kf_key_fingerprint(cur, fpr);
	sodium_memzero(cur, sizeof(cur));
	got = json_string_value(json_object_get(s, "fingerprint"));
	cr_expect(got && strcmp(got, fpr) == 0,
		  "status fingerprint is not that of current");
	json_decref(s);
}

Test(tree, version_and_status_agree, .timeout = 30)
{
	struct kt_mount *m = start("status", NULL);
	char *text;

	check_status(m, "audited");
	rotate_ok(m);
	check_status(m, "audited");
	rotate_ok(m);
	check_status(m, "audited");
	text = kt_mread(m, "status", NULL);
	cr_assert(text);
	cr_expect(!strstr(text, "\"key\""), "status carries a key field");
	free(text);
}

/* --- read-only ------------------------------------------------------------ */

/* mode, owner, size of every node, and the names, as one text. */
static void tree_text(struct kt_mount *m, const char *rel, char **acc)
{
	char *dpath = kt_mpath(m, rel), *line, *grown;
	DIR *dir = opendir(dpath);
	struct dirent *d;

	cr_assert(dir, "opendir %s: %s", rel, strerror(errno));
	while ((d = readdir(dir))) {
		char sub[PATH_MAX], *full;
		struct stat st;

		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "",
			 d->d_name);
		full = kt_mpath(m, sub);
		cr_assert(lstat(full, &st) == 0, "stat %s", sub);
		free(full);
		/* audit.log grows with every audited open. */
		cr_assert(
		    asprintf(&line, "%s %o %u:%u %lld %lld\n", sub,
			     (unsigned)st.st_mode, (unsigned)st.st_uid,
			     (unsigned)st.st_gid,
			     strcmp(sub, "audit.log") ? (long long)st.st_size
						      : 0LL,
			     strcmp(sub, "audit.log") ? (long long)st.st_mtime
						      : 0LL) > 0);
		cr_assert(asprintf(&grown, "%s%s", *acc, line) > 0);
		free(*acc);
		free(line);
		*acc = grown;
		if (S_ISDIR(st.st_mode))
			tree_text(m, sub, acc);
	}
	closedir(dir);
	free(dpath);
}

static char *tree_snapshot(struct kt_mount *m)
{
	char *acc = strdup("");

	cr_assert(acc);
	tree_text(m, "", &acc);
	return acc;
}

static bool refused_errno(int e)
{
	return e == EACCES || e == EPERM || e == EROFS;
}

#define EXPECT_REFUSED(call, what)                                             \
	do {                                                                   \
		int rc_;                                                       \
		errno = 0;                                                     \
		rc_ = (call);                                                  \
		cr_expect(rc_ < 0 && refused_errno(errno),                     \
			  "%s: want EACCES/EPERM/EROFS, got %d (%s)", what,    \
			  rc_, strerror(errno));                               \
	} while (0)

static int try_open(struct kt_mount *m, const char *rel, int flags)
{
	char *p = kt_mpath(m, rel);
	int fd = open(p, flags | O_CLOEXEC, 0644), e = errno;

	free(p);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	errno = e;
	return -1;
}

Test(tree, is_read_only_for_root, .timeout = 30)
{
	struct kt_mount *m = start("ro", NULL);
	uint8_t *before = mt_secret(KEY_LEN), *after = mt_secret(KEY_LEN);
	struct timeval tv[2] = {{1000000000, 0}, {1000000000, 0}};
	char *snap1, *snap2, vdir[64], vkey[80];
	uint32_t v;

	rotate_ok(m);
	v = read_version(m);
	snprintf(vdir, sizeof(vdir), "%s/versions/%" PRIu32, m->mnt, v);
	snprintf(vkey, sizeof(vkey), "versions/%" PRIu32 "/key", v);
	read_key(m, "current", before);
	snap1 = tree_snapshot(m);

#define P(rel) kt_mpath(m, rel)
	{
		char *cur = P("current"), *prev = P("previous"),
		     *phi = P("derived/phi"), *der = P("derived"),
		     *newd = P("newdir"), *dnew = P("derived/newpurpose"),
		     *cur2 = P("current2"), *pii = P("derived/pii"),
		     *rot = P("control/rotate"), *ver = P("version"),
		     *vers = P("versions"), *ctl = P("control");

		EXPECT_REFUSED(try_open(m, "newfile", O_CREAT | O_WRONLY),
			       "create newfile");
		EXPECT_REFUSED(try_open(m, "derived/x", O_CREAT | O_RDWR),
			       "create derived/x");
		EXPECT_REFUSED(
		    try_open(m, "current2", O_CREAT | O_EXCL | O_WRONLY),
		    "create O_EXCL current2");
		EXPECT_REFUSED(mkdir(newd, 0755), "mkdir newdir");
		EXPECT_REFUSED(mkdir(dnew, 0755), "mkdir derived/newpurpose");
		EXPECT_REFUSED(unlink(cur), "unlink current");
		EXPECT_REFUSED(unlink(prev), "unlink previous");
		EXPECT_REFUSED(unlink(phi), "unlink derived/phi");
		EXPECT_REFUSED(unlink(rot), "unlink control/rotate");
		EXPECT_REFUSED(rmdir(der), "rmdir derived");
		EXPECT_REFUSED(rmdir(vdir), "rmdir versions/N");
		EXPECT_REFUSED(rmdir(ctl), "rmdir control");
		EXPECT_REFUSED(rename(cur, cur2), "rename current");
		EXPECT_REFUSED(rename(phi, pii), "rename phi over pii");
		EXPECT_REFUSED(rename(vdir, newd), "rename versions/N");
		EXPECT_REFUSED(link(cur, cur2), "link current");
		EXPECT_REFUSED(symlink("current", cur2), "symlink");
		EXPECT_REFUSED(truncate(cur, 0), "truncate current");
		EXPECT_REFUSED(truncate(phi, 10), "truncate derived/phi");
		EXPECT_REFUSED(truncate(ver, 0), "truncate version");
		EXPECT_REFUSED(try_open(m, "current", O_WRONLY),
			       "open current O_WRONLY");
		EXPECT_REFUSED(try_open(m, "current", O_RDWR),
			       "open current O_RDWR");
		EXPECT_REFUSED(try_open(m, "derived/phi", O_WRONLY | O_TRUNC),
			       "open derived/phi O_WRONLY|O_TRUNC");
		EXPECT_REFUSED(try_open(m, vkey, O_WRONLY | O_APPEND),
			       "open versions/N/key O_WRONLY|O_APPEND");
		EXPECT_REFUSED(try_open(m, "status", O_WRONLY),
			       "open status O_WRONLY");
		EXPECT_REFUSED(chmod(cur, 0644), "chmod current");
		EXPECT_REFUSED(chmod(der, 0777), "chmod derived");
		EXPECT_REFUSED(chmod(vers, 0700), "chmod versions");
		EXPECT_REFUSED(chown(cur, 1001, 1001), "chown current");
		EXPECT_REFUSED(chown(phi, 0, 0), "chown derived/phi");
		EXPECT_REFUSED(setxattr(cur, "user.x", "1", 1, 0),
			       "setxattr current");
		EXPECT_REFUSED(setxattr(der, "user.x", "1", 1, 0),
			       "setxattr derived");
		EXPECT_REFUSED(utimes(cur, tv), "utimes current");
		EXPECT_REFUSED(utimes(cur, NULL), "utimes current (now)");
		EXPECT_REFUSED(utimes(der, tv), "utimes derived");
		free(cur), free(prev), free(phi), free(der);
		free(newd), free(dnew), free(cur2), free(pii), free(rot);
		free(ver), free(vers), free(ctl);
	}
#undef P

	snap2 = tree_snapshot(m);
	cr_expect_str_eq(snap2, snap1, "the tree changed");
	read_key(m, "current", after);
	cr_expect(sodium_memcmp(before, after, KEY_LEN) == 0,
		  "current changed");
	cr_expect(read_version(m) == v, "version changed");
	free(snap1);
	free(snap2);
}
