// SPDX-License-Identifier: MIT
/*
 * backup_cache: the clear fields of the archives in a backup folder, kept
 * between prunes.  Every rotation prunes, and pruning needs each archive's
 * version list; an archive that is the last copy of a retired version is
 * kept for good, so without this every rotation would read every archive
 * ever kept and cost more the longer the daemon ran.  An entry is used
 * only while the file it was read from is the same -- name, inode, size,
 * mtime and ctime (which no one can set) -- and entries whose file is gone
 * are dropped at the end of each listing.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backup_private.h"

struct entry {
	char name[KF_BACKUP_NAME_MAX + sizeof(".json")];
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
	struct kf_backup_clear clear;
	uint64_t seen; /* the listing that last met it */
};

struct kf_backup_cache {
	pthread_mutex_t lock;
	struct entry *v;  /* sorted by name; protected by lock */
	size_t n, cap;	  /* protected by lock */
	uint64_t listing; /* protected by lock */
};

struct kf_backup_cache *kf_backup_cache_new(void)
{
	struct kf_backup_cache *c = calloc(1, sizeof(*c));

	if (c)
		pthread_mutex_init(&c->lock, NULL);
	return c;
}

struct kf_backup_cache *kf_backup_cache_free(struct kf_backup_cache *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n; i++)
		kf_backup_clear_done(&c->v[i].clear);
	free(c->v);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return NULL;
}

/* A copy of src's fields into dst (versions malloc'd).  0 or -ENOMEM. */
static int clear_copy(struct kf_backup_clear *dst,
		      const struct kf_backup_clear *src)
{
	*dst = *src;
	dst->versions = NULL;
	if (src->n_versions == 0)
		return 0;
	dst->versions = malloc(src->n_versions * sizeof(*src->versions));
	if (!dst->versions)
		return -ENOMEM;
	memcpy(dst->versions, src->versions,
	       src->n_versions * sizeof(*src->versions));
	return 0;
}

/* The index where name is or would go; call with the lock held. */
static size_t find(const struct kf_backup_cache *c, const char *name,
		   bool *ret_found)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = strcmp(c->v[mid].name, name);

		if (d == 0) {
			*ret_found = true;
			return mid;
		}
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_found = false;
	return lo;
}

static bool same_file(const struct entry *e, const struct stat *st)
{
	return e->dev == st->st_dev && e->ino == st->st_ino &&
	       e->size == st->st_size &&
	       e->mtime.tv_sec == st->st_mtim.tv_sec &&
	       e->mtime.tv_nsec == st->st_mtim.tv_nsec &&
	       e->ctime.tv_sec == st->st_ctim.tv_sec &&
	       e->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

int kf_backup_cache_get(struct kf_backup_cache *c, const char *name,
			const struct stat *st, struct kf_backup_clear *ret)
{
	bool found;
	size_t i;
	int r = -ENOENT;

	pthread_mutex_lock(&c->lock);
	i = find(c, name, &found);
	if (found && same_file(&c->v[i], st)) {
		c->v[i].seen = c->listing;
		r = clear_copy(ret, &c->v[i].clear);
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

void kf_backup_cache_put(struct kf_backup_cache *c, const char *name,
			 const struct stat *st,
			 const struct kf_backup_clear *clear)
{
	struct entry e = {0};
	bool found;
	size_t i;

	if (strlen(name) >= sizeof(e.name) || clear_copy(&e.clear, clear) < 0)
		return; /* not kept: it is read again next time */
	strcpy(e.name, name);
	e.dev = st->st_dev;
	e.ino = st->st_ino;
	e.size = st->st_size;
	e.mtime = st->st_mtim;
	e.ctime = st->st_ctim;
	pthread_mutex_lock(&c->lock);
	e.seen = c->listing;
	i = find(c, name, &found);
	if (found) {
		kf_backup_clear_done(&c->v[i].clear);
		c->v[i] = e;
		goto out;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		struct entry *v = realloc(c->v, cap * sizeof(*v));

		if (!v) {
			kf_backup_clear_done(&e.clear);
			goto out;
		}
		c->v = v;
		c->cap = cap;
	}
	memmove(&c->v[i + 1], &c->v[i], (c->n - i) * sizeof(*c->v));
	c->v[i] = e;
	c->n++;
out:
	pthread_mutex_unlock(&c->lock);
}

void kf_backup_cache_begin(struct kf_backup_cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->listing++;
	pthread_mutex_unlock(&c->lock);
}

void kf_backup_cache_end(struct kf_backup_cache *c)
{
	size_t keep = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].seen == c->listing)
			c->v[keep++] = c->v[i];
		else
			kf_backup_clear_done(&c->v[i].clear);
	}
	c->n = keep;
	pthread_mutex_unlock(&c->lock);
}
