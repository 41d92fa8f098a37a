// SPDX-License-Identifier: MIT
/*
 * targets: each parser of outside bytes, driven the way keyfs drives it
 * (targets.h).  Parsers that read files get the bytes in a scratch folder
 * made once per process (TMPDIR, else /tmp) and removed at exit.  The keys
 * here are fixed test bytes: nothing secret is ever in play.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "audit_line.h"
#include "audit_private.h"
#include "audit_verify.h"
#include "backup.h"
#include "backup_private.h"
#include "cluster.h"
#include "config.h"
#include "control.h"
#include "etcd.h"
#include "etcd_private.h"
#include "key.h"
#include "keyring.h"
#include "master.h"
#include "state.h"
#include "store.h"
#include "targets.h"

#define SCRATCH_FILES_MAX 8 /* audit_log: files one input may make */
#define FILE_NAME_MAX 64
#define PREFIX "/keyfs" /* the etcd prefix the etcd target's keys are under */

/*
 * The master key every target opens and MACs with: 32 bytes of 0x5a, in
 * text form WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo= -- fuzz/make-seeds
 * runs the daemon with it, so the seeds open here.  A test key that
 * protects nothing.
 */
static const uint8_t test_master[KF_KEY_BYTES] = {
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
};

/* Its subkey id (master.h), derived once per call: cheap next to a parse. */
static void subkey(enum kf_subkey id, uint8_t out[KF_SUBKEY_BYTES])
{
	kf_master_subkey(test_master, id, out);
}

static char scratch[256];

/* libsodium set up (sodium_malloc needs it); cheap after the first call. */
static void setup(void)
{
	if (sodium_init() < 0)
		abort();
}

/* A parse's outcome: accepted or refused is the parser's business here; a
 * crash, a sanitizer report or a leak is the finding. */
static void parsed(int r)
{
	(void)r;
}

/* Removes the files in dir (no folders are made in it), then dir if rm. */
static void clear_dir(const char *dir, bool rm)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_type != DT_DIR)
			(void)unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	if (rm)
		(void)rmdir(dir);
}

static void scratch_remove(void)
{
	char log[sizeof(scratch) + 8];

	if (!scratch[0])
		return;
	snprintf(log, sizeof(log), "%s/log", scratch);
	clear_dir(log, true);
	clear_dir(scratch, true);
}

/* The process's scratch folder, made at the first call; NULL if it fails. */
static const char *scratch_dir(void)
{
	const char *tmp = getenv("TMPDIR");

	if (scratch[0])
		return scratch;
	snprintf(scratch, sizeof(scratch), "%s/keyfs-fuzz.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(scratch)) {
		scratch[0] = 0;
		return NULL;
	}
	atexit(scratch_remove);
	return scratch;
}

/* Writes data to dir/name (replacing it): 0 or -1. */
static int put_file(const char *dir, const char *name, const uint8_t *data,
		    size_t size)
{
	char path[512];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	while (size > 0) {
		n = write(fd, data, size);
		if (n <= 0) {
			close(fd);
			return -1;
		}
		data += n;
		size -= (size_t)n;
	}
	return close(fd);
}

/* A NUL-terminated copy of data (malloc'd), or NULL. */
static char *text_of(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s) {
		memcpy(s, data, size);
		s[size] = 0;
	}
	return s;
}

int kf_fuzz_config(const uint8_t *data, size_t size)
{
	char err[KF_ERR_MAX], *text = text_of(data, size);
	struct kf_config *cfg = NULL;

	setup();
	if (text && kf_config_parse(text, "fuzz.ini", "/fuzz", &cfg, err) == 0)
		kf_config_free(cfg);
	free(text);
	return 0;
}

int kf_fuzz_key(const uint8_t *data, size_t size)
{
	uint8_t key[KF_KEY_BYTES];
	char err[KF_ERR_MAX];

	setup();
	if (kf_key_decode((const char *)data, size, key, err) == 0)
		sodium_memzero(key, sizeof(key));
	return 0;
}

/* The sealed state's plaintext, as a keyring state and as a cluster copy. */
static void state_plain(const uint8_t *plain, size_t len)
{
	struct kf_audit_anchor anchor;
	struct kf_keyring *kr = NULL;
	const uint8_t *blob;
	size_t blob_len;
	char err[KF_ERR_MAX];

	if (kf_state_decode(plain, len, &anchor, &kr, err) == 0)
		kf_keyring_unref(kr);
	parsed(kf_state_decode_cluster(plain, len, &anchor, &blob, &blob_len,
				       err));
}

