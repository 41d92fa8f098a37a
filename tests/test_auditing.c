// SPDX-License-Identifier: MIT
/*
 * The audit log's upkeep through real mounts (README: Audit, "Volume,
 * shipping and disk space"): the open window, shipping to a syslog socket
 * bound here, and the free-space alarm on a small tmpfs.
 *
 * Opens are counted per thread: the FUSE request's pid is the opening
 * thread's id, so each test names the records of gettid().
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <sodium.h>

#include "audit.h"
#include "mount_fixture.h"

TestSuite(auditing, .fini = mt_fini);

static char *wait_for_text(const char *path, const char *text);
static json_t *alerts_of(const char *path, const char *event);

/* --- records --------------------------------------------------------------
 */

/* Opens of path by pid that the records hold: key_open 1, repeats count. */
static uint64_t opens_in(json_t *recs, pid_t pid, const char *path)
{
	uint64_t n = 0;
	size_t i;
	json_t *r;

	json_array_foreach(recs, i, r)
	{
		if (jint(r, "pid") != pid || strcmp(kt_str_of(r, "path"), path))
			continue;
		if (kt_record_is(r, "key_open", -1))
			n++;
		else if (kt_record_is(r, "key_open_repeat", -1))
			n += (uint64_t)jint(r, "count");
	}
	return n;
}

static size_t count_of(json_t *recs, const char *event, pid_t pid,
		       const char *path)
{
	size_t n = 0, i;
	json_t *r;

	json_array_foreach(recs, i, r)
	{
		if (kt_record_is(r, event, -1) && jint(r, "pid") == pid &&
		    strcmp(kt_str_of(r, "path"), path) == 0)
			n++;
	}
	return n;
}

static json_t *by_seq(json_t *recs, json_int_t seq)
{
	size_t i;
	json_t *r;

	json_array_foreach(recs, i, r)
	{
		if (jint(r, "seq") == seq)
			return r;
	}
	return NULL;
}

/*
 * Every key_open_repeat of recs names, in first_seq, an earlier key_open
 * of the same caller and path, and its from <= to.
 */
static void expect_repeats_well_formed(json_t *recs)
{
	size_t i;
	json_t *r, *first;

	json_array_foreach(recs, i, r)
	{
		if (!kt_record_is(r, "key_open_repeat", -1))
			continue;
		first = by_seq(recs, jint(r, "first_seq"));
		cr_assert(first, "first_seq %lld is no record",
			  (long long)jint(r, "first_seq"));
		cr_expect(kt_record_is(first, "key_open", -1) &&
			      jint(first, "pid") == jint(r, "pid") &&
			      jint(first, "uid") == jint(r, "uid") &&
			      jint(first, "gid") == jint(r, "gid") &&
			      strcmp(kt_str_of(first, "path"),
				     kt_str_of(r, "path")) == 0,
			  "first_seq %lld is not the window's key_open",
			  (long long)jint(r, "first_seq"));
		cr_expect(jint(first, "seq") < jint(r, "seq"));
		cr_expect(jint(r, "count") > 0);
		cr_expect(strcmp(kt_str_of(r, "from"), kt_str_of(r, "to")) <= 0,
			  "from %s after to %s", kt_str_of(r, "from"),
			  kt_str_of(r, "to"));
		/* from is when the first open came; its record was stamped
		 * when written, a moment later. */
		cr_expect(strcmp(kt_str_of(r, "from"),
				 kt_str_of(first, "timestamp")) <= 0,
			  "from %s after the first open's record %s",
			  kt_str_of(r, "from"), kt_str_of(first, "timestamp"));
	}
}

/* n opens of rel, each read whole; asserts they all succeed. */
static void open_n(struct kt_mount *m, const char *rel, int n)
{
	char *path = kt_mpath(m, rel), buf[128];
	ssize_t got = 0;

	for (int i = 0; i < n; i++) {
		got = raw_read(path, buf, sizeof(buf));
		cr_assert(got == TEXT_LEN, "open %d of %s: %s", i + 1, rel,
			  got < 0 ? strerror((int)-got) : "short read");
	}
	sodium_memzero(buf, sizeof(buf));
	free(path);
}

