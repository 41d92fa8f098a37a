// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/config: defaults, the shipped configurations, every kind
 * of bad input refused with "file:line: reason", access specifications,
 * purposes, path resolution, the environment, the mountpoint rule, and
 * `store` with its [etcd] section.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "helpers.h"

#define NAME "test.ini"
#define DAY (24 * 3600)

static struct kf_config *parse_ok(const char *text)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_config_parse(text, NAME, "/base", &cfg, err) == 0,
		  "refused: %s\n--- text:\n%s", err, text);
	cr_assert(cfg);
	return cfg;
}

/* Asserts "test.ini:LINE: ...WANT..." and -EINVAL. */
static void parse_bad(const char *text, int line, const char *want)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "", prefix[64];

	cr_assert(kf_config_parse(text, NAME, "/base", &cfg, err) == -EINVAL,
		  "accepted (wanted line %d: %s)\n--- text:\n%s", line, want,
		  text);
	cr_assert(cfg == NULL, "ret set on failure");
	snprintf(prefix, sizeof(prefix), NAME ":%d: ", line);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0,
		  "error \"%s\" does not start with \"%s\"", err, prefix);
	cr_assert(kt_contains(err, want), "error \"%s\" lacks \"%s\"", err,
		  want);
}

static void assert_access(const struct kf_access *a, uid_t uid, gid_t gid,
			  mode_t mode, const char *what)
{
	cr_assert(a->uid == uid && a->gid == gid && a->mode == mode,
		  "%s: got %u:%u %04o, want %u:%u %04o", what, (unsigned)a->uid,
		  (unsigned)a->gid, (unsigned)a->mode, (unsigned)uid,
		  (unsigned)gid, (unsigned)mode);
}

static struct kf_config *load_ok(const char *path)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_config_load(path, &cfg, err) == 0, "load refused: %s",
		  err);
	return cfg;
}

static char *write_config(const char *dir, const char *text)
{
	char *path = kf_path_join(dir, "keyfs.ini");

	cr_assert(path);
	kt_write_file(path, text, 0644);
	return path;
}

static void clean_env(void)
{
	unsetenv("KEYFS_CONFIG");
	unsetenv("KEY_BACKUP_DIR");
}

TestSuite(config, .init = clean_env);

Test(config, defaults)
{
	static const char *const seeds[] = {"phi", "pii", "audit", "backup"};
	struct kf_config *cfg = parse_ok("");

	cr_assert_str_eq(cfg->source, NAME);
	cr_assert(cfg->mode == KF_MODE_PRODUCTION);
	cr_assert_null(cfg->mountpoint);
	cr_assert_str_eq(cfg->state_dir, "/var/lib/keyfs");
	cr_assert_str_eq(cfg->backup_dir, "/var/lib/keyfs/backups");
	cr_assert_str_eq(cfg->master_key_file, "/etc/keyfs/master.key");
	cr_assert_str_eq(cfg->audit_log, "/var/lib/keyfs/audit.log");
	cr_assert_null(cfg->alert_command);
	cr_assert_eq(cfg->retain_versions, 2);
	cr_assert_eq(cfg->rotate_interval, 90 * DAY);
	cr_assert_eq(cfg->usage_window, 7 * DAY);
	cr_assert_eq(cfg->backup_keep, 10);
	cr_assert(cfg->read_mode == KF_READ_AUDITED);
	assert_access(&cfg->keys, 0, 0, 0400, "keys");
	assert_access(&cfg->status, 0, 0, 0444, "status");
	assert_access(&cfg->backups, 0, 0, 0400, "backups");
	assert_access(&cfg->audit, 0, 0, 0400, "audit");
	cr_assert_eq(cfg->n_purposes, 4);
	for (size_t i = 0; i < 4; i++) {
		cr_assert_str_eq(cfg->purposes[i].name, seeds[i]);
		assert_access(&cfg->purposes[i].access, 0, 0, 0400, seeds[i]);
	}
	/* The file store, and nothing of etcd. */
	cr_assert(cfg->store == KF_STORE_TYPE_FILE);
	cr_assert_null(cfg->etcd.endpoints);
	cr_assert_eq(cfg->etcd.n_endpoints, 0);
	cr_assert_null(cfg->etcd.prefix);
	cr_assert_str_eq(cfg->etcd.node, "");
	cr_assert_eq(cfg->etcd.timeout_ms, 0);
	cr_assert_null(cfg->etcd.cacert);
	cr_assert_null(cfg->etcd.user);
	cr_assert_null(cfg->etcd.password_file);
	cr_assert(kf_config_free(cfg) == NULL);
}

Test(config, defaults_follow_state_dir_and_empty_values)
{
	struct kf_config *cfg = parse_ok("[keyfs]\n"
					 "state_dir = /srv/keyfs\n"
					 "backup_dir =\n"
					 "audit_log = \n"
					 "alert_command =\n"
					 "mountpoint =\n");

	cr_assert_str_eq(cfg->state_dir, "/srv/keyfs");
	cr_assert_str_eq(cfg->backup_dir, "/srv/keyfs/backups");
	cr_assert_str_eq(cfg->audit_log, "/srv/keyfs/audit.log");
	cr_assert_null(cfg->alert_command);
	cr_assert_null(cfg->mountpoint);
	kf_config_free(cfg);
}

Test(config, every_key_set)
{
	struct kf_config *cfg = parse_ok("[keyfs]\n"
					 "mode = development\n"
					 "mountpoint = /run/k\n"
					 "state_dir = /var/k\n"
					 "backup_dir = /backup/k\n"
					 "master_key_file = /etc/k/mk\n"
					 "retain_versions = 5\n"
					 "rotate_interval = 7d\n"
					 "backup_keep = 100000\n"
					 "audit_log = /var/log/k.log\n"
					 "alert_command = logger -t keyfs\n"
					 "read_mode = cached\n"
					 "purposes = a b\n"
					 "[access]\n"
					 "keys = 0:1 0440\n"
					 "status = 1:0 0404\n"
					 "backups = 2:3 0600\n"
					 "audit = 4:5 0000\n");

	cr_assert(cfg->mode == KF_MODE_DEVELOPMENT);
	cr_assert_str_eq(cfg->mountpoint, "/run/k");
	cr_assert_str_eq(cfg->state_dir, "/var/k");
	cr_assert_str_eq(cfg->backup_dir, "/backup/k");
	cr_assert_str_eq(cfg->master_key_file, "/etc/k/mk");
	cr_assert_eq(cfg->retain_versions, 5);
	cr_assert_eq(cfg->rotate_interval, 7 * DAY);
	cr_assert_eq(cfg->backup_keep, 100000);
	cr_assert_str_eq(cfg->audit_log, "/var/log/k.log");
	cr_assert_str_eq(cfg->alert_command, "logger -t keyfs");
	cr_assert(cfg->read_mode == KF_READ_CACHED);
	cr_assert_eq(cfg->n_purposes, 2);
	assert_access(&cfg->keys, 0, 1, 0440, "keys");
	assert_access(&cfg->status, 1, 0, 0404, "status");
	assert_access(&cfg->backups, 2, 3, 0600, "backups");
	assert_access(&cfg->audit, 4, 5, 0, "audit");
	kf_config_free(cfg);
}

Test(config, embedded_dev_config_parses)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_config_parse(kf_config_embedded_dev, KF_CONFIG_EMBEDDED,
				  "/work/dev", &cfg, err) == 0,
		  "embedded config refused: %s", err);
	cr_assert(cfg->mode == KF_MODE_DEVELOPMENT);
	cr_assert_str_eq(cfg->source, KF_CONFIG_EMBEDDED);
	cr_assert_str_eq(cfg->mountpoint, "/work/dev/.keyfs-dev/mnt");
	cr_assert_str_eq(cfg->state_dir, "/work/dev/.keyfs-dev/state");
	cr_assert_str_eq(cfg->master_key_file,
			 "/work/dev/.keyfs-dev/master.key");
	cr_assert_str_eq(cfg->backup_dir, "/work/dev/.keyfs-dev/state/backups");
	cr_assert_eq(cfg->n_purposes, 4);
	kf_config_free(cfg);
}

