// SPDX-License-Identifier: MIT
/*
 * Unit tests of core/offline.c through core/manager.h, without a daemon:
 * kf_manager_verify_audit finds a log cut short after any management
 * record (DESIGN.md §6: "The sealed state keeps the last (seq, chain) it
 * saw, so a truncated log is detected too").
 */
#include <criterion/criterion.h>
#include <errno.h>

#include "helpers.h"
#include "manager_fixture.h"

TestSuite(offline, .init = fx_init, .fini = fx_fini);

static void assert_truncation_detected(struct fx *f, const char *what)
{
	char report[KF_ERR_MAX] = "";
	int r = kf_manager_verify_audit(f->cfg, NULL, true, report);

	cr_assert_eq(r, -EBADMSG, "%s: verify of a truncated log: %d %s", what,
		     r, report);
	cr_assert(
	    kt_contains(report, "truncated") || kt_contains(report, "anchor") ||
		kt_contains(report, "sealed state"),
	    "%s: the report does not name the truncation: %s", what, report);
}

Test(offline, truncated_audit_log_detected)
{
	struct fx *f = fx_new("mgr-trunc", "development", NULL, NULL);
	struct kf_manager *m = open_ok(f);

	rotate_ok(m, NULL);
	rotate_ok(m, NULL);
	fx_close(f);
	verify_audit_ok(f);
	/* the last line is the rotation's: the sealed anchor */
	kt_drop_last_line(f->audit);
	assert_truncation_detected(f, "rotation record removed");
}

/*
 * Removing the record of a later management operation (here a backup, and
 * a failed restore) must be detected as well.
 */
Test(offline, truncated_audit_log_detected_after_any_management_record)
{
	struct fx *f = fx_new("mgr-trunc3", "development", NULL, NULL), *g;
	char err[KF_ERR_MAX] = "";
	struct kf_manager *m = open_ok(f);
	uint32_t v;

	rotate_ok(m, NULL);
	cr_assert(kf_manager_backup(m, &fx_who, "after", NULL, err) == 0, "%s",
		  err);
	fx_close(f);
	kt_drop_last_line(f->audit);
	assert_truncation_detected(f, "key_backup record removed");

	g = fx_new("mgr-trunc4", "development", NULL, NULL);
	m = open_ok(g);
	rotate_ok(m, NULL);
	cr_assert(kf_manager_restore(m, &fx_who, "missing", false, &v, NULL,
				     err) < 0);
	fx_expect_alert("key_restore: %s", err);
	fx_close(g);
	kt_drop_last_line(g->audit);
	assert_truncation_detected(g, "failed key_restore record removed");
}
