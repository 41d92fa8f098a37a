// SPDX-License-Identifier: MIT
/* Unit tests of core/backup: archive format, naming, verify, list, prune. */
#include <criterion/criterion.h>
#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "backup.h"
#include "helpers.h"

#define T0 1733054400 /* 2024-12-01T12:00:00Z */

static uint8_t key1[32], key2[32], blob[200];
static const uint32_t vers[] = {3, 2};

static void setup(void)
{
	cr_assert(sodium_init() >= 0);
	memset(key1, 0x11, sizeof(key1));
	memset(key2, 0x22, sizeof(key2));
	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)(i * 7 + 1);
}

TestSuite(backup, .init = setup);

/* Writes blob as dir/name (NULL: generated) at `now`; returns file name. */
static char *put(const char *dir, const char *name, const char *prefix,
		 int64_t now)
{
	char file[KF_BACKUP_NAME_MAX + 6], err[KF_ERR_MAX] = "";
	int r;

	r = kf_backup_write(dir, name, prefix, key1, blob, sizeof(blob), 3,
			    vers, 2, now, file, err);
	cr_assert(r == 0, "write %s: %d %s", name ? name : "(generated)", r,
		  err);
	return strdup(file);
}

/* Like put, generated name at `now`, holding `versions` (newest first). */
static char *put_versions(const char *dir, int64_t now, uint32_t current,
			  const uint32_t *versions, size_t n)
{
	char file[KF_BACKUP_NAME_MAX + 6], err[KF_ERR_MAX] = "";
	int r;

	r = kf_backup_write(dir, NULL, NULL, key1, blob, sizeof(blob), current,
			    versions, n, now, file, err);
	cr_assert(r == 0, "write: %d %s", r, err);
	return strdup(file);
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	cr_assert(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Reads path expecting failure; asserts the code and the reason. */
static void expect_fail(const char *path, const uint8_t *key, int code,
			const char *reason, const char *what)
{
	uint8_t *out = NULL;
	size_t len = 12345;
	char err[KF_ERR_MAX] = "";
	int r;

	r = kf_backup_read(path, key, &out, &len, NULL, err);
	cr_assert(r == code, "%s: expected %d, got %d (%s)", what, code, r,
		  err);
	cr_assert(kt_contains(err, reason), "%s: reason '%s', got '%s'", what,
		  reason, err);
	cr_assert(out == NULL && len == 12345, "%s: outputs written on failure",
		  what);
}

/* An edited copy of the archive at src, as our own compact line. */
static char *redump(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER), *line;

	cr_assert(s);
	cr_assert(asprintf(&line, "%s\n", s) > 0);
	free(s);
	return line;
}

static json_t *load_archive(const char *path)
{
	json_error_t jerr;
	json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);

	cr_assert(o, "archive does not parse: %s", jerr.text);
	return o;
}

Test(backup, write_read_round_trip)
{
	char *dir = kt_tmpdir("backup"), *file, *path, err[KF_ERR_MAX] = "";
	struct kf_backup_info info;
	struct stat st;
	uint8_t *out = NULL;
	size_t len = 0;
	int r;

	file = put(dir, "nightly", NULL, T0);
	cr_assert_str_eq(file, "nightly.json");
	path = kt_path(dir, file);
	cr_assert(stat(path, &st) == 0);
	r = kf_backup_read(path, key1, &out, &len, &info, err);
	cr_assert(r == 0, "read: %d %s", r, err);
	cr_assert(len == sizeof(blob), "blob length differs");
	cr_assert(memcmp(out, blob, len) == 0, "blob differs after round trip");
	cr_assert_str_eq(info.name, "nightly.json");
	cr_assert(info.created == T0);
	cr_assert(info.key_version == 3);
	cr_assert(info.n_versions == 2);
	cr_assert(info.size == st.st_size);
	cr_assert(info.mtime == T0, "mtime %lld is not `now`",
		  (long long)info.mtime);
	cr_assert(st.st_mtim.tv_sec == T0);
	cr_assert(count_entries(dir) == 1, "temporary file left behind");
	sodium_free(out);

	/* An empty blob is a valid archive too. */
	r = kf_backup_write(dir, "empty", NULL, key1, NULL, 0, 1,
			    (const uint32_t[]){1}, 1, T0, NULL, err);
	cr_assert(r == 0, "write empty: %d %s", r, err);
	free(path);
	path = kt_path(dir, "empty.json");
	r = kf_backup_read(path, key1, &out, &len, NULL, err);
	cr_assert(r == 0 && len == 0, "read empty: %d %s", r, err);
	sodium_free(out);
	free(path);
	free(file);
	free(dir);
}