Test(config, example_keyfs_ini_parses)
{
	char *path = kf_path_join(kt_srcdir(), "etc/keyfs.ini");
	struct kf_config *cfg = load_ok(path);
	const struct kf_purpose *phi;

	cr_assert(cfg->mode == KF_MODE_PRODUCTION);
	cr_assert_str_eq(cfg->source, path);
	cr_assert_str_eq(cfg->mountpoint, "/run/keyfs");
	cr_assert_str_eq(cfg->state_dir, "/var/lib/keyfs");
	cr_assert_str_eq(cfg->backup_dir, "/var/lib/keyfs/backups");
	cr_assert_str_eq(cfg->master_key_file, "/etc/keyfs/master.key");
	cr_assert_eq(cfg->rotate_interval, 90 * DAY);
	cr_assert_eq(cfg->n_purposes, 4);
	phi = kf_config_purpose(cfg, "phi");
	cr_assert_not_null(phi);
	assert_access(&phi->access, 0, 0, 0440, "phi");
	assert_access(&kf_config_purpose(cfg, "pii")->access, 0, 0, 0400,
		      "pii");
	cr_assert_null(kf_config_purpose(cfg, "nope"));
	kf_config_free(cfg);
	free(path);
}

/* The commented [etcd] example of etc/keyfs.ini, uncommented, with store =
 * etcd. */
Test(config, example_etcd_block_parses)
{
	char *path = kf_path_join(kt_srcdir(), "etc/keyfs.ini");
	char *text = kt_read_file_ok(path, NULL), *store, *out, *o;
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	store = strstr(text, "\nstore = file\n");
	cr_assert(store, "no \"store = file\" line");
	memcpy(store + strlen("\nstore = "), "etcd", 4);
	out = o = malloc(strlen(text) + 1);
	for (const char *c = text; *c; c++) {
		/* ";key = value" and ";[etcd]", not "; text". */
		bool line_start = c == text || c[-1] == '\n';

		if (!(line_start && c[0] == ';' && c[1] && c[1] != ' ' &&
		      c[1] != '\n'))
			*o++ = *c;
	}
	*o = 0;
	cr_assert(kf_config_parse(out, "keyfs.ini", "/etc/keyfs", &cfg, err) ==
		      0,
		  "%s\n--- text:\n%s", err, out);
	cr_assert(cfg->store == KF_STORE_TYPE_ETCD);
	cr_assert_eq(cfg->etcd.n_endpoints, 3);
	cr_assert_str_eq(cfg->etcd.prefix, KF_ETCD_PREFIX_DEFAULT);
	cr_assert_str_eq(cfg->etcd.node, "node1");
	cr_assert_eq(cfg->etcd.timeout_ms, 2000);
	cr_assert_not_null(cfg->etcd.cacert);
	cr_assert_not_null(cfg->etcd.key);
	cr_assert_not_null(cfg->etcd.password_file);
	kf_config_free(cfg);
	free(out);
	free(text);
	free(path);
}

Test(config, unknown_section)
{
	parse_bad("[keyfs]\nmode = production\n[bogus]\n", 3,
		  "unknown section [bogus]");
	/* Empty sections are checked too. */
	parse_bad("; comment\n[keyfs]\n\n[acess]\n", 4,
		  "unknown section [acess]");
	parse_bad("[keyfs]\n[purpose]\n", 2, "needs a name");
	parse_bad("[keyfs\n", 1, "closing ']'");
	parse_bad("[keyfs] junk\n", 1, "unexpected text after ']'");
	parse_bad("[keyfs]\n[keyfs]\n", 2, "duplicate section [keyfs]");
}

Test(config, unknown_key)
{
	parse_bad("[keyfs]\nmode = production\nmodes = x\n", 3,
		  "unknown key \"modes\" in [keyfs]");
	parse_bad("[access]\nkeys = root:root 0400\nmode = x\n", 3,
		  "unknown key \"mode\" in [access]");
	parse_bad("[purpose phi]\naccess = root:root 0400\nmode = 1\n", 3,
		  "unknown key \"mode\" in [purpose phi]");
	parse_bad("mode = production\n", 1, "outside any section");
	parse_bad("[keyfs]\n\nmode = production\nmode = development\n", 4,
		  "duplicate key \"mode\" (first on line 3)");
	parse_bad("[purpose x]\naccess = 0:0 0400\naccess = 0:0 0440\n", 3,
		  "duplicate key \"access\"");
}

Test(config, syntax_errors_name_their_line)
{
	parse_bad("[keyfs]\nmode = production\njust words\n", 3,
		  "syntax error");
	parse_bad("[keyfs]\nmode = production\n  read_mode = cached\n", 3,
		  "multi-line values are not supported");
	parse_bad("[keyfs]\nmode = production\n  [access]\n", 3,
		  "indented section header");
}

Test(config, long_line_refused)
{
	char text[600];

	snprintf(text, sizeof(text), "[keyfs]\nalert_command = %0300d\n", 0);
	parse_bad(text, 2, "line too long");
}

Test(config, bad_mode_value)
{
	parse_bad("[keyfs]\nmode = prod\n", 2, "bad mode \"prod\"");
	parse_bad("[keyfs]\nmode =\n", 2, "bad mode \"\"");
	parse_bad("[keyfs]\nmode = Production\n", 2, "expected production");
}

Test(config, bad_read_mode)
{
	parse_bad(
	    "[keyfs]\n\nread_mode = cache\n", 3,
	    "bad read_mode \"cache\": expected audited, strict or cached");
	parse_bad("[keyfs]\nmode = Production\n", 2,
		  "expected production or development");
}

Test(config, read_mode_strict)
{
	struct kf_config *cfg = parse_ok("[keyfs]\nread_mode = strict\n");

	cr_assert(cfg->read_mode == KF_READ_STRICT);
	cr_assert_str_eq(kf_config_read_modes[cfg->read_mode], "strict");
	kf_config_free(cfg);
}

Test(config, retain_versions_and_backup_keep)
{
	struct kf_config *cfg;

	parse_bad("[keyfs]\nretain_versions = 0\n", 2,
		  "retain_versions must be a whole number from 1 to 1000");
	parse_bad("[keyfs]\nretain_versions = two\n", 2, "not \"two\"");
	parse_bad("[keyfs]\nretain_versions = 3x\n", 2, "retain_versions");
	parse_bad("[keyfs]\nretain_versions = -1\n", 2, "retain_versions");
	parse_bad("[keyfs]\nretain_versions = 1001\n", 2, "retain_versions");
	parse_bad("[keyfs]\nretain_versions = 99999999999999999999999\n", 2,
		  "retain_versions");
	parse_bad("[keyfs]\nbackup_keep = 0\n", 2, "backup_keep");
	parse_bad("[keyfs]\nbackup_keep = 100001\n", 2, "backup_keep");
	cfg = parse_ok("[keyfs]\nretain_versions = 1000\nbackup_keep = 1\n");
	cr_assert_eq(cfg->retain_versions, 1000);
	cr_assert_eq(cfg->backup_keep, 1);
	kf_config_free(cfg);
}

Test(config, bad_intervals)
{
	static const char *const bad[] = {
	    "5x",   "-1d", "d", "99999999999999999999d", "5", "0d", "5 d",
	    "1.5d", "90D", ""};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128];

		snprintf(text, sizeof(text),
			 "[keyfs]\n\nrotate_interval = %s\n", bad[i]);
		parse_bad(text, 3, "rotate_interval");
	}
	parse_bad("[keyfs]\nrotate_interval = 99999999999999999999d\n", 2,
		  "too large");
	parse_bad("[keyfs]\nrotate_interval = 36501d\n", 2, "too large");
}

