/* SPDX-License-Identifier: MIT */
/*
 * tree: the keyfs tree as nodes (DESIGN.md §1) -- the one place that knows
 * its shape.
 *
 * A path is resolved once into a node -- (kind, version, index) -- and the
 * node is its inode number, so no per-inode state is kept: every attribute
 * and every byte of content is computed from the node, the configuration and
 * a keyring snapshot.  The kinds are tree.c's own (its node table); callers
 * decide by a node's flags.  `index` is the purpose index for derived files
 * and the row of the control table (control.h) for control files; for
 * backups/ entries it is the slot of the archive's name (archives.h) and
 * `version` that slot's generation, so an inode always means one name, for
 * as long as the archive exists.
 */
#ifndef KF_TREE_H
#define KF_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "control.h"
#include "manager.h"

struct kf_node {
	uint32_t kind;	  /* tree.c's node table; 0: no node */
	uint32_t version; /* versions/<N>/...; backups/ entries: generation */
	uint32_t index;	  /* purpose, control command, or backup name slot */
};

/* Node flags, from the node table: what callers decide by. */
#define KF_NODE_F_DIR 0x01
#define KF_NODE_F_KEY 0x02	/* key material: audited open, snapshot */
#define KF_NODE_F_CONTROL 0x04	/* a control file: writes run a command */
#define KF_NODE_F_VOLATILE 0x08 /* attributes change often: no attr cache */
#define KF_NODE_F_FILE 0x10	/* a real file's bytes (kf_tree_read_file) */
/*
 * Content built whole at open (kf_tree_content) and kept by the open file:
 * status, metrics.  Other files of the keyring keep the keyring and render
 * per read (kf_tree_render).
 */
#define KF_NODE_F_SNAPSHOT 0x20
/* Follows every keyring change: kf_tree_changes names it each time. */
#define KF_NODE_F_CHANGES 0x40
/*
 * Shows the current or the previous entry (current, previous, version,
 * derived/P), whose version is part of the inode number: when the entry
 * changes, the name resolves to a new inode, as if the file had been
 * replaced by a rename, and an open file of the old one is stale
 * (kf_tree_stale) -- while it reads what the name shows now.
 */
#define KF_NODE_F_FOLLOWS 0x80
/* A derived key: derive(the entry's key, purpose). */
#define KF_NODE_F_DERIVED 0x100

/* Largest content kf_tree_render writes, with its NUL: key text, "N\n". */
#define KF_TREE_SMALL_MAX 64
/* The block size the tree reports (st_blksize, statfs). */
#define KF_TREE_BLOCK_SIZE 4096

struct kf_tree;

/* A tree over m (borrowed; outlives the tree).  NULL: out of memory. */
struct kf_tree *kf_tree_new(struct kf_manager *m);
/* Frees t (NULL is fine); returns NULL. */
struct kf_tree *kf_tree_free(struct kf_tree *t);

/* A node's inode number, and back (kind 0 for a number that is none). */
uint64_t kf_tree_ino(struct kf_node n);
struct kf_node kf_tree_node(uint64_t ino);

/* The KF_NODE_F_* flags of n's kind; 0 for no node. */
unsigned kf_tree_flags(struct kf_node n);

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
 * content is not secret, so callers handle every buffer alike.  Real files
 * (KF_NODE_F_FILE) are read with kf_tree_read_file.
 */
int kf_tree_content(struct kf_tree *t, const struct kf_keyring *kr,
		    struct kf_node n, uint8_t **ret_buf, size_t *ret_len);

/*
 * Reads up to size bytes at off of the real file behind n (KF_NODE_F_FILE:
 * an archive, the audit log) into buf.  The number of bytes read, or
 * -errno (-EINVAL for other nodes); an audit log not written yet reads as
 * empty.
 */
ssize_t kf_tree_read_file(struct kf_tree *t, struct kf_node n, char *buf,
			  size_t size, off_t off);

