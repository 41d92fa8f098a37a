// SPDX-License-Identifier: MIT
/*
 * tree: the node table, and the tree's shape -- which nodes exist, their
 * names and listings, and what a keyring change touches.  What a node holds
 * is tree_content.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "tree_i.h"

/* What names a purpose's staged key: "<purpose>.next". */
#define NEXT_SUFFIX ".next"

#define F_DIR KF_NODE_F_DIR
#define F_KEY KF_NODE_F_KEY
#define F_CONTROL KF_NODE_F_CONTROL
#define F_VOLATILE KF_NODE_F_VOLATILE
#define F_FILE KF_NODE_F_FILE
#define F_SNAPSHOT KF_NODE_F_SNAPSHOT
#define F_CHANGES KF_NODE_F_CHANGES
#define F_FOLLOWS KF_NODE_F_FOLLOWS
#define F_DERIVED KF_NODE_F_DERIVED

/*
 * The node table: one row per kind -- name, parent, naming, flags, entry,
 * content, access.  Everything in the tree module reads it.
 */
const struct kf_node_info kf_tree_kinds[KF_NODE_KIND_COUNT] = {
    [KF_NODE_ROOT] = {"", KF_NODE_NONE, KF_NAMED_FIXED, F_DIR | F_CHANGES,
		      KF_ENTRY_NONE, KF_CONTENT_NONE, KF_ACCESS_DIR},
    [KF_NODE_CURRENT] = {"current", KF_NODE_ROOT, KF_NAMED_FIXED,
			 F_KEY | F_CHANGES | F_FOLLOWS, KF_ENTRY_CURRENT,
			 KF_CONTENT_KEY, KF_ACCESS_KEYS},
    [KF_NODE_PREVIOUS] = {"previous", KF_NODE_ROOT, KF_NAMED_FIXED,
			  F_KEY | F_CHANGES | F_FOLLOWS, KF_ENTRY_PREVIOUS,
			  KF_CONTENT_KEY, KF_ACCESS_KEYS},
    [KF_NODE_VERSION] = {"version", KF_NODE_ROOT, KF_NAMED_FIXED,
			 F_CHANGES | F_FOLLOWS, KF_ENTRY_CURRENT,
			 KF_CONTENT_VERSION, KF_ACCESS_STATUS},
    [KF_NODE_STATUS] = {"status", KF_NODE_ROOT, KF_NAMED_FIXED,
			F_SNAPSHOT | F_CHANGES, KF_ENTRY_CURRENT,
			KF_CONTENT_STATUS, KF_ACCESS_STATUS},
    [KF_NODE_DERIVED_DIR] = {"derived", KF_NODE_ROOT, KF_NAMED_FIXED, F_DIR,
			     KF_ENTRY_NONE, KF_CONTENT_NONE, KF_ACCESS_DIR},
    [KF_NODE_DERIVED] = {NULL, KF_NODE_DERIVED_DIR, KF_NAMED_PURPOSE,
			 F_KEY | F_CHANGES | F_FOLLOWS | F_DERIVED,
			 KF_ENTRY_CURRENT, KF_CONTENT_DERIVED,
			 KF_ACCESS_PURPOSE},
    [KF_NODE_VERSIONS_DIR] = {"versions", KF_NODE_ROOT, KF_NAMED_FIXED,
			      F_DIR | F_CHANGES, KF_ENTRY_NONE, KF_CONTENT_NONE,
			      KF_ACCESS_DIR},
    [KF_NODE_VDIR] = {NULL, KF_NODE_VERSIONS_DIR, KF_NAMED_VERSION, F_DIR,
		      KF_ENTRY_VERSION, KF_CONTENT_NONE, KF_ACCESS_DIR},
    [KF_NODE_VKEY] = {"key", KF_NODE_VDIR, KF_NAMED_FIXED, F_KEY,
		      KF_ENTRY_VERSION, KF_CONTENT_KEY, KF_ACCESS_KEYS},
    [KF_NODE_VDERIVED_DIR] = {"derived", KF_NODE_VDIR, KF_NAMED_FIXED, F_DIR,
			      KF_ENTRY_VERSION, KF_CONTENT_NONE, KF_ACCESS_DIR},
    [KF_NODE_VDERIVED] = {NULL, KF_NODE_VDERIVED_DIR, KF_NAMED_PURPOSE,
			  F_KEY | F_DERIVED, KF_ENTRY_VERSION,
			  KF_CONTENT_DERIVED, KF_ACCESS_PURPOSE},
    [KF_NODE_BACKUPS_DIR] = {"backups", KF_NODE_ROOT, KF_NAMED_FIXED,
			     F_DIR | F_VOLATILE | F_CHANGES, KF_ENTRY_NONE,
			     KF_CONTENT_NONE, KF_ACCESS_BACKUPS},
    [KF_NODE_BACKUP] = {NULL, KF_NODE_BACKUPS_DIR, KF_NAMED_ARCHIVE,
			F_FILE | F_VOLATILE, KF_ENTRY_NONE, KF_CONTENT_ARCHIVE,
			KF_ACCESS_BACKUPS},
    [KF_NODE_CONTROL_DIR] = {"control", KF_NODE_ROOT, KF_NAMED_FIXED, F_DIR,
			     KF_ENTRY_NONE, KF_CONTENT_NONE,
			     KF_ACCESS_CONTROL_DIR},
    [KF_NODE_CONTROL] = {NULL, KF_NODE_CONTROL_DIR, KF_NAMED_COMMAND,
			 F_CONTROL | F_VOLATILE, KF_ENTRY_NONE, KF_CONTENT_NONE,
			 KF_ACCESS_CONTROL},
    [KF_NODE_AUDIT] = {"audit.log", KF_NODE_ROOT, KF_NAMED_FIXED,
		       F_FILE | F_VOLATILE | F_CHANGES, KF_ENTRY_NONE,
		       KF_CONTENT_AUDIT_LOG, KF_ACCESS_AUDIT},
    /* Changes all the time: a snapshot per open, no attribute cache. */
    [KF_NODE_METRICS] = {"metrics", KF_NODE_ROOT, KF_NAMED_FIXED,
			 F_SNAPSHOT | F_VOLATILE, KF_ENTRY_NONE,
			 KF_CONTENT_METRICS, KF_ACCESS_STATUS},
    [KF_NODE_KEYS_DIR] = {"keys", KF_NODE_ROOT, KF_NAMED_FIXED, F_DIR,
			  KF_ENTRY_NONE, KF_CONTENT_NONE, KF_ACCESS_DIR},
    /*
     * A purpose's decryption set: derived/P's access, inode numbering and
     * changes, but several keys, so built whole at open (a snapshot of one
     * keyring, in guarded memory) like status.
     */
    [KF_NODE_KEYSET] = {NULL, KF_NODE_KEYS_DIR, KF_NAMED_PURPOSE,
			F_KEY | F_CHANGES | F_FOLLOWS | F_DERIVED | F_SNAPSHOT,
			KF_ENTRY_CURRENT, KF_CONTENT_KEYSET, KF_ACCESS_PURPOSE},
    /* The staged version (README: Staged rotation), while there is one. */
    [KF_NODE_NEXT] = {"next", KF_NODE_ROOT, KF_NAMED_FIXED,
		      F_KEY | F_CHANGES | F_FOLLOWS, KF_ENTRY_STAGED,
		      KF_CONTENT_KEY, KF_ACCESS_KEYS},
    [KF_NODE_DERIVED_NEXT] = {NULL, KF_NODE_DERIVED_DIR, KF_NAMED_PURPOSE_NEXT,
			      F_KEY | F_CHANGES | F_FOLLOWS | F_DERIVED,
			      KF_ENTRY_STAGED, KF_CONTENT_DERIVED,
			      KF_ACCESS_PURPOSE},
};

