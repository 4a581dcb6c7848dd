/*
 * tools/probe/probe_main.c: deepseekd-probe's entry point: parse, run, exit with a sysexits
 * code (probe.h). Errors go to stderr as one specific line, not the whole help text.
 */
#include <stdio.h>

#include "probe.h"

int main(int argc, char **argv)
{
    struct probe_args a;
    char err[512];
    if (probe_parse(argc, argv, &a, err, sizeof err) < 0) {
        fprintf(stderr, "deepseekd-probe: %s\n", err);
        probe_args_free(&a);
        return PROBE_EX_USAGE;
    }
    if (a.help) {
        fputs(probe_help(a.cmd), stdout);
        probe_args_free(&a);
        return PROBE_EX_OK;
    }
    int ex = probe_run(&a);
    probe_args_free(&a);
    return ex;
}
