// SPDX-License-Identifier: MIT
/*
 * The keyfs command's offline parts through the real binary (DESIGN.md §8,
 * issue 2 "The command", issue 4 item 6): genkey, validate, derive,
 * export-env, audit verify, backup list/verify, restore --offline, --help,
 * --version, usage errors, and one pass of ctl against a running mount.
 *
 * Keys never reach test output: they travel through pipes and stdin, are
 * compared in C with strcmp/memcmp under messages that name no value, and
 * captured copies are wiped before they are freed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "helpers.h"
#include "key.h"
#include "master.h"

#define PY "/usr/bin/python3"
/* Prints one Fernet.generate_key() key, no newline. */
#define PY_FERNET_KEY                                                          \
	PY " -c 'import sys; from cryptography.fernet import Fernet; "         \
	   "sys.stdout.write(Fernet.generate_key().decode())'"
#define DERIVE_VECTOR "Wq-OCVQ8DeI0vqnts1rfGsqeTMvXEzTGE253KbFvjMY="

static void setup(void)
{
	cr_assert(sodium_init() >= 0);
}

TestSuite(cli, .init = setup);

/* --- helpers -------------------------------------------------------------- */

/* True if s is exactly one non-empty line ending in "\n". */
static bool one_line(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n > 1 && s[n - 1] == '\n' && !memchr(s, '\n', n - 1);
}

/* True if text holds any run of 8 bytes of in (a quoted input). */
static bool quotes_input(const char *text, const char *in, size_t len)
{
	size_t tlen = strlen(text);

	for (size_t i = 0; i + 8 <= len; i++)
		if (memmem(text, tlen, in + i, 8))
			return true;
	return false;
}

/* True if every byte of s is printable ASCII or "\n". */
static bool printable(const char *s)
{
	for (; *s; s++)
		if ((*s < 0x20 || *s > 0x7e) && *s != '\n')
			return false;
	return true;
}

/* Frees a capture that may hold key text, wiping it first. */
static void wipe_free(char *s)
{
	if (!s)
		return;
	sodium_memzero(s, strlen(s));
	free(s);
}

/* Number of lines in a file. */
static size_t count_lines(const char *path)
{
	size_t n = 0, len;
	char *buf = kt_read_file(path, &len);

	cr_assert(buf, "cannot read %s", path);
	for (size_t i = 0; i < len; i++)
		n += buf[i] == '\n';
	free(buf);
	return n;
}

/* The last line of a file (malloc'd, without "\n"). */
static char *last_line(const char *path)
{
	size_t len;
	char *buf = kt_read_file(path, &len), *start, *line;

	cr_assert(buf && len > 0 && buf[len - 1] == '\n', "%s: no lines", path);
	buf[len - 1] = 0;
	start = strrchr(buf, '\n');
	line = strdup(start ? start + 1 : buf);
	free(buf);
	return line;
}

/*
 * Edits line `n` (1-based) of an audit log the way a careless or malicious
 * admin might: the last digit of its timestamp's seconds changes.  The line
 * stays valid JSON with the same seq.
 */
static void edit_audit_line(const char *path, size_t n)
{
	size_t len, line = 1;
	char *buf = kt_read_file(path, &len), *p, *ts;

	cr_assert(buf);
	p = buf;
	while (line < n) {
		p = strchr(p, '\n');
		cr_assert(p, "%s has fewer than %zu lines", path, n);
		p++;
		line++;
	}
	ts = strstr(p, "\"timestamp\":\"");
	cr_assert(ts && ts < strchr(p, '\n'), "line %zu has no timestamp", n);
	ts = strchr(ts + 13, 'Z');
	cr_assert(ts && ts[-1] >= '0' && ts[-1] <= '9');
	ts[-1] = (char)('0' + (ts[-1] - '0' + 1) % 10);
	kt_write_bytes(path, buf, len, 0600);
	free(buf);
}

struct file_id {
	off_t size;
	struct timespec mtime;
	char *bytes;
	size_t len;
};

static void file_id_get(const char *path, struct file_id *ret)
{
	struct stat st;

	cr_assert(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
	ret->size = st.st_size;
	ret->mtime = st.st_mtim;
	ret->bytes = kt_read_file(path, &ret->len);
	cr_assert(ret->bytes);
}

/* Asserts that path still has the bytes and mtime recorded in was. */
static void file_id_same(const char *path, struct file_id *was,
			 const char *what)
{
	struct file_id now;

	file_id_get(path, &now);
	cr_assert(now.len == was->len &&
		      memcmp(now.bytes, was->bytes, now.len) == 0,
		  "%s: %s changed its bytes", path, what);
	cr_assert(now.mtime.tv_sec == was->mtime.tv_sec &&
		      now.mtime.tv_nsec == was->mtime.tv_nsec,
		  "%s: %s changed its mtime", path, what);
	free(now.bytes);
	free(was->bytes);
	was->bytes = NULL;
}

/* The sorted names in a directory, one per line (malloc'd). */
static char *dir_listing(const char *dir)
{
	char *out = NULL;

	cr_assert(kt_runf(&out, NULL, "ls -1 '%s'", dir) == 0);
	return out;
}

/* The first name in dir starting with prefix (malloc'd), or NULL. */
static char *find_entry(const char *dir, const char *prefix)
{
	char *list = dir_listing(dir), *save = NULL, *found = NULL;

	for (char *w = strtok_r(list, "\n", &save); w && !found;
	     w = strtok_r(NULL, "\n", &save))
		if (strncmp(w, prefix, strlen(prefix)) == 0)
			found = strdup(w);
	free(list);
	return found;
}

/* Frees the paths kt_mount_config allocated (the files stay). */
static void mount_free(struct kt_mount *m)
{
	free(m->dir);
	free(m->mnt);
	free(m->cfg);
	free(m->log);
	free(m->state);
	memset(m, 0, sizeof(*m));
}

/*
 * A development configuration in a new scratch directory (not mounted) whose
 * state exists: the keyring is generated by an export-env whose output goes
 * to /dev/null.
 */
static void offline_state(struct kt_mount *m, const char *tag)
{
	char *err = NULL;

	kt_mount_config(m, tag, NULL, NULL);
	cr_assert(kt_runf(NULL, &err, "%s export-env -c '%s' >/dev/null",
			  kt_keyfs(), m->cfg) == 0,
		  "creating the state failed: %s", err);
	free(err);
}

/* What a mounted tree served, noted before it was stopped. */
struct noted {
	char *v1;	/* current at version 1 */
	char *cur;	/* current at version 2 */
	char *prev;	/* previous at version 2 (== v1) */
	char *phi;	/* derived/phi at version 2 */
	char *prev_phi; /* versions/1/derived/phi */
};

static void noted_free(struct noted *n)
{
	wipe_free(n->v1);
	wipe_free(n->cur);
	wipe_free(n->prev);
	wipe_free(n->phi);
	wipe_free(n->prev_phi);
}

/*
 * Mounts a new tree, takes the backup "snap" at version 1, rotates once
 * through control/rotate, notes the keys served, and stops the daemon: the
 * state then holds versions 2 (current) and 1 (previous).
 */
static void rotated_state(struct kt_mount *m, const char *tag, struct noted *n)
{
	char *v;

	kt_mount_config(m, tag, NULL, NULL);
	cr_assert(kt_mount_start(m, NULL) == 0, "mount failed; see %s", m->log);
	n->v1 = kt_mread(m, "current", NULL);
	cr_assert(n->v1 && strlen(n->v1) == KF_KEY_TEXT_LEN);
	cr_assert(kt_mwrite(m, "control/backup", "snap\n") == 0);
	cr_assert(kt_mwrite(m, "control/rotate", "1\n") == 0);
	v = kt_mread(m, "version", NULL);
	cr_assert(v && strcmp(v, "2\n") == 0, "version after rotate: %s", v);
	free(v);
	n->cur = kt_mread(m, "current", NULL);
	n->prev = kt_mread(m, "previous", NULL);
	n->phi = kt_mread(m, "derived/phi", NULL);
	n->prev_phi = kt_mread(m, "versions/1/derived/phi", NULL);
	cr_assert(n->cur && n->prev && n->phi && n->prev_phi,
		  "a key file of the tree could not be read");
	cr_assert(strcmp(n->prev, n->v1) == 0,
		  "previous is not the version 1 key");
	cr_assert(kt_mount_stop(m) == 0, "daemon exit status non-zero");
}

/* The value of "NAME=" in export-env output (malloc'd), or NULL. */
static char *env_value(const char *out, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = out; p && *p;
	     p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, name, n) == 0 && p[n] == '=')
			return strndup(p + n + 1, strcspn(p + n + 1, "\n"));
	return NULL;
}

/* --- genkey ------------------------------------------------------------- */

Test(cli, genkey_prints_one_fernet_key_line)
{
	char *out = NULL, *err = NULL;

	cr_assert(kt_runf(&out, &err, "%s genkey", kt_keyfs()) == 0);
	cr_assert(strlen(out) == KF_KEY_TEXT_LEN + 1 &&
		      out[KF_KEY_TEXT_LEN] == '\n',
		  "genkey did not print one 44-character line");
	cr_assert(kf_key_decode(out, KF_KEY_TEXT_LEN, NULL, NULL) == 0,
		  "genkey's key does not validate");
	cr_assert(strcmp(err, "") == 0, "genkey wrote to stderr");
	wipe_free(out);
	free(err);
}

Test(cli, genkey_key_is_accepted_by_python_fernet)
{
	char *out = NULL;

	/* The key crosses by pipe only; the capture is python's "ok". */
	cr_assert(kt_runf(&out, NULL,
			  "%s genkey | " PY " -c 'import sys\n"
			  "from cryptography.fernet import Fernet\n"
			  "k = sys.stdin.buffer.read()\n"
			  "assert len(k) == 45 and k.endswith(b\"\\n\")\n"
			  "f = Fernet(k[:44])\n"
			  "assert f.decrypt(f.encrypt(b\"x\")) == b\"x\"\n"
			  "print(\"ok\")' 2>/dev/null",
			  kt_keyfs()) == 0,
		  "Fernet() refused a key from keyfs genkey");
	cr_assert(strcmp(out, "ok\n") == 0, "python said: %s", out);
	free(out);
}

Test(cli, genkey_two_runs_differ)
{
	char *a = NULL, *b = NULL;

	cr_assert(kt_runf(&a, NULL, "%s genkey", kt_keyfs()) == 0);
	cr_assert(kt_runf(&b, NULL, "%s genkey", kt_keyfs()) == 0);
	cr_assert(strlen(a) == KF_KEY_TEXT_LEN + 1 &&
		      strlen(b) == KF_KEY_TEXT_LEN + 1,
		  "genkey output is not one key line");
	cr_assert(strcmp(a, b) != 0, "two runs of genkey gave the same key");
	wipe_free(a);
	wipe_free(b);
}

/* --- validate ----------------------------------------------------------- */

Test(cli, validate_accepts_fernet_key_as_argument)
{
	char *out = NULL, *err = NULL;

	cr_assert(kt_runf(&out, &err, "%s validate \"$(" PY_FERNET_KEY ")\"",
			  kt_keyfs()) == 0,
		  "a Fernet.generate_key() key was refused: %s", err);
	cr_assert(strcmp(out, "valid\n") == 0, "stdout is not \"valid\"");
	cr_assert(strcmp(err, "") == 0, "stderr not empty");
	free(out);
	free(err);
}

