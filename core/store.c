// SPDX-License-Identifier: MIT
/*
 * store: the sealed, atomically replaced state file, and the file store
 * that puts it behind struct kf_store_ops.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "aead.h"
#include "key.h"
#include "store.h"

#define ST_MAGIC "KEYFSST" /* with its NUL: 8 bytes */
#define ST_MAGIC_LEN 8
#define ST_FORMAT 1u
#define ST_OFF_FORMAT 8
#define ST_OFF_LEN 12
#define ST_OFF_KCV 16
#define ST_KCV_LEN 16
#define ST_OFF_NONCE 32
#define ST_HEADER_LEN 56 /* also the associated data */
#define ST_TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES
#define ST_KCV_MSG "keyfs.state.kcv"

_Static_assert(KF_STORE_KEY_BYTES ==
		   crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
	       "the seal key is an XChaCha20-Poly1305 key");

static void store_kcv(const uint8_t seal_key[KF_STORE_KEY_BYTES],
		      uint8_t kcv[ST_KCV_LEN])
{
	crypto_generichash(kcv, ST_KCV_LEN, (const uint8_t *)ST_KCV_MSG,
			   strlen(ST_KCV_MSG), seal_key, KF_STORE_KEY_BYTES);
	kf_key_wipe_stack(KF_KEY_WIPE_CALL); /* BLAKE2b keyed with seal_key */
}

/* Checks the header and size of a state file read into buf; 0 or -EBADMSG. */
static int store_check(const char *path, const uint8_t *buf, size_t size,
		       const uint8_t seal_key[KF_STORE_KEY_BYTES],
		       uint32_t *ret_len, char err[KF_ERR_MAX])
{
	uint8_t kcv[ST_KCV_LEN];
	uint64_t expected;
	uint32_t format, len;
	size_t head = size < ST_MAGIC_LEN ? size : ST_MAGIC_LEN;

	/*
	 * The magic is checked first over what there is, so that a short
	 * foreign file is called foreign and only a cut-off state file is
	 * called truncated.
	 */
	if (memcmp(buf, ST_MAGIC, head) != 0) {
		kf_err_set(err, "%s: not a keyfs state file", path);
		return -EBADMSG;
	}
	if (size < ST_HEADER_LEN + ST_TAG_LEN) {
		kf_err_set(err, "%s: truncated (%zu bytes)", path, size);
		return -EBADMSG;
	}
	format = kf_le_get32(buf + ST_OFF_FORMAT);
	if (format != ST_FORMAT) {
		kf_err_set(err, "%s: unsupported format %u", path, format);
		return -EBADMSG;
	}
	len = kf_le_get32(buf + ST_OFF_LEN);
	expected = (uint64_t)ST_HEADER_LEN + len + ST_TAG_LEN;
	if (size < expected) {
		kf_err_set(err, "%s: truncated (%zu bytes, expected %llu)",
			   path, size, (unsigned long long)expected);
		return -EBADMSG;
	}
	if (size > expected) {
		kf_err_set(err,
			   "%s: has trailing data (%zu bytes, expected %llu)",
			   path, size, (unsigned long long)expected);
		return -EBADMSG;
	}
	store_kcv(seal_key, kcv);
	if (!kf_mac_equal(kcv, buf + ST_OFF_KCV, ST_KCV_LEN)) {
		sodium_memzero(kcv, sizeof(kcv));
		kf_err_set(err, "%s: wrong master key or corrupted header",
			   path);
		return -EBADMSG;
	}
	sodium_memzero(kcv, sizeof(kcv));
	*ret_len = len;
	return 0;
}

int kf_store_load(const char *state_dir,
		  const uint8_t seal_key[KF_STORE_KEY_BYTES],
		  uint8_t **ret_plain, size_t *ret_len, char err[KF_ERR_MAX])
{
	char path[PATH_MAX];
	uint8_t *buf = NULL, *plain = NULL;
	unsigned long long plain_len = 0;
	size_t size = 0;
	uint32_t len;
	int r;

	if (snprintf(path, sizeof(path), "%s/%s", state_dir, KF_STORE_FILE) >=
	    (int)sizeof(path)) {
		kf_err_set(err, "%s: path too long", state_dir);
		return -ENAMETOOLONG;
	}
	r = kf_file_read_all(path, KF_STORE_MAX, &buf, &size, NULL, err);
	if (r < 0)
		return r;
	r = store_check(path, buf, size, seal_key, &len, err);
	if (r < 0)
		goto out;
	/* One spare byte: sodium_malloc(0) is not a buffer to write into. */
	plain = sodium_malloc((size_t)len + 1);
	if (!plain) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	if (kf_aead_open(plain, &plain_len, buf + ST_HEADER_LEN,
			 (unsigned long long)len + ST_TAG_LEN, buf,
			 ST_HEADER_LEN, buf + ST_OFF_NONCE, seal_key) < 0 ||
	    plain_len != len) {
		r = -EBADMSG;
		kf_err_set(err,
			   "%s: authentication failed (corrupted or "
			   "tampered)",
			   path);
		goto out;
	}
	*ret_plain = plain;
	*ret_len = len;
	plain = NULL;
	r = 0;
out:
	if (plain)
		sodium_free(plain);
	sodium_free(buf);
	return r;
}