Test(backup, archive_is_0600_one_json_line_with_exact_fields)
{
	static const char *const want[] = {"format",   "created", "key_version",
					   "versions", "nonce",	  "ciphertext"};
	char *dir = kt_tmpdir("backup"), *file, *path, *text;
	char ad[256];
	uint8_t nonce[64], ct[sizeof(blob) + 64], pt[sizeof(blob)];
	size_t len, nonce_len, ct_len, i = 0;
	unsigned long long pt_len;
	const char *k;
	struct stat st;
	json_t *o, *v;

	file = put(dir, "fmt", NULL, T0);
	path = kt_path(dir, file);
	cr_assert(stat(path, &st) == 0);
	cr_assert((st.st_mode & 07777) == 0600, "mode %o", st.st_mode & 07777);
	text = kt_read_file(path, &len);
	cr_assert(text && len > 2);
	cr_assert(text[len - 1] == '\n', "archive does not end with newline");
	cr_assert(memchr(text, '\n', len - 1) == NULL, "more than one line");
	cr_assert(strchr(text, ' ') == NULL, "archive is not compact");
	o = load_archive(path);
	cr_assert(json_object_size(o) == 6, "fields: %zu", json_object_size(o));
	json_object_foreach(o, k, v)
	{
		cr_assert_str_eq(k, want[i], "field %zu out of order", i);
		i++;
	}
	cr_assert_str_eq(json_string_value(json_object_get(o, "format")),
			 KF_BACKUP_FORMAT);
	cr_assert_str_eq(json_string_value(json_object_get(o, "created")),
			 "2024-12-01T12:00:00Z");
	cr_assert(json_integer_value(json_object_get(o, "key_version")) == 3);
	v = json_object_get(o, "versions");
	cr_assert(json_array_size(v) == 2 &&
		  json_integer_value(json_array_get(v, 0)) == 3 &&
		  json_integer_value(json_array_get(v, 1)) == 2);
	v = json_object_get(o, "nonce");
	cr_assert(sodium_base642bin(nonce, sizeof(nonce), json_string_value(v),
				    json_string_length(v), NULL, &nonce_len,
				    NULL, sodium_base64_VARIANT_ORIGINAL) == 0);
	cr_assert(nonce_len == 24);
	v = json_object_get(o, "ciphertext");
	cr_assert(sodium_base642bin(ct, sizeof(ct), json_string_value(v),
				    json_string_length(v), NULL, &ct_len, NULL,
				    sodium_base64_VARIANT_ORIGINAL) == 0);
	cr_assert(ct_len == sizeof(blob) + 16);

	/* The associated data is exactly the documented compact text. */
	snprintf(ad, sizeof(ad),
		 "{\"format\":\"%s\",\"created\":\"2024-12-01T12:00:00Z\","
		 "\"key_version\":3,\"versions\":[3,2]}",
		 KF_BACKUP_FORMAT);
	cr_assert(crypto_aead_xchacha20poly1305_ietf_decrypt(
		      pt, &pt_len, NULL, ct, ct_len, (uint8_t *)ad, strlen(ad),
		      nonce, key1) == 0,
		  "independent decryption with the documented AD failed");
	cr_assert(pt_len == sizeof(blob) && memcmp(pt, blob, pt_len) == 0,
		  "independently decrypted blob differs");
	json_decref(o);
	free(text);
	free(path);
	free(file);
	free(dir);
}

Test(backup, generated_names_from_time_and_prefix)
{
	char *dir = kt_tmpdir("backup"), *a, *b, *p;

	a = put(dir, NULL, NULL, T0);
	cr_assert_str_eq(a, "key_backup_20241201_120000.json");
	b = put(dir, NULL, "pre_restore_", T0 + 61);
	cr_assert_str_eq(b, "pre_restore_20241201_120101.json");
	p = kt_path(dir, a);
	cr_assert(access(p, F_OK) == 0, "generated archive missing");
	free(p);
	p = kt_path(dir, b);
	cr_assert(access(p, F_OK) == 0, "prefixed archive missing");
	free(p);
	free(a);
	free(b);
	free(dir);
}

Test(backup, same_generated_name_gets_suffix)
{
	char *dir = kt_tmpdir("backup"), *a, *b, *c, *pa, *before, *after;

	a = put(dir, NULL, NULL, T0);
	pa = kt_path(dir, a);
	before = kt_read_file(pa, NULL);
	b = put(dir, NULL, NULL, T0);
	c = put(dir, NULL, NULL, T0);
	cr_assert_str_eq(a, "key_backup_20241201_120000.json");
	cr_assert_str_eq(b, "key_backup_20241201_120000_2.json");
	cr_assert_str_eq(c, "key_backup_20241201_120000_3.json");
	after = kt_read_file(pa, NULL);
	cr_assert(strcmp(before, after) == 0, "first archive was replaced");
	cr_assert(count_entries(dir) == 3);
	free(before);
	free(after);
	free(pa);
	free(a);
	free(b);
	free(c);
	free(dir);
}

Test(backup, existing_name_refused_and_unchanged)
{
	char *dir = kt_tmpdir("backup"), *file, *path, *before, *after;
	char err[KF_ERR_MAX] = "", got[KF_BACKUP_NAME_MAX + 6] = "untouched";
	uint8_t other[16] = {9};
	int r;

	file = put(dir, "weekly", NULL, T0);
	path = kt_path(dir, file);
	before = kt_read_file(path, NULL);
	r = kf_backup_write(dir, "weekly", NULL, key1, other, sizeof(other), 3,
			    vers, 2, T0 + 5, got, err);
	cr_assert(r == -EEXIST, "second write: %d %s", r, err);
	cr_assert(kt_contains(err, "already exists"), "err: %s", err);
	cr_assert_str_eq(got, "untouched", "ret_name written on failure");
	after = kt_read_file(path, NULL);
	cr_assert(strcmp(before, after) == 0, "existing archive changed");
	cr_assert(count_entries(dir) == 1, "temporary file left behind");
	free(before);
	free(after);
	free(path);
	free(file);
	free(dir);
}

