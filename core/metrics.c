// SPDX-License-Identifier: MIT
/*
 * metrics: the Prometheus text of the manager's state and counters, and
 * the atomic write of metrics_file (metrics.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"

#define TEXT_FIRST_CAP 4096 /* about the size of a small tree's metrics */

/* Text growing by appends; `failed` once an allocation did not succeed. */
struct text {
	char *p;
	size_t len, cap;
	bool failed;
};

static void add(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = true;
			return;
		}
		if ((size_t)n < t->cap - t->len)
			break;
		size_t cap = 2 * t->cap + (size_t)n;
		char *grown = realloc(t->p, cap);

		if (!grown) {
			t->failed = true;
			return;
		}
		t->p = grown;
		t->cap = cap;
	}
	t->len += (size_t)n;
}

/* The "# HELP" and "# TYPE" lines of a family. */
static void family(struct text *t, const char *name, const char *type,
		   const char *help)
{
	add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the format escapes it: backslash, quote, newline. */
static void add_label_value(struct text *t, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			add(t, "\\%c", *v);
		else if (*v == '\n')
			add(t, "\\n");
		else
			add(t, "%c", *v);
	}
}

/* The parts of the status object metrics show (kf_manager_info). */
struct status_part {
	int64_t version;
	int64_t staged;		       /* the staged version; 0: none */
	int64_t created;	       /* the current key's; 0: unknown */
	int64_t next_rotation;	       /* 0: automatic rotation off */
	bool cluster;		       /* store = etcd */
	bool store_up;		       /* etcd answered the last heartbeat */
	size_t nodes;		       /* node records listed */
	uint64_t audit_bytes;	       /* the active segment's size */
	uint64_t audit_write_failures; /* appends refused since open */
};

/* Whether o's string field key is `want`. */
static bool string_is(json_t *o, const char *key, const char *want)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s && strcmp(s, want) == 0;
}

static int64_t time_of(json_t *o, const char *key)
{
	int64_t t = 0;
	const char *s = json_string_value(json_object_get(o, key));

	if (!s || kf_time_parse_rfc3339(s, &t) < 0)
		return 0;
	return t;
}

/* What status says, so metrics never disagree with it. */
static void status_part(struct kf_manager *m, struct status_part *ret)
{
	json_t *o = kf_manager_info(m), *store, *audit;

	memset(ret, 0, sizeof(*ret));
	ret->version = json_integer_value(json_object_get(o, "version"));
	ret->staged = json_integer_value(json_object_get(o, "staged_version"));
	ret->created = time_of(o, "created");
	ret->next_rotation = time_of(o, "next_rotation");
	store = json_object_get(o, "store");
	ret->cluster = string_is(store, "type", "etcd");
	ret->store_up = string_is(store, "state", "ok");
	ret->nodes = json_array_size(json_object_get(store, "nodes"));
	audit = json_object_get(o, "audit");
	ret->audit_bytes = (uint64_t)json_integer_value(
	    json_object_get(audit, "active_bytes"));
	ret->audit_write_failures = (uint64_t)json_integer_value(
	    json_object_get(audit, "write_failures"));
	json_decref(o);
}

/* The kinds of archive in backups/, by name, as metrics label them. */
enum backup_kind { BK_AUTOMATIC, BK_NAMED, BK_PRE_RESTORE, BK_COUNT };
static const char *const backup_kinds[BK_COUNT] = {[BK_AUTOMATIC] = "automatic",
						   [BK_NAMED] = "named",
						   [BK_PRE_RESTORE] =
						       "pre_restore"};

static enum backup_kind backup_kind_of(const char *name)
{
	if (strncmp(name, KF_BACKUP_AUTO_PREFIX,
		    strlen(KF_BACKUP_AUTO_PREFIX)) == 0)
		return BK_AUTOMATIC;
	if (strncmp(name, KF_BACKUP_PRE_RESTORE_PREFIX,
		    strlen(KF_BACKUP_PRE_RESTORE_PREFIX)) == 0)
		return BK_PRE_RESTORE;
	return BK_NAMED;
}

