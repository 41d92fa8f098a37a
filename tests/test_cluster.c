// SPDX-License-Identifier: MIT
/*
 * store = etcd through real mounts: a real 3-member etcd cluster per test
 * (etcd_fixture.c) and several real keyfs daemons, each with its own
 * mountpoint and state folder, sharing one master key -- what replicas of
 * one application with keyfs sidecars see.  Keys are compared in C and
 * never printed.
 *
 * Waits are bounded polls with generous limits (the machines are shared):
 * a test asserts that something happens, never how fast.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cluster.h"
#include "etcd.h"
#include "etcd_fixture.h"
#include "helpers.h"

#define NODES 3
#define PREFIX "/keyfs/t"
#define WAIT_S 20.0 /* a poll's bound: far above what any step takes */

static struct kt_mount nodes[NODES + 1];
static char *master_text; /* the shared master key's text form + "\n" */
static char *alerts[NODES + 1];
static char *password_file; /* with KT_ETCD_PASSWORD, under setup_tls */
static bool with_cn;	    /* node_prepare: the certificate with a CN */
static int first_member;    /* etcd_section: the endpoint listed first */

static void fini(void)
{
	kt_mount_cleanup_all();
	kt_etcd_teardown();
	for (int i = 0; i <= NODES; i++) {
		free(alerts[i]);
		alerts[i] = NULL;
	}
	free(password_file);
	password_file = NULL;
	if (master_text)
		sodium_memzero(master_text, strlen(master_text));
	free(master_text);
	master_text = NULL;
}

static void new_master_key(void)
{
	char *err = NULL;

	cr_assert_eq(kt_runf(&master_text, &err, "%s genkey", kt_keyfs()), 0);
	free(err);
}

static void setup(void)
{
	cr_assert(sodium_init() >= 0);
	kt_etcd_setup();
	new_master_key();
}

/* The cluster over https, client certificates and a password user. */
static void setup_tls(void)
{
	cr_assert(sodium_init() >= 0);
	kt_etcd_setup_tls();
	new_master_key();
}

TestSuite(cluster, .fini = fini, .timeout = 240);

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The [etcd] section of every node: the cluster's endpoints (and under
 * setup_tls its certificates and login). */
static char *etcd_section(const char *node, const char *prefix)
{
	char *s, *tls = NULL;

	if (kt_etcd.ca) {
		if (!password_file) {
			char *dir = kt_tmpdir("etcd-pw");

			password_file = kt_path(dir, "password");
			free(dir);
			kt_write_file(password_file, KT_ETCD_PASSWORD "\n",
				      0600);
		}
		cr_assert(asprintf(&tls,
				   "cacert = %s\ncert = %s\nkey = %s\nuser = "
				   "keyfs\npassword_file = %s\n",
				   kt_etcd.ca,
				   with_cn ? kt_etcd.cn_cert : kt_etcd.cert,
				   with_cn ? kt_etcd.cn_key : kt_etcd.key,
				   password_file) > 0);
	}
	cr_assert(asprintf(&s,
			   "[etcd]\nendpoints = %s, %s, %s\nprefix = %s\n"
			   "node = %s\ntimeout = 500ms\n%s",
			   kt_etcd.client[first_member],
			   kt_etcd.client[(first_member + 1) % 3],
			   kt_etcd.client[(first_member + 2) % 3], prefix, node,
			   tls ? tls : "") > 0);
	free(tls);
	return s;
}

/* Node i's configuration (not started), with the shared master key. */
static struct kt_mount *node_prepare(int i, const char *prefix,
				     const char *extra)
{
	struct kt_mount *m = &nodes[i];
	char name[32], tag[32], *section, *lines, *key, *dir;

	snprintf(name, sizeof(name), "node%d", i);
	snprintf(tag, sizeof(tag), "cluster-%d", i);
	section = etcd_section(name, prefix);
	free(alerts[i]);
	dir = kt_tmpdir("alerts");
	alerts[i] = kt_path(dir, "alerts");
	free(dir);
	cr_assert(asprintf(&lines,
			   "store = etcd\nalert_command = cat >> %s\n%s",
			   alerts[i], extra ? extra : "") > 0);
	kt_mount_config(m, tag, lines, section);
	key = kt_path(m->dir, "master.key");
	kt_write_file(key, master_text, 0600);
	free(key);
	free(lines);
	free(section);
	return m;
}

/* `keyfs cluster ARGS -c node i's config`: exit status; out/err kept. */
static int cluster_cmd(int i, const char *args, char **out, char **err)
{
	return kt_runf(out, err, "%s cluster %s -c %s", kt_keyfs(), args,
		       nodes[i].cfg);
}

/* Initialises the cluster from node 0 (development: generated). */
static void cluster_init(void)
{
	char *out = NULL, *err = NULL;

	cr_assert_eq(cluster_cmd(0, "init", &out, &err), 0, "%s", err);
	cr_assert(kt_contains(out, "cluster keyring created under " PREFIX),
		  "%s", out);
	free(out);
	free(err);
}

/* n nodes prepared, the cluster initialised, all mounted. */
static void start_nodes(int n)
{
	for (int i = 0; i < n; i++)
		node_prepare(i, PREFIX, NULL);
	cluster_init();
	for (int i = 0; i < n; i++)
		cr_assert_eq(kt_mount_start(&nodes[i], NULL), 0,
			     "node %d did not start", i);
}

