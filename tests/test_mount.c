// SPDX-License-Identifier: MIT
/*
 * Mount tests: the mounted tree and its life cycle, against the real keyfs
 * binary (issue 3 items 1, 2, 3, 5, 6, 7; DESIGN.md §1).
 *
 * Keys are compared in C and never printed: assertion messages name the
 * file, never its content.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sodium.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "helpers.h"
#include "key.h"

#define KEY_LEN KF_KEY_BYTES
#define TEXT_LEN KF_KEY_TEXT_LEN

/* The purposes configured for every mount here, in declared order. */
static const char *const purposes[] = {"phi", "pii", "billing"};
#define N_PURPOSES (sizeof(purposes) / sizeof(purposes[0]))
#define PURPOSES_LINE "purposes = phi pii billing\n"

/* pii keeps the default access (root:root 0400). */
static const char access_sections[] = "[access]\n"
				      "keys = 0:0 0400\n"
				      "status = 0:0 0444\n"
				      "backups = 0:2003 0440\n"
				      "audit = 0:2004 0440\n"
				      "[purpose phi]\n"
				      "access = 0:2001 0440\n"
				      "[purpose billing]\n"
				      "access = 1002:2002 0400\n";

/* --- helpers -------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wipes and frees text that may hold a key. */
static void free_secret(char *text, size_t len)
{
	if (!text)
		return;
	sodium_memzero(text, len);
	free(text);
}

/*
 * Mounts live in static storage: .fini (kt_mount_cleanup_all) runs after the
 * test function has returned, so they must outlive its stack.  Each test
 * runs in its own process, so the pool starts empty for each.
 */
static struct kt_mount *mount_new(void)
{
	static struct kt_mount pool[8];
	static size_t used;

	cr_assert(used < sizeof(pool) / sizeof(pool[0]));
	cr_assert(sodium_init() >= 0);
	return &pool[used++];
}

static void start_ok(struct kt_mount *m)
{
	int r = kt_mount_start(m, NULL);

	cr_assert(r == 0, "keyfs mount did not come up (%d); log in %s", r,
		  m->log);
}

/* A started mount with the purposes and access sections above. */
static struct kt_mount *start(const char *tag, const char *extra_lines)
{
	struct kt_mount *m = mount_new();
	char *lines;

	cr_assert(asprintf(&lines, "%s%s", PURPOSES_LINE,
			   extra_lines ? extra_lines : "") > 0);
	kt_mount_config(m, tag, lines, access_sections);
	free(lines);
	start_ok(m);
	return m;
}

/* open + read + close with plain syscalls (safe in forked children). */
static ssize_t raw_read(const char *path, char *buf, size_t cap)
{
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), e;

	if (fd < 0)
		return -errno;
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			e = errno;
			close(fd);
			return -e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	return (ssize_t)len;
}

/* Reads a key file of the tree: exactly 44 bytes that validate. */
static void read_key(struct kt_mount *m, const char *rel, uint8_t key[KEY_LEN])
{
	char err[KF_ERR_MAX] = "";
	size_t len = 0;
	char *text = kt_mread(m, rel, &len);
	int r;

	cr_assert(text, "read %s: %s", rel, strerror(errno));
	if (len != TEXT_LEN) {
		free_secret(text, len);
		cr_assert(false, "%s holds %zu bytes, not %d", rel, len,
			  TEXT_LEN);
	}
	r = kf_key_decode(text, len, key, err);
	free_secret(text, len);
	cr_assert(r == 0, "%s does not validate: %s", rel, err);
}

static void derive(const uint8_t key[KEY_LEN], const char *purpose,
		   uint8_t out[KEY_LEN])
{
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_key_derive(key, purpose, out, err) == 0, "derive: %s",
		  err);
}

static uint32_t read_version(struct kt_mount *m)
{
	return (uint32_t)kt_mversion(m);
}

static json_t *read_status(struct kt_mount *m)
{
	size_t len = 0;
	char *text = kt_mread(m, "status", &len);
	json_error_t jerr;
	json_t *o;

	cr_assert(text, "read status: %s", strerror(errno));
	cr_assert(len > 1 && text[len - 1] == '\n' &&
		      memchr(text, '\n', len) == text + len - 1,
		  "status is not one line ending in a newline");
	o = json_loadb(text, len, 0, &jerr);
	cr_assert(o && json_is_object(o), "status is not a JSON object: %s",
		  jerr.text);
	free(text);
	return o;
}

static int rotate(struct kt_mount *m)
{
	return kt_mwrite(m, "control/rotate", "1\n");
}

static void rotate_ok(struct kt_mount *m)
{
	int r = rotate(m);

	cr_assert(r == 0, "write to control/rotate: %s", strerror(-r));
}

/* Sorted names in a directory of the tree, space-separated (no . and ..). */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *listing(struct kt_mount *m, const char *rel)
{
	char *path = kt_mpath(m, rel), *names[256], *out;
	size_t n = 0, len = 1;
	struct dirent *d;
	DIR *dir = opendir(path);

	cr_assert(dir, "opendir %s: %s", rel, strerror(errno));
	while ((d = readdir(dir))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		cr_assert(n < 256);
		names[n] = strdup(d->d_name);
		len += strlen(d->d_name) + 1;
		n++;
	}
	closedir(dir);
	free(path);
	qsort(names, n, sizeof(names[0]), cmp_str);
	out = calloc(1, len);
	cr_assert(out);
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(out, " ");
		strcat(out, names[i]);
		free(names[i]);
	}
	return out;
}

static void expect_listing(struct kt_mount *m, const char *rel,
			   const char *want)
{
	char *got = listing(m, rel);

	cr_expect_str_eq(got, want, "ls %s", rel);
	free(got);
}

/* The audit log's records (state_dir/audit.log) with event `event`. */
static json_t *audit_records(struct kt_mount *m, const char *event)
{
	json_t *all = kt_audit_since(m, 0), *list = json_array(), *rec;
	size_t i;

	json_array_foreach(all, i, rec)
	{
		if (kt_record_is(rec, event, -1))
			json_array_append(list, rec);
	}
	json_decref(all);
	return list;
}

