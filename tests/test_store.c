// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "helpers.h"
#include "store.h"

static void init(void)
{
	cr_assert(sodium_init() >= 0);
}

TestSuite(store, .init = init);

static const uint8_t payload[] = "the encoded keyring and audit anchor";
#define PAYLOAD_LEN (sizeof(payload) - 1)

static char *state_path(const char *dir)
{
	char *p = kf_path_join(dir, KF_STORE_FILE);

	cr_assert_not_null(p);
	return p;
}

/* A fresh state dir holding a state file of `payload` under key. */
static char *saved_state(const char *tag, const uint8_t key[32])
{
	char *dir = kt_tmpdir(tag);
	char err[KF_ERR_MAX] = "";

	cr_assert(kf_store_save(dir, key, payload, PAYLOAD_LEN, err) == 0,
		  "save: %s", err);
	return dir;
}

/* Names in dir other than "." and ".."; asserts each is allowed. */
static int dir_entries(const char *dir, bool temps_allowed)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		n++;
		if (!strcmp(e->d_name, KF_STORE_FILE))
			continue;
		cr_assert(temps_allowed &&
			      !strncmp(e->d_name, ".keyring.tmp.", 13),
			  "unexpected file %s in %s", e->d_name, dir);
	}
	closedir(d);
	return n;
}

/* Loads dir, expecting -EBADMSG and a reason containing `want`. */
static void load_fails(const char *dir, const uint8_t key[32], const char *want,
		       const char *what)
{
	uint8_t *plain = NULL;
	size_t len = 0;
	char err[KF_ERR_MAX] = "";
	int r = kf_store_load(dir, key, &plain, &len, err);

	cr_assert_eq(r, -EBADMSG, "%s: load returned %d (%s)", what, r, err);
	cr_assert(kt_contains(err, want), "%s: reason \"%s\", wanted \"%s\"",
		  what, err, want);
	cr_assert_null(plain, "%s: plaintext returned", what);
}

Test(store, save_load_round_trip)
{
	uint8_t key[32], *plain = NULL;
	char err[KF_ERR_MAX] = "";
	size_t len = 0;
	char *dir;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-rt", key);
	cr_assert(kf_store_load(dir, key, &plain, &len, err) == 0, "%s", err);
	cr_assert_eq(len, PAYLOAD_LEN);
	cr_assert(memcmp(plain, payload, len) == 0, "payload changed");
	sodium_free(plain);

	/* Empty plaintext is a valid state too. */
	cr_assert(kf_store_save(dir, key, NULL, 0, err) == 0, "%s", err);
	cr_assert(kf_store_load(dir, key, &plain, &len, err) == 0, "%s", err);
	cr_assert_eq(len, 0);
	sodium_free(plain);
	cr_assert_eq(dir_entries(dir, false), 1, "save left a temp file");
	free(dir);
}

Test(store, file_layout_and_mode)
{
	uint8_t key[32];
	char *dir, *path, *data;
	struct stat st;
	size_t size;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-mode", key);
	path = state_path(dir);
	cr_assert(stat(path, &st) == 0);
	cr_assert_eq(st.st_mode & 07777, 0600, "mode %o",
		     (unsigned)(st.st_mode & 07777));
	data = kt_read_file(path, &size);
	cr_assert_eq(size, 56 + PAYLOAD_LEN + 16);
	cr_assert(memcmp(data, "KEYFSST\0\1\0\0\0", 12) == 0,
		  "magic and format not as documented");
	cr_assert_eq((uint8_t)data[12], PAYLOAD_LEN);
	cr_assert(memmem(data, size, payload, PAYLOAD_LEN) == NULL,
		  "plaintext visible in the state file");
	free(data);
	free(path);
	free(dir);
}

Test(store, two_saves_use_different_nonces)
{
	uint8_t key[32];
	char *dir, *path, *a, *b;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-nonce", key);
	path = state_path(dir);
	a = kt_read_file(path, NULL);
	cr_assert(kf_store_save(dir, key, payload, PAYLOAD_LEN, NULL) == 0);
	b = kt_read_file(path, NULL);
	cr_assert(memcmp(a + 32, b + 32, 24) != 0, "nonce reused");
	free(a);
	free(b);
	free(path);
	free(dir);
}

Test(store, missing_file_is_enoent)
{
	uint8_t key[32] = {0}, *plain = NULL;
	size_t len;
	char *dir = kt_tmpdir("store-none");

	cr_assert_eq(kf_store_load(dir, key, &plain, &len, NULL), -ENOENT);
	free(dir);
}

