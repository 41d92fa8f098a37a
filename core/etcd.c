// SPDX-License-Identifier: MIT
/*
 * etcd: the v3 JSON gateway through libcurl (contract in etcd.h).
 *
 * The gateway speaks proto3's JSON mapping: bytes are base64 (standard
 * alphabet), int64 fields are strings, and zero or false fields are left
 * out (a failed txn has no "succeeded", a PUT event no "type").  Every
 * reader here therefore treats a missing field as zero.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "etcd.h"

struct kf_etcd {
	char *endpoints[KF_ETCD_ENDPOINTS_MAX];
	size_t n_endpoints;
	size_t cur; /* endpoint tried first */
	char *prefix;
	int timeout_ms;
	char *cacert, *cert, *key;
	CURL *curl; /* unary requests: one handle, so keep-alive */
	struct curl_slist *headers;
	char *user;			 /* NULL: no authentication */
	char *password;			 /* sodium_malloc */
	char *token;			 /* of the last login, or NULL */
	struct curl_slist *auth_headers; /* headers + the token */
};

/* A reply body, bounded. */
struct buf {
	char *data;
	size_t len, cap, max;
	bool over;
};

static size_t buf_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct buf *b = userdata;
	size_t n = size * nmemb;

	if (n > b->max - b->len) {
		b->over = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (!p)
			return 0;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* --- JSON helpers ------------------------------------------------------- */

/* An int64 field that may be a string, a number, or missing (0). */
static int64_t j_int(json_t *o, const char *field)
{
	json_t *v = json_object_get(o, field);

	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

static json_t *j_i64(int64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRId64, v);
	return json_string(s);
}

/* base64 of len bytes as a new JSON string, or NULL. */
static json_t *j_b64(const void *data, size_t len)
{
	size_t n =
	    sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(n);
	json_t *j;

	if (!s)
		return NULL;
	sodium_bin2base64(s, n, data, len, sodium_base64_VARIANT_ORIGINAL);
	j = json_string(s);
	free(s);
	return j;
}

/* Decodes the base64 string field of o (missing: empty) into malloc'd
 * bytes (NUL-terminated, for names).  0 or -EPROTO / -ENOMEM. */
static int j_unb64(json_t *o, const char *field, uint8_t **ret, size_t *ret_len)
{
	json_t *v = json_object_get(o, field);
	const char *s = v ? json_string_value(v) : "";
	size_t slen, len;
	uint8_t *out;
	const char *end;

	if (!s)
		return -EPROTO;
	slen = strlen(s);
	out = malloc(slen / 4 * 3 + 1);
	if (!out)
		return -ENOMEM;
	if (sodium_base642bin(out, slen / 4 * 3 + 1, s, slen, NULL, &len, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    *end != '\0') {
		free(out);
		return -EPROTO;
	}
	out[len] = '\0';
	*ret = out;
	*ret_len = len;
	return 0;
}

/* --- names ---------------------------------------------------------------- */

/* prefix "/" name, malloc'd. */
static char *full_key(struct kf_etcd *c, const char *name)
{
	char *k;

	if (asprintf(&k, "%s/%s", c->prefix, name) < 0)
		return NULL;
	return k;
}

/* The range end of every key starting with key: its last byte + 1 (a key
 * of only 0xff bytes has none: "\0", every key above). */
static json_t *range_end_of(const char *key)
{
	size_t n = strlen(key);
	uint8_t *e = malloc(n + 1);
	json_t *j;

	if (!e)
		return NULL;
	memcpy(e, key, n);
	while (n > 0 && e[n - 1] == 0xff)
		n--;
	if (n == 0) {
		e[0] = 0;
		n = 1;
	} else {
		e[n - 1]++;
	}
	j = j_b64(e, n);
	free(e);
	return j;
}

/* Fills kv from an etcd KeyValue object. */
static int kv_from_json(struct kf_etcd *c, json_t *o, struct kf_etcd_kv *kv,
			char *err)
{
	size_t plen = strlen(c->prefix) + 1, klen;
	uint8_t *key = NULL;
	int r;

	memset(kv, 0, sizeof(*kv));
	r = j_unb64(o, "key", &key, &klen);
	if (r == 0)
		r = j_unb64(o, "value", &kv->value, &kv->len);
	if (r < 0) {
		free(key);
		kf_err_set(err, "etcd: a key or value is not base64");
		return r;
	}
	if (klen < plen || memcmp(key, c->prefix, plen - 1) != 0 ||
	    key[plen - 1] != '/' || memchr(key, '\0', klen)) {
		free(key);
		kf_etcd_kv_clear(kv);
		kf_err_set(err, "etcd: a key outside the prefix %s", c->prefix);
		return -EPROTO;
	}
	memmove(key, key + plen, klen - plen + 1);
	kv->name = (char *)key;
	kv->mod_revision = j_int(o, "mod_revision");
	kv->create_revision = j_int(o, "create_revision");
	kv->version = j_int(o, "version");
	kv->lease = j_int(o, "lease");
	return 0;
}

/* --- requests ------------------------------------------------------------- */

static void set_common(struct kf_etcd *c, CURL *h, const char *url,
		       struct buf *b)
{
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER,
			 c->auth_headers ? c->auth_headers : c->headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	if (c->cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
	if (c->cert)
		curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert);
	if (c->key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, c->key);
}

/* Whether a transfer's failure means "try another member". */
static bool unreachable(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

/* The gRPC codes of etcd's error replies that keyfs tells apart. */
#define GRPC_PERMISSION_DENIED 7
#define GRPC_UNAUTHENTICATED 16

/* The "error" text of an etcd error body, or the body's start, into err;
 * returns the body's gRPC "code" (0 if none). */
static int http_error(const struct buf *b, long status, const char *url,
		      char *err)
{
	json_t *j = b->data ? json_loadb(b->data, b->len, 0, NULL) : NULL;
	const char *msg = json_string_value(json_object_get(j, "error"));
	int code = (int)j_int(j, "code");

	if (msg)
		kf_err_set(err, "etcd %s: HTTP %ld: %s", url, status, msg);
	else
		kf_err_set(err, "etcd %s: HTTP %ld: %.100s", url, status,
			   b->data ? b->data : "");
	json_decref(j);
	return code;
}

/* Appends "endpoint: why" to the list of failures in reasons (KF_ERR_MAX). */
static void add_reason(char *reasons, const char *endpoint, const char *why)
{
	size_t used = strlen(reasons);

	snprintf(reasons + used, KF_ERR_MAX - used, "%s%s: %s",
		 used ? "; " : "", endpoint, why);
}

/*
 * POSTs text to path on the first endpoint that answers.  0 and the reply
 * object in *ret (caller decrefs), or -errno: -EKEYEXPIRED when etcd
 * refused the token (log in again), -EACCES when it denied permission.
 */
static int post_text(struct kf_etcd *c, const char *path, const char *text,
		     json_t **ret, char *err)
{
	char reasons[KF_ERR_MAX] = "";
	int r = -EHOSTUNREACH;

	for (size_t i = 0; i < c->n_endpoints; i++) {
		size_t e = (c->cur + i) % c->n_endpoints;
		struct buf b = {.max = KF_ETCD_REPLY_MAX};
		char url[512];
		long status = 0;
		CURLcode rc;
		json_t *j;

		snprintf(url, sizeof(url), "%s%s", c->endpoints[e], path);
		curl_easy_reset(c->curl);
		set_common(c, c->curl, url, &b);
		curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS,
				 (long)c->timeout_ms);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, text);
		rc = curl_easy_perform(c->curl);
		curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
		if (rc == CURLE_WRITE_ERROR && b.over) {
			kf_err_set(err, "etcd %s: reply over %d bytes", url,
				   KF_ETCD_REPLY_MAX);
			r = -EFBIG;
		} else if (rc != CURLE_OK && !unreachable(rc)) {
			kf_err_set(err, "etcd %s: %s", url,
				   curl_easy_strerror(rc));
			r = rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
		} else if (rc != CURLE_OK || status == 503) {
			/* Another member may have a leader, or be up. */
			add_reason(reasons, c->endpoints[e],
				   rc != CURLE_OK ? curl_easy_strerror(rc)
						  : "HTTP 503 (unavailable)");
			free(b.data);
			continue;
		} else if (status != 200) {
			int code = http_error(&b, status, url, err);

			r = code == GRPC_UNAUTHENTICATED     ? -EKEYEXPIRED
			    : code == GRPC_PERMISSION_DENIED ? -EACCES
							     : -EIO;
		} else if (!(j = json_loadb(b.data ? b.data : "", b.len, 0,
					    NULL)) ||
			   !json_is_object(j)) {
			json_decref(j);
			kf_err_set(err, "etcd %s: a reply that is not JSON",
				   url);
			r = -EPROTO;
		} else {
			*ret = j;
			r = 0;
		}
		c->cur = e;
		free(b.data);
		return r;
	}
	kf_err_set(err, "etcd unreachable: %s", reasons);
	return r;
}

/* Appends s as a JSON string (quoted, escaped) at out; returns the end. */
static char *json_quote(char *out, const char *s)
{
	*out++ = '"';
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			*out++ = '\\';
			*out++ = (char)ch;
		} else if (ch < 0x20) {
			out += sprintf(out, "\\u%04x", ch);
		} else {
			*out++ = (char)ch;
		}
	}
	*out++ = '"';
	*out = '\0';
	return out;
}

