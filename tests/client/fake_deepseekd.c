/*
 * tests/client/fake_deepseekd.c: the fake daemon as a program with the real daemon's command
 * line (`--socket PATH --model DIR`; the model is ignored), so test_client_daemon can be run
 * and kept working before the real deepseekd exists. SIGTERM or SIGINT stops it (exit 0).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "fake_daemon.h"

int main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--socket"))
            path = argv[i + 1];
    if (!path) {
        fprintf(stderr, "usage: fake_deepseekd --socket PATH [--model DIR]\n");
        return 64;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);            /* threads inherit the mask */
    signal(SIGPIPE, SIG_IGN);
    struct fake *f = fake_start(&(struct fake_opts){.path = path, .tokens_per_step = 1,
                                                    .step_us = 1000});
    if (!f)
        return 1;
    int sig;
    sigwait(&set, &sig);
    fake_stop(f);
    return 0;
}
