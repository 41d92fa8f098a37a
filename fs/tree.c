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

/*
 * backups/ entries.  A name gets a slot when the tree finds an archive file
 * of that name -- never for a name that does not exist -- and keeps it while
 * the file exists.  The node is (index = slot, version = the slot's
 * generation), so a slot reused for another name is another inode.  Names
 * whose file is gone leave the table when a request notices, and in a sweep
 * before the table grows, so it holds about the archives that exist; never
 * more than BACKUP_NAMES_MAX (above config's backup_keep limit of 100,000).
 */
#define BACKUP_NAMES_MAX (1u << 18)
#define BACKUP_SLOTS_MIN 16u
#define NO_SLOT UINT32_MAX

struct backup_slot {
	char *name;	    /* file name; NULL: a free slot */
	uint32_t gen;	    /* the node's version while name holds the slot */
	uint32_t next_free; /* free slots: the next free one, or NO_SLOT */
};

struct kf_tree {
	struct kf_manager *m;
	const struct kf_config *cfg;
	time_t started;

	pthread_mutex_t lock;
	struct backup_slot *slots; /* protected by lock */
	uint32_t n_slots;	   /* allocated; protected by lock */
	uint32_t n_names;	   /* slots in use; protected by lock */
	uint32_t first_free;	   /* protected by lock */
	uint32_t last_gen;	   /* protected by lock */
	/* name hash -> slot + 1 (0: empty), linear probing, 2 * n_slots */
	uint32_t *index; /* protected by lock */
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
	t->first_free = NO_SLOT;
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

struct kf_tree *kf_tree_free(struct kf_tree *t)
{
	if (!t)
		return NULL;
	for (uint32_t i = 0; i < t->n_slots; i++)
		free(t->slots[i].name);
	free(t->slots);
	free(t->index);
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

/* --- the backups/ name table ----------------------------------------- */

/* FNV-1a: names in the table are archives' names, chosen by root. */
static uint32_t name_hash(const char *name)
{
	uint32_t h = 2166136261u;

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 16777619u;
	return h;
}

/* The slot holding name, or NO_SLOT.  Called with lock held. */
static uint32_t slot_find(struct kf_tree *t, const char *name)
{
	uint32_t mask = 2 * t->n_slots - 1;

	if (!t->n_slots)
		return NO_SLOT;
	for (uint32_t i = name_hash(name) & mask; t->index[i];
	     i = (i + 1) & mask)
		if (strcmp(t->slots[t->index[i] - 1].name, name) == 0)
			return t->index[i] - 1;
	return NO_SLOT;
}

static void index_add(struct kf_tree *t, uint32_t slot)
{
	uint32_t mask = 2 * t->n_slots - 1;
	uint32_t i = name_hash(t->slots[slot].name) & mask;

	while (t->index[i])
		i = (i + 1) & mask;
	t->index[i] = slot + 1;
}

/* Rebuilds the index from the slots (after a drop or a growth). */
static void index_rebuild(struct kf_tree *t)
{
	memset(t->index, 0, 2 * (size_t)t->n_slots * sizeof(*t->index));
	for (uint32_t i = 0; i < t->n_slots; i++)
		if (t->slots[i].name)
			index_add(t, i);
}

/* Frees slot; the caller rebuilds the index. */
static void slot_drop(struct kf_tree *t, uint32_t slot)
{
	free(t->slots[slot].name);
	t->slots[slot].name = NULL;
	t->slots[slot].next_free = t->first_free;
	t->first_free = slot;
	t->n_names--;
}

enum backup_file { BACKUP_FILE_GONE, BACKUP_FILE_THERE, BACKUP_FILE_UNKNOWN };

/* Whether an archive file of this name is in the backup directory. */
static enum backup_file backup_file(struct kf_tree *t, const char *name)
{
	char *p = kf_path_join(t->cfg->backup_dir, name);
	enum backup_file f = BACKUP_FILE_UNKNOWN;
	struct stat st;

