// SPDX-License-Identifier: MIT
/* key: data keys, Fernet text form, derivation and fingerprints. */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "key.h"

/* 32 bytes = 256 bits: 43 base64 digits carry 258 bits, then one '='. */
#define KEY_DATA_CHARS 43

static bool is_urlsafe(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static unsigned urlsafe_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return (unsigned)(c - 'A');
	if (c >= 'a' && c <= 'z')
		return (unsigned)(c - 'a') + 26;
	if (c >= '0' && c <= '9')
		return (unsigned)(c - '0') + 52;
	return c == '-' ? 62 : 63;
}

/*
 * Why a character is not part of a key, without naming the character (beyond
 * its class) so that no key text reaches a message.
 */
static const char *char_reason(unsigned char c)
{
	if (c == '+' || c == '/')
		return "standard base64 alphabet; keys use the URL-safe one";
	if (c == '=')
		return "'=' padding before the end";
	if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	    c == '\f')
		return "whitespace";
	if (c < 0x20 || c >= 0x7f)
		return "not text: binary data?";
	return "not URL-safe base64";
}

void kf_key_generate(uint8_t key[KF_KEY_BYTES])
{
	randombytes_buf(key, KF_KEY_BYTES);
}

void kf_key_encode(const uint8_t key[KF_KEY_BYTES],
		   char text[KF_KEY_TEXT_LEN + 1])
{
	sodium_bin2base64(text, KF_KEY_TEXT_LEN + 1, key, KF_KEY_BYTES,
			  sodium_base64_VARIANT_URLSAFE);
}

int kf_key_decode(const char *text, size_t len, uint8_t ret_key[KF_KEY_BYTES],
		  char err[KF_ERR_MAX])
{
	const unsigned char *s = (const unsigned char *)text;
	uint8_t buf[KF_KEY_BYTES];
	size_t bin_len = 0;
	const char *end = NULL;
	int r = -EINVAL;

	if (!text || len == 0) {
		kf_err_set(err, "empty key");
		return -EINVAL;
	}
	/* Binary input first: its length says nothing useful. */
	for (size_t i = 0; i < len; i++) {
		if (s[i] == 0) {
			kf_err_set(err,
				   "NUL byte at position %zu (binary data, "
				   "not key text)",
				   i + 1);
			return -EINVAL;
		}
	}
	if (len != KF_KEY_TEXT_LEN) {
		const char *hint = "";

		if (len == KF_KEY_TEXT_LEN + 1 && s[len - 1] == '\n')
			hint = " (ends with a newline)";
		else if (len == KEY_DATA_CHARS && is_urlsafe(s[len - 1]))
			hint = " (missing '=' padding?)";
		kf_err_set(err, "expected %d characters, got %zu%s",
			   KF_KEY_TEXT_LEN, len, hint);
		return -EINVAL;
	}
	for (size_t i = 0; i < KEY_DATA_CHARS; i++) {
		if (!is_urlsafe(s[i])) {
			kf_err_set(err,
				   "invalid character at position %zu (%s)",
				   i + 1, char_reason(s[i]));
			return -EINVAL;
		}
	}
	if (s[KEY_DATA_CHARS] != '=') {
		if (is_urlsafe(s[KEY_DATA_CHARS]))
			kf_err_set(err,
				   "bad padding: missing '=' at position %d",
				   KF_KEY_TEXT_LEN);
		else
			kf_err_set(err, "invalid character at position %d (%s)",
				   KF_KEY_TEXT_LEN,
				   char_reason(s[KEY_DATA_CHARS]));
		return -EINVAL;
	}
	/* The last digit carries 4 key bits and 2 bits that must be zero. */
	if ((urlsafe_value(s[KEY_DATA_CHARS - 1]) & 3) != 0) {
		kf_err_set(err,
			   "bad padding: character %d has non-zero trailing "
			   "bits (not the encoding of a 32-byte key)",
			   KEY_DATA_CHARS);
		return -EINVAL;
	}
	if (sodium_base642bin(buf, sizeof(buf), text, len, NULL, &bin_len, &end,
			      sodium_base64_VARIANT_URLSAFE) != 0 ||
	    bin_len != KF_KEY_BYTES || end != text + len) {
		kf_err_set(err, "not the base64 encoding of a 32-byte key");
		goto out;
	}
	if (ret_key)
		memcpy(ret_key, buf, KF_KEY_BYTES);
	r = 0;
out:
	sodium_memzero(buf, sizeof(buf));
	return r;
}

int kf_key_derive(const uint8_t key[KF_KEY_BYTES], const char *purpose,
		  uint8_t ret[KF_KEY_BYTES], char err[KF_ERR_MAX])
{
	static const uint8_t salt[crypto_generichash_blake2b_SALTBYTES];
	uint8_t personal[crypto_generichash_blake2b_PERSONALBYTES] = {0};

	if (!kf_purpose_valid(purpose)) {
		kf_err_set(err,
			   "invalid purpose name: must match "
			   "[a-z0-9][a-z0-9_-]{0,%d}",
			   KF_PURPOSE_MAX - 1);
		return -EINVAL;
	}
	memcpy(personal, KF_KEY_DERIVE_PERSONAL,
	       sizeof(KF_KEY_DERIVE_PERSONAL) - 1);
	if (crypto_generichash_blake2b_salt_personal(
		ret, KF_KEY_BYTES, (const uint8_t *)purpose, strlen(purpose),
		key, KF_KEY_BYTES, salt, personal) != 0) {
		kf_err_set(err, "BLAKE2b failed");
		return -EIO;
	}
	return 0;
}

void kf_key_fingerprint(const uint8_t key[KF_KEY_BYTES],
			char ret[KF_KEY_FPR_LEN + 1])
{
	static const uint8_t salt[crypto_generichash_blake2b_SALTBYTES];
	uint8_t personal[crypto_generichash_blake2b_PERSONALBYTES] = {0};
	uint8_t h[crypto_generichash_blake2b_BYTES];

	memcpy(personal, KF_KEY_FPR_PERSONAL, sizeof(KF_KEY_FPR_PERSONAL) - 1);
	/* Cannot fail: every length is within BLAKE2b's limits. */
	crypto_generichash_blake2b_salt_personal(
	    h, sizeof(h), key, KF_KEY_BYTES, NULL, 0, salt, personal);
	kf_hex(h, KF_KEY_FPR_LEN / 2, ret);
	sodium_memzero(h, sizeof(h));
}

bool kf_purpose_valid(const char *name)
{
	size_t i;

	if (!name)
		return false;
	for (i = 0; name[i]; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  (i > 0 && (c == '_' || c == '-'));

		if (!ok || i >= KF_PURPOSE_MAX)
			return false;
	}
	return i > 0;
}
