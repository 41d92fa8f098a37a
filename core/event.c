// SPDX-License-Identifier: MIT
/* event: audit event names and the start of every record. */
#include <unistd.h>

#include "event.h"

static const char *const names[KF_EVENT_COUNT] = {
    [KF_EVENT_STARTUP] = "startup",
    [KF_EVENT_KEY_LOAD] = "key_load",
    [KF_EVENT_KEY_IMPORT] = "key_import",
    [KF_EVENT_KEY_GENERATE] = "key_generate",
    [KF_EVENT_KEY_ROTATION] = "key_rotation",
    [KF_EVENT_KEY_BACKUP] = "key_backup",
    [KF_EVENT_KEY_RESTORE] = "key_restore",
    [KF_EVENT_BACKUP_CLEANUP] = "backup_cleanup",
    [KF_EVENT_KEY_RETIRE] = "key_retire",
    [KF_EVENT_KEY_OPEN] = "key_open",
    [KF_EVENT_KEY_EXPORT] = "key_export",
    [KF_EVENT_MOUNT] = "mount",
    [KF_EVENT_UNMOUNT] = "unmount",
    [KF_EVENT_STATE_SYNC] = "state_sync",
    [KF_EVENT_KEY_SYNC] = "key_sync",
    [KF_EVENT_BACKUP_SYNC] = "backup_sync",
    [KF_EVENT_CLUSTER] = "cluster",
    [KF_EVENT_AUDIT_ROTATE] = "audit_rotate",
    [KF_EVENT_KEY_STAGE] = "key_stage",
    [KF_EVENT_KEY_PROMOTE] = "key_promote",
    [KF_EVENT_KEY_ABORT] = "key_abort",
    [KF_EVENT_KEY_REKEY_START] = "key_rekey_start",
    [KF_EVENT_KEY_REKEY] = "key_rekey",
    [KF_EVENT_RECOVERY_RESTORE] = "recovery_restore",
};

const char *kf_event_name(enum kf_event ev)
{
	return ev < KF_EVENT_COUNT ? names[ev] : "unknown";
}

json_t *kf_event_record(enum kf_event ev, const struct kf_caller *who)
{
	json_t *r = json_object();

	if (!r)
		return NULL;
	json_object_set_new(r, "event", json_string(kf_event_name(ev)));
	if (who) {
		json_object_set_new(r, "uid", json_integer(who->uid));
		json_object_set_new(r, "gid", json_integer(who->gid));
		json_object_set_new(r, "pid", json_integer(who->pid));
	}
	return r;
}

const struct kf_caller *kf_event_self(struct kf_caller *who)
{
	who->uid = getuid();
	who->gid = getgid();
	who->pid = getpid();
	return who;
}
