// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "etcd_fixture.h"
#include "helpers.h"

struct kt_etcd kt_etcd;

/* Binds n sockets to port 0 at once (so the ports differ), then frees
 * them. */
static void free_ports(int *ports, int n)
{
	int fds[2 * KT_ETCD_MEMBERS];

	cr_assert(n <= 2 * KT_ETCD_MEMBERS);
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_addr.s_addr =
					    htonl(INADDR_LOOPBACK)};
		socklen_t len = sizeof(a);

		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert(fds[i] >= 0);
		cr_assert(bind(fds[i], (struct sockaddr *)&a, sizeof(a)) == 0,
			  "bind: %s", strerror(errno));
		cr_assert(getsockname(fds[i], (struct sockaddr *)&a, &len) ==
			  0);
		ports[i] = ntohs(a.sin_port);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

int kt_free_port(void)
{
	int p;

	free_ports(&p, 1);
	return p;
}

/* One request with a 200 ms limit: the body (malloc'd) or NULL. */
static char *probe(const char *url, const char *post)
{
	CURL *h = curl_easy_init();
	FILE *f;
	char *body = NULL;
	size_t len = 0;
	long status = 0;
	CURLcode rc;

	cr_assert(h);
	f = open_memstream(&body, &len);
	cr_assert(f);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 200L);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
	if (kt_etcd.ca) {
		curl_easy_setopt(h, CURLOPT_CAINFO, kt_etcd.ca);
		curl_easy_setopt(h, CURLOPT_SSLCERT, kt_etcd.cert);
		curl_easy_setopt(h, CURLOPT_SSLKEY, kt_etcd.key);
	}
	if (post)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	fclose(f);
	if (rc != CURLE_OK || status != 200) {
		free(body);
		return NULL;
	}
	return body;
}

static bool healthy(int i)
{
	char url[128];
	char *b;
	bool ok;

	snprintf(url, sizeof(url), "%s/health", kt_etcd.client[i]);
	b = probe(url, NULL);
	ok = b && strstr(b, "\"health\":\"true\"");
	free(b);
	return ok;
}

/* The openssl configuration of make_pki: one section per kind of
 * certificate.  Only the CA has a CN: the gateway presents the server's
 * certificate on its own gRPC calls, where etcd could take a CN for a
 * user name. */
static const char pki_cnf[] = "[req]\n"
			      "distinguished_name = dn\n"
			      "prompt = no\n"
			      "[dn]\n"
			      "[ca]\n"
			      "basicConstraints = critical, CA:TRUE\n"
			      "keyUsage = critical, keyCertSign, cRLSign\n"
			      "[server]\n"
			      "basicConstraints = CA:FALSE\n"
			      "subjectAltName = IP:127.0.0.1\n"
			      "extendedKeyUsage = serverAuth, clientAuth\n"
			      "[client]\n"
			      "basicConstraints = CA:FALSE\n"
			      "subjectAltName = URI:spiffe://keyfs/sidecar\n"
			      "extendedKeyUsage = clientAuth\n";

/* dir/name.pem and dir/name.key: a P-256 key and its certificate of the
 * cnf section `kind`, signed by dir/ca (self-signed for the CA itself). */
static void make_cert(const char *dir, const char *name, const char *kind,
		      const char *subject)
{
	char *err = NULL;
	int rc = kt_runf(NULL, &err,
			 "cd '%s' && openssl req -x509 -newkey ec -pkeyopt "
			 "ec_paramgen_curve:prime256v1 -noenc -days 1 "
			 "-config openssl.cnf -extensions %s -subj '%s' "
			 "-keyout %s.key -out %s.pem %s",
			 dir, kind, subject, name, name,
			 strcmp(kind, "ca") ? "-CA ca.pem -CAkey ca.key" : "");

	cr_assert_eq(rc, 0, "openssl (%s): %s", name, err ? err : "");
	free(err);
}

/* The certificates of kt_etcd_setup_tls in dir/pki; *server, *server_key
 * the member's. */
