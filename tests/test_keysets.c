// SPDX-License-Identifier: MIT
/*
 * keys/<purpose>, a purpose's decryption set, through the real keyfs
 * binary (README: The tree): the derived key of every retained version,
 * current first, one per line, from one keyring; derived/<purpose>'s
 * access; one consistent set per read while rotations land; and the
 * README's MultiFernet example re-encrypting an old token.  Keys are
 * compared in C and never printed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "mount_fixture.h"

TestSuite(keysets, .fini = mt_fini);

/* A reader of phi (mount_fixture.c: phi is 0:2001 0440) and an outsider. */
#define PHI_APP "--reuid=1001 --regid=2001 --clear-groups"
#define OUTSIDER "--reuid=1003 --regid=2003 --clear-groups"

#define LINE (TEXT_LEN + 1)
#define MAX_SET 8

/*
 * Splits the text of a key set into keys (asserting every line is one key
 * of 44 characters that validates, "\n"-terminated): how many.
 */
static size_t parse_set(const char *text, size_t len,
			uint8_t keys[MAX_SET][KEY_LEN], const char *what)
{
	char err[KF_ERR_MAX];
	size_t n = len / LINE;

	cr_assert(len % LINE == 0, "%s: %zu bytes is not whole lines", what,
		  len);
	cr_assert(n >= 1 && n <= MAX_SET, "%s: %zu lines", what, n);
	for (size_t i = 0; i < n; i++) {
		cr_assert(text[i * LINE + TEXT_LEN] == '\n',
			  "%s: line %zu does not end after 44 characters", what,
			  i + 1);
		cr_assert(
		    kf_key_decode(text + i * LINE, TEXT_LEN, keys[i], err) == 0,
		    "%s: line %zu is not a key: %s", what, i + 1, err);
	}
	return n;
}

/* Reads keys/<purpose> of m into keys: how many lines; stat's size too. */
static size_t read_set(struct kt_mount *m, const char *purpose,
		       uint8_t keys[MAX_SET][KEY_LEN])
{
	char rel[64], *p, *text;
	struct stat st;
	size_t len = 0, n;

	snprintf(rel, sizeof(rel), "keys/%s", purpose);
	text = kt_mread(m, rel, &len);
	cr_assert(text, "cannot read %s: %s", rel, strerror(errno));
	n = parse_set(text, len, keys, rel);
	free_secret(text, len);
	p = kt_mpath(m, rel);
	cr_assert(stat(p, &st) == 0, "stat %s", rel);
	cr_assert(st.st_size == (off_t)len, "%s: stat says %lld, read %zu", rel,
		  (long long)st.st_size, len);
	free(p);
	return n;
}

/* Expects keys/<purpose> to be derived/<purpose> of versions want[]. */
static void expect_set(struct kt_mount *m, const char *purpose,
		       const uint32_t *want, size_t n_want)
{
	uint8_t(*keys)[KEY_LEN] = mt_secret(MAX_SET * KEY_LEN);
	uint8_t *k = mt_secret(KEY_LEN);
	char rel[64];
	size_t n = read_set(m, purpose, keys);

	cr_assert_eq(n, n_want, "keys/%s has %zu keys, want %zu", purpose, n,
		     n_want);
	for (size_t i = 0; i < n; i++) {
		snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/derived/%s",
			 want[i], purpose);
		read_key(m, rel, k);
		cr_assert(sodium_memcmp(keys[i], k, KEY_LEN) == 0,
			  "line %zu of keys/%s is not %s", i + 1, purpose, rel);
	}
	read_key(m, "derived/phi", k);
	if (strcmp(purpose, "phi") == 0)
		cr_assert(sodium_memcmp(keys[0], k, KEY_LEN) == 0,
			  "the first line of keys/phi is not derived/phi");
}

Test(keysets, lists_retained_versions_current_first, .timeout = 60)
{
	struct kt_mount *m = start("sets", "retain_versions = 3\n");
	static const uint32_t v1[] = {1}, v3[] = {3, 2, 1}, v4[] = {4, 3, 2},
			      v4r[] = {4, 2};

	expect_listing(m, "keys", "billing phi pii");
	expect_set(m, "phi", v1, 1);
	rotate_ok(m);
	rotate_ok(m);
	expect_set(m, "phi", v3, 3);
	expect_set(m, "pii", v3, 3);
	rotate_ok(m); /* version 1 leaves: three are kept */
	expect_set(m, "phi", v4, 3);
	cr_assert_eq(kt_mwrite(m, "control/retire", "3\n"), 0, "retire 3");
	expect_set(m, "phi", v4r, 2);
	expect_set(m, "billing", v4r, 2);
}

