// SPDX-License-Identifier: MIT
/*
 * Reading the mounted tree, against the real keyfs binary: fresh keys after
 * every rotation in both read modes, an open file keeps the key it opened
 * with, which opens are audited (and that one which cannot be is refused),
 * and no reader ever gets a torn or mixed key while rotations run.
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

Test(reads, open_file_keeps_its_key_strict, .timeout = 30)
{
	struct kt_mount *m = start("snap", "read_mode = strict\n");
	char *pc = kt_mpath(m, "current"), *pd = kt_mpath(m, "derived/phi");
	char *a = mt_secret(64), *b = mt_secret(64), *c = mt_secret(64),
	     *d = mt_secret(64);
	uint8_t *now = mt_secret(KEY_LEN), *then = mt_secret(KEY_LEN);
	char err[KF_ERR_MAX];
	int fc = open(pc, O_RDONLY | O_CLOEXEC), fd;

	fd = open(pd, O_RDONLY | O_CLOEXEC);
	cr_assert(fc >= 0 && fd >= 0, "open: %s", strerror(errno));
	cr_assert(pread(fc, a, 64, 0) == TEXT_LEN);
	cr_assert(pread(fd, c, 64, 0) == TEXT_LEN);
	rotate_ok(m);
	rotate_ok(m);
	cr_assert(pread(fc, b, 64, 0) == TEXT_LEN,
		  "re-read of an open current failed");
	cr_assert(pread(fd, d, 64, 0) == TEXT_LEN,
		  "re-read of an open derived/phi failed");
	cr_expect(memcmp(a, b, TEXT_LEN) == 0,
		  "an open current changed its key after a rotation");
	cr_expect(memcmp(c, d, TEXT_LEN) == 0,
		  "an open derived/phi changed its key after a rotation");
	cr_assert(kf_key_decode(a, TEXT_LEN, then, err) == 0, "%s", err);
	read_key(m, "current", now);
	cr_expect(sodium_memcmp(now, then, KEY_LEN) != 0,
		  "a new open still sees the old key");
	close(fc);
	close(fd);
	free(pc);
	free(pd);
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

	cr_assert(asprintf(&line, "audit_log = %s\n", audit) > 0);
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

/* --- no torn keys --------------------------------------------------------- */

#define TORN_READERS 3
#define TORN_ROTATIONS 20
#define TORN_SEEN 256

struct torn_reader {
	unsigned long reads, pairs, skipped;
	char bad[160]; /* first failure, or "" */
	unsigned n_cur, n_der;
	uint8_t cur[TORN_SEEN][KEY_LEN]; /* distinct values read */
	uint8_t der[TORN_SEEN][KEY_LEN];
};

struct torn_shared {
	atomic_int done;
	char rot_bad[160];
	unsigned n_known;
	uint8_t known[TORN_ROTATIONS + 1][KEY_LEN]; /* every current */
	struct torn_reader r[TORN_READERS];
};

/* Reads and validates one key file; 1 if gone (ENOENT), 0, or -1 + why. */
static int torn_key(const char *mnt, const char *rel, uint8_t key[KEY_LEN],
		    char why[160])
{
	char path[PATH_MAX], buf[128], err[KF_ERR_MAX];
	ssize_t n;
	int r;

	snprintf(path, sizeof(path), "%s/%s", mnt, rel);
	n = raw_read(path, buf, sizeof(buf));
	if (n == -ENOENT)
		return 1;
	if (n != TEXT_LEN) {
		snprintf(why, 160, "%s: read gave %zd", rel, n);
		sodium_memzero(buf, sizeof(buf));
		return -1;
	}
	r = kf_key_decode(buf, (size_t)n, key, err);
	sodium_memzero(buf, sizeof(buf));
	if (r < 0) {
		snprintf(why, 160, "%s does not validate: %.100s", rel, err);
		return -1;
	}
	return 0;
}

/* Adds key to the distinct values seen (a rotation period may interleave
 * two of them: readers race with the rotator). */
static void torn_note(uint8_t (*seen)[KEY_LEN], unsigned *n,
		      const uint8_t key[KEY_LEN], char why[160])
{
	for (unsigned i = *n; i-- > 0;)
		if (sodium_memcmp(seen[i], key, KEY_LEN) == 0)
			return;
	if (*n == TORN_SEEN) {
		snprintf(why, 160, "more than %d distinct values", TORN_SEEN);
		return;
	}
	memcpy(seen[(*n)++], key, KEY_LEN);
}

/* torn_key of a file that must be there, noted in seen; false (why set)
 * if it failed or was gone. */
static bool torn_read(const char *mnt, const char *rel, uint8_t key[KEY_LEN],
		      uint8_t (*seen)[KEY_LEN], unsigned *n, char why[160])
{
	int r = torn_key(mnt, rel, key, why);

	if (r > 0)
		snprintf(why, 160, "%s vanished", rel);
	if (r != 0)
		return false;
	torn_note(seen, n, key, why);
	return true;
}

