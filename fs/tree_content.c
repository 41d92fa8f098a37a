// SPDX-License-Identifier: MIT
/*
 * tree_content: what a node of the tree holds -- its attributes, and the
 * bytes a read returns -- from its row in the node table, the
 * configuration and a keyring snapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "key.h"
#include "metrics.h"
#include "tree_i.h"

/* Cached read mode: how old the shared rendering of metrics may get. */
#define SHARED_MAX_AGE_MS 1000

static const struct kf_access *access_of(struct kf_tree *t, struct kf_node n)
{
	static const struct kf_access dir = {0, 0, 0555};
	static const struct kf_access control_dir = {0, 0, 0700};
	static const struct kf_access control = {0, 0, 0600};

	switch (kf_tree_kinds[n.kind].access) {
	case KF_ACCESS_KEYS:
		return &t->cfg->keys;
	case KF_ACCESS_STATUS:
		return &t->cfg->status;
	case KF_ACCESS_PURPOSE:
		return &t->cfg->purposes[n.index].access;
	case KF_ACCESS_BACKUPS:
		return &t->cfg->backups;
	case KF_ACCESS_AUDIT:
		return &t->cfg->audit;
	case KF_ACCESS_CONTROL:
		return &control;
	case KF_ACCESS_CONTROL_DIR:
		return &control_dir;
	case KF_ACCESS_DIR:
	default:
		return &dir;
	}
}

/* A directory's mode: x wherever r is, so a readable folder can be entered. */
static mode_t dir_mode(mode_t m)
{
	return m | (m & 0444) >> 2;
}

/*
 * The content of node n rendered from its entry e -- key text, "N\n" --
 * into buf, or with buf NULL only its length: stat and read take a file's
 * size from here alike.  -EINVAL for content not rendered.
 */
static int render(struct kf_tree *t, const struct kf_keyring_entry *e,
		  struct kf_node n, char *buf, size_t *ret_len)
{
	uint8_t d[KF_KEY_BYTES];
	int r = 0;

	switch (kf_tree_kinds[n.kind].content) {
	case KF_CONTENT_VERSION:
		r = snprintf(buf, buf ? KF_TREE_SMALL_MAX : 0, "%" PRIu32 "\n",
			     e->version);
		*ret_len = (size_t)r;
		return 0;
	case KF_CONTENT_KEY:
		if (buf)
			kf_key_encode(e->key, buf);
		break;
	case KF_CONTENT_DERIVED:
		if (!buf)
			break;
		r = kf_key_derive(e->key, t->cfg->purposes[n.index].name, d,
				  NULL);
		if (r == 0)
			kf_key_encode(d, buf);
		sodium_memzero(d, sizeof(d));
		break;
	default:
		return -EINVAL;
	}
	if (r == 0)
		*ret_len = KF_KEY_TEXT_LEN;
	return r;
}

/* One line of a key set: the key's text and "\n". */
#define KEYSET_LINE (KF_KEY_TEXT_LEN + 1)

/* The length of a key set of kr: one line per key of its set. */
static size_t keyset_len(const struct kf_keyring *kr)
{
	size_t i = 0;

	while (kf_keyring_decryption_at(kr, i))
		i++;
	return i * KEYSET_LINE;
}

/*
 * keys/<purpose> of kr into a new sodium_malloc'd buffer: the derived key
 * of each entry of kr's decryption set, in its order, one per line --
 * all from this one keyring, so a read never mixes two.
 */
static int keyset(struct kf_tree *t, const struct kf_keyring *kr,
		  struct kf_node n, uint8_t **ret_buf, size_t *ret_len)
{
	const char *purpose = t->cfg->purposes[n.index].name;
	const struct kf_keyring_entry *e;
	size_t len = keyset_len(kr);
	uint8_t d[KF_KEY_BYTES];
	uint8_t *buf = sodium_malloc(len + 1);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; r == 0 && (e = kf_keyring_decryption_at(kr, i));
	     i++) {
		r = kf_key_derive(e->key, purpose, d, NULL);
		if (r == 0) {
			kf_key_encode(d, (char *)buf + i * KEYSET_LINE);
			buf[i * KEYSET_LINE + KF_KEY_TEXT_LEN] = '\n';
		}
	}
	sodium_memzero(d, sizeof(d));
	if (r < 0) {
		sodium_free(buf);
		return r;
	}
	buf[len] = 0;
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

