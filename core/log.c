// SPDX-License-Identifier: MIT
/* log: messages for people, to standard error (or the journal) and syslog. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "env.h"
#include "log.h"

static bool use_syslog;
static int stderr_level = LOG_DEBUG;
static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static bool to_journal; /* written once, under journal_once */

void kf_log_syslog(bool on)
{
	if (on && !use_syslog)
		openlog("keyfs", LOG_PID | LOG_NDELAY, LOG_AUTHPRIV);
	use_syslog = on;
}

void kf_log_stderr_level(int prio)
{
	stderr_level = prio;
}

static const char *prio_name(int prio)
{
	switch (prio) {
	case LOG_EMERG:
	case LOG_ALERT:
	case LOG_CRIT:
		return "alert: ";
	case LOG_ERR:
		return "error: ";
	case LOG_WARNING:
		return "warning: ";
	default:
		return "";
	}
}

/*
 * Whether standard error is a stream to journald: systemd sets
 * JOURNAL_STREAM to "DEVICE:INODE" of the stream it connects standard
 * output and error to.  A descriptor that was redirected since (a log
 * file, /dev/null after detaching) has another device or inode, so the
 * variable alone, inherited by a child, is not enough.
 */
static void journal_check(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int end = 0;

	if (!v || sscanf(v, "%llu:%llu%n", &dev, &ino, &end) != 2 || v[end])
		return;
	if (fstat(STDERR_FILENO, &st) < 0)
		return;
	to_journal = (unsigned long long)st.st_dev == dev &&
		     (unsigned long long)st.st_ino == ino;
}

/* Whether standard error is journald's stream; checked once. */
static bool to_journal_stream(void)
{
	pthread_once(&journal_once, journal_check);
	return to_journal;
}

/*
 * One message to journald's stream: every line starts with "<N>", the
 * syslog priority, which journald takes off and stores as the entry's
 * priority (SyslogLevelPrefix=, on by default).  The stream already names
 * the unit and the process, so there is no "keyfs: " before the text.
 */
static void journal_write(int prio, const char *text)
{
	int level = LOG_PRI(prio);

	flockfile(stderr);
	for (;;) {
		const char *nl = strchr(text, '\n');
		int len = nl ? (int)(nl - text) : (int)strlen(text);

		fprintf(stderr, "<%d>%.*s\n", level, len, text);
		if (!nl)
			break;
		text = nl + 1;
	}
	funlockfile(stderr);
}

void kf_log(int prio, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (prio <= stderr_level) {
		if (to_journal_stream())
			journal_write(prio, line);
		else
			fprintf(stderr, "keyfs: %s%s\n", prio_name(prio), line);
	}
	if (use_syslog)
		syslog(prio, "%s", line);
}

/*
 * The reaper of one alert child: waits for the pid that the spawning
 * thread posts (<= 0: nothing was spawned), so the child never stays a zombie
 * and the caller never waits for it.  Made before the spawn, so that a
 * child is never started without one.
 */
struct reaper {
	sem_t posted;
	pid_t pid; /* written before sem_post, read after sem_wait */
};

static void *reap(void *arg)
{
	struct reaper *r = arg;

	while (sem_wait(&r->posted) < 0 && errno == EINTR)
		;
	if (r->pid > 0)
		while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
			;
	sem_destroy(&r->posted);
	free(r);
	return NULL;
}

static struct reaper *reaper_start(void)
{
	struct reaper *r = calloc(1, sizeof(*r));
	pthread_attr_t attr;
	pthread_t t;
	int e;

	if (!r || sem_init(&r->posted, 0, 0) < 0) {
		free(r);
		kf_log(LOG_ERR, "alert_command: out of memory");
		return NULL;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	e = pthread_create(&t, &attr, reap, r);
	pthread_attr_destroy(&attr);
	if (e != 0) {
		kf_log(LOG_ERR, "alert_command: thread: %s", strerror(e));
		sem_destroy(&r->posted);
		free(r);
		return NULL;
	}
	return r;
}

/*
 * posix_spawn of /bin/sh -c command in a session of its own (so a signal
 * to the daemon's group does not reach it), with no signal blocked and
 * SIGPIPE at its default (the daemon blocks its stop signals and ignores
 * SIGPIPE; a shell should not inherit that), stdin from fd and the clean
 * environment.  The pid, or -errno.
 */
static pid_t spawn_shell(const char *command, int fd)
{
	char *argv[] = {"/bin/sh", "-c", (char *)command, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, pipe_only;
	pid_t pid = -1;
	int e;

	sigemptyset(&none);
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	e = posix_spawn_file_actions_adddup2(&fa, fd, STDIN_FILENO);
	if (e == 0)
		e = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID |
							POSIX_SPAWN_SETSIGMASK |
							POSIX_SPAWN_SETSIGDEF);
	if (e == 0)
		e = posix_spawnattr_setsigmask(&attr, &none);
	if (e == 0)
		e = posix_spawnattr_setsigdefault(&attr, &pipe_only);
	/* A clean environment: the daemon's may have held keys. */
	if (e == 0)
		e = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv,
				kf_env_child());
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return e == 0 ? pid : -e;
}

/*
 * A pipe whose read end holds text, whole, and whose write end is closed:
 * the reader gets the text and then end of file.  Written before any
 * reader exists, so no SIGPIPE, and never blocking (O_NONBLOCK): text
 * that does not fit the pipe's buffer (64 KiB; an alert is a few KiB) is
 * refused rather than cut.  The read end (close-on-exec), or -errno.
 */
static int pipe_holding(const char *text, size_t len)
{
	int fds[2], r = 0;
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(fds[1], F_SETFL, O_NONBLOCK) < 0)
		r = -errno;
	else if (len > 0 && (n = write(fds[1], text, len)) != (ssize_t)len)
		r = n < 0 && errno != EAGAIN ? -errno : -EMSGSIZE;
	close(fds[1]);
	if (r < 0) {
		close(fds[0]);
		return r;
	}
	return fds[0];
}

void kf_log_run_alert(const char *command, const char *text)
{
	struct reaper *r;
	int fd;

	if (!command || !*command)
		return;
	fd = pipe_holding(text ? text : "", text ? strlen(text) : 0);
	if (fd < 0) {
		kf_log(LOG_ERR, "alert_command: pipe: %s", strerror(-fd));
		return;
	}
	r = reaper_start();
	if (r) {
		r->pid = spawn_shell(command, fd);
		if (r->pid < 0)
			kf_log(LOG_ERR, "alert_command: spawn: %s",
			       strerror(-r->pid));
		sem_post(&r->posted); /* r is the reaper's from here */
	}
	close(fd);
}
