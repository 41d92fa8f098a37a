// SPDX-License-Identifier: MIT
/* audit_space: the free-space alarm's decisions, and one real statvfs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "audit_space.h"
#include "helpers.h"

Test(audit_space, alerts_when_it_drops_hourly_while_low_and_on_recovery)
{
	struct kf_space s;
	int64_t t = 1000;

	kf_space_init(&s, 5);
	cr_expect(kf_space_update(&s, 40, t) == KF_SPACE_QUIET);
	cr_expect(!s.low && s.measured && s.percent == 40);
	cr_expect(kf_space_update(&s, 5, t += 60) == KF_SPACE_QUIET,
		  "5%% free is not below a 5%% threshold");
	cr_expect(kf_space_update(&s, 4, t += 60) == KF_SPACE_LOW);
	cr_expect(s.low);
	/* Every minute's check while low: quiet until the hour is up. */
	for (int i = 1; i < 60; i++)
		cr_expect(kf_space_update(&s, 3, t + i * 60) == KF_SPACE_QUIET,
			  "a second alert %d minutes after the first", i);
	cr_expect(kf_space_update(&s, 3, t + KF_SPACE_REPEAT_S) ==
		  KF_SPACE_STILL_LOW);
	cr_expect(kf_space_update(&s, 2, t + KF_SPACE_REPEAT_S + 60) ==
		  KF_SPACE_QUIET);
	cr_expect(kf_space_update(&s, 30, t + KF_SPACE_REPEAT_S + 120) ==
		  KF_SPACE_RECOVERED);
	cr_expect(!s.low);
	cr_expect(kf_space_update(&s, 30, t + KF_SPACE_REPEAT_S + 180) ==
		      KF_SPACE_QUIET,
		  "recovery was announced twice");
	/* Low again: at once, whatever the last alert's time. */
	cr_expect(kf_space_update(&s, 1, t + KF_SPACE_REPEAT_S + 240) ==
		  KF_SPACE_LOW);
}

Test(audit_space, zero_turns_the_alarm_off)
{
	struct kf_space s;

	kf_space_init(&s, 0);
	cr_expect(kf_space_update(&s, 0, 1) == KF_SPACE_QUIET);
	cr_expect(!s.low && s.measured && s.percent == 0);
}

Test(audit_space, measures_a_folder_and_names_a_missing_one)
{
	char *dir = kt_tmpdir("space"), *missing = kt_path(dir, "none");
	char err[KF_ERR_MAX] = "";
	unsigned pct = 1000;

	cr_assert(kf_space_measure(dir, &pct, err) == 0, "%s", err);
	cr_expect(pct <= 100);
	cr_expect(kf_space_measure(missing, &pct, err) == -ENOENT);
	cr_expect(strstr(err, missing), "err does not name the folder: %s",
		  err);
	free(missing);
	free(dir);
}
