/* SPDX-License-Identifier: MIT */
/*
 * audit_private: what the two parts of the audit module share.  Other
 * modules include audit.h only.
 *
 *   audit.c       the writer: open (continuing the chain from the active
 *                 segment's last line), append, anchored append, sync,
 *                 anchor, close
 *   audit_rotate.c   closing the active segment, starting the next,
 *                 retention, and finishing a rotation a crash cut short
 *   audit_tail.c  reading a segment's first and last lines only
 *   audit_read.c  the reader: the chain MAC, the bounded line reader, line
 *                 parsing, the scan of a whole file, kf_audit_verify
 *   audit_segment.c  closed segments' names
 *
 * The writer makes lines with kf_audit_chain_mac and the KF_AUDIT_CHAIN_*
 * layout below; open reads the existing file with kf_audit_scan_file, the
 * same pass kf_audit_verify makes.
 */
#ifndef KF_AUDIT_PRIVATE_H
#define KF_AUDIT_PRIVATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "audit.h"

#define KF_AUDIT_CHAIN_HEX (2 * KF_AUDIT_CHAIN_BYTES)
#define KF_AUDIT_CHAIN_HEAD ",\"chain\":\""
#define KF_AUDIT_CHAIN_HEAD_LEN (sizeof(KF_AUDIT_CHAIN_HEAD) - 1)
/* `,"chain":"<64 hex>"}` at the end of every line (before its "\n"). */
#define KF_AUDIT_CHAIN_SUFFIX_LEN                                              \
	(KF_AUDIT_CHAIN_HEAD_LEN + KF_AUDIT_CHAIN_HEX + 2)

/*
 * The writer's state.  Lock order: rot_lock, then lock.  Appends take only
 * lock, so an audited open never waits for a rotation's fsyncs; the active
 * file (fd) changes only with both held, so a holder of either sees it
 * stay.
 */
struct kf_audit {
	pthread_mutex_t lock;
	pthread_mutex_t rot_lock; /* rotations, retention, kf_audit_sync */
	int fd;			  /* the active segment, O_APPEND */
	int dirfd;		  /* its folder; read-only after open */
	off_t size; /* bytes of complete lines; protected by lock */
	/* A failed write left bytes past size that could not be cut off
	 * yet; protected by lock. */
	bool dirty;
	struct kf_audit_anchor anchor; /* protected by lock */
	uint64_t seg_first;  /* the active segment's first seq (0: empty);
				protected by lock */
	int64_t seg_started; /* its first record's time; protected by lock */
	int64_t retry_at;    /* no automatic rotation before this (monotonic
				seconds); protected by lock */
	uint8_t *key;	     /* sodium_malloc'd; read-only after open */
	char *path;	     /* for messages; read-only after open */
	char *base;	     /* the active file's name in dirfd */
	struct kf_audit_limits limits; /* protected by lock */
	uint64_t sealed_seq;	     /* the state's anchor; protected by lock */
	struct kf_audit_stats stats; /* protected by lock */
	char rotate_error[KF_ERR_MAX]; /* last automatic rotation's failure;
					  protected by lock */
	kf_audit_line_fn on_line;      /* protected by lock */
	void *on_line_ctx;	       /* protected by lock */
};

/* A formatted line and the anchor it leaves once written. */
struct kf_audit_pending {
	char *line; /* malloc'd, with "\n" */
	size_t len;
	struct kf_audit_anchor anchor;
};

/*
 * Formats record as the line after prev (the writer adds timestamp, seq
 * and chain).  0, or -errno with the reason.
 */
