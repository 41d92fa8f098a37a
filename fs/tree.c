// SPDX-License-Identifier: MIT
/* tree: nodes, names, attributes and content of the keyfs tree. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "key.h"
#include "tree.h"

#define BACKUP_IDS_MAX (1u << 24)

struct kf_tree {
	struct kf_manager *m;
	const struct kf_config *cfg;
	time_t started;

	/*
	 * backups/ entries get an id the first time their name is seen; the
	 * id is the node's index, so an inode always means one name.
	 */
	pthread_mutex_t lock;
	char **backup_names;	 /* protected by lock */
	uint32_t n_backup_names; /* protected by lock */
};

enum access_class {
	A_DIR,
	A_KEYS,
	A_STATUS,
	A_PURPOSE,
	A_BACKUPS,
	A_AUDIT,
	A_CONTROL,
	A_CONTROL_DIR
};

/* The kind table: one row per kind, dispatch goes through it. */
static const struct kind_info {
	const char *name; /* fixed name, or NULL for generated names */
	enum kf_node_kind parent;
	unsigned flags;
	enum access_class access;
} kinds[KF_NODE_KIND_COUNT] = {
    [KF_NODE_ROOT] = {"", KF_NODE_NONE, KF_NODE_F_DIR, A_DIR},
    [KF_NODE_CURRENT] = {"current", KF_NODE_ROOT, KF_NODE_F_KEY, A_KEYS},
    [KF_NODE_PREVIOUS] = {"previous", KF_NODE_ROOT, KF_NODE_F_KEY, A_KEYS},
    [KF_NODE_VERSION] = {"version", KF_NODE_ROOT, 0, A_STATUS},
    [KF_NODE_STATUS] = {"status", KF_NODE_ROOT, 0, A_STATUS},
    [KF_NODE_DERIVED_DIR] = {"derived", KF_NODE_ROOT, KF_NODE_F_DIR, A_DIR},
    [KF_NODE_DERIVED] = {NULL, KF_NODE_DERIVED_DIR, KF_NODE_F_KEY, A_PURPOSE},
    [KF_NODE_VERSIONS_DIR] = {"versions", KF_NODE_ROOT, KF_NODE_F_DIR, A_DIR},
    [KF_NODE_VDIR] = {NULL, KF_NODE_VERSIONS_DIR, KF_NODE_F_DIR, A_DIR},
    [KF_NODE_VKEY] = {"key", KF_NODE_VDIR, KF_NODE_F_KEY, A_KEYS},
    [KF_NODE_VDERIVED_DIR] = {"derived", KF_NODE_VDIR, KF_NODE_F_DIR, A_DIR},
    [KF_NODE_VDERIVED] = {NULL, KF_NODE_VDERIVED_DIR, KF_NODE_F_KEY, A_PURPOSE},
    [KF_NODE_BACKUPS_DIR] = {"backups", KF_NODE_ROOT,
			     KF_NODE_F_DIR | KF_NODE_F_VOLATILE, A_BACKUPS},
    [KF_NODE_BACKUP] = {NULL, KF_NODE_BACKUPS_DIR, KF_NODE_F_VOLATILE,
			A_BACKUPS},
    [KF_NODE_CONTROL_DIR] = {"control", KF_NODE_ROOT, KF_NODE_F_DIR,
			     A_CONTROL_DIR},
    [KF_NODE_CTL_ROTATE] = {"rotate", KF_NODE_CONTROL_DIR,
			    KF_NODE_F_CONTROL | KF_NODE_F_VOLATILE, A_CONTROL},
    [KF_NODE_CTL_BACKUP] = {"backup", KF_NODE_CONTROL_DIR,
			    KF_NODE_F_CONTROL | KF_NODE_F_VOLATILE, A_CONTROL},
    [KF_NODE_CTL_RESTORE] = {"restore", KF_NODE_CONTROL_DIR,
			     KF_NODE_F_CONTROL | KF_NODE_F_VOLATILE, A_CONTROL},
    [KF_NODE_CTL_PRUNE] = {"prune", KF_NODE_CONTROL_DIR,
			   KF_NODE_F_CONTROL | KF_NODE_F_VOLATILE, A_CONTROL},
    [KF_NODE_CTL_RETIRE] = {"retire", KF_NODE_CONTROL_DIR,
			    KF_NODE_F_CONTROL | KF_NODE_F_VOLATILE, A_CONTROL},
    [KF_NODE_AUDIT] = {"audit.log", KF_NODE_ROOT, KF_NODE_F_VOLATILE, A_AUDIT},
};