Test(cli, validate_accepts_fernet_key_on_stdin)
{
	const char *forms[] = {"-", ""};

	for (size_t i = 0; i < 2; i++) {
		char *out = NULL, *err = NULL;

		cr_assert(kt_runf(&out, &err, PY_FERNET_KEY " | %s validate %s",
				  kt_keyfs(), forms[i]) == 0,
			  "validate '%s' refused a Fernet key from stdin: %s",
			  forms[i], err);
		cr_assert(strcmp(out, "valid\n") == 0,
			  "validate '%s': stdout is not \"valid\"", forms[i]);
		free(out);
		free(err);
	}
	/* With a trailing newline, as `echo KEY |` sends it. */
	for (size_t i = 0; i < 2; i++) {
		char *out = NULL;

		cr_assert(kt_runf(&out, NULL,
				  "echo \"$(" PY_FERNET_KEY ")\" | %s validate "
				  "%s",
				  kt_keyfs(), forms[i]) == 0);
		cr_assert(strcmp(out, "valid\n") == 0);
		free(out);
	}
}

/* Asserts validate refuses input (via stdin, or argv when as_arg). */
static void expect_refused(const char *what, const char *input, bool as_arg)
{
	char *out = NULL, *err = NULL, *cmd;
	int rc;

	if (as_arg) {
		cr_assert(
		    asprintf(&cmd, "%s validate '%s'", kt_keyfs(), input) > 0);
		rc = kt_run(cmd, NULL, &out, &err);
	} else {
		cr_assert(asprintf(&cmd, "%s validate -", kt_keyfs()) > 0);
		rc = kt_run(cmd, input, &out, &err);
	}
	free(cmd);
	cr_assert(rc == 1, "%s: exit %d, expected 1", what, rc);
	cr_assert(strncmp(out, "valid", 5) != 0, "%s: stdout says valid", what);
	cr_assert(one_line(err), "%s: stderr is not one line", what);
	cr_assert(strlen(err) > strlen("keyfs validate: invalid: x\n") &&
		      kt_contains(err, "invalid"),
		  "%s: no reason on stderr: %s", what, err);
	cr_assert(!quotes_input(err, input, strlen(input)),
		  "%s: stderr quotes the input", what);
	wipe_free(out);
	wipe_free(err);
}

