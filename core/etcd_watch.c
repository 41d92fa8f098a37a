// SPDX-License-Identifier: MIT
/*
 * etcd_watch: kf_etcd_watch, the streaming watch of a prefix (contract in
 * etcd.h): one JSON object per line, resumed on another member after a
 * broken or silent stream.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
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
	CURL *h;
	kf_etcd_watch_fn fn;
	void *arg;
	struct kf_etcdi_buf line; /* bytes of the line being received */
	struct kf_etcdi_buf body; /* a reply that is not 200: etcd's error */
	int64_t next;		  /* the revision to resume from (0: now) */
	int64_t compacted;	  /* compact_revision of a cancel */
	bool created;		  /* this stream got its "created" */
	int stop; /* fn's non-zero, or a -errno; ends the stream */
	char *err;
};

/*
 * The revision after rev, which never overflows: a reply claiming the
 * largest revision (no etcd reaches it; found by fuzz-etcd) stays there.
 */
static int64_t after(int64_t rev)
{
	return rev < INT64_MAX ? rev + 1 : INT64_MAX;
}

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
		} else if (why && strstr(why, "code = Unauthenticated")) {
			/* A refused token ("invalid auth token") comes as a
			 * cancel with the gRPC code in text, in a 200. */
			kf_err_set(w->err, "etcd watch canceled: %s", why);
			w->stop = -EKEYEXPIRED;
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
			w->next = after(rev);
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
			w->next = after(kv.mod_revision);
		kf_etcd_kv_clear(&kv);
	}
out:
	json_decref(j);
}

int kf_etcdi_watch_line(struct kf_etcd *c, const char *line, size_t len,
			int64_t *next, kf_etcd_watch_fn fn, void *arg,
			char *err)
{
	struct watch w = {.c = c, .fn = fn, .arg = arg, .next = *next};

	w.err = err;
	watch_line(&w, line, len);
	*next = w.next;
	return w.stop;
}

static size_t watch_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct watch *w = userdata;
	size_t n = size * nmemb;
	long status = 0;

	w->c->lib->easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200)
		return kf_etcdi_buf_write(ptr, size, nmemb, &w->body);
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

/* libcurl calls it about once a second even on a silent stream: a non-zero
 * return ends the transfer (CURLE_ABORTED_BY_CALLBACK). */
static int watch_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
			  curl_off_t ultotal, curl_off_t ulnow)
{
	struct watch *w = userdata;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return atomic_load(&w->c->interrupted) ? 1 : 0;
}

void kf_etcd_interrupt(struct kf_etcd *c, bool on)
{
	atomic_store(&c->interrupted, on);
}

