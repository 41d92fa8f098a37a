// SPDX-License-Identifier: MIT
/* The suites of the mounted tree share these: see mount_fixture.h. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "mount_fixture.h"

const char *const purposes[N_PURPOSES] = {"phi", "pii", "billing"};

/* pii keeps the default access (root:root 0400). */
static const char access_sections[] = "[access]\n"
				      "keys = 0:0 0400\n"
				      "status = 0:0 0444\n"
				      "backups = 0:2003 0440\n"
				      "audit = 0:2004 0440\n"
				      "[purpose phi]\n"
				      "access = 0:2001 0440\n"
				      "[purpose billing]\n"
				      "access = 1002:2002 0400\n";

#define MT_MAX_SECRETS 32
static void *secrets[MT_MAX_SECRETS];
static size_t n_secrets;

void *mt_secret(size_t len)
{
	void *p;

	/* sodium_malloc needs the page size sodium_init finds. */
	cr_assert(sodium_init() >= 0);
	p = sodium_malloc(len);
	cr_assert(p);
	cr_assert(n_secrets < MT_MAX_SECRETS);
	secrets[n_secrets++] = p;
	return p;
}

void mt_fini(void)
{
	kt_mount_cleanup_all();
	kt_tmpfs_cleanup();
	while (n_secrets > 0)
		sodium_free(secrets[--n_secrets]); /* wipes it */
}

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wipes and frees text that may hold a key. */
void free_secret(char *text, size_t len)
{
	if (!text)
		return;
	sodium_memzero(text, len);
	free(text);
}

/*
 * Mounts live in static storage: .fini (kt_mount_cleanup_all) runs after the
 * test function has returned, so they must outlive its stack.  Each test
 * runs in its own process, so the pool starts empty for each.
 */
struct kt_mount *mount_new(void)
{
	static struct kt_mount pool[8];
	static size_t used;

	cr_assert(used < sizeof(pool) / sizeof(pool[0]));
	cr_assert(sodium_init() >= 0);
	return &pool[used++];
}

void config_on(struct kt_mount *m, const char *mountpoint)
{
	char *text;

	cr_assert(asprintf(&text,
			   "[keyfs]\nmode = development\nrotate_interval = 0\n"
			   "state_dir = %s\nmaster_key_file = %s/master.key\n"
			   "mountpoint = %s\n",
			   m->state, m->dir, mountpoint) > 0);
	kt_write_file(m->cfg, text, 0644);
	free(text);
}

void start_ok(struct kt_mount *m)
{
	int r = kt_mount_start(m, NULL);

	cr_assert(r == 0, "keyfs mount did not come up (%d); log in %s", r,
		  m->log);
}

/* A started mount with the purposes and access sections above. */
struct kt_mount *start(const char *tag, const char *extra_lines)
{
	return start_sections(tag, extra_lines, NULL);
}

struct kt_mount *start_sections(const char *tag, const char *extra_lines,
				const char *extra_sections)
{
	struct kt_mount *m = mount_new();
	char *lines, *sections;

	cr_assert(asprintf(&lines, "%s%s", PURPOSES_LINE,
			   extra_lines ? extra_lines : "") > 0);
	cr_assert(asprintf(&sections, "%s%s", access_sections,
			   extra_sections ? extra_sections : "") > 0);
	kt_mount_config(m, tag, lines, sections);
	free(lines);
	free(sections);
	start_ok(m);
	return m;
}

/* open + read + close with plain syscalls (safe in forked children). */
ssize_t raw_read(const char *path, char *buf, size_t cap)
{
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), e;

	if (fd < 0)
		return -errno;
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			e = errno;
			close(fd);
			return -e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	return (ssize_t)len;
}

/* Reads a key file of the tree: exactly 44 bytes that validate. */
void read_key(struct kt_mount *m, const char *rel, uint8_t key[KEY_LEN])
{
	char err[KF_ERR_MAX] = "";
	size_t len = 0;
	char *text = kt_mread(m, rel, &len);
	int r;

	cr_assert(text, "read %s: %s", rel, strerror(errno));
	if (len != TEXT_LEN) {
		free_secret(text, len);
		cr_assert(false, "%s holds %zu bytes, not %d", rel, len,
			  TEXT_LEN);
	}
	r = kf_key_decode(text, len, key, err);
	free_secret(text, len);
	cr_assert(r == 0, "%s does not validate: %s", rel, err);
}

void derive(const uint8_t key[KEY_LEN], const char *purpose,
	    uint8_t out[KEY_LEN])
{
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_key_derive(key, purpose, out, err) == 0, "derive: %s",
		  err);
}