struct kf_tree *kf_tree_new(struct kf_manager *m)
{
	struct kf_tree *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->m = m;
	t->cfg = kf_manager_config(m);
	t->started = time(NULL);
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

struct kf_tree *kf_tree_free(struct kf_tree *t)
{
	if (!t)
		return NULL;
	for (uint32_t i = 0; i < t->n_backup_names; i++)
		free(t->backup_names[i]);
	free(t->backup_names);
	pthread_mutex_destroy(&t->lock);
	free(t);
	return NULL;
}

/* ino = kind | index << 8 | version << 32; root is kind 1 alone: ino 1. */
uint64_t kf_tree_ino(struct kf_node n)
{
	return (uint64_t)n.kind | (uint64_t)(n.index & 0xffffff) << 8 |
	       (uint64_t)n.version << 32;
}

struct kf_node kf_tree_node(uint64_t ino)
{
	struct kf_node n = {KF_NODE_NONE, 0, 0};
	unsigned kind = ino & 0xff;

	if (kind > KF_NODE_NONE && kind < KF_NODE_KIND_COUNT) {
		n.kind = (enum kf_node_kind)kind;
		n.index = (uint32_t)(ino >> 8) & 0xffffff;
		n.version = (uint32_t)(ino >> 32);
	}
	return n;
}

unsigned kf_tree_flags(enum kf_node_kind kind)
{
	return kind < KF_NODE_KIND_COUNT ? kinds[kind].flags : 0;
}

/* The id of a backup file name, assigned on first sight. */
static int backup_id(struct kf_tree *t, const char *name, uint32_t *ret)
{
	int r = 0;

	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->n_backup_names; i++) {
		if (strcmp(t->backup_names[i], name) == 0) {
			*ret = i;
			goto out;
		}
	}
	if (t->n_backup_names >= BACKUP_IDS_MAX) {
		r = -ENOSPC;
		goto out;
	}
	char **grown =
	    realloc(t->backup_names, (t->n_backup_names + 1) * sizeof(char *));
	char *copy = strdup(name);

	if (!grown || !copy) {
		free(copy);
		if (grown)
			t->backup_names = grown;
		r = -ENOMEM;
		goto out;
	}
	t->backup_names = grown;
	t->backup_names[t->n_backup_names] = copy;
	*ret = t->n_backup_names++;
out:
	pthread_mutex_unlock(&t->lock);
	return r;
}

int kf_tree_file_path(struct kf_tree *t, struct kf_node n, char **ret_path)
{
	char *p = NULL;

	if (n.kind == KF_NODE_AUDIT) {
		p = strdup(t->cfg->audit_log);
	} else if (n.kind == KF_NODE_BACKUP) {
		pthread_mutex_lock(&t->lock);
		if (n.index < t->n_backup_names)
			p = kf_path_join(t->cfg->backup_dir,
					 t->backup_names[n.index]);
		pthread_mutex_unlock(&t->lock);
		if (!p)
			return -ENOENT;
	} else {
		return -EINVAL;
	}
	if (!p)
		return -ENOMEM;
	*ret_path = p;
	return 0;
}

static bool is_backup_file_name(const char *name)
{
	size_t len = strlen(name);
	char base[KF_BACKUP_NAME_MAX + 1];

	if (len <= 5 || len - 5 > KF_BACKUP_NAME_MAX ||
	    strcmp(name + len - 5, ".json") != 0)
		return false;
	memcpy(base, name, len - 5);
	base[len - 5] = 0;
	return kf_backup_name_valid(base);
}

static int parse_u32(const char *s, uint32_t *ret)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '1' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

static int purpose_index(struct kf_tree *t, const char *name, uint32_t *ret)
{
	for (size_t i = 0; i < t->cfg->n_purposes; i++) {
		if (strcmp(t->cfg->purposes[i].name, name) == 0) {
			*ret = (uint32_t)i;
			return 0;
		}
	}
	return -ENOENT;
}

