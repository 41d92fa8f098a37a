// SPDX-License-Identifier: MIT
/*
 * cluster_threads: a node's etcd clients (one per thread that talks to
 * etcd) and its two threads with store = etcd, and what they keep for
 * status.
 *
 *   watcher    watches everything under the prefix's store/ and adopts a
 *              new keyring, or copies or removes an archive, within
 *              milliseconds of another node's change; a broken stream
 *              resumes from its last revision (etcd.c, on another
 *              member), a compacted one reads afresh.
 *   heartbeat  once a second: renews this node's lease and puts its node
 *              record (version and generation served, when), lists the
 *              other nodes' records for status, and reads the keyring, so
 *              a watch that went silent (a frozen member) misses nothing
 *              for long.  Whether etcd answered is the node's health: a
 *              degraded node refuses every change at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "etcd.h"
#include "log.h"
#include "manager_private.h"

#define BEAT_MS 1000
#define PASSWORD_MAX 1024    /* bytes of password_file */
#define LEASE_TTL_S 10	     /* a node record outlives a dead node by this */
#define WATCH_RETRY_MS 500   /* after a watch that could not start */
#define NODE_RECORD_MAX 1024 /* bytes of one node's record */

/* --- the clients -----------------------------------------------------------
 */

/* The password_file's first line into guarded memory; root-only file. */
static int read_password(const char *path, char **ret, char err[KF_ERR_MAX])
{
	uint8_t *buf = NULL;
	struct stat st;
	size_t len = 0;
	char *pw;
	int r;

	r = kf_file_read_all(path, PASSWORD_MAX, &buf, &len, &st, err);
	if (r < 0) {
		kf_err_prefix(err, "password_file: ");
		return r;
	}
	if (st.st_uid != 0 || (st.st_mode & 077)) {
		sodium_free(buf);
		kf_err_set(err,
			   "password_file %s must be owned by root and not "
			   "readable by group or others (chmod 0600)",
			   path);
		return -EPERM;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	pw = sodium_malloc(len + 1);
	if (!pw) {
		sodium_free(buf);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	memcpy(pw, buf, len);
	pw[len] = 0;
	sodium_free(buf);
	*ret = pw;
	return 0;
}

int kf_cluster_client(const struct kf_config *cfg, struct kf_etcd **ret,
		      char err[KF_ERR_MAX])
{
	const struct kf_etcd_settings *e = &cfg->etcd;
	struct kf_etcd_config c = {.endpoints =
				       (const char *const *)e->endpoints,
				   .n_endpoints = e->n_endpoints,
				   .prefix = e->prefix,
				   .timeout_ms = e->timeout_ms,
				   .cacert = e->cacert,
				   .cert = e->cert,
				   .key = e->key,
				   .user = e->user};
	char *pw = NULL;
	int r = 0;

	if (e->user) {
		r = read_password(e->password_file, &pw, err);
		if (r < 0)
			return r;
		c.password = pw;
	}
	r = kf_etcd_new(&c, ret, err);
	if (pw)
		sodium_free(pw);
	if (r < 0)
		kf_err_prefix(err, "[etcd]: ");
	return r;
}

int kf_mgr_cluster_setup(struct kf_manager *m, char err[KF_ERR_MAX])
{
	int r;

	m->cl = calloc(1, sizeof(*m->cl));
	if (!m->cl) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&m->cl->lock, NULL);
	pthread_cond_init(&m->cl->wake, NULL);
	r = kf_cluster_client(m->cfg, &m->cl->op, err);
	if (r == 0)
		r = kf_cluster_client(m->cfg, &m->cl->watch, err);
	if (r == 0)
		r = kf_cluster_client(m->cfg, &m->cl->beat, err);
	return r;
}

void kf_mgr_cluster_free(struct kf_manager *m)
{
	struct kf_mgr_cluster *cl = m->cl;

	if (!cl)
		return;
	kf_etcd_free(cl->op);
	kf_etcd_free(cl->watch);
	kf_etcd_free(cl->beat);
	free(cl->blob);
	json_decref(cl->nodes);
	pthread_mutex_destroy(&cl->lock);
	pthread_cond_destroy(&cl->wake);
	free(cl);
	m->cl = NULL;
}

static bool stopping(struct kf_mgr_cluster *cl)
{
	bool s;

	pthread_mutex_lock(&cl->lock);
	s = cl->stop;
	pthread_mutex_unlock(&cl->lock);
	return s;
}

/* Sleeps ms, or less when stopped; false once stopping. */
static bool nap(struct kf_mgr_cluster *cl, int ms)
{
	struct timespec ts;
	bool s;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&cl->lock);
	if (!cl->stop)
		pthread_cond_timedwait(&cl->wake, &cl->lock, &ts);
	s = cl->stop;
	pthread_mutex_unlock(&cl->lock);
	return !s;
}

