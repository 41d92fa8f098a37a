// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mntent.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>
#include <sys/mount.h>
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

/* Runs fmt's expansion, as `setpriv WHO -- CMD` from / if who is set. */
static int vrun(char **ret_out, char **ret_err, const char *who,
		const char *fmt, va_list ap)
{
	char *cmd, *full = NULL;
	int r;

	cr_assert(vasprintf(&cmd, fmt, ap) > 0);
	if (who)
		cr_assert(asprintf(&full, "cd / && exec setpriv %s -- %s", who,
				   cmd) > 0);
	r = kt_run(full ? full : cmd, NULL, ret_out, ret_err);
	free(full);
	free(cmd);
	return r;
}

int kt_runf(char **ret_out, char **ret_err, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vrun(ret_out, ret_err, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int kt_run_as(const char *who, char **ret_out, char **ret_err, const char *fmt,
	      ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vrun(ret_out, ret_err, who, fmt, ap);
	va_end(ap);
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

char *kt_path(const char *dir, const char *name)
{
	char *p;

	cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

char *kt_read_file_ok(const char *path, size_t *len)
{
	char *text = kt_read_file(path, len);

	cr_assert(text, "cannot read %s", path);
	return text;
}

void kt_write_bytes(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	cr_assert(write(fd, data, len) == (ssize_t)len, "write %s: %s", path,
		  strerror(errno));
	cr_assert(close(fd) == 0);
}

void kt_copy_file(const char *src, const char *dst)
{
	size_t len = 0;
	char *data = kt_read_file_ok(src, &len);

	kt_write_bytes(dst, data, len, 0600);
	free(data);
}

void kt_drop_last_line(const char *path)
{
	size_t len = 0;
	char *buf = kt_read_file_ok(path, &len);

	cr_assert(len > 1 && buf[len - 1] == '\n', "%s: no last line", path);
	len--;
	while (len > 0 && buf[len - 1] != '\n')
		len--;
	kt_write_bytes(path, buf, len, 0600);
	free(buf);
}

off_t kt_file_size(const char *path)
{
	struct stat st;

	cr_assert(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
	return st.st_size;
}

char *kt_names(const char *dir)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);

	cr_assert(f);
	cr_assert(n >= 0, "scandir %s: %s", dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		if (strcmp(names[i]->d_name, ".") != 0 &&
		    strcmp(names[i]->d_name, "..") != 0)
			fprintf(f, "%s\n", names[i]->d_name);
		free(names[i]);
	}
	free(names);
	fclose(f);
	return out;
}

unsigned kt_seed(void)
{
	const char *given = getenv("KEYFS_TEST_SEED");
	unsigned long seed;
	char *end;

	if (given && *given) {
		errno = 0;
		seed = strtoul(given, &end, 10);
		cr_assert(errno == 0 && *end == 0 && seed <= UINT_MAX,
			  "KEYFS_TEST_SEED is not a number: \"%s\"", given);
	} else {
		seed = ((unsigned long)time(NULL) ^
			((unsigned long)getpid() << 16)) &
		       UINT_MAX;
	}
	fprintf(stderr, "%s::%s: seed %lu (KEYFS_TEST_SEED=%lu replays it)\n",
		criterion_current_test->category, criterion_current_test->name,
		seed, seed);
	srand((unsigned)seed);
	return (unsigned)seed;
}

void kt_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int kt_wait_child(pid_t pid, int ms)
{
	int status;

	for (int waited = 0; waited <= ms; waited += 20) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return status;
		kt_sleep_ms(20);
	}
	return -1;
}

static char *tmpfs_dir;

const char *kt_tmpfs(const char *tag, const char *size)
{
	char *opts;

	free(tmpfs_dir);
	tmpfs_dir = kt_tmpdir(tag);
	cr_assert(asprintf(&opts, "size=%s,mode=0700", size) > 0);
	cr_assert(
	    mount("tmpfs", tmpfs_dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) == 0,
	    "mount tmpfs on %s: %s", tmpfs_dir, strerror(errno));
	free(opts);
	return tmpfs_dir;
}

void kt_tmpfs_cleanup(void)
{
	if (tmpfs_dir)
		umount2(tmpfs_dir, MNT_DETACH);
}

/* --- audit records -------------------------------------------------------- */

json_t *kt_audit_read(const char *path, size_t from)
{
	size_t len = 0;
	char *text = kt_read_file_ok(path, &len), *p;
	json_t *all = json_array();

	cr_assert(len >= from, "audit log shrank");
	cr_assert(len == 0 || text[len - 1] == '\n',
		  "the audit log does not end with a newline");
	for (p = text + from; *p;) {
		char *nl = strchr(p, '\n');
		json_error_t jerr;
		json_t *rec;

		cr_assert(nl, "the audit log holds a NUL byte");
		*nl = 0;
		rec = json_loads(p, 0, &jerr);
		cr_assert(json_is_object(rec),
			  "audit line is not a JSON object: %s", jerr.text);
		json_array_append_new(all, rec);
		p = nl + 1;
	}
	free(text);
	return all;
}

const char *kt_str_of(json_t *o, const char *field)
{
	const char *s = json_string_value(json_object_get(o, field));

	return s ? s : "";
}

bool kt_record_is(json_t *rec, const char *event, int success)
{
	json_t *ok = json_object_get(rec, "success");

	if (strcmp(kt_str_of(rec, "event"), event) != 0)
		return false;
	return success < 0 ||
	       (json_is_boolean(ok) && json_is_true(ok) == (success > 0));
}

size_t kt_count_records(json_t *recs, const char *event, int success)
{
	size_t i, n = 0;
	json_t *rec;

	json_array_foreach(recs, i, rec)
	{
		if (kt_record_is(rec, event, success))
			n++;
	}
	return n;
}

json_t *kt_find_record(json_t *recs, const char *event, int success)
{
	size_t i;
	json_t *rec;

	json_array_foreach(recs, i, rec)
	{
		if (kt_record_is(rec, event, success))
			return rec;
	}
	return NULL;
}

bool kt_records_contain(json_t *recs, const void *needle, size_t len)
{
	size_t i;
	json_t *rec;
	bool found = false;

	json_array_foreach(recs, i, rec)
	{
		json_t *copy = json_deep_copy(rec);
		char *s;

		json_object_del(copy, "chain");
		s = json_dumps(copy, JSON_COMPACT);
		cr_assert(s);
		found = found || memmem(s, strlen(s), needle, len) != NULL;
		free(s);
		json_decref(copy);
	}
	return found;
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
	/* Usage-aware retire is its own suites' (keysets): off elsewhere. */
	cr_assert(asprintf(&body,
			   "mode = development\nrotate_interval = 0\n%s%s",
			   keyfs_lines && strstr(keyfs_lines, "usage_window")
			       ? ""
			       : "usage_window = 0\n",
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
	FILE *f = setmntent("/proc/self/mounts", "re");
	char buf[8192];
	struct mntent ent;
	bool found = false;

	if (!f)
		return false;
	/* getmntent decodes the octal escapes of spaces and tabs. */
	while (!found && getmntent_r(f, &ent, buf, sizeof(buf)))
		found = strcmp(ent.mnt_dir, path) == 0;
	endmntent(f);
	return found;
}

void kt_unmount(const char *path)
{
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execlp("fusermount3", "fusermount3", "-uz", "--", path,
		       (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

char *kt_mpath(struct kt_mount *m, const char *rel)
{
	char *p;

	cr_assert(asprintf(&p, "%s/%s", m->mnt, rel) > 0);
	return p;
}

/* The N > 0 of text ("N\n", len bytes), or -1. */
static long version_of(const char *text, size_t len)
{
	char *end;
	long v;

	if (len < 2 || text[0] < '1' || text[0] > '9')
		return -1;
	errno = 0;
	v = strtol(text, &end, 10);
	return errno == 0 && end == text + len - 1 && *end == '\n' ? v : -1;
}

/* Whether the file at path opens and reads "N\n". */
static bool version_reads(const char *path)
{
	char buf[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 && version_of(buf, (size_t)n) > 0;
}

int kt_mount_start(struct kt_mount *m, const char *env)
{
	return kt_mount_start_with(m, env, NULL);
}

static int mount_start(struct kt_mount *m, const char *env,
		       void (*in_child)(void), const char *const *wrapper,
		       const char *bin);

int kt_mount_start_with(struct kt_mount *m, const char *env,
			void (*in_child)(void))
{
	return mount_start(m, env, in_child, NULL, kt_keyfs());
}

int kt_mount_start_prog(struct kt_mount *m, const char *env,
			const char *const *wrapper, const char *bin)
{
	return mount_start(m, env, NULL, wrapper, bin ? bin : kt_keyfs());
}

static int mount_start(struct kt_mount *m, const char *env,
		       void (*in_child)(void), const char *const *wrapper,
		       const char *bin)
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
		if (in_child)
			in_child();
		if (wrapper) {
			const char *argv[32];
			int n = 0;

			while (wrapper[n] && n < 26) {
				argv[n] = wrapper[n];
				n++;
			}
			argv[n++] = bin;
			argv[n++] = "mount";
			argv[n++] = "-f";
			argv[n++] = "-c";
			argv[n++] = m->cfg;
			argv[n] = NULL;
			execvp(argv[0], (char *const *)argv);
		} else {
			execl(bin, "keyfs", "mount", "-f", "-c", m->cfg,
			      (char *)NULL);
		}
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

		if (waitpid(pid, &status, WNOHANG) == pid) {
			m->pid = 0;
			free(version);
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		}
		/* statfs and a read of version reach the daemon: a stale
		 * mount's caches may answer a stat, never these. */
		if (kt_is_mounted(m->mnt) && statvfs(m->mnt, &sv) == 0 &&
		    version_reads(version)) {
			free(version);
			return 0;
		}
		kt_sleep_ms(20);
	}
	free(version);
	return -1;
}

size_t kt_archives_failing(struct kt_mount *m, const char *cfg, size_t min)
{
	char *dir = kt_path(m->state, "backups"), *names = kt_names(dir);
	char *tok, *save = NULL, *err = NULL;
	size_t bad = 0, n = 0;

	for (tok = strtok_r(names, "\n", &save); tok;
	     tok = strtok_r(NULL, "\n", &save), n++) {
		if (kt_runf(NULL, &err, "%s backup verify '%s/%s' -c '%s'",
			    kt_keyfs(), dir, tok, cfg) != 0)
			bad++;
		free(err);
		err = NULL;
	}
	cr_assert(n >= min, "expected %zu archives or more, found %zu", min, n);
	free(names);
	free(dir);
	return bad;
}

void kt_rekey_killed(const char *cfg, const char *key, long delay_us)
{
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execl(kt_keyfs(), "keyfs", "rekey", "--new-master", key, "-c",
		      cfg, (char *)NULL);
		_exit(127);
	}
	kt_sleep_ms(0);
	if (delay_us > 0)
		usleep((useconds_t)delay_us);
	kill(pid, SIGKILL);
	cr_assert(waitpid(pid, NULL, 0) == pid);
}

int kt_dgram_bind(const char *dir, char **ret_path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char *path = kt_path(dir, "log");
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	cr_assert(strlen(path) < sizeof(a.sun_path), "%s is too long", path);
	strcpy(a.sun_path, path);
	unlink(path);
	cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
		  "bind %s: %s", path, strerror(errno));
	*ret_path = path;
	return fd;
}

ssize_t kt_dgram_receive(int fd, char *buf, size_t cap, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	ssize_t n;

	if (poll(&p, 1, ms) != 1)
		return -1;
	n = recv(fd, buf, cap - 1, 0);
	if (n >= 0)
		buf[n] = 0;
	return n;
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
		kt_sleep_ms(20);
	}
	if (m->pid > 0) {
		kill(m->pid, SIGKILL);
		waitpid(m->pid, &status, 0);
		m->pid = 0;
		kt_unmount(m->mnt);
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
				kt_sleep_ms(20);
			}
			kill(m->pid, SIGKILL);
			waitpid(m->pid, NULL, 0);
			m->pid = 0;
		}
		if (kt_is_mounted(m->mnt))
			kt_unmount(m->mnt);
	}
}

char *kt_mread(struct kt_mount *m, const char *rel, size_t *len)
{
	char *p = kt_mpath(m, rel), *text = kt_read_file(p, len);

	free(p);
	return text;
}

char *kt_mstatus_keys(struct kt_mount *m)
{
	char *text = kt_mread(m, "status", NULL), *out;
	json_error_t e;
	json_t *o = text ? json_loads(text, 0, &e) : NULL;

	free(text);
	if (!o)
		return NULL;
	json_object_del(o, "audit");
	json_object_del(o, "usage"); /* every key read changes it */
	out = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
	json_decref(o);
	return out;
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

int kt_mwrite_raw(struct kt_mount *m, const char *rel, const void *buf,
		  size_t len)
{
	char *p = kt_mpath(m, rel);
	int fd = open(p, O_WRONLY | O_CLOEXEC), r = 0;
	ssize_t n;

	free(p);
	if (fd < 0)
		return -errno;
	n = write(fd, buf, len);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != len)
		r = -EIO; /* a short write is no answer either */
	close(fd);
	return r;
}

int kt_ctl(struct kt_mount *m, char **ret_out, char **ret_err, const char *args)
{
	return kt_runf(ret_out, ret_err, "%s ctl %s --mount '%s'", kt_keyfs(),
		       args, m->mnt);
}

bool kt_mexists(struct kt_mount *m, const char *rel)
{
	char *p = kt_mpath(m, rel);
	struct stat st;
	bool ok = stat(p, &st) == 0;

	free(p);
	return ok;
}

char *kt_mnames(struct kt_mount *m, const char *rel)
{
	char *p = kt_mpath(m, rel), *s = kt_names(p);

	free(p);
	return s;
}

long kt_mversion(struct kt_mount *m)
{
	size_t len = 0;
	char *text = kt_mread(m, "version", &len);
	long v;

	cr_assert(text, "cannot read version: %s", strerror(errno));
	v = version_of(text, len);
	cr_assert(v > 0, "version is not \"N\\n\": \"%s\"", text);
	free(text);
	return v;
}

size_t kt_audit_size(struct kt_mount *m)
{
	char *p = kt_path(m->state, "audit.log");
	struct stat st;
	size_t n = stat(p, &st) == 0 ? (size_t)st.st_size : 0;

	free(p);
	return n;
}

json_t *kt_audit_since(struct kt_mount *m, size_t from)
{
	char *p = kt_path(m->state, "audit.log");
	json_t *all = kt_audit_read(p, from);

	free(p);
	return all;
}

void kt_mount_start_ok(struct kt_mount *m)
{
	int r = kt_mount_start(m, NULL);

	cr_assert(r == 0, "keyfs mount did not come up (%d); see %s", r,
		  m->log);
}

char *kt_genkey_file(const char *dir, const char *name)
{
	char *out = NULL, *path = kt_path(dir, name);

	cr_assert(kt_runf(&out, NULL, "%s genkey", kt_keyfs()) == 0);
	kt_write_file(path, out, 0600);
	free(out);
	return path;
}

char *kt_readme_python(const char *marker)
{
	char *path = kt_path(kt_srcdir(), "README.md");
	char *text = kt_read_file_ok(path, NULL), *start, *end = NULL, *code;
	char fence[64];
	size_t indent = 0, out = 0;

	for (start = strstr(text, "```python\n"); start;
	     start = strstr(start + 1, "```python\n")) {
		/* A block in a list item is indented: so are its lines. */
		for (indent = 0; start - indent > text &&
				 start[-(ptrdiff_t)indent - 1] == ' ';
		     indent++)
			;
		cr_assert(indent < 16, "a ```python block indented %zu",
			  indent);
		snprintf(fence, sizeof(fence), "\n%*s```", (int)indent, "");
		end = strstr(start, fence);
		cr_assert(end, "an unclosed ```python block in README.md");
		if (memmem(start, (size_t)(end - start), marker,
			   strlen(marker)))
			break;
	}
	cr_assert(start, "README.md has no ```python block with \"%s\"",
		  marker);
	start += strlen("```python\n");
	code = calloc(1, (size_t)(end - start) + 2);
	cr_assert(code);
	/* Each line without the block's indentation (blank lines have none). */
	for (char *line = start; line <= end;) {
		char *nl = memchr(line, '\n', (size_t)(end - line) + 1);
		size_t len = (size_t)(nl - line);

		if (len >= indent) {
			memcpy(code + out, line + indent, len - indent);
			out += len - indent;
		}
		code[out++] = '\n';
		line = nl + 1;
	}
	free(text);
	free(path);
	return code;
}
