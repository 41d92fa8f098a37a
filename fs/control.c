// SPDX-License-Identifier: MIT
/*
 * control: the table of control commands, their handlers, and the operand
 * rules both the daemon (parsing a write) and `keyfs ctl` (composing one)
 * follow.  Input is one line of printable ASCII; anything else is refused
 * with EINVAL and recorded as a failed attempt -- without its content.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "archives.h"
#include "control.h"
#include "key.h"

#define CTL_INPUT_MAX KF_CONTROL_INPUT_MAX

/* --- the handlers ----------------------------------------------------- */

/* The steps of a staged rotation (README: Staged rotation). */
static const struct {
	const char *word;
	int (*run)(struct kf_manager *m, const struct kf_caller *who,
		   uint32_t *ret_version, char err[KF_ERR_MAX]);
	const char *done; /* after "version N" in the answer */
} steps[] = {
    {"stage", kf_manager_stage, "staged (current unchanged)"},
    {"promote", kf_manager_promote, "promoted to current"},
    {"abort", kf_manager_abort,
     "aborted (destroyed; its number is never "
     "reused)"},
};

static int ctl_rotate(struct kf_manager *m, const struct kf_caller *who,
		      const struct kf_control_arg *arg, char *detail,
		      size_t size, char err[KF_ERR_MAX])
{
	char note[KF_ERR_MAX] = "";
	uint32_t version = 0;
	int r;

	for (size_t i = 0; arg->word && i < KF_LEN(steps); i++) {
		if (strcmp(arg->word, steps[i].word) != 0)
			continue;
		r = steps[i].run(m, who, &version, err);
		if (r == 0)
			snprintf(detail, size, "version %" PRIu32 " %s",
				 version, steps[i].done);
		return r;
	}
	r = kf_manager_rotate(m, who, &version, note, err);
	if (r == 0)
		snprintf(detail, size, "version %" PRIu32 "%s%s%s", version,
			 note[0] ? " (" : "", note, note[0] ? ")" : "");
	return r;
}

static int ctl_backup(struct kf_manager *m, const struct kf_caller *who,
		      const struct kf_control_arg *arg, char *detail,
		      size_t size, char err[KF_ERR_MAX])
{
	char name[KF_ARCHIVES_NAME_MAX];
	int r = kf_manager_backup(m, who, arg->word, name, err);

	if (r == 0)
		snprintf(detail, size, "%s", name);
	return r;
}

static int ctl_restore(struct kf_manager *m, const struct kf_caller *who,
		       const struct kf_control_arg *arg, char *detail,
		       size_t size, char err[KF_ERR_MAX])
{
	char note[KF_ERR_MAX] = "";
	uint32_t version = 0;
	int r = kf_manager_restore(m, who, arg->word, arg->force, &version,
				   note, err);

	if (r == 0)
		snprintf(detail, size, "version %" PRIu32 "%s%s", version,
			 note[0] ? "; " : "", note);
	return r;
}

static int ctl_prune(struct kf_manager *m, const struct kf_caller *who,
		     const struct kf_control_arg *arg, char *detail,
		     size_t size, char err[KF_ERR_MAX])
{
	size_t deleted = 0, kept_last = 0;
	int r = kf_manager_prune(m, who, (unsigned)arg->number, arg->force,
				 &deleted, &kept_last, err);

	if (r == 0 && kept_last > 0)
		snprintf(detail, size,
			 "%zu deleted, %zu kept as the last copy of a version",
			 deleted, kept_last);
	else if (r == 0)
		snprintf(detail, size, "%zu deleted", deleted);
	return r;
}

static int ctl_retire(struct kf_manager *m, const struct kf_caller *who,
		      const struct kf_control_arg *arg, char *detail,
		      size_t size, char err[KF_ERR_MAX])
{
	char note[KF_ERR_MAX] = "";
	int r = kf_manager_retire(m, who, (uint32_t)arg->number, arg->force,
				  note, err);

	if (r == 0)
		snprintf(detail, size, "version %" PRIu64 "%s%s", arg->number,
			 note[0] ? "; " : "", note);
	return r;
}

static int ctl_audit_rotate(struct kf_manager *m, const struct kf_caller *who,
			    const struct kf_control_arg *arg, char *detail,
			    size_t size, char err[KF_ERR_MAX])
{
	char name[KF_MANAGER_SEGMENT_NAME_MAX];
	int r = kf_manager_audit_rotate(m, who, name, err);

	(void)arg;
	if (r == 0)
		snprintf(detail, size, "%s", name);
	return r;
}

/* --- the table -------------------------------------------------------- */