Test(cli, validate_rejects_malformed_keys)
{
	uint8_t key[KF_KEY_BYTES];
	char good[KF_KEY_TEXT_LEN + 1], bad[KF_KEY_TEXT_LEN + 8];

	kf_key_generate(key);
	kf_key_encode(key, good);
	sodium_memzero(key, sizeof(key));

	/* 43 characters: the padding dropped. */
	memcpy(bad, good, 43);
	bad[43] = 0;
	expect_refused("43 characters", bad, false);
	/* 45 characters. */
	snprintf(bad, sizeof(bad), "%sA", good);
	expect_refused("45 characters", bad, false);
	/* Standard alphabet instead of URL-safe. */
	snprintf(bad, sizeof(bad), "%s", good);
	bad[10] = '+';
	expect_refused("'+' in the key", bad, false);
	bad[10] = '/';
	expect_refused("'/' in the key", bad, false);
	/* Bad padding: '=' replaced, and non-zero trailing bits. */
	snprintf(bad, sizeof(bad), "%s", good);
	bad[43] = 'A';
	expect_refused("no '=' padding", bad, false);
	snprintf(bad, sizeof(bad), "%s", good);
	bad[42] = 'B'; /* value 1: the unused low bits are not zero */
	expect_refused("non-zero trailing bits", bad, false);
	snprintf(bad, sizeof(bad), "%s", good);
	bad[41] = '=';
	expect_refused("'=' inside", bad, false);
	/* Empty, on stdin and as an argument. */
	expect_refused("empty on stdin", "", false);
	expect_refused("empty argument", "", true);
	/*
	 * Plain wrong shapes as arguments.  kt_run records a command line with
	 * its stderr, so none of them is shaped like a key (43 + "=").
	 */
	expect_refused("43-character argument",
		       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", true);
	expect_refused("45-character argument",
		       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", true);
	expect_refused("standard alphabet argument",
		       "AAAAAAAAAAAAAAAAAAAA+/AAAAAAAAAAAAAAAAAAAA==", true);
	sodium_memzero(good, sizeof(good));
	sodium_memzero(bad, sizeof(bad));
}

Test(cli, validate_rejects_binary_input)
{
	/* Random bytes (may hold NUL) and bytes with the high bit set. */
	const char *feeds[] = {"head -c 44 /dev/urandom",
			       "printf '\\001\\002\\377\\376\\000abc'",
			       "printf 'AAAAAAAAAAAAAAAAAAAA\\377AAAAAAAAAAAA"
			       "AAAAAAAAAA='"};

	for (size_t i = 0; i < 3; i++) {
		char *out = NULL, *err = NULL;
		int rc = kt_runf(&out, &err, "%s | %s validate -", feeds[i],
				 kt_keyfs());

		cr_assert(rc == 1, "binary input %zu: exit %d", i, rc);
		cr_assert(strcmp(out, "valid\n") != 0);
		cr_assert(one_line(err),
			  "binary input %zu: stderr not one line", i);
		cr_assert(printable(err),
			  "binary input %zu: stderr echoes raw bytes", i);
		free(out);
		free(err);
	}
}

/* --- derive ------------------------------------------------------------- */

Test(cli, derive_matches_design_vector)
{
	uint8_t key[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 2], *cmd, *out = NULL, *err = NULL;

	memset(key, 'k', sizeof(key));
	kf_key_encode(key, text);
	cr_assert(asprintf(&cmd, "%s derive phi", kt_keyfs()) > 0);
	/* Without and with the newline an `echo` would add. */
	for (int nl = 0; nl < 2; nl++) {
		if (nl)
			strcat(text, "\n");
		cr_assert(kt_run(cmd, text, &out, &err) == 0,
			  "derive failed: %s", err);
		cr_assert(strcmp(out, DERIVE_VECTOR "\n") == 0,
			  "derive(32 x 'k', phi) differs from the DESIGN.md "
			  "vector");
		cr_assert(strcmp(err, "") == 0);
		free(out);
		free(err);
	}
	free(cmd);
}

Test(cli, derive_refuses_invalid_purpose)
{
	const char *purposes[] = {
	    "PHI",  "phi/x",   "../phi", "-phi",
	    "_phi", "phi app", "",	 "a23456789012345678901234567890123"};
	uint8_t key[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 1];

	memset(key, 'k', sizeof(key));
	kf_key_encode(key, text);
	for (size_t i = 0; i < sizeof(purposes) / sizeof(purposes[0]); i++) {
		char *cmd, *out = NULL, *err = NULL;
		int rc;

		cr_assert(asprintf(&cmd, "%s derive '%s'", kt_keyfs(),
				   purposes[i]) > 0);
		rc = kt_run(cmd, text, &out, &err);
		cr_assert(rc != 0, "purpose '%s' accepted", purposes[i]);
		cr_assert(strcmp(out, "") == 0,
			  "purpose '%s': a key was printed", purposes[i]);
		cr_assert(one_line(err), "purpose '%s': stderr not one line",
			  purposes[i]);
		cr_assert(kt_contains(err, "purpose"),
			  "purpose '%s': error does not say why: %s",
			  purposes[i], err);
		cr_assert(!quotes_input(err, text, strlen(text)));
		free(cmd);
		free(out);
		free(err);
	}
}

Test(cli, derive_refuses_invalid_key)
{
	uint8_t key[KF_KEY_BYTES];
	char good[KF_KEY_TEXT_LEN + 1], bad[KF_KEY_TEXT_LEN + 1], *cmd;
	const char *inputs[3];

	kf_key_generate(key);
	kf_key_encode(key, good);
	sodium_memzero(key, sizeof(key));
	snprintf(bad, sizeof(bad), "%s", good);
	bad[43] = 0;
	inputs[0] = bad;			 /* 43 characters */
	inputs[1] = "";				 /* nothing */
	inputs[2] = "not a key at all, clearly"; /* wrong shape */
	cr_assert(asprintf(&cmd, "%s derive phi", kt_keyfs()) > 0);
	for (size_t i = 0; i < 3; i++) {
		char *out = NULL, *err = NULL;
		int rc = kt_run(cmd, inputs[i], &out, &err);

		cr_assert(rc != 0, "invalid key %zu accepted", i);
		cr_assert(strcmp(out, "") == 0,
			  "invalid key %zu: something printed", i);
		cr_assert(one_line(err), "invalid key %zu: stderr not one line",
			  i);
		cr_assert(kt_contains(err, "invalid"),
			  "invalid key %zu: error does not say why: %s", i,
			  err);
		cr_assert(!quotes_input(err, inputs[i], strlen(inputs[i])),
			  "invalid key %zu: stderr quotes the input", i);
		free(out);
		wipe_free(err);
	}
	/* Binary on stdin. */
	{
		char *out = NULL, *err = NULL;

		cr_assert(kt_runf(&out, &err,
				  "head -c 44 /dev/urandom | %s derive phi",
				  kt_keyfs()) != 0);
		cr_assert(strcmp(out, "") == 0 && one_line(err) &&
			  printable(err));
		free(out);
		free(err);
	}
	free(cmd);
	sodium_memzero(good, sizeof(good));
	sodium_memzero(bad, sizeof(bad));
}

/* --- export-env --------------------------------------------------------- */

Test(cli, export_env_prints_the_three_lines, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	static struct kt_mount m;
	struct noted n = {0};
	char *out = NULL, *err = NULL, *log, *last, *cur, *prev, *ver;

	rotated_state(&m, "cli-export", &n);
	cr_assert(kt_runf(&out, &err, "%s export-env -c '%s'", kt_keyfs(),
			  m.cfg) == 0,
		  "export-env failed: %s", err);
	cr_assert(strncmp(out, "ENCRYPTION_KEY=", 15) == 0,
		  "first line is not ENCRYPTION_KEY=");
	cur = env_value(out, "ENCRYPTION_KEY");
	prev = env_value(out, "ENCRYPTION_KEY_PREVIOUS");
	ver = env_value(out, "ENCRYPTION_KEY_VERSION");
	cr_assert(cur && prev && ver, "a line is missing");
	/* Exactly these three lines, in this order, nothing else. */
	{
		char *want;

		cr_assert(asprintf(&want,
				   "ENCRYPTION_KEY=%s\n"
				   "ENCRYPTION_KEY_PREVIOUS=%s\n"
				   "ENCRYPTION_KEY_VERSION=%s\n",
				   cur, prev, ver) > 0);
		cr_assert(strcmp(out, want) == 0,
			  "export-env prints more or other than the three "
			  "lines");
		wipe_free(want);
	}
	cr_assert(kf_key_decode(cur, strlen(cur), NULL, NULL) == 0,
		  "ENCRYPTION_KEY does not validate");
	cr_assert(kf_key_decode(prev, strlen(prev), NULL, NULL) == 0,
		  "ENCRYPTION_KEY_PREVIOUS does not validate");
	cr_assert(strcmp(ver, "2") == 0, "ENCRYPTION_KEY_VERSION=%s", ver);
	cr_assert(strcmp(cur, n.cur) == 0,
		  "ENCRYPTION_KEY is not the key the tree served as current");
	cr_assert(strcmp(prev, n.prev) == 0,
		  "ENCRYPTION_KEY_PREVIOUS is not the tree's previous key");

	log = kt_path(m.state, "audit.log");
	last = last_line(log);
	cr_assert(kt_contains(last, "\"event\":\"key_export\"") &&
		      kt_contains(last, "\"success\":true"),
		  "the last audit record is not a key_export: %s", last);
	free(last);
	free(log);
	wipe_free(cur);
	wipe_free(prev);
	free(ver);
	wipe_free(out);
	free(err);
	noted_free(&n);
	mount_free(&m);
}

Test(cli, export_env_output_imports_with_the_same_keys,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m, fresh;
	struct noted n = {0};
	char *out1 = NULL, *out2 = NULL, *phi = NULL, *prev_phi = NULL;
	char *err = NULL, *log, *text;

	rotated_state(&m, "cli-import-src", &n);
	kt_mount_config(&fresh, "cli-import-dst", NULL, NULL);
	cr_assert(kt_runf(&out1, NULL, "%s export-env -c '%s'", kt_keyfs(),
			  m.cfg) == 0);
	/* The lines become the environment of a keyfs on an empty state. */
	cr_assert(kt_runf(&out2, &err,
			  "set -e; eval \"$(%s export-env -c '%s')\"; "
			  "export ENCRYPTION_KEY ENCRYPTION_KEY_PREVIOUS "
			  "ENCRYPTION_KEY_VERSION; %s export-env -c '%s'",
			  kt_keyfs(), m.cfg, kt_keyfs(), fresh.cfg) == 0,
		  "import of export-env output failed: %s", err);
	cr_assert(strcmp(out1, out2) == 0,
		  "the imported state exports other keys or version");
	log = kt_path(fresh.state, "audit.log");
	text = kt_read_file(log, NULL);
	cr_assert(kt_contains(text, "\"event\":\"key_import\""),
		  "the fresh state was not imported from the environment");
	free(text);
	free(log);

	/* keyfs derive on the imported keys gives what the tree served. */
	cr_assert(kt_runf(&phi, NULL,
			  "%s export-env -c '%s' | sed -n "
			  "'s/^ENCRYPTION_KEY=//p' | %s derive phi",
			  kt_keyfs(), fresh.cfg, kt_keyfs()) == 0);
	cr_assert(kt_runf(&prev_phi, NULL,
			  "%s export-env -c '%s' | sed -n "
			  "'s/^ENCRYPTION_KEY_PREVIOUS=//p' | %s derive phi",
			  kt_keyfs(), fresh.cfg, kt_keyfs()) == 0);
	cr_assert(strlen(phi) == KF_KEY_TEXT_LEN + 1 &&
		      strncmp(phi, n.phi, KF_KEY_TEXT_LEN) == 0,
		  "derive phi of the imported current key differs from the "
		  "tree's derived/phi");
	cr_assert(strlen(prev_phi) == KF_KEY_TEXT_LEN + 1 &&
		      strncmp(prev_phi, n.prev_phi, KF_KEY_TEXT_LEN) == 0,
		  "derive phi of the imported previous key differs from the "
		  "tree's versions/1/derived/phi");
	wipe_free(out1);
	wipe_free(out2);
	wipe_free(phi);
	wipe_free(prev_phi);
	free(err);
	noted_free(&n);
	mount_free(&m);
	mount_free(&fresh);
}

#define RACE_EXPORTS 300
#define RACE_ROTATIONS_MAX 900 /* below retain_versions: none drops out */

/*
 * A child rotating m through control/rotate, as fast as it can, until *stop
 * or RACE_ROTATIONS_MAX; *done counts the rotations.
 */
static pid_t rotator(struct kt_mount *m, atomic_int *stop, atomic_int *done)
{
	char *path = kt_path(m->mnt, "control/rotate");
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		while (!atomic_load(stop) &&
		       atomic_load(done) < RACE_ROTATIONS_MAX) {
			int fd = open(path, O_WRONLY | O_CLOEXEC);

			if (fd < 0 || write(fd, "1\n", 2) != 2)
				_exit(1);
			close(fd);
			atomic_fetch_add(done, 1);
		}
		_exit(0);
	}
	free(path);
	return pid;
}

/* Whether key text equals the tree's versions/<v>/key. */
static bool is_version_key(struct kt_mount *m, const char *key, long v)
{
	char rel[64], *text;
	size_t len = 0;
	bool same;

	snprintf(rel, sizeof(rel), "versions/%ld/key", v);
	text = kt_mread(m, rel, &len);
	cr_assert(text, "read %s: %s", rel, strerror(errno));
	same = key && strlen(key) == len && strcmp(key, text) == 0;
	wipe_free(text);
	return same;
}

/*
 * export-env through a mount under rotations: every export is one
 * consistent snapshot, whose ENCRYPTION_KEY is versions/N/key and
 * ENCRYPTION_KEY_PREVIOUS versions/N-1/key for its ENCRYPTION_KEY_VERSION N.
 */
Test(cli, export_env_from_a_mount_is_consistent_under_rotations,
     .fini = kt_mount_cleanup_all, .timeout = 240)
{
	static struct kt_mount m;
	atomic_int *shared;
	int bad_cur = 0, bad_prev = 0, failed = 0, rotations, st;
	long first = 0, last = 0;
	pid_t pid;

	kt_mount_config(&m, "cli-export-race", "retain_versions = 1000\n",
			NULL);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed; see %s", m.log);
	shared = mmap(NULL, 2 * sizeof(*shared), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(shared != MAP_FAILED);
	atomic_store(&shared[0], 0);
	atomic_store(&shared[1], 0);
	pid = rotator(&m, &shared[0], &shared[1]);
	for (int i = 0; i < RACE_EXPORTS; i++) {
		char *out = NULL, *err = NULL, *cur, *prev, *ver;
		long v;

		if (kt_runf(&out, &err, "%s export-env --mount '%s'",
			    kt_keyfs(), m.mnt) != 0) {
			failed++;
			cr_log_warn("export-env failed: %s", err);
			wipe_free(out);
			free(err);
			continue;
		}
		cur = env_value(out, "ENCRYPTION_KEY");
		prev = env_value(out, "ENCRYPTION_KEY_PREVIOUS");
		ver = env_value(out, "ENCRYPTION_KEY_VERSION");
		cr_assert(cur && ver, "a line is missing from export-env");
		v = strtol(ver, NULL, 10);
		cr_assert(v > 0, "ENCRYPTION_KEY_VERSION=%s", ver);
		if (!first)
			first = v;
		last = v;
		bad_cur += !is_version_key(&m, cur, v);
		if (v > 1)
			bad_prev += !is_version_key(&m, prev, v - 1);
		else
			bad_prev += prev != NULL;
		wipe_free(cur);
		wipe_free(prev);
		free(ver);
		wipe_free(out);
		free(err);
	}
	atomic_store(&shared[0], 1);
	cr_assert(waitpid(pid, &st, 0) == pid);
	rotations = atomic_load(&shared[1]);
	munmap(shared, 2 * sizeof(*shared));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "the rotating child failed after %d rotations", rotations);
	cr_assert(last - first >= 20,
		  "only %ld rotations happened during the exports: no race",
		  last - first);
	cr_expect(failed == 0, "%d of %d exports failed", failed, RACE_EXPORTS);
	cr_expect(bad_cur == 0,
		  "%d of %d exports printed an ENCRYPTION_KEY that is not "
		  "the key of their ENCRYPTION_KEY_VERSION (%d rotations)",
		  bad_cur, RACE_EXPORTS, rotations);
	cr_expect(bad_prev == 0,
		  "%d of %d exports printed an ENCRYPTION_KEY_PREVIOUS that "
		  "is not the key of version N-1 (%d rotations)",
		  bad_prev, RACE_EXPORTS, rotations);
	cr_assert(kt_mount_stop(&m) == 0);
	mount_free(&m);
}

/* --- audit verify ------------------------------------------------------- */

/*
 * State after some operations, the last of them a restore --offline (a
 * keyring change, whose record the sealed anchor holds): mount, backup,
 * rotate, unmount, export-env, backup list, restore.
 */
static void audited_state(struct kt_mount *m, const char *tag)
{
	struct noted n = {0};
	char *err = NULL, *snap;

	rotated_state(m, tag, &n);
	noted_free(&n);
	cr_assert(kt_runf(NULL, NULL, "%s export-env -c '%s' >/dev/null",
			  kt_keyfs(), m->cfg) == 0);
	cr_assert(kt_runf(NULL, NULL, "%s backup list -c '%s'", kt_keyfs(),
			  m->cfg) == 0);
	snap = kt_path(m->state, "backups/snap.json");
	cr_assert(kt_runf(NULL, &err, "%s restore --offline '%s' -c '%s'",
			  kt_keyfs(), snap, m->cfg) == 0,
		  "restore failed: %s", err);
	free(snap);
	free(err);
}

/* `keyfs audit verify [FILE] -c CFG` (file may be NULL): the exit status.
 * FILE may be a folder too. */
static int audit_verify(struct kt_mount *m, const char *file, char **out,
			char **err)
{
	if (file)
		return kt_runf(out, err, "%s audit verify '%s' -c '%s'",
			       kt_keyfs(), file, m->cfg);
	return kt_runf(out, err, "%s audit verify -c '%s'", kt_keyfs(), m->cfg);
}

/* The report of a log of n records whose last one the anchor holds. */
static char *ok_anchored(size_t n)
{
	char *want;

	cr_assert(asprintf(&want,
			   "ok: %zu records (seq 1-%zu); end checked: seq %zu "
			   "matches the sealed anchor\n",
			   n, n, n) > 0);
	return want;
}

/* Whether err is audit verify's one line naming line n of file as edited. */
static bool names_edited_line(const char *err, const char *file, size_t n)
{
	char *want;
	bool same;

	cr_assert(
	    asprintf(&want,
		     "keyfs audit verify: %s:%zu: chain mismatch (edited, "
		     "or a line before it was changed)\n",
		     file, n) > 0);
	same = err && strcmp(err, want) == 0;
	free(want);
	return same;
}

/* Deletes the last record of m's audit log: audit verify must fail. */
static void expect_deleted_tail_detected(struct kt_mount *m, const char *what)
{
	char *out = NULL, *err = NULL, *log = kt_path(m->state, "audit.log");

	kt_drop_last_line(log);
	cr_assert(audit_verify(m, NULL, &out, &err) == 1,
		  "%s was deleted undetected (audit verify said: %s)", what,
		  out);
	cr_assert(one_line(err));
	free(out);
	free(err);
	free(log);
}

Test(cli, audit_verify_ok_after_operations, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *log, *want;

	audited_state(&m, "cli-audit-ok");
	log = kt_path(m.state, "audit.log");
	cr_assert(audit_verify(&m, NULL, &out, &err) == 0,
		  "audit verify failed on an untouched log: %s", err);
	want = ok_anchored(count_lines(log));
	cr_assert(strcmp(out, want) == 0, "audit verify said %s, not %s", out,
		  want);
	free(want);
	free(out);
	free(err);
	free(log);
	mount_free(&m);
}

Test(cli, audit_verify_names_the_edited_line, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *log, *orig;

	audited_state(&m, "cli-audit-edit");
	log = kt_path(m.state, "audit.log");
	orig = kt_path(m.dir, "audit.orig");
	kt_copy_file(log, orig);
	cr_assert(count_lines(log) >= 5);
	edit_audit_line(log, 3);
	cr_assert(audit_verify(&m, NULL, &out, &err) == 1,
		  "an edited line 3 was not detected");
	cr_assert(names_edited_line(err, log, 3),
		  "the error does not name line 3 of %s: %s", log, err);
	free(out);
	free(err);
	/* The edit, and nothing else, was the reason. */
	kt_copy_file(orig, log);
	cr_assert(audit_verify(&m, NULL, NULL, NULL) == 0);
	free(orig);
	free(log);
	mount_free(&m);
}

Test(cli, audit_verify_detects_truncation_by_the_anchor,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *log, *copy;

	audited_state(&m, "cli-audit-trunc");
	log = kt_path(m.state, "audit.log");
	copy = kt_path(m.dir, "audit-copy.log");
	kt_drop_last_line(log);
	/* The chain of what is left is intact: only the anchor can tell. */
	kt_copy_file(log, copy);
	cr_assert(kt_runf(&out, &err,
			  "%s audit verify --no-anchor '%s' -c '%s'",
			  kt_keyfs(), copy, m.cfg) == 0,
		  "the chain of the remaining lines does not verify: %s", err);
	free(out);
	free(err);
	cr_assert(audit_verify(&m, NULL, &out, &err) == 1,
		  "a log missing its last record verified");
	cr_assert(one_line(err), "stderr is not one line: %s", err);
	cr_assert(kt_contains(err, "truncat"),
		  "the error does not say "
		  "truncated: %s",
		  err);
	free(out);
	free(err);
	free(copy);
	free(log);
	mount_free(&m);
}

Test(cli, audit_verify_file_checks_a_copy_against_the_anchor,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *log, *copy, *want;

	audited_state(&m, "cli-audit-file");
	log = kt_path(m.state, "audit.log");
	copy = kt_path(m.dir, "audit-copy.log");
	kt_copy_file(log, copy);
	cr_assert(audit_verify(&m, copy, &out, &err) == 0,
		  "a good copy failed: %s", err);
	want = ok_anchored(count_lines(copy));
	cr_assert(strcmp(out, want) == 0, "audit verify FILE said %s", out);
	free(want);
	free(out);
	free(err);
	edit_audit_line(copy, 2);
	cr_assert(audit_verify(&m, copy, &out, &err) == 1,
		  "an edited copy verified");
	cr_assert(names_edited_line(err, copy, 2),
		  "the error does not name line 2 of %s: %s", copy, err);
	free(out);
	free(err);
	free(copy);
	free(log);
	mount_free(&m);
}

/*
 * A copy cut short before the record the sealed state saw fails even though
 * its chain is intact, naming where it ends and what the state saw.  The
 * configured log itself is untouched.
 */
Test(cli, audit_verify_file_cut_short_fails_against_the_anchor,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *log, *copy, *want;
	size_t n;

	audited_state(&m, "cli-audit-cut");
	log = kt_path(m.state, "audit.log");
	copy = kt_path(m.dir, "audit-cut.log");
	kt_copy_file(log, copy);
	kt_drop_last_line(copy);
	n = count_lines(log);
	cr_assert(audit_verify(&m, copy, &out, &err) == 1,
		  "a copy missing its last record verified: %s", out);
	cr_assert(strcmp(out, "") == 0 && one_line(err), "stdout %s stderr %s",
		  out, err);
	cr_assert(asprintf(&want,
			   "keyfs audit verify: %s: truncated: the log ends at "
			   "seq %zu but the sealed state saw seq %zu\n",
			   copy, n - 1, n) > 0);
	cr_assert(strcmp(err, want) == 0, "stderr: %s", err);
	free(want);
	free(out);
	free(err);
	cr_assert(audit_verify(&m, NULL, NULL, NULL) == 0,
		  "the configured log no longer verifies");
	free(copy);
	free(log);
	mount_free(&m);
}

/*
 * --no-anchor verifies an archived older copy, and says that its end was not
 * checked; without it, a FILE whose sealed state cannot be read fails.
 */
Test(cli, audit_verify_no_anchor_says_the_end_was_not_checked,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *log, *copy, *want, *kr, *away;
	size_t n;

	audited_state(&m, "cli-audit-noanchor");
	log = kt_path(m.state, "audit.log");
	copy = kt_path(m.dir, "audit-old.log");
	kt_copy_file(log, copy);
	kt_drop_last_line(copy);
	n = count_lines(copy);
	cr_assert(asprintf(&want,
			   "ok: %zu records (seq 1-%zu); end not checked "
			   "against the sealed anchor\n",
			   n, n) > 0);
	/* before or after FILE */
	cr_assert(kt_runf(&out, &err,
			  "%s audit verify --no-anchor '%s' -c '%s'",
			  kt_keyfs(), copy, m.cfg) == 0,
		  "an archived copy failed with --no-anchor: %s", err);
	cr_assert(strcmp(out, want) == 0, "audit verify said %s", out);
	free(out);
	free(err);
	cr_assert(kt_runf(&out, &err,
			  "%s audit verify '%s' -c '%s' --no-anchor",
			  kt_keyfs(), copy, m.cfg) == 0,
		  "%s", err);
	cr_assert(strcmp(out, want) == 0, "audit verify said %s", out);
	free(out);
	free(err);
	/* the chain is still checked */
	edit_audit_line(copy, 2);
	cr_assert(kt_runf(&out, &err,
			  "%s audit verify --no-anchor '%s' -c '%s'",
			  kt_keyfs(), copy, m.cfg) == 1,
		  "an edited copy verified with --no-anchor: %s", out);
	cr_assert(names_edited_line(err, copy, 2), "stderr: %s", err);
	free(out);
	free(err);

	/* No sealed state: a FILE is not silently left unanchored. */
	kt_copy_file(log, copy);
	kr = kt_path(m.state, "keyring");
	away = kt_path(m.dir, "keyring.away");
	cr_assert(rename(kr, away) == 0);
	cr_assert(audit_verify(&m, copy, &out, &err) == 1,
		  "verified without the sealed state: %s", out);
	cr_assert(one_line(err) && kt_contains(err, "sealed state"),
		  "stderr: %s", err);
	free(out);
	free(err);
	cr_assert(kt_runf(&out, &err,
			  "%s audit verify --no-anchor '%s' -c '%s'",
			  kt_keyfs(), copy, m.cfg) == 0,
		  "--no-anchor needs the sealed state: %s", err);
	cr_assert(kt_contains(out, "end not checked against the sealed anchor"),
		  "audit verify said %s", out);
	cr_assert(rename(away, kr) == 0);
	free(out);
	free(err);
	free(want);
	free(away);
	free(kr);
	free(copy);
	free(log);
	mount_free(&m);
}

/* A FIFO no one writes would block a plain open forever: `timeout` turns
 * that into exit 124 instead of a hung suite. */
Test(cli, audit_verify_refuses_a_fifo, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *fifo;
	int rc;

	audited_state(&m, "cli-audit-fifo");
	fifo = kt_path(m.dir, "audit.fifo");
	cr_assert(mkfifo(fifo, 0600) == 0);
	rc = kt_runf(&out, &err, "timeout 10 %s audit verify '%s' -c '%s'",
		     kt_keyfs(), fifo, m.cfg);
	cr_assert(rc == 1, "audit verify of a FIFO: exit %d (124: it blocked)",
		  rc);
	cr_assert(strcmp(out, "") == 0 && one_line(err) &&
		      kt_contains(err, fifo) &&
		      kt_contains(err, "not a regular file"),
		  "stdout %s stderr %s", out, err);
	free(out);
	free(err);
	free(fifo);
	mount_free(&m);
}

/*
 * export-env discloses every retained key; deleting its record must not go
 * unnoticed, so its record must be covered by the sealed anchor too.
 */
Test(cli, audit_verify_detects_deleted_key_export_record)
{
	static struct kt_mount m;
	char *log, *last;

	offline_state(&m, "cli-audit-export");
	cr_assert(kt_runf(NULL, NULL, "%s export-env -c '%s' >/dev/null",
			  kt_keyfs(), m.cfg) == 0);
	log = kt_path(m.state, "audit.log");
	last = last_line(log);
	cr_assert(kt_contains(last, "\"event\":\"key_export\""));
	free(last);
	free(log);
	expect_deleted_tail_detected(&m, "the record of a key export");
	mount_free(&m);
}

/*
 * A daemon that stopped cleanly has seen every record it wrote (the key
 * opens of its last minutes, its unmount); deleting the tail must be found.
 */
Test(cli, audit_verify_detects_deleted_tail_after_clean_unmount,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	char *key;

	kt_mount_config(&m, "cli-audit-unmount", NULL, NULL);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed; see %s", m.log);
	key = kt_mread(&m, "current", NULL);
	cr_assert(key);
	wipe_free(key);
	cr_assert(kt_mount_stop(&m) == 0);
	expect_deleted_tail_detected(
	    &m, "the last record of a cleanly stopped daemon");
	mount_free(&m);
}

/* --- audit verify of a log in segments --------------------------------- */

/* The audit log's MAC key of m (master subkey 3), into key. */
static void audit_key(struct kt_mount *m, uint8_t key[KF_SUBKEY_BYTES])
{
	char err[KF_ERR_MAX] = "", *path = kt_path(m->dir, "master.key");
	uint8_t *master = NULL;
	bool created = false;

	cr_assert(kf_master_load(path, false, &master, &created, err) == 0,
		  "%s", err);
	kf_master_subkey(master, KF_SUBKEY_AUDIT, key);
	sodium_free(master);
	free(path);
}

/* The chain of the last line of the log at path, as hex. */
static void last_chain(const char *path, char hex[65])
{
	char *line = last_line(path), *p = strstr(line, "\"chain\":\"");

	cr_assert(p && strlen(p + 9) == 66, "no chain last in %s", path);
	memcpy(hex, p + 9, 64);
	hex[64] = 0;
	free(line);
}

/*
 * Appends to the log at path the line with seq and fields (JSON members),
 * chained to prev (hex; becomes this line's chain): what the writer of
 * segments writes, made here with the log's key.
 */
static void append_chained(const char *path, const uint8_t *key, char prev[65],
			   size_t seq, const char *fields)
{
	crypto_generichash_state st;
	uint8_t chain[32];
	char *body = NULL, *line = NULL, *old;
	size_t len;

	cr_assert(sodium_hex2bin(chain, 32, prev, 64, NULL, NULL, NULL) == 0);
	cr_assert(
	    asprintf(&body,
		     "{\"timestamp\":\"2024-05-01T12:00:00Z\",\"seq\":%zu,"
		     "%s",
		     seq, fields) > 0);
	crypto_generichash_init(&st, key, KF_SUBKEY_BYTES, 32);
	crypto_generichash_update(&st, chain, 32);
	crypto_generichash_update(&st, (const unsigned char *)body,
				  strlen(body));
	crypto_generichash_update(&st, (const unsigned char *)"}", 1);
	crypto_generichash_final(&st, chain, 32);
	sodium_memzero(&st, sizeof(st));
	sodium_bin2hex(prev, 65, chain, 32);
	old = access(path, F_OK) == 0 ? kt_read_file(path, &len) : strdup("");
	cr_assert(old);
	cr_assert(asprintf(&line, "%s%s,\"chain\":\"%s\"}\n", old, body, prev) >
		  0);
	kt_write_file(path, line, 0600);
	free(line);
	free(old);
	free(body);
}

/*
 * keyfs audit verify of folders: the state of audited_state, its log then
 * closed into a segment (a close record, renamed) and continued in a new
 * active file (an open record and one more), as a rotation does.  The
 * folder verifies as one chain, by name and by default; moved to an
 * archive, the segment is found missing until its folder is given too; an
 * edit in it is named by file and line.
 */
Test(cli, audit_verify_dir_checks_segments_as_one_chain,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	uint8_t key[KF_SUBKEY_BYTES];
	char *out = NULL, *err = NULL, *log, *seg, *archive, *moved, *want;
	char *ok;
	char chain[65], closed_chain[65], fields[512], name[64];
	size_t n;

	audited_state(&m, "cli-audit-seg");
	log = kt_path(m.state, "audit.log");
	n = count_lines(log); /* the sealed anchor: seq n */
	audit_key(&m, key);
	last_chain(log, chain);
	snprintf(name, sizeof(name), "audit-%016zu-%016zu.log", (size_t)1,
		 n + 1);
	snprintf(fields, sizeof(fields),
		 "\"event\":\"audit_segment_close\",\"segment\":\"%s\","
		 "\"first_seq\":1,\"last_seq\":%zu,\"reason\":\"request\","
		 "\"uid\":0,\"gid\":0,\"pid\":1",
		 name, n + 1);
	append_chained(log, key, chain, n + 1, fields);
	seg = kt_path(m.state, name);
	cr_assert(rename(log, seg) == 0);
	memcpy(closed_chain, chain, sizeof(chain));
	snprintf(fields, sizeof(fields),
		 "\"event\":\"audit_segment_open\",\"previous\":\"%s\","
		 "\"previous_first_seq\":1,\"previous_last_seq\":%zu,"
		 "\"previous_chain\":\"%s\"",
		 name, n + 1, closed_chain);
	append_chained(log, key, chain, n + 2, fields);
	append_chained(log, key, chain, n + 3,
		       "\"event\":\"key_open\",\"uid\":0,\"gid\":0,\"pid\":1,"
		       "\"success\":true");
	sodium_memzero(key, sizeof(key));

	cr_assert(asprintf(&ok,
			   "ok: %zu records in 2 files (seq 1-%zu); end "
			   "checked: seq %zu matches the sealed anchor (3 "
			   "later records not covered)\n",
			   n + 3, n + 3, n) > 0);
	cr_assert(audit_verify(&m, m.state, &out, &err) == 0,
		  "keyfs audit verify STATE: %s", err);
	cr_assert(strcmp(out, ok) == 0, "audit verify DIR said %s", out);
	free(out);
	free(err);
	cr_assert(audit_verify(&m, NULL, &out, &err) == 0,
		  "keyfs audit verify: %s", err);
	cr_assert(strcmp(out, ok) == 0, "audit verify said %s", out);
	free(out);
	free(err);

	/* moved to archive storage */
	archive = kt_path(m.dir, "archive");
	cr_assert(mkdir(archive, 0700) == 0);
	moved = kt_path(archive, name);
	cr_assert(rename(seg, moved) == 0);
	cr_assert(audit_verify(&m, NULL, &out, &err) == 1,
		  "verified without its first segment: %s", out);
	cr_assert(
	    asprintf(&want,
		     "keyfs audit verify: %s: history before seq %zu is "
		     "missing and no audit_segment_delete record accounts "
		     "for it (moved elsewhere? give that folder too)\n",
		     log, n + 2) > 0);
	cr_assert(strcmp(out, "") == 0 && strcmp(err, want) == 0,
		  "stdout %s stderr %s", out, err);
	free(out);
	free(err);
	cr_assert(kt_runf(&out, &err, "%s audit verify '%s' '%s' -c '%s'",
			  kt_keyfs(), m.state, archive, m.cfg) == 0,
		  "both folders: %s", err);
	cr_assert(strcmp(out, ok) == 0, "audit verify STATE ARCHIVE said %s",
		  out);
	free(out);
	free(err);

	/* an edit in the archived segment: its file and line */
	edit_audit_line(moved, 2);
	cr_assert(kt_runf(&out, &err, "%s audit verify '%s' '%s' -c '%s'",
			  kt_keyfs(), archive, m.state, m.cfg) == 1,
		  "an edited archived segment verified: %s", out);
	cr_assert(names_edited_line(err, moved, 2), "stderr: %s", err);
	free(out);
	free(err);
	free(want);
	free(ok);
	free(moved);
	free(archive);
	free(seg);
	free(log);
	mount_free(&m);
}

/* --- backup list / verify ----------------------------------------------- */

Test(cli, backup_list_shows_every_archive, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	static struct kt_mount m;
	struct noted n = {0};
	char *out = NULL, *err = NULL, *dir, *names, *save = NULL;
	size_t archives = 0, rows = 0;

	rotated_state(&m, "cli-list", &n);
	noted_free(&n);
	dir = kt_path(m.state, "backups");
	cr_assert(kt_runf(&out, &err, "%s backup list -c '%s'", kt_keyfs(),
			  m.cfg) == 0,
		  "backup list failed: %s", err);
	for (const char *p = out; *p; p++)
		rows += *p == '\n';
	names = dir_listing(dir);
	for (char *w = strtok_r(names, "\n", &save); w;
	     w = strtok_r(NULL, "\n", &save)) {
		char *path = kt_path(dir, w), *row, created[64], name[256];
		json_error_t jerr;
		json_t *o = json_load_file(path, 0, &jerr);
		unsigned version;
		long long size;
		struct stat st;

		cr_assert(o, "%s is not JSON", path);
		cr_assert(stat(path, &st) == 0);
		row = strstr(out, w);
		cr_assert(row && (row == out || row[-1] == '\n'),
			  "backup list has no row for %s", w);
		cr_assert(sscanf(row, "%255s %63s %u %lld", name, created,
				 &version, &size) == 4,
			  "row for %s is not NAME CREATED VERSION SIZE", w);
		cr_assert(strcmp(name, w) == 0);
		cr_assert(strcmp(created, json_string_value(json_object_get(
					      o, "created"))) == 0,
			  "%s: created %s differs from the archive's", w,
			  created);
		cr_assert(version == json_integer_value(
					 json_object_get(o, "key_version")),
			  "%s: key version %u differs from the archive's", w,
			  version);
		cr_assert(size == (long long)st.st_size,
			  "%s: size %lld, the file has %lld", w, size,
			  (long long)st.st_size);
		json_decref(o);
		free(path);
		archives++;
	}
	/* snap (v1), the first backup, and the rotation's (v2) at least. */
	cr_assert(archives >= 3, "only %zu archives", archives);
	cr_assert(rows == archives + 1, "%zu rows for %zu archives + header",
		  rows, archives);
	cr_assert(kt_contains(out, "snap.json"));
	free(names);
	free(dir);
	free(out);
	free(err);
	mount_free(&m);
}

/* Path of the first automatic archive (key_backup_*) of m's state. */
static char *first_backup(struct kt_mount *m)
{
	char *dir = kt_path(m->state, "backups"),
	     *name = find_entry(dir, "key_backup_"), *path;

	cr_assert(name, "no first backup in %s", dir);
	path = kt_path(dir, name);
	free(name);
	free(dir);
	return path;
}

Test(cli, backup_verify_accepts_good_archive_and_changes_nothing)
{
	static struct kt_mount m;
	struct file_id arch, keyring, audit;
	char *out = NULL, *err = NULL, *path, *kpath, *apath;

	offline_state(&m, "cli-verify-good");
	path = first_backup(&m);
	kpath = kt_path(m.state, "keyring");
	apath = kt_path(m.state, "audit.log");
	file_id_get(path, &arch);
	file_id_get(kpath, &keyring);
	file_id_get(apath, &audit);
	cr_assert(kt_runf(&out, &err, "%s backup verify '%s' -c '%s'",
			  kt_keyfs(), path, m.cfg) == 0,
		  "a good archive failed: %s", err);
	cr_assert(strncmp(out, "ok: ", 4) == 0 && one_line(out),
		  "verify said: %s", out);
	cr_assert(kt_contains(out, "key version 1"), "verify said: %s", out);
	file_id_same(path, &arch, "backup verify");
	file_id_same(kpath, &keyring, "backup verify");
	file_id_same(apath, &audit, "backup verify");
	free(out);
	free(err);
	free(apath);
	free(kpath);
	free(path);
	mount_free(&m);
}

/* Asserts that verifying path fails with one line holding a reason. */
static void expect_verify_fails(struct kt_mount *m, const char *path,
				const char *what)
{
	struct file_id before;
	char *out = NULL, *err = NULL, *reason;
	int rc;

	file_id_get(path, &before);
	rc = kt_runf(&out, &err, "%s backup verify '%s' -c '%s'", kt_keyfs(),
		     path, m->cfg);
	cr_assert(rc == 1, "%s: exit %d, expected 1", what, rc);
	cr_assert(strcmp(out, "") == 0, "%s: stdout: %s", what, out);
	cr_assert(one_line(err), "%s: stderr is not one line: %s", what, err);
	/* "keyfs backup verify: PATH: reason" */
	reason = strstr(err, path);
	cr_assert(reason && strlen(reason + strlen(path)) > 4,
		  "%s: no reason given: %s", what, err);
	file_id_same(path, &before, what);
	free(out);
	free(err);
}

Test(cli, backup_verify_rejects_truncated_archive)
{
	static struct kt_mount m;
	char *src, *dst, *buf;
	size_t len;

	offline_state(&m, "cli-verify-trunc");
	src = first_backup(&m);
	buf = kt_read_file(src, &len);
	cr_assert(buf && len > 40);
	dst = kt_path(m.dir, "truncated.json");
	kt_write_bytes(dst, buf, len / 2, 0600);
	expect_verify_fails(&m, dst, "half an archive");
	kt_write_bytes(dst, buf, len - 1, 0600);
	expect_verify_fails(&m, dst, "an archive missing its last byte");
	kt_write_bytes(dst, buf, 0, 0600);
	expect_verify_fails(&m, dst, "an empty file");
	free(dst);
	free(buf);
	free(src);
	mount_free(&m);
}

Test(cli, backup_verify_rejects_any_changed_byte)
{
	static struct kt_mount m;
	char *src, *dst, *buf, *flips, *accepted = NULL;
	size_t len;

	offline_state(&m, "cli-verify-byte");
	src = first_backup(&m);
	buf = kt_read_file(src, &len);
	cr_assert(buf && len > 100);
	/* One byte in the middle of the ciphertext, in detail. */
	dst = kt_path(m.dir, "changed.json");
	buf[len - 20] ^= 0x01;
	kt_write_bytes(dst, buf, len, 0600);
	expect_verify_fails(&m, dst, "one ciphertext byte changed");
	buf[len - 20] ^= 0x01;
	/* Then every position, in one shell loop. */
	flips = kt_path(m.dir, "flips");
	cr_assert(mkdir(flips, 0700) == 0);
	for (size_t i = 0; i < len; i++) {
		char *p;

		cr_assert(asprintf(&p, "%s/%04zu.json", flips, i) > 0);
		buf[i] ^= 0x01;
		kt_write_bytes(p, buf, len, 0600);
		buf[i] ^= 0x01;
		free(p);
	}
	cr_assert(kt_runf(&accepted, NULL,
			  "for f in '%s'/*.json; do %s backup verify \"$f\" "
			  "-c '%s' >/dev/null 2>&1 && echo \"${f##*/}\"; "
			  "done; true",
			  flips, kt_keyfs(), m.cfg) == 0);
	cr_assert(strcmp(accepted, "") == 0,
		  "archives with one byte changed verified: %s", accepted);
	free(accepted);
	free(flips);
	free(dst);
	free(buf);
	free(src);
	mount_free(&m);
}

Test(cli, backup_verify_rejects_other_master_key)
{
	static struct kt_mount m, other;
	char *path;

	offline_state(&m, "cli-verify-mk");
	offline_state(&other, "cli-verify-mk2");
	path = first_backup(&m);
	/* The same archive, judged with the other state's master key. */
	cr_assert(kt_runf(NULL, NULL, "%s backup verify '%s' -c '%s'",
			  kt_keyfs(), path, m.cfg) == 0);
	expect_verify_fails(&other, path, "another master key");
	free(path);
	mount_free(&m);
	mount_free(&other);
}

/* --- restore --offline -------------------------------------------------- */

Test(cli, restore_offline_restores_and_keeps_pre_restore,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	struct noted n = {0};
	char *out = NULL, *err = NULL, *dir, *snap, *pre, *cur, *ver, *text;
	char *log, *last;

	rotated_state(&m, "cli-restore", &n);
	dir = kt_path(m.state, "backups");
	snap = kt_path(dir, "snap.json");
	cr_assert(find_entry(dir, "pre_restore_") == NULL);
	cr_assert(kt_runf(&out, &err, "%s restore --offline '%s' -c '%s'",
			  kt_keyfs(), snap, m.cfg) == 0,
		  "restore --offline failed: %s", err);
	cr_assert(strcmp(out, "restored: version 1\n") == 0, "restore said: %s",
		  out);
	free(out);
	free(err);
	pre = find_entry(dir, "pre_restore_");
	cr_assert(pre, "no pre_restore_ archive after the restore");
	log = kt_path(m.state, "audit.log");
	last = last_line(log);
	cr_assert(
	    kt_contains(last, "\"event\":\"key_restore\"") &&
		kt_contains(last, "\"success\":true") && kt_contains(last, pre),
	    "the restore was not audited with its pre_restore_ archive: %s",
	    last);
	free(last);
	free(log);

	/* The state now serves the version 1 key as current. */
	cr_assert(kt_runf(&out, NULL, "%s export-env -c '%s'", kt_keyfs(),
			  m.cfg) == 0);
	cur = env_value(out, "ENCRYPTION_KEY");
	ver = env_value(out, "ENCRYPTION_KEY_VERSION");
	cr_assert(cur && strcmp(cur, n.v1) == 0,
		  "the restored current key is not the version 1 key");
	cr_assert(ver && strcmp(ver, "1") == 0, "restored version %s", ver);
	wipe_free(cur);
	free(ver);
	wipe_free(out);

	/* The pre_restore_ archive holds what was replaced (version 2). */
	cr_assert(kt_runf(&out, NULL, "%s backup list -c '%s'", kt_keyfs(),
			  m.cfg) == 0);
	text = strstr(out, pre);
	cr_assert(text, "backup list lacks %s", pre);
	{
		char name[256], created[64];
		unsigned version = 0;

		cr_assert(sscanf(text, "%255s %63s %u", name, created,
				 &version) == 3);
		cr_assert(version == 2, "%s holds version %u, not 2", pre,
			  version);
	}
	free(out);
	free(pre);
	free(snap);
	free(dir);
	noted_free(&n);
	mount_free(&m);
}

Test(cli, restore_offline_refused_while_daemon_runs,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	struct file_id keyring;
	char *out = NULL, *err = NULL, *dir, *kpath, *before, *after, *v;

	kt_mount_config(&m, "cli-restore-busy", NULL, NULL);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed; see %s", m.log);
	cr_assert(kt_mwrite(&m, "control/backup", "snap\n") == 0);
	cr_assert(kt_mwrite(&m, "control/rotate", "1\n") == 0);
	dir = kt_path(m.state, "backups");
	kpath = kt_path(m.state, "keyring");
	before = dir_listing(dir);
	file_id_get(kpath, &keyring);

	cr_assert(kt_runf(&out, &err, "%s restore --offline snap.json -c '%s'",
			  kt_keyfs(), m.cfg) != 0,
		  "an offline restore ran beside a live daemon");
	cr_assert(strcmp(out, "") == 0, "restore printed: %s", out);
	cr_assert(one_line(err), "stderr is not one line: %s", err);
	cr_assert(kt_contains(err, "daemon") || kt_contains(err, "in use") ||
		      kt_contains(err, "running"),
		  "the refusal does not say a daemon holds the state: %s", err);

	after = dir_listing(dir);
	cr_assert(strcmp(before, after) == 0,
		  "the refused restore changed the backups: %s", after);
	file_id_same(kpath, &keyring, "the refused restore");
	v = kt_mread(&m, "version", NULL);
	cr_assert(v && strcmp(v, "2\n") == 0, "version is now %s", v);
	cr_assert(kt_mount_stop(&m) == 0);
	free(v);
	free(after);
	free(before);
	free(kpath);
	free(dir);
	free(out);
	free(err);
	mount_free(&m);
}

/* --- help, version, usage errors ---------------------------------------- */

Test(cli, help_lists_every_command)
{
	const char *cmds[] = {
	    "mount",	 "genkey",  "validate",	 "derive",	"ctl",
	    "backup",	 "restore", "audit",	 "export-env",	"--help",
	    "--version", "rotate",  "prune",	 "retire",	"status",
	    "verify",	 "list",    "--offline", "audit-rotate"};
	char *out = NULL, *err = NULL;

	cr_assert(kt_runf(&out, &err, "%s --help", kt_keyfs()) == 0);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		cr_assert(kt_contains(out, cmds[i]),
			  "--help does not mention %s", cmds[i]);
	cr_assert(strcmp(err, "") == 0);
	free(out);
	free(err);
}

Test(cli, version_prints_one_line)
{
	char *out = NULL, *err = NULL;
	int major = -1;

	cr_assert(kt_runf(&out, &err, "%s --version", kt_keyfs()) == 0);
	cr_assert(one_line(out), "--version: %s", out);
	cr_assert(sscanf(out, "keyfs %d", &major) == 1 && major >= 0,
		  "--version: %s", out);
	cr_assert(strcmp(err, "") == 0);
	free(out);
	free(err);
}

Test(cli, unknown_command_exits_2_without_echo)
{
	const char *words[] = {"frobnicate-zz9", "rotatezz9", "--zz9opt"};

	for (size_t i = 0; i < 3; i++) {
		char *out = NULL, *err = NULL;
		int rc = kt_runf(&out, &err, "%s '%s'", kt_keyfs(), words[i]);

		cr_assert(rc == 2, "%s: exit %d, expected 2", words[i], rc);
		cr_assert(one_line(err), "%s: stderr not one line: %s",
			  words[i], err);
		cr_assert(!kt_contains(err, "zz9"),
			  "the unknown word was echoed: %s", err);
		cr_assert(strcmp(out, "") == 0);
		free(out);
		free(err);
	}
}

/* `keyfs ARGS </dev/null` fails with one line on standard error. */
static void expect_one_line_error(const char *args, char **out, char **err)
{
	int rc = kt_runf(out, err, "%s %s </dev/null", kt_keyfs(), args);

	cr_assert(rc != 0, "'keyfs %s' succeeded", args);
	cr_assert(one_line(*err), "'keyfs %s': stderr not one line: %s", args,
		  *err);
}

Test(cli, missing_arguments_print_a_usage_line)
{
	const char *args[] = {
	    "derive",	    "validate a b",	 "ctl",	   "ctl prune",
	    "ctl retire",   "ctl restore",	 "backup", "backup verify",
	    "restore",	    "restore --offline", "audit",  "audit list",
	    "export-env x", "genkey x"};

	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		char *out = NULL, *err = NULL;

		expect_one_line_error(args[i], &out, &err);
		cr_assert(kt_contains(err, "usage") ||
			      kt_contains(err, "takes no arguments"),
			  "'keyfs %s': no usage line: %s", args[i], err);
		cr_assert(strcmp(out, "") == 0);
		free(out);
		free(err);
	}
}

