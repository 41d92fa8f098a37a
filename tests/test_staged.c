// SPDX-License-Identifier: MIT
/*
 * Staged rotation through a real mount (README: Staged rotation): stage,
 * promote and abort through control/rotate and `keyfs ctl`, what the tree
 * and status show at each step in every read mode, refusals that change
 * nothing, a daemon killed during staging, and scheduled staging and
 * promotion.
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
#include <unistd.h>

#include <sodium.h>

#include "mount_fixture.h"

TestSuite(staged, .fini = mt_fini, .timeout = 120);

static int step(struct kt_mount *m, const char *word)
{
	return kt_mwrite(m, "control/rotate", word);
}

static void step_ok(struct kt_mount *m, const char *word)
{
	int r = step(m, word);

	cr_assert(r == 0, "echo %s > control/rotate: %s", word, strerror(-r));
}

/* status's integer field k; 0 when it is null. */
static json_int_t status_int(struct kt_mount *m, const char *k)
{
	json_t *o = read_status(m);
	json_int_t v = json_integer_value(json_object_get(o, k));

	json_decref(o);
	return v;
}

/* key's fingerprint equals status's field k (a string). */
static bool fingerprint_is(struct kt_mount *m, const uint8_t key[KEY_LEN],
			   const char *k)
{
	char fpr[KF_KEY_FPR_LEN + 1];
	json_t *o = read_status(m);
	const char *want = json_string_value(json_object_get(o, k));
	bool same;

	kf_key_fingerprint(key, fpr);
	same = want && strcmp(fpr, want) == 0;
	json_decref(o);
	return same;
}

static bool same_key(const uint8_t *a, const uint8_t *b)
{
	return sodium_memcmp(a, b, KEY_LEN) == 0;
}

/* The staged names are absent: next, derived/<p>.next. */
static void expect_nothing_staged(struct kt_mount *m, const char *when)
{
	char rel[64];

	cr_assert(!kt_mexists(m, "next"), "%s: next exists", when);
	for (size_t i = 0; i < N_PURPOSES; i++) {
		snprintf(rel, sizeof(rel), "derived/%s.next", purposes[i]);
		cr_assert(!kt_mexists(m, rel), "%s: %s exists", when, rel);
	}
	cr_assert(status_int(m, "staged_version") == 0,
		  "%s: status names a staged version", when);
}

Test(staged, stage_shows_next_beside_an_unchanged_current)
{
	struct kt_mount *m = start("staged-stage", NULL);
	uint8_t *cur = mt_secret(KEY_LEN), *after = mt_secret(KEY_LEN);
	uint8_t *next = mt_secret(KEY_LEN), *d = mt_secret(KEY_LEN);
	uint8_t *want = mt_secret(KEY_LEN), *vkey = mt_secret(KEY_LEN);
	uint32_t v = read_version(m);
	char *p, rel[64];
	struct stat st;
	json_t *recs;

	read_key(m, "current", cur);
	expect_nothing_staged(m, "before stage");
	step_ok(m, "stage\n");
	read_key(m, "current", after);
	read_key(m, "next", next);
	cr_assert(same_key(cur, after), "stage changed current");
	cr_assert(!same_key(cur, next), "next is the current key");
	cr_assert_eq(read_version(m), v, "stage changed version");
	cr_assert_eq(status_int(m, "version"), v);
	cr_assert_eq(status_int(m, "staged_version"), v + 1);
	cr_assert(fingerprint_is(m, next, "staged_fingerprint"),
		  "status's staged fingerprint is not next's");
	p = kt_mread(m, "metrics", NULL);
	snprintf(rel, sizeof(rel), "\nkeyfs_staged_version %u\n", v + 1);
	cr_assert(kt_contains(p, rel),
		  "metrics do not give the staged version");
	free(p);
	/* Its modes: next as the keys, derived/P.next as the purpose. */
	p = kt_mpath(m, "next");
	cr_assert(stat(p, &st) == 0);
	cr_assert(st.st_mode == (S_IFREG | 0400) && st.st_uid == 0 &&
		      st.st_gid == 0,
		  "next has mode %o, %d:%d", st.st_mode, st.st_uid, st.st_gid);
	free(p);
	p = kt_mpath(m, "derived/phi.next");
	cr_assert(stat(p, &st) == 0);
	cr_assert(st.st_mode == (S_IFREG | 0440) && st.st_gid == 2001,
		  "derived/phi.next has mode %o, group %d", st.st_mode,
		  st.st_gid);
	free(p);
	for (size_t i = 0; i < N_PURPOSES; i++) {
		snprintf(rel, sizeof(rel), "derived/%s.next", purposes[i]);
		read_key(m, rel, d);
		derive(next, purposes[i], want);
		cr_assert(same_key(d, want), "%s is not derived from next",
			  rel);
		snprintf(rel, sizeof(rel), "derived/%s", purposes[i]);
		read_key(m, rel, d);
		derive(cur, purposes[i], want);
		cr_assert(same_key(d, want), "%s moved at stage", rel);
	}
	/* versions/<N+1>/ holds it too; listed beside the others. */
	snprintf(rel, sizeof(rel), "versions/%u/key", v + 1);
	read_key(m, rel, vkey);
	cr_assert(same_key(vkey, next), "%s is not next", rel);
	p = listing(m, "derived");
	cr_assert(kt_contains(p, "phi.next") && kt_contains(p, "billing.next"),
		  "derived/ lists no .next files: %s", p);
	free(p);
	recs = audit_records(m, "key_stage");
	cr_assert_eq(json_array_size(recs), 1);
	cr_assert(kt_record_is(json_array_get(recs, 0), "key_stage", 1));
	cr_assert_eq(jint(json_array_get(recs, 0), "key_version"), v + 1);
	cr_assert(
	    json_is_string(json_object_get(json_array_get(recs, 0), "backup")),
	    "stage took no backup");
	json_decref(recs);
}

