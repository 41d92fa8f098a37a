// SPDX-License-Identifier: MIT
/*
 * offline: the keyfs commands that work from the configuration and the
 * files it names, with the daemon stopped -- backup list and verify (of a
 * backup name or a file),
 * restore --offline, audit verify -- and export-env, which reads through a
 * live mount when there is one.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "common.h"
#include "log.h"
#include "manager.h"

#define EXPORT_TRIES 20	 /* snapshots tried before export-env gives up */
#define KEY_TEXT_BUF 64	 /* a key file's text and then some */
#define TREE_PATH_MAX 64 /* a file of the tree: "versions/<N>/key" */

static const char backup_usage[] = "backup list|verify NAME|FILE [-c FILE]";

/*
 * The archive `keyfs backup verify` reads: a path (with a '/', or a file
 * here), else a backup name, with or without .json, in cfg's backup_dir:
 * the rule of restore --offline, so both take the same words.  malloc'd,
 * or NULL after one line on standard error.
 */
static char *backup_file(const struct kf_config *cfg, const char *what)
{
	char stem[KF_BACKUP_NAME_MAX + 1], file[KF_BACKUP_FILE_NAME_MAX];
	char *path;

	if (kf_cmd_local_path(what))
		return strdup(what);
	if (!kf_backup_stem(what, false, stem)) {
		fprintf(stderr,
			"keyfs backup verify: %s: not a backup name (as keyfs "
			"backup list shows) and no such file\n",
			what);
		return NULL;
	}
	kf_backup_file_name(stem, file);
	path = kf_path_join(cfg->backup_dir, file);
	if (path && access(path, F_OK) < 0) {
		fprintf(stderr,
			"keyfs backup verify: %s: no backup of that name in %s "
			"and no such file here\n",
			what, cfg->backup_dir);
		free(path);
		return NULL;
	}
	if (!path)
		kf_cmd_fail("backup verify", "out of memory");
	return path;
}

static int backup_list(const struct kf_config *cfg)
{
	struct kf_backup_info *list = NULL;
	char err[KF_ERR_MAX], when[KF_RFC3339_LEN + 1];
	size_t n = 0;

	if (kf_manager_list_backups_offline(cfg, &list, &n, err) < 0) {
		fprintf(stderr, "keyfs backup list: %s\n", err);
		return 1;
	}
	printf("%-40s %-20s %7s %8s\n", "NAME", "CREATED", "VERSION", "SIZE");
	for (size_t i = 0; i < n; i++) {
		kf_time_rfc3339(list[i].created, when);
		printf("%-40s %-20s %7" PRIu32 " %8lld\n", list[i].name, when,
		       list[i].key_version, (long long)list[i].size);
	}
	free(list);
	return 0;
}

static int backup_verify(const struct kf_config *cfg, const char *what)
{
	char err[KF_ERR_MAX], when[KF_RFC3339_LEN + 1];
	struct kf_backup_info info;
	char *path = backup_file(cfg, what);

	if (!path)
		return 1;
	if (kf_manager_verify_backup(cfg, path, &info, err) < 0) {
		fprintf(stderr, "keyfs backup verify: %s: %s\n", path, err);
		free(path);
		return 1;
	}
	kf_time_rfc3339(info.created, when);
	printf("ok: %s created %s, key version %" PRIu32 ", %" PRIu32
	       " versions%s\n",
	       info.name, when, info.key_version, info.n_versions,
	       info.recovery ? ", recovery seal" : "");
	free(path);
	return 0;
}

int kf_cli_backup(int argc, char **argv)
{
	struct kf_cmd_opts o = {0};
	struct kf_config *cfg;
	bool list, verify;
	int rc;

	if (kf_cmd_parse_opts(argc, argv, 0, &o) < 0)
		return 2;
	list = optind + 1 == argc && strcmp(argv[optind], "list") == 0;
	verify = optind + 2 == argc && strcmp(argv[optind], "verify") == 0;
	if (!list && !verify)
		return kf_cmd_usage("backup", backup_usage);
	cfg = kf_cmd_config("backup", o.config);
	if (!cfg)
		return 1;
	rc = list ? backup_list(cfg) : backup_verify(cfg, argv[optind + 1]);
	kf_config_free(cfg);
	return rc;
}