/* derived/phi of node i (44 bytes of text), into buf. */
static void read_phi(int i, char buf[64])
{
	size_t len = 0;
	char *t = kt_mread(&nodes[i], "derived/phi", &len);

	cr_assert(t && len == 44, "node %d: derived/phi unreadable", i);
	memcpy(buf, t, len);
	buf[len] = 0;
	sodium_memzero(t, len);
	free(t);
}

/* Waits until every one of n nodes serves version v; asserts it does. */
static void wait_version(int n, long v)
{
	double end = now_s() + WAIT_S;
	int i = 0;

	while (i < n) {
		if (kt_mversion(&nodes[i]) == v) {
			i++;
			continue;
		}
		cr_assert(now_s() < end, "node %d never served version %ld", i,
			  v);
		kt_sleep_ms(5);
	}
}

/* Whether every one of n nodes serves the same derived/phi. */
static void assert_same_phi(int n)
{
	char first[64], other[64];

	read_phi(0, first);
	for (int i = 1; i < n; i++) {
		read_phi(i, other);
		cr_assert(sodium_memcmp(first, other, 44) == 0,
			  "node %d serves another derived/phi than node 0", i);
	}
	sodium_memzero(first, sizeof(first));
	sodium_memzero(other, sizeof(other));
}

/* The "store" object of node i's status file (a new reference). */
static json_t *store_status(int i)
{
	size_t len = 0;
	char *t = kt_mread(&nodes[i], "status", &len);
	json_t *o, *s;

	cr_assert(t, "node %d: status unreadable", i);
	o = json_loadb(t, len, 0, NULL);
	free(t);
	s = json_incref(json_object_get(o, "store"));
	json_decref(o);
	cr_assert(json_is_object(s), "node %d: status has no store", i);
	return s;
}

static bool state_is(int i, const char *state)
{
	json_t *s = store_status(i);
	bool yes = !strcmp(kt_str_of(s, "state"), state);

	json_decref(s);
	return yes;
}

static void wait_state(int i, const char *state)
{
	double end = now_s() + WAIT_S;

	while (!state_is(i, state)) {
		cr_assert(now_s() < end, "node %d never became %s", i, state);
		kt_sleep_ms(50);
	}
}

/* A client of the test's etcd, for what an attacker or operator does. */
static struct kf_etcd *raw_client(const char *prefix)
{
	struct kf_etcd_config c = {.endpoints = kt_etcd.endpoints,
				   .n_endpoints = KT_ETCD_MEMBERS,
				   .prefix = prefix,
				   .timeout_ms = 2000};
	struct kf_etcd *e = NULL;
	char err[KF_ERR_MAX];

	cr_assert_eq(kf_etcd_new(&c, &e, err), 0, "%s", err);
	return e;
}

/* --- one keyring for every node ---------------------------------------------
 */

Test(cluster, a_rotation_on_one_node_is_served_by_every_other, .init = setup)
{
	char *out = NULL, *err = NULL;
	json_t *recs, *rec;
	size_t mark;

	start_nodes(NODES);
	assert_same_phi(NODES);
	mark = kt_audit_size(&nodes[2]);
	cr_assert_eq(kt_mwrite(&nodes[1], "control/rotate", "1\n"), 0);
	wait_version(NODES, 2);
	assert_same_phi(NODES);
	/* Node 2 says whose change it adopted. */
	recs = kt_audit_since(&nodes[2], mark);
	rec = kt_find_record(recs, "key_sync", 1);
	cr_assert(rec, "no key_sync record on node 2");
	cr_assert_str_eq(kt_str_of(rec, "origin_node"), "node1");
	cr_assert_eq(json_integer_value(json_object_get(rec, "key_version")),
		     2);
	json_decref(recs);
	/* keyfs cluster status, without a mount: every node's record. */
	cr_assert_eq(cluster_cmd(0, "status", &out, &err), 0, "%s", err);
	cr_assert(kt_contains(out, "version 2, generation 2 (rotate by node "
				   "node1"),
		  "%s", out);
	cr_assert(kt_contains(out, "node0") && kt_contains(out, "node2"), "%s",
		  out);
	free(out);
	free(err);
}

struct racer {
	int node;
	pthread_barrier_t *go;
	char answer[128];
	int rc;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	char *path = kt_mpath(&nodes[r->node], "control/rotate");
	int fd = open(path, O_RDWR);
	ssize_t n;

	pthread_barrier_wait(r->go);
	r->rc = fd >= 0 && write(fd, "1\n", 2) == 2 ? 0 : -errno;
	n = fd >= 0 ? pread(fd, r->answer, sizeof(r->answer) - 1, 0) : -1;
	r->answer[n > 0 ? n : 0] = 0;
	if (fd >= 0)
		close(fd);
	free(path);
	return NULL;
}

