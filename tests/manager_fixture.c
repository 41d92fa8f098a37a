// SPDX-License-Identifier: MIT
/*
 * The fixture of the manager's unit tests: see manager_fixture.h.
 *
 * Standard error goes to a memfd for the whole test rather than through
 * Criterion's cr_redirect_stderr: the tests look for alert lines in the
 * middle of a test, many times, and cr_stderr_match_str compares the whole
 * stream once, after closing it; a pipe could also fill up and block core.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "env.h"
#include "helpers.h"
#include "keyring.h"
#include "manager_fixture.h"
#include "util.h"

const struct kf_caller fx_who = {1001, 2001, 4242};

/* --- deferred clean-up ---------------------------------------------------- */

#define FX_MAX_DEFERRED 256

static struct {
	void (*fn)(void *);
	void *p;
} deferred[FX_MAX_DEFERRED];
static size_t n_deferred;

void *fx_defer(void (*fn)(void *), void *p)
{
	cr_assert(n_deferred < FX_MAX_DEFERRED,
		  "more than %d clean-ups in one test", FX_MAX_DEFERRED);
	deferred[n_deferred].fn = fn;
	deferred[n_deferred].p = p;
	n_deferred++;
	return p;
}

void fx_release(void *p)
{
	void (*fn)(void *);

	if (!p)
		return;
	for (size_t i = n_deferred; i-- > 0;) {
		if (deferred[i].p != p)
			continue;
		fn = deferred[i].fn;
		memmove(&deferred[i], &deferred[i + 1],
			(n_deferred - i - 1) * sizeof(deferred[0]));
		n_deferred--;
		fn(p);
		return;
	}
	cr_assert_fail("released twice, or never deferred");
}

void *fx_own(void *p)
{
	return fx_defer(free, p);
}

static void free_secret(void *p)
{
	if (p)
		sodium_memzero(p, strlen(p));
	free(p);
}

char *fx_own_secret(char *text)
{
	return fx_defer(free_secret, text);
}

/* --- the environment ------------------------------------------------------ */

static const char *const env_names[] = {
    "ENCRYPTION_KEY",	"ENCRYPTION_KEY_PREVIOUS", "ENCRYPTION_KEY_VERSION",
    "KEYFS_MASTER_KEY", "KEY_BACKUP_DIR",	   "KEYFS_CONFIG",
};
#define N_ENV (sizeof(env_names) / sizeof(env_names[0]))
static char *env_saved[N_ENV];

void fx_clear_env(void)
{
	for (size_t i = 0; i < N_ENV; i++)
		unsetenv(env_names[i]);
	kf_env_forget(); /* what was taken from the environment, too */
}

static void env_save(void)
{
	for (size_t i = 0; i < N_ENV; i++) {
		const char *v = getenv(env_names[i]);

		env_saved[i] = v ? strdup(v) : NULL;
	}
}

static void env_restore(void)
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

/* --- standard error ------------------------------------------------------- */

static int log_fd = -1;	   /* the memfd standard error writes to */
static int saved_fd = -1;  /* the test's own standard error */
static char *log_text;	   /* the last read of log_fd */
static size_t log_len;	   /* its length */
static size_t alerts_seen; /* fx_expect_alert looks from here on */

static void capture_start(void)
{
	fflush(stderr);
	log_fd = memfd_create("keyfs-test-stderr", MFD_CLOEXEC);
	cr_assert(log_fd >= 0, "memfd_create: %s", strerror(errno));
	saved_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
	cr_assert(saved_fd >= 0 && dup2(log_fd, 2) == 2,
		  "standard error not captured: %s", strerror(errno));
}

/* Reads all that was logged into log_text. */
static const char *log_read(void)
{
	off_t end;

	fflush(stderr);
	end = lseek(log_fd, 0, SEEK_END);
	cr_assert(end >= 0);
	free(log_text);
	log_text = malloc((size_t)end + 1);
	cr_assert_not_null(log_text);
	cr_assert(pread(log_fd, log_text, (size_t)end, 0) == end);
	log_text[end] = 0;
	log_len = (size_t)end;
	return log_text;
}

