// SPDX-License-Identifier: MIT
/*
 * fuzz: every fuzz target (fuzz/targets.h) over every input of its corpus
 * in fuzz/corpus/<target>/ -- the seeds, and what fuzz/run kept: inputs
 * that reached new code, and the reproducer of each crash it found.  In
 * this build the MAC checks are real, so this replays the parsers as the
 * daemon runs them; under tests/run --sanitize, with ASan and UBSan.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "targets.h"

/* Runs t over each file of its corpus; returns how many there were. */
static size_t replay(const struct kf_fuzz_target *t)
{
	char *dir = NULL, *path = NULL, *data;
	struct dirent *e;
	size_t n = 0, len;
	DIR *d;

	cr_assert(asprintf(&dir, "%s/fuzz/corpus/%s", kt_srcdir(), t->name) >
		  0);
	d = opendir(dir);
	cr_assert(d, "no corpus folder %s", dir);
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		cr_assert(asprintf(&path, "%s/%s", dir, e->d_name) > 0);
		data = kt_read_file_ok(path, &len);
		cr_assert(t->fn((const uint8_t *)data, len) == 0, "%s: %s",
			  t->name, path);
		free(data);
		free(path);
		n++;
	}
	closedir(d);
	free(dir);
	return n;
}

Test(fuzz, every_target_replays_its_corpus)
{
	size_t n_targets, n;
	const struct kf_fuzz_target *t = kf_fuzz_targets(&n_targets);

	cr_assert(n_targets == 8);
	for (size_t i = 0; i < n_targets; i++) {
		n = replay(&t[i]);
		cr_assert(n > 0, "fuzz/corpus/%s is empty", t[i].name);
		cr_log_info("%s: %zu inputs", t[i].name, n);
	}
}
