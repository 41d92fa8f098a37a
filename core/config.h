/* SPDX-License-Identifier: MIT */
/*
 * config: the keyfs.ini configuration, parsed with inih (DESIGN.md §7).
 *
 * Unknown sections or keys, bad values, bad purpose names, unknown users or
 * groups, bad modes and bad intervals refuse the whole file with
 * "file:line: reason".  Relative paths are resolved against the directory of
 * the file (for the embedded default: the current directory).  A state_dir,
 * backup_dir, audit_log, master_key_file or metrics_file under the
 * mountpoint is refused, and so are [etcd]'s cacert, cert, key and
 * password_file.
 *
 * `store` picks where the keyring lives: file (state_dir/keyring) or etcd,
 * configured in [etcd] (DESIGN.md §9).  An [etcd] section with store = file
 * is refused, so a node is never believed clustered when it is not.
 */
#ifndef KF_CONFIG_H
#define KF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "key.h"
#include "util.h"

#define KF_CONFIG_EMBEDDED "<embedded keyfs-dev.ini>"
#define KF_CONFIG_SYSTEM "/etc/keyfs/keyfs.ini"
#define KF_CONFIG_MAX_PURPOSES 4096

enum kf_run_mode { KF_MODE_PRODUCTION, KF_MODE_DEVELOPMENT };
enum kf_read_mode { KF_READ_AUDITED, KF_READ_STRICT, KF_READ_CACHED };
/* What automatic rotation does when due (README: Staged rotation). */
enum kf_rotate_mode { KF_ROTATE_ONE_STEP, KF_ROTATE_STAGE };
enum kf_store_type { KF_STORE_TYPE_FILE, KF_STORE_TYPE_ETCD };

#define KF_NODE_NAME_MAX 63
#define KF_ETCD_PREFIX_DEFAULT "/keyfs/default"

/*
 * [etcd]: how a node reaches the cluster store.  Filled (defaults included)
 * with store = etcd only; all zero with store = file.
 */
struct kf_etcd_settings {
	char **endpoints; /* n_endpoints URLs, "http://..." or "https://..." */
	size_t n_endpoints;
	char *prefix;			 /* default KF_ETCD_PREFIX_DEFAULT */
	char node[KF_NODE_NAME_MAX + 1]; /* default: the host name */
	int timeout_ms;			 /* default 2000 */
	char *cacert, *cert, *key;	 /* absolute paths, NULL when unset */
	char *user;			 /* NULL when unset */
	char *password_file; /* absolute; set exactly when user is */
};

/* Owner, group and mode of a node. */
struct kf_access {
	uid_t uid;
	gid_t gid;
	mode_t mode; /* permission bits only, e.g. 0400 */
};

struct kf_purpose {
	char name[KF_PURPOSE_MAX + 1];
	struct kf_access access;
};

/*
 * How the audit log is kept (README: Audit): segments, retention, open
 * records, shipping to syslog, the free-space alarm.  Always filled, with
 * the defaults below where the configuration is silent.
 */
struct kf_audit_settings {
	uint64_t max_size;   /* close a segment at this size; 64 MiB */
	int64_t rotate;	     /* ... or this old, seconds; 0 = off; 1d */
	unsigned keep;	     /* closed segments kept; 0 = all (default) */
	int64_t open_window; /* seconds per open record and count; 0 = each
			      * open its own record; default 1 */
	bool syslog;	     /* also send every record to syslog; no */
	int syslog_facility; /* LOG_AUTHPRIV (default) or another LOG_* */
	char *syslog_tag;    /* "keyfs-audit" */
	char *syslog_socket; /* "/dev/log" */
	unsigned min_free;   /* alert below this % free; 0 = off; 5 */
};

#define KF_AUDIT_MAX_SIZE_DEFAULT (64u << 20)
#define KF_AUDIT_MAX_SIZE_MIN 4096
#define KF_AUDIT_ROTATE_DEFAULT 86400
#define KF_AUDIT_OPEN_WINDOW_DEFAULT 1
#define KF_AUDIT_OPEN_WINDOW_MAX 3600
#define KF_AUDIT_MIN_FREE_DEFAULT 5
#define KF_AUDIT_SYSLOG_TAG_DEFAULT "keyfs-audit"
#define KF_AUDIT_SYSLOG_SOCKET_DEFAULT "/dev/log"

