// SPDX-License-Identifier: MIT
/*
 * Metrics and metadata through the real keyfs binary (README: Metrics,
 * change notification and metadata): the tree's `metrics` file is valid
 * Prometheus text (`promtool check metrics`), sized exactly, and its values
 * follow rotations, failed control writes, backups, opens and a full audit
 * disk; metrics_file is written whole and follows changes; the example
 * alert rules pass `promtool check rules` and fire on the series they are
 * meant for (`promtool test rules`); store = etcd adds the store's health
 * and its nodes.  Key files carry user.keyfs.* attributes, readable by
 * whoever may read the file, never holding a key byte.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "etcd_fixture.h"
#include "mount_fixture.h"

TestSuite(metrics, .fini = mt_fini);

#define WAIT_S 20.0 /* a bounded wait for what the daemon does by itself */

/* --- reading metrics ------------------------------------------------------ */

/* The tree's metrics, read whole through one open; its fstat size too. */
static char *metrics_read(struct kt_mount *m, off_t *ret_fstat_size)
{
	char *path = kt_mpath(m, "metrics"), *text;
	size_t cap = 1 << 16, len = 0;
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	cr_assert(fd >= 0, "open metrics: %s", strerror(errno));
	cr_assert(fstat(fd, &st) == 0);
	text = malloc(cap + 1);
	cr_assert(text);
	while ((n = read(fd, text + len, cap - len)) > 0)
		len += (size_t)n;
	cr_assert(n == 0, "read metrics: %s", strerror(errno));
	close(fd);
	text[len] = 0;
	if (ret_fstat_size)
		*ret_fstat_size = st.st_size;
	cr_assert(len > 0 && text[len - 1] == '\n',
		  "metrics does not end in a newline");
	free(path);
	return text;
}

static char *metrics(struct kt_mount *m)
{
	return metrics_read(m, NULL);
}

/* The line of text that starts with series and a space, or NULL. */
static const char *sample_line(const char *text, const char *series)
{
	size_t n = strlen(series);

	for (const char *l = text; l && *l;) {
		if (strncmp(l, series, n) == 0 && l[n] == ' ')
			return l + n + 1;
		l = strchr(l, '\n');
		if (l)
			l++;
	}
	return NULL;
}

static bool has_sample(const char *text, const char *series)
{
	return sample_line(text, series) != NULL;
}

/* The value of series ("name" or "name{labels}"); asserts it is there. */
static double sample(const char *text, const char *series)
{
	const char *v = sample_line(text, series);
	char *end = NULL;
	double d;

	cr_assert(v, "metrics has no sample %s", series);
	d = strtod(v, &end);
	cr_assert(end != v && *end == '\n', "%s: not a number", series);
	return d;
}

/* promtool check metrics accepts text (exit 0, no complaint). */
static void promtool_ok(const char *text, const char *what)
{
	char *out = NULL, *err = NULL;
	int rc = kt_run("promtool check metrics", text, &out, &err);

	cr_assert(rc != 127, "promtool not found: install-deps installs the "
			     "prometheus package for it");
	cr_assert_eq(rc, 0, "%s: promtool check metrics: %s%s", what, out, err);
	free(out);
	free(err);
}

/* --- the metrics file -------------------------------------------------- */

/*
 * metrics is valid Prometheus text (every family with HELP and TYPE,
 * counters saying they are monotonic), status's owner and mode, and its
 * size exact: an open file's fstat gives what it reads; a stat by name
 * gives what a read then returns.
 */
