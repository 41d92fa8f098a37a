// SPDX-License-Identifier: MIT
/*
 * audit_verify: one chain across the segments of an audit log (see
 * audit_verify.h).  Two passes: listing reads each file's first line to
 * learn where it belongs; verifying then reads the files in seq order, one
 * line at a time through one buffer, carrying the chain from file to file.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "aead.h"
#include "audit_line.h"
#include "audit_private.h"
#include "audit_verify.h"

#define EV_OPEN "audit_segment_open"
#define EV_CLOSE "audit_segment_close"
#define EV_DELETE "audit_segment_delete"

/* One file of the log, as listed. */
struct vfile {
	char *path;	  /* as given, or FOLDER/NAME */
	const char *base; /* its last component, in path */
	dev_t dev;
	ino_t ino;
	bool named; /* a closed segment's name: name_first-name_last */
	uint64_t name_first, name_last;
	bool have_first; /* its first line parses: its seq is first */
	uint64_t first;
	bool empty;
	uint64_t order; /* first, else name_first, else UINT64_MAX */
};

struct vset {
	const char *active_base;
	struct vfile *v;
	size_t n, cap;
};

/* The state of one verification, carried from file to file. */
struct verifier {
	const uint8_t *key;
	const struct kf_audit_anchor *anchor; /* may be NULL */
	char *report;
	struct kf_audit_reader rd;

	/* The chain so far: the next line's seq and the chain before it. */
	bool started;
	uint64_t next_seq;
	uint8_t prev[KF_AUDIT_CHAIN_BYTES];
	uint64_t first_seq; /* of the earliest line */
	uint64_t records;
	uint64_t files;
	bool anchor_seen;

	/* The last file read with records, and the name it closed with. */
	const struct vfile *pf;
	uint64_t p_first, p_last;
	char p_name[KF_AUDIT_NAME_MAX];

	/* The delete record accounting for the history before first_seq. */
	const struct vfile *del_file;
	uint64_t del_line;

	/* The active file's incomplete last line, if any. */
	const struct vfile *torn_file;
	uint64_t torn_line;

	/* The file being read: its line number, the seq range it holds. */
	const struct vfile *f;
	uint64_t line;
	uint64_t f_first, f_last;
	/* Whether its last line so far is a close record, and its fields. */
	bool close_last, close_ok;
	uint64_t close_line, close_first, close_last_seq;
	char close_name[KF_AUDIT_NAME_MAX];
};

