/* SPDX-License-Identifier: MIT */
/*
 * log: the daemon's and the command's messages for people.
 *
 * Messages go to standard error, and to syslog (facility LOG_AUTHPRIV) once
 * kf_log_syslog(true) was called.  On standard error a message reads
 * "keyfs: error: TEXT"; when standard error is journald's stream (systemd's
 * JOURNAL_STREAM names it), it reads "<3>TEXT" instead, which journald
 * stores as TEXT at priority 3.  That is checked once, at the first message.
 *
 * Only the manager and main log; the other core modules return an errno and
 * a reason instead.  Nothing logged may contain key material.
 */
#ifndef KF_LOG_H
#define KF_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* Also send messages to syslog (the daemon, once started). */
void kf_log_syslog(bool on);

/* Silences standard error output below `prio` (LOG_WARNING: quiet). */
void kf_log_stderr_level(int prio);

/* Logs one line at syslog priority prio (LOG_ALERT ... LOG_DEBUG). */
void kf_log(int prio, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Runs `command` with /bin/sh -c (posix_spawn), detached: in a session of
 * its own, with the clean child environment (env.h), and `text` on its
 * standard input (a pipe that already holds it, then end of file).  The
 * caller never waits for it: a thread made for each command reaps it, so
 * none is left a zombie and SIGCHLD keeps its disposition.  Failures are
 * logged.  NULL or empty command: nothing.
 */
void kf_log_run_alert(const char *command, const char *text);

#endif
