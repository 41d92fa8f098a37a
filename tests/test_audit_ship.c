// SPDX-License-Identifier: MIT
/*
 * audit_ship: lines to a datagram socket bound here, as syslog's /dev/log
 * would take them; a receiver that is slow, missing or restarted.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "audit_ship.h"
#include "helpers.h"

#define LINE                                                                   \
	"{\"timestamp\":\"2024-01-01T00:00:00Z\",\"seq\":7,\"event\":"         \
	"\"key_open\",\"uid\":0,\"path\":\"current\",\"chain\":\"00\"}\n"

static struct kf_ship *ship_to(const char *path, int facility)
{
	char err[KF_ERR_MAX] = "";
	struct kf_ship *s = NULL;

	cr_assert(kf_ship_new(path, facility, "kt-tag", &s, err) == 0, "%s",
		  err);
	return s;
}

/* The parts of "<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG". */
struct parsed {
	int pri, day, h, m, s;
	long pid;
	char mon[4], tag[64];
	const char *msg;
};

static void parse(const char *dgram, struct parsed *p)
{
	int n = 0;

	cr_assert(sscanf(dgram, "<%d>%3s %2d %2d:%2d:%2d %63[^[][%ld]: %n",
			 &p->pri, p->mon, &p->day, &p->h, &p->m, &p->s, p->tag,
			 &p->pid, &n) == 8 &&
		      n > 0,
		  "not in RFC 3164 form: %s", dgram);
	cr_assert(dgram[n - 2] == ':' && dgram[n - 1] == ' ');
	p->msg = dgram + n;
}

Test(audit_ship, a_line_goes_out_in_rfc3164_form)
{
	char *dir = kt_tmpdir("ship"), *path, buf[9000];
	int fd = kt_dgram_bind(dir, &path);
	struct kf_ship *s = ship_to(path, LOG_LOCAL3);
	struct kf_ship_stats st;
	struct parsed p;

	kf_ship_line(s, LINE, strlen(LINE));
	cr_assert(kt_dgram_receive(fd, buf, sizeof(buf), 5000) > 0,
		  "nothing came");
	parse(buf, &p);
	cr_expect(p.pri == (LOG_LOCAL3 | LOG_INFO), "PRI %d", p.pri);
	cr_expect_str_eq(p.tag, "kt-tag");
	cr_expect(p.pid == getpid());
	cr_expect(strlen(p.mon) == 3 && p.day >= 1 && p.day <= 31);
	/* The log's line exactly, without its newline. */
	cr_expect(strlen(p.msg) == strlen(LINE) - 1 &&
		      strncmp(p.msg, LINE, strlen(LINE) - 1) == 0,
		  "message differs from the line: %s", p.msg);
	kf_ship_stats(s, &st);
	cr_expect(st.sent == 1 && st.dropped == 0);
	kf_ship_free(s);
	close(fd);
	free(path);
	free(dir);
}

Test(audit_ship, a_failure_is_notice_and_the_rest_info)
{
	const char *failed = "{\"event\":\"key_retire\",\"success\":false,"
			     "\"error\":\"x\"}\n";
	const char *quoted = "{\"event\":\"key_open\",\"path\":"
			     "\"a\\\"success\\\":false\"}\n";

	cr_expect(kf_ship_severity(failed, strlen(failed)) == LOG_NOTICE);
	cr_expect(kf_ship_severity(quoted, strlen(quoted)) == LOG_INFO,
		  "text inside a string made a line a failure");
	cr_expect(kf_ship_severity(LINE, strlen(LINE)) == LOG_INFO);
}

Test(audit_ship, the_head_pads_the_day_and_names_the_month_in_english)
{
	char buf[KF_SHIP_HEAD_MAX];
	size_t n;

	setenv("TZ", "UTC", 1);
	tzset();
	/* 2024-03-05 07:08:09 UTC */
	n = kf_ship_head(buf, sizeof(buf), LOG_AUTHPRIV | LOG_NOTICE,
			 1709622489, "keyfs-audit", 42);
	cr_expect_str_eq(buf, "<85>Mar  5 07:08:09 keyfs-audit[42]: ");
	cr_expect(n == strlen(buf));
}

Test(audit_ship, a_stalled_receiver_never_blocks_and_drops_are_counted)
{
	char *dir = kt_tmpdir("ship-stall"), *path;
	int fd = kt_dgram_bind(dir, &path);
	struct kf_ship *s = ship_to(path, LOG_AUTHPRIV);
	struct kf_ship_stats st;

	/* Never read: the receiver's queue fills and stays full. */
	for (int i = 0; i < 2000; i++)
		kf_ship_line(s, LINE, strlen(LINE));
	kf_ship_stats(s, &st);
	cr_expect(st.sent + st.dropped == 2000);
	cr_expect(st.dropped > 0, "a full queue dropped nothing");
	cr_expect(st.last_error == EAGAIN, "last error %s",
		  strerror(st.last_error));
	kf_ship_free(s);
	close(fd);
	free(path);
	free(dir);
}

/* Sends a line every 50 ms until fd receives one (up to 10 s). */
static bool arrives(struct kf_ship *s, int fd)
{
	char buf[9000];

	for (int i = 0; i < 200; i++) {
		kf_ship_line(s, LINE, strlen(LINE));
		if (kt_dgram_receive(fd, buf, sizeof(buf), 50) > 0)
			return true;
	}
	return false;
}

Test(audit_ship, a_missing_socket_is_no_error_and_is_connected_later)
{
	char *dir = kt_tmpdir("ship-missing"), *path = kt_path(dir, "log");
	struct kf_ship *s = ship_to(path, LOG_AUTHPRIV);
	struct kf_ship_stats st;
	int fd;

	kf_ship_line(s, LINE, strlen(LINE));
	kf_ship_stats(s, &st);
	cr_expect(st.sent == 0 && st.dropped == 1);
	cr_expect(st.last_error == ENOENT, "last error %s",
		  strerror(st.last_error));
	free(path);
	fd = kt_dgram_bind(dir, &path);
	cr_expect(arrives(s, fd), "no line came once the socket was there");
	kf_ship_free(s);
	close(fd);
	free(path);
	free(dir);
}

Test(audit_ship, a_restarted_receiver_is_connected_again)
{
	char *dir = kt_tmpdir("ship-restart"), *path;
	int fd = kt_dgram_bind(dir, &path);
	struct kf_ship *s = ship_to(path, LOG_AUTHPRIV);
	struct kf_ship_stats st;

	cr_assert(arrives(s, fd));
	close(fd);
	free(path);
	fd = kt_dgram_bind(dir, &path); /* a new socket at the same path */
	cr_expect(arrives(s, fd), "no line came after the restart");
	kf_ship_stats(s, &st);
	cr_expect(st.dropped > 0, "the line sent while it was gone");
	kf_ship_free(s);
	close(fd);
	free(path);
	free(dir);
}

Test(audit_ship, a_path_too_long_for_a_socket_is_refused)
{
	char path[200], err[KF_ERR_MAX] = "";
	struct kf_ship *s = NULL;

	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = 0;
	cr_expect(kf_ship_new(path, LOG_AUTHPRIV, "t", &s, err) ==
		  -ENAMETOOLONG);
	cr_expect_null(s);
	cr_expect(strstr(err, "audit_syslog_socket"), "%s", err);
}