static json_int_t jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	cr_assert(json_is_integer(v), "\"%s\" is not an integer", key);
	return json_integer_value(v);
}

/* --- the tree as root ----------------------------------------------------- */

Test(mount, root_lists_exactly_the_tree, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	struct kt_mount *m = start("ls", "retain_versions = 3\n");
	char path[64];
	uint32_t v = read_version(m);

	expect_listing(m, "",
		       "audit.log backups control current derived status "
		       "version versions");
	expect_listing(m, "derived", "billing phi pii");
	expect_listing(m, "control", "backup prune restore retire rotate");
	snprintf(path, sizeof(path), "%" PRIu32, v);
	expect_listing(m, "versions", path);
	snprintf(path, sizeof(path), "versions/%" PRIu32, v);
	expect_listing(m, path, "derived key");
	snprintf(path, sizeof(path), "versions/%" PRIu32 "/derived", v);
	expect_listing(m, path, "billing phi pii");

	rotate_ok(m);
	expect_listing(m, "",
		       "audit.log backups control current derived previous "
		       "status version versions");
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

Test(mount, sizes_equal_bytes_read, .fini = kt_mount_cleanup_all, .timeout = 30)
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

Test(mount, modes_and_owners_follow_config, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	static const struct want_node common[] = {
	    {"", true, 0555, 0, 0},
	    {"version", false, 0444, 0, 0},
	    {"derived", true, 0555, 0, 0},
	    {"derived/phi", false, 0440, 0, 2001},
	    {"derived/pii", false, 0400, 0, 0},
	    {"derived/billing", false, 0400, 1002, 2002},
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

Test(mount, key_files_hold_current_previous_and_derived_keys,
     .fini = kt_mount_cleanup_all, .timeout = 30)
{
	struct kt_mount *m = start("contents", NULL);
	uint8_t first[KEY_LEN], cur[KEY_LEN], prev[KEY_LEN], k[KEY_LEN],
	    d[KEY_LEN], want[KEY_LEN];
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
	sodium_memzero(first, sizeof(first));
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(prev, sizeof(prev));
	sodium_memzero(k, sizeof(k));
	sodium_memzero(d, sizeof(d));
	sodium_memzero(want, sizeof(want));
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

Test(mount, version_and_status_agree, .fini = kt_mount_cleanup_all,
     .timeout = 30)
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

/* --- mount options -------------------------------------------------------- */

Test(mount, mount_options_are_hardened, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	static const char *const need[] = {
	    "nosuid", "nodev", "default_permissions", "allow_other"};
	struct kt_mount *m = start("opts", NULL);
	FILE *f = fopen("/proc/mounts", "r");
	char line[8192], dev[256], dir[4096], type[64], opts[2048];
	bool found = false;

	cr_assert(f);
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%255s %4095s %63s %2047s", dev, dir, type,
			   opts) == 4 &&
		    strcmp(dir, m->mnt) == 0)
			found = true;
	fclose(f);
	cr_assert(found, "%s not in /proc/mounts", m->mnt);
	cr_expect(strncmp(type, "fuse", 4) == 0, "type %s", type);
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		char *copy = strdup(opts), *save = NULL;
		bool has = false;

		for (char *w = strtok_r(copy, ",", &save); w && !has;
		     w = strtok_r(NULL, ",", &save))
			has = strcmp(w, need[i]) == 0;
		free(copy);
		cr_expect(has, "mount options \"%s\" lack %s", opts, need[i]);
	}
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

Test(mount, tree_is_read_only_for_root, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	struct kt_mount *m = start("ro", NULL);
	uint8_t before[KEY_LEN], after[KEY_LEN];
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
	sodium_memzero(before, sizeof(before));
	sodium_memzero(after, sizeof(after));
}

/* --- freshness ------------------------------------------------------------ */

static void fresh_after_rotations(const char *extra, int rounds)
{
	struct kt_mount *m = start("fresh", extra);
	uint8_t old[KEY_LEN], cur[KEY_LEN], prev[KEY_LEN], phi[KEY_LEN],
	    want[KEY_LEN], vk[KEY_LEN];
	uint32_t v = read_version(m), nv;
	char *p = kt_mpath(m, "previous"), rel[64];
	struct stat st;
	json_t *s;

	errno = 0;
	cr_expect(stat(p, &st) < 0 && errno == ENOENT,
		  "previous exists before the first rotation");
	free(p);
	read_key(m, "current", old);
	read_key(m, "derived/phi", phi);
	for (int i = 0; i < rounds; i++) {
		rotate_ok(m);
		read_key(m, "current", cur);
		read_key(m, "derived/phi", phi);
		nv = read_version(m);
		read_key(m, "previous", prev);
		cr_assert(nv == v + 1, "rotation %d: version %u, want %u", i,
			  (unsigned)nv, (unsigned)v + 1);
		cr_assert(sodium_memcmp(cur, old, KEY_LEN) != 0,
			  "rotation %d: current is stale", i);
		cr_assert(sodium_memcmp(prev, old, KEY_LEN) == 0,
			  "rotation %d: previous is not the old current", i);
		derive(cur, "phi", want);
		cr_assert(sodium_memcmp(phi, want, KEY_LEN) == 0,
			  "rotation %d: derived/phi is stale", i);
		snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key", nv);
		read_key(m, rel, vk);
		cr_assert(sodium_memcmp(vk, cur, KEY_LEN) == 0,
			  "rotation %d: versions/N/key is not current", i);
		s = read_status(m);
		cr_assert(jint(s, "version") == nv,
			  "rotation %d: status is stale", i);
		json_decref(s);
		memcpy(old, cur, KEY_LEN);
		v = nv;
	}
	sodium_memzero(old, sizeof(old));
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(prev, sizeof(prev));
	sodium_memzero(phi, sizeof(phi));
	sodium_memzero(want, sizeof(want));
	sodium_memzero(vk, sizeof(vk));
}

Test(mount, fresh_after_every_rotation_audited, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	fresh_after_rotations(NULL, 50);
}

Test(mount, fresh_after_every_rotation_cached, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	fresh_after_rotations("read_mode = cached\n", 50);
}

Test(mount, open_file_keeps_its_key_audited, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	struct kt_mount *m = start("snap", NULL);
	char *pc = kt_mpath(m, "current"), *pd = kt_mpath(m, "derived/phi");
	char a[64], b[64], c[64], d[64];
	uint8_t now[KEY_LEN], then[KEY_LEN];
	char err[KF_ERR_MAX];
	int fc = open(pc, O_RDONLY | O_CLOEXEC), fd;

	fd = open(pd, O_RDONLY | O_CLOEXEC);
	cr_assert(fc >= 0 && fd >= 0, "open: %s", strerror(errno));
	cr_assert(pread(fc, a, sizeof(a), 0) == TEXT_LEN);
	cr_assert(pread(fd, c, sizeof(c), 0) == TEXT_LEN);
	rotate_ok(m);
	rotate_ok(m);
	cr_assert(pread(fc, b, sizeof(b), 0) == TEXT_LEN,
		  "re-read of an open current failed");
	cr_assert(pread(fd, d, sizeof(d), 0) == TEXT_LEN,
		  "re-read of an open derived/phi failed");
	cr_expect(memcmp(a, b, TEXT_LEN) == 0,
		  "an open current changed its key after a rotation");
	cr_expect(memcmp(c, d, TEXT_LEN) == 0,
		  "an open derived/phi changed its key after a rotation");
	cr_assert(kf_key_decode(a, TEXT_LEN, then, err) == 0, "%s", err);
	read_key(m, "current", now);
	cr_expect(sodium_memcmp(now, then, KEY_LEN) != 0,
		  "a new open still sees the old key");
	close(fc);
	close(fd);
	free(pc);
	free(pd);
	sodium_memzero(a, sizeof(a));
	sodium_memzero(b, sizeof(b));
	sodium_memzero(c, sizeof(c));
	sodium_memzero(d, sizeof(d));
	sodium_memzero(now, sizeof(now));
	sodium_memzero(then, sizeof(then));
}

/* --- audit of opens ------------------------------------------------------- */

/* The record in list (from index from) whose path is path, or NULL. */
static json_t *find_open(json_t *list, size_t from, const char *path)
{
	for (size_t i = from; i < json_array_size(list); i++) {
		json_t *r = json_array_get(list, i);
		const char *p = json_string_value(json_object_get(r, "path"));

		if (p && strcmp(p, path) == 0)
			return r;
	}
	return NULL;
}

Test(mount, audited_opens_are_recorded, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	struct kt_mount *m = start("auditopen", NULL);
	json_t *list, *r;
	size_t n0;
	uint8_t k[KEY_LEN];
	char vkey[64];
	uint32_t v;
	int rc;

	rotate_ok(m);
	v = read_version(m);
	snprintf(vkey, sizeof(vkey), "versions/%" PRIu32 "/key", v);
	list = audit_records(m, "key_open");
	n0 = json_array_size(list);
	json_decref(list);

	read_key(m, "current", k);
	read_key(m, "previous", k);
	read_key(m, vkey, k);
	sodium_memzero(k, sizeof(k));
	rc = kt_run_as("--reuid=1001 --regid=2001 --clear-groups", NULL, NULL,
		       "cat '%s/derived/phi' >/dev/null", m->mnt);
	cr_assert(rc == 0, "uid 1001 gid 2001 could not read derived/phi");

	list = audit_records(m, "key_open");
	cr_expect(json_array_size(list) == n0 + 4,
		  "%zu key_open records for 4 opens",
		  json_array_size(list) - n0);
	for (int i = 0; i < 3; i++) {
		const char *path = i == 0   ? "current"
				   : i == 1 ? "previous"
					    : vkey;

		r = find_open(list, n0, path);
		cr_assert(r, "no key_open record for %s", path);
		cr_expect(jint(r, "uid") == 0 && jint(r, "gid") == 0 &&
			      jint(r, "pid") == getpid(),
			  "key_open of %s: uid %lld gid %lld pid %lld, want "
			  "0 0 %d",
			  path, (long long)jint(r, "uid"),
			  (long long)jint(r, "gid"), (long long)jint(r, "pid"),
			  (int)getpid());
	}
	r = find_open(list, n0, "derived/phi");
	cr_assert(r, "no key_open record for derived/phi");
	cr_expect(jint(r, "uid") == 1001 && jint(r, "gid") == 2001 &&
		      jint(r, "pid") > 0 && jint(r, "pid") != getpid(),
		  "key_open of derived/phi: uid %lld gid %lld pid %lld",
		  (long long)jint(r, "uid"), (long long)jint(r, "gid"),
		  (long long)jint(r, "pid"));
	json_decref(list);
}

Test(mount, cached_opens_are_not_audited, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	struct kt_mount *m = start("cachedopen", "read_mode = cached\n");
	json_t *list, *s;
	uint8_t k[KEY_LEN];
	size_t n0;

	rotate_ok(m);
	list = audit_records(m, "key_open");
	n0 = json_array_size(list);
	json_decref(list);
	for (int i = 0; i < 5; i++) {
		read_key(m, "current", k);
		read_key(m, "previous", k);
		read_key(m, "derived/phi", k);
	}
	sodium_memzero(k, sizeof(k));
	list = audit_records(m, "key_open");
	cr_expect(json_array_size(list) == n0, "cached mode audited %zu opens",
		  json_array_size(list) - n0);
	json_decref(list);
	s = read_status(m);
	cr_expect(json_is_false(json_object_get(s, "opens_audited")),
		  "status does not say opens_audited false");
	cr_expect(strcmp(json_string_value(json_object_get(s, "read_mode")),
			 "cached") == 0,
		  "status read_mode is not cached");
	json_decref(s);
}

/* Stops the daemons, then detaches the tmpfs they wrote to. */
static void cleanup_mounts_and_tmpfs(void)
{
	kt_mount_cleanup_all();
	kt_tmpfs_cleanup();
}

/*
 * Fail closed (DESIGN.md §1): with the audit log's disk full, an open of a
 * key file that cannot be recorded is refused with EIO -- not with the
 * ENOSPC of the failed write -- and opens work again once there is room.
 */
Test(mount, audited_open_on_a_full_audit_disk_fails_with_eio,
     .fini = cleanup_mounts_and_tmpfs, .timeout = 60)
{
	const char *disk = kt_tmpfs("full-audit-disk", "32k");
	char *audit = kt_path(disk, "audit.log");
	char *filler = kt_path(disk, "filler");
	char *current, *phi, *line, buf[512];
	struct kt_mount *m;
	ssize_t got = 0;
	int fd, i;

	cr_assert(asprintf(&line, "audit_log = %s\n", audit) > 0);
	m = start("fullaudit", line);
	current = kt_mpath(m, "current");
	got = raw_read(current, buf, sizeof(buf));
	cr_assert(got == TEXT_LEN, "read current with room on the disk: %s",
		  got < 0 ? strerror((int)-got) : "short read");

	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "%s: %s", filler, strerror(errno));
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	/* The log's last page may still hold a few records. */
	for (i = 0; i < 1000 && got == TEXT_LEN; i++)
		got = raw_read(current, buf, sizeof(buf));
	cr_assert(got < 0, "%d opens of current succeeded on a full audit disk",
		  i);
	cr_expect(got == -EIO,
		  "an open that cannot be recorded failed with \"%s\", "
		  "want \"%s\"",
		  strerror((int)-got), strerror(EIO));
	phi = kt_mpath(m, "derived/phi");
	got = raw_read(phi, buf, sizeof(buf));
	cr_expect(got == -EIO, "derived/phi on a full audit disk: %s",
		  got < 0 ? strerror((int)-got) : "read");

	cr_assert(unlink(filler) == 0);
	got = raw_read(current, buf, sizeof(buf));
	cr_expect(got == TEXT_LEN, "read current after space was freed: %s",
		  got < 0 ? strerror((int)-got) : "short read");
	sodium_memzero(buf, sizeof(buf));
	cr_expect(kt_mount_stop(m) == 0);
	free(current);
	free(phi);
	free(filler);
	free(audit);
	free(line);
}

/* --- no torn keys --------------------------------------------------------- */

#define TORN_READERS 3
#define TORN_ROTATIONS 20
#define TORN_SEEN 256

struct torn_reader {
	unsigned long reads, pairs, skipped;
	char bad[160]; /* first failure, or "" */
	unsigned n_cur, n_der;
	uint8_t cur[TORN_SEEN][KEY_LEN]; /* distinct values read */
	uint8_t der[TORN_SEEN][KEY_LEN];
};

struct torn_shared {
	atomic_int done;
	char rot_bad[160];
	unsigned n_known;
	uint8_t known[TORN_ROTATIONS + 1][KEY_LEN]; /* every current */
	struct torn_reader r[TORN_READERS];
};

/* Reads and validates one key file; 1 if gone (ENOENT), 0, or -1 + why. */
static int torn_key(const char *mnt, const char *rel, uint8_t key[KEY_LEN],
		    char why[160])
{
	char path[PATH_MAX], buf[128], err[KF_ERR_MAX];
	ssize_t n;
	int r;

	snprintf(path, sizeof(path), "%s/%s", mnt, rel);
	n = raw_read(path, buf, sizeof(buf));
	if (n == -ENOENT)
		return 1;
	if (n != TEXT_LEN) {
		snprintf(why, 160, "%s: read gave %zd", rel, n);
		sodium_memzero(buf, sizeof(buf));
		return -1;
	}
	r = kf_key_decode(buf, (size_t)n, key, err);
	sodium_memzero(buf, sizeof(buf));
	if (r < 0) {
		snprintf(why, 160, "%s does not validate: %.100s", rel, err);
		return -1;
	}
	return 0;
}

/* Adds key to the distinct values seen (a rotation period may interleave
 * two of them: readers race with the rotator). */
static void torn_note(uint8_t (*seen)[KEY_LEN], unsigned *n,
		      const uint8_t key[KEY_LEN], char why[160])
{
	for (unsigned i = *n; i-- > 0;)
		if (sodium_memcmp(seen[i], key, KEY_LEN) == 0)
			return;
	if (*n == TORN_SEEN) {
		snprintf(why, 160, "more than %d distinct values", TORN_SEEN);
		return;
	}
	memcpy(seen[(*n)++], key, KEY_LEN);
}

static void torn_reader_main(const char *mnt, struct torn_shared *sh, int id)
{
	struct torn_reader *me = &sh->r[id];
	uint8_t k[KEY_LEN], d[KEY_LEN], want[KEY_LEN];
	double end = now_s() + 15;

	while (!me->bad[0] && now_s() < end) {
		char rel[96], vtext[32], vpath[PATH_MAX];
		bool last = atomic_load(&sh->done);
		unsigned long v;
		ssize_t n;
		int r;

		me->reads++;
		r = torn_key(mnt, "current", k, me->bad);
		if (r != 0) {
			if (r > 0)
				snprintf(me->bad, 160, "current vanished");
			break;
		}
		torn_note(me->cur, &me->n_cur, k, me->bad);
		r = torn_key(mnt, "derived/phi", d, me->bad);
		if (r != 0) {
			if (r > 0)
				snprintf(me->bad, 160, "derived/phi vanished");
			break;
		}
		torn_note(me->der, &me->n_der, d, me->bad);

		snprintf(vpath, sizeof(vpath), "%s/version", mnt);
		n = raw_read(vpath, vtext, sizeof(vtext) - 1);
		if (n < 2 || vtext[n - 1] != '\n') {
			snprintf(me->bad, 160, "version read gave %zd", n);
			break;
		}
		vtext[n] = 0;
		v = strtoul(vtext, NULL, 10);
		snprintf(rel, sizeof(rel), "versions/%lu/key", v);
		r = torn_key(mnt, rel, k, me->bad);
		if (r == 0) {
			snprintf(rel, sizeof(rel), "versions/%lu/derived/phi",
				 v);
			r = torn_key(mnt, rel, d, me->bad);
		}
		if (r < 0)
			break;
		if (r > 0) {
			me->skipped++; /* dropped meanwhile: fine */
		} else {
			if (kf_key_derive(k, "phi", want, NULL) != 0 ||
			    sodium_memcmp(want, d, KEY_LEN) != 0) {
				snprintf(me->bad, 160,
					 "versions/%lu/derived/phi is not "
					 "derive(versions/%lu/key, phi)",
					 v, v);
				break;
			}
			torn_note(me->cur, &me->n_cur, k, me->bad);
			me->pairs++;
		}
		if (last)
			break;
	}
	sodium_memzero(k, sizeof(k));
	sodium_memzero(d, sizeof(d));
	sodium_memzero(want, sizeof(want));
}

static void torn_rotator_main(const char *mnt, struct torn_shared *sh)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/control/rotate", mnt);
	for (int i = 0; i < TORN_ROTATIONS; i++) {
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "1\n", 2) != 2) {
			snprintf(sh->rot_bad, 160, "rotation %d: %s", i,
				 strerror(errno));
			if (fd >= 0)
				close(fd);
			break;
		}
		close(fd);
		if (torn_key(mnt, "current", sh->known[sh->n_known],
			     sh->rot_bad) != 0) {
			snprintf(sh->rot_bad, 160, "current after rotation");
			break;
		}
		sh->n_known++;
		kt_sleep_ms(70);
	}
	atomic_store(&sh->done, 1);
}