/* Forgets the token (the next request logs in). */
static void drop_token(struct kf_etcd *c)
{
	curl_slist_free_all(c->auth_headers);
	c->auth_headers = NULL;
	free(c->token);
	c->token = NULL;
}

/*
 * Logs in as c->user (/v3/auth/authenticate) and keeps the token for the
 * requests that follow.  The body, which holds the password, is built in
 * guarded memory and wiped.  -EACCES for a refused user or password.
 */
static int login(struct kf_etcd *c, char *err)
{
	size_t cap = 32 + 6 * (strlen(c->user) + strlen(c->password));
	char *body = sodium_malloc(cap), *p, *h = NULL;
	json_t *rep = NULL;
	const char *token;
	struct curl_slist *l = NULL, *n;
	int r;

	drop_token(c);
	if (!body) {
		kf_err_set(err, "etcd: out of memory");
		return -ENOMEM;
	}
	p = stpcpy(body, "{\"name\":");
	p = json_quote(p, c->user);
	p = stpcpy(p, ",\"password\":");
	p = json_quote(p, c->password);
	stpcpy(p, "}");
	r = post_text(c, "/v3/auth/authenticate", body, &rep, err);
	sodium_free(body);
	if (r == -EIO || r == -EKEYEXPIRED) {
		kf_err_prefix(err, "etcd login as %s: ", c->user);
		return -EACCES;
	}
	if (r < 0)
		return r;
	token = json_string_value(json_object_get(rep, "token"));
	if (!token || !*token) {
		kf_err_set(err, "etcd login as %s: no token", c->user);
		json_decref(rep);
		return -EPROTO;
	}
	for (n = c->headers; n; n = n->next)
		if (!(l = curl_slist_append(l, n->data)))
			break;
	if (l && asprintf(&h, "Authorization: %s", token) > 0)
		n = curl_slist_append(l, h);
	else
		n = NULL;
	c->token = strdup(token);
	free(h);
	json_decref(rep);
	if (!n || !c->token) {
		curl_slist_free_all(n ? n : l);
		free(c->token);
		c->token = NULL;
		kf_err_set(err, "etcd: out of memory");
		return -ENOMEM;
	}
	c->auth_headers = n;
	return 0;
}

