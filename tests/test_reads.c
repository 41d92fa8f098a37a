// SPDX-License-Identifier: MIT
/*
 * Reading the mounted tree, against the real keyfs binary, in each of the
 * three read modes: fresh keys after every rotation (2,000 of them, through
 * names the kernel held before it, names it first looks up after it, and
 * names it forgot in between), what a file opened before a rotation gives
 * after it, which opens are audited (and that one which cannot be is
 * refused), and what 16 readers get while rotations run: a key current at
 * some instant of their read, never a torn or mixed one.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "mount_fixture.h"

TestSuite(reads, .fini = mt_fini);

/* --- freshness ------------------------------------------------------------ */

static void fresh_after_rotations(const char *extra, int rounds)
{
	struct kt_mount *m = start("fresh", extra);
	uint8_t *old = mt_secret(KEY_LEN), *cur = mt_secret(KEY_LEN),
		*prev = mt_secret(KEY_LEN), *phi = mt_secret(KEY_LEN),
		*want = mt_secret(KEY_LEN), *vk = mt_secret(KEY_LEN);
	uint32_t v = read_version(m), nv;
	char *p = kt_mpath(m, "previous"), rel[64];
	struct stat st;
	json_t *s;

	errno = 0;
	cr_expect(stat(p, &st) < 0 && errno == ENOENT,
		  "previous exists before the first rotation");
	free(p);
	read_key(m, "current", old);
	read_key(m, "derived/phi", phi);
	for (int i = 0; i < rounds; i++) {
		rotate_ok(m);
		read_key(m, "current", cur);
		read_key(m, "derived/phi", phi);
		nv = read_version(m);
		read_key(m, "previous", prev);
		cr_assert(nv == v + 1, "rotation %d: version %u, want %u", i,
			  (unsigned)nv, (unsigned)v + 1);
		cr_assert(sodium_memcmp(cur, old, KEY_LEN) != 0,
			  "rotation %d: current is stale", i);
		cr_assert(sodium_memcmp(prev, old, KEY_LEN) == 0,
			  "rotation %d: previous is not the old current", i);
		derive(cur, "phi", want);
		cr_assert(sodium_memcmp(phi, want, KEY_LEN) == 0,
			  "rotation %d: derived/phi is stale", i);
		snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key", nv);
		read_key(m, rel, vk);
		cr_assert(sodium_memcmp(vk, cur, KEY_LEN) == 0,
			  "rotation %d: versions/N/key is not current", i);
		s = read_status(m);
		cr_assert(jint(s, "version") == nv,
			  "rotation %d: status is stale", i);
		json_decref(s);
		memcpy(old, cur, KEY_LEN);
		v = nv;
	}
}

Test(reads, fresh_after_every_rotation_audited, .timeout = 60)
{
	fresh_after_rotations(NULL, 50);
}

Test(reads, fresh_after_every_rotation_cached, .timeout = 60)
{
	fresh_after_rotations("read_mode = cached\n", 50);
}

Test(reads, fresh_after_every_rotation_strict, .timeout = 60)
{
	fresh_after_rotations("read_mode = strict\n", 50);
}

/*
 * FRESH_CYCLES rotations, each followed by reads of names the kernel has
 * held since before it (version, current, previous, derived/phi, and
 * derived/p<i-1>, looked up in the cycle before and not read since) and of
 * names it has never looked up (versions/<N>/key, and derived/p<i>: one
 * purpose per cycle).  version is read whole: its size grows at 9 -> 10,
 * 99 -> 100 and 999 -> 1000, and a stale size would cut the read short.
 * Every DROP_EVERY cycles the kernel drops its dentries and inodes (and
 * FORGETs them) before the rotation: derived/p<i-5> is then looked up again
 * before the rotation, the other names only after it.  The versions/<N>/
 * that a rotation drops from the keyring is gone, although the kernel
 * looked it up.
 */
#define FRESH_CYCLES 2000
#define FRESH_RETAIN 2 /* versions/<N>/ kept: current and previous */
#define DROP_EVERY 500
#define PRUNE_EVERY 20

/*
 * Every rotation writes an archive, and the one before the rotation that
 * retires a version is its last copy, which automatic pruning keeps: 2,000
 * rotations leave 2,000 archives, each read by the next rotation's pruning.
 * The test deletes them now and then, as an operator would.
 */
static void prune_ok(struct kt_mount *m)
{
	int r = kt_mwrite(m, "control/prune", "10 force\n");

	cr_assert(r == 0, "write to control/prune: %s", strerror(-r));
}

