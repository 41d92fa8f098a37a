// SPDX-License-Identifier: MIT
/*
 * The reference (issue 13 item 7) as a user gets it: keyfs(8) and
 * keyfs.ini(5) as built, rendered by `man -l`; the real binary's --help;
 * the bash completion sourced in bash; and what `meson install` puts where.
 *
 * Where the lists come from, so that a page falls behind the code only by
 * failing here:
 * - commands: `keyfs --help` of the binary under test;
 * - control files: the control table itself (kf_control_at, fs/control.h);
 * - configuration keys: the parser's own table, key_table in
 *   core/config_parse.c.  It is static, and core is not ours to change, so
 *   the test reads its rows, {"name", SEC_...}, from the source.  That text
 *   is checked three ways before it is trusted: one row per enumerator of
 *   enum key_id (a row written differently fails, it is not skipped); every
 *   name read is a key the real parser (kf_config_parse) knows in that
 *   section; and a made-up key is one it does not know, so the check can
 *   fail.  Every key documented in a section is also asked of the parser,
 *   so the page documents no key that is gone.
 * - environment variables: every getenv("NAME") in core/, fs/ and cmd/,
 *   and the names core/env.c takes secrets from.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "control.h"
#include "helpers.h"

#define ENTRY_INDENT "       " /* a man page's entry heading: 7 spaces */
#define KEYS_MAX 128
#define NAMES_MAX 64

/* Where the pages are built, and where meson installs what (meson.build). */
#if !defined(KT_MAN_BUILT) || !defined(KT_BUILDDIR) || !defined(KT_MANDIR) ||  \
    !defined(KT_COMPLETIONSDIR)
#error                                                                         \
    "tests/meson.build defines KT_MAN_BUILT, KT_BUILDDIR, KT_MANDIR and KT_COMPLETIONSDIR"
#endif

/* A page rendered as `man -l` prints it to a pipe: plain text, no
 * hyphenation, lines wide enough that headings never wrap.  Asserts that
 * man succeeds and groff warns of nothing.  malloc'd. */
static char *render(const char *page)
{
	char *out = NULL, *err = NULL;
	int rc = kt_runf(&out, &err,
			 "LC_ALL=C MANWIDTH=200 MANROFFOPT=-rHY=0 man "
			 "--warnings -l '%s/%s'",
			 KT_MAN_BUILT, page);

	cr_assert(rc == 0, "man -l %s: exit %d: %s", page, rc, err);
	cr_assert(strcmp(err, "") == 0, "man -l %s warned: %s", page, err);
	cr_assert(strlen(out) > 1000, "man -l %s printed little: %s", page,
		  out);
	free(err);
	return out;
}

/* text with every run of white space made one space (malloc'd). */
static char *flat(const char *text)
{
	char *s = malloc(strlen(text) + 1), *o = s;
	bool space = false;

	cr_assert(s);
	for (; *text; text++) {
		bool w = *text == ' ' || *text == '\n' || *text == '\t';

		if (w && !space)
			*o++ = ' ';
		else if (!w)
			*o++ = *text;
		space = w;
	}
	*o = 0;
	return s;
}

/*
 * The part of a rendered page under the heading `title` (a line of its
 * own at the left margin) up to the next such heading (malloc'd).
 */
static char *part(const char *text, const char *title)
{
	const char *p = text, *start = NULL, *end;
	size_t n = strlen(title);

	for (; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, title, n) == 0 && p[n] == '\n') {
			start = p + n + 1;
			break;
		}
	cr_assert(start, "no heading \"%s\"", title);
	/* The next line that starts at the left margin. */
	for (end = start; *end && (*end == ' ' || *end == '\n');) {
		const char *nl = strchr(end, '\n');

		end = nl ? nl + 1 : end + strlen(end);
	}
	return strndup(start, (size_t)(end - start));
}

/*
 * The entry of `heading` in a part: from the line ENTRY_INDENT heading ...
 * to the next line at that indentation (malloc'd), or NULL.
 */
