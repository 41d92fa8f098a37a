/* SPDX-License-Identifier: MIT */
/*
 * audit_verify: verifying an audit log kept in segments (README: Audit) --
 * closed segments and the active file, from any folders, as one chain.
 *
 * A closed segment of the log whose active file is "audit.log" is called
 * "audit-<first seq>-<last seq>.log" (kf_audit_segment_name).  seq and chain
 * run on unbroken from one file to the next.  A closed segment ends with its
 * close record (event "audit_segment_close": segment = its own name,
 * first_seq, last_seq, reason); every segment after a rotation begins with
 * an open record (event "audit_segment_open": previous, previous_first_seq,
 * previous_last_seq, previous_chain = the chain of the previous segment's
 * last line), whose own chain is the MAC of previous_chain and its body.
 * Before retention deletes the oldest segments the writer records it
 * (event "audit_segment_delete": segments, first_seq, last_seq,
 * history_from_seq).  The first segment of a log starts at seq 1 from 32
 * zero bytes, without an open record.
 */
#ifndef KF_AUDIT_VERIFY_H
#define KF_AUDIT_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"

/* The most files one verification takes: each costs its name in memory. */
#define KF_AUDIT_VERIFY_FILES_MAX (1u << 20)

/* What a successful verification covered. */
struct kf_audit_verify_result {
	uint64_t records;	      /* lines verified */
	uint64_t files;		      /* files read, each once */
	uint64_t first_seq, last_seq; /* both 0 without records */
};

/*
 * Verifies the files at paths (n_paths of them) as one log, to the end of
 * each.  A folder stands for the files in it named active_base (the active
 * file's base name, e.g. "audit.log") or a closed segment's name for it; a
 * file given by name is taken whatever its name; the same file twice counts
 * once.  Memory: the list of files and one read buffer, whatever they hold.
 *
 * The files are put in the order of the seq of their first lines, and
 * checked: every line parses, its seq is one more than the line before and
 * its chain matches; between two files seq goes on, and the later begins
 * with an open record naming the earlier's close record and chain; a file
 * with a closed segment's name holds the range its name says and ends with
 * its own close record (so does any file that another follows).  If the
 * first file does not start at seq 1 it must begin with an open record (the
 * chain starts from its previous_chain) and a delete record among the files
 * must have history_from_seq equal to that first seq.  With anchor non-NULL
 * and anchor->seq > 0 the line with that seq must carry that chain; if the
 * files end before it, they were truncated (an anchor in the history deleted
 * by retention cannot be checked: the report says so).
 *
 * Returns 0 when every byte was read and checked, with a report of what was
 * checked: "ok: N records in K files (seq A-B); history before seq A
 * deleted by retention (FILE:LINE); end checked: seq X matches the sealed
 * anchor" (" in K files" only when K > 1; the history part only when A > 1;
 * the end part as kf_audit_verify says it).  Else a report naming the first
 * problem and:
 *   -EBADMSG  "FILE:LINE: reason" for a bad line (LINE counts from 1 in that
 *             file; a missing close record names the line after the last);
 *             "FILE:LINE: incomplete last line (a torn write, as a crash
 *             leaves; not tampering)" for the active file's torn end;
 *             "segment missing between FILE1 (ends at seq X) and FILE2
 *             (starts at seq Y)"; "FILE: its name says seq A-B but it holds
 *             seq C-D (renamed or swapped?)"; "FILE1 (seq A-B) and FILE2
 *             (starts at seq C) overlap ..."; "FILE: history before seq S is
 *             missing and no audit_segment_delete record accounts for it
 *             ..."; "FILE: truncated: the log ends at seq X but the sealed
 *             state saw seq Y";
 *   -EINVAL   "PATH: not a regular file" (a FIFO or device, never opened in
 *             a way that blocks);
 *   -ENOENT   a path missing, or a folder without any file of the log;
 *   -EAGAIN   a file replaced between listing and reading (a rotation while
 *             the daemon runs: run again);
 *   -E2BIG    more than KF_AUDIT_VERIFY_FILES_MAX files;
 *   other     "PATH: read: reason", "PATH: reason" (opendir), out of memory.
 * *ret_result (may be NULL) is written on success only.
 */
int kf_audit_verify_files(const char *const *paths, size_t n_paths,
			  const char *active_base,
			  const uint8_t key[KF_AUDIT_KEY_BYTES],
			  const struct kf_audit_anchor *anchor,
			  char report[KF_ERR_MAX],
			  struct kf_audit_verify_result *ret_result) KF_WUR;

#endif