Test(cluster, all_nodes_rotating_at_once_make_one_version_per_round,
     .init = setup)
{
	enum { ROUNDS = 100 };
	pthread_barrier_t go;

	start_nodes(NODES);
	for (int round = 1; round <= ROUNDS; round++) {
		struct racer rs[NODES];
		pthread_t t[NODES];
		char want[64];
		int winners = 0;

		pthread_barrier_init(&go, NULL, NODES);
		for (int i = 0; i < NODES; i++) {
			rs[i] = (struct racer){.node = i, .go = &go};
			cr_assert_eq(pthread_create(&t[i], NULL, race, &rs[i]),
				     0);
		}
		for (int i = 0; i < NODES; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		/* Every answer names the one new version of this round. */
		snprintf(want, sizeof(want), "rotated: version %d", round + 1);
		for (int i = 0; i < NODES; i++) {
			cr_assert_eq(rs[i].rc, 0, "round %d: node %d refused",
				     round, i);
			cr_assert(!strncmp(rs[i].answer, want, strlen(want)),
				  "round %d, node %d: %s", round, i,
				  rs[i].answer);
			winners += rs[i].answer[strlen(want)] == '\n';
		}
		cr_assert_eq(winners, 1, "round %d: %d winners", round,
			     winners);
		wait_version(NODES, round + 1);
		/* Past the coalescing window: the next round is a new ask. */
		kt_sleep_ms(300);
	}
	assert_same_phi(NODES);
}

/* --- etcd in trouble
 * ---------------------------------------------------------- */

Test(cluster, a_follower_killed_nothing_fails, .init = setup)
{
	int leader;

	start_nodes(NODES);
	leader = kt_etcd_leader();
	kt_etcd_kill((leader + 1) % KT_ETCD_MEMBERS);
	for (long v = 2; v <= 5; v++) {
		/* Every rotation succeeds the first time; every node has it. */
		cr_assert_eq(
		    kt_mwrite(&nodes[v % NODES], "control/rotate", "1\n"), 0,
		    "rotation %ld failed", v);
		wait_version(NODES, v);
		assert_same_phi(NODES);
		kt_sleep_ms(300); /* past the coalescing window */
	}
	for (int i = 0; i < NODES; i++)
		cr_assert(state_is(i, "ok"), "node %d degraded", i);
}

/*
 * A frozen member gives no error, only silence: a watch on it misses the
 * change, and the once-a-second read (on another member) brings it in.
 */
Test(cluster, a_watch_on_a_frozen_member_misses_nothing, .init = setup)
{
	int frozen;

	first_member = frozen = (kt_etcd_leader() + 1) % KT_ETCD_MEMBERS;
	start_nodes(2);
	kill(kt_etcd.pid[frozen], SIGSTOP);
	cr_assert_eq(kt_mwrite(&nodes[1], "control/rotate", "1\n"), 0);
	wait_version(2, 2);
	assert_same_phi(2);
	kill(kt_etcd.pid[frozen], SIGCONT);
}

Test(cluster, quorum_lost_refuses_changes_and_the_nodes_catch_up_after,
     .init = setup)
{
	char *out = NULL, *err = NULL, *log;

	start_nodes(NODES);
	/* Two members frozen: a partition, as the note measures it. */
	kill(kt_etcd.pid[1], SIGSTOP);
	kill(kt_etcd.pid[2], SIGSTOP);
	wait_state(0, "degraded");
	/* Alerted once, with why: alert_command runs detached, so its
	 * output may follow the state by a moment. */
	for (int i = 0;; i++) {
		log = kt_read_file(alerts[0], NULL);
		if ((log && kt_contains(log, "\"state\":\"degraded\"")) ||
		    i == 100)
			break;
		free(log);
		kt_sleep_ms(100);
	}
	cr_assert(log && kt_contains(log, "\"event\":\"cluster\"") &&
		      kt_contains(log, "\"state\":\"degraded\""),
		  "no degraded alert: %s", log ? log : "(none)");
	free(log);
	/* Reads go on from memory. */
	assert_same_phi(NODES);
	cr_assert_neq(kt_ctl(&nodes[0], &out, &err, "rotate"), 0);
	cr_assert(kt_contains(err, "cluster unavailable ("), "%s", err);
	cr_assert(kt_contains(err, "keyring unchanged at version 1"), "%s",
		  err);
	free(out);
	free(err);
	cr_assert_eq(kt_mversion(&nodes[0]), 1);
	kill(kt_etcd.pid[1], SIGCONT);
	kill(kt_etcd.pid[2], SIGCONT);
	for (int i = 0; i < NODES; i++)
		wait_state(i, "ok");
	cr_assert_eq(kt_mwrite(&nodes[2], "control/rotate", "1\n"), 0);
	wait_version(NODES, 2);
	assert_same_phi(NODES);
}

Test(cluster, the_leader_killed_rotations_resume_and_none_is_lost,
     .init = setup)
{
	double end;
	long v = 1;

	start_nodes(NODES);
	kt_etcd_kill(kt_etcd_leader());
	/* Rotations fail for a while at most, then succeed again. */
	end = now_s() + WAIT_S;
	while (v < 4) {
		char *out = NULL, *err = NULL;

		if (kt_ctl(&nodes[v % NODES], &out, &err, "rotate") == 0)
			v++;
		else
			cr_assert(now_s() < end, "rotation never resumed: %s",
				  err);
		free(out);
		free(err);
		wait_state(0, "ok");
		kt_sleep_ms(300); /* past the coalescing window */
	}
	/* Every acknowledged rotation counted: no lost version. */
	wait_version(NODES, 4);
	assert_same_phi(NODES);
}

Test(cluster, a_node_restarted_while_etcd_is_down_serves_its_copy_degraded,
     .init = setup)
{
	char *out = NULL, *err = NULL, phi[64], again[64];
	int rc;

	start_nodes(1);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "1\n"), 0);
	read_phi(0, phi);
	cr_assert_eq(kt_mount_stop(&nodes[0]), 0);
	for (int i = 0; i < KT_ETCD_MEMBERS; i++)
		kt_etcd_kill(i);
	cr_assert_eq(kt_mount_start(&nodes[0], NULL), 0,
		     "a node with a local copy must start without etcd");
	read_phi(0, again);
	cr_assert(sodium_memcmp(phi, again, 44) == 0,
		  "the local copy serves another key");
	cr_assert(state_is(0, "degraded"));
	cr_assert_neq(kt_ctl(&nodes[0], &out, &err, "backup"), 0);
	cr_assert(kt_contains(err, "cluster unavailable"), "%s", err);
	free(out);
	free(err);
	/* A new node has nothing to serve: it refuses, clearly. */
	node_prepare(1, PREFIX, NULL);
	rc = kt_mount_start(&nodes[1], NULL);
	cr_assert_gt(rc, 0, "a new node started without etcd");
	out = kt_read_file(nodes[1].log, NULL);
	cr_assert(kt_contains(out, "no local copy of the cluster keyring"),
		  "%s", out);
	free(out);
	sodium_memzero(phi, sizeof(phi));
	sodium_memzero(again, sizeof(again));
}

