// SPDX-License-Identifier: MIT
/*
 * Break-glass recovery through the real binary and a real mount (README:
 * Break-glass recovery): keyfs recovery-keygen's files, archives sealed to
 * recovery_public_key only when it is set, the master key deleted then
 * keyfs restore --offline --recovery-key serving the same keys, and the
 * refusals (a seal moved from another archive, the wrong private key, an
 * archive without a seal, a master key that is not lost, a public key
 * file others could replace).  Keys are compared in C, never printed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "helpers.h"

TestSuite(recovery, .fini = kt_mount_cleanup_all, .timeout = 120);

/* A recovery key pair in dir (rec.pub, rec.key unless named otherwise). */
static void keygen_ok(const char *dir, const char *pub, const char *priv,
		      char **ret_out)
{
	char *out = NULL, *err = NULL;

	cr_assert(kt_runf(&out, &err,
			  "%s recovery-keygen --public '%s/%s' --private "
			  "'%s/%s'",
			  kt_keyfs(), dir, pub, dir, priv) == 0,
		  "recovery-keygen: %s", err);
	free(err);
	if (ret_out)
		*ret_out = out;
	else
		free(out);
}

/* What keyfs recovery-keygen said of the pair sealed_mount made. */
static char *pair_said;

/* A mount configured with recovery_public_key = DIR/rec.pub (made here). */
static void sealed_mount(struct kt_mount *m, const char *tag)
{
	char *lines, *dir = kt_tmpdir("recovery-pair");

	free(pair_said);
	keygen_ok(dir, "rec.pub", "rec.key", &pair_said);
	cr_assert(asprintf(&lines, "recovery_public_key = %s/rec.pub\n", dir) >
		  0);
	kt_mount_config(m, tag, lines, NULL);
	/* The private half where the test keeps it: beside the config. */
	{
		char *from = kt_path(dir, "rec.key"),
		     *to = kt_path(m->dir, "rec.key");

		kt_copy_file(from, to);
		cr_assert(chmod(to, 0600) == 0);
		free(from);
		free(to);
	}
	free(lines);
	free(dir);
}

static void ctl_ok(struct kt_mount *m, const char *args)
{
	char *err = NULL;

	cr_assert(kt_ctl(m, NULL, &err, args) == 0, "keyfs ctl %s: %s", args,
		  err);
	free(err);
}

static json_t *archive_json(struct kt_mount *m, const char *file)
{
	char *p, *text;
	json_t *o;

	cr_assert(asprintf(&p, "%s/backups/%s", m->state, file) > 0);
	text = kt_read_file_ok(p, NULL);
	o = json_loads(text, 0, NULL);
	cr_assert(o, "%s is not JSON", p);
	free(text);
	free(p);
	return o;
}

static int recover(struct kt_mount *m, const char *key, const char *what,
		   char **out, char **err)
{
	return kt_runf(out, err,
		       "cd '%s' && %s restore --offline --recovery-key '%s' %s "
		       "-c '%s'",
		       m->dir, kt_keyfs(), key, what, m->cfg);
}

/* The state and master key bytes, and the names in state_dir. */
static char *state_print(struct kt_mount *m)
{
	char *keyring = kt_path(m->state, "keyring");
	char *mk = kt_path(m->dir, "master.key"), *names = kt_names(m->state);
	char *a = kt_read_file(keyring, NULL), *b = kt_read_file(mk, NULL);
	char *out;

	cr_assert(
	    asprintf(&out, "%s\n%s\n%s", names, a ? a : "-", b ? b : "-") > 0);
	free(a);
	free(b);
	free(names);
	free(mk);
	free(keyring);
	return out;
}

/* A refused recovery: exit 1, err holding `says`, nothing changed. */
static void refused(struct kt_mount *m, const char *key, const char *what,
		    const char *says)
{
	char *before = state_print(m), *after, *err = NULL;

	cr_assert(recover(m, key, what, NULL, &err) == 1,
		  "recovery of %s: not refused", what);
	cr_assert(kt_contains(err, says), "recovery of %s: expected \"%s\": %s",
		  what, says, err);
	after = state_print(m);
	cr_assert(strcmp(before, after) == 0,
		  "recovery of %s: the state, master key or state_dir changed",
		  what);
	free(before);
	free(after);
	free(err);
}