Test(store, wrong_master_key_is_named)
{
	uint8_t key[32], other[32];
	char *dir;

	randombytes_buf(key, sizeof(key));
	randombytes_buf(other, sizeof(other));
	dir = saved_state("store-wrong", key);
	load_fails(dir, other, "wrong master key or corrupted header",
		   "other key");
	free(dir);
}

Test(store, truncated_file_is_refused)
{
	uint8_t key[32];
	char *dir, *path, *data;
	size_t size;
	size_t cuts[] = {0, 1, 7, 8, 12, 55, 56, 71, 72, 73, 0};
	char want[64];

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-trunc", key);
	path = state_path(dir);
	data = kt_read_file(path, &size);
	cuts[sizeof(cuts) / sizeof(cuts[0]) - 1] = size - 1;
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		size_t n = cuts[i];

		kt_write_bytes(path, data, n, 0666);
		if (n < 72)
			snprintf(want, sizeof(want), "truncated (%zu bytes)",
				 n);
		else
			snprintf(want, sizeof(want),
				 "truncated (%zu bytes, expected %zu)", n,
				 size);
		load_fails(dir, key, want, "cut");
	}
	free(data);
	free(path);
	free(dir);
}

Test(store, trailing_data_is_refused)
{
	uint8_t key[32];
	char *dir, *path, *data;
	size_t size;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-trail", key);
	path = state_path(dir);
	data = kt_read_file(path, &size);
	data = realloc(data, size + 1);
	data[size] = '\n';
	kt_write_bytes(path, data, size + 1, 0666);
	load_fails(dir, key, "has trailing data", "one extra byte");
	free(data);
	free(path);
	free(dir);
}

Test(store, foreign_file_is_refused)
{
	uint8_t key[32], rnd[200];
	char *dir = kt_tmpdir("store-foreign"), *path = state_path(dir);

	randombytes_buf(key, sizeof(key));
	kt_write_file(path,
		      "[keyfs]\nmode = production\nstate_dir = /var/lib/keyfs\n"
		      "master_key_file = /etc/keyfs/master.key\n",
		      0600);
	load_fails(dir, key, "not a keyfs state file", "ini text");
	kt_write_file(path, "hello\n", 0600);
	load_fails(dir, key, "not a keyfs state file", "short text");
	randombytes_buf(rnd, sizeof(rnd));
	rnd[0] = 'x'; /* never the magic by chance */
	kt_write_bytes(path, rnd, sizeof(rnd), 0666);
	load_fails(dir, key, "not a keyfs state file", "random bytes");
	free(path);
	free(dir);
}

Test(store, unsupported_format_is_named)
{
	uint8_t key[32];
	char *dir, *path, *data;
	size_t size;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-fmt", key);
	path = state_path(dir);
	data = kt_read_file(path, &size);
	data[8] = 2;
	kt_write_bytes(path, data, size, 0666);
	load_fails(dir, key, "unsupported format 2", "format 2");
	free(data);
	free(path);
	free(dir);
}

Test(store, oversized_file_is_refused)
{
	uint8_t key[32], *plain = NULL;
	char *dir = kt_tmpdir("store-big"), *path = state_path(dir);
	char err[KF_ERR_MAX] = "";
	uint8_t *big = calloc(1, KF_STORE_MAX + 1);
	size_t len;

	randombytes_buf(key, sizeof(key));
	memcpy(big, "KEYFSST", 8);
	kt_write_bytes(path, big, KF_STORE_MAX + 1, 0666);
	cr_assert_eq(kf_store_load(dir, key, &plain, &len, err), -EFBIG, "%s",
		     err);
	cr_assert_eq(kf_store_save(dir, key, big, KF_STORE_MAX, err), -EFBIG);
	cr_assert_eq(dir_entries(dir, false), 1);
	free(big);
	free(path);
	free(dir);
}

static const char *expected_reason(size_t pos)
{
	if (pos < 8)
		return "not a keyfs state file";
	if (pos < 12)
		return "unsupported format";
	if (pos < 16)
		return NULL; /* truncated or trailing data */
	if (pos < 32)
		return "wrong master key or corrupted header";
	return "authentication failed (corrupted or tampered)";
}

