// SPDX-License-Identifier: MIT
/*
 * The sidecar: keyfs mounts its tree under a directory with shared
 * propagation (the volume, Bidirectional for the mounting sidecar), and
 * readers in other mount namespaces (slaves of it, HostToContainer) read the
 * keys, see rotations, and get the same permission checks.
 *
 * The reader namespace is made persistent (`unshare --mount=FILE`, bound on
 * a file in a private bind mount) so the same namespace can be entered with
 * nsenter before and after a rotation, and can be created before the keyfs
 * mount exists.  Everything is unmounted in .fini, on failure too.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

struct sidecar {
	struct kt_mount m;
	char *nsdir;  /* private bind mount holding the namespace file */
	char *nsfile; /* the reader's persistent mount namespace */
	bool volume_bound, nsdir_bound, ns_bound;
};

static struct sidecar S;

static void sidecar_cleanup(void)
{
	/* The daemon unmounts its tree; the propagation takes it away in
	 * the reader namespace too. */
	kt_mount_cleanup_all();
	if (S.ns_bound)
		kt_runf(NULL, NULL, "umount '%s'", S.nsfile);
	if (S.nsdir_bound)
		kt_runf(NULL, NULL, "umount -l '%s'", S.nsdir);
	if (S.volume_bound) {
		if (S.m.mnt && kt_is_mounted(S.m.mnt))
			kt_runf(NULL, NULL, "umount -l '%s'", S.m.mnt);
		kt_runf(NULL, NULL, "umount -l '%s'", S.m.dir);
	}
	S.ns_bound = S.nsdir_bound = S.volume_bound = false;
}

/*
 * Configures the tree and turns its scratch directory (which holds mnt/)
 * into the shared volume: bound on itself, in a peer group of its own.
 */
static void volume_prepare(const char *tag)
{
	int rc;

	kt_mount_config(&S.m, tag, NULL,
			"[purpose phi]\naccess = 0:2001 0440\n");
	rc = kt_runf(NULL, NULL, "mount --bind '%s' '%s'", S.m.dir, S.m.dir);
	cr_assert_eq(rc, 0, "mount --bind of the volume failed");
	S.volume_bound = true;
	rc = kt_runf(NULL, NULL,
		     "mount --make-private '%s' && "
		     "mount --make-shared '%s'",
		     S.m.dir, S.m.dir);
	cr_assert_eq(rc, 0, "mount --make-shared of the volume failed");
}

/* Creates the reader's mount namespace, a slave of this one. */
static void reader_ns_create(void)
{
	char *err = NULL;
	int rc;

	S.nsdir = kt_tmpdir("sidecar-ns");
	cr_assert(asprintf(&S.nsfile, "%s/mnt-ns", S.nsdir) > 0);
	/* A namespace file cannot be bound inside a shared mount. */
	rc = kt_runf(NULL, NULL,
		     "mount --bind '%s' '%s' && mount --make-private '%s'",
		     S.nsdir, S.nsdir, S.nsdir);
	cr_assert_eq(rc, 0, "private bind of the namespace directory failed");
	S.nsdir_bound = true;
	kt_write_file(S.nsfile, "", 0600);
	rc = kt_runf(NULL, &err,
		     "unshare --mount='%s' --propagation slave true", S.nsfile);
	cr_assert_eq(rc, 0, "unshare --mount failed: %s", err);
	S.ns_bound = true;
	free(err);
}

/* Runs a shell command inside the reader namespace, from /. */
static int in_reader_ns(char **out, char **err, const char *cmd)
{
	return kt_runf(out, err,
		       "exec nsenter --mount='%s' -- sh -c 'cd / && %s'",
		       S.nsfile, cmd);
}

/* The reader namespace really is another one. */
static void assert_other_namespace(void)
{
	char *here = NULL, *there = NULL;

	cr_assert_eq(kt_runf(&here, NULL, "readlink /proc/self/ns/mnt"), 0);
	cr_assert_eq(in_reader_ns(&there, NULL, "readlink /proc/self/ns/mnt"),
		     0);
	cr_assert(here[0] && there[0] && strcmp(here, there) != 0,
		  "the reader runs in this mount namespace (%s)", here);
	free(here);
	free(there);
}

/* The reader sees the keyfs mount in its own mount table. */
static void assert_reader_sees_mount(void)
{
	char *cmd, *err = NULL;
	int rc;

	cr_assert(asprintf(&cmd,
			   "grep -q \" %s fuse.keyfs \" /proc/self/mounts",
			   S.m.mnt) > 0);
	rc = in_reader_ns(NULL, &err, cmd);
	cr_assert_eq(rc, 0, "keyfs mount not in the reader's namespace: %s",
		     err);
	free(cmd);
	free(err);
}