Test(config, good_intervals)
{
	static const struct {
		const char *text;
		int64_t seconds;
	} good[] = {
	    {"30s", 30},
	    {"5m", 300},
	    {"2h", 7200},
	    {"90d", 90 * DAY},
	    {"0", 0},
	    {"1s", 1},
	    {"36500d", 36500LL * DAY},
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char text[128];
		struct kf_config *cfg;

		snprintf(text, sizeof(text), "[keyfs]\nrotate_interval = %s\n",
			 good[i].text);
		cfg = parse_ok(text);
		cr_assert_eq(cfg->rotate_interval, good[i].seconds,
			     "%s gave %lld", good[i].text,
			     (long long)cfg->rotate_interval);
		kf_config_free(cfg);
	}
}

/* usage_window: rotate_interval's words, 0 = off, at most 366d. */
Test(config, usage_window)
{
	static const char *const bad[] = {"5x", "-1d", "7", "0d", "1.5h", ""};
	struct kf_config *cfg;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128];

		snprintf(text, sizeof(text), "[keyfs]\nusage_window = %s\n",
			 bad[i]);
		parse_bad(text, 2, "usage_window");
	}
	parse_bad("[keyfs]\nusage_window = 367d\n", 2, "too large");
	cfg = parse_ok("[keyfs]\nusage_window = 366d\n");
	cr_assert_eq(cfg->usage_window, 366 * DAY);
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nusage_window = 0\n");
	cr_assert_eq(cfg->usage_window, 0);
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nusage_window = 2s\n");
	cr_assert_eq(cfg->usage_window, 2);
	kf_config_free(cfg);
}

Test(config, bad_purpose_section_name)
{
	parse_bad("[keyfs]\n[purpose PHI]\n", 2, "invalid purpose name");
	parse_bad("[purpose -x]\n", 1, "invalid purpose name");
	parse_bad("[purpose a/b]\n", 1, "invalid purpose name");
	parse_bad("\n[purpose abcdefghijklmnopqrstuvwxyz0123456]\n", 2,
		  "invalid purpose name");
}

Test(config, duplicate_purpose)
{
	parse_bad("[purpose phi]\naccess = root:root 0440\n\n[purpose phi]\n",
		  4, "duplicate section [purpose phi] (first on line 1)");
	parse_bad("[keyfs]\npurposes = phi pii phi\n", 2,
		  "duplicate purpose \"phi\"");
	parse_bad("[keyfs]\npurposes = phi, Bad\n", 2,
		  "invalid purpose name \"Bad\"");
}

Test(config, purpose_list_and_sections)
{
	struct kf_config *cfg;

	cfg = parse_ok("[keyfs]\n"
		       "purposes = a, b\tc,,d\n"
		       "[purpose z]\n"
		       "access = 0:7 0440\n"
		       "[purpose b]\n"
		       "access = 0:8 0404\n"
		       "[purpose y]\n");
	cr_assert_eq(cfg->n_purposes, 6);
	cr_assert_str_eq(cfg->purposes[0].name, "a");
	cr_assert_str_eq(cfg->purposes[1].name, "b");
	cr_assert_str_eq(cfg->purposes[2].name, "c");
	cr_assert_str_eq(cfg->purposes[3].name, "d");
	cr_assert_str_eq(cfg->purposes[4].name, "z");
	cr_assert_str_eq(cfg->purposes[5].name, "y");
	assert_access(&cfg->purposes[0].access, 0, 0, 0400, "a");
	assert_access(&cfg->purposes[1].access, 0, 8, 0404, "b");
	assert_access(&cfg->purposes[4].access, 0, 7, 0440, "z");
	assert_access(&cfg->purposes[5].access, 0, 0, 0400, "y");
	kf_config_free(cfg);

	/* A section adds to the default seed list. */
	cfg = parse_ok("[purpose billing]\naccess = 0:0 0440\n");
	cr_assert_eq(cfg->n_purposes, 5);
	cr_assert_str_eq(cfg->purposes[4].name, "billing");
	kf_config_free(cfg);

	/* An explicitly empty list keeps only sections. */
	cfg = parse_ok("[keyfs]\npurposes =\n");
	cr_assert_eq(cfg->n_purposes, 0);
	kf_config_free(cfg);
}

Test(config, purpose_count_limited)
{
	size_t cap = 32 * (KF_CONFIG_MAX_PURPOSES + 1), len = 0;
	char *text = malloc(cap);
	struct kf_config *cfg;

	for (int i = 0; i < KF_CONFIG_MAX_PURPOSES - 4; i++)
		len += (size_t)snprintf(text + len, cap - len,
					"[purpose p%d]\n", i);
	cfg = parse_ok(text);
	cr_assert_eq(cfg->n_purposes, KF_CONFIG_MAX_PURPOSES);
	kf_config_free(cfg);
	snprintf(text + len, cap - len, "[purpose one-more]\n");
	parse_bad(text, KF_CONFIG_MAX_PURPOSES - 3, "too many purposes");
	free(text);
}

Test(config, unknown_user_and_group)
{
	parse_bad("[access]\nkeys = nosuchuser-kf:root 0400\n", 2,
		  "unknown user \"nosuchuser-kf\"");
	parse_bad("[access]\n\nstatus = root:nosuchgroup-kf 0444\n", 3,
		  "unknown group \"nosuchgroup-kf\"");
	parse_bad("[purpose phi]\naccess = root:nosuchgroup-kf 0440\n", 2,
		  "unknown group");
	parse_bad("[access]\nkeys = 4294967295:0 0400\n", 2, "out of range");
}

Test(config, bad_octal_mode)
{
	static const char *const bad[] = {"0800",  "400x",  "04755",
					  "4755",  "400",   "0",
					  "0o400", "-0400", "07777"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128];

		snprintf(text, sizeof(text), "[access]\nkeys = root:root %s\n",
			 bad[i]);
		parse_bad(text, 2, "bad mode");
	}
}

Test(config, access_syntax)
{
	parse_bad("[access]\nkeys = root 0400\n", 2, "one ':'");
	parse_bad("[access]\nkeys = rootroot0400\n", 2,
		  "expected owner:group MODE");
	parse_bad("[access]\nkeys = root:root\n", 2,
		  "expected owner:group MODE");
	parse_bad("[access]\nkeys = root:root 0400 extra\n", 2,
		  "expected owner:group MODE");
	parse_bad("[access]\nkeys = :root 0400\n", 2, "one ':'");
	parse_bad("[access]\nkeys = root: 0400\n", 2, "one ':'");
	parse_bad("[access]\nkeys = a:b:c 0400\n", 2, "one ':'");
}

Test(config, numeric_owner_and_group)
{
	struct kf_config *cfg = parse_ok("[access]\n"
					 "keys = 1000:2000 0440\n"
					 "[purpose phi]\n"
					 "access = 123456:654321 0040\n");

	assert_access(&cfg->keys, 1000, 2000, 0440, "keys");
	assert_access(&kf_config_purpose(cfg, "phi")->access, 123456, 654321,
		      0040, "phi");
	kf_config_free(cfg);
}

Test(config, names_resolved)
{
	struct passwd *pw = getpwnam("daemon");
	struct group *gr = getgrnam("daemon");
	struct kf_config *cfg;

	cr_assert(pw && gr, "this test needs user and group daemon");
	cfg = parse_ok("[access]\n"
		       "keys = root:root 0400\n"
		       "status = daemon:daemon 0444\n");
	assert_access(&cfg->keys, 0, 0, 0400, "keys");
	assert_access(&cfg->status, pw->pw_uid, gr->gr_gid, 0444, "status");
	kf_config_free(cfg);
}

