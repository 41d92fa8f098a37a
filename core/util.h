/* SPDX-License-Identifier: MIT */
/*
 * util: error text, time and file helpers shared by every core module.
 *
 * Conventions (STYLE.md): functions that can fail return >= 0 on success and
 * -errno on failure.  A failure that a person must read is described in a
 * caller-supplied buffer of KF_ERR_MAX bytes (`char err[KF_ERR_MAX]`, may be
 * NULL).  Error text never contains key material.
 */
#ifndef KF_UTIL_H
#define KF_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define KF_ERR_MAX 512
#define KF_RFC3339_LEN 20 /* "2024-12-01T12:00:00Z" without the NUL */

#define KF_WUR __attribute__((warn_unused_result))
/* The number of elements of array a. */
#define KF_LEN(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Crash points (README: Tests, the crash matrix).  In a test build of core
 * (FIU_ENABLE) each is the libfiu point "keyfs/crash/<where>", and an
 * enabled one kills the process with SIGKILL there; tests/crash_hook.c
 * arms one at its k-th hit.  The daemon is built without FIU_ENABLE: both
 * macros expand to nothing, not even a call.
 *
 * KF_CRASH("manager/commit/recorded") names a fixed point; KF_CRASH_FILE
 * ("renamed", name) one step of an atomic write of file `name`, as
 * "keyfs/crash/file/<kind>/<step>", kind being state (the keyring),
 * archive (*.json), journal (rekey.journal) or keyfile (the others: master
 * and recovery keys).
 */
#ifdef FIU_ENABLE
/* The point this thread's kf_crash is at: libfiu gives a wildcard's
 * callback the wildcard's name, not the point's. */
extern _Thread_local const char *kf_crash_at;
void kf_crash(const char *point);
void kf_crash_file(const char *step, const char *name);
#define KF_CRASH(where) kf_crash("keyfs/crash/" where)
#define KF_CRASH_FILE(step, name) kf_crash_file(step, name)
#else
#define KF_CRASH(where) ((void)0)
#define KF_CRASH_FILE(step, name) ((void)0)
#endif

