// SPDX-License-Identifier: MIT
/* common: what the keyfs subcommands share (common.h). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "common.h"

#define READ_FIRST 65536 /* bytes read whole before the buffer grows */

int kf_cmd_fail(const char *cmd, const char *msg)
{
	fprintf(stderr, "keyfs %s: %s\n", cmd, msg);
	return 1;
}

int kf_cmd_usage(const char *cmd, const char *synopsis)
{
	fprintf(stderr, "keyfs %s: usage: keyfs %s\n", cmd, synopsis);
	return 2;
}

bool kf_cmd_local_path(const char *what)
{
	return strchr(what, '/') || access(what, F_OK) == 0;
}

int kf_cmd_parse_opts(int argc, char **argv, unsigned allowed,
		      struct kf_cmd_opts *o)
{
	static const struct option longopts[] = {
	    {"config", required_argument, 0, 'c'},
	    {"mount", required_argument, 0, 'm'},
	    {"offline", no_argument, 0, 'O'},
	    {"json", no_argument, 0, 'J'},
	    {"new-master", required_argument, 0, 'n'},
	    {"recovery-key", required_argument, 0, 'R'},
	    {"public", required_argument, 0, 'P'},
	    {"private", required_argument, 0, 'S'},
	    {0, 0, 0, 0}};
	int c;

	optind = 1;
	opterr = 0; /* one line of our own, the option not echoed */
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		if (c == 'c') {
			o->config = optarg;
		} else if (c == 'm' && (allowed & KF_CMD_OPT_MOUNT)) {
			o->mount = optarg;
		} else if (c == 'O' && (allowed & KF_CMD_OPT_OFFLINE)) {
			o->offline = true;
		} else if (c == 'J' && (allowed & KF_CMD_OPT_JSON)) {
			o->json = true;
		} else if (c == 'n' && (allowed & KF_CMD_OPT_NEW_MASTER)) {
			o->new_master = optarg;
		} else if (c == 'R' && (allowed & KF_CMD_OPT_RECOVERY_KEY)) {
			o->recovery_key = optarg;
		} else if (c == 'P' && (allowed & KF_CMD_OPT_PAIR)) {
			o->public_key = optarg;
		} else if (c == 'S' && (allowed & KF_CMD_OPT_PAIR)) {
			o->private_key = optarg;
		} else {
			fprintf(stderr,
				"keyfs %s: unknown option or missing "
				"value (see keyfs %s --help)\n",
				argv[0], argv[0]);
			return -EINVAL;
		}
	}
	return 0;
}

struct kf_config *kf_cmd_config(const char *cmd, const char *path)
{
	struct kf_config *cfg = NULL;
	char err[KF_ERR_MAX];

	if (kf_config_load(path, &cfg, err) < 0) {
		fprintf(stderr, "keyfs %s: %s\n", cmd, err);
		return NULL;
	}
	return cfg;
}

bool kf_cmd_config_embedded(const struct kf_config *cfg)
{
	return strcmp(cfg->source, KF_CONFIG_EMBEDDED) == 0;
}

const char *kf_cmd_config_origin(const struct kf_config *cfg, const char *path,
				 char *buf, size_t size)
{
	const char *env = getenv("KEYFS_CONFIG");

	/* The order of kf_config_load's search. */
	if (kf_cmd_config_embedded(cfg))
		snprintf(buf, size, "the embedded development configuration");
	else if (path)
		snprintf(buf, size, "-c %s", cfg->source);
	else if (env && *env)
		snprintf(buf, size, "KEYFS_CONFIG=%s", cfg->source);
	else
		snprintf(buf, size, "%s", cfg->source);
	return buf;
}

void kf_cmd_print_key(const uint8_t key[KF_KEY_BYTES], const char *prefix)
{
	char *text = sodium_malloc(KF_KEY_TEXT_LEN + 1);

	if (!text)
		return;
	kf_key_encode(key, text);
	printf("%s%s\n", prefix, text);
	fflush(stdout);
	sodium_free(text);
}

int kf_cmd_read_small(const char *dir, const char *name, char *buf, size_t size)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd, e;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	e = errno; /* close may change it */
	close(fd);
	if (n < 0)
		return -e;
	buf[n] = 0;
	return (int)n;
}

int kf_cmd_read_whole(const char *dir, const char *name, char **ret_buf,
		      size_t *ret_len)
{
	char path[PATH_MAX], *buf = NULL;
	size_t len = 0, cap = 0;
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (cap - len < 2) {
			char *grown;

			if (cap >= KF_CMD_TREE_FILE_MAX) {
				r = -EFBIG;
				break;
			}
			cap = cap ? cap * 2 : READ_FIRST;
			grown = realloc(buf, cap);
			if (!grown) {
				r = -ENOMEM;
				break;
			}
			buf = grown;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (r < 0) {
		free(buf);
		return r;
	}
	buf[len] = 0;
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}
