// SPDX-License-Identifier: MIT
/* audit: the tamper-evident audit log (see audit.h and DESIGN.md §6). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit.h"

#define CHAIN_HEX (2 * KF_AUDIT_CHAIN_BYTES)
#define CHAIN_HEAD ",\"chain\":\""
#define CHAIN_HEAD_LEN (sizeof(CHAIN_HEAD) - 1)
/* `,"chain":"<64 hex>"}` at the end of every line (before its "\n"). */
#define CHAIN_SUFFIX_LEN (CHAIN_HEAD_LEN + CHAIN_HEX + 2)

_Static_assert(KF_AUDIT_KEY_BYTES >= crypto_generichash_KEYBYTES_MIN &&
		   KF_AUDIT_KEY_BYTES <= crypto_generichash_KEYBYTES_MAX,
	       "the audit key is a BLAKE2b key");

/* A formatted line and the anchor it leaves once written. */
struct pending {
	char *line; /* malloc'd, with "\n" */
	struct kf_audit_anchor anchor;
};

struct kf_audit {
	pthread_mutex_t lock;
	int fd;	    /* O_APPEND; protected by a->lock */
	off_t size; /* bytes of complete lines; protected by a->lock */
	/* A failed write left bytes past size that could not be cut off
	 * yet; protected by a->lock. */
	bool dirty;
	struct kf_audit_anchor anchor; /* protected by a->lock */
	uint8_t *key; /* sodium_malloc'd; read-only after open */
	char *path;   /* for messages; read-only after open */
};

/* State of one pass over a log file, shared by open and verify. */
struct scan {
	const uint8_t *key;
	const struct kf_audit_anchor *anchor; /* may be NULL */
	uint64_t lines;			      /* complete lines read */
	off_t good_end; /* offset just after the last complete line */
	bool torn;	/* the file ends with a line without "\n" */
	/* First problem found; verification stops advancing after it. */
	bool bad;
	char reason[KF_ERR_MAX];
	uint64_t next_seq;
	uint8_t prev[KF_AUDIT_CHAIN_BYTES];
	bool anchor_seen, anchor_match;
	/* The last line that parses, whether or not it verifies. */
	bool have_last;
	struct kf_audit_anchor last;
};

static bool is_reserved(const char *key, size_t len)
{
	static const char *const names[] = {"timestamp", "seq", "chain"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (len == strlen(names[i]) && memcmp(key, names[i], len) == 0)
			return true;
	return false;
}

/* chain = BLAKE2b-256(key, prev || prefix || "}"), body = prefix + "}". */
static void chain_mac(const uint8_t *key, const uint8_t *prev,
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
}

/*
 * Parses one line (len without its "\n", less than KF_AUDIT_LINE_MAX: the
 * reader never returns a longer one): a JSON object with a positive integer
 * seq that ends with the chain field.  On failure returns -EBADMSG and sets
 * *why.
 */
static int parse_line(const char *line, size_t len, uint64_t *ret_seq,
		      uint8_t ret_chain[KF_AUDIT_CHAIN_BYTES], const char **why)
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
	tail = len > CHAIN_SUFFIX_LEN ? line + len - CHAIN_SUFFIX_LEN : NULL;
	if (!tail || memcmp(tail, CHAIN_HEAD, CHAIN_HEAD_LEN) != 0 ||
	    memcmp(line + len - 2, "\"}", 2) != 0 ||
	    kf_unhex(tail + CHAIN_HEAD_LEN, ret_chain, KF_AUDIT_CHAIN_BYTES) <
		0) {
		*why = "chain field malformed or not last";
		goto out;
	}
	*ret_seq = (uint64_t)json_integer_value(seq);
	r = 0;
out:
	json_decref(root);
	return r;
}

