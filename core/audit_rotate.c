// SPDX-License-Identifier: MIT
/*
 * audit_rotate: the log as a chain of segments (README: Audit).
 *
 * Closing the active segment "audit.log" holding seq F..L-1:
 *
 *   1. the next segment is prepared as ".audit.log.next": its first line,
 *      an audit_segment_open record, chains to the close record below;
 *   2. the close record (seq L: audit_segment_close, naming the segment
 *      "audit-F-L.log" and its range) is appended to audit.log;
 *   3. audit.log is renamed to audit-F-L.log;
 *   4. .audit.log.next is renamed to audit.log, and appends go there;
 *   5. outside the append lock: the closed segment, the new one and the
 *      folder are synced.
 *
 * A failure at 1-4 undoes what was done (the close record is cut off, the
 * names put back): the active segment keeps growing and the caller hears
 * why.  A crash between 2 and 4 is finished at the next open: an active
 * file that ends with its close record is renamed and followed by a new
 * one (kf_audit_recover); a missing active file is started after the
 * newest closed segment (kf_audit_recover_missing).
 *
 * Retention (kf_audit_retain, which the manager calls once it has sealed
 * the log's anchor into the state): beyond `keep` closed segments, the
 * oldest are deleted after an audit_segment_delete record naming them
 * (synced) says where the retained history starts, so a verifier can tell
 * deleted history from missing history.  The segment holding the sealed
 * anchor is never deleted, so the log's end can always be checked.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit_private.h"

#define DELETE_BATCH 40 /* names per audit_segment_delete record */

static const char *const reasons[] = {
    [KF_AUDIT_CLOSE_SIZE] = "size",
    [KF_AUDIT_CLOSE_TIME] = "time",
    [KF_AUDIT_CLOSE_REQUEST] = "request",
};

/* One closed segment found in the folder. */
struct seg {
	uint64_t first, last;
	char name[KF_AUDIT_NAME_MAX];
};

static int64_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* ".audit.log.next": where the next segment is prepared. */
static void next_name(const struct kf_audit *a, char out[KF_AUDIT_NAME_MAX])
{
	snprintf(out, KF_AUDIT_NAME_MAX, ".%s.next", a->base);
}

static int by_first(const void *x, const void *y)
{
	const struct seg *a = x, *b = y;

	return a->first < b->first ? -1 : a->first > b->first;
}

/*
 * The closed segments in the log's folder, oldest first: *ret (malloc'd)
 * and *ret_n.  0 or -errno.
 */
