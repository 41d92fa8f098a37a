/* SPDX-License-Identifier: MIT */
/*
 * The fixture of the manager's unit tests (test_startup, test_rotation,
 * test_archives, test_offline, test_status, test_manager), without a mount.
 *
 * Each of those suites is declared
 *
 *	TestSuite(NAME, .init = fx_init, .fini = fx_fini);
 *
 * so every test starts with the key variables out of the environment and
 * with standard error captured, and ends -- passed or failed -- with every
 * manager closed, every fixture, snapshot and key freed (keys wiped), the
 * tmpfs of kt_tmpfs detached, and what core logged handed to the leak check.
 * A test that provokes a failure asserts the alert line core logs for it
 * (fx_expect_alert); nothing of it reaches the terminal.
 *
 * Keys are compared with sodium_memcmp and named in messages, never shown.
 */
#ifndef KT_MANAGER_FIXTURE_H
#define KT_MANAGER_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "backup.h"
#include "config.h"
#include "key.h"
#include "manager.h"

#define KVE_NONE "KeyValidationError: No current encryption key available"
#define KVE_LOAD "KeyValidationError: Failed to load keys"
#define KBE_RESTORE "KeyBackupError: Failed to restore keys:"

/* The caller every operation of these tests is made for. */
extern const struct kf_caller fx_who;

/* --- life of a test ------------------------------------------------------ */

/* Suite .init: sodium, the key variables saved and cleared, standard error
 * captured. */
void fx_init(void);

/* Suite .fini: runs every deferred clean-up (newest first), detaches the
 * tmpfs, records the captured standard error, restores the environment. */
void fx_fini(void);

/* Runs fn(p) at the end of the test, pass or fail; returns p. */
void *fx_defer(void (*fn)(void *), void *p);

/* Runs p's deferred clean-up now, and not again at the end. */
void fx_release(void *p);

/* fx_defer(free, p): malloc'd p is freed at the end of the test. */
void *fx_own(void *p);

/* The same for text that may hold a key: wiped, then freed. */
char *fx_own_secret(char *text);

/* Unsets the key variables and forgets what core took from them. */
void fx_clear_env(void);

/* --- a configuration whose every path is in one scratch directory -------- */

struct fx {
	char *dir;
	char *state_file; /* dir/state/keyring */
	char *backups;	  /* dir/backups */
	char *master;	  /* dir/master.key */
	char *audit;	  /* the audit log */
	struct kf_config *cfg;
	struct kf_manager *m; /* from open_ok until fx_close, else NULL */
};

/*
 * A new fixture in kt_tmpdir(tag): `mode` (development or production),
 * the audit log at audit_log (NULL: dir/audit.log), rotate_interval 0
 * unless `extra` (may be NULL; more [keyfs] lines) sets it.  Closed and
 * freed by fx_fini.
 */
struct fx *fx_new(const char *tag, const char *mode, const char *audit_log,
		  const char *extra);

/* Opens f's manager (asserts it opens) into f->m, and returns it. */
struct kf_manager *open_ok(struct fx *f);

/* Closes f->m. */
void fx_close(struct fx *f);

/* Closes f->m and opens it again (a restart); the new manager. */
struct kf_manager *fx_reopen(struct fx *f);

/* Opens, expecting failure (no manager, a message); the code, and err
 * gets the message. */
int open_fails(struct fx *f, char err[KF_ERR_MAX], const char *what);

/* Writes a new master key file (text form + newline, 0600) at f->master. */
void write_master(struct fx *f);

/* Rotates (asserts it succeeds); *ret_version (may be NULL) the version. */
void rotate_ok(struct kf_manager *m, uint32_t *ret_version);

/* The current version of m's keyring. */
uint32_t current_version(struct kf_manager *m);

/* --- what core logs ------------------------------------------------------ */

/* Where the captured standard error stands: a mark for fx_log_since. */
size_t fx_log_mark(void);

/* What was logged since mark (valid until the next call). */
const char *fx_log_since(size_t mark);

/*
 * Asserts that a line beginning "keyfs: alert: " and then fmt's expansion
 * was logged after the alert the previous call found, and moves past it.
 */
void fx_expect_alert(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* --- keys ---------------------------------------------------------------- */

/* A new random key and its text form, in guarded memory wiped at the end. */
struct fx_key {
	uint8_t raw[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 1];
};

struct fx_key *fx_key_new(void);

/* True if text holds key's text form, standard base64 or hex (or any of
 * them without its padding). */
bool holds_key(const char *text, const uint8_t key[KF_KEY_BYTES]);

/* --- the keyring --------------------------------------------------------- */

/* Every version held by a keyring, with its key bytes (guarded memory). */
#define SNAP_MAX 64
struct snap {
	size_t n;
	uint32_t highest;
	uint32_t version[SNAP_MAX];
	int64_t created[SNAP_MAX];
	uint8_t key[SNAP_MAX][KF_KEY_BYTES];
};

/* m's keyring now; freed by snap_free or at the end of the test. */
struct snap *snap_take(struct kf_manager *m);

/* Frees s now (NULL is fine). */
void snap_free(struct snap *s);

/* Same versions, creation times and keys. */
bool snap_same(const struct snap *a, const struct snap *b);

/* Index of version v in s, or -1. */
int snap_find(const struct snap *s, uint32_t v);

/* --- files --------------------------------------------------------------- */

/* True if path exists (lstat). */
bool exists(const char *path);

/* True if s starts with prefix. */
bool starts_with(const char *s, const char *prefix);

/* True if the file at path holds exactly the len bytes of data. */
bool same_file(const char *path, const char *data, size_t len);

/* Entries of dir whose names start with prefix and end with suffix (each
 * may be NULL); 0 if dir cannot be read. */
size_t count_files(const char *dir, const char *prefix, const char *suffix);

/* kf_path_join(dir, name), freed at the end of the test. */
char *fx_path(const char *dir, const char *name);

/* The name of the newest archive holding key_version v ("" if none). */
void backup_with_version(struct kf_manager *m, uint32_t v,
			 char name[KF_BACKUP_NAME_MAX + 6]);

/* --- audit records ------------------------------------------------------- */

/* The last record with event (borrowed), or NULL. */
json_t *last_record(json_t *recs, const char *event);

/* Field `name` of o, asserted to be of that type (`what` names o). */
json_int_t int_field(json_t *o, const char *name, const char *what);
const char *str_field(json_t *o, const char *name, const char *what);
bool bool_field(json_t *o, const char *name, const char *what);

/* Asserts timestamp, seq, chain, event, success, error on failure, and
 * uid, gid, pid (those of w when w is not NULL). */
void assert_common(json_t *o, const struct kf_caller *w, const char *what);

/* The last record of event in recs (borrowed), asserted (assert_common)
 * to be there and a success, made for w (NULL: any caller). */
json_t *last_success(json_t *recs, const char *event,
		     const struct kf_caller *w);

/* Asserts that f's audit log verifies, end checked. */
void verify_audit_ok(struct fx *f);

#endif