/* --- what etcd holds is checked
 * ----------------------------------------------- */

/* Puts value as the keyring and checks node 0 refuses it, alerted. */
static void assert_refused(struct kf_etcd *e, const uint8_t *v, size_t len,
			   const char *why)
{
	char err[KF_ERR_MAX], *text;
	double end = now_s() + WAIT_S;
	struct stat st;
	size_t before = stat(alerts[0], &st) == 0 ? (size_t)st.st_size : 0;

	cr_assert_eq(kf_etcd_put(e, "store/keyring", v, len, 0, NULL, err), 0,
		     "%s", err);
	for (;;) {
		text = kt_read_file(alerts[0], NULL);
		if (text && strlen(text) > before &&
		    kt_contains(text + before, "key_sync"))
			break;
		free(text);
		cr_assert(now_s() < end, "%s: no alert", why);
		kt_sleep_ms(20);
	}
	cr_assert(kt_contains(text + before, "\"success\":false"), "%s", why);
	free(text);
	cr_assert_eq(kt_mversion(&nodes[0]), 2, "%s: served version changed",
		     why);
}

Test(cluster, tampered_older_and_foreign_keyrings_are_refused, .init = setup)
{
	struct kf_etcd *e = raw_client(PREFIX), *other = raw_client("/keyfs/o");
	struct kf_etcd_kv old = {0}, cur = {0}, foreign = {0};
	char err[KF_ERR_MAX], *out = NULL, *cerr = NULL;

	start_nodes(1);
	cr_assert_eq(kf_etcd_get(e, "store/keyring", &old, err), 0, "%s", err);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "1\n"), 0);
	cr_assert_eq(kf_etcd_get(e, "store/keyring", &cur, err), 0, "%s", err);
	/* A keyring of another prefix, same master key. */
	node_prepare(NODES, "/keyfs/o", NULL);
	cr_assert_eq(cluster_cmd(NODES, "init", &out, &cerr), 0, "%s", cerr);
	cr_assert_eq(kf_etcd_get(other, "store/keyring", &foreign, err), 0,
		     "%s", err);
	/* One flipped byte, the older generation, the other prefix's. */
	cur.value[cur.len - 5] ^= 1;
	assert_refused(e, cur.value, cur.len, "tampered");
	assert_refused(e, old.value, old.len, "older");
	assert_refused(e, foreign.value, foreign.len, "foreign");
	kf_etcd_kv_clear(&old);
	kf_etcd_kv_clear(&cur);
	kf_etcd_kv_clear(&foreign);
	kf_etcd_free(e);
	kf_etcd_free(other);
	free(out);
	free(cerr);
}

Test(cluster, a_node_with_a_wrong_master_key_refuses_and_the_others_go_on,
     .init = setup)
{
	char *key, *other = NULL, *err = NULL, *log;
	int rc;

	start_nodes(2);
	node_prepare(2, PREFIX, NULL);
	cr_assert_eq(kt_runf(&other, &err, "%s genkey", kt_keyfs()), 0);
	key = kt_path(nodes[2].dir, "master.key");
	kt_write_file(key, other, 0600);
	rc = kt_mount_start(&nodes[2], NULL);
	cr_assert_gt(rc, 0, "a node with the wrong master key started");
	log = kt_read_file(nodes[2].log, NULL);
	cr_assert(kt_contains(log, "wrong master key"), "%s", log);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "1\n"), 0);
	wait_version(2, 2);
	assert_same_phi(2);
	free(log);
	free(key);
	sodium_memzero(other, strlen(other));
	free(other);
	free(err);
}

/* --- TLS and a password user
 * ------------------------------------------------------ */

Test(cluster, nodes_reach_etcd_over_tls_with_a_certificate_and_a_password,
     .init = setup_tls)
{
	char *log;

	start_nodes(2);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "1\n"), 0);
	wait_version(2, 2);
	assert_same_phi(2);
	/* A client certificate with a CN: the gateway's trap, named. */
	with_cn = true;
	node_prepare(2, PREFIX, NULL);
	with_cn = false;
	cr_assert_gt(kt_mount_start(&nodes[2], NULL), 0);
	log = kt_read_file(nodes[2].log, NULL);
	cr_assert(kt_contains(log, "use a certificate without a CN"), "%s",
		  log);
	free(log);
}

