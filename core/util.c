// SPDX-License-Identifier: MIT
/* util: error text, time and durable file helpers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "util.h"

#include <fiu-local.h>

#ifdef FIU_ENABLE
_Thread_local const char *kf_crash_at;

void kf_crash(const char *point)
{
	kf_crash_at = point;
	fiu_do_on(point, kill(getpid(), SIGKILL));
}

/* The kind of file name for its crash points' names (util.h). */
static const char *file_kind(const char *name)
{
	size_t len = strlen(name);

	if (strcmp(name, "keyring") == 0)
		return "state";
	if (strcmp(name, "rekey.journal") == 0)
		return "journal";
	if (len > 5 && strcmp(name + len - 5, ".json") == 0)
		return "archive";
	return "keyfile";
}

void kf_crash_file(const char *step, const char *name)
{
	char point[96];

	snprintf(point, sizeof(point), "keyfs/crash/file/%s/%s",
		 file_kind(name), step);
	kf_crash(point);
}
#endif

void kf_err_set(char *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err, KF_ERR_MAX, fmt, ap);
	va_end(ap);
}

void kf_err_prefix(char *err, const char *fmt, ...)
{
	char head[KF_ERR_MAX], old[KF_ERR_MAX];
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	size_t hl = strlen(head), ol = strlen(err);

	memcpy(old, err, ol + 1);
	if (hl + ol >= KF_ERR_MAX)
		ol = KF_ERR_MAX - 1 - hl;
	memcpy(err, head, hl);
	memcpy(err + hl, old, ol);
	err[hl + ol] = 0;
}

int64_t kf_time_mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t kf_time_now(void)
{
	return (int64_t)time(NULL);
}

void kf_time_rfc3339(int64_t t, char buf[KF_RFC3339_LEN + 1])
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, KF_RFC3339_LEN + 1, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int kf_time_parse_rfc3339(const char *s, int64_t *ret_t)
{
	struct tm tm = {0};
	const char *end;
	char back[KF_RFC3339_LEN + 1];
	time_t t;

	if (!s || strlen(s) != KF_RFC3339_LEN)
		return -EINVAL;
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!end || *end)
		return -EINVAL;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	/* Reject out-of-range fields that timegm would normalise. */
	kf_time_rfc3339((int64_t)t, back);
	if (strcmp(back, s) != 0)
		return -EINVAL;
	*ret_t = (int64_t)t;
	return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
	const uint8_t *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int kf_dir_fsync(const char *dir)
{
	int fd, r = 0;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int kf_file_prepare(const char *dir, const char *name, const void *data,
		    size_t len, mode_t mode, char *tmp_name,
		    char err[KF_ERR_MAX])
{
	char path[PATH_MAX];
	uint8_t rnd[6];
	char hex[13];
	int fd, r;

	randombytes_buf(rnd, sizeof(rnd));
	kf_hex(rnd, sizeof(rnd), hex);
	if (snprintf(tmp_name, PATH_MAX, ".%s.tmp.%s", name, hex) >= PATH_MAX ||
	    snprintf(path, sizeof(path), "%s/%s", dir, tmp_name) >=
		(int)sizeof(path)) {
		kf_err_set(err, "%s/%s: path too long", dir, name);
		return -ENAMETOOLONG;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  mode);
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot create: %s", path, strerror(-r));
		return r;
	}
	KF_CRASH_FILE("created", name);
	/* The umask may have narrowed mode; make it exact. */
	if (fchmod(fd, mode) < 0) {
		r = -errno;
		kf_err_set(err, "%s: chmod: %s", path, strerror(-r));
		goto fail;
	}
	r = write_all(fd, data, len);
	if (r < 0) {
		kf_err_set(err, "%s: write: %s", path, strerror(-r));
		goto fail;
	}
	KF_CRASH_FILE("written", name);
	/* Never retried: after a failed fsync the pages are marked clean. */
	if (fsync(fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fsync: %s", path, strerror(-r));
		goto fail;
	}
	KF_CRASH_FILE("synced", name);
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		kf_err_set(err, "%s: close: %s", path, strerror(-r));
		goto fail;
	}
	KF_CRASH_FILE("closed", name);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(path);
	return r;
}

