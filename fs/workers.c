// SPDX-License-Identifier: MIT
/*
 * workers: the daemon's two background threads (and the manager's, started
 * and stopped from here: store = etcd's sync, the audit log's upkeep).
 *
 * Invalidation: names and attributes are cached by the kernel for KF_TTL,
 * which halves the cost of a key read; whatever a change affects (the tree
 * says what: kf_tree_changes) is invalidated before the control write that
 * made it returns.  The invalidations are sent by this thread, never from a
 * request handler: the handler hands the work over and waits for it to
 * finish.
 *
 * Rotation: rotates when rotate_interval says so, and seals the audit
 * anchor hourly.
 */
#include <string.h>
#include <time.h>

#include "fs.h"
#include "log.h"

/*
 * Drops one thing kf_tree_changes names from the kernel's caches: an inode's
 * attributes and pages, or a name in a directory -- when the kernel holds
 * the inode, or the directory (lookups.h); else there is nothing to drop.
 * -ENOENT from the kernel means it let go in the meantime.
 */
static void drop(void *arg, struct kf_node n, const char *name)
{
	struct kf_fs *fs = arg;
	uint64_t ino = kf_tree_ino(n);

	if (!kf_lookups_held(fs->lookups, ino)) {
		fs->inval_skipped++;
	} else if (name) {
		fs->inval_entries++;
		(void)fuse_lowlevel_notify_inval_entry(fs->se, ino, name,
						       strlen(name));
	} else {
		fs->inval_inodes++;
		(void)fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
	}
}

/* Drops from the kernel every name, attribute and page that changed. */
static void invalidate_changes(struct kf_fs *fs)
{
	struct kf_keyring *now = kf_manager_keyring(fs->m);

	kf_tree_changes(fs->tree, fs->shown, now, drop, fs);
	kf_keyring_unref(fs->shown);
	fs->shown = now;
	/* Poll waiters learn of it once what it made stale is dropped. */
	kf_notify_changed(fs);
}

static void *inval_main(void *arg)
{
	struct kf_fs *fs = arg;

	pthread_mutex_lock(&fs->inval_lock);
	while (!fs->inval_stop) {
		if (fs->inval_done == fs->inval_wanted) {
			pthread_cond_wait(&fs->inval_cond, &fs->inval_lock);
			continue;
		}
		uint64_t target = fs->inval_wanted;

		pthread_mutex_unlock(&fs->inval_lock);
		invalidate_changes(fs);
		pthread_mutex_lock(&fs->inval_lock);
		fs->inval_done = target;
		pthread_cond_broadcast(&fs->inval_cond);
	}
	pthread_mutex_unlock(&fs->inval_lock);
	return NULL;
}

/*
 * The manager's change callback: runs in a request handler (a control
 * write) or in the rotation thread.  Waits until the invalidation thread has
 * dropped everything that changed, so the write returns only then.
 */
static void on_change(void *arg)
{
	struct kf_fs *fs = arg;
	uint64_t mine;

	pthread_mutex_lock(&fs->inval_lock);
	mine = ++fs->inval_wanted;
	pthread_cond_broadcast(&fs->inval_cond);
	while (fs->inval_done < mine && !fs->inval_stop)
		pthread_cond_wait(&fs->inval_cond, &fs->inval_lock);
	pthread_mutex_unlock(&fs->inval_lock);
}

/* --- automatic rotation ---------------------------------------------- */

