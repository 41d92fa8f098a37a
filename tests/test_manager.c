// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/manager through core/manager.h, without a mount:
 * start-up (DESIGN.md §4), rotation, retire, backups, restore, prune,
 * concurrency, the audit trail (§6), a full or read-only audit location,
 * and the status object.  Keys are compared with memcmp/sodium_memcmp and
 * messages that never show them.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fiu-control.h>
#include <fiu.h>
#include <jansson.h>
#include <sodium.h>

#include "backup.h"
#include "config.h"
#include "helpers.h"
#include "key.h"
#include "keyring.h"
#include "env.h"
#include "manager.h"

#define KVE_NONE "KeyValidationError: No current encryption key available"
#define KVE_LOAD "KeyValidationError: Failed to load keys"
#define KBE_RESTORE "KeyBackupError: Failed to restore keys:"

/* --- environment: saved and cleared before each test, restored after --- */

static const char *const env_names[] = {
    "ENCRYPTION_KEY",	"ENCRYPTION_KEY_PREVIOUS", "ENCRYPTION_KEY_VERSION",
    "KEYFS_MASTER_KEY", "KEY_BACKUP_DIR",	   "KEYFS_CONFIG",
};
#define N_ENV (sizeof(env_names) / sizeof(env_names[0]))
static char *env_saved[N_ENV];

static void clear_env(void)
{
	for (size_t i = 0; i < N_ENV; i++)
		unsetenv(env_names[i]);
	kf_env_forget(); /* what was taken from the environment, too */
}

static void suite_init(void)
{
	cr_assert(sodium_init() >= 0);
	for (size_t i = 0; i < N_ENV; i++) {
		const char *v = getenv(env_names[i]);

		env_saved[i] = v ? strdup(v) : NULL;
	}
	clear_env();
}

static void suite_fini(void)
{
	for (size_t i = 0; i < N_ENV; i++) {
		if (env_saved[i])
			setenv(env_names[i], env_saved[i], 1);
		else
			unsetenv(env_names[i]);
		free(env_saved[i]);
		env_saved[i] = NULL;
	}
}

TestSuite(manager, .init = suite_init, .fini = suite_fini);

/* --- fixture: a configuration whose every path is in one scratch dir --- */

struct fx {
	char *dir;
	char *state_file; /* dir/state/keyring */
	char *backups;	  /* dir/backups */
	char *master;	  /* dir/master.key */
	char *audit;	  /* the audit log */
	struct kf_config *cfg;
};

static const struct kf_caller who = {1001, 2001, 4242};

static void fx_setup(struct fx *f, const char *tag, const char *mode,
		     const char *audit_log, const char *extra)
{
	char err[KF_ERR_MAX] = "", *text;
	int r;

	memset(f, 0, sizeof(*f));
	f->dir = kt_tmpdir(tag);
	cr_assert(asprintf(&f->state_file, "%s/state/keyring", f->dir) > 0);
	cr_assert(asprintf(&f->backups, "%s/backups", f->dir) > 0);
	cr_assert(asprintf(&f->master, "%s/master.key", f->dir) > 0);
	if (audit_log)
		f->audit = strdup(audit_log);
	else
		cr_assert(asprintf(&f->audit, "%s/audit.log", f->dir) > 0);
	cr_assert(asprintf(&text,
			   "[keyfs]\n"
			   "mode = %s\n"
			   "state_dir = %s/state\n"
			   "backup_dir = %s\n"
			   "master_key_file = %s\n"
			   "audit_log = %s\n"
			   "%s%s",
			   mode, f->dir, f->backups, f->master, f->audit,
			   extra && strstr(extra, "rotate_interval")
			       ? ""
			       : "rotate_interval = 0\n",
			   extra ? extra : "") > 0);
	r = kf_config_parse(text, "test-manager.ini", f->dir, &f->cfg, err);
	cr_assert(r == 0, "configuration refused: %s\n%s", err, text);
	free(text);
}

static void fx_done(struct fx *f)
{
	kf_config_free(f->cfg);
	free(f->dir);
	free(f->state_file);
	free(f->backups);
	free(f->master);
	free(f->audit);
}

static struct kf_manager *open_ok(struct fx *f)
{
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m = NULL;
	int r = kf_manager_open(f->cfg, &m, err);

	cr_assert(r == 0, "kf_manager_open: %d %s", r, err);
	cr_assert_not_null(m);
	return m;
}

/* Opens, expecting failure; returns the code, err gets the message. */
static int open_fails(struct fx *f, char err[KF_ERR_MAX], const char *what)
{
	struct kf_manager *m = NULL;
	int r;

	err[0] = 0;
	r = kf_manager_open(f->cfg, &m, err);
	cr_assert(r < 0, "%s: kf_manager_open succeeded", what);
	cr_assert_null(m, "%s: manager returned on failure", what);
	cr_assert(err[0], "%s: no error text", what);
	return r;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* --- keys ---------------------------------------------------------------- */

static void new_key(uint8_t raw[KF_KEY_BYTES], char text[KF_KEY_TEXT_LEN + 1])
{
	kf_key_generate(raw);
	kf_key_encode(raw, text);
}

/* A master key file (text form + newline, 0600, root) at f->master. */
static void write_master(struct fx *f)
{
	uint8_t raw[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 2];

	new_key(raw, text);
	strcat(text, "\n");
	kt_write_file(f->master, text, 0600);
	sodium_memzero(raw, sizeof(raw));
	sodium_memzero(text, sizeof(text));
}

/* Every version held by a keyring, with its key bytes (sodium_malloc'd). */
#define SNAP_MAX 64
struct snap {
	size_t n;
	uint32_t highest;
	uint32_t version[SNAP_MAX];
	int64_t created[SNAP_MAX];
	uint8_t key[SNAP_MAX][KF_KEY_BYTES];
};

static struct snap *snap_take(struct kf_manager *m)
{
	struct kf_keyring *kr = kf_manager_keyring(m);
	struct snap *s = sodium_malloc(sizeof(*s));

	cr_assert_not_null(kr, "kf_manager_keyring returned NULL");
	cr_assert_not_null(s);
	memset(s, 0, sizeof(*s));
	s->n = kf_keyring_count(kr);
	cr_assert(s->n >= 1 && s->n <= SNAP_MAX, "keyring holds %zu versions",
		  s->n);
	s->highest = kf_keyring_highest(kr);
	for (size_t i = 0; i < s->n; i++) {
		const struct kf_keyring_entry *e = kf_keyring_at(kr, i);

		s->version[i] = e->version;
		s->created[i] = e->created;
		memcpy(s->key[i], e->key, KF_KEY_BYTES);
	}
	kf_keyring_unref(kr);
	return s;
}

static void snap_free(struct snap *s)
{
	if (s)
		sodium_free(s);
}

static bool snap_same(const struct snap *a, const struct snap *b)
{
	if (a->n != b->n || a->highest != b->highest)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->version[i] != b->version[i] ||
		    a->created[i] != b->created[i] ||
		    sodium_memcmp(a->key[i], b->key[i], KF_KEY_BYTES) != 0)
			return false;
	return true;
}

/* Index of version v in s, or -1. */
static int snap_find(const struct snap *s, uint32_t v)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->version[i] == v)
			return (int)i;
	return -1;
}

static uint32_t current_version(struct kf_manager *m)
{
	struct kf_keyring *kr = kf_manager_keyring(m);
	uint32_t v = kf_keyring_current_version(kr);

	kf_keyring_unref(kr);
	return v;
}

static void rotate_ok(struct kf_manager *m, uint32_t *ret_version)
{
	char err[KF_ERR_MAX] = "";
	uint32_t v = 0;
	int r = kf_manager_rotate(m, &who, &v, err);

	cr_assert(r == 0, "rotate: %d %s", r, err);
	if (ret_version)
		*ret_version = v;
}

/* --- files ---------------------------------------------------------------- */

static bool same_file(const char *path, const char *data, size_t len)
{
	size_t n = 0;
	char *now = kt_read_file(path, &n);
	bool same = now && n == len && memcmp(now, data, len) == 0;

	free(now);
	return same;
}

/* Entries of dir whose names start with prefix and end with suffix. */
static size_t count_files(const char *dir, const char *prefix,
			  const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (prefix && !starts_with(e->d_name, prefix))
			continue;
		if (suffix &&
		    (len < strlen(suffix) ||
		     strcmp(e->d_name + len - strlen(suffix), suffix) != 0))
			continue;
		n++;
	}
	closedir(d);
	return n;
}

/* Redirects standard error to a file around a call (to read warnings). */
static int saved_stderr = -1;

static void stderr_to(const char *path)
{
	int fd;

	fflush(stderr);
	saved_stderr = dup(2);
	cr_assert(saved_stderr >= 0);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert(dup2(fd, 2) == 2);
	close(fd);
}

static void stderr_back(void)
{
	fflush(stderr);
	cr_assert(dup2(saved_stderr, 2) == 2);
	close(saved_stderr);
	saved_stderr = -1;
}

/* --- audit records ---------------------------------------------------------
 */

/* The last record with event (borrowed), or NULL. */
static json_t *last_record(json_t *recs, const char *event)
{
	for (size_t i = json_array_size(recs); i-- > 0;) {
		json_t *o = json_array_get(recs, i);

		if (!strcmp(kt_str_of(o, "event"), event))
			return o;
	}
	return NULL;
}

static json_int_t int_field(json_t *o, const char *name, const char *what)
{
	json_t *v = json_object_get(o, name);

	cr_assert(json_is_integer(v), "%s: field %s missing or not an integer",
		  what, name);
	return json_integer_value(v);
}

static const char *str_field(json_t *o, const char *name, const char *what)
{
	json_t *v = json_object_get(o, name);

	cr_assert(json_is_string(v), "%s: field %s missing or not a string",
		  what, name);
	return json_string_value(v);
}

static bool bool_field(json_t *o, const char *name, const char *what)
{
	json_t *v = json_object_get(o, name);

	cr_assert(json_is_boolean(v), "%s: field %s missing or not a boolean",
		  what, name);
	return json_is_true(v);
}

/* timestamp, seq, chain, event, success, and who when given. */
static void assert_common(json_t *o, const struct kf_caller *w,
			  const char *what)
{
	int64_t t;

	cr_assert_not_null(o, "%s: no such record", what);
	cr_assert(kf_time_parse_rfc3339(str_field(o, "timestamp", what), &t) ==
		      0,
		  "%s: timestamp not RFC 3339", what);
	cr_assert(int_field(o, "seq", what) > 0);
	cr_assert_eq(strlen(str_field(o, "chain", what)), 64);
	(void)str_field(o, "event", what);
	(void)bool_field(o, "success", what);
	if (w) {
		cr_assert_eq(int_field(o, "uid", what), w->uid, "%s: uid",
			     what);
		cr_assert_eq(int_field(o, "gid", what), w->gid, "%s: gid",
			     what);
		cr_assert_eq(int_field(o, "pid", what), w->pid, "%s: pid",
			     what);
	} else {
		(void)int_field(o, "uid", what);
		(void)int_field(o, "gid", what);
		(void)int_field(o, "pid", what);
	}
	if (!bool_field(o, "success", what))
		cr_assert(strlen(str_field(o, "error", what)) > 0,
			  "%s: failure without error text", what);
}

