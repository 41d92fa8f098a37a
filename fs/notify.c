// SPDX-License-Identifier: MIT
/*
 * notify: what the daemon tells others without being asked -- poll()
 * waiters woken after a change, metrics_file rewritten, and in cached mode
 * the kernel's copy of `metrics` dropped when it is renewed.
 *
 * A poll request that may sleep leaves a handle here (kf_notify_poll_add);
 * after a change the invalidation thread, once everything stale has been
 * invalidated, wakes every handle (kf_notify_changed): the kernel then
 * polls again, and the answer says whether that open file is stale
 * (kf_tree_stale).  Waking a waiter whose file did not change costs one
 * more poll request and nothing else: it sleeps on.  A handle cannot be
 * told from another (the kernel polls again with a new one, and never says
 * when a waiter left), so the table is bounded: when it is full, this
 * module's thread wakes them all and empties it; those still waiting poll
 * again and come back.
 *
 * The thread also writes metrics_file every KF_METRICS_FILE_INTERVAL
 * seconds and after each change, and in cached mode renews the shared
 * rendering of metrics every second while the kernel holds it.  Nothing
 * here runs in a request handler but kf_notify_poll_add, which only
 * stores.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs.h"
#include "log.h"
#include "metrics.h"

/* Poll handles kept at most; 8 bytes each, three tables. */
#define POLLS_MAX 4096
/* The thread's tick in cached mode: metrics' shared rendering. */
#define SHARED_TICK_MS 1000
#define NEVER INT64_MAX

struct kf_notify {
	pthread_mutex_t lock;
	pthread_cond_t wake;		/* CLOCK_MONOTONIC */
	struct fuse_pollhandle **polls; /* protected by lock: waiting */
	size_t n_polls;			/* protected by lock */
	struct fuse_pollhandle **flush; /* protected by lock: for the thread */
	size_t n_flush;			/* protected by lock */
	bool changed;			/* protected by lock: for the thread */
	bool stop;			/* protected by lock */

	/* The invalidation thread's own: the handles it is waking. */
	struct fuse_pollhandle **waking;
	/* The thread's own. */
	struct fuse_pollhandle **flushing;
	pthread_t thread;
	int64_t next_file_ms;
	int64_t next_shared_ms;
};

/* Wakes n handles and frees them. */
static void wake_all(struct fuse_pollhandle **ph, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		/* -ENOENT: that file is closed, or no longer polled. */
		(void)fuse_lowlevel_notify_poll(ph[i]);
		fuse_pollhandle_destroy(ph[i]);
		ph[i] = NULL;
	}
}

int kf_notify_poll_add(struct kf_fs *fs, struct fuse_pollhandle *ph)
{
	struct kf_notify *nt = fs->notify;
	struct fuse_pollhandle **full;
	int r = 0;

	if (!nt)
		return -ENOSYS;
	pthread_mutex_lock(&nt->lock);
	if (nt->n_polls == POLLS_MAX) {
		if (nt->n_flush == 0) {
			/* The thread wakes these; the table starts empty. */
			full = nt->flush;
			nt->flush = nt->polls;
			nt->n_flush = nt->n_polls;
			nt->polls = full;
			nt->n_polls = 0;
			pthread_cond_signal(&nt->wake);
		} else {
			r = -ENOSPC; /* the thread is behind: answer now */
		}
	}
	if (r == 0)
		nt->polls[nt->n_polls++] = ph;
	pthread_mutex_unlock(&nt->lock);
	return r;
}

/*
 * The shared rendering renewed -- after a change always, else while the
 * kernel holds it (when it does not, the next lookup renews it) -- and the
 * kernel's copy dropped when the text changed.
 */
static void renew_shared(struct kf_fs *fs, bool changed)
{
	struct kf_node n = kf_tree_shared_node(fs->tree);
	uint64_t ino = kf_tree_ino(n);
	bool held = kf_lookups_held(fs->lookups, ino);

	if (n.kind == 0 || (!held && !changed))
		return;
	if (kf_tree_refresh(fs->tree, changed) > 0 && held)
		(void)fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
}

void kf_notify_changed(struct kf_fs *fs)
{
	struct kf_notify *nt = fs->notify;
	struct fuse_pollhandle **polls;
	size_t n;

	if (!nt)
		return;
	pthread_mutex_lock(&nt->lock);
	polls = nt->polls;
	n = nt->n_polls;
	nt->polls = nt->waking;
	nt->n_polls = 0;
	nt->changed = true;
	pthread_cond_signal(&nt->wake);
	pthread_mutex_unlock(&nt->lock);
	/* A poll from now on is registered anew and sees the change. */
	wake_all(polls, n);
	nt->waking = polls;
	renew_shared(fs, true);
}