static void key_families(struct text *t, const struct kf_config *cfg,
			 const struct status_part *st, int64_t now)
{
	family(t, "keyfs_build_info", "gauge",
	       "Always 1; the keyfs version in its label.");
	add(t, "keyfs_build_info{version=\"");
	add_label_value(t, KF_VERSION);
	add(t, "\"} 1\n");
	family(t, "keyfs_key_version", "gauge",
	       "Version number of the current key.");
	add(t, "keyfs_key_version %" PRId64 "\n", st->version);
	family(t, "keyfs_staged_version", "gauge",
	       "Version number of the staged key (staged rotation); 0: none "
	       "is staged.");
	add(t, "keyfs_staged_version %" PRId64 "\n", st->staged);
	family(t, "keyfs_key_age_seconds", "gauge",
	       "Seconds since the current key was created.");
	add(t, "keyfs_key_age_seconds %" PRId64 "\n",
	    st->created > 0 && now > st->created ? now - st->created : 0);
	family(t, "keyfs_rotate_interval_seconds", "gauge",
	       "The configured rotate_interval in seconds; 0: automatic "
	       "rotation is off.");
	add(t, "keyfs_rotate_interval_seconds %" PRId64 "\n",
	    cfg->rotate_interval);
	family(t, "keyfs_next_rotation_seconds", "gauge",
	       "Seconds until the next automatic rotation is due (0: due "
	       "now); no sample while automatic rotation is off.");
	if (st->next_rotation > 0)
		add(t, "keyfs_next_rotation_seconds %" PRId64 "\n",
		    st->next_rotation > now ? st->next_rotation - now : 0);
}

static void counter_families(struct text *t,
			     const struct kf_manager_counters *c,
			     const struct status_part *st,
			     const char *const *names, size_t n_names)
{
	static const char *const results[2] = {"success", "failure"};
	const uint64_t *rot = c->events[KF_EVENT_KEY_ROTATION];
	const uint64_t *stage = c->events[KF_EVENT_KEY_STAGE];
	const uint64_t *promote = c->events[KF_EVENT_KEY_PROMOTE];

	/* A staged rotation is one when promoted; a failed step of it is a
	 * failed rotation (the alert on failures sees rotate_mode = stage). */
	family(t, "keyfs_rotations_total", "counter",
	       "Rotations by this daemon (control/rotate, automatic; a staged "
	       "rotation counts once promoted, a failed stage or promote as "
	       "a failure) since it started, by result; monotonic.");
	add(t, "keyfs_rotations_total{result=\"success\"} %" PRIu64 "\n",
	    rot[0] + promote[0]);
	add(t, "keyfs_rotations_total{result=\"failure\"} %" PRIu64 "\n",
	    rot[1] + stage[1] + promote[1]);
	family(t, "keyfs_opens_total", "counter",
	       "Audited opens of key files recorded since the daemon "
	       "started, by kind (key: current, previous, versions/N/key; "
	       "derived: derived files); monotonic; none in cached mode.");
	add(t, "keyfs_opens_total{kind=\"key\"} %" PRIu64 "\n",
	    c->opens[KF_MANAGER_OPEN_KEY]);
	add(t, "keyfs_opens_total{kind=\"derived\"} %" PRIu64 "\n",
	    c->opens[KF_MANAGER_OPEN_DERIVED]);
	family(t, "keyfs_control_writes_total", "counter",
	       "Writes to control files since the daemon started, by file "
	       "and result (failure: refused, malformed, or the operation "
	       "failed); monotonic.");
	for (size_t f = 0; f < n_names && f < KF_MANAGER_CONTROLS_MAX; f++) {
		for (int i = 0; i < 2; i++) {
			add(t, "keyfs_control_writes_total{file=\"");
			add_label_value(t, names[f]);
			add(t, "\",result=\"%s\"} %" PRIu64 "\n", results[i],
			    c->controls[f][i]);
		}
	}
	family(t, "keyfs_audit_write_failures_total", "counter",
	       "Audit records that could not be written since the daemon "
	       "started (each refused an open or an operation); monotonic.");
	add(t, "keyfs_audit_write_failures_total %" PRIu64 "\n",
	    st->audit_write_failures);
	family(t, "keyfs_audit_bytes", "gauge",
	       "Size of the audit log's active segment in bytes.");
	add(t, "keyfs_audit_bytes %" PRIu64 "\n", st->audit_bytes);
}