struct kf_tree *kf_tree_new(struct kf_manager *m)
{
	struct kf_tree *t = calloc(1, sizeof(*t));
	const struct kf_control_cmd *c;

	if (!t)
		return NULL;
	t->m = m;
	t->cfg = kf_manager_config(m);
	t->started = time(NULL);
	t->archives = kf_archives_new(t->cfg->backup_dir);
	if (!t->archives) {
		free(t);
		return NULL;
	}
	while (t->n_controls < KF_MANAGER_CONTROLS_MAX &&
	       (c = kf_control_at(t->n_controls)))
		t->controls[t->n_controls++] = c->name;
	pthread_mutex_init(&t->shared_lock, NULL);
	return t;
}

struct kf_tree *kf_tree_free(struct kf_tree *t)
{
	if (!t)
		return NULL;
	kf_archives_free(t->archives);
	free(t->shared);
	pthread_mutex_destroy(&t->shared_lock);
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
		n.kind = kind;
		n.index = (uint32_t)(ino >> 8) & 0xffffff;
		n.version = (uint32_t)(ino >> 32);
	}
	return n;
}

unsigned kf_tree_flags(struct kf_node n)
{
	return n.kind < KF_NODE_KIND_COUNT ? kf_tree_kinds[n.kind].flags : 0;
}

