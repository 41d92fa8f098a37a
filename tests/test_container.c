// SPDX-License-Identifier: MIT
/*
 * The container sidecar, for real: deploy/image/build makes the image
 * (mmdebstrap + podman, no registry), podman runs it as a privileged sidecar
 * that mounts the tree on a host folder with shared propagation (the
 * emptyDir, Bidirectional), with the master key from a folder laid out as a
 * Kubernetes Secret volume (..data links) mounted read-only; a reader
 * container as uid 1001, group 2001, with the same folder as rslave
 * (HostToContainer), started before the sidecar, reads derived/phi; a
 * rotation in the sidecar reaches it; podman stop ends the sidecar with
 * SIGTERM and the tree is unmounted everywhere.  And the manifests in
 * deploy/kubernetes: their structure (tests/k8s-check.py), and the
 * ConfigMap's keyfs.ini run in the image.
 *
 * podman's configuration is the test's own (CONTAINERS_CONF,
 * CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF): storage in
 * build-image/ beside the release build the image is made from, so the
 * Debian base (the slow part) is built once and reused while its recipe is
 * unchanged.  Every container, the keyfs image and every mount the test
 * made are removed in .fini, on failure too; the base stays.
 *
 * Key text is compared here, never printed: the captures of standard output
 * are not logged, and an assertion message names the file, not its bytes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "helpers.h"
#include "key.h"
#include "util.h"

#define SECRET_TS "..2026_12_03_10_00_00.123"

struct ctr {
	char *dir;     /* scratch: podman's files, the volume, secret, state */
	char *image;   /* the keyfs image this test built */
	char *sidecar; /* container names */
	char *reader;
	char *vol; /* the emptyDir stand-in, a shared mount */
	bool vol_bound, image_built;
};

static struct ctr C;

/* build-image/ at the top of the source tree (kept between runs). */
static char *image_dir(void)
{
	return kt_path(kt_srcdir(), "build-image");
}

/* podman's configuration: runc with cgroupfs, storage in build-image/. */
static void podman_env(void)
{
	char *top = image_dir(), *f, *text;

	cr_assert(asprintf(&text,
			   "[storage]\ndriver = \"overlay\"\n"
			   "graphroot = \"%s/storage\"\n"
			   "runroot = \"%s/run\"\n",
			   top, top) > 0);
	f = kt_path(C.dir, "storage.conf");
	kt_write_file(f, text, 0644);
	cr_assert(setenv("CONTAINERS_STORAGE_CONF", f, 1) == 0);
	free(f);
	free(text);
	/*
	 * runc: Debian 12's crun refuses a hybrid cgroup hierarchy with any
	 * controller on cgroup v2 ("cgroups in hybrid mode not supported").
	 * The limits: podman asks for a higher RLIMIT_NOFILE and NPROC than
	 * a root without CAP_SYS_RESOURCE may set; lower ones always work.
	 */
	cr_assert(asprintf(&text,
			   "[containers]\n"
			   "default_ulimits = [\"nofile=4096:4096\", "
			   "\"nproc=4096:4096\"]\n"
			   "[engine]\nruntime = \"runc\"\n"
			   "cgroup_manager = \"cgroupfs\"\n"
			   "events_logger = \"file\"\n"
			   "events_logfile_path = \"%s/events.log\"\n"
			   "tmp_dir = \"%s/tmp\"\n",
			   top, top) > 0);
	f = kt_path(C.dir, "containers.conf");
	kt_write_file(f, text, 0644);
	cr_assert(setenv("CONTAINERS_CONF", f, 1) == 0);
	free(f);
	free(text);
	f = kt_path(C.dir, "registries.conf");
	kt_write_file(f, "unqualified-search-registries = []\n", 0644);
	cr_assert(setenv("CONTAINERS_REGISTRIES_CONF", f, 1) == 0);
	free(f);
	free(top);
}

/* Everything the test made, on failure too; the base image stays. */
static void ctr_cleanup(void)
{
	if (C.sidecar)
		kt_runf(NULL, NULL, "podman rm -f -t 0 %s", C.sidecar);
	if (C.reader)
		kt_runf(NULL, NULL, "podman rm -f -t 0 %s", C.reader);
	if (C.image_built)
		kt_runf(NULL, NULL, "podman rmi -f %s", C.image);
	if (C.vol && kt_is_mounted(C.vol)) {
		/* A keyfs mount that outlived the sidecar, then the bind. */
		char *err = NULL;

		kt_runf(NULL, &err,
			"grep -q ' %s fuse.keyfs ' /proc/self/mounts && "
			"fusermount3 -uz '%s'",
			C.vol, C.vol);
		free(err);
	}
	if (C.vol_bound)
		kt_runf(NULL, NULL, "umount -l '%s'", C.vol);
	free(C.dir);
	free(C.image);
	free(C.sidecar);
	free(C.reader);
	free(C.vol);
	memset(&C, 0, sizeof(C));
}