/* Owner, group and mode of keys/P are derived/P's, and so is who reads. */
Test(keysets, access_is_the_purposes, .timeout = 60)
{
	struct kt_mount *m = start("sets-perm", NULL);
	char *out = NULL, *err = NULL, *p;
	struct stat a, b;
	int rc;

	for (size_t i = 0; i < N_PURPOSES; i++) {
		char rel[64];

		snprintf(rel, sizeof(rel), "keys/%s", purposes[i]);
		p = kt_mpath(m, rel);
		cr_assert(stat(p, &a) == 0, "stat %s", rel);
		free(p);
		snprintf(rel, sizeof(rel), "derived/%s", purposes[i]);
		p = kt_mpath(m, rel);
		cr_assert(stat(p, &b) == 0, "stat %s", rel);
		free(p);
		cr_assert(a.st_uid == b.st_uid && a.st_gid == b.st_gid &&
			      a.st_mode == b.st_mode,
			  "keys/%s has not derived/%s's owner, group, mode",
			  purposes[i], purposes[i]);
	}
	p = kt_mpath(m, "keys/phi");
	rc = kt_run_as(PHI_APP, &out, &err, "wc -l %s", p);
	cr_assert_eq(rc, 0, "the phi reader cannot read keys/phi: %s", err);
	cr_assert(strncmp(out, "1 ", 2) == 0, "wc -l keys/phi: %s", out);
	free(out);
	free(err);
	rc = kt_run_as(OUTSIDER, &out, &err, "cat %s", p);
	cr_assert_neq(rc, 0, "an outsider read keys/phi");
	cr_assert(kt_contains(err, "Permission denied"), "outsider: %s", err);
	cr_assert(out[0] == 0, "an outsider's cat of keys/phi printed");
	free(out);
	free(err);
	free(p);
	p = kt_mpath(m, "keys/pii");
	rc = kt_run_as(PHI_APP, &out, &err, "cat %s", p);
	cr_assert_neq(rc, 0, "the phi reader read keys/pii");
	free(out);
	free(err);
	free(p);
}

/* --- one keyring per read ------------------------------------------------ */

#define ROTATIONS 30
#define RETAIN 3
#define MAX_READS 4000

/* What the reader child saw, in memory shared with the parent. */
struct seen {
	volatile int stop;
	size_t n;
	size_t len[MAX_READS];
	char text[MAX_READS][RETAIN * LINE];
};

/*
 * A reader loops on keys/phi while ROTATIONS rotations land; each of its
 * reads must be the set of one keyring: derived/phi of versions v, v-1,
 * ... (RETAIN at most), never lines of two.
 */
static void consistent_while_rotating(const char *mode)
{
	char extra[128];
	struct kt_mount *m;
	struct seen *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint8_t(*by_version)[KEY_LEN] = mt_secret((ROTATIONS + 2) * KEY_LEN);
	uint8_t(*keys)[KEY_LEN] = mt_secret(MAX_SET * KEY_LEN);
	char *path, what[64];
	size_t mixed = 0;
	pid_t pid;

	cr_assert(s != MAP_FAILED);
	snprintf(extra, sizeof(extra), "retain_versions = %d\nread_mode = %s\n",
		 RETAIN, mode);
	m = start(mode, extra);
	read_key(m, "derived/phi", by_version[1]);
	path = kt_mpath(m, "keys/phi");
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		while (!s->stop && s->n < MAX_READS) {
			ssize_t got =
			    raw_read(path, s->text[s->n], sizeof(s->text[0]));

			if (got < 0)
				_exit(1);
			s->len[s->n++] = (size_t)got;
		}
		_exit(0);
	}
	for (uint32_t v = 2; v <= ROTATIONS + 1; v++) {
		rotate_ok(m);
		read_key(m, "derived/phi", by_version[v]);
	}
	s->stop = 1;
	cr_assert_eq(kt_wait_child(pid, 10000), 0, "%s: the reader failed",
		     mode);
	cr_assert(s->n > 0, "%s: the reader read nothing", mode);
	for (size_t r = 0; r < s->n; r++) {
		size_t n;
		uint32_t v = 0;

		snprintf(what, sizeof(what), "%s: read %zu", mode, r + 1);
		n = parse_set(s->text[r], s->len[r], keys, what);
		for (uint32_t c = 1; c <= ROTATIONS + 1 && !v; c++)
			if (sodium_memcmp(keys[0], by_version[c], KEY_LEN) == 0)
				v = c;
		cr_assert(v, "%s: its first line is no version's key", what);
		if (n != (v < RETAIN ? v : RETAIN))
			mixed++;
		for (size_t i = 1; i < n; i++)
			if (sodium_memcmp(keys[i], by_version[v - i],
					  KEY_LEN) != 0)
				mixed++;
	}
	cr_assert_eq(mixed, 0,
		     "%s: %zu lines of %zu reads were not the set "
		     "of the version they began with",
		     mode, mixed, s->n);
	sodium_memzero(s, sizeof(*s));
	munmap(s, sizeof(*s));
	free(path);
}