static void capture_stop(void)
{
	char tag[256];

	if (log_fd < 0)
		return;
	log_read();
	dup2(saved_fd, 2);
	close(saved_fd);
	close(log_fd);
	log_fd = saved_fd = -1;
	/* For the leak check, and for whoever reads a failure's log. */
	snprintf(tag, sizeof(tag), "standard error of %s::%s",
		 criterion_current_test->category,
		 criterion_current_test->name);
	kt_leak_record(tag, log_text, log_len);
	free(log_text);
	log_text = NULL;
}

size_t fx_log_mark(void)
{
	log_read();
	return log_len;
}

const char *fx_log_since(size_t mark)
{
	log_read();
	cr_assert(mark <= log_len);
	return log_text + mark;
}

void fx_expect_alert(const char *fmt, ...)
{
	const char *text = log_read(), *p, *nl;
	char *want, *line;
	va_list ap;

	va_start(ap, fmt);
	cr_assert(vasprintf(&line, fmt, ap) > 0);
	va_end(ap);
	cr_assert(asprintf(&want, "keyfs: alert: %s", line) > 0);
	free(line);
	for (p = text + alerts_seen; (nl = strchr(p, '\n')); p = nl + 1) {
		if (starts_with(p, want)) {
			alerts_seen = (size_t)(nl + 1 - text);
			free(want);
			return;
		}
	}
	cr_assert_fail("no alert \"%s\" logged; logged since the last "
		       "expected one:\n%s",
		       want, text + alerts_seen);
}

/* --- life of a test --------------------------------------------------------
 */

void fx_init(void)
{
	cr_assert(sodium_init() >= 0);
	env_save();
	fx_clear_env();
	capture_start();
}

void fx_fini(void)
{
	while (n_deferred > 0) {
		n_deferred--;
		deferred[n_deferred].fn(deferred[n_deferred].p);
	}
	kt_tmpfs_cleanup(); /* after the managers writing to it closed */
	capture_stop();
	env_restore();
}

/* --- fixtures ------------------------------------------------------------- */

static void fx_free(void *p)
{
	struct fx *f = p;

	kf_manager_close(f->m);
	kf_config_free(f->cfg);
	free(f->dir);
	free(f->state_file);
	free(f->backups);
	free(f->master);
	free(f->audit);
	free(f);
}

struct fx *fx_new(const char *tag, const char *mode, const char *audit_log,
		  const char *extra)
{
	char err[KF_ERR_MAX] = "", *text;
	struct fx *f = calloc(1, sizeof(*f));
	int r;

	cr_assert_not_null(f);
	fx_defer(fx_free, f);
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
	return f;
}

struct kf_manager *open_ok(struct fx *f)
{
	char err[KF_ERR_MAX] = "";
	int r;

	cr_assert_null(f->m, "open_ok with a manager open on the fixture");
	r = kf_manager_open(f->cfg, &f->m, err);
	cr_assert(r == 0, "kf_manager_open: %d %s", r, err);
	cr_assert_not_null(f->m);
	return f->m;
}

void fx_close(struct fx *f)
{
	f->m = kf_manager_close(f->m);
}

struct kf_manager *fx_reopen(struct fx *f)
{
	fx_close(f);
	return open_ok(f);
}

int open_fails(struct fx *f, char err[KF_ERR_MAX], const char *what)
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

void write_master(struct fx *f)
{
	struct fx_key *k = fx_key_new();
	char text[KF_KEY_TEXT_LEN + 2];

	snprintf(text, sizeof(text), "%s\n", k->text);
	kt_write_file(f->master, text, 0600);
	sodium_memzero(text, sizeof(text));
}

