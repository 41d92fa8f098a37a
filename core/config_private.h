/* SPDX-License-Identifier: MIT */
/*
 * config_private: what the three parts of the config module share.  Other
 * modules include config.h only.
 *
 *   config_parse.c  the inih adapter: sections, keys, line numbers, defaults,
 *                   kf_config_parse
 *   config_value.c  one value at a time: words, numbers, intervals,
 *                   owner:group MODE, purpose lists
 *   config_audit.c  the audit_* keys of [keyfs] and their defaults
 *   config_etcd.c   the values of [etcd] (endpoints, prefix, node, timeout)
 *                   and, with store = etcd, its defaults and the rules
 *                   between its keys
 *   config_load.c   which file, reading it, the environment, paths, the
 *                   mountpoint rule, kf_config_load and kf_config_free
 *
 * The value parsers know nothing of files or lines: each returns 0, or
 * -errno with the reason in `reason` (KF_ERR_MAX bytes); the adapter adds
 * "file:line: ".
 */
#ifndef KF_CONFIG_PRIVATE_H
#define KF_CONFIG_PRIVATE_H

#include <stdint.h>

#include "config.h"

/* A value quoted in a message: this many characters at most, then "...". */
#define KF_CONFIG_QUOTE_MAX 80
#define KF_CONFIG_QUOTE_SIZE (KF_CONFIG_QUOTE_MAX + sizeof("..."))

/* A purpose name with its NUL, as in struct kf_purpose. */
typedef char kf_config_purpose_name[KF_PURPOSE_MAX + 1];

/* A unit of kf_config_parse_amount: its suffix and what one is worth. */
struct kf_config_unit {
	const char *suffix;
	uint64_t scale;
};