Test(metrics, the_file_is_prometheus_text_sized_exactly, .timeout = 60)
{
	static const char *const families[] = {
	    "keyfs_build_info",
	    "keyfs_key_version",
	    "keyfs_staged_version",
	    "keyfs_key_age_seconds",
	    "keyfs_rotate_interval_seconds",
	    "keyfs_rotations_total",
	    "keyfs_opens_total",
	    "keyfs_control_writes_total",
	    "keyfs_audit_write_failures_total",
	    "keyfs_audit_bytes",
	    "keyfs_backups",
	    "keyfs_last_backup_timestamp_seconds"};
	struct kt_mount *m = start("metrics", NULL);
	char *path = kt_mpath(m, "metrics"), *text, line[256];
	struct stat st;
	off_t size = 0;

	text = metrics_read(m, &size);
	promtool_ok(text, "a new tree");
	cr_assert_eq((size_t)size, strlen(text),
		     "fstat says %lld bytes, a read gives %zu", (long long)size,
		     strlen(text));
	for (size_t i = 0; i < sizeof(families) / sizeof(*families); i++) {
		bool counter = strstr(families[i], "_total") != NULL;

		snprintf(line, sizeof(line), "# TYPE %s %s\n", families[i],
			 counter ? "counter" : "gauge");
		cr_assert(strstr(text, line), "no \"%.*s\"",
			  (int)strlen(line) - 1, line);
		snprintf(line, sizeof(line), "# HELP %s ", families[i]);
		cr_assert(strstr(text, line), "no HELP for %s", families[i]);
		if (counter)
			cr_assert(strstr(strstr(text, line), "monotonic"),
				  "%s's HELP does not say it is monotonic",
				  families[i]);
	}
	cr_assert(
	    strstr(text, "keyfs_build_info{version=\"" KF_VERSION "\"} 1\n"),
	    "no keyfs_build_info with this version");
	cr_assert(!has_sample(text, "keyfs_store_up") &&
		      !has_sample(text, "keyfs_cluster_nodes"),
		  "store metrics without a cluster store");
	cr_assert(!has_sample(text, "keyfs_next_rotation_seconds"),
		  "a next rotation with rotate_interval = 0");
	cr_assert_eq(sample(text, "keyfs_rotate_interval_seconds"), 0);
	cr_assert_eq(sample(text, "keyfs_key_version"), read_version(m));
	free(text);

	cr_assert(stat(path, &st) == 0);
	cr_assert(
	    st.st_uid == 0 && st.st_gid == 0 && (st.st_mode & 07777) == 0444,
	    "metrics is %u:%u %04o, not status's 0:0 0444", (unsigned)st.st_uid,
	    (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777));
	/* Nothing counted between a stat and a read: the same size. */
	text = metrics(m);
	cr_assert(stat(path, &st) == 0);
	free(text);
	text = kt_mread(m, "metrics", NULL);
	cr_assert_eq((size_t)st.st_size, strlen(text),
		     "stat says %lld bytes, a read gives %zu",
		     (long long)st.st_size, strlen(text));
	free(text);
	free(path);
}

/* rotate_interval set: the interval, and the next rotation counting down. */
Test(metrics, the_next_rotation_counts_down, .timeout = 60)
{
	struct kt_mount *m = mount_new();
	char *text;
	double next;

	kt_mount_config_full(m, "nextrot",
			     "mode = development\nrotate_interval = 2h\n"
			     "purposes = phi\n",
			     NULL);
	start_ok(m);
	text = metrics(m);
	promtool_ok(text, "with rotate_interval");
	cr_assert_eq(sample(text, "keyfs_rotate_interval_seconds"), 7200);
	next = sample(text, "keyfs_next_rotation_seconds");
	cr_assert(next > 7000 && next <= 7200, "next rotation in %g s", next);
	cr_assert(sample(text, "keyfs_key_age_seconds") +
			  sample(text, "keyfs_next_rotation_seconds") >=
		      7199,
		  "age and next rotation do not add up to the interval");
	free(text);
}

/*
 * The values follow what happens: a rotation (version, counters, the
 * automatic backup), a malformed control write (a failed write, no failed
 * rotation), a named backup, audited opens by kind, the audit log growing.
 * Counters only grow.
 */
