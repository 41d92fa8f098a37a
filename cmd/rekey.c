// SPDX-License-Identifier: MIT
/*
 * rekey: keyfs rekey --new-master FILE, the master-key rotation with the
 * daemon stopped (kf_manager_rekey; README: Master-key rotation).
 */
#include <getopt.h>
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
	static const struct option longopts[] = {
	    {"config", required_argument, 0, 'c'},
	    {"new-master", required_argument, 0, 'n'},
	    {0, 0, 0, 0}};
	struct kf_caller self = {getuid(), getgid(), getpid()};
	struct kf_manager_rekey_result res;
	const char *config = NULL, *next = NULL;
	struct kf_config *cfg;
	char err[KF_ERR_MAX];
	int c, r;

	optind = 1;
	opterr = 0; /* one line of our own, the option not echoed */
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'n':
			next = optarg;
			break;
		default:
			return kf_cmd_usage("rekey", rekey_usage);
		}
	}
	if (!next || !*next || optind != argc)
		return kf_cmd_usage("rekey", rekey_usage);
	cfg = kf_cmd_config("rekey", config);
	if (!cfg)
		return 1;
	kf_log_stderr_level(LOG_WARNING);
	r = kf_manager_rekey(cfg, next, &self, &res, err);
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
	if (res.from_env)
		printf("the old key came from KEYFS_MASTER_KEY: set it to the "
		       "new key before the next start\n");
	else if (res.installed)
		printf("master_key_file now holds the new key\n");
	return 0;
}
