// SPDX-License-Identifier: MIT
/*
 * mount: the daemon's life cycle -- configuration, the checks on the
 * mountpoint, the manager, the FUSE session, signals, the service
 * manager's notifications and the exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <mntent.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "env.h"
#include "fs.h"
#include "log.h"
#include "mount.h"

/* A line of /proc/self/mounts: two paths, type, options and the rest. */
#define MNTENT_LINE_MAX (2 * PATH_MAX + 512)
#define REQUESTS_LINE_MAX 512 /* the SIGUSR1 line of request counters */
#define LOOP_THREADS 16	      /* request threads at most */
#define NOTIFY_MAX 512	      /* one notification: READY=1, STATUS=... */

/* Resolves the existing prefix of path with realpath, keeping the rest. */
static char *resolve(const char *path)
{
	char *r = realpath(path, NULL), *dup, *slash;

	if (r)
		return r;
	dup = strdup(path);
	if (!dup)
		return NULL;
	slash = strrchr(dup, '/');
	if (!slash || slash == dup) {
		return dup;
	}
	*slash = 0;
	char *head = resolve(dup);

	if (head) {
		char *joined = kf_path_join(head, slash + 1);

		free(head);
		free(dup);
		return joined;
	}
	free(dup);
	return NULL;
}

static int check_paths(const struct kf_config *cfg, const char *mnt)
{
	struct kf_config_path paths[KF_CONFIG_PATHS_MAX];
	size_t n = kf_config_paths(cfg, paths);
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		char *p = resolve(paths[i].path);

		if (p && kf_path_under(p, mnt)) {
			kf_log(LOG_ERR,
			       "%s %s lies under the mountpoint %s; "
			       "refusing to start",
			       paths[i].key, paths[i].path, mnt);
			r = -EINVAL;
		}
		free(p);
	}
	return r;
}

/*
 * -o OPTS may add FUSE options but never weaken the ones keyfs always sets
 * (default_permissions, allow_other, nosuid, nodev).  allow_root is refused.
 * suid and dev are dropped with a warning: mount(8) turns fstab's
 * "defaults" into them and mount.fuse3 passes them on, so refusing them
 * would refuse every fstab line that does not say nosuid,nodev.  Empty
 * items are dropped too.  *ret_opts: the options to give libfuse, malloc'd,
 * or NULL when none is left.  0 or -errno.
 */
static int filter_extra_options(const char *extra, char **ret_opts)
{
	static const char *const refused[] = {"allow_root",
					      "nodefault_permissions"};
	static const char *const dropped[] = {"suid", "dev"};
	char *copy, *out, *save = NULL;
	size_t len = 0;
	int r = 0;

	*ret_opts = NULL;
	if (!extra)
		return 0;
	copy = strdup(extra);
	out = calloc(1, strlen(extra) + 1);
	if (!copy || !out) {
		free(copy);
		free(out);
		return -ENOMEM;
	}
	for (char *t = strtok_r(copy, ",", &save); t && r == 0;
	     t = strtok_r(NULL, ",", &save)) {
		bool drop = false;

		for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]);
		     i++) {
			if (strcmp(t, refused[i]) == 0) {
				kf_log(LOG_ERR,
				       "-o %s would weaken the mount; keyfs "
				       "always mounts with default_permissions,"
				       "allow_other,nosuid,nodev",
				       refused[i]);
				r = -EINVAL;
			}
		}
		for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]);
		     i++) {
			if (strcmp(t, dropped[i]) == 0) {
				kf_log(LOG_WARNING,
				       "-o %s ignored: keyfs always mounts "
				       "nosuid,nodev",
				       dropped[i]);
				drop = true;
			}
		}
		if (drop || r < 0)
			continue;
		len += (size_t)sprintf(out + len, "%s%s", len ? "," : "", t);
	}
	free(copy);
	if (r < 0 || len == 0) {
		free(out);
		return r;
	}
	*ret_opts = out;
	return 0;
}

