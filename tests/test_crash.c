// SPDX-License-Identifier: MIT
/*
 * The crash matrix (README: Tests): kill -9 at every step of every commit.
 *
 * For each operation -- rotate, backup, restore, retire, prune, audit
 * segment rotation (with retention), and keyfs rekey -- a run of the test
 * daemon build/tests/keyfs-crash (core's crash points compiled in,
 * tests/crash_hook.c) lists the crash points the operation really reaches.
 * Then, for each point and for its first and last hit, the same operation
 * runs again from the same state and the daemon is killed with SIGKILL
 * right there.  The real keyfs then starts on what was left, and:
 *
 *   - it mounts, and `version` is the last acknowledged one or the next
 *     (the next if the control write had returned before the kill);
 *   - every version it serves has the key it had before (no number has
 *     two keys), and a rotation after the restart issues a number above
 *     every number the state and any archive holds;
 *   - every key served before is still served or held by an archive that
 *     `keyfs backup verify` opens, and every archive opens;
 *   - `keyfs audit verify` passes, and no temporary file (".NAME.tmp.<12
 *     hex>", ".audit.log.next", ".NAME.rekey") is left in the state,
 *     backup or audit folder.
 *
 * A point an operation does not reach fails the test (the daemon must die
 * of SIGKILL), so the matrix cannot pass by missing.  A rekey is killed the
 * same way, then run again with the real keyfs to finish.  Last, strace
 * checks the order of the system calls of every kind of commit once.
 * Keys are compared in C and never printed.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "helpers.h"

TestSuite(crash, .fini = kt_mount_cleanup_all, .timeout = 300);

#define MAX_VERSIONS 64
#define MAX_POINTS 64

/* The test daemon: KEYFS_CRASH_BIN, or beside KEYFS_BIN's build. */
static const char *crash_bin(void)
{
	static char path[4096];
	const char *given = getenv("KEYFS_CRASH_BIN");

	if (given && *given)
		return given;
	snprintf(path, sizeof(path), "%s", kt_keyfs());
	if (strrchr(path, '/'))
		*strrchr(path, '/') = 0;
	snprintf(path + strlen(path), sizeof(path) - strlen(path),
		 "/../tests/keyfs-crash");
	return path;
}

/* --- what was there before -------------------------------------------- */

/* The keys the tree served before the operation, by version (text form,
 * never printed), and the versions the archives held. */
struct known {
	long version;
	char *key[MAX_VERSIONS];
	bool archived[MAX_VERSIONS];
};

/* Version numbers in a JSON array, into held[]; the highest. */
static long mark_versions(json_t *arr, bool held[MAX_VERSIONS])
{
	long high = 0;
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
	{
		long n = (long)json_integer_value(v);

		cr_assert(n > 0 && n < MAX_VERSIONS, "version %ld", n);
		held[n] = true;
		if (n > high)
			high = n;
	}
	return high;
}

/*
 * Every archive in m's backup folder: held[] gets the versions their clear
 * fields name, and each must open (`keyfs backup verify`).  The highest
 * version number any of them names.
 */
static long archives_check(struct kt_mount *m, bool held[MAX_VERSIONS],
			   const char *when)
{
	char *dir = kt_path(m->state, "backups"), *names = kt_names(dir);
	char *save = NULL, *err = NULL;
	long high = 0;

	for (char *n = strtok_r(names, "\n", &save); n;
	     n = strtok_r(NULL, "\n", &save)) {
		char *path = kt_path(dir, n), *text;
		json_t *o;
		long h;

		if (n[0] == '.') {
			free(path);
			continue; /* leftovers: temp_leftovers() says */
		}
		text = kt_read_file_ok(path, NULL);
		o = json_loads(text, 0, NULL);
		cr_assert(o, "%s: archive %s does not parse", when, n);
		h = mark_versions(json_object_get(o, "versions"), held);
		if (h > high)
			high = h;
		if (json_integer_value(json_object_get(o, "key_version")) >
		    high)
			high = (long)json_integer_value(
			    json_object_get(o, "key_version"));
		json_decref(o);
		free(text);
		cr_assert(kt_runf(NULL, &err, "%s backup verify '%s' -c '%s'",
				  kt_keyfs(), path, m->cfg) == 0,
			  "%s: archive %s does not open: %s", when, n, err);
		free(err);
		err = NULL;
		free(path);
	}
	free(names);
	free(dir);
	return high;
}