static void verify_audit_ok(struct fx *f)
{
	char report[KF_ERR_MAX] = "";
	int r = kf_manager_verify_audit(f->cfg, NULL, true, report);

	cr_assert(r == 0, "audit verify: %d %s", r, report);
	cr_assert(starts_with(report, "ok: "), "report: %s", report);
}

/* True if text holds key's text form, standard base64 or hex. */
static bool holds_key(const char *text, const uint8_t key[KF_KEY_BYTES])
{
	char t[KF_KEY_TEXT_LEN + 1], std[KF_KEY_TEXT_LEN + 1],
	    hex[2 * KF_KEY_BYTES + 1];
	bool found;

	kf_key_encode(key, t);
	sodium_bin2base64(std, sizeof(std), key, KF_KEY_BYTES,
			  sodium_base64_VARIANT_ORIGINAL);
	kf_hex(key, KF_KEY_BYTES, hex);
	/* 43 characters: also catches the text without its padding. */
	t[KF_KEY_TEXT_LEN - 1] = 0;
	std[KF_KEY_TEXT_LEN - 1] = 0;
	found = kt_contains(text, t) || kt_contains(text, std) ||
		kt_contains(text, hex);
	sodium_memzero(t, sizeof(t));
	sodium_memzero(std, sizeof(std));
	sodium_memzero(hex, sizeof(hex));
	return found;
}

/* The archive in backups with key_version v, newest first; "" if none. */
static void backup_with_version(struct kf_manager *m, uint32_t v,
				char name[KF_BACKUP_NAME_MAX + 6])
{
	struct kf_backup_info *list = NULL;
	char err[KF_ERR_MAX] = "";
	size_t n = 0;

	cr_assert(kf_manager_list_backups(m, &list, &n, err) == 0, "%s", err);
	name[0] = 0;
	for (size_t i = 0; i < n; i++) {
		if (list[i].key_version == v) {
			snprintf(name, KF_BACKUP_NAME_MAX + 6, "%s",
				 list[i].name);
			break;
		}
	}
	free(list);
}

/* ======================================================================== */
/* 1. Start-up                                                               */
/* ======================================================================== */

Test(manager, startup_development_generates_version_1_and_master_key)
{
	char err[KF_ERR_MAX] = "", *logpath, *log, *mtext, *mtext2;
	struct kf_manager *m = NULL;
	struct snap *s, *again;
	json_t *recs, *rec;
	struct stat st;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-dev", "development", NULL, NULL);
	cr_assert(!exists(f.master));
	logpath = kf_path_join(f.dir, "open-stderr.log");
	stderr_to(logpath);
	r = kf_manager_open(f.cfg, &m, err);
	stderr_back();
	cr_assert(r == 0, "development start-up with nothing: %d %s", r, err);

	s = snap_take(m);
	cr_assert_eq(s->n, 1, "a new keyring holds %zu versions", s->n);
	cr_assert_eq(s->version[0], 1);
	cr_assert_eq(s->highest, 1);

	cr_assert(stat(f.master, &st) == 0, "no master key file was created");
	cr_assert(S_ISREG(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0600, "master key mode %04o",
		     st.st_mode & 07777);
	cr_assert_eq(st.st_uid, 0);
	mtext = kt_read_file_ok(f.master, NULL);
	cr_assert(strlen(mtext) >= KF_KEY_TEXT_LEN &&
		      kf_key_decode(mtext, KF_KEY_TEXT_LEN, NULL, NULL) == 0,
		  "master key file does not hold a key in text form");
	mtext[KF_KEY_TEXT_LEN] = 0;

	cr_assert(stat(f.state_file, &st) == 0, "no sealed state written");
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert(stat(f.cfg->state_dir, &st) == 0);
	cr_assert_eq(st.st_mode & 07777, 0700);

	/* the warning, and no key text in it */
	log = kt_read_file_ok(logpath, NULL);
	cr_assert(kt_contains(log, "created a new master key") &&
		      kt_contains(log, f.master),
		  "no warning about the new master key: %s", log);
	cr_assert(!kt_contains(log, mtext), "the warning shows the master key");
	cr_assert(!holds_key(log, s->key[0]), "stderr shows the data key");
	free(log);

	recs = kt_audit_read(f.audit, 0);
	rec = last_record(recs, "key_generate");
	assert_common(rec, NULL, "key_generate");
	cr_assert(bool_field(rec, "success", "key_generate"));
	cr_assert_eq(int_field(rec, "key_version", "key_generate"), 1);
	json_decref(recs);
	kf_manager_close(m);

	/* the second start loads the same key and keeps the master key */
	stderr_to(logpath);
	r = kf_manager_open(f.cfg, &m, err);
	stderr_back();
	cr_assert(r == 0, "restart: %d %s", r, err);
	log = kt_read_file_ok(logpath, NULL);
	cr_assert(!kt_contains(log, "created a new master key"),
		  "a second master key was created");
	free(log);
	again = snap_take(m);
	cr_assert(snap_same(s, again), "restart changed the keyring");
	mtext2 = kt_read_file_ok(f.master, NULL);
	cr_assert(strncmp(mtext, mtext2, KF_KEY_TEXT_LEN) == 0,
		  "restart replaced the master key");
	kf_manager_close(m);
	snap_free(s);
	snap_free(again);
	sodium_memzero(mtext, strlen(mtext));
	sodium_memzero(mtext2, strlen(mtext2));
	free(mtext);
	free(mtext2);
	free(logpath);
	fx_done(&f);
}

Test(manager, startup_production_without_master_key_refused)
{
	uint8_t raw[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 1], err[KF_ERR_MAX], want[KF_ERR_MAX];
	struct fx f;
	int r;

	fx_setup(&f, "mgr-prod-nomaster", "production", NULL, NULL);
	r = open_fails(&f, err, "production, no master key");
	cr_assert_eq(r, -ENOENT, "returned %d (%s)", r, err);
	snprintf(want, sizeof(want),
		 KVE_NONE ": no master key: set KEYFS_MASTER_KEY or create %s",
		 f.master);
	cr_assert(strcmp(err, want) == 0, "message \"%s\", expected \"%s\"",
		  err, want);
	cr_assert(!exists(f.master), "production created a master key");
	cr_assert(!exists(f.state_file), "production wrote a state");

	/* an ENCRYPTION_KEY cannot be sealed without a master key either */
	new_key(raw, text);
	setenv("ENCRYPTION_KEY", text, 1);
	r = open_fails(&f, err, "production, ENCRYPTION_KEY, no master key");
	cr_assert(starts_with(err, KVE_NONE), "message: %s", err);
	cr_assert(!kt_contains(err, text), "the message shows the key");
	cr_assert(!exists(f.master) && !exists(f.state_file));
	cr_assert_eq(count_files(f.backups, NULL, NULL), 0);
	sodium_memzero(raw, sizeof(raw));
	sodium_memzero(text, sizeof(text));
	fx_done(&f);
}

Test(manager, startup_production_with_master_key_but_no_keys_refused)
{
	uint8_t raw[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 1], err[KF_ERR_MAX];
	struct fx f;
	int r;

	fx_setup(&f, "mgr-prod-nokeys", "production", NULL, NULL);
	write_master(&f);
	r = open_fails(&f, err, "production, master key, no keys");
	cr_assert_eq(r, -ENOENT, "returned %d", r);
	cr_assert(strcmp(err, KVE_NONE) == 0, "message \"%s\"", err);
	cr_assert(!exists(f.state_file), "a state was written");
	cr_assert_eq(count_files(f.backups, NULL, NULL), 0,
		     "a backup was written");

	/* the same with the master key in KEYFS_MASTER_KEY */
	cr_assert(unlink(f.master) == 0);
	new_key(raw, text);
	setenv("KEYFS_MASTER_KEY", text, 1);
	r = open_fails(&f, err, "production, KEYFS_MASTER_KEY, no keys");
	cr_assert(strcmp(err, KVE_NONE) == 0, "message \"%s\"", err);
	cr_assert(!exists(f.state_file) && !exists(f.master));
	sodium_memzero(raw, sizeof(raw));
	sodium_memzero(text, sizeof(text));
	fx_done(&f);
}

Test(manager, startup_imports_environment_keys)
{
	uint8_t cur[KF_KEY_BYTES], prev[KF_KEY_BYTES];
	char ctext[KF_KEY_TEXT_LEN + 1], ptext[KF_KEY_TEXT_LEN + 1];
	struct kf_manager *m;
	struct snap *s, *again;
	struct fx f, g;
	json_t *recs, *rec;

	fx_setup(&f, "mgr-import", "production", NULL, NULL);
	write_master(&f);
	new_key(cur, ctext);
	new_key(prev, ptext);
	setenv("ENCRYPTION_KEY", ctext, 1);
	setenv("ENCRYPTION_KEY_PREVIOUS", ptext, 1);
	setenv("ENCRYPTION_KEY_VERSION", "7", 1);
	m = open_ok(&f);
	s = snap_take(m);
	cr_assert_eq(s->n, 2, "imported keyring holds %zu versions", s->n);
	cr_assert_eq(s->version[0], 7);
	cr_assert_eq(s->version[1], 6);
	cr_assert_eq(s->highest, 7);
	cr_assert(memcmp(s->key[0], cur, KF_KEY_BYTES) == 0,
		  "current key is not the imported ENCRYPTION_KEY");
	cr_assert(memcmp(s->key[1], prev, KF_KEY_BYTES) == 0,
		  "previous key is not the imported ENCRYPTION_KEY_PREVIOUS");
	cr_assert(exists(f.state_file), "import not sealed to disk");
	recs = kt_audit_read(f.audit, 0);
	rec = last_record(recs, "key_import");
	assert_common(rec, NULL, "key_import");
	cr_assert(bool_field(rec, "success", "key_import"));
	cr_assert_eq(int_field(rec, "key_version", "key_import"), 7);
	json_decref(recs);
	kf_manager_close(m);

	/* sealed: the next start needs no environment */
	clear_env();
	m = open_ok(&f);
	again = snap_take(m);
	cr_assert(snap_same(s, again), "the reloaded keyring differs");
	kf_manager_close(m);
	snap_free(again);

	/* only ENCRYPTION_KEY: version 1, no previous */
	fx_setup(&g, "mgr-import1", "production", NULL, NULL);
	write_master(&g);
	setenv("ENCRYPTION_KEY", ctext, 1);
	m = open_ok(&g);
	again = snap_take(m);
	cr_assert_eq(again->n, 1);
	cr_assert_eq(again->version[0], 1);
	cr_assert(memcmp(again->key[0], cur, KF_KEY_BYTES) == 0,
		  "current key is not the imported ENCRYPTION_KEY");
	kf_manager_close(m);
	snap_free(again);
	fx_done(&g);

	/* ENCRYPTION_KEY and a version, no previous */
	fx_setup(&g, "mgr-import3", "production", NULL, NULL);
	write_master(&g);
	setenv("ENCRYPTION_KEY_VERSION", "3", 1);
	m = open_ok(&g);
	cr_assert_eq(current_version(m), 3);
	kf_manager_close(m);
	fx_done(&g);

	snap_free(s);
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(prev, sizeof(prev));
	sodium_memzero(ctext, sizeof(ctext));
	sodium_memzero(ptext, sizeof(ptext));
	fx_done(&f);
}

Test(manager, startup_invalid_environment_refused_and_nothing_written)
{
	uint8_t raw[KF_KEY_BYTES];
	char good[KF_KEY_TEXT_LEN + 1], good2[KF_KEY_TEXT_LEN + 1];
	char short43[KF_KEY_TEXT_LEN], stdalpha[KF_KEY_TEXT_LEN + 1];
	char err[KF_ERR_MAX];
	struct fx f;

	new_key(raw, good);
	new_key(raw, good2);
	memcpy(short43, good, KF_KEY_TEXT_LEN - 1);
	short43[KF_KEY_TEXT_LEN - 1] = 0;
	memcpy(stdalpha, good, sizeof(stdalpha));
	stdalpha[5] = '+'; /* standard, not URL-safe, alphabet */
	const struct {
		const char *cur, *prev, *ver, *what;
	} cases[] = {
	    {short43, NULL, NULL, "ENCRYPTION_KEY of 43 characters"},
	    {stdalpha, NULL, NULL, "ENCRYPTION_KEY with '+'"},
	    {"not a key", NULL, NULL, "ENCRYPTION_KEY junk"},
	    {good, short43, "2", "ENCRYPTION_KEY_PREVIOUS invalid"},
	    {good, stdalpha, "2", "ENCRYPTION_KEY_PREVIOUS with '+'"},
	    {good, good2, "0", "ENCRYPTION_KEY_VERSION 0"},
	    {good, good2, "abc", "ENCRYPTION_KEY_VERSION abc"},
	    {good, good2, "-1", "ENCRYPTION_KEY_VERSION -1"},
	    {good, NULL, "0", "ENCRYPTION_KEY_VERSION 0, no previous"},
	    {good, NULL, "abc", "ENCRYPTION_KEY_VERSION abc, no previous"},
	    {good, NULL, "-1", "ENCRYPTION_KEY_VERSION -1, no previous"},
	    {good, NULL, "4294967296", "ENCRYPTION_KEY_VERSION 2^32"},
	    {good, NULL, "1.5", "ENCRYPTION_KEY_VERSION 1.5"},
	};

	fx_setup(&f, "mgr-badenv", "production", NULL, NULL);
	write_master(&f);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		clear_env();
		setenv("ENCRYPTION_KEY", cases[i].cur, 1);
		if (cases[i].prev)
			setenv("ENCRYPTION_KEY_PREVIOUS", cases[i].prev, 1);
		if (cases[i].ver)
			setenv("ENCRYPTION_KEY_VERSION", cases[i].ver, 1);
		(void)open_fails(&f, err, cases[i].what);
		cr_assert(starts_with(err, KVE_LOAD), "%s: message \"%s\"",
			  cases[i].what, err);
		cr_assert(strlen(err) > strlen(KVE_LOAD) + 2,
			  "%s: no reason given", cases[i].what);
		cr_assert(!kt_contains(err, good) && !kt_contains(err, good2) &&
			      !kt_contains(err, short43),
			  "%s: the message shows a key", cases[i].what);
		cr_assert(!exists(f.state_file), "%s: a state was written",
			  cases[i].what);
		cr_assert_eq(count_files(f.backups, NULL, NULL), 0,
			     "%s: a backup was written", cases[i].what);
	}
	/* and in development mode an invalid key is not replaced by a new one
	 */
	fx_done(&f);
	fx_setup(&f, "mgr-badenv-dev", "development", NULL, NULL);
	clear_env();
	setenv("ENCRYPTION_KEY", short43, 1);
	(void)open_fails(&f, err, "development, invalid ENCRYPTION_KEY");
	cr_assert(starts_with(err, KVE_LOAD), "message \"%s\"", err);
	cr_assert(!exists(f.state_file), "development generated a keyring");
	sodium_memzero(raw, sizeof(raw));
	sodium_memzero(good, sizeof(good));
	sodium_memzero(good2, sizeof(good2));
	sodium_memzero(short43, sizeof(short43));
	sodium_memzero(stdalpha, sizeof(stdalpha));
	fx_done(&f);
}

