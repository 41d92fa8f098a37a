// SPDX-License-Identifier: MIT
/* keyring: immutable, reference-counted sets of key versions. */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keyring.h"

#define KR_MAGIC "KFKR"
#define KR_FORMAT_V1 1u	    /* no retired list */
#define KR_FORMAT 2u	    /* written: the retired list follows the entries */
#define KR_FORMAT_STAGED 3u /* written with a staged entry: it follows */
#define KR_HEADER_LEN 16u   /* magic, format, highest, count */
#define KR_ENTRY_LEN (4u + 8u + KF_KEY_BYTES) /* version, created, key */

struct kf_keyring {
	atomic_uint_fast32_t refs;
	uint32_t highest;
	uint32_t *retired; /* ascending, malloc'd (NULL when none) */
	size_t n_retired;
	size_t count;
	bool has_staged;		/* staged: the key after the entries' */
	struct kf_keyring_entry staged; /* when has_staged */
	uint8_t *keys; /* (count + has_staged) * KF_KEY_BYTES, sodium_malloc,
			* read-only */
	struct kf_keyring_entry entries[];
};

static struct kf_keyring *kr_free(struct kf_keyring *kr)
{
	if (!kr)
		return NULL;
	if (kr->keys)
		sodium_free(kr->keys); /* wipes */
	free(kr->retired);
	free(kr);
	return NULL;
}

/*
 * Gives dst the retired list of src (may be NULL) plus `extra` (0: none),
 * less every version dst holds.  0 or -ENOMEM / -E2BIG.
 */
static int kr_set_retired(struct kf_keyring *dst, const uint32_t *src, size_t n,
			  uint32_t extra)
{
	size_t cap = n + (extra != 0), k = 0;
	bool added = extra == 0;

	if (cap > KF_KEYRING_MAX_RETIRED)
		return -E2BIG;
	if (cap == 0)
		return 0;
	dst->retired = malloc(cap * sizeof(*dst->retired));
	if (!dst->retired)
		return -ENOMEM;
	for (size_t i = 0; i <= n; i++) {
		uint32_t v = i < n ? src[i] : UINT32_MAX;

		if (!added && extra <= v) {
			if (!kf_keyring_lookup(dst, extra))
				dst->retired[k++] = extra;
			added = true;
			if (extra == v)
				continue;
		}
		if (i < n && !kf_keyring_lookup(dst, v))
			dst->retired[k++] = v;
	}
	dst->n_retired = k;
	return 0;
}

/*
 * A keyring with room for count entries, and a staged one when staged,
 * whose key slots are writable until kr_seal.  Entry key pointers are set;
 * versions and times are the caller's.
 */
static struct kf_keyring *kr_alloc(size_t count, uint32_t highest, bool staged)
{
	struct kf_keyring *kr;

	if (count == 0 || count > KF_KEYRING_MAX_VERSIONS)
		return NULL;
	kr = calloc(1, sizeof(*kr) + count * sizeof(kr->entries[0]));
	if (!kr)
		return NULL;
	kr->keys = sodium_malloc((count + staged) * KF_KEY_BYTES);
	if (!kr->keys)
		return kr_free(kr);
	atomic_init(&kr->refs, 1);
	kr->highest = highest;
	kr->count = count;
	for (size_t i = 0; i < count; i++)
		kr->entries[i].key = kr->keys + i * KF_KEY_BYTES;
	kr->has_staged = staged;
	if (staged)
		kr->staged.key = kr->keys + count * KF_KEY_BYTES;
	return kr;
}

static uint8_t *kr_slot(struct kf_keyring *kr, size_t i)
{
	return kr->keys + i * KF_KEY_BYTES;
}

static void kr_copy_entry(struct kf_keyring *dst, size_t di,
			  const struct kf_keyring_entry *src)
{
	dst->entries[di].version = src->version;
	dst->entries[di].created = src->created;
	memcpy(kr_slot(dst, di), src->key, KF_KEY_BYTES);
}

