// SPDX-License-Identifier: MIT
/*
 * The daemon's life cycle, against the real keyfs binary: SIGTERM and
 * SIGINT unmount and exit 0 (idle or busy), a stale mount left by kill -9
 * is cleared at the next start (even on a mountpoint that needs quoting,
 * through fusermount3), a second daemon on a live mountpoint is refused,
 * and automatic rotation counts from the key's creation across restarts.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sodium.h>

#include "mount_fixture.h"

TestSuite(lifecycle, .fini = mt_fini);

/* --- life cycle ----------------------------------------------------------- */

/* A child reading current in a loop; returns its pid once it has read. */
static pid_t busy_reader(struct kt_mount *m, atomic_ulong **ret_count)
{
	atomic_ulong *count = mmap(NULL, sizeof(*count), PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *path = kt_mpath(m, "current");
	pid_t pid;

	cr_assert(count != MAP_FAILED);
	atomic_store(count, 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		char buf[64];
		double end = now_s() + 20;

		while (now_s() < end)
			if (raw_read(path, buf, sizeof(buf)) == TEXT_LEN)
				atomic_fetch_add(count, 1);
		sodium_memzero(buf, sizeof(buf));
		_exit(0);
	}
	free(path);
	for (int i = 0; i < 500 && atomic_load(count) < 100; i++)
		kt_sleep_ms(10);
	cr_assert(atomic_load(count) >= 100, "the reader loop is not reading");
	*ret_count = count;
	return pid;
}

/* Sends sig to the daemon; asserts it exits 0 and unmounts. */
static void stop_with(struct kt_mount *m, int sig, bool busy)
{
	atomic_ulong *count = NULL;
	json_t *list = audit_records(m, "unmount");
	size_t unmounts = json_array_size(list);
	pid_t reader = busy ? busy_reader(m, &count) : 0;
	int st;

	json_decref(list);
	cr_assert(kill(m->pid, sig) == 0);
	st = kt_wait_child(m->pid, 10000);
	if (st < 0) {
		kill(m->pid, SIGKILL);
		waitpid(m->pid, NULL, 0);
	}
	m->pid = 0;
	if (reader) {
		kill(reader, SIGKILL);
		waitpid(reader, NULL, 0);
		munmap(count, sizeof(*count));
	}
	cr_assert(st >= 0, "daemon did not exit within 10 s of signal %d (%s)",
		  sig, busy ? "busy" : "idle");
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "daemon ended with status %#x on signal %d", st, sig);
	cr_expect(!kt_is_mounted(m->mnt), "still mounted after signal %d", sig);
	list = audit_records(m, "unmount");
	cr_expect(json_array_size(list) == unmounts + 1,
		  "no unmount audit record for signal %d", sig);
	json_decref(list);
}

Test(lifecycle, sigterm_unmounts_and_exits_0, .timeout = 60)
{
	struct kt_mount *m = start("sigterm", NULL);

	cr_expect(kt_mount_stop(m) == 0, "SIGTERM while idle: exit not 0");
	start_ok(m);
	stop_with(m, SIGTERM, true);
}

Test(lifecycle, sigint_unmounts_and_exits_0, .timeout = 60)
{
	struct kt_mount *m = start("sigint", NULL);

	stop_with(m, SIGINT, false);
	start_ok(m);
	stop_with(m, SIGINT, true);
}

/*
 * In the daemon's child before exec: umount2(path, MNT_DETACH) -- the
 * daemon's own unmount -- fails with EPERM, as for a daemon without
 * CAP_SYS_ADMIN, so it must fall back to fusermount3.  fusermount3 itself
 * unmounts with MNT_DETACH | UMOUNT_NOFOLLOW and is let through.
 */
static void deny_own_umount(void)
{
	struct sock_filter code[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		     offsetof(struct seccomp_data, arch)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		     offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_umount2, 0, 3),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		     offsetof(struct seccomp_data, args[1])),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MNT_DETACH, 0, 1),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof(code) / sizeof(code[0]), code};

	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		_exit(126);
}

/*
 * A mountpoint named with a single quote and a space, and a daemon that
 * must unmount through fusermount3: after kill -9 the stale mount is
 * cleared and the tree remounts; SIGTERM unmounts it; a second daemon on
 * the live mount is refused.
 */
Test(lifecycle, quoted_mountpoint_is_cleared_after_kill_9_and_remounts,
     .timeout = 60)
{
	struct kt_mount *m = mount_new(), *b = mount_new();
	struct statvfs sv;
	char *p;
	uint32_t v;
	int r;

#if !defined(__x86_64__)
	cr_skip_test("the seccomp filter here is written for x86-64");
#endif
	kt_mount_config(m, "quoted", NULL, NULL);
	cr_assert(rmdir(m->mnt) == 0);
	free(m->mnt);
	cr_assert(asprintf(&m->mnt, "%s/it's a mnt", m->dir) > 0);
	cr_assert(mkdir(m->mnt, 0755) == 0);
	config_on(m, m->mnt);
	r = kt_mount_start_with(m, NULL, deny_own_umount);
	cr_assert(r == 0, "no mount on \"%s\" (%d); log in %s", m->mnt, r,
		  m->log);
	rotate_ok(m);
	v = read_version(m);

	cr_assert(kill(m->pid, SIGKILL) == 0);
	waitpid(m->pid, NULL, 0);
	m->pid = 0;
	errno = 0;
	cr_assert(statvfs(m->mnt, &sv) < 0 && errno == ENOTCONN,
		  "kill -9 left no stale mount on \"%s\"", m->mnt);

	r = kt_mount_start_with(m, NULL, deny_own_umount);
	cr_assert(r == 0,
		  "the stale mount on \"%s\" was not cleared (%d); log in %s",
		  m->mnt, r, m->log);
	cr_expect(read_version(m) == v, "the restarted daemon serves %u",
		  (unsigned)read_version(m));

	/* The same mountpoint, live: a second daemon is refused. */
	kt_mount_config(b, "quoted-b", NULL, NULL);
	free(b->cfg);
	b->cfg = strdup(m->cfg);
	r = kt_mount_start(b, NULL);
	cr_expect(r > 0, "a second daemon mounted on \"%s\" (%d)", m->mnt, r);
	p = kt_read_file(b->log, NULL);
	cr_expect(kt_contains(p, "already mounted"),
		  "the second daemon did not say the mountpoint is in use");
	free(p);

	cr_expect(kt_mount_stop(m) == 0,
		  "SIGTERM did not unmount \"%s\" cleanly", m->mnt);
}

