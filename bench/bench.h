/* SPDX-License-Identifier: MIT */
/*
 * keyfs-bench's parts: the timing and statistics helpers of keyfs-bench.c,
 * and the cluster commands of cluster-bench.c (bench/cluster).
 */
#ifndef KB_BENCH_H
#define KB_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t kb_now_ns(void);

/* Sleeps until the monotonic time ns (returns at once if it is past). */
void kb_sleep_until(uint64_t ns);

/*
 * Sorts a[0..n) in place and prints " PREFIXmedian_us=... PREFIXp99_us=...
 * PREFIXp999_us=... PREFIXmax_us=..." (a holds nanoseconds).  Exits on
 * lack of memory: it is a benchmark's last step.
 */
void kb_print_stats(const char *prefix, uint32_t *a, size_t n);

/* A number from 0 to max in s, all of it: 0 with *ret set, or -EINVAL. */
int kb_number(const char *s, double max, double *ret);

/*
 * keyfs-bench propagate|race|reads MOUNT... [OPTIONS]: argv[1] is the
 * command.  Prints one name=value line; returns main's exit code.
 */
int kb_cluster_main(int argc, char **argv);

#endif