/* What the reader (as `who`, setpriv words, or NULL for root) reads. */
static char *reader_read(const char *who, const char *rel, int *rc)
{
	char *cmd, *out = NULL, *err = NULL;

	cr_assert(asprintf(&cmd, "%s%s%scat \"%s/%s\"", who ? "setpriv " : "",
			   who ? who : "", who ? " -- " : "", S.m.mnt,
			   rel) > 0);
	*rc = in_reader_ns(&out, &err, cmd);
	if (*rc != 0) {
		free(out);
		out = err;
	} else {
		free(err);
	}
	free(cmd);
	return out;
}

/* The reader reads rel; it must equal what this namespace reads. */
static char *reader_must_read(const char *who, const char *rel)
{
	char *mine = kt_mread(&S.m, rel, NULL), *theirs;
	int rc;

	cr_assert_not_null(mine, "cannot read %s in the daemon's namespace",
			   rel);
	theirs = reader_read(who, rel, &rc);
	cr_assert_eq(rc, 0, "reader (%s) cannot read %s: %s",
		     who ? who : "root", rel, theirs);
	cr_assert(strcmp(mine, theirs) == 0,
		  "reader (%s) reads another %s than the daemon's namespace",
		  who ? who : "root", rel);
	free(mine);
	return theirs;
}

/* A root rotation in the daemon's namespace reaches the reader. */
static void assert_reader_sees_rotation(const char *who)
{
	char *v1, *k1, *v2, *k2;

	v1 = reader_must_read(NULL, "version");
	k1 = reader_must_read(who, "derived/phi");
	cr_assert_eq(kt_mwrite(&S.m, "control/rotate", "1\n"), 0,
		     "rotation in the daemon's namespace failed");
	v2 = reader_must_read(NULL, "version");
	k2 = reader_must_read(who, "derived/phi");
	cr_assert_eq(strtol(v2, NULL, 10), strtol(v1, NULL, 10) + 1,
		     "reader saw version %s after rotating from %s", v2, v1);
	cr_assert(strlen(k2) == 44 && strcmp(k1, k2) != 0,
		  "reader still reads the old derived/phi after a rotation");
	free(v1);
	free(k1);
	free(v2);
	free(k2);
}

Test(sidecar, reader_namespace_made_after_mount_sees_rotation,
     .fini = sidecar_cleanup, .timeout = 60)
{
	volume_prepare("sidecar-after");
	cr_assert_eq(kt_mount_start(&S.m, NULL), 0, "mount failed; see %s",
		     S.m.log);
	reader_ns_create();
	assert_other_namespace();
	assert_reader_sees_mount();
	assert_reader_sees_rotation(NULL);
}

Test(sidecar, reader_namespace_made_before_mount_receives_it,
     .fini = sidecar_cleanup, .timeout = 60)
{
	int rc;
	char *out;

	volume_prepare("sidecar-before");
	reader_ns_create();
	assert_other_namespace();
	/* Nothing mounted yet: the reader sees the empty directory. */
	out = reader_read(NULL, "version", &rc);
	cr_assert_neq(rc, 0, "version readable before the mount");
	free(out);

	cr_assert_eq(kt_mount_start(&S.m, NULL), 0, "mount failed; see %s",
		     S.m.log);
	assert_reader_sees_mount();
	assert_reader_sees_rotation(NULL);

	/* The unmount propagates too: no stale tree left in the reader. */
	cr_assert_eq(kt_mount_stop(&S.m), 0, "daemon did not exit cleanly");
	out = reader_read(NULL, "version", &rc);
	cr_assert_neq(rc, 0, "reader still sees a tree after the unmount");
	free(out);
}

Test(sidecar, app_user_in_reader_namespace_reads_its_key,
     .fini = sidecar_cleanup, .timeout = 60)
{
	const char *app = "--reuid=1001 --regid=2001 --groups=2001";
	const char *other = "--reuid=1002 --regid=2002 --groups=2002";
	char *out;
	int rc;

	volume_prepare("sidecar-app");
	reader_ns_create();
	cr_assert_eq(kt_mount_start(&S.m, NULL), 0, "mount failed; see %s",
		     S.m.log);
	assert_reader_sees_mount();
	assert_reader_sees_rotation(app);

	/* The kernel checks the same owner, group and mode there. */
	out = reader_read(other, "derived/phi", &rc);
	cr_assert(rc != 0 && kt_contains(out, "Permission denied"),
		  "uid 1002 in the reader namespace read derived/phi");
	free(out);
	out = reader_read(app, "current", &rc);
	cr_assert(rc != 0 && kt_contains(out, "Permission denied"),
		  "uid 1001 in the reader namespace read current");
	free(out);
}
