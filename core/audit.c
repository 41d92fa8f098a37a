// SPDX-License-Identifier: MIT
/*
 * audit: writing the tamper-evident audit log (see audit.h and DESIGN.md §6).
 * Reading and verifying it is in audit_read.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit_private.h"

static bool is_reserved(const char *key, size_t len)
{
	static const char *const names[] = {"timestamp", "seq", "chain"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (len == strlen(names[i]) && memcmp(key, names[i], len) == 0)
			return true;
	return false;
}

/*
 * The whole existing log, through a->fd itself (opened read-write, so no
 * second open by name can meet another file): the slow path, for a last
 * line that does not parse.  Continues the chain from the last line that
 * does; cuts a torn last line off.
 */
static int audit_scan(struct kf_audit *a, bool *ret_broken,
		      char err[KF_ERR_MAX])
{
	struct kf_audit_scan s = {.key = a->key};
	int r;

	if (lseek(a->fd, 0, SEEK_SET) < 0)
		return -errno;
	r = kf_audit_scan_file(a->fd, &s, false);
	if (r < 0) {
		kf_err_set(err, "%s: read: %s", a->path, strerror(-r));
		return r;
	}
	/* A crash mid-write leaves part of a line that was never acknowledged;
	 * appending after it would glue two records together. */
	if (s.torn && ftruncate(a->fd, s.good_end) < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot cut off the torn last line: %s",
			   a->path, strerror(-r));
		return r;
	}
	a->size = s.good_end;
	if (s.have_last)
		a->anchor = s.last;
	*ret_broken = s.bad;
	if (s.bad)
		kf_err_set(err, "%s: %s", a->path, s.reason);
	return 0;
}

/*
 * Continues the chain from the active segment's last line, reading only
 * its end (and its first line, for the segment's range and age).
 */
static int audit_load(struct kf_audit *a, bool *ret_broken,
		      char err[KF_ERR_MAX])
{
	struct kf_audit_tail t;
	struct stat st;
	int r;

	if (fstat(a->fd, &st) < 0)
		return -errno;
	r = kf_audit_read_tail(a->fd, st.st_size, a->key, &t);
	if (r < 0) {
		kf_err_set(err, "%s: read: %s", a->path, strerror(-r));
		return r;
	}
	if (r == 0) {
		r = audit_scan(a, ret_broken, err);
	} else {
		if (t.good_end < st.st_size &&
		    ftruncate(a->fd, t.good_end) < 0) {
			r = -errno;
			kf_err_set(err,
				   "%s: cannot cut off the torn last line: %s",
				   a->path, strerror(-r));
			return r;
		}
		a->size = t.good_end;
		a->anchor.seq = t.seq;
		memcpy(a->anchor.chain, t.chain, sizeof(t.chain));
		r = 0;
		if (t.checked && !t.chain_ok) {
			*ret_broken = true;
			kf_err_set(err,
				   "%s: its last line (seq %llu) does not "
				   "chain to the line before it (another "
				   "master key, or an edit)",
				   a->path, (unsigned long long)t.seq);
		}
	}
	if (r == 0 && a->size > 0 &&
	    kf_audit_read_head(a->fd, &a->seg_first, &a->seg_started) < 0) {
		/* A first line that does not parse: the range starts at the
		 * line after the anchor's at worst (verify names it). */
		a->seg_first = a->anchor.seq ? 1 : 0;
		a->seg_started = kf_time_now();
	}
	return r;
}

/* The log's folder, held open for renames and fsyncs, and its name in it. */
static int open_dir(struct kf_audit *a, char err[KF_ERR_MAX])
{
	const char *slash = strrchr(a->path, '/');
	char *dir;
	int r = 0;

	if (!slash || !slash[1]) {
		kf_err_set(err, "%s: the audit log needs an absolute path",
			   a->path);
		return -EINVAL;
	}
	dir = slash == a->path ? strdup("/")
			       : strndup(a->path, (size_t)(slash - a->path));
	a->base = strdup(slash + 1);
	if (!dir || !a->base) {
		free(dir);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	a->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->dirfd < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot open the audit log's folder: %s",
			   dir, strerror(-r));
	}
	free(dir);
	return r;
}