Test(config, inline_comments)
{
	struct kf_config *cfg = parse_ok(
	    "[keyfs] ; the main section\n"
	    "mode = development            ; or production\n"
	    "backup_dir =                  ; default state_dir/backups\n"
	    "rotate_interval = 30d ; s, m, h or d\n"
	    "alert_command = a;b\n"
	    "[access]                     ; owner:group mode\n"
	    "keys = root:root 0440        ; current, previous\n"
	    "# hash comment\n");

	cr_assert(cfg->mode == KF_MODE_DEVELOPMENT);
	cr_assert_str_eq(cfg->backup_dir, "/var/lib/keyfs/backups");
	cr_assert_eq(cfg->rotate_interval, 30 * DAY);
	cr_assert_str_eq(cfg->alert_command, "a;b");
	assert_access(&cfg->keys, 0, 0, 0440, "keys");
	kf_config_free(cfg);
}

Test(config, relative_paths_resolved_against_file_directory)
{
	char *dir = kt_tmpdir("config-rel"), *path, want[4096];
	struct kf_config *cfg;

	path = write_config(dir, "[keyfs]\n"
				 "state_dir = state\n"
				 "backup_dir = ../b/./c//d/\n"
				 "master_key_file = ./mk\n"
				 "audit_log = /abs/../log//a.log\n"
				 "mountpoint = mnt\n");
	cfg = load_ok(path);
	snprintf(want, sizeof(want), "%s/state", dir);
	cr_assert_str_eq(cfg->state_dir, want);
	snprintf(want, sizeof(want), "%s/mk", dir);
	cr_assert_str_eq(cfg->master_key_file, want);
	snprintf(want, sizeof(want), "%s/mnt", dir);
	cr_assert_str_eq(cfg->mountpoint, want);
	cr_assert_str_eq(cfg->audit_log, "/log/a.log");
	*strrchr(dir, '/') = 0;
	snprintf(want, sizeof(want), "%s/b/c/d", dir);
	cr_assert_str_eq(cfg->backup_dir, want);
	kf_config_free(cfg);
	free(path);
	free(dir);
}

Test(config, relative_basedir_and_file_name)
{
	char *dir = kt_tmpdir("config-relname"), want[4096];
	struct kf_config *cfg;

	cr_assert(chdir(dir) == 0);
	cr_assert(mkdir("etc", 0700) == 0);
	kt_write_file("etc/k.ini", "[keyfs]\nstate_dir = s\n", 0644);
	cfg = load_ok("etc/k.ini");
	snprintf(want, sizeof(want), "%s/etc/s", dir);
	cr_assert_str_eq(cfg->state_dir, want);
	cr_assert_str_eq(cfg->source, "etc/k.ini");
	kf_config_free(cfg);
	free(dir);
}

Test(config, load_error_names_file_and_line)
{
	char *dir = kt_tmpdir("config-err"), *path, prefix[4200];
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	path = write_config(dir, "[keyfs]\n; c\nmode = test\n");
	cr_assert(kf_config_load(path, &cfg, err) == -EINVAL);
	snprintf(prefix, sizeof(prefix), "%s:3: bad mode", path);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0,
		  "error \"%s\" not \"%s...\"", err, prefix);
	cr_assert_null(cfg);
	free(path);
	free(dir);
}

Test(config, load_refuses_files_others_may_change)
{
	char *dir = kt_tmpdir("config-owner"), *path;
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	path = write_config(dir, "[keyfs]\nmode = development\n");
	cr_assert(chmod(path, 0664) == 0);
	cr_assert(kf_config_load(path, &cfg, err) == -EPERM);
	cr_assert(strstr(err, "not writable by group or other"), "%s", err);
	cr_assert(chmod(path, 0646) == 0);
	cr_assert(kf_config_load(path, &cfg, err) == -EPERM);
	cr_assert(chmod(path, 0644) == 0 && chown(path, 1001, 0) == 0);
	cr_assert(kf_config_load(path, &cfg, err) == -EPERM);
	cr_assert(strstr(err, "owned by root"), "%s", err);
	cr_assert_null(cfg);
	cr_assert(chown(path, 0, 0) == 0);
	cr_assert(kf_config_load(path, &cfg, err) == 0, "%s", err);
	kf_config_free(cfg);
	free(path);
	free(dir);
}

Test(config, load_refuses_missing_big_and_binary_files)
{
	char *dir = kt_tmpdir("config-files"), *path, *big;
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";
	FILE *f;

	path = kf_path_join(dir, "missing.ini");
	cr_assert(kf_config_load(path, &cfg, err) == -ENOENT);
	cr_assert(kt_contains(err, path), "no file name in: %s", err);
	free(path);

	path = kf_path_join(dir, "big.ini");
	big = malloc(1024 * 1024 + 2);
	memset(big, ';', 1024 * 1024 + 1);
	big[1024 * 1024 + 1] = 0;
	kt_write_file(path, big, 0644);
	cr_assert(kf_config_load(path, &cfg, err) == -EFBIG);
	cr_assert(kt_contains(err, "larger than 1 MiB"), "%s", err);
	free(big);
	free(path);

	path = kf_path_join(dir, "nul.ini");
	f = fopen(path, "w");
	cr_assert(f);
	fwrite("[keyfs]\nmode = production\n\0x\n", 1, 30, f);
	fclose(f);
	cr_assert(kf_config_load(path, &cfg, err) == -EINVAL);
	cr_assert(kt_contains(err, ":3: NUL byte"), "%s", err);
	free(path);

	cr_assert(kf_config_load(dir, &cfg, err) == -EINVAL);
	cr_assert(kt_contains(err, "not a regular file"), "%s", err);
	cr_assert_null(cfg);
	free(dir);
}

Test(config, keyfs_config_selects_file)
{
	char *dir = kt_tmpdir("config-env"), *a, *b;
	struct kf_config *cfg;

	a = write_config(dir, "[keyfs]\nstate_dir = /from/env\n");
	b = kf_path_join(dir, "other.ini");
	kt_write_file(b, "[keyfs]\nstate_dir = /from/arg\n", 0644);
	cr_assert(setenv("KEYFS_CONFIG", a, 1) == 0);
	cfg = load_ok(NULL);
	cr_assert_str_eq(cfg->source, a);
	cr_assert_str_eq(cfg->state_dir, "/from/env");
	kf_config_free(cfg);
	/* An explicit path wins over the environment. */
	cfg = load_ok(b);
	cr_assert_str_eq(cfg->state_dir, "/from/arg");
	kf_config_free(cfg);
	free(a);
	free(b);
	free(dir);
}

Test(config, no_file_falls_back)
{
	struct kf_config *cfg;
	struct stat st;
	char *dir = kt_tmpdir("config-dev"), want[4096];

	cr_assert(chdir(dir) == 0);
	cfg = load_ok(NULL);
	if (stat(KF_CONFIG_SYSTEM, &st) == 0) {
		cr_assert_str_eq(cfg->source, KF_CONFIG_SYSTEM);
	} else {
		cr_assert_str_eq(cfg->source, KF_CONFIG_EMBEDDED);
		cr_assert(cfg->mode == KF_MODE_DEVELOPMENT);
		snprintf(want, sizeof(want), "%s/.keyfs-dev/state", dir);
		cr_assert_str_eq(cfg->state_dir, want);
	}
	kf_config_free(cfg);
	free(dir);
}

Test(config, key_backup_dir_overrides)
{
	char *dir = kt_tmpdir("config-kbd"), *path, want[4096];
	struct kf_config *cfg;

	path = write_config(dir, "[keyfs]\nbackup_dir = /from/file\n"
				 "mountpoint = /run/kf\n");
	cr_assert(setenv("KEY_BACKUP_DIR", "/srv/backups/", 1) == 0);
	cfg = load_ok(path);
	cr_assert_str_eq(cfg->backup_dir, "/srv/backups");
	kf_config_free(cfg);

	/* Relative: against the current directory, not the file's. */
	cr_assert(chdir("/tmp") == 0);
	cr_assert(setenv("KEY_BACKUP_DIR", "rel/b", 1) == 0);
	cfg = load_ok(path);
	snprintf(want, sizeof(want), "/tmp/rel/b");
	cr_assert_str_eq(cfg->backup_dir, want);
	kf_config_free(cfg);

	/* Empty: ignored. */
	cr_assert(setenv("KEY_BACKUP_DIR", "", 1) == 0);
	cfg = load_ok(path);
	cr_assert_str_eq(cfg->backup_dir, "/from/file");
	kf_config_free(cfg);

	/* Never inside the mount. */
	cr_assert(setenv("KEY_BACKUP_DIR", "/run/kf/backups", 1) == 0);
	{
		char err[KF_ERR_MAX] = "";

		cfg = NULL;
		cr_assert(kf_config_load(path, &cfg, err) == -EINVAL);
		cr_assert(kt_contains(err, "KEY_BACKUP_DIR") &&
			      kt_contains(err, "lies under the mountpoint"),
			  "%s", err);
		cr_assert_null(cfg);
	}
	free(path);
	free(dir);
}

