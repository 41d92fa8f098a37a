// SPDX-License-Identifier: MIT
/*
 * cluster_wait: with store = etcd, a staged version is promoted only once
 * every live node serves it (README: Staged rotation), so that a record
 * encrypted under the new current key on one node can be decrypted on all.
 * A node is live while its record is in etcd: the heartbeat renews its
 * 10-second lease every second, and a node that stops deletes it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "manager_private.h"

#define WAIT_POLL_MS 100 /* between two reads of the node records */

/*
 * The live nodes other than this one whose record shows a generation
 * below gen, as "a, b" into names (size bytes): their count, or -errno.
 */
static int lagging_nodes(struct kf_manager *m, uint64_t gen, char *names,
			 size_t size, char err[KF_ERR_MAX])
{
	json_t *nodes = NULL, *o;
	size_t len = 0, i;
	int r, lagging = 0;

	names[0] = 0;
	r = kf_mgr_cluster_node_records(m->cl->op, &nodes, err);
	if (r < 0)
		return r;
	json_array_foreach(nodes, i, o)
	{
		const char *node =
		    json_string_value(json_object_get(o, "node"));
		json_int_t g =
		    json_integer_value(json_object_get(o, "generation"));

		if (!node || strcmp(node, m->cfg->etcd.node) == 0 ||
		    (uint64_t)g >= gen)
			continue;
		lagging++;
		if (len < size)
			len += (size_t)snprintf(
			    names + len, size - len, "%s%s (generation %lld)",
			    len ? ", " : "", node, (long long)g);
	}
	json_decref(nodes);
	return lagging;
}

int kf_mgr_cluster_wait_served(struct kf_manager *m, uint32_t staged,
			       char err[KF_ERR_MAX])
{
	uint64_t gen = m->cl->info.generation;
	int64_t end = kf_time_mono_ms() + m->cfg->stage_timeout * 1000;
	struct timespec pause = {0, WAIT_POLL_MS * 1000000L};
	char names[KF_ERR_MAX / 2];
	int r;

	r = kf_mgr_cluster_usable(m, err);
	if (r < 0)
		return r;
	while ((r = lagging_nodes(m, gen, names, sizeof(names), err)) > 0 &&
	       kf_time_mono_ms() < end)
		nanosleep(&pause, NULL);
	if (r < 0) {
		kf_err_prefix(err,
			      "cannot promote: reading the node records: ");
		return r;
	}
	if (r == 0)
		return 0;
	kf_err_set(err,
		   "cannot promote: %d node%s still not serving staged "
		   "version %" PRIu32 " (generation %" PRIu64
		   ") after stage_timeout %" PRId64 "s: %s; keyring "
		   "unchanged",
		   r, r == 1 ? " is" : "s are", staged, gen,
		   m->cfg->stage_timeout, names);
	return -ETIMEDOUT;
}