/* dst (allocated with a staged slot when src has one) gets src's. */
static void kr_copy_staged(struct kf_keyring *dst, const struct kf_keyring *src)
{
	if (!src->has_staged)
		return;
	dst->staged.version = src->staged.version;
	dst->staged.created = src->staged.created;
	memcpy(kr_slot(dst, dst->count), src->staged.key, KF_KEY_BYTES);
}

/* The keyring never changes again: a stray write now faults. */
static struct kf_keyring *kr_seal(struct kf_keyring *kr)
{
	(void)sodium_mprotect_readonly(kr->keys);
	return kr;
}

/* nk's entries from `at` on: the first n of src's. */
static void kr_copy_entries(struct kf_keyring *nk, size_t at,
			    const struct kf_keyring *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kr_copy_entry(nk, at + i, &src->entries[i]);
}

/*
 * The last step of making nk from kr: kr's retired list (plus extra, 0:
 * none), then sealed into *ret.  nk is freed on failure: -ENOMEM, -E2BIG.
 */
static int kr_finish(struct kf_keyring *nk, const struct kf_keyring *kr,
		     uint32_t extra, struct kf_keyring **ret)
{
	int r = kr_set_retired(nk, kr->retired, kr->n_retired, extra);

	if (r < 0) {
		kr_free(nk);
		return r;
	}
	*ret = kr_seal(nk);
	return 0;
}

int kf_keyring_new(uint32_t version, const uint8_t key[KF_KEY_BYTES],
		   int64_t created, uint32_t highest, struct kf_keyring **ret)
{
	struct kf_keyring *kr;

	if (!key || version == 0 || highest < version)
		return -EINVAL;
	kr = kr_alloc(1, highest, false);
	if (!kr)
		return -ENOMEM;
	kr->entries[0].version = version;
	kr->entries[0].created = created;
	memcpy(kr_slot(kr, 0), key, KF_KEY_BYTES);
	*ret = kr_seal(kr);
	return 0;
}

struct kf_keyring *kf_keyring_ref(struct kf_keyring *kr)
{
	if (kr)
		atomic_fetch_add_explicit(&kr->refs, 1, memory_order_relaxed);
	return kr;
}

struct kf_keyring *kf_keyring_unref(struct kf_keyring *kr)
{
	if (!kr)
		return NULL;
	/* acq_rel: every holder's reads happen before the free. */
	if (atomic_fetch_sub_explicit(&kr->refs, 1, memory_order_acq_rel) == 1)
		kr_free(kr);
	return NULL;
}

int kf_keyring_import(const uint8_t cur[KF_KEY_BYTES], const uint8_t *prev,
		      uint32_t version, int64_t created,
		      struct kf_keyring **ret, char err[KF_ERR_MAX])
{
	struct kf_keyring *kr;

	if (!cur) {
		kf_err_set(err, "no current key to import");
		return -EINVAL;
	}
	if (version == 0) {
		kf_err_set(err, "key version must be a positive integer");
		return -EINVAL;
	}
	if (prev && version == 1) {
		kf_err_set(err, "a previous key needs a current version above "
				"1 (its version would be 0)");
		return -EINVAL;
	}
	if (prev && sodium_memcmp(prev, cur, KF_KEY_BYTES) == 0) {
		kf_err_set(err,
			   "the previous key is the same as the current key");
		return -EINVAL;
	}
	kr = kr_alloc(prev ? 2 : 1, version, false);
	if (!kr) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kr->entries[0].version = version;
	kr->entries[0].created = created;
	memcpy(kr_slot(kr, 0), cur, KF_KEY_BYTES);
	if (prev) {
		kr->entries[1].version = version - 1;
		kr->entries[1].created = created;
		memcpy(kr_slot(kr, 1), prev, KF_KEY_BYTES);
	}
	*ret = kr_seal(kr);
	return 0;
}

static bool kr_holds_key(const struct kf_keyring *kr, const uint8_t *key)
{
	for (size_t i = 0; i < kr->count; i++)
		if (sodium_memcmp(kr->entries[i].key, key, KF_KEY_BYTES) == 0)
			return true;
	return kr->has_staged &&
	       sodium_memcmp(kr->staged.key, key, KF_KEY_BYTES) == 0;
}