/* --- archives on every node, bootstrap and migration
 * ---------------------------- */

/* Waits until node i's backups/ does (want) or does not list name. */
static void wait_listed(int i, const char *name, bool want)
{
	double end = now_s() + WAIT_S;

	for (;;) {
		char *names = kt_mnames(&nodes[i], "backups");
		bool has = kt_contains(names, name);

		free(names);
		if (has == want)
			return;
		cr_assert(now_s() < end, "node %d: %s %s listed", i, name,
			  want ? "never" : "still");
		kt_sleep_ms(20);
	}
}

Test(cluster, every_node_lists_and_keeps_the_same_archives, .init = setup)
{
	char *path, *copy;
	size_t len = 0;

	start_nodes(2);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/backup", "shared\n"), 0);
	wait_listed(1, "shared.json", true);
	/* A local copy on node 1's disk, not only in etcd. */
	path = kt_path(nodes[1].state, "backups/shared.json");
	copy = kt_read_file(path, &len);
	cr_assert(copy && len > 0, "node 1 keeps no copy");
	free(copy);
	free(path);
	/* Prune is cluster wide. */
	cr_assert_eq(kt_mwrite(&nodes[1], "control/prune", "0 force\n"), 0);
	wait_listed(0, "shared.json", false);
}

Test(cluster, init_is_explicit_and_never_overwrites, .init = setup)
{
	char *out = NULL, *err = NULL;

	node_prepare(0, PREFIX, NULL);
	/* No keyring in etcd: a daemon refuses, and says how to make one. */
	cr_assert_gt(kt_mount_start(&nodes[0], NULL), 0);
	out = kt_read_file(nodes[0].log, NULL);
	cr_assert(kt_contains(out, "keyfs cluster init"), "%s", out);
	free(out);
	cluster_init();
	/* Another node (an empty state_dir): etcd's keyring stays. */
	node_prepare(1, PREFIX, NULL);
	cr_assert_neq(cluster_cmd(1, "init", &out, &err), 0);
	cr_assert(kt_contains(err, "already holds a cluster keyring "
				   "(version 1, generation 1 (init by node "
				   "node0)); nothing was changed"),
		  "%s", err);
	free(out);
	free(err);
	/* And node 0's own copy is not replaced either. */
	cr_assert_neq(cluster_cmd(0, "init", &out, &err), 0);
	cr_assert(kt_contains(err, "already holds a keyring"), "%s", err);
	free(out);
	free(err);
}

Test(cluster, a_single_node_state_moves_into_the_cluster, .init = setup)
{
	struct kt_mount *m = &nodes[0];
	char *out = NULL, *err = NULL, *text, *cfg;
	char before[64], after[64];

	/* A single-node tree at version 3 with an archive. */
	kt_mount_config(m, "cluster-0", NULL, NULL);
	cfg = kt_path(m->dir, "master.key");
	kt_write_file(cfg, master_text, 0600);
	free(cfg);
	cr_assert_eq(kt_mount_start(m, NULL), 0);
	cr_assert_eq(kt_mwrite(m, "control/rotate", "1\n"), 0);
	cr_assert_eq(kt_mwrite(m, "control/rotate", "1\n"), 0);
	cr_assert_eq(kt_mwrite(m, "control/backup", "before-cluster\n"), 0);
	read_phi(0, before);
	cr_assert_eq(kt_mount_stop(m), 0);
	/* The same state_dir, now with store = etcd. */
	text = etcd_section("node0", PREFIX);
	cr_assert(asprintf(&cfg,
			   "[keyfs]\nstate_dir = %s\nmaster_key_file = "
			   "%s/master.key\nmountpoint = %s\nmode = "
			   "development\nrotate_interval = 0\nstore = "
			   "etcd\n%s",
			   m->state, m->dir, m->mnt, text) > 0);
	kt_write_file(m->cfg, cfg, 0644);
	free(cfg);
	free(text);
	cr_assert_eq(cluster_cmd(0, "init --from-state", &out, &err), 0, "%s",
		     err);
	cr_assert(kt_contains(out, "version 3"), "%s", out);
	free(out);
	free(err);
	/* A second node serves the migrated keys and lists the archive. */
	node_prepare(1, PREFIX, NULL);
	cr_assert_eq(kt_mount_start(&nodes[1], NULL), 0);
	cr_assert_eq(kt_mount_start(m, NULL), 0);
	cr_assert_eq(kt_mversion(&nodes[1]), 3);
	read_phi(1, after);
	cr_assert(sodium_memcmp(before, after, 44) == 0,
		  "the migrated cluster serves another key");
	wait_listed(1, "before-cluster.json", true);
	sodium_memzero(before, sizeof(before));
	sodium_memzero(after, sizeof(after));
}

/* --- staged rotation (README: Staged rotation) ------------------------------
 */

/* Whether every one of n nodes serves a next equal to node 0's. */
static bool same_next(int n)
{
	size_t len = 0, olen = 0;
	char *first = kt_mread(&nodes[0], "next", &len), *other;
	bool same = first && len == 44;

	for (int i = 1; i < n && same; i++) {
		other = kt_mread(&nodes[i], "next", &olen);
		same =
		    other && olen == 44 && sodium_memcmp(first, other, 44) == 0;
		if (other)
			sodium_memzero(other, olen);
		free(other);
	}
	if (first)
		sodium_memzero(first, len);
	free(first);
	return same;
}