int kf_cli_restore(int argc, char **argv)
{
	struct kf_cmd_opts o = {0};
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct kf_manager *m = NULL;
	struct kf_config *cfg;
	char err[KF_ERR_MAX], note[KF_ERR_MAX];
	const char *what;
	char *abs = NULL;
	uint32_t version;
	bool force;
	int rc = 1;

	if (kf_cmd_parse_opts(argc, argv,
			      KF_CMD_OPT_OFFLINE | KF_CMD_OPT_RECOVERY_KEY,
			      &o) < 0)
		return 2;
	force = optind + 2 == argc && strcmp(argv[optind + 1], "force") == 0;
	if (!o.offline || optind + 1 + force != argc ||
	    (o.recovery_key && (force || !*o.recovery_key)))
		return kf_cmd_usage("restore",
				    "restore --offline NAME|FILE [force] [-c "
				    "FILE] (with the daemon stopped; a running "
				    "tree restores with keyfs ctl restore), or "
				    "restore --offline --recovery-key FILE "
				    "NAME|FILE [-c FILE]");
	what = argv[optind];
	/* A path given relative to here, else a name in backup_dir. */
	if (what[0] != '/' && kf_cmd_local_path(what)) {
		abs = realpath(what, NULL);
		if (!abs) {
			fprintf(stderr, "keyfs restore: %s: %s\n", what,
				strerror(errno));
			return 1;
		}
		what = abs;
	}
	cfg = kf_cmd_config("restore", o.config);
	if (!cfg)
		goto out;
	kf_log_stderr_level(LOG_WARNING);
	if (o.recovery_key) {
		if (kf_manager_recover(cfg, &self, o.recovery_key, what,
				       &version, err) < 0) {
			fprintf(stderr, "keyfs restore: %s\n", err);
			goto out;
		}
		printf("recovered: version %" PRIu32
		       " (sealed under the configured master key)\n",
		       version);
		rc = 0;
		goto out;
	}
	if (kf_manager_open_for_restore(cfg, &m, err) < 0) {
		fprintf(stderr, "keyfs restore: %s\n", err);
		goto out;
	}
	if (kf_manager_restore(m, &self, what, force, &version, note, err) <
	    0) {
		fprintf(stderr, "keyfs restore: %s\n", err);
		goto out;
	}
	printf("restored: version %" PRIu32 "\n", version);
	if (note[0])
		printf("%s\n", note);
	rc = 0;
out:
	kf_manager_close(m);
	kf_config_free(cfg);
	free(abs);
	return rc;
}

int kf_cli_audit(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, 0, 'c'},
	    {"no-anchor", no_argument, 0, 'A'},
	    {0, 0, 0, 0}};
	struct kf_config *cfg;
	char report[KF_ERR_MAX];
	const char *config = NULL;
	bool check_anchor = true;
	int c, r;

	/* Its own options (not parse_common's): --no-anchor is for this
	 * command only, and --mount, --offline mean nothing here. */
	optind = 1;
	opterr = 0; /* one line of our own, the option not echoed */
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'A':
			check_anchor = false;
			break;
		default:
			return kf_cmd_usage("audit",
					    "audit verify [FILE|DIR...] "
					    "[--no-anchor] [-c FILE]");
		}
	}
	if (optind >= argc || strcmp(argv[optind], "verify") != 0)
		return kf_cmd_usage("audit", "audit verify [FILE|DIR...] "
					     "[--no-anchor] [-c FILE]");
	cfg = kf_cmd_config("audit", config);
	if (!cfg)
		return 1;
	/* getopt_long moved the options before the operands: what follows
	 * "verify" is the files and folders, NULL-terminated like argv. */
	r = kf_manager_verify_audit(cfg, (const char *const *)argv + optind + 1,
				    check_anchor, report);
	kf_config_free(cfg);
	if (r < 0) {
		fprintf(stderr, "keyfs audit verify: %s\n", report);
		return 1;
	}
	printf("%s\n", report);
	return 0;
}

/*
 * Reads versions/<v>/key of the tree into key (raw bytes) and checks it
 * against the fingerprint status gave for v.  -EAGAIN when the file is gone
 * or holds another key: the keyring changed since status was read.
 */
static int read_version_key(const char *mnt, uint32_t v, const char *fpr,
			    uint8_t key[KF_KEY_BYTES], char rel[TREE_PATH_MAX])
{
	char got[KF_KEY_FPR_LEN + 1];
	char *text = sodium_malloc(KEY_TEXT_BUF);
	int r;

	snprintf(rel, TREE_PATH_MAX, "versions/%" PRIu32 "/key", v);
	if (!text)
		return -ENOMEM;
	r = kf_cmd_read_small(mnt, rel, text, KEY_TEXT_BUF);
	if (r == -ENOENT)
		r = -EAGAIN;
	else if (r >= 0 && (r != KF_KEY_TEXT_LEN ||
			    kf_key_decode(text, (size_t)r, key, NULL) < 0))
		r = -EBADMSG;
	else if (r >= 0) {
		kf_key_fingerprint(key, got);
		r = fpr && strcmp(got, fpr) == 0 ? 0 : -EAGAIN;
	}
	sodium_free(text);
	return r;
}

/* A version number of status (a JSON integer in 1..UINT32_MAX), or 0. */
static uint32_t json_version(json_t *o, const char *field)
{
	json_t *v = json_object_get(o, field);

	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > UINT32_MAX)
		return 0;
	return (uint32_t)json_integer_value(v);
}

/*
 * One consistent snapshot of the tree's keys.  status is one snapshot of
 * the keyring: its version and fingerprints say which keys belong together.
 * The keys are read from versions/<N>/key, which never changes for a
 * version, and confirmed against those fingerprints.  keys gets current
 * then previous (2 * KF_KEY_BYTES); -EAGAIN when the keyring changed
 * in between, another -errno when the tree cannot be read.
 */