static char *entry(const char *text, const char *heading)
{
	size_t n = strlen(ENTRY_INDENT), h = strlen(heading);
	const char *p, *end;

	for (p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		if (strncmp(p, ENTRY_INDENT, n) != 0 || p[n] == ' ' ||
		    strncmp(p + n, heading, h) != 0)
			continue;
		for (end = strchr(p, '\n'); end && end[1];
		     end = strchr(end + 1, '\n'))
			if (strncmp(end + 1, ENTRY_INDENT, n) == 0 &&
			    end[1 + n] != ' ')
				break;
		return end ? strndup(p, (size_t)(end - p)) : strdup(p);
	}
	return NULL;
}

/* A whole source file (asserts). */
static char *source(const char *rel)
{
	char *path = kt_path(kt_srcdir(), rel), *text;

	text = kt_read_file(path, NULL);
	cr_assert(text, "cannot read %s", path);
	free(path);
	return text;
}

/* --- the parser's keys ------------------------------------------------------
 */

struct key {
	char name[NAMES_MAX];
	char section[NAMES_MAX]; /* "keyfs", "access", "etcd" */
};

/* The text of s from the first `from` to the `to` after it (malloc'd). */
static char *between(const char *s, const char *from, const char *to)
{
	const char *a = strstr(s, from), *b;

	cr_assert(a, "no \"%s\"", from);
	b = strstr(a, to);
	cr_assert(b, "no \"%s\" after \"%s\"", to, from);
	return strndup(a, (size_t)(b - a));
}

/* How many matches of the extended regular expression re text holds; the
 * first group of each into out (when not NULL), up to max. */
static size_t matches(const char *text, const char *re, char (*out)[NAMES_MAX],
		      char (*out2)[NAMES_MAX], size_t max)
{
	regmatch_t m[3];
	regex_t r;
	size_t n = 0;

	cr_assert(regcomp(&r, re, REG_EXTENDED) == 0, "bad regex %s", re);
	for (const char *p = text; regexec(&r, p, 3, m, 0) == 0;
	     p += m[0].rm_eo) {
		if (out && n < max)
			snprintf(out[n], NAMES_MAX, "%.*s",
				 (int)(m[1].rm_eo - m[1].rm_so),
				 p + m[1].rm_so);
		if (out2 && n < max)
			snprintf(out2[n], NAMES_MAX, "%.*s",
				 (int)(m[2].rm_eo - m[2].rm_so),
				 p + m[2].rm_so);
		n++;
	}
	regfree(&r);
	return n;
}

/*
 * Whether kf_config_parse knows `key` in the section whose header is
 * `header` ("[keyfs]", "[purpose x]"): any answer but "unknown key".
 */
static bool parser_knows(const char *header, const char *key)
{
	char err[KF_ERR_MAX] = "", *text;
	struct kf_config *cfg = NULL;
	int r;

	cr_assert(asprintf(&text, "%s\n%s = x\n", header, key) > 0);
	r = kf_config_parse(text, "probe", "/", &cfg, err);
	free(text);
	kf_config_free(cfg);
	return r == 0 || !strstr(err, "unknown key");
}

/* Every key of core/config_parse.c's key_table, checked as the header says;
 * returns how many. */
static size_t parser_keys(struct key keys[KEYS_MAX])
{
	char names[KEYS_MAX][NAMES_MAX], secs[KEYS_MAX][NAMES_MAX];
	char *src = source("core/config_parse.c");
	char *table = between(src, "key_table[K_COUNT] = {", "};");
	char *ids = between(src, "enum key_id {", "K_COUNT");
	size_t n, n_ids;

	n = matches(table,
		    "\\[K_[A-Z_]+\\] = \\{\"([a-z_]+)\", SEC_([A-Z]+)\\}",
		    names, secs, KEYS_MAX);
	n_ids = matches(ids, "K_[A-Z_]+,", NULL, NULL, 0);
	cr_assert(n > 0 && n == n_ids && n <= KEYS_MAX,
		  "read %zu rows of key_table but enum key_id has %zu keys: "
		  "update this test's pattern",
		  n, n_ids);
	for (size_t i = 0; i < n; i++) {
		char header[NAMES_MAX + 2];

		snprintf(keys[i].name, NAMES_MAX, "%s", names[i]);
		for (size_t c = 0; secs[i][c]; c++)
			keys[i].section[c] = (char)(secs[i][c] - 'A' + 'a');
		keys[i].section[strlen(secs[i])] = 0;
		snprintf(header, sizeof(header), "[%s]", keys[i].section);
		cr_assert(parser_knows(header, keys[i].name),
			  "the parser does not know %s in %s: the pattern read "
			  "something else",
			  keys[i].name, header);
	}
	cr_assert(!parser_knows("[keyfs]", "zz_no_such_key"),
		  "the parser knows a made-up key: this check cannot fail");
	free(ids);
	free(table);
	free(src);
	return n;
}