/* post_text of body's JSON, logged in first if the client has a user, and
 * once more after a new login if etcd refuses the token. */
static int post(struct kf_etcd *c, const char *path, json_t *body, json_t **ret,
		char *err)
{
	char *text = json_dumps(body, JSON_COMPACT);
	int r = 0;

	if (!text) {
		kf_err_set(err, "etcd: out of memory");
		return -ENOMEM;
	}
	if (c->user && !c->token)
		r = login(c, err);
	if (r == 0)
		r = post_text(c, path, text, ret, err);
	if (r == -EKEYEXPIRED && c->user) {
		r = login(c, err);
		if (r == 0)
			r = post_text(c, path, text, ret, err);
	}
	if (r == -EKEYEXPIRED)
		r = -EACCES;
	free(text);
	return r;
}

/* post() of req, which it takes (NULL: -ENOMEM, as its builder failed). */
static int call(struct kf_etcd *c, const char *path, json_t *req, json_t **ret,
		char *err)
{
	int r;

	if (!req) {
		kf_err_set(err, "etcd: out of memory");
		return -ENOMEM;
	}
	r = post(c, path, req, ret, err);
	json_decref(req);
	return r;
}

/* --- the client ----------------------------------------------------------- */

int kf_etcd_new(const struct kf_etcd_config *cfg, struct kf_etcd **ret,
		char err[KF_ERR_MAX])
{
	struct kf_etcd *c;
	size_t plen = cfg->prefix ? strlen(cfg->prefix) : 0;

	if (cfg->n_endpoints == 0 || cfg->n_endpoints > KF_ETCD_ENDPOINTS_MAX) {
		kf_err_set(err, "etcd: between 1 and %d endpoints, not %zu",
			   KF_ETCD_ENDPOINTS_MAX, cfg->n_endpoints);
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_endpoints; i++) {
		const char *e = cfg->endpoints[i];

		if (!e ||
		    (strncmp(e, "http://", 7) && strncmp(e, "https://", 8)) ||
		    strlen(e) > 256) {
			kf_err_set(err,
				   "etcd: endpoint '%.100s' is not an "
				   "http:// or https:// URL",
				   e ? e : "");
			return -EINVAL;
		}
	}
	if (plen == 0 || cfg->prefix[plen - 1] == '/') {
		kf_err_set(err, "etcd: the prefix must be non-empty and not "
				"end in '/'");
		return -EINVAL;
	}
	if (cfg->user && (!*cfg->user || !cfg->password)) {
		kf_err_set(err, "etcd: a user needs a name and a password");
		return -EINVAL;
	}
	if (cfg->timeout_ms <= 0) {
		kf_err_set(err, "etcd: the timeout must be positive");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->n_endpoints = cfg->n_endpoints;
	for (size_t i = 0; i < cfg->n_endpoints; i++) {
		c->endpoints[i] = strdup(cfg->endpoints[i]);
		if (!c->endpoints[i])
			goto nomem;
		/* "http://h:p/" and "http://h:p" name the same thing. */
		size_t n = strlen(c->endpoints[i]);
		while (n > 0 && c->endpoints[i][n - 1] == '/')
			c->endpoints[i][--n] = '\0';
	}
	c->prefix = strdup(cfg->prefix);
	c->timeout_ms = cfg->timeout_ms;
	if (cfg->user &&
	    (!(c->user = strdup(cfg->user)) ||
	     !(c->password = sodium_malloc(strlen(cfg->password) + 1))))
		goto nomem;
	if (c->password)
		memcpy(c->password, cfg->password, strlen(cfg->password) + 1);
	if (!c->prefix || (cfg->cacert && !(c->cacert = strdup(cfg->cacert))) ||
	    (cfg->cert && !(c->cert = strdup(cfg->cert))) ||
	    (cfg->key && !(c->key = strdup(cfg->key))))
		goto nomem;
	c->curl = curl_easy_init();
	if (!c->curl)
		goto nomem;
	c->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (c->headers)
		c->headers = curl_slist_append(c->headers,
					       "Grpc-Metadata-hasleader: true");
	if (!c->headers)
		goto nomem;
	*ret = c;
	return 0;
nomem:
	kf_etcd_free(c);
	kf_err_set(err, "etcd: out of memory");
	return -ENOMEM;
}

struct kf_etcd *kf_etcd_free(struct kf_etcd *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n_endpoints; i++)
		free(c->endpoints[i]);
	free(c->prefix);
	free(c->cacert);
	free(c->cert);
	free(c->key);
	if (c->curl)
		curl_easy_cleanup(c->curl);
	curl_slist_free_all(c->headers);
	drop_token(c);
	free(c->user);
	if (c->password)
		sodium_free(c->password);
	free(c);
	return NULL;
}

