/* SPDX-License-Identifier: MIT */
/*
 * event: what an audit record is about, and who caused it -- the one place
 * that names events and starts records (DESIGN.md §6).
 *
 * Every record starts here: kf_event_record gives the object with "event"
 * and the caller's uid, gid and pid; the manager adds the fields of the
 * operation, the audit module adds "timestamp", "seq" and "chain".
 */
#ifndef KF_EVENT_H
#define KF_EVENT_H

#include <jansson.h>
#include <sys/types.h>

/* Who asked: from the FUSE request context, or the command's own ids. */
struct kf_caller {
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

enum kf_event {
	KF_EVENT_STARTUP,	 /* a refused start */
	KF_EVENT_KEY_LOAD,	 /* the state was loaded at start */
	KF_EVENT_KEY_IMPORT,	 /* ENCRYPTION_KEY... imported at start */
	KF_EVENT_KEY_GENERATE,	 /* development: a first keyring made */
	KF_EVENT_KEY_ROTATION,	 /* control/rotate, automatic rotation */
	KF_EVENT_KEY_BACKUP,	 /* control/backup */
	KF_EVENT_KEY_RESTORE,	 /* control/restore, restore --offline */
	KF_EVENT_BACKUP_CLEANUP, /* control/prune, automatic pruning */
	KF_EVENT_KEY_RETIRE,	 /* control/retire */
	KF_EVENT_KEY_OPEN,	 /* an audited open of a key file */
	KF_EVENT_KEY_EXPORT,	 /* keyfs export-env from the state */
	KF_EVENT_MOUNT,
	KF_EVENT_UNMOUNT,
	KF_EVENT_STATE_SYNC,   /* a change whose durability is unconfirmed */
	KF_EVENT_KEY_SYNC,     /* store = etcd: another node's change adopted */
	KF_EVENT_BACKUP_SYNC,  /* store = etcd: an archive copied or removed */
	KF_EVENT_CLUSTER,      /* store = etcd: reachable again, or not */
	KF_EVENT_AUDIT_ROTATE, /* control/audit-rotate refused */
	KF_EVENT_KEY_STAGE,    /* control/rotate "stage", scheduled staging */
	KF_EVENT_KEY_PROMOTE,  /* control/rotate "promote", scheduled */
	KF_EVENT_KEY_ABORT,    /* control/rotate "abort" */
	KF_EVENT_KEY_REKEY_START,  /* keyfs rekey: checked, journal next */
	KF_EVENT_KEY_REKEY,	   /* keyfs rekey: done, or failed */
	KF_EVENT_RECOVERY_RESTORE, /* restore --offline --recovery-key */
	KF_EVENT_COUNT,
};

/* The event's name in records ("key_rotation", ...); static. */
const char *kf_event_name(enum kf_event ev);

/*
 * A new record {"event": name, "uid", "gid", "pid"} (who may be NULL: no
 * ids).  New reference; never NULL unless out of memory.
 */
json_t *kf_event_record(enum kf_event ev, const struct kf_caller *who);

/* Fills who with this process's own ids; returns who. */
const struct kf_caller *kf_event_self(struct kf_caller *who);

#endif
