// SPDX-License-Identifier: MIT
/* backup: encrypted, authenticated backup archives (DESIGN.md §5). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "backup.h"

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES
#define B64 sodium_base64_VARIANT_ORIGINAL
#define MAX_VERSIONS 65536u /* far above any keyring's retain_versions */
#define MAX_LIST 100000u    /* archives listed from one directory */
#define MAX_SUFFIX 100000   /* _2 ... for generated names */
#define STAMP_LEN 15	    /* YYYYMMDD_HHMMSS */

_Static_assert(KF_BACKUP_KEY_BYTES ==
		   crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
	       "the archive key is an XChaCha20-Poly1305 key");

static const char *const fields[] = {"format",	 "created", "key_version",
				     "versions", "nonce",   "ciphertext"};

/* The clear fields and the decoded sealed part of one archive. */
struct archive {
	int64_t created;
	uint32_t key_version;
	uint32_t *versions;
	size_t n_versions;
	uint8_t nonce[NONCE_LEN];
	uint8_t *ct;
	size_t ct_len;
};

static void archive_done(struct archive *a)
{
	free(a->versions);
	free(a->ct);
	memset(a, 0, sizeof(*a));
}

bool kf_backup_name_valid(const char *name)
{
	size_t len;

	if (!name)
		return false;
	len = strlen(name);
	if (len == 0 || len > KF_BACKUP_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return strstr(name, "..") == NULL;
}

bool kf_backup_name_reserved(const char *name)
{
	static const char *const reserved[] = {KF_BACKUP_AUTO_PREFIX,
					       KF_BACKUP_PRE_RESTORE_PREFIX};

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strncmp(name, reserved[i], strlen(reserved[i])) == 0)
			return true;
	return false;
}

bool kf_backup_stem(const char *file, bool need_suffix,
		    char stem[KF_BACKUP_NAME_MAX + 1])
{
	size_t len = strlen(file);
	bool has =
	    len > KF_BACKUP_SUFFIX_LEN &&
	    strcmp(file + len - KF_BACKUP_SUFFIX_LEN, KF_BACKUP_SUFFIX) == 0;

	if (need_suffix && !has)
		return false;
	if (has)
		len -= KF_BACKUP_SUFFIX_LEN;
	if (len == 0 || len > KF_BACKUP_NAME_MAX)
		return false;
	memcpy(stem, file, len);
	stem[len] = 0;
	return kf_backup_name_valid(stem);
}

bool kf_backup_file_name(const char *name, char file[KF_BACKUP_FILE_NAME_MAX])
{
	int n = snprintf(file, KF_BACKUP_FILE_NAME_MAX, "%s" KF_BACKUP_SUFFIX,
			 name);

	return n > 0 && n < (int)KF_BACKUP_FILE_NAME_MAX;
}

/* A field name from a file, safe to put in a message (ASCII, 32 chars). */
static void printable(const char *s, char out[40])
{
	size_t i;

	for (i = 0; s[i] && i < 32; i++)
		out[i] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
	strcpy(out + i, s[i] ? "..." : "");
}

/*
 * {"format","created","key_version","versions"} in that order: the
 * associated data, and the head of the archive object.
 */
