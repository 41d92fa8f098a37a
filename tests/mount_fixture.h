/* SPDX-License-Identifier: MIT */
/*
 * What the suites of the mounted tree share (test_tree, test_reads,
 * test_readmodes, test_lifecycle, test_hardening): mounts of the real
 * keyfs binary with three purposes and non-default access, and readers of
 * its files.
 *
 * Each of those suites is declared
 *
 *	TestSuite(NAME, .fini = mt_fini);
 *
 * so every daemon a test started is stopped, and any tmpfs detached, when
 * it ends, passed or failed.  Keys are compared in C and never printed:
 * assertion messages name the file, never its content.
 */
#ifndef KT_MOUNT_FIXTURE_H
#define KT_MOUNT_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "helpers.h"
#include "key.h"

#define KEY_LEN KF_KEY_BYTES
#define TEXT_LEN KF_KEY_TEXT_LEN

/* The purposes configured for every mount of start(), in declared order. */
#define N_PURPOSES 3
extern const char *const purposes[N_PURPOSES];
#define PURPOSES_LINE "purposes = phi pii billing\n"

/* Suite .fini: stops every daemon, detaches the tmpfs (if any), wipes and
 * frees what mt_secret gave. */
void mt_fini(void);

/* len bytes of guarded memory for a key or its text, wiped and freed at
 * the end of the test. */
void *mt_secret(size_t len);

/* Seconds on the monotonic clock. */
double now_s(void);

/* Wipes and frees text that may hold a key (NULL is fine). */
void free_secret(char *text, size_t len);

/*
 * A mount in static storage: .fini runs after the test function has
 * returned, so mounts must outlive its stack.  Each test runs in its own
 * process, so the pool starts empty for each.
 */
struct kt_mount *mount_new(void);

/* Rewrites m's configuration: development, no automatic rotation, m's
 * state_dir and master key, mounted on `mountpoint`. */
void config_on(struct kt_mount *m, const char *mountpoint);

/* kt_mount_start, asserting that the tree comes up. */
void start_ok(struct kt_mount *m);

/* A started mount with the purposes above, pii left at root:root 0400,
 * phi 0:2001 0440, billing 1002:2002 0400, and extra_lines (may be NULL)
 * added to [keyfs]. */
struct kt_mount *start(const char *tag, const char *extra_lines);

/* start() with extra_sections (may be NULL) added after the access
 * sections: e.g. more [purpose NAME] sections, which come after the three
 * purposes above. */
struct kt_mount *start_sections(const char *tag, const char *extra_lines,
				const char *extra_sections);

/* open + read + close with plain syscalls (safe in forked children): the
 * bytes read, or -errno. */
ssize_t raw_read(const char *path, char *buf, size_t cap);

/* Reads a key file of the tree: exactly 44 bytes that validate. */
void read_key(struct kt_mount *m, const char *rel, uint8_t key[KEY_LEN]);

/* derive(key, purpose), asserted to succeed. */
void derive(const uint8_t key[KEY_LEN], const char *purpose,
	    uint8_t out[KEY_LEN]);

/* The tree's version (kt_mversion). */
uint32_t read_version(struct kt_mount *m);

/* The tree's status: one line of a JSON object (caller decrefs). */
json_t *read_status(struct kt_mount *m);

/* One write of "1\n" to control/rotate: 0 or -errno. */
int rotate(struct kt_mount *m);

/* rotate, asserted to succeed. */
void rotate_ok(struct kt_mount *m);

/* Sorted names in a folder of the tree, space-separated (malloc'd). */
char *listing(struct kt_mount *m, const char *rel);

/* Expects listing(m, rel) to be want. */
void expect_listing(struct kt_mount *m, const char *rel, const char *want);

/* The audit log's records (state_dir/audit.log) with event `event`. */
json_t *audit_records(struct kt_mount *m, const char *event);

/* The integer field key of o, asserted to be one. */
json_int_t jint(json_t *o, const char *key);

/*
 * Sends SIGUSR1 to m's daemon and waits (up to 5 s) for the line it then
 * logs that starts with `what` (e.g. "requests:", "invalidations:"): the
 * text after `what` (malloc'd), or NULL if no such line came.
 */
char *daemon_line(struct kt_mount *m, const char *what);

/* The N of a word "name=N" in line (from daemon_line), asserted to be
 * there. */
unsigned long line_field(const char *line, const char *name);

/* Drops the kernel's unused dentries and inodes, system-wide (echo 2 >
 * /proc/sys/vm/drop_caches): the kernel then FORGETs what it held. */
void drop_dentries(void);

#endif
