// SPDX-License-Identifier: MIT
/*
 * Change notification through the real keyfs binary (README: Metrics,
 * change notification and metadata): poll(2) on an open key file or
 * `version` reports POLLPRI once the file no longer shows what its name
 * shows, and a waiter that opened, read and polls sleeps until then; keyfs
 * ctl wait, and the README's select.poll example in Python, wake after a
 * rotation and print the new version, in each read mode, and time out
 * without one.
 *
 * A waiter is only known to sleep once /proc says it is blocked in poll;
 * then the test rotates.  No test asserts how fast a waiter wakes (the
 * machines are shared): the bound is WAKE_MS, far above it; the time is
 * logged.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "mount_fixture.h"

TestSuite(notify, .fini = mt_fini);

#define WAKE_MS 10000  /* a waiter must have woken by then */
#define SLEEP_MS 10000 /* ... and be asleep in poll by then */
#define TIMED_OUT 124  /* keyfs ctl wait's status after --timeout */

/* A mount of the fixture in read mode `mode`. */
static struct kt_mount *start_mode(const char *tag, const char *mode)
{
	char *line;
	struct kt_mount *m;

	cr_assert(
	    asprintf(&line, "read_mode = %s\nretain_versions = 3\n", mode) > 0);
	m = start(tag, line);
	free(line);
	return m;
}

/* --- poll(2) on open files ------------------------------------------------ */

/* poll of fd for events, waiting up to ms: the revents. */
static short poll_for(int fd, short events, int ms)
{
	struct pollfd p = {fd, events, 0};
	int r;

	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	cr_assert(r >= 0, "poll: %s", strerror(errno));
	return r == 0 ? 0 : p.revents;
}

/* poll of fd for POLLPRI alone, waiting up to ms: the revents. */
static short poll_pri(int fd, int ms)
{
	return poll_for(fd, POLLPRI, ms);
}

/* Whether fd polls readable at once (the kernel reports only what is
 * asked for, and POLLPRI is asked for apart). */
static bool readable(int fd)
{
	return poll_for(fd, POLLIN, 0) & POLLIN;
}

/* Opens rel of the tree and reads it whole (its bytes are wiped). */
static int open_read(struct kt_mount *m, const char *rel)
{
	char *path = kt_mpath(m, rel), buf[8192];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	cr_assert(fd >= 0, "open %s: %s", rel, strerror(errno));
	cr_assert(read(fd, buf, sizeof(buf)) > 0, "read %s", rel);
	sodium_memzero(buf, sizeof(buf));
	free(path);
	return fd;
}

#define N_WATCHED 6
static const char *const watched[N_WATCHED] = {
    "version", "current", "previous", "derived/phi", "status", "metrics"};
/* Whether a rotation makes watched[i] stale: the key files and version. */
static const bool follows[N_WATCHED] = {true, true, true, true, false, false};

/*
 * In read mode `mode`: files opened and read report POLLIN and no POLLPRI;
 * after a rotation the key files and version report POLLPRI (and keep
 * reporting it: that open file is stale), status and metrics never do;
 * the same names opened anew sleep again.  A versions/N file reports it
 * once version N is retired.
 */