	if (!p)
		return f;
	if (lstat(p, &st) == 0)
		f = S_ISREG(st.st_mode) ? BACKUP_FILE_THERE : BACKUP_FILE_GONE;
	else if (errno == ENOENT || errno == ENOTDIR)
		f = BACKUP_FILE_GONE;
	free(p);
	return f;
}

/* Drops every name whose file is gone; true if any was.  Lock held. */
static bool slots_sweep(struct kf_tree *t)
{
	bool dropped = false;

	for (uint32_t i = 0; i < t->n_slots; i++) {
		if (t->slots[i].name &&
		    backup_file(t, t->slots[i].name) == BACKUP_FILE_GONE) {
			slot_drop(t, i);
			dropped = true;
		}
	}
	if (dropped)
		index_rebuild(t);
	return dropped;
}

/* Doubles the table, up to BACKUP_NAMES_MAX.  Lock held. */
static int slots_grow(struct kf_tree *t)
{
	uint32_t n = t->n_slots ? 2 * t->n_slots : BACKUP_SLOTS_MIN;
	struct backup_slot *slots;
	uint32_t *index;

	if (t->n_slots >= BACKUP_NAMES_MAX)
		return -ENOSPC;
	slots = realloc(t->slots, n * sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	t->slots = slots;
	index = realloc(t->index, 2 * (size_t)n * sizeof(*index));
	if (!index)
		return -ENOMEM; /* slots stay larger, unused: harmless */
	t->index = index;
	for (uint32_t i = n; i-- > t->n_slots;) {
		slots[i].name = NULL;
		slots[i].gen = 0;
		slots[i].next_free = t->first_free;
		t->first_free = i;
	}
	t->n_slots = n;
	index_rebuild(t);
	return 0;
}

/*
 * The node of backups/<name>, an archive file the caller has seen exist:
 * its slot, or a new one.  -ENOSPC when BACKUP_NAMES_MAX names of existing
 * files are held.
 */
static int backup_node(struct kf_tree *t, const char *name, struct kf_node *ret)
{
	uint32_t slot;
	char *copy;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	slot = slot_find(t, name);
	if (slot != NO_SLOT)
		goto found;
	/*
	 * Full: drop the names of deleted archives first, and grow if that
	 * leaves the table more than three quarters full, so that sweeps
	 * stay rare.
	 */
	if (t->first_free == NO_SLOT) {
		slots_sweep(t);
		if (t->first_free == NO_SLOT ||
		    t->n_names > t->n_slots / 4 * 3) {
			r = slots_grow(t);
			if (r < 0 && t->first_free == NO_SLOT)
				goto out;
			r = 0;
		}
	}
	copy = strdup(name);
	if (!copy) {
		r = -ENOMEM;
		goto out;
	}
	slot = t->first_free;
	t->first_free = t->slots[slot].next_free;
	t->slots[slot].name = copy;
	if (++t->last_gen == 0)
		t->last_gen = 1;
	t->slots[slot].gen = t->last_gen;
	t->n_names++;
	index_add(t, slot);
found:
	ret->kind = KF_NODE_BACKUP;
	ret->index = slot;
	ret->version = t->slots[slot].gen;
out:
	pthread_mutex_unlock(&t->lock);
	return r;
}

/* Drops node n's name if it still holds n's slot (its file is gone). */
static void backup_forget(struct kf_tree *t, struct kf_node n)
{
	pthread_mutex_lock(&t->lock);
	if (n.index < t->n_slots && t->slots[n.index].name &&
	    t->slots[n.index].gen == n.version) {
		slot_drop(t, n.index);
		index_rebuild(t);
	}
	pthread_mutex_unlock(&t->lock);
}

/* Drops name from the table, if it is there (its file is gone). */
static void backup_forget_name(struct kf_tree *t, const char *name)
{
	uint32_t slot;

	pthread_mutex_lock(&t->lock);
	slot = slot_find(t, name);
	if (slot != NO_SLOT) {
		slot_drop(t, slot);
		index_rebuild(t);
	}
	pthread_mutex_unlock(&t->lock);
}

void kf_tree_backup_names(struct kf_tree *t, size_t *ret_names,
			  size_t *ret_slots)
{
	pthread_mutex_lock(&t->lock);
	*ret_names = t->n_names;
	*ret_slots = t->n_slots;
	pthread_mutex_unlock(&t->lock);
}

int kf_tree_file_path(struct kf_tree *t, struct kf_node n, char **ret_path)
{
	char *p = NULL;

	if (n.kind == KF_NODE_AUDIT) {
		p = strdup(t->cfg->audit_log);
	} else if (n.kind == KF_NODE_BACKUP) {
		bool known;

		pthread_mutex_lock(&t->lock);
		known = n.index < t->n_slots && t->slots[n.index].name &&
			t->slots[n.index].gen == n.version;
		if (known)
			p = kf_path_join(t->cfg->backup_dir,
					 t->slots[n.index].name);
		pthread_mutex_unlock(&t->lock);
		if (!known)
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

/* A version number as a name: no leading zero (one name per version). */
static int parse_u32(const char *s, uint32_t *ret)
{
	uint64_t v;

	if (!s || *s < '1' || *s > '9' || kf_parse_u64(s, UINT32_MAX, &v) < 0)
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
		if (!ok)
			backup_forget(t, n);
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
		/* Only a name that is an archive file gets a node. */
		if (!is_backup_file_name(name))
			return -ENOENT;
		switch (backup_file(t, name)) {
		case BACKUP_FILE_THERE:
			return backup_node(t, name, ret);
		case BACKUP_FILE_GONE:
			backup_forget_name(t, name);
			return -ENOENT;
		default:
			return -ENOENT;
		}
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
		/* A listing is the time to drop names of deleted archives. */
		pthread_mutex_lock(&t->lock);
		slots_sweep(t);
		pthread_mutex_unlock(&t->lock);
		c.kind = KF_NODE_BACKUP;
		for (size_t i = count; i-- > 0;) {
			if (!is_backup_file_name(list[i].name) ||
			    backup_node(t, list[i].name, &c) < 0)
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