Test(backup, invalid_names_refused)
{
	static const char *const bad[] = {
	    "a/b", "../x", "a..b",   "..",	    ".hidden",
	    "",	   "a b",  "a\nb",   "caf\xc3\xa9", "-x",
	    "_x",  "x=",   "x.json", "key=secret",
	};
	char long65[66], long64[65], err[KF_ERR_MAX];
	char *dir = kt_tmpdir("backup");
	int r;

	memset(long65, 'a', 65);
	long65[65] = 0;
	memset(long64, 'a', 64);
	long64[64] = 0;
	cr_assert(!kf_backup_name_valid(long65), "65 chars accepted");
	cr_assert(!kf_backup_name_valid(NULL));
	cr_assert(kf_backup_name_valid(long64), "64 chars refused");
	cr_assert(kf_backup_name_valid("a"));
	cr_assert(kf_backup_name_valid("Key_backup-1.2"));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (strcmp(bad[i], "x.json") != 0)
			cr_assert(!kf_backup_name_valid(bad[i]),
				  "name %zu accepted", i);
		err[0] = 0;
		r = kf_backup_write(dir, bad[i], NULL, key1, blob, sizeof(blob),
				    3, vers, 2, T0, NULL, err);
		cr_assert(r == -EINVAL, "name %zu: write gave %d", i, r);
		cr_assert(kt_contains(err, "invalid backup name"), "err: %s",
			  err);
	}
	r = kf_backup_write(dir, long65, NULL, key1, blob, sizeof(blob), 3,
			    vers, 2, T0, NULL, err);
	cr_assert(r == -EINVAL, "65-char name written");
	/* A refused name is never echoed: it might be a key's text. */
	cr_assert(!kt_contains(err, "aaaa"), "name echoed in error: %s", err);
	r = kf_backup_write(dir, "key=secret", NULL, key1, blob, sizeof(blob),
			    3, vers, 2, T0, NULL, err);
	cr_assert(r == -EINVAL && !kt_contains(err, "secret"),
		  "name echoed in error");
	cr_assert(count_entries(dir) == 0, "a refused name created a file");
	free(dir);
}

Test(backup, bad_prefix_and_versions_refused)
{
	char *dir = kt_tmpdir("backup"), err[KF_ERR_MAX];

	cr_assert(kf_backup_write(dir, NULL, "../", key1, blob, sizeof(blob), 3,
				  vers, 2, T0, NULL, err) == -EINVAL);
	cr_assert(kf_backup_write(dir, "v", NULL, key1, blob, sizeof(blob), 4,
				  vers, 2, T0, NULL, err) == -EINVAL,
		  "key_version outside versions accepted");
	cr_assert(kf_backup_write(dir, "v", NULL, key1, blob, sizeof(blob), 2,
				  (const uint32_t[]){2, 3}, 2, T0, NULL,
				  err) == -EINVAL,
		  "increasing versions accepted");
	cr_assert(kf_backup_write(dir, "v", NULL, key1, blob, sizeof(blob), 3,
				  vers, 0, T0, NULL, err) == -EINVAL,
		  "empty versions accepted");
	cr_assert(count_entries(dir) == 0);
	free(dir);
}

Test(backup, read_missing)
{
	char *dir = kt_tmpdir("backup"), *path = kt_path(dir, "none.json");

	expect_fail(path, key1, -ENOENT, "no such backup", "missing");
	free(path);
	free(dir);
}

Test(backup, read_truncated)
{
	char *dir = kt_tmpdir("backup"), *file, *path, *cut, *text, what[64];
	size_t len;

	file = put(dir, "full", NULL, T0);
	path = kt_path(dir, file);
	cut = kt_path(dir, "cut.json");
	text = kt_read_file(path, &len);
	size_t lens[] = {0, 1, 2, 10, 40, len / 2, len - 30, len - 2, len - 1};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		kt_write_bytes(cut, text, lens[i], 0600);
		snprintf(what, sizeof(what), "truncated to %zu", lens[i]);
		expect_fail(cut, key1, -EBADMSG, "truncated or not JSON", what);
	}
	free(text);
	free(cut);
	free(path);
	free(file);
	free(dir);
}

