// SPDX-License-Identifier: MIT
/*
 * backup_format: one encrypted, authenticated backup archive (backup.h,
 * DESIGN.md §5): its clear fields, sealing, the strict parse and the read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <sodium.h>

#include "aead.h"
#include "backup_private.h"

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES
#define B64 sodium_base64_VARIANT_ORIGINAL
#define MAX_VERSIONS 65536u /* far above any keyring's retain_versions */

_Static_assert(KF_BACKUP_KEY_BYTES ==
		   crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
	       "the archive key is an XChaCha20-Poly1305 key");

static const char *const fields[] = {"format",	 "created", "key_version",
				     "versions", "nonce",   "ciphertext",
				     "recovery"};

/* The clear fields and the decoded sealed part of one archive. */
struct archive {
	struct kf_backup_clear c;
	uint8_t nonce[NONCE_LEN];
	uint8_t *ct;
	size_t ct_len;
	char *recovery; /* base64 of the recovery seal; NULL: none */
};

void kf_backup_clear_done(struct kf_backup_clear *c)
{
	free(c->versions);
	memset(c, 0, sizeof(*c));
}

static void archive_done(struct archive *a)
{
	kf_backup_clear_done(&a->c);
	free(a->ct);
	free(a->recovery);
	memset(a, 0, sizeof(*a));
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
static json_t *clear_object(const struct kf_backup_clear *c)
{
	char stamp[KF_RFC3339_LEN + 1];
	json_t *o = json_object(), *arr = json_array();
	int bad = !o || !arr;

	kf_time_rfc3339(c->created, stamp);
	for (size_t i = 0; !bad && i < c->n_versions; i++)
		bad = json_array_append_new(arr, json_integer(c->versions[i]));
	if (!bad)
		bad = json_object_set_new(o, "format",
					  json_string(KF_BACKUP_FORMAT)) ||
		      json_object_set_new(o, "created", json_string(stamp)) ||
		      json_object_set_new(o, "key_version",
					  json_integer(c->key_version));
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

	o = clear_object(&a->c);
	nonce = b64_encode(a->nonce, sizeof(a->nonce));
	ct = b64_encode(a->ct, a->ct_len);
	if (!o || !nonce || !ct ||
	    json_object_set_new(o, "nonce", json_string(nonce)) ||
	    json_object_set_new(o, "ciphertext", json_string(ct)) ||
	    (a->recovery &&
	     json_object_set_new(o, "recovery", json_string(a->recovery))))
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
	json_t *o = clear_object(&a->c);
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

static int parse_versions(const json_t *arr, struct kf_backup_clear *c)
{
	size_t n = json_array_size(arr);

	if (!json_is_array(arr) || n == 0 || n > MAX_VERSIONS)
		return -EBADMSG;
	c->versions = calloc(n, sizeof(*c->versions));
	if (!c->versions)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (get_u32(json_array_get(arr, i), &c->versions[i]) < 0 ||
		    (i > 0 && c->versions[i] >= c->versions[i - 1]))
			return -EBADMSG;
	}
	c->n_versions = n;
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
	    kf_time_parse_rfc3339(json_string_value(v), &a->c.created) < 0) {
		r = field_error(err, "created", -EBADMSG);
		goto out;
	}
	if (get_u32(json_object_get(root, "key_version"), &a->c.key_version) <
	    0) {
		r = field_error(err, "key_version", -EBADMSG);
		goto out;
	}
	r = parse_versions(json_object_get(root, "versions"), &a->c);
	if (r < 0) {
		field_error(err, "versions", r);
		goto out;
	}
	for (size_t i = 0; i < a->c.n_versions; i++)
		in = in || a->c.versions[i] == a->c.key_version;
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
	v = json_object_get(root, "recovery");
	if (v) {
		uint8_t *seal = NULL;
		size_t seal_len = 0;

		r = json_is_string(v)
			? b64_decode(json_string_value(v),
				     json_string_length(v), &seal, &seal_len)
			: -EBADMSG;
		free(seal);
		if (r == 0 && seal_len < crypto_box_SEALBYTES)
			r = -EBADMSG;
		if (r == 0 && !(a->recovery = strdup(json_string_value(v))))
			r = -ENOMEM;
		if (r < 0) {
			field_error(err, "recovery", r);
			goto out;
		}
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

/* Reads and parses the archive at path (no decryption); err may be NULL. */
static int archive_load(const char *path, struct archive *a, struct stat *st,
			char *err)
{
	uint8_t *buf = NULL;
	size_t len;
	int r;

	memset(a, 0, sizeof(*a));
	r = kf_file_read_all(path, KF_BACKUP_FILE_MAX, &buf, &len, st, err);
	if (r < 0)
		return r;
	r = archive_parse(buf, len, a, err);
	sodium_free(buf);
	return r;
}

int kf_backup_load_clear(const char *path, struct kf_backup_clear *ret,
			 struct stat *ret_st, char *err)
{
	struct archive a;
	int r = archive_load(path, &a, ret_st, err);

	if (r < 0)
		return r;
	*ret = a.c;
	free(a.ct);
	free(a.recovery);
	return 0;
}

/* Opens a parsed archive under key: *ret_m (sodium_malloc'd), *ret_len. */
static int archive_open(const struct archive *a,
			const uint8_t key[KF_BACKUP_KEY_BYTES], uint8_t **ret_m,
			size_t *ret_len, char err[KF_ERR_MAX])
{
	unsigned long long mlen = 0;
	char *ad = ad_text(a);
	uint8_t *m = sodium_malloc(a->ct_len - TAG_LEN + 1);
	int r = 0;

	if (!ad || !m) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
	} else if (kf_aead_open(m, &mlen, a->ct, a->ct_len, (const uint8_t *)ad,
				strlen(ad), a->nonce, key) < 0) {
		r = -EBADMSG;
		kf_err_set(err, "authentication failed (tampered, or made "
				"under another master key)");
	}
	free(ad);
	if (r < 0) {
		if (m)
			sodium_free(m);
		return r;
	}
	*ret_m = m;
	*ret_len = (size_t)mlen;
	return 0;
}

/* archive_load of a backup asked for by path: a missing one is said so. */
static int archive_read(const char *path, struct archive *a, struct stat *st,
			char err[KF_ERR_MAX])
{
	int r = archive_load(path, a, st, err);

	if (r == -ENOENT)
		kf_err_set(err, "no such backup");
	return r;
}

/* What kf_backup_read tells of the archive a, read from path (st). */
static void fill_info(const char *path, const struct archive *a,
		      const struct stat *st, struct kf_backup_info *ret)
{
	const char *base = strrchr(path, '/');

	memset(ret, 0, sizeof(*ret));
	snprintf(ret->name, sizeof(ret->name), "%s", base ? base + 1 : path);
	ret->created = a->c.created;
	ret->key_version = a->c.key_version;
	ret->n_versions = (uint32_t)a->c.n_versions;
	ret->size = st->st_size;
	ret->mtime = (int64_t)st->st_mtim.tv_sec;
	ret->recovery = a->recovery != NULL;
}

int kf_backup_read(const char *path, const uint8_t key[KF_BACKUP_KEY_BYTES],
		   uint8_t **ret_blob, size_t *ret_len,
		   struct kf_backup_info *ret_info, char err[KF_ERR_MAX])
{
	struct archive a;
	struct stat st;
	int r;

	r = archive_read(path, &a, &st, err);
	if (r < 0)
		return r;
	r = archive_open(&a, key, ret_blob, ret_len, err);
	if (r == 0 && ret_info)
		fill_info(path, &a, &st, ret_info);
	archive_done(&a);
	return r;
}

int kf_backup_check_bytes(const uint8_t *text, size_t len,
			  const uint8_t key[KF_BACKUP_KEY_BYTES],
			  int64_t *ret_created, char err[KF_ERR_MAX])
{
	struct archive a;
	uint8_t *m = NULL;
	size_t mlen = 0;
	int r;

	if (len > KF_BACKUP_FILE_MAX) {
		kf_err_set(err, "archive over %u bytes", KF_BACKUP_FILE_MAX);
		return -EFBIG;
	}
	r = archive_parse(text, len, &a, err);
	if (r < 0)
		return r;
	r = archive_open(&a, key, &m, &mlen, err);
	if (r == 0) {
		sodium_free(m);
		*ret_created = a.c.created;
	}
	archive_done(&a);
	return r;
}

static int check_versions(const struct kf_backup_clear *c)
{
	bool in = false;

	if (!c->versions || c->n_versions == 0 || c->n_versions > MAX_VERSIONS)
		return -EINVAL;
	for (size_t i = 0; i < c->n_versions; i++) {
		if (c->versions[i] == 0 ||
		    (i > 0 && c->versions[i] >= c->versions[i - 1]))
			return -EINVAL;
		in = in || c->versions[i] == c->key_version;
	}
	return in ? 0 : -EINVAL;
}

/*
 * The recovery seal of blob for the archive a: crypto_box_seal to pk of the
 * associated data, "\n" and blob, base64 into a->recovery.
 */
static int seal_recovery(struct archive *a, const char *ad,
			 const uint8_t pk[KF_BACKUP_RECOVERY_KEY_BYTES],
			 const uint8_t *blob, size_t len, char err[KF_ERR_MAX])
{
	size_t ad_len = strlen(ad), plen = ad_len + 1 + len;
	uint8_t *plain = sodium_malloc(plen + 1);
	uint8_t *seal = malloc(plen + crypto_box_SEALBYTES);
	int r = 0;

	if (!plain || !seal) {
		r = -ENOMEM;
	} else {
		memcpy(plain, ad, ad_len);
		plain[ad_len] = '\n';
		if (len)
			memcpy(plain + ad_len + 1, blob, len);
		if (crypto_box_seal(seal, plain, plen, pk) != 0)
			r = -EINVAL;
		else if (!(a->recovery =
			       b64_encode(seal, plen + crypto_box_SEALBYTES)))
			r = -ENOMEM;
	}
	if (r == -EINVAL)
		kf_err_set(err, "backup: the recovery public key is unusable");
	else if (r < 0)
		kf_err_set(err, "out of memory");
	if (plain)
		sodium_free(plain);
	free(seal);
	return r;
}

/*
 * Seals blob into a (its clear fields set; a->recovery kept, or made when
 * pk is given) and gives the archive's text.
 */
static int archive_seal(struct archive *a,
			const uint8_t key[KF_BACKUP_KEY_BYTES],
			const uint8_t *pk, const uint8_t *blob, size_t len,
			char **ret_text, char err[KF_ERR_MAX])
{
	char *ad = NULL, *text = NULL;
	int r = 0;

	if (!key || (!blob && len > 0) || check_versions(&a->c) < 0) {
		kf_err_set(err, "backup: invalid key version list");
		return -EINVAL;
	}
	if (len > KF_BACKUP_FILE_MAX) {
		kf_err_set(err, "backup: keyring too large to archive");
		return -EFBIG;
	}
	randombytes_buf(a->nonce, sizeof(a->nonce));
	free(a->ct);
	a->ct_len = len + TAG_LEN;
	a->ct = malloc(a->ct_len);
	ad = ad_text(a);
	if (!a->ct || !ad) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	crypto_aead_xchacha20poly1305_ietf_encrypt(
	    a->ct, NULL, blob, len, (const uint8_t *)ad, strlen(ad), NULL,
	    a->nonce, key);
	if (pk)
		r = seal_recovery(a, ad, pk, blob, len, err);
	if (r < 0)
		goto out;
	text = archive_text(a);
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
	*ret_text = text;
	text = NULL;
out:
	free(text);
	free(ad);
	return r;
}

int kf_backup_seal(const struct kf_backup_clear *c,
		   const uint8_t key[KF_BACKUP_KEY_BYTES],
		   const uint8_t *recovery_pk, const uint8_t *blob, size_t len,
		   char **ret_text, char err[KF_ERR_MAX])
{
	struct archive a = {.c = *c};
	int r = archive_seal(&a, key, recovery_pk, blob, len, ret_text, err);

	free(a.ct);
	free(a.recovery);
	return r;
}

int kf_backup_reseal(const uint8_t *buf, size_t len, const uint8_t *old_key,
		     const uint8_t new_key[KF_BACKUP_KEY_BYTES],
		     char **ret_text, int64_t *ret_created,
		     char err[KF_ERR_MAX])
{
	struct archive a;
	uint8_t *m = NULL;
	size_t mlen = 0;
	char why[KF_ERR_MAX];
	int r;

	if (kf_backup_check_bytes(buf, len, new_key, ret_created, why) == 0)
		return 0;
	r = archive_parse(buf, len, &a, err);
	if (r < 0)
		return r;
	*ret_created = a.c.created;
	r = old_key ? archive_open(&a, old_key, &m, &mlen, err) : -EBADMSG;
	if (r < 0 && !old_key)
		kf_err_set(err, "does not open under the new master key");
	/* The recovery seal does not depend on the master key: kept. */
	if (r == 0) {
		r = archive_seal(&a, new_key, NULL, m, mlen, ret_text, err);
		sodium_free(m);
	}
	archive_done(&a);
	return r < 0 ? r : 1;
}

int kf_backup_recover(const char *path,
		      const uint8_t sk[KF_BACKUP_RECOVERY_KEY_BYTES],
		      uint8_t **ret_blob, size_t *ret_len,
		      struct kf_backup_info *ret_info, char err[KF_ERR_MAX])
{
	uint8_t pk[KF_BACKUP_RECOVERY_KEY_BYTES];
	uint8_t *seal = NULL, *plain = NULL, *blob = NULL;
	size_t seal_len = 0, plen, ad_len;
	struct archive a;
	struct stat st;
	char *ad = NULL;
	int r;

	r = archive_read(path, &a, &st, err);
	if (r < 0)
		return r;
	if (!a.recovery) {
		r = -ENODATA;
		kf_err_set(err, "the archive has no recovery seal (made "
				"without recovery_public_key)");
		goto out;
	}
	ad = ad_text(&a);
	r = ad ? b64_decode(a.recovery, strlen(a.recovery), &seal, &seal_len)
	       : -ENOMEM;
	plen = r == 0 ? seal_len - crypto_box_SEALBYTES : 0;
	plain = r == 0 ? sodium_malloc(plen + 1) : NULL;
	if (r == 0 && !plain)
		r = -ENOMEM;
	if (r < 0) {
		kf_err_set(err, "out of memory");
		goto out;
	}
	crypto_scalarmult_base(pk, sk);
	if (crypto_box_seal_open(plain, seal, seal_len, pk, sk) != 0) {
		r = -EBADMSG;
		kf_err_set(err, "the recovery seal does not open under this "
				"private key (another key, or tampered)");
		goto out;
	}
	ad_len = strlen(ad);
	if (plen < ad_len + 1 || memcmp(plain, ad, ad_len) != 0 ||
	    plain[ad_len] != '\n') {
		r = -EBADMSG;
		kf_err_set(err, "the recovery seal belongs to another archive "
				"(the clear fields sealed in it differ)");
		goto out;
	}
	blob = sodium_malloc(plen - ad_len);
	if (!blob) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	memcpy(blob, plain + ad_len + 1, plen - ad_len - 1);
	*ret_blob = blob;
	*ret_len = plen - ad_len - 1;
	if (ret_info)
		fill_info(path, &a, &st, ret_info);
out:
	if (plain)
		sodium_free(plain);
	free(seal);
	free(ad);
	archive_done(&a);
	return r;
}
