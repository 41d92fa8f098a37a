// SPDX-License-Identifier: MIT
/*
 * core/etcd.c against a real 3-member etcd cluster (etcd_fixture.c), one
 * cluster per test; and the keyfs binary on a system without libcurl.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <link.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "curl_lib.h"
#include "etcd.h"
#include "etcd_fixture.h"
#include "helpers.h"

#define TIMEOUT_MS 2000

static void setup(void)
{
	cr_assert(sodium_init() >= 0);
	kt_etcd_setup();
}

TestSuite(etcd);

/* A client of the given members (indexes into the cluster) and prefix. */
static struct kf_etcd *client_of(const int *members, size_t n,
				 const char *prefix)
{
	const char *eps[KT_ETCD_MEMBERS];
	struct kf_etcd_config cfg = {.endpoints = eps,
				     .n_endpoints = n,
				     .prefix = prefix,
				     .timeout_ms = TIMEOUT_MS};
	struct kf_etcd *c = NULL;
	char err[KF_ERR_MAX] = "";

	for (size_t i = 0; i < n; i++)
		eps[i] = kt_etcd.endpoints[members[i]];
	cr_assert_eq(kf_etcd_new(&cfg, &c, err), 0, "%s", err);
	return c;
}

static struct kf_etcd *client_all(const char *prefix)
{
	static const int all[] = {0, 1, 2};

	return client_of(all, 3, prefix);
}

static int64_t put_ok(struct kf_etcd *c, const char *name, const char *value)
{
	char err[KF_ERR_MAX] = "";
	int64_t rev = 0;

	cr_assert_eq(kf_etcd_put(c, name, (const uint8_t *)value, strlen(value),
				 0, &rev, err),
		     0, "put %s: %s", name, err);
	cr_assert_gt(rev, 0);
	return rev;
}

static void assert_value(const struct kf_etcd_kv *kv, const char *value)
{
	cr_assert_eq(kv->len, strlen(value));
	cr_assert(memcmp(kv->value, value, kv->len) == 0,
		  "value %.*s, expected %s", (int)kv->len, kv->value, value);
}

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

Test(etcd, put_get_round_trip_of_binary_bytes, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = client_all("/keyfs/t");
	uint8_t bytes[512];
	struct kf_etcd_kv kv = {0};
	char err[KF_ERR_MAX] = "";
	int64_t rev = 0;

	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (uint8_t)(255 - i % 256);
	cr_assert_eq(
	    kf_etcd_put(c, "keyring", bytes, sizeof(bytes), 0, &rev, err), 0,
	    "%s", err);
	cr_assert_eq(kf_etcd_get(c, "keyring", &kv, err), 0, "%s", err);
	cr_assert_str_eq(kv.name, "keyring");
	cr_assert_eq(kv.len, sizeof(bytes));
	cr_assert(memcmp(kv.value, bytes, sizeof(bytes)) == 0);
	cr_assert_eq(kv.mod_revision, rev);
	cr_assert_eq(kv.version, 1);
	kf_etcd_kv_clear(&kv);
	cr_assert_eq(kf_etcd_get(c, "missing", &kv, err), -ENOENT);
	cr_assert(kt_contains(err, "/keyfs/t/missing"), "%s", err);
	kf_etcd_free(c);
}

Test(etcd, delete_removes_a_key_once, .init = setup, .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = client_all("/keyfs/t");
	struct kf_etcd_kv kv = {0};
	char err[KF_ERR_MAX] = "";
	int64_t r1 = put_ok(c, "nodes/n1", "up"), rev = 0;

	put_ok(c, "nodes/n2", "up");
	cr_assert_eq(kf_etcd_delete(c, "nodes/n1", &rev, err), 0, "%s", err);
	cr_assert_gt(rev, r1);
	cr_assert_eq(kf_etcd_get(c, "nodes/n1", &kv, err), -ENOENT);
	cr_assert_eq(kf_etcd_delete(c, "nodes/n1", NULL, err), -ENOENT);
	cr_assert(kt_contains(err, "/keyfs/t/nodes/n1"), "%s", err);
	/* Only that key: not its neighbour, nor keys it is a prefix of. */
	cr_assert_eq(kf_etcd_delete(c, "nodes/n", NULL, err), -ENOENT);
	cr_assert_eq(kf_etcd_get(c, "nodes/n2", &kv, err), 0, "%s", err);
	assert_value(&kv, "up");
	kf_etcd_kv_clear(&kv);
	kf_etcd_free(c);
}