int kf_file_commit(const char *dir, const char *tmp_name, const char *name,
		   char err[KF_ERR_MAX])
{
	char from[PATH_MAX], to[PATH_MAX];
	int r;

	if (snprintf(from, sizeof(from), "%s/%s", dir, tmp_name) >=
		(int)sizeof(from) ||
	    snprintf(to, sizeof(to), "%s/%s", dir, name) >= (int)sizeof(to)) {
		kf_err_set(err, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	if (rename(from, to) < 0) {
		r = -errno;
		kf_err_set(err, "%s: rename: %s", to, strerror(-r));
		unlink(from);
		return r;
	}
	KF_CRASH_FILE("renamed", name);
	r = kf_dir_fsync(dir);
	/* Test builds only (FIU_ENABLE): the fault that follows a rename. */
	fiu_do_on("keyfs/file/commit_dir_fsync", r = -EIO);
	if (r < 0) {
		/* The rename happened: the new file is what dir shows. */
		kf_err_set(err, "%s: fsync of directory: %s", dir,
			   strerror(-r));
		return KF_FILE_UNSYNCED;
	}
	KF_CRASH_FILE("dir_synced", name);
	return 0;
}

void kf_file_discard(const char *dir, const char *tmp_name)
{
	char path[PATH_MAX];

	if (!tmp_name || !*tmp_name)
		return;
	if (snprintf(path, sizeof(path), "%s/%s", dir, tmp_name) <
	    (int)sizeof(path))
		unlink(path);
}

/*
 * Whether name is one kf_file_prepare makes: ".NAME.tmp.<12 hex>", with
 * NAME `of` unless that is NULL.
 */
static bool is_temp_name(const char *name, const char *of)
{
	size_t len = strlen(name);
	const char *tail;

	if (name[0] != '.' || len < 1 + 1 + 5 + 12)
		return false;
	tail = name + len - 12;
	if (strncmp(tail - 5, ".tmp.", 5) != 0)
		return false;
	if (of && (strlen(of) != len - 1 - 5 - 12 ||
		   strncmp(name + 1, of, strlen(of)) != 0))
		return false;
	for (int i = 0; i < 12; i++)
		if (!((tail[i] >= '0' && tail[i] <= '9') ||
		      (tail[i] >= 'a' && tail[i] <= 'f')))
			return false;
	return true;
}

int kf_dir_sweep_temp(const char *dir, size_t *ret_removed)
{
	return kf_dir_sweep_temp_of(dir, NULL, ret_removed);
}

int kf_dir_sweep_temp_of(const char *dir, const char *name, size_t *ret_removed)
{
	struct dirent *de;
	size_t removed = 0;
	int r = 0;
	DIR *d;

	*ret_removed = 0;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		struct stat st;

		if (!is_temp_name(de->d_name, name) ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) <
			0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
		else if (r == 0)
			r = -errno;
	}
	closedir(d);
	if (removed > 0 && kf_dir_fsync(dir) < 0 && r == 0)
		r = -EIO;
	*ret_removed = removed;
	return r;
}

int kf_file_write_atomic(const char *dir, const char *name, const void *data,
			 size_t len, mode_t mode, int exclusive,
			 char err[KF_ERR_MAX])
{
	char tmp[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
	int r;

	r = kf_file_prepare(dir, name, data, len, mode, tmp, err);
	if (r < 0)
		return r;
	if (!exclusive) {
		r = kf_file_commit(dir, tmp, name, err);
		return r == KF_FILE_UNSYNCED ? -EIO : r;
	}

	/* link(2) fails with EEXIST instead of replacing: never overwrite. */
	if (snprintf(from, sizeof(from), "%s/%s", dir, tmp) >=
		(int)sizeof(from) ||
	    snprintf(to, sizeof(to), "%s/%s", dir, name) >= (int)sizeof(to)) {
		kf_err_set(err, "%s: path too long", dir);
		kf_file_discard(dir, tmp);
		return -ENAMETOOLONG;
	}
	if (link(from, to) < 0) {
		r = -errno;
		if (r == -EEXIST)
			kf_err_set(err, "%s: already exists", to);
		else
			kf_err_set(err, "%s: link: %s", to, strerror(-r));
		unlink(from);
		return r;
	}
	KF_CRASH_FILE("linked", name);
	unlink(from);
	KF_CRASH_FILE("tmp_unlinked", name);
	r = kf_dir_fsync(dir);
	if (r < 0) {
		kf_err_set(err, "%s: fsync of directory: %s", dir,
			   strerror(-r));
		unlink(to);
	} else {
		KF_CRASH_FILE("dir_synced", name);
	}
	return r;
}

int kf_file_open_regular(const char *path, int flags, struct stat *ret_st,
			 char err[KF_ERR_MAX])
{
	int fd, r;

	/* O_NONBLOCK: a FIFO given as a path must not hang the caller. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | flags);
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, ret_st) < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", path, strerror(-r));
		close(fd);
		return r;
	}
	if (!S_ISREG(ret_st->st_mode)) {
		kf_err_set(err, "%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	return fd;
}

int kf_file_read_all(const char *path, size_t max, uint8_t **ret_buf,
		     size_t *ret_len, struct stat *ret_st, char err[KF_ERR_MAX])
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd, r;

	fd = kf_file_open_regular(path, O_NOFOLLOW, &st, err);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > max) {
		r = -EFBIG;
		kf_err_set(err, "%s: larger than %zu bytes", path, max);
		goto out;
	}
	/* sodium_malloc(0) is fine but keep one byte for callers' NUL. */
	buf = sodium_malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			kf_err_set(err, "%s: read: %s", path, strerror(-r));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	*ret_buf = buf;
	*ret_len = got;
	if (ret_st)
		*ret_st = st;
	buf = NULL;
	r = 0;
out:
	if (buf)
		sodium_free(buf);
	close(fd);
	return r;
}

static int mkdir_parents(const char *dir, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, dir, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int kf_dir_ensure(const char *dir, mode_t mode, int *ret_tightened,
		  char err[KF_ERR_MAX])
{
	struct stat st;
	int r;

	if (ret_tightened)
		*ret_tightened = 0;
	if (lstat(dir, &st) < 0) {
		if (errno != ENOENT) {
			r = -errno;
			kf_err_set(err, "%s: %s", dir, strerror(-r));
			return r;
		}
		r = mkdir_parents(dir, mode);
		if (r < 0) {
			kf_err_set(err, "%s: cannot create: %s", dir,
				   strerror(-r));
			return r;
		}
		if (chmod(dir, mode) < 0) {
			r = -errno;
			kf_err_set(err, "%s: chmod: %s", dir, strerror(-r));
			return r;
		}
		return 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		kf_err_set(err, "%s: exists and is not a directory", dir);
		return -ENOTDIR;
	}
	if ((st.st_mode & 07777 & ~mode) != 0) {
		if (chmod(dir, mode) < 0) {
			r = -errno;
			kf_err_set(err, "%s: cannot tighten mode: %s", dir,
				   strerror(-r));
			return r;
		}
		if (ret_tightened)
			*ret_tightened = 1;
	}
	return 0;
}

char *kf_path_join(const char *a, const char *b)
{
	char *s;

	if (asprintf(&s, "%s/%s", a, b) < 0)
		return NULL;
	return s;
}

int kf_parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d = (unsigned)(*s - '0');

		if (d > 9)
			return -EINVAL;
		if (d > max || v > (max - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

void kf_hex(const uint8_t *in, size_t n, char *out)
{
	sodium_bin2hex(out, 2 * n + 1, in, n);
}

int kf_unhex(const char *hex, uint8_t *out, size_t n)
{
	size_t got = 0;

	for (size_t i = 0; i < 2 * n; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') ||
		      (hex[i] >= 'a' && hex[i] <= 'f')))
			return -EINVAL;
	if (sodium_hex2bin(out, n, hex, 2 * n, NULL, &got, NULL) != 0 ||
	    got != n)
		return -EINVAL;
	return 0;
}

bool kf_path_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (strcmp(dir, "/") == 0)
		return true;
	return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/');
}

void kf_harden_process(void)
{
	struct rlimit no_core = {0, 0};

	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	setrlimit(RLIMIT_CORE, &no_core);
}