Test(cli, bad_options_are_one_line_errors)
{
	const char *args[] = {"backup list --bogus", "audit verify --bogus",
			      "export-env --bogus", "ctl status --mount",
			      "restore --offline x -q"};

	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		char *out = NULL, *err = NULL;

		expect_one_line_error(args[i], &out, &err);
		free(out);
		free(err);
	}
}

/* --- ctl against a running tree ----------------------------------------- */

Test(cli, ctl_status_and_rotate_drive_a_mount, .fini = kt_mount_cleanup_all,
     .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *v;
	json_error_t jerr;
	json_t *o;

	kt_mount_config(&m, "cli-ctl", NULL, NULL);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed; see %s", m.log);
	cr_assert(kt_ctl(&m, &out, &err, "status --json") == 0,
		  "ctl status failed: %s", err);
	o = json_loads(out, 0, &jerr);
	cr_assert(o, "ctl status is not JSON: %s", jerr.text);
	cr_assert(json_integer_value(json_object_get(o, "version")) == 1,
		  "status version is not 1");
	json_decref(o);
	free(out);
	free(err);

	cr_assert(kt_ctl(&m, &out, &err, "rotate") == 0,
		  "ctl rotate failed: %s", err);
	cr_assert(strcmp(out, "rotated: version 2\n") == 0,
		  "ctl rotate said: %s", out);
	free(out);
	free(err);
	v = kt_mread(&m, "version", NULL);
	cr_assert(v && strcmp(v, "2\n") == 0, "version file: %s", v);
	free(v);

	cr_assert(kt_ctl(&m, &out, NULL, "status --json") == 0);
	o = json_loads(out, 0, &jerr);
	cr_assert(o && json_integer_value(json_object_get(o, "version")) == 2,
		  "status after ctl rotate is not version 2");
	cr_assert(json_is_true(json_object_get(o, "has_previous_key")));
	json_decref(o);
	free(out);
	cr_assert(kt_mount_stop(&m) == 0);
	mount_free(&m);
}

