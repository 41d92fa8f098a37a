// SPDX-License-Identifier: MIT
/*
 * config_parse: keyfs.ini parsed with inih into struct kf_config.
 *
 * inih is driven through ini_parse_stream with our own line reader, which
 * gives us what Debian's build of inih (no line numbers in the handler, no
 * handler call for a section header) lacks: the line number of every key,
 * every section header (so empty and duplicate sections are seen), lines too
 * long for inih's fixed buffer (refused instead of being split), and which
 * lines are indented (inih's multi-line values, refused).  Each value is
 * parsed in config_value.c; this file puts "file:line: " before its reason.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config_private.h"

#define DEFAULT_STATE_DIR "/var/lib/keyfs"
#define DEFAULT_MASTER_KEY_FILE "/etc/keyfs/master.key"
#define DEFAULT_PURPOSES "phi pii audit backup"
#define DEFAULT_RETAIN 2
#define DEFAULT_INTERVAL (90LL * 86400) /* 90 days */
#define DEFAULT_STAGE_DELAY 86400LL	/* staged a day before promotion */
#define DEFAULT_STAGE_TIMEOUT 30	/* a promotion waits for every node */
#define STAGE_TIMEOUT_MAX 3600
#define DEFAULT_KEEP 10
#define DEFAULT_USAGE_WINDOW (7LL * 86400) /* 7 days */
#define USAGE_WINDOW_MAX (366LL * 86400)
#define RETAIN_MAX 1000 /* below KF_KEYRING_MAX_VERSIONS: room to rotate */
#define KEEP_MAX 100000
#define SECTIONS_FIRST_CAP 8 /* [purpose] sections before the first realloc */
#define UTF8_BOM "\xef\xbb\xbf"
#define PURPOSE_WORD "purpose" /* [purpose NAME] */
#define PURPOSE_WORD_LEN (sizeof(PURPOSE_WORD) - 1)
#define SECTIONS "[keyfs], [access], [etcd] or [purpose NAME]"

/* Keys, backups, audit log and purposes unless the file says otherwise. */
static const struct kf_access root_only = {.uid = 0, .gid = 0, .mode = 0400};

enum section { SEC_NONE, SEC_KEYFS, SEC_ACCESS, SEC_ETCD, SEC_PURPOSE };

/* The sections that are there at most once, by name. */
static const char *const section_names[] = {
    [SEC_KEYFS] = "keyfs", [SEC_ACCESS] = "access", [SEC_ETCD] = "etcd"};

#define N_SECTION_NAMES (sizeof(section_names) / sizeof(section_names[0]))