static json_t *audit_obj(struct kt_mount *m)
{
	json_t *s = read_status(m),
	       *a = json_incref(json_object_get(s, "audit"));

	cr_assert(json_is_object(a), "status has no \"audit\" object");
	json_decref(s);
	return a;
}

static void verify_log(struct kt_mount *m)
{
	char *out = NULL, *err = NULL;
	int rc =
	    kt_runf(&out, &err, "%s audit verify -c '%s'", kt_keyfs(), m->cfg);

	cr_expect(rc == 0, "audit verify: %s%s", out ? out : "",
		  err ? err : "");
	free(out);
	free(err);
}

/* --- the open window ------------------------------------------------------
 */

#define THREADS 3
#define THREAD_OPENS 300

struct opener {
	struct kt_mount *m;
	pid_t tid;
	int failed;
};

static void *opener_main(void *arg)
{
	struct opener *o = arg;
	char *path = kt_mpath(o->m, "derived/phi"), buf[128];

	o->tid = gettid();
	for (int i = 0; i < THREAD_OPENS; i++)
		if (raw_read(path, buf, sizeof(buf)) != TEXT_LEN)
			o->failed++;
	sodium_memzero(buf, sizeof(buf));
	free(path);
	return NULL;
}

/*
 * A window longer than the test: each thread's first open is in the log
 * when it returns, the others only in memory, and every count is written
 * at stop, before the unmount record.
 */
Test(auditing, repeats_are_counted_and_recorded_at_stop, .timeout = 120)
{
	struct kt_mount *m = start("window", "audit_open_window = 1h\n");
	struct opener o[THREADS];
	pthread_t t[THREADS];
	pid_t me = gettid();
	size_t mark = kt_audit_size(m);
	json_t *recs, *a, *rep, *first, *unmount;
	const int n = 500;

	open_n(m, "current", 1);
	recs = kt_audit_since(m, mark);
	cr_assert(count_of(recs, "key_open", me, "current") == 1,
		  "the first open was not in the log when it returned");
	json_decref(recs);
	open_n(m, "current", n - 1);
	for (int i = 0; i < THREADS; i++) {
		o[i] = (struct opener){m, 0, 0};
		pthread_create(&t[i], NULL, opener_main, &o[i]);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		cr_assert(o[i].failed == 0, "%d opens failed", o[i].failed);
	}

	recs = kt_audit_since(m, mark);
	cr_expect(count_of(recs, "key_open", me, "current") == 1,
		  "%zu key_open records for %d opens in one window",
		  count_of(recs, "key_open", me, "current"), n);
	cr_expect(kt_count_records(recs, "key_open_repeat", -1) == 0,
		  "a window was recorded before it ended");
	for (int i = 0; i < THREADS; i++)
		cr_expect(count_of(recs, "key_open", o[i].tid, "derived/phi") ==
			      1,
			  "thread %d: not one key_open", i);
	json_decref(recs);
	a = audit_obj(m);
	cr_expect(jint(a, "open_window") == 3600);
	cr_expect(
	    jint(a, "opens_counted") == (n - 1) + THREADS * (THREAD_OPENS - 1),
	    "status counts %lld repeats", (long long)jint(a, "opens_counted"));
	json_decref(a);

	cr_assert(kt_mount_stop(m) == 0);
	recs = kt_audit_since(m, mark);
	cr_expect(count_of(recs, "key_open_repeat", me, "current") == 1);
	rep = NULL;
	{
		size_t i;
		json_t *r;

		json_array_foreach(recs, i, r)
		{
			if (kt_record_is(r, "key_open_repeat", -1) &&
			    jint(r, "pid") == me)
				rep = r;
		}
	}
	cr_assert(rep, "no key_open_repeat at stop");
	cr_expect(jint(rep, "count") == n - 1, "count %lld, want %d",
		  (long long)jint(rep, "count"), n - 1);
	cr_expect(jint(rep, "uid") == 0 && jint(rep, "gid") == 0);
	first = by_seq(recs, jint(rep, "first_seq"));
	cr_assert(first && kt_record_is(first, "key_open", -1) &&
		  jint(first, "pid") == me);
	for (int i = 0; i < THREADS; i++)
		cr_expect(
		    opens_in(recs, o[i].tid, "derived/phi") == THREAD_OPENS,
		    "thread %d: %llu opens recorded of %d", i,
		    (unsigned long long)opens_in(recs, o[i].tid, "derived/phi"),
		    THREAD_OPENS);
	expect_repeats_well_formed(recs);
	unmount = kt_find_record(recs, "unmount", -1);
	cr_assert(unmount);
	cr_expect(jint(rep, "seq") < jint(unmount, "seq"),
		  "the repeats came after the unmount record");
	json_decref(recs);
	verify_log(m);
}