uint32_t read_version(struct kt_mount *m)
{
	return (uint32_t)kt_mversion(m);
}

json_t *read_status(struct kt_mount *m)
{
	size_t len = 0;
	char *text = kt_mread(m, "status", &len);
	json_error_t jerr;
	json_t *o;

	cr_assert(text, "read status: %s", strerror(errno));
	cr_assert(len > 1 && text[len - 1] == '\n' &&
		      memchr(text, '\n', len) == text + len - 1,
		  "status is not one line ending in a newline");
	o = json_loadb(text, len, 0, &jerr);
	cr_assert(o && json_is_object(o), "status is not a JSON object: %s",
		  jerr.text);
	free(text);
	return o;
}

int rotate(struct kt_mount *m)
{
	return kt_mwrite(m, "control/rotate", "1\n");
}

void rotate_ok(struct kt_mount *m)
{
	int r = rotate(m);

	cr_assert(r == 0, "write to control/rotate: %s", strerror(-r));
}

/* Sorted names in a directory of the tree, space-separated (no . and ..). */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *listing(struct kt_mount *m, const char *rel)
{
	char *path = kt_mpath(m, rel), *names[256], *out;
	size_t n = 0, len = 1;
	struct dirent *d;
	DIR *dir = opendir(path);

	cr_assert(dir, "opendir %s: %s", rel, strerror(errno));
	while ((d = readdir(dir))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		cr_assert(n < 256);
		names[n] = strdup(d->d_name);
		len += strlen(d->d_name) + 1;
		n++;
	}
	closedir(dir);
	free(path);
	qsort(names, n, sizeof(names[0]), cmp_str);
	out = calloc(1, len);
	cr_assert(out);
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(out, " ");
		strcat(out, names[i]);
		free(names[i]);
	}
	return out;
}

void expect_listing(struct kt_mount *m, const char *rel, const char *want)
{
	char *got = listing(m, rel);

	cr_expect_str_eq(got, want, "ls %s", rel);
	free(got);
}

/* The audit log's records (state_dir/audit.log) with event `event`. */
json_t *audit_records(struct kt_mount *m, const char *event)
{
	json_t *all = kt_audit_since(m, 0), *list = json_array(), *rec;
	size_t i;

	json_array_foreach(all, i, rec)
	{
		if (kt_record_is(rec, event, -1))
			json_array_append(list, rec);
	}
	json_decref(all);
	return list;
}

json_int_t jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	cr_assert(json_is_integer(v), "\"%s\" is not an integer", key);
	return json_integer_value(v);
}

/* The line after l's, or NULL. */
static const char *next_line(const char *l)
{
	l = strchr(l, '\n');
	return l ? l + 1 : NULL;
}

/* How many lines of text start with "keyfs: " what; *last gets the text
 * after it on the last one. */
static size_t count_lines(const char *text, const char *what, const char **last)
{
	size_t n = 0, wl = strlen(what);

	*last = NULL;
	for (const char *l = text; l && *l; l = next_line(l)) {
		if (strncmp(l, "keyfs: ", 7) == 0 &&
		    strncmp(l + 7, what, wl) == 0) {
			n++;
			*last = l + 7 + wl;
		}
	}
	return n;
}

char *daemon_line(struct kt_mount *m, const char *what)
{
	char *text = kt_read_file(m->log, NULL), *out = NULL;
	const char *last;
	size_t before = text ? count_lines(text, what, &last) : 0;

	free(text);
	cr_assert(m->pid > 0, "no daemon to signal");
	cr_assert(kill(m->pid, SIGUSR1) == 0, "SIGUSR1: %s", strerror(errno));
	for (int waited = 0; waited < 5000 && !out; waited += 10) {
		text = kt_read_file(m->log, NULL);
		if (text && count_lines(text, what, &last) > before &&
		    strchr(last, '\n'))
			out =
			    strndup(last, (size_t)(strchr(last, '\n') - last));
		free(text);
		if (!out)
			kt_sleep_ms(10);
	}
	return out;
}

unsigned long line_field(const char *line, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = line; p && *p; p = strchr(p, ' ')) {
		while (*p == ' ')
			p++;
		if (strncmp(p, name, nl) == 0 && p[nl] == '=')
			return strtoul(p + nl + 1, NULL, 10);
	}
	cr_assert(false, "no %s= in the daemon's line \"%s\"", name, line);
	return 0;
}

void drop_dentries(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);

	cr_assert(fd >= 0, "drop_caches: %s", strerror(errno));
	cr_assert(write(fd, "2\n", 2) == 2, "drop_caches: %s", strerror(errno));
	close(fd);
}
