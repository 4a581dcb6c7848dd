/*
 * deepseekd-openai: start-up, the listening socket (its own, or the one systemd passes
 * through deepseekd-openai.socket), signals and shutdown. docs/OPENAI.md describes it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"
#include "openai.h"

/* The socket systemd passed: 1 with *fd, 0 none, or a negative errno. */
static int activated_socket(int *fd, struct dsd_err *err)
{
    *fd = -1;
    int n = sd_listen_fds(1);
    if (n < 0)
        return dsd_errf(err, n, "reading the sockets passed by systemd: %s", strerror(-n));
    if (n == 0)
        return 0;
    if (n > 1)
        return dsd_errf(err, -EINVAL, "systemd passed %d sockets; keep one ListenStream= in deepseekd-openai.socket", n);
    if (sd_is_socket(SD_LISTEN_FDS_START, 0, SOCK_STREAM, 1) <= 0)
        return dsd_errf(err, -EINVAL, "the socket systemd passed is not a listening stream socket");
    *fd = SD_LISTEN_FDS_START;
    return 1;
}

static int listen_unix(const char *path, char *shown, size_t shown_size, struct dsd_err *err)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path)
        return dsd_errf(err, -EINVAL, "listen: unix:%s is longer than %zu bytes", path, sizeof a.sun_path - 1);
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return dsd_errf(err, -errno, "socket: %s", strerror(errno));
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);       /* a stale socket of an earlier run */
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 511) < 0) {
        int e = errno;
        close(fd);
        return dsd_errf(err, -e, "listen on unix:%s: %s", path, strerror(e));
    }
    snprintf(shown, shown_size, "unix:%s", path);
    return fd;
}

static int listen_tcp(const char *spec, char *shown, size_t shown_size, struct dsd_err *err)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || !colon[1])
        return dsd_errf(err, -EINVAL, "listen = '%s': want HOST:PORT, [IPV6]:PORT or unix:PATH", spec);
    size_t hl = (size_t)(colon - spec);
    const char *h = spec;
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= sizeof host)
        return dsd_errf(err, -EINVAL, "listen = '%s': host too long", spec);
    memcpy(host, h, hl);
    host[hl] = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    int g = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &res);
    if (g)
        return dsd_errf(err, -EINVAL, "listen = '%s': %s", spec, gai_strerror(g));
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 511) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return dsd_errf(err, -e, "listen on %s: %s", spec, strerror(e));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(shown, shown_size, ss.ss_family == AF_INET6 ? "http://[%s]:%d" : "http://%s:%d", addr, port);
    return fd;
}

int main(int argc, char **argv)
{
    struct dsd_err err = {{0}};
    static struct oa_server s;
    int rc = oa_config_load(argc, argv, &s.cfg, &err);
    if (rc == OA_CONFIG_HANDLED)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "deepseekd-openai: %s\n", err.msg);
        return 2;
    }
    dsd_log_set_level(s.cfg.log_level);

    /* Signals are taken by sigwait() below; every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int fd;
    char shown[300] = "(from systemd)";
    rc = activated_socket(&fd, &err);
    if (rc == 0)
        fd = strncmp(s.cfg.listen, "unix:", 5) == 0 ? listen_unix(s.cfg.listen + 5, shown, sizeof shown, &err)
                                                    : listen_tcp(s.cfg.listen, shown, sizeof shown, &err);
    if (rc < 0 || fd < 0) {
        dsd_log(LOG_ERR, "%s", err.msg);
        return 1;
    }
    if (oa_pool_init(&s.pool, s.cfg.socket, (int)s.cfg.connections) < 0) {
        dsd_log(LOG_ERR, "out of memory");
        return 1;
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.idle, NULL);
    srand((unsigned)getpid());
    if (oa_http_start(&s, fd, &err) < 0) {
        dsd_log(LOG_ERR, "%s", err.msg);
        return 1;
    }
    const char *daemon_socket = s.cfg.socket[0] ? s.cfg.socket : getenv(DSD_CLIENT_SOCKET_ENV);
    dsd_log(LOG_INFO, "listening on %s (deepseekd at %s)", shown,
            daemon_socket && *daemon_socket ? daemon_socket : DSD_CLIENT_DEFAULT_SOCKET);
    dsd_notify_ready("serving the OpenAI API on %s", shown);

    int sig = 0;
    sigwait(&set, &sig);
    dsd_notify_stopping("stopping (signal %d)", sig);
    dsd_log(LOG_INFO, "stopping: cancelling running requests");
    rc = oa_http_stop(&s);
    close(fd);
    if (strncmp(shown, "unix:", 5) == 0)
        unlink(shown + 5);
    if (rc < 0) {
        dsd_log(LOG_ERR, "stopped with requests still running (deepseekd did not end them)");
        return 1;
    }
    oa_pool_free(&s.pool);
    dsd_log(LOG_INFO, "stopped");
    return 0;
}
