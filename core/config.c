// SPDX-License-Identifier: MIT
/*
 * config: keyfs.ini parsed with inih into struct kf_config.
 *
 * inih is driven through ini_parse_stream with our own line reader, which
 * gives us what Debian's build of inih (no line numbers in the handler, no
 * handler call for a section header) lacks: the line number of every key,
 * every section header (so empty and duplicate sections are seen), lines too
 * long for inih's fixed buffer (refused instead of being split), and which
 * lines are indented (inih's multi-line values, refused).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "config.h"

#define CONFIG_MAX_BYTES (1024 * 1024)
#define DEFAULT_STATE_DIR "/var/lib/keyfs"
#define DEFAULT_MASTER_KEY_FILE "/etc/keyfs/master.key"
#define DEFAULT_PURPOSES "phi pii audit backup"
#define RETAIN_MAX 1000 /* below KF_KEYRING_MAX_VERSIONS: room to rotate */
#define KEEP_MAX 100000
#define INTERVAL_MAX_DAYS 36500 /* 100 years */
#define QUOTE_MAX 80

enum section { SEC_NONE, SEC_KEYFS, SEC_ACCESS, SEC_PURPOSE };

enum key_id {
	K_MODE,
	K_MOUNTPOINT,
	K_STATE_DIR,
	K_BACKUP_DIR,
	K_MASTER_KEY_FILE,
	K_RETAIN,
	K_INTERVAL,
	K_KEEP,
	K_AUDIT_LOG,
	K_ALERT,
	K_READ_MODE,
	K_PURPOSES,
	K_KEYS,
	K_STATUS,
	K_BACKUPS,
	K_AUDIT,
	K_COUNT
};

static const struct {
	const char *name;
	enum section sec;
} key_table[K_COUNT] = {
    [K_MODE] = {"mode", SEC_KEYFS},
    [K_MOUNTPOINT] = {"mountpoint", SEC_KEYFS},
    [K_STATE_DIR] = {"state_dir", SEC_KEYFS},
    [K_BACKUP_DIR] = {"backup_dir", SEC_KEYFS},
    [K_MASTER_KEY_FILE] = {"master_key_file", SEC_KEYFS},
    [K_RETAIN] = {"retain_versions", SEC_KEYFS},
    [K_INTERVAL] = {"rotate_interval", SEC_KEYFS},
    [K_KEEP] = {"backup_keep", SEC_KEYFS},
    [K_AUDIT_LOG] = {"audit_log", SEC_KEYFS},
    [K_ALERT] = {"alert_command", SEC_KEYFS},
    [K_READ_MODE] = {"read_mode", SEC_KEYFS},
    [K_PURPOSES] = {"purposes", SEC_KEYFS},
    [K_KEYS] = {"keys", SEC_ACCESS},
    [K_STATUS] = {"status", SEC_ACCESS},
    [K_BACKUPS] = {"backups", SEC_ACCESS},
    [K_AUDIT] = {"audit", SEC_ACCESS},
};

typedef char purpose_name[KF_PURPOSE_MAX + 1];

/* A [purpose NAME] section. */
struct section_purpose {
	struct kf_purpose p;
	int line;
	int access_line;
};

struct parser {
	const char *name;    /* for messages */
	const char *basedir; /* absolute */
	const char *pos;     /* reader: the rest of the text */
	int lineno;	     /* line the reader returned last */
	bool indented;	     /* that line starts with white space */
	int err_line;	     /* first error: its line (0 = none) */
	int err;	     /* and its -errno */
	char reason[KF_ERR_MAX];
	enum section sec;
	size_t cur;		     /* index into sp in SEC_PURPOSE */
	int keyfs_line, access_line; /* where the section began, or 0 */
	char last_name[KF_ERR_MAX];  /* previous key in this section */
	int key_line[K_COUNT];
	purpose_name *list; /* from `purposes` */
	size_t n_list;
	struct section_purpose *sp;
	size_t n_sp, cap_sp;
	struct kf_config *cfg;
};

