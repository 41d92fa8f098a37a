// SPDX-License-Identifier: MIT
/*
 * backup: the backup directory (backup.h, DESIGN.md §5): archive names,
 * writing new archives without ever replacing one, listing and pruning.
 * The archive format itself is in backup_format.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "backup_private.h"

#define MAX_LIST 100000u  /* archives listed from one directory */
#define MAX_SUFFIX 100000 /* _2 ... for generated names */
#define STAMP_LEN 15	  /* YYYYMMDD_HHMMSS */

bool kf_backup_name_valid(const char *name)
{
	size_t len;

	if (!name)
		return false;
	len = strlen(name);
	if (len == 0 || len > KF_BACKUP_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return strstr(name, "..") == NULL;
}

bool kf_backup_name_reserved(const char *name)
{
	static const char *const reserved[] = {KF_BACKUP_AUTO_PREFIX,
					       KF_BACKUP_PRE_RESTORE_PREFIX};

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strncmp(name, reserved[i], strlen(reserved[i])) == 0)
			return true;
	return false;
}

bool kf_backup_stem(const char *file, bool need_suffix,
		    char stem[KF_BACKUP_NAME_MAX + 1])
{
	size_t len = strlen(file);
	bool has =
	    len > KF_BACKUP_SUFFIX_LEN &&
	    strcmp(file + len - KF_BACKUP_SUFFIX_LEN, KF_BACKUP_SUFFIX) == 0;

	if (need_suffix && !has)
		return false;
	if (has)
		len -= KF_BACKUP_SUFFIX_LEN;
	if (len == 0 || len > KF_BACKUP_NAME_MAX)
		return false;
	memcpy(stem, file, len);
	stem[len] = 0;
	return kf_backup_name_valid(stem);
}

bool kf_backup_file_name(const char *name, char file[KF_BACKUP_FILE_NAME_MAX])
{
	int n = snprintf(file, KF_BACKUP_FILE_NAME_MAX, "%s" KF_BACKUP_SUFFIX,
			 name);

	return n > 0 && n < (int)KF_BACKUP_FILE_NAME_MAX;
}

/* Candidate i (1 = none, 2.. = "_i") of a generated name; false if invalid. */
static bool generated_name(const char *prefix, int64_t now, int i,
			   char out[KF_BACKUP_NAME_MAX + 1])
{
	char stamp[STAMP_LEN + 1], tail[16] = "";
	time_t t = (time_t)now;
	struct tm tm;
	int n;

	if (!gmtime_r(&t, &tm) ||
	    strftime(stamp, sizeof(stamp), "%Y%m%d_%H%M%S", &tm) != STAMP_LEN)
		return false;
	if (i > 1)
		snprintf(tail, sizeof(tail), "_%d", i);
	n = snprintf(out, KF_BACKUP_NAME_MAX + 1, "%s%s%s",
		     prefix ? prefix : KF_BACKUP_AUTO_PREFIX, stamp, tail);
	return n > 0 && n <= KF_BACKUP_NAME_MAX && kf_backup_name_valid(out);
}

/* Sets the temporary file's times to `now` and makes that durable. */
static int set_mtime(const char *dir, const char *tmp, int64_t now, char *err)
{
	struct timespec ts[2] = {{.tv_sec = (time_t)now},
				 {.tv_sec = (time_t)now}};
	char path[PATH_MAX];
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, tmp);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", path, strerror(-r));
		return r;
	}
	if (futimens(fd, ts) < 0)
		r = -errno;
	/* Never retried: after a failed fsync the pages are marked clean. */
	else if (fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		kf_err_set(err, "%s: setting mtime: %s", path, strerror(-r));
	return r;
}

/*
 * The highest suffix already used by generated names of this second (1 for
 * the bare name, 0 for none), so a new archive always sorts after them even
 * when a prune removed some.
 */
