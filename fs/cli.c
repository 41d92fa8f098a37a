// SPDX-License-Identifier: MIT
/* cli: keyfs genkey, validate, derive, ctl, backup, restore, audit, export-env.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "config.h"
#include "key.h"
#include "log.h"
#include "manager.h"

#define STDIN_MAX 4096
/*
 * Largest file of the tree read whole.  status at the configuration's limits
 * (4,096 purposes of 32 characters, 1,000 versions) is about 240 KB.
 */
#define TREE_FILE_MAX (4u << 20)
#define KEY_TEXT_BUF 64 /* a key file's text and then some */

static int fail(const char *cmd, const char *msg)
{
	fprintf(stderr, "keyfs %s: %s\n", cmd, msg);
	return 1;
}

/*
 * Reads at most STDIN_MAX bytes of standard input into a sodium_malloc'd
 * buffer, dropping one final "\n" (or "\r\n").
 */
static int read_stdin(uint8_t **ret, size_t *ret_len)
{
	uint8_t *buf = sodium_malloc(STDIN_MAX + 1);
	size_t len = 0;

	if (!buf)
		return -ENOMEM;
	while (len <= STDIN_MAX) {
		ssize_t n = read(0, buf + len, STDIN_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sodium_free(buf);
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > STDIN_MAX) {
		sodium_free(buf);
		return -E2BIG;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = 0;
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* Prints a key's text form and a newline; wipes the text. */
static void print_key(const uint8_t key[KF_KEY_BYTES], const char *prefix)
{
	char *text = sodium_malloc(KF_KEY_TEXT_LEN + 1);

	if (!text)
		return;
	kf_key_encode(key, text);
	printf("%s%s\n", prefix, text);
	fflush(stdout);
	sodium_free(text);
}

int kf_cli_genkey(int argc, char **argv)
{
	uint8_t *key;

	(void)argv;
	if (argc != 1)
		return fail("genkey", "takes no arguments");
	key = sodium_malloc(KF_KEY_BYTES);
	if (!key)
		return fail("genkey", "out of memory");
	kf_key_generate(key);
	print_key(key, "");
	sodium_free(key);
	return 0;
}

int kf_cli_validate(int argc, char **argv)
{
	char err[KF_ERR_MAX];
	uint8_t *in = NULL;
	size_t len;
	int r;

	if (argc > 2)
		return fail("validate", "usage: keyfs validate [KEY|-]");
	if (argc == 2 && strcmp(argv[1], "-") != 0) {
		r = kf_key_decode(argv[1], strlen(argv[1]), NULL, err);
	} else {
		r = read_stdin(&in, &len);
		if (r < 0) {
			printf("invalid\n");
			return fail("validate", r == -E2BIG
						    ? "input too long"
						    : "cannot read standard "
						      "input");
		}
		r = kf_key_decode((const char *)in, len, NULL, err);
		sodium_free(in);
	}
	if (r < 0) {
		fprintf(stderr, "keyfs validate: invalid: %s\n", err);
		return 1;
	}
	printf("valid\n");
	return 0;
}

int kf_cli_derive(int argc, char **argv)
{
	char err[KF_ERR_MAX];
	uint8_t *in = NULL, *keys;
	size_t len;
	int r;

	if (argc != 2)
		return fail("derive", "usage: keyfs derive PURPOSE < KEY");
	if (!kf_purpose_valid(argv[1]))
		return fail("derive", "invalid purpose name (allowed: "
				      "[a-z0-9][a-z0-9_-]{0,31})");
	r = read_stdin(&in, &len);
	if (r < 0)
		return fail("derive", "cannot read the key on standard input");
	keys = sodium_malloc(2 * KF_KEY_BYTES);
	if (!keys) {
		sodium_free(in);
		return fail("derive", "out of memory");
	}
	r = kf_key_decode((const char *)in, len, keys, err);
	sodium_free(in);
	if (r == 0)
		r = kf_key_derive(keys, argv[1], keys + KF_KEY_BYTES, err);
	if (r == 0)
		print_key(keys + KF_KEY_BYTES, "");
	sodium_free(keys);
	if (r < 0) {
		fprintf(stderr, "keyfs derive: invalid key: %s\n", err);
		return 1;
	}
	return 0;
}

/* --- commands that need the configuration ------------------------------- */

struct common_opts {
	const char *config;
	const char *mount;
	bool offline;
};

/* Parses -c FILE, --mount DIR, --offline; leaves operands in argv[optind..]. */
static int parse_common(int argc, char **argv, struct common_opts *o)
{
	static const struct option longopts[] = {
	    {"config", required_argument, 0, 'c'},
	    {"mount", required_argument, 0, 'm'},
	    {"offline", no_argument, 0, 'O'},
	    {0, 0, 0, 0}};
	int c;

	optind = 1;
	opterr = 0; /* one line of our own, the option not echoed */
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->config = optarg;
			break;
		case 'm':
			o->mount = optarg;
			break;
		case 'O':
			o->offline = true;
			break;
		default:
			fprintf(stderr,
				"keyfs %s: unknown option or missing "
				"value (see keyfs --help)\n",
				argv[0]);
			return -EINVAL;
		}
	}
	return 0;
}

static struct kf_config *load_config(const char *cmd, const char *path)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX];

	if (kf_config_load(path, &cfg, err) < 0) {
		fprintf(stderr, "keyfs %s: %s\n", cmd, err);
		return NULL;
	}
	return cfg;
}