Test(metrics, values_follow_rotations_failed_writes_and_backups, .timeout = 60)
{
	struct kt_mount *m = start("values", NULL);
	char *a = metrics(m), *b, *c, *d;
	uint8_t k[KEY_LEN];
	double t0 = (double)time(NULL);

	cr_assert_eq(sample(a, "keyfs_rotations_total{result=\"success\"}"), 0);
	rotate_ok(m);
	b = metrics(m);
	promtool_ok(b, "after a rotation");
	cr_assert_eq(sample(b, "keyfs_key_version"),
		     sample(a, "keyfs_key_version") + 1);
	cr_assert_eq(sample(b, "keyfs_rotations_total{result=\"success\"}"), 1);
	cr_assert_eq(sample(b, "keyfs_rotations_total{result=\"failure\"}"), 0);
	cr_assert_eq(sample(b, "keyfs_control_writes_total{file=\"rotate\","
			       "result=\"success\"}"),
		     1);
	cr_assert_eq(sample(b, "keyfs_backups{kind=\"automatic\"}"),
		     sample(a, "keyfs_backups{kind=\"automatic\"}") + 1,
		     "the rotation's automatic backup is not counted");
	cr_assert(sample(b, "keyfs_key_age_seconds") < 60);
	cr_assert(sample(b, "keyfs_audit_bytes") >
		      sample(a, "keyfs_audit_bytes"),
		  "the audit log did not grow");

	cr_assert_eq(kt_mwrite(m, "control/rotate", "bogus\n"), -EINVAL);
	cr_assert_eq(kt_mwrite(m, "control/retire", "999\n"), -ENOENT);
	c = metrics(m);
	cr_assert_eq(sample(c, "keyfs_control_writes_total{file=\"rotate\","
			       "result=\"failure\"}"),
		     1);
	cr_assert_eq(sample(c, "keyfs_control_writes_total{file=\"retire\","
			       "result=\"failure\"}"),
		     1);
	cr_assert_eq(sample(c, "keyfs_rotations_total{result=\"failure\"}"), 0,
		     "a malformed write counted as a failed rotation");
	cr_assert_eq(sample(c, "keyfs_key_version"),
		     sample(b, "keyfs_key_version"));

	cr_assert_eq(kt_mwrite(m, "control/backup", "nightly\n"), 0);
	read_key(m, "current", k);
	read_key(m, "previous", k);
	read_key(m, "derived/phi", k);
	sodium_memzero(k, sizeof(k));
	(void)read_version(m); /* not a key: not counted */
	d = metrics(m);
	promtool_ok(d, "after a backup and opens");
	cr_assert_eq(sample(d, "keyfs_backups{kind=\"named\"}"),
		     sample(c, "keyfs_backups{kind=\"named\"}") + 1);
	cr_assert_eq(sample(d, "keyfs_control_writes_total{file=\"backup\","
			       "result=\"success\"}"),
		     1);
	cr_assert(sample(d, "keyfs_last_backup_timestamp_seconds") >= t0 - 1,
		  "the last backup is older than the test");
	cr_assert_eq(sample(d, "keyfs_opens_total{kind=\"key\"}"),
		     sample(c, "keyfs_opens_total{kind=\"key\"}") + 2);
	cr_assert_eq(sample(d, "keyfs_opens_total{kind=\"derived\"}"),
		     sample(c, "keyfs_opens_total{kind=\"derived\"}") + 1);
	cr_assert_eq(sample(d, "keyfs_audit_write_failures_total"), 0);
	free(a);
	free(b);
	free(c);
	free(d);
}

/*
 * A full audit disk: opens refused and counted as audit write failures, a
 * rotation that fails (the version stays, rotations_total{failure} and
 * the rotate file's failure count grow); metrics stays readable.
 */
/* rotate_mode = stage: a rotation counts once promoted; a refused
 * promotion (nothing staged) is a failed one. */