/* The tree's status object (caller decrefs). */
static json_t *status_of(struct kt_mount *m)
{
	char *text = kt_mread(m, "status", NULL);
	json_t *o = text ? json_loads(text, 0, NULL) : NULL;

	cr_assert(o, "status does not read as JSON");
	free(text);
	return o;
}

/* --- keygen -------------------------------------------------------------- */

Test(recovery, keygen_makes_a_0600_private_and_0644_public_key_never_replacing)
{
	char *dir = kt_tmpdir("recovery-keygen"), *out = NULL, *err = NULL;
	char *pub = kt_path(dir, "rec.pub"), *priv = kt_path(dir, "rec.key");
	char *a, *b;
	struct stat st;

	keygen_ok(dir, "rec.pub", "rec.key", &out);
	cr_assert(kt_contains(out, "fingerprint "), "%s", out);
	cr_assert(stat(priv, &st) == 0 && (st.st_mode & 07777) == 0600 &&
		  st.st_size == 45);
	cr_assert(stat(pub, &st) == 0 && (st.st_mode & 07777) == 0644 &&
		  st.st_size == 45);
	a = kt_read_file_ok(pub, NULL);
	b = kt_read_file_ok(priv, NULL);
	cr_assert(strcmp(a, b) != 0, "the two halves are the same");
	cr_assert(kt_runf(NULL, NULL, "%s validate '%.44s'", kt_keyfs(), a) ==
		  0);
	/* Never replaced: an existing public file refuses both. */
	cr_assert(kt_runf(NULL, &err,
			  "%s recovery-keygen --public '%s' --private "
			  "'%s/other.key'",
			  kt_keyfs(), pub, dir) == 1);
	cr_assert(kt_contains(err, "never replaced"), "%s", err);
	{
		char *other = kt_path(dir, "other.key"), *now;

		cr_assert(access(other, F_OK) < 0,
			  "a lone private key was made");
		now = kt_read_file_ok(pub, NULL);
		cr_assert(strcmp(now, a) == 0, "the public key was replaced");
		free(now);
		free(other);
	}
	free(err);
	err = NULL;
	cr_assert(kt_runf(NULL, &err, "%s recovery-keygen --public x",
			  kt_keyfs()) == 2);
	cr_assert(kt_contains(err, "usage"), "%s", err);
	free(err);
	free(a);
	free(b);
	free(out);
	free(pub);
	free(priv);
	free(dir);
}

/* --- archives ------------------------------------------------------------ */

Test(recovery, archives_carry_the_seal_only_when_configured)
{
	static struct kt_mount plain, sealed;
	char *pubfpr;
	json_t *a, *st, *rec;

	kt_mount_config(&plain, "recovery-plain", NULL, NULL);
	kt_mount_start_ok(&plain);
	ctl_ok(&plain, "backup unsealed");
	a = archive_json(&plain, "unsealed.json");
	cr_assert(!json_object_get(a, "recovery"),
		  "an archive carries a seal without recovery_public_key");
	json_decref(a);
	st = status_of(&plain);
	rec = json_object_get(st, "recovery");
	cr_assert(json_is_false(json_object_get(rec, "archives_sealed")));
	cr_assert(json_is_null(json_object_get(rec, "public_key_fingerprint")));
	json_decref(st);
	cr_assert(kt_mount_stop(&plain) == 0);

	sealed_mount(&sealed, "recovery-sealed");
	kt_mount_start_ok(&sealed);
	ctl_ok(&sealed, "backup sealed");
	a = archive_json(&sealed, "sealed.json");
	cr_assert(json_is_string(json_object_get(a, "recovery")),
		  "the archive carries no recovery seal");
	json_decref(a);
	/* keyfs backup verify says so; of the unsealed one, it does not. */
	{
		char *out = NULL;

		cr_assert(kt_runf(&out, NULL, "%s backup verify sealed -c '%s'",
				  kt_keyfs(), sealed.cfg) == 0);
		cr_assert(kt_contains(out, ", recovery seal"), "%s", out);
		free(out);
		cr_assert(kt_runf(&out, NULL,
				  "%s backup verify unsealed -c '%s'",
				  kt_keyfs(), plain.cfg) == 0);
		cr_assert(!kt_contains(out, "recovery seal"), "%s", out);
		free(out);
	}
	/* The fingerprint status shows is the one keygen printed. */
	st = status_of(&sealed);
	rec = json_object_get(st, "recovery");
	cr_assert(json_is_true(json_object_get(rec, "archives_sealed")));
	pubfpr = (char *)json_string_value(
	    json_object_get(rec, "public_key_fingerprint"));
	cr_assert(pubfpr && strlen(pubfpr) == 16, "no fingerprint in status");
	cr_assert(kt_contains(pair_said, pubfpr),
		  "status shows %s, keygen said: %s", pubfpr, pair_said);
	json_decref(st);
	cr_assert(kt_mount_stop(&sealed) == 0);
}