/* Waits until every one of n nodes serves node 0's next. */
static void wait_same_next(int n)
{
	double end = now_s() + WAIT_S;

	while (!same_next(n)) {
		cr_assert(now_s() < end, "the nodes never served one next");
		kt_sleep_ms(20);
	}
}

/* Node i's status without what changes by itself (store, audit). */
static char *keyring_summary(int i)
{
	size_t len = 0;
	char *t = kt_mread(&nodes[i], "status", &len), *out;
	json_t *o = t ? json_loadb(t, len, 0, NULL) : NULL;

	free(t);
	cr_assert(o, "node %d: status unreadable", i);
	json_object_del(o, "store");
	json_object_del(o, "audit");
	out = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
	json_decref(o);
	return out;
}

/* Promotes on node i until it is accepted (a node may be a second late). */
static void promote_ok(int i)
{
	double end = now_s() + WAIT_S;
	int r;

	while ((r = kt_mwrite(&nodes[i], "control/rotate", "promote\n")) ==
	       -ETIMEDOUT)
		cr_assert(now_s() < end, "promote never accepted");
	cr_assert_eq(r, 0, "promote on node %d: %s", i, strerror(-r));
}

Test(cluster, a_promotion_waits_until_every_live_node_serves_the_staged_key,
     .init = setup)
{
	char *out = NULL, *err = NULL, *before, *after;
	int rc;

	for (int i = 0; i < NODES; i++)
		node_prepare(i, PREFIX, "stage_timeout = 2s\n");
	cluster_init();
	for (int i = 0; i < NODES; i++)
		cr_assert_eq(kt_mount_start(&nodes[i], NULL), 0,
			     "node %d did not start", i);
	/* Staged on one node, served as next by all; current unchanged. */
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "stage\n"), 0);
	wait_same_next(NODES);
	wait_version(NODES, 1);
	promote_ok(0);
	wait_version(NODES, 2);
	assert_same_phi(NODES);

	/*
	 * Node 2 frozen (SIGSTOP): its record stays in etcd (its lease
	 * lasts 10 s) but it adopts nothing, so a promotion is refused
	 * after stage_timeout, naming it, and changes nothing.
	 */
	cr_assert(kill(nodes[2].pid, SIGSTOP) == 0);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "stage\n"), 0);
	before = keyring_summary(0);
	rc = kt_ctl(&nodes[0], &out, &err, "rotate promote");
	after = keyring_summary(0);
	kill(nodes[2].pid, SIGCONT);
	cr_assert_eq(rc, 1, "promote with a frozen node succeeded: %s", out);
	cr_assert(kt_contains(err, "node2") &&
		      kt_contains(err, "stage_timeout") &&
		      !kt_contains(err, "node1"),
		  "the refusal does not name the lagging node alone: %s", err);
	cr_assert(before && after && strcmp(before, after) == 0,
		  "a refused promotion changed node 0's keyring");
	free(before);
	free(after);
	free(out);
	free(err);
	/* Thawed, it adopts the staged version; the promotion goes ahead. */
	wait_same_next(NODES);
	promote_ok(0);
	wait_version(NODES, 3);
	assert_same_phi(NODES);

	/* A node that stopped (its record deleted) is not waited for. */
	cr_assert_eq(kt_mount_stop(&nodes[1]), 0);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "stage\n"), 0);
	cr_assert_eq(kt_ctl(&nodes[0], &out, &err, "rotate promote"), 0,
		     "promote with a stopped node: %s", err);
	free(out);
	free(err);
	wait_version(1, 4);
}

/* --- master-key rotation: the two-key window --------------------------------
 */

/* Node i's configuration with master_key_next = path (NULL: without). */
static void set_master_next(int i, const char *path)
{
	char *text = kt_read_file_ok(nodes[i].cfg, NULL), *line, *out;
	char *at = strstr(text, "master_key_next = ");

	if (at) {
		char *end = strchr(at, '\n');

		memmove(at, end + 1, strlen(end + 1) + 1);
	}
	at = strstr(text, "[keyfs]\n");
	cr_assert(at, "no [keyfs] in %s", nodes[i].cfg);
	at += strlen("[keyfs]\n");
	cr_assert(asprintf(&line, "master_key_next = %s\n", path ? path : "") >
		  0);
	cr_assert(asprintf(&out, "%.*s%s%s", (int)(at - text), text,
			   path ? line : "", at) > 0);
	kt_write_file(nodes[i].cfg, out, 0644);
	free(out);
	free(line);
	free(text);
}

/* Waits until node i's record in etcd names a master_key_next. */
static void wait_prepared(int i)
{
	struct kf_etcd *e = raw_client(PREFIX);
	double end = now_s() + WAIT_S;
	char name[64], err[KF_ERR_MAX];

	snprintf(name, sizeof(name), "nodes/node%d", i);
	for (;;) {
		struct kf_etcd_kv kv = {0};
		json_t *o = NULL;
		bool ready;

		if (kf_etcd_get(e, name, &kv, err) == 0)
			o = json_loadb((const char *)kv.value, kv.len, 0, NULL);
		ready = json_is_string(json_object_get(o, "master_next"));
		json_decref(o);
		kf_etcd_kv_clear(&kv);
		if (ready)
			break;
		cr_assert(now_s() < end, "node %d never showed master_next", i);
		kt_sleep_ms(50);
	}
	kf_etcd_free(e);
}

