// SPDX-License-Identifier: MIT
/*
 * A core of the daemon, taken with gdb as root after it has served every
 * kind of key file and run every management operation, holds key material
 * only in sodium_malloc's guarded pages.  tests/core-scan.py searches the
 * core for every key the tree ever showed (text and raw, whole and in
 * fragments), for the master key and its subkeys, and for a key written to
 * a control file by mistake, and names the mapping of each copy.  It prints
 * labels, offsets and mappings, never a key.
 *
 * The core includes the guarded pages (gdb's dump-excluded-mappings), and
 * the scan must find keys there: otherwise it could not see anything.
 * Skipped, with the reason, without root, gdb or python3, and in the
 * sanitizer build (see sanitizer_reason).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "helpers.h"
#include "key.h"

TestSuite(coredump, .fini = kt_mount_cleanup_all, .timeout = 300);

#if defined(__SANITIZE_ADDRESS__)
#define KT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_ASAN 1
#endif
#endif

/*
 * ASan keeps freed heap in quarantine and moves stack arrays to its own
 * "fake stacks", so copies stay that a normal build overwrites or wipes; and
 * its shadow memory is terabytes of mappings that gdb would try to dump.
 */
static const char *sanitizer_reason(void)
{
#ifdef KT_ASAN
	return "a core of an ASan daemon is not the production memory layout "
	       "(quarantine, fake stacks) and its shadow mappings are huge";
#else
	return NULL;
#endif
}

static void skip_unless_possible(void)
{
	const char *why = sanitizer_reason();

	if (why)
		cr_skip_test("%s", why);
	if (geteuid() != 0)
		cr_skip_test("gdb must run as root to attach to the daemon "
			     "(PR_SET_DUMPABLE 0)");
	if (access("/usr/bin/gdb", X_OK) != 0)
		cr_skip_test("gdb is not installed (Debian package gdb)");
	if (access("/usr/bin/python3", X_OK) != 0)
		cr_skip_test("python3 is not installed");
}

static char *scan_script(void)
{
	return kt_path(kt_srcdir(), "tests/core-scan.py");
}

/* Adds every key the tree shows now to the keys file (and reads them all). */
static void collect(struct kt_mount *m, const char *keys, const char *master)
{
	char *script = scan_script(), *err = NULL;
	int rc;

	if (master)
		rc = kt_runf(NULL, &err,
			     "python3 '%s' collect '%s' '%s' "
			     "--master '%s'",
			     script, m->mnt, keys, master);
	else
		rc = kt_runf(NULL, &err, "python3 '%s' collect '%s' '%s'",
			     script, m->mnt, keys);
	cr_assert(rc == 0, "core-scan.py collect failed (%d): %s", rc, err);
	free(err);
	free(script);
}

/* Appends "label<TAB>text" to the keys file. */
static void add_key(const char *keys, const char *label, const char *text)
{
	FILE *f = fopen(keys, "a");

	cr_assert(f, "open %s: %s", keys, strerror(errno));
	fprintf(f, "%s\t%s\n", label, text);
	cr_assert(fclose(f) == 0);
}

static void new_key_text(char text[KF_KEY_TEXT_LEN + 1])
{
	uint8_t raw[KF_KEY_BYTES];

	kf_key_generate(raw);
	kf_key_encode(raw, text);
	sodium_memzero(raw, sizeof(raw));
}

static void ctl_ok(struct kt_mount *m, const char *args)
{
	char *err = NULL;
	int rc = kt_ctl(m, NULL, &err, args);

	cr_assert(rc == 0, "keyfs ctl %s failed (%d): %s", args, rc, err);
	free(err);
}

/*
 * Every path that handles a key: reads of every key file (collect), rotate,
 * backup, status, export-env, restore, retire, prune, a refused control
 * write holding a key, and reads again last, so that the freshest residue
 * of a read is in the core.
 */
static void exercise(struct kt_mount *m, const char *keys, const char *master)
{
	char pasted[KF_KEY_TEXT_LEN + 1];
	char *out = NULL;
	long v;

	collect(m, keys, master);
	for (int i = 0; i < 3; i++) {
		ctl_ok(m, "rotate");
		collect(m, keys, NULL);
	}
	ctl_ok(m, "backup nightly");
	free(kt_mread(m, "status", NULL));
	ctl_ok(m, "status");
	cr_assert(kt_runf(NULL, NULL, "'%s' export-env -c '%s' --mount '%s'",
			  kt_keyfs(), m->cfg, m->mnt) == 0);
	ctl_ok(m, "rotate");
	collect(m, keys, NULL);
	ctl_ok(m, "restore nightly.json");
	collect(m, keys, NULL);
	v = kt_mversion(m);
	cr_assert(asprintf(&out, "retire %ld", v - 1) > 0);
	ctl_ok(m, out);
	free(out);
	new_key_text(pasted);
	add_key(keys, "pasted", pasted);
	cr_assert(kt_mwrite(m, "control/backup", pasted) == -EINVAL);
	sodium_memzero(pasted, sizeof(pasted));
	ctl_ok(m, "prune 3");
	collect(m, keys, NULL);
	collect(m, keys, NULL);
}

