/* SPDX-License-Identifier: MIT */
/*
 * A real 3-member etcd cluster on loopback for one test (notes/etcd.md §5):
 * free ports found by binding port 0, data under a kt_tmpdir of
 * $KEYFS_TEST_TMP, members killed with SIGKILL and their data removed at
 * teardown.  Give the Test `.init = kt_etcd_setup, .fini = kt_etcd_teardown`
 * (the fini runs even when an assertion fails; a member outlives no test
 * process: each gets PR_SET_PDEATHSIG SIGKILL).  Progress notifications
 * every 500 ms; with auth on, tokens expire after 2 s of disuse.
 */
#ifndef KT_ETCD_FIXTURE_H
#define KT_ETCD_FIXTURE_H

#include <stdbool.h>
#include <sys/types.h>

#define KT_ETCD_MEMBERS 3

struct kt_etcd {
	char *dir;				/* the data folder of all */
	char *client[KT_ETCD_MEMBERS];		/* "http://127.0.0.1:PORT" */
	pid_t pid[KT_ETCD_MEMBERS];		/* 0 once killed */
	const char *endpoints[KT_ETCD_MEMBERS]; /* = client, for configs */
};

/* The cluster of the running test (started by kt_etcd_setup). */
extern struct kt_etcd kt_etcd;

/* Starts the cluster and waits until every member reports healthy
 * (asserts, within 20 s). */
void kt_etcd_setup(void);

/* SIGKILLs every member still running, reaps it, removes the data. */
void kt_etcd_teardown(void);

/* SIGKILLs member i and reaps it. */
void kt_etcd_kill(int i);

/* Index of the current leader (asserts there is one within 5 s). */
int kt_etcd_leader(void);

/* A TCP port on 127.0.0.1 that nothing listens on (just released). */
int kt_free_port(void);

#endif
