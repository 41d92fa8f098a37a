// SPDX-License-Identifier: MIT
/* master: loading (or, in development, creating) the master key. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "env.h"
#include "master.h"

#define MASTER_ENV "KEYFS_MASTER_KEY"
#define MASTER_WHAT "master key file" /* how messages name the file */
/* 44 characters and an optional newline; one more to see a longer file. */
#define MASTER_FILE_MAX (KF_KEY_TEXT_LEN + 2)

static int master_from_env(const char *text, uint8_t *key, char err[KF_ERR_MAX])
{
	int r;

	r = kf_key_decode(text, strlen(text), key, err);
	if (r < 0)
		kf_err_prefix(err, "%s: ", MASTER_ENV);
	return r;
}

/* Reads at most MASTER_FILE_MAX bytes of fd into text; returns the count. */
static ssize_t read_text(int fd, char *text)
{
	size_t got = 0;

	while (got < MASTER_FILE_MAX) {
		ssize_t n = read(fd, text + got, MASTER_FILE_MAX - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int master_from_fd(const char *what, const char *path, int fd,
			  uint8_t *key, char err[KF_ERR_MAX])
{
	char text[MASTER_FILE_MAX];
	struct stat st;
	ssize_t n;
	size_t len;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		kf_err_set(err, "%s %s: %s", what, path, strerror(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		kf_err_set(err, "%s %s: not a regular file", what, path);
		return -EINVAL;
	}
	if (st.st_uid != 0) {
		kf_err_set(err,
			   "%s %s: owned by uid %u, must be "
			   "owned by root",
			   what, path, (unsigned)st.st_uid);
		return -EPERM;
	}
	if ((st.st_mode & 077) != 0) {
		kf_err_set(err, "%s %s: mode %04o is %s", what, path,
			   (unsigned)(st.st_mode & 07777),
			   (st.st_mode & 044) ? "readable by group or other"
					      : "open to group or other");
		return -EPERM;
	}
	n = read_text(fd, text);
	if (n < 0) {
		kf_err_set(err, "%s %s: read: %s", what, path,
			   strerror((int)-n));
		r = (int)n;
		goto out;
	}
	if (n > KF_KEY_TEXT_LEN + 1) {
		kf_err_set(err,
			   "%s %s: expected 44 characters and an "
			   "optional newline, got %lld bytes",
			   what, path, (long long)st.st_size);
		r = -EINVAL;
		goto out;
	}
	len = (size_t)n;
	if (len > 0 && text[len - 1] == '\n')
		len--;
	r = kf_key_decode(text, len, key, err);
	if (r < 0)
		kf_err_prefix(err, "%s %s: ", what, path);
out:
	sodium_memzero(text, sizeof(text));
	return r;
}

/*
 * The key in the file at path (master_from_fd's checks); -ENOENT (with a
 * message naming it) when there is none.
 */
static int master_from_path(const char *what, const char *path, uint8_t *key,
			    char err[KF_ERR_MAX])
{
	int fd, r;

	/* O_NONBLOCK: a FIFO planted at path must not hang the start. */
	fd = open(path,
		  O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd >= 0) {
		r = master_from_fd(what, path, fd, key, err);
		close(fd);
		return r;
	}
	r = -errno;
	if (r == -ELOOP)
		kf_err_set(err, "%s %s: is a symbolic link", what, path);
	else
		kf_err_set(err, "%s %s: %s", what, path, strerror(-r));
	return r;
}

/* Splits path into a parent directory and a final name. */
static int split_path(const char *path, char dir[PATH_MAX], char name[PATH_MAX])
{
	const char *slash = strrchr(path, '/');

	if (!slash) {
		snprintf(dir, PATH_MAX, ".");
		snprintf(name, PATH_MAX, "%s", path);
	} else if (slash == path) {
		snprintf(dir, PATH_MAX, "/");
		snprintf(name, PATH_MAX, "%s", slash + 1);
	} else {
		if ((size_t)(slash - path) >= PATH_MAX)
			return -ENAMETOOLONG;
		snprintf(dir, PATH_MAX, "%.*s", (int)(slash - path), path);
		snprintf(name, PATH_MAX, "%s", slash + 1);
	}
	return name[0] ? 0 : -EINVAL;
}

static int master_create(const char *path, uint8_t *key, char err[KF_ERR_MAX])
{
	char dir[PATH_MAX], name[PATH_MAX];
	char text[KF_KEY_TEXT_LEN + 2];
	struct stat st;
	int r;

	r = split_path(path, dir, name);
	if (r < 0) {
		kf_err_set(err, "master key file %s: not a file path", path);
		return r;
	}
	/*
	 * Only a missing parent is created (0700): an existing one such as
	 * /etc is the administrator's and must not be tightened.
	 */
	if (lstat(dir, &st) < 0) {
		if (errno != ENOENT) {
			r = -errno;
			kf_err_set(err, "%s: %s", dir, strerror(-r));
			return r;
		}
		r = kf_dir_ensure(dir, 0700, NULL, err);
		if (r < 0)
			return r;
	}
	kf_key_generate(key);
	kf_key_encode(key, text);
	text[KF_KEY_TEXT_LEN] = '\n';
	text[KF_KEY_TEXT_LEN + 1] = 0;
	r = kf_file_write_atomic(dir, name, text, KF_KEY_TEXT_LEN + 1, 0600, 1,
				 err);
	sodium_memzero(text, sizeof(text));
	if (r < 0)
		kf_err_prefix(err, "cannot create master key file: ");
	return r;
}

int kf_master_load(const char *path, bool may_create, uint8_t **ret_key,
		   bool *ret_created, char err[KF_ERR_MAX])
{
	const char *env = kf_env_get(KF_ENV_MASTER_KEY);
	bool created = false;
	uint8_t *key;
	int r;

	key = sodium_malloc(KF_KEY_BYTES);
	if (!key) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	if (env) {
		/* Set but empty is a mistake, never "unset": say so. */
		if (!*env) {
			r = -EINVAL;
			kf_err_set(err, "%s is set but empty", MASTER_ENV);
		} else {
			r = master_from_env(env, key, err);
		}
		goto out;
	}
	if (!path || !*path) {
		r = -ENOENT;
		kf_err_set(err,
			   "no master key: set %s or configure "
			   "master_key_file",
			   MASTER_ENV);
		goto out;
	}
	r = master_from_path(MASTER_WHAT, path, key, err);
	if (r != -ENOENT) {
		goto out;
	} else if (may_create) {
		r = master_create(path, key, err);
		created = r == 0;
	} else {
		kf_err_set(err, "no master key: set %s or create %s",
			   MASTER_ENV, path);
	}
out:
	if (r < 0) {
		sodium_free(key);
		return r;
	}
	*ret_key = key;
	if (ret_created)
		*ret_created = created;
	return 0;
}

int kf_master_load_file(const char *path, const char *what, uint8_t **ret_key,
			char err[KF_ERR_MAX])
{
	uint8_t *key = sodium_malloc(KF_KEY_BYTES);
	int r;

	if (!key) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = master_from_path(what ? what : MASTER_WHAT, path, key, err);
	if (r < 0) {
		sodium_free(key);
		return r;
	}
	*ret_key = key;
	return 0;
}

void kf_master_fingerprint(const uint8_t master[KF_KEY_BYTES],
			   char out[KF_MASTER_FPR_LEN + 1])
{
	kf_key_fingerprint_as(master, "keyfs.mfpr.v1", out);
}

_Static_assert(KF_SUBKEY_BYTES >= crypto_kdf_BYTES_MIN &&
		   KF_SUBKEY_BYTES <= crypto_kdf_BYTES_MAX,
	       "a subkey is a crypto_kdf output");

void kf_master_subkey(const uint8_t master[KF_KEY_BYTES], enum kf_subkey id,
		      uint8_t out[KF_SUBKEY_BYTES])
{
	(void)crypto_kdf_derive_from_key(out, KF_SUBKEY_BYTES, (uint64_t)id,
					 KF_MASTER_CONTEXT, master);
	kf_key_wipe_stack(KF_KEY_WIPE_CALL); /* BLAKE2b left the subkey */
}
