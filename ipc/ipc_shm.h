/*
 * ipc/ipc_shm.h: the per-connection shared-memory region (PROTOCOL.md §7, §8): a sealed memfd
 * holding a header, a prompt arena and one output ring of u32 token ids per request slot.
 *
 * Client side (creates the region, writes prompts, consumes tokens):
 *
 *   struct dsd_shm shm;
 *   struct dsd_shm_params p = {.prompt_capacity = 1 << 20, .ring_count = 64,
 *                              .ring_capacity = 4096};
 *   if (dsd_shm_create(&p, &shm, &err) < 0) ...;         // memfd, size, header, seals
 *   ... send shm_attach with shm.fd (ipc_fd.h) ...
 *   memcpy(dsd_shm_prompt(&shm) + off, ids, n * 4);     // then generate with prompt_span
 *   struct dsd_ring_consumer c;
 *   dsd_ring_consumer_init(&c, &shm, ring, accepted.ring_start);
 *   n = dsd_ring_consume(&c, out, max);                  // after each tokens frame
 *   dsd_shm_close(&shm);
 *
 * Daemon side (validates before trusting anything, produces tokens):
 *
 *   struct dsd_shm shm;
 *   if (dsd_shm_attach(fd, max_bytes, &shm, &fail) < 0)  // always takes over fd
 *       reply error shm_invalid with fail.err.msg;
 *   dsd_shm_copy_prompt(&shm, span_offset, span_count, engine_buf, &fail);
 *   struct dsd_ring_producer pr;                         // one per ring, kept per connection
 *   dsd_ring_producer_init(&pr, &shm, k, 0);
 *   dsd_ring_producer_bind(&pr, request_id);             // ring_start = pr.pos
 *   n = dsd_ring_produce(&pr, ids, count);               // < count: full, stall the request
 *   dsd_ring_producer_finish(&pr, DSD_IPC_FINISH_STOP);
 *
 * The daemon never trusts the shared bytes: dsd_shm_attach() checks the seals and size before
 * mapping, then validates a private copy of the header and never reads the header again;
 * the producer keeps its position privately and reads the consumer position once per call,
 * bounds-checking it; slot indices are masked, so no client value can move a write outside
 * the ring. What a client can break by scribbling is its own output.
 *
 * Memory ordering: slots are written with plain stores, then prod_pos is published with a
 * release store; the consumer's acquire load of prod_pos makes the slots visible. The same
 * pairing runs the other way for cons_pos (slots may be reused after the producer's acquire
 * load sees the new cons_pos). finish is stored (release) after the final prod_pos.
 */
#ifndef DSD_IPC_SHM_H
#define DSD_IPC_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "ipc_msg.h"
#include "ipc_proto.h"

#define DSD_SHM_MAGIC "DSD-SHM"      /* 8 bytes with its NUL */
#define DSD_SHM_VERSION 1
#define DSD_SHM_HEADER_SIZE 128u
#define DSD_SHM_LINE 128u            /* alignment unit; one writer per line */
#define DSD_SHM_RING_SLOTS_OFFSET 384u
#define DSD_SHM_MAX_RINGS 1024u
#define DSD_SHM_MIN_RING_CAP 16u
#define DSD_SHM_MAX_RING_CAP (1u << 24)
#define DSD_SHM_RING_STALLED 1u      /* bit of dsd_shm_ring.flags */

/* The header exactly as it lies at offset 0 (host byte order). */
struct dsd_shm_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t total_size;
    uint64_t prompt_offset;
    uint64_t prompt_capacity;   /* tokens */
    uint64_t rings_offset;
    uint32_t ring_count;
    uint32_t ring_capacity;     /* tokens, power of two */
    uint64_t ring_stride;       /* bytes */
    uint32_t flags;
    uint8_t reserved[60];
};
_Static_assert(sizeof(struct dsd_shm_header) == DSD_SHM_HEADER_SIZE, "shm header is 128 bytes");

