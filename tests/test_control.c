// SPDX-License-Identifier: MIT
/*
 * The control files control/rotate and control/retire of a real mount, and
 * `keyfs ctl`: what each accepts, what it refuses (and that a refusal changes
 * nothing and is audited), durability of a rotation, concurrent rotations,
 * and a daemon killed at any moment while rotating.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "helpers.h"
#include "key.h"

TestSuite(control, .fini = kt_mount_cleanup_all, .timeout = 120);

static void start(struct kt_mount *m, const char *tag, const char *lines)
{
	int r;

	kt_mount_config(m, tag, lines, NULL);
	r = kt_mount_start(m, NULL);
	cr_assert(r == 0, "keyfs mount did not come up (%d); see %s", r,
		  m->log);
}

/* --- control/rotate --------------------------------------------------- */

Test(control, rotate_accepts_1_and_rotate_with_optional_newline)
{
	static const char *const ok[] = {"1", "1\n", "rotate", "rotate\n"};
	static struct kt_mount m;

	start(&m, "ctl-ok", NULL);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		long before = kt_mversion(&m);
		size_t mark = kt_audit_size(&m);
		json_t *recs;
		int r =
		    kt_mwrite_raw(&m, "control/rotate", ok[i], strlen(ok[i]));

		cr_assert(r == 0, "write #%zu (%zu bytes) refused: %s", i,
			  strlen(ok[i]), strerror(-r));
		cr_assert(kt_mversion(&m) == before + 1,
			  "write #%zu: version %ld -> %ld, want exactly one "
			  "rotation",
			  i, before, kt_mversion(&m));
		recs = kt_audit_since(&m, mark);
		cr_assert(kt_count_records(recs, "key_rotation", true) == 1,
			  "write #%zu: want one successful key_rotation "
			  "record",
			  i);
		json_decref(recs);
	}
}

struct bad_input {
	const char *what;
	const char *buf;
	size_t len;
	const char *marker; /* must not reach the audit log; NULL: skip */
};

Test(control, rotate_refuses_bad_input_changes_nothing_and_audits_it)
{
	static const char binary[] = "\x01\x00zqbinmark\xff\xfe\x00\x7f";
	char *junk = malloc(65536);
	const struct bad_input bad[] = {
	    {"\"2\"", "2", 1, NULL},
	    {"\"yes\"", "yes", 3, "yes"},
	    {"\"1 \\n\"", "1 \n", 3, NULL},
	    {"\" 1\"", " 1", 2, NULL},
	    {"\"rotate\\n\\n\"", "rotate\n\n", 8, NULL},
	    {"\"0\"", "0", 1, NULL},
	    {"\"11\"", "11", 2, NULL},
	    {"\"Rotate\"", "Rotate", 6, "Rotate"},
	    {"\"1\\r\\n\"", "1\r\n", 3, NULL},
	    {"64 KiB of junk", junk, 65536, "zqjunkmark"},
	    {"binary", binary, sizeof(binary) - 1, "zqbinmark"},
	};
	static struct kt_mount m;

	cr_assert(junk);
	for (size_t i = 0; i < 65536; i += 16)
		memcpy(junk + i, "zqjunkmark-0123.", 16);
	start(&m, "ctl-bad", NULL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long before = kt_mversion(&m);
		char *status = kt_mstatus_keys(&m), *after;
		size_t mark = kt_audit_size(&m);
		json_t *recs;
		int r =
		    kt_mwrite_raw(&m, "control/rotate", bad[i].buf, bad[i].len);

		cr_assert(r == -EINVAL, "%s: want EINVAL, got %s", bad[i].what,
			  r ? strerror(-r) : "success");
		cr_assert(kt_mversion(&m) == before, "%s rotated the key",
			  bad[i].what);
		after = kt_mstatus_keys(&m);
		cr_assert(status && after && strcmp(status, after) == 0,
			  "%s changed status", bad[i].what);
		recs = kt_audit_since(&m, mark);
		cr_assert(kt_count_records(recs, "key_rotation", false) >= 1,
			  "%s: no success:false key_rotation record",
			  bad[i].what);
		cr_assert(kt_count_records(recs, "key_rotation", true) == 0,
			  "%s: a successful rotation was recorded",
			  bad[i].what);
		if (bad[i].marker)
			cr_assert(!kt_records_contain(recs, bad[i].marker,
						      strlen(bad[i].marker)),
				  "%s: the bytes written reached the audit log",
				  bad[i].what);
		cr_assert(!kt_records_contain(recs, "\xff", 1),
			  "%s: raw 0xff in the audit log", bad[i].what);
		json_decref(recs);
		free(status);
		free(after);
	}
	free(junk);
}

/*
 * A zero-byte write(2): no rotation.  Linux answers a zero-length write to
 * a FUSE file itself (0, without asking the daemon), so the daemon cannot
 * refuse it; what matters is that nothing rotates.  If the kernel ever
 * passes it on, the daemon must refuse it with EINVAL.
 */
