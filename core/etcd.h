/* SPDX-License-Identifier: MIT */
/*
 * etcd: a client of etcd's v3 JSON gateway (`/v3/kv/...`, `/v3/lease/...`,
 * `/v3/watch`) through libcurl and jansson, for the cluster store.  libcurl
 * is not linked: the first kf_etcd_new loads it (curl_lib.h), so a process
 * that makes no client never maps it.
 * It knows HTTP and etcd's JSON, nothing about keyrings: what it stores is
 * opaque bytes (ciphertext only, never a key).
 *
 * A client has a list of endpoints, a timeout and a prefix.  Every name a
 * caller passes is relative to the prefix ("keyring" under "/keyfs/c1" is the
 * etcd key "/keyfs/c1/keyring"); names returned are relative too.  Every
 * request carries `Grpc-Metadata-hasleader: true`, so a member without a
 * leader answers at once instead of after etcd's 7 s.
 *
 * Failover: when an endpoint cannot be reached, times out, fails TLS
 * (handshake or verification), or answers 503 (unavailable, e.g. no
 * leader), the request goes to the next endpoint, each at most once per
 * call; the endpoint that answered is tried first next time.  A call thus
 * fails within (number of endpoints) x timeout.  A write that timed out may
 * still have committed: compare-and-swap callers see that as a conflict
 * with their own value, never as a double commit.
 *
 * Errors: -errno and a one-line reason in err (KF_ERR_MAX, may be NULL).
 * -EHOSTUNREACH: no endpoint answered (the reason names each one's error,
 * libcurl's detailed text, e.g. a TLS alert);
 * -EIO: etcd answered with an error (its HTTP status and message); -EACCES:
 * a refused login or a permission denied (see Authentication); -EPROTO:
 * a reply that is not etcd's JSON; -EFBIG: a value or a reply over the
 * limits below; -ENOMEM.
 *
 * A client is used by one thread at a time, but for kf_etcd_interrupt; a
 * watcher thread makes its own.
 *
 * Authentication: with a user, the client logs in (`/v3/auth/authenticate`)
 * before its first request, sends the token in an `Authorization` header,
 * and logs in again once when etcd refuses the token (code 16: simple tokens
 * expire after --auth-token-ttl of disuse).  A refused login or a denied
 * permission: -EACCES.
 *
 * TLS: https endpoints always verify the member's certificate (against
 * cacert, else the system's CAs) and its host name; cert and key are the
 * client certificate for members started with --client-cert-auth.  With
 * authentication on, that certificate must have no CN: etcd's gateway
 * refuses every request from a certificate with one (HTTP 400, notes/etcd.md
 * "The CN trap"), which gives -EACCES and a reason that says so.  A
 * certificate without a CN (e.g. subject O=..., SAN URI) plus a user and
 * password works.
 */
#ifndef KF_ETCD_H
#define KF_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Largest value put (etcd refuses requests over 1.5 MiB of decoded bytes). */
#define KF_ETCD_VALUE_MAX (1024 * 1024)
/* Largest reply body (or watch line) read from etcd: values are base64. */
#define KF_ETCD_REPLY_MAX (8 * 1024 * 1024)
/* Most endpoints in a client. */
#define KF_ETCD_ENDPOINTS_MAX 16
/* Most puts in one compare-and-swap. */
#define KF_ETCD_TXN_MAX 8

/* kf_etcd_cas: the comparison failed, nothing was written. */
#define KF_ETCD_CONFLICT 1
/* kf_etcd_watch: the start revision was compacted away (read afresh). */
#define KF_ETCD_COMPACTED (-ERANGE)

struct kf_etcd;

struct kf_etcd_config {
	const char *const *endpoints; /* "http://host:port" (or https) */
	size_t n_endpoints;
	const char *prefix; /* e.g. "/keyfs/default", no trailing '/' */
	int timeout_ms;	    /* per request and endpoint; > 0 */
	const char *cacert; /* https: PEM files, each may be NULL */
	const char *cert;
	const char *key;
	const char *user;     /* etcd authentication: NULL for none */
	const char *password; /* with user (copied into guarded memory) */
};

/* One key and its value as etcd holds it. */
struct kf_etcd_kv {
	char *name;	/* relative to the prefix; malloc'd */
	uint8_t *value; /* malloc'd (NULL when len is 0) */
	size_t len;
	int64_t mod_revision;
	int64_t create_revision;
	int64_t version;
	int64_t lease;
};

/* One put of a compare-and-swap (lease 0: none). */
struct kf_etcd_op {
	const char *name;
	const uint8_t *value;
	size_t len;
	int64_t lease;
};

enum kf_etcd_event_type {
	KF_ETCD_EVENT_PUT,
	KF_ETCD_EVENT_DELETE,
};

/* One change seen by a watch; pointers valid during the callback only. */
struct kf_etcd_event {
	enum kf_etcd_event_type type;
	const char *name; /* relative to the prefix */
	const uint8_t *value;
	size_t len;
	int64_t mod_revision;
};

/*
 * Called by kf_etcd_watch for each event (ev set, revision = its
 * mod_revision), and with ev NULL when the watch is created or etcd sends a
 * progress notification (revision = the header's).  Returns 0 to go on,
 * anything else to end the watch, which then returns that value.
 */
typedef int (*kf_etcd_watch_fn)(void *arg, const struct kf_etcd_event *ev,
				int64_t revision);