static void poll_follows_changes(const char *mode)
{
	struct kt_mount *m = start_mode(mode, mode);
	int fd[N_WATCHED], vfd, again;
	uint32_t v;
	char rel[64];

	rotate_ok(m); /* a previous key */
	v = read_version(m);
	for (int i = 0; i < N_WATCHED; i++) {
		fd[i] = open_read(m, watched[i]);
		cr_assert(readable(fd[i]), "%s: %s is not readable", mode,
			  watched[i]);
		cr_assert(!(poll_pri(fd[i], 0) & POLLPRI),
			  "%s: %s is changed before a change", mode,
			  watched[i]);
	}
	snprintf(rel, sizeof(rel), "versions/%u/key", v - 1);
	vfd = open_read(m, rel);
	cr_assert(!(poll_pri(vfd, 0) & POLLPRI), "%s: %s changed", mode, rel);

	rotate_ok(m);
	for (int i = 0; i < N_WATCHED; i++) {
		short ev = poll_pri(fd[i], follows[i] ? WAKE_MS : 0);

		cr_assert(!!(ev & POLLPRI) == follows[i],
			  "%s: %s %s POLLPRI after a rotation", mode,
			  watched[i], follows[i] ? "lacks" : "reports");
		cr_assert(readable(fd[i]), "%s: %s is not readable", mode,
			  watched[i]);
		if (follows[i])
			cr_assert(poll_pri(fd[i], 0) & POLLPRI,
				  "%s: %s forgot its change", mode, watched[i]);
		close(fd[i]);
		if (!follows[i])
			continue;
		again = open_read(m, watched[i]);
		cr_assert(!(poll_pri(again, 0) & POLLPRI),
			  "%s: %s opened after the rotation is changed", mode,
			  watched[i]);
		close(again);
	}
	/* versions/(v-1)/key did not change: it is still there. */
	cr_assert(!(poll_pri(vfd, 0) & POLLPRI), "%s: %s changed", mode, rel);
	snprintf(rel, sizeof(rel), "retire %u", v - 1);
	cr_assert(kt_ctl(m, NULL, NULL, rel) == 0, "%s: keyfs ctl %s", mode,
		  rel);
	cr_assert(poll_pri(vfd, WAKE_MS) & POLLPRI,
		  "%s: a retired version's key file lacks POLLPRI", mode);
	close(vfd);
}

Test(notify, poll_follows_changes_audited, .timeout = 60)
{
	poll_follows_changes("audited");
}

Test(notify, poll_follows_changes_strict, .timeout = 60)
{
	poll_follows_changes("strict");
}

Test(notify, poll_follows_changes_cached, .timeout = 60)
{
	poll_follows_changes("cached");
}

/*
 * One open file polled thousands of times with a short time-out leaves the
 * daemon a poll handle each time, which it cannot tell apart: beyond its
 * table it wakes them all and starts again.  A waiter that sleeps through
 * that still wakes after the next change.
 */
Test(notify, a_waiter_survives_thousands_of_polls, .timeout = 120)
{
	struct kt_mount *m = start("manypolls", NULL);
	enum { FDS = 100, ROUNDS = 60 }; /* 6,000 handles */
	struct pollfd p[FDS];
	int waiter = open_read(m, "current");
	pid_t pid;

	for (int i = 0; i < FDS; i++)
		p[i] = (struct pollfd){open_read(m, "version"), POLLPRI, 0};
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0)
		_exit(poll_pri(waiter, WAKE_MS + 20000) & POLLPRI ? 0 : 1);
	for (int r = 0; r < ROUNDS; r++)
		cr_assert(poll(p, FDS, 1) == 0, "version changed unasked");
	rotate_ok(m);
	cr_assert_eq(kt_wait_child(pid, WAKE_MS + 25000), 0,
		     "a waiter polled among 6,000 others did not wake");
	for (int i = 0; i < FDS; i++)
		close(p[i].fd);
	close(waiter);
}

/* --- waiters in other processes ------------------------------------------ */

struct waiter {
	pid_t pid;
	char *out, *err; /* files of its standard output and error */
};

