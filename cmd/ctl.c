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
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "common.h"
#include "control.h"

#define CTL_LINE_MAX (PATH_MAX + 16) /* an operand, " force" and "\n" */
#define VERSION_TEXT_MAX 32	     /* the tree's version file, "N\n" */
#define OPS_MAX 512		     /* every operation with its operands */
#define HELP_WIDTH 72		     /* columns of keyfs --help */
#define LABEL_WIDTH 15		     /* ctl status: the labels' column */
#define SPAN_MAX 32		     /* "123456d 23h" */
#define SUMMARY_WIDTH 79	     /* ctl status: columns of a line */
#define WAIT_SYNOPSIS " [--timeout S] [--from N]" /* ctl wait's operands */

/*
 * Why no keyfs tree answers at dir, as errno (0: one does, or only this
 * user may not look; the operation itself then says so).
 */
static int tree_error(const char *dir)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/version", dir);
	if (stat(path, &st) == 0 || errno == EACCES)
		return 0;
	return errno;
}

/* tree_error's e in words, after the folder's name. */
static const char *tree_words(int e, char *buf, size_t size)
{
	if (e == ENOTCONN)
		snprintf(buf, size,
			 "is a stale mount: its daemon is gone "
			 "(keyfs mount clears it)");
	else if (e == ENOENT || e == ENOTDIR)
		snprintf(buf, size,
			 "is not a mounted keyfs tree (is the "
			 "daemon running?)");
	else
		snprintf(buf, size, "cannot be read (%s)", strerror(e));
	return buf;
}

/*
 * The embedded configuration's mountpoint is relative to the current
 * folder, so from any other folder than the one ./dev ran in it names a
 * folder where nothing is mounted: say so, and what to do instead.
 */
static void embedded_not_here(const char *mnt, int e)
{
	char words[KF_ERR_MAX], *cwd = getcwd(NULL, 0);
	const char *rel = mnt;
	size_t n = cwd ? strlen(cwd) : 0;

	if (cwd && strcmp(cwd, "/") == 0)
		rel = mnt + 1;
	else if (cwd && strncmp(mnt, cwd, n) == 0 && mnt[n] == '/')
		rel = mnt + n + 1;
	fprintf(stderr,
		"keyfs ctl: using the embedded development configuration (no "
		"-c, no KEYFS_CONFIG, no " KF_CONFIG_SYSTEM "); its mountpoint "
		"%s is relative to the current folder, and %s %s; run keyfs "
		"in the folder the tree was mounted from, or give -c FILE or "
		"--mount DIR\n",
		rel, mnt, tree_words(e, words, sizeof(words)));
	free(cwd);
}

/*
 * The mount to drive: --mount, else the configuration's mountpoint.  NULL,
 * after one line on standard error, when there is none or no keyfs tree
 * answers there; the line says which configuration named the folder.
 */
