/* SPDX-License-Identifier: MIT */
/*
 * log: the daemon's and the command's messages for people.
 *
 * Messages go to standard error, and to syslog (facility LOG_AUTHPRIV) once
 * kf_log_syslog(true) was called.  Only the manager and main log; the other
 * core modules return an errno and a reason instead.  Nothing logged may
 * contain key material.
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
 * Runs `command` with /bin/sh -c, detached (the caller never waits for it),
 * with `text` on its standard input.  NULL or empty command: nothing.
 */
void kf_log_run_alert(const char *command, const char *text);

#endif