/* The part of keyfs.ini(5) about one section. */
static const char *section_title(const char *section)
{
	if (strcmp(section, "keyfs") == 0)
		return "THE [keyfs] SECTION";
	if (strcmp(section, "access") == 0)
		return "THE [access] SECTION";
	if (strcmp(section, "etcd") == 0)
		return "THE [etcd] SECTION";
	cr_assert_fail("a section this test does not know: [%s]", section);
	return NULL;
}

/* Asserts that part documents key: an entry "key = ..." with a default. */
static void expect_key_entry(const char *text, const char *key,
			     const char *where)
{
	char *heading, *e;

	cr_assert(asprintf(&heading, "%s = ", key) > 0);
	e = entry(text, heading);
	cr_assert(e, "keyfs.ini(5) has no entry \"%s...\" in %s", heading,
		  where);
	cr_assert(kt_contains(e, "Default: "),
		  "keyfs.ini(5): the entry of %s in %s gives no default:\n%s",
		  key, where, e);
	free(e);
	free(heading);
}

Test(docs, man_pages_render_without_warnings)
{
	char *k8 = render("keyfs.8"), *k5 = render("keyfs.ini.5");

	cr_assert(kt_contains(k8, "NAME\n       keyfs - "), "%.300s", k8);
	cr_assert(kt_contains(k5, "NAME\n       keyfs.ini - "), "%.300s", k5);
	free(k8);
	free(k5);
}

Test(docs, keyfs_ini_5_documents_every_key_the_parser_knows)
{
	struct key keys[KEYS_MAX];
	size_t n = parser_keys(keys);
	char *page = render("keyfs.ini.5"), *purpose;

	for (size_t i = 0; i < n; i++) {
		const char *title = section_title(keys[i].section);
		char *text = part(page, title);

		expect_key_entry(text, keys[i].name, title);
		free(text);
	}
	/* [purpose NAME] has one key, outside key_table. */
	cr_assert(parser_knows("[purpose p]", "access"));
	cr_assert(!parser_knows("[purpose p]", "zz_no_such_key"));
	purpose = part(page, "[purpose NAME] SECTIONS");
	expect_key_entry(purpose, "access", "[purpose NAME]");
	free(purpose);
	free(page);
}

Test(docs, keyfs_ini_5_documents_no_key_the_parser_lacks)
{
	static const struct {
		const char *title, *header;
	} parts[] = {
	    {"THE [keyfs] SECTION", "[keyfs]"},
	    {"THE [access] SECTION", "[access]"},
	    {"THE [etcd] SECTION", "[etcd]"},
	    {"[purpose NAME] SECTIONS", "[purpose p]"},
	};
	char *page = render("keyfs.ini.5");
	size_t total = 0;

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		char names[KEYS_MAX][NAMES_MAX],
		    *text = part(page, parts[i].title);
		size_t n =
		    matches(text, "\n" ENTRY_INDENT "([a-z_]+) = ", names, NULL,
			    KEYS_MAX);

		cr_assert(n > 0, "no entry under %s", parts[i].title);
		for (size_t k = 0; k < n && k < KEYS_MAX; k++)
			cr_assert(parser_knows(parts[i].header, names[k]),
				  "keyfs.ini(5) documents %s in %s, which the "
				  "parser does not know",
				  names[k], parts[i].header);
		total += n;
		free(text);
	}
	cr_assert(total > 30, "only %zu entries", total);
	free(page);
}

