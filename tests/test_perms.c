// SPDX-License-Identifier: MIT
/*
 * The permission matrix of a real mount, with real other uids and gids
 * (setpriv), and Python reading keys as an application would.
 *
 * Configuration: derived/phi is 0:2001 0440, derived/pii 0:2002 0440, the
 * other purposes, keys, backups and audit.log keep the defaults (root 0400),
 * status and version 0444.  Key text is only ever compared, never printed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

#define PERMS_SECTIONS                                                         \
	"[purpose phi]\naccess = 0:2001 0440\n"                                \
	"[purpose pii]\naccess = 0:2002 0440\n"

/* setpriv credentials of the callers in the matrix. */
#define PHI_APP "--reuid=1001 --regid=2001 --groups=2001"
#define PII_APP "--reuid=1002 --regid=2002 --groups=2002"
#define OUTSIDER "--reuid=1003 --regid=1003 --clear-groups"
#define ROOT_GROUP "--reuid=1004 --regid=0 --groups=0"
#define BOTH_APPS "--reuid=1005 --regid=1005 --groups=2001,2002"

static const char *const all_users[] = {PHI_APP, PII_APP, OUTSIDER, ROOT_GROUP,
					BOTH_APPS};
static const char *const control_files[] = {
    "rotate", "retire", "backup", "restore", "prune", "audit-rotate"};

static struct kt_mount M;

/*
 * Mounts the matrix tree, with `lines` (may be NULL) added to [keyfs], and
 * rotates once, so previous and versions/1 exist.
 */
static void start_matrix_with(const char *tag, const char *lines)
{
	char *v;

	kt_mount_config(&M, tag, lines, PERMS_SECTIONS);
	cr_assert_eq(kt_mount_start(&M, NULL), 0, "mount failed; see %s",
		     M.log);
	cr_assert_eq(kt_mwrite(&M, "control/rotate", "1\n"), 0,
		     "root could not rotate");
	v = kt_mread(&M, "version", NULL);
	cr_assert(v && strcmp(v, "2\n") == 0, "expected version 2 after setup");
	free(v);
}

static void start_matrix(const char *tag)
{
	start_matrix_with(tag, NULL);
}

/* `who` reads rel; its content must equal what root reads. */
static void assert_reads(const char *who, const char *rel)
{
	char *p = kt_mpath(&M, rel), *out = NULL, *err = NULL;
	char *expect = kt_mread(&M, rel, NULL);
	int rc = kt_run_as(who, &out, &err, "cat '%s'", p);

	cr_assert_not_null(expect, "root cannot read %s", rel);
	cr_assert_eq(rc, 0, "setpriv %s: cat %s failed (exit %d): %s", who, rel,
		     rc, err);
	cr_assert(strcmp(out, expect) == 0,
		  "setpriv %s: %s differs from what root reads", who, rel);
	free(p);
	free(out);
	free(err);
	free(expect);
}

/* `who` gets EACCES ("Permission denied") on reading rel; reads nothing. */
static void assert_denied(const char *who, const char *rel)
{
	char *p = kt_mpath(&M, rel), *out = NULL, *err = NULL;
	int rc = kt_run_as(who, &out, &err, "cat '%s'", p);

	cr_assert_neq(rc, 0, "setpriv %s: cat %s succeeded", who, rel);
	cr_assert(kt_contains(err, "Permission denied"),
		  "setpriv %s: cat %s: expected Permission denied, got: %s",
		  who, rel, err);
	cr_assert(out[0] == 0, "setpriv %s: cat %s printed something", who,
		  rel);
	free(p);
	free(out);
	free(err);
}

/* Every key file a caller with no key access must not read. */
static void assert_no_root_keys(const char *who)
{
	static const char *const keys[] = {"current", "previous",
					   "versions/1/key", "versions/2/key"};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		assert_denied(who, keys[i]);
}

/* How many audit records of `event` the log holds (read as root). */
static size_t count_events(const char *event)
{
	json_t *recs = kt_audit_since(&M, 0);
	size_t n = kt_count_records(recs, event, -1);

	json_decref(recs);
	return n;
}

