// SPDX-License-Identifier: MIT
/*
 * The audit log as segments, through the real daemon: closed by size, by
 * age and by control/audit-rotate; linked by their close and open records;
 * pruned to audit_keep with a record of it; kill -9 in the middle of
 * rotations; a full audit disk during one.  The files are read as an
 * auditor would, line by line, and `keyfs audit verify` checks the chain.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "helpers.h"

static void fini(void)
{
	kt_mount_cleanup_all();
	kt_tmpfs_cleanup();
}

TestSuite(segments, .fini = fini);

#define SEG_MAX 4096
#define NAME_LEN 64

/* One file of the log, as found in its folder. */
struct seg {
	char name[NAME_LEN];
	bool active;
	uint64_t first, last; /* seq of its first and last lines */
	json_t *head, *tail;  /* those lines */
	size_t lines;
};

struct log {
	struct seg v[SEG_MAX];
	size_t n;
	json_t *opens;	 /* pid (as text) -> key_open records */
	json_t *deletes; /* audit_segment_delete records, in seq order */
};

static int by_first(const void *x, const void *y)
{
	const struct seg *a = x, *b = y;

	return a->first < b->first ? -1 : a->first > b->first;
}

static uint64_t seq_of(json_t *rec)
{
	return (uint64_t)json_integer_value(json_object_get(rec, "seq"));
}

static const char *str(json_t *rec, const char *key)
{
	const char *s = json_string_value(json_object_get(rec, key));

	return s ? s : "";
}

/* Reads one file: every line parses and seq runs by one inside it. */
static void read_seg(const char *dir, struct seg *s, json_t *opens,
		     json_t *deletes)
{
	char *path = kt_path(dir, s->name), *text, *line, *save = NULL;
	uint64_t prev = 0;

	text = kt_read_file_ok(path, NULL);
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		json_error_t e;
		json_t *rec = json_loads(line, 0, &e);

		cr_assert(rec, "%s: line %zu does not parse", s->name,
			  s->lines + 1);
		cr_assert(prev == 0 || seq_of(rec) == prev + 1,
			  "%s: seq %llu after %llu", s->name,
			  (unsigned long long)seq_of(rec),
			  (unsigned long long)prev);
		prev = seq_of(rec);
		if (strcmp(str(rec, "event"), "key_open") == 0) {
			char pid[32];
			json_t *list;

			snprintf(pid, sizeof(pid), "%lld",
				 (long long)json_integer_value(
				     json_object_get(rec, "pid")));
			list = json_object_get(opens, pid);
			if (!list) {
				list = json_array();
				json_object_set_new(opens, pid, list);
			}
			json_array_append(list, rec);
		}
		if (strcmp(str(rec, "event"), "audit_segment_delete") == 0)
			json_array_append(deletes, rec);
		if (!s->head)
			s->head = json_incref(rec);
		json_decref(s->tail);
		s->tail = rec;
		s->lines++;
	}
	cr_assert(s->head, "%s is empty", s->name);
	s->first = seq_of(s->head);
	s->last = seq_of(s->tail);
	free(text);
	free(path);
}

/* Every file of the log in dir (the active audit.log and the closed
 * segments), checked to form one chain of files, oldest first. */