Test(metrics, staged_rotations_count_when_promoted, .timeout = 60)
{
	struct kt_mount *m = start("staged", NULL);
	char *a, *b, *c;

	cr_assert_eq(kt_mwrite(m, "control/rotate", "stage\n"), 0);
	a = metrics(m);
	cr_assert_eq(sample(a, "keyfs_rotations_total{result=\"success\"}"), 0,
		     "a staged key counted before its promotion");
	cr_assert_eq(kt_mwrite(m, "control/rotate", "promote\n"), 0);
	b = metrics(m);
	cr_assert_eq(sample(b, "keyfs_rotations_total{result=\"success\"}"), 1);
	cr_assert_eq(sample(b, "keyfs_rotations_total{result=\"failure\"}"), 0);
	cr_assert_lt(kt_mwrite(m, "control/rotate", "promote\n"), 0,
		     "a promotion with nothing staged succeeded");
	c = metrics(m);
	cr_assert_eq(sample(c, "keyfs_rotations_total{result=\"success\"}"), 1);
	cr_assert_eq(sample(c, "keyfs_rotations_total{result=\"failure\"}"), 1,
		     "a refused promotion is not counted as a failure");
	free(a);
	free(b);
	free(c);
}

Test(metrics, a_full_audit_disk_shows, .timeout = 60)
{
	const char *disk = kt_tmpfs("metrics-full-audit", "32k");
	char *audit = kt_path(disk, "audit.log"), *filler, *current;
	char *line, *a, *b, buf[512];
	struct kt_mount *m;
	ssize_t got = TEXT_LEN;
	int fd;

	/* Every open recorded: with a window, repeats need no room. */
	cr_assert(asprintf(&line, "audit_log = %s\naudit_open_window = 0\n",
			   audit) > 0);
	m = start("metrics-full", line);
	a = metrics(m);
	filler = kt_path(disk, "filler");
	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0);
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	current = kt_mpath(m, "current");
	for (int i = 0; i < 1000 && got == TEXT_LEN; i++)
		got = raw_read(current, buf, sizeof(buf));
	free(current);
	sodium_memzero(buf, sizeof(buf));
	cr_assert(got < 0, "opens succeed on a full audit disk");
	cr_assert_neq(rotate(m), 0, "a rotation succeeded on a full disk");
	b = metrics(m);
	promtool_ok(b, "on a full audit disk");
	cr_assert(sample(b, "keyfs_audit_write_failures_total") >= 2,
		  "audit write failures not counted");
	cr_assert_eq(sample(b, "keyfs_rotations_total{result=\"failure\"}"), 1);
	cr_assert_eq(sample(b, "keyfs_control_writes_total{file=\"rotate\","
			       "result=\"failure\"}"),
		     1);
	cr_assert_eq(sample(b, "keyfs_key_version"),
		     sample(a, "keyfs_key_version"));
	cr_assert(unlink(filler) == 0);
	free(a);
	free(b);
	free(filler);
	free(audit);
	free(line);
}

/*
 * Cached mode serves metrics from one rendering: whole (fstat = read,
 * valid), and renewed, so a rotation and a failed write show.
 */
Test(metrics, cached_mode_serves_whole_fresh_text, .timeout = 60)
{
	struct kt_mount *m = start("metrics-cached", "read_mode = cached\n");
	double end = now_s() + WAIT_S;
	char *text;
	off_t size = 0;

	for (int i = 0; i < 5; i++) {
		text = metrics_read(m, &size);
		promtool_ok(text, "cached mode");
		cr_assert_eq((size_t)size, strlen(text),
			     "cached: fstat %lld bytes, read %zu",
			     (long long)size, strlen(text));
		free(text);
	}
	rotate_ok(m);
	text = metrics(m);
	cr_assert_eq(sample(text, "keyfs_key_version"), read_version(m),
		     "cached mode shows the old version after a rotation");
	free(text);
	cr_assert_eq(kt_mwrite(m, "control/rotate", "bogus\n"), -EINVAL);
	for (;;) {
		text = metrics(m);
		if (sample(text, "keyfs_control_writes_total{file=\"rotate\","
				 "result=\"failure\"}") == 1)
			break;
		free(text);
		cr_assert(now_s() < end, "a failed write never showed");
		kt_sleep_ms(100);
	}
	promtool_ok(text, "cached mode, renewed");
	free(text);
}

