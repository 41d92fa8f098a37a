// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/prctl.h>
#include <time.h>

#include "helpers.h"

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return v && *v ? v : fallback;
}

const char *kt_keyfs(void)
{
	return env_or("KEYFS_BIN", "build/fs/keyfs");
}

const char *kt_srcdir(void)
{
	return env_or("KEYFS_SRCDIR", ".");
}

char *kt_tmpdir(const char *tag)
{
	const char *root = env_or("KEYFS_TEST_TMP", "/tmp");
	char *path;

	mkdir(root, 0700);
	cr_assert(asprintf(&path, "%s/%s.XXXXXX", root, tag) > 0);
	cr_assert(mkdtemp(path) != NULL, "mkdtemp %s: %s", path,
		  strerror(errno));
	return path;
}

void kt_leak_record(const char *tag, const char *text, size_t len)
{
	const char *dir = getenv("KEYFS_TEST_LEAKDIR");
	char path[PATH_MAX];
	FILE *f;

	if (!dir || !*dir || !text || len == 0)
		return;
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/captured-%d.log", dir, (int)getpid());
	f = fopen(path, "a");
	if (!f)
		return;
	fprintf(f, "--- %s\n", tag);
	fwrite(text, 1, len, f);
	fputc('\n', f);
	fclose(f);
}

struct capture {
	char *buf;
	size_t len, cap;
};

static void capture_add(struct capture *c, const char *p, size_t n)
{
	if (c->len + n + 1 > c->cap) {
		c->cap = (c->len + n + 1) * 2;
		c->buf = realloc(c->buf, c->cap);
		cr_assert(c->buf);
	}
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	c->buf[c->len] = 0;
}

int kt_run(const char *cmd, const char *input, char **ret_out, char **ret_err)
{
	int in[2], out[2], errp[2], status;
	struct capture co = {0}, ce = {0};
	size_t in_len = input ? strlen(input) : 0, in_off = 0;
	pid_t pid;

	cr_assert(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0 &&
		  pipe2(errp, O_CLOEXEC) == 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(errp[1], 2);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(errp[1]);
	signal(SIGPIPE, SIG_IGN);
	if (in_len == 0) {
		close(in[1]);
		in[1] = -1;
	}
	capture_add(&co, "", 0);
	capture_add(&ce, "", 0);
	for (;;) {
		struct pollfd p[3] = {{out[0], POLLIN, 0},
				      {errp[0], POLLIN, 0},
				      {in[1], POLLOUT, 0}};
		char buf[4096];
		int open_fds = 0;

		if (out[0] >= 0)
			open_fds++;
		if (errp[0] >= 0)
			open_fds++;
		if (open_fds == 0)
			break;
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			int *fd = i == 0 ? &out[0] : &errp[0];
			ssize_t n;

			if (*fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			n = read(*fd, buf, sizeof(buf));
			if (n <= 0) {
				close(*fd);
				*fd = -1;
				p[i].fd = -1;
			} else {
				capture_add(i == 0 ? &co : &ce, buf, (size_t)n);
			}
		}
		if (in[1] >= 0 && (p[2].revents & (POLLOUT | POLLERR))) {
			ssize_t n =
			    write(in[1], input + in_off, in_len - in_off);

			if (n > 0)
				in_off += (size_t)n;
			if (n < 0 || in_off >= in_len) {
				close(in[1]);
				in[1] = -1;
			}
		}
		if (out[0] < 0)
			p[0].fd = -1;
		if (errp[0] < 0)
			p[1].fd = -1;
		if (in[1] < 0)
			p[2].fd = -1;
	}
	if (in[1] >= 0)
		close(in[1]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	/* stdout may carry keys by design (genkey, derive); stderr never. */
	kt_leak_record(cmd, ce.buf, ce.len);
	if (ret_out)
		*ret_out = co.buf;
	else
		free(co.buf);
	if (ret_err)
		*ret_err = ce.buf;
	else
		free(ce.buf);
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

int kt_runf(char **ret_out, char **ret_err, const char *fmt, ...)
{
	char *cmd;
	va_list ap;
	int r;

	va_start(ap, fmt);
	cr_assert(vasprintf(&cmd, fmt, ap) > 0);
	va_end(ap);
	r = kt_run(cmd, NULL, ret_out, ret_err);
	free(cmd);
	return r;
}

char *kt_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct capture c = {0};
	char buf[4096];
	size_t n;

	if (!f)
		return NULL;
	capture_add(&c, "", 0);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		capture_add(&c, buf, n);
	fclose(f);
	if (len)
		*len = c.len;
	return c.buf;
}

void kt_write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	size_t len = strlen(text);

	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	cr_assert(write(fd, text, len) == (ssize_t)len);
	cr_assert(fchmod(fd, mode) == 0);
	cr_assert(close(fd) == 0);
}

bool kt_contains(const char *haystack, const char *needle)
{
	return haystack && needle && strstr(haystack, needle) != NULL;
}

/* --- mounted trees -------------------------------------------------------- */

#define KT_MAX_MOUNTS 16
static struct kt_mount *started[KT_MAX_MOUNTS];

static void mount_prepare(struct kt_mount *m, const char *tag)
{
	memset(m, 0, sizeof(*m));
	m->dir = kt_tmpdir(tag);
	/* Other uids in the permission tests must reach the mountpoint. */
	cr_assert(chmod(m->dir, 0755) == 0);
	cr_assert(asprintf(&m->mnt, "%s/mnt", m->dir) > 0);
	cr_assert(asprintf(&m->cfg, "%s/keyfs.ini", m->dir) > 0);
	cr_assert(asprintf(&m->log, "%s/daemon.log", m->dir) > 0);
	cr_assert(asprintf(&m->state, "%s/state", m->dir) > 0);
	cr_assert(mkdir(m->mnt, 0755) == 0);
}

static void mount_write_config(struct kt_mount *m, const char *body,
			       const char *sections)
{
	char *text;

	cr_assert(asprintf(&text,
			   "[keyfs]\n"
			   "state_dir = %s\n"
			   "master_key_file = %s/master.key\n"
			   "mountpoint = %s\n"
			   "%s\n"
			   "%s\n",
			   m->state, m->dir, m->mnt, body ? body : "",
			   sections ? sections : "") > 0);
	kt_write_file(m->cfg, text, 0644);
	free(text);
}

void kt_mount_config(struct kt_mount *m, const char *tag,
		     const char *keyfs_lines, const char *sections)
{
	char *body;

	mount_prepare(m, tag);
	cr_assert(asprintf(&body, "mode = development\nrotate_interval = 0\n%s",
			   keyfs_lines ? keyfs_lines : "") > 0);
	mount_write_config(m, body, sections);
	free(body);
}

void kt_mount_config_full(struct kt_mount *m, const char *tag,
			  const char *keyfs_body, const char *sections)
{
	mount_prepare(m, tag);
	mount_write_config(m, keyfs_body, sections);
}

bool kt_is_mounted(const char *path)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char line[8192], dev[256], dir[4096];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%255s %4095s", dev, dir) == 2 &&
		    strcmp(dir, path) == 0)
			found = true;
	fclose(f);
	return found;
}