static const struct kf_control_cmd cmds[] = {
    {
	.name = "rotate",
	.run = ctl_rotate,
	.operand = KF_CONTROL_STEP,
	.usage = "write \"1\" or \"rotate\" to rotate in one step, or "
		 "\"stage\", \"promote\" or \"abort\"",
	.event = KF_EVENT_KEY_ROTATION,
	.verb = "rotated",
	.enoent = "no version is staged",
	.ebusy = "a version is staged: promote or abort it first",
	.report = KF_CONTROL_REPORT_VERSION_NOW,
    },
    {
	.name = "backup",
	.run = ctl_backup,
	.operand = KF_CONTROL_NAME,
	.usage = "write \"1\" or a backup name "
		 "([A-Za-z0-9][A-Za-z0-9._-]{0,63})",
	.event = KF_EVENT_KEY_BACKUP,
	.verb = "backup",
	.enoent = "no such backup",
	.report = KF_CONTROL_REPORT_NEW_BACKUP,
    },
    {
	.name = "restore",
	.run = ctl_restore,
	.operand = KF_CONTROL_SOURCE_FORCE,
	.usage = "write a backup name from backups/ or an absolute path, "
		 "optionally followed by \" force\" to bring retired "
		 "versions back",
	.event = KF_EVENT_KEY_RESTORE,
	.verb = "restored",
	.enoent = "no such backup",
	.report = KF_CONTROL_REPORT_VERSION_NOW,
    },
    {
	.name = "prune",
	.run = ctl_prune,
	.operand = KF_CONTROL_COUNT_FORCE,
	.usage = "write how many of the newest backups to keep (1 or "
		 "more), optionally followed by \" force\" to delete "
		 "the last copies of retired versions too (\"0 force\" "
		 "deletes every backup)",
	.event = KF_EVENT_BACKUP_CLEANUP,
	.verb = "pruned",
	.enoent = "no such backup",
	.report = KF_CONTROL_REPORT_DELETED,
    },
    {
	.name = "retire",
	.run = ctl_retire,
	.operand = KF_CONTROL_VERSION_FORCE,
	.usage = "write the version number to retire, optionally followed "
		 "by \" force\" to retire it although it was read within "
		 "usage_window",
	.event = KF_EVENT_KEY_RETIRE,
	.verb = "retired",
	.enoent = "no such version in the keyring",
	.ebusy = "that version is the current or the staged key (rotate, or "
		 "promote or abort, first), or it was read within "
		 "usage_window, or its usage is unknown (keyfs ctl status: "
		 "last reads); add \"force\" to retire a version that was "
		 "read",
	.report = KF_CONTROL_REPORT_VERSION_GIVEN,
    },
    {
	.name = "audit-rotate",
	.run = ctl_audit_rotate,
	.operand = KF_CONTROL_YES,
	.usage = "write \"1\" or \"audit-rotate\"",
	.event = KF_EVENT_AUDIT_ROTATE,
	.verb = "audit segment closed",
	.enoent = "no such file",
	.report = KF_CONTROL_REPORT_DONE,
    },
};

size_t kf_control_count(void)
{
	return sizeof(cmds) / sizeof(cmds[0]);
}

const struct kf_control_cmd *kf_control_at(size_t i)
{
	return i < kf_control_count() ? &cmds[i] : NULL;
}

