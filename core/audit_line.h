/* SPDX-License-Identifier: MIT */
/*
 * audit_line: reading the log's lines, shared by audit_read.c (one file:
 * the writer's scan at open, kf_audit_verify) and audit_verify.c (a log in
 * segments).  Other modules include audit.h or audit_verify.h.
 *
 * The reader holds KF_AUDIT_READ_BUF bytes whatever a file holds: a line
 * longer than KF_AUDIT_LINE_MAX is never held whole.  (getline(3) grew its
 * buffer to the length of the line, and the ENOMEM it then returned looked
 * like end of file.)
 */
#ifndef KF_AUDIT_LINE_H
#define KF_AUDIT_LINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"

/* Bytes asked of read(2) at a time: several lines, so few calls. */
#define KF_AUDIT_READ_BUF (8 * KF_AUDIT_LINE_MAX)

struct kf_audit_reader {
	int fd;
	char *buf;	   /* KF_AUDIT_READ_BUF bytes */
	size_t start, end; /* unread bytes: buf[start, end) */
	bool eof;
};

/* One line from kf_audit_reader_next. */
struct kf_audit_line {
	const char *text; /* in the reader's buffer; NULL if overlong */
	size_t len;	  /* bytes consumed, "\n" included if any */
	bool complete;	  /* ends with "\n"; else the file ended first */
};

/* Allocates rd's buffer (0 or -ENOMEM); no file yet. */
int kf_audit_reader_init(struct kf_audit_reader *rd) KF_WUR;

/* Starts reading fd (the caller's; not closed) from its current offset. */
void kf_audit_reader_start(struct kf_audit_reader *rd, int fd);

/* Frees rd's buffer (twice is fine). */
void kf_audit_reader_done(struct kf_audit_reader *rd);

/*
 * The next line: 1 with *ret filled in, 0 at the end of the file, or -errno
 * on a read error (never taken for the end).  A line longer than
 * KF_AUDIT_LINE_MAX has no text; with skip_long it is consumed, else it is
 * left where it is (the caller stops reading).
 */
int kf_audit_reader_next(struct kf_audit_reader *rd, bool skip_long,
			 struct kf_audit_line *ret) KF_WUR;

/*
 * Parses one line (len without its "\n", less than KF_AUDIT_LINE_MAX): a
 * JSON object with a positive integer seq that ends with the chain field.
 * 0 with its seq and chain, and with ret_root non-NULL the parsed object
 * (the caller's reference); or -EBADMSG with *why set to a reason.
 */
int kf_audit_parse_line(const char *line, size_t len, uint64_t *ret_seq,
			uint8_t ret_chain[KF_AUDIT_CHAIN_BYTES],
			json_t **ret_root, const char **why) KF_WUR;

#endif