Test(staged, promote_makes_the_staged_key_current)
{
	struct kt_mount *m = start("staged-promote", NULL);
	uint8_t *old = mt_secret(KEY_LEN), *next = mt_secret(KEY_LEN);
	uint8_t *k = mt_secret(KEY_LEN), *want = mt_secret(KEY_LEN);
	uint32_t v = read_version(m);
	json_t *recs;

	read_key(m, "current", old);
	step_ok(m, "stage");
	read_key(m, "next", next);
	step_ok(m, "promote\n");
	read_key(m, "current", k);
	cr_assert(same_key(k, next), "current is not the staged key");
	cr_assert_eq(read_version(m), v + 1);
	read_key(m, "previous", k);
	cr_assert(same_key(k, old), "previous is not the old current");
	read_key(m, "derived/phi", k);
	derive(next, "phi", want);
	cr_assert(same_key(k, want), "derived/phi is not from the new key");
	cr_assert(fingerprint_is(m, next, "fingerprint"));
	expect_nothing_staged(m, "after promote");
	recs = audit_records(m, "key_promote");
	cr_assert_eq(json_array_size(recs), 1);
	cr_assert(kt_record_is(json_array_get(recs, 0), "key_promote", 1));
	cr_assert_eq(jint(json_array_get(recs, 0), "key_version"), v + 1);
	cr_assert_eq(jint(json_array_get(recs, 0), "current_version"), v);
	json_decref(recs);
}

Test(staged, abort_destroys_it_and_its_number_is_never_reused)
{
	struct kt_mount *m = start("staged-abort", NULL);
	uint8_t *cur = mt_secret(KEY_LEN), *k = mt_secret(KEY_LEN);
	uint32_t v = read_version(m);
	json_t *recs, *o;
	char rel[64];

	read_key(m, "current", cur);
	step_ok(m, "stage");
	step_ok(m, "abort");
	expect_nothing_staged(m, "after abort");
	snprintf(rel, sizeof(rel), "versions/%u", v + 1);
	cr_assert(!kt_mexists(m, rel), "%s still exists", rel);
	read_key(m, "current", k);
	cr_assert(same_key(k, cur), "abort changed current");
	cr_assert_eq(read_version(m), v);
	o = read_status(m);
	cr_assert(json_integer_value(json_array_get(
		      json_object_get(o, "retired_versions"), 0)) == v + 1,
		  "the aborted number is not remembered as retired");
	json_decref(o);
	recs = audit_records(m, "key_abort");
	cr_assert_eq(json_array_size(recs), 1);
	cr_assert(kt_record_is(json_array_get(recs, 0), "key_abort", 1));
	cr_assert_eq(jint(json_array_get(recs, 0), "key_version"), v + 1);
	json_decref(recs);
	rotate_ok(m);
	cr_assert_eq(read_version(m), v + 2,
		     "rotation after abort gave %u, want %u (never %u)",
		     read_version(m), v + 2, v + 1);
	/* And a restart keeps it so. */
	cr_assert(kt_mount_stop(m) == 0);
	start_ok(m);
	cr_assert_eq(read_version(m), v + 2);
	cr_assert_eq(status_int(m, "highest_issued"), v + 2);
}

