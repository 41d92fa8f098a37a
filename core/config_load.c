// SPDX-License-Identifier: MIT
/*
 * config_load: which configuration keyfs runs with, and what it does with
 * paths.  Chooses the file (-c, $KEYFS_CONFIG, /etc/keyfs/keyfs.ini, the
 * embedded etc/keyfs-dev.ini), reads it with the ownership and mode rule,
 * hands the text to kf_config_parse (config_parse.c), applies
 * $KEY_BACKUP_DIR, and keeps every path clear of the mountpoint.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_private.h"

#define CONFIG_MAX_MIB 1
#define CONFIG_MAX_BYTES (CONFIG_MAX_MIB * 1024 * 1024)

char *kf_config_path_clean(const char *base, const char *path)
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

int kf_config_path_set(const char *key, const char *basedir, const char *value,
		       char **ret, char reason[KF_ERR_MAX])
{
	char *s = kf_config_path_clean(basedir, value);

	if (!s) {
		kf_err_set(reason, "out of memory");
		return -ENOMEM;
	}
	if (strlen(s) >= PATH_MAX) {
		free(s);
		kf_err_set(reason, "%s: path too long", key);
		return -EINVAL;
	}
	free(*ret);
	*ret = s;
	return 0;
}

char *kf_config_cwd(void)
{
	char *cwd = getcwd(NULL, 0), *r;

	if (!cwd)
		return NULL;
	r = kf_config_path_clean("/", cwd);
	free(cwd);
	return r;
}

char *kf_config_path_abs(const char *path)
{
	char *cwd, *r;

	if (path && path[0] == '/')
		return kf_config_path_clean("/", path);
	cwd = kf_config_cwd();
	if (!cwd || !path)
		return cwd;
	r = kf_config_path_clean(cwd, path);
	free(cwd);
	return r;
}

const char *const kf_config_read_modes[3] = {[KF_READ_AUDITED] = "audited",
					     [KF_READ_STRICT] = "strict",
					     [KF_READ_CACHED] = "cached"};

const char *const kf_config_rotate_modes[2] = {
    [KF_ROTATE_ONE_STEP] = "rotate",
    [KF_ROTATE_STAGE] = "stage",
};

size_t kf_config_paths(const struct kf_config *cfg,
		       struct kf_config_path ret[KF_CONFIG_PATHS_MAX])
{
	const struct kf_config_path all[KF_CONFIG_PATHS_MAX] = {
	    {"state_dir", cfg->state_dir},
	    {"backup_dir", cfg->backup_dir},
	    {"audit_log", cfg->audit_log},
	    {"master_key_file", cfg->master_key_file},
	    {"cacert", cfg->etcd.cacert},
	    {"cert", cfg->etcd.cert},
	    {"key", cfg->etcd.key},
	    {"password_file", cfg->etcd.password_file},
	    {"audit_syslog_socket",
	     cfg->auditing.syslog ? cfg->auditing.syslog_socket : NULL},
	    {"metrics_file", cfg->metrics_file},
	    {"recovery_public_key", cfg->recovery_public_key},
	    {"master_key_next", cfg->master_key_next},
	};
	size_t n = 0;

	for (size_t i = 0; i < KF_CONFIG_PATHS_MAX; i++)
		if (all[i].path)
			ret[n++] = all[i];
	return n;
}

const char *kf_config_under_mountpoint(const struct kf_config *cfg,
				       const char *mnt, const char **ret_key)
{
	struct kf_config_path paths[KF_CONFIG_PATHS_MAX];
	size_t n = kf_config_paths(cfg, paths);

	for (size_t i = 0; i < n; i++) {
		if (kf_path_under(paths[i].path, mnt)) {
			*ret_key = paths[i].key;
			return paths[i].path;
		}
	}
	return NULL;
}

/*
 * Reads a whole regular file of at most CONFIG_MAX_BYTES, NUL-terminated.
 * Not kf_file_read_all: that one refuses symlinks (O_NOFOLLOW), and
 * /etc/keyfs/keyfs.ini may be one; and this text is no secret that needs
 * guarded memory.
 */
static int read_text(const char *path, char **ret, char err[KF_ERR_MAX])
{
	struct stat st;
	char *buf = NULL, *nul;
	size_t got = 0;
	int fd, r;

	fd = kf_file_open_regular(path, 0, &st, err);
	if (fd < 0)
		return fd;
	if (st.st_size > CONFIG_MAX_BYTES) {
		r = -EFBIG;
		kf_err_set(err, "%s: larger than %d MiB", path, CONFIG_MAX_MIB);
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
	/* Room for one byte more than allowed, to notice a file that grew. */
	buf = malloc(CONFIG_MAX_BYTES + 1 + 1);
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
			kf_err_set(err, "%s: larger than %d MiB", path,
				   CONFIG_MAX_MIB);
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
	cwd = kf_config_cwd();
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
		dir = kf_config_path_clean(cwd, path);
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
		char *b = kf_config_path_clean(cwd, env);

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
	const char *bad, *key;

	if (!path || !*path) {
		kf_err_set(err, "empty mountpoint");
		return -EINVAL;
	}
	cwd = kf_config_cwd();
	mnt = cwd ? kf_config_path_clean(cwd, path) : NULL;
	free(cwd);
	if (!mnt) {
		kf_err_set(err, "%s: out of memory (or no current directory)",
			   path);
		return -ENOMEM;
	}
	bad = kf_config_under_mountpoint(cfg, mnt, &key);
	if (bad) {
		kf_err_set(err, "%s %s lies under the mountpoint %s", key, bad,
			   mnt);
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
	free(cfg->master_key_next);
	free(cfg->audit_log);
	kf_config_audit_done(&cfg->auditing);
	free(cfg->alert_command);
	free(cfg->metrics_file);
	free(cfg->recovery_public_key);
	free(cfg->purposes);
	kf_config_etcd_done(&cfg->etcd);
	free(cfg);
	return NULL;
}