/* The mount to drive: --mount, else the configuration's mountpoint. */
static char *mount_dir(const char *cmd, const struct common_opts *o)
{
	struct kf_config *cfg;
	char *dir = NULL;

	if (o->mount)
		return strdup(o->mount);
	cfg = load_config(cmd, o->config);
	if (!cfg)
		return NULL;
	if (cfg->mountpoint)
		dir = strdup(cfg->mountpoint);
	else
		fprintf(stderr,
			"keyfs %s: no --mount DIR and no mountpoint in "
			"%s\n",
			cmd, cfg->source);
	kf_config_free(cfg);
	return dir;
}

/* Reads a small file of the tree into buf (NUL-terminated). */
static int read_small(const char *dir, const char *name, char *buf, size_t size)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd, e;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	e = errno; /* close may change it */
	close(fd);
	if (n < 0)
		return -e;
	buf[n] = 0;
	return (int)n;
}

/*
 * Reads all of the tree's file dir/name, to its end, into a malloc'd
 * NUL-terminated buffer: for status, whose size grows with the purposes and
 * versions configured.  Returns 0, -EFBIG past TREE_FILE_MAX, or -errno.
 */
static int read_whole(const char *dir, const char *name, char **ret_buf,
		      size_t *ret_len)
{
	char path[PATH_MAX], *buf = NULL;
	size_t len = 0, cap = 0;
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (cap - len < 2) {
			char *grown;

			if (cap >= TREE_FILE_MAX) {
				r = -EFBIG;
				break;
			}
			cap = cap ? cap * 2 : 65536;
			grown = realloc(buf, cap);
			if (!grown) {
				r = -ENOMEM;
				break;
			}
			buf = grown;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (r < 0) {
		free(buf);
		return r;
	}
	buf[len] = 0;
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

/* Names in MOUNT/backups, one per line in a malloc'd string; count too. */
static char *backup_names(const char *mnt, size_t *ret_count)
{
	char path[PATH_MAX];
	size_t len = 0, count = 0;
	char *all = calloc(1, 1);
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/backups", mnt);
	d = opendir(path);
	if (!d || !all) {
		if (d)
			closedir(d);
		*ret_count = 0;
		return all;
	}
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		char *grown;

		if (de->d_name[0] == '.')
			continue;
		grown = realloc(all, len + n + 3);
		if (!grown)
			break;
		all = grown;
		all[len] = '\n';
		memcpy(all + len + 1, de->d_name, n);
		len += n + 1;
		all[len] = '\n';
		all[len + 1] = 0;
		count++;
	}
	closedir(d);
	*ret_count = count;
	return all;
}

/* The first name in `after` that is not in `before`. */
static void new_name(const char *before, const char *after, char *out,
		     size_t size)
{
	const char *p = after;

	out[0] = 0;
	while ((p = strchr(p, '\n')) && p[1]) {
		const char *end = strchr(p + 1, '\n');
		char needle[PATH_MAX];
		size_t n = (size_t)(end - p) + 1;

		if (n < sizeof(needle)) {
			memcpy(needle, p, n);
			needle[n] = 0;
			if (!strstr(before, needle)) {
				snprintf(out, size, "%.*s", (int)(n - 2),
					 needle + 1);
				return;
			}
		}
		p = end;
	}
}

static const char *errno_words(const char *op, int e)
{
	switch (e) {
	case EINVAL:
		return "invalid input";
	case ENOENT:
		return strcmp(op, "retire") == 0
			   ? "no such version in the keyring"
			   : "no such backup";
	case EBUSY:
		return "that version is the current key; rotate first";
	case EEXIST:
		return "a backup of that name exists";
	case EBADMSG:
		return "the backup failed verification (truncated, tampered, "
		       "or made under another master key)";
	case EACCES:
	case EPERM:
		return "permission denied (root only)";
	case ENOSPC:
		return "no space left on the device";
	default:
		return strerror(e);
	}
}

static int ctl_status(const char *mnt)
{
	json_error_t jerr;
	char *buf = NULL;
	size_t len = 0;
	json_t *o;
	int r = read_whole(mnt, "status", &buf, &len);

	if (r < 0) {
		fprintf(stderr, "keyfs ctl status: %s/status: %s\n", mnt,
			strerror(-r));
		return 1;
	}
	o = json_loadb(buf, len, 0, &jerr);
	free(buf);
	if (!o)
		return fail("ctl status", "status is not JSON");
	json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	printf("\n");
	json_decref(o);
	return 0;
}

static const char *ctl_operand(const char *op)
{
	if (strcmp(op, "backup") == 0)
		return " [NAME]";
	if (strcmp(op, "restore") == 0)
		return " NAME [force]";
	if (strcmp(op, "prune") == 0)
		return " N [force]";
	if (strcmp(op, "retire") == 0)
		return " N";
	return "";
}

int kf_cli_ctl(int argc, char **argv)
{
	static const char *const ops[] = {"rotate", "backup", "restore",
					  "prune",  "retire", "status"};
	struct common_opts o = {0};
	char path[PATH_MAX], line[PATH_MAX + 16], result[KF_ERR_MAX + 64];
	const char *op, *arg = NULL;
	char *mnt = NULL, *before = NULL, *after = NULL, forced[PATH_MAX + 8];
	size_t n_before = 0, n_after = 0;
	bool known = false, force = false;
	ssize_t w;
	int fd, r, rc = 1;

	if (parse_common(argc, argv, &o) < 0)
		return 2;
	if (optind >= argc)
		return fail("ctl",
			    "usage: keyfs ctl rotate|backup [NAME]|"
			    "restore NAME [force]|prune N [force]|retire N|"
			    "status "
			    "[--mount DIR] [-c FILE]");
	op = argv[optind];
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		known |= strcmp(op, ops[i]) == 0;
	if (!known)
		return fail("ctl", "unknown operation (rotate, backup, "
				   "restore, prune, retire, status)");
	if (optind + 1 < argc)
		arg = argv[optind + 1];
	/* prune N force, restore NAME force: a second word. */
	if ((strcmp(op, "prune") == 0 || strcmp(op, "restore") == 0) &&
	    optind + 2 < argc && strcmp(argv[optind + 2], "force") == 0) {
		force = true;
		if (snprintf(forced, sizeof(forced), "%s force", arg) >=
		    (int)sizeof(forced))
			return fail("ctl", "operand too long");
	}
	if (optind + 2 + force < argc ||
	    ((strcmp(op, "restore") == 0 || strcmp(op, "prune") == 0 ||
	      strcmp(op, "retire") == 0) &&
	     !arg) ||
	    ((strcmp(op, "rotate") == 0 || strcmp(op, "status") == 0) && arg)) {
		fprintf(stderr,
			"keyfs ctl: usage: keyfs ctl %s%s [--mount DIR]\n", op,
			ctl_operand(op));
		return 2;
	}
	mnt = mount_dir("ctl", &o);
	if (!mnt)
		return 1;
	if (strcmp(op, "status") == 0) {
		rc = ctl_status(mnt);
		free(mnt);
		return rc;
	}
	if (strcmp(op, "backup") == 0 && !arg)
		arg = "1";
	if (strcmp(op, "rotate") == 0)
		arg = "1";
	if (strcmp(op, "backup") == 0 || strcmp(op, "prune") == 0)
		before = backup_names(mnt, &n_before);
	if (force)
		arg = forced;

	snprintf(path, sizeof(path), "%s/control/%s", mnt, op);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "keyfs ctl %s: %s: %s\n", op, path,
			strerror(errno));
		goto out;
	}
	snprintf(line, sizeof(line), "%s\n", arg);
	w = write(fd, line, strlen(line));
	r = w < 0 ? errno : 0;
	/* Audited mode: the outcome in words, read back from the same open. */
	ssize_t got = pread(fd, result, sizeof(result) - 1, 0);

	result[got > 0 ? got : 0] = 0;
	close(fd);
	if (r != 0) {
		if (strncmp(result, "error: ", 7) == 0)
			fprintf(stderr, "keyfs ctl %s: %s", op, result + 7);
		else
			fprintf(stderr, "keyfs ctl %s: %s\n", op,
				errno_words(op, r));
		goto out;
	}
	rc = 0;
	if (result[0]) {
		fputs(result, stdout);
		goto out;
	}
	/* Cached mode has no opens to carry a result: read it off the tree. */
	if (strcmp(op, "rotate") == 0 || strcmp(op, "restore") == 0) {
		char v[32] = "";

		read_small(mnt, "version", v, sizeof(v));
		printf("%s: version %s",
		       strcmp(op, "rotate") == 0 ? "rotated" : "restored", v);
	} else if (strcmp(op, "retire") == 0) {
		printf("retired: version %s\n", arg);
	} else if (strcmp(op, "backup") == 0) {
		char name[PATH_MAX];

		after = backup_names(mnt, &n_after);
		new_name(before, after, name, sizeof(name));
		printf("backup: %s\n", name[0] ? name : "created");
	} else if (strcmp(op, "prune") == 0) {
		after = backup_names(mnt, &n_after);
		printf("pruned: %zu deleted\n",
		       n_before > n_after ? n_before - n_after : 0);
	}