/* A fresh key in nk's slot i, unlike every key kr holds. */
static void kr_fresh_key(struct kf_keyring *nk, size_t i,
			 const struct kf_keyring *kr)
{
	/* Generated in place, so the new key never sits on the stack. */
	do
		kf_key_generate(kr_slot(nk, i));
	while (kr_holds_key(kr, kr_slot(nk, i)));
}

int kf_keyring_rotate(const struct kf_keyring *kr, int64_t now,
		      struct kf_keyring **ret)
{
	struct kf_keyring *st = NULL;
	int r;

	if (kr->has_staged)
		return -EBUSY;
	/* One step: staged and promoted at once. */
	r = kf_keyring_stage(kr, now, &st);
	if (r == 0)
		r = kf_keyring_promote(st, ret);
	kf_keyring_unref(st);
	return r;
}

int kf_keyring_trim(const struct kf_keyring *kr, unsigned retain,
		    struct kf_keyring **ret)
{
	struct kf_keyring *nk;
	size_t n;

	if (retain < 1)
		return -EINVAL;
	n = retain < kr->count ? retain : kr->count;
	nk = kr_alloc(n, kr->highest, kr->has_staged);
	if (!nk)
		return -ENOMEM;
	kr_copy_entries(nk, 0, kr, n);
	kr_copy_staged(nk, kr);
	return kr_finish(nk, kr, 0, ret);
}

int kf_keyring_retire(const struct kf_keyring *kr, uint32_t version,
		      struct kf_keyring **ret)
{
	struct kf_keyring *nk;
	size_t j = 0;

	if (version == kr->entries[0].version ||
	    (kr->has_staged && version == kr->staged.version))
		return -EBUSY;
	if (!kf_keyring_find(kr, version))
		return -ENOENT;
	nk = kr_alloc(kr->count - 1, kr->highest, kr->has_staged);
	if (!nk)
		return -ENOMEM;
	for (size_t i = 0; i < kr->count; i++)
		if (kr->entries[i].version != version)
			kr_copy_entry(nk, j++, &kr->entries[i]);
	kr_copy_staged(nk, kr);
	/* Remembered, so a restore cannot quietly bring it back. */
	return kr_finish(nk, kr, version, ret);
}

int kf_keyring_raise_highest(const struct kf_keyring *kr, uint32_t highest,
			     struct kf_keyring **ret)
{
	struct kf_keyring *nk;

	nk = kr_alloc(kr->count, highest > kr->highest ? highest : kr->highest,
		      kr->has_staged);
	if (!nk)
		return -ENOMEM;
	kr_copy_entries(nk, 0, kr, kr->count);
	kr_copy_staged(nk, kr);
	return kr_finish(nk, kr, 0, ret);
}

int kf_keyring_stage(const struct kf_keyring *kr, int64_t now,
		     struct kf_keyring **ret)
{
	struct kf_keyring *nk;

	if (kr->has_staged)
		return -EBUSY;
	if (kr->highest == UINT32_MAX)
		return -EOVERFLOW;
	nk = kr_alloc(kr->count, kr->highest + 1, true);
	if (!nk)
		return -ENOMEM;
	kr_copy_entries(nk, 0, kr, kr->count);
	kr_fresh_key(nk, nk->count, kr);
	nk->staged.version = kr->highest + 1;
	nk->staged.created = now;
	return kr_finish(nk, kr, 0, ret);
}

int kf_keyring_promote(const struct kf_keyring *kr, struct kf_keyring **ret)
{
	struct kf_keyring *nk;

	if (!kr->has_staged)
		return -ENOENT;
	if (kr->count >= KF_KEYRING_MAX_VERSIONS)
		return -E2BIG;
	nk = kr_alloc(kr->count + 1, kr->highest, false);
	if (!nk)
		return -ENOMEM;
	kr_copy_entry(nk, 0, &kr->staged);
	kr_copy_entries(nk, 1, kr, kr->count);
	return kr_finish(nk, kr, 0, ret);
}