static bool torn_is_known(const struct torn_shared *sh,
			  const uint8_t key[KEY_LEN], bool derived)
{
	uint8_t d[KEY_LEN];
	bool found = false;

	for (unsigned i = 0; i < sh->n_known && !found; i++) {
		if (!derived) {
			found = sodium_memcmp(sh->known[i], key, KEY_LEN) == 0;
			continue;
		}
		derive(sh->known[i], "phi", d);
		found = sodium_memcmp(d, key, KEY_LEN) == 0;
	}
	sodium_memzero(d, sizeof(d));
	return found;
}

static void no_torn_keys(const char *extra)
{
	struct kt_mount *m = start("torn", extra);
	struct torn_shared *sh;
	pid_t kids[TORN_READERS + 1];
	uint32_t v0 = read_version(m);

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	read_key(m, "current", sh->known[0]);
	sh->n_known = 1;
	for (int i = 0; i <= TORN_READERS; i++) {
		kids[i] = fork();
		cr_assert(kids[i] >= 0);
		if (kids[i] == 0) {
			if (i == TORN_READERS)
				torn_rotator_main(m->mnt, sh);
			else
				torn_reader_main(m->mnt, sh, i);
			_exit(0);
		}
	}
	for (int i = 0; i <= TORN_READERS; i++) {
		int st = kt_wait_child(kids[i], 30000);

		if (st < 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
		cr_expect(st == 0, "child %d did not finish cleanly", i);
	}
	cr_expect(sh->rot_bad[0] == 0, "rotator: %s", sh->rot_bad);
	cr_expect(sh->n_known == TORN_ROTATIONS + 1, "%u rotations done",
		  sh->n_known - 1);
	cr_expect(read_version(m) == v0 + TORN_ROTATIONS,
		  "version is not %u after the rotations",
		  (unsigned)(v0 + TORN_ROTATIONS));
	for (int i = 0; i < TORN_READERS; i++) {
		struct torn_reader *r = &sh->r[i];

		cr_expect(r->bad[0] == 0, "reader %d: %s", i, r->bad);
		cr_expect(r->pairs > 0, "reader %d checked no version pair", i);
		cr_expect(r->n_cur > 1, "reader %d never saw a rotation", i);
		for (unsigned j = 0; j < r->n_cur; j++)
			cr_expect(torn_is_known(sh, r->cur[j], false),
				  "reader %d read a key that was never "
				  "current (torn or mixed)",
				  i);
		for (unsigned j = 0; j < r->n_der; j++)
			cr_expect(torn_is_known(sh, r->der[j], true),
				  "reader %d read a derived/phi that belongs "
				  "to no key (torn or mixed)",
				  i);
		cr_log_info("reader %d: %lu loops, %lu pairs, %lu skipped", i,
			    r->reads, r->pairs, r->skipped);
	}
	sodium_memzero(sh, sizeof(*sh));
	munmap(sh, sizeof(*sh));
}

Test(mount, no_torn_keys_under_rotation_audited, .fini = kt_mount_cleanup_all,
     .timeout = 90)
{
	no_torn_keys(NULL);
}

Test(mount, no_torn_keys_under_rotation_cached, .fini = kt_mount_cleanup_all,
     .timeout = 90)
{
	no_torn_keys("read_mode = cached\n");
}

/* --- life cycle ----------------------------------------------------------- */

/* A child reading current in a loop; returns its pid once it has read. */
static pid_t busy_reader(struct kt_mount *m, atomic_ulong **ret_count)
{
	atomic_ulong *count = mmap(NULL, sizeof(*count), PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *path = kt_mpath(m, "current");
	pid_t pid;

	cr_assert(count != MAP_FAILED);
	atomic_store(count, 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		char buf[64];
		double end = now_s() + 20;

		while (now_s() < end)
			if (raw_read(path, buf, sizeof(buf)) == TEXT_LEN)
				atomic_fetch_add(count, 1);
		sodium_memzero(buf, sizeof(buf));
		_exit(0);
	}
	free(path);
	for (int i = 0; i < 500 && atomic_load(count) < 100; i++)
		kt_sleep_ms(10);
	cr_assert(atomic_load(count) >= 100, "the reader loop is not reading");
	*ret_count = count;
	return pid;
}

/* Sends sig to the daemon; asserts it exits 0 and unmounts. */
static void stop_with(struct kt_mount *m, int sig, bool busy)
{
	atomic_ulong *count = NULL;
	json_t *list = audit_records(m, "unmount");
	size_t unmounts = json_array_size(list);
	pid_t reader = busy ? busy_reader(m, &count) : 0;
	int st;

	json_decref(list);
	cr_assert(kill(m->pid, sig) == 0);
	st = kt_wait_child(m->pid, 10000);
	if (st < 0) {
		kill(m->pid, SIGKILL);
		waitpid(m->pid, NULL, 0);
	}
	m->pid = 0;
	if (reader) {
		kill(reader, SIGKILL);
		waitpid(reader, NULL, 0);
		munmap(count, sizeof(*count));
	}
	cr_assert(st >= 0, "daemon did not exit within 10 s of signal %d (%s)",
		  sig, busy ? "busy" : "idle");
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "daemon ended with status %#x on signal %d", st, sig);
	cr_expect(!kt_is_mounted(m->mnt), "still mounted after signal %d", sig);
	list = audit_records(m, "unmount");
	cr_expect(json_array_size(list) == unmounts + 1,
		  "no unmount audit record for signal %d", sig);
	json_decref(list);
}

Test(mount, sigterm_unmounts_and_exits_0, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	struct kt_mount *m = start("sigterm", NULL);

	cr_expect(kt_mount_stop(m) == 0, "SIGTERM while idle: exit not 0");
	start_ok(m);
	stop_with(m, SIGTERM, true);
}

Test(mount, sigint_unmounts_and_exits_0, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	struct kt_mount *m = start("sigint", NULL);

	stop_with(m, SIGINT, false);
	start_ok(m);
	stop_with(m, SIGINT, true);
}

Test(mount, restart_after_kill_9_clears_stale_mount,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	struct kt_mount *m = start("kill9", NULL);
	uint8_t before[KEY_LEN], after[KEY_LEN];
	struct statvfs sv;
	struct stat st;
	uint32_t v;
	char *p;
	int r, e;

	rotate_ok(m);
	v = read_version(m);
	read_key(m, "current", before);
	cr_assert(kill(m->pid, SIGKILL) == 0);
	waitpid(m->pid, NULL, 0);
	m->pid = 0;
	/*
	 * stat(MNT) itself may still answer from the kernel's attribute
	 * cache; statfs always asks the (dead) daemon.
	 */
	errno = 0;
	r = statvfs(m->mnt, &sv);
	e = errno;
	cr_expect(r < 0 && e == ENOTCONN,
		  "statfs of a killed daemon's mount: %d (%s), want \"%s\"", r,
		  strerror(e), strerror(ENOTCONN));
	p = kt_mpath(m, "no-such-name");
	errno = 0;
	r = stat(p, &st);
	e = errno;
	free(p);
	cr_expect(r < 0 && e == ENOTCONN,
		  "stat in a killed daemon's mount: %d (%s), want \"%s\"", r,
		  strerror(e), strerror(ENOTCONN));
	cr_expect(kt_is_mounted(m->mnt), "kill -9 left no stale mount");

	start_ok(m);
	/*
	 * kt_mount_start may see the stale mount's cached entries as an
	 * answer: wait until the new daemon really serves.
	 */
	for (int i = 0; i < 100 && !(p = kt_mread(m, "version", NULL)); i++)
		kt_sleep_ms(50);
	cr_assert(p, "the restarted daemon does not serve: %s",
		  strerror(errno));
	free(p);
	cr_expect(read_version(m) == v, "the restarted daemon serves %u",
		  (unsigned)read_version(m));
	read_key(m, "current", after);
	cr_expect(sodium_memcmp(before, after, KEY_LEN) == 0,
		  "the restarted daemon serves another current key");
	sodium_memzero(before, sizeof(before));
	sodium_memzero(after, sizeof(after));
	cr_expect(kt_mount_stop(m) == 0);
}

/*
 * In the daemon's child before exec: umount2(path, MNT_DETACH) -- the
 * daemon's own unmount -- fails with EPERM, as for a daemon without
 * CAP_SYS_ADMIN, so it must fall back to fusermount3.  fusermount3 itself
 * unmounts with MNT_DETACH | UMOUNT_NOFOLLOW and is let through.
 */
static void deny_own_umount(void)
{
	struct sock_filter code[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		     offsetof(struct seccomp_data, arch)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		     offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_umount2, 0, 3),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		     offsetof(struct seccomp_data, args[1])),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MNT_DETACH, 0, 1),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof(code) / sizeof(code[0]), code};

	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		_exit(126);
}