int kf_control_find(const char *name)
{
	for (size_t i = 0; i < kf_control_count(); i++)
		if (strcmp(cmds[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

/* --- operand rules ---------------------------------------------------- */

enum cli_words {
	WORDS_NONE,	/* keyfs ctl takes no operand and writes "1" */
	WORDS_OPTIONAL, /* one operand, else "1" */
	WORDS_ONE,	/* one operand */
};

static const struct operand_rule {
	const char *synopsis; /* after the name in keyfs ctl's usage */
	enum cli_words words;
	bool force;   /* a second word "force" may follow */
	bool number;  /* the operand is a decimal number ... */
	uint64_t min; /* ... at least this */
} rules[KF_CONTROL_OPERAND_COUNT] = {
    [KF_CONTROL_YES] = {"", WORDS_NONE, false, false, 0},
    /* No "|" inside: keyfs --help separates the operations with it. */
    [KF_CONTROL_STEP] = {" [stage/promote/abort]", WORDS_OPTIONAL, false, false,
			 0},
    [KF_CONTROL_NAME] = {" [NAME]", WORDS_OPTIONAL, false, false, 0},
    [KF_CONTROL_VERSION_FORCE] = {" N [force]", WORDS_ONE, true, true, 1},
    [KF_CONTROL_COUNT_FORCE] = {" N [force]", WORDS_ONE, true, true, 0},
    [KF_CONTROL_SOURCE_FORCE] = {" NAME [force]", WORDS_ONE, true, false, 0},
};

static bool is_step(const char *word)
{
	for (size_t i = 0; i < KF_LEN(steps); i++)
		if (strcmp(word, steps[i].word) == 0)
			return true;
	return false;
}

/*
 * The operand of a write to c, by c's rule: arg is the checked line (its
 * " force" is cut off here).  -EINVAL when it does not fit the rule.
 */
static int operand_parse(const struct kf_control_cmd *c, char *arg,
			 struct kf_control_arg *ret)
{
	const struct operand_rule *rule = &rules[c->operand];
	struct kf_control_arg a = {arg, 0, false};
	char *word = rule->force ? strchr(arg, ' ') : NULL;

	if (word) {
		if (strcmp(word, " force") != 0)
			return -EINVAL;
		*word = 0;
		a.force = true;
	}
	if (rule->number) {
		if (kf_parse_u64(arg, UINT32_MAX, &a.number) < 0 ||
		    a.number < rule->min)
			return -EINVAL;
	} else if (c->operand == KF_CONTROL_YES ||
		   c->operand == KF_CONTROL_STEP) {
		if (strcmp(arg, "1") == 0 || strcmp(arg, c->name) == 0)
			a.word = NULL;
		else if (c->operand == KF_CONTROL_YES || !is_step(arg))
			return -EINVAL;
	} else if (c->operand == KF_CONTROL_NAME && strcmp(arg, "1") == 0) {
		a.word = NULL; /* a timestamped name */
	}
	*ret = a;
	return 0;
}

const char *kf_control_synopsis(const struct kf_control_cmd *c)
{
	return rules[c->operand].synopsis;
}

int kf_control_line(const struct kf_control_cmd *c, int argc, char **argv,
		    char *line, size_t size)
{
	const struct operand_rule *rule = &rules[c->operand];
	bool force = rule->force && argc >= 2 && strcmp(argv[1], "force") == 0;
	int n;

	if (argc > 1 + force || (rule->words == WORDS_ONE && argc == 0) ||
	    (rule->words == WORDS_NONE && argc > 0) ||
	    (c->operand == KF_CONTROL_STEP && argc > 0 && !is_step(argv[0])))
		return -EINVAL;
	n = snprintf(line, size, "%s%s\n", argc > 0 ? argv[0] : "1",
		     force ? " force" : "");
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* --- a write ---------------------------------------------------------- */

/*
 * The command written to a control file: one line, optional final "\n",
 * printable ASCII words separated by single spaces ("3 force").  Copied
 * into arg (CTL_INPUT_MAX + 1 bytes).
 */
static int ctl_argument(const char *buf, size_t size,
			char arg[CTL_INPUT_MAX + 1])
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

int kf_control_parse(const struct kf_control_cmd *c, const char *buf,
		     size_t size, char arg[KF_CONTROL_INPUT_MAX + 1],
		     struct kf_control_arg *ret)
{
	int r = ctl_argument(buf, size, arg);

	return r < 0 ? -EBADMSG : operand_parse(c, arg, ret);
}

int kf_control_write(struct kf_manager *m, const struct kf_caller *who,
		     const struct kf_control_cmd *c, const char *buf,
		     size_t size, char out[KF_CONTROL_RESULT_MAX])
{
	char arg[CTL_INPUT_MAX + 1], err[KF_ERR_MAX] = "";
	char detail[KF_CONTROL_RESULT_MAX] = "";
	struct kf_control_arg a;
	int r = kf_control_parse(c, buf, size, arg, &a);

	if (r == -EBADMSG) {
		r = -EINVAL;
		snprintf(err, sizeof(err),
			 "invalid input to control file (%zu bytes; %s)", size,
			 c->usage);
		kf_manager_audit_refused(m, who, c->event, err);
		goto out;
	}
	if (r == 0)
		r = c->run(m, who, &a, detail, sizeof(detail), err);
	if (r == -EINVAL && !err[0]) {
		/* Malformed input: the manager never saw it; record it here. */
		snprintf(err, sizeof(err), "invalid input to control file (%s)",
			 c->usage);
		kf_manager_audit_refused(m, who, c->event, err);
	}
out:
	if (r < 0)
		snprintf(out, KF_CONTROL_RESULT_MAX, "error: %s\n", err);
	else
		snprintf(out, KF_CONTROL_RESULT_MAX, "%s: %s\n", c->verb,
			 detail);
	sodium_memzero(arg, sizeof(arg));
	/*
	 * The write's text may be a key pasted into the wrong file, and the
	 * kernel put it in libfuse's receive buffer, which libfuse does not
	 * touch again (keyfs has no write_buf, so no splice: plain writable
	 * memory).  An operation also leaves key bytes on this stack.
	 */
	sodium_memzero((char *)buf, size);
	kf_key_wipe_stack(KF_KEY_WIPE_OPERATION);
	return r;
}
