// SPDX-License-Identifier: MIT
/*
 * audit-fill: grows a configuration's audit log to a given size with
 * key_open records, through the key manager, as a daemon's opens would --
 * a long history for bench/audit to start a daemon on and verify.  BYTES
 * counts every file of the log (the active segment and the closed ones);
 * give the configuration audit_open_window = 0, or repeated opens are
 * counted rather than written.
 *
 *   audit-fill -c FILE BYTES
 *
 * The daemon must not be running (the state is locked).  The records chain
 * and the sealed anchor is updated at the end, so the log verifies.  Not
 * installed: a development tool.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "manager.h"

/* Bytes in every file of the log in the folder of path. */
static long long log_bytes(const char *path)
{
	const char *slash = strrchr(path, '/');
	char dir[4096], file[8192];
	long long sum = 0;
	struct dirent *de;
	struct stat st;
	DIR *d;

	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	d = opendir(dir);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "audit", 5) != 0)
			continue;
		snprintf(file, sizeof(file), "%s/%s", dir, de->d_name);
		if (stat(file, &st) == 0 && S_ISREG(st.st_mode))
			sum += st.st_size;
	}
	closedir(d);
	return sum;
}

int main(int argc, char **argv)
{
	struct kf_caller who = {getuid(), getgid(), getpid()};
	struct kf_manager *m = NULL;
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX], *end;
	unsigned long long want, n = 0;
	long long have = 0;
	int rc = 1;

	if (argc != 4 || strcmp(argv[1], "-c") != 0) {
		fprintf(stderr, "usage: audit-fill -c FILE BYTES\n");
		return 2;
	}
	errno = 0;
	want = strtoull(argv[3], &end, 10);
	if (errno || *end || want == 0) {
		fprintf(stderr, "audit-fill: bad size %s\n", argv[3]);
		return 2;
	}
	kf_log_stderr_level(LOG_WARNING);
	if (kf_config_load(argv[2], &cfg, err) < 0 ||
	    kf_manager_open(cfg, &m, err) < 0) {
		fprintf(stderr, "audit-fill: %s\n", err);
		goto out;
	}
	for (;;) {
		/* every 4096 records: the log grows ~0.8 MB meanwhile */
		if (n % 4096 == 0) {
			have = log_bytes(cfg->audit_log);
			if (have < 0) {
				fprintf(stderr, "audit-fill: %s: %s\n",
					cfg->audit_log, strerror(errno));
				goto out;
			}
			if ((unsigned long long)have >= want)
				break;
		}
		if (kf_manager_audit_open(m, &who, "derived/phi") < 0) {
			fprintf(stderr, "audit-fill: cannot append\n");
			goto out;
		}
		n++;
	}
	printf("records=%llu bytes=%lld\n", n, have);
	rc = 0;
out:
	kf_manager_close(m);
	kf_config_free(cfg);
	return rc;
}
