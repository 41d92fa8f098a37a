// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/key: text form, validation reasons, derivation (against
 * the DESIGN.md vector and Python's hashlib), Fernet compatibility with
 * Python's cryptography, fingerprints and purpose names.  Keys are compared
 * with memcmp/strcmp only, so a failure never prints key material.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "helpers.h"
#include "key.h"

#define PY "/usr/bin/python3"

static void setup(void)
{
	cr_assert(sodium_init() >= 0);
}

TestSuite(key, .init = setup);

/* Asserts that decoding text fails with -EINVAL and a reason containing want.
 */
static void expect_invalid(const char *text, size_t len, const char *want)
{
	char err[KF_ERR_MAX] = "";
	uint8_t key[KF_KEY_BYTES];

	memset(key, 0xa5, sizeof(key));
	cr_assert(kf_key_decode(text, len, key, err) == -EINVAL,
		  "malformed key accepted (expected reason: %s)", want);
	cr_assert(kt_contains(err, want), "reason \"%s\" lacks \"%s\"", err,
		  want);
	for (size_t i = 0; i < sizeof(key); i++)
		cr_assert(key[i] == 0xa5, "ret_key written on failure");
	/* The reason must not quote any run of the key text. */
	for (size_t i = 0; i + 5 <= len; i++) {
		char run[6];

		memcpy(run, text + i, 5);
		run[5] = 0;
		if (memchr(run, 0, 5) || strspn(run, " ") == 5)
			continue;
		cr_assert(!kt_contains(err, run),
			  "reason quotes the key text at offset %zu", i);
	}
}

static void hex_to_bin(const char *hex, uint8_t *out, size_t n)
{
	size_t bin_len = 0;

	cr_assert(sodium_hex2bin(out, n, hex, strlen(hex), NULL, &bin_len,
				 NULL) == 0 &&
		  bin_len == n);
}

Test(key, derive_test_vector)
{
	uint8_t key[KF_KEY_BYTES], out[KF_KEY_BYTES];
	char hex[2 * KF_KEY_BYTES + 1], text[KF_KEY_TEXT_LEN + 1];

	memset(key, 0x6b, sizeof(key));
	cr_assert(kf_key_derive(key, "phi", out, NULL) == 0);
	kf_hex(out, sizeof(out), hex);
	cr_assert(strcmp(hex, "5aaf8e09543c0de234bea9edb35adf1aca9e4ccbd71334c"
			      "6136e7729b16f8cc6") == 0,
		  "derive('k'*32, phi) does not match the DESIGN.md vector");
	kf_key_encode(out, text);
	cr_assert(
	    strcmp(text, "Wq-OCVQ8DeI0vqnts1rfGsqeTMvXEzTGE253KbFvjMY=") == 0,
	    "text form of derive('k'*32, phi) does not match DESIGN.md");
}

Test(key, derive_matches_python_hashlib)
{
	static const char *const purposes[] = {
	    "phi", "pii",   "audit", "backup",
	    "a",   "x-1_y", "0",     "abcdefghijklmnopqrstuvwxyz012345"};
	const size_t n = sizeof(purposes) / sizeof(purposes[0]);
	uint8_t keys[8][KF_KEY_BYTES];
	char *input = NULL, *out = NULL, *line, *save = NULL;
	size_t input_len = 0, i = 0;
	FILE *f = open_memstream(&input, &input_len);

	cr_assert(f);
	for (i = 0; i < n; i++) {
		char hex[2 * KF_KEY_BYTES + 1];

		kf_key_generate(keys[i]);
		kf_hex(keys[i], KF_KEY_BYTES, hex);
		fprintf(f, "%s %s\n", hex, purposes[i]);
	}
	cr_assert(fclose(f) == 0);
	cr_assert(kt_run(PY
			 " -c 'import hashlib, sys\n"
			 "for l in sys.stdin:\n"
			 "    k, p = l.split()\n"
			 "    print(hashlib.blake2b(p.encode(), digest_size=32,"
			 " key=bytes.fromhex(k),"
			 " person=b\"keyfs.derive.v1\").hexdigest())'",
			 input, &out, NULL) == 0,
		  "python3 hashlib failed");
	i = 0;
	for (line = strtok_r(out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save), i++) {
		uint8_t mine[KF_KEY_BYTES], theirs[KF_KEY_BYTES];

		cr_assert(i < n, "python printed too many lines");
		hex_to_bin(line, theirs, sizeof(theirs));
		cr_assert(kf_key_derive(keys[i], purposes[i], mine, NULL) == 0);
		cr_assert(memcmp(mine, theirs, sizeof(mine)) == 0,
			  "derive differs from hashlib.blake2b for purpose %s",
			  purposes[i]);
	}
	cr_assert(i == n, "python printed %zu of %zu results", i, n);
	sodium_memzero(input, input_len);
	sodium_memzero(keys, sizeof(keys));
	free(input);
	free(out);
}

