// SPDX-License-Identifier: MIT
/*
 * etcd: the client (contract in etcd.h): making and freeing it, and the
 * unary operations -- get, put, delete, compare-and-swap, list, leases.
 * Requests go through etcd_http.c; the watch stream is etcd_watch.c.
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

/* --- the client ----------------------------------------------------------- */

int kf_etcd_new(const struct kf_etcd_config *cfg, struct kf_etcd **ret,
		char err[KF_ERR_MAX])
{
	const struct kf_curl_lib *lib;
	struct kf_etcd *c;
	size_t plen = cfg->prefix ? strlen(cfg->prefix) : 0;
	int r;

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
	r = kf_curl_lib_load(&lib, err);
	if (r < 0) {
		kf_err_prefix(err, "etcd: ");
		return r;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->lib = lib;
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
	c->curl = c->lib->easy_init();
	if (!c->curl)
		goto nomem;
	c->headers =
	    c->lib->slist_append(NULL, "Content-Type: application/json");
	if (c->headers)
		c->headers = c->lib->slist_append(
		    c->headers, "Grpc-Metadata-hasleader: true");
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
		c->lib->easy_cleanup(c->curl);
	c->lib->slist_free_all(c->headers);
	kf_etcdi_drop_token(c);
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
json_t *kf_etcdi_key_req(struct kf_etcd *c, const char *name, bool range)
{
	char *k = kf_etcdi_full_key(c, name);
	json_t *o = json_object();

	if (!k || !o ||
	    json_object_set_new(o, "key", kf_etcdi_j_b64(k, strlen(k))) != 0 ||
	    (range &&
	     json_object_set_new(o, "range_end", kf_etcdi_range_end_of(k)))) {
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
	json_t *o = kf_etcdi_key_req(c, name, false);

	if (o &&
	    (json_object_set_new(o, "value", kf_etcdi_j_b64(value, len)) != 0 ||
	     (lease && json_object_set_new(o, "lease", kf_etcdi_j_i64(lease)))))
		o = (json_decref(o), NULL);
	return o;
}

int kf_etcd_get(struct kf_etcd *c, const char *name, struct kf_etcd_kv *ret_kv,
		char err[KF_ERR_MAX])
{
	json_t *req = kf_etcdi_key_req(c, name, false), *rep = NULL, *kvs;
	struct kf_etcd_kv kv;
	int r;

	r = kf_etcdi_call(c, "/v3/kv/range", req, &rep, err);
	if (r < 0)
		return r;
	kvs = json_object_get(rep, "kvs");
	if (json_array_size(kvs) == 0) {
		kf_err_set(err, "etcd: no key %s/%s", c->prefix, name);
		r = -ENOENT;
	} else {
		r = kf_etcdi_kv_from_json(c, json_array_get(kvs, 0), &kv, err);
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
	r = kf_etcdi_call(c, "/v3/kv/put", req, &rep, err);
	if (r < 0)
		return r;
	if (ret_revision)
		*ret_revision =
		    kf_etcdi_j_int(json_object_get(rep, "header"), "revision");
	json_decref(rep);
	return 0;
}

int kf_etcd_delete(struct kf_etcd *c, const char *name, int64_t *ret_revision,
		   char err[KF_ERR_MAX])
{
	json_t *req = kf_etcdi_key_req(c, name, false), *rep = NULL;
	int r;

	r = kf_etcdi_call(c, "/v3/kv/deleterange", req, &rep, err);
	if (r < 0)
		return r;
	/* "deleted" is left out when it is 0. */
	if (kf_etcdi_j_int(rep, "deleted") == 0) {
		kf_err_set(err, "etcd: no key %s/%s", c->prefix, name);
		r = -ENOENT;
	} else if (ret_revision) {
		*ret_revision =
		    kf_etcdi_j_int(json_object_get(rep, "header"), "revision");
	}
	json_decref(rep);
	return r;
}

/* The txn body of kf_etcd_cas. */
static json_t *cas_req(struct kf_etcd *c, const char *name, int64_t expect,
		       const struct kf_etcd_op *ops, size_t n)
{
	json_t *txn = json_object(), *cmp = kf_etcdi_key_req(c, name, false);
	json_t *success = json_array(), *failure = json_array();
	json_t *range = kf_etcdi_key_req(c, name, false);
	bool ok = txn && cmp && success && failure && range;

	if (ok) {
		/* MOD == 0 also holds for a key that does not exist. */
		ok =
		    !json_object_set_new(cmp, "target", json_string("MOD")) &&
		    !json_object_set_new(cmp, "result", json_string("EQUAL")) &&
		    !json_object_set_new(cmp, "mod_revision",
					 kf_etcdi_j_i64(expect));
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
	r = kf_etcdi_call(c, "/v3/kv/txn", req, &rep, err);
	if (r < 0)
		return r;
	if (json_is_true(json_object_get(rep, "succeeded"))) {
		if (ret_revision)
			*ret_revision = kf_etcdi_j_int(
			    json_object_get(rep, "header"), "revision");
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
		r = kf_etcdi_kv_from_json(c, json_array_get(kvs, 0), &cur, err);
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
	json_t *req = kf_etcdi_key_req(c, sub, true), *rep = NULL, *arr;
	struct kf_etcd_kv *kvs = NULL;
	size_t n = 0;
	int r;

	if (req && max &&
	    json_object_set_new(req, "limit", kf_etcdi_j_i64((int64_t)max)) !=
		0)
		req = (json_decref(req), NULL);
	r = kf_etcdi_call(c, "/v3/kv/range", req, &rep, err);
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
		r = kf_etcdi_kv_from_json(c, json_array_get(arr, n), &kvs[n],
					  err);
		if (r < 0)
			break;
	}
	if (r == 0) {
		*ret_kvs = kvs;
		*ret_n = n;
		if (ret_revision)
			*ret_revision = kf_etcdi_j_int(
			    json_object_get(rep, "header"), "revision");
	} else {
		kf_etcd_kvs_free(kvs, n);
	}
	json_decref(rep);
	return r;
}

int kf_etcd_lease_grant(struct kf_etcd *c, int64_t ttl_s, int64_t *ret_id,
			char err[KF_ERR_MAX])
{
	json_t *req = json_pack("{s:o}", "TTL", kf_etcdi_j_i64(ttl_s)),
	       *rep = NULL;
	const char *e;
	int64_t id;
	int r;

	r = kf_etcdi_call(c, "/v3/lease/grant", req, &rep, err);
	if (r < 0)
		return r;
	id = kf_etcdi_j_int(rep, "ID");
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
	json_t *req = json_pack("{s:o}", "ID", kf_etcdi_j_i64(id)), *rep = NULL,
	       *res;
	int64_t ttl;
	int r;

	r = kf_etcdi_call(c, "/v3/lease/keepalive", req, &rep, err);
	if (r < 0)
		return r;
	/* The gateway wraps a stream's reply in "result". */
	res = json_object_get(rep, "result");
	ttl = kf_etcdi_j_int(res ? res : rep, "TTL");
	if (ttl <= 0) {
		kf_err_set(err, "etcd: lease %" PRId64 " has expired", id);
		r = -ENOENT;
	} else if (ret_ttl) {
		*ret_ttl = ttl;
	}
	json_decref(rep);
	return r;
}
