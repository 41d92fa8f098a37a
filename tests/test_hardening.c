// SPDX-License-Identifier: MIT
/*
 * How the daemon hardens itself and its mount, against the real keyfs
 * binary: the mount's options (and options that would weaken it refused),
 * no state, backup or audit path under the mountpoint, and a daemon that
 * cannot be dumped or read by another uid.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "mount_fixture.h"

TestSuite(hardening, .fini = mt_fini);

/* --- mount options -------------------------------------------------------- */

Test(hardening, mount_options_are_hardened, .timeout = 30)
{
	static const char *const need[] = {
	    "nosuid", "nodev", "default_permissions", "allow_other"};
	struct kt_mount *m = start("opts", NULL);
	FILE *f = fopen("/proc/mounts", "r");
	char line[8192], dev[256], dir[4096], type[64], opts[2048];
	bool found = false;

	cr_assert(f);
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%255s %4095s %63s %2047s", dev, dir, type,
			   opts) == 4 &&
		    strcmp(dir, m->mnt) == 0)
			found = true;
	fclose(f);
	cr_assert(found, "%s not in /proc/mounts", m->mnt);
	cr_expect(strncmp(type, "fuse", 4) == 0, "type %s", type);
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		char *copy = strdup(opts), *save = NULL;
		bool has = false;

		for (char *w = strtok_r(copy, ",", &save); w && !has;
		     w = strtok_r(NULL, ",", &save))
			has = strcmp(w, need[i]) == 0;
		free(copy);
		cr_expect(has, "mount options \"%s\" lack %s", opts, need[i]);
	}
}

Test(hardening, options_that_weaken_the_mount_are_refused, .timeout = 60)
{
	/* suid and dev are dropped with a warning instead (fstab's defaults
	 * bring them): test_system's mount -t fuse.keyfs shows that. */
	static const char *const weak[] = {"allow_root", "ro,allow_root"};
	static struct kt_mount m;

	kt_mount_config(&m, "mnt-weak", NULL, NULL);
	for (size_t i = 0; i < sizeof(weak) / sizeof(weak[0]); i++) {
		char *err = NULL;
		int rc = kt_runf(NULL, &err, "'%s' mount -f -o '%s' -c '%s'",
				 kt_keyfs(), weak[i], m.cfg);

		cr_assert(rc == 1, "-o %s: exit %d", weak[i], rc);
		cr_assert(kt_contains(err, "would weaken the mount"),
			  "-o %s: %s", weak[i], err);
		cr_assert(!kt_is_mounted(m.mnt), "-o %s mounted", weak[i]);
		free(err);
	}
	/* The same configuration without them mounts. */
	cr_assert(kt_mount_start(&m, NULL) == 0);
	kt_mount_stop(&m);
}

/*
 * Starts a daemon whose `key` (state_dir, backup_dir or audit_log) is
 * mountpoint/leaf, or the same reached through a symlink to the mountpoint;
 * asserts it is refused, names the path, and leaves nothing behind.
 */
static void expect_refused_path(const char *tag, const char *key,
				const char *leaf, bool via_link)
{
	struct kt_mount *m = mount_new();
	char *bad, *alias, *text, *log;
	struct dirent *e;
	int r, entries = 0;
	bool state = strcmp(key, "state_dir") == 0;
	DIR *d;

	kt_mount_config(m, tag, NULL, NULL);
	cr_assert(asprintf(&alias, "%s/alias", m->dir) > 0);
	cr_assert(symlink(m->mnt, alias) == 0);
	cr_assert(asprintf(&bad, "%s/%s", via_link ? alias : m->mnt, leaf) > 0);
	cr_assert(asprintf(&text,
			   "[keyfs]\nmode = development\nrotate_interval = 0\n"
			   "state_dir = %s\nmaster_key_file = %s/master.key\n"
			   "mountpoint = %s\n%s%s%s\n",
			   state ? bad : m->state, m->dir, m->mnt,
			   state ? "" : key, state ? "" : " = ",
			   state ? "" : bad) > 0);
	kt_write_file(m->cfg, text, 0644);
	r = kt_mount_start(m, NULL);
	cr_expect(r > 0, "started with %s = %s (start returned %d)", key, bad,
		  r);
	cr_expect(!kt_is_mounted(m->mnt), "mounted with %s = %s", key, bad);
	log = kt_read_file(m->log, NULL);
	cr_expect(kt_contains(log, bad), "the refusal does not name %s: %s",
		  bad, log ? log : "(no log)");
	d = opendir(m->mnt);
	cr_assert(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			entries++;
	closedir(d);
	cr_expect(entries == 0,
		  "%s = %s: something was created under the "
		  "mountpoint",
		  key, bad);
	free(log);
	free(text);
	free(bad);
	free(alias);
}

Test(hardening, paths_under_mountpoint_are_refused, .timeout = 90)
{
	expect_refused_path("under-state", "state_dir", "state", false);
	expect_refused_path("under-backup", "backup_dir", "backups", false);
	expect_refused_path("under-audit", "audit_log", "audit.log", false);
	/* Through a symlink: only resolving the path finds these. */
	expect_refused_path("link-state", "state_dir", "state", true);
	expect_refused_path("link-backup", "backup_dir", "backups", true);
	expect_refused_path("link-audit", "audit_log", "audit.log", true);
}

Test(hardening, daemon_is_not_dumpable, .timeout = 30)
{
	struct rlimit core = {RLIM_INFINITY, RLIM_INFINITY};
	char path[64], *limits, *line, soft[32], hard[32];
	struct kt_mount *m;
	int r;

	/* The daemon inherits a core limit it must drop itself. */
	cr_assert(getrlimit(RLIMIT_CORE, &core) == 0);
	core.rlim_cur = core.rlim_max;
	cr_assert(setrlimit(RLIMIT_CORE, &core) == 0);
	m = start("dump", NULL);
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)m->pid);
	limits = kt_read_file(path, NULL);
	cr_assert(limits);
	line = strstr(limits, "Max core file size");
	cr_assert(line, "no core limit line");
	cr_assert(sscanf(line + strlen("Max core file size"), "%31s %31s", soft,
			 hard) == 2);
	cr_expect(strcmp(soft, "0") == 0 && strcmp(hard, "0") == 0,
		  "core limit %s %s, want 0 0", soft, hard);
	free(limits);

	for (int i = 0; i < 2; i++) {
		const char *f = i ? "maps" : "environ";

		r = kt_run_as("--reuid=1001 --regid=1001 --clear-groups", NULL,
			      NULL, "cat /proc/%d/%s >/dev/null", (int)m->pid,
			      f);
		cr_expect(r != 0, "uid 1001 read /proc/PID/%s", f);
	}
}