static int highest_suffix(const char *dir, const char *prefix, int64_t now)
{
	char base[KF_BACKUP_NAME_MAX + 1];
	struct dirent *de;
	int best = 0;
	size_t blen;
	DIR *d;

	if (!generated_name(prefix, now, 1, base) || !(d = opendir(dir)))
		return 0;
	blen = strlen(base);
	while ((de = readdir(d))) {
		const char *rest = de->d_name + blen;
		size_t digits;
		char num[8];
		uint64_t n;

		if (strncmp(de->d_name, base, blen) != 0)
			continue;
		if (strcmp(rest, KF_BACKUP_SUFFIX) == 0) {
			best = best > 1 ? best : 1;
			continue;
		}
		digits = strlen(rest) - (strlen(rest) >= KF_BACKUP_SUFFIX_LEN
					     ? KF_BACKUP_SUFFIX_LEN
					     : 0);
		if (rest[0] != '_' || rest[1] < '1' || rest[1] > '9' ||
		    digits < 2 || digits > 7 ||
		    strcmp(rest + digits, KF_BACKUP_SUFFIX) != 0)
			continue;
		memcpy(num, rest + 1, digits - 1);
		num[digits - 1] = 0;
		if (kf_parse_u64(num, MAX_SUFFIX, &n) == 0 && n >= 2 &&
		    n > (uint64_t)best)
			best = (int)n;
	}
	closedir(d);
	return best;
}

/*
 * Links the prepared temporary file to its first free name: `name`, or the
 * generated candidates.  link(2) never replaces an existing file.
 */
static int link_new(const char *dir, const char *tmp, const char *name,
		    const char *prefix, int64_t now,
		    char file[KF_BACKUP_FILE_NAME_MAX], char *err)
{
	char from[PATH_MAX], to[PATH_MAX], cand[KF_BACKUP_NAME_MAX + 1];
	int r = -EEXIST;

	snprintf(from, sizeof(from), "%s/%s", dir, tmp);
	for (int i = name ? 1 : highest_suffix(dir, prefix, now) + 1;
	     i <= MAX_SUFFIX; i++) {
		if (name)
			snprintf(cand, sizeof(cand), "%s", name);
		else if (!generated_name(prefix, now, i, cand))
			break;
		kf_backup_file_name(cand, file);
		snprintf(to, sizeof(to), "%s/%s", dir, file);
		if (link(from, to) == 0)
			return 0;
		r = -errno;
		if (r != -EEXIST) {
			kf_err_set(err, "%s: link: %s", to, strerror(-r));
			return r;
		}
		if (name)
			break;
	}
	if (name)
		kf_err_set(err, "backup %s already exists", file);
	else
		kf_err_set(err, "no free backup name for this time in %s", dir);
	return -EEXIST;
}

int kf_backup_write(const char *dir, const char *name, const char *prefix,
		    const uint8_t key[KF_BACKUP_KEY_BYTES], const uint8_t *blob,
		    size_t len, uint32_t key_version, const uint32_t *versions,
		    size_t n_versions, int64_t now, char *ret_name,
		    char err[KF_ERR_MAX])
{
	return kf_backup_write_recoverable(dir, name, prefix, key, NULL, blob,
					   len, key_version, versions,
					   n_versions, now, ret_name, err);
}

int kf_backup_write_recoverable(const char *dir, const char *name,
				const char *prefix,
				const uint8_t key[KF_BACKUP_KEY_BYTES],
				const uint8_t *recovery_pk, const uint8_t *blob,
				size_t len, uint32_t key_version,
				const uint32_t *versions, size_t n_versions,
				int64_t now, char *ret_name,
				char err[KF_ERR_MAX])
{
	const struct kf_backup_clear clear = {.created = now,
					      .key_version = key_version,
					      .versions = (uint32_t *)versions,
					      .n_versions = n_versions};
	char tmp[PATH_MAX] = "", first[KF_BACKUP_NAME_MAX + 1];
	char file[KF_BACKUP_FILE_NAME_MAX];
	char *text = NULL;
	size_t nlen;
	int r;

	/* The name is not echoed: a mistaken write could be a key's text. */
	if (name) {
		nlen = strlen(name);
		if (!kf_backup_name_valid(name) ||
		    (nlen >= KF_BACKUP_SUFFIX_LEN &&
		     strcmp(name + nlen - KF_BACKUP_SUFFIX_LEN,
			    KF_BACKUP_SUFFIX) == 0)) {
			kf_err_set(err,
				   "invalid backup name: use 1 to %d "
				   "letters, digits, '.', '_' or '-', "
				   "starting with a letter or digit, no "
				   "\"..\" and no \".json\" ending",
				   KF_BACKUP_NAME_MAX);
			return -EINVAL;
		}
		if (kf_backup_name_reserved(name)) {
			kf_err_set(err,
				   "invalid backup name: names starting with "
				   "\"%s\" or \"%s\" are reserved for the "
				   "archives keyfs makes itself",
				   KF_BACKUP_AUTO_PREFIX,
				   KF_BACKUP_PRE_RESTORE_PREFIX);
			return -EINVAL;
		}
		snprintf(first, sizeof(first), "%s", name);
	} else if (!generated_name(prefix, now, 1, first)) {
		kf_err_set(err, "invalid backup name prefix");
		return -EINVAL;
	}
	r = kf_backup_seal(&clear, key, recovery_pk, blob, len, &text, err);
	if (r < 0)
		return r;
	kf_backup_file_name(first, file);
	r = kf_file_prepare(dir, file, text, strlen(text), 0600, tmp, err);
	if (r < 0) {
		tmp[0] = 0;
		goto out;
	}
	r = set_mtime(dir, tmp, now, err);
	if (r < 0)
		goto out;
	r = link_new(dir, tmp, name, prefix, now, file, err);
	if (r < 0)
		goto out;
	KF_CRASH_FILE("linked", file);
	kf_file_discard(dir, tmp);
	tmp[0] = 0;
	KF_CRASH_FILE("tmp_unlinked", file);
	r = kf_dir_fsync(dir);
	if (r < 0) {
		char path[PATH_MAX];

		kf_err_set(err, "%s: fsync of directory: %s", dir,
			   strerror(-r));
		snprintf(path, sizeof(path), "%s/%s", dir, file);
		unlink(path);
		goto out;
	}
	KF_CRASH_FILE("dir_synced", file);
	if (ret_name)
		snprintf(ret_name, KF_BACKUP_FILE_NAME_MAX, "%s", file);
out:
	kf_file_discard(dir, tmp);
	free(text);
	return r;
}

