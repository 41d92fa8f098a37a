/* SPDX-License-Identifier: MIT */
/*
 * curl_lib: libcurl, loaded at run time by the first etcd client rather
 * than by the dynamic linker when keyfs starts.  libcurl brings OpenSSL,
 * GnuTLS, Kerberos, LDAP and more, whose constructors and relocations cost
 * a daemon about 5 MiB of resident memory; a daemon with the file store
 * never loads them.  keyfs is compiled against curl's headers only and has
 * no DT_NEEDED entry for libcurl.
 *
 * The functions keyfs calls are the members of struct kf_curl_lib, named
 * as libcurl's without the "curl_" prefix and typed from curl.h's own
 * declarations: lib->easy_setopt(h, CURLOPT_URL, url).  (Calls through these
 * pointers miss the option type checks that curl's typecheck-gcc.h adds to
 * curl_easy_setopt: cast every long option's value to long.)
 */
#ifndef KF_CURL_LIB_H
#define KF_CURL_LIB_H

#include <curl/curl.h>

#include "util.h"

/* The library's name, as the dynamic linker looks it up. */
#define KF_CURL_LIB_SONAME "libcurl.so.4"
/* The Debian package that installs it (what libcurl4-openssl-dev's
 * libcurl.so points to; libcurl3-gnutls installs libcurl-gnutls.so.4). */
#define KF_CURL_LIB_PACKAGE "libcurl4"

/* libcurl's functions that keyfs calls; read-only once loaded. */
struct kf_curl_lib {
	__typeof__(curl_global_init) *global_init;
	__typeof__(curl_easy_init) *easy_init;
	__typeof__(curl_easy_setopt) *easy_setopt;
	__typeof__(curl_easy_perform) *easy_perform;
	__typeof__(curl_easy_getinfo) *easy_getinfo;
	__typeof__(curl_easy_reset) *easy_reset;
	__typeof__(curl_easy_cleanup) *easy_cleanup;
	__typeof__(curl_easy_strerror) *easy_strerror;
	__typeof__(curl_slist_append) *slist_append;
	__typeof__(curl_slist_free_all) *slist_free_all;
};

/*
 * Loads libcurl (KF_CURL_LIB_SONAME) and runs curl_global_init, once per
 * process whichever thread calls first; later calls return what the first
 * one found.  0 and *ret_lib (valid for the life of the process, never
 * unloaded); or -ELIBACC when the library cannot be loaded, -ELIBBAD when it
 * lacks one of the functions, -ENOMEM or -EIO when curl_global_init fails,
 * each with a reason in err (KF_ERR_MAX, may be NULL) that names the
 * library and KF_CURL_LIB_PACKAGE.
 */
int kf_curl_lib_load(const struct kf_curl_lib **ret_lib,
		     char err[KF_ERR_MAX]) KF_WUR;

#endif
