// SPDX-License-Identifier: MIT
/* archives: the backups/ name table -- names, slots and generations. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "archives.h"
#include "util.h"

#define SLOTS_MIN 16u
#define NO_SLOT UINT32_MAX

struct slot {
	char *name;	    /* file name; NULL: a free slot */
	uint32_t gen;	    /* the name's generation while it holds the slot */
	uint32_t next_free; /* free slots: the next free one, or NO_SLOT */
};

struct kf_archives {
	char *dir;

	pthread_mutex_t lock;
	struct slot *slots;  /* protected by lock */
	uint32_t n_slots;    /* allocated; protected by lock */
	uint32_t n_names;    /* slots in use; protected by lock */
	uint32_t first_free; /* protected by lock */
	uint32_t last_gen;   /* protected by lock */
	/* name hash -> slot + 1 (0: empty), linear probing, 2 * n_slots */
	uint32_t *index; /* protected by lock */
};

struct kf_archives *kf_archives_new(const char *dir)
{
	struct kf_archives *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->dir = strdup(dir);
	if (!a->dir) {
		free(a);
		return NULL;
	}
	a->first_free = NO_SLOT;
	pthread_mutex_init(&a->lock, NULL);
	return a;
}

struct kf_archives *kf_archives_free(struct kf_archives *a)
{
	if (!a)
		return NULL;
	for (uint32_t i = 0; i < a->n_slots; i++)
		free(a->slots[i].name);
	free(a->slots);
	free(a->index);
	free(a->dir);
	pthread_mutex_destroy(&a->lock);
	free(a);
	return NULL;
}

/* Whether name is an archive's file name: a backup name + ".json". */
static bool name_valid(const char *name)
{
	const size_t suffix = strlen(KF_ARCHIVES_SUFFIX);
	size_t len = strlen(name);
	char base[KF_BACKUP_NAME_MAX + 1];

	if (len <= suffix || len - suffix > KF_BACKUP_NAME_MAX ||
	    strcmp(name + len - suffix, KF_ARCHIVES_SUFFIX) != 0)
		return false;
	memcpy(base, name, len - suffix);
	base[len - suffix] = 0;
	return kf_backup_name_valid(base);
}

/* FNV-1a: names in the table are archives' names, chosen by root. */
static uint32_t name_hash(const char *name)
{
	uint32_t h = 2166136261u;

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 16777619u;
	return h;
}

/* The slot holding name, or NO_SLOT.  Called with lock held. */
static uint32_t slot_find(struct kf_archives *a, const char *name)
{
	uint32_t mask = 2 * a->n_slots - 1;

	if (!a->n_slots)
		return NO_SLOT;
	for (uint32_t i = name_hash(name) & mask; a->index[i];
	     i = (i + 1) & mask)
		if (strcmp(a->slots[a->index[i] - 1].name, name) == 0)
			return a->index[i] - 1;
	return NO_SLOT;
}

static void index_add(struct kf_archives *a, uint32_t slot)
{
	uint32_t mask = 2 * a->n_slots - 1;
	uint32_t i = name_hash(a->slots[slot].name) & mask;

	while (a->index[i])
		i = (i + 1) & mask;
	a->index[i] = slot + 1;
}

/* Rebuilds the index from the slots (after a drop or a growth). */
static void index_rebuild(struct kf_archives *a)
{
	memset(a->index, 0, 2 * (size_t)a->n_slots * sizeof(*a->index));
	for (uint32_t i = 0; i < a->n_slots; i++)
		if (a->slots[i].name)
			index_add(a, i);
}

/* Frees slot; the caller rebuilds the index.  Lock held. */
static void slot_drop(struct kf_archives *a, uint32_t slot)
{
	free(a->slots[slot].name);
	a->slots[slot].name = NULL;
	a->slots[slot].next_free = a->first_free;
	a->first_free = slot;
	a->n_names--;
}

/* Whether (slot, gen) is a name the table holds.  Lock held. */
static bool slot_holds(struct kf_archives *a, uint32_t slot, uint32_t gen)
{
	return slot < a->n_slots && a->slots[slot].name &&
	       a->slots[slot].gen == gen;
}

enum file { FILE_GONE, FILE_THERE, FILE_UNKNOWN };

/* Whether an archive file of this name is in the directory. */
static enum file file_state(struct kf_archives *a, const char *name)
{
	char *p = kf_path_join(a->dir, name);
	enum file f = FILE_UNKNOWN;
	struct stat st;

	if (!p)
		return f;
	if (lstat(p, &st) == 0)
		f = S_ISREG(st.st_mode) ? FILE_THERE : FILE_GONE;
	else if (errno == ENOENT || errno == ENOTDIR)
		f = FILE_GONE;
	free(p);
	return f;
}

/* Drops every name whose file is gone.  Lock held. */
static void slots_sweep(struct kf_archives *a)
{
	bool dropped = false;

	for (uint32_t i = 0; i < a->n_slots; i++) {
		if (a->slots[i].name &&
		    file_state(a, a->slots[i].name) == FILE_GONE) {
			slot_drop(a, i);
			dropped = true;
		}
	}
	if (dropped)
		index_rebuild(a);
}