Test(control, rotate_zero_byte_write_does_not_rotate)
{
	static struct kt_mount m;
	long before;
	int r;

	start(&m, "ctl-empty", NULL);
	before = kt_mversion(&m);
	r = kt_mwrite_raw(&m, "control/rotate", "", 0);
	cr_assert(r == 0 || r == -EINVAL, "zero-byte write: %s", strerror(-r));
	cr_assert(kt_mversion(&m) == before, "a zero-byte write rotated");
	/* `: > control/rotate` (open O_TRUNC, no write) is no rotation. */
	cr_assert(kt_runf(NULL, NULL, ": > '%s/control/rotate'", m.mnt) == 0,
		  "truncating open of control/rotate failed");
	cr_assert(kt_mversion(&m) == before, "an empty truncate rotated");
}

Test(control, echo_1_through_the_shell_rotates)
{
	static struct kt_mount m;
	char *err = NULL;
	long before;
	int rc;

	start(&m, "ctl-echo", NULL);
	before = kt_mversion(&m);
	rc = kt_runf(NULL, &err, "echo 1 > '%s/control/rotate'", m.mnt);
	cr_assert(rc == 0, "echo 1 > control/rotate failed (%d): %s", rc, err);
	cr_assert(kt_mversion(&m) == before + 1, "echo did not rotate once");
	free(err);
	rc = kt_runf(NULL, &err, "echo rotate > '%s/control/rotate'", m.mnt);
	cr_assert(rc == 0, "echo rotate > control/rotate failed (%d): %s", rc,
		  err);
	cr_assert(kt_mversion(&m) == before + 2, "echo did not rotate once");
	free(err);
	/* bash, because dash reports every failed echo as "I/O error". */
	rc = kt_runf(NULL, &err,
		     "exec bash -c 'echo yes > \"$0/control/rotate\"' '%s'",
		     m.mnt);
	cr_assert(rc != 0, "echo yes > control/rotate succeeded");
	cr_assert(kt_contains(err, "Invalid argument"),
		  "the shell did not report EINVAL: %s", err);
	cr_assert(kt_mversion(&m) == before + 2, "echo yes rotated");
	free(err);
}

/* kill -9 of the daemon, as a crash would; the mount is left stale. */
static void crash(struct kt_mount *m)
{
	cr_assert(m->pid > 0);
	cr_assert(kill(m->pid, SIGKILL) == 0);
	cr_assert(waitpid(m->pid, NULL, 0) == m->pid);
	m->pid = 0;
}

Test(control, rotation_is_durable_when_the_write_returns, .timeout = 60)
{
	static struct kt_mount m;
	char *key_after, *key_restarted;
	long before;
	int r;

	start(&m, "ctl-durable", NULL);
	before = kt_mversion(&m);
	cr_assert(kt_mwrite(&m, "control/rotate", "1\n") == 0);
	key_after = kt_mread(&m, "current", NULL);
	cr_assert(key_after, "cannot read current");
	/* No clean shutdown: whatever was not on disk is lost now. */
	crash(&m);
	/* Clearing the stale mount at start is another test's business. */
	kt_runf(NULL, NULL, "fusermount3 -uz '%s'", m.mnt);
	r = kt_mount_start(&m, NULL);
	cr_assert(r == 0, "restart after kill -9 failed (%d); see %s", r,
		  m.log);
	cr_assert(kt_mversion(&m) == before + 1,
		  "after kill -9 and restart version is %ld, want %ld",
		  kt_mversion(&m), before + 1);
	key_restarted = kt_mread(&m, "current", NULL);
	cr_assert(key_restarted, "cannot read current after restart");
	cr_assert(strcmp(key_after, key_restarted) == 0,
		  "the restarted daemon serves another current key than the "
		  "one served after the rotation returned");
	free(key_after);
	free(key_restarted);
}

Test(control, restart_after_kill_9_clears_the_stale_mount, .timeout = 60)
{
	static struct kt_mount m;
	long before;
	int r;

	start(&m, "ctl-stale", NULL);
	cr_assert(kt_mwrite(&m, "control/rotate", "1") == 0);
	before = kt_mversion(&m);
	crash(&m);
	r = kt_mount_start(&m, NULL);
	cr_assert(r == 0, "restart after kill -9 failed (%d); see %s", r,
		  m.log);
	cr_assert(kt_mversion(&m) == before, "version %ld after restart",
		  kt_mversion(&m));
}

/* --- control/retire --------------------------------------------------- */

