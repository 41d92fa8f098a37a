// SPDX-License-Identifier: MIT
/*
 * libfuzzer: the entry point of one fuzzer binary, fuzz-<target>, built
 * with -DKF_FUZZ_TARGET=kf_fuzz_<target> (fuzz/meson.build).
 */
#include <stddef.h>
#include <stdint.h>

#include "targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return KF_FUZZ_TARGET(data, size);
}