/*
 * The service manager to tell about start-up and shutdown: the datagram
 * socket of $NOTIFY_SOCKET (sd_notify(3)), a path or, after "@", an
 * abstract name.  Only with -f: a daemon that detaches is not the process
 * systemd started, and systemd ignores notifications from others.
 */
struct notify_target {
	struct sockaddr_un addr;
	socklen_t len;	      /* 0: nothing to tell */
	atomic_bool stopping; /* STOPPING=1 was sent */
};

/* Reads $NOTIFY_SOCKET into t, and unsets it: no child should use it. */
static void notify_init(struct notify_target *t, bool foreground)
{
	const char *v = getenv("NOTIFY_SOCKET");
	size_t n;

	memset(t, 0, sizeof(*t));
	atomic_init(&t->stopping, false);
	if (!foreground || !v || !*v)
		return;
	n = strlen(v);
	if ((v[0] != '/' && v[0] != '@') || n >= sizeof(t->addr.sun_path)) {
		kf_log(LOG_WARNING,
		       "NOTIFY_SOCKET is neither a path nor an abstract "
		       "socket name; systemd will not hear that keyfs is "
		       "ready");
		return;
	}
	t->addr.sun_family = AF_UNIX;
	memcpy(t->addr.sun_path, v, n);
	if (v[0] == '@')
		t->addr.sun_path[0] = 0;
	/* An abstract name has no terminating NUL; a path may have one. */
	t->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
			     (v[0] == '/'));
	unsetenv("NOTIFY_SOCKET");
}

/*
 * Sends one notification ("READY=1\nSTATUS=...") as a datagram from a
 * socket of its own, so any thread may call it.  0 (also when there is no
 * service manager), or -errno, logged as a warning.
 */
static int notify_send(const struct notify_target *t, const char *text)
{
	int fd, r = 0;

	if (t->len == 0)
		return 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || sendto(fd, text, strlen(text), MSG_NOSIGNAL,
			     (const struct sockaddr *)&t->addr, t->len) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r < 0)
		kf_log(LOG_WARNING, "cannot notify systemd (NOTIFY_SOCKET): %s",
		       strerror(-r));
	return r;
}

/* READY=1, with the version served in STATUS, once the tree answers. */
static void notify_ready(const struct notify_target *t, struct kf_fs *fs)
{
	struct kf_keyring *kr;
	char text[NOTIFY_MAX];

	if (t->len == 0)
		return;
	kr = kf_manager_keyring(fs->m);
	snprintf(text, sizeof(text),
		 "READY=1\nSTATUS=version %" PRIu32 ", %s mode, on %s",
		 kf_keyring_current_version(kr),
		 kf_config_read_modes[fs->read_mode], fs->mountpoint);
	kf_keyring_unref(kr);
	notify_send(t, text);
}

/* STOPPING=1, once: from the signal thread, or when the session ended. */
static void notify_stopping(struct notify_target *t, const char *why)
{
	char text[NOTIFY_MAX];

	if (t->len == 0 || atomic_exchange(&t->stopping, true))
		return;
	snprintf(text, sizeof(text), "STOPPING=1\nSTATUS=unmounting (%s)", why);
	notify_send(t, text);
}

/*
 * Runs `fusermount3 -uz -- mnt` and waits for it: no shell, so the
 * mountpoint's name may hold any character; an environment of PATH alone;
 * standard input from /dev/null, no other descriptor of the daemon, no
 * blocked or ignored signals.  Returns 0, or -errno (-EBUSY if it failed).
 */
static int fusermount_unmount(const char *mnt)
{
	static const char *const dirs[] = {"/usr/sbin", "/usr/bin", "/sbin",
					   "/bin"};
	char *const argv[] = {(char *)"fusermount3", (char *)"-uz",
			      (char *)"--", (char *)mnt, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	char path[PATH_MAX] = "";
	sigset_t none, defaults;
	int r, status;
	pid_t pid;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/fusermount3", dirs[i]);
		if (access(path, X_OK) == 0)
			break;
		path[0] = 0;
	}
	if (!path[0])
		return -ENOENT;
	sigemptyset(&none);
	sigfillset(&defaults);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &defaults);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
					    POSIX_SPAWN_SETSIGDEF);
	/* kf_env_child: PATH alone, never the daemon's environment. */
	r = -posix_spawn(&pid, path, &fa, &attr, argv, kf_env_child());
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	if (r < 0)
		return r;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EBUSY;
}