enum key_id {
	K_MODE,
	K_MOUNTPOINT,
	K_STATE_DIR,
	K_BACKUP_DIR,
	K_MASTER_KEY_FILE,
	K_MASTER_KEY_NEXT,
	K_RETAIN,
	K_INTERVAL,
	K_USAGE_WINDOW,
	K_KEEP,
	K_AUDIT_LOG,
	K_ALERT,
	K_METRICS_FILE,
	K_RECOVERY_PUBLIC_KEY,
	K_READ_MODE,
	K_ROTATE_MODE,
	K_STAGE_DELAY,
	K_STAGE_TIMEOUT,
	K_AUDIT_MAX_SIZE,
	K_AUDIT_ROTATE,
	K_AUDIT_KEEP,
	K_AUDIT_OPEN_WINDOW,
	K_AUDIT_SYSLOG,
	K_AUDIT_SYSLOG_FACILITY,
	K_AUDIT_SYSLOG_TAG,
	K_AUDIT_SYSLOG_SOCKET,
	K_AUDIT_MIN_FREE,
	K_PURPOSES,
	K_STORE,
	K_KEYS,
	K_STATUS,
	K_BACKUPS,
	K_AUDIT,
	K_ENDPOINTS,
	K_PREFIX,
	K_NODE,
	K_TIMEOUT,
	K_CACERT,
	K_CERT,
	K_KEY,
	K_USER,
	K_PASSWORD_FILE,
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
    [K_MASTER_KEY_NEXT] = {"master_key_next", SEC_KEYFS},
    [K_RETAIN] = {"retain_versions", SEC_KEYFS},
    [K_INTERVAL] = {"rotate_interval", SEC_KEYFS},
    [K_USAGE_WINDOW] = {"usage_window", SEC_KEYFS},
    [K_KEEP] = {"backup_keep", SEC_KEYFS},
    [K_AUDIT_LOG] = {"audit_log", SEC_KEYFS},
    [K_ALERT] = {"alert_command", SEC_KEYFS},
    [K_METRICS_FILE] = {"metrics_file", SEC_KEYFS},
    [K_RECOVERY_PUBLIC_KEY] = {"recovery_public_key", SEC_KEYFS},
    [K_READ_MODE] = {"read_mode", SEC_KEYFS},
    [K_ROTATE_MODE] = {"rotate_mode", SEC_KEYFS},
    [K_STAGE_DELAY] = {"stage_delay", SEC_KEYFS},
    [K_STAGE_TIMEOUT] = {"stage_timeout", SEC_KEYFS},
    [K_AUDIT_MAX_SIZE] = {"audit_max_size", SEC_KEYFS},
    [K_AUDIT_ROTATE] = {"audit_rotate", SEC_KEYFS},
    [K_AUDIT_KEEP] = {"audit_keep", SEC_KEYFS},
    [K_AUDIT_OPEN_WINDOW] = {"audit_open_window", SEC_KEYFS},
    [K_AUDIT_SYSLOG] = {"audit_syslog", SEC_KEYFS},
    [K_AUDIT_SYSLOG_FACILITY] = {"audit_syslog_facility", SEC_KEYFS},
    [K_AUDIT_SYSLOG_TAG] = {"audit_syslog_tag", SEC_KEYFS},
    [K_AUDIT_SYSLOG_SOCKET] = {"audit_syslog_socket", SEC_KEYFS},
    [K_AUDIT_MIN_FREE] = {"audit_min_free", SEC_KEYFS},
    [K_PURPOSES] = {"purposes", SEC_KEYFS},
    [K_STORE] = {"store", SEC_KEYFS},
    [K_KEYS] = {"keys", SEC_ACCESS},
    [K_STATUS] = {"status", SEC_ACCESS},
    [K_BACKUPS] = {"backups", SEC_ACCESS},
    [K_AUDIT] = {"audit", SEC_ACCESS},
    [K_ENDPOINTS] = {"endpoints", SEC_ETCD},
    [K_PREFIX] = {"prefix", SEC_ETCD},
    [K_NODE] = {"node", SEC_ETCD},
    [K_TIMEOUT] = {"timeout", SEC_ETCD},
    [K_CACERT] = {"cacert", SEC_ETCD},
    [K_CERT] = {"cert", SEC_ETCD},
    [K_KEY] = {"key", SEC_ETCD},
    [K_USER] = {"user", SEC_ETCD},
    [K_PASSWORD_FILE] = {"password_file", SEC_ETCD},
};

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
	size_t cur;			   /* index into sp in SEC_PURPOSE */
	int section_line[N_SECTION_NAMES]; /* where it began, or 0 */
	char last_name[KF_ERR_MAX];	   /* previous key in this section */
	int key_line[K_COUNT];
	kf_config_purpose_name *list; /* from `purposes` */
	size_t n_list;
	struct section_purpose *sp;
	size_t n_sp, cap_sp;
	struct kf_config *cfg;
};

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

/* A value parser's result r at `line`: 1, or 0 after fail(). */
static int check_value(struct parser *p, int line, int r, const char *reason)
{
	return r < 0 ? fail(p, line, r, "%s", reason) : 1;
}

/* The key called name in section sec, or K_COUNT. */
static enum key_id find_key(enum section sec, const char *name)
{
	enum key_id id;

	for (id = 0; id < K_COUNT; id++)
		if (key_table[id].sec == sec &&
		    strcmp(key_table[id].name, name) == 0)
			break;
	return id;
}