char *kt_mpath(struct kt_mount *m, const char *rel)
{
	char *p;

	cr_assert(asprintf(&p, "%s/%s", m->mnt, rel) > 0);
	return p;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

int kt_mount_start(struct kt_mount *m, const char *env)
{
	char *version = kt_mpath(m, "version");
	int status;
	pid_t pid;

	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		char *copy = env ? strdup(env) : NULL, *save = NULL;

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		for (char *w = copy ? strtok_r(copy, " ", &save) : NULL; w;
		     w = strtok_r(NULL, " ", &save))
			putenv(w);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(kt_keyfs(), "keyfs", "mount", "-f", "-c", m->cfg,
		      (char *)NULL);
		_exit(127);
	}
	m->pid = pid;
	for (int i = 0; i < KT_MAX_MOUNTS; i++) {
		if (!started[i]) {
			started[i] = m;
			break;
		}
	}
	for (int waited = 0; waited < 15000; waited += 20) {
		struct statvfs sv;
		struct stat st;

		if (waitpid(pid, &status, WNOHANG) == pid) {
			m->pid = 0;
			free(version);
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		}
		/* statfs reaches the daemon: a stale mount's caches do not. */
		if (kt_is_mounted(m->mnt) && statvfs(m->mnt, &sv) == 0 &&
		    stat(version, &st) == 0) {
			free(version);
			return 0;
		}
		sleep_ms(20);
	}
	free(version);
	return -1;
}

int kt_mount_stop(struct kt_mount *m)
{
	int status = 0;

	for (int i = 0; i < KT_MAX_MOUNTS; i++)
		if (started[i] == m)
			started[i] = NULL;
	if (m->pid <= 0)
		return -1;
	kill(m->pid, SIGTERM);
	for (int waited = 0; waited < 15000; waited += 20) {
		if (waitpid(m->pid, &status, WNOHANG) == m->pid) {
			m->pid = 0;
			break;
		}
		sleep_ms(20);
	}
	if (m->pid > 0) {
		kill(m->pid, SIGKILL);
		waitpid(m->pid, &status, 0);
		m->pid = 0;
		kt_runf(NULL, NULL, "fusermount3 -uz '%s'", m->mnt);
		cr_assert(false, "daemon did not exit on SIGTERM");
	}
	cr_assert(!kt_is_mounted(m->mnt), "still mounted after SIGTERM");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void kt_mount_cleanup_all(void)
{
	for (int i = 0; i < KT_MAX_MOUNTS; i++) {
		struct kt_mount *m = started[i];

		if (!m)
			continue;
		started[i] = NULL;
		if (m->pid > 0) {
			kill(m->pid, SIGTERM);
			for (int w = 0; w < 5000; w += 20) {
				if (waitpid(m->pid, NULL, WNOHANG) == m->pid)
					break;
				sleep_ms(20);
			}
			kill(m->pid, SIGKILL);
			waitpid(m->pid, NULL, 0);
			m->pid = 0;
		}
		if (kt_is_mounted(m->mnt))
			kt_runf(NULL, NULL, "fusermount3 -uz '%s'", m->mnt);
	}
}

char *kt_mread(struct kt_mount *m, const char *rel, size_t *len)
{
	char *p = kt_mpath(m, rel), *text = kt_read_file(p, len);

	free(p);
	return text;
}

int kt_mwrite(struct kt_mount *m, const char *rel, const char *text)
{
	char *p = kt_mpath(m, rel);
	int fd = open(p, O_WRONLY | O_CLOEXEC), r = 0;

	free(p);
	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		r = -errno;
	close(fd);
	return r;
}