/* Writes a formatted message into err (KF_ERR_MAX bytes) unless err is NULL. */
void kf_err_set(char *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes err (if non-NULL) in place with a formatted string. */
void kf_err_prefix(char *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Current wall-clock time in seconds since the epoch. */
int64_t kf_time_now(void);

/* Milliseconds on the monotonic clock (for intervals only). */
int64_t kf_time_mono_ms(void);

/* Formats t as RFC 3339 UTC ("YYYY-MM-DDTHH:MM:SSZ") into buf. */
void kf_time_rfc3339(int64_t t, char buf[KF_RFC3339_LEN + 1]);

/*
 * Parses an RFC 3339 UTC timestamp of exactly the form kf_time_rfc3339 makes.
 * Returns 0 and sets *ret_t, or -EINVAL.
 */
int kf_time_parse_rfc3339(const char *s, int64_t *ret_t) KF_WUR;

/*
 * Writes len bytes of data to dir/name atomically and durably: a temporary
 * file dir/.name.tmp.XXXXXX created O_EXCL|O_NOFOLLOW with `mode`, all bytes
 * written (short writes and EINTR handled), fsync, close, rename over `name`
 * (or, with `exclusive`, link(2) so that an existing name is never replaced:
 * -EEXIST), then fsync of the directory.  Any failure unlinks the temporary
 * file and leaves dir/name as it was.  A failed fsync is never retried.
 */
int kf_file_write_atomic(const char *dir, const char *name, const void *data,
			 size_t len, mode_t mode, int exclusive,
			 char err[KF_ERR_MAX]) KF_WUR;

/*
 * Two-phase form of kf_file_write_atomic: prepare writes and fsyncs the
 * temporary file and returns its name in tmp_name (PATH_MAX bytes); commit
 * renames it over `name` and fsyncs the directory; discard unlinks it.
 * commit returns 0, -errno when the rename failed (nothing changed), or
 * KF_FILE_UNSYNCED (> 0, err says why) when the rename happened but the
 * directory's fsync failed: the new file is in place, its durability is
 * not confirmed.  The caller decides; it must not act as if nothing
 * changed.
 */
#define KF_FILE_UNSYNCED 1
int kf_file_prepare(const char *dir, const char *name, const void *data,
		    size_t len, mode_t mode, char *tmp_name,
		    char err[KF_ERR_MAX]) KF_WUR;
int kf_file_commit(const char *dir, const char *tmp_name, const char *name,
		   char err[KF_ERR_MAX]) KF_WUR;
void kf_file_discard(const char *dir, const char *tmp_name);

/*
 * Removes the temporary files kf_file_prepare leaves when the process dies
 * between prepare and commit (regular files named ".NAME.tmp.<12 hex>")
 * from dir; *ret_removed counts them.  Call only while no writer can be
 * running (the manager holds the state lock).  A missing dir is fine.
 */
int kf_dir_sweep_temp(const char *dir, size_t *ret_removed) KF_WUR;

/*
 * kf_dir_sweep_temp for the temporary files of one name only
 * (".<name>.tmp.<12 hex>"; name NULL: all): for a folder keyfs shares with
 * others, such as the master key file's.
 */
int kf_dir_sweep_temp_of(const char *dir, const char *name,
			 size_t *ret_removed) KF_WUR;

/*
 * Opens path read-only (O_NONBLOCK, so a FIFO never hangs; plus `flags`,
 * e.g. O_NOFOLLOW) and checks it is a regular file.  Returns the fd with
 * its stat in *ret_st, or -errno with the reason in err.
 */
int kf_file_open_regular(const char *path, int flags, struct stat *ret_st,
			 char err[KF_ERR_MAX]) KF_WUR;

/*
 * Reads a whole regular file of at most max bytes (larger: -EFBIG) into a
 * buffer from sodium_malloc (so secrets read this way stay in guarded
 * memory).  The caller frees it with sodium_free.  *ret_len gets its size;
 * *ret_st (may be NULL) the stat of the descriptor that was read, so it
 * describes the very file read (never a path looked up again).
 */
int kf_file_read_all(const char *path, size_t max, uint8_t **ret_buf,
		     size_t *ret_len, struct stat *ret_st,
		     char err[KF_ERR_MAX]) KF_WUR;

/* fsync(2) of a directory by path. */
int kf_dir_fsync(const char *dir) KF_WUR;

/*
 * Creates dir (and missing parents) with `mode` if absent.  If it exists
 * with looser permissions than `mode`, tightens them and sets *ret_tightened
 * (may be NULL).  Refuses a path that exists and is not a directory.
 */
int kf_dir_ensure(const char *dir, mode_t mode, int *ret_tightened,
		  char err[KF_ERR_MAX]) KF_WUR;

/* Joins a and b with one '/' into a new malloc'd string (NULL on ENOMEM). */
char *kf_path_join(const char *a, const char *b);

/*
 * Parses a decimal number made of ASCII digits only (no sign, no space, no
 * "0x"; leading zeros are fine) that is at most max.  0 and *ret, or
 * -EINVAL (empty, other characters) or -ERANGE (above max).
 */
int kf_parse_u64(const char *s, uint64_t max, uint64_t *ret) KF_WUR;

/* Lower-case hex of n bytes into out (2n+1 bytes): sodium_bin2hex. */
void kf_hex(const uint8_t *in, size_t n, char *out);

/*
 * Decodes exactly 2n lower-case hex digits at hex (no separators, nothing
 * after them checked) into n bytes at out: sodium_hex2bin, plus the case
 * rule, so one value has one text.  0 or -EINVAL (out then undefined).
 */
int kf_unhex(const char *hex, uint8_t *out, size_t n) KF_WUR;

/* Whether path is dir or lies below it (both absolute and clean). */
bool kf_path_under(const char *path, const char *dir);

/*
 * Turns off core dumps and ptrace by non-root (PR_SET_DUMPABLE 0,
 * RLIMIT_CORE 0): every keyfs process may hold a key.
 */
void kf_harden_process(void);

/* Little-endian integers in on-disk formats (state, keyring). */
static inline void kf_le_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t kf_le_get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static inline void kf_le_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t kf_le_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

#endif