/* The seq of the last key_open of path by pid in recs (0: none). */
static json_int_t last_open_seq(json_t *recs, pid_t pid, const char *path)
{
	json_int_t seq = 0;
	size_t i;
	json_t *r;

	json_array_foreach(recs, i, r)
	{
		if (kt_record_is(r, "key_open", -1) && jint(r, "pid") == pid &&
		    strcmp(kt_str_of(r, "path"), path) == 0)
			seq = jint(r, "seq");
	}
	return seq;
}

/* The key_open_repeat whose first_seq is seq (borrowed), or NULL. */
static json_t *repeat_of(json_t *recs, json_int_t seq)
{
	size_t i;
	json_t *r;

	json_array_foreach(recs, i, r)
	{
		if (kt_record_is(r, "key_open_repeat", -1) &&
		    jint(r, "first_seq") == seq)
			return r;
	}
	return NULL;
}

/*
 * The default window, one second: the thread writes each window's count
 * once it has ended, while the daemon runs, and no open goes unrecorded.
 * The proof is a window with repeats that is the caller's last: no later
 * open of its own can have written it.  Bursts until one ends that way.
 */
Test(auditing, ended_windows_are_recorded_while_mounted, .timeout = 180)
{
	struct kt_mount *m = start("window1s", NULL);
	pid_t me = gettid();
	size_t mark = kt_audit_size(m);
	uint64_t made = 0, got = 0;
	json_t *recs = NULL, *a;
	bool proved = false;

	for (int burst = 0; burst < 5 && !proved; burst++) {
		open_n(m, "current", 1000);
		made += 1000;
		got = 0;
		for (int i = 0; i < 200 && got != made; i++) {
			json_decref(recs);
			kt_sleep_ms(50);
			recs = kt_audit_since(m, mark);
			got = opens_in(recs, me, "current");
		}
		cr_assert(got == made, "%llu of %llu opens recorded after 10 s",
			  (unsigned long long)got, (unsigned long long)made);
		proved = repeat_of(recs, last_open_seq(recs, me, "current"));
	}
	cr_expect(proved, "no last window with repeats in 5 bursts");
	cr_expect(count_of(recs, "key_open_repeat", me, "current") > 0);
	expect_repeats_well_formed(recs);
	json_decref(recs);
	a = audit_obj(m);
	cr_expect(jint(a, "open_window") == 1);
	cr_expect(jint(a, "repeat_records") > 0);
	json_decref(a);
	cr_assert(kt_mount_stop(m) == 0);
	verify_log(m);
}

Test(auditing, window_zero_records_every_open, .timeout = 60)
{
	struct kt_mount *m = start("window0", "audit_open_window = 0\n");
	pid_t me = gettid();
	size_t mark = kt_audit_size(m);
	json_t *recs, *a;

	open_n(m, "current", 200);
	recs = kt_audit_since(m, mark);
	cr_expect(count_of(recs, "key_open", me, "current") == 200,
		  "%zu key_open records for 200 opens",
		  count_of(recs, "key_open", me, "current"));
	json_decref(recs);
	a = audit_obj(m);
	cr_expect(jint(a, "open_window") == 0);
	cr_expect_null(json_object_get(a, "opens_counted"));
	json_decref(a);
	cr_assert(kt_mount_stop(m) == 0);
	recs = kt_audit_since(m, mark);
	cr_expect(kt_count_records(recs, "key_open_repeat", -1) == 0);
	json_decref(recs);
}

/*
 * Fail closed with the window on: a full audit disk refuses the first open
 * of the next window (EIO); the count of the window before it is kept
 * until there is room again, then written.
 */
