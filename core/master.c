// SPDX-License-Identifier: MIT
/* master: loading (or, in development, creating) the master key. */
#include <errno.h>
#include <stdarg.h>
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

static int master_from_fd(const char *path, int fd, uint8_t *key,
			  char err[KF_ERR_MAX])
{
	char text[MASTER_FILE_MAX];
	struct stat st;
	ssize_t n;
	size_t len;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		kf_err_set(err, "master key file %s: %s", path, strerror(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		kf_err_set(err, "master key file %s: not a regular file", path);
		return -EINVAL;
	}
	if (st.st_uid != 0) {
		kf_err_set(err,
			   "master key file %s: owned by uid %u, must be "
			   "owned by root",
			   path, (unsigned)st.st_uid);
		return -EPERM;
	}
	if ((st.st_mode & 077) != 0) {
		kf_err_set(err, "master key file %s: mode %04o is %s", path,
			   (unsigned)(st.st_mode & 07777),
			   (st.st_mode & 044) ? "readable by group or other"
					      : "open to group or other");
		return -EPERM;
	}
	n = read_text(fd, text);
	if (n < 0) {
		kf_err_set(err, "master key file %s: read: %s", path,
			   strerror((int)-n));
		r = (int)n;
		goto out;
	}
	if (n > KF_KEY_TEXT_LEN + 1) {
		kf_err_set(err,
			   "master key file %s: expected 44 characters and an "
			   "optional newline, got %lld bytes",
			   path, (long long)st.st_size);
		r = -EINVAL;
		goto out;
	}
	len = (size_t)n;
	if (len > 0 && text[len - 1] == '\n')
		len--;
	r = kf_key_decode(text, len, key, err);
	if (r < 0)
		kf_err_prefix(err, "master key file %s: ", path);
out:
	sodium_memzero(text, sizeof(text));
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

/*
 * Following a symbolic link, for a Kubernetes Secret volume: DIR/master.key
 * -> ..data/master.key, DIR/..data -> ..2026_12_03_10_00_00.123, the key in
 * that folder.  A link is followed only when it cannot have been planted by
 * anyone but root and cannot lead out of DIR, the folder that holds the
 * configured path:
 *   - every link is owned by root, relative, and has no ".." component, so
 *     the walk only goes down from DIR;
 *   - DIR and every folder entered are owned by root and not writable by
 *     group or other, unless sticky (a Secret volume's root is 1777: only
 *     root may then replace root's entries);
 *   - every link, folder and the file are on DIR's file system;
 *   - at most MASTER_MAX_LINKS links.
 * One component at a time with openat(O_PATH | O_NOFOLLOW), and the link
 * read through its own descriptor, so what is checked is what is used.
 */
#define MASTER_MAX_LINKS 8

struct master_walk {
	const char *path; /* as configured, for messages */
	const char *dir;  /* the folder holding it */
	dev_t dev;	  /* dir's file system */
	int links;	  /* followed so far */
	/* The current folder, relative to dir ("" or "a/b/"). */
	char at[PATH_MAX];
};

static int walk_refuse(struct master_walk *w, int r, char *err, const char *fmt,
		       ...) __attribute__((format(printf, 4, 5)));

/* Sets err to "master key file PATH: " and fmt's expansion; returns r. */
static int walk_refuse(struct master_walk *w, int r, char *err, const char *fmt,
		       ...)
{
	char what[KF_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	kf_err_set(err, "master key file %s: %s", w->path, what);
	return r;
}

/* A folder of the walk: root's, not open to others unless sticky. */
static int walk_check_dir(struct master_walk *w, const struct stat *st,
			  const char *name, char err[KF_ERR_MAX])
{
	if (st->st_dev != w->dev)
		return walk_refuse(w, -EPERM, err,
				   "folder %s is on another file system", name);
	if (st->st_uid != 0)
		return walk_refuse(
		    w, -EPERM, err,
		    "folder %s is owned by uid %u, must be owned "
		    "by root to follow a symbolic link",
		    name, (unsigned)st->st_uid);
	if ((st->st_mode & 022) && !(st->st_mode & S_ISVTX))
		return walk_refuse(w, -EPERM, err,
				   "folder %s is writable by group or other "
				   "and not sticky",
				   name);
	return 0;
}

/* Next component of *rest (skipping "" and "."), copied to comp. */
static bool walk_next(const char **rest, char comp[NAME_MAX + 1])
{
	const char *s = *rest;

	for (;;) {
		size_t n;

		while (*s == '/')
			s++;
		if (!*s)
			return false;
		n = strcspn(s, "/");
		if (n > NAME_MAX) {
			/* No such name: an empty one, which openat refuses
			 * (ENOENT), never a shortened one that may exist. */
			n = 0;
		} else {
			memcpy(comp, s, n);
		}
		comp[n] = 0;
		s += strcspn(s, "/");
		if (strcmp(comp, ".") != 0) {
			*rest = s;
			return true;
		}
	}
}

/* Replaces the link comp in the walk by its target, read from lfd. */
static int walk_link(struct master_walk *w, int lfd, const struct stat *st,
		     const char *comp, char rest[PATH_MAX],
		     char err[KF_ERR_MAX])
{
	char target[PATH_MAX], name[PATH_MAX], next[PATH_MAX];
	const char *t;
	ssize_t n;

	snprintf(name, sizeof(name), "%s%s", w->at, comp);
	if (++w->links > MASTER_MAX_LINKS)
		return walk_refuse(w, -ELOOP, err,
				   "too many symbolic links at %s (more than "
				   "%d)",
				   name, MASTER_MAX_LINKS);
	if (st->st_uid != 0)
		return walk_refuse(w, -EPERM, err,
				   "symbolic link %s is owned by uid %u, must "
				   "be owned by root",
				   name, (unsigned)st->st_uid);
	if (st->st_dev != w->dev)
		return walk_refuse(w, -EPERM, err,
				   "symbolic link %s is on another file system",
				   name);
	n = readlinkat(lfd, "", target, sizeof(target));
	if (n < 0 || (size_t)n >= sizeof(target)) {
		n = n < 0 ? -errno : -ENAMETOOLONG;
		return walk_refuse(w, (int)n, err,
				   "symbolic link %s cannot be read: %s", name,
				   strerror((int)-n));
	}
	target[n] = 0;
	if (target[0] == '/')
		return walk_refuse(w, -ELOOP, err,
				   "symbolic link %s points to an absolute "
				   "path; only relative links that stay in %s "
				   "are followed",
				   name, w->dir);
	for (t = target; walk_next(&t, next);)
		if (!strcmp(next, ".."))
			return walk_refuse(w, -ELOOP, err,
					   "symbolic link %s climbs out with "
					   "\"..\"; only relative links that "
					   "stay in %s are followed",
					   name, w->dir);
	if ((size_t)snprintf(next, sizeof(next), "%s/%s", target, rest) >=
	    sizeof(next))
		return walk_refuse(w, -ENAMETOOLONG, err,
				   "symbolic link %s: path too long", name);
	memcpy(rest, next, PATH_MAX);
	return 0;
}

/*
 * Opens the file that the link `name` in the folder dfd leads to, by the
 * rules above: a descriptor open for reading, or -errno with err set.
 */
static int walk_follow(struct master_walk *w, int dfd, const char *name,
		       char err[KF_ERR_MAX])
{
	char rest[PATH_MAX], comp[NAME_MAX + 1], shown[PATH_MAX];
	const char *p;
	struct stat st;
	int cur = -1, lfd = -1, fd = -1, r;

	if (fstat(dfd, &st) < 0)
		return walk_refuse(w, -errno, err, "folder %s: %s", w->dir,
				   strerror(errno));
	w->dev = st.st_dev;
	r = walk_check_dir(w, &st, w->dir, err);
	if (r < 0)
		return r;
	cur = dup(dfd);
	if (cur < 0)
		return walk_refuse(w, -errno, err, "%s: %s", w->dir,
				   strerror(errno));
	snprintf(rest, sizeof(rest), "%s", name);
	p = rest;
	while (walk_next(&p, comp)) {
		bool last;

		memmove(rest, p, strlen(p) + 1);
		p = rest;
		last = !walk_next(&p, shown); /* peek only */
		p = rest;
		if ((size_t)snprintf(shown, sizeof(shown), "%s%s", w->at,
				     comp) >= sizeof(shown)) {
			r = walk_refuse(w, -ENAMETOOLONG, err,
					"path too long in %s", w->dir);
			goto out;
		}
		if (!strcmp(comp, "..")) {
			r = walk_refuse(w, -ELOOP, err,
					"%s climbs out with \"..\"", shown);
			goto out;
		}
		lfd = openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (lfd < 0 || fstat(lfd, &st) < 0) {
			r = -errno;
			kf_err_set(err, "master key file %s: %s: %s", w->path,
				   shown,
				   r == -ENOENT ? "missing (after a symbolic "
						  "link)"
						: strerror(-r));
			goto out;
		}
		if (S_ISLNK(st.st_mode)) {
			r = walk_link(w, lfd, &st, comp, rest, err);
			close(lfd);
			lfd = -1;
			if (r < 0)
				goto out;
			p = rest;
			continue;
		}
		if (!last) {
			if (!S_ISDIR(st.st_mode)) {
				r = walk_refuse(w, -ENOTDIR, err,
						"%s is not a folder", shown);
				goto out;
			}
			r = walk_check_dir(w, &st, shown, err);
			if (r < 0)
				goto out;
			close(cur);
			cur = lfd;
			lfd = -1;
			if (strlen(w->at) + strlen(comp) + 2 > sizeof(w->at)) {
				r = walk_refuse(w, -ENAMETOOLONG, err,
						"%s: path too long", shown);
				goto out;
			}
			strcat(w->at, comp);
			strcat(w->at, "/");
			continue;
		}
		/* The file: open it, and make sure it is what was checked. */
		fd = openat(cur, comp,
			    O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
				O_NONBLOCK);
		if (fd < 0) {
			r = -errno;
			kf_err_set(err, "master key file %s: %s: %s", w->path,
				   shown, strerror(-r));
			goto out;
		}
		{
			struct stat now;

			if (fstat(fd, &now) < 0 || now.st_dev != st.st_dev ||
			    now.st_ino != st.st_ino) {
				r = walk_refuse(
				    w, -EAGAIN, err,
				    "%s changed while it was opened", shown);
				goto out;
			}
		}
		if (st.st_dev != w->dev) {
			r = walk_refuse(w, -EPERM, err,
					"%s is on another file system", shown);
			goto out;
		}
		r = fd;
		fd = -1;
		goto out;
	}
	r = walk_refuse(w, -EINVAL, err, "a symbolic link leads to no file");
out:
	if (fd >= 0)
		close(fd);
	if (lfd >= 0)
		close(lfd);
	if (cur >= 0)
		close(cur);
	return r;
}

/*
 * Opens the master key file for reading: a plain file as before; a
 * symbolic link only by the rules of walk_follow.  *ret_absent is set when
 * there is no entry at path at all (-ENOENT, err unset): the only case that
 * may_create handles.
 */
static int master_open(const char *path, bool *ret_absent, char err[KF_ERR_MAX])
{
	char dir[PATH_MAX], name[PATH_MAX];
	struct master_walk w = {.path = path};
	int dfd, fd, r;

	*ret_absent = false;
	r = split_path(path, dir, name);
	if (r < 0) {
		kf_err_set(err, "master key file %s: not a file path", path);
		return r;
	}
	dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		r = -errno;
		if (r == -ENOENT)
			*ret_absent = true;
		else
			kf_err_set(err, "master key file %s: %s: %s", path, dir,
				   strerror(-r));
		return r;
	}
	/* O_NONBLOCK: a FIFO planted at path must not hang the start. */
	fd = openat(dfd, name,
		    O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd >= 0) {
		r = fd;
	} else if (errno == ELOOP) {
		w.dir = dir;
		r = walk_follow(&w, dfd, name, err);
	} else {
		r = -errno;
		if (r == -ENOENT)
			*ret_absent = true;
		else
			kf_err_set(err, "master key file %s: %s", path,
				   strerror(-r));
	}
	close(dfd);
	return r;
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
	bool created = false, absent;
	uint8_t *key;
	int fd, r;

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
	fd = master_open(path, &absent, err);
	if (fd >= 0) {
		r = master_from_fd(path, fd, key, err);
		close(fd);
		goto out;
	}
	r = fd;
	if (!absent) {
		/* Refused (err says why), or missing behind a link: a link is
		 * never written through. */
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
	bool absent = false;
	int fd, r;

	if (!key) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	fd = master_open(path, &absent, err);
	if (fd >= 0) {
		r = master_from_fd(path, fd, key, err);
		close(fd);
	} else {
		r = fd;
		if (absent)
			kf_err_set(err, "master key file %s: %s", path,
				   strerror(-r));
	}
	if (r < 0) {
		if (what)
			kf_err_prefix(err, "%s: ", what);
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
