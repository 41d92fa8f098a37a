/* SPDX-License-Identifier: MIT */
/*
 * cli: the `keyfs` subcommands other than mount.  Each takes the arguments
 * after its own name and returns the process exit status; errors are one
 * line on standard error.  keytools.c: genkey, validate, derive; ctl.c:
 * ctl; offline.c: backup, restore, audit, export-env.
 */
#ifndef KF_CLI_H
#define KF_CLI_H

#include <stdio.h>

int kf_cli_genkey(int argc, char **argv);
/* keyfs recovery-keygen --public FILE --private FILE (keytools.c). */
int kf_cli_recovery_keygen(int argc, char **argv);
int kf_cli_validate(int argc, char **argv);
int kf_cli_derive(int argc, char **argv);
int kf_cli_ctl(int argc, char **argv);
/* The lines of `keyfs --help` about ctl, from the control table, to f. */
void kf_cli_ctl_help(FILE *f);
int kf_cli_backup(int argc, char **argv);
int kf_cli_restore(int argc, char **argv);
int kf_cli_audit(int argc, char **argv);
int kf_cli_export_env(int argc, char **argv);
/* keyfs rekey --new-master FILE (rekey.c). */
int kf_cli_rekey(int argc, char **argv);
/* keyfs cluster init|status (cluster.c). */
int kf_cli_cluster(int argc, char **argv);

#endif
