// SPDX-License-Identifier: MIT
/*
 * keyfs: one binary, one function per command.  main takes the options
 * that come before the command (-c FILE, --help, --version), answers
 * `keyfs COMMAND --help`, and hands the rest to the command.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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
    "usage: keyfs [-c FILE] COMMAND [ARGS]\n"
    "\n"
    "  mount [-c FILE] [-f] [-o OPTS] [MOUNTPOINT]\n"
    "                      serve the key tree (the daemon); -f stays in the\n"
    "                      foreground (and tells systemd when it is ready:\n"
    "                      Type=notify); SIGTERM/SIGINT unmount cleanly\n"
    "  CONFIG MOUNTPOINT [-o OPTS]\n"
    "                      what mount -t fuse.keyfs and fstab run (through\n"
    "                      mount.fuse3): mount -c CONFIG, detached\n"
    "  genkey              print a new key (Fernet text form)\n"
    "  recovery-keygen --public FILE --private FILE\n"
    "                      a break-glass recovery key pair (X25519): the\n"
    "                      public half for recovery_public_key, the private\n"
    "                      half kept offline; never replaces a file\n"
    "  validate [KEY|-]    exit 0 and \"valid\", or exit 1 and the reason\n"
    "  derive PURPOSE      key on standard input, purpose key out\n";
static const char usage_tail[] =
    "                      drive a mounted tree and print what happened;\n"
    "                      status: a summary, --json: the status object;\n"
    "                      wait: block until the key version changes (from\n"
    "                      N), print it; exit 124 after --timeout S\n"
    "  backup list|verify NAME|FILE [-c FILE]\n"
    "                      list archives, or verify one with the master key\n"
    "  restore --offline NAME|FILE [force] [-c FILE]\n"
    "                      restore an archive while the daemon is stopped\n"
    "  restore --offline --recovery-key FILE NAME|FILE [-c FILE]\n"
    "                      break-glass: the master key is lost; open the\n"
    "                      archive's recovery seal with the private key and\n"
    "                      seal it under the configured (new) master key\n"
    "  audit verify [FILE|DIR...] [--no-anchor] [-c FILE]\n"
    "                      check the audit log's chain and anchor across\n"
    "                      its segments (a DIR: those in it; none: the\n"
    "                      configured log's folder); --no-anchor: an\n"
    "                      archived copy, end unchecked\n"
    "  rekey --new-master FILE [-c FILE]\n"
    "                      master-key rotation while the daemon is stopped:\n"
    "                      archives, audit log and state sealed anew under\n"
    "                      FILE's key, then master_key_file replaced; run\n"
    "                      it again after a crash to finish\n"
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
    "else the embedded development configuration (etc/keyfs-dev.ini).\n"
    "-c FILE may come before the command too.  keyfs COMMAND --help shows\n"
    "one command; keyfs(8) and keyfs.ini(5) tell the rest.\n";

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
	bool config; /* takes -c FILE */
} commands[] = {
    {"mount", cmd_mount, true},
    {"genkey", kf_cli_genkey, false},
    {"recovery-keygen", kf_cli_recovery_keygen, false},
    {"validate", kf_cli_validate, false},
    {"derive", kf_cli_derive, false},
    {"ctl", kf_cli_ctl, true},
    {"backup", kf_cli_backup, true},
    {"restore", kf_cli_restore, true},
    {"audit", kf_cli_audit, true},
    {"rekey", kf_cli_rekey, true},
    {"export-env", kf_cli_export_env, true},
    {"cluster", kf_cli_cluster, true},
};

/*
 * keyfs CMD --help: the blocks of keyfs --help about c -- a line "  NAME
 * ..." and the lines indented deeper that follow it -- with "keyfs "
 * before the name.  Exit status 0.
 */