static json_t *clear_object(int64_t created, uint32_t key_version,
			    const uint32_t *versions, size_t n_versions)
{
	char stamp[KF_RFC3339_LEN + 1];
	json_t *o = json_object(), *arr = json_array();
	int bad = !o || !arr;

	kf_time_rfc3339(created, stamp);
	for (size_t i = 0; !bad && i < n_versions; i++)
		bad = json_array_append_new(arr, json_integer(versions[i]));
	if (!bad)
		bad = json_object_set_new(o, "format",
					  json_string(KF_BACKUP_FORMAT)) ||
		      json_object_set_new(o, "created", json_string(stamp)) ||
		      json_object_set_new(o, "key_version",
					  json_integer(key_version));
	if (!bad) {
		bad = json_object_set_new(o, "versions", arr);
		arr = NULL;
	}
	json_decref(arr);
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static char *dump(const json_t *o)
{
	return json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

static char *b64_encode(const uint8_t *bin, size_t len)
{
	size_t n = sodium_base64_encoded_len(len, B64);
	char *s = malloc(n);

	if (s)
		sodium_bin2base64(s, n, bin, len, B64);
	return s;
}

/* Strict: the whole string must be canonical padded base64. */
static int b64_decode(const char *s, size_t slen, uint8_t **ret,
		      size_t *ret_len)
{
	size_t cap = slen / 4 * 3 + 1, n;
	uint8_t *bin = malloc(cap);

	if (!bin)
		return -ENOMEM;
	if (sodium_base642bin(bin, cap, s, slen, NULL, &n, NULL, B64) != 0) {
		free(bin);
		return -EBADMSG;
	}
	*ret = bin;
	*ret_len = n;
	return 0;
}

/*
 * The archive text exactly as written: one compact JSON line and "\n".
 * Reading rebuilds it from the decoded values and compares, so an archive
 * has exactly one accepted byte sequence.
 */
static char *archive_text(const struct archive *a)
{
	json_t *o;
	char *nonce = NULL, *ct = NULL, *s = NULL, *line = NULL;

	o = clear_object(a->created, a->key_version, a->versions,
			 a->n_versions);
	nonce = b64_encode(a->nonce, sizeof(a->nonce));
	ct = b64_encode(a->ct, a->ct_len);
	if (!o || !nonce || !ct ||
	    json_object_set_new(o, "nonce", json_string(nonce)) ||
	    json_object_set_new(o, "ciphertext", json_string(ct)))
		goto out;
	s = dump(o);
	if (s && asprintf(&line, "%s\n", s) < 0)
		line = NULL;
out:
	free(s);
	free(ct);
	free(nonce);
	json_decref(o);
	return line;
}

static char *ad_text(const struct archive *a)
{
	json_t *o = clear_object(a->created, a->key_version, a->versions,
				 a->n_versions);
	char *s = o ? dump(o) : NULL;

	json_decref(o);
	return s;
}

static int get_u32(const json_t *v, uint32_t *ret)
{
	json_int_t n;

	if (!json_is_integer(v))
		return -EBADMSG;
	n = json_integer_value(v);
	if (n < 1 || n > (json_int_t)UINT32_MAX)
		return -EBADMSG;
	*ret = (uint32_t)n;
	return 0;
}

static int parse_versions(const json_t *arr, struct archive *a)
{
	size_t n = json_array_size(arr);

	if (!json_is_array(arr) || n == 0 || n > MAX_VERSIONS)
		return -EBADMSG;
	a->versions = calloc(n, sizeof(*a->versions));
	if (!a->versions)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (get_u32(json_array_get(arr, i), &a->versions[i]) < 0 ||
		    (i > 0 && a->versions[i] >= a->versions[i - 1]))
			return -EBADMSG;
	}
	a->n_versions = n;
	return 0;
}

static int field_error(char *err, const char *name, int r)
{
	if (r == -ENOMEM)
		kf_err_set(err, "out of memory");
	else
		kf_err_set(err, "field %s missing or malformed", name);
	return r;
}

/* The clear fields and sealed part of buf, checked (no decryption). */
static int archive_parse(const uint8_t *buf, size_t len, struct archive *a,
			 char *err)
{
	json_error_t jerr;
	json_t *root, *v;
	const char *key;
	uint8_t *nonce = NULL;
	size_t nonce_len = 0;
	char *text = NULL;
	bool in = false;
	int r = -EBADMSG;

	memset(a, 0, sizeof(*a));
	if (len == 0 || buf[len - 1] != '\n') {
		kf_err_set(err, "truncated or not JSON");
		return -EBADMSG;
	}
	root =
	    json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		kf_err_set(err, "truncated or not JSON");
		return -EBADMSG;
	}
	v = json_object_get(root, "format");
	if (!json_is_object(root) || !json_is_string(v) ||
	    strcmp(json_string_value(v), KF_BACKUP_FORMAT) != 0) {
		kf_err_set(err, "not a keyfs backup (format)");
		goto out;
	}
	json_object_foreach(root, key, v)
	{
		size_t i = 0;

		while (i < sizeof(fields) / sizeof(fields[0]) &&
		       strcmp(key, fields[i]) != 0)
			i++;
		if (i == sizeof(fields) / sizeof(fields[0])) {
			char shown[40];

			printable(key, shown);
			kf_err_set(err, "unexpected field %s", shown);
			goto out;
		}
	}
	v = json_object_get(root, "created");
	if (!json_is_string(v) ||
	    kf_time_parse_rfc3339(json_string_value(v), &a->created) < 0) {
		r = field_error(err, "created", -EBADMSG);
		goto out;
	}
	if (get_u32(json_object_get(root, "key_version"), &a->key_version) <
	    0) {
		r = field_error(err, "key_version", -EBADMSG);
		goto out;
	}
	r = parse_versions(json_object_get(root, "versions"), a);
	if (r < 0) {
		field_error(err, "versions", r);
		goto out;
	}
	for (size_t i = 0; i < a->n_versions; i++)
		in = in || a->versions[i] == a->key_version;
	if (!in) {
		r = -EBADMSG;
		kf_err_set(err, "field key_version missing or malformed "
				"(not among versions)");
		goto out;
	}
	v = json_object_get(root, "nonce");
	r = json_is_string(v)
		? b64_decode(json_string_value(v), json_string_length(v),
			     &nonce, &nonce_len)
		: -EBADMSG;
	if (r == 0 && nonce_len != NONCE_LEN)
		r = -EBADMSG;
	if (r < 0) {
		field_error(err, "nonce", r);
		goto out;
	}
	memcpy(a->nonce, nonce, NONCE_LEN);
	v = json_object_get(root, "ciphertext");
	r = json_is_string(v)
		? b64_decode(json_string_value(v), json_string_length(v),
			     &a->ct, &a->ct_len)
		: -EBADMSG;
	if (r == 0 && a->ct_len < TAG_LEN)
		r = -EBADMSG;
	if (r < 0) {
		field_error(err, "ciphertext", r);
		goto out;
	}
	text = archive_text(a);
	if (!text) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	if (strlen(text) != len || memcmp(text, buf, len) != 0) {
		r = -EBADMSG;
		kf_err_set(err, "not in canonical form (fields reordered or "
				"spacing changed)");
		goto out;
	}
	r = 0;
out:
	free(text);
	free(nonce);
	json_decref(root);
	if (r < 0)
		archive_done(a);
	return r;
}