Test(etcd, cas_succeeds_on_current_fails_on_stale, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = client_all("/keyfs/t");
	struct kf_etcd_op op = {"keyring", (const uint8_t *)"v2", 2, 0};
	struct kf_etcd_kv cur = {0}, kv = {0};
	char err[KF_ERR_MAX] = "";
	int64_t r1 = put_ok(c, "keyring", "v1"), r2 = 0;

	cr_assert_eq(kf_etcd_cas(c, "keyring", r1, &op, 1, &r2, &cur, err), 0,
		     "%s", err);
	cr_assert_gt(r2, r1);
	op.value = (const uint8_t *)"v3";
	cr_assert_eq(kf_etcd_cas(c, "keyring", r1, &op, 1, NULL, &cur, err),
		     KF_ETCD_CONFLICT);
	cr_assert_eq(cur.mod_revision, r2);
	assert_value(&cur, "v2");
	kf_etcd_kv_clear(&cur);
	cr_assert_eq(kf_etcd_get(c, "keyring", &kv, err), 0, "%s", err);
	assert_value(&kv, "v2");
	cr_assert_eq(kv.mod_revision, r2);
	kf_etcd_kv_clear(&kv);
	kf_etcd_free(c);
}

Test(etcd, create_if_absent_fails_the_second_time, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = client_all("/keyfs/t");
	struct kf_etcd_op op = {"keyring", (const uint8_t *)"first", 5, 0};
	struct kf_etcd_kv cur = {0};
	char err[KF_ERR_MAX] = "";
	int64_t rev = 0;

	cr_assert_eq(kf_etcd_cas(c, "keyring", 0, &op, 1, &rev, &cur, err), 0,
		     "%s", err);
	op.value = (const uint8_t *)"secnd";
	cr_assert_eq(kf_etcd_cas(c, "keyring", 0, &op, 1, NULL, &cur, err),
		     KF_ETCD_CONFLICT);
	cr_assert_eq(cur.mod_revision, rev);
	assert_value(&cur, "first");
	kf_etcd_kv_clear(&cur);
	kf_etcd_free(c);
}

Test(etcd, txn_of_two_keys_commits_at_one_revision, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = client_all("/keyfs/t");
	struct kf_etcd_op ops[2] = {
	    {"keyring", (const uint8_t *)"ring", 4, 0},
	    {"changes/1", (const uint8_t *)"change", 6, 0},
	};
	struct kf_etcd_kv a = {0}, b = {0};
	char err[KF_ERR_MAX] = "";
	int64_t rev = 0;

	cr_assert_eq(kf_etcd_cas(c, "keyring", 0, ops, 2, &rev, NULL, err), 0,
		     "%s", err);
	cr_assert_eq(kf_etcd_get(c, "keyring", &a, err), 0, "%s", err);
	cr_assert_eq(kf_etcd_get(c, "changes/1", &b, err), 0, "%s", err);
	cr_assert_eq(a.mod_revision, rev);
	cr_assert_eq(b.mod_revision, rev);
	assert_value(&b, "change");
	kf_etcd_kv_clear(&a);
	kf_etcd_kv_clear(&b);
	/* A failed compare writes neither key. */
	ops[1].name = "changes/2";
	cr_assert_eq(kf_etcd_cas(c, "keyring", 0, ops, 2, NULL, NULL, err),
		     KF_ETCD_CONFLICT);
	cr_assert_eq(kf_etcd_get(c, "changes/2", &b, err), -ENOENT);
	kf_etcd_free(c);
}

