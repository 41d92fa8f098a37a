/* SPDX-License-Identifier: MIT */
/*
 * audit: the tamper-evident audit log (DESIGN.md §6).
 *
 * One JSON object per line.  The module writes "timestamp" (RFC 3339 UTC)
 * and "seq" first, then the caller's fields in order, then "chain" last:
 *
 *   body_n  = the compact JSON of the record without "chain"
 *   chain_n = BLAKE2b-256(key = audit key, chain_{n-1} || body_n),
 *             chain_0 = 32 zero bytes
 *   line_n  = body_n with `,"chain":"<64 hex>"` inserted before its final
 *             '}', then "\n"
 *
 * so a verifier recovers body_n from line_n by text alone.  seq starts at 1
 * and grows by one per line.  The last (seq, chain) -- the anchor -- is kept
 * in the sealed state by the manager, so truncation is detected too.
 *
 * One kf_audit is shared by all threads; appends are serialised inside.
 *
 * Implemented in audit.c (the writer) and audit_read.c (reading and
 * verifying); audit_private.h is what they share.
 */
#ifndef KF_AUDIT_H
#define KF_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define KF_AUDIT_CHAIN_BYTES 32
#define KF_AUDIT_KEY_BYTES 32 /* the chain's MAC key (master subkey 3) */
/*
 * The longest line, "\n" included.  The writer refuses a longer record, and
 * a reader takes a longer line for a bad one ("line longer than 8192
 * bytes") without ever holding it whole: reading a log takes bounded memory
 * whatever the file holds.
 */
#define KF_AUDIT_LINE_MAX 8192

struct kf_audit;

struct kf_audit_anchor {
	uint64_t seq; /* 0 = empty log */
	uint8_t chain[KF_AUDIT_CHAIN_BYTES];
};

/*
 * Opens (creating, 0600) the log at path -- the active segment -- for
 * appending.  Anything but a regular file at path when it is opened -- a
 * FIFO or device swapped in after any earlier check, a symbolic link
 * (-ELOOP) -- is refused without blocking.  Reads only the end of the
 * existing file, through the same descriptor, to continue its chain from
 * the last complete line (a torn last line left by a crash is cut off), so
 * opening takes the same time whatever the log's size; checking the whole
 * chain is kf_audit_verify's.  Only when the last line does not parse (or
 * is longer than a line may be) is the whole file read, and *ret_broken
 * set so the caller can alert; the chain then continues from the last line
 * that parses.  A rotation a crash cut short is finished (audit_rotate.c).
 * A read error fails the open.
 */
int kf_audit_open(const char *path, const uint8_t key[KF_AUDIT_KEY_BYTES],
		  struct kf_audit **ret, bool *ret_broken,
		  char err[KF_ERR_MAX]) KF_WUR;

/* Closes the log (NULL is fine); returns NULL. */
struct kf_audit *kf_audit_close(struct kf_audit *a);

/*
 * Appends record (a JSON object; not stolen) as one line.  With `sync` the
 * line is on disk (fdatasync) before it returns.  On any failure (full disk,
 * read-only file system) nothing of the line remains in the file (it is
 * truncated back) and the chain does not advance.
 */
int kf_audit_append(struct kf_audit *a, json_t *record, bool sync,
		    char err[KF_ERR_MAX]) KF_WUR;

/*
 * For management operations, whose sealed state must hold the anchor of
 * their own record without making readers wait for the disk: appends record
 * like kf_audit_append without sync and returns the anchor its line left;
 * kf_audit_sync then makes it, and every line before it, durable.  The lock
 * is held only for the write(2), never across an fsync.  A failed
 * kf_audit_sync cannot take the line back (others may follow it): the
 * caller must record the failure in a line of its own.
 */
int kf_audit_append_anchored(struct kf_audit *a, json_t *record,
			     struct kf_audit_anchor *ret_anchor,
			     char err[KF_ERR_MAX]) KF_WUR;
int kf_audit_sync(struct kf_audit *a, char err[KF_ERR_MAX]) KF_WUR;

/* The anchor after the last line written. */
void kf_audit_anchor(struct kf_audit *a, struct kf_audit_anchor *ret);

/* --- segments (README: Audit) ----------------------------------------- */

/* Why a segment was closed: its close record's "reason". */
enum kf_audit_close_reason {
	KF_AUDIT_CLOSE_SIZE,	/* audit_max_size reached */
	KF_AUDIT_CLOSE_TIME,	/* audit_rotate elapsed */
	KF_AUDIT_CLOSE_REQUEST, /* control/audit-rotate, keyfs ctl */
};

/* How segments are closed and kept; 0 turns a limit off. */
struct kf_audit_limits {
	uint64_t max_size; /* close the active segment at this size */
	int64_t max_age;   /* ... or when it is this many seconds old */
	unsigned keep;	   /* closed segments kept; 0 = all */
};

/*
 * The sealed state now holds the anchor at seq: retention never deletes
 * the segment holding it (or any later one), so verify can always check
 * the log's end against the state.
 */
void kf_audit_set_sealed(struct kf_audit *a, uint64_t seq);

