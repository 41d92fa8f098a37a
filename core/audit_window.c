// SPDX-License-Identifier: MIT
/*
 * audit_window: one audit record per burst of opens (audit_window.h).
 *
 * The table is KF_WINDOW_SHARDS shards, each a chained hash table under its
 * own mutex, so opens from several threads rarely meet on one lock.  A
 * repeat takes one shard lock for a lookup and an increment.
 *
 * Records are written under `write_lock`, never under a shard lock.  That
 * one lock is what makes an ended window belong to exactly one writer: a
 * window that has ended is never counted in again, so under write_lock its
 * fields stay as they are and it stays in the table until the holder
 * removes it.  Opens that must write (a first open) already wait for each
 * other on the log's own lock; write_lock adds little to that.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit_window.h"

#define PER_SHARD (KF_WINDOW_MAX / KF_WINDOW_SHARDS)
#define BUCKETS 64 /* per shard: chains of about 4 when full */

_Static_assert(KF_WINDOW_MAX % KF_WINDOW_SHARDS == 0,
	       "the table divides evenly into shards");

struct entry {
	struct entry *next; /* in its bucket */
	uint64_t hash;
	struct kf_caller who;
	bool ended;	       /* flushed with `all`: no repeat joins it */
	int64_t start_ms;      /* monotonic: the first open */
	int64_t last_ms;       /* monotonic: the last repeat */
	int64_t start_wall_ms; /* wall clock of the first open */
	uint64_t first_seq;    /* the first open's record */
	uint64_t count;	       /* repeats since the first open */
	char path[];
};

struct shard {
	pthread_mutex_t lock;
	struct entry *buckets[BUCKETS]; /* protected by lock */
	size_t n;			/* entries; protected by lock */
	uint64_t counted;		/* repeats; protected by lock */
} __attribute__((aligned(64)));		/* one cache line each, at least */

struct kf_window {
	int64_t window_ms;	    /* read-only */
	struct kf_window_sink sink; /* read-only */
	pthread_mutex_t write_lock; /* held across every sink call */
	bool closed;		    /* protected by write_lock */
	_Atomic uint64_t records;   /* repeat records written */
	_Atomic uint64_t overflow;  /* first opens left out: shard full */
	struct shard shards[KF_WINDOW_SHARDS];
};

const struct kf_window_time *kf_window_now(struct kf_window_time *t)
{
	struct timespec ts;

	t->mono_ms = kf_time_mono_ms();
	/*
	 * The coarse clock is the one time(2), and so the log's timestamps,
	 * read: a window's "from" is then never a second later than its first
	 * open's record, written after this call.
	 */
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	t->wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	return t;
}

/* FNV-1a, 64 bits, over the caller's ids and the path. */
static uint64_t hash_of(const struct kf_caller *who, const char *path)
{
	const uint64_t prime = 0x100000001b3ULL;
	uint64_t ids[3] = {(uint64_t)who->pid, who->uid, who->gid};
	const unsigned char *p = (const unsigned char *)ids;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < sizeof(ids); i++)
		h = (h ^ p[i]) * prime;
	for (p = (const unsigned char *)path; *p; p++)
		h = (h ^ *p) * prime;
	return h;
}

static struct shard *shard_of(struct kf_window *w, uint64_t hash)
{
	return &w->shards[hash >> 60 & (KF_WINDOW_SHARDS - 1)];
}

static struct entry **bucket_of(struct shard *s, uint64_t hash)
{
	return &s->buckets[hash % BUCKETS];
}

_Static_assert((KF_WINDOW_SHARDS & (KF_WINDOW_SHARDS - 1)) == 0 &&
		   KF_WINDOW_SHARDS <= 16,
	       "shards are picked by the hash's top four bits");

/* The window of who on path in s, or NULL; s->lock held. */
static struct entry *find(struct shard *s, uint64_t hash,
			  const struct kf_caller *who, const char *path)
{
	for (struct entry *e = *bucket_of(s, hash); e; e = e->next)
		if (e->hash == hash && e->who.pid == who->pid &&
		    e->who.uid == who->uid && e->who.gid == who->gid &&
		    strcmp(e->path, path) == 0)
			return e;
	return NULL;
}

/* Takes e out of s (it is there); s->lock held. */
static void unlink_entry(struct shard *s, struct entry *e)
{
	struct entry **p = bucket_of(s, e->hash);

	while (*p != e)
		p = &(*p)->next;
	*p = e->next;
	s->n--;
}