/* --- metrics_file ------------------------------------------------------ */

/* The file's text once it exists (waits); NULL never returned. */
static char *wait_file(const char *path, struct stat *st)
{
	double end = now_s() + WAIT_S;
	char *text;

	while (stat(path, st) < 0 || !(text = kt_read_file(path, NULL))) {
		cr_assert(now_s() < end, "%s never written", path);
		kt_sleep_ms(50);
	}
	return text;
}

/*
 * metrics_file is written at start, whole (valid, status's owner and
 * mode), replaced by rename after each change and every 15 seconds, and
 * leaves no temporary file beside it.
 */
Test(metrics, metrics_file_is_written_whole_and_follows_changes, .timeout = 90)
{
	char *dir = kt_tmpdir("prom"), *path = kt_path(dir, "keyfs.prom");
	char *line, *text, *names;
	struct kt_mount *m;
	struct stat st, again;
	double end;

	cr_assert(asprintf(&line, "metrics_file = %s\n", path) > 0);
	m = start("metricsfile", line);
	text = wait_file(path, &st);
	promtool_ok(text, "metrics_file");
	cr_assert(st.st_uid == 0 && st.st_gid == 0 &&
		      (st.st_mode & 07777) == 0444,
		  "metrics_file is %u:%u %04o, not status's 0:0 0444",
		  (unsigned)st.st_uid, (unsigned)st.st_gid,
		  (unsigned)(st.st_mode & 07777));
	cr_assert_eq(sample(text, "keyfs_key_version"), read_version(m));
	free(text);

	rotate_ok(m);
	end = now_s() + WAIT_S;
	for (;;) {
		text = kt_read_file(path, NULL);
		if (text && sample(text, "keyfs_key_version") ==
				(double)read_version(m))
			break;
		free(text);
		cr_assert(now_s() < end, "metrics_file missed a rotation");
		kt_sleep_ms(50);
	}
	promtool_ok(text, "metrics_file after a rotation");
	free(text);

	/* Rewritten without a change too: a new file, renamed in place. */
	cr_assert(stat(path, &st) == 0);
	end = now_s() + 15 + WAIT_S;
	while (stat(path, &again) < 0 || again.st_ino == st.st_ino) {
		cr_assert(now_s() < end, "metrics_file not rewritten in 35 s");
		kt_sleep_ms(200);
	}
	names = kt_names(dir);
	cr_assert_str_eq(names, "keyfs.prom\n", "beside metrics_file: %s",
			 names);
	free(names);
	free(line);
	free(path);
	free(dir);
}

/* A metrics_file under the mountpoint is refused at start. */
Test(metrics, metrics_file_under_the_mountpoint_refused, .timeout = 30)
{
	struct kt_mount *m = mount_new();
	char *line, *log, *text;

	/* The configuration ends in [keyfs]: the key is added to it. */
	kt_mount_config(m, "prom-under", NULL, NULL);
	text = kt_read_file_ok(m->cfg, NULL);
	cr_assert(
	    asprintf(&line, "%smetrics_file = %s/m.prom\n", text, m->mnt) > 0);
	kt_write_file(m->cfg, line, 0644);
	free(text);
	cr_assert(kt_mount_start(m, NULL) > 0, "started with metrics_file "
					       "under the mountpoint");
	log = kt_read_file(m->log, NULL);
	cr_assert(log && kt_contains(log, "metrics_file"), "%s", log);
	free(log);
	free(line);
}

/* --- the example alert rules ------------------------------------------ */

/*
 * etc/keyfs-alerts.yml passes promtool check rules, and its unit test
 * (tests/keyfs-alerts.test.yml): each alert fires on the series it is
 * for, with its text, and none on a healthy node.
 */