int kf_backup_read(const char *path, const uint8_t key[KF_BACKUP_KEY_BYTES],
		   uint8_t **ret_blob, size_t *ret_len,
		   struct kf_backup_info *ret_info, char err[KF_ERR_MAX])
{
	struct archive a = {0};
	struct stat st;
	uint8_t *buf = NULL, *m = NULL;
	unsigned long long mlen = 0;
	char *ad = NULL;
	const char *base;
	size_t len;
	int r;

	r = kf_file_read_all(path, KF_BACKUP_FILE_MAX, &buf, &len, &st, err);
	if (r == -ENOENT)
		kf_err_set(err, "no such backup");
	if (r < 0)
		return r;
	r = archive_parse(buf, len, &a, err);
	if (r < 0)
		goto out;
	ad = ad_text(&a);
	m = sodium_malloc(a.ct_len - TAG_LEN + 1);
	if (!ad || !m) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		m, &mlen, NULL, a.ct, a.ct_len, (const uint8_t *)ad, strlen(ad),
		a.nonce, key) != 0) {
		r = -EBADMSG;
		kf_err_set(err, "authentication failed (tampered, or made "
				"under another master key)");
		goto out;
	}
	if (ret_info) {
		memset(ret_info, 0, sizeof(*ret_info));
		base = strrchr(path, '/');
		snprintf(ret_info->name, sizeof(ret_info->name), "%s",
			 base ? base + 1 : path);
		ret_info->created = a.created;
		ret_info->key_version = a.key_version;
		ret_info->n_versions = (uint32_t)a.n_versions;
		ret_info->size = st.st_size;
		ret_info->mtime = (int64_t)st.st_mtim.tv_sec;
	}
	*ret_blob = m;
	*ret_len = (size_t)mlen;
	m = NULL;
	r = 0;
out:
	if (m)
		sodium_free(m);
	free(ad);
	archive_done(&a);
	sodium_free(buf);
	return r;
}

