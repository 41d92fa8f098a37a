// SPDX-License-Identifier: MIT
/*
 * keyfs as the system runs it, against the real binary:
 * - the unit meson generates (etc/keyfs.service.in): its paths follow the
 *   prefix, `systemd-analyze verify` accepts it, `systemd-analyze security`
 *   rates it 4.0 or less, and none of its settings makes a mount namespace;
 * - the daemon within the unit's limits: its capability bounding set and
 *   no_new_privs (setpriv), and every system call and socket family it
 *   makes (strace) allowed by the unit's filters;
 * - sd_notify: READY=1 only once the tree serves, from the main process,
 *   STOPPING=1 at SIGTERM and when the mount is removed;
 * - journald: "<N>" priorities when standard error is the journal's stream;
 *   production's refusal with the hint;
 * - mount(8): `mount -t fuse.keyfs CONFIG MNT` and an fstab line, through
 *   mount.fuse3, then `umount MNT` ends the daemon.
 *
 * No systemd runs here (PID 1 is not systemd), so the unit is never
 * started: these tests check what can be checked without it.  The unit that
 * `systemd-analyze verify` reads is a copy with ExecStart= pointing at the
 * built binary (verify refuses a command that does not exist).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mntent.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#if !defined(KT_UNIT) || !defined(KT_BINDIR) || !defined(KT_DOCDIR)
#error "KT_UNIT, KT_BINDIR, KT_DOCDIR: the unit and its paths (meson.build)"
#endif

#define MAX_PIDS 8
#define NOTIFY_WAIT_MS 30000 /* strace makes the daemon slow to start */
#define HINT                                                                   \
	"KeyValidationError: No current encryption key available: set "        \
	"ENCRYPTION_KEY (for example from `keyfs genkey`), or restore a "      \
	"backup (`keyfs restore --offline FILE`)"

/* Daemons started here (not through kt_mount_start), stopped in .fini. */
static pid_t pids[MAX_PIDS];
static char *mounts[MAX_PIDS];

static void track(pid_t pid, const char *mnt)
{
	for (int i = 0; i < MAX_PIDS; i++) {
		if (!pids[i]) {
			pids[i] = pid;
			free(mounts[i]);
			mounts[i] = mnt ? strdup(mnt) : NULL;
			return;
		}
	}
	cr_assert(false, "too many daemons");
}

/* Whether pid runs (exists and is no zombie): the detached daemons are
 * not this process's children. */
static bool alive(pid_t pid)
{
	char path[64], buf[512], *p;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* "PID (comm) S ...": comm may hold spaces, so after the last ')'. */
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] && p[2] != 'Z' && p[2] != 'X';
}

static void sys_fini(void)
{
	for (int i = 0; i < MAX_PIDS; i++) {
		if (pids[i] > 0 && alive(pids[i])) {
			kill(pids[i], SIGTERM);
			for (int w = 0; w < 5000 && alive(pids[i]); w += 20)
				kt_sleep_ms(20);
			kill(pids[i], SIGKILL);
		}
		if (pids[i] > 0)
			waitpid(pids[i], NULL, WNOHANG);
		if (mounts[i] && kt_is_mounted(mounts[i]))
			kt_unmount(mounts[i]);
		pids[i] = 0;
	}
	kt_mount_cleanup_all();
}

TestSuite(system, .fini = sys_fini);

/* --- the unit ------------------------------------------------------------ */

/* Every value of `key=` in the unit's text, one per line ("" if none). */
static char *unit_values(const char *text, const char *key)
{
	size_t klen = strlen(key), len = 0;
	char *out = calloc(1, strlen(text) + 1);
	const char *line = text;

	cr_assert(out);
	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);

		if (n > klen && strncmp(line, key, klen) == 0 &&
		    line[klen] == '=') {
			memcpy(out + len, line + klen + 1, n - klen - 1);
			len += n - klen - 1;
			out[len++] = '\n';
		}
		line = end ? end + 1 : NULL;
	}
	return out;
}

static char *unit_text(void)
{
	return kt_read_file_ok(KT_UNIT, NULL);
}

/*
 * Writes the unit into dir as keyfs.service, with ExecStart='s program
 * replaced by the built binary; returns the copy's path.
 */
static char *unit_copy(const char *dir, const char *text)
{
	const char *exec = strstr(text, "\nExecStart="), *args;
	char *copy, *path, bin[PATH_MAX];

	cr_assert(exec, "the unit has no ExecStart=");
	exec += strlen("\nExecStart=");
	args = strchr(exec, ' ');
	cr_assert(args);
	cr_assert(realpath(kt_keyfs(), bin), "realpath %s", kt_keyfs());
	cr_assert(asprintf(&copy, "%.*s%s%s", (int)(exec - text), text, bin,
			   args) > 0);
	path = kt_path(dir, "keyfs.service");
	kt_write_file(path, copy, 0644);
	free(copy);
	return path;
}

