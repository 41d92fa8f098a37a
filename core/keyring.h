/* SPDX-License-Identifier: MIT */
/*
 * keyring: an immutable, reference-counted set of key versions (DESIGN.md §3).
 *
 * A keyring is never changed once built: rotate, retire and trim return a new
 * keyring, so a reader that holds a reference sees one consistent set of keys
 * however long it keeps it.  Key bytes live in sodium_malloc memory and are
 * wiped when the last reference goes.  Reference counting is atomic; any
 * thread may ref/unref.
 *
 * Entries are kept newest first.  The current version is entry 0.  The
 * keyring also remembers the highest version number it ever issued, so a
 * number is never issued twice (kf_keyring_rotate goes above it), and the
 * numbers it retired, so that a restore of an older archive cannot quietly
 * bring a destroyed key back (kf_keyring_adopt_retired).
 *
 * A keyring may also hold one staged entry (README: Staged rotation): the
 * next version, made by kf_keyring_stage and numbered above every number
 * issued, which is not current and not among the entries (count, at and
 * find do not see it; kf_keyring_staged and kf_keyring_lookup do) until
 * kf_keyring_promote makes it current, or kf_keyring_abort destroys it and
 * remembers its number as retired.  Trim keeps it and does not count it.
 */
#ifndef KF_KEYRING_H
#define KF_KEYRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "key.h"
#include "util.h"

#define KF_KEYRING_MAX_VERSIONS 1024
#define KF_KEYRING_MAX_RETIRED 65536 /* retired numbers remembered */

struct kf_keyring;

struct kf_keyring_entry {
	uint32_t version;
	int64_t created;    /* seconds since the epoch */
	const uint8_t *key; /* KF_KEY_BYTES, owned by the keyring */
};

/*
 * A keyring holding one version made of key (copied), with `created`.
 * `highest` is the highest version ever issued (>= version).
 */
int kf_keyring_new(uint32_t version, const uint8_t key[KF_KEY_BYTES],
		   int64_t created, uint32_t highest,
		   struct kf_keyring **ret) KF_WUR;

/* Adds a reference; returns kr. */
struct kf_keyring *kf_keyring_ref(struct kf_keyring *kr);

/* Drops a reference (NULL is fine); frees and wipes on the last.  NULL. */
struct kf_keyring *kf_keyring_unref(struct kf_keyring *kr);

/*
 * Import (DESIGN.md §4): current key at `version`, and previous (may be
 * NULL) at version - 1 (when version > 1; a previous key with version 1 is
 * refused with -EINVAL).  Both stamped `created`.
 */