/*
 * A mountpoint named with a single quote and a space, and a daemon that
 * must unmount through fusermount3: after kill -9 the stale mount is
 * cleared and the tree remounts; SIGTERM unmounts it; a second daemon on
 * the live mount is refused.
 */
Test(mount, quoted_mountpoint_is_cleared_after_kill_9_and_remounts,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	struct kt_mount *m = mount_new(), *b = mount_new();
	struct statvfs sv;
	char *text, *p;
	uint32_t v;
	int r;

#if !defined(__x86_64__)
	cr_skip_test("the seccomp filter here is written for x86-64");
#endif
	kt_mount_config(m, "quoted", NULL, NULL);
	cr_assert(rmdir(m->mnt) == 0);
	free(m->mnt);
	cr_assert(asprintf(&m->mnt, "%s/it's a mnt", m->dir) > 0);
	cr_assert(mkdir(m->mnt, 0755) == 0);
	cr_assert(asprintf(&text,
			   "[keyfs]\nmode = development\nrotate_interval = 0\n"
			   "state_dir = %s\nmaster_key_file = %s/master.key\n"
			   "mountpoint = %s\n",
			   m->state, m->dir, m->mnt) > 0);
	kt_write_file(m->cfg, text, 0644);
	r = kt_mount_start_with(m, NULL, deny_own_umount);
	cr_assert(r == 0, "no mount on \"%s\" (%d); log in %s", m->mnt, r,
		  m->log);
	rotate_ok(m);
	v = read_version(m);

	cr_assert(kill(m->pid, SIGKILL) == 0);
	waitpid(m->pid, NULL, 0);
	m->pid = 0;
	errno = 0;
	cr_assert(statvfs(m->mnt, &sv) < 0 && errno == ENOTCONN,
		  "kill -9 left no stale mount on \"%s\"", m->mnt);

	r = kt_mount_start_with(m, NULL, deny_own_umount);
	cr_assert(r == 0,
		  "the stale mount on \"%s\" was not cleared (%d); log in %s",
		  m->mnt, r, m->log);
	for (int i = 0; i < 100 && !(p = kt_mread(m, "version", NULL)); i++)
		kt_sleep_ms(50);
	cr_assert(p, "the restarted daemon does not serve: %s",
		  strerror(errno));
	free(p);
	cr_expect(read_version(m) == v, "the restarted daemon serves %u",
		  (unsigned)read_version(m));

	/* The same mountpoint, live: a second daemon is refused. */
	kt_mount_config(b, "quoted-b", NULL, NULL);
	free(b->cfg);
	b->cfg = strdup(m->cfg);
	r = kt_mount_start(b, NULL);
	cr_expect(r > 0, "a second daemon mounted on \"%s\" (%d)", m->mnt, r);
	p = kt_read_file(b->log, NULL);
	cr_expect(kt_contains(p, "already mounted"),
		  "the second daemon did not say the mountpoint is in use");
	free(p);

	cr_expect(kt_mount_stop(m) == 0,
		  "SIGTERM did not unmount \"%s\" cleanly", m->mnt);
	free(text);
}