Test(control, retire_refuses_current_unknown_and_junk_without_change)
{
	const struct {
		const char *in;
		int want;
	} bad[] = {
	    {"2", EBUSY},    {"2\n", EBUSY}, {"99", ENOENT},
	    {"3\n", ENOENT}, {"x", EINVAL},  {"-1", EINVAL},
	    {"0", EINVAL},   {"\n", EINVAL}, {" 1", EINVAL},
	    {"1x", EINVAL},  {"+1", EINVAL}, {"99999999999", EINVAL},
	};
	static struct kt_mount m;

	start(&m, "ctl-retire-bad", NULL);
	cr_assert(kt_mwrite(&m, "control/rotate", "1") == 0);
	cr_assert(kt_mversion(&m) == 2);
	cr_assert(kt_mexists(&m, "previous"), "no previous after a rotation");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *status = kt_mstatus_keys(&m), *after;
		char *vers = kt_mnames(&m, "versions"), *vers_after;
		char *prev = kt_mread(&m, "previous", NULL), *prev_after;
		size_t mark = kt_audit_size(&m);
		json_t *recs;
		int r = kt_mwrite(&m, "control/retire", bad[i].in);

		cr_assert(r == -bad[i].want, "retire \"%.*s\": want %s, got %s",
			  (int)strcspn(bad[i].in, "\n"), bad[i].in,
			  strerror(bad[i].want), r ? strerror(-r) : "success");
		after = kt_mstatus_keys(&m);
		vers_after = kt_mnames(&m, "versions");
		prev_after = kt_mread(&m, "previous", NULL);
		cr_assert(kt_mversion(&m) == 2, "version changed");
		cr_assert(status && after && strcmp(status, after) == 0,
			  "retire \"%.*s\" changed status",
			  (int)strcspn(bad[i].in, "\n"), bad[i].in);
		cr_assert(strcmp(vers, vers_after) == 0,
			  "versions/ changed: %s -> %s", vers, vers_after);
		cr_assert(prev && prev_after && strcmp(prev, prev_after) == 0,
			  "previous changed or vanished");
		recs = kt_audit_since(&m, mark);
		cr_assert(kt_count_records(recs, "key_retire", false) >= 1,
			  "no success:false key_retire record");
		cr_assert(kt_count_records(recs, "key_retire", true) == 0,
			  "a successful retire was recorded");
		json_decref(recs);
		free(status);
		free(after);
		free(vers);
		free(vers_after);
		free(prev);
		free(prev_after);
	}
	/* A zero-byte write retires nothing either. */
	cr_assert(kt_mwrite_raw(&m, "control/retire", "", 0) <= 0);
	cr_assert(kt_mexists(&m, "previous") && kt_mexists(&m, "versions/1"),
		  "a zero-byte write retired something");
}

Test(control, retire_previous_removes_it_from_the_tree)
{
	static struct kt_mount m;
	char *vers, *status;
	size_t mark;
	json_t *recs, *o;
	int r;

	start(&m, "ctl-retire", NULL);
	cr_assert(kt_mwrite(&m, "control/rotate", "1") == 0);
	cr_assert(kt_mexists(&m, "versions/1/key"));
	mark = kt_audit_size(&m);
	r = kt_mwrite(&m, "control/retire", "1\n");
	cr_assert(r == 0, "retire 1: %s", strerror(-r));
	cr_assert(!kt_mexists(&m, "previous"), "previous still there");
	cr_assert(!kt_mexists(&m, "versions/1"), "versions/1 still there");
	cr_assert(!kt_mexists(&m, "versions/1/key"),
		  "versions/1/key still there");
	vers = kt_mnames(&m, "versions");
	cr_assert(strcmp(vers, "2\n") == 0, "versions/ holds %s", vers);
	cr_assert(kt_mversion(&m) == 2, "retire changed the version");
	status = kt_mread(&m, "status", NULL);
	o = json_loads(status, 0, NULL);
	cr_assert(o, "status is not JSON");
	cr_assert(json_is_false(json_object_get(o, "has_previous_key")),
		  "status still has a previous key");
	cr_assert(json_array_size(json_object_get(o, "versions")) == 1,
		  "status lists %zu versions",
		  json_array_size(json_object_get(o, "versions")));
	recs = kt_audit_since(&m, mark);
	cr_assert(kt_count_records(recs, "key_retire", true) == 1,
		  "no successful key_retire record");
	/* Retiring it again: it is gone. */
	r = kt_mwrite(&m, "control/retire", "1");
	cr_assert(r == -ENOENT, "second retire of 1: %s",
		  r ? strerror(-r) : "success");
	json_decref(recs);
	json_decref(o);
	free(status);
	free(vers);
}

/* --- keyfs ctl -------------------------------------------------------- */