/* --- health ----------------------------------------------------------------
 */

void kf_mgr_cluster_health(struct kf_manager *m, bool ok, const char *why)
{
	struct kf_mgr_cluster *cl = m->cl;
	bool changed, first;
	json_t *rec;

	pthread_mutex_lock(&cl->lock);
	first = cl->since == 0;
	changed = first || cl->ok != ok;
	if (changed)
		cl->since = kf_time_now();
	cl->ok = ok;
	snprintf(cl->reason, sizeof(cl->reason), "%s", ok ? "" : why);
	pthread_mutex_unlock(&cl->lock);
	/* A start that reached etcd is the key_load record's to say. */
	if (!changed || (first && ok))
		return;
	rec = kf_event_record(KF_EVENT_CLUSTER, NULL);
	json_object_set_new(rec, "state", json_string(ok ? "ok" : "degraded"));
	json_object_set_new(rec, "node", json_string(m->cfg->etcd.node));
	if (!ok) {
		/* Alerted: until it is back, no change can be made. */
		kf_mgr_report_failure(m, rec, 0, why);
		return;
	}
	kf_log(LOG_NOTICE, "cluster: etcd reachable; changes allowed");
	json_object_set_new(rec, "success", json_true());
	if (m->audit) {
		char err[KF_ERR_MAX];

		if (kf_mgr_record_durable(m, rec, NULL, err) < 0)
			kf_log(LOG_ALERT, "audit log: %s", err);
	}
	json_decref(rec);
}

/* --- the watcher ------------------------------------------------------------
 */

/* A keyring read from etcd, adopted under op_lock, announced if new. */
static void adopt(struct kf_manager *m, const uint8_t *blob, size_t len,
		  int64_t rev)
{
	int r;

	pthread_mutex_lock(&m->op_lock);
	r = kf_mgr_cluster_adopt(m, blob, len, rev);
	pthread_mutex_unlock(&m->op_lock);
	if (r == 1)
		kf_mgr_notify(m);
}

static int on_event(void *arg, const struct kf_etcd_event *ev, int64_t rev)
{
	struct kf_manager *m = arg;
	bool put;

	(void)rev;
	if (stopping(m->cl))
		return -EINTR;
	if (!ev)
		return 0;
	put = ev->type == KF_ETCD_EVENT_PUT;
	if (!strcmp(ev->name, KF_CLUSTER_KEYRING)) {
		if (put)
			adopt(m, ev->value, ev->len, ev->mod_revision);
		else
			kf_log(LOG_ALERT,
			       "the cluster keyring was deleted from etcd; "
			       "this node goes on serving what it has");
		return 0;
	}
	pthread_mutex_lock(&m->op_lock);
	kf_mgr_cluster_archive_event(m, put, ev->name, ev->value, ev->len);
	pthread_mutex_unlock(&m->op_lock);
	return 0;
}

/*
 * Reads everything under store/ afresh: the keyring (adopted if newer) and
 * the archives (copied if missing); the watch goes on after that read.
 */
static int resync(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	struct kf_etcd_kv *kvs = NULL;
	int64_t rev = 0;
	size_t n = 0;
	int r;

	r = kf_etcd_list(cl->watch, KF_CLUSTER_DATA, 0, &kvs, &n, &rev, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct kf_etcd_event ev = {.type = KF_ETCD_EVENT_PUT,
					   .name = kvs[i].name,
					   .value = kvs[i].value,
					   .len = kvs[i].len,
					   .mod_revision = kvs[i].mod_revision};

		on_event(m, &ev, kvs[i].mod_revision);
	}
	kf_etcd_kvs_free(kvs, n);
	/* No etcd reaches the largest revision; never overflow on it. */
	cl->watch_from = rev < INT64_MAX ? rev + 1 : rev;
	return 0;
}

static void *watcher(void *arg)
{
	struct kf_manager *m = arg;
	struct kf_mgr_cluster *cl = m->cl;
	char err[KF_ERR_MAX];
	bool fresh = true;
	int r;

	while (!stopping(cl)) {
		if (fresh) {
			r = resync(m, err);
			if (r < 0) {
				kf_log(LOG_WARNING, "cluster watch: %s", err);
				nap(cl, WATCH_RETRY_MS);
				continue;
			}
			fresh = false;
		}
		r = kf_etcd_watch(cl->watch, KF_CLUSTER_DATA, cl->watch_from, 0,
				  on_event, m, NULL, err);
		if (stopping(cl))
			break;
		/* Compacted away: read afresh; anything else: try again. */
		fresh = r == KF_ETCD_COMPACTED;
		if (!fresh) {
			kf_log(LOG_WARNING, "cluster watch: %s", err);
			nap(cl, WATCH_RETRY_MS);
		}
	}
	return NULL;
}