/* A write refused with errno e, whose answer holds `says`; nothing moved. */
static void refused(struct kt_mount *m, const char *text, int e,
		    const char *says)
{
	char *before = kt_mstatus_keys(m), *after, *out = NULL, *err = NULL;
	size_t mark = kt_audit_size(m);
	int r = kt_mwrite(m, "control/rotate", text);
	json_t *recs;

	cr_assert(r == -e, "\"%s\": %s, want %s", text, strerror(-r),
		  strerror(e));
	after = kt_mstatus_keys(m);
	cr_assert(before && after && strcmp(before, after) == 0,
		  "\"%s\" was refused but changed the keyring", text);
	recs = kt_audit_since(m, mark);
	cr_assert(json_array_size(recs) >= 1 &&
		      json_is_false(json_object_get(
			  json_array_get(recs, json_array_size(recs) - 1),
			  "success")),
		  "\"%s\": no failure record", text);
	json_decref(recs);
	/* keyfs ctl passes the daemon's words on (audited mode). */
	if (says) {
		char *arg = strdup(text), *nl = strchr(arg, '\n'), cmd[96];

		if (nl)
			*nl = 0;
		snprintf(cmd, sizeof(cmd), "rotate %s", arg);
		cr_assert(kt_ctl(m, &out, &err, cmd) == 1,
			  "keyfs ctl %s did not fail", cmd);
		cr_assert(kt_contains(err, says), "keyfs ctl %s said: %s", cmd,
			  err);
		free(arg);
	}
	free(out);
	free(err);
	free(before);
	free(after);
}

Test(staged, bad_steps_are_refused_and_change_nothing)
{
	struct kt_mount *m = start("staged-refuse", NULL);

	refused(m, "promote\n", ENOENT, "no version is staged");
	refused(m, "abort\n", ENOENT, "no version is staged");
	refused(m, "stage x\n", EINVAL, NULL);
	refused(m, "promoteX\n", EINVAL, NULL);
	refused(m, "STAGE\n", EINVAL, NULL);
	step_ok(m, "stage");
	refused(m, "stage\n", EBUSY, "is staged already");
	refused(m, "1\n", EBUSY, NULL);
	refused(m, "rotate\n", EBUSY, NULL);
	{
		char *out = NULL, *err = NULL;

		cr_assert(kt_ctl(m, &out, &err, "rotate") == 1,
			  "keyfs ctl rotate while staged did not fail");
		cr_assert(kt_contains(err, "a version is staged"),
			  "keyfs ctl rotate said: %s", err);
		free(out);
		free(err);
	}
	/* Retire of the staged version: refused, abort is the way. */
	{
		char *before = kt_mstatus_keys(m), *after, num[16];
		int r;

		snprintf(num, sizeof(num), "%lld",
			 (long long)status_int(m, "staged_version"));
		r = kt_mwrite(m, "control/retire", num);
		cr_assert(r == -EBUSY, "retire of the staged version: %s",
			  strerror(-r));
		after = kt_mstatus_keys(m);
		cr_assert(strcmp(before, after) == 0);
		free(before);
		free(after);
	}
	cr_assert(kt_mexists(m, "next"), "a refusal dropped the staged key");
}

Test(staged, keyfs_ctl_rotate_steps_print_what_happened)
{
	struct kt_mount *m = start("staged-ctl", NULL);
	uint32_t v = read_version(m);
	char *out = NULL, *err = NULL, want[64];

	cr_assert(kt_ctl(m, &out, &err, "rotate stage") == 0, "%s", err);
	snprintf(want, sizeof(want), "version %u staged", v + 1);
	cr_assert(kt_contains(out, want), "keyfs ctl rotate stage: %s", out);
	free(out);
	free(err);
	cr_assert(kt_ctl(m, &out, &err, "status") == 0, "%s", err);
	cr_assert(kt_contains(out, "staged"), "status summary: %s", out);
	free(out);
	free(err);
	cr_assert(kt_ctl(m, &out, &err, "rotate promote") == 0, "%s", err);
	snprintf(want, sizeof(want), "version %u promoted", v + 1);
	cr_assert(kt_contains(out, want), "keyfs ctl rotate promote: %s", out);
	free(out);
	free(err);
	cr_assert(kt_ctl(m, &out, &err, "rotate bogus") == 2,
		  "keyfs ctl rotate bogus is no usage error");
	cr_assert(kt_contains(err, "stage/promote/abort"), "usage: %s", err);
	free(out);
	free(err);
	cr_assert_eq(read_version(m), v + 1);
}