const struct kf_control_cmd *kf_tree_command(struct kf_node n)
{
	return n.kind == KF_NODE_CONTROL ? kf_control_at(n.index) : NULL;
}

void kf_tree_backup_names(struct kf_tree *t, size_t *ret_names,
			  size_t *ret_slots)
{
	kf_archives_count(t->archives, ret_names, ret_slots);
}

/* --- nodes and names ------------------------------------------------- */

/*
 * The directory holding n: what n's name adds (version, index) dropped.
 * Only the folders of a version (versions/N/...) have one in their number.
 */
static struct kf_node parent_of(struct kf_node n)
{
	enum kf_node_kind k = kf_tree_kinds[n.kind].parent;
	struct kf_node p = {k, n.version, 0};

	if (kf_tree_kinds[k].entry != KF_ENTRY_VERSION)
		p.version = 0;
	return p;
}

/*
 * A node that follows an entry (F_FOLLOWS) gets that entry's version in
 * kr: its inode number.  -ENOENT when kr has no such entry.
 */
static int follow(const struct kf_keyring *kr, struct kf_node *n)
{
	const struct kf_keyring_entry *e;

	if (!(kf_tree_kinds[n->kind].flags & F_FOLLOWS))
		return 0;
	e = kf_tree_entry(kr, *n);
	if (!e)
		return -ENOENT;
	n->version = e->version;
	return 0;
}

const struct kf_keyring_entry *kf_tree_entry(const struct kf_keyring *kr,
					     struct kf_node n)
{
	switch (kf_tree_kinds[n.kind].entry) {
	case KF_ENTRY_CURRENT:
		return kf_keyring_at(kr, 0);
	case KF_ENTRY_PREVIOUS:
		return kf_keyring_at(kr, 1);
	case KF_ENTRY_VERSION:
		return kf_keyring_lookup(kr, n.version);
	case KF_ENTRY_STAGED:
		return kf_keyring_staged(kr);
	default:
		return NULL;
	}
}

bool kf_tree_exists(struct kf_tree *t, const struct kf_keyring *kr,
		    struct kf_node n)
{
	if (n.kind == KF_NODE_NONE || n.kind >= KF_NODE_KIND_COUNT)
		return false;
	if (kf_tree_kinds[n.kind].entry != KF_ENTRY_NONE &&
	    !kf_tree_entry(kr, n))
		return false;
	switch (kf_tree_kinds[n.kind].naming) {
	case KF_NAMED_PURPOSE:
	case KF_NAMED_PURPOSE_NEXT:
		return n.index < t->cfg->n_purposes;
	case KF_NAMED_COMMAND:
		return kf_control_at(n.index) != NULL;
	case KF_NAMED_ARCHIVE:
		return kf_archives_exists(t->archives, n.index, n.version);
	default:
		return true;
	}
}

