// SPDX-License-Identifier: MIT
/*
 * ops: the FUSE low-level operations over the tree.
 *
 * Read modes (DESIGN.md §1): in `audited` mode every open of a key file
 * reaches this daemon and is audited before it is answered; the answer lets
 * the kernel keep the file's bytes in its page cache (keep_cache), so a read
 * costs no second trip, and a read renders from the keyring of the moment.
 * What a change makes stale is invalidated before the change is answered
 * (workers.c).  In `strict` mode the open also takes a snapshot (the file
 * keeps the key it opened with) served with direct_io: no key byte enters
 * the page cache, at one more round trip per read.  In `cached` mode open
 * answers ENOSYS (FUSE_CAP_NO_OPEN_SUPPORT): the kernel then opens every
 * file without asking and serves key files from its page cache.
 *
 * Handlers decide by a node's flags (tree.h), never by its kind: what a
 * node is and holds is the tree's.  Every handler replies exactly once.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <sodium.h>

#include "fs.h"
#include "log.h"

const char *const kf_req_names[KF_RQ_COUNT] = {"lookup",  "getattr", "open",
					       "read",	  "release", "write",
					       "readdir", "other"};

/*
 * Per open file, where one is needed: control files (the write's outcome),
 * status (a snapshot: it is built whole at open), and key files in strict
 * mode.  The snapshot of a key file is a reference to the keyring it opened
 * with -- immutable, in guarded memory already -- so an open costs no
 * allocation of secrets and a read renders the 44 bytes on the stack.
 * Audited key files and `version` need none: their reads render from the
 * keyring of the moment.
 */
struct kf_handle {
	struct kf_handle *prev, *next; /* in fs->handles; handles_lock */
	struct kf_keyring *kr;	       /* snapshot: key files, version */
	uint8_t *buf;		       /* snapshot: status (sodium_malloc) */
	size_t len;
	pthread_mutex_t lock; /* protects result */
	char *result;	      /* control files: the last write's outcome */
};

static struct kf_fs *kf_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void count(fuse_req_t req, enum kf_req_kind k)
{
	kf_fs(req)->requests[k]++;
}

static struct kf_caller caller_of(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct kf_caller who = {ctx->uid, ctx->gid, ctx->pid};

	return who;
}

/* --- attributes and names ------------------------------------------------- */

static double ttl_of(struct kf_node n)
{
	return kf_tree_flags(n) & KF_NODE_F_VOLATILE ? 0.0 : KF_TTL;
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

	count(req, KF_RQ_LOOKUP);
	r = kf_tree_lookup(fs->tree, kr, kf_tree_node(parent), name, &n);
	kf_keyring_unref(kr);
	kr = NULL;
	/*
	 * Counted before the keyring the reply describes is taken: a change
	 * after this point finds the inode held and invalidates it
	 * (lookups.h).
	 */
	if (r == 0)
		r = kf_lookups_add(fs->lookups, kf_tree_ino(n));
	if (r == 0) {
		kr = kf_manager_keyring(fs->m);
		r = fill_entry(fs, kr, n, &e);
		kf_keyring_unref(kr);
		if (r < 0 || fuse_reply_entry(req, &e) != 0)
			kf_lookups_forget(fs->lookups, kf_tree_ino(n), 1);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
}

static void kf_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_keyring *kr = kf_manager_keyring(fs->m);
	struct kf_node n = kf_tree_node(ino);
	struct kf_handle *h = fi ? (struct kf_handle *)(uintptr_t)fi->fh : NULL;
	struct stat st;
	int r;

	count(req, KF_RQ_GETATTR);
	r = kf_tree_stat(fs->tree, kr, n, &st);
	kf_keyring_unref(kr);
	/* fstat of an open snapshot (status, metrics): the size it reads. */
	if (r == 0 && h && h->buf) {
		st.st_size = (off_t)h->len;
		st.st_blocks = (st.st_size + 511) / 512;
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, ttl_of(n));
}

/* Replies err to a request the tree refuses. */
static void refuse(fuse_req_t req, int err)
{
	count(req, KF_RQ_OTHER);
	fuse_reply_err(req, err);
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
	count(req, KF_RQ_OTHER);
	if ((kf_tree_flags(n) & KF_NODE_F_CONTROL) &&
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
	/* Nodes are computed from their inode number: only the count goes. */
	count(req, KF_RQ_OTHER);
	kf_lookups_forget(kf_fs(req)->lookups, ino, nlookup);
	fuse_reply_none(req);
}

/* Namespace changes: the tree is read-only, for root too. */
static void kf_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	refuse(req, EROFS);
}

static void kf_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	refuse(req, EROFS);
}

static void kf_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	refuse(req, EROFS);
}

static void kf_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	refuse(req, EROFS);
}

static void kf_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	refuse(req, EROFS);
}

static void kf_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)link, (void)parent, (void)name;
	refuse(req, EROFS);
}

static void kf_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	refuse(req, EROFS);
}

static void kf_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	refuse(req, EPERM);
}

static void kf_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	refuse(req, EPERM);
}

