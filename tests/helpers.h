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

#endif
