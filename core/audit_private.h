/* SPDX-License-Identifier: MIT */
/*
 * audit_private: what the two parts of the audit module share.  Other
 * modules include audit.h only.
 *
 *   audit.c       the writer: open (continuing the chain), append, anchored
 *                 append, sync, anchor, close
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
