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

#include <jansson.h>

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

/*
 * The README's ```python block that holds `marker` (e.g. "def
 * load_keys"), without its fences (malloc'd); asserts there is one.  The
 * tests run the examples as the README shows them.
 */
char *kt_readme_python(const char *marker);

/* True if haystack contains needle. */
bool kt_contains(const char *haystack, const char *needle);

/* --- files, processes, time ----------------------------------------------- */

/* "dir/name" (malloc'd). */
char *kt_path(const char *dir, const char *name);

/* kt_read_file that asserts the file can be read ("cannot read PATH"). */
char *kt_read_file_ok(const char *path, size_t *len);

/*
 * Writes len bytes (may hold NUL) to path, truncating it; a new file gets
 * `mode` less the umask, an existing one keeps its mode.  Asserts on failure.
 */
void kt_write_bytes(const char *path, const void *data, size_t len,
		    mode_t mode);

/* Copies src to dst byte for byte (a new dst is 0600); asserts. */
void kt_copy_file(const char *src, const char *dst);

/* Removes the last line of the text file at path (asserts it has one). */
void kt_drop_last_line(const char *path);

/* Size of the file at path; asserts that it can be stat'ed. */
off_t kt_file_size(const char *path);

/* The names in dir but "." and "..", sorted, one per line ("" if none);
 * asserts that dir can be read.  malloc'd. */
char *kt_names(const char *dir);

/*
 * Seeds rand() for a test that makes random choices, and returns the seed:
 * $KEYFS_TEST_SEED if set, to replay a failure, else a new one.  Prints it,
 * with the test's name, to standard error.
 */
unsigned kt_seed(void);

/* Sleeps ms milliseconds (resumed after a signal). */
void kt_sleep_ms(int ms);

/* Waits up to ms for the child pid to exit: its wait status, or -1 if it
 * is still running (then it is not reaped). */
int kt_wait_child(pid_t pid, int ms);

/*
 * kt_runf of `setpriv WHO -- CMD` from / (so no inherited directory
 * matters): WHO is setpriv's credential words, e.g. "--reuid=1001
 * --regid=2001 --clear-groups"; CMD is fmt's expansion, split into words by
 * the shell.  Returns and captures as kt_runf.
 */
int kt_run_as(const char *who, char **ret_out, char **ret_err, const char *fmt,
	      ...) __attribute__((format(printf, 4, 5)));

/*
 * Mounts a tmpfs of `size` (mount's size=, e.g. "12k"), mode 0700, on a new
 * kt_tmpdir(tag) and returns that directory (valid until the next call).
 * Give the Test `.fini = kt_tmpfs_cleanup`: one tmpfs per test.
 */
const char *kt_tmpfs(const char *tag, const char *size);

/* Detaches the tmpfs of kt_tmpfs, if any (for a Test's .fini). */
void kt_tmpfs_cleanup(void);

/* --- audit records --------------------------------------------------------
 */

/*
 * The records of the audit log at path from byte `from` on, as a JSON array
 * (caller decrefs).  Asserts that the log can be read, has not shrunk below
 * `from`, ends with a newline, and that every line is a JSON object.
 */
json_t *kt_audit_read(const char *path, size_t from);

/* The string field of o, or "" if it is missing or not a string. */
const char *kt_str_of(json_t *o, const char *field);

/* Whether rec's event is `event` and, unless success < 0, its "success" is
 * the boolean success (0 false, 1 true). */
bool kt_record_is(json_t *rec, const char *event, int success);

/* How many records of recs kt_record_is(rec, event, success). */
size_t kt_count_records(json_t *recs, const char *event, int success);

/* The first record of recs that kt_record_is(...) (borrowed), or NULL. */
json_t *kt_find_record(json_t *recs, const char *event, int success);

/*
 * Whether any record of recs, without its chain MAC, holds the len bytes of
 * needle (the MAC is random-looking text that may hold any short string).
 */
