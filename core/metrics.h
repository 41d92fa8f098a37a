/* SPDX-License-Identifier: MIT */
/*
 * metrics: the daemon's state and counters in the Prometheus text
 * exposition format, version 0.0.4 (`# HELP`, `# TYPE`, then samples) --
 * what the tree's `metrics` file holds and metrics_file receives (README:
 * Metrics, change notification and metadata).
 *
 * Built from the status object (kf_manager_info: version, created, next
 * rotation, the cluster store's health and nodes), the manager's counters
 * (kf_manager_counters) and the backup folder's listing.  Version numbers,
 * times, counts and sizes only: never a key byte, never a fingerprint.
 */
#ifndef KF_METRICS_H
#define KF_METRICS_H

#include <stddef.h>

#include "config.h"
#include "manager.h"

/* The HTTP Content-Type of this format, for whoever serves it. */
#define KF_METRICS_CONTENT_TYPE "text/plain; version=0.0.4"

/* How often the daemon rewrites metrics_file, seconds (and on changes). */
#define KF_METRICS_FILE_INTERVAL 15

/*
 * The metrics of m now, as text ending in a newline.  control_names[i]
 * (n_controls of them, at most KF_MANAGER_CONTROLS_MAX; borrowed) names
 * the control file that kf_manager_count_control counts as row i: the
 * `file` label.  *ret_text is malloc'd and NUL-terminated, *ret_len its
 * length.  0, or -ENOMEM.
 */
int kf_metrics_render(struct kf_manager *m, const char *const *control_names,
		      size_t n_controls, char **ret_text,
		      size_t *ret_len) KF_WUR;

/*
 * Writes len bytes of text to path the way node_exporter's textfile
 * collector needs it: into a new file beside it (its name does not end in
 * .prom), owned and moded as `access` says, then renamed over path, so a
 * reader sees the old file or the new one, whole.  Not fsynced: the file is
 * rewritten every KF_METRICS_FILE_INTERVAL seconds, and a crash loses
 * nothing that the next write does not bring back.  0, or -errno with the
 * reason in err.
 */
int kf_metrics_write_file(const char *path, const char *text, size_t len,
			  const struct kf_access *access,
			  char err[KF_ERR_MAX]) KF_WUR;

#endif
