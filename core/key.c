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
	int r;

	if (!kf_purpose_valid(purpose)) {
		kf_err_set(err,
			   "invalid purpose name: must match "
			   "[a-z0-9][a-z0-9_-]{0,%d}",
			   KF_PURPOSE_MAX - 1);
		return -EINVAL;
	}
	memcpy(personal, KF_KEY_DERIVE_PERSONAL,
	       sizeof(KF_KEY_DERIVE_PERSONAL) - 1);
	r = crypto_generichash_blake2b_salt_personal(
	    ret, KF_KEY_BYTES, (const uint8_t *)purpose, strlen(purpose), key,
	    KF_KEY_BYTES, salt, personal);
	/* BLAKE2b's state, holding the derived key, is on its stack. */
	kf_key_wipe_stack(KF_KEY_WIPE_CALL);
	if (r != 0) {
		kf_err_set(err, "BLAKE2b failed");
		return -EIO;
	}
	return 0;
}

void kf_key_fingerprint(const uint8_t key[KF_KEY_BYTES],
			char ret[KF_KEY_FPR_LEN + 1])
{
	kf_key_fingerprint_as(key, KF_KEY_FPR_PERSONAL, ret);
}

void kf_key_fingerprint_as(const uint8_t key[KF_KEY_BYTES], const char *person,
			   char ret[KF_KEY_FPR_LEN + 1])
{
	static const uint8_t salt[crypto_generichash_blake2b_SALTBYTES];
	uint8_t personal[crypto_generichash_blake2b_PERSONALBYTES] = {0};
	uint8_t h[crypto_generichash_blake2b_BYTES];
	size_t n = strlen(person);

	memcpy(personal, person, n < sizeof(personal) ? n : sizeof(personal));
	/* Cannot fail: every length is within BLAKE2b's limits. */
	crypto_generichash_blake2b_salt_personal(
	    h, sizeof(h), key, KF_KEY_BYTES, NULL, 0, salt, personal);
	kf_key_wipe_stack(KF_KEY_WIPE_CALL); /* the key was its message */
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

#if defined(__x86_64__)
/* Registers 16-31 exist only with AVX-512, and vzeroall leaves them. */
__attribute__((target("avx512f"))) static void wipe_zmm16_31(void)
{
	__asm__ volatile("vpxord %%zmm16, %%zmm16, %%zmm16\n\t"
			 "vpxord %%zmm17, %%zmm17, %%zmm17\n\t"
			 "vpxord %%zmm18, %%zmm18, %%zmm18\n\t"
			 "vpxord %%zmm19, %%zmm19, %%zmm19\n\t"
			 "vpxord %%zmm20, %%zmm20, %%zmm20\n\t"
			 "vpxord %%zmm21, %%zmm21, %%zmm21\n\t"
			 "vpxord %%zmm22, %%zmm22, %%zmm22\n\t"
			 "vpxord %%zmm23, %%zmm23, %%zmm23\n\t"
			 "vpxord %%zmm24, %%zmm24, %%zmm24\n\t"
			 "vpxord %%zmm25, %%zmm25, %%zmm25\n\t"
			 "vpxord %%zmm26, %%zmm26, %%zmm26\n\t"
			 "vpxord %%zmm27, %%zmm27, %%zmm27\n\t"
			 "vpxord %%zmm28, %%zmm28, %%zmm28\n\t"
			 "vpxord %%zmm29, %%zmm29, %%zmm29\n\t"
			 "vpxord %%zmm30, %%zmm30, %%zmm30\n\t"
			 "vpxord %%zmm31, %%zmm31, %%zmm31"
			 :
			 :
			 : "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21",
			   "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27",
			   "xmm28", "xmm29", "xmm30", "xmm31");
}
#endif

/*
 * The vector registers can still hold key bytes that memcpy or libsodium
 * moved; a core stores them.  Only x86-64 is handled.
 */
static void wipe_vector_registers(void)
{
#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx")) {
		__asm__ volatile("vzeroall"
				 :
				 :
				 : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
				   "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
				   "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
				   "xmm15");
	} else {
		__asm__ volatile("pxor %%xmm0, %%xmm0\n\t"
				 "pxor %%xmm1, %%xmm1\n\t"
				 "pxor %%xmm2, %%xmm2\n\t"
				 "pxor %%xmm3, %%xmm3\n\t"
				 "pxor %%xmm4, %%xmm4\n\t"
				 "pxor %%xmm5, %%xmm5\n\t"
				 "pxor %%xmm6, %%xmm6\n\t"
				 "pxor %%xmm7, %%xmm7\n\t"
				 "pxor %%xmm8, %%xmm8\n\t"
				 "pxor %%xmm9, %%xmm9\n\t"
				 "pxor %%xmm10, %%xmm10\n\t"
				 "pxor %%xmm11, %%xmm11\n\t"
				 "pxor %%xmm12, %%xmm12\n\t"
				 "pxor %%xmm13, %%xmm13\n\t"
				 "pxor %%xmm14, %%xmm14\n\t"
				 "pxor %%xmm15, %%xmm15"
				 :
				 :
				 : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
				   "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
				   "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
				   "xmm15");
	}
	if (__builtin_cpu_supports("avx512f"))
		wipe_zmm16_31();
#endif
}

__attribute__((noinline)) void kf_key_wipe_stack(size_t len)
{
	size_t n = len < KF_KEY_WIPE_OPERATION ? len : KF_KEY_WIPE_OPERATION;
	/* A VLA, so that the wiped bytes start right below the caller. */
	unsigned char pad[n > 0 ? n : 1];

	sodium_memzero(pad, sizeof(pad));
	wipe_vector_registers();
}
