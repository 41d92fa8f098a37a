/* SPDX-License-Identifier: MIT */
/*
 * tree: the keyfs tree as nodes (DESIGN.md §1).
 *
 * A path is resolved once into a node -- (kind, version, index) -- and the
 * node is its inode number, so no per-inode state is kept: every attribute
 * and every byte of content is computed from the node, the configuration and
 * a keyring snapshot.  `index` is the purpose index for derived files; for
 * backups/ entries it is the slot of the archive's name in the tree's name
 * table and `version` that slot's generation, so an inode always means one
 * name, for as long as the archive exists.
 */
#ifndef KF_TREE_H
#define KF_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "manager.h"

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
	KF_NODE_CTL_ROTATE,
	KF_NODE_CTL_BACKUP,
	KF_NODE_CTL_RESTORE,
	KF_NODE_CTL_PRUNE,
	KF_NODE_CTL_RETIRE,
	KF_NODE_AUDIT,
	KF_NODE_KIND_COUNT
};

struct kf_node {
	enum kf_node_kind kind;
	uint32_t version; /* VDIR, VKEY, VDERIVED_DIR, VDERIVED; BACKUP: gen */
	uint32_t index;	  /* purpose index, or backup name slot */
};

/* Node flags, from the kind table. */
#define KF_NODE_F_DIR 0x1
#define KF_NODE_F_KEY 0x2      /* key material: snapshot per open, audited */
#define KF_NODE_F_CONTROL 0x4  /* a control file: writes drive the manager */
#define KF_NODE_F_VOLATILE 0x8 /* attributes change often: no attr cache */

struct kf_tree;

/* A tree over m (borrowed; outlives the tree). */
struct kf_tree *kf_tree_new(struct kf_manager *m);
struct kf_tree *kf_tree_free(struct kf_tree *t);

uint64_t kf_tree_ino(struct kf_node n);
struct kf_node kf_tree_node(uint64_t ino);
unsigned kf_tree_flags(enum kf_node_kind kind);

/*
 * Resolves name in directory `parent` against kr.  Returns 0 and *ret, or
 * -ENOENT / -ENOTDIR.  In backups/ only the name of an archive file that
 * exists gets a node (-ENOSPC when the name table is full).
 */
int kf_tree_lookup(struct kf_tree *t, const struct kf_keyring *kr,
		   struct kf_node parent, const char *name,
		   struct kf_node *ret);

/*
 * Attributes of node n (which must exist in kr: else -ENOENT).  Sizes are
 * exact: the size of the content a read returns now.
 */
int kf_tree_stat(struct kf_tree *t, const struct kf_keyring *kr,
		 struct kf_node n, struct stat *ret);

/* Called once per entry by kf_tree_list; nonzero stops the listing. */
typedef int (*kf_tree_list_fn)(void *ctx, const char *name, struct kf_node n,
			       mode_t type);

/* Lists directory n ("." and ".." included).  -ENOTDIR for files. */
int kf_tree_list(struct kf_tree *t, const struct kf_keyring *kr,
		 struct kf_node n, kf_tree_list_fn fn, void *ctx);

#define KF_TREE_SMALL_MAX 64 /* key text, "N\n" */

/*
 * The content of a key file or of `version`, built from kr into buf (a
 * stack buffer is fine: the caller wipes it).  -EINVAL for other nodes.
 * This is the per-read path: no allocation.
 */
int kf_tree_render(struct kf_tree *t, const struct kf_keyring *kr,
		   struct kf_node n, char buf[KF_TREE_SMALL_MAX],
		   size_t *ret_len);

/*
 * The whole content of a file node built from kr: key text, "N\n", status
 * JSON.  *ret_buf is sodium_malloc'd (free with sodium_free) even when the
 * content is not secret, so callers handle every buffer alike.  Backups and
 * audit.log are not built here (kf_tree_file_path).
 */
int kf_tree_content(struct kf_tree *t, const struct kf_keyring *kr,
		    struct kf_node n, uint8_t **ret_buf, size_t *ret_len);

/*
 * For nodes backed by a real file (BACKUP, AUDIT): its path, malloc'd.
 * -ENOENT when the backup name id is unknown.
 */
int kf_tree_file_path(struct kf_tree *t, struct kf_node n, char **ret_path);

/*
 * How many names the backups/ name table holds, and how many slots it has
 * allocated: logged on SIGUSR1 beside the request counters.
 */
void kf_tree_backup_names(struct kf_tree *t, size_t *ret_names,
			  size_t *ret_slots);

/* The path of n inside the mount ("derived/phi"), for audit records. */
void kf_tree_path(struct kf_tree *t, struct kf_node n, char *buf, size_t len);

#endif