/* The keys the tree serves under versions/, by number (text, malloc'd). */
static long served_keys(struct kt_mount *m, char *key[MAX_VERSIONS])
{
	char *names = kt_mnames(m, "versions"), *save = NULL;
	long high = 0;

	for (char *n = strtok_r(names, "\n", &save); n;
	     n = strtok_r(NULL, "\n", &save)) {
		long v = strtol(n, NULL, 10);
		char rel[64];

		cr_assert(v > 0 && v < MAX_VERSIONS, "versions/%s", n);
		snprintf(rel, sizeof(rel), "versions/%ld/key", v);
		key[v] = kt_mread(m, rel, NULL);
		cr_assert(key[v], "%s cannot be read", rel);
		if (v > high)
			high = v;
	}
	free(names);
	return high;
}

static void known_free(struct known *k)
{
	for (int i = 0; i < MAX_VERSIONS; i++)
		free(k->key[i]);
	memset(k, 0, sizeof(*k));
}

/* --- the state each case starts from ---------------------------------- */

/*
 * m: versions 1..3 (retain_versions 2, so 1 only in archives), a named
 * archive "named" of version 2, automatic ones, two closed audit segments
 * (audit_keep 1: the next rotation of the log deletes one), stopped; its
 * state folder copied to DIR/template.  *k: what it serves and archives.
 */
static void prepare(struct kt_mount *m, const char *tag, struct known *k)
{
	char *tmpl, *err = NULL;

	kt_mount_config(m, tag, "audit_keep = 1\n", NULL);
	kt_mount_start_ok(m);
	cr_assert(kt_mwrite(m, "control/rotate", "1\n") == 0);
	cr_assert(kt_mwrite(m, "control/backup", "named\n") == 0);
	cr_assert(kt_mwrite(m, "control/audit-rotate", "1\n") == 0);
	cr_assert(kt_mwrite(m, "control/rotate", "1\n") == 0);
	cr_assert(kt_mwrite(m, "control/backup", "other\n") == 0);
	cr_assert(kt_mwrite(m, "control/audit-rotate", "1\n") == 0);
	memset(k, 0, sizeof(*k));
	k->version = kt_mversion(m);
	served_keys(m, k->key);
	cr_assert(kt_mount_stop(m) == 0);
	archives_check(m, k->archived, "prepared");
	tmpl = kt_path(m->dir, "template");
	cr_assert(kt_runf(NULL, &err,
			  "cp -a '%s' '%s' && cp -p '%s/master.key' "
			  "'%s.key'",
			  m->state, tmpl, m->dir, tmpl) == 0,
		  "%s", err);
	free(err);
	free(tmpl);
}

/* Puts m's state folder back as prepare() left it. */
static void reset(struct kt_mount *m)
{
	char *err = NULL;

	cr_assert(kt_runf(NULL, &err,
			  "rm -rf '%s' && cp -a '%s/template' '%s' && "
			  "cp -p '%s/template.key' '%s/master.key'",
			  m->state, m->dir, m->state, m->dir, m->dir) == 0,
		  "%s", err);
	free(err);
}

/* --- one case ---------------------------------------------------------- */

/* What an operation is: a control write, or keyfs rekey (daemon stopped). */
struct op {
	const char *name;
	const char *control; /* control/<control>; NULL for rekey */
	const char *text;
};

/* A crash point's name and how often a run reached it. */
struct point {
	char name[96];
	int hits;
};

/*
 * m's temporary files left in the state (= audit) and backup folders, and
 * in the master key file's (m->dir).
 */
static int temp_leftovers(struct kt_mount *m, char *first, size_t cap)
{
	const char *const sub[] = {"", "backups", NULL};
	int found = 0;

	for (size_t i = 0; i < 3; i++) {
		char *dir = sub[i] ? kt_path(m->state, sub[i]) : strdup(m->dir);
		char *names = kt_names(dir), *save = NULL;

		for (char *n = strtok_r(names, "\n", &save); n;
		     n = strtok_r(NULL, "\n", &save)) {
			size_t len = strlen(n);
			bool tmp =
			    n[0] == '.' &&
			    (strstr(n, ".tmp.") || strstr(n, ".next") ||
			     (len > 6 && strcmp(n + len - 6, ".rekey") == 0));

			if (tmp && found++ == 0)
				snprintf(first, cap, "%s/%s", dir, n);
		}
		free(names);
		free(dir);
	}
	return found;
}

