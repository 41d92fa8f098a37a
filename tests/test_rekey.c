// SPDX-License-Identifier: MIT
/*
 * keyfs rekey through the real binary and a real mount (README: Master-key
 * rotation): the daemon serves the same keys under the new master key,
 * every archive and the audit log open under it and no longer under the
 * old one; bad input is refused, audited and changes nothing; a rekey
 * killed at random points 100 times finishes when run again, every key
 * still there; a daemon refuses to start in between.  Keys are compared in
 * C and never printed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "helpers.h"

TestSuite(rekey, .fini = kt_mount_cleanup_all, .timeout = 300);

#define KILL_RUNS 100

/* --- helpers ---------------------------------------------------------- */

static void ctl_ok(struct kt_mount *m, const char *args)
{
	char *err = NULL;

	cr_assert(kt_ctl(m, NULL, &err, args) == 0, "keyfs ctl %s: %s", args,
		  err);
	free(err);
}

/*
 * A tree with history: three versions, a named and automatic archives,
 * a closed audit segment and records after it; then stopped.
 */
static void history(struct kt_mount *m, const char *tag)
{
	kt_mount_config(m, tag, NULL, NULL);
	kt_mount_start_ok(m);
	ctl_ok(m, "rotate");
	ctl_ok(m, "backup named");
	ctl_ok(m, "audit-rotate");
	ctl_ok(m, "rotate");
	cr_assert(kt_mount_stop(m) == 0, "daemon did not exit cleanly");
}

static int rekey(struct kt_mount *m, const char *key, char **out, char **err)
{
	return kt_runf(out, err, "%s rekey --new-master '%s' -c '%s'",
		       kt_keyfs(), key, m->cfg);
}

static void rekey_ok(struct kt_mount *m, const char *key)
{
	char *out = NULL, *err = NULL;

	cr_assert(rekey(m, key, &out, &err) == 0, "keyfs rekey: %s", err);
	cr_assert(kt_contains(out, "rekeyed: master key "), "%s", out);
	free(out);
	free(err);
}

static bool same_file(const char *a, const char *b)
{
	size_t la = 0, lb = 0;
	char *x = kt_read_file(a, &la), *y = kt_read_file(b, &lb);
	bool same = x && y && la == lb && memcmp(x, y, la) == 0;

	free(x);
	free(y);
	return same;
}

static char *master_path(struct kt_mount *m)
{
	return kt_path(m->dir, "master.key");
}

static bool journal_exists(struct kt_mount *m)
{
	char *p = kt_path(m->state, "rekey.journal");
	bool there = access(p, F_OK) == 0;

	free(p);
	return there;
}

/*
 * What a refused rekey must leave as it was: the master key, the state
 * and every archive, byte for byte (held in memory, never printed).
 */
struct files {
	char *bytes;
	size_t len;
};

static void add_file(struct files *f, const char *path)
{
	size_t len = 0;
	char *text = kt_read_file_ok(path, &len);

	f->bytes = realloc(f->bytes, f->len + strlen(path) + 1 + len);
	cr_assert(f->bytes);
	memcpy(f->bytes + f->len, path, strlen(path) + 1);
	f->len += strlen(path) + 1;
	memcpy(f->bytes + f->len, text, len);
	f->len += len;
	free(text);
}

static struct files files_of(struct kt_mount *m)
{
	struct files f = {0};
	char *dir = kt_path(m->state, "backups"), *names = kt_names(dir), *tok;
	char *save = NULL, *p;

	p = master_path(m);
	add_file(&f, p);
	free(p);
	p = kt_path(m->state, "keyring");
	add_file(&f, p);
	free(p);
	for (tok = strtok_r(names, "\n", &save); tok;
	     tok = strtok_r(NULL, "\n", &save)) {
		p = kt_path(dir, tok);
		add_file(&f, p);
		free(p);
	}
	free(names);
	free(dir);
	return f;
}

static void expect_unchanged(struct kt_mount *m, const struct files *before,
			     const char *what)
{
	struct files now = files_of(m);

	cr_assert(now.len == before->len &&
		      memcmp(now.bytes, before->bytes, now.len) == 0,
		  "%s: the master key, state or an archive changed", what);
	cr_assert(!journal_exists(m), "%s: a journal was left", what);
	free(now.bytes);
}

