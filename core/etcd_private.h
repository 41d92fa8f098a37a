/* SPDX-License-Identifier: MIT */
/*
 * etcd_private: what the files of the etcd client share; nothing outside
 * them includes it.  The client (etcd.h) is one object in three files:
 *
 *   etcd_http.c   the reply buffer, proto3 JSON helpers, key names, one
 *                 POST with failover across endpoints, login
 *   etcd.c        new/free and the unary operations (get, put, delete,
 *                 cas, list, leases)
 *   etcd_watch.c  the streaming watch
 *
 * The functions below are kf_etcdi_* ("internal"): external only so those
 * files can share them.
 */
#ifndef KF_ETCD_PRIVATE_H
#define KF_ETCD_PRIVATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include "curl_lib.h"
#include "etcd.h"

struct kf_etcd {
	const struct kf_curl_lib *lib; /* libcurl's functions */
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
	atomic_bool interrupted;	 /* kf_etcd_interrupt: any thread */
};

/* A reply body, bounded; and why its transfer failed. */
struct kf_etcdi_buf {
	char *data;
	size_t len, cap, max;
	bool over;
	char why[CURL_ERROR_SIZE]; /* libcurl's CURLOPT_ERRORBUFFER */
};

/* libcurl write callback: appends to a struct kf_etcdi_buf (userdata), refusing
 * past its max (sets over). */
size_t kf_etcdi_buf_write(char *ptr, size_t size, size_t nmemb, void *userdata);

/* An int64 field that may be a string, a number, or missing (0). */
int64_t kf_etcdi_j_int(json_t *o, const char *field);

/* An int64 as proto3 JSON wants it: a new JSON string. */
json_t *kf_etcdi_j_i64(int64_t v);

/* base64 of len bytes as a new JSON string, or NULL. */
json_t *kf_etcdi_j_b64(const void *data, size_t len);

/* prefix "/" name, malloc'd. */
char *kf_etcdi_full_key(struct kf_etcd *c, const char *name);

/* The range end of every key starting with key (its last byte + 1), as base64
 * JSON. */
json_t *kf_etcdi_range_end_of(const char *key);

/* Fills kv from an etcd KeyValue object (name relative to the prefix). */
int kf_etcdi_kv_from_json(struct kf_etcd *c, json_t *o, struct kf_etcd_kv *kv,
			  char *err);

/* Options every request on handle h shares: url, connect timeout, TLS
 * (the server always verified), headers, b for the body and libcurl's
 * reason. */
void kf_etcdi_set_common(struct kf_etcd *c, CURL *h, const char *url,
			 struct kf_etcdi_buf *b);

/* Whether a transfer's failure means "try another member". */
bool kf_etcdi_unreachable(CURLcode rc);

/* Why the transfer into b failed: libcurl's detailed reason, or rc's. */
const char *kf_etcdi_why(struct kf_etcd *c, const struct kf_etcdi_buf *b,
			 CURLcode rc);

/*
 * Fills err from a reply of HTTP status (not 200) with body b, and returns
 * -EKEYEXPIRED when etcd refused the token (log in again), -EACCES when it
 * denied permission or refused a client certificate with a CN (the CN
 * trap), else -EIO.
 */
int kf_etcdi_http_error(const struct kf_etcdi_buf *b, long status,
			const char *url, char *err);

/* Appends "endpoint: why" to the list of failures in reasons (KF_ERR_MAX). */
void kf_etcdi_add_reason(char *reasons, const char *endpoint, const char *why);

/* Forgets the token (the next request logs in). */
void kf_etcdi_drop_token(struct kf_etcd *c);

/* Logs in as c->user and keeps the token; -EACCES when refused. */
int kf_etcdi_login(struct kf_etcd *c, char *err);

/* POSTs req (taken; NULL: -ENOMEM) to path with failover and login; *ret the
 * reply object. */
int kf_etcdi_call(struct kf_etcd *c, const char *path, json_t *req,
		  json_t **ret, char *err);

/* A JSON object of key (base64 of prefix/name) and, with range, its range_end.
 */
json_t *kf_etcdi_key_req(struct kf_etcd *c, const char *name, bool range);

/*
 * One line of a watch stream (a JSON object, without its "\n") handled as
 * a stream's reader does: fn called for each event, *next (the revision
 * to resume from) moved on.  0, fn's non-zero, or the -errno that ends the
 * watch with its reason in err.  For the fuzzers (fuzz/); the stream's
 * reader calls the same code.
 */
int kf_etcdi_watch_line(struct kf_etcd *c, const char *line, size_t len,
			int64_t *next, kf_etcd_watch_fn fn, void *arg,
			char *err) KF_WUR;

#endif