Test(auditing, a_full_disk_refuses_the_next_window_and_keeps_the_count,
     .timeout = 120)
{
	const char *disk = kt_tmpfs("window-full", "64k");
	char *audit = kt_path(disk, "audit.log");
	char *filler = kt_path(disk, "filler");
	char *line, *current, buf[512];
	struct kt_mount *m;
	pid_t me = gettid();
	uint64_t answered = 0;
	ssize_t got = TEXT_LEN;
	json_t *recs;
	int fd, i;

	cr_assert(asprintf(&line, "audit_log = %s\naudit_open_window = 1s\n",
			   audit) > 0);
	m = start("window-full", line);
	current = kt_mpath(m, "current");
	cr_assert(raw_read(current, buf, sizeof(buf)) == TEXT_LEN);
	answered++;
	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0);
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	/* Counted while the window lasts; refused once it has ended. */
	for (i = 0; i < 10000 && got == TEXT_LEN; i++) {
		got = raw_read(current, buf, sizeof(buf));
		if (got == TEXT_LEN)
			answered++;
		else
			break;
		kt_sleep_ms(5);
	}
	cr_assert(got == -EIO, "after %d opens on a full audit disk: %s", i,
		  got < 0 ? strerror((int)-got) : "still answered");

	cr_assert(unlink(filler) == 0);
	got = raw_read(current, buf, sizeof(buf));
	cr_assert(got == TEXT_LEN, "open after space was freed: %s",
		  got < 0 ? strerror((int)-got) : "short read");
	answered++;
	sodium_memzero(buf, sizeof(buf));
	cr_assert(kt_mount_stop(m) == 0);
	recs = kt_audit_read(audit, 0);
	cr_expect(opens_in(recs, me, "current") == answered,
		  "%llu opens answered, %llu recorded",
		  (unsigned long long)answered,
		  (unsigned long long)opens_in(recs, me, "current"));
	expect_repeats_well_formed(recs);
	json_decref(recs);
	free(current);
	free(filler);
	free(audit);
	free(line);
}

struct one_open {
	char *path;
	ssize_t got;
};

static void *one_open_main(void *arg)
{
	struct one_open *o = arg;
	char buf[128];

	o->got = raw_read(o->path, buf, sizeof(buf));
	sodium_memzero(buf, sizeof(buf));
	return NULL;
}

/* One open of rel from a new thread (a new caller): 0 or -errno. */
static ssize_t open_as_new_thread(struct kt_mount *m, const char *rel)
{
	struct one_open o = {kt_mpath(m, rel), 0};
	pthread_t t;

	cr_assert(pthread_create(&t, NULL, one_open_main, &o) == 0);
	pthread_join(t, NULL);
	free(o.path);
	return o.got < 0 ? o.got : 0;
}

/*
 * Counts the log cannot take at stop are not dropped in silence: the
 * daemon's log and alert_command say how many opens went unrecorded.
 */
Test(auditing, counts_lost_at_stop_are_alerted, .timeout = 120)
{
	const char *disk = kt_tmpfs("window-lost", "64k");
	char *dir = kt_tmpdir("window-lost-alerts"), *alerts, *lines, *text;
	char *audit = kt_path(disk, "audit.log");
	char *filler = kt_path(disk, "filler"), buf[512];
	struct kt_mount *m;
	ssize_t r = 0;
	json_t *list, *rec;
	int fd, i;

	alerts = kt_path(dir, "alerts.log");
	cr_assert(asprintf(&lines,
			   "audit_log = %s\naudit_open_window = 1h\n"
			   "alert_command = cat >> %s\n",
			   audit, alerts) > 0);
	m = start("window-lost", lines);
	open_n(m, "current", 3); /* one window, two repeats */
	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0);
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	/* New callers' first opens use up the log's last page. */
	for (i = 0; i < 1000 && r == 0; i++)
		r = open_as_new_thread(m, "derived/phi");
	cr_assert(r == -EIO, "after %d first opens on a full disk: %s", i,
		  r ? strerror((int)-r) : "still recorded");
	kt_mount_stop(m);
	text = wait_for_text(m->log, "could not be recorded before the log "
				     "closed");
	cr_expect(text, "the daemon's log does not say opens went "
			"unrecorded");
	free(text);
	text = wait_for_text(alerts, "\"unrecorded\"");
	cr_assert(text, "alert_command got no record of the lost count");
	free(text);
	list = alerts_of(alerts, "key_open_repeat");
	cr_expect(json_array_size(list) == 1, "%zu alerts of one loss",
		  json_array_size(list));
	rec = json_array_get(list, 0);
	cr_expect(jint(rec, "unrecorded") == 2, "unrecorded %lld, want 2",
		  (long long)jint(rec, "unrecorded"));
	cr_expect(json_is_false(json_object_get(rec, "success")));
	cr_expect(strlen(kt_str_of(rec, "audit_error")) > 0,
		  "the alert does not say why the log could not take it");
	json_decref(list);
	free(filler);
	free(audit);
	free(lines);
	free(alerts);
	free(dir);
}

