// SPDX-License-Identifier: MIT
/*
 * audit_read: reading the audit log (see audit.h and DESIGN.md §6): the
 * chain MAC, the bounded line reader and line parsing (audit_line.h, shared
 * with audit_verify.c), the scan of one file, kf_audit_verify.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "aead.h"
#include "audit_line.h"
#include "audit_private.h"
#include "key.h"

_Static_assert(KF_AUDIT_KEY_BYTES >= crypto_generichash_KEYBYTES_MIN &&
		   KF_AUDIT_KEY_BYTES <= crypto_generichash_KEYBYTES_MAX,
	       "the audit key is a BLAKE2b key");

void kf_audit_chain_mac(const uint8_t *key, const uint8_t *prev,
			const char *prefix, size_t prefix_len,
			uint8_t out[KF_AUDIT_CHAIN_BYTES])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, key, KF_AUDIT_KEY_BYTES,
				KF_AUDIT_CHAIN_BYTES);
	crypto_generichash_update(&st, prev, KF_AUDIT_CHAIN_BYTES);
	crypto_generichash_update(&st, (const unsigned char *)prefix,
				  prefix_len);
	crypto_generichash_update(&st, (const unsigned char *)"}", 1);
	crypto_generichash_final(&st, out, KF_AUDIT_CHAIN_BYTES);
	sodium_memzero(&st, sizeof(st));
	/* libsodium's portable BLAKE2b compresses the key block on its stack */
	kf_key_wipe_stack(KF_KEY_WIPE_CALL);
}

int kf_audit_parse_line(const char *line, size_t len, uint64_t *ret_seq,
			uint8_t ret_chain[KF_AUDIT_CHAIN_BYTES],
			json_t **ret_root, const char **why)
{
	const char *tail;
	json_error_t e;
	json_t *root, *seq;
	int r = -EBADMSG;

	/* Duplicate keys could show a reader another seq or chain; NUL is
	 * allowed because the writer escapes it as \u0000. */
	root =
	    json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
	if (!root) {
		*why = "not JSON";
		return r;
	}
	if (!json_is_object(root)) {
		*why = "not a JSON object";
		goto out;
	}
	seq = json_object_get(root, "seq");
	if (!json_is_integer(seq) || json_integer_value(seq) < 1) {
		*why = "no seq field";
		goto out;
	}
	if (!json_object_get(root, "chain")) {
		*why = "no chain field";
		goto out;
	}
	tail = len > KF_AUDIT_CHAIN_SUFFIX_LEN
		   ? line + len - KF_AUDIT_CHAIN_SUFFIX_LEN
		   : NULL;
	if (!tail ||
	    memcmp(tail, KF_AUDIT_CHAIN_HEAD, KF_AUDIT_CHAIN_HEAD_LEN) != 0 ||
	    memcmp(line + len - 2, "\"}", 2) != 0 ||
	    kf_unhex(tail + KF_AUDIT_CHAIN_HEAD_LEN, ret_chain,
		     KF_AUDIT_CHAIN_BYTES) < 0) {
		*why = "chain field malformed or not last";
		goto out;
	}
	*ret_seq = (uint64_t)json_integer_value(seq);
	if (ret_root) {
		*ret_root = root;
		return 0;
	}
	r = 0;
out:
	json_decref(root);
	return r;
}