Test(keysets, one_keyring_per_read_audited, .timeout = 120)
{
	consistent_while_rotating("audited");
}

Test(keysets, one_keyring_per_read_strict, .timeout = 120)
{
	consistent_while_rotating("strict");
}

Test(keysets, one_keyring_per_read_cached, .timeout = 120)
{
	consistent_while_rotating("cached");
}

/* --- the README's MultiFernet example ------------------------------------ */

/*
 * Phase "encrypt" prints a token made with derived/phi; phase "rotate",
 * after a rotation, checks that derived/phi alone no longer decrypts it,
 * that the README's load_keys does, and that MultiFernet.rotate's token
 * decrypts with the new derived/phi alone.
 */
static const char py_driver[] =
    "\nimport sys\n"
    "from cryptography.fernet import InvalidToken\n"
    "mnt, phase = sys.argv[1], sys.argv[2]\n"
    "def current():\n"
    "    with open(mnt + \"/derived/phi\", \"rb\") as f:\n"
    "        return Fernet(f.read())\n"
    "if phase == \"encrypt\":\n"
    "    print(current().encrypt(b\"patient record 42\").decode())\n"
    "    sys.exit(0)\n"
    "token = sys.argv[3].encode()\n"
    "try:\n"
    "    current().decrypt(token)\n"
    "    sys.exit(\"the new key alone decrypts the old token\")\n"
    "except InvalidToken:\n"
    "    pass\n"
    "keys = load_keys(mnt, \"phi\")\n"
    "assert keys.decrypt(token) == b\"patient record 42\"\n"
    "fresh = keys.rotate(token)\n"
    "assert current().decrypt(fresh) == b\"patient record 42\"\n"
    "print(\"ok\")\n";

Test(keysets, readme_multifernet_rotates_old_tokens, .timeout = 60)
{
	struct kt_mount *m;
	char *code, *prog, *out = NULL, *err = NULL, *tok;
	int rc;

	if (kt_runf(NULL, NULL, "/usr/bin/python3 -c 'import cryptography'") !=
	    0)
		cr_skip_test("python3-cryptography is not installed");
	m = start("sets-py", NULL);
	code = kt_readme_python("def load_keys");
	cr_assert(asprintf(&prog, "%s%s", code, py_driver) > 0);
	cr_assert(!strchr(prog, '\''), "the script has a single quote");
	rc = kt_run_as(PHI_APP, &out, &err,
		       "/usr/bin/python3 -I -c '%s' %s "
		       "encrypt",
		       prog, m->mnt);
	cr_assert_eq(rc, 0, "encrypt as the phi reader failed: %s", err);
	tok = strndup(out, strcspn(out, "\n"));
	free(out);
	free(err);
	rotate_ok(m);
	rc = kt_run_as(PHI_APP, &out, &err,
		       "/usr/bin/python3 -I -c '%s' %s rotate %s", prog, m->mnt,
		       tok);
	cr_assert_eq(rc, 0, "MultiFernet over keys/phi failed: %s", err);
	cr_assert_str_eq(out, "ok\n");
	free(out);
	free(err);
	free(tok);
	free(prog);
	free(code);
}