/* "[purpose p0]\n" ... "[purpose p<n-1>]\n" (malloc'd). */
static char *purpose_sections(int n)
{
	size_t cap = (size_t)n * 24 + 1, len = 0;
	char *s = malloc(cap);

	cr_assert(s);
	s[0] = 0;
	for (int i = 0; i < n; i++)
		len +=
		    (size_t)snprintf(s + len, cap - len, "[purpose p%d]\n", i);
	return s;
}

/* Expects version to read exactly "v\n". */
static void expect_version(struct kt_mount *m, uint32_t v, int cycle)
{
	char want[16];
	size_t len = 0, shown;
	char *text = kt_mread(m, "version", &len);

	cr_assert(text, "cycle %d: read version: %s", cycle, strerror(errno));
	snprintf(want, sizeof(want), "%" PRIu32 "\n", v);
	/* Shown without its newline, if it has one. */
	shown = strcspn(text, "\n");
	cr_assert(len == strlen(want) && memcmp(text, want, len) == 0,
		  "cycle %d: version reads \"%.*s%s\" (%zu bytes), want "
		  "\"%" PRIu32 "\\n\"",
		  cycle, (int)(shown < 16 ? shown : 16), text,
		  shown < len ? "\\n" : "", len, v);
	free(text);
}

/* Expects versions/<v>/key, looked up in an earlier cycle, to be gone
 * now that its version has dropped out of the keyring. */
static void expect_gone(struct kt_mount *m, uint32_t v, int cycle)
{
	char rel[64], *path;
	struct stat st;
	int r;

	snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key", v);
	path = kt_mpath(m, rel);
	errno = 0;
	r = stat(path, &st);
	cr_assert(r < 0 && errno == ENOENT,
		  "cycle %d: %s, dropped from the keyring, %s", cycle, rel,
		  r == 0 ? "is still there" : strerror(errno));
	free(path);
}

/* Expects derived/<purpose> to be derive(key, purpose). */
static void expect_derived(struct kt_mount *m, const uint8_t key[KEY_LEN],
			   int cycle, const char *purpose, const char *what)
{
	uint8_t got[KEY_LEN], want[KEY_LEN];
	char rel[64];
	bool same;

	snprintf(rel, sizeof(rel), "derived/%s", purpose);
	read_key(m, rel, got);
	derive(key, purpose, want);
	same = sodium_memcmp(got, want, KEY_LEN) == 0;
	sodium_memzero(got, sizeof(got));
	sodium_memzero(want, sizeof(want));
	cr_assert(same, "cycle %d: %s (%s) is stale", cycle, rel, what);
}

static void fresh_names(const char *extra)
{
	char *sections = purpose_sections(FRESH_CYCLES), *lines;
	uint8_t *old, *cur, *k;
	char rel[64], p[16], q[16];
	struct kt_mount *m;
	uint32_t v;

	cr_assert(asprintf(&lines, "retain_versions = %d\n%s", FRESH_RETAIN,
			   extra ? extra : "") > 0);
	m = start_sections("fresh2k", lines, sections);
	free(lines);
	free(sections);
	old = mt_secret(KEY_LEN);
	cur = mt_secret(KEY_LEN);
	k = mt_secret(KEY_LEN);
	v = read_version(m);
	read_key(m, "current", old);
	expect_derived(m, old, -1, "phi", "before any rotation");
	for (int i = 0; i < FRESH_CYCLES; i++) {
		bool drop = i % DROP_EVERY == DROP_EVERY / 2;

		if (drop) {
			drop_dentries();
			snprintf(q, sizeof(q), "p%d", i - 5);
			expect_derived(m, old, i, q,
				       "dropped, looked up again");
		}
		rotate_ok(m);
		v++;
		expect_version(m, v, i);
		read_key(m, "current", cur);
		cr_assert(sodium_memcmp(cur, old, KEY_LEN) != 0,
			  "cycle %d: current is stale", i);
		read_key(m, "previous", k);
		cr_assert(sodium_memcmp(k, old, KEY_LEN) == 0,
			  "cycle %d: previous is not the old current", i);
		snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key", v);
		read_key(m, rel, k);
		cr_assert(sodium_memcmp(k, cur, KEY_LEN) == 0,
			  "cycle %d: %s is not current", i, rel);
		if (i >= FRESH_RETAIN)
			expect_gone(m, v - FRESH_RETAIN, i);
		expect_derived(m, cur, i, "phi", "held since the start");
		snprintf(p, sizeof(p), "p%d", i);
		expect_derived(m, cur, i, p, "first looked up now");
		if (i > 0) {
			snprintf(p, sizeof(p), "p%d", i - 1);
			expect_derived(m, cur, i, p,
				       "looked up before the rotation");
		}
		if (drop) {
			expect_derived(m, cur, i, q,
				       "dropped, looked up again before the "
				       "rotation");
			snprintf(q, sizeof(q), "p%d", i - 7);
			expect_derived(m, cur, i, q,
				       "dropped before the rotation, looked "
				       "up after it");
		}
		memcpy(old, cur, KEY_LEN);
		if (i % PRUNE_EVERY == PRUNE_EVERY - 1)
			prune_ok(m);
	}
}