static void ctr_init(const char *tag)
{
	cr_assert(sodium_init() >= 0);
	cr_assert_eq(geteuid(), 0, "tests run as root");
	C.dir = kt_tmpdir(tag);
	cr_assert(chmod(C.dir, 0755) == 0);
	cr_assert(asprintf(&C.image, "localhost/keyfs:test-%d", (int)getpid()) >
		  0);
	cr_assert(asprintf(&C.sidecar, "kt-keyfs-%d", (int)getpid()) > 0);
	cr_assert(asprintf(&C.reader, "kt-reader-%d", (int)getpid()) > 0);
	podman_env();
	/* What a test killed at its time-out left (fini never ran): this
	 * storage is the tests' own. */
	kt_runf(NULL, NULL,
		"podman ps -a --format '{{.Names}}' | "
		"grep -E '^kt-(keyfs|reader)-[0-9]+$' | "
		"xargs -r podman rm -f -t 0; "
		"podman images --format '{{.Repository}}:{{.Tag}}' | "
		"grep -E '^localhost/keyfs:test-[0-9]+$' | "
		"xargs -r podman rmi -f");
}

/* Builds the image with deploy/image/build (asserts). */
static void image_build(void)
{
	char *out = NULL, *err = NULL, *top = image_dir();
	int rc;

	rc = kt_runf(&out, &err, "'%s/deploy/image/build' -B '%s/meson' -t %s",
		     kt_srcdir(), top, C.image);
	C.image_built = true;
	cr_assert_eq(rc, 0, "deploy/image/build failed (%d): %s%s", rc, out,
		     err);
	/* Its last line names the image and its size. */
	fprintf(stderr, "container: %s", kt_contains(out, "MiB") ? out : "");
	free(out);
	free(err);
	free(top);
}

/* The Kubernetes Secret volume layout, holding a new master key. */
static char *secret_dir(void)
{
	char *dir = kt_path(C.dir, "secret"), *ts, *file, *link;
	uint8_t key[KF_KEY_BYTES];
	char text[KF_KEY_TEXT_LEN + 2];

	cr_assert(mkdir(dir, 01777) == 0 && chmod(dir, 01777) == 0);
	ts = kt_path(dir, SECRET_TS);
	cr_assert(mkdir(ts, 0755) == 0);
	kf_key_generate(key);
	kf_key_encode(key, text);
	strcat(text, "\n");
	file = kt_path(ts, "master.key");
	kt_write_file(file, text, 0400);
	cr_assert(chmod(file, 0400) == 0);
	sodium_memzero(text, sizeof(text));
	sodium_memzero(key, sizeof(key));
	link = kt_path(dir, "..data");
	cr_assert(symlink(SECRET_TS, link) == 0);
	free(link);
	link = kt_path(dir, "master.key");
	cr_assert(symlink("..data/master.key", link) == 0);
	free(link);
	free(file);
	free(ts);
	return dir;
}

/* The volume: a folder bound on itself in a shared peer group. */
static void volume_make(void)
{
	C.vol = kt_path(C.dir, "vol");
	cr_assert(mkdir(C.vol, 0755) == 0);
	cr_assert_eq(
	    kt_runf(NULL, NULL, "mount --bind '%s' '%s'", C.vol, C.vol), 0,
	    "mount --bind of the volume failed");
	C.vol_bound = true;
	cr_assert_eq(kt_runf(NULL, NULL,
			     "mount --make-private '%s' && "
			     "mount --make-shared '%s'",
			     C.vol, C.vol),
		     0, "mount --make-shared of the volume failed");
}

/*
 * Runs `podman exec NAME CMD` (as the container's user); as kt_runf.  A
 * read of a tree whose daemon stopped answering would hang: 60 s at most.
 */
static int in_ctr(const char *name, char **out, char **err, const char *cmd)
{
	return kt_runf(out, err, "timeout 60 podman exec %s %s", name, cmd);
}