/* The points of a trace file, in order of first reach, counted. */
static size_t read_trace(const char *path, struct point *pts)
{
	char *text = kt_read_file(path, NULL), *save = NULL;
	size_t n = 0;

	cr_assert(text, "no crash point was reached (%s)", path);
	for (char *l = strtok_r(text, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		size_t i;

		for (i = 0; i < n && strcmp(pts[i].name, l) != 0; i++)
			;
		if (i == n) {
			cr_assert(n < MAX_POINTS);
			snprintf(pts[n++].name, sizeof(pts[0].name), "%s", l);
		}
		pts[i].hits++;
	}
	free(text);
	return n;
}

/* Waits up to 10 s for m's daemon to die; its wait status, or -1. */
static int wait_death(struct kt_mount *m)
{
	int status;

	for (int waited = 0; waited < 10000; waited += 10) {
		if (waitpid(m->pid, &status, WNOHANG) == m->pid) {
			m->pid = 0;
			return status;
		}
		kt_sleep_ms(10);
	}
	return -1;
}

/*
 * Runs op with the test daemon from m's template.  With at (NAME:K) the
 * daemon must die of SIGKILL there; *ret_acked says whether the control
 * write had returned 0.  Without, the points reached go to trace and
 * *ret_after gets the version after it.
 */
static void run_op(struct kt_mount *m, const struct op *op, const char *at,
		   const char *trace, bool *ret_acked, long *ret_after)
{
	char *arm = kt_path(m->dir, "arm"), *env;
	int r, status;

	reset(m);
	unlink(arm);
	cr_assert(asprintf(&env, "KEYFS_CRASH_ARM=%s %s%s %s%s", arm,
			   at ? "KEYFS_CRASH_AT=" : "", at ? at : "",
			   trace ? "KEYFS_CRASH_TRACE=" : "",
			   trace ? trace : "") > 0);
	if (!op->control) {
		char *err = NULL, *key = kt_path(m->dir, "new.key");

		/* keyfs rekey: its start-up counts too (nothing serves). */
		kt_write_file(arm, "", 0600);
		r = kt_runf(NULL, &err,
			    "exec env %s %s rekey --new-master '%s' -c '%s'",
			    env, crash_bin(), key, m->cfg);
		if (at)
			cr_assert(r == 128 + SIGKILL,
				  "rekey: point %s not reached (exit %d: %s)",
				  at, r, err);
		else
			cr_assert(r == 0, "keyfs-crash rekey: %s", err);
		*ret_acked = r == 0;
		free(err);
		free(key);
		free(env);
		free(arm);
		return;
	}
	r = kt_mount_start_prog(m, env, NULL, crash_bin());
	cr_assert(r == 0, "the test daemon did not start (%d): see %s", r,
		  m->log);
	kt_write_file(arm, "", 0600);
	r = kt_mwrite(m, op->control, op->text);
	*ret_acked = r == 0;
	if (at) {
		status = wait_death(m);
		cr_assert(status != -1,
			  "%s: point %s not reached (the write returned %d)",
			  op->name, at, r);
		cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
			  "%s: the daemon ended otherwise than by SIGKILL at "
			  "%s (status 0x%x)",
			  op->name, at, status);
	} else {
		cr_assert(r == 0, "%s: %s", op->name, strerror(-r));
		/* What runs after the answer (automatic pruning, audit
		 * retention) is part of the operation. */
		kt_sleep_ms(300);
		*ret_after = kt_mversion(m);
		unlink(arm); /* the unmount's own commits are not op's */
		cr_assert(kt_mount_stop(m) == 0);
	}
	free(env);
	free(arm);
}