/*
 * Detaches the mount on mnt: umount2 when the daemon may, else through
 * fusermount3 (setuid root).  Returns 0 or -errno.
 */
static int unmount_detached(const char *mnt)
{
	if (umount2(mnt, MNT_DETACH) == 0)
		return 0;
	return fusermount_unmount(mnt);
}

/* Clears a mount left by a killed daemon ("Transport endpoint ..."). */
static int prepare_mountpoint(const char *mnt)
{
	struct statvfs sv;
	struct stat st;
	int e, r;

	/*
	 * stat alone may be answered from the dead mount's attribute cache;
	 * statfs always asks the file system, so a stale mount fails it.
	 */
	if (stat(mnt, &st) == 0 && statvfs(mnt, &sv) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			kf_log(LOG_ERR, "mountpoint %s is not a directory",
			       mnt);
			return -ENOTDIR;
		}
		return 0;
	}
	e = errno; /* before anything can clobber it */
	if (e == ENOTCONN || e == ECONNABORTED) {
		kf_log(LOG_WARNING, "clearing a stale mount on %s", mnt);
		r = unmount_detached(mnt);
		if (r < 0) {
			kf_log(LOG_ERR, "cannot clear stale mount %s: %s", mnt,
			       strerror(-r));
			return -EBUSY;
		}
		return 0;
	}
	if (e == ENOENT) {
		r = kf_dir_ensure(mnt, 0755, NULL, NULL);
		if (r == 0)
			return 0;
		e = -r;
	}
	kf_log(LOG_ERR, "mountpoint %s: %s", mnt, strerror(e));
	return -e;
}

/* Whether mnt is already a live keyfs mount. */
static bool already_mounted(const char *mnt)
{
	FILE *f = setmntent("/proc/self/mounts", "re");
	char buf[MNTENT_LINE_MAX];
	struct mntent ent;
	bool found = false;

	if (!f)
		return false;
	/* getmntent decodes the octal escapes of spaces, tabs, newlines. */
	while (!found && getmntent_r(f, &ent, buf, sizeof(buf)))
		found = strcmp(ent.mnt_dir, mnt) == 0 &&
			strncmp(ent.mnt_type, "fuse", 4) == 0;
	endmntent(f);
	return found;
}

struct sig_ctx {
	struct kf_fs *fs;
	struct notify_target *notify;
	sigset_t set;
	atomic_bool done; /* the session is over: return at the next wake */
};

/*
 * SIGTERM/SIGINT/SIGHUP: tell the loop to exit and unmount, which wakes
 * every worker blocked on /dev/fuse, idle or busy.  SIGUSR1: log the request
 * counters, and the size of the backups/ name table on a line of its own
 * (the benchmark sums every field of the requests line).
 */
static void log_requests(struct kf_fs *fs)
{
	char line[REQUESTS_LINE_MAX];
	size_t len = 0, names, slots;

	for (int k = 0; k < KF_RQ_COUNT; k++)
		len += (size_t)snprintf(line + len, sizeof(line) - len,
					" %s=%lu", kf_req_names[k],
					(unsigned long)fs->requests[k]);
	kf_log(LOG_NOTICE, "requests:%s", line);
	kf_tree_backup_names(fs->tree, &names, &slots);
	kf_log(LOG_NOTICE, "backup name table: %zu names in %zu slots", names,
	       slots);
	kf_log(LOG_NOTICE,
	       "invalidations: inode=%lu entry=%lu skipped=%lu held=%zu",
	       (unsigned long)fs->inval_inodes,
	       (unsigned long)fs->inval_entries,
	       (unsigned long)fs->inval_skipped, kf_lookups_count(fs->lookups));
}

