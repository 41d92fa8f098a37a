/* SPDX-License-Identifier: MIT */
/*
 * manager_private: what the files of the manager share; nothing outside
 * them includes it.  The manager (manager.h) is one object in six files,
 * one concern each:
 *
 *   manager.c   the commit protocol, audit records and failure reports,
 *               the keyring swap, checkpoint, close and the accessors
 *   startup.c   kf_manager_open: state lock, directories, master key, the
 *               store, then load, import or generate the keyring
 *   rotation.c  rotate (manual and automatic) and retire
 *   staging.c   staged rotation: stage, promote, abort
 *   archives.c  backup, restore, prune and list, and the archive helpers
 *               the other operations use
 *   status.c    kf_manager_info, the status object
 *   offline.c   audit verify, backup verify and list, without a manager
 *   rekey.c     keyfs rekey, the master-key rotation
 *   recover.c   break-glass recovery with the recovery private key
 *   auditing.c  the audit log's upkeep: the open window, shipping to
 *               syslog, the free-space alarm and the thread that runs them
 *
 * The functions below are kf_mgr_*: external only so those files can share
 * them.  Every one is called with what its comment says held.  Open and
 * close run alone (before and after any other call), so what is "op_lock"
 * below is also touched there without it.
 */
#ifndef KF_MANAGER_PRIVATE_H
#define KF_MANAGER_PRIVATE_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "audit.h"
#include "audit_ship.h"
#include "audit_space.h"
#include "audit_window.h"
#include "backup.h"
#include "cluster.h"
#include "event.h"
#include "keyring.h"
#include "manager.h"
#include "master.h"
#include "recovery.h"
#include "store.h"
#include "usage.h"

/* The internal keys derived from the master key (DESIGN.md §4). */
struct kf_subkeys {
	uint8_t state[KF_STORE_KEY_BYTES];
	uint8_t backup[KF_BACKUP_KEY_BYTES];
	uint8_t audit[KF_AUDIT_KEY_BYTES];
	uint8_t cluster[KF_CLUSTER_KEY_BYTES];
};

_Static_assert(KF_STORE_KEY_BYTES == KF_SUBKEY_BYTES &&
		   KF_BACKUP_KEY_BYTES == KF_SUBKEY_BYTES &&
		   KF_AUDIT_KEY_BYTES == KF_SUBKEY_BYTES &&
		   KF_CLUSTER_KEY_BYTES == KF_SUBKEY_BYTES,
	       "each internal key is one master subkey");

/* What the manager counts for metrics (kf_manager_counters); atomic. */
struct kf_mgr_counters {
	_Atomic uint64_t events[KF_EVENT_COUNT][2];
	_Atomic uint64_t opens[KF_MANAGER_OPEN_KINDS];
	_Atomic uint64_t controls[KF_MANAGER_CONTROLS_MAX][2];
};

/*
 * The audit log's upkeep (auditing.c): made by kf_mgr_audit_setup right
 * after the log is opened, its thread run by kf_manager_start_audit.
 */
struct kf_mgr_audit {
	struct kf_window *window; /* NULL: audit_open_window = 0; locks
				   * itself; read-only pointer after open */
	struct kf_ship *ship;	  /* NULL: audit_syslog = no; used under
				   * the log's lock, counters atomic */
	char *folder;		  /* the log's folder; read-only */
	bool ready;		  /* lock and wake made; open/close */

	pthread_mutex_t lock;
	pthread_cond_t wake;   /* the thread's sleep (CLOCK_MONOTONIC); stop */
	bool stop;	       /* protected by lock */
	struct kf_space space; /* protected by lock */

	/* the thread's own */
	bool started;
	pthread_t thread;
	int64_t next_space_ms;	  /* monotonic: the next statvfs */
	int64_t next_rotate_ms;	  /* ... the next kf_audit_rotate_if_due */
	bool space_failed;	  /* the last statvfs failed (logged once) */
	uint64_t drops_seen;	  /* the ship's drops at the last look */
	int64_t drop_alerted_ms;  /* the last drop alert; 0: none yet */
	int64_t flush_alerted_ms; /* the last unwritten-repeats alert */
	uint64_t lost_alerted;	  /* opens alerted as lost at stop; stop
				   * and close, after the thread ended */
};

/* A master key's internal keys, in sodium_malloc'd memory (NULL: out of
 * memory); freed with sodium_free. */
struct kf_subkeys *kf_mgr_subkeys_new(const uint8_t master[KF_KEY_BYTES]);