int kf_audit_format(const struct kf_audit *a,
		    const struct kf_audit_anchor *prev, json_t *record,
		    struct kf_audit_pending *ret, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Appends one formatted line to the active segment with a single write();
 * call with a->lock held.  On failure cuts the file back so no partial
 * line remains.
 */
int kf_audit_write(struct kf_audit *a, const char *line, size_t len, bool sync,
		   char err[KF_ERR_MAX]) KF_WUR;

/* After a line was written: the anchor, the hook, the segment's start. */
void kf_audit_committed(struct kf_audit *a, const struct kf_audit_pending *p);

/* The last complete line of fd (size bytes), when it parses. */
struct kf_audit_tail {
	uint64_t seq;
	uint8_t chain[KF_AUDIT_CHAIN_BYTES];
	off_t good_end; /* just after it; bytes past it are a torn line */
	char event[32]; /* its "event", or "" */
	char segment[KF_AUDIT_NAME_MAX]; /* a close record's "segment" */
	uint64_t first_seq;		 /* ... and its "first_seq" */
	/* With a key: whether its chain could be checked against the line
	 * before it (in the window, or the start of the chain), and held. */
	bool checked, chain_ok;
};

/*
 * Reads only the end of fd: 1 and *ret when the last complete line (and
 * the torn bytes after it, if any) fit in a bounded window and parse; 0
 * when they do not (the caller reads the whole file); -errno on a read
 * error.  An empty file: 1 with seq 0.  With key (may be NULL), the last
 * line's chain is checked against the line before it when that is in the
 * window too (a wrong master key, an edited last line).
 */
int kf_audit_read_tail(int fd, off_t size, const uint8_t *key,
		       struct kf_audit_tail *ret) KF_WUR;

/* The seq and time of fd's first line: 0 with both, or -EBADMSG. */
int kf_audit_read_head(int fd, uint64_t *ret_seq, int64_t *ret_time) KF_WUR;

/*
 * At open, before the active file is opened: when it is missing but closed
 * segments are there (a crash between closing one and starting the next),
 * starts the active segment after the newest of them.  0 or -errno.
 */
int kf_audit_recover_missing(struct kf_audit *a, char err[KF_ERR_MAX]) KF_WUR;

/*
 * At open, after the active file's tail was read: finishes a rotation a
 * crash cut short (the active file ends with its close record, or is
 * missing while closed segments exist) and counts the closed segments.
 * Call before any thread uses a.  0 or -errno.
 */
int kf_audit_recover(struct kf_audit *a, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Rotates when the limits say so and the last failure is a second old;
 * call without a's locks.  A failure is kept in a->rotate_error and counted;
 * the append goes on into the active segment.
 */
void kf_audit_rotate_auto(struct kf_audit *a);

/* Digits of each seq in a closed segment's name. */
#define KF_AUDIT_SEQ_DIGITS 16

/*
 * The name of the closed segment holding seq first..last of the log whose
 * active file is called active_base ("audit.log" gives
 * "audit-0000000000000001-0000000000000042.log").  0 or -ENAMETOOLONG.
 */
int kf_audit_segment_name(const char *active_base, uint64_t first,
			  uint64_t last, char out[KF_AUDIT_NAME_MAX]) KF_WUR;

/* Whether name is a closed segment's name for active_base; its range. */
bool kf_audit_segment_parse(const char *active_base, const char *name,
			    uint64_t *ret_first, uint64_t *ret_last);

/*
 * chain = BLAKE2b-256(key, prev || prefix || "}"), where prefix is a line's
 * body without its final '}' (prefix_len bytes) and prev the chain before.
 */
void kf_audit_chain_mac(const uint8_t *key, const uint8_t *prev,
			const char *prefix, size_t prefix_len,
			uint8_t out[KF_AUDIT_CHAIN_BYTES]);

/* State of one pass over a log file, shared by open and verify. */
struct kf_audit_scan {
	const uint8_t *key;
	const struct kf_audit_anchor *anchor; /* may be NULL */
	uint64_t lines;			      /* complete lines read */
	off_t good_end; /* offset just after the last complete line */
	bool torn;	/* the file ends with a line without "\n" */
	/* First problem found; verification stops advancing after it. */
	bool bad;
	char reason[KF_ERR_MAX];
	uint64_t next_seq;
	uint8_t prev[KF_AUDIT_CHAIN_BYTES];
	bool anchor_seen, anchor_match;
	/* The last line that parses, whether or not it verifies. */
	bool have_last;
	struct kf_audit_anchor last;
};

/*
 * Reads the file at fd, from its current offset, line by line (in bounded
 * memory) into s, whose key and anchor the caller sets.  With stop_at_bad,
 * stops at the first bad line; else reads past bad and overlong lines to
 * the end.  Returns 0, or -errno on a read error.
 */
int kf_audit_scan_file(int fd, struct kf_audit_scan *s,
		       bool stop_at_bad) KF_WUR;

#endif