/* The generation node i serves. */
static json_int_t served_generation(int i)
{
	json_t *s = store_status(i);
	json_int_t g = json_integer_value(json_object_get(s, "generation"));

	json_decref(s);
	return g;
}

/* The generation of the keyring in etcd (its clear header). */
static uint64_t etcd_generation(void)
{
	struct kf_etcd *e = raw_client(PREFIX);
	struct kf_etcd_kv kv = {0};
	struct kf_cluster_info info;
	char err[KF_ERR_MAX];

	cr_assert_eq(kf_etcd_get(e, KF_CLUSTER_KEYRING, &kv, err), 0, "%s",
		     err);
	cr_assert_eq(kf_cluster_peek(kv.value, kv.len, &info, err), 0, "%s",
		     err);
	kf_etcd_kv_clear(&kv);
	kf_etcd_free(e);
	return info.generation;
}

/* The keyring in etcd, byte for byte (malloc'd), its length in *len. */
static uint8_t *etcd_keyring(size_t *len)
{
	struct kf_etcd *e = raw_client(PREFIX);
	struct kf_etcd_kv kv = {0};
	char err[KF_ERR_MAX];
	uint8_t *v;

	cr_assert_eq(kf_etcd_get(e, KF_CLUSTER_KEYRING, &kv, err), 0, "%s",
		     err);
	v = kv.value;
	*len = kv.len;
	kv.value = NULL;
	kf_etcd_kv_clear(&kv);
	kf_etcd_free(e);
	return v;
}

static int rekey_node(int i, const char *key, char **out, char **err)
{
	return kt_runf(out, err, "%s rekey --new-master '%s' -c '%s'",
		       kt_keyfs(), key, nodes[i].cfg);
}

/* Node i's copy of the new master key (the same text on every node). */
static char *copy_key(int i, const char *text)
{
	char *path = kt_path(nodes[i].dir, "new-master.key");

	kt_write_file(path, text, 0600);
	return path;
}

static void wait_generation(int i, json_int_t g)
{
	double end = now_s() + WAIT_S;

	while (served_generation(i) != g) {
		cr_assert(now_s() < end, "node %d never served generation %lld",
			  i, (long long)g);
		kt_sleep_ms(20);
	}
}

static void audit_verifies(int i)
{
	char *err = NULL;

	cr_assert_eq(kt_runf(NULL, &err, "%s audit verify -c '%s'", kt_keyfs(),
			     nodes[i].cfg),
		     0, "node %d: audit verify: %s", i, err);
	free(err);
}

Test(cluster, the_master_key_rotates_node_by_node_with_a_two_key_window,
     .init = setup, .timeout = 300)
{
	char *newkey = NULL, *err = NULL, *out = NULL, *key[NODES], *mk;
	char *journal, *mk_before;
	uint8_t *before, *after;
	size_t blen = 0, alen = 0;
	uint64_t gen;

	start_nodes(NODES);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "1\n"), 0);
	wait_version(NODES, 2);
	cr_assert_eq(kt_runf(&newkey, &err, "%s genkey", kt_keyfs()), 0);
	free(err);
	err = NULL;
	for (int i = 0; i < NODES; i++)
		key[i] = copy_key(i, newkey);

	/* Nodes 1 and 2 run without the new key: the rekey is refused,
	 * naming them, and changes nothing. */
	cr_assert_eq(kt_mount_stop(&nodes[0]), 0);
	before = etcd_keyring(&blen);
	mk = kt_path(nodes[0].dir, "master.key");
	mk_before = kt_read_file_ok(mk, NULL);
	cr_assert_eq(rekey_node(0, key[0], &out, &err), 1,
		     "rekey with unprepared nodes: %s", out);
	cr_assert(kt_contains(err, "2 running nodes do not hold the new "
				   "master key") &&
		      kt_contains(err, "node1") && kt_contains(err, "node2"),
		  "%s", err);
	after = etcd_keyring(&alen);
	cr_assert(alen == blen && memcmp(after, before, blen) == 0,
		  "a refused rekey changed the keyring in etcd");
	journal = kt_path(nodes[0].state, "rekey.journal");
	cr_assert(access(journal, F_OK) != 0, "a refused rekey left a journal");
	{
		char *mk_now = kt_read_file_ok(mk, NULL);

		cr_assert(strcmp(mk_now, mk_before) == 0,
			  "a refused rekey changed the master key file");
		free(mk_now);
	}
	free(after);
	free(before);
	free(out);
	free(err);

	/* The window opens: nodes 1 and 2 restarted with master_key_next. */
	for (int i = 1; i < NODES; i++) {
		cr_assert_eq(kt_mount_stop(&nodes[i]), 0);
		set_master_next(i, key[i]);
		kt_mount_start_ok(&nodes[i]);
		wait_prepared(i);
	}
	cr_assert_eq(rekey_node(0, key[0], &out, &err), 0, "rekey: %s", err);
	cr_assert(kt_contains(out, "sealed under the new key"), "%s", out);
	free(out);
	free(err);
	gen = etcd_generation();
	/* The running nodes adopt the keyring under the new key. */
	for (int i = 1; i < NODES; i++)
		wait_generation(i, (json_int_t)gen);
	kt_mount_start_ok(&nodes[0]);
	assert_same_phi(NODES);
	/* A node still in the window seals under the cluster's key now. */
	cr_assert_eq(kt_mwrite(&nodes[1], "control/rotate", "1\n"), 0);
	wait_version(NODES, 3);
	assert_same_phi(NODES);
	/* Node 1's archive of it, copied to node 0 (sorted: newest last). */
	{
		char *names = kt_mnames(&nodes[1], "backups"), *last;

		cr_assert(names && *names, "node 1 lists no archive");
		names[strlen(names) - 1] = 0;
		last = strrchr(names, '\n');
		wait_listed(0, last ? last + 1 : names, true);
		free(names);
	}
	/* Everything node 0 keeps opens under the new key alone. */
	cr_assert_eq(kt_archives_failing(&nodes[0], nodes[0].cfg, 2), 0,
		     "an archive on node 0 does not open under the new key");

	/* Then each other node in turn: its own files only. */
	for (int i = 1; i < NODES; i++) {
		cr_assert_eq(kt_mount_stop(&nodes[i]), 0);
		cr_assert_eq(rekey_node(i, key[i], &out, &err), 0,
			     "rekey of node %d: %s", i, err);
		cr_assert(kt_contains(out, "already under the new key"), "%s",
			  out);
		free(out);
		free(err);
		set_master_next(i, NULL);
		kt_mount_start_ok(&nodes[i]);
		cr_assert_eq(kt_archives_failing(&nodes[i], nodes[i].cfg, 2), 0,
			     "an archive on node %d does not open", i);
	}
	cr_assert_eq(kt_mwrite(&nodes[2], "control/rotate", "1\n"), 0);
	wait_version(NODES, 4);
	assert_same_phi(NODES);
	for (int i = 0; i < NODES; i++)
		audit_verifies(i);

	/* A node that was away with the old key alone cannot open it. */
	node_prepare(3, PREFIX, NULL);
	cr_assert_gt(kt_mount_start(&nodes[3], NULL), 0,
		     "a node with the old master key started");
	{
		char *log = kt_read_file_ok(nodes[3].log, NULL);

		cr_assert(kt_contains(log, "wrong master key"), "%s", log);
		free(log);
	}
	for (int i = 0; i < NODES; i++)
		free(key[i]);
	free(journal);
	free(mk);
	free(mk_before);
	sodium_memzero(newkey, strlen(newkey));
	free(newkey);
}