/* The control lines at the start of each ring; the slots follow at offset 384. */
struct dsd_shm_ring {
    _Atomic uint64_t prod_pos;              /* daemon writes */
    uint8_t pad0[DSD_SHM_LINE - 8];
    _Atomic uint64_t cons_pos;              /* client writes */
    uint8_t pad1[DSD_SHM_LINE - 8];
    _Atomic uint32_t finish;                /* daemon: enum dsd_ipc_finish, 0 while running */
    _Atomic uint32_t flags;                 /* daemon: DSD_SHM_RING_STALLED */
    _Atomic uint64_t request_id;            /* daemon */
    uint8_t pad2[DSD_SHM_LINE - 16];
};
_Static_assert(sizeof(struct dsd_shm_ring) == DSD_SHM_RING_SLOTS_OFFSET, "ring control is 384 bytes");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "shared 64-bit atomics must be lock-free");

/* The validated geometry (the daemon's private copy). Absent parts have capacity/count 0. */
struct dsd_shm_geometry {
    uint64_t total_size;
    uint64_t prompt_offset, prompt_capacity;
    uint64_t rings_offset, ring_stride;
    uint32_t ring_count, ring_capacity;
};

struct dsd_shm {
    int fd;                     /* client: the memfd to send; daemon: -1 (closed after mmap) */
    uint8_t *base;
    size_t size;
    struct dsd_shm_geometry geo;
};

/* What the client asks for. prompt_capacity or ring_count may be 0, not both. */
struct dsd_shm_params {
    uint64_t prompt_capacity;   /* tokens */
    uint32_t ring_count;        /* <= 1024 */
    uint32_t ring_capacity;     /* power of two in [16, 2^24] when ring_count > 0 */
};

/* The standard layout for p: header, prompt arena at 4096, rings page-aligned after it.
 * Returns 0 or -EINVAL (err names the bad parameter). */
int dsd_shm_layout(const struct dsd_shm_params *p, struct dsd_shm_header *hdr,
                   struct dsd_err *err);

/* Client: creates, sizes, maps, fills in and seals (SHRINK|GROW|SEAL) a memfd. Returns 0 or
 * -EINVAL (bad params), or the negative errno of memfd_create/ftruncate/mmap/fcntl (err says
 * which). On failure nothing is left open. */
int dsd_shm_create(const struct dsd_shm_params *p, struct dsd_shm *shm, struct dsd_err *err);

/* Daemon: validates header bytes against the rules of PROTOCOL.md §7.2 for a file of
 * file_size bytes; avail is how many header bytes are given (< 128 fails). Pure function: no
 * system calls; this is what the fuzzer drives. Returns 0 with *geo filled, or -EPROTO with
 * fail (DSD_IPC_E_SHM_INVALID) naming the rule. */
int dsd_shm_check_header(const void *hdr, size_t avail, uint64_t file_size,
                         struct dsd_shm_geometry *geo, struct dsd_ipc_fail *fail);

/* Daemon: checks fd (memfd seals ⊇ SHRINK|GROW|SEAL and no write seals, then -- only once
 * the size can no longer change -- a regular file of size in [128, max_bytes]), maps it
 * read-write, validates a copy of its header. Always takes over
 * fd: it is closed on failure and after a successful mmap. fd < 0 is "no fd came with the
 * frame". Returns 0, or -EPROTO (fail: DSD_IPC_E_SHM_INVALID with the reason), or a negative
 * errno from fstat/mmap (fail: DSD_IPC_E_SHM_INVALID too, with the errno's text). */
int dsd_shm_attach(int fd, uint64_t max_bytes, struct dsd_shm *shm, struct dsd_ipc_fail *fail);
/* dsd_shm_attach() with a hook called between the seal check and the size check (fd, user),
 * so a test can play the racing client deterministically (tests/ipc/test_ipc_shm.c shrinks
 * and seals the memfd there). dsd_shm_attach() is this with between = NULL. */
int dsd_shm_attach_hooked(int fd, uint64_t max_bytes, struct dsd_shm *shm,
                          struct dsd_ipc_fail *fail, void (*between)(int fd, void *user),
                          void *user);

/* Unmaps and closes (the client's fd too). NULL, and the state a failed create/attach
 * leaves (fd -1, base NULL), are fine; so is calling it twice. */
void dsd_shm_close(struct dsd_shm *shm);