/* After a kill at `at`: the checks of the file comment. */
static void check_restart(struct kt_mount *m, const struct op *op,
			  const char *at, const struct known *k, long after,
			  bool acked)
{
	struct known now = {0};
	char *err = NULL, first[4096] = "";
	long v, high, rotated;

	if (!op->control) {
		char *key = kt_path(m->dir, "new.key");
		char *journal = kt_path(m->state, "rekey.journal");

		/* Unfinished (the journal is there, or the old key is still
		 * in master_key_file): the same command again finishes it. */
		if (access(journal, F_OK) == 0 ||
		    kt_runf(NULL, NULL, "cmp -s '%s' '%s/master.key'", key,
			    m->dir) != 0)
			cr_assert(kt_runf(NULL, &err,
					  "%s rekey --new-master '%s' -c '%s'",
					  kt_keyfs(), key, m->cfg) == 0,
				  "%s: rekey run again: %s", at, err);
		free(err);
		err = NULL;
		free(journal);
		free(key);
	}
	cr_assert(kt_mount_start(m, NULL) == 0,
		  "%s %s: keyfs does not start again: see %s", op->name, at,
		  m->log);
	v = kt_mversion(m);
	cr_assert(v == k->version || v == after,
		  "%s %s: version %ld, expected %ld or %ld", op->name, at, v,
		  k->version, after);
	cr_assert(!acked || v == after,
		  "%s %s: version %ld, but %ld was acknowledged", op->name, at,
		  v, after);
	high = served_keys(m, now.key);
	for (int i = 1; i < MAX_VERSIONS; i++)
		cr_assert(!now.key[i] || !k->key[i] ||
			      strcmp(now.key[i], k->key[i]) == 0,
			  "%s %s: version %d has another key", op->name, at, i);
	v = archives_check(m, now.archived, at);
	if (v > high)
		high = v;
	for (int i = 1; i < MAX_VERSIONS; i++)
		cr_assert(!(k->key[i] || k->archived[i]) || now.key[i] ||
			      now.archived[i],
			  "%s %s: version %d is lost", op->name, at, i);
	/* A number in any archive or in the state is never issued again. */
	cr_assert(kt_mwrite(m, "control/rotate", "1\n") == 0,
		  "%s %s: rotation after the restart", op->name, at);
	rotated = kt_mversion(m);
	cr_assert(rotated > high,
		  "%s %s: the rotation after the restart issued %ld, already "
		  "known (up to %ld)",
		  op->name, at, rotated, high);
	cr_assert(kt_mount_stop(m) == 0);
	cr_assert(kt_runf(NULL, &err, "%s audit verify -c '%s'", kt_keyfs(),
			  m->cfg) == 0,
		  "%s %s: audit verify: %s", op->name, at, err);
	free(err);
	cr_assert(temp_leftovers(m, first, sizeof(first)) == 0,
		  "%s %s: a temporary file is left: %s", op->name, at, first);
	known_free(&now);
}

/*
 * The matrix of one operation: the points a run reaches, then a kill at
 * each one's first and last hit.  Prints what it covered.
 */
static void matrix(const struct op *op)
{
	static struct kt_mount m;
	struct point pts[MAX_POINTS];
	struct known k;
	char *trace;
	long after = 0;
	bool acked;
	size_t n;
	int cases = 0;

	memset(pts, 0, sizeof(pts));
	prepare(&m, op->name, &k);
	if (!op->control) {
		char *key = kt_genkey_file(m.dir, "new.key");

		free(key);
	}
	trace = kt_path(m.dir, "trace");
	run_op(&m, op, NULL, trace, &acked, &after);
	if (!op->control)
		after = k.version;
	n = read_trace(trace, pts);
	for (size_t i = 0; i < n; i++) {
		for (int hit = 1; hit <= pts[i].hits; hit++) {
			char at[sizeof(pts[0].name) + 16];

			snprintf(at, sizeof(at), "%.95s:%d", pts[i].name, hit);
			run_op(&m, op, at, NULL, &acked, NULL);
			check_restart(&m, op, at, &k, after, acked);
			cases++;
		}
	}
	printf("crash matrix: %s: %zu points, %d kills:", op->name, n, cases);
	for (size_t i = 0; i < n; i++)
		printf(" %s x%d", pts[i].name + strlen("keyfs/crash/"),
		       pts[i].hits);
	printf("\n");
	fflush(stdout);
	free(trace);
	known_free(&k);
}

/* One Test per operation: a control write, or NULL for keyfs rekey. */
#define MATRIX(id, name, control, text)                                        \
	Test(crash, id)                                                        \
	{                                                                      \
		const struct op op = {name, control, text};                    \
		matrix(&op);                                                   \
	}

MATRIX(rotate, "rotate", "control/rotate", "1\n")
MATRIX(backup, "backup", "control/backup", "crashed\n")
MATRIX(restore, "restore", "control/restore", "named.json\n")
MATRIX(retire, "retire", "control/retire", "2\n")
MATRIX(prune, "prune", "control/prune", "1\n")
MATRIX(audit_rotate, "audit-rotate", "control/audit-rotate", "1\n")
MATRIX(rekey, "rekey", NULL, NULL)

/* --- the order of the system calls ------------------------------------ */

#define STRACE_CALLS                                                           \
	"trace=openat,write,pwrite64,fsync,fdatasync,rename,renameat,"         \
	"renameat2,link,linkat,unlink,unlinkat,close"

/* tests/strace-order.py over the logs PREFIX.*: its exit status. */
static int order_check(const char *prefix, char **out)
{
	return kt_runf(out, NULL, "python3 '%s/tests/strace-order.py' '%s'.*",
		       kt_srcdir(), prefix);
}