#define MANY_PURPOSES 4096 /* KF_CONFIG_MAX_PURPOSES */

/*
 * At the configuration's limit of purposes the status object is far above
 * 64 KiB; ctl status reads it to the end and prints all of it.
 */
Test(cli, ctl_status_prints_a_status_of_4096_purposes,
     .fini = kt_mount_cleanup_all, .timeout = 120)
{
	static struct kt_mount m;
	char *sections = NULL, *out = NULL, *err = NULL, *raw, *path;
	size_t len = 0, cap = 0, raw_len = 0;
	json_error_t jerr;
	struct stat st;
	json_t *o, *ps;
	FILE *f = open_memstream(&sections, &cap);

	cr_assert(f);
	/* One short [purpose] section each: inih lines are 200 chars. */
	for (int i = 0; i < MANY_PURPOSES; i++)
		fprintf(f,
			"[purpose p%04d-with-a-longer-name]\n"
			"access = 0:0 0400\n",
			i);
	cr_assert(fclose(f) == 0);
	/* The list replaces the default four, the sections add the rest. */
	kt_mount_config(&m, "cli-many",
			"retain_versions = 1000\n"
			"purposes = p0000-with-a-longer-name\n",
			sections);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed; see %s", m.log);
	for (int i = 0; i < 3; i++)
		cr_assert(kt_mwrite(&m, "control/rotate", "1\n") == 0);

	path = kt_mpath(&m, "status");
	cr_assert(stat(path, &st) == 0, "stat status: %s", strerror(errno));
	raw = kt_read_file(path, &raw_len);
	cr_assert(raw, "read status: %s", strerror(errno));
	cr_assert(raw_len > 65536, "status is only %zu bytes", raw_len);
	cr_expect((size_t)st.st_size == raw_len,
		  "status: stat says %lld bytes, a read gives %zu",
		  (long long)st.st_size, raw_len);

	cr_assert(kt_ctl(&m, &out, &err, "status --json") == 0,
		  "ctl status of %zu bytes failed: %s", raw_len, err);
	len = strlen(out);
	o = json_loads(out, 0, &jerr);
	cr_assert(o, "ctl status printed no JSON (%zu bytes): %s", len,
		  jerr.text);
	ps = json_object_get(o, "purposes");
	cr_expect(json_array_size(ps) == MANY_PURPOSES,
		  "ctl status lists %zu purposes", json_array_size(ps));
	cr_expect(strcmp(json_string_value(json_array_get(ps, 4095)),
			 "p4095-with-a-longer-name") == 0,
		  "the last purpose is missing");
	cr_expect(json_integer_value(json_object_get(o, "version")) == 4,
		  "status version is not 4");
	cr_expect(json_array_size(json_object_get(o, "versions")) == 4,
		  "status lists %zu versions",
		  json_array_size(json_object_get(o, "versions")));
	json_decref(o);
	cr_assert(kt_mount_stop(&m) == 0);
	free(raw);
	free(path);
	free(out);
	free(err);
	free(sections);
	mount_free(&m);
}

