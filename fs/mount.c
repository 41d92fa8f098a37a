// SPDX-License-Identifier: MIT
/*
 * mount: the keyfs FUSE daemon (low-level API).
 *
 * Freshness: names and attributes are cached by the kernel for a long time
 * (KF_TTL), which halves the cost of a key read; whatever a change affects is
 * invalidated before the control write that made it returns.  The
 * invalidations are sent by a dedicated thread, never from a request
 * handler: the handler hands the work over and waits for it to finish.
 *
 * Read modes: in `audited` mode every open of a key file reaches this daemon,
 * is audited, takes a snapshot of the content (so the file keeps the key it
 * opened with) and is served with direct_io.  In `cached` mode open answers
 * ENOSYS (FUSE_CAP_NO_OPEN_SUPPORT): the kernel then opens every file without
 * asking and serves key files from its page cache.
 */
#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 14)

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <sodium.h>

#include "log.h"
#include "manager.h"
#include "mount.h"
#include "tree.h"

#define KF_TTL 86400.0	   /* seconds; stable names and attributes */
#define CTL_INPUT_MAX 4096 /* longer control writes are refused */
#define RESULT_MAX (KF_ERR_MAX + 64)

/* Per open file (audited mode; cached mode has no opens). */
struct kf_handle {
	uint8_t *buf; /* snapshot, sodium_malloc'd, or NULL */
	size_t len;
	pthread_mutex_t lock;	 /* protects result */
	char result[RESULT_MAX]; /* last control write's outcome */
};

/* Requests handled, by kind: logged on SIGUSR1 (the benchmark reads them). */
enum req_kind {
	RQ_LOOKUP,
	RQ_GETATTR,
	RQ_OPEN,
	RQ_READ,
	RQ_RELEASE,
	RQ_WRITE,
	RQ_READDIR,
	RQ_OTHER,
	RQ_COUNT
};
static const char *const req_names[RQ_COUNT] = {"lookup",  "getattr", "open",
						"read",	   "release", "write",
						"readdir", "other"};

struct kf_fs {
	_Atomic unsigned long requests[RQ_COUNT];
	struct kf_manager *m;
	const struct kf_config *cfg;
	struct kf_tree *tree;
	struct fuse_session *se;
	const char *mountpoint;
	bool cached;

	/* Invalidation worker. */
	pthread_t inval_thread;
	pthread_mutex_t inval_lock;
	pthread_cond_t inval_cond;
	uint64_t inval_wanted;	  /* protected by inval_lock */
	uint64_t inval_done;	  /* protected by inval_lock */
	bool inval_stop;	  /* protected by inval_lock */
	struct kf_keyring *shown; /* inval thread only: last invalidated */

	/* Automatic rotation. */
	pthread_t rot_thread;
	pthread_mutex_t rot_lock;
	pthread_cond_t rot_cond;
	bool rot_stop; /* protected by rot_lock */
};

static struct kf_fs *kf_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void count(fuse_req_t req, enum req_kind k)
{
	kf_fs(req)->requests[k]++;
}

static struct kf_caller caller_of(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct kf_caller who = {ctx->uid, ctx->gid, ctx->pid};

	return who;
}

/* --- invalidation ------------------------------------------------------- */

static void inval_inode(struct kf_fs *fs, struct kf_node n)
{
	/* -ENOENT: the kernel does not hold it, nothing to drop. */
	(void)fuse_lowlevel_notify_inval_inode(fs->se, kf_tree_ino(n), 0, 0);
}

static void inval_entry(struct kf_fs *fs, struct kf_node parent,
			const char *name)
{
	(void)fuse_lowlevel_notify_inval_entry(fs->se, kf_tree_ino(parent),
					       name, strlen(name));
}

/* Everything under versions/<v>/. */
static void inval_version(struct kf_fs *fs, uint32_t v)
{
	struct kf_node n = {KF_NODE_VERSIONS_DIR, 0, 0};
	char name[16];

	snprintf(name, sizeof(name), "%" PRIu32, v);
	inval_entry(fs, n, name);
	n.version = v;
	n.kind = KF_NODE_VDIR;
	inval_inode(fs, n);
	n.kind = KF_NODE_VKEY;
	inval_inode(fs, n);
	n.kind = KF_NODE_VDERIVED_DIR;
	inval_inode(fs, n);
	n.kind = KF_NODE_VDERIVED;
	for (size_t i = 0; i < fs->cfg->n_purposes; i++) {
		n.index = (uint32_t)i;
		inval_inode(fs, n);
	}
}

