/* SPDX-License-Identifier: MIT */
/*
 * manager: the seed's LocalKeyManager in C -- the one API that fs/ calls.
 *
 * Owns the configuration (borrowed), the master-derived internal keys, the
 * current keyring (an immutable snapshot swapped under a short lock), the
 * store of the sealed state (store.h), the audit log and the backup
 * directory.  Management operations (rotate, retire, backup, restore,
 * prune) are serialised by one mutex; readers take a reference to the
 * current keyring and are never blocked for longer than that pointer swap.
 *
 * Every management operation is audited.  Its record is written before its
 * state change becomes visible; if the record cannot be written the operation
 * is refused and nothing changes.  A failure has a record of its own (what
 * was asked, the error, and "cancels_seq" when a success record had been
 * written), is logged at alert priority and passed to alert_command.
 *
 * Implemented in manager.c (commit protocol), startup.c, rotation.c,
 * archives.c, status.c, offline.c and auditing.c; manager_private.h says
 * which holds what.
 */
#ifndef KF_MANAGER_H
#define KF_MANAGER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "backup.h"
#include "config.h"
#include "event.h"
#include "keyring.h"
#include "util.h"

struct kf_manager;

/* Called after each change of the keyring, outside the manager's locks. */
typedef void (*kf_manager_change_fn)(void *userdata);

/*
 * Start-up (DESIGN.md §4): master key, then state -> load; no state and
 * ENCRYPTION_KEY set -> import; nothing -> generate (development) or refuse
 * (production, "KeyValidationError: No current encryption key available").
 * Opens the audit log and records the start-up event.  Holds an exclusive
 * lock on state_dir/lock for its lifetime, so two daemons (or a daemon and an
 * offline restore) never share a state directory: -EBUSY.  cfg must outlive
 * the manager.  Errors are in err, one line, as a person should read them.
 */
int kf_manager_open(const struct kf_config *cfg, struct kf_manager **ret,
		    char err[KF_ERR_MAX]) KF_WUR;

/*
 * Like kf_manager_open, for `keyfs restore --offline`: a missing state is
 * not an error (nothing is imported or generated), so a lost keyring can be
 * restored in production.  Only kf_manager_restore and kf_manager_close may
 * be called on the result.
 */
int kf_manager_open_for_restore(const struct kf_config *cfg,
				struct kf_manager **ret,
				char err[KF_ERR_MAX]) KF_WUR;

/*
 * `keyfs cluster init` (store = etcd, DESIGN.md §9): creates the cluster
 * keyring under the configured prefix -- from this node's single-node
 * state_dir and its archives when from_state, else from ENCRYPTION_KEY...
 * or generated (development mode only) -- and refuses when the prefix
 * already holds one.  The result is a manager like kf_manager_open's,
 * serving the new keyring; close it when done.
 */
int kf_manager_cluster_init(const struct kf_config *cfg, bool from_state,
			    struct kf_manager **ret,
			    char err[KF_ERR_MAX]) KF_WUR;

/*
 * store = etcd: starts the threads that adopt other nodes' changes and
 * keep this node's record (call once the change callback is set).  The
 * file store: nothing.
 */
