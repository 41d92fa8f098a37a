/* SPDX-License-Identifier: MIT */
/*
 * common: what the keyfs subcommands share -- a failure as one line, the
 * options -c FILE, --mount DIR and --offline, the configuration, a key
 * printed in its text form, and reading the files of a mounted tree.
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

struct kf_cmd_opts {
	const char *config; /* -c FILE */
	const char *mount;  /* --mount DIR */
	bool offline;	    /* --offline */
};

/*
 * Parses -c FILE, --mount DIR, --offline into o, leaving the operands in
 * argv[optind..].  -EINVAL, after one line on standard error, for anything
 * else.
 */
int kf_cmd_parse_opts(int argc, char **argv, struct kf_cmd_opts *o);

/*
 * The configuration at path (NULL: the default search), or NULL after one
 * line on standard error.  Free with kf_config_free.
 */
struct kf_config *kf_cmd_config(const char *cmd, const char *path);

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