int kf_store_prepare(const char *state_dir,
		     const uint8_t seal_key[KF_STORE_KEY_BYTES],
		     const uint8_t *plain, size_t len,
		     struct kf_store_pending *ret_pending, char err[KF_ERR_MAX])
{
	size_t size;
	uint8_t *buf;
	int r;

	ret_pending->tmp_name[0] = 0;
	if (len > KF_STORE_MAX - ST_HEADER_LEN - ST_TAG_LEN) {
		kf_err_set(err, "state of %zu bytes is too large (max %u)", len,
			   KF_STORE_MAX - ST_HEADER_LEN - ST_TAG_LEN);
		return -EFBIG;
	}
	size = ST_HEADER_LEN + len + ST_TAG_LEN;
	/* Only ciphertext and header go here: plain memory is fine. */
	buf = malloc(size);
	if (!buf) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	memcpy(buf, ST_MAGIC, ST_MAGIC_LEN);
	kf_le_put32(buf + ST_OFF_FORMAT, ST_FORMAT);
	kf_le_put32(buf + ST_OFF_LEN, (uint32_t)len);
	store_kcv(seal_key, buf + ST_OFF_KCV);
	randombytes_buf(buf + ST_OFF_NONCE,
			crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	crypto_aead_xchacha20poly1305_ietf_encrypt(
	    buf + ST_HEADER_LEN, NULL, plain, len, buf, ST_HEADER_LEN, NULL,
	    buf + ST_OFF_NONCE, seal_key);
	r = kf_file_prepare(state_dir, KF_STORE_FILE, buf, size, 0600,
			    ret_pending->tmp_name, err);
	if (r < 0)
		ret_pending->tmp_name[0] = 0;
	free(buf);
	return r;
}

int kf_store_commit(const char *state_dir, struct kf_store_pending *pending,
		    char err[KF_ERR_MAX])
{
	int r;

	if (!pending->tmp_name[0]) {
		kf_err_set(err, "no prepared state to commit");
		return -EINVAL;
	}
	r = kf_file_commit(state_dir, pending->tmp_name, KF_STORE_FILE, err);
	pending->tmp_name[0] = 0;
	return r;
}

void kf_store_discard(const char *state_dir, struct kf_store_pending *pending)
{
	if (!pending || !pending->tmp_name[0])
		return;
	kf_file_discard(state_dir, pending->tmp_name);
	pending->tmp_name[0] = 0;
}

int kf_store_save(const char *state_dir,
		  const uint8_t seal_key[KF_STORE_KEY_BYTES],
		  const uint8_t *plain, size_t len, char err[KF_ERR_MAX])
{
	struct kf_store_pending pending;
	int r;

	r = kf_store_prepare(state_dir, seal_key, plain, len, &pending, err);
	if (r < 0)
		return r;
	r = kf_store_commit(state_dir, &pending, err);
	return r == KF_FILE_UNSYNCED ? -EIO : r;
}

/* --- the file store behind struct kf_store_ops --------------------------- */

struct file_store {
	struct kf_store base; /* first: a kf_store * is a file_store * */
	const char *state_dir;
	const uint8_t *seal_key;
	/* Used only by the store's one caller at a time (kf_store_ops). */
	struct kf_store_pending pending;
};

static struct file_store *file_store(struct kf_store *s)
{
	return (struct file_store *)s;
}

static int file_load(struct kf_store *s, uint8_t **ret_plain, size_t *ret_len,
		     char err[KF_ERR_MAX])
{
	struct file_store *fs = file_store(s);

	return kf_store_load(fs->state_dir, fs->seal_key, ret_plain, ret_len,
			     err);
}

static int file_prepare(struct kf_store *s, const uint8_t *plain, size_t len,
			char err[KF_ERR_MAX])
{
	struct file_store *fs = file_store(s);

	kf_store_discard(fs->state_dir, &fs->pending);
	return kf_store_prepare(fs->state_dir, fs->seal_key, plain, len,
				&fs->pending, err);
}

static int file_commit(struct kf_store *s, char err[KF_ERR_MAX])
{
	struct file_store *fs = file_store(s);

	return kf_store_commit(fs->state_dir, &fs->pending, err);
}

static void file_discard(struct kf_store *s)
{
	struct file_store *fs = file_store(s);

	kf_store_discard(fs->state_dir, &fs->pending);
}

static void file_free(struct kf_store *s)
{
	file_discard(s);
	free(file_store(s));
}

static const struct kf_store_ops file_ops = {
    .load = file_load,
    .prepare = file_prepare,
    .commit = file_commit,
    .discard = file_discard,
    .free = file_free,
};

int kf_store_file_new(const char *state_dir,
		      const uint8_t seal_key[KF_STORE_KEY_BYTES],
		      struct kf_store **ret)
{
	struct file_store *fs = calloc(1, sizeof(*fs));

	if (!fs)
		return -ENOMEM;
	fs->base.ops = &file_ops;
	fs->state_dir = state_dir;
	fs->seal_key = seal_key;
	*ret = &fs->base;
	return 0;
}

struct kf_store *kf_store_free(struct kf_store *s)
{
	if (s)
		s->ops->free(s);
	return NULL;
}