/* True if version e of one keyring is absent from, or differs in, other. */
static bool version_changed(const struct kf_keyring_entry *e,
			    const struct kf_keyring *other)
{
	const struct kf_keyring_entry *o = kf_keyring_find(other, e->version);

	return !o || sodium_memcmp(o->key, e->key, KF_KEY_BYTES) != 0;
}

/* Drops from the kernel every name, attribute and page that changed. */
static void invalidate_changes(struct kf_fs *fs)
{
	static const enum kf_node_kind top[] = {
	    KF_NODE_ROOT,	 KF_NODE_CURRENT, KF_NODE_PREVIOUS,
	    KF_NODE_VERSION,	 KF_NODE_STATUS,  KF_NODE_VERSIONS_DIR,
	    KF_NODE_BACKUPS_DIR, KF_NODE_AUDIT,
	};
	struct kf_keyring *now = kf_manager_keyring(fs->m), *old = fs->shown;
	struct kf_node n = {KF_NODE_ROOT, 0, 0};

	inval_entry(fs, n, "previous");
	for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
		n.kind = top[i];
		inval_inode(fs, n);
	}
	n.kind = KF_NODE_DERIVED;
	for (size_t i = 0; i < fs->cfg->n_purposes; i++) {
		n.index = (uint32_t)i;
		inval_inode(fs, n);
	}
	for (size_t i = 0; i < kf_keyring_count(now); i++) {
		const struct kf_keyring_entry *e = kf_keyring_at(now, i);

		if (!old || version_changed(e, old))
			inval_version(fs, e->version);
	}
	for (size_t i = 0; old && i < kf_keyring_count(old); i++) {
		const struct kf_keyring_entry *e = kf_keyring_at(old, i);

		if (version_changed(e, now))
			inval_version(fs, e->version);
	}
	kf_keyring_unref(old);
	fs->shown = now;
}

static void *inval_main(void *arg)
{
	struct kf_fs *fs = arg;

	pthread_mutex_lock(&fs->inval_lock);
	while (!fs->inval_stop) {
		if (fs->inval_done == fs->inval_wanted) {
			pthread_cond_wait(&fs->inval_cond, &fs->inval_lock);
			continue;
		}
		uint64_t target = fs->inval_wanted;

		pthread_mutex_unlock(&fs->inval_lock);
		invalidate_changes(fs);
		pthread_mutex_lock(&fs->inval_lock);
		fs->inval_done = target;
		pthread_cond_broadcast(&fs->inval_cond);
	}
	pthread_mutex_unlock(&fs->inval_lock);
	return NULL;
}

/*
 * The manager's change callback: runs in a request handler (a control
 * write) or in the rotation thread.  Waits until the invalidation thread has
 * dropped everything that changed, so the write returns only then.
 */
static void on_change(void *arg)
{
	struct kf_fs *fs = arg;
	uint64_t mine;

	pthread_mutex_lock(&fs->inval_lock);
	mine = ++fs->inval_wanted;
	pthread_cond_broadcast(&fs->inval_cond);
	while (fs->inval_done < mine && !fs->inval_stop)
		pthread_cond_wait(&fs->inval_cond, &fs->inval_lock);
	pthread_mutex_unlock(&fs->inval_lock);
}

/* --- automatic rotation --------------------------------------------------- */

static void *rot_main(void *arg)
{
	struct kf_fs *fs = arg;

	pthread_mutex_lock(&fs->rot_lock);
	while (!fs->rot_stop) {
		int64_t due = kf_manager_rotation_due_in(fs->m);
		struct timespec until;

		if (due == 0) {
			char err[KF_ERR_MAX];
			bool rotated;

			pthread_mutex_unlock(&fs->rot_lock);
			if (kf_manager_rotate_if_due(fs->m, &rotated, err) <
			    0) {
				kf_log(LOG_ALERT,
				       "automatic rotation failed: %s; "
				       "retrying in a minute",
				       err);
				due = 60;
			} else if (rotated) {
				kf_log(LOG_NOTICE, "automatic rotation done");
			}
			pthread_mutex_lock(&fs->rot_lock);
			if (due == 0)
				continue;
		}
		clock_gettime(CLOCK_REALTIME, &until);
		/* Re-check at least hourly: the clock may be set. */
		until.tv_sec += due < 0 || due > 3600 ? 3600 : due;
		pthread_cond_timedwait(&fs->rot_cond, &fs->rot_lock, &until);
		if (!fs->rot_stop) {
			char err[KF_ERR_MAX];

			/* Anchor the open records of the past hour. */
			pthread_mutex_unlock(&fs->rot_lock);
			if (kf_manager_checkpoint(fs->m, err) < 0)
				kf_log(LOG_ALERT,
				       "sealing the audit anchor: %s", err);
			pthread_mutex_lock(&fs->rot_lock);
		}
	}
	pthread_mutex_unlock(&fs->rot_lock);
	return NULL;
}

