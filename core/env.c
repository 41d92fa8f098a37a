// SPDX-License-Identifier: MIT
/* env: secret environment variables moved into guarded memory. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "env.h"

static const char *const names[KF_ENV_SECRETS] = {
    [KF_ENV_MASTER_KEY] = "KEYFS_MASTER_KEY",
    [KF_ENV_ENCRYPTION_KEY] = "ENCRYPTION_KEY",
    [KF_ENV_ENCRYPTION_KEY_PREVIOUS] = "ENCRYPTION_KEY_PREVIOUS",
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *kept[KF_ENV_SECRETS]; /* sodium_malloc'd, read-only; lock */

const char *kf_env_name(enum kf_env_secret which)
{
	return names[which];
}

/* Moves one variable if the environment has it; call with lock held. */
static int take_one(enum kf_env_secret which)
{
	char *value = getenv(names[which]);
	size_t len;
	char *copy;

	if (!value)
		return 0;
	len = strlen(value);
	copy = sodium_malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, value, len + 1);
	sodium_mprotect_readonly(copy);
	/*
	 * unsetenv only drops the pointer: the bytes would stay in the
	 * process's environment block (/proc/PID/environ) or in setenv's
	 * heap copy.  Wipe them where they are first.
	 */
	sodium_memzero(value, len);
	unsetenv(names[which]);
	if (kept[which])
		sodium_free(kept[which]);
	kept[which] = copy;
	return 0;
}

int kf_env_take(void)
{
	int r = 0;

	if (sodium_init() < 0)
		return -EIO;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < KF_ENV_SECRETS && r == 0; i++)
		r = take_one((enum kf_env_secret)i);
	pthread_mutex_unlock(&lock);
	return r;
}

const char *kf_env_get(enum kf_env_secret which)
{
	const char *v;

	if (sodium_init() < 0)
		return NULL;
	pthread_mutex_lock(&lock);
	/* Out of memory leaves the variable where it was: it is still read. */
	if (take_one(which) < 0)
		v = getenv(names[which]);
	else
		v = kept[which];
	pthread_mutex_unlock(&lock);
	return v;
}

void kf_env_forget(void)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < KF_ENV_SECRETS; i++) {
		if (kept[i])
			sodium_free(kept[i]);
		kept[i] = NULL;
	}
	pthread_mutex_unlock(&lock);
}

char *const *kf_env_child(void)
{
	static char path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
	static char *const env[] = {path, NULL};

	return env;
}