Test(perms, phi_group_reads_phi_only, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	start_matrix("perms-phi");
	assert_reads(PHI_APP, "derived/phi");
	assert_reads(PHI_APP, "versions/2/derived/phi");
	assert_reads(PHI_APP, "versions/1/derived/phi");
	assert_denied(PHI_APP, "derived/pii");
	assert_denied(PHI_APP, "versions/2/derived/pii");
	assert_denied(PHI_APP, "derived/audit");
	assert_denied(PHI_APP, "derived/backup");
	assert_denied(PHI_APP, "audit.log");
	assert_no_root_keys(PHI_APP);
}

Test(perms, pii_group_reads_pii_only, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	start_matrix("perms-pii");
	assert_reads(PII_APP, "derived/pii");
	assert_reads(PII_APP, "versions/1/derived/pii");
	assert_denied(PII_APP, "derived/phi");
	assert_denied(PII_APP, "versions/2/derived/phi");
	assert_denied(PII_APP, "derived/audit");
	assert_no_root_keys(PII_APP);
}

Test(perms, outsider_reads_no_key_but_version_and_status,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static const char *const purposes[] = {"phi", "pii", "audit", "backup"};
	char rel[64];

	start_matrix("perms-out");
	for (size_t i = 0; i < sizeof(purposes) / sizeof(purposes[0]); i++) {
		snprintf(rel, sizeof(rel), "derived/%s", purposes[i]);
		assert_denied(OUTSIDER, rel);
		snprintf(rel, sizeof(rel), "versions/1/derived/%s",
			 purposes[i]);
		assert_denied(OUTSIDER, rel);
	}
	assert_no_root_keys(OUTSIDER);
	assert_denied(OUTSIDER, "audit.log");
	assert_reads(OUTSIDER, "version");
	assert_reads(OUTSIDER, "status");
}

Test(perms, group_by_supplementary_or_primary_gid, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	start_matrix("perms-grp");
	/* 2001 only as a supplementary group. */
	assert_reads("--reuid=1001 --regid=1001 --groups=2001", "derived/phi");
	/* 2001 only as the primary (real and effective) gid. */
	assert_reads("--reuid=1001 --regid=2001 --clear-groups", "derived/phi");
	/* Neither: the same uid reads nothing. */
	assert_denied("--reuid=1001 --regid=1001 --clear-groups",
		      "derived/phi");
	/* Both groups: both purposes, and still no data key. */
	assert_reads(BOTH_APPS, "derived/phi");
	assert_reads(BOTH_APPS, "derived/pii");
	assert_denied(BOTH_APPS, "derived/audit");
	assert_no_root_keys(BOTH_APPS);
}

Test(perms, only_root_reads_data_keys, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	char *cur;

	start_matrix("perms-root");
	cur = kt_mread(&M, "current", NULL);
	cr_assert(cur && strlen(cur) == 44, "root cannot read current");
	free(cur);
	for (size_t i = 0; i < sizeof(all_users) / sizeof(all_users[0]); i++)
		assert_no_root_keys(all_users[i]);
	/* Membership of group 0 grants nothing: keys are 0400. */
	assert_denied(ROOT_GROUP, "derived/phi");
	assert_denied(ROOT_GROUP, "audit.log");
}

Test(perms, backups_and_control_not_listable_by_others,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	char *p, *err = NULL;
	int rc;

	start_matrix("perms-ls");
	/* Root lists both (the setup rotation made an automatic backup). */
	p = kt_mpath(&M, "backups");
	cr_assert_eq(kt_runf(NULL, NULL, "ls '%s' | grep -q json", p), 0,
		     "root cannot list backups/ or it is empty");
	free(p);
	for (size_t i = 0; i < sizeof(all_users) / sizeof(all_users[0]); i++) {
		const char *dirs[] = {"backups", "control"};

		for (size_t d = 0; d < 2; d++) {
			p = kt_mpath(&M, dirs[d]);
			rc = kt_run_as(all_users[i], NULL, &err, "ls '%s'", p);
			cr_assert_neq(rc, 0, "setpriv %s: ls %s succeeded",
				      all_users[i], dirs[d]);
			cr_assert(kt_contains(err, "Permission denied"),
				  "setpriv %s: ls %s: %s", all_users[i],
				  dirs[d], err);
			free(err);
			free(p);
		}
	}
}