Test(reads, fresh_names_after_2000_rotations_audited, .timeout = 180)
{
	fresh_names(NULL);
}

Test(reads, fresh_names_after_2000_rotations_strict, .timeout = 180)
{
	fresh_names("read_mode = strict\n");
}

Test(reads, fresh_names_after_2000_rotations_cached, .timeout = 180)
{
	fresh_names("read_mode = cached\n");
}

/*
 * Files opened before two rotations, one read before them and one not, and
 * read after them.  Strict mode answers every read from the snapshot its
 * open took: both give the key they opened with.  Audited mode takes no
 * snapshot (the open is recorded, the read is rendered from the keyring of
 * the moment, and the rotation dropped the pages the first read left), so
 * both give the NEW key: by design, a long-lived open file follows
 * rotations there.  Cached mode has no opens: the same.  Either way a new
 * open sees the new key.
 */
static void open_across_rotation(const char *extra, bool keeps)
{
	struct kt_mount *m = start("openrot", extra);
	uint8_t *then = mt_secret(KEY_LEN), *now = mt_secret(KEY_LEN),
		*want = mt_secret(KEY_LEN), *k = mt_secret(KEY_LEN);
	char *text = mt_secret(64), err[KF_ERR_MAX];
	static const char *const rels[] = {"current", "derived/phi", "current",
					   "derived/phi"};
	int fds[4];

	read_key(m, "current", then);
	for (int i = 0; i < 4; i++) {
		char *p = kt_mpath(m, rels[i]);

		fds[i] = open(p, O_RDONLY | O_CLOEXEC);
		cr_assert(fds[i] >= 0, "open %s: %s", rels[i], strerror(errno));
		free(p);
	}
	/* The first two are read before the rotations. */
	for (int i = 0; i < 2; i++)
		cr_assert(pread(fds[i], text, 64, 0) == TEXT_LEN,
			  "read of an open %s", rels[i]);
	rotate_ok(m);
	rotate_ok(m);
	read_key(m, "current", now);
	cr_assert(sodium_memcmp(now, then, KEY_LEN) != 0,
		  "a new open of current sees the old key");
	for (int i = 0; i < 4; i++) {
		const uint8_t *base = keeps ? then : now;
		const char *when = i < 2 ? "read before" : "not read before";

		cr_assert(pread(fds[i], text, 64, 0) == TEXT_LEN,
			  "read after the rotations of an open %s (%s)",
			  rels[i], when);
		cr_assert(kf_key_decode(text, TEXT_LEN, k, err) == 0,
			  "%s does not validate: %s", rels[i], err);
		if (i % 2)
			derive(base, "phi", want);
		else
			memcpy(want, base, KEY_LEN);
		cr_expect(sodium_memcmp(k, want, KEY_LEN) == 0,
			  "%s opened before the rotations (%s them) gives "
			  "the %s key, want the %s one",
			  rels[i], when, keeps ? "new" : "old",
			  keeps ? "old" : "new");
		close(fds[i]);
	}
}

Test(reads, open_file_keeps_its_key_strict, .timeout = 30)
{
	open_across_rotation("read_mode = strict\n", true);
}

Test(reads, open_file_reads_the_new_key_audited, .timeout = 30)
{
	open_across_rotation(NULL, false);
}

Test(reads, open_file_reads_the_new_key_cached, .timeout = 30)
{
	open_across_rotation("read_mode = cached\n", false);
}

/* --- audit of opens ------------------------------------------------------- */

/* The record in list (from index from) whose path is path, or NULL. */
static json_t *find_open(json_t *list, size_t from, const char *path)
{
	for (size_t i = from; i < json_array_size(list); i++) {
		json_t *r = json_array_get(list, i);
		const char *p = json_string_value(json_object_get(r, "path"));

		if (p && strcmp(p, path) == 0)
			return r;
	}
	return NULL;
}

