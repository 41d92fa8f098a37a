/* SPDX-License-Identifier: MIT */
/*
 * audit_window: one audit record per burst of opens (README: Audit,
 * "Volume, shipping and disk space").
 *
 * Opens of the same key file by the same caller -- the FUSE request's pid
 * (a thread id), uid and gid, and the path -- within one window of
 * audit_open_window seconds are recorded once, with a count:
 *
 *   - the first open of a window is recorded before it is answered, through
 *     the sink's `first` (fail closed: when that fails, so does the open);
 *   - a later open within the window is only counted, in memory: a hash
 *     lookup under one shard's short lock, no I/O;
 *   - once the window has ended (kf_window_flush, from a background thread a
 *     few times per window, or at stop with `all`), a window that counted
 *     repeats is written through the sink's `repeat`.  One that cannot be
 *     written is kept and tried again: a counted open is never dropped.
 *
 * The table holds at most KF_WINDOW_MAX windows; when a shard of it is full
 * the opens that would need a new window are recorded one by one, as with
 * no window at all.
 *
 * Library code: it never logs and knows nothing of the log's format.  The
 * sink's calls are serialised (one at a time, under the table's write
 * lock), never made under a shard's lock.
 */
#ifndef KF_AUDIT_WINDOW_H
#define KF_AUDIT_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "event.h"
#include "util.h"

#define KF_WINDOW_SHARDS 16
#define KF_WINDOW_MAX                                                          \
	4096 /* windows held at once, KF_WINDOW_MAX / SHARDS                   \
	      * per shard */

struct kf_window;

/* A closed window whose repeats are to be recorded. */
struct kf_window_repeat {
	struct kf_caller who;
	const char *path;   /* valid during the sink's call */
	uint64_t count;	    /* opens after the first */
	uint64_t first_seq; /* the seq the window's first open was given */
	int64_t from_ms;    /* wall clock of the first open, ms */
	int64_t to_ms;	    /* ... and of the last repeat, ms */
};

/* Where records go (the manager's audit log; a fake in tests). */
struct kf_window_sink {
	/* Records the first open of a window; its seq in *ret_seq. */
	int (*first)(void *ctx, const struct kf_caller *who, const char *path,
		     uint64_t *ret_seq, char err[KF_ERR_MAX]);
	/* Records a window's repeats. */
	int (*repeat)(void *ctx, const struct kf_window_repeat *rep,
		      char err[KF_ERR_MAX]);
	void *ctx;
};

/* A moment, on both clocks: windows are timed on the monotonic one. */
struct kf_window_time {
	int64_t mono_ms;
	int64_t wall_ms;
};

/* Fills t with the present moment; returns t. */
const struct kf_window_time *kf_window_now(struct kf_window_time *t);

/*
 * A table of windows window_ms long (> 0), writing through sink (copied).
 * 0 and *ret, or -ENOMEM.
 */
int kf_window_new(int64_t window_ms, const struct kf_window_sink *sink,
		  struct kf_window **ret) KF_WUR;

/* Frees w (NULL is fine) and any window still held, unrecorded: flush
 * first.  Returns NULL. */
struct kf_window *kf_window_free(struct kf_window *w);

#define KF_WINDOW_RECORDED 0 /* the open was recorded (the sink's first) */
#define KF_WINDOW_COUNTED 1  /* the open was counted in its window */

/*
 * One open of path by who at `now`: KF_WINDOW_COUNTED when a window of
 * the same caller and path is open, else records it (through the sink,
 * after recording the caller's previous window on that path if it still
 * holds repeats) and opens a window: KF_WINDOW_RECORDED.  -errno with err
 * (from the sink) when a record could not be written: refuse the open.
 */
int kf_window_open(struct kf_window *w, const struct kf_caller *who,
		   const char *path, const struct kf_window_time *now,
		   char err[KF_ERR_MAX]) KF_WUR;

/*
 * Records every window that has ended by `now` (with `all`: every window,
 * ended or not; after that the table is closed and each open is recorded
 * on its own) and forgets it.  0, or the -errno of the first record that
 * failed (err says why); those windows are kept for the next call, and
 * *ret_unwritten (may be NULL) counts the opens they hold.
 */
int kf_window_flush(struct kf_window *w, const struct kf_window_time *now,
		    bool all, uint64_t *ret_unwritten,
		    char err[KF_ERR_MAX]) KF_WUR;

/* What status shows of the table. */
struct kf_window_stats {
	uint64_t held;	   /* windows in the table now */
	uint64_t counted;  /* opens counted (not recorded one by one) */
	uint64_t records;  /* key_open_repeat records written */
	uint64_t overflow; /* opens recorded one by one: the table was full */
};
void kf_window_stats(struct kf_window *w, struct kf_window_stats *ret);

#endif