Test(backup, every_single_byte_change_fails)
{
	/* XOR deltas, and 0: the byte becomes a space. */
	static const uint8_t deltas[] = {0x01, 0x02, 0x20, 0x40, 0x80, 0};
	char *dir = kt_tmpdir("backup"), *file, *path, *bad, *text, *copy;
	char err[KF_ERR_MAX];
	size_t len, n_auth = 0, n_json = 0, n_other = 0;
	uint8_t *out;
	size_t out_len;
	int r;

	file = put(dir, "victim", NULL, T0);
	path = kt_path(dir, file);
	bad = kt_path(dir, "flip.json");
	text = kt_read_file(path, &len);
	copy = malloc(len);
	for (size_t i = 0; i < len; i++) {
		for (size_t d = 0; d < sizeof(deltas); d++) {
			memcpy(copy, text, len);
			if (deltas[d] == 0 && copy[i] == ' ')
				continue;
			copy[i] = deltas[d] ? (char)(copy[i] ^ deltas[d]) : ' ';
			kt_write_bytes(bad, copy, len, 0600);
			out = NULL;
			err[0] = 0;
			r = kf_backup_read(bad, key1, &out, &out_len, NULL,
					   err);
			cr_assert(r == -EBADMSG,
				  "byte %zu ^ 0x%02x: read gave %d (%s)", i,
				  deltas[d], r, err);
			cr_assert(out == NULL && err[0] != 0);
			if (kt_contains(err, "authentication failed"))
				n_auth++;
			else if (kt_contains(err, "truncated or not JSON"))
				n_json++;
			else
				n_other++;
		}
	}
	cr_assert(n_auth > 0 && n_json > 0 && n_other > 0,
		  "expected all kinds of failure: auth %zu json %zu other %zu",
		  n_auth, n_json, n_other);
	/* The untouched archive still reads: the loop proved the checks. */
	r = kf_backup_read(path, key1, &out, &out_len, NULL, err);
	cr_assert(r == 0, "original: %d %s", r, err);
	sodium_free(out);
	free(copy);
	free(text);
	free(bad);
	free(path);
	free(file);
	free(dir);
}

/* Writes an edited copy of src's archive to dst and expects a failure. */
static void edit_and_expect(const char *src, const char *dst,
			    void (*edit)(json_t *), const char *reason,
			    const char *what)
{
	json_t *o = load_archive(src);
	char *line;

	edit(o);
	line = redump(o);
	kt_write_bytes(dst, line, strlen(line), 0600);
	expect_fail(dst, key1, -EBADMSG, reason, what);
	free(line);
	json_decref(o);
}

static void edit_version(json_t *o)
{
	json_object_set_new(o, "key_version", json_integer(4));
	json_array_set_new(json_object_get(o, "versions"), 0, json_integer(4));
}

static void edit_created(json_t *o)
{
	json_object_set_new(o, "created", json_string("2024-12-01T12:00:01Z"));
}

static void edit_created_bad(json_t *o)
{
	json_object_set_new(o, "created", json_string("2024-13-01T12:00:00Z"));
}

static void edit_versions_longer(json_t *o)
{
	json_array_append_new(json_object_get(o, "versions"), json_integer(1));
}

static void edit_versions_order(json_t *o)
{
	json_t *v = json_object_get(o, "versions");

	json_array_set_new(v, 0, json_integer(2));
	json_array_set_new(v, 1, json_integer(3));
}

static void edit_version_outside(json_t *o)
{
	json_object_set_new(o, "key_version", json_integer(7));
}

static void edit_version_string(json_t *o)
{
	json_object_set_new(o, "key_version", json_string("3"));
}

static void edit_extra_field(json_t *o)
{
	json_object_set_new(o, "comment", json_string("hello"));
}

static void edit_drop_nonce(json_t *o)
{
	json_object_del(o, "nonce");
}

static void edit_short_nonce(json_t *o)
{
	json_object_set_new(o, "nonce", json_string("AAAA"));
}

static void edit_short_ciphertext(json_t *o)
{
	json_object_set_new(o, "ciphertext", json_string("AAAAAAAA"));
}

static void edit_format(json_t *o)
{
	json_object_set_new(o, "format", json_string("keyfs-backup-v2"));
}

static void edit_reorder(json_t *o)
{
	json_t *created = json_incref(json_object_get(o, "created"));

	/* Re-adding moves "created" to the end; values all unchanged. */
	json_object_del(o, "created");
	json_object_set_new(o, "created", created);
}

Test(backup, clear_field_edits_fail)
{
	char *dir = kt_tmpdir("backup"), *file, *path, *bad;

	file = put(dir, "orig", NULL, T0);
	path = kt_path(dir, file);
	bad = kt_path(dir, "edited.json");
	edit_and_expect(path, bad, edit_version, "authentication failed",
			"key_version 3->4 in both fields");
	edit_and_expect(path, bad, edit_created, "authentication failed",
			"created moved by a second");
	edit_and_expect(path, bad, edit_versions_longer,
			"authentication failed", "version added to versions");
	edit_and_expect(path, bad, edit_created_bad,
			"field created missing or malformed",
			"created month 13");
	edit_and_expect(path, bad, edit_versions_order,
			"field versions missing or malformed",
			"versions increasing");
	edit_and_expect(path, bad, edit_version_outside,
			"field key_version missing or malformed",
			"key_version not among versions");
	edit_and_expect(path, bad, edit_version_string,
			"field key_version missing or malformed",
			"key_version a string");
	edit_and_expect(path, bad, edit_extra_field, "unexpected field comment",
			"extra field");
	edit_and_expect(path, bad, edit_drop_nonce,
			"field nonce missing or malformed", "nonce missing");
	edit_and_expect(path, bad, edit_short_nonce,
			"field nonce missing or malformed", "nonce 3 bytes");
	edit_and_expect(path, bad, edit_short_ciphertext,
			"field ciphertext missing or malformed",
			"ciphertext shorter than a tag");
	edit_and_expect(path, bad, edit_format, "not a keyfs backup (format)",
			"format v2");
	edit_and_expect(path, bad, edit_reorder, "not in canonical form",
			"fields reordered");
	free(bad);
	free(path);
	free(file);
	free(dir);
}