static int check_versions(uint32_t key_version, const uint32_t *versions,
			  size_t n_versions)
{
	bool in = false;

	if (!versions || n_versions == 0 || n_versions > MAX_VERSIONS)
		return -EINVAL;
	for (size_t i = 0; i < n_versions; i++) {
		if (versions[i] == 0 ||
		    (i > 0 && versions[i] >= versions[i - 1]))
			return -EINVAL;
		in = in || versions[i] == key_version;
	}
	return in ? 0 : -EINVAL;
}

/* Candidate i (1 = none, 2.. = "_i") of a generated name; false if invalid. */
static bool generated_name(const char *prefix, int64_t now, int i,
			   char out[KF_BACKUP_NAME_MAX + 1])
{
	char stamp[STAMP_LEN + 1], tail[16] = "";
	time_t t = (time_t)now;
	struct tm tm;
	int n;

	if (!gmtime_r(&t, &tm) ||
	    strftime(stamp, sizeof(stamp), "%Y%m%d_%H%M%S", &tm) != STAMP_LEN)
		return false;
	if (i > 1)
		snprintf(tail, sizeof(tail), "_%d", i);
	n = snprintf(out, KF_BACKUP_NAME_MAX + 1, "%s%s%s",
		     prefix ? prefix : KF_BACKUP_AUTO_PREFIX, stamp, tail);
	return n > 0 && n <= KF_BACKUP_NAME_MAX && kf_backup_name_valid(out);
}

/* Sets the temporary file's times to `now` and makes that durable. */
static int set_mtime(const char *dir, const char *tmp, int64_t now, char *err)
{
	struct timespec ts[2] = {{.tv_sec = (time_t)now},
				 {.tv_sec = (time_t)now}};
	char path[PATH_MAX];
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, tmp);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", path, strerror(-r));
		return r;
	}
	if (futimens(fd, ts) < 0)
		r = -errno;
	/* Never retried: after a failed fsync the pages are marked clean. */
	else if (fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		kf_err_set(err, "%s: setting mtime: %s", path, strerror(-r));
	return r;
}

/*
 * Links the prepared temporary file to its first free name: `name`, or the
 * generated candidates.  link(2) never replaces an existing file.
 */
/*
 * The highest suffix already used by generated names of this second (1 for
 * the bare name, 0 for none), so a new archive always sorts after them even
 * when a prune removed some.
 */
static int highest_suffix(const char *dir, const char *prefix, int64_t now)
{
	char base[KF_BACKUP_NAME_MAX + 1];
	struct dirent *de;
	int best = 0;
	size_t blen;
	DIR *d;

	if (!generated_name(prefix, now, 1, base) || !(d = opendir(dir)))
		return 0;
	blen = strlen(base);
	while ((de = readdir(d))) {
		const char *rest = de->d_name + blen;
		size_t digits;
		char num[8];
		uint64_t n;

		if (strncmp(de->d_name, base, blen) != 0)
			continue;
		if (strcmp(rest, KF_BACKUP_SUFFIX) == 0) {
			best = best > 1 ? best : 1;
			continue;
		}
		digits = strlen(rest) - (strlen(rest) >= KF_BACKUP_SUFFIX_LEN
					     ? KF_BACKUP_SUFFIX_LEN
					     : 0);
		if (rest[0] != '_' || rest[1] < '1' || rest[1] > '9' ||
		    digits < 2 || digits > 7 ||
		    strcmp(rest + digits, KF_BACKUP_SUFFIX) != 0)
			continue;
		memcpy(num, rest + 1, digits - 1);
		num[digits - 1] = 0;
		if (kf_parse_u64(num, MAX_SUFFIX, &n) == 0 && n >= 2 &&
		    n > (uint64_t)best)
			best = (int)n;
	}
	closedir(d);
	return best;
}