out:
	free(before);
	free(after);
	free(mnt);
	return rc;
}

/* --- offline commands ----------------------------------------------------- */

int kf_cli_backup(int argc, char **argv)
{
	struct common_opts o = {0};
	struct kf_backup_info *list = NULL, info;
	struct kf_config *cfg;
	char err[KF_ERR_MAX], when[KF_RFC3339_LEN + 1];
	size_t n = 0;
	int rc = 1;

	if (parse_common(argc, argv, &o) < 0)
		return 2;
	if (optind >= argc)
		return fail("backup", "usage: keyfs backup list|verify FILE "
				      "[-c FILE]");
	cfg = load_config("backup", o.config);
	if (!cfg)
		return 1;
	if (strcmp(argv[optind], "list") == 0 && optind + 1 == argc) {
		if (kf_manager_list_backups_offline(cfg, &list, &n, err) < 0) {
			fprintf(stderr, "keyfs backup list: %s\n", err);
			goto out;
		}
		printf("%-40s %-20s %7s %8s\n", "NAME", "CREATED", "VERSION",
		       "SIZE");
		for (size_t i = 0; i < n; i++) {
			kf_time_rfc3339(list[i].created, when);
			printf("%-40s %-20s %7" PRIu32 " %8lld\n", list[i].name,
			       when, list[i].key_version,
			       (long long)list[i].size);
		}
		free(list);
		rc = 0;
	} else if (strcmp(argv[optind], "verify") == 0 && optind + 2 == argc) {
		if (kf_manager_verify_backup(cfg, argv[optind + 1], &info,
					     err) < 0) {
			fprintf(stderr, "keyfs backup verify: %s: %s\n",
				argv[optind + 1], err);
			goto out;
		}
		kf_time_rfc3339(info.created, when);
		printf("ok: %s created %s, key version %" PRIu32 ", %" PRIu32
		       " versions\n",
		       info.name, when, info.key_version, info.n_versions);
		rc = 0;
	} else {
		fprintf(stderr, "keyfs backup: usage: keyfs backup list|verify "
				"FILE [-c FILE]\n");
	}
out:
	kf_config_free(cfg);
	return rc;
}

