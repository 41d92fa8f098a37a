/* SPDX-License-Identifier: MIT */
/*
 * archives: the names of the backups/ entries (DESIGN.md §5), for the tree.
 *
 * A name gets a slot when an archive file of that name is seen -- never for
 * a name that does not exist -- and keeps it while the file exists.  The
 * tree makes the entry's node from (slot, generation): a slot reused for
 * another name gets a new generation, so an inode always means one name.
 * Names whose file is gone leave the table when a call notices, and in a
 * sweep before the table grows, so it holds about the archives that exist;
 * never more than KF_ARCHIVES_MAX.  Thread-safe: one lock inside.
 */
#ifndef KF_ARCHIVES_H
#define KF_ARCHIVES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup.h"

/* Names held at most: above config's backup_keep limit of 100,000. */
#define KF_ARCHIVES_MAX (1u << 18)
#define KF_ARCHIVES_SUFFIX ".json"
/* An archive's file name with its NUL: a backup name and the suffix. */
#define KF_ARCHIVES_NAME_MAX (KF_BACKUP_NAME_MAX + sizeof(KF_ARCHIVES_SUFFIX))

struct kf_archives;

/* A table of names of files in dir (copied).  NULL when out of memory. */
struct kf_archives *kf_archives_new(const char *dir);
/* Frees a (NULL is fine); returns NULL. */
struct kf_archives *kf_archives_free(struct kf_archives *a);

/*
 * The slot of `name` when it is an archive's file name (a backup name +
 * ".json") and a file of that name exists now; a new slot if the name had
 * none.  0 and *ret_slot, *ret_gen.  -ENOENT for another name or when there
 * is no such file (the name leaves the table), -ENOSPC when KF_ARCHIVES_MAX
 * names of existing files are held.
 */
int kf_archives_lookup(struct kf_archives *a, const char *name,
		       uint32_t *ret_slot, uint32_t *ret_gen);

/*
 * Like kf_archives_lookup for a name the caller has just seen listed: its
 * file is not checked again (its name is).
 */
int kf_archives_add(struct kf_archives *a, const char *name, uint32_t *ret_slot,
		    uint32_t *ret_gen);

/* Drops every name whose file is gone: what a listing does first. */
void kf_archives_sweep(struct kf_archives *a);

/*
 * Whether (slot, gen) still names an archive file that exists; when it
 * does not, the name leaves the table.
 */
bool kf_archives_exists(struct kf_archives *a, uint32_t slot, uint32_t gen);

/*
 * The name (slot, gen) holds, copied into buf (KF_ARCHIVES_NAME_MAX bytes).
 * -ENOENT when the slot is free or holds another name now.
 */
int kf_archives_name(struct kf_archives *a, uint32_t slot, uint32_t gen,
		     char buf[KF_ARCHIVES_NAME_MAX]);

/* How many names the table holds, and how many slots it has allocated. */
void kf_archives_count(struct kf_archives *a, size_t *ret_names,
		       size_t *ret_slots);

#endif