/* The control command behind n (KF_NODE_F_CONTROL), or NULL. */
const struct kf_control_cmd *kf_tree_command(struct kf_node n);

/*
 * Called by kf_tree_changes for each thing a keyring change may have made
 * stale: with name NULL, node n's attributes or content; else the entry
 * `name` in directory n, which may now resolve differently or not at all.
 */
typedef void (*kf_tree_change_fn)(void *ctx, struct kf_node n,
				  const char *name);

/*
 * What changed between keyrings old (NULL: unknown, so everything) and
 * now: every node that follows each change, and the nodes of each version
 * that came, went or holds another key.  fn is called once per node or
 * entry; the tree is not otherwise touched.
 */
void kf_tree_changes(struct kf_tree *t, const struct kf_keyring *old,
		     const struct kf_keyring *now, kf_tree_change_fn fn,
		     void *ctx);

/*
 * How many names the backups/ name table holds, and how many slots it has
 * allocated: logged on SIGUSR1 beside the request counters.
 */
void kf_tree_backup_names(struct kf_tree *t, size_t *ret_names,
			  size_t *ret_slots);

/* The path of n inside the mount ("derived/phi"), for audit records. */
void kf_tree_path(struct kf_tree *t, struct kf_node n, char *buf, size_t len);

/*
 * Whether an open file of node n no longer shows what its name shows in kr
 * (the change notification of poll, README: Metrics, change notification
 * and metadata).  `seen` is the keyring the open took as its snapshot
 * (strict mode), or NULL: then the node's own inode number says what it
 * showed (KF_NODE_F_FOLLOWS).  A versions/N node is stale once version N
 * is gone; nodes that follow no key never are.
 */
bool kf_tree_stale(struct kf_tree *t, const struct kf_keyring *seen,
		   const struct kf_keyring *kr, struct kf_node n);

/*
 * What an open of key node n (KF_NODE_F_KEY) reads in kr, for the usage
 * table (kf_manager_note_read): *ret_version, 0 for every version of kr's
 * decryption set (keys/<purpose>), and *ret_purpose, the purpose's name
 * (static while the tree lives) or NULL for a data key.  -ENOENT when n is
 * gone, -EINVAL when it is no key file.
 */
int kf_tree_reads(struct kf_tree *t, const struct kf_keyring *kr,
		  struct kf_node n, uint32_t *ret_version,
		  const char **ret_purpose);

/* The longest extended attribute value, with its NUL. */
#define KF_TREE_XATTR_MAX 64

/*
 * The extended attribute `name` of node n in kr, into value (*ret_len
 * bytes, no NUL counted): on key files, user.keyfs.version ("7"),
 * user.keyfs.fingerprint (the status file's fingerprint of the key the
 * file holds: for a derived file, of the derived key) and
 * user.keyfs.created (RFC 3339, the data key's).  Never a key byte.
 * -ENODATA for any other name or node, -ENOENT when n is gone.
 */
int kf_tree_xattr(struct kf_tree *t, const struct kf_keyring *kr,
		  struct kf_node n, const char *name,
		  char value[KF_TREE_XATTR_MAX], size_t *ret_len);

/*
 * The names kf_tree_xattr answers for n, as listxattr gives them (each
 * followed by a NUL) in *ret_names (static); their total length, 0 for
 * none.
 */
size_t kf_tree_xattr_names(struct kf_node n, const char **ret_names);

/*
 * Cached read mode keeps one rendering of `metrics`, which lookups, stats
 * and reads all serve (the kernel caches its pages and reads them up to
 * the size it was told), re-rendered when older than a second.  The node
 * shown that way (kind 0 in the other modes, where every open takes its
 * own snapshot).
 */
struct kf_node kf_tree_shared_node(struct kf_tree *t);

/*
 * Re-renders the shared node's content: now (after a change), or if it is
 * older than a second.  1 when its text changed since the last call that
 * said so (the caller then drops the kernel's copy), 0 when it did not, or
 * -errno.
 */
int kf_tree_refresh(struct kf_tree *t, bool now);

#endif