/* Copies s for a message: printable ASCII only, shortened. */
static const char *quote(char out[QUOTE_MAX + 4], const char *s)
{
	size_t i;

	for (i = 0; s[i] && i < QUOTE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (s[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = 0;
	return out;
}

/* Records the first error only; returns 0 for inih's handler. */
static int fail(struct parser *p, int line, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct parser *p, int line, int err, const char *fmt, ...)
{
	va_list ap;

	if (p->err)
		return 0;
	p->err = err;
	p->err_line = line;
	va_start(ap, fmt);
	vsnprintf(p->reason, sizeof(p->reason), fmt, ap);
	va_end(ap);
	return 0;
}

/*
 * base + "/" + path (or path alone if absolute) with "//", "." and ".."
 * collapsed lexically; symlinks are not resolved.  malloc'd, or NULL.
 */
static char *path_clean(const char *base, const char *path)
{
	char *in = NULL, *out, *save = NULL, *c;
	size_t o = 0, len;

	if (path[0] == '/')
		in = strdup(path);
	else if (asprintf(&in, "%s/%s", base, path) < 0)
		in = NULL;
	if (!in)
		return NULL;
	len = strlen(in);
	out = malloc(len + 2);
	if (!out) {
		free(in);
		return NULL;
	}
	for (c = strtok_r(in, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		size_t n = strlen(c);

		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0) {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
			continue;
		}
		out[o++] = '/';
		memcpy(out + o, c, n);
		o += n;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = 0;
	free(in);
	return out;
}

static char *cwd_clean(void)
{
	char *cwd = getcwd(NULL, 0), *r;

	if (!cwd)
		return NULL;
	r = path_clean("/", cwd);
	free(cwd);
	return r;
}

/*
 * The first of state_dir, backup_dir, audit_log and master_key_file that lies
 * under mnt, with its key, or NULL.
 */
static const char *under_mountpoint(const struct kf_config *cfg,
				    const char *mnt, enum key_id *ret_key)
{
	static const enum key_id ids[] = {K_STATE_DIR, K_BACKUP_DIR,
					  K_AUDIT_LOG, K_MASTER_KEY_FILE};
	const char *paths[] = {cfg->state_dir, cfg->backup_dir, cfg->audit_log,
			       cfg->master_key_file};

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		if (paths[i] && kf_path_under(paths[i], mnt)) {
			*ret_key = ids[i];
			return paths[i];
		}
	}
	return NULL;
}

static int set_path(struct parser *p, const char *key, const char *value,
		    char **ret)
{
	char *s = path_clean(p->basedir, value);

	if (!s)
		return fail(p, p->lineno, -ENOMEM, "out of memory");
	if (strlen(s) >= PATH_MAX) {
		free(s);
		return fail(p, p->lineno, -EINVAL, "%s: path too long", key);
	}
	free(*ret);
	*ret = s;
	return 1;
}

/* A whole number in [min, max]: digits only, no sign, no spaces. */
static int parse_uint(struct parser *p, const char *key, const char *value,
		      unsigned min, unsigned max, unsigned *ret)
{
	char q[QUOTE_MAX + 4];
	unsigned long v = 0;
	const char *s;

	for (s = value; *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > max)
			break;
	}
	if (s == value || *s || v < min || v > max)
		return fail(p, p->lineno, -EINVAL,
			    "%s must be a whole number from %u to %u, not "
			    "\"%s\"",
			    key, min, max, quote(q, value));
	*ret = (unsigned)v;
	return 1;
}

static int parse_interval(struct parser *p, const char *value, int64_t *ret)
{
	const int64_t max = (int64_t)INTERVAL_MAX_DAYS * 86400;
	char q[QUOTE_MAX + 4];
	int64_t n = 0, unit;
	const char *s;
	bool big = false;

	if (strcmp(value, "0") == 0) {
		*ret = 0;
		return 1;
	}
	for (s = value; *s >= '0' && *s <= '9'; s++) {
		if (n <= max)
			n = n * 10 + (*s - '0');
		else
			big = true;
	}
	switch (*s) {
	case 's':
		unit = 1;
		break;
	case 'm':
		unit = 60;
		break;
	case 'h':
		unit = 3600;
		break;
	case 'd':
		unit = 86400;
		break;
	default:
		unit = 0;
	}
	if (s == value || unit == 0 || s[1] || (n == 0 && !big))
		return fail(p, p->lineno, -EINVAL,
			    "bad rotate_interval \"%s\": expected 0 (off) or "
			    "a positive whole number followed by s, m, h or d, "
			    "e.g. 90d",
			    quote(q, value));
	if (big || n > max / unit)
		return fail(p, p->lineno, -EINVAL,
			    "rotate_interval \"%s\" is too large (at most %dd)",
			    quote(q, value), INTERVAL_MAX_DAYS);
	*ret = n * unit;
	return 1;
}

/* Numeric id: digits only, below (id_t)-1 which means "no change". */
static bool parse_id(const char *s, uint32_t *ret)
{
	uint64_t v = 0;

	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v >= UINT32_MAX)
			return false;
	}
	*ret = (uint32_t)v;
	return true;
}