Test(store, every_bit_flip_is_detected_and_file_untouched)
{
	uint8_t key[32];
	char *dir, *copy, *cpath, *data, *mut, *after;
	size_t size, asize;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-flip", key);
	copy = kt_tmpdir("store-flip-copy");
	cpath = state_path(copy);
	{
		char *p = state_path(dir);

		data = kt_read_file(p, &size);
		free(p);
	}
	mut = malloc(size);
	for (size_t pos = 0; pos < size; pos++) {
		for (int bit = 0; bit < 8; bit += 7) {
			const char *want = expected_reason(pos);
			uint8_t *plain = NULL;
			char err[KF_ERR_MAX] = "";
			size_t len;
			int r;

			memcpy(mut, data, size);
			mut[pos] ^= (char)(1u << ((pos + (size_t)bit) % 8));
			kt_write_bytes(cpath, mut, size, 0666);
			r = kf_store_load(copy, key, &plain, &len, err);
			cr_assert_eq(r, -EBADMSG,
				     "flip at %zu loaded (r=%d, %s)", pos, r,
				     err);
			if (want)
				cr_assert(kt_contains(err, want),
					  "flip at %zu: \"%s\", wanted \"%s\"",
					  pos, err, want);
			else
				cr_assert(kt_contains(err, "truncated (") ||
					      kt_contains(err, "has trailing "
							       "data"),
					  "flip at %zu: \"%s\"", pos, err);
			after = kt_read_file(cpath, &asize);
			cr_assert(asize == size && !memcmp(after, mut, size),
				  "load changed the file (flip at %zu)", pos);
			free(after);
		}
	}
	cr_assert_eq(dir_entries(copy, false), 1, "load created files");
	free(mut);
	free(data);
	free(cpath);
	free(copy);
	free(dir);
}

Test(store, prepare_then_discard_keeps_old_file)
{
	uint8_t key[32], *plain = NULL;
	struct kf_store_pending p;
	char err[KF_ERR_MAX] = "", *tmp;
	static const uint8_t other[] = "another state";
	struct stat st;
	size_t len;
	char *dir;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-discard", key);
	cr_assert(kf_store_prepare(dir, key, other, sizeof(other), &p, err) ==
		      0,
		  "%s", err);
	cr_assert(!strncmp(p.tmp_name, ".keyring.tmp.", 13), "temp name %s",
		  p.tmp_name);
	tmp = kf_path_join(dir, p.tmp_name);
	cr_assert(stat(tmp, &st) == 0, "prepare wrote no temp file");
	cr_assert_eq(st.st_mode & 07777, 0600);
	free(tmp);
	cr_assert_eq(dir_entries(dir, true), 2);
	/* Nothing visible before commit. */
	cr_assert(kf_store_load(dir, key, &plain, &len, err) == 0, "%s", err);
	cr_assert(len == PAYLOAD_LEN && !memcmp(plain, payload, len),
		  "prepare changed the state");
	sodium_free(plain);

	kf_store_discard(dir, &p);
	cr_assert_eq(dir_entries(dir, false), 1, "discard left the temp");
	cr_assert(kf_store_load(dir, key, &plain, &len, err) == 0, "%s", err);
	cr_assert(len == PAYLOAD_LEN && !memcmp(plain, payload, len),
		  "discard changed the state");
	sodium_free(plain);
	kf_store_discard(dir, &p); /* twice is harmless */
	free(dir);
}

Test(store, prepare_then_commit_replaces)
{
	uint8_t key[32], *plain = NULL;
	struct kf_store_pending p;
	char err[KF_ERR_MAX] = "";
	static const uint8_t other[] = "another state";
	size_t len;
	char *dir;

	randombytes_buf(key, sizeof(key));
	dir = saved_state("store-commit", key);
	cr_assert(kf_store_prepare(dir, key, other, sizeof(other), &p, err) ==
		      0,
		  "%s", err);
	cr_assert(kf_store_commit(dir, &p, err) == 0, "%s", err);
	cr_assert_eq(dir_entries(dir, false), 1, "commit left the temp");
	cr_assert(kf_store_load(dir, key, &plain, &len, err) == 0, "%s", err);
	cr_assert(len == sizeof(other) && !memcmp(plain, other, len),
		  "commit did not replace the state");
	sodium_free(plain);
	/* A second commit of the same pending save is refused. */
	cr_assert_eq(kf_store_commit(dir, &p, NULL), -EINVAL);
	free(dir);
}

Test(store, save_into_missing_dir_fails_cleanly)
{
	uint8_t key[32] = {1};
	char err[KF_ERR_MAX] = "";
	char *root = kt_tmpdir("store-nodir"),
	     *dir = kf_path_join(root, "gone");
	struct kf_store_pending p;
	struct stat st;

	cr_assert_eq(kf_store_save(dir, key, payload, PAYLOAD_LEN, err),
		     -ENOENT);
	cr_assert(err[0], "no reason given");
	cr_assert_eq(kf_store_prepare(dir, key, payload, PAYLOAD_LEN, &p, NULL),
		     -ENOENT);
	cr_assert_eq(p.tmp_name[0], 0);
	cr_assert(stat(dir, &st) < 0 && errno == ENOENT, "dir was created");
	cr_assert_eq(dir_entries(root, false), 0);
	free(dir);
	free(root);
}

