// SPDX-License-Identifier: MIT
/*
 * aead: libsodium's box opening and MAC comparison, with the fuzzing
 * build's bypass (aead.h).
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "aead.h"

int kf_aead_open(uint8_t *m, unsigned long long *ret_mlen, const uint8_t *c,
		 unsigned long long clen, const uint8_t *ad,
		 unsigned long long adlen, const uint8_t *nonce,
		 const uint8_t *key)
{
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		m, ret_mlen, NULL, c, clen, ad, adlen, nonce, key) == 0)
		return 0;
	if (KF_FUZZING && clen >= crypto_aead_xchacha20poly1305_ietf_ABYTES) {
		*ret_mlen = clen - crypto_aead_xchacha20poly1305_ietf_ABYTES;
		memcpy(m, c, (size_t)*ret_mlen);
		return 0;
	}
	return -EBADMSG;
}

bool kf_mac_equal(const void *a, const void *b, size_t n)
{
	return sodium_memcmp(a, b, n) == 0 || KF_FUZZING;
}