static void read_log(const char *dir, struct log *l)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	cr_assert(d, "%s: %s", dir, strerror(errno));
	memset(l, 0, sizeof(*l));
	l->opens = json_object();
	l->deletes = json_array();
	while ((de = readdir(d))) {
		bool active = strcmp(de->d_name, "audit.log") == 0;

		if (!active && (strncmp(de->d_name, "audit-", 6) != 0 ||
				strlen(de->d_name) >= NAME_LEN))
			continue;
		cr_assert(l->n < SEG_MAX);
		snprintf(l->v[l->n].name, NAME_LEN, "%s", de->d_name);
		l->v[l->n].active = active;
		read_seg(dir, &l->v[l->n], l->opens, l->deletes);
		l->n++;
	}
	closedir(d);
	cr_assert(l->n > 0, "no audit log in %s", dir);
	qsort(l->v, l->n, sizeof(l->v[0]), by_first);
	cr_assert(l->v[l->n - 1].active, "the newest file is not audit.log");
	for (size_t i = 0; i + 1 < l->n; i++) {
		struct seg *s = &l->v[i], *next = &l->v[i + 1];
		char want[NAME_LEN];

		snprintf(want, sizeof(want), "audit-%016llu-%016llu.log",
			 (unsigned long long)s->first,
			 (unsigned long long)s->last);
		cr_assert_str_eq(s->name, want,
				 "a segment named for another "
				 "range");
		cr_assert_str_eq(str(s->tail, "event"), "audit_segment_close",
				 "%s does not end with its close record",
				 s->name);
		cr_assert_str_eq(str(s->tail, "segment"), s->name);
		cr_assert_eq(next->first, s->last + 1,
			     "seq jumps from %s to %s", s->name, next->name);
		cr_assert_str_eq(str(next->head, "event"),
				 "audit_segment_open");
		cr_assert_str_eq(str(next->head, "previous"), s->name);
		cr_assert_str_eq(
		    str(next->head, "previous_chain"), str(s->tail, "chain"),
		    "%s does not chain to %s", next->name, s->name);
	}
}

static void log_free(struct log *l)
{
	for (size_t i = 0; i < l->n; i++) {
		json_decref(l->v[i].head);
		json_decref(l->v[i].tail);
	}
	json_decref(l->opens);
	json_decref(l->deletes);
}

/* `keyfs audit verify` over the state folder: exits 0. */
static void verify_ok(struct kt_mount *m)
{
	char *out = NULL, *err = NULL;
	int rc = kt_runf(&out, &err, "'%s' audit verify -c '%s'", kt_keyfs(),
			 m->cfg);

	cr_assert(rc == 0, "audit verify: %s%s", out, err);
	free(out);
	free(err);
}

/* open + read + close: the bytes read, or -errno. */
static ssize_t read_path(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap);
	if (n < 0)
		n = -errno;
	close(fd);
	return n;
}

/* n opens of derived/phi, each read whole. */
static void opens(struct kt_mount *m, int n)
{
	char *p = kt_mpath(m, "derived/phi");
	char buf[64];

	for (int i = 0; i < n; i++) {
		int fd = open(p, O_RDONLY | O_CLOEXEC);

		cr_assert(fd >= 0, "open derived/phi: %s", strerror(errno));
		cr_assert(read(fd, buf, sizeof(buf)) == 44);
		close(fd);
	}
	sodium_memzero(buf, sizeof(buf));
	free(p);
}

static struct kt_mount M;

static void start_seg(const char *tag, const char *lines)
{
	kt_mount_config(&M, tag, lines, NULL);
	cr_assert(kt_mount_start(&M, NULL) == 0, "keyfs did not start");
}

Test(segments, closed_by_size_and_linked, .timeout = 60)
{
	struct log l;

	start_seg("seg-size", "audit_max_size = 4K\naudit_open_window = 0\n");
	opens(&M, 150);
	read_log(M.state, &l);
	cr_assert(l.n >= 4, "150 opens of ~200 bytes made %zu files", l.n);
	for (size_t i = 0; i + 1 < l.n; i++) {
		struct stat st;
		char *p = kt_path(M.state, l.v[i].name);

		cr_assert_str_eq(str(l.v[i].tail, "reason"), "size");
		cr_assert(stat(p, &st) == 0 && (st.st_mode & 07777) == 0600,
			  "%s is not 0600", l.v[i].name);
		/* closed at the first line past the limit */
		cr_assert(st.st_size < 4096 + 1024, "%s: %lld bytes",
			  l.v[i].name, (long long)st.st_size);
		free(p);
	}
	log_free(&l);
	verify_ok(&M);
	cr_assert(kt_mount_stop(&M) == 0);
	verify_ok(&M);
}