Test(control, keyfs_ctl_rotate_retire_status_print_what_happened)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL;
	json_t *o;
	int rc;

	start(&m, "ctl-cli", NULL);
	rc = kt_ctl(&m, &out, &err, "rotate");
	cr_assert(rc == 0, "ctl rotate failed (%d): %s", rc, err);
	cr_assert(strcmp(out, "rotated: version 2\n") == 0,
		  "ctl rotate printed: %s", out);
	cr_assert(kt_mversion(&m) == 2);
	free(out);
	free(err);

	rc = kt_ctl(&m, &out, &err, "retire 2");
	cr_assert(rc != 0, "ctl retire of the current version succeeded");
	cr_assert(kt_contains(err, "is the current key"),
		  "ctl retire 2 said: %s", err);
	cr_assert(out[0] == 0, "ctl retire printed on stdout: %s", out);
	free(out);
	free(err);

	rc = kt_ctl(&m, &out, &err, "retire 7");
	cr_assert(rc != 0, "ctl retire of an unknown version succeeded");
	cr_assert(kt_contains(err, "7") && kt_contains(err, "not in the"),
		  "ctl retire 7 said: %s", err);
	free(out);
	free(err);

	rc = kt_ctl(&m, &out, &err, "retire x");
	cr_assert(rc != 0, "ctl retire x succeeded");
	cr_assert(kt_contains(err, "invalid"), "ctl retire x said: %s", err);
	free(out);
	free(err);

	rc = kt_ctl(&m, &out, &err, "retire 1");
	cr_assert(rc == 0, "ctl retire 1 failed (%d): %s", rc, err);
	cr_assert(strcmp(out, "retired: version 1\n") == 0,
		  "ctl retire 1 printed: %s", out);
	cr_assert(!kt_mexists(&m, "versions/1"));
	free(out);
	free(err);

	rc = kt_ctl(&m, &out, &err, "status --json");
	cr_assert(rc == 0, "ctl status failed (%d): %s", rc, err);
	o = json_loads(out, 0, NULL);
	cr_assert(o, "ctl status did not print JSON");
	cr_assert(json_integer_value(json_object_get(o, "version")) == 2,
		  "ctl status version is not 2");
	cr_assert(json_is_false(json_object_get(o, "has_previous_key")));
	json_decref(o);
	free(out);
	free(err);

	/* No mount there: an error in words, non-zero. */
	rc = kt_runf(&out, &err, "%s ctl rotate --mount '%s'", kt_keyfs(),
		     m.dir);
	cr_assert(rc != 0, "ctl rotate on a plain directory succeeded");
	cr_assert(err[0] != 0, "ctl rotate on a plain directory said nothing");
	free(out);
	free(err);
}

/* --- concurrency ------------------------------------------------------ */

Test(control, concurrent_rotations_are_serialized, .timeout = 120)
{
	static struct kt_mount m;
	char *err = NULL;
	long before, after;
	size_t mark, i;
	json_t *recs, *rec;
	bool seen[41] = {false};
	int rc;

	start(&m, "ctl-conc", NULL);
	before = kt_mversion(&m);
	mark = kt_audit_size(&m);
	rc = kt_runf(NULL, &err,
		     "pids=; for p in 1 2 3 4; do "
		     "( i=0; while [ $i -lt 10 ]; do "
		     "echo 1 > '%s/control/rotate' || exit 1; i=$((i+1)); "
		     "done ) & pids=\"$pids $!\"; done; "
		     "rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc",
		     m.mnt);
	cr_assert(rc == 0, "a concurrent rotation failed: %s", err);
	after = kt_mversion(&m);
	cr_assert(after == before + 40,
		  "version grew by %ld after 40 rotations", after - before);
	recs = kt_audit_since(&m, mark);
	cr_assert(kt_count_records(recs, "key_rotation", true) == 40,
		  "%zu successful key_rotation records, want 40",
		  kt_count_records(recs, "key_rotation", true));
	json_array_foreach(recs, i, rec)
	{
		long v = (long)json_integer_value(
		    json_object_get(rec, "key_version"));

		if (strcmp(kt_str_of(rec, "event"), "key_rotation") != 0)
			continue;
		cr_assert(v > before && v <= after, "rotation to version %ld",
			  v);
		cr_assert(!seen[v - before], "version %ld issued twice", v);
		seen[v - before] = true;
	}
	json_decref(recs);
	free(err);
}

/* --- control/backup names -------------------------------------------- */

Test(control, a_named_backup_cannot_pass_for_an_automatic_one)
{
	static const char *const reserved[] = {"key_backup_99991231_235959\n",
					       "pre_restore_20991231_000000\n"};
	static struct kt_mount m;
	char *before, *after;

	start(&m, "ctl-reserved", NULL);
	before = kt_mnames(&m, "backups");
	for (size_t i = 0; i < 2; i++) {
		int r = kt_mwrite(&m, "control/backup", reserved[i]);

		cr_assert(r == -EINVAL, "reserved name #%zu: %s", i,
			  r ? strerror(-r) : "accepted");
	}
	after = kt_mnames(&m, "backups");
	cr_assert_str_eq(before, after, "a reserved name made an archive");
	free(before);
	free(after);
}

/* --- alerts ----------------------------------------------------------- */

/* Polls for path to hold needle (the alert command runs detached). */
static char *wait_for_text(const char *path, const char *needle)
{
	for (int i = 0; i < 250; i++) {
		char *text = kt_read_file(path, NULL);

		if (text && strstr(text, needle))
			return text;
		free(text);
		kt_sleep_ms(20);
	}
	return NULL;
}

