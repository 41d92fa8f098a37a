// SPDX-License-Identifier: MIT
/*
 * usage: the table of recent readers per key version (usage.h).  A flat
 * array searched linearly: a daemon has a few readers per version, and a
 * full table of KF_USAGE_ROWS_MAX rows is still a few microseconds a scan.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usage.h"
#include "util.h"

struct kf_usage {
	pthread_mutex_t lock;
	size_t max;		    /* rows allocated */
	size_t n;		    /* protected by lock: rows in use */
	struct kf_usage_row rows[]; /* protected by lock */
};

struct kf_usage *kf_usage_new(size_t max_rows)
{
	struct kf_usage *u;

	if (max_rows == 0)
		return NULL;
	u = calloc(1, sizeof(*u) + max_rows * sizeof(u->rows[0]));
	if (!u)
		return NULL;
	u->max = max_rows;
	pthread_mutex_init(&u->lock, NULL);
	return u;
}

struct kf_usage *kf_usage_free(struct kf_usage *u)
{
	if (!u)
		return NULL;
	pthread_mutex_destroy(&u->lock);
	free(u);
	return NULL;
}

/* Whether row r is the reader (version, what, via_set, uid). */
static bool row_is(const struct kf_usage_row *r, uint32_t version,
		   const char *what, bool via_set, uid_t uid)
{
	return r->version == version && r->uid == uid &&
	       r->via_set == via_set && strcmp(r->what, what) == 0;
}

void kf_usage_note(struct kf_usage *u, uint32_t version, const char *what,
		   bool via_set, uid_t uid, int64_t now)
{
	struct kf_usage_row *r = NULL;
	size_t oldest = 0;

	if (!what)
		what = "";
	pthread_mutex_lock(&u->lock);
	for (size_t i = 0; i < u->n && !r; i++) {
		if (row_is(&u->rows[i], version, what, via_set, uid))
			r = &u->rows[i];
		else if (u->rows[i].last < u->rows[oldest].last)
			oldest = i;
	}
	if (!r) {
		/* Full: the row read longest ago makes room. */
		r = u->n < u->max ? &u->rows[u->n++] : &u->rows[oldest];
		memset(r, 0, sizeof(*r));
		r->version = version;
		r->uid = uid;
		r->via_set = via_set;
		snprintf(r->what, sizeof(r->what), "%s", what);
	}
	if (now > r->last)
		r->last = now;
	r->opens++;
	pthread_mutex_unlock(&u->lock);
}

int kf_usage_last(struct kf_usage *u, uint32_t version, int64_t since,
		  struct kf_usage_row *ret)
{
	const struct kf_usage_row *best = NULL;

	pthread_mutex_lock(&u->lock);
	for (size_t i = 0; i < u->n; i++) {
		const struct kf_usage_row *r = &u->rows[i];

		if (r->version == version && r->last >= since &&
		    (!best || r->last > best->last))
			best = r;
	}
	if (best)
		*ret = *best;
	pthread_mutex_unlock(&u->lock);
	return best ? 1 : 0;
}

/* Adds uid to the ascending array a of numbers unless it is there. */
static void add_uid(json_t *a, uid_t uid)
{
	size_t i;

	for (i = 0; i < json_array_size(a); i++) {
		json_int_t v = json_integer_value(json_array_get(a, i));

		if (v == (json_int_t)uid)
			return;
		if (v > (json_int_t)uid)
			break;
	}
	json_array_insert_new(a, i, json_integer((json_int_t)uid));
}

json_t *kf_usage_json(struct kf_usage *u, uint32_t version, int64_t since)
{
	json_t *o = json_object(), *uids = json_array(), *set = json_array();
	struct kf_usage_row last;
	char when[KF_RFC3339_LEN + 1];

	if (!o || !uids || !set) {
		json_decref(o);
		json_decref(uids);
		json_decref(set);
		return NULL;
	}
	pthread_mutex_lock(&u->lock);
	for (size_t i = 0; i < u->n; i++) {
		const struct kf_usage_row *r = &u->rows[i];

		if (r->version == version && r->last >= since)
			add_uid(r->via_set ? set : uids, r->uid);
	}
	pthread_mutex_unlock(&u->lock);
	if (kf_usage_last(u, version, since, &last)) {
		kf_time_rfc3339(last.last, when);
		json_object_set_new(o, "last_read", json_string(when));
		json_object_set_new(o, "last_uid",
				    json_integer((json_int_t)last.uid));
	} else {
		json_object_set_new(o, "last_read", json_null());
		json_object_set_new(o, "last_uid", json_null());
	}
	json_object_set_new(o, "uids", uids);
	json_object_set_new(o, "set_uids", set);
	return o;
}

void kf_usage_forget(struct kf_usage *u, uint32_t version)
{
	pthread_mutex_lock(&u->lock);
	for (size_t i = 0; i < u->n;) {
		if (u->rows[i].version == version)
			u->rows[i] = u->rows[--u->n];
		else
			i++;
	}
	pthread_mutex_unlock(&u->lock);
}

size_t kf_usage_rows(struct kf_usage *u)
{
	size_t n;

	pthread_mutex_lock(&u->lock);
	n = u->n;
	pthread_mutex_unlock(&u->lock);
	return n;
}
