/* SPDX-License-Identifier: MIT */
/*
 * mount: the FUSE daemon -- the low-level operations over the tree, control
 * writes, cache invalidation, automatic rotation and the mount's life cycle.
 */
#ifndef KF_MOUNT_H
#define KF_MOUNT_H

#include <stdbool.h>

#include "config.h"

struct kf_mount_opts {
	const char *config_path; /* -c, or NULL */
	const char *mountpoint;	 /* NULL: the configuration's */
	const char *extra;	 /* -o OPTS, or NULL */
	bool foreground;	 /* -f */
};

/*
 * Everything `keyfs mount` does: configuration, checks on the mountpoint
 * (stale mount cleared, state paths under it refused), the manager, the
 * mount, the request loop until SIGTERM/SIGINT or an unmount.  Returns the
 * process exit status; errors are printed as one line on standard error.
 */
int kf_mount_main(const struct kf_mount_opts *o);

#endif