/* --- the heartbeat ----------------------------------------------------------
 */

/* This node's record: what it serves, since when it was last seen. */
static char *node_record(struct kf_manager *m)
{
	struct kf_mgr_cluster *cl = m->cl;
	struct kf_keyring *kr = kf_mgr_current(m);
	const struct kf_keyring_entry *s = kr ? kf_keyring_staged(kr) : NULL;
	char ts[KF_RFC3339_LEN + 1];
	json_t *o = json_object();
	char *text;

	kf_time_rfc3339(kf_time_now(), ts);
	json_object_set_new(o, "node", json_string(m->cfg->etcd.node));
	pthread_mutex_lock(&cl->lock);
	json_object_set_new(o, "version", json_integer(cl->shown.version));
	json_object_set_new(o, "generation",
			    json_integer((json_int_t)cl->shown.generation));
	json_object_set_new(o, "state",
			    json_string(cl->ok ? "ok" : "degraded"));
	pthread_mutex_unlock(&cl->lock);
	/* What a promotion waits for (README: Staged rotation). */
	json_object_set_new(o, "staged_version",
			    s ? json_integer(s->version) : json_null());
	kf_keyring_unref(kr);
	json_object_set_new(o, "seen", json_string(ts));
	json_object_set_new(o, "pid", json_integer(getpid()));
	/* What a master-key rotation checks first (README: Master-key
	 * rotation): fingerprints, never a key byte. */
	json_object_set_new(o, "master", json_string(m->master_fpr));
	json_object_set_new(o, "master_next",
			    m->next_fpr[0] ? json_string(m->next_fpr)
					   : json_null());
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return text;
}

/* Renews (or takes) the lease and puts the node record. */
static int announce(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	char name[sizeof(KF_CLUSTER_NODES) + KF_NODE_NAME_MAX];
	char *text;
	int r = 0;

	if (cl->lease > 0) {
		r = kf_etcd_lease_keepalive(cl->beat, cl->lease, NULL, err);
		if (r == -ENOENT)
			cl->lease = 0;
		else if (r < 0)
			return r;
	}
	if (cl->lease == 0) {
		r = kf_etcd_lease_grant(cl->beat, LEASE_TTL_S, &cl->lease, err);
		if (r < 0)
			return r;
	}
	text = node_record(m);
	if (!text) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	snprintf(name, sizeof(name), "%s%s", KF_CLUSTER_NODES,
		 m->cfg->etcd.node);
	r = kf_etcd_put(cl->beat, name, (const uint8_t *)text, strlen(text),
			cl->lease, NULL, err);
	free(text);
	return r;
}

int kf_mgr_cluster_node_records(struct kf_etcd *e, json_t **ret,
				char err[KF_ERR_MAX])
{
	struct kf_etcd_kv *kvs = NULL;
	json_t *nodes;
	size_t n = 0;
	int r;

	r = kf_etcd_list(e, KF_CLUSTER_NODES, 0, &kvs, &n, NULL, err);
	if (r < 0)
		return r;
	nodes = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = kvs[i].len <= NODE_RECORD_MAX
				? json_loadb((const char *)kvs[i].value,
					     kvs[i].len, 0, NULL)
				: NULL;

		if (json_is_object(o))
			json_array_append_new(nodes, o);
		else
			json_decref(o);
	}
	kf_etcd_kvs_free(kvs, n);
	*ret = nodes;
	return 0;
}

/* Every node's record, for status. */
static int list_nodes(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	json_t *nodes = NULL, *old;
	int r;

	r = kf_mgr_cluster_node_records(cl->beat, &nodes, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&cl->lock);
	old = cl->nodes;
	cl->nodes = nodes;
	pthread_mutex_unlock(&cl->lock);
	json_decref(old);
	return 0;
}

/*
 * The keyring as etcd has it now, adopted when it is not the one served
 * (the watch should have brought it); with op_lock free only, so the
 * heartbeat never waits behind a change.
 */