static bool ended(const struct kf_window *w, const struct entry *e,
		  const struct kf_window_time *now)
{
	return e->ended || now->mono_ms - e->start_ms >= w->window_ms;
}

/* A new window of who on path starting at now (not in a table yet). */
static struct entry *entry_new(uint64_t hash, const struct kf_caller *who,
			       const char *path)
{
	size_t len = strlen(path);
	struct entry *e = malloc(sizeof(*e) + len + 1);

	if (!e)
		return NULL;
	memset(e, 0, sizeof(*e));
	e->hash = hash;
	e->who = *who;
	memcpy(e->path, path, len + 1);
	return e;
}

static void entry_start(struct entry *e, const struct kf_window_time *now,
			uint64_t seq)
{
	e->ended = false;
	e->start_ms = e->last_ms = now->mono_ms;
	e->start_wall_ms = now->wall_ms;
	e->first_seq = seq;
	e->count = 0;
}

static void repeat_of(const struct entry *e, struct kf_window_repeat *ret)
{
	ret->who = e->who;
	ret->path = e->path;
	ret->count = e->count;
	ret->first_seq = e->first_seq;
	ret->from_ms = e->start_wall_ms;
	ret->to_ms = e->start_wall_ms + (e->last_ms - e->start_ms);
}

int kf_window_new(int64_t window_ms, const struct kf_window_sink *sink,
		  struct kf_window **ret)
{
	struct kf_window *w;

	if (window_ms <= 0 || !sink->first || !sink->repeat)
		return -EINVAL;
	w = aligned_alloc(64, (sizeof(*w) + 63) / 64 * 64);
	if (!w)
		return -ENOMEM;
	memset(w, 0, sizeof(*w));
	w->window_ms = window_ms;
	w->sink = *sink;
	pthread_mutex_init(&w->write_lock, NULL);
	for (size_t i = 0; i < KF_WINDOW_SHARDS; i++)
		pthread_mutex_init(&w->shards[i].lock, NULL);
	*ret = w;
	return 0;
}

struct kf_window *kf_window_free(struct kf_window *w)
{
	if (!w)
		return NULL;
	for (size_t i = 0; i < KF_WINDOW_SHARDS; i++) {
		struct shard *s = &w->shards[i];

		for (size_t b = 0; b < BUCKETS; b++) {
			while (s->buckets[b]) {
				struct entry *e = s->buckets[b];

				s->buckets[b] = e->next;
				free(e);
			}
		}
		pthread_mutex_destroy(&s->lock);
	}
	pthread_mutex_destroy(&w->write_lock);
	free(w);
	return NULL;
}

/* Counts an open in who's window on path if that is open; s->lock held. */
static bool count_in(struct kf_window *w, struct shard *s, uint64_t hash,
		     const struct kf_caller *who, const char *path,
		     const struct kf_window_time *now, struct entry **ret_e)
{
	struct entry *e = find(s, hash, who, path);

	*ret_e = e;
	if (!e || ended(w, e, now))
		return false;
	e->count++;
	e->last_ms = now->mono_ms;
	s->counted++;
	return true;
}

/*
 * The slow path: a first open.  With write_lock held, the caller's ended
 * window (if any) is this thread's to record and reuse.
 */
static int record_first(struct kf_window *w, struct shard *s, uint64_t hash,
			const struct kf_caller *who, const char *path,
			const struct kf_window_time *now, char err[KF_ERR_MAX])
{
	const struct kf_window_sink *k = &w->sink;
	struct entry *e, *fresh = NULL;
	struct kf_window_repeat rep;
	uint64_t seq = 0;
	bool counted;
	int r;

	pthread_mutex_lock(&s->lock);
	/* Opened meanwhile: only by a thread given the same id again. */
	counted = count_in(w, s, hash, who, path, now, &e);
	pthread_mutex_unlock(&s->lock);
	if (counted)
		return KF_WINDOW_COUNTED;
	if (w->closed)
		return k->first(k->ctx, who, path, &seq, err);
	if (e && e->count > 0) {
		/* Its repeats come before the next first open, in order. */
		repeat_of(e, &rep);
		r = k->repeat(k->ctx, &rep, err);
		if (r < 0)
			return r;
		atomic_fetch_add_explicit(&w->records, 1, memory_order_relaxed);
		pthread_mutex_lock(&s->lock);
		e->count = 0;
		pthread_mutex_unlock(&s->lock);
	}
	if (!e)
		fresh = entry_new(hash, who, path);
	r = k->first(k->ctx, who, path, &seq, err);
	if (r < 0) {
		free(fresh);
		return r;
	}
	pthread_mutex_lock(&s->lock);
	if (e) {
		entry_start(e, now, seq);
	} else if (fresh && s->n < PER_SHARD) {
		entry_start(fresh, now, seq);
		fresh->next = *bucket_of(s, hash);
		*bucket_of(s, hash) = fresh;
		s->n++;
		fresh = NULL;
	} else {
		/* Recorded, but no window: its next open is recorded too. */
		atomic_fetch_add_explicit(&w->overflow, 1,
					  memory_order_relaxed);
	}
	pthread_mutex_unlock(&s->lock);
	free(fresh);
	return KF_WINDOW_RECORDED;
}