static void *sig_main(void *arg)
{
	struct sig_ctx *s = arg;
	char why[32];
	int sig, r;

	for (;;) {
		if (sigwait(&s->set, &sig) != 0 || atomic_load(&s->done))
			return NULL;
		if (sig != SIGUSR1)
			break;
		log_requests(s->fs);
	}
	kf_log(LOG_NOTICE, "signal %d: unmounting %s", sig, s->fs->mountpoint);
	snprintf(why, sizeof(why), "signal %d", sig);
	notify_stopping(s->notify, why);
	fuse_session_exit(s->fs->se);
	r = unmount_detached(s->fs->mountpoint);
	if (r < 0)
		kf_log(LOG_ERR, "unmount of %s failed: %s", s->fs->mountpoint,
		       strerror(-r));
	return NULL;
}

/*
 * Ends the signal thread before what it uses goes away (the session, the
 * mountpoint, sig itself on the caller's stack): tells it the session is
 * over, wakes it with SIGUSR1 if it is waiting, and joins it -- after an
 * unmount it started, when a signal came first.
 */
static void sig_stop(struct sig_ctx *sig, pthread_t thread)
{
	atomic_store(&sig->done, true);
	pthread_kill(thread, SIGUSR1);
	pthread_join(thread, NULL);
}

static int run_session(struct kf_fs *fs, const struct kf_mount_opts *o,
		       const char *extra, struct notify_target *notify)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *loop = NULL;
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct sig_ctx sig = {fs, notify, {{0}}, false};
	pthread_t sig_thread;
	json_t *fields;
	int r = 1, e;

	fuse_opt_add_arg(&args, "keyfs");
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, "default_permissions,allow_other,nosuid,"
				"nodev,fsname=keyfs,subtype=keyfs");
	if (extra) {
		fuse_opt_add_arg(&args, "-o");
		fuse_opt_add_arg(&args, extra);
	}
	fs->se = fuse_session_new(&args, &kf_ops, sizeof(kf_ops), fs);
	if (!fs->se) {
		kf_log(LOG_ERR, "cannot create the FUSE session (bad -o?)");
		goto out;
	}
	if (fuse_session_mount(fs->se, fs->mountpoint) != 0) {
		kf_log(LOG_ERR, "cannot mount on %s", fs->mountpoint);
		goto out;
	}
	fields = json_pack("{s:s, s:s}", "mountpoint", fs->mountpoint,
			   "read_mode", kf_config_read_modes[fs->read_mode]);
	if (kf_manager_audit_event(fs->m, &self, KF_EVENT_MOUNT, fields) < 0) {
		json_decref(fields);
		kf_log(LOG_ERR, "cannot write the audit log; unmounting");
		fuse_session_unmount(fs->se);
		goto out;
	}
	json_decref(fields);
	kf_log(LOG_NOTICE, "mounted on %s (%s mode)", fs->mountpoint,
	       kf_config_read_modes[fs->read_mode]);
	if (fuse_daemonize(o->foreground) != 0) {
		fuse_session_unmount(fs->se);
		goto out;
	}
	/* Again in the detached daemon, whatever fuse_daemonize did. */
	kf_harden_process();

	sigemptyset(&sig.set);
	sigaddset(&sig.set, SIGTERM);
	sigaddset(&sig.set, SIGINT);
	sigaddset(&sig.set, SIGHUP);
	sigaddset(&sig.set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sig.set, NULL);
	signal(SIGPIPE, SIG_IGN);
	e = pthread_create(&sig_thread, NULL, sig_main, &sig);
	if (e == 0) {
		e = -kf_workers_start(fs);
		if (e != 0)
			sig_stop(&sig, sig_thread);
	}
	if (e != 0) {
		/* Never serve a tree whose control writes could not finish. */
		kf_log(LOG_ERR, "cannot start a thread: %s; unmounting",
		       strerror(e));
		fuse_session_unmount(fs->se);
		goto out;
	}

	/* The kernel queues requests until the loop reads them: from here on
	 * every request is answered. */
	notify_ready(notify, fs);
	loop = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(loop, LOOP_THREADS);
	r = fuse_session_loop_mt(fs->se, loop) < 0 ? 1 : 0;
	fuse_loop_cfg_destroy(loop);
	sig_stop(&sig, sig_thread);
	/* Unless a signal said it first: the session ended, most likely by
	 * an unmount (umount, fusermount3 -u). */
	notify_stopping(notify, "the FUSE session ended");

	kf_workers_stop(fs);
	kf_ops_release_all(fs);

	fuse_session_unmount(fs->se);
	if (kf_manager_audit_event(fs->m, &self, KF_EVENT_UNMOUNT, NULL) < 0)
		r = 1;
	kf_log(LOG_NOTICE, "unmounted %s", fs->mountpoint);