Test(cluster, a_cluster_rekey_killed_at_random_points_finishes_when_run_again,
     .init = setup, .timeout = 300)
{
	char phi[64], again[64], *mk, *journal, *err = NULL, *out = NULL;
	double t0, full;
	int interrupted = 0;

	start_nodes(1);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/rotate", "1\n"), 0);
	cr_assert_eq(kt_mwrite(&nodes[0], "control/backup", "one\n"), 0);
	read_phi(0, phi);
	cr_assert_eq(kt_mount_stop(&nodes[0]), 0);
	mk = kt_path(nodes[0].dir, "master.key");
	journal = kt_path(nodes[0].state, "rekey.journal");
	/* One whole run sets the range of the random delays. */
	{
		char *key = kt_genkey_file(nodes[0].dir, "k0.key");

		t0 = now_s();
		cr_assert_eq(rekey_node(0, key, &out, &err), 0, "%s", err);
		full = now_s() - t0;
		free(out);
		free(err);
		free(key);
	}
	kt_seed();
	for (int i = 1; i <= 12; i++) {
		char name[32], *key, *text, *want;

		snprintf(name, sizeof(name), "k%d.key", i);
		key = kt_genkey_file(nodes[0].dir, name);
		kt_rekey_killed(nodes[0].cfg, key,
				(long)(rand() % (int)(full * 1.2e6 + 1)));
		text = kt_read_file_ok(mk, NULL);
		want = kt_read_file_ok(key, NULL);
		if (strcmp(text, want) != 0 || access(journal, F_OK) == 0) {
			interrupted++;
			cr_assert_eq(rekey_node(0, key, &out, &err), 0,
				     "run %d, again: %s", i, err);
			free(out);
			free(err);
		}
		free(text);
		text = kt_read_file_ok(mk, NULL);
		cr_assert(strcmp(text, want) == 0, "run %d: not finished", i);
		audit_verifies(0);
		cr_assert_eq(kt_archives_failing(&nodes[0], nodes[0].cfg, 2), 0,
			     "run %d: an archive does not open", i);
		free(text);
		free(want);
		free(key);
	}
	cr_assert(interrupted >= 2, "only %d of 12 runs were interrupted",
		  interrupted);
	/* The same keys, from the local copy and from etcd for a new node
	 * that holds only the last key. */
	kt_mount_start_ok(&nodes[0]);
	read_phi(0, again);
	cr_assert(sodium_memcmp(phi, again, 44) == 0,
		  "node 0 serves another derived/phi after the rekeys");
	node_prepare(1, PREFIX, NULL);
	{
		char *key = kt_path(nodes[1].dir, "master.key");
		char *text = kt_read_file_ok(mk, NULL);

		kt_write_file(key, text, 0600);
		sodium_memzero(text, strlen(text));
		free(text);
		free(key);
	}
	kt_mount_start_ok(&nodes[1]);
	assert_same_phi(2);
	sodium_memzero(phi, sizeof(phi));
	sodium_memzero(again, sizeof(again));
	free(journal);
	free(mk);
}