/* Whether node n exists given keyring kr (and the backup directory). */
static bool node_exists(struct kf_tree *t, const struct kf_keyring *kr,
			struct kf_node n)
{
	switch (n.kind) {
	case KF_NODE_NONE:
	case KF_NODE_KIND_COUNT:
		return false;
	case KF_NODE_PREVIOUS:
		return kf_keyring_count(kr) > 1;
	case KF_NODE_DERIVED:
		return n.index < t->cfg->n_purposes;
	case KF_NODE_VDIR:
	case KF_NODE_VKEY:
	case KF_NODE_VDERIVED_DIR:
		return kf_keyring_find(kr, n.version) != NULL;
	case KF_NODE_VDERIVED:
		return kf_keyring_find(kr, n.version) != NULL &&
		       n.index < t->cfg->n_purposes;
	case KF_NODE_BACKUP: {
		char *p = NULL;
		struct stat st;
		bool ok;

		if (kf_tree_file_path(t, n, &p) < 0)
			return false;
		ok = lstat(p, &st) == 0 && S_ISREG(st.st_mode);
		free(p);
		return ok;
	}
	default:
		return true;
	}
}

int kf_tree_lookup(struct kf_tree *t, const struct kf_keyring *kr,
		   struct kf_node parent, const char *name, struct kf_node *ret)
{
	struct kf_node n = {KF_NODE_NONE, 0, 0};

	if (!(kf_tree_flags(parent.kind) & KF_NODE_F_DIR))
		return -ENOTDIR;
	if (!node_exists(t, kr, parent))
		return -ENOENT;
	switch (parent.kind) {
	case KF_NODE_DERIVED_DIR:
	case KF_NODE_VDERIVED_DIR:
		if (purpose_index(t, name, &n.index) < 0)
			return -ENOENT;
		n.kind = parent.kind == KF_NODE_DERIVED_DIR ? KF_NODE_DERIVED
							    : KF_NODE_VDERIVED;
		n.version = parent.version;
		break;
	case KF_NODE_VERSIONS_DIR:
		if (parse_u32(name, &n.version) < 0)
			return -ENOENT;
		n.kind = KF_NODE_VDIR;
		break;
	case KF_NODE_BACKUPS_DIR:
		if (!is_backup_file_name(name))
			return -ENOENT;
		if (backup_id(t, name, &n.index) < 0)
			return -ENOENT;
		n.kind = KF_NODE_BACKUP;
		break;
	default:
		for (int k = KF_NODE_ROOT + 1; k < KF_NODE_KIND_COUNT; k++) {
			if (kinds[k].parent == parent.kind && kinds[k].name &&
			    strcmp(kinds[k].name, name) == 0) {
				n.kind = (enum kf_node_kind)k;
				n.version = parent.version;
				break;
			}
		}
		break;
	}
	if (n.kind == KF_NODE_NONE || !node_exists(t, kr, n))
		return -ENOENT;
	*ret = n;
	return 0;
}

static const struct kf_access *access_of(struct kf_tree *t, struct kf_node n)
{
	static const struct kf_access dir = {0, 0, 0555};
	static const struct kf_access control_dir = {0, 0, 0700};
	static const struct kf_access control = {0, 0, 0600};

	switch (kinds[n.kind].access) {
	case A_KEYS:
		return &t->cfg->keys;
	case A_STATUS:
		return &t->cfg->status;
	case A_PURPOSE:
		return &t->cfg->purposes[n.index].access;
	case A_BACKUPS:
		return &t->cfg->backups;
	case A_AUDIT:
		return &t->cfg->audit;
	case A_CONTROL:
		return &control;
	case A_CONTROL_DIR:
		return &control_dir;
	case A_DIR:
	default:
		return &dir;
	}
}

/* A directory's mode: x wherever r is, so a readable folder can be entered. */
static mode_t dir_mode(mode_t m)
{
	return m | (m & 0444) >> 2;
}

int kf_tree_stat(struct kf_tree *t, const struct kf_keyring *kr,
		 struct kf_node n, struct stat *ret)
{
	const struct kf_access *a;
	struct stat st = {0};
	int64_t mtime = t->started;