Test(reads, audited_opens_are_recorded, .timeout = 30)
{
	struct kt_mount *m = start("auditopen", NULL);
	json_t *list, *r;
	size_t n0;
	uint8_t k[KEY_LEN];
	char vkey[64];
	uint32_t v;
	int rc;

	rotate_ok(m);
	v = read_version(m);
	snprintf(vkey, sizeof(vkey), "versions/%" PRIu32 "/key", v);
	list = audit_records(m, "key_open");
	n0 = json_array_size(list);
	json_decref(list);

	read_key(m, "current", k);
	read_key(m, "previous", k);
	read_key(m, vkey, k);
	sodium_memzero(k, sizeof(k));
	rc = kt_run_as("--reuid=1001 --regid=2001 --clear-groups", NULL, NULL,
		       "cat '%s/derived/phi' >/dev/null", m->mnt);
	cr_assert(rc == 0, "uid 1001 gid 2001 could not read derived/phi");

	list = audit_records(m, "key_open");
	cr_expect(json_array_size(list) == n0 + 4,
		  "%zu key_open records for 4 opens",
		  json_array_size(list) - n0);
	for (int i = 0; i < 3; i++) {
		const char *path = i == 0   ? "current"
				   : i == 1 ? "previous"
					    : vkey;

		r = find_open(list, n0, path);
		cr_assert(r, "no key_open record for %s", path);
		cr_expect(jint(r, "uid") == 0 && jint(r, "gid") == 0 &&
			      jint(r, "pid") == getpid(),
			  "key_open of %s: uid %lld gid %lld pid %lld, want "
			  "0 0 %d",
			  path, (long long)jint(r, "uid"),
			  (long long)jint(r, "gid"), (long long)jint(r, "pid"),
			  (int)getpid());
	}
	r = find_open(list, n0, "derived/phi");
	cr_assert(r, "no key_open record for derived/phi");
	cr_expect(jint(r, "uid") == 1001 && jint(r, "gid") == 2001 &&
		      jint(r, "pid") > 0 && jint(r, "pid") != getpid(),
		  "key_open of derived/phi: uid %lld gid %lld pid %lld",
		  (long long)jint(r, "uid"), (long long)jint(r, "gid"),
		  (long long)jint(r, "pid"));
	json_decref(list);
}

Test(reads, cached_opens_are_not_audited, .timeout = 30)
{
	struct kt_mount *m = start("cachedopen", "read_mode = cached\n");
	json_t *list, *s;
	uint8_t k[KEY_LEN];
	size_t n0;

	rotate_ok(m);
	list = audit_records(m, "key_open");
	n0 = json_array_size(list);
	json_decref(list);
	for (int i = 0; i < 5; i++) {
		read_key(m, "current", k);
		read_key(m, "previous", k);
		read_key(m, "derived/phi", k);
	}
	sodium_memzero(k, sizeof(k));
	list = audit_records(m, "key_open");
	cr_expect(json_array_size(list) == n0, "cached mode audited %zu opens",
		  json_array_size(list) - n0);
	json_decref(list);
	s = read_status(m);
	cr_expect(json_is_false(json_object_get(s, "opens_audited")),
		  "status does not say opens_audited false");
	cr_expect(strcmp(json_string_value(json_object_get(s, "read_mode")),
			 "cached") == 0,
		  "status read_mode is not cached");
	json_decref(s);
}

/*
 * Fail closed (DESIGN.md §1): with the audit log's disk full, an open of a
 * key file that cannot be recorded is refused with EIO -- not with the
 * ENOSPC of the failed write -- and opens work again once there is room.
 */