Test(metrics, alert_rules_check_and_fire, .timeout = 60)
{
	char *rules = kt_path(kt_srcdir(), "etc/keyfs-alerts.yml");
	char *test = kt_path(kt_srcdir(), "tests/keyfs-alerts.test.yml");
	char *out = NULL, *err = NULL;
	int rc;

	rc = kt_runf(&out, &err, "promtool check rules %s", rules);
	cr_assert(rc != 127, "promtool not found (install-deps)");
	cr_assert_eq(rc, 0, "promtool check rules: %s%s", out, err);
	cr_assert(kt_contains(out, "SUCCESS: 4 rules found"), "%s", out);
	free(out);
	free(err);
	rc = kt_runf(&out, &err, "promtool test rules %s", test);
	cr_assert_eq(rc, 0, "promtool test rules: %s%s", out, err);
	free(out);
	free(err);
	free(test);
	free(rules);
}

/* --- store = etcd ----------------------------------------------------- */

static char *cluster_master;

static void cluster_fini(void)
{
	kt_mount_cleanup_all();
	kt_etcd_teardown();
	if (cluster_master)
		sodium_memzero(cluster_master, strlen(cluster_master));
	free(cluster_master);
	cluster_master = NULL;
}

/* Node i of a cluster under /keyfs/metrics, prepared (not started). */
static struct kt_mount *cluster_node(int i)
{
	struct kt_mount *m = mount_new();
	char *section, *key, name[32];

	snprintf(name, sizeof(name), "metrics-node%d", i);
	cr_assert(asprintf(&section,
			   "[etcd]\nendpoints = %s, %s, %s\nprefix = "
			   "/keyfs/metrics\nnode = n%d\ntimeout = 500ms\n",
			   kt_etcd.client[0], kt_etcd.client[1],
			   kt_etcd.client[2], i) > 0);
	kt_mount_config(m, name, "store = etcd\n", section);
	key = kt_path(m->dir, "master.key");
	kt_write_file(key, cluster_master, 0600);
	free(key);
	free(section);
	return m;
}

/* Waits until series in m's metrics has value v. */
static void wait_sample(struct kt_mount *m, const char *series, double v)
{
	double end = now_s() + WAIT_S, got = NAN;

	for (;;) {
		char *text = metrics(m);

		if (has_sample(text, series))
			got = sample(text, series);
		free(text);
		if (got == v)
			return;
		cr_assert(now_s() < end, "%s is %g, never %g", series, got, v);
		kt_sleep_ms(100);
	}
}

/*
 * With store = etcd, keyfs_store_up says whether etcd answers and
 * keyfs_cluster_nodes counts the nodes it lists; without quorum the store
 * is down.
 */
Test(metrics, cluster_store_up_and_nodes, .timeout = 240, .fini = cluster_fini)
{
	struct kt_mount *n[2];
	char *out = NULL, *err = NULL, *text;

	cr_assert(sodium_init() >= 0);
	kt_etcd_setup();
	cr_assert_eq(kt_runf(&cluster_master, &err, "%s genkey", kt_keyfs()),
		     0);
	free(err);
	n[0] = cluster_node(0);
	n[1] = cluster_node(1);
	cr_assert_eq(
	    kt_runf(&out, &err, "%s cluster init -c %s", kt_keyfs(), n[0]->cfg),
	    0, "%s", err);
	free(out);
	free(err);
	start_ok(n[0]);
	start_ok(n[1]);
	wait_sample(n[0], "keyfs_store_up", 1);
	wait_sample(n[0], "keyfs_cluster_nodes", 2);
	text = metrics(n[1]);
	promtool_ok(text, "store = etcd");
	free(text);
	/* Two members frozen: no quorum. */
	kill(kt_etcd.pid[1], SIGSTOP);
	kill(kt_etcd.pid[2], SIGSTOP);
	wait_sample(n[0], "keyfs_store_up", 0);
	kill(kt_etcd.pid[1], SIGCONT);
	kill(kt_etcd.pid[2], SIGCONT);
}

/* --- metadata: extended attributes ------------------------------------ */