/*
 * Starts a daemon whose `key` (state_dir, backup_dir or audit_log) is
 * mountpoint/leaf, or the same reached through a symlink to the mountpoint;
 * asserts it is refused, names the path, and leaves nothing behind.
 */
static void expect_refused_path(const char *tag, const char *key,
				const char *leaf, bool via_link)
{
	struct kt_mount *m = mount_new();
	char *bad, *alias, *text, *log;
	struct dirent *e;
	int r, entries = 0;
	bool state = strcmp(key, "state_dir") == 0;
	DIR *d;

	kt_mount_config(m, tag, NULL, NULL);
	cr_assert(asprintf(&alias, "%s/alias", m->dir) > 0);
	cr_assert(symlink(m->mnt, alias) == 0);
	cr_assert(asprintf(&bad, "%s/%s", via_link ? alias : m->mnt, leaf) > 0);
	cr_assert(asprintf(&text,
			   "[keyfs]\nmode = development\nrotate_interval = 0\n"
			   "state_dir = %s\nmaster_key_file = %s/master.key\n"
			   "mountpoint = %s\n%s%s%s\n",
			   state ? bad : m->state, m->dir, m->mnt,
			   state ? "" : key, state ? "" : " = ",
			   state ? "" : bad) > 0);
	kt_write_file(m->cfg, text, 0644);
	r = kt_mount_start(m, NULL);
	cr_expect(r > 0, "started with %s = %s (start returned %d)", key, bad,
		  r);
	cr_expect(!kt_is_mounted(m->mnt), "mounted with %s = %s", key, bad);
	log = kt_read_file(m->log, NULL);
	cr_expect(kt_contains(log, bad), "the refusal does not name %s: %s",
		  bad, log ? log : "(no log)");
	d = opendir(m->mnt);
	cr_assert(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			entries++;
	closedir(d);
	cr_expect(entries == 0,
		  "%s = %s: something was created under the "
		  "mountpoint",
		  key, bad);
	free(log);
	free(text);
	free(bad);
	free(alias);
}

Test(mount, paths_under_mountpoint_are_refused, .fini = kt_mount_cleanup_all,
     .timeout = 90)
{
	expect_refused_path("under-state", "state_dir", "state", false);
	expect_refused_path("under-backup", "backup_dir", "backups", false);
	expect_refused_path("under-audit", "audit_log", "audit.log", false);
	/* Through a symlink: only resolving the path finds these. */
	expect_refused_path("link-state", "state_dir", "state", true);
	expect_refused_path("link-backup", "backup_dir", "backups", true);
	expect_refused_path("link-audit", "audit_log", "audit.log", true);
}

/* --- hardening ------------------------------------------------------------ */

Test(mount, daemon_is_not_dumpable, .fini = kt_mount_cleanup_all, .timeout = 30)
{
	struct rlimit core = {RLIM_INFINITY, RLIM_INFINITY};
	char path[64], *limits, *line, soft[32], hard[32];
	struct kt_mount *m;
	int r;

	/* The daemon inherits a core limit it must drop itself. */
	cr_assert(getrlimit(RLIMIT_CORE, &core) == 0);
	core.rlim_cur = core.rlim_max;
	cr_assert(setrlimit(RLIMIT_CORE, &core) == 0);
	m = start("dump", NULL);
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)m->pid);
	limits = kt_read_file(path, NULL);
	cr_assert(limits);
	line = strstr(limits, "Max core file size");
	cr_assert(line, "no core limit line");
	cr_assert(sscanf(line + strlen("Max core file size"), "%31s %31s", soft,
			 hard) == 2);
	cr_expect(strcmp(soft, "0") == 0 && strcmp(hard, "0") == 0,
		  "core limit %s %s, want 0 0", soft, hard);
	free(limits);

	for (int i = 0; i < 2; i++) {
		const char *f = i ? "maps" : "environ";

		r = kt_run_as("--reuid=1001 --regid=1001 --clear-groups", NULL,
			      NULL, "cat /proc/%d/%s >/dev/null", (int)m->pid,
			      f);
		cr_expect(r != 0, "uid 1001 read /proc/PID/%s", f);
	}
}