Test(config, paths_under_mountpoint_refused)
{
	struct kf_config *cfg;

	parse_bad("[keyfs]\nmountpoint = /run/kf\nstate_dir = /run/kf/state\n",
		  3,
		  "state_dir /run/kf/state lies under the mountpoint /run/kf");
	parse_bad("[keyfs]\nstate_dir = /run/kf/../kf\nmountpoint = /run/kf\n",
		  2, "state_dir /run/kf lies under the mountpoint");
	/* Defaults follow state_dir: reported at the mountpoint's line. */
	parse_bad("[keyfs]\nstate_dir = /s\nmountpoint = /s/backups\n", 3,
		  "backup_dir /s/backups lies under the mountpoint /s/backups");
	parse_bad("[keyfs]\nmountpoint = /m\n\nbackup_dir = /m/b\n", 4,
		  "backup_dir");
	parse_bad("[keyfs]\nmountpoint = /m\naudit_log = /m/a.log\n", 3,
		  "audit_log");
	parse_bad("[keyfs]\nmaster_key_file = /etc/keyfs/mk\nmountpoint = "
		  "/etc\n",
		  2, "master_key_file /etc/keyfs/mk lies under the mountpoint");
	parse_bad("[keyfs]\nmountpoint = /\n", 2, "lies under the mountpoint");
	/* A sibling that only shares a prefix is fine. */
	cfg = parse_ok("[keyfs]\nmountpoint = /run/kf\n"
		       "state_dir = /run/kf2\n");
	cr_assert_str_eq(cfg->mountpoint, "/run/kf");
	kf_config_free(cfg);
}

Test(config, set_mountpoint_checks_paths)
{
	struct kf_config *cfg = parse_ok("[keyfs]\nstate_dir = /var/k\n");
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_config_set_mountpoint(cfg, "/var", err) == -EINVAL);
	cr_assert(kt_contains(err, "lies under the mountpoint /var"), "%s",
		  err);
	cr_assert_null(cfg->mountpoint, "changed on failure");
	cr_assert(kf_config_set_mountpoint(cfg, "/run//keyfs/", err) == 0, "%s",
		  err);
	cr_assert_str_eq(cfg->mountpoint, "/run/keyfs");
	cr_assert(kf_config_set_mountpoint(cfg, "", err) == -EINVAL);
	cr_assert_str_eq(cfg->mountpoint, "/run/keyfs");
	kf_config_free(cfg);
}

Test(config, empty_required_paths_refused)
{
	parse_bad("[keyfs]\nstate_dir =\n", 2, "state_dir must not be empty");
	parse_bad("[keyfs]\n\nmaster_key_file =\n", 3,
		  "master_key_file must not be empty");
}

Test(config, messages_do_not_echo_control_characters)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_config_parse("[keyfs]\nmode = a\x1b[2Jb\n", NAME, "/",
				  &cfg, err) == -EINVAL);
	cr_assert(!strchr(err, '\x1b'), "escape character in message");
	cr_assert(kt_contains(err, "a?[2Jb"), "%s", err);
}

Test(config, free_null)
{
	cr_assert_null(kf_config_free(NULL));
	cr_assert_null(kf_config_purpose(NULL, "phi"));
}

/* --- store and [etcd] ---------------------------------------------------- */

/* The smallest etcd configuration; a key added to it is on line 5. */
#define ETCD_MIN "[keyfs]\nstore = etcd\n[etcd]\nendpoints = http://e1:2379\n"
#define ETCD_HTTPS                                                             \
	"[keyfs]\nstore = etcd\n[etcd]\nendpoints = https://e1:2379\n"

/* Asserts that "[etcd] key = value" on line 5 is refused with want. */
static void etcd_bad(const char *key, const char *value, const char *want)
{
	char text[512];

	cr_assert((size_t)snprintf(text, sizeof(text), ETCD_MIN "%s = %s\n",
				   key, value) < sizeof(text));
	parse_bad(text, 5, want);
}

/* ETCD_MIN with "key = value" on line 5. */
static struct kf_config *etcd_ok(const char *key, const char *value)
{
	char text[512];

	cr_assert((size_t)snprintf(text, sizeof(text), ETCD_MIN "%s = %s\n",
				   key, value) < sizeof(text));
	return parse_ok(text);
}

/* This test process gets a UTS namespace of its own with host name `name`. */
static void set_host_name(const char *name)
{
	cr_assert(unshare(CLONE_NEWUTS) == 0,
		  "unshare(CLONE_NEWUTS): %s (this test needs root)",
		  strerror(errno));
	cr_assert(sethostname(name, strlen(name)) == 0, "sethostname: %s",
		  strerror(errno));
}

/* A string the length of a limit: c repeated, after `first`. */
static char *repeat(const char *first, char c, size_t len)
{
	char *s = malloc(len + 1);

	cr_assert(s);
	memset(s, c, len);
	memcpy(s, first, strlen(first));
	s[len] = 0;
	return s;
}

Test(config, store_file_or_etcd)
{
	struct kf_config *cfg = parse_ok("[keyfs]\nstore = file\n");

	cr_assert(cfg->store == KF_STORE_TYPE_FILE);
	cr_assert_null(cfg->etcd.endpoints);
	kf_config_free(cfg);
	cfg = parse_ok(ETCD_MIN);
	cr_assert(cfg->store == KF_STORE_TYPE_ETCD);
	kf_config_free(cfg);
	parse_bad("[keyfs]\n\nstore = files\n", 3,
		  "bad store \"files\": expected file or etcd");
	parse_bad("[keyfs]\nstore = Etcd\n", 2, "bad store");
	parse_bad("[keyfs]\nstore =\n", 2, "bad store");
}

Test(config, etcd_every_key_set)
{
	struct kf_config *cfg = parse_ok(
	    "[keyfs]\n"
	    "store = etcd\n"
	    "[etcd]\n"
	    "endpoints = https://a.example:2379/ ,http://10.0.0.2:2379,  "
	    "https://[::1]:2379\n"
	    "prefix = /keyfs/c-1.x_y\n"
	    "node = Node-1.example_x\n"
	    "timeout = 500ms\n"
	    "cacert = tls/ca.pem\n"
	    "cert = /etc/keyfs/etcd.pem\n"
	    "key = ./tls/../etcd.key\n"
	    "user = keyfs\n"
	    "password_file = ../secret/etcd.pw\n");
	const struct kf_etcd_settings *e = &cfg->etcd;

	cr_assert(cfg->store == KF_STORE_TYPE_ETCD);
	cr_assert_eq(e->n_endpoints, 3);
	cr_assert_str_eq(e->endpoints[0], "https://a.example:2379");
	cr_assert_str_eq(e->endpoints[1], "http://10.0.0.2:2379");
	cr_assert_str_eq(e->endpoints[2], "https://[::1]:2379");
	cr_assert_str_eq(e->prefix, "/keyfs/c-1.x_y");
	cr_assert_str_eq(e->node, "Node-1.example_x");
	cr_assert_eq(e->timeout_ms, 500);
	cr_assert_str_eq(e->cacert, "/base/tls/ca.pem");
	cr_assert_str_eq(e->cert, "/etc/keyfs/etcd.pem");
	cr_assert_str_eq(e->key, "/base/etcd.key");
	cr_assert_str_eq(e->user, "keyfs");
	cr_assert_str_eq(e->password_file, "/secret/etcd.pw");
	kf_config_free(cfg);
}

