// SPDX-License-Identifier: MIT
/*
 * control: what a write to control/rotate, backup, restore, prune or retire
 * does.  Input is one line of printable ASCII; anything else is refused with
 * EINVAL and recorded as a failed attempt -- without its content, which
 * could be a key pasted into the wrong file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fs.h"

#define CTL_INPUT_MAX 4096 /* longer control writes are refused */

/*
 * The command written to a control file: one line, optional final "\n",
 * printable ASCII words separated by single spaces ("3 force").  Copied
 * into arg (CTL_INPUT_MAX + 1 bytes).
 */
static int ctl_argument(const char *buf, size_t size, char *arg)
{
	if (size > 0 && buf[size - 1] == '\n')
		size--;
	if (size == 0 || size > CTL_INPUT_MAX || buf[0] == ' ' ||
	    buf[size - 1] == ' ')
		return -EINVAL;
	for (size_t i = 0; i < size; i++)
		if (buf[i] < 0x20 || buf[i] > 0x7e ||
		    (buf[i] == ' ' && buf[i + 1] == ' '))
			return -EINVAL;
	memcpy(arg, buf, size);
	arg[size] = 0;
	return 0;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
	return kf_parse_u64(s, max, ret) < 0 ? -EINVAL : 0;
}

static enum kf_event ctl_event(enum kf_node_kind kind)
{
	switch (kind) {
	case KF_NODE_CTL_ROTATE:
		return KF_EVENT_KEY_ROTATION;
	case KF_NODE_CTL_BACKUP:
		return KF_EVENT_KEY_BACKUP;
	case KF_NODE_CTL_RESTORE:
		return KF_EVENT_KEY_RESTORE;
	case KF_NODE_CTL_PRUNE:
		return KF_EVENT_BACKUP_CLEANUP;
	default:
		return KF_EVENT_KEY_RETIRE;
	}
}

static const char *ctl_usage(enum kf_node_kind kind)
{
	switch (kind) {
	case KF_NODE_CTL_ROTATE:
		return "write \"1\" or \"rotate\"";
	case KF_NODE_CTL_BACKUP:
		return "write \"1\" or a backup name "
		       "([A-Za-z0-9][A-Za-z0-9._-]{0,63})";
	case KF_NODE_CTL_RESTORE:
		return "write a backup name from backups/ or an absolute path, "
		       "optionally followed by \" force\" to bring retired "
		       "versions back";
	case KF_NODE_CTL_PRUNE:
		return "write how many of the newest backups to keep (1 or "
		       "more), optionally followed by \" force\" to delete "
		       "the last copies of retired versions too (\"0 force\" "
		       "deletes every backup)";
	default:
		return "write the version number to retire";
	}
}

/* Runs one control command; result text for the writer in out. */
static int ctl_run(struct kf_fs *fs, const struct kf_caller *who,
		   enum kf_node_kind kind, const char *arg,
		   char out[KF_RESULT_MAX])
{
	char err[KF_ERR_MAX] = "", name[KF_BACKUP_NAME_MAX + 6];
	uint32_t version = 0;
	size_t deleted = 0;
	uint64_t v;
	int r = -EINVAL;

	switch (kind) {
	case KF_NODE_CTL_ROTATE:
		if (strcmp(arg, "1") != 0 && strcmp(arg, "rotate") != 0)
			break;
		r = kf_manager_rotate(fs->m, who, &version, err);
		if (r == 0)
			snprintf(out, KF_RESULT_MAX,
				 "rotated: version %" PRIu32 "\n", version);
		break;
	case KF_NODE_CTL_RETIRE:
		if (parse_uint(arg, UINT32_MAX, &v) < 0 || v == 0)
			break;
		r = kf_manager_retire(fs->m, who, (uint32_t)v, err);
		if (r == 0)
			snprintf(out, KF_RESULT_MAX,
				 "retired: version %" PRIu64 "\n", v);
		break;
	case KF_NODE_CTL_BACKUP:
		r = kf_manager_backup(
		    fs->m, who, strcmp(arg, "1") == 0 ? NULL : arg, name, err);
		if (r == 0)
			snprintf(out, KF_RESULT_MAX, "backup: %s\n", name);
		break;
	case KF_NODE_CTL_RESTORE: {
		char *word = strchr(arg, ' '), note[KF_ERR_MAX];
		bool force = word && strcmp(word, " force") == 0;

		if (word && !force)
			break;
		if (word)
			*word = 0;
		r = kf_manager_restore(fs->m, who, arg, force, &version, note,
				       err);
		if (r == 0)
			snprintf(out, KF_RESULT_MAX,
				 "restored: version %" PRIu32 "%s%s\n", version,
				 note[0] ? "; " : "", note);
		break;
	}
	case KF_NODE_CTL_PRUNE: {
		char *word = strchr(arg, ' ');
		bool force = word && strcmp(word, " force") == 0;
		size_t kept_last = 0;

		if (word && !force)
			break;
		if (word)
			*word = 0;
		if (parse_uint(arg, UINT32_MAX, &v) < 0)
			break;
		r = kf_manager_prune(fs->m, who, (unsigned)v, force, &deleted,
				     &kept_last, err);
		if (r == 0 && kept_last > 0)
			snprintf(out, KF_RESULT_MAX,
				 "pruned: %zu deleted, %zu kept as the last "
				 "copy of a version\n",
				 deleted, kept_last);
		else if (r == 0)
			snprintf(out, KF_RESULT_MAX, "pruned: %zu deleted\n",
				 deleted);
		break;
	}
	default:
		r = -EACCES;
		break;
	}
	if (r == -EINVAL && !err[0]) {
		/* Malformed input: the manager never saw it; record it here. */
		snprintf(err, sizeof(err), "invalid input to control file (%s)",
			 ctl_usage(kind));
		kf_manager_audit_refused(fs->m, who, ctl_event(kind), err);
	}
	if (r < 0)
		snprintf(out, KF_RESULT_MAX, "error: %s\n", err);
	return r;
}

int kf_control_write(struct kf_fs *fs, const struct kf_caller *who,
		     enum kf_node_kind kind, const char *buf, size_t size,
		     char out[KF_RESULT_MAX])
{
	char arg[CTL_INPUT_MAX + 1];
	int r;

	r = ctl_argument(buf, size, arg);
	if (r < 0) {
		char err[KF_ERR_MAX];

		snprintf(err, sizeof(err),
			 "invalid input to control file (%zu bytes; %s)", size,
			 ctl_usage(kind));
		kf_manager_audit_refused(fs->m, who, ctl_event(kind), err);
		snprintf(out, KF_RESULT_MAX, "error: %s\n", err);
	} else {
		r = ctl_run(fs, who, kind, arg, out);
	}
	sodium_memzero(arg, sizeof(arg));
	return r;
}
