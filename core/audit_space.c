// SPDX-License-Identifier: MIT
/* audit_space: the free-space alarm of the audit log (audit_space.h). */
#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>

#include "audit_space.h"

void kf_space_init(struct kf_space *s, unsigned min_free)
{
	memset(s, 0, sizeof(*s));
	s->min_free = min_free;
}

int kf_space_measure(const char *dir, unsigned *ret_percent,
		     char err[KF_ERR_MAX])
{
	struct statvfs st;
	int r;

	if (statvfs(dir, &st) < 0) {
		r = -errno;
		kf_err_set(err, "%s: statvfs: %s", dir, strerror(-r));
		return r;
	}
	if (st.f_blocks == 0) {
		kf_err_set(err, "%s: its file system reports no size", dir);
		return -ENOTSUP;
	}
	/* f_bavail: what the log (root or not) may count on; root's reserve
	 * is not room to plan with.  Block counts fit 64 bits times 100. */
	*ret_percent =
	    (unsigned)((uint64_t)st.f_bavail * 100 / (uint64_t)st.f_blocks);
	return 0;
}

enum kf_space_event kf_space_update(struct kf_space *s, unsigned percent,
				    int64_t now)
{
	bool low = s->min_free > 0 && percent < s->min_free;

	s->measured = true;
	s->percent = percent;
	if (low && !s->low) {
		s->low = true;
		s->alerted = now;
		return KF_SPACE_LOW;
	}
	if (low && now - s->alerted >= KF_SPACE_REPEAT_S) {
		s->alerted = now;
		return KF_SPACE_STILL_LOW;
	}
	if (!low && s->low) {
		s->low = false;
		return KF_SPACE_RECOVERED;
	}
	return KF_SPACE_QUIET;
}
