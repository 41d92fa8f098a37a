// SPDX-License-Identifier: MIT
/*
 * etcd_http: requests to etcd's v3 JSON gateway (contract in etcd.h): the
 * bounded reply buffer, proto3 JSON helpers, key names, one POST with
 * failover across endpoints, and login.
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

#include "etcd_private.h"

size_t kf_etcdi_buf_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct kf_etcdi_buf *b = userdata;
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
int64_t kf_etcdi_j_int(json_t *o, const char *field)
{
	json_t *v = json_object_get(o, field);

	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

json_t *kf_etcdi_j_i64(int64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRId64, v);
	return json_string(s);
}

/* base64 of len bytes as a new JSON string, or NULL. */
json_t *kf_etcdi_j_b64(const void *data, size_t len)
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
char *kf_etcdi_full_key(struct kf_etcd *c, const char *name)
{
	char *k;

	if (asprintf(&k, "%s/%s", c->prefix, name) < 0)
		return NULL;
	return k;
}

/* The range end of every key starting with key: its last byte + 1 (a key
 * of only 0xff bytes has none: "\0", every key above). */
json_t *kf_etcdi_range_end_of(const char *key)
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
	j = kf_etcdi_j_b64(e, n);
	free(e);
	return j;
}

/* Fills kv from an etcd KeyValue object. */
int kf_etcdi_kv_from_json(struct kf_etcd *c, json_t *o, struct kf_etcd_kv *kv,
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
	kv->mod_revision = kf_etcdi_j_int(o, "mod_revision");
	kv->create_revision = kf_etcdi_j_int(o, "create_revision");
	kv->version = kf_etcdi_j_int(o, "version");
	kv->lease = kf_etcdi_j_int(o, "lease");
	return 0;
}

/* --- requests ------------------------------------------------------------- */

void kf_etcdi_set_common(struct kf_etcd *c, CURL *h, const char *url,
			 struct kf_etcdi_buf *b)
{
	c->lib->easy_setopt(h, CURLOPT_URL, url);
	c->lib->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	c->lib->easy_setopt(h, CURLOPT_HTTPHEADER,
			    c->auth_headers ? c->auth_headers : c->headers);
	c->lib->easy_setopt(h, CURLOPT_WRITEFUNCTION, kf_etcdi_buf_write);
	c->lib->easy_setopt(h, CURLOPT_WRITEDATA, b);
	c->lib->easy_setopt(h, CURLOPT_ERRORBUFFER, b->why);
	c->lib->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
	c->lib->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	c->lib->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	/* Over TLS, HTTP/2 (ALPN) measured slower than HTTP/1.1 (notes/etcd.md
	 * §3), and http:// is HTTP/1.1 anyway: one protocol for both. */
	c->lib->easy_setopt(h, CURLOPT_HTTP_VERSION,
			    (long)CURL_HTTP_VERSION_1_1);
	/* libcurl's defaults, stated: an https member proves who it is. */
	c->lib->easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	c->lib->easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->cacert)
		c->lib->easy_setopt(h, CURLOPT_CAINFO, c->cacert);
	if (c->cert)
		c->lib->easy_setopt(h, CURLOPT_SSLCERT, c->cert);
	if (c->key)
		c->lib->easy_setopt(h, CURLOPT_SSLKEY, c->key);
}

/* Whether a transfer's failure means "try another member". */
bool kf_etcdi_unreachable(CURLcode rc)
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
	/* A member that cannot prove who it is is no use; another may. */
	case CURLE_PEER_FAILED_VERIFICATION:
		return true;
	default:
		return false;
	}
}

const char *kf_etcdi_why(struct kf_etcd *c, const struct kf_etcdi_buf *b,
			 CURLcode rc)
{
	return b->why[0] ? b->why : c->lib->easy_strerror(rc);
}

/* The gRPC codes of etcd's error replies that keyfs tells apart. */
#define GRPC_PERMISSION_DENIED 7
#define GRPC_UNAUTHENTICATED 16

/* The gateway's plain-text HTTP 400 to a client certificate with a CN when
 * authentication is on (notes/etcd.md, "The CN trap"). */
#define CN_TRAP "CommonName of client sending a request against gateway"

int kf_etcdi_http_error(const struct kf_etcdi_buf *b, long status,
			const char *url, char *err)
{
	json_t *j = b->data ? json_loadb(b->data, b->len, 0, NULL) : NULL;
	const char *msg = json_string_value(json_object_get(j, "error"));
	int code = (int)kf_etcdi_j_int(j, "code");
	int r = code == GRPC_UNAUTHENTICATED	 ? -EKEYEXPIRED
		: code == GRPC_PERMISSION_DENIED ? -EACCES
						 : -EIO;

	if (msg) {
		kf_err_set(err, "etcd %s: HTTP %ld: %s", url, status, msg);
	} else if (status == 400 && b->data && strstr(b->data, CN_TRAP)) {
		kf_err_set(err,
			   "etcd %s: etcd refuses client certificates with a "
			   "common name (CN) when authentication is on; use a "
			   "certificate without a CN",
			   url);
		r = -EACCES;
	} else {
		kf_err_set(err, "etcd %s: HTTP %ld: %.100s", url, status,
			   b->data ? b->data : "");
	}
	json_decref(j);
	return r;
}