Test(backup, other_master_key_fails)
{
	char *dir = kt_tmpdir("backup"), *file, *path;

	file = put(dir, "mine", NULL, T0);
	path = kt_path(dir, file);
	expect_fail(path, key2, -EBADMSG,
		    "authentication failed (tampered, or made under another "
		    "master key)",
		    "other key");
	free(path);
	free(file);
	free(dir);
}

Test(backup, non_archives_refused)
{
	char *dir = kt_tmpdir("backup"), *path = kt_path(dir, "x.json");
	uint8_t rnd[300];
	char *sub;

	randombytes_buf(rnd, sizeof(rnd));
	rnd[sizeof(rnd) - 1] = '\n';
	kt_write_bytes(path, rnd, sizeof(rnd), 0600);
	expect_fail(path, key1, -EBADMSG, "truncated or not JSON", "random");
	kt_write_bytes(path, "", 0, 0600);
	expect_fail(path, key1, -EBADMSG, "truncated or not JSON", "empty");
	kt_write_bytes(path, "{}\n", 3, 0600);
	expect_fail(path, key1, -EBADMSG, "not a keyfs backup (format)", "{}");
	kt_write_bytes(path, "[1,2]\n", 6, 0600);
	expect_fail(path, key1, -EBADMSG, "not a keyfs backup (format)",
		    "array");
	kt_write_bytes(path, "\"keyfs-backup-v1\"\n", 18, 0600);
	expect_fail(path, key1, -EBADMSG, "truncated or not JSON", "string");
	kt_write_file(path, "{\"format\":\"keyfs-backup-v1\"}\n", 0600);
	expect_fail(path, key1, -EBADMSG, "field created missing or malformed",
		    "format only");
	kt_write_file(
	    path, "{\"format\":\"keyfs-backup-v1\",\"format\":\"x\"}\n", 0600);
	expect_fail(path, key1, -EBADMSG, "truncated or not JSON",
		    "duplicate key");
	sub = kt_path(dir, "sub.json");
	cr_assert(mkdir(sub, 0700) == 0);
	expect_fail(sub, key1, -EINVAL, "not a regular file", "directory");
	free(sub);
	free(path);
	free(dir);
}

Test(backup, list_newest_first_with_fields)
{
	char *dir = kt_tmpdir("backup"), err[KF_ERR_MAX] = "";
	struct kf_backup_info *l = NULL;
	struct stat st;
	size_t n = 0;
	char *p;
	int r;

	free(put(dir, "b", NULL, T0 + 100));
	free(put(dir, "a", NULL, T0 + 200));
	free(put(dir, "c", NULL, T0));
	r = kf_backup_write(dir, "d", NULL, key1, blob, 10, 7,
			    (const uint32_t[]){7, 5, 1}, 3, T0 + 100, NULL,
			    err);
	cr_assert(r == 0, "%s", err);
	r = kf_backup_list(dir, &l, &n, err);
	cr_assert(r == 0, "list: %d %s", r, err);
	cr_assert(n == 4, "n = %zu", n);
	/* created descending; equal created by name descending. */
	cr_assert_str_eq(l[0].name, "a.json");
	cr_assert_str_eq(l[1].name, "d.json");
	cr_assert_str_eq(l[2].name, "b.json");
	cr_assert_str_eq(l[3].name, "c.json");
	cr_assert(l[0].created == T0 + 200 && l[1].created == T0 + 100 &&
		  l[2].created == T0 + 100 && l[3].created == T0);
	cr_assert(l[1].key_version == 7 && l[1].n_versions == 3);
	cr_assert(l[0].key_version == 3 && l[0].n_versions == 2);
	for (size_t i = 0; i < n; i++) {
		p = kt_path(dir, l[i].name);
		cr_assert(stat(p, &st) == 0);
		cr_assert(l[i].size == st.st_size, "size of %s", l[i].name);
		cr_assert(l[i].mtime == l[i].created, "mtime of %s", l[i].name);
		free(p);
	}
	free(l);
	free(dir);
}

