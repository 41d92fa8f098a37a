// SPDX-License-Identifier: MIT
/*
 * keyfs-bench's cluster commands, for bench/cluster: several keyfs daemons
 * sharing one keyring in etcd, mounted at MOUNT...
 *
 *   keyfs-bench propagate MOUNT... [-n N] [-i MS] [-u US]
 *       N rotations, written to each mount's control/rotate in turn, MS
 *       apart (default 50).  For each: how long the write took, and the
 *       time from just before the write until the last mount serves a new
 *       derived/phi.  A second thread polls derived/phi of every mount
 *       that has not changed yet, pausing US (default 200) after each pass.
 *       Before every rotation and at the end all mounts must agree on
 *       version and derived/phi; rotations after disagreement still count.
 *   keyfs-bench race MOUNT... [-n N]
 *       N rounds; in each, one thread per mount writes control/rotate after
 *       a barrier.  Every round should have exactly one winner (the others
 *       answer "... (by node NAME)") and raise the version by one.  The
 *       next round begins when every mount serves the new version.  Rounds
 *       that do not are described on stderr.
 *   keyfs-bench reads MOUNT... [-d SEC] [-i MS] [-k PID -a SEC]
 *       one thread per mount reads derived/phi (open, read to EOF, close)
 *       every MS (default 1) for SEC seconds (default 4); with -k, PID
 *       gets SIGKILL SEC (-a) into the run, and the reads are also told
 *       apart by when they began: before the kill, in the second after it,
 *       later.  Failed reads are counted.
 *
 * Each prints one line of name=value pairs (times in microseconds).  Keys
 * are read into guarded memory or wiped stack buffers, compared with
 * sodium_memcmp, and never printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "bench.h"

#define MOUNTS_MAX 16
#define KEY_TEXT 44	      /* derived/phi: a key's text form */
#define ANSWER_MAX 128	      /* "rotated: version N (by node NAME)\n" */
#define VERSION_MAX 32	      /* "N\n" */
#define WAIT_NS 5000000000ull /* longest wait for a mount to catch up */
#define SLOW_NS 10000000u     /* a read slower than this is "slow" */
#define READS_MAX (1u << 22)  /* samples per reader thread */

struct cl_opts {
	const char *mounts[MOUNTS_MAX];
	int n;
	uint64_t count;	    /* rotations or rounds */
	double interval_ms; /* propagate: pause; reads: period */
	double poll_us;	    /* propagate: pause between polling passes */
	double seconds;	    /* reads: length of the run */
	pid_t kill_pid;	    /* reads: SIGKILL this process ... */
	double kill_after;  /* ... this many seconds into the run */
};

struct cl_paths {
	char phi[MOUNTS_MAX][PATH_MAX];
	char version[MOUNTS_MAX][PATH_MAX];
	char rotate[MOUNTS_MAX][PATH_MAX];
};

