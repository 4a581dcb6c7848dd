/*
 * tests/client/fake_daemon.h: an in-process stand-in for deepseekd, built on ipc/, serving a
 * temporary Unix socket from its own threads. It is the boundary fake the library's unit
 * tests run against until (and besides) the real daemon: it speaks PROTOCOL.md with the same
 * codec the daemon uses, so what it sends is what a daemon can send, and a script can send
 * what no correct daemon would.
 *
 * Two modes:
 *   - engine (opts.script NULL): every connection gets its own thread running a small
 *     deterministic "engine": hello, shm_attach (validated with dsd_shm_attach), generate
 *     with frame or ring output (stalls when the ring is full, resumes on `resume`), cancel,
 *     info, stats, health, tokenize, detokenize. Request k's tokens are base + 0, base + 1,
 *     ... where base is the sum of its prompt token ids (text prompt: its length; chat:
 *     1000 x messages), so a test can check every token it receives.
 *   - script (opts.script set): the first connection is handed to the script, which drives
 *     the conversation with fake_recv / fake_send / fake_send_raw.
 */
#ifndef DSD_TEST_FAKE_DAEMON_H
#define DSD_TEST_FAKE_DAEMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc_msg.h"
#include "ipc_shm.h"

struct fake;

struct fake_opts {
    void (*script)(struct fake *f, void *arg);
    void *arg;
    const char *path;           /* socket path; NULL = a fresh temporary directory */
    uint32_t max_frame;         /* hello_ok limits.max_frame; 0 = 4 MiB */
    uint64_t max_shm_bytes;     /* 0 = 1 GiB */
    uint32_t tokens_per_step;   /* 0 = 1 */
    uint32_t step_us;           /* pause between engine steps; 0 = 200 */
    uint32_t default_max_tokens;/* max_tokens 0 means this; 0 = 8 */
    uint32_t refuse_code;       /* != 0: refuse every generate with this error code */
    uint32_t die_after_frames;  /* != 0: close the connection after this many tokens frames */
    bool refuse_shm;            /* answer shm_attach with shm_invalid */
    bool mute;                  /* accept generates but never produce */
};

/* Counters the engine keeps, summed over connections. */
struct fake_stats {
    atomic_uint generates, ring_requests, span_prompts, stalls, resumes, cancels, connections;
};

/* Starts listening on a fresh socket path; NULL on failure (printed). */
struct fake *fake_start(const struct fake_opts *o);
const char *fake_path(const struct fake *f);
struct fake_stats *fake_stats(struct fake *f);
/* Stops accepting, closes every connection, joins every thread, frees. */
void fake_stop(struct fake *f);

/* ---- script helpers (on the script's thread) ------------------------------------------ */

/* Next frame from the client, decoded (an fd that comes along is kept for shm_attach).
 * Returns 0, -ETIMEDOUT, -ECONNRESET (client closed), or -EPROTO (undecodable). */
int fake_recv(struct fake *f, struct dsd_ipc_msg *m, int timeout_ms);
/* Answers hello (and shm_attach when with_shm) as the engine would. Returns 0 or < 0. */
int fake_handshake(struct fake *f, bool with_shm);
/* The client's shm after a handshake with shm (NULL otherwise). */
struct dsd_shm *fake_shm(struct fake *f);
int fake_send(struct fake *f, const struct dsd_ipc_msg *m);
int fake_send_raw(struct fake *f, const void *bytes, size_t n);
/* Sends a frame whose body is the given msgpack bytes (adds the length prefix). */
int fake_send_body(struct fake *f, const void *body, uint32_t n);
/* Closes the script's connection now. */
void fake_hangup(struct fake *f);

/* Helpers that build common replies. */
int fake_send_accepted(struct fake *f, uint64_t id, uint32_t prompt_tokens, bool ring,
                       uint64_t ring_start);
int fake_send_ids(struct fake *f, uint64_t id, const uint32_t *ids, uint32_t n,
                  const char *text);
int fake_send_done(struct fake *f, uint64_t id, enum dsd_ipc_finish finish, uint32_t completion);
int fake_send_error(struct fake *f, uint64_t id, uint32_t code, const char *msg, bool fatal);

#endif