struct kf_config {
	char *source; /* file name, or KF_CONFIG_EMBEDDED */
	enum kf_run_mode mode;
	char *mountpoint;      /* absolute, or NULL if unset */
	char *state_dir;       /* absolute */
	char *backup_dir;      /* absolute; default state_dir/backups */
	char *master_key_file; /* absolute; default /etc/keyfs/master.key */
	/* store = etcd: the other key of a master-key rotation's two-key
	 * window (README: Master-key rotation), absolute, or NULL */
	char *master_key_next;
	char *audit_log;	   /* absolute; default state_dir/audit.log */
	char *alert_command;	   /* NULL if unset */
	char *metrics_file;	   /* absolute, or NULL: none written */
	char *recovery_public_key; /* absolute, or NULL: archives unsealed */
	unsigned retain_versions;  /* >= 1, default 2 */
	int64_t rotate_interval;   /* seconds, 0 = off, default 90d */
	/* seconds a read keeps a version from retiring; 0 = off, 7d */
	int64_t usage_window;
	enum kf_rotate_mode rotate_mode; /* default one step ("rotate") */
	int64_t stage_delay;   /* seconds from staging to automatic promotion;
				* 0 = promote by hand; default 1d */
	int64_t stage_timeout; /* store = etcd: seconds a promotion waits for
				* every live node; default 30s */
	unsigned backup_keep;  /* >= 1, default 10 */
	enum kf_read_mode read_mode;  /* default audited */
	enum kf_store_type store;     /* default file */
	struct kf_etcd_settings etcd; /* meaningful with store = etcd */
	struct kf_audit_settings auditing;
	struct kf_access keys, status, backups, audit;
	struct kf_purpose *purposes; /* in the order declared */
	size_t n_purposes;
};

/*
 * Loads a configuration: from `path` when non-NULL, else $KEYFS_CONFIG, else
 * KF_CONFIG_SYSTEM if it exists, else the embedded etc/keyfs-dev.ini.  Then
 * applies the environment (KEY_BACKUP_DIR overrides backup_dir).  On error
 * returns -EINVAL (or an I/O errno) with "file:line: reason" in err.
 */
int kf_config_load(const char *path, struct kf_config **ret,
		   char err[KF_ERR_MAX]) KF_WUR;

/*
 * Parses configuration text.  `name` is used in messages, `basedir` resolves
 * relative paths.  Does not read the environment.
 */
int kf_config_parse(const char *text, const char *name, const char *basedir,
		    struct kf_config **ret, char err[KF_ERR_MAX]) KF_WUR;

/*
 * Replaces cfg->mountpoint with `path` (e.g. from the command line) made
 * absolute against the current directory.  Refuses with -EINVAL, leaving cfg
 * unchanged, if state_dir, backup_dir, audit_log or master_key_file lie under
 * it (lexically; symlinks are not resolved).
 */
int kf_config_set_mountpoint(struct kf_config *cfg, const char *path,
			     char err[KF_ERR_MAX]) KF_WUR;

/* A path of the configuration, and the key it comes from. */
struct kf_config_path {
	const char *key;
	const char *path;
};

#define KF_CONFIG_PATHS_MAX 12

/*
 * The paths keyfs itself opens, which must never lie under its mountpoint:
 * state_dir, backup_dir, audit_log, master_key_file and, when set, [etcd]'s
 * cacert, cert, key and password_file, audit_syslog_socket with
 * audit_syslog = yes, metrics_file, recovery_public_key and
 * master_key_next.  Fills ret (pointers into cfg) and returns how many.
 */
size_t kf_config_paths(const struct kf_config *cfg,
		       struct kf_config_path ret[KF_CONFIG_PATHS_MAX]);

/* The names of the read modes, as `read_mode` takes them, by value. */
extern const char *const kf_config_read_modes[3];

/* The names of the rotate modes, as `rotate_mode` takes them, by value. */
extern const char *const kf_config_rotate_modes[2];

/* The name of a syslog facility audit_syslog_facility takes ("authpriv"). */
const char *kf_config_facility_name(int facility);

/* Finds a purpose by name, or NULL. */
const struct kf_purpose *kf_config_purpose(const struct kf_config *cfg,
					   const char *name);

/* Frees cfg (NULL is fine); returns NULL. */
struct kf_config *kf_config_free(struct kf_config *cfg);

/* The embedded development configuration text (etc/keyfs-dev.ini). */
extern const char kf_config_embedded_dev[];

#endif