/* The line of the key called name in [keyfs] or [etcd], or 0. */
static int key_line(const struct parser *p, const char *name)
{
	enum key_id id = find_key(SEC_KEYFS, name);

	if (id == K_COUNT)
		id = find_key(SEC_ETCD, name);
	return id < K_COUNT ? p->key_line[id] : 0;
}

static const struct section_purpose *find_section(const struct parser *p,
						  const char *name)
{
	for (size_t i = 0; i < p->n_sp; i++)
		if (strcmp(p->sp[i].p.name, name) == 0)
			return &p->sp[i];
	return NULL;
}

/* Sets one key of [keyfs] or [access]: 1, or 0 after fail(). */
static int set_key(struct parser *p, enum key_id id, const char *value)
{
	static const char *const run_modes[] = {
	    [KF_MODE_PRODUCTION] = "production",
	    [KF_MODE_DEVELOPMENT] = "development"};
	static const char *const stores[] = {
	    [KF_STORE_TYPE_FILE] = "file", [KF_STORE_TYPE_ETCD] = "etcd"};
	struct kf_config *cfg = p->cfg;
	/* Where the value of a path, text or access key goes. */
	const struct {
		char **path, **text;
		struct kf_access *access;
	} field[K_COUNT] = {
	    [K_MOUNTPOINT] = {.path = &cfg->mountpoint},
	    [K_STATE_DIR] = {.path = &cfg->state_dir},
	    [K_BACKUP_DIR] = {.path = &cfg->backup_dir},
	    [K_MASTER_KEY_FILE] = {.path = &cfg->master_key_file},
	    [K_MASTER_KEY_NEXT] = {.path = &cfg->master_key_next},
	    [K_AUDIT_LOG] = {.path = &cfg->audit_log},
	    [K_METRICS_FILE] = {.path = &cfg->metrics_file},
	    [K_RECOVERY_PUBLIC_KEY] = {.path = &cfg->recovery_public_key},
	    [K_CACERT] = {.path = &cfg->etcd.cacert},
	    [K_CERT] = {.path = &cfg->etcd.cert},
	    [K_KEY] = {.path = &cfg->etcd.key},
	    [K_PASSWORD_FILE] = {.path = &cfg->etcd.password_file},
	    [K_ALERT] = {.text = &cfg->alert_command},
	    [K_USER] = {.text = &cfg->etcd.user},
	    [K_KEYS] = {.access = &cfg->keys},
	    [K_STATUS] = {.access = &cfg->status},
	    [K_BACKUPS] = {.access = &cfg->backups},
	    [K_AUDIT] = {.access = &cfg->audit},
	};
	const char *key = key_table[id].name;
	char reason[KF_ERR_MAX] = "internal error";
	int r = -EINVAL;

	switch (id) {
	case K_MODE:
		r = kf_config_parse_choice(key, value, run_modes,
					   KF_LEN(run_modes), reason);
		if (r >= 0)
			cfg->mode = (enum kf_run_mode)r;
		break;
	case K_READ_MODE:
		r = kf_config_parse_choice(key, value, kf_config_read_modes,
					   KF_LEN(kf_config_read_modes),
					   reason);
		if (r >= 0)
			cfg->read_mode = (enum kf_read_mode)r;
		break;
	case K_ROTATE_MODE:
		r = kf_config_parse_choice(key, value, kf_config_rotate_modes,
					   KF_LEN(kf_config_rotate_modes),
					   reason);
		if (r >= 0)
			cfg->rotate_mode = (enum kf_rotate_mode)r;
		break;
	case K_STAGE_DELAY:
		r = kf_config_parse_interval(key, value, KF_CONFIG_INTERVAL_MAX,
					     &cfg->stage_delay, reason);
		break;
	case K_STAGE_TIMEOUT:
		r = kf_config_parse_interval(key, value, STAGE_TIMEOUT_MAX,
					     &cfg->stage_timeout, reason);
		if (r >= 0 && cfg->stage_timeout == 0) {
			kf_err_set(reason, "bad stage_timeout \"0\": expected "
					   "1s to 1h");
			r = -EINVAL;
		}
		break;
	case K_STORE:
		r = kf_config_parse_choice(key, value, stores, KF_LEN(stores),
					   reason);
		if (r >= 0)
			cfg->store = (enum kf_store_type)r;
		break;
	case K_STATE_DIR:
	case K_MASTER_KEY_FILE:
		if (!*value)
			return fail(p, p->lineno, -EINVAL,
				    "%s must not be empty", key);
		/* fall through */
	case K_MOUNTPOINT:
	case K_BACKUP_DIR:
	case K_AUDIT_LOG:
	case K_METRICS_FILE:
	case K_MASTER_KEY_NEXT:
	case K_RECOVERY_PUBLIC_KEY:
	case K_CACERT:
	case K_CERT:
	case K_KEY:
	case K_PASSWORD_FILE:
		/* Empty: unset, or the default that follows state_dir. */
		r = *value ? kf_config_path_set(key, p->basedir, value,
						field[id].path, reason)
			   : 0;
		break;
	case K_ALERT:
	case K_USER:
		/* Empty: unset. */
		if (!*value)
			return 1;
		*field[id].text = strdup(value);
		if (!*field[id].text)
			return fail(p, p->lineno, -ENOMEM, "out of memory");
		return 1;
	case K_RETAIN:
		r = kf_config_parse_uint(key, value, 1, RETAIN_MAX,
					 &cfg->retain_versions, reason);
		break;
	case K_KEEP:
		r = kf_config_parse_uint(key, value, 1, KEEP_MAX,
					 &cfg->backup_keep, reason);
		break;
	case K_INTERVAL:
		r = kf_config_parse_interval(key, value, KF_CONFIG_INTERVAL_MAX,
					     &cfg->rotate_interval, reason);
		break;
	case K_USAGE_WINDOW:
		r = kf_config_parse_interval(key, value, USAGE_WINDOW_MAX,
					     &cfg->usage_window, reason);
		break;
	case K_PURPOSES:
		r = kf_config_parse_purposes(value, &p->list, &p->n_list,
					     reason);
		break;
	case K_ENDPOINTS:
		r = kf_config_parse_endpoints(value, &cfg->etcd.endpoints,
					      &cfg->etcd.n_endpoints, reason);
		break;
	case K_PREFIX:
		r = kf_config_parse_prefix(value, &cfg->etcd.prefix, reason);
		break;
	case K_NODE:
		r = kf_config_parse_node(value, cfg->etcd.node, reason);
		break;
	case K_TIMEOUT:
		r = kf_config_parse_timeout(value, &cfg->etcd.timeout_ms,
					    reason);
		break;
	case K_AUDIT_MAX_SIZE:
	case K_AUDIT_ROTATE:
	case K_AUDIT_KEEP:
	case K_AUDIT_OPEN_WINDOW:
	case K_AUDIT_SYSLOG:
	case K_AUDIT_SYSLOG_FACILITY:
	case K_AUDIT_SYSLOG_TAG:
	case K_AUDIT_SYSLOG_SOCKET:
	case K_AUDIT_MIN_FREE:
		r = kf_config_audit_value(&cfg->auditing, p->basedir, key,
					  value, reason);
		break;
	case K_KEYS:
	case K_STATUS:
	case K_BACKUPS:
	case K_AUDIT:
		r = kf_config_parse_access(key, value, field[id].access,
					   reason);
		break;
	case K_COUNT:
		return fail(p, p->lineno, -EINVAL, "internal error: key %d",
			    id);
	}
	return check_value(p, p->lineno, r, reason);
}

