// SPDX-License-Identifier: MIT
/*
 * etcd_watch: kf_etcd_watch, the streaming watch of a prefix (contract in
 * etcd.h): one JSON object per line, resumed on another member after a
 * broken or silent stream.
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

/* --- watch ---------------------------------------------------------------- */

struct watch {
	struct kf_etcd *c;
	kf_etcd_watch_fn fn;
	void *arg;
	struct kf_etcdi_buf line; /* bytes of the line being received */
	int64_t next;		  /* the revision to resume from (0: now) */
	int64_t compacted;	  /* compact_revision of a cancel */
	bool created;		  /* this stream got its "created" */
	int stop; /* fn's non-zero, or a -errno; ends the stream */
	char *err;
};

/* Handles one line of the stream: a JSON object. */
static void watch_line(struct watch *w, const char *s, size_t len)
{
	json_t *j = json_loadb(s, len, 0, NULL);
	json_t *res = json_object_get(j, "result"), *evs;
	int64_t rev =
	    kf_etcdi_j_int(json_object_get(res, "header"), "revision");

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

		w->compacted = kf_etcdi_j_int(res, "compact_revision");
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

		w->stop = kf_etcdi_kv_from_json(w->c, json_object_get(ev, "kv"),
						&kv, w->err);
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

		if (kf_etcdi_buf_write(ptr + i, 1, take, &w->line) != take) {
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
	json_t *cr = kf_etcdi_key_req(c, sub, true);

	if (cr && ((start > 0 && json_object_set_new(cr, "start_revision",
						     kf_etcdi_j_i64(start))) ||
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
		w.stop = kf_etcdi_login(c, err);
	while (!w.stop) {
		size_t e = c->cur;
		json_t *req = watch_req(c, sub, w.next);
		char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
		struct kf_etcdi_buf body = {.max = 4096};
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
		kf_etcdi_set_common(c, h, url, &body);
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
		if (rc != CURLE_OK && !kf_etcdi_unreachable(rc)) {
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
		kf_etcdi_add_reason(reasons, c->endpoints[e],
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