Test(key, derive_depends_on_key_and_purpose)
{
	uint8_t k1[KF_KEY_BYTES], k2[KF_KEY_BYTES];
	uint8_t a[KF_KEY_BYTES], b[KF_KEY_BYTES], c[KF_KEY_BYTES],
	    d[KF_KEY_BYTES];

	kf_key_generate(k1);
	kf_key_generate(k2);
	cr_assert(kf_key_derive(k1, "phi", a, NULL) == 0);
	cr_assert(kf_key_derive(k1, "phi", b, NULL) == 0);
	cr_assert(kf_key_derive(k1, "pii", c, NULL) == 0);
	cr_assert(kf_key_derive(k2, "phi", d, NULL) == 0);
	cr_assert(memcmp(a, b, sizeof(a)) == 0, "derive is not deterministic");
	cr_assert(memcmp(a, c, sizeof(a)) != 0, "purposes share a key");
	cr_assert(memcmp(a, d, sizeof(a)) != 0, "keys share a purpose key");
	cr_assert(memcmp(a, k1, sizeof(a)) != 0, "derive returned the key");
}

Test(key, encoded_key_accepted_by_python_fernet)
{
	uint8_t key[KF_KEY_BYTES], digest[crypto_hash_sha256_BYTES];
	char text[KF_KEY_TEXT_LEN + 1], want[2 * sizeof(digest) + 1];
	char *out = NULL;

	for (int round = 0; round < 4; round++) {
		kf_key_generate(key);
		kf_key_encode(key, text);
		cr_assert(strlen(text) == KF_KEY_TEXT_LEN);
		crypto_hash_sha256(digest, key, sizeof(key));
		kf_hex(digest, sizeof(digest), want);
		/* Python prints "ok" and a hash of the key bytes it used. */
		cr_assert(
		    kt_run(PY " -c 'import sys, base64, hashlib\n"
			      "from cryptography.fernet import Fernet\n"
			      "k = sys.stdin.buffer.read()\n"
			      "f = Fernet(k)\n"
			      "t = f.encrypt(b\"keyfs says hello\")\n"
			      "assert f.decrypt(t) == b\"keyfs says hello\"\n"
			      "print(\"ok\", hashlib.sha256("
			      "base64.urlsafe_b64decode(k)).hexdigest())'",
			   text, &out, NULL) == 0,
		    "python Fernet refused a key made by kf_key_encode");
		cr_assert(strncmp(out, "ok ", 3) == 0,
			  "Fernet round trip failed");
		cr_assert(strncmp(out + 3, want, strlen(want)) == 0,
			  "Fernet used different key bytes");
		free(out);
	}
	sodium_memzero(key, sizeof(key));
	sodium_memzero(text, sizeof(text));
}