static int bad_line(struct verifier *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "FILE:LINE: reason" for the current line; -EBADMSG. */
static int bad_line(struct verifier *v, const char *fmt, ...)
{
	char why[KF_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	kf_err_set(v->report, "%s:%llu: %s", v->f->path,
		   (unsigned long long)v->line, why);
	return -EBADMSG;
}

/* A positive integer field of o, or 0. */
static uint64_t u64_field(json_t *o, const char *name)
{
	json_t *x = json_object_get(o, name);

	return json_is_integer(x) && json_integer_value(x) > 0
		   ? (uint64_t)json_integer_value(x)
		   : 0;
}

/* --- listing ------------------------------------------------------------ */

/*
 * The first line of fd, read with pread into buf (KF_AUDIT_LINE_MAX bytes):
 * its length without "\n", -ENODATA when no complete line fits (a torn or
 * overlong one: the verifying pass names it), or -errno.
 */
static ssize_t read_first_line(int fd, char *buf)
{
	size_t have = 0;

	while (have < KF_AUDIT_LINE_MAX) {
		ssize_t n = pread(fd, buf + have, KF_AUDIT_LINE_MAX - have,
				  (off_t)have);
		char *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		nl = memchr(buf + have, '\n', (size_t)n);
		have += (size_t)n;
		if (nl)
			return nl - buf;
	}
	return -ENODATA;
}

/* Adds the file at path (taking path) to set; buf is scratch space. */
static int add_file(struct vset *set, char *path, char *buf,
		    char report[KF_ERR_MAX])
{
	struct vfile *f;
	const char *why;
	uint8_t chain[KF_AUDIT_CHAIN_BYTES];
	struct stat st;
	ssize_t len;
	int fd, r = 0;

	if (set->n == set->cap) {
		size_t cap = set->cap ? 2 * set->cap : 16;
		struct vfile *v;

		if (set->n >= KF_AUDIT_VERIFY_FILES_MAX) {
			kf_err_set(report, "more than %u files to verify",
				   KF_AUDIT_VERIFY_FILES_MAX);
			free(path);
			return -E2BIG;
		}
		v = reallocarray(set->v, cap, sizeof(*v));
		if (!v) {
			kf_err_set(report, "out of memory");
			free(path);
			return -ENOMEM;
		}
		set->v = v;
		set->cap = cap;
	}
	f = &set->v[set->n];
	*f = (struct vfile){.path = path};
	set->n++;
	f->base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	f->named = kf_audit_segment_parse(set->active_base, f->base,
					  &f->name_first, &f->name_last);
	/* Refused at once: a FIFO (which would block), a device such as
	 * /dev/zero (which never ends). */
	fd = kf_file_open_regular(path, 0, &st, report);
	if (fd < 0)
		return fd;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->empty = st.st_size == 0;
	len = f->empty ? -ENODATA : read_first_line(fd, buf);
	if (len >= 0)
		f->have_first = kf_audit_parse_line(buf, (size_t)len, &f->first,
						    chain, NULL, &why) == 0;
	else if (len != -ENODATA) {
		r = (int)len;
		kf_err_set(report, "%s: read: %s", path, strerror(-r));
	}
	close(fd);
	f->order = f->have_first ? f->first
		   : f->named	 ? f->name_first
				 : UINT64_MAX;
	return r;
}

/* Adds the files of the log in folder dir. */
static int add_folder(struct vset *set, const char *dir, char *buf,
		      char report[KF_ERR_MAX])
{
	struct dirent *de;
	uint64_t first, last;
	int r = 0;
	DIR *d = opendir(dir);

	if (!d) {
		r = -errno;
		kf_err_set(report, "%s: %s", dir, strerror(-r));
		return r;
	}
	while (r == 0 && (errno = 0, de = readdir(d))) {
		char *path;

		if (strcmp(de->d_name, set->active_base) != 0 &&
		    !kf_audit_segment_parse(set->active_base, de->d_name,
					    &first, &last))
			continue;
		/* "DIR/" given: no "//" in the names reported */
		if (asprintf(&path, "%s%s%s", dir,
			     dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/",
			     de->d_name) < 0)
			path = NULL;
		if (!path) {
			kf_err_set(report, "out of memory");
			r = -ENOMEM;
			break;
		}
		r = add_file(set, path, buf, report);
	}
	if (r == 0 && errno != 0) {
		r = -errno;
		kf_err_set(report, "%s: %s", dir, strerror(-r));
	}
	closedir(d);
	return r;
}

/* Adds what path stands for: a folder's files of the log, or a file. */
static int add_path(struct vset *set, const char *path, char *buf,
		    char report[KF_ERR_MAX])
{
	struct stat st;
	char *copy;
	int r;

	/* stat(2) never blocks, whatever path is; open does, for a FIFO. */
	if (stat(path, &st) < 0) {
		r = -errno;
		kf_err_set(report, "%s: %s", path, strerror(-r));
		return r;
	}
	if (S_ISDIR(st.st_mode))
		return add_folder(set, path, buf, report);
	copy = strdup(path);
	if (!copy) {
		kf_err_set(report, "out of memory");
		return -ENOMEM;
	}
	return add_file(set, copy, buf, report);
}

static int by_inode(const void *a, const void *b)
{
	const struct vfile *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return strcmp(x->path, y->path);
}

/* In seq order; files without records after those with them. */
static int by_seq(const void *a, const void *b)
{
	const struct vfile *x = a, *y = b;

	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	if (x->empty != y->empty)
		return x->empty ? 1 : -1;
	return strcmp(x->path, y->path);
}

/* Drops a file listed twice (a folder and a file in it), then sorts. */
static void order_set(struct vset *set)
{
	size_t kept = 0;

	qsort(set->v, set->n, sizeof(*set->v), by_inode);
	for (size_t i = 0; i < set->n; i++) {
		if (kept > 0 && set->v[kept - 1].dev == set->v[i].dev &&
		    set->v[kept - 1].ino == set->v[i].ino) {
			free(set->v[i].path);
			continue;
		}
		set->v[kept++] = set->v[i];
	}
	set->n = kept;
	qsort(set->v, set->n, sizeof(*set->v), by_seq);
}

/* --- verifying ---------------------------------------------------------- */

/*
 * The first line of the earliest file: seq 1 starts from zeros; a later seq
 * from the previous_chain of the open record it must be.
 */
static int start_chain(struct verifier *v, json_t *root, const char *event,
		       uint64_t seq)
{
	const char *hex;

	v->started = true;
	v->first_seq = seq;
	v->next_seq = seq;
	memset(v->prev, 0, sizeof(v->prev));
	if (seq == 1)
		return 0;
	if (!event || strcmp(event, EV_OPEN) != 0)
		return bad_line(v,
				"the earliest file starts at seq %llu, and "
				"not with an " EV_OPEN " record to chain "
				"from (history before it missing?)",
				(unsigned long long)seq);
	if (u64_field(root, "previous_last_seq") != seq - 1)
		return bad_line(
		    v,
		    "its open record says the previous segment "
		    "ends at seq %llu, not %llu",
		    (unsigned long long)u64_field(root, "previous_last_seq"),
		    (unsigned long long)seq - 1);
	hex = json_string_value(json_object_get(root, "previous_chain"));
	if (!hex || strlen(hex) != KF_AUDIT_CHAIN_HEX ||
	    kf_unhex(hex, v->prev, sizeof(v->prev)) < 0)
		return bad_line(v, "its open record's previous_chain is not "
				   "64 hex digits");
	return 0;
}

/*
 * The first line of a file after another: the open record of a new
 * segment, naming the one before it as it closed.
 */
static int check_open(struct verifier *v, json_t *root, const char *event)
{
	const char *name, *hex;
	uint8_t chain[KF_AUDIT_CHAIN_BYTES];

	if (!event || strcmp(event, EV_OPEN) != 0)
		return bad_line(v,
				"a segment after %s does not start with "
				"its " EV_OPEN " record",
				v->pf->path);
	name = json_string_value(json_object_get(root, "previous"));
	if (!name || strcmp(name, v->p_name) != 0 ||
	    u64_field(root, "previous_first_seq") != v->p_first ||
	    u64_field(root, "previous_last_seq") != v->p_last)
		return bad_line(
		    v,
		    "its open record says the previous segment is %s (seq "
		    "%llu-%llu), but the file before it, %s, closed as %s "
		    "(seq %llu-%llu)",
		    name ? name : "(none)",
		    (unsigned long long)u64_field(root, "previous_first_seq"),
		    (unsigned long long)u64_field(root, "previous_last_seq"),
		    v->pf->path, v->p_name, (unsigned long long)v->p_first,
		    (unsigned long long)v->p_last);
	hex = json_string_value(json_object_get(root, "previous_chain"));
	if (!hex || strlen(hex) != KF_AUDIT_CHAIN_HEX ||
	    kf_unhex(hex, chain, sizeof(chain)) < 0 ||
	    sodium_memcmp(chain, v->prev, sizeof(chain)) != 0)
		return bad_line(v,
				"its open record's previous_chain is not the "
				"chain of the last line of %s (seq %llu)",
				v->pf->path, (unsigned long long)v->p_last);
	return 0;
}

/* What a verified line says for later checks. */
static void note_line(struct verifier *v, json_t *root, const char *event,
		      uint64_t seq)
{
	const char *name;

	v->close_last = event && strcmp(event, EV_CLOSE) == 0;
	if (v->close_last) {
		name = json_string_value(json_object_get(root, "segment"));
		v->close_line = v->line;
		v->close_first = u64_field(root, "first_seq");
		v->close_last_seq = u64_field(root, "last_seq");
		v->close_ok = name && strlen(name) < sizeof(v->close_name) &&
			      v->close_first > 0 && v->close_last_seq > 0;
		snprintf(v->close_name, sizeof(v->close_name), "%s",
			 name ? name : "");
	}
	if (event && strcmp(event, EV_DELETE) == 0 && !v->del_file &&
	    v->first_seq > 1 &&
	    u64_field(root, "history_from_seq") == v->first_seq) {
		v->del_file = v->f;
		v->del_line = v->line;
	}
	if (v->f_first == 0)
		v->f_first = seq;
	v->f_last = seq;
	v->records++;
}

static int check_line(struct verifier *v, const char *text, size_t len)
{
	uint8_t chain[KF_AUDIT_CHAIN_BYTES], want[KF_AUDIT_CHAIN_BYTES];
	const char *why = NULL, *event;
	json_t *root = NULL;
	uint64_t seq = 0;
	int r = 0;

	if (kf_audit_parse_line(text, len, &seq, chain, &root, &why) < 0)
		return bad_line(v, "%s", why);
	event = json_string_value(json_object_get(root, "event"));
	if (!v->started)
		r = start_chain(v, root, event, seq);
	else if (v->line == 1)
		r = check_open(v, root, event);
	if (r < 0)
		goto out;
	if (seq != v->next_seq) {
		r = bad_line(v, "seq %llu, expected %llu",
			     (unsigned long long)seq,
			     (unsigned long long)v->next_seq);
		goto out;
	}
	kf_audit_chain_mac(v->key, v->prev, text,
			   len - KF_AUDIT_CHAIN_SUFFIX_LEN, want);
	if (!kf_mac_equal(want, chain, sizeof(want))) {
		r = bad_line(v, "chain mismatch (edited, or a line before it "
				"was changed)");
		goto out;
	}
	if (v->anchor && v->anchor->seq == seq) {
		v->anchor_seen = true;
		if (sodium_memcmp(v->anchor->chain, chain, sizeof(chain)) !=
		    0) {
			r = bad_line(v,
				     "seq %llu does not carry the chain the "
				     "sealed state recorded (replaced)",
				     (unsigned long long)seq);
			goto out;
		}
	}
	note_line(v, root, event, seq);
	memcpy(v->prev, chain, sizeof(chain));
	v->next_seq++;
out:
	json_decref(root);
	return r;
}

/*
 * After the last line of f: a closed segment ends with its own close
 * record and holds what its name says.  Then f is the previous file.
 */
static int finish_file(struct verifier *v, const struct vfile *f, bool closed)
{
	unsigned long long a = f->name_first, b = f->name_last;
	unsigned long long c = v->f_first, d = v->f_last;

	if (v->line == 0) {
		if (!f->named)
			return 0;
		kf_err_set(v->report,
			   "%s: empty, but its name says seq %llu-%llu (cut "
			   "short?)",
			   f->path, a, b);
		return -EBADMSG;
	}
	if (!closed)
		goto done;
	if (!v->close_last) {
		v->line++;
		return bad_line(v,
				"missing: the closed segment ends at seq %llu "
				"without its " EV_CLOSE
				" record (cut short, or its last record "
				"removed?)",
				d);
	}
	if (f->named && (a != c || b != d)) {
		kf_err_set(v->report,
			   "%s: its name says seq %llu-%llu but it holds seq "
			   "%llu-%llu (renamed or swapped?)",
			   f->path, a, b, c, d);
		return -EBADMSG;
	}
	v->line = v->close_line;
	if (!v->close_ok)
		return bad_line(v, "its close record lacks segment, first_seq "
				   "or last_seq");
	if (v->close_first != c || v->close_last_seq != d)
		return bad_line(v,
				"its close record says seq %llu-%llu but the "
				"segment holds seq %llu-%llu",
				(unsigned long long)v->close_first,
				(unsigned long long)v->close_last_seq, c, d);
	if (f->named && strcmp(v->close_name, f->base) != 0)
		return bad_line(v, "its close record names it %s (renamed?)",
				v->close_name);
done:
	v->pf = f;
	v->p_first = c;
	v->p_last = d;
	snprintf(v->p_name, sizeof(v->p_name), "%s",
		 closed ? v->close_name : f->base);
	return 0;
}

/*
 * Where f begins against where the files before it ended: a gap is a
 * missing segment, less is an overlap.  A first line that did not parse is
 * named when it is read.
 */
static int check_between(struct verifier *v, const struct vfile *f)
{
	unsigned long long end = v->next_seq - 1;

	if (!v->pf || !f->have_first || f->first == v->next_seq)
		return 0;
	if (f->first > v->next_seq)
		kf_err_set(v->report,
			   "segment missing between %s (ends at seq %llu) "
			   "and %s (starts at seq %llu)",
			   v->pf->path, end, f->path,
			   (unsigned long long)f->first);
	else
		kf_err_set(v->report,
			   "%s (seq %llu-%llu) and %s (starts at seq %llu) "
			   "overlap (copies of the same records? give each "
			   "segment once)",
			   v->pf->path, (unsigned long long)v->p_first, end,
			   f->path, (unsigned long long)f->first);
	return -EBADMSG;
}

/* Reads and checks f to its end; closed: it must end as a closed one. */
static int verify_file(struct verifier *v, const struct vfile *f, bool closed)
{
	struct kf_audit_line l;
	struct stat st;
	int fd, r;

	r = check_between(v, f);
	if (r < 0)
		return r;
	fd = kf_file_open_regular(f->path, 0, &st, v->report);
	if (fd < 0)
		return fd;
	if (st.st_dev != f->dev || st.st_ino != f->ino) {
		close(fd);
		kf_err_set(v->report,
			   "%s: replaced while being verified (a rotation? "
			   "run again)",
			   f->path);
		return -EAGAIN;
	}
	v->f = f;
	v->line = 0;
	v->f_first = v->f_last = 0;
	v->close_last = false;
	v->files++;
	kf_audit_reader_start(&v->rd, fd);
	while ((r = kf_audit_reader_next(&v->rd, false, &l)) > 0) {
		v->line++;
		if (!l.text) {
			r = bad_line(v, "line longer than %d bytes",
				     KF_AUDIT_LINE_MAX);
			break;
		}
		if (!l.complete && closed) {
			r = bad_line(v, "incomplete last line: the closed "
					"segment was cut short");
			break;
		}
		if (!l.complete) {
			/* The end of the active file: a crash's torn write
			 * is reported after the checks of the whole. */
			v->torn_file = f;
			v->torn_line = v->line--;
			r = 0;
			break;
		}
		r = check_line(v, l.text, l.len - 1);
		if (r < 0)
			break;
	}
	close(fd);
	if (r < 0 && r != -EBADMSG)
		kf_err_set(v->report, "%s: read: %s", f->path, strerror(-r));
	if (r < 0)
		return r;
	return finish_file(v, f, closed);
}

/* The checks of the whole, once every file has been read. */
static int verify_end(struct verifier *v, const struct vset *set)
{
	unsigned long long end = v->records ? v->next_seq - 1 : 0;
	unsigned long long a = v->anchor ? v->anchor->seq : 0;
	const struct vfile *last = v->pf ? v->pf : &set->v[set->n - 1];

	if (v->first_seq > 1 && !v->del_file) {
		kf_err_set(v->report,
			   "%s: history before seq %llu is missing and no "
			   "audit_segment_delete record accounts for it "
			   "(moved elsewhere? give that folder too)",
			   set->v[0].path, (unsigned long long)v->first_seq);
		return -EBADMSG;
	}
	if (v->torn_file) {
		v->f = v->torn_file;
		v->line = v->torn_line;
		if (a > end)
			return bad_line(v,
					"incomplete last line (a torn write, "
					"as a crash leaves; not tampering); "
					"the complete lines end at seq %llu, "
					"the sealed state saw seq %llu",
					end, a);
		return bad_line(v, "incomplete last line (a torn write, as a "
				   "crash leaves; not tampering)");
	}
	if (a > end) {
		kf_err_set(v->report,
			   "%s: truncated: the log ends at seq %llu but the "
			   "sealed state saw seq %llu%s",
			   last->path, end, a,
			   last->named ? " (the last file given is a closed "
					 "segment: give the later ones too)"
				       : "");
		return -EBADMSG;
	}
	return 0;
}

/* "ok: ..." saying what was checked, and what was not. */
static void report_ok(const struct verifier *v)
{
	unsigned long long n = v->records, a = v->anchor ? v->anchor->seq : 0;
	unsigned long long first = v->first_seq, last = v->next_seq - 1;
	char files[48] = "", range[64] = "", history[KF_ERR_MAX] = "";
	char end[160];

	if (v->files > 1)
		snprintf(files, sizeof(files), " in %llu files",
			 (unsigned long long)v->files);
	if (n > 0)
		snprintf(range, sizeof(range), " (seq %llu-%llu)", first, last);
	if (first > 1)
		snprintf(history, sizeof(history),
			 "; history before seq %llu deleted by retention "
			 "(%s:%llu)",
			 first, v->del_file->path,
			 (unsigned long long)v->del_line);
	if (!v->anchor)
		snprintf(end, sizeof(end),
			 "end not checked against the sealed anchor");
	else if (a == 0)
		snprintf(end, sizeof(end),
			 "end not checked: the sealed state holds no anchor");
	else if (!v->anchor_seen)
		snprintf(end, sizeof(end),
			 "end not checked: the sealed anchor (seq %llu) lies "
			 "in the history deleted by retention",
			 a);
	else if (a == last)
		snprintf(end, sizeof(end),
			 "end checked: seq %llu matches the sealed anchor", a);
	else
		snprintf(end, sizeof(end),
			 "end checked: seq %llu matches the sealed anchor "
			 "(%llu later records not covered)",
			 a, last - a);
	kf_err_set(v->report, "ok: %llu records%s%s%s; %s", n, files, range,
		   history, end);
}

static int verify_set(struct verifier *v, const struct vset *set)
{
	size_t last_full = 0;
	int r = 0;

	for (size_t i = 0; i < set->n; i++) {
		const struct vfile *f = &set->v[i], *g = f + 1;

		if (!f->empty)
			last_full = i;
		/* Caught here, before the first of them is read and taken
		 * for a closed segment missing its close record. */
		if (i + 1 < set->n && f->have_first && g->have_first &&
		    f->first == g->first) {
			kf_err_set(v->report,
				   "%s and %s both start at seq %llu (copies "
				   "of the same records? give each segment "
				   "once)",
				   f->path, g->path,
				   (unsigned long long)f->first);
			return -EBADMSG;
		}
	}
	/* A file that another follows was closed, whatever its name. */
	for (size_t i = 0; i < set->n && r == 0; i++)
		r = verify_file(v, &set->v[i],
				set->v[i].named || i < last_full);
	return r < 0 ? r : verify_end(v, set);
}

int kf_audit_verify_files(const char *const *paths, size_t n_paths,
			  const char *active_base,
			  const uint8_t key[KF_AUDIT_KEY_BYTES],
			  const struct kf_audit_anchor *anchor,
			  char report[KF_ERR_MAX],
			  struct kf_audit_verify_result *ret_result)
{
	struct vset set = {.active_base = active_base};
	struct verifier v = {.key = key, .anchor = anchor, .report = report};
	int r;

	if (sodium_init() < 0) {
		kf_err_set(report, "libsodium cannot be initialised");
		return -EIO;
	}
	r = kf_audit_reader_init(&v.rd);
	if (r < 0) {
		kf_err_set(report, "out of memory");
		return r;
	}
	for (size_t i = 0; i < n_paths && r == 0; i++)
		r = add_path(&set, paths[i], v.rd.buf, report);
	if (r == 0 && set.n == 0) {
		kf_err_set(report, "%s%s: no %s and no closed segment of it",
			   n_paths ? paths[0] : "", n_paths > 1 ? " ..." : "",
			   active_base);
		r = -ENOENT;
	}
	if (r == 0) {
		order_set(&set);
		r = verify_set(&v, &set);
	}
	if (r == 0) {
		report_ok(&v);
		if (ret_result)
			*ret_result = (struct kf_audit_verify_result){
			    .records = v.records,
			    .files = v.files,
			    .first_seq = v.records ? v.first_seq : 0,
			    .last_seq = v.records ? v.next_seq - 1 : 0,
			};
	}
	for (size_t i = 0; i < set.n; i++)
		free(set.v[i].path);
	free(set.v);
	kf_audit_reader_done(&v.rd);
	return r;
}