Test(mount, second_mount_on_same_mountpoint_is_refused,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	struct kt_mount *a = start("twice", NULL), *b = mount_new(),
			*c = mount_new();
	char *text, *log, line[8192], dev[256], dir[4096];
	unsigned mounts = 0;
	FILE *f;
	int r;

	/* Another state directory, the same mountpoint. */
	kt_mount_config(b, "twice-b", NULL, NULL);
	cr_assert(asprintf(&text,
			   "[keyfs]\nmode = development\nrotate_interval = 0\n"
			   "state_dir = %s\nmaster_key_file = %s/master.key\n"
			   "mountpoint = %s\n",
			   b->state, b->dir, a->mnt) > 0);
	kt_write_file(b->cfg, text, 0644);
	free(text);
	r = kt_mount_start(b, NULL);
	cr_expect(r > 0, "a second daemon on %s did not exit (%d)", a->mnt, r);
	log = kt_read_file(b->log, NULL);
	cr_expect(kt_contains(log, a->mnt), "the refusal does not name %s",
		  a->mnt);
	free(log);

	/* The very same configuration again. */
	kt_mount_config(c, "twice-c", NULL, NULL);
	free(c->cfg);
	c->cfg = strdup(a->cfg);
	r = kt_mount_start(c, NULL);
	cr_expect(r > 0, "the same configuration mounted twice (%d)", r);

	f = fopen("/proc/self/mounts", "r");
	cr_assert(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%255s %4095s", dev, dir) == 2 &&
		    strcmp(dir, a->mnt) == 0)
			mounts++;
	fclose(f);
	cr_expect(mounts == 1, "%u mounts on %s", mounts, a->mnt);
	cr_expect(read_version(a) >= 1);
	cr_expect(kt_mount_stop(a) == 0, "the first daemon did not stop");
}