Test(perms, no_other_user_opens_a_control_file_for_writing,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	char *p, *err = NULL, *out = NULL;
	int rc;

	start_matrix("perms-ctl");
	for (size_t i = 0; i < sizeof(all_users) / sizeof(all_users[0]); i++) {
		for (size_t c = 0;
		     c < sizeof(control_files) / sizeof(control_files[0]);
		     c++) {
			cr_assert(asprintf(&p, "%s/control/%s", M.mnt,
					   control_files[c]) > 0);
			/* O_WRONLY (echo >) and O_RDWR (what keyfs ctl uses).
			 */
			rc = kt_run_as(all_users[i], NULL, &err,
				       "sh -c 'echo 1 > \"%s\"'", p);
			cr_assert_neq(rc, 0,
				      "setpriv %s: echo > control/%s "
				      "succeeded",
				      all_users[i], control_files[c]);
			cr_assert(kt_contains(err, "Permission denied"),
				  "setpriv %s: echo > control/%s: %s",
				  all_users[i], control_files[c], err);
			free(err);
			rc = kt_run_as(all_users[i], NULL, &err,
				       "sh -c 'exec 3<> \"%s\"'", p);
			cr_assert_neq(rc, 0, "setpriv %s: O_RDWR control/%s",
				      all_users[i], control_files[c]);
			cr_assert(kt_contains(err, "Permission denied"),
				  "setpriv %s: O_RDWR control/%s: %s",
				  all_users[i], control_files[c], err);
			free(err);
			free(p);
		}
	}
	/* keyfs ctl as an app user: refused, in words. */
	rc = kt_run_as(PHI_APP, &out, &err, "%s ctl rotate --mount '%s'",
		       kt_keyfs(), M.mnt);
	cr_assert_neq(rc, 0, "keyfs ctl rotate as uid 1001 succeeded");
	cr_assert(kt_contains(err, "Permission denied"),
		  "keyfs ctl rotate as uid 1001: %s", err);
	free(out);
	free(err);
}

Test(perms, denied_rotate_changes_nothing, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	char *p, *err = NULL, *cur_before, *cur_after, *v;
	size_t rotations;
	int rc;

	start_matrix("perms-rot");
	cur_before = kt_mread(&M, "current", NULL);
	cr_assert_not_null(cur_before);
	rotations = count_events("key_rotation");
	cr_assert_eq(rotations, 1, "setup should log one rotation, got %zu",
		     rotations);

	p = kt_mpath(&M, "control/rotate");
	rc = kt_run_as(PHI_APP, NULL, &err, "sh -c 'echo 1 > \"%s\"'", p);
	cr_assert_neq(rc, 0, "echo 1 > control/rotate as uid 1001 succeeded");
	cr_assert(kt_contains(err, "Permission denied"),
		  "echo 1 > control/rotate as uid 1001: %s", err);
	free(err);
	free(p);

	v = kt_mread(&M, "version", NULL);
	cr_assert(v && strcmp(v, "2\n") == 0,
		  "version changed after a refused rotation: %s", v);
	free(v);
	cur_after = kt_mread(&M, "current", NULL);
	cr_assert(cur_after && strcmp(cur_before, cur_after) == 0,
		  "current changed after a refused rotation");
	cr_assert_eq(count_events("key_rotation"), rotations,
		     "a key_rotation record appeared after a refused write");
	free(cur_before);
	free(cur_after);
}

/* --- Python, as an application would ------------------------------------- */

static const char py_encrypt[] =
    "import sys\n"
    "from cryptography.fernet import Fernet\n"
    "mnt, tok = sys.argv[1], sys.argv[2]\n"
    "with open(mnt + \"/derived/phi\", \"rb\") as f:\n"
    "    key = f.read()\n"
    "token = Fernet(key).encrypt(b\"patient record 42\")\n"
    "with open(tok, \"wb\") as f:\n"
    "    f.write(token)\n"
    "print(\"encrypted\")\n";