Test(etcd, list_excludes_a_neighbouring_prefix, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *a = client_all("/keyfs/a");
	struct kf_etcd *ab = client_all("/keyfs/ab");
	struct kf_etcd_kv *kvs = NULL;
	char err[KF_ERR_MAX] = "";
	size_t n = 0;
	int64_t rev = 0;

	put_ok(a, "y", "ay");
	put_ok(a, "x", "ax");
	put_ok(a, "nodes/n1", "node");
	put_ok(ab, "x", "abx");
	cr_assert_eq(kf_etcd_list(a, "", 0, &kvs, &n, &rev, err), 0, "%s", err);
	cr_assert_eq(n, 3);
	cr_assert_str_eq(kvs[0].name, "nodes/n1");
	cr_assert_str_eq(kvs[1].name, "x");
	cr_assert_str_eq(kvs[2].name, "y");
	assert_value(&kvs[1], "ax");
	cr_assert_geq(rev, kvs[2].mod_revision);
	kf_etcd_kvs_free(kvs, n);
	cr_assert_eq(kf_etcd_list(a, "nodes/", 0, &kvs, &n, NULL, err), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(kvs[0].name, "nodes/n1");
	kf_etcd_kvs_free(kvs, n);
	cr_assert_eq(kf_etcd_list(ab, "", 0, &kvs, &n, NULL, err), 0);
	cr_assert_eq(n, 1);
	assert_value(&kvs[0], "abx");
	kf_etcd_kvs_free(kvs, n);
	kf_etcd_free(a);
	kf_etcd_free(ab);
}

/* What a watch saw. */
struct seen {
	int events, notifies;
	int want; /* stop after this many events */
	char names[8][32];
	char values[8][32];
	int64_t revs[8];
};

static int on_event(void *arg, const struct kf_etcd_event *ev, int64_t rev)
{
	struct seen *s = arg;

	if (!ev)
		/* Progress every 500 ms: give up after about 10 s. */
		return ++s->notifies > 20 ? -ETIMEDOUT : 0;
	if (s->events < 8) {
		snprintf(s->names[s->events], 32, "%s", ev->name);
		snprintf(s->values[s->events], 32, "%.*s", (int)ev->len,
			 ev->value);
		s->revs[s->events] = rev;
	}
	return ++s->events >= s->want;
}

Test(etcd, watch_from_a_revision_sees_a_put_on_another_member, .init = setup,
     .fini = kt_etcd_teardown)
{
	static const int m0[] = {0}, m1[] = {1};
	struct kf_etcd *w = client_of(m0, 1, "/keyfs/t");
	struct kf_etcd *p = client_of(m1, 1, "/keyfs/t");
	struct kf_etcd *other = client_of(m1, 1, "/keyfs/tt");
	struct seen s = {.want = 2};
	char err[KF_ERR_MAX] = "";
	int64_t r1, r2;

	r1 = put_ok(p, "keyring", "one");
	put_ok(other, "keyring", "elsewhere");
	r2 = put_ok(p, "keyring", "two");
	cr_assert_eq(kf_etcd_watch(w, "", r1, 3000, on_event, &s, NULL, err), 1,
		     "%s", err);
	cr_assert_eq(s.events, 2);
	cr_assert_str_eq(s.names[0], "keyring");
	cr_assert_str_eq(s.values[0], "one");
	cr_assert_eq(s.revs[0], r1);
	cr_assert_str_eq(s.values[1], "two");
	cr_assert_eq(s.revs[1], r2);
	kf_etcd_free(w);
	kf_etcd_free(p);
	kf_etcd_free(other);
}

/* A watch of a quiet prefix in a thread of its own, until it ends. */
struct bg_watch {
	struct kf_etcd *c;
	atomic_bool up; /* the watch was created */
	int r;		/* what kf_etcd_watch returned */
	char err[KF_ERR_MAX];
};

static int mark_up(void *arg, const struct kf_etcd_event *ev, int64_t rev)
{
	struct bg_watch *b = arg;

	(void)ev;
	(void)rev;
	atomic_store(&b->up, true);
	return 0;
}

static void *bg_watch_run(void *arg)
{
	struct bg_watch *b = arg;

	b->r = kf_etcd_watch(b->c, "quiet/", 0, 0, mark_up, b, NULL, b->err);
	return NULL;
}

Test(etcd, interrupt_ends_a_running_watch_and_only_watches, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct bg_watch b = {.c = client_all("/keyfs/t")};
	struct seen s = {.want = 1};
	char err[KF_ERR_MAX] = "";
	struct timespec until;
	pthread_t t;
	int64_t rev;

	cr_assert_eq(pthread_create(&t, NULL, bg_watch_run, &b), 0);
	for (int i = 0; i < 1000 && !atomic_load(&b.up); i++)
		kt_sleep_ms(10);
	cr_assert(atomic_load(&b.up), "the watch was not created in 10 s");
	kf_etcd_interrupt(b.c, true);
	/* A bound that only a watch which never ends can miss. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	cr_assert_eq(pthread_timedjoin_np(t, NULL, &until), 0,
		     "the watch did not end after the interrupt");
	cr_assert_eq(b.r, -EINTR, "%s", b.err);
	cr_assert(kt_contains(b.err, "interrupted"), "%s", b.err);
	/* Still on: other calls work, a new watch ends before it starts. */
	rev = put_ok(b.c, "keyring", "after");
	cr_assert_eq(kf_etcd_watch(b.c, "", rev, 3000, on_event, &s, NULL, err),
		     -EINTR, "%s", err);
	cr_assert_eq(s.events, 0);
	kf_etcd_interrupt(b.c, false);
	cr_assert_eq(kf_etcd_watch(b.c, "", rev, 3000, on_event, &s, NULL, err),
		     1, "%s", err);
	cr_assert_str_eq(s.values[0], "after");
	kf_etcd_free(b.c);
}

Test(etcd, watch_from_a_compacted_revision_says_so, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = client_all("/keyfs/t");
	struct seen s = {.want = 1};
	char err[KF_ERR_MAX] = "";
	int64_t r1, r3, compacted = 0;

	r1 = put_ok(c, "keyring", "1");
	put_ok(c, "keyring", "2");
	r3 = put_ok(c, "keyring", "3");
	cr_assert_eq(kt_runf(NULL, NULL,
			     "curl -sf -m 5 -X POST %s/v3/kv/compaction "
			     "-d '{\"revision\":\"%" PRId64 "\"}'",
			     kt_etcd.endpoints[0], r3),
		     0);
	cr_assert_eq(
	    kf_etcd_watch(c, "", r1, 3000, on_event, &s, &compacted, err),
	    KF_ETCD_COMPACTED, "%s", err);
	cr_assert_eq(compacted, r3);
	cr_assert_eq(s.events, 0);
	cr_assert(kt_contains(err, "compacted"), "%s", err);
	kf_etcd_free(c);
}

Test(etcd, lease_key_disappears_without_keepalives, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = client_all("/keyfs/t");
	struct kf_etcd_kv kv = {0};
	char err[KF_ERR_MAX] = "";
	int64_t id = 0, ttl = 0, t0;
	int r;

	cr_assert_eq(kf_etcd_lease_grant(c, 2, &id, err), 0, "%s", err);
	cr_assert_eq(
	    kf_etcd_put(c, "nodes/n1", (const uint8_t *)"up", 2, id, NULL, err),
	    0, "%s", err);
	/* Kept alive past its first TTL, it stays. */
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(kf_etcd_lease_keepalive(c, id, &ttl, err), 0, "%s",
			     err);
		cr_assert_gt(ttl, 0);
		kt_sleep_ms(500);
	}
	cr_assert_eq(kf_etcd_get(c, "nodes/n1", &kv, err), 0, "%s", err);
	cr_assert_eq(kv.lease, id);
	kf_etcd_kv_clear(&kv);
	t0 = now_ms();
	do {
		kt_sleep_ms(100);
		r = kf_etcd_get(c, "nodes/n1", &kv, err);
		kf_etcd_kv_clear(&kv);
	} while (r == 0 && now_ms() - t0 < 8000);
	cr_assert_eq(r, -ENOENT, "still there after 8 s: %s", err);
	cr_assert_eq(kf_etcd_lease_keepalive(c, id, &ttl, err), -ENOENT);
	kf_etcd_free(c);
}

