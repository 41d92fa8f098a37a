// SPDX-License-Identifier: MIT
/*
 * crash_hook: linked only into build/tests/keyfs-crash, the test build of
 * the keyfs command (core with FIU_ENABLE, so its crash points are libfiu
 * points, util.h), for tests/test_crash.c.  Never installed.
 *
 * Before main, it reads three variables and takes every crash point
 * ("keyfs/crash/...") with one libfiu callback:
 *
 *   KEYFS_CRASH_ARM=PATH    a point counts only while PATH exists, so the
 *                           start-up's own commits are passed over until
 *                           the test creates it (unset: always counts);
 *   KEYFS_CRASH_TRACE=PATH  every point that counts is appended to PATH,
 *                           one name a line: what an operation reaches;
 *   KEYFS_CRASH_AT=NAME:K   kill -9 at the K-th counted hit of point NAME.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fiu-control.h>
#include <fiu.h>

#include "util.h"

static const char *arm_path;
static const char *trace_path;
static char target[128];
static long target_hit;
static atomic_long hits;

static int on_point(const char *wildcard, int *failnum, void **failinfo,
		    unsigned int *flags)
{
	const char *name = kf_crash_at ? kf_crash_at : wildcard;

	(void)failnum;
	(void)failinfo;
	(void)flags;
	if (arm_path && access(arm_path, F_OK) != 0)
		return 0;
	if (trace_path) {
		char line[160];
		int n = snprintf(line, sizeof(line), "%s\n", name);
		int fd = open(trace_path,
			      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (fd >= 0) {
			if (n > 0 && write(fd, line, (size_t)n) < 0)
				n = 0;
			close(fd);
		}
	}
	if (target[0] && strcmp(name, target) == 0 &&
	    atomic_fetch_add(&hits, 1) + 1 == target_hit)
		kill(getpid(), SIGKILL);
	/* Never a failure: the point either kills or lets the step go on. */
	return 0;
}

__attribute__((constructor)) static void crash_hook_init(void)
{
	const char *at = getenv("KEYFS_CRASH_AT");
	const char *colon = at ? strrchr(at, ':') : NULL;

	arm_path = getenv("KEYFS_CRASH_ARM");
	trace_path = getenv("KEYFS_CRASH_TRACE");
	if (colon && (size_t)(colon - at) < sizeof(target)) {
		memcpy(target, at, (size_t)(colon - at));
		target[colon - at] = 0;
		target_hit = strtol(colon + 1, NULL, 10);
	}
	if (!trace_path && !target[0])
		return;
	if (fiu_init(0) != 0 ||
	    fiu_enable_external("keyfs/crash/*", 1, NULL, 0, on_point) != 0) {
		fprintf(stderr, "keyfs-crash: cannot set up libfiu\n");
		_exit(127);
	}
}
