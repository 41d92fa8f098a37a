/* SPDX-License-Identifier: MIT */
/*
 * fs: what the daemon's FUSE parts share -- the context every request
 * reaches through fuse_req_userdata, and the entry points of ops.c (the
 * FUSE operations), workers.c (invalidation and automatic rotation) and
 * notify.c (poll waiters, metrics_file).
 * mount.c owns the life cycle.  What the tree looks like is tree.h's; what
 * a control file does is control.h's; neither includes FUSE.
 */
#ifndef KF_FS_H
#define KF_FS_H

#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 14)

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct kf_handle;
struct kf_notify;

#include <fuse_lowlevel.h>

#include "lookups.h"
#include "manager.h"
#include "tree.h"

#define KF_TTL 86400.0 /* seconds; stable names and attributes */

/* Requests handled, by kind: logged on SIGUSR1 (the benchmark reads them). */
enum kf_req_kind {
	KF_RQ_LOOKUP,
	KF_RQ_GETATTR,
	KF_RQ_OPEN,
	KF_RQ_READ,
	KF_RQ_RELEASE,
	KF_RQ_WRITE,
	KF_RQ_READDIR,
	KF_RQ_OTHER,
	KF_RQ_COUNT
};
extern const char *const kf_req_names[KF_RQ_COUNT];

struct kf_fs {
	_Atomic unsigned long requests[KF_RQ_COUNT];
	struct kf_manager *m;
	const struct kf_config *cfg;
	struct kf_tree *tree;
	struct kf_lookups *lookups; /* inodes the kernel holds; locks inside */
	struct fuse_session *se;
	const char *mountpoint;
	enum kf_read_mode read_mode; /* the configuration's */

	/* Invalidation worker. */
	pthread_t inval_thread;
	pthread_mutex_t inval_lock;
	pthread_cond_t inval_cond;
	uint64_t inval_wanted;	  /* protected by inval_lock */
	uint64_t inval_done;	  /* protected by inval_lock */
	bool inval_stop;	  /* protected by inval_lock */
	struct kf_keyring *shown; /* inval thread only: last invalidated */
	/* Invalidations sent, and those skipped (the kernel held nothing). */
	_Atomic unsigned long inval_inodes, inval_entries, inval_skipped;

	/* Poll waiters and metrics_file (notify.c); set while workers run. */
	struct kf_notify *notify;

	/* Open files, freed at exit when the kernel never released them. */
	pthread_mutex_t handles_lock;
	struct kf_handle *handles; /* protected by handles_lock */

	/* Automatic rotation. */
	pthread_t rot_thread;
	pthread_mutex_t rot_lock;
	pthread_cond_t rot_cond;
	bool rot_stop; /* protected by rot_lock */
};

/* The low-level operations (ops.c); userdata is the struct kf_fs. */
extern const struct fuse_lowlevel_ops kf_ops;

/* Frees every open file's handle (ops.c); after the request loop ended. */
void kf_ops_release_all(struct kf_fs *fs);

/*
 * Starts the invalidation and rotation threads and registers for keyring
 * changes (workers.c); fs must be mounted.  kf_workers_stop undoes it.
 * 0, or -errno when a thread cannot be created (then nothing runs).
 */
int kf_workers_start(struct kf_fs *fs) KF_WUR;
void kf_workers_stop(struct kf_fs *fs);

/*
 * The notifications (notify.c): started by kf_workers_start once the
 * invalidation thread runs, stopped after it ended.  0 or -errno.
 */
int kf_notify_start(struct kf_fs *fs) KF_WUR;
void kf_notify_stop(struct kf_fs *fs);

/*
 * Keeps ph, a poll request's handle, to wake it after the next change (a
 * request handler may call it: it only stores).  0, or -errno when it was
 * not kept (the caller answers as if changed, and frees ph).
 */
int kf_notify_poll_add(struct kf_fs *fs, struct fuse_pollhandle *ph) KF_WUR;

/*
 * After a change was invalidated (the invalidation thread): wakes every
 * poll waiter, renews what cached mode shows of metrics, and has
 * metrics_file written.
 */
void kf_notify_changed(struct kf_fs *fs);

#endif
