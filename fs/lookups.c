// SPDX-License-Identifier: MIT
/*
 * lookups: an open-addressing table (linear probing, deletion by backward
 * shift) from inode number to lookup count, under one mutex.  Lookups and
 * forgets are rare next to reads (names are cached for a day), and the
 * invalidation thread asks once per node a change names, taking the lock
 * for each question: it never holds it while it talks to the kernel.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "lookups.h"

#define ROOT_INO 1
#define SLOTS_MIN 64 /* a power of two */

struct slot {
	uint64_t ino; /* 0: free */
	uint64_t count;
};

struct kf_lookups {
	pthread_mutex_t lock;
	struct slot *slots; /* protected by lock */
	size_t cap;	    /* protected by lock; a power of two */
	size_t used;	    /* protected by lock */
};

/* A cheap mix of the inode number: tree inodes differ in their high bits. */
static size_t home(uint64_t ino, size_t cap)
{
	ino ^= ino >> 33;
	ino *= 0xff51afd7ed558ccdULL;
	ino ^= ino >> 33;
	return (size_t)ino & (cap - 1);
}

/* The slot holding ino, or the free slot where it would go. */
static struct slot *find(struct slot *slots, size_t cap, uint64_t ino)
{
	size_t i = home(ino, cap);

	while (slots[i].ino != 0 && slots[i].ino != ino)
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

struct kf_lookups *kf_lookups_new(void)
{
	struct kf_lookups *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->slots = calloc(SLOTS_MIN, sizeof(*l->slots));
	if (!l->slots) {
		free(l);
		return NULL;
	}
	l->cap = SLOTS_MIN;
	pthread_mutex_init(&l->lock, NULL);
	return l;
}

struct kf_lookups *kf_lookups_free(struct kf_lookups *l)
{
	if (!l)
		return NULL;
	pthread_mutex_destroy(&l->lock);
	free(l->slots);
	free(l);
	return NULL;
}

/* Doubles the table; call with the lock held.  0 or -ENOMEM. */
static int grow(struct kf_lookups *l)
{
	size_t cap = l->cap * 2;
	struct slot *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < l->cap; i++)
		if (l->slots[i].ino != 0)
			*find(slots, cap, l->slots[i].ino) = l->slots[i];
	free(l->slots);
	l->slots = slots;
	l->cap = cap;
	return 0;
}

int kf_lookups_add(struct kf_lookups *l, uint64_t ino)
{
	struct slot *s;
	int r = 0;

	if (ino == ROOT_INO)
		return 0;
	pthread_mutex_lock(&l->lock);
	s = find(l->slots, l->cap, ino);
	if (s->ino == 0 && (l->used + 1) * 2 > l->cap) {
		r = grow(l);
		if (r < 0)
			goto out;
		s = find(l->slots, l->cap, ino);
	}
	if (s->ino == 0) {
		s->ino = ino;
		l->used++;
	}
	s->count++;
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* Empties slot i and moves up the entries that probed past it. */
static void remove_at(struct kf_lookups *l, size_t i)
{
	size_t mask = l->cap - 1, j = i;

	l->slots[i].ino = 0;
	l->slots[i].count = 0;
	for (;;) {
		size_t h;

		j = (j + 1) & mask;
		if (l->slots[j].ino == 0)
			break;
		h = home(l->slots[j].ino, l->cap);
		/* Stays if its home lies cyclically in (i, j]. */
		if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
			continue;
		l->slots[i] = l->slots[j];
		l->slots[j].ino = 0;
		l->slots[j].count = 0;
		i = j;
	}
	l->used--;
}

void kf_lookups_forget(struct kf_lookups *l, uint64_t ino, uint64_t n)
{
	struct slot *s;

	if (ino == ROOT_INO)
		return;
	pthread_mutex_lock(&l->lock);
	s = find(l->slots, l->cap, ino);
	if (s->ino != 0) {
		if (s->count > n)
			s->count -= n;
		else
			remove_at(l, (size_t)(s - l->slots));
	}
	pthread_mutex_unlock(&l->lock);
}

bool kf_lookups_held(struct kf_lookups *l, uint64_t ino)
{
	bool held;

	if (ino == ROOT_INO)
		return true;
	pthread_mutex_lock(&l->lock);
	held = find(l->slots, l->cap, ino)->ino != 0;
	pthread_mutex_unlock(&l->lock);
	return held;
}

size_t kf_lookups_count(struct kf_lookups *l)
{
	size_t n;

	pthread_mutex_lock(&l->lock);
	n = l->used;
	pthread_mutex_unlock(&l->lock);
	return n;
}