Test(etcd, a_killed_member_leaves_the_client_working, .init = setup,
     .fini = kt_etcd_teardown)
{
	int leader = kt_etcd_leader();
	int f = (leader + 1) % KT_ETCD_MEMBERS;
	int order[] = {f, (f + 1) % 3, (f + 2) % 3};
	struct kf_etcd *c = client_of(order, 3, "/keyfs/t");
	struct kf_etcd_op op = {"keyring", (const uint8_t *)"v2", 2, 0};
	struct kf_etcd_kv kv = {0};
	char err[KF_ERR_MAX] = "";
	int64_t r1, rev = 0, t0;

	r1 = put_ok(c, "keyring", "v1"); /* through f, the first */
	kt_etcd_kill(f);
	t0 = now_ms();
	cr_assert_eq(kf_etcd_get(c, "keyring", &kv, err), 0, "%s", err);
	assert_value(&kv, "v1");
	kf_etcd_kv_clear(&kv);
	cr_assert_eq(kf_etcd_cas(c, "keyring", r1, &op, 1, &rev, NULL, err), 0,
		     "%s", err);
	put_ok(c, "other", "x");
	cr_assert_lt(now_ms() - t0, TIMEOUT_MS, "failover took %" PRId64 " ms",
		     now_ms() - t0);
	kf_etcd_free(c);
}