/* Writes the reason; returns err, for `return kf_config_refuse(...)`. */
int kf_config_refuse(char reason[KF_ERR_MAX], int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Copies s into out for a message: printable ASCII only (others become '?'),
 * shortened to KF_CONFIG_QUOTE_MAX characters and "...".  Returns out.
 */
const char *kf_config_quote(char out[KF_CONFIG_QUOTE_SIZE], const char *s);

/*
 * One of n words for `key` (names[0..n-1]): returns the index of the word
 * value is, or -EINVAL with a reason listing them all.
 */
int kf_config_parse_choice(const char *key, const char *value,
			   const char *const *names, size_t n,
			   char reason[KF_ERR_MAX]);

/* A whole number in [min, max] for `key`: digits only, no sign, no space. */
int kf_config_parse_uint(const char *key, const char *value, unsigned min,
			 unsigned max, unsigned *ret,
			 char reason[KF_ERR_MAX]) KF_WUR;

/*
 * Digits, then one of the n units' suffixes, nothing else: 0 and *ret (the
 * number times the unit's scale), -ERANGE above max, -EINVAL for any other
 * text.  Writes no reason: the caller names its key.
 */
int kf_config_parse_amount(const char *value,
			   const struct kf_config_unit *units, size_t n,
			   uint64_t max, uint64_t *ret) KF_WUR;

/*
 * An interval for `key` (rotate_interval, audit_rotate, ...): "0" (off), or
 * N followed by s, m, h or d, at most max seconds; in seconds.
 */
int kf_config_parse_interval(const char *key, const char *value, int64_t max,
			     int64_t *ret, char reason[KF_ERR_MAX]) KF_WUR;

/* The longest interval any key takes: 100 years, in seconds. */
#define KF_CONFIG_INTERVAL_MAX ((int64_t)36500 * 86400)

/*
 * "owner:group MODE" for `key`: names or numeric ids, MODE octal with a
 * leading 0 and no special bits.  A failed user or group lookup other than
 * "no such name" returns its -errno.
 */
int kf_config_parse_access(const char *key, const char *value,
			   struct kf_access *ret,
			   char reason[KF_ERR_MAX]) KF_WUR;

/*
 * Appends the space- or comma-separated purpose names in value to *list
 * (realloc'd; the caller frees it), *n counting them.  Refuses invalid and
 * duplicate names and more than KF_CONFIG_MAX_PURPOSES.  On failure the
 * names before the bad one stay appended.
 */
int kf_config_parse_purposes(const char *value, kf_config_purpose_name **list,
			     size_t *n, char reason[KF_ERR_MAX]) KF_WUR;

/*
 * [etcd] endpoints: 1 to KF_ETCD_ENDPOINTS_MAX URLs separated by commas
 * (white space around them is fine), each http:// or https:// and HOST[:PORT],
 * a trailing '/' dropped; no duplicates.  0 and *ret_list (malloc'd strings
 * in a malloc'd array) and *ret_n, or -errno and the reason.
 */
int kf_config_parse_endpoints(const char *value, char ***ret_list,
			      size_t *ret_n, char reason[KF_ERR_MAX]) KF_WUR;

/*
 * [etcd] prefix: '/' first, no '/' last, no "//", only [A-Za-z0-9._/-], 2 to
 * 128 characters.  0 and *ret (malloc'd, what it held freed).
 */
int kf_config_parse_prefix(const char *value, char **ret,
			   char reason[KF_ERR_MAX]) KF_WUR;

/* [etcd] node: [A-Za-z0-9][A-Za-z0-9._-]{0,62}, copied into ret. */
int kf_config_parse_node(const char *value, char ret[KF_NODE_NAME_MAX + 1],
			 char reason[KF_ERR_MAX]) KF_WUR;

/* [etcd] timeout: N followed by ms or s, from 100ms to 60s; in ms. */
int kf_config_parse_timeout(const char *value, int *ret,
			    char reason[KF_ERR_MAX]) KF_WUR;

/*
 * With store = etcd, once every key is read: refuses a missing endpoints,
 * fills the defaults (prefix, node from the host name, timeout), and checks
 * that cert goes with key, user with password_file, and cacert, cert and key
 * with an https:// endpoint.  On failure *ret_key names the key whose line
 * the reason belongs to ("store" for a missing endpoints or an unfit host
 * name).
 */
int kf_config_etcd_finish(struct kf_etcd_settings *e, const char **ret_key,
			  char reason[KF_ERR_MAX]) KF_WUR;

/* Frees what e holds and zeroes it. */
void kf_config_etcd_done(struct kf_etcd_settings *e);

/*
 * base + "/" + path (or path alone if absolute) with "//", "." and ".."
 * collapsed lexically; symlinks are not resolved.  malloc'd, or NULL.
 */
char *kf_config_path_clean(const char *base, const char *path);

/*
 * Sets *ret (freeing what it held) to value resolved against basedir as
 * kf_config_path_clean does, for `key`; refuses a result of PATH_MAX bytes
 * or more.
 */
int kf_config_path_set(const char *key, const char *basedir, const char *value,
		       char **ret, char reason[KF_ERR_MAX]) KF_WUR;

/* The current directory, cleaned: malloc'd, or NULL (errno says why). */
char *kf_config_cwd(void);

/*
 * path made absolute against the current directory and cleaned; NULL path:
 * the current directory.  An absolute path needs no current directory.
 * malloc'd, or NULL.
 */
char *kf_config_path_abs(const char *path);

/*
 * The first of kf_config_paths that lies under mnt (absolute and clean), with
 * its key's name in *ret_key; or NULL.
 */
const char *kf_config_under_mountpoint(const struct kf_config *cfg,
				       const char *mnt, const char **ret_key);

/* Fills a with the defaults (strings strdup'd).  0, or -ENOMEM. */
int kf_config_audit_defaults(struct kf_audit_settings *a) KF_WUR;

/* Frees a's strings. */
void kf_config_audit_done(struct kf_audit_settings *a);

/*
 * Sets one audit_* key of [keyfs] from value (paths resolved against
 * basedir).  0, or -errno with the reason.
 */
int kf_config_audit_value(struct kf_audit_settings *a, const char *basedir,
			  const char *key, const char *value,
			  char reason[KF_ERR_MAX]) KF_WUR;

#endif