int kf_backup_import(const char *dir, const char *file,
		     const uint8_t key[KF_BACKUP_KEY_BYTES],
		     const uint8_t *text, size_t len, char err[KF_ERR_MAX])
{
	char stem[KF_BACKUP_NAME_MAX + 1], tmp[PATH_MAX] = "";
	char from[PATH_MAX], to[PATH_MAX];
	int64_t created = 0;
	int r;

	if (!kf_backup_stem(file, true, stem)) {
		kf_err_set(err, "not an archive name");
		return -EINVAL;
	}
	snprintf(to, sizeof(to), "%s/%s", dir, file);
	if (access(to, F_OK) == 0)
		return -EEXIST;
	r = kf_backup_check_bytes(text, len, key, &created, err);
	if (r < 0)
		return r;
	r = kf_file_prepare(dir, file, text, len, 0600, tmp, err);
	if (r < 0) {
		tmp[0] = 0;
		goto out;
	}
	r = set_mtime(dir, tmp, created, err);
	if (r < 0)
		goto out;
	snprintf(from, sizeof(from), "%s/%s", dir, tmp);
	if (link(from, to) < 0) {
		r = -errno;
		if (r != -EEXIST)
			kf_err_set(err, "%s: link: %s", to, strerror(-r));
		goto out;
	}
	KF_CRASH_FILE("linked", file);
	r = kf_dir_fsync(dir);
	if (r < 0) {
		kf_err_set(err, "%s: fsync of directory: %s", dir,
			   strerror(-r));
		unlink(to);
	} else {
		KF_CRASH_FILE("dir_synced", file);
	}
out:
	kf_file_discard(dir, tmp);
	return r;
}

int kf_backup_rekey(const char *dir, const char *file, const uint8_t *old_key,
		    const uint8_t new_key[KF_BACKUP_KEY_BYTES],
		    bool *ret_rewritten, char err[KF_ERR_MAX])
{
	char path[PATH_MAX], tmp[PATH_MAX] = "";
	uint8_t *buf = NULL;
	char *text = NULL;
	int64_t created = 0;
	size_t len = 0;
	int r;

	*ret_rewritten = false;
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	r = kf_file_read_all(path, KF_BACKUP_FILE_MAX, &buf, &len, NULL, err);
	if (r < 0)
		return r;
	r = kf_backup_reseal(buf, len, old_key, new_key, &text, &created, err);
	sodium_free(buf);
	if (r <= 0)
		return r;
	r = kf_file_prepare(dir, file, text, strlen(text), 0600, tmp, err);
	if (r < 0) {
		tmp[0] = 0;
		goto out;
	}
	r = set_mtime(dir, tmp, created, err);
	if (r == 0)
		r = kf_file_commit(dir, tmp, file, err);
	if (r >= 0) {
		tmp[0] = 0;
		*ret_rewritten = true;
		r = r == KF_FILE_UNSYNCED ? -EIO : 0;
	}
out:
	kf_file_discard(dir, tmp);
	free(text);
	return r;
}