/* A file of the tree as the reader reads it; NULL (and *rc) if it cannot. */
static char *reader_read(const char *rel, int *rc)
{
	char *cmd, *out = NULL;

	cr_assert(asprintf(&cmd, "cat /run/keyfs/%s", rel) > 0);
	*rc = in_ctr(C.reader, &out, NULL, cmd);
	free(cmd);
	if (*rc != 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* derive(host's `current`, "phi") in text form, from the host's view of the
 * propagated tree (malloc'd, 44 characters). */
static char *host_expected_phi(void)
{
	char *path = kt_path(C.vol, "current"), *cur;
	uint8_t key[KF_KEY_BYTES], phi[KF_KEY_BYTES];
	char *text = malloc(KF_KEY_TEXT_LEN + 1);
	size_t len;

	cur = kt_read_file(path, &len);
	cr_assert_not_null(cur, "the host cannot read %s", path);
	cr_assert(kf_key_decode(cur, len, key, NULL) == 0,
		  "the host's current is not a key");
	cr_assert(kf_key_derive(key, "phi", phi, NULL) == 0);
	kf_key_encode(phi, text);
	sodium_memzero(cur, len);
	sodium_memzero(key, sizeof(key));
	sodium_memzero(phi, sizeof(phi));
	free(cur);
	free(path);
	return text;
}

/* Waits up to 30 s for the sidecar's tree to answer inside it. */
static bool sidecar_ready(void)
{
	for (int i = 0; i < 300; i++) {
		char *out = NULL;
		int rc =
		    in_ctr(C.sidecar, &out, NULL, "cat /run/keyfs/version");

		free(out);
		if (rc == 0)
			return true;
		if (kt_runf(NULL, NULL,
			    "test \"$(podman inspect --format "
			    "'{{.State.Running}}' %s)\" = true",
			    C.sidecar) != 0)
			return false;
		kt_sleep_ms(100);
	}
	return false;
}

/* The sidecar's output, to a file the leak check scans; returned. */
static char *sidecar_logs(void)
{
	char *out = NULL;

	kt_runf(&out, NULL, "podman logs %s 2>&1", C.sidecar);
	kt_leak_record("container-sidecar", out ? out : "",
		       out ? strlen(out) : 0);
	return out ? out : strdup("");
}

Test(container, sidecar_serves_a_reader_container_through_propagation,
     .fini = ctr_cleanup, .timeout = 900)
{
	char *secret, *state, *cfg, *cfgtext, *out = NULL, *err = NULL;
	char *phi1, *phi2, *want, *logs;
	int rc;

	ctr_init("container");
	image_build();
	volume_make();
	secret = secret_dir();
	state = kt_path(C.dir, "state");
	cr_assert(mkdir(state, 0700) == 0);
	cfg = kt_path(C.dir, "keyfs.ini");
	cfgtext = "[keyfs]\nmode = development\nmountpoint = /run/keyfs\n"
		  "state_dir = /var/lib/keyfs\n"
		  "master_key_file = /etc/keyfs/secret/master.key\n"
		  "rotate_interval = 0\n"
		  "[purpose phi]\naccess = 0:2001 0440\n";
	kt_write_file(cfg, cfgtext, 0644);

	/* The reader first, as a pod's containers start in any order. */
	rc = kt_runf(NULL, &err,
		     "podman run -d --name %s --network none --user 1001:2001 "
		     "-v '%s:/run/keyfs:rslave' --entrypoint sleep %s "
		     "infinity",
		     C.reader, C.vol, C.image);
	cr_assert_eq(rc, 0, "podman cannot run a container here (%d): %s", rc,
		     err);
	free(err);
	err = NULL;
	rc = kt_runf(NULL, &err,
		     "podman run -d --name %s --privileged --network none "
		     "-v '%s:/run/keyfs:rshared' "
		     "-v '%s:/etc/keyfs/secret:ro' "
		     "-v '%s:/etc/keyfs/keyfs.ini:ro' "
		     "-v '%s:/var/lib/keyfs' %s",
		     C.sidecar, C.vol, secret, cfg, state, C.image);
	cr_assert_eq(rc, 0, "podman run of the sidecar failed (%d): %s", rc,
		     err);
	free(err);
	err = NULL;
	if (!sidecar_ready()) {
		logs = sidecar_logs();
		cr_assert_fail("the sidecar's tree did not answer; its log: %s",
			       logs);
	}

	/* Bidirectional: the mount reached the host's folder. */
	cr_assert(kt_runf(NULL, NULL,
			  "grep -q ' %s fuse.keyfs ' /proc/self/mounts",
			  C.vol) == 0,
		  "no fuse.keyfs mount on the host's volume %s", C.vol);
	/* HostToContainer: and the reader, started before it. */
	rc = in_ctr(C.reader, &out, NULL,
		    "grep -c ' /run/keyfs fuse.keyfs ' /proc/self/mounts");
	cr_assert(rc == 0 && atoi(out) >= 1,
		  "the reader does not see the keyfs mount");
	free(out);
	out = NULL;
	rc = in_ctr(C.reader, &out, NULL, "id -u");
	cr_assert(rc == 0 && atoi(out) == 1001, "the reader is not uid 1001");
	free(out);

	/* The reader reads its key: the one the host derives. */
	phi1 = reader_read("derived/phi", &rc);
	cr_assert_not_null(phi1, "uid 1001 cannot read derived/phi (%d)", rc);
	want = host_expected_phi();
	cr_assert(strlen(phi1) == KF_KEY_TEXT_LEN && !strcmp(phi1, want),
		  "the reader's derived/phi is not derive(current, phi)");
	free(want);
	out = reader_read("current", &rc);
	cr_assert(out == NULL && rc != 0, "uid 1001 read current");
	out = reader_read("version", &rc);
	cr_assert(out && !strcmp(out, "1\n"), "the reader's version is not 1");
	free(out);

	/* A rotation in the sidecar reaches the reader. */
	out = NULL;
	rc = in_ctr(C.sidecar, &out, &err,
		    "keyfs ctl rotate --mount /run/keyfs");
	cr_assert_eq(rc, 0, "keyfs ctl rotate in the sidecar failed: %s", err);
	free(out);
	free(err);
	err = NULL;
	out = reader_read("version", &rc);
	cr_assert(out && !strcmp(out, "2\n"),
		  "the reader's version is not 2 after the rotation");
	free(out);
	/* The manifests' liveness probe, as the kubelet would run it. */
	out = NULL;
	rc = in_ctr(C.sidecar, &out, &err,
		    "keyfs ctl status --mount /run/keyfs");
	cr_assert(rc == 0 && kt_contains(out, "2 (previous 1"),
		  "keyfs ctl status in the sidecar (%d): %s%s", rc, out, err);
	free(out);
	free(err);
	err = NULL;
	phi2 = reader_read("derived/phi", &rc);
	cr_assert_not_null(phi2, "uid 1001 cannot read derived/phi (%d)", rc);
	want = host_expected_phi();
	cr_assert(strcmp(phi1, phi2) != 0,
		  "the reader still reads the old derived/phi");
	cr_assert(!strcmp(phi2, want),
		  "the reader's new derived/phi is not derive(current, phi)");
	sodium_memzero(phi1, strlen(phi1));
	sodium_memzero(phi2, strlen(phi2));
	free(phi1);
	free(phi2);
	free(want);

	/* podman stop: SIGTERM, a clean unmount, exit 0, no stale mount. */
	rc = kt_runf(NULL, &err, "podman stop -t 30 %s", C.sidecar);
	cr_assert_eq(rc, 0, "podman stop failed: %s", err);
	free(err);
	err = NULL;
	out = NULL;
	rc = kt_runf(&out, NULL,
		     "podman inspect --format '{{.State.ExitCode}}' %s",
		     C.sidecar);
	logs = sidecar_logs();
	cr_assert(rc == 0 && out && atoi(out) == 0 && out[0] == '0',
		  "the sidecar did not exit 0 on SIGTERM (%s); its log: %s",
		  out, logs);
	free(out);
	cr_assert(kt_runf(NULL, NULL,
			  "grep -q ' %s fuse.keyfs ' /proc/self/mounts",
			  C.vol) != 0,
		  "the keyfs mount outlived the sidecar on the host");
	out = NULL;
	rc = in_ctr(C.reader, &out, NULL,
		    "grep -c fuse.keyfs /proc/self/mounts");
	cr_assert(out && atoi(out) == 0,
		  "the reader still has a keyfs mount after the stop");
	free(out);
	out = reader_read("version", &rc);
	cr_assert(out == NULL && rc != 0,
		  "the reader still reads a tree after the stop");
	free(logs);
	free(cfg);
	free(state);
	free(secret);
}

/* tests/k8s-check.py on dir; its output (malloc'd) and exit status. */
static int k8s_check(const char *dir, const char *ini, char **out)
{
	return kt_runf(out, NULL,
		       "python3 '%s/tests/k8s-check.py' '%s'%s%s 2>&1",
		       kt_srcdir(), dir, ini ? " --ini " : "", ini ? ini : "");
}

Test(container, manifests_have_the_structure_kubernetes_expects,
     .fini = ctr_cleanup, .timeout = 60)
{
	static const struct {
		const char *sed, *want;
	} breaks[] = {
	    /* A misspelt field, as kubectl's strict validation sees it. */
	    {"s/mountPropagation: HostToContainer/mountPropogation: "
	     "HostToContainer/",
	     "unknown field 'mountPropogation'"},
	    {"s/privileged: true/privileged: false/",
	     "Bidirectional needs privileged"},
	    {"s/defaultMode: 0400/defaultMode: 0440/",
	     "is not defaultMode 0400"},
	    {"s/timeoutSeconds: 5/periodSeconds: 5/", "has no timeoutSeconds"},
	    {"s/mountPropagation: HostToContainer/mountPropagation: None/",
	     "without HostToContainer"},
	};
	char *out = NULL, *copy,
	     *dir = kt_path(kt_srcdir(), "deploy/kubernetes");

	ctr_init("k8s");
	cr_assert_eq(k8s_check(dir, NULL, &out), 0, "deploy/kubernetes: %s",
		     out);
	cr_assert(kt_contains(out, "ok 4 objects"), "%s", out);
	free(out);
	/* The checker sees each kind of mistake. */
	copy = kt_path(C.dir, "manifests");
	for (size_t i = 0; i < sizeof(breaks) / sizeof(breaks[0]); i++) {
		out = NULL;
		cr_assert_eq(
		    kt_runf(NULL, NULL,
			    "rm -rf '%s' && cp -r '%s/deploy/kubernetes' "
			    "'%s' && sed -i '%s' '%s/deployment.yaml'",
			    copy, kt_srcdir(), copy, breaks[i].sed, copy),
		    0);
		cr_assert_eq(k8s_check(copy, NULL, &out), 1,
			     "%s: not refused: %s", breaks[i].sed, out);
		cr_assert(kt_contains(out, breaks[i].want),
			  "%s: \"%s\" lacks \"%s\"", breaks[i].sed, out,
			  breaks[i].want);
		free(out);
	}
	free(copy);
	free(dir);
}

/*
 * The ConfigMap's keyfs.ini, in the image, with the master key as a Secret
 * volume lays it out and no network: the configuration is accepted, the
 * master key is followed through its links, libcurl loads (store = etcd),
 * and the daemon refuses to start only because etcd cannot be reached.
 */
Test(container, configmap_configuration_runs_in_the_image, .fini = ctr_cleanup,
     .timeout = 900)
{
	char *secret, *etcd, *state, *ini, *err = NULL;
	char *dir = kt_path(kt_srcdir(), "deploy/kubernetes");
	static const char *const files[] = {"ca.crt", "tls.crt", "tls.key"};
	int rc;

	ctr_init("configmap");
	ini = kt_path(C.dir, "keyfs.ini");
	cr_assert_eq(k8s_check(dir, ini, NULL), 0);
	free(dir);
	cr_assert(chmod(ini, 0644) == 0);
	image_build();
	secret = secret_dir();
	etcd = kt_path(C.dir, "etcd");
	cr_assert(mkdir(etcd, 0755) == 0);
	for (size_t i = 0; i < 3; i++) {
		char *f = kt_path(etcd, files[i]);

		kt_write_file(f, "not used: no etcd is reachable\n", 0400);
		free(f);
	}
	state = kt_path(C.dir, "state");
	cr_assert(mkdir(state, 0700) == 0);
	rc = kt_runf(NULL, &err,
		     "timeout 120 podman run --name %s --privileged "
		     "--network none "
		     "-v '%s:/etc/keyfs/secret:ro' "
		     "-v '%s:/etc/keyfs/keyfs.ini:ro' "
		     "-v '%s:/etc/keyfs/etcd:ro' -v '%s:/var/lib/keyfs' %s",
		     C.sidecar, secret, ini, etcd, state, C.image);
	cr_assert_eq(rc, 1, "keyfs in the image: exit %d, not 1: %s", rc, err);
	cr_assert(kt_contains(err, "etcd unreachable") &&
		      kt_contains(err, "Could not resolve host") &&
		      kt_contains(err, "no local copy"),
		  "not refused for want of etcd: %s", err);
	cr_assert(!kt_contains(err, "master key") &&
		      !kt_contains(err, "libcurl"),
		  "refused for another reason: %s", err);
	free(err);
	free(state);
	free(etcd);
	free(secret);
	free(ini);
}
