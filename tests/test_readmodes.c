// SPDX-License-Identifier: MIT
/*
 * What each read mode asks of the daemon, through the real keyfs binary,
 * seen in the counters it logs on SIGUSR1 (fs/mount.c): which opens and
 * reads reach it, which opens are audited, and which invalidations a
 * rotation sends.  What readers get is test_reads's; here it is checked
 * only where a saving could cost freshness.  No test asserts a time.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "mount_fixture.h"

TestSuite(readmodes, .fini = mt_fini);

/* The daemon's request counters (the SIGUSR1 "requests:" line). */
struct requests {
	unsigned long lookup, getattr, open, read;
};

static void requests_now(struct kt_mount *m, struct requests *rq)
{
	char *line = daemon_line(m, "requests:");

	cr_assert(line, "the daemon logged no requests line on SIGUSR1 (%s)",
		  m->log);
	rq->lookup = line_field(line, "lookup");
	rq->getattr = line_field(line, "getattr");
	rq->open = line_field(line, "open");
	rq->read = line_field(line, "read");
	free(line);
}

/* One open, one read of up to 4096 bytes (so a read that reaches the
 * daemon is one READ), one close: the key it held. */
static void read_once(const char *path, const char *rel, uint8_t key[KEY_LEN])
{
	char text[4096], err[KF_ERR_MAX];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	int r;

	cr_assert(fd >= 0, "open %s: %s", rel, strerror(errno));
	n = read(fd, text, sizeof(text));
	close(fd);
	cr_assert(n == TEXT_LEN, "read %s gave %zd", rel, n);
	r = kf_key_decode(text, (size_t)n, key, err);
	sodium_memzero(text, sizeof(text));
	cr_assert(r == 0, "%s does not validate: %s", rel, err);
}

#define REPEATS 100

/*
 * After a first read of derived/phi, REPEATS more open + read + close: what
 * reached the daemon, and how many key_open records they left.  Every read
 * gives the same key.  Names and attributes are the kernel's for a day, so
 * no lookup reaches the daemon either.
 */
static void repeated_reads(const char *extra, unsigned long want_opens,
			   unsigned long want_reads)
{
	struct kt_mount *m = start("repeat", extra);
	uint8_t *first = mt_secret(KEY_LEN), *k = mt_secret(KEY_LEN);
	char *path = kt_mpath(m, "derived/phi");
	struct requests a, b;
	size_t mark;
	json_t *recs;

	read_once(path, "derived/phi", first);
	mark = kt_audit_size(m);
	requests_now(m, &a);
	for (int i = 0; i < REPEATS; i++) {
		read_once(path, "derived/phi", k);
		cr_assert(sodium_memcmp(k, first, KEY_LEN) == 0,
			  "read %d of derived/phi gave another key", i);
	}
	requests_now(m, &b);
	recs = kt_audit_since(m, mark);
	cr_log_info("%d reads: lookup +%lu getattr +%lu open +%lu read +%lu",
		    REPEATS, b.lookup - a.lookup, b.getattr - a.getattr,
		    b.open - a.open, b.read - a.read);
	cr_expect(b.open - a.open == want_opens,
		  "%d opens of derived/phi: %lu OPENs reached the daemon, "
		  "want %lu",
		  REPEATS, b.open - a.open, want_opens);
	cr_expect(b.read - a.read == want_reads,
		  "%d reads of derived/phi: %lu READs reached the daemon, "
		  "want %lu",
		  REPEATS, b.read - a.read, want_reads);
	cr_expect(b.lookup == a.lookup,
		  "%lu lookups reached the daemon for a name it gave out "
		  "for a day",
		  b.lookup - a.lookup);
	cr_expect(kt_count_records(recs, "key_open", -1) == want_opens,
		  "%d opens of derived/phi left %zu key_open records, want "
		  "%lu",
		  REPEATS, kt_count_records(recs, "key_open", -1), want_opens);
	for (size_t i = 0; i < json_array_size(recs); i++) {
		json_t *r = json_array_get(recs, i);

		if (!kt_record_is(r, "key_open", -1))
			continue;
		cr_expect(strcmp(kt_str_of(r, "path"), "derived/phi") == 0 &&
			      jint(r, "pid") == getpid(),
			  "a key_open record names %s, pid %lld",
			  kt_str_of(r, "path"), (long long)jint(r, "pid"));
	}
	json_decref(recs);
	free(path);
}