Test(system, unit_paths_follow_the_build_prefix)
{
	char *text = unit_text(), *exec = unit_values(text, "ExecStart"),
	     *doc = unit_values(text, "Documentation"), *want, *dir, *out;
	int rc;

	cr_assert(asprintf(&want, "%s/keyfs mount -f -c /etc/keyfs/keyfs.ini\n",
			   KT_BINDIR) > 0);
	cr_assert_str_eq(exec, want, "ExecStart=%s", exec);
	free(want);
	cr_assert(asprintf(&want, "file://%s/README.md\n", KT_DOCDIR) > 0);
	cr_assert_str_eq(doc, want, "Documentation=%s", doc);
	cr_assert(!strstr(text, "@bindir@") && !strstr(text, "@docdir@"),
		  "a placeholder is left in the unit");
	free(want);
	free(exec);
	free(doc);
	free(text);

	/* Configured for /usr, the unit names /usr/bin/keyfs. */
	dir = kt_tmpdir("sys-prefix");
	rc = kt_runf(&out, NULL, "meson setup --prefix=/usr '%s/build' '%s'",
		     dir, kt_srcdir());
	cr_assert_eq(rc, 0, "meson setup --prefix=/usr failed: %s", out);
	free(out);
	want = kt_path(dir, "build/etc/keyfs.service");
	text = kt_read_file_ok(want, NULL);
	exec = unit_values(text, "ExecStart");
	doc = unit_values(text, "Documentation");
	cr_assert_str_eq(exec,
			 "/usr/bin/keyfs mount -f -c /etc/keyfs/keyfs.ini\n");
	cr_assert_str_eq(doc, "file:///usr/share/doc/keyfs/README.md\n");
	kt_runf(NULL, NULL, "rm -rf '%s/build'", dir);
	free(exec);
	free(doc);
	free(text);
	free(want);
	free(dir);
}

Test(system, unit_passes_systemd_analyze_verify)
{
	char *dir = kt_tmpdir("sys-verify"), *text = unit_text(), *path, *err,
	     *bad;
	int rc;

	path = unit_copy(dir, text);
	rc = kt_runf(NULL, &err, "systemd-analyze verify '%s'", path);
	cr_assert_eq(rc, 0, "systemd-analyze verify: %s", err);
	/* verify only warns about an unknown key or a bad value. */
	cr_assert_str_eq(err, "", "systemd-analyze verify: %s", err);
	free(err);
	free(path);

	/* The check sees a mistake: a misspelt key in another copy. */
	free(dir);
	dir = kt_tmpdir("sys-verify-bad");
	cr_assert(asprintf(&bad, "%s\n[Service]\nNoNewPrivilegez=yes\n", text) >
		  0);
	path = unit_copy(dir, bad);
	kt_runf(NULL, &err, "systemd-analyze verify '%s'", path);
	cr_assert(kt_contains(err, "NoNewPrivilegez"),
		  "verify did not see the misspelt key: %s", err);
	free(err);
	free(path);
	free(bad);
	free(text);
	free(dir);
}

/* systemd-analyze security --offline's overall exposure of the unit at
 * path, and its exit status with --threshold=40 in *ret_rc. */
static double exposure(const char *path, int *ret_rc)
{
	char *out, *p;
	double e;

	kt_runf(&out, NULL,
		"systemd-analyze security --offline=yes --no-pager '%s'", path);
	p = strstr(out, "Overall exposure level for ");
	cr_assert(p, "no overall exposure level in: %s", out);
	p = strstr(p, ": ");
	cr_assert(p);
	e = strtod(p + 2, NULL);
	free(out);
	*ret_rc = kt_runf(NULL, NULL,
			  "systemd-analyze security --offline=yes "
			  "--threshold=40 '%s'",
			  path);
	return e;
}

Test(system, unit_exposure_is_at_most_4)
{
	char *dir = kt_tmpdir("sys-security"), *text = unit_text(), *path;
	double e;
	int rc;

	path = unit_copy(dir, text);
	e = exposure(path, &rc);
	cr_assert(e > 0 && e <= 4.0, "exposure %.1f, more than 4.0", e);
	cr_assert_eq(rc, 0, "--threshold=40 failed at exposure %.1f", e);
	cr_log_info("exposure of keyfs.service: %.1f", e);
	free(path);
	free(text);
	free(dir);

	/* The same reading of a bare unit says more than 4.0, and the
	 * threshold fails it: the check can fail. */
	dir = kt_tmpdir("sys-security-bare");
	path = unit_copy(dir, "[Service]\nExecStart=/bin/keyfs mount -f\n");
	e = exposure(path, &rc);
	cr_assert(e > 9.0, "a bare unit read %.1f", e);
	cr_assert_neq(rc, 0, "--threshold=40 passed a bare unit");
	free(path);
	free(dir);
}

Test(system, unit_makes_no_mount_namespace)
{
	/*
	 * Each of these gives the service a mount namespace whose mounts
	 * systemd turns to slave (systemd.exec(5), MountFlags=): the tree
	 * would be mounted where no application sees it.
	 */
	static const char *const namespacing[] = {
	    "PrivateMounts",
	    "PrivateTmp",
	    "PrivateDevices",
	    "PrivateNetwork",
	    "PrivateIPC",
	    "PrivateUsers",
	    "ProtectSystem",
	    "ProtectHome",
	    "ProtectKernelTunables",
	    "ProtectKernelModules",
	    "ProtectKernelLogs",
	    "ProtectControlGroups",
	    "ProtectProc",
	    "ProcSubset",
	    "ReadWritePaths",
	    "ReadOnlyPaths",
	    "InaccessiblePaths",
	    "ExecPaths",
	    "NoExecPaths",
	    "TemporaryFileSystem",
	    "BindPaths",
	    "BindReadOnlyPaths",
	    "RootDirectory",
	    "RootImage",
	    "MountImages",
	    "ExtensionImages",
	    "ExtensionDirectories",
	    "NetworkNamespacePath",
	    "IPCNamespacePath",
	    "LogNamespace",
	    "DynamicUser",
	    "StateDirectory",
	    "RuntimeDirectory",
	    "MountAPIVFS",
	};
	char *text = unit_text(), *v;

	for (size_t i = 0; i < sizeof(namespacing) / sizeof(namespacing[0]);
	     i++) {
		v = unit_values(text, namespacing[i]);
		cr_expect_str_eq(v, "", "the unit sets %s=%s", namespacing[i],
				 v);
		free(v);
	}
	v = unit_values(text, "MountFlags");
	cr_assert(!*v || strcmp(v, "shared\n") == 0, "MountFlags=%s", v);
	free(v);
	v = unit_values(text, "Type");
	cr_assert_str_eq(v, "notify\n");
	free(v);
	v = unit_values(text, "NotifyAccess");
	cr_assert_str_eq(v, "main\n");
	free(v);
	free(text);
}