/* One archive of a listing: what is shown, and its clear fields. */
struct listed {
	struct kf_backup_info info;
	struct kf_backup_clear clear; /* versions kept only when asked */
};

/*
 * The entry of dir/file from its clear fields, read once; -errno if not
 * an archive.  Without keep_clear its version list is freed at once.
 */
static int list_one(const char *dir, int dirfd, const char *file,
		    bool keep_clear, struct kf_backup_cache *cache,
		    struct listed *ret)
{
	struct kf_backup_clear c;
	struct stat st;
	char stem[KF_BACKUP_NAME_MAX + 1], *path;
	int r;

	if (!kf_backup_stem(file, true, stem))
		return -EINVAL;
	if (fstatat(dirfd, file, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (!cache || kf_backup_cache_get(cache, file, &st, &c) < 0) {
		path = kf_path_join(dir, file);
		if (!path)
			return -ENOMEM;
		/* The size and mtime listed are those of the file read. */
		r = kf_backup_load_clear(path, &c, &st, NULL);
		free(path);
		if (r < 0)
			return r;
		if (cache)
			kf_backup_cache_put(cache, file, &st, &c);
	}
	memset(ret, 0, sizeof(*ret));
	kf_backup_file_name(stem, ret->info.name);
	ret->info.created = c.created;
	ret->info.key_version = c.key_version;
	ret->info.n_versions = (uint32_t)c.n_versions;
	ret->info.size = st.st_size;
	ret->info.mtime = (int64_t)st.st_mtim.tv_sec;
	if (keep_clear)
		ret->clear = c;
	else
		kf_backup_clear_done(&c);
	return 0;
}

static int newest_first(const void *pa, const void *pb)
{
	const struct kf_backup_info *a = &((const struct listed *)pa)->info;
	const struct kf_backup_info *b = &((const struct listed *)pb)->info;

	if (a->created != b->created)
		return a->created < b->created ? 1 : -1;
	/* Same second: x_10 is newer than x_9, which is newer than x. */
	return -strverscmp(a->name, b->name);
}

static void listed_free(struct listed *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++)
		kf_backup_clear_done(&list[i].clear);
	free(list);
}

/*
 * The archives in dir, newest first, each file read once (the rules of
 * kf_backup_list); with keep_clear each keeps its version list.  Free
 * with listed_free.
 */
static int list_dir(const char *dir, bool keep_clear,
		    struct kf_backup_cache *cache, struct listed **ret,
		    size_t *ret_n, char err[KF_ERR_MAX])
{
	struct listed *list = NULL, one;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd, r = 0;

	*ret = NULL;
	*ret_n = 0;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "%s: %s", dir, strerror(-r));
		return r;
	}
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		kf_err_set(err, "%s: %s", dir, strerror(-r));
		close(fd);
		return r;
	}
	if (cache)
		kf_backup_cache_begin(cache);
	/* Beyond the cap the rest is left out; prune still never deletes
	 * one of the `keep` newest, as it only deletes listed older ones. */
	while (n < MAX_LIST) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			r = -errno;
			if (r < 0)
				kf_err_set(err, "%s: %s", dir, strerror(-r));
			break;
		}
		if (list_one(dir, dirfd(d), de->d_name, keep_clear, cache,
			     &one) < 0)
			continue;
		if (n == cap) {
			struct listed *grown;

			cap = cap ? cap * 2 : 16;
			grown = realloc(list, cap * sizeof(*list));
			if (!grown) {
				kf_backup_clear_done(&one.clear);
				r = -ENOMEM;
				kf_err_set(err, "out of memory");
				break;
			}
			list = grown;
		}
		list[n++] = one;
	}
	closedir(d);
	if (cache && r == 0)
		kf_backup_cache_end(cache);
	if (r < 0) {
		listed_free(list, n);
		return r;
	}
	if (n > 1)
		qsort(list, n, sizeof(*list), newest_first);
	*ret = list;
	*ret_n = n;
	return 0;
}