/*
 * A key file's metadata without its key (kf_tree_xattr).  The kernel asks
 * only for a caller that may read the file: user.* attributes need read
 * permission (default_permissions).  Not audited: no key byte leaves.
 */
static void kf_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_keyring *kr = kf_manager_keyring(fs->m);
	char value[KF_TREE_XATTR_MAX];
	size_t len = 0;
	int r;

	count(req, KF_RQ_OTHER);
	r = kf_tree_xattr(fs->tree, kr, kf_tree_node(ino), name, value, &len);
	kf_keyring_unref(kr);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

static void kf_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	const char *names;
	size_t len = kf_tree_xattr_names(kf_tree_node(ino), &names);

	count(req, KF_RQ_OTHER);
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, names, len);
}

static void kf_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = {0};

	(void)ino;
	count(req, KF_RQ_OTHER);
	st.f_bsize = KF_TREE_BLOCK_SIZE;
	st.f_frsize = KF_TREE_BLOCK_SIZE;
	st.f_namemax = NAME_MAX;
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

	count(req, KF_RQ_READDIR);
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

static struct kf_handle *handle_new(struct kf_fs *fs, bool control)
{
	struct kf_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	if (control && !(h->result = calloc(1, KF_CONTROL_RESULT_MAX))) {
		free(h);
		return NULL;
	}
	pthread_mutex_init(&h->lock, NULL);
	pthread_mutex_lock(&fs->handles_lock);
	h->next = fs->handles;
	if (h->next)
		h->next->prev = h;
	fs->handles = h;
	pthread_mutex_unlock(&fs->handles_lock);
	return h;
}

static void handle_free(struct kf_fs *fs, struct kf_handle *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&fs->handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_lock);
	kf_keyring_unref(h->kr);
	if (h->buf)
		sodium_free(h->buf);
	free(h->result);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

void kf_ops_release_all(struct kf_fs *fs)
{
	while (fs->handles)
		handle_free(fs, fs->handles);
}

/* An audited open of key node n, in the usage table (usage-aware retire). */
static void note_read(struct kf_fs *fs, const struct kf_caller *who,
		      struct kf_node n)
{
	struct kf_keyring *kr = kf_manager_keyring(fs->m);
	const char *purpose = NULL;
	uint32_t version = 0;

	if (kf_tree_reads(fs->tree, kr, n, &version, &purpose) == 0)
		kf_manager_note_read(fs->m, who, kr, version, purpose);
	kf_keyring_unref(kr);
}