/* --- notifications ------------------------------------------------------- */

struct notify_sock {
	int fd;
	struct sockaddr_un addr;
	socklen_t len;
	char env[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
};

/*
 * Binds a datagram socket for NOTIFY_SOCKET, with SO_PASSCRED so every
 * message says who sent it: at dir/notify, or an abstract name.
 */
static void notify_bind(struct notify_sock *ns, const char *dir, bool abstract)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	socklen_t len;
	int one = 1;

	ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert(ns->fd >= 0);
	cr_assert(setsockopt(ns->fd, SOL_SOCKET, SO_PASSCRED, &one,
			     sizeof(one)) == 0);
	if (abstract) {
		int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1,
				 "keyfs-test-%d-%u", (int)getpid(),
				 (unsigned)random());

		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				  (size_t)n);
		snprintf(ns->env, sizeof(ns->env), "NOTIFY_SOCKET=@%s",
			 a.sun_path + 1);
	} else {
		cr_assert((size_t)snprintf(a.sun_path, sizeof(a.sun_path),
					   "%s/notify",
					   dir) < sizeof(a.sun_path));
		len = sizeof(a);
		snprintf(ns->env, sizeof(ns->env), "NOTIFY_SOCKET=%s",
			 a.sun_path);
	}
	cr_assert(bind(ns->fd, (struct sockaddr *)&a, len) == 0, "bind: %s",
		  strerror(errno));
	ns->addr = a;
	ns->len = len;
}

/*
 * Fills the socket's queue with one-byte messages ("x") until the kernel
 * refuses more (net.unix.max_dgram_qlen): the next sender then blocks in
 * sendto until this process reads.  Returns how many were queued.
 */
static int notify_fill(struct notify_sock *ns)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), n = 0;

	cr_assert(fd >= 0);
	while (n < 100000 && sendto(fd, "x", 1, MSG_DONTWAIT,
				    (struct sockaddr *)&ns->addr, ns->len) == 1)
		n++;
	cr_assert(errno == EAGAIN, "filling the socket: %s", strerror(errno));
	close(fd);
	return n;
}

/* The next message within ms (malloc'd), or NULL; *ret_pid: its sender. */
static char *notify_recv(struct notify_sock *ns, int ms, pid_t *ret_pid)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} control;
	char buf[4096];
	struct iovec iov = {buf, sizeof(buf) - 1};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = &control,
			     .msg_controllen = sizeof(control)};
	struct pollfd p = {ns->fd, POLLIN, 0};
	struct cmsghdr *c;
	ssize_t n;

	*ret_pid = 0;
	if (poll(&p, 1, ms) <= 0)
		return NULL;
	n = recvmsg(ns->fd, &msg, MSG_DONTWAIT);
	cr_assert(n >= 0, "recvmsg: %s", strerror(errno));
	buf[n] = 0;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET &&
		    c->cmsg_type == SCM_CREDENTIALS) {
			struct ucred u;

			memcpy(&u, CMSG_DATA(c), sizeof(u));
			*ret_pid = u.pid;
		}
	}
	return strdup(buf);
}

/*
 * Starts argv (argv[0] a path) with standard output and error appended to
 * log, and env_words ("NAME=value ...", may be NULL) added to the
 * environment; the child gets SIGTERM if this process dies.  Its pid,
 * stopped and unmounted (mnt, may be NULL) in .fini.
 */
static pid_t spawn(char *const argv[], const char *log, const char *env_words,
		   const char *mnt)
{
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		char *copy = env_words ? strdup(env_words) : NULL, *save = NULL;

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		for (char *w = copy ? strtok_r(copy, " ", &save) : NULL; w;
		     w = strtok_r(NULL, " ", &save))
			putenv(w);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	track(pid, mnt);
	return pid;
}

/* `keyfs mount -f -c CFG [-o extra]` for m, as spawn. */
static pid_t spawn_keyfs(struct kt_mount *m, const char *env_words,
			 const char *extra)
{
	char *argv[] = {(char *)kt_keyfs(),  "mount",	    "-f", "-c", m->cfg,
			extra ? "-o" : NULL, (char *)extra, NULL};

	return spawn(argv, m->log, env_words, m->mnt);
}

/*
 * Waits until the main thread of pid sits in sendto(2) (the system call
 * /proc/PID/syscall names first); asserts that it gets there within ms.
 */