Test(reads, audited_open_on_a_full_audit_disk_fails_with_eio, .timeout = 60)
{
	const char *disk = kt_tmpfs("full-audit-disk", "32k");
	char *audit = kt_path(disk, "audit.log");
	char *filler = kt_path(disk, "filler");
	char *current, *phi, *line, buf[512];
	struct kt_mount *m;
	ssize_t got = 0;
	int fd, i;

	/* Every open recorded: with a window, repeats need no room. */
	cr_assert(asprintf(&line, "audit_log = %s\naudit_open_window = 0\n",
			   audit) > 0);
	m = start("fullaudit", line);
	current = kt_mpath(m, "current");
	got = raw_read(current, buf, sizeof(buf));
	cr_assert(got == TEXT_LEN, "read current with room on the disk: %s",
		  got < 0 ? strerror((int)-got) : "short read");

	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "%s: %s", filler, strerror(errno));
	memset(buf, 'x', sizeof(buf));
	while (write(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	/* The log's last page may still hold a few records. */
	for (i = 0; i < 1000 && got == TEXT_LEN; i++)
		got = raw_read(current, buf, sizeof(buf));
	cr_assert(got < 0, "%d opens of current succeeded on a full audit disk",
		  i);
	cr_expect(got == -EIO,
		  "an open that cannot be recorded failed with \"%s\", "
		  "want \"%s\"",
		  strerror((int)-got), strerror(EIO));
	phi = kt_mpath(m, "derived/phi");
	got = raw_read(phi, buf, sizeof(buf));
	cr_expect(got == -EIO, "derived/phi on a full audit disk: %s",
		  got < 0 ? strerror((int)-got) : "read");

	cr_assert(unlink(filler) == 0);
	got = raw_read(current, buf, sizeof(buf));
	cr_expect(got == TEXT_LEN, "read current after space was freed: %s",
		  got < 0 ? strerror((int)-got) : "short read");
	sodium_memzero(buf, sizeof(buf));
	cr_expect(kt_mount_stop(m) == 0);
	free(current);
	free(phi);
	free(filler);
	free(audit);
	free(line);
}

/* --- many readers while rotations run ------------------------------------- */

/*
 * RACE_READERS processes read current and derived/phi, each between two
 * reads of version, while a rotator rotates every RACE_PERIOD_MS.  What a
 * read may return (DESIGN.md §1): a key that was current at some instant
 * between the start and the end of the read, where a rotation makes both
 * the old and the new key current from the start of its control write
 * until that write returned (the write returns only once every changed
 * file was invalidated).  So a read that starts after the write returned
 * never sees the old key, and no read sees a key before its rotation began.
 * Each read's start and end are recorded on the monotonic clock, as is
 * each control write's, and checked against the keys of every version
 * once all have ended.
 *
 * The version bracket: a read between a read of version giving v0 and one
 * giving v1 returns the key of some v in [v0, v1].  Strict mode holds to it
 * exactly (every read is answered from the snapshot its open took).  In the
 * modes served from the page cache it holds outside a rotation's write:
 * within it, the files are invalidated one after the other, so version may
 * already be fresh while derived/phi is not yet (or the other way round);
 * such reads are counted and must still pass the check above.
 *
 * Every loop also reads versions/<v0>/key and versions/<v0>/derived/phi
 * (names looked up while rotations run) and checks that the second is
 * derive(first, phi).
 */
#define RACE_READERS 16
#define RACE_ROTATIONS 20
#define RACE_PERIOD_MS 150
#define RACE_RECORDS (1 << 16) /* loops recorded per reader */
#define RACE_SEEN 64	       /* distinct values per reader: > rotations */
#define RACE_WHY 192

/* One loop of a reader; times in µs since the start. */
struct race_read {
	uint32_t c0, c1; /* current: before its open, after its close */
	uint32_t d0, d1; /* derived/phi: the same */
	uint32_t v0, v1; /* version, before current and after derived/phi */
	uint8_t ci, di;	 /* the values read, in cur[] and der[] */
};

struct race_reader {
	unsigned long pairs, skipped;
	unsigned n_reads, n_cur, n_der;
	char bad[RACE_WHY];		 /* first failure, or "" */
	uint8_t cur[RACE_SEEN][KEY_LEN]; /* distinct values read */
	uint8_t der[RACE_SEEN][KEY_LEN];
	struct race_read reads[RACE_RECORDS];
};

struct race_shared {
	atomic_int done;
	double t0; /* the start, on the monotonic clock */
	char rot_bad[RACE_WHY];
	unsigned n_rot;
	/* Rotation i (to version base + 1 + i): before its control write,
	 * after the write returned. */
	uint32_t rs[RACE_ROTATIONS], re[RACE_ROTATIONS];
	/* current after rotation i - 1 returned (0: before the first). */
	uint8_t known[RACE_ROTATIONS + 1][KEY_LEN];
	struct race_reader r[RACE_READERS];
};

static uint32_t race_us(const struct race_shared *sh)
{
	return (uint32_t)((now_s() - sh->t0) * 1e6);
}

/* Reads and validates one key file; 1 if gone (ENOENT), 0, or -1 + why. */
static int race_key(const char *mnt, const char *rel, uint8_t key[KEY_LEN],
		    char why[RACE_WHY])
{
	char path[PATH_MAX], buf[128], err[KF_ERR_MAX];
	ssize_t n;
	int r;

	snprintf(path, sizeof(path), "%s/%s", mnt, rel);
	n = raw_read(path, buf, sizeof(buf));
	if (n == -ENOENT)
		return 1;
	if (n != TEXT_LEN) {
		snprintf(why, RACE_WHY, "%s: read gave %zd", rel, n);
		sodium_memzero(buf, sizeof(buf));
		return -1;
	}
	r = kf_key_decode(buf, (size_t)n, key, err);
	sodium_memzero(buf, sizeof(buf));
	if (r < 0) {
		snprintf(why, RACE_WHY, "%s does not validate: %.100s", rel,
			 err);
		return -1;
	}
	return 0;
}

/* The index of key among the n distinct values of seen, added if new;
 * -1 (why set) when there is no room. */
static int race_note(uint8_t (*seen)[KEY_LEN], unsigned *n,
		     const uint8_t key[KEY_LEN], char why[RACE_WHY])
{
	for (unsigned i = *n; i-- > 0;)
		if (sodium_memcmp(seen[i], key, KEY_LEN) == 0)
			return (int)i;
	if (*n == RACE_SEEN) {
		snprintf(why, RACE_WHY, "more than %d distinct values",
			 RACE_SEEN);
		return -1;
	}
	memcpy(seen[*n], key, KEY_LEN);
	return (int)(*n)++;
}

/* The number in the tree's version file; 0 (why set) if it does not read
 * "N\n" -- a stale size would cut it short. */
static uint32_t race_version(const char *mnt, char why[RACE_WHY])
{
	char path[PATH_MAX], text[32], *end;
	unsigned long v;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/version", mnt);
	n = raw_read(path, text, sizeof(text) - 1);
	if (n < 2 || text[n - 1] != '\n') {
		snprintf(why, RACE_WHY, "version read gave %zd bytes%s", n,
			 n > 0 ? " without a newline" : "");
		return 0;
	}
	text[n] = 0;
	v = strtoul(text, &end, 10);
	if (v == 0 || v > UINT32_MAX || *end != '\n') {
		snprintf(why, RACE_WHY, "version reads \"%.*s\"", (int)n - 1,
			 text);
		return 0;
	}
	return (uint32_t)v;
}

/* versions/<v>/derived/phi is derive(versions/<v>/key, phi): 1 if the
 * version is gone meanwhile, 0, or -1 + why. */
static int race_pair(const char *mnt, uint32_t v, char why[RACE_WHY])
{
	uint8_t k[KEY_LEN], d[KEY_LEN], want[KEY_LEN];
	char rel[96];
	int r;

	snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key", v);
	r = race_key(mnt, rel, k, why);
	if (r == 0) {
		snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/derived/phi",
			 v);
		r = race_key(mnt, rel, d, why);
	}
	if (r == 0 && (kf_key_derive(k, "phi", want, NULL) != 0 ||
		       sodium_memcmp(want, d, KEY_LEN) != 0)) {
		snprintf(why, RACE_WHY,
			 "versions/%" PRIu32 "/derived/phi is not "
			 "derive(versions/%" PRIu32 "/key, phi)",
			 v, v);
		r = -1;
	}
	sodium_memzero(k, sizeof(k));
	sodium_memzero(d, sizeof(d));
	sodium_memzero(want, sizeof(want));
	return r;
}