/* --- keyfs(8) ----------------------------------------------------------------
 */

/* Asserts that the flattened page holds want. */
static void expect_in(const char *page, const char *want, const char *why)
{
	cr_assert(kt_contains(page, want), "keyfs(8) lacks \"%s\" (%s)", want,
		  why);
}

Test(docs, keyfs_8_documents_every_command_of_help)
{
	char *help = NULL, *err = NULL, *text = render("keyfs.8"), *page;
	regmatch_t m[3];
	size_t commands = 0;
	regex_t r;

	page = flat(text);
	cr_assert(kt_runf(&help, &err, "%s --help", kt_keyfs()) == 0);
	/* "  NAME [SUB|SUB ...]": a command, and the subcommands its usage
	 * names in lower case. */
	cr_assert(
	    regcomp(&r,
		    "^  ([a-z][a-z-]*)( -{0,2}[a-z][a-z-]*(\\|[a-z][a-z-]*)*)?"
		    "( |$)",
		    REG_EXTENDED | REG_NEWLINE) == 0);
	for (const char *p = help;
	     regexec(&r, p, 3, m,
		     p == help || p[-1] == '\n' ? 0 : REG_NOTBOL) == 0;
	     p += m[0].rm_eo) {
		char cmd[NAMES_MAX], subs[NAMES_MAX * 4] = "", *want;
		char *save = NULL;

		snprintf(cmd, sizeof(cmd), "%.*s",
			 (int)(m[1].rm_eo - m[1].rm_so), p + m[1].rm_so);
		cr_assert(asprintf(&want, "keyfs %s", cmd) > 0);
		expect_in(page, want, "a command of keyfs --help");
		free(want);
		commands++;
		if (m[2].rm_so < 0 || strcmp(cmd, "ctl") == 0)
			continue;
		snprintf(subs, sizeof(subs), "%.*s",
			 (int)(m[2].rm_eo - m[2].rm_so - 1),
			 p + m[2].rm_so + 1);
		for (char *s = strtok_r(subs, "|", &save); s;
		     s = strtok_r(NULL, "|", &save)) {
			cr_assert(asprintf(&want, "keyfs %s %s", cmd, s) > 0);
			expect_in(page, want, "a subcommand in keyfs --help");
			free(want);
		}
	}
	regfree(&r);
	cr_assert(commands >= 10, "read %zu commands from keyfs --help:\n%s",
		  commands, help);
	/* ctl's operations: the control table's, and status. */
	for (size_t i = 0; i < kf_control_count(); i++) {
		char *want;

		cr_assert(asprintf(&want, "keyfs ctl %s",
				   kf_control_at(i)->name) > 0);
		expect_in(page, want, "an operation of the control table");
		free(want);
	}
	expect_in(page, "keyfs ctl status [--json]", "ctl status");
	expect_in(page, "keyfs backup verify NAME | FILE", "backup verify");
	free(page);
	free(text);
	free(help);
	free(err);
}

Test(docs, keyfs_8_documents_every_control_file)
{
	char *page = render("keyfs.8"), *text = part(page, "CONTROL FILES");

	cr_assert(kf_control_count() >= 6);
	for (size_t i = 0; i < kf_control_count(); i++) {
		char *heading, *e;

		cr_assert(asprintf(&heading, "control/%s\n",
				   kf_control_at(i)->name) > 0);
		e = entry(text, heading);
		cr_assert(e, "keyfs(8), CONTROL FILES: no entry %s", heading);
		free(e);
		free(heading);
	}
	free(text);
	free(page);
}

/* The names of every getenv("NAME") in the .c files of dir, and of core's
 * secrets (core/env.c), into names; returns how many. */