Test(key, python_fernet_keys_decode)
{
	char *out = NULL, *line, *save = NULL;
	int n = 0;

	cr_assert(kt_run(PY " -c 'from cryptography.fernet import Fernet\n"
			    "for i in range(16):\n"
			    "    print(Fernet.generate_key().decode())'",
			 NULL, &out, NULL) == 0,
		  "python Fernet.generate_key failed");
	for (line = strtok_r(out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save), n++) {
		uint8_t key[KF_KEY_BYTES];
		char err[KF_ERR_MAX] = "", back[KF_KEY_TEXT_LEN + 1];

		cr_assert(kf_key_decode(line, strlen(line), key, err) == 0,
			  "Fernet.generate_key() key %d refused: %s", n, err);
		kf_key_encode(key, back);
		cr_assert(strcmp(back, line) == 0,
			  "Fernet key %d does not re-encode to itself", n);
		sodium_memzero(key, sizeof(key));
	}
	cr_assert(n == 16, "expected 16 keys from python, got %d", n);
	sodium_memzero(out, strlen(out));
	free(out);
}

Test(key, encode_decode_round_trip)
{
	for (int i = 0; i < 64; i++) {
		uint8_t key[KF_KEY_BYTES], back[KF_KEY_BYTES];
		char text[KF_KEY_TEXT_LEN + 1];

		kf_key_generate(key);
		if (i == 0)
			memset(key, 0, sizeof(key));
		if (i == 1)
			memset(key, 0xff, sizeof(key));
		kf_key_encode(key, text);
		cr_assert(strlen(text) == KF_KEY_TEXT_LEN &&
			      text[KF_KEY_TEXT_LEN - 1] == '=',
			  "encoding is not 44 characters ending in '='");
		cr_assert(strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm"
				       "nopqrstuvwxyz0123456789-_") == 43,
			  "encoding uses characters outside the URL-safe set");
		cr_assert(kf_key_decode(text, strlen(text), back, NULL) == 0,
			  "own encoding refused");
		cr_assert(memcmp(key, back, sizeof(key)) == 0,
			  "round trip changed the key");
		cr_assert(kf_key_decode(text, strlen(text), NULL, NULL) == 0,
			  "validation without output failed");
	}
}

Test(key, generate_is_random)
{
	uint8_t a[KF_KEY_BYTES], b[KF_KEY_BYTES], zero[KF_KEY_BYTES] = {0};

	kf_key_generate(a);
	kf_key_generate(b);
	cr_assert(memcmp(a, b, sizeof(a)) != 0, "two keys are equal");
	cr_assert(memcmp(a, zero, sizeof(a)) != 0, "key is all zero");
}

static void make_text(char text[KF_KEY_TEXT_LEN + 1])
{
	uint8_t key[KF_KEY_BYTES];

	kf_key_generate(key);
	kf_key_encode(key, text);
	sodium_memzero(key, sizeof(key));
}

/* A valid key text with byte pos (0-based) set to c: refused with want. */
static void expect_invalid_at(size_t pos, char c, const char *want)
{
	char text[KF_KEY_TEXT_LEN + 1];

	make_text(text);
	text[pos] = c;
	expect_invalid(text, KF_KEY_TEXT_LEN, want);
	sodium_memzero(text, sizeof(text));
}

Test(key, decode_rejects_wrong_length)
{
	char text[KF_KEY_TEXT_LEN + 2];

	make_text(text);
	/* 43: the padding dropped. */
	expect_invalid(text, 43, "expected 44 characters, got 43");
	/* 45: one extra character. */
	text[44] = 'A';
	text[45] = 0;
	expect_invalid(text, 45, "expected 44 characters, got 45");
	text[44] = '\n';
	expect_invalid(text, 45, "got 45 (ends with a newline)");
	expect_invalid(text, 12, "expected 44 characters, got 12");
}