/* --- shipping to syslog ---------------------------------------------------
 */

struct syslog_line {
	int pri;
	long pid;
	char tag[64];
	const char *msg;
};

/* "<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG", asserted. */
static void parse_syslog(const char *dgram, struct syslog_line *p)
{
	char mon[4];
	int day, h, mi, s, n = 0;

	cr_assert(sscanf(dgram, "<%d>%3s %2d %2d:%2d:%2d %63[^[][%ld]: %n",
			 &p->pri, mon, &day, &h, &mi, &s, p->tag, &p->pid,
			 &n) == 8 &&
		      n > 0,
		  "not in RFC 3164 form: %.200s", dgram);
	p->msg = dgram + n;
}

/* The first datagram (within 10 s) whose message holds `event`; parsed
 * into p, the datagram in buf. */
static void receive_event(int fd, const char *event, char *buf, size_t cap,
			  struct syslog_line *p)
{
	char want[64];

	snprintf(want, sizeof(want), "\"event\":\"%s\"", event);
	for (int i = 0; i < 100; i++) {
		if (kt_dgram_receive(fd, buf, cap, 100) <= 0)
			continue;
		parse_syslog(buf, p);
		if (strstr(p->msg, want))
			return;
	}
	cr_assert(false, "no %s line came to the socket", event);
}

/* The log's line with this seq, without its newline (malloc'd). */
static char *log_line(struct kt_mount *m, long long seq)
{
	char *path = kt_path(m->state, "audit.log"), want[48], *text, *p;
	char *line = NULL;

	text = kt_read_file_ok(path, NULL);
	snprintf(want, sizeof(want), ",\"seq\":%lld,", seq);
	for (p = text; p && *p;) {
		char *nl = strchr(p, '\n');

		cr_assert(nl);
		*nl = 0;
		if (strstr(p, want)) {
			line = strdup(p);
			break;
		}
		p = nl + 1;
	}
	free(text);
	free(path);
	return line;
}

static long long seq_of(const char *msg)
{
	json_t *o = json_loads(msg, 0, NULL);
	long long seq;

	cr_assert(o, "the message is not JSON: %.200s", msg);
	seq = (long long)jint(o, "seq");
	json_decref(o);
	return seq;
}