static size_t env_names(char names[NAMES_MAX][NAMES_MAX])
{
	static const char *const dirs[] = {"core", "fs", "cmd"};
	size_t n = 0;

	for (size_t d = 0; d < 3; d++) {
		char *path = kt_path(kt_srcdir(), dirs[d]);
		DIR *dir = opendir(path);
		struct dirent *de;

		cr_assert(dir, "cannot list %s", path);
		while ((de = readdir(dir))) {
			size_t len = strlen(de->d_name);
			char *rel, *text;

			if (len < 3 || strcmp(de->d_name + len - 2, ".c") != 0)
				continue;
			cr_assert(asprintf(&rel, "%s/%s", dirs[d], de->d_name) >
				  0);
			text = source(rel);
			n += matches(text, "getenv\\(\"([A-Z_]+)\"\\)",
				     names + n, NULL, NAMES_MAX - n);
			if (strcmp(rel, "core/env.c") == 0)
				n += matches(
				    text,
				    "\\[KF_ENV_[A-Z_]+\\] = \"([A-Z_]+)\"",
				    names + n, NULL, NAMES_MAX - n);
			cr_assert(n < NAMES_MAX);
			free(text);
			free(rel);
		}
		closedir(dir);
		free(path);
	}
	return n;
}

Test(docs, keyfs_8_documents_exit_status_environment_and_files)
{
	char names[NAMES_MAX][NAMES_MAX];
	char *page = render("keyfs.8"), *env = part(page, "ENVIRONMENT");
	char *status = part(page, "EXIT STATUS"), *files = part(page, "FILES");
	size_t n = env_names(names);

	cr_assert(n >= 6, "found %zu environment variables", n);
	for (size_t i = 0; i < n; i++)
		cr_assert(kt_contains(env, names[i]),
			  "keyfs(8), ENVIRONMENT: no %s", names[i]);
	for (const char *c = "012"; *c; c++) {
		char heading[] = {*c, '\n', 0};
		char *e = entry(status, heading);

		cr_assert(e, "keyfs(8), EXIT STATUS: no %c", *c);
		free(e);
	}
	cr_assert(kt_contains(files, "/etc/keyfs/keyfs.ini") &&
		      kt_contains(files, "/etc/keyfs/master.key"),
		  "%s", files);
	free(files);
	free(status);
	free(env);
	free(page);
}

/* --- install -------------------------------------------------------------
 */

Test(docs, meson_installs_the_pages_and_the_completion, .timeout = 120)
{
	static const char *const want[] = {KT_MANDIR "/man8/keyfs.8",
					   KT_MANDIR "/man5/keyfs.ini.5",
					   KT_COMPLETIONSDIR "/keyfs"};
	char *dest = kt_tmpdir("docs-install"), *out = NULL, *err = NULL;

	cr_assert(kt_runf(&out, &err,
			  "meson install -C '%s' --no-rebuild --destdir '%s'",
			  KT_BUILDDIR, dest) == 0,
		  "meson install failed: %s%s", out, err);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char *path = kt_path(dest, want[i]), *a, *b, *built;
		struct stat st;

		cr_assert(stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
			      st.st_size > 0,
			  "meson install made no %s", path);
		/* The installed copy is the built page (or the script). */
		built = i < 2 ? kt_path(KT_MAN_BUILT, strrchr(want[i], '/') + 1)
			      : kt_path(kt_srcdir(), "completion/keyfs.bash");
		a = kt_read_file(path, NULL);
		b = kt_read_file(built, NULL);
		cr_assert(a && b && strcmp(a, b) == 0, "%s is not %s", path,
			  built);
		free(a);
		free(b);
		free(built);
		free(path);
	}
	free(out);
	free(err);
	free(dest);
}

/* --- bash completion -----------------------------------------------------
 */

/*
 * What _keyfs completes for each line, with the binary under test as the
 * command word: one line of output per completion, its words sorted and
 * separated by spaces.
 */
static char *complete_lines(const char *dir, const char *const *lines, size_t n)
{
	char *script = NULL, *out = NULL, *err = NULL, *comp;
	size_t size = 0;
	FILE *f = open_memstream(&script, &size);

	cr_assert(f);
	comp = kt_path(kt_srcdir(), "completion/keyfs.bash");
	fprintf(f,
		"export LC_ALL=C\n"
		"cd '%s' || exit 1\n"
		"source '%s' || exit 1\n"
		"[[ $(complete -p keyfs) == 'complete -F _keyfs keyfs' ]] || "
		"exit 3\n"
		"t() { COMP_WORDS=('%s' \"$@\"); "
		"COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _keyfs; "
		"printf '%%s\\n' \"${COMPREPLY[@]}\" | sort | "
		"tr '\\n' ' '; echo; }\n",
		dir, comp, kt_keyfs());
	for (size_t i = 0; i < n; i++)
		fprintf(f, "t %s\n", lines[i]);
	cr_assert(fclose(f) == 0);
	cr_assert(kt_run("bash --norc --noprofile", script, &out, &err) == 0,
		  "bash: %s", err);
	cr_assert(strcmp(err, "") == 0, "bash said: %s", err);
	free(comp);
	free(script);
	free(err);
	return out;
}