int kf_manager_start_sync(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/* Stops those threads (kf_manager_close does too); nothing to stop: no-op. */
void kf_manager_stop_sync(struct kf_manager *m);

/*
 * Starts the audit log's upkeep thread (README: Audit): it records the
 * repeats of each open window once it ends, checks the log's free space
 * (at once, then every minute), alerts when syslog drops lines, closes
 * segments that are due and applies audit_keep (every minute:
 * kf_manager_audit_retain).  Start it once the tree serves opens.
 */
int kf_manager_start_audit(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Stops that thread and records every open window's repeats, ended or not
 * (kf_manager_close does too, before the log closes); opens after it are
 * recorded one by one.  Nothing started: only the flush.
 */
void kf_manager_stop_audit(struct kf_manager *m);

/*
 * Seals the audit log's current anchor into the state when records were
 * added since the last seal (opens, backups, exports ...), so truncating
 * them is detected too.  Done by kf_manager_close and periodically by the
 * daemon.
 */
int kf_manager_checkpoint(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/* Seals the audit anchor (kf_manager_checkpoint), then frees m (NULL is
 * fine); returns NULL. */
struct kf_manager *kf_manager_close(struct kf_manager *m);

const struct kf_config *kf_manager_config(const struct kf_manager *m);

/* Registers fn to be called after every keyring change. */
void kf_manager_on_change(struct kf_manager *m, kf_manager_change_fn fn,
			  void *userdata);

/* A new reference to the current keyring (never NULL); unref when done. */
struct kf_keyring *kf_manager_keyring(struct kf_manager *m);

/*
 * rotate_key: returns once the new keyring is durable; *ret_version.  With
 * store = etcd, a rotation that another node's rotation beat (both asked
 * for a new key at once) is answered by that one: 0, its version, and
 * ret_note (KF_ERR_MAX bytes, may be NULL; "" otherwise) says
 * "by node NAME".
 */
int kf_manager_rotate(struct kf_manager *m, const struct kf_caller *who,
		      uint32_t *ret_version, char *ret_note,
		      char err[KF_ERR_MAX]) KF_WUR;

/*
 * Staged rotation (README: Staged rotation), each returning once the new
 * keyring is durable, with *ret_version (may be NULL) the version staged,
 * promoted or aborted.  stage: a new version numbered above every number
 * issued, served as `next` but not current (-EBUSY when one is staged
 * already).  promote: the staged version becomes current, as a rotation
 * would make it (archived, then trimmed to retain_versions).  abort: the
 * staged key is destroyed and its number never issued again.  promote and
 * abort: -ENOENT when nothing is staged.  With store = etcd, promote first
 * waits until every live node serves the staged version (at most
 * stage_timeout: -ETIMEDOUT naming the nodes that lag).
 */
int kf_manager_stage(struct kf_manager *m, const struct kf_caller *who,
		     uint32_t *ret_version, char err[KF_ERR_MAX]) KF_WUR;
int kf_manager_promote(struct kf_manager *m, const struct kf_caller *who,
		       uint32_t *ret_version, char err[KF_ERR_MAX]) KF_WUR;
int kf_manager_abort(struct kf_manager *m, const struct kf_caller *who,
		     uint32_t *ret_version, char err[KF_ERR_MAX]) KF_WUR;

/*
 * The scheduled step, when one is due: with rotate_interval set and the
 * current key that old, a rotation, or with rotate_mode = stage a staging;
 * with a staged version and stage_delay set, its promotion stage_delay
 * after it was staged.  *ret_rotated says whether a step was taken.
 */
int kf_manager_rotate_if_due(struct kf_manager *m, bool *ret_rotated,
			     char err[KF_ERR_MAX]) KF_WUR;

/* Seconds until the next scheduled step is due (<= 0: due); -1 = none. */
int64_t kf_manager_rotation_due_in(struct kf_manager *m);

/*
 * Closes the audit log's active segment now, for who (named in the close
 * record), and starts the next: 0 and the closed segment's name in
 * ret_name (KF_MANAGER_SEGMENT_NAME_MAX bytes), or -errno (refused,
 * audited and alerted; the active segment goes on).
 */
#define KF_MANAGER_SEGMENT_NAME_MAX 256
int kf_manager_audit_rotate(struct kf_manager *m, const struct kf_caller *who,
			    char *ret_name, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Audit retention: seals the log's anchor into the state, then deletes the
 * closed segments beyond audit_keep (kf_audit_retain).  Called after a
 * requested rotation and by the audit thread once a minute.  0 or -errno.
 */
int kf_manager_audit_retain(struct kf_manager *m, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Destroys a non-current version's key after taking a backup.  Usage-aware
 * (README: Usage-aware retire): a version read within usage_window, or
 * any version while usage is unknown (cached read mode), is refused with
 * -EBUSY and err naming the last reader and when -- unless force, which
 * retires it anyway; then ret_note (KF_ERR_MAX bytes, may be NULL; ""
 * otherwise) says what was overridden.  Its record holds "force" and the
 * version's recent "readers".
 */
int kf_manager_retire(struct kf_manager *m, const struct kf_caller *who,
		      uint32_t version, bool force, char *ret_note,
		      char err[KF_ERR_MAX]) KF_WUR;

/* backup_keys: name NULL = timestamped; ret_name gets the file name. */
int kf_manager_backup(struct kf_manager *m, const struct kf_caller *who,
		      const char *name, char *ret_name,
		      char err[KF_ERR_MAX]) KF_WUR;

/*
 * restore_keys: `what` is a file name in backup_dir (with or without .json)
 * or an absolute path.  Verifies first; backs up the current keyring
 * (pre_restore_...) before replacing it.  *ret_version = restored version.
 * Versions retired since the archive was taken stay retired (left out of
 * the restored keyring, said in ret_note, KF_ERR_MAX bytes, may be NULL);
 * an archive whose current version was retired is refused (-EBUSY).  With
 * force, retired versions in the archive come back.
 */
int kf_manager_restore(struct kf_manager *m, const struct kf_caller *who,
		       const char *what, bool force, uint32_t *ret_version,
		       char *ret_note, char err[KF_ERR_MAX]) KF_WUR;

/*
 * cleanup_old_backups: keeps the `keep` newest archives and deletes the
 * older ones, except (unless force) the last archive holding a version the
 * keyring no longer has (retired, or dropped beyond retain_versions):
 * *ret_kept_last (may be NULL) counts those.  keep 0 without force is
 * refused (-EINVAL): it would delete every backup.  *ret_deleted.
 */
int kf_manager_prune(struct kf_manager *m, const struct kf_caller *who,
		     unsigned keep, bool force, size_t *ret_deleted,
		     size_t *ret_kept_last, char err[KF_ERR_MAX]) KF_WUR;

/* list_backups: as kf_backup_list of backup_dir. */
int kf_manager_list_backups(struct kf_manager *m, struct kf_backup_info **ret,
			    size_t *ret_n, char err[KF_ERR_MAX]) KF_WUR;

/*
 * get_key_info: the status object (version, has_current_key,
 * has_previous_key, previous_version, created, fingerprints, retained
 * versions, purposes, mode, read_mode, rotate interval, next due, ...).
 * Never contains key material.  New reference.
 */
json_t *kf_manager_info(struct kf_manager *m);

/*
 * Audits an open of a key file (audited read mode); no fsync per open.
 * With audit_open_window, only the first open of a window by the same
 * caller (pid, uid, gid) of the same path is recorded here; the others are
 * counted, and recorded as one key_open_repeat when the window ends.
 * Fails closed: when the record cannot be written the caller must refuse
 * the open (-EIO or the write's errno).
 */
int kf_manager_audit_open(struct kf_manager *m, const struct kf_caller *who,
			  const char *path) KF_WUR;

/*
 * Notes an audited open of a key file by who in the usage table (usage.h):
 * of version's key for purpose (NULL: the data key), or with version 0 of
 * every version of kr's decryption set (keys/<purpose>).  Nothing when
 * usage_window is 0 or opens are not seen (cached read mode).
 */
void kf_manager_note_read(struct kf_manager *m, const struct kf_caller *who,
			  const struct kf_keyring *kr, uint32_t version,
			  const char *purpose);

/*
 * Audits a lifecycle event (KF_EVENT_MOUNT, _UNMOUNT, _KEY_EXPORT); fields
 * (may be NULL, not stolen) are added to the record.  Synced to disk.
 */
int kf_manager_audit_event(struct kf_manager *m, const struct kf_caller *who,
			   enum kf_event event, json_t *fields) KF_WUR;

/*
 * Records a refused management request (bad input in a control file):
 * audit record with success false and the error, alert.
 */
void kf_manager_audit_refused(struct kf_manager *m, const struct kf_caller *who,
			      enum kf_event event, const char *error);

/* --- what the daemon counts (metrics.h renders it) ---------------------- */

/* The kinds of audited open counted: a data key file, a derived one. */
enum kf_manager_open_kind {
	KF_MANAGER_OPEN_KEY,	 /* current, previous, versions/N/key */
	KF_MANAGER_OPEN_DERIVED, /* derived/P, versions/N/derived/P */
	KF_MANAGER_OPEN_KINDS
};

/* Rows of the caller's table of control files that are counted. */
#define KF_MANAGER_CONTROLS_MAX 32

/*
 * Counters since the manager was opened, monotonic; never a key byte.
 * events[ev][0] counts the operations of event ev that were done,
 * events[ev][1] those that failed (with a failure record; a malformed
 * control write that the manager refused unread is no failed operation:
 * the control counters count it).
 */
struct kf_manager_counters {
	uint64_t events[KF_EVENT_COUNT][2];
	uint64_t opens[KF_MANAGER_OPEN_KINDS];	       /* audited, accepted */
	uint64_t controls[KF_MANAGER_CONTROLS_MAX][2]; /* [0] ok, [1] failed */
};

/* Counts an audited open of kind that was recorded (the daemon). */
void kf_manager_count_open(struct kf_manager *m,
			   enum kf_manager_open_kind kind);

/*
 * Counts a write to the control file in row `row` of the caller's table
 * (below KF_MANAGER_CONTROLS_MAX; others are not counted), done or failed.
 */
void kf_manager_count_control(struct kf_manager *m, size_t row, bool ok);

/* The counters now, into *ret. */
void kf_manager_counters(struct kf_manager *m, struct kf_manager_counters *ret);

/* --- offline, for the keyfs command: no daemon needed -------------------- */

/*
 * audit verify: checks the audit log held by paths (a NULL-terminated list
 * of files and folders; NULL or empty = the configured log's folder) as one
 * chain across its segments, with the audit key from the master key, to the
 * end of every file (kf_audit_verify_files, audit_verify.h; a folder stands
 * for the files in it named for the configured log).  With check_anchor the
 * files must also reach the anchor sealed in the state (else they were cut
 * short); a state that cannot be read is then a failure ("sealed state:
 * ...").  Without it (an archived older copy) the state is not read and the
 * report says that the end was not checked.  0 with "ok: ..." in report
 * saying what was checked, -EBADMSG naming the first bad line ("FILE:LINE:
 * reason"), the missing segment or the truncation, or an error.
 */
int kf_manager_verify_audit(const struct kf_config *cfg,
			    const char *const *paths, bool check_anchor,
			    char report[KF_ERR_MAX]) KF_WUR;

/*
 * backup verify: authenticates and decrypts the archive at path with the
 * master key and checks the keyring inside; changes nothing.  ret_info gets
 * its clear fields.
 */
int kf_manager_verify_backup(const struct kf_config *cfg, const char *path,
			     struct kf_backup_info *ret_info,
			     char err[KF_ERR_MAX]) KF_WUR;

/* The journal of an incomplete master-key rotation, in state_dir. */
#define KF_REKEY_JOURNAL "rekey.journal"

/* What kf_manager_rekey did. */
struct kf_manager_rekey_result {
	char old_fpr[KF_KEY_FPR_LEN + 1]; /* kf_master_fingerprint */
	char new_fpr[KF_KEY_FPR_LEN + 1];
	bool resumed;	/* it finished an interrupted rotation */
	bool from_env;	/* the old key came from KEYFS_MASTER_KEY */
	bool installed; /* master_key_file now holds the new key */
	bool state;	/* a state was sealed anew */
	size_t archives, archives_rewritten;
	uint64_t audit_files, audit_files_rewritten;
	/* store = etcd: the keyring in etcd, now under the new key */
	bool cluster;
	bool cluster_switched; /* sealed anew by this run (else found so) */
	uint64_t cluster_generation;
	size_t cluster_archives, cluster_archives_rewritten; /* in etcd */
};

/*
 * keyfs rekey (README: Master-key rotation), with the daemon stopped:
 * seals every archive, the audit log's chain and the state anew under the
 * master key in the file new_master (checked like master_key_file), then
 * puts that key into master_key_file (unless the old one came from
 * KEYFS_MASTER_KEY).  A new rotation first checks that everything opens
 * under the configured key and that the new key differs (else refused,
 * audited, nothing changed), then writes state_dir/rekey.journal; from
 * there on every step is resumable: after a crash, the same call finishes
 * it (and a daemon refuses to start until it has).  Audited as
 * key_rekey_start and key_rekey.  store = etcd: -EOPNOTSUPP.  0 with *ret,
 * or -errno with err (alerted, audited when the log can be).
 */
int kf_manager_rekey(const struct kf_config *cfg, const char *new_master,
		     const struct kf_caller *who,
		     struct kf_manager_rekey_result *ret,
		     char err[KF_ERR_MAX]) KF_WUR;

/*
 * Break-glass recovery (README: Break-glass recovery), with the daemon
 * stopped: opens the recovery seal of the archive `what` (a name in
 * backup_dir or an absolute path) with the recovery private key in
 * sk_path (checked like a master key file), then -- the master key that
 * sealed the state being lost -- sets aside the state (keyring.lost-STAMP)
 * and the audit log (the folder lost-STAMP beside it), and restores the
 * keyring under the configured master key: a new log whose first record is
 * recovery_restore, a new state, a first archive under the new key (a
 * failure before the new log exists is alerted, not audited).  Refused with
 * nothing changed when the seal does not open, belongs to another archive, or
 * the state opens under the configured key (not lost: use kf_manager_restore).
 * *ret_version.
 */
int kf_manager_recover(const struct kf_config *cfg, const struct kf_caller *who,
		       const char *sk_path, const char *what,
		       uint32_t *ret_version, char err[KF_ERR_MAX]) KF_WUR;

/* list_backups without a running manager: kf_backup_list of backup_dir. */
int kf_manager_list_backups_offline(const struct kf_config *cfg,
				    struct kf_backup_info **ret, size_t *ret_n,
				    char err[KF_ERR_MAX]) KF_WUR;

#endif