/* The value of xattr name of rel (as root), NUL-terminated (static). */
static const char *xattr(struct kt_mount *m, const char *rel, const char *name)
{
	static char value[128];
	char *path = kt_mpath(m, rel);
	ssize_t n = getxattr(path, name, value, sizeof(value) - 1);

	cr_assert(n >= 0, "getxattr %s %s: %s", rel, name, strerror(errno));
	value[n] = 0;
	free(path);
	return value;
}

/* status's object of version v (borrowed from st). */
static json_t *status_version(json_t *st, uint32_t v)
{
	json_t *e;
	size_t i;

	json_array_foreach(json_object_get(st, "versions"), i, e)
	{
		if (json_integer_value(json_object_get(e, "version")) == v)
			return e;
	}
	cr_assert(false, "status has no version %u", v);
	return NULL;
}

/* Checks rel's three attributes: version v, created as status says, and
 * the fingerprint of key (the data key's, or the one derived for purpose). */
static void expect_xattrs(struct kt_mount *m, json_t *st, const char *rel,
			  uint32_t v, const char *purpose)
{
	uint8_t key[KEY_LEN], d[KEY_LEN];
	char want[64], fpr[KF_KEY_FPR_LEN + 1];
	json_t *e = status_version(st, v);

	snprintf(want, sizeof(want), "%u", v);
	cr_assert_str_eq(xattr(m, rel, "user.keyfs.version"), want, "%s", rel);
	cr_assert_str_eq(xattr(m, rel, "user.keyfs.created"),
			 json_string_value(json_object_get(e, "created")), "%s",
			 rel);
	if (!purpose) {
		cr_assert_str_eq(
		    xattr(m, rel, "user.keyfs.fingerprint"),
		    json_string_value(json_object_get(e, "fingerprint")),
		    "%s: not status's fingerprint", rel);
		return;
	}
	snprintf(want, sizeof(want), "versions/%u/key", v);
	read_key(m, want, key);
	derive(key, purpose, d);
	kf_key_fingerprint(d, fpr);
	sodium_memzero(key, sizeof(key));
	sodium_memzero(d, sizeof(d));
	cr_assert_str_eq(xattr(m, rel, "user.keyfs.fingerprint"), fpr,
			 "%s: not the derived key's fingerprint", rel);
}

/*
 * Every key file carries user.keyfs.version, .fingerprint and .created
 * (getfattr -d lists them, never a key byte); other files and folders
 * none; setting or removing one is refused.  Reading them opens no key
 * file: no key_open record.
 */