Test(manager, startup_state_wins_over_a_different_environment_key)
{
	uint8_t a[KF_KEY_BYTES], b[KF_KEY_BYTES];
	char atext[KF_KEY_TEXT_LEN + 1], btext[KF_KEY_TEXT_LEN + 1];
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m = NULL;
	struct snap *s, *again;
	char *logpath, *log;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-statewins", "production", NULL, NULL);
	write_master(&f);
	new_key(a, atext);
	new_key(b, btext);
	setenv("ENCRYPTION_KEY", atext, 1);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	s = snap_take(m);
	kf_manager_close(m);

	/* the same ENCRYPTION_KEY again, after a rotation: state wins */
	setenv("ENCRYPTION_KEY", btext, 1);
	setenv("ENCRYPTION_KEY_VERSION", "9", 1);
	logpath = kf_path_join(f.dir, "state-wins-stderr.log");
	stderr_to(logpath);
	r = kf_manager_open(f.cfg, &m, err);
	stderr_back();
	cr_assert(r == 0, "start-up with state and ENCRYPTION_KEY: %s", err);
	again = snap_take(m);
	cr_assert(snap_same(s, again),
		  "a different ENCRYPTION_KEY replaced the stored keyring");
	cr_assert_eq(again->version[0], 2);
	kf_manager_close(m);
	log = kt_read_file_ok(logpath, NULL);
	cr_assert(kt_contains(log, "ENCRYPTION_KEY differs"),
		  "no warning that the stored keyring wins: %s", log);
	cr_assert(!kt_contains(log, atext) && !kt_contains(log, btext) &&
		      !holds_key(log, s->key[0]) && !holds_key(log, s->key[1]),
		  "the warning shows key text");
	free(log);

	/* ENCRYPTION_KEY equal to the stored current key: no warning */
	char ctext[KF_KEY_TEXT_LEN + 1];

	kf_key_encode(s->key[0], ctext);
	setenv("ENCRYPTION_KEY", ctext, 1);
	stderr_to(logpath);
	r = kf_manager_open(f.cfg, &m, err);
	stderr_back();
	cr_assert(r == 0, "%s", err);
	kf_manager_close(m);
	log = kt_read_file_ok(logpath, NULL);
	cr_assert(!kt_contains(log, "ENCRYPTION_KEY differs"),
		  "warned about an ENCRYPTION_KEY equal to the stored key");
	free(log);

	snap_free(s);
	snap_free(again);
	free(logpath);
	sodium_memzero(a, sizeof(a));
	sodium_memzero(b, sizeof(b));
	sodium_memzero(atext, sizeof(atext));
	sodium_memzero(btext, sizeof(btext));
	sodium_memzero(ctext, sizeof(ctext));
	fx_done(&f);
}

Test(manager, startup_corrupted_state_refused_and_left_as_it_was)
{
	struct kf_manager *m;
	struct snap *s, *again;
	char err[KF_ERR_MAX], *orig, *bad;
	size_t len = 0, nb;
	struct fx f;

	fx_setup(&f, "mgr-corrupt", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	s = snap_take(m);
	kf_manager_close(m);
	nb = count_files(f.backups, NULL, NULL);
	orig = kt_read_file_ok(f.state_file, &len);
	cr_assert(len > 100);
	bad = malloc(len);
	cr_assert_not_null(bad);

	const size_t pos[] = {0, 9, 13, 20, 40, 60, len / 2, len - 1};

	for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++) {
		memcpy(bad, orig, len);
		bad[pos[i]] ^= 0x01;
		kt_write_bytes(f.state_file, bad, len, 0600);
		(void)open_fails(&f, err, "flipped byte");
		cr_assert(starts_with(err, KVE_LOAD),
			  "byte %zu flipped: message \"%s\"", pos[i], err);
		cr_assert(same_file(f.state_file, bad, len),
			  "byte %zu flipped: the state file was changed",
			  pos[i]);
		cr_assert_eq(count_files(f.backups, NULL, NULL), nb,
			     "byte %zu flipped: a backup was written", pos[i]);
	}
	/* truncated */
	kt_write_bytes(f.state_file, orig, len / 2, 0600);
	(void)open_fails(&f, err, "truncated state");
	cr_assert(starts_with(err, KVE_LOAD), "truncated: \"%s\"", err);
	cr_assert(same_file(f.state_file, orig, len / 2),
		  "the truncated state file was changed");

	/* the original loads again, unchanged */
	kt_write_bytes(f.state_file, orig, len, 0600);
	m = open_ok(&f);
	again = snap_take(m);
	cr_assert(snap_same(s, again), "the keyring changed");
	kf_manager_close(m);
	snap_free(s);
	snap_free(again);
	free(orig);
	free(bad);
	fx_done(&f);
}

Test(manager, startup_wrong_master_key_refused)
{
	uint8_t m1[KF_KEY_BYTES], m2[KF_KEY_BYTES], k[KF_KEY_BYTES];
	char m1t[KF_KEY_TEXT_LEN + 1], m2t[KF_KEY_TEXT_LEN + 1],
	    kt[KF_KEY_TEXT_LEN + 1], err[KF_ERR_MAX];
	struct kf_manager *m;
	struct snap *s, *again;
	size_t len = 0;
	char *orig;
	struct fx f;

	fx_setup(&f, "mgr-wrongmaster", "production", NULL, NULL);
	new_key(m1, m1t);
	new_key(m2, m2t);
	new_key(k, kt);
	setenv("KEYFS_MASTER_KEY", m1t, 1);
	setenv("ENCRYPTION_KEY", kt, 1);
	m = open_ok(&f);
	s = snap_take(m);
	kf_manager_close(m);
	orig = kt_read_file_ok(f.state_file, &len);

	setenv("KEYFS_MASTER_KEY", m2t, 1);
	(void)open_fails(&f, err, "wrong master key");
	cr_assert(starts_with(err, KVE_LOAD), "message \"%s\"", err);
	cr_assert(kt_contains(err, "master key"),
		  "the reason does not name the master key: %s", err);
	cr_assert(!kt_contains(err, m1t) && !kt_contains(err, m2t) &&
		      !kt_contains(err, kt),
		  "the message shows a key");
	cr_assert(same_file(f.state_file, orig, len),
		  "the state was changed under a wrong master key");

	setenv("KEYFS_MASTER_KEY", m1t, 1);
	m = open_ok(&f);
	again = snap_take(m);
	cr_assert(snap_same(s, again));
	kf_manager_close(m);
	snap_free(s);
	snap_free(again);
	free(orig);
	sodium_memzero(m1, sizeof(m1));
	sodium_memzero(m2, sizeof(m2));
	sodium_memzero(k, sizeof(k));
	sodium_memzero(m1t, sizeof(m1t));
	sodium_memzero(m2t, sizeof(m2t));
	sodium_memzero(kt, sizeof(kt));
	fx_done(&f);
}

/* ======================================================================== */
/* 2. Rotation                                                               */
/* ======================================================================== */

Test(manager, rotation_moves_current_to_previous_and_adds_one)
{
	struct kf_manager *m;
	struct snap *a, *b;
	uint32_t v = 0;
	struct fx f;

	fx_setup(&f, "mgr-rotate", "development", NULL, NULL);
	m = open_ok(&f);
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
	kf_manager_close(m);
	snap_free(a);
	snap_free(b);
	fx_done(&f);
}

