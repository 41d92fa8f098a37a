// SPDX-License-Identifier: MIT
/* log: messages for people, to standard error and syslog. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "env.h"
#include "log.h"

static bool use_syslog;
static int stderr_level = LOG_DEBUG;

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

void kf_log(int prio, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (prio <= stderr_level)
		fprintf(stderr, "keyfs: %s%s\n", prio_name(prio), line);
	if (use_syslog)
		syslog(prio, "%s", line);
}

void kf_log_run_alert(const char *command, const char *text)
{
	int fds[2];
	pid_t pid;
	size_t len = text ? strlen(text) : 0;

	if (!command || !*command)
		return;
	if (pipe2(fds, O_CLOEXEC) < 0) {
		kf_log(LOG_ERR, "alert_command: pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid < 0) {
		kf_log(LOG_ERR, "alert_command: fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0) {
		/* Double fork: the daemon never waits on a slow command. */
		if (fork() != 0)
			_exit(0);
		char *argv[] = {"sh", "-c", (char *)command, NULL};

		setsid();
		dup2(fds[0], 0);
		/* A clean environment: the daemon's may have held keys. */
		execve("/bin/sh", argv, kf_env_child());
		_exit(127);
	}
	close(fds[0]);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	/* A record is far smaller than a pipe buffer: this never blocks. */
	if (len > 0 && write(fds[1], text, len) < 0)
		kf_log(LOG_ERR, "alert_command: write: %s", strerror(errno));
	close(fds[1]);
}
