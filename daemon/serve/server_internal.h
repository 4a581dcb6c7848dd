/* daemon/serve/server_internal.h: the io thread's state, shared by server.c (the io_uring
 * loop, connections, sending) and session.c (what each message does). */
#ifndef DSD_SERVE_SERVER_INTERNAL_H
#define DSD_SERVE_SERVER_INTERNAL_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <sys/socket.h>
#include <sys/uio.h>

#include "ipc_fd.h"
#include "ipc_frame.h"
#include "ipc_msg.h"
#include "ipc_shm.h"
#include "server.h"

/* One generate request as the io thread tracks it, from `accepted` to `done`. It outlives
 * its connection until the engine's DONE event arrives (conn is then NULL). */
struct io_request {
    uint64_t handle;            /* engine handle */
    uint64_t wire_id;
    struct conn *conn;
    struct io_request *next_in_conn;
    struct io_request *next_in_table;
    uid_t uid;
    bool use_ring;
    uint32_t ring;
    bool notify;
    bool stalled;
    bool corrupt;               /* the ring's consumer position was impossible */
    bool stall_timed_out;       /* cancelled because its output stayed undeliverable too long */
    bool socket_stall;          /* ... because the connection's socket stayed backed up */
    uint64_t delivered;         /* tokens written to the ring */
    uint64_t credit;            /* what the engine was last granted */
    uint64_t stall_since_ns;
};

struct conn {
    uint64_t id;
    int fd;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    struct dsd_ipc_reader reader;
    bool hello_done;
    uint32_t max_frame;
    /* sending: sbuf is in flight (the kernel reads it), wbuf collects new frames */
    struct dsd_ipc_buf sbuf, wbuf;
    size_t sent;                /* bytes of sbuf already sent */
    /* receiving: one recvmsg in flight at a time; the kernel writes msg_flags/controllen here */
    struct msghdr rx_msg;
    struct iovec rx_iov;
    _Alignas(struct cmsghdr) uint8_t rx_control[DSD_IPC_CMSG_SPACE];
    bool send_in_flight;
    bool recv_armed;
    bool closing;               /* no new work; freed once refs reaches 0 */
    bool close_after_send;      /* a fatal error frame is queued */
    /* Output backed up (queued > SEND_HIGH until it drops below SEND_LOW, server.c): the
     * engine parks the connection's requests and the io thread reads nothing from it. */
    bool paused;
    uint64_t paused_since_ns;
    /* Bytes received but not yet pushed through the reader: what arrived after the output
     * backed up (the rest of that buffer, and completions already on their way). Processed
     * first when reading resumes, before the recv is armed again. */
    struct dsd_ipc_buf held;
    size_t held_off;            /* bytes of held already processed */
    uint64_t rx_bytes;          /* stream bytes received so far (held ones included) */
    int refs;                   /* io_uring operations in flight for this connection */
    /* An fd may only be taken by a shm_attach frame that starts among the stream bytes that
     * came with it, [fd_lo, fd_hi) (PROTOCOL.md §4.2); anything else is protocol_violation. */
    int pending_fd;
    uint64_t fd_lo, fd_hi;
    bool frame_has_fd;          /* the frame being handled started in that window */
    /* timeouts (on_timer) */
    uint64_t last_io_ns;        /* last byte received or sent */
    uint64_t frame_start_ns;    /* when the incomplete frame in the reader began; 0 = none */
    uint64_t frame_start_off;   /* its stream offset */
    uint64_t close_deadline_ns; /* close_after_send: close by then even if it was not sent */
    bool has_shm;
    struct dsd_shm shm;
    struct dsd_ring_producer *rings;    /* ring_count producers (positions persist) */
    uint64_t *ring_owner;       /* handle bound to each ring, 0 = free */
    struct io_request *requests;
    int n_inflight;
    char client_name[64];
    struct conn *next;
};

struct uid_use {
    uid_t uid;
    int conns, inflight;
    struct uid_use *next;
};

#define REQ_TABLE_SIZE 1024

struct server {
    struct dsd_server_params p;
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    int listen_fd, wake_fd, signal_fd, timer_fd;
    struct conn *conns;
    struct uid_use *uids;
    struct io_request *req_table[REQ_TABLE_SIZE];
    uint64_t next_conn_id, next_handle;
    bool accepting;
    bool draining, stop;
    uint64_t drain_deadline_ns;
    bool ready_notified;
    uint64_t start_ns;
    uint64_t last_watchdog_ns, watchdog_usec;
    /* counters for stats */
    uint64_t conns_total, frames_in, frames_out, errors_sent, bytes_in, bytes_out;
    uint64_t requests_accepted;
    uint64_t read_pauses, held_max, conns_timed_out, socket_stalls;
};

/* server.c */
void srv_send_msg(struct server *s, struct conn *c, const struct dsd_ipc_msg *m);
void srv_send_error(struct server *s, struct conn *c, uint64_t id, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void srv_send_fail(struct server *s, struct conn *c, const struct dsd_ipc_fail *fail);
void srv_close_conn(struct server *s, struct conn *c);
struct uid_use *srv_uid(struct server *s, uid_t uid);
uint64_t srv_now_ns(void);

/* session.c */
void session_handle_frame(struct server *s, struct conn *c, const struct dsd_ipc_frame *f);
void session_handle_engine_events(struct server *s);
void session_conn_closed(struct server *s, struct conn *c);
void session_check_stalls(struct server *s);
void session_socket_stalled(struct server *s, struct conn *c);
struct io_request *session_find(struct server *s, uint64_t handle);
void session_drain_cancel_all(struct server *s);
int session_inflight_total(const struct server *s);

#endif
