/* SPDX-License-Identifier: MIT */
/*
 * key: data keys, their Fernet text form, validation, purpose derivation and
 * fingerprints (DESIGN.md §2).  Pure functions; no I/O, no logging.
 */
#ifndef KF_KEY_H
#define KF_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define KF_KEY_BYTES 32
#define KF_KEY_TEXT_LEN 44 /* URL-safe base64 with padding */
#define KF_KEY_FPR_LEN 16  /* hex digits */
#define KF_PURPOSE_MAX 32  /* characters in a purpose name */
#define KF_KEY_DERIVE_PERSONAL "keyfs.derive.v1"
#define KF_KEY_FPR_PERSONAL "keyfs.fpr.v1"

/* Fills key with KF_KEY_BYTES from randombytes_buf. */
void kf_key_generate(uint8_t key[KF_KEY_BYTES]);

/* Encodes key as 44 URL-safe base64 characters plus a NUL. */
void kf_key_encode(const uint8_t key[KF_KEY_BYTES],
		   char text[KF_KEY_TEXT_LEN + 1]);

/*
 * validate + decode: text of len bytes (not necessarily NUL-terminated) must
 * be exactly 44 characters of the URL-safe alphabet with correct padding,
 * decoding to 32 bytes.  Returns 0 and writes ret_key (if non-NULL), or
 * -EINVAL with the reason in err ("expected 44 characters, got 43", "invalid
 * character at position 7 (not URL-safe base64)", "bad padding", ...).  The
 * reason never quotes the text.
 */
int kf_key_decode(const char *text, size_t len, uint8_t ret_key[KF_KEY_BYTES],
		  char err[KF_ERR_MAX]) KF_WUR;

/*
 * derive(key, purpose) = BLAKE2b-256(message = purpose, key = key, salt = 16
 * zero bytes, personal = "keyfs.derive.v1" zero-padded to 16).  Returns 0, or
 * -EINVAL if the purpose name breaks the rule (err says why).
 */
int kf_key_derive(const uint8_t key[KF_KEY_BYTES], const char *purpose,
		  uint8_t ret[KF_KEY_BYTES], char err[KF_ERR_MAX]) KF_WUR;

/* First 16 hex digits of BLAKE2b-256(key) with personal "keyfs.fpr.v1". */
void kf_key_fingerprint(const uint8_t key[KF_KEY_BYTES],
			char ret[KF_KEY_FPR_LEN + 1]);

/* True if name matches [a-z0-9][a-z0-9_-]{0,31}. */
bool kf_purpose_valid(const char *name);

#endif