Test(config, etcd_defaults)
{
	struct kf_config *cfg = parse_ok(ETCD_MIN);
	char host[256] = "";

	cr_assert(gethostname(host, sizeof(host) - 1) == 0);
	cr_assert_eq(cfg->etcd.n_endpoints, 1);
	cr_assert_str_eq(cfg->etcd.endpoints[0], "http://e1:2379");
	cr_assert_str_eq(cfg->etcd.prefix, KF_ETCD_PREFIX_DEFAULT);
	cr_assert_str_eq(cfg->etcd.node, host);
	cr_assert_eq(cfg->etcd.timeout_ms, 2000);
	cr_assert_null(cfg->etcd.cacert);
	cr_assert_null(cfg->etcd.cert);
	cr_assert_null(cfg->etcd.key);
	cr_assert_null(cfg->etcd.user);
	cr_assert_null(cfg->etcd.password_file);
	kf_config_free(cfg);
}

Test(config, etcd_default_node_is_the_host_name)
{
	struct kf_config *cfg;

	set_host_name("kf-node_7.example");
	cfg = parse_ok(ETCD_MIN);
	cr_assert_str_eq(cfg->etcd.node, "kf-node_7.example");
	kf_config_free(cfg);
	/* Given, node wins. */
	cfg = etcd_ok("node", "n1");
	cr_assert_str_eq(cfg->etcd.node, "n1");
	kf_config_free(cfg);
}

Test(config, etcd_host_name_unfit_for_node)
{
	char *too_long = repeat("", 'a', KF_NODE_NAME_MAX + 1);
	struct kf_config *cfg;

	set_host_name("kf host");
	/* Only a problem for the etcd store. */
	cfg = parse_ok("[keyfs]\nstore = file\n");
	kf_config_free(cfg);
	parse_bad(ETCD_MIN, 2, "host name \"kf host\"");
	parse_bad(ETCD_MIN, 2, "set node in [etcd]");
	cfg = etcd_ok("node", "n1");
	cr_assert_str_eq(cfg->etcd.node, "n1");
	kf_config_free(cfg);

	set_host_name(too_long);
	parse_bad(ETCD_MIN, 2, "set node in [etcd]");
	free(too_long);
}

Test(config, etcd_section_keys)
{
	parse_bad(ETCD_MIN "endpoint = http://e2:2379\n", 5,
		  "unknown key \"endpoint\" in [etcd]");
	parse_bad(ETCD_MIN "mode = production\n", 5,
		  "unknown key \"mode\" in [etcd]");
	parse_bad("[keyfs]\nendpoints = http://a:1\n", 2,
		  "unknown key \"endpoints\" in [keyfs]");
	parse_bad(ETCD_MIN "prefix = /a\nprefix = /b\n", 6,
		  "duplicate key \"prefix\" (first on line 5)");
	parse_bad(ETCD_MIN "endpoints = http://e2:2379\n", 5,
		  "duplicate key \"endpoints\" (first on line 4)");
	parse_bad(ETCD_MIN "[etcd]\n", 5,
		  "duplicate section [etcd] (first on line 3)");
	parse_bad("[etc]\n", 1, "[etcd]");
	parse_bad("endpoints = http://a:1\n", 1, "[etcd]");
}

Test(config, etcd_endpoints_parsed)
{
	char text[256];
	size_t len;
	struct kf_config *cfg;

	/* 16 endpoints, the most, on one line of at most 198 characters. */
	len = (size_t)snprintf(text, sizeof(text),
			       "[keyfs]\nstore = etcd\n[etcd]\nendpoints = ");
	for (int i = 1; i <= 16; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
					"%shttp://a%d", i > 1 ? "," : "", i);
	snprintf(text + len, sizeof(text) - len, "\n");
	cfg = parse_ok(text);
	cr_assert_eq(cfg->etcd.n_endpoints, 16);
	cr_assert_str_eq(cfg->etcd.endpoints[15], "http://a16");
	kf_config_free(cfg);

	/* One more is too many. */
	snprintf(text + len, sizeof(text) - len, ",http://a17\n");
	parse_bad(text, 4, "too many endpoints (at most 16)");
}

Test(config, etcd_bad_endpoints)
{
	static const char *const bad_url[] = {
	    "a:2379",		"ftp://a:1",	   "HTTP://a:1",
	    "http://",		"http:///",	   "https://:2379",
	    "http://a:2379/v3", "http://a:2379//", "http://a b:2379",
	    "http://a:",	"http://a:x",	   "http://a:65536",
	    "http://a:0",	"http://u@a:1",	   "http://a?x",
	    "http://a#x",	"http://[::1",	   "http://a:1 http://b:1",
	};
	static const struct {
		const char *value, *want;
	} bad[] = {
	    {"", "endpoints must not be empty"},
	    {"http://a:1,,http://b:1", "empty endpoint in endpoints"},
	    {"http://a:1,", "empty endpoint in endpoints"},
	    {" , http://a:1", "empty endpoint in endpoints"},
	    {"http://a:1, http://a:1/", "duplicate endpoint \"http://a:1\""},
	    {"http://A:1,http://a:1", "duplicate endpoint"},
	};

	for (size_t i = 0; i < sizeof(bad_url) / sizeof(bad_url[0]); i++) {
		char text[256], want[128];

		snprintf(text, sizeof(text),
			 "[keyfs]\nstore = etcd\n[etcd]\nendpoints = %s\n",
			 bad_url[i]);
		snprintf(want, sizeof(want), "bad endpoint \"%s\" in endpoints",
			 bad_url[i]);
		parse_bad(text, 4, want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256];

		snprintf(text, sizeof(text),
			 "[keyfs]\nstore = etcd\n[etcd]\nendpoints = %s\n",
			 bad[i].value);
		parse_bad(text, 4, bad[i].want);
	}
}

Test(config, etcd_prefix)
{
	static const char *const bad[] = {"",	     "keyfs",	   "/",
					  "/keyfs/", "/a//b",	   "/a b",
					  "/a*b",    "/k\xc3\xa9", "//"};
	char *longest = repeat("/", 'p', 128);
	char *too_long = repeat("/", 'p', 129);
	const char *good[] = {"/a", "/A.z_0-9/x", longest};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		etcd_bad("prefix", bad[i], "bad prefix");
	etcd_bad("prefix", too_long, "bad prefix");
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kf_config *cfg = etcd_ok("prefix", good[i]);

		cr_assert_str_eq(cfg->etcd.prefix, good[i]);
		kf_config_free(cfg);
	}
	free(longest);
	free(too_long);
}

Test(config, etcd_node)
{
	static const char *const bad[] = {"",	 "-a",	".a",  "_a",
					  "a b", "a/b", "a:b", "n\xc3\xa9"};
	char *longest = repeat("", 'n', KF_NODE_NAME_MAX);
	char *too_long = repeat("", 'n', KF_NODE_NAME_MAX + 1);
	const char *good[] = {"n", "9.a_b-C", longest};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		etcd_bad("node", bad[i], "bad node");
	etcd_bad("node", too_long, "bad node");
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kf_config *cfg = etcd_ok("node", good[i]);

		cr_assert_str_eq(cfg->etcd.node, good[i]);
		kf_config_free(cfg);
	}
	free(longest);
	free(too_long);
}