int kf_cli_restore(int argc, char **argv)
{
	struct common_opts o = {0};
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct kf_manager *m = NULL;
	struct kf_config *cfg;
	char err[KF_ERR_MAX], note[KF_ERR_MAX];
	const char *what;
	char *abs = NULL;
	uint32_t version;
	bool force;
	int rc = 1;

	if (parse_common(argc, argv, &o) < 0)
		return 2;
	force = optind + 2 == argc && strcmp(argv[optind + 1], "force") == 0;
	if (!o.offline || optind + 1 + force != argc)
		return fail("restore",
			    "usage: keyfs restore --offline FILE [force] "
			    "[-c FILE] (with the daemon stopped; a running "
			    "tree restores with keyfs ctl restore)");
	what = argv[optind];
	/* A path given relative to here, else a name in backup_dir. */
	if (what[0] != '/' && (strchr(what, '/') || access(what, F_OK) == 0)) {
		abs = realpath(what, NULL);
		if (!abs) {
			fprintf(stderr, "keyfs restore: %s: %s\n", what,
				strerror(errno));
			return 1;
		}
		what = abs;
	}
	cfg = load_config("restore", o.config);
	if (!cfg)
		goto out;
	kf_log_stderr_level(LOG_WARNING);
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
	const char *config = NULL, *file = NULL;
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
			return fail("audit", "unknown option or missing value "
					     "(see keyfs --help)");
		}
	}
	if (optind >= argc || strcmp(argv[optind], "verify") != 0 ||
	    argc - optind > 2)
		return fail("audit", "usage: keyfs audit verify [FILE] "
				     "[--no-anchor] [-c FILE]");
	if (optind + 1 < argc)
		file = argv[optind + 1];
	cfg = load_config("audit", config);
	if (!cfg)
		return 1;
	r = kf_manager_verify_audit(cfg, file, check_anchor, report);
	kf_config_free(cfg);
	if (r < 0) {
		fprintf(stderr, "keyfs audit verify: %s\n", report);
		return 1;
	}
	printf("%s\n", report);
	return 0;
}