Test(auditing, every_line_goes_to_syslog_as_in_the_log, .timeout = 60)
{
	char *dir = kt_tmpdir("syslog"), *sock, *lines, *line;
	char buf[KF_AUDIT_LINE_MAX + 256];
	int fd = kt_dgram_bind(dir, &sock);
	struct syslog_line p;
	struct kt_mount *m;
	json_t *a, *sl;
	long long seq, last = 0;

	cr_assert(asprintf(&lines,
			   "audit_syslog = yes\naudit_syslog_socket = %s\n"
			   "audit_syslog_facility = local3\n"
			   "audit_syslog_tag = kt-audit\n",
			   sock) > 0);
	m = start("syslog", lines);
	open_n(m, "current", 1);
	receive_event(fd, "key_open", buf, sizeof(buf), &p);
	cr_expect(p.pri == (LOG_LOCAL3 | LOG_INFO), "PRI %d, want %d", p.pri,
		  LOG_LOCAL3 | LOG_INFO);
	cr_expect_str_eq(p.tag, "kt-audit");
	cr_expect(p.pid == m->pid, "PID %ld, the daemon is %d", p.pid,
		  (int)m->pid);
	seq = seq_of(p.msg);
	line = log_line(m, seq);
	cr_assert(line, "no line of seq %lld in the log", seq);
	cr_expect_str_eq(p.msg, line, "the shipped line is not the log's");
	free(line);

	/* A refused operation's record: notice, and the log's line too. */
	cr_assert(kt_mwrite(m, "control/retire", "1\n") == -EBUSY);
	receive_event(fd, "key_retire", buf, sizeof(buf), &p);
	cr_expect(p.pri == (LOG_LOCAL3 | LOG_NOTICE), "PRI %d, want %d", p.pri,
		  LOG_LOCAL3 | LOG_NOTICE);
	cr_expect(strstr(p.msg, "\"success\":false"));
	last = seq_of(p.msg);
	cr_expect(last > seq, "lines out of seq order");
	line = log_line(m, last);
	cr_assert(line);
	cr_expect_str_eq(p.msg, line);
	free(line);

	a = audit_obj(m);
	sl = json_object_get(a, "syslog");
	cr_assert(json_is_object(sl), "status has no audit.syslog");
	cr_expect(json_is_true(json_object_get(sl, "enabled")));
	cr_expect_str_eq(kt_str_of(sl, "facility"), "local3");
	cr_expect_str_eq(kt_str_of(sl, "tag"), "kt-audit");
	cr_expect(jint(sl, "sent") >= 2);
	cr_expect(jint(sl, "dropped") == 0, "%lld lines dropped",
		  (long long)jint(sl, "dropped"));
	/* A healthy disk, and the log's numbers. */
	cr_expect(json_is_false(json_object_get(a, "low_space")));
	cr_expect(json_is_integer(json_object_get(a, "free_percent")) ||
		      json_is_null(json_object_get(a, "free_percent")),
		  "free_percent is neither a number nor null yet");
	cr_expect(jint(a, "min_free") == 5);
	cr_expect(jint(a, "active_bytes") > 0);
	cr_expect(json_is_integer(json_object_get(a, "closed_segments")));
	cr_expect(jint(a, "write_failures") == 0);
	json_decref(a);
	cr_assert(kt_mount_stop(m) == 0);
	close(fd);
	free(sock);
	free(lines);
	free(dir);
}

/* Waits up to 15 s for path to hold text: the file's text, or NULL. */
static char *wait_for_text(const char *path, const char *text)
{
	for (int i = 0; i < 300; i++) {
		char *got = kt_read_file(path, NULL);

		if (got && strstr(got, text))
			return got;
		free(got);
		kt_sleep_ms(50);
	}
	return NULL;
}

Test(auditing, a_stalled_receiver_never_blocks_opens, .timeout = 180)
{
	char *dir = kt_tmpdir("syslog-stall"), *sock, *lines, *alerts, *text;
	int fd = kt_dgram_bind(dir, &sock);
	struct kt_mount *m;
	json_t *a, *sl;

	alerts = kt_path(dir, "alerts.log");
	cr_assert(asprintf(&lines,
			   "audit_syslog = yes\naudit_syslog_socket = %s\n"
			   "audit_open_window = 0\n"
			   "alert_command = cat >> %s\n",
			   sock, alerts) > 0);
	m = start("syslog-stall", lines);
	/* Never read: its queue fills within a few lines and stays full. */
	open_n(m, "current", 10000);
	a = audit_obj(m);
	sl = json_object_get(a, "syslog");
	cr_expect(jint(sl, "dropped") > 0, "no line was dropped");
	cr_expect(jint(sl, "sent") + jint(sl, "dropped") >= 10000,
		  "sent %lld + dropped %lld < 10000 lines",
		  (long long)jint(sl, "sent"), (long long)jint(sl, "dropped"));
	json_decref(a);
	text = wait_for_text(m->log, "audit_syslog: ");
	cr_expect(text, "no alert in the daemon's log about dropped lines");
	free(text);
	text = wait_for_text(alerts, "\"event\":\"audit_syslog\"");
	cr_expect(text, "alert_command got no audit_syslog record");
	free(text);
	cr_assert(kt_mount_stop(m) == 0);
	close(fd);
	free(alerts);
	free(sock);
	free(lines);
	free(dir);
}