Test(docs, bash_completion_completes_commands_operations_and_files)
{
	static const char *const lines[] = {
	    "c",		 /* commands, from keyfs --help */
	    "''",		 /* all of them */
	    "ctl ''",		 /* ctl's operations: the control table */
	    "ctl a",		 /* audit-rotate */
	    "-c some.ini ctl r", /* past -c FILE before the command */
	    "ctl status -",	 /* ctl status's options */
	    "-c ke",		 /* files after -c */
	    "ctl rotate --config sub/", /* and after --config, anywhere */
	    "backup ''",		/* backup's subcommands */
	    "cluster init --f",		/* --from-state */
	    "ctl prune 3 f",		/* force */
	    "ctl rotate ''",		/* the steps of a staged rotation */
	    "ctl wait --timeout 5 -",	/* ctl wait's options */
	    "rekey -",			/* rekey's options */
	    "rekey --new-master ke",	/* a file after --new-master */
	    "recovery-keygen -",	/* the pair's options */
	    "restore --offline --recovery-key ke", /* a file after it */
	};
	char *dir = kt_tmpdir("docs-complete"), *sub = kt_path(dir, "sub");
	char *ini = kt_path(dir, "keyfs.ini"), *in_sub, *out, *want, *all;
	char *ops = NULL;
	size_t len = 0;
	FILE *f;

	kt_write_file(ini, "[keyfs]\n", 0600);
	cr_assert(mkdir(sub, 0700) == 0);
	in_sub = kt_path(sub, "other.ini");
	kt_write_file(in_sub, "[keyfs]\n", 0600);
	/* ctl's operations as the control table has them, sorted. */
	f = open_memstream(&ops, &len);
	cr_assert(f);
	{
		const char *names[32];
		size_t n = kf_control_count() + 2;

		cr_assert(n <= 32);
		for (size_t i = 0; i + 2 < n; i++)
			names[i] = kf_control_at(i)->name;
		names[n - 2] = "wait"; /* ctl's own, beside the table's */
		names[n - 1] = "status";
		for (size_t i = 0; i < n; i++)
			for (size_t j = i + 1; j < n; j++)
				if (strcmp(names[j], names[i]) < 0) {
					const char *t = names[i];

					names[i] = names[j];
					names[j] = t;
				}
		for (size_t i = 0; i < n; i++)
			fprintf(f, "%s ", names[i]);
	}
	cr_assert(fclose(f) == 0);

	out = complete_lines(dir, lines, sizeof(lines) / sizeof(lines[0]));
	all = strdup("audit backup cluster ctl derive export-env genkey "
		     "mount recovery-keygen rekey restore validate ");
	cr_assert(asprintf(&want,
			   "cluster ctl \n"
			   "%s\n"
			   "%s\n"
			   "audit-rotate \n"
			   "restore retire rotate \n"
			   "--help --json --mount -c \n"
			   "keyfs.ini \n"
			   "sub/other.ini \n"
			   "list verify \n"
			   "--from-state \n"
			   "force \n"
			   "abort promote stage \n"
			   "--from --help --mount --timeout -c \n"
			   "--help --new-master -c \n"
			   "keyfs.ini \n"
			   "--help --private --public \n"
			   "keyfs.ini \n",
			   all, ops) > 0);
	cr_assert(strcmp(out, want) == 0, "completions:\n%s\nexpected:\n%s",
		  out, want);
	free(all);
	free(want);
	free(out);
	free(ops);
	free(in_sub);
	free(ini);
	free(sub);
	free(dir);
}