/* The path of the real file behind n (KF_NODE_F_FILE), malloc'd. */
static int file_path(struct kf_tree *t, struct kf_node n, char **ret_path)
{
	char name[KF_ARCHIVES_NAME_MAX];
	char *p;

	switch (kf_tree_kinds[n.kind].content) {
	case KF_CONTENT_AUDIT_LOG:
		p = strdup(t->cfg->audit_log);
		break;
	case KF_CONTENT_ARCHIVE:
		if (kf_archives_name(t->archives, n.index, n.version, name) < 0)
			return -ENOENT;
		p = kf_path_join(t->cfg->backup_dir, name);
		break;
	default:
		return -EINVAL;
	}
	if (!p)
		return -ENOMEM;
	*ret_path = p;
	return 0;
}

/*
 * The size of n's content, the same a read returns now; a real file's
 * mtime too (else *mtime is left alone).
 */
static int content_size(struct kf_tree *t, const struct kf_keyring *kr,
			struct kf_node n, off_t *ret_size, int64_t *mtime)
{
	struct stat real;
	uint8_t *buf;
	char *p = NULL;
	size_t len = 0;
	int r = 0;

	switch (kf_tree_kinds[n.kind].content) {
	case KF_CONTENT_NONE:
		break;
	case KF_CONTENT_STATUS:
	case KF_CONTENT_METRICS:
		r = kf_tree_content(t, kr, n, &buf, &len);
		if (r == 0)
			sodium_free(buf);
		break;
	case KF_CONTENT_KEYSET:
		len = keyset_len(kr);
		break;
	case KF_CONTENT_ARCHIVE:
	case KF_CONTENT_AUDIT_LOG:
		r = file_path(t, n, &p);
		if (r < 0)
			return r;
		r = stat(p, &real) < 0 ? -errno : 0;
		free(p);
		if (r == -ENOENT &&
		    kf_tree_kinds[n.kind].content == KF_CONTENT_AUDIT_LOG)
			return 0; /* not written yet: an empty log */
		if (r == 0) {
			len = (size_t)real.st_size;
			*mtime = real.st_mtime;
		}
		break;
	default:
		r = render(t, kf_tree_entry(kr, n), n, NULL, &len);
		break;
	}
	if (r == 0)
		*ret_size = (off_t)len;
	return r;
}

int kf_tree_stat(struct kf_tree *t, const struct kf_keyring *kr,
		 struct kf_node n, struct stat *ret)
{
	const struct kf_keyring_entry *e;
	const struct kf_access *a;
	struct stat st = {0};
	int64_t mtime;
	int r;

	if (!kf_tree_exists(t, kr, n))
		return -ENOENT;
	a = access_of(t, n);
	e = kf_tree_entry(kr, n);
	mtime = e ? e->created : t->started;
	st.st_ino = kf_tree_ino(n);
	st.st_uid = a->uid;
	st.st_gid = a->gid;
	st.st_nlink = 1;
	if (kf_tree_flags(n) & KF_NODE_F_DIR) {
		st.st_mode = S_IFDIR | dir_mode(a->mode);
		st.st_nlink = 2;
	} else {
		st.st_mode = S_IFREG | a->mode;
	}
	r = content_size(t, kr, n, &st.st_size, &mtime);
	if (r < 0)
		return r;
	st.st_mtime = st.st_ctime = st.st_atime = (time_t)mtime;
	st.st_blksize = KF_TREE_BLOCK_SIZE;
	st.st_blocks = (st.st_size + 511) / 512; /* 512-byte units */
	*ret = st;
	return 0;
}

int kf_tree_render(struct kf_tree *t, const struct kf_keyring *kr,
		   struct kf_node n, char buf[KF_TREE_SMALL_MAX],
		   size_t *ret_len)
{
	if (!kf_tree_exists(t, kr, n))
		return -ENOENT;
	return render(t, kf_tree_entry(kr, n), n, buf, ret_len);
}

