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
#include <sys/wait.h>
#include <unistd.h>

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
	struct capture co = { 0 }, ce = { 0 };
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
		struct pollfd p[3] = { { out[0], POLLIN, 0 },
				       { errp[0], POLLIN, 0 },
				       { in[1], POLLOUT, 0 } };
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
			ssize_t n = write(in[1], input + in_off,
					  in_len - in_off);

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
	struct capture c = { 0 };
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