Test(config, etcd_timeout)
{
	static const char *const bad[] = {"",	  "s",
					  "ms",	  "2m",
					  "2h",	  "1.5s",
					  "-1s",  "2 s",
					  "2S",	  "2sec",
					  "2ms5", "0x10s",
					  "+2s",  "99999999999999999999s"};
	static const char *const out_of_range[] = {"0ms", "0s", "99ms", "61s",
						   "60001ms"};
	static const struct {
		const char *text;
		int ms;
	} good[] = {
	    {"100ms", 100}, {"500ms", 500},	{"2s", 2000},
	    {"60s", 60000}, {"60000ms", 60000}, {"007s", 7000},
	};

	etcd_bad("timeout", "2", "units ms or s");
	etcd_bad("timeout", "2000", "bad timeout \"2000\"");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		etcd_bad("timeout", bad[i], "timeout");
	for (size_t i = 0; i < sizeof(out_of_range) / sizeof(out_of_range[0]);
	     i++)
		etcd_bad("timeout", out_of_range[i], "from 100ms to 60s");
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kf_config *cfg = etcd_ok("timeout", good[i].text);

		cr_assert_eq(cfg->etcd.timeout_ms, good[i].ms, "%s gave %d",
			     good[i].text, cfg->etcd.timeout_ms);
		kf_config_free(cfg);
	}
}

Test(config, etcd_cert_and_key_together)
{
	struct kf_config *cfg;

	parse_bad(ETCD_HTTPS "cert = c.pem\n", 5, "cert is set without key");
	parse_bad(ETCD_HTTPS "\nkey = k.pem\n", 6, "key is set without cert");
	parse_bad(ETCD_HTTPS "cert = c.pem\nkey =\n", 5,
		  "cert is set without key");
	cfg = parse_ok(ETCD_HTTPS "key = k.pem\ncert = c.pem\n");
	cr_assert_str_eq(cfg->etcd.cert, "/base/c.pem");
	cr_assert_str_eq(cfg->etcd.key, "/base/k.pem");
	cr_assert_null(cfg->etcd.cacert);
	kf_config_free(cfg);
	cfg = parse_ok(ETCD_HTTPS "cacert = ca.pem\n");
	cr_assert_str_eq(cfg->etcd.cacert, "/base/ca.pem");
	cr_assert_null(cfg->etcd.cert);
	kf_config_free(cfg);
}

Test(config, etcd_user_and_password_file_together)
{
	struct kf_config *cfg;

	etcd_bad("user", "keyfs", "user is set without password_file");
	etcd_bad("password_file", "/etc/keyfs/etcd.pw",
		 "password_file is set without user");
	parse_bad(ETCD_MIN "user =\npassword_file = pw\n", 6,
		  "password_file is set without user");
	cfg = parse_ok(ETCD_MIN "password_file = pw\nuser = kf\n");
	cr_assert_str_eq(cfg->etcd.user, "kf");
	cr_assert_str_eq(cfg->etcd.password_file, "/base/pw");
	kf_config_free(cfg);
}

Test(config, store_etcd_needs_endpoints)
{
	parse_bad("[keyfs]\nstore = etcd\n", 2,
		  "store = etcd needs endpoints in [etcd]");
	parse_bad("[etcd]\nprefix = /a\n[keyfs]\nmode = production\n"
		  "store = etcd\n",
		  5, "store = etcd needs endpoints in [etcd]");
}

Test(config, etcd_section_needs_store_etcd)
{
	static const char *const want =
	    "[etcd] is set but store = file; set store = etcd or remove the "
	    "section";

	parse_bad("[keyfs]\nmode = production\n[etcd]\n"
		  "endpoints = http://a:1\n",
		  3, want);
	parse_bad("[keyfs]\nstore = file\n\n[etcd]\n", 4, want);
	parse_bad("[etcd]\n", 1, want);
}

Test(config, master_key_next_is_for_store_etcd)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX] = "";

	parse_bad("[keyfs]\nmode = production\n"
		  "master_key_next = /etc/keyfs/master.key.new\n",
		  3, "master_key_next is for store = etcd");
	cr_assert(kf_config_parse("[keyfs]\nstore = etcd\nmaster_key_next = "
				  "next.key\n[etcd]\nendpoints = "
				  "http://127.0.0.1:2379\n",
				  "keyfs.ini", "/etc/keyfs", &cfg, err) == 0,
		  "%s", err);
	cr_assert_str_eq(cfg->master_key_next, "/etc/keyfs/next.key");
	kf_config_free(cfg);
}

Test(config, etcd_tls_needs_https)
{
	struct kf_config *cfg;

	parse_bad(ETCD_MIN "cacert = /ca.pem\n", 5,
		  "cacert is set but every endpoint is http://");
	parse_bad(ETCD_MIN "cacert = /ca.pem\n", 5,
		  "cacert/cert/key need https:// endpoints");
	/* The first of cacert, cert and key that is set. */
	parse_bad(ETCD_MIN "\nkey = /k\ncert = /c\n", 7,
		  "cert is set but every endpoint is http://");
	cfg = parse_ok("[keyfs]\nstore = etcd\n[etcd]\n"
		       "endpoints = http://a:1, https://b:1\n"
		       "cacert = /ca.pem\n");
	cr_assert_str_eq(cfg->etcd.cacert, "/ca.pem");
	kf_config_free(cfg);
}

Test(config, etcd_paths_under_mountpoint_refused)
{
	struct kf_config *cfg;
	char err[KF_ERR_MAX] = "";

	parse_bad("[keyfs]\nmountpoint = /run/kf\nstore = etcd\n[etcd]\n"
		  "endpoints = https://a:1\ncacert = /run/kf/ca.pem\n",
		  6, "cacert /run/kf/ca.pem lies under the mountpoint /run/kf");
	parse_bad("[keyfs]\nmountpoint = /run/kf\nstore = etcd\n[etcd]\n"
		  "endpoints = https://a:1\ncert = /c\nkey = /run/kf/k\n",
		  7, "key /run/kf/k lies under the mountpoint");
	/* Relative: resolved against the file's directory first. */
	parse_bad("[keyfs]\nmountpoint = /base/mnt\nstore = etcd\n[etcd]\n"
		  "endpoints = http://a:1\nuser = kf\npassword_file = mnt/pw\n",
		  7, "password_file /base/mnt/pw lies under the mountpoint");

	cfg = parse_ok("[keyfs]\nstore = etcd\n[etcd]\n"
		       "endpoints = https://a:1\ncert = /srv/tls/c\n"
		       "key = /srv/tls/k\n");
	cr_assert(kf_config_set_mountpoint(cfg, "/srv/tls", err) == -EINVAL);
	cr_assert(kt_contains(err, "cert /srv/tls/c lies under the mountpoint "
				   "/srv/tls"),
		  "%s", err);
	cr_assert_null(cfg->mountpoint, "changed on failure");
	cr_assert(kf_config_set_mountpoint(cfg, "/srv/tls2", err) == 0, "%s",
		  err);
	kf_config_free(cfg);
}

Test(config, paths_keyfs_opens)
{
	static const char *const keys[] = {"state_dir",
					   "backup_dir",
					   "audit_log",
					   "master_key_file",
					   "cacert",
					   "cert",
					   "key",
					   "password_file",
					   "audit_syslog_socket",
					   "metrics_file",
					   "recovery_public_key",
					   "master_key_next"};
	struct kf_config_path paths[KF_CONFIG_PATHS_MAX];
	struct kf_config *cfg = parse_ok("");

	cr_assert_eq(kf_config_paths(cfg, paths), 4);
	cr_assert_str_eq(paths[3].key, "master_key_file");
	cr_assert_str_eq(paths[3].path, "/etc/keyfs/master.key");
	kf_config_free(cfg);
	/* audit_syslog_socket counts only where keyfs opens it. */
	cfg = parse_ok("[keyfs]\naudit_syslog_socket = /t/log\n");
	cr_assert_eq(kf_config_paths(cfg, paths), 4);
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nstore = etcd\naudit_syslog = yes\n"
		       "metrics_file = /t/keyfs.prom\n"
		       "recovery_public_key = /t/rec.pub\n"
		       "master_key_next = /t/next.key\n"
		       "[etcd]\nendpoints = https://e1:2379\n"
		       "cacert = /t/ca\ncert = /t/c\nkey = /t/k\n"
		       "user = u\npassword_file = /t/pw\n");
	cr_assert_eq(kf_config_paths(cfg, paths), KF_CONFIG_PATHS_MAX);
	for (size_t i = 0; i < KF_CONFIG_PATHS_MAX; i++)
		cr_assert_str_eq(paths[i].key, keys[i]);
	cr_assert_str_eq(paths[7].path, "/t/pw");
	cr_assert_str_eq(paths[9].path, "/t/keyfs.prom");
	cr_assert_str_eq(paths[10].path, "/t/rec.pub");
	cr_assert_str_eq(paths[11].path, "/t/next.key");
	kf_config_free(cfg);
}