/* The archives in m's backup folder. */
static size_t archive_count(struct kt_mount *m)
{
	char *dir = kt_path(m->state, "backups"), *names = kt_names(dir);
	size_t n = 0;

	for (char *p = names; *p; p++)
		n += *p == '\n';
	free(names);
	free(dir);
	return n;
}

static int audit_verify(const char *cfg, char **err)
{
	return kt_runf(NULL, err, "%s audit verify -c '%s'", kt_keyfs(), cfg);
}

/* keyfs export-env from the state (daemon stopped): the keys it holds. */
static char *keys_of_state(struct kt_mount *m)
{
	char *out = NULL, *err = NULL;

	cr_assert(kt_runf(&out, &err, "%s export-env -c '%s'", kt_keyfs(),
			  m->cfg) == 0,
		  "the state does not load: %s", err);
	cr_assert(kt_contains(out, "ENCRYPTION_KEY="));
	free(err);
	return out;
}

/* m's configuration with master_key_file = DIR/name instead: a path. */
static char *config_with_master(struct kt_mount *m, const char *name)
{
	char *text = kt_read_file_ok(m->cfg, NULL), *at, *out, *path;

	at = strstr(text, "/master.key\n");
	cr_assert(at, "no master_key_file line in %s", m->cfg);
	*at = 0;
	cr_assert(asprintf(&out, "%s/%s\n%s", text, name,
			   at + strlen("/master.key\n")) > 0);
	path = kt_path(m->dir, "other.ini");
	kt_write_file(path, out, 0644);
	free(out);
	free(text);
	return path;
}

/* The tree's file rel holds what `want` held before (compared, never shown). */
static void expect_served(struct kt_mount *m, const char *rel, const char *want)
{
	char *got = kt_mread(m, rel, NULL);

	cr_assert(got && strcmp(got, want) == 0, "%s changed across the rekey",
		  rel);
	free(got);
}

/* --- the rotation ------------------------------------------------------ */

Test(rekey, the_daemon_serves_the_same_keys_under_the_new_master_key)
{
	static struct kt_mount m;
	char *cur, *prev, *key, *mk, *old_cfg, *err = NULL, *old;
	json_t *recs;
	size_t from;

	history(&m, "rekey-ok");
	old_cfg = config_with_master(&m, "old.key");
	kt_mount_start_ok(&m);
	cur = kt_mread(&m, "current", NULL);
	prev = kt_mread(&m, "previous", NULL);
	cr_assert(cur && prev);
	cr_assert(kt_mount_stop(&m) == 0);
	mk = master_path(&m);
	old = kt_path(m.dir, "old.key");
	kt_copy_file(mk, old);
	from = kt_audit_size(&m);
	key = kt_genkey_file(m.dir, "new.key");

	rekey_ok(&m, key);
	cr_assert(same_file(mk, key), "master_key_file was not replaced");
	cr_assert(!journal_exists(&m));
	cr_assert(kt_archives_failing(&m, m.cfg, 3) == 0,
		  "an archive does not open under the new master key");
	cr_assert(audit_verify(m.cfg, &err) == 0,
		  "audit verify after rekey: %s", err);
	free(err);
	err = NULL;

	/* The old key opens nothing any more. */
	cr_assert(kt_archives_failing(&m, old_cfg, 3) == archive_count(&m),
		  "an archive still opens under the old master key");
	cr_assert(audit_verify(old_cfg, &err) != 0,
		  "the audit log still verifies under the old master key");
	free(err);

	recs = kt_audit_since(&m, from);
	cr_assert(kt_count_records(recs, "key_rekey_start", 1) == 1);
	cr_assert(kt_count_records(recs, "key_rekey", 1) == 1);
	json_decref(recs);

	kt_mount_start_ok(&m);
	expect_served(&m, "current", cur);
	expect_served(&m, "previous", prev);
	cr_assert(kt_mount_stop(&m) == 0);
	free(cur);
	free(prev);
	free(key);
	free(mk);
	free(old);
	free(old_cfg);
}

/* --- refusals ------------------------------------------------------------ */