static int link_new(const char *dir, const char *tmp, const char *name,
		    const char *prefix, int64_t now,
		    char file[KF_BACKUP_FILE_NAME_MAX], char *err)
{
	char from[PATH_MAX], to[PATH_MAX], cand[KF_BACKUP_NAME_MAX + 1];
	int r = -EEXIST;

	snprintf(from, sizeof(from), "%s/%s", dir, tmp);
	for (int i = name ? 1 : highest_suffix(dir, prefix, now) + 1;
	     i <= MAX_SUFFIX; i++) {
		if (name)
			snprintf(cand, sizeof(cand), "%s", name);
		else if (!generated_name(prefix, now, i, cand))
			break;
		kf_backup_file_name(cand, file);
		snprintf(to, sizeof(to), "%s/%s", dir, file);
		if (link(from, to) == 0)
			return 0;
		r = -errno;
		if (r != -EEXIST) {
			kf_err_set(err, "%s: link: %s", to, strerror(-r));
			return r;
		}
		if (name)
			break;
	}
	if (name)
		kf_err_set(err, "backup %s already exists", file);
	else
		kf_err_set(err, "no free backup name for this time in %s", dir);
	return -EEXIST;
}

int kf_backup_write(const char *dir, const char *name, const char *prefix,
		    const uint8_t key[KF_BACKUP_KEY_BYTES], const uint8_t *blob,
		    size_t len, uint32_t key_version, const uint32_t *versions,
		    size_t n_versions, int64_t now, char *ret_name,
		    char err[KF_ERR_MAX])
{
	struct archive a = {.created = now,
			    .key_version = key_version,
			    .versions = (uint32_t *)versions,
			    .n_versions = n_versions};
	char tmp[PATH_MAX] = "", first[KF_BACKUP_NAME_MAX + 1];
	char file[KF_BACKUP_FILE_NAME_MAX];
	char *ad = NULL, *text = NULL;
	size_t nlen;
	int r;

	/* The name is not echoed: a mistaken write could be a key's text. */
	if (name) {
		nlen = strlen(name);
		if (!kf_backup_name_valid(name) ||
		    (nlen >= KF_BACKUP_SUFFIX_LEN &&
		     strcmp(name + nlen - KF_BACKUP_SUFFIX_LEN,
			    KF_BACKUP_SUFFIX) == 0)) {
			kf_err_set(err,
				   "invalid backup name: use 1 to %d "
				   "letters, digits, '.', '_' or '-', "
				   "starting with a letter or digit, no "
				   "\"..\" and no \".json\" ending",
				   KF_BACKUP_NAME_MAX);
			return -EINVAL;
		}
		if (kf_backup_name_reserved(name)) {
			kf_err_set(err,
				   "invalid backup name: names starting with "
				   "\"%s\" or \"%s\" are reserved for the "
				   "archives keyfs makes itself",
				   KF_BACKUP_AUTO_PREFIX,
				   KF_BACKUP_PRE_RESTORE_PREFIX);
			return -EINVAL;
		}
		snprintf(first, sizeof(first), "%s", name);
	} else if (!generated_name(prefix, now, 1, first)) {
		kf_err_set(err, "invalid backup name prefix");
		return -EINVAL;
	}
	if (!key || (!blob && len > 0) ||
	    check_versions(key_version, versions, n_versions) < 0) {
		kf_err_set(err, "backup: invalid key version list");
		return -EINVAL;
	}
	if (len > KF_BACKUP_FILE_MAX) {
		kf_err_set(err, "backup: keyring too large to archive");
		return -EFBIG;
	}
	randombytes_buf(a.nonce, sizeof(a.nonce));
	a.ct_len = len + TAG_LEN;
	a.ct = malloc(a.ct_len);
	ad = ad_text(&a);
	if (!a.ct || !ad) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	crypto_aead_xchacha20poly1305_ietf_encrypt(
	    a.ct, NULL, blob, len, (const uint8_t *)ad, strlen(ad), NULL,
	    a.nonce, key);
	text = archive_text(&a);
	if (!text) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	if (strlen(text) > KF_BACKUP_FILE_MAX) {
		r = -EFBIG;
		kf_err_set(err, "backup: archive would exceed %u bytes",
			   KF_BACKUP_FILE_MAX);
		goto out;
	}
	kf_backup_file_name(first, file);
	r = kf_file_prepare(dir, file, text, strlen(text), 0600, tmp, err);
	if (r < 0) {
		tmp[0] = 0;
		goto out;
	}
	r = set_mtime(dir, tmp, now, err);
	if (r < 0)
		goto out;
	r = link_new(dir, tmp, name, prefix, now, file, err);
	if (r < 0)
		goto out;
	kf_file_discard(dir, tmp);
	tmp[0] = 0;
	r = kf_dir_fsync(dir);
	if (r < 0) {
		char path[PATH_MAX];

		kf_err_set(err, "%s: fsync of directory: %s", dir,
			   strerror(-r));
		snprintf(path, sizeof(path), "%s/%s", dir, file);
		unlink(path);
		goto out;
	}
	if (ret_name)
		snprintf(ret_name, KF_BACKUP_FILE_NAME_MAX, "%s", file);
out:
	kf_file_discard(dir, tmp);
	free(text);
	free(ad);
	free(a.ct);
	return r;
}