static int list_segments(struct kf_audit *a, struct seg **ret, size_t *ret_n)
{
	int fd = openat(a->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct seg *v = NULL, *grown;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct seg s;

		if (!kf_audit_segment_parse(a->base, de->d_name, &s.first,
					    &s.last))
			continue;
		snprintf(s.name, sizeof(s.name), "%s", de->d_name);
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			grown = realloc(v, cap * sizeof(*v));
			if (!grown) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = grown;
		}
		v[n++] = s;
	}
	closedir(d);
	if (n > 1)
		qsort(v, n, sizeof(*v), by_first);
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Writes all of line to fd (a new file: no partial line to undo). */
static int write_all(int fd, const char *line, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, line, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		line += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Prepares the next segment as ".<base>.next" holding its open record,
 * which chains to prev, the last line of the segment `prev_name` (seq
 * prev_first..prev->seq).  0 with the file's fd and line, or -errno.
 */
static int start_next(struct kf_audit *a, const char *prev_name,
		      uint64_t prev_first, const struct kf_audit_anchor *prev,
		      int *ret_fd, struct kf_audit_pending *ret,
		      char err[KF_ERR_MAX])
{
	char tmp[KF_AUDIT_NAME_MAX], hex[KF_AUDIT_CHAIN_HEX + 1];
	json_t *rec = json_object();
	int fd = -1, r;

	next_name(a, tmp);
	kf_hex(prev->chain, sizeof(prev->chain), hex);
	if (!rec ||
	    json_object_set_new(rec, "event",
				json_string("audit_segment_open")) < 0 ||
	    json_object_set_new(rec, "previous", json_string(prev_name)) < 0 ||
	    json_object_set_new(rec, "previous_first_seq",
				json_integer((json_int_t)prev_first)) < 0 ||
	    json_object_set_new(rec, "previous_last_seq",
				json_integer((json_int_t)prev->seq)) < 0 ||
	    json_object_set_new(rec, "previous_chain", json_string(hex)) < 0) {
		json_decref(rec);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = kf_audit_format(a, prev, rec, ret, err);
	json_decref(rec);
	if (r < 0)
		return r;
	/* A leftover of a crash holds nothing that was acknowledged. */
	if (unlinkat(a->dirfd, tmp, 0) < 0 && errno != ENOENT) {
		r = -errno;
		goto fail;
	}
	fd = openat(a->dirfd, tmp,
		    O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC |
			O_NOFOLLOW,
		    0600);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	r = write_all(fd, ret->line, ret->len);
	if (r < 0) {
		close(fd);
		(void)unlinkat(a->dirfd, tmp, 0);
		goto fail;
	}
	*ret_fd = fd;
	return 0;
fail:
	kf_err_set(err, "%s: cannot start the next segment (%s): %s", a->path,
		   tmp, strerror(-r));
	free(ret->line);
	ret->line = NULL;
	return r;
}

/* The close record of the active segment `name`. */
static json_t *close_record(const char *name, uint64_t first, uint64_t last,
			    enum kf_audit_close_reason why, json_t *who)
{
	json_t *rec = json_object();

	if (!rec)
		return NULL;
	if (json_object_set_new(rec, "event",
				json_string("audit_segment_close")) < 0 ||
	    json_object_set_new(rec, "segment", json_string(name)) < 0 ||
	    json_object_set_new(rec, "first_seq",
				json_integer((json_int_t)first)) < 0 ||
	    json_object_set_new(rec, "last_seq",
				json_integer((json_int_t)last)) < 0 ||
	    json_object_set_new(rec, "reason", json_string(reasons[why])) < 0 ||
	    (who && json_object_update_missing(rec, who) < 0)) {
		json_decref(rec);
		return NULL;
	}
	return rec;
}

/* Syncs a closed segment's fd (then closes it), the new one and the
 * folder.  0 or the first -errno, described in err. */
static int sync_after(struct kf_audit *a, int old_fd, int new_fd,
		      const char *name, char err[KF_ERR_MAX])
{
	int r = 0;

	if (fdatasync(old_fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fdatasync of the closed segment: %s", name,
			   strerror(-r));
	}
	close(old_fd);
	if (r == 0 && fdatasync(new_fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fdatasync: %s", a->path, strerror(-r));
	}
	if (r == 0 && fsync(a->dirfd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fsync of its folder: %s", a->path,
			   strerror(-r));
	}
	return r;
}

/*
 * Appends a record to the active segment without the automatic rotation
 * (rot_lock is held) and syncs it.  0 or -errno.
 */
static int append_synced(struct kf_audit *a, json_t *rec, char err[KF_ERR_MAX])
{
	struct kf_audit_pending p = {0};
	int r;

	pthread_mutex_lock(&a->lock);
	r = kf_audit_format(a, &a->anchor, rec, &p, err);
	if (r == 0)
		r = kf_audit_write(a, p.line, p.len, false, err);
	if (r == 0)
		kf_audit_committed(a, &p);
	else
		a->stats.write_failures++;
	pthread_mutex_unlock(&a->lock);
	free(p.line);
	if (r == 0 && fdatasync(a->fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fdatasync: %s", a->path, strerror(-r));
	}
	return r;
}

/* Deletes the oldest closed segments beyond `keep`; rot_lock held. */
static int retain(struct kf_audit *a, char err[KF_ERR_MAX])
{
	struct seg *v = NULL;
	size_t n = 0, drop, done = 0;
	uint64_t sealed;
	unsigned keep;
	int r;

	pthread_mutex_lock(&a->lock);
	keep = a->limits.keep;
	sealed = a->sealed_seq;
	pthread_mutex_unlock(&a->lock);
	if (keep == 0)
		return 0;
	r = list_segments(a, &v, &n);
	if (r < 0) {
		kf_err_set(err, "%s: listing closed segments: %s", a->path,
			   strerror(-r));
		return r;
	}
	drop = n > keep ? n - keep : 0;
	/* Never the segment holding the state's anchor, nor a later one. */
	while (drop > 0 && v[drop - 1].last >= sealed)
		drop--;
	while (r == 0 && done < drop) {
		size_t k =
		    drop - done < DELETE_BATCH ? drop - done : DELETE_BATCH;
		json_t *rec = json_object(), *names = json_array();

		for (size_t i = 0; names && i < k; i++)
			json_array_append_new(names,
					      json_string(v[done + i].name));
		if (!rec || !names ||
		    json_object_set_new(rec, "event",
					json_string("audit_segment_delete")) <
			0 ||
		    json_object_set_new(rec, "segments", names) < 0 ||
		    json_object_set_new(
			rec, "first_seq",
			json_integer((json_int_t)v[done].first)) < 0 ||
		    json_object_set_new(
			rec, "last_seq",
			json_integer((json_int_t)v[done + k - 1].last)) < 0 ||
		    json_object_set_new(
			rec, "history_from_seq",
			json_integer((json_int_t)v[done + k - 1].last + 1)) <
			0 ||
		    json_object_set_new(rec, "keep", json_integer(keep)) < 0) {
			json_decref(rec);
			kf_err_set(err, "out of memory");
			r = -ENOMEM;
			break;
		}
		/* The record first: history is never gone unexplained. */
		r = append_synced(a, rec, err);
		json_decref(rec);
		KF_CRASH("audit/retain/recorded");
		for (size_t i = 0; r == 0 && i < k; i++) {
			if (unlinkat(a->dirfd, v[done + i].name, 0) < 0 &&
			    errno != ENOENT) {
				r = -errno;
				kf_err_set(err, "%s: cannot delete: %s",
					   v[done + i].name, strerror(-r));
				break;
			}
			KF_CRASH("audit/retain/unlinked");
			pthread_mutex_lock(&a->lock);
			if (a->stats.closed > 0)
				a->stats.closed--;
			pthread_mutex_unlock(&a->lock);
		}
		done += k;
	}
	if (done > 0 && fsync(a->dirfd) < 0 && r == 0) {
		r = -errno;
		kf_err_set(err, "%s: fsync of its folder: %s", a->path,
			   strerror(-r));
	}
	if (done > 0)
		KF_CRASH("audit/retain/dir_synced");
	free(v);
	return r;
}

/* Closes the active segment and starts the next; rot_lock held. */
static int rotate_locked(struct kf_audit *a, enum kf_audit_close_reason why,
			 json_t *who, char *ret_name, char err[KF_ERR_MAX])
{
	struct kf_audit_pending pc = {0}, po = {0};
	char name[KF_AUDIT_NAME_MAX], tmp[KF_AUDIT_NAME_MAX];
	uint64_t first, last;
	off_t before;
	int nfd = -1, old_fd, r;
	json_t *rec;

	next_name(a, tmp);
	pthread_mutex_lock(&a->lock);
	if (a->size == 0) {
		pthread_mutex_unlock(&a->lock);
		kf_err_set(err, "%s: the active segment is empty", a->path);
		return -ENODATA;
	}
	last = a->anchor.seq + 1;
	first = a->seg_first ? a->seg_first : last;
	r = kf_audit_segment_name(a->base, first, last, name);
	if (r < 0) {
		kf_err_set(err, "%s: segment name too long", a->path);
		goto unlock;
	}
	rec = close_record(name, first, last, why, who);
	if (!rec) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto unlock;
	}
	r = kf_audit_format(a, &a->anchor, rec, &pc, err);
	json_decref(rec);
	if (r < 0)
		goto unlock;
	r = start_next(a, name, first, &pc.anchor, &nfd, &po, err);
	if (r < 0)
		goto unlock;
	KF_CRASH("audit/rotate/next_prepared");
	before = a->size;
	r = kf_audit_write(a, pc.line, pc.len, false, err);
	if (r < 0)
		goto drop_next;
	KF_CRASH("audit/rotate/close_written");
	if (renameat(a->dirfd, a->base, a->dirfd, name) < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot rename to %s: %s", a->path, name,
			   strerror(-r));
		goto cut_close;
	}
	KF_CRASH("audit/rotate/closed_renamed");
	if (renameat(a->dirfd, tmp, a->dirfd, a->base) < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot rename %s into place: %s", a->path,
			   tmp, strerror(-r));
		(void)renameat(a->dirfd, name, a->dirfd, a->base);
		goto cut_close;
	}
	KF_CRASH("audit/rotate/next_renamed");
	kf_audit_committed(a, &pc);
	old_fd = a->fd;
	a->fd = nfd;
	a->size = (off_t)po.len;
	a->dirty = false;
	a->seg_first = 0;
	kf_audit_committed(a, &po);
	a->stats.closed++;
	a->stats.rotations++;
	pthread_mutex_unlock(&a->lock);
	if (ret_name)
		snprintf(ret_name, KF_AUDIT_NAME_MAX, "%s", name);
	r = sync_after(a, old_fd, nfd, name, err);
	KF_CRASH("audit/rotate/synced");
	goto out;
cut_close:
	if (ftruncate(a->fd, before) < 0)
		a->dirty = true;
	a->size = before;
drop_next:
	close(nfd);
	(void)unlinkat(a->dirfd, tmp, 0);
unlock:
	pthread_mutex_unlock(&a->lock);
out:
	free(pc.line);
	free(po.line);
	return r;
}

int kf_audit_retain(struct kf_audit *a, char err[KF_ERR_MAX])
{
	int r;

	pthread_mutex_lock(&a->rot_lock);
	r = retain(a, err);
	pthread_mutex_unlock(&a->rot_lock);
	return r;
}

int kf_audit_rotate(struct kf_audit *a, enum kf_audit_close_reason why,
		    json_t *who, char *ret_name, char err[KF_ERR_MAX])
{
	int r;

	pthread_mutex_lock(&a->rot_lock);
	r = rotate_locked(a, why, who, ret_name, err);
	pthread_mutex_unlock(&a->rot_lock);
	return r;
}

/* Why the active segment is due to close now, or -1; lock held. */
static int due(const struct kf_audit *a)
{
	if (a->size == 0)
		return -1;
	if (a->limits.max_size > 0 && (uint64_t)a->size >= a->limits.max_size)
		return KF_AUDIT_CLOSE_SIZE;
	if (a->limits.max_age > 0 && a->seg_started > 0 &&
	    kf_time_now() - a->seg_started >= a->limits.max_age)
		return KF_AUDIT_CLOSE_TIME;
	return -1;
}

void kf_audit_rotate_auto(struct kf_audit *a)
{
	char err[KF_ERR_MAX];
	int why, r;

	pthread_mutex_lock(&a->lock);
	why = mono_s() >= a->retry_at ? due(a) : -1;
	pthread_mutex_unlock(&a->lock);
	/* Another thread rotating: this line goes where the log is. */
	if (why < 0 || pthread_mutex_trylock(&a->rot_lock) != 0)
		return;
	pthread_mutex_lock(&a->lock);
	why = due(a); /* rotated meanwhile? */
	pthread_mutex_unlock(&a->lock);
	r = why < 0 ? 0
		    : rotate_locked(a, (enum kf_audit_close_reason)why, NULL,
				    NULL, err);
	pthread_mutex_unlock(&a->rot_lock);
	if (r < 0) {
		pthread_mutex_lock(&a->lock);
		a->stats.rotate_failures++;
		snprintf(a->rotate_error, sizeof(a->rotate_error), "%s", err);
		a->retry_at = mono_s() + 1;
		pthread_mutex_unlock(&a->lock);
	}
}

int kf_audit_rotate_if_due(struct kf_audit *a, char err[KF_ERR_MAX])
{
	int why, r = 0;

	pthread_mutex_lock(&a->rot_lock);
	pthread_mutex_lock(&a->lock);
	why = due(a);
	pthread_mutex_unlock(&a->lock);
	if (why >= 0)
		r = rotate_locked(a, (enum kf_audit_close_reason)why, NULL,
				  NULL, err);
	pthread_mutex_unlock(&a->rot_lock);
	return r;
}

/* --- finishing what a crash cut short -------------------------------- */

/* The last line of closed segment s: its tail.  0 or -errno. */
static int segment_tail(struct kf_audit *a, const struct seg *s,
			struct kf_audit_tail *ret, char err[KF_ERR_MAX])
{
	struct stat st;
	int fd, r;

	fd = openat(a->dirfd, s->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		kf_err_set(err, "%s: %s", s->name, strerror(-r));
		return r;
	}
	r = kf_audit_read_tail(fd, st.st_size, NULL, ret);
	close(fd);
	if (r <= 0 || ret->seq == 0) {
		kf_err_set(err,
			   "%s: its last line cannot be read; the log cannot "
			   "go on after it (run keyfs audit verify)",
			   s->name);
		return r < 0 ? r : -EBADMSG;
	}
	return 0;
}

/* Whether the prepared next segment's open record follows segment s. */
static bool next_follows(struct kf_audit *a, const struct seg *s)
{
	char tmp[KF_AUDIT_NAME_MAX];
	uint64_t seq = 0;
	int64_t t;
	int fd;
	bool ok;

	next_name(a, tmp);
	fd = openat(a->dirfd, tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	ok = kf_audit_read_head(fd, &seq, &t) == 0 && seq == s->last + 1;
	close(fd);
	return ok;
}

int kf_audit_recover_missing(struct kf_audit *a, char err[KF_ERR_MAX])
{
	struct kf_audit_pending po = {0};
	char tmp[KF_AUDIT_NAME_MAX];
	struct kf_audit_tail t;
	struct seg *v = NULL;
	size_t n = 0;
	int fd = -1, r;

	if (faccessat(a->dirfd, a->base, F_OK, AT_SYMLINK_NOFOLLOW) == 0 ||
	    errno != ENOENT)
		return 0; /* there, or open will say what is wrong */
	r = list_segments(a, &v, &n);
	if (r < 0) {
		kf_err_set(err, "%s: listing closed segments: %s", a->path,
			   strerror(-r));
		goto out;
	}
	if (n == 0)
		goto out; /* a new log */
	next_name(a, tmp);
	if (!next_follows(a, &v[n - 1])) {
		struct seg *s = &v[n - 1];
		struct kf_audit_anchor prev;

		r = segment_tail(a, s, &t, err);
		if (r < 0)
			goto out;
		prev.seq = t.seq;
		memcpy(prev.chain, t.chain, sizeof(prev.chain));
		r = start_next(a, s->name, s->first, &prev, &fd, &po, err);
		if (r < 0)
			goto out;
		r = fdatasync(fd) < 0 ? -errno : 0;
		close(fd);
	}
	if (r == 0 && renameat(a->dirfd, tmp, a->dirfd, a->base) < 0)
		r = -errno;
	if (r == 0 && fsync(a->dirfd) < 0)
		r = -errno;
	if (r < 0)
		kf_err_set(err, "%s: cannot start the active segment: %s",
			   a->path, strerror(-r));
out:
	free(po.line);
	free(v);
	return r;
}

/* The active file ends with its close record: finish that rotation. */
static int finish_close(struct kf_audit *a, const struct kf_audit_tail *t,
			char err[KF_ERR_MAX])
{
	struct kf_audit_pending po = {0};
	char name[KF_AUDIT_NAME_MAX], tmp[KF_AUDIT_NAME_MAX];
	uint64_t first = a->seg_first ? a->seg_first : t->seq;
	uint64_t f, l;
	int nfd = -1, r;

	if (kf_audit_segment_parse(a->base, t->segment, &f, &l) && l == t->seq)
		snprintf(name, sizeof(name), "%s", t->segment);
	else if (kf_audit_segment_name(a->base, first, t->seq, name) < 0)
		return -ENAMETOOLONG;
	next_name(a, tmp);
	r = start_next(a, name, first, &a->anchor, &nfd, &po, err);
	if (r < 0)
		return r;
	if (fdatasync(a->fd) < 0 || fdatasync(nfd) < 0 ||
	    renameat(a->dirfd, a->base, a->dirfd, name) < 0 ||
	    renameat(a->dirfd, tmp, a->dirfd, a->base) < 0 ||
	    fsync(a->dirfd) < 0) {
		r = -errno;
		kf_err_set(err,
			   "%s: cannot finish closing the segment a crash "
			   "interrupted: %s",
			   a->path, strerror(-r));
		close(nfd);
		(void)unlinkat(a->dirfd, tmp, 0);
		free(po.line);
		return r;
	}
	close(a->fd);
	a->fd = nfd;
	a->size = (off_t)po.len;
	a->seg_first = 0;
	kf_audit_committed(a, &po);
	free(po.line);
	return 0;
}

int kf_audit_recover(struct kf_audit *a, char err[KF_ERR_MAX])
{
	char tmp[KF_AUDIT_NAME_MAX];
	struct kf_audit_tail t;
	struct seg *v = NULL;
	size_t n = 0;
	int r;

	r = kf_audit_read_tail(a->fd, a->size, NULL, &t);
	if (r > 0 && strcmp(t.event, "audit_segment_close") == 0 &&
	    t.seq == a->anchor.seq) {
		r = finish_close(a, &t, err);
		if (r < 0)
			return r;
	}
	/* A next segment prepared but never renamed into place. */
	next_name(a, tmp);
	if (unlinkat(a->dirfd, tmp, 0) < 0 && errno != ENOENT) {
		r = -errno;
		kf_err_set(err, "%s: cannot remove %s: %s", a->path, tmp,
			   strerror(-r));
		return r;
	}
	r = list_segments(a, &v, &n);
	if (r < 0) {
		kf_err_set(err, "%s: listing closed segments: %s", a->path,
			   strerror(-r));
		return r;
	}
	a->stats.closed = n;
	free(v);
	return 0;
}
