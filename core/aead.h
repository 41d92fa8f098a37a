/* SPDX-License-Identifier: MIT */
/*
 * aead: where keyfs opens its XChaCha20-Poly1305 boxes (sealed state,
 * archives, the cluster keyring) and compares its MACs and check values
 * (the audit chain, key check values) -- the one place a fuzzing build
 * may let forged bytes through.
 *
 * Built with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (fuzz/: the fuzzers'
 * build, never the daemon's), a box that does not open yields its bytes
 * without the tag as if they were the plaintext, and every MAC compares
 * equal, so the fuzzer reaches the parsers behind them.  Any other build:
 * libsodium's checks, unchanged.
 */
#ifndef KF_AEAD_H
#define KF_AEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define KF_FUZZING 1
#else
#define KF_FUZZING 0
#endif

/*
 * crypto_aead_xchacha20poly1305_ietf_decrypt of c (clen bytes, tag
 * included) with ad under key and nonce into m (clen - tag bytes): 0 and
 * *ret_mlen, or -EBADMSG when it does not open.
 */
int kf_aead_open(uint8_t *m, unsigned long long *ret_mlen, const uint8_t *c,
		 unsigned long long clen, const uint8_t *ad,
		 unsigned long long adlen, const uint8_t *nonce,
		 const uint8_t *key) KF_WUR;

/* Whether the n bytes at a and b are equal, in constant time. */
bool kf_mac_equal(const void *a, const void *b, size_t n);

#endif
