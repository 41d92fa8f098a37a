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
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
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
	size_t mark = kt_audit_size(m);
	json_t *recs, *rec;
	size_t i;
	bool found = false;

	expect_listing(m, "keys", "billing phi pii");
	expect_set(m, "phi", v1, 1);
	/* Its open is audited like any key file's: the path, never a key. */
	recs = kt_audit_since(m, mark);
	json_array_foreach(recs, i, rec)
	{
		if (kt_record_is(rec, "key_open", -1) &&
		    strcmp(kt_str_of(rec, "path"), "keys/phi") == 0)
			found = true;
	}
	cr_assert(found, "no key_open record of keys/phi");
	json_decref(recs);
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

/* A user.keyfs.* attribute of a file of the tree, as text (static). */
static const char *xattr_of(struct kt_mount *m, const char *rel,
			    const char *name)
{
	static char value[2][64];
	static int which;
	char *p = kt_mpath(m, rel), *v = value[which ^= 1];
	ssize_t n = getxattr(p, name, v, sizeof(value[0]) - 1);

	cr_assert(n >= 0, "getxattr %s %s: %s", rel, name, strerror(errno));
	v[n] = 0;
	free(p);
	return v;
}

/* Whether fd reports POLLPRI now: its set is no longer the name's. */
static bool stale(int fd)
{
	struct pollfd p = {fd, POLLPRI, 0};

	cr_assert(poll(&p, 1, 0) >= 0);
	return p.revents & POLLPRI;
}

/*
 * keys/phi carries derived/phi's attributes (its current key's), and an
 * open keys/phi reports POLLPRI once its set changed: a retire too, where
 * the current version stays.
 */
Test(keysets, attributes_and_poll_follow_the_set, .timeout = 60)
{
	struct kt_mount *m = start("sets-poll", "retain_versions = 3\n");
	char *p, buf[512];
	int fd;

	rotate_ok(m);
	rotate_ok(m);
	cr_assert_str_eq(xattr_of(m, "keys/phi", "user.keyfs.version"), "3");
	cr_assert_str_eq(xattr_of(m, "keys/phi", "user.keyfs.fingerprint"),
			 xattr_of(m, "derived/phi", "user.keyfs.fingerprint"));
	p = kt_mpath(m, "keys/phi");
	fd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 3 * LINE);
	sodium_memzero(buf, sizeof(buf));
	cr_assert(!stale(fd), "POLLPRI before any change");
	cr_assert_eq(kt_mwrite(m, "control/retire", "1\n"), 0);
	cr_assert(stale(fd), "no POLLPRI after a retire changed the set");
	close(fd);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 2 * LINE);
	sodium_memzero(buf, sizeof(buf));
	cr_assert(!stale(fd), "a fresh open is stale");
	rotate_ok(m);
	cr_assert(stale(fd), "no POLLPRI after a rotation");
	close(fd);
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
 * open, one read(2) of up to a whole set, close: the bytes read, or
 * -errno.  Cached mode keeps no snapshot per open, so a second read(2) may
 * see the next set (README: Key sets); in the other modes raw_read's reads
 * until EOF all see the open's snapshot.
 */
static ssize_t one_read(const char *path, char buf[RETAIN * LINE])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, RETAIN * LINE);
	if (n < 0)
		n = -errno;
	close(fd);
	return n;
}

/*
 * A reader loops on keys/phi while ROTATIONS rotations land; each of its
 * reads must be the set of one keyring: derived/phi of versions v, v-1,
 * ... (RETAIN at most), never lines of two.  With prefix_ok, the first
 * lines of such a set will do.
 */
static void consistent_while_rotating(const char *mode, bool prefix_ok)
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
			ssize_t got = prefix_ok ? one_read(path, s->text[s->n])
						: raw_read(path, s->text[s->n],
							   sizeof(s->text[0]));

			if (got < 0)
				_exit(1);
			s->len[s->n++] = (size_t)got;
			kt_sleep_ms(1); /* spread over the rotations */
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
		/*
		 * Cached mode: the kernel may take the size from before a
		 * change and the bytes from after it, so a read racing a
		 * rotation may lack the set's oldest lines -- never a key of
		 * another keyring (README: Key sets).
		 */
		if (n != (v < RETAIN ? v : RETAIN) &&
		    (!prefix_ok || n > (v < RETAIN ? v : RETAIN))) {
			cr_log_warn("%s: version %u, %zu lines", what, v, n);
			mixed++;
		}
		for (size_t i = 1; i < n && i < v; i++) {
			if (sodium_memcmp(keys[i], by_version[v - i],
					  KEY_LEN) != 0) {
				cr_log_warn("%s: version %u, line %zu of %zu "
					    "is another version's",
					    what, v, i + 1, n);
				mixed++;
			}
		}
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
	consistent_while_rotating("audited", false);
}

Test(keysets, one_keyring_per_read_strict, .timeout = 120)
{
	consistent_while_rotating("strict", false);
}