/* Archives by kind, and the newest one's creation time. */
static void backup_families(struct text *t, struct kf_manager *m)
{
	struct kf_backup_info *list = NULL;
	size_t n = 0, count[BK_COUNT] = {0};
	int64_t last = 0;
	char err[KF_ERR_MAX];

	if (kf_manager_list_backups(m, &list, &n, err) < 0)
		n = 0; /* an unreadable folder counts none */
	for (size_t i = 0; i < n; i++) {
		count[backup_kind_of(list[i].name)]++;
		if (list[i].created > last)
			last = list[i].created;
	}
	free(list);
	family(t, "keyfs_backups", "gauge",
	       "Encrypted archives in backup_dir, by kind (automatic: "
	       "key_backup_*, pre_restore: pre_restore_*, named: the "
	       "others).");
	for (int k = 0; k < BK_COUNT; k++)
		add(t, "keyfs_backups{kind=\"%s\"} %zu\n", backup_kinds[k],
		    count[k]);
	family(t, "keyfs_last_backup_timestamp_seconds", "gauge",
	       "Creation time of the newest archive in backup_dir, Unix "
	       "seconds; no sample while there is none.");
	if (last > 0)
		add(t, "keyfs_last_backup_timestamp_seconds %" PRId64 "\n",
		    last);
}

static void store_families(struct text *t, const struct status_part *st)
{
	if (!st->cluster)
		return;
	family(t, "keyfs_store_up", "gauge",
	       "1 when the cluster store (etcd) answered this node's last "
	       "heartbeat, else 0 (degraded).");
	add(t, "keyfs_store_up %d\n", st->store_up ? 1 : 0);
	family(t, "keyfs_cluster_nodes", "gauge",
	       "Nodes whose record is in the cluster store (each kept on a "
	       "10-second lease), as last listed.");
	add(t, "keyfs_cluster_nodes %zu\n", st->nodes);
}

int kf_metrics_render(struct kf_manager *m, const char *const *control_names,
		      size_t n_controls, char **ret_text, size_t *ret_len)
{
	struct text t = {malloc(TEXT_FIRST_CAP), 0, TEXT_FIRST_CAP, false};
	struct kf_manager_counters c;
	struct status_part st;
	int64_t now = kf_time_now();

	if (!t.p)
		return -ENOMEM;
	t.p[0] = 0;
	status_part(m, &st);
	kf_manager_counters(m, &c);
	key_families(&t, kf_manager_config(m), &st, now);
	counter_families(&t, &c, &st, control_names, n_controls);
	backup_families(&t, m);
	store_families(&t, &st);
	if (t.failed) {
		free(t.p);
		return -ENOMEM;
	}
	*ret_text = t.p;
	*ret_len = t.len;
	return 0;
}

/* --- metrics_file ------------------------------------------------------- */

/* write(2) until every byte is written. */
static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int kf_metrics_write_file(const char *path, const char *text, size_t len,
			  const struct kf_access *access, char err[KF_ERR_MAX])
{
	char tmp[PATH_MAX];
	int fd, r;

	/* Not *.prom: the collector must never read it half written. */
	if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >=
	    (int)sizeof(tmp)) {
		kf_err_set(err, "metrics_file %s: name too long", path);
		return -ENAMETOOLONG;
	}
	/* One left by a crash of this very pid's predecessor is ours. */
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0) {
		r = -errno;
		kf_err_set(err, "metrics_file %s: %s", tmp, strerror(-r));
		return r;
	}
	r = write_all(fd, text, len);
	if (r == 0 && (fchown(fd, access->uid, access->gid) < 0 ||
		       fchmod(fd, access->mode) < 0))
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlink(tmp);
		kf_err_set(err, "metrics_file %s: %s", path, strerror(-r));
	}
	return r;
}