void kf_etcd_kv_clear(struct kf_etcd_kv *kv)
{
	if (!kv)
		return;
	free(kv->name);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

void kf_etcd_kvs_free(struct kf_etcd_kv *kvs, size_t n)
{
	if (!kvs)
		return;
	for (size_t i = 0; i < n; i++)
		kf_etcd_kv_clear(&kvs[i]);
	free(kvs);
}

/* A JSON object of key (base64 of prefix/name) and, if sub, its range. */
static json_t *key_req(struct kf_etcd *c, const char *name, bool range)
{
	char *k = full_key(c, name);
	json_t *o = json_object();

	if (!k || !o ||
	    json_object_set_new(o, "key", j_b64(k, strlen(k))) != 0 ||
	    (range && json_object_set_new(o, "range_end", range_end_of(k)))) {
		free(k);
		json_decref(o);
		return NULL;
	}
	free(k);
	return o;
}

static json_t *put_req(struct kf_etcd *c, const char *name,
		       const uint8_t *value, size_t len, int64_t lease)
{
	json_t *o = key_req(c, name, false);

	if (o && (json_object_set_new(o, "value", j_b64(value, len)) != 0 ||
		  (lease && json_object_set_new(o, "lease", j_i64(lease)))))
		o = (json_decref(o), NULL);
	return o;
}

int kf_etcd_get(struct kf_etcd *c, const char *name, struct kf_etcd_kv *ret_kv,
		char err[KF_ERR_MAX])
{
	json_t *req = key_req(c, name, false), *rep = NULL, *kvs;
	struct kf_etcd_kv kv;
	int r;

	r = call(c, "/v3/kv/range", req, &rep, err);
	if (r < 0)
		return r;
	kvs = json_object_get(rep, "kvs");
	if (json_array_size(kvs) == 0) {
		kf_err_set(err, "etcd: no key %s/%s", c->prefix, name);
		r = -ENOENT;
	} else {
		r = kv_from_json(c, json_array_get(kvs, 0), &kv, err);
		if (r == 0)
			*ret_kv = kv;
	}
	json_decref(rep);
	return r;
}

int kf_etcd_put(struct kf_etcd *c, const char *name, const uint8_t *value,
		size_t len, int64_t lease, int64_t *ret_revision,
		char err[KF_ERR_MAX])
{
	json_t *req, *rep = NULL;
	int r;

	if (len > KF_ETCD_VALUE_MAX) {
		kf_err_set(err, "etcd: a value of %zu bytes (at most %d)", len,
			   KF_ETCD_VALUE_MAX);
		return -EFBIG;
	}
	req = put_req(c, name, value, len, lease);
	r = call(c, "/v3/kv/put", req, &rep, err);
	if (r < 0)
		return r;
	if (ret_revision)
		*ret_revision =
		    j_int(json_object_get(rep, "header"), "revision");
	json_decref(rep);
	return 0;
}

/* The txn body of kf_etcd_cas. */
static json_t *cas_req(struct kf_etcd *c, const char *name, int64_t expect,
		       const struct kf_etcd_op *ops, size_t n)
{
	json_t *txn = json_object(), *cmp = key_req(c, name, false);
	json_t *success = json_array(), *failure = json_array();
	json_t *range = key_req(c, name, false);
	bool ok = txn && cmp && success && failure && range;

	if (ok) {
		/* MOD == 0 also holds for a key that does not exist. */
		ok =
		    !json_object_set_new(cmp, "target", json_string("MOD")) &&
		    !json_object_set_new(cmp, "result", json_string("EQUAL")) &&
		    !json_object_set_new(cmp, "mod_revision", j_i64(expect));
	}
	for (size_t i = 0; ok && i < n; i++) {
		json_t *p = put_req(c, ops[i].name, ops[i].value, ops[i].len,
				    ops[i].lease);

		ok = p && !json_array_append_new(
			      success, json_pack("{s:o}", "request_put", p));
	}
	ok = ok && !json_array_append_new(
		       failure, json_pack("{s:O}", "request_range", range));
	ok = ok &&
	     !json_object_set_new(txn, "compare", json_pack("[O]", cmp)) &&
	     !json_object_set(txn, "success", success) &&
	     !json_object_set(txn, "failure", failure);
	json_decref(cmp);
	json_decref(range);
	json_decref(success);
	json_decref(failure);
	if (!ok)
		txn = (json_decref(txn), NULL);
	return txn;
}

int kf_etcd_cas(struct kf_etcd *c, const char *name, int64_t expect,
		const struct kf_etcd_op *ops, size_t n, int64_t *ret_revision,
		struct kf_etcd_kv *ret_current, char err[KF_ERR_MAX])
{
	json_t *req, *rep = NULL, *kvs;
	struct kf_etcd_kv cur = {0};
	size_t total = 0;
	int r;

	if (n == 0 || n > KF_ETCD_TXN_MAX || expect < 0) {
		kf_err_set(err, "etcd: a compare-and-swap of %zu puts", n);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		total += ops[i].len;
	if (total > KF_ETCD_VALUE_MAX) {
		kf_err_set(err,
			   "etcd: values of %zu bytes in one txn (at "
			   "most %d)",
			   total, KF_ETCD_VALUE_MAX);
		return -EFBIG;
	}
	req = cas_req(c, name, expect, ops, n);
	r = call(c, "/v3/kv/txn", req, &rep, err);
	if (r < 0)
		return r;
	if (json_is_true(json_object_get(rep, "succeeded"))) {
		if (ret_revision)
			*ret_revision =
			    j_int(json_object_get(rep, "header"), "revision");
		json_decref(rep);
		return 0;
	}
	/* responses[0].response_range.kvs: absent when the key is. */
	kvs = json_object_get(
	    json_object_get(
		json_array_get(json_object_get(rep, "responses"), 0),
		"response_range"),
	    "kvs");
	if (json_array_size(kvs) > 0) {
		r = kv_from_json(c, json_array_get(kvs, 0), &cur, err);
	} else {
		cur.name = strdup(name);
		r = cur.name ? 0 : -ENOMEM;
		if (r < 0)
			kf_err_set(err, "etcd: out of memory");
	}
	json_decref(rep);
	if (r < 0)
		return r;
	kf_err_set(err, "etcd: %s/%s changed (now at revision %" PRId64 ")",
		   c->prefix, name, cur.mod_revision);
	if (ret_current)
		*ret_current = cur;
	else
		kf_etcd_kv_clear(&cur);
	return KF_ETCD_CONFLICT;
}

int kf_etcd_list(struct kf_etcd *c, const char *sub, size_t max,
		 struct kf_etcd_kv **ret_kvs, size_t *ret_n,
		 int64_t *ret_revision, char err[KF_ERR_MAX])
{
	json_t *req = key_req(c, sub, true), *rep = NULL, *arr;
	struct kf_etcd_kv *kvs = NULL;
	size_t n = 0;
	int r;

	if (req && max &&
	    json_object_set_new(req, "limit", j_i64((int64_t)max)) != 0)
		req = (json_decref(req), NULL);
	r = call(c, "/v3/kv/range", req, &rep, err);
	if (r < 0)
		return r;
	arr = json_object_get(rep, "kvs");
	if (json_array_size(arr) > 0) {
		kvs = calloc(json_array_size(arr), sizeof(*kvs));
		if (!kvs) {
			kf_err_set(err, "etcd: out of memory");
			r = -ENOMEM;
		}
	}
	for (; r == 0 && n < json_array_size(arr); n++) {
		r = kv_from_json(c, json_array_get(arr, n), &kvs[n], err);
		if (r < 0)
			break;
	}
	if (r == 0) {
		*ret_kvs = kvs;
		*ret_n = n;
		if (ret_revision)
			*ret_revision =
			    j_int(json_object_get(rep, "header"), "revision");
	} else {
		kf_etcd_kvs_free(kvs, n);
	}
	json_decref(rep);
	return r;
}

int kf_etcd_lease_grant(struct kf_etcd *c, int64_t ttl_s, int64_t *ret_id,
			char err[KF_ERR_MAX])
{
	json_t *req = json_pack("{s:o}", "TTL", j_i64(ttl_s)), *rep = NULL;
	const char *e;
	int64_t id;
	int r;

	r = call(c, "/v3/lease/grant", req, &rep, err);
	if (r < 0)
		return r;
	id = j_int(rep, "ID");
	e = json_string_value(json_object_get(rep, "error"));
	if (id == 0 || (e && *e)) {
		kf_err_set(err, "etcd: lease not granted: %s", e ? e : "no ID");
		r = -EIO;
	} else {
		*ret_id = id;
	}
	json_decref(rep);
	return r;
}

int kf_etcd_lease_keepalive(struct kf_etcd *c, int64_t id, int64_t *ret_ttl,
			    char err[KF_ERR_MAX])
{
	json_t *req = json_pack("{s:o}", "ID", j_i64(id)), *rep = NULL, *res;
	int64_t ttl;
	int r;

	r = call(c, "/v3/lease/keepalive", req, &rep, err);
	if (r < 0)
		return r;
	/* The gateway wraps a stream's reply in "result". */
	res = json_object_get(rep, "result");
	ttl = j_int(res ? res : rep, "TTL");
	if (ttl <= 0) {
		kf_err_set(err, "etcd: lease %" PRId64 " has expired", id);
		r = -ENOENT;
	} else if (ret_ttl) {
		*ret_ttl = ttl;
	}
	json_decref(rep);
	return r;
}

/* --- watch ---------------------------------------------------------------- */

struct watch {
	struct kf_etcd *c;
	kf_etcd_watch_fn fn;
	void *arg;
	struct buf line;   /* bytes of the line being received */
	int64_t next;	   /* the revision to resume from (0: now) */
	int64_t compacted; /* compact_revision of a cancel */
	bool created;	   /* this stream got its "created" */
	int stop;	   /* fn's non-zero, or a -errno; ends the stream */
	char *err;
};

/* Handles one line of the stream: a JSON object. */
static void watch_line(struct watch *w, const char *s, size_t len)
{
	json_t *j = json_loadb(s, len, 0, NULL);
	json_t *res = json_object_get(j, "result"), *evs;
	int64_t rev = j_int(json_object_get(res, "header"), "revision");

	if (!res) {
		json_t *e = json_object_get(j, "error");
		/* A stream's error ({message}) or a request's (a string). */
		const char *m =
		    json_is_string(e)
			? json_string_value(e)
			: json_string_value(json_object_get(e, "message"));

		kf_err_set(w->err, "etcd watch: %s",
			   m ? m
			     : (j ? "an error" : "a line that is not JSON"));
		w->stop = j ? -EIO : -EPROTO;
		goto out;
	}
	if (json_is_true(json_object_get(res, "canceled"))) {
		const char *why =
		    json_string_value(json_object_get(res, "cancel_reason"));

		w->compacted = j_int(res, "compact_revision");
		if (w->compacted > 0) {
			kf_err_set(w->err,
				   "etcd watch: revision %" PRId64
				   " compacted (oldest now %" PRId64 ")",
				   w->next, w->compacted);
			w->stop = KF_ETCD_COMPACTED;
		} else {
			kf_err_set(w->err, "etcd watch canceled: %s",
				   why ? why : "no reason given");
			w->stop = -ECANCELED;
		}
		goto out;
	}
	if (json_is_true(json_object_get(res, "created"))) {
		w->created = true;
		if (w->next == 0)
			w->next = rev + 1;
	}
	evs = json_object_get(res, "events");
	if (json_array_size(evs) == 0) {
		w->stop = w->fn(w->arg, NULL, rev);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(evs) && !w->stop; i++) {
		json_t *ev = json_array_get(evs, i);
		struct kf_etcd_kv kv;
		struct kf_etcd_event e;
		const char *type =
		    json_string_value(json_object_get(ev, "type"));

		w->stop =
		    kv_from_json(w->c, json_object_get(ev, "kv"), &kv, w->err);
		if (w->stop)
			break;
		e.type = type && !strcmp(type, "DELETE") ? KF_ETCD_EVENT_DELETE
							 : KF_ETCD_EVENT_PUT;
		e.name = kv.name;
		e.value = kv.value;
		e.len = kv.len;
		e.mod_revision = kv.mod_revision;
		w->stop = w->fn(w->arg, &e, kv.mod_revision);
		if (kv.mod_revision >= w->next)
			w->next = kv.mod_revision + 1;
		kf_etcd_kv_clear(&kv);
	}
out:
	json_decref(j);
}

static size_t watch_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct watch *w = userdata;
	size_t n = size * nmemb;

	for (size_t i = 0; i < n && !w->stop; i++) {
		char *nl = memchr(ptr + i, '\n', n - i);
		size_t take = nl ? (size_t)(nl - (ptr + i)) : n - i;

		if (buf_write(ptr + i, 1, take, &w->line) != take) {
			kf_err_set(w->err, "etcd watch: a line over %d bytes",
				   KF_ETCD_REPLY_MAX);
			w->stop = -EFBIG;
			break;
		}
		i += take;
		if (!nl)
			break;
		if (w->line.len > 0)
			watch_line(w, w->line.data, w->line.len);
		w->line.len = 0;
	}
	return w->stop ? 0 : n;
}

/* The create_request of a watch from w->next. */
static json_t *watch_req(struct kf_etcd *c, const char *sub, int64_t start)
{
	json_t *cr = key_req(c, sub, true);

	if (cr && ((start > 0 &&
		    json_object_set_new(cr, "start_revision", j_i64(start))) ||
		   json_object_set_new(cr, "progress_notify", json_true())))
		cr = (json_decref(cr), NULL);
	return cr ? json_pack("{s:o}", "create_request", cr) : NULL;
}

int kf_etcd_watch(struct kf_etcd *c, const char *sub, int64_t start,
		  int idle_ms, kf_etcd_watch_fn fn, void *arg,
		  int64_t *compact_revision, char err[KF_ERR_MAX])
{
	struct watch w = {.c = c,
			  .fn = fn,
			  .arg = arg,
			  .line = {.max = KF_ETCD_REPLY_MAX},
			  .next = start,
			  .err = err};
	char reasons[KF_ERR_MAX] = "";
	size_t failed = 0;
	CURL *h = curl_easy_init();

	if (!h) {
		kf_err_set(err, "etcd: out of memory");
		return -ENOMEM;
	}
	if (c->user && !c->token)
		w.stop = login(c, err);
	while (!w.stop) {
		size_t e = c->cur;
		json_t *req = watch_req(c, sub, w.next);
		char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
		struct buf body = {.max = 4096};
		char url[512];
		long status = 0;
		CURLcode rc;

		json_decref(req);
		if (!text) {
			kf_err_set(err, "etcd: out of memory");
			w.stop = -ENOMEM;
			break;
		}
		snprintf(url, sizeof(url), "%s/v3/watch", c->endpoints[e]);
		curl_easy_reset(h);
		set_common(c, h, url, &body);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &w);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
		if (idle_ms > 0) {
			/* Less than a byte a second for that long: silent. */
			curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
			curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
					 (long)(idle_ms + 999) / 1000);
		}
		w.created = false;
		w.line.len = 0;
		rc = curl_easy_perform(h);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		free(text);
		free(body.data);
		if (w.stop)
			break;
		if (status != 0 && status != 200 && status != 503) {
			kf_err_set(err, "etcd watch %s: HTTP %ld", url, status);
			w.stop = -EIO;
			break;
		}
		if (rc != CURLE_OK && !unreachable(rc)) {
			kf_err_set(err, "etcd watch %s: %s", url,
				   curl_easy_strerror(rc));
			w.stop = -EIO;
			break;
		}
		/* Ended, broken or silent: resume on the next member. */
		if (w.created) {
			failed = 0;
			reasons[0] = '\0';
		}
		add_reason(reasons, c->endpoints[e],
			   rc != CURLE_OK ? curl_easy_strerror(rc)
					  : "stream ended");
		c->cur = (e + 1) % c->n_endpoints;
		if (++failed >= c->n_endpoints) {
			kf_err_set(err, "etcd unreachable: %s", reasons);
			w.stop = -EHOSTUNREACH;
		}
	}
	curl_easy_cleanup(h);
	free(w.line.data);
	if (w.stop == KF_ETCD_COMPACTED && compact_revision)
		*compact_revision = w.compacted;
	return w.stop;
}