static int reconcile(struct kf_manager *m, bool was_ok, char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	struct kf_etcd_kv kv = {0};
	int r, a = 0;

	r = kf_etcd_get(cl->beat, KF_CLUSTER_KEYRING, &kv, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (pthread_mutex_trylock(&m->op_lock) == 0) {
		if (kv.mod_revision != cl->revision)
			a = kf_mgr_cluster_adopt(m, kv.value, kv.len,
						 kv.mod_revision);
		/* A refused keyring in etcd: no change can be made. */
		if (a < 0) {
			pthread_mutex_lock(&cl->lock);
			kf_err_set(err, "the keyring in etcd was refused: %s",
				   cl->refused_why);
			pthread_mutex_unlock(&cl->lock);
			pthread_mutex_unlock(&m->op_lock);
			kf_etcd_kv_clear(&kv);
			return -EBADMSG;
		}
		/* Back from a partition: what was missed, what is owed. */
		if (!was_ok) {
			kf_mgr_cluster_fetch_archives(m);
			kf_mgr_cluster_publish(m);
		}
		pthread_mutex_unlock(&m->op_lock);
	}
	kf_etcd_kv_clear(&kv);
	if (a == 1)
		kf_mgr_notify(m);
	return 0;
}

static void *heartbeat(void *arg)
{
	struct kf_manager *m = arg;
	struct kf_mgr_cluster *cl = m->cl;
	char err[KF_ERR_MAX];

	do {
		bool was_ok;
		int r;

		pthread_mutex_lock(&cl->lock);
		was_ok = cl->ok;
		pthread_mutex_unlock(&cl->lock);
		r = announce(m, err);
		if (r == 0)
			r = reconcile(m, was_ok, err);
		if (r == 0)
			r = list_nodes(m, err);
		if (r == 0) {
			kf_mgr_cluster_health(m, true, NULL);
		} else {
			char why[KF_ERR_MAX];

			snprintf(why, sizeof(why), "%s", err);
			kf_mgr_cluster_health(m, false, why);
		}
	} while (nap(cl, BEAT_MS));
	return NULL;
}

/* --- start, stop, status
 * ------------------------------------------------------ */

int kf_manager_start_sync(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_mgr_cluster *cl = m->cl;
	int r;

	if (!cl || cl->started)
		return 0;
	r = pthread_create(&cl->watcher, NULL, watcher, m);
	if (r != 0) {
		kf_err_set(err, "cannot start the cluster watcher: %s",
			   strerror(r));
		return -r;
	}
	r = pthread_create(&cl->beater, NULL, heartbeat, m);
	if (r != 0) {
		kf_err_set(err, "cannot start the cluster heartbeat: %s",
			   strerror(r));
		pthread_mutex_lock(&cl->lock);
		cl->stop = true;
		pthread_mutex_unlock(&cl->lock);
		kf_etcd_interrupt(cl->watch, true);
		pthread_join(cl->watcher, NULL);
		return -r;
	}
	cl->started = true;
	return 0;
}

void kf_mgr_cluster_stop(struct kf_manager *m)
{
	struct kf_mgr_cluster *cl = m->cl;
	char name[sizeof(KF_CLUSTER_NODES) + KF_NODE_NAME_MAX];
	char err[KF_ERR_MAX];
	bool ok;

	if (!cl || !cl->started)
		return;
	pthread_mutex_lock(&cl->lock);
	cl->stop = true;
	ok = cl->ok;
	pthread_cond_broadcast(&cl->wake);
	pthread_mutex_unlock(&cl->lock);
	kf_etcd_interrupt(cl->watch, true);
	pthread_join(cl->watcher, NULL);
	pthread_join(cl->beater, NULL);
	cl->started = false;
	/* A node that stops says so at once (else its lease ends it). */
	snprintf(name, sizeof(name), "%s%s", KF_CLUSTER_NODES,
		 m->cfg->etcd.node);
	if (ok && kf_etcd_delete(cl->beat, name, NULL, err) < 0)
		kf_log(LOG_INFO, "removing this node's record: %s", err);
}

void kf_manager_stop_sync(struct kf_manager *m)
{
	kf_mgr_cluster_stop(m);
}

json_t *kf_mgr_cluster_info(struct kf_manager *m)
{
	struct kf_mgr_cluster *cl = m->cl;
	char ts[KF_RFC3339_LEN + 1];
	json_t *o = json_object();

	json_object_set_new(o, "type", json_string("etcd"));
	json_object_set_new(o, "prefix", json_string(m->cfg->etcd.prefix));
	json_object_set_new(o, "node", json_string(m->cfg->etcd.node));
	pthread_mutex_lock(&cl->lock);
	json_object_set_new(o, "state",
			    json_string(cl->ok ? "ok" : "degraded"));
	kf_time_rfc3339(cl->since, ts);
	json_object_set_new(o, "since", json_string(ts));
	if (!cl->ok)
		json_object_set_new(o, "reason", json_string(cl->reason));
	json_object_set_new(o, "generation",
			    json_integer((json_int_t)cl->shown.generation));
	json_object_set_new(o, "origin_node", json_string(cl->shown.node));
	json_object_set_new(
	    o, "change", json_string(kf_cluster_change_name(cl->shown.change)));
	json_object_set_new(
	    o, "nodes", cl->nodes ? json_deep_copy(cl->nodes) : json_array());
	pthread_mutex_unlock(&cl->lock);
	return o;
}