/* The info of dir/file from its clear fields; -errno if not an archive. */
static int list_one(const char *dir, int dirfd, const char *file,
		    struct kf_backup_info *info)
{
	struct archive a;
	struct stat st;
	uint8_t *buf = NULL;
	char stem[KF_BACKUP_NAME_MAX + 1], *path;
	size_t len;
	int r;

	if (!kf_backup_stem(file, true, stem))
		return -EINVAL;
	if (fstatat(dirfd, file, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	path = kf_path_join(dir, file);
	if (!path)
		return -ENOMEM;
	/* The size and mtime listed are those of the file read. */
	r = kf_file_read_all(path, KF_BACKUP_FILE_MAX, &buf, &len, &st, NULL);
	free(path);
	if (r < 0)
		return r;
	r = archive_parse(buf, len, &a, NULL);
	sodium_free(buf);
	if (r < 0)
		return r;
	memset(info, 0, sizeof(*info));
	kf_backup_file_name(stem, info->name);
	info->created = a.created;
	info->key_version = a.key_version;
	info->n_versions = (uint32_t)a.n_versions;
	info->size = st.st_size;
	info->mtime = (int64_t)st.st_mtim.tv_sec;
	archive_done(&a);
	return 0;
}

static int newest_first(const void *pa, const void *pb)
{
	const struct kf_backup_info *a = pa, *b = pb;

	if (a->created != b->created)
		return a->created < b->created ? 1 : -1;
	/* Same second: x_10 is newer than x_9, which is newer than x. */
	return -strverscmp(a->name, b->name);
}

int kf_backup_list(const char *dir, struct kf_backup_info **ret, size_t *ret_n,
		   char err[KF_ERR_MAX])
{
	struct kf_backup_info *list = NULL, info;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd, r = 0;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", dir, strerror(-r));
		return r;
	}
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		kf_err_set(err, "%s: %s", dir, strerror(-r));
		close(fd);
		return r;
	}
	/* Beyond the cap the rest is left out; prune still never deletes
	 * one of the `keep` newest, as it only deletes listed older ones. */
	while (n < MAX_LIST) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			r = -errno;
			if (r < 0)
				kf_err_set(err, "%s: %s", dir, strerror(-r));
			break;
		}
		if (list_one(dir, dirfd(d), de->d_name, &info) < 0)
			continue;
		if (n == cap) {
			struct kf_backup_info *grown;

			cap = cap ? cap * 2 : 16;
			grown = realloc(list, cap * sizeof(*list));
			if (!grown) {
				r = -ENOMEM;
				kf_err_set(err, "out of memory");
				break;
			}
			list = grown;
		}
		list[n++] = info;
	}
	closedir(d);
	if (r < 0) {
		free(list);
		return r;
	}
	if (n > 1)
		qsort(list, n, sizeof(*list), newest_first);
	*ret = list;
	*ret_n = n;
	return 0;
}

/* The versions held by the archive dir/file (from its clear fields). */
static int archive_versions(const char *dir, const char *file,
			    struct archive *ret)
{
	uint8_t *buf = NULL;
	size_t len;
	char *path = kf_path_join(dir, file);
	int r;

	if (!path)
		return -ENOMEM;
	r = kf_file_read_all(path, KF_BACKUP_FILE_MAX, &buf, &len, NULL, NULL);
	free(path);
	if (r < 0)
		return r;
	r = archive_parse(buf, len, ret, NULL);
	sodium_free(buf);
	return r;
}

/* A growing set of version numbers (small: linear search is fine). */
struct version_set {
	uint32_t *v;
	size_t n, cap;
};

static bool set_has(const struct version_set *set, uint32_t version)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->v[i] == version)
			return true;
	return false;
}