int kf_backup_list(const char *dir, struct kf_backup_info **ret, size_t *ret_n,
		   char err[KF_ERR_MAX])
{
	struct kf_backup_info *infos = NULL;
	struct listed *list;
	size_t n;
	int r = list_dir(dir, false, NULL, &list, &n, err);

	if (r < 0)
		return r;
	if (n > 0) {
		infos = malloc(n * sizeof(*infos));
		if (!infos) {
			listed_free(list, n);
			kf_err_set(err, "out of memory");
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < n; i++)
		infos[i] = list[i].info;
	listed_free(list, n);
	*ret = infos;
	*ret_n = n;
	return 0;
}

/* A growing set of version numbers (small: linear search is fine). */
struct version_set {
	uint32_t *v;
	size_t n, cap;
};

static bool set_has(const struct version_set *set, uint32_t version)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->v[i] == version)
			return true;
	return false;
}

static int set_add_all(struct version_set *set, const struct kf_backup_clear *a)
{
	for (size_t i = 0; i < a->n_versions; i++) {
		if (set_has(set, a->versions[i]))
			continue;
		if (set->n == set->cap) {
			size_t cap = set->cap ? set->cap * 2 : 64;
			uint32_t *grown = realloc(set->v, cap * sizeof(*grown));

			if (!grown)
				return -ENOMEM;
			set->v = grown;
			set->cap = cap;
		}
		set->v[set->n++] = a->versions[i];
	}
	return 0;
}

/*
 * Whether an archive holding the versions in a must be kept: one of them
 * is a version that `held` says the keyring no longer has and that no
 * archive kept so far (`covered`) holds.  A kept archive's versions join
 * `covered`.
 */
static int must_keep(const struct kf_backup_clear *a,
		     const struct kf_backup_prune_opts *o,
		     struct version_set *covered, bool *ret_keep)
{
	bool keep = false;

	for (size_t i = 0; i < a->n_versions && !keep; i++)
		keep = !o->held(a->versions[i], o->data) &&
		       !set_has(covered, a->versions[i]);
	*ret_keep = keep;
	return keep ? set_add_all(covered, a) : 0;
}

int kf_backup_prune(const char *dir, const struct kf_backup_prune_opts *o,
		    struct kf_backup_prune_result *ret, char err[KF_ERR_MAX])
{
	struct listed *list = NULL;
	struct version_set covered = {0};
	struct kf_backup_prune_result res = {0};
	size_t prefix_len = o->prefix ? strlen(o->prefix) : 0;
	bool protect = !o->force && o->held;
	bool *doomed = NULL;
	unsigned seen = 0;
	int r = 0, r2;

	r = list_dir(dir, protect, o->cache, &list, &res.listed, err);
	if (r < 0)
		return r;
	doomed = calloc(res.listed ? res.listed : 1, sizeof(*doomed));
	if (!doomed) {
		listed_free(list, res.listed);
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	/* First what stays whatever happens: its versions are covered. */
	for (size_t i = 0; i < res.listed && r == 0; i++) {
		if ((!prefix_len ||
		     strncmp(list[i].info.name, o->prefix, prefix_len) == 0) &&
		    seen++ >= o->keep) {
			doomed[i] = true;
			continue;
		}
		if (protect && set_add_all(&covered, &list[i].clear) < 0) {
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
		}
	}
	/*
	 * Then the older ones, newest first: the newest archive holding a
	 * version the keyring no longer has, and that nothing kept holds, is
	 * that version's last copy.
	 */
	for (size_t i = 0; i < res.listed && r == 0; i++) {
		bool keep = false;
		char *path;

		if (!doomed[i])
			continue;
		if (protect) {
			r = must_keep(&list[i].clear, o, &covered, &keep);
			if (r < 0) {
				kf_err_set(err, "out of memory");
				break;
			}
			res.protected += keep;
			if (keep)
				continue;
		}
		if (o->dry_run) {
			res.deleted++;
			continue;
		}
		path = kf_path_join(dir, list[i].info.name);
		if (!path) {
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
			break;
		}
		if (unlink(path) == 0) {
			KF_CRASH("backup/prune/unlinked");
			res.deleted++;
			if (o->deleted)
				o->deleted(list[i].info.name, o->data);
		} else if (errno != ENOENT) {
			r = -errno;
			kf_err_set(err,
				   "%s: cannot delete (after %zu deleted): %s",
				   path, res.deleted, strerror(-r));
		}
		free(path);
	}
	free(doomed);
	listed_free(list, res.listed);
	free(covered.v);
	if (res.deleted > 0) {
		r2 = kf_dir_fsync(dir);
		if (r2 < 0 && r == 0) {
			r = r2;
			kf_err_set(err, "%s: fsync of directory: %s", dir,
				   strerror(-r));
		}
		KF_CRASH("backup/prune/dir_synced");
	}
	*ret = res;
	return r;
}