Test(etcd, unreachable_endpoints_fail_within_the_timeout)
{
	/* One port where nothing listens, one that accepts and never
	 * answers. */
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char refused[64], silent[64], err[KF_ERR_MAX] = "";
	const char *eps[] = {refused, silent};
	struct kf_etcd_config cfg = {.endpoints = eps,
				     .n_endpoints = 2,
				     .prefix = "/keyfs/t",
				     .timeout_ms = 300};
	struct kf_etcd *c = NULL;
	struct kf_etcd_kv kv = {0};
	int64_t t0, took;

	cr_assert(fd >= 0);
	cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	cr_assert(listen(fd, 4) == 0);
	cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
	snprintf(refused, sizeof(refused), "http://127.0.0.1:%d",
		 kt_free_port());
	snprintf(silent, sizeof(silent), "http://127.0.0.1:%d",
		 ntohs(a.sin_port));
	cr_assert_eq(kf_etcd_new(&cfg, &c, err), 0, "%s", err);
	t0 = now_ms();
	cr_assert_eq(kf_etcd_get(c, "keyring", &kv, err), -EHOSTUNREACH);
	took = now_ms() - t0;
	cr_assert_lt(took, 2 * 300 + 300, "took %" PRId64 " ms", took);
	cr_assert(kt_contains(err, "etcd unreachable"), "%s", err);
	cr_assert(kt_contains(err, refused), "%s", err);
	cr_assert(kt_contains(err, silent), "%s", err);
	cr_assert(kt_contains(err, "imeout") || kt_contains(err, "imed out"),
		  "%s", err);
	kf_etcd_free(c);
	close(fd);
}

Test(etcd, bad_configurations_and_values_are_refused)
{
	const char *bad[] = {"127.0.0.1:2379"};
	const char *good[] = {"http://127.0.0.1:1"};
	struct kf_etcd_config cfg = {.endpoints = bad,
				     .n_endpoints = 1,
				     .prefix = "/keyfs/t",
				     .timeout_ms = 100};
	struct kf_etcd *c = NULL;
	char err[KF_ERR_MAX] = "";
	uint8_t *big;

	cr_assert_eq(kf_etcd_new(&cfg, &c, err), -EINVAL);
	cr_assert(kt_contains(err, "127.0.0.1:2379"), "%s", err);
	cfg.endpoints = good;
	cfg.prefix = "/keyfs/t/";
	cr_assert_eq(kf_etcd_new(&cfg, &c, err), -EINVAL);
	cfg.prefix = "/keyfs/t";
	cr_assert_eq(kf_etcd_new(&cfg, &c, err), 0, "%s", err);
	big = calloc(1, KF_ETCD_VALUE_MAX + 1);
	cr_assert(big);
	cr_assert_eq(
	    kf_etcd_put(c, "keyring", big, KF_ETCD_VALUE_MAX + 1, 0, NULL, err),
	    -EFBIG);
	free(big);
	kf_etcd_free(c);
}

/* After the first event, kills the member the watch is on and puts again
 * through another client. */
struct resume {
	struct seen s;
	int victim;
	struct kf_etcd *writer;
	int64_t r2;
};

static int kill_then_put(void *arg, const struct kf_etcd_event *ev, int64_t rev)
{
	struct resume *r = arg;
	int stop = on_event(&r->s, ev, rev);

	if (ev && r->s.events == 1) {
		kt_etcd_kill(r->victim);
		r->r2 = put_ok(r->writer, "keyring", "two");
	}
	return stop;
}

Test(etcd, a_broken_watch_resumes_on_another_member, .init = setup,
     .fini = kt_etcd_teardown)
{
	int leader = kt_etcd_leader();
	int f = (leader + 1) % KT_ETCD_MEMBERS;
	int order[] = {f, (f + 1) % 3, (f + 2) % 3}, lead[] = {leader};
	struct kf_etcd *w = client_of(order, 3, "/keyfs/t");
	struct resume r = {.s = {.want = 2}, .victim = f};
	char err[KF_ERR_MAX] = "";
	int64_t r1;

	r.writer = client_of(lead, 1, "/keyfs/t");
	r1 = put_ok(r.writer, "keyring", "one");
	cr_assert_eq(
	    kf_etcd_watch(w, "", r1, 3000, kill_then_put, &r, NULL, err), 1,
	    "%s", err);
	cr_assert_eq(r.s.events, 2);
	cr_assert_str_eq(r.s.values[0], "one");
	cr_assert_eq(r.s.revs[0], r1);
	cr_assert_str_eq(r.s.values[1], "two", "the event after the break");
	cr_assert_eq(r.s.revs[1], r.r2);
	kf_etcd_free(w);
	kf_etcd_free(r.writer);
}