Test(segments, closed_on_request, .timeout = 60)
{
	char *out = NULL, *err = NULL, *answer;
	struct log l;
	int rc;

	start_seg("seg-req", NULL);
	opens(&M, 3);
	cr_assert(kt_mwrite(&M, "control/audit-rotate", "1\n") == 0);
	rc = kt_ctl(&M, &out, &err, "audit-rotate");
	cr_assert(rc == 0, "keyfs ctl audit-rotate: %s", err);
	read_log(M.state, &l);
	cr_assert_eq(l.n, 3, "two requests made %zu files", l.n);
	cr_assert(kt_contains(out, "audit segment closed: "),
		  "keyfs ctl said: %s", out);
	cr_assert(kt_contains(out, l.v[1].name), "keyfs ctl said: %s", out);
	cr_assert_str_eq(str(l.v[0].tail, "reason"), "request");
	cr_assert_eq(json_integer_value(json_object_get(l.v[1].tail, "uid")), 0,
		     "the close record does not name who asked");
	/* The control file answers what was closed, read back. */
	answer = kt_mread(&M, "control/audit-rotate", NULL);
	free(answer);
	/* Garbage changes nothing. */
	cr_assert(kt_mwrite(&M, "control/audit-rotate", "yes please\n") ==
		  -EINVAL);
	log_free(&l);
	read_log(M.state, &l);
	cr_assert_eq(l.n, 3, "a refused write closed a segment");
	log_free(&l);
	verify_ok(&M);
	free(out);
	free(err);
}

Test(segments, closed_by_age, .timeout = 60)
{
	struct log l;

	start_seg("seg-age", "audit_rotate = 2s\n");
	opens(&M, 2);
	kt_sleep_ms(3100);
	opens(&M, 1);
	read_log(M.state, &l);
	cr_assert(l.n >= 2, "a segment older than audit_rotate stayed open");
	cr_assert_str_eq(str(l.v[0].tail, "reason"), "time");
	log_free(&l);
	verify_ok(&M);
}

Test(segments, retention_keeps_n_and_records_the_deletion, .timeout = 60)
{
	struct log l;
	json_t *last;

	start_seg(
	    "seg-keep",
	    "audit_max_size = 4K\naudit_keep = 2\naudit_open_window = 0\n");
	opens(&M, 200);
	/* Retention runs once the anchor is sealed: after a requested
	 * rotation at once, else within a minute (the audit thread). */
	cr_assert(kt_mwrite(&M, "control/audit-rotate", "1\n") == 0);
	read_log(M.state, &l);
	cr_assert_eq(l.n, 3, "audit_keep = 2 left %zu closed segments",
		     l.n - 1);
	cr_assert(l.v[0].first > 1, "nothing was deleted");
	/* The latest deletion says where the kept history starts: at the
	 * oldest segment still there; deletions come in seq order (files are
	 * read oldest first, but the first read is in folder order: sort). */
	cr_assert(json_array_size(l.deletes) > 0,
		  "no audit_segment_delete record");
	last = NULL;
	for (size_t i = 0; i < json_array_size(l.deletes); i++) {
		json_t *d = json_array_get(l.deletes, i);

		if (!last || seq_of(d) > seq_of(last))
			last = d;
	}
	cr_assert_eq((uint64_t)json_integer_value(
			 json_object_get(last, "history_from_seq")),
		     l.v[0].first,
		     "the deletion record and the oldest kept "
		     "segment disagree");
	log_free(&l);
	verify_ok(&M);
}

/* Opens derived/phi until one fails; writes how many succeeded to fd. */
static void open_until_killed(struct kt_mount *m, int fd)
{
	char *p = kt_mpath(m, "derived/phi"), buf[64];
	unsigned long ok = 0;

	for (;;) {
		int f = open(p, O_RDONLY | O_CLOEXEC);

		if (f < 0)
			break;
		if (read(f, buf, sizeof(buf)) != 44) {
			close(f);
			break;
		}
		close(f);
		ok++;
	}
	sodium_memzero(buf, sizeof(buf));
	if (write(fd, &ok, sizeof(ok)) != sizeof(ok))
		_exit(2);
	_exit(0);
}

