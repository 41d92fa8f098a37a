/* SPDX-License-Identifier: MIT */
/*
 * Test helpers shared by every Criterion file.
 *
 * Every error stream captured from a command goes through kt_run, which
 * appends it to $KEYFS_TEST_LEAKDIR, so the final leak check can
 * prove that no key's text form was ever printed.  Scratch directories come
 * from kt_tmpdir, under $KEYFS_TEST_TMP, kept until that check has run.
 */
#ifndef KT_HELPERS_H
#define KT_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A new empty directory (0700) for one test; malloc'd path. */
char *kt_tmpdir(const char *tag);

/* Path of the keyfs binary under test ($KEYFS_BIN). */
const char *kt_keyfs(void);

/* Source tree root ($KEYFS_SRCDIR). */
const char *kt_srcdir(void);

/*
 * Runs `cmd` with /bin/sh -c, feeding `input` (may be NULL) on standard
 * input.  Returns the exit status (128 + signal if killed, -1 if it could not
 * run).  *ret_out and *ret_err (each may be NULL) get malloc'd NUL-terminated
 * captures.  Standard error is appended to the leak directory (standard
 * output may carry a key by design: genkey, derive, a cat of a key file).
 */
int kt_run(const char *cmd, const char *input, char **ret_out, char **ret_err);

/* printf-style kt_run with no input; captures as kt_run. */
int kt_runf(char **ret_out, char **ret_err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads a whole file (NULL if it cannot); *len may be NULL. malloc'd. */
char *kt_read_file(const char *path, size_t *len);

/* Writes text to path with mode (asserts on failure). */
void kt_write_file(const char *path, const char *text, mode_t mode);

/* Appends arbitrary captured text to the leak directory under `tag`. */
void kt_leak_record(const char *tag, const char *text, size_t len);

/* True if haystack contains needle. */
bool kt_contains(const char *haystack, const char *needle);

/* --- mounted trees: the real keyfs binary ----------------------------------
 */

struct kt_mount {
	char *dir; /* scratch directory (0755): keyfs.ini, state/, mnt/, log */
	char *mnt; /* mountpoint: dir/mnt */
	char *cfg; /* dir/keyfs.ini */
	char *log; /* the daemon's standard error: dir/daemon.log */
	char *state; /* dir/state */
	pid_t pid;   /* the daemon (keyfs mount -f), 0 when stopped */
};

/*
 * Prepares m in a new scratch directory: a development configuration with
 * state_dir, master_key_file and mountpoint inside it, rotate_interval 0,
 * then `keyfs_lines` (may be NULL) appended to [keyfs] (later keys may not
 * repeat earlier ones: pass only keys not set here -- mode, read_mode,
 * retain_versions, backup_keep, purposes, alert_command, audit_log,
 * backup_dir ... are free; to change rotate_interval or mode use
 * kt_mount_config_full), and `sections` (may be NULL) appended at the end.
 */
void kt_mount_config(struct kt_mount *m, const char *tag,
		     const char *keyfs_lines, const char *sections);

/* Like kt_mount_config but writes the whole [keyfs] body (state_dir,
 * master_key_file and mountpoint are still added). */
void kt_mount_config_full(struct kt_mount *m, const char *tag,
			  const char *keyfs_body, const char *sections);

/*
 * Starts `keyfs mount -f -c CFG` in the background with `env` (may be NULL;
 * "NAME=value NAME2=value" words added to the environment), standard error
 * to m->log, and waits until the tree answers (up to 15 s).  Returns 0, or
 * the daemon's exit status (> 0) if it exited first, or -1 on time-out.  The
 * daemon gets SIGTERM if the test process dies.
 */
int kt_mount_start(struct kt_mount *m, const char *env);

/* SIGTERM, waits for the daemon; returns its exit status.  Asserts that the
 * mountpoint is no longer mounted. */
int kt_mount_stop(struct kt_mount *m);

/* Stops every daemon this process started (for a Test's .fini). */
void kt_mount_cleanup_all(void);

/* Path of rel inside the mount (malloc'd). */
char *kt_mpath(struct kt_mount *m, const char *rel);

/* Reads a file of the tree (NULL on error, errno set). */
char *kt_mread(struct kt_mount *m, const char *rel, size_t *len);

/* One write(2) of text to a file of the tree: 0, or -errno. */
int kt_mwrite(struct kt_mount *m, const char *rel, const char *text);

/* True if path is a mountpoint in /proc/self/mounts. */
bool kt_is_mounted(const char *path);

#endif