/* --- attributes and names ------------------------------------------------- */

static double ttl_of(struct kf_node n)
{
	return kf_tree_flags(n.kind) & KF_NODE_F_VOLATILE ? 0.0 : KF_TTL;
}

static int fill_entry(struct kf_fs *fs, const struct kf_keyring *kr,
		      struct kf_node n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = kf_tree_ino(n);
	e->generation = 1;
	e->attr_timeout = ttl_of(n);
	e->entry_timeout = ttl_of(n);
	return kf_tree_stat(fs->tree, kr, n, &e->attr);
}

static void kf_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_keyring *kr = kf_manager_keyring(fs->m);
	struct fuse_entry_param e;
	struct kf_node n;
	int r;

	count(req, RQ_LOOKUP);
	r = kf_tree_lookup(fs->tree, kr, kf_tree_node(parent), name, &n);
	if (r == 0)
		r = fill_entry(fs, kr, n, &e);
	kf_keyring_unref(kr);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, &e);
}

static void kf_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_keyring *kr = kf_manager_keyring(fs->m);
	struct kf_node n = kf_tree_node(ino);
	struct stat st;
	int r;

	count(req, RQ_GETATTR);
	(void)fi;
	r = kf_tree_stat(fs->tree, kr, n, &st);
	kf_keyring_unref(kr);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, ttl_of(n));
}

/*
 * The tree is read-only: only truncation of a control file (what `echo >`
 * does before writing) is accepted, as a no-op.
 */
static void kf_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct kf_node n = kf_tree_node(ino);

	(void)fi;
	if ((kf_tree_flags(n.kind) & KF_NODE_F_CONTROL) &&
	    (to_set & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME |
			FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) == 0 &&
	    (!(to_set & FUSE_SET_ATTR_SIZE) || attr->st_size == 0)) {
		kf_getattr(req, ino, NULL);
		return;
	}
	fuse_reply_err(req, (to_set & FUSE_SET_ATTR_SIZE) ? EACCES : EPERM);
}

static void kf_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	/* Nodes are computed from their inode number: nothing to drop. */
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

/* Namespace changes: the tree is read-only, for root too. */
static void kf_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	fuse_reply_err(req, EROFS);
}

static void kf_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	fuse_reply_err(req, EROFS);
}

static void kf_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void kf_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	fuse_reply_err(req, EROFS);
}

static void kf_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	fuse_reply_err(req, EROFS);
}

static void kf_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)link, (void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void kf_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void kf_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	fuse_reply_err(req, EPERM);
}

static void kf_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	fuse_reply_err(req, EPERM);
}

static void kf_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	(void)ino, (void)name, (void)size;
	fuse_reply_err(req, ENODATA);
}

static void kf_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	(void)ino;
	if (size == 0)
		fuse_reply_xattr(req, 0);
	else
		fuse_reply_buf(req, NULL, 0);
}

static void kf_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = {0};

	(void)ino;
	st.f_bsize = 4096;
	st.f_frsize = 4096;
	st.f_namemax = 255;
	st.f_flag = ST_NOSUID | ST_NODEV;
	fuse_reply_statfs(req, &st);
}

/* --- directories ---------------------------------------------------------- */

struct dir_buf {
	fuse_req_t req;
	char *buf;
	size_t len, cap;
	off_t skip, pos; /* entries before `skip` were sent already */
	int err;
};

static int add_dirent(void *ctx, const char *name, struct kf_node n,
		      mode_t type)
{
	struct dir_buf *d = ctx;
	struct stat st = {.st_ino = kf_tree_ino(n), .st_mode = type};
	size_t need;

	d->pos++;
	if (d->pos <= d->skip)
		return 0;
	need = fuse_add_direntry(d->req, NULL, 0, name, NULL, 0);
	if (d->len + need > d->cap)
		return 1; /* full: the kernel asks again from this offset */
	fuse_add_direntry(d->req, d->buf + d->len, d->cap - d->len, name, &st,
			  d->pos);
	d->len += need;
	return 0;
}