static int start_purpose_section(struct parser *p, const char *name)
{
	char q[KF_CONFIG_QUOTE_SIZE];
	const struct section_purpose *dup = find_section(p, name);
	struct section_purpose *s;

	if (!kf_purpose_valid(name))
		return fail(p, p->lineno, -EINVAL,
			    "invalid purpose name \"%s\" in section header: "
			    "must match [a-z0-9][a-z0-9_-]{0,%d}",
			    kf_config_quote(q, name), KF_PURPOSE_MAX - 1);
	if (dup)
		return fail(p, p->lineno, -EINVAL,
			    "duplicate section [purpose %s] (first on line %d)",
			    name, dup->line);
	if (p->n_sp >= KF_CONFIG_MAX_PURPOSES)
		return fail(p, p->lineno, -EINVAL,
			    "too many [purpose] sections (at most %d)",
			    KF_CONFIG_MAX_PURPOSES);
	if (p->n_sp == p->cap_sp) {
		size_t cap = p->cap_sp ? 2 * p->cap_sp : SECTIONS_FIRST_CAP;
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
	s->p.access = root_only;
	s->line = p->lineno;
	p->cur = p->n_sp++;
	p->sec = SEC_PURPOSE;
	return 1;
}

/* Handles "[raw]"; raw is the text between the brackets. */
static int start_section(struct parser *p, char *raw)
{
	char q[KF_CONFIG_QUOTE_SIZE], *name = raw, *end;
	enum section sec;

	while (isspace((unsigned char)*name))
		name++;
	end = name + strlen(name);
	while (end > name && isspace((unsigned char)end[-1]))
		*--end = 0;
	p->last_name[0] = 0;
	for (sec = 0; sec < N_SECTION_NAMES; sec++)
		if (section_names[sec] && strcmp(name, section_names[sec]) == 0)
			break;
	if (sec < N_SECTION_NAMES) {
		p->sec = sec;
	} else if (strncmp(name, PURPOSE_WORD, PURPOSE_WORD_LEN) == 0 &&
		   (!name[PURPOSE_WORD_LEN] ||
		    isspace((unsigned char)name[PURPOSE_WORD_LEN]))) {
		name += PURPOSE_WORD_LEN;
		while (isspace((unsigned char)*name))
			name++;
		if (!*name)
			return fail(p, p->lineno, -EINVAL,
				    "section [purpose] needs a name: "
				    "[purpose NAME]");
		return start_purpose_section(p, name);
	} else {
		return fail(p, p->lineno, -EINVAL,
			    "unknown section [%s] (expected " SECTIONS ")",
			    kf_config_quote(q, name));
	}
	if (p->section_line[sec])
		return fail(p, p->lineno, -EINVAL,
			    "duplicate section [%s] (first on line %d)", name,
			    p->section_line[sec]);
	p->section_line[sec] = p->lineno;
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

	if (p->lineno == 1 && strncmp(s, UTF8_BOM, strlen(UTF8_BOM)) == 0)
		s += strlen(UTF8_BOM);
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
	char q[KF_CONFIG_QUOTE_SIZE], reason[KF_ERR_MAX];
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
			    kf_config_quote(q, name));
	snprintf(p->last_name, sizeof(p->last_name), "%s", name);
	if (!*name)
		return fail(p, p->lineno, -EINVAL, "missing key before '='");
	switch (p->sec) {
	case SEC_NONE:
		return fail(p, p->lineno, -EINVAL,
			    "key \"%s\" outside any section (expected " SECTIONS
			    " first)",
			    kf_config_quote(q, name));
	case SEC_PURPOSE: {
		struct section_purpose *s = &p->sp[p->cur];

		if (strcmp(name, "access") != 0)
			return fail(p, p->lineno, -EINVAL,
				    "unknown key \"%s\" in [purpose %s] "
				    "(expected access)",
				    kf_config_quote(q, name), s->p.name);
		if (s->access_line)
			return fail(p, p->lineno, -EINVAL,
				    "duplicate key \"access\" in [purpose %s] "
				    "(first on line %d)",
				    s->p.name, s->access_line);
		s->access_line = p->lineno;
		return check_value(p, p->lineno,
				   kf_config_parse_access("access", value,
							  &s->p.access, reason),
				   reason);
	}
	case SEC_KEYFS:
	case SEC_ACCESS:
	case SEC_ETCD:
		break;
	}
	id = find_key(p->sec, name);
	if (id == K_COUNT)
		return fail(p, p->lineno, -EINVAL, "unknown key \"%s\" in [%s]",
			    kf_config_quote(q, name), section_names[p->sec]);
	if (p->key_line[id])
		return fail(p, p->lineno, -EINVAL,
			    "duplicate key \"%s\" (first on line %d)",
			    kf_config_quote(q, name), p->key_line[id]);
	p->key_line[id] = p->lineno;
	return set_key(p, id, value);
}

