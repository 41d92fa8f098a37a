// SPDX-License-Identifier: MIT
/*
 * rekey: keyfs rekey --new-master FILE, the master-key rotation with the
 * daemon stopped (kf_manager_rekey; README: Master-key rotation).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "log.h"
#include "manager.h"

static const char rekey_usage[] = "rekey --new-master FILE [-c FILE] (with "
				  "the daemon stopped)";

int kf_cli_rekey(int argc, char **argv)
{
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct kf_manager_rekey_result res;
	struct kf_cmd_opts o = {0};
	struct kf_config *cfg;
	char err[KF_ERR_MAX];
	int r;

	if (kf_cmd_parse_opts(argc, argv, KF_CMD_OPT_NEW_MASTER, &o) < 0)
		return 2;
	if (!o.new_master || !*o.new_master || optind != argc)
		return kf_cmd_usage("rekey", rekey_usage);
	cfg = kf_cmd_config("rekey", o.config);
	if (!cfg)
		return 1;
	kf_log_stderr_level(LOG_WARNING);
	r = kf_manager_rekey(cfg, o.new_master, &self, &res, err);
	kf_config_free(cfg);
	if (r < 0) {
		fprintf(stderr, "keyfs rekey: %s\n", err);
		return 1;
	}
	printf("rekeyed: master key %s -> %s%s; %zu archives (%zu "
	       "rewritten), %" PRIu64 " audit files (%" PRIu64
	       " rewritten), state %s\n",
	       res.old_fpr, res.new_fpr, res.resumed ? " (resumed)" : "",
	       res.archives, res.archives_rewritten, res.audit_files,
	       res.audit_files_rewritten, res.state ? "sealed" : "absent");
	if (res.cluster)
		printf("cluster: keyring generation %" PRIu64 " %s; %zu "
		       "archives in etcd (%zu rewritten)\n",
		       res.cluster_generation,
		       res.cluster_switched ? "sealed under the new key"
					    : "already under the new key",
		       res.cluster_archives, res.cluster_archives_rewritten);
	if (res.from_env)
		printf("the old key came from KEYFS_MASTER_KEY: set it to the "
		       "new key before the next start\n");
	else if (res.installed)
		printf("master_key_file now holds the new key\n");
	return 0;
}