static int export_snapshot(const char *mnt, uint8_t *keys,
			   uint32_t *ret_version, bool *ret_has_previous,
			   char what[TREE_PATH_MAX])
{
	const char *fpr, *prev_fpr;
	uint32_t version, previous;
	json_error_t jerr;
	char *text = NULL;
	size_t len = 0;
	json_t *o;
	int r;

	snprintf(what, TREE_PATH_MAX, "status");
	r = kf_cmd_read_whole(mnt, "status", &text, &len);
	if (r < 0)
		return r;
	o = json_loadb(text, len, 0, &jerr);
	free(text);
	version = json_version(o, "version");
	previous = json_version(o, "previous_version");
	if (!version) {
		json_decref(o);
		return -EBADMSG;
	}
	fpr = json_string_value(json_object_get(o, "fingerprint"));
	prev_fpr =
	    json_string_value(json_object_get(o, "previous_fingerprint"));
	r = read_version_key(mnt, version, fpr, keys, what);
	if (r == 0 && previous)
		r = read_version_key(mnt, previous, prev_fpr,
				     keys + KF_KEY_BYTES, what);
	json_decref(o);
	if (r < 0)
		return r;
	*ret_version = version;
	*ret_has_previous = previous != 0;
	return 0;
}

/*
 * export-env through a mounted tree: its opens are audited there.  Nothing
 * is printed until one snapshot is consistent.
 */
static int export_from_mount(const char *mnt)
{
	uint8_t *keys = sodium_malloc(2 * KF_KEY_BYTES);
	char what[TREE_PATH_MAX] = "status";
	bool has_previous = false;
	uint32_t version = 0;
	int r = -EAGAIN;

	if (!keys)
		return kf_cmd_fail("export-env", "out of memory");
	for (int i = 0; i < EXPORT_TRIES && r == -EAGAIN; i++) {
		if (i > 0)
			usleep(1000 * (useconds_t)i);
		r = export_snapshot(mnt, keys, &version, &has_previous, what);
	}
	if (r == 0) {
		kf_cmd_print_key(keys, "ENCRYPTION_KEY=");
		if (has_previous)
			kf_cmd_print_key(keys + KF_KEY_BYTES,
					 "ENCRYPTION_KEY_PREVIOUS=");
		printf("ENCRYPTION_KEY_VERSION=%" PRIu32 "\n", version);
	} else if (r == -EAGAIN) {
		fprintf(stderr,
			"keyfs export-env: %s: the keys changed during each "
			"of %d reads (rotations?); nothing exported\n",
			mnt, EXPORT_TRIES);
	} else {
		fprintf(stderr, "keyfs export-env: %s/%s: %s\n", mnt, what,
			r == -EBADMSG ? "not what keyfs serves" : strerror(-r));
	}
	sodium_free(keys);
	return r == 0 ? 0 : 1;
}

/* Whether dir is a live FUSE mount (its root answers). */
static bool is_mounted(const char *dir)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/version", dir);
	return stat(path, &st) == 0;
}

int kf_cli_export_env(int argc, char **argv)
{
	struct kf_cmd_opts o = {0};
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct kf_manager *m = NULL;
	struct kf_keyring *kr = NULL;
	struct kf_config *cfg;
	char err[KF_ERR_MAX];
	int rc = 1;

	if (kf_cmd_parse_opts(argc, argv, KF_CMD_OPT_MOUNT, &o) < 0)
		return 2;
	if (optind != argc)
		return kf_cmd_usage("export-env",
				    "export-env [-c FILE] [--mount DIR]");
	if (o.mount)
		return export_from_mount(o.mount);
	cfg = kf_cmd_config("export-env", o.config);
	if (!cfg)
		return 1;
	if (cfg->mountpoint && is_mounted(cfg->mountpoint)) {
		rc = export_from_mount(cfg->mountpoint);
		goto out;
	}
	kf_log_stderr_level(LOG_WARNING);
	if (kf_manager_open(cfg, &m, err) < 0) {
		fprintf(stderr, "keyfs export-env: %s\n", err);
		goto out;
	}
	kr = kf_manager_keyring(m);
	if (kf_manager_audit_event(m, &self, KF_EVENT_KEY_EXPORT, NULL) < 0) {
		fprintf(stderr, "keyfs export-env: cannot write the audit "
				"log; nothing exported\n");
		goto out;
	}
	kf_cmd_print_key(kf_keyring_at(kr, 0)->key, "ENCRYPTION_KEY=");
	if (kf_keyring_count(kr) > 1)
		kf_cmd_print_key(kf_keyring_at(kr, 1)->key,
				 "ENCRYPTION_KEY_PREVIOUS=");
	printf("ENCRYPTION_KEY_VERSION=%" PRIu32 "\n",
	       kf_keyring_current_version(kr));
	rc = 0;
out:
	kf_keyring_unref(kr);
	kf_manager_close(m);
	kf_config_free(cfg);
	return rc;
}