/* kill -9 of the daemon; the stale mount is cleared by the next start. */
static void crash(struct kt_mount *m)
{
	cr_assert(m->pid > 0);
	cr_assert(kill(m->pid, SIGKILL) == 0);
	cr_assert(waitpid(m->pid, NULL, 0) == m->pid);
	m->pid = 0;
}

Test(staged, a_staged_version_survives_kill_9_once_stage_returned)
{
	struct kt_mount *m = start("staged-durable", NULL);
	uint8_t *next = mt_secret(KEY_LEN), *again = mt_secret(KEY_LEN);
	uint32_t v = read_version(m);

	step_ok(m, "stage");
	read_key(m, "next", next);
	crash(m);
	start_ok(m);
	cr_assert_eq(status_int(m, "staged_version"), v + 1,
		     "the staged version did not survive kill -9");
	read_key(m, "next", again);
	cr_assert(same_key(next, again), "another key is staged now");
	step_ok(m, "promote");
	read_key(m, "current", again);
	cr_assert(same_key(next, again));
}

/*
 * After a kill at any moment: either nothing is staged and no staged name
 * exists, or the staged version is whole -- next, derived/P.next and
 * versions/N/key agree with status -- and its number is issued.
 */
static void expect_whole_or_nothing(struct kt_mount *m, int round,
				    uint8_t *next, uint8_t *k, uint8_t *want)
{
	json_int_t sv = status_int(m, "staged_version");
	char rel[64], when[32];

	snprintf(when, sizeof(when), "round %d", round);
	if (sv == 0) {
		expect_nothing_staged(m, when);
		return;
	}
	cr_assert(status_int(m, "highest_issued") >= sv, "%s", when);
	read_key(m, "next", next);
	cr_assert(fingerprint_is(m, next, "staged_fingerprint"),
		  "%s: next is not the staged key status names", when);
	snprintf(rel, sizeof(rel), "versions/%lld/key", (long long)sv);
	read_key(m, rel, k);
	cr_assert(same_key(k, next), "%s: %s is not next", when, rel);
	read_key(m, "derived/phi.next", k);
	derive(next, "phi", want);
	cr_assert(same_key(k, want), "%s: derived/phi.next is not next's",
		  when);
}

/* Child: stages and aborts until the tree goes away. */
static void stage_until_killed(struct kt_mount *m)
{
	char *ctl = kt_mpath(m, "control/rotate");

	for (;;) {
		int fd = open(ctl, O_WRONLY);

		if (fd < 0 || write(fd, "stage\n", 6) != 6)
			_exit(0);
		close(fd);
		fd = open(ctl, O_WRONLY);
		if (fd < 0 || write(fd, "abort\n", 6) != 6)
			_exit(0);
		close(fd);
	}
}

Test(staged, kill_9_during_staging_leaves_it_whole_or_absent, .timeout = 300)
{
	struct kt_mount *m = start("staged-kill9", "backup_keep = 1000\n");
	uint8_t *cur = mt_secret(KEY_LEN), *k = mt_secret(KEY_LEN);
	uint8_t *next = mt_secret(KEY_LEN), *want = mt_secret(KEY_LEN);
	uint32_t v = read_version(m);
	int staged = 0;

	kt_seed();
	read_key(m, "current", cur);
	for (int round = 0; round < 30; round++) {
		pid_t child = fork();

		cr_assert(child >= 0);
		if (child == 0)
			stage_until_killed(m);
		kt_sleep_ms(5 + rand() % 80);
		crash(m);
		if (kt_wait_child(child, 10000) < 0) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
		}
		start_ok(m);
		expect_whole_or_nothing(m, round, next, k, want);
		staged += status_int(m, "staged_version") != 0;
		/* Current never moves: only stage and abort ran. */
		cr_assert_eq(read_version(m), v, "round %d", round);
		read_key(m, "current", k);
		cr_assert(same_key(k, cur), "round %d: current changed", round);
		if (status_int(m, "staged_version"))
			step_ok(m, "abort");
	}
	{
		char *out = NULL;
		int rc = kt_runf(&out, NULL, "'%s' audit verify -c '%s'",
				 kt_keyfs(), m->cfg);

		cr_assert(rc == 0, "audit verify after kill -9: %s", out);
		free(out);
	}
	cr_log_info("%d of 30 kills left a staged version", staged);
}