static int command_usage(const struct command *c)
{
	char *text = NULL, *line, *save = NULL;
	size_t size = 0, n = strlen(c->name);
	bool in = false;
	FILE *f = open_memstream(&text, &size);

	if (!f) {
		fprintf(stderr, "keyfs: out of memory\n");
		return 1;
	}
	print_usage(f);
	if (fclose(f) != 0 || !text) {
		free(text);
		fprintf(stderr, "keyfs: out of memory\n");
		return 1;
	}
	printf("usage:\n");
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		size_t indent = strspn(line, " ");

		if (indent == 2) {
			in = strncmp(line + 2, c->name, n) == 0 &&
			     (line[2 + n] == ' ' || line[2 + n] == 0);
			if (in)
				printf("  keyfs %s\n", line + 2);
		} else if (indent < 2) {
			in = false;
		} else if (in) {
			printf("      %s\n", line);
		}
	}
	free(text);
	if (c->config)
		printf("\n-c FILE may also come first: keyfs -c FILE %s ...\n",
		       c->name);
	printf("See keyfs(8).\n");
	return 0;
}

/*
 * Whether the arguments of a command ask for its usage: --help or -h
 * before "--", not as the value of an option.
 */
static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0)
			return true;
		if (strcmp(argv[i], "-c") == 0 ||
		    strcmp(argv[i], "--config") == 0 ||
		    strcmp(argv[i], "--mount") == 0)
			i++;
	}
	return false;
}

/*
 * Runs c with "-c config" put right after its name, so `keyfs -c FILE CMD
 * ARGS` is `keyfs CMD -c FILE ARGS` (a -c among ARGS comes later and wins).
 */
static int run_with_config(const struct command *c, const char *config,
			   int argc, char **argv)
{
	char **args = calloc((size_t)argc + 3, sizeof(*args));
	int rc;

	if (!args) {
		fprintf(stderr, "keyfs: out of memory\n");
		return 1;
	}
	args[0] = argv[0];
	args[1] = "-c";
	args[2] = (char *)config;
	memcpy(args + 3, argv + 1, (size_t)(argc - 1) * sizeof(*args));
	rc = c->run(argc + 2, args);
	free(args);
	return rc;
}

/*
 * The options before the command: -c FILE (also -cFILE, --config FILE,
 * --config=FILE) into *ret_config.  The index of the command word; 0 when
 * main is done (*ret_rc is the exit status), after --help or --version or
 * one line on standard error.
 */
static int global_options(int argc, char **argv, const char **ret_config,
			  int *ret_rc)
{
	int i = 1;

	*ret_rc = 0;
	while (i < argc && argv[i][0] == '-') {
		const char *a = argv[i];

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			print_usage(stdout);
			return 0;
		}
		if (strcmp(a, "--version") == 0) {
			printf("keyfs %s\n", KF_VERSION);
			return 0;
		}
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc)
				break;
			*ret_config = argv[i + 1];
			i += 2;
		} else if (strncmp(a, "--config=", 9) == 0) {
			*ret_config = a + 9;
			i++;
		} else if (strncmp(a, "-c", 2) == 0) {
			*ret_config = a + 2;
			i++;
		} else {
			/* Not echoed: a mistyped line may hold a key. */
			fprintf(stderr, "keyfs: unknown option (see keyfs "
					"--help)\n");
			*ret_rc = 2;
			return 0;
		}
	}
	if (i >= argc) {
		if (argc > 1)
			fprintf(stderr, "keyfs: no command after the options "
					"(see keyfs --help)\n");
		else
			print_usage(stderr);
		*ret_rc = 2;
		return 0;
	}
	return i;
}

int main(int argc, char **argv)
{
	const struct command *c = NULL;
	const char *config = NULL;
	int i, rc;

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
	i = global_options(argc, argv, &config, &rc);
	if (i == 0)
		return rc;
	if (strcmp(argv[i], "help") == 0) {
		print_usage(stdout);
		return 0;
	}
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
		if (strcmp(argv[i], commands[k].name) == 0)
			c = &commands[k];
	if (!c && is_mount_source(argv[i]) && !config)
		return cmd_mount_source(argc - i, argv + i);
	if (!c) {
		/* Not echoed: a mistyped line may hold a key. */
		fprintf(stderr, "keyfs: unknown command (see keyfs --help)\n");
		return 2;
	}
	/* mount answers its own --help (cmd_mount). */
	if (c->run != cmd_mount && wants_help(argc - i, argv + i))
		return command_usage(c);
	if (!config)
		return c->run(argc - i, argv + i);
	if (!c->config) {
		fprintf(stderr,
			"keyfs %s: takes no -c FILE (it reads no "
			"configuration)\n",
			c->name);
		return 2;
	}
	return run_with_config(c, config, argc - i, argv + i);
}