/* -EINTR with its reason if kf_etcd_interrupt is on, else 0. */
static int interrupted(struct kf_etcd *c, char *err)
{
	if (!atomic_load(&c->interrupted))
		return 0;
	kf_err_set(err, "etcd watch: interrupted");
	return -EINTR;
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

/*
 * One stream from endpoint e, from w->next.  0 when it ended, broke or was
 * silent (resume elsewhere; *why says how), else what ends the watch: fn's
 * non-zero or a -errno (-EKEYEXPIRED: etcd refused the token).
 */
static int watch_stream(struct watch *w, const char *sub, int idle_ms, size_t e,
			char why[KF_ERR_MAX])
{
	struct kf_etcd *c = w->c;
	json_t *req = watch_req(c, sub, w->next);
	char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
	char url[512];
	long status = 0;
	CURLcode rc;

	json_decref(req);
	if (!text) {
		kf_err_set(w->err, "etcd: out of memory");
		return -ENOMEM;
	}
	snprintf(url, sizeof(url), "%s/v3/watch", c->endpoints[e]);
	c->lib->easy_reset(w->h);
	kf_etcdi_set_common(c, w->h, url, &w->body);
	c->lib->easy_setopt(w->h, CURLOPT_WRITEFUNCTION, watch_write);
	c->lib->easy_setopt(w->h, CURLOPT_WRITEDATA, w);
	c->lib->easy_setopt(w->h, CURLOPT_POSTFIELDS, text);
	c->lib->easy_setopt(w->h, CURLOPT_NOPROGRESS, 0L);
	c->lib->easy_setopt(w->h, CURLOPT_XFERINFOFUNCTION, watch_progress);
	c->lib->easy_setopt(w->h, CURLOPT_XFERINFODATA, w);
	if (idle_ms > 0) {
		/* Less than a byte a second for that long: silent. */
		c->lib->easy_setopt(w->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		c->lib->easy_setopt(w->h, CURLOPT_LOW_SPEED_TIME,
				    (long)(idle_ms + 999) / 1000);
	}
	w->stop = 0;
	w->created = false;
	w->line.len = 0;
	w->body.len = 0;
	rc = c->lib->easy_perform(w->h);
	c->lib->easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
	free(text);
	if (w->stop)
		return w->stop;
	if (interrupted(c, w->err))
		return -EINTR;
	if (status != 0 && status != 200 && status != 503)
		return kf_etcdi_http_error(&w->body, status, url, w->err);
	if (rc != CURLE_OK && !kf_etcdi_unreachable(rc)) {
		kf_err_set(w->err, "etcd watch %s: %s", url,
			   kf_etcdi_why(c, &w->body, rc));
		return -EIO;
	}
	snprintf(why, KF_ERR_MAX, "%s",
		 rc != CURLE_OK	 ? kf_etcdi_why(c, &w->body, rc)
		 : status == 503 ? "HTTP 503 (unavailable)"
				 : "stream ended");
	return 0;
}

int kf_etcd_watch(struct kf_etcd *c, const char *sub, int64_t start,
		  int idle_ms, kf_etcd_watch_fn fn, void *arg,
		  int64_t *compact_revision, char err[KF_ERR_MAX])
{
	struct watch w = {.c = c,
			  .fn = fn,
			  .arg = arg,
			  .line = {.max = KF_ETCD_REPLY_MAX},
			  .body = {.max = 4096},
			  .next = start,
			  .err = err};
	char reasons[KF_ERR_MAX] = "", why[KF_ERR_MAX];
	size_t failed = 0;
	bool relogged = false;
	int r = interrupted(c, err);

	if (r < 0)
		return r;
	w.h = c->lib->easy_init();
	if (!w.h) {
		kf_err_set(err, "etcd: out of memory");
		return -ENOMEM;
	}
	for (;;) {
		size_t e;

		if ((r = interrupted(c, err)) < 0)
			break;
		if (c->user && !c->token && (r = kf_etcdi_login(c, err)) < 0)
			break;
		e = c->cur;
		r = watch_stream(&w, sub, idle_ms, e, why);
		if (r == -EKEYEXPIRED && c->user && !relogged) {
			/* The token expired while unused (e.g. during a long
			 * stream): log in again, once per refusal. */
			relogged = true;
			kf_etcdi_drop_token(c);
			continue;
		}
		if (r == -EKEYEXPIRED)
			r = -EACCES;
		if (r != 0)
			break;
		/* Ended, broken or silent: resume on the next member. */
		if (w.created) {
			failed = 0;
			reasons[0] = '\0';
			relogged = false;
		}
		kf_etcdi_add_reason(reasons, c->endpoints[e], why);
		c->cur = (e + 1) % c->n_endpoints;
		if (++failed >= c->n_endpoints) {
			kf_err_set(err, "etcd unreachable: %s", reasons);
			r = -EHOSTUNREACH;
			break;
		}
	}
	c->lib->easy_cleanup(w.h);
	free(w.line.data);
	free(w.body.data);
	if (r == KF_ETCD_COMPACTED && compact_revision)
		*compact_revision = w.compacted;
	return r;
}