/* The prompt arena (client writes). NULL when there is none. */
uint32_t *dsd_shm_prompt(const struct dsd_shm *shm);

/* Daemon: copies prompt tokens [offset, offset+count) out of the arena into dst (count u32)
 * before anything looks at them. Returns 0, or -EPROTO with fail (DSD_IPC_E_RING_UNAVAILABLE)
 * when the span is empty or leaves the arena. */
int dsd_shm_copy_prompt(const struct dsd_shm *shm, uint64_t offset, uint32_t count,
                        uint32_t *dst, struct dsd_ipc_fail *fail);

/* Ring k's control lines, or NULL when k >= ring_count. */
struct dsd_shm_ring *dsd_shm_ring(const struct dsd_shm *shm, uint32_t k);

/* ---- producer (daemon) ------------------------------------------------------------------ */

struct dsd_ring_producer {
    struct dsd_shm_ring *ring;
    uint32_t *slots;
    uint32_t cap, mask;
    uint64_t pos;               /* authoritative; never read back from shared memory */
    uint64_t floor;             /* pos at the last bind: unread tokens before it are dropped */
    bool broken;                /* the consumer position was impossible once: never write */
};

/* Sets up the producer for ring k (k < ring_count, checked by the caller with dsd_shm_ring)
 * continuing at pos (0 for a fresh region, else the position the daemon remembered). Stores
 * pos into prod_pos so the client sees the daemon's view. */
void dsd_ring_producer_init(struct dsd_ring_producer *p, const struct dsd_shm *shm, uint32_t k,
                            uint64_t pos);

/* Binds the ring to a request: request_id, flags = 0, then finish = 0 (release). The
 * request's ring_start is p->pos; tokens of an earlier request still unread in the ring no
 * longer count as used (PROTOCOL.md §8.1). */
void dsd_ring_producer_bind(struct dsd_ring_producer *p, uint64_t request_id);

/* Free slots: reads cons_pos once (acquire). Returns 0..cap, or -EPROTO when the consumer
 * position is impossible (ahead of the producer, or more than cap behind): ring_corrupt;
 * the producer is then broken and every later call fails the same way. */
int64_t dsd_ring_space(struct dsd_ring_producer *p);

/* Writes as many of ids[0..n) as fit, then publishes prod_pos (release). Returns the number
 * written (< n means full: stall the request, keep the rest) or -EPROTO as dsd_ring_space. */
int64_t dsd_ring_produce(struct dsd_ring_producer *p, const uint32_t *ids, uint32_t n);

/* Sets or clears the STALLED flag. */
void dsd_ring_set_stalled(struct dsd_ring_producer *p, bool stalled);

/* Ends the bound request: finish (release) after the final prod_pos. */
void dsd_ring_producer_finish(struct dsd_ring_producer *p, enum dsd_ipc_finish finish);

/* ---- consumer (client) ------------------------------------------------------------------ */

struct dsd_ring_consumer {
    struct dsd_shm_ring *ring;
    const uint32_t *slots;
    uint32_t cap, mask;
    uint64_t pos;
};

/* Sets up the consumer of ring k at position pos (accepted.ring_start, or where it left off). */
void dsd_ring_consumer_init(struct dsd_ring_consumer *c, const struct dsd_shm *shm, uint32_t k,
                            uint64_t pos);

/* Tokens ready (acquire load of prod_pos); -EPROTO when the producer position is impossible. */
int64_t dsd_ring_available(const struct dsd_ring_consumer *c);

/* Copies up to max ready tokens into out, then stores cons_pos (release). Returns the count or
 * -EPROTO as dsd_ring_available. */
int64_t dsd_ring_consume(struct dsd_ring_consumer *c, uint32_t *out, uint32_t max);

/* The finish word (acquire): DSD_IPC_FINISH_NONE while the bound request runs. After a
 * non-zero finish, dsd_ring_available() gives the final remainder. */
enum dsd_ipc_finish dsd_ring_finish_code(const struct dsd_ring_consumer *c);
bool dsd_ring_stalled(const struct dsd_ring_consumer *c);
uint64_t dsd_ring_request_id(const struct dsd_ring_consumer *c);

#endif