/* Sets a's limits (before or after open; the next append applies them). */
void kf_audit_set_limits(struct kf_audit *a,
			 const struct kf_audit_limits *limits);

/*
 * Closes the active segment now (who: the caller's fields for the close
 * record, may be NULL) and starts the next one (retention is
 * kf_audit_retain's).  0 and the closed segment's name in *ret_name (may be
 * NULL; KF_AUDIT_NAME_MAX bytes), or -errno with nothing changed: the active
 * segment keeps growing.
 */
#define KF_AUDIT_NAME_MAX 256
int kf_audit_rotate(struct kf_audit *a, enum kf_audit_close_reason why,
		    json_t *who, char *ret_name, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Deletes the oldest closed segments beyond `keep` (kf_audit_set_limits),
 * after an audit_segment_delete record (synced) names them; never the
 * segment holding the sealed anchor (kf_audit_set_sealed) or a later one.
 * 0 or -errno (what was deleted stays deleted, and was recorded).
 */
int kf_audit_retain(struct kf_audit *a, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Closes the active segment if it is older than max_age (a clock tick: an
 * idle log still rotates).  0 (nothing due, or done) or -errno.
 */
int kf_audit_rotate_if_due(struct kf_audit *a, char err[KF_ERR_MAX]) KF_WUR;

/* What status shows of the log. */
struct kf_audit_stats {
	uint64_t active_bytes;	  /* the active segment's size */
	uint64_t closed;	  /* closed segments in the folder */
	int64_t active_since;	  /* the active segment's first record */
	uint64_t rotations;	  /* segments closed since open */
	uint64_t rotate_failures; /* automatic rotations that failed */
	uint64_t write_failures;  /* appends refused since open */
};
void kf_audit_stats(struct kf_audit *a, struct kf_audit_stats *ret);

/*
 * Called with every line written, in seq order, under the log's lock: it
 * must not block (audit_syslog sends with MSG_DONTWAIT).  fn NULL: none.
 */
typedef void (*kf_audit_line_fn)(void *ctx, const char *line, size_t len);
void kf_audit_on_line(struct kf_audit *a, kf_audit_line_fn fn, void *ctx);

/*
 * Moves the log whose active file is path -- that file and its closed
 * segments -- into the folder `folder` (a name, created 0700 beside it;
 * may exist), for a log that can no longer be verified (break-glass
 * recovery: its master key is lost).  *ret_moved counts the files moved.
 * 0 or -errno (what was moved stays moved).
 */
int kf_audit_set_aside(const char *path, const char *folder, size_t *ret_moved,
		       char err[KF_ERR_MAX]) KF_WUR;

/* What kf_audit_rekey did. */
struct kf_audit_rekey_result {
	uint64_t files;	    /* files of the log, each checked */
	uint64_t rewritten; /* of them, rechained by this call */
	uint64_t records;   /* complete lines in them */
};

/*
 * Master-key rotation of the log whose active file is path (keyfs rekey;
 * call with no writer open, the state lock held): its closed segments,
 * oldest first, then the active file.  A file whose every line already
 * chains under new_key (from the previous file's last line, or from its
 * own start for the oldest file kept) is left as it is; any other must
 * chain under old_key from its own start, and is rewritten: every line
 * keeps its bytes but for its "chain", computed under new_key, and an open
 * record's "previous_chain", which names the previous file's new last
 * chain.  Each file is replaced atomically (temporary ".NAME.rekey",
 * fsync, rename, fsync of the folder), so after a crash every file chains
 * under one key or the other and a new call finishes.  A torn last line
 * is left out.  old_key NULL: every file must be new already.  0 with
 * *ret, or -errno with err naming the file and line that opens under
 * neither key.
 */
int kf_audit_rekey(const char *path, const uint8_t *old_key,
		   const uint8_t new_key[KF_AUDIT_KEY_BYTES],
		   struct kf_audit_rekey_result *ret,
		   char err[KF_ERR_MAX]) KF_WUR;

/*
 * Verifies the whole file at path, to its end: every line parses, seq runs
 * 1, 2, 3..., every chain matches.  When `anchor` is non-NULL and
 * anchor->seq > 0, the line with that seq must exist and carry that chain
 * (else the log was truncated or replaced).
 *
 * Returns 0 only when every byte was read and checked, with a report that
 * says what was checked: "ok: N records (seq 1-N); end checked: seq A
 * matches the sealed anchor", or "...; end not checked against the sealed
 * anchor" when anchor is NULL (or "...: the sealed state holds no anchor"
 * for seq 0).  Else -EBADMSG with "PATH: line N: reason" naming the first
 * bad line (an overlong one too) or "PATH: truncated: ..."; -EINVAL at once
 * for anything but a regular file (FIFO, device, directory); or the errno of
 * a failed open or read ("PATH: read: ...").  *ret_lines (may be NULL) gets
 * the number of complete lines read.
 */
int kf_audit_verify(const char *path, const uint8_t key[KF_AUDIT_KEY_BYTES],
		    const struct kf_audit_anchor *anchor,
		    char report[KF_ERR_MAX], uint64_t *ret_lines) KF_WUR;

#endif
