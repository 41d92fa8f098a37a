/* SPDX-License-Identifier: MIT */
/*
 * rekey_cluster: what `keyfs rekey` does in etcd with store = etcd (README:
 * Master-key rotation, "A cluster"): checks that every running node holds
 * the new key, then seals the cluster keyring and every archive in etcd
 * anew under it.  Used by rekey.c only.
 */
#ifndef KF_REKEY_CLUSTER_H
#define KF_REKEY_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager_private.h"

struct kf_etcd;

/* What the switch found or did. */
struct kf_rekey_cluster {
	uint8_t *blob; /* the keyring in etcd, under the new key (malloc'd) */
	size_t len;
	uint64_t generation; /* its generation */
	bool switched;	     /* sealed anew by this run (else found so) */
	size_t archives;     /* in etcd */
	size_t archives_rewritten;
};

/* A client of the configuration's etcd, for the rotation. */
int kf_rekey_cluster_connect(const struct kf_config *cfg, struct kf_etcd **ret,
			     char err[KF_ERR_MAX]) KF_WUR;

/*
 * Before anything changes: 0 when the keyring in etcd is under next
 * already, or opens under old and every running node other than this one
 * has the master key fpr_next as its master key or master_key_next (its
 * node record says so).  -EBUSY naming the others; -ENOENT, -EBADMSG or
 * etcd's error with the reason.
 */
int kf_rekey_cluster_check(struct kf_etcd *e, const struct kf_config *cfg,
			   const struct kf_subkeys *old,
			   const struct kf_subkeys *next, const char *fpr_next,
			   char err[KF_ERR_MAX]) KF_WUR;

/*
 * The keyring in etcd sealed under next as the next generation (change
 * "rekey", one compare-and-swap, again after a change by another node),
 * unless it is under next already; then every archive in etcd that is not
 * under next, each by a compare-and-swap on its revision.  old may be NULL
 * (a resumed rotation past its last use).  Fills *res (kf_rekey_cluster_done)
 * as far as it got.
 */
int kf_rekey_cluster_switch(struct kf_etcd *e, const struct kf_config *cfg,
			    const struct kf_subkeys *old,
			    const struct kf_subkeys *next,
			    struct kf_rekey_cluster *res,
			    char err[KF_ERR_MAX]) KF_WUR;

/* Frees res's blob and clears it. */
void kf_rekey_cluster_done(struct kf_rekey_cluster *res);

#endif