static void kf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_node n = kf_tree_node(ino);
	unsigned flags = kf_tree_flags(n);
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct kf_keyring *kr = NULL;
	struct kf_handle *h = NULL;
	struct kf_caller who = caller_of(req);
	char path[PATH_MAX];
	int r = 0;

	count(req, KF_RQ_OPEN);
	if (fs->read_mode == KF_READ_CACHED) {
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
	if (flags & KF_NODE_F_KEY) {
		kf_tree_path(fs->tree, n, path, sizeof(path));
		/*
		 * Fail closed with EIO whatever stopped the record (a full or
		 * read-only disk): the reader's open did not run out of
		 * space, the audit trail did.
		 */
		if (kf_manager_audit_open(fs->m, &who, path) < 0) {
			r = -EIO;
			goto out;
		}
		kf_manager_count_open(fs->m, flags & KF_NODE_F_DERIVED
						 ? KF_MANAGER_OPEN_DERIVED
						 : KF_MANAGER_OPEN_KEY);
		note_read(fs, &who, n);
	}
	fi->direct_io = 1;
	fi->keep_cache = 0;
	if (!(flags &
	      (KF_NODE_F_CONTROL | KF_NODE_F_FILE | KF_NODE_F_SNAPSHOT)) &&
	    fs->read_mode == KF_READ_AUDITED) {
		/* Pages stay until a change invalidates them (workers.c). */
		fi->direct_io = 0;
		fi->keep_cache = 1;
		goto out;
	}
	h = handle_new(fs, flags & KF_NODE_F_CONTROL);
	if (!h) {
		r = -ENOMEM;
		goto out;
	}
	/* Control files answer per open; real files are read through. */
	if (!(flags & (KF_NODE_F_CONTROL | KF_NODE_F_FILE))) {
		kr = kf_manager_keyring(fs->m);
		/* The snapshot: this open keeps what it saw. */
		if (flags & KF_NODE_F_SNAPSHOT) {
			r = kf_tree_content(fs->tree, kr, n, &h->buf, &h->len);
			if (r < 0)
				goto out;
		}
		/* A key snapshot (key sets too) says what poll compares. */
		if (!(flags & KF_NODE_F_SNAPSHOT) || (flags & KF_NODE_F_KEY))
			h->kr = kf_keyring_ref(kr);
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	h = NULL;
out:
	kf_keyring_unref(kr);
	handle_free(fs, h);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_open(req, fi);
}

static void kf_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	count(req, KF_RQ_RELEASE);
	handle_free(kf_fs(req), (struct kf_handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* Reads [off, off+size) of a real file (backups, audit.log). */
static void read_real_file(fuse_req_t req, struct kf_fs *fs, struct kf_node n,
			   size_t size, off_t off)
{
	char *buf = malloc(size ? size : 1);
	ssize_t got =
	    buf ? kf_tree_read_file(fs->tree, n, buf, size, off) : -ENOMEM;

	if (got < 0)
		fuse_reply_err(req, (int)-got);
	else
		fuse_reply_buf(req, buf, (size_t)got);
	free(buf);
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
static void result_get(struct kf_handle *h, char out[KF_CONTROL_RESULT_MAX])
{
	out[0] = 0;
	if (!h || !h->result)
		return;
	pthread_mutex_lock(&h->lock);
	memcpy(out, h->result, KF_CONTROL_RESULT_MAX);
	pthread_mutex_unlock(&h->lock);
}

static void result_set(struct kf_handle *h, const char *text)
{
	if (!h || !h->result)
		return;
	pthread_mutex_lock(&h->lock);
	snprintf(h->result, KF_CONTROL_RESULT_MAX, "%s", text);
	pthread_mutex_unlock(&h->lock);
}

/* A key file or `version` rendered from kr, on the stack, wiped after. */
static void reply_rendered(fuse_req_t req, struct kf_fs *fs,
			   const struct kf_keyring *kr, struct kf_node n,
			   size_t size, off_t off)
{
	char text[KF_TREE_SMALL_MAX];
	size_t len = 0;
	int r = kf_tree_render(fs->tree, kr, n, text, &len);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_slice(req, (const uint8_t *)text, len, size, off);
	sodium_memzero(text, sizeof(text));
}

static void kf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_handle *h = (struct kf_handle *)(uintptr_t)fi->fh;
	struct kf_node n = kf_tree_node(ino);
	unsigned flags = kf_tree_flags(n);

	count(req, KF_RQ_READ);
	if (flags & KF_NODE_F_CONTROL) {
		char text[KF_CONTROL_RESULT_MAX];

		result_get(h, text);
		reply_slice(req, (const uint8_t *)text, strlen(text), size,
			    off);
	} else if (flags & KF_NODE_F_FILE) {
		read_real_file(req, fs, n, size, off);
	} else if (h && h->buf) {
		reply_slice(req, h->buf, h->len, size, off);
	} else if (h && h->kr) {
		reply_rendered(req, fs, h->kr, n, size, off);
	} else if (flags & KF_NODE_F_SNAPSHOT) {
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
	} else {
		struct kf_keyring *kr = kf_manager_keyring(fs->m);

		reply_rendered(req, fs, kr, n, size, off);
		kf_keyring_unref(kr);
	}
}

static void kf_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_handle *h = (struct kf_handle *)(uintptr_t)fi->fh;
	struct kf_node n = kf_tree_node(ino);
	const struct kf_control_cmd *cmd = kf_tree_command(n);
	struct kf_caller who = caller_of(req);
	char out[KF_CONTROL_RESULT_MAX];
	int r;

	count(req, KF_RQ_WRITE);
	(void)off;
	if (!cmd) {
		fuse_reply_err(req, EACCES);
		return;
	}
	r = kf_control_write(fs->m, &who, cmd, buf, size, out);
	kf_manager_count_control(fs->m, n.index, r >= 0);
	result_set(h, out);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

/*
 * Change notification (README: Metrics, change notification and
 * metadata): a regular file is always readable, and POLLPRI says that the
 * open file no longer shows what its name shows now (kf_tree_stale) -- so
 * a waiter that opened, read and polls sleeps until the next change, and
 * opens again to wait for the one after.  The handle is kept before the
 * keyring is looked at: a change after that wakes it (notify.c), one
 * before is in the answer.
 */
static void kf_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct fuse_pollhandle *ph)
{
	struct kf_fs *fs = kf_fs(req);
	struct kf_handle *h = (struct kf_handle *)(uintptr_t)fi->fh;
	struct kf_keyring *kr;
	unsigned revents = POLLIN | POLLRDNORM;
	bool stale;

	count(req, KF_RQ_OTHER);
	if (ph && kf_notify_poll_add(fs, ph) < 0) {
		/* Not kept: a waiter must not sleep unwoken. */
		fuse_pollhandle_destroy(ph);
		revents |= POLLPRI;
	}
	kr = kf_manager_keyring(fs->m);
	/* Cached mode has no opens: no handle, the inode says it all. */
	stale =
	    kf_tree_stale(fs->tree, h ? h->kr : NULL, kr, kf_tree_node(ino));
	kf_keyring_unref(kr);
	if (stale)
		revents |= POLLPRI;
	fuse_reply_poll(req, revents);
}

static void kf_init(void *userdata, struct fuse_conn_info *conn)
{
	struct kf_fs *fs = userdata;

	/* Key files change only when we say so: no mtime-driven flushes. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (fs->read_mode == KF_READ_CACHED &&
	    !(conn->capable & FUSE_CAP_NO_OPEN_SUPPORT))
		kf_log(LOG_WARNING, "kernel lacks zero-message opens; cached "
				    "mode will still see every open");
	/* Writeback caching would let writes bypass the control handler. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

const struct fuse_lowlevel_ops kf_ops = {
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
    .poll = kf_poll,
};