Test(manager, retain_versions_honoured)
{
	for (unsigned retain = 1; retain <= 3; retain++) {
		char extra[64];
		struct kf_manager *m;
		struct snap *s, *again;
		struct fx f;

		snprintf(extra, sizeof(extra), "retain_versions = %u\n",
			 retain);
		fx_setup(&f, "mgr-retain", "development", NULL, extra);
		m = open_ok(&f);
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
		kf_manager_close(m);
		m = open_ok(&f);
		again = snap_take(m);
		cr_assert(snap_same(s, again), "retain %u: reload differs",
			  retain);
		kf_manager_close(m);
		snap_free(s);
		snap_free(again);
		fx_done(&f);
	}
}

Test(manager, each_rotation_writes_a_backup_of_the_new_keyring)
{
	struct kf_backup_info info;
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	size_t before;
	struct fx f;

	fx_setup(&f, "mgr-rotbackup", "development", NULL, NULL);
	m = open_ok(&f);
	for (uint32_t i = 0; i < 4; i++) {
		uint32_t v = 0;
		const char *name;
		char *path;
		json_t *recs, *rec;
		struct stat st;

		before = count_files(f.backups, "key_backup_", ".json");
		rotate_ok(m, &v);
		cr_assert_eq(
		    count_files(f.backups, "key_backup_", ".json"), before + 1,
		    "rotation to %" PRIu32 " did not add one archive", v);
		recs = kt_audit_read(f.audit, 0);
		rec = last_record(recs, "key_rotation");
		assert_common(rec, &who, "key_rotation");
		cr_assert(bool_field(rec, "backup_created", "key_rotation"));
		name = str_field(rec, "backup", "key_rotation");
		path = kf_path_join(f.backups, name);
		cr_assert(stat(path, &st) == 0,
			  "archive %s named in the audit "
			  "record does not exist",
			  name);
		cr_assert_eq(st.st_mode & 07777, 0600);
		cr_assert(kf_manager_verify_backup(f.cfg, path, &info, err) ==
			      0,
			  "%s: %s", name, err);
		cr_assert_eq(info.key_version, v,
			     "the rotation's archive holds version %" PRIu32,
			     info.key_version);
		/* before the trim: every old version is still in it */
		cr_assert_eq(info.n_versions, v == 2 ? 2 : 3);
		free(path);
		json_decref(recs);
	}
	kf_manager_close(m);
	fx_done(&f);
}

Test(manager, state_on_disk_equals_memory)
{
	struct kf_manager *m;
	struct snap *s, *again;
	struct fx f;

	fx_setup(&f, "mgr-disk", "development", NULL, "retain_versions = 3\n");
	m = open_ok(&f);
	for (int i = 0; i < 5; i++) {
		rotate_ok(m, NULL);
		s = snap_take(m);
		kf_manager_close(m);
		m = open_ok(&f);
		again = snap_take(m);
		cr_assert(snap_same(s, again),
			  "after rotation %d the reloaded keyring differs",
			  i + 1);
		snap_free(s);
		snap_free(again);
	}
	cr_assert_eq(current_version(m), 6);
	kf_manager_close(m);
	fx_done(&f);
}

Test(manager, version_numbers_never_reused_after_restore)
{
	char name[KF_BACKUP_NAME_MAX + 6], err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct snap *at2, *now;
	uint32_t v = 0;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-noreuse", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, &v);
	cr_assert_eq(v, 2);
	at2 = snap_take(m);
	backup_with_version(m, 2, name);
	cr_assert(name[0], "no archive holds version 2");
	rotate_ok(m, &v);
	rotate_ok(m, &v);
	cr_assert_eq(v, 4);

	r = kf_manager_restore(m, &who, name, false, &v, NULL, err);
	cr_assert(r == 0, "restore %s: %d %s", name, r, err);
	cr_assert_eq(v, 2, "restore reported version %" PRIu32, v);
	now = snap_take(m);
	cr_assert_eq(now->version[0], 2);
	cr_assert(sodium_memcmp(now->key[0], at2->key[0], KF_KEY_BYTES) == 0,
		  "restored current key is not the key of version 2");
	cr_assert_eq(now->highest, 4, "highest issued forgotten: %" PRIu32,
		     now->highest);
	snap_free(now);

	rotate_ok(m, &v);
	cr_assert_eq(v, 5, "rotation after restore issued %" PRIu32, v);
	/* and across a restart */
	cr_assert(kf_manager_restore(m, &who, name, false, &v, NULL, err) == 0,
		  "%s", err);
	kf_manager_close(m);
	m = open_ok(&f);
	rotate_ok(m, &v);
	cr_assert_eq(v, 6, "rotation after restart issued %" PRIu32, v);
	kf_manager_close(m);
	snap_free(at2);
	fx_done(&f);
}

/* ======================================================================== */
/* 3. Concurrency                                                            */
/* ======================================================================== */

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
		a->rc[i] = kf_manager_rotate(a->m, &who, &a->got[i], a->err);
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

Test(manager, concurrent_rotations_serialise, .timeout = 120)
{
	struct rot_arg args[THREADS];
	pthread_t th[THREADS];
	uint32_t all[THREADS * PER_THREAD];
	struct kf_manager *m;
	struct snap *s;
	json_t *recs;
	struct fx f;

	fx_setup(&f, "mgr-threads", "development", NULL,
		 "retain_versions = 64\n");
	m = open_ok(&f);
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
	recs = kt_audit_read(f.audit, 0);
	cr_assert_eq(kt_count_records(recs, "key_rotation", 1),
		     THREADS * PER_THREAD);
	cr_assert_eq(kt_count_records(recs, "key_rotation", 0), 0);
	json_decref(recs);
	kf_manager_close(m);
	verify_audit_ok(&f);

	/* the sealed state is the last of them */
	m = open_ok(&f);
	cr_assert_eq(current_version(m), 1 + THREADS * PER_THREAD);
	kf_manager_close(m);
	snap_free(s);
	fx_done(&f);
}

/* ======================================================================== */
/* 4. Retire                                                                 */
/* ======================================================================== */

Test(manager, retire_refuses_current_and_unknown_and_backs_up_first)
{
	struct kf_backup_info info;
	char err[KF_ERR_MAX] = "", name[KF_BACKUP_NAME_MAX + 6];
	struct kf_manager *m;
	struct snap *before, *s;
	uint32_t v = 0;
	char *path;
	json_t *recs, *rec;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-retire", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	before = snap_take(m);
	cr_assert_eq(before->n, 2);

	r = kf_manager_retire(m, &who, 2, err);
	cr_assert_eq(r, -EBUSY, "retire of the current version: %d %s", r, err);
	cr_assert(kt_contains(err, "current"), "unclear: %s", err);
	r = kf_manager_retire(m, &who, 99, err);
	cr_assert_eq(r, -ENOENT, "retire of an unknown version: %d %s", r, err);
	s = snap_take(m);
	cr_assert(snap_same(before, s), "a refused retire changed the keyring");
	snap_free(s);
	recs = kt_audit_read(f.audit, 0);
	cr_assert_eq(kt_count_records(recs, "key_retire", 0), 2,
		     "refused retires not audited");
	json_decref(recs);

	size_t nb = count_files(f.backups, NULL, ".json");

	r = kf_manager_retire(m, &who, 1, err);
	cr_assert(r == 0, "retire of the previous version: %d %s", r, err);
	s = snap_take(m);
	cr_assert_eq(s->n, 1);
	cr_assert_eq(s->version[0], 2);
	cr_assert(snap_find(s, 1) < 0, "version 1 still held");
	snap_free(s);
	cr_assert_eq(count_files(f.backups, NULL, ".json"), nb + 1,
		     "retire wrote no backup");

	recs = kt_audit_read(f.audit, 0);
	rec = last_record(recs, "key_retire");
	assert_common(rec, &who, "key_retire");
	cr_assert(bool_field(rec, "success", "key_retire"));
	cr_assert_eq(int_field(rec, "key_version", "key_retire"), 1);
	cr_assert(bool_field(rec, "backup_created", "key_retire"));
	snprintf(name, sizeof(name), "%s", str_field(rec, "backup", "retire"));
	json_decref(recs);
	path = kf_path_join(f.backups, name);
	cr_assert(kf_manager_verify_backup(f.cfg, path, &info, err) == 0,
		  "the backup taken before the retire: %s", err);
	cr_assert_eq(info.key_version, 2);
	cr_assert_eq(info.n_versions, 2, "it does not hold the retired key");

	/* gone across a restart too */
	kf_manager_close(m);
	m = open_ok(&f);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) < 0, "the retired version came back");
	snap_free(s);

	/* a routine restore keeps it retired, and says so */
	{
		char note[KF_ERR_MAX] = "";

		r = kf_manager_restore(m, &who, name, false, &v, note, err);
		cr_assert(r == 0, "restore of %s: %s", name, err);
		cr_assert(kt_contains(note, "stay retired: 1"), "note: %s",
			  note);
		s = snap_take(m);
		cr_assert(snap_find(s, 1) < 0,
			  "a restore brought retired version 1 back");
		snap_free(s);
	}
	/* and across a restart: the keyring remembers what it retired */
	kf_manager_close(m);
	m = open_ok(&f);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) < 0, "the retired version came back");
	snap_free(s);

	/* the backup brings it back with force, with the same key */
	r = kf_manager_restore(m, &who, name, true, &v, NULL, err);
	cr_assert(r == 0, "restore of %s: %s", name, err);
	s = snap_take(m);
	cr_assert(snap_find(s, 1) == 1, "restore did not bring version 1 back");
	cr_assert(sodium_memcmp(s->key[1], before->key[1], KF_KEY_BYTES) == 0,
		  "the restored version 1 has another key");
	cr_assert(sodium_memcmp(s->key[0], before->key[0], KF_KEY_BYTES) == 0);
	snap_free(s);
	kf_manager_close(m);
	snap_free(before);
	free(path);
	fx_done(&f);
}

/* ======================================================================== */
/* 5. Backups, restore, prune                                                */
/* ======================================================================== */