/* Starts argv (argv[0] searched in PATH) with output to files. */
static void waiter_start(struct waiter *w, char *const argv[])
{
	char *dir = kt_tmpdir("waiter");

	w->out = kt_path(dir, "out");
	w->err = kt_path(dir, "err");
	free(dir);
	w->pid = fork();
	cr_assert(w->pid >= 0);
	if (w->pid == 0) {
		int o = open(w->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(w->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (o < 0 || e < 0)
			_exit(126);
		dup2(o, 1);
		dup2(e, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
}

/* Whether pid is blocked in poll(2) or ppoll(2) (/proc/PID/syscall). */
static bool in_poll(pid_t pid)
{
	char path[64], buf[64] = "";
	long nr = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f))
		nr = strtol(buf, NULL, 10);
	fclose(f);
#ifdef SYS_poll
	if (nr == SYS_poll)
		return true;
#endif
	return nr == SYS_ppoll;
}

/* Waits until w sleeps in poll; asserts it does within SLEEP_MS. */
static void waiter_asleep(struct waiter *w, const char *what)
{
	for (int ms = 0; !in_poll(w->pid); ms += 5) {
		int status;

		cr_assert(waitpid(w->pid, &status, WNOHANG) == 0,
			  "%s ended before it slept (status %d)", what, status);
		cr_assert(ms < SLEEP_MS, "%s never slept in poll", what);
		kt_sleep_ms(5);
	}
}

/* Waits for w to end: its exit status; its output in *ret_out. */
static int waiter_end(struct waiter *w, int ms, char **ret_out)
{
	int status = kt_wait_child(w->pid, ms);
	size_t len = 0;
	char *err;

	if (status == -1) {
		kill(w->pid, SIGKILL);
		waitpid(w->pid, &status, 0);
		cr_assert(false, "a waiter still runs after %d ms", ms);
	}
	err = kt_read_file(w->err, &len);
	kt_leak_record("waiter", err, len);
	free(err);
	*ret_out = kt_read_file(w->out, NULL);
	cr_assert(*ret_out, "no output file");
	free(w->out);
	free(w->err);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* keyfs ctl wait --mount M EXTRA... (NULL-terminated extras). */
static void ctl_wait_start(struct waiter *w, struct kt_mount *m, const char *a,
			   const char *b)
{
	char *const argv[] = {(char *)kt_keyfs(), "ctl",  "wait",
			      "--mount",	  m->mnt, (char *)a,
			      (char *)b,	  NULL};

	waiter_start(w, argv);
}

/*
 * keyfs ctl wait, asleep in poll, wakes after a rotation and prints the
 * new version (exit 0).  The time from the rotation's answer to its exit
 * is logged, not asserted.
 */
static void ctl_wait_wakes(const char *mode)
{
	struct kt_mount *m = start_mode(mode, mode);
	struct waiter w;
	uint32_t v = read_version(m);
	char *out = NULL, want[32];
	double t;
	int rc;

	ctl_wait_start(&w, m, "--timeout", "30");
	waiter_asleep(&w, "keyfs ctl wait");
	rotate_ok(m);
	t = now_s();
	rc = waiter_end(&w, WAKE_MS, &out);
	cr_log_info("%s: keyfs ctl wait ended %.1f ms after the rotation", mode,
		    (now_s() - t) * 1000);
	snprintf(want, sizeof(want), "%u\n", v + 1);
	cr_assert_eq(rc, 0, "%s: keyfs ctl wait exited %d", mode, rc);
	cr_assert_str_eq(out, want,
			 "%s: keyfs ctl wait printed another version", mode);
	free(out);
}

Test(notify, ctl_wait_wakes_audited, .timeout = 60)
{
	ctl_wait_wakes("audited");
}

Test(notify, ctl_wait_wakes_strict, .timeout = 60)
{
	ctl_wait_wakes("strict");
}

Test(notify, ctl_wait_wakes_cached, .timeout = 60)
{
	ctl_wait_wakes("cached");
}

/*
 * Without a change keyfs ctl wait sleeps until --timeout, then exits 124
 * and prints nothing; --from N returns at once when the version is no
 * longer N, and waits when it is.
 */
Test(notify, ctl_wait_times_out_without_a_change, .timeout = 60)
{
	static const char *const modes[] = {"audited", "strict", "cached"};

	for (size_t i = 0; i < 3; i++) {
		struct kt_mount *m = start_mode(modes[i], modes[i]);
		char from[32], *out = NULL, *err = NULL;
		uint32_t v = read_version(m);
		double t = now_s();
		int rc =
		    kt_runf(&out, &err, "%s ctl wait --timeout 1 --mount %s",
			    kt_keyfs(), m->mnt);

		cr_assert_eq(rc, TIMED_OUT, "%s: exit %d (%s)", modes[i], rc,
			     err);
		cr_assert(now_s() - t >= 0.9, "%s: returned before --timeout",
			  modes[i]);
		cr_assert_str_eq(out, "", "%s: printed on a time-out",
				 modes[i]);
		cr_assert(kt_contains(err, "unchanged"), "%s: %s", modes[i],
			  err);
		cr_assert_eq(read_version(m), v, "the version changed");
		free(out);
		free(err);

		snprintf(from, sizeof(from), "%u", v);
		rc = kt_runf(&out, &err,
			     "%s ctl wait --from %s --timeout 0.2 --mount %s",
			     kt_keyfs(), from, m->mnt);
		cr_assert_eq(rc, TIMED_OUT, "%s: --from the current version",
			     modes[i]);
		free(out);
		free(err);
		snprintf(from, sizeof(from), "%u", v > 1 ? v - 1 : v + 1);
		rc = kt_runf(&out, &err, "%s ctl wait --from=%s --mount %s",
			     kt_keyfs(), from, m->mnt);
		snprintf(from, sizeof(from), "%u\n", v);
		cr_assert_eq(rc, 0, "%s: --from another version: %s", modes[i],
			     err);
		cr_assert_str_eq(out, from, "%s: --from printed", modes[i]);
		free(out);
		free(err);
		cr_assert_eq(kt_mount_stop(m), 0);
	}
}

/* Bad options are usage errors (exit 2), and do not wait. */
Test(notify, ctl_wait_usage, .timeout = 30)
{
	static const char *const bad[] = {
	    "--timeout", "--timeout abc", "--timeout -1", "--timeout=",
	    "--from 0",	 "--from x",	  "extra",	  "--timeout 1 x"};
	struct kt_mount *m = start("waitusage", NULL);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *err = NULL;
		int rc = kt_runf(NULL, &err, "%s ctl wait %s --mount %s",
				 kt_keyfs(), bad[i], m->mnt);

		cr_assert_eq(rc, 2, "keyfs ctl wait %s: exit %d", bad[i], rc);
		cr_assert(kt_contains(err, "usage: keyfs ctl wait"), "%s: %s",
			  bad[i], err);
		free(err);
	}
}

/* Several waiters, on one mount, all wake after one rotation. */
Test(notify, every_waiter_wakes, .timeout = 90)
{
	enum { N = 8 };
	struct kt_mount *m = start("waiters", NULL);
	struct waiter w[N];
	uint32_t v = read_version(m);
	char want[32];

	for (int i = 0; i < N; i++)
		ctl_wait_start(&w[i], m, "--timeout", "60");
	for (int i = 0; i < N; i++)
		waiter_asleep(&w[i], "a waiter");
	rotate_ok(m);
	snprintf(want, sizeof(want), "%u\n", v + 1);
	for (int i = 0; i < N; i++) {
		char *out = NULL;
		int rc = waiter_end(&w[i], WAKE_MS, &out);

		cr_assert(rc == 0 && !strcmp(out, want),
			  "waiter %d: exit %d, printed \"%s\"", i, rc, out);
		free(out);
	}
}

/* --- the README's Python example ---------------------------------------- */

/*
 * The example, run as the README shows it, against a mount in each read
 * mode: asleep in poll, it returns the new version after a rotation, and
 * None after its time-out without one.
 */
static void python_example(const char *mode, const char *code)
{
	static const char driver[] =
	    "\nimport sys\n"
	    "print(wait_for_change(sys.argv[1], int(sys.argv[2])))\n";
	struct kt_mount *m = start_mode(mode, mode);
	char *prog, *out = NULL, want[32];
	struct waiter w;
	uint32_t v = read_version(m);
	int rc;

	cr_assert(asprintf(&prog, "%s%s", code, driver) > 0);
	{
		char *const argv[] = {"python3", "-c",	  prog,
				      m->mnt,	 "30000", NULL};

		waiter_start(&w, argv);
	}
	waiter_asleep(&w, "the Python example");
	rotate_ok(m);
	rc = waiter_end(&w, WAKE_MS, &out);
	snprintf(want, sizeof(want), "%u\n", v + 1);
	cr_assert_eq(rc, 0, "%s: python3 exited %d", mode, rc);
	cr_assert_str_eq(out, want, "%s: the example returned another version",
			 mode);
	free(out);
	{
		char *const argv[] = {"python3", "-c",	prog,
				      m->mnt,	 "500", NULL};

		waiter_start(&w, argv);
	}
	rc = waiter_end(&w, WAKE_MS, &out);
	cr_assert_eq(rc, 0, "%s: python3 exited %d", mode, rc);
	cr_assert_str_eq(out, "None\n", "%s: without a change", mode);
	free(out);
	free(prog);
	cr_assert_eq(kt_mount_stop(m), 0);
}

Test(notify, readme_python_example_wakes, .timeout = 120)
{
	char *code;

	if (kt_runf(NULL, NULL, "command -v python3 >/dev/null") != 0)
		cr_skip_test("python3 is not installed: the README's "
			     "select.poll example was not run");
	code = kt_readme_python("def wait_for_change");
	python_example("audited", code);
	python_example("strict", code);
	python_example("cached", code);
	free(code);
}