int kf_keyring_import(const uint8_t cur[KF_KEY_BYTES], const uint8_t *prev,
		      uint32_t version, int64_t created,
		      struct kf_keyring **ret, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Rotation: a new keyring whose current entry is a fresh key (generated with
 * kf_key_generate, checked to differ from every key held) numbered
 * highest + 1, created `now`, followed by all entries of kr.  Nothing is
 * dropped here: call kf_keyring_trim afterwards.  -EOVERFLOW if the version
 * counter is exhausted, -E2BIG if kr already holds KF_KEYRING_MAX_VERSIONS,
 * -EBUSY if kr holds a staged entry (promote or abort it first).
 */
int kf_keyring_rotate(const struct kf_keyring *kr, int64_t now,
		      struct kf_keyring **ret) KF_WUR;

/*
 * Staging: a new keyring like kr plus a staged entry, a fresh key (checked
 * to differ from every key held) numbered highest + 1 (the new highest),
 * created `now`; current stays.  -EBUSY if kr holds a staged entry
 * already, -EOVERFLOW if the version counter is exhausted.
 */
int kf_keyring_stage(const struct kf_keyring *kr, int64_t now,
		     struct kf_keyring **ret) KF_WUR;

/*
 * A new keyring whose current entry is kr's staged one (keeping its
 * created time), followed by all entries of kr; nothing staged.  Nothing
 * is dropped: call kf_keyring_trim afterwards.  -ENOENT when nothing is
 * staged, -E2BIG when kr holds KF_KEYRING_MAX_VERSIONS.
 */
int kf_keyring_promote(const struct kf_keyring *kr,
		       struct kf_keyring **ret) KF_WUR;

/*
 * A new keyring like kr without its staged entry, whose key bytes are not
 * copied and whose number is remembered as retired (never issued again:
 * highest stays).  -ENOENT when nothing is staged.
 */
int kf_keyring_abort(const struct kf_keyring *kr,
		     struct kf_keyring **ret) KF_WUR;

/* The staged entry, or NULL.  Valid while kr is held. */
const struct kf_keyring_entry *kf_keyring_staged(const struct kf_keyring *kr);

/* The entry of `version` among the entries or the staged one, or NULL. */
const struct kf_keyring_entry *kf_keyring_lookup(const struct kf_keyring *kr,
						 uint32_t version);

/*
 * A new keyring holding only the `retain` newest entries of kr (retain >= 1)
 * and its staged entry, if any.
 * *ret is a new reference even when nothing was dropped.
 */
int kf_keyring_trim(const struct kf_keyring *kr, unsigned retain,
		    struct kf_keyring **ret) KF_WUR;

/*
 * A new keyring without version `version`, whose key bytes are not copied,
 * and which remembers `version` as retired.  -EBUSY if it is the current
 * or the staged version, -ENOENT if not held, -E2BIG when
 * KF_KEYRING_MAX_RETIRED numbers are already remembered.
 */
int kf_keyring_retire(const struct kf_keyring *kr, uint32_t version,
		      struct kf_keyring **ret) KF_WUR;

/* A new keyring like kr but remembering highest = max(kr's, highest). */
int kf_keyring_raise_highest(const struct kf_keyring *kr, uint32_t highest,
			     struct kf_keyring **ret) KF_WUR;

/* Whether kr remembers `version` as retired. */
bool kf_keyring_is_retired(const struct kf_keyring *kr, uint32_t version);
/* The retired numbers, ascending: count, and number i (0 past the end). */
size_t kf_keyring_retired_count(const struct kf_keyring *kr);
uint32_t kf_keyring_retired_at(const struct kf_keyring *kr, size_t i);

/*
 * For a restore: kr (from an archive) as it may be adopted by a keyring
 * `from` that has retired some numbers since.  Without force, every entry
 * of kr that `from` retired is left out (kf_keyring_is_retired(from, v)
 * names them; kr's staged entry too), and if that is kr's current version
 * the restore is refused: -EBUSY.  With force
 * every entry is kept and is no longer retired.  The result remembers the
 * retired numbers of both and the higher `highest`.
 */
int kf_keyring_adopt_retired(const struct kf_keyring *kr,
			     const struct kf_keyring *from, bool force,
			     struct kf_keyring **ret) KF_WUR;

size_t kf_keyring_count(const struct kf_keyring *kr);
/* Entry i (0 = current); NULL when i >= count. Valid while kr is held. */
const struct kf_keyring_entry *kf_keyring_at(const struct kf_keyring *kr,
					     size_t i);
/* The entry of `version`, or NULL. */
const struct kf_keyring_entry *kf_keyring_find(const struct kf_keyring *kr,
					       uint32_t version);

/*
 * Entry i of kr's decryption set -- every key a reader needs to decrypt
 * what any retained version encrypted, in the order to try them: the
 * current one first, then the staged one if any (kf_keyring_staged), then
 * the older ones, newest first -- or NULL when i is past its end.
 * keys/<purpose> lists it, and a read of it counts as a read of each.  Valid
 * while kr is held.
 */
const struct kf_keyring_entry *
kf_keyring_decryption_at(const struct kf_keyring *kr, size_t i);

uint32_t kf_keyring_current_version(const struct kf_keyring *kr);
uint32_t kf_keyring_highest(const struct kf_keyring *kr);

/*
 * Serialises kr to a little-endian binary blob (magic "KFKR", format 2,
 * highest, count, then per entry version, created, key, then the number of
 * retired versions and each, ascending; format 1 lacks the retired list and
 * is still read).  A keyring with a staged entry is written as format 3:
 * format 2 followed by a count (1) and the staged entry (version, created,
 * key); without one it stays format 2, which older daemons read.  *ret_buf is
 * sodium_malloc'd (free with sodium_free).
 */
int kf_keyring_encode(const struct kf_keyring *kr, uint8_t **ret_buf,
		      size_t *ret_len) KF_WUR;

/*
 * Parses a blob made by kf_keyring_encode, checking every field (magic,
 * format, count bounds, exact length, versions strictly decreasing, highest
 * >= every version).  -EBADMSG with a reason in err on any defect.
 */
int kf_keyring_decode(const uint8_t *buf, size_t len, struct kf_keyring **ret,
		      char err[KF_ERR_MAX]) KF_WUR;

#endif
