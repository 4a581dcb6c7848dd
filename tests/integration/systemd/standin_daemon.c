/*
 * tests/integration/systemd/standin_daemon.c: a stand-in for deepseekd and deepseekd-probe
 * in the systemd tests, built on the daemon's own configuration, log and notify code.
 *
 * As the daemon (same command line as deepseekd: --config FILE, --KEY VALUE):
 *   takes the socket systemd passes (or binds `socket` itself), reports fake loading
 *   progress, checks that the model directory is readable, sends READY=1, pings the watchdog,
 *   reloads on SIGHUP (RELOADING=1 ... READY=1) and drains on SIGTERM (STOPPING=1, running
 *   streams finish within drain_timeout_s). Line protocol: "health\n" -> "ok\n";
 *   "generate N\n" -> N lines "token I\n", 10 ms apart, then "done\n".
 * As the probe (`--socket PATH health` or `--socket PATH generate [--max-tokens N] ...`,
 *   the probe's own syntax; other options are ignored): exit 0 when the whole answer came.
 * It proves the boot harness and the units work; the real daemon replaces it in the test
 * once it exists.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "notify.h"

#define MAX_CLIENTS 64

struct client {
    int fd;
    int remaining;          /* tokens still to send; -1 = waiting for the request line */
    int sent;
    char line[64];
    size_t len;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int unix_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    struct timeval tv = { .tv_sec = 30 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* ---- probe mode ---- */

static int probe(int argc, char **argv)
{
    const char *path = argv[2], *cmd = argv[3];
    int n = 16;
    for (int i = 4; i + 1 < argc; i++)
        if (strcmp(argv[i], "--max-tokens") == 0)
            n = atoi(argv[i + 1]);
    int fd = unix_connect(path);
    if (fd < 0) {
        fprintf(stderr, "probe: cannot connect to %s: %s\n", path, strerror(errno));
        return 2;
    }
    char req[64], want[64];
    if (strcmp(cmd, "health") == 0) {
        snprintf(req, sizeof req, "health\n");
        snprintf(want, sizeof want, "ok\n");
    } else {
        snprintf(req, sizeof req, "generate %d\n", n);
        snprintf(want, sizeof want, "token %d\ndone\n", n - 1);
    }
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        return 2;
    static char reply[1 << 20];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof reply - 1 && (r = read(fd, reply + got, sizeof reply - 1 - got)) > 0)
        got += (size_t)r;
    reply[got] = 0;
    size_t wl = strlen(want);
    if (got < wl || strcmp(reply + got - wl, want) != 0) {
        fprintf(stderr, "probe: %s: incomplete answer (%zu bytes): %.200s\n", cmd, got, reply);
        return 1;
    }
    printf("%s: ok\n", cmd);
    return 0;
}

/* ---- daemon mode ---- */

static int bind_socket(const struct dsd_serve_config *cfg)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", cfg->socket);
    unlink(cfg->socket);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || chmod(cfg->socket, cfg->socket_mode) < 0 ||
        listen(fd, 64) < 0)
        return -1;
    return fd;
}

static void client_input(struct client *c)
{
    ssize_t r = read(c->fd, c->line + c->len, sizeof c->line - 1 - c->len);
    if (r <= 0) {
        close(c->fd);
        c->fd = -1;
        return;
    }
    c->len += (size_t)r;
    c->line[c->len] = 0;
    if (!strchr(c->line, '\n'))
        return;
    int n;
    if (strcmp(c->line, "health\n") == 0) {
        if (write(c->fd, "ok\n", 3) != 3)
            dsd_log(LOG_WARNING, "standin: health reply failed");
        close(c->fd);
        c->fd = -1;
    } else if (sscanf(c->line, "generate %d", &n) == 1 && n > 0) {
        c->remaining = n;
        dsd_log(LOG_INFO, "standin: generating %d tokens", n);
    } else {
        close(c->fd);
        c->fd = -1;
    }
}

static void client_step(struct client *c)
{
    char buf[64];
    int len = snprintf(buf, sizeof buf, "token %d\n", c->sent++);
    if (--c->remaining == 0)
        len += snprintf(buf + len, sizeof buf - (size_t)len, "done\n");
    if (write(c->fd, buf, (size_t)len) != len || c->remaining == 0) {
        close(c->fd);
        c->fd = -1;
    }
}

