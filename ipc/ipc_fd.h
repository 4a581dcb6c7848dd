/*
 * ipc/ipc_fd.h: passing the shm memfd over the Unix socket (SCM_RIGHTS), PROTOCOL.md §4.2.
 *
 * The one rule: the fd travels on the sendmsg() that carries the first byte of the shm_attach
 * frame; at most one fd is in flight per connection. A receiver keeps a received fd until the
 * next shm_attach frame takes it; any other fd, a second one, or truncated ancillary data is a
 * protocol violation (fatal).
 *
 * Client (blocking socket):
 *   dsd_ipc_encode(&buf, &attach_msg, max_frame, &err);
 *   ssize_t n = dsd_ipc_send_fd(sock, buf.data, buf.len, shm.fd, &err);   // n may be < len:
 *   ... send the rest with plain send()/write() ...
 *
 * Daemon with io_uring (multishot recvmsg into provided buffers; liburing 2.3 has the
 * io_uring_recvmsg_* helpers; the msghdr given to the SQE sets msg_controllen to
 * DSD_IPC_CMSG_SPACE):
 *   struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, cqe->res, &msgh);
 *   const void *control = (const char *)(o + 1) + msgh.msg_namelen;
 *   int fd;
 *   if (dsd_ipc_cmsg_take_fd(control, o->controllen, o->flags, &fd, &fail) < 0)
 *       ... send the error (fatal), close the connection ...
 *   ... fd >= 0: keep it for the next shm_attach frame; then feed
 *       io_uring_recvmsg_payload(o, &msgh), o->payloadlen bytes, to the frame reader ...
 *
 * Daemon or client with plain recvmsg: dsd_ipc_recv_fd() does the same in one call.
 * Both paths share dsd_ipc_cmsg_take_fd(), which validates and closes every fd it does not
 * hand back, so no error path leaks a descriptor into the daemon.
 */
#ifndef DSD_IPC_FD_H
#define DSD_IPC_FD_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "err.h"
#include "ipc_proto.h"

/* Control-buffer size for one fd. A receiver uses exactly this, so a peer that sends two fds
 * gets MSG_CTRUNC (the kernel closes what does not fit) and a protocol_violation. */
#define DSD_IPC_CMSG_SPACE CMSG_SPACE(sizeof(int))

/* Sends len bytes of data with fd attached as SCM_RIGHTS (fd < 0: no ancillary data) using
 * one sendmsg(MSG_NOSIGNAL), retrying EINTR. Returns the bytes sent (maybe fewer than len:
 * the fd went with the first of them; send the rest without it) or a negative errno
 * (-EAGAIN on a non-blocking socket that is full: nothing was sent, the fd neither). */
ssize_t dsd_ipc_send_fd(int sock, const void *data, size_t len, int fd, struct dsd_err *err);

/* Fills a msghdr's control fields to carry fd, using cbuf (DSD_IPC_CMSG_SPACE bytes, aligned
 * like struct cmsghdr), for callers that build their own sendmsg (io_uring). */
void dsd_ipc_cmsg_put_fd(struct msghdr *mh, void *cbuf, int fd);

/* Validates received ancillary data and takes out the fd, if any.
 *   0        *ret_fd is the one SCM_RIGHTS fd received, or -1 when none came
 *   -EPROTO  MSG_CTRUNC in msg_flags, more than one fd, or a malformed cmsg
 *            (fail: DSD_IPC_E_PROTOCOL_VIOLATION, fatal); every fd found has been closed
 * Other control messages (SCM_CREDENTIALS) are ignored. control may be NULL when len is 0. */
int dsd_ipc_cmsg_take_fd(const void *control, size_t len, int msg_flags, int *ret_fd,
                         struct dsd_ipc_fail *fail);

/* recvmsg(MSG_CMSG_CLOEXEC) of up to len bytes with room for one fd, retrying EINTR, then
 * dsd_ipc_cmsg_take_fd(). Returns the bytes received (0 = EOF), -EPROTO as above (the bytes
 * are lost with the connection), or a negative errno (-EAGAIN...) with fail code internal. */
ssize_t dsd_ipc_recv_fd(int sock, void *buf, size_t len, int *ret_fd, struct dsd_ipc_fail *fail);

#endif