static void wait_in_sendto(pid_t pid, int ms)
{
	char path[64], *text = NULL;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	for (int waited = 0; waited <= ms; waited += 20) {
		text = kt_read_file(path, NULL);
		cr_assert(text, "pid %d is gone", (int)pid);
		if (atol(text) == SYS_sendto)
			break;
		free(text);
		text = NULL;
		kt_sleep_ms(20);
	}
	cr_assert(text, "pid %d never blocked in sendto", (int)pid);
	free(text);
}

/* Whether version reads "N\n"; N in *ret. */
static bool version_is(struct kt_mount *m, long *ret)
{
	char *text = kt_mread(m, "version", NULL), *end;
	bool ok = false;

	*ret = 0;
	if (text) {
		*ret = strtol(text, &end, 10);
		ok = *ret > 0 && strcmp(end, "\n") == 0;
	}
	free(text);
	return ok;
}

/* The exit status of pid (a child) within ms, asserting it exited. */
static int exit_status(pid_t pid, int ms)
{
	int st = kt_wait_child(pid, ms);

	cr_assert(st >= 0, "pid %d did not exit", (int)pid);
	for (int i = 0; i < MAX_PIDS; i++)
		if (pids[i] == pid)
			pids[i] = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/*
 * A reader of version in a child process; its result comes back on the
 * pipe whose read end is returned (the text, or nothing on failure).
 */
static int read_version_in_child(struct kt_mount *m, pid_t *ret_pid)
{
	int fds[2];
	pid_t pid;

	cr_assert(pipe2(fds, O_CLOEXEC) == 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		char *path = kt_mpath(m, "version"), buf[32];
		int fd = open(path, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;

		if (n > 0 && write(fds[1], buf, (size_t)n) != n)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	*ret_pid = pid;
	return fds[0];
}

Test(system, ready_only_once_the_tree_serves)
{
	static struct kt_mount m;
	struct notify_sock ns;
	char *text, *want, got[32] = "";
	pid_t pid, from, reader;
	int fillers, fd;
	ssize_t n;
	long v = 0;

	kt_mount_config(&m, "sys-ready", NULL, NULL);
	notify_bind(&ns, m.dir, false);
	/* With the socket's queue full, the daemon blocks in the sendto of
	 * its first notification: what it has done by then stays still. */
	fillers = notify_fill(&ns);
	pid = spawn_keyfs(&m, ns.env, NULL);
	wait_in_sendto(pid, NOTIFY_WAIT_MS);
	cr_assert(kt_is_mounted(m.mnt), "notifying before the mount");
	/* A read now waits for the request loop; READY=1 lets it start. */
	fd = read_version_in_child(&m, &reader);
	for (int i = 0; i < fillers; i++) {
		text = notify_recv(&ns, 1000, &from);
		cr_assert(text && strcmp(text, "x") == 0);
		free(text);
	}
	text = notify_recv(&ns, NOTIFY_WAIT_MS, &from);
	cr_assert(text, "no notification from the daemon");
	cr_assert_eq(from, pid, "sent by pid %d, not the main process %d",
		     (int)from, (int)pid);
	cr_assert(kt_wait_child(reader, 15000) == 0,
		  "version did not read once READY=1 was sent");
	n = read(fd, got, sizeof(got) - 1);
	close(fd);
	cr_assert(n > 0, "the reader read nothing");
	v = strtol(got, NULL, 10);
	cr_assert(v > 0 && version_is(&m, &v), "version reads \"%s\"", got);
	cr_assert(asprintf(&want, "READY=1\nSTATUS=version %ld, ", v) > 0);
	cr_assert(strncmp(text, want, strlen(want)) == 0,
		  "first notification: \"%s\"", text);
	free(want);
	free(text);

	cr_assert(kill(pid, SIGTERM) == 0);
	text = notify_recv(&ns, NOTIFY_WAIT_MS, &from);
	cr_assert(text, "no STOPPING=1 at SIGTERM");
	cr_assert(strncmp(text, "STOPPING=1\n", 11) == 0, "got \"%s\"", text);
	cr_assert_eq(from, pid);
	free(text);
	cr_assert_eq(exit_status(pid, 15000), 0);
	cr_assert(!kt_is_mounted(m.mnt), "still mounted after SIGTERM");
	text = notify_recv(&ns, 0, &from);
	cr_assert(!text, "one more notification: \"%s\"", text);
	close(ns.fd);
}

Test(system, stopping_when_the_mount_is_removed)
{
	static struct kt_mount m;
	struct notify_sock ns;
	pid_t pid, from;
	char *text;
	int rc;

	kt_mount_config(&m, "sys-umount", NULL, NULL);
	notify_bind(&ns, NULL, true); /* an abstract name: "@..." */
	pid = spawn_keyfs(&m, ns.env, NULL);
	text = notify_recv(&ns, NOTIFY_WAIT_MS, &from);
	cr_assert(text && strncmp(text, "READY=1\n", 8) == 0,
		  "no READY=1 on an abstract socket");
	free(text);

	rc = kt_runf(NULL, NULL, "umount '%s'", m.mnt);
	cr_assert_eq(rc, 0, "umount failed");
	text = notify_recv(&ns, NOTIFY_WAIT_MS, &from);
	cr_assert(text && strncmp(text, "STOPPING=1\n", 11) == 0,
		  "no STOPPING=1 after umount: \"%s\"", text ? text : "");
	cr_assert_eq(from, pid);
	free(text);
	/* The session ended with the mount: the daemon exits by itself. */
	cr_assert_eq(exit_status(pid, 15000), 0);
	close(ns.fd);
}

/* --- journal ------------------------------------------------------------- */

/* "JOURNAL_STREAM=DEV:INO" of the file at path (created if missing). */
static char *journal_stream_of(const char *path)
{
	struct stat st;
	char *env;
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	cr_assert(fd >= 0 && fstat(fd, &st) == 0);
	close(fd);
	cr_assert(asprintf(&env, "JOURNAL_STREAM=%llu:%llu",
			   (unsigned long long)st.st_dev,
			   (unsigned long long)st.st_ino) > 0);
	return env;
}

/* Asserts that every line of text starts with "<N>" and text. */
static void expect_prefixed(const char *text)
{
	const char *line = text;
	int n = 0;

	while (*line) {
		const char *end = strchr(line, '\n');

		cr_assert(end, "an unfinished line: \"%s\"", line);
		cr_assert(line[0] == '<' && line[1] >= '0' && line[1] <= '7' &&
			      line[2] == '>' && line + 3 < end,
			  "a line without a priority: \"%.*s\"",
			  (int)(end - line), line);
		n++;
		line = end + 1;
	}
	cr_assert(n > 0, "no line at all");
}

Test(system, journal_lines_carry_their_priority)
{
	static struct kt_mount m;
	char *env, *log, *text;
	pid_t pid;
	int rc;

	kt_mount_config(&m, "sys-journal", NULL, NULL);
	env = journal_stream_of(m.log);
	pid = spawn_keyfs(&m, env, "dev");
	for (int i = 0; i < 750 && !kt_is_mounted(m.mnt); i++)
		kt_sleep_ms(20);
	cr_assert(kt_mwrite(&m, "control/restore", "nosuch\n") < 0,
		  "a restore of nothing succeeded");

	/* A second daemon on the same tree: refused with an error. */
	log = kt_path(m.dir, "second.log");
	free(env);
	env = journal_stream_of(log);
	rc = kt_runf(NULL, NULL, "%s %s mount -f -c '%s' 2>>'%s'", env,
		     kt_keyfs(), m.cfg, log);
	cr_assert_neq(rc, 0, "a second daemon started");
	cr_assert(kill(pid, SIGTERM) == 0);
	cr_assert_eq(exit_status(pid, 15000), 0);

	text = kt_read_file_ok(m.log, NULL);
	expect_prefixed(text);
	cr_assert(kt_contains(text, "<4>-o dev ignored"), "%s", text);
	cr_assert(kt_contains(text, "\n<5>mounted on "), "%s", text);
	cr_assert(kt_contains(text, "\n<1>") &&
		      kt_contains(text, "KeyBackupError: Failed to restore "
					"keys"),
		  "no alert-priority line for the failed restore: %s", text);
	cr_assert(!kt_contains(text, "keyfs: "), "a plain line: %s", text);
	free(text);
	text = kt_read_file_ok(log, NULL);
	expect_prefixed(text);
	cr_assert(kt_contains(text, "<3>"), "no error line: %s", text);
	free(text);
	free(log);
	free(env);
}

Test(system, journal_stream_of_another_file_keeps_plain_lines)
{
	static struct kt_mount m;
	char *env, *other, *text;
	int rc;

	kt_mount_config(&m, "sys-nojournal", NULL, NULL);
	/* JOURNAL_STREAM inherited from a unit, standard error redirected
	 * since: the device and inode are another file's. */
	other = kt_path(m.dir, "other");
	env = journal_stream_of(other);
	rc = kt_mount_start(&m, env);
	cr_assert_eq(rc, 0, "the daemon did not start");
	cr_assert_eq(kt_mount_stop(&m), 0);
	text = kt_read_file_ok(m.log, NULL);
	cr_assert(kt_contains(text, "keyfs: mounted on "), "%s", text);
	cr_assert(!kt_contains(text, "<5>"), "%s", text);
	free(text);
	free(other);
	free(env);
}

/* A production configuration with a master key and nothing to load. */
static void production_without_keys(struct kt_mount *m, const char *tag)
{
	int rc;

	kt_mount_config_full(m, tag, "mode = production\nrotate_interval = 0\n",
			     NULL);
	rc = kt_runf(NULL, NULL, "umask 077; %s genkey > '%s/master.key'",
		     kt_keyfs(), m->dir);
	cr_assert_eq(rc, 0);
}

Test(system, production_refusal_says_what_to_do)
{
	static struct kt_mount m;
	char *env, *text, *err;
	int rc;

	production_without_keys(&m, "sys-hint");
	rc = kt_runf(NULL, &err, "%s mount -f -c '%s'", kt_keyfs(), m.cfg);
	cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
	cr_assert(kt_contains(err, "keyfs: error: " HINT "\n"), "%s", err);
	free(err);

	/* Under journald, the same line at priority 3. */
	env = journal_stream_of(m.log);
	rc = kt_mount_start(&m, env);
	cr_assert_eq(rc, 1, "exit %d", rc);
	text = kt_read_file_ok(m.log, NULL);
	expect_prefixed(text);
	cr_assert(kt_contains(text, "<3>" HINT "\n"), "%s", text);
	free(text);
	free(env);
	cr_assert(!kt_is_mounted(m.mnt));
}

/* --- the daemon within the unit's limits --------------------------------- */

struct names {
	char **v;
	size_t n, cap;
};

static bool names_has(const struct names *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], name) == 0)
			return true;
	return false;
}

