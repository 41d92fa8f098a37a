// SPDX-License-Identifier: MIT
/*
 * keytools: keyfs genkey, validate and derive -- keys in their text form,
 * with no configuration, state or mount.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "recovery.h"
#include "common.h"
#include "key.h"

#define STDIN_MAX 4096 /* a key, and room for mistakes */

/*
 * Reads at most STDIN_MAX bytes of standard input into a sodium_malloc'd
 * buffer, dropping one final "\n" (or "\r\n").
 */
static int read_stdin(uint8_t **ret, size_t *ret_len)
{
	uint8_t *buf = sodium_malloc(STDIN_MAX + 1);
	size_t len = 0;

	if (!buf)
		return -ENOMEM;
	while (len <= STDIN_MAX) {
		ssize_t n = read(0, buf + len, STDIN_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sodium_free(buf);
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > STDIN_MAX) {
		sodium_free(buf);
		return -E2BIG;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = 0;
	*ret = buf;
	*ret_len = len;
	return 0;
}

int kf_cli_genkey(int argc, char **argv)
{
	uint8_t *key;

	(void)argv;
	if (argc != 1)
		return kf_cmd_usage("genkey", "genkey (it takes no arguments)");
	key = sodium_malloc(KF_KEY_BYTES);
	if (!key)
		return kf_cmd_fail("genkey", "out of memory");
	kf_key_generate(key);
	kf_cmd_print_key(key, "");
	sodium_free(key);
	return 0;
}

int kf_cli_recovery_keygen(int argc, char **argv)
{
	char fpr[KF_RECOVERY_FPR_LEN + 1], err[KF_ERR_MAX];
	struct kf_cmd_opts o = {0};

	if (kf_cmd_parse_opts(argc, argv, KF_CMD_OPT_PAIR, &o) < 0)
		return 2;
	if (!o.public_key || !o.private_key || !*o.public_key ||
	    !*o.private_key || optind != argc || o.config)
		return kf_cmd_usage("recovery-keygen",
				    "recovery-keygen --public FILE --private "
				    "FILE");
	if (kf_recovery_keygen(o.public_key, o.private_key, fpr, err) < 0)
		return kf_cmd_fail("recovery-keygen", err);
	printf("recovery key pair: public %s (fingerprint %s), private %s "
	       "(keep it offline)\n",
	       o.public_key, fpr, o.private_key);
	return 0;
}

int kf_cli_validate(int argc, char **argv)
{
	char err[KF_ERR_MAX];
	uint8_t *in = NULL;
	size_t len;
	int r;

	if (argc > 2)
		return kf_cmd_usage("validate", "validate [KEY|-]");
	if (argc == 2 && strcmp(argv[1], "-") != 0) {
		r = kf_key_decode(argv[1], strlen(argv[1]), NULL, err);
	} else {
		r = read_stdin(&in, &len);
		if (r < 0) {
			printf("invalid\n");
			return kf_cmd_fail("validate",
					   r == -E2BIG ? "input too long"
						       : "cannot read standard "
							 "input");
		}
		r = kf_key_decode((const char *)in, len, NULL, err);
		sodium_free(in);
	}
	if (r < 0) {
		fprintf(stderr, "keyfs validate: invalid: %s\n", err);
		return 1;
	}
	printf("valid\n");
	return 0;
}

int kf_cli_derive(int argc, char **argv)
{
	char err[KF_ERR_MAX];
	uint8_t *in = NULL, *keys;
	size_t len;
	int r;

	if (argc != 2)
		return kf_cmd_usage("derive", "derive PURPOSE < KEY");
	if (!kf_purpose_valid(argv[1]))
		return kf_cmd_fail("derive", "invalid purpose name (allowed: "
					     "[a-z0-9][a-z0-9_-]{0,31})");
	r = read_stdin(&in, &len);
	if (r < 0)
		return kf_cmd_fail("derive",
				   "cannot read the key on standard input");
	keys = sodium_malloc(2 * KF_KEY_BYTES);
	if (!keys) {
		sodium_free(in);
		return kf_cmd_fail("derive", "out of memory");
	}
	r = kf_key_decode((const char *)in, len, keys, err);
	sodium_free(in);
	if (r == 0)
		r = kf_key_derive(keys, argv[1], keys + KF_KEY_BYTES, err);
	if (r == 0)
		kf_cmd_print_key(keys + KF_KEY_BYTES, "");
	sodium_free(keys);
	if (r < 0) {
		fprintf(stderr, "keyfs derive: invalid key: %s\n", err);
		return 1;
	}
	return 0;
}