static void make_pki(char **server, char **server_key)
{
	char *pki = kt_path(kt_etcd.dir, "pki"), *cnf;

	cr_assert(mkdir(pki, 0700) == 0, "mkdir %s: %s", pki, strerror(errno));
	cnf = kt_path(pki, "openssl.cnf");
	kt_write_file(cnf, pki_cnf, 0600);
	free(cnf);
	make_cert(pki, "ca", "ca", "/O=keyfs-test-ca/CN=keyfs test CA");
	make_cert(pki, "server", "server", "/O=keyfs-test-etcd");
	make_cert(pki, "client", "client", "/O=keyfs-sidecar");
	make_cert(pki, "client-cn", "client", "/O=keyfs-sidecar/CN=keyfs");
	kt_etcd.ca = kt_path(pki, "ca.pem");
	kt_etcd.cert = kt_path(pki, "client.pem");
	kt_etcd.key = kt_path(pki, "client.key");
	kt_etcd.cn_cert = kt_path(pki, "client-cn.pem");
	kt_etcd.cn_key = kt_path(pki, "client-cn.key");
	*server = kt_path(pki, "server.pem");
	*server_key = kt_path(pki, "server.key");
	free(pki);
}

/* Runs member i (in the child of a fork): etcd with the common flags and,
 * with a server certificate, https and client certificates. */
static void exec_member(int i, const char *peer, const char *cluster,
			const char *token, const char *server,
			const char *server_key)
{
	char name[8], data[PATH_MAX], log[PATH_MAX];
	int fd;

	snprintf(name, sizeof(name), "m%d", i);
	snprintf(data, sizeof(data), "%s/%s", kt_etcd.dir, name);
	snprintf(log, sizeof(log), "%s/%s.out", kt_etcd.dir, name);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
	}
	/* Without a server certificate, the list ends before the TLS flags. */
	execlp("etcd", "etcd", "--name", name, "--data-dir", data,
	       "--listen-client-urls", kt_etcd.client[i],
	       "--advertise-client-urls", kt_etcd.client[i],
	       "--listen-peer-urls", peer, "--initial-advertise-peer-urls",
	       peer, "--initial-cluster", cluster, "--initial-cluster-state",
	       "new", "--initial-cluster-token", token,
	       "--experimental-watch-progress-notify-interval", "500ms",
	       "--auth-token-ttl", "2",
	       server ? "--client-cert-auth" : (char *)NULL,
	       "--trusted-ca-file", kt_etcd.ca, "--cert-file", server,
	       "--key-file", server_key, (char *)NULL);
	_exit(127);
}

/* Starts the cluster, over https with client certificates if tls. */
static void start(bool tls)
{
	int ports[2 * KT_ETCD_MEMBERS];
	char cluster[512] = "", token[64];
	char *server = NULL, *server_key = NULL;
	struct timespec t0, t;

	memset(&kt_etcd, 0, sizeof(kt_etcd));
	kt_etcd.dir = kt_tmpdir("etcd");
	if (tls)
		make_pki(&server, &server_key);
	free_ports(ports, 2 * KT_ETCD_MEMBERS);
	for (int i = 0; i < KT_ETCD_MEMBERS; i++) {
		size_t n = strlen(cluster);

		snprintf(cluster + n, sizeof(cluster) - n,
			 "%sm%d=http://127.0.0.1:%d", i ? "," : "", i,
			 ports[KT_ETCD_MEMBERS + i]);
		cr_assert(asprintf(&kt_etcd.client[i], "%s://127.0.0.1:%d",
				   tls ? "https" : "http", ports[i]) > 0);
		kt_etcd.endpoints[i] = kt_etcd.client[i];
	}
	snprintf(token, sizeof(token), "kt-%d-%ld", (int)getpid(),
		 (long)time(NULL));
	for (int i = 0; i < KT_ETCD_MEMBERS; i++) {
		char peer[64];
		pid_t pid;

		snprintf(peer, sizeof(peer), "http://127.0.0.1:%d",
			 ports[KT_ETCD_MEMBERS + i]);
		pid = fork();
		cr_assert(pid >= 0);
		if (pid == 0)
			exec_member(i, peer, cluster, token, server,
				    server_key);
		kt_etcd.pid[i] = pid;
	}
	free(server);
	free(server_key);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < KT_ETCD_MEMBERS;) {
		if (healthy(i)) {
			i++;
			continue;
		}
		cr_assert(kt_wait_child(kt_etcd.pid[i], 0) == -1,
			  "etcd member %d exited (see %s/m%d.out)", i,
			  kt_etcd.dir, i);
		clock_gettime(CLOCK_MONOTONIC, &t);
		cr_assert(t.tv_sec - t0.tv_sec < 20,
			  "the etcd cluster was not healthy within 20 s");
		kt_sleep_ms(20);
	}
}