/* Whether metrics is shown from one shared rendering (cached mode). */
static bool shared(const struct kf_tree *t)
{
	return t->cfg->read_mode == KF_READ_CACHED;
}

/*
 * The shared rendering, made again when older than max_age_ms; marked
 * dirty when its text changed.  Caller holds shared_lock.
 */
static int shared_refresh_locked(struct kf_tree *t, int64_t max_age_ms)
{
	int64_t now = kf_time_mono_ms();
	char *text = NULL;
	size_t len = 0;
	int r;

	if (t->shared && now - t->shared_ms < max_age_ms)
		return 0;
	r = kf_metrics_render(t->m, t->controls, t->n_controls, &text, &len);
	if (r < 0)
		return r;
	if (!t->shared || len != t->shared_len ||
	    memcmp(text, t->shared, len) != 0)
		t->shared_dirty = true;
	free(t->shared);
	t->shared = text;
	t->shared_len = len;
	t->shared_ms = now;
	return 0;
}

struct kf_node kf_tree_shared_node(struct kf_tree *t)
{
	struct kf_node n = {KF_NODE_NONE, 0, 0};

	if (shared(t))
		n.kind = KF_NODE_METRICS;
	return n;
}

int kf_tree_refresh(struct kf_tree *t, bool now)
{
	int r = 0;

	if (!shared(t))
		return 0;
	pthread_mutex_lock(&t->shared_lock);
	r = shared_refresh_locked(t, now ? 0 : SHARED_MAX_AGE_MS);
	if (r == 0 && t->shared_dirty) {
		t->shared_dirty = false;
		r = 1;
	}
	pthread_mutex_unlock(&t->shared_lock);
	return r;
}

/*
 * metrics into a new sodium_malloc'd buffer: rendered now, or in cached
 * mode the shared rendering.
 */
