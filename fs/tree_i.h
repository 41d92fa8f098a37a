/* SPDX-License-Identifier: MIT */
/*
 * tree_i: the inside of the tree module, shared by its two files and no
 * one else -- tree.c (the node table and the tree's shape: which nodes
 * exist, their names, listings, what a change touches) and tree_content.c
 * (what a node holds: attributes and content).  Everything else goes
 * through tree.h and decides by a node's flags.
 */
#ifndef KF_TREE_I_H
#define KF_TREE_I_H

#include <pthread.h>
#include <time.h>

#include "archives.h"
#include "tree.h"

struct kf_tree {
	struct kf_manager *m;
	const struct kf_config *cfg;
	time_t started;
	struct kf_archives *archives; /* backups/ names; locks inside */

	/* The control files' names, by row: metrics' `file` label. */
	const char *controls[KF_MANAGER_CONTROLS_MAX];
	size_t n_controls;

	/* Cached read mode: the one rendering of metrics (tree_content.c). */
	pthread_mutex_t shared_lock;
	char *shared;	   /* protected by shared_lock; malloc'd */
	size_t shared_len; /* protected by shared_lock */
	int64_t shared_ms; /* protected by shared_lock: when rendered */
	bool shared_dirty; /* protected by shared_lock: changed, untold */
};

/* The kinds of node: the rows of the node table (tree.c). */
enum kf_node_kind {
	KF_NODE_NONE = 0,
	KF_NODE_ROOT = 1, /* inode 1, FUSE_ROOT_ID */
	KF_NODE_CURRENT,
	KF_NODE_PREVIOUS,
	KF_NODE_VERSION,
	KF_NODE_STATUS,
	KF_NODE_DERIVED_DIR,
	KF_NODE_DERIVED,
	KF_NODE_VERSIONS_DIR,
	KF_NODE_VDIR,
	KF_NODE_VKEY,
	KF_NODE_VDERIVED_DIR,
	KF_NODE_VDERIVED,
	KF_NODE_BACKUPS_DIR,
	KF_NODE_BACKUP,
	KF_NODE_CONTROL_DIR,
	KF_NODE_CONTROL,
	KF_NODE_AUDIT,
	KF_NODE_METRICS,
	KF_NODE_KEYS_DIR,
	KF_NODE_KEYSET,
	KF_NODE_NEXT,	      /* the staged data key */
	KF_NODE_DERIVED_NEXT, /* derived/<purpose>.next */
	KF_NODE_KIND_COUNT
};

/* How a kind's nodes are named in their directory. */
enum kf_node_naming {
	KF_NAMED_FIXED,	       /* the row's name */
	KF_NAMED_PURPOSE,      /* one per configured purpose: index */
	KF_NAMED_PURPOSE_NEXT, /* "<purpose>.next" per purpose: index */
	KF_NAMED_VERSION,      /* one per version of the keyring: version */
	KF_NAMED_ARCHIVE, /* one per archive file: index = slot, version = gen
			   */
	KF_NAMED_COMMAND, /* one per control command: index */
};

/* Which keyring entry a node shows: its key, its version, its mtime. */
enum kf_node_entry {
	KF_ENTRY_NONE,	   /* none: the node always exists; mtime = start */
	KF_ENTRY_CURRENT,  /* the current one */
	KF_ENTRY_PREVIOUS, /* the one before: the node exists while it does */
	KF_ENTRY_VERSION,  /* the node's version: exists while it is kept or
			    * staged */
	KF_ENTRY_STAGED,   /* the staged one: exists while there is one */
};

/* What a read of the node returns. */
enum kf_node_content {
	KF_CONTENT_NONE,    /* directories; control files: the open's answer */
	KF_CONTENT_KEY,	    /* the entry's key, as text */
	KF_CONTENT_DERIVED, /* derive(the entry's key, purpose), as text */
	KF_CONTENT_VERSION, /* the entry's version, "N\n" */
	KF_CONTENT_STATUS,  /* the manager's info, JSON + "\n" */
	KF_CONTENT_ARCHIVE, /* the archive file's bytes */
	KF_CONTENT_AUDIT_LOG, /* the audit log's bytes; empty until written */
	KF_CONTENT_METRICS,   /* Prometheus text (core/metrics.h) */
	/*
	 * A purpose's decryption set (kf_tree_keyset): the derived key of
	 * every retained version, current first, one per line.
	 */
	KF_CONTENT_KEYSET,
};

/* Whose owner, group and mode a node has. */
enum kf_node_access {
	KF_ACCESS_DIR, /* root, 0555 */
	KF_ACCESS_KEYS,
	KF_ACCESS_STATUS,
	KF_ACCESS_PURPOSE, /* the purpose's own */
	KF_ACCESS_BACKUPS,
	KF_ACCESS_AUDIT,
	KF_ACCESS_CONTROL,     /* root, 0600 */
	KF_ACCESS_CONTROL_DIR, /* root, 0700 */
};

/* A row of the node table. */
struct kf_node_info {
	const char *name; /* KF_NAMED_FIXED: the name */
	enum kf_node_kind parent;
	enum kf_node_naming naming;
	unsigned flags; /* KF_NODE_F_* */
	enum kf_node_entry entry;
	enum kf_node_content content;
	enum kf_node_access access;
};

/* The node table (tree.c), indexed by kind. */
extern const struct kf_node_info kf_tree_kinds[KF_NODE_KIND_COUNT];

/* The keyring entry node n shows, or NULL (none, or not in kr). */
const struct kf_keyring_entry *kf_tree_entry(const struct kf_keyring *kr,
					     struct kf_node n);

/* Whether node n exists given keyring kr (and the backup directory). */
bool kf_tree_exists(struct kf_tree *t, const struct kf_keyring *kr,
		    struct kf_node n);

#endif