struct kf_manager {
	const struct kf_config *cfg; /* borrowed; read-only */
	struct kf_subkeys *keys;     /* sodium_malloc'd; read-only after open */
	/* master_key_next's (store = etcd), or NULL; as keys */
	struct kf_subkeys *next_keys;
	/* the two master keys' fingerprints, for the node record ("" if
	 * no next); read-only after open */
	char master_fpr[KF_MASTER_FPR_LEN + 1];
	char next_fpr[KF_MASTER_FPR_LEN + 1];
	/* recovery_public_key's key (recovery.h); read-only after open */
	uint8_t recovery_pk[KF_RECOVERY_KEY_BYTES];
	bool has_recovery;		 /* recovery_public_key is set */
	struct kf_store *store;		 /* the sealed state; op_lock */
	struct kf_audit *audit;		 /* locks itself */
	struct kf_backup_cache *backups; /* archives' clear fields; locks
					    itself; NULL: none */
	int lock_fd;	     /* flock'd state_dir/lock; open/close */
	uint64_t sealed_seq; /* anchor in the state; op_lock */
	bool restore_only;   /* no keyring needed; set at open */
	struct kf_mgr_counters counters; /* atomics: manager.c */

	pthread_mutex_t op_lock; /* serialises management operations */
	pthread_mutex_t kr_lock; /* held only to read or swap kr */
	struct kf_keyring *kr;	 /* protected by kr_lock */

	kf_manager_change_fn on_change; /* set before any request runs */
	void *on_change_data;

	struct kf_mgr_cluster *cl; /* store = etcd; NULL for the file store */

	struct kf_mgr_audit aud; /* auditing.c */

	struct kf_usage *usage; /* recent readers (readers.c); locks itself */
	int64_t started;	/* when opened: usage is known from then */
};

/* --- manager.c ----------------------------------------------------------- */

/*
 * Appends record (not consumed) and waits until it is on disk, without
 * holding the audit lock across the fdatasync (audited opens never wait
 * for the disk).  *ret_seq (may be NULL) gets the record's seq once its
 * line is in the log -- also when the sync then fails: that line cannot be
 * taken back, and the caller's failure record must cancel it.
 */
int kf_mgr_record_durable(struct kf_manager *m, json_t *record,
			  uint64_t *ret_seq, char err[KF_ERR_MAX]) KF_WUR;

/*
 * A failure: `record` (consumed; made with kf_event_record and holding
 * what was asked) gets "cancels_seq" (when cancels_seq > 0: the seq of
 * the success line the failure cancels), "success": false and "error";
 * it is audited (best effort: the failure may be the audit log itself) and
 * passed to alert_command.  The caller logs.
 */
void kf_mgr_record_failure(struct kf_manager *m, json_t *record,
			   uint64_t cancels_seq, const char *error);

/*
 * The state now holds the audit anchor at seq: noted here and in the log,
 * whose retention keeps the segment holding it.  Call with op_lock held.
 */
void kf_mgr_sealed(struct kf_manager *m, uint64_t seq);

/* kf_mgr_record_failure plus an alert-priority log line. */
void kf_mgr_report_failure(struct kf_manager *m, json_t *record,
			   uint64_t cancels_seq, const char *error);

/*
 * An alarm that is no operation's failure (low disk space, lines syslog
 * did not take): message logged at prio, record (consumed, complete with
 * "success") audited, best effort, and passed to alert_command.
 */
void kf_mgr_alert(struct kf_manager *m, int prio, json_t *record,
		  const char *message);

/*
 * The commit protocol (manager.c): audits record (not consumed; it gets
 * "success": true), seals next into the store, then swaps it in.  Caller
 * holds op_lock.  0; -errno when nothing changed, with *cancel_seq the seq
 * of the success line written before the step that failed (0: none); or
 * KF_FILE_UNSYNCED: in effect, durability unconfirmed, already reported.
 */
int kf_mgr_commit(struct kf_manager *m, struct kf_keyring *next, json_t *record,
		  uint64_t *cancel_seq, char err[KF_ERR_MAX]) KF_WUR;

/* A new reference to the current keyring (NULL before one is loaded). */
struct kf_keyring *kf_mgr_current(struct kf_manager *m);

/* Makes next (a new reference is taken) the current keyring. */
void kf_mgr_swap(struct kf_manager *m, struct kf_keyring *next);

/* Calls the change callback; outside op_lock. */
void kf_mgr_notify(struct kf_manager *m);

/* A duration in the configuration's words ("90d", "12h", "0"). */
json_t *kf_mgr_interval_json(int64_t seconds);

/* A time as RFC 3339 UTC text. */
json_t *kf_mgr_time_json(int64_t t);