/*
 * metrics_file: unset by default and when empty; a path like the others
 * (relative to the file's folder, cleaned); never under the mountpoint.
 */
Test(config, metrics_file)
{
	char *dir = kt_tmpdir("config-metrics"), *path, want[4096];
	struct kf_config *cfg = parse_ok("");

	cr_assert_null(cfg->metrics_file, "a metrics_file by default");
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nmetrics_file =\n");
	cr_assert_null(cfg->metrics_file, "empty metrics_file is not unset");
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nmetrics_file = /var/lib/ne//keyfs.prom\n");
	cr_assert_str_eq(cfg->metrics_file, "/var/lib/ne/keyfs.prom");
	kf_config_free(cfg);

	path = write_config(dir, "[keyfs]\nmetrics_file = tc/./keyfs.prom\n");
	cfg = load_ok(path);
	snprintf(want, sizeof(want), "%s/tc/keyfs.prom", dir);
	cr_assert_str_eq(cfg->metrics_file, want);
	kf_config_free(cfg);

	parse_bad("[keyfs]\nmountpoint = /run/kf\n\nmetrics_file = "
		  "/run/kf/keyfs.prom\n",
		  4,
		  "metrics_file /run/kf/keyfs.prom lies under the mountpoint");
	parse_bad("[keyfs]\nmetrics_file = /a.prom\nmetrics_file = /b.prom\n",
		  3, "duplicate key \"metrics_file\"");
	parse_bad("[access]\nmetrics_file = /a.prom\n", 2,
		  "unknown key \"metrics_file\" in [access]");
	cfg = parse_ok("[keyfs]\nstate_dir = /var/k\n"
		       "metrics_file = /srv/m/keyfs.prom\n");
	{
		char err[KF_ERR_MAX] = "";

		cr_assert(kf_config_set_mountpoint(cfg, "/srv/m", err) ==
			  -EINVAL);
		cr_assert(kt_contains(err, "metrics_file"), "%s", err);
	}
	kf_config_free(cfg);
	free(path);
	free(dir);
}

Test(config, audit_settings_default)
{
	struct kf_config *cfg = parse_ok("[keyfs]\n");
	const struct kf_audit_settings *a = &cfg->auditing;

	cr_assert_eq(a->max_size, 64u << 20);
	cr_assert_eq(a->rotate, 86400);
	cr_assert_eq(a->keep, 0, "default keeps every closed segment");
	cr_assert_eq(a->open_window, 1);
	cr_assert(!a->syslog);
	cr_assert_str_eq(kf_config_facility_name(a->syslog_facility),
			 "authpriv");
	cr_assert_str_eq(a->syslog_tag, "keyfs-audit");
	cr_assert_str_eq(a->syslog_socket, "/dev/log");
	cr_assert_eq(a->min_free, 5);
	kf_config_free(cfg);
}

Test(config, audit_settings_set)
{
	struct kf_config *cfg = parse_ok("[keyfs]\n"
					 "audit_max_size = 16K\n"
					 "audit_rotate = 12h\n"
					 "audit_keep = 30\n"
					 "audit_open_window = 0\n"
					 "audit_syslog = yes\n"
					 "audit_syslog_facility = local3\n"
					 "audit_syslog_tag = phi.keys\n"
					 "audit_syslog_socket = sock/log\n"
					 "audit_min_free = 10%\n");
	const struct kf_audit_settings *a = &cfg->auditing;

	cr_assert_eq(a->max_size, 16 * 1024);
	cr_assert_eq(a->rotate, 12 * 3600);
	cr_assert_eq(a->keep, 30);
	cr_assert_eq(a->open_window, 0);
	cr_assert(a->syslog);
	cr_assert_str_eq(kf_config_facility_name(a->syslog_facility), "local3");
	cr_assert_str_eq(a->syslog_tag, "phi.keys");
	cr_assert_str_eq(a->syslog_socket, "/base/sock/log");
	cr_assert_eq(a->min_free, 10);
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\naudit_max_size = 4096\naudit_rotate = 0\n"
		       "audit_min_free = 0\naudit_open_window = 1h\n");
	cr_assert_eq(cfg->auditing.max_size, 4096);
	cr_assert_eq(cfg->auditing.rotate, 0);
	cr_assert_eq(cfg->auditing.min_free, 0);
	cr_assert_eq(cfg->auditing.open_window, 3600);
	kf_config_free(cfg);
}

Test(config, bad_audit_settings)
{
	parse_bad("[keyfs]\naudit_max_size = 1K\n", 2,
		  "bad audit_max_size \"1K\"");
	parse_bad("[keyfs]\naudit_max_size = 64MB\n", 2,
		  "bad audit_max_size \"64MB\"");
	parse_bad("[keyfs]\naudit_max_size = 2048G\n", 2, "bad audit_max_size");
	parse_bad("[keyfs]\n\naudit_rotate = 1w\n", 3, "bad audit_rotate");
	parse_bad("[keyfs]\naudit_keep = -1\n", 2, "audit_keep");
	parse_bad("[keyfs]\naudit_open_window = 2h\n", 2,
		  "audit_open_window \"2h\" is too large");
	parse_bad("[keyfs]\naudit_syslog = true\n", 2, "expected no or yes");
	parse_bad("[keyfs]\naudit_syslog_facility = kern\n", 2,
		  "bad audit_syslog_facility \"kern\"");
	parse_bad("[keyfs]\naudit_syslog_tag = a b\n", 2,
		  "bad audit_syslog_tag");
	parse_bad("[keyfs]\naudit_syslog_socket =\n", 2, "must not be empty");
	parse_bad("[keyfs]\naudit_min_free = 100%\n", 2,
		  "bad audit_min_free \"100%\"");
	parse_bad("[keyfs]\naudit_min_free = 5%%\n", 2, "bad audit_min_free");
	parse_bad("[keyfs]\naudit_keep = 1\naudit_keep = 2\n", 3,
		  "duplicate key \"audit_keep\"");
}

Test(config, rotate_mode_and_stage_delay)
{
	struct kf_config *cfg = parse_ok("[keyfs]\n");

	cr_assert_eq(cfg->rotate_mode, KF_ROTATE_ONE_STEP);
	cr_assert_eq(cfg->stage_delay, 86400);
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nrotate_mode = stage\nstage_delay = 90m\n");
	cr_assert_eq(cfg->rotate_mode, KF_ROTATE_STAGE);
	cr_assert_eq(cfg->stage_delay, 90 * 60);
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nrotate_mode = rotate\nstage_delay = 0\n");
	cr_assert_eq(cfg->rotate_mode, KF_ROTATE_ONE_STEP);
	cr_assert_eq(cfg->stage_delay, 0);
	kf_config_free(cfg);
	parse_bad("[keyfs]\nrotate_mode = staged\n", 2, "rotate_mode");
	parse_bad("[keyfs]\nstage_delay = 5x\n", 2, "stage_delay");
	parse_bad("[keyfs]\nstage_delay = 36501d\n", 2, "too large");
	cfg = parse_ok("[keyfs]\n");
	cr_assert_eq(cfg->stage_timeout, 30);
	kf_config_free(cfg);
	cfg = parse_ok("[keyfs]\nstage_timeout = 2s\n");
	cr_assert_eq(cfg->stage_timeout, 2);
	kf_config_free(cfg);
	parse_bad("[keyfs]\nstage_timeout = 0\n", 2, "stage_timeout");
	parse_bad("[keyfs]\nstage_timeout = 2h\n", 2, "stage_timeout");
}