/* --- ctl status for people ---------------------------------------------- */

/* The line of out that starts with label (malloc'd, without "\n"), or
 * NULL. */
static char *line_of(const char *out, const char *label)
{
	size_t n = strlen(label);

	for (const char *p = out; p && *p;
	     p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, label, n) == 0)
			return strndup(p, strcspn(p, "\n"));
	return NULL;
}

/* Asserts that out has a line starting with label and holding want. */
static void expect_row(const char *out, const char *label, const char *want)
{
	char *line = line_of(out, label);

	cr_assert(line, "no \"%s\" line in:\n%s", label, out);
	cr_assert(kt_contains(line, want), "\"%s\" is not in \"%s\"", want,
		  line);
	free(line);
}

/* The number of names in dir (asserts that it can be read). */
static size_t count_names(const char *dir)
{
	char *names = kt_names(dir);
	size_t n = 0;

	for (const char *p = names; *p; p++)
		n += *p == '\n';
	free(names);
	return n;
}

Test(cli, ctl_status_summarizes_the_tree_and_json_is_the_status_file,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *raw, *want, *backups;
	json_t *o, *file;

	kt_mount_config(&m, "cli-summary", NULL, NULL);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed; see %s", m.log);
	cr_assert(kt_ctl(&m, NULL, NULL, "rotate") == 0);
	cr_assert(kt_ctl(&m, NULL, NULL, "backup nightly") == 0);

	/* --json: the status file's object, whole. */
	cr_assert(kt_ctl(&m, &out, &err, "status --json") == 0, "%s", err);
	o = json_loads(out, 0, NULL);
	raw = kt_mread(&m, "status", NULL);
	file = json_loads(raw, 0, NULL);
	cr_assert(o && file && json_equal(o, file),
		  "ctl status --json is not the status file:\n%s", out);
	json_decref(file);
	free(raw);
	free(out);
	free(err);

	/* Without it: a summary, one labelled line per subject. */
	cr_assert(kt_ctl(&m, &out, &err, "status") == 0, "%s", err);
	cr_assert(strcmp(err, "") == 0, "stderr: %s", err);
	cr_assert(!json_loads(out, 0, NULL), "the summary is JSON:\n%s", out);
	expect_row(out, "keyfs tree ", m.mnt);
	expect_row(out, "version ", "2 (previous 1)");
	expect_row(out, "current key ", "s ago");
	expect_row(out, "next rotation ", "none automatic (rotate_interval 0)");
	expect_row(out, "fingerprints ",
		   json_string_value(json_object_get(o, "fingerprint")));
	expect_row(
	    out, "fingerprints ",
	    json_string_value(json_object_get(o, "previous_fingerprint")));
	backups = kt_path(m.state, "backups");
	cr_assert(asprintf(&want, "%zu, last nightly.json",
			   count_names(backups)) > 0);
	expect_row(out, "backups ", want);
	expect_row(out, "store ", "file");
	expect_row(out, "read mode ", "audited");
	cr_assert(printable(out), "the summary is not plain text");
	json_decref(o);
	free(want);
	free(backups);
	free(out);
	free(err);
	cr_assert(kt_mount_stop(&m) == 0);
	mount_free(&m);
}