/*
 * Makes a client (copies everything in cfg).  -EINVAL with the reason for
 * an empty or too long endpoint list, an endpoint that is not http(s)://,
 * an empty prefix or one ending in '/', a timeout <= 0.  The first client
 * loads libcurl (kf_curl_lib_load): -ELIBACC, with a reason naming the
 * library and its Debian package, when it cannot be loaded (and every
 * later call fails the same way).
 */
int kf_etcd_new(const struct kf_etcd_config *cfg, struct kf_etcd **ret,
		char err[KF_ERR_MAX]) KF_WUR;

/* Frees c (NULL is fine); returns NULL. */
struct kf_etcd *kf_etcd_free(struct kf_etcd *c);

/* Frees the members of kv (not kv) and zeroes it; NULL is fine. */
void kf_etcd_kv_clear(struct kf_etcd_kv *kv);

/* Frees an array of n kvs from kf_etcd_list; NULL is fine. */
void kf_etcd_kvs_free(struct kf_etcd_kv *kvs, size_t n);

/*
 * Reads one key.  0 and *ret_kv (the caller clears it), or -ENOENT when
 * there is no such key.
 */
int kf_etcd_get(struct kf_etcd *c, const char *name, struct kf_etcd_kv *ret_kv,
		char err[KF_ERR_MAX]) KF_WUR;

/*
 * Writes one key unconditionally (lease 0: none); *ret_revision (may be
 * NULL) gets the revision of the write.
 */
int kf_etcd_put(struct kf_etcd *c, const char *name, const uint8_t *value,
		size_t len, int64_t lease, int64_t *ret_revision,
		char err[KF_ERR_MAX]) KF_WUR;

/*
 * Deletes one key; *ret_revision (may be NULL) gets the revision of the
 * delete.  -ENOENT when there is no such key (nothing changes).
 */
int kf_etcd_delete(struct kf_etcd *c, const char *name, int64_t *ret_revision,
		   char err[KF_ERR_MAX]) KF_WUR;

/*
 * Compare-and-swap: if name's mod_revision is `expect` (0: name must not
 * exist), writes the n ops (1..KF_ETCD_TXN_MAX, any keys) atomically at one
 * revision and returns 0 with *ret_revision (may be NULL) set to it.  If
 * not, writes nothing and returns KF_ETCD_CONFLICT with *ret_current (may
 * be NULL; the caller clears it) holding name as it is now, read in the
 * same transaction (mod_revision 0 and no value when it does not exist).
 */
int kf_etcd_cas(struct kf_etcd *c, const char *name, int64_t expect,
		const struct kf_etcd_op *ops, size_t n, int64_t *ret_revision,
		struct kf_etcd_kv *ret_current, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Every key whose name starts with `sub` ("" for the whole prefix; the
 * prefix's own "/" is added, so "/keyfs/a" never lists "/keyfs/ab/..."),
 * sorted by name, at most max (0: no limit beyond the reply size).
 * *ret_kvs (kf_etcd_kvs_free) and *ret_n; *ret_revision (may be NULL) the
 * store's revision of the read.
 */
int kf_etcd_list(struct kf_etcd *c, const char *sub, size_t max,
		 struct kf_etcd_kv **ret_kvs, size_t *ret_n,
		 int64_t *ret_revision, char err[KF_ERR_MAX]) KF_WUR;

/* A new lease of ttl_s seconds: its id in *ret_id. */
int kf_etcd_lease_grant(struct kf_etcd *c, int64_t ttl_s, int64_t *ret_id,
			char err[KF_ERR_MAX]) KF_WUR;

/*
 * Renews lease id once; *ret_ttl (may be NULL) gets its new TTL in seconds.
 * -ENOENT when the lease has expired or never existed.
 */
int kf_etcd_lease_keepalive(struct kf_etcd *c, int64_t id, int64_t *ret_ttl,
			    char err[KF_ERR_MAX]) KF_WUR;

/*
 * Watches every key under `sub` (as kf_etcd_list) from revision start (0:
 * from now), calling fn for each event and notification, in order, until fn
 * returns non-zero (returned here).  Blocks.  A stream that breaks, or is
 * silent for idle_ms (0: no limit; set it above the server's progress
 * notification interval), resumes on the next endpoint from the revision
 * after the last event delivered; when no endpoint can be reached in a
 * row: -EHOSTUNREACH.  A start revision that etcd has compacted gives
 * KF_ETCD_COMPACTED with *compact_revision (may be NULL) set to the oldest
 * revision still available: read afresh, then watch again.  A refused
 * token means a new login, once, as for the other calls.  Another
 * cancellation (e.g. permission denied): -ECANCELED.  -EINTR once
 * kf_etcd_interrupt is on (at once if it is on when called).
 */
int kf_etcd_watch(struct kf_etcd *c, const char *sub, int64_t start,
		  int idle_ms, kf_etcd_watch_fn fn, void *arg,
		  int64_t *compact_revision, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Turns c's interrupt on or off; callable from any thread, also while
 * another is inside kf_etcd_watch on c.  While on, a running watch ends
 * with -EINTR within about a second (between two events, or during a
 * silent stream or a reconnection; a login under way ends first) and a new
 * one returns -EINTR at once; the other calls are not affected.  Off
 * again, watches work as before.  How a daemon stops its watcher thread.
 */
void kf_etcd_interrupt(struct kf_etcd *c, bool on);

#endif