/*
 * Takes a core of the daemon with the guarded pages in it, scans it, removes
 * it, and asserts that no key was found outside guarded memory.
 */
static void assert_core_clean(struct kt_mount *m, const char *dir,
			      const char *keys)
{
	char *core = kt_path(dir, "daemon.core");
	char *smaps = kt_path(dir, "daemon.smaps");
	char *script = scan_script(), *proc = NULL, *out = NULL, *err = NULL;
	int rc_core, rc_scan;

	cr_assert(asprintf(&proc, "/proc/%d/smaps", (int)m->pid) > 0);
	kt_copy_file(proc, smaps);
	rc_core = kt_runf(NULL, &err,
			  "gdb -nx -q -batch -ex 'set dump-excluded-mappings "
			  "on' -ex 'gcore %s' -p %d >/dev/null",
			  core, (int)m->pid);
	rc_scan = kt_runf(&out, NULL,
			  "python3 '%s' scan '%s' '%s' '%s' --expect-guarded",
			  script, core, smaps, keys);
	/* The core holds every key: it must not outlive the scan. */
	unlink(core);
	cr_log_info("%s", out);
	cr_assert(rc_core == 0, "gdb could not take a core (%d): %s", rc_core,
		  err);
	cr_assert(rc_scan == 0,
		  "key material outside guarded memory (or none found "
		  "at all):\n%s",
		  out);
	cr_assert(kt_contains(out, " 0 outside"), "%s", out);
	free(out);
	free(err);
	free(proc);
	free(script);
	free(smaps);
	free(core);
}

Test(coredump, audited_daemon_keeps_keys_in_guarded_memory_only)
{
	char cur[KF_KEY_TEXT_LEN + 1], prev[KF_KEY_TEXT_LEN + 1];
	char master[KF_KEY_TEXT_LEN + 1];
	struct kt_mount m;
	char *dir, *keys, *master_file, *env = NULL;

	skip_unless_possible();
	/* Keys given in the environment: imported, then wiped from it. */
	dir = kt_tmpdir("coredump-keys");
	keys = kt_path(dir, "keys.secret");
	master_file = kt_path(dir, "master.secret");
	new_key_text(cur);
	new_key_text(prev);
	new_key_text(master);
	add_key(keys, "env/ENCRYPTION_KEY", cur);
	add_key(keys, "env/ENCRYPTION_KEY_PREVIOUS", prev);
	kt_write_file(master_file, master, 0600);
	kt_mount_config(&m, "coredump-audited",
			"read_mode = audited\nretain_versions = 3\n", NULL);
	cr_assert(asprintf(&env,
			   "ENCRYPTION_KEY=%s ENCRYPTION_KEY_PREVIOUS=%s "
			   "ENCRYPTION_KEY_VERSION=5 KEYFS_MASTER_KEY=%s",
			   cur, prev, master) > 0);
	cr_assert(kt_mount_start(&m, env) == 0, "mount failed");
	sodium_memzero(env, strlen(env));
	free(env);
	exercise(&m, keys, master_file);
	assert_core_clean(&m, dir, keys);
	cr_assert(kt_mount_stop(&m) == 0);
	free(master_file);
	free(keys);
	free(dir);
}

Test(coredump, cached_daemon_keeps_keys_in_guarded_memory_only)
{
	struct kt_mount m;
	char *dir, *keys, *master;

	skip_unless_possible();
	/* A generated keyring and master key file, as in development. */
	dir = kt_tmpdir("coredump-keys");
	keys = kt_path(dir, "keys.secret");
	kt_mount_config(&m, "coredump-cached",
			"read_mode = cached\nretain_versions = 3\n", NULL);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed");
	master = kt_path(m.dir, "master.key");
	exercise(&m, keys, master);
	assert_core_clean(&m, dir, keys);
	cr_assert(kt_mount_stop(&m) == 0);
	free(master);
	free(keys);
	free(dir);
}