static int auth_put(const char *prefix, const char *user, const char *pw,
		    char *err)
{
	const struct kf_etcd_config cfg = {.endpoints = kt_etcd.endpoints,
					   .n_endpoints = KT_ETCD_MEMBERS,
					   .prefix = prefix,
					   .timeout_ms = TIMEOUT_MS,
					   .user = user,
					   .password = pw};
	struct kf_etcd *c = NULL;
	struct kf_etcd_kv kv = {0};
	int r;

	cr_assert_eq(kf_etcd_new(&cfg, &c, err), 0, "%s", err);
	r = kf_etcd_put(c, "keyring", (const uint8_t *)"v", 1, 0, NULL, err);
	if (r == 0) {
		cr_assert_eq(kf_etcd_get(c, "keyring", &kv, err), 0, "%s", err);
		assert_value(&kv, "v");
		kf_etcd_kv_clear(&kv);
	}
	kf_etcd_free(c);
	return r;
}

Test(etcd, a_password_user_reaches_its_prefix_only, .init = setup,
     .fini = kt_etcd_teardown)
{
	char err[KF_ERR_MAX] = "";

	kt_etcd_enable_auth("p\"w\\");
	cr_assert_eq(auth_put("/keyfs/t", "keyfs", "p\"w\\", err), 0, "%s",
		     err);
	cr_assert_eq(auth_put("/other", "keyfs", "p\"w\\", err), -EACCES);
	cr_assert(kt_contains(err, "permission denied"), "%s", err);
	cr_assert_eq(auth_put("/keyfs/t", "keyfs", "wrong", err), -EACCES);
	cr_assert(kt_contains(err, "login as keyfs"), "%s", err);
	cr_assert_eq(auth_put("/keyfs/t", NULL, NULL, err), -EIO);
	cr_assert(kt_contains(err, "user name is empty"), "%s", err);
}

/* Turns authentication on with only root; a client of every member that
 * logs in as root. */
static struct kf_etcd *root_client(void)
{
	const struct kf_etcd_config cfg = {.endpoints = kt_etcd.endpoints,
					   .n_endpoints = KT_ETCD_MEMBERS,
					   .prefix = "/keyfs/t",
					   .timeout_ms = TIMEOUT_MS,
					   .user = "root",
					   .password = KT_ETCD_ROOT_PASSWORD};
	struct kf_etcd *c = NULL;
	char err[KF_ERR_MAX] = "";

	kt_etcdctl("user add root --new-user-password=" KT_ETCD_ROOT_PASSWORD);
	kt_etcdctl("auth enable");
	cr_assert_eq(kf_etcd_new(&cfg, &c, err), 0, "%s", err);
	return c;
}

Test(etcd, an_expired_token_means_a_new_login, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = root_client();
	char *out = NULL, *cmd;
	json_t *j;

	put_ok(c, "keyring", "v1");
	/* A token of its own shows that tokens do expire here. */
	cr_assert_eq(kt_runf(&out, NULL,
			     "curl -sf -m 5 -X POST %s/v3/auth/authenticate "
			     "-d '{\"name\":\"root\",\"password\":\"rootpw\"}'",
			     kt_etcd.endpoints[0]),
		     0);
	j = json_loads(out, 0, NULL);
	cr_assert(json_string_value(json_object_get(j, "token")), "%s", out);
	cr_assert(asprintf(&cmd,
			   "curl -s -m 5 -X POST %s/v3/kv/range -H "
			   "'Authorization: %s' -d '{\"key\":\"eA==\"}'",
			   kt_etcd.endpoints[0],
			   json_string_value(json_object_get(j, "token"))) > 0);
	json_decref(j);
	free(out);
	kt_sleep_ms(3500);
	cr_assert_eq(kt_run(cmd, NULL, &out, NULL), 0);
	cr_assert(kt_contains(out, "invalid auth token"), "%s", out);
	free(out);
	free(cmd);
	put_ok(c, "keyring", "v2");
	kf_etcd_free(c);
}