Test(backup, list_skips_garbage_and_other_files)
{
	char *dir = kt_tmpdir("backup"), *good, *p, *q, *text;
	char err[KF_ERR_MAX];
	struct kf_backup_info *l = NULL;
	size_t n = 0, len;

	good = put(dir, "good", NULL, T0);
	p = kt_path(dir, good);
	text = kt_read_file(p, &len);
	free(p);
	p = kt_path(dir, "garbage.json");
	kt_write_file(p, "not an archive\n", 0600);
	free(p);
	p = kt_path(dir, "copy.txt"); /* a valid archive, wrong suffix */
	kt_write_bytes(p, text, len, 0600);
	free(p);
	p = kt_path(dir, ".hidden.json"); /* not a valid name */
	kt_write_bytes(p, text, len, 0600);
	free(p);
	p = kt_path(dir, "sub.json");
	cr_assert(mkdir(p, 0700) == 0);
	free(p);
	p = kt_path(dir, "link.json");
	cr_assert(symlink(good, p) == 0);
	free(p);
	p = kt_path(dir, "tampered.json"); /* parses: listed, not verified */
	q = strstr(text, "\"ciphertext\":\"");
	cr_assert(q);
	q += 20;
	*q = *q == 'A' ? 'B' : 'A';
	kt_write_bytes(p, text, len, 0600);
	free(p);
	cr_assert(kf_backup_list(dir, &l, &n, err) == 0, "%s", err);
	cr_assert(n == 2, "n = %zu", n);
	cr_assert_str_eq(l[0].name, "tampered.json");
	cr_assert_str_eq(l[1].name, "good.json");
	free(l);
	free(text);
	free(good);
	free(dir);
}

Test(backup, list_missing_dir_is_empty)
{
	char *dir = kt_tmpdir("backup"), *p = kt_path(dir, "absent");
	struct kf_backup_info *l = (void *)1;
	size_t n = 99;

	cr_assert(kf_backup_list(p, &l, &n, NULL) == 0);
	cr_assert(n == 0 && l == NULL);
	free(p);
	free(dir);
}

/* kf_backup_prune of every archive, protecting none; *deleted. */
static int prune(const char *dir, unsigned keep, size_t *deleted, char *err)
{
	struct kf_backup_prune_opts o = {.keep = keep};
	struct kf_backup_prune_result res;
	int r = kf_backup_prune(dir, &o, &res, err);

	*deleted = res.deleted;
	return r;
}

/* Holds versions >= the threshold in data (a uint32_t). */
static bool holds_from(uint32_t version, void *data)
{
	return version >= *(uint32_t *)data;
}

Test(backup, prune_keeps_the_last_copy_of_a_version_unless_forced)
{
	char *dir = kt_tmpdir("backup"), *names[4], *p, err[KF_ERR_MAX];
	static const uint32_t v1[] = {1}, v21[] = {2, 1}, v32[] = {3, 2},
			      v43[] = {4, 3};
	const uint32_t *vs[] = {v1, v21, v32, v43};
	const size_t ns[] = {1, 2, 2, 2};
	uint32_t held_from = 3; /* the keyring holds 4 and 3 */
	struct kf_backup_prune_opts o = {
	    .keep = 1, .held = holds_from, .data = &held_from};
	struct kf_backup_prune_result res;

	for (int i = 0; i < 4; i++)
		names[i] =
		    put_versions(dir, T0 + 60 * i, vs[i][0], vs[i], ns[i]);
	/* Kept: the newest (4,3); (3,2) is the last copy of 2; (2,1) the
	 * last of 1; (1) goes, since (2,1) holds 1 too. */
	o.dry_run = true;
	cr_assert(kf_backup_prune(dir, &o, &res, err) == 0, "%s", err);
	cr_assert(res.deleted == 1 && res.protected == 2,
		  "dry run: %zu deleted, %zu protected", res.deleted,
		  res.protected);
	cr_assert(count_entries(dir) == 4, "a dry run deleted something");
	o.dry_run = false;
	cr_assert(kf_backup_prune(dir, &o, &res, err) == 0, "%s", err);
	cr_assert(res.deleted == 1 && res.protected == 2);
	for (int i = 0; i < 4; i++) {
		p = kt_path(dir, names[i]);
		cr_assert((access(p, F_OK) == 0) == (i > 0), "%s wrongly %s",
			  names[i], i > 0 ? "deleted" : "kept");
		free(p);
	}
	/* force: the last copies go too. */
	o.force = true;
	cr_assert(kf_backup_prune(dir, &o, &res, err) == 0, "%s", err);
	cr_assert(res.deleted == 2 && res.protected == 0);
	cr_assert(count_entries(dir) == 1);
	for (int i = 0; i < 4; i++)
		free(names[i]);
	free(dir);
}

Test(backup, prune_keeps_newest)
{
	char *dir = kt_tmpdir("backup"), *names[5], *p, err[KF_ERR_MAX];
	struct kf_backup_info *l = NULL;
	size_t n = 0, deleted = 99;

	for (int i = 0; i < 5; i++)
		names[i] = put(dir, NULL, NULL, T0 + 3600 * i);
	p = kt_path(dir, "notes.txt");
	kt_write_file(p, "keep me\n", 0600);
	free(p);
	cr_assert(prune(dir, 2, &deleted, err) == 0, "%s", err);
	cr_assert(deleted == 3, "deleted %zu", deleted);
	for (int i = 0; i < 5; i++) {
		p = kt_path(dir, names[i]);
		cr_assert((access(p, F_OK) == 0) == (i >= 3), "%s wrongly %s",
			  names[i], i >= 3 ? "deleted" : "kept");
		free(p);
		free(names[i]);
	}
	p = kt_path(dir, "notes.txt");
	cr_assert(access(p, F_OK) == 0, "non-archive deleted");
	free(p);
	cr_assert(kf_backup_list(dir, &l, &n, err) == 0);
	cr_assert(n == 2 && l[0].created == T0 + 4 * 3600 &&
		  l[1].created == T0 + 3 * 3600);
	free(l);
	/* Keeping more than there are deletes nothing. */
	cr_assert(prune(dir, 10, &deleted, err) == 0);
	cr_assert(deleted == 0);
	free(dir);
}