	if (!node_exists(t, kr, n))
		return -ENOENT;
	a = access_of(t, n);
	st.st_ino = kf_tree_ino(n);
	st.st_uid = a->uid;
	st.st_gid = a->gid;
	st.st_nlink = 1;
	if (kinds[n.kind].flags & KF_NODE_F_DIR) {
		st.st_mode = S_IFDIR | dir_mode(a->mode);
		st.st_nlink = 2;
	} else {
		st.st_mode = S_IFREG | a->mode;
	}
	switch (n.kind) {
	case KF_NODE_CURRENT:
	case KF_NODE_DERIVED:
		st.st_size = KF_KEY_TEXT_LEN;
		mtime = kf_keyring_at(kr, 0)->created;
		break;
	case KF_NODE_PREVIOUS:
		st.st_size = KF_KEY_TEXT_LEN;
		mtime = kf_keyring_at(kr, 1)->created;
		break;
	case KF_NODE_VDIR:
	case KF_NODE_VDERIVED_DIR:
		mtime = kf_keyring_find(kr, n.version)->created;
		break;
	case KF_NODE_VKEY:
	case KF_NODE_VDERIVED:
		st.st_size = KF_KEY_TEXT_LEN;
		mtime = kf_keyring_find(kr, n.version)->created;
		break;
	case KF_NODE_VERSION: {
		char buf[KF_TREE_SMALL_MAX];
		size_t len = 0;
		int r = kf_tree_render(t, kr, n, buf, &len);

		if (r < 0)
			return r;
		st.st_size = (off_t)len;
		mtime = kf_keyring_at(kr, 0)->created;
		break;
	}
	case KF_NODE_STATUS: {
		uint8_t *buf;
		size_t len;
		int r = kf_tree_content(t, kr, n, &buf, &len);

		if (r < 0)
			return r;
		sodium_free(buf);
		st.st_size = (off_t)len;
		mtime = kf_keyring_at(kr, 0)->created;
		break;
	}
	case KF_NODE_BACKUP:
	case KF_NODE_AUDIT: {
		struct stat real;
		char *p = NULL;
		int r = kf_tree_file_path(t, n, &p);

		if (r < 0)
			return r;
		r = stat(p, &real) < 0 ? -errno : 0;
		free(p);
		if (r == -ENOENT && n.kind == KF_NODE_AUDIT)
			r = 0; /* not written yet: an empty log */
		else if (r < 0)
			return r;
		else {
			st.st_size = real.st_size;
			mtime = real.st_mtime;
		}
		break;
	}
	default:
		break;
	}
	st.st_mtime = st.st_ctime = st.st_atime = (time_t)mtime;
	st.st_blksize = 4096;
	st.st_blocks = (st.st_size + 511) / 512;
	*ret = st;
	return 0;
}

struct list_ctx {
	kf_tree_list_fn fn;
	void *ctx;
};

int kf_tree_list(struct kf_tree *t, const struct kf_keyring *kr,
		 struct kf_node n, kf_tree_list_fn fn, void *ctx)
{
	struct kf_node c = {KF_NODE_NONE, n.version, 0};
	char name[32];

	if (!(kf_tree_flags(n.kind) & KF_NODE_F_DIR))
		return -ENOTDIR;
	if (!node_exists(t, kr, n))
		return -ENOENT;
	if (fn(ctx, ".", n, S_IFDIR) || fn(ctx, "..", n, S_IFDIR))
		return 0;
	switch (n.kind) {
	case KF_NODE_DERIVED_DIR:
	case KF_NODE_VDERIVED_DIR:
		c.kind = n.kind == KF_NODE_DERIVED_DIR ? KF_NODE_DERIVED
						       : KF_NODE_VDERIVED;
		for (size_t i = 0; i < t->cfg->n_purposes; i++) {
			c.index = (uint32_t)i;
			if (fn(ctx, t->cfg->purposes[i].name, c, S_IFREG))
				return 0;
		}
		return 0;
	case KF_NODE_VERSIONS_DIR:
		c.kind = KF_NODE_VDIR;
		/* Oldest first, as ls would sort them anyway. */
		for (size_t i = kf_keyring_count(kr); i-- > 0;) {
			c.version = kf_keyring_at(kr, i)->version;
			snprintf(name, sizeof(name), "%" PRIu32, c.version);
			if (fn(ctx, name, c, S_IFDIR))
				return 0;
		}
		return 0;
	case KF_NODE_BACKUPS_DIR: {
		struct kf_backup_info *list = NULL;
		size_t count = 0;
		int r = kf_manager_list_backups(t->m, &list, &count, NULL);

		if (r < 0)
			return r;
		c.kind = KF_NODE_BACKUP;
		for (size_t i = count; i-- > 0;) {
			if (!is_backup_file_name(list[i].name) ||
			    backup_id(t, list[i].name, &c.index) < 0)
				continue;
			if (fn(ctx, list[i].name, c, S_IFREG))
				break;
		}
		free(list);
		return 0;
	}
	default:
		for (int k = KF_NODE_ROOT + 1; k < KF_NODE_KIND_COUNT; k++) {
			if (kinds[k].parent != n.kind || !kinds[k].name)
				continue;
			c.kind = (enum kf_node_kind)k;
			if (!node_exists(t, kr, c))
				continue;
			if (fn(ctx, kinds[k].name, c,
			       kinds[k].flags & KF_NODE_F_DIR ? S_IFDIR
							      : S_IFREG))
				return 0;
		}
		return 0;
	}
}