int kf_keyring_abort(const struct kf_keyring *kr, struct kf_keyring **ret)
{
	struct kf_keyring *nk;

	if (!kr->has_staged)
		return -ENOENT;
	nk = kr_alloc(kr->count, kr->highest, false);
	if (!nk)
		return -ENOMEM;
	kr_copy_entries(nk, 0, kr, kr->count);
	/* Remembered, so a restore cannot quietly bring it back. */
	return kr_finish(nk, kr, kr->staged.version, ret);
}

const struct kf_keyring_entry *kf_keyring_staged(const struct kf_keyring *kr)
{
	return kr->has_staged ? &kr->staged : NULL;
}

const struct kf_keyring_entry *kf_keyring_lookup(const struct kf_keyring *kr,
						 uint32_t version)
{
	const struct kf_keyring_entry *e = kf_keyring_find(kr, version);

	if (!e && kr->has_staged && kr->staged.version == version)
		e = &kr->staged;
	return e;
}

bool kf_keyring_is_retired(const struct kf_keyring *kr, uint32_t version)
{
	for (size_t i = 0; i < kr->n_retired; i++)
		if (kr->retired[i] == version)
			return true;
	return false;
}

size_t kf_keyring_retired_count(const struct kf_keyring *kr)
{
	return kr->n_retired;
}

uint32_t kf_keyring_retired_at(const struct kf_keyring *kr, size_t i)
{
	return i < kr->n_retired ? kr->retired[i] : 0;
}

int kf_keyring_adopt_retired(const struct kf_keyring *kr,
			     const struct kf_keyring *from, bool force,
			     struct kf_keyring **ret)
{
	struct kf_keyring *nk;
	size_t n = 0, k = 0;
	uint32_t *merged;
	bool staged;
	int r;

	for (size_t i = 0; i < kr->count; i++)
		n += force ||
		     !kf_keyring_is_retired(from, kr->entries[i].version);
	if (!force && kf_keyring_is_retired(from, kr->entries[0].version))
		return -EBUSY;
	/* An aborted staged version is retired: it stays gone likewise. */
	staged = kr->has_staged &&
		 (force || !kf_keyring_is_retired(from, kr->staged.version));
	nk = kr_alloc(n,
		      kr->highest > from->highest ? kr->highest : from->highest,
		      staged);
	if (!nk)
		return -ENOMEM;
	for (size_t i = 0; i < kr->count; i++) {
		uint32_t v = kr->entries[i].version;

		if (force || !kf_keyring_is_retired(from, v))
			kr_copy_entry(nk, k++, &kr->entries[i]);
	}
	if (staged)
		kr_copy_staged(nk, kr);
	/* Both lists, ascending and without repeats. */
	merged =
	    malloc((kr->n_retired + from->n_retired + 1) * sizeof(*merged));
	if (!merged) {
		kr_free(nk);
		return -ENOMEM;
	}
	n = 0;
	for (size_t i = 0, j = 0; i < kr->n_retired || j < from->n_retired;) {
		uint32_t a = i < kr->n_retired ? kr->retired[i] : UINT32_MAX;
		uint32_t b =
		    j < from->n_retired ? from->retired[j] : UINT32_MAX;

		merged[n++] = a < b ? a : b;
		i += a <= b;
		j += b <= a;
	}
	r = kr_set_retired(nk, merged, n, 0);
	free(merged);
	if (r < 0) {
		kr_free(nk);
		return r;
	}
	*ret = kr_seal(nk);
	return 0;
}

size_t kf_keyring_count(const struct kf_keyring *kr)
{
	return kr->count;
}

const struct kf_keyring_entry *kf_keyring_at(const struct kf_keyring *kr,
					     size_t i)
{
	return i < kr->count ? &kr->entries[i] : NULL;
}

const struct kf_keyring_entry *
kf_keyring_decryption_at(const struct kf_keyring *kr, size_t i)
{
	const struct kf_keyring_entry *staged = kf_keyring_staged(kr);

	/* The entries are kept current first, then by falling version; the
	 * staged one (records made on a node that promoted it first) second. */
	if (i == 0 || !staged)
		return kf_keyring_at(kr, i);
	return i == 1 ? staged : kf_keyring_at(kr, i - 1);
}

