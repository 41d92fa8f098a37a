// SPDX-License-Identifier: MIT
/*
 * keyfs-bench: times key reads the way applications do them (issue 5).
 *
 *   keyfs-bench read PATH [OPTIONS]   open + read + close of PATH, in
 *                                     threads (-t) or processes (-P)
 *   keyfs-bench keyring [OPTIONS]     keyctl_read of a 32-byte user key
 *   keyfs-bench rotate CTL [-n N] [-k PATH]...
 *                                     N writes of "1" to CTL (control/rotate),
 *                                     each after a read of every PATH
 *   keyfs-bench propagate|race|reads MOUNT...
 *                                     several daemons of one etcd cluster
 *                                     (cluster-bench.c, for bench/cluster)
 *
 * Prints one line of name=value pairs (times in microseconds) for bench/run
 * to parse.  Key bytes are read into buffers that are wiped before exit and
 * never printed: only their lengths are checked (-e).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <keyutils.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define THREADS_MAX 64
#define SAMPLES_MAX (4u << 20)	      /* per thread: 16 MiB of uint32_t ns */
#define PROC_SAMPLES_MIN (256u << 10) /* per process, however many */
#define TOUCH_MAX 16		      /* rotate -k: files read before each */
#define SINGLE_READ 64		      /* one read(2) of this many bytes */
#define CAT_BUF (128 * 1024)	      /* what coreutils cat asks for */
#define KEY_BYTES 32
#define KEY_DESC "keyfs-bench:key"
#define RSS_PERIOD_NS 20000000L
#define ROTATIONS_MAX 4096

struct opts {
	bool keyring;	     /* else a file */
	const char *path;    /* file to read, or control file to write */
	int threads;	     /* readers: threads, or processes if procs */
	bool procs;	     /* -P: each reader a process of its own */
	bool cat;	     /* read until EOF (keyring: look up, then read) */
	uint64_t iterations; /* measured cycles per thread; 0 = time only */
	double seconds;	     /* bound on the measured phase; 0 = none */
	double warmup;	     /* seconds per thread before measuring */
	long expect;	     /* bytes a cycle must return; -1 = any */
	const char *rotate_path; /* admin thread writes "1" here ... */
	unsigned rotate_ms;	 /* ... every this many ms */
	bool rotate_ms_set;	 /* -i given (rotate: pause between) */
	pid_t rss_pid;		 /* sample VmRSS of this process; 0 = none */
	const char *touch[TOUCH_MAX]; /* rotate: read these before each */
	int n_touch;
	key_serial_t key;
};

/*
 * A reader is a thread or, with -P, a process; struct bench and the samples
 * are then in memory shared with it (MAP_SHARED), so its n, err, end and
 * samples are read by the parent after it exits.
 */
struct reader {
	pthread_t thread;
	pid_t pid;
	struct bench *b;
	uint32_t *samples; /* ns per measured cycle */
	size_t cap;	   /* room in samples */
	size_t n;
	int err; /* -errno of a failed cycle, or 0 */
	struct timespec end;
};

struct bench {
	const struct opts *o;
	pthread_barrier_t ready; /* readers warmed up, main waits */
	pthread_barrier_t go;	 /* main set t0 and deadline */
	struct timespec t0;
	uint64_t deadline_ns; /* monotonic; 0 = none */
	atomic_bool stop;     /* readers done: helpers stop */
	struct reader readers[THREADS_MAX];

	/* Admin thread (rotations during the measured phase). */
	uint32_t rot_samples[ROTATIONS_MAX];
	size_t rot_n;
	int rot_err;

	/* VmRSS sampler. */
	long rss_max_kib;
};

static uint64_t ns_of(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

uint64_t kb_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return ns_of(&t);
}

void kb_sleep_until(uint64_t ns)
{
	struct timespec t = {(time_t)(ns / 1000000000u),
			     (long)(ns % 1000000000u)};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) ==
	       EINTR)
		;
}

/* --- one cycle ------------------------------------------------------------ */

