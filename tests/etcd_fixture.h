/* SPDX-License-Identifier: MIT */
/*
 * A real 3-member etcd cluster on loopback for one test (notes/etcd.md §5):
 * free ports found by binding port 0, data under a kt_tmpdir of
 * $KEYFS_TEST_TMP, members killed with SIGKILL and their data removed at
 * teardown.  Give the Test `.init = kt_etcd_setup, .fini = kt_etcd_teardown`
 * (the fini runs even when an assertion fails; a member outlives no test
 * process: each gets PR_SET_PDEATHSIG SIGKILL).  Progress notifications
 * every 500 ms; with auth on, tokens expire after 2 s of disuse.
 *
 * kt_etcd_setup_tls makes the same cluster over https, with client
 * certificates and authentication on (notes/etcd.md, "The CN trap").
 */
#ifndef KT_ETCD_FIXTURE_H
#define KT_ETCD_FIXTURE_H

#include <stdbool.h>
#include <sys/types.h>

#define KT_ETCD_MEMBERS 3

/* The password user kt_etcd_enable_auth makes: READWRITE on /keyfs/. */
#define KT_ETCD_USER "keyfs"
/* Its password under kt_etcd_setup_tls. */
#define KT_ETCD_PASSWORD "keyfs-pw"
/* etcd's root user (its password), who does the setting up. */
#define KT_ETCD_ROOT_PASSWORD "rootpw"

struct kt_etcd {
	char *dir;				/* the data folder of all */
	char *client[KT_ETCD_MEMBERS];		/* "http(s)://127.0.0.1:PORT" */
	pid_t pid[KT_ETCD_MEMBERS];		/* 0 once killed */
	const char *endpoints[KT_ETCD_MEMBERS]; /* = client, for configs */
	/* kt_etcd_setup_tls only (else NULL): PEM files in dir/pki, made by
	 * openssl for this test. */
	char *ca;		/* the CA that signed every certificate */
	char *cert, *key;	/* a client certificate without a CN */
	char *cn_cert, *cn_key; /* a client certificate with a CN */
};

/* The cluster of the running test (started by kt_etcd_setup). */
extern struct kt_etcd kt_etcd;

/* Starts the cluster and waits until every member reports healthy
 * (asserts, within 20 s). */
void kt_etcd_setup(void);

/*
 * kt_etcd_setup over https: makes a CA, a server certificate for IP
 * 127.0.0.1 and the two client certificates (openssl), starts the members
 * with --client-cert-auth (their peers stay on http), and turns
 * authentication on with kt_etcd_enable_auth(KT_ETCD_PASSWORD) (asserts).
 */
void kt_etcd_setup_tls(void);

/* Runs etcdctl against member 0 as root (once authentication is on; over
 * https with the client certificate without a CN); asserts it succeeds. */
void kt_etcdctl(const char *args);

/*
 * Adds root and KT_ETCD_USER (with password, any characters) with a role
 * of READWRITE on every key under /keyfs/, then turns authentication on
 * (asserts).
 */
void kt_etcd_enable_auth(const char *password);

/* SIGKILLs every member still running, reaps it, removes the data. */
void kt_etcd_teardown(void);

/* SIGKILLs member i and reaps it. */
void kt_etcd_kill(int i);

/* Index of the current leader (asserts there is one within 5 s). */
int kt_etcd_leader(void);

/* A TCP port on 127.0.0.1 that nothing listens on (just released). */
int kt_free_port(void);

#endif