/*
 * kill -9 while segments close every ~20 records, 100 times: every open
 * that was answered has its record, the files still form one chain, and
 * verify passes -- a torn tail is cut at the restart, never taken for
 * tampering.
 */
Test(segments, kill_9_during_rotations_loses_no_answered_open, .timeout = 240)
{
	struct {
		pid_t pid;
		unsigned long ok;
	} rounds[100];
	struct log l;

	srand((unsigned)getpid());
	start_seg("seg-kill", "audit_max_size = 4K\naudit_open_window = 0\n");
	for (int i = 0; i < 100; i++) {
		int fds[2], status;
		pid_t child;

		cr_assert(pipe(fds) == 0);
		child = fork();
		cr_assert(child >= 0);
		if (child == 0) {
			close(fds[0]);
			open_until_killed(&M, fds[1]);
		}
		close(fds[1]);
		kt_sleep_ms(2 + rand() % 40);
		kill(M.pid, SIGKILL);
		waitpid(M.pid, &status, 0);
		M.pid = 0;
		if (kt_wait_child(child, 10000) < 0) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
		}
		rounds[i].pid = child;
		rounds[i].ok = 0;
		cr_assert(read(fds[0], &rounds[i].ok, sizeof(rounds[i].ok)) ==
			  sizeof(rounds[i].ok));
		close(fds[0]);
		cr_assert(kt_mount_start(&M, NULL) == 0,
			  "round %d: no restart after kill -9", i);
	}
	cr_assert(kt_mount_stop(&M) == 0);
	read_log(M.state, &l);
	cr_assert(l.n > 10, "100 rounds closed only %zu segments", l.n - 1);
	for (int i = 0; i < 100; i++) {
		char pid[32];
		json_t *list;

		snprintf(pid, sizeof(pid), "%d", (int)rounds[i].pid);
		list = json_object_get(l.opens, pid);
		cr_assert(json_array_size(list) >= rounds[i].ok,
			  "round %d: %lu opens answered, %zu recorded", i,
			  rounds[i].ok, json_array_size(list));
	}
	log_free(&l);
	verify_ok(&M);
}

/*
 * A full audit disk when a segment must close: the open fails closed, the
 * log stays one chain, and once space is freed serving and rotating go on.
 */
Test(segments, full_disk_during_a_rotation, .timeout = 60)
{
	const char *disk = kt_tmpfs("seg-full", "64k");
	char *audit = kt_path(disk, "audit.log");
	char *filler = kt_path(disk, "filler"), *line, buf[512];
	char *phi;
	ssize_t got = 44;
	int fd, i;
	struct log l;

	cr_assert(asprintf(&line,
			   "audit_log = %s\naudit_max_size = 8K\n"
			   "audit_open_window = 0\n",
			   audit) > 0);
	start_seg("seg-full", line);
	phi = kt_mpath(&M, "derived/phi");
	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "%s: %s", filler, strerror(errno));
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	for (i = 0; i < 2000 && got == 44; i++)
		got = read_path(phi, buf, sizeof(buf));
	cr_assert(got < 0, "%d opens succeeded on a full audit disk", i);
	cr_expect(got == -EIO, "an open that cannot be recorded: %s",
		  strerror((int)-got));
	cr_assert(unlink(filler) == 0);
	/* Room again: opens are answered and segments close. */
	for (i = 0; i < 100; i++)
		cr_assert(read_path(phi, buf, sizeof(buf)) == 44,
			  "open %d after space was freed failed", i);
	sodium_memzero(buf, sizeof(buf));
	read_log(disk, &l);
	cr_assert(l.n >= 2, "no segment closed after space was freed");
	log_free(&l);
	cr_assert(kt_mount_stop(&M) == 0);
	verify_ok(&M);
	free(phi);
	free(filler);
	free(audit);
	free(line);
}
