#include "ipc_fd.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

ssize_t dsd_ipc_send_fd(int sock, const void *data, size_t len, int fd, struct dsd_err *err)
{
    union {
        struct cmsghdr align;
        char buf[DSD_IPC_CMSG_SPACE];
    } cbuf;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0)
        dsd_ipc_cmsg_put_fd(&mh, cbuf.buf, fd);
    for (;;) {
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return dsd_errf(err, -errno, "sendmsg: %s", strerror(errno));
    }
}

void dsd_ipc_cmsg_put_fd(struct msghdr *mh, void *cbuf, int fd)
{
    memset(cbuf, 0, DSD_IPC_CMSG_SPACE);
    mh->msg_control = cbuf;
    mh->msg_controllen = DSD_IPC_CMSG_SPACE;
    struct cmsghdr *c = CMSG_FIRSTHDR(mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
}

int dsd_ipc_cmsg_take_fd(const void *control, size_t len, int msg_flags, int *ret_fd,
                         struct dsd_ipc_fail *fail)
{
    *ret_fd = -1;
    int got = -1;
    unsigned nfds = 0;
    bool malformed = false;
    /* Walk the cmsgs by hand on a copy-free view: CMSG_NXTHDR only needs control+len. */
    struct msghdr mh = {.msg_control = (void *)control, .msg_controllen = control ? len : 0};
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_len < CMSG_LEN(0) ||
            c->cmsg_len > len - (size_t)((const char *)c - (const char *)control)) {
            malformed = true;
            break;
        }
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *p = CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, p + i * sizeof fd, sizeof fd);
            if (fd < 0)
                continue;
            /* Keep the first, close every other: nothing escapes into the process. */
            if (nfds++ == 0)
                got = fd;
            else
                close(fd);
        }
    }
    if ((msg_flags & MSG_CTRUNC) || nfds > 1 || malformed) {
        if (got >= 0)
            close(got);
        if (fail)
            fail->id = 0;
        return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_PROTOCOL_VIOLATION,
                             "%s; a connection passes exactly one fd, with its shm_attach frame",
                             malformed ? "malformed ancillary data"
                             : (msg_flags & MSG_CTRUNC)
                                 ? "ancillary data was truncated (more than one file "
                                   "descriptor, or too much control data)"
                                 : "more than one file descriptor arrived at once");
    }
    *ret_fd = got;
    return 0;
}

ssize_t dsd_ipc_recv_fd(int sock, void *buf, size_t len, int *ret_fd, struct dsd_ipc_fail *fail)
{
    union {
        struct cmsghdr align;
        char buf[DSD_IPC_CMSG_SPACE];
    } cbuf;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = sizeof cbuf.buf};
    *ret_fd = -1;
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        int e = errno;
        return dsd_ipc_failf(fail, -e, DSD_IPC_E_INTERNAL, "recvmsg: %s", strerror(e));
    }
    int rc = dsd_ipc_cmsg_take_fd(cbuf.buf, mh.msg_controllen, mh.msg_flags, ret_fd, fail);
    if (rc < 0)
        return rc;
    return n;
}