Test(recovery, a_public_key_file_others_could_replace_is_refused)
{
	static struct kt_mount m;
	char *pub, *log;

	sealed_mount(&m, "recovery-loose");
	{
		char *cfg = kt_read_file_ok(m.cfg, NULL);
		char *at = strstr(cfg, "recovery_public_key = ") +
			   strlen("recovery_public_key = ");

		pub = strndup(at, strcspn(at, "\n"));
		free(cfg);
	}
	cr_assert(chmod(pub, 0664) == 0);
	cr_assert(kt_mount_start(&m, NULL) > 0, "started with a 0664 key");
	log = kt_read_file_ok(m.log, NULL);
	cr_assert(kt_contains(log, "must not be writable by group or other"),
		  "%s", log);
	free(log);
	cr_assert(chmod(pub, 0644) == 0 && chown(pub, 1001, 1001) == 0);
	cr_assert(kt_mount_start(&m, NULL) > 0,
		  "started with a key of uid 1001");
	log = kt_read_file_ok(m.log, NULL);
	cr_assert(kt_contains(log, "must be owned by root"), "%s", log);
	free(log);
	free(pub);
}

/* --- recovery ------------------------------------------------------------ */

Test(recovery, master_key_deleted_then_recovery_serves_the_same_keys)
{
	static struct kt_mount m;
	char *cur, *prev, *now, *mk, *out = NULL, *err = NULL, *rk;
	char *lost, *names;
	json_t *recs;

	sealed_mount(&m, "recovery-lost");
	kt_mount_start_ok(&m);
	ctl_ok(&m, "rotate");
	ctl_ok(&m, "rotate");
	ctl_ok(&m, "backup before_loss");
	cur = kt_mread(&m, "current", NULL);
	prev = kt_mread(&m, "previous", NULL);
	cr_assert(cur && prev);
	cr_assert(kt_mount_stop(&m) == 0);

	/* The master key is lost; a new one is made beforehand. */
	mk = kt_path(m.dir, "master.key");
	cr_assert(unlink(mk) == 0);
	free(kt_genkey_file(m.dir, "master.key"));
	rk = kt_path(m.dir, "rec.key");
	cr_assert(recover(&m, rk, "before_loss", &out, &err) == 0,
		  "recovery: %s", err);
	cr_assert(kt_contains(out, "recovered: version 3"), "%s", out);
	names = kt_names(m.state);
	cr_assert(kt_contains(names, "keyring.lost-"),
		  "the old state was not set aside: %s", names);
	cr_assert(kt_contains(names, "lost-"), "%s", names);
	free(names);

	kt_mount_start_ok(&m);
	now = kt_mread(&m, "current", NULL);
	cr_assert(now && strcmp(now, cur) == 0, "current differs");
	free(now);
	now = kt_mread(&m, "previous", NULL);
	cr_assert(now && strcmp(now, prev) == 0, "previous differs");
	free(now);
	cr_assert(kt_mversion(&m) == 3);
	ctl_ok(&m, "rotate");
	cr_assert(kt_mversion(&m) == 4, "version numbers were reissued");
	cr_assert(kt_mount_stop(&m) == 0);

	/* A new log under the new key, opening with recovery_restore. */
	free(err);
	err = NULL;
	cr_assert(kt_runf(NULL, &err, "%s audit verify -c '%s'", kt_keyfs(),
			  m.cfg) == 0,
		  "audit verify: %s", err);
	recs = kt_audit_since(&m, 0);
	cr_assert(kt_record_is(json_array_get(recs, 0), "recovery_restore", 1),
		  "the new log does not open with recovery_restore");
	json_decref(recs);
	/* The old log is kept aside, whole, in lost-STAMP/. */
	lost = kt_names(m.state);
	{
		char *line = strstr(lost, "\nlost-"), *dir, *inside;

		cr_assert(line, "no lost- folder in %s", lost);
		line[1 + strcspn(line + 1, "\n")] = 0;
		dir = kt_path(m.state, line + 1);
		inside = kt_names(dir);
		cr_assert(kt_contains(inside, "audit.log"),
			  "the old audit log is not in %s: %s", dir, inside);
		free(inside);
		free(dir);
	}
	free(lost);
	free(cur);
	free(prev);
	free(mk);
	free(rk);
	free(out);
	free(err);
}

