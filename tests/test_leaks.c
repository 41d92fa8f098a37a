// SPDX-License-Identifier: MIT
/*
 * The leak check, run last by tests/run: everything the tests printed (the
 * runner's logs of every test binary, every captured standard error) and
 * everything they left on disk (daemon logs, audit logs, configurations,
 * scratch files) must hold no key in text form -- except where keys belong:
 * sealed state files, encrypted backup archives, master key files (*.key,
 * recovery private keys too), recovery public keys (*.pub: public by
 * design, in the same text form), and files a test named *.secret on
 * purpose.
 *
 * A key in text form is 43 characters of the base64 alphabets followed by
 * "=", standing alone.  The check names the file and offset, never the text.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "helpers.h"
#include "key.h"

static bool b64(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '+' ||
	       c == '/';
}

/* Offset of the first key-shaped token in buf, or -1. */
static long find_key(const char *buf, size_t len)
{
	size_t run = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (b64(c)) {
			run++;
			continue;
		}
		if (c == '=' && run == KF_KEY_TEXT_LEN - 1 &&
		    (i + 1 == len ||
		     (buf[i + 1] != '=' && !b64((unsigned char)buf[i + 1]))))
			return (long)(i - run);
		run = 0;
	}
	return -1;
}

static bool exempt(const char *name, const char *path)
{
	size_t n = strlen(name);
	char head[32] = "";
	FILE *f;

	if (strcmp(name, "keyring") == 0 ||
	    strncmp(name, ".keyring.tmp.", 13) == 0 ||
	    (n > 4 && strcmp(name + n - 4, ".key") == 0) ||
	    (n > 4 && strcmp(name + n - 4, ".pub") == 0) ||
	    (n > 7 && strcmp(name + n - 7, ".secret") == 0))
		return true;
	if (n > 5 && strcmp(name + n - 5, ".json") == 0) {
		f = fopen(path, "r");
		if (f) {
			size_t got = fread(head, 1, sizeof(head) - 1, f);

			head[got] = 0;
			fclose(f);
		}
		return strncmp(head, "{\"format\":\"keyfs-backup-v1\"", 27) ==
		       0;
	}
	return false;
}

struct scan {
	unsigned files;
	unsigned leaks;
	char first[PATH_MAX + 64];
};

static void scan_dir(const char *dir, dev_t dev, struct scan *s)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[PATH_MAX];
		struct stat st;
		size_t len = 0;
		char *text;
		long at;

		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) < 0)
			continue;
		/* Never descend into a tree a test left mounted. */
		if (S_ISDIR(st.st_mode) && st.st_dev == dev)
			scan_dir(path, dev, s);
		if (!S_ISREG(st.st_mode) || st.st_size > (64 << 20) ||
		    exempt(de->d_name, path))
			continue;
		text = kt_read_file(path, &len);
		if (!text)
			continue;
		s->files++;
		at = find_key(text, len);
		if (at >= 0 && s->leaks++ == 0)
			snprintf(s->first, sizeof(s->first), "%s at byte %ld",
				 path, at);
		free(text);
	}
	closedir(d);
}

Test(leaks, detector_finds_a_key_and_ignores_other_base64)
{
	uint8_t key[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 1], buf[256];

	kf_key_generate(key);
	kf_key_encode(key, text);
	snprintf(buf, sizeof(buf), "log line: key=%s done", text);
	cr_assert(find_key(buf, strlen(buf)) == 14,
		  "a key inside a log line must be found");
	snprintf(buf, sizeof(buf), "\"chain\":\"%064d\"", 0);
	cr_assert(find_key(buf, strlen(buf)) < 0, "hex is not a key");
	/* Base64 of longer data (a backup's ciphertext) is not a key. */
	memset(buf, 'A', 100);
	buf[100] = '=';
	buf[101] = 0;
	cr_assert(find_key(buf, strlen(buf)) < 0, "a long run is not a key");
	sodium_memzero(text, sizeof(text));
	sodium_memzero(key, sizeof(key));
}

Test(leaks, nothing_printed_or_written_holds_a_key)
{
	const char *dirs[] = {getenv("KEYFS_TEST_LEAKDIR"),
			      getenv("KEYFS_TEST_TMP")};
	struct scan s = {0};

	for (size_t i = 0; i < 2; i++) {
		struct stat st;

		if (!dirs[i] || stat(dirs[i], &st) < 0)
			continue;
		scan_dir(dirs[i], st.st_dev, &s);
	}
	cr_assert(s.files > 0,
		  "no test output to check: run through tests/run");
	cr_assert(s.leaks == 0, "%u file(s) hold a key in text form; first: %s",
		  s.leaks, s.first);
}