static void kf_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_keyring *kr = kf_manager_keyring(fs->m);
	struct dir_buf d = {req, malloc(size), 0, size, off, 0, 0};
	int r;

	count(req, RQ_READDIR);
	(void)fi;
	if (!d.buf) {
		kf_keyring_unref(kr);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = kf_tree_list(fs->tree, kr, kf_tree_node(ino), add_dirent, &d);
	kf_keyring_unref(kr);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, d.buf, d.len);
	free(d.buf);
}

/* --- files ---------------------------------------------------------------- */

static struct kf_handle *handle_new(void)
{
	struct kf_handle *h = calloc(1, sizeof(*h));

	if (h)
		pthread_mutex_init(&h->lock, NULL);
	return h;
}

static void handle_free(struct kf_handle *h)
{
	if (!h)
		return;
	if (h->buf)
		sodium_free(h->buf);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static void kf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_node n = kf_tree_node(ino);
	unsigned flags = kf_tree_flags(n.kind);
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct kf_keyring *kr = NULL;
	struct kf_handle *h = NULL;
	struct kf_caller who = caller_of(req);
	char path[PATH_MAX];
	int r = 0;

	count(req, RQ_OPEN);
	if (fs->cached) {
		/* No opens at all: the kernel serves files from its cache. */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (flags & KF_NODE_F_DIR) {
		r = -EISDIR;
		goto out;
	}
	if (writing && !(flags & KF_NODE_F_CONTROL)) {
		r = -EACCES;
		goto out;
	}
	h = handle_new();
	if (!h) {
		r = -ENOMEM;
		goto out;
	}
	if (!(flags & KF_NODE_F_CONTROL) && n.kind != KF_NODE_BACKUP &&
	    n.kind != KF_NODE_AUDIT) {
		kr = kf_manager_keyring(fs->m);
		if (flags & KF_NODE_F_KEY) {
			kf_tree_path(fs->tree, n, path, sizeof(path));
			r = kf_manager_audit_open(fs->m, &who, path);
			if (r < 0)
				goto out;
		}
		/* The snapshot: this open keeps what it saw. */
		r = kf_tree_content(fs->tree, kr, n, &h->buf, &h->len);
		if (r < 0)
			goto out;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	h = NULL;
out:
	kf_keyring_unref(kr);
	handle_free(h);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_open(req, fi);
}

static void kf_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	count(req, RQ_RELEASE);
	handle_free((struct kf_handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* Reads [off, off+size) of a real file (backups, audit.log). */
static void read_real_file(fuse_req_t req, struct kf_fs *fs, struct kf_node n,
			   size_t size, off_t off)
{
	char *path = NULL, *buf = NULL;
	ssize_t got = 0;
	int fd = -1, r;

	r = kf_tree_file_path(fs->tree, n, &path);
	if (r < 0)
		goto out;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		r = errno == ENOENT && n.kind == KF_NODE_AUDIT ? 0 : -errno;
		goto out;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	got = pread(fd, buf, size, off);
	if (got < 0)
		r = -errno;
out:
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, got > 0 ? (size_t)got : 0);
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
}

static void reply_slice(fuse_req_t req, const uint8_t *buf, size_t len,
			size_t size, off_t off)
{
	if (off < 0 || (size_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, (const char *)buf + off,
			       len - (size_t)off < size ? len - (size_t)off
							: size);
}

/*
 * A control write's outcome, read back through the same open file (what
 * `keyfs ctl` does).  Cached mode has no opens, hence no handle: there the
 * command tells the outcome from the tree instead.
 */
static void result_get(struct kf_handle *h, char out[RESULT_MAX])
{
	out[0] = 0;
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	memcpy(out, h->result, RESULT_MAX);
	pthread_mutex_unlock(&h->lock);
}

static void result_set(struct kf_handle *h, const char *text)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	snprintf(h->result, RESULT_MAX, "%s", text);
	pthread_mutex_unlock(&h->lock);
}

static void kf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_handle *h = (struct kf_handle *)(uintptr_t)fi->fh;
	struct kf_node n = kf_tree_node(ino);
	unsigned flags = kf_tree_flags(n.kind);

	count(req, RQ_READ);
	if (flags & KF_NODE_F_CONTROL) {
		char text[RESULT_MAX];

		result_get(h, text);
		reply_slice(req, (const uint8_t *)text, strlen(text), size,
			    off);
	} else if (n.kind == KF_NODE_BACKUP || n.kind == KF_NODE_AUDIT) {
		read_real_file(req, fs, n, size, off);
	} else if (h && h->buf) {
		reply_slice(req, h->buf, h->len, size, off);
	} else {
		/* Cached mode: the kernel asks once per change. */
		struct kf_keyring *kr = kf_manager_keyring(fs->m);
		uint8_t *buf = NULL;
		size_t len = 0;
		int r = kf_tree_content(fs->tree, kr, n, &buf, &len);

		kf_keyring_unref(kr);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		reply_slice(req, buf, len, size, off);
		sodium_free(buf);
	}
}

/* --- control files -------------------------------------------------------- */

/*
 * The command written to a control file: one line, optional final "\n",
 * printable ASCII only.  Copied into arg (CTL_INPUT_MAX + 1 bytes).
 */
static int ctl_argument(const char *buf, size_t size, char *arg)
{
	if (size > 0 && buf[size - 1] == '\n')
		size--;
	if (size == 0 || size > CTL_INPUT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < size; i++)
		if (buf[i] < 0x21 || buf[i] > 0x7e)
			return -EINVAL;
	memcpy(arg, buf, size);
	arg[size] = 0;
	return 0;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static const char *ctl_event(enum kf_node_kind kind)
{
	switch (kind) {
	case KF_NODE_CTL_ROTATE:
		return "key_rotation";
	case KF_NODE_CTL_BACKUP:
		return "key_backup";
	case KF_NODE_CTL_RESTORE:
		return "key_restore";
	case KF_NODE_CTL_PRUNE:
		return "backup_cleanup";
	default:
		return "key_retire";
	}
}

static const char *ctl_usage(enum kf_node_kind kind)
{
	switch (kind) {
	case KF_NODE_CTL_ROTATE:
		return "write \"1\" or \"rotate\"";
	case KF_NODE_CTL_BACKUP:
		return "write \"1\" or a backup name "
		       "([A-Za-z0-9][A-Za-z0-9._-]{0,63})";
	case KF_NODE_CTL_RESTORE:
		return "write a backup name from backups/ or an absolute path";
	case KF_NODE_CTL_PRUNE:
		return "write how many of the newest backups to keep (0 or "
		       "more)";
	default:
		return "write the version number to retire";
	}
}

/* Runs one control command; result text for the writer in out. */
static int ctl_run(struct kf_fs *fs, const struct kf_caller *who,
		   enum kf_node_kind kind, const char *arg,
		   char out[RESULT_MAX])
{
	char err[KF_ERR_MAX] = "", name[KF_BACKUP_NAME_MAX + 6];
	uint32_t version = 0;
	size_t deleted = 0;
	uint64_t v;
	int r = -EINVAL;

	switch (kind) {
	case KF_NODE_CTL_ROTATE:
		if (strcmp(arg, "1") != 0 && strcmp(arg, "rotate") != 0)
			break;
		r = kf_manager_rotate(fs->m, who, &version, err);
		if (r == 0)
			snprintf(out, RESULT_MAX,
				 "rotated: version %" PRIu32 "\n", version);
		break;
	case KF_NODE_CTL_RETIRE:
		if (parse_uint(arg, UINT32_MAX, &v) < 0 || v == 0)
			break;
		r = kf_manager_retire(fs->m, who, (uint32_t)v, err);
		if (r == 0)
			snprintf(out, RESULT_MAX,
				 "retired: version %" PRIu64 "\n", v);
		break;
	case KF_NODE_CTL_BACKUP:
		r = kf_manager_backup(
		    fs->m, who, strcmp(arg, "1") == 0 ? NULL : arg, name, err);
		if (r == 0)
			snprintf(out, RESULT_MAX, "backup: %s\n", name);
		break;
	case KF_NODE_CTL_RESTORE:
		r = kf_manager_restore(fs->m, who, arg, &version, err);
		if (r == 0)
			snprintf(out, RESULT_MAX,
				 "restored: version %" PRIu32 "\n", version);
		break;
	case KF_NODE_CTL_PRUNE:
		if (parse_uint(arg, UINT32_MAX, &v) < 0)
			break;
		r = kf_manager_prune(fs->m, who, (unsigned)v, &deleted, err);
		if (r == 0)
			snprintf(out, RESULT_MAX, "pruned: %zu deleted\n",
				 deleted);
		break;
	default:
		r = -EACCES;
		break;
	}
	if (r == -EINVAL && !err[0]) {
		/* Malformed input: the manager never saw it; record it here. */
		snprintf(err, sizeof(err), "invalid input to control file (%s)",
			 ctl_usage(kind));
		kf_manager_audit_refused(fs->m, who, ctl_event(kind), err);
	}
	if (r < 0)
		snprintf(out, RESULT_MAX, "error: %s\n", err);
	return r;
}

static void kf_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_handle *h = (struct kf_handle *)(uintptr_t)fi->fh;
	struct kf_node n = kf_tree_node(ino);
	struct kf_caller who = caller_of(req);
	char arg[CTL_INPUT_MAX + 1], out[RESULT_MAX];
	int r;

	count(req, RQ_WRITE);
	(void)off;
	if (!(kf_tree_flags(n.kind) & KF_NODE_F_CONTROL)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	r = ctl_argument(buf, size, arg);
	if (r < 0) {
		char err[KF_ERR_MAX];

		snprintf(err, sizeof(err),
			 "invalid input to control file (%zu bytes; %s)", size,
			 ctl_usage(n.kind));
		kf_manager_audit_refused(fs->m, &who, ctl_event(n.kind), err);
		snprintf(out, sizeof(out), "error: %s\n", err);
	} else {
		r = ctl_run(fs, &who, n.kind, arg, out);
	}
	sodium_memzero(arg, sizeof(arg));
	result_set(h, out);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

static void kf_init(void *userdata, struct fuse_conn_info *conn)
{
	struct kf_fs *fs = userdata;

	/* Key files change only when we say so: no mtime-driven flushes. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (fs->cached && !(conn->capable & FUSE_CAP_NO_OPEN_SUPPORT))
		kf_log(LOG_WARNING, "kernel lacks zero-message opens; cached "
				    "mode will still see every open");
	/* Writeback caching would let writes bypass the control handler. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static const struct fuse_lowlevel_ops kf_ops = {
    .init = kf_init,
    .lookup = kf_lookup,
    .forget = kf_forget,
    .getattr = kf_getattr,
    .setattr = kf_setattr,
    .mknod = kf_mknod,
    .mkdir = kf_mkdir,
    .unlink = kf_unlink,
    .rmdir = kf_unlink,
    .symlink = kf_symlink,
    .rename = kf_rename,
    .link = kf_link,
    .open = kf_open,
    .read = kf_read,
    .write = kf_write,
    .release = kf_release,
    .readdir = kf_readdir,
    .statfs = kf_statfs,
    .setxattr = kf_setxattr,
    .getxattr = kf_getxattr,
    .listxattr = kf_listxattr,
    .removexattr = kf_removexattr,
    .create = kf_create,
};

/* --- life cycle ----------------------------------------------------------- */

/* Whether path lies under (or is) dir; both absolute and clean. */
static bool path_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return true;
	return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == 0);
}

/* Resolves the existing prefix of path with realpath, keeping the rest. */
static char *resolve(const char *path)
{
	char *r = realpath(path, NULL), *dup, *slash;

	if (r)
		return r;
	dup = strdup(path);
	if (!dup)
		return NULL;
	slash = strrchr(dup, '/');
	if (!slash || slash == dup) {
		return dup;
	}
	*slash = 0;
	char *head = resolve(dup);

	if (head) {
		char *joined = kf_path_join(head, slash + 1);

		free(head);
		free(dup);
		return joined;
	}
	free(dup);
	return NULL;
}

static int check_paths(const struct kf_config *cfg, const char *mnt)
{
	const char *paths[] = {cfg->state_dir, cfg->backup_dir, cfg->audit_log,
			       cfg->master_key_file};
	const char *names[] = {"state_dir", "backup_dir", "audit_log",
			       "master_key_file"};
	int r = 0;

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		char *p = resolve(paths[i]);

		if (p && path_under(p, mnt)) {
			kf_log(LOG_ERR,
			       "%s %s lies under the mountpoint %s; "
			       "refusing to start",
			       names[i], paths[i], mnt);
			r = -EINVAL;
		}
		free(p);
	}
	return r;
}

/* Clears a mount left by a killed daemon ("Transport endpoint ..."). */
static int prepare_mountpoint(const char *mnt)
{
	struct statvfs sv;
	struct stat st;

	/*
	 * stat alone may be answered from the dead mount's attribute cache;
	 * statfs always asks the file system, so a stale mount fails it.
	 */
	if (stat(mnt, &st) == 0 && statvfs(mnt, &sv) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			kf_log(LOG_ERR, "mountpoint %s is not a directory",
			       mnt);
			return -ENOTDIR;
		}
		return 0;
	}
	if (errno == ENOTCONN || errno == ECONNABORTED) {
		kf_log(LOG_WARNING, "clearing a stale mount on %s", mnt);
		if (umount2(mnt, MNT_DETACH) < 0) {
			char cmd[PATH_MAX + 64];

			snprintf(cmd, sizeof(cmd), "fusermount3 -uz '%s'", mnt);
			if (system(cmd) != 0) {
				kf_log(LOG_ERR, "cannot clear stale mount %s",
				       mnt);
				return -EBUSY;
			}
		}
		return 0;
	}
	if (errno == ENOENT && kf_dir_ensure(mnt, 0755, NULL, NULL) == 0)
		return 0;
	kf_log(LOG_ERR, "mountpoint %s: %s", mnt, strerror(errno));
	return -errno;
}

/* Whether mnt is already a live keyfs mount. */
static bool already_mounted(const char *mnt)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char line[PATH_MAX * 2], dev[256], dir[PATH_MAX], type[64];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%255s %4095s %63s", dev, dir, type) == 3 &&
		    strcmp(dir, mnt) == 0 && strncmp(type, "fuse", 4) == 0)
			found = true;
	fclose(f);
	return found;
}