/* The versions held by kr, newest first, as a new JSON array. */
json_t *kf_mgr_versions_json(const struct kf_keyring *kr);

/* --- readers.c ----------------------------------------------------------- */

/*
 * Whether retiring `version` must wait: the usage table saw it read
 * within usage_window, or (cached read mode) opens are not seen at all.
 * -EBUSY with err naming the last reader and when, or the unknown usage;
 * 0 when it may go (usage_window 0 included).  *ret_readers gets the
 * version's recent readers (status's object) in both cases, for the
 * record; NULL when usage is off.
 */
int kf_mgr_usage_check(struct kf_manager *m, uint32_t version,
		       json_t **ret_readers, char err[KF_ERR_MAX]);

/* A retired version is read by no one any more: its rows go. */
void kf_mgr_usage_forget(struct kf_manager *m, uint32_t version);

/* status's "usage" object for the versions of kr (new reference). */
json_t *kf_mgr_usage_info(struct kf_manager *m, const struct kf_keyring *kr);

/* --- rotation.c, staging.c ---------------------------------------------- */

/*
 * The keyring a rotation (or a promotion) commits: `plus` (every old
 * version and the new current one) trimmed to retain_versions once an
 * archive of plus exists, else plus itself.  ret_name gets that archive's
 * name ("" when none).  Caller holds op_lock.
 */
int kf_mgr_rotated_keyring(struct kf_manager *m, struct kf_keyring *plus,
			   struct kf_keyring **ret, char *ret_name,
			   char err[KF_ERR_MAX]) KF_WUR;

/*
 * A step of a staged rotation: ev is KF_EVENT_KEY_STAGE, _PROMOTE or
 * _ABORT; audited (with "automatic" when the scheduler asked), archived
 * (stage, promote) and committed.  *ret_version (may be NULL): the staged,
 * promoted or aborted version.  Caller holds op_lock and notifies.  0,
 * KF_FILE_UNSYNCED, or -errno with nothing changed (reported).
 */
int kf_mgr_step_locked(struct kf_manager *m, const struct kf_caller *who,
		       enum kf_event ev, bool automatic, uint32_t *ret_version,
		       char err[KF_ERR_MAX]) KF_WUR;

/* --- startup.c ----------------------------------------------------------- */

/* The sealed state's anchor at start: kept, and checked against the log's
 * end (an alert when the log is shorter: truncated or replaced). */
void kf_mgr_take_anchor(struct kf_manager *m,
			const struct kf_audit_anchor *anchor);

/* The key_load record of a start: the keyring served, fields (may be
 * NULL; not consumed) added. */
int kf_mgr_record_load(struct kf_manager *m, json_t *fields,
		       char err[KF_ERR_MAX]) KF_WUR;

/*
 * A manager that holds the state lock and has checked state_dir and
 * backup_dir, nothing more (no key, log or keyring): keyfs rekey's
 * (rekey.c), which loads its keys and opens the log itself.
 */
int kf_mgr_open_bare(const struct kf_config *cfg, struct kf_manager **ret,
		     char err[KF_ERR_MAX]) KF_WUR;

/* --- auditing.c ---------------------------------------------------------- */

/*
 * Makes m->aud (the open window, the syslog shipper hooked on the log) once
 * the log is open.  -errno with err: a socket path that cannot work.
 */
