// SPDX-License-Identifier: MIT
/*
 * curl_lib: libcurl loaded with dlopen on first use (contract in
 * curl_lib.h).
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "curl_lib.h"

/* Each member of struct kf_curl_lib and the name of its libcurl function. */
#define SYM(f) "curl_" #f, offsetof(struct kf_curl_lib, f)
static const struct {
	const char *name;
	size_t offset;
} syms[] = {
    {SYM(global_init)},	   {SYM(easy_init)},	 {SYM(easy_setopt)},
    {SYM(easy_perform)},   {SYM(easy_getinfo)},	 {SYM(easy_reset)},
    {SYM(easy_cleanup)},   {SYM(easy_strerror)}, {SYM(slist_append)},
    {SYM(slist_free_all)},
};
#undef SYM

/* Every member is a function pointer in the table, stored as dlsym's void *
 * (POSIX makes the two the same size). */
_Static_assert(sizeof(struct kf_curl_lib) == KF_LEN(syms) * sizeof(void *),
	       "a member of struct kf_curl_lib is missing from syms");
_Static_assert(sizeof(void (*)(void)) == sizeof(void *),
	       "function pointers are not the size of void *");

/*
 * The library is loaded once for the whole process, as the dynamic linker
 * would have done: this state is the process's, not a client's.  load()
 * alone writes it, under `once`; pthread_once orders those writes before
 * every return of kf_curl_lib_load, which only reads.
 */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct kf_curl_lib lib;
static int load_rc;
static char load_err[KF_ERR_MAX];

static void load(void)
{
	/* RTLD_NOW: every symbol of libcurl and what it brings bound now, as
	 * -z now does for keyfs (meson.build: no lazy-binding trampoline).
	 * RTLD_LOCAL: its symbols are not offered to other libraries. */
	void *h = dlopen(KF_CURL_LIB_SONAME, RTLD_NOW | RTLD_LOCAL);
	CURLcode rc;

	if (!h) {
		kf_err_set(load_err,
			   "cannot load %s (install Debian's %s package): %s",
			   KF_CURL_LIB_SONAME, KF_CURL_LIB_PACKAGE, dlerror());
		load_rc = -ELIBACC;
		return;
	}
	for (size_t i = 0; i < KF_LEN(syms); i++) {
		void *f = dlsym(h, syms[i].name);

		if (!f) {
			kf_err_set(load_err,
				   "%s has no %s (reinstall Debian's %s "
				   "package)",
				   KF_CURL_LIB_SONAME, syms[i].name,
				   KF_CURL_LIB_PACKAGE);
			load_rc = -ELIBBAD;
			goto fail;
		}
		memcpy((char *)&lib + syms[i].offset, &f, sizeof(f));
	}
	/* What curl_easy_init would do unasked, but once and in order. */
	rc = lib.global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK) {
		kf_err_set(load_err, "%s: curl_global_init: %s",
			   KF_CURL_LIB_SONAME, lib.easy_strerror(rc));
		load_rc = rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
		goto fail;
	}
	return;
fail:
	memset(&lib, 0, sizeof(lib));
	dlclose(h);
}

int kf_curl_lib_load(const struct kf_curl_lib **ret_lib, char err[KF_ERR_MAX])
{
	pthread_once(&once, load);
	if (load_rc < 0) {
		kf_err_set(err, "%s", load_err);
		return load_rc;
	}
	*ret_lib = &lib;
	return 0;
}
