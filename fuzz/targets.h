/* SPDX-License-Identifier: MIT */
/*
 * targets: one function per parser of outside bytes, for libFuzzer
 * (fuzz/libfuzzer.c, a binary per target) and for the corpus replay that
 * every test run does (tests/test_fuzz.c).  Each takes any bytes, parses
 * them the way the daemon or the command would, frees what it made, and
 * returns 0; a crash, a sanitizer report or a leak is the finding.
 *
 * Built with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (core/aead.h), boxes
 * and MACs let forged bytes through, so the parsers behind them are
 * reached; the replay build checks them as the daemon does.
 */
#ifndef KF_FUZZ_TARGETS_H
#define KF_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

typedef int (*kf_fuzz_fn)(const uint8_t *data, size_t size);

struct kf_fuzz_target {
	const char *name; /* fuzz/corpus/<name>/, fuzz-<name> */
	kf_fuzz_fn fn;
};

int kf_fuzz_config(const uint8_t *data, size_t size);
int kf_fuzz_key(const uint8_t *data, size_t size);
int kf_fuzz_state(const uint8_t *data, size_t size);
int kf_fuzz_archive(const uint8_t *data, size_t size);
int kf_fuzz_audit_line(const uint8_t *data, size_t size);
int kf_fuzz_audit_log(const uint8_t *data, size_t size);
int kf_fuzz_control(const uint8_t *data, size_t size);
int kf_fuzz_etcd(const uint8_t *data, size_t size);

/* Every target, in the order above; n in *ret_n. */
const struct kf_fuzz_target *kf_fuzz_targets(size_t *ret_n);

#endif