Test(keysets, one_keyring_per_read_cached, .timeout = 120)
{
	consistent_while_rotating("cached", true);
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

/* --- usage-aware retire --------------------------------------------------- */

/*
 * A reader loop as uid 1001 (gid 2001, phi's group): opens rel every 20 ms
 * until killed.  Its pid.
 */
static pid_t reader_loop(struct kt_mount *m, const char *rel)
{
	char *path = kt_mpath(m, rel), buf[512];
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(2001, 2001, 2001) < 0 ||
		    setresuid(1001, 1001, 1001) < 0)
			_exit(2);
		for (;;) {
			raw_read(path, buf, sizeof(buf));
			sodium_memzero(buf, sizeof(buf));
			kt_sleep_ms(20);
		}
	}
	free(path);
	return pid;
}

static void reader_stop(pid_t pid)
{
	kill(pid, SIGKILL);
	cr_assert_neq(kt_wait_child(pid, 5000), -1, "the reader did not end");
}

/* status's usage entry of version v (borrowed from st), or NULL. */
static json_t *usage_of(json_t *st, uint32_t v)
{
	json_t *u = json_object_get(st, "usage"), *e;
	size_t i;

	json_array_foreach(json_object_get(u, "versions"), i, e)
	{
		if (json_integer_value(json_object_get(e, "version")) == v)
			return e;
	}
	return NULL;
}

/* Whether the JSON array a holds the integer n. */
static bool holds(json_t *a, json_int_t n)
{
	json_t *e;
	size_t i;

	json_array_foreach(a, i, e)
	{
		if (json_integer_value(e) == n)
			return true;
	}
	return false;
}

/* `keyfs ctl retire ARGS`: its exit status, stdout and stderr together. */
static int ctl_retire(struct kt_mount *m, const char *args, char **ret_text)
{
	char *out = NULL, *err = NULL, *cmd;
	int rc;

	cr_assert(asprintf(&cmd, "retire %s", args) > 0);
	rc = kt_ctl(m, &out, &err, cmd);
	cr_assert(asprintf(ret_text, "%s%s", out, err) > 0);
	free(out);
	free(err);
	free(cmd);
	return rc;
}

/*
 * `keyfs ctl retire ARGS`, expected to be refused: status (but for its
 * counters) unchanged, one failed key_retire record and no successful
 * one.  Its answer (malloc'd); *ret_rec gets that record (decref it).
 */
static char *retire_refused(struct kt_mount *m, const char *args,
			    json_t **ret_rec)
{
	size_t mark = kt_audit_size(m);
	char *before = kt_mstatus_keys(m), *after, *text;
	json_t *recs;

	cr_assert_neq(ctl_retire(m, args, &text), 0,
		      "retire %s was not refused", args);
	after = kt_mstatus_keys(m);
	cr_assert_str_eq(before, after, "a refused retire changed status");
	recs = kt_audit_since(m, mark);
	cr_assert_eq(kt_count_records(recs, "key_retire", false), 1,
		     "the refusal has no key_retire record");
	cr_assert_eq(kt_count_records(recs, "key_retire", true), 0);
	*ret_rec = json_incref(kt_find_record(recs, "key_retire", false));
	json_decref(recs);
	free(before);
	free(after);
	return text;
}

Test(keysets, retire_refused_while_read_forced_with_force, .timeout = 90)
{
	struct kt_mount *m =
	    start("usage", "usage_window = 1h\nretain_versions = 3\n");
	json_t *st, *u, *recs, *rec;
	size_t mark;
	char *text;
	pid_t pid = reader_loop(m, "derived/phi");

	/* The loop reads version 1 until the rotation, then version 2. */
	for (int i = 0; i < 500; i++) {
		st = read_status(m);
		u = usage_of(st, 1);
		if (u && holds(json_object_get(u, "uids"), 1001))
			break;
		json_decref(st);
		st = NULL;
		kt_sleep_ms(20);
	}
	cr_assert(st, "status never showed uid 1001 reading version 1");
	cr_assert_eq(json_integer_value(json_object_get(u, "last_uid")), 1001);
	cr_assert(json_is_string(json_object_get(u, "last_read")));
	json_decref(st);
	rotate_ok(m);

	text = retire_refused(m, "1", &rec);
	cr_assert(kt_contains(text, "uid 1001") &&
		      kt_contains(text, "still read") &&
		      kt_contains(text, "1 force"),
		  "the refusal does not name the reader: %s", text);
	free(text);
	cr_assert_eq(kt_mwrite(m, "control/retire", "1\n"), -EBUSY);
	cr_assert(kt_mexists(m, "versions/1"));
	cr_assert(kt_contains(kt_str_of(rec, "error"), "uid 1001"),
		  "its error does not name the reader");
	cr_assert(
	    holds(json_object_get(json_object_get(rec, "readers"), "uids"),
		  1001),
	    "its readers lack uid 1001");
	json_decref(rec);

	/* Bad words after the number: refused as input, nothing changes. */
	cr_assert_eq(kt_mwrite(m, "control/retire", "1 forced\n"), -EINVAL);
	cr_assert_eq(kt_mwrite(m, "control/retire", "1 force force\n"),
		     -EINVAL);
	cr_assert_eq(kt_mwrite(m, "control/retire", "force\n"), -EINVAL);
	cr_assert(kt_mexists(m, "versions/1"));

	/* The reader still runs: force retires it anyway, and says so. */
	mark = kt_audit_size(m);
	cr_assert_eq(ctl_retire(m, "1 force", &text), 0, "retire 1 force: %s",
		     text);
	cr_assert(kt_contains(text, "retired: version 1; forced") &&
		      kt_contains(text, "uid 1001"),
		  "retire 1 force printed: %s", text);
	free(text);
	cr_assert(!kt_mexists(m, "versions/1"));
	recs = kt_audit_since(m, mark);
	rec = kt_find_record(recs, "key_retire", true);
	cr_assert(rec, "no key_retire record for the forced retire");
	cr_assert(json_is_true(json_object_get(rec, "force")));
	cr_assert(holds(
	    json_object_get(json_object_get(rec, "readers"), "uids"), 1001));
	json_decref(recs);
	reader_stop(pid);
}