int kf_fuzz_state(const uint8_t *data, size_t size)
{
	const char *dir = scratch_dir();
	uint8_t *plain = NULL, key[KF_SUBKEY_BYTES];
	size_t len = 0;
	char err[KF_ERR_MAX];

	setup();
	subkey(KF_SUBKEY_STATE, key);
	/* The bytes as the plaintext (what a box that opened gives) ... */
	state_plain(data, size);
	/* ... and as the state file, read and opened as at start-up. */
	if (dir && put_file(dir, KF_STORE_FILE, data, size) == 0 &&
	    kf_store_load(dir, key, &plain, &len, err) == 0) {
		state_plain(plain, len);
		sodium_free(plain);
	}
	return 0;
}

int kf_fuzz_archive(const uint8_t *data, size_t size)
{
	const char *dir = scratch_dir();
	struct kf_backup_info info;
	struct kf_keyring *kr = NULL;
	char err[KF_ERR_MAX], path[512];
	uint8_t *blob = NULL, key[KF_SUBKEY_BYTES];
	int64_t created;
	size_t len = 0;

	setup();
	subkey(KF_SUBKEY_BACKUP, key);
	parsed(kf_backup_check_bytes(data, size, key, &created, err));
	if (!dir || put_file(dir, "fuzz.json", data, size) < 0)
		return 0;
	/* As a restore reads an archive: the file, then its keyring. */
	snprintf(path, sizeof(path), "%s/fuzz.json", dir);
	if (kf_backup_read(path, key, &blob, &len, &info, err) == 0) {
		if (kf_keyring_decode(blob, len, &kr, err) == 0)
			kf_keyring_unref(kr);
		sodium_free(blob);
	}
	return 0;
}

int kf_fuzz_audit_line(const uint8_t *data, size_t size)
{
	uint8_t chain[KF_AUDIT_CHAIN_BYTES];
	json_t *root = NULL;
	const char *why;
	uint64_t seq;

	setup();
	if (size < KF_AUDIT_LINE_MAX &&
	    kf_audit_parse_line((const char *)data, size, &seq, chain, &root,
				&why) == 0)
		json_decref(root);
	return 0;
}

/*
 * The files of an audit_log input in a fresh folder under the scratch one:
 * "audit.log" holds all of it, unless it starts with "@@ NAME\n", which
 * starts a file called NAME (letters, digits, '.', '-', '_'), as does each
 * later such line.  Returns the number of files (0: nothing to verify).
 */
static size_t log_files(const char *dir, const uint8_t *data, size_t size)
{
	const uint8_t *end = data + size, *p = data;
	char name[FILE_NAME_MAX];
	size_t n = 0;

	if (size < 3 || memcmp(data, "@@ ", 3) != 0)
		return put_file(dir, "audit.log", data, size) == 0 ? 1 : 0;
	while (p < end && n < SCRATCH_FILES_MAX && end - p >= 3 &&
	       memcmp(p, "@@ ", 3) == 0) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		const uint8_t *body, *next;
		size_t len = 0;

		if (!nl)
			break;
		for (const uint8_t *q = p + 3; q < nl && len + 1 < sizeof(name);
		     q++)
			if ((*q >= 'a' && *q <= 'z') ||
			    (*q >= 'A' && *q <= 'Z') ||
			    (*q >= '0' && *q <= '9') || *q == '.' ||
			    *q == '-' || *q == '_')
				name[len++] = (char)*q;
		name[len] = 0;
		body = nl + 1;
		next = body;
		while (next < end &&
		       !(end - next >= 4 && memcmp(next, "\n@@ ", 4) == 0))
			next++;
		if (next < end)
			next++; /* the body keeps its last "\n" */
		if (len == 0 || strcmp(name, ".") == 0 ||
		    strcmp(name, "..") == 0 ||
		    put_file(dir, name, body, (size_t)(next - body)) < 0)
			break;
		n++;
		p = next;
	}
	return n;
}