int kf_audit_open(const char *path, const uint8_t key[KF_AUDIT_KEY_BYTES],
		  struct kf_audit **ret, bool *ret_broken, char err[KF_ERR_MAX])
{
	struct kf_audit *a;
	struct stat st;
	bool broken = false;
	int r, flags;

	if (sodium_init() < 0) {
		kf_err_set(err, "libsodium cannot be initialised");
		return -EIO;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	a->fd = -1;
	a->path = strdup(path);
	a->key = sodium_malloc(KF_AUDIT_KEY_BYTES);
	if (!a->path || !a->key) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto fail;
	}
	memcpy(a->key, key, KF_AUDIT_KEY_BYTES);
	a->dirfd = -1;
	r = -pthread_mutex_init(&a->lock, NULL);
	if (r < 0) {
		kf_err_set(err, "mutex: %s", strerror(-r));
		goto fail;
	}
	pthread_mutex_init(&a->rot_lock, NULL);
	r = open_dir(a, err);
	if (r < 0)
		goto fail_mutex;
	/* A crash between closing a segment and starting the next. */
	r = kf_audit_recover_missing(a, err);
	if (r < 0)
		goto fail_mutex;
	/*
	 * Whatever is at path when open(2) runs is what gets checked, on the
	 * descriptor: O_NONBLOCK so that a FIFO swapped in opens at once (and
	 * O_RDWR so that it opens even with no reader) and is then refused
	 * by fstat; O_NOFOLLOW so that the path is the file itself.  The
	 * existing lines are read through this descriptor too.
	 */
	a->fd = openat(a->dirfd, a->base,
		       O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
			   O_NONBLOCK,
		       0600);
	if (a->fd < 0) {
		r = -errno;
		if (r == -ELOOP)
			kf_err_set(err,
				   "%s: audit log is a symbolic link (give "
				   "the file's own path)",
				   path);
		else
			kf_err_set(err, "%s: cannot open audit log: %s", path,
				   strerror(-r));
		goto fail_mutex;
	}
	if (fstat(a->fd, &st) < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", path, strerror(-r));
		goto fail_mutex;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		kf_err_set(err, "%s: audit log is not a regular file", path);
		goto fail_mutex;
	}
	/* A regular file ignores O_NONBLOCK on Linux; drop it all the same,
	 * so that no write can ever see EAGAIN. */
	flags = fcntl(a->fd, F_GETFL);
	if (flags < 0 || fcntl(a->fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fcntl: %s", path, strerror(-r));
		goto fail_mutex;
	}
	if ((st.st_mode & 07777 & ~(mode_t)0600) != 0 &&
	    fchmod(a->fd, 0600) < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot tighten mode to 0600: %s", path,
			   strerror(-r));
		goto fail_mutex;
	}
	r = audit_load(a, &broken, err);
	if (r == 0)
		r = kf_audit_recover(a, err);
	if (r < 0)
		goto fail_mutex;
	if (ret_broken)
		*ret_broken = broken;
	*ret = a;
	return 0;
fail_mutex:
	pthread_mutex_destroy(&a->rot_lock);
	pthread_mutex_destroy(&a->lock);
fail:
	if (a->fd >= 0)
		close(a->fd);
	if (a->dirfd >= 0)
		close(a->dirfd);
	sodium_free(a->key);
	free(a->path);
	free(a->base);
	free(a);
	return r;
}

struct kf_audit *kf_audit_close(struct kf_audit *a)
{
	if (!a)
		return NULL;
	pthread_mutex_destroy(&a->rot_lock);
	pthread_mutex_destroy(&a->lock);
	close(a->fd);
	close(a->dirfd);
	sodium_free(a->key);
	free(a->path);
	free(a->base);
	free(a);
	return NULL;
}