Test(manager, named_and_timestamped_backups)
{
	char err[KF_ERR_MAX] = "", ret[KF_BACKUP_NAME_MAX + 6] = "";
	struct kf_backup_info info;
	struct kf_manager *m;
	char *path, *orig;
	size_t len = 0;
	json_t *recs, *rec;
	struct stat st;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-backup", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	r = kf_manager_backup(m, &who, "nightly", ret, err);
	cr_assert(r == 0, "named backup: %d %s", r, err);
	cr_assert_str_eq(ret, "nightly.json");
	path = kf_path_join(f.backups, "nightly.json");
	cr_assert(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600,
		  "nightly.json missing or not 0600");
	cr_assert(kf_manager_verify_backup(f.cfg, path, &info, err) == 0, "%s",
		  err);
	cr_assert_eq(info.key_version, 2);
	recs = kt_audit_read(f.audit, 0);
	rec = last_record(recs, "key_backup");
	assert_common(rec, &who, "key_backup");
	cr_assert(bool_field(rec, "success", "key_backup"));
	cr_assert_str_eq(str_field(rec, "backup", "key_backup"),
			 "nightly.json");
	cr_assert_eq(int_field(rec, "key_version", "key_backup"), 2);
	json_decref(recs);

	/* an existing name is refused and the archive stays */
	orig = kt_read_file_ok(path, &len);
	r = kf_manager_backup(m, &who, "nightly", ret, err);
	cr_assert_eq(r, -EEXIST, "duplicate name: %d %s", r, err);
	cr_assert(same_file(path, orig, len), "the archive was overwritten");
	recs = kt_audit_read(f.audit, 0);
	rec = last_record(recs, "key_backup");
	cr_assert(!bool_field(rec, "success", "duplicate backup"),
		  "the refused backup is not recorded as failed");
	assert_common(rec, &who, "duplicate backup");
	json_decref(recs);

	/* timestamped */
	r = kf_manager_backup(m, &who, NULL, ret, err);
	cr_assert(r == 0, "timestamped backup: %d %s", r, err);
	cr_assert(starts_with(ret, "key_backup_") && strlen(ret) > 5 &&
		      !strcmp(ret + strlen(ret) - 5, ".json"),
		  "timestamped name %s", ret);
	kf_manager_close(m);
	free(orig);
	free(path);
	fx_done(&f);
}

Test(manager, invalid_backup_names_refused_unwritten_unrecorded)
{
	uint8_t raw[KF_KEY_BYTES];
	char keytext[KF_KEY_TEXT_LEN + 1], err[KF_ERR_MAX] = "";
	char ret[KF_BACKUP_NAME_MAX + 6], longname[80], *before, *after;
	char *audit;
	struct kf_manager *m;
	json_t *recs, *rec;
	struct fx f;

	memset(longname, 'n', 65);
	longname[65] = 0;
	new_key(raw, keytext);
	const char *names[] = {
	    "../escape-attempt",
	    "bad/name-slash",
	    ".hidden-name",
	    "",
	    longname,
	    "caf\xc3\xa9-name",
	    "a..b-dots",
	    "with space",
	    keytext,
	    "-leading-dash",
	};

	fx_setup(&f, "mgr-badname", "development", NULL, NULL);
	m = open_ok(&f);
	before = kt_names(f.backups);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int r = kf_manager_backup(m, &who, names[i], ret, err);

		cr_assert_eq(r, -EINVAL, "name %zu accepted: %d", i, r);
		cr_assert(!kt_contains(err, keytext),
			  "the error echoes the name");
		after = kt_names(f.backups);
		cr_assert_str_eq(after, before,
				 "name %zu: the backup dir changed", i);
		free(after);
		recs = kt_audit_read(f.audit, 0);
		rec = last_record(recs, "key_backup");
		assert_common(rec, &who, "invalid name");
		cr_assert(!bool_field(rec, "success", "invalid name"),
			  "name %zu: no failure record", i);
		json_decref(recs);
	}
	after = kf_path_join(f.dir, "escape-attempt.json");
	cr_assert(!exists(after), "a name escaped backup_dir");
	free(after);
	audit = kt_read_file_ok(f.audit, NULL);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) >= 5)
			cr_assert(!kt_contains(audit, names[i]),
				  "invalid name %zu is in the audit log", i);
	cr_assert(!holds_key(audit, raw), "the key-shaped name is audited");
	kf_manager_close(m);
	verify_audit_ok(&f);
	free(audit);
	free(before);
	sodium_memzero(raw, sizeof(raw));
	sodium_memzero(keytext, sizeof(keytext));
	fx_done(&f);
}

Test(manager, restore_by_name_by_name_json_and_by_path)
{
	char err[KF_ERR_MAX] = "", *abspath;
	struct kf_backup_info info;
	struct kf_manager *m;
	struct snap *at1, *s;
	uint32_t v = 0;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-restore", "development", NULL, NULL);
	m = open_ok(&f);
	at1 = snap_take(m);
	cr_assert(kf_manager_backup(m, &who, "snap", NULL, err) == 0, "%s",
		  err);
	abspath = kf_path_join(f.backups, "snap.json");

	const char *whats[] = {"snap", "snap.json", abspath};

	for (size_t i = 0; i < 3; i++) {
		size_t pre = count_files(f.backups, "pre_restore_", ".json");
		uint32_t was;
		char name[KF_BACKUP_NAME_MAX + 6];
		json_t *recs, *rec;
		char *p;

		rotate_ok(m, NULL);
		rotate_ok(m, NULL);
		was = current_version(m);
		r = kf_manager_restore(m, &who, whats[i], false, &v, NULL, err);
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
		cr_assert_eq(count_files(f.backups, "pre_restore_", ".json"),
			     pre + 1, "no pre_restore_ archive after \"%s\"",
			     whats[i]);
		recs = kt_audit_read(f.audit, 0);
		rec = last_record(recs, "key_restore");
		assert_common(rec, &who, "key_restore");
		cr_assert(bool_field(rec, "success", "key_restore"));
		cr_assert_eq(int_field(rec, "key_version", "key_restore"), 1);
		cr_assert_eq(int_field(rec, "previous_version", "key_restore"),
			     was);
		snprintf(name, sizeof(name), "%s",
			 str_field(rec, "pre_restore_backup", "key_restore"));
		json_decref(recs);
		/* the pre_restore_ archive holds the replaced keyring */
		p = kf_path_join(f.backups, name);
		cr_assert(kf_manager_verify_backup(f.cfg, p, &info, err) == 0,
			  "%s: %s", name, err);
		cr_assert_eq(info.key_version, was);
		free(p);
	}
	kf_manager_close(m);
	snap_free(at1);
	free(abspath);
	fx_done(&f);
}

/* dir/name in a buffer reused by the next call. */
static const char *in_dir(const char *dir, const char *name)
{
	static char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

Test(manager, failed_restores_change_nothing)
{
	char err[KF_ERR_MAX] = "", *good, *orig, *data, *p, *state, *list;
	struct kf_manager *m, *other;
	struct snap *before, *s;
	size_t len = 0, slen = 0, failures;
	uint32_t v = 0;
	struct fx f, g;
	json_t *recs;

	fx_setup(&f, "mgr-badrestore", "development", NULL, NULL);
	fx_setup(&g, "mgr-foreign", "development", NULL, NULL);
	m = open_ok(&f);
	other = open_ok(&g);
	cr_assert(kf_manager_backup(other, &who, "foreign", NULL, err) == 0,
		  "%s", err);
	kf_manager_close(other);
	p = kf_path_join(g.backups, "foreign.json");
	good = kf_path_join(f.backups, "foreign.json");
	kt_copy_file(p, good);
	free(p);
	free(good);

	cr_assert(kf_manager_backup(m, &who, "good", NULL, err) == 0, "%s",
		  err);
	good = kf_path_join(f.backups, "good.json");
	orig = kt_read_file_ok(good, &len);
	data = malloc(len + 1);
	cr_assert_not_null(data);
	memcpy(data, orig, len + 1);
	/* one base64 character of the ciphertext changed */
	p = strstr(data, "\"ciphertext\":\"");
	cr_assert_not_null(p);
	p += strlen("\"ciphertext\":\"") + 10;
	*p = *p == 'A' ? 'B' : 'A';
	kt_write_bytes(in_dir(f.backups, "tampered.json"), data, len, 0600);
	memcpy(data, orig, len);
	/* a clear field edited: key_version */
	p = strstr(data, "\"key_version\":");
	cr_assert_not_null(p);
	p += strlen("\"key_version\":");
	*p = *p == '9' ? '8' : (char)(*p + 1);
	kt_write_bytes(in_dir(f.backups, "edited.json"), data, len, 0600);
	memcpy(data, orig, len);
	kt_write_bytes(in_dir(f.backups, "truncated.json"), data, len / 2,
		       0600);
	kt_write_file(in_dir(f.backups, "notarchive.json"),
		      "{\"hello\":\"world\"}\n", 0600);
	kt_write_file(in_dir(f.dir, "plain.txt"), "not json\n", 0600);

	char *abs_tampered = kf_path_join(f.backups, "tampered.json");
	char *abs_plain = kf_path_join(f.dir, "plain.txt");
	char *abs_missing = kf_path_join(f.dir, "missing.json");
	const char *whats[] = {
	    "missing",	  "missing.json", abs_missing,	  "tampered",
	    abs_tampered, "edited.json",  "truncated",	  "notarchive",
	    abs_plain,	  "foreign",	  "../good.json", "",
	    "a/b",	  f.backups,
	};
	const size_t n = sizeof(whats) / sizeof(whats[0]);

	rotate_ok(m, NULL);
	before = snap_take(m);
	state = kt_read_file_ok(f.state_file, &slen);
	list = kt_names(f.backups);
	for (size_t i = 0; i < n; i++) {
		char *now;
		int r =
		    kf_manager_restore(m, &who, whats[i], false, &v, NULL, err);

		cr_assert(r < 0, "restore of \"%s\" succeeded", whats[i]);
		cr_assert(starts_with(err, KBE_RESTORE) &&
			      strlen(err) > strlen(KBE_RESTORE) + 2,
			  "restore of \"%s\": message \"%s\"", whats[i], err);
		s = snap_take(m);
		cr_assert(snap_same(before, s),
			  "a failed restore of \"%s\" changed the keyring",
			  whats[i]);
		snap_free(s);
		cr_assert(same_file(f.state_file, state, slen),
			  "a failed restore of \"%s\" changed the state",
			  whats[i]);
		now = kt_names(f.backups);
		cr_assert_str_eq(now, list,
				 "a failed restore of \"%s\" changed backups/",
				 whats[i]);
		free(now);
	}
	recs = kt_audit_read(f.audit, 0);
	failures = kt_count_records(recs, "key_restore", 0);
	cr_assert_eq(failures, n, "%zu failed restores audited, not %zu",
		     failures, n);
	assert_common(last_record(recs, "key_restore"), &who, "key_restore");
	cr_assert(kt_contains(
	    str_field(last_record(recs, "key_restore"), "error", "key_restore"),
	    KBE_RESTORE));
	json_decref(recs);
	kf_manager_close(m);
	verify_audit_ok(&f);
	snap_free(before);
	free(state);
	free(list);
	free(data);
	free(orig);
	free(good);
	free(abs_tampered);
	free(abs_plain);
	free(abs_missing);
	fx_done(&f);
	fx_done(&g);
}

Test(manager, prune_keeps_n_newest_and_reports_deleted)
{
	char err[KF_ERR_MAX] = "", name[16];
	struct kf_backup_info *list = NULL;
	struct kf_manager *m;
	size_t n = 0, deleted = 99;
	json_t *recs, *rec;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-prune", "development", NULL, NULL);
	m = open_ok(&f);
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "b%d", i);
		cr_assert(kf_manager_backup(m, &who, name, NULL, err) == 0,
			  "%s", err);
	}
	cr_assert(kf_manager_list_backups(m, &list, &n, err) == 0, "%s", err);
	free(list);
	cr_assert(n >= 5);

	r = kf_manager_prune(m, &who, 2, false, &deleted, NULL, err);
	cr_assert(r == 0, "prune: %d %s", r, err);
	cr_assert_eq(deleted, n - 2, "prune reported %zu deleted of %zu",
		     deleted, n);
	cr_assert_eq(count_files(f.backups, NULL, ".json"), 2);
	recs = kt_audit_read(f.audit, 0);
	rec = last_record(recs, "backup_cleanup");
	assert_common(rec, &who, "backup_cleanup");
	cr_assert(bool_field(rec, "success", "backup_cleanup"));
	cr_assert_eq(int_field(rec, "keep", "backup_cleanup"), 2);
	cr_assert_eq(int_field(rec, "deleted", "backup_cleanup"),
		     (json_int_t)(n - 2));
	json_decref(recs);

	r = kf_manager_prune(m, &who, 2, false, &deleted, NULL, err);
	cr_assert(r == 0 && deleted == 0, "second prune: %d, %zu deleted", r,
		  deleted);
	/* 0 would delete every backup: refused unless forced. */
	r = kf_manager_prune(m, &who, 0, false, &deleted, NULL, err);
	cr_assert(r == -EINVAL && kt_contains(err, "0 force"), "prune 0: %d %s",
		  r, err);
	cr_assert_eq(count_files(f.backups, NULL, ".json"), 2);
	r = kf_manager_prune(m, &who, 0, true, &deleted, NULL, err);
	cr_assert(r == 0 && deleted == 2, "prune 0 force: %d, %zu deleted", r,
		  deleted);
	cr_assert_eq(count_files(f.backups, NULL, ".json"), 0);
	kf_manager_close(m);
	fx_done(&f);
}