Test(auditing, a_missing_socket_does_not_stop_the_daemon, .timeout = 60)
{
	char *dir = kt_tmpdir("syslog-missing"), *sock = kt_path(dir, "log");
	char *lines, buf[KF_AUDIT_LINE_MAX + 256], *path;
	struct kt_mount *m;
	struct syslog_line p;
	json_t *a;
	int fd;

	cr_assert(asprintf(&lines,
			   "audit_syslog = yes\naudit_syslog_socket = %s\n",
			   sock) > 0);
	m = start("syslog-missing", lines);
	open_n(m, "current", 1);
	a = audit_obj(m);
	cr_expect(jint(json_object_get(a, "syslog"), "dropped") > 0);
	json_decref(a);
	/* The socket comes: lines reach it (a reconnect a second later). */
	fd = kt_dgram_bind(dir, &path);
	for (int i = 0; i < 100; i++) {
		/* Another path each time: each open is a first open. */
		open_n(m, i % 2 ? "current" : "derived/phi", 1);
		if (kt_dgram_receive(fd, buf, sizeof(buf), 100) > 0)
			break;
		buf[0] = 0;
	}
	cr_assert(buf[0], "no line came once the socket was there");
	parse_syslog(buf, &p);
	cr_expect(p.pri == (LOG_AUTHPRIV | LOG_INFO) ||
		      p.pri == (LOG_AUTHPRIV | LOG_NOTICE),
		  "PRI %d: not authpriv", p.pri);
	cr_expect_str_eq(p.tag, "keyfs-audit");
	cr_assert(kt_mount_stop(m) == 0);
	close(fd);
	free(path);
	free(sock);
	free(lines);
	free(dir);
}

/* --- free space -----------------------------------------------------------
 */

/* Fills the file system of dir with dir/filler until under pct % free. */
static void fill_below(const char *dir, unsigned pct)
{
	char *filler = kt_path(dir, "filler"), buf[4096];
	struct statvfs st;
	int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	cr_assert(fd >= 0);
	memset(buf, 'x', sizeof(buf));
	for (;;) {
		cr_assert(fstatvfs(fd, &st) == 0);
		if (st.f_bavail * 100 < (uint64_t)pct * st.f_blocks)
			break;
		cr_assert(write(fd, buf, sizeof(buf)) == sizeof(buf),
			  "the disk filled before %u%% free", pct);
	}
	close(fd);
	free(filler);
}

/* Waits up to secs for status's audit.low_space to be `low`. */
static bool low_space_becomes(struct kt_mount *m, bool low, int secs)
{
	for (int i = 0; i < secs * 5; i++) {
		json_t *a = audit_obj(m);
		bool now = json_is_true(json_object_get(a, "low_space"));

		json_decref(a);
		if (now == low)
			return true;
		kt_sleep_ms(200);
	}
	return false;
}

/* The alert_command records of `event` in the file at path. */
static json_t *alerts_of(const char *path, const char *event)
{
	char *text = kt_read_file(path, NULL), *p, *nl;
	json_t *list = json_array();

	for (p = text; p && *p; p = nl + 1) {
		json_t *o;

		nl = strchr(p, '\n');
		if (!nl)
			break;
		*nl = 0;
		o = json_loads(p, 0, NULL);
		if (o && strcmp(kt_str_of(o, "event"), event) == 0)
			json_array_append(list, o);
		json_decref(o);
	}
	free(text);
	return list;
}

/*
 * A start on a nearly full audit disk alerts at once (log, alert_command,
 * status); freeing it is noticed at the next minute's check, once.
 */