/* Doubles the table, up to KF_ARCHIVES_MAX.  Lock held. */
static int slots_grow(struct kf_archives *a)
{
	uint32_t n = a->n_slots ? 2 * a->n_slots : SLOTS_MIN;
	struct slot *slots;
	uint32_t *index;

	if (a->n_slots >= KF_ARCHIVES_MAX)
		return -ENOSPC;
	slots = realloc(a->slots, n * sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	a->slots = slots;
	index = realloc(a->index, 2 * (size_t)n * sizeof(*index));
	if (!index)
		return -ENOMEM; /* slots stay larger, unused: harmless */
	a->index = index;
	for (uint32_t i = n; i-- > a->n_slots;) {
		slots[i].name = NULL;
		slots[i].gen = 0;
		slots[i].next_free = a->first_free;
		a->first_free = i;
	}
	a->n_slots = n;
	index_rebuild(a);
	return 0;
}

int kf_archives_add(struct kf_archives *a, const char *name, uint32_t *ret_slot,
		    uint32_t *ret_gen)
{
	uint32_t slot;
	char *copy;
	int r = 0;

	if (!name_valid(name))
		return -ENOENT;
	pthread_mutex_lock(&a->lock);
	slot = slot_find(a, name);
	if (slot != NO_SLOT)
		goto found;
	/*
	 * Full: drop the names of deleted archives first, and grow if that
	 * leaves the table more than three quarters full, so that sweeps
	 * stay rare.
	 */
	if (a->first_free == NO_SLOT) {
		slots_sweep(a);
		if (a->first_free == NO_SLOT ||
		    a->n_names > a->n_slots / 4 * 3) {
			r = slots_grow(a);
			if (r < 0 && a->first_free == NO_SLOT)
				goto out;
			r = 0;
		}
	}
	copy = strdup(name);
	if (!copy) {
		r = -ENOMEM;
		goto out;
	}
	slot = a->first_free;
	a->first_free = a->slots[slot].next_free;
	a->slots[slot].name = copy;
	if (++a->last_gen == 0)
		a->last_gen = 1;
	a->slots[slot].gen = a->last_gen;
	a->n_names++;
	index_add(a, slot);
found:
	*ret_slot = slot;
	*ret_gen = a->slots[slot].gen;
out:
	pthread_mutex_unlock(&a->lock);
	return r;
}

/* Drops name from the table, if it is there (its file is gone). */
static void forget_name(struct kf_archives *a, const char *name)
{
	uint32_t slot;

	pthread_mutex_lock(&a->lock);
	slot = slot_find(a, name);
	if (slot != NO_SLOT) {
		slot_drop(a, slot);
		index_rebuild(a);
	}
	pthread_mutex_unlock(&a->lock);
}

int kf_archives_lookup(struct kf_archives *a, const char *name,
		       uint32_t *ret_slot, uint32_t *ret_gen)
{
	if (!name_valid(name))
		return -ENOENT;
	switch (file_state(a, name)) {
	case FILE_THERE:
		return kf_archives_add(a, name, ret_slot, ret_gen);
	case FILE_GONE:
		forget_name(a, name);
		return -ENOENT;
	default:
		return -ENOENT;
	}
}

void kf_archives_sweep(struct kf_archives *a)
{
	pthread_mutex_lock(&a->lock);
	slots_sweep(a);
	pthread_mutex_unlock(&a->lock);
}

bool kf_archives_exists(struct kf_archives *a, uint32_t slot, uint32_t gen)
{
	char name[KF_ARCHIVES_NAME_MAX], *p;
	struct stat st;
	bool ok;

	if (kf_archives_name(a, slot, gen, name) < 0)
		return false;
	p = kf_path_join(a->dir, name);
	if (!p)
		return false;
	ok = lstat(p, &st) == 0 && S_ISREG(st.st_mode);
	free(p);
	if (!ok) {
		/* Gone: drop it, if the slot still holds this name. */
		pthread_mutex_lock(&a->lock);
		if (slot_holds(a, slot, gen)) {
			slot_drop(a, slot);
			index_rebuild(a);
		}
		pthread_mutex_unlock(&a->lock);
	}
	return ok;
}

int kf_archives_name(struct kf_archives *a, uint32_t slot, uint32_t gen,
		     char buf[KF_ARCHIVES_NAME_MAX])
{
	int r = -ENOENT;

	pthread_mutex_lock(&a->lock);
	if (slot_holds(a, slot, gen)) {
		snprintf(buf, KF_ARCHIVES_NAME_MAX, "%s", a->slots[slot].name);
		r = 0;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

void kf_archives_count(struct kf_archives *a, size_t *ret_names,
		       size_t *ret_slots)
{
	pthread_mutex_lock(&a->lock);
	*ret_names = a->n_names;
	*ret_slots = a->n_slots;
	pthread_mutex_unlock(&a->lock);
}