out:
	if (fs->se)
		fuse_session_destroy(fs->se);
	fuse_opt_free_args(&args);
	return r;
}

int kf_mount_main(const struct kf_mount_opts *o)
{
	struct notify_target notify;
	struct kf_config *cfg = NULL;
	struct kf_manager *m = NULL;
	struct kf_fs fs = {0};
	char err[KF_ERR_MAX];
	char *mnt = NULL, *extra = NULL;
	int r;

	/* Again in the detached daemon, whatever fuse_daemonize did. */
	kf_harden_process();
	notify_init(&notify, o->foreground);
	r = filter_extra_options(o->extra, &extra);
	if (r == -ENOMEM)
		kf_log(LOG_ERR, "out of memory");
	if (r < 0)
		return 1;
	r = kf_config_load(o->config_path, &cfg, err);
	if (r < 0) {
		kf_log(LOG_ERR, "%s", err);
		free(extra);
		return 1;
	}
	if (o->mountpoint &&
	    kf_config_set_mountpoint(cfg, o->mountpoint, err) < 0) {
		kf_log(LOG_ERR, "%s", err);
		goto fail;
	}
	if (!cfg->mountpoint) {
		kf_log(LOG_ERR,
		       "no mountpoint: give MOUNTPOINT or set "
		       "mountpoint in %s",
		       cfg->source);
		goto fail;
	}
	mnt = resolve(cfg->mountpoint);
	if (!mnt || prepare_mountpoint(mnt) < 0)
		goto fail;
	free(mnt);
	mnt = realpath(cfg->mountpoint, NULL);
	if (!mnt) {
		kf_log(LOG_ERR, "mountpoint: %s", strerror(errno));
		goto fail;
	}
	if (already_mounted(mnt)) {
		kf_log(LOG_ERR, "%s is already mounted", mnt);
		goto fail;
	}
	if (check_paths(cfg, mnt) < 0)
		goto fail;
	r = kf_manager_open(cfg, &m, err);
	/* What opening left on this stack: subkeys, registers the dynamic
	 * linker saved (README: Keys in memory). */
	kf_key_wipe_stack(KF_KEY_WIPE_OPERATION);
	if (r < 0) {
		kf_log(LOG_ERR, "%s", err);
		goto fail;
	}
	kf_log_syslog(!o->foreground);
	fs.m = m;
	fs.cfg = cfg;
	fs.read_mode = cfg->read_mode;
	fs.mountpoint = mnt;
	fs.tree = kf_tree_new(m);
	fs.lookups = kf_lookups_new();
	pthread_mutex_init(&fs.handles_lock, NULL);
	r = fs.tree && fs.lookups ? run_session(&fs, o, extra, &notify) : 1;
	kf_lookups_free(fs.lookups);
	kf_tree_free(fs.tree);
	kf_manager_close(m);
	kf_config_free(cfg);
	free(mnt);
	free(extra);
	return r;
fail:
	kf_manager_close(m);
	kf_config_free(cfg);
	free(mnt);
	free(extra);
	return 1;
}
