/* SPDX-License-Identifier: MIT */
/*
 * env: the secrets that may arrive in the environment (KEYFS_MASTER_KEY,
 * ENCRYPTION_KEY, ENCRYPTION_KEY_PREVIOUS), kept out of every child process.
 *
 * The environment is inherited by every program a process starts, and is
 * readable in /proc/PID/environ: a key left there reaches alert_command, the
 * fusermount3 fallback and anything they run.  So each secret variable is
 * moved, the first time it is seen, into guarded memory (sodium_malloc), its
 * bytes in the environment are wiped and the variable is unset.  `keyfs`
 * calls kf_env_take() first thing; readers then ask kf_env_get().
 *
 * The environment is process-wide, so this module is too: its table is the
 * one piece of global state in core, guarded by its own mutex.
 */
#ifndef KF_ENV_H
#define KF_ENV_H

#include "util.h"

enum kf_env_secret {
	KF_ENV_MASTER_KEY,		/* KEYFS_MASTER_KEY */
	KF_ENV_ENCRYPTION_KEY,		/* ENCRYPTION_KEY */
	KF_ENV_ENCRYPTION_KEY_PREVIOUS, /* ENCRYPTION_KEY_PREVIOUS */
	KF_ENV_SECRETS,
};

/* The variable's name ("KEYFS_MASTER_KEY", ...). */
const char *kf_env_name(enum kf_env_secret which);

/*
 * Moves every secret variable present in the environment into guarded
 * memory and scrubs it from the environment (bytes wiped, then unset).  A
 * variable set again later replaces the kept value at the next call (or
 * kf_env_get).  Call before any thread starts: setenv/unsetenv are not
 * thread-safe.  0, or -ENOMEM (nothing is left half-moved).
 */
int kf_env_take(void) KF_WUR;

/*
 * The kept value of a secret variable (taking it from the environment
 * first, as kf_env_take): NULL when it was never set, "" when it was set
 * empty.  The string lives in read-only guarded memory until kf_env_forget;
 * never log it.
 */
const char *kf_env_get(enum kf_env_secret which);

/* Wipes and drops every kept value. */
void kf_env_forget(void);

/*
 * The whole environment a child process gets: PATH only
 * ("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), NULL-terminated, static.
 */
char *const *kf_env_child(void);

#endif
