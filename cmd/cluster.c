// SPDX-License-Identifier: MIT
/*
 * cluster: `keyfs cluster init [--from-state]` and `keyfs cluster status`
 * (store = etcd, DESIGN.md §9).  init makes the cluster keyring -- the one
 * way it comes to exist -- and status shows what etcd holds and every
 * node's record without a mount or the master key.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "cluster.h"
#include "common.h"
#include "etcd.h"
#include "log.h"
#include "manager.h"

static const char usage[] = "cluster init [--from-state] [-c FILE] | keyfs "
			    "cluster status [-c FILE]";

static int cluster_init(const struct kf_config *cfg, bool from_state)
{
	struct kf_manager *m = NULL;
	struct kf_keyring *kr;
	char err[KF_ERR_MAX];
	json_t *info, *store;

	if (kf_manager_cluster_init(cfg, from_state, &m, err) < 0) {
		fprintf(stderr, "keyfs cluster: %s\n", err);
		return 1;
	}
	kr = kf_manager_keyring(m);
	info = kf_manager_info(m);
	store = json_object_get(info, "store");
	printf("cluster keyring created under %s: version %" PRIu32
	       ", generation %" JSON_INTEGER_FORMAT " (node %s)\n",
	       cfg->etcd.prefix, kf_keyring_current_version(kr),
	       json_integer_value(json_object_get(store, "generation")),
	       cfg->etcd.node);
	json_decref(info);
	kf_keyring_unref(kr);
	kf_manager_close(m);
	return 0;
}

/* One node's record as a line. */
static void print_node(json_t *o)
{
	printf("  %-24s version %-6" JSON_INTEGER_FORMAT
	       " generation %-6" JSON_INTEGER_FORMAT " %-9s seen %s\n",
	       json_string_value(json_object_get(o, "node")),
	       json_integer_value(json_object_get(o, "version")),
	       json_integer_value(json_object_get(o, "generation")),
	       json_string_value(json_object_get(o, "state")),
	       json_string_value(json_object_get(o, "seen")));
}

static int cluster_status(const struct kf_config *cfg)
{
	struct kf_etcd *c = NULL;
	struct kf_etcd_kv kv = {0}, *nodes = NULL;
	struct kf_cluster_info info;
	char err[KF_ERR_MAX], ts[KF_RFC3339_LEN + 1];
	size_t n = 0;
	int r, rc = 1;

	if (kf_cluster_client(cfg, &c, err) < 0)
		goto fail;
	r = kf_etcd_get(c, KF_CLUSTER_KEYRING, &kv, err);
	if (r == -ENOENT) {
		printf("prefix %s: no cluster keyring (keyfs cluster init "
		       "makes one)\n",
		       cfg->etcd.prefix);
	} else if (r < 0) {
		goto fail;
	} else if (kf_cluster_peek(kv.value, kv.len, &info, err) < 0) {
		goto fail;
	} else {
		kf_time_rfc3339(info.created, ts);
		printf("prefix %s: version %" PRIu32 ", generation %" PRIu64
		       " (%s by node %s at %s)\n",
		       cfg->etcd.prefix, info.version, info.generation,
		       kf_cluster_change_name(info.change), info.node, ts);
	}
	if (kf_etcd_list(c, KF_CLUSTER_NODES, 0, &nodes, &n, NULL, err) < 0)
		goto fail;
	printf("nodes: %zu\n", n);
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_loadb((const char *)nodes[i].value,
				       nodes[i].len, 0, NULL);

		if (json_is_object(o))
			print_node(o);
		json_decref(o);
	}
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "keyfs cluster: %s\n", err);
out:
	kf_etcd_kvs_free(nodes, n);
	kf_etcd_kv_clear(&kv);
	kf_etcd_free(c);
	return rc;
}

int kf_cli_cluster(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, 0, 'c'},
	    {"from-state", no_argument, 0, 'S'},
	    {0, 0, 0, 0}};
	const char *path = NULL, *sub;
	struct kf_config *cfg;
	bool from_state = false;
	int c, rc;

	/* Options anywhere: `cluster -c FILE init` as `cluster init -c FILE`
	 * (keyfs -c FILE cluster ... puts -c first). */
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		if (c == 'c')
			path = optarg;
		else if (c == 'S')
			from_state = true;
		else
			return kf_cmd_usage("cluster", usage);
	}
	sub = optind < argc ? argv[optind] : "";
	if (optind + 1 != argc ||
	    (strcmp(sub, "init") && strcmp(sub, "status")) ||
	    (from_state && strcmp(sub, "init")))
		return kf_cmd_usage("cluster", usage);
	cfg = kf_cmd_config("cluster", path);
	if (!cfg)
		return 1;
	if (cfg->store != KF_STORE_TYPE_ETCD) {
		kf_config_free(cfg);
		return kf_cmd_fail("cluster", "the configuration has store = "
					      "file; set store = etcd and an "
					      "[etcd] section");
	}
	kf_log_stderr_level(LOG_WARNING);
	rc = strcmp(sub, "init") == 0 ? cluster_init(cfg, from_state)
				      : cluster_status(cfg);
	kf_config_free(cfg);
	return rc;
}