/* SIGTERM to the daemon strace (m->pid) runs, then kt_mount_stop. */
static void stop_traced(struct kt_mount *m)
{
	char path[64], *children;
	long pid;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", m->pid,
		 m->pid);
	children = kt_read_file_ok(path, NULL);
	pid = strtol(children, NULL, 10);
	cr_assert(pid > 0, "strace has no child");
	kill((pid_t)pid, SIGTERM);
	free(children);
	cr_assert(kt_mount_stop(m) == 0);
}

/*
 * Every kind of commit once, under strace (the real keyfs; LeakSanitizer
 * does not work under ptrace, so it is off for these runs): the state, an
 * archive, the audit log's next segment, then with keyfs rekey the
 * journal, archives rewritten, audit files rewritten and the master key
 * file.  For each: write < fsync of its fd < rename < fsync of the folder
 * (tests/strace-order.py).
 */
Test(crash, every_commit_syncs_the_file_then_renames_then_syncs_the_folder)
{
	static struct kt_mount m;
	const char *const kinds[] = {"ok state ",	  "ok archive ",
				     "ok audit-segment ", "ok journal ",
				     "ok keyfile ",	  "ok audit-rekey "};
	const char *const ops[][2] = {
	    {"control/rotate", "1\n"},	     {"control/backup", "b\n"},
	    {"control/audit-rotate", "1\n"}, {"control/restore", "b.json\n"},
	    {"control/retire", "3\n"},	     {"control/prune", "1\n"},
	};
	char *prefix, *key, *out = NULL, *err = NULL;
	const char *wrapper[] = {"strace", "-ff", "-y", "-s",	      "0",
				 "-o",	   NULL,  "-e", STRACE_CALLS, NULL};
	struct known k;

	if (access("/usr/bin/strace", X_OK) != 0)
		cr_skip_test("no strace");
	prepare(&m, "strace", &k);
	known_free(&k);
	prefix = kt_path(m.dir, "strace");
	wrapper[6] = prefix;
	cr_assert(kt_mount_start_prog(&m, "ASAN_OPTIONS=detect_leaks=0",
				      wrapper, NULL) == 0,
		  "keyfs under strace did not start: see %s", m.log);
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		cr_assert(kt_mwrite(&m, ops[i][0], ops[i][1]) == 0, "%s",
			  ops[i][0]);
	stop_traced(&m);
	key = kt_genkey_file(m.dir, "new.key");
	cr_assert(kt_runf(NULL, &err,
			  "ASAN_OPTIONS=detect_leaks=0 strace -ff -y -s 0 -o "
			  "'%s' -e " STRACE_CALLS
			  " %s rekey --new-master '%s' -c '%s'",
			  prefix, kt_keyfs(), key, m.cfg) == 0,
		  "keyfs rekey under strace: %s", err);
	cr_assert(order_check(prefix, &out) == 0, "out of order:\n%s", out);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		cr_assert(kt_contains(out, kinds[i]),
			  "no commit of kind \"%s\" was checked:\n%s", kinds[i],
			  out);
	free(out);
	free(err);
	free(key);
	free(prefix);
}

/* The checker itself: a rename before the fsync, or no fsync of the folder
 * after it, is out of order. */
Test(crash, the_order_check_finds_a_rename_before_the_fsync)
{
	char *dir = kt_tmpdir("order"), *log = kt_path(dir, "bad.1"), *prefix;
	char *out = NULL, *text;

	cr_assert(
	    asprintf(&text,
		     "openat(AT_FDCWD<%s>, \"%s/.keyring.tmp.0123456789ab\""
		     ", O_WRONLY|O_CREAT, 0600) = 5<%s/.keyring.tmp."
		     "0123456789ab>\n"
		     "write(5<%s/.keyring.tmp.0123456789ab>, \"\"..., 9) "
		     "= 9\n"
		     "rename(\"%s/.keyring.tmp.0123456789ab\", "
		     "\"%s/keyring\") = 0\n"
		     "fsync(5<%s/keyring>) = 0\n",
		     dir, dir, dir, dir, dir, dir, dir) > 0);
	kt_write_file(log, text, 0600);
	prefix = kt_path(dir, "bad");
	cr_assert(order_check(prefix, &out) == 1, "%s", out);
	cr_assert(kt_contains(out, "bad state keyring: its fd is not synced"),
		  "%s", out);
	free(out);
	free(prefix);
	free(text);
	free(log);
	free(dir);
}