static char *mount_dir(const struct kf_cmd_opts *o)
{
	char origin[PATH_MAX + 32], words[KF_ERR_MAX];
	struct kf_config *cfg;
	char *dir = NULL;
	int e;

	if (o->mount) {
		e = tree_error(o->mount);
		if (e == 0)
			return strdup(o->mount);
		fprintf(stderr, "keyfs ctl: %s (--mount) %s\n", o->mount,
			tree_words(e, words, sizeof(words)));
		return NULL;
	}
	cfg = kf_cmd_config("ctl", o->config);
	if (!cfg)
		return NULL;
	kf_cmd_config_origin(cfg, o->config, origin, sizeof(origin));
	if (!cfg->mountpoint) {
		fprintf(stderr,
			"keyfs ctl: no --mount DIR and no mountpoint in %s\n",
			origin);
	} else if ((e = tree_error(cfg->mountpoint)) == 0) {
		dir = strdup(cfg->mountpoint);
	} else if (kf_cmd_config_embedded(cfg)) {
		embedded_not_here(cfg->mountpoint, e);
	} else {
		fprintf(stderr, "keyfs ctl: %s, the mountpoint of %s, %s\n",
			cfg->mountpoint, origin,
			tree_words(e, words, sizeof(words)));
	}
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
		return c->ebusy ? c->ebusy : strerror(e);
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

/* One line of the status summary: the label in its column, then the text. */
static void row(const char *label, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void row(const char *label, const char *fmt, ...)
{
	va_list ap;

	printf("%-*s", LABEL_WIDTH, label);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* A length of time by its two largest units: "3d 4h", "5m 2s", "0s". */
static const char *span(int64_t s, char *buf, size_t size)
{
	static const struct {
		int64_t secs;
		char unit;
	} units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
	size_t i = 0, last = sizeof(units) / sizeof(units[0]) - 1;
	int len;

	if (s < 0)
		s = -s;
	while (i < last && s < units[i].secs)
		i++;
	len = snprintf(buf, size, "%lld%c", (long long)(s / units[i].secs),
		       units[i].unit);
	s %= units[i].secs;
	if (i < last && s / units[i + 1].secs > 0 && len > 0 &&
	    (size_t)len < size)
		snprintf(buf + len, size - (size_t)len, " %lld%c",
			 (long long)(s / units[i + 1].secs), units[i + 1].unit);
	return buf;
}

/* The string member k of o, or "?". */
static const char *str_of(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "?";
}

/* The integer member k of o, or -1. */
static long long int_of(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

/* Seconds from now to the RFC 3339 time s (negative: past); false if s is
 * no such time. */
static bool seconds_to(const char *s, int64_t *ret)
{
	int64_t t;

	if (!s || kf_time_parse_rfc3339(s, &t) < 0)
		return false;
	*ret = t - kf_time_now();
	return true;
}

/* The staged version, if any (README: Staged rotation). */
static void staged_row(json_t *o)
{
	const char *when = str_of(o, "next_promotion");

	if (int_of(o, "staged_version") <= 0)
		return;
	row("staged", "version %lld, fingerprint %s, created %s; %s%s",
	    int_of(o, "staged_version"), str_of(o, "staged_fingerprint"),
	    str_of(o, "staged_created"),
	    json_is_string(json_object_get(o, "next_promotion"))
		? "promoted at "
		: "promote or abort by hand",
	    json_is_string(json_object_get(o, "next_promotion")) ? when : "");
}

/* The key version, the previous and retired ones; the current key's age. */
static void version_rows(json_t *o)
{
	json_t *retired = json_object_get(o, "retired_versions"), *v;
	char list[OPS_MAX] = "", age[SPAN_MAX];
	const char *created = str_of(o, "created");
	size_t i, len = 0;
	int64_t ago;

	json_array_foreach(retired, i, v)
	{
		if (len < sizeof(list))
			len +=
			    (size_t)snprintf(list + len, sizeof(list) - len,
					     "%s%lld", i ? ", " : "; retired ",
					     (long long)json_integer_value(v));
	}
	if (int_of(o, "previous_version") > 0)
		row("version", "%lld (previous %lld%s)", int_of(o, "version"),
		    int_of(o, "previous_version"), list);
	else
		row("version", "%lld (no previous key%s)", int_of(o, "version"),
		    list);
	if (seconds_to(created, &ago))
		row("current key", "created %s, %s ago", created,
		    span(ago, age, sizeof(age)));
	else
		row("current key", "created %s", created);
	staged_row(o);
}

/* When the next automatic rotation is due, if ever. */
static void rotation_row(json_t *o)
{
	json_t *next = json_object_get(o, "next_rotation");
	const char *every = str_of(o, "rotate_interval");
	char in[SPAN_MAX];
	int64_t left;

	if (!json_is_string(next))
		row("next rotation", "none automatic (rotate_interval %s)",
		    every);
	else if (seconds_to(json_string_value(next), &left) && left > 0)
		row("next rotation", "%s, in %s (rotate_interval %s)",
		    json_string_value(next), span(left, in, sizeof(in)), every);
	else
		row("next rotation", "%s, due now (rotate_interval %s)",
		    json_string_value(next), every);
}

/* The fingerprints of the current and the previous key (never a key). */
static void fingerprint_row(json_t *o)
{
	const char *prev =
	    json_string_value(json_object_get(o, "previous_fingerprint"));

	if (prev)
		row("fingerprints", "current %s, previous %s",
		    str_of(o, "fingerprint"), prev);
	else
		row("fingerprints", "current %s", str_of(o, "fingerprint"));
}

/* Whether a is later than b. */
static bool later(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

/* How many archives MOUNT/backups lists, and the newest (by mtime). */
static void backups_row(const char *mnt)
{
	char path[PATH_MAX], newest[NAME_MAX + 1] = "";
	char when[KF_RFC3339_LEN + 1];
	struct timespec newest_t = {0};
	size_t count = 0;
	struct dirent *de;
	struct stat st;
	DIR *d;

	snprintf(path, sizeof(path), "%s/backups", mnt);
	d = opendir(path);
	if (!d) {
		row("backups", "cannot be listed (%s)", strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		count++;
		if (!newest[0] || later(&st.st_mtim, &newest_t) ||
		    (!later(&newest_t, &st.st_mtim) &&
		     strcmp(de->d_name, newest) > 0)) {
			snprintf(newest, sizeof(newest), "%s", de->d_name);
			newest_t = st.st_mtim;
		}
	}
	closedir(d);
	if (count == 0) {
		row("backups", "none");
		return;
	}
	kf_time_rfc3339(newest_t.tv_sec, when);
	row("backups", "%zu, last %s (%s)", count, newest, when);
}

/*
 * Appends v to buf, which holds len bytes of size: a string as it is,
 * anything else as JSON.  The new length (at most size - 1).
 */
static size_t append_value(char *buf, size_t len, size_t size, json_t *v)
{
	char *text = NULL;
	int n;

	if (json_is_string(v))
		n = snprintf(buf + len, size - len, "%s", json_string_value(v));
	else
		n = snprintf(
		    buf + len, size - len, "%s",
		    (text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT))
			? text
			: "?");
	free(text);
	len += n > 0 ? (size_t)n : 0;
	return len < size ? len : size - 1;
}

/* Appends text to buf as append_value does. */
static size_t append_text(char *buf, size_t len, size_t size, const char *text)
{
	int n = snprintf(buf + len, size - len, "%s", text);

	len += n > 0 ? (size_t)n : 0;
	return len < size ? len : size - 1;
}

/* A member of status's audit object as "name value" (an object's members
 * in parentheses) into buf (size > 0). */
static void audit_item(const char *k, json_t *v, char *buf, size_t size)
{
	const char *key;
	size_t len;
	json_t *m;
	bool first = true;

	buf[0] = 0;
	len = append_text(buf, 0, size, k);
	len = append_text(buf, len, size, json_is_object(v) ? " (" : " ");
	if (!json_is_object(v)) {
		append_value(buf, len, size, v);
		return;
	}
	json_object_foreach(v, key, m)
	{
		len = append_text(buf, len, size, first ? "" : ", ");
		len = append_text(buf, len, size, key);
		len = append_text(buf, len, size, " ");
		len = append_value(buf, len, size, m);
		first = false;
	}
	append_text(buf, len, size, ")");
}

/*
 * The audit log's health from status's "audit" object, when the daemon
 * gives one: what needs attention first, then every member as it is, so a
 * member added later shows without a change here.
 */
static void audit_rows(json_t *o)
{
	json_t *a = json_object_get(o, "audit"), *v;
	char health[OPS_MAX] = "", item[OPS_MAX];
	size_t len = 0, col = 0;
	const char *k;

	if (!json_is_object(a)) {
		row("audit",
		    "opens %s; this daemon's status has no audit "
		    "object",
		    json_is_false(json_object_get(o, "opens_audited"))
			? "not audited"
			: "audited");
		return;
	}
	if (json_is_true(json_object_get(a, "low_space")))
		len += (size_t)snprintf(health + len, sizeof(health) - len,
					", low space (%lld%% free, alarm below "
					"%lld%%)",
					int_of(a, "free_percent"),
					int_of(a, "min_free"));
	if (int_of(a, "write_failures") > 0 && len < sizeof(health))
		len += (size_t)snprintf(health + len, sizeof(health) - len,
					", write failures %lld",
					int_of(a, "write_failures"));
	if (int_of(a, "rotate_failures") > 0 && len < sizeof(health))
		len += (size_t)snprintf(health + len, sizeof(health) - len,
					", segment rotation failures %lld",
					int_of(a, "rotate_failures"));
	if (int_of(json_object_get(a, "syslog"), "dropped") > 0 &&
	    len < sizeof(health))
		snprintf(health + len, sizeof(health) - len,
			 ", lines not sent to syslog %lld",
			 int_of(json_object_get(a, "syslog"), "dropped"));
	if (health[0])
		row("audit", "attention: %s", health + 2);
	else
		row("audit", "ok");
	json_object_foreach(a, k, v)
	{
		audit_item(k, v, item, sizeof(item));
		if (col > 0 && col + strlen(item) + 2 > SUMMARY_WIDTH) {
			printf(",\n");
			col = 0;
		}
		if (col == 0)
			col = (size_t)printf("%-*s%s", LABEL_WIDTH, "", item);
		else
			col += (size_t)printf(", %s", item);
	}
	if (col)
		putchar('\n');
}

/* The keyring's store: file, or etcd with its state and every node. */
static void store_rows(json_t *o)
{
	json_t *st = json_object_get(o, "store"), *nodes, *n;
	const char *type = str_of(st, "type");
	size_t i;

	if (strcmp(type, "etcd") != 0) {
		row("store", "%s", type);
		return;
	}
	row("store", "etcd %s, node %s: %s since %s%s%s", str_of(st, "prefix"),
	    str_of(st, "node"), str_of(st, "state"), str_of(st, "since"),
	    json_object_get(st, "reason") ? ": " : "",
	    json_object_get(st, "reason") ? str_of(st, "reason") : "");
	row("", "generation %lld (%s by node %s)", int_of(st, "generation"),
	    str_of(st, "change"), str_of(st, "origin_node"));
	nodes = json_object_get(st, "nodes");
	json_array_foreach(nodes, i, n)
	{
		char staged[32] = "";

		if (int_of(n, "staged_version") > 0)
			snprintf(staged, sizeof(staged), " (staged %lld)",
				 int_of(n, "staged_version"));
		row("", "node %s: version %lld%s, generation %lld, %s, seen %s",
		    str_of(n, "node"), int_of(n, "version"), staged,
		    int_of(n, "generation"), str_of(n, "state"),
		    str_of(n, "seen"));
	}
}

/* The read mode, and whether it audits opens. */
static void read_mode_row(json_t *o)
{
	const char *mode = str_of(o, "read_mode");

	if (strcmp(mode, "cached") == 0)
		row("read mode", "cached: opens of key files are not audited");
	else if (strcmp(mode, "strict") == 0)
		row("read mode", "strict: every open audited, key bytes never "
				 "in the page cache");
	else
		row("read mode", "%s: every open of a key file audited", mode);
}

/* The uids of array a as "1001, 1002" into buf ("" for none). */
static const char *uid_list(json_t *a, char *buf, size_t size)
{
	size_t used = 0, i;
	json_t *v;

	buf[0] = 0;
	json_array_foreach(a, i, v)
	{
		int n =
		    snprintf(buf + used, size - used, "%s%lld", i ? ", " : "",
			     (long long)json_integer_value(v));

		if (n < 0 || (size_t)n >= size - used)
			break;
		used += (size_t)n;
	}
	return buf;
}

/*
 * Usage-aware retire: per retained version, its last read within
 * usage_window and by which uids (directly; through keys/<purpose>), or
 * why usage is unknown.
 */
static void usage_rows(json_t *o)
{
	json_t *u = json_object_get(o, "usage"), *v;
	const char *label = "last reads";
	char uids[256], set[256];
	size_t i;

	if (!json_is_object(u))
		return;
	if (!json_is_true(json_object_get(u, "known"))) {
		row("last reads", "unknown: %s", str_of(u, "why_unknown"));
		return;
	}
	json_array_foreach(json_object_get(u, "versions"), i, v)
	{
		if (!json_is_string(json_object_get(v, "last_read")))
			row(label,
			    "version %lld: not read within usage_window %s "
			    "(counted since %s)",
			    int_of(v, "version"), str_of(u, "window"),
			    str_of(u, "since"));
		else
			row(label,
			    "version %lld: %s by uid %lld (uids: %s; "
			    "via keys/: %s)",
			    int_of(v, "version"), str_of(v, "last_read"),
			    int_of(v, "last_uid"),
			    uid_list(json_object_get(v, "uids"), uids,
				     sizeof(uids)),
			    uid_list(json_object_get(v, "set_uids"), set,
				     sizeof(set)));
		label = "";
	}
}

/* keyfs ctl status: a summary for people, or (--json) the file, indented. */
static int ctl_status(const char *mnt, bool as_json)
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
	if (!json_is_object(o)) {
		json_decref(o);
		return kf_cmd_fail("ctl status", "status is not a JSON object");
	}
	if (as_json) {
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
		json_decref(o);
		return 0;
	}
	printf("keyfs tree %s (%s mode)\n", mnt, str_of(o, "mode"));
	version_rows(o);
	rotation_row(o);
	fingerprint_row(o);
	backups_row(mnt);
	audit_rows(o);
	store_rows(o);
	read_mode_row(o);
	usage_rows(o);
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
		/* A step of a staged rotation says which; version is current.
		 */
		if (word && c->operand == KF_CONTROL_STEP)
			printf("%s: %s done, current version %s\n", c->verb,
			       word, v);
		else
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
		snprintf(buf + len, size - len, "wait%s%sstatus",
			 operands ? WAIT_SYNOPSIS : "", sep);
}

void kf_cli_ctl_help(FILE *f)
{
	static const char head[] = "  ctl ", indent[] = "      ";
	const struct kf_control_cmd *c;
	char item[OPS_MAX];
	size_t col = strlen(head);

	fputs(head, f);
	/* The control table's operations, then the two that only read. */
	for (size_t i = 0; i <= kf_control_count() + 1; i++) {
		c = kf_control_at(i);
		if (c)
			snprintf(item, sizeof(item), "%s%s|", c->name,
				 kf_control_synopsis(c));
		else if (i == kf_control_count())
			snprintf(item, sizeof(item), "wait%s|", WAIT_SYNOPSIS);
		else
			snprintf(item, sizeof(item), "%s",
				 "status [--json] [--mount DIR] [-c FILE]\n");
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
	fprintf(stderr,
		"keyfs ctl: usage: keyfs ctl %s%s [--mount DIR] [-c FILE]\n",
		op, operands);
	return 2;
}

/* --- keyfs ctl wait -------------------------------------------------- */

#define WAIT_TIMED_OUT 124 /* the exit status of a time-out, as timeout(1) */
#define WAIT_MAX_S (366 * 86400)    /* the longest --timeout */
#define WAIT_SLICE_MS (3600 * 1000) /* one poll(2) at most this long */

struct wait_opts {
	int64_t timeout_ms; /* -1: none */
	long from;	    /* --from N; 0: the version at start */
};

static int64_t wait_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Whether argv's first operand is "wait", skipping the options and their
 * values (they may come before it or after).
 */
static bool wait_wanted(int argc, char **argv)
{
	static const char *const with_value[] = {"-c", "--config", "--mount",
						 "--timeout", "--from"};

	for (int i = 1; i < argc; i++) {
		bool value = false;

		if (strcmp(argv[i], "--") == 0)
			return i + 1 < argc && strcmp(argv[i + 1], "wait") == 0;
		if (argv[i][0] != '-')
			return strcmp(argv[i], "wait") == 0;
		for (size_t k = 0; k < sizeof(with_value) / sizeof(*with_value);
		     k++)
			value = value || strcmp(argv[i], with_value[k]) == 0;
		i += value;
	}
	return false;
}

/* S (seconds, decimals allowed, at most WAIT_MAX_S) in milliseconds. */
static int wait_seconds(const char *s, int64_t *ret_ms)
{
	char *end = NULL;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (!*s || *end || errno || !(v >= 0 && v <= WAIT_MAX_S))
		return -EINVAL;
	*ret_ms = (int64_t)(v * 1000 + 0.5);
	return 0;
}

/*
 * Takes wait's own options out of argv (the common parser knows nothing
 * of them): --timeout S and --from N, with their value after a space or
 * '='.  -EINVAL for a bad or missing value.
 */
static int wait_take_opts(int *argc, char **argv, struct wait_opts *o)
{
	int out = 1;

	for (int i = 1; i < *argc; i++) {
		const char *v = NULL, *a = argv[i];
		bool timeout = strncmp(a, "--timeout", 9) == 0 &&
			       (a[9] == 0 || a[9] == '=');
		bool from =
		    strncmp(a, "--from", 6) == 0 && (a[6] == 0 || a[6] == '=');
		char *end = NULL;

		if (strcmp(a, "--") == 0) {
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (!timeout && !from) {
			argv[out++] = argv[i];
			continue;
		}
		v = strchr(a, '=') ? strchr(a, '=') + 1
				   : (i + 1 < *argc ? argv[++i] : NULL);
		if (!v)
			return -EINVAL;
		if (timeout && wait_seconds(v, &o->timeout_ms) < 0)
			return -EINVAL;
		if (from) {
			errno = 0;
			o->from = strtol(v, &end, 10);
			if (!*v || *end || errno || o->from < 1)
				return -EINVAL;
		}
	}
	*argc = out;
	argv[out] = NULL;
	return 0;
}

/*
 * Opens MOUNT/version and reads it: the descriptor, with the number in
 * *ret_version, or -errno.
 */
static int wait_open(const char *mnt, long *ret_version)
{
	char path[PATH_MAX], text[VERSION_TEXT_MAX], *end = NULL;
	ssize_t n;
	int fd, e;

	snprintf(path, sizeof(path), "%s/version", mnt);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, text, sizeof(text) - 1);
	e = n < 0 ? errno : EBADMSG;
	if (n > 0) {
		text[n] = 0;
		*ret_version = strtol(text, &end, 10);
		if (end != text && *end == '\n' && *ret_version > 0)
			return fd;
	}
	close(fd);
	return -e;
}

/*
 * keyfs ctl wait: sleeps in poll(2) on the version file until the key
 * changes (POLLPRI: this open file is no longer the current one), then
 * prints the new version.  0; WAIT_TIMED_OUT when the time-out passed
 * first; 1 on an error.
 */
static int ctl_wait(const char *mnt, const struct wait_opts *o)
{
	int64_t until = o->timeout_ms < 0 ? -1 : wait_now_ms() + o->timeout_ms;
	long seen = 0, now = 0;
	int fd = wait_open(mnt, &seen), r;

	if (fd >= 0 && o->from > 0 && seen != o->from) {
		now = seen; /* changed already */
		goto done;
	}
	while (fd >= 0) {
		struct pollfd p = {fd, POLLPRI, 0};
		int64_t left =
		    until < 0 ? WAIT_SLICE_MS : until - wait_now_ms();

		if (left <= 0) {
			close(fd);
			fprintf(stderr,
				"keyfs ctl wait: version %ld unchanged after "
				"%.3g s\n",
				seen, (double)o->timeout_ms / 1000);
			return WAIT_TIMED_OUT;
		}
		r = poll(&p, 1,
			 (int)(left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || (p.revents & (POLLERR | POLLNVAL))) {
			fd = r < 0 ? -errno : -EIO;
			close(p.fd);
			break;
		}
		if (!(p.revents & POLLPRI))
			continue;
		/* Changed: what the name shows now, from a new open. */
		close(fd);
		fd = wait_open(mnt, &now);
		if (fd >= 0 && now != seen)
			goto done;
	}
	fprintf(stderr, "keyfs ctl wait: %s/version: %s\n", mnt, strerror(-fd));
	return 1;
done:
	close(fd);
	printf("%ld\n", now);
	return 0;
}

/* keyfs ctl wait [--timeout S] [--from N] [--mount DIR] [-c FILE]. */
static int ctl_wait_cli(int argc, char **argv)
{
	struct wait_opts w = {-1, 0};
	struct kf_cmd_opts o = {0};
	char *mnt;
	int rc;

	if (wait_take_opts(&argc, argv, &w) < 0 ||
	    kf_cmd_parse_opts(argc, argv, KF_CMD_OPT_MOUNT, &o) < 0 ||
	    optind + 1 != argc)
		return usage("wait", WAIT_SYNOPSIS);
	mnt = mount_dir(&o);
	if (!mnt)
		return 1;
	rc = ctl_wait(mnt, &w);
	free(mnt);
	return rc;
}

int kf_cli_ctl(int argc, char **argv)
{
	struct kf_cmd_opts o = {0};
	const struct kf_control_cmd *c = NULL;
	char line[CTL_LINE_MAX], ops[OPS_MAX];
	const char *op;
	char *mnt;
	int i, r, rc;

	if (wait_wanted(argc, argv))
		return ctl_wait_cli(argc, argv);
	if (kf_cmd_parse_opts(argc, argv, KF_CMD_OPT_MOUNT | KF_CMD_OPT_JSON,
			      &o) < 0)
		return 2;
	if (optind >= argc) {
		ctl_ops(ops, sizeof(ops), "|", true);
		fprintf(stderr,
			"keyfs ctl: usage: keyfs ctl %s [--json] [--mount DIR] "
			"[-c FILE]\n",
			ops);
		return 2;
	}
	op = argv[optind];
	i = kf_control_find(op);
	if (i >= 0) {
		c = kf_control_at((size_t)i);
		r = kf_control_line(c, argc - optind - 1, argv + optind + 1,
				    line, sizeof(line));
		if (r == -ENAMETOOLONG)
			return kf_cmd_fail("ctl", "operand too long");
		if (r < 0 || o.json)
			return usage(op, kf_control_synopsis(c));
	} else if (strcmp(op, "status") == 0) {
		if (optind + 1 < argc)
			return usage(op, " [--json]");
	} else {
		ctl_ops(ops, sizeof(ops), ", ", false);
		fprintf(stderr, "keyfs ctl: unknown operation (%s)\n", ops);
		return 2;
	}
	mnt = mount_dir(&o);
	if (!mnt)
		return 1;
	if (c)
		rc = ctl_run(mnt, c, line,
			     optind + 1 < argc ? argv[optind + 1] : NULL);
	else
		rc = ctl_status(mnt, o.json);
	free(mnt);
	return rc;
}