/* --- automatic rotation --------------------------------------------------- */

/* Waits up to ms for version to exceed v; the version seen. */
static uint32_t wait_version_above(struct kt_mount *m, uint32_t v, int ms)
{
	uint32_t now = read_version(m);

	for (int waited = 0; now <= v && waited < ms; waited += 100) {
		kt_sleep_ms(100);
		now = read_version(m);
	}
	return now;
}

static bool has_automatic_rotation(struct kt_mount *m, uint32_t above)
{
	json_t *list = audit_records(m, "key_rotation");
	bool found = false;

	for (size_t i = 0; i < json_array_size(list) && !found; i++) {
		json_t *r = json_array_get(list, i);

		found = json_is_true(json_object_get(r, "automatic")) &&
			json_is_true(json_object_get(r, "success")) &&
			jint(r, "key_version") > above;
	}
	json_decref(list);
	return found;
}

Test(mount, automatic_rotation_by_interval, .fini = kt_mount_cleanup_all,
     .timeout = 30)
{
	struct kt_mount *m = mount_new();
	uint32_t v0, v1;

	kt_mount_config_full(
	    m, "auto", "mode = development\nrotate_interval = 2s\n", NULL);
	start_ok(m);
	v0 = read_version(m);
	v1 = wait_version_above(m, v0, 5000);
	cr_assert(v1 > v0, "no automatic rotation within 5 s (version %u)",
		  (unsigned)v1);
	cr_expect(has_automatic_rotation(m, v0),
		  "no key_rotation record with \"automatic\":true");
}