/*
 * The summary of a status with an etcd store and an audit object, from a
 * folder that holds the files ctl reads (status, version, backups/): each
 * node, the store's state, what needs attention, and a member of the audit
 * object that ctl does not know, shown as it is.
 */
Test(cli, ctl_status_summarizes_an_etcd_store_and_the_audit_object)
{
	static const char status[] =
	    "{\"version\": 7, \"previous_version\": 6, \"created\": "
	    "\"2026-01-02T03:04:05Z\", \"fingerprint\": \"00112233aabbccdd\","
	    " \"previous_fingerprint\": \"4455667788990011\", "
	    "\"retired_versions\": [3], \"rotate_interval\": \"90d\", "
	    "\"next_rotation\": \"2026-04-02T03:04:05Z\", \"mode\": "
	    "\"production\", \"read_mode\": \"strict\", \"opens_audited\": "
	    "true, \"store\": {\"type\": \"etcd\", \"prefix\": \"/keyfs/t\", "
	    "\"node\": \"app-a\", \"state\": \"degraded\", \"since\": "
	    "\"2026-01-02T03:04:05Z\", \"reason\": \"no quorum\", "
	    "\"generation\": 12, \"origin_node\": \"app-b\", \"change\": "
	    "\"rotate\", \"nodes\": [{\"node\": \"app-a\", \"version\": 7, "
	    "\"generation\": 12, \"state\": \"degraded\", \"seen\": "
	    "\"2026-01-02T03:04:06Z\"}, {\"node\": \"app-b\", \"version\": 7, "
	    "\"generation\": 12, \"state\": \"ok\", \"seen\": "
	    "\"2026-01-02T03:04:07Z\"}]}, \"audit\": {\"open_window\": 1, "
	    "\"syslog\": {\"enabled\": true, \"dropped\": 4}, "
	    "\"free_percent\": 3, \"low_space\": true, \"min_free\": 5, "
	    "\"write_failures\": 0, \"future_member\": \"zz9\"}}\n";
	char *dir = kt_tmpdir("cli-fake-tree"), *p, *out = NULL, *err = NULL;

	p = kt_path(dir, "status");
	kt_write_file(p, status, 0644);
	free(p);
	p = kt_path(dir, "version");
	kt_write_file(p, "7\n", 0644);
	free(p);
	p = kt_path(dir, "backups");
	cr_assert(mkdir(p, 0700) == 0);
	free(p);
	cr_assert(kt_runf(&out, &err, "%s ctl status --mount '%s'", kt_keyfs(),
			  dir) == 0,
		  "%s", err);
	expect_row(out, "version ", "7 (previous 6; retired 3)");
	expect_row(out, "current key ", "created 2026-01-02T03:04:05Z");
	expect_row(out, "next rotation ", "(rotate_interval 90d)");
	expect_row(out, "fingerprints ",
		   "current 00112233aabbccdd, previous 4455667788990011");
	expect_row(out, "backups ", "none");
	expect_row(out, "audit ",
		   "attention: low space (3% free, alarm below 5%)");
	expect_row(out, "audit ", "lines not sent to syslog 4");
	cr_assert(kt_contains(out, "future_member zz9"), "%s", out);
	cr_assert(kt_contains(out, "syslog (enabled true, dropped 4)"), "%s",
		  out);
	expect_row(out, "store ",
		   "etcd /keyfs/t, node app-a: degraded since "
		   "2026-01-02T03:04:05Z: no quorum");
	cr_assert(kt_contains(out, "generation 12 (rotate by node app-b)"),
		  "%s", out);
	cr_assert(kt_contains(out, "node app-b: version 7, generation 12, ok, "
				   "seen 2026-01-02T03:04:07Z"),
		  "%s", out);
	expect_row(out, "read mode ", "strict");
	free(out);
	free(err);
	free(dir);
}

/* --- -c FILE before the command ----------------------------------------- */

/*
 * Every command that reads a configuration takes -c FILE before its name as
 * it does after: a file that does not exist fails both ways with the same
 * line, which names it.
 */
Test(cli, config_before_the_command_reaches_every_command)
{
	static const char *const cmds[] = {
	    "mount",	    "ctl status",      "ctl rotate",
	    "backup list",  "backup verify x", "restore --offline x",
	    "audit verify", "export-env",      "cluster status",
	    "cluster init"};
	const char *cfg = "/nonexistent-zz/keyfs.ini";

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		const char *forms[] = {"-c %s %s", "--config %s %s",
				       "--config=%s %s", "-c%s %s"};
		char *after = NULL;
		int rc;

		rc = kt_runf(NULL, &after, "%s %s -c %s", kt_keyfs(), cmds[i],
			     cfg);
		cr_assert(rc == 1, "keyfs %s -c: exit %d", cmds[i], rc);
		cr_assert(one_line(after) && kt_contains(after, cfg),
			  "keyfs %s -c: %s", cmds[i], after);
		for (size_t f = 0; f < 4; f++) {
			char *fmt, *before = NULL;

			cr_assert(asprintf(&fmt, "%%s %s", forms[f]) > 0);
			rc = kt_runf(NULL, &before, fmt, kt_keyfs(), cfg,
				     cmds[i]);
			cr_assert(rc == 1 && strcmp(before, after) == 0,
				  "keyfs %s: exit %d, said \"%s\", not \"%s\"",
				  forms[f], rc, before, after);
			free(before);
			free(fmt);
		}
		free(after);
	}
}