/* Audited: every open reaches the daemon and is recorded (one record per
 * open with audit_open_window = 0; the window's counting is
 * test_auditing's); the read is the page cache's (keep_cache). */
Test(readmodes, audited_opens_are_recorded_and_reads_stay_in_the_page_cache,
     .timeout = 30)
{
	repeated_reads("audit_open_window = 0\n", REPEATS, 0);
}

/* Strict: every open and every read reach the daemon (direct_io). */
Test(readmodes, strict_opens_and_reads_reach_the_daemon, .timeout = 30)
{
	repeated_reads("read_mode = strict\naudit_open_window = 0\n", REPEATS,
		       REPEATS);
}

/* Cached: neither opens nor reads reach the daemon; nothing is audited. */
Test(readmodes, cached_opens_and_reads_stay_in_the_kernel, .timeout = 30)
{
	repeated_reads("read_mode = cached\n", 0, 0);
}

/* --- what a rotation invalidates ------------------------------------------ */

#define MANY 1000  /* purposes q0 ... q999, after phi pii billing */
#define FEW_MAX 50 /* inode invalidations a rotation may send for a few */
#define ROTATIONS 5
#define PIN_EVERY 7 /* derived/q<i> kept open through a drop */
#define N_PINS ((MANY + PIN_EVERY - 1) / PIN_EVERY)

/* The daemon's invalidations so far (the SIGUSR1 "invalidations:" line). */
struct invals {
	unsigned long inode, entry, skipped;
};

static void invals_now(struct kt_mount *m, struct invals *iv)
{
	char *line = daemon_line(m, "invalidations:");

	cr_assert(line,
		  "the daemon logged no \"invalidations:\" line on SIGUSR1: "
		  "this keyfs does not count lookups (%s)",
		  m->log);
	iv->inode = line_field(line, "inode");
	iv->entry = line_field(line, "entry");
	iv->skipped = line_field(line, "skipped");
	free(line);
}

/*
 * Waits (up to 10 s) until the daemon counts at most max inodes held by the
 * kernel: the FORGETs of a drop have reached it.
 */
static void wait_forgotten(struct kt_mount *m, unsigned long max)
{
	unsigned long held = 0;

	for (int waited = 0; waited < 10000; waited += 50) {
		char *line = daemon_line(m, "invalidations:");

		cr_assert(line, "no \"invalidations:\" line (%s)", m->log);
		held = line_field(line, "held");
		free(line);
		if (held <= max)
			return;
		kt_sleep_ms(50);
	}
	cr_assert(false,
		  "the daemon still counts %lu inodes held by the kernel "
		  "after a drop, want at most %lu",
		  held, max);
}

/* Reads derived/q<from> ... derived/q<to - 1> and expects each to be
 * derive(current, q<i>). */
static void expect_all_fresh(struct kt_mount *m, int from, int to,
			     const char *when)
{
	uint8_t cur[KEY_LEN], got[KEY_LEN], want[KEY_LEN];
	char rel[64];
	bool same = true;

	read_key(m, "current", cur);
	for (int i = from; i < to; i++) {
		snprintf(rel, sizeof(rel), "derived/q%d", i);
		read_key(m, rel, got);
		derive(cur, rel + strlen("derived/"), want);
		same = sodium_memcmp(got, want, KEY_LEN) == 0;
		if (!same)
			break;
	}
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(got, sizeof(got));
	sodium_memzero(want, sizeof(want));
	cr_assert(same, "%s is stale %s", rel, when);
}

/* Rotates n times; the inode invalidations they sent. */
static unsigned long rotations_sent(struct kt_mount *m, int n)
{
	struct invals a, b;

	invals_now(m, &a);
	for (int i = 0; i < n; i++)
		rotate_ok(m);
	invals_now(m, &b);
	cr_log_info("%d rotations: inode +%lu entry +%lu skipped +%lu", n,
		    b.inode - a.inode, b.entry - a.entry,
		    b.skipped - a.skipped);
	return b.inode - a.inode;
}

/*
 * With MANY purposes configured and only a few names looked up, a rotation
 * invalidates only those few inodes (lookup counting), and every name is
 * still fresh when read afterwards, for the first time.  Once the kernel
 * holds them all, a rotation invalidates them all (each one's count is
 * there) and they are fresh again; once the kernel has forgotten them
 * (FORGET), a rotation skips them again, and they are fresh when looked up
 * anew.
 */