Test(key, decode_rejects_standard_alphabet)
{
	expect_invalid_at(6, '+', "invalid character at position 7");
	expect_invalid_at(6, '+', "standard base64");
	expect_invalid_at(20, '/', "invalid character at position 21");
	expect_invalid_at(
	    0, '*', "invalid character at position 1 (not URL-safe base64)");
}

Test(key, decode_rejects_bad_padding)
{
	char text[KF_KEY_TEXT_LEN + 1];

	/* 'B' = 1: a trailing bit set in the last digit. */
	make_text(text);
	text[42] = 'B';
	expect_invalid(text, KF_KEY_TEXT_LEN, "bad padding");
	text[42] = '_';
	expect_invalid(text, KF_KEY_TEXT_LEN, "non-zero trailing bits");
	text[42] = 'A';
	cr_assert(kf_key_decode(text, KF_KEY_TEXT_LEN, NULL, NULL) == 0,
		  "'A' before '=' is valid");
	/* "==" padding belongs to 31-byte keys. */
	expect_invalid_at(42, '=', "position 43");
}

Test(key, decode_rejects_missing_padding)
{
	char text[KF_KEY_TEXT_LEN + 1];

	expect_invalid_at(43, 'A', "bad padding: missing '=' at position 44");
	make_text(text);
	expect_invalid(text, 43, "missing '=' padding");
}

Test(key, decode_rejects_empty)
{
	expect_invalid("", 0, "empty key");
	expect_invalid(NULL, 0, "empty key");
}

Test(key, decode_rejects_binary_with_nul)
{
	uint8_t raw[KF_KEY_TEXT_LEN];

	expect_invalid_at(10, 0, "NUL byte at position 11");
	randombytes_buf(raw, sizeof(raw));
	raw[3] = 0;
	expect_invalid((const char *)raw, sizeof(raw), "binary data");
	memset(raw, 'A', sizeof(raw));
	raw[0] = 0x80;
	expect_invalid((const char *)raw, sizeof(raw),
		       "invalid character at position 1 (not text");
}

Test(key, decode_rejects_whitespace)
{
	expect_invalid_at(15, ' ',
			  "invalid character at position 16 (whitespace)");
	expect_invalid_at(0, '\t', "position 1 (whitespace)");
	expect_invalid_at(43, '\n', "position 44 (whitespace)");
}

Test(key, fingerprint_is_16_hex_and_deterministic)
{
	uint8_t k1[KF_KEY_BYTES], k2[KF_KEY_BYTES];
	char a[KF_KEY_FPR_LEN + 1], b[KF_KEY_FPR_LEN + 1],
	    c[KF_KEY_FPR_LEN + 1];

	kf_key_generate(k1);
	kf_key_generate(k2);
	kf_key_fingerprint(k1, a);
	kf_key_fingerprint(k1, b);
	kf_key_fingerprint(k2, c);
	cr_assert(strlen(a) == KF_KEY_FPR_LEN &&
		      strspn(a, "0123456789abcdef") == KF_KEY_FPR_LEN,
		  "fingerprint is not 16 lower-case hex digits: %s", a);
	cr_assert_str_eq(a, b, "fingerprint is not deterministic");
	cr_assert_str_neq(a, c, "two keys share a fingerprint");
}

Test(key, fingerprint_matches_python_hashlib)
{
	char *out = NULL;

	for (int i = 0; i < 4; i++) {
		uint8_t key[KF_KEY_BYTES];
		char hex[2 * KF_KEY_BYTES + 2], fpr[KF_KEY_FPR_LEN + 1];

		kf_key_generate(key);
		kf_hex(key, sizeof(key), hex);
		cr_assert(kt_run(PY " -c 'import hashlib, sys\n"
				    "k = bytes.fromhex(sys.stdin.read())\n"
				    "print(hashlib.blake2b(k, digest_size=32,"
				    " person=b\"keyfs.fpr.v1\")"
				    ".hexdigest()[:16])'",
				 hex, &out, NULL) == 0,
			  "python3 hashlib failed");
		kf_key_fingerprint(key, fpr);
		cr_assert(strncmp(out, fpr, KF_KEY_FPR_LEN) == 0 &&
			      out[KF_KEY_FPR_LEN] == '\n',
			  "fingerprint %s differs from python's %s", fpr, out);
		free(out);
		sodium_memzero(key, sizeof(key));
		sodium_memzero(hex, sizeof(hex));
	}
}

