// SPDX-License-Identifier: MIT
/* recovery: the break-glass key pair's files and fingerprint. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "recovery.h"

#define TEXT_MAX (KF_KEY_TEXT_LEN + 2) /* a key, "\n", one to see more */

_Static_assert(KF_RECOVERY_KEY_BYTES == crypto_box_PUBLICKEYBYTES &&
		   KF_RECOVERY_KEY_BYTES == crypto_box_SECRETKEYBYTES,
	       "a recovery key is an X25519 key");

void kf_recovery_fingerprint(const uint8_t pk[KF_RECOVERY_KEY_BYTES],
			     char out[KF_RECOVERY_FPR_LEN + 1])
{
	kf_key_fingerprint_as(pk, "keyfs.rfpr.v1", out);
}

/* dir and name of path, into the caller's copy `buf`. */
static void split(char *buf, const char **ret_dir, const char **ret_name)
{
	char *slash = strrchr(buf, '/');

	if (!slash) {
		*ret_dir = ".";
		*ret_name = buf;
		return;
	}
	*slash = 0;
	*ret_dir = slash == buf ? "/" : buf;
	*ret_name = slash + 1;
}

/* A key's text form and "\n" into path, created with mode, never replacing. */
static int write_new(const char *path, const uint8_t key[KF_KEY_BYTES],
		     mode_t mode, char err[KF_ERR_MAX])
{
	char text[KF_KEY_TEXT_LEN + 2], *buf = strdup(path);
	const char *dir, *name;
	int r;

	if (!buf) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	split(buf, &dir, &name);
	kf_key_encode(key, text);
	text[KF_KEY_TEXT_LEN] = '\n';
	text[KF_KEY_TEXT_LEN + 1] = 0;
	r = kf_file_write_atomic(dir, name, text, KF_KEY_TEXT_LEN + 1, mode, 1,
				 err);
	sodium_memzero(text, sizeof(text));
	free(buf);
	if (r == -EEXIST)
		kf_err_set(err, "%s exists; it is never replaced", path);
	else if (r < 0)
		kf_err_prefix(err, "%s: ", path);
	return r;
}

int kf_recovery_keygen(const char *pub_path, const char *priv_path,
		       char ret_fpr[KF_RECOVERY_FPR_LEN + 1],
		       char err[KF_ERR_MAX])
{
	uint8_t pk[KF_RECOVERY_KEY_BYTES], *sk;
	const char *exists = NULL;
	int r;

	if (sodium_init() < 0) {
		kf_err_set(err, "libsodium failed to initialise");
		return -EIO;
	}
	if (access(priv_path, F_OK) == 0)
		exists = priv_path;
	else if (access(pub_path, F_OK) == 0)
		exists = pub_path;
	if (exists) {
		kf_err_set(err, "%s exists; it is never replaced", exists);
		return -EEXIST;
	}
	sk = sodium_malloc(KF_RECOVERY_KEY_BYTES);
	if (!sk) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	crypto_box_keypair(pk, sk);
	r = write_new(priv_path, sk, 0600, err);
	if (r == 0) {
		r = write_new(pub_path, pk, 0644, err);
		if (r < 0)
			unlink(priv_path); /* a pair or nothing */
	}
	sodium_free(sk);
	if (r == 0)
		kf_recovery_fingerprint(pk, ret_fpr);
	return r;
}

int kf_recovery_load_public(const char *path,
			    uint8_t ret_pk[KF_RECOVERY_KEY_BYTES],
			    char err[KF_ERR_MAX])
{
	uint8_t *buf = NULL;
	struct stat st, lst;
	size_t len = 0;
	int r;

	if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
		kf_err_set(err, "recovery_public_key %s: is a symbolic link",
			   path);
		return -ELOOP;
	}
	r = kf_file_read_all(path, TEXT_MAX, &buf, &len, &st, err);
	if (r == -EFBIG) {
		kf_err_set(err,
			   "recovery_public_key %s: expected 44 characters "
			   "and an optional newline",
			   path);
		return -EINVAL;
	}
	if (r < 0) {
		kf_err_prefix(err, "recovery_public_key %s: ", path);
		return r;
	}
	if (st.st_uid != 0 || (st.st_mode & 022) != 0) {
		kf_err_set(err,
			   "recovery_public_key %s: %s (owner uid %u, mode "
			   "%04o): whoever can replace it receives every later "
			   "archive's keys",
			   path,
			   st.st_uid != 0 ? "must be owned by root"
					  : "must not be writable by group or "
					    "other",
			   (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		r = -EPERM;
	} else {
		if (len > 0 && buf[len - 1] == '\n')
			len--;
		r = kf_key_decode((const char *)buf, len, ret_pk, err);
		if (r < 0)
			kf_err_prefix(err, "recovery_public_key %s: ", path);
	}
	sodium_free(buf);
	return r;
}