/* A version number as a name: no leading zero (one name per version). */
static int parse_version(const char *s, uint32_t *ret)
{
	uint64_t v;

	if (!s || *s < '1' || *s > '9' || kf_parse_u64(s, UINT32_MAX, &v) < 0)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

/*
 * The purpose `name` names (with suffix: "<purpose><suffix>"; "" for the
 * purpose's own name).
 */
static int purpose_index(struct kf_tree *t, const char *name,
			 const char *suffix, uint32_t *ret)
{
	size_t len = strlen(name), sl = strlen(suffix);

	if (len <= sl || strcmp(name + len - sl, suffix) != 0)
		return -ENOENT;
	for (size_t i = 0; i < t->cfg->n_purposes; i++) {
		const char *p = t->cfg->purposes[i].name;

		if (strlen(p) == len - sl && strncmp(p, name, len - sl) == 0) {
			*ret = (uint32_t)i;
			return 0;
		}
	}
	return -ENOENT;
}

/*
 * Whether `name` names a node of n's kind (whose version came from the
 * parent): 0 and n completed, -ENOENT, or another -errno.
 */
static int name_to_node(struct kf_tree *t, const char *name, struct kf_node *n)
{
	int r;

	switch (kf_tree_kinds[n->kind].naming) {
	case KF_NAMED_FIXED:
		return strcmp(kf_tree_kinds[n->kind].name, name) == 0 ? 0
								      : -ENOENT;
	case KF_NAMED_PURPOSE:
		return purpose_index(t, name, "", &n->index);
	case KF_NAMED_PURPOSE_NEXT:
		return purpose_index(t, name, NEXT_SUFFIX, &n->index);
	case KF_NAMED_VERSION:
		return parse_version(name, &n->version) < 0 ? -ENOENT : 0;
	case KF_NAMED_ARCHIVE:
		/* Only a name that is an archive file gets a node. */
		return kf_archives_lookup(t->archives, name, &n->index,
					  &n->version);
	case KF_NAMED_COMMAND:
		r = kf_control_find(name);
		if (r >= 0)
			n->index = (uint32_t)r;
		return r < 0 ? r : 0;
	}
	return -ENOENT;
}

/* n's name in its directory, into buf (len bytes); "" when it has none. */
static void node_name(struct kf_tree *t, struct kf_node n, char *buf,
		      size_t len)
{
	char archive[KF_ARCHIVES_NAME_MAX] = "";
	const struct kf_control_cmd *c;
	const char *s = "";

	switch (kf_tree_kinds[n.kind].naming) {
	case KF_NAMED_FIXED:
		s = kf_tree_kinds[n.kind].name;
		break;
	case KF_NAMED_PURPOSE:
		if (n.index < t->cfg->n_purposes)
			s = t->cfg->purposes[n.index].name;
		break;
	case KF_NAMED_PURPOSE_NEXT:
		if (n.index < t->cfg->n_purposes)
			snprintf(buf, len, "%s" NEXT_SUFFIX,
				 t->cfg->purposes[n.index].name);
		return;
	case KF_NAMED_VERSION:
		snprintf(buf, len, "%" PRIu32, n.version);
		return;
	case KF_NAMED_ARCHIVE:
		if (kf_archives_name(t->archives, n.index, n.version,
				     archive) == 0)
			s = archive;
		break;
	case KF_NAMED_COMMAND:
		c = kf_control_at(n.index);
		if (c)
			s = c->name;
		break;
	}
	snprintf(buf, len, "%s", s);
}

void kf_tree_path(struct kf_tree *t, struct kf_node n, char *buf, size_t len)
{
	struct kf_node p;
	size_t used;

	buf[0] = 0;
	if (n.kind == KF_NODE_NONE || n.kind >= KF_NODE_KIND_COUNT ||
	    n.kind == KF_NODE_ROOT)
		return;
	p = parent_of(n);
	if (p.kind != KF_NODE_ROOT) {
		kf_tree_path(t, p, buf, len);
		used = strlen(buf);
		if (used + 1 < len) {
			buf[used++] = '/';
			buf[used] = 0;
		}
		buf += used;
		len -= used;
	}
	node_name(t, n, buf, len);
}

int kf_tree_lookup(struct kf_tree *t, const struct kf_keyring *kr,
		   struct kf_node parent, const char *name, struct kf_node *ret)
{
	struct kf_node n = {KF_NODE_NONE, 0, 0};
	int r = -ENOENT;

	if (!(kf_tree_flags(parent) & F_DIR))
		return -ENOTDIR;
	if (!kf_tree_exists(t, kr, parent))
		return -ENOENT;
	for (unsigned k = KF_NODE_ROOT + 1;
	     k < KF_NODE_KIND_COUNT && r == -ENOENT; k++) {
		if (kf_tree_kinds[k].parent != parent.kind)
			continue;
		n = (struct kf_node){k, parent.version, 0};
		r = name_to_node(t, name, &n);
	}
	if (r == 0)
		r = follow(kr, &n);
	if (r < 0)
		return r;
	if (!kf_tree_exists(t, kr, n))
		return -ENOENT;
	*ret = n;
	return 0;
}

/*
 * Lists the nodes of kind k in directory dir.  1 when fn asked to stop, 0,
 * or -errno.
 */
static int list_kind(struct kf_tree *t, const struct kf_keyring *kr,
		     struct kf_node dir, unsigned k, kf_tree_list_fn fn,
		     void *ctx)
{
	mode_t type = kf_tree_kinds[k].flags & F_DIR ? S_IFDIR : S_IFREG;
	struct kf_node c = {k, dir.version, 0};
	const struct kf_keyring_entry *staged = kf_keyring_staged(kr);
	char name[NAME_MAX + 1];
	struct kf_backup_info *list = NULL;
	size_t count = 0;
	int r = 0;

	switch (kf_tree_kinds[k].naming) {
	case KF_NAMED_FIXED:
		if (kf_tree_exists(t, kr, c) && follow(kr, &c) == 0)
			r = fn(ctx, kf_tree_kinds[k].name, c, type) ? 1 : 0;
		return r;
	case KF_NAMED_PURPOSE:
		if (follow(kr, &c) < 0)
			return 0;
		for (size_t i = 0; i < t->cfg->n_purposes && !r; i++) {
			c.index = (uint32_t)i;
			r = fn(ctx, t->cfg->purposes[i].name, c, type) ? 1 : 0;
		}
		return r;
	case KF_NAMED_PURPOSE_NEXT:
		if (follow(kr, &c) < 0)
			return 0;
		for (size_t i = 0; i < t->cfg->n_purposes && !r; i++) {
			c.index = (uint32_t)i;
			node_name(t, c, name, sizeof(name));
			r = fn(ctx, name, c, type) ? 1 : 0;
		}
		return r;
	case KF_NAMED_VERSION:
		/* Oldest first, as ls would sort them anyway; staged last. */
		for (size_t i = kf_keyring_count(kr); i-- > 0 && !r;) {
			c.version = kf_keyring_at(kr, i)->version;
			node_name(t, c, name, sizeof(name));
			r = fn(ctx, name, c, type) ? 1 : 0;
		}
		if (staged && !r) {
			c.version = staged->version;
			node_name(t, c, name, sizeof(name));
			r = fn(ctx, name, c, type) ? 1 : 0;
		}
		return r;
	case KF_NAMED_COMMAND:
		for (uint32_t i = 0; kf_control_at(i) && !r; i++) {
			c.index = i;
			r = fn(ctx, kf_control_at(i)->name, c, type) ? 1 : 0;
		}
		return r;
	case KF_NAMED_ARCHIVE:
		r = kf_manager_list_backups(t->m, &list, &count, NULL);
		if (r < 0)
			return r;
		/* A listing is the time to drop names of deleted archives. */
		kf_archives_sweep(t->archives);
		for (size_t i = count; i-- > 0 && !r;) {
			if (kf_archives_add(t->archives, list[i].name, &c.index,
					    &c.version) < 0)
				continue;
			r = fn(ctx, list[i].name, c, type) ? 1 : 0;
		}
		free(list);
		return r;
	}
	return 0;
}

int kf_tree_list(struct kf_tree *t, const struct kf_keyring *kr,
		 struct kf_node n, kf_tree_list_fn fn, void *ctx)
{
	int r = 0;

	if (!(kf_tree_flags(n) & F_DIR))
		return -ENOTDIR;
	if (!kf_tree_exists(t, kr, n))
		return -ENOENT;
	if (fn(ctx, ".", n, S_IFDIR) || fn(ctx, "..", n, S_IFDIR))
		return 0;
	for (unsigned k = KF_NODE_ROOT + 1; k < KF_NODE_KIND_COUNT && r == 0;
	     k++)
		if (kf_tree_kinds[k].parent == n.kind)
			r = list_kind(t, kr, n, k, fn, ctx);
	return r < 0 ? r : 0;
}

/* --- changes ---------------------------------------------------------- */

/* Whether nodes of kind k come and go with the keyring's entries. */
static bool comes_and_goes(unsigned k)
{
	return kf_tree_kinds[k].entry == KF_ENTRY_PREVIOUS ||
	       kf_tree_kinds[k].entry == KF_ENTRY_VERSION ||
	       kf_tree_kinds[k].entry == KF_ENTRY_STAGED;
}

/* Whether kind k has one node per purpose. */
static bool per_purpose(unsigned k)
{
	return kf_tree_kinds[k].naming == KF_NAMED_PURPOSE ||
	       kf_tree_kinds[k].naming == KF_NAMED_PURPOSE_NEXT;
}

/*
 * Every node of kind k (at version v) to fn: one per purpose for derived
 * files.  A kind that comes and goes in a directory that stays also has
 * its entry there named.
 */
static void kind_changed(struct kf_tree *t, unsigned k, uint32_t v,
			 kf_tree_change_fn fn, void *ctx)
{
	struct kf_node n = {k, v, 0};
	char name[NAME_MAX + 1];

	if (comes_and_goes(k) && !comes_and_goes(kf_tree_kinds[k].parent)) {
		node_name(t, n, name, sizeof(name));
		fn(ctx, parent_of(n), name);
	}
	if (!per_purpose(k)) {
		fn(ctx, n, NULL);
		return;
	}
	for (size_t i = 0; i < t->cfg->n_purposes; i++) {
		n.index = (uint32_t)i;
		fn(ctx, n, NULL);
	}
}

/* Every node under versions/<v>/. */
static void version_changed(struct kf_tree *t, uint32_t v, kf_tree_change_fn fn,
			    void *ctx)
{
	for (unsigned k = KF_NODE_ROOT; k < KF_NODE_KIND_COUNT; k++)
		if (kf_tree_kinds[k].entry == KF_ENTRY_VERSION)
			kind_changed(t, k, v, fn, ctx);
}

/* True if version e of one keyring is absent from, or differs in, other. */
static bool differs(const struct kf_keyring_entry *e,
		    const struct kf_keyring *other)
{
	const struct kf_keyring_entry *o = kf_keyring_lookup(other, e->version);

	return !o || sodium_memcmp(o->key, e->key, KF_KEY_BYTES) != 0;
}

/* The version of the entry kind k shows in kr (0: none, or kr NULL). */
static uint32_t shown_version(const struct kf_keyring *kr, unsigned k)
{
	struct kf_node n = {k, 0, 0};
	const struct kf_keyring_entry *e = kr ? kf_tree_entry(kr, n) : NULL;

	return e ? e->version : 0;
}

/*
 * Every node of a kind that follows an entry (F_FOLLOWS), between keyrings
 * old (NULL: unknown) and now: the inode old showed, whose attributes and
 * pages an open file still reads through, then, when the entry's version
 * changed, its name, which now resolves to another inode.
 */
static void follower_changed(struct kf_tree *t, unsigned k,
			     const struct kf_keyring *old,
			     const struct kf_keyring *now, kf_tree_change_fn fn,
			     void *ctx)
{
	uint32_t was = shown_version(old ? old : now, k);
	bool renamed = !old || was != shown_version(now, k);
	size_t count = per_purpose(k) ? t->cfg->n_purposes : 1;
	char name[NAME_MAX + 1];

	for (size_t i = 0; i < count; i++) {
		struct kf_node n = {k, was, (uint32_t)i};

		/* The inode first: dropping the name may let it go. */
		if (was)
			fn(ctx, n, NULL);
		if (renamed) {
			node_name(t, n, name, sizeof(name));
			fn(ctx, parent_of(n), name);
		}
	}
}

/* Entry i of kr, or for i = count its staged one (NULL: none). */
static const struct kf_keyring_entry *
entry_or_staged(const struct kf_keyring *kr, size_t i)
{
	return i < kf_keyring_count(kr) ? kf_keyring_at(kr, i)
					: kf_keyring_staged(kr);
}

void kf_tree_changes(struct kf_tree *t, const struct kf_keyring *old,
		     const struct kf_keyring *now, kf_tree_change_fn fn,
		     void *ctx)
{
	for (unsigned k = KF_NODE_ROOT; k < KF_NODE_KIND_COUNT; k++) {
		if (!(kf_tree_kinds[k].flags & F_CHANGES))
			continue;
		if (kf_tree_kinds[k].flags & F_FOLLOWS)
			follower_changed(t, k, old, now, fn, ctx);
		else
			kind_changed(t, k, 0, fn, ctx);
	}
	/* Each version held or staged, then each one gone. */
	for (size_t i = 0; i <= kf_keyring_count(now); i++) {
		const struct kf_keyring_entry *e = entry_or_staged(now, i);

		if (e && (!old || differs(e, old)))
			version_changed(t, e->version, fn, ctx);
	}
	for (size_t i = 0; old && i <= kf_keyring_count(old); i++) {
		const struct kf_keyring_entry *e = entry_or_staged(old, i);

		if (e && differs(e, now))
			version_changed(t, e->version, fn, ctx);
	}
}

/* --- change notification ---------------------------------------------- */

/* Whether keyrings a and b have the same decryption set (its versions). */
static bool same_set(const struct kf_keyring *a, const struct kf_keyring *b)
{
	const struct kf_keyring_entry *x, *y;

	for (size_t i = 0;; i++) {
		x = kf_keyring_decryption_at(a, i);
		y = kf_keyring_decryption_at(b, i);
		if (!x || !y || x->version != y->version)
			return !x && !y;
	}
}

bool kf_tree_stale(struct kf_tree *t, const struct kf_keyring *seen,
		   const struct kf_keyring *kr, struct kf_node n)
{
	const struct kf_keyring_entry *now, *then;
	uint32_t v = n.version;

	if (n.kind == KF_NODE_NONE || n.kind >= KF_NODE_KIND_COUNT)
		return false;
	if (kf_tree_kinds[n.kind].entry == KF_ENTRY_VERSION)
		return !kf_tree_exists(t, kr, n);
	if (!(kf_tree_kinds[n.kind].flags & F_FOLLOWS))
		return false;
	/* A key set is stale when any of its keys came or went. */
	if (seen && kf_tree_kinds[n.kind].content == KF_CONTENT_KEYSET)
		return !same_set(seen, kr);
	if (seen) {
		then = kf_tree_entry(seen, n);
		v = then ? then->version : 0;
	}
	now = kf_tree_entry(kr, n);
	return !now || now->version != v;
}
