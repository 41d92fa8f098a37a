// SPDX-License-Identifier: MIT
/*
 * config_etcd: the [etcd] section (config_private.h): its values one at a
 * time, and with store = etcd its defaults and the rules between its keys.
 * As in config_value.c, no file names or line numbers here: the inih adapter
 * (config_parse.c) puts "file:line: " in front of the reason.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config_private.h"
#include "etcd.h"

#define HTTP "http://"
#define HTTPS "https://"
#define ENDPOINT_MAX 255 /* characters of one URL */
#define PORT_MAX 65535
#define PREFIX_MIN 2
#define PREFIX_MAX 128
#define TIMEOUT_DEFAULT_MS 2000
#define TIMEOUT_MIN_MS 100
#define TIMEOUT_MAX_MS 60000
#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define NODE_RULE "[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
#define URL_FORM "http://HOST[:PORT] or https://HOST[:PORT]"

static const struct kf_config_unit timeout_units[] = {
    {"ms", 1},
    {"s", 1000},
};

/* Why the host[:port] in s is none, or NULL. */
static const char *authority_flaw(const char *s)
{
	size_t n;
	uint64_t port;

	if (*s == '[') {
		n = 1 + strspn(s + 1, "0123456789abcdefABCDEF:.");
		if (n == 1 || s[n] != ']')
			return "bad IPv6 address (expected [ADDRESS])";
		n++;
	} else {
		n = strspn(s, ALNUM "._-");
		if (n == 0 && (!*s || *s == ':'))
			return "no host";
	}
	if (!s[n])
		return NULL;
	if (s[n] != ':')
		return "a character that is not part of a host name";
	if (kf_parse_u64(s + n + 1, PORT_MAX, &port) < 0 || port == 0)
		return "bad port (expected 1 to 65535)";
	return NULL;
}

/* Why url is no endpoint, or NULL. */
static const char *endpoint_flaw(const char *url)
{
	char authority[ENDPOINT_MAX + 1];
	const char *rest, *slash;
	size_t len = strlen(url);

	if (len > ENDPOINT_MAX)
		return "longer than 255 characters";
	if (url[strcspn(url, " \t\r\n\v\f")])
		return "white space inside";
	if (strncmp(url, HTTPS, strlen(HTTPS)) == 0)
		rest = url + strlen(HTTPS);
	else if (strncmp(url, HTTP, strlen(HTTP)) == 0)
		rest = url + strlen(HTTP);
	else
		return "not http:// or https://";
	slash = strchr(rest, '/');
	if (slash && slash[1])
		return "a path after the host (only a trailing '/' may follow)";
	len = slash ? (size_t)(slash - rest) : strlen(rest);
	memcpy(authority, rest, len);
	authority[len] = 0;
	return authority_flaw(authority);
}

static char **strings_free(char **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return NULL;
}

int kf_config_parse_endpoints(const char *value, char ***ret_list,
			      size_t *ret_n, char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE], *copy, *item, *next, **list;
	size_t n = 0;
	int r = 0;

	if (!*value)
		return kf_config_refuse(reason, -EINVAL,
					"endpoints must not be empty: expected "
					"1 to %d URLs (%s) separated by commas",
					KF_ETCD_ENDPOINTS_MAX, URL_FORM);
	copy = strdup(value);
	list = calloc(KF_ETCD_ENDPOINTS_MAX, sizeof(*list));
	if (!copy || !list) {
		r = kf_config_refuse(reason, -ENOMEM, "out of memory");
		goto out;
	}
	for (item = copy; item && r == 0; item = next) {
		const char *why;
		size_t len;

		next = strchr(item, ',');
		if (next)
			*next++ = 0;
		item += strspn(item, " \t");
		len = strlen(item);
		while (len > 0 &&
		       (item[len - 1] == ' ' || item[len - 1] == '\t'))
			item[--len] = 0;
		if (len == 0) {
			r = kf_config_refuse(reason, -EINVAL,
					     "empty endpoint in endpoints (one "
					     "comma too many?)");
			break;
		}
		why = endpoint_flaw(item);
		if (why) {
			r = kf_config_refuse(
			    reason, -EINVAL,
			    "bad endpoint \"%s\" in endpoints: "
			    "%s; expected %s",
			    kf_config_quote(q, item), why, URL_FORM);
			break;
		}
		if (item[len - 1] == '/')
			item[--len] = 0;
		for (size_t i = 0; i < n && r == 0; i++)
			if (strcasecmp(list[i], item) == 0)
				r = kf_config_refuse(
				    reason, -EINVAL,
				    "duplicate endpoint \"%s\" "
				    "in endpoints",
				    kf_config_quote(q, item));
		if (r == 0 && n == KF_ETCD_ENDPOINTS_MAX)
			r = kf_config_refuse(reason, -EINVAL,
					     "too many endpoints (at most %d)",
					     KF_ETCD_ENDPOINTS_MAX);
		if (r == 0 && !(list[n++] = strdup(item)))
			r = kf_config_refuse(reason, -ENOMEM, "out of memory");
	}
	if (r == 0) {
		*ret_list = list;
		*ret_n = n;
		list = NULL;
		n = 0;
	}
out:
	strings_free(list, n);
	free(copy);
	return r;
}