void rotate_ok(struct kf_manager *m, uint32_t *ret_version)
{
	char err[KF_ERR_MAX] = "";
	uint32_t v = 0;
	int r = kf_manager_rotate(m, &fx_who, &v, NULL, err);

	cr_assert(r == 0, "rotate: %d %s", r, err);
	if (ret_version)
		*ret_version = v;
}

uint32_t current_version(struct kf_manager *m)
{
	struct kf_keyring *kr = kf_manager_keyring(m);
	uint32_t v = kf_keyring_current_version(kr);

	kf_keyring_unref(kr);
	return v;
}

/* --- keys ------------------------------------------------------------------
 */

struct fx_key *fx_key_new(void)
{
	struct fx_key *k = sodium_malloc(sizeof(*k));

	cr_assert_not_null(k);
	fx_defer(sodium_free, k); /* sodium_free wipes it */
	kf_key_generate(k->raw);
	kf_key_encode(k->raw, k->text);
	return k;
}

bool holds_key(const char *text, const uint8_t key[KF_KEY_BYTES])
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

/* --- the keyring ---------------------------------------------------------- */

struct snap *snap_take(struct kf_manager *m)
{
	struct kf_keyring *kr = kf_manager_keyring(m);
	struct snap *s = sodium_malloc(sizeof(*s));

	cr_assert_not_null(kr, "kf_manager_keyring returned NULL");
	cr_assert_not_null(s);
	fx_defer(sodium_free, s);
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

void snap_free(struct snap *s)
{
	fx_release(s);
}

bool snap_same(const struct snap *a, const struct snap *b)
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

int snap_find(const struct snap *s, uint32_t v)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->version[i] == v)
			return (int)i;
	return -1;
}

/* --- files -----------------------------------------------------------------
 */

bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool same_file(const char *path, const char *data, size_t len)
{
	size_t n = 0;
	char *now = kt_read_file(path, &n);
	bool same = now && n == len && memcmp(now, data, len) == 0;

	free(now);
	return same;
}

size_t count_files(const char *dir, const char *prefix, const char *suffix)
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

char *fx_path(const char *dir, const char *name)
{
	return fx_own(kf_path_join(dir, name));
}

void backup_with_version(struct kf_manager *m, uint32_t v,
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

/* --- audit records ---------------------------------------------------------
 */

json_t *last_record(json_t *recs, const char *event)
{
	for (size_t i = json_array_size(recs); i-- > 0;) {
		json_t *o = json_array_get(recs, i);

		if (!strcmp(kt_str_of(o, "event"), event))
			return o;
	}
	return NULL;
}

json_int_t int_field(json_t *o, const char *name, const char *what)
{
	json_t *v = json_object_get(o, name);

	cr_assert(json_is_integer(v), "%s: field %s missing or not an integer",
		  what, name);
	return json_integer_value(v);
}

const char *str_field(json_t *o, const char *name, const char *what)
{
	json_t *v = json_object_get(o, name);

	cr_assert(json_is_string(v), "%s: field %s missing or not a string",
		  what, name);
	return json_string_value(v);
}

bool bool_field(json_t *o, const char *name, const char *what)
{
	json_t *v = json_object_get(o, name);

	cr_assert(json_is_boolean(v), "%s: field %s missing or not a boolean",
		  what, name);
	return json_is_true(v);
}

void assert_common(json_t *o, const struct kf_caller *w, const char *what)
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

json_t *last_success(json_t *recs, const char *event, const struct kf_caller *w)
{
	json_t *rec = last_record(recs, event);

	assert_common(rec, w, event);
	cr_assert(bool_field(rec, "success", event), "%s: not a success",
		  event);
	return rec;
}

void verify_audit_ok(struct fx *f)
{
	char report[KF_ERR_MAX] = "";
	int r = kf_manager_verify_audit(f->cfg, NULL, true, report);

	cr_assert(r == 0, "audit verify: %d %s", r, report);
	cr_assert(starts_with(report, "ok: "), "report: %s", report);
}