static bool all_digits(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

/* Errors that getpwnam_r/getgrnam_r may give for "no such name". */
static bool not_found(int e)
{
	return e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM;
}

/* 0 and *ret, -ENOENT for no such user/group, or another -errno. */
static int lookup_id(const char *name, bool group, uint32_t *ret)
{
	long hint =
	    sysconf(group ? _SC_GETGR_R_SIZE_MAX : _SC_GETPW_R_SIZE_MAX);
	size_t size = hint > 0 ? (size_t)hint : 16384;
	int e, r;

	for (;;) {
		char *buf = malloc(size);
		struct passwd pw, *pwr = NULL;
		struct group gr, *grr = NULL;

		if (!buf)
			return -ENOMEM;
		if (group)
			e = getgrnam_r(name, &gr, buf, size, &grr);
		else
			e = getpwnam_r(name, &pw, buf, size, &pwr);
		if (e == ERANGE && size < (1u << 24)) {
			free(buf);
			size *= 2;
			continue;
		}
		if (group && e == 0 && grr) {
			*ret = (uint32_t)gr.gr_gid;
			r = 0;
		} else if (!group && e == 0 && pwr) {
			*ret = (uint32_t)pw.pw_uid;
			r = 0;
		} else {
			r = not_found(e) ? -ENOENT : -e;
		}
		free(buf);
		return r;
	}
}

static int resolve_id(struct parser *p, const char *name, bool group,
		      uint32_t *ret)
{
	const char *what = group ? "group" : "user";
	char q[QUOTE_MAX + 4];
	int r;

	if (all_digits(name)) {
		if (!parse_id(name, ret))
			return fail(p, p->lineno, -EINVAL,
				    "%s id \"%s\" out of range", what,
				    quote(q, name));
		return 1;
	}
	r = lookup_id(name, group, ret);
	if (r == -ENOENT)
		return fail(p, p->lineno, -EINVAL, "unknown %s \"%s\"", what,
			    quote(q, name));
	if (r < 0)
		return fail(p, p->lineno, r, "looking up %s \"%s\": %s", what,
			    quote(q, name), strerror(-r));
	return 1;
}

/* "owner:group MODE", MODE octal with a leading 0 and no special bits. */
static int parse_access(struct parser *p, const char *key, const char *value,
			struct kf_access *ret)
{
	char q[QUOTE_MAX + 4], buf[KF_ERR_MAX], *who, *mode, *rest, *colon;
	char *save = NULL;
	uint32_t uid, gid;
	size_t n;

	if (strlen(value) >= sizeof(buf))
		return fail(p, p->lineno, -EINVAL, "%s: value too long", key);
	strcpy(buf, value);
	who = strtok_r(buf, " \t", &save);
	mode = who ? strtok_r(NULL, " \t", &save) : NULL;
	rest = mode ? strtok_r(NULL, " \t", &save) : NULL;
	if (!who || !mode || rest)
		return fail(p, p->lineno, -EINVAL,
			    "%s: expected owner:group MODE (e.g. root:root "
			    "0400), not \"%s\"",
			    key, quote(q, value));
	colon = strchr(who, ':');
	if (!colon || colon == who || !colon[1] || strchr(colon + 1, ':'))
		return fail(p, p->lineno, -EINVAL,
			    "%s: expected owner:group with one ':' (e.g. "
			    "root:root 0400), not \"%s\"",
			    key, quote(q, who));
	*colon = 0;
	if (!resolve_id(p, who, false, &uid) ||
	    !resolve_id(p, colon + 1, true, &gid))
		return 0;
	n = strlen(mode);
	if ((n != 3 && n != 4) || mode[0] != '0' ||
	    strspn(mode, "01234567") != n)
		return fail(p, p->lineno, -EINVAL,
			    "%s: bad mode \"%s\": expected octal with a "
			    "leading 0 such as 0440, without setuid, setgid "
			    "or sticky bits",
			    key, quote(q, mode));
	ret->uid = (uid_t)uid;
	ret->gid = (gid_t)gid;
	ret->mode = (mode_t)strtoul(mode, NULL, 8);
	return 1;
}

/* Fills p->list from a space- or comma-separated list of purpose names. */
static int parse_purposes(struct parser *p, const char *value, int line)
{
	char q[QUOTE_MAX + 4], *copy, *tok, *save = NULL;
	int r = 1;

	copy = strdup(value);
	if (!copy)
		return fail(p, line, -ENOMEM, "out of memory");
	for (tok = strtok_r(copy, " \t,", &save); tok;
	     tok = strtok_r(NULL, " \t,", &save)) {
		purpose_name *grown;

		if (!kf_purpose_valid(tok)) {
			r = fail(p, line, -EINVAL,
				 "invalid purpose name \"%s\" in purposes: "
				 "must match [a-z0-9][a-z0-9_-]{0,%d}",
				 quote(q, tok), KF_PURPOSE_MAX - 1);
			break;
		}
		for (size_t i = 0; i < p->n_list && r; i++)
			if (strcmp(p->list[i], tok) == 0)
				r = fail(p, line, -EINVAL,
					 "duplicate purpose \"%s\" in purposes",
					 tok);
		if (!r)
			break;
		if (p->n_list >= KF_CONFIG_MAX_PURPOSES) {
			r = fail(p, line, -EINVAL,
				 "too many purposes (at most %d)",
				 KF_CONFIG_MAX_PURPOSES);
			break;
		}
		grown = realloc(p->list, (p->n_list + 1) * sizeof(*p->list));
		if (!grown) {
			r = fail(p, line, -ENOMEM, "out of memory");
			break;
		}
		p->list = grown;
		strcpy(p->list[p->n_list++], tok);
	}
	free(copy);
	return r;
}

static int set_key(struct parser *p, enum key_id id, const char *value)
{
	struct kf_config *cfg = p->cfg;
	const char *key = key_table[id].name;
	char q[QUOTE_MAX + 4];

	switch (id) {
	case K_MODE:
		if (strcmp(value, "production") == 0)
			cfg->mode = KF_MODE_PRODUCTION;
		else if (strcmp(value, "development") == 0)
			cfg->mode = KF_MODE_DEVELOPMENT;
		else
			return fail(p, p->lineno, -EINVAL,
				    "bad mode \"%s\": expected production or "
				    "development",
				    quote(q, value));
		return 1;
	case K_READ_MODE:
		if (strcmp(value, "audited") == 0)
			cfg->read_mode = KF_READ_AUDITED;
		else if (strcmp(value, "cached") == 0)
			cfg->read_mode = KF_READ_CACHED;
		else
			return fail(p, p->lineno, -EINVAL,
				    "bad read_mode \"%s\": expected audited or "
				    "cached",
				    quote(q, value));
		return 1;
	case K_MOUNTPOINT:
		return *value ? set_path(p, key, value, &cfg->mountpoint) : 1;
	case K_BACKUP_DIR:
		return *value ? set_path(p, key, value, &cfg->backup_dir) : 1;
	case K_AUDIT_LOG:
		return *value ? set_path(p, key, value, &cfg->audit_log) : 1;
	case K_STATE_DIR:
	case K_MASTER_KEY_FILE:
		if (!*value)
			return fail(p, p->lineno, -EINVAL,
				    "%s must not be empty", key);
		return set_path(p, key, value,
				id == K_STATE_DIR ? &cfg->state_dir
						  : &cfg->master_key_file);
	case K_ALERT:
		if (!*value)
			return 1;
		cfg->alert_command = strdup(value);
		if (!cfg->alert_command)
			return fail(p, p->lineno, -ENOMEM, "out of memory");
		return 1;
	case K_RETAIN:
		return parse_uint(p, key, value, 1, RETAIN_MAX,
				  &cfg->retain_versions);
	case K_KEEP:
		return parse_uint(p, key, value, 1, KEEP_MAX,
				  &cfg->backup_keep);
	case K_INTERVAL:
		return parse_interval(p, value, &cfg->rotate_interval);
	case K_PURPOSES:
		return parse_purposes(p, value, p->lineno);
	case K_KEYS:
		return parse_access(p, key, value, &cfg->keys);
	case K_STATUS:
		return parse_access(p, key, value, &cfg->status);
	case K_BACKUPS:
		return parse_access(p, key, value, &cfg->backups);
	case K_AUDIT:
		return parse_access(p, key, value, &cfg->audit);
	case K_COUNT:
		break;
	}
	return fail(p, p->lineno, -EINVAL, "internal error: key %d", id);
}

static int start_purpose_section(struct parser *p, const char *name)
{
	char q[QUOTE_MAX + 4];
	struct section_purpose *s;

	if (!kf_purpose_valid(name))
		return fail(p, p->lineno, -EINVAL,
			    "invalid purpose name \"%s\" in section header: "
			    "must match [a-z0-9][a-z0-9_-]{0,%d}",
			    quote(q, name), KF_PURPOSE_MAX - 1);
	for (size_t i = 0; i < p->n_sp; i++)
		if (strcmp(p->sp[i].p.name, name) == 0)
			return fail(p, p->lineno, -EINVAL,
				    "duplicate section [purpose %s] (first on "
				    "line %d)",
				    name, p->sp[i].line);
	if (p->n_sp >= KF_CONFIG_MAX_PURPOSES)
		return fail(p, p->lineno, -EINVAL,
			    "too many [purpose] sections (at most %d)",
			    KF_CONFIG_MAX_PURPOSES);
	if (p->n_sp == p->cap_sp) {
		size_t cap = p->cap_sp ? 2 * p->cap_sp : 8;
		struct section_purpose *grown =
		    realloc(p->sp, cap * sizeof(*p->sp));

		if (!grown)
			return fail(p, p->lineno, -ENOMEM, "out of memory");
		p->sp = grown;
		p->cap_sp = cap;
	}
	s = &p->sp[p->n_sp];
	memset(s, 0, sizeof(*s));
	strcpy(s->p.name, name);
	s->p.access = (struct kf_access){.uid = 0, .gid = 0, .mode = 0400};
	s->line = p->lineno;
	p->cur = p->n_sp++;
	p->sec = SEC_PURPOSE;
	return 1;
}

/* Handles "[raw]"; raw is the text between the brackets. */
static int start_section(struct parser *p, char *raw)
{
	char q[QUOTE_MAX + 4], *name = raw, *end;
	int *seen = NULL;

	while (isspace((unsigned char)*name))
		name++;
	end = name + strlen(name);
	while (end > name && isspace((unsigned char)end[-1]))
		*--end = 0;
	p->last_name[0] = 0;
	if (strcmp(name, "keyfs") == 0) {
		seen = &p->keyfs_line;
		p->sec = SEC_KEYFS;
	} else if (strcmp(name, "access") == 0) {
		seen = &p->access_line;
		p->sec = SEC_ACCESS;
	} else if (strncmp(name, "purpose", 7) == 0 &&
		   (name[7] == 0 || isspace((unsigned char)name[7]))) {
		name += 7;
		while (isspace((unsigned char)*name))
			name++;
		if (!*name)
			return fail(p, p->lineno, -EINVAL,
				    "section [purpose] needs a name: "
				    "[purpose NAME]");
		return start_purpose_section(p, name);
	} else {
		return fail(p, p->lineno, -EINVAL,
			    "unknown section [%s] (expected [keyfs], [access] "
			    "or [purpose NAME])",
			    quote(q, name));
	}
	if (*seen)
		return fail(p, p->lineno, -EINVAL,
			    "duplicate section [%s] (first on line %d)", name,
			    *seen);
	*seen = p->lineno;
	return 1;
}

/*
 * Looks at a line before inih does: section headers are found the way inih
 * finds them (up to ']' or an inline ';' comment after white space).
 */
static void scan_line(struct parser *p, char *line)
{
	char *s = line, *e, *after;
	bool was_space = false;

	if (p->lineno == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3;
	p->indented = isspace((unsigned char)*s);
	while (isspace((unsigned char)*s))
		s++;
	if (*s != '[')
		return;
	/* inih would take it as the previous value's continuation. */
	if (p->indented && p->last_name[0]) {
		fail(p, p->lineno, -EINVAL,
		     "indented section header; remove the indentation");
		return;
	}
	for (e = s + 1; *e && *e != ']' && !(was_space && *e == ';'); e++)
		was_space = isspace((unsigned char)*e);
	if (*e != ']') {
		fail(p, p->lineno, -EINVAL,
		     "section header without a closing ']'");
		return;
	}
	after = e + 1;
	while (isspace((unsigned char)*after))
		after++;
	if (*after && *after != ';' && *after != '#') {
		fail(p, p->lineno, -EINVAL, "unexpected text after ']'");
		return;
	}
	{
		size_t n = (size_t)(e - (s + 1));
		char name[KF_ERR_MAX];

		if (n >= sizeof(name))
			n = sizeof(name) - 1;
		memcpy(name, s + 1, n);
		name[n] = 0;
		start_section(p, name);
	}
}

/* fgets for inih over the text; stops at the first error. */
static char *reader(char *str, int num, void *stream)
{
	struct parser *p = stream;
	const char *nl;
	size_t len, content, max = num > 2 ? (size_t)num - 2 : 0;

	if (p->err || !*p->pos)
		return NULL;
	p->lineno++;
	nl = strchr(p->pos, '\n');
	len = nl ? (size_t)(nl - p->pos) + 1 : strlen(p->pos);
	content = nl ? len - 1 : len;
	if (content > max) {
		fail(p, p->lineno, -EINVAL,
		     "line too long (more than %zu characters)", max);
		return NULL;
	}
	memcpy(str, p->pos, len);
	str[len] = 0;
	p->pos += len;
	scan_line(p, str);
	return p->err ? NULL : str;
}

static int handler(void *user, const char *section, const char *name,
		   const char *value)
{
	struct parser *p = user;
	char q[QUOTE_MAX + 4], q2[QUOTE_MAX + 4];
	enum key_id id;

	(void)section; /* ours, from scan_line, also sees empty sections */
	if (p->err)
		return 0;
	/* inih joins an indented line to the previous key's value. */
	if (p->indented && p->last_name[0] && strcmp(name, p->last_name) == 0)
		return fail(p, p->lineno, -EINVAL,
			    "indented line would continue the value of \"%s\"; "
			    "multi-line values are not supported (remove the "
			    "indentation)",
			    quote(q, name));
	snprintf(p->last_name, sizeof(p->last_name), "%s", name);
	if (!*name)
		return fail(p, p->lineno, -EINVAL, "missing key before '='");
	switch (p->sec) {
	case SEC_NONE:
		return fail(p, p->lineno, -EINVAL,
			    "key \"%s\" outside any section (expected "
			    "[keyfs], [access] or [purpose NAME] first)",
			    quote(q, name));
	case SEC_PURPOSE: {
		struct section_purpose *s = &p->sp[p->cur];

		if (strcmp(name, "access") != 0)
			return fail(p, p->lineno, -EINVAL,
				    "unknown key \"%s\" in [purpose %s] "
				    "(expected access)",
				    quote(q, name), s->p.name);
		if (s->access_line)
			return fail(p, p->lineno, -EINVAL,
				    "duplicate key \"access\" in [purpose %s] "
				    "(first on line %d)",
				    s->p.name, s->access_line);
		s->access_line = p->lineno;
		return parse_access(p, "access", value, &s->p.access);
	}
	case SEC_KEYFS:
	case SEC_ACCESS:
		break;
	}
	for (id = 0; id < K_COUNT; id++)
		if (key_table[id].sec == p->sec &&
		    strcmp(key_table[id].name, name) == 0)
			break;
	if (id == K_COUNT)
		return fail(p, p->lineno, -EINVAL, "unknown key \"%s\" in [%s]",
			    quote(q, name),
			    p->sec == SEC_KEYFS ? "keyfs" : "access");
	if (p->key_line[id])
		return fail(p, p->lineno, -EINVAL,
			    "duplicate key \"%s\" (first on line %d)",
			    quote(q2, name), p->key_line[id]);
	p->key_line[id] = p->lineno;
	return set_key(p, id, value);
}

static const struct section_purpose *find_section(const struct parser *p,
						  const char *name)
{
	for (size_t i = 0; i < p->n_sp; i++)
		if (strcmp(p->sp[i].p.name, name) == 0)
			return &p->sp[i];
	return NULL;
}

/* The purpose list, then [purpose] sections not in it, in file order. */
static int build_purposes(struct parser *p)
{
	struct kf_config *cfg = p->cfg;
	size_t n = 0;

	if (!p->key_line[K_PURPOSES] && !parse_purposes(p, DEFAULT_PURPOSES, 0))
		return 0;
	cfg->purposes = calloc(p->n_list + p->n_sp + 1, sizeof(*cfg->purposes));
	if (!cfg->purposes)
		return fail(p, 0, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->n_list; i++) {
		const struct section_purpose *s = find_section(p, p->list[i]);

		strcpy(cfg->purposes[n].name, p->list[i]);
		cfg->purposes[n].access =
		    s ? s->p.access
		      : (struct kf_access){.uid = 0, .gid = 0, .mode = 0400};
		n++;
	}
	for (size_t i = 0; i < p->n_sp; i++) {
		bool listed = false;

		for (size_t j = 0; j < p->n_list && !listed; j++)
			listed = strcmp(p->list[j], p->sp[i].p.name) == 0;
		if (listed)
			continue;
		if (n >= KF_CONFIG_MAX_PURPOSES)
			return fail(p, p->sp[i].line, -EINVAL,
				    "too many purposes (at most %d)",
				    KF_CONFIG_MAX_PURPOSES);
		cfg->purposes[n++] = p->sp[i].p;
	}
	cfg->n_purposes = n;
	return 1;
}

static int finish(struct parser *p)
{
	struct kf_config *cfg = p->cfg;
	const char *bad;
	enum key_id id;

	if (!cfg->state_dir && !(cfg->state_dir = strdup(DEFAULT_STATE_DIR)))
		return fail(p, 0, -ENOMEM, "out of memory");
	if (!cfg->master_key_file &&
	    !(cfg->master_key_file = strdup(DEFAULT_MASTER_KEY_FILE)))
		return fail(p, 0, -ENOMEM, "out of memory");
	if (!cfg->backup_dir &&
	    !(cfg->backup_dir = kf_path_join(cfg->state_dir, "backups")))
		return fail(p, 0, -ENOMEM, "out of memory");
	if (!cfg->audit_log &&
	    !(cfg->audit_log = kf_path_join(cfg->state_dir, "audit.log")))
		return fail(p, 0, -ENOMEM, "out of memory");
	if (!build_purposes(p))
		return 0;
	if (cfg->mountpoint &&
	    (bad = under_mountpoint(cfg, cfg->mountpoint, &id)))
		return fail(p,
			    p->key_line[id] ? p->key_line[id]
					    : p->key_line[K_MOUNTPOINT],
			    -EINVAL, "%s %s lies under the mountpoint %s",
			    key_table[id].name, bad, cfg->mountpoint);
	return 1;
}

static struct kf_config *config_new(void)
{
	struct kf_config *cfg = calloc(1, sizeof(*cfg));
	const struct kf_access key = {.uid = 0, .gid = 0, .mode = 0400};

	if (!cfg)
		return NULL;
	cfg->mode = KF_MODE_PRODUCTION;
	cfg->retain_versions = 2;
	cfg->rotate_interval = 90LL * 86400;
	cfg->backup_keep = 10;
	cfg->read_mode = KF_READ_AUDITED;
	cfg->keys = key;
	cfg->backups = key;
	cfg->audit = key;
	cfg->status = (struct kf_access){.uid = 0, .gid = 0, .mode = 0444};
	return cfg;
}

int kf_config_parse(const char *text, const char *name, const char *basedir,
		    struct kf_config **ret, char err[KF_ERR_MAX])
{
	struct parser p = {0};
	char *base = NULL;
	int line, r;

	if (!name)
		name = "(configuration)";
	if (!text) {
		kf_err_set(err, "%s: no text", name);
		return -EINVAL;
	}
	if (basedir && basedir[0] == '/') {
		base = path_clean("/", basedir);
	} else {
		char *cwd = cwd_clean();

		base = cwd && basedir ? path_clean(cwd, basedir) : cwd;
		if (cwd != base)
			free(cwd);
	}
	p.cfg = config_new();
	if (!base || !p.cfg) {
		kf_err_set(err, "%s: out of memory (or no current directory)",
			   name);
		r = -ENOMEM;
		goto out;
	}
	p.name = name;
	p.basedir = base;
	p.pos = text;
	line = ini_parse_stream(reader, &p, handler, &p);
	if (line > 0 && (!p.err || line < p.err_line)) {
		p.err = -EINVAL;
		p.err_line = line;
		snprintf(p.reason, sizeof(p.reason),
			 "syntax error: expected [section], key = value or "
			 "a ; comment");
	} else if (line < 0 && !p.err) {
		fail(&p, 0, -ENOMEM, "out of memory");
	}
	if (!p.err)
		finish(&p);
	if (p.err) {
		if (p.err_line > 0)
			kf_err_set(err, "%s:%d: %s", name, p.err_line,
				   p.reason);
		else
			kf_err_set(err, "%s: %s", name, p.reason);
		r = p.err;
		goto out;
	}
	p.cfg->source = strdup(name);
	if (!p.cfg->source) {
		kf_err_set(err, "%s: out of memory", name);
		r = -ENOMEM;
		goto out;
	}
	*ret = p.cfg;
	p.cfg = NULL;
	r = 0;
out:
	kf_config_free(p.cfg);
	free(p.list);
	free(p.sp);
	free(base);
	return r;
}

/* Reads a whole regular file of at most CONFIG_MAX_BYTES, NUL-terminated. */
static int read_text(const char *path, char **ret, char err[KF_ERR_MAX])
{
	struct stat st;
	char *buf = NULL, *nul;
	size_t got = 0;
	int fd, r;

	/* Symlinks are fine here: /etc/keyfs/keyfs.ini may be one. */
	fd = kf_file_open_regular(path, 0, &st, err);
	if (fd < 0)
		return fd;
	if (st.st_size > CONFIG_MAX_BYTES) {
		r = -EFBIG;
		kf_err_set(err, "%s: larger than 1 MiB", path);
		goto out;
	}
	/*
	 * The file decides who reads which key: one that another user may
	 * change would hand out keys.  Owned by root (or whoever runs us) and
	 * not writable by group or other.
	 */
	if ((st.st_uid != 0 && st.st_uid != geteuid()) ||
	    (st.st_mode & 022) != 0) {
		r = -EPERM;
		kf_err_set(err,
			   "%s: must be owned by root and not writable by "
			   "group or other (mode %04o, owner uid %u)",
			   path, (unsigned)(st.st_mode & 07777),
			   (unsigned)st.st_uid);
		goto out;
	}
	/* One byte more than allowed, to notice a file that grew. */
	buf = malloc(CONFIG_MAX_BYTES + 2);
	if (!buf) {
		r = -ENOMEM;
		kf_err_set(err, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, CONFIG_MAX_BYTES + 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			kf_err_set(err, "%s: read: %s", path, strerror(-r));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > CONFIG_MAX_BYTES) {
			r = -EFBIG;
			kf_err_set(err, "%s: larger than 1 MiB", path);
			goto out;
		}
	}
	buf[got] = 0;
	nul = memchr(buf, 0, got);
	if (nul) {
		int line = 1;

		for (const char *c = buf; c < nul; c++)
			line += *c == '\n';
		r = -EINVAL;
		kf_err_set(err, "%s:%d: NUL byte (not a text file)", path,
			   line);
		goto out;
	}
	*ret = buf;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close(fd);
	return r;
}

int kf_config_load(const char *path, struct kf_config **ret,
		   char err[KF_ERR_MAX])
{
	struct kf_config *cfg = NULL;
	char *text = NULL, *dir = NULL, *cwd = NULL, *slash;
	const char *env;
	struct stat st;
	int r;

	if (!path) {
		env = getenv("KEYFS_CONFIG");
		if (env && *env)
			path = env;
		else if (stat(KF_CONFIG_SYSTEM, &st) == 0 || errno != ENOENT)
			path = KF_CONFIG_SYSTEM;
	}
	cwd = cwd_clean();
	if (!cwd) {
		r = errno ? -errno : -ENOMEM;
		kf_err_set(err, "current directory: %s", strerror(-r));
		goto out;
	}
	if (path) {
		if (!*path) {
			kf_err_set(err, "empty configuration file name");
			r = -EINVAL;
			goto out;
		}
		r = read_text(path, &text, err);
		if (r < 0)
			goto out;
		dir = path_clean(cwd, path);
		if (!dir) {
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
			goto out;
		}
		slash = strrchr(dir, '/');
		slash[slash == dir ? 1 : 0] = 0;
		r = kf_config_parse(text, path, dir, &cfg, err);
	} else {
		r = kf_config_parse(kf_config_embedded_dev, KF_CONFIG_EMBEDDED,
				    cwd, &cfg, err);
	}
	if (r < 0)
		goto out;
	env = getenv("KEY_BACKUP_DIR");
	if (env && *env) {
		char *b = path_clean(cwd, env);

		if (!b) {
			r = -ENOMEM;
			kf_err_set(err, "out of memory");
			goto out;
		}
		if (cfg->mountpoint && kf_path_under(b, cfg->mountpoint)) {
			kf_err_set(err,
				   "KEY_BACKUP_DIR: backup_dir %s lies under "
				   "the mountpoint %s",
				   b, cfg->mountpoint);
			free(b);
			r = -EINVAL;
			goto out;
		}
		free(cfg->backup_dir);
		cfg->backup_dir = b;
	}
	*ret = cfg;
	cfg = NULL;
	r = 0;
out:
	kf_config_free(cfg);
	free(text);
	free(dir);
	free(cwd);
	return r;
}

int kf_config_set_mountpoint(struct kf_config *cfg, const char *path,
			     char err[KF_ERR_MAX])
{
	char *cwd, *mnt;
	const char *bad;
	enum key_id id;

	if (!path || !*path) {
		kf_err_set(err, "empty mountpoint");
		return -EINVAL;
	}
	cwd = cwd_clean();
	mnt = cwd ? path_clean(cwd, path) : NULL;
	free(cwd);
	if (!mnt) {
		kf_err_set(err, "%s: out of memory (or no current directory)",
			   path);
		return -ENOMEM;
	}
	bad = under_mountpoint(cfg, mnt, &id);
	if (bad) {
		kf_err_set(err, "%s %s lies under the mountpoint %s",
			   key_table[id].name, bad, mnt);
		free(mnt);
		return -EINVAL;
	}
	free(cfg->mountpoint);
	cfg->mountpoint = mnt;
	return 0;
}

const struct kf_purpose *kf_config_purpose(const struct kf_config *cfg,
					   const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (size_t i = 0; i < cfg->n_purposes; i++)
		if (strcmp(cfg->purposes[i].name, name) == 0)
			return &cfg->purposes[i];
	return NULL;
}

struct kf_config *kf_config_free(struct kf_config *cfg)
{
	if (!cfg)
		return NULL;
	free(cfg->source);
	free(cfg->mountpoint);
	free(cfg->state_dir);
	free(cfg->backup_dir);
	free(cfg->master_key_file);
	free(cfg->audit_log);
	free(cfg->alert_command);
	free(cfg->purposes);
	free(cfg);
	return NULL;
}
