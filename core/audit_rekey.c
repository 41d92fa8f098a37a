// SPDX-License-Identifier: MIT
/*
 * audit_rekey: master-key rotation of the audit log (keyfs rekey, README:
 * Master-key rotation).  The chain of every segment is computed anew under
 * the new audit key, one file at a time, each replaced atomically; the
 * records themselves are kept byte for byte but for "chain" and an open
 * record's "previous_chain", which follow the new chain.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "audit_line.h"
#include "audit_private.h"

#define PREV_CHAIN_HEAD "\"previous_chain\":\""
#define OPEN_EVENT "audit_segment_open"
#define REKEY_TMP_SUFFIX ".rekey"
#define MAX_SEGMENTS (1u << 20)

/* One log being rekeyed. */
struct rekey {
	const char *path; /* the active file, for messages */
	const char *base; /* its name in dirfd */
	int dirfd;
	const uint8_t *old_key; /* NULL: every file must be new already */
	const uint8_t *new_key;
	bool have_prev; /* a file before this one was done */
	uint8_t new_prev[KF_AUDIT_CHAIN_BYTES];
	struct kf_audit_reader rd;
	struct kf_audit_rekey_result res;
};

/* One closed segment's name and first seq, to sort them. */
struct seg {
	uint64_t first;
	char name[KF_AUDIT_NAME_MAX];
};