Test(manager, automatic_backups_pruned_to_backup_keep)
{
	char err[KF_ERR_MAX] = "", *mine, *orig;
	struct kf_manager *m;
	size_t len = 0;
	json_t *recs;
	struct fx f;

	fx_setup(&f, "mgr-autoprune", "development", NULL, "backup_keep = 3\n");
	m = open_ok(&f);
	cr_assert(kf_manager_backup(m, &who, "mine", NULL, err) == 0, "%s",
		  err);
	mine = kf_path_join(f.backups, "mine.json");
	orig = kt_read_file_ok(mine, &len);
	for (int i = 0; i < 6; i++)
		rotate_ok(m, NULL);
	/* The newest 3 (versions 7, 6, 5), and version 4's (4, 3, 2), the
	 * last copy of version 2; version 1 is in "mine". */
	cr_assert_eq(count_files(f.backups, "key_backup_", ".json"), 4,
		     "%zu automatic archives kept, backup_keep is 3",
		     count_files(f.backups, "key_backup_", ".json"));
	cr_assert(same_file(mine, orig, len), "the named backup was touched");
	recs = kt_audit_read(f.audit, 0);
	cr_assert(kt_count_records(recs, "backup_cleanup", 1) >= 1,
		  "automatic pruning is not audited");
	json_decref(recs);
	kf_manager_close(m);
	free(mine);
	free(orig);
	fx_done(&f);
}

/*
 * Automatic pruning must keep the newest archives, also when many are made
 * within one second (generated names then carry _2, _3, ... _10, _11).
 */
Test(manager, automatic_prune_keeps_the_newest_archive, .timeout = 60)
{
	char name[KF_BACKUP_NAME_MAX + 6];
	struct kf_manager *m;
	struct fx f;

	fx_setup(&f, "mgr-autoprune-newest", "development", NULL,
		 "backup_keep = 3\n");
	m = open_ok(&f);
	for (int i = 0; i < 25; i++) {
		uint32_t v = 0;

		rotate_ok(m, &v);
		backup_with_version(m, v, name);
		cr_assert(name[0],
			  "rotation %d: the archive of the new version %" PRIu32
			  " was pruned at once (older ones kept)",
			  i + 1, v);
	}
	kf_manager_close(m);
	fx_done(&f);
}

/* ======================================================================== */
/* 6. Audit                                                                  */
/* ======================================================================== */