static const char py_decrypt[] =
    "import sys\n"
    "from cryptography.fernet import Fernet, MultiFernet, InvalidToken\n"
    "mnt, old, tok = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "def key(rel):\n"
    "    with open(mnt + \"/\" + rel, \"rb\") as f:\n"
    "        return Fernet(f.read())\n"
    "new = key(\"derived/phi\")\n"
    "prev = key(\"versions/\" + old + \"/derived/phi\")\n"
    "with open(tok, \"rb\") as f:\n"
    "    token = f.read()\n"
    "try:\n"
    "    new.decrypt(token)\n"
    "    print(\"new key alone decrypts: no rotation\")\n"
    "    sys.exit(1)\n"
    "except InvalidToken:\n"
    "    pass\n"
    "ok = MultiFernet([new, prev]).decrypt(token) == b\"patient record 42\"\n"
    "print(\"ok\" if ok else \"wrong plaintext\")\n";

static const char py_derive[] =
    "import sys, hashlib, base64\n"
    "mnt = sys.argv[1]\n"
    "def raw(rel):\n"
    "    with open(mnt + \"/\" + rel, \"rb\") as f:\n"
    "        return base64.urlsafe_b64decode(f.read())\n"
    "def derive(key, purpose):\n"
    "    return hashlib.blake2b(purpose.encode(), digest_size=32, key=key,\n"
    "                           person=b\"keyfs.derive.v1\").digest()\n"
    "pairs = [(\"current\", \"derived/\"), (\"versions/1/key\",\n"
    "         \"versions/1/derived/\")]\n"
    "good = all(derive(raw(k), p) == raw(d + p) for k, d in pairs\n"
    "           for p in (\"phi\", \"pii\", \"audit\", \"backup\"))\n"
    "print(\"match\" if good else \"mismatch\")\n";

Test(perms, python_app_fernet_survives_rotation, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	char *dir = kt_tmpdir("perms-py"), *tok, *out = NULL, *err = NULL, *v;
	int rc;

	kt_mount_config(&M, "perms-pyapp", NULL, PERMS_SECTIONS);
	cr_assert_eq(kt_mount_start(&M, NULL), 0, "mount failed; see %s",
		     M.log);
	/* The app's own directory: it writes its ciphertext there. */
	cr_assert(chown(dir, 1001, 2001) == 0);
	cr_assert(chmod(dir, 0755) == 0);
	cr_assert(asprintf(&tok, "%s/token.bin", dir) > 0);

	v = kt_mread(&M, "version", NULL);
	cr_assert(v && strcmp(v, "1\n") == 0, "fresh tree is not version 1");
	rc = kt_run_as(PHI_APP, &out, &err,
		       "/usr/bin/python3 -I -c '%s' '%s' '%s'", py_encrypt,
		       M.mnt, tok);
	cr_assert_eq(rc, 0, "encrypt as uid 1001 failed: %s", err);
	cr_assert(strcmp(out, "encrypted\n") == 0, "encrypt said: %s", out);
	free(out);
	free(err);

	cr_assert_eq(kt_mwrite(&M, "control/rotate", "1\n"), 0,
		     "root rotation failed");
	free(v);
	v = kt_mread(&M, "version", NULL);
	cr_assert(v && strcmp(v, "2\n") == 0, "rotation did not give 2");

	rc = kt_run_as(PHI_APP, &out, &err,
		       "/usr/bin/python3 -I -c '%s' '%s' 1 '%s'", py_decrypt,
		       M.mnt, tok);
	cr_assert_eq(rc, 0, "MultiFernet as uid 1001 failed: %s %s", out, err);
	cr_assert(strcmp(out, "ok\n") == 0, "MultiFernet said: %s", out);
	free(out);
	free(err);
	free(v);
	free(tok);
	free(dir);
}