int kf_config_parse_prefix(const char *value, char **ret,
			   char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE], *s;
	size_t n = strlen(value);

	if (n < PREFIX_MIN || n > PREFIX_MAX || value[0] != '/' ||
	    value[n - 1] == '/' || strstr(value, "//") ||
	    strspn(value, ALNUM "._/-") != n)
		return kf_config_refuse(
		    reason, -EINVAL,
		    "bad prefix \"%s\": expected %d to %d characters of "
		    "A-Z a-z 0-9 . _ - /, starting with '/', not ending with "
		    "'/', without \"//\" (e.g. %s)",
		    kf_config_quote(q, value), PREFIX_MIN, PREFIX_MAX,
		    KF_ETCD_PREFIX_DEFAULT);
	s = strdup(value);
	if (!s)
		return kf_config_refuse(reason, -ENOMEM, "out of memory");
	free(*ret);
	*ret = s;
	return 0;
}

static bool node_valid(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= KF_NODE_NAME_MAX && strchr(ALNUM, s[0]) &&
	       strspn(s, ALNUM "._-") == n;
}

int kf_config_parse_node(const char *value, char ret[KF_NODE_NAME_MAX + 1],
			 char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];

	if (!node_valid(value))
		return kf_config_refuse(reason, -EINVAL,
					"bad node \"%s\": expected " NODE_RULE,
					kf_config_quote(q, value));
	strcpy(ret, value);
	return 0;
}

int kf_config_parse_timeout(const char *value, int *ret,
			    char reason[KF_ERR_MAX])
{
	char q[KF_CONFIG_QUOTE_SIZE];
	uint64_t ms = 0;
	int r = kf_config_parse_amount(value, timeout_units,
				       sizeof(timeout_units) /
					   sizeof(*timeout_units),
				       TIMEOUT_MAX_MS, &ms);

	if (r == -EINVAL)
		return kf_config_refuse(reason, -EINVAL,
					"bad timeout \"%s\": expected a whole "
					"number and one of the units ms or s, "
					"e.g. 2s or 500ms",
					kf_config_quote(q, value));
	if (r < 0 || ms < TIMEOUT_MIN_MS)
		return kf_config_refuse(reason, -EINVAL,
					"timeout \"%s\" is out of range: from "
					"%dms to %ds",
					kf_config_quote(q, value),
					TIMEOUT_MIN_MS, TIMEOUT_MAX_MS / 1000);
	*ret = (int)ms;
	return 0;
}

/* The host name as the default node, or why it cannot be one. */
static int default_node(char node[KF_NODE_NAME_MAX + 1],
			char reason[KF_ERR_MAX])
{
	char host[HOST_NAME_MAX + 1] = "", q[KF_CONFIG_QUOTE_SIZE];

	if (gethostname(host, sizeof(host)) < 0)
		return kf_config_refuse(reason, -EINVAL,
					"store = etcd: no host name for the "
					"default node (%s); set node in [etcd]",
					strerror(errno));
	host[sizeof(host) - 1] = 0;
	if (!node_valid(host))
		return kf_config_refuse(reason, -EINVAL,
					"store = etcd: the host name \"%s\" is "
					"not a valid node name (" NODE_RULE
					"); set node in [etcd]",
					kf_config_quote(q, host));
	strcpy(node, host);
	return 0;
}

int kf_config_etcd_finish(struct kf_etcd_settings *e, const char **ret_key,
			  char reason[KF_ERR_MAX])
{
	/* Keys that go together: set both or neither. */
	const struct {
		const char *key, *other;
		bool set, other_set;
	} pairs[] = {
	    {"cert", "key", e->cert, e->key},
	    {"key", "cert", e->key, e->cert},
	    {"user", "password_file", e->user, e->password_file},
	    {"password_file", "user", e->password_file, e->user},
	};
	const struct {
		const char *key;
		bool set;
	} tls[] = {{"cacert", e->cacert}, {"cert", e->cert}, {"key", e->key}};
	bool https = false;
	int r;

	*ret_key = "store";
	if (e->n_endpoints == 0)
		return kf_config_refuse(reason, -EINVAL,
					"store = etcd needs endpoints in "
					"[etcd]");
	if (!e->node[0] && (r = default_node(e->node, reason)) < 0)
		return r;
	if (!e->prefix && !(e->prefix = strdup(KF_ETCD_PREFIX_DEFAULT)))
		return kf_config_refuse(reason, -ENOMEM, "out of memory");
	if (!e->timeout_ms)
		e->timeout_ms = TIMEOUT_DEFAULT_MS;
	for (size_t i = 0; i < sizeof(pairs) / sizeof(*pairs); i++) {
		if (pairs[i].set && !pairs[i].other_set) {
			*ret_key = pairs[i].key;
			return kf_config_refuse(
			    reason, -EINVAL,
			    "%s is set without %s; %s and %s go together in "
			    "[etcd]",
			    pairs[i].key, pairs[i].other, pairs[i].key,
			    pairs[i].other);
		}
	}
	for (size_t i = 0; i < e->n_endpoints; i++)
		https |= strncmp(e->endpoints[i], HTTPS, strlen(HTTPS)) == 0;
	for (size_t i = 0; i < sizeof(tls) / sizeof(*tls) && !https; i++) {
		if (tls[i].set) {
			*ret_key = tls[i].key;
			return kf_config_refuse(
			    reason, -EINVAL,
			    "%s is set but every endpoint is http://; "
			    "cacert/cert/key need https:// endpoints",
			    tls[i].key);
		}
	}
	return 0;
}

void kf_config_etcd_done(struct kf_etcd_settings *e)
{
	strings_free(e->endpoints, e->n_endpoints);
	free(e->prefix);
	free(e->cacert);
	free(e->cert);
	free(e->key);
	free(e->user);
	free(e->password_file);
	memset(e, 0, sizeof(*e));
}