Test(metrics, key_files_carry_their_metadata, .timeout = 60)
{
	static const char *const none[] = {"version", "status",	  "metrics",
					   "derived", "versions", "control"};
	struct kt_mount *m = start("xattrs", NULL);
	uint32_t v;
	json_t *st;
	char rel[64], *path, *out = NULL, *err = NULL, *text;
	size_t mark, len = 0;
	json_t *recs;

	rotate_ok(m);
	v = read_version(m);
	st = read_status(m);
	mark = kt_audit_size(m);
	expect_xattrs(m, st, "current", v, NULL);
	expect_xattrs(m, st, "previous", v - 1, NULL);
	snprintf(rel, sizeof(rel), "versions/%u/key", v - 1);
	expect_xattrs(m, st, rel, v - 1, NULL);
	recs = kt_audit_since(m, mark);
	cr_assert_eq(kt_count_records(recs, "key_open", -1), 0,
		     "reading attributes was recorded as an open");
	json_decref(recs);
	expect_xattrs(m, st, "derived/phi", v, "phi");
	snprintf(rel, sizeof(rel), "versions/%u/derived/billing", v - 1);
	expect_xattrs(m, st, rel, v - 1, "billing");
	json_decref(st);

	path = kt_mpath(m, "current");
	cr_assert_eq(kt_runf(&out, &err, "getfattr -d %s", path), 0, "%s", err);
	cr_assert(kt_contains(out, "user.keyfs.version=") &&
		      kt_contains(out, "user.keyfs.fingerprint=") &&
		      kt_contains(out, "user.keyfs.created="),
		  "getfattr -d: %s", out);
	text = kt_mread(m, "current", &len);
	cr_assert(text && len == TEXT_LEN);
	cr_assert(!memmem(out, strlen(out), text, TEXT_LEN),
		  "getfattr -d shows the key");
	free_secret(text, len);
	free(out);
	free(err);

	errno = 0;
	cr_assert(setxattr(path, "user.keyfs.version", "9", 1, 0) < 0 &&
		      errno == EPERM,
		  "setxattr: %s", strerror(errno));
	errno = 0;
	cr_assert(removexattr(path, "user.keyfs.version") < 0 && errno == EPERM,
		  "removexattr: %s", strerror(errno));
	errno = 0;
	cr_assert(getxattr(path, "user.other", NULL, 0) < 0 && errno == ENODATA,
		  "user.other: %s", strerror(errno));
	{
		char small[2];

		errno = 0;
		cr_assert(getxattr(path, "user.keyfs.created", small,
				   sizeof(small)) < 0 &&
			      errno == ERANGE,
			  "a short buffer: %s", strerror(errno));
	}
	free(path);
	for (size_t i = 0; i < sizeof(none) / sizeof(*none); i++) {
		path = kt_mpath(m, none[i]);
		cr_assert_eq(listxattr(path, NULL, 0), 0, "%s lists attributes",
			     none[i]);
		errno = 0;
		cr_assert(getxattr(path, "user.keyfs.version", NULL, 0) < 0 &&
			      errno == ENODATA,
			  "%s: user.keyfs.version: %s", none[i],
			  strerror(errno));
		free(path);
	}
}

/*
 * The kernel checks read permission before it asks for a user.*
 * attribute, so the attributes are as private as the key: another uid
 * gets EACCES on root's 0400 current (but may list the names), and reads
 * them where it may read the file (phi's group, billing's owner).
 */
Test(metrics, attributes_need_read_permission, .timeout = 60)
{
	struct kt_mount *m = start("xattr-uid", NULL);
	char *path = kt_mpath(m, "current"), *out = NULL, *err = NULL;
	char want[64];
	int rc;

	rc = kt_run_as("--reuid=1001 --regid=1001 --clear-groups", &out, &err,
		       "getfattr -n user.keyfs.version %s", path);
	cr_assert_neq(rc, 0, "uid 1001 read current's version");
	cr_assert(kt_contains(err, "Permission denied"), "%s", err);
	free(out);
	free(err);
	rc = kt_run_as("--reuid=1001 --regid=1001 --clear-groups", &out, &err,
		       "getfattr %s", path);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert(kt_contains(out, "user.keyfs.version"),
		  "uid 1001 cannot list current's attributes: %s", out);
	free(out);
	free(err);
	free(path);

	snprintf(want, sizeof(want), "user.keyfs.version=\"%u\"",
		 read_version(m));
	path = kt_mpath(m, "derived/phi");
	rc = kt_run_as("--reuid=1001 --regid=2001 --clear-groups", &out, &err,
		       "getfattr -n user.keyfs.version %s", path);
	cr_assert_eq(rc, 0, "phi's group: %s", err);
	cr_assert(kt_contains(out, want), "%s", out);
	free(out);
	free(err);
	free(path);
	path = kt_mpath(m, "derived/billing");
	rc = kt_run_as("--reuid=1002 --regid=2002 --clear-groups", &out, &err,
		       "getfattr -d %s", path);
	cr_assert_eq(rc, 0, "billing's owner: %s", err);
	cr_assert(kt_contains(out, want) &&
		      kt_contains(out, "user.keyfs.fingerprint="),
		  "%s", out);
	free(out);
	free(err);
	rc = kt_run_as("--reuid=1001 --regid=2001 --clear-groups", &out, &err,
		       "getfattr -n user.keyfs.version %s", path);
	cr_assert_neq(rc, 0, "uid 1001 read billing's version");
	free(out);
	free(err);
	free(path);
}
