// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/config: defaults, the shipped configurations, every kind
 * of bad input refused with "file:line: reason", access specifications,
 * purposes, path resolution, the environment and the mountpoint rule.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
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
	parse_bad("[keyfs]\n\nread_mode = cache\n", 3,
		  "bad read_mode \"cache\"");
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