Test(backup, prune_keep_zero_deletes_all)
{
	char *dir = kt_tmpdir("backup"), err[KF_ERR_MAX];
	size_t deleted = 0;

	for (int i = 0; i < 4; i++)
		free(put(dir, NULL, NULL, T0 + i));
	cr_assert(prune(dir, 0, &deleted, err) == 0, "%s", err);
	cr_assert(deleted == 4, "deleted %zu", deleted);
	cr_assert(count_entries(dir) == 0);
	free(dir);
}

Test(backup, prune_empty_or_missing_dir)
{
	char *dir = kt_tmpdir("backup"), *p = kt_path(dir, "absent");
	size_t deleted = 99;

	cr_assert(prune(dir, 0, &deleted, NULL) == 0);
	cr_assert(deleted == 0);
	deleted = 99;
	cr_assert(prune(p, 3, &deleted, NULL) == 0);
	cr_assert(deleted == 0);
	free(p);
	free(dir);
}

/*
 * The clear-fields cache: a prune that reuses what the last one read
 * decides exactly as one that reads every archive, and an archive replaced
 * under the same name is read again, not taken from the cache.
 */
Test(backup, prune_with_a_cache_decides_as_without)
{
	char *dir = kt_tmpdir("backup-cache"), *names[4], *a, *b;
	char err[KF_ERR_MAX];
	static const uint32_t v1[] = {1}, v21[] = {2, 1}, v32[] = {3, 2},
			      v43[] = {4, 3};
	const uint32_t *vs[] = {v1, v21, v32, v43};
	const size_t ns[] = {1, 2, 2, 2};
	uint32_t held_from = 3;
	struct kf_backup_cache *cache = kf_backup_cache_new();
	struct kf_backup_prune_opts o = {
	    .keep = 1, .held = holds_from, .data = &held_from, .dry_run = true};
	struct kf_backup_prune_result with, without;

	cr_assert(cache);
	for (int i = 0; i < 4; i++)
		names[i] =
		    put_versions(dir, T0 + 60 * i, vs[i][0], vs[i], ns[i]);
	for (int round = 0; round < 2; round++) {
		o.cache = cache;
		cr_assert(kf_backup_prune(dir, &o, &with, err) == 0, "%s", err);
		o.cache = NULL;
		cr_assert(kf_backup_prune(dir, &o, &without, err) == 0, "%s",
			  err);
		cr_assert(with.deleted == without.deleted &&
			      with.protected == without.protected &&
			      with.listed == without.listed,
			  "round %d: cached %zu/%zu, read %zu/%zu", round,
			  with.deleted, with.protected, without.deleted,
			  without.protected);
	}
	cr_assert(with.deleted == 1 && with.protected == 2);
	/* (3,2) replaced by a copy of (4,3) under its name: 2 is then held
	 * by (2,1) alone, which stays, and one (4,3) goes -- 2 deleted, 1
	 * protected.  A stale cache would still see (3,2): 1 and 2. */
	a = kt_path(dir, names[3]);
	b = kt_path(dir, names[2]);
	kt_copy_file(a, b);
	o.cache = cache;
	cr_assert(kf_backup_prune(dir, &o, &with, err) == 0, "%s", err);
	o.cache = NULL;
	cr_assert(kf_backup_prune(dir, &o, &without, err) == 0, "%s", err);
	cr_assert(with.deleted == without.deleted &&
		      with.protected == without.protected,
		  "after a replacement: cached %zu/%zu, read %zu/%zu",
		  with.deleted, with.protected, without.deleted,
		  without.protected);
	cr_assert(without.deleted == 2 && without.protected == 1,
		  "the replacement did not change the plan: %zu/%zu",
		  without.deleted, without.protected);
	/* Archives gone from the folder leave the cache's answers right. */
	o.dry_run = false;
	o.force = true;
	o.cache = cache;
	cr_assert(kf_backup_prune(dir, &o, &with, err) == 0, "%s", err);
	o.dry_run = true;
	o.force = false;
	cr_assert(kf_backup_prune(dir, &o, &with, err) == 0, "%s", err);
	cr_assert(with.listed == 1, "listed %zu after the prune", with.listed);
	kf_backup_cache_free(cache);
	for (int i = 0; i < 4; i++)
		free(names[i]);
	free(a);
	free(b);
	free(dir);
}