static int daemon_main(int argc, char **argv)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    int rc = dsd_serve_config_load(argc, argv, &cfg, &err);
    if (rc == DSD_SERVE_CONFIG_HANDLED)
        return 0;
    if (rc < 0) {
        dsd_log(LOG_ERR, "%s", err.msg);
        return 1;
    }
    dsd_log_set_level(cfg.log_level);

    int lfd;
    rc = dsd_listen_socket(&lfd, &err);
    if (rc < 0) {
        dsd_log_err(LOG_ERR, &err, "socket activation");
        return 1;
    }
    bool activated = rc == 1;
    if (!activated && (lfd = bind_socket(&cfg)) < 0) {
        dsd_log(LOG_ERR, "standin: cannot listen on %s: %s", cfg.socket, strerror(errno));
        return 1;
    }
    for (int shard = 1; shard <= 4; shard++) {
        dsd_notify_progress((unsigned)(shard * 25), 10 * 1000000ull, "loading weights: shard %d/4",
                            shard);
        usleep(20000);
    }
    struct stat st;
    if (stat(cfg.model, &st) < 0 || !S_ISDIR(st.st_mode) || access(cfg.model, R_OK | X_OK) < 0) {
        dsd_log(LOG_ERR, "standin: model directory %s is not readable: %s", cfg.model,
                strerror(errno));
        return 1;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);

    const char *how = activated ? "socket activation" : cfg.socket;
    dsd_notify_ready("serving %s on %s", cfg.model, how);
    dsd_log(LOG_NOTICE, "standin: serving %s on %s", cfg.model, how);
    uint64_t wd_ms = dsd_notify_watchdog_usec() / 2000;

    struct client cl[MAX_CLIENTS];
    for (int i = 0; i < MAX_CLIENTS; i++)
        cl[i].fd = -1;
    bool draining = false;
    uint64_t drain_deadline = 0, last_ping = 0;
    for (;;) {
        struct pollfd p[MAX_CLIENTS + 2];
        int np = 0, streaming = 0;
        p[np++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
        p[np++] = (struct pollfd){ .fd = draining ? -1 : lfd, .events = POLLIN };
        for (int i = 0; i < MAX_CLIENTS; i++) {
            p[np++] = (struct pollfd){ .fd = cl[i].fd, .events = POLLIN };
            streaming += cl[i].fd >= 0 && cl[i].remaining > 0;
        }
        if (draining && (streaming == 0 || now_ms() >= drain_deadline)) {
            dsd_log(LOG_NOTICE, "standin: drained, %d requests cut", streaming);
            return 0;
        }
        poll(p, (nfds_t)np, streaming ? 10 : 200);
        uint64_t now = now_ms();
        if (wd_ms && now - last_ping >= wd_ms / 2) {
            dsd_notify_watchdog();
            last_ping = now;
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo == SIGHUP) {
                dsd_notify_reloading();
                struct dsd_serve_config_changes ch;
                if (dsd_serve_config_reload(&cfg, &ch, &err) < 0)
                    dsd_log_err(LOG_ERR, &err, "reload (configuration unchanged)");
                for (int i = 0; i < ch.count && !err.msg[0]; i++)
                    dsd_log(LOG_NOTICE, "reload: %s: %s -> %s%s", ch.item[i].key, ch.item[i].old_value,
                            ch.item[i].new_value, ch.item[i].needs_restart ? " (needs a restart)" : "");
                err.msg[0] = 0;
                dsd_log_set_level(cfg.log_level);
                dsd_notify_ready("serving %s on %s (reloaded)", cfg.model, how);
            } else if (!draining) {
                draining = true;
                drain_deadline = now + (uint64_t)cfg.drain_timeout_s * 1000;
                dsd_notify_stopping("draining %d requests", streaming);
                dsd_log(LOG_NOTICE, "standin: stopping, draining %d requests", streaming);
            }
        }
        if (p[1].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            int slot = -1;
            for (int i = 0; i < MAX_CLIENTS && c >= 0 && slot < 0; i++)
                if (cl[i].fd < 0)
                    slot = i;
            if (slot < 0) {
                if (c >= 0)
                    close(c);
            } else {
                cl[slot] = (struct client){ .fd = c, .remaining = -1 };
            }
        }
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (cl[i].fd >= 0 && cl[i].remaining < 0 && (p[2 + i].revents & (POLLIN | POLLHUP)))
                client_input(&cl[i]);
            else if (cl[i].fd >= 0 && cl[i].remaining > 0)
                client_step(&cl[i]);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "--socket") == 0 &&
        (strcmp(argv[3], "health") == 0 || strcmp(argv[3], "generate") == 0))
        return probe(argc, argv);
    return daemon_main(argc, argv);
}