static uint32_t clamp_u32(uint64_t ns)
{
	return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int paths_init(struct cl_paths *p, const struct cl_opts *o)
{
	for (int i = 0; i < o->n; i++) {
		const char *m = o->mounts[i];

		if (snprintf(p->phi[i], PATH_MAX, "%s/derived/phi", m) >=
			PATH_MAX ||
		    snprintf(p->version[i], PATH_MAX, "%s/version", m) >=
			PATH_MAX ||
		    snprintf(p->rotate[i], PATH_MAX, "%s/control/rotate", m) >=
			PATH_MAX)
			return -ENAMETOOLONG;
	}
	return 0;
}

/*
 * Reads the whole of path (open, read to EOF, close) into buf: its length,
 * or -errno; -EMSGSIZE if it does not fit.
 */
static ssize_t slurp(const char *path, char *buf, size_t size)
{
	ssize_t n = 0, total = 0;
	char extra;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while ((size_t)total < size &&
	       (n = read(fd, buf + total, size - (size_t)total)) > 0)
		total += n;
	/* Full: the next read must find the end, as cat's would. */
	if (n >= 0 && (size_t)total == size) {
		n = read(fd, &extra, 1);
		if (n > 0) {
			errno = EMSGSIZE;
			n = -1;
		}
	}
	if (n < 0)
		total = -errno;
	if (close(fd) < 0 && total >= 0)
		total = -errno;
	return total;
}

/* Reads one key's text form from path into key: 0 or -errno. */
static int read_key(const char *path, unsigned char key[KEY_TEXT])
{
	ssize_t n = slurp(path, (char *)key, KEY_TEXT);

	return n < 0 ? (int)n : n == KEY_TEXT ? 0 : -EMSGSIZE;
}

/* The number in a version file, or -errno. */
static long read_version(const char *path)
{
	char buf[VERSION_MAX];
	ssize_t n = slurp(path, buf, sizeof(buf) - 1);
	char *end;
	long v;

	if (n < 0)
		return (long)n;
	buf[n] = 0;
	v = strtol(buf, &end, 10);
	return end == buf || *end != '\n' || v < 0 ? -EBADMSG : v;
}

/* One write to control/rotate and its answer. */
struct rotation {
	long version; /* from "rotated: version N", or -errno */
	bool won;     /* false: the answer names another node */
	uint64_t t0;  /* just before the write */
	uint64_t ns;  /* the write's duration */
};

/* Opens a control/rotate file for rotate_fd: a descriptor or -errno. */
static int rotate_open(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/*
 * Writes "1\n" to fd (from rotate_open) and reads its answer back from
 * offset 0; closes fd.  A failed open (fd < 0) is reported as such.
 */
static struct rotation rotate_fd(int fd)
{
	struct rotation rot = {.version = fd, .won = false};
	char answer[ANSWER_MAX];
	ssize_t n;

	if (fd < 0)
		return rot;
	rot.t0 = kb_now_ns();
	n = write(fd, "1\n", 2);
	rot.ns = kb_now_ns() - rot.t0;
	if (n != 2) {
		rot.version = n < 0 ? -errno : -EIO;
		goto out;
	}
	n = pread(fd, answer, sizeof(answer) - 1, 0);
	if (n < 0) {
		rot.version = -errno;
		goto out;
	}
	answer[n] = 0;
	if (sscanf(answer, "rotated: version %ld", &rot.version) != 1 ||
	    rot.version < 0)
		rot.version = -EBADMSG;
	rot.won = strstr(answer, "(by node") == NULL;
out:
	close(fd);
	return rot;
}

/* --- propagate ------------------------------------------------------------ */

struct prop {
	const struct cl_opts *o;
	const struct cl_paths *p;
	pthread_barrier_t start; /* main and poller: a rotation begins */
	pthread_barrier_t done;	 /* the poller has seen every mount change */
	atomic_bool quit;
	unsigned char *old;	   /* guarded: o->n keys before the rotation */
	uint64_t seen[MOUNTS_MAX]; /* when each mount served another key */
	uint64_t read_errors;	   /* failed polls (written by the poller) */
};

static void poll_once(struct prop *pr)
{
	const struct cl_opts *o = pr->o;
	unsigned char key[KEY_TEXT];
	uint64_t until = kb_now_ns() + WAIT_NS;
	int pending = o->n;

	memset(pr->seen, 0, sizeof(pr->seen));
	while (pending > 0 && kb_now_ns() < until) {
		for (int i = 0; i < o->n; i++) {
			if (pr->seen[i])
				continue;
			if (read_key(pr->p->phi[i], key) < 0) {
				pr->read_errors++;
				continue;
			}
			if (sodium_memcmp(key, pr->old + i * KEY_TEXT,
					  KEY_TEXT) != 0) {
				pr->seen[i] = kb_now_ns();
				pending--;
			}
		}
		if (pending > 0 && o->poll_us > 0)
			kb_sleep_until(kb_now_ns() +
				       (uint64_t)(o->poll_us * 1000));
	}
	sodium_memzero(key, sizeof(key));
}

static void *poller_main(void *arg)
{
	struct prop *pr = arg;

	for (;;) {
		pthread_barrier_wait(&pr->start);
		if (atomic_load(&pr->quit))
			break;
		poll_once(pr);
		pthread_barrier_wait(&pr->done);
	}
	return NULL;
}

/*
 * Reads every mount's derived/phi into pr->old and its version: 0 when
 * all agree (*ret_version set), 1 when they do not, -errno on a failed
 * read.
 */
static int agree(struct prop *pr, long *ret_version)
{
	long v0 = -1;
	int differ = 0;

	for (int i = 0; i < pr->o->n; i++) {
		unsigned char *k = pr->old + i * KEY_TEXT;
		long v = read_version(pr->p->version[i]);
		int r = read_key(pr->p->phi[i], k);

		if (v < 0)
			return (int)v;
		if (r < 0)
			return r;
		if (i == 0)
			v0 = v;
		else if (v != v0 || sodium_memcmp(k, pr->old, KEY_TEXT) != 0)
			differ = 1;
	}
	*ret_version = v0;
	return differ;
}

/*
 * Waits up to WAIT_NS for agree() to hold: as agree(), and says why on
 * stderr when a read failed.
 */
static int agree_wait(struct prop *pr, long *ret_version)
{
	uint64_t until = kb_now_ns() + WAIT_NS;
	int r;

	while ((r = agree(pr, ret_version)) == 1 && kb_now_ns() < until)
		kb_sleep_until(kb_now_ns() + 1000000u);
	if (r < 0)
		fprintf(stderr, "keyfs-bench: reading the mounts: %s\n",
			strerror(-r));
	return r;
}

static int run_propagate(const struct cl_opts *o, const struct cl_paths *p)
{
	static struct prop pr;
	uint32_t *all = calloc(o->count, sizeof(*all));
	uint32_t *wr = calloc(o->count, sizeof(*wr));
	uint32_t *lag = calloc(o->count, sizeof(*lag));
	uint64_t timeouts = 0, disagreed = 0, bad_version = 0, errors = 0;
	long version = 0, start = 0;
	size_t n = 0;
	pthread_t poller;
	int r, first_error = 0, rc = 1;

	pr.o = o;
	pr.p = p;
	pr.old = sodium_malloc((size_t)o->n * KEY_TEXT);
	if (!all || !wr || !lag || !pr.old) {
		fprintf(stderr, "keyfs-bench: out of memory\n");
		goto out_free;
	}
	pthread_barrier_init(&pr.start, NULL, 2);
	pthread_barrier_init(&pr.done, NULL, 2);
	pthread_create(&poller, NULL, poller_main, &pr);
	for (uint64_t i = 0; i < o->count; i++) {
		const char *ctl = p->rotate[i % (uint64_t)o->n];
		uint64_t t0, d, last = 0;
		struct rotation rot;
		long v, before;
		int fd;

		r = agree_wait(&pr, &before);
		if (r < 0)
			goto out_stop;
		disagreed += (uint64_t)r;
		if (i == 0)
			start = before;
		fd = rotate_open(ctl);
		pthread_barrier_wait(&pr.start);
		rot = rotate_fd(fd);
		pthread_barrier_wait(&pr.done);
		v = rot.version;
		t0 = rot.t0;
		d = rot.ns;
		if (v < 0) {
			errors++;
			if (!first_error)
				first_error = (int)-v;
			fprintf(stderr, "keyfs-bench: rotate %s: %s\n", ctl,
				strerror((int)-v));
		} else {
			bad_version += v != before + 1;
			version = v;
		}
		for (int k = 0; k < o->n; k++)
			if (!pr.seen[k])
				last = UINT64_MAX;
			else if (last != UINT64_MAX && pr.seen[k] > last)
				last = pr.seen[k];
		if (last == UINT64_MAX) {
			timeouts++;
		} else if (v >= 0) {
			all[n] = clamp_u32(last - t0);
			wr[n] = clamp_u32(d);
			lag[n] = clamp_u32(last > t0 + d ? last - t0 - d : 0);
			n++;
		}
		if (o->interval_ms > 0)
			kb_sleep_until(kb_now_ns() +
				       (uint64_t)(o->interval_ms * 1e6));
	}
	r = agree_wait(&pr, &version);
	if (r < 0)
		goto out_stop;
	disagreed += (uint64_t)r;
	printf("rotations=%llu measured=%zu start=%ld final=%ld timeouts=%llu "
	       "disagreed=%llu bad_version=%llu errors=%llu first_errno=%d "
	       "poll_errors=%llu",
	       (unsigned long long)o->count, n, start, version,
	       (unsigned long long)timeouts, (unsigned long long)disagreed,
	       (unsigned long long)bad_version, (unsigned long long)errors,
	       first_error, (unsigned long long)pr.read_errors);
	kb_print_stats("all_", all, n);
	kb_print_stats("write_", wr, n);
	kb_print_stats("lag_", lag, n);
	printf("\n");
	rc = 0;
out_stop:
	atomic_store(&pr.quit, true);
	pthread_barrier_wait(&pr.start);
	pthread_join(poller, NULL);
	pthread_barrier_destroy(&pr.start);
	pthread_barrier_destroy(&pr.done);
out_free:
	sodium_free(pr.old);
	free(all);
	free(wr);
	free(lag);
	return rc;
}

/* --- race ----------------------------------------------------------------- */

struct racer {
	pthread_t thread;
	struct race *ra;
	const char *ctl;
	struct rotation rot; /* this round's */
};

struct race {
	pthread_barrier_t go;	/* every racer and main: write now */
	pthread_barrier_t done; /* every racer has its answer */
	atomic_bool quit;
	struct racer racers[MOUNTS_MAX];
};

static void *racer_main(void *arg)
{
	struct racer *rc = arg;

	for (;;) {
		/* Opened before the barrier: the writes leave together. */
		int fd = rotate_open(rc->ctl);

		pthread_barrier_wait(&rc->ra->go);
		if (atomic_load(&rc->ra->quit)) {
			if (fd >= 0)
				close(fd);
			break;
		}
		rc->rot = rotate_fd(fd);
		pthread_barrier_wait(&rc->ra->done);
	}
	return NULL;
}

/* A round that did not make one version: every racer's part, to stderr. */
static void race_report(const struct race *ra, int n, uint64_t round)
{
	uint64_t first = UINT64_MAX;

	for (int i = 0; i < n; i++)
		if (ra->racers[i].rot.t0 && ra->racers[i].rot.t0 < first)
			first = ra->racers[i].rot.t0;
	for (int i = 0; i < n; i++) {
		const struct rotation *r = &ra->racers[i].rot;

		fprintf(stderr,
			"keyfs-bench: race round %llu: mount %d wrote at "
			"+%.2f ms for %.2f ms: %s %ld\n",
			(unsigned long long)round + 1, i,
			r->t0 ? (double)(r->t0 - first) / 1e6 : 0.0,
			(double)r->ns / 1e6,
			r->version < 0 ? "error"
			: r->won       ? "won, version"
				       : "lost to version",
			r->version < 0 ? -r->version : r->version);
	}
}

/*
 * Waits up to WAIT_NS until every mount's version file reads want: 0, or
 * -ETIMEDOUT.  The lowest and highest versions last read go to *ret_lo and
 * *ret_hi (-errno for a failed read).
 */
static int versions_wait(const struct cl_opts *o, const struct cl_paths *p,
			 long want, long *ret_lo, long *ret_hi)
{
	uint64_t until = kb_now_ns() + WAIT_NS;

	for (;;) {
		long lo = LONG_MAX, hi = LONG_MIN;

		for (int i = 0; i < o->n; i++) {
			long v = read_version(p->version[i]);

			lo = v < lo ? v : lo;
			hi = v > hi ? v : hi;
		}
		*ret_lo = lo;
		*ret_hi = hi;
		if (lo == want && hi == want)
			return 0;
		if (kb_now_ns() >= until)
			return -ETIMEDOUT;
		kb_sleep_until(kb_now_ns() + 500000u);
	}
}

static int run_race(const struct cl_opts *o, const struct cl_paths *p)
{
	static struct race ra;
	uint32_t *wr = calloc(o->count * (uint64_t)o->n, sizeof(*wr));
	uint64_t one = 0, none = 0, many = 0, bad = 0, errors = 0, lagged = 0;
	long start, expect, lo, hi;
	size_t n = 0;
	int first_error = 0;

	if (!wr) {
		fprintf(stderr, "keyfs-bench: out of memory\n");
		return 1;
	}
	start = read_version(p->version[0]);
	if (start < 0) {
		fprintf(stderr, "keyfs-bench: %s: %s\n", p->version[0],
			strerror((int)-start));
		free(wr);
		return 1;
	}
	expect = start;
	pthread_barrier_init(&ra.go, NULL, (unsigned)o->n + 1);
	pthread_barrier_init(&ra.done, NULL, (unsigned)o->n + 1);
	for (int i = 0; i < o->n; i++) {
		ra.racers[i].ra = &ra;
		ra.racers[i].ctl = p->rotate[i];
		pthread_create(&ra.racers[i].thread, NULL, racer_main,
			       &ra.racers[i]);
	}
	for (uint64_t round = 0; round < o->count; round++) {
		int winners = 0;
		long v = -1;
		bool same = true, good;

		pthread_barrier_wait(&ra.go);
		pthread_barrier_wait(&ra.done);
		for (int i = 0; i < o->n; i++) {
			const struct rotation *r = &ra.racers[i].rot;

			if (r->version < 0) {
				errors++;
				if (!first_error)
					first_error = (int)-r->version;
				continue;
			}
			wr[n++] = clamp_u32(r->ns);
			winners += r->won;
			if (v >= 0 && r->version != v)
				same = false;
			if (r->version > v)
				v = r->version;
		}
		one += winners == 1;
		none += winners == 0;
		many += winners > 1;
		/* Every answer names this round's one new version. */
		good = same && v == expect + 1;
		bad += !good;
		if (winners != 1 || !good)
			race_report(&ra, o->n, round);
		if (v > expect)
			expect = v;
		/*
		 * The next round starts from one keyring on every daemon, as
		 * racers do when rotations are rare; not timed.
		 */
		lagged += versions_wait(o, p, expect, &lo, &hi) < 0;
		/* Past the daemons' coalescing window (250 ms): a new ask. */
		kb_sleep_until(kb_now_ns() + 300000000u);
	}
	atomic_store(&ra.quit, true);
	pthread_barrier_wait(&ra.go);
	for (int i = 0; i < o->n; i++)
		pthread_join(ra.racers[i].thread, NULL);
	pthread_barrier_destroy(&ra.go);
	pthread_barrier_destroy(&ra.done);
	/* Every daemon serves the last round's keyring. */
	(void)versions_wait(o, p, start + (long)o->count, &lo, &hi);
	printf("rounds=%llu start=%ld final_min=%ld final_max=%ld "
	       "one_winner=%llu no_winner=%llu several_winners=%llu "
	       "bad_version=%llu lagged=%llu errors=%llu first_errno=%d",
	       (unsigned long long)o->count, start, lo, hi,
	       (unsigned long long)one, (unsigned long long)none,
	       (unsigned long long)many, (unsigned long long)bad,
	       (unsigned long long)lagged, (unsigned long long)errors,
	       first_error);
	kb_print_stats("write_", wr, n);
	printf("\n");
	free(wr);
	return 0;
}

/* --- reads ---------------------------------------------------------------- */

struct cl_reader {
	pthread_t thread;
	struct reads *rs;
	const char *path;
	uint32_t *samples; /* ns per read */
	uint64_t *starts;  /* when each read began (monotonic ns) */
	size_t n, cap;
	uint64_t failed, slow;
	int first_error;
};

struct reads {
	const struct cl_opts *o;
	pthread_barrier_t go;
	uint64_t t0, end; /* monotonic ns, set before go */
	struct cl_reader readers[MOUNTS_MAX];
};

static void *cl_reader_main(void *arg)
{
	struct cl_reader *r = arg;
	struct reads *rs = r->rs;
	uint64_t period = (uint64_t)(rs->o->interval_ms * 1e6);
	unsigned char key[KEY_TEXT];
	uint64_t next, t, d;

	pthread_barrier_wait(&rs->go);
	next = rs->t0;
	while (next < rs->end && r->n < r->cap) {
		int e;

		kb_sleep_until(next);
		t = kb_now_ns();
		e = read_key(r->path, key);
		d = kb_now_ns() - t;
		r->starts[r->n] = t;
		r->samples[r->n++] = clamp_u32(d);
		r->slow += d > SLOW_NS;
		if (e < 0) {
			r->failed++;
			if (!r->first_error)
				r->first_error = -e;
		}
		/* A late read does not make the next ones come in a burst. */
		next += period;
		if (next < t + d)
			next = t + d;
	}
	sodium_memzero(key, sizeof(key));
	return NULL;
}

/*
 * The samples of reads that began in [from, to) into a (room for every
 * sample): their number.
 */
static size_t reads_between(const struct reads *rs, int n, uint64_t from,
			    uint64_t to, uint32_t *a)
{
	size_t k = 0;

	for (int i = 0; i < n; i++) {
		const struct cl_reader *r = &rs->readers[i];

		for (size_t j = 0; j < r->n; j++)
			if (r->starts[j] >= from && r->starts[j] < to)
				a[k++] = r->samples[j];
	}
	return k;
}

static int run_reads(const struct cl_opts *o, const struct cl_paths *p)
{
	static struct reads rs;
	uint64_t failed = 0, slow = 0, killed_at = 0;
	size_t total = 0, cap, k;
	uint32_t *all = NULL;
	int first_error = 0, rc = 1;

	rs.o = o;
	cap = (size_t)(o->seconds * 1000 / o->interval_ms) + 16;
	if (cap > READS_MAX)
		cap = READS_MAX;
	for (int i = 0; i < o->n; i++) {
		struct cl_reader *r = &rs.readers[i];

		r->rs = &rs;
		r->path = p->phi[i];
		r->cap = cap;
		r->samples = calloc(cap, sizeof(*r->samples));
		r->starts = calloc(cap, sizeof(*r->starts));
		if (!r->samples || !r->starts) {
			fprintf(stderr, "keyfs-bench: out of memory\n");
			goto out;
		}
	}
	pthread_barrier_init(&rs.go, NULL, (unsigned)o->n + 1);
	for (int i = 0; i < o->n; i++)
		pthread_create(&rs.readers[i].thread, NULL, cl_reader_main,
			       &rs.readers[i]);
	rs.t0 = kb_now_ns() + 10000000u;
	rs.end = rs.t0 + (uint64_t)(o->seconds * 1e9);
	pthread_barrier_wait(&rs.go);
	if (o->kill_pid > 0) {
		kb_sleep_until(rs.t0 + (uint64_t)(o->kill_after * 1e9));
		if (kill(o->kill_pid, SIGKILL) < 0)
			fprintf(stderr, "keyfs-bench: kill %d: %s\n",
				(int)o->kill_pid, strerror(errno));
		else
			killed_at = kb_now_ns();
	}
	for (int i = 0; i < o->n; i++) {
		struct cl_reader *r = &rs.readers[i];

		pthread_join(r->thread, NULL);
		total += r->n;
		failed += r->failed;
		slow += r->slow;
		if (!first_error)
			first_error = r->first_error;
	}
	pthread_barrier_destroy(&rs.go);
	all = malloc((total ? total : 1) * sizeof(*all));
	if (!all) {
		fprintf(stderr, "keyfs-bench: out of memory\n");
		goto out;
	}
	if (first_error)
		fprintf(stderr, "keyfs-bench: first failed read: %s\n",
			strerror(first_error));
	printf("reads=%zu failed=%llu first_errno=%d slow_10ms=%llu "
	       "killed=%d killed_at_s=%.3f",
	       total, (unsigned long long)failed, first_error,
	       (unsigned long long)slow, killed_at != 0,
	       killed_at ? (double)(killed_at - rs.t0) / 1e9 : 0.0);
	if (killed_at) {
		/* Before the kill, its first second, and after that. */
		k = reads_between(&rs, o->n, 0, killed_at, all);
		kb_print_stats("before_", all, k);
		k = reads_between(&rs, o->n, killed_at, killed_at + 1000000000u,
				  all);
		kb_print_stats("first1s_", all, k);
		k = reads_between(&rs, o->n, killed_at + 1000000000u,
				  UINT64_MAX, all);
		kb_print_stats("later_", all, k);
	}
	k = reads_between(&rs, o->n, 0, UINT64_MAX, all);
	kb_print_stats("", all, k);
	printf("\n");
	rc = 0;
out:
	free(all);
	for (int i = 0; i < o->n; i++) {
		free(rs.readers[i].samples);
		free(rs.readers[i].starts);
	}
	return rc;
}

/* --- options -------------------------------------------------------------- */

static void cl_usage(void)
{
	fprintf(stderr,
		"usage: keyfs-bench propagate MOUNT... [-n N] [-i MS] [-u US]\n"
		"       keyfs-bench race MOUNT... [-n N]\n"
		"       keyfs-bench reads MOUNT... [-d SEC] [-i MS] "
		"[-k PID -a SEC]\n"
		"  -n N     rotations (propagate, default 200) or rounds "
		"(race, 300)\n"
		"  -i MS    propagate: pause after each rotation (50);\n"
		"           reads: each thread's read period (1)\n"
		"  -u US    propagate: pause between polling passes (200)\n"
		"  -d SEC   reads: length of the run (4)\n"
		"  -k PID   reads: send PID SIGKILL ...\n"
		"  -a SEC   ... this many seconds into the run (1)\n"
		"Mounts are keyfs mountpoints of one cluster (at most %d).\n",
		MOUNTS_MAX);
	exit(2);
}

static double cl_number(const char *s, double max)
{
	double v;

	if (kb_number(s, max, &v) < 0)
		cl_usage();
	return v;
}

int kb_cluster_main(int argc, char **argv)
{
	const char *cmd = argv[1];
	bool race = strcmp(cmd, "race") == 0;
	bool reads = strcmp(cmd, "reads") == 0;
	struct cl_opts o = {.count = race ? 300 : 200,
			    .interval_ms = reads ? 1 : 300,
			    .poll_us = 200,
			    .seconds = 4,
			    .kill_after = 1};
	static struct cl_paths paths;
	int c;

	if (sodium_init() < 0) {
		fprintf(stderr, "keyfs-bench: sodium_init failed\n");
		return 1;
	}
	optind = 2;
	while ((c = getopt(argc, argv, "n:i:u:d:k:a:")) != -1) {
		switch (c) {
		case 'n':
			o.count = (uint64_t)cl_number(optarg, 1e6);
			break;
		case 'i':
			o.interval_ms = cl_number(optarg, 60000);
			break;
		case 'u':
			o.poll_us = cl_number(optarg, 1e6);
			break;
		case 'd':
			o.seconds = cl_number(optarg, 3600);
			break;
		case 'k':
			o.kill_pid = (pid_t)cl_number(optarg, INT_MAX);
			break;
		case 'a':
			o.kill_after = cl_number(optarg, 3600);
			break;
		default:
			cl_usage();
		}
	}
	for (; optind < argc; optind++) {
		if (o.n == MOUNTS_MAX)
			cl_usage();
		o.mounts[o.n++] = argv[optind];
	}
	if (o.n < 1 || o.count < 1 || (reads && o.interval_ms <= 0) ||
	    (reads && o.kill_pid && o.kill_after >= o.seconds))
		cl_usage();
	if (paths_init(&paths, &o) < 0) {
		fprintf(stderr, "keyfs-bench: a mount's path is too long\n");
		return 1;
	}
	if (strcmp(cmd, "propagate") == 0)
		return run_propagate(&o, &paths);
	if (race)
		return run_race(&o, &paths);
	return run_reads(&o, &paths);
}