/* metrics_file, rewritten; a failure is logged once until it works. */
static void write_metrics_file(struct kf_fs *fs, bool *failing)
{
	const char *path = fs->cfg->metrics_file;
	char err[KF_ERR_MAX] = "";
	const char *names[KF_MANAGER_CONTROLS_MAX];
	const struct kf_control_cmd *c;
	size_t n = 0, len = 0;
	char *text = NULL;
	int r;

	while (n < KF_MANAGER_CONTROLS_MAX && (c = kf_control_at(n)))
		names[n++] = c->name;
	r = kf_metrics_render(fs->m, names, n, &text, &len);
	if (r < 0)
		kf_err_set(err, "metrics_file %s: %s", path, strerror(-r));
	else
		r = kf_metrics_write_file(path, text, len, &fs->cfg->status,
					  err);
	free(text);
	if (r < 0 && !*failing)
		kf_log(LOG_ERR, "%s", err);
	else if (r == 0 && *failing)
		kf_log(LOG_NOTICE, "metrics_file %s written again", path);
	*failing = r < 0;
}

/* The CLOCK_MONOTONIC time at_ms (kf_time_mono_ms; NEVER: in an hour). */
static void deadline(struct timespec *ts, int64_t at_ms)
{
	int64_t wait = at_ms == NEVER ? 3600 * 1000 : at_ms - kf_time_mono_ms();
	long ns;

	if (wait < 0)
		wait = 0;
	clock_gettime(CLOCK_MONOTONIC, ts);
	ns = ts->tv_nsec + (long)(wait % 1000) * 1000000L;
	ts->tv_sec += (time_t)(wait / 1000) + ns / 1000000000L;
	ts->tv_nsec = ns % 1000000000L;
}

static void *notify_main(void *arg)
{
	struct kf_fs *fs = arg;
	struct kf_notify *nt = fs->notify;
	bool file = fs->cfg->metrics_file != NULL, failing = false;
	bool tick = kf_tree_shared_node(fs->tree).kind != 0;
	struct fuse_pollhandle **flush;
	struct timespec until;
	bool changed;
	size_t n;

	nt->next_file_ms = file ? kf_time_mono_ms() : NEVER;
	nt->next_shared_ms = tick ? kf_time_mono_ms() + SHARED_TICK_MS : NEVER;
	pthread_mutex_lock(&nt->lock);
	while (!nt->stop) {
		int64_t next = nt->next_file_ms < nt->next_shared_ms
				   ? nt->next_file_ms
				   : nt->next_shared_ms;

		if (nt->n_flush == 0 && !nt->changed &&
		    kf_time_mono_ms() < next) {
			deadline(&until, next);
			pthread_cond_timedwait(&nt->wake, &nt->lock, &until);
			continue;
		}
		flush = nt->flush;
		n = nt->n_flush;
		nt->flush = nt->flushing;
		nt->n_flush = 0;
		changed = nt->changed;
		nt->changed = false;
		pthread_mutex_unlock(&nt->lock);

		wake_all(flush, n);
		nt->flushing = flush;
		if (tick && kf_time_mono_ms() >= nt->next_shared_ms) {
			renew_shared(fs, false);
			nt->next_shared_ms = kf_time_mono_ms() + SHARED_TICK_MS;
		}
		if (file &&
		    (changed || kf_time_mono_ms() >= nt->next_file_ms)) {
			write_metrics_file(fs, &failing);
			nt->next_file_ms =
			    kf_time_mono_ms() + KF_METRICS_FILE_INTERVAL * 1000;
		}
		pthread_mutex_lock(&nt->lock);
	}
	pthread_mutex_unlock(&nt->lock);
	return NULL;
}

static struct kf_notify *notify_free(struct kf_notify *nt)
{
	if (!nt)
		return NULL;
	for (size_t i = 0; i < nt->n_polls; i++)
		fuse_pollhandle_destroy(nt->polls[i]);
	for (size_t i = 0; i < nt->n_flush; i++)
		fuse_pollhandle_destroy(nt->flush[i]);
	free(nt->polls);
	free(nt->flush);
	free(nt->waking);
	free(nt->flushing);
	pthread_cond_destroy(&nt->wake);
	pthread_mutex_destroy(&nt->lock);
	free(nt);
	return NULL;
}

int kf_notify_start(struct kf_fs *fs)
{
	struct kf_notify *nt = calloc(1, sizeof(*nt));
	pthread_condattr_t ca;
	int e;

	if (!nt)
		return -ENOMEM;
	pthread_mutex_init(&nt->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&nt->wake, &ca);
	pthread_condattr_destroy(&ca);
	nt->polls = calloc(POLLS_MAX, sizeof(*nt->polls));
	nt->flush = calloc(POLLS_MAX, sizeof(*nt->flush));
	nt->waking = calloc(POLLS_MAX, sizeof(*nt->waking));
	nt->flushing = calloc(POLLS_MAX, sizeof(*nt->flushing));
	if (!nt->polls || !nt->flush || !nt->waking || !nt->flushing) {
		notify_free(nt);
		return -ENOMEM;
	}
	fs->notify = nt;
	e = pthread_create(&nt->thread, NULL, notify_main, fs);
	if (e != 0) {
		fs->notify = notify_free(nt);
		return -e;
	}
	return 0;
}

void kf_notify_stop(struct kf_fs *fs)
{
	struct kf_notify *nt = fs->notify;

	if (!nt)
		return;
	pthread_mutex_lock(&nt->lock);
	nt->stop = true;
	pthread_cond_signal(&nt->wake);
	pthread_mutex_unlock(&nt->lock);
	pthread_join(nt->thread, NULL);
	fs->notify = notify_free(nt);
}