static void torn_reader_main(const char *mnt, struct torn_shared *sh, int id)
{
	struct torn_reader *me = &sh->r[id];
	uint8_t k[KEY_LEN], d[KEY_LEN], want[KEY_LEN];
	double end = now_s() + 15;

	while (!me->bad[0] && now_s() < end) {
		char rel[96], vtext[32], vpath[PATH_MAX];
		bool last = atomic_load(&sh->done);
		unsigned long v;
		ssize_t n;
		int r;

		me->reads++;
		if (!torn_read(mnt, "current", k, me->cur, &me->n_cur,
			       me->bad) ||
		    !torn_read(mnt, "derived/phi", d, me->der, &me->n_der,
			       me->bad))
			break;

		snprintf(vpath, sizeof(vpath), "%s/version", mnt);
		n = raw_read(vpath, vtext, sizeof(vtext) - 1);
		if (n < 2 || vtext[n - 1] != '\n') {
			snprintf(me->bad, 160, "version read gave %zd", n);
			break;
		}
		vtext[n] = 0;
		v = strtoul(vtext, NULL, 10);
		snprintf(rel, sizeof(rel), "versions/%lu/key", v);
		r = torn_key(mnt, rel, k, me->bad);
		if (r == 0) {
			snprintf(rel, sizeof(rel), "versions/%lu/derived/phi",
				 v);
			r = torn_key(mnt, rel, d, me->bad);
		}
		if (r < 0)
			break;
		if (r > 0) {
			me->skipped++; /* dropped meanwhile: fine */
		} else {
			if (kf_key_derive(k, "phi", want, NULL) != 0 ||
			    sodium_memcmp(want, d, KEY_LEN) != 0) {
				snprintf(me->bad, 160,
					 "versions/%lu/derived/phi is not "
					 "derive(versions/%lu/key, phi)",
					 v, v);
				break;
			}
			torn_note(me->cur, &me->n_cur, k, me->bad);
			me->pairs++;
		}
		if (last)
			break;
	}
	sodium_memzero(k, sizeof(k));
	sodium_memzero(d, sizeof(d));
	sodium_memzero(want, sizeof(want));
}

static void torn_rotator_main(const char *mnt, struct torn_shared *sh)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/control/rotate", mnt);
	for (int i = 0; i < TORN_ROTATIONS; i++) {
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "1\n", 2) != 2) {
			snprintf(sh->rot_bad, 160, "rotation %d: %s", i,
				 strerror(errno));
			if (fd >= 0)
				close(fd);
			break;
		}
		close(fd);
		if (torn_key(mnt, "current", sh->known[sh->n_known],
			     sh->rot_bad) != 0) {
			snprintf(sh->rot_bad, 160, "current after rotation");
			break;
		}
		sh->n_known++;
		kt_sleep_ms(70);
	}
	atomic_store(&sh->done, 1);
}

static bool torn_is_known(const struct torn_shared *sh,
			  const uint8_t key[KEY_LEN], bool derived)
{
	uint8_t d[KEY_LEN];
	bool found = false;

	for (unsigned i = 0; i < sh->n_known && !found; i++) {
		if (!derived) {
			found = sodium_memcmp(sh->known[i], key, KEY_LEN) == 0;
			continue;
		}
		derive(sh->known[i], "phi", d);
		found = sodium_memcmp(d, key, KEY_LEN) == 0;
	}
	sodium_memzero(d, sizeof(d));
	return found;
}

static void no_torn_keys(const char *extra)
{
	struct kt_mount *m = start("torn", extra);
	struct torn_shared *sh;
	pid_t kids[TORN_READERS + 1];
	uint32_t v0 = read_version(m);

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	read_key(m, "current", sh->known[0]);
	sh->n_known = 1;
	for (int i = 0; i <= TORN_READERS; i++) {
		kids[i] = fork();
		cr_assert(kids[i] >= 0);
		if (kids[i] == 0) {
			if (i == TORN_READERS)
				torn_rotator_main(m->mnt, sh);
			else
				torn_reader_main(m->mnt, sh, i);
			_exit(0);
		}
	}
	for (int i = 0; i <= TORN_READERS; i++) {
		int st = kt_wait_child(kids[i], 30000);

		if (st < 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
		cr_expect(st == 0, "child %d did not finish cleanly", i);
	}
	cr_expect(sh->rot_bad[0] == 0, "rotator: %s", sh->rot_bad);
	cr_expect(sh->n_known == TORN_ROTATIONS + 1, "%u rotations done",
		  sh->n_known - 1);
	cr_expect(read_version(m) == v0 + TORN_ROTATIONS,
		  "version is not %u after the rotations",
		  (unsigned)(v0 + TORN_ROTATIONS));
	for (int i = 0; i < TORN_READERS; i++) {
		struct torn_reader *r = &sh->r[i];

		cr_expect(r->bad[0] == 0, "reader %d: %s", i, r->bad);
		cr_expect(r->pairs > 0, "reader %d checked no version pair", i);
		cr_expect(r->n_cur > 1, "reader %d never saw a rotation", i);
		for (unsigned j = 0; j < r->n_cur; j++)
			cr_expect(torn_is_known(sh, r->cur[j], false),
				  "reader %d read a key that was never "
				  "current (torn or mixed)",
				  i);
		for (unsigned j = 0; j < r->n_der; j++)
			cr_expect(torn_is_known(sh, r->der[j], true),
				  "reader %d read a derived/phi that belongs "
				  "to no key (torn or mixed)",
				  i);
		cr_log_info("reader %d: %lu loops, %lu pairs, %lu skipped", i,
			    r->reads, r->pairs, r->skipped);
	}
	sodium_memzero(sh, sizeof(*sh));
	munmap(sh, sizeof(*sh));
}

Test(reads, no_torn_keys_under_rotation_audited, .timeout = 90)
{
	no_torn_keys(NULL);
}

Test(reads, no_torn_keys_under_rotation_cached, .timeout = 90)
{
	no_torn_keys("read_mode = cached\n");
}