Test(etcd, a_watch_logs_in_again_when_its_token_expired, .init = setup,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c = root_client();
	struct seen s = {.want = 1};
	char err[KF_ERR_MAX] = "";
	int64_t rev;

	rev = put_ok(c, "keyring", "v1"); /* the client logs in */
	kt_sleep_ms(4000);		  /* its token expires after 2 s */
	cr_assert_eq(kf_etcd_watch(c, "", rev, 3000, on_event, &s, NULL, err),
		     1, "%s", err);
	cr_assert_str_eq(s.values[0], "v1");
	cr_assert_eq(s.revs[0], rev);
	kf_etcd_free(c);
}

static void setup_tls(void)
{
	cr_assert(sodium_init() >= 0);
	kt_etcd_setup_tls();
}

/* A client of every member of the https cluster (any of the files and the
 * user may be NULL). */
static struct kf_etcd *tls_client(const char *cacert, const char *cert,
				  const char *key, const char *user)
{
	const struct kf_etcd_config cfg = {.endpoints = kt_etcd.endpoints,
					   .n_endpoints = KT_ETCD_MEMBERS,
					   .prefix = "/keyfs/t",
					   .timeout_ms = TIMEOUT_MS,
					   .cacert = cacert,
					   .cert = cert,
					   .key = key,
					   .user = user,
					   .password = KT_ETCD_PASSWORD};
	struct kf_etcd *c = NULL;
	char err[KF_ERR_MAX] = "";

	cr_assert_eq(kf_etcd_new(&cfg, &c, err), 0, "%s", err);
	return c;
}

Test(etcd, tls_with_a_certificate_without_cn_and_a_password_works,
     .init = setup_tls, .fini = kt_etcd_teardown)
{
	struct kf_etcd *c =
	    tls_client(kt_etcd.ca, kt_etcd.cert, kt_etcd.key, KT_ETCD_USER);
	struct kf_etcd_op op = {"keyring", (const uint8_t *)"v2", 2, 0};
	struct kf_etcd_kv kv = {0};
	struct seen s = {.want = 2};
	char err[KF_ERR_MAX] = "";
	int64_t r1 = put_ok(c, "keyring", "v1"), r2 = 0;

	cr_assert_eq(kf_etcd_get(c, "keyring", &kv, err), 0, "%s", err);
	assert_value(&kv, "v1");
	kf_etcd_kv_clear(&kv);
	cr_assert_eq(kf_etcd_cas(c, "keyring", r1, &op, 1, &r2, NULL, err), 0,
		     "%s", err);
	cr_assert_eq(kf_etcd_watch(c, "", r1, 3000, on_event, &s, NULL, err), 1,
		     "%s", err);
	cr_assert_str_eq(s.values[0], "v1");
	cr_assert_str_eq(s.values[1], "v2");
	cr_assert_eq(s.revs[1], r2);
	cr_assert_eq(kf_etcd_delete(c, "keyring", NULL, err), 0, "%s", err);
	kf_etcd_free(c);
}

Test(etcd, tls_refuses_a_certificate_with_a_cn_or_none, .init = setup_tls,
     .fini = kt_etcd_teardown)
{
	struct kf_etcd *c;
	struct seen s = {.want = 1};
	char err[KF_ERR_MAX] = "";
	int r;

	/* The CN trap, on a login and on a watch without one. */
	c = tls_client(kt_etcd.ca, kt_etcd.cn_cert, kt_etcd.cn_key,
		       KT_ETCD_USER);
	r = kf_etcd_put(c, "keyring", (const uint8_t *)"v", 1, 0, NULL, err);
	cr_assert_eq(r, -EACCES, "%d: %s", r, err);
	cr_assert(kt_contains(err, "common name (CN)"), "%s", err);
	kf_etcd_free(c);
	c = tls_client(kt_etcd.ca, kt_etcd.cn_cert, kt_etcd.cn_key, NULL);
	r = kf_etcd_watch(c, "", 0, 3000, on_event, &s, NULL, err);
	cr_assert_eq(r, -EACCES, "%d: %s", r, err);
	cr_assert(kt_contains(err, "common name (CN)"), "%s", err);
	kf_etcd_free(c);
	/* No client certificate: the handshake or the request fails. */
	c = tls_client(kt_etcd.ca, NULL, NULL, KT_ETCD_USER);
	r = kf_etcd_put(c, "keyring", (const uint8_t *)"v", 1, 0, NULL, err);
	cr_assert_lt(r, 0);
	cr_assert(kt_contains(err, kt_etcd.endpoints[0]), "%d: %s", r, err);
	kf_etcd_free(c);
	/* The members' CA unknown: no member is trusted. */
	c = tls_client(NULL, kt_etcd.cert, kt_etcd.key, KT_ETCD_USER);
	r = kf_etcd_put(c, "keyring", (const uint8_t *)"v", 1, 0, NULL, err);
	cr_assert_eq(r, -EHOSTUNREACH, "%d: %s", r, err);
	cr_assert(kt_contains(err, "certificate problem"), "%s", err);
	kf_etcd_free(c);
}

