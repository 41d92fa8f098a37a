// SPDX-License-Identifier: MIT
/* keyfs: one binary, one function per command. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "cli.h"
#include "env.h"
#include "log.h"
#include "mount.h"
#include "util.h"

/* keyfs --help: usage_head, then ctl's lines (kf_cli_ctl_help), usage_tail. */
static const char usage_head[] =
    "usage: keyfs COMMAND [ARGS]\n"
    "\n"
    "  mount [-c FILE] [-f] [-o OPTS] [MOUNTPOINT]\n"
    "                      serve the key tree (the daemon); -f stays in the\n"
    "                      foreground (and tells systemd when it is ready:\n"
    "                      Type=notify); SIGTERM/SIGINT unmount cleanly\n"
    "  CONFIG MOUNTPOINT [-o OPTS]\n"
    "                      what mount -t fuse.keyfs and fstab run (through\n"
    "                      mount.fuse3): mount -c CONFIG, detached\n"
    "  genkey              print a new key (Fernet text form)\n"
    "  validate [KEY|-]    exit 0 and \"valid\", or exit 1 and the reason\n"
    "  derive PURPOSE      key on standard input, purpose key out\n";
static const char usage_tail[] =
    "                      drive a mounted tree and print what happened\n"
    "  backup list|verify FILE [-c FILE]\n"
    "                      list archives, or verify one with the master key\n"
    "  restore --offline FILE [force] [-c FILE]\n"
    "                      restore an archive while the daemon is stopped\n"
    "  audit verify [FILE|DIR...] [--no-anchor] [-c FILE]\n"
    "                      check the audit log's chain and anchor across\n"
    "                      its segments (a DIR: those in it; none: the\n"
    "                      configured log's folder); --no-anchor: an\n"
    "                      archived copy, end unchecked\n"
    "  export-env [-c FILE] [--mount DIR]\n"
    "                      print ENCRYPTION_KEY=... lines for the old scheme\n"
    "  cluster init [--from-state] [-c FILE]\n"
    "                      store = etcd: create the cluster keyring (from\n"
    "                      state_dir, ENCRYPTION_KEY, or generated in\n"
    "                      development mode); refused if one exists\n"
    "  cluster status [-c FILE]\n"
    "                      the cluster keyring's version and every node's\n"
    "  --help, --version\n"
    "\n"
    "Configuration: -c FILE, else $KEYFS_CONFIG, else /etc/keyfs/keyfs.ini,\n"
    "else the embedded development configuration (etc/keyfs-dev.ini).\n";

static void print_usage(FILE *f)
{
	fputs(usage_head, f);
	kf_cli_ctl_help(f);
	fputs(usage_tail, f);
}

/*
 * mount's options, anywhere among its words (mount.fuse3 puts -o after the
 * positional words): -c, -f, -o into o, the other words into ret_words
 * (at most max).  Returns the number of words, -1 after --help (printed),
 * or -2 on a usage error (printed).
 */
static int mount_args(int argc, char **argv, struct kf_mount_opts *o,
		      char **ret_words, int max)
{
	static const struct option longopts[] = {{"help", no_argument, 0, 'h'},
						 {0, 0, 0, 0}};
	int c, n = 0;

	optind = 1;
	opterr = 0;
	/* "-" first: every word that is not an option comes back as 1. */
	while ((c = getopt_long(argc, argv, "-c:fo:h", longopts, NULL)) != -1) {
		switch (c) {
		case 1:
			if (n == max) {
				fprintf(stderr,
					"keyfs mount: one MOUNTPOINT at "
					"most\n");
				return -2;
			}
			ret_words[n++] = optarg;
			break;
		case 'c':
			o->config_path = optarg;
			break;
		case 'f':
			o->foreground = true;
			break;
		case 'o':
			o->extra = optarg;
			break;
		case 'h':
			print_usage(stdout);
			return -1;
		default:
			fprintf(stderr,
				"keyfs mount: usage: keyfs mount [-c FILE] "
				"[-f] [-o OPTS] [MOUNTPOINT]\n");
			return -2;
		}
	}
	/* After "--", the rest are words. */
	for (; optind < argc; optind++) {
		if (n == max) {
			fprintf(stderr,
				"keyfs mount: one MOUNTPOINT at most\n");
			return -2;
		}
		ret_words[n++] = argv[optind];
	}
	return n;
}

/* keyfs mount [-c FILE] [-f] [-o OPTS] [MOUNTPOINT] */
static int cmd_mount(int argc, char **argv)
{
	struct kf_mount_opts o = {0};
	char *words[1];
	int n = mount_args(argc, argv, &o, words, 1);

	if (n < 0)
		return n == -1 ? 0 : 2;
	if (n == 1)
		o.mountpoint = words[0];
	return kf_mount_main(&o);
}

/*
 * Whether `keyfs WORD ...` is the form mount(8) runs, through mount.fuse3,
 * for `mount -t fuse.keyfs CONFIG MOUNTPOINT` and a fuse.keyfs line of
 * fstab: WORD, which is no command, names an existing regular file.
 */
static bool is_mount_source(const char *word)
{
	struct stat st;

	return stat(word, &st) == 0 && S_ISREG(st.st_mode);
}

/*
 * keyfs CONFIG MOUNTPOINT [-o OPTS]: keyfs mount -c CONFIG -o OPTS
 * MOUNTPOINT, detached (mount(8) waits for it to return).  argv[0] is
 * CONFIG.
 */
static int cmd_mount_source(int argc, char **argv)
{
	struct kf_mount_opts o = {0};
	char *words[1];
	int n = mount_args(argc, argv, &o, words, 1);

	if (n < 0)
		return n == -1 ? 0 : 2;
	if (n != 1 || o.config_path) {
		fprintf(stderr, "keyfs: usage: keyfs CONFIG MOUNTPOINT "
				"[-o OPTS]\n");
		return 2;
	}
	o.config_path = argv[0];
	o.mountpoint = words[0];
	return kf_mount_main(&o);
}

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
} commands[] = {
    {"mount", cmd_mount},
    {"genkey", kf_cli_genkey},
    {"validate", kf_cli_validate},
    {"derive", kf_cli_derive},
    {"ctl", kf_cli_ctl},
    {"backup", kf_cli_backup},
    {"restore", kf_cli_restore},
    {"audit", kf_cli_audit},
    {"export-env", kf_cli_export_env},
    {"cluster", kf_cli_cluster},
};

int main(int argc, char **argv)
{
	/* Every command may hold a key: never dump core, never be traced. */
	kf_harden_process();
	if (sodium_init() < 0) {
		fprintf(stderr, "keyfs: libsodium failed to initialise\n");
		return 1;
	}
	/* Before anything can start a child: secrets leave the environment. */
	if (kf_env_take() < 0) {
		fprintf(stderr, "keyfs: out of memory\n");
		return 1;
	}
	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		print_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("keyfs %s\n", KF_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	if (is_mount_source(argv[1]))
		return cmd_mount_source(argc - 1, argv + 1);
	/* Not echoed: a mistyped line may hold a key. */
	fprintf(stderr, "keyfs: unknown command (see keyfs --help)\n");
	return 2;
}