/*
 * After a promotion every read mode serves the new current at once, and
 * next is gone; after a stage, next appears although it was looked up
 * (and missing) before.
 */
static void reads_follow(const char *mode_line, const char *tag)
{
	struct kt_mount *m = start(tag, mode_line);
	uint8_t *cur = mt_secret(KEY_LEN), *next = mt_secret(KEY_LEN);
	uint8_t *k = mt_secret(KEY_LEN), *want = mt_secret(KEY_LEN);

	read_key(m, "current", cur);
	read_key(m, "derived/phi", k);
	cr_assert(!kt_mexists(m, "next"));
	cr_assert(!kt_mexists(m, "derived/phi.next"));
	step_ok(m, "stage");
	read_key(m, "next", next);
	read_key(m, "derived/phi.next", k);
	derive(next, "phi", want);
	cr_assert(same_key(k, want), "%s: derived/phi.next stale", mode_line);
	read_key(m, "current", k);
	cr_assert(same_key(k, cur), "%s: current moved at stage", mode_line);
	step_ok(m, "promote");
	read_key(m, "current", k);
	cr_assert(same_key(k, next), "%s: current after promote is stale",
		  mode_line);
	read_key(m, "derived/phi", k);
	cr_assert(same_key(k, want), "%s: derived/phi after promote is stale",
		  mode_line);
	read_key(m, "previous", k);
	cr_assert(same_key(k, cur), "%s: previous after promote", mode_line);
	cr_assert(!kt_mexists(m, "next"), "%s: next after promote", mode_line);
	cr_assert(!kt_mexists(m, "derived/phi.next"),
		  "%s: derived/phi.next after promote", mode_line);
	cr_assert(kt_mount_stop(m) == 0);
}

Test(staged, reads_follow_stage_and_promote_audited)
{
	reads_follow("read_mode = audited\n", "staged-audited");
}

Test(staged, reads_follow_stage_and_promote_strict)
{
	reads_follow("read_mode = strict\n", "staged-strict");
}

Test(staged, reads_follow_stage_and_promote_cached)
{
	reads_follow("read_mode = cached\n", "staged-cached");
}

/*
 * Polls status until field k is not null: that status (a new reference),
 * or NULL when it never was.
 */
static json_t *wait_status(struct kt_mount *m, const char *k, int seconds)
{
	for (int i = 0; i < seconds * 10; i++) {
		json_t *o = read_status(m);

		if (!json_is_null(json_object_get(o, k)))
			return o;
		json_decref(o);
		kt_sleep_ms(100);
	}
	return NULL;
}

Test(staged, scheduled_rotation_stages_then_promotes_after_stage_delay,
     .timeout = 120)
{
	struct kt_mount *m = mount_new();
	uint32_t v;
	json_t *recs, *o;

	kt_mount_config_full(m, "staged-sched",
			     "mode = development\n" PURPOSES_LINE
			     "rotate_interval = 2s\nrotate_mode = stage\n"
			     "stage_delay = 2s\n",
			     NULL);
	start_ok(m);
	v = read_version(m);

	o = read_status(m);
	cr_assert_str_eq(json_string_value(json_object_get(o, "rotate_mode")),
			 "stage");
	json_decref(o);
	o = wait_status(m, "staged_version", 60);
	cr_assert(o, "nothing was staged by the schedule");
	/* The same snapshot: the promotion may follow at any moment. */
	cr_assert(json_is_string(json_object_get(o, "next_promotion")),
		  "status does not say when it will be promoted");
	cr_assert(json_is_null(json_object_get(o, "next_rotation")),
		  "status names a rotation while a version is staged");
	json_decref(o);
	/* Promoted: the version moves (and the schedule goes on). */
	for (int i = 0; i < 600 && read_version(m) == v; i++)
		kt_sleep_ms(100);
	cr_assert(read_version(m) > v, "the staged version was not promoted");
	recs = audit_records(m, "key_stage");
	cr_assert(json_array_size(recs) >= 1 &&
		      json_is_true(json_object_get(json_array_get(recs, 0),
						   "automatic")),
		  "no automatic key_stage record");
	json_decref(recs);
	recs = audit_records(m, "key_promote");
	cr_assert(json_array_size(recs) >= 1 &&
		      json_is_true(json_object_get(json_array_get(recs, 0),
						   "automatic")),
		  "no automatic key_promote record");
	json_decref(recs);
	/* No one-step rotation ran: each version went through stage. */
	recs = audit_records(m, "key_rotation");
	cr_assert_eq(json_array_size(recs), 0);
	json_decref(recs);
}