static void scan_line(struct scan *s, const char *line, size_t len)
{
	uint8_t chain[KF_AUDIT_CHAIN_BYTES], want[KF_AUDIT_CHAIN_BYTES];
	unsigned long long no = (unsigned long long)s->lines;
	const char *why = NULL;
	uint64_t seq = 0;

	if (parse_line(line, len, &seq, chain, &why) < 0) {
		if (!s->bad)
			kf_err_set(s->reason, "line %llu: %s", no, why);
		s->bad = true;
		return;
	}
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
	chain_mac(s->key, s->prev, line, len - CHAIN_SUFFIX_LEN, want);
	if (sodium_memcmp(want, chain, sizeof(want)) != 0) {
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

/* Bytes asked of read(2) at a time: several lines, so few calls. */
#define READ_BUF (8 * KF_AUDIT_LINE_MAX)

/*
 * Reads a log line by line in READ_BUF bytes of memory, whatever the file
 * holds.  No line the writer makes is longer than KF_AUDIT_LINE_MAX with its
 * "\n", so a longer one is never held whole.  (getline(3) grew its buffer
 * to the length of the line, and the ENOMEM it then returned looked like
 * end of file.)
 */
struct reader {
	int fd;
	char *buf;	   /* READ_BUF bytes */
	size_t start, end; /* unread bytes: buf[start, end) */
	bool eof;
};

/* One line from reader_next. */
struct line {
	const char *text; /* in the reader's buffer; NULL if overlong */
	size_t len;	  /* bytes consumed, "\n" included if any */
	bool complete;	  /* ends with "\n"; else the file ended first */
};

/* Moves the unread bytes to the front and reads more after them. */
static int reader_fill(struct reader *rd)
{
	ssize_t n;

	if (rd->start > 0) {
		memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
		rd->end -= rd->start;
		rd->start = 0;
	}
	do
		n = read(rd->fd, rd->buf + rd->end, READ_BUF - rd->end);
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
static int reader_skip(struct reader *rd, bool skip, struct line *ret)
{
	*ret = (struct line){0};
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

/*
 * The next line: 1 with *ret filled in, 0 at the end of the file, or -errno
 * on a read error (never taken for the end).  A line longer than
 * KF_AUDIT_LINE_MAX has no text; with skip_long it is consumed.
 */
static int reader_next(struct reader *rd, bool skip_long, struct line *ret)
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

/*
 * Reads the file at fd line by line (in bounded memory) into s.  With
 * stop_at_bad, stops at the first bad line; else reads past bad and
 * overlong lines to the end.  Returns 0, or -errno on a read error.
 */
static int scan_file(int fd, struct scan *s, bool stop_at_bad)
{
	struct reader rd = {.fd = fd};
	struct line l;
	int r;

	rd.buf = malloc(READ_BUF);
	if (!rd.buf)
		return -ENOMEM;
	s->next_seq = 1;
	memset(s->prev, 0, sizeof(s->prev));
	while ((r = reader_next(&rd, !stop_at_bad, &l)) > 0) {
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
	free(rd.buf);
	return r < 0 ? r : 0;
}

/* "ok: ..." saying what was checked, and what was not. */
static void report_ok(const struct scan *s,
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
	struct scan s = {.key = key, .anchor = anchor};
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
	r = scan_file(fd, &s, true);
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

/*
 * Reads the existing log through a->fd itself (opened read-write, so no
 * second open by name can meet another file) and continues its chain; cuts
 * a torn last line off.
 */
static int audit_load(struct kf_audit *a, bool *ret_broken,
		      char err[KF_ERR_MAX])
{
	struct scan s = {.key = a->key};
	int r;

	r = scan_file(a->fd, &s, false);
	if (r < 0) {
		kf_err_set(err, "%s: read: %s", a->path, strerror(-r));
		return r;
	}
	/* A crash mid-write leaves part of a line that was never acknowledged;
	 * appending after it would glue two records together. */
	if (s.torn && ftruncate(a->fd, s.good_end) < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot cut off the torn last line: %s",
			   a->path, strerror(-r));
		return r;
	}
	a->size = s.good_end;
	if (s.have_last)
		a->anchor = s.last;
	*ret_broken = s.bad;
	if (s.bad)
		kf_err_set(err, "%s: %s", a->path, s.reason);
	return 0;
}

int kf_audit_open(const char *path, const uint8_t key[KF_AUDIT_KEY_BYTES],
		  struct kf_audit **ret, bool *ret_broken, char err[KF_ERR_MAX])
{
	struct kf_audit *a;
	struct stat st;
	bool broken = false;
	int r, flags;

	if (sodium_init() < 0) {
		kf_err_set(err, "libsodium cannot be initialised");
		return -EIO;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	a->fd = -1;
	a->path = strdup(path);
	a->key = sodium_malloc(KF_AUDIT_KEY_BYTES);
	if (!a->path || !a->key) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto fail;
	}
	memcpy(a->key, key, KF_AUDIT_KEY_BYTES);
	r = -pthread_mutex_init(&a->lock, NULL);
	if (r < 0) {
		kf_err_set(err, "mutex: %s", strerror(-r));
		goto fail;
	}
	/*
	 * Whatever is at path when open(2) runs is what gets checked, on the
	 * descriptor: O_NONBLOCK so that a FIFO swapped in opens at once (and
	 * O_RDWR so that it opens even with no reader) and is then refused
	 * by fstat; O_NOFOLLOW so that the path is the file itself.  The
	 * existing lines are read through this descriptor too.
	 */
	a->fd = open(path,
		     O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
			 O_NONBLOCK,
		     0600);
	if (a->fd < 0) {
		r = -errno;
		if (r == -ELOOP)
			kf_err_set(err,
				   "%s: audit log is a symbolic link (give "
				   "the file's own path)",
				   path);
		else
			kf_err_set(err, "%s: cannot open audit log: %s", path,
				   strerror(-r));
		goto fail_mutex;
	}
	if (fstat(a->fd, &st) < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", path, strerror(-r));
		goto fail_mutex;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		kf_err_set(err, "%s: audit log is not a regular file", path);
		goto fail_mutex;
	}
	/* A regular file ignores O_NONBLOCK on Linux; drop it all the same,
	 * so that no write can ever see EAGAIN. */
	flags = fcntl(a->fd, F_GETFL);
	if (flags < 0 || fcntl(a->fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fcntl: %s", path, strerror(-r));
		goto fail_mutex;
	}
	if ((st.st_mode & 07777 & ~(mode_t)0600) != 0 &&
	    fchmod(a->fd, 0600) < 0) {
		r = -errno;
		kf_err_set(err, "%s: cannot tighten mode to 0600: %s", path,
			   strerror(-r));
		goto fail_mutex;
	}
	r = audit_load(a, &broken, err);
	if (r < 0)
		goto fail_mutex;
	if (ret_broken)
		*ret_broken = broken;
	*ret = a;
	return 0;
fail_mutex:
	pthread_mutex_destroy(&a->lock);
fail:
	if (a->fd >= 0)
		close(a->fd);
	sodium_free(a->key);
	free(a->path);
	free(a);
	return r;
}

struct kf_audit *kf_audit_close(struct kf_audit *a)
{
	if (!a)
		return NULL;
	pthread_mutex_destroy(&a->lock);
	close(a->fd);
	sodium_free(a->key);
	free(a->path);
	free(a);
	return NULL;
}

/* Formats the next line after a->anchor; call with a->lock held. */
static int format_line(struct kf_audit *a, json_t *record, struct pending *ret,
		       char err[KF_ERR_MAX])
{
	char ts[KF_RFC3339_LEN + 1], hex[CHAIN_HEX + 1];
	uint8_t chain[KF_AUDIT_CHAIN_BYTES];
	uint64_t seq = a->anchor.seq + 1;
	char *body = NULL, *line = NULL;
	size_t body_len, line_len, key_len;
	const char *key;
	json_t *obj, *value;
	int r;

	if (!json_is_object(record)) {
		kf_err_set(err, "audit record is not a JSON object");
		return -EINVAL;
	}
	obj = json_object();
	if (!obj) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	kf_time_rfc3339(kf_time_now(), ts);
	if (json_object_set_new(obj, "timestamp", json_string(ts)) < 0 ||
	    json_object_set_new(obj, "seq", json_integer((json_int_t)seq)) <
		0) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	/* jansson keeps insertion order, so the caller's order survives. */
	json_object_keylen_foreach(record, key, key_len, value)
	{
		if (is_reserved(key, key_len)) {
			r = -EINVAL;
			kf_err_set(err,
				   "audit record must not contain \"%.*s\" "
				   "(the log writes it)",
				   (int)key_len, key);
			goto out;
		}
		if (json_object_setn(obj, key, key_len, value) < 0) {
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
			goto out;
		}
	}
	/* ENSURE_ASCII: control characters and non-ASCII are escaped, so the
	 * record is one line of plain text. */
	body = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII |
				   JSON_PRESERVE_ORDER);
	if (!body) {
		r = -EINVAL;
		kf_err_set(err, "audit record cannot be encoded as JSON");
		goto out;
	}
	body_len = strlen(body);
	line_len = body_len - 1 + CHAIN_SUFFIX_LEN + 1;
	if (line_len > KF_AUDIT_LINE_MAX) {
		r = -E2BIG;
		kf_err_set(err, "audit record too long (%zu bytes, at most %d)",
			   line_len, KF_AUDIT_LINE_MAX);
		goto out;
	}
	chain_mac(a->key, a->anchor.chain, body, body_len - 1, chain);
	kf_hex(chain, sizeof(chain), hex);
	line = malloc(line_len + 1);
	if (!line) {
		r = -ENOMEM;
		kf_err_set(err, "out of memory");
		goto out;
	}
	snprintf(line, line_len + 1, "%.*s%s%s\"}\n", (int)(body_len - 1), body,
		 CHAIN_HEAD, hex);
	ret->line = line;
	ret->anchor.seq = seq;
	memcpy(ret->anchor.chain, chain, sizeof(chain));
	r = 0;
out:
	free(body);
	json_decref(obj);
	return r;
}

/*
 * Appends one formatted line with a single write(); call with a->lock held.
 * On failure cuts the file back to a->size so no partial line remains.
 */
static int write_line(struct kf_audit *a, const char *line, bool sync,
		      char err[KF_ERR_MAX])
{
	size_t len = strlen(line);
	ssize_t n;
	int r;

	if (a->dirty) {
		if (ftruncate(a->fd, a->size) < 0) {
			r = -errno;
			kf_err_set(err,
				   "%s: cannot remove a partial line left by "
				   "an earlier failure: %s",
				   a->path, strerror(-r));
			return r;
		}
		a->dirty = false;
	}
	do
		n = write(a->fd, line, len);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		r = -errno;
		kf_err_set(err, "%s: write: %s", a->path, strerror(-r));
		goto undo;
	}
	if ((size_t)n < len) {
		/* A short write does not say why (full disk, quota, file size
		 * limit); writing the rest reports the errno.  The line is cut
		 * back either way: a line is never split across writes. */
		ssize_t m = write(a->fd, line + n, len - (size_t)n);

		r = m < 0 ? -errno : -EIO;
		kf_err_set(err, "%s: short write (%zd of %zu bytes): %s",
			   a->path, n, len, strerror(-r));
		goto undo;
	}
	/* Never retried: after a failed fdatasync the pages are marked
	 * clean and a second call would "succeed" with nothing written. */
	if (sync && fdatasync(a->fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fdatasync: %s", a->path, strerror(-r));
		goto undo;
	}
	a->size += (off_t)len;
	return 0;
undo:
	if (ftruncate(a->fd, a->size) < 0) {
		a->dirty = true;
		kf_err_prefix(err, "(partial line not removed yet: %s) ",
			      strerror(errno));
	}
	return r;
}

/* Formats and writes one line under the lock; the anchor it left. */
static int append_line(struct kf_audit *a, json_t *record, bool sync,
		       struct kf_audit_anchor *ret_anchor, char err[KF_ERR_MAX])
{
	struct pending p = {0};
	int r;

	pthread_mutex_lock(&a->lock);
	r = format_line(a, record, &p, err);
	if (r >= 0) {
		r = write_line(a, p.line, sync, err);
		if (r >= 0) {
			a->anchor = p.anchor;
			if (ret_anchor)
				*ret_anchor = p.anchor;
		}
	}
	pthread_mutex_unlock(&a->lock);
	free(p.line);
	return r;
}

int kf_audit_append(struct kf_audit *a, json_t *record, bool sync,
		    char err[KF_ERR_MAX])
{
	return append_line(a, record, sync, NULL, err);
}

int kf_audit_append_anchored(struct kf_audit *a, json_t *record,
			     struct kf_audit_anchor *ret_anchor,
			     char err[KF_ERR_MAX])
{
	return append_line(a, record, false, ret_anchor, err);
}

int kf_audit_sync(struct kf_audit *a, char err[KF_ERR_MAX])
{
	int r = 0;

	/*
	 * Outside the lock: the fd never changes while the log is open, and
	 * readers' opens must not wait for the disk.  Never retried.
	 */
	if (fdatasync(a->fd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fdatasync: %s", a->path, strerror(-r));
	}
	return r;
}

void kf_audit_anchor(struct kf_audit *a, struct kf_audit_anchor *ret)
{
	pthread_mutex_lock(&a->lock);
	*ret = a->anchor;
	pthread_mutex_unlock(&a->lock);
}