/*
 * Waits for the first alert in the file at path to arrive and checks it is
 * a failure record of `event` whose error says `why`; returns it.
 */
static json_t *first_failure_alert(const char *path, const char *event,
				   const char *why)
{
	char *text = wait_for_text(path, why);
	json_t *rec;

	cr_assert(text, "no alert saying \"%s\" arrived", why);
	rec = json_loads(text, JSON_DISABLE_EOF_CHECK, NULL);
	cr_assert(rec, "the alert is not a JSON record");
	cr_assert_str_eq(kt_str_of(rec, "event"), event);
	cr_assert(json_is_false(json_object_get(rec, "success")));
	cr_assert(strstr(kt_str_of(rec, "error"), why),
		  "the alert does not say why: %s", kt_str_of(rec, "error"));
	free(text);
	return rec;
}

Test(control, failed_operation_runs_alert_command_with_the_record)
{
	static struct kt_mount m;
	char *dir = kt_tmpdir("ctl-alerts"), *lines, *alerts, *text;
	json_t *rec;

	cr_assert(asprintf(&alerts, "%s/alerts.log", dir) > 0);
	free(dir);
	cr_assert(asprintf(&lines, "alert_command = cat >> %s\n", alerts) > 0);
	start(&m, "ctl-alert", lines);
	cr_assert(kt_mwrite(&m, "control/retire", "1\n") == -EBUSY);
	rec = first_failure_alert(alerts, "key_retire", "current key");
	cr_assert(json_integer_value(json_object_get(rec, "uid")) == 0);
	json_decref(rec);
	/* A good operation raises no alert. */
	cr_assert(kt_mwrite(&m, "control/rotate", "1\n") == 0);
	kt_sleep_ms(300);
	text = kt_read_file(alerts, NULL);
	cr_assert(text && !strstr(text, "key_rotation"),
		  "a successful rotation raised an alert");
	free(text);
	free(lines);
	free(alerts);
}

/* How many children of parent have exited and not been reaped (state Z). */
static int zombie_children(pid_t parent)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char path[300], *stat, *end;
		int ppid = 0;
		char state = 0;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		stat = kt_read_file(path, NULL);
		/* "pid (comm) S ppid ...": comm may hold spaces and ')'. */
		end = stat ? strrchr(stat, ')') : NULL;
		if (end && sscanf(end + 1, " %c %d", &state, &ppid) == 2 &&
		    ppid == parent && state == 'Z')
			n++;
		free(stat);
	}
	closedir(d);
	return n;
}

/*
 * alert_command runs in a session of its own, and the daemon reaps it
 * without ever waiting for it in the request: no zombie is left.
 */
Test(control, alert_command_runs_in_its_own_session_and_is_reaped)
{
	static struct kt_mount m;
	char *dir = kt_tmpdir("ctl-alert-reap"), *ids, *lines, *text;
	long pid = 0, sid = 0;
	int zombies = -1;

	cr_assert(asprintf(&ids, "%s/ids", dir) > 0);
	/* Its pid and session (field 6 of its stat), once stdin is read. */
	cr_assert(asprintf(&lines,
			   "alert_command = cat >/dev/null && echo \"$$ "
			   "$(cut -d' ' -f6 /proc/$$/stat)\" >> %s\n",
			   ids) > 0);
	start(&m, "ctl-alert-reap", lines);
	cr_assert(kt_mwrite(&m, "control/retire", "1\n") == -EBUSY);
	text = wait_for_text(ids, "\n");
	cr_assert(text, "alert_command did not run");
	cr_assert(sscanf(text, "%ld %ld", &pid, &sid) == 2, "ids: %s", text);
	cr_assert(pid > 0 && sid == pid,
		  "alert_command is not a session leader (pid %ld, sid %ld)",
		  pid, sid);
	for (int i = 0; i < 100 && zombies != 0; i++) {
		kt_sleep_ms(20);
		zombies = zombie_children(m.pid);
	}
	cr_assert_eq(zombies, 0, "the daemon left %d zombie children", zombies);
	free(text);
	free(lines);
	free(ids);
	free(dir);
}

/* A new key's text form from `keyfs genkey` (45 bytes with the NUL). */
static void genkey(char text[45])
{
	char *out = NULL;

	cr_assert(kt_runf(&out, NULL, "%s genkey", kt_keyfs()) == 0);
	cr_assert(out && strlen(out) >= 44, "genkey printed no key");
	memcpy(text, out, 44);
	text[44] = 0;
	sodium_memzero(out, strlen(out));
	free(out);
}