Test(key, purpose_names)
{
	static const char *const good[] = {
	    "phi",    "pii",
	    "audit",  "backup",
	    "a",      "0",
	    "9lives", "x-y_z",
	    "a-",     "abcdefghijklmnopqrstuvwxyz012345" /* 32 */
	};
	static const char *const bad[] = {
	    "",	    "Phi",	  "PHI",
	    "-phi", "_phi",	  "abcdefghijklmnopqrstuvwxyz0123456" /* 33 */,
	    "a/b",  "../x",	  "a.b",
	    ".",    "ph\xc3\xaf", "\xc3\xa9",
	    "a b",  "a\n",	  "phi\t"};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_assert(kf_purpose_valid(good[i]), "refused \"%s\"", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert(!kf_purpose_valid(bad[i]), "accepted bad name #%zu",
			  i);
	cr_assert(!kf_purpose_valid(NULL), "accepted NULL");
}

Test(key, derive_refuses_invalid_purpose)
{
	static const char *const bad[] = {
	    "",	   "Phi", "-x",	     "abcdefghijklmnopqrstuvwxyz0123456",
	    "a/b", "a.b", "\xc3\xa9"};
	uint8_t key[KF_KEY_BYTES], out[KF_KEY_BYTES];

	kf_key_generate(key);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[KF_ERR_MAX] = "";

		cr_assert(kf_key_derive(key, bad[i], out, err) == -EINVAL,
			  "derived for bad purpose #%zu", i);
		cr_assert(kt_contains(err, "invalid purpose name"),
			  "no reason for bad purpose #%zu: %s", i, err);
	}
	cr_assert(kf_key_derive(key, NULL, out, NULL) == -EINVAL);
	sodium_memzero(key, sizeof(key));
}

#if !defined(__SANITIZE_ADDRESS__) && defined(__has_feature)
#if __has_feature(address_sanitizer)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif

/*
 * Whether the 32 bytes at needle lie in the 16 KiB of stack below this
 * function's frame: where the calls that finished just before left their
 * locals.  No library call here: its frames would overwrite what it seeks.
 */
static __attribute__((noinline)) bool left_on_stack(const uint8_t *needle)
{
	const volatile uint8_t *top = __builtin_frame_address(0);
	const volatile uint8_t *p = top - 16384;

	for (; p + KF_KEY_BYTES < top - 128; p++) {
		size_t i = 0;

		while (i < KF_KEY_BYTES && p[i] == needle[i])
			i++;
		if (i == KF_KEY_BYTES)
			return true;
	}
	return false;
}

Test(key, derive_and_fingerprint_leave_no_key_on_the_stack)
{
	uint8_t *key = sodium_malloc(2 * KF_KEY_BYTES);
	uint8_t *out = key + KF_KEY_BYTES;
	char fpr[KF_KEY_FPR_LEN + 1];

#ifdef __SANITIZE_ADDRESS__
	cr_skip_test("ASan lays out and poisons stacks its own way");
#endif
	cr_assert(key);
	kf_key_generate(key);
	/* libsodium's BLAKE2b keeps its output on its own stack. */
	cr_assert(kf_key_derive(key, "phi", out, NULL) == 0);
	cr_assert(!left_on_stack(out), "the derived key stayed on the stack");
	/* The key is the message of the fingerprint's BLAKE2b. */
	kf_key_fingerprint(key, fpr);
	cr_assert(!left_on_stack(key), "the key stayed on the stack");
	sodium_free(key);
}