int kf_fuzz_audit_log(const uint8_t *data, size_t size)
{
	const char *base = scratch_dir();
	struct kf_audit_verify_result res;
	struct kf_audit_anchor anchor = {0};
	char dir[512], report[KF_ERR_MAX], path[600];
	uint8_t key[KF_SUBKEY_BYTES];
	const char *paths[1];
	struct stat st;
	int fd;

	setup();
	if (!base)
		return 0;
	subkey(KF_SUBKEY_AUDIT, key);
	snprintf(dir, sizeof(dir), "%s/log", base);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return 0;
	paths[0] = dir;
	if (log_files(dir, data, size) > 0) {
		/* As `keyfs audit verify DIR`, without and with an anchor. */
		parsed(kf_audit_verify_files(paths, 1, "audit.log", key, NULL,
					     report, &res));
		anchor.seq = size;
		parsed(kf_audit_verify_files(paths, 1, "audit.log", key,
					     &anchor, report, &res));
		/* As start-up reads the active file's end. */
		snprintf(path, sizeof(path), "%s/audit.log", dir);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			struct kf_audit_tail tail;
			uint64_t seq;
			int64_t t;

			if (fstat(fd, &st) == 0)
				parsed(kf_audit_read_tail(fd, st.st_size, key,
							  &tail));
			parsed(kf_audit_read_head(fd, &seq, &t));
			close(fd);
		}
	}
	clear_dir(dir, false);
	return 0;
}

int kf_fuzz_control(const uint8_t *data, size_t size)
{
	char arg[KF_CONTROL_INPUT_MAX + 1];
	const struct kf_control_cmd *c;
	struct kf_control_arg a;

	setup();
	for (size_t i = 0; (c = kf_control_at(i)); i++)
		parsed(kf_control_parse(c, (const char *)data, size, arg, &a));
	return 0;
}

/* The watch's callback: takes every event. */
static int watch_event(void *arg, const struct kf_etcd_event *ev,
		       int64_t revision)
{
	(void)arg;
	(void)ev;
	(void)revision;
	return 0;
}

/* A range reply's "kvs", as kf_etcd_get and kf_etcd_list read them. */
static void etcd_range(struct kf_etcd *c, const char *text, size_t len)
{
	json_t *j = json_loadb(text, len, 0, NULL);
	json_t *kvs = json_object_get(j, "kvs");
	char err[KF_ERR_MAX];

	(void)kf_etcdi_j_int(json_object_get(j, "header"), "revision");
	(void)kf_etcdi_j_int(j, "count");
	for (size_t i = 0; i < json_array_size(kvs); i++) {
		struct kf_etcd_kv kv;

		if (kf_etcdi_kv_from_json(c, json_array_get(kvs, i), &kv,
					  err) == 0)
			kf_etcd_kv_clear(&kv);
	}
	json_decref(j);
}

/*
 * What etcd's gateway sends, by the first byte: 0 a line of a watch
 * stream, 1 a range reply, 2 an error reply's body, 3 the cluster keyring
 * blob a value holds.
 */
int kf_fuzz_etcd(const uint8_t *data, size_t size)
{
	struct kf_etcd c = {.prefix = (char *)PREFIX};
	struct kf_cluster_info info;
	struct kf_keyring *kr = NULL;
	struct kf_etcdi_buf b = {0};
	char err[KF_ERR_MAX], *text;
	uint8_t key[KF_SUBKEY_BYTES];
	int64_t next = 0;

	setup();
	if (size == 0)
		return 0;
	text = text_of(data + 1, size - 1);
	if (!text)
		return 0;
	switch (data[0] % 4) {
	case 0:
		parsed(kf_etcdi_watch_line(&c, text, size - 1, &next,
					   watch_event, NULL, err));
		break;
	case 1:
		etcd_range(&c, text, size - 1);
		break;
	case 2:
		b.data = text;
		b.len = size - 1;
		parsed(kf_etcdi_http_error(&b, 400, "http://fuzz/v3/kv/range",
					   err));
		break;
	default:
		parsed(kf_cluster_peek(data + 1, size - 1, &info, err));
		subkey(KF_SUBKEY_CLUSTER, key);
		if (kf_cluster_unseal(key, PREFIX, data + 1, size - 1, &info,
				      &kr, err) == 0)
			kf_keyring_unref(kr);
		break;
	}
	free(text);
	return 0;
}

const struct kf_fuzz_target *kf_fuzz_targets(size_t *ret_n)
{
	static const struct kf_fuzz_target all[] = {
	    {"config", kf_fuzz_config},
	    {"key", kf_fuzz_key},
	    {"state", kf_fuzz_state},
	    {"archive", kf_fuzz_archive},
	    {"audit_line", kf_fuzz_audit_line},
	    {"audit_log", kf_fuzz_audit_log},
	    {"control", kf_fuzz_control},
	    {"etcd", kf_fuzz_etcd},
	};

	*ret_n = sizeof(all) / sizeof(all[0]);
	return all;
}
