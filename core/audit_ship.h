/* SPDX-License-Identifier: MIT */
/*
 * audit_ship: every audit line, also to syslog (audit_syslog = yes).
 *
 * Each line -- the same JSON as in the log, without its newline -- goes as
 * one datagram on an AF_UNIX SOCK_DGRAM socket connected to
 * audit_syslog_socket (/dev/log: journald or rsyslog), in the RFC 3164
 * form they take there:
 *
 *   <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG
 *
 * PRI is the facility with severity info, or notice for a failure's record
 * ("success":false); the time is local, as syslog(3) writes it.
 *
 * kf_ship_line never blocks and never fails: it sends with MSG_DONTWAIT,
 * and a line that cannot be sent (the receiver is slow, gone, or was never
 * there) is counted as dropped.  A socket whose receiver went away is
 * closed and connected again on a later line, at most once a second.
 *
 * kf_ship_line is the audit log's line hook (kf_audit_on_line): its calls
 * are serialised by the log's lock, which protects the socket; the
 * counters may be read by any thread at any time.  Library code: it never
 * logs.
 */
#ifndef KF_AUDIT_SHIP_H
#define KF_AUDIT_SHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

struct kf_ship;

/*
 * A shipper to the socket at path (connected now if it can be, else
 * later), with facility (LOG_AUTHPRIV ...) and tag.  A socket that is
 * missing is no error.  0 and *ret; -ENAMETOOLONG (path does not fit a
 * socket address) or -ENOMEM, with err.
 */
int kf_ship_new(const char *path, int facility, const char *tag,
		struct kf_ship **ret, char err[KF_ERR_MAX]) KF_WUR;

/* Closes the socket and frees s (NULL is fine); returns NULL.  Unhook it
 * from the log first. */
struct kf_ship *kf_ship_free(struct kf_ship *s);

/* Sends one line (len bytes, a trailing "\n" is left out); ctx is the
 * struct kf_ship.  A kf_audit_line_fn. */
void kf_ship_line(void *ctx, const char *line, size_t len);

struct kf_ship_stats {
	uint64_t sent;	  /* lines the socket took */
	uint64_t dropped; /* lines not sent */
	int last_error;	  /* errno of the last drop; 0: none yet */
};
void kf_ship_stats(struct kf_ship *s, struct kf_ship_stats *ret);

/*
 * The RFC 3164 head of a line, "<PRI>Mmm dd hh:mm:ss TAG[PID]: ", for
 * time t (local time) into buf (cap bytes, KF_SHIP_HEAD_MAX is enough);
 * its length.
 */
#define KF_SHIP_HEAD_MAX 96
size_t kf_ship_head(char *buf, size_t cap, int pri, int64_t t, const char *tag,
		    pid_t pid);

/* The severity of a line: LOG_NOTICE for a failure's record, else
 * LOG_INFO. */
int kf_ship_severity(const char *line, size_t len);

#endif