/* A refused rekey: exit 1, err holding `says`, nothing changed, audited. */
static void refused(struct kt_mount *m, const char *key, const char *says,
		    bool audited)
{
	struct files before = files_of(m);
	size_t from = kt_audit_size(m);
	char *out = NULL, *err = NULL;
	json_t *recs;

	cr_assert(rekey(m, key, &out, &err) == 1, "rekey with %s: not refused",
		  key);
	cr_assert(kt_contains(err, says), "rekey with %s: expected \"%s\": %s",
		  key, says, err);
	expect_unchanged(m, &before, key);
	recs = kt_audit_since(m, from);
	cr_assert(kt_count_records(recs, "key_rekey", 0) == (audited ? 1 : 0),
		  "rekey with %s: failure records %zu", key,
		  kt_count_records(recs, "key_rekey", 0));
	cr_assert(kt_count_records(recs, "key_rekey_start", -1) == 0);
	json_decref(recs);
	free(before.bytes);
	free(out);
	free(err);
}

Test(rekey, bad_input_is_refused_audited_and_changes_nothing)
{
	static struct kt_mount m;
	char *key, *same, *loose, *other, *junk, *mk, *err = NULL, *arch;
	char *dir, *text;
	size_t len;

	history(&m, "rekey-bad");
	mk = master_path(&m);
	refused(&m, "/nonexistent/new.key", "No such file or directory", true);

	loose = kt_genkey_file(m.dir, "loose.key");
	cr_assert(chmod(loose, 0644) == 0);
	refused(&m, loose, "readable by group or other", true);

	other = kt_genkey_file(m.dir, "other.key");
	cr_assert(chown(other, 1001, 1001) == 0);
	refused(&m, other, "must be owned by root", true);

	same = kt_path(m.dir, "same.key");
	kt_copy_file(mk, same);
	refused(&m, same, "the new master key is the one in use", true);

	junk = kt_path(m.dir, "junk.key");
	kt_write_file(junk, "not a key\n", 0600);
	refused(&m, junk, "master key file", true);

	/* A damaged archive: refused before anything is rewritten. */
	key = kt_genkey_file(m.dir, "new.key");
	dir = kt_path(m.state, "backups");
	arch = kt_path(dir, "named.json");
	text = kt_read_file_ok(arch, &len);
	{
		char *ct = strstr(text, "\"ciphertext\":\"");

		cr_assert(ct);
		ct += strlen("\"ciphertext\":\"") + 4;
		*ct = *ct == 'A' ? 'B' : 'A';
	}
	kt_write_bytes(arch, text, len, 0600);
	refused(&m, key, "archive named.json does not open", true);

	/* No --new-master: a usage error. */
	cr_assert(kt_runf(NULL, &err, "%s rekey -c '%s'", kt_keyfs(), m.cfg) ==
		  2);
	cr_assert(kt_contains(err, "usage"), "%s", err);
	free(err);

	/* The daemon running: the state lock refuses, nothing is touched. */
	unlink(arch);
	kt_mount_start_ok(&m);
	refused(&m, key, "stop the daemon first", false);
	cr_assert(kt_mount_stop(&m) == 0);
	free(text);
	free(arch);
	free(dir);
	free(key);
	free(same);
	free(loose);
	free(other);
	free(junk);
	free(mk);
}

/* The cluster's own rotation is tested with a real etcd in test_cluster. */
Test(rekey, a_cluster_node_without_etcd_is_refused_clearly)
{
	static struct kt_mount m;
	char *key, *err = NULL;

	kt_mount_config(&m, "rekey-etcd", "store = etcd\n",
			"[etcd]\nendpoints = http://127.0.0.1:9\n"
			"prefix = /keyfs/rekey\n");
	key = kt_genkey_file(m.dir, "master.key");
	free(key);
	key = kt_genkey_file(m.dir, "new.key");
	cr_assert(rekey(&m, key, NULL, &err) == 1);
	cr_assert(kt_contains(err, "rekey of a cluster node needs etcd: ") &&
		      kt_contains(err, "127.0.0.1:9"),
		  "%s", err);
	cr_assert(!journal_exists(&m));
	{
		char *mk = kt_path(m.dir, "master.key");

		cr_assert(!same_file(mk, key), "the master key was replaced");
		free(mk);
	}
	free(err);
	free(key);
}

/* --- crashes ---------------------------------------------------------------
 */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

