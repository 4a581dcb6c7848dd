/*
 * tests/serve/config_cli.c: deepseekd's command line without the daemon. Loads the
 * configuration exactly as deepseekd does and prints the effective value of every key, one
 * "key = value" per line; --help, --version and --print-config print what deepseekd prints.
 * The tests run it as a stand-in for deepseekd until the daemon exists in this tree, and a
 * developer can use it to see what a configuration file resolves to.
 * Exit status: 0 loaded (or handled), 1 error (message on stderr).
 */
#include <stdio.h>

#include "config.h"

int main(int argc, char **argv)
{
    struct dsd_serve_config cfg;
    struct dsd_err err = { { 0 } };
    int rc = dsd_serve_config_load(argc, argv, &cfg, &err);
    if (rc == DSD_SERVE_CONFIG_HANDLED)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "deepseekd: %s\n", err.msg);
        return 1;
    }
    char v[DSD_SERVE_CONFIG_PATH_MAX];
    for (int i = 0; dsd_serve_config_key_name(i); i++) {
        dsd_serve_config_format(&cfg, dsd_serve_config_key_name(i), v, sizeof v);
        printf("%s = %s\n", dsd_serve_config_key_name(i), v);
    }
    return 0;
}