static void *rot_main(void *arg)
{
	struct kf_fs *fs = arg;

	pthread_mutex_lock(&fs->rot_lock);
	while (!fs->rot_stop) {
		int64_t due = kf_manager_rotation_due_in(fs->m);
		struct timespec until;

		if (due == 0) {
			char err[KF_ERR_MAX];
			bool rotated;

			pthread_mutex_unlock(&fs->rot_lock);
			if (kf_manager_rotate_if_due(fs->m, &rotated, err) <
			    0) {
				kf_log(LOG_ALERT,
				       "automatic rotation failed: %s; "
				       "retrying in a minute",
				       err);
				due = 60;
			} else if (rotated) {
				kf_log(LOG_NOTICE, "automatic rotation done");
			}
			kf_key_wipe_stack(KF_KEY_WIPE_OPERATION);
			pthread_mutex_lock(&fs->rot_lock);
			if (due == 0)
				continue;
		}
		clock_gettime(CLOCK_REALTIME, &until);
		/* Re-check at least hourly: the clock may be set. */
		until.tv_sec += due < 0 || due > 3600 ? 3600 : due;
		pthread_cond_timedwait(&fs->rot_cond, &fs->rot_lock, &until);
		if (!fs->rot_stop) {
			char err[KF_ERR_MAX];

			/* Anchor the open records of the past hour. */
			pthread_mutex_unlock(&fs->rot_lock);
			if (kf_manager_checkpoint(fs->m, err) < 0)
				kf_log(LOG_ALERT,
				       "sealing the audit anchor: %s", err);
			kf_key_wipe_stack(KF_KEY_WIPE_OPERATION);
			pthread_mutex_lock(&fs->rot_lock);
		}
	}
	pthread_mutex_unlock(&fs->rot_lock);
	return NULL;
}

/* Ends the invalidation thread and drops the keyring it showed. */
static void stop_invalidation(struct kf_fs *fs)
{
	pthread_mutex_lock(&fs->inval_lock);
	fs->inval_stop = true;
	pthread_cond_broadcast(&fs->inval_cond);
	pthread_mutex_unlock(&fs->inval_lock);
	pthread_join(fs->inval_thread, NULL);
	fs->shown = kf_keyring_unref(fs->shown);
	kf_notify_stop(fs);
}

int kf_workers_start(struct kf_fs *fs)
{
	char err[KF_ERR_MAX];
	int e;

	pthread_mutex_init(&fs->inval_lock, NULL);
	pthread_cond_init(&fs->inval_cond, NULL);
	pthread_mutex_init(&fs->rot_lock, NULL);
	pthread_cond_init(&fs->rot_cond, NULL);
	fs->shown = kf_manager_keyring(fs->m);
	/* Without these threads a control write would wait forever. */
	e = pthread_create(&fs->inval_thread, NULL, inval_main, fs);
	if (e != 0) {
		fs->shown = kf_keyring_unref(fs->shown);
		return -e;
	}
	/* Poll waiters and metrics_file (notify.c). */
	e = -kf_notify_start(fs);
	/*
	 * Told of changes before the first thread that makes one runs: the
	 * rotation thread may rotate at once (a key past its interval), and
	 * its change must be invalidated like any other.
	 */
	if (e == 0) {
		kf_manager_on_change(fs->m, on_change, fs);
		e = pthread_create(&fs->rot_thread, NULL, rot_main, fs);
	}
	if (e != 0) {
		kf_manager_on_change(fs->m, NULL, NULL);
		stop_invalidation(fs);
		return -e;
	}
	/* store = etcd: other nodes' changes come in from here on. */
	e = kf_manager_start_sync(fs->m, err);
	if (e == 0)
		/* Open windows' repeats, free space, syslog's drops. */
		e = kf_manager_start_audit(fs->m, err);
	if (e < 0) {
		kf_log(LOG_ERR, "%s", err);
		kf_workers_stop(fs);
		return e;
	}
	return 0;
}

void kf_workers_stop(struct kf_fs *fs)
{
	pthread_mutex_lock(&fs->rot_lock);
	fs->rot_stop = true;
	pthread_cond_broadcast(&fs->rot_cond);
	pthread_mutex_unlock(&fs->rot_lock);
	pthread_join(fs->rot_thread, NULL);
	kf_manager_stop_sync(fs->m);
	/* Every open window's repeats, before the unmount record. */
	kf_manager_stop_audit(fs->m);
	kf_manager_on_change(fs->m, NULL, NULL);
	stop_invalidation(fs);
}
