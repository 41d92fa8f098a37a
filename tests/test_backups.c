// SPDX-License-Identifier: MIT
/*
 * Backups through a real mount: control/backup, backups/, automatic backups
 * and their pruning, control/restore (good and bad archives), control/prune,
 * `keyfs ctl backup|restore|prune`, the audit records of all of these, and
 * the seed's Key Loss Recovery and Key Compromise Response procedures.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "helpers.h"

#define RESTORE_ERR "KeyBackupError: Failed to restore keys:"

TestSuite(backups, .fini = kt_mount_cleanup_all, .timeout = 120);

/* --- helpers ---------------------------------------------------------- */

static void start(struct kt_mount *m)
{
	int r = kt_mount_start(m, NULL);

	cr_assert(r == 0, "keyfs mount did not come up (%d); see %s", r,
		  m->log);
}

static void setup(struct kt_mount *m, const char *tag, const char *lines)
{
	kt_mount_config(m, tag, lines, NULL);
	start(m);
}

static char *bdir(struct kt_mount *m)
{
	return kt_path(m->state, "backups");
}

/* Path of an archive in the real backup directory. */
static char *bpath(struct kt_mount *m, const char *file)
{
	char *p;

	cr_assert(asprintf(&p, "%s/backups/%s", m->state, file) > 0);
	return p;
}

static int ctl(struct kt_mount *m, const char *file, const char *text)
{
	char *rel;
	int r;

	cr_assert(asprintf(&rel, "control/%s", file) > 0);
	r = kt_mwrite_raw(m, rel, text, strlen(text));
	free(rel);
	return r;
}

static void rotate(struct kt_mount *m)
{
	int r = ctl(m, "rotate", "1\n");

	cr_assert(r == 0, "rotate: %s", strerror(-r));
}

static char *real_names(struct kt_mount *m)
{
	char *d = bdir(m), *s = kt_names(d);

	free(d);
	return s;
}