Test(readmodes, a_rotation_invalidates_only_what_the_kernel_holds,
     .timeout = 120)
{
	size_t cap = (size_t)MANY * 24 + 1, len = 0;
	char *sections = malloc(cap);
	int pins[N_PINS];
	struct kt_mount *m;
	unsigned long sent;
	uint8_t k[KEY_LEN];
	char rel[64];

	cr_assert(sections);
	sections[0] = 0;
	for (int i = 0; i < MANY; i++)
		len += (size_t)snprintf(sections + len, cap - len,
					"[purpose q%d]\n", i);
	m = start_sections("held", "retain_versions = 4\n", sections);
	free(sections);

	/* A few names: current, version, derived/phi, derived/q0..q4. */
	read_key(m, "derived/phi", k);
	expect_all_fresh(m, 0, 5, "before any rotation");
	sent = rotations_sent(m, ROTATIONS);
	cr_expect(sent >= ROTATIONS,
		  "%d rotations invalidated %lu inodes: not even current",
		  ROTATIONS, sent);
	cr_expect(sent < (unsigned long)ROTATIONS * FEW_MAX,
		  "%d rotations invalidated %lu inodes while the kernel held "
		  "a few of %d purposes",
		  ROTATIONS, sent, MANY);
	expect_all_fresh(m, 0, 5, "after rotations (looked up before)");
	expect_all_fresh(m, 5, MANY, "after rotations (first looked up)");

	/* Now the kernel holds every derived/q<i>. */
	sent = rotations_sent(m, 1);
	cr_expect(sent >= MANY,
		  "a rotation invalidated %lu inodes while the kernel held "
		  "all %d derived files",
		  sent, MANY);
	expect_all_fresh(m, 0, MANY, "after a rotation (all held)");

	/*
	 * Every PIN_EVERY-th kept open: the kernel forgets the others and
	 * keeps these, so the daemon's table loses most entries around
	 * them.  Each kept one is still invalidated, and is fresh through
	 * its open file and through a new open.
	 */
	for (int i = 0; i < MANY; i += PIN_EVERY) {
		char *path;

		snprintf(rel, sizeof(rel), "derived/q%d", i);
		path = kt_mpath(m, rel);
		pins[i / PIN_EVERY] = open(path, O_RDONLY | O_CLOEXEC);
		cr_assert(pins[i / PIN_EVERY] >= 0, "open %s: %s", rel,
			  strerror(errno));
		free(path);
	}
	drop_dentries();
	wait_forgotten(m, N_PINS + FEW_MAX);
	sent = rotations_sent(m, 1);
	cr_expect(sent >= N_PINS && sent < N_PINS + FEW_MAX,
		  "a rotation invalidated %lu inodes while the kernel held "
		  "%d derived files (and a few others)",
		  sent, N_PINS);
	read_key(m, "current", k);
	for (int i = 0; i < MANY; i += PIN_EVERY) {
		uint8_t got[KEY_LEN], want[KEY_LEN];
		char text[64], err[KF_ERR_MAX];
		bool same;

		snprintf(rel, sizeof(rel), "derived/q%d", i);
		cr_assert(pread(pins[i / PIN_EVERY], text, sizeof(text), 0) ==
			      TEXT_LEN,
			  "read of an open %s", rel);
		cr_assert(kf_key_decode(text, TEXT_LEN, got, err) == 0,
			  "%s does not validate: %s", rel, err);
		derive(k, rel + strlen("derived/"), want);
		same = sodium_memcmp(got, want, KEY_LEN) == 0;
		sodium_memzero(text, sizeof(text));
		sodium_memzero(got, sizeof(got));
		sodium_memzero(want, sizeof(want));
		cr_assert(same, "%s, kept open, is stale", rel);
	}
	expect_all_fresh(m, 0, MANY,
			 "after a rotation (some kept, the others forgotten "
			 "and looked up again)");

	/* All forgotten (FORGET), they are skipped again. */
	for (int i = 0; i < N_PINS; i++)
		close(pins[i]);
	drop_dentries();
	wait_forgotten(m, FEW_MAX);
	sent = rotations_sent(m, 1);
	cr_expect(sent < FEW_MAX,
		  "a rotation invalidated %lu inodes after the kernel "
		  "forgot the derived files",
		  sent);
	expect_all_fresh(m, 0, MANY,
			 "after a rotation (forgotten, looked up again)");
	sodium_memzero(k, sizeof(k));
}
