// SPDX-License-Identifier: MIT
/* audit_ship: every audit line, also to syslog (audit_ship.h). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "audit_ship.h"

#define RECONNECT_MS 1000
/* The text that marks a failure's record in the log's compact JSON. */
#define FAILED_TEXT "\"success\":false"

struct kf_ship {
	struct sockaddr_un addr; /* read-only */
	int facility;		 /* read-only */
	char *tag;		 /* read-only */
	int fd;			 /* -1: not connected; the log's lock */
	int64_t tried_ms;	 /* last connect, monotonic; the log's lock */
	_Atomic uint64_t sent, dropped;
	_Atomic int last_error;
};

/* A new socket connected to s->addr, or -errno. */
static int connect_to(const struct kf_ship *s)
{
	int fd, r;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&s->addr, sizeof(s->addr)) <
	    0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int kf_ship_new(const char *path, int facility, const char *tag,
		struct kf_ship **ret, char err[KF_ERR_MAX])
{
	struct kf_ship *s;

	if (strlen(path) >= sizeof(s->addr.sun_path)) {
		kf_err_set(err,
			   "audit_syslog_socket %s: longer than a socket "
			   "address takes (%zu bytes)",
			   path, sizeof(s->addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	s = calloc(1, sizeof(*s));
	if (s)
		s->tag = strdup(tag);
	if (!s || !s->tag) {
		free(s);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	s->addr.sun_family = AF_UNIX;
	memcpy(s->addr.sun_path, path, strlen(path) + 1);
	s->facility = facility;
	s->tried_ms = kf_time_mono_ms();
	s->fd = connect_to(s);
	if (s->fd < 0)
		atomic_store(&s->last_error, -s->fd);
	*ret = s;
	return 0;
}

struct kf_ship *kf_ship_free(struct kf_ship *s)
{
	if (!s)
		return NULL;
	if (s->fd >= 0)
		close(s->fd);
	free(s->tag);
	free(s);
	return NULL;
}

size_t kf_ship_head(char *buf, size_t cap, int pri, int64_t t, const char *tag,
		    pid_t pid)
{
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
					   "May", "Jun", "Jul", "Aug",
					   "Sep", "Oct", "Nov", "Dec"};
	time_t tt = (time_t)t;
	struct tm tm;
	int n;

	if (!localtime_r(&tt, &tm))
		memset(&tm, 0, sizeof(tm));
	/* Month names in English whatever the locale: RFC 3164's. */
	n = snprintf(buf, cap, "<%d>%s %2d %02d:%02d:%02d %s[%ld]: ", pri,
		     months[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, tag, (long)pid);
	if (n < 0)
		return 0;
	return (size_t)n < cap ? (size_t)n : cap - 1;
}

int kf_ship_severity(const char *line, size_t len)
{
	/* Strings in the compact JSON escape their quotes, so this text is
	 * a "success" member whose value is false, never part of a string. */
	return memmem(line, len, FAILED_TEXT, sizeof(FAILED_TEXT) - 1)
		   ? LOG_NOTICE
		   : LOG_INFO;
}

static void drop(struct kf_ship *s, int e)
{
	atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
	atomic_store_explicit(&s->last_error, e, memory_order_relaxed);
}

/* The receiver is gone (or never was): a new socket later. */
static bool receiver_gone(int e)
{
	return e == ECONNREFUSED || e == ENOENT || e == ENOTCONN ||
	       e == ECONNRESET || e == EPIPE || e == EDESTADDRREQ;
}

void kf_ship_line(void *ctx, const char *line, size_t len)
{
	struct kf_ship *s = ctx;
	char head[KF_SHIP_HEAD_MAX];
	struct iovec iov[2];
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
	int64_t now;
	int e;

	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (s->fd < 0) {
		now = kf_time_mono_ms();
		if (now - s->tried_ms < RECONNECT_MS) {
			drop(s, atomic_load(&s->last_error));
			return;
		}
		s->tried_ms = now;
		s->fd = connect_to(s);
		if (s->fd < 0) {
			drop(s, -s->fd);
			return;
		}
	}
	iov[0].iov_base = head;
	iov[0].iov_len = kf_ship_head(head, sizeof(head),
				      s->facility | kf_ship_severity(line, len),
				      kf_time_now(), s->tag, getpid());
	iov[1].iov_base = (void *)line;
	iov[1].iov_len = len;
	if (sendmsg(s->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
		atomic_fetch_add_explicit(&s->sent, 1, memory_order_relaxed);
		return;
	}
	e = errno;
	drop(s, e);
	if (receiver_gone(e)) {
		close(s->fd);
		s->fd = -1;
		s->tried_ms = kf_time_mono_ms();
	}
}

void kf_ship_stats(struct kf_ship *s, struct kf_ship_stats *ret)
{
	ret->sent = atomic_load_explicit(&s->sent, memory_order_relaxed);
	ret->dropped = atomic_load_explicit(&s->dropped, memory_order_relaxed);
	ret->last_error =
	    atomic_load_explicit(&s->last_error, memory_order_relaxed);
}