Test(control, secrets_in_the_environment_reach_no_child_process)
{
	static struct kt_mount m;
	char master[45], imported[45], *dir = kt_tmpdir("ctl-env");
	char *envfile, *lines, *env, *text, *environ_path, *cur;
	size_t len = 0;

	genkey(master);
	genkey(imported);
	cr_assert(asprintf(&envfile, "%s/child.env", dir) > 0);
	cr_assert(asprintf(&lines, "alert_command = env >> %s\n", envfile) > 0);
	cr_assert(
	    asprintf(&env,
		     "KEYFS_MASTER_KEY=%s ENCRYPTION_KEY=%s "
		     "ENCRYPTION_KEY_PREVIOUS=%s ENCRYPTION_KEY_VERSION=5",
		     master, imported, master) > 0);
	kt_mount_config(&m, "ctl-env", lines, NULL);
	cr_assert(kt_mount_start(&m, env) == 0, "keyfs mount did not come up");
	/* The import took effect: the secrets were read before the scrub. */
	cur = kt_mread(&m, "current", NULL);
	cr_assert(cur && strcmp(cur, imported) == 0,
		  "the tree does not serve the imported ENCRYPTION_KEY");
	cr_assert(kt_mversion(&m) == 5);
	/* A failed operation runs alert_command, which dumps its env. */
	cr_assert(kt_mwrite(&m, "control/retire", "5\n") == -EBUSY);
	text = wait_for_text(envfile, "PATH=");
	cr_assert(text, "alert_command did not run");
	cr_assert(!strstr(text, master) && !strstr(text, imported),
		  "a key reached alert_command's environment");
	cr_assert(!strstr(text, "KEYFS_MASTER_KEY") &&
		      !strstr(text, "ENCRYPTION_KEY"),
		  "a secret variable reached alert_command's environment");
	free(text);
	/* Nor does the daemon's own environment block still hold them. */
	cr_assert(asprintf(&environ_path, "/proc/%d/environ", (int)m.pid) > 0);
	text = kt_read_file(environ_path, &len);
	cr_assert(text, "cannot read %s", environ_path);
	cr_assert(!memmem(text, len, master, 44) &&
		      !memmem(text, len, imported, 44),
		  "a key is still in the daemon's /proc/PID/environ");
	sodium_memzero(master, sizeof(master));
	sodium_memzero(imported, sizeof(imported));
	sodium_memzero(env, strlen(env));
	free(text);
	free(cur);
	free(environ_path);
	free(env);
	free(lines);
	free(envfile);
	free(dir);
}

Test(control, each_alert_is_one_json_line_with_time_seq_and_host)
{
	static struct kt_mount m;
	char *dir = kt_tmpdir("ctl-alert-lines"), *alerts, *lines, *text;
	char host[256] = "";
	json_t *first, *second;
	char *nl;

	cr_assert(asprintf(&alerts, "%s/alerts.log", dir) > 0);
	cr_assert(asprintf(&lines, "alert_command = cat >> %s\n", alerts) > 0);
	start(&m, "ctl-alert-lines", lines);
	cr_assert(kt_mwrite(&m, "control/retire", "1\n") == -EBUSY);
	text = wait_for_text(alerts, "\n");
	cr_assert(text != NULL, "the first alert did not arrive");
	free(text);
	cr_assert(kt_mwrite(&m, "control/prune", "0\n") < 0);
	text = wait_for_text(alerts, "backup_cleanup");
	cr_assert(text, "the second alert did not arrive");
	/* Appended alerts do not run together: one record per line. */
	nl = strchr(text, '\n');
	cr_assert(nl && nl[1] == '{', "alerts are not one per line: %s", text);
	cr_assert(text[strlen(text) - 1] == '\n', "the last alert has no "
						  "final newline");
	first = json_loadb(text, (size_t)(nl - text), 0, NULL);
	second = json_loads(nl + 1, 0, NULL);
	cr_assert(first && second, "an alert line is not a JSON record");
	gethostname(host, sizeof(host) - 1);
	for (int i = 0; i < 2; i++) {
		json_t *rec = i ? second : first;

		cr_assert(strlen(kt_str_of(rec, "timestamp")) == 20,
			  "alert %d has no RFC 3339 timestamp", i);
		cr_assert(json_integer_value(json_object_get(rec, "seq")) > 0,
			  "alert %d has no seq of its audit record", i);
		cr_assert_str_eq(kt_str_of(rec, "host"), host);
		cr_assert(json_is_false(json_object_get(rec, "success")));
	}
	cr_assert(json_integer_value(json_object_get(second, "seq")) >
		  json_integer_value(json_object_get(first, "seq")));
	json_decref(first);
	json_decref(second);
	free(text);
	free(lines);
	free(alerts);
	free(dir);
}

Test(control, a_refused_start_runs_alert_command)
{
	static struct kt_mount m;
	char *dir = kt_tmpdir("ctl-alert-start"), *alerts, *body;
	json_t *rec;

	cr_assert(asprintf(&alerts, "%s/alerts.log", dir) > 0);
	cr_assert(asprintf(&body,
			   "mode = production\nrotate_interval = 0\n"
			   "alert_command = cat >> %s\n",
			   alerts) > 0);
	kt_mount_config_full(&m, "ctl-alert-start", body, NULL);
	/* Production, no state, nothing to import: refused. */
	cr_assert(kt_mount_start(&m, NULL) > 0, "keyfs started with no key");
	rec = first_failure_alert(alerts, "startup",
				  "KeyValidationError: No current encryption "
				  "key available");
	json_decref(rec);
	free(body);
	free(alerts);
	free(dir);
}