static int by_first(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

/*
 * Where the 64 hex digits of an open record's previous_chain start in text
 * (len bytes), or NULL.  The key cannot occur inside a string value: a
 * value's quotes are escaped.
 */
static const char *prev_chain_at(const char *text, size_t len)
{
	size_t head = sizeof(PREV_CHAIN_HEAD) - 1;
	const char *p = memmem(text, len, PREV_CHAIN_HEAD, head);

	if (!p || (size_t)(p - text) + head + KF_AUDIT_CHAIN_HEX > len)
		return NULL;
	return p + head;
}

/* Whether the parsed line is a segment's open record. */
static bool is_open_record(json_t *root)
{
	const char *ev = json_string_value(json_object_get(root, "event"));

	return ev && strcmp(ev, OPEN_EVENT) == 0;
}

/*
 * The chain a file's first line continues: the previous file's (new) last
 * chain, or -- for the oldest file kept -- 32 zero bytes at seq 1 and the
 * open record's own previous_chain after retention deleted older ones.
 */
static int start_chain(const struct rekey *k, const char *text, size_t len,
		       json_t *root, uint64_t seq,
		       uint8_t out[KF_AUDIT_CHAIN_BYTES])
{
	const char *hex;

	if (k->have_prev) {
		memcpy(out, k->new_prev, KF_AUDIT_CHAIN_BYTES);
		return 0;
	}
	if (seq == 1) {
		memset(out, 0, KF_AUDIT_CHAIN_BYTES);
		return 0;
	}
	hex = is_open_record(root) ? prev_chain_at(text, len) : NULL;
	if (!hex || kf_unhex(hex, out, KF_AUDIT_CHAIN_BYTES) < 0)
		return -EBADMSG;
	return 0;
}

/*
 * One pass over the file open at fd.  Without out (checking), 0 when every
 * line chains under the new key from where the file must start, else
 * -EBADMSG.  With out (rewriting), every line must chain under the old key
 * from its own start; each is written to out with its chain (and an open
 * record's previous_chain) under the new key.  An incomplete last line
 * (a torn write) is left out either way: opening the log cuts it off too.
 * *ret_last gets the new chain of the last line.
 */
static int pass(struct rekey *k, int fd, const char *name, FILE *out,
		uint8_t ret_last[KF_AUDIT_CHAIN_BYTES], uint64_t *ret_lines,
		char err[KF_ERR_MAX])
{
	uint8_t old_prev[KF_AUDIT_CHAIN_BYTES] = {0};
	uint8_t new_prev[KF_AUDIT_CHAIN_BYTES] = {0};
	uint8_t chain[KF_AUDIT_CHAIN_BYTES], want[KF_AUDIT_CHAIN_BYTES];
	char hex[KF_AUDIT_CHAIN_HEX + 1];
	const uint8_t *key = out ? k->old_key : k->new_key;
	struct kf_audit_line l;
	uint64_t no = 0, seq;
	int r;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	kf_audit_reader_start(&k->rd, fd);
	while ((r = kf_audit_reader_next(&k->rd, false, &l)) == 1) {
		const char *why = NULL, *text = l.text, *ph;
		size_t plen;
		json_t *root = NULL;
		char *copy = NULL;

		if (!l.complete)
			break;
		no++;
		plen = l.len - 1 - KF_AUDIT_CHAIN_SUFFIX_LEN;
		if (!text ||
		    kf_audit_parse_line(text, l.len - 1, &seq, chain, &root,
					&why) < 0 ||
		    l.len - 1 <= KF_AUDIT_CHAIN_SUFFIX_LEN) {
			kf_err_set(err, "%s: line %llu: %s", name,
				   (unsigned long long)no,
				   why ? why : "longer than a line may be");
			return -EBADMSG;
		}
		ph = no == 1 && k->have_prev && is_open_record(root)
			 ? prev_chain_at(text, plen)
			 : NULL;
		if (no == 1) {
			r = start_chain(k, text, plen, root, seq, new_prev);
			if (r == 0 && out)
				r = start_chain(&(struct rekey){0}, text, plen,
						root, seq, old_prev);
			if (r < 0) {
				json_decref(root);
				kf_err_set(err,
					   "%s: line 1: where its chain starts "
					   "is unknown",
					   name);
				return r;
			}
		}
		json_decref(root);
		kf_hex(new_prev, KF_AUDIT_CHAIN_BYTES, hex);
		/* Checking: an open record must name the new chain already. */
		if (!out && ph && memcmp(ph, hex, KF_AUDIT_CHAIN_HEX) != 0)
			return -EBADMSG;
		kf_audit_chain_mac(key, out ? old_prev : new_prev, text, plen,
				   want);
		if (sodium_memcmp(want, chain, sizeof(want)) != 0) {
			if (out)
				kf_err_set(err,
					   "%s: line %llu: chain matches "
					   "neither master key (edited?)",
					   name, (unsigned long long)no);
			return -EBADMSG;
		}
		if (!out) {
			memcpy(new_prev, chain, sizeof(chain));
			continue;
		}
		memcpy(old_prev, chain, sizeof(chain));
		copy = malloc(plen);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, text, plen);
		if (ph)
			memcpy(copy + (ph - text), hex, KF_AUDIT_CHAIN_HEX);
		kf_audit_chain_mac(k->new_key, new_prev, copy, plen, new_prev);
		kf_hex(new_prev, KF_AUDIT_CHAIN_BYTES, hex);
		if (fwrite(copy, 1, plen, out) != plen ||
		    fprintf(out, "%s%s\"}\n", KF_AUDIT_CHAIN_HEAD, hex) < 0)
			r = -EIO;
		free(copy);
		if (r < 0) {
			kf_err_set(err, "%s: write: %s", name, strerror(errno));
			return r;
		}
	}
	if (r < 0) {
		kf_err_set(err, "%s: read: %s", name, strerror(-r));
		return r;
	}
	if (no == 0 && k->have_prev)
		memcpy(new_prev, k->new_prev, sizeof(new_prev));
	memcpy(ret_last, new_prev, KF_AUDIT_CHAIN_BYTES);
	*ret_lines = no;
	return 0;
}

