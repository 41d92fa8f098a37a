// SPDX-License-Identifier: MIT
/*
 * config_value: the values of keyfs.ini, one at a time (config_private.h).
 * No file names or line numbers here: the inih adapter (config_parse.c) puts
 * "file:line: " in front of the reason.
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_private.h"

#define DAY_SECONDS 86400
#define ID_BUF_HINT 16384     /* getpwnam_r buffer when sysconf has no hint */
#define ID_BUF_MAX (1u << 24) /* it doubles on ERANGE up to this */

static const struct kf_config_unit interval_units[] = {
    {"s", 1},
    {"m", 60},
    {"h", 3600},
    {"d", DAY_SECONDS},
};

#define N_INTERVAL_UNITS (sizeof(interval_units) / sizeof(interval_units[0]))

int kf_config_refuse(char reason[KF_ERR_MAX], int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, KF_ERR_MAX, fmt, ap);
	va_end(ap);
	return err;
}

const char *kf_config_quote(char out[KF_CONFIG_QUOTE_SIZE], const char *s)
{
	size_t i;

	for (i = 0; s[i] && i < KF_CONFIG_QUOTE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (s[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = 0;
	return out;
}

int kf_config_parse_choice(const char *key, const char *value,
			   const char *const *names, size_t n,
			   char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];
	char list[KF_ERR_MAX / 2] = "";
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		if (strcmp(value, names[i]) == 0)
			return (int)i;
	/* "a or b", "a, b or c" */
	for (size_t i = 0; i < n && len < sizeof(list); i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
					i == 0	     ? ""
					: i + 1 == n ? " or "
						     : ", ",
					names[i]);
	return kf_config_refuse(reason, -EINVAL, "bad %s \"%s\": expected %s",
				key, kf_config_quote(q, value), list);
}

int kf_config_parse_uint(const char *key, const char *value, unsigned min,
			 unsigned max, unsigned *ret, char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];
	uint64_t v;

	if (kf_parse_u64(value, max, &v) < 0 || v < min)
		return kf_config_refuse(
		    reason, -EINVAL,
		    "%s must be a whole number from %u to %u, not "
		    "\"%s\"",
		    key, min, max, kf_config_quote(q, value));
	*ret = (unsigned)v;
	return 0;
}

int kf_config_parse_amount(const char *value,
			   const struct kf_config_unit *units, size_t n,
			   uint64_t max, uint64_t *ret)
{
	size_t len = strspn(value, "0123456789");
	char digits[KF_ERR_MAX];
	uint64_t v;
	int r;

	if (len == 0)
		return -EINVAL;
	for (size_t u = 0; u < n; u++) {
		if (strcmp(value + len, units[u].suffix) != 0)
			continue;
		/* A line is shorter than this: only a huge number gets here. */
		if (len >= sizeof(digits))
			return -ERANGE;
		memcpy(digits, value, len);
		digits[len] = 0;
		r = kf_parse_u64(digits, max / units[u].scale, &v);
		if (r < 0)
			return r;
		*ret = v * units[u].scale;
		return 0;
	}
	return -EINVAL;
}

int kf_config_parse_interval(const char *key, const char *value, int64_t max,
			     int64_t *ret, char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];
	uint64_t v = 0;
	int r;

	if (strcmp(value, "0") == 0) {
		*ret = 0;
		return 0;
	}
	r = kf_config_parse_amount(value, interval_units, N_INTERVAL_UNITS,
				   (uint64_t)max, &v);
	if (r == -ERANGE)
		return kf_config_refuse(reason, -EINVAL,
					"%s \"%s\" is too large (at most "
					"%" PRId64 "s)",
					key, kf_config_quote(q, value), max);
	if (r < 0 || v == 0)
		return kf_config_refuse(
		    reason, -EINVAL,
		    "bad %s \"%s\": expected 0 (off) or a positive whole "
		    "number followed by s, m, h or d, e.g. 90d",
		    key, kf_config_quote(q, value));
	*ret = (int64_t)v;
	return 0;
}

/* Numeric id: digits only, below (id_t)-1 which means "no change". */
static bool parse_id(const char *s, uint32_t *ret)
{
	uint64_t v;

	if (kf_parse_u64(s, UINT32_MAX - 1, &v) < 0)
		return false;
	*ret = (uint32_t)v;
	return true;
}