Test(auditing, low_space_alerts_at_start_and_once_on_recovery, .timeout = 240)
{
	const char *disk = kt_tmpfs("space", "2m");
	char *dir = kt_tmpdir("space-alerts"), *alerts, *lines, *text, *want;
	char *audit = kt_path(disk, "audit.log"), *filler;
	struct kt_mount *m;
	json_t *a, *list, *rec;

	alerts = kt_path(dir, "alerts.log");
	fill_below(disk, 3);
	cr_assert(asprintf(&lines,
			   "audit_log = %s\nalert_command = cat >> %s\n", audit,
			   alerts) > 0);
	m = start("space", lines);
	cr_assert(low_space_becomes(m, true, 15),
		  "status never said low_space");
	a = audit_obj(m);
	cr_expect(jint(a, "free_percent") < 5, "free_percent %lld",
		  (long long)jint(a, "free_percent"));
	json_decref(a);
	cr_assert(asprintf(&want, "audit log folder %s has ", disk) > 0);
	text = wait_for_text(m->log, want);
	cr_assert(text, "no alert naming %s in the daemon's log", disk);
	cr_expect(strstr(text, "below audit_min_free (5%)"),
		  "the alert does not give the threshold");
	free(text);
	text = wait_for_text(alerts, "\"event\":\"audit_space\"");
	cr_assert(text, "alert_command got no audit_space record");
	free(text);
	list = alerts_of(alerts, "audit_space");
	rec = json_array_get(list, 0);
	cr_expect(json_is_true(json_object_get(rec, "low_space")));
	cr_expect_str_eq(kt_str_of(rec, "folder"), disk);
	cr_expect(jint(rec, "min_free") == 5 && jint(rec, "free_percent") < 5);
	json_decref(list);

	filler = kt_path(disk, "filler");
	cr_assert(unlink(filler) == 0);
	cr_assert(low_space_becomes(m, false, 100),
		  "status still says low_space 100 s after space was freed");
	text = wait_for_text(m->log, "free again");
	cr_expect(text, "no recovery line in the daemon's log");
	free(text);
	text = wait_for_text(alerts, "\"low_space\":false");
	cr_expect(text, "alert_command got no recovery record");
	free(text);
	list = alerts_of(alerts, "audit_space");
	cr_expect(json_array_size(list) == 2,
		  "%zu audit_space alerts, want the drop and the recovery",
		  json_array_size(list));
	json_decref(list);
	cr_assert(kt_mount_stop(m) == 0);
	list = kt_audit_read(audit, 0);
	cr_expect(kt_count_records(list, "audit_space", 0) == 1 &&
		      kt_count_records(list, "audit_space", 1) == 1,
		  "the audit log does not hold the alarm and the recovery");
	json_decref(list);
	free(filler);
	free(want);
	free(lines);
	free(alerts);
	free(audit);
	free(dir);
}

/* --- time-based segments --------------------------------------------------
 */

/*
 * An idle log -- no record written after the opens -- is still closed once
 * it is audit_rotate old, and audit_keep is applied: the audit thread does
 * both every minute (only segments closed by size came before).
 */
Test(auditing, an_idle_log_is_closed_on_time_and_kept_to_audit_keep,
     .timeout = 180)
{
	struct kt_mount *m =
	    start("idle-rotate", "audit_rotate = 2s\naudit_max_size = 4K\n"
				 "audit_keep = 1\naudit_open_window = 0\n");
	json_int_t rotations0, closed0, rotations = 0, closed = 0;
	json_t *a;

	open_n(m, "current", 100); /* about 20 KB: segments closed by size */
	a = audit_obj(m);
	rotations0 = jint(a, "rotations");
	closed0 = jint(a, "closed_segments");
	json_decref(a);
	cr_assert(rotations0 >= 2 && closed0 > 1,
		  "%lld segments closed by size, %lld kept before retention",
		  (long long)rotations0, (long long)closed0);
	for (int i = 0; i < 120 * 5; i++) {
		kt_sleep_ms(200);
		a = audit_obj(m);
		rotations = jint(a, "rotations");
		closed = jint(a, "closed_segments");
		json_decref(a);
		if (rotations > rotations0 && closed == 1)
			break;
	}
	cr_assert(rotations > rotations0,
		  "the idle segment was not closed in 120 s");
	cr_assert(closed == 1,
		  "%lld closed segments kept (%lld before), audit_keep = 1",
		  (long long)closed, (long long)closed0);
	a = audit_obj(m);
	cr_expect(jint(a, "rotate_failures") == 0);
	json_decref(a);
	cr_assert(kt_mount_stop(m) == 0);
	verify_log(m);
}