/* Payloads of very different sizes, so a torn write cannot pass. */
static uint8_t crash_a[100], crash_b[5000];

static void saver(const char *dir, const uint8_t key[32], int ready_fd)
{
	for (unsigned long i = 0;; i++) {
		const uint8_t *p = i % 2 ? crash_a : crash_b;
		size_t n = i % 2 ? sizeof(crash_a) : sizeof(crash_b);

		if (kf_store_save(dir, key, p, n, NULL) < 0)
			_exit(3);
		if (i == 0) {
			(void)!write(ready_fd, "x", 1);
			close(ready_fd);
		}
	}
}

Test(store, kill_during_save_leaves_old_or_new)
{
	uint8_t key[32];
	char *dir = kt_tmpdir("store-crash");
	int seen_a = 0, seen_b = 0;

	randombytes_buf(key, sizeof(key));
	memset(crash_a, 'a', sizeof(crash_a));
	memset(crash_b, 'b', sizeof(crash_b));
	cr_assert(kf_store_save(dir, key, crash_a, sizeof(crash_a), NULL) == 0);
	kt_seed();
	for (int iter = 0; iter < 30; iter++) {
		struct timespec ts = {0, (long)(rand() % 8000 + 500) * 1000};
		uint8_t *plain = NULL;
		char err[KF_ERR_MAX] = "", c;
		int fds[2], status;
		size_t len;
		pid_t pid;

		cr_assert(pipe(fds) == 0);
		pid = fork();
		cr_assert(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			saver(dir, key, fds[1]);
		}
		close(fds[1]);
		/* Wait for one complete save, then kill at a random time. */
		cr_assert_eq(read(fds[0], &c, 1), 1, "saver failed");
		close(fds[0]);
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFSIGNALED(status), "saver exited on its own");

		cr_assert(kf_store_load(dir, key, &plain, &len, err) == 0,
			  "iteration %d: %s", iter, err);
		if (len == sizeof(crash_a) && !memcmp(plain, crash_a, len))
			seen_a++;
		else if (len == sizeof(crash_b) && !memcmp(plain, crash_b, len))
			seen_b++;
		else
			cr_assert_fail("iteration %d: state is neither payload",
				       iter);
		sodium_free(plain);
		dir_entries(dir, true);
	}
	cr_assert_eq(seen_a + seen_b, 30);
	free(dir);
}

/* The file store behind struct kf_store_ops, the manager's only way in. */
Test(store, file_store_through_its_ops)
{
	uint8_t key[KF_STORE_KEY_BYTES], *plain = NULL;
	static const uint8_t other[] = "another state";
	char err[KF_ERR_MAX] = "", *dir = kt_tmpdir("store-ops");
	struct kf_store *s = NULL;
	size_t len = 0;

	randombytes_buf(key, sizeof(key));
	cr_assert(kf_store_file_new(dir, key, &s) == 0);
	cr_assert_eq(s->ops->load(s, &plain, &len, err), -ENOENT);
	cr_assert_eq(s->ops->commit(s, NULL), -EINVAL,
		     "a commit with nothing prepared");
	/* Prepared, then discarded: nothing visible, nothing left. */
	cr_assert(s->ops->prepare(s, payload, PAYLOAD_LEN, err) == 0, "%s",
		  err);
	cr_assert_eq(s->ops->load(s, &plain, &len, NULL), -ENOENT,
		     "a prepared state is visible");
	s->ops->discard(s);
	cr_assert_eq(dir_entries(dir, false), 0, "discard left the temp");
	/* A second prepare replaces the first; commit makes it current. */
	cr_assert(s->ops->prepare(s, payload, PAYLOAD_LEN, err) == 0, "%s",
		  err);
	cr_assert(s->ops->prepare(s, other, sizeof(other), err) == 0, "%s",
		  err);
	cr_assert(s->ops->commit(s, err) == 0, "%s", err);
	cr_assert_eq(dir_entries(dir, false), 1, "a prepared state was left");
	cr_assert(s->ops->load(s, &plain, &len, err) == 0, "%s", err);
	cr_assert(len == sizeof(other) && !memcmp(plain, other, len),
		  "commit did not make the prepared state current");
	sodium_free(plain);
	/* The very file that kf_store_load reads. */
	cr_assert(kf_store_load(dir, key, &plain, &len, err) == 0, "%s", err);
	cr_assert(len == sizeof(other) && !memcmp(plain, other, len));
	sodium_free(plain);
	cr_assert_null(kf_store_free(s));
	cr_assert_null(kf_store_free(NULL));
	free(dir);
}