static bool all_digits(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

/* Errors that getpwnam_r/getgrnam_r may give for "no such name". */
static bool not_found(int e)
{
	return e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM;
}

/* 0 and *ret, -ENOENT for no such user/group, or another -errno. */
static int lookup_id(const char *name, bool group, uint32_t *ret)
{
	long hint =
	    sysconf(group ? _SC_GETGR_R_SIZE_MAX : _SC_GETPW_R_SIZE_MAX);
	size_t size = hint > 0 ? (size_t)hint : ID_BUF_HINT;
	int e, r;

	for (;;) {
		char *buf = malloc(size);
		struct passwd pw, *pwr = NULL;
		struct group gr, *grr = NULL;

		if (!buf)
			return -ENOMEM;
		if (group)
			e = getgrnam_r(name, &gr, buf, size, &grr);
		else
			e = getpwnam_r(name, &pw, buf, size, &pwr);
		if (e == ERANGE && size < ID_BUF_MAX) {
			free(buf);
			size *= 2;
			continue;
		}
		if (group && e == 0 && grr) {
			*ret = (uint32_t)gr.gr_gid;
			r = 0;
		} else if (!group && e == 0 && pwr) {
			*ret = (uint32_t)pw.pw_uid;
			r = 0;
		} else {
			r = not_found(e) ? -ENOENT : -e;
		}
		free(buf);
		return r;
	}
}

static int resolve_id(const char *name, bool group, uint32_t *ret,
		      char reason[KF_ERR_MAX])
{
	const char *what = group ? "group" : "user";
	char q[KF_CONFIG_QUOTE_SIZE];
	int r;

	if (all_digits(name)) {
		if (!parse_id(name, ret))
			return kf_config_refuse(reason, -EINVAL,
						"%s id \"%s\" out of range",
						what, kf_config_quote(q, name));
		return 0;
	}
	r = lookup_id(name, group, ret);
	if (r == -ENOENT)
		return kf_config_refuse(reason, -EINVAL, "unknown %s \"%s\"",
					what, kf_config_quote(q, name));
	if (r < 0)
		return kf_config_refuse(reason, r, "looking up %s \"%s\": %s",
					what, kf_config_quote(q, name),
					strerror(-r));
	return 0;
}

int kf_config_parse_access(const char *key, const char *value,
			   struct kf_access *ret, char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE], buf[KF_ERR_MAX], *who, *mode, *rest;
	char *save = NULL, *colon;
	uint32_t uid, gid;
	size_t n;
	int r;

	if (strlen(value) >= sizeof(buf))
		return kf_config_refuse(reason, -EINVAL, "%s: value too long",
					key);
	strcpy(buf, value);
	who = strtok_r(buf, " \t", &save);
	mode = who ? strtok_r(NULL, " \t", &save) : NULL;
	rest = mode ? strtok_r(NULL, " \t", &save) : NULL;
	if (!who || !mode || rest)
		return kf_config_refuse(
		    reason, -EINVAL,
		    "%s: expected owner:group MODE (e.g. root:root "
		    "0400), not \"%s\"",
		    key, kf_config_quote(q, value));
	colon = strchr(who, ':');
	if (!colon || colon == who || !colon[1] || strchr(colon + 1, ':'))
		return kf_config_refuse(
		    reason, -EINVAL,
		    "%s: expected owner:group with one ':' (e.g. "
		    "root:root 0400), not \"%s\"",
		    key, kf_config_quote(q, who));
	*colon = 0;
	r = resolve_id(who, false, &uid, reason);
	if (r == 0)
		r = resolve_id(colon + 1, true, &gid, reason);
	if (r < 0)
		return r;
	n = strlen(mode);
	if ((n != 3 && n != 4) || mode[0] != '0' ||
	    strspn(mode, "01234567") != n)
		return kf_config_refuse(
		    reason, -EINVAL,
		    "%s: bad mode \"%s\": expected octal with a "
		    "leading 0 such as 0440, without setuid, setgid "
		    "or sticky bits",
		    key, kf_config_quote(q, mode));
	ret->uid = (uid_t)uid;
	ret->gid = (gid_t)gid;
	ret->mode = (mode_t)strtoul(mode, NULL, 8);
	return 0;
}

int kf_config_parse_purposes(const char *value, kf_config_purpose_name **list,
			     size_t *n, char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE], *copy, *tok, *save = NULL;
	int r = 0;

	copy = strdup(value);
	if (!copy)
		return kf_config_refuse(reason, -ENOMEM, "out of memory");
	for (tok = strtok_r(copy, " \t,", &save); tok;
	     tok = strtok_r(NULL, " \t,", &save)) {
		kf_config_purpose_name *grown;

		if (!kf_purpose_valid(tok)) {
			r = kf_config_refuse(
			    reason, -EINVAL,
			    "invalid purpose name \"%s\" in purposes: "
			    "must match [a-z0-9][a-z0-9_-]{0,%d}",
			    kf_config_quote(q, tok), KF_PURPOSE_MAX - 1);
			break;
		}
		for (size_t i = 0; i < *n && r == 0; i++)
			if (strcmp((*list)[i], tok) == 0)
				r = kf_config_refuse(
				    reason, -EINVAL,
				    "duplicate purpose \"%s\" in "
				    "purposes",
				    tok);
		if (r < 0)
			break;
		if (*n >= KF_CONFIG_MAX_PURPOSES) {
			r = kf_config_refuse(reason, -EINVAL,
					     "too many purposes (at most %d)",
					     KF_CONFIG_MAX_PURPOSES);
			break;
		}
		grown = realloc(*list, (*n + 1) * sizeof(**list));
		if (!grown) {
			r = kf_config_refuse(reason, -ENOMEM, "out of memory");
			break;
		}
		*list = grown;
		strcpy((*list)[(*n)++], tok);
	}
	free(copy);
	return r;
}