static void scan_line(struct kf_audit_scan *s, const char *line, size_t len)
{
	uint8_t chain[KF_AUDIT_CHAIN_BYTES], want[KF_AUDIT_CHAIN_BYTES];
	unsigned long long no = (unsigned long long)s->lines;
	const char *why = NULL;
	uint64_t seq = 0;

	json_t *root = NULL;

	if (kf_audit_parse_line(line, len, &seq, chain, &root, &why) < 0) {
		if (!s->bad)
			kf_err_set(s->reason, "line %llu: %s", no, why);
		s->bad = true;
		return;
	}
	/* A segment after the first starts the chain where its open record
	 * says the one before ended (that record's own MAC vouches for it). */
	if (no == 1 && seq > 1) {
		const char *ev =
		    json_string_value(json_object_get(root, "event"));
		const char *prev =
		    json_string_value(json_object_get(root, "previous_chain"));

		if (ev && strcmp(ev, "audit_segment_open") == 0 && prev &&
		    strlen(prev) == KF_AUDIT_CHAIN_HEX &&
		    kf_unhex(prev, s->prev, sizeof(s->prev)) == 0)
			s->next_seq = seq;
	}
	json_decref(root);
	s->have_last = true;
	s->last.seq = seq;
	memcpy(s->last.chain, chain, sizeof(chain));
	if (s->bad)
		return;
	if (seq != s->next_seq) {
		kf_err_set(s->reason, "line %llu: seq %llu, expected %llu", no,
			   (unsigned long long)seq,
			   (unsigned long long)s->next_seq);
		s->bad = true;
		return;
	}
	kf_audit_chain_mac(s->key, s->prev, line,
			   len - KF_AUDIT_CHAIN_SUFFIX_LEN, want);
	if (!kf_mac_equal(want, chain, sizeof(want))) {
		kf_err_set(s->reason,
			   "line %llu: chain mismatch (edited, or a line "
			   "before it was changed)",
			   no);
		s->bad = true;
		return;
	}
	if (s->anchor && s->anchor->seq == seq) {
		s->anchor_seen = true;
		s->anchor_match =
		    sodium_memcmp(s->anchor->chain, chain, sizeof(chain)) == 0;
	}
	memcpy(s->prev, chain, sizeof(chain));
	s->next_seq++;
}

/* Moves the unread bytes to the front and reads more after them. */
static int reader_fill(struct kf_audit_reader *rd)
{
	ssize_t n;

	if (rd->start > 0) {
		memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
		rd->end -= rd->start;
		rd->start = 0;
	}
	do
		n = read(rd->fd, rd->buf + rd->end,
			 KF_AUDIT_READ_BUF - rd->end);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		rd->eof = true;
	rd->end += (size_t)n;
	return 0;
}

/*
 * An overlong line (its first bytes are unread at rd->start): with `skip`,
 * consumes it through its "\n" or to the end of the file, a buffer at a
 * time; else leaves it.  *ret gets no text.
 */
static int reader_skip(struct kf_audit_reader *rd, bool skip,
		       struct kf_audit_line *ret)
{
	*ret = (struct kf_audit_line){0};
	while (skip) {
		char *p = rd->buf + rd->start;
		char *nl = memchr(p, '\n', rd->end - rd->start);
		int r;

		if (nl) {
			ret->len += (size_t)(nl - p) + 1;
			ret->complete = true;
			rd->start += (size_t)(nl - p) + 1;
			break;
		}
		ret->len += rd->end - rd->start;
		rd->start = rd->end = 0;
		if (rd->eof)
			break;
		r = reader_fill(rd);
		if (r < 0)
			return r;
	}
	return 1;
}

int kf_audit_reader_init(struct kf_audit_reader *rd)
{
	*rd = (struct kf_audit_reader){.fd = -1};
	rd->buf = malloc(KF_AUDIT_READ_BUF);
	return rd->buf ? 0 : -ENOMEM;
}

void kf_audit_reader_start(struct kf_audit_reader *rd, int fd)
{
	rd->fd = fd;
	rd->start = rd->end = 0;
	rd->eof = false;
}

void kf_audit_reader_done(struct kf_audit_reader *rd)
{
	free(rd->buf);
	rd->buf = NULL;
}

int kf_audit_reader_next(struct kf_audit_reader *rd, bool skip_long,
			 struct kf_audit_line *ret)
{
	for (;;) {
		char *p = rd->buf + rd->start;
		size_t have = rd->end - rd->start;
		char *nl = memchr(p, '\n', have);
		int r;

		if (nl && (size_t)(nl - p) < KF_AUDIT_LINE_MAX) {
			ret->text = p;
			ret->len = (size_t)(nl - p) + 1;
			ret->complete = true;
			rd->start += ret->len;
			return 1;
		}
		if (nl || have >= KF_AUDIT_LINE_MAX)
			return reader_skip(rd, skip_long, ret);
		if (rd->eof) {
			if (have == 0)
				return 0;
			ret->text = p;
			ret->len = have;
			ret->complete = false;
			rd->start = rd->end;
			return 1;
		}
		/* fewer than KF_AUDIT_LINE_MAX bytes left: there is room */
		r = reader_fill(rd);
		if (r < 0)
			return r;
	}
}

