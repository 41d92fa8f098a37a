/* SPDX-License-Identifier: MIT */
/*
 * key: data keys, their Fernet text form, validation, purpose derivation and
 * fingerprints (DESIGN.md §2); and wiping the places outside guarded memory
 * where key bytes end up (the stack, the vector registers).  No I/O, no
 * logging.  (Keys given in the environment: core/env.h.)
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

/*
 * The same with another personal (at most 16 bytes): the first 16 hex
 * digits of BLAKE2b-256(key) with that personal, zero-padded.
 */
void kf_key_fingerprint_as(const uint8_t key[KF_KEY_BYTES],
			   const char *personal, char ret[KF_KEY_FPR_LEN + 1]);

/* True if name matches [a-z0-9][a-z0-9_-]{0,31}. */
bool kf_purpose_valid(const char *name);

/*
 * How much stack kf_key_wipe_stack clears: after one libsodium call (its
 * frames, measured under 1 KiB) ...
 */
#define KF_KEY_WIPE_CALL 2048
/* ... and after a whole operation (a rotation, a restore, the start:
 * measured at most 29 KiB deep). */
#define KF_KEY_WIPE_OPERATION (64 * 1024)

/*
 * Clears len bytes (at most KF_KEY_WIPE_OPERATION) of the calling thread's
 * stack just below the caller's frame, where the functions it called kept
 * their locals.  Key bytes stay there that no code of ours can reach:
 * libsodium 1.0.18's one-shot BLAKE2b keeps its state, and so its output (a
 * derived key, a subkey), on its stack without wiping it, and its portable
 * compression function copies the key block there; the dynamic linker's
 * lazy-binding trampoline saves every vector register, which may still hold
 * key bytes a memcpy moved, onto the stack.  Then clears those vector
 * registers too (x86-64 only): a core stores them.  Call it after such
 * calls, before the caller returns.  Never inlined.
 */
void kf_key_wipe_stack(size_t len);

#endif