/* --- kill -9 at any moment -------------------------------------------- */

/*
 * Child: rotates until the tree goes away.  After each write returns it
 * writes "N KEY\n" to fd: the version then served and the current key,
 * which are the acknowledged rotation's (nothing else rotates here).
 */
static void rotate_until_killed(struct kt_mount *m, int fd)
{
	char *ctl = kt_mpath(m, "control/rotate"),
	     *ver = kt_mpath(m, "version"), *cur = kt_mpath(m, "current");

	for (;;) {
		char line[96];
		ssize_t n, k;
		int c = open(ctl, O_WRONLY), v;

		if (c < 0 || write(c, "1\n", 2) != 2)
			_exit(0);
		close(c);
		v = open(ver, O_RDONLY);
		if (v < 0)
			_exit(0);
		n = read(v, line, 32);
		close(v);
		if (n < 2 || line[n - 1] != '\n')
			_exit(0);
		line[n - 1] = ' ';
		c = open(cur, O_RDONLY);
		if (c < 0)
			_exit(0);
		k = read(c, line + n, KF_KEY_TEXT_LEN + 1);
		close(c);
		if (k != KF_KEY_TEXT_LEN)
			_exit(0);
		line[n + k] = '\n';
		if (write(fd, line, (size_t)(n + k + 1)) != n + k + 1)
			_exit(0);
		sodium_memzero(line, sizeof(line));
	}
}

/* All that can be read from fd until EOF (NUL-terminated, malloc'd). */
static char *read_all(int fd)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	char buf[4096];
	ssize_t n;

	cr_assert(f);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, f);
	fclose(f);
	sodium_memzero(buf, sizeof(buf));
	return text;
}

/*
 * The highest version of the "N KEY" lines of text, and its key into key
 * (left alone if there is none); 0 if there is none.
 */
static long last_acked(const char *text, char key[KF_KEY_TEXT_LEN + 1])
{
	long high = 0;

	for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
		char *end;
		long v = strtol(p, &end, 10);

		cr_assert(*end == ' ' && strlen(end + 1) > KF_KEY_TEXT_LEN &&
			      end[1 + KF_KEY_TEXT_LEN] == '\n',
			  "the rotating child wrote a malformed line");
		if (v > high) {
			high = v;
			memcpy(key, end + 1, KF_KEY_TEXT_LEN);
			key[KF_KEY_TEXT_LEN] = 0;
		}
	}
	return high;
}

/* status's highest_issued. */
static long highest_issued(struct kt_mount *m)
{
	char *text = kt_mread(m, "status", NULL);
	json_t *o = text ? json_loads(text, 0, NULL) : NULL;
	long v;

	cr_assert(o, "status is not JSON");
	v = (long)json_integer_value(json_object_get(o, "highest_issued"));
	cr_assert(v > 0, "status has no highest_issued");
	json_decref(o);
	free(text);
	return v;
}

/* The key served at rel equals key (text form). */
static bool serves(struct kt_mount *m, const char *rel, const char *key)
{
	size_t len = 0;
	char *text = kt_mread(m, rel, &len);
	bool same = text && len == KF_KEY_TEXT_LEN &&
		    sodium_memcmp(text, key, KF_KEY_TEXT_LEN) == 0;

	if (text)
		sodium_memzero(text, len);
	free(text);
	return same;
}

/* The highest number that starts a line of text. */
static long highest_line(const char *text)
{
	long high = 0;

	for (const char *p = text; p && *p; p = strchr(p, '\n')) {
		long v;

		if (*p == '\n')
			p++;
		v = strtol(p, NULL, 10);
		high = v > high ? v : high;
	}
	return high;
}

/*
 * The daemon is killed at random moments while a client rotates: each
 * time its mount is left stale (every call fails with ENOTCONN) and the
 * next start clears it; the version served then is the last acknowledged
 * one, or the one after it that was in flight, and the acknowledged key is
 * still served under its number (as current if nothing came after it).
 * Then the audit chain holds, every archive verifies, and no number is
 * issued twice.  KEYFS_TEST_SEED replays the kill times.
 */