bool kt_records_contain(json_t *recs, const void *needle, size_t len);

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
 * usage_window 0 unless keyfs_lines sets it (usage-aware retire is
 * test_keysets's), then `keyfs_lines` (may be NULL) appended to [keyfs] (later
 * keys may not repeat earlier ones: pass only keys not set here -- mode,
 * read_mode, retain_versions, backup_keep, purposes, alert_command, audit_log,
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
 * to m->log, and waits until the daemon itself answers (up to 15 s): statfs
 * succeeds and `version` opens and reads "N\n" (a stale mount's caches may
 * answer a stat, never these).  Returns 0, or the daemon's exit status (> 0)
 * if it exited first, or -1 on time-out.  The daemon gets SIGTERM if the
 * test process dies.
 */
int kt_mount_start(struct kt_mount *m, const char *env);

/*
 * kt_mount_start, with in_child (may be NULL) called in the forked child
 * just before it executes keyfs: to run the daemon under a restriction.
 */
int kt_mount_start_with(struct kt_mount *m, const char *env,
			void (*in_child)(void));

/*
 * kt_mount_start with another program: bin (NULL: KEYFS_BIN) as the keyfs
 * command, e.g. the crash matrix's build/tests/keyfs-crash, run under
 * wrapper when not NULL (a NULL-terminated argv, e.g. {"strace", "-f",
 * NULL}: m->pid is then the wrapper's).
 */
int kt_mount_start_prog(struct kt_mount *m, const char *env,
			const char *const *wrapper, const char *bin);

/* kt_mount_start, asserting that the tree comes up (naming m->log). */
void kt_mount_start_ok(struct kt_mount *m);

/* A new key from `keyfs genkey` in dir/name, 0600; the path (malloc'd). */
char *kt_genkey_file(const char *dir, const char *name);

/*
 * `keyfs backup verify` of every archive in m's state/backups with the
 * configuration cfg (its master key): how many fail.  Asserts there are at
 * least min archives.
 */
size_t kt_archives_failing(struct kt_mount *m, const char *cfg, size_t min);

/* Starts `keyfs rekey --new-master key -c cfg` (its output to /dev/null)
 * and kills it -9 after delay_us; reaped. */
void kt_rekey_killed(const char *cfg, const char *key, long delay_us);

/* A datagram socket bound at dir/log (a syslog receiver; an old socket
 * there is removed first); the path (malloc'd) in *ret_path. */
int kt_dgram_bind(const char *dir, char **ret_path);

/* One datagram within ms into buf (NUL-terminated): its length or -1. */
ssize_t kt_dgram_receive(int fd, char *buf, size_t cap, int ms);

/* SIGTERM, waits for the daemon; returns its exit status.  Asserts that the
 * mountpoint is no longer mounted. */
int kt_mount_stop(struct kt_mount *m);

/* Stops every daemon this process started (for a Test's .fini). */
void kt_mount_cleanup_all(void);

/* Path of rel inside the mount (malloc'd). */
char *kt_mpath(struct kt_mount *m, const char *rel);

/* Reads a file of the tree (NULL on error, errno set). */
char *kt_mread(struct kt_mount *m, const char *rel, size_t *len);

/*
 * The tree's status without its "audit" object (which counts every
 * record, a refused operation's too) and its "usage" object (which every
 * read of a key changes), as sorted compact JSON (malloc'd), or
 * NULL: what must not change when an operation is refused.
 */
char *kt_mstatus_keys(struct kt_mount *m);

/* One write(2) of text to a file of the tree: 0, or -errno. */
int kt_mwrite(struct kt_mount *m, const char *rel, const char *text);

/* True if path is a mountpoint in /proc/self/mounts (any characters). */
bool kt_is_mounted(const char *path);

/* Runs `fusermount3 -uz -- path`, no shell: path may hold any character. */
void kt_unmount(const char *path);

/* One write(2) of len bytes (may hold NUL) to a file of the tree: 0, or
 * -errno, or -EIO for a short write. */
int kt_mwrite_raw(struct kt_mount *m, const char *rel, const void *buf,
		  size_t len);

/* Runs `keyfs ctl ARGS --mount MNT` (args: shell words, e.g. "retire 2");
 * returns and captures as kt_runf. */
int kt_ctl(struct kt_mount *m, char **ret_out, char **ret_err,
	   const char *args);

/* True if rel exists in the tree (stat succeeds). */
bool kt_mexists(struct kt_mount *m, const char *rel);

/* The tree's names in rel, as kt_names (malloc'd). */
char *kt_mnames(struct kt_mount *m, const char *rel);

/* The number in the tree's version file; asserts that it reads "N\n" with
 * N > 0. */
long kt_mversion(struct kt_mount *m);

/* Size of m's audit log (state_dir/audit.log), 0 if there is none yet: a
 * mark for kt_audit_since. */
size_t kt_audit_size(struct kt_mount *m);

/* kt_audit_read of m's audit log (state_dir/audit.log) from byte `from`. */
json_t *kt_audit_since(struct kt_mount *m, size_t from);

#endif
