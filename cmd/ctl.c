// SPDX-License-Identifier: MIT
/*
 * ctl: keyfs ctl -- drives a mounted tree through its control files and
 * prints what happened.  What each operation takes and how its outcome is
 * told comes from the control table (fs/control.h), which the daemon
 * follows too; status reads the status file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "common.h"
#include "control.h"

#define CTL_LINE_MAX (PATH_MAX + 16) /* an operand, " force" and "\n" */
#define VERSION_TEXT_MAX 32	     /* the tree's version file, "N\n" */
#define OPS_MAX 512		     /* every operation with its operands */
#define HELP_WIDTH 72		     /* columns of keyfs --help */

/* The mount to drive: --mount, else the configuration's mountpoint. */
static char *mount_dir(const char *cmd, const struct kf_cmd_opts *o)
{
	struct kf_config *cfg;
	char *dir = NULL;

	if (o->mount)
		return strdup(o->mount);
	cfg = kf_cmd_config(cmd, o->config);
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

/* What errno e from a write to control/<c->name> means, for people. */
static const char *errno_words(const struct kf_control_cmd *c, int e)
{
	switch (e) {
	case EINVAL:
		return "invalid input";
	case ENOENT:
		return c->enoent;
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

/* keyfs ctl status: the status file, indented. */
static int ctl_status(const char *mnt)
{
	json_error_t jerr;
	char *buf = NULL;
	size_t len = 0;
	json_t *o;
	int r = kf_cmd_read_whole(mnt, "status", &buf, &len);

	if (r < 0) {
		fprintf(stderr, "keyfs ctl status: %s/status: %s\n", mnt,
			strerror(-r));
		return 1;
	}
	o = json_loadb(buf, len, 0, &jerr);
	free(buf);
	if (!o)
		return kf_cmd_fail("ctl status", "status is not JSON");
	json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	printf("\n");
	json_decref(o);
	return 0;
}

/*
 * What a command did, in cached mode: no open carries the daemon's answer,
 * so it is read off the tree, as c's row says.  word is the operand given
 * (or NULL); before, n_before: backups/ before the write.
 */
static void report(const char *mnt, const struct kf_control_cmd *c,
		   const char *word, const char *before, size_t n_before)
{
	char v[VERSION_TEXT_MAX] = "", name[PATH_MAX], *after = NULL;
	size_t n_after = 0;

	switch (c->report) {
	case KF_CONTROL_REPORT_VERSION_NOW:
		kf_cmd_read_small(mnt, "version", v, sizeof(v));
		v[strcspn(v, "\n")] = 0;
		printf("%s: version %s\n", c->verb, v);
		break;
	case KF_CONTROL_REPORT_VERSION_GIVEN:
		printf("%s: version %s\n", c->verb, word ? word : "");
		break;
	case KF_CONTROL_REPORT_NEW_BACKUP:
		after = backup_names(mnt, &n_after);
		new_name(before, after, name, sizeof(name));
		printf("%s: %s\n", c->verb, name[0] ? name : "created");
		break;
	case KF_CONTROL_REPORT_DELETED:
		after = backup_names(mnt, &n_after);
		printf("%s: %zu deleted\n", c->verb,
		       n_before > n_after ? n_before - n_after : 0);
		break;
	case KF_CONTROL_REPORT_DONE:
		printf("%s\n", c->verb);
		break;
	}
	free(after);
}

/*
 * Writes line to MOUNT/control/<c->name> and prints the answer: the
 * daemon's, read back from the same open (audited mode), else what the
 * tree shows (report).  The exit status.
 */
static int ctl_run(const char *mnt, const struct kf_control_cmd *c,
		   const char *line, const char *word)
{
	bool lists = c->report == KF_CONTROL_REPORT_NEW_BACKUP ||
		     c->report == KF_CONTROL_REPORT_DELETED;
	char path[PATH_MAX], result[KF_CONTROL_RESULT_MAX];
	char *before = NULL;
	size_t n_before = 0;
	ssize_t w, got;
	int fd, e, rc = 1;

	if (lists)
		before = backup_names(mnt, &n_before);
	snprintf(path, sizeof(path), "%s/control/%s", mnt, c->name);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "keyfs ctl %s: %s: %s\n", c->name, path,
			strerror(errno));
		goto out;
	}
	w = write(fd, line, strlen(line));
	e = w < 0 ? errno : 0;
	/* Audited mode: the outcome in words, read back from the same open. */
	got = pread(fd, result, sizeof(result) - 1, 0);
	result[got > 0 ? got : 0] = 0;
	close(fd);
	if (e != 0) {
		if (strncmp(result, "error: ", 7) == 0)
			fprintf(stderr, "keyfs ctl %s: %s", c->name,
				result + 7);
		else
			fprintf(stderr, "keyfs ctl %s: %s\n", c->name,
				errno_words(c, e));
		goto out;
	}
	rc = 0;
	if (result[0])
		fputs(result, stdout);
	else
		report(mnt, c, word, before, n_before);
out:
	free(before);
	return rc;
}

/*
 * Every operation of keyfs ctl, the control table's and status, into buf:
 * with their operands and sep "|" ("rotate|backup [NAME]|...|status"), or
 * names only.
 */
static void ctl_ops(char *buf, size_t size, const char *sep, bool operands)
{
	const struct kf_control_cmd *c;
	size_t len = 0;

	buf[0] = 0;
	for (size_t i = 0; (c = kf_control_at(i)) && len < size; i++)
		len += (size_t)snprintf(
		    buf + len, size - len, "%s%s%s", c->name,
		    operands ? kf_control_synopsis(c) : "", sep);
	if (len < size)
		snprintf(buf + len, size - len, "status");
}

void kf_cli_ctl_help(FILE *f)
{
	static const char head[] = "  ctl ", indent[] = "      ";
	const struct kf_control_cmd *c;
	char item[OPS_MAX];
	size_t col = strlen(head);

	fputs(head, f);
	for (size_t i = 0; i <= kf_control_count(); i++) {
		c = kf_control_at(i);
		if (c)
			snprintf(item, sizeof(item), "%s%s|", c->name,
				 kf_control_synopsis(c));
		else
			snprintf(item, sizeof(item), "%s",
				 "status [--mount DIR] [-c FILE]\n");
		if (col + strlen(item) > HELP_WIDTH) {
			fprintf(f, "\n%s", indent);
			col = strlen(indent);
		}
		fputs(item, f);
		col += strlen(item);
	}
}

/* A usage error of `keyfs ctl op`: one line, exit status 2. */
static int usage(const char *op, const char *operands)
{
	fprintf(stderr, "keyfs ctl: usage: keyfs ctl %s%s [--mount DIR]\n", op,
		operands);
	return 2;
}

int kf_cli_ctl(int argc, char **argv)
{
	struct kf_cmd_opts o = {0};
	const struct kf_control_cmd *c = NULL;
	char line[CTL_LINE_MAX], ops[OPS_MAX];
	const char *op;
	char *mnt;
	int i, r, rc;

	if (kf_cmd_parse_opts(argc, argv, &o) < 0)
		return 2;
	if (optind >= argc) {
		ctl_ops(ops, sizeof(ops), "|", true);
		fprintf(stderr,
			"keyfs ctl: usage: keyfs ctl %s [--mount DIR] "
			"[-c FILE]\n",
			ops);
		return 1;
	}
	op = argv[optind];
	i = kf_control_find(op);
	if (i >= 0) {
		c = kf_control_at((size_t)i);
		r = kf_control_line(c, argc - optind - 1, argv + optind + 1,
				    line, sizeof(line));
		if (r == -ENAMETOOLONG)
			return kf_cmd_fail("ctl", "operand too long");
		if (r < 0)
			return usage(op, kf_control_synopsis(c));
	} else if (strcmp(op, "status") == 0) {
		if (optind + 1 < argc)
			return usage(op, "");
	} else {
		ctl_ops(ops, sizeof(ops), ", ", false);
		fprintf(stderr, "keyfs ctl: unknown operation (%s)\n", ops);
		return 1;
	}
	mnt = mount_dir("ctl", &o);
	if (!mnt)
		return 1;
	if (c)
		rc = ctl_run(mnt, c, line,
			     optind + 1 < argc ? argv[optind + 1] : NULL);
	else
		rc = ctl_status(mnt);
	free(mnt);
	return rc;
}