Test(mount, automatic_rotation_counts_across_restarts,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	struct kt_mount *m = mount_new();
	double started;
	uint32_t v0, v1;
	json_t *s;

	kt_mount_config_full(m, "autorestart",
			     "mode = development\nrotate_interval = 4s\n",
			     NULL);
	start_ok(m);
	started = now_s();
	v0 = read_version(m);
	cr_assert(kt_mount_stop(m) == 0);
	cr_assert(now_s() - started < 3, "too slow to stop before due");
	/* The key is now overdue: created + 4 s has passed while down. */
	kt_sleep_ms((int)((started + 5.2 - now_s()) * 1000));
	start_ok(m);
	started = now_s();
	/* A daemon counting from its own start would wait 4 s. */
	v1 = wait_version_above(m, v0, 2000);
	cr_expect(v1 > v0,
		  "an overdue key was not rotated soon after start "
		  "(%.1f s, version %u)",
		  now_s() - started, (unsigned)v1);
	cr_expect(has_automatic_rotation(m, v0),
		  "no key_rotation record with \"automatic\":true");
	s = read_status(m);
	cr_expect(json_is_string(json_object_get(s, "next_rotation")),
		  "status has no next_rotation");
	json_decref(s);
}

Test(mount, options_that_weaken_the_mount_are_refused,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static const char *const weak[] = {"suid", "dev", "allow_root",
					   "ro,suid"};
	static struct kt_mount m;

	kt_mount_config(&m, "mnt-weak", NULL, NULL);
	for (size_t i = 0; i < sizeof(weak) / sizeof(weak[0]); i++) {
		char *err = NULL;
		int rc = kt_runf(NULL, &err, "'%s' mount -f -o '%s' -c '%s'",
				 kt_keyfs(), weak[i], m.cfg);

		cr_assert(rc == 1, "-o %s: exit %d", weak[i], rc);
		cr_assert(kt_contains(err, "would weaken the mount"),
			  "-o %s: %s", weak[i], err);
		cr_assert(!kt_is_mounted(m.mnt), "-o %s mounted", weak[i]);
		free(err);
	}
	/* The same configuration without them mounts. */
	cr_assert(kt_mount_start(&m, NULL) == 0);
	kt_mount_stop(&m);
}