/* Lines of `after` not in `before` (both from kt_names). */
static char *added(const char *before, const char *after)
{
	char *out = NULL, *copy = strdup(after), *save = NULL, *all;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	cr_assert(asprintf(&all, "\n%s", before) > 0);
	for (char *l = strtok_r(copy, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		char *needle;

		cr_assert(asprintf(&needle, "\n%s\n", l) > 0);
		if (!strstr(all, needle))
			fprintf(f, "%s\n", l);
		free(needle);
	}
	free(all);
	free(copy);
	fclose(f);
	return out;
}

static size_t count_lines(const char *s, const char *prefix)
{
	size_t n = 0;

	for (const char *p = s; p && *p;) {
		const char *nl = strchr(p, '\n');

		if (!prefix || strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
		p = nl ? nl + 1 : p + strlen(p);
	}
	return n;
}

/* Occurrences of needle in the daemon's log. */
static size_t log_count(struct kt_mount *m, const char *needle)
{
	char *text = kt_read_file(m->log, NULL);
	size_t n = 0;

	for (const char *p = text; p && (p = strstr(p, needle)); p++)
		n++;
	free(text);
	return n;
}

/*
 * Whether a line of log is a warning naming `what` (for a folder, the
 * folder itself: not followed by "/").
 */
static bool warned(const char *log, const char *what, bool folder)
{
	for (const char *l = log; l && *l;) {
		const char *nl = strchr(l, '\n'), *hit;
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		char *line = strndup(l, len);

		hit = strstr(line, what);
		if (hit && strstr(line, "warning") &&
		    (!folder || hit[strlen(what)] != '/')) {
			free(line);
			return true;
		}
		free(line);
		l = nl ? nl + 1 : NULL;
	}
	return false;
}

/* The clear fields of an archive (JSON object). */
static json_t *archive(const char *path)
{
	json_error_t jerr;
	json_t *o = json_load_file(path, 0, &jerr);

	cr_assert(o, "%s does not parse: %s", path, jerr.text);
	return o;
}

static long archive_version(const char *path)
{
	json_t *o = archive(path);
	long v = (long)json_integer_value(json_object_get(o, "key_version"));

	json_decref(o);
	return v;
}

static bool archive_holds(const char *path, long version)
{
	json_t *o = archive(path), *v;
	size_t i;
	bool found = false;

	json_array_foreach(json_object_get(o, "versions"), i, v)
	{
		if (json_integer_value(v) == version)
			found = true;
	}
	json_decref(o);
	return found;
}

/* The automatic (key_backup_*) archives, sorted, one per line. */
static char *auto_names(struct kt_mount *m)
{
	char *all = real_names(m), *out = NULL, *save = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	for (char *l = strtok_r(all, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save))
		if (strncmp(l, "key_backup_", 11) == 0)
			fprintf(f, "%s\n", l);
	fclose(f);
	free(all);
	return out;
}

/* Loops var over the lines of a copy of list (freed at the end). */
#define FOR_EACH_LINE(list, var)                                               \
	for (char *var##_copy = strdup(list), *var##_save = NULL,              \
		  *var = strtok_r(var##_copy, "\n", &var##_save);              \
	     var || (free(var##_copy), false);                                 \
	     var = strtok_r(NULL, "\n", &var##_save))

/*
 * Everything the tree serves about keys: version, current, previous,
 * every derived key, the versions/ listing with each version's key, and
 * status.  Kept in memory only.
 */
struct snap {
	char *version, *current, *previous, *status, *versions;
	char *derived_names;
	char *derived[16];
	char *vkeys[16];
	size_t n_derived, n_vkeys;
};

/* Reads dir NAME suffix for each NAME of list into out[]; how many. */
static size_t read_each(struct kt_mount *m, const char *list, const char *dir,
			const char *suffix, char *out[16])
{
	size_t n = 0;

	FOR_EACH_LINE(list, name)
	{
		char *rel;

		cr_assert(n < 16);
		cr_assert(asprintf(&rel, "%s%s%s", dir, name, suffix) > 0);
		out[n] = kt_mread(m, rel, NULL);
		cr_assert(out[n], "cannot read %s", rel);
		n++;
		free(rel);
	}
	return n;
}

static void snap_take(struct kt_mount *m, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	s->version = kt_mread(m, "version", NULL);
	s->current = kt_mread(m, "current", NULL);
	s->previous = kt_mread(m, "previous", NULL); /* NULL if absent */
	s->status = kt_mstatus_keys(m);
	s->versions = kt_mnames(m, "versions");
	s->derived_names = kt_mnames(m, "derived");
	cr_assert(s->version && s->current && s->status,
		  "cannot read the tree");
	s->n_derived =
	    read_each(m, s->derived_names, "derived/", "", s->derived);
	s->n_vkeys = read_each(m, s->versions, "versions/", "/key", s->vkeys);
}

static void snap_free(struct snap *s)
{
	free(s->version);
	free(s->current);
	free(s->previous);
	free(s->status);
	free(s->versions);
	free(s->derived_names);
	for (size_t i = 0; i < s->n_derived; i++)
		free(s->derived[i]);
	for (size_t i = 0; i < s->n_vkeys; i++)
		free(s->vkeys[i]);
	memset(s, 0, sizeof(*s));
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Asserts that the keys of a and b agree (status too if with_status). */
static void snap_same(const struct snap *a, const struct snap *b,
		      bool with_status, const char *what)
{
	cr_assert(same(a->version, b->version), "%s: version %s -> %s", what,
		  a->version, b->version);
	cr_assert(same(a->current, b->current), "%s: current differs", what);
	cr_assert(same(a->previous, b->previous),
		  "%s: previous differs (or appeared/vanished)", what);
	cr_assert(same(a->versions, b->versions), "%s: versions/ %s -> %s",
		  what, a->versions, b->versions);
	cr_assert(same(a->derived_names, b->derived_names));
	cr_assert(a->n_derived == b->n_derived && a->n_vkeys == b->n_vkeys);
	for (size_t i = 0; i < a->n_derived; i++)
		cr_assert(same(a->derived[i], b->derived[i]),
			  "%s: derived key #%zu differs", what, i);
	for (size_t i = 0; i < a->n_vkeys; i++)
		cr_assert(same(a->vkeys[i], b->vkeys[i]),
			  "%s: versions/N/key #%zu differs", what, i);
	if (with_status)
		cr_assert(same(a->status, b->status), "%s: status changed",
			  what);
}

static long status_long(struct kt_mount *m, const char *field)
{
	char *text = kt_mread(m, "status", NULL);
	json_t *o = text ? json_loads(text, 0, NULL) : NULL;
	long v;

	cr_assert(o, "status is not JSON");
	v = (long)json_integer_value(json_object_get(o, field));
	json_decref(o);
	free(text);
	return v;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

/* --- control/backup and backups/ -------------------------------------- */

Test(backups, backup_1_makes_a_timestamped_archive_listed_at_once)
{
	static struct kt_mount m;
	char *before, *after, *new, *tree, *out = NULL, *real, *dir, *rel;
	struct stat tst, rst;
	struct tm tm = {0};
	regex_t re;
	json_t *o;
	time_t stamp, created;
	int r;

	setup(&m, "bk-ts", NULL);
	before = real_names(&m);
	tree = kt_mnames(&m, "backups"); /* the kernel has seen the folder */
	cr_assert(strcmp(tree, before) == 0,
		  "backups/ lists %s, the folder "
		  "holds %s",
		  tree, before);
	r = ctl(&m, "backup", "1");
	cr_assert(r == 0, "backup 1: %s", strerror(-r));
	after = real_names(&m);
	new = added(before, after);
	cr_assert(count_lines(new, NULL) == 1, "new archives: %s", new);
	new[strlen(new) - 1] = 0;
	cr_assert(regcomp(&re,
			  "^key_backup_[0-9]{8}_[0-9]{6}(_[0-9]+)?\\.json$",
			  REG_EXTENDED | REG_NOSUB) == 0);
	cr_assert(regexec(&re, new, 0, NULL, 0) == 0, "archive name %s", new);
	regfree(&re);
	cr_assert(strptime(new + 11, "%Y%m%d_%H%M%S", &tm) != NULL);
	stamp = timegm(&tm);
	cr_assert(labs((long)(time(NULL) - stamp)) < 30,
		  "name %s is not the current UTC time", new);

	/* ls shows it at once, without waiting for any cache. */
	cr_assert(kt_runf(&out, NULL, "ls '%s/backups'", m.mnt) == 0);
	cr_assert(kt_contains(out, new), "ls backups/ lacks %s: %s", new, out);
	free(tree);
	tree = kt_mnames(&m, "backups");
	cr_assert(strcmp(tree, after) == 0, "backups/ lists %s, want %s", tree,
		  after);

	cr_assert(asprintf(&rel, "backups/%s", new) > 0);
	real = bpath(&m, new);
	{
		char *p = kt_mpath(&m, rel);

		cr_assert(stat(p, &tst) == 0, "stat %s: %s", p,
			  strerror(errno));
		free(p);
	}
	cr_assert(stat(real, &rst) == 0);
	cr_assert(S_ISREG(tst.st_mode), "backups entry is not a file");
	cr_assert((tst.st_mode & 07777) == 0400, "backups entry mode %04o",
		  tst.st_mode & 07777);
	cr_assert(tst.st_uid == 0 && tst.st_gid == 0, "owner %d:%d",
		  (int)tst.st_uid, (int)tst.st_gid);
	cr_assert(tst.st_size == rst.st_size, "size %lld, archive %lld",
		  (long long)tst.st_size, (long long)rst.st_size);
	cr_assert(tst.st_mtime == rst.st_mtime, "mtime %lld, archive %lld",
		  (long long)tst.st_mtime, (long long)rst.st_mtime);
	o = archive(real);
	memset(&tm, 0, sizeof(tm));
	cr_assert(strptime(kt_str_of(o, "created"), "%Y-%m-%dT%H:%M:%SZ", &tm));
	created = timegm(&tm);
	cr_assert(tst.st_mtime == created, "mtime is not the archive's "
					   "created time");
	json_decref(o);

	/* The real archive is 0600 in a 0700 folder. */
	dir = bdir(&m);
	cr_assert(mode_of(real) == 0600, "archive mode %04o", mode_of(real));
	cr_assert(mode_of(dir) == 0700, "backup dir mode %04o", mode_of(dir));
	free(dir);
	free(real);
	free(rel);
	free(out);
	free(tree);
	free(new);
	free(before);
	free(after);
}

Test(backups, backup_by_name_and_refusal_of_an_existing_name)
{
	static struct kt_mount m;
	char *before, *after, *real;
	size_t mark;
	json_t *recs, *rec;
	int r;

	setup(&m, "bk-name", NULL);
	mark = kt_audit_size(&m);
	r = ctl(&m, "backup", "nightly\n");
	cr_assert(r == 0, "backup nightly: %s", strerror(-r));
	cr_assert(kt_mexists(&m, "backups/nightly.json"),
		  "backups/nightly.json is not there");
	real = bpath(&m, "nightly.json");
	cr_assert(mode_of(real) == 0600);
	recs = kt_audit_since(&m, mark);
	rec = kt_find_record(recs, "key_backup", true);
	cr_assert(rec, "no successful key_backup record");
	cr_assert(strcmp(kt_str_of(rec, "backup"), "nightly.json") == 0,
		  "key_backup record names %s", kt_str_of(rec, "backup"));
	cr_assert(json_integer_value(json_object_get(rec, "key_version")) == 1);
	json_decref(recs);

	/* The same name again: EEXIST, the archive untouched. */
	before = real_names(&m);
	{
		size_t len1 = 0, len2 = 0;
		char *a = kt_read_file(real, &len1), *b;

		mark = kt_audit_size(&m);
		rotate(&m);
		r = ctl(&m, "backup", "nightly");
		cr_assert(r == -EEXIST, "backup of an existing name: %s",
			  r ? strerror(-r) : "success");
		b = kt_read_file(real, &len2);
		cr_assert(len1 == len2 && memcmp(a, b, len1) == 0,
			  "the existing archive was overwritten");
		free(a);
		free(b);
	}
	free(before);
	before = real_names(&m);
	r = ctl(&m, "backup", "nightly\n");
	cr_assert(r == -EEXIST);
	after = real_names(&m);
	cr_assert(strcmp(before, after) == 0, "backup dir changed: %s -> %s",
		  before, after);
	recs = kt_audit_since(&m, mark);
	cr_assert(kt_count_records(recs, "key_backup", false) == 2,
		  "want two failed key_backup records");
	json_decref(recs);
	free(before);
	free(after);
	free(real);
}

Test(backups, backup_refuses_invalid_names_with_einval)
{
	static struct kt_mount m;
	char long65[66], long64[65];
	const struct {
		const char *what, *text, *marker;
	} bad[] = {
	    {"slash", "a/b", NULL},
	    {"dot-dot", "..", NULL},
	    {"leading dot", ".hidden", "hidden"},
	    {"65 characters", long65, "zzzzzzzzzzzzzzzz"},
	    {"non-ASCII", "\xc3\xa9", NULL},
	    {"non-ASCII inside", "caf\xc3\xa9", "caf"},
	    {"empty line", "\n", NULL},
	    {"leading dash", "-x", NULL},
	    {"space", "a b", NULL},
	    {"two lines", "a\nb\n", NULL},
	    {".json ending", "x.json", NULL},
	};
	char *before = NULL, *after, *tree_before, *tree_after;
	size_t mark;
	json_t *recs;
	int r;

	memset(long65, 'z', 65);
	long65[65] = 0;
	memset(long64, 'y', 64);
	long64[64] = 0;
	setup(&m, "bk-badname", NULL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		before = real_names(&m);
		tree_before = kt_mnames(&m, "backups");
		mark = kt_audit_size(&m);
		r = ctl(&m, "backup", bad[i].text);
		cr_assert(r == -EINVAL, "backup name (%s): want EINVAL, got %s",
			  bad[i].what, r ? strerror(-r) : "success");
		after = real_names(&m);
		tree_after = kt_mnames(&m, "backups");
		cr_assert(strcmp(before, after) == 0,
			  "backup name (%s) made a file: %s", bad[i].what,
			  after);
		cr_assert(strcmp(tree_before, tree_after) == 0,
			  "backups/ changed for (%s)", bad[i].what);
		recs = kt_audit_since(&m, mark);
		cr_assert(kt_count_records(recs, "key_backup", false) >= 1,
			  "(%s): no failed key_backup record", bad[i].what);
		if (bad[i].marker)
			cr_assert(!kt_records_contain(recs, bad[i].marker,
						      strlen(bad[i].marker)),
				  "(%s): the name was written to the audit log",
				  bad[i].what);
		json_decref(recs);
		free(before);
		free(after);
		free(tree_before);
		free(tree_after);
	}
	/* 64 characters is the longest valid name. */
	r = ctl(&m, "backup", long64);
	cr_assert(r == 0, "a 64-character name was refused: %s", strerror(-r));
	cr_assert(asprintf(&before, "backups/%s.json", long64) > 0);
	cr_assert(kt_mexists(&m, before));
	free(before);
}

Test(backups, looser_modes_are_tightened_at_start_with_a_warning, .timeout = 60)
{
	static struct kt_mount m;
	char *dir, *real, *auto_list, *first, *log;
	size_t log_mark, log_len = 0;

	setup(&m, "bk-modes", NULL);
	cr_assert(ctl(&m, "backup", "keepme") == 0);
	cr_assert(kt_mount_stop(&m) == 0, "daemon did not exit cleanly");
	dir = bdir(&m);
	real = bpath(&m, "keepme.json");
	auto_list = auto_names(&m);
	cr_assert(auto_list[0], "no automatic archive from the first start");
	first = strndup(auto_list, strcspn(auto_list, "\n"));
	cr_assert(chmod(dir, 0755) == 0);
	cr_assert(chmod(real, 0644) == 0);
	log_mark = (size_t)kt_file_size(m.log);
	{
		char *p = bpath(&m, first);

		cr_assert(chmod(p, 0640) == 0);
		free(p);
	}
	start(&m);
	cr_assert(mode_of(dir) == 0700, "backup dir left at %04o",
		  mode_of(dir));
	cr_assert(mode_of(real) == 0600, "archive left at %04o", mode_of(real));
	{
		char *p = bpath(&m, first);

		cr_assert(mode_of(p) == 0600, "automatic archive left at %04o",
			  mode_of(p));
		free(p);
	}
	log = kt_read_file(m.log, &log_len);
	cr_assert(log && log_len >= log_mark);
	cr_assert(warned(log + log_mark, dir, true),
		  "no warning naming the backup folder in %s", m.log);
	cr_assert(warned(log + log_mark, "keepme.json", false),
		  "no warning naming keepme.json in %s", m.log);
	cr_assert(warned(log + log_mark, first, false),
		  "no warning naming %s in %s", first, m.log);
	free(log);
	/* The tightened archive is still served. */
	cr_assert(kt_mexists(&m, "backups/keepme.json"));
	free(first);
	free(auto_list);
	free(dir);
	free(real);
}

Test(backups, reading_an_entry_gives_the_archive_bytes_and_cp_works)
{
	static struct kt_mount m;
	char *names, *off;
	int rc;

	setup(&m, "bk-read", NULL);
	cr_assert(ctl(&m, "backup", "copyme") == 0);
	rotate(&m);
	rotate(&m);
	names = kt_mnames(&m, "backups");
	cr_assert(count_lines(names, NULL) >= 4, "backups/ lists %s", names);
	FOR_EACH_LINE(names, n)
	{
		char *rel, *real, *a, *b;
		size_t la = 0, lb = 0;

		cr_assert(asprintf(&rel, "backups/%s", n) > 0);
		real = bpath(&m, n);
		a = kt_mread(&m, rel, &la);
		b = kt_read_file(real, &lb);
		cr_assert(a && b, "cannot read %s", n);
		cr_assert(la == lb && memcmp(a, b, la) == 0,
			  "backups/%s (%zu bytes) differs from the archive "
			  "(%zu bytes)",
			  n, la, lb);
		free(a);
		free(b);
		free(rel);
		free(real);
	}
	/* cp to an off-site folder, and small reads at odd offsets. */
	cr_assert(asprintf(&off, "%s/offsite", m.dir) > 0);
	cr_assert(mkdir(off, 0700) == 0);
	rc = kt_runf(NULL, NULL,
		     "cp '%s/backups/copyme.json' '%s/' && "
		     "cmp '%s/copyme.json' '%s/backups/copyme.json' && "
		     "dd if='%s/backups/copyme.json' bs=7 status=none | "
		     "cmp - '%s/backups/copyme.json'",
		     m.mnt, off, off, m.state, m.mnt, m.state);
	cr_assert(rc == 0, "cp/dd of backups/copyme.json is not the archive");
	free(off);
	free(names);
}

/*
 * The daemon's backups/ name table, from the line SIGUSR1 logs: how many
 * names it holds (*ret_slots: how many slots it has allocated).
 */
static size_t name_table(struct kt_mount *m, size_t *ret_slots)
{
	const char *tag = "backup name table: ";
	size_t before = log_count(m, tag), names = 0, slots = 0;
	char *text = NULL;
	const char *last = NULL;

	cr_assert(kill(m->pid, SIGUSR1) == 0);
	for (int i = 0; i < 250 && log_count(m, tag) <= before; i++)
		kt_sleep_ms(20);
	text = kt_read_file(m->log, NULL);
	for (const char *p = text; p && (p = strstr(p, tag)); p++)
		last = p;
	cr_assert(last && log_count(m, tag) > before,
		  "no \"%s\" line after SIGUSR1 in %s", tag, m->log);
	cr_assert(sscanf(last + strlen(tag), "%zu names in %zu slots", &names,
			 &slots) == 2,
		  "unreadable name table line in %s", m->log);
	free(text);
	if (ret_slots)
		*ret_slots = slots;
	return names;
}

static ino_t ino_of(struct kt_mount *m, const char *rel)
{
	char *p = kt_mpath(m, rel);
	struct stat st;

	cr_assert(stat(p, &st) == 0, "stat %s: %s", rel, strerror(errno));
	free(p);
	return st.st_ino;
}

#define MISSING_LOOKUPS 20000

/*
 * Looking up names that are not archives -- anyone who may search backups/
 * can -- assigns them nothing: the daemon's name table does not grow.
 * Archives keep their inode number while they exist, and names of deleted
 * archives leave the table.
 */
Test(backups, lookups_of_missing_names_do_not_grow_the_name_table,
     .timeout = 180)
{
	static struct kt_mount m;
	size_t names, after, slots, slots0, n_real;
	ino_t one, two;
	char *list, *real;
	int misses = 0;

	setup(&m, "bk-names", NULL);
	cr_assert(ctl(&m, "backup", "one") == 0);
	cr_assert(ctl(&m, "backup", "two") == 0);
	list = kt_mnames(&m, "backups");
	free(list);
	one = ino_of(&m, "backups/one.json");
	two = ino_of(&m, "backups/two.json");
	cr_assert(one != two, "two archives share an inode number");
	names = name_table(&m, &slots0);
	real = real_names(&m);
	n_real = count_lines(real, NULL);
	free(real);
	cr_assert(names <= n_real, "the table holds %zu names for %zu archives",
		  names, n_real);

	for (int i = 0; i < MISSING_LOOKUPS; i++) {
		char rel[64];
		char *p;
		struct stat st;

		/* Valid archive names: only existence tells them apart. */
		snprintf(rel, sizeof(rel), "backups/missing_%d.json", i);
		p = kt_mpath(&m, rel);
		misses += stat(p, &st) < 0 && errno == ENOENT;
		free(p);
	}
	cr_assert(misses == MISSING_LOOKUPS, "%d of %d missing names found",
		  MISSING_LOOKUPS - misses, MISSING_LOOKUPS);
	after = name_table(&m, &slots);
	cr_expect(after == names,
		  "%d lookups of missing names grew the name table from %zu "
		  "to %zu names",
		  MISSING_LOOKUPS, names, after);
	cr_expect(slots == slots0, "the table grew from %zu to %zu slots",
		  slots0, slots);

	/* Existing names still resolve, to the same inodes. */
	cr_expect(ino_of(&m, "backups/one.json") == one,
		  "backups/one.json changed its inode number");
	cr_expect(ino_of(&m, "backups/two.json") == two,
		  "backups/two.json changed its inode number");
	{
		char *a = kt_mread(&m, "backups/two.json", NULL);
		char *b = kt_read_file(real = bpath(&m, "two.json"), NULL);

		cr_expect(a && b && strcmp(a, b) == 0,
			  "backups/two.json does not read as the archive");
		free(a);
		free(b);
		free(real);
	}

	/* Pruned archives leave the table once the tree sees them gone. */
	cr_assert(ctl(&m, "prune", "1\n") == 0);
	list = kt_mnames(&m, "backups");
	cr_expect(!kt_mexists(&m, "backups/one.json"),
		  "a pruned archive still resolves");
	real = real_names(&m);
	n_real = count_lines(real, NULL);
	names = name_table(&m, NULL);
	cr_expect(names <= n_real,
		  "after prune the table holds %zu names for %zu archives",
		  names, n_real);
	free(real);
	free(list);
}

/* --- automatic backups ------------------------------------------------ */
/* --- automatic backups ------------------------------------------------ */

Test(backups, a_backup_is_made_at_every_rotation_and_retire)
{
	static struct kt_mount m;
	char *before, *after, *new, *p;
	size_t mark;
	json_t *recs, *rec;

	setup(&m, "bk-auto", NULL);
	for (long want = 2; want <= 3; want++) {
		before = auto_names(&m);
		mark = kt_audit_size(&m);
		rotate(&m);
		after = auto_names(&m);
		new = added(before, after);
		cr_assert(count_lines(new, NULL) == 1,
			  "rotation to %ld made archives: [%s]", want, new);
		new[strlen(new) - 1] = 0;
		p = bpath(&m, new);
		cr_assert(archive_version(p) == want,
			  "rotation archive holds version %ld, want %ld",
			  archive_version(p), want);
		cr_assert(archive_holds(p, want - 1),
			  "rotation archive lacks the previous version");
		recs = kt_audit_since(&m, mark);
		rec = kt_find_record(recs, "key_rotation", true);
		cr_assert(rec, "no key_rotation record");
		cr_assert(json_is_true(json_object_get(rec, "backup_created")),
			  "key_rotation record: backup_created is not true");
		cr_assert(strcmp(kt_str_of(rec, "backup"), new) == 0,
			  "key_rotation record names %s, archive is %s",
			  kt_str_of(rec, "backup"), new);
		json_decref(recs);
		free(p);
		free(new);
		free(before);
		free(after);
	}
	/* Retire: the archive taken first still holds the retired key. */
	before = auto_names(&m);
	mark = kt_audit_size(&m);
	cr_assert(ctl(&m, "retire", "2") == 0);
	after = auto_names(&m);
	new = added(before, after);
	cr_assert(count_lines(new, NULL) == 1, "retire made archives: [%s]",
		  new);
	new[strlen(new) - 1] = 0;
	p = bpath(&m, new);
	cr_assert(archive_holds(p, 2), "the retire backup lacks version 2");
	recs = kt_audit_since(&m, mark);
	rec = kt_find_record(recs, "key_retire", true);
	cr_assert(rec, "no key_retire record");
	cr_assert(strcmp(kt_str_of(rec, "backup"), new) == 0,
		  "key_retire record names %s", kt_str_of(rec, "backup"));
	json_decref(recs);
	free(p);
	free(new);
	free(before);
	free(after);
}

Test(backups, automatic_backups_are_pruned_to_backup_keep)
{
	static struct kt_mount m;
	char *list;
	size_t mark, deleted = 0, i;
	json_t *recs, *rec;
	long cur;

	setup(&m, "bk-keep", "backup_keep = 3\n");
	cr_assert(ctl(&m, "backup", "named") == 0);
	mark = kt_audit_size(&m);
	for (int k = 0; k < 6; k++)
		rotate(&m);
	cur = kt_mversion(&m);
	cr_assert(cur == 7);
	list = auto_names(&m);
	/*
	 * Kept: the three newest (versions 7, 6, 5: each archive holds the
	 * new key and the retained ones) and the archive of version 4, which
	 * holds 4, 3, 2 -- the last copy of version 2, which the keyring
	 * (7, 6) no longer has.  Version 1 is also in "named".
	 */
	cr_assert(count_lines(list, NULL) == 4,
		  "after 6 rotations with backup_keep = 3: %s", list);
	FOR_EACH_LINE(list, n)
	{
		char *p = bpath(&m, n);
		long v = archive_version(p);

		cr_assert(v >= cur - 3, "kept %s holds version %ld, an old one",
			  n, v);
		free(p);
	}
	cr_assert(kt_mexists(&m, "backups/named.json"),
		  "a named backup was pruned automatically");
	recs = kt_audit_since(&m, mark);
	json_array_foreach(recs, i, rec)
	{
		if (strcmp(kt_str_of(rec, "event"), "backup_cleanup") != 0)
			continue;
		cr_assert(json_is_true(json_object_get(rec, "success")));
		deleted +=
		    (size_t)json_integer_value(json_object_get(rec, "deleted"));
	}
	cr_assert(deleted == 3,
		  "backup_cleanup records count %zu deleted, "
		  "want 3 (1 + 6 - 3, less the last copy of version 2)",
		  deleted);
	json_decref(recs);
	free(list);
}

/*
 * Writes text to control/<file> through one read-write open: the write's
 * result (0 or -errno); answer (cap bytes) gets the outcome read back from
 * the same open ("" if none).
 */
static int ctl_answer(struct kt_mount *m, const char *file, const char *text,
		      char *answer, size_t cap)
{
	char *rel, *p;
	ssize_t n;
	int fd, r = 0;

	cr_assert(asprintf(&rel, "control/%s", file) > 0);
	p = kt_mpath(m, rel);
	fd = open(p, O_RDWR | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", p, strerror(errno));
	if (write(fd, text, strlen(text)) < 0)
		r = -errno;
	n = pread(fd, answer, cap - 1, 0);
	answer[n > 0 ? n : 0] = 0;
	close(fd);
	free(p);
	free(rel);
	return r;
}

/* control/backup "1", the archive's name read back from the same open. */
static char *backup_now(struct kt_mount *m)
{
	char buf[256];
	int r = ctl_answer(m, "backup", "1\n", buf, sizeof(buf));

	cr_assert(r == 0, "backup 1: %s", strerror(-r));
	cr_assert(strncmp(buf, "backup: ", 8) == 0, "result: %s", buf);
	return strndup(buf + 8, strcspn(buf + 8, "\n"));
}

/*
 * Generated names made in one second get _2, _3, ... _10, ...; automatic
 * pruning must still keep the newest archives, never the one just made
 * (a freed name reused, or a name sort that puts _10 before _9, would
 * delete it).  Makes archives as fast as it can for up to 5 seconds, until
 * one second has held a dozen of them.
 */
Test(backups, pruning_keeps_the_newest_when_many_share_a_second, .timeout = 60)
{
	static struct kt_mount m;
	time_t until;
	long most = 1;

	setup(&m, "bk-keep-many", "backup_keep = 3\n");
	until = time(NULL) + 5;
	while (most < 12 && time(NULL) < until) {
		char *name = backup_now(&m), *rel, *list;
		const char *tail = name + strlen("key_backup_YYYYMMDD_HHMMSS");
		long suffix = *tail == '_' ? strtol(tail + 1, NULL, 10) : 1;

		cr_assert(asprintf(&rel, "backups/%s", name) > 0);
		list = auto_names(&m);
		cr_assert(kt_mexists(&m, rel) && kt_contains(list, name),
			  "the archive just made (%s) was pruned at once; "
			  "kept: %s",
			  name, list);
		cr_assert(count_lines(list, NULL) <= 3, "kept %s", list);
		if (suffix > most)
			most = suffix;
		free(list);
		free(rel);
		free(name);
	}
	if (most < 12)
		cr_skip_test("only %ld archives in one second; cannot tell",
			     most);
}

/* --- control/restore -------------------------------------------------- */

Test(backups, restore_by_name_serves_the_restored_keys_at_once)
{
	static struct kt_mount m;
	struct snap noted, now;
	char *before, *after, *new, *p;
	size_t mark;
	json_t *recs, *rec;
	long highest;
	int r;

	setup(&m, "bk-restore", NULL);
	snap_take(&m, &noted);
	cr_assert(ctl(&m, "backup", "snap") == 0);
	rotate(&m);
	rotate(&m);
	highest = kt_mversion(&m);
	cr_assert(highest == 3);
	before = real_names(&m);
	mark = kt_audit_size(&m);
	r = ctl(&m, "restore", "snap.json\n");
	cr_assert(r == 0, "restore snap.json: %s", strerror(-r));
	snap_take(&m, &now);
	snap_same(&noted, &now, false, "after restore");
	cr_assert(!kt_mexists(&m, "previous"),
		  "previous is served after restore "
		  "of a one-version keyring");
	cr_assert(!kt_mexists(&m, "versions/3") &&
		      !kt_mexists(&m, "versions/2"),
		  "versions of the replaced keyring still served");
	cr_assert(status_long(&m, "version") == 1, "status version");
	cr_assert(status_long(&m, "highest_issued") >= highest,
		  "status forgot the highest version issued");

	/* The keyring it replaced is in a pre_restore_ archive. */
	after = real_names(&m);
	new = added(before, after);
	cr_assert(count_lines(new, "pre_restore_") == 1,
		  "no single pre_restore_ archive: [%s]", new);
	new[strcspn(new, "\n")] = 0;
	p = bpath(&m, new);
	cr_assert(archive_version(p) == highest && archive_holds(p, 2),
		  "the pre_restore_ archive does not hold versions 3 and 2");
	recs = kt_audit_since(&m, mark);
	rec = kt_find_record(recs, "key_restore", true);
	cr_assert(rec, "no successful key_restore record");
	cr_assert(kt_contains(kt_str_of(rec, "backup"), "snap"),
		  "key_restore record names %s", kt_str_of(rec, "backup"));
	cr_assert(json_integer_value(json_object_get(rec, "key_version")) == 1);
	cr_assert(strcmp(kt_str_of(rec, "pre_restore_backup"), new) == 0,
		  "key_restore record names pre_restore %s",
		  kt_str_of(rec, "pre_restore_backup"));
	json_decref(recs);

	/* No version number is issued twice. */
	rotate(&m);
	cr_assert(kt_mversion(&m) > highest,
		  "the rotation after the restore issued version %ld again",
		  kt_mversion(&m));
	snap_free(&noted);
	snap_free(&now);
	free(p);
	free(new);
	free(before);
	free(after);
}

Test(backups, restore_by_absolute_path_and_by_name_without_json)
{
	static struct kt_mount m;
	struct snap noted, now;
	char *off, *path;
	int r;

	setup(&m, "bk-restore-abs", NULL);
	rotate(&m);
	snap_take(&m, &noted);
	cr_assert(ctl(&m, "backup", "abs") == 0);
	cr_assert(asprintf(&off, "%s/offsite", m.dir) > 0);
	cr_assert(mkdir(off, 0700) == 0);
	cr_assert(kt_runf(NULL, NULL, "cp '%s/backups/abs.json' '%s/'", m.mnt,
			  off) == 0);
	cr_assert(asprintf(&path, "%s/abs.json", off) > 0);
	rotate(&m);
	rotate(&m);
	r = ctl(&m, "restore", path);
	cr_assert(r == 0, "restore by absolute path: %s", strerror(-r));
	snap_take(&m, &now);
	snap_same(&noted, &now, false, "after restore by path");
	snap_free(&now);
	rotate(&m);
	cr_assert(kt_mversion(&m) == 5,
		  "version %ld after restore and "
		  "rotation, want 5",
		  kt_mversion(&m));
	r = ctl(&m, "restore", "abs");
	cr_assert(r == 0, "restore by name without .json: %s", strerror(-r));
	snap_take(&m, &now);
	snap_same(&noted, &now, false, "after restore by bare name");
	snap_free(&now);
	snap_free(&noted);
	free(path);
	free(off);
}

/* A copy of text with the first `from` after `after` replaced by `to`. */
static char *edit(const char *text, const char *after, const char *from,
		  const char *to)
{
	const char *at = strstr(text, after), *hit;
	char *out;

	cr_assert(at, "no %s in the archive", after);
	hit = strstr(at, from);
	cr_assert(hit, "no %s after %s in the archive", from, after);
	cr_assert(asprintf(&out, "%.*s%s%s", (int)(hit - text), text, to,
			   hit + strlen(from)) > 0);
	return out;
}

/* Changes one character of a base64 field value, at its middle. */
static char *flip_in_field(const char *text, const char *field)
{
	char *out = strdup(text), key[64], *v, *end;
	size_t mid;

	snprintf(key, sizeof(key), "\"%s\":\"", field);
	v = strstr(out, key);
	cr_assert(v, "no field %s", field);
	v += strlen(key);
	end = strchr(v, '"');
	mid = (size_t)(end - v) / 2;
	v[mid] = v[mid] == 'A' ? 'B' : 'A';
	return out;
}

Test(backups, restore_refuses_every_bad_archive_and_changes_nothing,
     .timeout = 120)
{
	static struct kt_mount m, other;
	struct snap noted, now;
	char *good, *text, *badd, *before_names;
	size_t len, mark, fails;
	struct {
		const char *what;
		char *arg;
		int want;
	} bad[24];
	size_t n = 0;

	setup(&m, "bk-restore-bad", NULL);
	rotate(&m);
	cr_assert(ctl(&m, "backup", "good") == 0); /* versions 2, 1 */
	rotate(&m);
	good = bpath(&m, "good.json");
	text = kt_read_file(good, &len);
	cr_assert(text && len > 100);
	cr_assert(asprintf(&badd, "%s/bad", m.dir) > 0);
	cr_assert(mkdir(badd, 0700) == 0);

#define BAD(name, content, clen, errno_want)                                   \
	do {                                                                   \
		cr_assert(asprintf(&bad[n].arg, "%s/%s", badd, name) > 0);     \
		kt_write_bytes(bad[n].arg, content, clen, 0600);               \
		bad[n].what = name;                                            \
		bad[n].want = errno_want;                                      \
		n++;                                                           \
	} while (0)

	bad[n].what = "missing name";
	bad[n].arg = strdup("nosuch.json");
	bad[n++].want = ENOENT;
	bad[n].what = "missing absolute path";
	cr_assert(asprintf(&bad[n].arg, "%s/nosuch.json", badd) > 0);
	bad[n++].want = ENOENT;
	BAD("truncated.json", text, len / 2, EBADMSG);
	BAD("truncated-by-1.json", text, len - 2, EBADMSG);
	BAD("empty.json", "", 0, EBADMSG);
	{
		char *e = flip_in_field(text, "ciphertext");

		BAD("ciphertext-byte.json", e, strlen(e), EBADMSG);
		free(e);
		e = flip_in_field(text, "nonce");
		BAD("nonce-byte.json", e, strlen(e), EBADMSG);
		free(e);
		e = edit(text, "\"key_version\":", "2", "1");
		BAD("key_version-edited.json", e, strlen(e), EBADMSG);
		free(e);
		e = edit(text, "\"versions\":[", "2,1", "2");
		BAD("versions-edited.json", e, strlen(e), EBADMSG);
		free(e);
		/* The last digit of the year: a clear field edited. */
		e = strdup(text);
		e[strstr(e, "\"created\":\"") - e + 14] ^= 1;
		BAD("created-edited.json", e, strlen(e), EBADMSG);
		free(e);
	}
	BAD("not-json.json", "hello, this is no archive\n", 26, EBADMSG);
	BAD("other-json.json", "{\"format\":\"x\"}\n", 15, EBADMSG);
	/* A good archive made under another master key. */
	kt_mount_config(&other, "bk-other", NULL, NULL);
	start(&other);
	cr_assert(ctl(&other, "backup", "foreign") == 0);
	{
		char *p = bpath(&other, "foreign.json"), *ft;
		size_t fl = 0;

		ft = kt_read_file(p, &fl);
		cr_assert(ft);
		BAD("foreign.json", ft, fl, EBADMSG);
		free(ft);
		free(p);
	}
	bad[n].what = "a configuration file";
	bad[n].arg = strdup(m.cfg);
	bad[n++].want = EBADMSG;
	bad[n].what = "relative path";
	bad[n].arg = strdup("bad/x.json");
	bad[n++].want = EINVAL;
	bad[n].what = "name with ..";
	bad[n].arg = strdup("../keyring");
	bad[n++].want = EINVAL;
#undef BAD
	/* One bad archive by name, from the backup folder itself. */
	{
		char *p = bpath(&m, "half.json");

		kt_write_bytes(p, text, len / 2, 0600);
		bad[n].what = "truncated, by name";
		bad[n].arg = strdup("half");
		bad[n++].want = EBADMSG;
		free(p);
	}

	cr_assert(n <= sizeof(bad) / sizeof(bad[0]));
	snap_take(&m, &noted);
	before_names = real_names(&m);
	for (size_t i = 0; i < n; i++) {
		char *after_names;
		json_t *recs, *rec;
		int r;

		mark = kt_audit_size(&m);
		fails = log_count(&m, RESTORE_ERR);
		r = ctl(&m, "restore", bad[i].arg);
		cr_assert(r < 0, "restore of %s succeeded", bad[i].what);
		cr_assert(r == -bad[i].want, "restore of %s: want %s, got %s",
			  bad[i].what, strerror(bad[i].want), strerror(-r));
		cr_assert(log_count(&m, RESTORE_ERR) == fails + 1,
			  "restore of %s: no \"" RESTORE_ERR "\" line in %s",
			  bad[i].what, m.log);
		recs = kt_audit_since(&m, mark);
		rec = kt_find_record(recs, "key_restore", false);
		cr_assert(rec, "restore of %s: no failed key_restore record",
			  bad[i].what);
		cr_assert(strncmp(kt_str_of(rec, "error"), RESTORE_ERR,
				  strlen(RESTORE_ERR)) == 0,
			  "restore of %s: audit error is %s", bad[i].what,
			  kt_str_of(rec, "error"));
		cr_assert(kt_count_records(recs, "key_restore", true) == 0);
		json_decref(recs);
		snap_take(&m, &now);
		snap_same(&noted, &now, true, bad[i].what);
		snap_free(&now);
		after_names = real_names(&m);
		cr_assert(strcmp(before_names, after_names) == 0,
			  "restore of %s changed the backup folder: %s",
			  bad[i].what, after_names);
		free(after_names);
	}
	/* And the good archive still restores. */
	cr_assert(ctl(&m, "restore", "good") == 0);
	cr_assert(kt_mversion(&m) == 2);
	for (size_t i = 0; i < n; i++)
		free(bad[i].arg);
	snap_free(&noted);
	free(before_names);
	free(badd);
	free(text);
	free(good);
}

/*
 * A restore path that is no regular file: refused at once.  A FIFO must not
 * block the daemon (open(2) of a FIFO waits for a writer), which would hold
 * every management operation behind it.
 */
Test(backups, restore_of_a_non_regular_file_is_refused_without_blocking,
     .timeout = 60)
{
	static struct kt_mount m;
	char *fifo;
	int r, status = 0;
	bool blocked;
	pid_t child;

	setup(&m, "bk-fifo", NULL);
	r = ctl(&m, "restore", "/dev/null");
	cr_assert(r == -EINVAL, "restore /dev/null: %s",
		  r ? strerror(-r) : "success");
	r = ctl(&m, "restore", m.state);
	cr_assert(r == -EINVAL, "restore of a directory: %s",
		  r ? strerror(-r) : "success");
	cr_assert(asprintf(&fifo, "%s/fifo.json", m.dir) > 0);
	cr_assert(mkfifo(fifo, 0600) == 0);
	/*
	 * A write whose request reached the daemon cannot be killed until
	 * the daemon answers, so the writer is a child we wait for.
	 */
	child = fork();
	cr_assert(child >= 0);
	if (child == 0)
		_exit(ctl(&m, "restore", fifo) == -EINVAL ? 0 : 1);
	status = kt_wait_child(child, 5000);
	blocked = status < 0;
	if (blocked) {
		/* Unblock the daemon: a writer opens and closes the FIFO. */
		int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);

		if (fd >= 0)
			close(fd);
		waitpid(child, &status, 0);
	}
	cr_assert(!blocked,
		  "restore of a FIFO blocked the control write until a "
		  "writer opened the FIFO");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "restore of a FIFO did not fail with EINVAL");
	cr_assert(kt_mversion(&m) == 1);
	free(fifo);
}

/*
 * README: "A path inside the mount is refused, except MOUNT/backups/NAME,
 * which is taken as NAME" -- the daemon never reads through its own mount.
 * The refusal is EINVAL with its reason, in the answer read back from the
 * control file and in the audit record, and changes nothing.
 */
Test(backups, restore_by_a_path_inside_the_mount_takes_only_backups_name,
     .timeout = 60)
{
	static const char *const inside[] = {
	    "",
	    "/current",
	    "/status",
	    "/versions/1/key",
	    "/backups",
	    "/backups/own.json/x",
	    "/backups/../backups/own.json",
	    "/control/restore",
	};
	static const char why[] =
	    RESTORE_ERR " a path inside the mount; give a name from backups/";
	static struct kt_mount m;
	struct snap noted, rotated, now;
	char *path, answer[256];
	json_t *recs, *rec;
	size_t mark;
	int r;

	setup(&m, "bk-own", NULL);
	snap_take(&m, &noted);
	cr_assert(ctl(&m, "backup", "own") == 0);
	rotate(&m);
	snap_take(&m, &rotated);
	for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
		cr_assert(asprintf(&path, "%s%s", m.mnt, inside[i]) > 0);
		mark = kt_audit_size(&m);
		r = ctl_answer(&m, "restore", path, answer, sizeof(answer));
		cr_assert(r == -EINVAL,
			  "restore of MOUNT%s: want EINVAL, got %s", inside[i],
			  r ? strerror(-r) : "success");
		cr_assert(strncmp(answer, "error: ", 7) == 0 &&
			      strncmp(answer + 7, why, strlen(why)) == 0 &&
			      strcmp(answer + 7 + strlen(why), "\n") == 0,
			  "restore of MOUNT%s answered \"%s\", want \"error: "
			  "%s\\n\"",
			  inside[i], answer, why);
		recs = kt_audit_since(&m, mark);
		rec = kt_find_record(recs, "key_restore", false);
		cr_assert(rec && strcmp(kt_str_of(rec, "error"), why) == 0,
			  "restore of MOUNT%s: no failed key_restore record "
			  "with the reason",
			  inside[i]);
		json_decref(recs);
		snap_take(&m, &now);
		snap_same(&rotated, &now, true, path);
		snap_free(&now);
		free(path);
	}

	/* A name in MOUNT/backups/ is that name: a missing one is missing. */
	cr_assert(asprintf(&path, "%s/backups/nosuch.json", m.mnt) > 0);
	r = ctl_answer(&m, "restore", path, answer, sizeof(answer));
	cr_assert(r == -ENOENT, "restore of MOUNT/backups/nosuch.json: %s",
		  r ? strerror(-r) : "success");
	free(path);

	/* MOUNT/backups/own.json restores own.json. */
	cr_assert(asprintf(&path, "%s/backups/own.json", m.mnt) > 0);
	mark = kt_audit_size(&m);
	r = ctl_answer(&m, "restore", path, answer, sizeof(answer));
	cr_assert(r == 0, "restore of MOUNT/backups/own.json: %s (%s)",
		  strerror(-r), answer);
	cr_assert_str_eq(answer, "restored: version 1\n");
	snap_take(&m, &now);
	snap_same(&noted, &now, false,
		  "after restore of MOUNT/backups/own.json");
	snap_free(&now);
	recs = kt_audit_since(&m, mark);
	rec = kt_find_record(recs, "key_restore", true);
	cr_assert(rec && kt_contains(kt_str_of(rec, "backup"), "own"),
		  "no successful key_restore record of own");
	json_decref(recs);
	snap_free(&noted);
	snap_free(&rotated);
	free(path);
}

/* --- control/prune ---------------------------------------------------- */

static void sleep_past_second(void)
{
	struct timespec ts = {1, 100000000L};

	nanosleep(&ts, NULL);
}

Test(backups, prune_keeps_the_n_newest_and_ctl_prune_says_how_many,
     .timeout = 60)
{
	static struct kt_mount m;
	static const char *const junk[] = {
	    "x",       "-1",	    "\n",	   "1.5",   " 2",
	    "2x",      "+1",	    "99999999999", "2 now", "2  force",
	    "force 2", "2 force x", "2 force ",	   "0"};
	char *before, *after, *out = NULL, *err = NULL;
	size_t mark;
	json_t *recs, *rec;
	int r, rc;

	setup(&m, "bk-prune", NULL);
	sleep_past_second();
	cr_assert(ctl(&m, "backup", "p1") == 0);
	sleep_past_second();
	cr_assert(ctl(&m, "backup", "p2") == 0);
	sleep_past_second();
	cr_assert(ctl(&m, "backup", "p3") == 0);
	before = real_names(&m);
	cr_assert(count_lines(before, NULL) == 4, "archives: %s", before);

	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		mark = kt_audit_size(&m);
		r = ctl(&m, "prune", junk[i]);
		cr_assert(r == -EINVAL, "prune junk #%zu: want EINVAL, got %s",
			  i, r ? strerror(-r) : "success");
		after = real_names(&m);
		cr_assert(strcmp(before, after) == 0,
			  "prune junk #%zu deleted something", i);
		recs = kt_audit_since(&m, mark);
		cr_assert(kt_count_records(recs, "backup_cleanup", false) >= 1,
			  "prune junk #%zu: no failed backup_cleanup record",
			  i);
		json_decref(recs);
		free(after);
	}

	mark = kt_audit_size(&m);
	r = ctl(&m, "prune", "2\n");
	cr_assert(r == 0, "prune 2: %s", strerror(-r));
	after = real_names(&m);
	cr_assert(strcmp(after, "p2.json\np3.json\n") == 0,
		  "after prune 2 the folder holds %s", after);
	free(after);
	after = kt_mnames(&m, "backups");
	cr_assert(strcmp(after, "p2.json\np3.json\n") == 0,
		  "after prune 2 backups/ lists %s", after);
	recs = kt_audit_since(&m, mark);
	rec = kt_find_record(recs, "backup_cleanup", true);
	cr_assert(rec, "no backup_cleanup record");
	cr_assert(json_integer_value(json_object_get(rec, "keep")) == 2 &&
		      json_integer_value(json_object_get(rec, "deleted")) == 2,
		  "backup_cleanup record: keep/deleted wrong");
	json_decref(recs);
	free(after);

	rc = kt_ctl(&m, &out, &err, "prune 1");
	cr_assert(rc == 0, "ctl prune 1 failed: %s", err);
	cr_assert(strcmp(out, "pruned: 1 deleted\n") == 0,
		  "ctl prune 1 printed: %s", out);
	after = real_names(&m);
	cr_assert(strcmp(after, "p3.json\n") == 0, "after prune 1: %s", after);
	free(after);
	free(out);
	free(err);

	rc = kt_ctl(&m, &out, &err, "prune 5");
	cr_assert(rc == 0 && strcmp(out, "pruned: 0 deleted\n") == 0,
		  "ctl prune 5 printed: %s", out);
	free(out);
	free(err);
	/* 0 would delete every backup: only with the force word. */
	rc = kt_ctl(&m, &out, &err, "prune 0");
	cr_assert(rc != 0 && kt_contains(err, "0 force"),
		  "ctl prune 0 was not refused: %s%s", out, err);
	after = real_names(&m);
	cr_assert(strcmp(after, "p3.json\n") == 0, "after prune 0: %s", after);
	free(after);
	free(out);
	free(err);
	rc = kt_ctl(&m, &out, &err, "prune 0 force");
	cr_assert(rc == 0 && strcmp(out, "pruned: 1 deleted\n") == 0,
		  "ctl prune 0 force printed: %s", out);
	after = real_names(&m);
	cr_assert(after[0] == 0, "after prune 0 force: %s", after);
	free(after);
	free(out);
	free(err);
	rc = kt_ctl(&m, &out, &err, "prune x");
	cr_assert(rc != 0, "ctl prune x succeeded");
	cr_assert(kt_contains(err, "invalid"), "ctl prune x said: %s", err);
	free(out);
	free(err);
	free(before);
}

Test(backups, keyfs_ctl_backup_and_restore_print_what_they_did)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *name;
	regex_t re;
	int rc;

	setup(&m, "bk-cli", NULL);
	rc = kt_ctl(&m, &out, &err, "backup");
	cr_assert(rc == 0, "ctl backup failed: %s", err);
	cr_assert(regcomp(&re,
			  "^backup: key_backup_[0-9]{8}_[0-9]{6}(_[0-9]+)?"
			  "\\.json\n$",
			  REG_EXTENDED | REG_NOSUB) == 0);
	cr_assert(regexec(&re, out, 0, NULL, 0) == 0, "ctl backup printed: %s",
		  out);
	regfree(&re);
	name = strndup(out + 8, strlen(out) - 9);
	{
		char *rel;

		cr_assert(asprintf(&rel, "backups/%s", name) > 0);
		cr_assert(kt_mexists(&m, rel), "ctl backup named %s, absent",
			  name);
		free(rel);
	}
	free(out);
	free(err);

	rc = kt_ctl(&m, &out, &err, "backup weekly");
	cr_assert(rc == 0 && strcmp(out, "backup: weekly.json\n") == 0,
		  "ctl backup weekly printed: %s / %s", out, err);
	free(out);
	free(err);
	rc = kt_ctl(&m, &out, &err, "backup weekly");
	cr_assert(rc != 0, "ctl backup of an existing name succeeded");
	cr_assert(kt_contains(err, "exists"),
		  "ctl backup weekly again said: %s", err);
	free(out);
	free(err);
	rc = kt_ctl(&m, &out, &err, "backup 'a/b'");
	cr_assert(rc != 0, "ctl backup a/b succeeded");
	cr_assert(kt_contains(err, "invalid"), "ctl backup a/b said: %s", err);
	free(out);
	free(err);

	rotate(&m);
	rotate(&m);
	rc = kt_ctl(&m, &out, &err, "restore weekly");
	cr_assert(rc == 0, "ctl restore weekly failed: %s", err);
	cr_assert(strcmp(out, "restored: version 1\n") == 0,
		  "ctl restore printed: %s", out);
	cr_assert(kt_mversion(&m) == 1);
	free(out);
	free(err);
	rc = kt_ctl(&m, &out, &err, "restore nosuch");
	cr_assert(rc != 0, "ctl restore of a missing backup succeeded");
	cr_assert(kt_contains(err, "Failed to restore keys") &&
		      kt_contains(err, "no such backup"),
		  "ctl restore nosuch said: %s", err);
	cr_assert(out[0] == 0, "ctl restore nosuch printed: %s", out);
	free(out);
	free(err);
	free(name);
}

/* --- audit ------------------------------------------------------------ */

Test(backups, audit_records_backup_restore_cleanup_and_failures)
{
	static struct kt_mount m;
	size_t mark;
	json_t *recs, *rec;
	char *out = NULL, *err = NULL;
	int rc;

	setup(&m, "bk-audit", NULL);
	mark = kt_audit_size(&m);
	cr_assert(ctl(&m, "backup", "a1") == 0);
	cr_assert(ctl(&m, "backup", "a1") == -EEXIST);
	cr_assert(ctl(&m, "backup", "..") == -EINVAL);
	rotate(&m);
	cr_assert(ctl(&m, "restore", "a1.json") == 0);
	cr_assert(ctl(&m, "restore", "missing") == -ENOENT);
	cr_assert(ctl(&m, "prune", "1") == 0);
	cr_assert(ctl(&m, "prune", "many") == -EINVAL);
	recs = kt_audit_since(&m, mark);

	rec = kt_find_record(recs, "key_backup", true);
	cr_assert(rec && strcmp(kt_str_of(rec, "backup"), "a1.json") == 0,
		  "key_backup success record without the name");
	cr_assert(json_object_get(rec, "uid") && json_object_get(rec, "pid"),
		  "key_backup record without who did it");
	cr_assert(kt_count_records(recs, "key_backup", false) == 2,
		  "failed backups: %zu records, want 2",
		  kt_count_records(recs, "key_backup", false));
	rec = kt_find_record(recs, "key_backup", false);
	cr_assert(kt_str_of(rec, "error")[0],
		  "failed key_backup without error");

	rec = kt_find_record(recs, "key_restore", true);
	cr_assert(rec, "no key_restore success record");
	cr_assert(kt_contains(kt_str_of(rec, "backup"), "a1"),
		  "key_restore record names %s", kt_str_of(rec, "backup"));
	cr_assert(json_integer_value(json_object_get(rec, "key_version")) == 1);
	cr_assert(
	    json_integer_value(json_object_get(rec, "previous_version")) == 2);
	rec = kt_find_record(recs, "key_restore", false);
	cr_assert(rec, "no key_restore failure record");
	cr_assert(kt_contains(kt_str_of(rec, "error"), RESTORE_ERR),
		  "key_restore failure error: %s", kt_str_of(rec, "error"));

	rec = kt_find_record(recs, "backup_cleanup", true);
	cr_assert(rec, "no backup_cleanup record");
	cr_assert(json_integer_value(json_object_get(rec, "keep")) == 1);
	cr_assert(json_integer_value(json_object_get(rec, "deleted")) >= 1,
		  "backup_cleanup record without a deleted count");
	cr_assert(kt_find_record(recs, "backup_cleanup", false),
		  "no failed backup_cleanup record");
	json_decref(recs);

	/* The chain over all of it verifies. */
	rc = kt_runf(&out, &err, "%s audit verify -c '%s'", kt_keyfs(), m.cfg);
	cr_assert(rc == 0, "audit verify failed: %s", err);
	free(out);
	free(err);
}

/* --- the seed's procedures -------------------------------------------- */

/* `keyfs restore --offline NAME -c CFG` with the daemon stopped. */
static int restore_offline(struct kt_mount *m, const char *name, char **out,
			   char **err)
{
	return kt_runf(out, err, "cd '%s' && %s restore --offline %s -c '%s'",
		       m->dir, kt_keyfs(), name, m->cfg);
}

/* Mount, note, back up, rotate twice, stop, lose the keyring. */
static void lose_keyring(struct kt_mount *m, struct snap *noted)
{
	char *p;

	snap_take(m, noted);
	cr_assert(ctl(m, "backup", "before_loss") == 0);
	rotate(m);
	rotate(m);
	cr_assert(kt_mversion(m) == strtol(noted->version, NULL, 10) + 2);
	cr_assert(kt_mount_stop(m) == 0, "daemon did not exit cleanly");
	cr_assert(asprintf(&p, "%s/keyring", m->state) > 0);
	cr_assert(unlink(p) == 0, "rm %s: %s", p, strerror(errno));
	free(p);
}

Test(backups, key_loss_recovery_restores_version_and_every_key, .timeout = 60)
{
	static struct kt_mount m;
	struct snap noted, now;
	char *out = NULL, *err = NULL;
	int rc;

	setup(&m, "bk-loss", NULL);
	rotate(&m); /* version 2, with a previous key */
	lose_keyring(&m, &noted);
	rc = restore_offline(&m, "before_loss.json", &out, &err);
	cr_assert(rc == 0, "offline restore failed (%d): %s", rc, err);
	cr_assert(strcmp(out, "restored: version 2\n") == 0,
		  "offline restore printed: %s", out);
	start(&m);
	snap_take(&m, &now);
	snap_same(&noted, &now, false, "after key loss recovery");
	snap_free(&noted);
	snap_free(&now);
	free(out);
	free(err);
}

/*
 * After the keyring is lost and an older backup restored, the versions
 * issued after that backup (3 and 4 here, still named in the backup folder
 * and the audit log) must not be issued again: applications stored them
 * beside ciphertexts.
 */
Test(backups, key_loss_recovery_never_reissues_a_version, .timeout = 60)
{
	static struct kt_mount m;
	struct snap noted;
	char *out = NULL, *err = NULL;
	int rc;

	setup(&m, "bk-loss-ver", NULL);
	rotate(&m);
	lose_keyring(&m, &noted);
	rc = restore_offline(&m, "before_loss", &out, &err);
	cr_assert(rc == 0, "offline restore failed (%d): %s", rc, err);
	start(&m);
	cr_assert(kt_mversion(&m) == 2);
	rotate(&m);
	cr_assert(kt_mversion(&m) > 4,
		  "after recovery the next rotation issued version %ld, "
		  "already issued before the loss",
		  kt_mversion(&m));
	snap_free(&noted);
	free(out);
	free(err);
}

Test(backups, key_loss_recovery_works_in_production_mode, .timeout = 60)
{
	static struct kt_mount m;
	struct snap noted, now;
	char *out = NULL, *err = NULL, *cfg, *prod;
	int rc;

	/* A production configuration over an existing keyring. */
	setup(&m, "bk-loss-prod", NULL);
	cr_assert(kt_mount_stop(&m) == 0);
	cfg = kt_read_file(m.cfg, NULL);
	prod = strstr(cfg, "mode = development");
	cr_assert(prod);
	memcpy(prod, "mode = production \n", 19);
	kt_write_file(m.cfg, cfg, 0644);
	start(&m);
	{
		char *st = kt_mread(&m, "status", NULL);

		cr_assert(kt_contains(st, "\"mode\":\"production\""),
			  "not in production mode");
		free(st);
	}
	lose_keyring(&m, &noted);
	rc = restore_offline(&m, "before_loss.json", &out, &err);
	cr_assert(rc == 0, "offline restore in production mode failed (%d): %s",
		  rc, err);
	start(&m);
	snap_take(&m, &now);
	snap_same(&noted, &now, false, "after key loss recovery (production)");
	snap_free(&noted);
	snap_free(&now);
	free(cfg);
	free(out);
	free(err);
}

Test(backups, key_compromise_response_retires_the_old_key_backup_keeps_it)
{
	static struct kt_mount m;
	char *old_key, *prev_back, *vkey_back, *out = NULL, *err = NULL;
	char *path, *st;
	json_t *o, *v;
	size_t i;
	int rc;

	setup(&m, "bk-compromise", NULL);
	rotate(&m);
	cr_assert(kt_mversion(&m) == 2);
	old_key = kt_mread(&m, "versions/1/key", NULL);
	cr_assert(old_key, "no versions/1/key after a rotation");
	{
		char *prev = kt_mread(&m, "previous", NULL);

		cr_assert(prev && strcmp(prev, old_key) == 0,
			  "previous is not the old key");
		free(prev);
	}
	cr_assert(ctl(&m, "backup", "pre_retire_check") == 0);
	cr_assert(ctl(&m, "retire", "1") == 0);

	/* Gone from the tree ... */
	cr_assert(!kt_mexists(&m, "previous"), "previous still served");
	cr_assert(!kt_mexists(&m, "versions/1"), "versions/1 still served");
	/* ... and from the keyring. */
	st = kt_mread(&m, "status", NULL);
	o = json_loads(st, 0, NULL);
	cr_assert(o, "status is not JSON");
	json_array_foreach(json_object_get(o, "versions"), i, v)
	{
		cr_assert(json_integer_value(json_object_get(v, "version")) !=
			      1,
			  "status still lists version 1");
	}
	cr_assert(json_is_null(json_object_get(o, "previous_version")));
	json_decref(o);
	free(st);

	/* The backup taken before the retire still holds it. */
	path = bpath(&m, "pre_retire_check.json");
	rc = kt_runf(&out, &err, "%s backup verify '%s' -c '%s'", kt_keyfs(),
		     path, m.cfg);
	cr_assert(rc == 0, "backup verify failed: %s", err);
	cr_assert(kt_contains(out, "ok:") && kt_contains(out, "version 2") &&
		      kt_contains(out, "2 versions"),
		  "backup verify printed: %s", out);
	cr_assert(archive_holds(path, 1), "the archive does not list 1");
	/*
	 * A routine restore of that archive does not undo the retire: the
	 * keyring remembers retired numbers, the record and the answer say
	 * so.  Only "NAME force" brings the key back.
	 */
	{
		size_t mark = kt_audit_size(&m);
		json_t *recs, *rec;

		free(out);
		free(err);
		out = err = NULL;
		rc = kt_ctl(&m, &out, &err, "restore pre_retire_check");
		cr_assert(rc == 0, "restore failed: %s", err);
		cr_assert(kt_contains(out, "stay retired: 1"),
			  "the restore did not say version 1 stays retired: "
			  "%s",
			  out);
		cr_assert(!kt_mexists(&m, "versions/1"),
			  "a routine restore brought a retired key back");
		cr_assert(!kt_mexists(&m, "previous"));
		recs = kt_audit_since(&m, mark);
		rec = kt_find_record(recs, "key_restore", 1);
		cr_assert(rec, "no key_restore record");
		cr_assert(json_integer_value(json_array_get(
			      json_object_get(rec, "retired_kept_out"), 0)) ==
			      1,
			  "the record does not say version 1 was kept out");
		json_decref(recs);
	}
	cr_assert(ctl(&m, "restore", "pre_retire_check force") == 0);
	prev_back = kt_mread(&m, "previous", NULL);
	vkey_back = kt_mread(&m, "versions/1/key", NULL);
	cr_assert(prev_back && strcmp(prev_back, old_key) == 0,
		  "the restored previous is not the retired key");
	cr_assert(vkey_back && strcmp(vkey_back, old_key) == 0,
		  "the restored versions/1/key is not the retired key");
	free(prev_back);
	free(vkey_back);
	free(old_key);
	free(path);
	free(out);
	free(err);
}