int kf_audit_scan_file(int fd, struct kf_audit_scan *s, bool stop_at_bad)
{
	struct kf_audit_reader rd;
	struct kf_audit_line l;
	int r;

	r = kf_audit_reader_init(&rd);
	if (r < 0)
		return r;
	kf_audit_reader_start(&rd, fd);
	s->next_seq = 1;
	memset(s->prev, 0, sizeof(s->prev));
	while ((r = kf_audit_reader_next(&rd, !stop_at_bad, &l)) > 0) {
		if (!l.text) {
			if (!s->bad)
				kf_err_set(s->reason,
					   "line %llu: line longer than %d "
					   "bytes",
					   (unsigned long long)s->lines + 1,
					   KF_AUDIT_LINE_MAX);
			s->bad = true;
		}
		if (!l.complete) {
			s->torn = true;
			break;
		}
		s->lines++;
		s->good_end += (off_t)l.len;
		if (l.text)
			scan_line(s, l.text, l.len - 1);
		if (s->bad && stop_at_bad)
			break;
	}
	kf_audit_reader_done(&rd);
	return r < 0 ? r : 0;
}

/* "ok: ..." saying what was checked, and what was not. */
static void report_ok(const struct kf_audit_scan *s,
		      const struct kf_audit_anchor *anchor,
		      char report[KF_ERR_MAX])
{
	unsigned long long n = s->lines, a = anchor ? anchor->seq : 0;
	char range[64] = "";

	if (n > 0)
		snprintf(range, sizeof(range), " (seq 1-%llu)", n);
	if (!anchor)
		kf_err_set(report,
			   "ok: %llu records%s; end not checked against the "
			   "sealed anchor",
			   n, range);
	else if (a == 0)
		kf_err_set(report,
			   "ok: %llu records%s; end not checked: the sealed "
			   "state holds no anchor",
			   n, range);
	else if (a == n)
		kf_err_set(report,
			   "ok: %llu records%s; end checked: seq %llu matches "
			   "the sealed anchor",
			   n, range, a);
	else
		kf_err_set(report,
			   "ok: %llu records%s; end checked: seq %llu matches "
			   "the sealed anchor (%llu later records not covered)",
			   n, range, a, n - a);
}

int kf_audit_verify(const char *path, const uint8_t key[KF_AUDIT_KEY_BYTES],
		    const struct kf_audit_anchor *anchor,
		    char report[KF_ERR_MAX], uint64_t *ret_lines)
{
	struct kf_audit_scan s = {.key = key, .anchor = anchor};
	struct stat st;
	int fd, r;

	if (sodium_init() < 0) {
		kf_err_set(report, "libsodium cannot be initialised");
		return -EIO;
	}
	/* Refused at once: a FIFO (which would block), a device such as
	 * /dev/zero (which never ends), a directory. */
	fd = kf_file_open_regular(path, 0, &st, report);
	if (fd < 0)
		return fd;
	r = kf_audit_scan_file(fd, &s, true);
	close(fd);
	if (r < 0) {
		kf_err_set(report, "%s: read: %s", path, strerror(-r));
		return r;
	}
	if (!s.bad && s.torn) {
		kf_err_set(s.reason,
			   "line %llu: incomplete last line (no newline; a "
			   "torn write?)",
			   (unsigned long long)s.lines + 1);
		s.bad = true;
	}
	if (!s.bad && anchor && anchor->seq > 0) {
		if (!s.anchor_seen) {
			kf_err_set(s.reason,
				   "truncated: the log ends at seq %llu but "
				   "the sealed state saw seq %llu",
				   (unsigned long long)s.next_seq - 1,
				   (unsigned long long)anchor->seq);
			s.bad = true;
		} else if (!s.anchor_match) {
			kf_err_set(s.reason,
				   "the log's line %llu does not carry the "
				   "chain the sealed state recorded (replaced)",
				   (unsigned long long)anchor->seq);
			s.bad = true;
		}
	}
	if (ret_lines)
		*ret_lines = s.lines;
	if (s.bad) {
		kf_err_set(report, "%s: %s", path, s.reason);
		return -EBADMSG;
	}
	report_ok(&s, anchor, report);
	return 0;
}