struct sig_ctx {
	struct kf_fs *fs;
	sigset_t set;
};

/*
 * SIGTERM/SIGINT/SIGHUP: tell the loop to exit and unmount, which wakes
 * every worker blocked on /dev/fuse, idle or busy.  SIGUSR1: log the request
 * counters.
 */
static void log_requests(struct kf_fs *fs)
{
	char line[512];
	size_t len = 0;

	for (int k = 0; k < RQ_COUNT; k++)
		len += (size_t)snprintf(line + len, sizeof(line) - len,
					" %s=%lu", req_names[k],
					(unsigned long)fs->requests[k]);
	kf_log(LOG_NOTICE, "requests:%s", line);
}

static void *sig_main(void *arg)
{
	struct sig_ctx *s = arg;
	int sig;

	for (;;) {
		if (sigwait(&s->set, &sig) != 0)
			return NULL;
		if (sig != SIGUSR1)
			break;
		log_requests(s->fs);
	}
	kf_log(LOG_NOTICE, "signal %d: unmounting %s", sig, s->fs->mountpoint);
	fuse_session_exit(s->fs->se);
	if (umount2(s->fs->mountpoint, MNT_DETACH) < 0) {
		char cmd[PATH_MAX + 64];

		snprintf(cmd, sizeof(cmd), "fusermount3 -uz '%s'",
			 s->fs->mountpoint);
		if (system(cmd) != 0)
			kf_log(LOG_ERR, "unmount of %s failed",
			       s->fs->mountpoint);
	}
	return NULL;
}

