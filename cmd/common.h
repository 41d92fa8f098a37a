/* SPDX-License-Identifier: MIT */
/*
 * common: what the keyfs subcommands share -- a failure as one line, the
 * options -c FILE, --mount DIR, --offline and --json, the configuration and
 * where it came from, a key printed in its text form, and reading the files
 * of a mounted tree.
 */
#ifndef KF_CMD_COMMON_H
#define KF_CMD_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "key.h"

/*
 * Largest file of the tree read whole.  status at the configuration's limits
 * (4,096 purposes of 32 characters, 1,000 versions) is about 240 KB.
 */
#define KF_CMD_TREE_FILE_MAX (4u << 20)

/* Prints "keyfs CMD: MSG" on standard error; returns 1, the exit status. */
int kf_cmd_fail(const char *cmd, const char *msg);

/*
 * Prints "keyfs CMD: usage: keyfs SYNOPSIS" on standard error; returns 2,
 * the exit status of a command line that is wrong.
 */
int kf_cmd_usage(const char *cmd, const char *synopsis);

/* The options a command takes besides -c FILE (kf_cmd_parse_opts). */
enum {
	KF_CMD_OPT_MOUNT = 1 << 0,	  /* --mount DIR */
	KF_CMD_OPT_OFFLINE = 1 << 1,	  /* --offline */
	KF_CMD_OPT_JSON = 1 << 2,	  /* --json */
	KF_CMD_OPT_NEW_MASTER = 1 << 3,	  /* --new-master FILE */
	KF_CMD_OPT_RECOVERY_KEY = 1 << 4, /* --recovery-key FILE */
	KF_CMD_OPT_PAIR = 1 << 5,	  /* --public FILE, --private FILE */
};

struct kf_cmd_opts {
	const char *config;		      /* -c FILE */
	const char *mount;		      /* --mount DIR */
	bool offline;			      /* --offline */
	bool json;			      /* --json */
	const char *new_master;		      /* --new-master FILE */
	const char *recovery_key;	      /* --recovery-key FILE */
	const char *public_key, *private_key; /* --public, --private */
};

/*
 * Parses -c FILE and those of --mount DIR, --offline, --json, --new-master
 * FILE, --recovery-key FILE, --public FILE and --private FILE that `allowed`
 * (KF_CMD_OPT_*) names into o, leaving the operands in argv[optind..].
 * -EINVAL, after one line on standard error, for anything else.
 */
int kf_cmd_parse_opts(int argc, char **argv, unsigned allowed,
		      struct kf_cmd_opts *o);

/*
 * The configuration at path (NULL: the default search), or NULL after one
 * line on standard error.  Free with kf_config_free.
 */
struct kf_config *kf_cmd_config(const char *cmd, const char *path);

/*
 * Where cfg, loaded by kf_cmd_config(cmd, path), came from, in words for a
 * message: "-c FILE", "KEYFS_CONFIG=FILE", "/etc/keyfs/keyfs.ini", or "the
 * embedded development configuration".  Into buf (size bytes); returns buf.
 */
const char *kf_cmd_config_origin(const struct kf_config *cfg, const char *path,
				 char *buf, size_t size);

/*
 * Whether what names a file from here rather than a backup name: it holds
 * a '/', or a file of that name exists in the current folder (the rule of
 * restore --offline and backup verify).
 */
bool kf_cmd_local_path(const char *what);

/* Whether cfg is the embedded development configuration. */
bool kf_cmd_config_embedded(const struct kf_config *cfg);

/* Prints prefix, the text form of key and a newline; wipes the text. */
void kf_cmd_print_key(const uint8_t key[KF_KEY_BYTES], const char *prefix);

/*
 * Reads at most size - 1 bytes of the tree's file dir/name into buf and
 * ends them with a NUL: the number of bytes, or -errno.
 */
int kf_cmd_read_small(const char *dir, const char *name, char *buf,
		      size_t size);

/*
 * Reads all of the tree's file dir/name, to its end, into a malloc'd
 * NUL-terminated buffer: for status, whose size grows with the purposes and
 * versions configured.  Returns 0, -EFBIG past KF_CMD_TREE_FILE_MAX, or
 * -errno.
 */
int kf_cmd_read_whole(const char *dir, const char *name, char **ret_buf,
		      size_t *ret_len);

#endif
