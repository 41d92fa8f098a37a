/* SPDX-License-Identifier: MIT */
/*
 * lookups: which inodes the kernel holds, counted the way FUSE counts them
 * (every entry the daemon hands out is one lookup; FORGET gives them back).
 *
 * A change invalidates only what the kernel holds: an inode it never looked
 * up, or has forgotten, has no attributes or pages to drop, and a name in a
 * folder it does not hold cannot be cached either.  So a rotation costs
 * what the kernel holds, not what the tree could show (1,000 purposes).
 * The root is always held and never counted.
 *
 * Freshness rests on one order: a lookup is counted before the keyring its
 * reply describes is taken, and the invalidation thread asks after the
 * keyring was swapped.  Either the reply describes the new keyring, or the
 * count was there when the thread asked.
 */
#ifndef KF_LOOKUPS_H
#define KF_LOOKUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kf_lookups;

/* An empty table.  NULL: out of memory. */
struct kf_lookups *kf_lookups_new(void);
/* Frees l (NULL is fine); returns NULL. */
struct kf_lookups *kf_lookups_free(struct kf_lookups *l);

/*
 * Counts one lookup of ino.  0, or -ENOMEM (then nothing is counted, and
 * the caller must not hand the entry out).
 */
int kf_lookups_add(struct kf_lookups *l, uint64_t ino);

/* Gives back n lookups of ino (FORGET, or an entry that was not sent). */
void kf_lookups_forget(struct kf_lookups *l, uint64_t ino, uint64_t n);

/* Whether the kernel may hold ino: the root, or a count above zero. */
bool kf_lookups_held(struct kf_lookups *l, uint64_t ino);

/* How many inodes are held now (the root not counted). */
size_t kf_lookups_count(struct kf_lookups *l);

#endif
