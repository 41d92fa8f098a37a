/* SPDX-License-Identifier: MIT */
/*
 * audit_space: the free-space alarm of the audit log's file system
 * (audit_min_free).
 *
 * kf_space_measure reads the free percentage of a folder's file system
 * (one statvfs: the blocks an unprivileged writer may still use, of all);
 * kf_space_update decides what to say about it: an alert when it first
 * falls below the threshold, again each KF_SPACE_REPEAT_S while it stays
 * low, and one when it recovers.  The caller measures (at start, then
 * every KF_SPACE_CHECK_S) and alerts.  Library code: it never logs.
 */
#ifndef KF_AUDIT_SPACE_H
#define KF_AUDIT_SPACE_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define KF_SPACE_CHECK_S 60
#define KF_SPACE_REPEAT_S 3600

/* What the caller should say after a measurement. */
enum kf_space_event {
	KF_SPACE_QUIET,	    /* nothing new */
	KF_SPACE_LOW,	    /* fell below the threshold */
	KF_SPACE_STILL_LOW, /* still below, an hour after the last alert */
	KF_SPACE_RECOVERED, /* back at or above it */
};

/* One file system watched; the caller's (it locks it if shared). */
struct kf_space {
	unsigned min_free; /* percent; 0 = off */
	bool measured;	   /* percent holds a measurement */
	unsigned percent;  /* free, rounded down */
	bool low;	   /* percent < min_free */
	int64_t alerted;   /* seconds (any clock) of the last low alert */
};

/* s watching for min_free percent (0: never low). */
void kf_space_init(struct kf_space *s, unsigned min_free);

/*
 * The free percentage, rounded down, of the file system holding dir.
 * 0 and *ret_percent, or -errno with err.
 */
int kf_space_measure(const char *dir, unsigned *ret_percent,
		     char err[KF_ERR_MAX]) KF_WUR;

/* Takes a measurement made at now (seconds): what to say about it. */
enum kf_space_event kf_space_update(struct kf_space *s, unsigned percent,
				    int64_t now);

#endif
