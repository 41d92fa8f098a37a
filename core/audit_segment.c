// SPDX-License-Identifier: MIT
/*
 * audit_segment: the names of closed segments, shared by the writer and the
 * verifier, and setting a log aside.  The active log "audit.log" closes into
 * "audit-<first seq>-<last seq>.log", both numbers zero-padded to
 * KF_AUDIT_SEQ_DIGITS digits so that names sort in seq order.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_private.h"

/* The active file's base name split at its last '.': stem and extension. */
static void split(const char *base, size_t *ret_stem)
{
	const char *dot = strrchr(base, '.');

	*ret_stem = dot && dot != base ? (size_t)(dot - base) : strlen(base);
}

int kf_audit_segment_name(const char *active_base, uint64_t first,
			  uint64_t last, char out[KF_AUDIT_NAME_MAX])
{
	size_t stem;
	int n;

	split(active_base, &stem);
	n = snprintf(out, KF_AUDIT_NAME_MAX, "%.*s-%0*llu-%0*llu%s", (int)stem,
		     active_base, KF_AUDIT_SEQ_DIGITS,
		     (unsigned long long)first, KF_AUDIT_SEQ_DIGITS,
		     (unsigned long long)last, active_base + stem);
	return n > 0 && n < KF_AUDIT_NAME_MAX ? 0 : -ENAMETOOLONG;
}

/* Exactly KF_AUDIT_SEQ_DIGITS digits at s: their value. */
static bool seq_at(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	for (int i = 0; i < KF_AUDIT_SEQ_DIGITS; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*ret = v;
	return true;
}

bool kf_audit_segment_parse(const char *active_base, const char *name,
			    uint64_t *ret_first, uint64_t *ret_last)
{
	size_t stem, ext, len = strlen(name);
	const char *p = name;
	uint64_t first, last;

	split(active_base, &stem);
	ext = strlen(active_base + stem);
	if (len != stem + 2 * (1 + KF_AUDIT_SEQ_DIGITS) + ext ||
	    memcmp(p, active_base, stem) != 0)
		return false;
	p += stem;
	if (*p != '-' || !seq_at(p + 1, &first))
		return false;
	p += 1 + KF_AUDIT_SEQ_DIGITS;
	if (*p != '-' || !seq_at(p + 1, &last))
		return false;
	p += 1 + KF_AUDIT_SEQ_DIGITS;
	if (strcmp(p, active_base + stem) != 0 || first == 0 || last < first)
		return false;
	*ret_first = first;
	*ret_last = last;
	return true;
}

int kf_audit_set_aside(const char *path, const char *folder, size_t *ret_moved,
		       char err[KF_ERR_MAX])
{
	const char *slash = strrchr(path, '/'),
		   *base = slash ? slash + 1 : path;
	char *dir =
	    slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path))
		  : strdup(".");
	uint64_t first, last;
	struct dirent *de;
	size_t moved = 0;
	int dfd = -1, r = 0;
	DIR *d = NULL;

	if (!dir) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = dfd >= 0 ? fdopendir(dup(dfd)) : NULL;
	if (!d || (mkdirat(dfd, folder, 0700) < 0 && errno != EEXIST)) {
		r = -errno;
		kf_err_set(err, "%s/%s: %s", dir, folder, strerror(-r));
		goto out;
	}
	while ((de = readdir(d))) {
		char to[2 * KF_AUDIT_NAME_MAX];

		if (strcmp(de->d_name, base) != 0 &&
		    !kf_audit_segment_parse(base, de->d_name, &first, &last))
			continue;
		snprintf(to, sizeof(to), "%s/%s", folder, de->d_name);
		if (renameat(dfd, de->d_name, dfd, to) < 0) {
			r = -errno;
			kf_err_set(err, "%s/%s: %s", dir, de->d_name,
				   strerror(-r));
			break;
		}
		moved++;
	}
	if (moved > 0 && fsync(dfd) < 0 && r == 0) {
		r = -errno;
		kf_err_set(err, "%s: fsync: %s", dir, strerror(-r));
	}
	*ret_moved = moved;
out:
	if (d)
		closedir(d);
	if (dfd >= 0)
		close(dfd);
	free(dir);
	return r;
}