Test(recovery, a_moved_seal_a_wrong_key_and_no_seal_are_refused)
{
	static struct kt_mount m;
	char *rk, *a_path, *b_path, *other_dir, *other;
	char *seal_a, *seal_b, *moved;
	json_t *a, *b;

	sealed_mount(&m, "recovery-refused");
	kt_mount_start_ok(&m);
	ctl_ok(&m, "backup first");
	ctl_ok(&m, "rotate");
	ctl_ok(&m, "backup second");
	cr_assert(kt_mount_stop(&m) == 0);
	rk = kt_path(m.dir, "rec.key");

	/* second.json with first.json's seal: the clear fields differ. */
	a = archive_json(&m, "first.json");
	b = archive_json(&m, "second.json");
	seal_a = strdup(json_string_value(json_object_get(a, "recovery")));
	seal_b = strdup(json_string_value(json_object_get(b, "recovery")));
	cr_assert(asprintf(&a_path, "%s/backups/first.json", m.state) > 0);
	cr_assert(asprintf(&b_path, "%s/backups/moved.json", m.state) > 0);
	{
		char *src, *text, *at;

		cr_assert(asprintf(&src, "%s/backups/second.json", m.state) >
			  0);
		text = kt_read_file_ok(src, NULL);
		at = strstr(text, seal_b);
		cr_assert(at);
		cr_assert(asprintf(&moved, "%.*s%s%s", (int)(at - text), text,
				   seal_a, at + strlen(seal_b)) > 0);
		kt_write_file(b_path, moved, 0600);
		free(text);
		free(src);
	}
	refused(&m, rk, "moved", "belongs to another archive");

	/* Another pair's private key. */
	other_dir = kt_tmpdir("recovery-other");
	keygen_ok(other_dir, "o.pub", "o.key", NULL);
	other = kt_path(other_dir, "o.key");
	refused(&m, other, "second", "does not open under this private key");

	/* An archive made before recovery_public_key was set. */
	{
		char *text = kt_read_file_ok(a_path, NULL), *at;
		char *np;

		at = strstr(text, ",\"recovery\":\"");
		cr_assert(at);
		strcpy(at, "}\n");
		cr_assert(asprintf(&np, "%s/backups/noseal.json", m.state) > 0);
		kt_write_file(np, text, 0600);
		refused(&m, rk, "noseal", "has no recovery seal");
		free(np);
		free(text);
	}
	/* The configured master key still opens the state: not lost. */
	refused(&m, rk, "second", "not lost");
	/* A private key file others can read. */
	cr_assert(chmod(rk, 0640) == 0);
	refused(&m, rk, "second", "readable by group or other");

	json_decref(a);
	json_decref(b);
	free(seal_a);
	free(seal_b);
	free(moved);
	free(a_path);
	free(b_path);
	free(other);
	free(other_dir);
	free(rk);
}
