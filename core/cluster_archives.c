// SPDX-License-Identifier: MIT
/*
 * cluster_archives: with store = etcd, every node keeps a copy of every
 * archive (DESIGN.md §9).  An archive this node writes is published in
 * etcd once its operation commits (create-if-absent: never over another);
 * one another node published is checked (it must open under the backup
 * key) and copied into backup_dir; one pruned anywhere is removed
 * everywhere.  A node that missed a prune keeps its copies.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "etcd.h"
#include "log.h"
#include "manager_private.h"

void kf_mgr_cluster_pending(struct kf_manager *m, const char *file)
{
	struct kf_mgr_cluster *cl = m->cl;

	if (cl->n_pending < KF_MGR_PENDING_MAX)
		snprintf(cl->pending[cl->n_pending++], KF_BACKUP_FILE_NAME_MAX,
			 "%s", file);
}

void kf_mgr_cluster_unpending(struct kf_manager *m, const char *file)
{
	struct kf_mgr_cluster *cl = m->cl;

	for (size_t i = 0; i < cl->n_pending; i++)
		if (!strcmp(cl->pending[i], file)) {
			memmove(cl->pending[i], cl->pending[i + 1],
				(cl->n_pending - i - 1) *
				    sizeof(cl->pending[0]));
			cl->n_pending--;
			return;
		}
}

int kf_mgr_cluster_publish_file(struct kf_manager *m, const char *file,
				char err[KF_ERR_MAX])
{
	char name[sizeof(KF_CLUSTER_ARCHIVES) + KF_BACKUP_FILE_NAME_MAX];
	struct kf_etcd_op op = {.name = name};
	char *path = kf_path_join(m->cfg->backup_dir, file);
	uint8_t *text = NULL;
	size_t len = 0;
	int r;

	if (!path) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = kf_file_read_all(path, KF_BACKUP_FILE_MAX, &text, &len, NULL, err);
	free(path);
	if (r == -ENOENT)
		return 0; /* pruned since */
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%s%s", KF_CLUSTER_ARCHIVES, file);
	op.value = text;
	op.len = len;
	r = kf_etcd_cas(m->cl->op, name, 0, &op, 1, NULL, NULL, err);
	sodium_free(text);
	if (r == KF_ETCD_CONFLICT) {
		kf_log(LOG_ALERT,
		       "archive %s: another node published an archive of that "
		       "name; this node's stays here only",
		       file);
		r = 0;
	}
	return r;
}

void kf_mgr_cluster_publish(struct kf_manager *m)
{
	struct kf_mgr_cluster *cl = m->cl;
	char err[KF_ERR_MAX];
	size_t kept = 0;

	for (size_t i = 0; i < cl->n_pending; i++)
		if (cl->n_unpublished < KF_MGR_UNPUBLISHED_MAX)
			memcpy(cl->unpublished[cl->n_unpublished++],
			       cl->pending[i], sizeof(cl->pending[i]));
	cl->n_pending = 0;
	for (size_t i = 0; i < cl->n_unpublished; i++) {
		if (kf_mgr_cluster_publish_file(m, cl->unpublished[i], err) ==
		    0)
			continue;
		kf_log(LOG_WARNING,
		       "archive %s is on this node only for now (retried): %s",
		       cl->unpublished[i], err);
		if (kept != i)
			memcpy(cl->unpublished[kept], cl->unpublished[i],
			       sizeof(cl->unpublished[i]));
		kept++;
	}
	cl->n_unpublished = kept;
}

void kf_mgr_cluster_unpublish(struct kf_manager *m, const char *file)
{
	char name[sizeof(KF_CLUSTER_ARCHIVES) + KF_BACKUP_FILE_NAME_MAX];
	char err[KF_ERR_MAX];
	int r;

	snprintf(name, sizeof(name), "%s%s", KF_CLUSTER_ARCHIVES, file);
	r = kf_etcd_delete(m->cl->op, name, NULL, err);
	if (r < 0 && r != -ENOENT)
		kf_log(LOG_WARNING,
		       "archive %s deleted here but not from etcd: %s", file,
		       err);
}

/* An archive etcd holds, copied here if this node lacks it. */
static void fetch_one(struct kf_manager *m, const char *file,
		      const uint8_t *text, size_t len)
{
	char err[KF_ERR_MAX];
	json_t *rec;
	int r;

	r = kf_backup_import(m->cfg->backup_dir, file, m->keys->backup, text,
			     len, err);
	/* In a master-key rotation's window, under either key. */
	if (r == -EBADMSG && m->next_keys)
		r = kf_backup_import(m->cfg->backup_dir, file,
				     m->next_keys->backup, text, len, err);
	if (r == -EEXIST)
		return;
	rec = kf_event_record(KF_EVENT_BACKUP_SYNC, NULL);
	json_object_set_new(rec, "backup", json_string(file));
	json_object_set_new(rec, "action", json_string("copied"));
	if (r < 0) {
		kf_mgr_report_failure(m, rec, 0, err);
		return;
	}
	json_object_set_new(rec, "success", json_true());
	if (kf_mgr_record_durable(m, rec, NULL, err) < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	json_decref(rec);
}

/* An archive pruned by another node, removed here too. */
static void drop_one(struct kf_manager *m, const char *file)
{
	char *path = kf_path_join(m->cfg->backup_dir, file);
	char err[KF_ERR_MAX];
	json_t *rec;
	bool gone;

	if (!path)
		return;
	gone = unlink(path) == 0;
	free(path);
	if (!gone)
		return;
	if (kf_dir_fsync(m->cfg->backup_dir) < 0)
		kf_log(LOG_WARNING, "fsync of %s failed", m->cfg->backup_dir);
	rec = kf_event_record(KF_EVENT_BACKUP_SYNC, NULL);
	json_object_set_new(rec, "backup", json_string(file));
	json_object_set_new(rec, "action", json_string("removed"));
	json_object_set_new(rec, "success", json_true());
	if (kf_mgr_record_durable(m, rec, NULL, err) < 0)
		kf_log(LOG_ALERT, "audit log: %s", err);
	json_decref(rec);
}

/* The archive file name of an etcd name, or NULL when it is not one. */
static const char *archive_of(const char *name)
{
	size_t n = strlen(KF_CLUSTER_ARCHIVES);
	const char *file = name + n;
	char stem[KF_BACKUP_NAME_MAX + 1];

	if (strncmp(name, KF_CLUSTER_ARCHIVES, n) != 0 ||
	    !kf_backup_stem(file, true, stem))
		return NULL;
	return file;
}

void kf_mgr_cluster_archive_event(struct kf_manager *m, bool put,
				  const char *name, const uint8_t *value,
				  size_t len)
{
	const char *file = archive_of(name);

	if (!file)
		return;
	if (put)
		fetch_one(m, file, value, len);
	else
		drop_one(m, file);
}

void kf_mgr_cluster_fetch_archives(struct kf_manager *m)
{
	struct kf_etcd_kv *kvs = NULL;
	char err[KF_ERR_MAX];
	size_t n = 0;

	if (kf_etcd_list(m->cl->op, KF_CLUSTER_ARCHIVES, 0, &kvs, &n, NULL,
			 err) < 0) {
		kf_log(LOG_WARNING, "listing the cluster's archives: %s", err);
		return;
	}
	for (size_t i = 0; i < n; i++)
		kf_mgr_cluster_archive_event(m, true, kvs[i].name, kvs[i].value,
					     kvs[i].len);
	kf_etcd_kvs_free(kvs, n);
}