int kf_audit_format(const struct kf_audit *a,
		    const struct kf_audit_anchor *prev, json_t *record,
		    struct kf_audit_pending *ret, char err[KF_ERR_MAX])
{
	char ts[KF_RFC3339_LEN + 1], hex[KF_AUDIT_CHAIN_HEX + 1];
	uint8_t chain[KF_AUDIT_CHAIN_BYTES];
	uint64_t seq = prev->seq + 1;
	char *body = NULL, *line = NULL;
	size_t body_len, line_len, key_len;
	const char *key;
	json_t *obj, *value;
	int r;

	if (!json_is_object(record)) {
		kf_err_set(err, "audit record is not a JSON object");
		return -EINVAL;
	}
	obj = json_object();
	if (!obj) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_time_rfc3339(kf_time_now(), ts);
	if (json_object_set_new(obj, "timestamp", json_string(ts)) < 0 ||
	    json_object_set_new(obj, "seq", json_integer((json_int_t)seq)) <
		0) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	/* jansson keeps insertion order, so the caller's order survives. */
	json_object_keylen_foreach(record, key, key_len, value)
	{
		if (is_reserved(key, key_len)) {
			r = -EINVAL;
			kf_err_set(err,
				   "audit record must not contain \"%.*s\" "
				   "(the log writes it)",
				   (int)key_len, key);
			goto out;
		}
		if (json_object_setn(obj, key, key_len, value) < 0) {
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
			goto out;
		}
	}
	/* ENSURE_ASCII: control characters and non-ASCII are escaped, so the
	 * record is one line of plain text. */
	body = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII |
				   JSON_PRESERVE_ORDER);
	if (!body) {
		r = -EINVAL;
		kf_err_set(err, "audit record cannot be encoded as JSON");
		goto out;
	}
	body_len = strlen(body);
	line_len = body_len - 1 + KF_AUDIT_CHAIN_SUFFIX_LEN + 1;
	if (line_len > KF_AUDIT_LINE_MAX) {
		r = -E2BIG;
		kf_err_set(err, "audit record too long (%zu bytes, at most %d)",
			   line_len, KF_AUDIT_LINE_MAX);
		goto out;
	}
	kf_audit_chain_mac(a->key, prev->chain, body, body_len - 1, chain);
	kf_hex(chain, sizeof(chain), hex);
	line = malloc(line_len + 1);
	if (!line) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	snprintf(line, line_len + 1, "%.*s%s%s\"}\n", (int)(body_len - 1), body,
		 KF_AUDIT_CHAIN_HEAD, hex);
	ret->line = line;
	ret->len = line_len;
	ret->anchor.seq = seq;
	memcpy(ret->anchor.chain, chain, sizeof(chain));
	r = 0;
out:
	free(body);
	json_decref(obj);
	return r;
}

int kf_audit_write(struct kf_audit *a, const char *line, size_t len, bool sync,
		   char err[KF_ERR_MAX])
{
	ssize_t n;
	int r;

	if (a->dirty) {
		if (ftruncate(a->fd, a->size) < 0) {
			r = -errno;
			kf_err_set(err,
				   "%s: cannot remove a partial line left by "
				   "an earlier failure: %s",
				   a->path, strerror(-r));
			return r;
		}
		a->dirty = false;
	}
	do
		n = write(a->fd, line, len);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		r = -errno;
		kf_err_set(err, "%s: write: %s", a->path, strerror(-r));
		goto undo;
	}
	if ((size_t)n < len) {
		/* A short write does not say why (full disk, quota, file size
		 * limit); writing the rest reports the errno.  The line is cut
		 * back either way: a line is never split across writes. */
		ssize_t m = write(a->fd, line + n, len - (size_t)n);

		r = m < 0 ? -errno : -EIO;
		kf_err_set(err, "%s: short write (%zd of %zu bytes): %s",
			   a->path, n, len, strerror(-r));
		goto undo;
	}
	/* Never retried: after a failed fdatasync the pages are marked
	 * clean and a second call would "succeed" with nothing written. */
	if (sync && fdatasync(a->fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fdatasync: %s", a->path, strerror(-r));
		goto undo;
	}
	a->size += (off_t)len;
	return 0;
undo:
	if (ftruncate(a->fd, a->size) < 0) {
		a->dirty = true;
		kf_err_prefix(err, "(partial line not removed yet: %s) ",
			      strerror(errno));
	}
	return r;
}