/* keys/phi holds every version: reading it is reading each, shown apart. */
Test(keysets, a_key_set_reader_holds_every_version, .timeout = 60)
{
	struct kt_mount *m = start("usage-set", "usage_window = 1h\n");
	char *out = NULL, *err = NULL, *text, *p;
	json_t *st, *u;
	int rc;

	rotate_ok(m); /* keys/phi: versions 2 and 1 */
	p = kt_mpath(m, "keys/phi");
	rc = kt_run_as(PHI_APP, &out, &err, "wc -l %s", p);
	cr_assert_eq(rc, 0, "%s", err);
	free(out);
	free(err);
	free(p);
	st = read_status(m);
	u = usage_of(st, 1);
	cr_assert(u && holds(json_object_get(u, "set_uids"), 1001) &&
		      !holds(json_object_get(u, "uids"), 1001),
		  "status does not show uid 1001 reading version 1 via keys/");
	json_decref(st);
	cr_assert_eq(kt_ctl(m, &out, &err, "status"), 0, "%s", err);
	cr_assert(kt_contains(out, "version 1: ") &&
		      kt_contains(out, "via keys/: 1001"),
		  "ctl status: %s", out);
	free(out);
	free(err);
	text = retire_refused(m, "1", &st);
	json_decref(st);
	cr_assert(kt_contains(text, "uid 1001") &&
		      kt_contains(text, "keys/phi"),
		  "the refusal does not name keys/phi's reader: %s", text);
	free(text);
}

/* After usage_window without a read, retire needs no force. */
Test(keysets, retire_accepted_once_the_window_passed, .timeout = 90)
{
	struct kt_mount *m = start("usage-window", "usage_window = 2s\n");
	char *out = NULL, *err = NULL, *p, *text;
	json_t *st = NULL, *u;
	bool seen = false, gone = false;

	p = kt_mpath(m, "derived/phi");
	cr_assert_eq(kt_run_as(PHI_APP, &out, &err, "wc -c %s", p), 0, "%s",
		     err);
	free(out);
	free(err);
	free(p);
	rotate_ok(m);
	/* Poll status (never a clock) until version 1's read leaves it. */
	for (int i = 0; i < 600 && !gone; i++) {
		st = read_status(m);
		u = usage_of(st, 1);
		cr_assert(u, "status has no usage entry for version 1");
		if (json_is_string(json_object_get(u, "last_read")))
			seen = true;
		else
			gone = true;
		json_decref(st);
		if (!gone)
			kt_sleep_ms(50);
	}
	cr_assert(seen || gone, "no status read");
	cr_assert(gone, "version 1's read never left the window");
	cr_assert_eq(ctl_retire(m, "1", &text), 0,
		     "retire 1 after the window: %s", text);
	cr_assert(kt_contains(text, "retired: version 1\n") &&
		      !kt_contains(text, "forced"),
		  "retire 1 printed: %s", text);
	free(text);
}

/* Cached mode sees no opens: usage is unknown, retire needs force. */
Test(keysets, cached_mode_usage_is_unknown, .timeout = 60)
{
	struct kt_mount *m =
	    start("usage-cached", "usage_window = 7d\nread_mode = cached\n");
	json_t *st, *u, *rec;
	char *text;

	st = read_status(m);
	u = json_object_get(st, "usage");
	cr_assert(json_is_false(json_object_get(u, "known")),
		  "cached mode claims to know usage");
	cr_assert(kt_contains(kt_str_of(u, "why_unknown"), "cached"));
	json_decref(st);
	rotate_ok(m);
	text = retire_refused(m, "1", &rec);
	/* No open file to read the answer from: ctl says what EBUSY means. */
	cr_assert(kt_contains(text, "usage is unknown") &&
		      kt_contains(text, "force"),
		  "retire 1 in cached mode said: %s", text);
	free(text);
	cr_assert(kt_contains(kt_str_of(rec, "error"), "read_mode = cached"),
		  "the refusal's record does not say why");
	json_decref(rec);
	cr_assert_eq(ctl_retire(m, "1 force", &text), 0, "%s", text);
	free(text);
	cr_assert(!kt_mexists(m, "versions/1"));
}