const struct kf_keyring_entry *kf_keyring_find(const struct kf_keyring *kr,
					       uint32_t version)
{
	for (size_t i = 0; i < kr->count; i++)
		if (kr->entries[i].version == version)
			return &kr->entries[i];
	return NULL;
}

uint32_t kf_keyring_current_version(const struct kf_keyring *kr)
{
	return kr->entries[0].version;
}

uint32_t kf_keyring_highest(const struct kf_keyring *kr)
{
	return kr->highest;
}

int kf_keyring_encode(const struct kf_keyring *kr, uint8_t **ret_buf,
		      size_t *ret_len)
{
	size_t len = KR_HEADER_LEN + kr->count * KR_ENTRY_LEN + 4 +
		     kr->n_retired * 4 +
		     (kr->has_staged ? 4 + KR_ENTRY_LEN : 0);
	uint8_t *buf, *p;

	buf = sodium_malloc(len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, KR_MAGIC, 4);
	/* Format 2 when nothing is staged: older daemons read it. */
	kf_le_put32(buf + 4, kr->has_staged ? KR_FORMAT_STAGED : KR_FORMAT);
	kf_le_put32(buf + 8, kr->highest);
	kf_le_put32(buf + 12, (uint32_t)kr->count);
	p = buf + KR_HEADER_LEN;
	for (size_t i = 0; i < kr->count; i++, p += KR_ENTRY_LEN) {
		kf_le_put32(p, kr->entries[i].version);
		kf_le_put64(p + 4, (uint64_t)kr->entries[i].created);
		memcpy(p + 12, kr->entries[i].key, KF_KEY_BYTES);
	}
	kf_le_put32(p, (uint32_t)kr->n_retired);
	for (size_t i = 0; i < kr->n_retired; i++)
		kf_le_put32(p + 4 + 4 * i, kr->retired[i]);
	if (kr->has_staged) {
		p += 4 + 4 * kr->n_retired;
		kf_le_put32(p, 1);
		kf_le_put32(p + 4, kr->staged.version);
		kf_le_put64(p + 8, (uint64_t)kr->staged.created);
		memcpy(p + 16, kr->staged.key, KF_KEY_BYTES);
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

/*
 * The retired list of an encoded keyring into kr (whose entries are not
 * set yet): strictly ascending, each in 1..highest.
 */
static int decode_retired(struct kf_keyring *kr, const uint8_t *p, uint32_t n,
			  char err[KF_ERR_MAX])
{
	if (n == 0)
		return 0;
	kr->retired = malloc((size_t)n * sizeof(*kr->retired));
	if (!kr->retired) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t v = kf_le_get32(p + 4 * i);

		if (v == 0 || v > kr->highest ||
		    (i > 0 && v <= kr->retired[i - 1])) {
			kf_err_set(err, "keyring retired list is malformed");
			return -EBADMSG;
		}
		kr->retired[i] = v;
	}
	kr->n_retired = n;
	return 0;
}

/*
 * The staged part of an encoded keyring (format 3): p is its count, which
 * must be 1, then the entry, whose version must lie above the current one
 * and not above highest.
 */
static int decode_staged(const uint8_t *p, uint32_t current, uint32_t highest,
			 char err[KF_ERR_MAX])
{
	uint32_t n = kf_le_get32(p), v = kf_le_get32(p + 4);

	if (n != 1) {
		kf_err_set(err, "keyring lists %u staged versions (must be 1)",
			   n);
		return -EBADMSG;
	}
	if (v <= current || v > highest) {
		kf_err_set(err,
			   "keyring staged version %u is not above its "
			   "current version %u and at most its highest %u",
			   v, current, highest);
		return -EBADMSG;
	}
	return 0;
}

int kf_keyring_decode(const uint8_t *buf, size_t len, struct kf_keyring **ret,
		      char err[KF_ERR_MAX])
{
	struct kf_keyring *kr;
	uint32_t format, highest, count, prev = 0, n_retired = 0;
	size_t body, tail = 0;
	const uint8_t *p, *staged = NULL;
	int r;

	if (len < KR_HEADER_LEN) {
		kf_err_set(err, "keyring truncated (%zu bytes)", len);
		return -EBADMSG;
	}
	if (memcmp(buf, KR_MAGIC, 4) != 0) {
		kf_err_set(err, "not an encoded keyring (bad magic)");
		return -EBADMSG;
	}
	format = kf_le_get32(buf + 4);
	if (format != KR_FORMAT && format != KR_FORMAT_V1 &&
	    format != KR_FORMAT_STAGED) {
		kf_err_set(err, "unsupported keyring format %u", format);
		return -EBADMSG;
	}
	highest = kf_le_get32(buf + 8);
	count = kf_le_get32(buf + 12);
	if (count < 1 || count > KF_KEYRING_MAX_VERSIONS) {
		kf_err_set(err, "keyring holds %u versions (must be 1..%u)",
			   count, KF_KEYRING_MAX_VERSIONS);
		return -EBADMSG;
	}
	body = KR_HEADER_LEN + (size_t)count * KR_ENTRY_LEN;
	if (format != KR_FORMAT_V1 && len >= body + 4) {
		n_retired = kf_le_get32(buf + body);
		if (n_retired > KF_KEYRING_MAX_RETIRED) {
			kf_err_set(err,
				   "keyring lists %u retired versions "
				   "(at most %u)",
				   n_retired, KF_KEYRING_MAX_RETIRED);
			return -EBADMSG;
		}
		tail = 4 + (size_t)n_retired * 4;
	} else if (format != KR_FORMAT_V1) {
		tail = 4;
	}
	if (format == KR_FORMAT_STAGED)
		tail += 4 + KR_ENTRY_LEN;
	if (len != body + tail) {
		kf_err_set(err,
			   "keyring of %u versions has %zu bytes, expected "
			   "%zu",
			   count, len, body + tail);
		return -EBADMSG;
	}
	if (format == KR_FORMAT_STAGED) {
		staged = buf + len - KR_ENTRY_LEN;
		r = decode_staged(staged - 4, kf_le_get32(buf + KR_HEADER_LEN),
				  highest, err);
		if (r < 0)
			return r;
	}
	p = buf + KR_HEADER_LEN;
	for (uint32_t i = 0; i < count; i++, p += KR_ENTRY_LEN) {
		uint32_t v = kf_le_get32(p);

		if (v == 0) {
			kf_err_set(err, "keyring entry %u has version 0", i);
			return -EBADMSG;
		}
		if (i > 0 && v >= prev) {
			kf_err_set(err,
				   "keyring versions not strictly decreasing "
				   "(%u after %u)",
				   v, prev);
			return -EBADMSG;
		}
		prev = v;
	}
	if (highest < kf_le_get32(buf + KR_HEADER_LEN)) {
		kf_err_set(err,
			   "keyring highest version %u is below its current "
			   "version %u",
			   highest, kf_le_get32(buf + KR_HEADER_LEN));
		return -EBADMSG;
	}
	kr = kr_alloc(count, highest, staged != NULL);
	if (!kr) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = decode_retired(kr, buf + body + 4, n_retired, err);
	if (r < 0) {
		kr_free(kr);
		return r;
	}
	p = buf + KR_HEADER_LEN;
	for (uint32_t i = 0; i < count; i++, p += KR_ENTRY_LEN) {
		kr->entries[i].version = kf_le_get32(p);
		kr->entries[i].created = (int64_t)kf_le_get64(p + 4);
		memcpy(kr_slot(kr, i), p + 12, KF_KEY_BYTES);
	}
	if (staged) {
		kr->staged.version = kf_le_get32(staged);
		kr->staged.created = (int64_t)kf_le_get64(staged + 4);
		memcpy(kr_slot(kr, count), staged + 12, KF_KEY_BYTES);
	}
	for (size_t i = 0; i < kr->n_retired; i++) {
		if (kf_keyring_lookup(kr, kr->retired[i])) {
			kf_err_set(err,
				   "keyring lists version %u as both "
				   "held and retired",
				   kr->retired[i]);
			kr_free(kr);
			return -EBADMSG;
		}
	}
	*ret = kr_seal(kr);
	return 0;
}