#define EXPORT_TRIES 20 /* snapshots tried before export-env gives up */

/*
 * Reads versions/<v>/key of the tree into key (raw bytes) and checks it
 * against the fingerprint status gave for v.  -EAGAIN when the file is gone
 * or holds another key: the keyring changed since status was read.
 */
static int read_version_key(const char *mnt, uint32_t v, const char *fpr,
			    uint8_t key[KF_KEY_BYTES], char rel[64])
{
	char got[KF_KEY_FPR_LEN + 1];
	char *text = sodium_malloc(KEY_TEXT_BUF);
	int r;

	snprintf(rel, 64, "versions/%" PRIu32 "/key", v);
	if (!text)
		return -ENOMEM;
	r = read_small(mnt, rel, text, KEY_TEXT_BUF);
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
			   char what[64])
{
	const char *fpr, *prev_fpr;
	uint32_t version, previous;
	json_error_t jerr;
	char *text = NULL;
	size_t len = 0;
	json_t *o;
	int r;

	snprintf(what, 64, "status");
	r = read_whole(mnt, "status", &text, &len);
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
	char what[64] = "status";
	bool has_previous = false;
	uint32_t version = 0;
	int r = -EAGAIN;

	if (!keys)
		return fail("export-env", "out of memory");
	for (int i = 0; i < EXPORT_TRIES && r == -EAGAIN; i++) {
		if (i > 0)
			usleep(1000 * (useconds_t)i);
		r = export_snapshot(mnt, keys, &version, &has_previous, what);
	}
	if (r == 0) {
		print_key(keys, "ENCRYPTION_KEY=");
		if (has_previous)
			print_key(keys + KF_KEY_BYTES,
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
	struct common_opts o = {0};
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct kf_manager *m = NULL;
	struct kf_keyring *kr = NULL;
	struct kf_config *cfg;
	char err[KF_ERR_MAX];
	int rc = 1;

	if (parse_common(argc, argv, &o) < 0)
		return 2;
	if (optind != argc)
		return fail("export-env", "usage: keyfs export-env [-c FILE] "
					  "[--mount DIR]");
	if (o.mount)
		return export_from_mount(o.mount);
	cfg = load_config("export-env", o.config);
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
	print_key(kf_keyring_at(kr, 0)->key, "ENCRYPTION_KEY=");
	if (kf_keyring_count(kr) > 1)
		print_key(kf_keyring_at(kr, 1)->key,
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