void kf_audit_committed(struct kf_audit *a, const struct kf_audit_pending *p)
{
	a->anchor = p->anchor;
	if (a->seg_first == 0) {
		a->seg_first = p->anchor.seq;
		a->seg_started = kf_time_now();
	}
	if (a->on_line)
		a->on_line(a->on_line_ctx, p->line, p->len);
}

/* Formats and writes one line under the lock; the anchor it left. */
static int append_line(struct kf_audit *a, json_t *record, bool sync,
		       struct kf_audit_anchor *ret_anchor, char err[KF_ERR_MAX])
{
	struct kf_audit_pending p = {0};
	int r;

	kf_audit_rotate_auto(a);
	pthread_mutex_lock(&a->lock);
	r = kf_audit_format(a, &a->anchor, record, &p, err);
	if (r >= 0)
		r = kf_audit_write(a, p.line, p.len, sync, err);
	if (r >= 0) {
		kf_audit_committed(a, &p);
		if (ret_anchor)
			*ret_anchor = p.anchor;
	} else {
		a->stats.write_failures++;
	}
	pthread_mutex_unlock(&a->lock);
	free(p.line);
	return r;
}

int kf_audit_append(struct kf_audit *a, json_t *record, bool sync,
		    char err[KF_ERR_MAX])
{
	return append_line(a, record, sync, NULL, err);
}

int kf_audit_append_anchored(struct kf_audit *a, json_t *record,
			     struct kf_audit_anchor *ret_anchor,
			     char err[KF_ERR_MAX])
{
	return append_line(a, record, false, ret_anchor, err);
}

int kf_audit_sync(struct kf_audit *a, char err[KF_ERR_MAX])
{
	int r = 0;

	/*
	 * Outside the append lock, so readers' opens never wait for the disk;
	 * under rot_lock, which holds the active file still (a rotation has
	 * synced the segment before it and the folder).  Never retried.
	 */
	pthread_mutex_lock(&a->rot_lock);
	if (fdatasync(a->fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fdatasync: %s", a->path, strerror(-r));
	}
	pthread_mutex_unlock(&a->rot_lock);
	return r;
}

void kf_audit_anchor(struct kf_audit *a, struct kf_audit_anchor *ret)
{
	pthread_mutex_lock(&a->lock);
	*ret = a->anchor;
	pthread_mutex_unlock(&a->lock);
}

void kf_audit_set_sealed(struct kf_audit *a, uint64_t seq)
{
	pthread_mutex_lock(&a->lock);
	a->sealed_seq = seq;
	pthread_mutex_unlock(&a->lock);
}

void kf_audit_set_limits(struct kf_audit *a,
			 const struct kf_audit_limits *limits)
{
	pthread_mutex_lock(&a->lock);
	a->limits = *limits;
	pthread_mutex_unlock(&a->lock);
}

void kf_audit_on_line(struct kf_audit *a, kf_audit_line_fn fn, void *ctx)
{
	pthread_mutex_lock(&a->lock);
	a->on_line = fn;
	a->on_line_ctx = ctx;
	pthread_mutex_unlock(&a->lock);
}

void kf_audit_stats(struct kf_audit *a, struct kf_audit_stats *ret)
{
	pthread_mutex_lock(&a->lock);
	*ret = a->stats;
	ret->active_bytes = (uint64_t)a->size;
	ret->active_since = a->seg_started;
	pthread_mutex_unlock(&a->lock);
}
