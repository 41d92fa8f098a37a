// SPDX-License-Identifier: MIT
/*
 * config_audit: the [keyfs] keys that say how the audit log is kept --
 * audit_max_size, audit_rotate, audit_keep, audit_open_window,
 * audit_syslog, audit_syslog_facility, audit_syslog_tag,
 * audit_syslog_socket, audit_min_free -- one value at a time, and their
 * defaults.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "config_private.h"

#define KEEP_MAX 1000000
#define TAG_MAX 32
#define SIZE_MAX_BYTES ((uint64_t)1 << 40) /* 1 TiB */

static const struct kf_config_unit size_units[] = {
    {"", 1},
    {"K", 1024},
    {"M", 1024 * 1024},
    {"G", 1024 * 1024 * 1024},
};

static const struct {
	const char *name;
	int facility;
} facilities[] = {
    {"auth", LOG_AUTH},	    {"authpriv", LOG_AUTHPRIV}, {"daemon", LOG_DAEMON},
    {"user", LOG_USER},	    {"local0", LOG_LOCAL0},	{"local1", LOG_LOCAL1},
    {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},	{"local4", LOG_LOCAL4},
    {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},	{"local7", LOG_LOCAL7},
};

int kf_config_audit_defaults(struct kf_audit_settings *a)
{
	a->max_size = KF_AUDIT_MAX_SIZE_DEFAULT;
	a->rotate = KF_AUDIT_ROTATE_DEFAULT;
	a->keep = 0;
	a->open_window = KF_AUDIT_OPEN_WINDOW_DEFAULT;
	a->syslog = false;
	a->syslog_facility = LOG_AUTHPRIV;
	a->min_free = KF_AUDIT_MIN_FREE_DEFAULT;
	if (!a->syslog_tag)
		a->syslog_tag = strdup(KF_AUDIT_SYSLOG_TAG_DEFAULT);
	if (!a->syslog_socket)
		a->syslog_socket = strdup(KF_AUDIT_SYSLOG_SOCKET_DEFAULT);
	return a->syslog_tag && a->syslog_socket ? 0 : -ENOMEM;
}

void kf_config_audit_done(struct kf_audit_settings *a)
{
	free(a->syslog_tag);
	free(a->syslog_socket);
	a->syslog_tag = a->syslog_socket = NULL;
}

const char *kf_config_facility_name(int facility)
{
	for (size_t i = 0; i < KF_LEN(facilities); i++)
		if (facilities[i].facility == facility)
			return facilities[i].name;
	return "?";
}

static int parse_size(const char *key, const char *value, uint64_t *ret,
		      char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];
	uint64_t v = 0;
	int r = kf_config_parse_amount(value, size_units, KF_LEN(size_units),
				       SIZE_MAX_BYTES, &v);

	if (r < 0 || v < KF_AUDIT_MAX_SIZE_MIN)
		return kf_config_refuse(reason, -EINVAL,
					"bad %s \"%s\": expected a size from "
					"4K to 1024G (a whole number of "
					"bytes, or with K, M or G)",
					key, kf_config_quote(q, value));
	*ret = v;
	return 0;
}

static int parse_percent(const char *key, const char *value, unsigned *ret,
			 char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE], digits[8];
	size_t len = strlen(value);

	/* "5%" or "5" */
	if (len > 0 && value[len - 1] == '%')
		len--;
	if (len == 0 || len >= sizeof(digits) ||
	    strspn(value, "0123456789") != len)
		goto bad;
	memcpy(digits, value, len);
	digits[len] = 0;
	if (kf_config_parse_uint(key, digits, 0, 99, ret, reason) == 0)
		return 0;
bad:
	return kf_config_refuse(reason, -EINVAL,
				"bad %s \"%s\": expected a percentage from 0 "
				"(off) to 99, e.g. 5%%",
				key, kf_config_quote(q, value));
}

static int parse_facility(const char *key, const char *value, int *ret,
			  char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];

	for (size_t i = 0; i < KF_LEN(facilities); i++)
		if (strcmp(value, facilities[i].name) == 0) {
			*ret = facilities[i].facility;
			return 0;
		}
	return kf_config_refuse(reason, -EINVAL,
				"bad %s \"%s\": expected auth, authpriv, "
				"daemon, user or local0 to local7",
				key, kf_config_quote(q, value));
}

/* A syslog tag: what RFC 3164 allows and a SIEM can select on. */
static int parse_tag(const char *key, const char *value, char **ret,
		     char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];
	size_t len = strlen(value);
	char *copy;

	if (len == 0 || len > TAG_MAX ||
	    strspn(value, "abcdefghijklmnopqrstuvwxyz"
			  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len)
		return kf_config_refuse(reason, -EINVAL,
					"bad %s \"%s\": expected 1 to %d "
					"letters, digits, '.', '_' or '-'",
					key, kf_config_quote(q, value),
					TAG_MAX);
	copy = strdup(value);
	if (!copy)
		return kf_config_refuse(reason, -ENOMEM, "out of memory");
	free(*ret);
	*ret = copy;
	return 0;
}

int kf_config_audit_value(struct kf_audit_settings *a, const char *basedir,
			  const char *key, const char *value,
			  char reason[KF_ERR_MAX])
{
	static const char *const yes_no[] = {"no", "yes"};
	int r;

	if (strcmp(key, "audit_max_size") == 0)
		return parse_size(key, value, &a->max_size, reason);
	if (strcmp(key, "audit_rotate") == 0)
		return kf_config_parse_interval(
		    key, value, KF_CONFIG_INTERVAL_MAX, &a->rotate, reason);
	if (strcmp(key, "audit_keep") == 0)
		return kf_config_parse_uint(key, value, 0, KEEP_MAX, &a->keep,
					    reason);
	if (strcmp(key, "audit_open_window") == 0)
		return kf_config_parse_interval(key, value,
						KF_AUDIT_OPEN_WINDOW_MAX,
						&a->open_window, reason);
	if (strcmp(key, "audit_syslog") == 0) {
		r = kf_config_parse_choice(key, value, yes_no, KF_LEN(yes_no),
					   reason);
		if (r >= 0)
			a->syslog = r == 1;
		return r < 0 ? r : 0;
	}
	if (strcmp(key, "audit_syslog_facility") == 0)
		return parse_facility(key, value, &a->syslog_facility, reason);
	if (strcmp(key, "audit_syslog_tag") == 0)
		return parse_tag(key, value, &a->syslog_tag, reason);
	if (strcmp(key, "audit_syslog_socket") == 0) {
		if (!*value)
			return kf_config_refuse(reason, -EINVAL,
						"%s must not be empty", key);
		return kf_config_path_set(key, basedir, value,
					  &a->syslog_socket, reason);
	}
	if (strcmp(key, "audit_min_free") == 0)
		return parse_percent(key, value, &a->min_free, reason);
	return kf_config_refuse(reason, -EINVAL, "internal error: %s", key);
}
