// SPDX-License-Identifier: MIT
/*
 * audit_tail: a segment's first and last lines, read without reading what
 * lies between, so that opening the log takes the same time whatever its
 * size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "aead.h"
#include "audit_private.h"

/* The window read from the end: the longest line, twice, and its "\n". */
#define TAIL_WINDOW (2 * KF_AUDIT_LINE_MAX + 1)

static int pread_all(int fd, char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n =
		    pread(fd, buf + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* shrank under us */
		done += (size_t)n;
	}
	return 0;
}

/* A string field of obj copied into buf (size bytes), or "". */
static void copy_string(json_t *obj, const char *key, char *buf, size_t size)
{
	const char *v = json_string_value(json_object_get(obj, key));

	snprintf(buf, size, "%s", v && strlen(v) < size ? v : "");
}

/*
 * One line (len bytes, no "\n"): its seq, chain and, for a close record,
 * what it closed.  0, or -EBADMSG.
 */
static int parse(const char *line, size_t len, struct kf_audit_tail *ret)
{
	const char *tail = line + len - KF_AUDIT_CHAIN_SUFFIX_LEN;
	json_t *root, *seq, *first;
	json_error_t e;
	int r = -EBADMSG;

	if (len <= KF_AUDIT_CHAIN_SUFFIX_LEN ||
	    memcmp(tail, KF_AUDIT_CHAIN_HEAD, KF_AUDIT_CHAIN_HEAD_LEN) != 0 ||
	    kf_unhex(tail + KF_AUDIT_CHAIN_HEAD_LEN, ret->chain,
		     KF_AUDIT_CHAIN_BYTES) < 0)
		return r;
	root =
	    json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
	seq = json_object_get(root, "seq");
	if (json_is_integer(seq) && json_integer_value(seq) >= 1) {
		ret->seq = (uint64_t)json_integer_value(seq);
		copy_string(root, "event", ret->event, sizeof(ret->event));
		copy_string(root, "segment", ret->segment,
			    sizeof(ret->segment));
		first = json_object_get(root, "first_seq");
		ret->first_seq =
		    json_is_integer(first) && json_integer_value(first) > 0
			? (uint64_t)json_integer_value(first)
			: 0;
		r = 0;
	}
	json_decref(root);
	return r;
}

/* The chain field of a line (len bytes, no "\n") into out: 0 or -1. */
static int chain_of(const char *line, size_t len, uint8_t *out)
{
	const char *tail = line + len - KF_AUDIT_CHAIN_SUFFIX_LEN;

	if (len <= KF_AUDIT_CHAIN_SUFFIX_LEN ||
	    memcmp(tail, KF_AUDIT_CHAIN_HEAD, KF_AUDIT_CHAIN_HEAD_LEN) != 0)
		return -1;
	return kf_unhex(tail + KF_AUDIT_CHAIN_HEAD_LEN, out,
			KF_AUDIT_CHAIN_BYTES) < 0
		   ? -1
		   : 0;
}

/*
 * The chain the line at [line, end) follows: the line before it when it
 * is in buf, else (the file's first line) zeros for seq 1 or an open
 * record's previous_chain.  0, or -1 when it cannot be known here.
 */
static int prev_chain(const char *buf, const char *line, const char *end,
		      bool at_file_start, const struct kf_audit_tail *t,
		      uint8_t out[KF_AUDIT_CHAIN_BYTES])
{
	const char *p;
	json_error_t e;
	json_t *root;
	int r = -1;

	if (line > buf) {
		/* line[-1] is the "\n" ending the line before */
		p = memrchr(buf, '\n', (size_t)(line - 1 - buf));
		if (!p && !at_file_start)
			return -1;
		p = p ? p + 1 : buf;
		return chain_of(p, (size_t)(line - 1 - p), out);
	}
	if (!at_file_start)
		return -1;
	if (t->seq == 1) {
		memset(out, 0, KF_AUDIT_CHAIN_BYTES);
		return 0;
	}
	root = json_loadb(line, (size_t)(end - line), 0, &e);
	p = json_string_value(json_object_get(root, "previous_chain"));
	if (p && strlen(p) == KF_AUDIT_CHAIN_HEX &&
	    kf_unhex(p, out, KF_AUDIT_CHAIN_BYTES) == 0)
		r = 0;
	json_decref(root);
	return r;
}

int kf_audit_read_tail(int fd, off_t size, const uint8_t *key,
		       struct kf_audit_tail *ret)
{
	size_t n = size < TAIL_WINDOW ? (size_t)size : TAIL_WINDOW;
	off_t start = size - (off_t)n;
	char *buf, *end, *nl, *line;
	int r;

	memset(ret, 0, sizeof(*ret));
	if (size == 0)
		return 1;
	buf = malloc(n);
	if (!buf)
		return -ENOMEM;
	r = pread_all(fd, buf, n, start);
	if (r < 0)
		goto out;
	r = 0;
	/* Past the last "\n": a torn line a crash left, cut off by the
	 * caller; it must fit in the window with the line before it. */
	end = memrchr(buf, '\n', n);
	if (!end || buf + n - (end + 1) >= KF_AUDIT_LINE_MAX)
		goto out;
	ret->good_end = start + (off_t)(end - buf) + 1;
	nl = memrchr(buf, '\n', (size_t)(end - buf));
	if (!nl && start > 0)
		goto out; /* the line starts before the window: too long */
	line = nl ? nl + 1 : buf;
	if (end - line >= KF_AUDIT_LINE_MAX)
		goto out;
	if (parse(line, (size_t)(end - line), ret) < 0)
		goto out;
	r = 1;
	if (key) {
		uint8_t prev[KF_AUDIT_CHAIN_BYTES], want[KF_AUDIT_CHAIN_BYTES];

		ret->checked =
		    prev_chain(buf, line, end, start == 0, ret, prev) == 0;
		if (ret->checked) {
			kf_audit_chain_mac(key, prev, line,
					   (size_t)(end - line) -
					       KF_AUDIT_CHAIN_SUFFIX_LEN,
					   want);
			ret->chain_ok =
			    kf_mac_equal(want, ret->chain, sizeof(want));
		}
	}
out:
	free(buf);
	return r;
}

int kf_audit_read_head(int fd, uint64_t *ret_seq, int64_t *ret_time)
{
	char *buf = malloc(KF_AUDIT_LINE_MAX), *nl;
	struct kf_audit_tail t;
	const char *ts;
	json_error_t e;
	json_t *root;
	ssize_t n;
	int r = -EBADMSG;

	if (!buf)
		return -ENOMEM;
	do
		n = pread(fd, buf, KF_AUDIT_LINE_MAX, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		r = -errno;
		goto out;
	}
	nl = memchr(buf, '\n', (size_t)n);
	if (!nl || parse(buf, (size_t)(nl - buf), &t) < 0)
		goto out;
	root = json_loadb(buf, (size_t)(nl - buf), 0, &e);
	ts = json_string_value(json_object_get(root, "timestamp"));
	if (!ts || kf_time_parse_rfc3339(ts, ret_time) < 0)
		*ret_time = kf_time_now();
	json_decref(root);
	*ret_seq = t.seq;
	r = 0;
out:
	free(buf);
	return r;
}