/*
 * A restore of an archive taken before the stage drops the staged version
 * (its number stays issued); one taken while it was staged brings it back,
 * unless it was aborted since.
 */
Test(staged, restore_drops_or_keeps_the_staged_version_as_the_archive_had_it)
{
	struct kt_mount *m = start("staged-restore", NULL);
	uint8_t *next = mt_secret(KEY_LEN), *k = mt_secret(KEY_LEN);
	uint32_t v = read_version(m);
	int r;

	cr_assert(kt_mwrite(m, "control/backup", "before\n") == 0);
	step_ok(m, "stage");
	read_key(m, "next", next);
	cr_assert(kt_mwrite(m, "control/backup", "while\n") == 0);
	cr_assert(kt_mwrite(m, "control/restore", "before\n") == 0);
	expect_nothing_staged(m, "after restoring an archive without it");
	cr_assert_eq(status_int(m, "highest_issued"), v + 1,
		     "the staged number was forgotten");
	cr_assert(kt_mwrite(m, "control/restore", "while\n") == 0);
	cr_assert_eq(status_int(m, "staged_version"), v + 1);
	read_key(m, "next", k);
	cr_assert(same_key(k, next), "the restored next is another key");
	step_ok(m, "abort");
	r = kt_mwrite(m, "control/restore", "while\n");
	cr_assert(r == 0, "restore after abort: %s", strerror(-r));
	expect_nothing_staged(m, "an aborted version came back by a restore");
	rotate_ok(m);
	cr_assert_eq(read_version(m), v + 2);
}

/* Line i of the key set at rel, decoded into out; false past its end. */
static bool set_line(struct kt_mount *m, const char *rel, size_t i,
		     uint8_t out[KEY_LEN])
{
	char *text = kt_mread(m, rel, NULL), err[KF_ERR_MAX];
	char *line = text;
	bool ok = false;

	for (size_t k = 0; k < i && line; k++) {
		line = strchr(line, '\n');
		line = line && line[1] ? line + 1 : NULL;
	}
	if (line)
		ok = kf_key_decode(line, strcspn(line, "\n"), out, err) == 0;
	sodium_memzero(text, strlen(text));
	free(text);
	return ok;
}

Test(staged, key_sets_hold_the_staged_key_after_the_current_one)
{
	struct kt_mount *m = start("staged-keyset", NULL);
	uint8_t *prev = mt_secret(KEY_LEN), *cur = mt_secret(KEY_LEN);
	uint8_t *next = mt_secret(KEY_LEN), *line = mt_secret(KEY_LEN);
	uint8_t *want = mt_secret(KEY_LEN);
	uint8_t *order[3] = {cur, next, prev};

	read_key(m, "current", prev);
	step_ok(m, "1\n");
	read_key(m, "current", cur);
	step_ok(m, "stage\n");
	read_key(m, "next", next);
	/* current, then the staged key, then the older ones. */
	for (size_t i = 0; i < 3; i++) {
		cr_assert(set_line(m, "keys/phi", i, line),
			  "keys/phi has no line %zu while staged", i + 1);
		derive(order[i], "phi", want);
		cr_assert(same_key(line, want),
			  "line %zu of keys/phi is not the %s key's", i + 1,
			  i == 0   ? "current"
			  : i == 1 ? "staged"
				   : "previous");
	}
	cr_assert(!set_line(m, "keys/phi", 3, line),
		  "keys/phi has more than three lines");
	/* Promoted: the staged key is current, the set one shorter. */
	step_ok(m, "promote\n");
	cr_assert(set_line(m, "keys/phi", 0, line));
	derive(next, "phi", want);
	cr_assert(same_key(line, want), "keys/phi does not start with next");
	cr_assert(set_line(m, "keys/phi", 1, line));
	derive(cur, "phi", want);
	cr_assert(same_key(line, want), "keys/phi's second line is not cur");
	cr_assert(!set_line(m, "keys/phi", 2, line),
		  "keys/phi keeps more than retain_versions");
}