static int metrics_content(struct kf_tree *t, uint8_t **ret_buf,
			   size_t *ret_len)
{
	char *text = NULL;
	size_t len = 0;
	uint8_t *buf;
	int r;

	if (shared(t)) {
		pthread_mutex_lock(&t->shared_lock);
		r = shared_refresh_locked(t, SHARED_MAX_AGE_MS);
		if (r == 0) {
			len = t->shared_len;
			text = malloc(len + 1);
			if (text)
				memcpy(text, t->shared, len + 1);
			else
				r = -ENOMEM;
		}
		pthread_mutex_unlock(&t->shared_lock);
	} else {
		r = kf_metrics_render(t->m, t->controls, t->n_controls, &text,
				      &len);
	}
	if (r < 0)
		return r;
	buf = sodium_malloc(len + 1);
	if (buf)
		memcpy(buf, text, len + 1);
	free(text);
	if (!buf)
		return -ENOMEM;
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

int kf_tree_content(struct kf_tree *t, const struct kf_keyring *kr,
		    struct kf_node n, uint8_t **ret_buf, size_t *ret_len)
{
	uint8_t *buf;
	size_t len = 0;
	int r;

	if (!kf_tree_exists(t, kr, n))
		return -ENOENT;
	if (kf_tree_kinds[n.kind].content == KF_CONTENT_METRICS)
		return metrics_content(t, ret_buf, ret_len);
	if (kf_tree_kinds[n.kind].content == KF_CONTENT_KEYSET)
		return keyset(t, kr, n, ret_buf, ret_len);
	if (kf_tree_kinds[n.kind].content == KF_CONTENT_STATUS) {
		json_t *o = kf_manager_info(t->m);
		char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);

		json_decref(o);
		if (!s)
			return -ENOMEM;
		len = strlen(s) + 1;
		buf = sodium_malloc(len + 1);
		if (buf) {
			memcpy(buf, s, len - 1);
			buf[len - 1] = '\n';
			buf[len] = 0;
		}
		free(s);
		if (!buf)
			return -ENOMEM;
	} else {
		buf = sodium_malloc(KF_TREE_SMALL_MAX);
		if (!buf)
			return -ENOMEM;
		r = render(t, kf_tree_entry(kr, n), n, (char *)buf, &len);
		if (r < 0) {
			sodium_free(buf);
			return r;
		}
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

ssize_t kf_tree_read_file(struct kf_tree *t, struct kf_node n, char *buf,
			  size_t size, off_t off)
{
	char *path = NULL;
	ssize_t got;
	int fd, r;

	if (n.kind >= KF_NODE_KIND_COUNT)
		return -EINVAL;
	r = file_path(t, n, &path);
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	if (fd < 0)
		return errno == ENOENT && kf_tree_kinds[n.kind].content ==
					      KF_CONTENT_AUDIT_LOG
			   ? 0
			   : -errno;
	got = pread(fd, buf, size, off);
	if (got < 0)
		got = -errno;
	close(fd);
	return got;
}

int kf_tree_reads(struct kf_tree *t, const struct kf_keyring *kr,
		  struct kf_node n, uint32_t *ret_version,
		  const char **ret_purpose)
{
	enum kf_node_content c = kf_tree_kinds[n.kind].content;
	const struct kf_keyring_entry *e;

	if (!(kf_tree_flags(n) & KF_NODE_F_KEY))
		return -EINVAL;
	if (!kf_tree_exists(t, kr, n))
		return -ENOENT;
	e = kf_tree_entry(kr, n);
	*ret_version = c == KF_CONTENT_KEYSET ? 0 : e->version;
	*ret_purpose =
	    c == KF_CONTENT_KEY ? NULL : t->cfg->purposes[n.index].name;
	return 0;
}

/* --- extended attributes ----------------------------------------------- */

/* What a key file answers, in listxattr's form (the last NUL is sizeof's). */
static const char xattr_names[] = "user.keyfs.version\0"
				  "user.keyfs.fingerprint\0"
				  "user.keyfs.created";

size_t kf_tree_xattr_names(struct kf_node n, const char **ret_names)
{
	if (!(kf_tree_flags(n) & KF_NODE_F_KEY)) {
		*ret_names = "";
		return 0;
	}
	*ret_names = xattr_names;
	return sizeof(xattr_names);
}

/*
 * The fingerprint of what node n holds: e's key, or the key derived (a
 * key set's first line, its current key).
 */
static int fingerprint(struct kf_tree *t, const struct kf_keyring_entry *e,
		       struct kf_node n, char fpr[KF_KEY_FPR_LEN + 1])
{
	enum kf_node_content c = kf_tree_kinds[n.kind].content;
	uint8_t d[KF_KEY_BYTES];
	int r = 0;

	if (c != KF_CONTENT_DERIVED && c != KF_CONTENT_KEYSET) {
		kf_key_fingerprint(e->key, fpr);
		return 0;
	}
	r = kf_key_derive(e->key, t->cfg->purposes[n.index].name, d, NULL);
	if (r == 0)
		kf_key_fingerprint(d, fpr);
	sodium_memzero(d, sizeof(d));
	return r;
}

int kf_tree_xattr(struct kf_tree *t, const struct kf_keyring *kr,
		  struct kf_node n, const char *name,
		  char value[KF_TREE_XATTR_MAX], size_t *ret_len)
{
	const struct kf_keyring_entry *e;
	char fpr[KF_KEY_FPR_LEN + 1], when[KF_RFC3339_LEN + 1];
	int r = 0;

	if (!kf_tree_exists(t, kr, n))
		return -ENOENT;
	e = kf_tree_entry(kr, n);
	if (!(kf_tree_flags(n) & KF_NODE_F_KEY) || !e)
		return -ENODATA;
	if (strcmp(name, "user.keyfs.version") == 0) {
		r = snprintf(value, KF_TREE_XATTR_MAX, "%" PRIu32, e->version);
	} else if (strcmp(name, "user.keyfs.fingerprint") == 0) {
		r = fingerprint(t, e, n, fpr);
		if (r < 0)
			return r;
		r = snprintf(value, KF_TREE_XATTR_MAX, "%s", fpr);
	} else if (strcmp(name, "user.keyfs.created") == 0) {
		kf_time_rfc3339(e->created, when);
		r = snprintf(value, KF_TREE_XATTR_MAX, "%s", when);
	} else {
		return -ENODATA;
	}
	*ret_len = (size_t)r;
	return 0;
}