/* Appends "endpoint: why" to the list of failures in reasons (KF_ERR_MAX). */
void kf_etcdi_add_reason(char *reasons, const char *endpoint, const char *why)
{
	size_t used = strlen(reasons);

	snprintf(reasons + used, KF_ERR_MAX - used, "%s%s: %s",
		 used ? "; " : "", endpoint, why);
}

/*
 * POSTs text to path on the first endpoint that answers.  0 and the reply
 * object in *ret (caller decrefs), or -errno as kf_etcdi_http_error for
 * an error reply (-EKEYEXPIRED: log in again).
 */
static int post_text(struct kf_etcd *c, const char *path, const char *text,
		     json_t **ret, char *err)
{
	char reasons[KF_ERR_MAX] = "";
	int r = -EHOSTUNREACH;

	for (size_t i = 0; i < c->n_endpoints; i++) {
		size_t e = (c->cur + i) % c->n_endpoints;
		struct kf_etcdi_buf b = {.max = KF_ETCD_REPLY_MAX};
		char url[512];
		long status = 0;
		CURLcode rc;
		json_t *j;

		snprintf(url, sizeof(url), "%s%s", c->endpoints[e], path);
		c->lib->easy_reset(c->curl);
		kf_etcdi_set_common(c, c->curl, url, &b);
		c->lib->easy_setopt(c->curl, CURLOPT_TIMEOUT_MS,
				    (long)c->timeout_ms);
		c->lib->easy_setopt(c->curl, CURLOPT_POSTFIELDS, text);
		rc = c->lib->easy_perform(c->curl);
		c->lib->easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
		if (rc == CURLE_WRITE_ERROR && b.over) {
			kf_err_set(err, "etcd %s: reply over %d bytes", url,
				   KF_ETCD_REPLY_MAX);
			r = -EFBIG;
		} else if (rc != CURLE_OK && !kf_etcdi_unreachable(rc)) {
			kf_err_set(err, "etcd %s: %s", url,
				   kf_etcdi_why(c, &b, rc));
			r = rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
		} else if (rc != CURLE_OK || status == 503) {
			/* Another member may have a leader, or be up. */
			kf_etcdi_add_reason(reasons, c->endpoints[e],
					    rc != CURLE_OK
						? kf_etcdi_why(c, &b, rc)
						: "HTTP 503 (unavailable)");
			free(b.data);
			continue;
		} else if (status != 200) {
			r = kf_etcdi_http_error(&b, status, url, err);
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
void kf_etcdi_drop_token(struct kf_etcd *c)
{
	c->lib->slist_free_all(c->auth_headers);
	c->auth_headers = NULL;
	free(c->token);
	c->token = NULL;
}

/*
 * Logs in as c->user (/v3/auth/authenticate) and keeps the token for the
 * requests that follow.  The body, which holds the password, is built in
 * guarded memory and wiped.  -EACCES for a refused user or password.
 */
int kf_etcdi_login(struct kf_etcd *c, char *err)
{
	size_t cap = 32 + 6 * (strlen(c->user) + strlen(c->password));
	char *body = sodium_malloc(cap), *p, *h = NULL;
	json_t *rep = NULL;
	const char *token;
	struct curl_slist *l = NULL, *n;
	int r;

	kf_etcdi_drop_token(c);
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
	if (r == -EIO || r == -EKEYEXPIRED || r == -EACCES) {
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
		if (!(l = c->lib->slist_append(l, n->data)))
			break;
	if (l && asprintf(&h, "Authorization: %s", token) > 0)
		n = c->lib->slist_append(l, h);
	else
		n = NULL;
	c->token = strdup(token);
	free(h);
	json_decref(rep);
	if (!n || !c->token) {
		c->lib->slist_free_all(n ? n : l);
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
		r = kf_etcdi_login(c, err);
	if (r == 0)
		r = post_text(c, path, text, ret, err);
	if (r == -EKEYEXPIRED && c->user) {
		r = kf_etcdi_login(c, err);
		if (r == 0)
			r = post_text(c, path, text, ret, err);
	}
	if (r == -EKEYEXPIRED)
		r = -EACCES;
	free(text);
	return r;
}

/* post() of req, which it takes (NULL: -ENOMEM, as its builder failed). */
int kf_etcdi_call(struct kf_etcd *c, const char *path, json_t *req,
		  json_t **ret, char *err)
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