/* The purpose list, then [purpose] sections not in it, in file order. */
static int build_purposes(struct parser *p)
{
	struct kf_config *cfg = p->cfg;
	char reason[KF_ERR_MAX];
	size_t n = 0;

	if (!p->key_line[K_PURPOSES] &&
	    !check_value(p, 0,
			 kf_config_parse_purposes(DEFAULT_PURPOSES, &p->list,
						  &p->n_list, reason),
			 reason))
		return 0;
	cfg->purposes = calloc(p->n_list + p->n_sp + 1, sizeof(*cfg->purposes));
	if (!cfg->purposes)
		return fail(p, 0, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->n_list; i++) {
		const struct section_purpose *s = find_section(p, p->list[i]);

		strcpy(cfg->purposes[n].name, p->list[i]);
		cfg->purposes[n].access = s ? s->p.access : root_only;
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

/* store against [etcd]: which key's line a refusal belongs to is known here. */
static int finish_store(struct parser *p)
{
	struct kf_config *cfg = p->cfg;
	char reason[KF_ERR_MAX];
	const char *key;
	int r;

	if (cfg->store == KF_STORE_TYPE_FILE) {
		/* A single node rotates its master key in one step. */
		if (cfg->master_key_next)
			return fail(p, p->key_line[K_MASTER_KEY_NEXT], -EINVAL,
				    "master_key_next is for store = etcd (a "
				    "single node rotates its master key with "
				    "keyfs rekey alone)");
		if (p->section_line[SEC_ETCD])
			return fail(p, p->section_line[SEC_ETCD], -EINVAL,
				    "[etcd] is set but store = file; set store "
				    "= etcd or remove the section");
		return 1;
	}
	r = kf_config_etcd_finish(&cfg->etcd, &key, reason);
	return r < 0 ? fail(p, key_line(p, key), r, "%s", reason) : 1;
}

static int finish(struct parser *p)
{
	struct kf_config *cfg = p->cfg;
	const char *bad, *key;

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
	if (!build_purposes(p) || !finish_store(p))
		return 0;
	if (cfg->mountpoint &&
	    (bad = kf_config_under_mountpoint(cfg, cfg->mountpoint, &key))) {
		/* A key left at its default: the mountpoint's line. */
		int line = key_line(p, key);

		return fail(p, line ? line : p->key_line[K_MOUNTPOINT], -EINVAL,
			    "%s %s lies under the mountpoint %s", key, bad,
			    cfg->mountpoint);
	}
	return 1;
}

static struct kf_config *config_new(void)
{
	struct kf_config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	cfg->mode = KF_MODE_PRODUCTION;
	cfg->retain_versions = DEFAULT_RETAIN;
	cfg->rotate_interval = DEFAULT_INTERVAL;
	cfg->usage_window = DEFAULT_USAGE_WINDOW;
	cfg->rotate_mode = KF_ROTATE_ONE_STEP;
	cfg->stage_delay = DEFAULT_STAGE_DELAY;
	cfg->stage_timeout = DEFAULT_STAGE_TIMEOUT;
	cfg->backup_keep = DEFAULT_KEEP;
	cfg->read_mode = KF_READ_AUDITED;
	if (kf_config_audit_defaults(&cfg->auditing) < 0) {
		kf_config_free(cfg);
		return NULL;
	}
	cfg->keys = root_only;
	cfg->backups = root_only;
	cfg->audit = root_only;
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
	base = kf_config_path_abs(basedir);
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