Test(perms, python_app_reads_own_purpose_only, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	char *out = NULL, *err = NULL;
	int rc;

	start_matrix("perms-pyc");
	/* The literal app one-liner, no script file: a valid Fernet key. */
	rc = kt_run_as(PHI_APP, &out, &err,
		       "/usr/bin/python3 -I -c '"
		       "from cryptography.fernet import Fernet; "
		       "f = Fernet(open(\"%s/derived/phi\", \"rb\").read()); "
		       "print(\"ok\" if f.decrypt(f.encrypt(b\"x\")) == b\"x\" "
		       "else \"bad\")'",
		       M.mnt);
	cr_assert_eq(rc, 0, "python -c as uid 1001 failed: %s", err);
	cr_assert(strcmp(out, "ok\n") == 0, "python -c said: %s", out);
	free(out);
	free(err);
	/* The same one-liner on pii: PermissionError, not a key. */
	rc = kt_run_as(PHI_APP, &out, &err,
		       "/usr/bin/python3 -I -c '"
		       "open(\"%s/derived/pii\", \"rb\").read()'",
		       M.mnt);
	cr_assert_neq(rc, 0, "python read pii as uid 1001");
	cr_assert(kt_contains(err, "PermissionError"), "python said: %s", err);
	free(out);
	free(err);
}

Test(perms, python_blake2b_of_current_equals_derived,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	char *out = NULL, *err = NULL;
	int rc;

	start_matrix("perms-blake");
	rc = kt_runf(&out, &err, "/usr/bin/python3 -I -c '%s' '%s'", py_derive,
		     M.mnt);
	cr_assert_eq(rc, 0, "python derive check failed: %s", err);
	cr_assert(strcmp(out, "match\n") == 0,
		  "hashlib.blake2b(current) vs derived/: %s", out);
	free(out);
	free(err);
}

/* --- audit of opens by other users ---------------------------------------- */

/* The key_open record for `path` by `pid`, or NULL (caller decrefs). */
static json_t *find_open(const char *path, long pid)
{
	json_t *recs = kt_audit_since(&M, 0), *rec, *found = NULL;
	size_t i;

	json_array_foreach(recs, i, rec)
	{
		if (kt_record_is(rec, "key_open", -1) &&
		    strcmp(kt_str_of(rec, "path"), path) == 0 &&
		    (pid < 0 ||
		     json_integer_value(json_object_get(rec, "pid")) == pid)) {
			found = json_incref(rec);
			break;
		}
	}
	json_decref(recs);
	return found;
}

Test(perms, audit_records_open_by_caller_uid_gid_path,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	const char *rels[] = {"derived/phi", "versions/2/derived/phi"};
	char *p, *out = NULL;
	json_t *rec;
	long pid;

	start_matrix("perms-audit");
	for (size_t i = 0; i < 2; i++) {
		p = kt_mpath(&M, rels[i]);
		/* exec keeps the pid, so the record's pid is cat's. */
		cr_assert_eq(kt_run_as(PHI_APP, &out, NULL,
				       "sh -c 'echo $$; exec cat \"%s\" "
				       ">/dev/null'",
				       p),
			     0, "uid 1001 cannot read %s", rels[i]);
		pid = strtol(out, NULL, 10);
		cr_assert_gt(pid, 0);
		free(out);
		free(p);

		rec = find_open(rels[i], pid);
		cr_assert_not_null(rec, "no key_open record for %s by pid %ld",
				   rels[i], pid);
		cr_assert_eq(json_integer_value(json_object_get(rec, "uid")),
			     1001, "audit uid of %s", rels[i]);
		cr_assert_eq(json_integer_value(json_object_get(rec, "gid")),
			     2001, "audit gid of %s", rels[i]);
		json_decref(rec);
	}
	/* A denied open never reached the daemon: no record claims it. */
	assert_denied(PHI_APP, "derived/pii");
	rec = find_open("derived/pii", -1);
	cr_assert_null(rec, "a key_open record for a denied derived/pii");
}

Test(perms, cached_mode_checks_every_open, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	start_matrix_with("perms-cached", "read_mode = cached\n");
	/* Once a key is in the page cache, other callers are still checked. */
	assert_reads(PHI_APP, "derived/phi");
	assert_reads(PII_APP, "derived/pii");
	assert_denied(PII_APP, "derived/phi");
	assert_denied(PHI_APP, "derived/pii");
	assert_denied(OUTSIDER, "derived/phi");
	assert_no_root_keys(PHI_APP);
	assert_no_root_keys(OUTSIDER);
	assert_reads(OUTSIDER, "version");
}