static void race_reader_main(const char *mnt, struct race_shared *sh, int id)
{
	struct race_reader *me = &sh->r[id];
	uint8_t k[KEY_LEN];
	double end = now_s() + 30;

	while (!me->bad[0] && me->n_reads < RACE_RECORDS && now_s() < end) {
		struct race_read *rd = &me->reads[me->n_reads];
		bool last = atomic_load(&sh->done);
		int ci, di, r;

		rd->v0 = race_version(mnt, me->bad);
		if (!rd->v0)
			break;
		rd->c0 = race_us(sh);
		r = race_key(mnt, "current", k, me->bad);
		rd->c1 = race_us(sh);
		if (r > 0)
			snprintf(me->bad, RACE_WHY, "current vanished");
		if (r != 0 ||
		    (ci = race_note(me->cur, &me->n_cur, k, me->bad)) < 0)
			break;
		rd->d0 = race_us(sh);
		r = race_key(mnt, "derived/phi", k, me->bad);
		rd->d1 = race_us(sh);
		if (r > 0)
			snprintf(me->bad, RACE_WHY, "derived/phi vanished");
		if (r != 0 ||
		    (di = race_note(me->der, &me->n_der, k, me->bad)) < 0)
			break;
		rd->v1 = race_version(mnt, me->bad);
		if (!rd->v1)
			break;
		rd->ci = (uint8_t)ci;
		rd->di = (uint8_t)di;
		me->n_reads++;
		r = race_pair(mnt, rd->v0, me->bad);
		if (r < 0)
			break;
		if (r > 0)
			me->skipped++; /* dropped meanwhile: fine */
		else
			me->pairs++;
		if (last)
			break;
	}
	sodium_memzero(k, sizeof(k));
}

