/* SPDX-License-Identifier: MIT */
/*
 * control: the control commands (DESIGN.md §1) -- one table, one row per
 * command.  A row is a file control/<name> in the tree and an operation of
 * `keyfs ctl`: it names the handler that runs the command in the daemon,
 * the operand the command takes, its audit event, and how `keyfs ctl`
 * reports the outcome when the daemon's answer cannot be read back (cached
 * mode has no opens to carry it).  Adding a command is adding a row.
 *
 * No FUSE here: the daemon (ops.c, tree.c) and the command (cmd/ctl.c)
 * share this table.
 */
#ifndef KF_CONTROL_H
#define KF_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager.h"

/* A write's answer, "rotated: version 3\n" or "error: ...\n", with its NUL. */
#define KF_CONTROL_RESULT_MAX (KF_ERR_MAX + 64)
#define KF_CONTROL_INPUT_MAX 4096 /* longer control writes are refused */

/* What a command takes after its name: the operand rule. */
enum kf_control_operand {
	KF_CONTROL_YES,		  /* "1" or the command's name; the cli: none */
	KF_CONTROL_STEP,	  /* YES, or a step: stage, promote, abort */
	KF_CONTROL_NAME,	  /* a backup name, or "1": the cli's default */
	KF_CONTROL_VERSION_FORCE, /* a version number, 1 or more [force] */
	KF_CONTROL_COUNT_FORCE,	  /* a count, 0 or more, [force] */
	KF_CONTROL_SOURCE_FORCE,  /* a backup name or an absolute path, [force]
				   */
	KF_CONTROL_OPERAND_COUNT
};

/* What `keyfs ctl` prints after the verb when no answer can be read back. */
enum kf_control_report {
	KF_CONTROL_REPORT_VERSION_NOW,	 /* the tree's version file */
	KF_CONTROL_REPORT_VERSION_GIVEN, /* the version number written */
	KF_CONTROL_REPORT_NEW_BACKUP,	 /* the name backups/ gained */
	KF_CONTROL_REPORT_DELETED,	 /* how many names backups/ lost */
	KF_CONTROL_REPORT_DONE,		 /* the verb alone */
};

/* The operand of one write, parsed by the command's rule. */
struct kf_control_arg {
	const char *word; /* the name, path or step; NULL for "1" (YES, NAME,
			   * STEP) */
	uint64_t number;  /* VERSION, COUNT_FORCE */
	bool force;	  /* "force" followed (the *_FORCE rules) */
};

/*
 * A command's handler, in the daemon: runs it for who through the manager.
 * 0 with the outcome's words after the verb ("version 3") in detail (size
 * bytes), or -errno with the reason in err (empty: malformed input).
 */
typedef int (*kf_control_run_fn)(struct kf_manager *m,
				 const struct kf_caller *who,
				 const struct kf_control_arg *arg, char *detail,
				 size_t size, char err[KF_ERR_MAX]);

struct kf_control_cmd {
	const char *name;		 /* control/<name>, keyfs ctl <name> */
	kf_control_run_fn run;		 /* the handler */
	enum kf_control_operand operand; /* what the command takes */
	const char *usage;		 /* how to write it: in refusals */
	enum kf_event event;		 /* the audit record of a refusal */
	const char *verb;	       /* the answer's first word: "rotated" */
	const char *enoent;	       /* what ENOENT means, for keyfs ctl */
	const char *ebusy;	       /* what EBUSY means (NULL: strerror) */
	enum kf_control_report report; /* keyfs ctl in cached mode */
};

/* How many commands the table holds. */
size_t kf_control_count(void);

/* Row i of the table (the order of control/), or NULL past its end. */
const struct kf_control_cmd *kf_control_at(size_t i);

/* The index of the command called name, or -ENOENT. */
int kf_control_find(const char *name);

/*
 * The operand of what was written to control/<c->name>: the input checked
 * (one line of printable ASCII, single spaces, an optional final "\n", at
 * most KF_CONTROL_INPUT_MAX bytes) and copied into arg, then parsed by c's
 * rule into *ret (whose word points into arg).  0; -EBADMSG when the input
 * is not such a line; -EINVAL when the operand breaks c's rule.  Nothing
 * else is done: kf_control_write runs it.
 */
int kf_control_parse(const struct kf_control_cmd *c, const char *buf,
		     size_t size, char arg[KF_CONTROL_INPUT_MAX + 1],
		     struct kf_control_arg *ret) KF_WUR;

/*
 * Runs what was written to control/<c->name> (the daemon): checks the
 * input (one line of printable ASCII), parses the operand by c's rule,
 * calls c's handler.  Malformed input is refused with -EINVAL and recorded
 * in the audit log, without its content (it could be a key pasted into the
 * wrong file).  Returns 0 or -errno; the answer for the writer, in words,
 * goes to out.
 */
int kf_control_write(struct kf_manager *m, const struct kf_caller *who,
		     const struct kf_control_cmd *c, const char *buf,
		     size_t size, char out[KF_CONTROL_RESULT_MAX]);

/* The operands of `keyfs ctl <c->name>` for its usage line: " N [force]". */
const char *kf_control_synopsis(const struct kf_control_cmd *c);

/*
 * The line `keyfs ctl` writes to control/<c->name> for the argc operands
 * in argv ("1\n", "3 force\n"), into line (size bytes).  -EINVAL when they
 * do not fit c's rule (a usage error), -ENAMETOOLONG when the line would
 * not fit.
 */
int kf_control_line(const struct kf_control_cmd *c, int argc, char **argv,
		    char *line, size_t size);

#endif
