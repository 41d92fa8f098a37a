// SPDX-License-Identifier: MIT
/*
 * keyfs-floor: the smallest FUSE daemon that serves one key-sized file, for
 * bench/run to measure what a round trip to a daemon costs on this machine
 * (issue 11).  One root directory holding "key": 44 random base64url
 * characters made at start and never printed.
 *
 *   keyfs-floor --open MOUNTPOINT      OPEN answered with keep_cache: one
 *                                      round trip per open+read+close once
 *                                      the page is cached (keyfs audited)
 *   keyfs-floor --no-open MOUNTPOINT   OPEN answered ENOSYS (no-open
 *                                      support): no request per cycle
 *                                      (keyfs cached)
 *
 * Like keyfs: names and attributes cached for a day, default_permissions,
 * allow_other, the multi-threaded loop.  Runs in the foreground until
 * SIGTERM, SIGINT or SIGHUP; SIGUSR1 logs the request counters to standard
 * error as a "requests:" line like keyfs's (requests it does not handle,
 * such as readdir, are answered by libfuse and not counted).
 */
#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 14)

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#define KEY_INO 2
#define KEY_LEN 44 /* base64url of 33 bytes, as keyfs renders a key */
#define TTL 86400.0

enum {
	RQ_LOOKUP,
	RQ_GETATTR,
	RQ_OPEN,
	RQ_READ,
	RQ_FLUSH,
	RQ_RELEASE,
	RQ_COUNT
};
static const char *const rq_names[RQ_COUNT] = {"lookup", "getattr", "open",
					       "read",	 "flush",   "release"};
static atomic_ulong requests[RQ_COUNT];

static bool no_open;
static char key[KEY_LEN];

/* Counts one request of kind k. */
static void count(int k)
{
	atomic_fetch_add_explicit(&requests[k], 1, memory_order_relaxed);
}

/* The attributes of the root (1) or the key file (KEY_INO). */
static void attr_of(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = KEY_LEN;
	}
}

/* Asks for no-open support; the kernel decides (libfuse: no effect). */
static void fl_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (no_open && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT))
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

/* "key" in the root; nothing else exists. */
static void fl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = {
	    .ino = KEY_INO, .attr_timeout = TTL, .entry_timeout = TTL};

	count(RQ_LOOKUP);
	if (parent != FUSE_ROOT_ID || strcmp(name, "key") != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	attr_of(KEY_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

/* The attributes, cached for a day. */
static void fl_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	count(RQ_GETATTR);
	attr_of(ino, &st);
	fuse_reply_attr(req, &st, TTL);
}

/* --open: keep_cache, so reads after the first come from the page cache. */
static void fl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	count(RQ_OPEN);
	if (no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (ino != KEY_INO || (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, ino == KEY_INO ? EACCES : EISDIR);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* The key's bytes from off; only reached when the page is not cached. */
static void fl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	count(RQ_READ);
	if (ino != KEY_INO || off >= KEY_LEN) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > (size_t)(KEY_LEN - off))
		size = (size_t)(KEY_LEN - off);
	fuse_reply_buf(req, key + off, size);
}

/* Not needed: ENOSYS once, and the kernel stops sending it. */
static void fl_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	count(RQ_FLUSH);
	fuse_reply_err(req, ENOSYS);
}

/* Nothing to free: the opens keep no state. */
static void fl_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	count(RQ_RELEASE);
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops fl_ops = {
    .init = fl_init,
    .lookup = fl_lookup,
    .getattr = fl_getattr,
    .open = fl_open,
    .read = fl_read,
    .flush = fl_flush,
    .release = fl_release,
};

/* SIGUSR1 (blocked everywhere else): logs the counters. */
static void *sig_main(void *arg)
{
	sigset_t *set = arg;
	int sig;

	while (sigwait(set, &sig) == 0) {
		char line[256];
		size_t len = 0;

		for (int k = 0; k < RQ_COUNT; k++)
			len += (size_t)snprintf(line + len, sizeof(line) - len,
						" %s=%lu", rq_names[k],
						atomic_load(&requests[k]));
		fprintf(stderr, "keyfs-floor: requests:%s\n", line);
	}
	return NULL;
}

/* 33 random bytes as 44 base64url characters, into key. */
static int make_key(void)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
				  "qrstuvwxyz0123456789-_";
	unsigned char raw[33];

	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return -1;
	for (int i = 0; i < 11; i++) {
		unsigned v = (unsigned)raw[3 * i] << 16 |
			     (unsigned)raw[3 * i + 1] << 8 | raw[3 * i + 2];

		for (int j = 0; j < 4; j++)
			key[4 * i + j] = b64[(v >> (18 - 6 * j)) & 63];
	}
	explicit_bzero(raw, sizeof(raw));
	return 0;
}

int main(int argc, char **argv)
{
	char *fargv[] = {argv[0], "-o",
			 "default_permissions,allow_other,nosuid,nodev,"
			 "fsname=keyfs-floor,subtype=keyfs-floor",
			 NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_loop_config *loop;
	struct fuse_session *se;
	pthread_t sig_thread;
	sigset_t set;
	int r = 1;

	if (argc != 3 || (strcmp(argv[1], "--open") != 0 &&
			  strcmp(argv[1], "--no-open") != 0)) {
		fprintf(stderr, "usage: keyfs-floor --open|--no-open MNT\n");
		return 2;
	}
	no_open = strcmp(argv[1], "--no-open") == 0;
	if (make_key() < 0) {
		perror("keyfs-floor: getrandom");
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pthread_create(&sig_thread, NULL, sig_main, &set) != 0)
		return 1;
	se = fuse_session_new(&args, &fl_ops, sizeof(fl_ops), NULL);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) == 0) {
		if (fuse_session_mount(se, argv[2]) == 0) {
			loop = fuse_loop_cfg_create();
			fuse_loop_cfg_set_max_threads(loop, 16);
			r = fuse_session_loop_mt(se, loop) < 0;
			fuse_loop_cfg_destroy(loop);
			fuse_session_unmount(se);
		}
		fuse_remove_signal_handlers(se);
	}
	fuse_session_destroy(se);
	explicit_bzero(key, sizeof(key));
	return r;
}