/* Writes the rekeyed copy of the file at fd and renames it over name. */
static int rewrite(struct rekey *k, int fd, const char *name,
		   uint8_t last[KF_AUDIT_CHAIN_BYTES], uint64_t *lines,
		   char err[KF_ERR_MAX])
{
	char tmp[KF_AUDIT_NAME_MAX + 16];
	FILE *out;
	int ofd, r;

	snprintf(tmp, sizeof(tmp), ".%s%s", name, REKEY_TMP_SUFFIX);
	if (unlinkat(k->dirfd, tmp, 0) < 0 && errno != ENOENT) {
		r = -errno;
		kf_err_set(err, "%s: %s", tmp, strerror(-r));
		return r;
	}
	ofd =
	    openat(k->dirfd, tmp,
		   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (ofd < 0 || !(out = fdopen(ofd, "w"))) {
		r = -errno;
		if (ofd >= 0)
			close(ofd);
		kf_err_set(err, "%s: %s", tmp, strerror(-r));
		return r;
	}
	KF_CRASH("audit/rekey/created");
	r = pass(k, fd, name, out, last, lines, err);
	if (fflush(out) != 0 && r == 0) {
		r = -errno;
		kf_err_set(err, "%s: write: %s", tmp, strerror(-r));
	}
	/* Never retried: after a failed fsync the pages are marked clean. */
	if (r == 0 && fsync(fileno(out)) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fsync: %s", tmp, strerror(-r));
	}
	if (r == 0)
		KF_CRASH("audit/rekey/synced");
	if (fclose(out) != 0 && r == 0) {
		r = -errno;
		kf_err_set(err, "%s: close: %s", tmp, strerror(-r));
	}
	if (r == 0 && renameat(k->dirfd, tmp, k->dirfd, name) < 0) {
		r = -errno;
		kf_err_set(err, "%s: rename: %s", name, strerror(-r));
	}
	if (r < 0) {
		(void)unlinkat(k->dirfd, tmp, 0);
		return r;
	}
	KF_CRASH("audit/rekey/renamed");
	if (fsync(k->dirfd) < 0) {
		r = -errno;
		kf_err_set(err, "%s: fsync of the folder: %s", k->path,
			   strerror(-r));
	}
	KF_CRASH("audit/rekey/dir_synced");
	return r;
}

/* One file: left as it is when new already, else rewritten. */
static int rekey_file(struct rekey *k, const char *name, char err[KF_ERR_MAX])
{
	uint8_t last[KF_AUDIT_CHAIN_BYTES];
	uint64_t lines = 0;
	char why[KF_ERR_MAX];
	int fd, r;

	fd = openat(k->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", name, strerror(-r));
		return r;
	}
	r = pass(k, fd, name, NULL, last, &lines, why);
	if (r == -EBADMSG && !k->old_key) {
		kf_err_set(err,
			   "%s: not chained under the new master key, "
			   "and the old one is gone",
			   name);
	} else if (r == -EBADMSG) {
		r = rewrite(k, fd, name, last, &lines, err);
		if (r == 0)
			k->res.rewritten++;
	} else if (r < 0) {
		kf_err_set(err, "%s", why);
	}
	close(fd);
	if (r < 0)
		return r;
	k->res.files++;
	k->res.records += lines;
	memcpy(k->new_prev, last, sizeof(last));
	k->have_prev = true;
	return 0;
}

/* The closed segments of the log in the folder, oldest first. */
static int list_segments(struct rekey *k, struct seg **ret, size_t *ret_n,
			 char err[KF_ERR_MAX])
{
	struct seg *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	uint64_t first, last;
	int fd = dup(k->dirfd), r = 0;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	if (!d) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		kf_err_set(err, "%s: folder: %s", k->path, strerror(-r));
		return r;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		if (!kf_audit_segment_parse(k->base, de->d_name, &first, &last))
			continue;
		if (n == cap) {
			struct seg *grown;

			cap = cap ? 2 * cap : 16;
			grown = cap <= MAX_SEGMENTS
				    ? realloc(v, cap * sizeof(*v))
				    : NULL;
			if (!grown) {
				r = -ENOMEM;
				kf_err_set(err, "out of memory");
				break;
			}
			v = grown;
		}
		v[n].first = first;
		snprintf(v[n].name, sizeof(v[n].name), "%s", de->d_name);
		n++;
	}
	closedir(d);
	if (r < 0) {
		free(v);
		return r;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), by_first);
	*ret = v;
	*ret_n = n;
	return 0;
}

int kf_audit_rekey(const char *path, const uint8_t *old_key,
		   const uint8_t new_key[KF_AUDIT_KEY_BYTES],
		   struct kf_audit_rekey_result *ret, char err[KF_ERR_MAX])
{
	struct rekey k = {.path = path, .old_key = old_key, .new_key = new_key};
	const char *slash = strrchr(path, '/');
	struct seg *segs = NULL;
	char *dir;
	size_t n = 0;
	int r;

	k.base = slash ? slash + 1 : path;
	dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path))
		    : strdup(".");
	if (!dir || kf_audit_reader_init(&k.rd) < 0) {
		free(dir);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	k.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (k.dirfd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", dir, strerror(-r));
		goto out;
	}
	r = list_segments(&k, &segs, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = rekey_file(&k, segs[i].name, err);
	if (r == 0 &&
	    faccessat(k.dirfd, k.base, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		r = rekey_file(&k, k.base, err);
	if (r == 0)
		*ret = k.res;
	close(k.dirfd);
out:
	free(segs);
	free(dir);
	kf_audit_reader_done(&k.rd);
	return r;
}