static void names_add(struct names *s, const char *name)
{
	if (names_has(s, name))
		return;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		cr_assert(s->v);
	}
	s->v[s->n++] = strdup(name);
}

static void names_free(struct names *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/*
 * `systemd-analyze syscall-filter`: every group ("@name") and its members
 * (system calls and groups), as lines "GROUP MEMBER".
 */
static char *filter_groups(void)
{
	char *out, *pairs, *group = NULL, *save = NULL;
	size_t len = 0;
	int rc;

	rc = kt_runf(&out, NULL, "systemd-analyze syscall-filter --no-pager");
	cr_assert_eq(rc, 0, "systemd-analyze syscall-filter failed");
	pairs = calloc(1, 3 * strlen(out) + 1);
	cr_assert(pairs);
	for (char *l = strtok_r(out, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		char *w = l + strspn(l, " \t");

		if (l[0] == '@') {
			free(group);
			group = strdup(l);
		} else if (group && *w && *w != '#') {
			len +=
			    (size_t)sprintf(pairs + len, "%s %s\n", group, w);
		}
	}
	free(group);
	free(out);
	return pairs;
}

/* Adds what `item` (a system call or "@group") stands for to set. */
static void filter_expand(const char *groups, const char *item,
			  struct names *set, int depth)
{
	size_t ilen = strlen(item);
	const char *l = groups;

	cr_assert(depth < 8, "groups nested too deep at %s", item);
	if (item[0] != '@') {
		names_add(set, item);
		return;
	}
	while ((l = strstr(l, item))) {
		if ((l == groups || l[-1] == '\n') && l[ilen] == ' ') {
			char member[128];

			sscanf(l + ilen + 1, "%127s", member);
			filter_expand(groups, member, set, depth + 1);
		}
		l += ilen;
	}
}

/*
 * The system calls the unit's SystemCallFilter= lines allow: the allow
 * lists, less the "~" lists (the unit gives allow lists first).
 */
static void unit_syscalls(const char *text, struct names *ret)
{
	char *values = unit_values(text, "SystemCallFilter"), *groups;
	struct names allow = {0}, deny = {0};
	char *save = NULL;

	groups = filter_groups();
	for (char *l = strtok_r(values, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		/* A line starting with "~" lists what it denies. */
		struct names *to = l[0] == '~' ? &deny : &allow;
		char *wsave = NULL;

		l += l[0] == '~';
		for (char *w = strtok_r(l, " ", &wsave); w;
		     w = strtok_r(NULL, " ", &wsave))
			filter_expand(groups, w, to, 0);
	}
	cr_assert(allow.n > 0, "the unit has no SystemCallFilter allow list");
	for (size_t i = 0; i < allow.n; i++)
		if (!names_has(&deny, allow.v[i]))
			names_add(ret, allow.v[i]);
	names_free(&allow);
	names_free(&deny);
	free(groups);
	free(values);
}

/*
 * Reads an strace -f log: every system call's name into calls, and the
 * family of every socket(2) into families ("AF_UNIX").
 */
static void trace_read(const char *path, struct names *calls,
		       struct names *families)
{
	FILE *f = fopen(path, "re");
	char line[4096];

	cr_assert(f, "no trace at %s", path);
	while (fgets(line, sizeof(line), f)) {
		char *p = line, name[64];
		size_t n;

		p += strspn(p, "0123456789");
		p += strspn(p, " ");
		n = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_");
		/* "<... read resumed>", "--- SIGTERM ...", "+++ exited": no
		 * call starts there. */
		if (n == 0 || n >= sizeof(name) || p[n] != '(')
			continue;
		memcpy(name, p, n);
		name[n] = 0;
		names_add(calls, name);
		if (strcmp(name, "socket") == 0) {
			char fam[32];

			if (sscanf(p + n + 1, "%31[A-Z0-9_]", fam) == 1)
				names_add(families, fam);
		}
	}
	fclose(f);
}

/* The unit's CapabilityBoundingSet= as setpriv's --bounding-set value. */
static char *unit_bounding_set(const char *text)
{
	char *values = unit_values(text, "CapabilityBoundingSet"), *out,
	     *save = NULL;
	size_t len;

	out = calloc(1, strlen(values) + 16);
	cr_assert(out);
	len = (size_t)sprintf(out, "-all");
	for (char *w = strtok_r(values, " \n", &save); w;
	     w = strtok_r(NULL, " \n", &save)) {
		cr_assert(strncmp(w, "CAP_", 4) == 0, "capability %s", w);
		len += (size_t)sprintf(out + len, ",+");
		for (w += 4; *w; w++)
			out[len++] = (char)tolower((unsigned char)*w);
	}
	free(values);
	return out;
}

static bool have(const char *program)
{
	return kt_runf(NULL, NULL, "command -v %s >/dev/null", program) == 0;
}

Test(system, daemon_stays_within_the_unit_limits)
{
	static struct kt_mount m;
	struct names allowed = {0}, calls = {0}, families = {0};
	char *text, *caps, *trace, *bounding, *err, *fam, *v;
	struct notify_sock ns;
	pid_t pid, daemon;
	int rc;

#ifdef __SANITIZE_ADDRESS__
	/* LeakSanitizer cannot work under strace (it needs ptrace). */
	cr_skip_test("strace and ASan do not mix");
#endif
	if (!have("strace") || !have("setpriv"))
		cr_skip_test("needs strace and setpriv");
	text = unit_text();
	kt_mount_config(&m, "sys-limits", "alert_command = cat > /dev/null\n",
			NULL);
	notify_bind(&ns, m.dir, false);
	trace = kt_path(m.dir, "trace.secret");
	caps = unit_bounding_set(text);
	cr_assert(asprintf(&bounding, "--bounding-set=%s", caps) > 0);
	{
		/* As the unit runs it: no capability beyond its bounding
		 * set, no_new_privs; strace -s 0 prints no buffer. */
		char *argv[] = {"setpriv", "--no-new-privs",
				bounding,  "--",
				"strace",  "-f",
				"-qq",	   "-s",
				"0",	   "-o",
				trace,	   (char *)kt_keyfs(),
				"mount",   "-f",
				"-c",	   m.cfg,
				NULL};

		pid = spawn(argv, m.log, ns.env, m.mnt);
	}
	v = notify_recv(&ns, NOTIFY_WAIT_MS, &daemon);
	cr_assert(v && strncmp(v, "READY=1\n", 8) == 0,
		  "the daemon did not start within the limits");
	free(v);
	track(daemon, NULL);

	/* What a day brings: reads, a rotation, a backup and a restore, a
	 * failed restore (alert_command runs), status, the counters. */
	v = kt_mread(&m, "derived/phi", NULL);
	cr_assert(v, "derived/phi: %s", strerror(errno));
	kt_runf(NULL, NULL, "cat '%s/current' '%s/status' >/dev/null", m.mnt,
		m.mnt);
	free(v);
	cr_assert_eq(kt_ctl(&m, NULL, &err, "rotate"), 0, "%s", err);
	free(err);
	cr_assert_eq(kt_ctl(&m, NULL, &err, "backup nightly"), 0, "%s", err);
	free(err);
	cr_assert_eq(kt_ctl(&m, NULL, &err, "restore nightly"), 0, "%s", err);
	free(err);
	cr_assert_neq(kt_ctl(&m, NULL, NULL, "restore nosuch"), 0);
	cr_assert_eq(kt_ctl(&m, NULL, NULL, "status"), 0);
	v = kt_mnames(&m, "backups");
	free(v);
	cr_assert(kill(daemon, SIGUSR1) == 0);
	kt_sleep_ms(200);
	cr_assert(kill(daemon, SIGTERM) == 0);
	rc = exit_status(pid, 30000);
	cr_assert_eq(rc, 0, "the daemon exited %d under the limits", rc);
	cr_assert(!kt_is_mounted(m.mnt));

	unit_syscalls(text, &allowed);
	trace_read(trace, &calls, &families);
	cr_assert(names_has(&calls, "mount") && names_has(&calls, "umount2"),
		  "the trace holds no mount and umount2");
	for (size_t i = 0; i < calls.n; i++)
		cr_expect(names_has(&allowed, calls.v[i]),
			  "%s is not allowed by the unit's SystemCallFilter=",
			  calls.v[i]);
	fam = unit_values(text, "RestrictAddressFamilies");
	for (size_t i = 0; i < families.n; i++)
		cr_expect(kt_contains(fam, families.v[i]),
			  "socket(%s, ...) but RestrictAddressFamilies=%s",
			  families.v[i], fam);
	cr_assert(names_has(&families, "AF_UNIX"), "no notification socket");
	unlink(trace);
	names_free(&allowed);
	names_free(&calls);
	names_free(&families);
	free(fam);
	free(bounding);
	free(caps);
	free(trace);
	free(text);
	close(ns.fd);
}

/* --- mount(8) and fstab -------------------------------------------------- */

/*
 * This test's process moves into a mount namespace of its own (private),
 * where `keyfs` in /usr/local/sbin is the built binary: mount(8) runs
 * mount.fuse3 without PATH, and /bin/sh's default path starts there.
 */
static void private_namespace_with_keyfs(void)
{
	char bin[PATH_MAX];

	cr_assert(realpath(kt_keyfs(), bin));
	cr_assert(unshare(CLONE_NEWNS) == 0, "unshare: %s (needs root)",
		  strerror(errno));
	cr_assert(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
	cr_assert(mount("tmpfs", "/usr/local/sbin", "tmpfs", MS_NOSUID,
			"size=64k,mode=0755") == 0,
		  "tmpfs on /usr/local/sbin: %s", strerror(errno));
	cr_assert(symlink(bin, "/usr/local/sbin/keyfs") == 0);
}

/* The mount's type and options in /proc/self/mounts, or NULL. */
static char *mount_entry(const char *mnt)
{
	FILE *f = setmntent("/proc/self/mounts", "re");
	char buf[8192], *found = NULL;
	struct mntent ent;

	cr_assert(f);
	while (!found && getmntent_r(f, &ent, buf, sizeof(buf)))
		if (strcmp(ent.mnt_dir, mnt) == 0)
			cr_assert(asprintf(&found, "%s %s", ent.mnt_type,
					   ent.mnt_opts) > 0);
	endmntent(f);
	return found;
}

/* The pid of the detached daemon serving cfg (its command line names it). */
static pid_t daemon_of(const char *cfg)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	char bin[PATH_MAX];
	pid_t found = 0;

	cr_assert(d && realpath(kt_keyfs(), bin));
	while (!found && (e = readdir(d))) {
		char path[PATH_MAX], exe[PATH_MAX], *cmd;
		size_t len;
		ssize_t n;

		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/exe", e->d_name);
		n = readlink(path, exe, sizeof(exe) - 1);
		if (n <= 0)
			continue;
		exe[n] = 0;
		if (strcmp(exe, bin) != 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		cmd = kt_read_file(path, &len);
		for (size_t i = 0; cmd && i + 1 < len; i++)
			if (!cmd[i])
				cmd[i] = ' ';
		if (cmd && kt_contains(cmd, cfg) && alive(atoi(e->d_name)))
			found = atoi(e->d_name);
		free(cmd);
	}
	closedir(d);
	return found;
}

/*
 * Asserts that a mount made by `mount_cmd` serves the tree, nosuid and
 * nodev, through a detached daemon, and that `umount MNT` ends it.
 * Returns mount's standard error (malloc'd).
 */
static char *mount_then_umount(struct kt_mount *m, const char *mount_cmd)
{
	char *err, *entry;
	pid_t pid;
	long v;
	int rc;

	rc = kt_runf(NULL, &err, "%s", mount_cmd);
	cr_assert_eq(rc, 0, "%s: exit %d: %s", mount_cmd, rc, err);
	entry = mount_entry(m->mnt);
	cr_assert(entry, "%s mounted nothing", mount_cmd);
	cr_assert(strncmp(entry, "fuse.keyfs ", 11) == 0, "%s", entry);
	cr_assert(kt_contains(entry, "nosuid") && kt_contains(entry, "nodev"),
		  "mounted %s", entry);
	free(entry);
	cr_assert(version_is(m, &v), "the tree does not answer");
	pid = daemon_of(m->cfg);
	cr_assert(pid > 0, "no daemon serves %s", m->cfg);
	track(pid, m->mnt);

	rc = kt_runf(NULL, NULL, "umount '%s'", m->mnt);
	cr_assert_eq(rc, 0, "umount failed");
	for (int i = 0; i < 750 && alive(pid); i++)
		kt_sleep_ms(20);
	cr_assert(!alive(pid), "the daemon outlived umount");
	cr_assert(!kt_is_mounted(m->mnt));
	return err;
}

Test(system, mount_t_fuse_keyfs_and_fstab)
{
	static struct kt_mount m;
	char *cmd, *err, *fstab, *line;

	private_namespace_with_keyfs();
	kt_mount_config(&m, "sys-fstab", NULL, NULL);

	/* mount -t fuse.keyfs CONFIG MNT: mount.fuse3 runs
	 * `keyfs CONFIG MNT -o rw,dev,suid`. */
	cr_assert(
	    asprintf(&cmd, "mount -t fuse.keyfs '%s' '%s'", m.cfg, m.mnt) > 0);
	err = mount_then_umount(&m, cmd);
	cr_assert(kt_contains(err, "-o dev ignored: keyfs always mounts "
				   "nosuid,nodev") &&
		      kt_contains(err, "-o suid ignored"),
		  "no warning for dev and suid: %s", err);
	free(err);
	free(cmd);

	/* The README's fstab line, with this test's paths. */
	fstab = kt_path(m.dir, "fstab");
	cr_assert(asprintf(&line,
			   "%s %s fuse.keyfs nosuid,nodev,noexec,nofail,"
			   "x-systemd.requires-mounts-for=/var/lib/keyfs 0 0\n",
			   m.cfg, m.mnt) > 0);
	kt_write_file(fstab, line, 0644);
	cr_assert(asprintf(&cmd, "mount -T '%s' '%s'", fstab, m.mnt) > 0);
	err = mount_then_umount(&m, cmd);
	cr_assert(!kt_contains(err, "ignored"), "a warning: %s", err);
	free(err);
	free(cmd);
	free(line);
	free(fstab);
}

Test(system, a_command_name_wins_over_a_file_of_that_name)
{
	static struct kt_mount m;
	char *dir = kt_tmpdir("sys-words"), *path, *err;
	int rc;

	kt_mount_config(&m, "sys-words-cfg", NULL, NULL);
	path = kt_path(dir, "genkey");
	kt_write_file(path, "[keyfs]\n", 0644);
	free(path);
	rc = kt_runf(NULL, &err, "cd '%s' && %s genkey >/dev/null", dir,
		     kt_keyfs());
	cr_assert_eq(rc, 0, "keyfs genkey beside a file named genkey: %s", err);
	free(err);

	/* Neither a command nor a file: unknown, and not echoed. */
	rc = kt_runf(NULL, &err, "cd '%s' && %s nosuchfile '%s'", dir,
		     kt_keyfs(), m.mnt);
	cr_assert_eq(rc, 2);
	cr_assert(kt_contains(err, "unknown command") &&
		      !kt_contains(err, "nosuchfile"),
		  "%s", err);
	free(err);
	/* The mount form needs its MOUNTPOINT. */
	rc = kt_runf(NULL, &err, "%s '%s'", kt_keyfs(), m.cfg);
	cr_assert_eq(rc, 2, "%s", err);
	cr_assert(kt_contains(err, "keyfs CONFIG MOUNTPOINT"), "%s", err);
	cr_assert(!kt_is_mounted(m.mnt));
	free(err);
	free(dir);
}
