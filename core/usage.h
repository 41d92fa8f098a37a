/* SPDX-License-Identifier: MIT */
/*
 * usage: who read which key version lately -- the usage table behind
 * usage-aware retire (README: Usage-aware retire).
 *
 * One row per (version, purpose, uid, via a key set or not): when that
 * uid last opened it and how often.  `what` is a purpose name for a derived
 * key, "" for the data key.  The table has a fixed number of rows; when
 * it is full, the row read longest ago gives its place to the new one (so
 * what was read within any window survives as long as fewer rows than the
 * cap were read since).  It locks itself; it holds no key byte, only
 * numbers and purpose names.
 */
#ifndef KF_USAGE_H
#define KF_USAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "key.h"

/* The rows a daemon keeps: about 64 bytes each. */
#define KF_USAGE_ROWS_MAX 4096

/* One row: a reader of a version. */
struct kf_usage_row {
	uint32_t version;
	uid_t uid;
	bool via_set; /* through keys/<purpose>, which holds every version */
	char what[KF_PURPOSE_MAX + 1]; /* purpose; "": the data key */
	int64_t last;		       /* seconds since the epoch */
	uint64_t opens;		       /* since the row was made */
};

struct kf_usage;

/* A table of at most max_rows rows (1 or more).  NULL: out of memory. */
struct kf_usage *kf_usage_new(size_t max_rows);

/* Frees u (NULL is fine); returns NULL. */
struct kf_usage *kf_usage_free(struct kf_usage *u);

/*
 * Notes that uid opened version's key for `what` (a purpose, or "" or NULL
 * for the data key) at time now, through a key set if via_set.  Never
 * fails: a full table evicts the row read longest ago.
 */
void kf_usage_note(struct kf_usage *u, uint32_t version, const char *what,
		   bool via_set, uid_t uid, int64_t now);

/*
 * The most recent read of version at or after `since`: 1 and *ret, or 0
 * when there was none.  Reads through a key set count.
 */
int kf_usage_last(struct kf_usage *u, uint32_t version, int64_t since,
		  struct kf_usage_row *ret);

/*
 * version's reads at or after `since` as a new JSON object:
 * {"last_read": RFC 3339 or null, "last_uid": uid or null, "uids": [the
 * uids that opened one of its files directly, ascending], "set_uids":
 * [those that read it through keys/<purpose>]}.  NULL: out of memory.
 */
json_t *kf_usage_json(struct kf_usage *u, uint32_t version, int64_t since);

/* Drops every row of version (retired: nothing left to read). */
void kf_usage_forget(struct kf_usage *u, uint32_t version);

/* How many rows are in use (for tests and SIGUSR1). */
size_t kf_usage_rows(struct kf_usage *u);

#endif