static void race_rotator_main(const char *mnt, struct race_shared *sh)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/control/rotate", mnt);
	kt_sleep_ms(RACE_PERIOD_MS); /* the readers get going */
	for (int i = 0; i < RACE_ROTATIONS; i++) {
		sh->rs[i] = race_us(sh);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "1\n", 2) != 2) {
			snprintf(sh->rot_bad, RACE_WHY, "rotation %d: %s", i,
				 strerror(errno));
			if (fd >= 0)
				close(fd);
			break;
		}
		close(fd);
		sh->re[i] = race_us(sh);
		sh->n_rot++;
		if (race_key(mnt, "current", sh->known[i + 1], sh->rot_bad)) {
			snprintf(sh->rot_bad, RACE_WHY,
				 "current after rotation %d", i);
			break;
		}
		kt_sleep_ms(RACE_PERIOD_MS);
	}
	atomic_store(&sh->done, 1);
}

/* Whether version base + j was current at some instant in [a, b]: from the
 * start of the write that made it to the return of the one that replaced
 * it. */
static bool race_current_within(const struct race_shared *sh, int j, uint32_t a,
				uint32_t b)
{
	bool began = j == 0 || sh->rs[j - 1] <= b;
	bool ended = j < (int)sh->n_rot && sh->re[j] < a;

	return began && !ended;
}

struct race_check {
	unsigned long invalid, racing;
	unsigned long below, above; /* outside [v0, v1]: older, newer */
	char first[RACE_WHY];
};

/* One failure of a read, the first of which is told. */
static void race_fail(struct race_check *c, int id, unsigned loop,
		      const char *what)
{
	if (!c->invalid++)
		snprintf(c->first, sizeof(c->first),
			 "reader %d, read %u: %.150s", id, loop, what);
}

/* ver[i]: j such that value i of the n in seen is keys[j], or -1. */
static void race_versions_of(uint8_t (*seen)[KEY_LEN], unsigned n,
			     uint8_t (*keys)[KEY_LEN], unsigned n_keys,
			     int ver[RACE_SEEN])
{
	for (unsigned i = 0; i < n; i++) {
		ver[i] = -1;
		for (unsigned j = 0; j < n_keys && ver[i] < 0; j++)
			if (sodium_memcmp(seen[i], keys[j], KEY_LEN) == 0)
				ver[i] = (int)j;
	}
}

/* Checks every read of reader id against the keys of every version
 * (keys[j], phi[j]: version base + j). */
static void race_check_reader(const struct race_shared *sh, int id,
			      uint32_t base, uint8_t (*keys)[KEY_LEN],
			      uint8_t (*phi)[KEY_LEN], struct race_check *c)
{
	struct race_reader *r = (struct race_reader *)&sh->r[id];
	int vc[RACE_SEEN], vd[RACE_SEEN];
	unsigned n_keys = sh->n_rot + 1;
	char why[RACE_WHY];

	race_versions_of(r->cur, r->n_cur, keys, n_keys, vc);
	race_versions_of(r->der, r->n_der, phi, n_keys, vd);
	for (unsigned i = 0; i < r->n_reads; i++) {
		const struct race_read *rd = &r->reads[i];
		int jc = vc[rd->ci], jd = vd[rd->di];
		bool okc, okd;

		if (jc < 0 || jd < 0) {
			race_fail(c, id, i,
				  jc < 0 ? "current was never current "
					   "(torn or mixed)"
					 : "derived/phi belongs to no key "
					   "(torn or mixed)");
			continue;
		}
		okc = race_current_within(sh, jc, rd->c0, rd->c1);
		okd = race_current_within(sh, jd, rd->d0, rd->d1);
		if (!okc || !okd) {
			snprintf(why, sizeof(why),
				 "%s gave version %" PRIu32
				 ", not current during the read (version "
				 "read %" PRIu32 " before, %" PRIu32 " after)",
				 okc ? "derived/phi" : "current",
				 base + (uint32_t)(okc ? jd : jc), rd->v0,
				 rd->v1);
			race_fail(c, id, i, why);
			continue;
		}
		if (rd->v1 < rd->v0) {
			snprintf(why, sizeof(why),
				 "version went back from %" PRIu32
				 " to %" PRIu32,
				 rd->v0, rd->v1);
			race_fail(c, id, i, why);
			continue;
		}
		if (base + (uint32_t)jc < rd->v0 ||
		    base + (uint32_t)jd < rd->v0)
			c->below++;
		else if (base + (uint32_t)jc > rd->v1 ||
			 base + (uint32_t)jd > rd->v1)
			c->above++;
		for (unsigned k = 0; k < sh->n_rot; k++) {
			if (sh->rs[k] <= rd->d1 && rd->d0 <= sh->re[k]) {
				c->racing++;
				break;
			}
		}
	}
}