int kf_window_open(struct kf_window *w, const struct kf_caller *who,
		   const char *path, const struct kf_window_time *now,
		   char err[KF_ERR_MAX])
{
	uint64_t hash = hash_of(who, path);
	struct shard *s = shard_of(w, hash);
	struct entry *e;
	bool counted;
	int r;

	pthread_mutex_lock(&s->lock);
	counted = count_in(w, s, hash, who, path, now, &e);
	pthread_mutex_unlock(&s->lock);
	if (counted)
		return KF_WINDOW_COUNTED;
	pthread_mutex_lock(&w->write_lock);
	r = record_first(w, s, hash, who, path, now, err);
	pthread_mutex_unlock(&w->write_lock);
	return r;
}

/*
 * Records the ended windows of one shard (all of them with `all`) and
 * forgets them; after a failure (*failed set, or set here) nothing more is
 * written and what is left is added to *unwritten.  write_lock held.
 */
static int flush_shard(struct kf_window *w, struct shard *s,
		       const struct kf_window_time *now, bool all, bool *failed,
		       uint64_t *unwritten, char err[KF_ERR_MAX])
{
	const struct kf_window_sink *k = &w->sink;
	struct entry *due[PER_SHARD];
	struct kf_window_repeat rep;
	size_t n = 0;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t b = 0; b < BUCKETS; b++) {
		struct entry **p = &s->buckets[b];

		while (*p) {
			struct entry *e = *p;

			if (all)
				e->ended = true;
			if (!ended(w, e, now)) {
				p = &e->next;
			} else if (e->count == 0) {
				*p = e->next;
				s->n--;
				free(e);
			} else {
				due[n++] = e;
				p = &e->next;
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	/* Ended windows: nobody else touches them while write_lock is held. */
	for (size_t i = 0; i < n; i++) {
		struct entry *e = due[i];

		if (!*failed) {
			repeat_of(e, &rep);
			r = k->repeat(k->ctx, &rep, err);
			*failed = r < 0;
		}
		if (*failed) {
			*unwritten += e->count;
			continue;
		}
		atomic_fetch_add_explicit(&w->records, 1, memory_order_relaxed);
		pthread_mutex_lock(&s->lock);
		unlink_entry(s, e);
		pthread_mutex_unlock(&s->lock);
		free(e);
	}
	return r;
}

int kf_window_flush(struct kf_window *w, const struct kf_window_time *now,
		    bool all, uint64_t *ret_unwritten, char err[KF_ERR_MAX])
{
	uint64_t unwritten = 0;
	bool failed = false;
	int r = 0;

	if (all) {
		/* From here on a first open opens no window: what the loop
		 * below leaves behind is only what it could not write. */
		pthread_mutex_lock(&w->write_lock);
		w->closed = true;
		pthread_mutex_unlock(&w->write_lock);
	}
	for (size_t i = 0; i < KF_WINDOW_SHARDS; i++) {
		int rs;

		/* Taken per shard: first opens wait for one shard's records
		 * at most. */
		pthread_mutex_lock(&w->write_lock);
		rs = flush_shard(w, &w->shards[i], now, all, &failed,
				 &unwritten, r < 0 ? NULL : err);
		pthread_mutex_unlock(&w->write_lock);
		if (r == 0 && rs < 0)
			r = rs;
	}
	if (ret_unwritten)
		*ret_unwritten = unwritten;
	return r;
}

void kf_window_stats(struct kf_window *w, struct kf_window_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	for (size_t i = 0; i < KF_WINDOW_SHARDS; i++) {
		struct shard *s = &w->shards[i];

		pthread_mutex_lock(&s->lock);
		ret->held += s->n;
		ret->counted += s->counted;
		pthread_mutex_unlock(&s->lock);
	}
	ret->records = atomic_load_explicit(&w->records, memory_order_relaxed);
	ret->overflow =
	    atomic_load_explicit(&w->overflow, memory_order_relaxed);
}