Test(control, kill_9_during_rotations_never_loses_a_key, .timeout = 300)
{
	static struct kt_mount m;
	char known_key[KF_KEY_TEXT_LEN + 1], *out = NULL, *list = NULL;
	long acked = 0, archived = 0, known;
	char *text;
	int rc;

	start(&m, "ctl-kill9", "backup_keep = 1000\n");
	kt_seed();
	known = kt_mversion(&m);
	text = kt_mread(&m, "current", NULL);
	cr_assert(text && strlen(text) == KF_KEY_TEXT_LEN);
	memcpy(known_key, text, sizeof(known_key));
	sodium_memzero(text, KF_KEY_TEXT_LEN);
	free(text);
	for (int round = 0; round < 12; round++) {
		char rel[64], *p;
		struct statvfs sv;
		struct stat st;
		int fds[2], status = 0, r, e;
		pid_t child;
		long v, issued;

		/*
		 * The highest number issued so far: a daemon killed after a
		 * rotation's archive was written but before its commit burns
		 * that number (it is never issued again), so the rotation in
		 * flight in this round gets the number after it.
		 */
		issued = highest_issued(&m);
		cr_assert(pipe(fds) == 0);
		child = fork();
		cr_assert(child >= 0);
		if (child == 0) {
			close(fds[0]);
			rotate_until_killed(&m, fds[1]);
		}
		close(fds[1]);
		kt_sleep_ms(5 + rand() % 60);
		kill(m.pid, SIGKILL);
		waitpid(m.pid, &status, 0);
		m.pid = 0;
		if (kt_wait_child(child, 10000) < 0) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
		}
		text = read_all(fds[0]);
		close(fds[0]);
		v = last_acked(text, known_key);
		sodium_memzero(text, strlen(text));
		free(text);
		if (v > 0)
			acked = known = v;

		/* The mount is stale: statfs and a lookup ask the dead
		 * daemon (stat of MNT may answer from the attribute cache). */
		errno = 0;
		r = statvfs(m.mnt, &sv);
		e = errno;
		cr_assert(r < 0 && e == ENOTCONN,
			  "round %d: statfs of a killed daemon's mount: %d "
			  "(%s), want \"%s\"",
			  round, r, strerror(e), strerror(ENOTCONN));
		p = kt_mpath(&m, "no-such-name");
		errno = 0;
		r = stat(p, &st);
		e = errno;
		free(p);
		cr_assert(r < 0 && e == ENOTCONN,
			  "round %d: stat in a killed daemon's mount: %d (%s), "
			  "want \"%s\"",
			  round, r, strerror(e), strerror(ENOTCONN));
		cr_assert(kt_is_mounted(m.mnt),
			  "round %d: kill -9 left no stale mount", round);

		rc = kt_mount_start(&m, NULL);
		cr_assert(rc == 0, "round %d: no restart after kill -9 (%d)",
			  round, rc);
		v = kt_mversion(&m);
		cr_assert(v >= known,
			  "round %d: version %ld served, %ld was acknowledged",
			  round, v, known);
		cr_assert(v <= (known > issued ? known : issued) + 1,
			  "round %d: version %ld served, %ld was acknowledged, "
			  "%ld was the highest issued, and only one more can "
			  "have been in flight",
			  round, v, known, issued);
		snprintf(rel, sizeof(rel), "versions/%ld/key", known);
		cr_assert(serves(&m, rel, known_key),
			  "round %d: the restarted daemon serves another key "
			  "as version %ld than the one acknowledged",
			  round, known);
		cr_assert(v > known || serves(&m, "current", known_key),
			  "round %d: the restarted daemon serves another "
			  "current key than the one acknowledged",
			  round);
		/* What the next round starts from. */
		known = v;
		text = kt_mread(&m, "current", NULL);
		cr_assert(text && strlen(text) == KF_KEY_TEXT_LEN);
		memcpy(known_key, text, sizeof(known_key));
		sodium_memzero(text, KF_KEY_TEXT_LEN);
		free(text);
	}
	sodium_memzero(known_key, sizeof(known_key));
	cr_assert(acked > 0, "no rotation was acknowledged at all");
	cr_assert(kt_mount_stop(&m) == 0, "the daemon did not stop cleanly");

	/* The log's chain holds, and every archive verifies. */
	rc =
	    kt_runf(&out, NULL, "'%s' audit verify -c '%s'", kt_keyfs(), m.cfg);
	cr_assert(rc == 0, "audit verify after kill -9: %s", out);
	free(out);
	rc = kt_runf(
	    &list, NULL,
	    "cd '%s/backups' && for f in *.json; do '%s' backup "
	    "verify \"$PWD/$f\" -c '%s' >/dev/null || echo \"BAD $f\"; "
	    "done; '%s' backup list -c '%s' | awk 'NR > 1 { print $3 }'",
	    m.state, kt_keyfs(), m.cfg, kt_keyfs(), m.cfg);
	cr_assert(rc == 0 && !kt_contains(list, "BAD"),
		  "an archive does not verify: %s", list);
	archived = highest_line(list);
	free(list);

	/* No number any archive holds is issued again. */
	cr_assert(kt_mount_start(&m, NULL) == 0);
	cr_assert(kt_mwrite(&m, "control/rotate", "1\n") == 0);
	cr_assert(kt_mversion(&m) > archived,
		  "version %ld issued again (archives hold up to %ld)",
		  kt_mversion(&m), archived);
}