/* Key text of raw key bytes, or of derive(key, purpose i), into buf. */
static int key_text(struct kf_tree *t, const uint8_t *key, bool derive,
		    uint32_t purpose, char buf[KF_KEY_TEXT_LEN + 1])
{
	uint8_t d[KF_KEY_BYTES];
	int r = 0;

	if (!derive) {
		kf_key_encode(key, buf);
		return 0;
	}
	r = kf_key_derive(key, t->cfg->purposes[purpose].name, d, NULL);
	if (r == 0)
		kf_key_encode(d, buf);
	sodium_memzero(d, sizeof(d));
	return r;
}

int kf_tree_render(struct kf_tree *t, const struct kf_keyring *kr,
		   struct kf_node n, char buf[KF_TREE_SMALL_MAX],
		   size_t *ret_len)
{
	const struct kf_keyring_entry *e;
	int r;

	if (!node_exists(t, kr, n))
		return -ENOENT;
	switch (n.kind) {
	case KF_NODE_CURRENT:
	case KF_NODE_DERIVED:
		e = kf_keyring_at(kr, 0);
		break;
	case KF_NODE_PREVIOUS:
		e = kf_keyring_at(kr, 1);
		break;
	case KF_NODE_VKEY:
	case KF_NODE_VDERIVED:
		e = kf_keyring_find(kr, n.version);
		break;
	case KF_NODE_VERSION:
		*ret_len =
		    (size_t)snprintf(buf, KF_TREE_SMALL_MAX, "%" PRIu32 "\n",
				     kf_keyring_at(kr, 0)->version);
		return 0;
	default:
		return -EINVAL;
	}
	r = key_text(t, e->key,
		     n.kind == KF_NODE_DERIVED || n.kind == KF_NODE_VDERIVED,
		     n.index, buf);
	if (r == 0)
		*ret_len = KF_KEY_TEXT_LEN;
	return r;
}

int kf_tree_content(struct kf_tree *t, const struct kf_keyring *kr,
		    struct kf_node n, uint8_t **ret_buf, size_t *ret_len)
{
	uint8_t *buf;
	size_t len = 0;
	int r;

	if (!node_exists(t, kr, n))
		return -ENOENT;
	if (n.kind == KF_NODE_STATUS) {
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
		r = kf_tree_render(t, kr, n, (char *)buf, &len);
		if (r < 0) {
			sodium_free(buf);
			return r;
		}
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

void kf_tree_path(struct kf_tree *t, struct kf_node n, char *buf, size_t len)
{
	const char *purpose = "";

	if ((n.kind == KF_NODE_DERIVED || n.kind == KF_NODE_VDERIVED) &&
	    n.index < t->cfg->n_purposes)
		purpose = t->cfg->purposes[n.index].name;
	switch (n.kind) {
	case KF_NODE_DERIVED:
		snprintf(buf, len, "derived/%s", purpose);
		break;
	case KF_NODE_VKEY:
		snprintf(buf, len, "versions/%" PRIu32 "/key", n.version);
		break;
	case KF_NODE_VDERIVED:
		snprintf(buf, len, "versions/%" PRIu32 "/derived/%s", n.version,
			 purpose);
		break;
	default:
		snprintf(buf, len, "%s",
			 kinds[n.kind].name ? kinds[n.kind].name : "?");
		break;
	}
}