Test(rekey, killed_at_random_points_100_times_then_rerun_loses_nothing,
     .timeout = 900)
{
	static struct kt_mount m;
	char *keys, *mk, *err = NULL, *log;
	double t0, full;
	bool refused_start = false;
	int interrupted = 0;

	history(&m, "rekey-kill");
	mk = master_path(&m);
	keys = keys_of_state(&m);
	/* One whole run sets the range of the random delays. */
	{
		char *key = kt_genkey_file(m.dir, "k0.key");

		t0 = now_ms();
		rekey_ok(&m, key);
		full = now_ms() - t0;
		free(key);
	}
	kt_seed();
	for (int i = 1; i <= KILL_RUNS; i++) {
		char name[32], *key, *now;

		snprintf(name, sizeof(name), "k%d.key", i);
		key = kt_genkey_file(m.dir, name);
		kt_rekey_killed(m.cfg, key,
				(long)(rand() % (int)(full * 1200 + 1)));
		if (journal_exists(&m) && !refused_start) {
			/* A daemon started now refuses, and says why. */
			cr_assert(kt_mount_start(&m, NULL) > 0,
				  "a daemon started mid-rekey");
			log = kt_read_file_ok(m.log, NULL);
			cr_assert(kt_contains(log, "master key rotation is "
						   "incomplete"),
				  "%s", log);
			free(log);
			refused_start = true;
		}
		/* Unfinished: the key not in place yet, or the journal left. */
		if (!same_file(mk, key) || journal_exists(&m)) {
			interrupted++;
			rekey_ok(&m, key);
		}
		cr_assert(same_file(mk, key), "run %d: not finished", i);
		cr_assert(!journal_exists(&m), "run %d: journal left", i);
		cr_assert(audit_verify(m.cfg, &err) == 0,
			  "run %d: audit verify: %s", i, err);
		free(err);
		err = NULL;
		cr_assert(kt_archives_failing(&m, m.cfg, 3) == 0,
			  "run %d: an archive does not open", i);
		now = keys_of_state(&m);
		cr_assert(strcmp(now, keys) == 0, "run %d: the keys changed",
			  i);
		free(now);
		free(key);
	}
	cr_assert(interrupted >= KILL_RUNS / 10,
		  "only %d of %d runs were interrupted: the delays miss the "
		  "rekey",
		  interrupted, KILL_RUNS);
	cr_assert(refused_start, "no kill left a journal to start against");
	/* And the daemon serves the same keys. */
	kt_mount_start_ok(&m);
	cr_assert(kt_mount_stop(&m) == 0);
	free(keys);
	free(mk);
}

/*
 * KEYFS_MASTER_KEY as the old key, as the daemon takes it: nothing is
 * written in master_key_file's place, the command says to set the
 * variable, and with it set to the new key everything opens.
 */
Test(rekey, the_old_key_from_keyfs_master_key_is_left_to_the_administrator)
{
	static struct kt_mount m;
	char *mk, *old, *key, *out = NULL, *err = NULL, *env_cfg;

	history(&m, "rekey-env");
	mk = master_path(&m);
	old = kt_path(m.dir, "old.key");
	cr_assert(rename(mk, old) == 0);
	/* master_key_file names a file that is not there: the variable is
	 * the only source. */
	env_cfg = config_with_master(&m, "absent.key");
	key = kt_genkey_file(m.dir, "new.key");
	cr_assert(kt_runf(&out, &err,
			  "KEYFS_MASTER_KEY=$(cat '%s') %s rekey --new-master "
			  "'%s' -c '%s'",
			  old, kt_keyfs(), key, env_cfg) == 0,
		  "rekey with KEYFS_MASTER_KEY: %s", err);
	cr_assert(kt_contains(out, "set it to the new key"), "%s", out);
	cr_assert(access(mk, F_OK) < 0 && !journal_exists(&m),
		  "a master key file was written, or the journal left");
	free(err);
	err = NULL;
	cr_assert(
	    kt_runf(NULL, &err,
		    "KEYFS_MASTER_KEY=$(cat '%s') %s audit verify -c '%s'", key,
		    kt_keyfs(), env_cfg) == 0,
	    "audit verify with the new key: %s", err);
	free(err);
	err = NULL;
	cr_assert(kt_runf(NULL, &err,
			  "KEYFS_MASTER_KEY=$(cat '%s') %s backup verify named "
			  "-c '%s'",
			  key, kt_keyfs(), env_cfg) == 0,
		  "backup verify with the new key: %s", err);
	free(err);
	free(out);
	free(env_cfg);
	free(key);
	free(old);
	free(mk);
}