Test(lifecycle, second_mount_on_same_mountpoint_is_refused, .timeout = 60)
{
	struct kt_mount *a = start("twice", NULL), *b = mount_new(),
			*c = mount_new();
	char *log, line[8192], dev[256], dir[4096];
	unsigned mounts = 0;
	FILE *f;
	int r;

	/* Another state directory, the same mountpoint. */
	kt_mount_config(b, "twice-b", NULL, NULL);
	config_on(b, a->mnt);
	r = kt_mount_start(b, NULL);
	cr_expect(r > 0, "a second daemon on %s did not exit (%d)", a->mnt, r);
	log = kt_read_file(b->log, NULL);
	cr_expect(kt_contains(log, a->mnt), "the refusal does not name %s",
		  a->mnt);
	free(log);

	/* The very same configuration again. */
	kt_mount_config(c, "twice-c", NULL, NULL);
	free(c->cfg);
	c->cfg = strdup(a->cfg);
	r = kt_mount_start(c, NULL);
	cr_expect(r > 0, "the same configuration mounted twice (%d)", r);

	f = fopen("/proc/self/mounts", "r");
	cr_assert(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%255s %4095s", dev, dir) == 2 &&
		    strcmp(dir, a->mnt) == 0)
			mounts++;
	fclose(f);
	cr_expect(mounts == 1, "%u mounts on %s", mounts, a->mnt);
	cr_expect(read_version(a) >= 1);
	cr_expect(kt_mount_stop(a) == 0, "the first daemon did not stop");
}

/* --- automatic rotation --------------------------------------------------- */

/* Waits up to ms for version to exceed v; the version seen. */
static uint32_t wait_version_above(struct kt_mount *m, uint32_t v, int ms)
{
	uint32_t now = read_version(m);

	for (int waited = 0; now <= v && waited < ms; waited += 100) {
		kt_sleep_ms(100);
		now = read_version(m);
	}
	return now;
}

static bool has_automatic_rotation(struct kt_mount *m, uint32_t above)
{
	json_t *list = audit_records(m, "key_rotation");
	bool found = false;

	for (size_t i = 0; i < json_array_size(list) && !found; i++) {
		json_t *r = json_array_get(list, i);

		found = json_is_true(json_object_get(r, "automatic")) &&
			json_is_true(json_object_get(r, "success")) &&
			jint(r, "key_version") > above;
	}
	json_decref(list);
	return found;
}

Test(lifecycle, automatic_rotation_by_interval, .timeout = 30)
{
	struct kt_mount *m = mount_new();
	uint32_t v0, v1;

	kt_mount_config_full(
	    m, "auto", "mode = development\nrotate_interval = 2s\n", NULL);
	start_ok(m);
	v0 = read_version(m);
	v1 = wait_version_above(m, v0, 5000);
	cr_assert(v1 > v0, "no automatic rotation within 5 s (version %u)",
		  (unsigned)v1);
	cr_expect(has_automatic_rotation(m, v0),
		  "no key_rotation record with \"automatic\":true");
}

Test(lifecycle, automatic_rotation_counts_across_restarts, .timeout = 60)
{
	struct kt_mount *m = mount_new();
	double started;
	uint32_t v0, v1;
	json_t *s;

	kt_mount_config_full(m, "autorestart",
			     "mode = development\nrotate_interval = 4s\n",
			     NULL);
	start_ok(m);
	started = now_s();
	v0 = read_version(m);
	cr_assert(kt_mount_stop(m) == 0);
	/* Only a key that came due while no daemon ran proves anything. */
	if (has_automatic_rotation(m, v0))
		cr_skip_test("the key came due before the daemon stopped");
	/* The key is now overdue: created + 4 s has passed while down. */
	kt_sleep_ms((int)((started + 5.2 - now_s()) * 1000));
	start_ok(m);
	started = now_s();
	/* A daemon counting from its own start would wait 4 s. */
	v1 = wait_version_above(m, v0, 2000);
	cr_expect(v1 > v0,
		  "an overdue key was not rotated soon after start "
		  "(%.1f s, version %u)",
		  now_s() - started, (unsigned)v1);
	cr_expect(has_automatic_rotation(m, v0),
		  "no key_rotation record with \"automatic\":true");
	s = read_status(m);
	cr_expect(json_is_string(json_object_get(s, "next_rotation")),
		  "status has no next_rotation");
	json_decref(s);
}