int kf_mgr_audit_setup(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/* Unhooks and frees m->aud (stop it first); before the log is closed. */
void kf_mgr_audit_free(struct kf_manager *m);

/* The status object's "audit" part. */
json_t *kf_mgr_audit_info(struct kf_manager *m);

/* --- archives.c ---------------------------------------------------------- */

/*
 * Writes an archive of kr into backup_dir: `name`, or NULL for a generated
 * one (with prefix when non-NULL); ret_name (KF_BACKUP_FILE_NAME_MAX bytes)
 * gets the file name.
 */
int kf_mgr_write_backup(struct kf_manager *m, const struct kf_keyring *kr,
			const char *name, const char *prefix, char *ret_name,
			char err[KF_ERR_MAX]) KF_WUR;

/*
 * The keyring `given` (a restored archive's, not consumed) made current
 * under op_lock: less what the current keyring retired since (unless
 * force), the current keyring archived first (pre_restore_...), the
 * highest version raised to every archive's, then committed with rec (not
 * consumed; it gets key_version, previous_version, versions,
 * pre_restore_backup).  0, KF_FILE_UNSYNCED or -errno (*cancel_seq as
 * kf_mgr_commit sets it).
 */
int kf_mgr_adopt_locked(struct kf_manager *m, struct kf_keyring *given,
			json_t *rec, bool force, uint32_t *ret_version,
			char *ret_note, uint64_t *cancel_seq,
			char why[KF_ERR_MAX]) KF_WUR;

/* Deletes the archive `file` again (an operation that was refused). */
void kf_mgr_remove_backup(struct kf_manager *m, const char *file);

/* The highest version number known: kr's (may be NULL) and every archive's. */
uint32_t kf_mgr_highest_known(struct kf_manager *m,
			      const struct kf_keyring *kr);

/*
 * Automatic pruning to backup_keep after a change was announced; takes
 * op_lock itself.
 */
void kf_mgr_prune_automatic(struct kf_manager *m, const struct kf_caller *who);

/* --- cluster_node.c, cluster_threads.c (store = etcd) ------------------ */

/* A manual rotation this soon after the cluster's last is answered by it. */
#define KF_MGR_COALESCE_MS 250

/* Most archives one operation writes before its commit. */
#define KF_MGR_PENDING_MAX 4
/* Archives whose publication failed, retried by the heartbeat. */
#define KF_MGR_UNPUBLISHED_MAX 64

/*
 * This node's side of the cluster (DESIGN.md §9).  Three etcd clients, one
 * per thread that talks to etcd: changes (under op_lock), the watcher and
 * the heartbeat.  The served blob and its revision change only under
 * op_lock; what status shows is copied under `lock`, which is never held
 * across a request to etcd.
 */
struct kf_mgr_cluster {
	struct kf_etcd *op, *watch, *beat;

	/* op_lock */
	uint8_t *blob; /* the served generation, sealed (malloc'd) */
	size_t blob_len;
	/* the keys blob is sealed under: m->keys, or m->next_keys in a
	 * master-key rotation's window; what this node seals with */
	const struct kf_subkeys *sealer;
	struct kf_cluster_info info; /* its header */
	int64_t revision;	     /* its mod_revision in etcd; 0: unknown */
	int64_t refused;	     /* the last revision refused (0: none) */
	int64_t rotated_ms; /* kf_time_mono_ms() of the last rotation seen */
	char pending[KF_MGR_PENDING_MAX][KF_BACKUP_FILE_NAME_MAX];
	size_t n_pending; /* written by this operation, published on commit */
	char unpublished[KF_MGR_UNPUBLISHED_MAX][KF_BACKUP_FILE_NAME_MAX];
	size_t n_unpublished;

	/* lock */
	pthread_mutex_t lock;
	pthread_cond_t wake;	      /* the heartbeat's sleep; stop */
	bool ok;		      /* etcd answered the last heartbeat */
	int64_t since;		      /* of ok's last change */
	char reason[KF_ERR_MAX];      /* why not ok */
	char refused_why[KF_ERR_MAX]; /* why `refused` was */
	struct kf_cluster_info shown; /* = info, for status */
	json_t *nodes;		      /* the node records last listed */
	bool stop;

	bool initializing; /* keyfs cluster init: a conflict is a refusal */

	/* the threads' own */
	int64_t watch_from; /* the watcher's next revision */
	int64_t lease;	    /* the heartbeat's node lease (0: none) */
	bool started;
	pthread_t watcher, beater;
};

/*
 * The internal keys a cluster blob was sealed under: m->next_keys when its
 * key check value is master_key_next's (README: Master-key rotation), else
 * m->keys (which then refuse it, if it is neither).
 */
const struct kf_subkeys *kf_mgr_keys_of(const struct kf_manager *m,
					const uint8_t *blob, size_t len);

/*
 * The keys this node seals what it gives the cluster with (the keyring,
 * archives): those of the generation it serves, so that a node in a
 * master-key rotation's window writes under the key the cluster uses now.
 * m->keys with the file store.  Caller holds op_lock.
 */
const struct kf_subkeys *kf_mgr_seal_keys(const struct kf_manager *m);

/*
 * Opens the archive at path (kf_backup_read) under keys, or under next
 * (may be NULL) when it was sealed under that one: a master-key rotation's
 * window.
 */
int kf_mgr_backup_read_either(const struct kf_subkeys *keys,
			      const struct kf_subkeys *next, const char *path,
			      uint8_t **ret_blob, size_t *ret_len,
			      struct kf_backup_info *ret_info,
			      char err[KF_ERR_MAX]) KF_WUR;

/* kf_mgr_backup_read_either with the manager's keys. */
int kf_mgr_backup_read(const struct kf_manager *m, const char *path,
		       uint8_t **ret_blob, size_t *ret_len,
		       char err[KF_ERR_MAX]) KF_WUR;

/* Makes m->cl and its etcd clients. */
int kf_mgr_cluster_setup(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/*
 * keyfs cluster init (cluster_init.c): the cluster's first keyring, from
 * state_dir when from_state, else imported or generated as at a first
 * start.
 */
int kf_mgr_cluster_init(struct kf_manager *m, bool from_state,
			char err[KF_ERR_MAX]) KF_WUR;

/* The keyring a first start makes: imported, generated, or refused. */
int kf_mgr_new_keyring(struct kf_manager *m, struct kf_keyring **ret,
		       enum kf_event *ret_event, char err[KF_ERR_MAX]) KF_WUR;

/* Puts backup_dir/file into etcd unless one of that name is there. */
int kf_mgr_cluster_publish_file(struct kf_manager *m, const char *file,
				char err[KF_ERR_MAX]) KF_WUR;

/*
 * Start-up with store = etcd (startup.c calls it in place of loading the
 * file store): etcd's keyring, checked against the local copy, or the
 * local copy alone (degraded) when etcd cannot be reached.
 */
int kf_mgr_cluster_load(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/*
 * kf_mgr_commit for store = etcd: one compare-and-swap of the keyring.
 * -ESTALE when another node changed it first (its keyring is adopted
 * before returning; err says who and what); -EHOSTUNREACH when etcd cannot
 * be reached or the node is degraded ("cluster unavailable ...").
 */
int kf_mgr_cluster_commit(struct kf_manager *m, struct kf_keyring *next,
			  json_t *record, uint64_t *cancel_seq,
			  char err[KF_ERR_MAX]) KF_WUR;

/*
 * Adopts a sealed keyring read from etcd at revision rev, if it is newer
 * than the one served; refuses (audited, alerted) one that does not open,
 * belongs to another cluster or is older.  Caller holds op_lock.  1:
 * adopted (the caller notifies), 0: nothing to do, -errno: refused.
 */
int kf_mgr_cluster_adopt(struct kf_manager *m, const uint8_t *blob, size_t len,
			 int64_t rev) KF_WUR;

/* An archive written for the operation in progress (op_lock). */
void kf_mgr_cluster_pending(struct kf_manager *m, const char *file);
/* Forgets `file` (removed again) from the pending list (op_lock). */
void kf_mgr_cluster_unpending(struct kf_manager *m, const char *file);
/* Publishes the pending archives, and earlier failures (op_lock). */
void kf_mgr_cluster_publish(struct kf_manager *m);
/* Removes an archive from etcd after a prune deleted it here (op_lock). */
void kf_mgr_cluster_unpublish(struct kf_manager *m, const char *file);
/* Copies every archive etcd lists that this node lacks (op_lock). */
void kf_mgr_cluster_fetch_archives(struct kf_manager *m);
/*
 * 0 when changes may be made now, else -EHOSTUNREACH with
 * "cluster unavailable (...); keyring unchanged at version N" in err.
 */
int kf_mgr_cluster_usable(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Every node's record in etcd, read with client e (the caller's thread's),
 * as a new JSON array of objects (records that do not parse are left out).
 */
int kf_mgr_cluster_node_records(struct kf_etcd *e, json_t **ret,
				char err[KF_ERR_MAX]) KF_WUR;

/*
 * Before a promotion (cluster_wait.c): waits until every live node -- one
 * whose record is in etcd, its lease alive -- serves the generation this
 * node serves, which holds staged version `staged`; at most stage_timeout.
 * Caller holds op_lock.  0; -ETIMEDOUT naming the nodes that lag in err;
 * or -errno when etcd cannot be read.
 */
int kf_mgr_cluster_wait_served(struct kf_manager *m, uint32_t staged,
			       char err[KF_ERR_MAX]) KF_WUR;

/* Health: ok again, or not (with why); audited and alerted on change. */
void kf_mgr_cluster_health(struct kf_manager *m, bool ok, const char *why);

/* Seals the served blob with the audit log's present anchor (op_lock). */
int kf_mgr_cluster_save_copy(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/* An archive's put (value) or delete seen in etcd (op_lock). */
void kf_mgr_cluster_archive_event(struct kf_manager *m, bool put,
				  const char *name, const uint8_t *value,
				  size_t len);

/* Stops the threads (NULL cl or none started: nothing). */
void kf_mgr_cluster_stop(struct kf_manager *m);

/* The status object's "cluster" part. */
json_t *kf_mgr_cluster_info(struct kf_manager *m);

/* Frees the cluster part (threads already stopped). */
void kf_mgr_cluster_free(struct kf_manager *m);

#endif