void kt_etcd_setup(void)
{
	start(false);
}

void kt_etcd_setup_tls(void)
{
	start(true);
	kt_etcd_enable_auth(KT_ETCD_PASSWORD);
}

void kt_etcdctl(const char *args)
{
	char *err = NULL, tls[4 * PATH_MAX] = "";
	int rc;

	if (kt_etcd.ca)
		snprintf(tls, sizeof(tls),
			 " --cacert='%s' --cert='%s' --key='%s'", kt_etcd.ca,
			 kt_etcd.cert, kt_etcd.key);
	rc = kt_runf(
	    NULL, &err,
	    "etcdctl --endpoints=%s%s --user=root:" KT_ETCD_ROOT_PASSWORD
	    " %s </dev/null",
	    kt_etcd.endpoints[0], tls, args);
	cr_assert_eq(rc, 0, "etcdctl %s: %s", args, err ? err : "");
	free(err);
}

void kt_etcd_enable_auth(const char *password)
{
	/* password as one shell word: '...' with each ' as '\'' */
	char word[256] = "'", *cmd;
	size_t n = 1;

	for (const char *p = password; *p; p++) {
		cr_assert(n + 6 < sizeof(word));
		if (*p == '\'') {
			memcpy(word + n, "'\\''", 4);
			n += 4;
		} else {
			word[n++] = *p;
		}
	}
	word[n++] = '\'';
	word[n] = '\0';
	kt_etcdctl("user add root --new-user-password=" KT_ETCD_ROOT_PASSWORD);
	cr_assert(asprintf(&cmd,
			   "user add " KT_ETCD_USER " --new-user-password=%s",
			   word) > 0);
	kt_etcdctl(cmd);
	free(cmd);
	kt_etcdctl("role add keyfs-rw");
	kt_etcdctl("role grant-permission --prefix=true keyfs-rw readwrite "
		   "/keyfs/");
	kt_etcdctl("user grant-role " KT_ETCD_USER " keyfs-rw");
	kt_etcdctl("auth enable");
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void kt_etcd_kill(int i)
{
	if (kt_etcd.pid[i] <= 0)
		return;
	kill(kt_etcd.pid[i], SIGKILL);
	waitpid(kt_etcd.pid[i], NULL, 0);
	kt_etcd.pid[i] = 0;
}

void kt_etcd_teardown(void)
{
	for (int i = 0; i < KT_ETCD_MEMBERS; i++) {
		kt_etcd_kill(i);
		free(kt_etcd.client[i]);
	}
	free(kt_etcd.ca);
	free(kt_etcd.cert);
	free(kt_etcd.key);
	free(kt_etcd.cn_cert);
	free(kt_etcd.cn_key);
	if (kt_etcd.dir)
		nftw(kt_etcd.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(kt_etcd.dir);
	memset(&kt_etcd, 0, sizeof(kt_etcd));
}

int kt_etcd_leader(void)
{
	for (int tries = 0; tries < 250; tries++) {
		for (int i = 0; i < KT_ETCD_MEMBERS; i++) {
			char url[128];
			char *b;
			json_t *j;
			const char *me, *leader;
			bool is;

			if (kt_etcd.pid[i] <= 0)
				continue;
			snprintf(url, sizeof(url), "%s/v3/maintenance/status",
				 kt_etcd.client[i]);
			b = probe(url, "{}");
			j = b ? json_loads(b, 0, NULL) : NULL;
			free(b);
			me = json_string_value(json_object_get(
			    json_object_get(j, "header"), "member_id"));
			leader =
			    json_string_value(json_object_get(j, "leader"));
			is = me && leader && !strcmp(me, leader);
			json_decref(j);
			if (is)
				return i;
		}
		kt_sleep_ms(20);
	}
	cr_assert_fail("no etcd leader within 5 s");
	return -1;
}