Test(manager, every_operation_is_audited_with_its_fields)
{
	char err[KF_ERR_MAX] = "", report[KF_ERR_MAX] = "", want[64];
	struct kf_manager *m;
	size_t deleted = 0, lines;
	uint32_t v = 0;
	json_t *recs, *rec;
	struct snap *s;
	struct fx f;
	char *text;

	fx_setup(&f, "mgr-auditfields", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	cr_assert(kf_manager_backup(m, &who, "fields", NULL, err) == 0, "%s",
		  err);
	cr_assert(kf_manager_retire(m, &who, 1, err) == 0, "%s", err);
	cr_assert(kf_manager_retire(m, &who, 2, err) == -EBUSY);
	cr_assert(kf_manager_restore(m, &who, "fields", false, &v, NULL, err) ==
		      0,
		  "%s", err);
	cr_assert(kf_manager_prune(m, &who, 100, false, &deleted, NULL, err) ==
		      0,
		  "%s", err);
	cr_assert(kf_manager_restore(m, &who, "missing", false, &v, NULL, err) <
		  0);
	s = snap_take(m);
	kf_manager_close(m);
	m = open_ok(&f); /* key_load */
	kf_manager_close(m);

	recs = kt_audit_read(f.audit, 0);
	lines = json_array_size(recs);

	rec = last_record(recs, "key_generate");
	assert_common(rec, NULL, "key_generate");
	cr_assert_eq(int_field(rec, "key_version", "key_generate"), 1);

	/* the seed's record, exactly its fields and values */
	rec = last_record(recs, "key_rotation");
	assert_common(rec, &who, "key_rotation");
	cr_assert_eq(int_field(rec, "key_version", "key_rotation"), 2);
	cr_assert_eq(int_field(rec, "previous_version", "key_rotation"), 1);
	cr_assert(bool_field(rec, "success", "key_rotation"));
	cr_assert(bool_field(rec, "backup_created", "key_rotation"));

	rec = last_record(recs, "key_backup");
	assert_common(rec, &who, "key_backup");
	cr_assert(bool_field(rec, "success", "key_backup"));
	cr_assert_eq(int_field(rec, "key_version", "key_backup"), 2);
	cr_assert_str_eq(str_field(rec, "backup", "key_backup"), "fields.json");

	cr_assert_eq(kt_count_records(recs, "key_retire", 1), 1);
	cr_assert_eq(kt_count_records(recs, "key_retire", 0), 1);
	rec = last_record(recs, "key_retire");
	assert_common(rec, &who, "key_retire (refused)");
	cr_assert(!bool_field(rec, "success", "key_retire"));
	cr_assert_eq(int_field(rec, "key_version", "key_retire"), 2);

	cr_assert_eq(kt_count_records(recs, "key_restore", 1), 1);
	cr_assert_eq(kt_count_records(recs, "key_restore", 0), 1);
	for (size_t i = 0; i < lines; i++) {
		json_t *o = json_array_get(recs, i);

		if (strcmp(kt_str_of(o, "event"), "key_restore") != 0 ||
		    !json_is_true(json_object_get(o, "success")))
			continue;
		assert_common(o, &who, "key_restore");
		cr_assert_eq(int_field(o, "key_version", "key_restore"), 2);
		cr_assert_eq(int_field(o, "previous_version", "key_restore"),
			     2);
		cr_assert_str_eq(str_field(o, "backup", "key_restore"),
				 "fields");
	}
	rec = last_record(recs, "key_restore");
	assert_common(rec, &who, "key_restore (failed)");
	cr_assert(!bool_field(rec, "success", "key_restore"));
	cr_assert(
	    starts_with(str_field(rec, "error", "key_restore"), KBE_RESTORE));

	rec = last_record(recs, "backup_cleanup");
	assert_common(rec, &who, "backup_cleanup");
	cr_assert(bool_field(rec, "success", "backup_cleanup"));
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

	cr_assert(kf_manager_verify_audit(f.cfg, NULL, true, report) == 0, "%s",
		  report);
	snprintf(want, sizeof(want), "ok: %zu records (seq 1-%zu); end checked",
		 lines, lines);
	cr_assert(starts_with(report, want), "report: %s", report);

	/* no key text anywhere in the log */
	text = kt_read_file_ok(f.audit, NULL);
	for (size_t i = 0; i < s->n; i++)
		cr_assert(!holds_key(text, s->key[i]),
			  "the audit log holds the key of version %" PRIu32,
			  s->version[i]);
	free(text);
	snap_free(s);
	fx_done(&f);
}

static void assert_truncation_detected(struct fx *f, const char *what)
{
	char report[KF_ERR_MAX] = "";
	int r = kf_manager_verify_audit(f->cfg, NULL, true, report);

	cr_assert_eq(r, -EBADMSG, "%s: verify of a truncated log: %d %s", what,
		     r, report);
	cr_assert(
	    kt_contains(report, "truncated") || kt_contains(report, "anchor") ||
		kt_contains(report, "sealed state"),
	    "%s: the report does not name the truncation: %s", what, report);
}

Test(manager, truncated_audit_log_detected)
{
	struct kf_manager *m;
	struct fx f;

	fx_setup(&f, "mgr-trunc", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	rotate_ok(m, NULL);
	kf_manager_close(m);
	verify_audit_ok(&f);
	/* the last line is the rotation's: the sealed anchor */
	kt_drop_last_line(f.audit);
	assert_truncation_detected(&f, "rotation record removed");
	fx_done(&f);
}

/*
 * DESIGN.md §6: "The sealed state keeps the last (seq, chain) it saw, so a
 * truncated log is detected too".  Removing the record of a later
 * management operation (here a backup, and a failed restore) must be
 * detected as well.
 */
Test(manager, truncated_audit_log_detected_after_any_management_record)
{
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	uint32_t v;
	struct fx f;

	fx_setup(&f, "mgr-trunc3", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	cr_assert(kf_manager_backup(m, &who, "after", NULL, err) == 0, "%s",
		  err);
	kf_manager_close(m);
	kt_drop_last_line(f.audit);
	assert_truncation_detected(&f, "key_backup record removed");
	fx_done(&f);

	fx_setup(&f, "mgr-trunc4", "development", NULL, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	cr_assert(kf_manager_restore(m, &who, "missing", false, &v, NULL, err) <
		  0);
	kf_manager_close(m);
	kt_drop_last_line(f.audit);
	assert_truncation_detected(&f, "failed key_restore record removed");
	fx_done(&f);
}

/* ======================================================================== */
/* 7. An audit log that cannot be written                                    */
/* ======================================================================== */

/* The tmpfs of the current test; unmounted by .fini, also on failure. */
static const char *tiny_mount;

static char *mount_tiny(const char *tag)
{
	tiny_mount = kt_tmpfs(tag, "12k");
	return kf_path_join(tiny_mount, "audit.log");
}

/* Fills the tmpfs with a filler file (until ENOSPC). */
static void fill_tiny(void)
{
	char *path = kf_path_join(tiny_mount, "filler"), buf[512];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	free(path);
}

static void free_tiny(void)
{
	char *path = kf_path_join(tiny_mount, "filler");

	cr_assert(unlink(path) == 0);
	free(path);
}

/*
 * A manager (retain 3, versions 3 2 1, a backup "kept") whose audit log is
 * on a full tmpfs: prune (the shortest record) is repeated until its record
 * no longer fits, so every longer record fails too.
 */
static struct kf_manager *full_audit(struct fx *f, const char *tag)
{
	char err[KF_ERR_MAX] = "", *audit = mount_tiny(tag);
	struct kf_manager *m;
	size_t deleted;
	int r = 0, i;

	fx_setup(f, tag, "development", audit, "retain_versions = 3\n");
	free(audit);
	m = open_ok(f);
	rotate_ok(m, NULL);
	rotate_ok(m, NULL);
	cr_assert(kf_manager_backup(m, &who, "kept", NULL, err) == 0, "%s",
		  err);
	fill_tiny();
	for (i = 0; i < 200 && r == 0; i++)
		r = kf_manager_prune(m, &who, 9, false, &deleted, NULL, err);
	cr_assert(r == -ENOSPC, "prune on a full audit fs ended with %d (%s)",
		  r, err);
	cr_assert(kt_contains(err, "audit log"), "unclear: %s", err);
	return m;
}

struct frozen {
	struct snap *snap;
	char *state, *backups, *statedir;
	size_t slen;
};

static void freeze(struct kf_manager *m, struct fx *f, struct frozen *z)
{
	z->snap = snap_take(m);
	z->state = kt_read_file_ok(f->state_file, &z->slen);
	z->backups = kt_names(f->backups);
	z->statedir = kt_names(f->cfg->state_dir);
}

static void assert_unchanged(struct kf_manager *m, struct fx *f,
			     struct frozen *z, const char *what)
{
	struct snap *s = snap_take(m);
	char *b = kt_names(f->backups), *sd = kt_names(f->cfg->state_dir);

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
	free(b);
	free(sd);
}

static void thaw(struct frozen *z)
{
	snap_free(z->snap);
	free(z->state);
	free(z->backups);
	free(z->statedir);
}

Test(manager, full_audit_log_refuses_rotation_and_changes_nothing,
     .fini = kt_tmpfs_cleanup, .timeout = 60)
{
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct frozen z;
	struct snap *s;
	uint32_t v = 0;
	struct fx f;
	int r;

	m = full_audit(&f, "mgr-full-rotate");
	freeze(m, &f, &z);
	r = kf_manager_rotate(m, &who, &v, err);
	cr_assert_eq(r, -ENOSPC, "rotation with a full audit log: %d %s", r,
		     err);
	cr_assert(kt_contains(err, "audit log"), "unclear: %s", err);
	assert_unchanged(m, &f, &z, "rotate");

	/* after space is freed: the version on disk is the old one */
	free_tiny();
	kf_manager_close(m);
	m = open_ok(&f);
	s = snap_take(m);
	cr_assert(snap_same(z.snap, s), "the reloaded keyring differs");
	snap_free(s);
	rotate_ok(m, &v);
	cr_assert_eq(v, z.snap->version[0] + 1);
	kf_manager_close(m);
	verify_audit_ok(&f);
	thaw(&z);
	fx_done(&f);
}

Test(manager, full_audit_log_refuses_backup_and_prune, .fini = kt_tmpfs_cleanup,
     .timeout = 60)
{
	char err[KF_ERR_MAX] = "", ret[KF_BACKUP_NAME_MAX + 6];
	struct kf_manager *m;
	size_t deleted = 77;
	struct frozen z;
	struct fx f;
	int r;

	m = full_audit(&f, "mgr-full-backup");
	freeze(m, &f, &z);
	r = kf_manager_backup(m, &who, "unrecorded", ret, err);
	cr_assert(r < 0, "a named backup succeeded with a full audit log");
	assert_unchanged(m, &f, &z, "named backup");
	r = kf_manager_backup(m, &who, NULL, ret, err);
	cr_assert(r < 0, "a backup succeeded with a full audit log");
	assert_unchanged(m, &f, &z, "timestamped backup");
	r = kf_manager_prune(m, &who, 0, true, &deleted, NULL, err);
	cr_assert(r < 0, "prune succeeded with a full audit log");
	assert_unchanged(m, &f, &z, "prune 0");
	free_tiny();
	kf_manager_close(m);
	verify_audit_ok(&f);
	thaw(&z);
	fx_done(&f);
}

Test(manager, full_audit_log_refuses_retire_and_leaves_no_archive,
     .fini = kt_tmpfs_cleanup, .timeout = 60)
{
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct frozen z;
	struct fx f;
	int r;

	m = full_audit(&f, "mgr-full-retire");
	freeze(m, &f, &z);
	r = kf_manager_retire(m, &who, 1, err);
	cr_assert(r < 0, "retire succeeded with a full audit log");
	cr_assert(kt_contains(err, "audit log"), "unclear: %s", err);
	assert_unchanged(m, &f, &z, "retire");
	free_tiny();
	kf_manager_close(m);
	thaw(&z);
	fx_done(&f);
}

Test(manager, full_audit_log_refuses_restore_and_leaves_no_archive,
     .fini = kt_tmpfs_cleanup, .timeout = 60)
{
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct frozen z;
	uint32_t v = 0;
	struct fx f;
	int r;

	m = full_audit(&f, "mgr-full-restore");
	freeze(m, &f, &z);
	r = kf_manager_restore(m, &who, "kept", false, &v, NULL, err);
	cr_assert(r < 0, "restore succeeded with a full audit log");
	cr_assert(starts_with(err, KBE_RESTORE), "message: %s", err);
	assert_unchanged(m, &f, &z, "restore");
	free_tiny();
	kf_manager_close(m);
	thaw(&z);
	fx_done(&f);
}

/*
 * Read-only: the kernel refuses to remount a file system read-only while a
 * file on it is open for writing (EBUSY), so a running manager's log cannot
 * become read-only under it.  A manager started on a read-only audit
 * location must refuse to start and change nothing.
 */
Test(manager, read_only_audit_log_refuses_start_and_changes_nothing,
     .fini = kt_tmpfs_cleanup, .timeout = 60)
{
	char err[KF_ERR_MAX] = "", *audit = mount_tiny("mgr-ro"), *state,
	     *backups, *now;
	struct kf_manager *m;
	struct snap *s, *again;
	size_t slen = 0;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-ro", "development", audit, NULL);
	m = open_ok(&f);
	rotate_ok(m, NULL);
	r = mount(NULL, tiny_mount, NULL, MS_REMOUNT | MS_RDONLY, "size=12k");
	cr_assert(r < 0 && errno == EBUSY,
		  "remount read-only under an open audit log: %d (%s)", r,
		  strerror(errno));
	s = snap_take(m);
	kf_manager_close(m);
	state = kt_read_file_ok(f.state_file, &slen);
	backups = kt_names(f.backups);

	cr_assert(mount(NULL, tiny_mount, NULL, MS_REMOUNT | MS_RDONLY,
			"size=12k") == 0,
		  "remount ro: %s", strerror(errno));
	r = kf_manager_open(f.cfg, &m, err);
	cr_assert(r < 0, "started with a read-only audit log");
	cr_assert(kt_contains(err, "audit log") &&
		      kt_contains(err, "Read-only"),
		  "unclear: %s", err);
	cr_assert(same_file(f.state_file, state, slen), "the state changed");
	now = kt_names(f.backups);
	cr_assert_str_eq(now, backups, "backups/ changed");
	free(now);

	cr_assert(mount(NULL, tiny_mount, NULL, MS_REMOUNT, "size=12k") == 0,
		  "remount rw: %s", strerror(errno));
	m = open_ok(&f);
	again = snap_take(m);
	cr_assert(snap_same(s, again));
	kf_manager_close(m);
	verify_audit_ok(&f);
	snap_free(s);
	snap_free(again);
	free(state);
	free(backups);
	free(audit);
	fx_done(&f);
}

/* ======================================================================== */
/* 8. Status                                                                 */
/* ======================================================================== */

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

/* No key of s, nor any purpose key derived from one, in text. */
static void assert_no_keys(const char *text, const struct snap *s,
			   const struct kf_config *cfg)
{
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

Test(manager, status_fields_and_no_key_material)
{
	struct kf_manager *m;
	struct snap *s;
	json_t *o, *vs;
	int64_t created, next;
	char *dump;
	struct fx f;

	fx_setup(&f, "mgr-status", "development", NULL,
		 "rotate_interval = 12h\nretain_versions = 3\n"
		 "purposes = phi pii audit backup billing\n");
	m = open_ok(&f);

	o = kf_manager_info(m);
	cr_assert(json_is_object(o));
	cr_assert_eq(json_integer_value(json_object_get(o, "version")), 1);
	cr_assert(json_is_true(json_object_get(o, "has_current_key")));
	cr_assert(json_is_false(json_object_get(o, "has_previous_key")));
	cr_assert(json_is_null(json_object_get(o, "previous_version")),
		  "previous_version without a previous key");
	json_decref(o);

	rotate_ok(m, NULL);
	rotate_ok(m, NULL);
	s = snap_take(m);
	o = kf_manager_info(m);
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
				 f.cfg->purposes[i].name);
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

	dump = json_dumps(o, JSON_COMPACT);
	cr_assert_not_null(dump);
	assert_no_keys(dump, s, f.cfg);
	free(dump);
	json_decref(o);
	kf_manager_close(m);
	snap_free(s);
	fx_done(&f);

	/* rotate_interval 0: no next rotation */
	fx_setup(&f, "mgr-status0", "production", NULL, NULL);
	write_master(&f);
	{
		uint8_t k[KF_KEY_BYTES];
		char kt[KF_KEY_TEXT_LEN + 1];

		new_key(k, kt);
		setenv("ENCRYPTION_KEY", kt, 1);
		m = open_ok(&f);
		sodium_memzero(k, sizeof(k));
		sodium_memzero(kt, sizeof(kt));
	}
	s = snap_take(m);
	o = kf_manager_info(m);
	cr_assert_str_eq(json_string_value(json_object_get(o, "mode")),
			 "production");
	cr_assert_str_eq(
	    json_string_value(json_object_get(o, "rotate_interval")), "0");
	cr_assert(json_is_null(json_object_get(o, "next_rotation")),
		  "next_rotation set with rotation off");
	dump = json_dumps(o, JSON_COMPACT);
	assert_no_keys(dump, s, f.cfg);
	free(dump);
	json_decref(o);
	kf_manager_close(m);
	snap_free(s);
	fx_done(&f);
}

/*
 * A full disk under state_dir: the rotation is refused, nothing changes in
 * memory or on disk, its automatic backup is removed again, and the success
 * record already in the log is cancelled by a failure record naming it.
 */
Test(manager, full_state_disk_refuses_rotation_and_loses_nothing,
     .fini = kt_tmpfs_cleanup, .timeout = 60)
{
	char err[KF_ERR_MAX] = "", *filler, *cmd;
	size_t backups_before, mark;
	struct kf_manager *m;
	struct snap *before, *after;
	json_t *recs, *ok, *bad;
	uint32_t v = 0;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-full-state", "development", NULL, NULL);
	free(f.cfg->state_dir);
	f.cfg->state_dir = strdup(kt_tmpfs("mgr-full-state-fs", "16k"));
	m = open_ok(&f);
	before = snap_take(m);
	backups_before = count_files(f.backups, "key_backup_", ".json");
	cr_assert(asprintf(&filler, "%s/filler", f.cfg->state_dir) > 0);
	cr_assert(asprintf(&cmd, "dd if=/dev/zero of='%s' bs=1k count=64",
			   filler) > 0);
	kt_run(cmd, NULL, NULL,
	       NULL); /* fails with ENOSPC: that is the point */
	mark = kt_file_size(f.audit);

	r = kf_manager_rotate(m, &who, &v, err);
	cr_assert_eq(r, -ENOSPC, "rotation on a full state disk: %d %s", r,
		     err);
	cr_assert(kt_contains(err, "saving state"), "unclear: %s", err);
	after = snap_take(m);
	cr_assert(snap_same(before, after), "the keyring changed in memory");
	snap_free(after);
	cr_assert_eq(count_files(f.backups, "key_backup_", ".json"),
		     backups_before, "the refused rotation left its backup");
	recs = kt_audit_read(f.audit, mark);
	ok = kt_find_record(recs, "key_rotation", 1);
	bad = kt_find_record(recs, "key_rotation", 0);
	cr_assert(ok && bad, "want a success record and its cancellation");
	cr_assert(json_integer_value(json_object_get(bad, "cancels_seq")) ==
		      json_integer_value(json_object_get(ok, "seq")),
		  "the failure record does not name the record it cancels");
	json_decref(recs);

	/* Space again: the state on disk is the old keyring. */
	cr_assert(unlink(filler) == 0);
	kf_manager_close(m);
	m = open_ok(&f);
	after = snap_take(m);
	cr_assert(snap_same(before, after), "the reloaded keyring differs");
	snap_free(after);
	rotate_ok(m, &v);
	cr_assert_eq(v, before->version[0] + 1);
	kf_manager_close(m);
	verify_audit_ok(&f);
	snap_free(before);
	free(filler);
	free(cmd);
	fx_done(&f);
}

/* --- issue 8: start-up order, environment, names, last copies ---------- */

Test(manager, a_refused_second_manager_changes_nothing_in_the_folder)
{
	char err[KF_ERR_MAX] = "", *archive, *tmp, *name;
	struct kf_manager *m, *m2 = NULL;
	struct stat st;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-second", "development", NULL, NULL);
	m = open_ok(&f);
	cr_assert(kf_manager_backup(m, &who, "loose", NULL, err) == 0, "%s",
		  err);
	archive = kf_path_join(f.backups, "loose.json");
	cr_assert(chmod(archive, 0644) == 0);
	/* What a second, refused start must not touch: a looser archive, a
	 * missing master key file, a temporary file of the first. */
	cr_assert(unlink(f.master) == 0);
	name = kf_path_join(f.dir, "state");
	tmp = kf_path_join(name, ".keyring.tmp.0123456789ab");
	kt_write_file(tmp, "in flight\n", 0600);
	r = kf_manager_open(f.cfg, &m2, err);
	cr_assert(r == -EBUSY, "second open: %d %s", r, err);
	cr_assert(stat(archive, &st) == 0 && (st.st_mode & 07777) == 0644,
		  "the refused manager changed an archive's mode");
	cr_assert(access(f.master, F_OK) != 0,
		  "the refused manager created a master key");
	cr_assert(access(tmp, F_OK) == 0,
		  "the refused manager removed the first one's temp file");
	kf_manager_close(m);
	free(archive);
	free(tmp);
	free(name);
	fx_done(&f);
}

Test(manager, start_removes_temp_files_of_interrupted_writes)
{
	char *state, *paths[3];
	struct kf_manager *m;
	struct fx f;

	fx_setup(&f, "mgr-sweep", "development", NULL, NULL);
	m = open_ok(&f);
	kf_manager_close(m);
	state = kf_path_join(f.dir, "state");
	paths[0] = kf_path_join(state, ".keyring.tmp.0123456789ab");
	paths[1] = kf_path_join(f.backups, ".nightly.json.tmp.abcdef012345");
	/* Not one of ours: kept. */
	paths[2] = kf_path_join(f.backups, ".notes.tmp.txt");
	for (int i = 0; i < 3; i++)
		kt_write_file(paths[i], "x\n", 0600);
	m = open_ok(&f);
	cr_assert(access(paths[0], F_OK) != 0, "state temp file left");
	cr_assert(access(paths[1], F_OK) != 0, "backup temp file left");
	cr_assert(access(paths[2], F_OK) == 0, "a foreign file was removed");
	kf_manager_close(m);
	for (int i = 0; i < 3; i++)
		free(paths[i]);
	free(state);
	fx_done(&f);
}

Test(manager, import_refuses_a_padded_version_and_an_empty_key)
{
	char err[KF_ERR_MAX], text[KF_KEY_TEXT_LEN + 1];
	uint8_t key[KF_KEY_BYTES];
	struct fx f;
	int r;

	fx_setup(&f, "mgr-import-strict", "development", NULL, NULL);
	kf_key_generate(key);
	kf_key_encode(key, text);
	text[KF_KEY_TEXT_LEN] = 0;
	static const char *const bad[] = {" 3", "3 ", "+3", "0x3", "", "3\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear_env();
		setenv("ENCRYPTION_KEY", text, 1);
		setenv("ENCRYPTION_KEY_VERSION", bad[i], 1);
		r = open_fails(&f, err, "a padded ENCRYPTION_KEY_VERSION");
		cr_assert(r == -EINVAL && kt_contains(err, KVE_LOAD) &&
			      kt_contains(err, "ENCRYPTION_KEY_VERSION"),
			  "version #%zu: %d %s", i, r, err);
	}
	clear_env();
	setenv("ENCRYPTION_KEY", "", 1);
	r = open_fails(&f, err, "an empty ENCRYPTION_KEY");
	cr_assert(kt_contains(err, KVE_LOAD) && kt_contains(err, "empty"),
		  "empty ENCRYPTION_KEY: %d %s", r, err);
	cr_assert(access(f.state_file, F_OK) != 0,
		  "a keyring was made from an empty ENCRYPTION_KEY");
	clear_env();
	sodium_memzero(text, sizeof(text));
	sodium_memzero(key, sizeof(key));
	fx_done(&f);
}

Test(manager, a_named_backup_may_not_take_a_reserved_name)
{
	static const char *const reserved[] = {"key_backup_99991231_235959",
					       "pre_restore_20240101_000000",
					       "key_backup_x"};
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct fx f;

	fx_setup(&f, "mgr-reserved", "development", NULL, NULL);
	m = open_ok(&f);
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		int r = kf_manager_backup(m, &who, reserved[i], NULL, err);

		cr_assert(r == -EINVAL && kt_contains(err, "reserved"),
			  "%s: %d %s", reserved[i], r, err);
	}
	cr_assert(kf_manager_backup(m, &who, "key_backupx", NULL, err) == 0,
		  "%s", err);
	kf_manager_close(m);
	fx_done(&f);
}

Test(manager, prune_keeps_the_last_archive_of_a_retired_version)
{
	char err[KF_ERR_MAX] = "", note[KF_ERR_MAX];
	size_t deleted = 0, kept = 0;
	struct kf_manager *m;
	json_t *recs, *rec;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-prune-last", "development", NULL,
		 "retain_versions = 3\n");
	m = open_ok(&f);
	rotate_ok(m, NULL);
	/* The backup taken before the retire is version 1's last copy... */
	cr_assert(kf_manager_retire(m, &who, 1, err) == 0, "%s", err);
	/* ...once the first archives (which hold 1 too) are pruned; and
	 * version 2 drops out of the keyring (5, 4, 3) on the way. */
	for (int i = 0; i < 3; i++) {
		rotate_ok(m, NULL);
		cr_assert(kf_manager_backup(m, &who, NULL, NULL, err) == 0);
	}
	r = kf_manager_prune(m, &who, 1, false, &deleted, &kept, err);
	cr_assert(r == 0, "%d %s", r, err);
	/* Kept: the newest, the last copy of 2 (4, 3, 2), of 1 (2, 1). */
	cr_assert(kept == 2, "%zu archives kept as a last copy", kept);
	cr_assert_eq(count_files(f.backups, NULL, ".json"), 3);
	recs = kt_audit_read(f.audit, 0);
	rec = last_record(recs, "backup_cleanup");
	cr_assert_eq(int_field(rec, "kept_last_copies", "prune"), 2);
	json_decref(recs);
	/* The kept one still restores version 1 (with force: retired). */
	{
		struct kf_backup_info *list = NULL;
		size_t n = 0;
		uint32_t v;

		cr_assert(kf_manager_list_backups(m, &list, &n, err) == 0);
		cr_assert(n == 3 && list[2].key_version == 2);
		r = kf_manager_restore(m, &who, list[2].name, true, &v, note,
				       err);
		cr_assert(r == 0, "restore of the last copy: %s", err);
		free(list);
	}
	/* force: the last copies go too (the restore's pre_restore_ archive
	 * is now the newest). */
	r = kf_manager_prune(m, &who, 1, true, &deleted, &kept, err);
	cr_assert(r == 0 && kept == 0, "%d %s", r, err);
	cr_assert_eq(count_files(f.backups, NULL, ".json"), 1);
	kf_manager_close(m);
	fx_done(&f);
}

/*
 * The state was renamed into place but the directory's fsync failed: the
 * change is in effect (memory, disk and the audit log agree), the caller
 * hears that its durability is not confirmed, and its number is never
 * issued again.  The fault is injected at that one step (libfiu).
 */
Test(manager, a_failed_directory_sync_after_the_rename_keeps_the_change)
{
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m;
	struct kf_keyring *kr;
	uint8_t key2[KF_KEY_BYTES];
	json_t *recs, *rec;
	uint32_t v = 0;
	struct fx f;
	int r;

	fx_setup(&f, "mgr-dirsync", "development", NULL, NULL);
	m = open_ok(&f);
	cr_assert(fiu_init(0) == 0);
	cr_assert(fiu_enable("keyfs/file/commit_dir_fsync", 1, NULL, 0) == 0);
	r = kf_manager_rotate(m, &who, &v, err);
	fiu_disable("keyfs/file/commit_dir_fsync");
	cr_assert(r == -EIO, "rotate with a failing directory sync: %d %s", r,
		  err);
	cr_assert(kt_contains(err, "version 2 is in effect"), "%s", err);
	kr = kf_manager_keyring(m);
	cr_assert_eq(kf_keyring_current_version(kr), 2,
		     "memory does not hold what the disk shows");
	memcpy(key2, kf_keyring_at(kr, 0)->key, KF_KEY_BYTES);
	kf_keyring_unref(kr);
	/* The next rotation goes on from there: 2 is never issued twice. */
	rotate_ok(m, &v);
	cr_assert_eq(v, 3);
	recs = kt_audit_read(f.audit, 0);
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
	kf_manager_close(m);
	/* After a restart: 3 current, 2 held with the same key. */
	m = open_ok(&f);
	kr = kf_manager_keyring(m);
	cr_assert_eq(kf_keyring_current_version(kr), 3);
	cr_assert(kf_keyring_find(kr, 2) &&
		      sodium_memcmp(kf_keyring_find(kr, 2)->key, key2,
				    KF_KEY_BYTES) == 0,
		  "version 2 came back with another key");
	kf_keyring_unref(kr);
	kf_manager_close(m);
	sodium_memzero(key2, sizeof(key2));
	verify_audit_ok(&f);
	fx_done(&f);
}