static void many_readers(const char *extra, bool bracket_exact)
{
	struct kt_mount *m =
	    start("race", extra ? extra : "retain_versions = 64\n");
	uint8_t(*keys)[KEY_LEN] = mt_secret((RACE_ROTATIONS + 1) * KEY_LEN);
	uint8_t(*phi)[KEY_LEN] = mt_secret((RACE_ROTATIONS + 1) * KEY_LEN);
	struct race_check c = {0};
	pid_t kids[RACE_READERS + 1];
	unsigned long reads = 0;
	struct race_shared *sh;
	uint32_t base = read_version(m);
	char rel[64];

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(sh != MAP_FAILED);
	sh->t0 = now_s();
	read_key(m, "current", sh->known[0]);
	for (int i = 0; i <= RACE_READERS; i++) {
		kids[i] = fork();
		cr_assert(kids[i] >= 0);
		if (kids[i] == 0) {
			if (i == RACE_READERS)
				race_rotator_main(m->mnt, sh);
			else
				race_reader_main(m->mnt, sh, i);
			_exit(0);
		}
	}
	for (int i = 0; i <= RACE_READERS; i++) {
		int st = kt_wait_child(kids[i], 60000);

		if (st < 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
		cr_expect(st == 0, "child %d did not finish cleanly", i);
	}
	cr_assert(sh->rot_bad[0] == 0, "rotator: %s", sh->rot_bad);
	cr_assert(sh->n_rot == RACE_ROTATIONS, "%u rotations done", sh->n_rot);
	cr_assert(read_version(m) == base + RACE_ROTATIONS,
		  "version is not %u after the rotations",
		  (unsigned)(base + RACE_ROTATIONS));
	/* Every version's key, read now that nothing changes. */
	for (unsigned j = 0; j <= sh->n_rot; j++) {
		snprintf(rel, sizeof(rel), "versions/%" PRIu32 "/key",
			 base + j);
		read_key(m, rel, keys[j]);
		cr_assert(sodium_memcmp(keys[j], sh->known[j], KEY_LEN) == 0,
			  "%s is not what current read after its rotation",
			  rel);
		derive(keys[j], "phi", phi[j]);
	}
	for (int i = 0; i < RACE_READERS; i++) {
		struct race_reader *r = &sh->r[i];

		cr_expect(r->bad[0] == 0, "reader %d: %s", i, r->bad);
		cr_expect(r->n_reads < RACE_RECORDS,
			  "reader %d filled its %d records before the end", i,
			  RACE_RECORDS);
		cr_expect(r->n_der > 2,
			  "reader %d saw %u values of derived/phi "
			  "in %d rotations",
			  i, r->n_der, RACE_ROTATIONS);
		cr_expect(r->pairs > 0, "reader %d checked no version pair", i);
		race_check_reader(sh, i, base, keys, phi, &c);
		reads += r->n_reads;
	}
	cr_log_info("%lu reads by %d readers, %lu during a rotation's write, "
		    "%lu older and %lu newer than the versions read around "
		    "them, %lu invalid",
		    reads, RACE_READERS, c.racing, c.below, c.above, c.invalid);
	cr_expect(c.invalid == 0, "%lu of %lu reads invalid; first: %s",
		  c.invalid, reads, c.first);
	cr_expect(c.racing > 0, "no read ran during a rotation's write");
	if (bracket_exact)
		cr_expect(c.below + c.above == 0,
			  "%lu reads gave a key older, %lu newer, than the "
			  "versions read before and after them",
			  c.below, c.above);
	sodium_memzero(sh, sizeof(*sh));
	munmap(sh, sizeof(*sh));
}

Test(reads, many_readers_get_current_keys_audited, .timeout = 90)
{
	many_readers(NULL, false);
}

Test(reads, many_readers_get_current_keys_strict, .timeout = 90)
{
	many_readers("retain_versions = 64\nread_mode = strict\n", true);
}

Test(reads, many_readers_get_current_keys_cached, .timeout = 90)
{
	many_readers("retain_versions = 64\nread_mode = cached\n", false);
}