/* --- without libcurl ------------------------------------------------------ */

/*
 * Runs script (no single quote in it) with sh, $1 the keyfs binary and $2
 * arg, in a new mount namespace where the file that the dynamic linker
 * finds for libcurl.so.4 is /dev/null, bound over it for that namespace
 * only: keyfs on a system without libcurl.  Returns and captures as
 * kt_runf.
 */
static int run_without_libcurl(const char *script, const char *arg,
			       char **ret_out, char **ret_err)
{
	void *h = dlopen(KF_CURL_LIB_SONAME, RTLD_NOW);
	struct link_map *lm = NULL;
	int rc;

	cr_assert_eq(geteuid(), 0, "this test needs root (unshare --mount)");
	cr_assert(h, "%s", dlerror());
	cr_assert(dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm->l_name[0] == '/',
		  "where is %s?", KF_CURL_LIB_SONAME);
	rc = kt_runf(ret_out, ret_err,
		     "unshare --mount --propagation private sh -c "
		     "'mount --bind /dev/null \"$1\" || exit 90; shift; %s' "
		     "sh '%s' '%s' '%s'",
		     script, lm->l_name, kt_keyfs(), arg);
	cr_assert_neq(rc, 90, "cannot bind /dev/null over %s", lm->l_name);
	dlclose(h);
	return rc;
}

static void mount_config_free(struct kt_mount *m)
{
	free(m->dir);
	free(m->mnt);
	free(m->cfg);
	free(m->log);
	free(m->state);
}

Test(etcd, without_libcurl_a_daemon_with_store_etcd_names_what_to_install)
{
	struct kt_mount m;
	char *sections, *err = NULL;
	int rc;

	/* Nothing listens there: the client is made before any request. */
	cr_assert(asprintf(&sections,
			   "[etcd]\nendpoints = http://127.0.0.1:%d\n"
			   "prefix = /keyfs/t\nnode = n1\ntimeout = 500ms\n",
			   kt_free_port()) > 0);
	kt_mount_config(&m, "no-libcurl-etcd", "store = etcd\n", sections);
	rc = run_without_libcurl("exec timeout 30 \"$1\" mount -f -c \"$2\"",
				 m.cfg, NULL, &err);
	cr_assert_neq(rc, 0, "the daemon started: %s", err);
	cr_assert(kt_contains(err, "cannot load " KF_CURL_LIB_SONAME), "%s",
		  err);
	cr_assert(kt_contains(err, KF_CURL_LIB_PACKAGE " package"), "%s", err);
	free(err);
	free(sections);
	mount_config_free(&m);
}

Test(etcd, without_libcurl_a_daemon_with_the_file_store_serves)
{
	struct kt_mount m;
	char *out = NULL, *err = NULL, *log;
	int rc;

	kt_mount_config(&m, "no-libcurl-file", NULL, NULL);
	/* Mounted in that namespace only: read there, then stopped. */
	rc = run_without_libcurl(
	    "\"$1\" mount -f -c \"$2/keyfs.ini\" 2>\"$2/daemon.log\" & p=$!; "
	    "i=0; while kill -0 $p 2>/dev/null && "
	    "[ ! -e \"$2/mnt/version\" ] && [ $i -lt 150 ]; do "
	    "sleep 0.1; i=$((i + 1)); done; "
	    "cat \"$2/mnt/version\"; kill -TERM $p; wait $p",
	    m.dir, &out, &err);
	log = kt_read_file(m.log, NULL);
	cr_assert_eq(rc, 0, "exit %d: %s; daemon: %s", rc, err, log ? log : "");
	cr_assert_str_eq(out, "1\n", "daemon: %s", log ? log : "");
	free(log);
	free(out);
	free(err);
	mount_config_free(&m);
}