static ssize_t cycle_file(const struct opts *o, char *buf)
{
	ssize_t n, total = 0;
	int fd = open(o->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (!o->cat) {
		n = read(fd, buf, SINGLE_READ);
		total = n;
	} else {
		while ((n = read(fd, buf, CAT_BUF)) > 0)
			total += n;
	}
	if (n < 0)
		total = -errno;
	if (close(fd) < 0 && total >= 0)
		total = -errno;
	return total;
}

static ssize_t cycle_keyring(const struct opts *o, char *buf)
{
	key_serial_t id = o->key;
	long n;

	if (o->cat) {
		/* The keyring's "open by name": search the session keyring. */
		id = request_key("user", KEY_DESC, NULL, 0);
		if (id < 0)
			return -errno;
	}
	n = keyctl_read(id, buf, SINGLE_READ);
	return n < 0 ? -errno : n;
}

static int cycle(const struct opts *o, char *buf)
{
	ssize_t n = o->keyring ? cycle_keyring(o, buf) : cycle_file(o, buf);

	if (n < 0)
		return (int)n;
	if (o->expect >= 0 && n != o->expect)
		return -EMSGSIZE;
	return 0;
}

/* --- threads -------------------------------------------------------------- */

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct bench *b = r->b;
	const struct opts *o = b->o;
	char *buf = malloc(CAT_BUF);
	uint64_t until, t, cap = r->cap;

	/* Fault the pages in now, not while measuring. */
	memset(r->samples, 0, r->cap * sizeof(*r->samples));
	if (!buf) {
		r->err = -ENOMEM;
		pthread_barrier_wait(&b->ready);
		pthread_barrier_wait(&b->go);
		goto out;
	}
	until = kb_now_ns() + (uint64_t)(o->warmup * 1e9);
	while (o->warmup > 0 && kb_now_ns() < until && !r->err)
		r->err = cycle(o, buf);
	pthread_barrier_wait(&b->ready);
	pthread_barrier_wait(&b->go);
	while (!r->err && r->n < cap) {
		t = kb_now_ns();
		r->err = cycle(o, buf);
		uint64_t d = kb_now_ns() - t;

		r->samples[r->n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		if (b->deadline_ns && t + d >= b->deadline_ns)
			break;
	}
	clock_gettime(CLOCK_MONOTONIC, &r->end);
out:
	explicit_bzero(buf, CAT_BUF);
	free(buf);
	return NULL;
}

/* Writes "1\n" to a control file; returns the write's ns or -errno. */
static int64_t rotate_once(const char *ctl)
{
	uint64_t t;
	ssize_t n;
	int fd = open(ctl, O_WRONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	t = kb_now_ns();
	n = write(fd, "1\n", 2);
	t = kb_now_ns() - t;
	if (n < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	close(fd);
	return n == 2 ? (int64_t)t : -EIO;
}

static void *rotator_main(void *arg)
{
	struct bench *b = arg;
	uint64_t period = (uint64_t)b->o->rotate_ms * 1000000u;
	uint64_t next = ns_of(&b->t0) + period / 2;

	while (!atomic_load(&b->stop) && b->rot_n < ROTATIONS_MAX) {
		/* Short naps so the end of the readers is not waited on. */
		uint64_t now = kb_now_ns();

		if (now < next) {
			kb_sleep_until(now + 10000000u < next ? now + 10000000u
							      : next);
			continue;
		}
		int64_t d = rotate_once(b->o->rotate_path);

		if (d < 0) {
			b->rot_err = (int)d;
			break;
		}
		b->rot_samples[b->rot_n++] =
		    d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		next += period;
	}
	return NULL;
}

static long vmrss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void *rss_main(void *arg)
{
	struct bench *b = arg;

	while (!atomic_load(&b->stop)) {
		long kib = vmrss_kib(b->o->rss_pid);

		if (kib > b->rss_max_kib)
			b->rss_max_kib = kib;
		kb_sleep_until(kb_now_ns() + RSS_PERIOD_NS);
	}
	return NULL;
}

/* --- statistics ----------------------------------------------------------- */

/* LSD radix sort: a few million samples in well under qsort's time. */
static int sort_u32(uint32_t *a, size_t n)
{
	uint32_t *tmp = malloc((n ? n : 1) * sizeof(*a)), *src = a, *dst = tmp;

	if (!tmp)
		return -ENOMEM;
	for (int shift = 0; shift < 32; shift += 8) {
		size_t count[257] = {0};

		for (size_t i = 0; i < n; i++)
			count[((src[i] >> shift) & 0xff) + 1]++;
		for (int k = 0; k < 256; k++)
			count[k + 1] += count[k];
		for (size_t i = 0; i < n; i++)
			dst[count[(src[i] >> shift) & 0xff]++] = src[i];
		uint32_t *swap = src;

		src = dst;
		dst = swap;
	}
	/* Four passes: the result is back in a. */
	free(tmp);
	return 0;
}

/* Nearest-rank percentile of sorted a, in microseconds. */
static double pct_us(const uint32_t *a, size_t n, double p)
{
	size_t rank = (size_t)(p * (double)n + 0.999999);

	if (n == 0)
		return 0;
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return a[rank - 1] / 1000.0;
}

void kb_print_stats(const char *prefix, uint32_t *a, size_t n)
{
	if (sort_u32(a, n) < 0) {
		fprintf(stderr, "keyfs-bench: out of memory\n");
		exit(1);
	}
	printf(" %smedian_us=%.2f %sp99_us=%.2f %sp999_us=%.2f %smax_us=%.2f",
	       prefix, pct_us(a, n, 0.5), prefix, pct_us(a, n, 0.99), prefix,
	       pct_us(a, n, 0.999), prefix, n ? a[n - 1] / 1000.0 : 0.0);
}

/* --- commands ------------------------------------------------------------- */

/* A new session keyring for this process, holding one 32-byte user key. */
static int keyring_setup(struct opts *o)
{
	unsigned char key[KEY_BYTES];

	if (keyctl_join_session_keyring(NULL) < 0) {
		fprintf(stderr, "keyfs-bench: new session keyring: %s\n",
			strerror(errno));
		return -1;
	}
	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
		fprintf(stderr, "keyfs-bench: getrandom: %s\n",
			strerror(errno));
		return -1;
	}
	o->key = add_key("user", KEY_DESC, key, sizeof(key),
			 KEY_SPEC_SESSION_KEYRING);
	explicit_bzero(key, sizeof(key));
	if (o->key < 0) {
		fprintf(stderr, "keyfs-bench: add_key: %s\n", strerror(errno));
		return -1;
	}
	if (o->expect < 0)
		o->expect = KEY_BYTES;
	return 0;
}

/* Anonymous memory shared with forked readers; NULL if there is none. */
static void *shared_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * Starts reader i: a thread, or a forked process that runs the same loop
 * and is killed if this one dies (so none is left behind at a barrier).
 */
static int reader_start(struct bench *b, int i)
{
	struct reader *r = &b->readers[i];
	pid_t parent = getpid();

	if (!b->o->procs)
		return -pthread_create(&r->thread, NULL, reader_main, r);
	r->pid = fork();
	if (r->pid < 0)
		return -errno;
	if (r->pid == 0) {
		/* Checked after: the parent may have gone before prctl. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(1);
		reader_main(r);
		_exit(0);
	}
	return 0;
}

/* Waits for reader i; a process that did not exit 0 counts as -ECHILD. */
static void reader_join(struct bench *b, int i)
{
	struct reader *r = &b->readers[i];
	int status;

	if (!b->o->procs) {
		pthread_join(r->thread, NULL);
		return;
	}
	while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!r->err && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		r->err = -ECHILD;
}

/*
 * The read command: o->threads readers (threads, or processes with -P)
 * warm up, meet at a barrier, and time their cycles until the deadline or
 * their cycle count; an admin thread rotates meanwhile with -r, a sampler
 * follows VmRSS with -p.  Prints the statistics of all samples together.
 */
static int run_readers(struct opts *o)
{
	struct bench *b; /* large, and shared with reader processes */
	pthread_barrierattr_t ba;
	pthread_t rot_thread, rss_thread;
	uint32_t *all;
	size_t total = 0, cap = SAMPLES_MAX;
	uint64_t end = 0;
	int err = 0;

	if (o->keyring && keyring_setup(o) < 0)
		return 1;
	b = shared_alloc(sizeof(*b));
	if (!b) {
		fprintf(stderr, "keyfs-bench: out of memory\n");
		return 1;
	}
	if (o->procs) {
		cap = SAMPLES_MAX / (unsigned)o->threads;
		if (cap < PROC_SAMPLES_MIN)
			cap = PROC_SAMPLES_MIN;
	}
	if (o->iterations && o->iterations < cap)
		cap = (size_t)o->iterations;
	b->o = o;
	pthread_barrierattr_init(&ba);
	pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&b->ready, &ba, (unsigned)o->threads + 1);
	pthread_barrier_init(&b->go, &ba, (unsigned)o->threads + 1);
	pthread_barrierattr_destroy(&ba);
	for (int i = 0; i < o->threads; i++) {
		struct reader *r = &b->readers[i];

		r->b = b;
		r->cap = cap;
		r->samples = shared_alloc(cap * sizeof(*r->samples));
		if (!r->samples) {
			fprintf(stderr, "keyfs-bench: out of memory\n");
			return 1;
		}
	}
	/* Processes are forked before this one starts any thread. */
	for (int i = 0; i < o->threads; i++) {
		int e = reader_start(b, i);

		if (e < 0) {
			fprintf(stderr,
				"keyfs-bench: cannot start a reader: "
				"%s\n",
				strerror(-e));
			return 1;
		}
	}
	pthread_barrier_wait(&b->ready);
	clock_gettime(CLOCK_MONOTONIC, &b->t0);
	if (o->seconds > 0)
		b->deadline_ns = ns_of(&b->t0) + (uint64_t)(o->seconds * 1e9);
	if (o->rotate_path)
		pthread_create(&rot_thread, NULL, rotator_main, b);
	if (o->rss_pid)
		pthread_create(&rss_thread, NULL, rss_main, b);
	pthread_barrier_wait(&b->go);
	for (int i = 0; i < o->threads; i++) {
		struct reader *r = &b->readers[i];

		reader_join(b, i);
		if (r->err && !err)
			err = r->err;
		total += r->n;
		if (ns_of(&r->end) > end)
			end = ns_of(&r->end);
	}
	atomic_store(&b->stop, true);
	if (o->rotate_path)
		pthread_join(rot_thread, NULL);
	if (o->rss_pid)
		pthread_join(rss_thread, NULL);
	if (err) {
		fprintf(stderr, "keyfs-bench: %s: %s\n",
			o->keyring ? "keyring" : o->path,
			err == -EMSGSIZE ? "unexpected length"
			: err == -ECHILD ? "a reader process failed"
					 : strerror(-err));
		return 1;
	}
	if (b->rot_err) {
		fprintf(stderr, "keyfs-bench: rotate %s: %s\n", o->rotate_path,
			strerror(-b->rot_err));
		return 1;
	}
	all = malloc((total ? total : 1) * sizeof(*all));
	if (!all) {
		fprintf(stderr, "keyfs-bench: out of memory\n");
		return 1;
	}
	total = 0;
	for (int i = 0; i < o->threads; i++) {
		struct reader *r = &b->readers[i];

		memcpy(all + total, r->samples, r->n * sizeof(*all));
		total += r->n;
		munmap(r->samples, r->cap * sizeof(*r->samples));
	}
	double wall = (double)(end - ns_of(&b->t0)) / 1e9;

	printf("%s=%d cycles=%zu seconds=%.3f ops_per_s=%.0f",
	       o->procs ? "processes" : "threads", o->threads, total, wall,
	       wall > 0 ? (double)total / wall : 0.0);
	kb_print_stats("", all, total);
	if (o->rotate_path) {
		printf(" rotations=%zu", b->rot_n);
		kb_print_stats("rot_", b->rot_samples, b->rot_n);
	}
	if (o->rss_pid)
		printf(" rss_max_kib=%ld", b->rss_max_kib);
	printf("\n");
	free(all);
	munmap(b, sizeof(*b));
	return 0;
}

/*
 * Reads each of o->touch (open, read, close; the bytes wiped), so that the
 * kernel holds their names and pages when a rotation comes.
 */
static int touch_files(const struct opts *o)
{
	char buf[SINGLE_READ];

	for (int i = 0; i < o->n_touch; i++) {
		int fd = open(o->touch[i], O_RDONLY | O_CLOEXEC);
		ssize_t n;

		if (fd < 0)
			return -errno;
		n = read(fd, buf, sizeof(buf));
		explicit_bzero(buf, sizeof(buf));
		close(fd);
		if (n < 0)
			return -errno;
	}
	return 0;
}

/*
 * The rotate command: n timed writes to the control file, each after the
 * -k files were read (untimed) and followed by the -i pause.
 */
static int run_rotations(const struct opts *o)
{
	uint64_t n = o->iterations ? o->iterations : 30;
	uint32_t *a = calloc(n, sizeof(*a));

	if (!a)
		return 1;
	for (uint64_t i = 0; i < n; i++) {
		int e = touch_files(o);
		int64_t d = e < 0 ? e : rotate_once(o->path);

		if (d < 0) {
			fprintf(stderr, "keyfs-bench: rotate %s: %s\n",
				e < 0 ? "(reading the -k files)" : o->path,
				strerror((int)-d));
			free(a);
			return 1;
		}
		a[i] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		if (o->rotate_ms_set && o->rotate_ms)
			usleep(o->rotate_ms * 1000u);
	}
	printf("rotations=%" PRIu64, n);
	kb_print_stats("", a, n);
	printf("\n");
	free(a);
	return 0;
}

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: keyfs-bench read PATH [OPTIONS]\n"
	    "       keyfs-bench keyring [OPTIONS]\n"
	    "       keyfs-bench rotate CTL [-n N] [-i MS] [-k PATH]...\n"
	    "       keyfs-bench propagate|race|reads MOUNT... (see "
	    "cluster-bench.c)\n"
	    "  -t N     reader threads (default 1)\n"
	    "  -P N     reader processes instead of threads\n"
	    "  -c       cat-style: read until end of file (keyring: look\n"
	    "           the key up by description, then read it)\n"
	    "  -n N     measured cycles per thread (rotate: rotations)\n"
	    "  -d SEC   bound on the measured phase (default 1; 0 = none)\n"
	    "  -w SEC   warm-up per thread (default 0.2)\n"
	    "  -e N     bytes every cycle must return (keyring: 32)\n"
	    "  -r CTL   write \"1\" to CTL every -i ms while measuring\n"
	    "  -i MS    rotation period (default 1000; rotate: pause)\n"
	    "  -p PID   report the highest VmRSS of PID while measuring\n"
	    "  -k PATH  rotate: read PATH before each rotation (up to %d)\n",
	    TOUCH_MAX);
	exit(2);
}

int kb_number(const char *s, double max, double *ret)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < 0 || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static double number(const char *s, double max)
{
	double v;

	if (kb_number(s, max, &v) < 0)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	struct opts o = {.threads = 1,
			 .seconds = 1.0,
			 .warmup = 0.2,
			 .expect = -1,
			 .rotate_ms = 1000};
	bool readers_given = false;
	const char *cmd;
	int c;

	if (argc < 2)
		usage();
	cmd = argv[1];
	if (strcmp(cmd, "propagate") == 0 || strcmp(cmd, "race") == 0 ||
	    strcmp(cmd, "reads") == 0)
		return kb_cluster_main(argc, argv);
	if (strcmp(cmd, "read") == 0 || strcmp(cmd, "rotate") == 0) {
		if (argc < 3)
			usage();
		o.path = argv[2];
		optind = 3;
	} else if (strcmp(cmd, "keyring") == 0) {
		o.keyring = true;
		optind = 2;
	} else {
		usage();
	}
	while ((c = getopt(argc, argv, "t:P:cn:d:w:e:r:i:p:k:")) != -1) {
		switch (c) {
		case 't':
		case 'P':
			/* One or the other: threads or processes. */
			if (readers_given)
				usage();
			readers_given = true;
			o.threads = (int)number(optarg, THREADS_MAX);
			o.procs = c == 'P';
			if (o.threads < 1)
				usage();
			break;
		case 'k':
			if (o.n_touch == TOUCH_MAX)
				usage();
			o.touch[o.n_touch++] = optarg;
			break;
		case 'c':
			o.cat = true;
			break;
		case 'n':
			o.iterations = (uint64_t)number(optarg, 1e12);
			break;
		case 'd':
			o.seconds = number(optarg, 3600);
			break;
		case 'w':
			o.warmup = number(optarg, 3600);
			break;
		case 'e':
			o.expect = (long)number(optarg, LONG_MAX);
			break;
		case 'r':
			o.rotate_path = optarg;
			break;
		case 'i':
			o.rotate_ms = (unsigned)number(optarg, 3600000);
			o.rotate_ms_set = true;
			break;
		case 'p':
			o.rss_pid = (pid_t)number(optarg, INT_MAX);
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (strcmp(cmd, "rotate") == 0)
		return run_rotations(&o);
	if (!o.iterations && o.seconds <= 0)
		usage();
	if (o.rotate_path && o.rotate_ms == 0)
		usage();
	return run_readers(&o);
}