static int set_add_all(struct version_set *set, const struct archive *a)
{
	for (size_t i = 0; i < a->n_versions; i++) {
		if (set_has(set, a->versions[i]))
			continue;
		if (set->n == set->cap) {
			size_t cap = set->cap ? set->cap * 2 : 64;
			uint32_t *grown = realloc(set->v, cap * sizeof(*grown));

			if (!grown)
				return -ENOMEM;
			set->v = grown;
			set->cap = cap;
		}
		set->v[set->n++] = a->versions[i];
	}
	return 0;
}

/*
 * Whether list[i] must be kept: it holds a version that `held` says the
 * keyring no longer has and that no archive kept so far (`covered`) holds.
 * A kept archive's versions join `covered`.
 */
static int must_keep(const char *dir, const struct kf_backup_info *info,
		     const struct kf_backup_prune_opts *o,
		     struct version_set *covered, bool *ret_keep)
{
	struct archive a = {0};
	bool keep = false;
	int r;

	r = archive_versions(dir, info->name, &a);
	if (r < 0)
		return r;
	for (size_t i = 0; i < a.n_versions && !keep; i++)
		keep = !o->held(a.versions[i], o->data) &&
		       !set_has(covered, a.versions[i]);
	r = keep ? set_add_all(covered, &a) : 0;
	archive_done(&a);
	*ret_keep = keep;
	return r;
}

int kf_backup_prune(const char *dir, const struct kf_backup_prune_opts *o,
		    struct kf_backup_prune_result *ret, char err[KF_ERR_MAX])
{
	struct kf_backup_info *list = NULL;
	struct version_set covered = {0};
	struct kf_backup_prune_result res = {0};
	size_t prefix_len = o->prefix ? strlen(o->prefix) : 0;
	bool protect = !o->force && o->held;
	bool *doomed = NULL;
	unsigned seen = 0;
	int r = 0, r2;

	r = kf_backup_list(dir, &list, &res.listed, err);
	if (r < 0)
		return r;
	doomed = calloc(res.listed ? res.listed : 1, sizeof(*doomed));
	if (!doomed) {
		free(list);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	/* First what stays whatever happens: its versions are covered. */
	for (size_t i = 0; i < res.listed && r == 0; i++) {
		struct archive a = {0};

		if ((!prefix_len ||
		     strncmp(list[i].name, o->prefix, prefix_len) == 0) &&
		    seen++ >= o->keep) {
			doomed[i] = true;
			continue;
		}
		if (!protect)
			continue;
		r = archive_versions(dir, list[i].name, &a);
		if (r == 0)
			r = set_add_all(&covered, &a);
		archive_done(&a);
		if (r < 0)
			kf_err_set(err, "%s: cannot read its versions: %s",
				   list[i].name, strerror(-r));
	}
	/*
	 * Then the older ones, newest first: the newest archive holding a
	 * version the keyring no longer has, and that nothing kept holds, is
	 * that version's last copy.
	 */
	for (size_t i = 0; i < res.listed && r == 0; i++) {
		bool keep = false;
		char *path;

		if (!doomed[i])
			continue;
		if (protect) {
			r = must_keep(dir, &list[i], o, &covered, &keep);
			if (r < 0) {
				kf_err_set(err,
					   "%s: cannot read its versions: %s",
					   list[i].name, strerror(-r));
				break;
			}
			res.protected += keep;
			if (keep)
				continue;
		}
		if (o->dry_run) {
			res.deleted++;
			continue;
		}
		path = kf_path_join(dir, list[i].name);
		if (!path) {
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
			break;
		}
		if (unlink(path) == 0) {
			res.deleted++;
		} else if (errno != ENOENT) {
			r = -errno;
			kf_err_set(err,
				   "%s: cannot delete (after %zu deleted): %s",
				   path, res.deleted, strerror(-r));
		}
		free(path);
	}
	free(doomed);
	free(list);
	free(covered.v);
	if (res.deleted > 0) {
		r2 = kf_dir_fsync(dir);
		if (r2 < 0 && r == 0) {
			r = r2;
			kf_err_set(err, "%s: fsync of directory: %s", dir,
				   strerror(-r));
		}
	}
	*ret = res;
	return r;
}