Test(cli, config_before_the_command_drives_a_mount,
     .fini = kt_mount_cleanup_all, .timeout = 60)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL;
	json_t *o;

	kt_mount_config(&m, "cli-global-c", NULL, NULL);
	cr_assert(kt_mount_start(&m, NULL) == 0, "mount failed; see %s", m.log);
	/* No --mount: the mountpoint comes from the configuration. */
	cr_assert(kt_runf(&out, &err, "%s -c '%s' ctl rotate", kt_keyfs(),
			  m.cfg) == 0,
		  "%s", err);
	cr_assert(strcmp(out, "rotated: version 2\n") == 0, "%s", out);
	free(out);
	free(err);
	cr_assert(kt_runf(&out, &err, "%s -c '%s' ctl status --json",
			  kt_keyfs(), m.cfg) == 0,
		  "%s", err);
	o = json_loads(out, 0, NULL);
	cr_assert(o && json_integer_value(json_object_get(o, "version")) == 2,
		  "%s", out);
	json_decref(o);
	free(out);
	free(err);
	cr_assert(kt_runf(&out, &err, "%s -c '%s' backup list", kt_keyfs(),
			  m.cfg) == 0,
		  "%s", err);
	cr_assert(kt_contains(out, "key_backup_"), "%s", out);
	free(out);
	free(err);
	cr_assert(kt_mount_stop(&m) == 0);
	mount_free(&m);
}

Test(cli, config_before_a_command_without_configuration_is_refused)
{
	static const char *const cmds[] = {"genkey", "validate -",
					   "derive phi"};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char *out = NULL, *err = NULL;
		int rc = kt_runf(&out, &err, "%s -c /tmp/x.ini %s </dev/null",
				 kt_keyfs(), cmds[i]);

		cr_assert(rc == 2, "keyfs -c FILE %s: exit %d", cmds[i], rc);
		cr_assert(one_line(err) && kt_contains(err, "takes no -c"),
			  "keyfs -c FILE %s: %s", cmds[i], err);
		cr_assert(strcmp(out, "") == 0, "keyfs -c FILE %s printed",
			  cmds[i]);
		free(out);
		free(err);
	}
}

/* --- --help on every command --------------------------------------------- */

Test(cli, every_command_answers_help_with_its_own_usage)
{
	static const struct {
		const char *args, *name;
	} cases[] = {
	    {"genkey --help", "genkey"},
	    {"validate -h", "validate"},
	    {"derive --help", "derive"},
	    {"ctl --help", "ctl"},
	    {"ctl status --help", "ctl"},
	    {"ctl rotate -h", "ctl"},
	    {"ctl restore --help", "ctl"},
	    {"backup --help", "backup"},
	    {"backup verify -h", "backup"},
	    {"restore --offline --help", "restore"},
	    {"audit verify --help", "audit"},
	    {"export-env -h", "export-env"},
	    {"cluster --help", "cluster"},
	    {"cluster init -h", "cluster"},
	    {"-c /nonexistent-zz.ini ctl --help", "ctl"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = NULL, *err = NULL, *want;
		int rc = kt_runf(&out, &err, "%s %s </dev/null", kt_keyfs(),
				 cases[i].args);

		cr_assert(rc == 0, "keyfs %s: exit %d: %s", cases[i].args, rc,
			  err);
		cr_assert(strcmp(err, "") == 0, "keyfs %s: stderr %s",
			  cases[i].args, err);
		cr_assert(asprintf(&want, "  keyfs %s ", cases[i].name) > 0);
		cr_assert(strncmp(out, "usage:\n", 7) == 0 &&
			      kt_contains(out, want),
			  "keyfs %s printed:\n%s", cases[i].args, out);
		/* That command's usage, not every command's. */
		cr_assert(!kt_contains(out, "  keyfs mount "),
			  "keyfs %s printed all commands:\n%s", cases[i].args,
			  out);
		free(want);
		free(out);
		free(err);
	}
}

Test(cli, mount_answers_help)
{
	char *out = NULL, *err = NULL;

	cr_assert(kt_runf(&out, &err, "%s mount --help", kt_keyfs()) == 0);
	cr_assert(kt_contains(out, "mount [-c FILE]"), "%s", out);
	cr_assert(strcmp(err, "") == 0);
	free(out);
	free(err);
}

Test(cli, usage_errors_exit_2)
{
	static const char *const args[] = {"ctl",
					   "ctl frobzz9",
					   "ctl prune",
					   "ctl rotate --json",
					   "ctl status x",
					   "backup",
					   "backup verify",
					   "backup frob",
					   "restore",
					   "restore x",
					   "export-env x",
					   "genkey x",
					   "validate a b",
					   "derive",
					   "cluster",
					   "cluster frob",
					   "cluster status --from-state",
					   "audit",
					   "audit list",
					   "audit verify --bogus",
					   "-c",
					   "-c x.ini"};

	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		char *out = NULL, *err = NULL;
		int rc = kt_runf(&out, &err, "%s %s </dev/null", kt_keyfs(),
				 args[i]);

		cr_assert(rc == 2, "keyfs %s: exit %d, expected 2", args[i],
			  rc);
		cr_assert(one_line(err), "keyfs %s: %s", args[i], err);
		cr_assert(!kt_contains(err, "zz9"), "echoed: %s", err);
		free(out);
		free(err);
	}
}

/* --- backup verify NAME ------------------------------------------------- */

Test(cli, backup_verify_takes_a_backup_name)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *elsewhere, *decoy;
	const char *names[] = {"snap", "snap.json"};
	struct noted n = {0};

	rotated_state(&m, "cli-verify-name", &n);
	noted_free(&n);
	elsewhere = kt_tmpdir("cli-verify-cwd");
	/* A name, with or without .json, from a folder that is not the
	 * backup folder; then the archive's path. */
	for (size_t i = 0; i < 2; i++) {
		cr_assert(kt_runf(&out, &err,
				  "cd '%s' && %s backup verify %s -c '%s'",
				  elsewhere, kt_keyfs(), names[i], m.cfg) == 0,
			  "backup verify %s: %s", names[i], err);
		cr_assert(strncmp(out, "ok: snap.json created ", 22) == 0 &&
			      kt_contains(out, "key version 1, 1 versions"),
			  "backup verify %s said: %s", names[i], out);
		free(out);
		free(err);
	}
	cr_assert(kt_runf(&out, &err,
			  "%s backup verify '%s/backups/snap.json' "
			  "-c '%s'",
			  kt_keyfs(), m.state, m.cfg) == 0,
		  "%s", err);
	free(out);
	free(err);

	/* A name that is no archive: one line naming the folder looked in. */
	cr_assert(kt_runf(&out, &err,
			  "cd '%s' && %s backup verify nosuch -c "
			  "'%s'",
			  elsewhere, kt_keyfs(), m.cfg) == 1);
	cr_assert(one_line(err) && kt_contains(err, "nosuch") &&
		      kt_contains(err, "/backups"),
		  "%s", err);
	free(out);
	free(err);

	/* A file of that name here is a path, as for restore --offline. */
	decoy = kt_path(elsewhere, "snap.json");
	kt_write_file(decoy, "not an archive\n", 0600);
	cr_assert(kt_runf(&out, &err,
			  "cd '%s' && %s backup verify snap.json -c '%s'",
			  elsewhere, kt_keyfs(), m.cfg) == 1,
		  "the file here was not the one verified: %s", out);
	cr_assert(kt_contains(err, "backup verify: snap.json: "), "%s", err);
	free(out);
	free(err);
	free(decoy);
	free(elsewhere);
	mount_free(&m);
}

/* --- which configuration ctl used ---------------------------------------- */

Test(cli, ctl_elsewhere_names_the_embedded_configuration)
{
	static const char *const ops[] = {"status", "rotate", "backup x"};
	char *dir = kt_tmpdir("cli-elsewhere"), *want, *names;
	struct stat st;

	if (stat("/etc/keyfs/keyfs.ini", &st) == 0)
		cr_skip_test("/etc/keyfs/keyfs.ini exists: the embedded "
			     "configuration is not the default here");
	cr_assert(asprintf(&want,
			   "its mountpoint .keyfs-dev/mnt is relative to the "
			   "current folder, and %s/.keyfs-dev/mnt is not a "
			   "mounted keyfs tree",
			   dir) > 0);
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		char *out = NULL, *err = NULL;
		int rc = kt_runf(&out, &err,
				 "cd '%s' && env -u KEYFS_CONFIG %s ctl %s",
				 dir, kt_keyfs(), ops[i]);

		cr_assert(rc == 1, "ctl %s: exit %d", ops[i], rc);
		cr_assert(one_line(err), "ctl %s: %s", ops[i], err);
		cr_assert(kt_contains(err, "keyfs ctl: using the embedded "
					   "development configuration (no -c, "
					   "no KEYFS_CONFIG, no "
					   "/etc/keyfs/keyfs.ini)"),
			  "ctl %s: %s", ops[i], err);
		cr_assert(kt_contains(err, want), "ctl %s: %s", ops[i], err);
		cr_assert(kt_contains(err, "--mount DIR"), "%s", err);
		free(out);
		free(err);
	}
	/* It only looked: nothing was made here. */
	names = kt_names(dir);
	cr_assert(strcmp(names, "") == 0, "ctl made files here: %s", names);
	free(names);
	free(want);
	free(dir);
}

Test(cli, ctl_names_the_configuration_of_a_tree_not_mounted)
{
	static struct kt_mount m;
	char *out = NULL, *err = NULL, *want;

	kt_mount_config(&m, "cli-not-mounted", NULL, NULL);
	cr_assert(kt_runf(&out, &err, "%s ctl status -c '%s'", kt_keyfs(),
			  m.cfg) == 1);
	cr_assert(asprintf(&want,
			   "keyfs ctl: %s, the mountpoint of -c %s, is not a "
			   "mounted keyfs tree (is the daemon running?)\n",
			   m.mnt, m.cfg) > 0);
	cr_assert(strcmp(err, want) == 0, "said: %s", err);
	free(want);
	free(out);
	free(err);
	cr_assert(kt_runf(&out, &err, "KEYFS_CONFIG='%s' %s ctl rotate", m.cfg,
			  kt_keyfs()) == 1);
	cr_assert(asprintf(&want, "the mountpoint of KEYFS_CONFIG=%s, is not",
			   m.cfg) > 0);
	cr_assert(kt_contains(err, want) && one_line(err), "said: %s", err);
	free(want);
	free(out);
	free(err);
	cr_assert(kt_runf(&out, &err, "%s ctl status --mount '%s'", kt_keyfs(),
			  m.dir) == 1);
	cr_assert(kt_contains(err, "(--mount) is not a mounted keyfs tree") &&
		      one_line(err),
		  "said: %s", err);
	free(out);
	free(err);
	mount_free(&m);
}