static void harden_process(void)
{
	struct rlimit no_core = {0, 0};

	/* No core dumps, no ptrace by other users: keys stay in memory. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	setrlimit(RLIMIT_CORE, &no_core);
}

static int run_session(struct kf_fs *fs, const struct kf_mount_opts *o)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *loop = NULL;
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct sig_ctx sig = {fs, {{0}}};
	pthread_t sig_thread;
	json_t *fields;
	int r = 1;

	fuse_opt_add_arg(&args, "keyfs");
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, "default_permissions,allow_other,nosuid,"
				"nodev,fsname=keyfs,subtype=keyfs");
	if (o->extra) {
		fuse_opt_add_arg(&args, "-o");
		fuse_opt_add_arg(&args, o->extra);
	}
	fs->se = fuse_session_new(&args, &kf_ops, sizeof(kf_ops), fs);
	if (!fs->se) {
		kf_log(LOG_ERR, "cannot create the FUSE session (bad -o?)");
		goto out;
	}
	if (fuse_session_mount(fs->se, fs->mountpoint) != 0) {
		kf_log(LOG_ERR, "cannot mount on %s", fs->mountpoint);
		goto out;
	}
	fields = json_pack("{s:s, s:s}", "mountpoint", fs->mountpoint,
			   "read_mode", fs->cached ? "cached" : "audited");
	if (kf_manager_audit_event(fs->m, &self, "mount", fields) < 0) {
		json_decref(fields);
		kf_log(LOG_ERR, "cannot write the audit log; unmounting");
		fuse_session_unmount(fs->se);
		goto out;
	}
	json_decref(fields);
	kf_log(LOG_NOTICE, "mounted on %s (%s mode)", fs->mountpoint,
	       fs->cached ? "cached" : "audited");
	if (fuse_daemonize(o->foreground) != 0) {
		fuse_session_unmount(fs->se);
		goto out;
	}
	harden_process();

	sigemptyset(&sig.set);
	sigaddset(&sig.set, SIGTERM);
	sigaddset(&sig.set, SIGINT);
	sigaddset(&sig.set, SIGHUP);
	sigaddset(&sig.set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sig.set, NULL);
	signal(SIGPIPE, SIG_IGN);
	pthread_create(&sig_thread, NULL, sig_main, &sig);
	pthread_detach(sig_thread);
	fs->shown = kf_manager_keyring(fs->m);
	pthread_create(&fs->inval_thread, NULL, inval_main, fs);
	pthread_create(&fs->rot_thread, NULL, rot_main, fs);
	kf_manager_on_change(fs->m, on_change, fs);

	loop = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(loop, 16);
	r = fuse_session_loop_mt(fs->se, loop) < 0 ? 1 : 0;
	fuse_loop_cfg_destroy(loop);

	pthread_mutex_lock(&fs->rot_lock);
	fs->rot_stop = true;
	pthread_cond_broadcast(&fs->rot_cond);
	pthread_mutex_unlock(&fs->rot_lock);
	pthread_join(fs->rot_thread, NULL);
	kf_manager_on_change(fs->m, NULL, NULL);
	pthread_mutex_lock(&fs->inval_lock);
	fs->inval_stop = true;
	pthread_cond_broadcast(&fs->inval_cond);
	pthread_mutex_unlock(&fs->inval_lock);
	pthread_join(fs->inval_thread, NULL);
	fs->shown = kf_keyring_unref(fs->shown);

	fuse_session_unmount(fs->se);
	if (kf_manager_audit_event(fs->m, &self, "unmount", NULL) < 0)
		r = 1;
	kf_log(LOG_NOTICE, "unmounted %s", fs->mountpoint);
out:
	if (fs->se)
		fuse_session_destroy(fs->se);
	fuse_opt_free_args(&args);
	return r;
}

int kf_mount_main(const struct kf_mount_opts *o)
{
	struct kf_config *cfg = NULL;
	struct kf_manager *m = NULL;
	struct kf_fs fs = {0};
	char err[KF_ERR_MAX];
	char *mnt = NULL;
	int r;

	harden_process();
	r = kf_config_load(o->config_path, &cfg, err);
	if (r < 0) {
		kf_log(LOG_ERR, "%s", err);
		return 1;
	}
	if (o->mountpoint &&
	    kf_config_set_mountpoint(cfg, o->mountpoint, err) < 0) {
		kf_log(LOG_ERR, "%s", err);
		goto fail;
	}
	if (!cfg->mountpoint) {
		kf_log(LOG_ERR,
		       "no mountpoint: give MOUNTPOINT or set "
		       "mountpoint in %s",
		       cfg->source);
		goto fail;
	}
	mnt = resolve(cfg->mountpoint);
	if (!mnt || prepare_mountpoint(mnt) < 0)
		goto fail;
	free(mnt);
	mnt = realpath(cfg->mountpoint, NULL);
	if (!mnt) {
		kf_log(LOG_ERR, "mountpoint: %s", strerror(errno));
		goto fail;
	}
	if (already_mounted(mnt)) {
		kf_log(LOG_ERR, "%s is already mounted", mnt);
		goto fail;
	}
	if (check_paths(cfg, mnt) < 0)
		goto fail;
	r = kf_manager_open(cfg, &m, err);
	if (r < 0) {
		kf_log(LOG_ERR, "%s", err);
		goto fail;
	}
	kf_log_syslog(!o->foreground);
	fs.m = m;
	fs.cfg = cfg;
	fs.cached = cfg->read_mode == KF_READ_CACHED;
	fs.mountpoint = mnt;
	fs.tree = kf_tree_new(m);
	pthread_mutex_init(&fs.inval_lock, NULL);
	pthread_cond_init(&fs.inval_cond, NULL);
	pthread_mutex_init(&fs.rot_lock, NULL);
	pthread_cond_init(&fs.rot_cond, NULL);
	r = fs.tree ? run_session(&fs, o) : 1;
	kf_tree_free(fs.tree);
	kf_manager_close(m);
	kf_config_free(cfg);
	free(mnt);
	return r;
fail:
	kf_manager_close(m);
	kf_config_free(cfg);
	free(mnt);
	return 1;
}
