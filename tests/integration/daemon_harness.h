/*
 * tests/integration/daemon_harness.h: the real deepseekd for integration tests.
 *
 *   struct daemon d;
 *   daemon_start(&d, DEEPSEEKD, MODEL_DIR, extra_args);  // fork+exec on a temp socket, waits for READY
 *   int fd = raw_connect(&d);                            // a plain socket, hello done
 *   raw_send(fd, &msg);  raw_recv(fd, &msg, timeout_ms);
 *   daemon_stop(&d);                                     // SIGTERM, waits, returns its exit status
 *
 * The daemon's stderr goes to d.log (printed when a test fails). Never forks a process that
 * has touched CUDA (docs/TESTING.md, "Rules the tests keep"): these tests only fork+exec.
 */
#ifndef DSD_TEST_DAEMON_HARNESS_H
#define DSD_TEST_DAEMON_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ipc_msg.h"

struct daemon {
    pid_t pid;
    char dir[256];          /* temp dir: socket, log */
    char socket[300];
    char log[300];
};

/* Starts binary with --model model --socket <tmp> plus extra (NULL-terminated argv, may be
 * NULL); waits until health says ok (or timeout_s). Returns 0 or -1 (message printed). */
int daemon_start(struct daemon *d, const char *binary, const char *model, const char *const *extra, int timeout_s);
/* SIGTERM, wait; returns the exit status (or -1). A status other than 0 prints the log. */
int daemon_stop(struct daemon *d);
bool daemon_alive(struct daemon *d);
void daemon_print_log(const struct daemon *d);

/* A connected socket (no hello) or -1. */
int raw_socket(const struct daemon *d);
/* A connected socket that said hello (max_frame 0) or -1. */
int raw_connect(const struct daemon *d);
/* Sends m as one frame; 0 or -1. */
int raw_send(int fd, const struct dsd_ipc_msg *m);
/* Sends raw bytes; 0 or -1. */
int raw_send_bytes(int fd, const void *p, size_t n);
/* Receives one frame and decodes it (free with dsd_ipc_msg_free). 0, -ETIMEDOUT, -EPIPE
 * (closed), -EPROTO (undecodable). */
int raw_recv(int fd, struct dsd_ipc_msg *m, int timeout_ms);
/* A generate message for token ids: greedy, exactly max_tokens (EOS ignored). prompt must
 * outlive the message. */
struct dsd_ipc_msg raw_generate_msg(uint64_t id, const uint32_t *prompt, int n_prompt, int max_tokens);
/* Sends shm_attach with memfd (-1: none) and returns the reply's type (DSD_IPC_SHM_OK,
 * DSD_IPC_ERROR with *code set and the message printed) or -1. */
int raw_shm_attach(int fd, int memfd, uint32_t *code);
/* Starts an endless greedy request id for prompt on fd, waits until 3 token frames arrived,
 * cancels it and returns the finish of its done frame (DSD_IPC_FINISH_*), or -1. */
int raw_cancel_mid_stream(int fd, uint64_t id, const uint32_t *prompt, int n_prompt);
/* One counter of `stats` on fd (said hello), or -1. */
int64_t raw_stat(int fd, const char *name);
/* The daemon's resident set in KiB (/proc/PID/status VmRSS), or -1. */
long daemon_rss_kib(const struct daemon *d);
/* Receives frames until one for id is terminal for a request (done, error, *_ok); returns
 * its type, collecting generated ids into ids (may be NULL). */
int raw_wait_done(int fd, uint64_t id, struct dsd_ipc_msg *last, uint32_t *ids, int *n_ids, int max_ids,
                  int timeout_ms);

#endif