/* Master-key rotation of one archive (kf_backup_rekey). */
Test(backup, rekey_reseals_under_the_new_key_keeping_fields_and_mtime)
{
	char *dir = kt_tmpdir("backup-rekey"), err[KF_ERR_MAX] = "";
	char *file = put(dir, "one", NULL, 1700000000), *path, *before;
	struct kf_backup_info info;
	uint8_t *got = NULL, key3[32];
	size_t len = 0, blen = 0;
	struct stat st;
	bool rw = false;

	memset(key3, 0x33, sizeof(key3));
	path = kf_path_join(dir, file);
	cr_assert(kf_backup_rekey(dir, file, key1, key2, &rw, err) == 0, "%s",
		  err);
	cr_assert(rw, "not rewritten");
	cr_assert(kf_backup_read(path, key2, &got, &len, &info, err) == 0, "%s",
		  err);
	cr_assert(len == sizeof(blob) && memcmp(got, blob, len) == 0);
	sodium_free(got);
	cr_assert(info.created == 1700000000 && info.key_version == 3 &&
		  info.n_versions == 2);
	cr_assert(stat(path, &st) == 0 && st.st_mtime == 1700000000 &&
		  (st.st_mode & 07777) == 0600);
	cr_assert(kf_backup_read(path, key1, &got, &len, NULL, err) ==
		  -EBADMSG);
	/* Again: nothing to do.  Under neither key: refused, unchanged. */
	before = kt_read_file_ok(path, &blen);
	cr_assert(kf_backup_rekey(dir, file, key1, key2, &rw, err) == 0);
	cr_assert(!rw);
	cr_assert(kf_backup_rekey(dir, file, key1, key3, &rw, err) == -EBADMSG);
	cr_assert(kf_backup_rekey(dir, file, NULL, key3, &rw, err) == -EBADMSG);
	cr_assert(kt_contains(err, "does not open under the new master key"),
		  "%s", err);
	{
		size_t n = 0;
		char *now = kt_read_file_ok(path, &n);

		cr_assert(n == blen && memcmp(now, before, n) == 0);
		free(now);
	}
	free(before);
	free(path);
	free(file);
	free(dir);
}

/*
 * The recovery seal (kf_backup_write_recoverable, kf_backup_recover): the
 * private half alone opens it, it is bound to its archive's clear fields,
 * and kf_backup_rekey keeps it.
 */
Test(backup, recovery_seal_opens_with_the_private_key_and_binds_its_archive)
{
	char *dir = kt_tmpdir("backup-recovery"), err[KF_ERR_MAX] = "";
	char file[KF_BACKUP_FILE_NAME_MAX], *a, *b, *ta, *tb, *sa, *sb, *mix;
	uint8_t pk[32], sk[32], pk2[32], sk2[32], *got = NULL;
	const uint32_t one[] = {1};
	size_t len = 0;
	bool rw;

	crypto_box_keypair(pk, sk);
	crypto_box_keypair(pk2, sk2);
	cr_assert(kf_backup_write_recoverable(dir, "a", NULL, key1, pk, blob,
					      sizeof(blob), 3, vers, 2,
					      1700000000, file, err) == 0,
		  "%s", err);
	cr_assert(kf_backup_write_recoverable(dir, "b", NULL, key1, pk, blob,
					      sizeof(blob), 1, one, 1,
					      1700000001, file, err) == 0,
		  "%s", err);
	a = kf_path_join(dir, "a.json");
	b = kf_path_join(dir, "b.json");
	cr_assert(kf_backup_recover(a, sk, &got, &len, NULL, err) == 0, "%s",
		  err);
	cr_assert(len == sizeof(blob) && memcmp(got, blob, len) == 0);
	sodium_free(got);
	cr_assert(kf_backup_recover(a, sk2, &got, &len, NULL, err) == -EBADMSG);
	cr_assert(kt_contains(err, "does not open under this private key"));
	/* The master key still opens it as any archive. */
	cr_assert(kf_backup_read(a, key1, &got, &len, NULL, err) == 0, "%s",
		  err);
	sodium_free(got);
	/* b with a's seal: refused. */
	ta = kt_read_file_ok(a, NULL);
	tb = kt_read_file_ok(b, NULL);
	sa = strstr(ta, "\"recovery\":\"");
	sb = strstr(tb, "\"recovery\":\"");
	cr_assert(sa && sb);
	*sb = 0;
	cr_assert(asprintf(&mix, "%s%s", tb, sa) > 0);
	kt_write_file(b, mix, 0600);
	cr_assert(kf_backup_recover(b, sk, &got, &len, NULL, err) == -EBADMSG);
	cr_assert(kt_contains(err, "belongs to another archive"), "%s", err);
	/* A master-key rotation keeps the seal. */
	cr_assert(kf_backup_rekey(dir, "a.json", key1, key2, &rw, err) == 0,
		  "%s", err);
	cr_assert(rw);
	cr_assert(kf_backup_recover(a, sk, &got, &len, NULL, err) == 0, "%s",
		  err);
	sodium_free(got);
	/* No seal: said so. */
	cr_assert(kf_backup_write(dir, "c", NULL, key1, blob, sizeof(blob), 3,
				  vers, 2, 1700000002, file, err) == 0);
	free(a);
	a = kf_path_join(dir, "c.json");
	cr_assert(kf_backup_recover(a, sk, &got, &len, NULL, err) == -ENODATA);
	cr_assert(kt_contains(err, "no recovery seal"), "%s", err);
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(sk2, sizeof(sk2));
	free(mix);
	free(ta);
	free(tb);
	free(a);
	free(b);
	free(dir);
}
